//! PostgreSQL dumps and restores against a real server: round trips, live
//! writers, failures, and no password anywhere.
//!
//! The server comes from `BACKUPKIT_TEST_POSTGRES_URL` (a superuser URL with
//! a password; `scripts/services.sh` starts one). Without it every test
//! that needs it is skipped, unless `BACKUPKIT_REQUIRE_SERVICES=1`, which
//! makes it fail.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::Duration;

use super::{unique, with_db, with_password};
use backup_core::database::{DatabaseSource, DatabaseTarget, RowCounts};
use backup_core::{Cancel, DatabaseBackupOptions, Error, NoProgress, Registry, Repository};
use backup_db::{PostgresSource, PostgresTarget};
use postgres::{Client, NoTls};

const URL_VAR: &str = "BACKUPKIT_TEST_POSTGRES_URL";

fn server_url(test: &str) -> Option<String> {
    super::server_url(URL_VAR, "PostgreSQL", test)
}

/// The password in `url`.
fn password_of(url: &str) -> String {
    let auth = url.split_once("://").unwrap().1.split_once('@').unwrap().0;
    auth.split_once(':')
        .expect("URL has a password")
        .1
        .to_owned()
}

fn connect(url: &str) -> Client {
    Client::connect(url, NoTls).unwrap()
}

/// Databases created by a test, dropped when it ends (pass or fail).
struct Dbs {
    admin_url: String,
    names: Vec<String>,
}

impl Dbs {
    fn new(url: &str) -> Self {
        Self {
            admin_url: url.to_owned(),
            names: Vec::new(),
        }
    }

    /// Reserves a name (dropped at the end with its restore leftovers).
    fn name(&mut self, prefix: &str) -> String {
        let name = unique(prefix);
        self.names.push(name.clone());
        name
    }

    /// Creates a new database; returns its URL.
    fn create(&mut self, prefix: &str) -> (String, String) {
        let name = self.name(prefix);
        connect(&self.admin_url)
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .unwrap();
        (name.clone(), with_db(&self.admin_url, &name))
    }
}

impl Drop for Dbs {
    fn drop(&mut self) {
        let Ok(mut admin) = Client::connect(&self.admin_url, NoTls) else {
            return;
        };
        for name in &self.names {
            for n in [
                name.clone(),
                format!("{name}__backupkit_restore"),
                format!("{name}__backupkit_old"),
            ] {
                let _ =
                    admin.batch_execute(&format!("DROP DATABASE IF EXISTS \"{n}\" WITH (FORCE)"));
            }
        }
    }
}

fn db_exists(admin_url: &str, name: &str) -> bool {
    connect(admin_url)
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
        .unwrap()
        .is_some()
}

fn dump(url: &str) -> (Vec<u8>, RowCounts) {
    let source = PostgresSource::new(url).unwrap();
    let mut out = Vec::new();
    let counts = source.dump(&mut out, &Cancel::new()).unwrap();
    (out, counts)
}

/// Rows of a query, each as text columns (NULL as `None`), for comparison.
fn rows(client: &mut Client, sql: &str) -> Vec<Vec<Option<String>>> {
    client
        .query(sql, &[])
        .unwrap()
        .iter()
        .map(|r| {
            (0..r.len())
                .map(|i| r.get::<_, Option<String>>(i))
                .collect()
        })
        .collect()
}

const LAB_SCHEMA: &str = r#"
    CREATE TABLE measurements (id serial PRIMARY KEY, sample text NOT NULL, value double precision, raw bytea);
    CREATE INDEX measurements_sample ON measurements (sample);
    CREATE TABLE "Odd ""Name""" (k text, v integer);
    CREATE SCHEMA lab;
    CREATE TABLE lab.runs (id bigint PRIMARY KEY, note text);
    CREATE TABLE empty (x integer);
    INSERT INTO measurements (sample, value, raw)
        SELECT 's' || (i % 97), i * 0.5, decode(md5(i::text) || '00ff', 'hex')
        FROM generate_series(1, 5000) AS i;
    INSERT INTO measurements (sample, value, raw) VALUES ('nulls', NULL, NULL), ('quote''s', -1, '\x'::bytea);
    INSERT INTO "Odd ""Name""" SELECT 'k' || i, i FROM generate_series(1, 37) AS i;
    INSERT INTO lab.runs SELECT i, 'run ' || i FROM generate_series(1, 12) AS i;
"#;

const LAB_QUERIES: [&str; 3] = [
    "SELECT id::text, sample, value::text, encode(raw, 'hex') FROM measurements ORDER BY id",
    r#"SELECT k, v::text FROM "Odd ""Name""" ORDER BY k"#,
    "SELECT id::text, note FROM lab.runs ORDER BY id",
];

#[test]
fn round_trip_keeps_tables_rows_indexes_and_bytes() {
    let Some(url) = server_url("round_trip") else {
        return;
    };
    let mut dbs = Dbs::new(&url);
    let (_, src_url) = dbs.create("rt_src");
    let mut src = connect(&src_url);
    src.batch_execute(LAB_SCHEMA).unwrap();

    let (sql, counts) = dump(&src_url);
    let expected: RowCounts = [
        ("lab.runs", 12),
        ("public.Odd \"Name\"", 37),
        ("public.empty", 0),
        ("public.measurements", 5002),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    assert_eq!(counts, expected);
    let text = String::from_utf8(sql.clone()).unwrap();
    assert!(
        text.contains("PostgreSQL database dump"),
        "{}",
        &text[..200]
    );

    let dst_name = dbs.name("rt_dst");
    let dst_url = with_db(&url, &dst_name);
    let target = PostgresTarget::new(&dst_url).unwrap();
    assert!(!target.exists().unwrap());
    target.load(&mut &sql[..], false, &Cancel::new()).unwrap();
    assert!(target.exists().unwrap());
    assert!(!db_exists(&url, &format!("{dst_name}__backupkit_restore")));
    assert_eq!(target.verify().unwrap(), expected);

    let mut dst = connect(&dst_url);
    for q in LAB_QUERIES {
        assert_eq!(rows(&mut src, q), rows(&mut dst, q), "{q}");
    }
    let index: Vec<Vec<Option<String>>> = rows(
        &mut dst,
        "SELECT indexname::text FROM pg_indexes WHERE tablename = 'measurements' ORDER BY 1",
    );
    assert_eq!(
        index,
        vec![
            vec![Some("measurements_pkey".to_owned())],
            vec![Some("measurements_sample".to_owned())]
        ]
    );
    // The serial goes on where it was.
    let next: i32 = dst
        .query_one(
            "INSERT INTO measurements (sample) VALUES ('new') RETURNING id",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(next, 5003);
    drop(dst);

    // Replacing puts the dumped content back over a changed database.
    connect(&dst_url)
        .batch_execute("DELETE FROM lab.runs; DROP TABLE empty;")
        .unwrap();
    target.load(&mut &sql[..], true, &Cancel::new()).unwrap();
    assert_eq!(target.verify().unwrap(), expected);
    assert!(!db_exists(&url, &format!("{dst_name}__backupkit_old")));
}

#[test]
fn dumps_are_consistent_while_a_writer_commits() {
    let Some(url) = server_url("consistency") else {
        return;
    };
    let mut dbs = Dbs::new(&url);
    let (_, src_url) = dbs.create("cons_src");
    connect(&src_url)
        .batch_execute(
            "CREATE TABLE a (v bigint NOT NULL); CREATE TABLE b (v bigint NOT NULL);
             INSERT INTO a SELECT i FROM generate_series(1, 2000) i;
             INSERT INTO b SELECT i FROM generate_series(1, 2000) i;",
        )
        .unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let commits = Arc::new(AtomicU64::new(0));
    let writer = {
        let (stop, commits, url) = (stop.clone(), commits.clone(), src_url.clone());
        thread::spawn(move || {
            let mut client = connect(&url);
            let mut v = 10_000i64;
            while !stop.load(Ordering::Relaxed) {
                let mut tx = client.transaction().unwrap();
                tx.execute("INSERT INTO a VALUES ($1)", &[&v]).unwrap();
                // Between the two inserts, so a dump that reads a and b at
                // different moments would see them differ.
                thread::sleep(Duration::from_micros(200));
                tx.execute("INSERT INTO b VALUES ($1)", &[&v]).unwrap();
                tx.commit().unwrap();
                commits.fetch_add(1, Ordering::Relaxed);
                v += 1;
            }
        })
    };
    while commits.load(Ordering::Relaxed) < 20 {
        thread::sleep(Duration::from_millis(5));
    }

    let mut seen = Vec::new();
    for round in 0..3 {
        let before = commits.load(Ordering::Relaxed);
        let (sql, counts) = dump(&src_url);
        let dst_name = dbs.name(&format!("cons_dst{round}"));
        let dst_url = with_db(&url, &dst_name);
        let target = PostgresTarget::new(&dst_url).unwrap();
        target.load(&mut &sql[..], false, &Cancel::new()).unwrap();
        let restored = target.verify().unwrap();
        assert_eq!(restored, counts, "round {round}");
        assert_eq!(counts["public.a"], counts["public.b"], "round {round}");
        let sums = connect(&dst_url)
            .query_one(
                "SELECT (SELECT sum(v) FROM a)::text, (SELECT sum(v) FROM b)::text",
                &[],
            )
            .unwrap();
        assert_eq!(
            sums.get::<_, String>(0),
            sums.get::<_, String>(1),
            "round {round}"
        );
        seen.push((before, counts["public.a"]));
        // Let the writer commit between dumps too.
        let now = commits.load(Ordering::Relaxed);
        while commits.load(Ordering::Relaxed) < now + 10 {
            thread::sleep(Duration::from_millis(2));
        }
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    // The writer kept committing: each dump saw more rows than the last.
    assert!(
        seen.windows(2).all(|w| w[1].1 > w[0].1),
        "writer made no progress between dumps: {seen:?}"
    );
    assert!(seen[0].1 >= 2000 + seen[0].0, "{seen:?}");
}

#[test]
fn a_server_that_is_down_is_named() {
    // Needs no server: a port nothing listens on.
    let port = super::free_port();
    let url = format!("postgres://lab:down-secret-42@127.0.0.1:{port}/results");
    super::a_down_server_is_one_line(
        &PostgresSource::new(&url).unwrap(),
        &PostgresTarget::new(&url).unwrap(),
        port,
        "down-secret-42",
    );
}

#[test]
fn a_wrong_password_is_refused_without_showing_it() {
    let Some(url) = server_url("wrong_password") else {
        return;
    };
    let wrong = "Wr0ng-Pa55word-xyz";
    let bad = with_password(&url, wrong);
    super::a_wrong_password_is_refused(
        &PostgresSource::new(&bad).unwrap(),
        &PostgresTarget::new(&bad).unwrap(),
        wrong,
    );
}

#[test]
fn a_missing_pg_dump_or_psql_says_what_to_install() {
    let Some(url) = server_url("missing_tools") else {
        return;
    };
    let mut dbs = Dbs::new(&url);
    let (_, src_url) = dbs.create("missing");
    let empty = tempfile::tempdir().unwrap();
    let source = PostgresSource::new(&src_url)
        .unwrap()
        .with_pg_dump(empty.path().join("pg_dump"));
    let err = source.dump(&mut Vec::new(), &Cancel::new()).unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
    let err = err.to_string();
    assert!(
        err.contains("pg_dump") && err.contains("postgresql-client"),
        "{err}"
    );

    let dst = dbs.name("missing_dst");
    let target = PostgresTarget::new(&with_db(&url, &dst))
        .unwrap()
        .with_psql(empty.path().join("psql"));
    let err = target
        .load(&mut &b"SELECT 1;"[..], false, &Cancel::new())
        .unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
    assert!(err.to_string().contains("postgresql-client"), "{err}");
    assert!(!db_exists(&url, &dst));
    assert!(!db_exists(&url, &format!("{dst}__backupkit_restore")));
}

/// A stand-in `pg_dump` script in `dir` printing `stderr` and exiting 1.
#[cfg(unix)]
fn fake_pg_dump(dir: &Path, body: &str) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("pg_dump");
    std::fs::write(&path, format!("#!/bin/sh\n{body}\nexit 1\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[cfg(unix)]
#[test]
fn pg_dump_failures_are_one_clear_line_without_the_password() {
    let Some(url) = server_url("pg_dump_failures") else {
        return;
    };
    let password = password_of(&url);
    let mut dbs = Dbs::new(&url);
    let (_, src_url) = dbs.create("fail");
    let dir = tempfile::tempdir().unwrap();

    // pg_dump 15 against a newer server: what pg_dump prints then.
    let old = fake_pg_dump(
        dir.path(),
        "echo 'pg_dump: error: aborting because of server version mismatch' >&2\n\
         echo 'pg_dump: detail: server version: 17.2; pg_dump version: 15.18' >&2",
    );
    let err = PostgresSource::new(&src_url)
        .unwrap()
        .with_pg_dump(&old)
        .dump(&mut Vec::new(), &Cancel::new())
        .unwrap_err()
        .to_string();
    assert!(err.contains("server version mismatch"), "{err}");
    assert!(err.contains("older than the PostgreSQL server"), "{err}");
    assert!(err.contains("server version: 17.2"), "{err}");

    // Any other failure shows pg_dump's first lines; the script echoes its
    // arguments, the environment's password and the passfile, which holds
    // the password: only the scrubbed form may show.
    let leaky = fake_pg_dump(
        dir.path(),
        "echo \"pg_dump: error: args: $*\" >&2\n\
         echo \"env: ${PGPASSWORD:-no PGPASSWORD}\" >&2\n\
         echo \"passfile: $(cat \"$PGPASSFILE\")\" >&2",
    );
    let mut out = Vec::new();
    let err = PostgresSource::new(&src_url)
        .unwrap()
        .with_pg_dump(&leaky)
        .dump(&mut out, &Cancel::new())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("pg_dump of") && err.contains("exit status 1"),
        "{err}"
    );
    assert!(err.contains("--snapshot="), "{err}");
    assert!(err.contains("no PGPASSWORD"), "{err}");
    assert!(err.contains("passfile: *:*:*:*:***"), "{err}");
    assert!(!err.contains(&password), "{err}");
    assert!(!err.contains('\n'), "{err}");
    // The passfile is gone.
    let leftovers: Vec<_> = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(&format!("backupkit-pgpass-{}-", std::process::id()))
        })
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn an_existing_database_is_untouched_unless_replaced() {
    let Some(url) = server_url("target_exists") else {
        return;
    };
    let mut dbs = Dbs::new(&url);
    let (_, src_url) = dbs.create("ex_src");
    connect(&src_url)
        .batch_execute("CREATE TABLE t (v text); INSERT INTO t VALUES ('new'), ('new');")
        .unwrap();
    let (sql, _) = dump(&src_url);
    let (dst_name, dst_url) = dbs.create("ex_dst");
    connect(&dst_url)
        .batch_execute("CREATE TABLE keep (v text); INSERT INTO keep VALUES ('old');")
        .unwrap();
    let target = PostgresTarget::new(&dst_url).unwrap();
    assert!(target.exists().unwrap());

    let err = target
        .load(&mut &sql[..], false, &Cancel::new())
        .unwrap_err();
    assert!(matches!(err, Error::AlreadyExists { .. }), "{err}");
    let expected_old: RowCounts = [("public.keep".to_owned(), 1)].into_iter().collect();
    assert_eq!(target.verify().unwrap(), expected_old);

    // A dump that fails halfway, even with replace: the old database stays.
    let bad = b"CREATE TABLE half (v int);\nINSERT INTO half VALUES (1);\nCREATE TABLE broken (;\n";
    let err = target
        .load(&mut &bad[..], true, &Cancel::new())
        .unwrap_err()
        .to_string();
    assert!(err.contains("psql could not load the dump"), "{err}");
    assert!(err.contains("syntax error"), "{err}");
    assert!(!err.contains(&password_of(&url)), "{err}");
    assert_eq!(target.verify().unwrap(), expected_old);
    assert!(!db_exists(&url, &format!("{dst_name}__backupkit_restore")));

    // A dump the caller refuses once it is staged (its row counts differ
    // from those recorded): the old database stays, no staging is left.
    let expected_new: RowCounts = [("public.t".to_owned(), 2)].into_iter().collect();
    let refuse = |c: &RowCounts| {
        assert_eq!(c, &expected_new, "accept sees the staged database's counts");
        Err(Error::Integrity {
            snapshot: "s".into(),
            detail: "row counts differ".into(),
        })
    };
    let err = target
        .load_verified(&mut &sql[..], true, &refuse, &Cancel::new())
        .unwrap_err();
    assert!(matches!(err, Error::Integrity { .. }), "{err}");
    assert_eq!(target.verify().unwrap(), expected_old);
    assert!(!db_exists(&url, &format!("{dst_name}__backupkit_restore")));
    // On a new target nothing appears.
    let fresh_name = format!("{dst_name}_fresh");
    let fresh = PostgresTarget::new(&dst_url.replace(&dst_name, &fresh_name)).unwrap();
    fresh
        .load_verified(&mut &sql[..], false, &refuse, &Cancel::new())
        .unwrap_err();
    assert!(!db_exists(&url, &fresh_name));
    assert!(!db_exists(
        &url,
        &format!("{fresh_name}__backupkit_restore")
    ));

    // With replace it takes the dump.
    target.load(&mut &sql[..], true, &Cancel::new()).unwrap();
    assert_eq!(target.verify().unwrap(), expected_new);
}

#[test]
fn urls_and_descriptions_never_show_the_password() {
    let url = "postgresql://lab:Sup3r-Secret@db.example:6543/results";
    let mut registry = Registry::new();
    backup_db::register(&mut registry);
    let source = registry.database_source(url).unwrap();
    assert_eq!(source.engine(), "postgres");
    assert_eq!(source.dump_name(), "results.sql");
    assert_eq!(
        source.describe(),
        "postgres://lab:***@db.example:6543/results"
    );
    let target = registry
        .database_target("postgres://lab:Sup3r-Secret@db.example/results")
        .unwrap();
    assert_eq!(
        target.describe(),
        "postgres://lab:***@db.example:5432/results"
    );
    assert!(!format!("{source:?} {target:?}").contains("Sup3r"));
    let err = registry
        .database_source("postgres://lab:Sup3r-Secret@db.example:xx/results")
        .unwrap_err()
        .to_string();
    assert!(!err.contains("Sup3r"), "{err}");
}

#[test]
fn backup_and_restore_through_the_engine() {
    let Some(url) = server_url("engine") else {
        return;
    };
    let password = password_of(&url);
    let mut dbs = Dbs::new(&url);
    let (src_name, src_url) = dbs.create("eng_src");
    connect(&src_url).batch_execute(LAB_SCHEMA).unwrap();

    let mut registry = Registry::new();
    backup_targets::register(&mut registry);
    backup_archive::register(&mut registry);
    backup_db::register(&mut registry);
    let registry = Arc::new(registry);
    let dir = tempfile::tempdir().unwrap();
    let location = dir.path().join("repo");
    let repo = Repository::init(registry.clone(), location.to_str().unwrap()).unwrap();

    let source = registry.database_source(&src_url).unwrap();
    let meta = repo
        .backup_database(
            source.as_ref(),
            &DatabaseBackupOptions::default(),
            &NoProgress,
            &Cancel::new(),
        )
        .unwrap();
    let info = meta.database.clone().unwrap();
    assert_eq!(info.engine, "postgres");
    assert_eq!(info.dump_name, format!("{src_name}.sql"));
    assert_eq!(meta.files_included, vec![format!("{src_name}.sql.gz")]);
    assert!(
        meta.objects
            .iter()
            .any(|o| o.name == format!("{src_name}.sql.gz"))
    );
    assert_eq!(info.tables["public.measurements"], 5002);
    assert!(
        !format!("{meta:?}").contains(&password),
        "metadata shows the password"
    );

    let dst_name = dbs.name("eng_dst");
    let dst_url = with_db(&url, &dst_name);
    let summary = repo
        .restore_database(&meta.id, &dst_url, false, &NoProgress, &Cancel::new())
        .unwrap();
    assert_eq!(summary.tables, info.tables);
    assert!(!summary.target.contains(&password));
    let (mut a, mut b) = (connect(&src_url), connect(&dst_url));
    for q in LAB_QUERIES {
        assert_eq!(rows(&mut a, q), rows(&mut b, q), "{q}");
    }
    // A second restore without replace refuses, naming no password.
    let err = repo
        .restore_database(&meta.id, &dst_url, false, &NoProgress, &Cancel::new())
        .unwrap_err();
    assert!(matches!(err, Error::DatabaseExists { .. }), "{err}");
    assert!(!err.to_string().contains(&password));
}

/// Seed 003's import lookups against a PostgreSQL record.
#[test]
fn import_queries_are_answered_with_bound_values() {
    let Some(url) = server_url("import_queries") else {
        return;
    };
    let mut dbs = Dbs::new(&url);
    let (_, db_url) = dbs.create("imports");
    connect(&db_url)
        .batch_execute(super::IMPORT_SCHEMA)
        .unwrap();
    super::import_queries_answer(&PostgresSource::new(&db_url).unwrap());
}
