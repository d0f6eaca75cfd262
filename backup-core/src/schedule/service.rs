//! The long-running service behind `backupkit serve`: the [`Planner`]
//! driven by the real clock, each due job run on a thread of its own
//! (through [`crate::jobs::run::run`], so a scheduled run is exactly a
//! `backupkit run JOB`), the [`History`] recorded, the config reloaded on
//! request, and a stop that cancels running jobs cleanly within a bound.
//!
//! The contract:
//! - A job runs at most once at a time, also across a reload.
//! - A reload with a config that does not load is reported and the old
//!   config kept; a good one replaces the plan (running jobs go on).
//! - [`Service::stop`] starts nothing more, cancels every run (each ends
//!   as a cancelled run does everywhere: nothing partial visible) and
//!   waits for them up to its bound.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::Duration;

use chrono::{DateTime, Local, Utc};

use crate::jobs::log::{EventSink, Level, LogEvent};
use crate::jobs::model::Config;
use crate::jobs::run::{self, Outcome, RunOptions};
use crate::schedule::history::{History, RunRecord};
use crate::schedule::status::{Board, JobStatus};
use crate::schedule::{Decision, Planned, Planner, Schedule, Why};
use crate::{Cancel, Registry, Result};

/// How one run ended, sent back from its thread.
struct Done {
    job: String,
    record: RunRecord,
}

struct Running {
    cancel: Cancel,
    since: DateTime<Local>,
}

/// The service's state (see the module contract).
pub struct Service {
    config: Config,
    registry: Arc<Registry>,
    sink: Arc<dyn EventSink>,
    planner: Planner<Local>,
    history: History,
    running: BTreeMap<String, Running>,
    done_tx: Sender<Done>,
    done_rx: Receiver<Done>,
    stopping: bool,
    /// Pull jobs' devices, kept across rounds and reloads.
    fleets: Arc<crate::fleet::status::Fleets>,
    /// What frontends show, published on every change.
    board: Arc<Board>,
    requests_tx: Sender<RunRequest>,
    requests_rx: Receiver<RunRequest>,
}

/// A frontend's request to start a job now; the answer is what
/// [`Service::run_now`] returns.
#[derive(Debug)]
pub struct RunRequest {
    pub job: String,
    pub reply: Sender<Result<bool>>,
}

impl Service {
    /// What the service shows (see [`Board::status`]).
    pub fn board(&self) -> Arc<Board> {
        Arc::clone(&self.board)
    }

    /// Where frontends send run requests; [`serve`] answers them.
    pub fn requests(&self) -> Sender<RunRequest> {
        self.requests_tx.clone()
    }

    /// Answers the run requests waiting.
    pub fn take_requests(&mut self, now: &DateTime<Local>) {
        while let Ok(r) = self.requests_rx.try_recv() {
            let answer = self.run_now(&r.job, now);
            let _ = r.reply.send(answer);
        }
    }

    /// Publishes every job's state to the board.
    fn publish(&self) {
        let now = Local::now();
        let plan = self.planner.view();
        let jobs = self
            .config
            .jobs
            .iter()
            .map(|j| {
                let h = self.history.job(&j.name);
                let next = plan
                    .iter()
                    .find(|p| p.job == j.name)
                    .and_then(|p| p.next.map(|t| t.with_timezone(&Utc)));
                let interval_seconds = match &j.schedule {
                    Some(Schedule::Every(d)) => Some(d.as_secs()),
                    Some(Schedule::Cron(c)) => c.next_after(&now).and_then(|a| {
                        c.next_after(&a)
                            .and_then(|b| u64::try_from((b - a).num_seconds()).ok())
                    }),
                    None => None,
                };
                let running = self.running.get(&j.name);
                let state = if running.is_some() {
                    "running"
                } else if matches!(h.last_result.as_deref(), Some("failed" | "incomplete")) {
                    "failed"
                } else {
                    "idle"
                };
                JobStatus {
                    name: j.name.clone(),
                    kind: if j.pull.is_some() { "pull" } else { "backup" },
                    schedule: j.schedule.as_ref().map(|s| match s {
                        Schedule::Cron(c) => c.as_str().to_owned(),
                        Schedule::Every(d) => format!("every {}", super::interval(*d)),
                    }),
                    state,
                    running_since: running.map(|r| r.since.with_timezone(&Utc)),
                    next_run: next.filter(|_| j.enabled),
                    interval_seconds,
                    overdue: j.enabled
                        && super::status::overdue(
                            Utc::now(),
                            interval_seconds,
                            h.last_success,
                            h.runs,
                        ),
                    last: h,
                }
            })
            .collect();
        self.board
            .publish(self.config.file.display().to_string(), jobs);
    }
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("config", &self.config.file)
            .field("running", &self.running.keys().collect::<Vec<_>>())
            .field("stopping", &self.stopping)
            .finish_non_exhaustive()
    }
}

/// The planner's view of `config`'s scheduled, enabled jobs.
fn planned(config: &Config, history: &History) -> Vec<Planned> {
    config
        .jobs
        .iter()
        .filter(|j| j.enabled)
        .filter_map(|j| {
            Some(Planned {
                job: j.name.clone(),
                schedule: j.schedule.clone()?,
                catch_up: j.catch_up,
                last_run: history.job(&j.name).last_start,
            })
        })
        .collect()
}

impl Service {
    /// A service for `config`'s scheduled jobs, as of `now`.
    pub fn new(
        config: Config,
        registry: Arc<Registry>,
        history: History,
        sink: Arc<dyn EventSink>,
        now: &DateTime<Local>,
    ) -> Service {
        let planner = Planner::new(planned(&config, &history), now);
        let (done_tx, done_rx) = mpsc::channel();
        let (requests_tx, requests_rx) = mpsc::channel();
        let fleets: Arc<crate::fleet::status::Fleets> = Arc::default();
        for j in config.jobs.iter().filter(|j| j.pull.is_some()) {
            let fleet = fleets.get(&j.name);
            for (id, h) in history.devices(&j.name) {
                fleet.remember(&id, &h);
            }
        }
        let board = Arc::new(Board::new(Arc::clone(&fleets)));
        let service = Service {
            config,
            registry,
            sink,
            planner,
            history,
            running: BTreeMap::new(),
            done_tx,
            done_rx,
            stopping: false,
            fleets,
            board,
            requests_tx,
            requests_rx,
        };
        service.publish();
        service
    }

    fn say(&self, level: Level, job: Option<&str>, message: String) {
        self.sink.event(&LogEvent {
            level,
            job: job.map(str::to_owned),
            destination: None,
            message,
        });
    }

    /// When the next job is due.
    pub fn next_wake(&self) -> Option<DateTime<Local>> {
        self.planner.next_wake()
    }

    /// Starts the jobs due at `now`; reports the overlaps.
    pub fn start_due(&mut self, now: &DateTime<Local>) {
        if self.stopping {
            return;
        }
        let due = self.planner.due(now);
        if due.is_empty() {
            return;
        }
        for d in due {
            self.act(d, now);
        }
        self.publish();
    }

    /// Starts `job` now, out of its schedule (a job without a schedule
    /// too). `false` when it is running already or stopping.
    ///
    /// # Errors
    ///
    /// [`crate::Error::InvalidInput`] for a job the config does not have.
    pub fn run_now(&mut self, job: &str, now: &DateTime<Local>) -> Result<bool> {
        if !self.config.jobs.iter().any(|j| j.name == job) {
            return Err(crate::Error::InvalidInput(format!(
                "no job {job:?} in {}",
                self.config.file.display()
            )));
        }
        if self.stopping || self.running.contains_key(job) {
            return Ok(false);
        }
        let d = self.planner.start_now(job, now).unwrap_or(Decision::Start {
            job: job.to_owned(),
            due: *now,
            why: Why::Manual,
        });
        let started = self.act(d, now);
        self.publish();
        Ok(started)
    }

    fn act(&mut self, d: Decision<Local>, now: &DateTime<Local>) -> bool {
        match d {
            Decision::Overlap {
                job,
                due,
                running_since,
            } => {
                self.say(
                    Level::Warn,
                    Some(&job),
                    format!(
                        "skipped the run due at {}: still running since {}",
                        due.format("%Y-%m-%d %H:%M"),
                        running_since.format("%Y-%m-%d %H:%M:%S")
                    ),
                );
                false
            }
            Decision::Start { job, .. } if self.running.contains_key(&job) => {
                self.say(
                    Level::Warn,
                    Some(&job),
                    "skipped: still running from before the config was reloaded".into(),
                );
                false
            }
            Decision::Start { job, why, .. } => {
                self.spawn(&job, why, now);
                true
            }
        }
    }

    fn spawn(&mut self, job: &str, why: Why, now: &DateTime<Local>) {
        let started = now.with_timezone(&Utc);
        if let Err(e) = self.history.started(job, started) {
            self.say(
                Level::Warn,
                Some(job),
                format!("cannot record the run: {}", crate::error_chain(&e)),
            );
        }
        let what = match why {
            Why::Scheduled => "scheduled run",
            Why::CatchUp => "catch-up run (a scheduled time was missed)",
            Why::Manual => "run on request",
        };
        self.say(Level::Info, Some(job), format!("starting: {what}"));
        let cancel = Cancel::new();
        self.running.insert(
            job.to_owned(),
            Running {
                cancel: cancel.clone(),
                since: *now,
            },
        );
        let config = self.config.clone();
        let registry = Arc::clone(&self.registry);
        let sink = Arc::clone(&self.sink);
        let tx = self.done_tx.clone();
        let fleets = Arc::clone(&self.fleets);
        let name = job.to_owned();
        std::thread::spawn(move || {
            let opts = RunOptions {
                jobs: vec![name.clone()],
                fleets: Some(fleets),
                ..RunOptions::default()
            };
            let result = run::run(&config, &registry, &opts, sink.as_ref(), &cancel);
            let ended = Utc::now();
            let record = match result {
                Ok(s) => {
                    let dests = s.jobs.iter().flat_map(|j| &j.destinations);
                    RunRecord {
                        started,
                        ended,
                        result: outcome_name(s.result).into(),
                        ok: matches!(s.result, Outcome::Ok | Outcome::Skipped),
                        error: s.jobs.iter().find_map(|j| j.error.clone()).or_else(|| {
                            s.jobs
                                .iter()
                                .flat_map(|j| &j.destinations)
                                .find_map(|d| d.error.clone())
                        }),
                        files: dests.clone().map(|d| d.files).sum(),
                        bytes: dests.map(|d| d.bytes).sum(),
                    }
                }
                Err(e) => RunRecord {
                    started,
                    ended,
                    result: if matches!(e, crate::Error::Cancelled) {
                        "cancelled".into()
                    } else {
                        "failed".into()
                    },
                    ok: false,
                    error: Some(crate::error_chain(&e)),
                    files: 0,
                    bytes: 0,
                },
            };
            let _ = tx.send(Done { job: name, record });
        });
    }

    /// Waits up to `timeout` for runs to end, recording each; returns as
    /// soon as one ends.
    pub fn wait(&mut self, timeout: Duration) {
        match self.done_rx.recv_timeout(timeout) {
            Ok(done) => self.record(&done),
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {}
        }
        while let Ok(done) = self.done_rx.try_recv() {
            self.record(&done);
        }
    }

    fn record(&mut self, done: &Done) {
        self.running.remove(&done.job);
        self.planner.finished(&done.job);
        // `run` has said how it ended; the history keeps it.
        // A pull job's devices go into the same save as its run.
        if self
            .config
            .jobs
            .iter()
            .any(|j| j.name == done.job && j.pull.is_some())
        {
            let devices = self.fleets.get(&done.job).records();
            self.history.set_devices(&done.job, devices);
        }
        if let Err(e) = self.history.finished(&done.job, &done.record) {
            self.say(
                Level::Warn,
                Some(&done.job),
                format!("cannot record the run: {}", crate::error_chain(&e)),
            );
        }
        self.publish();
    }

    /// Replaces the config with `loaded`, or keeps the old one and says
    /// why when it did not load.
    pub fn reload(&mut self, loaded: Result<Config>, now: &DateTime<Local>) {
        match loaded {
            Err(e) => self.say(
                Level::Error,
                None,
                format!(
                    "the config was not reloaded, the previous one stays in force: {}",
                    crate::error_chain(&e)
                ),
            ),
            Ok(config) => {
                let mut planner = Planner::new(planned(&config, &self.history), now);
                for (job, r) in &self.running {
                    planner.mark_running(job, r.since);
                }
                self.planner = planner;
                self.config = config;
                self.publish();
                self.say(
                    Level::Info,
                    None,
                    format!("reloaded {}", self.config.file.display()),
                );
            }
        }
    }

    /// Starts nothing more, cancels every run and waits up to `bound` for
    /// them; returns the jobs still running then.
    pub fn stop(&mut self, bound: Duration) -> Vec<String> {
        self.stopping = true;
        for (job, r) in &self.running {
            self.say(
                Level::Info,
                Some(job),
                "stopping: cancelling the run".into(),
            );
            r.cancel.cancel();
        }
        let deadline = std::time::Instant::now() + bound;
        while !self.running.is_empty() {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                break;
            }
            self.wait(left);
        }
        self.running.keys().cloned().collect()
    }
}

fn outcome_name(o: Outcome) -> &'static str {
    match o {
        Outcome::Ok => "ok",
        Outcome::Skipped => "skipped",
        Outcome::Incomplete => "incomplete",
        Outcome::Failed => "failed",
    }
}

/// Runs the service until `should_stop` says so: due jobs started on
/// time, the config reloaded whenever `take_reload` says so (through
/// `load`), and then [`Service::stop`] with `stop_bound`. Returns the jobs
/// that had not stopped within the bound.
pub fn serve(
    service: &mut Service,
    load: &dyn Fn() -> Result<Config>,
    should_stop: &dyn Fn() -> bool,
    take_reload: &dyn Fn() -> bool,
    stop_bound: Duration,
) -> Vec<String> {
    /// Signals are looked at this often.
    const TICK: Duration = Duration::from_millis(200);
    loop {
        if should_stop() {
            return service.stop(stop_bound);
        }
        if take_reload() {
            service.reload(load(), &Local::now());
        }
        let now = Local::now();
        service.take_requests(&now);
        service.start_due(&now);
        let until = service
            .next_wake()
            .map_or(TICK, |t| (t - Local::now()).to_std().unwrap_or_default());
        service.wait(until.min(TICK));
    }
}
