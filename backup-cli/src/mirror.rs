//! `backupkit mirror` (alias `sync`): flags to [`MirrorOptions`], the
//! engine, and the summary.

use std::fmt::Write as _;
use std::sync::Arc;

use backup_core::mirror::{
    self, MirrorOptions, MirrorSource, MirrorSummary, VerifyMode, VerifyReport,
};
use backup_core::source::Excludes;
use backup_core::tree::Tree;
use backup_core::{Error, TargetOptions};

use crate::args::MirrorArgs;
use crate::commands::{Ctx, Failure, Outcome};
use crate::exit;
use crate::output::{Reporter, human_bytes, json, shown};

/// The sources and the destination, opened through the registry.
fn trees(ctx: &Ctx, a: &MirrorArgs) -> Result<(Vec<MirrorSource>, Arc<dyn Tree>), Failure> {
    let (dest_loc, source_locs) = a.paths.split_last().expect("clap requires two paths");
    let mut source_options: TargetOptions = a.source_options.iter().cloned().collect();
    if a.copy_links {
        source_options.insert("copy_links".into(), "true".into());
    }
    let dest_options: TargetOptions = ctx.cli.options.iter().cloned().collect();
    let mut trees: Vec<Arc<dyn Tree>> = Vec::new();
    for loc in source_locs {
        trees.push(
            ctx.registry
                .open_tree(loc, &with_timeout(loc, &source_options, a))?,
        );
    }
    let sources = mirror::sources_for(trees)?;
    let dest = ctx
        .registry
        .open_tree(dest_loc, &with_timeout(dest_loc, &dest_options, a))?;
    Ok((sources, dest))
}

/// `--timeout` as the location's own option: `timeout` (seconds) for SSH
/// hosts and rclone remotes, `mount_timeout` for local paths; an option
/// given with `-o` wins.
fn with_timeout(location: &str, options: &TargetOptions, a: &MirrorArgs) -> TargetOptions {
    let mut options = options.clone();
    if let Some(t) = a.timeout {
        let secs = t.as_secs().max(1);
        match backup_core::Registry::scheme_of(location) {
            "sftp" | "ssh" | "rclone" => {
                options.entry("timeout".into()).or_insert(secs.to_string());
            }
            backup_core::registry::LOCAL_SCHEME => {
                options
                    .entry("mount_timeout".into())
                    .or_insert(format!("{secs}s"));
            }
            _ => {}
        }
    }
    options
}

pub(crate) fn mirror(ctx: &Ctx, a: &MirrorArgs) -> Outcome {
    let (sources, dest) = trees(ctx, a)?;
    let mut patterns = a.excludes.clone();
    for f in &a.exclude_files {
        patterns.extend(Excludes::read_pattern_file(f)?);
    }
    let excludes = Excludes::new(&patterns)?;
    let verify = a
        .verify
        .as_deref()
        .map(str::parse::<VerifyMode>)
        .transpose()?;
    let hashers = ctx.registry.hashers()?;
    let reporter = Reporter::new(ctx.v).listing_plan(a.dry_run);
    if a.verify_only {
        let mode = verify.unwrap_or(VerifyMode::Size);
        let result = mirror::verify(
            &sources,
            dest.as_ref(),
            &excludes,
            mode,
            a.delete,
            hashers.as_ref(),
            &reporter,
            ctx.cancel,
        );
        reporter.finish();
        return report_verify(ctx, &result?);
    }
    let opts = MirrorOptions {
        excludes,
        delete: a.delete,
        max_delete: a.max_delete.as_deref().map(str::parse).transpose()?,
        update: a.update,
        checksum: a.checksum,
        modify_window: a.modify_window,
        backup_dir: a.backup_dir.clone(),
        dry_run: a.dry_run,
        transfers: a.transfers.map(usize::from),
        bwlimit: a.bwlimit.as_deref().map(mirror::parse_rate).transpose()?,
        full_scan: a.full_scan,
        verify,
    };
    let result = mirror::mirror(
        &sources,
        dest.as_ref(),
        &opts,
        hashers.as_ref(),
        &reporter,
        ctx.cancel,
    );
    reporter.finish();
    report(ctx, &result?)
}

/// A verification's report (JSON or lines) and its exit code.
pub(crate) fn report_verify(ctx: &Ctx, report: &VerifyReport) -> Outcome {
    if ctx.v.json {
        json(report)?;
    } else {
        say_report(ctx, report)?;
    }
    Ok(if report.matches() {
        exit::OK
    } else {
        exit::INTEGRITY
    })
}

/// A mirror's summary (JSON or a line), its warnings, and its exit code.
pub(crate) fn report(ctx: &Ctx, summary: &MirrorSummary) -> Outcome {
    if ctx.v.json {
        json(summary)?;
    } else {
        say_summary(ctx, summary)?;
    }
    if let Some(reason) = &summary.refused {
        eprintln!("backupkit: error: refusing to delete: {reason}");
    }
    if !summary.failed.is_empty() {
        eprintln!(
            "backupkit: warning: the mirror is incomplete: {} file(s) could not be mirrored \
             (named above); the next run retries them",
            summary.failed.len()
        );
    }
    if let Some(v) = &summary.verify
        && !v.matches()
    {
        let e = Error::MirrorMismatch {
            destination: v.destination.clone(),
            detail: v.describe(),
        };
        return Err(Failure::Core(e));
    }
    Ok(if summary.is_complete() {
        exit::OK
    } else {
        exit::INCOMPLETE
    })
}

fn say_summary(ctx: &Ctx, s: &MirrorSummary) -> std::io::Result<()> {
    let head = if s.dry_run {
        "dry run: would mirror"
    } else {
        "mirrored"
    };
    let mut line = format!(
        "{head} to {}: {} copied, {} updated, {} deleted, {} unchanged",
        shown(&s.destination),
        s.copied,
        s.updated,
        s.deleted,
        s.unchanged
    );
    if s.skipped > 0 {
        let _ = write!(line, ", {} skipped", s.skipped);
    }
    if s.extraneous > 0 {
        let _ = write!(line, ", {} not in the source (kept)", s.extraneous);
    }
    let _ = write!(line, ", {} in {:.1}s", human_bytes(s.bytes), s.seconds);
    if let Some(t) = &s.transport {
        let _ = write!(line, " ({} files through {t})", s.transport_files);
    }
    ctx.say(line)?;
    for n in &s.notices {
        if !ctx.v.quiet {
            eprintln!("backupkit: note: {}: {}", shown(&n.path), shown(&n.message));
        }
    }
    if let Some(v) = &s.verify {
        say_report(ctx, v)?;
    }
    Ok(())
}

fn say_report(ctx: &Ctx, r: &VerifyReport) -> std::io::Result<()> {
    for p in &r.missing {
        ctx.say(format!("missing   {}", shown(p)))?;
    }
    for d in &r.different {
        ctx.say(format!(
            "different {} ({})",
            shown(&d.path),
            shown(&d.reason)
        ))?;
    }
    for p in &r.extra {
        ctx.say(format!("extra     {}", shown(p)))?;
    }
    for d in &r.unreadable {
        ctx.say(format!(
            "unreadable {} ({})",
            shown(&d.path),
            shown(&d.reason)
        ))?;
    }
    let verdict = if r.matches() { "ok" } else { "MISMATCH" };
    ctx.say(format!(
        "verify ({}) {}: {verdict}: {} files, {}, {} hashed; {} missing, {} different, {} extra",
        r.mode,
        shown(&r.destination),
        r.files,
        human_bytes(r.bytes),
        r.hashed,
        r.missing.len(),
        r.different.len(),
        r.extra.len()
    ))
}
