//! Repositories on rclone remotes (`rclone:REMOTE:path`): Box, Google
//! Drive, `OneDrive`, and every other backend rclone has, through the user's
//! own `rclone` and its configured remotes. backupkit never reads the
//! remote's configuration or tokens; rclone does, as it always does.
//!
//! Each operation runs one rclone command (`rcat`, `cat`, `lsjson`,
//! `moveto`, `deletefile`). Writes stream into `rclone rcat` under a
//! temporary name and are moved into place at commit, so a reader never
//! sees a partial object. rclone retries transient failures itself
//! (`--low-level-retries`).
//!
//! rclone has no create-if-absent: [`Target::create_new`] checks, then
//! writes. It is exclusive between threads of one process, and best-effort
//! between processes; backupkit's locks do not rely on it (each process
//! creates its own lock, then looks for others, as restic does).

use std::fmt;
use std::io::{self, Read, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use backup_core::registry::TargetOptions;
use backup_core::target::{TMP_MARK, check_key, tmp_key};
use backup_core::{Error, ObjectMeta, ObjectWriter, Result, Target};

use crate::way::{Way, parent_of, refused_write};
use serde::Deserialize;

/// rclone's exit code for "directory or object not found".
const EXIT_NOT_FOUND: i32 = 3;

/// One entry of `rclone lsjson`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct Listed {
    pub(crate) path: String,
    pub(crate) name: String,
    pub(crate) size: i64,
    #[serde(default)]
    pub(crate) mod_time: Option<String>,
    pub(crate) is_dir: bool,
}

/// A repository on an rclone remote.
pub struct RcloneTarget {
    pub(crate) rc: Arc<Rclone>,
    /// Serialises `create_new` within this process.
    create: Mutex<()>,
}

/// How to run rclone against the repository's remote; shared with the
/// target's writers and readers, and with mirror trees.
pub(crate) struct Rclone {
    program: String,
    /// Arguments before the subcommand (`--config FILE`, ...).
    global: Vec<String>,
    /// `REMOTE:path` without a trailing slash.
    pub(crate) remote: String,
    pub(crate) location: String,
}

impl fmt::Debug for RcloneTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RcloneTarget")
            .field("location", &self.rc.location)
            .finish_non_exhaustive()
    }
}

impl RcloneTarget {
    /// Opens `rclone:REMOTE:path`. Options: `rclone_command` (default
    /// `rclone`), `rclone_config` (`--config FILE`), `rclone_args` (more
    /// global flags, space-separated, e.g. `--bwlimit 10M`), `timeout`
    /// (seconds: rclone's `--timeout` and `--contimeout`).
    pub fn open(location: &str, options: &TargetOptions) -> Result<Self> {
        let remote = location.strip_prefix("rclone:").unwrap_or(location);
        if !remote.contains(':') || remote.starts_with(':') && !remote[1..].contains(':') {
            return Err(Error::InvalidInput(format!(
                "{location:?}: expected rclone:REMOTE:PATH (a remote from `rclone listremotes`)"
            )));
        }
        let mut program = "rclone".to_owned();
        let mut global: Vec<String> = Vec::new();
        for (key, value) in options {
            match key.as_str() {
                "rclone_command" => program.clone_from(value),
                "rclone_config" => global.extend(["--config".into(), value.clone()]),
                "rclone_args" => global.extend(value.split_whitespace().map(str::to_owned)),
                // A remote that stops answering fails within it (rclone's
                // idle and connect timeouts).
                "timeout" => {
                    let secs = value
                        .parse::<u64>()
                        .ok()
                        .filter(|s| *s > 0)
                        .ok_or_else(|| {
                            Error::InvalidInput(
                            "option timeout: expected a number of seconds, like 300 (the value \
                             is not shown)"
                                .into(),
                        )
                        })?;
                    global.extend([
                        "--timeout".into(),
                        format!("{secs}s"),
                        "--contimeout".into(),
                        format!("{secs}s"),
                    ]);
                }
                _ => {
                    return Err(Error::InvalidInput(format!(
                        "unknown option {key:?} for rclone repositories (known: \
                         rclone_command, rclone_config, rclone_args, timeout)"
                    )));
                }
            }
        }
        // rclone's local backend never shows a symlink or special file in a
        // listing; its sftp backend follows links unless told to skip them
        // (other backends ignore the flag). Together with the directory
        // checks below, nothing is read or deleted through a symlink.
        global.extend([
            "--log-level".into(),
            "ERROR".into(),
            "--sftp-skip-links".into(),
        ]);
        Ok(Self {
            rc: Arc::new(Rclone {
                program,
                global,
                remote: remote.trim_end_matches('/').to_owned(),
                location: location.trim_end_matches('/').to_owned(),
            }),
            create: Mutex::new(()),
        })
    }
}

impl Rclone {
    /// `REMOTE:path/key`.
    pub(crate) fn path(&self, key: &str) -> String {
        if key.is_empty() {
            self.remote.clone()
        } else if self.remote.ends_with(':') {
            format!("{}{key}", self.remote)
        } else {
            format!("{}/{key}", self.remote)
        }
    }

    pub(crate) fn shown(&self, key: &str) -> String {
        format!("{}/{key}", self.location)
    }

    pub(crate) fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.program);
        c.args(&self.global).args(args).stdin(Stdio::null());
        c
    }

    pub(crate) fn spawn_error(&self, e: &io::Error) -> Error {
        Error::Backend {
            backend: self.location.clone(),
            message: format!(
                "cannot run {:?}: {e} (install rclone, or set -o rclone_command=...)",
                self.program
            ),
            source: None,
        }
    }

    /// Runs a command to completion: its stdout, or an error from its exit
    /// code (not found) and the last line it logged.
    pub(crate) fn run(&self, action: &'static str, key: &str, args: &[&str]) -> Result<Vec<u8>> {
        let out = self
            .command(args)
            .output()
            .map_err(|e| self.spawn_error(&e))?;
        if out.status.success() {
            return Ok(out.stdout);
        }
        Err(self.failure(action, key, out.status.code(), &out.stderr))
    }

    /// `rclone rcat REMOTE_PATH`, reading what is written to its stdin.
    pub(crate) fn rcat(&self, remote_path: &str) -> Result<(Child, ChildStdin)> {
        let mut child = self
            .command(&["rcat", remote_path])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| self.spawn_error(&e))?;
        let stdin = child.stdin.take().expect("piped");
        Ok((child, stdin))
    }

    /// Stops an unfinished `rcat` and deletes what it wrote to
    /// `remote_path` (empty: nothing to delete).
    pub(crate) fn abandon(
        &self,
        stdin: Option<ChildStdin>,
        child: Option<Child>,
        remote_path: &str,
    ) {
        drop(stdin);
        if let Some(mut child) = child {
            let _ = child.kill();
            let _ = child.wait();
        }
        if !remote_path.is_empty() {
            let _ = self
                .command(&["deletefile", "--retries", "1", remote_path])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }

    /// Runs a command with `input` on its stdin (a `--files-from-raw -`
    /// list), to completion.
    pub(crate) fn run_with_input(
        &self,
        action: &'static str,
        key: &str,
        args: &[&str],
        input: Vec<u8>,
    ) -> Result<Vec<u8>> {
        self.run_cancellable(action, key, args, input, None)
    }

    /// [`Rclone::run_with_input`], killing rclone when `cancel` is set (a
    /// batch of large files must not hold up Ctrl-C).
    pub(crate) fn run_cancellable(
        &self,
        action: &'static str,
        key: &str,
        args: &[&str],
        input: Vec<u8>,
        cancel: Option<&backup_core::progress::Cancel>,
    ) -> Result<Vec<u8>> {
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| self.spawn_error(&e))?;
        let mut stdin = child.stdin.take().expect("piped");
        let feeder = std::thread::spawn(move || {
            let _ = stdin.write_all(&input);
        });
        let mut stdout = child.stdout.take().expect("piped");
        let mut stderr = child.stderr.take().expect("piped");
        let out_reader = std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = stdout.read_to_end(&mut v);
            v
        });
        let err_reader = std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = stderr.read_to_end(&mut v);
            v
        });
        let status = loop {
            if cancel.is_some_and(backup_core::progress::Cancel::is_cancelled) {
                let _ = child.kill();
                let _ = child.wait();
                return Err(Error::Cancelled);
            }
            match child.try_wait() {
                Ok(Some(s)) => break s,
                Ok(None) => std::thread::sleep(std::time::Duration::from_millis(10)),
                Err(e) => return Err(Error::io(action, self.shown(key), e)),
            }
        };
        let _ = feeder.join();
        let out = out_reader.join().unwrap_or_default();
        let said = err_reader.join().unwrap_or_default();
        if status.success() {
            return Ok(out);
        }
        Err(self.failure(action, key, status.code(), &said))
    }

    pub(crate) fn failure(
        &self,
        action: &'static str,
        key: &str,
        code: Option<i32>,
        stderr: &[u8],
    ) -> Error {
        let said = String::from_utf8_lossy(stderr);
        let last = said
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
            .trim();
        // Drop rclone's timestamp prefix.
        let last = last
            .splitn(3, ' ')
            .nth(2)
            .filter(|_| last.starts_with(|c: char| c.is_ascii_digit()))
            .unwrap_or(last);
        if code == Some(EXIT_NOT_FOUND)
            || last.contains("doesn't exist")
            || last.contains("no such file or directory")
        {
            return Error::NotFound {
                what: "object",
                path: self.shown(key),
            };
        }
        let kind = if last.contains("permission denied") || last.contains("403") {
            io::ErrorKind::PermissionDenied
        } else {
            io::ErrorKind::Other
        };
        Error::io(
            action,
            self.shown(key),
            io::Error::new(
                kind,
                format!(
                    "rclone exited with {}: {last}",
                    code.map_or_else(|| "a signal".to_owned(), |c| c.to_string())
                ),
            ),
        )
    }

    fn lsjson(&self, key: &str, flags: &[&str]) -> Result<Vec<Listed>> {
        let path = self.path(key);
        let mut args = vec!["lsjson", "--no-mimetype"];
        args.extend_from_slice(flags);
        args.push(&path);
        let out = match self.run("list", key, &args) {
            Err(Error::NotFound { .. }) => return Ok(Vec::new()),
            other => other?,
        };
        serde_json::from_slice(&out).map_err(|e| Error::Format {
            path: self.shown(key),
            source: e,
        })
    }

    /// Whether each directory on the way to `dir` (relative to the root) is
    /// a real one: listed as a directory in its parent's listing, where
    /// links never appear. A component not listed but there when looked up
    /// directly is a link or a special file.
    fn way(&self, dir: &str) -> Result<Way> {
        let mut parent = String::new();
        for part in dir.split('/').filter(|p| !p.is_empty()) {
            let listed = self
                .lsjson(&parent, &["--dirs-only"])?
                .into_iter()
                .any(|o| o.is_dir && o.name == part);
            let here = if parent.is_empty() {
                part.to_owned()
            } else {
                format!("{parent}/{part}")
            };
            if !listed {
                let path = self.path(&here);
                let there = self.run(
                    "inspect",
                    &here,
                    &["lsjson", "--stat", "--no-mimetype", "--retries", "1", &path],
                );
                return match there {
                    Err(Error::NotFound { .. }) => Ok(Way::Missing),
                    Err(e) => Err(e),
                    Ok(_) => Ok(Way::NotADirectory),
                };
            }
            parent = here;
        }
        Ok(Way::Directories)
    }

    /// Moves `from` over `to` on the remote (server-side where it can).
    fn move_to(&self, from: &str, to: &str, key: &str) -> Result<()> {
        // Without --ignore-times, moveto finds a destination of the same
        // size and mtime "identical", deletes the source and keeps the old.
        self.run(
            "move into place",
            key,
            &["moveto", "--ignore-times", from, to],
        )
        .map(drop)
    }
}

fn parse_time(s: Option<&str>) -> Option<SystemTime> {
    chrono::DateTime::parse_from_rfc3339(s?)
        .ok()
        .map(SystemTime::from)
}

impl Target for RcloneTarget {
    fn location(&self) -> String {
        self.rc.location.clone()
    }

    fn put(&self, key: &str) -> Result<Box<dyn ObjectWriter>> {
        check_key(key)?;
        if self.rc.way(parent_of(key))? == Way::NotADirectory {
            return Err(refused_write(self.rc.shown(key)));
        }
        let tmp = self.rc.path(&tmp_key(key));
        let (child, stdin) = self.rc.rcat(&tmp)?;
        Ok(Box::new(RcloneWriter {
            target: Arc::clone(&self.rc),
            child: Some(child),
            stdin: Some(stdin),
            tmp,
            key: key.to_owned(),
        }))
    }

    fn create_new(&self, key: &str, data: &[u8]) -> Result<()> {
        check_key(key)?;
        let _one_at_a_time = self.create.lock().expect("create lock");
        match self.stat(key) {
            Ok(_) => {
                return Err(Error::AlreadyExists {
                    path: self.rc.shown(key),
                });
            }
            Err(Error::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
        let mut w = self.put(key)?;
        w.write_all(data)
            .map_err(|e| Error::io("write", self.rc.shown(key), e))?;
        w.commit()
    }

    fn get(&self, key: &str) -> Result<Box<dyn Read + Send>> {
        check_key(key)?;
        // rclone cat of a missing object fails only at its end: look first,
        // so a missing object is a clear NotFound.
        self.stat(key)?;
        Ok(Box::new(RcloneReader::spawn(&self.rc, key, &[])?))
    }

    fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Box<dyn Read + Send>> {
        check_key(key)?;
        self.stat(key)?;
        if len == 0 {
            return Ok(Box::new(io::empty()));
        }
        // `--count` takes a signed 64-bit number; larger means "to the end".
        let count = i64::try_from(len).unwrap_or(-1).to_string();
        let range = [
            "--offset".to_owned(),
            offset.to_string(),
            "--count".to_owned(),
            count,
        ];
        Ok(Box::new(RcloneReader::spawn(&self.rc, key, &range)?))
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let dir = prefix.rsplit_once('/').map_or("", |(d, _)| d);
        if !dir.is_empty() {
            check_key(dir)?;
        }
        if self.rc.way(dir)? != Way::Directories {
            return Ok(Vec::new());
        }
        Ok(self
            .rc
            .lsjson(dir, &["-R", "--files-only"])?
            .into_iter()
            .filter(|o| !o.is_dir && !o.name.contains(TMP_MARK))
            .filter_map(|o| {
                let key = if dir.is_empty() {
                    o.path
                } else {
                    format!("{dir}/{}", o.path)
                };
                key.starts_with(prefix).then(|| ObjectMeta {
                    key,
                    size: o.size.max(0) as u64,
                    modified: parse_time(o.mod_time.as_deref()),
                })
            })
            .collect())
    }

    fn list_dirs(&self, prefix: &str) -> Result<Vec<String>> {
        let dir = prefix.trim_end_matches('/');
        if !dir.is_empty() {
            check_key(dir)?;
        }
        if self.rc.way(dir)? != Way::Directories {
            return Ok(Vec::new());
        }
        let mut names: Vec<String> = self
            .rc
            .lsjson(dir, &["--dirs-only"])?
            .into_iter()
            .map(|o| o.name)
            .collect();
        names.sort();
        Ok(names)
    }

    /// A regular file below real directories, as its directory lists it.
    fn stat(&self, key: &str) -> Result<ObjectMeta> {
        check_key(key)?;
        let not_found = || Error::NotFound {
            what: "object",
            path: self.rc.shown(key),
        };
        let parent = parent_of(key);
        if self.rc.way(parent)? != Way::Directories {
            return Err(not_found());
        }
        let name = key.rsplit_once('/').map_or(key, |(_, n)| n);
        let o = self
            .rc
            .lsjson(parent, &["--files-only"])?
            .into_iter()
            .find(|o| !o.is_dir && o.name == name)
            .ok_or_else(not_found)?;
        Ok(ObjectMeta {
            key: key.to_owned(),
            size: o.size.max(0) as u64,
            modified: parse_time(o.mod_time.as_deref()),
        })
    }

    fn delete(&self, key: &str) -> Result<()> {
        check_key(key)?;
        // Never through a symlinked directory (a link itself is removed).
        if self.rc.way(parent_of(key))? != Way::Directories {
            return Ok(());
        }
        let path = self.rc.path(key);
        match self
            .rc
            .run("delete", key, &["deletefile", "--retries", "1", &path])
        {
            Ok(_) | Err(Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn sweep(&self, prefix: &str) -> Result<()> {
        let dir = prefix.trim_end_matches('/');
        if dir.is_empty() {
            return Ok(());
        }
        check_key(dir)?;
        if self.rc.way(dir)? != Way::Directories {
            return Ok(());
        }
        let path = self.rc.path(dir);
        let include = format!("*{TMP_MARK}*");
        match self
            .rc
            .run("sweep", dir, &["delete", "--include", &include, &path])
        {
            Ok(_) | Err(Error::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
        match self.rc.run("sweep", dir, &["rmdirs", &path]) {
            Ok(_) | Err(Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// Collects a child's stderr and exit, as an error when it failed.
fn finish(target: &Rclone, action: &'static str, key: &str, child: Child) -> Result<()> {
    let out = child
        .wait_with_output()
        .map_err(|e| Error::io(action, target.shown(key), e))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(target.failure(action, key, out.status.code(), &out.stderr))
    }
}

/// Streams into `rclone rcat` under a temporary name.
struct RcloneWriter {
    target: Arc<Rclone>,
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    tmp: String,
    key: String,
}

impl Write for RcloneWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.stdin.as_mut().expect("open until commit").write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.stdin.as_mut().expect("open until commit").flush()
    }
}

impl ObjectWriter for RcloneWriter {
    fn commit(mut self: Box<Self>) -> Result<()> {
        drop(self.stdin.take());
        let child = self.child.take().expect("running until commit");
        finish(&self.target, "upload", &self.key, child)?;
        let to = self.target.path(&self.key);
        let result = self.target.move_to(&self.tmp, &to, &self.key);
        if result.is_ok() {
            self.tmp.clear();
        }
        result
    }
}

impl Drop for RcloneWriter {
    fn drop(&mut self) {
        self.target
            .abandon(self.stdin.take(), self.child.take(), &self.tmp);
    }
}

/// Streams from `rclone cat`; a failed exit is an error at the end.
pub(crate) struct RcloneReader {
    target: Arc<Rclone>,
    child: Option<Child>,
    stdout: ChildStdout,
    key: String,
}

impl RcloneReader {
    /// `rclone cat` of `key`, which the caller knows to exist.
    /// `rclone cat` of `key`, with `extra` arguments (a byte range).
    pub(crate) fn spawn(target: &Arc<Rclone>, key: &str, extra: &[String]) -> Result<Self> {
        let path = target.path(key);
        let mut args = vec!["cat", path.as_str()];
        args.extend(extra.iter().map(String::as_str));
        let mut child = target
            .command(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| target.spawn_error(&e))?;
        let stdout = child.stdout.take().expect("piped");
        Ok(Self {
            target: Arc::clone(target),
            child: Some(child),
            stdout,
            key: key.to_owned(),
        })
    }
}

impl Read for RcloneReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.stdout.read(buf)?;
        if n == 0
            && !buf.is_empty()
            && let Some(child) = self.child.take()
        {
            finish(&self.target, "read", &self.key, child)
                .map_err(|e| io::Error::other(backup_core::error_chain(&e)))?;
        }
        Ok(n)
    }
}

impl Drop for RcloneReader {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn listing_times_parse() {
        let t = |s| super::parse_time(Some(s));
        assert_eq!(
            t("2026-11-24T13:02:22Z"),
            Some(UNIX_EPOCH + Duration::from_secs(1_795_525_342))
        );
        assert_eq!(t("2026-11-24T14:02:22+01:00"), t("2026-11-24T13:02:22Z"));
        assert_eq!(t("garbage"), None);
    }

    /// Generated locations, options and listing times: never a panic, and
    /// an option's value never reaches a message.
    #[test]
    fn generated_locations_and_options_never_panic() {
        use backup_core::Target;

        let mut g = backup_core::testgen::Gen::new(41);
        for _ in 0..20_000 {
            let location = if g.below(2) == 0 {
                g.string(8)
            } else {
                format!(
                    "{}{}{}",
                    g.part(&["rclone:", "rclone::", ""]),
                    g.part(&["remote:", ":", "remote", ":s3,a=b:", ""]),
                    g.string(3),
                )
            };
            let key = g.part(&[
                "rclone_command",
                "rclone_config",
                "rclone_args",
                "timeout",
                "nope",
            ]);
            let value = format!("{}SECRET", g.string(3));
            let options = [(key.clone(), value)].into_iter().collect();
            match super::RcloneTarget::open(&location, &options) {
                Ok(t) => {
                    let _ = (t.location(), format!("{t:?}"), t.rc.path(&g.string(3)));
                }
                Err(e) => assert!(!e.to_string().contains("SECRET"), "{e}"),
            }
            let _ = super::parse_time(Some(&g.string(6)));
        }
    }
}
