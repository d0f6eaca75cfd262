//! Notification delivery: SMTP (plain, STARTTLS, TLS) and HTTP(S) POSTs,
//! over std sockets with rustls, each bounded by one deadline.

mod http;
mod smtp;

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use backup_core::jobs::notify::{HttpRequest, Mail, Sender, SmtpServer};
use backup_core::{Error, Result};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

/// Sends notifications with backupkit's own SMTP and HTTP clients.
#[derive(Debug, Default)]
pub struct Notifier;

impl Sender for Notifier {
    fn mail(&self, server: &SmtpServer, mail: &Mail) -> Result<()> {
        smtp::send(server, mail).map_err(|e| backend("smtp", &server.host, e))
    }

    fn http(&self, request: &HttpRequest) -> Result<u16> {
        http::send(request)
    }

    fn get(&self, request: &HttpRequest, limit: usize) -> Result<Vec<u8>> {
        http::get(request, limit)
    }
}

pub(crate) fn backend(kind: &str, host: &str, message: String) -> Error {
    Error::Backend {
        backend: format!("{kind} {host}"),
        message,
        source: None,
    }
}

/// A socket whose every read and write ends by one deadline: a server
/// that answers a byte at a time cannot stretch a notification forever.
#[derive(Debug)]
pub(crate) struct Deadline {
    socket: TcpStream,
    until: Instant,
}

impl Deadline {
    /// Connects to `host:port` within `timeout`.
    pub(crate) fn connect(host: &str, port: u16, timeout: Duration) -> io::Result<Self> {
        let until = Instant::now() + timeout;
        let mut last = io::Error::new(io::ErrorKind::NotFound, "the name has no address");
        for addr in (host, port).to_socket_addrs()? {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "timed out"));
            }
            match TcpStream::connect_timeout(&addr, left) {
                Ok(socket) => {
                    socket.set_nodelay(true)?;
                    return Ok(Self { socket, until });
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    fn left(&self) -> io::Result<Duration> {
        let left = self.until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "timed out waiting for the server",
            ))
        } else {
            Ok(left)
        }
    }
}

impl Read for Deadline {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.socket.set_read_timeout(Some(self.left()?))?;
        self.socket.read(buf).map_err(timed_out)
    }
}

impl Write for Deadline {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.socket.set_write_timeout(Some(self.left()?))?;
        self.socket.write(buf).map_err(timed_out)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.socket.flush()
    }
}

/// `WouldBlock` is how a socket timeout shows on Linux.
fn timed_out(e: io::Error) -> io::Error {
    if e.kind() == io::ErrorKind::WouldBlock {
        io::Error::new(io::ErrorKind::TimedOut, "timed out waiting for the server")
    } else {
        e
    }
}

/// A connection, plain or TLS.
#[derive(Debug)]
pub(crate) enum Conn {
    Plain(Deadline),
    Tls(Box<StreamOwned<ClientConnection, Deadline>>),
}

impl Conn {
    /// Wraps the plain connection in TLS for `host`, verifying its
    /// certificate against the system's roots and `ca_file`.
    pub(crate) fn tls(self, host: &str, ca_file: Option<&Path>) -> io::Result<Self> {
        let Conn::Plain(socket) = self else {
            return Ok(self);
        };
        let config = tls_config(ca_file)?;
        let name = ServerName::try_from(host.to_owned())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let conn = ClientConnection::new(config, name).map_err(io::Error::other)?;
        let mut stream = StreamOwned::new(conn, socket);
        // Handshake now, so that a certificate problem is this step's error.
        while stream.conn.is_handshaking() {
            stream
                .conn
                .complete_io(&mut stream.sock)
                .map_err(|e| io::Error::new(e.kind(), format!("TLS: {e}")))?;
        }
        Ok(Conn::Tls(Box::new(stream)))
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.read(buf),
            Conn::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.write(buf),
            Conn::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Conn::Plain(s) => s.flush(),
            Conn::Tls(s) => s.flush(),
        }
    }
}

fn tls_config(ca_file: Option<&Path>) -> io::Result<Arc<ClientConfig>> {
    let mut roots = RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    if let Some(path) = ca_file {
        let certs = CertificateDer::pem_file_iter(path).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("cannot read {}: {e}", path.display()),
            )
        })?;
        for cert in certs {
            let cert = cert.map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{}: {e}", path.display()),
                )
            })?;
            roots.add(cert).map_err(io::Error::other)?;
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(io::Error::other)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Standard base64 (for SMTP AUTH and non-ASCII text).
pub(crate) fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_matches_the_standard() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foobar", "Zm9vYmFy"),
            ("\0user\0pass", "AHVzZXIAcGFzcw=="),
        ] {
            assert_eq!(super::base64(plain.as_bytes()), encoded);
        }
    }
}
