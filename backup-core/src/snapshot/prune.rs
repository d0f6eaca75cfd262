//! `prune`: removing what no snapshot of a deduplicated repository refers
//! to any more, while backups go on (the protocol is in
//! [`crate::dedup::prune`]).
//!
//! A prune takes a prune lock (beside backups and readers, not beside
//! another prune or `forget`), removes unfinished marks of crashed prunes,
//! reads every snapshot's chunk list, marks the packs none of them uses,
//! and sweeps each mark whose grace period has passed and whose backups of
//! mark time have all ended (reading the chunk lists again first). With a
//! grace period of zero and nothing else running, one prune marks and
//! sweeps. An archive repository has nothing to prune: its snapshots own
//! their data, and `forget` deletes it.

use std::collections::HashSet;
use std::time::Duration;

use chrono::Utc;
use serde::{Deserialize, Serialize};

use crate::dedup::prune::{
    PendingMark, PruneStep, Referenced, StepHook, SweepReport, read_marks, remove_mark, write_mark,
};
use crate::repository::Repository;
use crate::{Error, Result};

/// The grace period a mark waits by default before its packs are deleted:
/// long enough for readers that take no lock (`--no-lock`) and for object
/// stores whose listings lag behind.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(3600);

/// How to prune.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PruneOptions {
    /// How old a mark must be before its packs are deleted.
    pub grace: Duration,
    /// Report what would be marked and which marks are due; change nothing.
    pub dry_run: bool,
    /// A pack of which at least this many percent are unused has its used
    /// chunks copied into new packs, and is marked (100: never repack).
    pub repack_unused_percent: u8,
}

/// The default of [`PruneOptions::repack_unused_percent`].
pub const DEFAULT_REPACK_PERCENT: u8 = 10;

impl Default for PruneOptions {
    fn default() -> Self {
        Self {
            grace: DEFAULT_GRACE,
            dry_run: false,
            repack_unused_percent: DEFAULT_REPACK_PERCENT,
        }
    }
}

/// A mark that is not swept yet, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WaitingMark {
    pub name: String,
    pub packs: u64,
    /// What it waits for.
    pub reason: String,
}

/// What a prune did (or, in a dry run, would do).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PruneReport {
    /// Snapshots whose chunk lists were read.
    pub snapshots: u64,
    /// Distinct chunks they refer to.
    pub referenced_chunks: u64,
    /// Packs this run marked (none are used by a snapshot), and their bytes.
    pub marked_packs: u64,
    pub marked_bytes: u64,
    /// Packs whose used chunks this run copied into new packs (they are
    /// among the marked ones), and the bytes written for them.
    pub repacked_packs: u64,
    pub repacked_bytes_written: u64,
    /// Bytes of packs that hold both used and unused chunks, left as they
    /// are (under the repack threshold).
    pub partly_used_bytes: u64,
    /// Marks swept by this run.
    pub marks_swept: u64,
    /// What the sweep deleted.
    pub swept: SweepReport,
    /// Marks left for a later prune.
    pub waiting: Vec<WaitingMark>,
    /// Unfinished marks of crashed prunes, removed (their packs are marked
    /// again if still unused).
    pub unfinished_marks_removed: u64,
    pub dry_run: bool,
}

impl Repository {
    /// Prunes with no hook; see [`Self::prune_with_hook`].
    ///
    /// # Errors
    ///
    /// As [`Self::prune_with_hook`].
    pub fn prune(&self, opts: &PruneOptions) -> Result<PruneReport> {
        self.prune_with_hook(opts, &mut |_: &PruneStep| Ok(()))
    }

    /// Marks unused packs and sweeps due marks (see the module
    /// documentation). `hook` is told of every write and delete before it
    /// is done; an error from it stops the prune there, as a crash would
    /// (tests use it to stop a prune at every step).
    ///
    /// # Errors
    ///
    /// [`Error::Locked`] while another prune or `forget` runs;
    /// [`Error::Integrity`] if a snapshot or an index fragment cannot be
    /// read (nothing is deleted while what it refers to is unknown); the
    /// target's errors.
    pub fn prune_with_hook(&self, opts: &PruneOptions, hook: StepHook<'_>) -> Result<PruneReport> {
        let mut report = PruneReport {
            dry_run: opts.dry_run,
            ..PruneReport::default()
        };
        if self.dedup().is_none() {
            return Ok(report);
        }
        let lock = if opts.dry_run {
            self.lock_read()?
        } else {
            Some(self.lock_prune()?)
        };
        let target = self.target().as_ref();
        let store = self.chunk_store(false)?;

        let mut marks = Vec::new();
        for m in read_marks(target)? {
            let finished = m.unreadable.is_none() && m.mark.is_some() && m.locks.is_some();
            if finished {
                marks.push(m);
            } else if !opts.dry_run {
                // A crashed prune's: removing a mark is always safe.
                remove_mark(target, &m, hook)?;
                report.unfinished_marks_removed += 1;
            }
        }

        let referenced = self.referenced_chunks(&mut report)?;
        let already: HashSet<String> = marks
            .iter()
            .flat_map(|m| mark_packs(m).iter().cloned())
            .collect();
        let unused = store.unused_packs(&referenced, &already, opts.repack_unused_percent)?;
        report.marked_packs = (unused.packs.len() + unused.repack.len()) as u64;
        report.marked_bytes =
            unused.packs.iter().map(|(_, size)| size).sum::<u64>() + unused.repack_bytes;
        report.partly_used_bytes = unused.partly_used_bytes;
        if opts.dry_run {
            report.repacked_packs = unused.repack.len() as u64;
            report.repacked_bytes_written = unused.repack_used_bytes;
        } else if report.marked_packs > 0 {
            // The used chunks of mostly unused packs are copied (and
            // indexed) before those packs are marked.
            let repacked = store.repack(&unused.repack, hook)?;
            report.repacked_packs = repacked.emptied.len() as u64;
            report.repacked_bytes_written = repacked.bytes_written;
            report.marked_packs = (unused.packs.len() + repacked.emptied.len()) as u64;
            let own = lock.as_ref().map_or("", |l| l.key());
            let mut names: Vec<String> = unused.packs.into_iter().map(|(name, _)| name).collect();
            names.extend(repacked.emptied);
            if !names.is_empty() {
                marks.push(write_mark(target, names, own, hook)?);
            }
        }

        let (due, waiting) = self.due_marks(
            marks,
            opts.grace,
            lock.as_ref().map(crate::lock::LockGuard::key),
        )?;
        report.waiting = waiting;
        if opts.dry_run || due.is_empty() {
            report.marks_swept = if opts.dry_run { due.len() as u64 } else { 0 };
            return Ok(report);
        }
        // Every backup of the marks' time has ended: what it committed is
        // in the chunk lists read now.
        let referenced = self.referenced_chunks(&mut PruneReport::default())?;
        let doomed: HashSet<String> = due
            .iter()
            .flat_map(|m| mark_packs(m).iter().cloned())
            .collect();
        report.swept = store.sweep(&doomed, &referenced, hook)?;
        for m in &due {
            remove_mark(target, m, hook)?;
        }
        report.marks_swept = due.len() as u64;
        Ok(report)
    }

    /// Splits marks into those due for a sweep (older than `grace`, every
    /// lock of their time gone) and those that wait.
    fn due_marks(
        &self,
        marks: Vec<PendingMark>,
        grace: Duration,
        own: Option<&str>,
    ) -> Result<(Vec<PendingMark>, Vec<WaitingMark>)> {
        let now = Utc::now();
        let host = crate::lock::this_host();
        let live: HashSet<String> = self
            .locks()?
            .into_iter()
            .filter(|l| Some(l.key.as_str()) != own && !l.info.is_stale(now, &host))
            .map(|l| l.key)
            .collect();
        let mut due = Vec::new();
        let mut waiting = Vec::new();
        for m in marks {
            let time = m.mark.as_ref().map_or(now, |mark| mark.time);
            let age = now.signed_duration_since(time).to_std().unwrap_or_default();
            let busy = m
                .locks
                .as_deref()
                .unwrap_or_default()
                .iter()
                .filter(|k| live.contains(*k))
                .count();
            let reason = if age < grace {
                Some(format!(
                    "its grace period ends at {} UTC",
                    (time + chrono::Duration::from_std(grace).unwrap_or_default())
                        .format("%Y-%m-%d %H:%M:%S")
                ))
            } else if busy > 0 {
                Some(format!(
                    "{busy} operation(s) that ran when it was marked still hold their lock"
                ))
            } else {
                None
            };
            match reason {
                None => due.push(m),
                Some(reason) => waiting.push(WaitingMark {
                    packs: mark_packs(&m).len() as u64,
                    name: m.name,
                    reason,
                }),
            }
        }
        Ok((due, waiting))
    }

    /// The chunks every committed snapshot refers to.
    ///
    /// # Errors
    ///
    /// [`Error::Integrity`] if any snapshot cannot be read: what it refers
    /// to is unknown, so nothing may be deleted.
    fn referenced_chunks(&self, report: &mut PruneReport) -> Result<Referenced> {
        let listing = self.list_snapshots()?;
        if let Some((id, why)) = listing.damaged.first() {
            return Err(Error::Integrity {
                snapshot: id.clone(),
                detail: format!(
                    "{why}; prune deletes nothing while a snapshot cannot be read \
                     (restore what you can, then `backupkit forget` it)"
                ),
            });
        }
        let mut referenced = Referenced::default();
        for meta in &listing.snapshots {
            report.snapshots += 1;
            if meta.dedup.is_none() {
                continue;
            }
            // The stream's chunks and the manifest's.
            let list = self.snapshot_chunks(meta)?;
            referenced.extend(list.iter().map(|(id, _)| id));
        }
        report.referenced_chunks = referenced.len() as u64;
        Ok(referenced)
    }
}

fn mark_packs(m: &PendingMark) -> &[String] {
    m.mark.as_ref().map_or(&[], |mark| mark.packs.as_slice())
}
