//! Results as Python objects: JSON values, timestamps, and the read-only
//! result classes.

use std::collections::BTreeMap;
use std::path::PathBuf;

use backup_core::{CheckReport, RestoreSummary, SnapshotMeta, SnapshotStatus};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyDateTime, PyDelta, PyDict, PyList, PyString, PyTzInfo};
use serde_json::Value;

/// A JSON value as the equivalent Python object (objects become dicts).
pub(crate) fn json_to_py<'py>(py: Python<'py>, value: &Value) -> PyResult<Bound<'py, PyAny>> {
    Ok(match value {
        Value::Null => py.None().into_bound(py),
        Value::Bool(b) => b.into_pyobject(py)?.to_owned().into_any(),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                i.into_pyobject(py)?.into_any()
            } else if let Some(u) = n.as_u64() {
                u.into_pyobject(py)?.into_any()
            } else {
                n.as_f64().unwrap_or(f64::NAN).into_pyobject(py)?.into_any()
            }
        }
        Value::String(s) => PyString::new(py, s).into_any(),
        Value::Array(items) => {
            let list = PyList::empty(py);
            for item in items {
                list.append(json_to_py(py, item)?)?;
            }
            list.into_any()
        }
        Value::Object(map) => {
            let dict = PyDict::new(py);
            for (k, v) in map {
                dict.set_item(k, json_to_py(py, v)?)?;
            }
            dict.into_any()
        }
    })
}

/// Python's `repr` of a string.
fn repr(py: Python<'_>, s: &str) -> PyResult<String> {
    Ok(PyString::new(py, s).repr()?.to_string())
}

/// A timezone-aware (UTC) `datetime` from seconds and microseconds since the
/// Unix epoch, computed exactly (no float rounding).
fn utc_datetime(py: Python<'_>, secs: i64, micros: u32) -> PyResult<Bound<'_, PyDateTime>> {
    let utc = PyTzInfo::utc(py)?;
    let epoch = PyDateTime::new(py, 1970, 1, 1, 0, 0, 0, 0, Some(&utc))?;
    let days = i32::try_from(secs.div_euclid(86_400))
        .map_err(|_| PyTypeError::new_err("timestamp out of range"))?;
    let delta = PyDelta::new(
        py,
        days,
        secs.rem_euclid(86_400) as i32,
        micros as i32,
        true,
    )?;
    Ok(epoch.add(delta)?.cast_into()?)
}

/// One snapshot: what `snapshot.json` records, read-only.
#[pyclass(frozen, module = "backupkit")]
#[derive(Debug)]
pub(crate) struct Snapshot {
    #[pyo3(get)]
    id: String,
    #[pyo3(get)]
    time: Py<PyDateTime>,
    #[pyo3(get)]
    kind: String,
    #[pyo3(get)]
    status: String,
    #[pyo3(get)]
    incomplete: bool,
    #[pyo3(get)]
    paths: Vec<String>,
    #[pyo3(get)]
    tags: Vec<String>,
    #[pyo3(get)]
    host: String,
    #[pyo3(get)]
    size: u64,
    #[pyo3(get)]
    source_size: u64,
    #[pyo3(get)]
    file_count: u64,
    #[pyo3(get)]
    dir_count: u64,
    #[pyo3(get)]
    compression: String,
    #[pyo3(get)]
    level: Option<i32>,
    #[pyo3(get)]
    checksum: String,
    #[pyo3(get)]
    warnings: Vec<String>,
    #[pyo3(get)]
    duration: f64,
    /// The whole `snapshot.json`, for `to_dict`.
    meta: Value,
}

impl Snapshot {
    pub(crate) fn new(py: Python<'_>, m: &SnapshotMeta) -> PyResult<Self> {
        let time = utc_datetime(
            py,
            m.timestamp.timestamp(),
            m.timestamp.timestamp_subsec_micros(),
        )?;
        Ok(Self {
            id: m.id.clone(),
            time: time.unbind(),
            kind: m.kind.as_str().to_owned(),
            status: match m.status {
                SnapshotStatus::Success => "success",
                SnapshotStatus::Incomplete => "incomplete",
            }
            .to_owned(),
            incomplete: m.status == SnapshotStatus::Incomplete,
            paths: m.paths.clone(),
            tags: m.tags.clone(),
            host: m.host.clone(),
            size: m.size_bytes,
            source_size: m.source_bytes,
            file_count: m.file_count,
            dir_count: m.dir_count,
            compression: m.compression.as_str().to_owned(),
            level: m.level,
            checksum: m.checksum.clone(),
            warnings: m.warnings.clone(),
            duration: m.duration_seconds,
            meta: serde_json::to_value(m).expect("snapshot metadata serializes"),
        })
    }
}

#[pymethods]
impl Snapshot {
    /// The full `snapshot.json` contents as a dict.
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        json_to_py(py, &self.meta)
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let time = self.time.bind(py).call_method0("isoformat")?;
        Ok(format!(
            "Snapshot(id={}, time={}, status={}, files={}, size={})",
            repr(py, &self.id)?,
            time.repr()?,
            repr(py, &self.status)?,
            self.file_count,
            self.size
        ))
    }
}

/// What a restore did.
#[pyclass(frozen, module = "backupkit")]
#[derive(Debug)]
pub(crate) struct RestoreResult {
    #[pyo3(get)]
    snapshot_id: String,
    /// A `pathlib.Path`.
    #[pyo3(get)]
    target: Py<PyAny>,
    #[pyo3(get)]
    files: u64,
    #[pyo3(get)]
    dirs: u64,
    #[pyo3(get)]
    links: u64,
    #[pyo3(get)]
    bytes: u64,
    #[pyo3(get)]
    skipped: u64,
    /// Rows per table of a restored database (verified); `None` for files.
    #[pyo3(get)]
    tables: Option<BTreeMap<String, u64>>,
}

impl RestoreResult {
    pub(crate) fn new(py: Python<'_>, s: RestoreSummary) -> PyResult<Self> {
        let target: PathBuf = s.target;
        Ok(Self {
            snapshot_id: s.snapshot,
            target: target.into_pyobject(py)?.unbind(),
            files: s.files,
            dirs: s.dirs,
            links: s.links,
            bytes: s.bytes,
            skipped: s.skipped,
            tables: None,
        })
    }

    /// A database restore: one dump into `target` (the path or URL given).
    pub(crate) fn database(
        py: Python<'_>,
        s: backup_core::DatabaseRestoreSummary,
        target: &str,
    ) -> PyResult<Self> {
        Ok(Self {
            snapshot_id: s.snapshot,
            target: PathBuf::from(target).into_pyobject(py)?.unbind(),
            files: 1,
            dirs: 0,
            links: 0,
            bytes: 0,
            skipped: 0,
            tables: Some(s.tables),
        })
    }
}

#[pymethods]
impl RestoreResult {
    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        Ok(format!(
            "RestoreResult(snapshot_id={}, target={}, files={}, dirs={}, links={}, bytes={}, skipped={})",
            repr(py, &self.snapshot_id)?,
            self.target.bind(py).repr()?,
            self.files,
            self.dirs,
            self.links,
            self.bytes,
            self.skipped
        ))
    }
}

/// What `Repository.backup_database` did.
#[pyclass(frozen, module = "backupkit")]
#[derive(Debug)]
pub(crate) struct DatabaseBackupResult {
    /// `"backed_up"`, or `"skipped"` because the newest dump is recent.
    #[pyo3(get)]
    action: String,
    /// The new snapshot, or the recent one that made a new one unneeded.
    #[pyo3(get)]
    snapshot: Option<Py<Snapshot>>,
    /// Ids of older dumps removed to keep `keep_last`.
    #[pyo3(get)]
    pruned: Vec<String>,
}

impl DatabaseBackupResult {
    pub(crate) fn new(py: Python<'_>, o: backup_core::AutoOutcome) -> PyResult<Self> {
        Ok(Self {
            action: o.action.to_owned(),
            snapshot: o
                .snapshot
                .map(|m| Py::new(py, Snapshot::new(py, &m)?))
                .transpose()?,
            pruned: o.pruned,
        })
    }
}

#[pymethods]
impl DatabaseBackupResult {
    /// Whether a new dump was made.
    #[getter]
    fn backed_up(&self) -> bool {
        self.action == "backed_up"
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let id = self.snapshot.as_ref().map(|s| s.get().id.clone());
        Ok(format!(
            "DatabaseBackupResult(action={}, snapshot={}, pruned={:?})",
            repr(py, &self.action)?,
            id.map_or_else(|| Ok("None".to_owned()), |i| repr(py, &i))?,
            self.pruned
        ))
    }
}

/// What `Repository.copy` did.
#[pyclass(frozen, module = "backupkit")]
#[derive(Debug)]
pub(crate) struct CopyResult {
    /// Ids of the snapshots copied, oldest first.
    #[pyo3(get)]
    copied: Vec<String>,
    /// Ids the destination already had.
    #[pyo3(get)]
    skipped: Vec<String>,
    /// Bytes of data copied.
    #[pyo3(get)]
    bytes: u64,
}

impl CopyResult {
    pub(crate) fn new(s: backup_core::CopySummary) -> Self {
        Self {
            copied: s.copied,
            skipped: s.skipped,
            bytes: s.bytes,
        }
    }
}

#[pymethods]
impl CopyResult {
    fn __repr__(&self) -> String {
        format!(
            "CopyResult(copied={:?}, skipped={:?}, bytes={})",
            self.copied, self.skipped, self.bytes
        )
    }
}

/// What a check found.
#[pyclass(frozen, module = "backupkit")]
#[derive(Debug)]
pub(crate) struct CheckResult {
    #[pyo3(get)]
    snapshots_checked: u64,
    #[pyo3(get)]
    snapshots_read: u64,
    /// `(snapshot id, message)` pairs.
    #[pyo3(get)]
    problems: Vec<(String, String)>,
    #[pyo3(get)]
    unfinished: Vec<String>,
}

impl CheckResult {
    pub(crate) fn new(r: CheckReport) -> Self {
        Self {
            snapshots_checked: r.snapshots_checked,
            snapshots_read: r.snapshots_read,
            problems: r
                .problems
                .into_iter()
                .map(|p| (p.snapshot, p.message))
                .collect(),
            unfinished: r.unfinished,
        }
    }

    /// One line listing every problem.
    pub(crate) fn problems_line(&self) -> String {
        let list: Vec<String> = self
            .problems
            .iter()
            .map(|(id, msg)| format!("snapshot {id}: {msg}"))
            .collect();
        format!(
            "integrity check failed for {} snapshot(s): {}",
            self.problems.len(),
            list.join("; ")
        )
    }
}

#[pymethods]
impl CheckResult {
    /// Whether no problem was found.
    #[getter]
    pub(crate) fn ok(&self) -> bool {
        self.problems.is_empty()
    }

    fn __repr__(&self) -> String {
        format!(
            "CheckResult(snapshots_checked={}, snapshots_read={}, problems={}, unfinished={})",
            self.snapshots_checked,
            self.snapshots_read,
            self.problems.len(),
            self.unfinished.len()
        )
    }
}
