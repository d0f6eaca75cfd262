//! Database commands: `backup --db`, `auto`, and restoring a database
//! snapshot. The engines are backup-core's; this only maps flags and prints.

use backup_core::registry::database_url;
use backup_core::snapshot::SnapshotMeta;
use backup_core::{AutoOptions, DatabaseBackupOptions, Repository};

use crate::args::{AutoArgs, BackupArgs, RestoreArgs};
use crate::commands::{Ctx, Failure, Outcome, confirm_delete};
use crate::exit;
use crate::output::{Reporter, human_bytes, json};

fn db_options(
    tags: &[String],
    compression: &str,
    level: Option<i32>,
) -> Result<DatabaseBackupOptions, Failure> {
    Ok(DatabaseBackupOptions {
        tags: tags.iter().map(|t| t.trim().to_owned()).collect(),
        compression: compression.parse()?,
        level,
        host: None,
    })
}

/// One line about a database snapshot.
fn describe_dump(s: &SnapshotMeta) -> String {
    let (tables, rows) = s
        .database
        .as_ref()
        .map_or((0, 0), |d| (d.tables.len(), d.tables.values().sum::<u64>()));
    format!(
        "snapshot {} saved: {} ({tables} tables, {rows} rows), {} dumped, {} stored in {:.1}s",
        s.id,
        s.paths.join(", "),
        human_bytes(s.source_bytes),
        human_bytes(s.size_bytes),
        s.duration_seconds
    )
}

pub(crate) fn backup(ctx: &Ctx, a: &BackupArgs, db: &str) -> Outcome {
    let opts = db_options(&a.tags, &a.compression, a.level)?;
    let repo = ctx.open()?;
    let source = ctx.registry.database_source(&database_url(db)?)?;
    let reporter = Reporter::new(ctx.v);
    let result = repo.backup_database(source.as_ref(), &opts, &reporter, ctx.cancel);
    reporter.finish();
    let meta = result?;
    if ctx.v.json {
        // The same shape as a files backup's summary: `.snapshot.id`.
        json(&serde_json::json!({ "snapshot": meta }))?;
    } else {
        ctx.say(describe_dump(&meta))?;
    }
    Ok(exit::OK)
}

pub(crate) fn auto(ctx: &Ctx, a: &AutoArgs) -> Outcome {
    let opts = AutoOptions {
        backup: db_options(&a.tags, &a.compression, a.level)?,
        min_interval_seconds: a.min_interval,
        keep_last: a.keep,
    };
    let repo = ctx.open()?;
    let source = ctx.registry.database_source(&database_url(&a.db)?)?;
    let reporter = Reporter::new(ctx.v);
    let result = repo.auto_backup_database(source.as_ref(), &opts, &reporter, ctx.cancel);
    reporter.finish();
    let outcome = result?;
    if ctx.v.json {
        json(&outcome)?;
        return Ok(exit::OK);
    }
    match (&outcome.snapshot, outcome.action) {
        (Some(s), "backed_up") => ctx.say(describe_dump(s))?,
        (Some(s), _) => ctx.say(format!(
            "skipped: the newest dump, {}, is less than {}s old",
            s.id, a.min_interval
        ))?,
        (None, _) => {}
    }
    if !outcome.pruned.is_empty() {
        ctx.say(format!(
            "removed {} older dump(s): {}",
            outcome.pruned.len(),
            outcome.pruned.join(", ")
        ))?;
    }
    Ok(exit::OK)
}

pub(crate) fn restore(
    ctx: &Ctx,
    a: &RestoreArgs,
    repo: &Repository,
    meta: &SnapshotMeta,
) -> Outcome {
    let given = a.target.to_str().ok_or_else(|| {
        Failure::Exit(
            exit::USAGE,
            format!("target {} is not valid UTF-8", a.target.display()),
        )
    })?;
    let url = database_url(given)?;
    let mut replace = a.force;
    if !replace && ctx.registry.database_target(&url)?.exists()? {
        confirm_delete(
            false,
            &format!(
                "Replace the existing database {given} with snapshot {}?",
                meta.id
            ),
        )
        .map_err(|_| {
            Failure::Exit(
                exit::FAILURE,
                format!(
                    "{given} already exists: pass --force to replace it (or confirm on a terminal)"
                ),
            )
        })?;
        replace = true;
    }
    let reporter = Reporter::new(ctx.v);
    let result = repo.restore_database(&meta.id, &url, replace, &reporter, ctx.cancel);
    reporter.finish();
    let s = result?;
    if ctx.v.json {
        json(&s)?;
    } else {
        ctx.say(format!(
            "restored snapshot {} into {}: {} tables, {} rows, counts verified",
            s.snapshot,
            s.target,
            s.tables.len(),
            s.tables.values().sum::<u64>()
        ))?;
    }
    Ok(exit::OK)
}
