//! `copy`: replicate snapshots from one repository to another (the 3-2-1
//! rule's second copy), whatever their targets.
//!
//! Each object streams from the source through a SHA-256 hasher into the
//! destination; a digest or size that differs from the source's
//! `snapshot.json` aborts that snapshot before anything is committed there.
//! `snapshot.json` is stored last, byte for byte, so a copy is invisible on
//! the destination until it is whole, and keeps its id, time and metadata.
//! To or from a deduplicated repository, the snapshot's stream is converted
//! (see [`Repository::copy_to`]).

use std::io::{self, Read, Write};
use std::time::Instant;

use serde::Serialize;

use crate::archive::Compression;
use crate::hash::HashingReader;
use crate::manifest::MANIFEST_CHUNKS_NAME;
use crate::progress::{Cancel, Event, Progress};
use crate::repository::{Repository, SHA256SUMS, SNAPSHOT_JSON};
use crate::sink;
use crate::snapshot::{ObjectRecord, SNAPSHOT_FORMAT, SnapshotKind, SnapshotMeta};
use crate::target::TargetExt;
use crate::{Error, IoContext, Result};

/// What `copy` did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CopySummary {
    /// Ids copied, in order.
    pub copied: Vec<String>,
    /// Ids the destination already had.
    pub skipped: Vec<String>,
    /// Bytes of data copied.
    pub bytes: u64,
}

/// Copy buffer: large enough for object stores' streaming, small enough to
/// keep memory flat.
const BUF: usize = 1 << 20;

/// How a converted copy stored the stream on the destination.
enum Stored {
    Archive,
    Chunks(Box<(crate::snapshot::chunked::Chunked, crate::dedup::ChunkStore)>),
}

impl Repository {
    /// Copies snapshots (all when `ids` is empty; ids, unique prefixes or
    /// `latest` otherwise) to `dest`, skipping those it already has.
    ///
    /// Between two archive repositories every object is copied byte for
    /// byte. To or from a deduplicated repository the snapshot's stream is
    /// converted: into a deduplicated one, only the chunks it lacks are
    /// stored; out of one, the stream becomes a zstd archive. Either way the
    /// stream is checked whole against the source before the copy is
    /// committed.
    ///
    /// # Errors
    ///
    /// [`Error::Integrity`] when a source object does not match its recorded
    /// digest or size (nothing of that snapshot becomes visible on `dest`);
    /// the targets' errors otherwise. Snapshots copied before an error stay
    /// copied.
    pub fn copy_to(
        &self,
        dest: &Repository,
        ids: &[String],
        progress: &dyn Progress,
        cancel: &Cancel,
    ) -> Result<CopySummary> {
        let started = Instant::now();
        progress.event(&Event::Started {
            operation: "copy",
            snapshot: None,
        });
        // The source lock keeps `forget` from deleting what is being read.
        let _source_lock = self.lock_read()?;
        let wanted: Vec<SnapshotMeta> = if ids.is_empty() {
            self.snapshots()?
        } else {
            let mut found = Vec::new();
            for id in ids {
                let meta = self.find_snapshot(id)?;
                if !found.iter().any(|m: &SnapshotMeta| m.id == meta.id) {
                    found.push(meta);
                }
            }
            found
        };
        if progress.wants_totals() {
            progress.event(&Event::Total {
                files: wanted.iter().map(|m| m.objects.len() as u64).sum(),
                bytes: wanted
                    .iter()
                    .flat_map(|m| m.objects.iter().map(|o| o.size))
                    .sum(),
            });
        }
        let mut summary = CopySummary::default();
        for meta in wanted {
            cancel.check()?;
            match dest.load_snapshot(&meta.id) {
                Ok(_) => {
                    summary.skipped.push(meta.id.clone());
                    continue;
                }
                Err(Error::SnapshotNotFound { .. }) => {}
                Err(e) => return Err(e),
            }
            let bytes = self.copy_one(dest, &meta, progress, cancel)?;
            summary.bytes += bytes;
            summary.copied.push(meta.id);
        }
        progress.event(&Event::Finished {
            operation: "copy",
            files: summary.copied.len() as u64,
            bytes: summary.bytes,
            warnings: 0,
            seconds: started.elapsed().as_secs_f64(),
        });
        Ok(summary)
    }

    fn copy_one(
        &self,
        dest: &Repository,
        meta: &SnapshotMeta,
        progress: &dyn Progress,
        cancel: &Cancel,
    ) -> Result<u64> {
        // The lock names the snapshot, so a concurrent backup's clean-up on
        // the destination leaves this unfinished directory alone.
        let dest_lock = dest.lock_shared(Some(meta.id.clone()))?;
        // Leftovers of an earlier, interrupted copy of this snapshot.
        dest.delete_snapshot_objects(&meta.id)?;
        // A snapshot whose commit does not hold together is not copied.
        self.verify_commit(meta)?;
        if self.dedup().is_some() || dest.dedup().is_some() {
            return self.copy_converted((dest, &dest_lock), meta, progress, cancel);
        }
        let mut buf = vec![0u8; BUF];
        let mut bytes = 0;
        for rec in &meta.objects {
            bytes += self.copy_object(dest, meta, rec, &mut buf, progress, cancel)?;
        }
        for name in [SHA256SUMS, SNAPSHOT_JSON] {
            let key = Repository::key(&meta.id, name);
            let body = self.target().get_bytes(&key)?;
            dest.target().put_bytes(&key, &body)?;
        }
        Ok(bytes)
    }

    /// Copies one object of a snapshot byte for byte, checked against its
    /// record before it is committed on `dest`.
    fn copy_object(
        &self,
        dest: &Repository,
        meta: &SnapshotMeta,
        rec: &ObjectRecord,
        buf: &mut [u8],
        progress: &dyn Progress,
        cancel: &Cancel,
    ) -> Result<u64> {
        let hashers = self.registry().hashers()?;
        let key = Repository::key(&meta.id, &rec.name);
        let mut reader = HashingReader::new(self.target().get(&key)?, hashers.sha256());
        let mut writer = dest.target().put(&key)?;
        loop {
            cancel.check()?;
            let n = match reader.read(buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::io("read", self.describe(&key), e)),
            };
            writer
                .write_all(&buf[..n])
                .map_err(|e| Error::io("write", dest.describe(&key), e))?;
        }
        let (digest, size) = reader.finish();
        if digest != rec.sha256 || size != rec.size {
            // Dropping the writer discards the upload.
            return Err(Error::Integrity {
                snapshot: meta.id.clone(),
                detail: format!(
                    "{} in {} has {size} bytes with SHA-256 {digest}, but {} bytes with {} were stored; nothing was copied",
                    rec.name,
                    self.location(),
                    rec.size,
                    rec.sha256
                ),
            });
        }
        writer.commit()?;
        progress.event(&Event::File {
            path: key,
            bytes: size,
        });
        Ok(size)
    }

    /// Copies a snapshot to or from a deduplicated repository: its stream
    /// (the tar archive, or the dump), checked whole against the source,
    /// is stored the destination's way (into its chunk store, storing only
    /// the chunks it lacks, or as a zstd archive), the manifest byte for
    /// byte; `snapshot.json` keeps everything but how the data is stored.
    fn copy_converted(
        &self,
        (dest, dest_lock): (&Repository, &crate::lock::LockGuard),
        meta: &SnapshotMeta,
        progress: &dyn Progress,
        cancel: &Cancel,
    ) -> Result<u64> {
        let hashers = self.registry().hashers()?;
        let (mut stream, check) = self.open_stream(meta, cancel)?;
        let source_checked = || {
            check.finish().map_err(|e| match e {
                Error::Integrity { snapshot, detail } => Error::Integrity {
                    snapshot,
                    detail: format!("{detail} in {}; nothing was copied", self.location()),
                },
                other => other,
            })
        };
        let read_error = |e: io::Error| check.read_error(e);
        let mut copied = meta.clone();
        let database = meta.kind == SnapshotKind::Database;
        let (data, stored) = if dest.dedup().is_some() {
            let chunked = dest.start_chunked(database)?;
            io::copy(&mut stream, &mut chunked.writer()).map_err(read_error)?;
            source_checked()?;
            let (record, how, store) = chunked.finish(dest, &meta.id)?;
            (record, Stored::Chunks(Box::new((how, store))))
        } else {
            // Out of a deduplicated repository: a zstd archive at the
            // chunks' level, as `backup --compression zstd` writes.
            let (compression, level) = (Compression::Zstd, meta.level);
            let name = match &meta.database {
                Some(db) => format!("{}{}", db.dump_name, compression.extension()),
                None => compression.data_object_name().to_owned(),
            };
            let key = Repository::key(&meta.id, &name);
            let (sink, thread) = sink::spawn(dest.target().put(&key)?, hashers.sha256())?;
            let mut encoder = dest
                .registry()
                .codec(compression, level)?
                .encoder(Box::new(sink))
                .map_err(|e| Error::io("compress", dest.describe(&key), e))?;
            let copied_stream = io::copy(&mut stream, &mut encoder).map_err(read_error);
            let finished = copied_stream.and_then(|_| {
                source_checked()?;
                encoder
                    .finish()
                    .map_err(|e| Error::io("write", dest.describe(&key), e))
            });
            let (writer, sha256, size) = match (finished, thread.finish(&key)) {
                (Ok(()), Ok(written)) => written,
                (Err(e), _) | (Ok(()), Err(e)) => return Err(e),
            };
            writer.commit()?;
            copied.dedup = None;
            copied.checksum = format!("sha256:{sha256}");
            copied.size_bytes = size;
            copied.files_included = vec![name.clone()];
            copied.compression = compression;
            copied.compressed = true;
            copied.level = level;
            (ObjectRecord { name, size, sha256 }, Stored::Archive)
        };
        progress.event(&Event::File {
            path: Repository::key(&meta.id, &data.name),
            bytes: data.size,
        });
        let mut bytes = data.size;
        let manifest = crate::verify::record(meta, meta.manifest_name())?;
        let manifest = match stored {
            Stored::Archive if meta.manifest_name() != MANIFEST_CHUNKS_NAME => {
                // A plain or compressed manifest is copied as it is, in
                // its snapshot's format (a deduplicated snapshot's is 3 or
                // later, which a compressed manifest needs).
                copied.format = meta.format;
                let mut buf = vec![0u8; BUF];
                bytes += self.copy_object(dest, meta, manifest, &mut buf, progress, cancel)?;
                manifest.clone()
            }
            stored => {
                // Written anew, the destination's way, from the entries
                // as every reader checks them.
                let mut written = dest.open_manifest(&meta.id, hashers.as_ref())?;
                self.list_entries(meta, &mut |e| written.push(e).ctx("write", "manifest"))?;
                let record = match stored {
                    Stored::Chunks(chunks) => {
                        let (mut how, store) = *chunks;
                        let (record, size) = dest.close_manifest(written, &meta.id, Some(store))?;
                        how.stored_bytes += size;
                        how.apply(&mut copied, &data);
                        record
                    }
                    Stored::Archive => {
                        copied.format = SNAPSHOT_FORMAT;
                        dest.close_manifest(written, &meta.id, None)?.0
                    }
                };
                bytes += record.size;
                record
            }
        };
        copied.objects = vec![data, manifest];
        dest.commit_snapshot(&copied, dest_lock, cancel)?;
        Ok(bytes)
    }

    fn describe(&self, key: &str) -> String {
        format!("{}/{key}", self.location())
    }
}
