//! A directory on an SMB share as a mirror [`Tree`], in both directions,
//! over the same client and connection pool as the `smb://` repositories.
//!
//! Files are written to a temporary name beside their final one, their
//! mtime set on the open handle after the last write, flushed, and renamed
//! over the old file in one step (rename with replace). The share keeps
//! mtimes as FILETIME, in steps of 100 ns. Whether names that differ only in
//! case are one file is asked of the share itself, once (Samba answers that
//! searches are case-sensitive, yet opens `A.CSV` for `a.csv`). The share
//! keeps no symlinks: a mirror into it skips them with a warning, and a
//! walk reports the share's reparse points (symlinks, junctions) as warnings
//! instead of following them. Modes are not kept.

use std::io::{self, Read};
use std::sync::OnceLock;
use std::time::Duration;

use backup_core::registry::TargetOptions;
use backup_core::target::{check_key, is_tmp_name, tmp_key};
use backup_core::tree::{
    DepthFirst, EntryKind, FileAttrs, FileWriter, ListDir, Skip, Stored, Tree, TreeCaps, TreeEntry,
    Walked, join,
};
use backup_core::{Error, Result, Target};

use super::conn::{DIRECTORY_FILE, Info, OPEN_IF, OPEN_REPARSE_POINT, Share};
use super::ops::Open;
use super::target::{SmbTarget, SmbWriter, to_error};
use super::wire::filetime;

/// Files copied at once (each on its own pooled connection).
const TRANSFERS: usize = 4;

/// A directory tree on an SMB share.
#[derive(Debug)]
pub struct SmbTree {
    t: SmbTarget,
    /// Whether the share matches names without regard to case, once asked.
    case_insensitive: OnceLock<bool>,
}

impl SmbTree {
    /// A tree at `smb://[DOMAIN;]USER@HOST[:PORT]/SHARE/PATH`, with the
    /// `smb://` repositories' options; connects once, so that a wrong
    /// password or share fails here.
    ///
    /// # Errors
    ///
    /// A bad location or option, or the server's refusal.
    pub fn open(location: &str, options: &TargetOptions) -> Result<SmbTree> {
        Ok(SmbTree {
            t: SmbTarget::open(location, options)?,
            case_insensitive: OnceLock::new(),
        })
    }

    /// The share-relative path of a tree path.
    fn at(&self, path: &str) -> String {
        self.t.location_ref().join(path)
    }

    /// [`Self::at`] of a path that may be the root (`""`), checked.
    fn checked_at(&self, path: &str) -> Result<String> {
        if !path.is_empty() {
            check_key(path)?;
        }
        Ok(self.at(path))
    }

    fn err(&self, action: &'static str, path: &str, e: io::Error) -> Error {
        to_error(action, &self.t.shown(path), e)
    }

    /// Runs `op` on a pooled connection; what is not there is `None`.
    fn maybe<T>(&self, op: impl FnOnce(&mut Share) -> io::Result<T>) -> io::Result<Option<T>> {
        match self.t.pool().with(op) {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Asks the share whether it matches names without regard to case: a
    /// name of the root's listing with its case changed is opened; with an
    /// empty root, a temporary file is made and opened that way. When
    /// neither can be tried, the answer is yes (what SMB servers do).
    fn probe_case(&self) -> bool {
        let root = self.at("");
        let probed = self.t.pool().with(|share| {
            // The root, or the share's own root while it does not exist.
            let (root, entries) = match share.list(&root) {
                Ok(entries) => (root, entries),
                Err(e) if e.kind() == io::ErrorKind::NotFound => (String::new(), share.list("")?),
                Err(e) => return Err(e),
            };
            let names: std::collections::HashSet<&str> =
                entries.iter().map(|e| e.name.as_str()).collect();
            for e in &entries {
                let swapped = swap_case(&e.name);
                if swapped != e.name && !names.contains(swapped.as_str()) {
                    return match share.stat(&join(&root, &swapped)) {
                        Ok(_) => Ok(true),
                        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
                        Err(e) => Err(e),
                    };
                }
            }
            // A temporary name: a killed probe leaves a leftover, swept.
            let probe = tmp_key(&join(&root, "case-probe"));
            let h = share.open(&probe, Open::write(OPEN_IF))?;
            share.close(h)?;
            let upper = probe.to_uppercase();
            let found = share.stat(&upper);
            let _ = share.remove(&probe);
            match found {
                Ok(_) => Ok(true),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
                Err(e) => Err(e),
            }
        });
        probed.unwrap_or(true)
    }
}

/// `name` with the case of every ASCII letter changed (the others can
/// change length or fold differently from server to server).
fn swap_case(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_lowercase() {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            }
        })
        .collect()
}

/// A tree entry of what the share says of `path`.
fn entry(path: String, info: &Info) -> TreeEntry {
    let kind = if info.is_reparse_point() {
        EntryKind::Symlink
    } else if info.is_dir() {
        EntryKind::Dir
    } else {
        EntryKind::File
    };
    TreeEntry {
        path,
        kind,
        size: if kind == EntryKind::File {
            info.size
        } else {
            0
        },
        mtime_ns: Some(filetime::to_unix_ns(info.mtime)),
        mode: None,
        link: None,
        stamp: None,
    }
}

impl FileWriter for SmbWriter {
    fn commit(mut self: Box<Self>) -> Result<Stored> {
        self.finish()?;
        Ok(Stored::default())
    }
}

impl Tree for SmbTree {
    fn location(&self) -> String {
        self.t.location()
    }

    fn root_path(&self) -> String {
        let l = self.t.location_ref();
        format!("/{}", join(&l.config.share, &l.path))
    }

    fn caps(&self) -> TreeCaps {
        TreeCaps {
            mtime_precision: Duration::from_nanos(100),
            case_insensitive: *self.case_insensitive.get_or_init(|| self.probe_case()),
            symlinks: false,
            dirs: true,
            modes: false,
            transfers: TRANSFERS,
        }
    }

    fn root(&self) -> Result<Option<TreeEntry>> {
        let root = self.at("");
        self.maybe(|share| share.stat(&root))
            .map_err(|e| self.err("inspect", "", e))
            .map(|info| info.map(|i| entry(String::new(), &i)))
    }

    fn walk<'a>(
        &'a self,
        skip: &'a (dyn Fn(&str, EntryKind) -> bool + Sync),
    ) -> Result<Box<dyn Iterator<Item = Result<Walked>> + Send + 'a>> {
        let share = self.t.pool().take()?;
        Ok(Box::new(DepthFirst::new(
            Lister {
                tree: self,
                share: Some(share),
                skip,
            },
            skip,
        )))
    }

    fn stat(&self, path: &str) -> Result<Option<TreeEntry>> {
        if path.is_empty() {
            return self.root();
        }
        check_key(path)?;
        let at = self.at(path);
        self.maybe(|share| share.stat(&at))
            .map_err(|e| self.err("inspect", path, e))
            .map(|info| info.map(|i| entry(path.to_owned(), &i)))
    }

    fn open(&self, path: &str) -> Result<Box<dyn Read + Send>> {
        let at = self.checked_at(path)?;
        Ok(Box::new(self.t.reader(&at, self.t.shown(path))?))
    }

    fn write(&self, path: &str, attrs: FileAttrs) -> Result<Box<dyn FileWriter>> {
        check_key(path)?;
        let mut w = self.t.writer(&self.at(path), self.t.shown(path))?;
        w.mtime = attrs.mtime_ns.map(filetime::from_unix_ns);
        Ok(Box::new(w))
    }

    fn make_dir(&self, path: &str, _attrs: FileAttrs) -> Result<()> {
        let at = self.checked_at(path)?;
        self.t
            .pool()
            .with(|share| {
                // The parents, then the directory itself (a parent of "x").
                self.t.make_parents(share, &join(&at, "x"))
            })
            .map_err(|e| self.err("create directory", path, e))
    }

    fn set_dir_mtime(&self, path: &str, mtime_ns: i64) -> Result<()> {
        let at = self.checked_at(path)?;
        self.t
            .pool()
            .with(|share| {
                let h = share.open(
                    &at,
                    Open {
                        options: DIRECTORY_FILE | OPEN_REPARSE_POINT,
                        ..Open::modify()
                    },
                )?;
                let set = if h.is_reparse_point() {
                    Ok(())
                } else {
                    share.set_mtime(h, filetime::from_unix_ns(mtime_ns))
                };
                let closed = share.close(h);
                set.and(closed)
            })
            .map_err(|e| self.err("set the mtime of", path, e))
    }

    fn symlink(&self, path: &str, _target: &str) -> Result<()> {
        Err(Error::Unsupported(format!(
            "{}: an SMB share keeps no symlinks",
            self.t.shown(path)
        )))
    }

    fn remove(&self, path: &str, kind: EntryKind) -> Result<()> {
        check_key(path)?;
        let at = self.at(path);
        let removed = self.maybe(|share| {
            let h = share.open(&at, Open::modify())?;
            if (kind == EntryKind::Dir) != h.is_dir() && !h.is_reparse_point() {
                share.close(h)?;
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    if h.is_dir() {
                        "a directory, not a file"
                    } else {
                        "a file, not a directory"
                    },
                ));
            }
            let marked = share.delete_on_close(h);
            let closed = share.close(h);
            marked.and(closed)
        });
        if kind == EntryKind::Dir {
            self.t.forget_dirs(&at);
        }
        removed.map(|_| ()).map_err(|e| self.err("remove", path, e))
    }

    fn rename(&self, from: &str, to: &str) -> Result<()> {
        check_key(from)?;
        check_key(to)?;
        let (src, dst) = (self.at(from), self.at(to));
        self.t
            .pool()
            .with(|share| {
                self.t.make_parents(share, &dst)?;
                let h = share.open(&src, Open::modify())?;
                let moved = share.rename(h, &dst, true);
                let closed = share.close(h);
                moved.and(closed)
            })
            .map_err(|e| self.err("move", from, e))
    }

    /// Exclusive on the server, as the `smb://` repositories' locks.
    fn create_new(&self, path: &str, data: &[u8]) -> Result<()> {
        self.t.create_new(path, data)
    }
}

/// Lists one directory of the share at a time for the depth-first walk,
/// on one pooled connection.
struct Lister<'a> {
    tree: &'a SmbTree,
    share: Option<Share>,
    skip: Skip<'a>,
}

impl Drop for Lister<'_> {
    fn drop(&mut self) {
        if let Some(share) = self.share.take() {
            self.tree.t.pool().give(share);
        }
    }
}

impl ListDir for Lister<'_> {
    fn list(&mut self, rel: &str, entries: &mut Vec<TreeEntry>, met: &mut Vec<Result<Walked>>) {
        let Some(share) = self.share.as_mut() else {
            return;
        };
        let listed = match share.list(&self.tree.at(rel)) {
            Ok(l) => l,
            Err(e) if share.is_broken() => {
                met.push(Err(self.tree.err("list", rel, e)));
                return;
            }
            Err(e) if rel.is_empty() && e.kind() == io::ErrorKind::NotFound => return,
            Err(e) => {
                met.push(Ok(Walked::Warning {
                    path: rel.to_owned(),
                    message: format!("cannot list the directory: {e}"),
                }));
                return;
            }
        };
        for e in listed {
            let path = join(rel, &e.name);
            if is_tmp_name(&e.name) {
                met.push(Ok(Walked::Leftover(path)));
            } else if e.info.is_reparse_point() {
                if !(self.skip)(&path, EntryKind::Symlink) {
                    met.push(Ok(Walked::Warning {
                        path,
                        message: "a symlink or junction on the share: not followed, not copied"
                            .into(),
                    }));
                }
            } else {
                entries.push(entry(path, &e.info));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::swap_case;

    #[test]
    fn case_is_swapped_letter_by_letter() {
        assert_eq!(swap_case("Run-01.csv"), "rUN-01.CSV");
        assert_eq!(swap_case("Grüße"), "gRüßE");
        assert_eq!(swap_case("123_-"), "123_-");
    }
}
