//! Sessions from Python (seed 003): the status table, sync, verify and the
//! verified safe delete of one session, as `backupkit session ...` does.

use backup_core::mirror::VerifyMode;
use backup_core::sessions::config::{SessionDestination, SessionSet, select};
use backup_core::sessions::layout::{self, Session};
use backup_core::sessions::{delete, ops, status};
use backup_core::{Cancel, Error, NoProgress};
use pyo3::prelude::*;

use crate::convert::json_to_py;
use crate::errors::InvalidInputError;
use crate::jobs::{config_of, to_py};
use crate::mirror::{MirrorResult, VerifyResult};

/// One session's status at one destination.
#[pyclass(frozen, module = "backupkit")]
#[derive(Debug, Clone)]
pub(crate) struct SessionStatus {
    inner: status::SessionStatus,
}

#[pymethods]
impl SessionStatus {
    #[getter]
    fn set(&self) -> String {
        self.inner.set.clone()
    }
    /// The session's variables (`participant_id`, `session_date`, ...).
    #[getter]
    fn variables(&self) -> std::collections::BTreeMap<String, String> {
        self.inner.variables.clone()
    }
    /// `YYYYMMDD`, when the session has a date.
    #[getter]
    fn date(&self) -> Option<String> {
        self.inner.date.clone()
    }
    #[getter]
    fn source(&self) -> String {
        self.inner.source.clone()
    }
    #[getter]
    fn files(&self) -> u64 {
        self.inner.files
    }
    #[getter]
    fn bytes(&self) -> u64 {
        self.inner.bytes
    }
    #[getter]
    fn videos(&self) -> u64 {
        self.inner.videos
    }
    #[getter]
    fn destination(&self) -> String {
        self.inner.destination.clone()
    }
    /// The session's place at the destination.
    #[getter]
    fn place(&self) -> String {
        self.inner.place.clone()
    }
    #[getter]
    fn backup_files(&self) -> u64 {
        self.inner.backup_files
    }
    #[getter]
    fn backup_bytes(&self) -> u64 {
        self.inner.backup_bytes
    }
    /// `None` when the set has no import check.
    #[getter]
    fn imported(&self) -> Option<bool> {
        self.inner.imported
    }
    #[getter]
    fn backup(&self) -> bool {
        self.inner.backup
    }
    #[getter]
    fn verified(&self) -> bool {
        self.inner.verified
    }
    #[getter]
    fn safe(&self) -> bool {
        self.inner.safe
    }
    /// `(name, ok, reason)` of each check.
    #[getter]
    fn checks(&self) -> Vec<(String, bool, String)> {
        self.inner
            .checks
            .iter()
            .map(|c| (c.name.to_owned(), c.ok, c.reason.clone()))
            .collect()
    }

    fn __repr__(&self) -> String {
        format!(
            "SessionStatus({:?}, backup={}, verified={}, safe={})",
            self.inner.source, self.inner.backup, self.inner.verified, self.inner.safe
        )
    }
}

/// The set and destination the arguments name.
fn place<'c>(
    sets: &'c [SessionSet],
    set: Option<&str>,
    dest: Option<&str>,
) -> backup_core::Result<(&'c SessionSet, &'c SessionDestination)> {
    let s = select(sets, set, "set=")?;
    let d = ops::destination(s, dest).map_err(|e| match e {
        Error::InvalidInput(m) => Error::InvalidInput(m.replace("--dest", "dest=")),
        other => other,
    })?;
    Ok((s, d))
}

fn date(s: Option<&str>) -> PyResult<Option<chrono::NaiveDate>> {
    s.map(|d| {
        layout::parse_date(d).ok_or_else(|| {
            InvalidInputError::new_err(format!("{d:?} is not a date (YYYYMMDD or YYYY-MM-DD)"))
        })
    })
    .transpose()
}

/// The status of every session in a date range at one destination: the
/// rows of `backupkit session status-range`.
#[pyfunction]
#[pyo3(signature = (config=None, *, set=None, dest=None, start_date=None, end_date=None))]
pub(crate) fn status_range(
    py: Python<'_>,
    config: Option<&Bound<'_, PyAny>>,
    set: Option<&str>,
    dest: Option<&str>,
    start_date: Option<&str>,
    end_date: Option<&str>,
) -> PyResult<Vec<SessionStatus>> {
    let config = config_of(py, config)?;
    let (start, end) = (date(start_date)?, date(end_date)?);
    let rows = py.detach(|| -> backup_core::Result<Vec<status::SessionStatus>> {
        let (s, d) = place(&config.sessions, set, dest)?;
        let mut filter = s.filter.clone();
        filter.start = start.or(filter.start);
        filter.end = end.or(filter.end);
        let registry = backup_cli::registry();
        let cancel = Cancel::new();
        let sessions = layout::discover(&s.source, &s.layout, &filter)?;
        Ok(status::status_all(&registry, s, d, &sessions, &cancel))
    });
    Ok(rows
        .map_err(|e| to_py(py, &e))?
        .into_iter()
        .map(|inner| SessionStatus { inner })
        .collect())
}

/// The session named by its values, and its set and destination.
fn session<'c>(
    sets: &'c [SessionSet],
    values: &[String],
    set: Option<&str>,
    dest: Option<&str>,
) -> backup_core::Result<(&'c SessionSet, &'c SessionDestination, Session)> {
    let (s, d) = place(sets, set, dest)?;
    Ok((s, d, ops::find(s, values)?))
}

/// Mirrors one session to its place at the destination and verifies it by
/// count (`backupkit session sync`).
#[pyfunction]
#[pyo3(signature = (values, config=None, *, set=None, dest=None, dry_run=false))]
#[allow(clippy::needless_pass_by_value)] // pyo3 extracts arguments as owned values
pub(crate) fn sync_session(
    py: Python<'_>,
    values: Vec<String>,
    config: Option<&Bound<'_, PyAny>>,
    set: Option<&str>,
    dest: Option<&str>,
    dry_run: bool,
) -> PyResult<MirrorResult> {
    let config = config_of(py, config)?;
    let summary = crate::run::run(py, None, |progress, cancel| {
        let (s, d, session) = session(&config.sessions, &values, set, dest)?;
        ops::sync(
            &backup_cli::registry(),
            s,
            d,
            &session,
            dry_run,
            progress,
            cancel,
        )
    })?;
    Ok(MirrorResult::new(&summary))
}

/// Compares one session with its backup: every file and size, and the
/// content of `sample` random files (`full=True`: all). Returns the report
/// (`.ok` says whether it matches) without raising on a mismatch.
#[pyfunction]
#[pyo3(signature = (values, config=None, *, set=None, dest=None, sample=10, full=false))]
#[allow(clippy::needless_pass_by_value)] // pyo3 extracts arguments as owned values
#[allow(clippy::too_many_arguments)] // Python keyword arguments
pub(crate) fn verify_session(
    py: Python<'_>,
    values: Vec<String>,
    config: Option<&Bound<'_, PyAny>>,
    set: Option<&str>,
    dest: Option<&str>,
    sample: usize,
    full: bool,
) -> PyResult<VerifyResult> {
    let config = config_of(py, config)?;
    let mode = if full {
        VerifyMode::Checksum
    } else if sample == 0 {
        VerifyMode::Size
    } else {
        VerifyMode::Sample(sample)
    };
    let report = crate::run::run(py, None, |_, cancel| {
        let (s, d, session) = session(&config.sessions, &values, set, dest)?;
        ops::verify(
            &backup_cli::registry(),
            s,
            d,
            &session,
            mode,
            &NoProgress,
            cancel,
        )
    })?;
    Ok(VerifyResult::new(&report))
}

/// Deletes one session's local files after checking, from scratch, that
/// it is imported, backed up and verified (with `sample` files' content
/// read back; 0: all), as `backupkit session delete` does. Needs
/// `confirm=True` (or `dry_run=True`, which checks and deletes nothing).
/// Raises `RefusedError` with the reasons when it is not safe. Returns
/// what was (or would be) deleted as a dict.
#[pyfunction]
#[pyo3(signature = (values, config=None, *, set=None, dest=None, sample=10, confirm=false, dry_run=false))]
#[allow(clippy::needless_pass_by_value)] // pyo3 extracts arguments as owned values
#[allow(clippy::too_many_arguments)] // Python keyword arguments
pub(crate) fn delete_session<'py>(
    py: Python<'py>,
    values: Vec<String>,
    config: Option<&Bound<'py, PyAny>>,
    set: Option<&str>,
    dest: Option<&str>,
    sample: usize,
    confirm: bool,
    dry_run: bool,
) -> PyResult<Bound<'py, PyAny>> {
    if !confirm && !dry_run {
        return Err(InvalidInputError::new_err(
            "delete_session deletes recordings: pass confirm=True (or dry_run=True to check only)",
        ));
    }
    let config = config_of(py, config)?;
    let done = crate::run::run(py, None, |_, cancel| {
        let registry = backup_cli::registry();
        let (s, d, session) = session(&config.sessions, &values, set, dest)?;
        let verdict = delete::verify_for_delete(&registry, s, d, &session, sample, cancel);
        verdict.ensure_safe()?;
        if dry_run {
            return Ok(serde_json::to_value(&verdict).unwrap_or_default());
        }
        let done = delete::delete(&registry, s, d, &session, &verdict, cancel)?;
        Ok(serde_json::to_value(&done).unwrap_or_default())
    })?;
    json_to_py(py, &done)
}
