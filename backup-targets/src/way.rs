//! What stands between a target's root and a key, for the targets whose
//! store can hold symlinks (SFTP hosts, rclone's local and sftp backends):
//! only real directories lead to objects; what is below a symlink, a file or
//! a special file is not part of the target.

use backup_core::Error;

/// What stands on the way to a directory of the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Way {
    /// Every component is a real directory.
    Directories,
    /// A component does not exist.
    Missing,
    /// A component is a symlink, a file or something else: what is below
    /// it is not part of the target.
    NotADirectory,
}

/// The directory part of a key (`""` at the root).
pub(crate) fn parent_of(key: &str) -> &str {
    key.rsplit_once('/').map_or("", |(d, _)| d)
}

/// The error of a write whose way goes through a symlink or a file.
pub(crate) fn refused_write(shown: String) -> Error {
    Error::io(
        "create",
        shown,
        std::io::Error::other(
            "a directory on the way is a symlink or a file; refusing to write through it",
        ),
    )
}
