//! A directory on a local or mounted filesystem.
//!
//! Objects are files; keys map to paths below the root. A `put` writes a
//! hidden temporary file beside its destination, syncs it, and renames it
//! over the destination, so a reader (or a crash) sees the old object or the
//! whole new one. `create_new` publishes with `link(2)`, which fails if the
//! name exists, so two racing creators never both succeed.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

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
    fn create_parent(&self, path: &Path, key: &str) -> Result<()> {
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(|e| self.map_err("create directory for", key, e))?;
        }
        Ok(())
    }

    fn create_tmp(&self, path: &Path, key: &str) -> Result<(File, PathBuf)> {
        for attempt in 0..2 {
            self.create_parent(path, key)?;
            let tmp = Self::tmp_path(path);
            match OpenOptions::new().write(true).create_new(true).open(&tmp) {
                Ok(f) => return Ok((f, tmp)),
                Err(e) if e.kind() == io::ErrorKind::NotFound && attempt == 0 => {}
                Err(e) => return Err(self.map_err("create", key, e)),
            }
        }
        unreachable!("the loop returns on its second attempt")
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
        let path = self.path(key)?;
        let f = File::open(&path).map_err(|e| self.map_err("open", key, e))?;
        Ok(Box::new(f))
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        // Walk only the directory the prefix names, then filter by prefix.
        let dir_part = prefix.rsplit_once('/').map_or("", |(d, _)| d);
        let start = if dir_part.is_empty() {
            self.root.clone()
        } else {
            self.path(dir_part)?
        };
        let mut out = Vec::new();
        self.walk(&start, &mut out)?;
        out.retain(|o| o.key.starts_with(prefix));
        Ok(out)
    }

    fn list_dirs(&self, prefix: &str) -> Result<Vec<String>> {
        let dir = self.root.join(prefix.trim_end_matches('/'));
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
        let path = self.path(key)?;
        let m = fs::metadata(&path).map_err(|e| self.map_err("inspect", key, e))?;
        if !m.is_file() {
            return Err(Error::NotFound {
                what: "object",
                path: path.display().to_string(),
            });
        }
        Ok(ObjectMeta {
            key: key.to_owned(),
            size: m.len(),
            modified: m.modified().ok(),
        })
    }

    fn delete(&self, key: &str) -> Result<()> {
        let path = self.path(key)?;
        match fs::remove_file(&path) {
            Ok(()) => {
                self.prune_dirs(path.parent());
                Ok(())
            }
            Err(e) => Err(self.map_err("delete", key, e)),
        }
    }

    fn sweep(&self, prefix: &str) -> Result<()> {
        let dir = self.root.join(prefix.trim_end_matches('/'));
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
