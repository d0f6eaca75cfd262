//! Database snapshots: one consistent dump, compressed as one object that
//! plain `gunzip` or `zstd -d` turns back into the dump (`results.db.gz`, as
//! seed 001 names them), with a one-entry manifest and the row count of every
//! table. Restore loads the dump into a database and checks those counts.

use std::time::Instant;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::archive::{Compression, Entry, EntryKind, StreamCodec};
use crate::database::{DatabaseSource, RowCounts};
use crate::hash::{Hashers, HashingWriter, SharedHasher};
use crate::lock;
use crate::progress::{Cancel, Event, Progress};
use crate::repository::{Repository, tool_version};
use crate::retention::{Candidate, KeepPolicy, apply};
use crate::sink;
use crate::snapshot::chunked::Chunked;
use crate::snapshot::{
    DatabaseInfo, ObjectRecord, SNAPSHOT_FORMAT, SnapshotKind, SnapshotMeta, SnapshotStatus,
    new_snapshot_id,
};
use crate::{Error, IoContext, Result};

/// How to back up a database.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseBackupOptions {
    pub tags: Vec<String>,
    /// gzip (level 6) by default, as seed 001 does.
    pub compression: Compression,
    pub level: Option<i32>,
    /// Host name to record; `None` is this machine's.
    pub host: Option<String>,
}

/// Seed 001's `auto`: back up only when the newest dump of this database is
/// older than `min_interval`, then keep the newest `keep_last` of them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AutoOptions {
    pub backup: DatabaseBackupOptions,
    /// Seconds; the seed's default is one hour.
    pub min_interval_seconds: u64,
    /// How many dumps of this database to keep; 0 keeps all.
    pub keep_last: u32,
}

impl Default for AutoOptions {
    fn default() -> Self {
        Self {
            backup: DatabaseBackupOptions::default(),
            min_interval_seconds: 3600,
            keep_last: 10,
        }
    }
}

/// What `auto` did.
#[derive(Debug, Clone, Serialize)]
pub struct AutoOutcome {
    /// `backed_up`, or `skipped` because the newest dump is recent.
    pub action: &'static str,
    /// The new snapshot, or the recent one that made a new one unneeded.
    pub snapshot: Option<SnapshotMeta>,
    /// Ids of older dumps removed to keep `keep_last`.
    pub pruned: Vec<String>,
}

/// The stored objects of a dump, its size and its row counts.
struct Dumped {
    data: ObjectRecord,
    manifest: ObjectRecord,
    size: u64,
    rows: RowCounts,
}

/// What a database restore did.
#[derive(Debug, Clone, Serialize)]
pub struct DatabaseRestoreSummary {
    pub snapshot: String,
    pub target: String,
    /// Rows per table in the restored database, equal to those recorded.
    pub tables: RowCounts,
}

impl Repository {
    /// Dumps a database into a new snapshot (kind `database`).
    ///
    /// Nothing is committed unless the dump completed: a failing source
    /// (down, locked, damaged) leaves no snapshot and removes what was
    /// written.
    pub fn backup_database(
        &self,
        source: &dyn DatabaseSource,
        opts: &DatabaseBackupOptions,
        progress: &dyn Progress,
        cancel: &Cancel,
    ) -> Result<SnapshotMeta> {
        let codec = self.registry().codec(opts.compression, opts.level)?;
        let hashers = self.registry().hashers()?;
        let started = Instant::now();
        let now = Utc::now();
        let id = new_snapshot_id(SnapshotKind::Database, now);
        let lock = self.lock_shared(Some(id.clone()))?;
        let _ = self.remove_unfinished();
        progress.event(&Event::Started {
            operation: "backup",
            snapshot: Some(id.clone()),
        });

        let written = if self.dedup().is_some() {
            self.write_dump_chunked(&id, source, hashers.as_ref(), now, cancel)
        } else {
            self.write_dump(&id, source, codec.as_ref(), hashers.as_ref(), now, cancel)
                .map(|d| (d, None))
        };
        let (
            Dumped {
                data,
                manifest,
                size,
                rows,
            },
            chunked,
        ) = match written {
            Ok(v) => v,
            Err(e) => {
                let _ = self.delete_snapshot_objects(&id);
                return Err(e);
            }
        };
        let mut meta = SnapshotMeta {
            format: SNAPSHOT_FORMAT,
            id: id.clone(),
            timestamp: now,
            kind: SnapshotKind::Database,
            status: SnapshotStatus::Success,
            error_message: None,
            warnings: Vec::new(),
            warning_count: 0,
            host: opts.host.clone().unwrap_or_else(lock::this_host),
            tags: opts.tags.clone(),
            paths: vec![source.describe()],
            excludes: Vec::new(),
            tool_version: tool_version(),
            duration_seconds: started.elapsed().as_secs_f64(),
            size_bytes: data.size,
            source_bytes: size,
            checksum: format!("sha256:{}", data.sha256),
            files_included: vec![data.name.clone()],
            file_count: 1,
            dir_count: 0,
            entry_count: 1,
            compressed: codec.compression() != Compression::None,
            compression: codec.compression(),
            level: codec.level(),
            encrypted: false,
            objects: vec![data, manifest],
            database: Some(DatabaseInfo {
                engine: source.engine().to_owned(),
                source: source.describe(),
                dump_name: source.dump_name(),
                tables: rows,
            }),
            dedup: None,
        };
        if let Some(chunked) = chunked {
            let list = meta.objects[0].clone();
            chunked.apply(&mut meta, &list);
        }
        if let Err(e) = self.commit_snapshot(&meta, &lock, cancel) {
            let _ = self.delete_snapshot_objects(&id);
            return Err(e);
        }
        progress.event(&Event::Finished {
            operation: "backup",
            files: 1,
            bytes: size,
            warnings: 0,
            seconds: started.elapsed().as_secs_f64(),
        });
        Ok(meta)
    }

    /// Seed 001's `auto` (see [`AutoOptions`]). Only this host's dumps of
    /// this database count and are pruned.
    pub fn auto_backup_database(
        &self,
        source: &dyn DatabaseSource,
        opts: &AutoOptions,
        progress: &dyn Progress,
        cancel: &Cancel,
    ) -> Result<AutoOutcome> {
        let host = opts.backup.host.clone().unwrap_or_else(lock::this_host);
        let mine = |s: &SnapshotMeta| {
            s.host == host
                && s.database
                    .as_ref()
                    .is_some_and(|d| d.source == source.describe())
        };
        let newest = self.snapshots()?.into_iter().rfind(|s| mine(s));
        let recent = newest.as_ref().is_some_and(|s| {
            Utc::now()
                .signed_duration_since(s.timestamp)
                .to_std()
                .is_ok_and(|age| age.as_secs() < opts.min_interval_seconds)
        });
        let (action, snapshot) = if recent {
            ("skipped", newest)
        } else {
            let meta = self.backup_database(source, &opts.backup, progress, cancel)?;
            ("backed_up", Some(meta))
        };
        let mut pruned = Vec::new();
        if opts.keep_last > 0 {
            let _lock = self.lock_exclusive()?;
            let candidates: Vec<Candidate> = self
                .snapshots()?
                .into_iter()
                .filter(|s| mine(s))
                .map(|s| Candidate {
                    id: s.id,
                    time: s.timestamp,
                    tags: s.tags,
                })
                .collect();
            let policy = KeepPolicy {
                last: opts.keep_last,
                ..KeepPolicy::default()
            };
            for d in apply(&candidates, &policy, &Utc, Utc::now()) {
                if !d.keep {
                    self.delete_snapshot_objects(&d.id)?;
                    pruned.push(d.id);
                }
            }
        }
        Ok(AutoOutcome {
            action,
            snapshot,
            pruned,
        })
    }

    /// Dumps `source` into the data object and manifest of snapshot `id`.
    fn write_dump(
        &self,
        id: &str,
        source: &dyn DatabaseSource,
        codec: &dyn StreamCodec,
        hashers: &dyn Hashers,
        now: DateTime<Utc>,
        cancel: &Cancel,
    ) -> Result<Dumped> {
        let dump_name = checked_dump_name(source)?;
        let object_name = format!("{dump_name}{}", codec.compression().extension());
        let key = Repository::key(id, &object_name);
        let (sink, writer_thread) = sink::spawn(self.target().put(&key)?, hashers.sha256())?;
        let encoder = codec
            .encoder(Box::new(sink))
            .ctx("start compressing", &key)?;
        let mut content = HashingWriter::new(encoder, hashers.blake3());
        let dumped = source.dump(&mut content, cancel);
        let (encoder, blake3, size) = content.finish();
        let finished = dumped.and_then(|rows| {
            encoder.finish().ctx("write", &key)?;
            Ok(rows)
        });
        // A failed writer (a full disk) is the cause of a failed dump.
        let (rows, (writer, sha256, stored)) = match (finished, writer_thread.finish(&key)) {
            (Ok(rows), Ok(written)) => (rows, written),
            (Err(Error::Cancelled), _) => return Err(Error::Cancelled),
            (_, Err(cause)) | (Err(cause), Ok(_)) => return Err(cause),
        };
        writer.commit()?;
        let data = ObjectRecord {
            name: object_name.clone(),
            size: stored,
            sha256,
        };
        let entry = dump_entry(dump_name, blake3, size, now);
        Ok(self.dumped(id, &entry, data, rows, hashers, None)?.0)
    }

    /// Dumps `source` uncompressed into the chunk store (so that a small
    /// change to the database stores a few chunks), with the chunk list as
    /// snapshot `id`'s data object.
    fn write_dump_chunked(
        &self,
        id: &str,
        source: &dyn DatabaseSource,
        hashers: &dyn Hashers,
        now: DateTime<Utc>,
        cancel: &Cancel,
    ) -> Result<(Dumped, Option<Chunked>)> {
        let dump_name = checked_dump_name(source)?;
        let stream = self.start_chunked(true)?;
        let mut content = HashingWriter::new(stream.writer(), hashers.blake3());
        let rows = source.dump(&mut content, cancel)?;
        let (_, blake3, size) = content.finish();
        let (data, mut chunked, store) = stream.finish(self, id)?;
        let entry = dump_entry(dump_name, blake3, size, now);
        let (dumped, stored) = self.dumped(id, &entry, data, rows, hashers, Some(store))?;
        chunked.stored_bytes += stored;
        Ok((dumped, Some(chunked)))
    }

    /// Writes the one-entry manifest of a dump stored as `data` (into
    /// `store`, in a deduplicated repository); also returns the bytes of
    /// packs and index that cost.
    fn dumped(
        &self,
        id: &str,
        entry: &Entry,
        data: ObjectRecord,
        rows: RowCounts,
        hashers: &dyn Hashers,
        store: Option<crate::dedup::ChunkStore>,
    ) -> Result<(Dumped, u64)> {
        let mut manifest = self.open_manifest(id, hashers)?;
        manifest.push(entry).ctx("write", "manifest")?;
        let (manifest, stored) = self.close_manifest(manifest, id, store)?;
        let dumped = Dumped {
            data,
            manifest,
            size: entry.size,
            rows,
        };
        Ok((dumped, stored))
    }

    /// Restores a database snapshot into the database `target` names (a
    /// `sqlite:///path` URL, ...), then checks the engine's integrity and
    /// that every table has the rows recorded at dump time.
    ///
    /// # Errors
    ///
    /// [`Error::DatabaseExists`] when the database exists and `replace` is
    /// not set (nothing is touched); [`Error::Integrity`] when the stored
    /// dump is damaged (found before the target is touched) or the restored
    /// row counts differ.
    pub fn restore_database(
        &self,
        id: &str,
        target: &str,
        replace: bool,
        progress: &dyn Progress,
        cancel: &Cancel,
    ) -> Result<DatabaseRestoreSummary> {
        let started = Instant::now();
        let meta = self.find_snapshot(id)?;
        let info = meta.database.clone().ok_or_else(|| {
            Error::InvalidInput(format!(
                "snapshot {} holds files, not a database: restore it into a directory",
                meta.id
            ))
        })?;
        let db = self.registry().database_target(target)?;
        if !replace && db.exists()? {
            return Err(Error::DatabaseExists {
                target: db.describe(),
            });
        }
        let _lock = self.lock_read()?;
        progress.event(&Event::Started {
            operation: "restore",
            snapshot: Some(meta.id.clone()),
        });
        let hashers = self.registry().hashers()?;
        let mut tables = None;
        self.read_snapshot(
            &meta,
            &mut |entry, content| {
                // The staged database is checked before it takes the
                // target's name: the dump's content against the manifest,
                // its rows against those recorded at dump time.
                let content_hash = SharedHasher::new(hashers.blake3());
                let mut reader = content_hash.reader(content);
                let accept = |counts: &RowCounts| {
                    let (hash, size) = content_hash.finish();
                    if size != entry.size || Some(&hash) != entry.blake3.as_ref() {
                        return Err(Error::Integrity {
                            snapshot: meta.id.clone(),
                            detail: format!(
                                "the dump does not match its manifest hash; {} is untouched",
                                db.describe()
                            ),
                        });
                    }
                    rows_match(&meta.id, &info.tables, counts, &db.describe())
                };
                let loaded = db.load_verified(&mut reader, replace, &accept, cancel);
                tables = Some(match loaded {
                    // Created by someone else since the look above.
                    Err(Error::AlreadyExists { .. }) if !replace => {
                        return Err(Error::DatabaseExists {
                            target: db.describe(),
                        });
                    }
                    other => other?,
                });
                Ok(())
            },
            &mut |_| {},
            cancel,
        )?;
        let tables = tables.ok_or_else(|| Error::Integrity {
            snapshot: meta.id.clone(),
            detail: "the snapshot holds no dump".into(),
        })?;
        progress.event(&Event::Finished {
            operation: "restore",
            files: 1,
            bytes: 0,
            warnings: 0,
            seconds: started.elapsed().as_secs_f64(),
        });
        Ok(DatabaseRestoreSummary {
            snapshot: meta.id,
            target: db.describe(),
            tables,
        })
    }
}

/// The manifest entry of a dump.
fn dump_entry(name: String, blake3: String, size: u64, now: DateTime<Utc>) -> Entry {
    Entry {
        path: name,
        kind: EntryKind::File,
        size,
        mtime: now.timestamp(),
        mtime_nsec: now.timestamp_subsec_nanos(),
        mode: 0o600,
        link: None,
        blake3: Some(blake3),
    }
}

/// The dump's name, which must be a plain file name.
fn checked_dump_name(source: &dyn DatabaseSource) -> Result<String> {
    let dump_name = source.dump_name();
    if dump_name.contains('/') {
        return Err(Error::InvalidInput(format!(
            "dump name {dump_name:?} is not a file name"
        )));
    }
    crate::verify::safe_relative(&dump_name)?;
    Ok(dump_name)
}

/// Whether the restored `got` row counts are those `recorded` at dump time;
/// an integrity failure naming every table that differs otherwise.
fn rows_match(id: &str, recorded: &RowCounts, got: &RowCounts, target: &str) -> Result<()> {
    if got == recorded {
        return Ok(());
    }
    let mut differ: Vec<String> = recorded
        .iter()
        .filter(|(t, n)| got.get(*t) != Some(n))
        .map(|(t, n)| match got.get(t) {
            Some(g) => format!("{t}: {n} recorded, {g} restored"),
            None => format!("{t}: {n} recorded, table missing"),
        })
        .collect();
    differ.extend(
        got.keys()
            .filter(|t| !recorded.contains_key(*t))
            .map(|t| format!("{t}: not recorded, restored")),
    );
    Err(Error::Integrity {
        snapshot: id.to_owned(),
        detail: format!(
            "restored row counts differ ({}); {target} is untouched",
            differ.join("; ")
        ),
    })
}
