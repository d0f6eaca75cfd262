//! An SFTP directory as a mirror [`Tree`]: push to an SSH host, or pull from
//! one (seed 004's devices), over the same connection code as the SFTP
//! repositories.
//!
//! Files are written to a temporary name beside their final one, their
//! mtime and mode set on the open handle, synced (`fsync@openssh.com`) and
//! renamed over the old file with `posix-rename@openssh.com`. Walks list
//! one directory per request stream and never follow a symlink; nothing is
//! written through a symlinked directory. SFTP version 3 keeps mtimes in
//! whole seconds, so the tree's precision is 1 s (the mirror record keeps
//! the source's exact mtime, so changes within a second are still seen).

use std::collections::HashSet;
use std::io::{self, Read};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backup_core::registry::TargetOptions;
use backup_core::target::{check_key, is_tmp_name};
use backup_core::tree::{
    Bulk, BulkCopy, BulkFile, DepthFirst, Direction, EntryKind, FileAttrs, FileWriter, ListDir,
    Tree, TreeCaps, TreeEntry, Walked, join,
};
use backup_core::{Error, Result};

use super::SftpTarget;
use super::protocol::{Attrs, Conn, FXF_READ};
use super::rsync::{Rsync, landed_locally};
use super::stream::{SftpReader, SftpWriter};
use crate::way::{Way, parent_of, refused_write};

/// A directory tree on an SFTP server.
#[derive(Debug)]
pub struct SftpTree {
    t: SftpTarget,
    /// Directories known to be real ones (checked or made by this tree), so
    /// that a write into one does not look at every component again.
    known_dirs: Mutex<HashSet<String>>,
    /// The bulk transport, unless `transport=sftp`.
    rsync: Option<Rsync>,
    /// `transport=rsync`: every batch through rsync.
    always_rsync: bool,
}

/// Known directories kept before the cache starts over.
const KNOWN_DIRS: usize = 100_000;

impl SftpTree {
    /// A tree at `sftp://[user@]host[:port]/path`, with the SFTP
    /// repositories' options (`ssh_config`, `identity_file`, ...).
    ///
    /// Mirror options: `transport` (`auto`, the default, moves batches of
    /// many files, or of large changed files, with the system rsync over
    /// the same ssh command line and the rest over SFTP; `rsync` moves
    /// every batch with rsync; `sftp` writes each file over the SFTP
    /// connection; rsync that cannot run at either end falls back to SFTP),
    /// `rsync_command` (the local program) and `rsync_path` (the remote
    /// one).
    pub fn open(location: &str, options: &TargetOptions) -> Result<Self> {
        let mut rest = TargetOptions::new();
        let mut transport = "auto".to_owned();
        let mut program = "rsync".to_owned();
        let mut remote_program = None;
        for (key, value) in options {
            match key.as_str() {
                "transport" => match value.as_str() {
                    "auto" | "rsync" | "sftp" => transport.clone_from(value),
                    _ => {
                        return Err(Error::InvalidInput(
                            "option transport: expected auto, rsync or sftp".into(),
                        ));
                    }
                },
                "rsync_command" => program.clone_from(value),
                "rsync_path" => remote_program = Some(value.clone()),
                _ => {
                    rest.insert(key.clone(), value.clone());
                }
            }
        }
        let t = SftpTarget::open(location, &rest).map_err(|e| match e {
            Error::InvalidInput(m) if m.starts_with("unknown option") => {
                Error::InvalidInput(m.replace(
                    " retries)",
                    " retries, transport, rsync_command, rsync_path)",
                ))
            }
            e => e,
        })?;
        let rsync = (transport != "sftp").then(|| Rsync {
            program,
            remote_program,
            ssh: t.ssh_words(),
            host: if t.spec.host.contains(':') && !t.spec.host.contains('[') {
                match t.spec.host.rsplit_once('@') {
                    Some((u, h)) => format!("{u}@[{h}]"),
                    None => format!("[{}]", t.spec.host),
                }
            } else {
                t.spec.host.clone()
            },
            root: t.root.clone(),
            timeout: t.spec.timeout,
        });
        Ok(Self {
            t,
            known_dirs: Mutex::default(),
            rsync,
            always_rsync: transport == "rsync",
        })
    }

    /// Makes sure the directories above `path` are real ones (creating
    /// missing ones), once per directory.
    fn parents(&self, conn: &Conn, path: &str) -> Result<()> {
        let parent = parent_of(path);
        if self.known_dirs.lock().is_ok_and(|k| k.contains(parent)) {
            return Ok(());
        }
        self.t.ensure_parents(conn, path)?;
        if let Ok(mut known) = self.known_dirs.lock() {
            if known.len() > KNOWN_DIRS {
                known.clear();
            }
            let mut at = parent;
            while !at.is_empty() && known.insert(at.to_owned()) {
                at = parent_of(at);
            }
        }
        Ok(())
    }

    /// Forgets what was known about `path` and below (it was removed or
    /// moved).
    fn forget_dir(&self, path: &str) {
        if let Ok(mut known) = self.known_dirs.lock() {
            let below = format!("{path}/");
            known.retain(|d| d != path && !d.starts_with(&below));
        }
    }

    fn entry(&self, conn: &Conn, path: String, a: &Attrs) -> io::Result<Option<TreeEntry>> {
        let kind = if a.is_dir {
            EntryKind::Dir
        } else if a.is_file {
            EntryKind::File
        } else if a.is_symlink {
            EntryKind::Symlink
        } else {
            return Ok(None);
        };
        let link = if kind == EntryKind::Symlink {
            Some(conn.readlink(&self.t.remote(&path))?)
        } else {
            None
        };
        Ok(Some(TreeEntry {
            path,
            kind,
            size: if kind == EntryKind::File { a.size } else { 0 },
            mtime_ns: a.mtime.map(|t| i64::from(t) * 1_000_000_000),
            mode: a.mode,
            link,
            stamp: None,
        }))
    }

    /// Every directory from the root to `path` (inclusive) as a real one,
    /// created where missing; never through a symlink.
    fn real_dirs(&self, conn: &Conn, path: &str) -> Result<()> {
        let probe = join(path, "x");
        self.t.ensure_parents(conn, &probe)?;
        match self
            .t
            .way(conn, path)
            .map_err(|e| self.t.map_err("inspect", path, e))?
        {
            Way::Directories => Ok(()),
            _ => Err(refused_write(self.t.shown(path))),
        }
    }

    fn secs(ns: Option<i64>) -> Option<u32> {
        ns.map(|n| u32::try_from(n.div_euclid(1_000_000_000)).unwrap_or(0))
    }

    fn is_real_dir(&self, conn: &Conn, path: &str) -> io::Result<bool> {
        Ok(self.t.way(conn, path)? == Way::Directories)
    }
}

/// A batch goes through rsync from this many files on (below, the ssh
/// connection rsync opens costs more than SFTP writes over the open one:
/// about 0.2 s against 0.45 ms a file here)...
const RSYNC_MIN_FILES: usize = 256;
/// ...or when this many bytes replace older versions (rsync's delta
/// transfer sends only what changed: what matters over a slow link).
const RSYNC_MIN_REPLACED: u64 = 16 << 20;

impl Bulk for SftpTree {
    fn name(&self) -> &'static str {
        "rsync"
    }

    fn worth(&self, files: usize, replaced_bytes: u64) -> bool {
        self.always_rsync || files >= RSYNC_MIN_FILES || replaced_bytes >= RSYNC_MIN_REPLACED
    }

    fn copy(
        &self,
        job: &BulkCopy<'_>,
        cancel: &backup_core::progress::Cancel,
    ) -> Result<Vec<Option<String>>> {
        let rsync = self.rsync.as_ref().ok_or_else(|| Error::Backend {
            backend: self.t.location.clone(),
            message: "the rsync transport is off".into(),
            source: None,
        })?;
        let precision = self.caps().mtime_precision;
        let landed = |f: &BulkFile| match job.direction {
            Direction::Pull => landed_locally(job.local, &f.path, f.size, f.mtime_ns, precision),
            Direction::Push => self.stat(&join(job.dir, &f.path)).is_ok_and(|e| {
                e.is_some_and(|e| {
                    e.kind == EntryKind::File
                        && e.size == f.size
                        && e.mtime_ns.zip(f.mtime_ns).is_some_and(|(got, want)| {
                            u128::from(got.abs_diff(want)) < precision.as_nanos()
                        })
                })
            }),
        };
        rsync.copy(job, cancel, &landed)
    }
}

impl Tree for SftpTree {
    /// Exclusive on the server, as the SFTP repositories' locks.
    fn create_new(&self, path: &str, data: &[u8]) -> Result<()> {
        backup_core::Target::create_new(&self.t, path, data)
    }

    fn bulk(&self) -> Option<&dyn Bulk> {
        self.rsync.as_ref().map(|_| self as &dyn Bulk)
    }

    fn location(&self) -> String {
        self.t.location.clone()
    }

    fn root_path(&self) -> String {
        self.t.root.clone()
    }

    fn caps(&self) -> TreeCaps {
        TreeCaps {
            mtime_precision: Duration::from_secs(1),
            case_insensitive: false,
            symlinks: true,
            dirs: true,
            modes: true,
            transfers: 12,
        }
    }

    fn root(&self) -> Result<Option<TreeEntry>> {
        let root = if self.t.root.is_empty() {
            ".".to_owned()
        } else {
            self.t.root.clone()
        };
        let got = self.t.retry(|c| c.stat(&root))?;
        match got {
            Ok(a) => {
                let conn = self.t.conn()?;
                self.entry(
                    &conn,
                    String::new(),
                    &Attrs {
                        is_symlink: false,
                        ..a
                    },
                )
                .map_err(|e| self.t.map_err("inspect", "", e))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.t.map_err("inspect", "", e)),
        }
    }

    fn walk<'a>(
        &'a self,
        skip: &'a (dyn Fn(&str, EntryKind) -> bool + Sync),
    ) -> Result<Box<dyn Iterator<Item = Result<Walked>> + Send + 'a>> {
        let conn = self.t.conn()?;
        let ahead = Ahead::start(&conn);
        Ok(Box::new(DepthFirst::new(
            Lister {
                tree: self,
                conn,
                ahead,
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
        let got = self.t.retry(|c| {
            if !self.is_real_dir(c, parent_of(path))? {
                return Err(io::ErrorKind::NotFound.into());
            }
            let a = c.lstat(&self.t.remote(path))?;
            self.entry(c, path.to_owned(), &a)
        })?;
        match got {
            Ok(e) => Ok(e),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.t.map_err("inspect", path, e)),
        }
    }

    fn open(&self, path: &str) -> Result<Box<dyn Read + Send>> {
        if !path.is_empty() {
            return backup_core::Target::get(&self.t, path);
        }
        // The root itself is a file (a one-file source).
        let opened = self.t.retry(|c| {
            c.open_file(&self.t.root, FXF_READ)
                .map(|h| (Arc::clone(c), h))
        })?;
        let (conn, handle) = opened.map_err(|e| self.t.map_err("open", "", e))?;
        Ok(Box::new(SftpReader::new(conn, handle, 0, u64::MAX)))
    }

    fn write(&self, path: &str, attrs: FileAttrs) -> Result<Box<dyn FileWriter>> {
        check_key(path)?;
        let conn = self.t.conn()?;
        self.parents(&conn, path)?;
        let (handle, tmp) = self.t.create_tmp(&conn, path)?;
        Ok(Box::new(
            SftpWriter::new(conn, handle, tmp, self.t.remote(path), self.t.shown(path))
                .with_attrs(Self::secs(attrs.mtime_ns), attrs.mode),
        ))
    }

    fn make_dir(&self, path: &str, attrs: FileAttrs) -> Result<()> {
        let conn = self.t.conn()?;
        if path.is_empty() {
            self.t.make_parents(&conn, "x");
            return Ok(());
        }
        check_key(path)?;
        self.real_dirs(&conn, path)?;
        if let Some(mode) = attrs.mode {
            conn.setstat(&self.t.remote(path), None, Some(mode))
                .map_err(|e| self.t.map_err("set the mode of", path, e))?;
        }
        Ok(())
    }

    fn set_dir_mtime(&self, path: &str, mtime_ns: i64) -> Result<()> {
        let conn = self.t.conn()?;
        let remote = if path.is_empty() {
            self.t.root.clone()
        } else {
            check_key(path)?;
            if !self
                .is_real_dir(&conn, path)
                .map_err(|e| self.t.map_err("inspect", path, e))?
            {
                return Ok(());
            }
            self.t.remote(path)
        };
        conn.setstat(&remote, Self::secs(Some(mtime_ns)), None)
            .map_err(|e| self.t.map_err("set the mtime of", path, e))
    }

    fn symlink(&self, path: &str, target: &str) -> Result<()> {
        check_key(path)?;
        let conn = self.t.conn()?;
        self.t.ensure_parents(&conn, path)?;
        let tmp = self.t.remote(&backup_core::target::tmp_key(path));
        conn.symlink(target, &tmp)
            .map_err(|e| self.t.map_err("create symlink", path, e))?;
        conn.rename_over(&tmp, &self.t.remote(path)).map_err(|e| {
            let _ = conn.remove(&tmp);
            self.t.map_err("create symlink", path, e)
        })
    }

    fn remove(&self, path: &str, kind: EntryKind) -> Result<()> {
        check_key(path)?;
        let removed = self.t.retry(|c| {
            if !self.is_real_dir(c, parent_of(path))? {
                return Err(io::ErrorKind::NotFound.into());
            }
            let remote = self.t.remote(path);
            if kind == EntryKind::Dir {
                c.rmdir(&remote)
            } else {
                c.remove(&remote)
            }
        })?;
        self.forget_dir(path);
        match removed {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.t.map_err("remove", path, e)),
        }
    }

    fn rename(&self, from: &str, to: &str) -> Result<()> {
        check_key(from)?;
        check_key(to)?;
        let conn = self.t.conn()?;
        self.t.ensure_parents(&conn, to)?;
        if !self
            .is_real_dir(&conn, parent_of(from))
            .map_err(|e| self.t.map_err("inspect", from, e))?
        {
            return Err(Error::NotFound {
                what: "file",
                path: self.t.shown(from),
            });
        }
        self.forget_dir(from);
        conn.rename_over(&self.t.remote(from), &self.t.remote(to))
            .map_err(|e| self.t.map_err("move", from, e))
    }
}

/// Lists one remote directory for the depth-first walk.
/// Listings read ahead at most: listed or being listed, not yet walked.
const AHEAD_WINDOW: usize = 64;
/// Threads that read listings ahead, each with its requests in flight on
/// the one connection.
const AHEAD_THREADS: usize = 4;

/// Directory listings read ahead on a few threads, so that a walk over a
/// slow link does not wait for one directory's round trips at a time
/// (a device on a lab's Wi-Fi). The walk is depth-first in canonical
/// order, so the directory it wants next is the smallest one known and not
/// yet listed: that is the one read ahead first.
struct Ahead {
    state: Mutex<AheadState>,
    changed: std::sync::Condvar,
}

type Listing = io::Result<Vec<(String, Attrs)>>;

#[derive(Default)]
struct AheadState {
    /// Directories to list, by canonical key, with their remote paths.
    pending: std::collections::BTreeMap<Vec<u8>, String>,
    running: HashSet<Vec<u8>>,
    done: std::collections::HashMap<Vec<u8>, Listing>,
    stop: bool,
}

/// A path's key in canonical order (`/` sorts before every other byte).
fn canonical(path: &str) -> Vec<u8> {
    path.bytes()
        .map(|b| if b == b'/' { 0 } else { b })
        .collect()
}

impl Ahead {
    fn start(conn: &Arc<Conn>) -> Arc<Self> {
        let ahead = Arc::new(Self {
            state: Mutex::default(),
            changed: std::sync::Condvar::new(),
        });
        for _ in 0..AHEAD_THREADS {
            let (ahead, conn) = (Arc::clone(&ahead), Arc::clone(conn));
            std::thread::spawn(move || ahead.work(&conn));
        }
        ahead
    }

    fn work(&self, conn: &Conn) {
        let Ok(mut st) = self.state.lock() else {
            return;
        };
        loop {
            if st.stop {
                return;
            }
            let room = st.running.len() + st.done.len() < AHEAD_WINDOW;
            let next = if room { st.pending.pop_first() } else { None };
            let Some((key, remote)) = next else {
                st = match self.changed.wait(st) {
                    Ok(g) => g,
                    Err(_) => return,
                };
                continue;
            };
            st.running.insert(key.clone());
            drop(st);
            let listed = conn.read_dir(&remote);
            st = match self.state.lock() {
                Ok(g) => g,
                Err(_) => return,
            };
            st.running.remove(&key);
            st.done.insert(key, listed);
            self.changed.notify_all();
        }
    }

    /// `dir`'s listing: read ahead, or read now.
    fn take(&self, conn: &Conn, dir: &str, remote: &str) -> Listing {
        let key = canonical(dir);
        let Ok(mut st) = self.state.lock() else {
            return conn.read_dir(remote);
        };
        st.pending.remove(&key);
        loop {
            if let Some(listed) = st.done.remove(&key) {
                self.changed.notify_all();
                return listed;
            }
            if !st.running.contains(&key) {
                drop(st);
                return conn.read_dir(remote);
            }
            st = match self.changed.wait(st) {
                Ok(g) => g,
                Err(_) => return conn.read_dir(remote),
            };
        }
    }

    fn want(&self, dirs: Vec<(String, String)>) {
        if dirs.is_empty() {
            return;
        }
        if let Ok(mut st) = self.state.lock() {
            for (dir, remote) in dirs {
                st.pending.insert(canonical(&dir), remote);
            }
            self.changed.notify_all();
        }
    }

    fn stop(&self) {
        if let Ok(mut st) = self.state.lock() {
            st.stop = true;
            st.pending.clear();
        }
        self.changed.notify_all();
    }
}

struct Lister<'a> {
    tree: &'a SftpTree,
    conn: Arc<Conn>,
    ahead: Arc<Ahead>,
    skip: backup_core::tree::Skip<'a>,
}

impl Drop for Lister<'_> {
    fn drop(&mut self) {
        self.ahead.stop();
    }
}

impl ListDir for Lister<'_> {
    fn list(&mut self, rel: &str, entries: &mut Vec<TreeEntry>, met: &mut Vec<Result<Walked>>) {
        let t = &self.tree.t;
        let listed = match self.ahead.take(&self.conn, rel, &t.remote(rel)) {
            Ok(l) => l,
            Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => {
                met.push(Err(t.map_err("list", rel, e)));
                return;
            }
            Err(e) => {
                met.push(Ok(Walked::Warning {
                    path: rel.to_owned(),
                    message: format!("cannot list the directory: {e}"),
                }));
                return;
            }
        };
        let mut below = Vec::new();
        for (name, attrs) in listed {
            let path = join(rel, &name);
            if is_tmp_name(&name) {
                met.push(Ok(Walked::Leftover(path)));
                continue;
            }
            if attrs.is_dir && !(self.skip)(&path, EntryKind::Dir) {
                below.push((path.clone(), t.remote(&path)));
            }
            match self.tree.entry(&self.conn, path.clone(), &attrs) {
                Ok(e) => entries.extend(e),
                Err(e) => met.push(Ok(Walked::Warning {
                    path,
                    message: format!("cannot read: {e}"),
                })),
            }
        }
        self.ahead.want(below);
    }
}
