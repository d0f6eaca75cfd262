//! A local or mounted directory as a mirror [`Tree`].
//!
//! Files are written to a hidden temporary name beside their final name
//! (`.NAME.tmp-<16 hex>`), with mode and mtime set, and renamed into place
//! in batches: one `syncfs` makes a whole batch durable, then each file is
//! renamed over its old version. A reader, a kill or a power loss sees the
//! old file or the whole new one. A run that is killed leaves temporary
//! files, which the next walk reports as leftovers.
//!
//! Nothing is written or read through a symlink below the root: each
//! directory on the way is checked with `lstat`, and files are opened with
//! `O_NOFOLLOW`. Symlinks in the tree are listed (and copied) as links.
//!
//! The mtime precision and case sensitivity come from the filesystem type
//! (`statfs`), of the destination itself: FAT and exFAT keep 2 s, SMB and
//! NTFS 100 ns, FUSE filesystems (sshfs) are taken as 1 s, and the rest
//! (ext4, xfs, btrfs, tmpfs, NFS) as 1 ns.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backup_core::target::{check_key, is_tmp_name, tmp_key};
use backup_core::tree::{
    DepthFirst, EntryKind, FileAttrs, FileWriter, ListDir, Stored, Tree, TreeCaps, TreeEntry,
    Walked, join,
};
use backup_core::{Error, Result};

/// Files committed but not yet renamed before a batch is made visible.
const BATCH_FILES: usize = 4096;
/// Bytes committed but not yet renamed before a batch is made visible.
const BATCH_BYTES: u64 = 512 << 20;

/// A directory tree on a local or mounted filesystem.
#[derive(Debug)]
pub struct LocalTree {
    root: PathBuf,
    follow_links: bool,
    caps: TreeCaps,
    pending: Arc<Mutex<Pending>>,
}

#[derive(Debug, Default)]
struct Pending {
    renames: Vec<(PathBuf, PathBuf)>,
    bytes: u64,
    /// Held while a batch is synced and renamed, so that `flush` returns
    /// only after every batch taken before it is visible.
    publishing: Arc<Mutex<()>>,
}

/// Syncs the filesystem once, then renames a batch into place.
fn publish_batch(root: &Path, renames: Vec<(PathBuf, PathBuf)>) -> Result<()> {
    if renames.is_empty() {
        return Ok(());
    }
    sync_fs(root)?;
    for (tmp, fin) in renames {
        fs::rename(&tmp, &fin).map_err(|e| Error::io("rename", fin.display().to_string(), e))?;
    }
    Ok(())
}

impl LocalTree {
    /// A tree rooted at `root` (which need not exist yet).
    pub fn new(root: impl Into<PathBuf>) -> Result<Self> {
        let root: PathBuf = root.into();
        if root.as_os_str().is_empty() {
            return Err(Error::InvalidInput("empty path".into()));
        }
        let root = std::path::absolute(&root)
            .map_err(|e| Error::io("resolve", root.display().to_string(), e))?;
        if root.to_str().is_none() {
            return Err(Error::InvalidInput(format!(
                "path {} is not valid UTF-8",
                root.display()
            )));
        }
        let caps = probe_caps(&root);
        Ok(Self {
            root,
            follow_links: false,
            caps,
            pending: Arc::default(),
        })
    }

    /// Lists symlinks as what they point to (`--copy-links`): a link to a
    /// file is copied as that file, a link to a directory walked as one. A
    /// directory reached a second time (a link loop) is not walked again.
    #[must_use]
    pub fn following_links(mut self, follow: bool) -> Self {
        self.follow_links = follow;
        self
    }

    /// Overrides the probed capabilities (tests emulate other filesystems).
    #[must_use]
    pub fn with_caps(mut self, caps: TreeCaps) -> Self {
        self.caps = caps;
        self
    }

    pub fn root_dir(&self) -> &Path {
        &self.root
    }

    fn path(&self, rel: &str) -> Result<PathBuf> {
        if rel.is_empty() {
            return Ok(self.root.clone());
        }
        check_key(rel)?;
        Ok(self.root.join(rel))
    }

    /// A file's path and a fresh temporary name beside it, below real
    /// directories (made where missing).
    fn beside(&self, rel: &str) -> Result<(PathBuf, PathBuf)> {
        let path = self.path(rel)?;
        if rel.is_empty() {
            return Err(Error::InvalidInput("cannot write over the root".into()));
        }
        self.real_dirs(Self::parent_of(rel), None)?;
        let name = path
            .file_name()
            .map_or_else(Default::default, |n| n.to_string_lossy().into_owned());
        let tmp = path.with_file_name(tmp_key(&name));
        Ok((path, tmp))
    }

    fn io(&self, action: &'static str, rel: &str, e: io::Error) -> Error {
        let path = self.root.join(rel).display().to_string();
        if e.kind() == io::ErrorKind::NotFound {
            Error::NotFound { what: "file", path }
        } else {
            Error::io(action, path, e)
        }
    }

    /// Makes every directory from the root down to `rel` (inclusive) exist
    /// as a real directory, never passing through a symlink.
    fn real_dirs(&self, rel: &str, mode: Option<u32>) -> Result<PathBuf> {
        let mut at = self.root.clone();
        match fs::symlink_metadata(&at) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir_all(&at).map_err(|e| self.io("create directory", "", e))?;
            }
            Err(e) => return Err(self.io("inspect", "", e)),
        }
        if rel.is_empty() {
            return Ok(at);
        }
        let parts: Vec<&str> = rel.split('/').collect();
        for (i, name) in parts.iter().enumerate() {
            at.push(name);
            let last = i + 1 == parts.len();
            match fs::symlink_metadata(&at) {
                Ok(m) if m.is_dir() => continue,
                Ok(_) => {
                    return Err(Error::io(
                        "create directory",
                        at.display().to_string(),
                        io::Error::other(
                            "a file or symlink is in the way; refusing to write through it",
                        ),
                    ));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("inspect", at.display().to_string(), e)),
            }
            match fs::create_dir(&at) {
                Ok(()) => {
                    if let (true, Some(m)) = (last, mode) {
                        let _ = fs::set_permissions(&at, fs::Permissions::from_mode(m & 0o7777));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(Error::io("create directory", at.display().to_string(), e)),
            }
        }
        Ok(at)
    }

    fn parent_of(rel: &str) -> &str {
        rel.rsplit_once('/').map_or("", |(p, _)| p)
    }

    fn entry(rel: String, meta: &fs::Metadata, path: &Path) -> Option<TreeEntry> {
        let ft = meta.file_type();
        let kind = if ft.is_dir() {
            EntryKind::Dir
        } else if ft.is_file() {
            EntryKind::File
        } else if ft.is_symlink() {
            EntryKind::Symlink
        } else {
            // FIFOs, sockets and devices are not mirrored (as rsync without -D).
            return None;
        };
        let link = if kind == EntryKind::Symlink {
            Some(fs::read_link(path).ok()?.to_str()?.to_owned())
        } else {
            None
        };
        Some(TreeEntry {
            path: rel,
            kind,
            size: if kind == EntryKind::File {
                meta.len()
            } else {
                0
            },
            mtime_ns: Some(meta.mtime() * 1_000_000_000 + meta.mtime_nsec()),
            mode: Some(meta.mode() & 0o7777),
            link,
            stamp: None,
        })
    }
}

/// One `syncfs` of the filesystem that holds `path`.
fn sync_fs(path: &Path) -> Result<()> {
    let dir = File::open(path).map_err(|e| Error::io("open", path.display().to_string(), e))?;
    rustix::fs::syncfs(&dir)
        .map_err(|e| Error::io("sync", path.display().to_string(), io::Error::from(e)))
}

/// The filesystem's mtime precision, case sensitivity and what it keeps,
/// from its type (of the deepest existing directory on the way to `root`).
fn probe_caps(root: &Path) -> TreeCaps {
    const MSDOS: u64 = 0x4d44;
    const EXFAT: u64 = 0x2011_bab0;
    const CIFS: u64 = 0xff53_4d42;
    const SMB2: u64 = 0xfe53_4d42;
    const NTFS: u64 = 0x5346_544e;
    const NTFS3: u64 = 0x7366_746e;
    const FUSE: u64 = 0x6573_5546;
    let mut at = Some(root);
    let mut kind = None;
    while let Some(p) = at {
        if let Ok(st) = rustix::fs::statfs(p) {
            kind = Some(st.f_type as u64);
            break;
        }
        at = p.parent();
    }
    let mut caps = TreeCaps {
        mtime_precision: Duration::from_nanos(1),
        case_insensitive: false,
        symlinks: true,
        dirs: true,
        modes: true,
        transfers: 4,
    };
    match kind {
        Some(MSDOS | EXFAT) => {
            caps.mtime_precision = Duration::from_secs(2);
            caps.case_insensitive = true;
            caps.symlinks = false;
            caps.modes = false;
        }
        Some(CIFS | SMB2) => {
            caps.mtime_precision = Duration::from_nanos(100);
            caps.case_insensitive = true;
            caps.symlinks = false;
            caps.modes = false;
        }
        Some(NTFS | NTFS3) => caps.mtime_precision = Duration::from_nanos(100),
        Some(FUSE) => caps.mtime_precision = Duration::from_secs(1),
        _ => {}
    }
    caps
}

impl Tree for LocalTree {
    fn location(&self) -> String {
        self.root.display().to_string()
    }

    fn root_path(&self) -> String {
        self.root.display().to_string()
    }

    /// The root, unless links are followed (a bulk transport would not
    /// follow them the same way).
    fn local_dir(&self) -> Option<PathBuf> {
        (!self.follow_links && self.root.is_dir()).then(|| self.root.clone())
    }

    fn caps(&self) -> TreeCaps {
        self.caps.clone()
    }

    fn root(&self) -> Result<Option<TreeEntry>> {
        match fs::metadata(&self.root) {
            Ok(m) => Ok(Self::entry(String::new(), &m, &self.root)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.io("inspect", "", e)),
        }
    }

    fn walk<'a>(
        &'a self,
        skip: &'a (dyn Fn(&str, EntryKind) -> bool + Sync),
    ) -> Result<Box<dyn Iterator<Item = Result<Walked>> + Send + 'a>> {
        Ok(Box::new(DepthFirst::new(
            Lister {
                tree: self,
                seen: std::collections::HashSet::new(),
            },
            skip,
        )))
    }

    fn stat(&self, rel: &str) -> Result<Option<TreeEntry>> {
        let path = self.path(rel)?;
        let meta = if self.follow_links {
            fs::metadata(&path)
        } else {
            fs::symlink_metadata(&path)
        };
        match meta {
            Ok(m) => Ok(Self::entry(rel.to_owned(), &m, &path)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.io("inspect", rel, e)),
        }
    }

    fn open(&self, rel: &str) -> Result<Box<dyn Read + Send>> {
        let path = self.path(rel)?;
        let mut o = OpenOptions::new();
        o.read(true);
        if !rel.is_empty() && !self.follow_links {
            o.custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK);
        } else {
            o.custom_flags(libc::O_NONBLOCK);
        }
        let f = o.open(&path).map_err(|e| self.io("open", rel, e))?;
        let m = f.metadata().map_err(|e| self.io("inspect", rel, e))?;
        if !m.is_file() {
            return Err(Error::io(
                "open",
                path.display().to_string(),
                io::Error::other("not a regular file"),
            ));
        }
        Ok(Box::new(f))
    }

    fn write(&self, rel: &str, attrs: FileAttrs) -> Result<Box<dyn FileWriter>> {
        let (path, tmp) = self.beside(rel)?;
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| self.io("create", rel, e))?;
        Ok(Box::new(LocalWriter {
            file: Some(io::BufWriter::with_capacity(256 * 1024, file)),
            tmp,
            fin: path,
            attrs,
            bytes: 0,
            pending: Arc::clone(&self.pending),
            tree: self.root.clone(),
        }))
    }

    fn flush(&self) -> Result<()> {
        let (renames, publishing) = {
            let mut p = self.pending.lock().map_err(|_| poisoned())?;
            p.bytes = 0;
            (std::mem::take(&mut p.renames), Arc::clone(&p.publishing))
        };
        let _turn = publishing.lock().map_err(|_| poisoned())?;
        if !renames.is_empty() {
            publish_batch(&self.root, renames)?;
            // The renames themselves.
            sync_fs(&self.root)?;
        }
        Ok(())
    }

    fn make_dir(&self, rel: &str, attrs: FileAttrs) -> Result<()> {
        self.real_dirs(rel, attrs.mode).map(drop)
    }

    /// Written whole under a temporary name, synced, then hard-linked to
    /// its name: the link fails if anything is there, so exactly one of
    /// two processes gets it, and it is never seen half-written.
    fn create_new(&self, rel: &str, data: &[u8]) -> Result<()> {
        let (path, tmp) = self.beside(rel)?;
        let written = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .and_then(|mut f| {
                f.write_all(data)?;
                f.sync_all()
            })
            .and_then(|()| fs::hard_link(&tmp, &path));
        let _ = fs::remove_file(&tmp);
        match written {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(Error::AlreadyExists {
                path: path.display().to_string(),
            }),
            Err(e) => Err(self.io("create", rel, e)),
        }
    }

    fn set_dir_mtime(&self, rel: &str, mtime_ns: i64) -> Result<()> {
        let path = self.path(rel)?;
        match fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() => {}
            _ => return Ok(()),
        }
        filetime::set_file_mtime(&path, file_time(mtime_ns))
            .map_err(|e| self.io("set the mtime of", rel, e))
    }

    fn symlink(&self, rel: &str, target: &str) -> Result<()> {
        let path = self.path(rel)?;
        self.real_dirs(Self::parent_of(rel), None)?;
        let name = path
            .file_name()
            .map_or_else(Default::default, |n| n.to_string_lossy().into_owned());
        let tmp = path.with_file_name(tmp_key(&name));
        std::os::unix::fs::symlink(target, &tmp).map_err(|e| self.io("create symlink", rel, e))?;
        fs::rename(&tmp, &path).map_err(|e| {
            let _ = fs::remove_file(&tmp);
            self.io("create symlink", rel, e)
        })
    }

    fn remove(&self, rel: &str, kind: EntryKind) -> Result<()> {
        let path = self.path(rel)?;
        let r = if kind == EntryKind::Dir {
            fs::remove_dir(&path)
        } else {
            fs::remove_file(&path)
        };
        match r {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.io("remove", rel, e)),
        }
    }

    fn rename(&self, from: &str, to: &str) -> Result<()> {
        let src = self.path(from)?;
        let dst = self.path(to)?;
        self.real_dirs(Self::parent_of(to), None)?;
        fs::rename(&src, &dst).map_err(|e| self.io("move", from, e))
    }
}

fn poisoned() -> Error {
    Error::Backend {
        backend: "local".into(),
        message: "a copy thread panicked".into(),
        source: None,
    }
}

fn file_time(ns: i64) -> filetime::FileTime {
    filetime::FileTime::from_unix_time(
        ns.div_euclid(1_000_000_000),
        ns.rem_euclid(1_000_000_000) as u32,
    )
}

/// A file being written under its temporary name.
struct LocalWriter {
    file: Option<io::BufWriter<File>>,
    tmp: PathBuf,
    fin: PathBuf,
    attrs: FileAttrs,
    bytes: u64,
    pending: Arc<Mutex<Pending>>,
    tree: PathBuf,
}

impl Write for LocalWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self
            .file
            .as_mut()
            .ok_or_else(|| io::Error::other("writer already committed"))?
            .write(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.as_mut().map_or(Ok(()), Write::flush)
    }
}

impl FileWriter for LocalWriter {
    fn commit(mut self: Box<Self>) -> Result<Stored> {
        let path = self.fin.display().to_string();
        let file = self
            .file
            .take()
            .ok_or_else(|| Error::InvalidInput("writer already committed".into()))?;
        let file = file
            .into_inner()
            .map_err(|e| Error::io("write", path.clone(), e.into_error()))?;
        if let Some(m) = self.attrs.mode {
            file.set_permissions(fs::Permissions::from_mode(m & 0o7777))
                .map_err(|e| Error::io("set the mode of", path.clone(), e))?;
        }
        if let Some(ns) = self.attrs.mtime_ns {
            filetime::set_file_handle_times(&file, None, Some(file_time(ns)))
                .map_err(|e| Error::io("set the mtime of", path.clone(), e))?;
        }
        drop(file);
        let batch = {
            let mut p = self.pending.lock().map_err(|_| poisoned())?;
            p.renames
                .push((std::mem::take(&mut self.tmp), self.fin.clone()));
            p.bytes += self.bytes;
            (p.renames.len() >= BATCH_FILES || p.bytes >= BATCH_BYTES).then(|| {
                p.bytes = 0;
                (std::mem::take(&mut p.renames), Arc::clone(&p.publishing))
            })
        };
        // The sync runs outside the lock: the other copies go on meanwhile.
        if let Some((renames, publishing)) = batch {
            let _turn = publishing.lock().map_err(|_| poisoned())?;
            publish_batch(&self.tree, renames)?;
        }
        Ok(Stored::default())
    }
}

impl Drop for LocalWriter {
    fn drop(&mut self) {
        // Not committed: the temporary file goes.
        if !self.tmp.as_os_str().is_empty() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// Lists one local directory for the depth-first walk.
struct Lister<'a> {
    tree: &'a LocalTree,
    /// Directories walked so far (device, inode), when following links.
    seen: std::collections::HashSet<(u64, u64)>,
}

impl ListDir for Lister<'_> {
    fn list(&mut self, rel: &str, entries: &mut Vec<TreeEntry>, met: &mut Vec<Result<Walked>>) {
        let dir = self.tree.root.join(rel);
        if self.tree.follow_links
            && let Ok(m) = fs::metadata(&dir)
            && !self.seen.insert((m.dev(), m.ino()))
        {
            met.push(Ok(Walked::Warning {
                path: rel.to_owned(),
                message: "a directory reached again through a symlink (a loop); not walked again"
                    .into(),
            }));
            return;
        }
        let rd = match fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) => {
                met.push(Ok(Walked::Warning {
                    path: rel.to_owned(),
                    message: format!("cannot list the directory: {e}"),
                }));
                return;
            }
        };
        for de in rd {
            let de = match de {
                Ok(de) => de,
                Err(e) => {
                    met.push(Ok(Walked::Warning {
                        path: rel.to_owned(),
                        message: format!("cannot list the directory: {e}"),
                    }));
                    continue;
                }
            };
            let name = de.file_name();
            let Some(name) = name.to_str() else {
                met.push(Ok(Walked::Warning {
                    path: join(rel, &name.to_string_lossy()),
                    message: "the name is not valid UTF-8; not mirrored".into(),
                }));
                continue;
            };
            let child = join(rel, name);
            if is_tmp_name(name) {
                met.push(Ok(Walked::Leftover(child)));
                continue;
            }
            let path = de.path();
            let meta = if self.tree.follow_links {
                fs::metadata(&path)
            } else {
                de.metadata()
            };
            match meta {
                Ok(m) => entries.extend(LocalTree::entry(child, &m, &path)),
                Err(e)
                    if e.kind() == io::ErrorKind::NotFound
                        && self.tree.follow_links
                        && fs::symlink_metadata(&path).is_ok() =>
                {
                    met.push(Ok(Walked::Warning {
                        path: child,
                        message: "a symlink whose target does not exist; not copied".into(),
                    }));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => met.push(Ok(Walked::Warning {
                    path: child,
                    message: format!("cannot read: {e}"),
                })),
            }
        }
    }
}
