//! A small SFTP version 3 client (the protocol OpenSSH's `sftp-server`
//! speaks) over one `ssh -s sftp` child: requests are multiplexed by id, a
//! reader thread routes each reply to its waiting request, and callers may
//! keep many requests in flight.

use std::collections::HashMap;
use std::io::{self, BufReader, Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backup_core::{Error, Result};

const FXP_INIT: u8 = 1;
const FXP_VERSION: u8 = 2;
const FXP_OPEN: u8 = 3;
pub(super) const FXP_CLOSE: u8 = 4;
pub(super) const FXP_READ: u8 = 5;
pub(super) const FXP_WRITE: u8 = 6;
const FXP_OPENDIR: u8 = 11;
const FXP_READDIR: u8 = 12;
const FXP_REMOVE: u8 = 13;
const FXP_MKDIR: u8 = 14;
const FXP_RMDIR: u8 = 15;
const FXP_LSTAT: u8 = 7;
const FXP_STAT: u8 = 17;
const FXP_RENAME: u8 = 18;
const FXP_SETSTAT: u8 = 9;
pub(super) const FXP_FSETSTAT: u8 = 10;
const FXP_READLINK: u8 = 19;
const FXP_SYMLINK: u8 = 20;
pub(super) const FXP_EXTENDED: u8 = 200;
const FXP_STATUS: u8 = 101;
const FXP_HANDLE: u8 = 102;
pub(super) const FXP_DATA: u8 = 103;
const FXP_NAME: u8 = 104;
const FXP_ATTRS: u8 = 105;

pub(super) const FXF_READ: u32 = 0x01;
pub(super) const FXF_WRITE: u32 = 0x02;
pub(super) const FXF_CREAT: u32 = 0x08;
pub(super) const FXF_TRUNC: u32 = 0x10;
pub(super) const FXF_EXCL: u32 = 0x20;

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
pub(super) const CHUNK: usize = 64 << 10;
/// Requests in flight per stream: a 4 MiB window.
pub(super) const IN_FLIGHT: usize = 64;
/// Largest reply accepted from the server.
const MAX_PACKET: usize = 1 << 20;

/// One reply: its type and the payload after the request id.
pub(super) struct Reply {
    pub(super) kind: u8,
    pub(super) body: Vec<u8>,
}

/// How to reach the server.
#[derive(Clone)]
pub(super) struct Spec {
    pub(super) program: String,
    pub(super) args: Vec<String>,
    /// `user@host` or an ssh-config alias, for messages.
    pub(super) host: String,
    /// How long a request may wait for its reply before the connection is
    /// given up (a server that stopped answering).
    pub(super) timeout: Duration,
}

/// One `ssh -s sftp` session.
pub(super) struct Conn {
    child: Mutex<Child>,
    stdin: Mutex<ChildStdin>,
    pending: Arc<Mutex<HashMap<u32, SyncSender<Reply>>>>,
    next_id: AtomicU32,
    pub(super) alive: Arc<AtomicBool>,
    stderr: Arc<Mutex<String>>,
    extensions: Vec<String>,
    timeout: Duration,
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
pub(super) struct Out(Vec<u8>);

impl Out {
    pub(super) fn u32(mut self, v: u32) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub(super) fn u64(mut self, v: u64) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub(super) fn bytes(mut self, b: &[u8]) -> Self {
        self = self.u32(b.len() as u32);
        self.0.extend_from_slice(b);
        self
    }
    pub(super) fn str(self, s: &str) -> Self {
        self.bytes(s.as_bytes())
    }
}

/// A cursor over a reply.
pub(super) struct In<'a>(pub(super) &'a [u8]);

impl<'a> In<'a> {
    pub(super) fn take(&mut self, n: usize) -> io::Result<&'a [u8]> {
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
    pub(super) fn u32(&mut self) -> io::Result<u32> {
        Ok(u32::from_be_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    pub(super) fn u64(&mut self) -> io::Result<u64> {
        Ok(u64::from_be_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    pub(super) fn bytes(&mut self) -> io::Result<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    fn string(&mut self) -> io::Result<String> {
        Ok(String::from_utf8_lossy(self.bytes()?).into_owned())
    }
}

/// File attributes, as far as backupkit needs them.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Attrs {
    pub(super) size: u64,
    pub(super) mtime: Option<u32>,
    /// Permission bits (`0o7777` at most).
    pub(super) mode: Option<u32>,
    pub(super) is_dir: bool,
    pub(super) is_file: bool,
    pub(super) is_symlink: bool,
}

/// Attributes to set: an mtime (seconds; the atime is set to it too) and
/// permission bits.
pub(super) fn attrs_body(mut out: Out, mtime: Option<u32>, mode: Option<u32>) -> Out {
    let mut flags = 0;
    if mode.is_some() {
        flags |= ATTR_PERMISSIONS;
    }
    if mtime.is_some() {
        flags |= ATTR_ACMODTIME;
    }
    out = out.u32(flags);
    if let Some(m) = mode {
        out = out.u32(m & 0o7777);
    }
    if let Some(t) = mtime {
        out = out.u32(t).u32(t);
    }
    out
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
        let mode = r.u32()?;
        let kind = mode & 0o170_000;
        a.is_dir = kind == 0o040_000;
        a.is_file = kind == 0o100_000;
        a.is_symlink = kind == 0o120_000;
        a.mode = Some(mode & 0o7777);
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
    pub(super) fn open(spec: &Spec) -> Result<Arc<Conn>> {
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
            timeout: spec.timeout,
        }))
    }

    pub(super) fn has(&self, extension: &str) -> bool {
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
    pub(super) fn send(&self, kind: u8, body: &Out) -> io::Result<Receiver<Reply>> {
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

    pub(super) fn wait(&self, rx: &Receiver<Reply>) -> io::Result<Reply> {
        match rx.recv_timeout(self.timeout) {
            Ok(reply) => Ok(reply),
            Err(RecvTimeoutError::Disconnected) => Err(self.lost()),
            Err(RecvTimeoutError::Timeout) => {
                // A server that stopped answering: this connection is done
                // (every other waiter fails too), never a hang.
                self.alive.store(false, Ordering::SeqCst);
                if let Ok(mut child) = self.child.lock() {
                    let _ = child.kill();
                }
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "the SFTP server did not answer for {} s (option timeout)",
                        self.timeout.as_secs()
                    ),
                ))
            }
        }
    }

    pub(super) fn call(&self, kind: u8, body: &Out) -> io::Result<Reply> {
        let rx = self.send(kind, body)?;
        self.wait(&rx)
    }
}

/// An SFTP status as a result: `Ok` for `FX_OK`, else an error of the
/// matching kind (so `Error::io` maps not-found and permission errors).
pub(super) fn status(reply: &Reply) -> io::Result<()> {
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

pub(super) fn expect(reply: Reply, kind: u8) -> io::Result<Reply> {
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
    pub(super) fn open_file(&self, path: &str, flags: u32) -> io::Result<Vec<u8>> {
        let body = Out::default().str(path).u32(flags).u32(0);
        let reply = expect(self.call(FXP_OPEN, &body)?, FXP_HANDLE)?;
        Ok(In(&reply.body).bytes()?.to_vec())
    }

    pub(super) fn close(&self, handle: &[u8]) -> io::Result<()> {
        status(&self.call(FXP_CLOSE, &Out::default().bytes(handle))?)
    }

    pub(super) fn stat(&self, path: &str) -> io::Result<Attrs> {
        let reply = expect(self.call(FXP_STAT, &Out::default().str(path))?, FXP_ATTRS)?;
        parse_attrs(&mut In(&reply.body))
    }

    /// The attributes of `path` itself: a symlink is not followed.
    pub(super) fn lstat(&self, path: &str) -> io::Result<Attrs> {
        let reply = expect(self.call(FXP_LSTAT, &Out::default().str(path))?, FXP_ATTRS)?;
        parse_attrs(&mut In(&reply.body))
    }

    pub(super) fn remove(&self, path: &str) -> io::Result<()> {
        status(&self.call(FXP_REMOVE, &Out::default().str(path))?)
    }

    pub(super) fn mkdir(&self, path: &str) -> io::Result<()> {
        status(&self.call(FXP_MKDIR, &Out::default().str(path).u32(0))?)
    }

    pub(super) fn rmdir(&self, path: &str) -> io::Result<()> {
        status(&self.call(FXP_RMDIR, &Out::default().str(path))?)
    }

    pub(super) fn extended(&self, name: &str, args: &Out) -> io::Result<()> {
        let mut body = Out::default().str(name);
        body.0.extend_from_slice(&args.0);
        status(&self.call(FXP_EXTENDED, &body)?)
    }

    /// Renames over an existing file atomically where the server can.
    pub(super) fn rename_over(&self, from: &str, to: &str) -> io::Result<()> {
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

    /// Sets the mtime and permission bits of `path` (a symlink is followed:
    /// callers check what `path` is first).
    pub(super) fn setstat(
        &self,
        path: &str,
        mtime: Option<u32>,
        mode: Option<u32>,
    ) -> io::Result<()> {
        status(&self.call(
            FXP_SETSTAT,
            &attrs_body(Out::default().str(path), mtime, mode),
        )?)
    }

    /// The target of the symlink `path`.
    pub(super) fn readlink(&self, path: &str) -> io::Result<String> {
        let reply = expect(
            self.call(FXP_READLINK, &Out::default().str(path))?,
            FXP_NAME,
        )?;
        let mut r = In(&reply.body);
        if r.u32()? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "empty READLINK reply",
            ));
        }
        r.string()
    }

    /// Creates the symlink `link` pointing to `target`. OpenSSH's server
    /// takes the two paths in the reverse of the draft's order (target
    /// first), and so does every client that talks to it.
    pub(super) fn symlink(&self, target: &str, link: &str) -> io::Result<()> {
        status(&self.call(FXP_SYMLINK, &Out::default().str(target).str(link))?)
    }

    /// Entries of a directory: name and attributes, without `.` and `..`.
    pub(super) fn read_dir(&self, path: &str) -> io::Result<Vec<(String, Attrs)>> {
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
