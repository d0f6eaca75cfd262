//! Notifications: what a job sends when it ends (email, a webhook) and the
//! heartbeat pings around it (healthchecks.io style), and the small
//! contract the senders implement ([`Sender`], in `backup-targets`).
//!
//! A notification that cannot be delivered is logged and changes nothing
//! about the job's result.

use std::fmt::Debug;
use std::path::PathBuf;
use std::time::Duration;

use crate::Result;

/// When a job's email and webhook are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// The job failed or is incomplete (the default).
    Failure,
    /// The job succeeded.
    Success,
    Always,
}

impl When {
    /// Whether a job that ended `failed` (or incomplete) is reported.
    pub fn wants(self, failed: bool) -> bool {
        match self {
            When::Failure => failed,
            When::Success => !failed,
            When::Always => true,
        }
    }
}

/// How an SMTP connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    /// Plain, then `STARTTLS` (port 587): required, never skipped.
    StartTls,
    /// TLS from the first byte (port 465).
    Tls,
    /// No TLS: only for a relay on this machine or a trusted network.
    Plain,
}

/// An SMTP server and how to log in.
#[derive(Clone, PartialEq, Eq)]
pub struct SmtpServer {
    pub host: String,
    pub port: u16,
    pub security: Security,
    pub user: Option<String>,
    /// Resolved from its secret source; never shown.
    pub password: Option<String>,
    /// Extra certificate authorities to trust (PEM), beside the system's.
    pub ca_file: Option<PathBuf>,
    pub timeout: Duration,
}

impl Debug for SmtpServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpServer")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("security", &self.security)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .finish_non_exhaustive()
    }
}

/// A mail to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mail {
    pub from: String,
    pub to: Vec<String>,
    pub subject: String,
    /// Plain text.
    pub body: String,
}

/// An HTTP request (a webhook or a ping).
#[derive(Clone, PartialEq, Eq)]
pub struct HttpRequest {
    /// `POST` or `GET`.
    pub method: &'static str,
    pub url: String,
    /// Header values may be secrets: never shown.
    pub headers: Vec<(String, String)>,
    pub content_type: Option<&'static str>,
    pub body: Vec<u8>,
    pub ca_file: Option<PathBuf>,
    pub timeout: Duration,
}

impl Debug for HttpRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpRequest")
            .field("method", &self.method)
            .field("url", &crate::registry::redact(&self.url))
            .field(
                "headers",
                &self.headers.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

/// Delivers notifications.
///
/// # Contract
///
/// - Each call gives up within the request's or server's timeout, whatever
///   the other side does (a silent server, a slow one).
/// - TLS certificates are verified against the system's roots and the
///   `ca_file` given; a failure is an error, never a silent downgrade.
///   `STARTTLS` that the server does not offer is an error.
/// - Errors name the server and what failed, never a password or a
///   header's value.
pub trait Sender: Debug + Send + Sync {
    /// Sends a mail through the server.
    fn mail(&self, server: &SmtpServer, mail: &Mail) -> Result<()>;

    /// Sends the request; returns the HTTP status (any 2xx is delivered,
    /// anything else an error).
    fn http(&self, request: &HttpRequest) -> Result<u16>;

    /// Sends the request and returns the body of a 2xx answer, at most
    /// `limit` bytes (a longer one is an error).
    fn get(&self, request: &HttpRequest, limit: usize) -> Result<Vec<u8>> {
        let _ = (request, limit);
        Err(crate::Error::Unsupported(
            "this build cannot fetch URLs".into(),
        ))
    }
}

/// Seconds a notification may take before it is given up.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
