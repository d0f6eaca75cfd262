//! A session's status: what is at the source, what is at its place at a
//! destination, whether the two match, whether the external record says it
//! was imported, and so whether it is safe to delete, with the reason for
//! each check.

use std::time::Duration;

use serde::Serialize;

use crate::jobs::hooks::{self, HookEnd};
use crate::mirror::{VerifyMode, VerifyReport};
use crate::sessions::config::{SessionDestination, SessionSet};
use crate::sessions::layout::{Session, session_date};
use crate::sessions::ops;
use crate::{Cancel, NoProgress, Registry};

/// One check and why it passed or failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// `imported`, `backup` or `verified`.
    pub name: &'static str,
    pub ok: bool,
    pub reason: String,
}

/// What `status` reports for one session at one destination.
#[derive(Debug, Clone, Serialize)]
pub struct SessionStatus {
    pub set: String,
    pub variables: crate::sessions::layout::Vars,
    /// `YYYYMMDD`, when the session has a date.
    pub date: Option<String>,
    pub source: String,
    pub files: u64,
    pub bytes: u64,
    /// Files matching the set's `videos` pattern.
    pub videos: u64,
    pub destination: String,
    /// The session's place there.
    pub place: String,
    pub backup_files: u64,
    pub backup_bytes: u64,
    /// `None` when no external check is configured.
    pub imported: Option<bool>,
    pub backup: bool,
    pub verified: bool,
    pub safe: bool,
    pub checks: Vec<Check>,
}

/// The status of `session` at `dest`: source counted, the place listed
/// and compared file by file (count and sizes), the external check run.
/// Nothing here is cached: every call reads both sides again.
pub fn status(
    registry: &Registry,
    set: &SessionSet,
    dest: &SessionDestination,
    session: &Session,
    cancel: &Cancel,
) -> SessionStatus {
    let source = set.source.join(&session.path);
    let place = dest
        .layout
        .dest_path(&session.vars)
        .map(|rel| format!("{}/{rel}", dest.location.trim_end_matches('/')))
        .unwrap_or_default();
    let mut checks = Vec::new();
    let imported = imported(registry, set, session, cancel);
    match &imported {
        Some((ok, reason)) => checks.push(Check {
            name: "imported",
            ok: *ok,
            reason: reason.clone(),
        }),
        None => checks.push(Check {
            name: "imported",
            ok: false,
            reason: "no `imported:` check is configured for this set".into(),
        }),
    }
    let sides = backup_checks(registry, set, dest, session, &place, &mut checks, cancel);
    let safe = checks.iter().all(|c| c.ok);
    SessionStatus {
        set: set.name.clone(),
        variables: session.vars.clone(),
        date: session_date(&session.vars).map(|d| d.format("%Y%m%d").to_string()),
        source: source.display().to_string(),
        files: sides.source.files,
        bytes: sides.source.bytes,
        videos: sides.source.videos,
        destination: dest.name.clone(),
        place,
        backup_files: sides.dest.files,
        backup_bytes: sides.dest.bytes,
        imported: imported.map(|(ok, _)| ok),
        backup: sides.backup,
        verified: sides.verified,
        safe,
        checks,
    }
}

/// [`status`] of each session, several at a time (their import checks and
/// listings wait on processes and I/O), in the order given.
pub fn status_all(
    registry: &Registry,
    set: &SessionSet,
    dest: &SessionDestination,
    sessions: &[Session],
    cancel: &Cancel,
) -> Vec<SessionStatus> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let out: std::sync::Mutex<Vec<Option<SessionStatus>>> =
        std::sync::Mutex::new(vec![None; sessions.len()]);
    std::thread::scope(|scope| {
        for _ in 0..STATUS_WORKERS.min(sessions.len()) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let Some(session) = sessions.get(i) else {
                        break;
                    };
                    if cancel.is_cancelled() {
                        break;
                    }
                    let st = status(registry, set, dest, session, cancel);
                    out.lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)[i] = Some(st);
                }
            });
        }
    });
    out.into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .into_iter()
        .flatten()
        .collect()
}

/// Sessions whose status is read at once.
const STATUS_WORKERS: usize = 8;

/// What one side holds.
#[derive(Default, Clone, Copy)]
struct Counts {
    files: u64,
    bytes: u64,
    videos: u64,
}

/// Both sides counted, and the two checks' verdicts.
struct Sides {
    source: Counts,
    dest: Counts,
    backup: bool,
    verified: bool,
}

/// The `backup` and `verified` checks: the place listed and compared
/// file by file with the source (count and sizes), in one walk of each
/// side that also counts both; a side is walked again only when the
/// comparison could not run (one side missing or unreadable).
fn backup_checks(
    registry: &Registry,
    set: &SessionSet,
    dest: &SessionDestination,
    session: &Session,
    place: &str,
    checks: &mut Vec<Check>,
    cancel: &Cancel,
) -> Sides {
    if !set.source.join(&session.path).is_dir() {
        // Deleted locally: what is at the destination is still shown.
        return only_at_destination(registry, set, dest, session, place, checks);
    }
    let videos = videos_matcher(set);
    let mut source = Counts::default();
    let report = ops::verify_observed(
        registry,
        set,
        dest,
        session,
        VerifyMode::Size,
        &mut |e| {
            if is_video(videos.as_ref(), &e.path) {
                source.videos += 1;
            }
        },
        &NoProgress,
        cancel,
    );
    let count_source = || {
        registry
            .open_tree(
                &set.source.join(&session.path).display().to_string(),
                &crate::TargetOptions::new(),
            )
            .and_then(|t| count_tree(t.as_ref(), set))
            .unwrap_or_default()
    };
    match report {
        Ok(r) => compared(&r, source, place, checks),
        Err(crate::Error::NotFound { .. }) => no_backup(checks, place, None, count_source()),
        Err(e) => no_backup(checks, place, Some(&e), count_source()),
    }
}

/// A session no longer at the source: the destination counted.
fn only_at_destination(
    registry: &Registry,
    set: &SessionSet,
    dest: &SessionDestination,
    session: &Session,
    place: &str,
    checks: &mut Vec<Check>,
) -> Sides {
    let there = ops::place_tree(registry, dest, session).and_then(|t| match t.root()? {
        Some(_) => count_tree(t.as_ref(), set).map(Some),
        None => Ok(None),
    });
    match there {
        Ok(Some(there)) if there.files > 0 => {
            push_backup(checks, true, format!("{} files at {place}", there.files));
            push_verified(checks, false, "the session is not at the source to compare");
            Sides {
                source: Counts::default(),
                dest: there,
                backup: true,
                verified: false,
            }
        }
        Ok(_) => no_backup(checks, place, None, Counts::default()),
        Err(e) => no_backup(checks, place, Some(&e), Counts::default()),
    }
}

/// The two checks from a comparison that ran.
fn compared(r: &VerifyReport, mut source: Counts, place: &str, checks: &mut Vec<Check>) -> Sides {
    source.files = r.files;
    source.bytes = r.bytes;
    let there = Counts {
        files: r.dest_files,
        bytes: r.dest_bytes,
        videos: 0,
    };
    let backup = there.files > 0;
    push_backup(
        checks,
        backup,
        if backup {
            format!("{} files at {place}", there.files)
        } else {
            format!("nothing at {place}")
        },
    );
    let verified = backup && r.matches() && r.files > 0;
    push_verified(
        checks,
        verified,
        &if verified {
            format!("{} files, every size equal", r.files)
        } else if r.files == 0 {
            "the session has no files".into()
        } else {
            r.describe()
        },
    );
    Sides {
        source,
        dest: there,
        backup,
        verified,
    }
}

/// No backup to compare: nothing at the place, or (`error`) the place
/// could not be read.
fn no_backup(
    checks: &mut Vec<Check>,
    place: &str,
    error: Option<&crate::Error>,
    source: Counts,
) -> Sides {
    match error {
        None => {
            push_backup(checks, false, format!("nothing at {place}"));
            push_verified(checks, false, "there is no backup to compare");
        }
        Some(e) => {
            let why = crate::error_chain(e);
            push_backup(checks, false, format!("cannot read {place}: {why}"));
            push_verified(checks, false, "the backup could not be read");
        }
    }
    Sides {
        source,
        dest: Counts::default(),
        backup: false,
        verified: false,
    }
}

fn push_backup(checks: &mut Vec<Check>, ok: bool, reason: String) {
    checks.push(Check {
        name: "backup",
        ok,
        reason,
    });
}

fn push_verified(checks: &mut Vec<Check>, ok: bool, reason: &str) {
    checks.push(Check {
        name: "verified",
        ok,
        reason: reason.to_owned(),
    });
}

fn videos_matcher(set: &SessionSet) -> Option<globset::GlobMatcher> {
    globset::Glob::new(&set.videos)
        .map(|g| g.compile_matcher())
        .ok()
}

fn is_video(videos: Option<&globset::GlobMatcher>, path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    videos.is_some_and(|m| m.is_match(name))
}

/// Files, bytes and files matching the `videos` pattern in a tree (the
/// set's excludes and the mirror's own state left out).
fn count_tree(tree: &dyn crate::tree::Tree, set: &SessionSet) -> crate::Result<Counts> {
    use crate::tree::{EntryKind, Walked};
    let excludes = crate::source::Excludes::new(&set.excludes)?;
    let videos = videos_matcher(set);
    let skip = |path: &str, _: EntryKind| {
        path == crate::mirror::record::STATE_DIR || excludes.is_excluded(std::path::Path::new(path))
    };
    let mut counts = Counts::default();
    for w in tree.walk(&skip)? {
        if let Walked::Entry(e) = w?
            && e.kind == EntryKind::File
        {
            counts.files += 1;
            counts.bytes += e.size;
            if is_video(videos.as_ref(), &e.path) {
                counts.videos += 1;
            }
        }
    }
    Ok(counts)
}

/// The external check: `Some((passed, why))`, or `None` when the set has
/// none. A check that cannot run, times out, or cannot reach its database
/// fails, with the reason.
fn imported(
    registry: &Registry,
    set: &SessionSet,
    session: &Session,
    cancel: &Cancel,
) -> Option<(bool, String)> {
    let check = set.imported.as_ref()?;
    let mut said = Vec::new();
    if let Some(command) = &check.command {
        let (ok, why) = run_command(command, check.timeout, session, cancel);
        if !ok {
            return Some((false, why));
        }
        said.push(why);
    }
    if let Some(url) = &check.database {
        match run_queries(registry, check, url, session) {
            Ok(None) => said.push(format!(
                "{} quer(ies) found the session",
                check.queries.len()
            )),
            Ok(Some(q)) => return Some((false, format!("no row for {q}"))),
            Err(e) => {
                return Some((
                    false,
                    format!(
                        "the import database cannot be asked: {}",
                        crate::error_chain(&e)
                    ),
                ));
            }
        }
    }
    Some((true, said.join("; ")))
}

/// Runs each query; `Some(query)` for the first that finds no row.
fn run_queries(
    registry: &Registry,
    check: &ImportCheck,
    url: &str,
    session: &Session,
) -> crate::Result<Option<String>> {
    let url = match &check.password {
        Some(p) => crate::jobs::run::with_password(url, &p.resolve()?),
        None => url.to_owned(),
    };
    let db = registry.database_source(&url)?;
    for q in &check.queries {
        if !crate::database::finds(db.as_ref(), q, &session.vars)? {
            return Ok(Some(q.clone()));
        }
    }
    Ok(None)
}

fn run_command(
    command: &str,
    timeout: Duration,
    session: &Session,
    cancel: &Cancel,
) -> (bool, String) {
    let mut line = command.to_owned();
    let mut env = Vec::new();
    for (k, v) in &session.vars {
        line = line.replace(&format!("{{{k}}}"), &shell_quote(v));
        env.push((
            format!("BACKUPKIT_SESSION_{}", k.to_ascii_uppercase()),
            v.clone(),
        ));
    }
    let output = std::sync::Mutex::new(String::new());
    let sink = |_: bool, l: &str| {
        let mut o = output
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if o.len() < 400 {
            o.push_str(l);
            o.push(' ');
        }
    };
    let end = hooks::run_hook(&line, &env, timeout, cancel, &sink);
    let said = output.into_inner().unwrap_or_default();
    let said = said.trim();
    let detail = if said.is_empty() {
        String::new()
    } else {
        format!(": {said}")
    };
    match end {
        HookEnd::Ok => (true, format!("the import check passed{detail}")),
        other => (
            false,
            format!("the import check {}{detail}", other.describe(timeout)),
        ),
    }
}

/// A value as one shell word.
fn shell_quote(v: &str) -> String {
    format!("'{}'", v.replace('\'', "'\\''"))
}

/// The external check of a session set: a command, queries, or both (all
/// must pass).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportCheck {
    /// A shell command; `{name}` becomes the session's value (quoted), and
    /// `BACKUPKIT_SESSION_NAME` holds it too. Exit 0: imported.
    pub command: Option<String>,
    pub timeout: Duration,
    /// A database URL (or SQLite path) and its password's source.
    pub database: Option<String>,
    pub password: Option<crate::jobs::secret::Secret>,
    /// Each must return at least one row; `:name` is the session's value,
    /// bound as a parameter.
    pub queries: Vec<String>,
}

#[cfg(test)]
mod tests {
    #[test]
    fn values_are_single_shell_words() {
        assert_eq!(super::shell_quote("p001"), "'p001'");
        assert_eq!(super::shell_quote("a'b $(x)"), "'a'\\''b $(x)'");
    }
}
