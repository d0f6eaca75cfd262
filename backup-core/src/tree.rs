//! The tree contract: a place that holds a tree of plain files, for mirrors.
//!
//! A snapshot [`crate::Target`] stores opaque objects; a [`Tree`] holds the
//! user's own files under their own names, with their mtimes, so that any
//! tool can read a mirror. Local and mounted directories, SSH hosts, rclone
//! remotes and object stores implement it; the mirror engine
//! ([`crate::mirror`]) needs nothing else.
//!
//! # Contract
//!
//! - Paths are `/`-separated and relative to the tree's root, checked with
//!   [`crate::target::check_key`]; the root itself is `""`.
//! - [`Tree::walk`] yields every entry below the root in **canonical
//!   order** ([`cmp_paths`]: byte order, with `/` sorting before every other
//!   byte, which is a depth-first walk with each directory's children in
//!   name order). It does not descend into a directory for which `skip`
//!   returns true, and never follows a symlink, except the root itself.
//!   Leftovers of unfinished writes are yielded as [`Walked::Leftover`],
//!   never as entries.
//! - [`Tree::write`] is atomic: readers of the final name see the old file
//!   or the whole new one, never a part, and a writer dropped without
//!   [`FileWriter::commit`] leaves nothing at the final name. A committed
//!   file is visible at its final name after the next [`Tree::flush`] at the
//!   latest (a local tree renames in batches after one filesystem sync).
//! - The mtime asked for in [`FileAttrs`] is set on the file (or kept as
//!   metadata where the store has no mtimes), within
//!   [`TreeCaps::mtime_precision`].
//! - Errors never contain credentials.

use std::cmp::Ordering;
use std::fmt::Debug;
use std::io::{Read, Write};
use std::time::Duration;

use crate::Result;

/// What an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
}

/// One entry of a tree, as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeEntry {
    /// `/`-separated path relative to the root (`""` for a tree whose root
    /// is a single file).
    pub path: String,
    pub kind: EntryKind,
    /// Size in bytes (files; 0 for the others).
    pub size: u64,
    /// Modification time in nanoseconds since the Unix epoch, when the
    /// listing gives it (an object store's listing may not).
    pub mtime_ns: Option<i64>,
    /// Unix permission bits, where the tree keeps them.
    pub mode: Option<u32>,
    /// A symlink's target.
    pub link: Option<String>,
    /// A token that changes whenever the stored file changes (an object
    /// store's `ETag`), where the tree has one.
    pub stamp: Option<String>,
}

impl TreeEntry {
    /// A file entry with only a path, size and mtime.
    pub fn file(path: impl Into<String>, size: u64, mtime_ns: Option<i64>) -> Self {
        Self {
            path: path.into(),
            kind: EntryKind::File,
            size,
            mtime_ns,
            mode: None,
            link: None,
            stamp: None,
        }
    }
}

/// One thing met while walking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Walked {
    Entry(TreeEntry),
    /// A temporary file of an unfinished write (a killed run's): never a
    /// user's file, to be removed with [`Tree::remove`].
    Leftover(String),
    /// Something that could not be read; the walk goes on.
    Warning {
        path: String,
        message: String,
    },
}

/// What a tree can keep, and how precisely.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeCaps {
    /// The coarsest step of the mtimes the tree keeps (1 ns on most local
    /// filesystems, 2 s on FAT, 1 s over SFTP).
    pub mtime_precision: Duration,
    /// Two names that differ only in case are one file.
    pub case_insensitive: bool,
    /// Symlinks can be stored as links.
    pub symlinks: bool,
    /// Directories exist on their own (an empty one is kept).
    pub dirs: bool,
    /// Unix permission bits are kept.
    pub modes: bool,
    /// Parallel copies that suit the tree.
    pub transfers: usize,
}

/// What to set on a written file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FileAttrs {
    pub mtime_ns: Option<i64>,
    pub mode: Option<u32>,
}

/// What a tree reports about a committed file.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Stored {
    /// The new [`TreeEntry::stamp`], where the tree has stamps.
    pub stamp: Option<String>,
}

/// A streaming writer for one file (see the contract on [`Tree`]).
pub trait FileWriter: Write + Send {
    /// Completes the file: it replaces the old one atomically (visible by
    /// the next [`Tree::flush`] at the latest).
    fn commit(self: Box<Self>) -> Result<Stored>;
}

/// A place that holds a tree of files (see the module docs).
pub trait Tree: Debug + Send + Sync {
    /// Where this tree is, fit for messages (no credentials).
    fn location(&self) -> String;

    /// The root as a path on its host (`/data/runs`), which a `/`-anchored
    /// exclude pattern matches against.
    fn root_path(&self) -> String;

    /// What the tree keeps.
    fn caps(&self) -> TreeCaps;

    /// The root itself (path `""`, followed if it is a symlink), or `None`
    /// when it does not exist.
    fn root(&self) -> Result<Option<TreeEntry>>;

    /// Every entry below the root in canonical order (see the contract).
    fn walk<'a>(
        &'a self,
        skip: &'a (dyn Fn(&str, EntryKind) -> bool + Sync),
    ) -> Result<Box<dyn Iterator<Item = Result<Walked>> + Send + 'a>>;

    /// One entry, or `None` when nothing is at `path`. Gives the full
    /// metadata (an object store's mtime metadata, which its listing lacks).
    fn stat(&self, path: &str) -> Result<Option<TreeEntry>>;

    /// Opens a file for streaming reads.
    fn open(&self, path: &str) -> Result<Box<dyn Read + Send>>;

    /// Starts writing a file, creating missing parent directories.
    fn write(&self, path: &str, attrs: FileAttrs) -> Result<Box<dyn FileWriter>>;

    /// Makes visible everything committed so far.
    fn flush(&self) -> Result<()> {
        Ok(())
    }

    /// Creates a directory (and its parents); an existing one is kept.
    fn make_dir(&self, path: &str, attrs: FileAttrs) -> Result<()>;

    /// Sets a directory's mtime (after its contents are written).
    fn set_dir_mtime(&self, _path: &str, _mtime_ns: i64) -> Result<()> {
        Ok(())
    }

    /// Creates (or replaces) a symlink.
    fn symlink(&self, path: &str, target: &str) -> Result<()>;

    /// Removes a file, a symlink or an empty directory. A missing path is
    /// not an error.
    fn remove(&self, path: &str, kind: EntryKind) -> Result<()>;

    /// Moves a file or symlink to another path of the same tree, creating
    /// parents and replacing what is there (for `--backup-dir`).
    fn rename(&self, from: &str, to: &str) -> Result<()>;

    /// Creates a small file that must not exist yet (a lock), whole.
    /// Trees that can create exclusively (a local directory, SFTP, object
    /// stores' conditional writes) do; the default looks, then writes,
    /// which is exclusive only against processes that look the same way.
    ///
    /// # Errors
    ///
    /// [`crate::Error::AlreadyExists`] when something is at `path`.
    fn create_new(&self, path: &str, data: &[u8]) -> Result<()> {
        if self.stat(path)?.is_some() {
            return Err(crate::Error::AlreadyExists {
                path: path.to_owned(),
            });
        }
        let mut w = self.write(path, FileAttrs::default())?;
        w.write_all(data)
            .map_err(|e| crate::Error::io("write", path, e))?;
        w.commit()?;
        self.flush()
    }

    /// The root as a directory of this machine, for a tree that is one
    /// (a [`Bulk`] copy reads or writes there directly).
    fn local_dir(&self) -> Option<std::path::PathBuf> {
        None
    }

    /// A transport that copies many files at once between this tree and a
    /// local directory (rsync for SSH hosts), where the tree has one.
    fn bulk(&self) -> Option<&dyn Bulk> {
        None
    }
}

/// Which way a [`Bulk`] copy goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the local directory into the tree.
    Push,
    /// From the tree into the local directory.
    Pull,
}

/// One file of a [`Bulk`] copy, with what the plan saw of it at the source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BulkFile {
    /// Relative to both [`BulkCopy::local`] and [`BulkCopy::dir`].
    pub path: String,
    pub size: u64,
    pub mtime_ns: Option<i64>,
}

/// One call of [`Bulk::copy`].
#[derive(Debug)]
pub struct BulkCopy<'a> {
    pub direction: Direction,
    /// The local directory.
    pub local: &'a std::path::Path,
    /// The directory of the tree (`""` for its root).
    pub dir: &'a str,
    /// Where unfinished files wait, relative to the receiving side's
    /// directory (inside the destination's state directory, so that a
    /// killed copy leaves nothing among the user's files).
    pub staging: &'a str,
    /// Keep permission bits.
    pub modes: bool,
    /// Bytes per second for this copy, if limited.
    pub bwlimit: Option<u64>,
    pub files: &'a [BulkFile],
}

/// Copies many files in one go between a tree and a local directory, with
/// an external tool that moves bytes faster than file-by-file writes can
/// (rsync: one stream, delta transfer).
///
/// The contract is the same as [`Tree::write`]'s: every file lands whole
/// at its final name or not at all, with the source's mtime (and mode with
/// [`BulkCopy::modes`]), parent directories are created, and the bytes are
/// synced before the rename. The engine plans, guards, records and
/// verifies; the transport only moves the listed files.
pub trait Bulk: Send + Sync {
    /// The transport's name, for messages (`rsync`).
    fn name(&self) -> &'static str;

    /// Whether a batch is worth the transport's start-up cost (a new ssh
    /// connection, a process), given how many files it holds and how many
    /// bytes of them replace an older version (which a delta transfer sends
    /// only in part). When it is not, the engine copies the batch file by
    /// file through [`Tree::write`].
    fn worth(&self, _files: usize, _replaced_bytes: u64) -> bool {
        true
    }

    /// Copies `job.files`. Returns one outcome per file, in order: `None`
    /// when it was copied, or the reason it was not. An `Err` means the
    /// transport could not run at all (not installed, refused by the
    /// remote); the engine then copies the files one by one.
    fn copy(
        &self,
        job: &BulkCopy<'_>,
        cancel: &crate::progress::Cancel,
    ) -> Result<Vec<Option<String>>>;
}

/// The skip rule a walk is given.
pub type Skip<'a> = &'a (dyn Fn(&str, EntryKind) -> bool + Sync);

/// Lists one directory for a [`DepthFirst`] walk.
pub trait ListDir: Send {
    /// Puts the entries of directory `dir` (`""` for the root) into
    /// `entries`, in any order, and what was met on the way (warnings,
    /// leftovers, an error that ends the walk) into `met`.
    fn list(&mut self, dir: &str, entries: &mut Vec<TreeEntry>, met: &mut Vec<Result<Walked>>);
}

/// A depth-first walk in canonical order, for trees that list one
/// directory at a time: each directory's entries are sorted by name, and a
/// directory's contents follow it directly (which is [`cmp_paths`] order).
/// Memory holds one listing per open directory level.
pub struct DepthFirst<'a, L> {
    lister: L,
    skip: Skip<'a>,
    stack: Vec<std::vec::IntoIter<TreeEntry>>,
    met: std::collections::VecDeque<Result<Walked>>,
}

impl<L> std::fmt::Debug for DepthFirst<'_, L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DepthFirst")
            .field("depth", &self.stack.len())
            .finish_non_exhaustive()
    }
}

impl<'a, L: ListDir> DepthFirst<'a, L> {
    /// A walk from the root.
    pub fn new(lister: L, skip: Skip<'a>) -> Self {
        let mut walk = Self {
            lister,
            skip,
            stack: Vec::new(),
            met: std::collections::VecDeque::new(),
        };
        walk.open("");
        walk
    }

    fn open(&mut self, dir: &str) {
        let mut entries = Vec::new();
        let mut met = Vec::new();
        self.lister.list(dir, &mut entries, &mut met);
        self.met.extend(met);
        entries.sort_unstable_by(|a, b| a.path.cmp(&b.path));
        self.stack.push(entries.into_iter());
    }
}

impl<L: ListDir> Iterator for DepthFirst<'_, L> {
    type Item = Result<Walked>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(m) = self.met.pop_front() {
                return Some(m);
            }
            let top = self.stack.last_mut()?;
            let Some(entry) = top.next() else {
                self.stack.pop();
                continue;
            };
            if (self.skip)(&entry.path, entry.kind) {
                continue;
            }
            if entry.kind == EntryKind::Dir {
                let dir = entry.path.clone();
                self.open(&dir);
            }
            return Some(Ok(Walked::Entry(entry)));
        }
    }
}

/// The canonical order of tree paths: bytes, with `/` before every other
/// byte, so that `a/b` sorts before `a.txt` and every directory's contents
/// follow it directly.
pub fn cmp_paths(a: &str, b: &str) -> Ordering {
    let key = |c: u8| if c == b'/' { 0 } else { c };
    a.bytes().map(key).cmp(b.bytes().map(key))
}

/// `parent/name`, or `name` at the root.
pub fn join(parent: &str, name: &str) -> String {
    if parent.is_empty() {
        name.to_owned()
    } else {
        format!("{parent}/{name}")
    }
}

#[cfg(test)]
mod tests {
    use super::cmp_paths;
    use std::cmp::Ordering;

    #[test]
    fn directories_sort_before_names_that_extend_them() {
        assert_eq!(cmp_paths("a/b", "a.txt"), Ordering::Less);
        assert_eq!(cmp_paths("a", "a/b"), Ordering::Less);
        assert_eq!(cmp_paths("a/z", "a0"), Ordering::Less);
        assert_eq!(cmp_paths("b", "a/z"), Ordering::Greater);
        let mut v = vec!["a.txt", "a/b", "a", "a-b/c", "a/b/c"];
        v.sort_by(|x, y| cmp_paths(x, y));
        assert_eq!(v, ["a", "a/b", "a/b/c", "a-b/c", "a.txt"]);
    }
}
