//! `backupkit._backupkit`: the native module behind the `backupkit` Python
//! package.
//!
//! Translation only: Python arguments become backup-core options, results
//! become Python objects, core errors become exceptions (`errors`). Every
//! engine call runs through [`run::run`], which releases the GIL, delivers
//! progress and turns Ctrl-C into a clean cancellation.

mod convert;
mod errors;
mod jobs;
mod mirror;
mod run;
mod sessions;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;

use backup_core::archive::Compression;
use backup_core::registry::database_url;
use backup_core::{
    AutoOptions, BackupOptions, CheckOptions, DatabaseBackupOptions, ForgetOptions, KeepPolicy,
    Registry, RestoreOptions,
};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::PyList;

use crate::convert::{
    CheckResult, CopyResult, DatabaseBackupResult, RestoreResult, Snapshot, json_to_py,
};
use crate::errors::{
    BackupError, IntegrityError, InvalidInputError, LockedError, RepositoryExistsError,
    RepositoryNotFoundError, SnapshotNotFoundError, WouldOverwriteError,
};

/// A backupkit repository at a location: a directory, or an object-store
/// URL (`s3://bucket/prefix`, `az://container/prefix`, `gs://bucket/prefix`)
/// with `options` for endpoints and credentials. Creating the object touches
/// nothing; each method opens the repository.
#[pyclass(frozen, module = "backupkit", name = "Repository")]
struct PyRepository {
    location: String,
    /// May hold secrets: never shown by `Debug` or `repr`.
    options: backup_core::TargetOptions,
    /// Read-only methods take no lock (a read-only repository).
    no_lock: bool,
    registry: Arc<Registry>,
}

impl std::fmt::Debug for PyRepository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PyRepository")
            .field("location", &self.location)
            .field("options", &self.options.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl PyRepository {
    /// Opens the repository and runs `work` on it (see [`run::run`]).
    fn run<T, F>(&self, py: Python<'_>, progress: Option<&Bound<'_, PyAny>>, work: F) -> PyResult<T>
    where
        T: Send,
        F: FnOnce(
                &backup_core::Repository,
                &dyn backup_core::Progress,
                &backup_core::Cancel,
            ) -> backup_core::Result<T>
            + Send,
    {
        run::run(py, progress, |progress, cancel| {
            work(&self.open()?, progress, cancel)
        })
    }

    fn open(&self) -> backup_core::Result<backup_core::Repository> {
        let repo =
            backup_core::Repository::from_target(Arc::clone(&self.registry), self.target()?)?;
        Ok(if self.no_lock {
            repo.without_read_locks()
        } else {
            repo
        })
    }

    fn target(&self) -> backup_core::Result<Arc<dyn backup_core::Target>> {
        self.registry
            .open_target_with(&self.location, &self.options)
    }
}

/// A policy count: `None` is off, -1 is unlimited (as in restic).
fn count(n: Option<i64>, name: &str) -> PyResult<u32> {
    match n {
        None | Some(0) => Ok(0),
        Some(-1) => Ok(backup_core::retention::UNLIMITED),
        Some(n) => u32::try_from(n)
            .ok()
            .filter(|n| *n != backup_core::retention::UNLIMITED)
            .ok_or_else(|| {
                InvalidInputError::new_err(format!(
                    "{name} must be a count of at least 0, or -1 for unlimited (got {n})"
                ))
            }),
    }
}

/// `str` or `os.PathLike`, or a sequence of them.
fn one_or_more_paths(paths: &Bound<'_, PyAny>) -> PyResult<Vec<PathBuf>> {
    if let Ok(p) = paths.extract::<PathBuf>() {
        return Ok(vec![p]);
    }
    let items = paths.try_iter().map_err(|_| {
        PyTypeError::new_err("paths must be a str, an os.PathLike, or a sequence of them")
    })?;
    items.map(|item| item?.extract::<PathBuf>()).collect()
}

fn path_to_string(path: PathBuf) -> PyResult<String> {
    path.into_os_string().into_string().map_err(|p| {
        InvalidInputError::new_err(format!(
            "location {} is not valid UTF-8",
            p.to_string_lossy()
        ))
    })
}

/// What `restore` restored.
enum Restored {
    Files(backup_core::RestoreSummary),
    Database(backup_core::DatabaseRestoreSummary),
    /// The database exists and `overwrite` was not given.
    Exists(String),
}

/// The progress argument, refused early (before any work) if not callable.
fn callback<'a, 'py>(
    progress: Option<&'a Bound<'py, PyAny>>,
) -> PyResult<Option<&'a Bound<'py, PyAny>>> {
    match progress {
        Some(p) if !p.is_callable() => Err(PyTypeError::new_err(
            "progress must be a callable taking one dict, or None",
        )),
        other => Ok(other),
    }
}

#[pymethods]
impl PyRepository {
    #[new]
    #[pyo3(signature = (location, *, options=None, no_lock=false))]
    fn new(
        location: PathBuf,
        options: Option<BTreeMap<String, String>>,
        no_lock: bool,
    ) -> PyResult<Self> {
        Ok(Self {
            location: path_to_string(location)?,
            options: options.unwrap_or_default(),
            no_lock,
            registry: backup_cli::registry(),
        })
    }

    /// The location as given.
    #[getter]
    fn location(&self) -> &str {
        &self.location
    }

    /// Creates the repository; with `dedup`, a deduplicated one (each
    /// chunk stored once, restorable with the `restore.py` it holds).
    #[pyo3(signature = (*, dedup=false))]
    fn init(&self, py: Python<'_>, dedup: bool) -> PyResult<()> {
        run::run(py, None, |_, _| {
            backup_core::Repository::init_with(
                Arc::clone(&self.registry),
                self.target()?,
                backup_core::repository::InitOptions { dedup },
            )
            .map(drop)
        })
    }

    /// Whether the repository is deduplicated.
    fn is_dedup(&self, py: Python<'_>) -> PyResult<bool> {
        run::run(py, None, |_, _| Ok(self.open()?.dedup().is_some()))
    }

    /// Backs up files and directories into a new snapshot; `None` for a dry run.
    /// With `no_cache`, a deduplicated repository's stat cache is not consulted.
    #[pyo3(signature = (paths, *, tags=None, exclude=None, compression="gzip", level=None, dry_run=false, no_cache=false, progress=None))]
    #[allow(clippy::too_many_arguments)] // Python keyword arguments
    fn backup(
        &self,
        py: Python<'_>,
        paths: &Bound<'_, PyAny>,
        tags: Option<Vec<String>>,
        exclude: Option<Vec<String>>,
        compression: &str,
        level: Option<i32>,
        dry_run: bool,
        no_cache: bool,
        progress: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Option<Snapshot>> {
        let opts = BackupOptions {
            paths: one_or_more_paths(paths)?,
            tags: tags.unwrap_or_default(),
            excludes: exclude.unwrap_or_default(),
            compression: compression
                .parse::<Compression>()
                .map_err(|e| errors::to_py(&e))?,
            level,
            dry_run,
            no_cache,
            ..BackupOptions::default()
        };
        let summary = self.run(py, callback(progress)?, |repo, progress, cancel| {
            repo.backup(&opts, progress, cancel)
        })?;
        summary
            .snapshot
            .map(|meta| Snapshot::new(py, &meta))
            .transpose()
    }

    /// Backs up a database: the path of an SQLite file or a URL
    /// (`sqlite:///abs/results.db`). With `min_interval` (seconds), only if
    /// this host's newest dump of it is older than that; with `keep_last`,
    /// then keeps only that many newest dumps. Meant for the end of an
    /// analysis run:
    /// `repo.backup_database("outputs/results.db", min_interval=3600, keep_last=10)`.
    #[pyo3(signature = (
        database, *, min_interval=None, keep_last=None, tags=None,
        compression="gzip", level=None, progress=None
    ))]
    #[allow(clippy::too_many_arguments)] // keyword arguments, as Python callers expect
    fn backup_database(
        &self,
        py: Python<'_>,
        database: PathBuf,
        min_interval: Option<f64>,
        keep_last: Option<u32>,
        tags: Option<Vec<String>>,
        compression: &str,
        level: Option<i32>,
        progress: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<DatabaseBackupResult> {
        let given = path_to_string(database)?;
        let url = database_url(&given).map_err(|e| errors::to_py(&e))?;
        if keep_last == Some(0) {
            // 0 would read as "keep none" but could only mean "keep all":
            // refused, as None already says "keep every dump".
            return Err(InvalidInputError::new_err(
                "keep_last must be at least 1 (leave it out to keep every dump)",
            ));
        }
        let interval = min_interval.unwrap_or(0.0);
        if !(interval.is_finite() && interval >= 0.0) {
            return Err(InvalidInputError::new_err(format!(
                "min_interval must be a number of seconds >= 0 (got {interval})"
            )));
        }
        let opts = AutoOptions {
            backup: DatabaseBackupOptions {
                tags: tags.unwrap_or_default(),
                compression: compression
                    .parse::<Compression>()
                    .map_err(|e| errors::to_py(&e))?,
                level,
                host: None,
            },
            min_interval_seconds: interval.ceil() as u64,
            keep_last: keep_last.unwrap_or(0),
        };
        let registry = Arc::clone(&self.registry);
        let outcome = self.run(py, callback(progress)?, |repo, progress, cancel| {
            let source = registry.database_source(&url)?;
            repo.auto_backup_database(source.as_ref(), &opts, progress, cancel)
        })?;
        DatabaseBackupResult::new(py, outcome)
    }

    /// Restores a database snapshot into `target` (an SQLite file path or a
    /// URL), then checks its integrity and that every table has the rows
    /// recorded at dump time. Replacing an existing database needs
    /// `force=True`. Returns the rows per table.
    #[pyo3(signature = (snapshot_id, target, *, force=false))]
    #[allow(clippy::needless_pass_by_value)] // pyo3 extracts arguments as owned values
    fn restore_database(
        &self,
        py: Python<'_>,
        snapshot_id: &str,
        target: PathBuf,
        force: bool,
    ) -> PyResult<BTreeMap<String, u64>> {
        let given = path_to_string(target)?;
        let url = database_url(&given).map_err(|e| errors::to_py(&e))?;
        let summary = self.run(py, None, |repo, progress, cancel| {
            repo.restore_database(snapshot_id, &url, force, progress, cancel)
        })?;
        Ok(summary.tables)
    }

    /// Every snapshot, oldest first.
    fn snapshots(&self, py: Python<'_>) -> PyResult<Vec<Snapshot>> {
        let metas = self.run(py, None, |repo, _, _| repo.snapshots())?;
        metas.iter().map(|m| Snapshot::new(py, m)).collect()
    }

    /// One snapshot by id, unique prefix, or "latest".
    fn snapshot(&self, py: Python<'_>, snapshot_id: &str) -> PyResult<Snapshot> {
        let meta = self.run(py, None, |repo, _, _| repo.find_snapshot(snapshot_id))?;
        Snapshot::new(py, &meta)
    }

    /// The manifest entries of a snapshot, as dicts.
    fn ls<'py>(&self, py: Python<'py>, snapshot_id: &str) -> PyResult<Bound<'py, PyList>> {
        let entries = self.run(py, None, |repo, _, cancel| {
            let meta = repo.find_snapshot(snapshot_id)?;
            let mut entries = Vec::new();
            repo.list_entries(&meta, &mut |e| {
                cancel.check()?;
                entries.push(serde_json::to_value(e).expect("entries serialize"));
                Ok(())
            })?;
            Ok(entries)
        })?;
        let list = PyList::empty(py);
        for e in &entries {
            list.append(json_to_py(py, e)?)?;
        }
        Ok(list)
    }

    /// Restores a snapshot into `target`: a files snapshot into a directory
    /// (created if missing), a database snapshot into a database (an SQLite
    /// file path or a URL; `overwrite` replaces an existing one), as the
    /// CLI's `restore` does.
    #[pyo3(signature = (snapshot_id, target, *, include=None, overwrite=false, progress=None))]
    fn restore(
        &self,
        py: Python<'_>,
        snapshot_id: &str,
        target: PathBuf,
        include: Option<Vec<String>>,
        overwrite: bool,
        progress: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<RestoreResult> {
        let given = target.to_string_lossy().into_owned();
        let opts = RestoreOptions {
            target,
            includes: include.unwrap_or_default(),
            overwrite,
        };
        let restored = self.run(py, callback(progress)?, |repo, progress, cancel| {
            let meta = repo.find_snapshot(snapshot_id)?;
            if meta.database.is_none() {
                return repo
                    .restore(&meta.id, &opts, progress, cancel)
                    .map(Restored::Files);
            }
            if !opts.includes.is_empty() {
                return Err(backup_core::Error::InvalidInput(format!(
                    "snapshot {} is a database dump: include does not apply to it",
                    meta.id
                )));
            }
            let url = database_url(&given)?;
            match repo.restore_database(&meta.id, &url, overwrite, progress, cancel) {
                Ok(summary) => Ok(Restored::Database(summary)),
                // Named with this method's argument, not restore_database's.
                Err(backup_core::Error::DatabaseExists { target }) => Ok(Restored::Exists(target)),
                Err(e) => Err(e),
            }
        })?;
        match restored {
            Restored::Files(summary) => RestoreResult::new(py, summary),
            Restored::Database(summary) => RestoreResult::database(py, summary, &given),
            Restored::Exists(target) => Err(WouldOverwriteError::new_err(format!(
                "database {target} already exists (pass overwrite=True to replace it)"
            ))),
        }
    }

    /// Checks every snapshot; raises `IntegrityError` when problems are found.
    #[pyo3(signature = (read_data=false, *, read_data_subset=None))]
    fn check(
        &self,
        py: Python<'_>,
        read_data: bool,
        read_data_subset: Option<String>,
    ) -> PyResult<CheckResult> {
        let opts = CheckOptions {
            read_data,
            read_data_subset,
            snapshots: Vec::new(),
        };
        let report = self.run(py, None, |repo, progress, cancel| {
            repo.check(&opts, progress, cancel)
        })?;
        let result = CheckResult::new(report);
        if result.ok() {
            return Ok(result);
        }
        let err = IntegrityError::new_err(result.problems_line());
        err.value(py).setattr("result", Bound::new(py, result)?)?;
        Err(err)
    }

    /// Deletes snapshots given by id (or unique prefix), or those a
    /// restic-style retention policy does not keep, per host and paths;
    /// returns the deleted ids (with `dry_run`, those that would be).
    #[pyo3(signature = (
        snapshot_ids=None, *, keep_last=None, keep_hourly=None, keep_daily=None,
        keep_weekly=None, keep_monthly=None, keep_yearly=None, keep_within=None,
        keep_tags=None, dry_run=false
    ))]
    #[allow(clippy::too_many_arguments)] // one keyword argument per restic flag
    #[allow(clippy::needless_pass_by_value)] // pyo3 extracts arguments as owned values
    fn forget(
        &self,
        py: Python<'_>,
        snapshot_ids: Option<Vec<String>>,
        keep_last: Option<i64>,
        keep_hourly: Option<i64>,
        keep_daily: Option<i64>,
        keep_weekly: Option<i64>,
        keep_monthly: Option<i64>,
        keep_yearly: Option<i64>,
        keep_within: Option<String>,
        keep_tags: Option<Vec<String>>,
        dry_run: bool,
    ) -> PyResult<Vec<String>> {
        let policy = KeepPolicy {
            last: count(keep_last, "keep_last")?,
            hourly: count(keep_hourly, "keep_hourly")?,
            daily: count(keep_daily, "keep_daily")?,
            weekly: count(keep_weekly, "keep_weekly")?,
            monthly: count(keep_monthly, "keep_monthly")?,
            yearly: count(keep_yearly, "keep_yearly")?,
            within: keep_within
                .as_deref()
                .map(str::parse)
                .transpose()
                .map_err(|e| errors::to_py(&e))?,
            tags: backup_core::retention::tag_lists(&keep_tags.unwrap_or_default()),
            ..KeepPolicy::default()
        };
        let ids = snapshot_ids.unwrap_or_default();
        match (ids.is_empty(), policy.is_empty()) {
            (false, false) => Err(InvalidInputError::new_err(
                "give snapshot_ids or keep_* arguments, not both",
            )),
            (true, true) => Err(InvalidInputError::new_err(
                "give snapshot_ids, or a policy such as keep_daily=7, keep_weekly=4",
            )),
            (false, true) => self.run(py, None, |repo, _, _| repo.forget(&ids, dry_run)),
            (true, false) => self.run(py, None, |repo, _, _| {
                let opts = ForgetOptions {
                    policy,
                    dry_run,
                    ..ForgetOptions::default()
                };
                let groups = repo.forget_by_policy(&opts)?;
                Ok(groups
                    .into_iter()
                    .flat_map(|g| g.remove.into_iter().map(|d| d.id))
                    .collect())
            }),
        }
    }

    /// Deletes what no snapshot of a deduplicated repository uses: marks
    /// unused packs (copying the used chunks out of packs at least
    /// `repack_unused` percent unused), and deletes the packs of earlier
    /// marks older than `grace` seconds once nothing that ran at their mark
    /// still holds a lock. Returns the report as a dict.
    #[pyo3(signature = (*, grace=3600.0, repack_unused=10, dry_run=false))]
    fn prune<'py>(
        &self,
        py: Python<'py>,
        grace: f64,
        repack_unused: u8,
        dry_run: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        if !grace.is_finite() || grace < 0.0 || repack_unused > 100 {
            return Err(InvalidInputError::new_err(
                "grace must be seconds >= 0 and repack_unused a percentage (0-100)",
            ));
        }
        let opts = backup_core::PruneOptions {
            grace: std::time::Duration::from_secs_f64(grace),
            dry_run,
            repack_unused_percent: repack_unused,
        };
        let report = self.run(py, None, |repo, _, _| repo.prune(&opts))?;
        let value = serde_json::to_value(&report).expect("a prune report serializes");
        convert::json_to_py(py, &value)
    }

    /// Copies snapshots (all, or the ids, prefixes or `"latest"` given) to
    /// the repository `to`, verifying every object's SHA-256 on the way and
    /// skipping snapshots `to` already has.
    #[pyo3(signature = (to, ids=None, *, progress=None))]
    fn copy(
        &self,
        py: Python<'_>,
        to: &Bound<'_, PyRepository>,
        ids: Option<Vec<String>>,
        progress: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<CopyResult> {
        let dest = to.get();
        let ids = ids.unwrap_or_default();
        self.run(py, callback(progress)?, |repo, progress, cancel| {
            let dest = dest.open()?;
            if dest.location() == repo.location() {
                return Err(backup_core::Error::InvalidInput(format!(
                    "copy needs two repositories, but both are {}",
                    repo.location()
                )));
            }
            repo.copy_to(&dest, &ids, progress, cancel)
        })
        .map(CopyResult::new)
    }

    /// Writes a snapshot as one new plain file at `to` (a tree as a tar
    /// archive, a database as its dump), compressed as its name ends
    /// (`.zst`, `.gz`) unless `compression` is given; checked whole before
    /// the file appears. Returns the bytes before compression.
    #[pyo3(signature = (snapshot, to, *, compression=None, level=None, progress=None))]
    #[allow(clippy::needless_pass_by_value)] // pyo3 extracts an owned PathBuf
    fn export(
        &self,
        py: Python<'_>,
        snapshot: &str,
        to: PathBuf,
        compression: Option<&str>,
        level: Option<i32>,
        progress: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<u64> {
        let compression = compression
            .map(str::parse::<Compression>)
            .transpose()
            .map_err(|e| errors::to_py(&e))?;
        self.run(py, callback(progress)?, |repo, progress, cancel| {
            repo.export_to_file(snapshot, &to, compression, level, progress, cancel)
                .map(|s| s.stream_bytes)
        })
    }

    /// Removes stale locks, or every lock with `remove_all`; returns how many.
    #[pyo3(signature = (*, remove_all=false))]
    fn unlock(&self, py: Python<'_>, remove_all: bool) -> PyResult<usize> {
        self.run(py, None, |repo, _, _| {
            repo.unlock(remove_all).map(|l| l.len())
        })
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        Ok(format!(
            "Repository({})",
            pyo3::types::PyString::new(py, &self.location).repr()?
        ))
    }
}

/// Runs the backupkit command line with `argv` (program name first) and
/// returns its exit code; the GIL is released meanwhile. For
/// `python -m backupkit`: like the binary, it installs its own Ctrl-C
/// handler for the process (Ctrl-C then cancels the command cleanly).
#[pyfunction]
fn main(py: Python<'_>, argv: Vec<OsString>) -> i32 {
    py.detach(|| backup_cli::run(argv))
}

#[pymodule]
fn _backupkit(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<PyRepository>()?;
    m.add_class::<Snapshot>()?;
    m.add_class::<RestoreResult>()?;
    m.add_class::<CheckResult>()?;
    m.add_class::<DatabaseBackupResult>()?;
    m.add_class::<CopyResult>()?;
    m.add("BackupError", py.get_type::<BackupError>())?;
    m.add(
        "RepositoryNotFoundError",
        py.get_type::<RepositoryNotFoundError>(),
    )?;
    m.add(
        "RepositoryExistsError",
        py.get_type::<RepositoryExistsError>(),
    )?;
    m.add(
        "SnapshotNotFoundError",
        py.get_type::<SnapshotNotFoundError>(),
    )?;
    m.add("LockedError", py.get_type::<LockedError>())?;
    let integrity = py.get_type::<IntegrityError>();
    // The failed check's CheckResult, set on instances raised by check().
    integrity.setattr("result", py.None())?;
    m.add("IntegrityError", integrity)?;
    m.add("WouldOverwriteError", py.get_type::<WouldOverwriteError>())?;
    m.add("InvalidInputError", py.get_type::<InvalidInputError>())?;
    m.add("RefusedError", py.get_type::<errors::RefusedError>())?;
    let mismatch = py.get_type::<errors::MirrorMismatchError>();
    // Set on instances raised by mirror() (with verify) and verify_mirror().
    mismatch.setattr("report", py.None())?;
    mismatch.setattr("mirror", py.None())?;
    m.add("MirrorMismatchError", mismatch)?;
    m.add_class::<mirror::MirrorResult>()?;
    m.add_class::<mirror::VerifyResult>()?;
    m.add_function(wrap_pyfunction!(mirror::mirror_tree, m)?)?;
    m.add_function(wrap_pyfunction!(mirror::verify_mirror, m)?)?;
    m.add_function(wrap_pyfunction!(main, m)?)?;
    m.add("ConfigError", py.get_type::<errors::ConfigError>())?;
    m.add_class::<jobs::Config>()?;
    m.add_class::<jobs::DestinationResult>()?;
    m.add_function(wrap_pyfunction!(jobs::load_config, m)?)?;
    m.add_function(wrap_pyfunction!(jobs::run_jobs, m)?)?;
    m.add_function(wrap_pyfunction!(jobs::pull, m)?)?;
    m.add_class::<sessions::SessionStatus>()?;
    m.add_function(wrap_pyfunction!(sessions::status_range, m)?)?;
    m.add_function(wrap_pyfunction!(sessions::sync_session, m)?)?;
    m.add_function(wrap_pyfunction!(sessions::verify_session, m)?)?;
    m.add_function(wrap_pyfunction!(sessions::delete_session, m)?)?;
    Ok(())
}
