//! Storing what the walk meets: each entry into the archive and the
//! manifest, with the counters, warnings and change detection of one run,
//! and the snapshot metadata made from them.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::Instant;

use chrono::Utc;

use crate::archive::{Compression, Entry, EntryKind, Packer};
use crate::backup::{BackupOptions, BackupSummary, Warning};
use crate::dedup::SharedWriter;
use crate::hash::StreamHasher;
use crate::lock;
use crate::manifest::ManifestWriter;
use crate::progress::{Cancel, Event, Progress};
use crate::repository::tool_version;
use crate::snapshot::statcache::StatCache;
use crate::snapshot::{
    MAX_RECORDED_WARNINGS, ObjectRecord, SNAPSHOT_FORMAT, SnapshotKind, SnapshotMeta,
    SnapshotStatus,
};
use crate::source::{FileTreeSource, Walked};
use crate::{Error, IoContext, Result};

/// What a snapshot's metadata is made from, besides the run's counters.
pub(crate) struct Header<'a> {
    pub(crate) id: &'a str,
    pub(crate) opts: &'a BackupOptions,
    pub(crate) source: &'a FileTreeSource,
    pub(crate) patterns: Vec<String>,
    pub(crate) format: &'a dyn crate::archive::ArchiveFormat,
    pub(crate) now: chrono::DateTime<Utc>,
    pub(crate) started: Instant,
}

/// Counters and warnings of one run.
pub(crate) struct Run<'p> {
    progress: &'p dyn Progress,
    hashers: Option<&'p dyn crate::hash::Hashers>,
    files: u64,
    dirs: u64,
    entries: u64,
    bytes: u64,
    warnings: Vec<Warning>,
    /// (device, inode) of multiply linked files already stored -> path.
    hardlinks: HashMap<(u64, u64), String>,
    /// In a deduplicated repository: where to end chunks around the data
    /// of files at least this large.
    cuts: Option<(SharedWriter, u64)>,
    /// In a deduplicated repository: the stat cache, and whether to look
    /// files up in it (`false`: read every file, record what was read).
    cache: Option<(StatCache, bool)>,
    /// Files whose content was taken from the stat cache, not read.
    reused: u64,
    /// Opens files relative to their directory.
    opener: crate::source::FileOpener,
}

impl<'p> Run<'p> {
    pub(crate) fn new(
        progress: &'p dyn Progress,
        hashers: Option<&'p dyn crate::hash::Hashers>,
    ) -> Self {
        Self {
            progress,
            hashers,
            files: 0,
            dirs: 0,
            entries: 0,
            bytes: 0,
            warnings: Vec::new(),
            hardlinks: HashMap::new(),
            cuts: None,
            cache: None,
            reused: 0,
            opener: crate::source::FileOpener::default(),
        }
    }

    /// Gives each file of at least `threshold` bytes chunk boundaries of
    /// its own: a chunk ends where its data starts (after its tar header)
    /// and where it ends, so an unchanged file yields the same chunks
    /// wherever it is in the tree and whatever its name.
    ///
    /// With the stat cache, such a file found unchanged is not read: its
    /// header is written and its stored chunks spliced in (`look_up`
    /// false: every file is read, and the cache records what was).
    pub(crate) fn cut_large_files(
        &mut self,
        (writer, threshold): (SharedWriter, u64),
        cache: StatCache,
        look_up: bool,
    ) {
        self.cuts = Some((writer, threshold));
        self.cache = Some((cache, look_up));
    }

    /// The hashers of a run that stores.
    pub(crate) fn hashers(&self) -> &'p dyn crate::hash::Hashers {
        self.hashers.expect("hashers present when storing")
    }

    /// The stat cache, to be saved once the snapshot is committed.
    pub(crate) fn take_cache(&mut self) -> Option<StatCache> {
        self.cache.take().map(|(c, _)| c)
    }

    /// Stores a large file unchanged since the stat cache recorded it, by
    /// its header and its stored chunks; `false` when it must be read.
    fn splice_cached(
        &mut self,
        abs: &std::path::Path,
        meta: &std::fs::Metadata,
        entry: &mut Entry,
        packer: &mut dyn Packer,
        data_key: &str,
    ) -> Result<bool> {
        let (Some((writer, threshold)), Some((cache, true))) = (&self.cuts, &mut self.cache) else {
            return Ok(false);
        };
        if entry.size < *threshold {
            return Ok(false);
        }
        let Some(hit) = cache.lookup(abs, meta) else {
            return Ok(false);
        };
        let Some(chunks) = hit.chunk_list() else {
            return Ok(false);
        };
        // The chunks hold the data padded to tar's 512-byte blocks.
        let padded = entry.size.div_ceil(512) * 512;
        let listed: u64 = chunks.iter().map(|(_, len)| u64::from(*len)).sum();
        if listed != padded || !writer.holds_all(&chunks)? {
            return Ok(false);
        }
        let hit = hit.clone();
        packer.append_file_header(entry).ctx("write", data_key)?;
        writer.splice(&chunks)?;
        entry.blake3 = Some(hit.blake3.clone());
        cache.keep(hit);
        self.reused += 1;
        Ok(true)
    }

    fn warn(&mut self, path: String, message: String) {
        let w = Warning { path, message };
        self.progress.event(&Event::Warning {
            path: w.path.clone(),
            message: w.message.clone(),
        });
        self.warnings.push(w);
    }

    pub(crate) fn dry(&mut self, w: Walked) {
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

    pub(crate) fn store<W: Write>(
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
        if self.splice_cached(abs, meta, entry, packer, data_key)? {
            return Ok(true);
        }
        let shown = abs.display().to_string();
        let file = match self.opener.open(abs) {
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
        let cuts = self
            .cuts
            .as_ref()
            .filter(|(_, threshold)| entry.size >= *threshold)
            .map(|(w, _)| w);
        let mut reader = FileReader {
            file: &file,
            hasher: hashers.blake3(),
            cancel,
            read_error: None,
            cut_at_start: cuts,
            first_chunk: None,
        };
        let delivered = match packer.append_file(entry, &mut reader) {
            Ok(n) => n,
            Err(_) if cancel.is_cancelled() => return Err(Error::Cancelled),
            Err(e) => return Err(Error::io("write", data_key, e)),
        };
        if let Some(w) = cuts {
            packer.flush().ctx("write", data_key)?;
            w.cut_here()?;
        }
        let FileReader {
            mut hasher,
            read_error,
            first_chunk,
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
        } else if let (Some(w), Some(start), Some((cache, _)), Some(blake3)) =
            (cuts, first_chunk, &mut self.cache, &entry.blake3)
        {
            // Read whole and unchanged: the next run may reuse its chunks.
            cache.record(abs, meta, blake3, &w.chunks_since(start)?);
        }
        Ok(true)
    }

    pub(crate) fn snapshot_meta(&self, h: &Header<'_>, objects: Vec<ObjectRecord>) -> SnapshotMeta {
        let data = objects.first().expect("data object recorded first");
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
            files_included: vec![data.name.clone()],
            file_count: self.files,
            dir_count: self.dirs,
            entry_count: self.entries,
            compressed: h.format.compression() != Compression::None,
            compression: h.format.compression(),
            level: h.format.level(),
            encrypted: false,
            objects,
            database: None,
            dedup: None,
        }
    }

    pub(crate) fn summary(
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
            reused_files: self.reused,
        }
    }
}

/// Reads a source file for the packer: hashes what it delivers, turns a read
/// error into end-of-file (remembered, reported as a warning) so the archive
/// stays well-formed, and stops on cancellation.
///
/// With `cut_at_start`, its first read ends a chunk first: the packer
/// (uncompressed, unbuffered) has by then written the entry's header.
struct FileReader<'a> {
    file: &'a File,
    hasher: Box<dyn StreamHasher>,
    cancel: &'a Cancel,
    read_error: Option<io::Error>,
    cut_at_start: Option<&'a SharedWriter>,
    /// With `cut_at_start`: the position of the file's first chunk.
    first_chunk: Option<usize>,
}

impl Read for FileReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.cancel.is_cancelled() {
            return Err(io::Error::other("cancelled"));
        }
        if self.read_error.is_some() {
            return Ok(0);
        }
        if let Some(w) = self.cut_at_start.take() {
            let count = w
                .cut_and_count()
                .map_err(|e| io::Error::other(crate::error_chain(&e)))?;
            self.first_chunk = Some(count);
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
