//! The planner: walks the sources, the destination and the record together,
//! decides each path, and feeds the copy threads.

use std::collections::{HashMap, HashSet, VecDeque};
use std::iter::Peekable;
use std::sync::mpsc::{Receiver, SyncSender};

use crate::mirror::copy::hash_file;
use crate::mirror::record::{RECORD_PATH, RecordLine, RecordOut, RecordReader, STATE_DIR};
use crate::mirror::run::{Ctx, Job, JobResult};
use crate::mirror::stream::{SourceItem, Sources, Walk, next_err};
use crate::mirror::{MirrorSummary, Problem};
use crate::progress::Event;
use crate::tree::{EntryKind, FileAttrs, TreeEntry, Walked, cmp_paths, join};
use crate::{Error, Result};

/// Record lines that may wait for one slow copy before planning pauses.
const MAX_WAITING: usize = 65_536;

/// A record line in waiting: known now, or when a copy ends.
enum Slot {
    Ready(Option<RecordLine>),
    Waiting(u64),
}

/// What the merge leaves for the end of the run.
pub(super) struct EndState {
    pub(super) deletions: Vec<(String, EntryKind)>,
    /// Source files whose destination path holds a directory: copied once
    /// the deletions have made room.
    pub(super) deferred: Vec<(usize, String, TreeEntry)>,
    pub(super) dirs: Vec<DirTime>,
    pub(super) touched: HashSet<String>,
    pub(super) dest_entries: u64,
    pub(super) source_errors: u64,
    /// On a case-insensitive destination: every source path by its
    /// lower-case form.
    pub(super) cases: HashMap<String, String>,
    pub(super) record: RecordOut,
}

pub(super) struct DirTime {
    pub(super) path: String,
    pub(super) mtime_ns: i64,
    pub(super) differs: bool,
}

/// Plans path by path and feeds the workers.
pub(super) struct Planner<'c, 'a> {
    ctx: &'c Ctx<'a>,
    summary: &'c mut MirrorSummary,
    jobs: Option<SyncSender<Job>>,
    results: Receiver<(u64, JobResult)>,
    done: HashMap<u64, JobResult>,
    in_flight: u64,
    next_id: u64,
    slots: VecDeque<(Option<RecordLine>, Slot)>,
    old: Option<Peekable<RecordReader>>,
    /// A copy thread saw the run cancelled.
    cancelled: bool,
    state: EndState,
}

impl<'c, 'a> Planner<'c, 'a> {
    pub(super) fn new(
        ctx: &'c Ctx<'a>,
        summary: &'c mut MirrorSummary,
        jobs: SyncSender<Job>,
        results: Receiver<(u64, JobResult)>,
        old: Option<RecordReader>,
        root: Option<DirTime>,
    ) -> Self {
        let had_old = old.is_some();
        Self {
            ctx,
            summary,
            jobs: Some(jobs),
            results,
            done: HashMap::new(),
            in_flight: 0,
            next_id: 0,
            slots: VecDeque::new(),
            old: old.map(Iterator::peekable),
            cancelled: false,
            state: EndState {
                deletions: Vec::new(),
                deferred: Vec::new(),
                dirs: root.into_iter().collect(),
                touched: HashSet::new(),
                dest_entries: 0,
                source_errors: 0,
                cases: HashMap::new(),
                record: RecordOut::new(had_old, !ctx.opts.dry_run),
            },
        }
    }

    pub(super) fn into_state(self) -> EndState {
        self.state
    }

    fn event(&self, action: &'static str, path: &str, reason: &'static str, bytes: u64) {
        self.ctx.progress.event(&Event::Planned {
            action,
            path: path.to_owned(),
            reason,
            bytes,
        });
    }

    fn fail(&mut self, path: &str, message: String) {
        self.ctx.progress.event(&Event::Warning {
            path: path.to_owned(),
            message: message.clone(),
        });
        self.summary.failed.push(Problem {
            path: path.to_owned(),
            message,
        });
    }

    /// Walks the three streams together, one path at a time.
    pub(super) fn merge(&mut self, src: Sources<'_>, dst: Walk<'_>) -> Result<()> {
        let mut src = src.peekable();
        let mut dst = dst.peekable();
        loop {
            self.ctx.cancel.check()?;
            if self.cancelled {
                return Err(Error::Cancelled);
            }
            self.pump(false)?;
            if self.pathless(&mut src, &mut dst)? {
                continue;
            }
            let sk = match src.peek() {
                Some(Ok(SourceItem::Entry { entry, .. })) => Some(entry.path.as_str()),
                _ => None,
            };
            let dk = match dst.peek() {
                Some(Ok(Walked::Entry(e))) => Some(e.path.as_str()),
                _ => None,
            };
            let rk = match self.old.as_mut().and_then(Peekable::peek) {
                Some(Ok(r)) => Some(r.path.as_str()),
                _ => None,
            };
            let Some(key) = [sk, dk, rk]
                .into_iter()
                .flatten()
                .min_by(|a, b| cmp_paths(a, b))
                .map(str::to_owned)
            else {
                return Ok(());
            };
            let s = if sk == Some(key.as_str()) {
                match src.next() {
                    Some(Ok(SourceItem::Entry { source, rel, entry })) => {
                        Some((source, rel, entry))
                    }
                    _ => None,
                }
            } else {
                None
            };
            let d = if dk == Some(key.as_str()) {
                match dst.next() {
                    Some(Ok(Walked::Entry(e))) => Some(e),
                    _ => None,
                }
            } else {
                None
            };
            let r = if rk == Some(key.as_str()) {
                self.old
                    .as_mut()
                    .and_then(Iterator::next)
                    .and_then(Result::ok)
            } else {
                None
            };
            self.step(&key, s, d, r)?;
        }
    }

    /// Takes what has no path from the heads of the streams: warnings,
    /// leftovers, a damaged record. Whether it took anything.
    fn pathless(
        &mut self,
        src: &mut Peekable<Sources<'_>>,
        dst: &mut Peekable<Walk<'_>>,
    ) -> Result<bool> {
        match src.peek() {
            Some(Err(_)) => return Err(next_err(src)),
            Some(Ok(SourceItem::Warning { .. })) => {
                if let Some(Ok(SourceItem::Warning { path, message })) = src.next() {
                    self.state.source_errors += 1;
                    self.fail(&path, message);
                }
                return Ok(true);
            }
            _ => {}
        }
        match dst.peek() {
            Some(Err(_)) => return Err(next_err(dst)),
            Some(Ok(Walked::Leftover(_))) => {
                if let Some(Ok(Walked::Leftover(path))) = dst.next() {
                    self.leftover(&path)?;
                }
                return Ok(true);
            }
            Some(Ok(Walked::Warning { .. })) => {
                if let Some(Ok(Walked::Warning { path, message })) = dst.next() {
                    self.summary.notices.push(Problem { path, message });
                }
                return Ok(true);
            }
            _ => {}
        }
        if let Some(Some(Err(_))) = self.old.as_mut().map(Peekable::peek) {
            if let Some(Some(Err(e))) = self.old.as_mut().map(Iterator::next) {
                self.summary.notices.push(Problem {
                    path: RECORD_PATH.into(),
                    message: format!(
                        "{}; comparing with the destination's listing alone",
                        crate::check::error_chain(&e)
                    ),
                });
            }
            self.old = None;
            self.state.record.damaged = true;
            return Ok(true);
        }
        Ok(false)
    }

    /// Removes a leftover of an interrupted run.
    fn leftover(&mut self, path: &str) -> Result<()> {
        // Once this run writes its own record, a temporary file in the
        // state directory may be that one: the next run removes the rest.
        if self.state.record.dirty && path.starts_with(&format!("{STATE_DIR}/")) {
            return Ok(());
        }
        if !self.ctx.opts.dry_run {
            self.ctx.dest.remove(path, EntryKind::File)?;
        }
        self.touch(path);
        self.summary.cleaned += 1;
        Ok(())
    }

    /// Decides one path.
    fn step(
        &mut self,
        path: &str,
        s: Option<(usize, String, TreeEntry)>,
        d: Option<TreeEntry>,
        r: Option<RecordLine>,
    ) -> Result<()> {
        if d.is_some() {
            self.state.dest_entries += 1;
        }
        let Some((source, rel, entry)) = s else {
            if let Some(d) = d {
                self.extraneous(d);
            }
            self.emit(None, r);
            return Ok(());
        };
        if self.ctx.caps.case_insensitive && !self.case_unique(path) {
            self.emit(None, r);
            return Ok(());
        }
        match entry.kind {
            EntryKind::Dir => {
                self.dir(&entry, d.as_ref())?;
                self.emit(None, r);
            }
            EntryKind::Symlink => {
                self.link(&entry, d.as_ref())?;
                self.emit(None, r);
            }
            EntryKind::File => self.file(source, rel, entry, d, r)?,
        }
        Ok(())
    }

    /// On a case-insensitive destination, whether no other source path
    /// differs from `path` only in case (else the run fails for it).
    fn case_unique(&mut self, path: &str) -> bool {
        let lower = path.to_lowercase();
        match self.state.cases.get(&lower) {
            Some(other) if other != path => {
                let other = other.clone();
                self.fail(
                    path,
                    format!(
                        "differs from {other:?} only in case, and the destination does not tell \
                         them apart; not copied"
                    ),
                );
                false
            }
            _ => {
                self.state.cases.insert(lower, path.to_owned());
                true
            }
        }
    }

    fn extraneous(&mut self, d: TreeEntry) {
        if self.ctx.opts.delete {
            self.event("delete", &d.path, "not in the source", d.size);
            self.state.deletions.push((d.path, d.kind));
        } else {
            self.summary.extraneous += 1;
        }
    }

    fn touch(&mut self, path: &str) {
        let parent = path.rsplit_once('/').map_or("", |(p, _)| p);
        if !self.state.touched.contains(parent) {
            self.state.touched.insert(parent.to_owned());
        }
    }

    fn dir(&mut self, entry: &TreeEntry, d: Option<&TreeEntry>) -> Result<()> {
        let differs = match d {
            Some(d) if d.kind == EntryKind::Dir => !self.same_time(entry.mtime_ns, d.mtime_ns),
            Some(d) => {
                // A file or link where the source has a directory.
                self.replace_with_dir(d)?;
                true
            }
            None => {
                self.event("mkdir", &entry.path, "new directory", 0);
                if self.ctx.caps.dirs && !self.ctx.opts.dry_run {
                    self.ctx.dest.make_dir(
                        &entry.path,
                        FileAttrs {
                            mtime_ns: None,
                            mode: entry.mode.filter(|_| self.ctx.caps.modes),
                        },
                    )?;
                }
                self.summary.dirs_created += 1;
                self.touch(&entry.path);
                true
            }
        };
        if let Some(m) = entry.mtime_ns {
            self.state.dirs.push(DirTime {
                path: entry.path.clone(),
                mtime_ns: m,
                differs,
            });
        }
        Ok(())
    }

    /// Moves aside (or removes) a file or link that is in a directory's way.
    fn replace_with_dir(&mut self, d: &TreeEntry) -> Result<()> {
        self.event("update", &d.path, "a directory replaces a file", 0);
        self.summary.updated += 1;
        self.touch(&d.path);
        if self.ctx.opts.dry_run {
            return Ok(());
        }
        match &self.ctx.opts.backup_dir {
            Some(dir) => self.ctx.dest.rename(&d.path, &join(dir, &d.path))?,
            None => self.ctx.dest.remove(&d.path, d.kind)?,
        }
        self.ctx.dest.make_dir(&d.path, FileAttrs::default())
    }

    fn link(&mut self, entry: &TreeEntry, d: Option<&TreeEntry>) -> Result<()> {
        let target = entry.link.clone().unwrap_or_default();
        if !self.ctx.caps.symlinks {
            self.event(
                "skip",
                &entry.path,
                "a symlink, and the destination keeps none",
                0,
            );
            self.summary.skipped += 1;
            self.summary.notices.push(Problem {
                path: entry.path.clone(),
                message: "symlink not copied: the destination cannot keep symlinks".into(),
            });
            return Ok(());
        }
        match d {
            Some(d) if d.kind == EntryKind::Symlink && d.link.as_deref() == Some(&target) => {
                self.summary.unchanged += 1;
                return Ok(());
            }
            Some(d) if d.kind == EntryKind::Dir => {
                self.in_the_way(entry, 0, String::new());
                return Ok(());
            }
            _ => {}
        }
        self.event("link", &entry.path, "new or changed symlink", 0);
        self.summary.links += 1;
        self.touch(&entry.path);
        if !self.ctx.opts.dry_run {
            if let (Some(dir), Some(d)) = (&self.ctx.opts.backup_dir, d) {
                self.ctx.dest.rename(&d.path, &join(dir, &d.path))?;
            }
            self.ctx.dest.symlink(&entry.path, &target)?;
        }
        Ok(())
    }

    /// A source file or link whose destination path holds a directory.
    fn in_the_way(&mut self, entry: &TreeEntry, source: usize, rel: String) {
        if self.ctx.opts.delete {
            self.event("update", &entry.path, "replaces a directory", entry.size);
            // The directory goes first (after its contents, which follow it
            // in the merge and are deleted before it).
            self.state
                .deletions
                .push((entry.path.clone(), EntryKind::Dir));
            self.state.deferred.push((source, rel, entry.clone()));
        } else {
            self.fail(
                &entry.path,
                "a directory is in its way at the destination, which is replaced only when \
                 deleting is allowed; not copied"
                    .into(),
            );
        }
    }

    fn same_time(&self, a: Option<i64>, b: Option<i64>) -> bool {
        match (a, b) {
            (Some(a), Some(b)) => u128::from(a.abs_diff(b)) <= self.ctx.window.as_nanos(),
            _ => false,
        }
    }

    fn file(
        &mut self,
        source: usize,
        rel: String,
        mut entry: TreeEntry,
        d: Option<TreeEntry>,
        r: Option<RecordLine>,
    ) -> Result<()> {
        // A source listing without mtimes (an object store's): the file's
        // own metadata, so that the copy gets the source's mtime.
        if entry.mtime_ns.is_none()
            && let Some(full) = self.ctx.sources[source].tree.stat(&rel)?
        {
            entry.mtime_ns = full.mtime_ns;
            entry.stamp = full.stamp;
        }
        let Some(mut d) = d else {
            self.event("copy", &entry.path, "new file", entry.size);
            return self.dispatch(source, rel, entry, false, r);
        };
        match d.kind {
            EntryKind::File => {}
            EntryKind::Dir => {
                self.emit(None, r);
                self.in_the_way(&entry, source, rel);
                return Ok(());
            }
            EntryKind::Symlink => {
                self.event(
                    "update",
                    &entry.path,
                    "a file replaces a symlink",
                    entry.size,
                );
                return self.dispatch(source, rel, entry, true, r);
            }
        }
        if self.ctx.opts.checksum {
            return self.by_content(source, rel, entry, &d, r);
        }
        // A file whose stamp (an object store's ETag) is still the one the
        // record has is as backupkit left it, with the mtime it set: no
        // request for its metadata. Otherwise a listing without mtimes, or
        // `full_scan`, asks for the file's own.
        let vouched = !self.ctx.opts.full_scan
            && r.as_ref().is_some_and(|rec| {
                rec.size == d.size && rec.stamp.is_some() && rec.stamp == d.stamp
            });
        if vouched {
            if d.mtime_ns.is_none() {
                d.mtime_ns = r.as_ref().and_then(|rec| rec.mtime_ns);
            }
        } else if (d.mtime_ns.is_none() || self.ctx.opts.full_scan)
            && let Some(full) = self.ctx.dest.stat(&d.path)?
        {
            d = full;
        }
        // The record vouches for the destination when the destination still
        // looks as it did after backupkit wrote it.
        if let Some(rec) = &r {
            let dest_agrees = rec.size == d.size
                && match (&rec.stamp, &d.stamp) {
                    (Some(a), Some(b)) => a == b,
                    _ => self.same_time(rec.mtime_ns, d.mtime_ns),
                };
            if dest_agrees {
                if entry.size == rec.size && entry.mtime_ns == rec.mtime_ns {
                    self.summary.unchanged += 1;
                    self.emit(r.clone(), r);
                    return Ok(());
                }
                return self.changed(source, rel, entry, &d, "changed in the source", r);
            }
        }

        if entry.size != d.size {
            return self.changed(source, rel, entry, &d, "size differs", r);
        }
        if !self.same_time(entry.mtime_ns, d.mtime_ns) {
            return self.changed(source, rel, entry, &d, "mtime differs", r);
        }
        let blake3 = r
            .as_ref()
            .filter(|r| r.size == entry.size && r.mtime_ns == entry.mtime_ns)
            .and_then(|r| r.blake3.clone());
        self.unchanged(&entry, &d, blake3, r);
        Ok(())
    }

    /// A file that differs: updated, unless `update` keeps a newer one.
    fn changed(
        &mut self,
        source: usize,
        rel: String,
        entry: TreeEntry,
        d: &TreeEntry,
        reason: &'static str,
        r: Option<RecordLine>,
    ) -> Result<()> {
        if self.dest_is_newer(&entry, d) {
            self.newer(&entry, r);
            return Ok(());
        }
        self.event("update", &entry.path, reason, entry.size);
        self.dispatch(source, rel, entry, true, r)
    }

    /// A file found up to date: recorded as the destination has it.
    fn unchanged(
        &mut self,
        entry: &TreeEntry,
        d: &TreeEntry,
        blake3: Option<String>,
        r: Option<RecordLine>,
    ) {
        self.summary.unchanged += 1;
        let line = RecordLine {
            path: entry.path.clone(),
            size: entry.size,
            mtime_ns: entry.mtime_ns,
            stamp: d.stamp.clone(),
            blake3,
        };
        self.emit(Some(line), r);
    }

    fn dest_is_newer(&self, entry: &TreeEntry, d: &TreeEntry) -> bool {
        self.ctx.opts.update
            && match (entry.mtime_ns, d.mtime_ns) {
                (Some(s), Some(d)) => {
                    d > s && u128::from(d.abs_diff(s)) > self.ctx.window.as_nanos()
                }
                _ => false,
            }
    }

    fn newer(&mut self, entry: &TreeEntry, r: Option<RecordLine>) {
        self.event("skip", &entry.path, "the destination is newer", 0);
        self.summary.skipped += 1;
        self.emit(None, r);
    }

    /// `--checksum`: equal sizes are compared by content.
    fn by_content(
        &mut self,
        source: usize,
        rel: String,
        entry: TreeEntry,
        d: &TreeEntry,
        r: Option<RecordLine>,
    ) -> Result<()> {
        if entry.size != d.size {
            self.event("update", &entry.path, "size differs", entry.size);
            return self.dispatch(source, rel, entry, true, r);
        }
        let src_tree = self.ctx.sources[source].tree.as_ref();
        let src_hash = match hash_file(src_tree, &rel, self.ctx.hashers, self.ctx.cancel) {
            Ok(h) => h,
            Err(Error::Cancelled) => return Err(Error::Cancelled),
            Err(e) => {
                self.fail(
                    &entry.path,
                    format!("cannot read: {}", crate::check::error_chain(&e)),
                );
                self.emit(None, r);
                return Ok(());
            }
        };
        let dst_hash = hash_file(self.ctx.dest, &d.path, self.ctx.hashers, self.ctx.cancel)?;
        if src_hash != dst_hash {
            self.event("update", &entry.path, "content differs", entry.size);
            return self.dispatch(source, rel, entry, true, r);
        }
        self.unchanged(&entry, d, Some(src_hash), r);
        Ok(())
    }

    /// Hands a copy to the workers (or, for a dry run, counts it).
    fn dispatch(
        &mut self,
        source: usize,
        rel: String,
        entry: TreeEntry,
        replaces: bool,
        r: Option<RecordLine>,
    ) -> Result<()> {
        self.touch(&entry.path);
        if self.ctx.opts.dry_run {
            if replaces {
                self.summary.updated += 1;
            } else {
                self.summary.copied += 1;
            }
            self.summary.bytes += entry.size;
            self.emit(r.clone(), r);
            return Ok(());
        }
        let id = self.next_id;
        self.next_id += 1;
        self.slots.push_back((r, Slot::Waiting(id)));
        if replaces {
            self.summary.updated += 1;
        } else {
            self.summary.copied += 1;
        }
        let job = Job {
            id,
            source,
            rel,
            entry,
            replaces,
        };
        let Some(tx) = &self.jobs else {
            return Err(Error::Cancelled);
        };
        if tx.send(job).is_err() {
            return Err(Error::Cancelled);
        }
        self.in_flight += 1;
        Ok(())
    }

    /// Takes finished copies in; writes the record lines that are ready.
    /// With `all`, waits until every copy has finished.
    fn pump(&mut self, all: bool) -> Result<()> {
        loop {
            let must_wait = self.in_flight > 0
                && (all
                    || (self.slots.len() > MAX_WAITING
                        && matches!(self.slots.front(), Some((_, Slot::Waiting(id))) if !self.done.contains_key(id))));
            let got = if must_wait {
                self.results.recv().ok()
            } else {
                self.results.try_recv().ok()
            };
            match got {
                Some((id, result)) => {
                    self.in_flight -= 1;
                    self.take_result(id, result);
                }
                None => break,
            }
        }
        while let Some((_, slot)) = self.slots.front() {
            if let Slot::Waiting(id) = slot
                && !self.done.contains_key(id)
            {
                break;
            }
            let (old, slot) = self.slots.pop_front().expect("front exists");
            let line = match slot {
                Slot::Ready(l) => l,
                Slot::Waiting(id) => match self.done.remove(&id) {
                    Some(JobResult::Done { line, .. }) => Some(line),
                    // A failed copy left the old file: its old line stands.
                    _ => old.clone(),
                },
            };
            self.state
                .record
                .emit(self.ctx.dest, line.as_ref(), old.as_ref())?;
        }
        Ok(())
    }

    fn take_result(&mut self, id: u64, result: JobResult) {
        match &result {
            JobResult::Done { line, bytes } => {
                self.summary.bytes += bytes;
                self.ctx.progress.event(&Event::File {
                    path: line.path.clone(),
                    bytes: *bytes,
                });
            }
            JobResult::Failed(p) => {
                let p = p.clone();
                self.fail(&p.path, p.message);
            }
            JobResult::Cancelled => self.cancelled = true,
        }
        self.done.insert(id, result);
    }

    /// A record line for a path whose decision is made now.
    fn emit(&mut self, new: Option<RecordLine>, old: Option<RecordLine>) {
        self.slots.push_back((old, Slot::Ready(new)));
    }

    /// Ends the copies: closes the job channel, takes every result, writes
    /// the remaining record lines.
    pub(super) fn finish_copies(&mut self) -> Result<()> {
        self.jobs = None;
        self.pump(true)?;
        if self.cancelled {
            return Err(Error::Cancelled);
        }
        self.ctx.cancel.check()
    }
}
