//! What a run reports as it goes: events with a level, the job and the
//! destination, for the terminal and for the log file.
//!
//! The log file gets one line per event, appended:
//! `2026-12-01T02:00:00+01:00 INFO job=nightly dest=nas: mirrored ...`.
//! A `{date}` in its name becomes the day's `YYYYMMDD`, so that
//! `logs/backup_{date}.log` gives seed 002's `backup_20241122.log`, one
//! file per day.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use chrono::Local;
use serde::Serialize;

use crate::{Error, Result};

/// How much an event matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Info,
    Warn,
    Error,
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Level::Info => "INFO",
            Level::Warn => "WARN",
            Level::Error => "ERROR",
        })
    }
}

/// One thing that happened during a run.
#[derive(Debug, Clone, Serialize)]
pub struct LogEvent {
    pub level: Level,
    pub job: Option<String>,
    pub destination: Option<String>,
    pub message: String,
}

impl fmt::Display for LogEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.job, &self.destination) {
            (Some(j), Some(d)) => write!(f, "{j}/{d}: ")?,
            (Some(j), None) => write!(f, "{j}: ")?,
            _ => {}
        }
        f.write_str(&self.message)
    }
}

/// Receives a run's events (from several threads).
pub trait EventSink: Send + Sync {
    fn event(&self, event: &LogEvent);
}

/// Discards events.
#[derive(Debug)]
pub struct Quiet;

impl EventSink for Quiet {
    fn event(&self, _event: &LogEvent) {}
}

/// Appends events to a file, reopened when the day (and so a dated
/// name) changes.
#[derive(Debug)]
pub struct LogFile {
    pattern: PathBuf,
    open: Mutex<Option<(PathBuf, std::fs::File)>>,
}

impl LogFile {
    /// Opens (creating) the file for today, so that an unwritable log is
    /// an error before the run starts.
    ///
    /// # Errors
    ///
    /// The file or its directory cannot be created or written.
    pub fn open(pattern: &Path) -> Result<Self> {
        let log = Self {
            pattern: pattern.to_path_buf(),
            open: Mutex::new(None),
        };
        let path = log.today();
        let file = Self::append(&path)?;
        *log.open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some((path, file));
        Ok(log)
    }

    /// Today's file name.
    pub fn today(&self) -> PathBuf {
        let text = self.pattern.to_string_lossy();
        if text.contains("{date}") {
            PathBuf::from(text.replace("{date}", &Local::now().format("%Y%m%d").to_string()))
        } else {
            self.pattern.clone()
        }
    }

    fn append(path: &Path) -> Result<std::fs::File> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::io("create the log directory", dir.display().to_string(), e))?;
        }
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| Error::io("open the log file", path.display().to_string(), e))
    }

    /// The line an event becomes.
    pub fn line(event: &LogEvent) -> String {
        let mut line = format!(
            "{} {}",
            Local::now().format("%Y-%m-%dT%H:%M:%S%:z"),
            event.level
        );
        if let Some(j) = &event.job {
            line.push_str(" job=");
            line.push_str(j);
        }
        if let Some(d) = &event.destination {
            line.push_str(" dest=");
            line.push_str(d);
        }
        line.push_str(": ");
        // One event, one line.
        line.push_str(&event.message.replace(['\n', '\r'], " | "));
        line.push('\n');
        line
    }
}

impl EventSink for LogFile {
    fn event(&self, event: &LogEvent) {
        let line = Self::line(event);
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let path = self.today();
        if open.as_ref().is_none_or(|(p, _)| *p != path) {
            *open = Self::append(&path).ok().map(|f| (path, f));
        }
        if let Some((_, f)) = open.as_mut() {
            // A log that cannot be written must not stop a backup.
            let _ = f.write_all(line.as_bytes());
        }
    }
}
