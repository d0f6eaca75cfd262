//! Dumping a live SQLite database.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use backup_core::database::{DatabaseSource, RowCounts};
use backup_core::{Cancel, Error, Result};
use rusqlite::backup::{Backup, StepResult};

use super::{MAGIC, TempDb, backend, check_and_count, is_busy, is_not_a_database, open, stream};

/// How long a locked database is retried by default.
const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(30);
/// First and longest pause between attempts on a locked database. The cap
/// is short on purpose: a writer committing in a loop in rollback-journal
/// mode holds its exclusive lock for the fsyncs of each commit and lets
/// readers in only for microseconds in between, so the chance of getting
/// in grows with the number of attempts; pausing 0.5 s between them starves
/// the dump (seen in tests), 2 ms does not. An attempt costs a failed
/// `fcntl` lock, about a microsecond.
const FIRST_BACKOFF: Duration = Duration::from_micros(100);
const MAX_BACKOFF: Duration = Duration::from_millis(2);
/// Pages copied between two looks at the cancel flag: 4 MiB of 4 KiB pages.
const PAGES_PER_STEP: std::os::raw::c_int = 1024;

/// An SQLite database file to dump while other processes may use it.
///
/// [`dump`](DatabaseSource::dump) copies the database with SQLite's online
/// backup API, all pages from one read transaction that stays open while
/// the pages are copied in steps: a consistent snapshot that concurrent
/// writers can neither corrupt nor starve (in WAL mode they keep writing
/// meanwhile; in rollback-journal mode they wait for the copy). The copy,
/// written to a private file in the temp directory (it needs as much free
/// space there as the database takes), is integrity-checked and counted
/// while it is streamed; it is always removed. Cancelling stops the copy
/// between steps and the check within about a millisecond.
/// Never copy a live `.db` with its `-wal`/`-shm` by hand.
#[derive(Debug)]
pub struct SqliteSource {
    path: PathBuf,
    busy_timeout: Duration,
    temp_dir: Option<PathBuf>,
}

impl SqliteSource {
    /// Opens an existing SQLite database (resolved against the current
    /// directory); creates nothing.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] when there is no such file, [`Error::InvalidInput`]
    /// for a directory or a file that is not an SQLite database.
    pub fn open(path: impl Into<PathBuf>) -> Result<Self> {
        let path = path.into();
        let path = std::path::absolute(&path)
            .map_err(|e| Error::io("resolve", path.display().to_string(), e))?;
        let shown = path.display().to_string();
        let meta = match fs::metadata(&path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NotFound {
                    what: "database",
                    path: shown,
                });
            }
            Err(e) => return Err(Error::io("read", shown, e)),
        };
        if meta.is_dir() {
            return Err(Error::InvalidInput(format!(
                "{shown} is a directory, not an SQLite database"
            )));
        }
        if !meta.is_file() {
            return Err(Error::InvalidInput(format!(
                "{shown} is not a regular file, so not an SQLite database"
            )));
        }
        let header =
            super::read_header(&path, MAGIC.len()).map_err(|e| Error::io("read", &*shown, e))?;
        let not_sqlite = || Error::InvalidInput(format!("{shown} is not an SQLite database"));
        if !header.is_empty() && header != MAGIC {
            return Err(not_sqlite());
        }
        // The header is only a hint: let SQLite read the schema.
        let conn = open(&path).map_err(|e| backend(format!("cannot open {shown}"), e))?;
        conn.busy_timeout(Duration::ZERO)
            .map_err(|e| backend(format!("cannot open {shown}"), e))?;
        match conn.query_row("SELECT count(*) FROM sqlite_schema", [], |row| {
            row.get::<_, i64>(0)
        }) {
            // Locked by a writer: the header said SQLite; `dump` will wait.
            Err(e) if is_busy(&e) => {}
            Err(e) if is_not_a_database(&e) => return Err(not_sqlite()),
            Err(e) => return Err(backend(format!("cannot read the schema of {shown}"), e)),
            Ok(_) => {}
        }
        Ok(Self {
            path,
            busy_timeout: DEFAULT_BUSY_TIMEOUT,
            temp_dir: None,
        })
    }

    /// How long a locked database is retried (with exponential backoff)
    /// before the dump fails; 30 s by default.
    #[must_use]
    pub fn with_busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = timeout;
        self
    }

    /// Where the temporary copy goes (default: [`std::env::temp_dir`]).
    #[must_use]
    pub fn with_temp_dir(mut self, dir: PathBuf) -> Self {
        self.temp_dir = Some(dir);
        self
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn file_name(&self) -> String {
        self.path.file_name().map_or_else(
            || "database.db".into(),
            |n| n.to_string_lossy().into_owned(),
        )
    }

    /// Copies the whole database into the empty file `copy`: one read
    /// transaction (retried while the database is locked) holds a single
    /// snapshot while the backup API copies its pages in steps, so `cancel`
    /// is seen between steps and writers can neither change nor restart
    /// the copy.
    fn copy_into(&self, copy: &Path, cancel: &Cancel) -> Result<()> {
        let shown = self.path.display().to_string();
        let src = open(&self.path).map_err(|e| backend(format!("cannot open {shown}"), e))?;
        let mut dst = open(copy).map_err(|e| {
            backend(
                format!("cannot open the temporary copy {}", copy.display()),
                e,
            )
        })?;
        // Our own file: no journal, no fsync; a failed copy is thrown away.
        let setup = src
            .busy_timeout(Duration::ZERO)
            .and_then(|()| dst.busy_timeout(Duration::ZERO))
            .and_then(|()| {
                dst.execute_batch("PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF;")
            });
        setup.map_err(|e| backend(format!("cannot prepare the copy of {shown}"), e))?;
        self.begin_read(&src, cancel)?;
        let backup = Backup::new(&src, &mut dst)
            .map_err(|e| backend(format!("cannot start copying {shown}"), e))?;
        loop {
            cancel.check()?;
            match backup.step(PAGES_PER_STEP) {
                Ok(StepResult::Done) => return Ok(()),
                // Our read transaction keeps the snapshot: `Busy` cannot
                // come from the source, and the copy is private.
                Ok(_) => {}
                Err(e) => return Err(backend(format!("cannot copy {shown}"), e)),
            }
        }
    }

    /// Opens a read transaction on `src` and reads from it, which takes
    /// the snapshot; retries with backoff while a writer holds a lock that
    /// keeps readers out, up to the busy timeout.
    fn begin_read(&self, src: &rusqlite::Connection, cancel: &Cancel) -> Result<()> {
        let shown = self.path.display().to_string();
        let started = Instant::now();
        let mut pause = FIRST_BACKOFF;
        let mut rng = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| u64::from(d.subsec_nanos()) | 1);
        loop {
            let read = src.execute_batch("BEGIN").and_then(|()| {
                src.query_row("SELECT count(*) FROM sqlite_schema", [], |row| {
                    row.get::<_, i64>(0)
                })
            });
            match read {
                Ok(_) => return Ok(()),
                Err(e) if is_busy(&e) => {
                    let _ = src.execute_batch("ROLLBACK");
                }
                Err(e) => return Err(backend(format!("cannot read {shown}"), e)),
            }
            cancel.check()?;
            let waited = started.elapsed();
            if waited >= self.busy_timeout {
                return Err(Error::Backend {
                    backend: super::BACKEND.into(),
                    message: format!(
                        "{shown} is locked by another process (retried for {:.0} s)",
                        waited.as_secs_f64()
                    ),
                    source: None,
                });
            }
            thread::sleep(jittered(pause, &mut rng).min(self.busy_timeout.saturating_sub(waited)));
            pause = (pause * 2).min(MAX_BACKOFF);
        }
    }
}

/// `pause` scaled by a pseudo-random factor in [0.5, 1.5), so attempts do
/// not fall into step with a writer's commit cycle.
fn jittered(pause: Duration, state: &mut u64) -> Duration {
    // xorshift64
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    pause.mul_f64(0.5 + (*state % 1024) as f64 / 1024.0)
}

impl DatabaseSource for SqliteSource {
    fn engine(&self) -> &'static str {
        "sqlite"
    }

    fn describe(&self) -> String {
        format!("sqlite://{}", self.path.display())
    }

    fn dump_name(&self) -> String {
        self.file_name()
    }

    fn finds(&self, sql: &str, values: &[String]) -> Result<bool> {
        let shown = self.describe();
        let conn = open(&self.path).map_err(|e| backend(format!("cannot open {shown}"), e))?;
        conn.busy_timeout(self.busy_timeout)
            .map_err(|e| backend(format!("cannot open {shown}"), e))?;
        let mut stmt = conn
            .prepare(sql)
            .map_err(|e| backend(format!("the query on {shown} is not valid"), e))?;
        stmt.exists(rusqlite::params_from_iter(values.iter()))
            .map_err(|e| backend(format!("the query on {shown} failed"), e))
    }

    fn dump(&self, out: &mut dyn std::io::Write, cancel: &Cancel) -> Result<RowCounts> {
        cancel.check()?;
        let dir = self.temp_dir.clone().unwrap_or_else(std::env::temp_dir);
        let (copy, file) =
            TempDb::create(&dir, &format!("backupkit-dump-{}", self.file_name()), true)?;
        drop(file);
        self.copy_into(&copy.path, cancel)?;
        cancel.check()?;
        let what = format!("the online copy of {}", self.describe());
        let shown = copy.path.display().to_string();
        // The integrity check (the slow part: index against table, about
        // 4.5 s for 200 MB) runs on the private copy while the copy is
        // streamed and compressed; the dump fails, and the engine commits
        // nothing, unless both succeed. A failed or cancelled stream stops
        // the check at once.
        let failed = Cancel::new();
        let (stream_failed, cancelled) = (failed.clone(), cancel.clone());
        let stop = move || cancelled.is_cancelled() || stream_failed.is_cancelled();
        let (verdict, streamed) = thread::scope(|s| {
            let check = s.spawn(|| check_and_count(&copy.path, &what, stop));
            let streamed = File::open(&copy.path)
                .map_err(|e| Error::io("open", &*shown, e))
                .and_then(|mut file| {
                    stream(
                        &mut file,
                        out,
                        cancel,
                        |e| Error::io("read", &*shown, e),
                        |e| Error::io("write the dump of", self.describe(), e),
                    )
                });
            if streamed.is_err() {
                failed.cancel();
            }
            let verdict = check
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            (verdict, streamed)
        });
        // The stream's error is the cause when it stopped the check.
        streamed?;
        let counts = verdict.map_err(|e| match e {
            Error::Integrity { detail, .. } => Error::Integrity {
                snapshot: self.describe(),
                detail: format!("the online copy fails its check, nothing was kept: {detail}"),
            },
            e => e,
        })?;
        Ok(counts)
    }
}
