//! Running jobs: each job's `before` hooks, its databases dumped once into a
//! spool, its destinations side by side (each on its own: one that fails
//! is reported and the others go on), retention, and the `after` or
//! `on_failure` hooks; the result of every destination in a
//! [`RunSummary`].
//!
//! # Contract
//!
//! - Nothing a destination already holds is damaged by a run: mirrors and
//!   snapshots keep their own guarantees (whole files at final names,
//!   snapshots visible only when complete).
//! - A database is dumped once per job, to a spool file beside the run
//!   (flat memory, the dump streams to disk), and every destination stores
//!   that one dump: snapshot repositories as a database snapshot, mirrors
//!   as `databases/NAME` files.
//! - A dry run writes nothing anywhere: no dump, no hook, no repository.
//! - Resolved secrets are scrubbed from every message.

use std::collections::BTreeMap;
use std::io::{BufWriter, Read, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::Serialize;

use crate::database::{DatabaseSource, RowCounts};
use crate::jobs::hooks::{self, HookEnd};
use crate::jobs::log::{EventSink, Level, LogEvent};
use crate::jobs::model::{Config, Destination, Job, Kind, OptionValue, Source};
use crate::jobs::notify::{self, HttpRequest, Mail, SmtpServer, When};
use crate::jobs::secret::Scrubber;
use crate::jobs::secret::Secret;
use crate::mirror::{self, MirrorOptions, MirrorSource};
use crate::registry::redact;
use crate::source::Excludes;
use crate::{
    BackupOptions, Cancel, DatabaseBackupOptions, Error, ForgetOptions, NoProgress, Registry,
    Repository, Result, SnapshotFilter, TargetOptions,
};

/// What to run.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Job names; empty for every enabled job.
    pub jobs: Vec<String>,
    /// Destination names (`nas`, or `smb` for `smb.csvs` and
    /// `smb.results`); empty for every enabled destination.
    pub only: Vec<String>,
    /// Say what would be done, write nothing.
    pub dry_run: bool,
    /// Only apply each snapshot destination's retention (seed 002's
    /// `cleanup`): no backup, no dump, no hook, no notification.
    pub cleanup: bool,
    /// Pull jobs: only these devices (id, name or number); empty for all.
    pub devices: Vec<String>,
    /// Pull jobs: only these data kinds; empty for all.
    pub kinds: Vec<String>,
    /// Pull jobs: the fleets' live state, kept across runs (the service's);
    /// `None` starts afresh.
    pub fleets: Option<Arc<crate::fleet::status::Fleets>>,
}

/// How something ended, worst last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Ok,
    /// Not run: disabled, or a `before` hook asked to skip.
    Skipped,
    /// Done, but some files could not be stored as they were.
    Incomplete,
    Failed,
}

impl Outcome {
    /// The worst of several results, skips aside: skipped only when all
    /// were, ok when there were none.
    pub fn worst(all: impl Iterator<Item = Outcome>) -> Outcome {
        let mut any = false;
        let mut worst = None;
        for o in all {
            any = true;
            if o != Outcome::Skipped {
                worst = worst.max(Some(o));
            }
        }
        match worst {
            Some(w) => w,
            None if any => Outcome::Skipped,
            None => Outcome::Ok,
        }
    }

    /// The outcome named as [`Outcome::as_str`] names it.
    pub fn parse(s: &str) -> Option<Outcome> {
        match s {
            "ok" => Some(Outcome::Ok),
            "skipped" => Some(Outcome::Skipped),
            "incomplete" => Some(Outcome::Incomplete),
            "failed" => Some(Outcome::Failed),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Skipped => "skipped",
            Outcome::Incomplete => "incomplete",
            Outcome::Failed => "failed",
        }
    }
}

/// One destination's result.
#[derive(Debug, Clone, Serialize)]
pub struct DestinationResult {
    pub job: String,
    pub destination: String,
    /// `mirror` or `snapshots`.
    pub kind: &'static str,
    /// The location, without credentials.
    pub location: String,
    pub result: Outcome,
    /// Files copied (mirror) or stored (snapshots).
    pub files: u64,
    pub bytes: u64,
    pub seconds: f64,
    pub error: Option<String>,
    /// Snapshots taken.
    pub snapshots: Vec<String>,
    /// Snapshots removed by retention (or, in a dry run, that would be).
    pub forgotten: Vec<String>,
    /// What was (or would be) done, line by line.
    pub details: Vec<String>,
}

impl DestinationResult {
    /// A destination's result before anything is done: ok, nothing moved.
    fn new(job: &str, destination: String, kind: &'static str, location: String) -> Self {
        Self {
            job: job.to_owned(),
            destination,
            kind,
            location,
            result: Outcome::Ok,
            files: 0,
            bytes: 0,
            seconds: 0.0,
            error: None,
            snapshots: Vec::new(),
            forgotten: Vec::new(),
            details: Vec::new(),
        }
    }
}

/// One job's result.
#[derive(Debug, Clone, Serialize)]
pub struct JobResult {
    pub job: String,
    pub result: Outcome,
    /// Why the job as a whole failed or was skipped (a hook, a dump).
    pub error: Option<String>,
    pub destinations: Vec<DestinationResult>,
    pub seconds: f64,
}

impl JobResult {
    /// A job's result before it runs: ok, nothing done.
    fn new(job: &str) -> Self {
        Self {
            job: job.to_owned(),
            result: Outcome::Ok,
            error: None,
            destinations: Vec::new(),
            seconds: 0.0,
        }
    }
}

/// A run's result.
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    pub config: String,
    pub host: String,
    pub dry_run: bool,
    pub result: Outcome,
    pub jobs: Vec<JobResult>,
    pub seconds: f64,
}

/// Runs the selected jobs of `config` one after another.
///
/// # Errors
///
/// [`Error::InvalidInput`] for a job or destination name the config does
/// not have, and [`Error::Cancelled`]; everything else is a result in the
/// summary.
pub fn run(
    config: &Config,
    registry: &Arc<Registry>,
    opts: &RunOptions,
    sink: &dyn EventSink,
    cancel: &Cancel,
) -> Result<RunSummary> {
    let started = Instant::now();
    let jobs = select(config, opts)?;
    let mut results = Vec::new();
    for job in jobs {
        cancel.check()?;
        let r = if job.enabled {
            let mut runner = JobRunner {
                config,
                job,
                registry,
                opts,
                sink,
                cancel,
                scrubber: Scrubber::default(),
            };
            runner.run()
        } else {
            let why = "disabled in the config (`enabled: false`)";
            sink.event(&event(Level::Info, job, None, format!("skipped: {why}")));
            JobResult {
                job: job.name.clone(),
                result: Outcome::Skipped,
                error: Some(why.into()),
                destinations: Vec::new(),
                seconds: 0.0,
            }
        };
        results.push(r);
    }
    cancel.check()?;
    let result = Outcome::worst(results.iter().map(|j| j.result));
    Ok(RunSummary {
        config: config.file.display().to_string(),
        host: crate::lock::this_host(),
        dry_run: opts.dry_run,
        result,
        jobs: results,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The jobs to run.
fn select<'c>(config: &'c Config, opts: &RunOptions) -> Result<Vec<&'c Job>> {
    let names: Vec<&str> = config.jobs.iter().map(|j| j.name.as_str()).collect();
    for j in &opts.jobs {
        if !names.contains(&j.as_str()) {
            return Err(Error::InvalidInput(format!(
                "no job named {j:?} in {} (its jobs: {})",
                config.file.display(),
                names.join(", ")
            )));
        }
    }
    // Tasks (cleanup, check) run when named, or on their schedule.
    let jobs: Vec<&Job> = config
        .jobs
        .iter()
        .filter(|j| {
            if opts.jobs.is_empty() {
                j.task.is_none()
            } else {
                opts.jobs.contains(&j.name)
            }
        })
        .collect();
    for o in &opts.only {
        let known = jobs
            .iter()
            .any(|j| j.destinations.iter().any(|d| selects(o, &d.name)));
        if !known {
            let all: Vec<&str> = jobs
                .iter()
                .flat_map(|j| j.destinations.iter().map(|d| d.name.as_str()))
                .collect();
            return Err(Error::InvalidInput(format!(
                "no destination named {o:?} in the jobs to run (their destinations: {})",
                all.join(", ")
            )));
        }
    }
    Ok(jobs)
}

/// Whether `--only NAME` selects a destination: its name, or the group it
/// belongs to (`smb` selects `smb.csvs`).
fn selects(only: &str, name: &str) -> bool {
    name == only
        || name
            .strip_prefix(only)
            .is_some_and(|rest| rest.starts_with('.'))
}

fn event(level: Level, job: &Job, dest: Option<&str>, message: String) -> LogEvent {
    LogEvent {
        level,
        job: Some(job.name.clone()),
        destination: dest.map(str::to_owned),
        message,
    }
}

struct JobRunner<'a> {
    config: &'a Config,
    job: &'a Job,
    registry: &'a Arc<Registry>,
    opts: &'a RunOptions,
    sink: &'a dyn EventSink,
    cancel: &'a Cancel,
    scrubber: Scrubber,
}

/// A database dumped into the spool, standing in for the database for
/// every destination.
#[derive(Debug)]
struct Spooled {
    engine: &'static str,
    describe: String,
    dump_name: String,
    file: PathBuf,
    rows: RowCounts,
}

impl DatabaseSource for Spooled {
    fn engine(&self) -> &'static str {
        self.engine
    }

    fn describe(&self) -> String {
        self.describe.clone()
    }

    fn dump_name(&self) -> String {
        self.dump_name.clone()
    }

    fn dump(&self, out: &mut dyn Write, cancel: &Cancel) -> Result<RowCounts> {
        let mut f = std::fs::File::open(&self.file)
            .map_err(|e| Error::io("read the spooled dump", self.file.display().to_string(), e))?;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            cancel.check()?;
            let n = f.read(&mut buf).map_err(|e| {
                Error::io("read the spooled dump", self.file.display().to_string(), e)
            })?;
            if n == 0 {
                break;
            }
            out.write_all(&buf[..n])
                .map_err(|e| Error::io("write the dump", &self.dump_name, e))?;
        }
        Ok(self.rows.clone())
    }
}

/// The job's databases, dumped: by source name, the dump or why it failed.
type Dumps = BTreeMap<String, std::result::Result<Arc<Spooled>, String>>;

impl JobRunner<'_> {
    fn log(&self, level: Level, dest: Option<&str>, message: impl AsRef<str>) {
        self.sink.event(&event(
            level,
            self.job,
            dest,
            self.scrubber.scrub(message.as_ref()),
        ));
    }

    fn run(&mut self) -> JobResult {
        let started = Instant::now();
        let job = self.job;
        if let Some(pull) = &job.pull {
            return self.run_pull(pull, started);
        }
        if let Some(task) = &job.task {
            return self.run_task(task, started);
        }
        let dests: Vec<&Destination> = job
            .destinations
            .iter()
            .filter(|d| {
                self.opts.only.is_empty() || self.opts.only.iter().any(|o| selects(o, &d.name))
            })
            .collect();
        let mut result = JobResult::new(&job.name);
        if dests.is_empty() {
            self.log(Level::Info, None, "skipped: no destination selected");
            result.result = Outcome::Skipped;
            return result;
        }
        self.log(
            Level::Info,
            None,
            format!(
                "{} {} destination(s)",
                if self.opts.dry_run {
                    "dry run:"
                } else {
                    "starting:"
                },
                dests.len()
            ),
        );
        // Secrets are resolved first: a missing one fails the job before
        // any hook or dump.
        let resolved = match self.resolve(&dests) {
            Ok(r) => r,
            Err(e) => return self.fail_job(result, started, &e.to_string()),
        };
        let quiet = self.opts.dry_run || self.opts.cleanup;
        if !quiet {
            self.ping("/start", "");
        }
        let work = || {
            let spool = Spool::new().map_err(|e| e.to_string())?;
            let dumps = self.dump_databases(&dests, &resolved, &spool);
            if self.cancel.is_cancelled() {
                return Err("interrupted".to_owned());
            }
            Ok(self.destinations(&dests, &resolved, &dumps, &spool))
        };
        let mut result = self.run_resolved(result, started, &work);
        // An interrupted run reports nothing: the user stopped it.
        if !quiet && !self.cancel.is_cancelled() {
            self.notify(&result);
        }
        result.seconds = started.elapsed().as_secs_f64();
        result
    }

    /// The `before` hooks, the work (the destinations, or a pull round),
    /// then the `after` or `on_failure` hooks.
    fn run_resolved(
        &self,
        mut result: JobResult,
        started: Instant,
        work: &dyn Fn() -> std::result::Result<Vec<DestinationResult>, String>,
    ) -> JobResult {
        let job = self.job;
        if !self.opts.dry_run
            && !self.opts.cleanup
            && let Some(end) = self.hooks("before", &job.hooks.before, None)
        {
            if end == HookEnd::Failed(Some(hooks::SKIP_CODE)) {
                let why = format!("a before hook exited with {} (skip)", hooks::SKIP_CODE);
                self.log(Level::Info, None, format!("skipped: {why}"));
                result.result = Outcome::Skipped;
                result.error = Some(why);
                result.seconds = started.elapsed().as_secs_f64();
                return result;
            }
            let why = format!("a before hook {}", end.describe(job.hooks.timeout));
            let mut r = self.fail_job(result, started, &why);
            self.after(&mut r);
            return r;
        }
        result.destinations = match work() {
            Ok(d) => d,
            Err(why) => return self.fail_job(result, started, &why),
        };
        result.result = Outcome::worst(result.destinations.iter().map(|d| d.result));
        result.seconds = started.elapsed().as_secs_f64();
        if !self.opts.dry_run && !self.opts.cleanup {
            self.after(&mut result);
        }
        self.log(
            if result.result == Outcome::Failed {
                Level::Error
            } else {
                Level::Info
            },
            None,
            format!(
                "finished: {} in {:.1}s",
                result.result.as_str(),
                result.seconds
            ),
        );
        result
    }

    /// A pull job: a round over its devices, each device's kinds as the
    /// job's destinations (`DEVICE.KIND`).
    fn run_pull(&mut self, pull: &crate::fleet::Pull, started: Instant) -> JobResult {
        let job = self.job;
        let mut result = JobResult::new(&job.name);
        if self.opts.cleanup {
            self.log(Level::Info, None, "skipped: a pull job has no retention");
            result.result = Outcome::Skipped;
            return result;
        }
        self.log(
            Level::Info,
            None,
            if self.opts.dry_run {
                "dry run: pull"
            } else {
                "starting: pull"
            },
        );
        let options = match self.pull_options(pull) {
            Ok(o) => o,
            Err(e) => return self.fail_job(result, started, &e.to_string()),
        };
        if !self.opts.dry_run {
            self.ping("/start", "");
        }
        let status = self.opts.fleets.as_ref().map_or_else(
            || Arc::new(crate::fleet::status::FleetStatus::new()),
            |f| f.get(&job.name),
        );
        let select = crate::fleet::pull::Select {
            devices: self.opts.devices.clone(),
            kinds: self.opts.kinds.clone(),
            dry_run: self.opts.dry_run,
        };
        let log = |level: Level, device: Option<&str>, m: String| self.log(level, device, m);
        let work = || {
            let ctx = crate::fleet::pull::Context {
                job: &job.name,
                pull,
                registry: self.registry,
                options: &options,
                status: &status,
                log: &log,
                cancel: self.cancel,
            };
            let round = crate::fleet::pull::round(&ctx, &select).map_err(|e| match e {
                Error::Cancelled => "interrupted".to_owned(),
                e => crate::check::error_chain(&e),
            })?;
            Ok(pull_results(&job.name, pull, &round))
        };
        let mut result = self.run_resolved(result, started, &work);
        if !self.opts.dry_run && !self.cancel.is_cancelled() {
            self.notify(&result);
        }
        result.seconds = started.elapsed().as_secs_f64();
        result
    }

    /// A task: other jobs' retention, or a check of their repositories
    /// (each repository once), as this job's destinations
    /// (`JOB.DESTINATION`).
    fn run_task(&mut self, task: &crate::jobs::model::Task, started: Instant) -> JobResult {
        use crate::jobs::model::TaskKind;
        let job = self.job;
        let result = JobResult::new(&job.name);
        let targets: Vec<&Job> = self
            .config
            .jobs
            .iter()
            .filter(|j| {
                if task.jobs.is_empty() {
                    j.enabled
                        && j.task.is_none()
                        && j.pull.is_none()
                        && j.destinations.iter().any(|d| d.kind_name() == "snapshots")
                } else {
                    task.jobs.contains(&j.name)
                }
            })
            .collect();
        let what = match task.kind {
            TaskKind::Cleanup => "retention",
            TaskKind::Check { .. } => "check",
        };
        let names: Vec<&str> = targets.iter().map(|j| j.name.as_str()).collect();
        self.log(
            Level::Info,
            None,
            format!("starting: {what} of {}", names.join(", ")),
        );
        if !self.opts.dry_run {
            self.ping("/start", "");
        }
        let checked = std::cell::RefCell::new(std::collections::BTreeSet::new());
        let work = || {
            let mut out = Vec::new();
            for t in &targets {
                let opts = RunOptions {
                    cleanup: true,
                    dry_run: self.opts.dry_run,
                    ..RunOptions::default()
                };
                let mut inner = JobRunner {
                    config: self.config,
                    job: t,
                    registry: self.registry,
                    opts: &opts,
                    sink: self.sink,
                    cancel: self.cancel,
                    scrubber: Scrubber::default(),
                };
                let dests = match &task.kind {
                    TaskKind::Cleanup => inner.run().destinations,
                    TaskKind::Check {
                        read_data,
                        read_data_subset,
                    } => inner.check_repositories(
                        *read_data,
                        read_data_subset.as_deref(),
                        &mut checked.borrow_mut(),
                    ),
                };
                out.extend(dests.into_iter().map(|mut d| {
                    d.destination = format!("{}.{}", t.name, d.destination);
                    d.job.clone_from(&job.name);
                    d
                }));
                if self.cancel.is_cancelled() {
                    return Err("interrupted".to_owned());
                }
            }
            Ok(out)
        };
        let mut result = self.run_resolved(result, started, &work);
        if !self.opts.dry_run && !self.cancel.is_cancelled() {
            self.notify(&result);
        }
        result.seconds = started.elapsed().as_secs_f64();
        result
    }

    /// `check` of each of the job's repositories not in `checked` yet.
    fn check_repositories(
        &mut self,
        read_data: bool,
        read_data_subset: Option<&str>,
        checked: &mut std::collections::BTreeSet<String>,
    ) -> Vec<DestinationResult> {
        let dests: Vec<&Destination> = self
            .job
            .destinations
            .iter()
            .filter(|d| d.enabled && d.kind_name() == "snapshots")
            .filter(|d| checked.insert(d.location.clone()))
            .collect();
        let resolved = self.resolve(&dests);
        let mut out = Vec::new();
        for d in dests {
            let started = Instant::now();
            let mut r = DestinationResult::new(
                &self.job.name,
                d.name.clone(),
                "check",
                redact(&d.location),
            );
            let report = resolved
                .as_ref()
                .map_err(ToString::to_string)
                .and_then(|res| {
                    if self.opts.dry_run {
                        return Ok(None);
                    }
                    let target = self
                        .registry
                        .open_target_with(&d.location, &res.options[&d.name])
                        .map_err(|e| crate::error_chain(&e))?;
                    let repo = Repository::from_target(Arc::clone(self.registry), target)
                        .map_err(|e| crate::error_chain(&e))?;
                    let opts = crate::CheckOptions {
                        read_data,
                        read_data_subset: read_data_subset.map(str::to_owned),
                        snapshots: Vec::new(),
                    };
                    repo.check(&opts, &NoProgress, self.cancel)
                        .map(Some)
                        .map_err(|e| crate::error_chain(&e))
                });
            match report {
                Ok(None) => r.details.push("would check the repository".into()),
                Ok(Some(rep)) => {
                    r.files = rep.snapshots_checked;
                    r.details.push(format!(
                        "checked {} snapshot(s), read the data of {}",
                        rep.snapshots_checked, rep.snapshots_read
                    ));
                    if let Some(first) = rep.problems.first() {
                        r.result = Outcome::Failed;
                        r.error = Some(format!(
                            "{} problem(s); first: {}: {}",
                            rep.problems.len(),
                            first.snapshot,
                            first.message
                        ));
                    }
                }
                Err(e) => {
                    r.result = Outcome::Failed;
                    r.error = Some(self.scrubber.scrub(&e));
                }
            }
            r.seconds = started.elapsed().as_secs_f64();
            self.log(
                if r.result == Outcome::Failed {
                    Level::Error
                } else {
                    Level::Info
                },
                Some(&d.name),
                format!(
                    "check: {}{}",
                    r.result.as_str(),
                    r.error
                        .as_deref()
                        .map(|e| format!(": {e}"))
                        .unwrap_or_default()
                ),
            );
            out.push(r);
        }
        out
    }

    /// The SSH options every device is opened with.
    fn pull_options(&mut self, pull: &crate::fleet::Pull) -> Result<TargetOptions> {
        let mut opts = TargetOptions::new();
        for (k, v) in &pull.options {
            let value = match v {
                OptionValue::Plain(s) => s.clone(),
                OptionValue::Secret(s) => {
                    let value = s
                        .resolve()
                        .map_err(|e| Error::InvalidInput(format!("pull: option {k}: {e}")))?;
                    self.scrubber.add(&value);
                    value
                }
            };
            opts.insert(k.clone(), value);
        }
        let secs = pull.timeout.as_secs().max(1);
        opts.entry("timeout".into())
            .or_insert_with(|| secs.to_string());
        opts.entry("connect_timeout".into())
            .or_insert_with(|| secs.min(15).to_string());
        // One connection attempt: the round retries a device itself, with
        // backoff, and gives up on it when its pull is cancelled.
        opts.entry("retries".into()).or_insert_with(|| "1".into());
        opts.insert("host_keys".into(), pull.host_keys.as_str().into());
        if let Some(p) = &pull.known_hosts {
            opts.insert("known_hosts".into(), p.display().to_string());
        }
        if let Some(p) = &pull.identity_file {
            opts.insert("identity_file".into(), p.display().to_string());
        }
        Ok(opts)
    }

    /// A heartbeat ping (`/start`, nothing for success, `/fail`), if the
    /// job has one; a ping that fails is logged.
    fn ping(&self, suffix: &str, body: &str) {
        let Some(url) = self.job.notify.as_ref().and_then(|n| n.ping.as_ref()) else {
            return;
        };
        let request = HttpRequest {
            method: "POST",
            url: format!("{}{suffix}", url.trim_end_matches('/')),
            headers: Vec::new(),
            content_type: Some("text/plain; charset=utf-8"),
            body: body.as_bytes().to_vec(),
            ca_file: None,
            timeout: notify::DEFAULT_TIMEOUT,
        };
        let sent = self.registry.sender().and_then(|s| s.http(&request));
        if let Err(e) = sent {
            self.log(
                Level::Warn,
                None,
                format!("cannot ping {}: {e}", redact(&request.url)),
            );
        }
    }

    /// The end of the job: its ping, and the email and webhook when the
    /// job's `notify.on` wants them. Failures are logged only.
    fn notify(&self, result: &JobResult) {
        let Some(n) = &self.job.notify else {
            return;
        };
        let failed = matches!(result.result, Outcome::Failed | Outcome::Incomplete);
        let text = table(std::slice::from_ref(result)).join("\n");
        self.ping(if failed { "/fail" } else { "" }, &text);
        if !n.on.wants(failed) || result.result == Outcome::Skipped && n.on != When::Always {
            return;
        }
        let sender = match self.registry.sender() {
            Ok(s) => s,
            Err(e) => {
                self.log(Level::Warn, None, format!("cannot notify: {e}"));
                return;
            }
        };
        let host = crate::lock::this_host();
        if let Some(m) = &n.email {
            let sent = self.email(sender.as_ref(), m, result, &host, &text);
            match sent {
                Ok(()) => self.log(Level::Info, None, format!("mailed {}", m.to.join(", "))),
                Err(e) => self.log(
                    Level::Warn,
                    None,
                    format!("cannot send the email through {}:{}: {e}", m.host, m.port),
                ),
            }
        }
        if let Some(w) = &n.webhook {
            let body = serde_json::json!({
                "event": "backupkit.job",
                "host": host,
                "config": self.config.file.display().to_string(),
                "job": result,
            });
            let mut headers = Vec::new();
            for (k, v) in &w.headers {
                let value = match v {
                    OptionValue::Plain(s) => Ok(s.clone()),
                    OptionValue::Secret(s) => s.resolve(),
                };
                match value {
                    Ok(v) => headers.push((k.clone(), v)),
                    Err(e) => {
                        self.log(Level::Warn, None, format!("webhook header {k}: {e}"));
                        return;
                    }
                }
            }
            let request = HttpRequest {
                method: "POST",
                url: w.url.clone(),
                headers,
                content_type: Some("application/json"),
                body: serde_json::to_vec(&body).unwrap_or_default(),
                ca_file: w.ca_file.clone(),
                timeout: w.timeout,
            };
            match sender.http(&request) {
                Ok(status) => self.log(
                    Level::Info,
                    None,
                    format!("webhook {} answered {status}", redact(&w.url)),
                ),
                Err(e) => self.log(
                    Level::Warn,
                    None,
                    format!("cannot deliver the webhook to {}: {e}", redact(&w.url)),
                ),
            }
        }
    }

    fn email(
        &self,
        sender: &dyn notify::Sender,
        m: &crate::jobs::model::EmailSettings,
        result: &JobResult,
        host: &str,
        text: &str,
    ) -> Result<()> {
        let password = m.password.as_ref().map(Secret::resolve).transpose()?;
        let server = SmtpServer {
            host: m.host.clone(),
            port: m.port,
            security: m.security,
            user: m.user.clone(),
            password,
            ca_file: m.ca_file.clone(),
            timeout: m.timeout,
        };
        let mut body = format!(
            "backupkit job {} on {host}: {}\nconfig: {}\n\n{text}\n",
            result.job,
            result.result.as_str(),
            self.config.file.display()
        );
        let errors: Vec<String> = result
            .error
            .iter()
            .cloned()
            .chain(
                result
                    .destinations
                    .iter()
                    .filter_map(|d| d.error.as_ref().map(|e| format!("{}: {e}", d.destination))),
            )
            .collect();
        if !errors.is_empty() {
            body.push_str("\nerrors:\n");
            for e in errors {
                body.push_str("  ");
                body.push_str(&e);
                body.push('\n');
            }
        }
        let mail = Mail {
            from: m.from.clone(),
            to: m.to.clone(),
            subject: format!(
                "backupkit: {} on {host}: {}",
                result.job,
                result.result.as_str()
            ),
            body: self.scrubber.scrub(&body),
        };
        sender.mail(&server, &mail)
    }

    fn fail_job(&self, mut result: JobResult, started: Instant, why: &str) -> JobResult {
        let why = self.scrubber.scrub(why);
        self.log(Level::Error, None, format!("failed: {why}"));
        result.result = Outcome::Failed;
        result.error = Some(why);
        result.seconds = started.elapsed().as_secs_f64();
        result
    }

    /// The `after` hooks on success, `on_failure` on failure.
    fn after(&self, result: &mut JobResult) {
        let failed = result.result == Outcome::Failed;
        let (which, list) = if failed {
            ("on_failure", &self.job.hooks.on_failure)
        } else {
            ("after", &self.job.hooks.after)
        };
        if let Some(end) = self.hooks(which, list, Some(&*result))
            && !failed
        {
            let why = format!("an after hook {}", end.describe(self.job.hooks.timeout));
            self.log(Level::Error, None, &why);
            result.result = Outcome::Failed;
            result.error = Some(why);
        }
    }

    /// Runs hooks in order; the first that does not succeed stops the
    /// list and is returned.
    fn hooks(&self, which: &str, list: &[String], result: Option<&JobResult>) -> Option<HookEnd> {
        let mut env = vec![
            ("BACKUPKIT_JOB".to_owned(), self.job.name.clone()),
            ("BACKUPKIT_HOOK".to_owned(), which.to_owned()),
            (
                "BACKUPKIT_CONFIG".to_owned(),
                self.config.file.display().to_string(),
            ),
        ];
        if let Some(r) = result {
            env.push(("BACKUPKIT_RESULT".into(), r.result.as_str().into()));
            let failed: Vec<&str> = r
                .destinations
                .iter()
                .filter(|d| d.result == Outcome::Failed)
                .map(|d| d.destination.as_str())
                .collect();
            env.push(("BACKUPKIT_FAILED_DESTINATIONS".into(), failed.join(",")));
            let error = r
                .error
                .clone()
                .or_else(|| r.destinations.iter().find_map(|d| d.error.clone()));
            env.push(("BACKUPKIT_ERROR".into(), error.unwrap_or_default()));
        }
        for cmd in list {
            self.log(Level::Info, None, format!("{which} hook: {cmd}"));
            let line = |err: bool, l: &str| {
                self.log(
                    if err { Level::Warn } else { Level::Info },
                    None,
                    format!("{which} hook output: {l}"),
                );
            };
            let end = hooks::run_hook(cmd, &env, self.job.hooks.timeout, self.cancel, &line);
            if end != HookEnd::Ok {
                self.log(
                    Level::Warn,
                    None,
                    format!(
                        "{which} hook {}: {cmd}",
                        end.describe(self.job.hooks.timeout)
                    ),
                );
                return Some(end);
            }
        }
        None
    }

    /// Each selected destination's options with secrets resolved, and the
    /// databases' URLs with their passwords.
    fn resolve(&mut self, dests: &[&Destination]) -> Result<Resolved> {
        let mut out = Resolved::default();
        for d in dests {
            let mut opts = TargetOptions::new();
            for (k, v) in &d.options {
                let value = match v {
                    OptionValue::Plain(s) => s.clone(),
                    OptionValue::Secret(s) => {
                        let value = s.resolve().map_err(|e| {
                            Error::InvalidInput(format!("{}: option {k}: {e}", d.name))
                        })?;
                        self.scrubber.add(&value);
                        value
                    }
                };
                opts.insert(k.clone(), value);
            }
            out.options.insert(d.name.clone(), opts);
        }
        for s in &self.job.sources {
            if let Source::Database {
                url,
                password,
                name,
            } = s
            {
                let url = match password {
                    Some(p) => {
                        let value = p
                            .resolve()
                            .map_err(|e| Error::InvalidInput(format!("database {name}: {e}")))?;
                        self.scrubber.add(&value);
                        with_password(url, &value)
                    }
                    None => url.clone(),
                };
                if let Some((_, rest)) = url.split_once("://")
                    && let Some((auth, _)) = rest.rsplit_once('@')
                    && let Some((_, pw)) = auth.split_once(':')
                {
                    self.scrubber.add(pw);
                    self.scrubber.add(&percent_decode(pw));
                }
                out.databases.insert(name.clone(), url);
            }
        }
        Ok(out)
    }

    /// Dumps each database that a selected destination takes, once.
    fn dump_databases(&self, dests: &[&Destination], resolved: &Resolved, spool: &Spool) -> Dumps {
        let mut dumps = Dumps::new();
        for s in &self.job.sources {
            let Source::Database { name, .. } = s else {
                continue;
            };
            let wanted = dests
                .iter()
                .any(|d| d.enabled && (d.sources.is_empty() || d.sources.contains(name)));
            if !wanted {
                continue;
            }
            let url = &resolved.databases[name];
            if self.opts.cleanup {
                continue;
            }
            if self.opts.dry_run {
                self.log(Level::Info, None, format!("would dump {}", redact(url)));
                continue;
            }
            let started = Instant::now();
            let r = self.dump_one(url, spool);
            match &r {
                Ok(d) => self.log(
                    Level::Info,
                    None,
                    format!(
                        "dumped {} once for all destinations ({} tables) in {:.1}s",
                        d.describe,
                        d.rows.len(),
                        started.elapsed().as_secs_f64()
                    ),
                ),
                Err(e) => self.log(
                    Level::Error,
                    None,
                    format!("cannot dump {}: {e}", redact(url)),
                ),
            }
            dumps.insert(
                name.clone(),
                r.map(Arc::new)
                    .map_err(|e| self.scrubber.scrub(&e.to_string())),
            );
        }
        dumps
    }

    fn dump_one(&self, url: &str, spool: &Spool) -> Result<Spooled> {
        let source = self.registry.database_source(url)?;
        let file = spool.dir.join("databases").join(source.dump_name());
        std::fs::create_dir_all(file.parent().expect("a spool file has a directory"))
            .map_err(|e| Error::io("create the spool", spool.dir.display().to_string(), e))?;
        let f = std::fs::File::create(&file)
            .map_err(|e| Error::io("create the spool file", file.display().to_string(), e))?;
        let mut w = BufWriter::with_capacity(1 << 16, f);
        let rows = source.dump(&mut w, self.cancel)?;
        w.flush()
            .map_err(|e| Error::io("write the spool file", file.display().to_string(), e))?;
        Ok(Spooled {
            engine: source.engine(),
            describe: source.describe(),
            dump_name: source.dump_name(),
            file,
            rows,
        })
    }

    /// Runs the destinations, `parallel` at a time, each on its own.
    fn destinations(
        &self,
        dests: &[&Destination],
        resolved: &Resolved,
        dumps: &Dumps,
        spool: &Spool,
    ) -> Vec<DestinationResult> {
        in_parallel(dests, self.config.parallel, |d| {
            Some(self.destination(d, resolved, dumps, spool))
        })
    }

    fn destination(
        &self,
        d: &Destination,
        resolved: &Resolved,
        dumps: &Dumps,
        spool: &Spool,
    ) -> DestinationResult {
        let started = Instant::now();
        let mut r = DestinationResult::new(
            &self.job.name,
            d.name.clone(),
            d.kind_name(),
            redact(&d.location),
        );
        if !d.enabled {
            r.result = Outcome::Skipped;
            r.error = Some("disabled in the config (`enabled: false`)".into());
            self.log(
                Level::Info,
                Some(&d.name),
                "skipped: disabled in the config",
            );
            return r;
        }
        let options = &resolved.options[&d.name];
        let sources: Vec<&Source> = self
            .job
            .sources
            .iter()
            .filter(|s| d.sources.is_empty() || d.sources.iter().any(|n| n == s.name()))
            .collect();
        let outcome = match &d.kind {
            Kind::Mirror(_) if self.opts.cleanup => {
                r.details.push("a mirror has no retention".into());
                Ok(Outcome::Skipped)
            }
            Kind::Snapshots(s) if self.opts.cleanup => {
                self.cleanup(d, options, &s.retention, &mut r)
            }
            Kind::Mirror(_) => self.mirror(d, options, &sources, dumps, spool, &mut r),
            Kind::Snapshots(_) => self.snapshots(d, options, &sources, dumps, &mut r),
        };
        r.seconds = started.elapsed().as_secs_f64();
        match outcome {
            Ok(o) => r.result = r.result.max(o),
            Err(e) => {
                r.result = Outcome::Failed;
                let msg = self.scrubber.scrub(&crate::error_chain(&e));
                r.error = Some(match r.error.take() {
                    Some(earlier) => format!("{earlier}; {msg}"),
                    None => msg,
                });
            }
        }
        if let Some(e) = &r.error {
            r.error = Some(self.scrubber.scrub(e));
        }
        let level = match r.result {
            Outcome::Failed => Level::Error,
            Outcome::Incomplete => Level::Warn,
            _ => Level::Info,
        };
        let mut line = format!(
            "{} ({}): {} files, {} bytes in {:.1}s",
            r.result.as_str(),
            r.kind,
            r.files,
            r.bytes,
            r.seconds
        );
        if let Some(e) = &r.error {
            line.push_str(": ");
            line.push_str(e);
        }
        self.log(level, Some(&d.name), line);
        r
    }

    /// A dump this destination takes that failed: noted in `r`.
    fn dump_failed(r: &mut DestinationResult, name: &str, why: &str) {
        r.result = Outcome::Failed;
        let msg = format!("database {name}: {why}");
        r.error = Some(match r.error.take() {
            Some(e) => format!("{e}; {msg}"),
            None => msg,
        });
    }

    /// The mirror's sources: each file tree under its name (or, flat, at
    /// the root), the job's dumps under `databases/`.
    fn mirror_sources(
        &self,
        d: &Destination,
        sources: &[&Source],
        dumps: &Dumps,
        spool: &Spool,
        r: &mut DestinationResult,
    ) -> Result<Vec<MirrorSource>> {
        let mut trees = Vec::new();
        let mut databases = false;
        for s in sources {
            match s {
                Source::Files { path, name } => {
                    let loc = path.display().to_string();
                    let tree = self.registry.open_tree(&loc, &TargetOptions::new())?;
                    let prefix = if d.flat { String::new() } else { name.clone() };
                    trees.push(MirrorSource::new(prefix, tree));
                }
                Source::Database { name, .. } => match dumps.get(name) {
                    Some(Ok(_)) => databases = true,
                    Some(Err(e)) => Self::dump_failed(r, name, e),
                    None if self.opts.dry_run => {
                        r.details
                            .push(format!("would store the dump of {name} in databases/"));
                    }
                    None => {}
                },
            }
        }
        if databases {
            let loc = spool.dir.join("databases").display().to_string();
            trees.push(MirrorSource::new(
                "databases",
                self.registry.open_tree(&loc, &TargetOptions::new())?,
            ));
        }
        Ok(trees)
    }

    fn mirror(
        &self,
        d: &Destination,
        options: &TargetOptions,
        sources: &[&Source],
        dumps: &Dumps,
        spool: &Spool,
        r: &mut DestinationResult,
    ) -> Result<Outcome> {
        let Kind::Mirror(m) = &d.kind else {
            unreachable!("a mirror destination")
        };
        let trees = self.mirror_sources(d, sources, dumps, spool, r)?;
        if trees.is_empty() {
            return Ok(r.result);
        }
        let dest = self.registry.open_tree(&d.location, options)?;
        let mut patterns = self.job.excludes.clone();
        for f in &self.job.exclude_files {
            patterns.extend(Excludes::read_pattern_file(f)?);
        }
        let opts = MirrorOptions {
            excludes: Excludes::new(&patterns)?,
            delete: m.delete,
            max_delete: m.max_delete,
            update: m.update,
            checksum: m.checksum,
            modify_window: None,
            backup_dir: m.backup_dir.clone(),
            dry_run: self.opts.dry_run,
            transfers: m.transfers,
            bwlimit: m.bwlimit,
            full_scan: false,
            verify: m.verify,
        };
        let hashers = self.registry.hashers()?;
        let plan = PlanLines::default();
        let summary = mirror::mirror(
            &trees,
            dest.as_ref(),
            &opts,
            hashers.as_ref(),
            &plan,
            self.cancel,
        )?;
        r.files = summary.copied + summary.updated;
        r.bytes = summary.bytes;
        if self.opts.dry_run {
            r.details.extend(plan.take());
        }
        r.details.push(format!(
            "{}: {} copied, {} updated, {} deleted, {} unchanged",
            if self.opts.dry_run {
                "would mirror"
            } else {
                "mirrored"
            },
            summary.copied,
            summary.updated,
            summary.deleted,
            summary.unchanged
        ));
        for p in &summary.failed {
            r.details.push(format!("failed {}: {}", p.path, p.message));
        }
        if let Some(reason) = &summary.refused {
            r.error = Some(format!("refusing to delete: {reason}"));
            return Ok(Outcome::Failed);
        }
        if let Some(v) = &summary.verify
            && !v.matches()
        {
            r.error = Some(format!("verify: {}", v.describe()));
            return Ok(Outcome::Failed);
        }
        if !summary.failed.is_empty() {
            r.error = Some(format!(
                "{} file(s) could not be mirrored; the next run retries them",
                summary.failed.len()
            ));
            return Ok(Outcome::Incomplete.max(r.result));
        }
        Ok(r.result)
    }

    /// The destination's repository; created when there is none and
    /// `init` is set (`None`: it would be, in a dry run).
    fn repository(
        &self,
        d: &Destination,
        options: &TargetOptions,
        init: bool,
        r: &mut DestinationResult,
    ) -> Result<Option<Repository>> {
        let target = self.registry.open_target_with(&d.location, options)?;
        match Repository::from_target(Arc::clone(self.registry), Arc::clone(&target)) {
            Ok(repo) => Ok(Some(repo)),
            Err(Error::RepositoryNotFound { location }) if init => {
                if self.opts.dry_run {
                    r.details
                        .push(format!("would create a repository at {location}"));
                    Ok(None)
                } else {
                    self.log(
                        Level::Info,
                        Some(&d.name),
                        format!("creating a repository at {location}"),
                    );
                    Ok(Some(Repository::init_target(
                        Arc::clone(self.registry),
                        target,
                    )?))
                }
            }
            Err(Error::RepositoryNotFound { location }) => Err(Error::InvalidInput(format!(
                "no backupkit repository at {location}: create it with `backupkit init -r \
                 {location}`, or set `init: true` for this destination"
            ))),
            Err(e) => Err(e),
        }
    }

    fn snapshots(
        &self,
        d: &Destination,
        options: &TargetOptions,
        sources: &[&Source],
        dumps: &Dumps,
        r: &mut DestinationResult,
    ) -> Result<Outcome> {
        let Kind::Snapshots(settings) = &d.kind else {
            unreachable!("a snapshots destination")
        };
        let repo = self.repository(d, options, settings.init, r)?;
        let mut tags = self.job.tags.clone();
        tags.push(job_tag(&self.job.name));
        let files: Vec<PathBuf> = sources
            .iter()
            .filter_map(|s| match s {
                Source::Files { path, .. } => Some(path.clone()),
                Source::Database { .. } => None,
            })
            .collect();
        let mut outcome = r.result;
        if !files.is_empty() {
            let opts = BackupOptions {
                paths: files,
                tags: tags.clone(),
                excludes: self.job.excludes.clone(),
                exclude_files: self.job.exclude_files.clone(),
                compression: settings.compression,
                level: settings.level,
                dry_run: self.opts.dry_run,
                host: None,
                no_cache: false,
            };
            outcome = outcome.max(self.snapshot_files(repo.as_ref(), &opts, r)?);
        }
        for s in sources {
            let Source::Database { name, .. } = s else {
                continue;
            };
            match (dumps.get(name), &repo) {
                (Some(Ok(dump)), Some(repo)) => {
                    let opts = DatabaseBackupOptions {
                        tags: tags.clone(),
                        compression: settings.compression,
                        level: settings.level,
                        host: None,
                    };
                    let meta =
                        repo.backup_database(dump.as_ref(), &opts, &NoProgress, self.cancel)?;
                    r.files += 1;
                    r.bytes += meta.source_bytes;
                    r.details.push(format!(
                        "database snapshot {} of {}",
                        meta.id, dump.describe
                    ));
                    r.snapshots.push(meta.id);
                }
                (Some(Err(e)), _) => {
                    Self::dump_failed(r, name, e);
                    outcome = Outcome::Failed;
                }
                _ if self.opts.dry_run => {
                    r.details
                        .push(format!("would take a database snapshot of {name}"));
                }
                _ => {}
            }
        }
        if !settings.retention.is_empty()
            && let Some(repo) = &repo
        {
            self.retention(repo, &settings.retention, r)?;
        }
        Ok(outcome)
    }

    fn snapshot_files(
        &self,
        repo: Option<&Repository>,
        opts: &BackupOptions,
        r: &mut DestinationResult,
    ) -> Result<Outcome> {
        let Some(repo) = repo else {
            r.details
                .push("would take a snapshot of the file sources".into());
            return Ok(Outcome::Ok);
        };
        let s = repo.backup(opts, &NoProgress, self.cancel)?;
        r.files += s.files;
        r.bytes += s.bytes;
        match &s.snapshot {
            Some(snap) => {
                r.snapshots.push(snap.id.clone());
                r.details
                    .push(format!("snapshot {} of {} files", snap.id, s.files));
            }
            None => r.details.push(format!(
                "would take a snapshot of {} files, {} bytes",
                s.files, s.bytes
            )),
        }
        if s.is_incomplete() {
            r.error = Some(format!(
                "{} file(s) could not be stored as they were",
                s.warnings.len()
            ));
            return Ok(Outcome::Incomplete);
        }
        Ok(Outcome::Ok)
    }

    /// `cleanup`: only the destination's retention.
    fn cleanup(
        &self,
        d: &Destination,
        options: &TargetOptions,
        policy: &crate::KeepPolicy,
        r: &mut DestinationResult,
    ) -> Result<Outcome> {
        if policy.is_empty() {
            r.details
                .push("no retention (keep_*) set: nothing to remove".into());
            return Ok(Outcome::Skipped);
        }
        let target = self.registry.open_target_with(&d.location, options)?;
        let repo = Repository::from_target(Arc::clone(self.registry), target)?;
        self.retention(&repo, policy, r)?;
        Ok(Outcome::Ok)
    }

    /// Applies the destination's retention to the job's snapshots.
    fn retention(
        &self,
        repo: &Repository,
        policy: &crate::KeepPolicy,
        r: &mut DestinationResult,
    ) -> Result<()> {
        let groups = repo.forget_by_policy(&ForgetOptions {
            policy: policy.clone(),
            filter: SnapshotFilter {
                tags: vec![job_tag(&self.job.name)],
                ..SnapshotFilter::default()
            },
            dry_run: self.opts.dry_run,
        })?;
        for g in groups {
            r.forgotten.extend(g.remove.into_iter().map(|d| d.id));
        }
        if !r.forgotten.is_empty() {
            r.details.push(format!(
                "retention {} {} snapshot(s): {}",
                if self.opts.dry_run {
                    "would remove"
                } else {
                    "removed"
                },
                r.forgotten.len(),
                r.forgotten.join(", ")
            ));
        }
        Ok(())
    }
}

/// The summary table of jobs' results, one row per destination (or per
/// job that ran none): job, destination, kind, result, files, bytes,
/// duration, error.
pub fn table(jobs: &[JobResult]) -> Vec<String> {
    let mut rows: Vec<[String; 8]> = vec![
        [
            "JOB",
            "DESTINATION",
            "KIND",
            "RESULT",
            "FILES",
            "BYTES",
            "TIME",
            "ERROR",
        ]
        .map(str::to_owned),
    ];
    for j in jobs {
        if j.destinations.is_empty() {
            rows.push([
                j.job.clone(),
                "-".into(),
                "-".into(),
                j.result.as_str().into(),
                "-".into(),
                "-".into(),
                format!("{:.1}s", j.seconds),
                j.error.clone().unwrap_or_default(),
            ]);
        }
        for d in &j.destinations {
            rows.push([
                d.job.clone(),
                d.destination.clone(),
                d.kind.into(),
                d.result.as_str().into(),
                d.files.to_string(),
                crate::progress::human_bytes(d.bytes),
                format!("{:.1}s", d.seconds),
                d.error
                    .clone()
                    .or_else(|| j.error.clone())
                    .unwrap_or_default(),
            ]);
        }
    }
    columns(&rows)
}

/// Runs `f` on every item, at most `workers` at a time, taking the items
/// in order; returns the results in the items' order, leaving out the
/// `None`s (items skipped, as after a cancel).
pub(crate) fn in_parallel<T: Sync, R: Send>(
    items: &[T],
    workers: usize,
    f: impl Fn(&T) -> Option<R> + Sync,
) -> Vec<R> {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<R>>> = Mutex::new((0..items.len()).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..workers.clamp(1, items.len().max(1)) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(item) = items.get(i) else { break };
                    let r = f(item);
                    results
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)[i] = r;
                }
            });
        }
    });
    results
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .into_iter()
        .flatten()
        .collect()
}

/// A pull round as a job's destinations: one per device and kind
/// (`DEVICE.KIND`), and a failed `discovery` when the device list could not
/// be refreshed.
fn pull_results(
    job: &str,
    pull: &crate::fleet::Pull,
    round: &crate::fleet::pull::Round,
) -> Vec<DestinationResult> {
    let mut out = Vec::new();
    if let Some(e) = &round.discovery_error {
        let location = pull
            .discover
            .as_ref()
            .and_then(|d| d.url.as_deref().or(d.command.as_deref()))
            .map(redact)
            .unwrap_or_default();
        let mut r = DestinationResult::new(job, "discovery".into(), "pull", location);
        r.result = Outcome::Failed;
        r.error = Some(e.clone());
        out.push(r);
    }
    for d in &round.devices {
        for k in &d.kinds {
            let remote = pull
                .kinds
                .iter()
                .find(|p| p.name == k.kind)
                .map_or("", |p| p.remote.as_str());
            let mut r = DestinationResult::new(
                job,
                format!("{}.{}", d.device, k.kind),
                "pull",
                format!("{}{} -> {}", d.url, remote, k.local),
            );
            r.result = k.result;
            (r.files, r.bytes, r.seconds) = (k.files, k.bytes, d.seconds);
            r.error.clone_from(&k.error);
            r.details.clone_from(&k.details);
            out.push(r);
        }
    }
    out
}

/// Rows of cells as lines, each column as wide as its widest cell.
pub fn columns<const N: usize>(rows: &[[String; N]]) -> Vec<String> {
    let mut widths = [0usize; N];
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r.iter()) {
            *w = (*w).max(c.chars().count());
        }
    }
    rows.iter()
        .map(|r| {
            let mut line = String::new();
            for (k, c) in r.iter().enumerate() {
                line.push_str(c);
                line.push_str(&" ".repeat(widths[k] - c.chars().count() + 2));
            }
            line.trim_end().to_owned()
        })
        .collect()
}

/// The tag that marks a job's snapshots, for its retention.
pub fn job_tag(job: &str) -> String {
    format!("job:{job}")
}

#[derive(Default)]
struct Resolved {
    /// By destination name.
    options: BTreeMap<String, TargetOptions>,
    /// By source name: the URL with its password.
    databases: BTreeMap<String, String>,
}

/// A directory for the job's dumps, removed when the job ends.
struct Spool {
    dir: PathBuf,
}

impl Spool {
    fn new() -> Result<Self> {
        let base =
            std::env::var_os("BACKUPKIT_SPOOL").map_or_else(std::env::temp_dir, PathBuf::from);
        let dir = base.join(format!(
            "backupkit-spool-{}-{}",
            std::process::id(),
            chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0)
        ));
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::io("create the spool directory", dir.display().to_string(), e))?;
        Ok(Self { dir })
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Collects a dry run's plan lines from the mirror's events.
#[derive(Default)]
struct PlanLines(Mutex<Vec<String>>);

impl PlanLines {
    fn take(&self) -> Vec<String> {
        std::mem::take(
            &mut *self
                .0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }
}

impl crate::Progress for PlanLines {
    fn event(&self, event: &crate::Event) {
        if let crate::Event::Planned { action, path, .. } = event {
            let mut lines = self
                .0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if lines.len() < MAX_PLAN_LINES {
                lines.push(format!("{action} {path}"));
            } else if lines.len() == MAX_PLAN_LINES {
                lines.push("... (more)".into());
            }
        }
    }

    fn wants_totals(&self) -> bool {
        false
    }
}

/// A dry run lists at most this many planned actions per destination.
const MAX_PLAN_LINES: usize = 1000;

/// The URL with `password` as its password (percent-encoded).
pub(crate) fn with_password(url: &str, password: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let encoded: String = password
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    match rest.rsplit_once('@') {
        Some((auth, host)) => {
            let user = auth.split_once(':').map_or(auth, |(u, _)| u);
            format!("{scheme}://{user}:{encoded}@{host}")
        }
        None => format!("{scheme}://:{encoded}@{rest}"),
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) =
                u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or(""), 16)
        {
            out.push(v);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
