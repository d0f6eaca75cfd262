//! The system `rsync` as the bulk transport of SFTP trees: backupkit plans,
//! guards, records and verifies; rsync moves the planned files, over the
//! same ssh command line the SFTP connection uses.
//!
//! One `rsync --files-from` run per batch. `--ignore-times` makes rsync
//! send every listed file (the plan already decided they differ; its delta
//! transfer still sends only what changed), and directory mtimes are left
//! to the engine. Unfinished files never sit among the user's files: a push
//! writes through `--temp-dir` in the destination's staging directory with
//! `--fsync` (each file synced before its rename; rsync 3.2.4 or later on
//! the receiving side); a pull lands the whole batch in a staging
//! directory of its own, syncs the filesystem once and renames each file
//! into place (the same guarantee for one sync per batch).

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use backup_core::progress::Cancel;
use backup_core::tree::{BulkCopy, BulkFile, Direction, join};
use backup_core::{Error, Result};

/// How to run rsync against one SSH host.
#[derive(Debug, Clone)]
pub(super) struct Rsync {
    /// The local `rsync` program.
    pub(super) program: String,
    /// `--rsync-path` on the remote, if not `rsync`.
    pub(super) remote_program: Option<String>,
    /// The ssh command line (program and options, no host).
    pub(super) ssh: Vec<String>,
    /// `user@host`, bracketed if it is an IPv6 address.
    pub(super) host: String,
    /// The tree's root on the remote (absolute, or relative to the login
    /// directory; `""` for the login directory).
    pub(super) root: String,
    pub(super) timeout: Duration,
}

/// rsync exit codes that mean it could not run the copy at all: syntax or
/// usage (1), protocol incompatibility (2), unsupported action (4), and a
/// remote shell or rsync that could not be started (126, 127).
const CANNOT_RUN: [i32; 5] = [1, 2, 4, 126, 127];

/// Numbers the staging directories of this process's pulls.
static BATCH: AtomicU64 = AtomicU64::new(0);

/// Bytes of rsync's stderr kept for messages.
const STDERR_KEPT: usize = 64 * 1024;

/// One word of rsync's `-e` command line, quoted as rsync splits it
/// (spaces separate words; single quotes keep them, and a doubled quote
/// inside them is one quote).
fn shell_word(w: &str) -> String {
    if !w.is_empty()
        && w.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:@,+%".contains(&b))
    {
        w.to_owned()
    } else {
        format!("'{}'", w.replace('\'', "''"))
    }
}

impl Rsync {
    /// `host:dir/`, the remote end of a copy.
    fn remote_dir(&self, dir: &str) -> String {
        let path = match (self.root.as_str(), dir) {
            ("", "") => ".".to_owned(),
            ("", d) => d.to_owned(),
            (r, d) => join(r, d),
        };
        format!("{}:{path}/", self.host)
    }

    /// The rsync command for a batch. A push writes into the remote tree
    /// through `--temp-dir` with `--fsync`; a pull writes into `local`
    /// (a staging directory, see [`Rsync::copy`]) and syncs nothing itself.
    fn command(&self, job: &BulkCopy<'_>, local: &Path) -> Command {
        let mut c = Command::new(&self.program);
        c.args([
            "--files-from=-",
            "--from0",
            "--ignore-times",
            "--times",
            "--omit-dir-times",
            // A line per file on a pipe: when backupkit dies, rsync's next
            // write fails and it stops too, instead of running on alone.
            "--out-format=%n",
        ]);
        if job.modes {
            c.arg("--perms");
        }
        if job.direction == Direction::Push {
            c.args(["--fsync", &format!("--temp-dir={}", job.staging)]);
        }
        c.arg(format!("--timeout={}", self.timeout.as_secs().max(1)));
        if let Some(rate) = job.bwlimit {
            c.arg(format!("--bwlimit={}", (rate / 1024).max(1)));
        }
        if let Some(p) = &self.remote_program {
            c.arg(format!("--rsync-path={p}"));
        }
        let ssh: Vec<String> = self.ssh.iter().map(|w| shell_word(w)).collect();
        c.arg("-e").arg(ssh.join(" "));
        let local = format!("{}/", local.display());
        let remote = self.remote_dir(job.dir);
        c.arg("--");
        match job.direction {
            Direction::Push => c.args([local, remote]),
            Direction::Pull => c.args([remote, local]),
        };
        c.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }

    /// Runs one batch. `landed` says whether a file is at its final name as
    /// planned (asked only after a failed run).
    ///
    /// A pull lands the batch in a directory of its own inside the staging
    /// directory, then makes it durable with one `syncfs` and renames each
    /// file into place: every file at its final name is whole after a
    /// crash, as with a file-by-file `--fsync`, for one sync per batch
    /// instead of one per file.
    pub(super) fn copy(
        &self,
        job: &BulkCopy<'_>,
        cancel: &Cancel,
        landed: &dyn Fn(&BulkFile) -> bool,
    ) -> Result<Vec<Option<String>>> {
        if job.direction == Direction::Push {
            return self.run(job, job.local, cancel, landed);
        }
        let batch = job.local.join(job.staging).join(format!(
            "rsync-{}-{}",
            std::process::id(),
            BATCH.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&batch)
            .map_err(|e| Error::io("create", batch.display().to_string(), e))?;
        let staged = |f: &BulkFile| {
            std::fs::symlink_metadata(batch.join(&f.path))
                .is_ok_and(|m| m.is_file() && m.len() == f.size)
        };
        let ran = self.run(job, &batch, cancel, &staged);
        let out = ran.and_then(|outcomes| {
            sync_fs(&batch)?;
            Ok(job
                .files
                .iter()
                .zip(outcomes)
                .map(|(f, outcome)| outcome.or_else(|| place(&batch, job.local, &f.path).err()))
                .collect())
        });
        let _ = std::fs::remove_dir_all(&batch);
        out
    }

    /// Runs rsync for one batch into `local`.
    fn run(
        &self,
        job: &BulkCopy<'_>,
        local: &Path,
        cancel: &Cancel,
        landed: &dyn Fn(&BulkFile) -> bool,
    ) -> Result<Vec<Option<String>>> {
        let mut child = self
            .command(job, local)
            .spawn()
            .map_err(|e| Error::Backend {
                backend: "rsync".into(),
                message: format!(
                    "cannot run {:?}: {e} (install rsync, or set -o transport=sftp)",
                    self.program
                ),
                source: None,
            })?;
        let mut stdin = child.stdin.take().expect("piped");
        let mut stderr = child.stderr.take().expect("piped");
        let mut stdout = child.stdout.take().expect("piped");
        let file_list: Vec<u8> = job
            .files
            .iter()
            .flat_map(|f| f.path.bytes().chain([0]))
            .collect();
        let feeder = std::thread::spawn(move || {
            let _ = stdin.write_all(&file_list);
        });
        let drain = std::thread::spawn(move || {
            let _ = std::io::copy(&mut stdout, &mut std::io::sink());
        });
        let reader = std::thread::spawn(move || {
            let mut kept = Vec::new();
            let mut buf = [0u8; 8192];
            while let Ok(n) = stderr.read(&mut buf) {
                if n == 0 {
                    break;
                }
                if kept.len() < STDERR_KEPT {
                    kept.extend_from_slice(&buf[..n]);
                }
            }
            kept
        });
        let status = loop {
            if cancel.is_cancelled() {
                let _ = child.kill();
                let _ = child.wait();
                let _ = feeder.join();
                let _ = reader.join();
                let _ = drain.join();
                return Err(Error::Cancelled);
            }
            match child.try_wait() {
                Ok(Some(s)) => break s,
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => return Err(Error::io("run", "rsync", e)),
            }
        };
        let _ = feeder.join();
        let _ = drain.join();
        let said = String::from_utf8_lossy(&reader.join().unwrap_or_default()).into_owned();
        if status.success() {
            return Ok(vec![None; job.files.len()]);
        }
        let last = said
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
            .trim()
            .to_owned();
        let code = status.code();
        if code.is_none_or(|c| CANNOT_RUN.contains(&c))
            || said.contains("not found")
            || said.contains("unknown option")
            // The remote end never answered: nothing was copied.
            || said.contains("(0 bytes received so far)")
        {
            return Err(Error::Backend {
                backend: "rsync".into(),
                message: format!(
                    "rsync exited with {}: {last}",
                    code.map_or_else(|| "a signal".to_owned(), |c| c.to_string())
                ),
                source: None,
            });
        }
        // Some files may have made it: those rsync names in an error, or
        // that are not at their final name as planned, did not.
        Ok(job
            .files
            .iter()
            .map(|f| {
                let named = said
                    .lines()
                    .find(|l| l.contains(&format!("{}\"", f.path)) || l.ends_with(&f.path));
                match named {
                    Some(line) => Some(format!("rsync: {}", line.trim())),
                    None if landed(f) => None,
                    None => Some(format!("not copied: rsync exited with {code:?}: {last}")),
                }
            })
            .collect())
    }
}

/// Moves a staged file to its final place below `local`, making its
/// parent directories; the reason when it cannot.
fn place(batch: &Path, local: &Path, path: &str) -> std::result::Result<(), String> {
    let to = local.join(path);
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    }
    std::fs::rename(batch.join(path), &to).map_err(|e| format!("cannot move into place: {e}"))
}

/// One `syncfs` of the filesystem that holds `dir`.
fn sync_fs(dir: &Path) -> Result<()> {
    let f =
        std::fs::File::open(dir).map_err(|e| Error::io("open", dir.display().to_string(), e))?;
    rustix::fs::syncfs(&f)
        .map_err(|e| Error::io("sync", dir.display().to_string(), std::io::Error::from(e)))
}

/// Whether the local file `path` below `local` has the planned size and
/// an mtime within `window` of the planned one.
pub(super) fn landed_locally(
    local: &Path,
    path: &str,
    size: u64,
    mtime_ns: Option<i64>,
    window: Duration,
) -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(local.join(path)).is_ok_and(|m| {
        let got = m.mtime() * 1_000_000_000 + m.mtime_nsec();
        m.is_file()
            && m.len() == size
            && mtime_ns.is_some_and(|w| u128::from(got.abs_diff(w)) <= window.as_nanos())
    })
}

#[cfg(test)]
mod tests {
    use super::shell_word;

    #[test]
    fn ssh_words_are_quoted_for_rsync() {
        assert_eq!(shell_word("-oBatchMode=yes"), "-oBatchMode=yes");
        assert_eq!(shell_word("/home/a b/key"), "'/home/a b/key'");
        assert_eq!(shell_word("it's"), "'it''s'");
        assert_eq!(shell_word(""), "''");
    }
}
