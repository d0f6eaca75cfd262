//! Dumping a live PostgreSQL database with `pg_dump`.

use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::process::Stdio;

use backup_core::database::{DatabaseSource, RowCounts};
use backup_core::{Cancel, Error, Result};
use postgres::IsolationLevel;

use super::{CHUNK, PgUrl, backend, collect_stderr, exit_text, first_lines, kill, row_counts};

/// A PostgreSQL database to dump while clients keep using it.
///
/// [`dump`](DatabaseSource::dump) opens one `REPEATABLE READ` transaction,
/// exports its snapshot, counts the rows of every user table in it, and runs
/// `pg_dump --snapshot` on that same snapshot while the transaction stays
/// open: the plain-SQL dump (streamed from `pg_dump`'s stdout, never stored
/// whole) and the counts describe one instant. The dump restores with
/// `psql` (`gunzip -c app.sql.gz | psql app`). Needs `pg_dump` of the
/// server's major version or newer.
#[derive(Debug)]
pub struct PostgresSource {
    url: PgUrl,
    pg_dump: PathBuf,
}

impl PostgresSource {
    /// A source for `postgres://user[:password]@host[:port]/dbname` (or
    /// `postgresql://`); parts left out come from the `PG*` environment
    /// variables. Connects to nothing yet.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] for a URL that is not one of these.
    pub fn new(url: &str) -> Result<Self> {
        Ok(Self {
            url: PgUrl::parse(url)?,
            pg_dump: PathBuf::from("pg_dump"),
        })
    }

    /// The `pg_dump` program to run (default: `pg_dump` from `PATH`).
    #[must_use]
    pub fn with_pg_dump(mut self, program: impl Into<PathBuf>) -> Self {
        self.pg_dump = program.into();
        self
    }

    /// The database name.
    pub fn dbname(&self) -> &str {
        &self.url.dbname
    }

    /// Runs `pg_dump` on `snapshot`, streaming its stdout into `out`.
    fn run_pg_dump(&self, snapshot: &str, out: &mut dyn Write, cancel: &Cancel) -> Result<()> {
        let (mut cmd, _passfile) = self.url.command(&self.pg_dump, &self.url.dbname)?;
        cmd.args([
            "--format=plain",
            "--no-password",
            "--quote-all-identifiers",
            &format!("--snapshot={snapshot}"),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(|e| PgUrl::spawn_error(&self.pg_dump, e))?;
        let stderr = collect_stderr(&mut child);
        let mut stdout = child.stdout.take().expect("stdout is piped");
        let mut buf = vec![0u8; CHUNK];
        let streamed: Result<()> = loop {
            if let Err(e) = cancel.check() {
                break Err(e);
            }
            let n = match stdout.read(&mut buf) {
                Ok(0) => break Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => break Err(Error::io("read the output of", "pg_dump", e)),
            };
            if let Err(e) = out.write_all(&buf[..n]) {
                break Err(Error::io("write the dump of", self.describe(), e));
            }
        };
        if let Err(e) = streamed {
            kill(&mut child);
            return Err(e);
        }
        drop(stdout);
        let status = child
            .wait()
            .map_err(|e| Error::io("wait for", "pg_dump", e))?;
        let stderr = stderr.and_then(|h| h.join().ok()).unwrap_or_default();
        if !status.success() {
            return Err(self.pg_dump_error(status, &stderr));
        }
        out.flush()
            .map_err(|e| Error::io("write the dump of", self.describe(), e))
    }

    /// One line for a failed `pg_dump`: a version mismatch says so, anything
    /// else shows the first lines it printed (password scrubbed).
    fn pg_dump_error(&self, status: std::process::ExitStatus, stderr: &[u8]) -> Error {
        let text = String::from_utf8_lossy(stderr);
        if text.contains("server version mismatch") {
            let detail = text
                .lines()
                .find(|l| l.contains("server version:"))
                .map(|l| format!(" ({})", l.trim().trim_start_matches("pg_dump: detail: ")))
                .unwrap_or_default();
            return backend(self.url.scrub(&format!(
                "pg_dump is older than the PostgreSQL server at {}{detail}: install a pg_dump of the server's major version or newer (server version mismatch)",
                self.url.server()
            )));
        }
        backend(self.url.scrub(&format!(
            "pg_dump of {} failed ({}): {}",
            self.describe(),
            exit_text(status),
            first_lines(stderr, 3)
        )))
    }
}

impl DatabaseSource for PostgresSource {
    fn engine(&self) -> &'static str {
        "postgres"
    }

    fn describe(&self) -> String {
        self.url.describe()
    }

    fn dump_name(&self) -> String {
        crate::tool::sql_dump_name(&self.url.dbname)
    }

    fn finds(&self, sql: &str, values: &[String]) -> Result<bool> {
        let mut client = self.url.connect(&self.url.dbname)?;
        client
            .batch_execute("SET statement_timeout = 30000")
            .map_err(|e| self.url.error("cannot set a statement timeout", &e))?;
        let params: Vec<&(dyn postgres::types::ToSql + Sync)> = values
            .iter()
            .map(|v| v as &(dyn postgres::types::ToSql + Sync))
            .collect();
        let rows = client
            .query(sql, &params)
            .map_err(|e| self.url.error("the query failed", &e))?;
        Ok(!rows.is_empty())
    }

    fn placeholder(&self, n: usize) -> Option<String> {
        Some(format!("${n}"))
    }

    fn dump(&self, out: &mut dyn Write, cancel: &Cancel) -> Result<RowCounts> {
        cancel.check()?;
        // Fail on a missing pg_dump before connecting (a clearer first error).
        if self.pg_dump.components().count() > 1 && !self.pg_dump.exists() {
            return Err(PgUrl::spawn_error(
                &self.pg_dump,
                io::Error::from(io::ErrorKind::NotFound),
            ));
        }
        let mut client = self.url.connect(&self.url.dbname)?;
        let what = self.describe();
        let mut tx = client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .map_err(|e| {
                self.url
                    .error(&format!("cannot start a transaction on {what}"), &e)
            })?;
        let snapshot: String = tx
            .query_one("SELECT pg_catalog.pg_export_snapshot()", &[])
            .map_err(|e| {
                self.url
                    .error(&format!("cannot export a snapshot of {what}"), &e)
            })?
            .get(0);
        let counts = row_counts(&mut tx).map_err(|e| {
            self.url
                .error(&format!("cannot count the rows of {what}"), &e)
        })?;
        self.run_pg_dump(&snapshot, out, cancel)?;
        tx.commit().map_err(|e| {
            self.url
                .error(&format!("cannot end the snapshot of {what}"), &e)
        })?;
        Ok(counts)
    }
}
