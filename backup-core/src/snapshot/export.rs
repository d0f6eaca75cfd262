//! `export`: a snapshot as one plain file that the standard tools read (a
//! tree as `.tar`, `.tar.gz` or `.tar.zst`; a database as its dump), from
//! either kind of repository.

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;
use std::time::Instant;

use serde::Serialize;

use crate::archive::Compression;
use crate::progress::{Cancel, Event, Progress};
use crate::repository::Repository;
use crate::{Error, Result};

/// What `export` wrote.
#[derive(Debug, Clone, Serialize)]
pub struct ExportSummary {
    pub snapshot: String,
    /// Bytes of the stream (the tar archive, or the dump), uncompressed.
    pub stream_bytes: u64,
    pub compression: Compression,
}

impl Repository {
    /// Writes snapshot `id`'s stream (its tar archive, or its dump) to
    /// `out`, compressed as asked.
    ///
    /// What is read is checked whole against the snapshot (each chunk
    /// against its id, the stream or data object against its SHA-256); on
    /// [`Error::Integrity`] what was written to `out` must be discarded:
    /// the CLI writes to a temporary file and renames it only on success.
    pub fn export(
        &self,
        id: &str,
        out: Box<dyn Write + Send>,
        compression: Compression,
        level: Option<i32>,
        progress: &dyn Progress,
        cancel: &Cancel,
    ) -> Result<ExportSummary> {
        let started = Instant::now();
        let meta = self.find_snapshot(id)?;
        // Refuse a bad level before anything is read.
        let codec = self.registry().codec(compression, level)?;
        let _lock = self.lock_read()?;
        self.verify_commit(&meta)?;
        progress.event(&Event::Started {
            operation: "export",
            snapshot: Some(meta.id.clone()),
        });
        let (mut stream, check) = self.open_stream(&meta, cancel)?;
        let mut encoder = codec
            .encoder(out)
            .map_err(|e| Error::io("start compressing", "the export", e))?;
        let bytes = io::copy(&mut stream, &mut encoder).map_err(|e| check.read_error(e))?;
        check.finish()?;
        encoder
            .finish()
            .map_err(|e| Error::io("write", "the export", e))?;
        progress.event(&Event::Finished {
            operation: "export",
            files: meta.file_count,
            bytes,
            warnings: 0,
            seconds: started.elapsed().as_secs_f64(),
        });
        Ok(ExportSummary {
            snapshot: meta.id,
            stream_bytes: bytes,
            compression,
        })
    }

    /// [`Self::export`] into a new file at `path`, compressed as its name
    /// ends (`.zst`, `.gz`, else not) unless `compression` is given. The
    /// file is written beside `path` and renamed to it only once whole,
    /// checked and synced: a failed export leaves nothing that looks like
    /// one, and an existing file is never overwritten.
    ///
    /// # Errors
    ///
    /// [`Error::AlreadyExists`] when `path` exists; as [`Self::export`].
    pub fn export_to_file(
        &self,
        id: &str,
        path: &Path,
        compression: Option<Compression>,
        level: Option<i32>,
        progress: &dyn Progress,
        cancel: &Cancel,
    ) -> Result<ExportSummary> {
        let shown = path.display().to_string();
        if path.symlink_metadata().is_ok() {
            return Err(Error::AlreadyExists { path: shown });
        }
        let compression = compression.unwrap_or_else(|| {
            let name = path.to_string_lossy();
            if name.ends_with(".zst") {
                Compression::Zstd
            } else if name.ends_with(".gz") {
                Compression::Gzip
            } else {
                Compression::None
            }
        });
        let name = path
            .file_name()
            .map_or_else(|| "export".into(), |n| n.to_string_lossy().into_owned());
        let partial = path.with_file_name(format!(".{name}.partial-{}", std::process::id()));
        let file = File::create_new(&partial)
            .map_err(|e| Error::io("create", partial.display().to_string(), e))?;
        let written = file
            .try_clone()
            .map_err(|e| Error::io("open", partial.display().to_string(), e))
            .and_then(|out| {
                let out = io::BufWriter::with_capacity(1 << 20, out);
                self.export(id, Box::new(out), compression, level, progress, cancel)
            })
            .and_then(|summary| {
                // A link, not a rename, so that a file that appeared at
                // `path` meanwhile is not replaced.
                file.sync_all()
                    .and_then(|()| std::fs::hard_link(&partial, path))
                    .map_err(|e| match e.kind() {
                        io::ErrorKind::AlreadyExists => Error::AlreadyExists {
                            path: shown.clone(),
                        },
                        _ => Error::io("write", shown.clone(), e),
                    })?;
                Ok(summary)
            });
        // The partial name goes either way: after the link, `path` holds
        // the export.
        let _ = std::fs::remove_file(&partial);
        written
    }
}
