//! When jobs run: a job's [`Schedule`] (a crontab expression or an
//! interval) and the [`Planner`] that decides, for a clock it is given,
//! which jobs are due, which would overlap a run still going, and which
//! were missed while nothing was running.
//!
//! The planner owns no clock and no threads: a service asks it when to
//! wake ([`Planner::next_wake`]), tells it the time ([`Planner::due`]) and
//! when a run ends ([`Planner::finished`]). So every decision can be
//! tested with an injected clock, and a long-running frontend (`serve`)
//! stays a thin loop around it.
//!
//! The contract:
//! - A job never runs twice at once: a due time that finds the job still
//!   running is reported as [`Decision::Overlap`] and not started.
//! - Due times missed while the service was busy or suspended collapse
//!   into one run (as cron's: the next time is computed from now).
//! - At start-up a job with `catch_up` whose last run is older than its
//!   last scheduled time (or that never ran) is due at once, once
//!   ([`Why::CatchUp`]); without `catch_up` missed times are not made up.
//! - An interval job (`every: 5m`) runs at start-up unless its last run
//!   is younger than the interval, then every interval after each start.

pub mod cron;
pub mod history;
pub mod service;
pub mod status;

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};

pub use cron::Cron;

/// When a job runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Schedule {
    /// Wall-clock times from a crontab expression.
    Cron(Cron),
    /// A fixed interval from each run's start.
    Every(Duration),
}

impl Schedule {
    /// The first time after `after`: the crontab expression's next time,
    /// or `after` plus the interval.
    pub fn next_after<Tz: TimeZone>(&self, after: &DateTime<Tz>) -> Option<DateTime<Tz>> {
        match self {
            Schedule::Cron(c) => c.next_after(after),
            Schedule::Every(d) => chrono::Duration::from_std(*d)
                .ok()
                .and_then(|d| after.clone().checked_add_signed(d)),
        }
    }

    /// The next `n` times after `from`.
    pub fn upcoming<Tz: TimeZone>(&self, from: &DateTime<Tz>, n: usize) -> Vec<DateTime<Tz>> {
        let mut out: Vec<DateTime<Tz>> = Vec::with_capacity(n);
        let mut at = from.clone();
        while out.len() < n {
            let Some(t) = self.next_after(&at) else {
                break;
            };
            at = t.clone();
            out.push(t);
        }
        out
    }
}

impl std::fmt::Display for Schedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Schedule::Cron(c) => write!(f, "{c}"),
            Schedule::Every(d) => write!(f, "every {}", interval(*d)),
        }
    }
}

/// An interval as configs write it (`90s`, `5m`, `2h`, `1d`).
pub fn interval(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0 => "0s".into(),
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// A job as the planner sees it.
#[derive(Debug, Clone)]
pub struct Planned {
    pub job: String,
    pub schedule: Schedule,
    pub catch_up: bool,
    /// When its last run started, if one is on record.
    pub last_run: Option<DateTime<Utc>>,
}

/// Why a run starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Why {
    /// Its time came.
    Scheduled,
    /// At start-up, for a time missed while the service was down.
    CatchUp,
    /// Asked for (`POST /jobs/NAME/run`, `serve --once`).
    Manual,
}

/// What the planner decided for one job at one time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision<Tz: TimeZone> {
    /// Start the job now.
    Start {
        job: String,
        due: DateTime<Tz>,
        why: Why,
    },
    /// Its time came while it was still running since `running_since`:
    /// not started (a job never runs twice at once).
    Overlap {
        job: String,
        due: DateTime<Tz>,
        running_since: DateTime<Tz>,
    },
}

impl<Tz: TimeZone> Decision<Tz> {
    pub fn job(&self) -> &str {
        match self {
            Decision::Start { job, .. } | Decision::Overlap { job, .. } => job,
        }
    }
}

#[derive(Debug, Clone)]
struct Entry<Tz: TimeZone> {
    job: String,
    schedule: Schedule,
    next: Option<DateTime<Tz>>,
    why: Why,
    running_since: Option<DateTime<Tz>>,
}

/// One job's place in the plan, for a status page.
#[derive(Debug, Clone)]
pub struct PlanView<Tz: TimeZone> {
    pub job: String,
    pub schedule: Schedule,
    pub next: Option<DateTime<Tz>>,
    pub running_since: Option<DateTime<Tz>>,
}

/// Decides when scheduled jobs run (see the module contract).
#[derive(Debug, Clone)]
pub struct Planner<Tz: TimeZone> {
    entries: Vec<Entry<Tz>>,
}

impl<Tz: TimeZone> Planner<Tz> {
    /// A plan for `jobs`, starting at `now` (whose zone the crontab
    /// expressions are read in).
    pub fn new(jobs: Vec<Planned>, now: &DateTime<Tz>) -> Self {
        let tz = now.timezone();
        let entries = jobs
            .into_iter()
            .map(|p| {
                let last = p.last_run.map(|t| t.with_timezone(&tz));
                let (next, why) = match (&p.schedule, last) {
                    (Schedule::Every(_), None) => (Some(now.clone()), Why::Scheduled),
                    (Schedule::Every(_), Some(l)) => (
                        p.schedule
                            .next_after(&l)
                            .map(|t| if t < *now { now.clone() } else { t }),
                        Why::Scheduled,
                    ),
                    (Schedule::Cron(_), last) if p.catch_up => {
                        let missed = last
                            .is_none_or(|l| p.schedule.next_after(&l).is_some_and(|t| t <= *now));
                        if missed {
                            (Some(now.clone()), Why::CatchUp)
                        } else {
                            (p.schedule.next_after(now), Why::Scheduled)
                        }
                    }
                    (Schedule::Cron(_), _) => (p.schedule.next_after(now), Why::Scheduled),
                };
                Entry {
                    job: p.job,
                    schedule: p.schedule,
                    next,
                    why,
                    running_since: None,
                }
            })
            .collect();
        Planner { entries }
    }

    /// The earliest time a job is due, if any job has one.
    pub fn next_wake(&self) -> Option<DateTime<Tz>> {
        self.entries.iter().filter_map(|e| e.next.clone()).min()
    }

    /// The jobs due at `now`, each once, in the order they were given;
    /// every due job's next time moves past `now`.
    pub fn due(&mut self, now: &DateTime<Tz>) -> Vec<Decision<Tz>> {
        let mut out = Vec::new();
        for e in &mut self.entries {
            let Some(due) = e.next.clone().filter(|t| t <= now) else {
                continue;
            };
            // An interval counts from the due time, unless the run fell a
            // whole interval behind; a crontab's next time is after now.
            e.next = match e.schedule.next_after(&due) {
                Some(t) if matches!(e.schedule, Schedule::Every(_)) && t > *now => Some(t),
                _ => e.schedule.next_after(now),
            };
            let why = std::mem::replace(&mut e.why, Why::Scheduled);
            out.push(start_or_overlap(e, due, now, why));
        }
        out
    }

    /// Starts `job` now, out of its schedule, unless it is running.
    /// `None` for a job the plan does not know.
    pub fn start_now(&mut self, job: &str, now: &DateTime<Tz>) -> Option<Decision<Tz>> {
        let e = self.entries.iter_mut().find(|e| e.job == job)?;
        Some(start_or_overlap(e, now.clone(), now, Why::Manual))
    }

    /// Marks `job` as running since `since` (a run that goes on across
    /// a reload of the plan).
    pub fn mark_running(&mut self, job: &str, since: DateTime<Tz>) {
        if let Some(e) = self.entries.iter_mut().find(|e| e.job == job) {
            e.running_since = Some(since);
        }
    }

    /// Records that `job`'s run ended.
    pub fn finished(&mut self, job: &str) {
        if let Some(e) = self.entries.iter_mut().find(|e| e.job == job) {
            e.running_since = None;
        }
    }

    /// Every job's schedule, next time and whether it runs.
    pub fn view(&self) -> Vec<PlanView<Tz>> {
        self.entries
            .iter()
            .map(|e| PlanView {
                job: e.job.clone(),
                schedule: e.schedule.clone(),
                next: e.next.clone(),
                running_since: e.running_since.clone(),
            })
            .collect()
    }
}

fn start_or_overlap<Tz: TimeZone>(
    e: &mut Entry<Tz>,
    due: DateTime<Tz>,
    now: &DateTime<Tz>,
    why: Why,
) -> Decision<Tz> {
    if let Some(since) = &e.running_since {
        return Decision::Overlap {
            job: e.job.clone(),
            due,
            running_since: since.clone(),
        };
    }
    e.running_since = Some(now.clone());
    Decision::Start {
        job: e.job.clone(),
        due,
        why,
    }
}
