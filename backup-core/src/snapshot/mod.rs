//! Snapshots: the model (`snapshot.json`, snapshot ids) and the engines that
//! make, read, check, copy and forget them in a repository.
//!
//! The engines are submodules; the crate root re-exports them under their
//! old short paths (`backup_core::backup`, `backup_core::repository`, ...).

pub mod backup;
pub mod check;
pub(crate) mod chunked;
pub mod copy;
pub(crate) mod dbsnap;
pub mod export;
pub mod forget;
pub mod lock;
pub mod manifest;
pub mod prune;
pub mod repository;
pub mod restore;
pub mod retention;
pub(crate) mod sink;
pub(crate) mod statcache;
pub(crate) mod store;
pub(crate) mod verify;

// Snapshot metadata (`snapshot.json`) and snapshot ids.

use std::hash::{BuildHasher, Hasher};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::archive::Compression;

/// Version of the `snapshot.json` format this build writes, for both kinds
/// of repository.
///
/// Format 2 adds `snapshot.json`'s own SHA-256 to `SHA256SUMS`, so damage to
/// the commit object is found (and `sha256sum -c SHA256SUMS` covers it).
/// Format 3 adds `dedup`, the stream stored as a chunk list, and a
/// compressed manifest. Format 4 ([`NAMED_LINES_SNAPSHOT_FORMAT`]) writes
/// manifest lines of format 2, and archive snapshots' manifest
/// zstd-compressed (`manifest.jsonl.zst`).
pub const SNAPSHOT_FORMAT: u32 = 4;
/// The first `snapshot.json` format of deduplicated snapshots (and of
/// compressed manifests).
pub const DEDUP_SNAPSHOT_FORMAT: u32 = 3;
/// The first `snapshot.json` format whose manifest lines may give an
/// entry's name instead of its path (manifest line format 2).
pub const NAMED_LINES_SNAPSHOT_FORMAT: u32 = 4;
/// The newest `snapshot.json` format this build reads.
pub const NEWEST_SNAPSHOT_FORMAT: u32 = SNAPSHOT_FORMAT;
/// The oldest `snapshot.json` format this build reads.
pub const OLDEST_SNAPSHOT_FORMAT: u32 = 1;

/// What a snapshot holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SnapshotKind {
    /// A tree of files, stored as one tar archive plus a manifest.
    Files,
    /// A database dump.
    Database,
    /// Files and databases together.
    Full,
}

impl SnapshotKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SnapshotKind::Files => "files",
            SnapshotKind::Database => "database",
            SnapshotKind::Full => "full",
        }
    }
}

/// Whether everything asked for was stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SnapshotStatus {
    /// Every entry was stored as it was when read.
    Success,
    /// The snapshot is valid and restorable, but some entries could not be
    /// read or changed while being read (see `warnings`).
    Incomplete,
}

/// One stored object of a snapshot, with its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectRecord {
    /// Name inside the snapshot directory (`files.tar.gz`, `manifest.jsonl`).
    pub name: String,
    pub size: u64,
    pub sha256: String,
}

/// The contents of `snapshot.json`: written last, it is the commit point of a
/// snapshot. Field names follow the seeds' metadata where they overlap.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotMeta {
    pub format: u32,
    pub id: String,
    pub timestamp: DateTime<Utc>,
    pub kind: SnapshotKind,
    pub status: SnapshotStatus,
    /// Why the snapshot is incomplete, in one line; `null` on success.
    pub error_message: Option<String>,
    /// The first warnings (at most [`MAX_RECORDED_WARNINGS`]).
    #[serde(default)]
    pub warnings: Vec<String>,
    #[serde(default)]
    pub warning_count: u64,
    pub host: String,
    #[serde(default)]
    pub tags: Vec<String>,
    /// Absolute source paths.
    pub paths: Vec<String>,
    #[serde(default)]
    pub excludes: Vec<String>,
    pub tool_version: String,
    pub duration_seconds: f64,
    /// Bytes stored: the data objects (what the seeds call `size_bytes`).
    pub size_bytes: u64,
    /// Bytes of file content read from the source.
    pub source_bytes: u64,
    /// `sha256:<hex>` of the main data object.
    pub checksum: String,
    /// Names of the data objects.
    pub files_included: Vec<String>,
    pub file_count: u64,
    pub dir_count: u64,
    pub entry_count: u64,
    pub compressed: bool,
    pub compression: Compression,
    pub level: Option<i32>,
    pub encrypted: bool,
    /// Every object of the snapshot except `snapshot.json`, with checksums.
    pub objects: Vec<ObjectRecord>,
    /// For database snapshots: the engine, where it was, and its tables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<DatabaseInfo>,
    /// For snapshots in a deduplicated repository: the stream (the tar
    /// archive, or the dump) stored as the chunks its data object lists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dedup: Option<DedupInfo>,
}

/// How a deduplicated snapshot's stream was stored. The data object is the
/// chunk list (`checksum` is its SHA-256) and `size_bytes` what this
/// snapshot added to the repository (its new packs and index).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DedupInfo {
    /// Bytes of the stream (the uncompressed tar archive, or the dump).
    pub stream_bytes: u64,
    /// Chunks in the stream.
    pub chunks: u64,
    /// Chunks this snapshot stored (the others were stored already).
    pub new_chunks: u64,
    /// Bytes of the stream in those new chunks, before compression.
    pub new_bytes: u64,
}

/// Name of a deduplicated snapshot's data object: its chunk list.
pub const CHUNKS_NAME: &str = "chunks";

/// What a database snapshot records of its database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatabaseInfo {
    /// `sqlite`, `postgres` or `mysql`.
    pub engine: String,
    /// Where the database was (no credentials).
    pub source: String,
    /// The dump's name inside the snapshot, before compression.
    pub dump_name: String,
    /// Rows per table at dump time; a restore is checked against them.
    pub tables: crate::database::RowCounts,
}

/// How many warning lines `snapshot.json` keeps; the count keeps them all.
pub const MAX_RECORDED_WARNINGS: usize = 100;

impl SnapshotMeta {
    /// The object record of `name`.
    pub fn object(&self, name: &str) -> Option<&ObjectRecord> {
        self.objects.iter().find(|o| o.name == name)
    }

    /// The manifest's name: `manifest.jsonl` (format 2 and earlier), or
    /// `manifest.jsonl.zst`, or in a deduplicated snapshot
    /// `manifest.chunks`, the chunk list of the manifest's lines.
    pub fn manifest_name(&self) -> &'static str {
        if self.object(crate::manifest::MANIFEST_CHUNKS_NAME).is_some() {
            crate::manifest::MANIFEST_CHUNKS_NAME
        } else if self.object(crate::manifest::MANIFEST_ZST_NAME).is_some() {
            crate::manifest::MANIFEST_ZST_NAME
        } else {
            crate::manifest::MANIFEST_NAME
        }
    }

    /// How the manifest is compressed.
    pub fn manifest_compression(&self) -> Compression {
        if self.manifest_name() == crate::manifest::MANIFEST_ZST_NAME {
            Compression::Zstd
        } else {
            Compression::None
        }
    }

    /// The main data object (the archive).
    pub fn data_object(&self) -> Option<&ObjectRecord> {
        self.files_included.first().and_then(|n| self.object(n))
    }

    /// Checks that every recorded field that follows from another agrees
    /// with it: object names are plain and unique, the data objects are
    /// recorded, `checksum`, `size_bytes` and `compressed` match them.
    /// (Counts are checked against the manifest as it is read.)
    pub fn consistent(&self) -> Result<(), String> {
        let mut names = std::collections::HashSet::new();
        for o in &self.objects {
            let plain = !o.name.is_empty()
                && o.name != "."
                && o.name != ".."
                && !o.name.contains(['/', '\\', '\0'])
                && o.name != crate::repository::SNAPSHOT_JSON
                && o.name != crate::repository::SHA256SUMS;
            if !plain {
                return Err(format!("object name {:?} is not a plain file name", o.name));
            }
            if !names.insert(o.name.as_str()) {
                return Err(format!("object {:?} is recorded twice", o.name));
            }
            if o.sha256.len() != 64 || !o.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!("object {:?} has no valid SHA-256", o.name));
            }
        }
        match self
            .objects
            .iter()
            .filter(|o| {
                o.name == crate::manifest::MANIFEST_NAME
                    || o.name == crate::manifest::MANIFEST_ZST_NAME
                    || o.name == crate::manifest::MANIFEST_CHUNKS_NAME
            })
            .count()
        {
            0 => return Err(format!("no record of {}", crate::manifest::MANIFEST_NAME)),
            1 => {}
            _ => return Err("two manifests are recorded".into()),
        }
        if self.manifest_compression() != Compression::None && self.format < DEDUP_SNAPSHOT_FORMAT {
            return Err(format!(
                "a compressed manifest needs snapshot format {DEDUP_SNAPSHOT_FORMAT}"
            ));
        }
        if self.manifest_name() == crate::manifest::MANIFEST_CHUNKS_NAME && self.dedup.is_none() {
            return Err(format!(
                "only a deduplicated snapshot has {}",
                crate::manifest::MANIFEST_CHUNKS_NAME
            ));
        }
        let Some(data) = self.data_object() else {
            return Err("no data object recorded".into());
        };
        if let Some(d) = &self.dedup {
            return self.consistent_dedup(d);
        }
        let mut stored = 0u64;
        for name in &self.files_included {
            match self.object(name) {
                Some(o) => stored += o.size,
                None => return Err(format!("data object {name:?} is not recorded")),
            }
        }
        if self.checksum != format!("sha256:{}", data.sha256) {
            return Err(format!(
                "checksum {:?} is not the SHA-256 of {}",
                self.checksum, data.name
            ));
        }
        if self.size_bytes != stored {
            return Err(format!(
                "size_bytes is {}, but the data objects hold {stored} bytes",
                self.size_bytes
            ));
        }
        if self.compressed != (self.compression != Compression::None) {
            return Err(format!(
                "compressed is {}, but compression is {}",
                self.compressed,
                self.compression.as_str()
            ));
        }
        self.consistent_kind()
    }

    fn consistent_kind(&self) -> Result<(), String> {
        if self.kind == SnapshotKind::Database && self.database.is_none() {
            return Err("a database snapshot without its database record".into());
        }
        Ok(())
    }

    /// [`Self::consistent`] for a deduplicated snapshot: the chunk list is
    /// the one data object and `checksum` its SHA-256, the chunks are zstd
    /// frames.
    fn consistent_dedup(&self, d: &DedupInfo) -> Result<(), String> {
        if self.format < DEDUP_SNAPSHOT_FORMAT {
            return Err(format!(
                "a deduplicated snapshot must be of format {DEDUP_SNAPSHOT_FORMAT} or later"
            ));
        }
        if self.files_included != [CHUNKS_NAME] {
            return Err(format!(
                "a deduplicated snapshot's data object is {CHUNKS_NAME:?}, not {:?}",
                self.files_included
            ));
        }
        let list = self.object(CHUNKS_NAME).expect("data object recorded");
        if self.checksum != format!("sha256:{}", list.sha256) {
            return Err(format!(
                "checksum {:?} is not the SHA-256 of {CHUNKS_NAME}",
                self.checksum
            ));
        }
        if self.compression != Compression::Zstd || !self.compressed {
            return Err("a deduplicated snapshot's chunks are zstd frames".into());
        }
        if d.new_chunks > d.chunks || d.new_bytes > d.stream_bytes {
            return Err("dedup records more new chunks than the stream has".into());
        }
        self.consistent_kind()
    }

    /// The compression and level of the stream the data holds: a
    /// deduplicated snapshot's chunks are compressed one by one, the stream
    /// they make is not.
    pub fn stream_compression(&self) -> (Compression, Option<i32>) {
        if self.dedup.is_some() {
            (Compression::None, None)
        } else {
            (self.compression, self.level)
        }
    }
}

/// Whether this build reads a snapshot of `format`, `encrypted` or not:
/// `Err` names what it would need.
pub fn readable(format: u32, encrypted: bool) -> Result<(), String> {
    if !(OLDEST_SNAPSHOT_FORMAT..=NEWEST_SNAPSHOT_FORMAT).contains(&format) {
        return Err(format!(
            "snapshot format {format} is not one this backupkit ({}) reads \
             (formats {OLDEST_SNAPSHOT_FORMAT} to {NEWEST_SNAPSHOT_FORMAT}); upgrade backupkit",
            env!("CARGO_PKG_VERSION"),
        ));
    }
    if encrypted {
        return Err(format!(
            "the snapshot is encrypted, and this backupkit ({}) cannot decrypt; \
             use a backupkit that supports encrypted repositories",
            env!("CARGO_PKG_VERSION"),
        ));
    }
    Ok(())
}

/// A new snapshot id: `YYYYMMDD_HHMMSS_mmm_<kind>_<6 hex>` in UTC.
///
/// Time comes first so that ids of every kind sort by time, down to the
/// millisecond; the random suffix keeps two backups started in the same
/// millisecond apart.
///
/// Within one process the suffixes are a counter from a random start, so
/// ids never repeat there (16 million in a row); between processes they are
/// random.
pub fn new_snapshot_id(kind: SnapshotKind, at: DateTime<Utc>) -> String {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    static START: OnceLock<u64> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let start = *START.get_or_init(random_u64);
    let suffix = start.wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed)) & 0x00ff_ffff;
    format!(
        "{}_{}_{suffix:06x}",
        at.format("%Y%m%d_%H%M%S_%3f"),
        kind.as_str(),
    )
}

/// Whether `s` has the shape of a snapshot id (guards against path tricks
/// when an id is used as a key component).
pub fn is_valid_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A random number from the standard library's per-process random keys,
/// mixed with the time and process id (no extra dependency needed).
pub fn random_u64() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_sort_by_time_and_differ_within_a_millisecond() {
        let t1: DateTime<Utc> = "2026-11-23T02:00:00.005Z".parse().unwrap();
        let t2: DateTime<Utc> = "2026-11-23T02:00:00.120Z".parse().unwrap();
        let t3: DateTime<Utc> = "2026-11-24T01:00:00Z".parse().unwrap();
        let a = new_snapshot_id(SnapshotKind::Files, t1);
        let b = new_snapshot_id(SnapshotKind::Database, t2);
        let c = new_snapshot_id(SnapshotKind::Files, t3);
        assert!(a < b && b < c, "{a} {b} {c}");
        assert!(a.starts_with("20261123_020000_005_files_"), "{a}");
        // In one millisecond, from one process: never the same (a random
        // 24-bit suffix alone would repeat once in about 800 runs of this).
        let same: std::collections::HashSet<_> = (0..5000)
            .map(|_| new_snapshot_id(SnapshotKind::Files, t1))
            .collect();
        assert_eq!(same.len(), 5000);
        assert!(is_valid_id(&a));
        assert!(!is_valid_id("../x"));
        assert!(!is_valid_id(""));
    }
}
