//! MariaDB and MySQL: the source runs `mariadb-dump --single-transaction`
//! (or `mysqldump`) and counts the rows of the dump as it streams past; the
//! target loads the SQL with the `mariadb` (or `mysql`) client into a
//! database built aside, then moves its tables into place. Helpers shared by
//! both live here.
//!
//! Credentials reach the tools only through a private temporary defaults
//! file (`--defaults-file`, mode 0600, read instead of any other option
//! file): never in argv, the
//! environment, messages or metadata.

mod scan;
mod source;
mod target;

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::{self};
use std::time::Duration;

use crate::tool::{SecretFile, UrlParts, collect_stderr, display_url, exit_text, kill, split_url};
use backup_core::{Error, Result};

pub use source::MysqlSource;
pub use target::MysqlTarget;

const BACKEND: &str = "mysql";

/// Copy buffer: dumps and restores stream through this, whatever their size.
const CHUNK: usize = 256 * 1024;

/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The dump tools tried in turn when none is configured.
const DUMP_TOOLS: &[&str] = &["mariadb-dump", "mysqldump"];
/// The SQL clients tried in turn when none is configured.
const CLIENTS: &[&str] = &["mariadb", "mysql"];

/// Where a MariaDB/MySQL database is, parsed from
/// `mysql://user[:password]@host[:port]/dbname` (or `mariadb://`).
#[derive(Clone)]
struct MyUrl {
    user: String,
    password: Option<String>,
    /// A host name or address, or a Unix socket path (`/...`, given
    /// percent-encoded).
    host: String,
    port: u16,
    dbname: String,
}

impl std::fmt::Debug for MyUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl MyUrl {
    fn parse(url: &str) -> Result<Self> {
        let shown = backup_core::registry::redact(url);
        let invalid = |why: &str| {
            Error::InvalidInput(format!(
                "{why} in MySQL URL {shown:?} (expected mysql://user[:password]@host[:port]/dbname)"
            ))
        };
        let rest = url
            .strip_prefix("mysql://")
            .or_else(|| url.strip_prefix("mariadb://"))
            .ok_or_else(|| invalid("not a mysql:// or mariadb:// scheme"))?;
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
        let user = user
            .filter(|u| !u.is_empty())
            .or_else(|| std::env::var("USER").ok().filter(|u| !u.is_empty()))
            .ok_or_else(|| invalid("no user"))?;
        let host = Some(host)
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".to_owned());
        let port = match port.filter(|p| !p.is_empty()) {
            Some(p) => p.parse().map_err(|_| invalid("bad port"))?,
            None => 3306,
        };
        let dbname = path;
        if dbname.is_empty() {
            return Err(invalid("no database name"));
        }
        if dbname.contains('\0') || dbname.contains('/') || dbname.contains('\\') {
            return Err(invalid("unsupported character in the database name"));
        }
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
            "mysql",
            &self.user,
            self.password.is_some(),
            &self.host,
            self.port,
            dbname,
        )
    }

    /// `host:port`, for messages.
    fn server(&self) -> String {
        if self.host.starts_with('/') {
            self.host.clone()
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// `text` with the password (if any) replaced by `***`.
    fn scrub(&self, text: &str) -> String {
        match &self.password {
            Some(p) if !p.is_empty() => text.replace(p.as_str(), "***"),
            _ => text.to_owned(),
        }
    }

    /// A private defaults file with this URL's connection settings.
    fn defaults_file(&self) -> Result<SecretFile> {
        let mut lines = vec![
            "[client]".to_owned(),
            format!("user={}", option_value(&self.user)),
        ];
        if let Some(password) = &self.password {
            lines.push(format!("password={}", option_value(password)));
        }
        if self.host.starts_with('/') {
            lines.push(format!("socket={}", option_value(&self.host)));
        } else {
            lines.push(format!("host={}", option_value(&self.host)));
            lines.push(format!("port={}", self.port));
            lines.push("protocol=TCP".to_owned());
        }
        // Only the SQL client knows this option (mariadb-dump refuses it).
        lines.push("[mysql]".to_owned());
        lines.push(format!("connect-timeout={}", CONNECT_TIMEOUT.as_secs()));
        let text = lines.join("\n") + "\n";
        SecretFile::create("backupkit-mycnf", ".cnf", &text)
    }

    /// Starts the first of `programs` that exists, the defaults file first
    /// in its arguments, then `args`; stdin and stdout piped or null.
    fn spawn(
        &self,
        programs: &[PathBuf],
        args: &[String],
        pipe_stdin: bool,
        pipe_stdout: bool,
    ) -> Result<(Child, PathBuf, SecretFile)> {
        let defaults = self.defaults_file()?;
        let stdio = |piped: bool| if piped { Stdio::piped() } else { Stdio::null() };
        for (i, program) in programs.iter().enumerate() {
            let mut cmd = Command::new(program);
            for var in [
                "MYSQL_PWD",
                "MYSQL_HOST",
                "MYSQL_TCP_PORT",
                "MYSQL_UNIX_PORT",
                "MYSQL_TEST_LOGIN_FILE",
            ] {
                cmd.env_remove(var);
            }
            // `--defaults-file`, not `--defaults-extra-file`: only our file
            // is read, so a user's ~/.my.cnf cannot override the URL's
            // user or password (host and port are always ours too).
            cmd.arg(format!("--defaults-file={}", defaults.path.display()))
                .args(args)
                .stdin(stdio(pipe_stdin))
                .stdout(stdio(pipe_stdout))
                .stderr(Stdio::piped());
            match cmd.spawn() {
                Ok(child) => return Ok((child, program.clone(), defaults)),
                Err(e) if e.kind() == io::ErrorKind::NotFound && i + 1 < programs.len() => {}
                Err(e) => return Err(spawn_error(programs, e)),
            }
        }
        Err(spawn_error(
            programs,
            io::Error::from(io::ErrorKind::NotFound),
        ))
    }

    /// One clear line for a failed tool: a server that is down, refused
    /// credentials and a missing database are told apart; the password never
    /// shows.
    fn tool_error(&self, context: &str, status: std::process::ExitStatus, stderr: &[u8]) -> Error {
        let text = String::from_utf8_lossy(stderr);
        let server = self.server();
        if text.contains("Can't connect to") || text.contains("(2002)") || text.contains("2003") {
            let why =
                if text.contains("(111)") || text.contains("(115)") || text.contains("refused") {
                    "connection refused (is the server running?)".to_owned()
                } else {
                    self.scrub(&first_lines(stderr, 1))
                };
            return backend(format!(
                "cannot connect to MariaDB/MySQL at {server}: {why}"
            ));
        }
        if text.contains("Access denied for user") || text.contains("1045") {
            return backend(format!(
                "authentication failed for user {:?} at {server}: access denied",
                self.user
            ));
        }
        if text.contains("Unknown database") || text.contains("1049") {
            return Error::NotFound {
                what: "database",
                path: self.describe(),
            };
        }
        backend(self.scrub(&format!(
            "{context} ({}): {}",
            exit_text(status),
            first_lines(stderr, 3)
        )))
    }

    /// Runs `sql` with the SQL client (in `db`, if given) and returns the
    /// rows it printed, columns unescaped.
    fn query(&self, clients: &[PathBuf], db: Option<&str>, sql: &str) -> Result<Vec<Vec<String>>> {
        let mut args = vec![
            "--batch".to_owned(),
            "--skip-column-names".to_owned(),
            "--default-character-set=utf8mb4".to_owned(),
        ];
        if let Some(db) = db {
            args.push(format!("--database={db}"));
        }
        let (mut child, _program, _defaults) = self.spawn(clients, &args, true, true)?;
        let stderr = collect_stderr(&mut child);
        let mut stdin = child.stdin.take().expect("stdin is piped");
        let sql = sql.to_owned();
        let writer = thread::spawn(move || {
            let _ = stdin.write_all(sql.as_bytes());
        });
        let mut out = Vec::new();
        let read = child
            .stdout
            .take()
            .expect("stdout is piped")
            .read_to_end(&mut out);
        let _ = writer.join();
        let status = child
            .wait()
            .map_err(|e| Error::io("wait for", "the mariadb client", e))?;
        let stderr = stderr.and_then(|h| h.join().ok()).unwrap_or_default();
        if !status.success() {
            return Err(self.tool_error(
                &format!("a query on {} failed", self.server()),
                status,
                &stderr,
            ));
        }
        read.map_err(|e| Error::io("read the output of", "the mariadb client", e))?;
        Ok(String::from_utf8_lossy(&out)
            .lines()
            .map(|line| line.split('\t').map(unescape).collect())
            .collect())
    }
}

/// The programs to try: the configured one, else the usual names.
fn programs(configured: Option<&Path>, defaults: &[&str]) -> Vec<PathBuf> {
    match configured {
        Some(p) => vec![p.to_path_buf()],
        None => defaults.iter().map(PathBuf::from).collect(),
    }
}

/// Maps a failure to start a tool: a missing one says what to install.
fn spawn_error(programs: &[PathBuf], e: io::Error) -> Error {
    let names: Vec<String> = programs.iter().map(|p| p.display().to_string()).collect();
    if e.kind() == io::ErrorKind::NotFound {
        Error::NotFound {
            what: "program",
            path: format!(
                "{} (install the MariaDB client tools: apt-get install mariadb-client)",
                names.join(" or ")
            ),
        }
    } else {
        Error::io("run", names.join(" or "), e)
    }
}

/// An option-file value: double-quoted, with `\` and `"` escaped.
fn option_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A column of `mariadb --batch` output, unescaped.
fn unescape(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    let mut chars = field.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('0') => out.push('\0'),
            Some('\\') | None => out.push('\\'),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
        }
    }
    out
}

fn backend(message: impl Into<String>) -> Error {
    Error::Backend {
        backend: BACKEND.into(),
        message: message.into(),
        source: None,
    }
}

/// An SQL identifier, quoted: ``odd`name`` becomes ```odd``name```.
fn quote_ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// An SQL string literal (backslashes and quotes escaped).
fn quote_str(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "''"))
}

/// The first few meaningful lines of a tool's stderr, as one line: the
/// client's `ERROR ...` lines first, then the statement it echoes (without
/// its `-----` frames).
fn first_lines(stderr: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(stderr);
    let mut lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.bytes().all(|b| b == b'-'))
        .collect();
    lines.sort_by_key(|l| !l.starts_with("ERROR"));
    lines.truncate(max);
    if lines.is_empty() {
        "no error output".to_owned()
    } else {
        lines.join(" / ")
    }
}

#[cfg(test)]
mod tests {
    use super::{MyUrl, option_value, unescape};

    #[test]
    fn urls_parse_and_never_show_the_password() {
        let u = MyUrl::parse("mysql://lab:s3%3Acret@db.example:3307/results").unwrap();
        assert_eq!(u.user, "lab");
        assert_eq!(u.password.as_deref(), Some("s3:cret"));
        assert_eq!(u.host, "db.example");
        assert_eq!(u.port, 3307);
        assert_eq!(u.dbname, "results");
        assert_eq!(u.describe(), "mysql://lab:***@db.example:3307/results");
        assert!(!format!("{u:?}").contains("s3"));

        let u = MyUrl::parse("mariadb://lab@[::1]/x").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 3306));
        assert_eq!(u.describe(), "mysql://lab@[::1]:3306/x");

        for bad in [
            "postgres://a@b/c",
            "mysql://a@b:notaport/c",
            "mysql://a@b/c?x=1",
            "mysql://a@b/",
        ] {
            let err = MyUrl::parse(bad).unwrap_err();
            assert!(matches!(err, backup_core::Error::InvalidInput(_)), "{bad}");
        }
    }

    #[test]
    fn option_values_and_batch_output_escape() {
        assert_eq!(option_value(r#"a"b\c#d"#), r#""a\"b\\c#d""#);
        assert_eq!(unescape(r"a\tb\\n\n"), "a\tb\\n\n");
    }
}
