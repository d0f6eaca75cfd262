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
//!
//! A lock's holder counts on it only while it keeps it fresh: a command
//! that commits what a prune must not delete beneath it (a backup into a
//! deduplicated repository reuses chunks stored before) checks, before its
//! commit, that its lock never went longer than [`LockTiming::trusted_gap`]
//! without a refresh that was stored. A machine asleep, or a repository out
//! of reach, for longer than that fails the command instead: another host
//! may have taken the lock for stale meanwhile.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::target::{Target, TargetExt};
use crate::{Error, Result};

/// A lock older than this without a refresh is stale.
pub const STALE_AFTER: Duration = Duration::from_secs(30 * 60);
/// How a held lock is kept fresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockTiming {
    /// How often a held lock is refreshed (5 minutes).
    pub refresh_every: Duration,
    /// The longest time without a stored refresh after which the holder no
    /// longer trusts its lock (15 minutes: half of [`STALE_AFTER`], which
    /// leaves room for the clocks of two hosts to differ by minutes).
    pub trusted_gap: Duration,
}

impl Default for LockTiming {
    fn default() -> Self {
        Self {
            refresh_every: Duration::from_secs(5 * 60),
            trusted_gap: STALE_AFTER / 2,
        }
    }
}

/// When a lock was last confirmed stored, and its longest time without,
/// in milliseconds of the wall clock (which, unlike a monotonic clock, goes
/// on while a machine sleeps, as other hosts' clocks do).
#[derive(Debug)]
struct Freshness {
    last_ok: AtomicI64,
    longest: AtomicI64,
}

impl Freshness {
    fn new(now: DateTime<Utc>) -> Self {
        Self {
            last_ok: AtomicI64::new(now.timestamp_millis()),
            longest: AtomicI64::new(0),
        }
    }

    /// A refresh was stored at `now`.
    fn confirm(&self, now: DateTime<Utc>) {
        let now = now.timestamp_millis();
        let last = self.last_ok.swap(now, Ordering::SeqCst);
        self.longest.fetch_max(now - last, Ordering::SeqCst);
    }

    /// The longest time the lock went without a stored refresh, up to `now`.
    fn longest_gap(&self, now: DateTime<Utc>) -> Duration {
        let since = now.timestamp_millis() - self.last_ok.load(Ordering::SeqCst);
        let longest = self.longest.load(Ordering::SeqCst).max(since);
        Duration::from_millis(u64::try_from(longest).unwrap_or(0))
    }
}

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
    fresh: Arc<Freshness>,
    trusted_gap: Duration,
}

impl LockGuard {
    /// Takes a lock, or fails with [`Error::Locked`] naming the holder of a
    /// conflicting live lock.
    pub fn acquire(
        target: Arc<dyn Target>,
        mode: LockMode,
        snapshot: Option<String>,
        timing: LockTiming,
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

        let fresh = Arc::new(Freshness::new(info.time));
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let refresher = {
            let (target, key, fresh) = (Arc::clone(&target), key.clone(), Arc::clone(&fresh));
            std::thread::Builder::new()
                .name("backupkit-lock".into())
                .spawn(move || {
                    while let Err(mpsc::RecvTimeoutError::Timeout) =
                        stop_rx.recv_timeout(timing.refresh_every)
                    {
                        info.time = Utc::now();
                        let body = serde_json::to_vec(&info).expect("lock info serializes");
                        if target.put_bytes(&key, &body).is_ok() {
                            fresh.confirm(info.time);
                        }
                    }
                })
                .map_err(|e| Error::io("start", "lock refresher", e))?
        };
        Ok(Self {
            target,
            key,
            stop: Some(stop_tx),
            refresher: Some(refresher),
            fresh,
            trusted_gap: timing.trusted_gap,
        })
    }
}

impl LockGuard {
    /// The lock object's key.
    #[must_use]
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Checks that the lock was kept fresh all along: never longer than
    /// its trusted gap without a stored refresh.
    ///
    /// # Errors
    ///
    /// [`Error::LockLost`] when it was not.
    pub fn check_fresh(&self) -> Result<()> {
        let gap = self.fresh.longest_gap(Utc::now());
        if gap > self.trusted_gap {
            return Err(Error::LockLost {
                seconds: gap.as_secs(),
            });
        }
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freshness_keeps_the_longest_gap_between_stored_refreshes() {
        let t0 = Utc::now();
        let at = |minutes: i64| t0 + chrono::Duration::minutes(minutes);
        let fresh = Freshness::new(t0);
        fresh.confirm(at(5));
        fresh.confirm(at(10));
        assert_eq!(fresh.longest_gap(at(11)), Duration::from_secs(5 * 60));
        // No refresh stored since: the gap so far counts.
        assert_eq!(fresh.longest_gap(at(30)), Duration::from_secs(20 * 60));
        // A machine asleep for 40 minutes, refreshed on waking: the lock
        // is fresh again, but another host may have seen it stale.
        fresh.confirm(at(50));
        assert_eq!(fresh.longest_gap(at(51)), Duration::from_secs(40 * 60));
    }
}
