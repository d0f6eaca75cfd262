//! MariaDB/MySQL dumps and restores against a real server: round trips,
//! live writers, failures, and no password anywhere.
//!
//! The server comes from `BACKUPKIT_TEST_MYSQL_URL` (a URL with a password
//! for a user with every privilege; `scripts/services.sh` starts one).
//! Without it every test that needs it is skipped, unless
//! `BACKUPKIT_REQUIRE_SERVICES=1`, which makes it fail.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::Duration;

use super::{unique, with_db, with_password};
use backup_core::database::{DatabaseSource, DatabaseTarget, RowCounts};
use backup_core::{Cancel, DatabaseBackupOptions, Error, NoProgress, Registry, Repository};
use backup_db::{MysqlSource, MysqlTarget};

const URL_VAR: &str = "BACKUPKIT_TEST_MYSQL_URL";

fn server_url(test: &str) -> Option<String> {
    super::server_url(URL_VAR, "MariaDB", test)
}

/// The user, password, host and port in `url`.
fn parts(url: &str) -> (String, String, String, String) {
    let rest = url.split_once("://").unwrap().1;
    let (auth, rest) = rest.split_once('@').unwrap();
    let (user, password) = auth.split_once(':').expect("URL has a password");
    let hostport = rest.split_once('/').map_or(rest, |(h, _)| h);
    let (host, port) = hostport.split_once(':').unwrap_or((hostport, "3306"));
    (
        user.to_owned(),
        password.to_owned(),
        host.to_owned(),
        port.to_owned(),
    )
}

fn password_of(url: &str) -> String {
    parts(url).1
}

/// The `mariadb` client (or `mysql`) for the test's own queries.
fn client_program() -> &'static str {
    if Command::new("mariadb")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        "mariadb"
    } else {
        "mysql"
    }
}

/// A client command for `url` (its database), credentials in a file under
/// `dir`.
fn client(url: &str, dir: &Path) -> Command {
    let (user, password, host, port) = parts(url);
    let cnf = dir.join("client.cnf");
    std::fs::write(
        &cnf,
        format!("[client]\nuser={user}\npassword={password}\nhost={host}\nport={port}\n"),
    )
    .unwrap();
    let db = url.rsplit_once('/').unwrap().1;
    let mut cmd = Command::new(client_program());
    cmd.arg(format!("--defaults-extra-file={}", cnf.display()))
        .args([
            "--batch",
            "--skip-column-names",
            "--default-character-set=utf8mb4",
        ])
        .arg(format!("--database={db}"));
    cmd
}

/// Runs `script` in `url`'s database; returns its output rows.
fn sql(url: &str, script: &str) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let mut child = client(url, dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
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

    fn name(&mut self, prefix: &str) -> String {
        let name = unique(prefix);
        self.names.push(name.clone());
        name
    }

    /// Creates a new database; returns its name and URL.
    fn create(&mut self, prefix: &str) -> (String, String) {
        let name = self.name(prefix);
        sql(&self.admin_url, &format!("CREATE DATABASE `{name}`;"));
        (name.clone(), with_db(&self.admin_url, &name))
    }
}

impl Drop for Dbs {
    fn drop(&mut self) {
        let script = self
            .names
            .iter()
            .flat_map(|name| {
                ["", "__backupkit_restore", "__backupkit_old"].map(|s| format!("{name}{s}"))
            })
            .map(|n| format!("DROP DATABASE IF EXISTS `{n}`;"))
            .collect::<Vec<_>>()
            .join("\n");
        let dir = tempfile::tempdir().unwrap();
        if let Ok(mut child) = client(&self.admin_url, dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        {
            let _ = child.stdin.take().unwrap().write_all(script.as_bytes());
            let _ = child.wait();
        }
    }
}

fn db_exists(admin_url: &str, name: &str) -> bool {
    !sql(
        admin_url,
        &format!("SELECT 1 FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = '{name}';"),
    )
    .is_empty()
}

fn dump(url: &str) -> (Vec<u8>, RowCounts) {
    let source = MysqlSource::new(url).unwrap();
    let mut out = Vec::new();
    let counts = source.dump(&mut out, &Cancel::new()).unwrap();
    (out, counts)
}

fn counts(pairs: &[(&str, u64)]) -> RowCounts {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
}

const LAB_SCHEMA: &str = r"
    CREATE TABLE measurements (id int AUTO_INCREMENT PRIMARY KEY, sample varchar(64) NOT NULL,
        value double, raw blob, note text) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
    CREATE INDEX measurements_sample ON measurements (sample);
    CREATE TABLE `Odd ``Name```(k varchar(32), v int) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
    CREATE TABLE `empty` (x int) ENGINE=InnoDB;
    INSERT INTO measurements (sample, value, raw, note)
        SELECT CONCAT('s', seq % 97), seq * 0.5, UNHEX(CONCAT(MD5(seq), '00ff')),
               CONCAT('it''s (', seq, ') \\ \n \'),(\' ', seq)
        FROM seq_1_to_5000;
    INSERT INTO measurements (sample, value, raw, note) VALUES
        ('nulls', NULL, NULL, NULL), ('quote''s', -1, '', 'x\'y\\z\r\n\t\0 ;');
    INSERT INTO `Odd ``Name``` SELECT CONCAT('k', seq), seq FROM seq_1_to_37;
";

const LAB_QUERIES: [&str; 2] = [
    "SELECT id, sample, value, HEX(raw), HEX(note) FROM measurements ORDER BY id",
    "SELECT k, v FROM `Odd ``Name``` ORDER BY k",
];

fn lab_counts() -> RowCounts {
    counts(&[("Odd `Name`", 37), ("empty", 0), ("measurements", 5002)])
}

#[test]
fn round_trip_keeps_tables_rows_indexes_and_bytes() {
    let Some(url) = server_url("round_trip") else {
        return;
    };
    let mut dbs = Dbs::new(&url);
    let (_, src_url) = dbs.create("rt_src");
    sql(&src_url, LAB_SCHEMA);

    let (dumped, counted) = dump(&src_url);
    assert_eq!(counted, lab_counts());
    let text = String::from_utf8(dumped.clone()).unwrap();
    assert!(
        text.contains("INSERT INTO `measurements` VALUES"),
        "{}",
        &text[..200]
    );

    let dst_name = dbs.name("rt_dst");
    let dst_url = with_db(&url, &dst_name);
    let target = MysqlTarget::new(&dst_url).unwrap();
    assert!(!target.exists().unwrap());
    target
        .load(&mut &dumped[..], false, &Cancel::new())
        .unwrap();
    assert!(target.exists().unwrap());
    assert!(!db_exists(&url, &format!("{dst_name}__backupkit_restore")));
    assert_eq!(target.verify().unwrap(), lab_counts());

    for q in LAB_QUERIES {
        assert_eq!(sql(&src_url, q), sql(&dst_url, q), "{q}");
    }
    let mut index = sql(
        &dst_url,
        "SELECT DISTINCT INDEX_NAME FROM information_schema.STATISTICS \
         WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'measurements' ORDER BY 1",
    );
    index.sort();
    assert_eq!(index, vec!["PRIMARY", "measurements_sample"]);
    // The auto-increment goes on where it was.
    let next = "SELECT AUTO_INCREMENT FROM information_schema.TABLES \
                WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'measurements'";
    assert_eq!(sql(&src_url, next), sql(&dst_url, next));

    // Replacing puts the dumped content back over a changed database.
    sql(
        &dst_url,
        "DELETE FROM `Odd ``Name```; DROP TABLE `empty`; CREATE TABLE extra (x int);",
    );
    target.load(&mut &dumped[..], true, &Cancel::new()).unwrap();
    assert_eq!(target.verify().unwrap(), lab_counts());
    assert!(!db_exists(&url, &format!("{dst_name}__backupkit_old")));
    assert!(!db_exists(&url, &format!("{dst_name}__backupkit_restore")));
}

#[test]
fn dumps_are_consistent_while_a_writer_commits() {
    let Some(url) = server_url("consistency") else {
        return;
    };
    let mut dbs = Dbs::new(&url);
    let (_, src_url) = dbs.create("cons_src");
    sql(
        &src_url,
        "CREATE TABLE a (v bigint NOT NULL) ENGINE=InnoDB;
         CREATE TABLE b (v bigint NOT NULL) ENGINE=InnoDB;
         INSERT INTO a SELECT seq FROM seq_1_to_2000;
         INSERT INTO b SELECT seq FROM seq_1_to_2000;",
    );

    let stop = Arc::new(AtomicBool::new(false));
    let commits = Arc::new(AtomicU64::new(0));
    let writer = {
        let (stop, commits, url) = (stop.clone(), commits.clone(), src_url.clone());
        thread::spawn(move || {
            let dir = tempfile::tempdir().unwrap();
            let mut child = client(&url, dir.path())
                .arg("--unbuffered")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .unwrap();
            let mut stdin = child.stdin.take().unwrap();
            let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
            let mut v = 10_000i64;
            while !stop.load(Ordering::Relaxed) {
                // A pause between the two inserts, so a dump that read a and
                // b at different moments would see them differ.
                writeln!(
                    stdin,
                    "START TRANSACTION; INSERT INTO a VALUES ({v}); DO SLEEP(0.0002); \
                     INSERT INTO b VALUES ({v}); COMMIT; SELECT {v};"
                )
                .unwrap();
                stdin.flush().unwrap();
                let line = lines.next().unwrap().unwrap();
                assert_eq!(line, v.to_string());
                commits.fetch_add(1, Ordering::Relaxed);
                v += 1;
            }
            drop(stdin);
            assert!(child.wait().unwrap().success());
        })
    };
    while commits.load(Ordering::Relaxed) < 20 {
        thread::sleep(Duration::from_millis(5));
    }

    let mut seen = Vec::new();
    for round in 0..3 {
        let before = commits.load(Ordering::Relaxed);
        let (dumped, counted) = dump(&src_url);
        let dst_name = dbs.name(&format!("cons_dst{round}"));
        let dst_url = with_db(&url, &dst_name);
        let target = MysqlTarget::new(&dst_url).unwrap();
        target
            .load(&mut &dumped[..], false, &Cancel::new())
            .unwrap();
        let restored = target.verify().unwrap();
        assert_eq!(restored, counted, "round {round}");
        assert_eq!(counted["a"], counted["b"], "round {round}");
        let sums = sql(
            &dst_url,
            "SELECT (SELECT SUM(v) FROM a), (SELECT SUM(v) FROM b)",
        );
        let (sa, sb) = sums[0].split_once('\t').unwrap();
        assert_eq!(sa, sb, "round {round}");
        seen.push((before, counted["a"]));
        let now = commits.load(Ordering::Relaxed);
        while commits.load(Ordering::Relaxed) < now + 10 {
            thread::sleep(Duration::from_millis(2));
        }
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    assert!(
        seen.windows(2).all(|w| w[1].1 > w[0].1),
        "writer made no progress between dumps: {seen:?}"
    );
    assert!(seen[0].1 >= 2000 + seen[0].0, "{seen:?}");
}

#[test]
fn a_server_that_is_down_is_named() {
    // Needs no server, only the client tools: a port nothing listens on.
    if Command::new(client_program())
        .arg("--version")
        .output()
        .is_err()
    {
        assert!(
            std::env::var("BACKUPKIT_REQUIRE_SERVICES").as_deref() != Ok("1"),
            "server_down: no mariadb client and BACKUPKIT_REQUIRE_SERVICES=1"
        );
        eprintln!("SKIPPED server_down: the MariaDB client tools are not installed");
        return;
    }
    let port = super::free_port();
    let url = format!("mysql://lab:down-secret-42@127.0.0.1:{port}/results");
    super::a_down_server_is_one_line(
        &MysqlSource::new(&url).unwrap(),
        &MysqlTarget::new(&url).unwrap(),
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
        &MysqlSource::new(&bad).unwrap(),
        &MysqlTarget::new(&bad).unwrap(),
        wrong,
    );
}

#[test]
fn a_missing_dump_tool_or_client_says_what_to_install() {
    let Some(url) = server_url("missing_tools") else {
        return;
    };
    let mut dbs = Dbs::new(&url);
    let (_, src_url) = dbs.create("missing");
    let empty = tempfile::tempdir().unwrap();
    let source = MysqlSource::new(&src_url)
        .unwrap()
        .with_dump_tool(empty.path().join("mariadb-dump"));
    let err = source.dump(&mut Vec::new(), &Cancel::new()).unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
    let err = err.to_string();
    assert!(
        err.contains("mariadb-dump") && err.contains("mariadb-client"),
        "{err}"
    );

    let dst = dbs.name("missing_dst");
    let target = MysqlTarget::new(&with_db(&url, &dst))
        .unwrap()
        .with_client(empty.path().join("mariadb"));
    let err = target
        .load(&mut &b"SELECT 1;"[..], false, &Cancel::new())
        .unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
    assert!(err.to_string().contains("mariadb-client"), "{err}");
    assert!(!db_exists(&url, &dst));
    assert!(!db_exists(&url, &format!("{dst}__backupkit_restore")));
}

/// A stand-in dump tool in `dir` running `body` and exiting 1.
#[cfg(unix)]
fn fake_tool(dir: &Path, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("mariadb-dump");
    std::fs::write(&path, format!("#!/bin/sh\n{body}\nexit 1\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[cfg(unix)]
#[test]
fn dump_failures_are_one_clear_line_without_the_password() {
    let Some(url) = server_url("dump_failures") else {
        return;
    };
    let password = password_of(&url);
    let mut dbs = Dbs::new(&url);
    let (_, src_url) = dbs.create("fail");
    let dir = tempfile::tempdir().unwrap();
    // The script echoes its arguments and the defaults file, which holds the
    // password: only the scrubbed form may show.
    let leaky = fake_tool(
        dir.path(),
        "echo \"mariadb-dump: Got error: args: $*\" >&2\n\
         f=${1#--defaults-file=}\n\
         echo \"mode: $(stat -c %a \"$f\") env: ${MYSQL_PWD:-no MYSQL_PWD}\" >&2\n\
         grep password \"$f\" >&2",
    );
    let err = MysqlSource::new(&src_url)
        .unwrap()
        .with_dump_tool(&leaky)
        .dump(&mut Vec::new(), &Cancel::new())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("failed") && err.contains("exit status 1"),
        "{err}"
    );
    assert!(err.contains("args: --defaults-file="), "{err}");
    assert!(err.contains("--single-transaction"), "{err}");
    assert!(err.contains("mode: 600 env: no MYSQL_PWD"), "{err}");
    assert!(err.contains("password=\"***\""), "{err}");
    assert!(!err.contains(&password), "{err}");
    assert!(!err.contains('\n'), "{err}");
    let leftovers: Vec<_> = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(&format!("backupkit-mycnf-{}-", std::process::id()))
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
    sql(
        &src_url,
        "CREATE TABLE t (v text); INSERT INTO t VALUES ('new'), ('new');",
    );
    let (dumped, _) = dump(&src_url);
    let (dst_name, dst_url) = dbs.create("ex_dst");
    sql(
        &dst_url,
        "CREATE TABLE keep (v text); INSERT INTO keep VALUES ('old');",
    );
    let target = MysqlTarget::new(&dst_url).unwrap();
    assert!(target.exists().unwrap());

    let err = target
        .load(&mut &dumped[..], false, &Cancel::new())
        .unwrap_err();
    assert!(matches!(err, Error::AlreadyExists { .. }), "{err}");
    let expected_old = counts(&[("keep", 1)]);
    assert_eq!(target.verify().unwrap(), expected_old);

    // A dump that fails halfway, even with replace: the old database stays.
    let bad = b"CREATE TABLE half (v int);\nINSERT INTO half VALUES (1);\nCREATE TABLE broken (;\n";
    let err = target
        .load(&mut &bad[..], true, &Cancel::new())
        .unwrap_err()
        .to_string();
    assert!(err.contains("could not load the dump"), "{err}");
    assert!(err.contains("syntax"), "{err}");
    assert!(!err.contains(&password_of(&url)), "{err}");
    assert!(!err.contains('\n'), "{err}");
    assert_eq!(target.verify().unwrap(), expected_old);
    assert!(!db_exists(&url, &format!("{dst_name}__backupkit_restore")));

    // A dump the caller refuses once it is staged (its row counts differ
    // from those recorded): the old tables stay, no staging is left.
    let refuse = |c: &RowCounts| {
        assert_eq!(c, &counts(&[("t", 2)]), "accept sees the staged counts");
        Err(Error::Integrity {
            snapshot: "s".into(),
            detail: "row counts differ".into(),
        })
    };
    let err = target
        .load_verified(&mut &dumped[..], true, &refuse, &Cancel::new())
        .unwrap_err();
    assert!(matches!(err, Error::Integrity { .. }), "{err}");
    assert_eq!(target.verify().unwrap(), expected_old);
    assert!(!db_exists(&url, &format!("{dst_name}__backupkit_restore")));
    // On a new target nothing appears.
    let fresh_name = format!("{dst_name}_fresh");
    let fresh = MysqlTarget::new(&dst_url.replace(&dst_name, &fresh_name)).unwrap();
    fresh
        .load_verified(&mut &dumped[..], false, &refuse, &Cancel::new())
        .unwrap_err();
    assert!(!db_exists(&url, &fresh_name));
    assert!(!db_exists(
        &url,
        &format!("{fresh_name}__backupkit_restore")
    ));

    // With replace it takes the dump.
    target.load(&mut &dumped[..], true, &Cancel::new()).unwrap();
    assert_eq!(target.verify().unwrap(), counts(&[("t", 2)]));
}

#[test]
fn urls_and_descriptions_never_show_the_password() {
    let url = "mariadb://lab:Sup3r-Secret@db.example:3307/results";
    let mut registry = Registry::new();
    backup_db::register(&mut registry);
    let source = registry.database_source(url).unwrap();
    assert_eq!(source.engine(), "mysql");
    assert_eq!(source.dump_name(), "results.sql");
    assert_eq!(source.describe(), "mysql://lab:***@db.example:3307/results");
    let target = registry
        .database_target("mysql://lab:Sup3r-Secret@db.example/results")
        .unwrap();
    assert_eq!(target.describe(), "mysql://lab:***@db.example:3306/results");
    assert!(!format!("{source:?} {target:?}").contains("Sup3r"));
    let err = registry
        .database_source("mysql://lab:Sup3r-Secret@db.example:xx/results")
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
    sql(&src_url, LAB_SCHEMA);

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
    assert_eq!(info.engine, "mysql");
    assert_eq!(info.dump_name, format!("{src_name}.sql"));
    assert_eq!(meta.files_included, vec![format!("{src_name}.sql.gz")]);
    assert_eq!(info.tables, lab_counts());
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
    for q in LAB_QUERIES {
        assert_eq!(sql(&src_url, q), sql(&dst_url, q), "{q}");
    }
    let err = repo
        .restore_database(&meta.id, &dst_url, false, &NoProgress, &Cancel::new())
        .unwrap_err();
    assert!(matches!(err, Error::DatabaseExists { .. }), "{err}");
    assert!(!err.to_string().contains(&password));
}

#[test]
fn views_triggers_routines_and_events_come_back() {
    let Some(url) = server_url("objects") else {
        return;
    };
    let mut dbs = Dbs::new(&url);
    let (_, src_url) = dbs.create("obj_src");
    sql(
        &src_url,
        "CREATE TABLE e (x int) ENGINE=InnoDB;
         CREATE TABLE log (n int) ENGINE=InnoDB;
         INSERT INTO e VALUES (1), (2);
         CREATE VIEW v AS SELECT x FROM e;
         CREATE VIEW `v 2` AS SELECT x * 2 AS y FROM v;
         CREATE TRIGGER tr BEFORE INSERT ON e FOR EACH ROW SET NEW.x = NEW.x + 100;
         CREATE TRIGGER tr_log AFTER INSERT ON e FOR EACH ROW INSERT INTO log VALUES (NEW.x);
         DELIMITER //
         CREATE PROCEDURE p(IN n int) BEGIN INSERT INTO e VALUES (n); INSERT INTO log VALUES (-n); END //
         CREATE FUNCTION f() RETURNS int READS SQL DATA RETURN (SELECT COUNT(*) FROM e) //
         DELIMITER ;
         CREATE EVENT ev ON SCHEDULE EVERY 1 DAY DISABLE DO DELETE FROM log;",
    );
    let (dumped, counted) = dump(&src_url);
    // Procedure bodies and triggers hold INSERTs: only the data counts.
    assert_eq!(counted, counts(&[("e", 2), ("log", 0)]));

    let objects = "SELECT CONCAT('view ', TABLE_NAME) FROM information_schema.VIEWS WHERE TABLE_SCHEMA = DATABASE()
         UNION ALL SELECT CONCAT('trigger ', TRIGGER_NAME) FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = DATABASE()
         UNION ALL SELECT CONCAT('routine ', ROUTINE_NAME) FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = DATABASE()
         UNION ALL SELECT CONCAT('event ', EVENT_NAME) FROM information_schema.EVENTS WHERE EVENT_SCHEMA = DATABASE()
         ORDER BY 1";
    let behaviour =
        "CALL p(5); SELECT * FROM `v 2` ORDER BY y; SELECT f(); SELECT n FROM log ORDER BY n;";

    // Into a new database, then over one that has its own triggers and views.
    let (dst_name, dst_url) = dbs.create("obj_dst");
    sql(
        &dst_url,
        "CREATE TABLE old (x int); CREATE TABLE e (z int);
         CREATE TRIGGER old_tr BEFORE INSERT ON old FOR EACH ROW SET NEW.x = 1;
         CREATE VIEW old_v AS SELECT x FROM old;
         CREATE PROCEDURE old_p() SELECT 1;",
    );
    let target = MysqlTarget::new(&dst_url).unwrap();
    target.load(&mut &dumped[..], true, &Cancel::new()).unwrap();
    assert_eq!(target.verify().unwrap(), counted);
    assert_eq!(sql(&src_url, objects), sql(&dst_url, objects));
    assert!(!db_exists(&url, &format!("{dst_name}__backupkit_old")));
    assert!(!db_exists(&url, &format!("{dst_name}__backupkit_restore")));
    let fresh = dbs.name("obj_new");
    let fresh_url = with_db(&url, &fresh);
    MysqlTarget::new(&fresh_url)
        .unwrap()
        .load(&mut &dumped[..], false, &Cancel::new())
        .unwrap();
    assert_eq!(sql(&src_url, objects), sql(&fresh_url, objects));
    let expected = sql(&src_url, behaviour);
    assert_eq!(expected, vec!["2", "4", "210", "3", "-5", "105"]);
    assert_eq!(sql(&dst_url, behaviour), expected);
    assert_eq!(sql(&fresh_url, behaviour), expected);
}

/// Seed 003's import lookups against a MariaDB record (quoted literals:
/// the client binds nothing).
#[test]
fn import_queries_are_answered_with_quoted_values() {
    let Some(url) = server_url("import_queries") else {
        return;
    };
    let mut dbs = Dbs::new(&url);
    let (_, db_url) = dbs.create("imports");
    sql(&db_url, super::IMPORT_SCHEMA);
    super::import_queries_answer(&MysqlSource::new(&db_url).unwrap());
}
