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

/// Ends a child that is no longer wanted, and reaps it.
pub(crate) fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// The exit status of a finished child, as text.
pub(crate) fn exit_text(status: std::process::ExitStatus) -> String {
    match status.code() {
        Some(code) => format!("exit status {code}"),
        None => "killed by a signal".to_owned(),
    }
}

/// Streams `dump` into the child's stdin (256 KiB at a time), then closes
/// it. A write that fails means the client stopped (an SQL error): that is
/// not an error here, the caller reads its exit status and stderr. A
/// cancel or a failed read kills the child.
pub(crate) fn feed_stdin(
    child: &mut Child,
    dump: &mut dyn Read,
    cancel: &backup_core::Cancel,
    what: &str,
) -> Result<()> {
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let mut buf = vec![0u8; 256 * 1024];
    let fed: Result<()> = loop {
        if let Err(e) = cancel.check() {
            break Err(e);
        }
        let n = match dump.read(&mut buf) {
            Ok(0) => break Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => break Err(Error::io("read the dump for", what, e)),
        };
        if stdin.write_all(&buf[..n]).is_err() {
            break Ok(());
        }
    };
    drop(stdin);
    if fed.is_err() {
        kill(child);
    }
    fed
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

/// The parts of `user:password@host:port/path` (what follows `scheme://`),
/// percent-decoded, before any engine's defaults.
#[derive(Debug)]
pub(crate) struct UrlParts {
    pub(crate) user: Option<String>,
    pub(crate) password: Option<String>,
    pub(crate) host: String,
    /// Not yet a number: the engine says what a bad one is.
    pub(crate) port: Option<String>,
    pub(crate) path: String,
}

/// Splits a database URL after its scheme; `invalid` words the error.
pub(crate) fn split_url(rest: &str, invalid: &dyn Fn(&str) -> Error) -> Result<UrlParts> {
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (auth, hostport) = match authority.rsplit_once('@') {
        Some((a, h)) => (Some(a), h),
        None => (None, authority),
    };
    let (user, password) = match auth {
        Some(a) => match a.split_once(':') {
            Some((u, p)) => (Some(decode(u)), Some(decode(p))),
            None => (Some(decode(a)), None),
        },
        None => (None, None),
    };
    let (host, port) = if let Some(inner) = hostport.strip_prefix('[') {
        // [::1]:5432
        let (h, after) = inner
            .split_once(']')
            .ok_or_else(|| invalid("unclosed [ in the host"))?;
        (h.to_owned(), after.strip_prefix(':').map(str::to_owned))
    } else {
        match hostport.split_once(':') {
            Some((h, p)) => (decode(h), Some(p.to_owned())),
            None => (decode(hostport), None),
        }
    };
    Ok(UrlParts {
        user,
        password,
        host,
        port,
        path: decode(path),
    })
}

/// A URL for messages and metadata: the password, if any, as `***`.
pub(crate) fn display_url(
    scheme: &str,
    user: &str,
    has_password: bool,
    host: &str,
    port: u16,
    dbname: &str,
) -> String {
    let password = if has_password { ":***" } else { "" };
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    };
    format!("{scheme}://{user}{password}@{host}:{port}/{dbname}")
}

/// Percent-decoding; an invalid escape is kept as it is.
fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(b) = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::{decode, display_url, split_url, sql_dump_name};

    #[test]
    fn urls_split_decode_and_display_without_the_password() {
        let invalid = |why: &str| backup_core::Error::InvalidInput(why.to_owned());
        let p = split_url("lab:p%40ss@[::1]:5433/res%20ults", &invalid).unwrap();
        assert_eq!(p.user.as_deref(), Some("lab"));
        assert_eq!(p.password.as_deref(), Some("p@ss"));
        assert_eq!((p.host.as_str(), p.port.as_deref()), ("::1", Some("5433")));
        assert_eq!(p.path, "res ults");
        assert!(split_url("u@[::1/x", &invalid).is_err());
        assert_eq!(
            display_url("mysql", "lab", true, "::1", 5433, "db"),
            "mysql://lab:***@[::1]:5433/db"
        );
        assert_eq!(decode("a%40b%zz%4"), "a@b%zz%4");
    }

    #[test]
    fn dump_names_are_single_safe_file_names() {
        assert_eq!(sql_dump_name("results"), "results.sql");
        assert_eq!(sql_dump_name("../etc"), "db.._etc.sql");
        assert_eq!(sql_dump_name(""), "db.sql");
        assert_eq!(sql_dump_name("a\nb"), "a_b.sql");
    }
}
