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
