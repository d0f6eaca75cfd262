//! The one error type of backup-core: each variant names an outcome a caller
//! can act on, not the place it happened.

use std::io;

/// What went wrong, as an outcome a caller can act on.
///
/// `Display` describes this layer only; the underlying cause, when there is
/// one, is available through [`std::error::Error::source`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// There is no repository at the location (no `backupkit.json`).
    #[error("no backupkit repository at {location} (create one with `backupkit init`)")]
    RepositoryNotFound { location: String },

    /// `init` found a repository already there.
    #[error("a backupkit repository already exists at {location}")]
    RepositoryExists { location: String },

    /// The repository was written by a newer backupkit, or is not one at all.
    #[error("unsupported repository at {location}: {reason}")]
    RepositoryUnsupported { location: String, reason: String },

    /// No snapshot matches the id or prefix given.
    #[error("no snapshot matches {id:?} (list them with `backupkit snapshots`)")]
    SnapshotNotFound { id: String },

    /// A snapshot prefix matched more than one snapshot.
    #[error("snapshot prefix {id:?} is ambiguous: it matches {count} snapshots")]
    SnapshotAmbiguous { id: String, count: usize },

    /// A named object, file or path does not exist.
    #[error("{what} not found: {path}")]
    NotFound { what: &'static str, path: String },

    /// The object already exists and the operation refuses to replace it.
    #[error("{path} already exists")]
    AlreadyExists { path: String },

    /// The operating system or the backend refused access.
    #[error("permission denied: {path}")]
    PermissionDenied {
        path: String,
        #[source]
        source: io::Error,
    },

    /// A lock object could not be written (a read-only repository, or no
    /// permission to write `locks/`).
    #[error("cannot write a lock to {location}: {reason}")]
    LockNotWritable { location: String, reason: String },

    /// Another mirror is writing into the same destination.
    #[error(
        "the mirror destination {destination} is in use by {holder} (if that process is gone, \
         delete {lock})"
    )]
    MirrorLocked {
        destination: String,
        holder: String,
        lock: String,
    },

    /// Another process holds a conflicting lock on the repository.
    #[error("repository is locked by {holder} (if that process is gone, run `backupkit unlock`)")]
    Locked { holder: String },

    /// This command's own lock went so long without a stored refresh that
    /// another host may have taken it for stale (see
    /// [`crate::lock::LockTiming`]); the command committed nothing.
    #[error(
        "this command's repository lock went {seconds} s without a refresh (a machine asleep, or the repository out of reach), so a prune may have taken it for stale; nothing was committed: run it again"
    )]
    LockLost { seconds: u64 },

    /// Stored data does not match its recorded checksum, size or manifest.
    #[error("integrity failure in snapshot {snapshot}: {detail}")]
    Integrity { snapshot: String, detail: String },

    /// A restore entry would land outside the target directory, or is unsafe.
    #[error("refusing unsafe entry {path:?}: {reason}")]
    UnsafePath { path: String, reason: String },

    /// Files in the restore target would be overwritten. (Frontends add how
    /// to allow it: a flag, an argument.)
    #[error("{count} file(s) already exist in the target, first {first:?}")]
    WouldOverwrite { count: usize, first: String },

    /// A database restore would replace an existing database.
    #[error("database {target} already exists")]
    DatabaseExists { target: String },

    /// Options that cannot work together, or a value out of range.
    #[error("invalid option: {0}")]
    InvalidInput(String),

    /// A config file with problems: each is `file:line:col: key: what is
    /// wrong`. Nothing ran.
    #[error("{} in the config:\n{}", count_problems(.problems.len()), lines(.problems))]
    Config {
        problems: Vec<crate::jobs::doc::Problem>,
    },

    /// A feature or format this build does not have.
    #[error("not supported: {0}")]
    Unsupported(String),

    /// A safety guard refused a destructive step (a mirror that would delete
    /// from an empty source, or more than its delete limit). Nothing was
    /// deleted.
    #[error("refusing to delete: {reason}")]
    Refused { reason: String },

    /// A mirror's destination does not hold what its source holds.
    #[error("mirror {destination} differs from its source: {detail}")]
    MirrorMismatch { destination: String, detail: String },

    /// The operation was cancelled (Ctrl-C or a caller's cancel flag).
    #[error("cancelled")]
    Cancelled,

    /// An I/O error while doing `action` on `path`.
    #[error("{action} {path}")]
    Io {
        action: &'static str,
        path: String,
        #[source]
        source: io::Error,
    },

    /// Malformed metadata (snapshot.json, manifest, lock, config).
    #[error("cannot parse {path}")]
    Format {
        path: String,
        #[source]
        source: serde_json::Error,
    },

    /// A backend failed in a way not covered above.
    #[error("{backend}: {message}")]
    Backend {
        backend: String,
        message: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
}

/// Result alias for backup-core.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Builds an I/O error, mapping "not found" and "permission denied" to
    /// their outcomes so callers can match on them.
    pub fn io(action: &'static str, path: impl Into<String>, source: io::Error) -> Self {
        let path = path.into();
        match source.kind() {
            io::ErrorKind::PermissionDenied => Error::PermissionDenied { path, source },
            _ => Error::Io {
                action,
                path,
                source,
            },
        }
    }

    /// Whether trying the same operation again may succeed (a lock that may be
    /// released, an interrupted or timed-out I/O operation).
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Locked { .. } | Error::MirrorLocked { .. } => true,
            Error::Io { source, .. } => matches!(
                source.kind(),
                io::ErrorKind::Interrupted
                    | io::ErrorKind::TimedOut
                    | io::ErrorKind::WouldBlock
                    | io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionAborted
            ),
            _ => false,
        }
    }

    /// The underlying I/O error kind, if this error carries one.
    pub fn io_kind(&self) -> Option<io::ErrorKind> {
        match self {
            Error::Io { source, .. } | Error::PermissionDenied { source, .. } => {
                Some(source.kind())
            }
            _ => None,
        }
    }
}

/// Adds context to `io::Result`s: `file.read(..).ctx("read", path)?`.
pub trait IoContext<T> {
    fn ctx(self, action: &'static str, path: impl std::fmt::Display) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx(self, action: &'static str, path: impl std::fmt::Display) -> Result<T> {
        self.map_err(|e| Error::io(action, path.to_string(), e))
    }
}

/// "1 problem", "5 problems".
fn count_problems(n: usize) -> String {
    if n == 1 {
        "1 problem".into()
    } else {
        format!("{n} problems")
    }
}

/// Each problem on its line.
fn lines(problems: &[crate::jobs::doc::Problem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}
