//! One event stream for every frontend (bars, JSON lines, Python callbacks,
//! logs), and cancellation flowing the other way.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;

/// Something that happened while an operation ran.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Event {
    /// The operation started; `snapshot` is set once an id is known.
    Started {
        operation: &'static str,
        snapshot: Option<String>,
    },
    /// The total amount of work, once known (a scan runs alongside backups).
    Total { files: u64, bytes: u64 },
    /// One entry was processed (`bytes` of content).
    File { path: String, bytes: u64 },
    /// Something the user must know about; the operation goes on.
    Warning { path: String, message: String },
    /// A mirror's decision for one path (every decision but "unchanged"):
    /// `action` is copy, update, delete, mkdir, link, skip or keep;
    /// `reason` says why. Given before the action is done, and for a dry
    /// run instead of it.
    Planned {
        action: &'static str,
        path: String,
        reason: &'static str,
        bytes: u64,
    },
    /// The operation ended successfully (possibly with warnings).
    Finished {
        operation: &'static str,
        files: u64,
        bytes: u64,
        warnings: u64,
        seconds: f64,
    },
}

/// Receives events. Implementations must be cheap: they are called on the
/// working thread for every file.
pub trait Progress: Send + Sync {
    fn event(&self, event: &Event);

    /// Whether [`Event::Total`] is wanted. Totals cost a second walk of the
    /// source (alongside the real one), so a sink that shows no progress
    /// bar says no.
    fn wants_totals(&self) -> bool {
        true
    }
}

/// A progress sink that ignores everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn event(&self, _event: &Event) {}

    fn wants_totals(&self) -> bool {
        false
    }
}

impl<F: Fn(&Event) + Send + Sync> Progress for F {
    fn event(&self, event: &Event) {
        self(event);
    }
}

/// A shared flag that asks running work to stop. Cloning shares the flag.
#[derive(Debug, Clone, Default)]
pub struct Cancel(Arc<AtomicBool>);

impl Cancel {
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks the work to stop at its next check.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    /// `Err(Error::Cancelled)` once cancelled.
    pub fn check(&self) -> crate::Result<()> {
        if self.is_cancelled() {
            Err(crate::Error::Cancelled)
        } else {
            Ok(())
        }
    }
}

/// A reader that fails as soon as `cancel` is set, so that work inside one
/// large object (a restore of a big file, a read-data check) stops within
/// one buffer of Ctrl-C. The error it gives is only a signal: callers that
/// see an error with the flag set report [`crate::Error::Cancelled`].
pub(crate) struct CancelReader<R> {
    pub(crate) inner: R,
    pub(crate) cancel: Cancel,
}

impl<R: std::io::Read> std::io::Read for CancelReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.cancel.is_cancelled() {
            return Err(std::io::Error::other("cancelled"));
        }
        self.inner.read(buf)
    }
}

/// Bytes in a human unit (binary, as restic shows them).
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.2} {}", UNITS[u])
    }
}
