//! Removing packs no snapshot refers to, without ever removing one that a
//! snapshot (or a backup still running) needs: mark, grace, sweep.
//!
//! The danger is a backup that read the index before a prune decided a
//! pack was unused, found a chunk in it, and will commit a snapshot that
//! refers to it after the pack is gone. So a prune deletes nothing at once:
//!
//! 1. **Mark.** Packs that no committed snapshot refers to (and packs no
//!    index lists, left by killed backups) are named in a mark object,
//!    `prune/NAME.mark.json`. From then on, a backup that starts ignores
//!    the chunks of marked packs (it stores its own copies), and readers
//!    prefer other copies. Then the locks live at that moment are listed
//!    into `prune/NAME.locks.json`: every backup that might not have seen
//!    the mark holds one of them (a backup takes its lock before it reads
//!    the marks).
//! 2. **Grace.** The mark waits until it is older than the grace period and
//!    every lock it lists is gone (released, or stale).
//! 3. **Sweep.** The chunk lists of all snapshots are read again, now that
//!    every backup of mark time has committed or died. A marked pack that
//!    holds a chunk a snapshot refers to, and that no unmarked pack also
//!    holds, is spared. For the rest: index fragments that list them are
//!    written anew without them, the old fragments deleted, then the packs,
//!    then the mark.
//!
//! Every step can be cut short by a crash: a mark alone only makes backups
//! store a few chunks again; rewritten fragments are named by their content,
//! so writing one twice is harmless; a pack no fragment lists any more is
//! still in the mark, which the next prune finishes. Removing a mark is
//! always safe, so an unreadable or unfinished one (no locks object) is
//! removed by the next prune and its packs marked again.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::codec::ChunkId;
use super::index::{self, PackIndex};
use super::store::{ChunkStore, INDEX_PREFIX, prefix};
use crate::target::{Target, TargetExt};
use crate::{Error, Result};

/// Marks live under this prefix.
pub const PRUNE_PREFIX: &str = "prune/";
const MARK_SUFFIX: &str = ".mark.json";
const LOCKS_SUFFIX: &str = ".locks.json";
/// Packs live under this prefix.
pub const PACKS_PREFIX: &str = "packs/";

/// Packs marked for deletion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mark {
    pub format: u32,
    /// When the mark was written (the pruning host's clock).
    pub time: DateTime<Utc>,
    pub host: String,
    /// SHA-256 names of the marked packs.
    pub packs: Vec<String>,
}

/// The locks live when a mark was written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MarkLocks {
    pub format: u32,
    /// Lock object keys.
    pub locks: Vec<String>,
}

/// A mark found in the repository.
#[derive(Debug, Clone)]
pub struct PendingMark {
    /// The mark's name (its objects are `prune/NAME.mark.json` and
    /// `prune/NAME.locks.json`).
    pub name: String,
    /// `None` if the mark object cannot be read.
    pub mark: Option<Mark>,
    /// `None` until the locks object is written (or if it cannot be read).
    pub locks: Option<Vec<String>>,
    /// Why an object of the mark cannot be read.
    pub unreadable: Option<String>,
}

impl PendingMark {
    /// The mark's object keys.
    #[must_use]
    pub fn keys(&self) -> [String; 2] {
        [
            format!("{PRUNE_PREFIX}{}{MARK_SUFFIX}", self.name),
            format!("{PRUNE_PREFIX}{}{LOCKS_SUFFIX}", self.name),
        ]
    }
}

/// Reads every mark in the repository.
///
/// # Errors
///
/// Listing or reading failed (an object that is there but malformed is
/// reported in [`PendingMark::unreadable`], not as an error).
pub fn read_marks(target: &dyn Target) -> Result<Vec<PendingMark>> {
    let mut marks: HashMap<String, PendingMark> = HashMap::new();
    for obj in target.list(PRUNE_PREFIX)? {
        let Some(file) = obj.key.strip_prefix(PRUNE_PREFIX) else {
            continue;
        };
        let (name, is_mark) = if let Some(n) = file.strip_suffix(MARK_SUFFIX) {
            (n, true)
        } else if let Some(n) = file.strip_suffix(LOCKS_SUFFIX) {
            (n, false)
        } else {
            continue;
        };
        let entry = marks.entry(name.to_owned()).or_insert_with(|| PendingMark {
            name: name.to_owned(),
            mark: None,
            locks: None,
            unreadable: None,
        });
        let bytes = match target.get_bytes(&obj.key) {
            Ok(b) => b,
            Err(Error::NotFound { .. }) => continue, // removed meanwhile
            Err(e) => return Err(e),
        };
        let bad = |e: serde_json::Error| format!("{}: {e}", obj.key);
        if is_mark {
            match serde_json::from_slice::<Mark>(&bytes) {
                Ok(m) if m.format == 1 => entry.mark = Some(m),
                Ok(m) => entry.unreadable = Some(format!("{}: format {}", obj.key, m.format)),
                Err(e) => entry.unreadable = Some(bad(e)),
            }
        } else {
            match serde_json::from_slice::<MarkLocks>(&bytes) {
                Ok(l) => entry.locks = Some(l.locks),
                Err(e) => entry.unreadable = Some(bad(e)),
            }
        }
    }
    let mut out: Vec<PendingMark> = marks.into_values().collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// The chunks snapshots refer to: the first 128 bits of each id, sorted
/// (16 bytes a chunk, as the store's own index).
#[derive(Debug, Clone, Default)]
pub struct Referenced(Vec<u128>);

impl Referenced {
    /// Adds `ids`; the set stays sorted and without repeats, so chunks
    /// many snapshots share cost their 16 bytes once.
    pub fn extend<'a>(&mut self, ids: impl IntoIterator<Item = &'a ChunkId>) {
        let mut ids: Vec<u128> = ids.into_iter().map(prefix).collect();
        ids.sort_unstable();
        ids.dedup();
        if self.0.is_empty() {
            self.0 = ids;
            return;
        }
        let mut merged = Vec::with_capacity(self.0.len() + ids.len());
        let (mut a, mut b) = (self.0.iter().peekable(), ids.iter().peekable());
        loop {
            let next = match (a.peek(), b.peek()) {
                (Some(x), Some(y)) if x < y => a.next(),
                (Some(x), Some(y)) if x > y => b.next(),
                (Some(_), Some(_)) => {
                    b.next();
                    a.next()
                }
                (Some(_), None) => a.next(),
                (None, Some(_)) => b.next(),
                (None, None) => break,
            };
            merged.extend(next.copied());
        }
        self.0 = merged;
    }

    #[must_use]
    pub fn contains(&self, id: &ChunkId) -> bool {
        self.position(id).is_some()
    }

    /// Where `id` is in the set (for a table beside it).
    #[must_use]
    pub fn position(&self, id: &ChunkId) -> Option<usize> {
        self.0.binary_search(&prefix(id)).ok()
    }

    #[must_use]
    pub fn len(&self) -> usize {
        self.0.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A write or delete a prune is about to do; see [`ChunkStore::sweep`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PruneStep {
    /// `write` or `delete`.
    pub action: &'static str,
    pub key: String,
}

/// Called before every write and delete of a prune; an error stops the
/// prune there, leaving the repository as a crash at that moment would.
pub type StepHook<'a> = &'a mut dyn FnMut(&PruneStep) -> Result<()>;

/// What a sweep did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SweepReport {
    /// Packs deleted.
    pub packs_deleted: u64,
    /// Their bytes.
    pub bytes_deleted: u64,
    /// Marked packs kept because a snapshot committed after the mark uses
    /// a chunk only they hold.
    pub spared: Vec<String>,
    /// Index fragments written anew without the deleted packs.
    pub fragments_rewritten: u64,
}

/// Stored packs no snapshot refers to, and packs mostly unused.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Unused {
    /// Unused packs (name, size), sorted.
    pub packs: Vec<(String, u64)>,
    /// Packs whose unused share reaches the repack threshold, with only
    /// their used entries: their used chunks are copied into new packs,
    /// then they are marked too.
    pub repack: Vec<PackIndex>,
    /// Bytes of the packs to repack, and of their used records.
    pub repack_bytes: u64,
    pub repack_used_bytes: u64,
    /// Bytes of packs that are partly used and stay as they are.
    pub partly_used_bytes: u64,
}

/// What a repack wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Repacked {
    /// Packs whose used chunks all are in new packs now.
    pub emptied: Vec<String>,
    /// New packs written, and their bytes.
    pub packs_written: u64,
    pub bytes_written: u64,
}

impl ChunkStore {
    fn step(
        hook: &mut dyn FnMut(&PruneStep) -> Result<()>,
        action: &'static str,
        key: &str,
    ) -> Result<()> {
        hook(&PruneStep {
            action,
            key: key.to_owned(),
        })
    }

    /// Stored packs (name to size).
    fn stored_packs(&self) -> Result<HashMap<String, u64>> {
        Ok(self
            .target()
            .list(PACKS_PREFIX)?
            .into_iter()
            .filter_map(|o| Some((o.key.rsplit_once('/')?.1.to_owned(), o.size)))
            .collect())
    }

    /// The stored packs none of whose chunks `referenced` holds, except
    /// those in `already` (marked before); packs no fragment lists are
    /// unused too. A pack of which at least `repack_percent` percent of the
    /// bytes are unused is to be repacked.
    ///
    /// # Errors
    ///
    /// Listing or reading the index failed, or a fragment is damaged (a
    /// prune then deletes nothing: what it lists is unknown).
    pub fn unused_packs(
        &self,
        referenced: &Referenced,
        already: &HashSet<String>,
        repack_percent: u8,
    ) -> Result<Unused> {
        let stored = self.stored_packs()?;
        // A chunk stored twice (by two backups at once, or again after a
        // mark) is used in one pack only: one not marked already, and of
        // those the one using more chunks. That needs the counts first,
        // then an owner per used chunk (4 bytes a chunk, beside the 16 of
        // `referenced`).
        let mut number: HashMap<ChunkId, u32> = HashMap::new();
        // (not marked, used, all)
        let mut counts: Vec<(bool, u32, usize)> = Vec::new();
        self.each_keyed_fragment(&mut |_, packs| {
            for p in packs {
                let n = *number.entry(p.pack).or_insert_with(|| {
                    counts.push((!already.contains(&p.pack.to_hex()), 0, 0));
                    u32::try_from(counts.len() - 1).expect("fewer than 2^32 packs")
                });
                let c = &mut counts[n as usize];
                c.1 += u32::try_from(
                    p.entries
                        .iter()
                        .filter(|e| referenced.contains(&e.id))
                        .count(),
                )
                .unwrap_or(u32::MAX);
                c.2 += p.entries.len();
            }
        })?;
        let rank = |n: u32| {
            let c = counts[n as usize];
            (c.0, c.1)
        };
        // A fragment written since the first pass (by a backup running
        // now) is passed over: its packs were not stored when they were
        // listed, or are unindexed there and marked while the backup's
        // lock is listed with the mark.
        let mut owner = vec![u32::MAX; referenced.len()];
        self.each_keyed_fragment(&mut |_, packs| {
            for p in packs {
                let Some(&n) = number.get(&p.pack) else {
                    continue;
                };
                for e in &p.entries {
                    if let Some(at) = referenced.position(&e.id) {
                        let o = owner[at];
                        if o == u32::MAX || rank(n) > rank(o) {
                            owner[at] = n;
                        }
                    }
                }
            }
        })?;
        let mut used: HashMap<String, PackIndex> = HashMap::new();
        self.each_keyed_fragment(&mut |_, packs| {
            for p in packs {
                let Some(&n) = number.get(&p.pack) else {
                    continue;
                };
                let mine: Vec<_> = p
                    .entries
                    .iter()
                    .filter(|e| referenced.position(&e.id).is_some_and(|at| owner[at] == n))
                    .copied()
                    .collect();
                if !mine.is_empty() {
                    used.entry(p.pack.to_hex())
                        .or_insert_with(|| PackIndex {
                            pack: p.pack,
                            entries: Vec::new(),
                        })
                        .entries
                        .extend(mine);
                }
            }
        })?;
        let mut out = Unused {
            packs: stored
                .iter()
                .filter(|(name, _)| !used.contains_key(*name) && !already.contains(*name))
                .map(|(n, s)| (n.clone(), *s))
                .collect(),
            ..Unused::default()
        };
        out.packs.sort();
        let mut used: Vec<(String, PackIndex)> = used.into_iter().collect();
        used.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, mut p) in used {
            let Some(&size) = stored.get(&name) else {
                continue; // listed but missing: `check` reports it
            };
            p.entries.sort_by_key(|e| e.offset);
            p.entries.dedup();
            let all = number.get(&p.pack).map_or(0, |n| counts[*n as usize].2);
            if p.entries.len() == all {
                continue;
            }
            let used_bytes: u64 = p
                .entries
                .iter()
                .map(super::pack::PackEntry::record_len)
                .sum();
            let unused_share = 100 * size.saturating_sub(used_bytes) / size.max(1);
            if !already.contains(&name) && unused_share >= u64::from(repack_percent) {
                out.repack_bytes += size;
                out.repack_used_bytes += used_bytes;
                out.repack.push(p);
            } else {
                out.partly_used_bytes += size;
            }
        }
        Ok(out)
    }

    /// Copies the used chunks of `packs` (their records checked first) into
    /// new packs and index fragments, so that the old packs can be marked.
    /// A pack whose used records do not check is left out (kept whole;
    /// `check` reports it).
    ///
    /// # Errors
    ///
    /// A read or write failed; packs written so far are unindexed, and a
    /// later prune removes them.
    pub fn repack(&self, packs: &[PackIndex], hook: StepHook<'_>) -> Result<Repacked> {
        let mut out = Repacked::default();
        let mut builder = self.pack_builder();
        let mut written: Vec<PackIndex> = Vec::new();
        let mut copied: HashSet<ChunkId> = HashSet::new();
        let mut flush = |builder: &mut super::pack::PackBuilder,
                         out: &mut Repacked,
                         hook: &mut dyn FnMut(&PruneStep) -> Result<()>|
         -> Result<()> {
            if builder.is_empty() {
                return Ok(());
            }
            let built = builder.finish(self.hashers());
            let key = super::pack::pack_key(&built.id);
            Self::step(hook, "write", &key)?;
            self.target().put_bytes(&key, &built.bytes)?;
            out.packs_written += 1;
            out.bytes_written += built.bytes.len() as u64;
            written.push(PackIndex {
                pack: ChunkId::from_hex(&built.id)?,
                entries: built.entries,
            });
            Ok(())
        };
        for p in packs {
            let name = p.pack.to_hex();
            let bytes = self.target().get_bytes(&super::pack::pack_key(&name))?;
            let records: Option<Vec<(&super::pack::PackEntry, &[u8])>> = p
                .entries
                .iter()
                .map(|e| {
                    let start = e.offset as usize;
                    let end = start + usize::try_from(e.record_len()).ok()?;
                    let record = bytes.get(start..end)?;
                    self.open_record(e, record).ok()?;
                    Some((e, record))
                })
                .collect();
            let Some(records) = records else { continue };
            for (e, record) in records {
                if !copied.insert(e.id) {
                    continue;
                }
                builder
                    .add_compressed(e.id, e.raw_len as usize, &record[super::pack::HEADER_LEN..])
                    .map_err(|err| Error::io("repack", format!("chunk {}", e.id), err))?;
                if builder.is_full() {
                    flush(&mut builder, &mut out, hook)?;
                }
            }
            out.emptied.push(name);
        }
        flush(&mut builder, &mut out, hook)?;
        out.bytes_written +=
            self.write_fragments(written, &mut |key| Self::step(hook, "write", key))?;
        Ok(out)
    }

    /// Deletes the marked packs `doomed`, except those holding a chunk that
    /// `referenced` (read after every lock of the marks' time was gone)
    /// holds and no other pack does; see the module documentation for the
    /// order. `hook` is told of every write and delete first.
    ///
    /// # Errors
    ///
    /// Reading the index failed, or a write or delete did; whatever was
    /// done is safe, and the next sweep finishes it.
    pub fn sweep(
        &self,
        doomed: &HashSet<String>,
        referenced: &Referenced,
        hook: StepHook<'_>,
    ) -> Result<SweepReport> {
        let mut report = SweepReport::default();
        if doomed.is_empty() {
            return Ok(report);
        }
        // Chunks of doomed packs that snapshots use, and the fragments
        // that list doomed packs.
        let mut needed: HashMap<u128, Vec<String>> = HashMap::new();
        let mut affected: Vec<String> = Vec::new();
        self.each_keyed_fragment(&mut |key, packs| {
            let mut touches = false;
            for p in packs {
                let name = p.pack.to_hex();
                if !doomed.contains(&name) {
                    continue;
                }
                touches = true;
                for e in p.entries.iter().filter(|e| referenced.contains(&e.id)) {
                    needed.entry(prefix(&e.id)).or_default().push(name.clone());
                }
            }
            if touches {
                affected.push(key.to_owned());
            }
        })?;
        // Of those, the ones another (not doomed) pack also holds.
        if !needed.is_empty() {
            let mut elsewhere: HashSet<u128> = HashSet::new();
            self.each_keyed_fragment(&mut |_, packs| {
                for p in packs.iter().filter(|p| !doomed.contains(&p.pack.to_hex())) {
                    for e in &p.entries {
                        let k = prefix(&e.id);
                        if needed.contains_key(&k) {
                            elsewhere.insert(k);
                        }
                    }
                }
            })?;
            let mut spared: Vec<String> = needed
                .iter()
                .filter(|(k, _)| !elsewhere.contains(*k))
                .flat_map(|(_, packs)| packs.iter().cloned())
                .collect();
            spared.sort();
            spared.dedup();
            report.spared = spared;
        }
        let gone: HashSet<&String> = doomed
            .iter()
            .filter(|p| !report.spared.contains(p))
            .collect();
        for key in affected {
            let Some(packs) = self.read_fragment(&key)? else {
                continue;
            };
            let before = packs.len();
            let kept: Vec<PackIndex> = packs
                .into_iter()
                .filter(|p| !gone.contains(&p.pack.to_hex()))
                .collect();
            if kept.len() == before {
                continue;
            }
            if !kept.is_empty() {
                let bytes = index::encode(&kept);
                let new_key = format!("{INDEX_PREFIX}{}", self.sha256_hex(&bytes));
                Self::step(hook, "write", &new_key)?;
                self.target().put_bytes(&new_key, &bytes)?;
                report.fragments_rewritten += 1;
            }
            Self::step(hook, "delete", &key)?;
            delete_if_there(self.target().as_ref(), &key)?;
        }
        let stored = self.stored_packs()?;
        let mut gone: Vec<&String> = gone.into_iter().collect();
        gone.sort();
        for name in gone {
            let Some(size) = stored.get(name) else {
                continue;
            };
            let key = super::pack::pack_key(name);
            Self::step(hook, "delete", &key)?;
            delete_if_there(self.target().as_ref(), &key)?;
            report.packs_deleted += 1;
            report.bytes_deleted += size;
        }
        Ok(report)
    }
}

/// Writes a new mark for `packs` (names), then the locks live now except
/// `own_lock`; returns the mark.
///
/// # Errors
///
/// A write or listing failed; a mark without its locks object is removed
/// by the next prune.
pub fn write_mark(
    target: &dyn Target,
    packs: Vec<String>,
    own_lock: &str,
    hook: StepHook<'_>,
) -> Result<PendingMark> {
    let now = Utc::now();
    let name = format!(
        "{}-{:016x}",
        now.format("%Y%m%d%H%M%S"),
        crate::snapshot::random_u64()
    );
    let mark = Mark {
        format: 1,
        time: now,
        host: crate::lock::this_host(),
        packs,
    };
    let mut pending = PendingMark {
        name,
        mark: None,
        locks: None,
        unreadable: None,
    };
    let [mark_key, locks_key] = pending.keys();
    ChunkStore::step(hook, "write", &mark_key)?;
    target.create_new(
        &mark_key,
        &serde_json::to_vec(&mark).expect("a mark serializes"),
    )?;
    pending.mark = Some(mark);
    // Listed after the mark is stored: a backup whose lock is not listed
    // took it later, so it reads the mark.
    let now = Utc::now();
    let host = crate::lock::this_host();
    let mut locks: Vec<String> = crate::lock::list_locks(target)?
        .into_iter()
        .filter(|l| l.key != own_lock && !l.info.is_stale(now, &host))
        .map(|l| l.key)
        .collect();
    locks.sort();
    let body = MarkLocks { format: 1, locks };
    ChunkStore::step(hook, "write", &locks_key)?;
    target.create_new(
        &locks_key,
        &serde_json::to_vec(&body).expect("locks serialize"),
    )?;
    pending.locks = Some(body.locks);
    Ok(pending)
}

/// Removes a mark's objects (the locks object first: a mark without one is
/// an unfinished mark, which is safe).
///
/// # Errors
///
/// A delete failed.
pub fn remove_mark(target: &dyn Target, mark: &PendingMark, hook: StepHook<'_>) -> Result<()> {
    let [mark_key, locks_key] = mark.keys();
    for key in [locks_key, mark_key] {
        ChunkStore::step(hook, "delete", &key)?;
        delete_if_there(target, &key)?;
    }
    Ok(())
}

fn delete_if_there(target: &dyn Target, key: &str) -> Result<()> {
    match target.delete(key) {
        Ok(()) | Err(Error::NotFound { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}
