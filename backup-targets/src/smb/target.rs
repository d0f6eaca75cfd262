//! `smb://[DOMAIN;]USER@HOST[:PORT]/SHARE/PATH` as a snapshot repository.
//!
//! Puts write a temporary file beside the key, ask the server to flush it,
//! and rename it over the key in one step (`FileRenameInformation` with
//! replace: the server swaps the name; there is no moment without a file).
//! `create_new` links a finished temporary file to the key, which fails if
//! the key exists. Connections are pooled; each streamed read or write
//! holds one, with a bounded buffer.

use std::collections::HashSet;
use std::fmt;
use std::io::{self, Read, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use backup_core::jobs::secret::Secret;
use backup_core::target::{ObjectMeta, ObjectWriter, TMP_MARK, check_key, tmp_key};
use backup_core::{Error, Result, Target, TargetOptions};

use super::conn::{
    CREATE, Config, DIRECTORY_FILE, Encryption, Handle, OPEN_IF, OPEN_REPARSE_POINT, Share,
};
use super::ops::Open;

/// Bytes a streamed write or read buffers (several requests in flight).
const STREAM_BUFFER: usize = 8 << 20;
/// The default bound on waiting for the server.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// A parsed `smb://` location: where, as whom, and the directory in the
/// share.
#[derive(Clone)]
pub struct Location {
    pub config: Config,
    /// The directory inside the share, `/`-separated, without slashes at
    /// either end (empty for the share's root).
    pub path: String,
}

impl fmt::Debug for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown())
    }
}

impl Location {
    /// Parses a location and its options (`password_env`, `password_file`,
    /// `password_command`, `domain`, `timeout`, `encryption`); without a
    /// password option, `SMB_PASSWORD` is read.
    ///
    /// # Errors
    ///
    /// A malformed location, an unknown option, a password in the URL, or
    /// no password anywhere.
    pub fn parse(location: &str, options: &TargetOptions) -> Result<Location> {
        Self::parse_with(location, options, true)
    }

    /// Checks a location and its options as [`Location::parse`] does,
    /// without reading the password (no variable, file or command).
    ///
    /// # Errors
    ///
    /// What [`Location::parse`] would give, but for the password.
    pub fn check(location: &str, options: &TargetOptions) -> Result<()> {
        Self::parse_with(location, options, false).map(|_| ())
    }

    fn parse_with(location: &str, options: &TargetOptions, resolve: bool) -> Result<Location> {
        let bad = |why: &str| {
            Error::InvalidInput(format!(
                "bad SMB location {}: {why} (expected smb://[DOMAIN;]USER@HOST[:PORT]/SHARE/PATH)",
                redact(location)
            ))
        };
        let rest = location
            .strip_prefix("smb://")
            .ok_or_else(|| bad("it must start with smb://"))?;
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (user_info, host_port) = authority
            .rsplit_once('@')
            .ok_or_else(|| bad("no user (USER@HOST)"))?;
        if user_info.contains(':') {
            return Err(Error::InvalidInput(
                "an SMB location may not hold a password: give it with -o password_env=VAR, \
                 password_file=PATH or password_command=CMD, or in SMB_PASSWORD"
                    .into(),
            ));
        }
        let user_info = percent_decode(user_info).ok_or_else(|| bad("bad %-escape in the user"))?;
        let (mut domain, user) = match user_info.split_once(';') {
            Some((d, u)) => (d.to_owned(), u.to_owned()),
            None => (String::new(), user_info),
        };
        if user.is_empty() {
            return Err(bad("no user (USER@HOST)"));
        }
        let (host, port) = match host_port.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (
                h,
                p.parse::<u16>()
                    .map_err(|_| bad("the port is not a number"))?,
            ),
            _ => (host_port, 445),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let path = percent_decode(path).ok_or_else(|| bad("bad %-escape in the path"))?;
        let path = path.trim_matches('/');
        let (share, dir) = path.split_once('/').unwrap_or((path, ""));
        if share.is_empty() {
            return Err(bad("no share (HOST/SHARE)"));
        }
        let dir = dir.trim_matches('/');
        if !dir.is_empty() {
            check_key(dir).map_err(|_| bad("the path may not hold `.` or `..` or empty parts"))?;
        }
        let (password, timeout, encryption) = parse_options(options, &mut domain)?;
        let password = match password {
            _ if !resolve => String::new(),
            Some(secret) => secret
                .resolve()
                .map_err(|e| Error::InvalidInput(format!("the SMB password for {user}: {e}")))?,
            None => std::env::var("SMB_PASSWORD").map_err(|_| {
                Error::InvalidInput(format!(
                    "no password for the SMB user {user}: set SMB_PASSWORD, or give -o \
                     password_env=VAR, password_file=PATH or password_command=CMD"
                ))
            })?,
        };
        Ok(Location {
            config: Config {
                host: host.to_owned(),
                port,
                share: share.to_owned(),
                domain,
                user,
                password,
                timeout,
                encryption,
            },
            path: dir.to_owned(),
        })
    }

    /// The location as messages show it (never a password).
    pub fn shown(&self) -> String {
        let c = &self.config;
        let domain = if c.domain.is_empty() {
            String::new()
        } else {
            format!("{};", c.domain)
        };
        let port = if c.port == 445 {
            String::new()
        } else {
            format!(":{}", c.port)
        };
        let path = if self.path.is_empty() {
            String::new()
        } else {
            format!("/{}", self.path)
        };
        format!(
            "smb://{domain}{}@{}{port}/{}{path}",
            c.user, c.host, c.share
        )
    }

    /// The share-relative path of `key` (or of the root, for "").
    pub fn join(&self, key: &str) -> String {
        match (self.path.is_empty(), key.is_empty()) {
            (true, _) => key.to_owned(),
            (false, true) => self.path.clone(),
            (false, false) => format!("{}/{key}", self.path),
        }
    }
}

/// The options of an `smb://` location: the password's source, `domain`
/// (which overrides the location's), `timeout` and `encryption`.
fn parse_options(
    options: &TargetOptions,
    domain: &mut String,
) -> Result<(Option<Secret>, Duration, Encryption)> {
    let mut password = None;
    let mut timeout = DEFAULT_TIMEOUT;
    let mut encryption = Encryption::Auto;
    for (key, value) in options {
        match key.as_str() {
            // `password` itself is what a config file's `password_env:`,
            // `_file:` or `_command:` becomes once read.
            "password" => password = Some(Secret::Inline(value.clone())),
            "password_env" | "password_file" | "password_command" => {
                let suffix = &key["password".len()..];
                password = Secret::from_suffix(suffix, value.clone());
            }
            "domain" => domain.clone_from(value),
            "timeout" => timeout = crate::parse_duration(key, value)?,
            "encryption" => {
                encryption = match value.as_str() {
                    "auto" => Encryption::Auto,
                    "required" => Encryption::Required,
                    "off" => Encryption::Off,
                    _ => {
                        return Err(Error::InvalidInput(format!(
                            "bad value {value:?} for option encryption (auto, required or off)"
                        )));
                    }
                }
            }
            _ => {
                return Err(Error::InvalidInput(format!(
                    "unknown option {key:?} for SMB locations (known: password_env, \
                         password_file, password_command, password, domain, timeout, encryption)"
                )));
            }
        }
    }
    Ok((password, timeout, encryption))
}

/// Hides anything between `//` and `@` that looks like a password.
fn redact(location: &str) -> String {
    match (location.find("//"), location.find('@')) {
        (Some(a), Some(b)) if a < b && location[a..b].contains(':') => {
            format!("{}***{}", &location[..a + 2], &location[b..])
        }
        _ => location.to_owned(),
    }
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Open connections, reused one operation after another.
#[derive(Debug)]
pub(crate) struct Pool {
    config: Config,
    shown: String,
    /// Connections not in use, with when each was given back.
    idle: Mutex<Vec<(Share, Instant)>>,
}

/// A connection idle for longer is asked whether it still works before it
/// is used again: servers drop idle sessions (Windows after 15 minutes),
/// and a dropped one would fail the operation given it.
const IDLE_CHECK: Duration = Duration::from_secs(30);

impl Pool {
    pub fn new(location: &Location) -> Arc<Pool> {
        Arc::new(Pool {
            config: location.config.clone(),
            shown: location.shown(),
            idle: Mutex::new(Vec::new()),
        })
    }

    /// A connection: an idle one that still works, or a new one.
    pub fn take(&self) -> Result<Share> {
        loop {
            let idle = self
                .idle
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .pop();
            let Some((mut share, since)) = idle else {
                break;
            };
            if since.elapsed() < IDLE_CHECK || share.echo().is_ok() {
                return Ok(share);
            }
        }
        Share::connect(&self.config).map_err(|e| to_error("connect to", &self.shown, e))
    }

    /// Gives a connection back, unless it broke.
    pub fn give(&self, share: Share) {
        if !share.is_broken() {
            self.idle
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push((share, Instant::now()));
        }
    }

    /// Runs `op` on a connection.
    pub fn with<T>(&self, op: impl FnOnce(&mut Share) -> io::Result<T>) -> io::Result<T> {
        let mut share = self.take().map_err(io::Error::other)?;
        let out = op(&mut share);
        self.give(share);
        out
    }
}

/// An `io::Error` of the client as backupkit's error.
pub(crate) fn to_error(action: &'static str, path: &str, e: io::Error) -> Error {
    match e.kind() {
        io::ErrorKind::NotFound => Error::NotFound {
            what: "object",
            path: path.to_owned(),
        },
        io::ErrorKind::AlreadyExists => Error::AlreadyExists {
            path: path.to_owned(),
        },
        _ => Error::io(action, path, e),
    }
}

/// A snapshot repository on an SMB share.
#[derive(Debug)]
pub struct SmbTarget {
    location: Location,
    pool: Arc<Pool>,
    /// Directories known to exist (made or seen), so puts skip them.
    dirs: Mutex<HashSet<String>>,
}

impl SmbTarget {
    /// Opens an `smb://` location; connects once, so that a wrong password
    /// or share fails here.
    ///
    /// # Errors
    ///
    /// A bad location or option, or the server's refusal.
    pub fn open(location: &str, options: &TargetOptions) -> Result<SmbTarget> {
        let location = Location::parse(location, options)?;
        let pool = Pool::new(&location);
        let share = pool.take()?;
        pool.give(share);
        Ok(SmbTarget {
            location,
            pool,
            dirs: Mutex::new(HashSet::new()),
        })
    }

    pub(crate) fn shown(&self, key: &str) -> String {
        if key.is_empty() {
            self.location.shown()
        } else {
            format!("{}/{key}", self.location.shown())
        }
    }

    pub(crate) fn location_ref(&self) -> &Location {
        &self.location
    }

    pub(crate) fn pool(&self) -> &Pool {
        &self.pool
    }

    /// A streamed write of a temporary file beside `path` (share-relative)
    /// that replaces `path` at commit, with `mtime` (FILETIME) set on it.
    pub(crate) fn writer(&self, path: &str, shown: String) -> Result<SmbWriter> {
        let mut share = self.pool.take()?;
        // The temporary file itself is created with the first block sent
        // (for a small file, in the same message as its data).
        if let Err(e) = self.make_parents(&mut share, path) {
            self.pool.give(share);
            return Err(to_error("create", &shown, e));
        }
        Ok(SmbWriter {
            pool: Arc::clone(&self.pool),
            share: Some(share),
            handle: None,
            tmp: tmp_key(path),
            path: path.to_owned(),
            shown,
            buf: Vec::with_capacity(STREAM_BUFFER),
            offset: 0,
            mtime: None,
            uploader: None,
        })
    }

    /// A streamed read of the file at `path` (share-relative).
    pub(crate) fn reader(&self, path: &str, shown: String) -> Result<SmbReader> {
        let mut share = self.pool.take()?;
        let handle = match share.open(path, Open::read()) {
            Ok(h) if !h.is_dir() && !h.is_reparse_point() => h,
            Ok(h) => {
                let _ = share.close(h);
                self.pool.give(share);
                return Err(Error::NotFound {
                    what: "file",
                    path: shown,
                });
            }
            Err(e) => {
                self.pool.give(share);
                return Err(to_error("open", &shown, e));
            }
        };
        Ok(SmbReader {
            pool: Arc::clone(&self.pool),
            share: Some(share),
            handle,
            offset: 0,
            end: u64::MAX,
            buf: Vec::new(),
            pos: 0,
        })
    }

    /// Forgets the directories at and below `path` (share-relative), which
    /// were removed.
    pub(crate) fn forget_dirs(&self, path: &str) {
        let below = format!("{path}/");
        self.dirs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|d| d != path && !d.starts_with(&below));
    }

    /// Makes the directories above `path` (share-relative), as `mkdir -p`;
    /// never through a symlink or junction (a reparse point).
    pub(crate) fn make_parents(&self, share: &mut Share, path: &str) -> io::Result<()> {
        let Some((parent, _)) = path.rsplit_once('/') else {
            return Ok(());
        };
        let mut known = self
            .dirs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if known.contains(parent) {
            return Ok(());
        }
        let mut at = String::new();
        for part in parent.split('/') {
            if !at.is_empty() {
                at.push('/');
            }
            at.push_str(part);
            if known.contains(&at) {
                continue;
            }
            let h = share.open(
                &at,
                Open {
                    options: DIRECTORY_FILE | OPEN_REPARSE_POINT,
                    ..Open::directory(OPEN_IF)
                },
            )?;
            share.close(h)?;
            if h.is_reparse_point() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "{at} is a symlink or junction on the share: nothing is written through one"
                    ),
                ));
            }
            known.insert(at.clone());
        }
        Ok(())
    }

    /// Writes `data` to a fresh temporary file beside `path`.
    fn write_tmp(&self, share: &mut Share, path: &str, data: &[u8]) -> io::Result<Handle> {
        self.make_parents(share, path)?;
        share.create_with(&tmp_key(path), Open::write(CREATE), data, None)
    }

    fn walk(
        share: &mut Share,
        dir: &str,
        key_prefix: &str,
        out: &mut Vec<ObjectMeta>,
    ) -> io::Result<()> {
        let entries = match share.list(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        for e in entries {
            if e.name.contains(TMP_MARK) || e.info.is_reparse_point() {
                continue;
            }
            let key = format!("{key_prefix}{}", e.name);
            let path = if dir.is_empty() {
                e.name.clone()
            } else {
                format!("{dir}/{}", e.name)
            };
            if e.info.is_dir() {
                Self::walk(share, &path, &format!("{key}/"), out)?;
            } else {
                out.push(ObjectMeta {
                    key,
                    size: e.info.size,
                    modified: Some(e.info.modified()),
                });
            }
        }
        Ok(())
    }

    /// Removes empty directories from `path`'s parent up to the root.
    fn prune(&self, share: &mut Share, path: &str) {
        let mut dir = path.rsplit_once('/').map(|(d, _)| d.to_owned());
        let root = &self.location.path;
        while let Some(d) = dir {
            if d.len() <= root.len() || share.remove(&d).is_err() {
                break;
            }
            self.dirs
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .remove(&d);
            dir = d.rsplit_once('/').map(|(p, _)| p.to_owned());
        }
    }
}

/// Deletes an unfinished temporary file (best effort: a leftover is swept).
impl Target for SmbTarget {
    fn location(&self) -> String {
        self.location.shown()
    }

    fn put(&self, key: &str) -> Result<Box<dyn ObjectWriter>> {
        check_key(key)?;
        Ok(Box::new(
            self.writer(&self.location.join(key), self.shown(key))?,
        ))
    }

    fn create_new(&self, key: &str, data: &[u8]) -> Result<()> {
        check_key(key)?;
        let path = self.location.join(key);
        self.pool
            .with(|share| {
                let h = self.write_tmp(share, &path, data)?;
                let linked = share.link(h, &path);
                share.discard(h);
                linked
            })
            .map_err(|e| to_error("create", &self.shown(key), e))
    }

    fn get(&self, key: &str) -> Result<Box<dyn Read + Send>> {
        self.get_range(key, 0, u64::MAX)
    }

    fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Box<dyn Read + Send>> {
        check_key(key)?;
        let mut r = self.reader(&self.location.join(key), self.shown(key))?;
        r.offset = offset;
        r.end = offset.saturating_add(len);
        Ok(Box::new(r))
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let dir_part = prefix.rsplit_once('/').map_or("", |(d, _)| d);
        if !dir_part.is_empty() {
            check_key(dir_part)?;
        }
        let start = self.location.join(dir_part);
        let key_prefix = if dir_part.is_empty() {
            String::new()
        } else {
            format!("{dir_part}/")
        };
        let mut out = Vec::new();
        self.pool
            .with(|share| Self::walk(share, &start, &key_prefix, &mut out))
            .map_err(|e| to_error("list", &self.shown(prefix), e))?;
        out.retain(|o| o.key.starts_with(prefix));
        Ok(out)
    }

    fn list_dirs(&self, prefix: &str) -> Result<Vec<String>> {
        let dir = prefix.trim_end_matches('/');
        if !dir.is_empty() {
            check_key(dir)?;
        }
        let entries = match self.pool.with(|share| share.list(&self.location.join(dir))) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(to_error("list", &self.shown(prefix), e)),
        };
        let mut out: Vec<String> = entries
            .into_iter()
            .filter(|e| e.info.is_dir() && !e.info.is_reparse_point())
            .map(|e| e.name)
            .collect();
        out.sort();
        Ok(out)
    }

    fn stat(&self, key: &str) -> Result<ObjectMeta> {
        check_key(key)?;
        let info = self
            .pool
            .with(|share| share.stat(&self.location.join(key)))
            .map_err(|e| to_error("inspect", &self.shown(key), e))?;
        if info.is_dir() {
            return Err(Error::NotFound {
                what: "object",
                path: self.shown(key),
            });
        }
        Ok(ObjectMeta {
            key: key.to_owned(),
            size: info.size,
            modified: Some(info.modified()),
        })
    }

    fn delete(&self, key: &str) -> Result<()> {
        check_key(key)?;
        let path = self.location.join(key);
        self.pool
            .with(|share| {
                let h = share.open(&path, Open::modify())?;
                if h.is_dir() {
                    share.close(h)?;
                    return Err(io::ErrorKind::NotFound.into());
                }
                let marked = share.delete_on_close(h);
                share.close(h)?;
                marked?;
                self.prune(share, &path);
                Ok(())
            })
            .map_err(|e| to_error("delete", &self.shown(key), e))
    }

    fn sweep(&self, prefix: &str) -> Result<()> {
        let dir = self.location.join(prefix.trim_end_matches('/'));
        self.pool
            .with(|share| {
                let entries = match share.list(&dir) {
                    Ok(e) => e,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                    Err(e) => return Err(e),
                };
                for e in entries
                    .iter()
                    .filter(|e| e.name.contains(TMP_MARK) && !e.info.is_dir())
                {
                    let _ = share.remove(&format!("{dir}/{}", e.name));
                }
                self.prune(share, &format!("{dir}/x"));
                Ok(())
            })
            .map_err(|e| to_error("sweep", &self.shown(prefix), e))
    }
}

/// A put in progress: a temporary file, written in blocks of
/// `STREAM_BUFFER`; nothing is at the key until `commit`.
pub(crate) struct SmbWriter {
    pool: Arc<Pool>,
    share: Option<Share>,
    /// The temporary file, once created; `None` again once it is renamed
    /// and closed.
    handle: Option<Handle>,
    /// The temporary file's name, beside the final one.
    tmp: String,
    path: String,
    shown: String,
    buf: Vec<u8>,
    offset: u64,
    /// The modification time (FILETIME) to set once the data is written.
    pub(crate) mtime: Option<u64>,
    /// From the second block on, blocks go to the server on a thread of
    /// their own (which then holds the connection).
    uploader: Option<Uploader>,
}

/// Writes blocks on a thread of its own, so that whoever fills the next
/// block (a compressor, a hash) does not wait for the server: at most two
/// blocks exist, one being filled and one being sent.
struct Uploader {
    blocks: std::sync::mpsc::SyncSender<Vec<u8>>,
    spare: std::sync::mpsc::Receiver<Vec<u8>>,
    thread: std::thread::JoinHandle<(Share, io::Result<u64>)>,
}

impl Uploader {
    fn start(mut conn: Share, handle: Handle, mut offset: u64) -> Uploader {
        let (blocks, incoming) = std::sync::mpsc::sync_channel::<Vec<u8>>(0);
        let (give_back, spare) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            for mut block in incoming {
                match conn.write_from(handle, offset, &mut block.as_slice()) {
                    Ok(n) => offset += n,
                    // Dropping `incoming` fails the writer's next send.
                    Err(e) => return (conn, Err(e)),
                }
                block.clear();
                let _ = give_back.send(block);
            }
            (conn, Ok(offset))
        });
        Uploader {
            blocks,
            spare,
            thread,
        }
    }

    /// Waits for every block sent; gives the connection back with the
    /// offset reached, or the first failure.
    fn finish(self) -> (Option<Share>, io::Result<u64>) {
        drop(self.blocks);
        match self.thread.join() {
            Ok((share, result)) => (Some(share), result),
            Err(_) => (
                None,
                Err(io::Error::other("the SMB upload thread panicked")),
            ),
        }
    }
}

impl SmbWriter {
    fn share(&mut self) -> io::Result<&mut Share> {
        self.share
            .as_mut()
            .ok_or_else(|| io::Error::other("writer already finished"))
    }

    /// The temporary file's handle, created now if it is not yet.
    fn opened(&mut self) -> io::Result<Handle> {
        if let Some(h) = self.handle {
            return Ok(h);
        }
        let tmp = self.tmp.clone();
        let h = self.share()?.open(&tmp, Open::write(CREATE))?;
        self.handle = Some(h);
        Ok(h)
    }

    /// Sends what is buffered: on this thread for the first block (a small
    /// file needs no second thread), then, while `more` is coming, through
    /// the uploader.
    fn drain(&mut self, more: bool) -> io::Result<()> {
        let handle = self.opened()?;
        if more && self.uploader.is_none() && self.offset > 0 {
            let share = self
                .share
                .take()
                .ok_or_else(|| io::Error::other("writer already finished"))?;
            self.uploader = Some(Uploader::start(share, handle, self.offset));
        }
        if let Some(up) = &self.uploader {
            if self.buf.is_empty() {
                return Ok(());
            }
            let next = up
                .spare
                .try_recv()
                .unwrap_or_else(|_| Vec::with_capacity(STREAM_BUFFER));
            let block = std::mem::replace(&mut self.buf, next);
            if up.blocks.send(block).is_err() {
                return Err(self
                    .settle()
                    .err()
                    .unwrap_or_else(|| io::Error::other("the SMB upload stopped")));
            }
            return Ok(());
        }
        let offset = self.offset;
        let buf = std::mem::take(&mut self.buf);
        let sent = self
            .share()?
            .write_from(handle, offset, &mut buf.as_slice());
        self.buf = buf;
        self.offset += sent?;
        self.buf.clear();
        Ok(())
    }

    /// Waits for the uploader, if any, and takes the connection back.
    fn settle(&mut self) -> io::Result<()> {
        let Some(up) = self.uploader.take() else {
            return Ok(());
        };
        let (share, result) = up.finish();
        self.share = share;
        self.offset = result?;
        Ok(())
    }

    /// Writes what is buffered, sets the mtime and flushes; the temporary
    /// file then holds everything. A small file (nothing sent yet, one
    /// write's worth) goes in one message: create, write, times, flush.
    fn write_out(&mut self) -> io::Result<Handle> {
        let mtime = self.mtime;
        if self.handle.is_none() {
            let tmp = self.tmp.clone();
            let buf = std::mem::take(&mut self.buf);
            let made = self
                .share()?
                .create_with(&tmp, Open::write(CREATE), &buf, mtime);
            self.buf = buf;
            let h = made?;
            self.handle = Some(h);
            return Ok(h);
        }
        self.drain(false)?;
        self.settle()?;
        let h = self.opened()?;
        // The times after the last write, which would move them again.
        self.share()?.settle(h, mtime)?;
        Ok(h)
    }
}

impl Write for SmbWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = STREAM_BUFFER - self.buf.len();
        let n = room.min(data.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == STREAM_BUFFER {
            self.drain(true)?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl SmbWriter {
    /// Writes everything, then renames the temporary file over the final
    /// name and closes it (one message).
    pub(crate) fn finish(&mut self) -> Result<()> {
        let result = self.write_out().and_then(|h| {
            let (path, tmp) = (self.path.clone(), self.tmp.clone());
            let share = self.share()?;
            let renamed = share.rename_and_close(h, &path);
            if renamed.is_err() && !share.is_broken() {
                // Closed but not renamed: the temporary file goes.
                let _ = share.remove(&tmp);
            }
            // The handle is closed either way.
            self.handle = None;
            renamed
        });
        if let Err(e) = result {
            return Err(to_error("write", &self.shown, e));
        }
        if let Some(share) = self.share.take() {
            self.pool.give(share);
        }
        Ok(())
    }
}

impl ObjectWriter for SmbWriter {
    fn commit(mut self: Box<Self>) -> Result<()> {
        self.finish()
    }
}

impl Drop for SmbWriter {
    fn drop(&mut self) {
        // Not committed (or the commit failed): the temporary file goes.
        let _ = self.settle();
        if let Some(mut share) = self.share.take() {
            // A broken connection's handles are closed by the server (a
            // temporary file left is swept later).
            if let Some(h) = self.handle
                && !share.is_broken()
            {
                share.discard(h);
            }
            self.pool.give(share);
        }
    }
}

/// A streamed get: reads ahead `STREAM_BUFFER` at a time.
pub(crate) struct SmbReader {
    pool: Arc<Pool>,
    share: Option<Share>,
    handle: Handle,
    offset: u64,
    /// Where the read stops (`u64::MAX`: at the end of the file).
    end: u64,
    buf: Vec<u8>,
    pos: usize,
}

impl Read for SmbReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.pos == self.buf.len() {
            let want = (self.end - self.offset).min(STREAM_BUFFER as u64);
            if want == 0 {
                return Ok(0);
            }
            let share = self
                .share
                .as_mut()
                .ok_or_else(|| io::Error::other("reader closed"))?;
            self.buf.clear();
            self.pos = 0;
            let n = share.read_into(self.handle, self.offset, want, &mut self.buf)?;
            self.offset += n;
            if n == 0 {
                return Ok(0);
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl Drop for SmbReader {
    fn drop(&mut self) {
        if let Some(mut share) = self.share.take() {
            if !share.is_broken() {
                let _ = share.close(self.handle);
            }
            self.pool.give(share);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(loc: &str, opts: &[(&str, &str)]) -> Result<Location> {
        let options = opts
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Location::parse(loc, &options)
    }

    #[test]
    fn locations_parse_and_show_no_password() {
        // SAFETY-free: the test sets no variable; a password comes inline.
        let opts = [("password_command", "echo s3cret")];
        let l = parse(
            "smb://LAB;cole@ramanfile.local/ramanfiles/cole/backups/",
            &opts,
        )
        .unwrap();
        assert_eq!(l.config.domain, "LAB");
        assert_eq!(l.config.user, "cole");
        assert_eq!(l.config.host, "ramanfile.local");
        assert_eq!(l.config.port, 445);
        assert_eq!(l.config.share, "ramanfiles");
        assert_eq!(l.path, "cole/backups");
        assert_eq!(l.config.password, "s3cret");
        assert_eq!(
            l.shown(),
            "smb://LAB;cole@ramanfile.local/ramanfiles/cole/backups"
        );
        assert!(!format!("{l:?}").contains("s3cret"));
        assert_eq!(l.join("locks/x"), "cole/backups/locks/x");

        let l = parse("smb://u%20x@127.0.0.1:4450/share", &opts).unwrap();
        assert_eq!(
            (l.config.user.as_str(), l.config.port, l.path.as_str()),
            ("u x", 4450, "")
        );
        assert_eq!(l.join("a"), "a");

        let err = parse("smb://cole:hunter2@host/share", &opts)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("may not hold a password") && !err.contains("hunter2"),
            "{err}"
        );
        for (bad, why) in [
            ("smb://host/share", "no user"),
            ("smb://u@host", "no share"),
            ("smb://u@host:x/share", "port"),
            ("smb://u@host/share/../x", "`..`"),
        ] {
            let err = parse(bad, &opts).unwrap_err().to_string();
            assert!(err.contains(why), "{bad}: {err}");
        }
        let err = parse("smb://u@h/s", &[("passwd", "x")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown option \"passwd\""), "{err}");
        let err = parse(
            "smb://u@h/s",
            &[("password_env", "BACKUPKIT_NO_SUCH_VARIABLE")],
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("BACKUPKIT_NO_SUCH_VARIABLE is not set"),
            "{err}"
        );
        let err = parse(
            "smb://u@h/s",
            &[("password_command", "echo x"), ("encryption", "maybe")],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("auto, required or off"), "{err}");
    }
}
