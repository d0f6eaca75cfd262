//! Repository locks, restic-style: a lock is an object under `locks/`.
//!
//! Backups take shared locks, so two backups into one repository both run
//! (each writes its own snapshot directory). Commands that delete take an
//! exclusive lock, which conflicts with every other live lock. A lock whose
//! process is gone (same host, pid not running) or that has not been
//! refreshed for [`STALE_AFTER`] is stale: it blocks nothing and `unlock`
//! removes it. A prune takes a prune lock: it runs beside backups and
//! readers (its mark-and-sweep protocol keeps what they use), but not beside
//! another prune or a deleting command.

use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::target::{Target, TargetExt};
use crate::{Error, Result};

/// A lock older than this without a refresh is stale.
pub const STALE_AFTER: Duration = Duration::from_secs(30 * 60);
/// How often a held lock is refreshed.
const REFRESH_EVERY: Duration = Duration::from_secs(5 * 60);

pub(crate) const LOCKS_PREFIX: &str = "locks/";

/// The contents of a lock object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockInfo {
    pub exclusive: bool,
    pub host: String,
    pub pid: u32,
    pub time: DateTime<Utc>,
    /// The snapshot a backup is writing: its directory is not a leftover.
    pub snapshot: Option<String>,
    /// A prune's lock (shared with backups, exclusive among prunes).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub prune: bool,
}

/// What a lock allows beside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    /// Backups and readers: any number at once.
    Shared,
    /// Deleting commands: nothing else at all.
    Exclusive,
    /// A prune: beside shared locks, but no other prune or exclusive lock.
    Prune,
}

impl LockInfo {
    /// Whether this lock and `other` may not be held at once.
    #[must_use]
    pub fn conflicts_with(&self, other: &LockInfo) -> bool {
        self.exclusive || other.exclusive || (self.prune && other.prune)
    }

    /// Whether the lock no longer protects anything.
    pub fn is_stale(&self, now: DateTime<Utc>, this_host: &str) -> bool {
        let age = now.signed_duration_since(self.time);
        if age.to_std().is_ok_and(|a| a > STALE_AFTER) {
            return true;
        }
        self.host == this_host && !process_alive(self.pid)
    }

    pub fn describe(&self) -> String {
        format!(
            "{} lock of pid {} on host {} since {}",
            if self.exclusive {
                "an exclusive"
            } else if self.prune {
                "a prune"
            } else {
                "a shared"
            },
            self.pid,
            self.host,
            self.time.format("%Y-%m-%d %H:%M:%S UTC")
        )
    }
}

/// Whether a process with this pid runs on this host.
fn process_alive(pid: u32) -> bool {
    if pid == std::process::id() {
        return true;
    }
    if cfg!(target_os = "linux") {
        std::path::Path::new("/proc").join(pid.to_string()).exists()
    } else {
        // Without a cheap portable check, only age makes a lock stale.
        true
    }
}

/// This machine's host name, as snapshots and locks record it.
pub fn this_host() -> String {
    gethostname::gethostname().to_string_lossy().into_owned()
}

/// A listed lock and its key.
#[derive(Debug, Clone)]
pub struct ListedLock {
    pub key: String,
    pub info: LockInfo,
    /// Why the lock object could not be read (empty, truncated, not a
    /// backupkit lock); `info` is then the safe reading of it.
    pub unreadable: Option<String>,
}

impl ListedLock {
    /// Whether `unlock` removes the lock without `--remove-all`: a stale
    /// one, or one that cannot be read. An unreadable lock still blocks as
    /// an exclusive one (it may be a newer backupkit's), until the user
    /// removes it; locks are created whole, so it is never a lock that is
    /// still being written.
    pub fn is_removable(&self, now: DateTime<Utc>, this_host: &str) -> bool {
        self.unreadable.is_some() || self.info.is_stale(now, this_host)
    }

    pub fn describe(&self) -> String {
        match &self.unreadable {
            Some(reason) => format!(
                "an unreadable lock object {} ({reason}; `backupkit unlock` removes it)",
                self.key
            ),
            None => self.info.describe(),
        }
    }
}

/// Lists the locks of a repository. An unreadable lock object is listed as
/// an exclusive lock (the safe reading) with the reason it cannot be read.
pub fn list_locks(target: &dyn Target) -> Result<Vec<ListedLock>> {
    let mut out = Vec::new();
    for obj in target.list(LOCKS_PREFIX)? {
        let parsed = match target.get_bytes(&obj.key) {
            Ok(bytes) if bytes.is_empty() => Err("it is empty".to_owned()),
            Ok(bytes) => serde_json::from_slice::<LockInfo>(&bytes)
                .map_err(|e| format!("it is not a backupkit lock: {e}")),
            Err(Error::NotFound { .. }) => continue, // released meanwhile
            Err(e) => return Err(e),
        };
        let (info, unreadable) = match parsed {
            Ok(info) => (info, None),
            Err(reason) => (
                LockInfo {
                    exclusive: true,
                    host: "unknown".into(),
                    pid: 0,
                    time: obj.modified.map_or_else(Utc::now, DateTime::<Utc>::from),
                    snapshot: None,
                    prune: false,
                },
                Some(reason),
            ),
        };
        out.push(ListedLock {
            key: obj.key,
            info,
            unreadable,
        });
    }
    Ok(out)
}

/// A held lock; released on drop.
#[derive(Debug)]
pub struct LockGuard {
    target: Arc<dyn Target>,
    key: String,
    stop: Option<mpsc::Sender<()>>,
    refresher: Option<JoinHandle<()>>,
}

impl LockGuard {
    /// Takes a lock, or fails with [`Error::Locked`] naming the holder of a
    /// conflicting live lock.
    pub fn acquire(
        target: Arc<dyn Target>,
        mode: LockMode,
        snapshot: Option<String>,
    ) -> Result<Self> {
        let host = this_host();
        let mut info = LockInfo {
            exclusive: mode == LockMode::Exclusive,
            host: host.clone(),
            pid: std::process::id(),
            time: Utc::now(),
            snapshot,
            prune: mode == LockMode::Prune,
        };
        let key = format!(
            "{LOCKS_PREFIX}{}-{:016x}.json",
            info.time.format("%Y%m%d%H%M%S"),
            crate::snapshot::random_u64()
        );
        let body = serde_json::to_vec(&info).expect("lock info serializes");
        // Refused writes only: a network error is not a read-only repository.
        target.create_new(&key, &body).map_err(|e| {
            let refused = matches!(
                e.io_kind(),
                Some(std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem)
            );
            if refused {
                Error::LockNotWritable {
                    location: target.location(),
                    reason: crate::check::error_chain(&e),
                }
            } else {
                e
            }
        })?;

        // Create first, then look: of two racing exclusive lockers at least
        // one sees the other and backs off (restic's protocol).
        let now = Utc::now();
        let conflict = list_locks(target.as_ref())?
            .into_iter()
            .find(|l| l.key != key && info.conflicts_with(&l.info) && !l.info.is_stale(now, &host));
        if let Some(other) = conflict {
            let _ = target.delete(&key);
            return Err(Error::Locked {
                holder: other.describe(),
            });
        }

        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let refresher = {
            let target = Arc::clone(&target);
            let key = key.clone();
            std::thread::Builder::new()
                .name("backupkit-lock".into())
                .spawn(move || {
                    while let Err(mpsc::RecvTimeoutError::Timeout) =
                        stop_rx.recv_timeout(REFRESH_EVERY)
                    {
                        info.time = Utc::now();
                        let body = serde_json::to_vec(&info).expect("lock info serializes");
                        let _ = target.put_bytes(&key, &body);
                    }
                })
                .map_err(|e| Error::io("start", "lock refresher", e))?
        };
        Ok(Self {
            target,
            key,
            stop: Some(stop_tx),
            refresher: Some(refresher),
        })
    }
}

impl LockGuard {
    /// The lock object's key.
    #[must_use]
    pub fn key(&self) -> &str {
        &self.key
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(h) = self.refresher.take() {
            let _ = h.join();
        }
        let _ = self.target.delete(&self.key);
    }
}

/// Removes stale locks (or all locks with `all`); returns the removed ones.
pub fn unlock(target: &dyn Target, all: bool) -> Result<Vec<ListedLock>> {
    let host = this_host();
    let now = Utc::now();
    let mut removed = Vec::new();
    for l in list_locks(target)? {
        if all || l.is_removable(now, &host) {
            target.delete(&l.key)?;
            removed.push(l);
        }
    }
    Ok(removed)
}
