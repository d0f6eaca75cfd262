//! `backupkit run`, `config check` and `config show`: the config file,
//! the jobs engine, the summary table.

use std::fmt::Write as _;
use std::path::Path;

use backup_core::jobs::find;
use backup_core::jobs::log::{EventSink, Level, LogEvent, LogFile};
use backup_core::jobs::model::{self, Config};
use backup_core::jobs::run::{self, Outcome, RunOptions, RunSummary};

use crate::args::{ConfigCommand, RunArgs, SessionCommand};
use crate::commands::{Ctx, Failure, Outcome as CmdOutcome};
use crate::exit;
use crate::output::{json, out};

/// Finds and validates the config (`--config`, `BACKUPKIT_CONFIG`, the
/// working directory, the user's config directory).
pub(crate) fn load(ctx: &Ctx) -> Result<Config, Failure> {
    let found = find::locate(ctx.cli.config.as_deref())?;
    Ok(model::load(&found.path, ctx.registry)?)
}

pub(crate) fn config(ctx: &Ctx, cmd: &ConfigCommand) -> CmdOutcome {
    let config = load(ctx)?;
    match cmd {
        ConfigCommand::Check => {
            let jobs = config.jobs.len();
            let dests: usize = config.jobs.iter().map(|j| j.destinations.len()).sum();
            if ctx.v.json {
                json(&serde_json::json!({
                    "file": config.file.display().to_string(),
                    "ok": true,
                    "jobs": jobs,
                    "destinations": dests,
                }))?;
            } else {
                ctx.say(format!(
                    "{}: ok ({} job(s), {} destination(s), read as {})",
                    config.file.display(),
                    jobs,
                    dests,
                    config.dialect
                ))?;
            }
        }
        ConfigCommand::Show => {
            let view = config.view();
            if ctx.v.json {
                json(&view)?;
            } else {
                let mut text = String::new();
                yaml(&view, 0, &mut text);
                out(text.trim_end())?;
            }
        }
    }
    Ok(exit::OK)
}

/// A JSON value as YAML (the subset `config show` needs).
fn yaml(v: &serde_json::Value, indent: usize, out: &mut String) {
    use serde_json::Value as J;
    let pad = " ".repeat(indent);
    match v {
        J::Object(m) => {
            for (k, v) in m {
                match v {
                    J::Object(inner) if !inner.is_empty() => {
                        let _ = writeln!(out, "{pad}{k}:");
                        yaml(v, indent + 2, out);
                    }
                    J::Array(items) if !items.is_empty() => {
                        let _ = writeln!(out, "{pad}{k}:");
                        yaml(v, indent + 2, out);
                    }
                    _ => {
                        let _ = writeln!(out, "{pad}{k}: {}", scalar(v));
                    }
                }
            }
        }
        J::Array(items) => {
            for item in items {
                match item {
                    J::Object(m) if !m.is_empty() => {
                        let mut inner = String::new();
                        yaml(item, indent + 2, &mut inner);
                        let inner = inner.trim_start();
                        let _ = write!(out, "{pad}- {inner}");
                    }
                    _ => {
                        let _ = writeln!(out, "{pad}- {}", scalar(item));
                    }
                }
            }
        }
        other => {
            let _ = writeln!(out, "{pad}{}", scalar(other));
        }
    }
}

fn scalar(v: &serde_json::Value) -> String {
    use serde_json::Value as J;
    match v {
        J::String(s) => {
            let plain = !s.is_empty()
                && !s.starts_with(['*', '&', '!', '-', '?', '{', '[', '@', '`', '"', '\''])
                && !s.contains(": ")
                && !s.contains(" #")
                && !["true", "false", "null", "~", "yes", "no"].contains(&s.as_str())
                && s.parse::<f64>().is_err();
            if plain {
                s.clone()
            } else {
                serde_json::to_string(s).unwrap_or_default()
            }
        }
        J::Object(_) => "{}".into(),
        J::Array(_) => "[]".into(),
        other => other.to_string(),
    }
}

/// Events to stderr (unless `--quiet`) and to the log file.
pub(crate) struct Sinks {
    pub(crate) log: Option<LogFile>,
    pub(crate) quiet: bool,
    pub(crate) verbose: bool,
}

impl EventSink for Sinks {
    fn event(&self, e: &LogEvent) {
        if let Some(l) = &self.log {
            l.event(e);
        }
        let show = match e.level {
            Level::Error | Level::Warn => true,
            Level::Info => !self.quiet,
        };
        if show && (self.verbose || e.level != Level::Info || !e.message.contains(" hook output: "))
        {
            let tag = match e.level {
                Level::Error => "error: ",
                Level::Warn => "warning: ",
                Level::Info => "",
            };
            eprintln!("backupkit: {tag}{e}");
        }
    }
}

/// `run`, or with `cleanup` only each destination's retention.
pub(crate) fn run_jobs(ctx: &Ctx, a: &RunArgs, cleanup: bool) -> CmdOutcome {
    let config = load(ctx)?;
    let opts = RunOptions {
        jobs: a.jobs.clone(),
        only: a.only.clone(),
        dry_run: a.dry_run,
        cleanup,
        ..RunOptions::default()
    };
    run_and_show(ctx, &config, &opts, a.log_file.as_deref())
}

/// Runs `opts` and prints the summary (a table, or `--json`).
fn run_and_show(
    ctx: &Ctx,
    config: &Config,
    opts: &RunOptions,
    log_file: Option<&std::path::Path>,
) -> CmdOutcome {
    let log_path = log_file
        .map(Path::to_path_buf)
        .or_else(|| config.log_file.clone());
    let log = log_path.as_deref().map(LogFile::open).transpose()?;
    let sinks = Sinks {
        log,
        quiet: ctx.v.quiet,
        verbose: ctx.v.verbose > 0,
    };
    let summary = run::run(config, ctx.registry, opts, &sinks, ctx.cancel)?;
    if ctx.v.json {
        json(&summary)?;
    } else if !ctx.v.quiet || summary.result == Outcome::Failed {
        table(&summary, opts.dry_run)?;
    }
    Ok(code(&summary))
}

/// `backupkit pull JOB [--device ...] [--kind ...]`.
pub(crate) fn pull(ctx: &Ctx, a: &crate::args::PullArgs) -> CmdOutcome {
    let config = load(ctx)?;
    match config.jobs.iter().find(|j| j.name == a.job) {
        Some(j) if j.pull.is_some() => {}
        Some(_) => {
            return Err(Failure::Exit(
                exit::USAGE,
                format!(
                    "the job {:?} has no `pull:` section; run it with `backupkit run {}`",
                    a.job, a.job
                ),
            ));
        }
        None => {
            let pulls: Vec<&str> = config
                .jobs
                .iter()
                .filter(|j| j.pull.is_some())
                .map(|j| j.name.as_str())
                .collect();
            return Err(Failure::Exit(
                exit::USAGE,
                format!(
                    "no job named {:?} in {} (its pull jobs: {})",
                    a.job,
                    config.file.display(),
                    if pulls.is_empty() {
                        "none".to_owned()
                    } else {
                        pulls.join(", ")
                    }
                ),
            ));
        }
    }
    let opts = RunOptions {
        jobs: vec![a.job.clone()],
        dry_run: a.dry_run,
        devices: a.device.clone(),
        kinds: a.kind.clone(),
        ..RunOptions::default()
    };
    run_and_show(ctx, &config, &opts, a.log_file.as_deref())
}

/// The exit code of a run: its worst result.
pub(crate) fn code(s: &RunSummary) -> i32 {
    match s.result {
        Outcome::Ok | Outcome::Skipped => exit::OK,
        Outcome::Incomplete => exit::INCOMPLETE,
        Outcome::Failed => exit::FAILURE,
    }
}

fn table(s: &RunSummary, dry_run: bool) -> std::io::Result<()> {
    if dry_run {
        for j in &s.jobs {
            for d in &j.destinations {
                for line in &d.details {
                    out(format!("{}/{}: {line}", d.job, d.destination))?;
                }
            }
        }
    }
    for line in run::table(&s.jobs) {
        out(line)?;
    }
    out(format!(
        "{}: {} in {:.1}s",
        if dry_run { "dry run" } else { "run" },
        s.result.as_str(),
        s.seconds
    ))
}

/// `backupkit session ...`.
pub(crate) fn session(ctx: &Ctx, cmd: &SessionCommand) -> CmdOutcome {
    use backup_core::sessions::layout::session_date;
    let config = load(ctx)?;
    let a = match cmd {
        SessionCommand::List(a) => a,
        SessionCommand::Sync(a) => return session_sync(ctx, &config, a),
        SessionCommand::Verify(a) => return session_verify(ctx, &config, a),
        SessionCommand::Status(a) => return session_status(ctx, &config, a),
        SessionCommand::StatusRange(a) => return session_table(ctx, &config, a),
        SessionCommand::Batch(a) => return session_batch(ctx, &config, a),
        SessionCommand::Delete(a) => return session_delete(ctx, &config, a),
        SessionCommand::BulkDelete(a) => return session_bulk_delete(ctx, &config, a),
    };
    let sets: Vec<_> = config
        .sessions
        .iter()
        .filter(|s| a.set.as_ref().is_none_or(|n| *n == s.name))
        .collect();
    if sets.is_empty() {
        let names: Vec<&str> = config.sessions.iter().map(|s| s.name.as_str()).collect();
        return Err(Failure::Exit(
            exit::USAGE,
            match &a.set {
                Some(n) => format!(
                    "no session set named {n:?} (the config's: {})",
                    names.join(", ")
                ),
                None => "the config has no `sessions:` section".into(),
            },
        ));
    }
    let mut rows = Vec::new();
    for set in sets {
        for s in ranged(set, a)? {
            let mut dests = serde_json::Map::new();
            for d in &set.destinations {
                let rel = d.layout.dest_path(&s.vars)?;
                dests.insert(
                    d.name.clone(),
                    format!("{}/{rel}", d.location.trim_end_matches('/')).into(),
                );
            }
            rows.push(serde_json::json!({
                "set": set.name,
                "date": session_date(&s.vars).map(|d| d.format("%Y%m%d").to_string()),
                "variables": s.vars,
                "source": set.source.join(&s.path).display().to_string(),
                "destinations": dests,
            }));
        }
    }
    if ctx.v.json {
        json(&rows)?;
        return Ok(exit::OK);
    }
    for r in &rows {
        let vars: Vec<String> = r["variables"]
            .as_object()
            .map(|m| {
                m.values()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let dests: Vec<String> = r["destinations"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| format!("{k}: {}", v.as_str().unwrap_or("")))
                    .collect()
            })
            .unwrap_or_default();
        out(format!(
            "{}  {}  {}  ->  {}",
            r["set"].as_str().unwrap_or(""),
            vars.join(" "),
            r["source"].as_str().unwrap_or(""),
            dests.join(", ")
        ))?;
    }
    ctx.say(format!("{} session(s)", rows.len()))?;
    Ok(exit::OK)
}

/// The set's sessions in the command's date range.
fn ranged(
    set: &backup_core::sessions::config::SessionSet,
    range: &crate::args::SessionRangeArgs,
) -> backup_core::Result<Vec<backup_core::sessions::layout::Session>> {
    let mut filter = set.filter.clone();
    filter.start = range.start_date.or(filter.start);
    filter.end = range.end_date.or(filter.end);
    backup_core::sessions::layout::discover(&set.source, &set.layout, &filter)
}

/// The set a session command names, or the config's only one.
fn session_set<'c>(
    config: &'c Config,
    name: Option<&str>,
) -> Result<&'c backup_core::sessions::config::SessionSet, Failure> {
    Ok(backup_core::sessions::config::select(
        &config.sessions,
        name,
        "--set",
    )?)
}

fn session_sync(ctx: &Ctx, config: &Config, a: &crate::args::SessionSyncArgs) -> CmdOutcome {
    use backup_core::sessions::ops;
    let set = session_set(config, a.session.at.set.as_deref())?;
    let dest = ops::destination(set, a.session.at.dest.as_deref())?;
    let session = ops::find(set, &a.session.values)?;
    let reporter = crate::output::Reporter::new(ctx.v).listing_plan(a.dry_run);
    let result = ops::sync(
        ctx.registry,
        set,
        dest,
        &session,
        a.dry_run,
        &reporter,
        ctx.cancel,
    );
    reporter.finish();
    let summary = result?;
    crate::mirror::report(ctx, &summary)
}

fn session_verify(ctx: &Ctx, config: &Config, a: &crate::args::SessionVerifyArgs) -> CmdOutcome {
    use backup_core::mirror::VerifyMode;
    use backup_core::sessions::ops;
    let set = session_set(config, a.session.at.set.as_deref())?;
    let dest = ops::destination(set, a.session.at.dest.as_deref())?;
    let session = ops::find(set, &a.session.values)?;
    let mode = if a.full {
        VerifyMode::Checksum
    } else if a.sample == 0 {
        VerifyMode::Size
    } else {
        VerifyMode::Sample(a.sample)
    };
    let reporter = crate::output::Reporter::new(crate::output::Verbosity {
        quiet: true,
        ..ctx.v
    });
    let result = ops::verify(
        ctx.registry,
        set,
        dest,
        &session,
        mode,
        &reporter,
        ctx.cancel,
    );
    reporter.finish();
    crate::mirror::report_verify(ctx, &result?)
}

/// ✓/✗ on a terminal, yes/no in a pipe.
fn mark(ok: bool) -> &'static str {
    match (ok, std::io::IsTerminal::is_terminal(&std::io::stdout())) {
        (true, true) => "\u{2713}",
        (false, true) => "\u{2717}",
        (true, false) => "yes",
        (false, false) => "no",
    }
}

fn session_status(ctx: &Ctx, config: &Config, a: &crate::args::SessionArgs) -> CmdOutcome {
    use backup_core::sessions::{ops, status};
    let set = session_set(config, a.at.set.as_deref())?;
    let dest = ops::destination(set, a.at.dest.as_deref())?;
    // A session deleted locally still has a status: what is preserved.
    let session = ops::named(set, &a.values)?;
    let s = status::status(ctx.registry, set, dest, &session, ctx.cancel);
    if ctx.v.json {
        json(&s)?;
        return Ok(exit::OK);
    }
    if std::path::Path::new(&s.source).is_dir() {
        out(format!(
            "source  {}: {} files, {}",
            s.source,
            s.files,
            crate::output::human_bytes(s.bytes)
        ))?;
    } else {
        out(format!("source  {}: not there", s.source))?;
    }
    out(format!(
        "backup  {}: {} files, {}",
        s.place,
        s.backup_files,
        crate::output::human_bytes(s.backup_bytes)
    ))?;
    for c in &s.checks {
        out(format!("{:<9} {}  {}", c.name, mark(c.ok), c.reason))?;
    }
    out(format!(
        "safe to delete: {}",
        if s.safe { "yes" } else { "no" }
    ))?;
    Ok(exit::OK)
}

fn session_table(ctx: &Ctx, config: &Config, a: &crate::args::SessionTableArgs) -> CmdOutcome {
    use backup_core::sessions::layout::is_date_variable;
    use backup_core::sessions::{ops, status};
    let set = session_set(config, a.range.set.as_deref())?;
    let dest = ops::destination(set, a.dest.as_deref())?;
    let sessions = ranged(set, &a.range)?;
    let rows = status::status_all(ctx.registry, set, dest, &sessions, ctx.cancel);
    ctx.cancel.check()?;
    if ctx.v.json {
        json(&rows)?;
        return Ok(exit::OK);
    }
    let mut table = vec![[
        "Date".to_owned(),
        "Participant".to_owned(),
        "Videos".to_owned(),
        "Imported".to_owned(),
        "Backup".to_owned(),
        "Verified".to_owned(),
        "Safe".to_owned(),
    ]];
    for r in &rows {
        let who: Vec<&str> = r
            .variables
            .iter()
            .filter(|(k, _)| !is_date_variable(k))
            .map(|(_, v)| v.as_str())
            .collect();
        table.push([
            r.date.clone().unwrap_or_default(),
            who.join(" "),
            r.videos.to_string(),
            r.imported.map_or("-", mark).to_owned(),
            mark(r.backup).to_owned(),
            mark(r.verified).to_owned(),
            mark(r.safe).to_owned(),
        ]);
    }
    for line in run::columns(&table) {
        out(line)?;
    }
    let safe = rows.iter().filter(|r| r.safe).count();
    ctx.say(format!("{} session(s), {safe} safe to delete", rows.len()))?;
    Ok(exit::OK)
}

/// Prints a verdict: what would go, where it is kept, each check.
fn say_verdict(verdict: &backup_core::sessions::delete::Verdict) -> std::io::Result<()> {
    out(format!(
        "session {}: {} files, {} at {}",
        verdict.session,
        verdict.files.len(),
        crate::output::human_bytes(verdict.bytes),
        verdict.source
    ))?;
    out(format!("  preserved at {}", verdict.place))?;
    for c in &verdict.checks {
        out(format!("  {:<9} {}  {}", c.name, mark(c.ok), c.reason))?;
    }
    Ok(())
}

fn say_deleted(d: &backup_core::sessions::delete::Deleted) -> std::io::Result<()> {
    out(format!(
        "deleted {}: {} files, {}{}",
        d.session,
        d.files,
        crate::output::human_bytes(d.bytes),
        if d.gone {
            ", the session directory is gone"
        } else {
            ""
        }
    ))?;
    for k in &d.kept {
        eprintln!(
            "backupkit: warning: kept {}/{k}: it is new or changed since it was verified",
            d.session
        );
    }
    if !d.excluded.is_empty() {
        eprintln!(
            "backupkit: note: kept {} excluded file(s) in {} (never backed up): {}",
            d.excluded.len(),
            d.session,
            d.excluded.join(", ")
        );
    }
    Ok(())
}

fn session_delete(ctx: &Ctx, config: &Config, a: &crate::args::SessionDeleteArgs) -> CmdOutcome {
    use backup_core::sessions::{delete, ops};
    let set = session_set(config, a.session.at.set.as_deref())?;
    let dest = ops::destination(set, a.session.at.dest.as_deref())?;
    let session = ops::find(set, &a.session.values)?;
    let verdict =
        delete::verify_for_delete(ctx.registry, set, dest, &session, a.sample, ctx.cancel);
    ctx.cancel.check()?;
    if ctx.v.json && a.dry_run {
        json(&verdict)?;
    } else {
        say_verdict(&verdict)?;
    }
    if !verdict.safe {
        return Err(Failure::Exit(
            exit::FAILURE,
            format!(
                "not safe to delete {}: {}; nothing deleted",
                session.path,
                verdict.reasons()
            ),
        ));
    }
    if a.dry_run {
        ctx.say(format!(
            "dry run: would delete {} files; nothing deleted",
            verdict.files.len()
        ))?;
        return Ok(exit::OK);
    }
    crate::commands::confirm_word(
        a.yes,
        &format!(
            "Delete the local copy of {} ({} files)?",
            verdict.source,
            verdict.files.len()
        ),
        "DELETE",
    )?;
    // Checked again right before deleting: the state may have changed
    // while the question was open.
    let verdict =
        delete::verify_for_delete(ctx.registry, set, dest, &session, a.sample, ctx.cancel);
    let done = delete::delete(ctx.registry, set, dest, &session, &verdict, ctx.cancel)?;
    if ctx.v.json {
        json(&done)?;
    } else {
        say_deleted(&done)?;
    }
    Ok(exit::OK)
}

fn session_bulk_delete(
    ctx: &Ctx,
    config: &Config,
    a: &crate::args::SessionBulkDeleteArgs,
) -> CmdOutcome {
    use backup_core::sessions::delete;
    let set = session_set(config, a.range.set.as_deref())?;
    let dest = backup_core::sessions::ops::destination(set, a.dest.as_deref())?;
    let sessions = ranged(set, &a.range)?;
    let mut safe = Vec::new();
    for s in &sessions {
        let v = delete::verify_for_delete(ctx.registry, set, dest, s, a.sample, ctx.cancel);
        ctx.cancel.check()?;
        if v.safe {
            out(format!(
                "safe      {}: {} files, {}, preserved at {}",
                s.path,
                v.files.len(),
                crate::output::human_bytes(v.bytes),
                v.place
            ))?;
            safe.push(s);
        } else {
            out(format!("not safe  {}: {}", s.path, v.reasons()))?;
        }
    }
    ctx.say(format!(
        "{} session(s): {} safe to delete, {} not",
        sessions.len(),
        safe.len(),
        sessions.len() - safe.len()
    ))?;
    if a.dry_run || safe.is_empty() {
        if a.dry_run {
            ctx.say("dry run: nothing deleted")?;
        }
        return Ok(exit::OK);
    }
    crate::commands::confirm_word(
        a.yes,
        &format!("Delete the local copies of {} session(s)?", safe.len()),
        "DELETE ALL",
    )?;
    let (mut ok, mut failed) = (0, 0);
    let mut results = Vec::new();
    for s in safe {
        let v = delete::verify_for_delete(ctx.registry, set, dest, s, a.sample, ctx.cancel);
        match delete::delete(ctx.registry, set, dest, s, &v, ctx.cancel) {
            Ok(d) => {
                if !ctx.v.json {
                    say_deleted(&d)?;
                }
                ok += 1;
                results.push(d);
            }
            Err(e) => {
                failed += 1;
                eprintln!(
                    "backupkit: error: {}: {}",
                    s.path,
                    backup_core::error_chain(&e)
                );
            }
        }
    }
    if ctx.v.json {
        json(&results)?;
    }
    ctx.say(format!("deleted {ok} session(s), {failed} failed"))?;
    Ok(if failed == 0 { exit::OK } else { exit::FAILURE })
}

fn session_batch(ctx: &Ctx, config: &Config, a: &crate::args::SessionBatchArgs) -> CmdOutcome {
    use backup_core::sessions::{ops, status};
    let set = session_set(config, a.at.set.as_deref())?;
    let dest = ops::destination(set, a.at.dest.as_deref())?;
    let range = crate::args::SessionRangeArgs {
        set: None,
        start_date: Some(a.start),
        end_date: Some(a.end.unwrap_or(a.start)),
    };
    let sessions = ranged(set, &range)?;
    let (mut synced, mut failed, mut skipped) = (0, 0, 0);
    let mut results = Vec::new();
    for s in &sessions {
        ctx.cancel.check()?;
        let st = status::status(ctx.registry, set, dest, s, ctx.cancel);
        if st.backup && st.verified {
            skipped += 1;
            if !ctx.v.json {
                ctx.say(format!(
                    "skipped   {}: already backed up and verified",
                    s.path
                ))?;
            }
            results.push(serde_json::json!({"session": s.path, "result": "skipped"}));
            continue;
        }
        let r = ops::sync(
            ctx.registry,
            set,
            dest,
            s,
            a.dry_run,
            &backup_core::NoProgress,
            ctx.cancel,
        );
        match r {
            Ok(m) if m.is_complete() => {
                synced += 1;
                if !ctx.v.json {
                    ctx.say(format!(
                        "{} {}: {} files, {} to {}",
                        if a.dry_run { "would sync" } else { "synced   " },
                        s.path,
                        m.copied + m.updated,
                        crate::output::human_bytes(m.bytes),
                        st.place
                    ))?;
                }
                results.push(serde_json::json!({"session": s.path, "result": "ok", "files": m.copied + m.updated, "bytes": m.bytes}));
            }
            Ok(m) => {
                failed += 1;
                let why = m
                    .verify
                    .as_ref()
                    .map(backup_core::mirror::VerifyReport::describe)
                    .or(m.refused.clone())
                    .unwrap_or_else(|| format!("{} file(s) could not be copied", m.failed.len()));
                eprintln!("backupkit: error: {}: {why}", s.path);
                results
                    .push(serde_json::json!({"session": s.path, "result": "failed", "error": why}));
            }
            Err(e) => {
                failed += 1;
                let why = backup_core::error_chain(&e);
                eprintln!("backupkit: error: {}: {why}", s.path);
                results
                    .push(serde_json::json!({"session": s.path, "result": "failed", "error": why}));
            }
        }
    }
    if ctx.v.json {
        json(&serde_json::json!({
            "succeeded": synced, "failed": failed, "skipped": skipped, "sessions": results,
        }))?;
    } else {
        ctx.say(format!(
            "{} session(s): {synced} {}, {failed} failed, {skipped} skipped",
            sessions.len(),
            if a.dry_run { "to sync" } else { "succeeded" }
        ))?;
    }
    Ok(if failed == 0 { exit::OK } else { exit::FAILURE })
}
