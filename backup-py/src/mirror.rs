//! `backupkit.mirror` and `backupkit.verify_mirror`: Python arguments to
//! [`MirrorOptions`], the engine on a worker thread, results as objects.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use backup_core::mirror::{
    self, MirrorOptions, MirrorSource, MirrorSummary, VerifyMode, VerifyReport,
};
use backup_core::source::Excludes;
use backup_core::tree::Tree;
use backup_core::{Registry, TargetOptions};
use pyo3::prelude::*;

use crate::errors::{self, InvalidInputError, MirrorMismatchError};
use crate::{callback, one_or_more_paths, path_to_string, run};

/// What a verification found.
#[pyclass(frozen, module = "backupkit")]
#[derive(Debug, Clone)]
pub(crate) struct VerifyResult {
    #[pyo3(get)]
    destination: String,
    /// `count`, `size`, `checksum` or `sample:N`.
    #[pyo3(get)]
    mode: String,
    /// Source files checked, and their bytes.
    #[pyo3(get)]
    files: u64,
    #[pyo3(get)]
    bytes: u64,
    /// Files read on both sides and compared.
    #[pyo3(get)]
    hashed: u64,
    #[pyo3(get)]
    missing: Vec<String>,
    #[pyo3(get)]
    extra: Vec<String>,
    /// `(path, reason)` pairs.
    #[pyo3(get)]
    different: Vec<(String, String)>,
    #[pyo3(get)]
    unreadable: Vec<(String, String)>,
    /// Whether the destination holds every source file as it is.
    #[pyo3(get)]
    ok: bool,
    detail: String,
}

impl VerifyResult {
    pub(crate) fn new(r: &VerifyReport) -> Self {
        let pairs = |v: &[mirror::Difference]| {
            v.iter()
                .map(|d| (d.path.clone(), d.reason.clone()))
                .collect()
        };
        Self {
            destination: r.destination.clone(),
            mode: r.mode.clone(),
            files: r.files,
            bytes: r.bytes,
            hashed: r.hashed,
            missing: r.missing.clone(),
            extra: r.extra.clone(),
            different: pairs(&r.different),
            unreadable: pairs(&r.unreadable),
            ok: r.matches(),
            detail: r.describe(),
        }
    }

    /// The exception for a mismatch, with this report as `.report`.
    fn error(&self, py: Python<'_>) -> PyResult<PyErr> {
        let err = MirrorMismatchError::new_err(format!(
            "mirror {} differs from its source: {}",
            self.destination, self.detail
        ));
        err.value(py)
            .setattr("report", Bound::new(py, self.clone())?)?;
        Ok(err)
    }
}

#[pymethods]
impl VerifyResult {
    fn __repr__(&self) -> String {
        format!(
            "VerifyResult(mode={:?}, files={}, hashed={}, missing={}, extra={}, different={}, ok={})",
            self.mode,
            self.files,
            self.hashed,
            self.missing.len(),
            self.extra.len(),
            self.different.len(),
            if self.ok { "True" } else { "False" }
        )
    }
}

/// What a mirror did (or, for a dry run, would do).
#[pyclass(frozen, module = "backupkit")]
#[derive(Debug)]
pub(crate) struct MirrorResult {
    #[pyo3(get)]
    destination: String,
    #[pyo3(get)]
    dry_run: bool,
    #[pyo3(get)]
    copied: u64,
    #[pyo3(get)]
    updated: u64,
    #[pyo3(get)]
    deleted: u64,
    #[pyo3(get)]
    unchanged: u64,
    #[pyo3(get)]
    skipped: u64,
    #[pyo3(get)]
    extraneous: u64,
    #[pyo3(get)]
    dirs_created: u64,
    #[pyo3(get)]
    links: u64,
    #[pyo3(get)]
    bytes: u64,
    #[pyo3(get)]
    cleaned: u64,
    /// The bulk transport that moved the files (`"rsync"`), or `None`.
    #[pyo3(get)]
    transport: Option<String>,
    #[pyo3(get)]
    transport_files: u64,
    /// `(path, message)` of files that could not be mirrored.
    #[pyo3(get)]
    failed: Vec<(String, String)>,
    #[pyo3(get)]
    notices: Vec<(String, String)>,
    /// Why deletions were refused (then nothing was deleted).
    #[pyo3(get)]
    refused: Option<String>,
    #[pyo3(get)]
    verify: Option<VerifyResult>,
    #[pyo3(get)]
    seconds: f64,
    /// No file failed, no deletion was refused, verification passed.
    #[pyo3(get)]
    complete: bool,
}

impl MirrorResult {
    pub(crate) fn new(s: &MirrorSummary) -> Self {
        let pairs = |v: &[mirror::Problem]| {
            v.iter()
                .map(|p| (p.path.clone(), p.message.clone()))
                .collect()
        };
        Self {
            destination: s.destination.clone(),
            dry_run: s.dry_run,
            copied: s.copied,
            updated: s.updated,
            deleted: s.deleted,
            unchanged: s.unchanged,
            skipped: s.skipped,
            extraneous: s.extraneous,
            dirs_created: s.dirs_created,
            links: s.links,
            bytes: s.bytes,
            cleaned: s.cleaned,
            transport: s.transport.clone(),
            transport_files: s.transport_files,
            failed: pairs(&s.failed),
            notices: pairs(&s.notices),
            refused: s.refused.clone(),
            verify: s.verify.as_ref().map(VerifyResult::new),
            seconds: s.seconds,
            complete: s.is_complete(),
        }
    }
}

#[pymethods]
impl MirrorResult {
    fn __repr__(&self) -> String {
        format!(
            "MirrorResult(copied={}, updated={}, deleted={}, unchanged={}, failed={}, complete={})",
            self.copied,
            self.updated,
            self.deleted,
            self.unchanged,
            self.failed.len(),
            if self.complete { "True" } else { "False" }
        )
    }
}

/// The source and destination locations, and their options.
fn locations(
    source: &Bound<'_, PyAny>,
    dest: PathBuf,
    options: Option<BTreeMap<String, String>>,
    source_options: Option<BTreeMap<String, String>>,
) -> PyResult<(Vec<String>, String, TargetOptions, TargetOptions)> {
    let sources = one_or_more_paths(source)?
        .into_iter()
        .map(path_to_string)
        .collect::<PyResult<Vec<_>>>()?;
    if sources.is_empty() {
        return Err(InvalidInputError::new_err("no mirror source given"));
    }
    Ok((
        sources,
        path_to_string(dest)?,
        options.unwrap_or_default(),
        source_options.unwrap_or_default(),
    ))
}

/// Opens the source trees and the destination, as the CLI does.
fn trees(
    registry: &Registry,
    sources: &[String],
    dest: &str,
    options: &TargetOptions,
    source_options: &TargetOptions,
) -> backup_core::Result<(Vec<MirrorSource>, Arc<dyn Tree>)> {
    let mut opened = Vec::new();
    for s in sources {
        opened.push(registry.open_tree(s, source_options)?);
    }
    Ok((
        mirror::sources_for(opened)?,
        registry.open_tree(dest, options)?,
    ))
}

fn parse<T: std::str::FromStr<Err = backup_core::Error>>(
    value: Option<&str>,
) -> PyResult<Option<T>> {
    value
        .map(str::parse::<T>)
        .transpose()
        .map_err(|e| errors::to_py(&e))
}

/// Makes `dest` hold the same files as `source` (a path or URL, or a list
/// of them), copying only what changed; see the README's "Mirrors".
#[pyfunction]
#[pyo3(name = "mirror", signature = (
    source, dest, *, delete=false, update=false, checksum=false, verify=None,
    exclude=None, dry_run=false, max_delete=None, backup_dir=None,
    modify_window=None, transfers=None, bwlimit=None, full_scan=false, copy_links=false,
    progress=None, options=None, source_options=None
))]
#[allow(clippy::too_many_arguments)] // Python keyword arguments, one per CLI flag
#[allow(clippy::needless_pass_by_value)] // pyo3 extracts arguments as owned values
pub(crate) fn mirror_tree(
    py: Python<'_>,
    source: &Bound<'_, PyAny>,
    dest: PathBuf,
    delete: bool,
    update: bool,
    checksum: bool,
    verify: Option<String>,
    exclude: Option<Vec<String>>,
    dry_run: bool,
    max_delete: Option<String>,
    backup_dir: Option<String>,
    modify_window: Option<f64>,
    transfers: Option<usize>,
    bwlimit: Option<String>,
    full_scan: bool,
    copy_links: bool,
    progress: Option<&Bound<'_, PyAny>>,
    options: Option<BTreeMap<String, String>>,
    source_options: Option<BTreeMap<String, String>>,
) -> PyResult<MirrorResult> {
    let registry = backup_cli::registry();
    let (sources, dest, options, mut source_options) =
        locations(source, dest, options, source_options)?;
    if copy_links {
        source_options.insert("copy_links".into(), "true".into());
    }
    let modify_window = match modify_window {
        Some(s) if s.is_finite() && s >= 0.0 => Some(Duration::from_secs_f64(s)),
        Some(s) => {
            return Err(InvalidInputError::new_err(format!(
                "modify_window must be seconds, at least 0 (got {s})"
            )));
        }
        None => None,
    };
    if transfers == Some(0) {
        return Err(InvalidInputError::new_err("transfers must be at least 1"));
    }
    let opts = MirrorOptions {
        excludes: Excludes::new(&exclude.unwrap_or_default()).map_err(|e| errors::to_py(&e))?,
        delete,
        max_delete: parse(max_delete.as_deref())?,
        update,
        checksum,
        modify_window,
        backup_dir,
        dry_run,
        transfers,
        bwlimit: bwlimit
            .as_deref()
            .map(mirror::parse_rate)
            .transpose()
            .map_err(|e| errors::to_py(&e))?,
        full_scan,
        verify: parse::<VerifyMode>(verify.as_deref())?,
    };
    let summary = run::run(py, callback(progress)?, |progress, cancel| {
        let (sources, dest) = trees(&registry, &sources, &dest, &options, &source_options)?;
        let hashers = registry.hashers()?;
        mirror::mirror(
            &sources,
            dest.as_ref(),
            &opts,
            hashers.as_ref(),
            progress,
            cancel,
        )
    })?;
    let result = MirrorResult::new(&summary);
    if let Some(v) = &result.verify
        && !v.ok
    {
        let err = v.error(py)?;
        err.value(py).setattr("mirror", Bound::new(py, result)?)?;
        return Err(err);
    }
    Ok(result)
}

/// Checks that `dest` holds what `source` holds: `mode` is `count`, `size`,
/// `checksum` or `sample:N`; with `exact`, extra files are a mismatch too.
/// Raises `MirrorMismatchError` (with `.report`) on a mismatch.
#[pyfunction]
#[pyo3(signature = (
    source, dest, *, mode="size", exact=false, exclude=None, progress=None,
    options=None, source_options=None
))]
#[allow(clippy::too_many_arguments)] // Python keyword arguments
#[allow(clippy::needless_pass_by_value)] // pyo3 extracts arguments as owned values
pub(crate) fn verify_mirror(
    py: Python<'_>,
    source: &Bound<'_, PyAny>,
    dest: PathBuf,
    mode: &str,
    exact: bool,
    exclude: Option<Vec<String>>,
    progress: Option<&Bound<'_, PyAny>>,
    options: Option<BTreeMap<String, String>>,
    source_options: Option<BTreeMap<String, String>>,
) -> PyResult<VerifyResult> {
    let registry = backup_cli::registry();
    let (sources, dest, options, source_options) =
        locations(source, dest, options, source_options)?;
    let mode: VerifyMode = mode.parse().map_err(|e| errors::to_py(&e))?;
    let excludes = Excludes::new(&exclude.unwrap_or_default()).map_err(|e| errors::to_py(&e))?;
    let report = run::run(py, callback(progress)?, |progress, cancel| {
        let (sources, dest) = trees(&registry, &sources, &dest, &options, &source_options)?;
        let hashers = registry.hashers()?;
        mirror::verify(
            &sources,
            dest.as_ref(),
            &excludes,
            mode,
            exact,
            hashers.as_ref(),
            progress,
            cancel,
        )
    })?;
    let result = VerifyResult::new(&report);
    if !result.ok {
        return Err(result.error(py)?);
    }
    Ok(result)
}
