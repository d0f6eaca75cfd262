//! Plans and runs a mirror (see the module docs of [`crate::mirror`]).

use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::hash::Hashers;
use crate::mirror::copy::{BulkSide, bulk_sides, bulk_worker, copy_file, worker};
use crate::mirror::plan::{DirTime, EndState, Planner};
use crate::mirror::record::{self, RECORD_PATH, RecordLine, RecordReader, STAGING_DIR};
use crate::mirror::stream::{self, Ordered, Skip, Walk};
use crate::mirror::{MaxDelete, MirrorOptions, MirrorSource, MirrorSummary, Problem};
use crate::progress::{Cancel, Event, Progress};
use crate::tree::{EntryKind, FileAttrs, Tree, TreeEntry, Walked, cmp_paths, join};
use crate::{Error, Result};

/// Makes `dest` hold what `sources` hold (see [`crate::mirror`]).
///
/// # Errors
///
/// [`Error::NotFound`] for a missing source, [`Error::Refused`] when
/// deleting is asked for and the sources are empty, [`Error::Cancelled`],
/// and the destination's errors that stop the whole run. Files that fail
/// on their own are in [`MirrorSummary::failed`] instead.
pub fn mirror(
    sources: &[MirrorSource],
    dest: &dyn Tree,
    opts: &MirrorOptions,
    hashers: &dyn Hashers,
    progress: &dyn Progress,
    cancel: &Cancel,
) -> Result<MirrorSummary> {
    let mut sources = sources.to_vec();
    sources.sort_by(|a, b| cmp_paths(&a.prefix, &b.prefix));
    check_sources(&sources)?;
    check_apart(&sources, dest)?;
    check_backup_dir(opts.backup_dir.as_deref())?;
    let roots = source_roots(&sources)?;
    dest_dir(dest)?;
    if opts.dry_run {
        return mirror_unlocked(
            &sources,
            &roots,
            dest,
            opts,
            hashers,
            progress,
            cancel,
            vec![],
        );
    }
    // Only then the lock, which makes the destination: a refused run
    // leaves nothing behind.
    let mut notices = Vec::new();
    crate::mirror::lock::acquire(dest, &mut notices)?;
    crate::mirror::lock::holding(dest, || {
        mirror_unlocked(
            &sources, &roots, dest, opts, hashers, progress, cancel, notices,
        )
    })
}

/// [`mirror`] once the checks passed and the lock is held.
#[allow(clippy::too_many_arguments)]
fn mirror_unlocked(
    sources: &[MirrorSource],
    roots: &[TreeEntry],
    dest: &dyn Tree,
    opts: &MirrorOptions,
    hashers: &dyn Hashers,
    progress: &dyn Progress,
    cancel: &Cancel,
    notices: Vec<Problem>,
) -> Result<MirrorSummary> {
    let started = Instant::now();
    let dest_root = dest_dir(dest)?;
    let dest_caps = dest.caps();
    let window = opts.modify_window.unwrap_or_else(|| {
        sources
            .iter()
            .map(|s| s.tree.caps().mtime_precision)
            .chain([dest_caps.mtime_precision])
            .max()
            .unwrap_or(Duration::from_nanos(1))
    });
    progress.event(&Event::Started {
        operation: "mirror",
        snapshot: None,
    });

    let src_skips: Vec<Skip> = sources
        .iter()
        .map(|s| stream::source_skip(s.tree.as_ref(), &opts.excludes))
        .collect();
    let protected = backup_dirs(dest, opts.backup_dir.as_deref(), opts.dry_run)?;
    let dst_skip = stream::dest_skip(dest, &opts.excludes, protected);
    if opts.delete {
        refuse_empty(sources, roots, &src_skips)?;
    }
    let src = stream::sources(sources, roots, &src_skips)?;
    let dest_walk: Walk<'_> = match dest_root {
        Some(_) => Box::new(Ordered::new(
            stream::without_state(dest.walk(dst_skip.as_ref())?),
            "the destination",
        )),
        None => Box::new(std::iter::empty()),
    };
    let mut summary = MirrorSummary {
        destination: dest.location(),
        dry_run: opts.dry_run,
        notices,
        modify_window_ns: u64::try_from(window.as_nanos()).unwrap_or(u64::MAX),
        ..MirrorSummary::default()
    };
    let old_record = if dest_root.is_none() {
        None
    } else {
        open_record(dest, &mut summary)
    };
    if !opts.dry_run && dest_root.is_none() {
        dest.make_dir("", FileAttrs::default())?;
    }

    let ctx = Ctx {
        sources,
        dest,
        opts,
        hashers,
        progress,
        cancel,
        window,
        caps: dest_caps,
        limit: opts.bwlimit.map(crate::mirror::copy::RateLimit::new),
        bulk_off: AtomicBool::new(false),
        bulk_files: AtomicU64::new(0),
    };
    let root_time = root_time(sources, roots, dest_root.as_ref());
    let state = match copy_phase(&ctx, &mut summary, src, dest_walk, old_record, root_time) {
        Ok(s) => s,
        Err(e) => {
            // What was committed is whole: make it visible, then report.
            let _ = dest.flush();
            return Err(e);
        }
    };
    finish(&ctx, &mut summary, state)?;
    if let Some(mode) = opts.verify
        && !opts.dry_run
    {
        summary.verify = Some(crate::mirror::verify(
            sources,
            dest,
            &opts.excludes,
            mode,
            opts.delete,
            hashers,
            progress,
            cancel,
        )?);
    }
    summary.seconds = started.elapsed().as_secs_f64();
    progress.event(&Event::Finished {
        operation: "mirror",
        files: summary.copied + summary.updated,
        bytes: summary.bytes,
        warnings: summary.failed.len() as u64,
        seconds: summary.seconds,
    });
    Ok(summary)
}

/// The merge and the copies: the planner on this thread, `transfers` copy
/// threads fed by it.
fn copy_phase(
    ctx: &Ctx<'_>,
    summary: &mut MirrorSummary,
    src: stream::Sources<'_>,
    dest_walk: Walk<'_>,
    old_record: Option<RecordReader>,
    root_time: Option<DirTime>,
) -> Result<EndState> {
    let sides = bulk_sides(ctx);
    let bulk = sides.iter().find_map(Option::as_ref).map(|s| s.bulk);
    if bulk.is_some() {
        prepare_staging(ctx.dest)?;
    }
    let transfers = match bulk {
        // One transport process per thread, each with its own stream.
        Some(_) => ctx.opts.transfers.unwrap_or(BULK_TRANSFERS),
        None => ctx.opts.transfers.unwrap_or(ctx.caps.transfers),
    }
    .max(1);
    let mut sides = sides;
    for side in sides.iter_mut().flatten() {
        side.workers = transfers as u64;
    }
    let (job_tx, job_rx) = mpsc::sync_channel::<Job>(transfers * 2);
    let (res_tx, res_rx) = mpsc::channel::<(u64, JobResult)>();
    let job_rx = Arc::new(Mutex::new(job_rx));
    let sides: &[Option<BulkSide<'_>>] = &sides;
    let state = std::thread::scope(|scope| {
        for _ in 0..transfers {
            let job_rx = Arc::clone(&job_rx);
            let res_tx = res_tx.clone();
            match bulk {
                Some(_) => scope.spawn(move || bulk_worker(ctx, sides, &job_rx, &res_tx)),
                None => scope.spawn(move || worker(ctx, &job_rx, &res_tx)),
            };
        }
        drop(res_tx);
        // Both walks run ahead on threads of their own: on a local disk the
        // two sides' stats then overlap.
        let src: stream::Sources<'_> = Box::new(stream::prefetch(scope, src));
        let dest_walk: Walk<'_> = Box::new(stream::prefetch(scope, dest_walk));
        let mut plan = Planner::new(ctx, summary, job_tx, res_rx, old_record, root_time);
        let merged = plan.merge(src, dest_walk);
        // Closing the job channel ends the workers; then every result is in.
        let finished = plan.finish_copies();
        merged.and(finished).map(|()| plan.into_state())
    });
    if let Some(b) = bulk {
        let _ = ctx.dest.remove(STAGING_DIR, EntryKind::Dir);
        summary.transport_files = ctx.bulk_files.load(Ordering::Relaxed);
        if summary.transport_files > 0 {
            summary.transport = Some(b.name().to_owned());
        }
    }
    state
}

/// Parallel transport processes by default.
const BULK_TRANSFERS: usize = 2;

/// Empties the staging directory a bulk transport writes into (what a
/// killed run left there), then makes it. Runs before any copy, so that it
/// never meets a file of this run.
fn prepare_staging(dest: &dyn Tree) -> Result<()> {
    let inside = format!("{STAGING_DIR}/");
    let skip = |path: &str, _: EntryKind| {
        !(path == record::STATE_DIR || path == STAGING_DIR || path.starts_with(&inside))
    };
    let mut found: Vec<(String, EntryKind)> = Vec::new();
    // Only a killed run leaves a staging directory: look before walking
    // (a walk of an rclone remote is one full listing).
    if dest.stat(STAGING_DIR)?.is_some() {
        for w in dest.walk(&skip)? {
            match w? {
                Walked::Entry(e) if e.path.starts_with(&inside) => found.push((e.path, e.kind)),
                Walked::Leftover(p) if p.starts_with(&inside) => found.push((p, EntryKind::File)),
                _ => {}
            }
        }
    }
    for (path, kind) in found.iter().rev() {
        dest.remove(path, *kind)?;
    }
    dest.make_dir(STAGING_DIR, FileAttrs::default())
}

/// Every backup directory a mirror into `dest` has used (kept in the state
/// directory, so that a later `--delete` without `--backup-dir` never
/// deletes what an earlier run moved aside), with `new` added.
pub(super) fn backup_dirs(
    dest: &dyn Tree,
    new: Option<&str>,
    dry_run: bool,
) -> Result<Vec<String>> {
    let mut dirs: Vec<String> = Vec::new();
    match dest.open(record::BACKUP_DIRS_PATH) {
        Ok(mut r) => {
            let mut text = String::new();
            r.read_to_string(&mut text)
                .map_err(|e| Error::io("read", record::BACKUP_DIRS_PATH, e))?;
            dirs.extend(text.lines().filter(|l| !l.is_empty()).map(str::to_owned));
        }
        Err(Error::NotFound { .. }) => {}
        Err(e) => return Err(e),
    }
    if let Some(new) = new
        && !dirs.iter().any(|d| d == new)
    {
        dirs.push(new.to_owned());
        if !dry_run {
            let mut w = dest.write(record::BACKUP_DIRS_PATH, FileAttrs::default())?;
            w.write_all(format!("{}\n", dirs.join("\n")).as_bytes())
                .map_err(|e| Error::io("write", record::BACKUP_DIRS_PATH, e))?;
            w.commit()?;
            dest.flush()?;
        }
    }
    Ok(dirs)
}

/// The destination's root: a directory, or `None` when it does not exist.
fn dest_dir(dest: &dyn Tree) -> Result<Option<TreeEntry>> {
    let root = dest.root()?;
    if let Some(r) = &root
        && r.kind != EntryKind::Dir
    {
        return Err(Error::InvalidInput(format!(
            "the mirror destination {} is not a directory",
            dest.location()
        )));
    }
    Ok(root)
}

/// The mtime the destination root takes: a single source directory's.
fn root_time(
    sources: &[MirrorSource],
    roots: &[TreeEntry],
    dest_root: Option<&TreeEntry>,
) -> Option<DirTime> {
    match (sources, roots) {
        ([one], [root]) if one.prefix.is_empty() => root.mtime_ns.map(|m| DirTime {
            path: String::new(),
            mtime_ns: m,
            differs: dest_root.is_none_or(|d| d.mtime_ns != Some(m)),
        }),
        _ => None,
    }
}

/// The sources' roots, each of which must exist.
pub(super) fn source_roots(sources: &[MirrorSource]) -> Result<Vec<TreeEntry>> {
    let mut roots = Vec::with_capacity(sources.len());
    for s in sources {
        match s.tree.root()? {
            Some(r) if r.kind != EntryKind::Symlink => roots.push(r),
            _ => {
                return Err(Error::NotFound {
                    what: "mirror source",
                    path: s.tree.location(),
                });
            }
        }
    }
    Ok(roots)
}

fn check_backup_dir(dir: Option<&str>) -> Result<()> {
    if let Some(dir) = dir {
        crate::target::check_key(dir)?;
        if dir == record::STATE_DIR || dir.starts_with(&format!("{}/", record::STATE_DIR)) {
            return Err(Error::InvalidInput(format!(
                "the backup directory cannot be {dir:?}: backupkit keeps its state there"
            )));
        }
    }
    Ok(())
}

/// An empty source directory never deletes anything: it is far more often
/// a share that is not mounted than a tree that was emptied on purpose.
fn refuse_empty(sources: &[MirrorSource], roots: &[TreeEntry], skips: &[Skip]) -> Result<()> {
    for (i, s) in sources.iter().enumerate() {
        let empty = roots[i].kind == EntryKind::Dir
            && !s
                .tree
                .walk(skips[i].as_ref())?
                .any(|w| matches!(w, Ok(Walked::Entry(_)) | Err(_)));
        if empty {
            return Err(Error::Refused {
                reason: format!(
                    "the source {} is empty (an unmounted share?); a mirror never deletes \
                     because of an empty source",
                    s.tree.location()
                ),
            });
        }
    }
    Ok(())
}

/// A destination inside a source (or a source inside the destination, or
/// both the same) would copy the mirror into itself, or delete the source:
/// refused. Locations are compared as their kinds print them (absolute
/// local paths; `sftp://host/path`).
fn check_apart(sources: &[MirrorSource], dest: &dyn Tree) -> Result<()> {
    let d = dest.location();
    let d = d.trim_end_matches('/');
    for s in sources {
        let l = s.tree.location();
        let l = l.trim_end_matches('/');
        let inside = |a: &str, b: &str| a == b || a.starts_with(&format!("{b}/"));
        if inside(d, l) || inside(l, d) {
            return Err(Error::InvalidInput(format!(
                "the source {l} and the destination {d} overlap: a mirror needs two separate \
                 trees"
            )));
        }
    }
    Ok(())
}

fn check_sources(sources: &[MirrorSource]) -> Result<()> {
    if sources.is_empty() {
        return Err(Error::InvalidInput("no mirror source given".into()));
    }
    if sources.len() > 1 {
        for pair in sources.windows(2) {
            if pair[0].prefix == pair[1].prefix {
                return Err(Error::InvalidInput(format!(
                    "two sources would both go to {:?} in the destination: {} and {}",
                    pair[0].prefix,
                    pair[0].tree.location(),
                    pair[1].tree.location()
                )));
            }
        }
    }
    for s in sources {
        if s.prefix.is_empty() && sources.len() > 1 {
            return Err(Error::InvalidInput(
                "with several sources, each goes to a directory of its own name".into(),
            ));
        }
        if !s.prefix.is_empty() {
            crate::target::check_key(&s.prefix)?;
            if s.prefix.contains('/') || s.prefix == record::STATE_DIR {
                return Err(Error::InvalidInput(format!(
                    "a source cannot be named {:?} in the destination",
                    s.prefix
                )));
            }
        }
    }
    Ok(())
}

/// The old record, or `None` (with a notice when it cannot be read).
fn open_record(dest: &dyn Tree, summary: &mut MirrorSummary) -> Option<RecordReader> {
    match dest.open(RECORD_PATH).and_then(RecordReader::new) {
        Ok(r) => Some(r),
        Err(Error::NotFound { .. }) => None,
        Err(e) => {
            summary.notices.push(Problem {
                path: RECORD_PATH.into(),
                message: format!(
                    "{}; comparing with the destination's listing alone",
                    crate::check::error_chain(&e)
                ),
            });
            None
        }
    }
}

/// What every thread of a run shares.
pub(super) struct Ctx<'a> {
    pub(super) sources: &'a [MirrorSource],
    pub(super) dest: &'a dyn Tree,
    pub(super) opts: &'a MirrorOptions,
    pub(super) hashers: &'a dyn Hashers,
    pub(super) progress: &'a dyn Progress,
    pub(super) cancel: &'a Cancel,
    pub(super) window: Duration,
    /// What the destination keeps.
    pub(super) caps: crate::tree::TreeCaps,
    /// `bwlimit`, shared by the copy threads.
    pub(super) limit: Option<crate::mirror::copy::RateLimit>,
    /// Set once a bulk transport failed to run: file by file from then on.
    pub(super) bulk_off: AtomicBool,
    /// Files a bulk transport moved.
    pub(super) bulk_files: AtomicU64,
}

/// One file to copy.
pub(super) struct Job {
    pub(super) id: u64,
    pub(super) source: usize,
    pub(super) rel: String,
    pub(super) entry: TreeEntry,
    /// The destination has an older file here (an update).
    pub(super) replaces: bool,
}

pub(super) enum JobResult {
    Done {
        line: RecordLine,
        bytes: u64,
    },
    Failed(Problem),
    /// The run was cancelled while this file was copied.
    Cancelled,
}

fn finish(ctx: &Ctx<'_>, summary: &mut MirrorSummary, mut state: EndState) -> Result<()> {
    let dest = ctx.dest;
    if ctx.opts.dry_run {
        summary.deleted = state.deletions.len() as u64;
        return Ok(());
    }
    dest.flush()?;
    if ctx.caps.case_insensitive {
        // `README` at the destination is the source's `readme` there.
        let cases = std::mem::take(&mut state.cases);
        state
            .deletions
            .retain(|(path, _)| !cases.contains_key(&path.to_lowercase()));
    }
    if !state.deletions.is_empty() {
        if let Some(reason) = refusal(ctx.opts.max_delete, &state) {
            ctx.progress.event(&Event::Warning {
                path: String::new(),
                message: format!("refusing to delete: {reason}"),
            });
            summary.refused = Some(reason);
        } else {
            delete_planned(ctx, summary, &mut state)?;
        }
    }
    for p in state.deferred.drain(..) {
        summary.failed.push(Problem {
            path: p.2.path,
            message: "a directory is in its way at the destination; not copied".into(),
        });
    }
    state.record.finish(dest)?;
    dest.flush()?;
    // Last, since every write in a directory changes its mtime.
    for d in state.dirs.iter().rev() {
        if d.differs || state.touched.contains(&d.path) {
            dest.set_dir_mtime(&d.path, d.mtime_ns)?;
        }
    }
    Ok(())
}

/// Why the planned deletions may not run, if they may not.
fn refusal(max: Option<MaxDelete>, state: &EndState) -> Option<String> {
    let n = state.deletions.len() as u64;
    if state.source_errors > 0 {
        return Some(format!(
            "{} part(s) of the source could not be read, so {n} destination entries that \
             look deleted may not be; nothing was deleted",
            state.source_errors
        ));
    }
    let limit = match max? {
        MaxDelete::Count(c) => c,
        MaxDelete::Percent(p) => ((state.dest_entries as f64) * p / 100.0).floor() as u64,
    };
    (n > limit).then(|| {
        format!(
            "the plan deletes {n} of the destination's {} entries, more than the limit of \
             {limit}; nothing was deleted",
            state.dest_entries
        )
    })
}

/// Runs the planned deletions (children before their directories), then
/// the copies that had to wait for them.
fn delete_planned(ctx: &Ctx<'_>, summary: &mut MirrorSummary, state: &mut EndState) -> Result<()> {
    let dest = ctx.dest;
    for (path, kind) in state.deletions.iter().rev() {
        ctx.cancel.check()?;
        let done = match (&ctx.opts.backup_dir, kind) {
            (Some(dir), EntryKind::File | EntryKind::Symlink) => {
                dest.rename(path, &join(dir, path))
            }
            _ => dest.remove(path, *kind),
        };
        match done {
            Ok(()) => summary.deleted += 1,
            Err(Error::Cancelled) => return Err(Error::Cancelled),
            // A directory that still holds excluded or protected entries.
            Err(e) if *kind == EntryKind::Dir => summary.notices.push(Problem {
                path: path.clone(),
                message: format!("directory kept: {}", crate::check::error_chain(&e)),
            }),
            Err(e) => {
                summary.failed.push(Problem {
                    path: path.clone(),
                    message: format!("cannot delete: {}", crate::check::error_chain(&e)),
                });
                continue;
            }
        }
        let parent = path.rsplit_once('/').map_or("", |(p, _)| p);
        state.touched.insert(parent.to_owned());
    }
    for (source, rel, entry) in std::mem::take(&mut state.deferred) {
        if entry.kind == EntryKind::Symlink {
            dest.symlink(&entry.path, entry.link.as_deref().unwrap_or_default())?;
            summary.links += 1;
            continue;
        }
        let job = Job {
            id: 0,
            source,
            rel,
            entry,
            replaces: false,
        };
        match copy_file(ctx, &job) {
            JobResult::Done { bytes, .. } => {
                summary.updated += 1;
                summary.bytes += bytes;
            }
            JobResult::Failed(p) => summary.failed.push(p),
            JobResult::Cancelled => return Err(Error::Cancelled),
        }
    }
    Ok(())
}
