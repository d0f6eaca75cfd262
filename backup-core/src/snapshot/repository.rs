//! A repository: snapshots on a target, in a layout a person can read.
//!
//! ```text
//! backupkit.json                       marker: format version
//! snapshots/<id>/files.tar.gz          data object (or .tar / .tar.zst)
//! snapshots/<id>/manifest.jsonl        every entry, one JSON object a line
//! snapshots/<id>/SHA256SUMS            `sha256sum -c` of the objects
//! snapshots/<id>/snapshot.json         metadata, written last: the commit
//! locks/<lock>.json                    shared and exclusive locks
//! ```
//!
//! A deduplicated repository (`init --dedup`, format 2) keeps the same
//! snapshot directories, with a chunk list (`chunks`) in place of the
//! archive, and stores the chunks in `packs/` and `index/`; its
//! `FORMAT.md` describes it and its `restore.py` restores without
//! backupkit (see [`crate::dedup`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::dedup::{ChunkStore, DedupConfig};
use crate::lock::{self, LockGuard, LockMode, LockTiming};
use crate::registry::Registry;
use crate::snapshot::{SnapshotMeta, is_valid_id};
use crate::target::{Target, TargetExt};
use crate::{Error, Result};

/// Name of the repository marker object.
pub const MARKER: &str = "backupkit.json";
/// The format of a repository of archive snapshots.
pub const REPOSITORY_FORMAT: u32 = 1;
/// The format of a deduplicated repository: builds that know only format 1
/// refuse it, rather than misread a snapshot without an archive.
pub const DEDUP_REPOSITORY_FORMAT: u32 = 2;
/// Name of the format description in a deduplicated repository.
pub const FORMAT_MD: &str = "FORMAT.md";
/// Name of the standalone restorer in a deduplicated repository.
pub const RESTORE_PY: &str = "restore.py";
pub(crate) const SNAPSHOTS_PREFIX: &str = "snapshots/";
/// Name of the commit object in each snapshot directory.
pub const SNAPSHOT_JSON: &str = "snapshot.json";
/// Name of the checksum list in each snapshot directory.
pub const SHA256SUMS: &str = "SHA256SUMS";

/// The contents of `backupkit.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RepositoryMarker {
    pub backupkit_repository: u32,
    pub created: DateTime<Utc>,
    pub tool_version: String,
    /// The settings of a deduplicated repository (format 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dedup: Option<DedupConfig>,
}

/// What kind of repository `init` creates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InitOptions {
    /// Deduplicated: snapshots stored as chunks, each stored once.
    pub dedup: bool,
}

/// The result of listing snapshots.
#[derive(Debug, Clone, Default)]
pub struct SnapshotListing {
    /// Readable snapshots, oldest first.
    pub snapshots: Vec<SnapshotMeta>,
    /// Committed snapshots whose `snapshot.json` cannot be read: id, reason.
    pub damaged: Vec<(String, String)>,
}

/// The version string recorded in metadata.
pub fn tool_version() -> String {
    format!("backupkit {}", env!("CARGO_PKG_VERSION"))
}

/// An opened repository. Cheap to clone; `Send + Sync`.
#[derive(Debug, Clone)]
pub struct Repository {
    target: Arc<dyn Target>,
    registry: Arc<Registry>,
    /// Whether read-only commands (check, restore, copy's source) take a
    /// shared lock; see [`Repository::without_read_locks`].
    read_locks: bool,
    /// The settings of a deduplicated repository, checked when opened.
    dedup: Option<Arc<DedupConfig>>,
    /// Where a deduplicated repository's stat cache is kept (`None`: none).
    cache_dir: Option<std::path::PathBuf>,
    /// How locks taken are kept fresh.
    lock_timing: LockTiming,
}

impl Repository {
    /// Creates a repository at `location`, which must be new or empty.
    pub fn init(registry: Arc<Registry>, location: &str) -> Result<Self> {
        let target = registry.open_target(location)?;
        Self::init_target(registry, target)
    }

    /// Creates a repository of archive snapshots on an already built target
    /// (see [`Registry::open_target_with`] for targets that need options).
    pub fn init_target(registry: Arc<Registry>, target: Arc<dyn Target>) -> Result<Self> {
        Self::init_with(registry, target, InitOptions::default())
    }

    /// Creates a repository of the kind `opts` asks for on `target`, which
    /// must be new or empty.
    ///
    /// A deduplicated repository gets a fresh random dedup key, and its
    /// `FORMAT.md` and `restore.py` are stored before `backupkit.json`, so
    /// that every repository that exists can be restored without backupkit.
    pub fn init_with(
        registry: Arc<Registry>,
        target: Arc<dyn Target>,
        opts: InitOptions,
    ) -> Result<Self> {
        if target.exists(MARKER)? {
            return Err(Error::RepositoryExists {
                location: target.location(),
            });
        }
        if !target.list("")?.is_empty() {
            return Err(Error::InvalidInput(format!(
                "{} is not empty; a new repository needs an empty or new location",
                target.location()
            )));
        }
        let dedup = if opts.dedup {
            // The codec must be there before anything is written.
            registry.chunk_codec()?;
            let config = DedupConfig::new(random_key()?);
            target.put_bytes(FORMAT_MD, crate::dedup::FORMAT_MD.as_bytes())?;
            target.put_bytes(RESTORE_PY, crate::dedup::RESTORE_PY.as_bytes())?;
            Some(config)
        } else {
            None
        };
        let marker = RepositoryMarker {
            backupkit_repository: if dedup.is_some() {
                DEDUP_REPOSITORY_FORMAT
            } else {
                REPOSITORY_FORMAT
            },
            created: Utc::now(),
            tool_version: tool_version(),
            dedup: dedup.clone(),
        };
        let body = serde_json::to_vec_pretty(&marker).expect("marker serializes");
        match target.create_new(MARKER, &body) {
            Err(Error::AlreadyExists { .. }) => Err(Error::RepositoryExists {
                location: target.location(),
            }),
            other => other,
        }?;
        Ok(Self {
            target,
            registry,
            read_locks: true,
            lock_timing: LockTiming::default(),
            dedup: dedup.map(Arc::new),
            cache_dir: crate::snapshot::statcache::default_dir(),
        })
    }

    /// Opens the repository at `location`.
    ///
    /// # Errors
    ///
    /// [`Error::RepositoryNotFound`] when there is no `backupkit.json`;
    /// [`Error::RepositoryUnsupported`] when it is of a newer format.
    pub fn open(registry: Arc<Registry>, location: &str) -> Result<Self> {
        let target = registry.open_target(location)?;
        Self::from_target(registry, target)
    }

    /// Opens a repository on an already built target.
    pub fn from_target(registry: Arc<Registry>, target: Arc<dyn Target>) -> Result<Self> {
        let bytes = match target.get_bytes(MARKER) {
            Ok(b) => b,
            Err(Error::NotFound { .. }) => {
                return Err(Error::RepositoryNotFound {
                    location: target.location(),
                });
            }
            Err(e) => return Err(e),
        };
        let marker: RepositoryMarker =
            serde_json::from_slice(&bytes).map_err(|e| Error::RepositoryUnsupported {
                location: target.location(),
                reason: format!("{MARKER} is not valid: {e}"),
            })?;
        let unsupported = |reason: String| Error::RepositoryUnsupported {
            location: target.location(),
            reason,
        };
        if marker.backupkit_repository > DEDUP_REPOSITORY_FORMAT {
            return Err(unsupported(format!(
                "format {} is newer than this backupkit understands ({DEDUP_REPOSITORY_FORMAT}); upgrade backupkit",
                marker.backupkit_repository
            )));
        }
        let dedup = match (marker.backupkit_repository, marker.dedup) {
            (DEDUP_REPOSITORY_FORMAT, Some(config)) => {
                config.key_bytes().map_err(|e| {
                    unsupported(format!(
                        "{MARKER}'s dedup settings: {}",
                        crate::error_chain(&e)
                    ))
                })?;
                Some(Arc::new(config))
            }
            (DEDUP_REPOSITORY_FORMAT, None) => {
                return Err(unsupported(format!(
                    "{MARKER} says format {DEDUP_REPOSITORY_FORMAT} but has no dedup settings; it is damaged"
                )));
            }
            (_, Some(_)) => {
                return Err(unsupported(format!(
                    "{MARKER} has dedup settings but says format {}; it is damaged",
                    marker.backupkit_repository
                )));
            }
            (_, None) => None,
        };
        Ok(Self {
            target,
            registry,
            read_locks: true,
            lock_timing: LockTiming::default(),
            dedup,
            cache_dir: crate::snapshot::statcache::default_dir(),
        })
    }

    /// The same repository with its stat cache (see `backup`) kept in `dir`
    /// instead of `$BACKUPKIT_CACHE_DIR`, `$XDG_CACHE_HOME/backupkit` or
    /// `~/.cache/backupkit`; `None` keeps none, so every file is read.
    #[must_use]
    pub fn with_cache_dir(mut self, dir: Option<std::path::PathBuf>) -> Self {
        self.cache_dir = dir;
        self
    }

    pub(crate) fn cache_dir(&self) -> Option<&std::path::Path> {
        self.cache_dir.as_deref()
    }

    /// The settings of a deduplicated repository; `None` for a repository
    /// of archive snapshots.
    pub fn dedup(&self) -> Option<&DedupConfig> {
        self.dedup.as_deref()
    }

    /// The chunk store of a deduplicated repository, cutting streams as
    /// file trees or (with `database`) as database dumps; the index is not
    /// read yet.
    pub(crate) fn chunk_store(&self, database: bool) -> Result<ChunkStore> {
        let config = self.dedup.as_deref().ok_or_else(|| {
            Error::Unsupported(format!(
                "{} is not a deduplicated repository",
                self.location()
            ))
        })?;
        let codec = self.registry.chunk_codec()?;
        let cutter = if database {
            config.database_cutter(codec.as_ref())?
        } else {
            config.file_cutter(codec.as_ref())?
        };
        Ok(ChunkStore::new(
            Arc::clone(&self.target),
            codec,
            self.registry.hashers()?,
            config.key_bytes()?,
            cutter,
            config.zstd_level,
        ))
    }

    pub fn target(&self) -> &Arc<dyn Target> {
        &self.target
    }

    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    pub fn location(&self) -> String {
        self.target.location()
    }

    pub(crate) fn key(id: &str, name: &str) -> String {
        format!("{SNAPSHOTS_PREFIX}{id}/{name}")
    }

    /// Every committed snapshot, oldest first. Directories without
    /// `snapshot.json` (unfinished backups) are not snapshots.
    ///
    /// A snapshot whose `snapshot.json` is damaged is left out, so that it
    /// cannot block access to the others; [`Repository::list_snapshots`]
    /// names it and `check` reports it.
    pub fn snapshots(&self) -> Result<Vec<SnapshotMeta>> {
        Ok(self.list_snapshots()?.snapshots)
    }

    /// Every committed snapshot, oldest first, and those whose metadata
    /// cannot be read (id and reason).
    pub fn list_snapshots(&self) -> Result<SnapshotListing> {
        let mut listing = SnapshotListing::default();
        for (id, committed) in self.snapshot_dirs()? {
            if !committed {
                continue;
            }
            match self.load_snapshot(&id) {
                Ok(meta) => listing.snapshots.push(meta),
                Err(Error::Integrity { detail, .. } | Error::Unsupported(detail)) => {
                    listing.damaged.push((id, detail));
                }
                Err(e) => return Err(e),
            }
        }
        listing
            .snapshots
            .sort_by(|a, b| a.timestamp.cmp(&b.timestamp).then(a.id.cmp(&b.id)));
        Ok(listing)
    }

    /// Snapshot directory names, each with whether it is committed.
    fn snapshot_dirs(&self) -> Result<BTreeMap<String, bool>> {
        let mut dirs: BTreeMap<String, bool> = self
            .target
            .list_dirs(SNAPSHOTS_PREFIX)?
            .into_iter()
            .map(|d| (d, false))
            .collect();
        for obj in self.target.list(SNAPSHOTS_PREFIX)? {
            let rest = &obj.key[SNAPSHOTS_PREFIX.len()..];
            if let Some((id, name)) = rest.split_once('/') {
                let committed = dirs.entry(id.to_owned()).or_insert(false);
                *committed |= name == SNAPSHOT_JSON;
            }
        }
        Ok(dirs)
    }

    /// Loads one snapshot's metadata by exact id.
    pub fn load_snapshot(&self, id: &str) -> Result<SnapshotMeta> {
        if !is_valid_id(id) {
            return Err(Error::SnapshotNotFound { id: id.to_owned() });
        }
        let key = Self::key(id, SNAPSHOT_JSON);
        let bytes = match self.target.get_bytes(&key) {
            Err(Error::NotFound { .. }) => {
                return Err(Error::SnapshotNotFound { id: id.to_owned() });
            }
            other => other?,
        };
        let damaged = |detail: String| Error::Integrity {
            snapshot: id.to_owned(),
            detail,
        };
        let value: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| damaged(format!("{SNAPSHOT_JSON} cannot be read: {e}")))?;
        // What this build cannot read is refused before the rest is parsed
        // (a newer format may mean something else by the same fields).
        let format = value.get("format").and_then(serde_json::Value::as_u64);
        let encrypted = value.get("encrypted").and_then(serde_json::Value::as_bool);
        if let (Some(format), Some(encrypted)) = (format, encrypted) {
            crate::snapshot::readable(u32::try_from(format).unwrap_or(u32::MAX), encrypted)
                .map_err(|reason| Error::Unsupported(format!("snapshot {id}: {reason}")))?;
        }
        let meta: SnapshotMeta = serde_json::from_value(value)
            .map_err(|e| damaged(format!("{SNAPSHOT_JSON} cannot be read: {e}")))?;
        if meta.id != id {
            return Err(damaged(format!(
                "{SNAPSHOT_JSON} names another snapshot, {:?}",
                meta.id
            )));
        }
        meta.consistent()
            .map_err(|detail| damaged(format!("{SNAPSHOT_JSON}: {detail}")))?;
        Ok(meta)
    }

    /// Finds a snapshot by exact id, unique prefix, or `latest`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] for an empty or blank id: an empty prefix
    /// would match every snapshot (an unset shell variable must never
    /// select, restore or forget anything).
    pub fn find_snapshot(&self, id: &str) -> Result<SnapshotMeta> {
        if id.trim().is_empty() {
            return Err(Error::InvalidInput(
                "empty snapshot id: give an id, a unique prefix of one, or `latest`".into(),
            ));
        }
        // An exact id is read directly: other snapshots' state is irrelevant.
        match self.load_snapshot(id) {
            Err(Error::SnapshotNotFound { .. }) => {}
            other => return other,
        }
        let all = self.snapshots()?;
        if id == "latest" {
            return all
                .into_iter()
                .last()
                .ok_or_else(|| Error::SnapshotNotFound { id: id.to_owned() });
        }
        let mut matching: Vec<SnapshotMeta> =
            all.into_iter().filter(|s| s.id.starts_with(id)).collect();
        match matching.len() {
            0 => Err(Error::SnapshotNotFound { id: id.to_owned() }),
            1 => Ok(matching.remove(0)),
            count => Err(Error::SnapshotAmbiguous {
                id: id.to_owned(),
                count,
            }),
        }
    }

    /// Ids of snapshot directories that were never committed.
    pub fn unfinished(&self) -> Result<Vec<String>> {
        Ok(self
            .snapshot_dirs()?
            .into_iter()
            .filter_map(|(id, committed)| (!committed).then_some(id))
            .collect())
    }

    /// Removes directories of unfinished backups that no live lock claims
    /// (a killed backup's leftovers); returns their ids.
    ///
    /// Safe while other backups run: each backup takes its lock, naming its
    /// snapshot, before it writes anything, and the directories are listed
    /// here before the locks are.
    pub fn remove_unfinished(&self) -> Result<Vec<String>> {
        let candidates = self.unfinished()?;
        if candidates.is_empty() {
            return Ok(candidates);
        }
        let host = lock::this_host();
        let now = Utc::now();
        let claimed: Vec<String> = lock::list_locks(self.target.as_ref())?
            .into_iter()
            .filter(|l| !l.info.is_stale(now, &host))
            .filter_map(|l| l.info.snapshot)
            .collect();
        let mut removed = Vec::new();
        for id in candidates {
            if claimed.contains(&id) {
                continue;
            }
            self.delete_snapshot_objects(&id)?;
            removed.push(id);
        }
        Ok(removed)
    }

    /// Deletes every object of a snapshot, `snapshot.json` first so the
    /// snapshot disappears at once and a crash part-way leaves an unfinished
    /// directory that a later run removes.
    pub(crate) fn delete_snapshot_objects(&self, id: &str) -> Result<()> {
        let prefix = format!("{SNAPSHOTS_PREFIX}{id}/");
        let commit = Self::key(id, SNAPSHOT_JSON);
        match self.target.delete(&commit) {
            Ok(()) | Err(Error::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
        for obj in self.target.list(&prefix)? {
            match self.target.delete(&obj.key) {
                Ok(()) | Err(Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        self.target.sweep(&prefix)
    }

    /// The same repository, but read-only commands (check, restore, the
    /// source side of copy) take no lock, as restic's `--no-lock`: for a
    /// repository that cannot be written (a read-only mount or key). They
    /// then do not stop a concurrent `forget` from deleting what they read;
    /// what they read is still verified.
    #[must_use]
    pub fn without_read_locks(mut self) -> Self {
        self.read_locks = false;
        self
    }

    /// A shared lock for a read-only command, unless read locks are off.
    pub(crate) fn lock_read(&self) -> Result<Option<LockGuard>> {
        if self.read_locks {
            self.lock_shared(None).map(Some)
        } else {
            Ok(None)
        }
    }

    /// Takes a shared lock (several backups may run at once).
    pub fn lock_shared(&self, snapshot: Option<String>) -> Result<LockGuard> {
        LockGuard::acquire(
            Arc::clone(&self.target),
            LockMode::Shared,
            snapshot,
            self.lock_timing,
        )
    }

    /// Takes an exclusive lock (deleting commands).
    pub fn lock_exclusive(&self) -> Result<LockGuard> {
        LockGuard::acquire(
            Arc::clone(&self.target),
            LockMode::Exclusive,
            None,
            self.lock_timing,
        )
    }

    /// Takes a prune lock (beside backups, not beside another prune).
    pub fn lock_prune(&self) -> Result<LockGuard> {
        LockGuard::acquire(
            Arc::clone(&self.target),
            LockMode::Prune,
            None,
            self.lock_timing,
        )
    }

    /// Keeps locks fresh with other timing than the default (5 minutes
    /// between refreshes, 15 without a stored one before a command stops
    /// trusting its lock): for tests, which cannot wait that long.
    #[doc(hidden)]
    #[must_use]
    pub fn with_lock_timing(mut self, timing: LockTiming) -> Self {
        self.lock_timing = timing;
        self
    }

    /// Removes stale locks, or every lock with `all`.
    pub fn unlock(&self, all: bool) -> Result<Vec<lock::ListedLock>> {
        lock::unlock(self.target.as_ref(), all)
    }

    /// The locks present now.
    pub fn locks(&self) -> Result<Vec<lock::ListedLock>> {
        lock::list_locks(self.target.as_ref())
    }
}

/// A dedup key: 32 bytes from the operating system's random source.
fn random_key() -> Result<[u8; 32]> {
    use std::io::Read as _;
    let mut key = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut key))
        .map_err(|e| Error::io("read", "/dev/urandom", e))?;
    Ok(key)
}
