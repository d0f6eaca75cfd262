//! What the engines that drive command-line tools (`pg_dump`/`psql`,
//! `mariadb-dump`/`mariadb`) share: a private file for credentials, a
//! bounded reader of the tool's stderr, and the dump's file name.

use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::process::Child;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{SystemTime, UNIX_EPOCH};

use backup_core::{Error, Result};

/// How much of a tool's stderr is kept for messages.
const STDERR_KEEP: usize = 64 * 1024;

/// A private temporary file (mode 0600) holding credentials for a tool,
/// removed when dropped.
#[derive(Debug)]
pub(crate) struct SecretFile {
    pub(crate) path: PathBuf,
}

impl SecretFile {
    /// Creates `<temp dir>/<prefix>-<pid>-<n>-<nanos><suffix>` with `text`.
    pub(crate) fn create(prefix: &str, suffix: &str, text: &str) -> Result<Self> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = std::env::temp_dir();
        loop {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let path = dir.join(format!(
                "{prefix}-{}-{n}-{nanos:08x}{suffix}",
                std::process::id()
            ));
            let mut options = OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            match options.open(&path) {
                Ok(mut file) => {
                    let guard = Self { path };
                    file.write_all(text.as_bytes())
                        .map_err(|e| Error::io("write", guard.path.display().to_string(), e))?;
                    return Ok(guard);
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => {
                    return Err(Error::io(
                        "create temporary file",
                        path.display().to_string(),
                        e,
                    ));
                }
            }
        }
    }
}

impl Drop for SecretFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// Reads a child's stderr on a thread, keeping the first [`STDERR_KEEP`]
/// bytes (the rest is read and dropped, so the child never blocks on it).
pub(crate) fn collect_stderr(child: &mut Child) -> Option<JoinHandle<Vec<u8>>> {
    let mut stderr = child.stderr.take()?;
    Some(thread::spawn(move || {
        let mut kept = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            match stderr.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    let room = STDERR_KEEP.saturating_sub(kept.len());
                    kept.extend_from_slice(&buf[..n.min(room)]);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        kept
    }))
}

/// The file name of a plain-SQL dump of database `dbname` (`results.sql`):
/// path separators and control characters become `_`, and a name that is
/// empty or starts with `.` gets a `db` prefix, so it is always one safe
/// file name.
pub(crate) fn sql_dump_name(dbname: &str) -> String {
    let name: String = dbname
        .chars()
        .map(|c| {
            if c == '/' || c == '\\' || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect();
    let name = if name.is_empty() || name.starts_with('.') {
        format!("db{name}")
    } else {
        name
    };
    format!("{name}.sql")
}

#[cfg(test)]
mod tests {
    use super::sql_dump_name;

    #[test]
    fn dump_names_are_single_safe_file_names() {
        assert_eq!(sql_dump_name("results"), "results.sql");
        assert_eq!(sql_dump_name("../etc"), "db.._etc.sql");
        assert_eq!(sql_dump_name(""), "db.sql");
        assert_eq!(sql_dump_name("a\nb"), "a_b.sql");
    }
}
