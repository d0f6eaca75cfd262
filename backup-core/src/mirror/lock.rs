//! One mirror at a time into a destination: `.backupkit-mirror/lock`.
//!
//! Two runs into one destination would remove each other's unfinished
//! files as leftovers and rewrite each other's record. A run creates the
//! lock exclusively (where the tree can), refreshes it while it works and
//! removes it at the end. A lock is stale, and taken over with a notice,
//! when its process is gone (same host, pid not running), when it has not
//! been refreshed for [`STALE_AFTER`], or when it cannot be read and is
//! older than that.

use std::sync::mpsc;
use std::time::Duration;

use chrono::Utc;

use crate::mirror::Problem;
use crate::mirror::record::STATE_DIR;
use crate::snapshot::lock::{LockInfo, STALE_AFTER, this_host};
use crate::tree::{FileAttrs, Tree};
use crate::{Error, Result};

/// Where the lock is, in the destination.
pub const LOCK_PATH: &str = ".backupkit-mirror/lock";

/// How often a held lock is refreshed.
const REFRESH_EVERY: Duration = Duration::from_secs(5 * 60);

fn info() -> LockInfo {
    LockInfo {
        exclusive: true,
        host: this_host(),
        pid: std::process::id(),
        time: Utc::now(),
        snapshot: None,
        prune: false,
    }
}

fn encode(info: &LockInfo) -> Vec<u8> {
    serde_json::to_vec(info).unwrap_or_default()
}

/// Takes the lock of `dest`, taking over a stale one (with a notice).
///
/// # Errors
///
/// [`Error::MirrorLocked`] when another live run holds it.
pub(super) fn acquire(dest: &dyn Tree, notices: &mut Vec<Problem>) -> Result<()> {
    dest.make_dir(STATE_DIR, FileAttrs::default())?;
    for _ in 0..2 {
        match dest.create_new(LOCK_PATH, &encode(&info())) {
            Ok(()) => return Ok(()),
            Err(Error::AlreadyExists { .. }) => {}
            Err(e) => return Err(e),
        }
        let held = read(dest)?;
        let stale = match &held {
            Held::Gone => true,
            Held::By(i) => i.is_stale(Utc::now(), &this_host()),
            Held::Unreadable { age } => age.is_none_or(|a| a > STALE_AFTER),
        };
        if !stale {
            let holder = match held {
                Held::By(i) => format!("pid {} on host {} since {}", i.pid, i.host, i.time),
                _ => "a run whose lock cannot be read".to_owned(),
            };
            return Err(Error::MirrorLocked {
                destination: dest.location(),
                holder,
                lock: format!("{}/{LOCK_PATH}", dest.location().trim_end_matches('/')),
            });
        }
        if let Held::By(i) = &held {
            notices.push(Problem {
                path: LOCK_PATH.into(),
                message: format!(
                    "took over the lock of an earlier run that is gone (pid {} on host {})",
                    i.pid, i.host
                ),
            });
        }
        dest.remove(LOCK_PATH, crate::tree::EntryKind::File)?;
    }
    Err(Error::MirrorLocked {
        destination: dest.location(),
        holder: "another run that took the lock at the same moment".into(),
        lock: format!("{}/{LOCK_PATH}", dest.location().trim_end_matches('/')),
    })
}

enum Held {
    By(LockInfo),
    Unreadable { age: Option<Duration> },
    Gone,
}

fn read(dest: &dyn Tree) -> Result<Held> {
    let mut text = Vec::new();
    match dest.open(LOCK_PATH) {
        Ok(mut r) => {
            if std::io::Read::read_to_end(&mut r, &mut text).is_err() {
                text.clear();
            }
        }
        Err(Error::NotFound { .. }) => return Ok(Held::Gone),
        Err(e) => return Err(e),
    }
    if let Ok(i) = serde_json::from_slice::<LockInfo>(&text) {
        return Ok(Held::By(i));
    }
    let age = dest.stat(LOCK_PATH)?.and_then(|e| e.mtime_ns).map(|m| {
        let now = Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX);
        Duration::from_nanos(u64::try_from(now.saturating_sub(m)).unwrap_or(0))
    });
    Ok(Held::Unreadable { age })
}

/// Runs `work` while the lock is held and refreshed, then removes it.
pub(super) fn holding<T>(dest: &dyn Tree, work: impl FnOnce() -> Result<T>) -> Result<T> {
    let (stop, stopped) = mpsc::channel::<()>();
    std::thread::scope(|scope| {
        scope.spawn(move || {
            while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(REFRESH_EVERY) {
                if let Ok(mut w) = dest.write(LOCK_PATH, FileAttrs::default())
                    && std::io::Write::write_all(&mut w, &encode(&info())).is_ok()
                {
                    let _ = w.commit();
                    let _ = dest.flush();
                }
            }
        });
        let result = work();
        drop(stop);
        result
    })
    .and_then(|t| {
        dest.remove(LOCK_PATH, crate::tree::EntryKind::File)?;
        Ok(t)
    })
    .inspect_err(|_| {
        let _ = dest.remove(LOCK_PATH, crate::tree::EntryKind::File);
    })
}
