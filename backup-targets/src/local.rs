//! A directory on a local or mounted filesystem.
//!
//! Objects are files; keys map to paths below the root. A `put` writes a
//! hidden temporary file beside its destination, syncs it, and renames it
//! over the destination, so a reader (or a crash) sees the old object or the
//! whole new one. `create_new` publishes with `link(2)`, which fails if the
//! name exists, so two racing creators never both succeed.
//!
//! Only real directories and regular files below the root belong to the
//! repository. A symlink, FIFO, socket or device inside it is never read,
//! listed, written through or deleted through (deleting a key that names a
//! symlink removes at most the link itself): a hostile or damaged
//! repository cannot make backupkit touch anything outside its root, nor
//! hang on a FIFO. The root itself may be a symlink (a user's choice).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

use backup_core::target::{TMP_MARK, tmp_key};
use backup_core::{Error, ObjectMeta, ObjectWriter, Result, Target};

/// A directory holding objects.
#[derive(Debug, Clone)]
pub struct LocalTarget {
    root: PathBuf,
}

impl LocalTarget {
    /// A target rooted at `root` (created on first write).
    pub fn new(root: impl Into<PathBuf>) -> Result<Self> {
        let root: PathBuf = root.into();
        if root.as_os_str().is_empty() {
            return Err(Error::InvalidInput("empty repository path".into()));
        }
        let root = std::path::absolute(&root)
            .map_err(|e| Error::io("resolve", root.display().to_string(), e))?;
        Ok(Self { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, key: &str) -> Result<PathBuf> {
        backup_core::target::check_key(key)?;
        Ok(self.root.join(key))
    }

    /// The path of `key` when every directory on the way to it (below the
    /// root) is a real directory; `None` when one is missing, a symlink or
    /// not a directory: then the key is not part of the repository.
    fn inside(&self, key: &str) -> Result<Option<PathBuf>> {
        let path = self.path(key)?;
        let parent = Path::new(key).parent().unwrap_or(Path::new(""));
        Ok(self.real_dir(parent)?.map(|_| path))
    }

    /// `rel` (relative to the root) when it and every directory above it are
    /// real directories; `None` when one is missing or is anything else.
    fn real_dir(&self, rel: &Path) -> Result<Option<PathBuf>> {
        let mut at = self.root.clone();
        for c in rel.components() {
            let Component::Normal(name) = c else {
                return Ok(None);
            };
            at.push(name);
            match fs::symlink_metadata(&at) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => return Ok(None),
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(Error::io("inspect", at.display().to_string(), e)),
            }
        }
        Ok(Some(at))
    }

    fn not_found(&self, key: &str) -> Error {
        Error::NotFound {
            what: "object",
            path: self.root.join(key).display().to_string(),
        }
    }

    fn map_err(&self, action: &'static str, key: &str, e: io::Error) -> Error {
        if e.kind() == io::ErrorKind::NotFound {
            Error::NotFound {
                what: "object",
                path: self.root.join(key).display().to_string(),
            }
        } else {
            Error::io(action, self.root.join(key).display().to_string(), e)
        }
    }

    fn tmp_path(path: &Path) -> PathBuf {
        let name = path
            .file_name()
            .map_or_else(Default::default, |n| n.to_string_lossy().into_owned());
        path.with_file_name(tmp_key(&name))
    }

    /// Creates `path`'s directory; retried once because a concurrent delete
    /// may remove an empty directory between our create and use.
    ///
    /// Each directory below the root is created or must already be a real
    /// directory: nothing is ever written through a symlink.
    fn create_parent(&self, path: &Path, key: &str) -> Result<()> {
        let Some(parent) = path.parent() else {
            return Ok(());
        };
        if !self.root.exists() {
            fs::create_dir_all(&self.root)
                .map_err(|e| self.map_err("create directory for", key, e))?;
        }
        let rel = parent.strip_prefix(&self.root).unwrap_or(Path::new(""));
        let mut at = self.root.clone();
        for c in rel.components() {
            let Component::Normal(name) = c else {
                return Err(Error::InvalidInput(format!("invalid object key {key:?}")));
            };
            at.push(name);
            match fs::create_dir(&at) {
                Ok(()) => continue,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(self.map_err("create directory for", key, e)),
            }
            match fs::symlink_metadata(&at) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    return Err(Error::io(
                        "create directory for",
                        self.root.join(key).display().to_string(),
                        io::Error::other(format!(
                            "{} is not a real directory (a symlink or a file); \
                             refusing to write through it",
                            at.display()
                        )),
                    ));
                }
                Err(e) => return Err(self.map_err("create directory for", key, e)),
            }
        }
        Ok(())
    }

    fn create_tmp(&self, path: &Path, key: &str) -> Result<(File, PathBuf)> {
        // Another process that deletes the last object of a directory
        // removes the directory (see `prune_dirs`), possibly between our
        // creating it and our file in it (two backups ending while a prune
        // takes its lock in `locks/`): create it again, a few times.
        const ATTEMPTS: usize = 8;
        for attempt in 1..=ATTEMPTS {
            self.create_parent(path, key)?;
            let tmp = Self::tmp_path(path);
            match OpenOptions::new().write(true).create_new(true).open(&tmp) {
                Ok(f) => return Ok((f, tmp)),
                Err(e) if e.kind() == io::ErrorKind::NotFound && attempt < ATTEMPTS => {}
                Err(e) => return Err(self.map_err("create", key, e)),
            }
        }
        unreachable!("the loop returns on its last attempt")
    }

    fn walk(&self, dir: &Path, out: &mut Vec<ObjectMeta>) -> Result<()> {
        let entries = match fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::io("list", dir.display().to_string(), e)),
        };
        for de in entries {
            let de = de.map_err(|e| Error::io("list", dir.display().to_string(), e))?;
            let path = de.path();
            let ft = de
                .file_type()
                .map_err(|e| Error::io("list", path.display().to_string(), e))?;
            if ft.is_dir() {
                self.walk(&path, out)?;
            } else if ft.is_file() {
                let name = de.file_name();
                if name.to_string_lossy().contains(TMP_MARK) {
                    continue;
                }
                let Ok(rel) = path.strip_prefix(&self.root) else {
                    continue;
                };
                let Some(key) = rel.to_str() else { continue };
                let meta = match de.metadata() {
                    Ok(m) => m,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(Error::io("list", path.display().to_string(), e)),
                };
                out.push(ObjectMeta {
                    key: key.to_owned(),
                    size: meta.len(),
                    modified: meta.modified().ok(),
                });
            }
        }
        Ok(())
    }

    /// Removes empty directories from `dir` up to (not including) the root.
    fn prune_dirs(&self, mut dir: Option<&Path>) {
        while let Some(d) = dir {
            if d == self.root || !d.starts_with(&self.root) || fs::remove_dir(d).is_err() {
                break;
            }
            dir = d.parent();
        }
    }
}

fn sync_dir(dir: &Path) {
    // Makes the rename durable; not every filesystem (some SMB mounts)
    // supports syncing a directory, and the data itself is already synced.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

impl LocalTarget {
    /// Opens the regular file `key` names for reading.
    fn open_file(&self, key: &str) -> Result<File> {
        let Some(path) = self.inside(key)? else {
            return Err(self.not_found(key));
        };
        // O_NOFOLLOW: a symlink fails instead of being followed; O_NONBLOCK:
        // opening a FIFO returns at once instead of waiting for a writer.
        let f = match OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&path)
        {
            Ok(f) => f,
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return Err(self.not_found(key)),
            Err(e) => return Err(self.map_err("open", key, e)),
        };
        let meta = f.metadata().map_err(|e| self.map_err("open", key, e))?;
        if !meta.is_file() {
            return Err(self.not_found(key));
        }
        Ok(f)
    }
}

impl Target for LocalTarget {
    fn location(&self) -> String {
        self.root.display().to_string()
    }

    fn put(&self, key: &str) -> Result<Box<dyn ObjectWriter>> {
        let path = self.path(key)?;
        let (file, tmp) = self.create_tmp(&path, key)?;
        Ok(Box::new(LocalWriter {
            file: Some(file),
            tmp,
            path,
            shown: self.root.join(key).display().to_string(),
        }))
    }

    fn create_new(&self, key: &str, data: &[u8]) -> Result<()> {
        let path = self.path(key)?;
        let (mut file, tmp) = self.create_tmp(&path, key)?;
        let written = file
            .write_all(data)
            .and_then(|()| file.sync_all())
            .map_err(|e| self.map_err("write", key, e))
            .and_then(|()| match fs::hard_link(&tmp, &path) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(Error::AlreadyExists {
                    path: path.display().to_string(),
                }),
                Err(e) => Err(self.map_err("create", key, e)),
            });
        let _ = fs::remove_file(&tmp);
        if written.is_ok()
            && let Some(parent) = path.parent()
        {
            sync_dir(parent);
        }
        written
    }

    fn get(&self, key: &str) -> Result<Box<dyn Read + Send>> {
        Ok(Box::new(self.open_file(key)?))
    }

    fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Box<dyn Read + Send>> {
        use std::io::{Seek, SeekFrom};
        let mut f = self.open_file(key)?;
        f.seek(SeekFrom::Start(offset))
            .map_err(|e| self.map_err("read", key, e))?;
        Ok(Box::new(f.take(len)))
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        // Walk only the directory the prefix names, then filter by prefix.
        let dir_part = prefix.rsplit_once('/').map_or("", |(d, _)| d);
        if !dir_part.is_empty() {
            backup_core::target::check_key(dir_part)?;
        }
        let Some(start) = self.real_dir(Path::new(dir_part))? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        self.walk(&start, &mut out)?;
        out.retain(|o| o.key.starts_with(prefix));
        Ok(out)
    }

    fn list_dirs(&self, prefix: &str) -> Result<Vec<String>> {
        let Some(dir) = self.real_dir(Path::new(prefix.trim_end_matches('/')))? else {
            return Ok(Vec::new());
        };
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io("list", dir.display().to_string(), e)),
        };
        let mut out = Vec::new();
        for de in entries {
            let de = de.map_err(|e| Error::io("list", dir.display().to_string(), e))?;
            if de.file_type().is_ok_and(|t| t.is_dir())
                && let Some(name) = de.file_name().to_str()
            {
                out.push(name.to_owned());
            }
        }
        out.sort();
        Ok(out)
    }

    fn stat(&self, key: &str) -> Result<ObjectMeta> {
        let Some(path) = self.inside(key)? else {
            return Err(self.not_found(key));
        };
        let m = fs::symlink_metadata(&path).map_err(|e| self.map_err("inspect", key, e))?;
        if !m.is_file() {
            return Err(self.not_found(key));
        }
        Ok(ObjectMeta {
            key: key.to_owned(),
            size: m.len(),
            modified: m.modified().ok(),
        })
    }

    fn delete(&self, key: &str) -> Result<()> {
        // Never through a symlinked directory; a key naming a symlink
        // removes the link, not what it points to.
        let Some(path) = self.inside(key)? else {
            return Err(self.not_found(key));
        };
        match fs::remove_file(&path) {
            Ok(()) => {
                self.prune_dirs(path.parent());
                Ok(())
            }
            Err(e) => Err(self.map_err("delete", key, e)),
        }
    }

    fn sweep(&self, prefix: &str) -> Result<()> {
        let Some(dir) = self.real_dir(Path::new(prefix.trim_end_matches('/')))? else {
            return Ok(());
        };
        let Ok(entries) = fs::read_dir(&dir) else {
            return Ok(());
        };
        for de in entries.flatten() {
            if de.file_name().to_string_lossy().contains(TMP_MARK) {
                let _ = fs::remove_file(de.path());
            }
        }
        self.prune_dirs(Some(&dir));
        Ok(())
    }
}

/// Writes a temporary file; `commit` syncs and renames it into place.
struct LocalWriter {
    file: Option<File>,
    tmp: PathBuf,
    path: PathBuf,
    shown: String,
}

impl Write for LocalWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file
            .as_mut()
            .ok_or_else(|| io::Error::other("writer already committed"))?
            .write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.as_mut().map_or(Ok(()), Write::flush)
    }
}

impl ObjectWriter for LocalWriter {
    fn commit(mut self: Box<Self>) -> Result<()> {
        let file = self.file.take().expect("commit called once");
        file.sync_all()
            .map_err(|e| Error::io("write", self.shown.clone(), e))?;
        drop(file);
        if let Err(e) = fs::rename(&self.tmp, &self.path) {
            let _ = fs::remove_file(&self.tmp);
            return Err(Error::io("commit", self.shown.clone(), e));
        }
        if let Some(parent) = self.path.parent() {
            sync_dir(parent);
        }
        Ok(())
    }
}

impl Drop for LocalWriter {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            // Not committed: discard the partial object.
            let _ = fs::remove_file(&self.tmp);
        }
    }
}
