//! Restoring an SQLite dump.

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use backup_core::database::{DatabaseTarget, RowCounts};
use backup_core::{Cancel, Error, Result};

use super::{
    SIDE_SUFFIXES, TempDb, check_and_count, check_header, read_header, stream, with_suffix,
};

/// Where an SQLite dump is restored: a database file, which may exist.
///
/// [`load`](DatabaseTarget::load) writes the dump to a hidden file beside
/// the target, fsyncs and integrity-checks it, then renames it into place,
/// so the target is either the old database or the complete new one.
/// Replacing a database also drops its `-wal`, `-shm` and `-journal` files
/// (they belong to the old content): the database must not be in use by any
/// process while it is restored over.
#[derive(Debug)]
pub struct SqliteTarget {
    path: PathBuf,
}

impl SqliteTarget {
    /// A target at `path` (resolved against the current directory); the file
    /// need not exist.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] for an empty path or an existing directory.
    pub fn new(path: impl Into<PathBuf>) -> Result<Self> {
        let path = path.into();
        if path.as_os_str().is_empty() {
            return Err(Error::InvalidInput("empty SQLite database path".into()));
        }
        let path = std::path::absolute(&path)
            .map_err(|e| Error::io("resolve", path.display().to_string(), e))?;
        if path.is_dir() {
            return Err(Error::InvalidInput(format!(
                "{} is a directory, not an SQLite database file",
                path.display()
            )));
        }
        Ok(Self { path })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn shown(&self) -> String {
        self.path.display().to_string()
    }

    /// Moves the complete, checked `new` file to the target's name. The old
    /// side files are parked first so they never meet the new database, and
    /// put back if the rename fails.
    fn install(&self, new: &Path, replace: bool) -> Result<()> {
        let mut parked = Vec::new();
        for suffix in SIDE_SUFFIXES {
            let side = with_suffix(&self.path, suffix);
            if fs::symlink_metadata(&side).is_err() {
                continue;
            }
            let aside = with_suffix(new, &format!("{suffix}.old"));
            if let Err(e) = fs::rename(&side, &aside) {
                unpark(&parked);
                return Err(Error::io("move aside", side.display().to_string(), e));
            }
            parked.push((side, aside));
        }
        let result = if replace {
            fs::rename(new, &self.path).map_err(|e| Error::io("rename into place", self.shown(), e))
        } else {
            self.link_new(new)
        };
        match result {
            Ok(()) => {
                for (_, aside) in &parked {
                    let _ = fs::remove_file(aside);
                }
                Ok(())
            }
            Err(e) => {
                unpark(&parked);
                Err(e)
            }
        }
    }

    /// Gives `new` the target's name unless something took it meanwhile.
    fn link_new(&self, new: &Path) -> Result<()> {
        match fs::hard_link(new, &self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                Err(Error::AlreadyExists { path: self.shown() })
            }
            // No hard links on this filesystem.
            Err(_) if self.path.exists() => Err(Error::AlreadyExists { path: self.shown() }),
            Err(_) => fs::rename(new, &self.path)
                .map_err(|e| Error::io("rename into place", self.shown(), e)),
        }
    }
}

fn unpark(parked: &[(PathBuf, PathBuf)]) {
    for (side, aside) in parked {
        let _ = fs::rename(aside, side);
    }
}

impl DatabaseTarget for SqliteTarget {
    fn describe(&self) -> String {
        format!("sqlite://{}", self.path.display())
    }

    fn exists(&self) -> Result<bool> {
        match fs::symlink_metadata(&self.path) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::io("read", self.shown(), e)),
        }
    }

    fn load_verified(
        &self,
        dump: &mut dyn Read,
        replace: bool,
        accept: &dyn Fn(&RowCounts) -> Result<()>,
        cancel: &Cancel,
    ) -> Result<RowCounts> {
        let old = match fs::metadata(&self.path) {
            Ok(meta) if meta.is_dir() => {
                return Err(Error::InvalidInput(format!(
                    "{} is a directory, not an SQLite database file",
                    self.shown()
                )));
            }
            Ok(meta) => Some(meta),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(Error::io("read", self.shown(), e)),
        };
        if old.is_some() && !replace {
            return Err(Error::AlreadyExists { path: self.shown() });
        }
        cancel.check()?;
        let dir = self.path.parent().unwrap_or(Path::new("."));
        fs::create_dir_all(dir)
            .map_err(|e| Error::io("create directory", dir.display().to_string(), e))?;
        let name = self
            .path
            .file_name()
            .map_or_else(|| "database".into(), |n| n.to_string_lossy().into_owned());
        let (mut temp, mut file) =
            TempDb::create(dir, &format!(".{name}.backupkit-restore"), false)?;
        let shown_temp = temp.path.display().to_string();
        let len = stream(
            dump,
            &mut file,
            cancel,
            |e| Error::io("read the dump for", self.describe(), e),
            |e| Error::io("write", &*shown_temp, e),
        )?;
        file.sync_all()
            .map_err(|e| Error::io("sync", &*shown_temp, e))?;
        drop(file);
        cancel.check()?;

        let header =
            read_header(&temp.path, 100).map_err(|e| Error::io("read", &*shown_temp, e))?;
        if let Err(detail) = check_header(&header, len) {
            return Err(Error::Integrity {
                snapshot: self.describe(),
                detail: format!(
                    "the dump to restore is {detail}; {} is untouched",
                    self.shown()
                ),
            });
        }
        let stop = cancel.clone();
        let counts = check_and_count(&temp.path, &self.describe(), move || stop.is_cancelled())
            .map_err(|e| match e {
                Error::Integrity { snapshot, detail } => Error::Integrity {
                    snapshot,
                    detail: format!(
                        "the dump to restore fails its check ({detail}); {} is untouched",
                        self.shown()
                    ),
                },
                e => e,
            })?;
        cancel.check()?;
        // The staged copy is dropped (TempDb) if the caller refuses it.
        accept(&counts)?;

        if let Some(old) = old {
            // Keep who may read the database.
            let _ = fs::set_permissions(&temp.path, old.permissions());
        }
        self.install(&temp.path, replace)?;
        if replace {
            temp.keep();
        }
        sync_dir(dir);
        Ok(counts)
    }

    fn verify(&self) -> Result<RowCounts> {
        if !self.exists()? {
            return Err(Error::NotFound {
                what: "database",
                path: self.shown(),
            });
        }
        check_and_count(&self.path, &self.describe(), || false)
    }
}

/// Makes a rename in `dir` durable, where the platform and filesystem can
/// (some network filesystems refuse to sync a directory; the restore has
/// happened by then, so that is not an error).
fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    let _ = fs::File::open(dir).and_then(|d| d.sync_all());
    #[cfg(not(unix))]
    let _ = dir;
}
