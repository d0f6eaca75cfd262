//! The backup engine: a file tree becomes one snapshot.
//!
//! One walk feeds the packer (the archive streams straight into the target)
//! and the manifest at once; a second thread only counts, for progress. Every
//! buffer is bounded, so memory stays flat however large the tree.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;
use std::time::Instant;

use chrono::Utc;
use serde::{Deserialize, Serialize};

use crate::archive::{Compression, Entry, EntryKind, Packer};
use crate::hash::{HashingWriter, StreamHasher};
use crate::lock;
use crate::manifest::{MANIFEST_NAME, ManifestWriter};
use crate::progress::{Cancel, Event, Progress};
use crate::repository::{Repository, SHA256SUMS, SNAPSHOT_JSON, tool_version};
use crate::sink;
use crate::snapshot::{
    MAX_RECORDED_WARNINGS, ObjectRecord, SNAPSHOT_FORMAT, SnapshotKind, SnapshotMeta,
    SnapshotStatus, new_snapshot_id,
};
use crate::source::{Excludes, FileTreeSource, Walked};
use crate::target::{ObjectWriter, TargetExt};
use crate::{Error, IoContext, Result};

/// What to back up and how. Filled from CLI flags, Python keyword arguments
/// and config files alike.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackupOptions {
    pub paths: Vec<PathBuf>,
    pub tags: Vec<String>,
    /// Exclude globs (see [`Excludes`]).
    pub excludes: Vec<String>,
    /// Files of exclude globs, one per line.
    pub exclude_files: Vec<PathBuf>,
    pub compression: Compression,
    /// Compression level; `None` is the compression's default.
    pub level: Option<i32>,
    /// Walk and report what would be stored, write nothing.
    pub dry_run: bool,
    /// Host name to record; `None` is this machine's.
    pub host: Option<String>,
}

/// A file that could not be stored as it was.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Warning {
    pub path: String,
    pub message: String,
}

/// What a backup did.
#[derive(Debug, Clone, Serialize)]
pub struct BackupSummary {
    /// The committed snapshot (`None` for a dry run).
    pub snapshot: Option<SnapshotMeta>,
    pub files: u64,
    pub dirs: u64,
    pub bytes: u64,
    pub warnings: Vec<Warning>,
    pub dry_run: bool,
    /// Unfinished snapshot directories of earlier runs that were removed.
    pub removed_leftovers: Vec<String>,
}

impl BackupSummary {
    /// Whether something could not be stored (exit code 3 in the CLI).
    pub fn is_incomplete(&self) -> bool {
        !self.warnings.is_empty()
    }
}

impl Repository {
    /// Backs up a file tree into a new snapshot.
    ///
    /// The snapshot becomes visible only when `snapshot.json` is stored, after
    /// every other object is complete; on error or cancellation nothing is
    /// visible and what was written is removed (or, after a crash, by the
    /// next backup).
    ///
    /// Files that vanish, cannot be read, or change while they are read do not
    /// stop the backup: each gives a [`Warning`] and the snapshot's status is
    /// `incomplete`.
    pub fn backup(
        &self,
        opts: &BackupOptions,
        progress: &dyn Progress,
        cancel: &Cancel,
    ) -> Result<BackupSummary> {
        let mut patterns = opts.excludes.clone();
        for f in &opts.exclude_files {
            patterns.extend(Excludes::read_pattern_file(f)?);
        }
        let source = FileTreeSource::new(&opts.paths, Excludes::new(&patterns)?)?;
        for tag in &opts.tags {
            if tag.is_empty() || tag.contains(',') {
                return Err(Error::InvalidInput(format!(
                    "tag {tag:?} must be non-empty and contain no comma"
                )));
            }
        }
        // Validate the format and level before anything is written.
        let format = self.registry().format(opts.compression, opts.level)?;
        let hashers = self.registry().hashers()?;
        let started = Instant::now();
        let now = Utc::now();

        if opts.dry_run {
            progress.event(&Event::Started {
                operation: "backup",
                snapshot: None,
            });
            let mut run = Run::new(progress, None);
            source.walk(cancel, &mut |w| {
                run.dry(w);
                Ok(())
            })?;
            return Ok(run.summary(None, true, Vec::new(), started));
        }

        let id = new_snapshot_id(SnapshotKind::Files, now);
        let _lock = self.lock_shared(Some(id.clone()))?;
        // Leftovers of killed runs; failing to remove them must not stop a
        // backup (check reports them, the next run tries again).
        let removed = self.remove_unfinished().unwrap_or_default();
        progress.event(&Event::Started {
            operation: "backup",
            snapshot: Some(id.clone()),
        });

        let result = std::thread::scope(|s| {
            let scan_cancel = Cancel::new();
            let scanner = progress.wants_totals().then(|| {
                let (source, scan_cancel) = (&source, scan_cancel.clone());
                s.spawn(move || count_tree(source, &scan_cancel, progress))
            });
            let r = self.write_snapshot(
                &id,
                &source,
                format.as_ref(),
                hashers.as_ref(),
                progress,
                cancel,
            );
            scan_cancel.cancel();
            if let Some(scanner) = scanner {
                let _ = scanner.join();
            }
            r
        });
        let (run, objects) = match result {
            Ok(v) => v,
            Err(e) => {
                let _ = self.delete_snapshot_objects(&id);
                return Err(e);
            }
        };

        let meta = run.snapshot_meta(
            &Header {
                id: &id,
                opts,
                source: &source,
                patterns,
                format: format.as_ref(),
                now,
                started,
            },
            objects,
        );
        let body = serde_json::to_vec_pretty(&meta).expect("snapshot metadata serializes");
        if let Err(e) = cancel.check().and_then(|()| {
            self.target()
                .put_bytes(&Repository::key(&id, SNAPSHOT_JSON), &body)
        }) {
            let _ = self.delete_snapshot_objects(&id);
            return Err(e);
        }
        Ok(run.summary(Some(meta), false, removed, started))
    }

    /// Writes the data object, manifest and SHA256SUMS of snapshot `id`.
    fn write_snapshot<'p>(
        &self,
        id: &str,
        source: &FileTreeSource,
        format: &dyn crate::archive::ArchiveFormat,
        hashers: &'p dyn crate::hash::Hashers,
        progress: &'p dyn Progress,
        cancel: &Cancel,
    ) -> Result<(Run<'p>, Vec<ObjectRecord>)> {
        let target = self.target();
        let data_name = format.compression().data_object_name();
        let data_key = Repository::key(id, data_name);
        let (sink, writer_thread) = sink::spawn(target.put(&data_key)?, hashers.sha256())?;
        let mut packer = format
            .packer(Box::new(sink))
            .ctx("start archive", &data_key)?;

        let manifest_key = Repository::key(id, MANIFEST_NAME);
        let manifest_out = HashingWriter::new(
            BufWriter::with_capacity(256 * 1024, ObjectWriterBox(target.put(&manifest_key)?)),
            hashers.sha256(),
        );
        let mut manifest = ManifestWriter::new(manifest_out, id).ctx("write", &manifest_key)?;

        let mut run = Run::new(progress, Some(hashers));
        let walked = source
            .walk(cancel, &mut |w| {
                run.store(
                    w,
                    packer.as_mut(),
                    &mut manifest,
                    cancel,
                    &data_key,
                    &manifest_key,
                )
            })
            .and_then(|()| cancel.check());
        let archived = match walked {
            Ok(()) => packer.finish().ctx("write", &data_key),
            Err(e) => {
                drop(packer);
                Err(e)
            }
        };
        // The writer thread's own error (a full disk, say) is the cause of a
        // packing error, so it is the one reported.
        let (writer, data_sha, data_size) = match (archived, writer_thread.finish(&data_key)) {
            (Err(Error::Cancelled), _) => return Err(Error::Cancelled),
            (Ok(()), Ok(written)) => written,
            (_, Err(cause)) | (Err(cause), Ok(_)) => return Err(cause),
        };
        writer.commit()?;

        let (buffered, manifest_sha, manifest_size) = manifest.into_inner().finish();
        let ObjectWriterBox(writer) = buffered
            .into_inner()
            .map_err(|e| Error::io("write", manifest_key.clone(), e.into_error()))?;
        writer.commit()?;

        let sums = format!("{data_sha}  {data_name}\n{manifest_sha}  {MANIFEST_NAME}\n");
        target.put_bytes(&Repository::key(id, SHA256SUMS), sums.as_bytes())?;
        let objects = vec![
            ObjectRecord {
                name: data_name.to_owned(),
                size: data_size,
                sha256: data_sha,
            },
            ObjectRecord {
                name: MANIFEST_NAME.to_owned(),
                size: manifest_size,
                sha256: manifest_sha,
            },
        ];
        Ok((run, objects))
    }
}

/// What a snapshot's metadata is made from, besides the run's counters.
struct Header<'a> {
    id: &'a str,
    opts: &'a BackupOptions,
    source: &'a FileTreeSource,
    patterns: Vec<String>,
    format: &'a dyn crate::archive::ArchiveFormat,
    now: chrono::DateTime<Utc>,
    started: Instant,
}

/// Counters and warnings of one run.
struct Run<'p> {
    progress: &'p dyn Progress,
    hashers: Option<&'p dyn crate::hash::Hashers>,
    files: u64,
    dirs: u64,
    entries: u64,
    bytes: u64,
    warnings: Vec<Warning>,
    /// (device, inode) of multiply linked files already stored -> path.
    hardlinks: HashMap<(u64, u64), String>,
}

impl<'p> Run<'p> {
    fn new(progress: &'p dyn Progress, hashers: Option<&'p dyn crate::hash::Hashers>) -> Self {
        Self {
            progress,
            hashers,
            files: 0,
            dirs: 0,
            entries: 0,
            bytes: 0,
            warnings: Vec::new(),
            hardlinks: HashMap::new(),
        }
    }

    fn warn(&mut self, path: String, message: String) {
        let w = Warning { path, message };
        self.progress.event(&Event::Warning {
            path: w.path.clone(),
            message: w.message.clone(),
        });
        self.warnings.push(w);
    }

    fn dry(&mut self, w: Walked) {
        match w {
            Walked::Warning { path, message } => self.warn(path, message),
            Walked::Entry { name, meta, .. } => {
                self.entries += 1;
                if meta.is_dir() {
                    self.dirs += 1;
                } else if meta.is_file() {
                    self.files += 1;
                    self.bytes += meta.len();
                }
                self.progress.event(&Event::File {
                    path: name,
                    bytes: if meta.is_file() { meta.len() } else { 0 },
                });
            }
        }
    }

    fn store<W: Write>(
        &mut self,
        w: Walked,
        packer: &mut dyn Packer,
        manifest: &mut ManifestWriter<W>,
        cancel: &Cancel,
        data_key: &str,
        manifest_key: &str,
    ) -> Result<()> {
        let (abs, name, meta) = match w {
            Walked::Warning { path, message } => {
                self.warn(path, message);
                return Ok(());
            }
            Walked::Entry { abs, name, meta } => (abs, name, meta),
        };
        let ft = meta.file_type();
        let mut entry = Entry {
            path: name,
            kind: EntryKind::Dir,
            size: 0,
            mtime: meta.mtime(),
            mtime_nsec: meta.mtime_nsec() as u32,
            mode: meta.permissions().mode() & 0o7777,
            link: None,
            blake3: None,
        };
        if ft.is_dir() {
            packer.append_other(&entry).ctx("write", data_key)?;
            self.dirs += 1;
        } else if ft.is_symlink() {
            let target = match std::fs::read_link(&abs) {
                Ok(t) => t,
                Err(e) => {
                    self.warn(abs.display().to_string(), format!("cannot read link: {e}"));
                    return Ok(());
                }
            };
            let Some(target) = target.to_str() else {
                self.warn(
                    abs.display().to_string(),
                    "link target is not valid UTF-8; skipped".into(),
                );
                return Ok(());
            };
            entry.kind = EntryKind::Symlink;
            entry.link = Some(target.to_owned());
            packer.append_other(&entry).ctx("write", data_key)?;
        } else if ft.is_file() {
            let inode = (meta.dev(), meta.ino());
            if meta.nlink() > 1
                && let Some(first) = self.hardlinks.get(&inode)
            {
                entry.kind = EntryKind::Hardlink;
                entry.link = Some(first.clone());
                packer.append_other(&entry).ctx("write", data_key)?;
            } else {
                entry.kind = EntryKind::File;
                entry.size = meta.len();
                if !self.store_file(&abs, &meta, &mut entry, packer, cancel, data_key)? {
                    return Ok(());
                }
                if meta.nlink() > 1 {
                    self.hardlinks.insert(inode, entry.path.clone());
                }
                self.files += 1;
                self.bytes += entry.size;
            }
        } else {
            self.warn(
                abs.display().to_string(),
                "special file (device, socket or FIFO) skipped".into(),
            );
            return Ok(());
        }
        manifest.push(&entry).ctx("write", manifest_key)?;
        self.entries += 1;
        self.progress.event(&Event::File {
            path: entry.path,
            bytes: entry.size,
        });
        Ok(())
    }

    /// Stores one regular file; `false` when it was skipped with a warning.
    fn store_file(
        &mut self,
        abs: &std::path::Path,
        meta: &std::fs::Metadata,
        entry: &mut Entry,
        packer: &mut dyn Packer,
        cancel: &Cancel,
        data_key: &str,
    ) -> Result<bool> {
        let shown = abs.display().to_string();
        let file = match File::open(abs) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.warn(shown, "vanished before it could be read; skipped".into());
                return Ok(false);
            }
            Err(e) => {
                self.warn(shown, format!("cannot read: {e}; skipped"));
                return Ok(false);
            }
        };
        let hashers = self.hashers.expect("hashers present when storing");
        let mut reader = FileReader {
            file: &file,
            hasher: hashers.blake3(),
            cancel,
            read_error: None,
        };
        let delivered = match packer.append_file(entry, &mut reader) {
            Ok(n) => n,
            Err(_) if cancel.is_cancelled() => return Err(Error::Cancelled),
            Err(e) => return Err(Error::io("write", data_key, e)),
        };
        let FileReader {
            mut hasher,
            read_error,
            ..
        } = reader;
        if delivered < entry.size {
            // The packer stored zeros for the missing part; hash what is stored.
            let zeros = [0u8; 8192];
            let mut left = entry.size - delivered;
            while left > 0 {
                let n = left.min(zeros.len() as u64) as usize;
                hasher.update(&zeros[..n]);
                left -= n as u64;
            }
        }
        entry.blake3 = Some(hasher.finish_hex());
        if let Some(e) = read_error {
            self.warn(
                shown,
                format!("read error after {delivered} bytes ({e}); the rest is stored as zeros"),
            );
        } else if delivered < entry.size {
            self.warn(
                shown,
                format!(
                    "shrank while being read ({} of {} bytes); the rest is stored as zeros",
                    delivered, entry.size
                ),
            );
        } else if let Ok(after) = file.metadata()
            && (after.len() != meta.len()
                || after.mtime() != meta.mtime()
                || after.mtime_nsec() != meta.mtime_nsec())
        {
            self.warn(
                shown,
                "changed while being read; the stored copy may be inconsistent".into(),
            );
        }
        Ok(true)
    }

    fn snapshot_meta(&self, h: &Header<'_>, objects: Vec<ObjectRecord>) -> SnapshotMeta {
        let data_name = h.format.compression().data_object_name();
        let data = objects
            .iter()
            .find(|o| o.name == data_name)
            .expect("data object recorded");
        let warning_count = self.warnings.len() as u64;
        SnapshotMeta {
            format: SNAPSHOT_FORMAT,
            id: h.id.to_owned(),
            timestamp: h.now,
            kind: SnapshotKind::Files,
            status: if self.warnings.is_empty() {
                SnapshotStatus::Success
            } else {
                SnapshotStatus::Incomplete
            },
            error_message: (!self.warnings.is_empty()).then(|| {
                format!(
                    "{} file(s) could not be stored as they were (see warnings)",
                    self.warnings.len()
                )
            }),
            warnings: self
                .warnings
                .iter()
                .take(MAX_RECORDED_WARNINGS)
                .map(|w| format!("{}: {}", w.path, w.message))
                .collect(),
            warning_count,
            host: h.opts.host.clone().unwrap_or_else(lock::this_host),
            tags: h.opts.tags.clone(),
            paths: h
                .source
                .roots()
                .iter()
                .map(|p| p.to_string_lossy().into_owned())
                .collect(),
            excludes: h.patterns.clone(),
            tool_version: tool_version(),
            duration_seconds: h.started.elapsed().as_secs_f64(),
            size_bytes: data.size,
            source_bytes: self.bytes,
            checksum: format!("sha256:{}", data.sha256),
            files_included: vec![data_name.to_owned()],
            file_count: self.files,
            dir_count: self.dirs,
            entry_count: self.entries,
            compressed: h.format.compression() != Compression::None,
            compression: h.format.compression(),
            level: h.format.level(),
            encrypted: false,
            objects,
        }
    }

    fn summary(
        &self,
        snapshot: Option<SnapshotMeta>,
        dry_run: bool,
        removed_leftovers: Vec<String>,
        started: Instant,
    ) -> BackupSummary {
        self.progress.event(&Event::Finished {
            operation: "backup",
            files: self.files,
            bytes: self.bytes,
            warnings: self.warnings.len() as u64,
            seconds: started.elapsed().as_secs_f64(),
        });
        BackupSummary {
            snapshot,
            files: self.files,
            dirs: self.dirs,
            bytes: self.bytes,
            warnings: self.warnings.clone(),
            dry_run,
            removed_leftovers,
        }
    }
}

/// Reads a source file for the packer: hashes what it delivers, turns a read
/// error into end-of-file (remembered, reported as a warning) so the archive
/// stays well-formed, and stops on cancellation.
struct FileReader<'a> {
    file: &'a File,
    hasher: Box<dyn StreamHasher>,
    cancel: &'a Cancel,
    read_error: Option<io::Error>,
}

impl Read for FileReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.cancel.is_cancelled() {
            return Err(io::Error::other("cancelled"));
        }
        if self.read_error.is_some() {
            return Ok(0);
        }
        match self.file.read(buf) {
            Ok(n) => {
                self.hasher.update(&buf[..n]);
                Ok(n)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Err(e),
            Err(e) => {
                self.read_error = Some(e);
                Ok(0)
            }
        }
    }
}

/// Counts files and bytes for progress totals, alongside the real walk.
fn count_tree(source: &FileTreeSource, cancel: &Cancel, progress: &dyn Progress) {
    let (mut files, mut bytes) = (0u64, 0u64);
    let mut linked = std::collections::HashSet::new();
    let walked = source.walk(cancel, &mut |w| {
        if let Walked::Entry { meta, .. } = w
            && meta.is_file()
            && (meta.nlink() == 1 || linked.insert((meta.dev(), meta.ino())))
        {
            files += 1;
            bytes += meta.len();
        }
        Ok(())
    });
    if walked.is_ok() {
        progress.event(&Event::Total { files, bytes });
    }
}

/// `Box<dyn ObjectWriter>` as a plain `Write`, so it can sit in a `BufWriter`
/// and be taken back out to commit.
struct ObjectWriterBox(Box<dyn ObjectWriter>);

impl Write for ObjectWriterBox {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}
