//! The Python exception classes and the one mapping from core errors to them.

use backup_core::{Error, error_chain};
use pyo3::exceptions::PyException;
use pyo3::{PyErr, create_exception};

create_exception!(
    backupkit,
    BackupError,
    PyException,
    "Base class of every error raised by backupkit."
);
create_exception!(
    backupkit,
    RepositoryNotFoundError,
    BackupError,
    "There is no backupkit repository at the location."
);
create_exception!(
    backupkit,
    RepositoryExistsError,
    BackupError,
    "init() found a repository already there."
);
create_exception!(
    backupkit,
    SnapshotNotFoundError,
    BackupError,
    "No snapshot matches the id or prefix, or the prefix matches several."
);
create_exception!(
    backupkit,
    LockedError,
    BackupError,
    "Another process holds a conflicting lock on the repository, or this command's own lock went so long without a refresh that it committed nothing."
);
create_exception!(
    backupkit,
    IntegrityError,
    BackupError,
    "Stored data is damaged, or a snapshot holds unsafe entries."
);
create_exception!(
    backupkit,
    WouldOverwriteError,
    BackupError,
    "A restore would replace existing files or an existing database."
);
create_exception!(
    backupkit,
    InvalidInputError,
    BackupError,
    "Options that cannot work together, or a value out of range."
);

create_exception!(
    backupkit,
    MirrorMismatchError,
    IntegrityError,
    "A mirror's destination does not hold what its source holds; `.report` says what differs."
);
create_exception!(
    backupkit,
    RefusedError,
    BackupError,
    "A safety guard refused a destructive step (a mirror that would delete from an empty source); nothing was deleted."
);

create_exception!(
    backupkit,
    ConfigError,
    BackupError,
    "A config file with problems; `.problems` lists each (file, line, column, key, message)."
);

/// The Python exception for a core error; its message is the error and its
/// causes in one line.
pub(crate) fn to_py(e: &Error) -> PyErr {
    let msg = error_chain(e);
    match e {
        Error::RepositoryNotFound { .. } => RepositoryNotFoundError::new_err(msg),
        Error::RepositoryExists { .. } => RepositoryExistsError::new_err(msg),
        Error::SnapshotNotFound { .. } | Error::SnapshotAmbiguous { .. } => {
            SnapshotNotFoundError::new_err(msg)
        }
        Error::Locked { .. } | Error::MirrorLocked { .. } | Error::LockLost { .. } => {
            LockedError::new_err(msg)
        }
        Error::Integrity { .. } | Error::UnsafePath { .. } => IntegrityError::new_err(msg),
        Error::MirrorMismatch { .. } => MirrorMismatchError::new_err(msg),
        Error::WouldOverwrite { .. } => {
            WouldOverwriteError::new_err(format!("{msg} (pass overwrite=True to replace them)"))
        }
        Error::LockNotWritable { .. } => BackupError::new_err(format!(
            "{msg} (for a read-only repository, pass no_lock=True to Repository)"
        )),
        Error::DatabaseExists { .. } => {
            WouldOverwriteError::new_err(format!("{msg} (pass force=True to replace it)"))
        }
        Error::InvalidInput(_) => InvalidInputError::new_err(msg),
        Error::Config { .. } => ConfigError::new_err(msg),
        Error::Refused { .. } => RefusedError::new_err(msg),
        // `Cancelled` arrives here only when no Ctrl-C caused it (the runner
        // raises the KeyboardInterrupt itself).
        _ => BackupError::new_err(msg),
    }
}
