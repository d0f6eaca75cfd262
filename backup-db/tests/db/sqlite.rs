//! SQLite dumps and restores: round trips, live writers, locks, bad input.

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use backup_core::database::{DatabaseSource, DatabaseTarget, RowCounts};
use backup_core::{Cancel, Error, Registry};
use backup_db::{SqliteSource, SqliteTarget, sqlite_path};
use rusqlite::Connection;
use rusqlite::types::Value;

/// File names in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Every row of `table`, in rowid order.
fn rows(conn: &Connection, table: &str) -> Vec<Vec<Value>> {
    let sql = format!(
        "SELECT * FROM \"{}\" ORDER BY rowid",
        table.replace('"', "\"\"")
    );
    let mut stmt = conn.prepare(&sql).unwrap();
    let n = stmt.column_count();
    stmt.query_map([], |r| (0..n).map(|i| r.get::<_, Value>(i)).collect())
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap()
}

fn dump_to_vec(source: &SqliteSource) -> (Vec<u8>, RowCounts) {
    let mut out = Vec::new();
    let counts = source.dump(&mut out, &Cancel::new()).unwrap();
    (out, counts)
}

fn restore(dump: &[u8], path: &Path) -> SqliteTarget {
    let target = SqliteTarget::new(path).unwrap();
    target.load(&mut &dump[..], false, &Cancel::new()).unwrap();
    target
}

const TABLES: [&str; 4] = ["measurements", "odd name", "say \"hi\"", "empty"];

/// A database like a lab's results file; `journal_mode` `wal` or `delete`.
fn make_lab_db(path: &Path, journal_mode: &str) {
    let mut conn = Connection::open(path).unwrap();
    conn.pragma_update(None, "journal_mode", journal_mode)
        .unwrap();
    conn.execute_batch(
        "CREATE TABLE measurements (id INTEGER PRIMARY KEY, sample TEXT NOT NULL, value REAL, raw BLOB);
         CREATE INDEX measurements_sample ON measurements(sample);
         CREATE TABLE \"odd name\" (k TEXT, v INTEGER);
         CREATE TABLE \"say \"\"hi\"\"\" (x);
         CREATE TABLE empty (x);",
    )
    .unwrap();
    let tx = conn.transaction().unwrap();
    {
        let mut ins = tx
            .prepare("INSERT INTO measurements (sample, value, raw) VALUES (?1, ?2, ?3)")
            .unwrap();
        for i in 0..50_000u32 {
            let raw: Vec<u8> = (0..(i % 64)).map(|b| (b as u8) ^ (i as u8)).collect();
            ins.execute((format!("s{}", i % 977), f64::from(i) * 0.5, raw))
                .unwrap();
        }
        let mut odd = tx
            .prepare("INSERT INTO \"odd name\" VALUES (?1, ?2)")
            .unwrap();
        for i in 0..10 {
            odd.execute((format!("k'{i}\""), i)).unwrap();
        }
        tx.execute(
            "INSERT INTO \"say \"\"hi\"\"\" VALUES (NULL), (x'00ff'), (1.5)",
            [],
        )
        .unwrap();
    }
    tx.commit().unwrap();
}

#[test]
fn round_trip_keeps_every_row() {
    let dir = tempfile::tempdir().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let src_path = dir.path().join("results.db");
    make_lab_db(&src_path, "wal");

    let source = SqliteSource::open(&src_path)
        .unwrap()
        .with_temp_dir(tmp.path().to_owned());
    assert_eq!(source.engine(), "sqlite");
    assert_eq!(source.dump_name(), "results.db");
    assert_eq!(
        source.describe(),
        format!("sqlite://{}", src_path.display())
    );

    let (dump, counts) = dump_to_vec(&source);
    assert_eq!(counts["measurements"], 50_000);
    assert_eq!(counts["odd name"], 10);
    assert_eq!(counts["say \"hi\""], 3);
    assert_eq!(counts["empty"], 0);
    assert_eq!(counts.len(), 4, "{counts:?}");
    assert!(names(tmp.path()).is_empty(), "{:?}", names(tmp.path()));

    let out_path = dir.path().join("restored/test_db.db");
    let target = restore(&dump, &out_path);
    assert_eq!(target.verify().unwrap(), counts);

    let a = Connection::open(&src_path).unwrap();
    let b = Connection::open(&out_path).unwrap();
    for table in TABLES {
        assert_eq!(rows(&a, table), rows(&b, table), "table {table}");
    }
    let index: String = b
        .query_row(
            "SELECT sql FROM sqlite_schema WHERE name = 'measurements_sample'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(index.contains("ON measurements(sample)"), "{index}");
    // The copy keeps the journal mode.
    let mode: String = b
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    drop((a, b));

    // Dumping and restoring left no side files, and the restored file has
    // the permissions of any new file there.
    assert_eq!(names(dir.path()), ["restored", "results.db"]);
    assert_eq!(names(&dir.path().join("restored")), ["test_db.db"]);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let fresh = dir.path().join("restored/fresh");
        fs::write(&fresh, b"").unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode();
        assert_eq!(mode(&out_path), mode(&fresh));
    }
}

/// Rollback-journal or WAL database with tables `a` and `b` (and ballast),
/// written by a thread that inserts the same value into both per transaction.
struct Writer {
    stop: Arc<AtomicBool>,
    commits: Arc<AtomicU64>,
    handle: Option<thread::JoinHandle<()>>,
}

impl Writer {
    fn start(path: &Path) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let commits = Arc::new(AtomicU64::new(0));
        let conn = Connection::open(path).unwrap();
        conn.busy_timeout(Duration::from_secs(60)).unwrap();
        let (s, c) = (Arc::clone(&stop), Arc::clone(&commits));
        let handle = thread::spawn(move || {
            let mut v = 0i64;
            while !s.load(Ordering::Relaxed) {
                v += 1;
                conn.execute_batch(&format!(
                    "BEGIN IMMEDIATE; INSERT INTO a VALUES ({v}); INSERT INTO b VALUES ({v}); COMMIT;"
                ))
                .unwrap();
                c.fetch_add(1, Ordering::SeqCst);
            }
        });
        Self {
            stop,
            commits,
            handle: Some(handle),
        }
    }

    fn commits(&self) -> u64 {
        self.commits.load(Ordering::SeqCst)
    }

    fn wait_for(&self, n: u64) {
        let start = Instant::now();
        while self.commits() < n {
            assert!(start.elapsed() < Duration::from_secs(30), "writer stuck");
            thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let result = h.join();
            if !thread::panicking() {
                result.unwrap();
            }
        }
    }
}

fn consistent_under_writer(journal_mode: &str) {
    let dir = tempfile::tempdir().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let path = dir.path().join("live.db");
    {
        let conn = Connection::open(&path).unwrap();
        let mode: String = conn
            .query_row(&format!("PRAGMA journal_mode = {journal_mode}"), [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(mode, journal_mode);
        conn.execute_batch(
            "CREATE TABLE a (v INTEGER); CREATE TABLE b (v INTEGER);
             CREATE TABLE ballast (x BLOB); CREATE INDEX a_v ON a(v);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 4000)
             INSERT INTO ballast SELECT randomblob(2000) FROM n;",
        )
        .unwrap();
    }
    let source = SqliteSource::open(&path)
        .unwrap()
        .with_temp_dir(tmp.path().to_owned());
    let writer = Writer::start(&path);
    writer.wait_for(50);
    let before = writer.commits();
    let mut seen = Vec::new();
    for i in 0..3 {
        let start = Instant::now();
        let (dump, counts) = dump_to_vec(&source);
        let took = start.elapsed();
        assert!(took < Duration::from_secs(5), "dump {i} took {took:?}");
        assert_eq!(counts["a"], counts["b"], "{counts:?}");

        let restored = dir.path().join(format!("restored-{i}.db"));
        let target = restore(&dump, &restored);
        assert_eq!(target.verify().unwrap(), counts);
        let conn = Connection::open(&restored).unwrap();
        let (na, sa): (i64, i64) = conn
            .query_row("SELECT count(*), coalesce(sum(v), 0) FROM a", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        let (nb, sb): (i64, i64) = conn
            .query_row("SELECT count(*), coalesce(sum(v), 0) FROM b", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        assert_eq!((na, sa), (nb, sb), "dump {i} is torn");
        assert_eq!(na as u64, counts["a"]);
        seen.push(na);
        // Let the writer commit between dumps.
        writer.wait_for(writer.commits() + 20);
    }
    let after = writer.commits();
    drop(writer);
    assert!(after > before + 60, "writer starved: {before} -> {after}");
    assert!(
        seen.windows(2).all(|w| w[0] < w[1]),
        "dumps did not see the writer's progress: {seen:?}"
    );
    assert!(names(tmp.path()).is_empty(), "{:?}", names(tmp.path()));
}

#[test]
fn consistent_under_writer_wal() {
    consistent_under_writer("wal");
}

#[test]
fn consistent_under_writer_rollback_journal() {
    consistent_under_writer("delete");
}

#[test]
fn locked_database_fails_clearly_then_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let path = dir.path().join("busy.db");
    let holder = Connection::open(&path).unwrap();
    holder
        .execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
        .unwrap();
    holder
        .execute_batch("BEGIN EXCLUSIVE; INSERT INTO t VALUES (2);")
        .unwrap();

    // Opening works while locked; the dump waits, then gives up.
    let source = SqliteSource::open(&path)
        .unwrap()
        .with_busy_timeout(Duration::from_secs(1))
        .with_temp_dir(tmp.path().to_owned());
    let start = Instant::now();
    let mut out = Vec::new();
    let err = source.dump(&mut out, &Cancel::new()).unwrap_err();
    let took = start.elapsed();
    let msg = err.to_string();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "{took:?}"
    );
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(msg.contains("locked by another process"), "{msg}");
    assert!(!msg.contains('\n'), "{msg}");
    assert!(out.is_empty());
    assert!(names(tmp.path()).is_empty(), "{:?}", names(tmp.path()));

    holder.execute_batch("COMMIT;").unwrap();
    let (dump, counts) = dump_to_vec(&source);
    assert_eq!(counts["t"], 2);
    assert!(!dump.is_empty());
}

#[test]
fn bad_sources_are_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();

    let missing = dir.path().join("missing.db");
    match SqliteSource::open(&missing).unwrap_err() {
        Error::NotFound { what, path } => {
            assert_eq!(what, "database");
            assert_eq!(path, missing.display().to_string());
        }
        e => panic!("{e:?}"),
    }

    let text = dir.path().join("notes.db");
    fs::write(&text, "these are my notes, not a database\n").unwrap();
    let err = SqliteSource::open(&text).unwrap_err();
    assert!(matches!(err, Error::InvalidInput(_)), "{err:?}");
    assert!(
        err.to_string().contains("is not an SQLite database"),
        "{err}"
    );

    // Short and long files that merely start like SQLite are caught too.
    let fake = dir.path().join("fake.db");
    let mut bytes = b"SQLite format 3\0".to_vec();
    bytes.extend(std::iter::repeat_n(0x5a, 8000));
    fs::write(&fake, &bytes).unwrap();
    let err = SqliteSource::open(&fake).unwrap_err();
    assert!(matches!(err, Error::InvalidInput(_)), "{err:?}");

    let sub = dir.path().join("a-directory.db");
    fs::create_dir(&sub).unwrap();
    let err = SqliteSource::open(&sub).unwrap_err();
    assert!(matches!(err, Error::InvalidInput(_)), "{err:?}");
    assert!(err.to_string().contains("is a directory"), "{err}");
    assert!(matches!(
        SqliteTarget::new(&sub).unwrap_err(),
        Error::InvalidInput(_)
    ));

    // Nothing was created and the text file is as it was.
    assert_eq!(names(dir.path()), ["a-directory.db", "fake.db", "notes.db"]);
    assert!(names(&sub).is_empty());
    assert_eq!(
        fs::read_to_string(&text).unwrap(),
        "these are my notes, not a database\n"
    );
}

#[test]
fn damaged_source_is_refused_and_nothing_written() {
    let dir = tempfile::tempdir().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let path = dir.path().join("damaged.db");
    {
        let c = Connection::open(&path).unwrap();
        c.execute_batch(
            "PRAGMA page_size = 4096; CREATE TABLE t (x TEXT); CREATE INDEX t_x ON t(x);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000)
             INSERT INTO t SELECT printf('row %08d', i) FROM n;",
        )
        .unwrap();
    }
    // Scribble over a page in the middle of the file (not the header page).
    let mut bytes = fs::read(&path).unwrap();
    let pages = bytes.len() / 4096;
    let at = (pages / 2) * 4096;
    for (i, b) in bytes[at + 8..at + 4096].iter_mut().enumerate() {
        *b = (i * 31 % 253) as u8;
    }
    fs::write(&path, &bytes).unwrap();

    let source = SqliteSource::open(&path)
        .unwrap()
        .with_temp_dir(tmp.path().to_owned());
    let mut out = Vec::new();
    let err = source.dump(&mut out, &Cancel::new()).unwrap_err();
    assert!(matches!(err, Error::Integrity { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains(&source.describe()) && !msg.contains('\n'),
        "{msg}"
    );
    // The check runs while the copy streams, so part of it may have been
    // written: the dump's failure is what keeps it out of any snapshot
    // (backup-core discards a failed dump and commits nothing).
    assert!(names(tmp.path()).is_empty(), "{:?}", names(tmp.path()));
}

/// A sink that asks for cancellation once it has received the first chunk.
struct CancelAfterFirstChunk {
    cancel: Cancel,
    bytes: usize,
}

impl Write for CancelAfterFirstChunk {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.bytes += buf.len();
        self.cancel.cancel();
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A dump reader that asks for cancellation after its first read.
struct CancelAfterFirstRead<'a> {
    inner: &'a [u8],
    cancel: Cancel,
}

impl Read for CancelAfterFirstRead<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.cancel.cancel();
        self.inner.read(buf)
    }
}

fn side(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    s.into()
}

#[test]
fn restores_never_damage_the_target() {
    let dir = tempfile::tempdir().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let src_path = dir.path().join("src/results.db");
    fs::create_dir(dir.path().join("src")).unwrap();
    make_lab_db(&src_path, "delete");
    let source = SqliteSource::open(&src_path)
        .unwrap()
        .with_temp_dir(tmp.path().to_owned());
    let (dump, counts) = dump_to_vec(&source);

    // An existing database the restore must not damage.
    let out = dir.path().join("out");
    fs::create_dir(&out).unwrap();
    let target_path = out.join("test_db.db");
    {
        let c = Connection::open(&target_path).unwrap();
        c.execute_batch("CREATE TABLE old (x); INSERT INTO old VALUES ('precious');")
            .unwrap();
    }
    let original = fs::read(&target_path).unwrap();
    let target = SqliteTarget::new(&target_path).unwrap();
    assert!(target.exists().unwrap());

    // replace = false: refused before reading anything.
    let mut untouched = CancelAfterFirstRead {
        inner: &dump,
        cancel: Cancel::new(),
    };
    let err = target
        .load(&mut untouched, false, &Cancel::new())
        .unwrap_err();
    assert!(matches!(err, Error::AlreadyExists { .. }), "{err:?}");
    assert!(!untouched.cancel.is_cancelled(), "the dump was read");
    assert_eq!(fs::read(&target_path).unwrap(), original);
    assert_eq!(names(&out), ["test_db.db"]);

    // Garbage, and a truncated dump: Integrity, target untouched.
    let garbage: Vec<u8> = (0..300_000u32).map(|i| (i * 7919 % 251) as u8).collect();
    let truncated = &dump[..dump.len() / 2];
    for bad in [&garbage[..], truncated] {
        let err = target
            .load(&mut &bad[..], true, &Cancel::new())
            .unwrap_err();
        assert!(matches!(err, Error::Integrity { .. }), "{err:?}");
        assert_eq!(fs::read(&target_path).unwrap(), original);
        assert_eq!(names(&out), ["test_db.db"]);
    }

    // Cancelled mid-stream: target untouched, no temp file.
    let cancel = Cancel::new();
    let mut reader = CancelAfterFirstRead {
        inner: &dump,
        cancel: cancel.clone(),
    };
    let err = target.load(&mut reader, true, &cancel).unwrap_err();
    assert!(matches!(err, Error::Cancelled), "{err:?}");
    assert_eq!(fs::read(&target_path).unwrap(), original);
    assert_eq!(names(&out), ["test_db.db"]);

    // A dump whose counts the caller refuses (they differ from those
    // recorded): checked on the staged copy, the old database untouched,
    // nothing left behind; on a new target nothing appears.
    let seen = std::cell::RefCell::new(None);
    let refuse = |c: &RowCounts| {
        *seen.borrow_mut() = Some(c.clone());
        Err(Error::Integrity {
            snapshot: "s".into(),
            detail: "row counts differ".into(),
        })
    };
    let err = target
        .load_verified(&mut &dump[..], true, &refuse, &Cancel::new())
        .unwrap_err();
    assert!(matches!(err, Error::Integrity { .. }), "{err:?}");
    assert_eq!(
        seen.borrow().as_ref(),
        Some(&counts),
        "accept saw the staged counts"
    );
    assert_eq!(fs::read(&target_path).unwrap(), original);
    assert_eq!(names(&out), ["test_db.db"]);
    let fresh = SqliteTarget::new(out.join("fresh.db")).unwrap();
    fresh
        .load_verified(&mut &dump[..], false, &refuse, &Cancel::new())
        .unwrap_err();
    assert_eq!(names(&out), ["test_db.db"]);

    // replace = true: replaced, and the old side files are gone.
    fs::write(side(&target_path, "-wal"), b"stale wal").unwrap();
    fs::write(side(&target_path, "-shm"), b"stale shm").unwrap();
    target.load(&mut &dump[..], true, &Cancel::new()).unwrap();
    assert_eq!(names(&out), ["test_db.db"]);
    assert_eq!(target.verify().unwrap(), counts);
    assert_ne!(fs::read(&target_path).unwrap(), original);

    // Dumps cancelled mid-stream leave no copy behind.
    let cancel = Cancel::new();
    let mut sink = CancelAfterFirstChunk {
        cancel: cancel.clone(),
        bytes: 0,
    };
    let err = source.dump(&mut sink, &cancel).unwrap_err();
    assert!(matches!(err, Error::Cancelled), "{err:?}");
    assert_eq!(sink.bytes, 256 * 1024, "one chunk, then stop");
    assert!(names(tmp.path()).is_empty(), "{:?}", names(tmp.path()));
    assert_eq!(names(&dir.path().join("src")), ["results.db"]);

    // verify on a missing database.
    let nothing = SqliteTarget::new(out.join("nothing.db")).unwrap();
    assert!(!nothing.exists().unwrap());
    assert!(matches!(
        nothing.verify().unwrap_err(),
        Error::NotFound {
            what: "database",
            ..
        }
    ));
}

#[test]
fn registry_opens_sqlite_urls() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.db");
    make_lab_db(&path, "delete");
    let abs = path.display().to_string();
    assert!(abs.starts_with('/') || cfg!(windows));

    let mut registry = Registry::new();
    backup_db::register(&mut registry);
    let source = registry
        .database_source(&format!("sqlite://{abs}"))
        .unwrap();
    assert_eq!(source.engine(), "sqlite");
    assert_eq!(source.describe(), format!("sqlite://{abs}"));
    assert_eq!(source.dump_name(), "x.db");
    let mut sink = io::sink();
    assert_eq!(
        source.dump(&mut sink, &Cancel::new()).unwrap()["measurements"],
        50_000
    );

    // Relative URLs resolve against the current directory.
    let cwd = std::env::current_dir().unwrap();
    assert_eq!(sqlite_path("sqlite://rel.db").unwrap(), cwd.join("rel.db"));
    match registry
        .database_source("sqlite://no-such-dir/rel.db")
        .unwrap_err()
    {
        Error::NotFound { path, .. } => {
            assert_eq!(path, cwd.join("no-such-dir/rel.db").display().to_string());
        }
        e => panic!("{e:?}"),
    }
    let target = registry
        .database_target("sqlite://restored/rel.db")
        .unwrap();
    assert_eq!(
        target.describe(),
        format!("sqlite://{}", cwd.join("restored/rel.db").display())
    );
    assert!(!target.exists().unwrap());

    assert!(matches!(
        registry.database_source("sqlite:x.db").unwrap_err(),
        Error::InvalidInput(_)
    ));
}

/// Cancels the dump when its first bytes arrive (the check has just
/// started on the copy).
struct CancelOnFirstWrite(Cancel, Option<Instant>);
impl Write for CancelOnFirstWrite {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.1.is_none() {
            self.1 = Some(Instant::now());
            self.0.cancel();
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Ctrl-C during a dump stops the integrity check of the copy at once,
/// instead of waiting for it (minutes, for a database of many GB).
#[test]
fn a_cancelled_dump_stops_its_integrity_check_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.db");
    let conn = Connection::open(&path).unwrap();
    conn.execute_batch(
        "CREATE TABLE samples(id INTEGER PRIMARY KEY, run INTEGER, value REAL, label TEXT);
         CREATE INDEX samples_value ON samples(value);
         CREATE INDEX samples_label ON samples(label, run);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 400000)
         INSERT INTO samples(run, value, label)
             SELECT i % 997, random(), hex(randomblob(8)) FROM n;",
    )
    .unwrap();
    drop(conn);
    // How long the check of this database takes when left alone.
    let started = Instant::now();
    SqliteTarget::new(&path).unwrap().verify().unwrap();
    let full_check = started.elapsed();

    let cancel = Cancel::new();
    let mut sink = CancelOnFirstWrite(cancel.clone(), None);
    let source = SqliteSource::open(&path)
        .unwrap()
        .with_temp_dir(dir.path().to_owned());
    let err = source.dump(&mut sink, &cancel).unwrap_err();
    let latency = sink.1.expect("the dump wrote").elapsed();
    assert!(matches!(err, Error::Cancelled), "{err:?}");
    // Half the full check at most: the margin a loaded CI machine needs (the
    // two runs meet different load; seen: a quarter plus 1%).
    assert!(
        latency * 2 < full_check,
        "cancelled after {latency:?}; the whole check takes {full_check:?}"
    );
    assert_eq!(names(dir.path()), ["big.db"], "the copy is removed");
}

/// Seed 003's import lookups against an SQLite record.
#[test]
fn import_queries_are_answered_with_bound_values() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("imports.db");
    Connection::open(&path)
        .unwrap()
        .execute_batch(super::IMPORT_SCHEMA)
        .unwrap();
    super::import_queries_answer(&SqliteSource::open(&path).unwrap());
}
