//! Checks that a destination holds what its sources hold: every file
//! present, of the same size, and (for `checksum` and `sample:N`) of the
//! same content, read back from both sides.

use std::time::Instant;

use serde::Serialize;

use crate::hash::Hashers;
use crate::mirror::copy::hash_file;
use crate::mirror::run::{backup_dirs, source_roots};
use crate::mirror::stream::{self, Ordered, Pair, Walk};
use crate::mirror::{MirrorSource, VerifyMode};
use crate::progress::{Cancel, Event, Progress};
use crate::source::Excludes;
use crate::tree::{EntryKind, Tree, TreeEntry, cmp_paths};
use crate::{Error, Result};

/// A file that is not as it should be at the destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Difference {
    pub path: String,
    pub reason: String,
}

/// What a verification found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct VerifyReport {
    pub destination: String,
    pub mode: String,
    /// Source files checked.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Files whose content was read from both sides and compared.
    pub hashed: u64,
    /// Files found at the destination (the mirror's own state left out).
    pub dest_files: u64,
    /// Their bytes.
    pub dest_bytes: u64,
    /// Source files absent from the destination.
    pub missing: Vec<String>,
    /// Destination files not in the sources.
    pub extra: Vec<String>,
    /// Whether extra files count as a mismatch (a mirror that deletes).
    pub exact: bool,
    /// Files present on both sides that differ.
    pub different: Vec<Difference>,
    /// Source entries that could not be read.
    pub unreadable: Vec<Difference>,
    pub seconds: f64,
}

impl VerifyReport {
    /// Whether the destination holds every source file as it is.
    pub fn matches(&self) -> bool {
        self.missing.is_empty()
            && self.different.is_empty()
            && self.unreadable.is_empty()
            && (!self.exact || self.extra.is_empty())
    }

    /// One line naming what differs, for an error message.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        let name = |v: &[String]| v.first().cloned().unwrap_or_default();
        if !self.missing.is_empty() {
            parts.push(format!(
                "{} missing (first {:?})",
                self.missing.len(),
                name(&self.missing)
            ));
        }
        if !self.different.is_empty() {
            parts.push(format!(
                "{} different (first {:?}: {})",
                self.different.len(),
                self.different[0].path,
                self.different[0].reason
            ));
        }
        if self.exact && !self.extra.is_empty() {
            parts.push(format!(
                "{} extra (first {:?})",
                self.extra.len(),
                name(&self.extra)
            ));
        }
        if !self.unreadable.is_empty() {
            parts.push(format!(
                "{} unreadable in the source (first {:?})",
                self.unreadable.len(),
                self.unreadable[0].path
            ));
        }
        parts.join(", ")
    }
}

/// Compares `dest` with `sources` (see the module docs). `exact` makes
/// extra destination files a mismatch.
///
/// # Errors
///
/// [`Error::NotFound`] for a missing source or destination,
/// [`Error::Cancelled`], and errors reading the destination. Differences
/// are not errors: they are in the report ([`VerifyReport::matches`]).
#[allow(clippy::too_many_arguments)]
pub fn verify(
    sources: &[MirrorSource],
    dest: &dyn Tree,
    excludes: &Excludes,
    mode: VerifyMode,
    exact: bool,
    hashers: &dyn Hashers,
    progress: &dyn Progress,
    cancel: &Cancel,
) -> Result<VerifyReport> {
    verify_observed(
        sources,
        dest,
        excludes,
        mode,
        exact,
        hashers,
        &mut |_| {},
        progress,
        cancel,
    )
}

/// [`verify`], with `observe` shown every source file as the walk meets
/// it, so that a caller that also wants to count or classify the source
/// (a status table) needs no second walk.
///
/// # Errors
///
/// As [`verify`].
#[allow(clippy::too_many_arguments)]
pub fn verify_observed(
    sources: &[MirrorSource],
    dest: &dyn Tree,
    excludes: &Excludes,
    mode: VerifyMode,
    exact: bool,
    hashers: &dyn Hashers,
    observe: &mut dyn FnMut(&TreeEntry),
    progress: &dyn Progress,
    cancel: &Cancel,
) -> Result<VerifyReport> {
    let started = Instant::now();
    let mut sources = sources.to_vec();
    sources.sort_by(|a, b| cmp_paths(&a.prefix, &b.prefix));
    let roots = source_roots(&sources)?;
    if !matches!(dest.root()?, Some(r) if r.kind == EntryKind::Dir) {
        return Err(Error::NotFound {
            what: "mirror destination",
            path: dest.location(),
        });
    }
    progress.event(&Event::Started {
        operation: "verify",
        snapshot: None,
    });
    let skips: Vec<stream::Skip> = sources
        .iter()
        .map(|s| stream::source_skip(s.tree.as_ref(), excludes))
        .collect();
    let dest_skip = stream::dest_skip(dest, excludes, backup_dirs(dest, None, true)?);
    let src = stream::sources(&sources, &roots, &skips)?;
    let dest_walk: Walk<'_> = Box::new(Ordered::new(
        stream::without_state(dest.walk(dest_skip.as_ref())?),
        "the destination",
    ));
    let mut check = Checker {
        sources: &sources,
        dest,
        hashers,
        cancel,
        mode,
        observe,
        sample: Vec::new(),
        seen: 0,
        report: VerifyReport {
            destination: dest.location(),
            mode: match mode {
                VerifyMode::Count => "count".into(),
                VerifyMode::Size => "size".into(),
                VerifyMode::Checksum => "checksum".into(),
                VerifyMode::Sample(n) => format!("sample:{n}"),
            },
            exact,
            ..VerifyReport::default()
        },
    };
    stream::pair_up(src, dest_walk, &mut |pair| check.pair(pair))?;
    for (source, rel, path) in std::mem::take(&mut check.sample) {
        check.compare_content(source, &rel, &path)?;
    }
    let mut report = check.report;
    report.seconds = started.elapsed().as_secs_f64();
    progress.event(&Event::Finished {
        operation: "verify",
        files: report.files,
        bytes: report.bytes,
        warnings: (report.missing.len() + report.different.len()) as u64,
        seconds: report.seconds,
    });
    Ok(report)
}

/// The comparison, one path at a time.
struct Checker<'a> {
    sources: &'a [MirrorSource],
    dest: &'a dyn Tree,
    hashers: &'a dyn Hashers,
    cancel: &'a Cancel,
    mode: VerifyMode,
    observe: &'a mut dyn FnMut(&TreeEntry),
    /// Files to hash for `sample:N`: a uniform random sample (reservoir).
    sample: Vec<(usize, String, String)>,
    seen: u64,
    report: VerifyReport,
}

impl Checker<'_> {
    fn pair(&mut self, pair: Pair) -> Result<()> {
        self.cancel.check()?;
        let report = &mut self.report;
        match pair {
            Pair::Unreadable { path, message } => report.unreadable.push(Difference {
                path,
                reason: message,
            }),
            Pair::Source((_, _, e)) if e.kind == EntryKind::File => {
                (self.observe)(&e);
                report.files += 1;
                report.bytes += e.size;
                report.missing.push(e.path);
            }
            Pair::Dest(d) if d.kind == EntryKind::File => {
                report.dest_files += 1;
                report.dest_bytes += d.size;
                report.extra.push(d.path);
            }
            Pair::Both((source, rel, e), d) if e.kind == EntryKind::File => {
                (self.observe)(&e);
                if d.kind == EntryKind::File {
                    report.dest_files += 1;
                    report.dest_bytes += d.size;
                }
                report.files += 1;
                report.bytes += e.size;
                if d.kind != EntryKind::File {
                    report.different.push(Difference {
                        path: e.path,
                        reason: "not a file at the destination".into(),
                    });
                } else if self.mode != VerifyMode::Count && e.size != d.size {
                    report.different.push(size_differs(&e, &d));
                } else if self.mode == VerifyMode::Checksum {
                    self.compare_content(source, &rel, &e.path)?;
                } else if let VerifyMode::Sample(n) = self.mode {
                    self.seen += 1;
                    let item = (source, rel, e.path);
                    if self.sample.len() < n {
                        self.sample.push(item);
                    } else {
                        let j = (crate::snapshot::random_u64() % self.seen) as usize;
                        if j < n {
                            self.sample[j] = item;
                        }
                    }
                }
            }
            Pair::Both(_, d) if d.kind == EntryKind::File => {
                report.dest_files += 1;
                report.dest_bytes += d.size;
            }
            _ => {}
        }
        Ok(())
    }

    /// Reads both sides of one file and compares their BLAKE3.
    fn compare_content(&mut self, source: usize, rel: &str, path: &str) -> Result<()> {
        let report = &mut self.report;
        let src_hash = match hash_file(
            self.sources[source].tree.as_ref(),
            rel,
            self.hashers,
            self.cancel,
        ) {
            Ok(h) => h,
            Err(Error::Cancelled) => return Err(Error::Cancelled),
            Err(e) => {
                report.unreadable.push(Difference {
                    path: path.to_owned(),
                    reason: crate::check::error_chain(&e),
                });
                return Ok(());
            }
        };
        let dest_hash = match hash_file(self.dest, path, self.hashers, self.cancel) {
            Ok(h) => h,
            Err(Error::Cancelled) => return Err(Error::Cancelled),
            Err(e) => {
                report.different.push(Difference {
                    path: path.to_owned(),
                    reason: format!("cannot be read back: {}", crate::check::error_chain(&e)),
                });
                return Ok(());
            }
        };
        report.hashed += 1;
        if src_hash != dest_hash {
            report.different.push(Difference {
                path: path.to_owned(),
                reason: "content differs (BLAKE3)".into(),
            });
        }
        Ok(())
    }
}

fn size_differs(e: &TreeEntry, d: &TreeEntry) -> Difference {
    Difference {
        path: e.path.clone(),
        reason: format!(
            "size {} at the destination, {} in the source",
            d.size, e.size
        ),
    }
}
