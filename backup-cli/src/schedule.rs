//! `backupkit schedule`: when each scheduled job of the config file runs
//! next, or when a crontab expression given on the command line would.

use backup_core::schedule::{Cron, Schedule};
use chrono::{DateTime, Local, TimeZone};

use crate::args::{ScheduleArgs, ServeArgs};
use crate::commands::{Ctx, Failure, Outcome};
use crate::exit;
use crate::output::{json, out};

pub(crate) fn schedule(ctx: &Ctx, a: &ScheduleArgs) -> Outcome {
    let from = match &a.from {
        Some(text) => parse_from(text)?,
        None => Local::now(),
    };
    let rows: Vec<(String, Option<Schedule>, bool)> = if let Some(expr) = &a.expr {
        let cron = Cron::parse(expr).map_err(|e| match e {
            backup_core::Error::InvalidInput(m) => Failure::Exit(exit::USAGE, m),
            other => other.into(),
        })?;
        vec![(String::new(), Some(Schedule::Cron(cron)), true)]
    } else {
        let config = crate::jobs::load(ctx)?;
        for name in &a.jobs {
            if !config.jobs.iter().any(|j| &j.name == name) {
                return Err(Failure::Exit(
                    exit::USAGE,
                    format!(
                        "no job {name:?} in {} (its jobs: {})",
                        config.file.display(),
                        config
                            .jobs
                            .iter()
                            .map(|j| j.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            }
        }
        config
            .jobs
            .iter()
            .filter(|j| a.jobs.is_empty() || a.jobs.contains(&j.name))
            .map(|j| (j.name.clone(), j.schedule.clone(), j.enabled))
            .collect()
    };
    let next: Vec<Vec<DateTime<Local>>> = rows
        .iter()
        .map(|(_, s, enabled)| match s {
            Some(s) if *enabled => s.upcoming(&from, a.count),
            _ => Vec::new(),
        })
        .collect();
    if ctx.v.json {
        let shown: Vec<serde_json::Value> = rows
            .iter()
            .zip(&next)
            .map(|((job, s, enabled), times)| {
                serde_json::json!({
                    "job": job,
                    "schedule": s.as_ref().map(ToString::to_string),
                    "enabled": enabled,
                    "next": times.iter().map(DateTime::to_rfc3339).collect::<Vec<_>>(),
                })
            })
            .collect();
        json(&shown)?;
        return Ok(exit::OK);
    }
    for ((job, s, enabled), times) in rows.iter().zip(&next) {
        let label = if job.is_empty() {
            String::new()
        } else {
            format!("{job}  ")
        };
        match s {
            None => out(format!(
                "{label}not scheduled (runs with `backupkit run {job}`)"
            ))?,
            Some(s) if !enabled => out(format!("{label}{s}  (disabled: never runs)"))?,
            Some(s) => {
                let start = if matches!(s, Schedule::Every(_)) {
                    "  (at start-up, then after each start)"
                } else {
                    ""
                };
                out(format!("{label}{s}{start}"))?;
                for t in times {
                    out(format!("  {}", t.format("%Y-%m-%d %H:%M %a (%:z)")))?;
                }
            }
        }
    }
    Ok(exit::OK)
}

/// `--from`: a local time (`2026-03-29 01:30`, `2026-03-29T01:30`) or an
/// RFC 3339 time with its offset.
fn parse_from(text: &str) -> Result<DateTime<Local>, Failure> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Local));
    }
    for format in [
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%dT%H:%M:%S",
    ] {
        if let Ok(naive) = chrono::NaiveDateTime::parse_from_str(text, format) {
            return Local.from_local_datetime(&naive).earliest().ok_or_else(|| {
                Failure::Exit(
                    exit::USAGE,
                    format!("--from {text:?} does not exist in the local time zone (a clock change skips it)"),
                )
            });
        }
    }
    Err(Failure::Exit(
        exit::USAGE,
        format!("--from {text:?} is not a time (2026-03-29 01:30, or RFC 3339 with an offset)"),
    ))
}

/// `backupkit serve`: the scheduler in the foreground (see
/// `backup_core::schedule::service`). Exits 0 after a clean stop, and
/// `INTERRUPTED` when runs were still going at the end of the bound.
pub(crate) fn serve(ctx: &Ctx, a: &ServeArgs) -> Outcome {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use backup_core::jobs::log::LogFile;
    use backup_core::schedule::history::{History, default_path};
    use backup_core::schedule::service::{self, Service};

    let found = backup_core::jobs::find::locate(ctx.cli.config.as_deref())?;
    let config_path = found.path.clone();
    let load = || backup_core::jobs::model::load(&config_path, ctx.registry);
    let config = load()?;
    let history_path = a
        .history
        .clone()
        .or_else(|| default_path(&config.file))
        .ok_or_else(|| {
            Failure::Exit(
                exit::USAGE,
                "no place for the run history: set HOME or XDG_STATE_HOME, or pass --history FILE"
                    .into(),
            )
        })?;
    let history = History::load(&history_path)?;
    let log_path = a.log_file.clone().or_else(|| config.log_file.clone());
    let log = log_path.as_deref().map(LogFile::open).transpose()?;
    let sink = Arc::new(crate::jobs::Sinks {
        log,
        quiet: ctx.v.quiet,
        verbose: ctx.v.verbose > 0,
    });
    let term = Arc::new(AtomicBool::new(false));
    let hup = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGTERM, Arc::clone(&term))
        .and_then(|_| signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&hup)))
        .map_err(|e| Failure::Exit(exit::FAILURE, format!("cannot handle signals: {e}")))?;
    let scheduled = config
        .jobs
        .iter()
        .filter(|j| j.schedule.is_some() && j.enabled)
        .count();
    let listen = a
        .listen
        .clone()
        .or_else(|| config.http.listen.clone())
        .unwrap_or_else(|| crate::http::DEFAULT_LISTEN.to_owned());
    let token = config
        .http
        .token
        .as_ref()
        .map(|t| {
            t.resolve()
                .map_err(|e| Failure::Exit(exit::USAGE, format!("http.token: {e}")))
        })
        .transpose()?;
    let mut svc = Service::new(
        config,
        Arc::clone(ctx.registry),
        history,
        sink,
        &Local::now(),
    );
    let page = if listen == "off" {
        "no status page".to_owned()
    } else {
        let at = crate::http::start(&listen, token, svc.board(), svc.requests())
            .map_err(|e| Failure::Exit(exit::USAGE, e))?;
        format!("status on http://{at}/")
    };
    eprintln!(
        "backupkit serve: {scheduled} scheduled job(s) from {}; history {}; {page}; SIGHUP \
         reloads, SIGTERM or Ctrl-C stops",
        config_path.display(),
        history_path.display()
    );
    let left = service::serve(
        &mut svc,
        &load,
        &|| term.load(Ordering::SeqCst) || ctx.cancel.is_cancelled(),
        &|| hup.swap(false, Ordering::SeqCst),
        a.stop_timeout,
    );
    if left.is_empty() {
        eprintln!("backupkit serve: stopped");
        Ok(exit::OK)
    } else {
        Err(Failure::Exit(
            exit::INTERRUPTED,
            format!(
                "stopped with {} still running after {} (nothing partial is visible): {}",
                left.len(),
                backup_core::schedule::interval(a.stop_timeout),
                left.join(", ")
            ),
        ))
    }
}
