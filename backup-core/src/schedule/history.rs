//! What each scheduled job did last, kept across restarts of the service:
//! the last run's start, end and result, the last success, and counters.
//! `catch_up` reads the last start from here, and a status page the rest.
//!
//! The file is JSON, rewritten whole on every record through a temporary
//! file, fsync and rename, so a crash leaves the old or the new history,
//! never a torn one. A history that cannot be read is an error naming the
//! file (the service refuses to guess what ran).

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// One job's record.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JobHistory {
    /// When the last run started.
    pub last_start: Option<DateTime<Utc>>,
    /// When it ended.
    pub last_end: Option<DateTime<Utc>>,
    /// Its result: `ok`, `skipped`, `incomplete`, `failed`, `cancelled`.
    pub last_result: Option<String>,
    /// Its error, when it failed (secrets already scrubbed).
    pub last_error: Option<String>,
    /// When a run last ended well.
    pub last_success: Option<DateTime<Utc>>,
    pub files: u64,
    pub bytes: u64,
    pub seconds: f64,
    /// Runs recorded, and how many failed.
    pub runs: u64,
    pub failures: u64,
}

/// How one run ended, to record.
#[derive(Debug, Clone)]
pub struct RunRecord {
    pub started: DateTime<Utc>,
    pub ended: DateTime<Utc>,
    pub result: String,
    pub ok: bool,
    pub error: Option<String>,
    pub files: u64,
    pub bytes: u64,
}

/// The history file of one config's jobs.
#[derive(Debug, Clone, Default)]
pub struct History {
    path: PathBuf,
    jobs: BTreeMap<String, JobHistory>,
}

#[derive(Serialize, Deserialize)]
struct OnDisk {
    version: u32,
    jobs: BTreeMap<String, JobHistory>,
}

impl History {
    /// Reads `path`; a file that does not exist yet is an empty history.
    ///
    /// # Errors
    ///
    /// A file that cannot be read or is not a backupkit history.
    pub fn load(path: &Path) -> Result<History> {
        let jobs = match std::fs::read(path) {
            Ok(bytes) => {
                let disk: OnDisk = serde_json::from_slice(&bytes).map_err(|e| {
                    Error::InvalidInput(format!(
                        "{} is not a backupkit schedule history ({e}); move it away to start \
                         a new one",
                        path.display()
                    ))
                })?;
                disk.jobs
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(Error::io("read", path.display().to_string(), e)),
        };
        Ok(History {
            path: path.to_path_buf(),
            jobs,
        })
    }

    /// Where it is kept.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A job's record (empty for a job that never ran).
    pub fn job(&self, name: &str) -> JobHistory {
        self.jobs.get(name).cloned().unwrap_or_default()
    }

    /// The devices recorded for a pull job, by id (kept as `JOB/DEVICE`).
    pub fn devices(&self, job: &str) -> Vec<(String, JobHistory)> {
        let prefix = format!("{job}/");
        self.jobs
            .iter()
            .filter_map(|(k, v)| Some((k.strip_prefix(&prefix)?.to_owned(), v.clone())))
            .collect()
    }

    /// Takes in the state of a pull job's devices (saved with the job's
    /// next record).
    pub fn set_devices(&mut self, job: &str, devices: Vec<(String, JobHistory)>) {
        for (id, h) in devices {
            self.jobs.insert(format!("{job}/{id}"), h);
        }
    }

    /// Records that `job` started (so that a crash mid-run still counts
    /// as a run for `catch_up`), and saves.
    ///
    /// # Errors
    ///
    /// As [`History::save`].
    pub fn started(&mut self, job: &str, at: DateTime<Utc>) -> Result<()> {
        let h = self.jobs.entry(job.to_owned()).or_default();
        h.last_start = Some(at);
        h.last_end = None;
        h.last_result = Some("running".into());
        self.save()
    }

    /// Records how `job`'s run ended, and saves.
    ///
    /// # Errors
    ///
    /// As [`History::save`].
    pub fn finished(&mut self, job: &str, run: &RunRecord) -> Result<()> {
        let h = self.jobs.entry(job.to_owned()).or_default();
        h.last_start = Some(run.started);
        h.last_end = Some(run.ended);
        h.last_result = Some(run.result.clone());
        h.last_error.clone_from(&run.error);
        h.files = run.files;
        h.bytes = run.bytes;
        h.seconds = (run.ended - run.started).as_seconds_f64().max(0.0);
        h.runs += 1;
        if run.ok {
            h.last_success = Some(run.ended);
        } else {
            h.failures += 1;
        }
        self.save()
    }

    /// Writes the history: a temporary file, fsync, rename, fsync of the
    /// directory.
    ///
    /// # Errors
    ///
    /// The file or its directory cannot be written.
    pub fn save(&self) -> Result<()> {
        let dir = self
            .path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or_else(|| Path::new("."));
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io("create", dir.display().to_string(), e))?;
        let tmp = self
            .path
            .with_extension(format!("tmp-{}", std::process::id()));
        let text = serde_json::to_vec_pretty(&OnDisk {
            version: 1,
            jobs: self.jobs.clone(),
        })
        .map_err(|e| Error::InvalidInput(e.to_string()))?;
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&text)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &self.path)?;
            std::fs::File::open(dir)?.sync_all()
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            Error::io("write", self.path.display().to_string(), e)
        })
    }
}

/// The default history of a config file: under `$XDG_STATE_HOME` (or
/// `~/.local/state`) `backupkit/schedule-NAME-HASH.json`, one per config
/// path, so two configs never share one.
pub fn default_path(config: &Path) -> Option<PathBuf> {
    let base = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))?;
    let abs = std::path::absolute(config).unwrap_or_else(|_| config.to_path_buf());
    // FNV-1a: a name, not a security property.
    let hash = abs
        .as_os_str()
        .as_encoded_bytes()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
    let stem = config
        .file_stem()
        .map_or_else(|| "config".into(), |s| s.to_string_lossy().into_owned());
    Some(base.join(format!("backupkit/schedule-{stem}-{hash:016x}.json")))
}
