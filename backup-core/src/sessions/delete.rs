//! Verified safe delete of a session's local files.
//!
//! # Contract
//!
//! - [`verify_for_delete`] decides from scratch, reading both sides: the
//!   external check passes, the backup is there, every source file is at
//!   the destination with its size, and the content of a random sample
//!   (or of every file) read back from the destination equals the source.
//!   Callers run it again right before [`delete`], never trusting an
//!   earlier status.
//! - [`delete`] removes only the files that verification saw, and only if
//!   each still has the size and mtime it had then: a file that appeared
//!   or changed afterwards is kept and reported.
//! - Before the first file goes, an audit record (time, host, user,
//!   session, source, destination, files, bytes, hashes, the external
//!   check's result) is appended to the local audit log and stored at the
//!   destination; if either cannot be written, nothing is deleted.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::sessions::config::{SessionDestination, SessionSet};
use crate::sessions::layout::Session;
use crate::sessions::ops;
use crate::sessions::status::{self, Check};
use crate::tree::{EntryKind, FileAttrs, Tree, Walked};
use crate::{Cancel, Error, Registry, Result};

/// A source file as verification saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SeenFile {
    pub path: String,
    pub size: u64,
    pub mtime_ns: Option<i64>,
    /// BLAKE3 of the content, for the files whose content was compared.
    pub blake3: Option<String>,
}

/// The outcome of [`verify_for_delete`].
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub session: String,
    pub source: String,
    pub place: String,
    pub files: Vec<SeenFile>,
    pub bytes: u64,
    pub checks: Vec<Check>,
    pub safe: bool,
}

impl Verdict {
    /// `Ok` for a safe verdict, else [`Error::Refused`] with the reasons.
    ///
    /// # Errors
    ///
    /// As said.
    pub fn ensure_safe(&self) -> Result<()> {
        if self.safe {
            Ok(())
        } else {
            Err(Error::Refused {
                reason: format!("{} is not safe to delete: {}", self.session, self.reasons()),
            })
        }
    }

    /// Why it is not safe, one line.
    pub fn reasons(&self) -> String {
        self.checks
            .iter()
            .filter(|c| !c.ok)
            .map(|c| format!("{}: {}", c.name, c.reason))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// Checks, from scratch, whether `session` may be deleted (see the module
/// contract); `sample` files' content is compared (0: all of them).
pub fn verify_for_delete(
    registry: &Registry,
    set: &SessionSet,
    dest: &SessionDestination,
    session: &Session,
    sample: usize,
    cancel: &Cancel,
) -> Verdict {
    let st = status::status(registry, set, dest, session, cancel);
    let mut checks = st.checks.clone();
    let mut files = Vec::new();
    if st.safe {
        match content_check(registry, set, dest, session, sample, cancel) {
            Ok((seen, mismatched)) => {
                let compared = seen.iter().filter(|f| f.blake3.is_some()).count();
                checks.push(Check {
                    name: "content",
                    ok: mismatched.is_empty(),
                    reason: if mismatched.is_empty() {
                        format!("{compared} file(s) read back from the destination, equal")
                    } else {
                        format!("differs at the destination: {}", mismatched.join(", "))
                    },
                });
                files = seen;
            }
            Err(e) => checks.push(Check {
                name: "content",
                ok: false,
                reason: format!("cannot compare: {}", crate::error_chain(&e)),
            }),
        }
    }
    let safe = st.safe && checks.iter().all(|c| c.ok);
    Verdict {
        session: session.path.clone(),
        source: st.source,
        place: st.place,
        bytes: files.iter().map(|f| f.size).sum(),
        files,
        checks,
        safe,
    }
}

/// Every source file (walked now), the sample's content hashed on both
/// sides; returns the files and the paths whose content differs.
fn content_check(
    registry: &Registry,
    set: &SessionSet,
    dest: &SessionDestination,
    session: &Session,
    sample: usize,
    cancel: &Cancel,
) -> Result<(Vec<SeenFile>, Vec<String>)> {
    let src_path = set.source.join(&session.path);
    let source = registry.open_tree(
        &src_path.display().to_string(),
        &crate::TargetOptions::new(),
    )?;
    let place = ops::place_tree(registry, dest, session)?;
    let excludes = crate::source::Excludes::new(&set.excludes)?;
    let skip = |p: &str, _: EntryKind| excludes.is_excluded(Path::new(p));
    let mut seen = Vec::new();
    for w in source.walk(&skip)? {
        if let Walked::Entry(e) = w?
            && e.kind == EntryKind::File
        {
            seen.push(SeenFile {
                path: e.path,
                size: e.size,
                mtime_ns: e.mtime_ns,
                blake3: None,
            });
        }
    }
    let picked = pick(seen.len(), sample);
    let hashers = registry.hashers()?;
    let mut mismatched = Vec::new();
    for i in picked {
        cancel.check()?;
        let f = &mut seen[i];
        let here = hash(source.as_ref(), &f.path, hashers.as_ref())?;
        let there = hash(place.as_ref(), &f.path, hashers.as_ref());
        match there {
            Ok(h) if h == here => f.blake3 = Some(here),
            _ => mismatched.push(f.path.clone()),
        }
    }
    Ok((seen, mismatched))
}

/// Which of `n` files to compare: `k` picked at random, or all (`k` 0 or
/// at least `n`).
fn pick(n: usize, k: usize) -> Vec<usize> {
    if k == 0 || k >= n {
        return (0..n).collect();
    }
    // A small xorshift seeded from the clock: the sample only has to be
    // unpredictable to whoever damaged the backup, not cryptographic.
    let mut x = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(7) as u64 | 1;
    let mut all: Vec<usize> = (0..n).collect();
    for i in 0..k {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let j = i + (x as usize) % (n - i);
        all.swap(i, j);
    }
    all.truncate(k);
    all.sort_unstable();
    all
}

fn hash(tree: &dyn Tree, path: &str, hashers: &dyn crate::hash::Hashers) -> Result<String> {
    let mut r = tree.open(path)?;
    let mut h = hashers.blake3();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = r
            .read(&mut buf)
            .map_err(|e| Error::io("read", path.to_owned(), e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finish_hex())
}

/// What [`delete`] did.
#[derive(Debug, Clone, Serialize)]
pub struct Deleted {
    pub session: String,
    pub files: u64,
    pub bytes: u64,
    /// Files still in the session: new since verification, or changed
    /// since; kept.
    pub kept: Vec<String>,
    /// Files the set excludes (never backed up): kept.
    pub excluded: Vec<String>,
    /// Whether the session's directory is gone.
    pub gone: bool,
    pub audit: Vec<String>,
}

/// The audit record of one deletion.
#[derive(Debug, Clone, Serialize)]
struct Audit<'a> {
    time: String,
    host: String,
    user: String,
    set: &'a str,
    session: &'a crate::sessions::layout::Vars,
    source: &'a str,
    destination: &'a str,
    files: usize,
    bytes: u64,
    hashes: Vec<(&'a str, &'a str)>,
    checks: &'a [Check],
}

/// Deletes the verified files of `session` (see the module contract).
///
/// # Errors
///
/// [`Error::Refused`] for a verdict that is not safe; an audit log that
/// cannot be written (nothing is deleted then); the first file that cannot
/// be removed (those before it are gone, and the audit record says all).
pub fn delete(
    registry: &Registry,
    set: &SessionSet,
    dest: &SessionDestination,
    session: &Session,
    verdict: &Verdict,
    cancel: &Cancel,
) -> Result<Deleted> {
    verdict.ensure_safe()?;
    let record = Audit {
        time: chrono::Local::now().to_rfc3339(),
        host: crate::lock::this_host(),
        user: std::env::var("USER")
            .or_else(|_| std::env::var("LOGNAME"))
            .unwrap_or_default(),
        set: &set.name,
        session: &session.vars,
        source: &verdict.source,
        destination: &verdict.place,
        files: verdict.files.len(),
        bytes: verdict.bytes,
        hashes: verdict
            .files
            .iter()
            .filter_map(|f| f.blake3.as_deref().map(|h| (f.path.as_str(), h)))
            .collect(),
        checks: &verdict.checks,
    };
    let line = serde_json::to_string(&record).map_err(|e| Error::Backend {
        backend: "audit".into(),
        message: e.to_string(),
        source: None,
    })?;
    let local = audit_local(set, &line)?;
    let remote = audit_remote(registry, dest, session, &line)?;
    let root = set.source.join(&session.path);
    let mut deleted = Deleted {
        session: session.path.clone(),
        files: 0,
        bytes: 0,
        kept: Vec::new(),
        excluded: Vec::new(),
        gone: false,
        audit: vec![local.display().to_string(), remote],
    };
    for f in &verdict.files {
        cancel.check()?;
        let path = root.join(&f.path);
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        let mtime = filetime::FileTime::from_last_modification_time(&meta);
        let mtime_ns = mtime.unix_seconds() * 1_000_000_000 + i64::from(mtime.nanoseconds());
        if meta.len() != f.size || f.mtime_ns.is_some_and(|m| m != mtime_ns) {
            // Changed since it was verified: kept (listed below with the
            // files that are new).
            continue;
        }
        std::fs::remove_file(&path)
            .map_err(|e| Error::io("delete", path.display().to_string(), e))?;
        deleted.files += 1;
        deleted.bytes += f.size;
    }
    // What is left: files that came after verification, then empty
    // directories bottom-up.
    let mut left = Vec::new();
    remove_empty(&root, &root, &mut left);
    left.sort();
    let excludes = crate::source::Excludes::new(&set.excludes)?;
    let (never_backed_up, new_or_changed): (Vec<String>, Vec<String>) = left
        .into_iter()
        .partition(|p| excludes.is_excluded(Path::new(p)));
    deleted.kept = new_or_changed;
    deleted.excluded = never_backed_up;
    deleted.gone = !root.exists();
    Ok(deleted)
}

/// Removes empty directories below and including `dir`; collects the
/// files still there (relative to `root`).
fn remove_empty(root: &Path, dir: &Path, left: &mut Vec<String>) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_empty(root, &p, left);
            } else if let Ok(rel) = p.strip_prefix(root) {
                left.push(rel.display().to_string());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

/// The local audit log: `.backupkit-deletions.jsonl` in the source base.
pub fn audit_log(set: &SessionSet) -> PathBuf {
    set.source.join(".backupkit-deletions.jsonl")
}

fn audit_local(set: &SessionSet, line: &str) -> Result<PathBuf> {
    let path = audit_log(set);
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| Error::io("open the audit log", path.display().to_string(), e))?;
    f.write_all(format!("{line}\n").as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| Error::io("write the audit log", path.display().to_string(), e))?;
    Ok(path)
}

/// One record per deletion at the destination, beside the sessions:
/// `.backupkit-deletions/TIME-SESSION.jsonl` under the destination base:
/// write-once objects, since object stores and SFTP cannot append, and a
/// rewritten shared log could lose a record to a crash or to a second
/// host deleting at the same time. Their names sort by time, so
/// `cat .backupkit-deletions/*.jsonl` is the log in order.
fn audit_remote(
    registry: &Registry,
    dest: &SessionDestination,
    session: &Session,
    line: &str,
) -> Result<String> {
    let base = registry.open_tree(&dest.location, &ops::resolved_options(dest)?)?;
    let name = format!(
        ".backupkit-deletions/{}-{}.jsonl",
        chrono::Utc::now().format("%Y%m%dT%H%M%S%.9fZ"),
        session.path.replace('/', "_")
    );
    let mut w = base.write(&name, FileAttrs::default())?;
    w.write_all(line.as_bytes())
        .and_then(|()| w.write_all(b"\n"))
        .map_err(|e| Error::io("write the audit record", name.clone(), e))?;
    w.commit()?;
    base.flush()?;
    Ok(format!("{}/{name}", dest.location.trim_end_matches('/')))
}

#[cfg(test)]
mod tests {
    #[test]
    fn samples_are_distinct_and_in_range() {
        let p = super::pick(100, 10);
        assert_eq!(p.len(), 10);
        assert!(p.windows(2).all(|w| w[0] < w[1]) && p.iter().all(|&i| i < 100));
        assert_eq!(super::pick(3, 10), [0, 1, 2]);
        assert_eq!(super::pick(5, 0).len(), 5);
    }
}
