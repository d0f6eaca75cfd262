//! One file's copy: read from the source, write under a temporary name,
//! check the source did not change meanwhile, commit.

use std::io::{Read, Write};
use std::sync::Mutex;
use std::sync::mpsc::{self, Receiver};

use crate::hash::Hashers;
use crate::hash::HashingReader;
use crate::mirror::Problem;
use crate::mirror::record::RecordLine;
use crate::mirror::run::{Ctx, Job, JobResult};
use crate::progress::{Cancel, CancelReader};
use crate::tree::{FileAttrs, Tree, join};
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
    match src.stat(&job.rel) {
        Ok(Some(now))
            if now.size == job.entry.size
                && now.mtime_ns == job.entry.mtime_ns
                && bytes == job.entry.size => {}
        Ok(None) => return failed("vanished while it was copied; not copied".into()),
        Ok(Some(_)) => {
            return failed(
                "changed while it was copied; not copied (the next run copies it)".into(),
            );
        }
        Err(e) => return failed(format!("cannot read: {}", crate::check::error_chain(&e))),
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
