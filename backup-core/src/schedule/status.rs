//! What the scheduler service shows: every job with its state, schedule,
//! next run and last results, and every device of its pull jobs, as one
//! [`ServiceStatus`] that a status page, `/status` JSON and `/metrics`
//! read. The service publishes its part to a [`Board`] whenever it
//! changes; devices are read live from the fleets.
//!
//! A job or device is **overdue** when it has had no success for three
//! times its interval (as `UrBackup` judges), or when it has run and never
//! succeeded.

use std::sync::{Arc, Mutex, PoisonError};

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::fleet::status::{DeviceStatus, Fleets};

/// One job as the service sees it.
#[derive(Debug, Clone, Serialize)]
pub struct JobStatus {
    pub name: String,
    /// `backup` (sources to destinations) or `pull` (a device fleet).
    pub kind: &'static str,
    /// `0 2 * * *`, `every 5m`, or none for a job run only on request.
    pub schedule: Option<String>,
    /// `idle`, `running` or `failed` (its last run failed).
    pub state: &'static str,
    pub running_since: Option<DateTime<Utc>>,
    pub next_run: Option<DateTime<Utc>>,
    /// The last run and the counters, as the history keeps them.
    #[serde(flatten)]
    pub last: crate::schedule::history::JobHistory,
    /// The time between two runs, in seconds, that overdue is judged by.
    pub interval_seconds: Option<u64>,
    pub overdue: bool,
}

/// A device of a pull job, with the job's judgement of it.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceView {
    pub job: String,
    #[serde(flatten)]
    pub device: DeviceStatus,
    pub overdue: bool,
}

/// Everything the status page shows.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceStatus {
    pub config: String,
    pub host: String,
    pub version: &'static str,
    pub started: DateTime<Utc>,
    pub now: DateTime<Utc>,
    pub jobs: Vec<JobStatus>,
    pub devices: Vec<DeviceView>,
    /// Discovery problems by pull job.
    pub discovery_errors: Vec<(String, String)>,
}

/// Whether something with this interval and last success is overdue.
pub fn overdue(
    now: DateTime<Utc>,
    interval_seconds: Option<u64>,
    last_success: Option<DateTime<Utc>>,
    runs: u64,
) -> bool {
    match (last_success, interval_seconds) {
        (Some(t), Some(i)) => {
            (now - t).num_seconds() > i64::try_from(i.saturating_mul(3)).unwrap_or(i64::MAX)
        }
        (None, _) => runs > 0,
        (Some(_), None) => false,
    }
}

#[derive(Debug)]
struct Published {
    config: String,
    jobs: Vec<JobStatus>,
}

/// The service's latest published state, shared with frontends.
#[derive(Debug)]
pub struct Board {
    started: DateTime<Utc>,
    published: Mutex<Published>,
    fleets: Arc<Fleets>,
}

impl Board {
    pub fn new(fleets: Arc<Fleets>) -> Self {
        Self {
            started: Utc::now(),
            published: Mutex::new(Published {
                config: String::new(),
                jobs: Vec::new(),
            }),
            fleets,
        }
    }

    /// Replaces the jobs' state (the service calls it when it changes).
    pub fn publish(&self, config: String, jobs: Vec<JobStatus>) {
        let mut p = self
            .published
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        p.config = config;
        p.jobs = jobs;
    }

    /// The whole status as of now: the jobs as last published, the
    /// devices live.
    pub fn status(&self) -> ServiceStatus {
        let now = Utc::now();
        let (config, jobs) = {
            let p = self
                .published
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            (p.config.clone(), p.jobs.clone())
        };
        let mut devices = Vec::new();
        let mut discovery_errors = Vec::new();
        for (job, fleet) in self.fleets.all() {
            // Only the pull jobs of the config in force.
            let Some(j) = jobs.iter().find(|j| j.name == job) else {
                continue;
            };
            let s = fleet.lock();
            if let Some(e) = &s.discovery_error {
                discovery_errors.push((job.clone(), e.clone()));
            }
            for d in s.devices.values() {
                let overdue = d.present && overdue(now, j.interval_seconds, d.last_success, d.runs);
                devices.push(DeviceView {
                    job: job.clone(),
                    device: d.clone(),
                    overdue,
                });
            }
        }
        ServiceStatus {
            config,
            host: crate::lock::this_host(),
            version: env!("CARGO_PKG_VERSION"),
            started: self.started,
            now,
            jobs,
            devices,
            discovery_errors,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overdue_after_three_intervals_or_never_a_success() {
        let now = Utc::now();
        let ago = |s: i64| Some(now - chrono::Duration::seconds(s));
        assert!(!overdue(now, Some(3600), ago(3 * 3600 - 10), 5));
        assert!(overdue(now, Some(3600), ago(3 * 3600 + 10), 5));
        assert!(!overdue(now, Some(3600), None, 0), "never ran: not yet");
        assert!(overdue(now, Some(3600), None, 2), "ran, never succeeded");
        assert!(!overdue(now, None, ago(1_000_000), 1), "no schedule");
    }
}
