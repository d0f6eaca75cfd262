//! The live state of a fleet: what each device is doing and did last,
//! and the device list of the last discovery. Rounds write it; a status
//! page or `--json` reads [`FleetStatus::view`].

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::fleet::Device;
use crate::jobs::run::Outcome;

/// What a device is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceState {
    /// Not pulled yet, or its last pull went well.
    #[default]
    Idle,
    Running,
    /// Its last pull failed (or was incomplete).
    Failed,
    /// It could not be reached, or stopped answering.
    Unreachable,
}

impl DeviceState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceState::Idle => "idle",
            DeviceState::Running => "running",
            DeviceState::Failed => "failed",
            DeviceState::Unreachable => "unreachable",
        }
    }
}

/// How far a running pull is.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Transfer {
    /// Files and bytes planned so far (the plan grows as the device's tree
    /// is walked).
    pub files_planned: u64,
    pub bytes_planned: u64,
    pub files_done: u64,
    pub bytes_done: u64,
    /// Bytes read from the device so far, files in flight included.
    pub bytes_read: u64,
    /// `bytes_done` of `bytes_planned`, 0 to 100.
    pub percent: f64,
    /// Bytes per second since the pull started.
    pub rate: f64,
    pub started: DateTime<Utc>,
}

impl Transfer {
    /// Takes in the bytes read so far (0: unchanged) and works out the
    /// percent and rate again.
    pub fn update(&mut self, read: u64) {
        self.bytes_read = self.bytes_read.max(read);
        let moved = self.bytes_done.max(self.bytes_read);
        self.percent = if self.bytes_planned == 0 {
            0.0
        } else {
            (moved as f64 * 100.0 / self.bytes_planned as f64).min(100.0)
        };
        let secs = (Utc::now() - self.started).as_seconds_f64();
        self.rate = if secs > 0.0 { moved as f64 / secs } else { 0.0 };
    }
}

/// One kind's last result on a device.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KindStatus {
    pub result: Outcome,
    pub files: u64,
    pub bytes: u64,
    pub error: Option<String>,
}

/// One device's state.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeviceStatus {
    pub id: String,
    pub name: Option<String>,
    /// Where it is (no credentials).
    pub url: String,
    pub state: DeviceState,
    /// Whether the last discovery (or the config) still lists it.
    pub present: bool,
    pub transfer: Option<Transfer>,
    pub last_attempt: Option<DateTime<Utc>>,
    pub last_success: Option<DateTime<Utc>>,
    pub last_result: Option<Outcome>,
    pub last_error: Option<String>,
    /// Files and bytes of the last pull, and how long it took.
    pub files: u64,
    pub bytes: u64,
    pub seconds: f64,
    pub runs: u64,
    pub failures: u64,
    pub kinds: BTreeMap<String, KindStatus>,
}

impl DeviceStatus {
    fn new(d: &Device) -> Self {
        Self {
            id: d.id.clone(),
            name: d.name.clone(),
            url: crate::registry::redact(&d.url),
            state: DeviceState::Idle,
            present: true,
            transfer: None,
            last_attempt: None,
            last_success: None,
            last_result: None,
            last_error: None,
            files: 0,
            bytes: 0,
            seconds: 0.0,
            runs: 0,
            failures: 0,
            kinds: BTreeMap::new(),
        }
    }
}

/// What the fleet knows, under one lock.
#[derive(Debug, Default)]
pub struct FleetState {
    /// Every device seen, by id (gone ones with `present: false`).
    pub devices: BTreeMap<String, DeviceStatus>,
    /// The device list in use and when it was discovered.
    pub list: Vec<Device>,
    pub discovered: Option<(Instant, DateTime<Utc>)>,
    /// Why the last discovery failed (the previous list stays in use).
    pub discovery_error: Option<String>,
}

/// The shared state of one pull job's fleet.
#[derive(Debug, Default)]
pub struct FleetStatus {
    state: Mutex<FleetState>,
}

impl FleetStatus {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn lock(&self) -> MutexGuard<'_, FleetState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Makes `list` the devices in use: new ones appear, gone ones are kept
    /// with `present: false` (and stop being pulled).
    pub fn set_list(&self, list: Vec<Device>, discovered: bool) {
        let mut s = self.lock();
        for d in s.devices.values_mut() {
            d.present = false;
        }
        for d in &list {
            let e = s
                .devices
                .entry(d.id.clone())
                .or_insert_with(|| DeviceStatus::new(d));
            e.present = true;
            e.name.clone_from(&d.name);
            e.url = crate::registry::redact(&d.url);
        }
        s.list = list;
        if discovered {
            s.discovered = Some((Instant::now(), Utc::now()));
            s.discovery_error = None;
        }
    }

    /// A device known from before (the service's history), until
    /// discovery or the config lists it again.
    pub fn remember(&self, id: &str, h: &crate::schedule::history::JobHistory) {
        let mut s = self.lock();
        let d = s.devices.entry(id.to_owned()).or_insert_with(|| {
            DeviceStatus::new(&Device {
                id: id.to_owned(),
                name: None,
                url: String::new(),
            })
        });
        d.present = false;
        d.last_attempt = h.last_start;
        d.last_success = h.last_success;
        d.last_error.clone_from(&h.last_error);
        d.last_result = h.last_result.as_deref().and_then(Outcome::parse);
        d.state = match d.last_result {
            Some(Outcome::Failed | Outcome::Incomplete) => DeviceState::Failed,
            _ => DeviceState::Idle,
        };
        (d.files, d.bytes, d.seconds) = (h.files, h.bytes, h.seconds);
        (d.runs, d.failures) = (h.runs, h.failures);
    }

    /// Every device's record, for the service's history.
    pub fn records(&self) -> Vec<(String, crate::schedule::history::JobHistory)> {
        self.lock()
            .devices
            .values()
            .map(|d| {
                (
                    d.id.clone(),
                    crate::schedule::history::JobHistory {
                        last_start: d.last_attempt,
                        last_end: None,
                        last_result: d.last_result.map(|o| o.as_str().to_owned()),
                        last_error: d.last_error.clone(),
                        last_success: d.last_success,
                        files: d.files,
                        bytes: d.bytes,
                        seconds: d.seconds,
                        runs: d.runs,
                        failures: d.failures,
                    },
                )
            })
            .collect()
    }

    /// Applies `f` to a device's state, if it is known.
    pub fn update(&self, id: &str, f: impl FnOnce(&mut DeviceStatus)) {
        if let Some(d) = self.lock().devices.get_mut(id) {
            f(d);
        }
    }
}

/// The fleets of a config's pull jobs, by job name, kept across rounds (by
/// the scheduler service).
#[derive(Debug, Default)]
pub struct Fleets(Mutex<BTreeMap<String, Arc<FleetStatus>>>);

impl Fleets {
    pub fn new() -> Self {
        Self::default()
    }

    /// The fleet of `job`, made on first use.
    pub fn get(&self, job: &str) -> Arc<FleetStatus> {
        let mut m = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(m.entry(job.to_owned()).or_default())
    }

    /// The jobs that have a fleet, with it.
    pub fn all(&self) -> Vec<(String, Arc<FleetStatus>)> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(k, v)| (k.clone(), Arc::clone(v)))
            .collect()
    }
}
