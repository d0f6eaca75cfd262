//! An rclone remote as a mirror [`Tree`] (`rclone:REMOTE:path`): Box,
//! Google Drive, `OneDrive` and every other backend rclone has, through
//! the user's own `rclone` and its configured remotes (seed 000's Box
//! mirror).
//!
//! What the remote keeps comes from `rclone backend features`: its mtime
//! precision (1 s on most cloud drives), whether it is case-insensitive
//! (Box, `OneDrive`; the local backend's `--local-case-insensitive` emulates
//! one) and whether it has directories of its own. A walk is one
//! `rclone lsjson -R`, sorted here into canonical order (so it holds one
//! entry per file in memory, as rclone itself does). Symlinks are never
//! seen (rclone skips them).
//!
//! Copies from a local directory go in batches through the [`Bulk`]
//! contract: one `rclone copy --files-from-raw` into a staging directory
//! inside the state directory, then one `rclone move` of the batch into
//! place (a rename or a server-side move on backends that have one), so a
//! killed run leaves nothing among the user's files. A pull copies into a
//! local staging directory and renames each file into place after an
//! fsync. Anything else (a single file written from another tree) goes
//! file by file: `rcat` to a temporary name, `touch` it to the source's
//! mtime, `moveto` over the old one.

use std::fmt;
use std::io::{self, BufRead, Read, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Stdio};
use std::sync::Arc;
use std::time::Duration;

use backup_core::progress::Cancel;
use backup_core::registry::TargetOptions;
use backup_core::target::{check_key, is_tmp_name, tmp_key};
use backup_core::tree::{
    Bulk, BulkCopy, BulkFile, Direction, EntryKind, FileAttrs, FileWriter, Stored, Tree, TreeCaps,
    TreeEntry, Walked, cmp_paths, join,
};
use backup_core::{Error, Result};
use serde::Deserialize;

use crate::rclone::{Listed, Rclone, RcloneReader, RcloneTarget};

/// The size and mtime a file has at its final name after a batch.
type Landed = (u64, Option<i64>);

/// Parallel copies inside one rclone process (rclone's own default).
const TRANSFERS: usize = 4;

/// A tree on an rclone remote.
pub struct RcloneTree {
    rc: Arc<Rclone>,
    caps: TreeCaps,
}

impl fmt::Debug for RcloneTree {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RcloneTree")
            .field("location", &self.rc.location)
            .finish_non_exhaustive()
    }
}

/// What `rclone backend features` says.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Features {
    precision: i64,
    features: FeatureFlags,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct FeatureFlags {
    #[serde(default)]
    case_insensitive: bool,
    #[serde(default)]
    can_have_empty_directories: bool,
}

fn parse_ns(s: Option<&str>) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(s?)
        .ok()
        .and_then(|t| t.timestamp_nanos_opt())
}

/// `touch --timestamp` form (UTC, nanoseconds).
fn touch_time(ns: i64) -> String {
    chrono::DateTime::from_timestamp_nanos(ns)
        .format("%Y-%m-%dT%H:%M:%S%.9f")
        .to_string()
}

/// `dir/rel` with `..` components resolved (a staging path is given
/// relative to the receiving directory).
fn resolve(dir: &str, rel: &str) -> String {
    let mut parts: Vec<&str> = dir.split('/').filter(|p| !p.is_empty()).collect();
    for p in rel.split('/').filter(|p| !p.is_empty()) {
        if p == ".." {
            parts.pop();
        } else {
            parts.push(p);
        }
    }
    parts.join("/")
}

/// A fresh name for one batch in the staging directory.
fn batch_name() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!("batch-{}-{:x}", std::process::id(), t.as_nanos())
}

impl RcloneTree {
    /// A tree at `rclone:REMOTE:path`, with the rclone repositories'
    /// options (`rclone_command`, `rclone_config`, `rclone_args`). Asks
    /// rclone once what the remote keeps.
    pub fn open(location: &str, options: &TargetOptions) -> Result<Self> {
        let rc = Arc::clone(&RcloneTarget::open(location, options)?.rc);
        let out = rc.run("inspect", "", &["backend", "features", &rc.path("")])?;
        let f: Features = serde_json::from_slice(&out).map_err(|e| Error::Format {
            path: rc.location.clone(),
            source: e,
        })?;
        let precision = Duration::from_nanos(u64::try_from(f.precision.max(1)).unwrap_or(1));
        Ok(Self {
            rc,
            caps: TreeCaps {
                mtime_precision: precision,
                case_insensitive: f.features.case_insensitive,
                symlinks: false,
                dirs: f.features.can_have_empty_directories,
                modes: false,
                transfers: TRANSFERS,
            },
        })
    }

    fn entry(o: Listed) -> TreeEntry {
        TreeEntry {
            kind: if o.is_dir {
                EntryKind::Dir
            } else {
                EntryKind::File
            },
            size: if o.is_dir { 0 } else { o.size.max(0) as u64 },
            mtime_ns: parse_ns(o.mod_time.as_deref()),
            path: o.path,
            mode: None,
            link: None,
            stamp: None,
        }
    }

    /// `lsjson --stat` of one path, or `None`.
    fn stat_path(&self, path: &str) -> Result<Option<TreeEntry>> {
        let at = self.rc.path(path);
        match self
            .rc
            .run("inspect", path, &["lsjson", "--stat", "--no-mimetype", &at])
        {
            Ok(out) => {
                let mut o: Listed = serde_json::from_slice(&out).map_err(|e| Error::Format {
                    path: self.rc.shown(path),
                    source: e,
                })?;
                path.clone_into(&mut o.path);
                Ok(Some(Self::entry(o)))
            }
            Err(Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every file below `dir` with its size and mtime, from one listing
    /// restricted to `files` (what a batch left at the final names).
    fn landed(&self, dir: &str, files: &[BulkFile]) -> Result<Vec<Option<Landed>>> {
        let list = file_list(files);
        let at = self.rc.path(dir);
        let out = match self.rc.run_with_input(
            "list",
            dir,
            &[
                "lsjson",
                "-R",
                "--files-only",
                "--no-mimetype",
                "--files-from-raw",
                "-",
                &at,
            ],
            list,
        ) {
            Ok(o) => o,
            Err(Error::NotFound { .. }) => b"[]".to_vec(),
            Err(e) => return Err(e),
        };
        let listed: Vec<Listed> = serde_json::from_slice(&out).map_err(|e| Error::Format {
            path: self.rc.shown(dir),
            source: e,
        })?;
        let found: std::collections::HashMap<String, Landed> = listed
            .into_iter()
            .map(|o| {
                let m = parse_ns(o.mod_time.as_deref());
                (o.path, (o.size.max(0) as u64, m))
            })
            .collect();
        Ok(files.iter().map(|f| found.get(&f.path).copied()).collect())
    }

    /// Whether what landed is the planned file: its size, and its mtime
    /// within the remote's precision.
    fn matches(&self, f: &BulkFile, got: Option<Landed>) -> bool {
        let Some((size, mtime)) = got else {
            return false;
        };
        let window = self.caps.mtime_precision.as_nanos().max(1);
        size == f.size
            && match (mtime, f.mtime_ns) {
                (Some(a), Some(b)) => u128::from(a.abs_diff(b)) < window,
                _ => window >= Duration::from_secs(86_400).as_nanos(),
            }
    }

    fn push(&self, job: &BulkCopy<'_>, cancel: &Cancel) -> Result<Vec<Option<String>>> {
        let batch = join(&resolve(job.dir, job.staging), &batch_name());
        let (listed, odd) = split_listable(job.files);
        let mut said = String::new();
        let local = format!("{}/", job.local.display());
        let staged = self.rc.path(&batch);
        let mut flags: Vec<String> = Vec::new();
        if let Some(rate) = job.bwlimit {
            flags.extend(["--bwlimit".into(), format!("{}k", (rate / 1024).max(1))]);
        }
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        if !listed.is_empty() {
            let mut copy = vec!["copy", "--files-from-raw", "-", "--no-check-dest"];
            copy.extend_from_slice(&flags);
            copy.extend_from_slice(&[&local, &staged]);
            match self
                .rc
                .run_cancellable("upload", &batch, &copy, file_list(&listed), Some(cancel))
            {
                Ok(_) => {}
                Err(e @ (Error::Backend { .. } | Error::Cancelled)) => {
                    let _ = self.rc.run("sweep", &batch, &["purge", &staged]);
                    return Err(e);
                }
                Err(e) => said = backup_core::error_chain(&e),
            }
            if let Err(e) = self.move_batch(&batch, job.dir, &listed) {
                said = backup_core::error_chain(&e);
            }
            let _ = self.rc.run("sweep", &batch, &["purge", &staged]);
        }
        let landed = if listed.is_empty() {
            Vec::new()
        } else {
            self.landed(job.dir, &listed)?
        };
        let mut by_path: std::collections::HashMap<&str, Option<String>> =
            std::collections::HashMap::new();
        for (f, got) in listed.iter().zip(landed) {
            let outcome = (!self.matches(f, got)).then(|| {
                if said.is_empty() {
                    "not at its place after the copy".to_owned()
                } else {
                    format!("not copied: {said}")
                }
            });
            by_path.insert(&f.path, outcome);
        }
        for f in &odd {
            cancel.check()?;
            let outcome = self
                .write_one(job, f)
                .err()
                .map(|e| backup_core::error_chain(&e));
            by_path.insert(&f.path, outcome);
        }
        Ok(job
            .files
            .iter()
            .map(|f| by_path.remove(f.path.as_str()).flatten())
            .collect())
    }

    /// Moves a staged batch into place. rclone refuses to `move` a
    /// directory into one that contains it, so each top-level directory's
    /// files move in one `rclone move` (staging/batch/DIR to DIR, which do
    /// not overlap), and files at the top level one `moveto` each.
    fn move_batch(&self, batch: &str, dir: &str, files: &[BulkFile]) -> Result<()> {
        let mut groups: std::collections::BTreeMap<&str, Vec<BulkFile>> =
            std::collections::BTreeMap::new();
        let mut first_error = None;
        for f in files {
            if let Some((top, rest)) = f.path.split_once('/') {
                groups.entry(top).or_default().push(BulkFile {
                    path: rest.to_owned(),
                    ..f.clone()
                });
                continue;
            }
            let from = self.rc.path(&join(batch, &f.path));
            let to = self.rc.path(&join(dir, &f.path));
            if let Err(e) = self.rc.run(
                "move into place",
                &f.path,
                &["moveto", "--ignore-times", &from, &to],
            ) {
                first_error.get_or_insert(e);
            }
        }
        for (top, inside) in groups {
            let from = self.rc.path(&join(batch, top));
            let to = self.rc.path(&join(dir, top));
            let mv = [
                "move",
                "--files-from-raw",
                "-",
                "--ignore-times",
                "--no-traverse",
                &from,
                &to,
            ];
            if let Err(e) = self
                .rc
                .run_with_input("move into place", top, &mv, file_list(&inside))
            {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// One file from the local directory, file by file.
    fn write_one(&self, job: &BulkCopy<'_>, f: &BulkFile) -> Result<()> {
        let from = job.local.join(&f.path);
        let mut r = std::fs::File::open(&from)
            .map_err(|e| Error::io("read", from.display().to_string(), e))?;
        let mut w = self.write(
            &join(job.dir, &f.path),
            FileAttrs {
                mtime_ns: f.mtime_ns,
                mode: None,
            },
        )?;
        io::copy(&mut r, &mut w).map_err(|e| Error::io("copy", from.display().to_string(), e))?;
        w.commit().map(drop)
    }

    fn pull(&self, job: &BulkCopy<'_>, cancel: &Cancel) -> Result<Vec<Option<String>>> {
        let staging = job.local.join(job.staging).join(batch_name());
        let (listed, _) = split_listable(job.files);
        let mut said = String::new();
        if !listed.is_empty() {
            let from = self.rc.path(job.dir);
            let to = staging.display().to_string();
            let copy = [
                "copy",
                "--files-from-raw",
                "-",
                "--no-check-dest",
                &from,
                &to,
            ];
            match self.rc.run_cancellable(
                "download",
                job.dir,
                &copy,
                file_list(&listed),
                Some(cancel),
            ) {
                Ok(_) => {}
                Err(e @ (Error::Backend { .. } | Error::Cancelled)) => {
                    let _ = std::fs::remove_dir_all(&staging);
                    return Err(e);
                }
                Err(e) => said = backup_core::error_chain(&e),
            }
        }
        let mut out = Vec::with_capacity(job.files.len());
        for f in job.files {
            cancel.check()?;
            let outcome = if f.path.contains(['\n', '\r']) {
                self.read_one(job, f, &staging)
            } else {
                place(&staging, job.local, f)
            };
            out.push(outcome.err().map(|e| {
                if said.is_empty() {
                    e
                } else {
                    format!("not copied: {said}")
                }
            }));
        }
        let _ = std::fs::remove_dir_all(&staging);
        Ok(out)
    }

    /// One file into the local directory, file by file.
    fn read_one(&self, job: &BulkCopy<'_>, f: &BulkFile, staging: &Path) -> Result<(), String> {
        let tmp = staging.join("single");
        std::fs::create_dir_all(staging).map_err(|e| e.to_string())?;
        let mut r = self
            .open(&join(job.dir, &f.path))
            .map_err(|e| backup_core::error_chain(&e))?;
        let mut w = std::fs::File::create(&tmp).map_err(|e| e.to_string())?;
        io::copy(&mut r, &mut w).map_err(|e| e.to_string())?;
        if let Some(m) = f.mtime_ns {
            let t = filetime::FileTime::from_unix_time(
                m.div_euclid(1_000_000_000),
                m.rem_euclid(1_000_000_000) as u32,
            );
            filetime::set_file_handle_times(&w, None, Some(t)).map_err(|e| e.to_string())?;
        }
        drop(w);
        place_as(&tmp, &job.local.join(&f.path), f.size)
    }
}

/// Paths for `--files-from-raw`, one per line.
fn file_list(files: &[BulkFile]) -> Vec<u8> {
    files
        .iter()
        .flat_map(|f| f.path.bytes().chain([b'\n']))
        .collect()
}

/// The files a line-based list can name, and the others (a line break in
/// the name), which go file by file.
fn split_listable(files: &[BulkFile]) -> (Vec<BulkFile>, Vec<BulkFile>) {
    files
        .iter()
        .cloned()
        .partition(|f| !f.path.contains(['\n', '\r']))
}

/// Moves a staged download to its final name after syncing it.
fn place(staging: &Path, local: &Path, f: &BulkFile) -> Result<(), String> {
    place_as(&staging.join(&f.path), &local.join(&f.path), f.size)
}

fn place_as(staged: &Path, to: &Path, size: u64) -> Result<(), String> {
    let file = std::fs::File::open(staged).map_err(|e| format!("not copied: {e}"))?;
    let len = file.metadata().map_err(|e| e.to_string())?.len();
    if len != size {
        return Err(format!("arrived with {len} bytes, not {size}"));
    }
    file.sync_all().map_err(|e| e.to_string())?;
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
    }
    std::fs::rename(staged, to).map_err(|e| e.to_string())
}

impl Bulk for RcloneTree {
    fn name(&self) -> &'static str {
        "rclone"
    }

    fn copy(&self, job: &BulkCopy<'_>, cancel: &Cancel) -> Result<Vec<Option<String>>> {
        match job.direction {
            Direction::Push => self.push(job, cancel),
            Direction::Pull => self.pull(job, cancel),
        }
    }
}

impl Tree for RcloneTree {
    fn location(&self) -> String {
        self.rc.location.clone()
    }

    fn root_path(&self) -> String {
        self.rc
            .remote
            .split_once(':')
            .map_or("", |(_, p)| p)
            .to_owned()
    }

    fn caps(&self) -> TreeCaps {
        self.caps.clone()
    }

    fn root(&self) -> Result<Option<TreeEntry>> {
        self.stat_path("")
    }

    fn walk<'a>(
        &'a self,
        skip: &'a (dyn Fn(&str, EntryKind) -> bool + Sync),
    ) -> Result<Box<dyn Iterator<Item = Result<Walked>> + Send + 'a>> {
        let root = self.rc.path("");
        let mut child = self
            .rc
            .command(&["lsjson", "-R", "--no-mimetype", &root])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| self.rc.spawn_error(&e))?;
        let stdout = child.stdout.take().expect("piped");
        let mut entries: Vec<TreeEntry> = Vec::new();
        let mut leftovers: Vec<String> = Vec::new();
        for line in io::BufReader::new(stdout).split(b'\n') {
            let line = line.map_err(|e| Error::io("list", self.rc.shown(""), e))?;
            let text = line.trim_ascii();
            let text = text.strip_suffix(b",").unwrap_or(text);
            if !text.starts_with(b"{") {
                continue;
            }
            let o: Listed = serde_json::from_slice(text).map_err(|e| Error::Format {
                path: self.rc.shown(""),
                source: e,
            })?;
            if !o.is_dir && is_tmp_name(&o.name) {
                leftovers.push(o.path);
            } else {
                entries.push(Self::entry(o));
            }
        }
        let out = child
            .wait_with_output()
            .map_err(|e| Error::io("list", self.rc.shown(""), e))?;
        if !out.status.success() {
            match self.rc.failure("list", "", out.status.code(), &out.stderr) {
                Error::NotFound { .. } => return Ok(Box::new(std::iter::empty())),
                e => return Err(e),
            }
        }
        entries.sort_unstable_by(|a, b| cmp_paths(&a.path, &b.path));
        let mut skipped: Option<String> = None;
        let kept = entries.into_iter().filter(move |e| {
            if let Some(s) = &skipped
                && e.path.len() > s.len()
                && e.path.starts_with(s.as_str())
                && e.path.as_bytes()[s.len()] == b'/'
            {
                return false;
            }
            if skip(&e.path, e.kind) {
                skipped = (e.kind == EntryKind::Dir).then(|| e.path.clone());
                return false;
            }
            true
        });
        Ok(Box::new(
            leftovers
                .into_iter()
                .map(|p| Ok(Walked::Leftover(p)))
                .chain(kept.map(|e| Ok(Walked::Entry(e)))),
        ))
    }

    fn stat(&self, path: &str) -> Result<Option<TreeEntry>> {
        if !path.is_empty() {
            check_key(path)?;
        }
        self.stat_path(path)
    }

    fn open(&self, path: &str) -> Result<Box<dyn Read + Send>> {
        if !path.is_empty() {
            check_key(path)?;
        }
        // rclone cat of a missing file fails only at its end: look first,
        // so that a missing file is a clear NotFound.
        match self.stat_path(path)? {
            Some(e) if e.kind == EntryKind::File => {}
            _ => {
                return Err(Error::NotFound {
                    what: "file",
                    path: self.rc.shown(path),
                });
            }
        }
        Ok(Box::new(RcloneReader::spawn(&self.rc, path, &[])?))
    }

    fn write(&self, path: &str, attrs: FileAttrs) -> Result<Box<dyn FileWriter>> {
        check_key(path)?;
        let tmp = self.rc.path(&tmp_key(path));
        let (child, stdin) = self.rc.rcat(&tmp)?;
        Ok(Box::new(TreeWriter {
            rc: Arc::clone(&self.rc),
            child: Some(child),
            stdin: Some(stdin),
            tmp,
            path: path.to_owned(),
            mtime_ns: attrs.mtime_ns,
        }))
    }

    fn make_dir(&self, path: &str, _attrs: FileAttrs) -> Result<()> {
        if !path.is_empty() {
            check_key(path)?;
        }
        self.rc
            .run("create", path, &["mkdir", &self.rc.path(path)])
            .map(drop)
    }

    fn symlink(&self, path: &str, _target: &str) -> Result<()> {
        Err(Error::InvalidInput(format!(
            "{}: rclone remotes keep no symlinks",
            self.rc.shown(path)
        )))
    }

    fn remove(&self, path: &str, kind: EntryKind) -> Result<()> {
        check_key(path)?;
        let at = self.rc.path(path);
        let done = match kind {
            EntryKind::Dir => self.rc.run("remove", path, &["rmdir", &at]),
            _ => self
                .rc
                .run("delete", path, &["deletefile", "--retries", "1", &at]),
        };
        match done {
            Ok(_) | Err(Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn rename(&self, from: &str, to: &str) -> Result<()> {
        check_key(from)?;
        check_key(to)?;
        self.rc
            .run(
                "move",
                from,
                &[
                    "moveto",
                    "--ignore-times",
                    &self.rc.path(from),
                    &self.rc.path(to),
                ],
            )
            .map(drop)
    }

    fn bulk(&self) -> Option<&dyn Bulk> {
        Some(self)
    }
}

/// Streams into `rclone rcat` under a temporary name; the commit sets the
/// mtime and moves it over the final name.
struct TreeWriter {
    rc: Arc<Rclone>,
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    tmp: String,
    path: String,
    mtime_ns: Option<i64>,
}

impl Write for TreeWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.stdin.as_mut().expect("open until commit").write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.stdin.as_mut().expect("open until commit").flush()
    }
}

impl FileWriter for TreeWriter {
    fn commit(mut self: Box<Self>) -> Result<Stored> {
        drop(self.stdin.take());
        let child = self.child.take().expect("running until commit");
        let out = child
            .wait_with_output()
            .map_err(|e| Error::io("upload", self.rc.shown(&self.path), e))?;
        if !out.status.success() {
            return Err(self
                .rc
                .failure("upload", &self.path, out.status.code(), &out.stderr));
        }
        if let Some(m) = self.mtime_ns {
            let t = touch_time(m);
            self.rc.run(
                "set the mtime of",
                &self.path,
                &["touch", "--no-create", "--timestamp", &t, &self.tmp],
            )?;
        }
        let to = self.rc.path(&self.path);
        self.rc.run(
            "move into place",
            &self.path,
            &["moveto", "--ignore-times", &self.tmp, &to],
        )?;
        self.tmp.clear();
        Ok(Stored::default())
    }
}

impl Drop for TreeWriter {
    fn drop(&mut self) {
        self.rc
            .abandon(self.stdin.take(), self.child.take(), &self.tmp);
    }
}

#[cfg(test)]
mod tests {
    use super::{resolve, touch_time};

    #[test]
    fn staging_paths_resolve_and_times_format_for_touch() {
        assert_eq!(
            resolve("p", "../.backupkit-mirror/staging"),
            ".backupkit-mirror/staging"
        );
        assert_eq!(
            resolve("", ".backupkit-mirror/staging"),
            ".backupkit-mirror/staging"
        );
        assert_eq!(
            touch_time(1_700_000_000_123_456_789),
            "2023-11-14T22:13:20.123456789"
        );
    }
}
