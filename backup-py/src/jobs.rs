//! `backupkit.load_config` and `backupkit.run`: the config file's jobs from
//! Python, with the same results as `backupkit run --json`.

use std::path::{Path, PathBuf};

use backup_core::jobs::find;
use backup_core::jobs::log::{EventSink, LogEvent};
use backup_core::jobs::model::{self, Config as CoreConfig};
use backup_core::jobs::run::{self, DestinationResult as CoreResult, RunOptions};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::convert::json_to_py;
use crate::errors::{self, ConfigError};
use crate::{callback, run as worker};

/// A validated config file.
#[pyclass(frozen, module = "backupkit", name = "Config")]
#[derive(Debug, Clone)]
pub(crate) struct Config {
    inner: CoreConfig,
}

#[pymethods]
impl Config {
    /// The file it was read from.
    #[getter]
    fn path(&self) -> PathBuf {
        self.inner.file.clone()
    }

    /// The job names, in file order.
    #[getter]
    fn jobs(&self) -> Vec<String> {
        self.inner.jobs.iter().map(|j| j.name.clone()).collect()
    }

    /// Each job's destination names.
    #[getter]
    fn destinations(&self) -> Vec<(String, Vec<String>)> {
        self.inner
            .jobs
            .iter()
            .map(|j| {
                (
                    j.name.clone(),
                    j.destinations.iter().map(|d| d.name.clone()).collect(),
                )
            })
            .collect()
    }

    /// The effective config as `backupkit config show --json` prints it:
    /// defaults filled in, secrets shown only as where they come from.
    fn show<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        json_to_py(py, &self.inner.view())
    }

    fn __repr__(&self) -> String {
        format!(
            "Config({:?}, jobs={:?})",
            self.inner.file.display().to_string(),
            self.jobs()
        )
    }
}

/// One destination's result in a run.
#[pyclass(frozen, module = "backupkit")]
#[derive(Debug, Clone)]
pub(crate) struct DestinationResult {
    #[pyo3(get)]
    job: String,
    #[pyo3(get)]
    destination: String,
    /// `mirror` or `snapshots`.
    #[pyo3(get)]
    kind: String,
    #[pyo3(get)]
    location: String,
    /// `ok`, `skipped`, `incomplete` or `failed`.
    #[pyo3(get)]
    result: String,
    #[pyo3(get)]
    files: u64,
    #[pyo3(get)]
    bytes: u64,
    #[pyo3(get)]
    seconds: f64,
    #[pyo3(get)]
    error: Option<String>,
    /// Snapshots taken.
    #[pyo3(get)]
    snapshots: Vec<String>,
    /// Snapshots removed by retention (or that would be, in a dry run).
    #[pyo3(get)]
    forgotten: Vec<String>,
    /// What was (or would be) done.
    #[pyo3(get)]
    details: Vec<String>,
}

#[pymethods]
impl DestinationResult {
    /// Whether the destination holds this run's data in full.
    #[getter]
    fn ok(&self) -> bool {
        self.result == "ok"
    }

    fn __repr__(&self) -> String {
        format!(
            "DestinationResult(job={:?}, destination={:?}, result={:?})",
            self.job, self.destination, self.result
        )
    }
}

impl DestinationResult {
    fn new(r: &CoreResult) -> Self {
        Self {
            job: r.job.clone(),
            destination: r.destination.clone(),
            kind: r.kind.to_owned(),
            location: r.location.clone(),
            result: r.result.as_str().to_owned(),
            files: r.files,
            bytes: r.bytes,
            seconds: r.seconds,
            error: r.error.clone(),
            snapshots: r.snapshots.clone(),
            forgotten: r.forgotten.clone(),
            details: r.details.clone(),
        }
    }

    /// A job that failed or was skipped before any destination ran.
    fn for_job(j: &run::JobResult) -> Self {
        Self {
            job: j.job.clone(),
            destination: String::new(),
            kind: String::new(),
            location: String::new(),
            result: j.result.as_str().to_owned(),
            files: 0,
            bytes: 0,
            seconds: j.seconds,
            error: j.error.clone(),
            snapshots: Vec::new(),
            forgotten: Vec::new(),
            details: Vec::new(),
        }
    }
}

pub(crate) fn load(path: Option<&Path>) -> backup_core::Result<CoreConfig> {
    let found = find::locate(path)?;
    model::load(&found.path, &backup_cli::registry())
}

/// Reads and validates a config file (`None`: `BACKUPKIT_CONFIG`, then
/// `./backupkit.yaml` or `.toml`, then the user's config directory).
/// Raises `ConfigError`, whose `.problems` lists every problem as a dict
/// with `file`, `line`, `column`, `key` and `message`.
#[pyfunction]
#[pyo3(signature = (path=None))]
#[allow(clippy::needless_pass_by_value)] // pyo3 extracts arguments as owned values
pub(crate) fn load_config(py: Python<'_>, path: Option<PathBuf>) -> PyResult<Config> {
    let inner = py
        .detach(|| load(path.as_deref()))
        .map_err(|e| to_py(py, &e))?;
    Ok(Config { inner })
}

/// The config a function's `config` argument names: a `Config`, a path,
/// or `None` (found as `load_config()` finds it).
pub(crate) fn config_of(py: Python<'_>, config: Option<&Bound<'_, PyAny>>) -> PyResult<CoreConfig> {
    match config {
        Some(c) if c.is_instance_of::<Config>() => Ok(c.cast::<Config>()?.get().inner.clone()),
        Some(c) => {
            let path: PathBuf = c.extract()?;
            py.detach(|| load(Some(&path))).map_err(|e| to_py(py, &e))
        }
        None => py.detach(|| load(None)).map_err(|e| to_py(py, &e)),
    }
}

/// Events of a run, for the worker to forward.
struct Forward<'f>(&'f (dyn Fn(LogEvent) + Sync));

impl EventSink for Forward<'_> {
    fn event(&self, event: &LogEvent) {
        (self.0)(event.clone());
    }
}

/// Runs the config's jobs (all enabled ones, or `jobs`), only the
/// destinations in `only` if given, and returns one `DestinationResult`
/// per destination (and one per job that stopped before its
/// destinations: a failing `before` hook). `progress` gets each event as
/// a dict (`level`, `job`, `destination`, `message`).
#[pyfunction]
#[pyo3(name = "run", signature = (config=None, jobs=None, only=None, dry_run=false, progress=None))]
#[allow(clippy::needless_pass_by_value)] // pyo3 extracts arguments as owned values
pub(crate) fn run_jobs(
    py: Python<'_>,
    config: Option<&Bound<'_, PyAny>>,
    jobs: Option<Vec<String>>,
    only: Option<Vec<String>>,
    dry_run: bool,
    progress: Option<&Bound<'_, PyAny>>,
) -> PyResult<Vec<DestinationResult>> {
    let opts = RunOptions {
        jobs: jobs.unwrap_or_default(),
        only: only.unwrap_or_default(),
        dry_run,
        ..RunOptions::default()
    };
    run_with(py, &config_of(py, config)?, &opts, progress)
}

/// Pulls a device fleet once (a job with `pull:`): every device, or those
/// in `devices` (id, name, or the number a name ends with), every kind or
/// those in `kinds`. One `DestinationResult` per device and kind, named
/// `DEVICE.KIND`; an unreachable device is a failed result, not an
/// exception.
#[pyfunction]
#[pyo3(signature = (job, devices=None, kinds=None, config=None, dry_run=false, progress=None))]
#[allow(clippy::needless_pass_by_value)] // pyo3 extracts arguments as owned values
pub(crate) fn pull(
    py: Python<'_>,
    job: String,
    devices: Option<Vec<String>>,
    kinds: Option<Vec<String>>,
    config: Option<&Bound<'_, PyAny>>,
    dry_run: bool,
    progress: Option<&Bound<'_, PyAny>>,
) -> PyResult<Vec<DestinationResult>> {
    let opts = RunOptions {
        jobs: vec![job],
        dry_run,
        devices: devices.unwrap_or_default(),
        kinds: kinds.unwrap_or_default(),
        ..RunOptions::default()
    };
    let config = config_of(py, config)?;
    match config.jobs.iter().find(|j| j.name == opts.jobs[0]) {
        Some(j) if j.pull.is_none() => Err(pyo3::exceptions::PyValueError::new_err(format!(
            "the job {:?} has no `pull:` section; run it with backupkit.run(jobs=[...])",
            j.name
        ))),
        _ => run_with(py, &config, &opts, progress),
    }
}

fn run_with(
    py: Python<'_>,
    config: &CoreConfig,
    opts: &RunOptions,
    progress: Option<&Bound<'_, PyAny>>,
) -> PyResult<Vec<DestinationResult>> {
    let registry = backup_cli::registry();
    let summary = worker::run_events::<LogEvent, _, _>(py, callback(progress)?, |send, cancel| {
        run::run(config, &registry, opts, &Forward(send), cancel)
    })?;
    Ok(summary
        .jobs
        .iter()
        .flat_map(|j| {
            if j.destinations.is_empty() {
                vec![DestinationResult::for_job(j)]
            } else {
                j.destinations.iter().map(DestinationResult::new).collect()
            }
        })
        .collect())
}

/// `ConfigError` with `.problems`, or the error's own exception.
pub(crate) fn to_py(py: Python<'_>, e: &backup_core::Error) -> PyErr {
    let backup_core::Error::Config { problems } = e else {
        return errors::to_py(e);
    };
    let err = ConfigError::new_err(e.to_string());
    let list: PyResult<Vec<Bound<'_, PyDict>>> = problems
        .iter()
        .map(|p| {
            let d = PyDict::new(py);
            d.set_item("file", &p.file)?;
            d.set_item("line", p.at.line)?;
            d.set_item("column", p.at.col)?;
            d.set_item("key", &p.key)?;
            d.set_item("message", &p.message)?;
            Ok(d)
        })
        .collect();
    match list.and_then(|l| err.value(py).setattr("problems", l)) {
        Ok(()) => err,
        Err(e) => e,
    }
}
