//! The stat cache of a deduplicated repository: for each large file a
//! backup read, its identity as `stat` gives it (device, inode, size,
//! mtime and ctime to the nanosecond), its BLAKE3 and the chunks its data
//! (padded as tar pads it) became. A later backup that finds the file with
//! the same identity, and every chunk still stored, writes the file's tar
//! header and splices those chunks in without reading the file again.
//!
//! ctime is in the identity because no user tool can set it: a file
//! rewritten and given its old mtime back (`touch -r`, `rsync -t`) is read
//! again. The cache is local (one file per repository, under
//! `$BACKUPKIT_CACHE_DIR`, `$XDG_CACHE_HOME/backupkit` or
//! `~/.cache/backupkit`), a JSON object per line; a damaged or missing
//! cache only costs a full read. What a restore reads is checked against
//! the manifest's BLAKE3 as always, so a wrong cache entry could not go
//! unnoticed by `check --read-data`.

use std::collections::HashMap;
use std::io::{BufRead, BufWriter, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::dedup::ChunkId;

/// One file's entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Cached {
    path: String,
    dev: u64,
    ino: u64,
    size: u64,
    mtime: i64,
    mtime_nsec: i64,
    ctime: i64,
    ctime_nsec: i64,
    pub(crate) blake3: String,
    /// `id:length` of each chunk, comma-separated.
    chunks: String,
}

impl Cached {
    /// The chunks, or `None` when the entry is damaged.
    pub(crate) fn chunk_list(&self) -> Option<Vec<(ChunkId, u32)>> {
        self.chunks
            .split(',')
            .map(|c| {
                let (id, len) = c.split_once(':')?;
                Some((ChunkId::from_hex(id).ok()?, len.parse().ok()?))
            })
            .collect()
    }

    fn same_file(&self, meta: &std::fs::Metadata) -> bool {
        (self.dev, self.ino, self.size) == (meta.dev(), meta.ino(), meta.len())
            && (self.mtime, self.mtime_nsec) == (meta.mtime(), meta.mtime_nsec())
            && (self.ctime, self.ctime_nsec) == (meta.ctime(), meta.ctime_nsec())
    }
}

/// The cache of one backup run.
#[derive(Debug, Default)]
pub(crate) struct StatCache {
    file: Option<PathBuf>,
    old: HashMap<String, Cached>,
    new: Vec<Cached>,
}

/// Where caches live, unless a repository is given another place.
pub(crate) fn default_dir() -> Option<PathBuf> {
    let from = |var: &str| {
        std::env::var_os(var)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    from("BACKUPKIT_CACHE_DIR")
        .or_else(|| from("XDG_CACHE_HOME").map(|d| d.join("backupkit")))
        .or_else(|| from("HOME").map(|d| d.join(".cache/backupkit")))
}

impl StatCache {
    /// The cache `name` in `dir` (nothing when there is no directory).
    pub(crate) fn load(dir: Option<&Path>, name: &str) -> Self {
        let Some(dir) = dir else {
            return Self::default();
        };
        let file = dir.join(name);
        let mut old = HashMap::new();
        if let Ok(f) = std::fs::File::open(&file) {
            for line in std::io::BufReader::new(f).lines() {
                let Some(entry) = line
                    .ok()
                    .and_then(|l| serde_json::from_str::<Cached>(&l).ok())
                else {
                    // A damaged cache is no cache.
                    old.clear();
                    break;
                };
                old.insert(entry.path.clone(), entry);
            }
        }
        Self {
            file: Some(file),
            old,
            new: Vec::new(),
        }
    }

    /// The entry of `path` if the file is the one it describes.
    pub(crate) fn lookup(&self, path: &Path, meta: &std::fs::Metadata) -> Option<&Cached> {
        let hit = self.old.get(path.to_str()?)?;
        hit.same_file(meta).then_some(hit)
    }

    /// Keeps an entry that was used, for the next run.
    pub(crate) fn keep(&mut self, hit: Cached) {
        self.new.push(hit);
    }

    /// Records a file read whole and unchanged while it was read.
    pub(crate) fn record(
        &mut self,
        path: &Path,
        meta: &std::fs::Metadata,
        blake3: &str,
        chunks: &[(ChunkId, u32)],
    ) {
        let Some(p) = path.to_str() else {
            return;
        };
        let chunks: Vec<String> = chunks
            .iter()
            .map(|(id, len)| format!("{id}:{len}"))
            .collect();
        self.new.push(Cached {
            path: p.to_owned(),
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.len(),
            mtime: meta.mtime(),
            mtime_nsec: meta.mtime_nsec(),
            ctime: meta.ctime(),
            ctime_nsec: meta.ctime_nsec(),
            blake3: blake3.to_owned(),
            chunks: chunks.join(","),
        });
    }

    /// Stores the cache for the next run: this run's entries, and the old
    /// ones of files outside `roots` (another source backed up into the same
    /// repository). Written beside the cache and renamed over it; failing
    /// to store it only costs the next run a full read, so it is not an
    /// error.
    pub(crate) fn save(self, roots: &[PathBuf]) {
        let Some(file) = self.file else {
            return;
        };
        let inside = |p: &str| roots.iter().any(|r| Path::new(p).starts_with(r));
        let tmp = file.with_extension(format!("tmp-{}", std::process::id()));
        let written = (|| -> std::io::Result<()> {
            if let Some(dir) = file.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let mut out = BufWriter::new(std::fs::File::create(&tmp)?);
            let kept = self.old.values().filter(|c| !inside(&c.path));
            for entry in kept.chain(self.new.iter()) {
                serde_json::to_writer(&mut out, entry)?;
                out.write_all(b"\n")?;
            }
            out.into_inner()
                .map_err(std::io::IntoInnerError::into_error)?;
            std::fs::rename(&tmp, &file)
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
    }
}
