//! Mirrors: a plain, browsable copy of one or more trees at another place,
//! moving only what changed, with the guarantees of snapshots.
//!
//! [`mirror`] makes a destination [`Tree`] hold what its sources hold:
//!
//! 1. The sources and the destination are walked in canonical order and
//!    merged with the destination record ([`record`]), one path at a time,
//!    so memory stays flat for millions of files.
//! 2. Each path is decided: copy (new), update (changed), skip (unchanged,
//!    or the destination is newer with `update`), make a directory or a
//!    link, or extraneous (deleted only with `delete`). The quick check
//!    compares size and mtime within the coarser precision of the two trees
//!    (or `modify_window`); `checksum` compares content.
//! 3. Copies run on `transfers` threads. Every file is written under a
//!    temporary name and renamed into place whole; a file that changes or
//!    cannot be read while copied is named in [`MirrorSummary::failed`] and
//!    copied by the next run.
//! 4. Deletions come last, after every copy, and only when the whole plan
//!    passes the guards: the sources were read without errors and the
//!    number of deletions is within `max_delete`. An empty or missing
//!    source never deletes anything.
//! 5. The record is rewritten (when something changed), and `verify` reads
//!    the result back ([`verify`]).
//!
//! Frontends open trees through the [`crate::Registry`] and call [`mirror`]
//! and [`verify()`]; later engines (jobs, session layouts, device pulls) use
//! the same two calls.

mod copy;
pub mod lock;
mod plan;
pub mod record;
mod run;
mod stream;
mod verify;

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::source::Excludes;
use crate::tree::Tree;

pub use run::mirror;
pub use verify::{Difference, VerifyReport, verify, verify_observed};

/// A source of a mirror: a tree, and where its entries go below the
/// destination root (`""` for a single source directory, whose contents
/// become the destination's).
#[derive(Debug, Clone)]
pub struct MirrorSource {
    pub prefix: String,
    pub tree: Arc<dyn Tree>,
}

impl MirrorSource {
    pub fn new(prefix: impl Into<String>, tree: Arc<dyn Tree>) -> Self {
        Self {
            prefix: prefix.into(),
            tree,
        }
    }
}

/// The sources as a mirror takes them from a command line: one source
/// directory's contents become the destination's (as `rclone sync`);
/// a single file, or each of several sources, goes to a directory entry of
/// its own name (its last path component).
///
/// # Errors
///
/// [`crate::Error::NotFound`] for a source that does not exist.
pub fn sources_for(trees: Vec<Arc<dyn Tree>>) -> crate::Result<Vec<MirrorSource>> {
    let single = trees.len() == 1;
    let mut out = Vec::with_capacity(trees.len());
    for tree in trees {
        let Some(root) = tree.root()? else {
            return Err(crate::Error::NotFound {
                what: "mirror source",
                path: tree.location(),
            });
        };
        let prefix = if single && root.kind == crate::tree::EntryKind::Dir {
            String::new()
        } else {
            let path = tree.root_path();
            let name = path.trim_end_matches('/').rsplit('/').next().unwrap_or("");
            if name.is_empty() || name == "." || name == ".." {
                return Err(crate::Error::InvalidInput(format!(
                    "the source {} has no name to give its directory in the destination",
                    tree.location()
                )));
            }
            name.to_owned()
        };
        out.push(MirrorSource::new(prefix, tree));
    }
    Ok(out)
}

/// A cap on deletions, checked against the whole plan before the first one.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MaxDelete {
    /// At most this many entries.
    Count(u64),
    /// At most this percentage of the destination's entries.
    Percent(f64),
}

impl std::str::FromStr for MaxDelete {
    type Err = crate::Error;

    fn from_str(s: &str) -> crate::Result<Self> {
        let bad = || {
            crate::Error::InvalidInput(format!(
                "delete limit {s:?} is neither a count (100) nor a percentage (10%)"
            ))
        };
        match s.trim().strip_suffix('%') {
            Some(p) => {
                let p: f64 = p.trim().parse().map_err(|_| bad())?;
                if !(0.0..=100.0).contains(&p) {
                    return Err(bad());
                }
                Ok(Self::Percent(p))
            }
            None => s.trim().parse().map(Self::Count).map_err(|_| bad()),
        }
    }
}

/// A bandwidth limit as users write it (rclone's and rsync's form): a
/// number of KiB per second, or with a suffix `B`, `K`, `M`, `G` (powers of
/// 1024): `500` and `500K` are 500 KiB/s, `10M` 10 MiB/s.
pub fn parse_rate(s: &str) -> crate::Result<u64> {
    let t = s.trim();
    let bad = || {
        crate::Error::InvalidInput(format!(
            "bandwidth limit {s:?} is not a rate such as 500K, 10M or 1G (per second)"
        ))
    };
    let (num, scale) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let scale: u64 = match c.to_ascii_uppercase() {
                'B' => 1,
                'K' => 1 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                _ => return Err(bad()),
            };
            (&t[..i], scale)
        }
        _ => (t, 1 << 10),
    };
    let v: f64 = num.trim().parse().map_err(|_| bad())?;
    if !v.is_finite() || v <= 0.0 {
        return Err(bad());
    }
    Ok(((v * scale as f64) as u64).max(1))
}

/// How a mirror is checked after it is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum VerifyMode {
    /// Every source file is present (and, with `exact`, nothing else).
    Count,
    /// ... with the same size.
    Size,
    /// ... with the same content: both sides read and hashed.
    Checksum,
    /// Sizes, plus the content of this many files picked at random.
    Sample(usize),
}

impl std::str::FromStr for VerifyMode {
    type Err = crate::Error;

    fn from_str(s: &str) -> crate::Result<Self> {
        match s {
            "count" => Ok(Self::Count),
            "size" => Ok(Self::Size),
            "checksum" => Ok(Self::Checksum),
            _ => match s.strip_prefix("sample:").map(str::parse::<usize>) {
                Some(Ok(n)) if n > 0 => Ok(Self::Sample(n)),
                _ => Err(crate::Error::InvalidInput(format!(
                    "verify mode {s:?} is not count, size, checksum or sample:N (N > 0)"
                ))),
            },
        }
    }
}

/// What a mirror does.
#[derive(Debug, Clone, Default)]
pub struct MirrorOptions {
    pub excludes: Excludes,
    /// Delete destination entries that are not in the sources.
    pub delete: bool,
    pub max_delete: Option<MaxDelete>,
    /// Never overwrite a destination file that is newer than the source's.
    pub update: bool,
    /// Compare content instead of size and mtime.
    pub checksum: bool,
    /// Overrides the automatic mtime tolerance (the coarser precision of
    /// the two trees).
    pub modify_window: Option<Duration>,
    /// A directory relative to the destination root that replaced and
    /// deleted files are moved to instead of being destroyed.
    pub backup_dir: Option<String>,
    /// Plan and report, write nothing.
    pub dry_run: bool,
    /// Parallel copies; `None` is the destination's own default.
    pub transfers: Option<usize>,
    /// At most this many bytes per second, for all copies together.
    pub bwlimit: Option<u64>,
    /// Ask the destination for every file's own metadata (one request per
    /// file on an object store) instead of trusting its listing and the
    /// record to stand for it.
    pub full_scan: bool,
    /// Check the result afterwards.
    pub verify: Option<VerifyMode>,
}

/// A file that could not be mirrored (the rest of the run went on).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

/// What a mirror did (or, for a dry run, would do).
#[derive(Debug, Clone, Default, Serialize)]
pub struct MirrorSummary {
    pub destination: String,
    pub dry_run: bool,
    /// Files new at the destination.
    pub copied: u64,
    /// Files replaced because they changed.
    pub updated: u64,
    /// Entries removed from the destination (or moved to the backup dir).
    pub deleted: u64,
    /// Files already up to date.
    pub unchanged: u64,
    /// Files left alone for another reason (the destination is newer, a
    /// symlink the destination cannot keep); each also gives an event.
    pub skipped: u64,
    /// Destination entries not in the sources, kept (no `delete`).
    pub extraneous: u64,
    pub dirs_created: u64,
    pub links: u64,
    /// Bytes copied.
    pub bytes: u64,
    /// Leftovers of interrupted runs removed.
    pub cleaned: u64,
    /// The mtime tolerance used, in nanoseconds.
    pub modify_window_ns: u64,
    /// The bulk transport that moved files (`rsync`), if one did; `None`
    /// when files were copied one by one.
    pub transport: Option<String>,
    /// Files the bulk transport moved.
    pub transport_files: u64,
    /// Files that could not be mirrored as they were: the run is partial.
    pub failed: Vec<Problem>,
    /// Things worth knowing that do not make the run partial (a symlink
    /// skipped, a damaged record ignored).
    pub notices: Vec<Problem>,
    /// Why deletions were refused, if they were: nothing was deleted.
    pub refused: Option<String>,
    pub verify: Option<VerifyReport>,
    pub seconds: f64,
}

impl MirrorSummary {
    /// Whether the destination now matches the sources in full.
    pub fn is_complete(&self) -> bool {
        self.failed.is_empty()
            && self.refused.is_none()
            && self.verify.as_ref().is_none_or(VerifyReport::matches)
    }
}
