//! Dumping a live MariaDB/MySQL database with `mariadb-dump`.

use std::io::{self, Read, Write};
use std::path::PathBuf;

use backup_core::database::{DatabaseSource, RowCounts};
use backup_core::{Cancel, Error, Result};

use super::scan::TupleCounter;
use super::{CHUNK, DUMP_TOOLS, MyUrl, collect_stderr, kill, programs, spawn_error};

/// A MariaDB or MySQL database to dump while clients keep using it.
///
/// [`dump`](DatabaseSource::dump) runs `mariadb-dump --single-transaction`
/// (`mysqldump` when there is no `mariadb-dump`): one consistent-snapshot
/// transaction for `InnoDB` tables, streamed from its stdout (never stored
/// whole). The row counts come from that same stream: each `INSERT` tuple is
/// counted as it passes, so they describe exactly what was dumped, with no
/// second snapshot. The dump restores with the `mariadb` client
/// (`gunzip -c app.sql.gz | mariadb app`). Tables of engines without
/// transactions (`MyISAM`) are read as they are at the moment they are dumped.
#[derive(Debug)]
pub struct MysqlSource {
    url: MyUrl,
    dump_tool: Option<PathBuf>,
}

impl MysqlSource {
    /// A source for `mysql://user[:password]@host[:port]/dbname` (or
    /// `mariadb://`). Connects to nothing yet.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] for a URL that is not one of these.
    pub fn new(url: &str) -> Result<Self> {
        Ok(Self {
            url: MyUrl::parse(url)?,
            dump_tool: None,
        })
    }

    /// The dump program to run (default: `mariadb-dump`, else `mysqldump`,
    /// from `PATH`).
    #[must_use]
    pub fn with_dump_tool(mut self, program: impl Into<PathBuf>) -> Self {
        self.dump_tool = Some(program.into());
        self
    }

    /// The database name.
    pub fn dbname(&self) -> &str {
        &self.url.dbname
    }
}

impl DatabaseSource for MysqlSource {
    fn engine(&self) -> &'static str {
        "mysql"
    }

    fn describe(&self) -> String {
        self.url.describe()
    }

    fn dump_name(&self) -> String {
        crate::tool::sql_dump_name(&self.url.dbname)
    }

    fn finds(&self, sql: &str, values: &[String]) -> Result<bool> {
        // The client binds nothing: the values arrive as quoted literals
        // (`literal`), which `placeholders` put in place of `:name`.
        let _ = values;
        let rows = self.url.query(
            &programs(None, super::CLIENTS),
            Some(&self.url.dbname),
            &format!("{};\n", sql.trim_end().trim_end_matches(';')),
        )?;
        Ok(!rows.is_empty())
    }

    fn placeholder(&self, _n: usize) -> Option<String> {
        None
    }

    fn literal(&self, value: &str) -> String {
        super::quote_str(value)
    }

    fn dump(&self, out: &mut dyn Write, cancel: &Cancel) -> Result<RowCounts> {
        cancel.check()?;
        let tools = programs(self.dump_tool.as_deref(), DUMP_TOOLS);
        if let Some(tool) = &self.dump_tool
            && tool.components().count() > 1
            && !tool.exists()
        {
            return Err(spawn_error(
                &tools,
                io::Error::from(io::ErrorKind::NotFound),
            ));
        }
        let args: Vec<String> = [
            "--single-transaction",
            "--routines",
            "--triggers",
            "--events",
            "--hex-blob",
            "--default-character-set=utf8mb4",
            "--",
            &self.url.dbname,
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        let (mut child, program, _defaults) = self.url.spawn(&tools, &args, false, true)?;
        let tool = program.display().to_string();
        let stderr = collect_stderr(&mut child);
        let mut stdout = child.stdout.take().expect("stdout is piped");
        let mut counter = TupleCounter::new();
        let mut buf = vec![0u8; CHUNK];
        let streamed: Result<()> = loop {
            if let Err(e) = cancel.check() {
                break Err(e);
            }
            let n = match stdout.read(&mut buf) {
                Ok(0) => break Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => break Err(Error::io("read the output of", tool.clone(), e)),
            };
            counter.feed(&buf[..n]);
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
            .map_err(|e| Error::io("wait for", tool.clone(), e))?;
        let stderr = stderr.and_then(|h| h.join().ok()).unwrap_or_default();
        if !status.success() {
            return Err(self.url.tool_error(
                &format!("{tool} of {} failed", self.describe()),
                status,
                &stderr,
            ));
        }
        out.flush()
            .map_err(|e| Error::io("write the dump of", self.describe(), e))?;
        Ok(counter.finish())
    }
}
