//! PostgreSQL: the source runs `pg_dump` on a snapshot exported by one
//! repeatable-read transaction, which also counts the rows; the target loads
//! the SQL with `psql` into a database built aside, then renames it into
//! place. Helpers shared by both live here.
//!
//! Passwords reach `pg_dump` and `psql` only through a private temporary
//! passfile (`PGPASSFILE`): never in argv, the environment, messages or
//! metadata.

mod source;
mod target;

use std::io;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::tool::{SecretFile, UrlParts, collect_stderr, display_url, exit_text, kill, split_url};
use backup_core::database::RowCounts;
use backup_core::{Error, Result};
use postgres::error::SqlState;
use postgres::{Client, GenericClient, NoTls};

pub use source::PostgresSource;
pub use target::PostgresTarget;

const BACKEND: &str = "postgres";

/// Copy buffer: dumps and restores stream through this, whatever their size.
const CHUNK: usize = 256 * 1024;

/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// User tables, the same for the source and the target: every schema but
/// the system ones (and other sessions' temporary tables, which cannot be
/// read).
const TABLES_SQL: &str = "SELECT schemaname::text, tablename::text FROM pg_catalog.pg_tables \
     WHERE schemaname NOT IN ('pg_catalog', 'information_schema') \
     AND schemaname NOT LIKE 'pg\\_temp\\_%' AND schemaname NOT LIKE 'pg\\_toast%' \
     ORDER BY 1, 2";

/// Where a PostgreSQL database is, parsed from
/// `postgres://user[:password]@host[:port]/dbname` (or `postgresql://`);
/// parts the URL leaves out come from `PGUSER`, `PGPASSWORD`, `PGHOST`,
/// `PGPORT` and `PGDATABASE`, then libpq's defaults.
#[derive(Clone)]
struct PgUrl {
    user: String,
    password: Option<String>,
    /// A host name or address, or a Unix socket directory (`/...`).
    host: String,
    port: u16,
    dbname: String,
}

impl std::fmt::Debug for PgUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl PgUrl {
    fn parse(url: &str) -> Result<Self> {
        let shown = backup_core::registry::redact(url);
        let invalid = |why: &str| {
            Error::InvalidInput(format!(
                "{why} in PostgreSQL URL {shown:?} (expected postgres://user[:password]@host[:port]/dbname)"
            ))
        };
        let rest = url
            .strip_prefix("postgres://")
            .or_else(|| url.strip_prefix("postgresql://"))
            .ok_or_else(|| invalid("not a postgres:// scheme"))?;
        if rest.contains('?') || rest.contains('#') {
            return Err(invalid("query parameters are not supported"));
        }
        let UrlParts {
            user,
            password,
            host,
            port,
            path,
        } = split_url(rest, &invalid)?;
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let user = user
            .filter(|u| !u.is_empty())
            .or_else(|| env("PGUSER"))
            .or_else(|| env("USER"))
            .ok_or_else(|| invalid("no user (and PGUSER is not set)"))?;
        let password = password.or_else(|| env("PGPASSWORD"));
        let host = Some(host)
            .filter(|h| !h.is_empty())
            .or_else(|| env("PGHOST"))
            .unwrap_or_else(|| "localhost".to_owned());
        let port = match port.filter(|p| !p.is_empty()).or_else(|| env("PGPORT")) {
            Some(p) => p.parse().map_err(|_| invalid("bad port"))?,
            None => 5432,
        };
        let dbname = Some(path)
            .filter(|d| !d.is_empty())
            .or_else(|| env("PGDATABASE"))
            .unwrap_or_else(|| user.clone());
        Ok(Self {
            user,
            password,
            host,
            port,
            dbname,
        })
    }

    /// The URL without its password, for messages and metadata.
    fn describe(&self) -> String {
        self.describe_db(&self.dbname)
    }

    fn describe_db(&self, dbname: &str) -> String {
        display_url(
            "postgres",
            &self.user,
            self.password.is_some(),
            &self.host,
            self.port,
            dbname,
        )
    }

    /// `host:port`, for messages.
    fn server(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// Connects to `dbname` on this server.
    fn connect(&self, dbname: &str) -> Result<Client> {
        let mut config = postgres::Config::new();
        config
            .user(&self.user)
            .dbname(dbname)
            .port(self.port)
            .connect_timeout(CONNECT_TIMEOUT)
            .application_name("backupkit");
        if self.host.starts_with('/') {
            config.host_path(&self.host);
        } else {
            config.host(&self.host);
        }
        if let Some(password) = &self.password {
            config.password(password);
        }
        config
            .connect(NoTls)
            .map_err(|e| self.error(&format!("cannot connect to database {dbname:?}"), &e))
    }

    /// One clear line for a client error: refused connections, failed
    /// authentication and missing databases are told apart; the password
    /// never shows.
    fn error(&self, context: &str, e: &postgres::Error) -> Error {
        let server = self.server();
        if let Some(db) = e.as_db_error() {
            let code = db.code();
            if *code == SqlState::INVALID_PASSWORD
                || *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
            {
                return backend(format!(
                    "authentication failed for user {:?} at {server}: {}",
                    self.user,
                    self.scrub(db.message())
                ));
            }
            if *code == SqlState::INVALID_CATALOG_NAME {
                return Error::NotFound {
                    what: "database",
                    path: self.scrub(&format!("{} ({})", self.describe(), db.message())),
                };
            }
            return backend(self.scrub(&format!("{context} at {server}: {}", db.message())));
        }
        let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
        while let Some(c) = cause {
            if let Some(io) = c.downcast_ref::<io::Error>() {
                let what = match io.kind() {
                    io::ErrorKind::ConnectionRefused => {
                        "connection refused (is the server running?)".to_owned()
                    }
                    io::ErrorKind::TimedOut => {
                        format!("no answer within {} s", CONNECT_TIMEOUT.as_secs())
                    }
                    _ => io.to_string(),
                };
                return backend(format!(
                    "cannot connect to PostgreSQL at {server}: {}",
                    self.scrub(&what)
                ));
            }
            cause = c.source();
        }
        let text = e.to_string();
        if text.contains("password missing") {
            return backend(format!(
                "authentication failed for user {:?} at {server}: the server wants a password and the URL gives none",
                self.user
            ));
        }
        backend(self.scrub(&format!("{context} at {server}: {text}")))
    }

    /// `text` with the password (if any) replaced by `***`.
    fn scrub(&self, text: &str) -> String {
        match &self.password {
            Some(p) if !p.is_empty() => text.replace(p.as_str(), "***"),
            _ => text.to_owned(),
        }
    }

    /// A `pg_dump`/`psql` command for `dbname`: connection settings in the
    /// environment (no conninfo parsing of names), the password in a private
    /// passfile that lives as long as the returned guard.
    fn command(&self, program: &Path, dbname: &str) -> Result<(Command, Option<SecretFile>)> {
        let mut cmd = Command::new(program);
        for var in [
            "PGPASSWORD",
            "PGPASSFILE",
            "PGSERVICE",
            "PGSERVICEFILE",
            "PGOPTIONS",
            "PGHOSTADDR",
        ] {
            cmd.env_remove(var);
        }
        cmd.env("PGHOST", &self.host)
            .env("PGPORT", self.port.to_string())
            .env("PGUSER", &self.user)
            .env("PGDATABASE", dbname)
            .env("PGAPPNAME", "backupkit")
            .env("PGCONNECT_TIMEOUT", CONNECT_TIMEOUT.as_secs().to_string());
        let passfile = match &self.password {
            Some(password) => {
                let file = SecretFile::create("backupkit-pgpass", "", &pass_file_line(password))?;
                cmd.env("PGPASSFILE", &file.path);
                Some(file)
            }
            None => None,
        };
        Ok((cmd, passfile))
    }

    /// Maps a failure to start `program`: a missing one says what to install.
    fn spawn_error(program: &Path, e: io::Error) -> Error {
        if e.kind() == io::ErrorKind::NotFound {
            Error::NotFound {
                what: "program",
                path: format!(
                    "{} (install the PostgreSQL client tools: apt-get install postgresql-client)",
                    program.display()
                ),
            }
        } else {
            Error::io("run", program.display().to_string(), e)
        }
    }
}

fn backend(message: impl Into<String>) -> Error {
    Error::Backend {
        backend: BACKEND.into(),
        message: message.into(),
        source: None,
    }
}

/// An SQL identifier, quoted: `odd "name"` becomes `"odd ""name"""`.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Rows of each user table (`schema.table`), read through `client` (inside
/// the caller's transaction, so one snapshot).
fn row_counts(client: &mut impl GenericClient) -> std::result::Result<RowCounts, postgres::Error> {
    let tables: Vec<(String, String)> = client
        .query(TABLES_SQL, &[])?
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    let mut counts = RowCounts::new();
    for (schema, table) in tables {
        let sql = format!(
            "SELECT count(*) FROM {}.{}",
            quote_ident(&schema),
            quote_ident(&table)
        );
        let n: i64 = client.query_one(&sql, &[])?.get(0);
        counts.insert(format!("{schema}.{table}"), n as u64);
    }
    Ok(counts)
}

/// The first few meaningful lines of a tool's stderr, as one line.
fn first_lines(stderr: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .take(max)
        .collect();
    if lines.is_empty() {
        "no error output".to_owned()
    } else {
        lines.join(" / ")
    }
}

/// A passfile line giving `password` for every host, port, database and
/// user (`:` separates fields, `\` escapes).
fn pass_file_line(password: &str) -> String {
    let escaped = password.replace('\\', "\\\\").replace(':', "\\:");
    format!("*:*:*:*:{escaped}\n")
}

#[cfg(test)]
mod tests {
    use super::PgUrl;

    #[test]
    fn urls_parse_and_never_show_the_password() {
        let u = PgUrl::parse("postgres://lab:s3%3Acret@db.example:6543/results").unwrap();
        assert_eq!(u.user, "lab");
        assert_eq!(u.password.as_deref(), Some("s3:cret"));
        assert_eq!(u.host, "db.example");
        assert_eq!(u.port, 6543);
        assert_eq!(u.dbname, "results");
        assert_eq!(u.describe(), "postgres://lab:***@db.example:6543/results");
        assert!(!format!("{u:?}").contains("s3"));

        let u = PgUrl::parse("postgresql://lab@[::1]/x").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 5432));
        assert_eq!(u.describe(), "postgres://lab@[::1]:5432/x");

        for bad in [
            "mysql://a@b/c",
            "postgres://a@b:notaport/c",
            "postgres://a@b/c?x=1",
        ] {
            let err = PgUrl::parse(bad).unwrap_err();
            assert!(matches!(err, backup_core::Error::InvalidInput(_)), "{bad}");
        }
    }
}
