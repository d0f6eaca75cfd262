//! The restore engine: a snapshot back into a directory, never outside it.
//!
//! Before anything is written, the whole manifest is read: its checksum must
//! match, every path must be relative and `..`-free, and (without
//! `overwrite`) nothing in the target may be in the way. While writing, no
//! path goes through a symlink: parents must be real directories, and the
//! snapshot's own symlinks are created last, after every file.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

use filetime::FileTime;
use serde::{Deserialize, Serialize};

use crate::archive::{Entry, EntryKind};
use crate::progress::{Cancel, Event, Progress};
use crate::repository::Repository;
use crate::source::Excludes;
use crate::verify::safe_relative;
use crate::{Error, IoContext, Result};

/// Where and what to restore.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RestoreOptions {
    /// Directory to restore into; created if missing.
    pub target: PathBuf,
    /// Restore only entries matching one of these globs (same syntax as
    /// excludes, matched against the original absolute path) and what is
    /// below them. Empty restores everything.
    pub includes: Vec<String>,
    /// Replace files that already exist in the target.
    pub overwrite: bool,
}

/// What a restore did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RestoreSummary {
    pub snapshot: String,
    pub target: PathBuf,
    pub files: u64,
    pub dirs: u64,
    pub links: u64,
    pub bytes: u64,
    /// Entries left out by `includes`.
    pub skipped: u64,
}

impl Repository {
    /// Restores snapshot `id` (an id, unique prefix or `latest`).
    ///
    /// Every file's content is checked against its manifest hash and the
    /// archive against its SHA-256; a mismatch is an [`Error::Integrity`].
    pub fn restore(
        &self,
        id: &str,
        opts: &RestoreOptions,
        progress: &dyn Progress,
        cancel: &Cancel,
    ) -> Result<RestoreSummary> {
        let started = Instant::now();
        let meta = self.find_snapshot(id)?;
        if meta.database.is_some() {
            return Err(Error::InvalidInput(format!(
                "snapshot {} is a database dump: restore it into a database file or URL",
                meta.id
            )));
        }
        if opts.target.as_os_str().is_empty() {
            return Err(Error::InvalidInput("no restore target given".into()));
        }
        let filter = Filter::new(&opts.includes)?;
        let _lock = self.lock_read()?;
        progress.event(&Event::Started {
            operation: "restore",
            snapshot: Some(meta.id.clone()),
        });

        let root = opts.target.clone();
        let (total_files, total_bytes) = self.preflight(&meta, opts, &filter)?;
        progress.event(&Event::Total {
            files: total_files,
            bytes: total_bytes,
        });

        fs::create_dir_all(&root).ctx("create restore target", root.display())?;
        let mut w = Writer {
            root: &root,
            overwrite: opts.overwrite,
            verified: HashSet::new(),
            dirs: Vec::new(),
            symlinks: Vec::new(),
            buf: vec![0u8; 256 * 1024],
            summary: RestoreSummary {
                snapshot: meta.id.clone(),
                target: root.clone(),
                ..RestoreSummary::default()
            },
        };
        // Pass 2: archive and manifest in lockstep.
        let unverified = std::cell::RefCell::new(None::<PathBuf>);
        let read = self.read_snapshot(
            &meta,
            &mut |entry, content| {
                cancel.check()?;
                if !filter.includes(&entry.path) {
                    w.summary.skipped += 1;
                    return Ok(());
                }
                if entry.kind == EntryKind::File {
                    *unverified.borrow_mut() = Some(root.join(&entry.path));
                }
                w.write(entry, content)?;
                if entry.kind == EntryKind::File {
                    progress.event(&Event::File {
                        path: entry.path.clone(),
                        bytes: entry.size,
                    });
                }
                Ok(())
            },
            &mut |_| *unverified.borrow_mut() = None,
            cancel,
        );
        if let Err(e) = read {
            // A file whose content failed its hash must not stay behind
            // looking like a good restore.
            if let Some(bad) = unverified.take() {
                let _ = fs::remove_file(bad);
            }
            return Err(e);
        }
        w.finish()?;
        progress.event(&Event::Finished {
            operation: "restore",
            files: w.summary.files,
            bytes: w.summary.bytes,
            warnings: 0,
            seconds: started.elapsed().as_secs_f64(),
        });
        Ok(w.summary)
    }

    /// Pass 1: the manifest alone. Nothing is written if it is damaged,
    /// names an unsafe path, or if restoring would overwrite without
    /// permission. Returns the number of files and bytes to restore.
    fn preflight(
        &self,
        meta: &crate::snapshot::SnapshotMeta,
        opts: &RestoreOptions,
        filter: &Filter,
    ) -> Result<(u64, u64)> {
        let root = &opts.target;
        let mut conflicts = (0usize, String::new());
        let (mut total_files, mut total_bytes) = (0u64, 0u64);
        // list_entries applies every manifest rule (unsafe paths,
        // duplicates, hard links) before anything is written.
        self.list_entries(meta, &mut |e| {
            if !filter.includes(&e.path) {
                return Ok(());
            }
            if e.kind == EntryKind::File {
                total_files += 1;
                total_bytes += e.size;
            }
            if !opts.overwrite
                && let Ok(existing) = fs::symlink_metadata(root.join(&e.path))
                && !(e.kind == EntryKind::Dir && existing.is_dir())
            {
                if conflicts.0 == 0 {
                    conflicts.1 = root.join(&e.path).display().to_string();
                }
                conflicts.0 += 1;
            }
            Ok(())
        })?;
        if conflicts.0 > 0 {
            return Err(Error::WouldOverwrite {
                count: conflicts.0,
                first: conflicts.1,
            });
        }
        Ok((total_files, total_bytes))
    }
}

/// Include globs, matched against an entry and its ancestors.
struct Filter(Option<Excludes>);

impl Filter {
    fn new(includes: &[String]) -> Result<Self> {
        if includes.is_empty() {
            Ok(Self(None))
        } else {
            Ok(Self(Some(Excludes::new(includes)?)))
        }
    }

    fn includes(&self, path: &str) -> bool {
        let Some(globs) = &self.0 else { return true };
        let abs = PathBuf::from(format!("/{path}"));
        abs.ancestors()
            .take_while(|a| a.parent().is_some())
            .any(|a| globs.is_excluded(a))
    }
}

struct Writer<'a> {
    root: &'a Path,
    overwrite: bool,
    /// Relative directories known to be real directories (not symlinks).
    verified: HashSet<PathBuf>,
    /// Directory metadata, applied at the end (writing files changes mtimes).
    dirs: Vec<(PathBuf, u32, FileTime)>,
    /// Symlinks, created last so nothing is ever written through one.
    symlinks: Vec<(PathBuf, String, FileTime)>,
    summary: RestoreSummary,
    /// One copy buffer for every file.
    buf: Vec<u8>,
}

fn mtime_of(e: &Entry) -> FileTime {
    FileTime::from_unix_time(e.mtime, e.mtime_nsec)
}

impl Writer<'_> {
    fn write(&mut self, entry: &Entry, content: &mut dyn Read) -> Result<()> {
        let rel = PathBuf::from(safe_relative(&entry.path)?);
        let dest = self.root.join(&rel);
        if let Some(parent) = rel.parent() {
            self.ensure_dir(parent, entry)?;
        }
        match entry.kind {
            EntryKind::Dir => {
                self.ensure_dir(&rel, entry)?;
                self.dirs.push((dest, entry.mode, mtime_of(entry)));
                self.summary.dirs += 1;
            }
            EntryKind::File => {
                self.clear_way(&dest, entry)?;
                let mut file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&dest)
                    .ctx("create", dest.display())?;
                let n = copy(content, &mut file, &mut self.buf).ctx("write", dest.display())?;
                file.set_permissions(fs::Permissions::from_mode(entry.mode))
                    .ctx("set mode of", dest.display())?;
                filetime::set_file_handle_times(&file, None, Some(mtime_of(entry)))
                    .ctx("set time of", dest.display())?;
                self.summary.files += 1;
                self.summary.bytes += n;
            }
            EntryKind::Hardlink => {
                let link = safe_relative(entry.link.as_deref().unwrap_or(""))?;
                let source = self.root.join(link);
                let ok = fs::symlink_metadata(&source).is_ok_and(|m| m.is_file())
                    && Path::new(link)
                        .parent()
                        .is_none_or(|p| p.as_os_str().is_empty() || self.verified.contains(p));
                if !ok {
                    return Err(Error::UnsafePath {
                        path: entry.path.clone(),
                        reason: format!("hard link to {link:?}, which was not restored as a file"),
                    });
                }
                self.clear_way(&dest, entry)?;
                fs::hard_link(&source, &dest).ctx("link", dest.display())?;
                self.summary.links += 1;
            }
            EntryKind::Symlink => {
                let target = entry.link.clone().unwrap_or_default();
                self.symlinks.push((rel, target, mtime_of(entry)));
            }
        }
        Ok(())
    }

    /// Makes `rel` (and its parents) real directories under the root.
    fn ensure_dir(&mut self, rel: &Path, entry: &Entry) -> Result<()> {
        let mut prefix = PathBuf::new();
        for c in rel.components() {
            prefix.push(c);
            if self.verified.contains(&prefix) {
                continue;
            }
            let abs = self.root.join(&prefix);
            match fs::symlink_metadata(&abs) {
                Ok(m) if m.is_dir() => {}
                Ok(m) if m.file_type().is_symlink() && self.overwrite && prefix == rel => {
                    fs::remove_file(&abs).ctx("remove", abs.display())?;
                    fs::create_dir(&abs).ctx("create", abs.display())?;
                }
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(Error::UnsafePath {
                        path: entry.path.clone(),
                        reason: format!(
                            "{} is a symlink; refusing to write through it",
                            abs.display()
                        ),
                    });
                }
                Ok(_) => {
                    return Err(Error::AlreadyExists {
                        path: format!("{} (not a directory)", abs.display()),
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    fs::create_dir(&abs).ctx("create", abs.display())?;
                }
                Err(e) => return Err(Error::io("inspect", abs.display().to_string(), e)),
            }
            self.verified.insert(prefix.clone());
        }
        Ok(())
    }

    /// Removes what stands at `dest` when overwriting is allowed (never a
    /// directory); fails otherwise.
    fn clear_way(&self, dest: &Path, entry: &Entry) -> Result<()> {
        match fs::symlink_metadata(dest) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("inspect", dest.display().to_string(), e)),
            Ok(m) if m.is_dir() => Err(Error::AlreadyExists {
                path: format!(
                    "{} (a directory, where the snapshot has a {})",
                    dest.display(),
                    entry.kind.describe()
                ),
            }),
            Ok(_) if self.overwrite => fs::remove_file(dest).ctx("remove", dest.display()),
            Ok(_) => Err(Error::WouldOverwrite {
                count: 1,
                first: dest.display().to_string(),
            }),
        }
    }

    fn finish(&mut self) -> Result<()> {
        let dummy = Entry {
            path: String::new(),
            kind: EntryKind::Symlink,
            size: 0,
            mtime: 0,
            mtime_nsec: 0,
            mode: 0,
            link: None,
            blake3: None,
        };
        for (rel, target, mtime) in std::mem::take(&mut self.symlinks) {
            if let Some(parent) = rel.parent() {
                let e = Entry {
                    path: rel.display().to_string(),
                    ..dummy.clone()
                };
                self.ensure_dir(parent, &e)?;
            }
            let dest = self.root.join(&rel);
            self.clear_way(&dest, &dummy)?;
            std::os::unix::fs::symlink(&target, &dest).ctx("create symlink", dest.display())?;
            filetime::set_symlink_file_times(&dest, mtime, mtime)
                .ctx("set time of", dest.display())?;
            self.summary.links += 1;
        }
        // Deepest first, so setting a child's time does not disturb a parent.
        for (dest, mode, mtime) in self.dirs.drain(..).rev() {
            fs::set_permissions(&dest, fs::Permissions::from_mode(mode))
                .ctx("set mode of", dest.display())?;
            filetime::set_file_mtime(&dest, mtime).ctx("set time of", dest.display())?;
        }
        Ok(())
    }
}

fn copy(from: &mut dyn Read, to: &mut File, buf: &mut [u8]) -> io::Result<u64> {
    let mut total = 0u64;
    loop {
        let n = match from.read(buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        to.write_all(&buf[..n])?;
        total += n as u64;
    }
}
