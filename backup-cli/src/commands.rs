//! One function per command. Each turns flags into an options struct, calls
//! the shared engine, and prints the result.

use std::io;
use std::sync::Arc;

use backup_core::snapshot::SnapshotMeta;
use backup_core::{
    BackupOptions, Cancel, CheckOptions, Error, ForgetOptions, KeepPolicy, Registry, Repository,
    RestoreOptions, SnapshotFilter, TargetOptions, error_chain,
};

use crate::args::{
    BackupArgs, CheckArgs, Cli, Command, CopyArgs, ExportArgs, ForgetArgs, InitArgs, LsArgs,
    PruneArgs, RestoreArgs, SnapshotsArgs, UnlockArgs,
};
use crate::exit;
use crate::output::{Reporter, Verbosity, confirm, human_bytes, json, out, shown};

/// Why a command did not exit 0.
pub(crate) enum Failure {
    Core(Error),
    Io(io::Error),
    /// A message and an exit code decided by the command.
    Exit(i32, String),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::Core(e)
    }
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Self {
        Failure::Io(e)
    }
}

pub(crate) type Outcome = Result<i32, Failure>;

pub(crate) struct Ctx<'a> {
    pub(crate) cli: &'a Cli,
    pub(crate) registry: &'a Arc<Registry>,
    pub(crate) cancel: &'a Cancel,
    pub(crate) v: Verbosity,
}

impl Ctx<'_> {
    fn location(&self) -> Result<&str, Failure> {
        self.cli.repo.as_deref().ok_or_else(|| {
            Failure::Exit(
                exit::USAGE,
                "no repository given: pass -r/--repo or set BACKUPKIT_REPOSITORY".into(),
            )
        })
    }

    pub(crate) fn open(&self) -> Result<Repository, Failure> {
        self.open_at(self.location()?, &self.cli.options)
    }

    /// Opens the repository for a read-only command: without locks when
    /// `--no-lock` is given.
    fn open_read(&self) -> Result<Repository, Failure> {
        let repo = self.open()?;
        Ok(if self.cli.no_lock {
            repo.without_read_locks()
        } else {
            repo
        })
    }

    /// Opens a repository at `location` with `-o`-style options.
    fn open_at(&self, location: &str, options: &[(String, String)]) -> Result<Repository, Failure> {
        let target = self.target(location, options)?;
        Ok(Repository::from_target(Arc::clone(self.registry), target)?)
    }

    fn target(
        &self,
        location: &str,
        options: &[(String, String)],
    ) -> Result<Arc<dyn backup_core::Target>, Failure> {
        let options: TargetOptions = options.iter().cloned().collect();
        Ok(self.registry.open_target_with(location, &options)?)
    }

    pub(crate) fn say(&self, line: impl AsRef<str>) -> io::Result<()> {
        if self.v.quiet { Ok(()) } else { out(line) }
    }
}

/// Runs the parsed command; prints the error chain and maps it to an exit
/// code. A closed stdout (`| head`) is not an error.
pub fn dispatch(cli: &Cli, registry: &Arc<Registry>, cancel: &Cancel) -> i32 {
    let ctx = Ctx {
        cli,
        registry,
        cancel,
        v: Verbosity {
            quiet: cli.quiet,
            verbose: cli.verbose,
            json: cli.json,
        },
    };
    let read_only = matches!(
        cli.command,
        Command::Snapshots(_)
            | Command::Ls(_)
            | Command::Restore(_)
            | Command::Check(_)
            | Command::Copy(_)
    );
    if cli.no_lock && !read_only {
        eprintln!(
            "backupkit: error: --no-lock is only for read-only commands (snapshots, ls, restore, check, copy)"
        );
        return exit::USAGE;
    }
    let result = match &cli.command {
        Command::Init(a) => init(&ctx, a),
        Command::Backup(a) => backup(&ctx, a),
        Command::Snapshots(a) => snapshots(&ctx, a),
        Command::Ls(a) => ls(&ctx, a),
        Command::Restore(a) => restore(&ctx, a),
        Command::Check(a) => check(&ctx, a),
        Command::Forget(a) => forget(&ctx, a),
        Command::Prune(a) => prune(&ctx, a),
        Command::Unlock(a) => unlock(&ctx, a),
        Command::Auto(a) => crate::db::auto(&ctx, a),
        Command::Copy(a) => copy(&ctx, a),
        Command::Export(a) => export(&ctx, a),
        Command::Mirror(a) => crate::mirror::mirror(&ctx, a),
        Command::Run(a) => crate::jobs::run_jobs(&ctx, a, false),
        Command::Cleanup(a) => crate::jobs::run_jobs(&ctx, a, true),
        Command::Pull(a) => crate::jobs::pull(&ctx, a),
        Command::Schedule(a) => crate::schedule::schedule(&ctx, a),
        Command::Serve(a) => crate::schedule::serve(&ctx, a),
        Command::Config(c) => crate::jobs::config(&ctx, c),
        Command::Session(c) => crate::jobs::session(&ctx, c),
    };
    match result {
        Ok(code) => code,
        Err(Failure::Io(e)) if e.kind() == io::ErrorKind::BrokenPipe => exit::OK,
        Err(Failure::Io(e)) => {
            eprintln!("backupkit: error: cannot write output: {e}");
            exit::FAILURE
        }
        Err(Failure::Exit(code, msg)) => {
            eprintln!("backupkit: error: {msg}");
            code
        }
        Err(Failure::Core(e)) => {
            eprintln!("backupkit: error: {}{}", error_chain(&e), exit::hint(&e));
            exit::code_for(&e)
        }
    }
}

fn init(ctx: &Ctx, a: &InitArgs) -> Outcome {
    let target = ctx.target(ctx.location()?, &ctx.cli.options)?;
    let opts = backup_core::repository::InitOptions { dedup: a.dedup };
    let repo = Repository::init_with(Arc::clone(ctx.registry), target, opts)?;
    if ctx.v.json {
        json(&serde_json::json!({
            "initialized": true,
            "repository": repo.location(),
            "dedup": a.dedup,
        }))?;
    } else {
        ctx.say(format!(
            "created {}backupkit repository at {}",
            if a.dedup { "deduplicated " } else { "" },
            repo.location()
        ))?;
    }
    Ok(exit::OK)
}

fn backup(ctx: &Ctx, a: &BackupArgs) -> Outcome {
    if let Some(db) = &a.db {
        return crate::db::backup(ctx, a, db);
    }
    let opts = BackupOptions {
        paths: a.paths.clone(),
        tags: a.tags.iter().map(|t| t.trim().to_owned()).collect(),
        excludes: a.excludes.clone(),
        exclude_files: a.exclude_files.clone(),
        compression: a.compression.parse()?,
        level: a.level,
        dry_run: a.dry_run,
        host: a.host.clone(),
        no_cache: a.no_cache,
    };
    let repo = ctx.open()?;
    let reporter = Reporter::new(ctx.v);
    let result = repo.backup(&opts, &reporter, ctx.cancel);
    reporter.finish();
    let summary = result?;
    if ctx.v.json {
        json(&summary)?;
    } else if let Some(s) = &summary.snapshot {
        let ratio = if s.source_bytes > 0 {
            format!(
                " ({:.1}%)",
                100.0 * s.size_bytes as f64 / s.source_bytes as f64
            )
        } else {
            String::new()
        };
        ctx.say(format!(
            "snapshot {} saved: {} files, {} dirs, {} read, {} stored{ratio} in {:.1}s",
            s.id,
            s.file_count,
            s.dir_count,
            human_bytes(s.source_bytes),
            human_bytes(s.size_bytes),
            s.duration_seconds
        ))?;
    } else {
        ctx.say(format!(
            "dry run: would back up {} files, {} dirs, {}",
            summary.files,
            summary.dirs,
            human_bytes(summary.bytes)
        ))?;
    }
    if summary.is_incomplete() {
        let what = summary
            .snapshot
            .as_ref()
            .map_or_else(|| "dry run".to_owned(), |s| format!("snapshot {}", s.id));
        eprintln!(
            "backupkit: warning: {what} is incomplete: {} file(s) could not be stored as they were",
            summary.warnings.len()
        );
        return Ok(exit::INCOMPLETE);
    }
    Ok(exit::OK)
}

fn snapshots(ctx: &Ctx, a: &SnapshotsArgs) -> Outcome {
    let repo = ctx.open()?;
    let listing = repo.list_snapshots()?;
    for (id, reason) in &listing.damaged {
        eprintln!(
            "backupkit: warning: snapshot {id} is damaged and not listed: {reason} (see `backupkit check`)"
        );
    }
    let filter = SnapshotFilter {
        hosts: a.hosts.clone(),
        tags: a.tags.clone(),
        paths: a.paths.clone(),
    };
    let list: Vec<SnapshotMeta> = listing
        .snapshots
        .into_iter()
        .filter(|s| filter.matches(s))
        .collect();
    if ctx.v.json {
        json(&list)?;
        return Ok(exit::OK);
    }
    out(format!(
        "{:<36} {:<19} {:<12} {:<10} {:>10} {:>8}  {}",
        "ID", "Time", "Host", "Tags", "Size", "Files", "Paths"
    ))?;
    for s in &list {
        let status = if s.status == backup_core::SnapshotStatus::Incomplete {
            " (incomplete)"
        } else {
            ""
        };
        out(format!(
            "{:<36} {:<19} {:<12} {:<10} {:>10} {:>8}  {}{status}",
            s.id,
            s.timestamp
                .with_timezone(&chrono::Local)
                .format("%Y-%m-%d %H:%M:%S"),
            s.host,
            s.tags.join(","),
            human_bytes(s.size_bytes),
            s.file_count,
            s.paths.join(", ")
        ))?;
    }
    out(format!("{} snapshot(s)", list.len()))?;
    Ok(exit::OK)
}

fn ls(ctx: &Ctx, a: &LsArgs) -> Outcome {
    let repo = ctx.open_read()?;
    let meta = repo.find_snapshot(&a.snapshot)?;
    let mut first = true;
    if ctx.v.json {
        out("[")?;
    }
    repo.list_entries(&meta, &mut |e| {
        let line = if ctx.v.json {
            let sep = if first { "" } else { "," };
            format!(
                "{sep}{}",
                serde_json::to_string(e).expect("entry serializes")
            )
        } else {
            let kind = match e.kind {
                backup_core::archive::EntryKind::Dir => 'd',
                backup_core::archive::EntryKind::Symlink => 'l',
                backup_core::archive::EntryKind::Hardlink => 'h',
                backup_core::archive::EntryKind::File => '-',
            };
            let link = e
                .link
                .as_ref()
                .map(|l| format!(" -> {}", shown(l)))
                .unwrap_or_default();
            let time = chrono::DateTime::from_timestamp(e.mtime, 0)
                .map(|t| {
                    t.with_timezone(&chrono::Local)
                        .format("%Y-%m-%d %H:%M:%S")
                        .to_string()
                })
                .unwrap_or_default();
            format!(
                "{kind}{:04o} {:>12} {time} /{}{link}",
                e.mode,
                e.size,
                shown(&e.path)
            )
        };
        first = false;
        out(line).map_err(|e| Error::io("write", "stdout", e))
    })
    .map_err(|e| match e {
        Error::Io { source, .. } if source.kind() == io::ErrorKind::BrokenPipe => {
            Failure::Io(source)
        }
        other => Failure::Core(other),
    })?;
    if ctx.v.json {
        out("]")?;
    }
    Ok(exit::OK)
}

fn restore(ctx: &Ctx, a: &RestoreArgs) -> Outcome {
    let repo = ctx.open_read()?;
    let meta = repo.find_snapshot(&a.snapshot)?;
    if meta.database.is_some() {
        return crate::db::restore(ctx, a, &repo, &meta);
    }
    let opts = RestoreOptions {
        target: a.target.clone(),
        includes: a.includes.clone(),
        overwrite: a.overwrite,
    };
    let reporter = Reporter::new(ctx.v);
    let result = repo.restore(&meta.id, &opts, &reporter, ctx.cancel);
    reporter.finish();
    let s = result?;
    if ctx.v.json {
        json(&s)?;
    } else {
        ctx.say(format!(
            "restored snapshot {} to {}: {} files, {} dirs, {} links, {}",
            s.snapshot,
            s.target.display(),
            s.files,
            s.dirs,
            s.links,
            human_bytes(s.bytes)
        ))?;
    }
    Ok(exit::OK)
}

fn check(ctx: &Ctx, a: &CheckArgs) -> Outcome {
    let repo = ctx.open_read()?;
    let opts = CheckOptions {
        read_data: a.read_data,
        read_data_subset: a.read_data_subset.clone(),
        snapshots: [a.snapshots.as_slice(), a.backup_ids.as_slice()].concat(),
    };
    let reporter = Reporter::new(Verbosity {
        quiet: true,
        ..ctx.v
    });
    let result = repo.check(&opts, &reporter, ctx.cancel);
    reporter.finish();
    let report = result?;
    if ctx.v.json {
        json(&report)?;
    } else {
        for p in &report.problems {
            out(format!("error: snapshot {}: {}", p.snapshot, p.message))?;
        }
        for p in &report.repository_problems {
            out(format!("error: repository: {p}"))?;
        }
        if let Some(c) = &report.chunks {
            ctx.say(format!(
                "chunk store: {} index fragment(s), {} pack(s), {} chunk(s){}",
                c.fragments,
                c.packs,
                c.chunks,
                if c.bytes_read > 0 {
                    format!(", {} of packs read", human_bytes(c.bytes_read))
                } else {
                    String::new()
                }
            ))?;
            if !c.unindexed_packs.is_empty() {
                ctx.say(format!(
                    "{} pack(s) of interrupted backups that no snapshot uses (removed by a prune)",
                    c.unindexed_packs.len()
                ))?;
            }
        }
        if !report.unfinished.is_empty() {
            ctx.say(format!(
                "{} unfinished backup(s) left by interrupted runs (removed by the next backup): {}",
                report.unfinished.len(),
                report.unfinished.join(", ")
            ))?;
        }
        let read = if report.snapshots_read > 0 {
            format!(", data of {} read", report.snapshots_read)
        } else {
            String::new()
        };
        if report.is_ok() {
            ctx.say(format!(
                "checked {} snapshot(s){read}: no errors were found",
                report.snapshots_checked
            ))?;
        } else {
            let repository = if report.repository_problems.is_empty() {
                String::new()
            } else {
                format!(
                    ", {} problem(s) in the chunk store",
                    report.repository_problems.len()
                )
            };
            out(format!(
                "checked {} snapshot(s){read}: {} damaged{repository}",
                report.snapshots_checked,
                report.problems.len()
            ))?;
        }
    }
    if report.is_ok() {
        Ok(exit::OK)
    } else {
        eprintln!(
            "backupkit: error: integrity check failed for {} snapshot(s){}",
            report.problems.len(),
            if report.repository_problems.is_empty() {
                String::new()
            } else {
                format!(
                    " and {} object(s) of the chunk store",
                    report.repository_problems.len()
                )
            }
        );
        Ok(exit::INTEGRITY)
    }
}

/// Asks before deleting, unless `--yes`; refuses without a terminal.
pub(crate) fn confirm_delete(yes: bool, question: &str) -> Result<(), Failure> {
    confirm_word(yes, question, "yes")
}

/// Asks for `word` typed exactly on a terminal; `--yes` skips it; without
/// a terminal it refuses.
pub(crate) fn confirm_word(yes: bool, question: &str, word: &str) -> Result<(), Failure> {
    if yes {
        return Ok(());
    }
    match confirm(question, word) {
        Ok(true) => Ok(()),
        Ok(false) => Err(Failure::Exit(
            exit::USAGE,
            "not confirmed; nothing deleted".into(),
        )),
        Err(msg) => Err(Failure::Exit(exit::USAGE, msg)),
    }
}

fn forget(ctx: &Ctx, a: &ForgetArgs) -> Outcome {
    let policy = a.policy.to_policy()?;
    let repo = ctx.open()?;
    match (a.snapshots.is_empty(), policy.is_empty()) {
        (false, false) => Err(Failure::Exit(
            exit::USAGE,
            "give snapshot ids or a --keep-* policy, not both".into(),
        )),
        (true, true) => Err(Failure::Exit(
            exit::USAGE,
            "give snapshot ids, or a policy such as --keep-daily 7 --keep-weekly 4".into(),
        )),
        (false, true) => forget_ids(ctx, a, &repo),
        (true, false) => forget_policy(ctx, a, &repo, policy),
    }
}

/// With `--prune`, prunes after the forget.
fn prune_after_forget(
    a: &ForgetArgs,
    repo: &Repository,
) -> Result<Option<backup_core::PruneReport>, Failure> {
    if !a.prune {
        return Ok(None);
    }
    Ok(Some(repo.prune(&a.prune_flags.options(a.dry_run))?))
}

fn prune(ctx: &Ctx, a: &PruneArgs) -> Outcome {
    let repo = ctx.open()?;
    let report = repo.prune(&a.flags.options(a.dry_run))?;
    say_prune(ctx, &repo, &report)?;
    Ok(exit::OK)
}

/// Prints a prune's report (`--json`: one object, with `deduplicated`).
fn say_prune(ctx: &Ctx, repo: &Repository, r: &backup_core::PruneReport) -> Result<(), Failure> {
    if ctx.v.json {
        #[derive(serde::Serialize)]
        struct Shown<'a> {
            deduplicated: bool,
            #[serde(flatten)]
            report: &'a backup_core::PruneReport,
        }
        json(&Shown {
            deduplicated: repo.dedup().is_some(),
            report: r,
        })?;
        return Ok(());
    }
    if repo.dedup().is_none() {
        ctx.say("nothing to prune: snapshots of an archive repository own their data, and forget deletes it")?;
        return Ok(());
    }
    let (would, verb) = if r.dry_run {
        ("would ", "be ")
    } else {
        ("", "")
    };
    ctx.say(format!(
        "{} snapshot(s) use {} chunk(s)",
        r.snapshots, r.referenced_chunks
    ))?;
    if r.marked_packs > 0 {
        ctx.say(format!(
            "{would}mark {} pack(s) ({}) no snapshot needs{}",
            r.marked_packs,
            human_bytes(r.marked_bytes),
            if r.repacked_packs > 0 {
                format!(
                    ", {} of them after copying their used chunks ({} {verb}written)",
                    r.repacked_packs,
                    human_bytes(r.repacked_bytes_written)
                )
            } else {
                String::new()
            }
        ))?;
    }
    if r.dry_run {
        ctx.say(format!("{} mark(s) due to be swept", r.marks_swept))?;
    } else if r.marks_swept > 0 {
        ctx.say(format!(
            "deleted {} pack(s) ({}) of {} mark(s){}",
            r.swept.packs_deleted,
            human_bytes(r.swept.bytes_deleted),
            r.marks_swept,
            if r.swept.spared.is_empty() {
                String::new()
            } else {
                format!(
                    "; kept {} a snapshot made since the mark uses",
                    r.swept.spared.len()
                )
            }
        ))?;
    }
    for w in &r.waiting {
        ctx.say(format!(
            "mark {} ({} pack(s)) waits: {}; a later prune deletes them",
            w.name, w.packs, w.reason
        ))?;
    }
    if r.marked_packs == 0 && r.marks_swept == 0 && r.waiting.is_empty() {
        ctx.say("nothing to prune")?;
    }
    Ok(())
}

fn forget_ids(ctx: &Ctx, a: &ForgetArgs, repo: &Repository) -> Outcome {
    let ids = repo.forget(&a.snapshots, true)?;
    if !a.dry_run {
        confirm_delete(
            a.yes,
            &format!("Delete {} snapshot(s): {}?", ids.len(), ids.join(", ")),
        )?;
    }
    let removed = if a.dry_run {
        ids
    } else {
        repo.forget(&ids, false)?
    };
    let pruned = prune_after_forget(a, repo)?;
    if ctx.v.json {
        json(&serde_json::json!({ "removed": removed, "dry_run": a.dry_run, "prune": pruned }))?;
    } else {
        let verb = if a.dry_run { "would remove" } else { "removed" };
        for id in &removed {
            ctx.say(format!("{verb} snapshot {id}"))?;
        }
        if let Some(r) = &pruned {
            say_prune(ctx, repo, r)?;
        }
    }
    Ok(exit::OK)
}

fn forget_policy(ctx: &Ctx, a: &ForgetArgs, repo: &Repository, policy: KeepPolicy) -> Outcome {
    let mut opts = ForgetOptions {
        policy,
        filter: SnapshotFilter {
            hosts: a.hosts.clone(),
            tags: a.tags.clone(),
            paths: a.paths.clone(),
        },
        dry_run: true,
    };
    let plan = repo.forget_by_policy(&opts)?;
    let doomed: usize = plan.iter().map(|g| g.remove.len()).sum();
    let groups = if a.dry_run || doomed == 0 {
        plan
    } else {
        confirm_delete(
            a.yes,
            &format!("Delete {doomed} snapshot(s) that the policy does not keep?"),
        )?;
        opts.dry_run = false;
        repo.forget_by_policy(&opts)?
    };
    let pruned = prune_after_forget(a, repo)?;
    if ctx.v.json {
        json(&serde_json::json!({ "groups": groups, "dry_run": a.dry_run, "prune": pruned }))?;
        return Ok(exit::OK);
    }
    for g in &groups {
        ctx.say(format!(
            "snapshots of host {} paths {}:",
            g.host,
            g.paths.join(", ")
        ))?;
        ctx.say(format!("keep {} snapshot(s):", g.keep.len()))?;
        for d in &g.keep {
            ctx.say(format!("  {}  {}", d.id, d.reasons.join(", ")))?;
        }
        let verb = if a.dry_run { "would remove" } else { "removed" };
        ctx.say(format!("{verb} {} snapshot(s):", g.remove.len()))?;
        for d in &g.remove {
            ctx.say(format!("  {}", d.id))?;
        }
    }
    if let Some(r) = &pruned {
        say_prune(ctx, repo, r)?;
    }
    Ok(exit::OK)
}

fn unlock(ctx: &Ctx, a: &UnlockArgs) -> Outcome {
    let repo = ctx.open()?;
    if a.remove_all {
        let n = repo.locks()?.len();
        confirm_delete(
            a.yes,
            &format!("Remove all {n} lock(s), also of running processes?"),
        )?;
    }
    let removed = repo.unlock(a.remove_all)?;
    if ctx.v.json {
        let list: Vec<_> = removed.iter().map(|l| &l.info).collect();
        json(&serde_json::json!({ "removed": list }))?;
    } else {
        for l in &removed {
            ctx.say(format!("removed {}", l.describe()))?;
        }
        ctx.say(format!("{} lock(s) removed", removed.len()))?;
    }
    Ok(exit::OK)
}

fn export(ctx: &Ctx, a: &ExportArgs) -> Outcome {
    let repo = ctx.open_read()?;
    let compression: Option<backup_core::archive::Compression> =
        a.compression.as_deref().map(str::parse).transpose()?;
    let reporter = Reporter::new(ctx.v);
    let result = if a.to == "-" {
        repo.export(
            &a.snapshot,
            Box::new(io::stdout()),
            compression.unwrap_or(backup_core::archive::Compression::None),
            a.level,
            &reporter,
            ctx.cancel,
        )
    } else {
        repo.export_to_file(
            &a.snapshot,
            std::path::Path::new(&a.to),
            compression,
            a.level,
            &reporter,
            ctx.cancel,
        )
    };
    reporter.finish();
    let summary = match result {
        Err(backup_core::Error::AlreadyExists { path }) => {
            return Err(Failure::Exit(
                exit::USAGE,
                format!("{path} exists; remove it or give another --to"),
            ));
        }
        other => other?,
    };
    if a.to == "-" {
        // stdout holds the export; nothing else may go there.
    } else if ctx.v.json {
        json(&summary)?;
    } else {
        ctx.say(format!(
            "exported snapshot {} to {} ({} before compression)",
            summary.snapshot,
            a.to,
            human_bytes(summary.stream_bytes)
        ))?;
    }
    Ok(exit::OK)
}

fn copy(ctx: &Ctx, a: &CopyArgs) -> Outcome {
    let (from, from_options) = match &a.from_repo {
        Some(loc) => (loc.as_str(), &a.from_options),
        None => (ctx.location()?, &ctx.cli.options),
    };
    let (to, to_options) = match &a.to_repo {
        Some(loc) => (loc.as_str(), &a.to_options),
        None => (ctx.location()?, &ctx.cli.options),
    };
    let source = ctx.open_at(from, from_options)?;
    let source = if ctx.cli.no_lock {
        source.without_read_locks()
    } else {
        source
    };
    let dest = ctx.open_at(to, to_options)?;
    if source.location() == dest.location() {
        return Err(Failure::Exit(
            exit::USAGE,
            format!(
                "copy needs two repositories, but both are {} (pass --from-repo and --to-repo)",
                source.location()
            ),
        ));
    }
    let reporter = Reporter::new(ctx.v);
    let ids = [a.snapshots.as_slice(), a.backup_ids.as_slice()].concat();
    let summary = source.copy_to(&dest, &ids, &reporter, ctx.cancel)?;
    reporter.finish();
    if ctx.v.json {
        json(&serde_json::json!({
            "from": source.location(),
            "to": dest.location(),
            "copied": summary.copied,
            "skipped": summary.skipped,
            "bytes": summary.bytes,
        }))?;
    } else {
        for id in &summary.copied {
            ctx.say(format!("copied snapshot {id}"))?;
        }
        for id in &summary.skipped {
            ctx.say(format!(
                "skipped snapshot {id}: already in {}",
                dest.location()
            ))?;
        }
        ctx.say(format!(
            "copied {} snapshot(s), {}, from {} to {}; {} already there",
            summary.copied.len(),
            human_bytes(summary.bytes),
            source.location(),
            dest.location(),
            summary.skipped.len()
        ))?;
    }
    Ok(exit::OK)
}
