//! Restoring a PostgreSQL dump with `psql`.

use std::io::Read;
use std::path::PathBuf;
use std::process::Stdio;
use std::thread;
use std::time::{Duration, Instant};

use crate::tool::feed_stdin;
use backup_core::database::{DatabaseTarget, RowCounts};
use backup_core::{Cancel, Error, Result};
use postgres::error::SqlState;
use postgres::{Client, IsolationLevel};

use super::{PgUrl, backend, collect_stderr, exit_text, first_lines, quote_ident, row_counts};

/// Suffix of the database a restore builds aside.
const RESTORE_SUFFIX: &str = "__backupkit_restore";
/// Suffix the replaced database carries while the new one takes its name.
const OLD_SUFFIX: &str = "__backupkit_old";
/// Longest identifier PostgreSQL keeps (longer ones are truncated).
const MAX_IDENT: usize = 63;
/// How long a rename or drop waits for a finished session to leave.
const IN_USE_WAIT: Duration = Duration::from_secs(5);

/// Where a PostgreSQL dump is restored: a database (the URL's), which may
/// exist.
///
/// [`load`](DatabaseTarget::load) creates `<name>__backupkit_restore`, feeds
/// the SQL to `psql -v ON_ERROR_STOP=1` there, and only when that succeeds
/// gives it the name (moving the old database aside and dropping it when
/// replacing); a failed load drops the temporary database and leaves the
/// old one as it was. Replacing needs the old database to have no sessions.
#[derive(Debug)]
pub struct PostgresTarget {
    url: PgUrl,
    psql: PathBuf,
}

impl PostgresTarget {
    /// A target for `postgres://user[:password]@host[:port]/dbname`; the
    /// database need not exist. Connects to nothing yet.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] for a URL that is not one.
    pub fn new(url: &str) -> Result<Self> {
        Ok(Self {
            url: PgUrl::parse(url)?,
            psql: PathBuf::from("psql"),
        })
    }

    /// The `psql` program to run (default: `psql` from `PATH`).
    #[must_use]
    pub fn with_psql(mut self, program: impl Into<PathBuf>) -> Self {
        self.psql = program.into();
        self
    }

    /// The database name.
    pub fn dbname(&self) -> &str {
        &self.url.dbname
    }

    /// A connection for creating, renaming and dropping databases: to a
    /// database other than the target.
    fn maintenance(&self) -> Result<Client> {
        let db = if self.url.dbname == "postgres" {
            "template1"
        } else {
            "postgres"
        };
        self.url.connect(db)
    }

    /// `name` with `suffix`, within PostgreSQL's identifier length.
    fn aside(&self, suffix: &str) -> String {
        let mut base = self.url.dbname.clone();
        while base.len() + suffix.len() > MAX_IDENT {
            base.pop();
        }
        format!("{base}{suffix}")
    }

    fn db_exists(&self, client: &mut Client, name: &str) -> Result<bool> {
        client
            .query_opt(
                "SELECT 1 FROM pg_catalog.pg_database WHERE datname = $1",
                &[&name],
            )
            .map(|row| row.is_some())
            .map_err(|e| self.url.error("cannot list databases", &e))
    }

    /// Runs a database-level statement, retrying while a session that just
    /// ended is still leaving the database.
    fn execute_waiting(&self, client: &mut Client, sql: &str, what: &str) -> Result<()> {
        let started = Instant::now();
        loop {
            match client.batch_execute(sql) {
                Ok(()) => return Ok(()),
                Err(e)
                    if e.code() == Some(&SqlState::OBJECT_IN_USE)
                        && started.elapsed() < IN_USE_WAIT =>
                {
                    thread::sleep(Duration::from_millis(100));
                }
                Err(e) => return Err(self.url.error(what, &e)),
            }
        }
    }

    fn drop_db(&self, client: &mut Client, name: &str) -> Result<()> {
        self.execute_waiting(
            client,
            &format!("DROP DATABASE IF EXISTS {}", quote_ident(name)),
            &format!("cannot drop database {name:?}"),
        )
    }

    fn rename_db(&self, client: &mut Client, from: &str, to: &str) -> Result<()> {
        self.execute_waiting(
            client,
            &format!(
                "ALTER DATABASE {} RENAME TO {}",
                quote_ident(from),
                quote_ident(to)
            ),
            &format!("cannot rename database {from:?} to {to:?}"),
        )
    }

    /// Feeds the dump into `psql` connected to `dbname`.
    fn run_psql(&self, dbname: &str, dump: &mut dyn Read, cancel: &Cancel) -> Result<()> {
        let (mut cmd, _passfile) = self.url.command(&self.psql, dbname)?;
        cmd.args([
            "--no-psqlrc",
            "--quiet",
            "--no-password",
            "--set=ON_ERROR_STOP=1",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| PgUrl::spawn_error(&self.psql, e))?;
        let stderr = collect_stderr(&mut child);
        feed_stdin(&mut child, dump, cancel, &self.describe())?;
        let status = child.wait().map_err(|e| Error::io("wait for", "psql", e))?;
        let stderr = stderr.and_then(|h| h.join().ok()).unwrap_or_default();
        if !status.success() {
            return Err(backend(self.url.scrub(&format!(
                "psql could not load the dump into {} ({}): {}",
                self.url.describe_db(dbname),
                exit_text(status),
                first_lines(&stderr, 3)
            ))));
        }
        Ok(())
    }

    /// Gives the loaded `tmp` database the target's name.
    fn install(&self, client: &mut Client, tmp: &str, replace: bool) -> Result<()> {
        let name = self.url.dbname.as_str();
        if !self.db_exists(client, name)? {
            return self.rename_db(client, tmp, name);
        }
        if !replace {
            return Err(Error::AlreadyExists {
                path: self.describe(),
            });
        }
        let old = self.aside(OLD_SUFFIX);
        self.drop_db(client, &old)?;
        self.rename_db(client, name, &old)?;
        if let Err(e) = self.rename_db(client, tmp, name) {
            let _ = self.rename_db(client, &old, name);
            return Err(e);
        }
        // The new database is in place; a failure here only leaves the old
        // one behind under its aside name.
        self.drop_db(client, &old)
    }
}

impl DatabaseTarget for PostgresTarget {
    fn describe(&self) -> String {
        self.url.describe()
    }

    fn exists(&self) -> Result<bool> {
        let mut client = self.maintenance()?;
        self.db_exists(&mut client, &self.url.dbname)
    }

    fn load_verified(
        &self,
        dump: &mut dyn Read,
        replace: bool,
        accept: &dyn Fn(&RowCounts) -> Result<()>,
        cancel: &Cancel,
    ) -> Result<RowCounts> {
        let mut client = self.maintenance()?;
        if !replace && self.db_exists(&mut client, &self.url.dbname)? {
            return Err(Error::AlreadyExists {
                path: self.describe(),
            });
        }
        cancel.check()?;
        let tmp = self.aside(RESTORE_SUFFIX);
        // Left over from an interrupted restore.
        self.drop_db(&mut client, &tmp)?;
        client
            .batch_execute(&format!(
                "CREATE DATABASE {} TEMPLATE template0",
                quote_ident(&tmp)
            ))
            .map_err(|e| {
                self.url
                    .error(&format!("cannot create database {tmp:?}"), &e)
            })?;
        // The old database keeps its name until the staged one is checked.
        let loaded = self
            .run_psql(&tmp, dump, cancel)
            .and_then(|()| cancel.check())
            .and_then(|()| self.count_rows(&tmp))
            .and_then(|counts| accept(&counts).map(|()| counts))
            .and_then(|counts| {
                self.install(&mut client, &tmp, replace)?;
                Ok(counts)
            });
        if loaded.is_err() {
            let _ = self.drop_db(&mut client, &tmp);
        }
        loaded
    }

    fn verify(&self) -> Result<RowCounts> {
        self.count_rows(&self.url.dbname)
    }
}

impl PostgresTarget {
    /// A sanity query, then rows per table, of database `dbname`.
    fn count_rows(&self, dbname: &str) -> Result<RowCounts> {
        let what = self.url.describe_db(dbname);
        let mut client = self.url.connect(dbname)?;
        let one: i32 = client
            .query_one("SELECT 1", &[])
            .map_err(|e| {
                self.url
                    .error(&format!("sanity query on {what} failed"), &e)
            })?
            .get(0);
        if one != 1 {
            return Err(Error::Integrity {
                snapshot: what,
                detail: format!("SELECT 1 returned {one}"),
            });
        }
        let mut tx = client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .map_err(|e| {
                self.url
                    .error(&format!("cannot start a transaction on {what}"), &e)
            })?;
        let counts = row_counts(&mut tx).map_err(|e| {
            self.url
                .error(&format!("cannot count the rows of {what}"), &e)
        })?;
        tx.commit().map_err(|e| {
            self.url
                .error(&format!("cannot count the rows of {what}"), &e)
        })?;
        Ok(counts)
    }
}
