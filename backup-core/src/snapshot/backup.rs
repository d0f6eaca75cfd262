//! The backup engine: a file tree becomes one snapshot.
//!
//! One walk feeds the packer (the archive streams straight into the target)
//! and the manifest at once; a second thread only counts, for progress. Every
//! buffer is bounded, so memory stays flat however large the tree.

use std::io::{self, BufWriter, Write};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use chrono::Utc;
use serde::{Deserialize, Serialize};

use crate::archive::Compression;
use crate::dedup::ChunkStore;
use crate::hash::SharedHasher;
use crate::manifest::{MANIFEST_CHUNKS_NAME, MANIFEST_ZST_NAME, ManifestWriter};
use crate::progress::{Cancel, Event, Progress};
use crate::repository::{Repository, SHA256SUMS, SNAPSHOT_JSON};
use crate::sink;
use crate::snapshot::chunked::{Chunked, ChunkedStream};
use crate::snapshot::statcache::StatCache;
use crate::snapshot::{CHUNKS_NAME, ObjectRecord, SnapshotKind, SnapshotMeta, new_snapshot_id};
use crate::source::{Excludes, FileTreeSource, Walked};
use crate::store::{Header, Run};
use crate::target::{ObjectWriter, TargetExt};
use crate::{Error, IoContext, Result};

/// zstd level of an archive snapshot's manifest: JSON Lines shrink about tenfold
/// at level 3, at a few hundred MB/s.
const MANIFEST_LEVEL: i32 = 3;

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
    /// In a deduplicated repository, read every file, even those the stat
    /// cache knows unchanged (restic's `--force`).
    pub no_cache: bool,
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
    /// Large files found unchanged by the stat cache of a deduplicated
    /// repository: stored by reference to their chunks, not read.
    pub reused_files: u64,
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
        let lock = self.lock_shared(Some(id.clone()))?;
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
                Run::new(progress, Some(hashers.as_ref())),
                cancel,
                opts.no_cache,
            );
            scan_cancel.cancel();
            if let Some(scanner) = scanner {
                let _ = scanner.join();
            }
            r
        });
        let (mut run, objects, chunked) = match result {
            Ok(v) => v,
            Err(e) => {
                let _ = self.delete_snapshot_objects(&id);
                return Err(e);
            }
        };

        let mut meta = run.snapshot_meta(
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
        if let Some(chunked) = chunked {
            let list = meta.objects[0].clone();
            chunked.apply(&mut meta, &list);
        }
        if let Err(e) = self.commit_snapshot(&meta, &lock, cancel) {
            let _ = self.delete_snapshot_objects(&id);
            return Err(e);
        }
        // Only a committed snapshot's chunks may be reused by the next run.
        if let Some(cache) = run.take_cache() {
            cache.save(source.roots());
        }
        Ok(run.summary(Some(meta), false, removed, started))
    }

    /// Writes the data object and manifest of snapshot `id`: an archive, or
    /// in a deduplicated repository the tar stream into the chunk store,
    /// with the chunk list as the data object.
    fn write_snapshot<'p>(
        &self,
        id: &str,
        source: &FileTreeSource,
        format: &dyn crate::archive::ArchiveFormat,
        mut run: Run<'p>,
        cancel: &Cancel,
        no_cache: bool,
    ) -> Result<(Run<'p>, Vec<ObjectRecord>, Option<Chunked>)> {
        let hashers = run.hashers();
        let (data_key, mut packer, end) = if self.dedup().is_some() {
            let stream = self.start_chunked(false)?;
            let cache = StatCache::load(self.cache_dir(), stream.cache_name());
            run.cut_large_files(stream.cuts(), cache, !no_cache);
            let tar = self.registry().format(Compression::None, None)?;
            let key = Repository::key(id, CHUNKS_NAME);
            let packer = tar
                .packer(Box::new(stream.writer()))
                .ctx("start archive", &key)?;
            (key, packer, DataEnd::Chunked(stream))
        } else {
            let name = format.compression().data_object_name();
            let key = Repository::key(id, name);
            let (sink, writer_thread) = sink::spawn(self.target().put(&key)?, hashers.sha256())?;
            let packer = format.packer(Box::new(sink)).ctx("start archive", &key)?;
            (key, packer, DataEnd::Archive(name, writer_thread))
        };

        let mut manifest = self.open_manifest(id, hashers)?;
        let manifest_key = manifest_key_of(&manifest);
        let walked = source
            .walk_ahead(cancel, &mut |w| {
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
        let (data, chunked) = match end {
            DataEnd::Archive(name, writer_thread) => {
                // The writer thread's own error (a full disk, say) is the
                // cause of a packing error, so it is the one reported.
                let (writer, sha256, size) = match (archived, writer_thread.finish(&data_key)) {
                    (Err(Error::Cancelled), _) => return Err(Error::Cancelled),
                    (Ok(()), Ok(written)) => written,
                    (_, Err(cause)) | (Err(cause), Ok(_)) => return Err(cause),
                };
                writer.commit()?;
                let record = ObjectRecord {
                    name: name.to_owned(),
                    size,
                    sha256,
                };
                (record, None)
            }
            DataEnd::Chunked(stream) => {
                archived?;
                let (record, chunked, store) = stream.finish(self, id)?;
                (record, Some((chunked, store)))
            }
        };
        let (manifest, chunked) = match chunked {
            Some((mut chunked, store)) => {
                let (record, stored) = self.close_manifest(manifest, id, Some(store))?;
                chunked.stored_bytes += stored;
                (record, Some(chunked))
            }
            None => (self.close_manifest(manifest, id, None)?.0, None),
        };
        Ok((run, vec![data, manifest], chunked))
    }

    /// The manifest's name in this repository: stored as chunks in a
    /// deduplicated one, zstd-compressed otherwise.
    pub(crate) fn manifest_name(&self) -> &'static str {
        if self.dedup().is_some() {
            MANIFEST_CHUNKS_NAME
        } else {
            MANIFEST_ZST_NAME
        }
    }

    /// Starts the manifest of snapshot `id`: an object (zstd-compressed)
    /// hashed as it is stored, or in a deduplicated repository a temporary file
    /// (zstd-compressed) that [`Self::close_manifest`] stores into the
    /// chunk store once the snapshot's stream is stored.
    pub(crate) fn open_manifest(
        &self,
        id: &str,
        hashers: &dyn crate::hash::Hashers,
    ) -> Result<ManifestWriter<ManifestOut>> {
        let name = self.manifest_name();
        let key = Repository::key(id, name);
        let (compression, level, writer, spool): (_, _, Box<dyn ObjectWriter>, _) =
            if name == MANIFEST_CHUNKS_NAME {
                let file = tempfile::tempfile()
                    .map_err(|e| Error::io("create", "a temporary file for the manifest", e))?;
                let reader = file
                    .try_clone()
                    .map_err(|e| Error::io("open", "the manifest's temporary file", e))?;
                (
                    Compression::Zstd,
                    Some(1),
                    Box::new(Spool(file)),
                    Some(reader),
                )
            } else {
                (
                    Compression::Zstd,
                    Some(MANIFEST_LEVEL),
                    self.target().put(&key)?,
                    None,
                )
            };
        let object = SharedObject(Arc::new(Mutex::new(Some(writer))));
        let hash = SharedHasher::new(hashers.sha256());
        let buffered = BufWriter::with_capacity(256 * 1024, object.clone());
        let encoder = self
            .registry()
            .codec(compression, level)?
            .encoder(Box::new(hash.writer(buffered)))
            .ctx("start compressing", &key)?;
        let out = ManifestOut {
            encoder: BufWriter::with_capacity(64 * 1024, encoder),
            hash,
            object,
            name,
            key,
            spool,
        };
        let key = out.key.clone();
        ManifestWriter::new(out, id).ctx("write", &key)
    }

    /// Finishes and commits a manifest; returns its record and, for one
    /// stored as chunks (into `store`, which must then be given), the bytes
    /// of packs and index written.
    pub(crate) fn close_manifest(
        &self,
        manifest: ManifestWriter<ManifestOut>,
        id: &str,
        store: Option<ChunkStore>,
    ) -> Result<(ObjectRecord, u64)> {
        let ManifestOut {
            encoder,
            hash,
            object,
            name,
            key,
            spool,
        } = manifest.into_inner();
        encoder
            .into_inner()
            .map_err(|e| Error::io("write", key.clone(), e.into_error()))?
            .finish()
            .ctx("write", &key)?;
        let (sha256, size) = hash.finish();
        let mut writer = object
            .0
            .lock()
            .ok()
            .and_then(|mut w| w.take())
            .ok_or_else(|| {
                Error::io(
                    "write",
                    key.clone(),
                    io::Error::other("the manifest is closed"),
                )
            })?;
        writer.flush().ctx("write", &key)?;
        writer.commit()?;
        let Some(mut file) = spool else {
            let record = ObjectRecord {
                name: name.to_owned(),
                size,
                sha256,
            };
            return Ok((record, 0));
        };
        let store = store
            .ok_or_else(|| Error::io("write", key.clone(), io::Error::other("no chunk store")))?;
        io::Seek::rewind(&mut file).ctx("read", "the manifest's temporary file")?;
        let decoded = self
            .registry()
            .codec(Compression::Zstd, None)?
            .decoder(Box::new(io::BufReader::new(file)))
            .ctx("read", "the manifest's temporary file")?;
        // The header is made again by readers (see store_manifest_chunks).
        let mut lines = io::BufReader::with_capacity(256 * 1024, decoded);
        io::BufRead::read_until(&mut lines, b'\n', &mut Vec::new())
            .ctx("read", "the manifest's temporary file")?;
        self.store_manifest_chunks(id, store, &mut lines)
    }

    /// Stores `SHA256SUMS` (every object's SHA-256 and `snapshot.json`'s
    /// own), then `snapshot.json`: the commit point. A deduplicated
    /// snapshot is committed only if `lock` was kept fresh all along (its
    /// chunks stored before were found under that lock, which a prune
    /// respects only while it is fresh).
    pub(crate) fn commit_snapshot(
        &self,
        meta: &SnapshotMeta,
        lock: &crate::lock::LockGuard,
        cancel: &Cancel,
    ) -> Result<()> {
        let body = serde_json::to_vec_pretty(meta).expect("snapshot metadata serializes");
        let mut hasher = self.registry().hashers()?.sha256();
        hasher.update(&body);
        let sums = crate::verify::sums_text(meta, Some(&hasher.finish_hex()));
        self.target()
            .put_bytes(&Repository::key(&meta.id, SHA256SUMS), sums.as_bytes())?;
        cancel.check()?;
        if meta.dedup.is_some() {
            lock.check_fresh()?;
        }
        self.target()
            .put_bytes(&Repository::key(&meta.id, SNAPSHOT_JSON), &body)
    }
}

/// How the data object of a snapshot being written is ended.
enum DataEnd {
    /// An archive: its name and the thread writing it.
    Archive(&'static str, sink::SinkHandle),
    /// A stream into the chunk store.
    Chunked(ChunkedStream),
}

/// Where a manifest is written: compressed (or not), hashed, buffered,
/// committed when closed.
pub(crate) struct ManifestOut {
    /// Buffered in front: a manifest is written a JSON token at a time.
    encoder: BufWriter<Box<dyn crate::archive::Encoder>>,
    hash: SharedHasher,
    object: SharedObject,
    name: &'static str,
    key: String,
    /// The temporary file a manifest to be stored as chunks is written to
    /// (read back through this second handle).
    spool: Option<std::fs::File>,
}

/// A manifest's temporary file, as the object it is written to.
struct Spool(std::fs::File);

impl Write for Spool {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl ObjectWriter for Spool {
    fn commit(self: Box<Self>) -> Result<()> {
        Ok(())
    }
}

impl ManifestOut {
    pub(crate) fn key(&self) -> &str {
        &self.key
    }
}

impl Write for ManifestOut {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.encoder.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.encoder.flush()
    }
}

/// An object being written, shared so that it can be committed once the
/// compressor in front of it has finished (and dropped its output).
#[derive(Clone)]
struct SharedObject(Arc<Mutex<Option<Box<dyn ObjectWriter>>>>);

impl Write for SharedObject {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut guard = self
            .0
            .lock()
            .map_err(|_| io::Error::other("a manifest writer panicked"))?;
        guard
            .as_mut()
            .ok_or_else(|| io::Error::other("the manifest is closed"))?
            .write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn manifest_key_of(m: &ManifestWriter<ManifestOut>) -> String {
    m.get_ref().key().to_owned()
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
