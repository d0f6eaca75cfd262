//! Reading a snapshot back: the data object and the manifest in lockstep,
//! every entry compared, every byte hashed. Shared by restore and check, so
//! both trust exactly the same things.

use std::io::Read;

use crate::archive::{Entry, EntryKind};
use crate::hash::{HashingReader, SharedHasher};
use crate::manifest::{MANIFEST_NAME, ManifestReader};
use crate::repository::Repository;
use crate::snapshot::{ObjectRecord, SnapshotKind, SnapshotMeta};
use crate::{Error, Result};

fn integrity(meta: &SnapshotMeta, detail: impl Into<String>) -> Error {
    Error::Integrity {
        snapshot: meta.id.clone(),
        detail: detail.into(),
    }
}

impl Repository {
    /// Reads the whole manifest once, checking its SHA-256 and that every
    /// entry parses; calls `each` for every entry.
    pub fn list_entries(
        &self,
        meta: &SnapshotMeta,
        each: &mut dyn FnMut(&Entry) -> Result<()>,
    ) -> Result<()> {
        let record = record(meta, MANIFEST_NAME)?;
        let key = Repository::key(&meta.id, MANIFEST_NAME);
        let hashers = self.registry().hashers()?;
        let shared = SharedHasher::new(hashers.sha256());
        let input = shared.reader(self.open_object(meta, &key)?);
        for entry in ManifestReader::new(input, MANIFEST_NAME, &meta.id)? {
            each(&entry.map_err(|e| integrity(meta, format!("{MANIFEST_NAME}: {e}")))?)?;
        }
        let (sha, size) = shared.finish();
        check_digest(meta, record, &sha, size)
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
    pub(crate) fn read_snapshot(
        &self,
        meta: &SnapshotMeta,
        visit: &mut dyn FnMut(&Entry, &mut dyn Read) -> Result<()>,
        verified: &mut dyn FnMut(&Entry),
    ) -> Result<()> {
        if meta.kind == SnapshotKind::Database {
            return self.read_stream(meta, visit, verified);
        }
        let data = meta
            .data_object()
            .ok_or_else(|| integrity(meta, "snapshot.json names no data object"))?;
        let hashers = self.registry().hashers()?;
        let format = self.registry().format(meta.compression, meta.level)?;
        let manifest_key = Repository::key(&meta.id, MANIFEST_NAME);
        let mut manifest = ManifestReader::new(
            self.open_object(meta, &manifest_key)?,
            MANIFEST_NAME,
            &meta.id,
        )?;

        let data_key = Repository::key(&meta.id, &data.name);
        let shared = SharedHasher::new(hashers.sha256());
        let input = Box::new(shared.reader(self.open_object(meta, &data_key)?));
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
        check_digest(meta, data, &sha, size)
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
    ) -> Result<()> {
        let data = meta
            .data_object()
            .ok_or_else(|| integrity(meta, "snapshot.json names no data object"))?;
        let hashers = self.registry().hashers()?;
        let data_key = Repository::key(&meta.id, &data.name);
        let mut whole = HashingReader::new(self.open_object(meta, &data_key)?, hashers.sha256());
        std::io::copy(&mut whole, &mut std::io::sink())
            .map_err(|e| Error::io("read", data_key.clone(), e))?;
        let (sha, size) = whole.finish();
        check_digest(meta, data, &sha, size)?;

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
        let codec = self.registry().codec(meta.compression, meta.level)?;
        let decoded = codec
            .decoder(self.open_object(meta, &data_key)?)
            .map_err(|e| Error::io("decompress", data_key.clone(), e))?;
        let mut content = HashingReader::new(decoded, hashers.blake3());
        let read = visit(entry, &mut content).and_then(|()| {
            std::io::copy(&mut content, &mut std::io::sink())
                .map(|_| ())
                .map_err(|e| Error::io("decompress", data_key.clone(), e))
        });
        match read {
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
            other => other?,
        }
        let (hash, n) = content.finish();
        if n != entry.size || Some(&hash) != entry.blake3.as_ref() {
            return Err(integrity(
                meta,
                format!("the dump in {} does not match its manifest hash", data.name),
            ));
        }
        verified(entry);
        Ok(())
    }
}

fn record<'m>(meta: &'m SnapshotMeta, name: &str) -> Result<&'m ObjectRecord> {
    meta.object(name)
        .ok_or_else(|| integrity(meta, format!("snapshot.json has no record of {name}")))
}

fn check_digest(meta: &SnapshotMeta, record: &ObjectRecord, sha: &str, size: u64) -> Result<()> {
    if size != record.size {
        return Err(integrity(
            meta,
            format!(
                "{} has {size} bytes, {} were stored",
                record.name, record.size
            ),
        ));
    }
    if sha != record.sha256 {
        return Err(integrity(
            meta,
            format!("{} does not match its SHA-256", record.name),
        ));
    }
    Ok(())
}

fn compare(meta: &SnapshotMeta, object: &str, index: u64, got: &Entry, want: &Entry) -> Result<()> {
    let same = got.path == want.path
        && got.kind == want.kind
        && (got.size == want.size || got.kind != EntryKind::File)
        && got.mode == want.mode
        && got.mtime == want.mtime
        && got.link == want.link;
    if same {
        Ok(())
    } else {
        Err(integrity(
            meta,
            format!(
                "entry {index} of {object} ({:?}, {:?}, {} bytes) disagrees with the manifest ({:?}, {:?}, {} bytes)",
                got.path, got.kind, got.size, want.path, want.kind, want.size
            ),
        ))
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
