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

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::io::{self, BufReader, Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use backup_core::registry::TargetOptions;
use backup_core::target::{TMP_MARK, check_key, tmp_key};
use backup_core::{Error, ObjectMeta, ObjectWriter, Result, Target};

const FXP_INIT: u8 = 1;
const FXP_VERSION: u8 = 2;
const FXP_OPEN: u8 = 3;
const FXP_CLOSE: u8 = 4;
const FXP_READ: u8 = 5;
const FXP_WRITE: u8 = 6;
const FXP_OPENDIR: u8 = 11;
const FXP_READDIR: u8 = 12;
const FXP_REMOVE: u8 = 13;
const FXP_MKDIR: u8 = 14;
const FXP_RMDIR: u8 = 15;
const FXP_STAT: u8 = 17;
const FXP_RENAME: u8 = 18;
const FXP_EXTENDED: u8 = 200;
const FXP_STATUS: u8 = 101;
const FXP_HANDLE: u8 = 102;
const FXP_DATA: u8 = 103;
const FXP_NAME: u8 = 104;
const FXP_ATTRS: u8 = 105;

const FXF_READ: u32 = 0x01;
const FXF_WRITE: u32 = 0x02;
const FXF_CREAT: u32 = 0x08;
const FXF_TRUNC: u32 = 0x10;
const FXF_EXCL: u32 = 0x20;

const FX_OK: u32 = 0;
const FX_EOF: u32 = 1;
const FX_NO_SUCH_FILE: u32 = 2;
const FX_PERMISSION_DENIED: u32 = 3;

const ATTR_SIZE: u32 = 0x1;
const ATTR_UIDGID: u32 = 0x2;
const ATTR_PERMISSIONS: u32 = 0x4;
const ATTR_ACMODTIME: u32 = 0x8;
const ATTR_EXTENDED: u32 = 0x8000_0000;

/// Bytes per read or write request; OpenSSH accepts up to 256 KiB.
const CHUNK: usize = 64 << 10;
/// Requests in flight per stream: a 4 MiB window.
const IN_FLIGHT: usize = 64;
/// Largest reply accepted from the server.
const MAX_PACKET: usize = 1 << 20;

/// One reply: its type and the payload after the request id.
struct Reply {
    kind: u8,
    body: Vec<u8>,
}

/// How to reach the server.
#[derive(Clone)]
struct Spec {
    program: String,
    args: Vec<String>,
    /// `user@host` or an ssh-config alias, for messages.
    host: String,
}

/// One `ssh -s sftp` session.
struct Conn {
    child: Mutex<Child>,
    stdin: Mutex<ChildStdin>,
    pending: Arc<Mutex<HashMap<u32, SyncSender<Reply>>>>,
    next_id: AtomicU32,
    alive: Arc<AtomicBool>,
    stderr: Arc<Mutex<String>>,
    extensions: Vec<String>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        if let Ok(mut child) = self.child.lock() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Big-endian SFTP encoding.
#[derive(Default)]
struct Out(Vec<u8>);

impl Out {
    fn u32(mut self, v: u32) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn u64(mut self, v: u64) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn bytes(mut self, b: &[u8]) -> Self {
        self = self.u32(b.len() as u32);
        self.0.extend_from_slice(b);
        self
    }
    fn str(self, s: &str) -> Self {
        self.bytes(s.as_bytes())
    }
}

/// A cursor over a reply.
struct In<'a>(&'a [u8]);

impl<'a> In<'a> {
    fn take(&mut self, n: usize) -> io::Result<&'a [u8]> {
        if self.0.len() < n {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "truncated SFTP reply",
            ));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u32(&mut self) -> io::Result<u32> {
        Ok(u32::from_be_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn u64(&mut self) -> io::Result<u64> {
        Ok(u64::from_be_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    fn bytes(&mut self) -> io::Result<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    fn string(&mut self) -> io::Result<String> {
        Ok(String::from_utf8_lossy(self.bytes()?).into_owned())
    }
}

/// File attributes, as far as backupkit needs them.
#[derive(Debug, Default, Clone, Copy)]
struct Attrs {
    size: u64,
    mtime: Option<u32>,
    is_dir: bool,
    is_file: bool,
}

fn parse_attrs(r: &mut In<'_>) -> io::Result<Attrs> {
    let flags = r.u32()?;
    let mut a = Attrs::default();
    if flags & ATTR_SIZE != 0 {
        a.size = r.u64()?;
    }
    if flags & ATTR_UIDGID != 0 {
        r.take(8)?;
    }
    if flags & ATTR_PERMISSIONS != 0 {
        let mode = r.u32()? & 0o170_000;
        a.is_dir = mode == 0o040_000;
        a.is_file = mode == 0o100_000;
    }
    if flags & ATTR_ACMODTIME != 0 {
        r.u32()?;
        a.mtime = Some(r.u32()?);
    }
    if flags & ATTR_EXTENDED != 0 {
        for _ in 0..r.u32()? {
            r.bytes()?;
            r.bytes()?;
        }
    }
    Ok(a)
}

fn read_packet(r: &mut impl Read) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len)?;
    let len = u32::from_be_bytes(len) as usize;
    if len == 0 || len > MAX_PACKET {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("SFTP packet of {len} bytes"),
        ));
    }
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf)?;
    Ok(buf)
}

/// Keeps the first 16 KiB of what ssh says on stderr, for messages.
fn collect_stderr(mut pipe: std::process::ChildStderr) -> Arc<Mutex<String>> {
    let said = Arc::new(Mutex::new(String::new()));
    let keep = Arc::clone(&said);
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = pipe.read(&mut buf) {
            if n == 0 {
                break;
            }
            let mut s = keep.lock().expect("stderr");
            if s.len() < 16 << 10 {
                s.push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        }
    });
    said
}

/// Routes each reply to the request waiting for its id; when the session
/// ends, marks it dead and closes every waiter's channel.
fn spawn_reader(
    mut stdout: impl Read + Send + 'static,
    pending: Arc<Mutex<HashMap<u32, SyncSender<Reply>>>>,
    alive: Arc<AtomicBool>,
) -> Result<()> {
    std::thread::Builder::new()
        .name("backupkit-sftp".into())
        .spawn(move || {
            while let Ok(packet) = read_packet(&mut stdout) {
                if packet.len() < 5 {
                    break;
                }
                let id = u32::from_be_bytes(packet[1..5].try_into().expect("4 bytes"));
                let reply = Reply {
                    kind: packet[0],
                    body: packet[5..].to_vec(),
                };
                if let Some(tx) = pending.lock().expect("pending").remove(&id) {
                    let _ = tx.send(reply);
                }
            }
            alive.store(false, Ordering::SeqCst);
            pending.lock().expect("pending").clear();
        })
        .map(drop)
        .map_err(|e| Error::io("start", "the SFTP reader thread", e))
}

impl Conn {
    fn open(spec: &Spec) -> Result<Arc<Conn>> {
        let mut child = Command::new(&spec.program)
            .args(&spec.args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| Error::Backend {
                backend: format!("sftp {}", spec.host),
                message: format!(
                    "cannot run {:?}: {e} (install OpenSSH's client, or set -o ssh_command=...)",
                    spec.program
                ),
                source: None,
            })?;
        let mut stdin = child.stdin.take().expect("piped");
        let mut stdout = BufReader::with_capacity(256 << 10, child.stdout.take().expect("piped"));
        let stderr = collect_stderr(child.stderr.take().expect("piped"));
        let failed = |what: String, stderr: &Mutex<String>| {
            let said = stderr.lock().expect("stderr").trim().replace('\n', "; ");
            Error::Backend {
                backend: format!("sftp {}", spec.host),
                message: if said.is_empty() {
                    what
                } else {
                    format!("{what}: ssh said: {said}")
                },
                source: None,
            }
        };
        // The length prefix, then type INIT and version 3.
        let mut init = Vec::with_capacity(9);
        init.extend_from_slice(&5u32.to_be_bytes());
        init.push(FXP_INIT);
        init.extend_from_slice(&3u32.to_be_bytes());
        let version = stdin
            .write_all(&init)
            .and_then(|()| stdin.flush())
            .and_then(|()| read_packet(&mut stdout));
        let Ok(version) = version else {
            // Let ssh finish saying why before reporting.
            let _ = child.wait();
            std::thread::sleep(Duration::from_millis(50));
            return Err(failed("cannot start an SFTP session".into(), &stderr));
        };
        if version.first() != Some(&FXP_VERSION) {
            let _ = child.kill();
            return Err(failed("the server did not answer as SFTP".into(), &stderr));
        }
        let mut r = In(&version[1..]);
        let _version = r.u32().ok();
        let mut extensions = Vec::new();
        while let (Ok(name), Ok(_data)) = (r.string(), r.bytes()) {
            extensions.push(name);
        }
        let pending: Arc<Mutex<HashMap<u32, SyncSender<Reply>>>> = Arc::default();
        let alive = Arc::new(AtomicBool::new(true));
        spawn_reader(stdout, Arc::clone(&pending), Arc::clone(&alive))?;
        Ok(Arc::new(Conn {
            child: Mutex::new(child),
            stdin: Mutex::new(stdin),
            pending,
            next_id: AtomicU32::new(1),
            alive,
            stderr,
            extensions,
        }))
    }

    fn has(&self, extension: &str) -> bool {
        self.extensions.iter().any(|e| e == extension)
    }

    fn lost(&self) -> io::Error {
        let said = self
            .stderr
            .lock()
            .expect("stderr")
            .trim()
            .replace('\n', "; ");
        io::Error::new(
            io::ErrorKind::ConnectionAborted,
            if said.is_empty() {
                "SFTP connection lost".to_owned()
            } else {
                format!("SFTP connection lost: ssh said: {said}")
            },
        )
    }

    /// Sends a request; the reply arrives on the returned channel.
    fn send(&self, kind: u8, body: &Out) -> io::Result<Receiver<Reply>> {
        if !self.alive.load(Ordering::SeqCst) {
            return Err(self.lost());
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = sync_channel(1);
        self.pending.lock().expect("pending").insert(id, tx);
        // The reader may have ended between the check above and the insert:
        // it marks the connection dead before it drops the waiters.
        if !self.alive.load(Ordering::SeqCst) {
            self.pending.lock().expect("pending").remove(&id);
            return Err(self.lost());
        }
        let mut packet = Vec::with_capacity(9 + body.0.len());
        packet.extend_from_slice(&((5 + body.0.len()) as u32).to_be_bytes());
        packet.push(kind);
        packet.extend_from_slice(&id.to_be_bytes());
        packet.extend_from_slice(&body.0);
        let mut stdin = self.stdin.lock().expect("stdin");
        if stdin
            .write_all(&packet)
            .and_then(|()| stdin.flush())
            .is_err()
        {
            self.pending.lock().expect("pending").remove(&id);
            return Err(self.lost());
        }
        Ok(rx)
    }

    fn wait(&self, rx: &Receiver<Reply>) -> io::Result<Reply> {
        rx.recv().map_err(|_| self.lost())
    }

    fn call(&self, kind: u8, body: &Out) -> io::Result<Reply> {
        let rx = self.send(kind, body)?;
        self.wait(&rx)
    }
}

/// An SFTP status as a result: `Ok` for `FX_OK`, else an error of the
/// matching kind (so `Error::io` maps not-found and permission errors).
fn status(reply: &Reply) -> io::Result<()> {
    if reply.kind != FXP_STATUS {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unexpected SFTP reply type {}", reply.kind),
        ));
    }
    let mut r = In(&reply.body);
    let code = r.u32()?;
    let message = r.string().unwrap_or_default();
    let kind = match code {
        FX_OK => return Ok(()),
        FX_EOF => io::ErrorKind::UnexpectedEof,
        FX_NO_SUCH_FILE => io::ErrorKind::NotFound,
        FX_PERMISSION_DENIED => io::ErrorKind::PermissionDenied,
        _ => io::ErrorKind::Other,
    };
    Err(io::Error::new(
        kind,
        if message.is_empty() {
            format!("SFTP status {code}")
        } else {
            message
        },
    ))
}

fn expect(reply: Reply, kind: u8) -> io::Result<Reply> {
    if reply.kind == kind {
        Ok(reply)
    } else {
        status(&reply)?;
        Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unexpected SFTP reply type {}", reply.kind),
        ))
    }
}

/// Protocol operations on one connection; paths are remote paths.
impl Conn {
    fn open_file(&self, path: &str, flags: u32) -> io::Result<Vec<u8>> {
        let body = Out::default().str(path).u32(flags).u32(0);
        let reply = expect(self.call(FXP_OPEN, &body)?, FXP_HANDLE)?;
        Ok(In(&reply.body).bytes()?.to_vec())
    }

    fn close(&self, handle: &[u8]) -> io::Result<()> {
        status(&self.call(FXP_CLOSE, &Out::default().bytes(handle))?)
    }

    fn stat(&self, path: &str) -> io::Result<Attrs> {
        let reply = expect(self.call(FXP_STAT, &Out::default().str(path))?, FXP_ATTRS)?;
        parse_attrs(&mut In(&reply.body))
    }

    fn remove(&self, path: &str) -> io::Result<()> {
        status(&self.call(FXP_REMOVE, &Out::default().str(path))?)
    }

    fn mkdir(&self, path: &str) -> io::Result<()> {
        status(&self.call(FXP_MKDIR, &Out::default().str(path).u32(0))?)
    }

    fn rmdir(&self, path: &str) -> io::Result<()> {
        status(&self.call(FXP_RMDIR, &Out::default().str(path))?)
    }

    fn extended(&self, name: &str, args: &Out) -> io::Result<()> {
        let mut body = Out::default().str(name);
        body.0.extend_from_slice(&args.0);
        status(&self.call(FXP_EXTENDED, &body)?)
    }

    /// Renames over an existing file atomically where the server can.
    fn rename_over(&self, from: &str, to: &str) -> io::Result<()> {
        if self.has("posix-rename@openssh.com") {
            return self.extended(
                "posix-rename@openssh.com",
                &Out::default().str(from).str(to),
            );
        }
        // Plain SFTP rename refuses an existing target: remove it first
        // (not atomic, on servers without the OpenSSH extension only).
        match self.remove(to) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        status(&self.call(FXP_RENAME, &Out::default().str(from).str(to))?)
    }

    /// Entries of a directory: name and attributes, without `.` and `..`.
    fn read_dir(&self, path: &str) -> io::Result<Vec<(String, Attrs)>> {
        let reply = expect(
            self.call(FXP_OPENDIR, &Out::default().str(path))?,
            FXP_HANDLE,
        )?;
        let handle = In(&reply.body).bytes()?.to_vec();
        let mut out = Vec::new();
        let result = loop {
            let reply = match self.call(FXP_READDIR, &Out::default().bytes(&handle)) {
                Ok(r) => r,
                Err(e) => break Err(e),
            };
            if reply.kind != FXP_NAME {
                match status(&reply) {
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break Ok(()),
                    Err(e) => break Err(e),
                    Ok(()) => break Ok(()),
                }
            }
            let mut r = In(&reply.body);
            let parsed = (|| -> io::Result<()> {
                for _ in 0..r.u32()? {
                    let name = r.string()?;
                    let _long = r.bytes()?;
                    let attrs = parse_attrs(&mut r)?;
                    if name != "." && name != ".." {
                        out.push((name, attrs));
                    }
                }
                Ok(())
            })();
            if let Err(e) = parsed {
                break Err(e);
            }
        };
        let closed = self.close(&handle);
        result.and(closed).map(|()| out)
    }
}

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

impl SftpTarget {
    /// Opens `sftp://[user@]host[:port]/path` (the path is absolute;
    /// `/~/path` is relative to the login directory). Options:
    /// `ssh_command` (default `ssh`), `ssh_config` (`ssh -F`),
    /// `identity_file` (`ssh -i`), `connect_timeout` (seconds, default 15),
    /// `retries` (connection attempts, default 3).
    pub fn open(location: &str, options: &TargetOptions) -> Result<Self> {
        let bad = |why: &str| {
            Error::InvalidInput(format!(
                "{location:?}: {why} (expected sftp://[USER@]HOST[:PORT]/PATH)"
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
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or_else(|| bad("unclosed ["))?;
            (h, after.strip_prefix(':'))
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

        let mut program = "ssh".to_owned();
        let mut args: Vec<String> = Vec::new();
        let mut connect_timeout = "15".to_owned();
        let mut connect_attempts = 3;
        for (key, value) in options {
            match key.as_str() {
                "ssh_command" => program.clone_from(value),
                "ssh_config" => args.extend(["-F".into(), value.clone()]),
                "identity_file" => args.extend(["-i".into(), value.clone()]),
                "connect_timeout" => {
                    value
                        .parse::<u32>()
                        .map_err(|_| bad("connect_timeout is not a number of seconds"))?;
                    connect_timeout.clone_from(value);
                }
                "retries" => {
                    connect_attempts = value
                        .parse::<u32>()
                        .map_err(|_| bad("retries is not a count"))?
                        .max(1);
                }
                _ => {
                    return Err(Error::InvalidInput(format!(
                        "unknown option {key:?} for SFTP repositories (known: ssh_command, \
                         ssh_config, identity_file, connect_timeout, retries)"
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
            },
            location: location.trim_end_matches('/').to_owned(),
            root,
            connect_attempts,
            conn: Mutex::new(None),
        })
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
        let (handle, tmp) = self.create_tmp(&conn, key)?;
        Ok(Box::new(SftpWriter {
            conn,
            handle: Some(handle),
            tmp,
            path: self.remote(key),
            shown: self.shown(key),
            buf: Vec::with_capacity(CHUNK),
            offset: 0,
            in_flight: VecDeque::new(),
        }))
    }

    fn create_new(&self, key: &str, data: &[u8]) -> Result<()> {
        check_key(key)?;
        let conn = self.conn()?;
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
        check_key(key)?;
        let path = self.remote(key);
        let opened = self.retry(|c| c.open_file(&path, FXF_READ).map(|h| (Arc::clone(c), h)))?;
        let (conn, handle) = match opened {
            Ok(v) => v,
            Err(e) => return Err(self.map_err("open", key, e)),
        };
        Ok(Box::new(SftpReader {
            conn,
            handle,
            next_offset: 0,
            in_flight: VecDeque::new(),
            current: Vec::new(),
            pos: 0,
            eof: false,
        }))
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let dir = prefix.rsplit_once('/').map_or("", |(d, _)| d);
        if !dir.is_empty() {
            check_key(dir)?;
        }
        let mut out = Vec::new();
        let conn = self.conn()?;
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
        let entries = match self.retry(|c| c.read_dir(&self.remote(dir)))? {
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
            .retry(|c| c.stat(&self.remote(key)))?
            .map_err(|e| self.map_err("stat", key, e))?;
        if attrs.is_dir {
            return Err(Error::NotFound {
                what: "object",
                path: self.shown(key),
            });
        }
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
        match self.retry(|c| c.remove(&self.remote(key)))? {
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
        self.sweep_dir(&conn, dir)
    }
}

impl SftpTarget {
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

fn fsync(conn: &Conn, handle: &[u8]) -> io::Result<()> {
    if conn.has("fsync@openssh.com") {
        conn.extended("fsync@openssh.com", &Out::default().bytes(handle))
    } else {
        Ok(())
    }
}

/// Streams one object up to a temporary name, with many writes in flight;
/// `commit` waits for them, syncs, and renames into place.
struct SftpWriter {
    conn: Arc<Conn>,
    handle: Option<Vec<u8>>,
    tmp: String,
    path: String,
    shown: String,
    buf: Vec<u8>,
    offset: u64,
    in_flight: VecDeque<Receiver<Reply>>,
}

impl SftpWriter {
    fn send_chunk(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let handle = self.handle.as_ref().expect("open until commit");
        let body = Out::default()
            .bytes(handle)
            .u64(self.offset)
            .bytes(&self.buf);
        let rx = self.conn.send(FXP_WRITE, &body)?;
        self.offset += self.buf.len() as u64;
        self.buf.clear();
        self.in_flight.push_back(rx);
        while self.in_flight.len() > IN_FLIGHT {
            self.wait_one()?;
        }
        Ok(())
    }

    fn wait_one(&mut self) -> io::Result<()> {
        match self.in_flight.pop_front() {
            Some(rx) => status(&self.conn.wait(&rx)?),
            None => Ok(()),
        }
    }

    fn finish(&mut self) -> io::Result<()> {
        self.send_chunk()?;
        while !self.in_flight.is_empty() {
            self.wait_one()?;
        }
        let handle = self.handle.take().expect("open until commit");
        let synced = fsync(&self.conn, &handle);
        let closed = self.conn.close(&handle);
        synced.and(closed)?;
        self.conn.rename_over(&self.tmp, &self.path)
    }
}

impl Write for SftpWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.send_chunk()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl ObjectWriter for SftpWriter {
    fn commit(mut self: Box<Self>) -> Result<()> {
        self.finish()
            .map_err(|e| Error::io("write", self.shown.clone(), e))?;
        self.tmp.clear();
        Ok(())
    }
}

impl Drop for SftpWriter {
    fn drop(&mut self) {
        // Not committed: drop what was written.
        for rx in std::mem::take(&mut self.in_flight) {
            let _ = self.conn.wait(&rx);
        }
        if let Some(handle) = self.handle.take() {
            let _ = self.conn.close(&handle);
        }
        if !self.tmp.is_empty() {
            let _ = self.conn.remove(&self.tmp);
        }
    }
}

/// Streams one object down with many reads in flight.
struct SftpReader {
    conn: Arc<Conn>,
    handle: Vec<u8>,
    next_offset: u64,
    in_flight: VecDeque<(u64, Receiver<Reply>)>,
    current: Vec<u8>,
    pos: usize,
    eof: bool,
}

impl SftpReader {
    fn request(&mut self) -> io::Result<()> {
        while !self.eof && self.in_flight.len() < IN_FLIGHT {
            let body = Out::default()
                .bytes(&self.handle)
                .u64(self.next_offset)
                .u32(CHUNK as u32);
            let rx = self.conn.send(FXP_READ, &body)?;
            self.in_flight.push_back((self.next_offset, rx));
            self.next_offset += CHUNK as u64;
        }
        Ok(())
    }

    /// The next chunk in order, or `None` at the end.
    fn next_chunk(&mut self) -> io::Result<Option<Vec<u8>>> {
        self.request()?;
        let Some((offset, rx)) = self.in_flight.pop_front() else {
            return Ok(None);
        };
        let reply = self.conn.wait(&rx)?;
        if reply.kind != FXP_DATA {
            return match status(&reply) {
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    self.eof = true;
                    self.drain();
                    Ok(None)
                }
                Err(e) => Err(e),
                Ok(()) => Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "SFTP read answered OK without data",
                )),
            };
        }
        let data = In(&reply.body).bytes()?.to_vec();
        if data.len() < CHUNK {
            // A short read: requests beyond it would leave a gap; start
            // again right after it.
            self.drain();
            self.next_offset = offset + data.len() as u64;
        }
        Ok(Some(data))
    }

    fn drain(&mut self) {
        for (_, rx) in std::mem::take(&mut self.in_flight) {
            let _ = self.conn.wait(&rx);
        }
    }
}

impl Read for SftpReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.current.len() {
            if self.eof {
                return Ok(0);
            }
            match self.next_chunk()? {
                Some(data) => {
                    self.current = data;
                    self.pos = 0;
                }
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len() - self.pos);
        buf[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl Drop for SftpReader {
    fn drop(&mut self) {
        self.drain();
        let _ = self.conn.close(&self.handle);
    }
}
