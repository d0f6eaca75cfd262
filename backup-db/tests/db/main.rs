//! backup-db's integration tests, one binary: each engine's module runs
//! when its feature is on. SQLite needs nothing; PostgreSQL and MariaDB run
//! against real servers (`scripts/services.sh` starts throwaway ones and
//! exports their URLs). Without a server its tests are skipped with the
//! reason printed, unless `BACKUPKIT_REQUIRE_SERVICES=1`, which makes them
//! fail.

#[cfg(feature = "mysql")]
mod mysql;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "sqlite")]
mod sqlite;

/// The URL in `var` for a test of `engine`'s server; `None` (after saying
/// why) when there is none and services are not required.
#[cfg(any(feature = "postgres", feature = "mysql"))]
fn server_url(var: &str, engine: &str, test: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(
                std::env::var("BACKUPKIT_REQUIRE_SERVICES").as_deref() != Ok("1"),
                "{test}: {var} is not set and BACKUPKIT_REQUIRE_SERVICES=1 \
                 (start a server with scripts/services.sh)"
            );
            eprintln!(
                "SKIPPED {test}: {var} is not set (run the tests through scripts/services.sh \
                 to start a throwaway {engine})"
            );
            None
        }
    }
}

/// `url` naming database `db` instead.
#[cfg(any(feature = "postgres", feature = "mysql"))]
fn with_db(url: &str, db: &str) -> String {
    let (base, _) = url.rsplit_once('/').expect("URL has a database");
    format!("{base}/{db}")
}

/// `url` with another password.
#[cfg(any(feature = "postgres", feature = "mysql"))]
fn with_password(url: &str, password: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap();
    let (auth, host) = rest.split_once('@').unwrap();
    let user = auth.split_once(':').map_or(auth, |(u, _)| u);
    format!("{scheme}://{user}:{password}@{host}")
}

/// A database name no other test (or test process) uses.
#[cfg(any(feature = "postgres", feature = "mysql"))]
fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "bk_{prefix}_{}_{}_{nanos:x}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A port nothing listens on.
#[cfg(any(feature = "postgres", feature = "mysql"))]
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// A server that is down is named (address and port) in one line, from
/// the source and the target alike, and the password is never shown.
#[cfg(any(feature = "postgres", feature = "mysql"))]
fn a_down_server_is_one_line(
    source: &dyn backup_core::database::DatabaseSource,
    target: &dyn backup_core::database::DatabaseTarget,
    port: u16,
    password: &str,
) {
    let err = source
        .dump(&mut Vec::new(), &backup_core::Cancel::new())
        .unwrap_err()
        .to_string();
    assert!(err.contains("connection refused"), "{err}");
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    assert!(!err.contains(password), "{err}");
    assert!(!err.contains('\n'), "{err}");
    let err = target.exists().unwrap_err().to_string();
    assert!(err.contains("connection refused"), "{err}");
    assert!(!err.contains(password), "{err}");
}

/// A wrong password fails the dump, the existence check and the
/// verification with "authentication failed", and is never shown.
#[cfg(any(feature = "postgres", feature = "mysql"))]
fn a_wrong_password_is_refused(
    source: &dyn backup_core::database::DatabaseSource,
    target: &dyn backup_core::database::DatabaseTarget,
    wrong: &str,
) {
    let err = source
        .dump(&mut Vec::new(), &backup_core::Cancel::new())
        .unwrap_err()
        .to_string();
    assert!(err.contains("authentication failed"), "{err}");
    assert!(!err.contains(wrong), "{err}");
    assert!(!source.describe().contains(wrong));
    for result in [target.exists().map(|_| ()), target.verify().map(|_| ())] {
        let err = result.unwrap_err().to_string();
        assert!(err.contains("authentication failed"), "{err}");
        assert!(!err.contains(wrong), "{err}");
    }
}

/// Seed 003's import record, shaped as its `DataJoint` tables: p001's
/// session is fully imported, m12's lacks its multi-camera recording.
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
const IMPORT_SCHEMA: &str = "
CREATE TABLE subject (participant_id VARCHAR(32) PRIMARY KEY);
CREATE TABLE session (participant_id VARCHAR(32), session_date VARCHAR(10));
CREATE TABLE recording (participant_id VARCHAR(32), session_date VARCHAR(10), recording_id INT);
CREATE TABLE multi_camera_recording (participant_id VARCHAR(32), session_date VARCHAR(10));
CREATE TABLE single_camera_video (participant_id VARCHAR(32), session_date VARCHAR(10), camera INT);
INSERT INTO subject VALUES ('p001'), ('m12');
INSERT INTO session VALUES ('p001', '20250104'), ('m12', '20250120');
INSERT INTO recording VALUES ('p001', '20250104', 1), ('m12', '20250120', 1);
INSERT INTO multi_camera_recording VALUES ('p001', '20250104');
INSERT INTO single_camera_video VALUES ('p001', '20250104', 0), ('p001', '20250104', 1);
";

/// The five lookups seed 003 makes, one per table.
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
const IMPORT_QUERIES: [&str; 5] = [
    "SELECT 1 FROM subject WHERE participant_id = :participant_id",
    "SELECT 1 FROM session WHERE participant_id = :participant_id AND session_date = :session_date",
    "SELECT 1 FROM recording WHERE participant_id = :participant_id AND session_date = :session_date",
    "SELECT 1 FROM multi_camera_recording WHERE participant_id = :participant_id AND session_date = :session_date",
    "SELECT 1 FROM single_camera_video WHERE participant_id = :participant_id AND session_date = :session_date",
];

/// Asks `db` (holding [`IMPORT_SCHEMA`]) the seed's questions: p001 is
/// found by every query, m12 not by the multi-camera one, and a value
/// that tries to inject SQL finds nothing and breaks nothing.
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
fn import_queries_answer(db: &dyn backup_core::database::DatabaseSource) {
    use backup_core::database::finds;
    let vars = |p: &str, d: &str| -> std::collections::BTreeMap<String, String> {
        [("participant_id", p), ("session_date", d)]
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    };
    let all = |p: &str, d: &str| -> Vec<bool> {
        IMPORT_QUERIES
            .iter()
            .map(|q| finds(db, q, &vars(p, d)).unwrap())
            .collect()
    };
    assert_eq!(all("p001", "20250104"), [true; 5]);
    assert_eq!(all("m12", "20250120"), [true, true, true, false, false]);
    assert_eq!(all("x' OR '1'='1", "20250104"), [false; 5]);
    let e = finds(
        db,
        "SELECT 1 FROM subject WHERE x = :camera",
        &vars("p001", "d"),
    );
    assert!(e.unwrap_err().to_string().contains(":camera"));
    let e = finds(db, "SELECT 1 FROM no_such_table", &vars("p001", "d"));
    assert!(e.is_err());
}
