//! The check engine: is every snapshot whole and readable?
//!
//! Without `read_data`, each snapshot's metadata, object sizes and manifest
//! checksum are checked. With it (or a subset of it), every selected
//! snapshot's data is read and compared entry by entry with its manifest, as
//! a restore would.

use serde::{Deserialize, Serialize};

use crate::progress::{Cancel, Event, Progress};
use crate::repository::{Repository, SNAPSHOT_JSON};
use crate::snapshot::SnapshotMeta;
use crate::{Error, Result};

/// What to check.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CheckOptions {
    /// Read and verify all data.
    pub read_data: bool,
    /// Read and verify a subset: `n/t` (the n-th of t groups of snapshots) or
    /// `p%` (that share of snapshots, at random).
    pub read_data_subset: Option<String>,
    /// Limit the check to these snapshots (ids or prefixes); empty is all.
    pub snapshots: Vec<String>,
}

/// One thing found wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckProblem {
    pub snapshot: String,
    pub message: String,
}

/// What a check found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CheckReport {
    pub snapshots_checked: u64,
    pub snapshots_read: u64,
    /// Ids of the snapshots whose data was read and found whole.
    pub read: Vec<String>,
    pub problems: Vec<CheckProblem>,
    /// Unfinished snapshot directories (removed by the next backup).
    pub unfinished: Vec<String>,
    /// In a deduplicated repository: what the check of the chunk store
    /// (index fragments and packs) found; its damage is in
    /// [`CheckReport::repository_problems`] too.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chunks: Option<crate::dedup::ChunkCheck>,
    /// Damage that is not one snapshot's: index fragments and packs.
    pub repository_problems: Vec<String>,
}

impl CheckReport {
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty() && self.repository_problems.is_empty()
    }
}

/// A parsed `--read-data-subset`.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Subset {
    All,
    Group { n: u64, of: u64 },
    Share(f64),
}

fn parse_subset(opts: &CheckOptions) -> Result<Option<Subset>> {
    let Some(s) = opts.read_data_subset.as_deref() else {
        return Ok(opts.read_data.then_some(Subset::All));
    };
    let bad = || {
        Error::InvalidInput(format!(
            "read-data-subset {s:?}: expected n/t (1 <= n <= t) or a percentage like 10%"
        ))
    };
    if let Some(p) = s.strip_suffix('%') {
        let p: f64 = p.trim().parse().map_err(|_| bad())?;
        if !(p > 0.0 && p <= 100.0) {
            return Err(bad());
        }
        return Ok(Some(Subset::Share(p / 100.0)));
    }
    let (n, of) = s.split_once('/').ok_or_else(bad)?;
    let n: u64 = n.trim().parse().map_err(|_| bad())?;
    let of: u64 = of.trim().parse().map_err(|_| bad())?;
    if n == 0 || of == 0 || n > of {
        return Err(bad());
    }
    Ok(Some(Subset::Group { n, of }))
}

/// A stable group number for an id (FNV-1a), so `1/3`, `2/3`, `3/3` cover
/// every snapshot exactly once across three runs.
fn group_of(id: &str, of: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h % of
}

impl Repository {
    /// Checks the repository; problems are collected, not returned as errors,
    /// so one damaged snapshot does not hide another.
    pub fn check(
        &self,
        opts: &CheckOptions,
        progress: &dyn Progress,
        cancel: &Cancel,
    ) -> Result<CheckReport> {
        let subset = parse_subset(opts)?;
        let _lock = self.lock_read()?;
        progress.event(&Event::Started {
            operation: "check",
            snapshot: None,
        });
        let started = std::time::Instant::now();
        let mut report = CheckReport {
            unfinished: self.unfinished()?,
            ..CheckReport::default()
        };

        let ids: Vec<String> = if opts.snapshots.is_empty() {
            self.committed_ids()?
        } else {
            opts.snapshots
                .iter()
                .map(|s| self.find_snapshot(s).map(|m| m.id))
                .collect::<Result<_>>()?
        };
        let selected = select(&ids, subset);
        // In a deduplicated repository, which chunks the index lists: every
        // chunk a snapshot refers to must be one of them.
        let store = if self.dedup().is_some() {
            let mut store = self.chunk_store(false)?;
            match store.load_index() {
                Ok(()) => Some(store),
                Err(Error::Integrity { snapshot, detail }) => {
                    report
                        .repository_problems
                        .push(format!("{snapshot}: {detail}"));
                    None
                }
                Err(e) => return Err(e),
            }
        } else {
            None
        };
        for id in &ids {
            cancel.check()?;
            report.snapshots_checked += 1;
            let read = selected.contains(id);
            let outcome = self.load_snapshot(id).and_then(|meta| {
                self.check_structure(&meta)?;
                if let Some(store) = &store {
                    self.check_chunks_indexed(&meta, store)?;
                }
                if read {
                    self.read_snapshot(&meta, &mut |_, _| cancel.check(), &mut |_| {}, cancel)?;
                }
                Ok(meta)
            });
            match outcome {
                Ok(meta) => {
                    if read {
                        report.snapshots_read += 1;
                        report.read.push(meta.id.clone());
                    }
                    progress.event(&Event::File {
                        path: meta.id,
                        bytes: if read { meta.size_bytes } else { 0 },
                    });
                }
                Err(Error::Cancelled) => return Err(Error::Cancelled),
                Err(e) => {
                    let message = match e {
                        Error::Integrity { detail, .. } => detail,
                        other => error_chain(&other),
                    };
                    progress.event(&Event::Warning {
                        path: id.clone(),
                        message: message.clone(),
                    });
                    report.problems.push(CheckProblem {
                        snapshot: id.clone(),
                        message,
                    });
                }
            }
        }
        if let Some(store) = &store {
            cancel.check()?;
            // Every pack is read only for a whole --read-data; a subset
            // reads the chunks of its snapshots.
            let found = store.check(subset == Some(Subset::All))?;
            for p in &found.problems {
                progress.event(&Event::Warning {
                    path: "repository".into(),
                    message: p.clone(),
                });
            }
            report
                .repository_problems
                .extend(found.problems.iter().cloned());
            report.chunks = Some(found);
        }
        progress.event(&Event::Finished {
            operation: "check",
            files: report.snapshots_checked,
            bytes: 0,
            warnings: (report.problems.len() + report.repository_problems.len()) as u64,
            seconds: started.elapsed().as_secs_f64(),
        });
        Ok(report)
    }

    /// Ids of every directory with a `snapshot.json`, parseable or not.
    fn committed_ids(&self) -> Result<Vec<String>> {
        let mut ids: Vec<String> = self
            .target()
            .list(crate::repository::SNAPSHOTS_PREFIX)?
            .into_iter()
            .filter_map(|o| {
                let rest = o.key.strip_prefix(crate::repository::SNAPSHOTS_PREFIX)?;
                let (id, name) = rest.split_once('/')?;
                (name == SNAPSHOT_JSON).then(|| id.to_owned())
            })
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// Objects present with their recorded sizes; the manifest's checksum.
    fn check_structure(&self, meta: &SnapshotMeta) -> Result<()> {
        let integrity = |detail: String| Error::Integrity {
            snapshot: meta.id.clone(),
            detail,
        };
        if meta.data_object().is_none() {
            return Err(integrity("snapshot.json names no data object".into()));
        }
        for rec in &meta.objects {
            let key = Repository::key(&meta.id, &rec.name);
            match self.target().stat(&key) {
                Ok(o) if o.size == rec.size => {}
                Ok(o) => {
                    return Err(integrity(format!(
                        "{} has {} bytes, {} were stored",
                        rec.name, o.size, rec.size
                    )));
                }
                Err(Error::NotFound { .. }) => {
                    return Err(integrity(format!("{} is missing", rec.name)));
                }
                Err(e) => return Err(e),
            }
        }
        // Checks SHA256SUMS against snapshot.json first.
        self.list_entries(meta, &mut |_| Ok(()))
    }
}

impl Repository {
    /// A deduplicated snapshot's chunk list is whole and every chunk it
    /// lists is in the index.
    fn check_chunks_indexed(
        &self,
        meta: &SnapshotMeta,
        store: &crate::dedup::ChunkStore,
    ) -> Result<()> {
        if meta.dedup.is_none() {
            return Ok(());
        }
        let chunks = self.read_chunk_list(meta)?;
        let missing: Vec<&crate::dedup::ChunkId> = chunks
            .iter()
            .map(|(id, _)| id)
            .filter(|id| !store.contains(id))
            .collect();
        if let Some(first) = missing.first() {
            return Err(Error::Integrity {
                snapshot: meta.id.clone(),
                detail: format!(
                    "{} of its {} chunks are in no index fragment (the first: {first})",
                    missing.len(),
                    chunks.len()
                ),
            });
        }
        let listed: u64 = chunks.iter().map(|(_, len)| u64::from(*len)).sum();
        let info = meta.dedup.as_ref().expect("checked above");
        if listed != info.stream_bytes || chunks.len() as u64 != info.chunks {
            return Err(Error::Integrity {
                snapshot: meta.id.clone(),
                detail: format!(
                    "its chunk list holds {} chunks of {listed} bytes, snapshot.json records {} of {}",
                    chunks.len(),
                    info.chunks,
                    info.stream_bytes
                ),
            });
        }
        Ok(())
    }
}

fn select(ids: &[String], subset: Option<Subset>) -> Vec<String> {
    match subset {
        None => Vec::new(),
        Some(Subset::All) => ids.to_vec(),
        Some(Subset::Group { n, of }) => ids
            .iter()
            .filter(|id| group_of(id, of) == n - 1)
            .cloned()
            .collect(),
        Some(Subset::Share(p)) => {
            let want = ((ids.len() as f64) * p).ceil() as usize;
            let mut shuffled: Vec<(u64, &String)> = ids
                .iter()
                .map(|id| (crate::snapshot::random_u64(), id))
                .collect();
            shuffled.sort();
            shuffled
                .into_iter()
                .take(want)
                .map(|(_, id)| id.clone())
                .collect()
        }
    }
}

/// An error and its causes in one line. A cause whose text the line
/// already holds (libraries that print their source in `Display`) is not
/// repeated.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let text = c.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_chain_joins_causes_once() {
        let e = Error::io("read", "a/b", std::io::Error::other("disk on fire"));
        assert_eq!(error_chain(&e), "read a/b: disk on fire");
        // A cause already in the message (a library printing its source) is
        // not repeated.
        let e = Error::Backend {
            backend: "s3://b".into(),
            message: "list: timed out".into(),
            source: Some(Box::new(std::io::Error::other("timed out"))),
        };
        assert_eq!(error_chain(&e), "s3://b: list: timed out");
    }

    #[test]
    fn subsets_partition_the_snapshots() {
        let ids: Vec<String> = (0..50).map(|i| format!("id{i}")).collect();
        let mut seen = Vec::new();
        for n in 1..=3 {
            seen.extend(select(&ids, Some(Subset::Group { n, of: 3 })));
        }
        seen.sort();
        let mut all = ids.clone();
        all.sort();
        assert_eq!(seen, all);
        assert_eq!(select(&ids, Some(Subset::Share(0.1))).len(), 5);
        let opts = |s: &str| CheckOptions {
            read_data_subset: Some(s.into()),
            ..CheckOptions::default()
        };
        assert!(parse_subset(&opts("0/3")).is_err());
        assert!(parse_subset(&opts("4/3")).is_err());
        assert!(parse_subset(&opts("150%")).is_err());
        assert_eq!(
            parse_subset(&opts("2/5")).unwrap(),
            Some(Subset::Group { n: 2, of: 5 })
        );
    }
}
