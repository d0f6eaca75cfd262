//! SQLite: the source makes an online copy with the backup API and streams
//! it; the target builds the database aside, checks it, then renames it
//! into place. Helpers shared by both live here.

mod source;
mod target;

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use backup_core::database::RowCounts;
use backup_core::{Cancel, Error, Result};
use rusqlite::{Connection, ErrorCode, OpenFlags};

pub use source::SqliteSource;
pub use target::SqliteTarget;

const BACKEND: &str = "sqlite";

/// Copy buffer: dumps and restores stream through this, whatever their size.
const CHUNK: usize = 256 * 1024;

/// Page cache of the connection that runs `PRAGMA integrity_check`.
const CHECK_CACHE: &str = "PRAGMA cache_size = -65536"; // KiB: 64 MiB

/// Bytes every SQLite 3 database file starts with.
const MAGIC: &[u8; 16] = b"SQLite format 3\0";

/// Side files SQLite may keep next to a database.
const SIDE_SUFFIXES: [&str; 3] = ["-journal", "-wal", "-shm"];

fn backend(message: impl Into<String>, source: rusqlite::Error) -> Error {
    Error::Backend {
        backend: BACKEND.into(),
        message: message.into(),
        source: Some(Box::new(source)),
    }
}

/// Another connection holds a lock that keeps us out (for now).
fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    )
}

fn is_not_a_database(e: &rusqlite::Error) -> bool {
    matches!(e.sqlite_error_code(), Some(ErrorCode::NotADatabase))
}

/// The file is damaged (or not a database at all): an integrity failure,
/// not a backend fault.
fn is_damaged(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt)
    )
}

/// Opens an existing database file; never creates one, never reads the path
/// as a URI or `:memory:`. Read-write (SQLite falls back to read-only for a
/// write-protected file) even for reading: as the last connection to a WAL
/// database it then removes the `-wal`/`-shm` files when it closes, as any
/// client does, instead of leaving them behind, and it can roll back a hot
/// journal a crashed writer left. Content is never written through it.
fn open(path: &Path) -> rusqlite::Result<Connection> {
    Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
}

/// `path` with `suffix` appended to its file name (`a.db` + `-wal`).
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// An SQL identifier, quoted: `odd "name"` becomes `"odd ""name"""`.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// What `PRAGMA integrity_check` found, one problem per entry; empty when
/// the database is sound.
fn integrity_problems(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare("PRAGMA integrity_check(20)")?;
    let rows = stmt
        .query_map([], |row| row.get::<_, String>(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    if rows.len() == 1 && rows[0] == "ok" {
        return Ok(Vec::new());
    }
    // Rows may hold several lines and a "*** in database main ***" banner.
    Ok(rows
        .iter()
        .flat_map(|row| row.lines())
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with("*** in database"))
        .map(str::to_owned)
        .collect())
}

/// Problems as one line: the first few, then how many more.
fn summarize(problems: &[String]) -> String {
    const SHOWN: usize = 3;
    let line = problems[..problems.len().min(SHOWN)].join("; ");
    if problems.len() > SHOWN {
        format!("{line} (and {} more)", problems.len() - SHOWN)
    } else {
        line
    }
}

/// Rows of each user table. Virtual tables are skipped (their module may be
/// missing here); their rows live in shadow tables, which are counted.
fn row_counts(conn: &Connection) -> rusqlite::Result<RowCounts> {
    let mut stmt = conn.prepare(
        "SELECT name FROM sqlite_schema WHERE type = 'table' \
         AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' \
         AND coalesce(sql, '') NOT LIKE 'CREATE VIRTUAL TABLE%' ORDER BY name",
    )?;
    let names = stmt
        .query_map([], |row| row.get::<_, String>(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut counts = RowCounts::new();
    for name in names {
        let sql = format!("SELECT count(*) FROM main.{}", quote_ident(&name));
        let n: i64 = conn.query_row(&sql, [], |row| row.get(0))?;
        counts.insert(name, n as u64);
    }
    Ok(counts)
}

/// Integrity check, then row counts; `what` names the database in errors.
/// Stops with [`Error::Cancelled`] soon after `stop` returns true, even deep
/// in the check (which takes minutes for a database of many GB).
fn check_and_count(
    path: &Path,
    what: &str,
    stop: impl Fn() -> bool + Send + 'static,
) -> Result<RowCounts> {
    let damaged = |detail: String| Error::Integrity {
        snapshot: what.to_owned(),
        detail,
    };
    let conn = open(path).map_err(|e| backend(format!("cannot open {what}"), e))?;
    // About a millisecond of work between two looks at the flag.
    conn.progress_handler(100_000, Some(stop));
    let interrupted =
        |e: &rusqlite::Error| e.sqlite_error_code() == Some(ErrorCode::OperationInterrupted);
    // The check looks every row up in each of its table's indexes: with
    // SQLite's default 2 MiB cache those lookups re-read index pages from
    // the OS, which cost more system time than the check itself (7.3 s
    // against 4.8 s for a 200 MB database). A bounded cache keeps memory
    // flat whatever the database's size.
    conn.execute_batch(CHECK_CACHE)
        .map_err(|e| backend(format!("cannot prepare the check of {what}"), e))?;
    let problems = match integrity_problems(&conn) {
        Ok(p) => p,
        Err(e) if interrupted(&e) => return Err(Error::Cancelled),
        Err(e) if is_damaged(&e) => vec![e.to_string()],
        Err(e) => return Err(backend(format!("integrity check of {what} failed"), e)),
    };
    if !problems.is_empty() {
        return Err(damaged(format!(
            "SQLite integrity_check: {}",
            summarize(&problems)
        )));
    }
    let counts = row_counts(&conn).map_err(|e| {
        if interrupted(&e) {
            Error::Cancelled
        } else if is_damaged(&e) {
            damaged(format!("counting rows: {e}"))
        } else {
            backend(format!("cannot count rows of {what}"), e)
        }
    })?;
    conn.close()
        .map_err(|(_, e)| backend(format!("cannot close {what}"), e))?;
    Ok(counts)
}

/// Copies `from` into `to` in [`CHUNK`]s, checking `cancel` between them.
/// Errors are mapped by the two closures (read side, write side).
fn stream(
    from: &mut dyn Read,
    to: &mut dyn Write,
    cancel: &Cancel,
    read_err: impl Fn(io::Error) -> Error,
    write_err: impl Fn(io::Error) -> Error,
) -> Result<u64> {
    let mut buf = vec![0u8; CHUNK];
    let mut total = 0u64;
    loop {
        cancel.check()?;
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(read_err(e)),
        };
        to.write_all(&buf[..n]).map_err(&write_err)?;
        total += n as u64;
    }
    to.flush().map_err(write_err)?;
    Ok(total)
}

/// A private temporary database file, removed with its side files when
/// dropped (success, error or cancel alike) unless [`TempDb::keep`] was
/// called.
#[derive(Debug)]
struct TempDb {
    path: PathBuf,
    keep: bool,
}

impl TempDb {
    /// Creates a new empty file `<dir>/<prefix>-<unique>.tmp`; a `private`
    /// one is readable by its owner only.
    fn create(dir: &Path, prefix: &str, private: bool) -> Result<(Self, File)> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        loop {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let path = dir.join(format!(
                "{prefix}-{}-{n}-{nanos:08x}.tmp",
                std::process::id()
            ));
            let mut options = OpenOptions::new();
            options.read(true).write(true).create_new(true);
            #[cfg(unix)]
            if private {
                std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            }
            #[cfg(not(unix))]
            let _ = private;
            match options.open(&path) {
                Ok(file) => return Ok((Self { path, keep: false }, file)),
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

    /// The file now belongs elsewhere (it was renamed into place).
    fn keep(&mut self) {
        self.keep = true;
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        for suffix in SIDE_SUFFIXES {
            let _ = fs::remove_file(with_suffix(&self.path, suffix));
        }
        if !self.keep {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Reads the first bytes of a database file (fewer if it is shorter).
fn read_header(path: &Path, len: usize) -> io::Result<Vec<u8>> {
    let mut header = Vec::with_capacity(len);
    File::open(path)?
        .take(len as u64)
        .read_to_end(&mut header)?;
    Ok(header)
}

/// Whether `header` (the first 100 bytes or the whole file) looks like a
/// complete SQLite database of `len` bytes; `Err` says why not. An empty
/// file is an empty database to SQLite.
fn check_header(header: &[u8], len: u64) -> std::result::Result<(), String> {
    if len == 0 {
        return Ok(());
    }
    if header.len() < 100 || &header[..16] != MAGIC {
        return Err("not an SQLite database (bad header)".into());
    }
    let be32 = |at: usize| {
        u32::from_be_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
    };
    let page_size = match u16::from_be_bytes([header[16], header[17]]) {
        1 => 65536,
        n => u64::from(n),
    };
    // The in-header page count is valid when the two change counters agree.
    let pages = u64::from(be32(28));
    if pages != 0 && be32(24) == be32(92) && pages * page_size != len {
        return Err(format!(
            "truncated or padded: {len} bytes, the header says {pages} pages of {page_size} bytes"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A database whose integrity check takes many progress steps: rows
    /// with an index on a column in random order.
    fn indexed_db(dir: &Path) -> PathBuf {
        let path = dir.join("lab.db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE runs(id INTEGER PRIMARY KEY, score REAL);
             CREATE INDEX runs_score ON runs(score);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000)
             INSERT INTO runs(score) SELECT abs(random() % 100000) FROM n;",
        )
        .unwrap();
        path
    }

    #[test]
    fn the_integrity_check_stops_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let path = indexed_db(dir.path());
        let counts = check_and_count(&path, "lab.db", || false).unwrap();
        assert_eq!(counts.get("runs"), Some(&20_000));
        let asked = std::sync::Arc::new(AtomicU64::new(0));
        let seen = std::sync::Arc::clone(&asked);
        let err = check_and_count(&path, "lab.db", move || {
            seen.fetch_add(1, Ordering::SeqCst);
            true
        })
        .unwrap_err();
        assert!(matches!(err, Error::Cancelled), "{err:?}");
        assert_eq!(asked.load(Ordering::SeqCst), 1, "stopped at the first look");
    }
}
