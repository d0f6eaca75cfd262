//! `copy`: replicate snapshots from one repository to another (the 3-2-1
//! rule's second copy), whatever their targets.
//!
//! Each object streams from the source through a SHA-256 hasher into the
//! destination; a digest or size that differs from the source's
//! `snapshot.json` aborts that snapshot before anything is committed there.
//! `snapshot.json` is stored last, byte for byte, so a copy is invisible on
//! the destination until it is whole, and keeps its id, time and metadata.

use std::io::{self, Read, Write};
use std::time::Instant;

use serde::Serialize;

use crate::hash::HashingReader;
use crate::progress::{Cancel, Event, Progress};
use crate::repository::{Repository, SHA256SUMS, SNAPSHOT_JSON};
use crate::snapshot::SnapshotMeta;
use crate::target::TargetExt;
use crate::{Error, Result};

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

impl Repository {
    /// Copies snapshots (all when `ids` is empty; ids, unique prefixes or
    /// `latest` otherwise) to `dest`, skipping those it already has.
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
        let _dest_lock = dest.lock_shared(Some(meta.id.clone()))?;
        // Leftovers of an earlier, interrupted copy of this snapshot.
        dest.delete_snapshot_objects(&meta.id)?;
        // A snapshot whose commit does not hold together is not copied.
        self.verify_commit(meta)?;
        let hashers = self.registry().hashers()?;
        let mut buf = vec![0u8; BUF];
        let mut bytes = 0;
        for rec in &meta.objects {
            let key = Repository::key(&meta.id, &rec.name);
            let mut reader = HashingReader::new(self.target().get(&key)?, hashers.sha256());
            let mut writer = dest.target().put(&key)?;
            loop {
                cancel.check()?;
                let n = match reader.read(&mut buf) {
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
            bytes += size;
        }
        for name in [SHA256SUMS, SNAPSHOT_JSON] {
            let key = Repository::key(&meta.id, name);
            let body = self.target().get_bytes(&key)?;
            dest.target().put_bytes(&key, &body)?;
        }
        Ok(bytes)
    }

    fn describe(&self, key: &str) -> String {
        format!("{}/{key}", self.location())
    }
}
