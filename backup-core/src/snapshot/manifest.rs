//! The manifest: every entry of a snapshot, one JSON object per line
//! (`manifest.jsonl`).
//!
//! JSON Lines rather than one JSON document so it streams both ways: a backup
//! of millions of files writes it without holding it, and restore and check
//! read it in step with the archive. `jq` and Python read it line by line.

use std::io::{BufRead, BufReader, Read, Write};

use serde::{Deserialize, Serialize};

use crate::archive::Entry;
use crate::{Error, Result};

/// Name of the manifest object inside a snapshot directory.
pub const MANIFEST_NAME: &str = "manifest.jsonl";
/// Name of the manifest of a deduplicated snapshot (format 3): the same
/// lines, zstd-compressed (`zstdcat manifest.jsonl.zst | jq`).
pub const MANIFEST_ZST_NAME: &str = "manifest.jsonl.zst";
/// Name of the manifest of a deduplicated snapshot stored as chunks: the
/// chunk list (as `chunks`) of the manifest's lines, so that what did not
/// change since an earlier snapshot is not stored again.
pub const MANIFEST_CHUNKS_NAME: &str = "manifest.chunks";

/// The first line of a manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestHeader {
    pub backupkit_manifest: u32,
    pub snapshot: String,
}

/// Streams entries into a manifest.
#[derive(Debug)]
pub struct ManifestWriter<W: Write> {
    out: W,
}

/// The header line of snapshot `snapshot`'s manifest, newline included.
#[must_use]
pub fn header_line(snapshot: &str) -> Vec<u8> {
    let header = ManifestHeader {
        backupkit_manifest: 1,
        snapshot: snapshot.to_owned(),
    };
    let mut line = serde_json::to_vec(&header).expect("a header serializes");
    line.push(b'\n');
    line
}

impl<W: Write> ManifestWriter<W> {
    pub fn new(mut out: W, snapshot: &str) -> std::io::Result<Self> {
        out.write_all(&header_line(snapshot))?;
        Ok(Self { out })
    }

    pub fn push(&mut self, entry: &Entry) -> std::io::Result<()> {
        serde_json::to_writer(&mut self.out, entry)?;
        self.out.write_all(b"\n")
    }

    /// The output.
    pub fn get_ref(&self) -> &W {
        &self.out
    }

    pub fn into_inner(self) -> W {
        self.out
    }
}

/// Reads a manifest entry by entry.
#[derive(Debug)]
pub struct ManifestReader<R> {
    lines: std::io::Lines<BufReader<R>>,
    name: String,
    line_no: usize,
}

impl<R: Read> ManifestReader<R> {
    /// Opens a manifest and checks its header names `snapshot`.
    pub fn new(input: R, name: &str, snapshot: &str) -> Result<Self> {
        let mut lines = BufReader::with_capacity(64 * 1024, input).lines();
        let first = lines
            .next()
            .transpose()
            .map_err(|e| Error::io("read", name, e))?
            .ok_or_else(|| Error::Integrity {
                snapshot: snapshot.to_owned(),
                detail: format!("{name} is empty"),
            })?;
        let header: ManifestHeader =
            serde_json::from_str(&first).map_err(|e| Error::Integrity {
                snapshot: snapshot.to_owned(),
                detail: format!("{name} has no valid header: {e}"),
            })?;
        if header.snapshot != snapshot || header.backupkit_manifest != 1 {
            return Err(Error::Integrity {
                snapshot: snapshot.to_owned(),
                detail: format!(
                    "{name} belongs to snapshot {:?}, format {}",
                    header.snapshot, header.backupkit_manifest
                ),
            });
        }
        Ok(Self {
            lines,
            name: name.to_owned(),
            line_no: 1,
        })
    }
}

impl<R: Read> Iterator for ManifestReader<R> {
    type Item = Result<Entry>;

    fn next(&mut self) -> Option<Self::Item> {
        let line = match self.lines.next()? {
            Ok(l) => l,
            Err(e) => return Some(Err(Error::io("read", self.name.clone(), e))),
        };
        self.line_no += 1;
        Some(serde_json::from_str(&line).map_err(|source| Error::Format {
            path: format!("{} line {}", self.name, self.line_no),
            source,
        }))
    }
}
