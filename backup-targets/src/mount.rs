//! Mount checks for repositories on network shares (SMB, NFS, sshfs).
//!
//! A stale network mount makes every `stat` hang; a share that is not
//! mounted makes a backup land on the local disk below the mount point.
//! Before any work, backupkit checks both, as the seeds' scripts do: the
//! mount point (when given with `-o mount_point=...`) must be in the mount
//! table, and the repository's filesystem must answer a `stat` and a
//! directory read within a timeout. The probe runs on its own thread, so a
//! hung mount costs the timeout, not the process.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use backup_core::{Error, Result};

/// How long a filesystem may take to answer the probe.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Checks that `mount_point` (if given) is mounted and contains `root`,
/// and that the filesystem holding `root` answers within `timeout`.
pub fn check(root: &Path, mount_point: Option<&Path>, timeout: Duration) -> Result<()> {
    if let Some(mp) = mount_point {
        let mp = std::path::absolute(mp)
            .map_err(|e| Error::io("resolve", mp.display().to_string(), e))?;
        if !root.starts_with(&mp) {
            return Err(Error::InvalidInput(format!(
                "the repository {} is not below its mount point {}",
                root.display(),
                mp.display()
            )));
        }
        if !is_mounted(&mp)? {
            return Err(Error::NotFound {
                what: "mounted filesystem at",
                path: format!(
                    "{} (mount it, e.g. `sudo mount {}`, then try again)",
                    mp.display(),
                    mp.display()
                ),
            });
        }
    }
    // The deepest existing directory on the way to the root: the root may
    // not exist yet (init creates it).
    let probe_dir = mount_point.map_or_else(|| root.to_path_buf(), Path::to_path_buf);
    probe(&probe_dir, timeout)
}

/// Whether `path` is a mount point, from `/proc/self/mountinfo` (read
/// without touching the mounted filesystem itself).
fn is_mounted(path: &Path) -> Result<bool> {
    let table = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| Error::io("read", "/proc/self/mountinfo", e))?;
    Ok(table
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|field| Path::new(&unescape(field)) == path))
}

/// Undoes the octal escapes of mountinfo (`\040` for a space).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && let Ok(v) = u8::from_str_radix(&field[i + 1..i + 4], 8)
        {
            out.push(v);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Stats the nearest existing ancestor of `dir` and reads one entry of it
/// on a separate thread; fails if that does not finish within `timeout`.
fn probe(dir: &Path, timeout: Duration) -> Result<()> {
    let (tx, rx) = mpsc::channel();
    let owned: PathBuf = dir.to_path_buf();
    std::thread::Builder::new()
        .name("backupkit-mount-probe".into())
        .spawn(move || {
            let mut d = owned.as_path();
            let result = loop {
                match std::fs::metadata(d) {
                    Ok(_) => break std::fs::read_dir(d).map(|mut r| drop(r.next())),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => match d.parent() {
                        Some(p) => d = p,
                        None => break Err(e),
                    },
                    Err(e) => break Err(e),
                }
            };
            let _ = tx.send(result);
        })
        .map_err(|e| Error::io("start", "the mount probe", e))?;
    match rx.recv_timeout(timeout) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(Error::io("read", dir.display().to_string(), e)),
        Err(_) => Err(Error::io(
            "reach",
            dir.display().to_string(),
            std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!(
                    "no answer within {} s: the mount may be stale (remount it, e.g. \
                     `sudo umount -l MOUNT && sudo mount MOUNT`, or raise -o mount_timeout)",
                    timeout.as_secs_f32()
                ),
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(super::unescape(r"/mnt/Cotton\040Lab"), "/mnt/Cotton Lab");
        assert_eq!(super::unescape("/plain"), "/plain");
    }

    #[test]
    fn the_root_filesystem_is_mounted_and_a_plain_directory_is_not() {
        assert!(super::is_mounted(Path::new("/")).unwrap());
        let dir = tempfile::tempdir().unwrap();
        assert!(!super::is_mounted(dir.path()).unwrap());
        let err = super::check(
            &dir.path().join("repo"),
            Some(dir.path()),
            super::DEFAULT_TIMEOUT,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("mount it"), "{err}");
    }
}
