//! Exit codes: a documented, tested contract (see the README's table).

use backup_core::Error;

/// Success.
pub const OK: i32 = 0;
/// A failure not covered below (I/O errors, full disk, refused overwrite).
pub const FAILURE: i32 = 1;
/// Bad flags, arguments or option values; a refused confirmation.
pub const USAGE: i32 = 2;
/// The snapshot was saved, but some files could not be stored as they were.
pub const INCOMPLETE: i32 = 3;
/// A snapshot id or source path does not exist.
pub const NOT_FOUND: i32 = 4;
/// There is no repository at the location.
pub const REPOSITORY_NOT_FOUND: i32 = 10;
/// The repository is locked by another process.
pub const LOCKED: i32 = 11;
/// Stored data is damaged, or a snapshot holds unsafe entries.
pub const INTEGRITY: i32 = 13;
/// Interrupted (Ctrl-C); nothing partial is left visible.
pub const INTERRUPTED: i32 = 130;

/// How to get past an error with this command line's flags, appended to
/// its message (the core names no frontend's flags).
pub fn hint(e: &Error) -> &'static str {
    match e {
        Error::WouldOverwrite { .. } => " (pass --overwrite to replace them)",
        Error::DatabaseExists { .. } => " (pass --force to replace it)",
        Error::LockNotWritable { .. } => {
            " (for a read-only repository, read-only commands take --no-lock)"
        }
        _ => "",
    }
}

/// The exit code for an error.
pub fn code_for(e: &Error) -> i32 {
    match e {
        Error::InvalidInput(_) | Error::Config { .. } => USAGE,
        Error::SnapshotNotFound { .. }
        | Error::SnapshotAmbiguous { .. }
        | Error::NotFound { .. } => NOT_FOUND,
        Error::RepositoryNotFound { .. } => REPOSITORY_NOT_FOUND,
        Error::Locked { .. } | Error::MirrorLocked { .. } | Error::LockLost { .. } => LOCKED,
        Error::Integrity { .. } | Error::UnsafePath { .. } | Error::MirrorMismatch { .. } => {
            INTEGRITY
        }
        Error::Cancelled => INTERRUPTED,
        _ => FAILURE,
    }
}
