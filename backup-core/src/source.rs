//! The file-tree source: walks several paths in a stable order, applying
//! exclude globs the way restic and the seeds' filters do.

use std::fs::{File, Metadata};
use std::path::{Path, PathBuf};

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

use crate::progress::Cancel;
use crate::{Error, IoContext, Result};

/// Exclude patterns.
///
/// A pattern without `/` matches a file or directory name anywhere
/// (`*.tmp`, `__pycache__`); a pattern starting with `/` matches the absolute
/// path; any other pattern with `/` matches a trailing part of the path
/// (`raw/*.bin`). `*` does not cross `/`, `**` does. An excluded directory is
/// not descended into.
#[derive(Debug, Clone, Default)]
pub struct Excludes {
    names: GlobSet,
    paths: GlobSet,
    patterns: Vec<String>,
}

impl Excludes {
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<Self> {
        let mut names = GlobSetBuilder::new();
        let mut paths = GlobSetBuilder::new();
        let mut kept = Vec::new();
        for p in patterns {
            let p = p.as_ref().trim();
            if p.is_empty() {
                continue;
            }
            let p_clean = p.trim_end_matches('/');
            let (builder, glob_text) = if !p_clean.contains('/') {
                (&mut names, p_clean.to_owned())
            } else if p_clean.starts_with('/') {
                (&mut paths, p_clean.to_owned())
            } else {
                (&mut paths, format!("**/{p_clean}"))
            };
            let glob = GlobBuilder::new(&glob_text)
                .literal_separator(true)
                .backslash_escape(true)
                .build()
                .map_err(|e| Error::InvalidInput(format!("bad exclude pattern {p:?}: {e}")))?;
            builder.add(glob);
            kept.push(p.to_owned());
        }
        let build = |b: GlobSetBuilder| {
            b.build()
                .map_err(|e| Error::InvalidInput(format!("bad exclude patterns: {e}")))
        };
        Ok(Self {
            names: build(names)?,
            paths: build(paths)?,
            patterns: kept,
        })
    }

    /// Reads patterns from a file: one per line, `#` starts a comment line.
    pub fn read_pattern_file(path: &Path) -> Result<Vec<String>> {
        let text = std::fs::read_to_string(path).ctx("read exclude file", path.display())?;
        Ok(text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_owned)
            .collect())
    }

    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }

    pub fn is_excluded(&self, abs: &Path) -> bool {
        if let Some(name) = abs.file_name()
            && self.names.is_match(Path::new(name))
        {
            return true;
        }
        self.paths.is_match(abs)
    }
}

/// One thing met while walking.
#[derive(Debug)]
pub enum Walked {
    /// An entry to store; `name` is the absolute path without its leading
    /// `/`, which is the entry's path in the archive.
    Entry {
        abs: PathBuf,
        name: String,
        meta: Metadata,
    },
    /// Something that could not be walked; the walk goes on.
    Warning { path: String, message: String },
}

/// Opens regular files for reading relative to their directory (`openat`,
/// which spares the kernel a walk of the whole path for each of a million
/// small files), never through a symlink put in a file's place since it was
/// listed. It keeps the last directory open: a walk gives a directory's
/// files one after another. Directories are opened here, by the reader,
/// rather than lent by the walk, so that entries walked ahead hold no
/// descriptors (thousands of one-file directories would exhaust them).
#[derive(Debug, Default)]
pub struct FileOpener {
    dir: Option<(PathBuf, File)>,
}

impl FileOpener {
    /// Opens the regular file `abs`.
    ///
    /// # Errors
    ///
    /// Those of `open`; a file replaced by a symlink gives `ELOOP`.
    pub fn open(&mut self, abs: &Path) -> std::io::Result<File> {
        use rustix::fs::{Mode, OFlags};
        let flags = OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW | OFlags::NOCTTY;
        if let (Some(parent), Some(name)) = (abs.parent(), abs.file_name()) {
            if self.dir.as_ref().is_none_or(|(open, _)| open != parent) {
                let dir_flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
                // Unopenable (no read permission): by the whole path.
                self.dir = rustix::fs::open(parent, dir_flags | OFlags::NOFOLLOW, Mode::empty())
                    .ok()
                    .map(|fd| (parent.to_path_buf(), File::from(fd)));
            }
            if let Some((_, dir)) = &self.dir {
                return Ok(File::from(rustix::fs::openat(
                    dir,
                    name,
                    flags,
                    Mode::empty(),
                )?));
            }
        }
        Ok(File::from(rustix::fs::open(abs, flags, Mode::empty())?))
    }
}

/// A set of source paths and excludes.
#[derive(Debug, Clone)]
pub struct FileTreeSource {
    roots: Vec<PathBuf>,
    excludes: Excludes,
}

impl FileTreeSource {
    /// Resolves `paths` to absolute paths (without following symlinks),
    /// checks each exists and drops paths nested in another.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] for a path that does not exist, before any work.
    pub fn new<P: AsRef<Path>>(paths: &[P], excludes: Excludes) -> Result<Self> {
        if paths.is_empty() {
            return Err(Error::InvalidInput("no source path given".into()));
        }
        let mut roots: Vec<PathBuf> = Vec::new();
        for p in paths {
            let p = p.as_ref();
            let abs = normalize(&std::path::absolute(p).ctx("resolve", p.display())?);
            match std::fs::symlink_metadata(&abs) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(Error::NotFound {
                        what: "source path",
                        path: p.display().to_string(),
                    });
                }
                Err(e) => return Err(Error::io("read", p.display().to_string(), e)),
            }
            if abs.to_str().is_none() {
                return Err(Error::InvalidInput(format!(
                    "source path {} is not valid UTF-8",
                    abs.display()
                )));
            }
            roots.push(abs);
        }
        roots.sort();
        roots.dedup();
        let mut kept: Vec<PathBuf> = Vec::new();
        for r in roots {
            if !kept.iter().any(|k| r.starts_with(k)) {
                kept.push(r);
            }
        }
        Ok(Self {
            roots: kept,
            excludes,
        })
    }

    pub fn roots(&self) -> &[PathBuf] {
        &self.roots
    }

    pub fn excludes(&self) -> &Excludes {
        &self.excludes
    }

    /// Walks every root depth-first, children in name order, calling `visit`
    /// for each entry and warning. Stops at the first error `visit` returns.
    pub fn walk(&self, cancel: &Cancel, visit: &mut dyn FnMut(Walked) -> Result<()>) -> Result<()> {
        for root in &self.roots {
            if self.excludes.is_excluded(root) {
                continue;
            }
            let meta = match std::fs::symlink_metadata(root) {
                Ok(m) => m,
                Err(e) => {
                    visit(warning(root, &e))?;
                    continue;
                }
            };
            let is_dir = meta.is_dir();
            if let Some(item) = entry(root.clone(), meta) {
                visit(item)?;
            }
            if is_dir {
                self.walk_dir(root, cancel, visit)?;
            }
        }
        Ok(())
    }

    /// As [`Self::walk`], with the walk (listing and stat'ing directories)
    /// on a thread of its own, up to [`WALK_AHEAD`] entries ahead of
    /// `visit`: for a million small files, half of a backup's time is
    /// those system calls, which then overlap with reading and packing.
    /// Stops the walk at the first error `visit` returns, and returns it.
    pub fn walk_ahead(
        &self,
        cancel: &Cancel,
        visit: &mut dyn FnMut(Walked) -> Result<()>,
    ) -> Result<()> {
        std::thread::scope(|s| {
            let (tx, rx) = std::sync::mpsc::sync_channel::<Walked>(WALK_AHEAD);
            let walker = std::thread::Builder::new()
                .name("backupkit-walk".into())
                .spawn_scoped(s, move || {
                    // A send fails only once `visit` has stopped, with its
                    // own error, which is the one returned.
                    self.walk(cancel, &mut |w| tx.send(w).map_err(|_| Error::Cancelled))
                })
                .map_err(|e| Error::io("start", "the walk's thread", e))?;
            let mut visited = Ok(());
            for w in &rx {
                visited = visit(w);
                if visited.is_err() {
                    break;
                }
            }
            drop(rx);
            let walk_result = walker.join().unwrap_or_else(|_| {
                Err(Error::io(
                    "walk",
                    "the source",
                    std::io::Error::other("the walk's thread panicked"),
                ))
            });
            visited.and(walk_result)
        })
    }

    fn walk_dir(
        &self,
        root: &Path,
        cancel: &Cancel,
        visit: &mut dyn FnMut(Walked) -> Result<()>,
    ) -> Result<()> {
        // One iterator of sorted, already stat'ed children per open directory
        // level. Stat'ing a directory's children together, before any is
        // read, widens the window in which a change is noticed (the size and
        // mtime are compared again after reading).
        let mut stack: Vec<std::vec::IntoIter<Child>> = Vec::new();
        match self.children(root) {
            Ok(c) => stack.push(c.into_iter()),
            Err(e) => visit(warning(root, &e))?,
        }
        while let Some(level) = stack.last_mut() {
            let Some((path, meta)) = level.next() else {
                stack.pop();
                continue;
            };
            cancel.check()?;
            let meta = match meta {
                Ok(m) => m,
                Err(e) => {
                    visit(warning(&path, &e))?;
                    continue;
                }
            };
            let is_dir = meta.is_dir();
            if let Some(item) = entry(path.clone(), meta) {
                visit(item)?;
                if is_dir {
                    match self.children(&path) {
                        Ok(c) => stack.push(c.into_iter()),
                        Err(e) => visit(warning(&path, &e))?,
                    }
                }
            }
        }
        Ok(())
    }

    fn children(&self, dir: &Path) -> std::io::Result<Vec<Child>> {
        // Stat'ed relative to the open directory (`fstatat`, not following
        // links), which spares the kernel a walk of the whole path per
        // child; sorted by name bytes, which for children of one directory
        // is the order of their paths, without comparing path components.
        let mut children = Vec::new();
        for de in std::fs::read_dir(dir)? {
            let de = de?;
            let path = de.path();
            if !self.excludes.is_excluded(&path) {
                let meta = de.metadata();
                children.push((de.file_name(), (path, meta)));
            }
        }
        children.sort_unstable_by(|a, b| a.0.as_encoded_bytes().cmp(b.0.as_encoded_bytes()));
        Ok(children.into_iter().map(|(_, child)| child).collect())
    }
}

/// How many entries [`FileTreeSource::walk_ahead`] may walk ahead.
pub const WALK_AHEAD: usize = 4096;

/// A directory child and its metadata, read when the directory was listed.
type Child = (PathBuf, std::io::Result<Metadata>);

fn warning(path: &Path, e: &std::io::Error) -> Walked {
    let message = if e.kind() == std::io::ErrorKind::NotFound {
        "vanished before it could be read; skipped".to_owned()
    } else {
        format!("cannot read: {e}")
    };
    Walked::Warning {
        path: path.display().to_string(),
        message,
    }
}

fn entry(abs: PathBuf, meta: Metadata) -> Option<Walked> {
    let Some(s) = abs.to_str() else {
        return Some(Walked::Warning {
            path: abs.display().to_string(),
            message: "name is not valid UTF-8; skipped".into(),
        });
    };
    let name = s.trim_start_matches('/').to_owned();
    if name.is_empty() {
        // The root directory itself: its children carry the content.
        return None;
    }
    Some(Walked::Entry { abs, name, meta })
}

/// Removes `.` and resolves `..` lexically (like `filepath.Clean`), so
/// `./data/../data` and `data` name the same root.
fn normalize(p: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exclude_semantics() {
        let ex = Excludes::new(&["*.tmp", "raw/*.bin", "/abs/skip", "cache/"]).unwrap();
        assert!(ex.is_excluded(Path::new("/d/a/x.tmp")));
        assert!(!ex.is_excluded(Path::new("/d/a/x.tmpl")));
        assert!(ex.is_excluded(Path::new("/d/raw/x.bin")));
        assert!(!ex.is_excluded(Path::new("/d/raw/sub/x.bin")));
        assert!(ex.is_excluded(Path::new("/abs/skip")));
        assert!(!ex.is_excluded(Path::new("/other/abs/skip")));
        assert!(ex.is_excluded(Path::new("/d/cache")));
        assert!(Excludes::new(&["a[b"]).is_err());
    }

    #[test]
    fn normalize_is_lexical() {
        assert_eq!(normalize(Path::new("/a/./b/../c")), PathBuf::from("/a/c"));
    }
}
