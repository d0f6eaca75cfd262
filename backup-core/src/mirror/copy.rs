//! One file's copy: read from the source, write under a temporary name,
//! check the source did not change meanwhile, commit.

use std::io::{Read, Write};
use std::sync::Mutex;
use std::sync::mpsc::{self, Receiver};

use crate::hash::Hashers;
use crate::hash::HashingReader;
use crate::mirror::Problem;
use crate::mirror::record::RecordLine;
use crate::mirror::record::STAGING_DIR;
use crate::mirror::run::{Ctx, Job, JobResult};
use crate::progress::{Cancel, CancelReader, Event};
use crate::tree::{Bulk, BulkCopy, BulkFile, Direction, FileAttrs, Tree, join};
use crate::{Error, Result};

/// Copy buffer size.
const BUF: usize = 256 * 1024;

/// A byte budget shared by every copy thread: at most `rate` bytes per
/// second since the first byte, with a burst of one buffer.
#[derive(Debug)]
pub(crate) struct RateLimit {
    rate: u64,
    state: Mutex<(Option<std::time::Instant>, u64)>,
}

impl RateLimit {
    pub(crate) fn new(rate: u64) -> Self {
        Self {
            rate,
            state: Mutex::new((None, 0)),
        }
    }

    /// Accounts for `n` bytes, sleeping until the budget allows them.
    fn take(&self, n: usize, cancel: &Cancel) {
        let wait = {
            let Ok(mut st) = self.state.lock() else {
                return;
            };
            let start = *st.0.get_or_insert_with(std::time::Instant::now);
            st.1 += n as u64;
            let allowed_at = std::time::Duration::from_secs_f64(
                st.1.saturating_sub(BUF as u64) as f64 / self.rate as f64,
            );
            allowed_at.saturating_sub(start.elapsed())
        };
        // Sleep in short steps, so that Ctrl-C is not held up.
        let until = std::time::Instant::now() + wait;
        while !cancel.is_cancelled() {
            let left = until.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                break;
            }
            std::thread::sleep(left.min(std::time::Duration::from_millis(50)));
        }
    }
}

pub(super) fn worker(
    ctx: &Ctx<'_>,
    jobs: &Mutex<Receiver<Job>>,
    results: &mpsc::Sender<(u64, JobResult)>,
) {
    loop {
        let job = match jobs.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok(job) = job else { return };
        let result = copy_file(ctx, &job);
        if results.send((job.id, result)).is_err() {
            return;
        }
    }
}

/// Copies one file under a temporary name, checks the source did not
/// change meanwhile, then commits it.
pub(super) fn copy_file(ctx: &Ctx<'_>, job: &Job) -> JobResult {
    let src = ctx.sources[job.source].tree.as_ref();
    let path = &job.entry.path;
    let failed = |message: String| {
        JobResult::Failed(Problem {
            path: path.clone(),
            message,
        })
    };
    let attrs = FileAttrs {
        mtime_ns: job.entry.mtime_ns,
        mode: job.entry.mode.filter(|_| ctx.caps.modes),
    };
    let reader = match src.open(&job.rel) {
        Ok(r) => r,
        Err(Error::Cancelled) => return JobResult::Cancelled,
        Err(Error::NotFound { .. }) => return failed("vanished before it was copied".into()),
        Err(e) => return failed(format!("cannot read: {}", crate::check::error_chain(&e))),
    };
    let mut writer = match ctx.dest.write(path, attrs) {
        Ok(w) => w,
        Err(e) => return failed(format!("cannot write: {}", crate::check::error_chain(&e))),
    };
    let mut reader = HashingReader::new(
        CancelReader {
            inner: reader,
            cancel: ctx.cancel.clone(),
        },
        ctx.hashers.blake3(),
    );
    let mut buf = vec![0u8; BUF];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) if ctx.cancel.is_cancelled() => return JobResult::Cancelled,
            Err(e) => return failed(format!("cannot read: {e}")),
        };
        if let Some(limit) = &ctx.limit {
            limit.take(n, ctx.cancel);
        }
        if let Err(e) = writer.write_all(&buf[..n]) {
            return failed(format!("cannot write: {e}"));
        }
    }
    let (blake3, bytes) = reader.finish();
    if let Some(changed) = changed_while_copied(src.stat(&job.rel), job, bytes) {
        return changed;
    }
    if job.replaces
        && let Some(dir) = &ctx.opts.backup_dir
        && let Err(e) = ctx.dest.rename(path, &join(dir, path))
    {
        return failed(format!(
            "cannot move the old file to the backup directory: {}",
            crate::check::error_chain(&e)
        ));
    }
    match writer.commit() {
        Ok(stored) => JobResult::Done {
            line: RecordLine {
                path: path.clone(),
                size: bytes,
                mtime_ns: job.entry.mtime_ns,
                stamp: stored.stamp,
                blake3: Some(blake3),
            },
            bytes,
        },
        Err(Error::Cancelled) => JobResult::Cancelled,
        Err(e) => failed(format!("cannot write: {}", crate::check::error_chain(&e))),
    }
}

/// The failure to report when the source is not what was planned once it
/// has been copied (`bytes` of it): it changed, grew or vanished meanwhile.
fn changed_while_copied(
    now: Result<Option<crate::tree::TreeEntry>>,
    job: &Job,
    bytes: u64,
) -> Option<JobResult> {
    let message = match now {
        Ok(Some(now))
            if now.size == job.entry.size
                && now.mtime_ns == job.entry.mtime_ns
                && bytes == job.entry.size =>
        {
            return None;
        }
        Ok(None) => "vanished while it was copied; not copied".to_owned(),
        Ok(Some(_)) => "changed while it was copied; not copied (the next run copies it)".into(),
        Err(e) => format!("cannot read: {}", crate::check::error_chain(&e)),
    };
    Some(JobResult::Failed(Problem {
        path: job.entry.path.clone(),
        message,
    }))
}

/// BLAKE3 of a tree's file, streamed.
pub(crate) fn hash_file(
    tree: &dyn Tree,
    path: &str,
    hashers: &dyn Hashers,
    cancel: &Cancel,
) -> Result<String> {
    let reader = CancelReader {
        inner: tree.open(path)?,
        cancel: cancel.clone(),
    };
    let mut hashed = HashingReader::new(reader, hashers.blake3());
    match std::io::copy(&mut hashed, &mut std::io::sink()) {
        Ok(_) => Ok(hashed.finish().0),
        Err(_) if cancel.is_cancelled() => Err(Error::Cancelled),
        Err(e) => Err(Error::io("read", path, e)),
    }
}

/// Files and bytes a bulk transport gets at most in one call.
const BATCH_FILES: usize = 4096;
const BATCH_BYTES: u64 = 1 << 30;
/// How long a bulk worker waits for more files before it sends a batch.
const BATCH_WAIT: std::time::Duration = std::time::Duration::from_millis(100);

/// How a source's files travel when a [`Bulk`] transport moves them: the
/// transport, the way, and the local directory at the other end.
pub(super) struct BulkSide<'a> {
    pub(super) bulk: &'a dyn Bulk,
    pub(super) direction: Direction,
    /// The local end (the source root for a push, the destination
    /// directory for a pull).
    pub(super) local: std::path::PathBuf,
    /// The tree's directory (the source's prefix for a push).
    pub(super) dir: String,
    /// Unfinished files, relative to the receiving directory.
    pub(super) staging: String,
    /// Transport processes running at once (`bwlimit` is shared by them).
    pub(super) workers: u64,
}

/// The bulk transport for each source, where one applies: a push into a
/// destination that has one from a local source directory, or a pull from
/// a source that has one into a local destination.
pub(super) fn bulk_sides<'a>(ctx: &Ctx<'a>) -> Vec<Option<BulkSide<'a>>> {
    let dest_local = ctx.dest.local_dir();
    ctx.sources
        .iter()
        .map(|s| {
            if ctx.opts.dry_run {
                return None;
            }
            let up = if s.prefix.is_empty() { "" } else { "../" };
            let staging = format!("{up}{STAGING_DIR}");
            if let (Some(bulk), Some(local)) = (ctx.dest.bulk(), s.tree.local_dir()) {
                return Some(BulkSide {
                    bulk,
                    direction: Direction::Push,
                    local,
                    dir: s.prefix.clone(),
                    staging,
                    workers: 1,
                });
            }
            let (bulk, dest) = (s.tree.bulk()?, dest_local.as_ref()?);
            Some(BulkSide {
                bulk,
                direction: Direction::Pull,
                local: if s.prefix.is_empty() {
                    dest.clone()
                } else {
                    dest.join(&s.prefix)
                },
                dir: String::new(),
                staging,
                workers: 1,
            })
        })
        .collect()
}

/// A copy thread for bulk transports: takes files in batches (as many as
/// arrive within [`BATCH_WAIT`], up to [`BATCH_FILES`]) and hands each
/// batch to the source's transport; files it cannot take go one by one.
pub(super) fn bulk_worker(
    ctx: &Ctx<'_>,
    sides: &[Option<BulkSide<'_>>],
    jobs: &Mutex<Receiver<Job>>,
    results: &mpsc::Sender<(u64, JobResult)>,
) {
    let mut open = true;
    while open {
        let mut batch: Vec<Job> = Vec::new();
        let mut bytes = 0u64;
        {
            let Ok(rx) = jobs.lock() else { return };
            match rx.recv() {
                Ok(job) => {
                    bytes += job.entry.size;
                    batch.push(job);
                }
                Err(_) => return,
            }
            while batch.len() < BATCH_FILES && bytes < BATCH_BYTES {
                match rx.recv_timeout(BATCH_WAIT) {
                    Ok(job) => {
                        bytes += job.entry.size;
                        batch.push(job);
                    }
                    Err(mpsc::RecvTimeoutError::Timeout) => break,
                    Err(mpsc::RecvTimeoutError::Disconnected) => {
                        open = false;
                        break;
                    }
                }
            }
        }
        for (id, result) in run_batch(ctx, sides, batch) {
            if results.send((id, result)).is_err() {
                return;
            }
        }
    }
}

/// One batch: each source's files through its transport, the rest (and
/// everything, once a transport failed to run) file by file.
fn run_batch(
    ctx: &Ctx<'_>,
    sides: &[Option<BulkSide<'_>>],
    batch: Vec<Job>,
) -> Vec<(u64, JobResult)> {
    let mut out = Vec::with_capacity(batch.len());
    let mut by_source: Vec<Vec<Job>> = (0..sides.len()).map(|_| Vec::new()).collect();
    for job in batch {
        // A single-file source, a file to move aside first (`backup_dir`)
        // and everything after a transport failed to run go one by one.
        let one_by_one = sides[job.source].is_none()
            || job.rel.is_empty()
            || (job.replaces && ctx.opts.backup_dir.is_some())
            || ctx.bulk_off.load(std::sync::atomic::Ordering::Relaxed);
        let bulk_ok = !one_by_one;
        if bulk_ok {
            by_source[job.source].push(job);
        } else {
            out.push((job.id, copy_file(ctx, &job)));
        }
    }
    for (source, jobs) in by_source.into_iter().enumerate() {
        let Some(side) = &sides[source] else { continue };
        if jobs.is_empty() {
            continue;
        }
        let replaced: u64 = jobs
            .iter()
            .filter(|j| j.replaces)
            .map(|j| j.entry.size)
            .sum();
        if !side.bulk.worth(jobs.len(), replaced) {
            out.extend(jobs.iter().map(|j| (j.id, copy_file(ctx, j))));
            continue;
        }
        match bulk_copy(ctx, side, &jobs) {
            Ok(done) => out.extend(done),
            Err(Error::Cancelled) => {
                out.extend(jobs.iter().map(|j| (j.id, JobResult::Cancelled)));
            }
            Err(e) => {
                if !ctx
                    .bulk_off
                    .swap(true, std::sync::atomic::Ordering::Relaxed)
                {
                    ctx.progress.event(&Event::Warning {
                        path: String::new(),
                        message: format!(
                            "{} could not run ({}); copying file by file instead",
                            side.bulk.name(),
                            crate::check::error_chain(&e)
                        ),
                    });
                }
                out.extend(jobs.iter().map(|j| (j.id, copy_file(ctx, j))));
            }
        }
    }
    out
}

/// Hands `jobs` to a transport, then checks each file as [`copy_file`]
/// does: the source unchanged since it was planned, and hashed for the
/// record where one side is local.
fn bulk_copy(ctx: &Ctx<'_>, side: &BulkSide<'_>, jobs: &[Job]) -> Result<Vec<(u64, JobResult)>> {
    let files: Vec<BulkFile> = jobs
        .iter()
        .map(|j| BulkFile {
            path: j.rel.clone(),
            size: j.entry.size,
            mtime_ns: j.entry.mtime_ns,
        })
        .collect();
    let copy = BulkCopy {
        direction: side.direction,
        local: &side.local,
        dir: &side.dir,
        staging: &side.staging,
        modes: ctx.caps.modes,
        bwlimit: ctx.opts.bwlimit.map(|r| (r / side.workers.max(1)).max(1)),
        files: &files,
    };
    let outcomes = side.bulk.copy(&copy, ctx.cancel)?;
    ctx.bulk_files
        .fetch_add(jobs.len() as u64, std::sync::atomic::Ordering::Relaxed);
    let mut out = Vec::with_capacity(jobs.len());
    for (job, outcome) in jobs.iter().zip(outcomes) {
        let result = match outcome {
            Some(message) => JobResult::Failed(Problem {
                path: job.entry.path.clone(),
                message,
            }),
            None => check_bulk_file(ctx, side, job),
        };
        out.push((job.id, result));
    }
    Ok(out)
}

/// A file a transport reports copied: the local end is read for the
/// record's hash, and the source must still be what was planned.
fn check_bulk_file(ctx: &Ctx<'_>, side: &BulkSide<'_>, job: &Job) -> JobResult {
    let failed = |message: String| {
        JobResult::Failed(Problem {
            path: job.entry.path.clone(),
            message,
        })
    };
    let local = side.local.join(&job.rel);
    let hashed = std::fs::File::open(&local).and_then(|f| {
        let mut r = HashingReader::new(
            CancelReader {
                inner: f,
                cancel: ctx.cancel.clone(),
            },
            ctx.hashers.blake3(),
        );
        std::io::copy(&mut r, &mut std::io::sink())?;
        Ok(r.finish())
    });
    let (blake3, bytes) = match hashed {
        Ok(h) => h,
        Err(_) if ctx.cancel.is_cancelled() => return JobResult::Cancelled,
        Err(e) => return failed(format!("cannot read it back: {e}")),
    };
    // A push re-reads the source's metadata; a pull has what arrived,
    // stamped with the mtime the transport saw at the source.
    let now = match side.direction {
        Direction::Push => ctx.sources[job.source].tree.stat(&job.rel),
        Direction::Pull => std::fs::symlink_metadata(&local)
            .map(|m| {
                use std::os::unix::fs::MetadataExt;
                let got = m.mtime() * 1_000_000_000 + m.mtime_nsec();
                let near = job.entry.mtime_ns.is_some_and(|want| {
                    u128::from(got.abs_diff(want)) < ctx.window.as_nanos().max(1)
                });
                Some(crate::tree::TreeEntry::file(
                    job.rel.clone(),
                    m.len(),
                    if near { job.entry.mtime_ns } else { Some(got) },
                ))
            })
            .map_err(|e| Error::io("stat", local.display().to_string(), e)),
    };
    if let Some(changed) = changed_while_copied(now, job, bytes) {
        return changed;
    }
    JobResult::Done {
        line: RecordLine {
            path: job.entry.path.clone(),
            size: bytes,
            mtime_ns: job.entry.mtime_ns,
            stamp: None,
            blake3: Some(blake3),
        },
        bytes,
    }
}
