//! Reading a snapshot back: the data object and the manifest in lockstep,
//! every entry compared, every byte hashed. Shared by restore and check, so
//! both trust exactly the same things.

use std::io::Read;

use crate::archive::{Entry, EntryKind};
use crate::hash::{HashingReader, SharedHasher};
use crate::manifest::{MANIFEST_NAME, ManifestReader};
use crate::progress::{Cancel, CancelReader};
use crate::repository::{Repository, SHA256SUMS, SNAPSHOT_JSON};
use crate::snapshot::{ObjectRecord, SnapshotKind, SnapshotMeta};
use crate::target::TargetExt;
use crate::{Error, Result};

/// A manifest's entries, read from its decompressed lines.
type PlainManifest = ManifestReader<Box<dyn Read + Send>>;

fn integrity(meta: &SnapshotMeta, detail: impl Into<String>) -> Error {
    Error::Integrity {
        snapshot: meta.id.clone(),
        detail: detail.into(),
    }
}

/// The text of `SHA256SUMS`: one `sha256sum` line per object, then
/// `snapshot.json`'s own line (format 2 on).
pub(crate) fn sums_text(meta: &SnapshotMeta, snapshot_json_sha: Option<&str>) -> String {
    use std::fmt::Write as _;
    let mut sums = String::new();
    for o in &meta.objects {
        let _ = writeln!(sums, "{}  {}", o.sha256, o.name);
    }
    if let Some(sha) = snapshot_json_sha {
        let _ = writeln!(sums, "{sha}  {SNAPSHOT_JSON}");
    }
    sums
}

/// The most bytes a `SHA256SUMS` may have (a line per object).
const MAX_SUMS_BYTES: u64 = 1 << 20;

impl Repository {
    /// Checks a snapshot's commit: `SHA256SUMS` must hold exactly the line
    /// of every object recorded in `snapshot.json`, with its SHA-256, and
    /// (format 2 on, or whenever it is there) `snapshot.json`'s own SHA-256,
    /// so that damage to either of the two is found.
    pub(crate) fn verify_commit(&self, meta: &SnapshotMeta) -> Result<()> {
        let sums_key = Repository::key(&meta.id, SHA256SUMS);
        let sums = match self.target().get(&sums_key) {
            Err(Error::NotFound { .. }) => {
                return Err(integrity(meta, format!("{SHA256SUMS} is missing")));
            }
            other => other?,
        };
        let mut text = Vec::new();
        sums.take(MAX_SUMS_BYTES + 1)
            .read_to_end(&mut text)
            .map_err(|e| Error::io("read", sums_key.clone(), e))?;
        let body = match self
            .target()
            .get_bytes(&Repository::key(&meta.id, SNAPSHOT_JSON))
        {
            Err(Error::NotFound { .. }) => {
                return Err(integrity(meta, format!("{SNAPSHOT_JSON} is missing")));
            }
            other => other?,
        };
        let mut hasher = self.registry().hashers()?.sha256();
        hasher.update(&body);
        let own = hasher.finish_hex();
        let listed_own = std::str::from_utf8(&text).ok().and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_suffix(&format!("  {SNAPSHOT_JSON}")))
                .map(str::to_owned)
        });
        if let Some(listed) = &listed_own
            && *listed != own
        {
            return Err(integrity(
                meta,
                format!(
                    "{SNAPSHOT_JSON} does not match its SHA-256 in {SHA256SUMS}: one of the two is damaged"
                ),
            ));
        }
        let want_own = (meta.format >= 2 || listed_own.is_some()).then_some(own.as_str());
        if text != sums_text(meta, want_own).as_bytes() {
            return Err(integrity(
                meta,
                format!(
                    "{SHA256SUMS} does not list the objects {SNAPSHOT_JSON} records: one of the two is damaged"
                ),
            ));
        }
        Ok(())
    }

    /// Reads the whole manifest once, after checking the snapshot's commit
    /// (`SHA256SUMS` against `snapshot.json`); calls `each` for every entry.
    ///
    /// The manifest's SHA-256 must match, every entry must parse and obey
    /// the rules every reader applies (relative paths without `..` or empty
    /// components, no path listed twice or below a file or symlink, hard
    /// links only to an earlier file), and the counts `snapshot.json`
    /// records must be those of the manifest. A rule broken is reported only
    /// once the manifest's checksum is known good (damage comes first).
    pub fn list_entries(
        &self,
        meta: &SnapshotMeta,
        each: &mut dyn FnMut(&Entry) -> Result<()>,
    ) -> Result<()> {
        self.verify_commit(meta)?;
        let name = meta.manifest_name();
        let record = record(meta, name)?;
        let (manifest, shared) = self.manifest_reader(meta)?;
        let mut rules = EntryRules::new(meta);
        for entry in manifest {
            let entry = entry.map_err(|e| integrity(meta, format!("{name}: {e}")))?;
            if rules.admit(&entry) {
                each(&entry)?;
            }
        }
        if let Some(shared) = shared {
            let (sha, size) = shared.finish();
            check_digest(meta, record, &sha, size)?;
        }
        rules.finish()
    }

    /// The manifest's entries, decompressed, and the hasher of its stored
    /// bytes (none for a manifest stored as chunks: its chunk list is
    /// checked before it is used, each chunk against its id as it is read).
    fn manifest_reader(
        &self,
        meta: &SnapshotMeta,
    ) -> Result<(PlainManifest, Option<SharedHasher>)> {
        let name = meta.manifest_name();
        let lines = crate::manifest::lines_format(meta.format);
        if name == crate::manifest::MANIFEST_CHUNKS_NAME {
            let plain = self.open_manifest_chunks(meta)?;
            return Ok((ManifestReader::new(plain, name, &meta.id, lines)?, None));
        }
        let key = Repository::key(&meta.id, name);
        let shared = SharedHasher::new(self.registry().hashers()?.sha256());
        let stored = shared.reader(self.open_object(meta, &key)?);
        let decoded = self
            .registry()
            .codec(meta.manifest_compression(), None)?
            .decoder(Box::new(stored))
            .map_err(|e| Error::io("decompress", key.clone(), e))?;
        Ok((
            ManifestReader::new(decoded, name, &meta.id, lines)?,
            Some(shared),
        ))
    }

    fn open_object(&self, meta: &SnapshotMeta, key: &str) -> Result<Box<dyn Read + Send>> {
        match self.target().get(key) {
            Err(Error::NotFound { .. }) => Err(integrity(meta, format!("object {key} is missing"))),
            other => other,
        }
    }

    /// Unpacks the data object, checking each entry against the manifest and
    /// each file's BLAKE3, then the object's SHA-256 and size.
    ///
    /// `visit` is called for every entry after its metadata matched the
    /// manifest; it reads the content through the given reader (what it does
    /// not read is still hashed and checked) and may return an error to stop.
    /// `verified` is called for each file once its content has matched.
    ///
    /// Reading stops within one buffer once `cancel` is set, with
    /// [`Error::Cancelled`], inside a large file too.
    pub(crate) fn read_snapshot(
        &self,
        meta: &SnapshotMeta,
        visit: &mut dyn FnMut(&Entry, &mut dyn Read) -> Result<()>,
        verified: &mut dyn FnMut(&Entry),
        cancel: &Cancel,
    ) -> Result<()> {
        let read = if meta.kind == SnapshotKind::Database {
            self.read_stream(meta, visit, verified, cancel)
        } else {
            self.read_archive(meta, visit, verified, cancel)
        };
        match read {
            Err(_) if cancel.is_cancelled() => Err(Error::Cancelled),
            other => other,
        }
    }

    fn read_archive(
        &self,
        meta: &SnapshotMeta,
        visit: &mut dyn FnMut(&Entry, &mut dyn Read) -> Result<()>,
        verified: &mut dyn FnMut(&Entry),
        cancel: &Cancel,
    ) -> Result<()> {
        let hashers = self.registry().hashers()?;
        let (compression, level) = meta.stream_compression();
        let format = self.registry().format(compression, level)?;
        let (mut manifest, _) = self.manifest_reader(meta)?;

        let (stored, data) = self.open_data(meta, cancel)?;
        let data_key = Repository::key(&meta.id, &data.name);
        let shared = SharedHasher::new(hashers.sha256());
        let input = Box::new(shared.reader(stored));
        let mut index = 0u64;
        let unpacked = format.unpack(input, &mut |entry, content| {
            index += 1;
            let expected = manifest
                .next()
                .transpose()
                .map_err(|e| integrity(meta, format!("{MANIFEST_NAME}: {e}")))?
                .ok_or_else(|| {
                    integrity(
                        meta,
                        format!(
                            "{} has entry {:?} that {MANIFEST_NAME} does not list",
                            data.name, entry.path
                        ),
                    )
                })?;
            compare(meta, &data.name, index, &entry, &expected)?;
            if expected.kind != EntryKind::File {
                return visit(&expected, content);
            }
            let mut hashed = HashingReader::new(content, hashers.blake3());
            visit(&expected, &mut hashed)?;
            std::io::copy(&mut hashed, &mut std::io::sink())
                .map_err(|e| Error::io("read", data_key.clone(), e))?;
            let (hash, n) = hashed.finish();
            if n != expected.size || Some(&hash) != expected.blake3.as_ref() {
                return Err(integrity(
                    meta,
                    format!(
                        "content of {:?} in {} does not match its manifest hash",
                        expected.path, data.name
                    ),
                ));
            }
            verified(&expected);
            Ok(())
        });
        match unpacked {
            Ok(()) => {}
            Err(e @ (Error::Integrity { .. } | Error::UnsafePath { .. } | Error::Cancelled)) => {
                return Err(e);
            }
            Err(Error::Io { source, .. })
                if matches!(
                    source.kind(),
                    std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof
                ) =>
            {
                return Err(integrity(
                    meta,
                    format!("{} is damaged: {source}", data.name),
                ));
            }
            Err(e) => return Err(e),
        }
        if let Some(extra) = manifest.next() {
            let path = extra.map_or_else(|e| e.to_string(), |e| e.path);
            return Err(integrity(
                meta,
                format!(
                    "{MANIFEST_NAME} lists {path:?} that {} does not contain",
                    data.name
                ),
            ));
        }
        let (sha, size) = shared.finish();
        data.check(&meta.id, &sha, size)
    }

    /// A snapshot's stream, uncompressed (the tar archive, or the dump),
    /// and the check to make once it has been read to its end.
    pub(crate) fn open_stream(
        &self,
        meta: &SnapshotMeta,
        cancel: &Cancel,
    ) -> Result<(Box<dyn Read + Send>, StreamCheck)> {
        let (stored, expected) = self.open_data(meta, cancel)?;
        let hash = SharedHasher::new(self.registry().hashers()?.sha256());
        let (compression, level) = meta.stream_compression();
        let stream = self
            .registry()
            .codec(compression, level)?
            .decoder(Box::new(hash.reader(stored)))
            .map_err(|e| Error::io("decompress", meta.id.clone(), e))?;
        let check = StreamCheck {
            hash,
            expected,
            snapshot: meta.id.clone(),
            cancel: cancel.clone(),
        };
        Ok((stream, check))
    }

    /// The data a snapshot stores and the record it must match when read
    /// whole: the data object, or for a deduplicated snapshot the stream of
    /// its chunks (each checked as it is read).
    pub(crate) fn open_data(
        &self,
        meta: &SnapshotMeta,
        cancel: &Cancel,
    ) -> Result<(Box<dyn Read + Send>, Expected)> {
        if let Some(info) = &meta.dedup {
            return self.open_chunk_stream(meta, info, cancel);
        }
        let data = meta
            .data_object()
            .ok_or_else(|| integrity(meta, "snapshot.json names no data object"))?;
        let key = Repository::key(&meta.id, &data.name);
        let input = CancelReader {
            inner: self.open_object(meta, &key)?,
            cancel: cancel.clone(),
        };
        Ok((Box::new(input), Expected::from(data)))
    }
}

impl Repository {
    /// Reads a single-stream snapshot (a database dump): first the object's
    /// SHA-256 (so nothing damaged is ever handed on), then the decompressed
    /// content against the manifest's one entry.
    fn read_stream(
        &self,
        meta: &SnapshotMeta,
        visit: &mut dyn FnMut(&Entry, &mut dyn Read) -> Result<()>,
        verified: &mut dyn FnMut(&Entry),
        cancel: &Cancel,
    ) -> Result<()> {
        let hashers = self.registry().hashers()?;
        if meta.dedup.is_none() {
            // A compressed dump is read whole first; a deduplicated one
            // needs no first pass: each chunk is checked before it is
            // handed on.
            let (mut stored, data) = self.open_data(meta, cancel)?;
            let mut whole = HashingReader::new(&mut stored, hashers.sha256());
            std::io::copy(&mut whole, &mut std::io::sink())
                .map_err(|e| Error::io("read", Repository::key(&meta.id, &data.name), e))?;
            let (sha, size) = whole.finish();
            data.check(&meta.id, &sha, size)?;
        }

        let mut entries = Vec::new();
        self.list_entries(meta, &mut |e| {
            entries.push(e.clone());
            Ok(())
        })?;
        let [entry] = entries.as_slice() else {
            return Err(integrity(
                meta,
                format!("{MANIFEST_NAME} should list exactly one dump"),
            ));
        };
        let (stream, check) = self.open_stream(meta, cancel)?;
        let mut content = HashingReader::new(stream, hashers.blake3());
        let read = visit(entry, &mut content).and_then(|()| {
            std::io::copy(&mut content, &mut std::io::sink())
                .map(|_| ())
                .map_err(|e| check.read_error(e))
        });
        match read {
            // What the loader read failed its check (a chunk, a frame).
            Err(Error::Io { source, .. }) if damaged(&source) => {
                return Err(check.read_error(source));
            }
            other => other?,
        }
        let (hash, n) = content.finish();
        if n != entry.size || Some(&hash) != entry.blake3.as_ref() {
            return Err(integrity(
                meta,
                format!(
                    "the dump in {} does not match its manifest hash",
                    check.expected.name
                ),
            ));
        }
        check.finish()?;
        verified(entry);
        Ok(())
    }
}

/// What a stream from [`Repository::open_stream`] must match.
pub(crate) struct StreamCheck {
    hash: SharedHasher,
    expected: Expected,
    snapshot: String,
    cancel: Cancel,
}

impl StreamCheck {
    /// Whether what was read is what the snapshot stored; call it once the
    /// stream has been read to its end.
    pub(crate) fn finish(&self) -> Result<()> {
        let (sha, size) = self.hash.finish();
        self.expected.check(&self.snapshot, &sha, size)
    }

    /// A read error of the stream as the error to report: cancellation,
    /// damage (a chunk or frame that fails its check), or I/O.
    pub(crate) fn read_error(&self, e: std::io::Error) -> Error {
        if self.cancel.is_cancelled() {
            Error::Cancelled
        } else if damaged(&e) {
            Error::Integrity {
                snapshot: self.snapshot.clone(),
                detail: format!("{} is damaged: {e}", self.expected.name),
            }
        } else {
            Error::io("read", self.snapshot.clone(), e)
        }
    }
}

pub(crate) fn record<'m>(meta: &'m SnapshotMeta, name: &str) -> Result<&'m ObjectRecord> {
    meta.object(name)
        .ok_or_else(|| integrity(meta, format!("snapshot.json has no record of {name}")))
}

fn check_digest(meta: &SnapshotMeta, record: &ObjectRecord, sha: &str, size: u64) -> Result<()> {
    Expected::from(record).check(&meta.id, sha, size)
}

/// A read error that means the data failed its own check (a zstd or gzip
/// checksum, a chunk's id, a stream cut short).
fn damaged(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof
    )
}

/// What the data read from a snapshot must match once read whole.
pub(crate) struct Expected {
    pub(crate) name: String,
    pub(crate) size: u64,
    /// `None` for a deduplicated stream: there is no SHA-256 of it (chunks
    /// are reused unread); each chunk was checked against its keyed id as
    /// it was read.
    pub(crate) sha256: Option<String>,
}

impl From<&ObjectRecord> for Expected {
    fn from(r: &ObjectRecord) -> Self {
        Self {
            name: r.name.clone(),
            size: r.size,
            sha256: Some(r.sha256.clone()),
        }
    }
}

impl Expected {
    /// Whether `sha` and `size`, of what was read, are what is expected.
    pub(crate) fn check(&self, snapshot: &str, sha: &str, size: u64) -> Result<()> {
        let damaged = |detail: String| Error::Integrity {
            snapshot: snapshot.to_owned(),
            detail,
        };
        if size != self.size {
            return Err(damaged(format!(
                "{} has {size} bytes, {} were stored",
                self.name, self.size
            )));
        }
        if self.sha256.as_deref().is_some_and(|want| want != sha) {
            return Err(damaged(format!("{} does not match its SHA-256", self.name)));
        }
        Ok(())
    }
}

/// Compares an archive entry with its manifest entry; the error names the
/// first field that differs and both values.
fn compare(meta: &SnapshotMeta, object: &str, index: u64, got: &Entry, want: &Entry) -> Result<()> {
    let link = |l: &Option<String>| {
        l.as_deref()
            .map_or_else(|| "none".to_owned(), |l| format!("{l:?}"))
    };
    let differs: Option<(&str, String, String)> = if got.path != want.path {
        Some((
            "path",
            format!("{:?}", got.path),
            format!("{:?}", want.path),
        ))
    } else if got.kind != want.kind {
        Some((
            "type",
            got.kind.describe().into(),
            want.kind.describe().into(),
        ))
    } else if got.kind == EntryKind::File && got.size != want.size {
        Some(("size", got.size.to_string(), want.size.to_string()))
    } else if got.mode != want.mode {
        Some((
            "mode",
            format!("{:o}", got.mode),
            format!("{:o}", want.mode),
        ))
    } else if got.mtime != want.mtime {
        Some(("mtime", got.mtime.to_string(), want.mtime.to_string()))
    } else if got.link != want.link {
        Some(("link target", link(&got.link), link(&want.link)))
    } else {
        None
    };
    match differs {
        None => Ok(()),
        Some((field, got_v, want_v)) => Err(integrity(
            meta,
            format!(
                "entry {index} of {object} ({:?}): its {field} is {got_v} in the archive but {want_v} in {MANIFEST_NAME}",
                want.path
            ),
        )),
    }
}

/// The rules every reader of a manifest applies, checked entry by entry in
/// one pass (check, restore and ls trust exactly the same things), and the
/// counts the manifest yields.
///
/// Paths seen are kept as 128-bit keyed hashes with their kind: about 40
/// bytes per entry, however long the paths.
struct EntryRules<'m> {
    meta: &'m SnapshotMeta,
    keys: (
        std::collections::hash_map::RandomState,
        std::collections::hash_map::RandomState,
    ),
    seen: std::collections::HashMap<u128, EntryKind>,
    problem: Option<Error>,
    files: u64,
    dirs: u64,
    entries: u64,
    bytes: u64,
}

impl<'m> EntryRules<'m> {
    fn new(meta: &'m SnapshotMeta) -> Self {
        Self {
            meta,
            keys: Default::default(),
            seen: std::collections::HashMap::new(),
            problem: None,
            files: 0,
            dirs: 0,
            entries: 0,
            bytes: 0,
        }
    }

    fn key(&self, path: &str) -> u128 {
        use std::hash::BuildHasher;
        let a = self.keys.0.hash_one(path);
        let b = self.keys.1.hash_one(path);
        (u128::from(a) << 64) | u128::from(b)
    }

    /// Counts `e` and checks it against the rules; `false` (the first
    /// problem kept for [`EntryRules::finish`]) when it breaks one.
    fn admit(&mut self, e: &Entry) -> bool {
        self.entries += 1;
        match e.kind {
            EntryKind::File => {
                self.files += 1;
                self.bytes += e.size;
            }
            EntryKind::Dir => self.dirs += 1,
            _ => {}
        }
        if self.problem.is_some() {
            return false;
        }
        match self.rule(e) {
            Ok(()) => true,
            Err(err) => {
                self.problem = Some(err);
                false
            }
        }
    }

    fn rule(&mut self, e: &Entry) -> Result<()> {
        safe_relative(&e.path)?;
        let unsafe_entry = |reason: String| Error::UnsafePath {
            path: e.path.clone(),
            reason,
        };
        match e.kind {
            EntryKind::Hardlink => {
                let link = e.link.as_deref().unwrap_or("");
                safe_relative(link).map_err(|err| match err {
                    Error::UnsafePath { reason, .. } => {
                        unsafe_entry(format!("hard link to {link:?}: {reason}"))
                    }
                    other => other,
                })?;
                if self.seen.get(&self.key(link)) != Some(&EntryKind::File) {
                    return Err(unsafe_entry(format!(
                        "hard link to {link:?}, which is not a file earlier in the snapshot"
                    )));
                }
            }
            EntryKind::Symlink if e.link.as_deref().is_none_or(str::is_empty) => {
                return Err(unsafe_entry("symlink without a target".into()));
            }
            EntryKind::File if e.blake3.is_none() => {
                return Err(integrity(
                    self.meta,
                    format!("{MANIFEST_NAME} lists file {:?} without its hash", e.path),
                ));
            }
            _ => {}
        }
        let mut at = 0;
        while let Some(i) = e.path[at..].find('/') {
            let parent = &e.path[..at + i];
            if let Some(kind) = self.seen.get(&self.key(parent))
                && *kind != EntryKind::Dir
            {
                return Err(integrity(
                    self.meta,
                    format!(
                        "{MANIFEST_NAME} lists {:?} inside {parent:?}, which is a {}",
                        e.path,
                        kind.describe()
                    ),
                ));
            }
            at += i + 1;
        }
        let key = self.key(&e.path);
        if let Some(first) = self.seen.insert(key, e.kind) {
            let detail = if first == e.kind {
                format!("{MANIFEST_NAME} lists {:?} twice", e.path)
            } else {
                format!(
                    "{MANIFEST_NAME} lists {:?} twice: as a {}, then as a {}",
                    e.path,
                    first.describe(),
                    e.kind.describe()
                )
            };
            return Err(integrity(self.meta, detail));
        }
        Ok(())
    }

    /// The first rule broken, else whether the counts `snapshot.json`
    /// records are the manifest's.
    fn finish(self) -> Result<()> {
        if let Some(problem) = self.problem {
            return Err(problem);
        }
        let m = self.meta;
        for (field, recorded, counted) in [
            ("file_count", m.file_count, self.files),
            ("dir_count", m.dir_count, self.dirs),
            ("entry_count", m.entry_count, self.entries),
            ("source_bytes", m.source_bytes, self.bytes),
        ] {
            if recorded != counted {
                return Err(integrity(
                    m,
                    format!(
                        "{SNAPSHOT_JSON} records {field} {recorded}, but {MANIFEST_NAME} has {counted}"
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// Checks that an entry path is relative and stays inside its root: no
/// leading `/`, no `.`, `..` or empty components, no NUL.
pub(crate) fn safe_relative(path: &str) -> Result<&str> {
    let bad = |reason: &str| Error::UnsafePath {
        path: path.to_owned(),
        reason: reason.to_owned(),
    };
    if path.is_empty() {
        return Err(bad("empty path"));
    }
    if path.starts_with('/') {
        return Err(bad("absolute path"));
    }
    if path.contains('\0') {
        return Err(bad("NUL in path"));
    }
    for c in path.split('/') {
        match c {
            "" => return Err(bad("empty path component")),
            "." | ".." => return Err(bad("`.` or `..` component")),
            _ => {}
        }
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::safe_relative;

    #[test]
    fn unsafe_paths_are_refused() {
        for p in [
            "",
            "/etc/passwd",
            "a/../../x",
            "..",
            "a//b",
            "./a",
            "a/.",
            "a\0b",
        ] {
            assert!(safe_relative(p).is_err(), "{p:?} accepted");
        }
        for p in ["a", "a/b.csv", "..a/b..", "ünï/😀"] {
            assert!(safe_relative(p).is_ok(), "{p:?} refused");
        }
    }
}
