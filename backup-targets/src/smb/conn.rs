//! One SMB2/3 connection to one share: TCP with a timeout on every read
//! and write, negotiate, an `NTLMv2` session (signed, or encrypted when the
//! server offers SMB 3.1.1 encryption), a tree connect, and the file
//! operations the targets need. Requests can be pipelined (reads and
//! writes of large files keep several in flight) and compounded (several
//! in one message, handled by the server in order); credits granted in
//! interim (`STATUS_PENDING`) answers are counted, so a server that
//! answers writes asynchronously never starves the connection.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant, SystemTime};

use super::crypto::{Preauth, Sealer, Signer, TRANSFORM_ID, TRANSFORM_LEN, kdf};
use super::ntlm::{self, Credentials};
use super::wire::{HEADER_LEN, Reader, Writer, command, filetime, flags, malformed, status, utf16};

/// Dialects offered, oldest first: 2.0.2, 2.1, 3.0, 3.0.2, 3.1.1.
const DIALECTS: [u16; 5] = [0x0202, 0x0210, 0x0300, 0x0302, 0x0311];
const SMB311: u16 = 0x0311;
const CAP_LARGE_MTU: u32 = 0x4;
/// Samba offers its cipher context only to clients with this capability.
const CAP_ENCRYPTION: u32 = 0x40;
const SIGNING_ENABLED: u16 = 0x1;
const SESSION_IS_GUEST: u16 = 0x1;
const SESSION_IS_NULL: u16 = 0x2;
const SESSION_ENCRYPT_DATA: u16 = 0x4;
const SHARE_ENCRYPT_DATA: u32 = 0x8000;
const CIPHER_AES128_GCM: u16 = 0x0002;
/// Credits the client asks to keep in hand, for pipelining.
const CREDIT_TARGET: u32 = 512;
/// The largest single read or write asked for (servers allow 8 MiB).
const MAX_IO: u32 = 1 << 20;

// Access rights ([MS-SMB2] 2.2.13.1).
pub const FILE_READ_DATA: u32 = 0x1;
pub const FILE_WRITE_DATA: u32 = 0x2;
pub const FILE_READ_ATTRIBUTES: u32 = 0x80;
pub const FILE_WRITE_ATTRIBUTES: u32 = 0x100;
pub const DELETE: u32 = 0x1_0000;
pub const SYNCHRONIZE: u32 = 0x10_0000;

// Create dispositions.
pub const OPEN: u32 = 1;
pub const CREATE: u32 = 2;
pub const OPEN_IF: u32 = 3;
pub const OVERWRITE_IF: u32 = 5;

// Create options.
pub const DIRECTORY_FILE: u32 = 0x1;
pub const NON_DIRECTORY_FILE: u32 = 0x40;
pub const OPEN_REPARSE_POINT: u32 = 0x20_0000;

// File attributes.
pub const ATTR_DIRECTORY: u32 = 0x10;
pub const ATTR_REPARSE_POINT: u32 = 0x400;

/// How to reach a share, and as whom. The password is not shown by
/// `Debug`.
#[derive(Clone)]
pub struct Config {
    pub host: String,
    pub port: u16,
    pub share: String,
    pub domain: String,
    pub user: String,
    pub password: String,
    /// The bound on connecting and on every wait for the server.
    pub timeout: Duration,
    pub encryption: Encryption,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("share", &self.share)
            .field("domain", &self.domain)
            .field("user", &self.user)
            .field("timeout", &self.timeout)
            .field("encryption", &self.encryption)
            .finish_non_exhaustive()
    }
}

/// Whether messages are encrypted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encryption {
    /// When the server offers SMB 3.1.1 encryption (the default), or
    /// requires it.
    Auto,
    /// Always: a server without SMB 3.1.1 encryption is refused.
    Required,
    /// Only when the server requires it (signing still protects messages).
    Off,
}

/// A file or directory as the server describes it.
#[derive(Clone, Debug)]
pub struct Info {
    pub size: u64,
    pub attributes: u32,
    /// FILETIME (100 ns since 1601).
    pub mtime: u64,
}

impl Info {
    pub fn is_dir(&self) -> bool {
        self.attributes & ATTR_DIRECTORY != 0
    }
    pub fn is_reparse_point(&self) -> bool {
        self.attributes & ATTR_REPARSE_POINT != 0
    }
    pub fn modified(&self) -> SystemTime {
        filetime::to_system(self.mtime)
    }
}

/// A directory entry.
#[derive(Clone, Debug)]
pub struct Entry {
    pub name: String,
    pub info: Info,
}

/// An open file or directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Handle {
    pub(crate) id: [u8; 16],
    pub size: u64,
    pub attributes: u32,
}

impl Handle {
    pub fn is_dir(&self) -> bool {
        self.attributes & ATTR_DIRECTORY != 0
    }
    pub fn is_reparse_point(&self) -> bool {
        self.attributes & ATTR_REPARSE_POINT != 0
    }
}

/// A failure the server reported, with the operation and path.
pub(crate) fn server_error(op: &str, path: &str, code: u32) -> io::Error {
    let what = if path.is_empty() {
        format!("SMB {op}: {}", status::name(code))
    } else {
        format!("SMB {op} {path}: {}", status::name(code))
    };
    io::Error::new(status::kind(code), what)
}

/// One request to send, alone or in a compound chain.
pub(crate) struct Request<'a> {
    pub cmd: u16,
    /// The request's fixed part.
    pub body: &'a [u8],
    /// What follows it (a write's data), copied once, into the frame.
    pub data: &'a [u8],
    /// The bytes it moves either way, which set its credit charge.
    pub payload: u32,
}

/// A server's final answer to one request.
pub(crate) struct Response {
    pub status: u32,
    message_id: u64,
    tree_id: u32,
    session_id: u64,
    /// The whole message, header included (offsets count from its start).
    pub msg: Vec<u8>,
}

impl Response {
    pub fn body(&self) -> Reader<'_> {
        Reader::new(&self.msg)
            .at(HEADER_LEN)
            .expect("a header was read")
    }
}

/// One connection, session and tree.
pub struct Share {
    stream: TcpStream,
    /// How long the server may stay silent while requests are in flight.
    timeout: Duration,
    /// Since when the server has been silent: the last answer, or the
    /// request that ended a quiet spell.
    silent_since: Instant,
    server: String,
    unc: String,
    dialect: u16,
    large_mtu: bool,
    max_read: u32,
    max_write: u32,
    next_id: u64,
    credits: u32,
    session_id: u64,
    tree_id: u32,
    signer: Option<Signer>,
    sealer: Option<Sealer>,
    /// Answers that arrived while another was awaited (pipelining).
    stash: HashMap<u64, Response>,
    /// Final answers read but not yet handed out (the later parts of a
    /// compound answer).
    parts: VecDeque<Response>,
    /// Requests sent whose final answer has not been read.
    outstanding: usize,
    broken: bool,
}

impl fmt::Debug for Share {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Share({})", self.unc)
    }
}

fn random<const N: usize>() -> io::Result<[u8; N]> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|e| io::Error::other(format!("no random numbers: {e}")))?;
    Ok(b)
}

impl Share {
    /// Connects, logs on and connects to the share.
    pub fn connect(config: &Config) -> io::Result<Share> {
        let server = format!("{}:{}", config.host, config.port);
        let timed_out = || {
            io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "the SMB server {server} did not answer within {:?}",
                    config.timeout
                ),
            )
        };
        let mut last = None;
        let mut stream = None;
        for addr in (config.host.as_str(), config.port)
            .to_socket_addrs()
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot resolve the SMB server {}: {e}", config.host),
                )
            })?
        {
            match TcpStream::connect_timeout(&addr, config.timeout) {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::TimedOut => last = Some(timed_out()),
                Err(e) => {
                    last = Some(io::Error::new(
                        e.kind(),
                        format!("cannot connect to the SMB server {server}: {e}"),
                    ));
                }
            }
        }
        let stream = stream.ok_or_else(|| last.unwrap_or_else(timed_out))?;
        stream.set_read_timeout(Some(config.timeout))?;
        stream.set_write_timeout(Some(config.timeout))?;
        stream.set_nodelay(true)?;
        let mut share = Share {
            stream,
            timeout: config.timeout,
            silent_since: Instant::now(),
            server: server.clone(),
            unc: format!(r"\\{}\{}", config.host, config.share),
            dialect: 0,
            large_mtu: false,
            max_read: 65536,
            max_write: 65536,
            next_id: 0,
            credits: 1,
            session_id: 0,
            tree_id: 0,
            signer: None,
            sealer: None,
            stash: HashMap::new(),
            parts: VecDeque::new(),
            outstanding: 0,
            broken: false,
        };
        let mut preauth = Preauth::new();
        let cipher = share.negotiate(&mut preauth, config.encryption)?;
        share.session_setup(config, preauth, cipher)?;
        share.tree_connect(config)?;
        Ok(share)
    }

    /// Whether the connection failed (a timeout, a reset): it cannot be
    /// used again.
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// The negotiated dialect, as `3.1.1`.
    pub fn dialect(&self) -> String {
        let d = self.dialect;
        match d {
            0x0202 => "2.0.2".into(),
            0x0210 => "2.1".into(),
            0x0300 => "3.0".into(),
            0x0302 => "3.0.2".into(),
            0x0311 => "3.1.1".into(),
            _ => format!("0x{d:04x}"),
        }
    }

    /// Whether messages are encrypted.
    pub fn is_encrypted(&self) -> bool {
        self.sealer.is_some()
    }

    /// The largest read and write this connection asks for at once.
    pub fn io_size(&self) -> (u32, u32) {
        (self.max_read, self.max_write)
    }

    fn negotiate(
        &mut self,
        preauth: &mut Preauth,
        encryption: Encryption,
    ) -> io::Result<Option<u16>> {
        // Encryption is offered unless turned off: a server that only
        // desires it then leaves it off.
        let offer = encryption != Encryption::Off;
        let mut b = Writer::with_capacity(256);
        b.u16(36)
            .u16(u16::try_from(DIALECTS.len()).unwrap_or(0))
            .u16(SIGNING_ENABLED)
            .u16(0);
        b.u32(if offer {
            CAP_LARGE_MTU | CAP_ENCRYPTION
        } else {
            CAP_LARGE_MTU
        })
        .bytes(&random::<16>()?);
        let ctx_at = b.len();
        b.u32(0).u16(if offer { 2 } else { 1 }).u16(0);
        for d in DIALECTS {
            b.u16(d);
        }
        // Negotiate contexts start 8-aligned from the header's start.
        while !(HEADER_LEN + b.len()).is_multiple_of(8) {
            b.u8(0);
        }
        b.set_u32(ctx_at, u32::try_from(HEADER_LEN + b.len()).unwrap_or(0));
        // Pre-authentication integrity: SHA-512 with a 32-byte salt.
        b.u16(1)
            .u16(38)
            .u32(0)
            .u16(1)
            .u16(32)
            .u16(1)
            .bytes(&random::<32>()?);
        if offer {
            while !(HEADER_LEN + b.len()).is_multiple_of(8) {
                b.u8(0);
            }
            b.u16(2).u16(4).u32(0).u16(1).u16(CIPHER_AES128_GCM);
        }
        let id = self.send(command::NEGOTIATE, &b.buf, 0, Some(preauth))?;
        let resp = self.wait(id)?;
        if resp.status != status::SUCCESS {
            return Err(server_error("negotiate", "", resp.status));
        }
        let mut r = resp.body();
        r.skip(4)?;
        let dialect = r.u16()?;
        let contexts = r.u16()?;
        r.skip(16)?;
        let caps = r.u32()?;
        r.skip(4)?;
        let max_read = r.u32()?;
        let max_write = r.u32()?;
        if !DIALECTS.contains(&dialect) {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!(
                    "the SMB server {} chose dialect 0x{dialect:04x}, which backupkit does not speak (it speaks SMB 2.0.2 to 3.1.1)",
                    self.server
                ),
            ));
        }
        self.dialect = dialect;
        self.large_mtu = caps & CAP_LARGE_MTU != 0 && dialect >= 0x0210;
        let cap = if self.large_mtu { MAX_IO } else { 65536 };
        self.max_read = max_read.clamp(4096, cap);
        self.max_write = max_write.clamp(4096, cap);
        let mut cipher = None;
        if dialect == SMB311 {
            preauth.update(&resp.msg);
            r.skip(16)?;
            r.skip(4)?;
            let mut at = usize::try_from(r.u32()?).map_err(|_| malformed("negotiate answer"))?;
            for _ in 0..contexts {
                let mut c = Reader::new(&resp.msg).at(at)?;
                let kind = c.u16()?;
                let len = usize::from(c.u16()?);
                c.skip(4)?;
                let data = c.take(len)?;
                if kind == 2 && data.len() >= 4 {
                    let chosen = u16::from_le_bytes([data[2], data[3]]);
                    if chosen == CIPHER_AES128_GCM {
                        cipher = Some(chosen);
                    }
                }
                at = (at + 8 + len).next_multiple_of(8);
            }
        }
        Ok(cipher)
    }

    fn session_setup(
        &mut self,
        config: &Config,
        mut preauth: Preauth,
        cipher: Option<u16>,
    ) -> io::Result<()> {
        let session_request = |token: &[u8]| {
            let mut b = Writer::with_capacity(32 + token.len());
            b.u16(25).u8(0).u8(1).u32(0).u32(0);
            b.u16(u16::try_from(HEADER_LEN + 24).unwrap_or(0));
            b.u16(u16::try_from(token.len()).unwrap_or(u16::MAX))
                .u64(0)
                .bytes(token);
            b.buf
        };
        let is311 = self.dialect == SMB311;
        let id = self.send(
            command::SESSION_SETUP,
            &session_request(&ntlm::negotiate_token()),
            0,
            is311.then_some(&mut preauth),
        )?;
        let resp = self.wait(id)?;
        if resp.status != status::MORE_PROCESSING_REQUIRED {
            return Err(self.logon_error(config, resp.status));
        }
        if is311 {
            preauth.update(&resp.msg);
        }
        self.session_id = resp.session_id;
        let token = security_buffer(&resp)?;
        let creds = Credentials {
            domain: &config.domain,
            user: &config.user,
            password: &config.password,
        };
        let auth = ntlm::authenticate_token(token, &creds, random::<8>()?)?;
        let id = self.send(
            command::SESSION_SETUP,
            &session_request(&auth.token),
            0,
            is311.then_some(&mut preauth),
        )?;
        let mut resp = self.wait(id)?;
        if resp.status != status::SUCCESS {
            return Err(self.logon_error(config, resp.status));
        }
        let session_flags = resp.body().at(HEADER_LEN + 2)?.u16()?;
        if session_flags & (SESSION_IS_GUEST | SESSION_IS_NULL) != 0 {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "the SMB server {} logged {} on as a guest: the user name or password is wrong",
                    self.server, config.user
                ),
            ));
        }
        let key = auth.session_key;
        let signer = match self.dialect {
            0x0202 | 0x0210 => Signer::HmacSha256(key),
            0x0300 | 0x0302 => Signer::AesCmac(kdf(&key, b"SMB2AESCMAC\0", b"SmbSign\0")),
            _ => Signer::AesCmac(kdf(&key, b"SMBSigningKey\0", &preauth.0)),
        };
        // The server signs its final answer: checking it proves both sides
        // derived the same keys.
        if is311
            || resp
                .msg
                .get(16..20)
                .is_some_and(|f| u32::from_le_bytes([f[0], f[1], f[2], f[3]]) & flags::SIGNED != 0)
        {
            signer.verify(&mut resp.msg)?;
        }
        self.signer = Some(signer);
        let required = session_flags & SESSION_ENCRYPT_DATA != 0;
        let wanted = match config.encryption {
            Encryption::Auto => cipher.is_some(),
            Encryption::Required => true,
            Encryption::Off => false,
        };
        if required || wanted {
            if cipher.is_none() {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    format!(
                        "the SMB server {} {} encryption, but offers no SMB 3.1.1 AES-128-GCM (dialect {})",
                        self.server,
                        if required {
                            "requires"
                        } else {
                            "was asked for"
                        },
                        self.dialect()
                    ),
                ));
            }
            let enc = kdf(&key, b"SMBC2SCipherKey\0", &preauth.0);
            let dec = kdf(&key, b"SMBS2CCipherKey\0", &preauth.0);
            let salt = u32::from_le_bytes(random::<4>()?);
            self.sealer = Some(Sealer::new(&enc, &dec, self.session_id, salt));
        }
        Ok(())
    }

    fn logon_error(&self, config: &Config, code: u32) -> io::Error {
        let base = server_error("logon", "", code);
        io::Error::new(
            base.kind(),
            format!("{} (user {} on {})", base, config.user, self.server),
        )
    }

    fn tree_connect(&mut self, config: &Config) -> io::Result<()> {
        let path = utf16(&self.unc);
        let mut b = Writer::with_capacity(16 + path.len());
        b.u16(9)
            .u16(0)
            .u16(u16::try_from(HEADER_LEN + 8).unwrap_or(0));
        b.u16(u16::try_from(path.len()).map_err(|_| invalid("the share name is too long"))?);
        b.bytes(&path);
        let resp = self.call(command::TREE_CONNECT, &b.buf, 0)?;
        if resp.status != status::SUCCESS {
            let e = server_error("connect to share", &config.share, resp.status);
            return Err(io::Error::new(e.kind(), format!("{e} on {}", self.server)));
        }
        self.tree_id = resp.tree_id;
        let mut r = resp.body();
        r.skip(4)?;
        let share_flags = r.u32()?;
        if share_flags & SHARE_ENCRYPT_DATA != 0 && self.sealer.is_none() {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!(
                    "the SMB share {} requires encryption, which needs SMB 3.1.1 with AES-128-GCM",
                    self.unc
                ),
            ));
        }
        Ok(())
    }

    /// Builds, protects and sends one request; returns its message id.
    pub(crate) fn send(
        &mut self,
        cmd: u16,
        body: &[u8],
        payload: u32,
        preauth: Option<&mut Preauth>,
    ) -> io::Result<u64> {
        let req = Request {
            cmd,
            body,
            data: &[],
            payload,
        };
        let ids = self.transmit(&[req], false, preauth)?;
        Ok(ids[0])
    }

    /// Sends `reqs` as one compound message ([MS-SMB2] 3.2.4.1.4): the
    /// server handles them in order, and with `related` each one after the
    /// first acts on the file the one before opened (its `FileId` is all
    /// ones). Returns their message ids; each is answered on its own.
    pub(crate) fn send_chain(
        &mut self,
        reqs: &[Request<'_>],
        related: bool,
    ) -> io::Result<Vec<u64>> {
        self.transmit(reqs, related, None)
    }

    fn transmit(
        &mut self,
        reqs: &[Request<'_>],
        related: bool,
        mut preauth: Option<&mut Preauth>,
    ) -> io::Result<Vec<u64>> {
        if self.broken {
            return Err(io::Error::new(
                io::ErrorKind::NotConnected,
                format!("the connection to the SMB server {} was lost", self.server),
            ));
        }
        let charges: Vec<u16> = reqs
            .iter()
            .map(|r| {
                if self.large_mtu {
                    u16::try_from(r.payload.max(1).div_ceil(65536)).unwrap_or(u16::MAX)
                } else {
                    1
                }
            })
            .collect();
        let total: u32 = charges.iter().map(|&c| u32::from(c)).sum();
        while self.credits < total {
            // Wait for any answer in flight to bring credits.
            if !self.in_flight() {
                return Err(io::Error::other(format!(
                    "the SMB server {} granted no credits",
                    self.server
                )));
            }
            let resp = self.receive()?;
            self.stash.insert(resp.message_id, resp);
        }
        self.credits -= total;
        let want = CREDIT_TARGET.saturating_sub(self.credits);
        let sealed = self.sealer.is_some();
        let signed = self.signer.is_some() && !sealed;
        // One buffer holds the whole frame: its length, the transform
        // header when sealed (encrypted in place), then the requests, each
        // but the last padded to 8 bytes. A write's data is copied once.
        let lead = 4 + if sealed { TRANSFORM_LEN } else { 0 };
        let size: usize = reqs
            .iter()
            .map(|r| (HEADER_LEN + r.body.len() + r.data.len()).next_multiple_of(8))
            .sum();
        let mut w = Writer {
            buf: Vec::with_capacity(lead + size),
        };
        w.zeros(lead);
        let mut ids = Vec::with_capacity(reqs.len());
        for (i, (r, &charge)) in reqs.iter().zip(&charges).enumerate() {
            let last = i + 1 == reqs.len();
            let start = w.buf.len();
            let id = self.next_id;
            self.next_id += u64::from(charge);
            let request = if last {
                u16::try_from(want.max(u32::from(charge))).unwrap_or(u16::MAX)
            } else {
                charge
            };
            let mut hflags = if signed { flags::SIGNED } else { 0 };
            if related && i > 0 {
                hflags |= flags::RELATED;
            }
            w.bytes(b"\xfeSMB")
                .u16(64)
                .u16(if self.large_mtu { charge } else { 0 })
                .u32(0);
            w.u16(r.cmd).u16(request).u32(hflags).u32(0).u64(id);
            w.u32(0xFEFF)
                .u32(self.tree_id)
                .u64(self.session_id)
                .zeros(16);
            w.bytes(r.body).bytes(r.data);
            if !last {
                let padded = (w.buf.len() - start).next_multiple_of(8);
                w.zeros(padded - (w.buf.len() - start));
                let next = u32::try_from(padded).map_err(|_| invalid("message too large"))?;
                w.buf[start + 20..start + 24].copy_from_slice(&next.to_le_bytes());
            }
            if let Some(p) = preauth.as_deref_mut() {
                p.update(&w.buf[start..]);
            }
            if signed && let Some(s) = &self.signer {
                s.sign(&mut w.buf[start..]);
            }
            ids.push(id);
        }
        let mut out = w.buf;
        if let Some(sealer) = &mut self.sealer {
            sealer.seal_in_place(&mut out[4..])?;
        }
        let len = u32::try_from(out.len() - 4).map_err(|_| invalid("message too large"))?;
        out[..4].copy_from_slice(&len.to_be_bytes());
        if self.outstanding == 0 {
            self.silent_since = Instant::now();
        }
        self.outstanding += reqs.len();
        let deadline = self.silent_since + self.timeout;
        if let Err(e) = io_until(&self.stream, deadline, |s, t| {
            s.set_write_timeout(Some(t))?;
            (&*s).write_all(&out)
        }) {
            return Err(self.lost(&e));
        }
        Ok(ids)
    }

    fn in_flight(&self) -> bool {
        self.outstanding > 0
    }

    fn lost(&mut self, e: &io::Error) -> io::Error {
        self.broken = true;
        if matches!(
            e.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ) {
            io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "the SMB server {} stopped answering (timed out)",
                    self.server
                ),
            )
        } else {
            io::Error::new(
                e.kind(),
                format!(
                    "the connection to the SMB server {} was lost: {e}",
                    self.server
                ),
            )
        }
    }

    /// Reads the next answer from the server, decrypted and checked: the
    /// next part of a compound answer already read, or a new frame.
    fn receive(&mut self) -> io::Result<Response> {
        loop {
            if let Some(resp) = self.parts.pop_front() {
                return Ok(resp);
            }
            let mut len = [0u8; 4];
            // A stall is measured from the last sign of life, so requests
            // queued behind one another cannot add their waits up.
            let deadline = self.silent_since + self.timeout;
            if let Err(e) = read_until(&self.stream, deadline, &mut len) {
                return Err(self.lost(&e));
            }
            let len = u32::from_be_bytes(len) & 0x00FF_FFFF;
            let mut frame = vec![0u8; len as usize];
            let deadline = Instant::now() + self.timeout;
            if let Err(e) = read_until(&self.stream, deadline, &mut frame) {
                return Err(self.lost(&e));
            }
            self.silent_since = Instant::now();
            let encrypted = frame.starts_with(TRANSFORM_ID);
            let msg = match (&self.sealer, encrypted) {
                (Some(sealer), true) => sealer.open(frame).inspect_err(|_| self.broken = true)?,
                (None, true) => {
                    self.broken = true;
                    return Err(malformed("encrypted message on a plain connection"));
                }
                (Some(_), false) => {
                    self.broken = true;
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "the SMB server {} sent an unencrypted message on an encrypted session",
                            self.server
                        ),
                    ));
                }
                (None, false) => frame,
            };
            self.split(msg, encrypted)
                .inspect_err(|_| self.broken = true)?;
        }
    }

    /// Checks each part of a (possibly compound) message and queues the
    /// final answers among them.
    fn split(&mut self, mut msg: Vec<u8>, encrypted: bool) -> io::Result<()> {
        loop {
            if msg.len() < HEADER_LEN || &msg[..4] != b"\xfeSMB" {
                return Err(malformed("message header"));
            }
            let r = Reader::new(&msg);
            let code = r.at(8)?.u32()?;
            let credits = r.at(14)?.u16()?;
            let hflags = r.at(16)?.u32()?;
            let next = r.at(20)?.u32()? as usize;
            let message_id = r.at(24)?.u64()?;
            let tree_id = r.at(36)?.u32()?;
            let session_id = r.at(40)?.u64()?;
            let rest = if next == 0 {
                None
            } else if next >= HEADER_LEN && next.is_multiple_of(8) && next < msg.len() {
                Some(msg.split_off(next))
            } else {
                return Err(malformed("compound message (next command)"));
            };
            self.credits += u32::from(credits);
            if hflags & flags::SIGNED != 0
                && !encrypted
                && let Some(s) = &self.signer
            {
                s.verify(&mut msg)?;
            }
            // An oplock break notice (no opens ask for oplocks), or an
            // interim answer (its credits are counted above).
            let notice = message_id == u64::MAX
                || (code == status::PENDING && hflags & flags::ASYNC_COMMAND != 0);
            if !notice {
                self.outstanding = self.outstanding.saturating_sub(1);
                self.parts.push_back(Response {
                    status: code,
                    message_id,
                    tree_id,
                    session_id,
                    msg,
                });
            }
            match rest {
                Some(tail) => msg = tail,
                None => return Ok(()),
            }
        }
    }

    /// The answer to request `id`.
    pub(crate) fn wait(&mut self, id: u64) -> io::Result<Response> {
        if let Some(r) = self.stash.remove(&id) {
            return Ok(r);
        }
        loop {
            let resp = self.receive()?;
            if resp.message_id == id {
                return Ok(resp);
            }
            self.stash.insert(resp.message_id, resp);
        }
    }

    pub(crate) fn call(&mut self, cmd: u16, body: &[u8], payload: u32) -> io::Result<Response> {
        let id = self.send(cmd, body, payload, None)?;
        self.wait(id)
    }
}

/// Reads `buf` whole by `deadline`: a peer that sends a byte now and then
/// cannot stretch one message's wait past it.
fn read_until(stream: &TcpStream, deadline: Instant, buf: &mut [u8]) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let n = io_until(stream, deadline, |s, t| {
            s.set_read_timeout(Some(t))?;
            (&*s).read(&mut buf[done..])
        })?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the server closed the connection",
            ));
        }
        done += n;
    }
    Ok(())
}

/// Runs a socket operation with what is left until `deadline` as its
/// timeout; past the deadline, or on the socket's timeout, `TimedOut`.
fn io_until<T>(
    stream: &TcpStream,
    deadline: Instant,
    mut op: impl FnMut(&TcpStream, Duration) -> io::Result<T>,
) -> io::Result<T> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        match op(stream, left) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return Err(io::ErrorKind::TimedOut.into());
            }
            other => return other,
        }
    }
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, what.to_owned())
}

/// The security blob of a session setup answer.
fn security_buffer(resp: &Response) -> io::Result<&[u8]> {
    let mut r = resp.body();
    r.skip(4)?;
    let offset = usize::from(r.u16()?);
    let len = usize::from(r.u16()?);
    Reader::new(&resp.msg).slice(offset, len)
}
