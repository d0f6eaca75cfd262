//! SFTP repositories (`sftp://[user@]host[:port]/path`), spoken over the
//! system's `ssh` as restic does: `ssh -s host sftp` with `BatchMode=yes`.
//!
//! Going through `ssh` gives users what they expect of it: `~/.ssh/config`
//! host aliases, keys and agents, `known_hosts` checking, jump hosts. Batch
//! mode means a missing key or an unknown host key fails at once instead of
//! prompting under cron.
//!
//! The client is a small SFTP version 3 implementation (the protocol
//! OpenSSH's `sftp-server` speaks): requests are multiplexed over one
//! connection by id, a reader thread routes replies, and reads and writes are
//! pipelined (many requests in flight) so throughput does not wait on round
//! trips. Writes go to a temporary name and are renamed into place with
//! OpenSSH's `posix-rename` (atomic replace); locks use `hardlink` (atomic
//! create-if-absent). A dropped connection is re-established with backoff
//! for the next operation.

use std::fmt;
use std::io::{self, Read};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use backup_core::registry::TargetOptions;
use backup_core::target::{TMP_MARK, check_key, tmp_key};
use backup_core::{Error, ObjectMeta, ObjectWriter, Result, Target};

use crate::way::{Way, parent_of, refused_write};

mod protocol;
mod rsync;
mod stream;
mod tree;

pub use tree::SftpTree;

use protocol::{
    Conn, FXF_CREAT, FXF_EXCL, FXF_READ, FXF_TRUNC, FXF_WRITE, FXP_WRITE, Out, Spec, status,
};
use stream::{SftpReader, SftpWriter, fsync};

/// A repository on an SFTP server.
pub struct SftpTarget {
    spec: Spec,
    /// Remote directory of the repository (absolute, or relative to the
    /// login directory); no trailing slash.
    root: String,
    location: String,
    connect_attempts: u32,
    conn: Mutex<Option<Arc<Conn>>>,
}

impl fmt::Debug for SftpTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SftpTarget")
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

/// The parts of `sftp://[user@]host[:port]/path`.
struct Parsed<'a> {
    user: Option<&'a str>,
    host: &'a str,
    port: Option<&'a str>,
    /// The remote directory, as [`SftpTarget::root`].
    root: String,
}

impl<'a> Parsed<'a> {
    /// Splits a location; refuses a password. No message shows the URL,
    /// which may hold one.
    fn of(location: &'a str) -> Result<Self> {
        let bad = |why: &str| {
            Error::InvalidInput(format!(
                "invalid sftp URL: {why} (expected sftp://[USER@]HOST[:PORT]/PATH)"
            ))
        };
        let rest = location
            .strip_prefix("sftp://")
            .or_else(|| location.strip_prefix("ssh://"))
            .ok_or_else(|| bad("not an sftp:// URL"))?;
        let (authority, path) = rest.split_once('/').ok_or_else(|| bad("no path"))?;
        let (user, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        if user.is_some_and(|u| u.contains(':')) {
            return Err(Error::InvalidInput(
                "sftp URLs cannot carry a password: ssh uses keys or an agent; remove it from \
                 the URL"
                    .into(),
            ));
        }
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or_else(|| bad("unclosed ["))?;
            let port = match after {
                "" => None,
                _ => Some(
                    after
                        .strip_prefix(':')
                        .ok_or_else(|| bad("only :PORT may follow the [IPv6 address]"))?,
                ),
            };
            (h, port)
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (hostport, None),
            }
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        if let Some(p) = port
            && p.parse::<u16>().is_err()
        {
            return Err(bad("the port is not a number"));
        }
        let path = path.trim_end_matches('/');
        let root = match path.strip_prefix('~') {
            Some(rel) => rel.trim_start_matches('/').to_owned(),
            None => format!("/{path}"),
        };
        if root.split('/').any(|c| c == "..") {
            return Err(bad("the path contains .."));
        }
        Ok(Self {
            user,
            host,
            port,
            root,
        })
    }
}

impl SftpTarget {
    /// Opens `sftp://[user@]host[:port]/path` (the path is absolute;
    /// `/~/path` is relative to the login directory). Options:
    /// `ssh_command` (default `ssh`), `ssh_config` (`ssh -F`),
    /// `identity_file` (`ssh -i`), `known_hosts` (the file of known host
    /// keys, `UserKnownHostsFile`), `host_keys` (`strict`: only hosts whose
    /// key is known; `accept-new`: record the key of a host seen for the
    /// first time and refuse a changed one), `connect_timeout` (seconds,
    /// default 15), `timeout` (seconds a server may leave a request
    /// unanswered, default 300), `retries` (connection attempts, default 3).
    ///
    /// A password in the URL is refused: ssh takes none on its command
    /// line (it uses keys or an agent), and a URL with one would carry it
    /// into messages and `ps`. No message of this function shows the URL,
    /// which may hold one.
    pub fn open(location: &str, options: &TargetOptions) -> Result<Self> {
        let Parsed {
            user,
            host,
            port,
            root,
        } = Parsed::of(location)?;

        let mut program = "ssh".to_owned();
        let mut args: Vec<String> = Vec::new();
        let mut connect_timeout = "15".to_owned();
        let mut connect_attempts = 3;
        let mut timeout = Duration::from_secs(300);
        for (key, value) in options {
            match key.as_str() {
                "ssh_command" => program.clone_from(value),
                "ssh_config" => args.extend(["-F".into(), value.clone()]),
                "identity_file" => args.extend(["-i".into(), value.clone()]),
                "known_hosts" => args.extend(["-o".into(), format!("UserKnownHostsFile={value}")]),
                "host_keys" => args.extend([
                    "-o".into(),
                    format!("StrictHostKeyChecking={}", host_key_policy(value)?),
                ]),
                "connect_timeout" => {
                    value.parse::<u32>().map_err(|_| {
                        Error::InvalidInput(
                            "option connect_timeout: expected a number of seconds, like 15 (the \
                             value is not shown)"
                                .into(),
                        )
                    })?;
                    connect_timeout.clone_from(value);
                }
                "timeout" => {
                    timeout = Duration::from_secs(
                        value
                            .parse::<u64>()
                            .ok()
                            .filter(|s| *s > 0)
                            .ok_or_else(|| {
                                Error::InvalidInput(
                                    "option timeout: expected a number of seconds, like 300 \
                                     (the value is not shown)"
                                        .into(),
                                )
                            })?,
                    );
                }
                "retries" => {
                    connect_attempts = value
                        .parse::<u32>()
                        .map_err(|_| {
                            Error::InvalidInput(
                                "option retries: expected a count, like 3 (the value is not \
                                 shown)"
                                    .into(),
                            )
                        })?
                        .max(1);
                }
                _ => {
                    return Err(Error::InvalidInput(format!(
                        "unknown option {key:?} for SFTP locations (known: ssh_command, \
                         ssh_config, identity_file, known_hosts, host_keys, connect_timeout, \
                         timeout, retries)"
                    )));
                }
            }
        }
        args.extend(
            [
                "-o",
                "BatchMode=yes",
                "-o",
                "ServerAliveInterval=15",
                "-o",
                "ServerAliveCountMax=4",
                "-o",
            ]
            .map(str::to_owned),
        );
        args.push(format!("ConnectTimeout={connect_timeout}"));
        if let Some(p) = port {
            args.extend(["-p".into(), p.to_owned()]);
        }
        let target = match user {
            Some(u) => format!("{u}@{host}"),
            None => host.to_owned(),
        };
        args.extend(["-s".into(), "--".into(), target.clone(), "sftp".into()]);
        Ok(Self {
            spec: Spec {
                program,
                args,
                host: target,
                timeout,
            },
            location: location.trim_end_matches('/').to_owned(),
            root,
            connect_attempts,
            conn: Mutex::new(None),
        })
    }

    /// The ssh command line without the SFTP subsystem request and host
    /// (for rsync's `-e`).
    fn ssh_words(&self) -> Vec<String> {
        let args = &self.spec.args;
        let keep = args.len().saturating_sub(4);
        std::iter::once(self.spec.program.clone())
            .chain(args[..keep].iter().cloned())
            .collect()
    }

    /// The live connection, connecting (with backoff) if there is none or
    /// the last one dropped.
    fn conn(&self) -> Result<Arc<Conn>> {
        let mut slot = self.conn.lock().expect("connection slot");
        if let Some(c) = slot.as_ref()
            && c.alive.load(Ordering::SeqCst)
        {
            return Ok(Arc::clone(c));
        }
        let mut delay = Duration::from_millis(500);
        let mut attempt = 1;
        let conn = loop {
            match Conn::open(&self.spec) {
                Ok(c) => break c,
                Err(e) if attempt >= self.connect_attempts || !transient(&e) => return Err(e),
                Err(_) => {
                    std::thread::sleep(delay);
                    delay *= 2;
                    attempt += 1;
                }
            }
        };
        *slot = Some(Arc::clone(&conn));
        Ok(conn)
    }

    /// Runs an idempotent operation, once more on a fresh connection if the
    /// connection dropped under it.
    fn retry<T>(
        &self,
        op: impl Fn(&Arc<Conn>) -> io::Result<T>,
    ) -> Result<std::result::Result<T, io::Error>> {
        let conn = self.conn()?;
        match op(&conn) {
            Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => {
                drop(conn);
                let conn = self.conn()?;
                Ok(op(&conn))
            }
            other => Ok(other),
        }
    }

    fn remote(&self, key: &str) -> String {
        if self.root.is_empty() {
            key.to_owned()
        } else if key.is_empty() {
            self.root.clone()
        } else {
            format!("{}/{key}", self.root)
        }
    }

    fn shown(&self, key: &str) -> String {
        format!("{}/{key}", self.location)
    }

    fn map_err(&self, action: &'static str, key: &str, e: io::Error) -> Error {
        if e.kind() == io::ErrorKind::NotFound {
            Error::NotFound {
                what: "object",
                path: self.shown(key),
            }
        } else {
            Error::io(action, self.shown(key), e)
        }
    }

    /// What stands on the way from the root to the directory `dir_key`
    /// (relative to the root): each component is looked at without
    /// following symlinks.
    fn way(&self, conn: &Conn, dir_key: &str) -> io::Result<Way> {
        let mut at = String::new();
        for part in dir_key.split('/').filter(|p| !p.is_empty()) {
            if !at.is_empty() {
                at.push('/');
            }
            at.push_str(part);
            match conn.lstat(&self.remote(&at)) {
                Ok(a) if a.is_dir => {}
                Ok(_) => return Ok(Way::NotADirectory),
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Way::Missing),
                Err(e) => return Err(e),
            }
        }
        Ok(Way::Directories)
    }

    /// Makes sure nothing is written through a symlink: the directories
    /// above `key` are created where missing and must all be real ones.
    fn ensure_parents(&self, conn: &Conn, key: &str) -> Result<()> {
        let parent = parent_of(key);
        let mut way = self
            .way(conn, parent)
            .map_err(|e| self.map_err("inspect", key, e))?;
        if way == Way::Missing {
            self.make_parents(conn, key);
            way = self
                .way(conn, parent)
                .map_err(|e| self.map_err("inspect", key, e))?;
        }
        match way {
            Way::Directories | Way::Missing => Ok(()),
            Way::NotADirectory => Err(refused_write(self.shown(key))),
        }
    }

    /// Creates the directories above `key`, the repository's own included
    /// (like `mkdir -p`).
    fn make_parents(&self, conn: &Conn, key: &str) {
        let dir = match key.rsplit_once('/') {
            Some((d, _)) => self.remote(d),
            None => self.root.clone(),
        };
        let mut path = String::new();
        for (i, part) in dir.split('/').enumerate() {
            if i > 0 {
                path.push('/');
            }
            path.push_str(part);
            if !part.is_empty() {
                let _ = conn.mkdir(&path);
            }
        }
    }

    /// Opens a new temporary file beside `key`, creating directories.
    fn create_tmp(&self, conn: &Conn, key: &str) -> Result<(Vec<u8>, String)> {
        for attempt in 0..2 {
            let tmp = self.remote(&tmp_key(key));
            match conn.open_file(&tmp, FXF_WRITE | FXF_CREAT | FXF_EXCL | FXF_TRUNC) {
                Ok(h) => return Ok((h, tmp)),
                Err(e) if attempt == 0 && e.kind() != io::ErrorKind::PermissionDenied => {
                    // Most likely a missing directory: create and try again.
                    self.make_parents(conn, key);
                }
                Err(e) => return Err(self.map_err("create", key, e)),
            }
        }
        unreachable!("the loop returns on its second attempt")
    }

    fn walk(&self, conn: &Conn, dir_key: &str, out: &mut Vec<ObjectMeta>) -> Result<()> {
        let entries = match conn.read_dir(&self.remote(dir_key)) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(self.map_err("list", dir_key, e)),
        };
        for (name, attrs) in entries {
            let key = if dir_key.is_empty() {
                name.clone()
            } else {
                format!("{dir_key}/{name}")
            };
            if attrs.is_dir {
                self.walk(conn, &key, out)?;
            } else if attrs.is_file && !name.contains(TMP_MARK) {
                out.push(ObjectMeta {
                    key,
                    size: attrs.size,
                    modified: attrs
                        .mtime
                        .map(|t| UNIX_EPOCH + Duration::from_secs(u64::from(t))),
                });
            }
        }
        Ok(())
    }

    /// Removes empty directories from `key`'s parent up to the root.
    fn prune_dirs(&self, conn: &Conn, key: &str) {
        let mut dir = key.rsplit_once('/').map(|(d, _)| d);
        while let Some(d) = dir {
            if conn.rmdir(&self.remote(d)).is_err() {
                break;
            }
            dir = d.rsplit_once('/').map(|(p, _)| p);
        }
    }
}

/// ssh's `StrictHostKeyChecking` for the `host_keys` option.
fn host_key_policy(value: &str) -> Result<&'static str> {
    match value {
        "strict" => Ok("yes"),
        "accept-new" => Ok("accept-new"),
        _ => Err(Error::InvalidInput(
            "option host_keys: expected strict (only hosts already in known_hosts) or \
             accept-new (record a new host's key, refuse a changed one); trusting any key is \
             not offered"
                .into(),
        )),
    }
}

fn transient(e: &Error) -> bool {
    let text = e.to_string();
    !(text.contains("Permission denied")
        || text.contains("Host key verification failed")
        || text.contains("cannot run")
        || text.contains("Could not resolve"))
}

impl Target for SftpTarget {
    fn location(&self) -> String {
        self.location.clone()
    }

    fn put(&self, key: &str) -> Result<Box<dyn ObjectWriter>> {
        check_key(key)?;
        let conn = self.conn()?;
        self.ensure_parents(&conn, key)?;
        let (handle, tmp) = self.create_tmp(&conn, key)?;
        Ok(Box::new(SftpWriter::new(
            conn,
            handle,
            tmp,
            self.remote(key),
            self.shown(key),
        )))
    }

    fn create_new(&self, key: &str, data: &[u8]) -> Result<()> {
        check_key(key)?;
        let conn = self.conn()?;
        self.ensure_parents(&conn, key)?;
        let path = self.remote(key);
        if !conn.has("hardlink@openssh.com") {
            // Exclusive create; the content follows in the same session.
            self.make_parents(&conn, key);
            let handle = match conn.open_file(&path, FXF_WRITE | FXF_CREAT | FXF_EXCL) {
                Ok(h) => h,
                Err(_) if conn.stat(&path).is_ok() => {
                    return Err(Error::AlreadyExists {
                        path: self.shown(key),
                    });
                }
                Err(e) => return Err(self.map_err("create", key, e)),
            };
            let body = Out::default().bytes(&handle).u64(0).bytes(data);
            let written = conn.call(FXP_WRITE, &body).and_then(|r| status(&r));
            let closed = conn.close(&handle);
            return written
                .and(closed)
                .map_err(|e| self.map_err("write", key, e));
        }
        let (handle, tmp) = self.create_tmp(&conn, key)?;
        let body = Out::default().bytes(&handle).u64(0).bytes(data);
        let written = conn
            .call(FXP_WRITE, &body)
            .and_then(|r| status(&r))
            .and_then(|()| fsync(&conn, &handle));
        let closed = conn.close(&handle);
        let result = match written.and(closed) {
            Err(e) => Err(self.map_err("write", key, e)),
            Ok(()) => {
                match conn.extended("hardlink@openssh.com", &Out::default().str(&tmp).str(&path)) {
                    Ok(()) => Ok(()),
                    Err(_) if conn.stat(&path).is_ok() => Err(Error::AlreadyExists {
                        path: self.shown(key),
                    }),
                    Err(e) => Err(self.map_err("create", key, e)),
                }
            }
        };
        let _ = conn.remove(&tmp);
        result
    }

    fn get(&self, key: &str) -> Result<Box<dyn Read + Send>> {
        self.get_range(key, 0, u64::MAX)
    }

    fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Box<dyn Read + Send>> {
        check_key(key)?;
        let path = self.remote(key);
        // Only a regular file below real directories is opened: never a
        // symlink's target, and never a FIFO (the server's open would wait).
        let opened = self.retry(|c| {
            self.regular_file(c, key)?;
            c.open_file(&path, FXF_READ).map(|h| (Arc::clone(c), h))
        })?;
        let (conn, handle) = match opened {
            Ok(v) => v,
            Err(e) => return Err(self.map_err("open", key, e)),
        };
        Ok(Box::new(SftpReader::new(
            conn,
            handle,
            offset,
            offset.saturating_add(len),
        )))
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let dir = prefix.rsplit_once('/').map_or("", |(d, _)| d);
        if !dir.is_empty() {
            check_key(dir)?;
        }
        let mut out = Vec::new();
        let conn = self.conn()?;
        if self
            .way(&conn, dir)
            .map_err(|e| self.map_err("list", dir, e))?
            != Way::Directories
        {
            return Ok(out);
        }
        match self.walk(&conn, dir, &mut out) {
            Err(Error::Io { source, .. }) if source.kind() == io::ErrorKind::ConnectionAborted => {
                drop(conn);
                out.clear();
                self.walk(&*self.conn()?, dir, &mut out)?;
            }
            other => other?,
        }
        out.retain(|o| o.key.starts_with(prefix));
        Ok(out)
    }

    fn list_dirs(&self, prefix: &str) -> Result<Vec<String>> {
        let dir = prefix.trim_end_matches('/');
        if !dir.is_empty() {
            check_key(dir)?;
        }
        let listed = self.retry(|c| match self.way(c, dir)? {
            Way::Directories => c.read_dir(&self.remote(dir)),
            _ => Ok(Vec::new()),
        })?;
        let entries = match listed {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(self.map_err("list", dir, e)),
        };
        let mut names: Vec<String> = entries
            .into_iter()
            .filter(|(_, a)| a.is_dir)
            .map(|(n, _)| n)
            .collect();
        names.sort();
        Ok(names)
    }

    fn stat(&self, key: &str) -> Result<ObjectMeta> {
        check_key(key)?;
        let attrs = self
            .retry(|c| self.regular_file(c, key))?
            .map_err(|e| self.map_err("stat", key, e))?;
        Ok(ObjectMeta {
            key: key.to_owned(),
            size: attrs.size,
            modified: attrs
                .mtime
                .map(|t| UNIX_EPOCH + Duration::from_secs(u64::from(t))),
        })
    }

    fn delete(&self, key: &str) -> Result<()> {
        check_key(key)?;
        // Never through a symlinked directory; a key naming a symlink
        // removes the link itself.
        let removed = self.retry(|c| match self.way(c, parent_of(key))? {
            Way::Directories => c.remove(&self.remote(key)),
            _ => Err(io::ErrorKind::NotFound.into()),
        })?;
        match removed {
            Ok(()) => {
                self.prune_dirs(&*self.conn()?, key);
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.map_err("delete", key, e)),
        }
    }

    fn sweep(&self, prefix: &str) -> Result<()> {
        let dir = prefix.trim_end_matches('/');
        if dir.is_empty() {
            return Ok(());
        }
        check_key(dir)?;
        let conn = self.conn()?;
        if self
            .way(&conn, dir)
            .map_err(|e| self.map_err("list", dir, e))?
            != Way::Directories
        {
            return Ok(());
        }
        self.sweep_dir(&conn, dir)
    }
}

impl SftpTarget {
    /// The attributes of `key` when it is a regular file below real
    /// directories; a not-found error otherwise.
    fn regular_file(&self, c: &Conn, key: &str) -> io::Result<protocol::Attrs> {
        if self.way(c, parent_of(key))? != Way::Directories {
            return Err(io::ErrorKind::NotFound.into());
        }
        let attrs = c.lstat(&self.remote(key))?;
        if attrs.is_file {
            Ok(attrs)
        } else {
            Err(io::ErrorKind::NotFound.into())
        }
    }

    /// Removes temporary files below `dir`, then the directories left empty.
    fn sweep_dir(&self, conn: &Conn, dir: &str) -> Result<()> {
        let entries = match conn.read_dir(&self.remote(dir)) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(self.map_err("list", dir, e)),
        };
        for (name, attrs) in entries {
            let key = format!("{dir}/{name}");
            if attrs.is_dir {
                self.sweep_dir(conn, &key)?;
            } else if name.contains(TMP_MARK) {
                match conn.remove(&self.remote(&key)) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(self.map_err("delete", &key, e)),
                }
            }
        }
        let _ = conn.rmdir(&self.remote(dir));
        self.prune_dirs(conn, dir);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use backup_core::testgen::Gen;

    fn open(location: &str, pairs: &[(&str, &str)]) -> Result<SftpTarget> {
        let options = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        SftpTarget::open(location, &options)
    }

    const PASSWORD_REFUSED: &str = "sftp URLs cannot carry a password: ssh uses keys or an \
                                    agent; remove it from the URL";

    #[test]
    fn a_password_in_the_url_is_refused_and_never_shown() {
        for location in [
            "sftp://backup:hunter2-SECRET@nas.lab:2222/srv/backups",
            "ssh://backup:hunter2-SECRET@nas.lab/srv",
            "sftp://backup:hunter2-SECRET@[::1]:22/x",
            "sftp://a@b:hunter2-SECRET@nas/x",
            "sftp://backup:hunter2@SECRET@nas/x",
            "sftp://backup:hunter2-SECRET@/x",
            "sftp://backup:hunter2-SECRET@host:port/x",
            "sftp://backup:hunter2-SECRET@host/../x",
            "sftp://backup:@host/x",
        ] {
            for options in [&[][..], &[("connect_timeout", "x")], &[("nope", "1")]] {
                let err = open(location, options).unwrap_err();
                assert!(matches!(err, Error::InvalidInput(_)), "{location}: {err}");
                assert_eq!(
                    err.to_string(),
                    format!("invalid option: {PASSWORD_REFUSED}")
                );
                let debug = format!("{err:?}");
                assert!(
                    !debug.contains("SECRET") && !debug.contains("hunter2"),
                    "{debug}"
                );
            }
        }
    }

    /// Messages about a bad URL or option never show the URL (which may
    /// hold a secret) or an option's value.
    #[test]
    fn url_and_option_errors_never_show_the_url_or_values() {
        for (location, options) in [
            ("sftp://host:SECRET/x", &[][..]),
            ("sftp://SECRET", &[]),
            ("sftp://SECRET@/x", &[]),
            ("sftp://[SECRET/x", &[]),
            ("sftp://[::1]SECRET/x", &[]),
            ("sftp://h/SECRET/../x", &[]),
            ("http://SECRET/x", &[]),
            ("sftp://h/x", &[("connect_timeout", "SECRET")]),
            ("sftp://h/x", &[("retries", "SECRET")]),
            ("sftp://h/x", &[("retries", "-1SECRET")]),
        ] {
            let err = open(location, options).unwrap_err();
            assert!(matches!(err, Error::InvalidInput(_)), "{location}: {err}");
            assert!(!err.to_string().contains("SECRET"), "{err}");
            assert!(!format!("{err:?}").contains("SECRET"), "{err:?}");
        }
        let err = open("sftp://h/x", &[("retries", "x")]).unwrap_err();
        assert!(err.to_string().contains("option retries"), "{err}");
    }

    /// Without a password, the ssh command line, the root and the location
    /// are as they always were.
    #[test]
    fn the_ssh_command_line_is_unchanged_for_urls_without_a_password() {
        let t = open(
            "sftp://backup@nas.lab:2222/srv/backups/",
            &[
                ("ssh_config", "/etc/backupkit/ssh_config"),
                ("identity_file", "/keys/id_ed25519"),
                ("connect_timeout", "30"),
            ],
        )
        .unwrap();
        assert_eq!(t.spec.program, "ssh");
        assert_eq!(
            t.spec.args,
            [
                "-i",
                "/keys/id_ed25519",
                "-F",
                "/etc/backupkit/ssh_config",
                "-o",
                "BatchMode=yes",
                "-o",
                "ServerAliveInterval=15",
                "-o",
                "ServerAliveCountMax=4",
                "-o",
                "ConnectTimeout=30",
                "-p",
                "2222",
                "-s",
                "--",
                "backup@nas.lab",
                "sftp",
            ]
        );
        assert_eq!(t.spec.host, "backup@nas.lab");
        assert_eq!(t.root, "/srv/backups");
        assert_eq!(t.location(), "sftp://backup@nas.lab:2222/srv/backups");
        assert!(format!("{t:?}").contains("sftp://backup@nas.lab:2222/srv/backups"));

        let t = open("ssh://nas/~/b", &[("ssh_command", "/usr/bin/ssh")]).unwrap();
        assert_eq!(t.spec.program, "/usr/bin/ssh");
        assert_eq!(
            t.spec.args,
            [
                "-o",
                "BatchMode=yes",
                "-o",
                "ServerAliveInterval=15",
                "-o",
                "ServerAliveCountMax=4",
                "-o",
                "ConnectTimeout=15",
                "-s",
                "--",
                "nas",
                "sftp",
            ]
        );
        assert_eq!(t.root, "b");
        assert_eq!(t.connect_attempts, 3);

        let t = open("sftp://u@[::1]:22/x", &[("retries", "0")]).unwrap();
        assert_eq!(t.spec.host, "u@::1");
        assert!(t.spec.args.ends_with(&[
            "-p".to_owned(),
            "22".to_owned(),
            "-s".to_owned(),
            "--".to_owned(),
            "u@::1".to_owned(),
            "sftp".to_owned()
        ]));
        assert_eq!(t.connect_attempts, 1);
    }

    /// Generated locations and options: never a panic; a generated password
    /// is always refused and never reaches a message, `Debug`, the location
    /// or the ssh command line.
    #[test]
    fn generated_urls_never_panic_nor_leak_a_password() {
        let mut g = Gen::new(31);
        for _ in 0..20_000 {
            let location = if g.below(2) == 0 {
                g.string(8)
            } else {
                format!(
                    "{}{}{}{}{}",
                    g.part(&["sftp://", "ssh://", "sftp:/", ""]),
                    g.part(&["", "user@", "a@b@", "@"]),
                    g.part(&["host", "[::1]", "[::1", "h:22", "h:", "h:x", ""]),
                    g.part(&["/", "/srv/b", "/~/b", "/..", ""]),
                    g.string(3),
                )
            };
            let key = g.part(&["connect_timeout", "retries", "ssh_config", "nope"]);
            let value = g.string(3);
            let _ = open(&location, &[(&key, &value)]);
            if let Ok(t) = open(&location, &[]) {
                let _ = (t.location(), format!("{t:?}"));
            }

            // A URL with a password somewhere in its user part.
            let user = g.string(2).replace(['/', ':'], "");
            let password = format!("PW{}", g.string(3).replace(['/', 'P'], ""));
            let rest = g.string(4).replace('P', "");
            let location = format!(
                "{}{user}:{password}@{}{rest}",
                g.part(&["sftp://", "ssh://"]),
                g.part(&["host/", "[::1]:22/", "h:22/x/", ""]),
            );
            match open(&location, &[]) {
                Err(e) => {
                    assert!(!e.to_string().contains(&password), "{location:?}: {e}");
                    assert!(!format!("{e:?}").contains(&password), "{location:?}");
                }
                Ok(t) => {
                    // The password's `@` ended the user part: what is
                    // left is no password, but nothing may show the
                    // part before `@`.
                    assert!(!t.spec.host.contains(':'), "{location:?}");
                    assert!(!t.spec.args.iter().any(|a| a.contains(&password)));
                }
            }
        }
    }
}
