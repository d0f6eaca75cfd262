//! The manifest: every entry of a snapshot, one JSON object per line
//! (`manifest.jsonl.zst`, zstd-compressed; `manifest.jsonl` in snapshots of
//! format 2 and earlier).
//!
//! JSON Lines rather than one JSON document so it streams both ways: a backup
//! of millions of files writes it without holding it, and restore and check
//! read it in step with the archive. `zstdcat | jq` and Python read it line
//! by line.
//!
//! Lines of format 2 (snapshot format 4 on) do not repeat what a line can
//! inherit: an entry in the same directory as the entry of the line before
//! gives its `name` (the last component of its path) instead of its whole
//! `path`. Siblings are written in a run (the walk sorts a directory's
//! children), so a directory of 10,000 files spells its path out once.

use std::borrow::Cow;
use std::io::{BufRead, BufReader, Read, Write};

use serde::{Deserialize, Serialize};

use crate::archive::{Entry, EntryKind};
use crate::{Error, Result};

/// Name of the manifest object inside a snapshot directory of format 2 or
/// earlier.
pub const MANIFEST_NAME: &str = "manifest.jsonl";
/// Name of the manifest of an archive snapshot (format 4 on) and of a
/// deduplicated snapshot of format 3: the lines, zstd-compressed
/// (`zstdcat manifest.jsonl.zst | jq`).
pub const MANIFEST_ZST_NAME: &str = "manifest.jsonl.zst";
/// Name of the manifest of a deduplicated snapshot stored as chunks: the
/// chunk list (as `chunks`) of the manifest's lines, so that what did not
/// change since an earlier snapshot is not stored again.
pub const MANIFEST_CHUNKS_NAME: &str = "manifest.chunks";

/// The line format this build writes: entries may be named by their name
/// alone (see the module documentation).
pub const LINES_FORMAT: u32 = 2;

/// The line format of the manifest of a snapshot of `snapshot_format`.
#[must_use]
pub fn lines_format(snapshot_format: u32) -> u32 {
    if snapshot_format >= crate::snapshot::NAMED_LINES_SNAPSHOT_FORMAT {
        LINES_FORMAT
    } else {
        1
    }
}

/// The first line of a manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestHeader {
    pub backupkit_manifest: u32,
    pub snapshot: String,
}

/// One line as stored: an [`Entry`] whose path is either whole (`path`) or,
/// in line format 2, the name of a sibling of the line before's entry.
#[derive(Serialize, Deserialize)]
struct Line<'a> {
    #[serde(default, skip_serializing_if = "Option::is_none", borrow)]
    path: Option<Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "Option::is_none", borrow)]
    name: Option<Cow<'a, str>>,
    kind: EntryKind,
    size: u64,
    mtime: i64,
    #[serde(default, skip_serializing_if = "crate::archive::is_zero")]
    mtime_nsec: u32,
    mode: u32,
    #[serde(default, skip_serializing_if = "Option::is_none", borrow)]
    link: Option<Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "Option::is_none", borrow)]
    blake3: Option<Cow<'a, str>>,
}

/// `path` split into its directory (`""` at the top) and its last
/// component.
fn split(path: &str) -> (&str, &str) {
    path.rsplit_once('/').unwrap_or(("", path))
}

/// Streams entries into a manifest.
#[derive(Debug)]
pub struct ManifestWriter<W: Write> {
    out: W,
    /// The directory of the previous line's entry.
    dir: Option<String>,
}

/// The header line of snapshot `snapshot`'s manifest of line format
/// `format`, newline included.
#[must_use]
pub fn header_line(snapshot: &str, format: u32) -> Vec<u8> {
    let header = ManifestHeader {
        backupkit_manifest: format,
        snapshot: snapshot.to_owned(),
    };
    let mut line = serde_json::to_vec(&header).expect("a header serializes");
    line.push(b'\n');
    line
}

impl<W: Write> ManifestWriter<W> {
    /// Starts a manifest of line format [`LINES_FORMAT`].
    pub fn new(mut out: W, snapshot: &str) -> std::io::Result<Self> {
        out.write_all(&header_line(snapshot, LINES_FORMAT))?;
        Ok(Self { out, dir: None })
    }

    pub fn push(&mut self, entry: &Entry) -> std::io::Result<()> {
        let (dir, name) = split(&entry.path);
        let sibling = !name.is_empty() && self.dir.as_deref() == Some(dir);
        let line = Line {
            path: (!sibling).then_some(Cow::Borrowed(entry.path.as_str())),
            name: sibling.then_some(Cow::Borrowed(name)),
            kind: entry.kind,
            size: entry.size,
            mtime: entry.mtime,
            mtime_nsec: entry.mtime_nsec,
            mode: entry.mode,
            link: entry.link.as_deref().map(Cow::Borrowed),
            blake3: entry.blake3.as_deref().map(Cow::Borrowed),
        };
        serde_json::to_writer(&mut self.out, &line)?;
        self.out.write_all(b"\n")?;
        if !sibling {
            let kept = self.dir.get_or_insert_with(String::new);
            kept.clear();
            kept.push_str(dir);
        }
        Ok(())
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
    format: u32,
    /// The directory of the previous line's entry.
    dir: Option<String>,
}

impl<R: Read> ManifestReader<R> {
    /// Opens a manifest and checks its header names `snapshot` and line
    /// format `format` (see [`lines_format`]).
    pub fn new(input: R, name: &str, snapshot: &str, format: u32) -> Result<Self> {
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
        if header.snapshot != snapshot || header.backupkit_manifest != format {
            return Err(Error::Integrity {
                snapshot: snapshot.to_owned(),
                detail: format!(
                    "{name} belongs to snapshot {:?}, format {} (expected {snapshot:?}, format {format})",
                    header.snapshot, header.backupkit_manifest
                ),
            });
        }
        Ok(Self {
            lines,
            name: name.to_owned(),
            line_no: 1,
            format,
            dir: None,
        })
    }

    fn entry(&mut self, text: &str) -> std::result::Result<Entry, serde_json::Error> {
        let line: Line<'_> = serde_json::from_str(text)?;
        let path = match (line.path, line.name) {
            (Some(path), None) => {
                let kept = self.dir.get_or_insert_with(String::new);
                kept.clear();
                kept.push_str(split(&path).0);
                path.into_owned()
            }
            (None, Some(name)) if self.format >= 2 => {
                if name.is_empty() || name.contains('/') {
                    return Err(serde::de::Error::custom(format!(
                        "name {name:?} is not one path component"
                    )));
                }
                match self.dir.as_deref() {
                    Some("") => name.into_owned(),
                    Some(dir) => format!("{dir}/{name}"),
                    None => {
                        return Err(serde::de::Error::custom(
                            "the first entry gives a name, not a path",
                        ));
                    }
                }
            }
            (Some(_), Some(_)) => {
                return Err(serde::de::Error::custom(
                    "an entry has both a path and a name",
                ));
            }
            (None, _) => return Err(serde::de::Error::missing_field("path")),
        };
        Ok(Entry {
            path,
            kind: line.kind,
            size: line.size,
            mtime: line.mtime,
            mtime_nsec: line.mtime_nsec,
            mode: line.mode,
            link: line.link.map(Cow::into_owned),
            blake3: line.blake3.map(Cow::into_owned),
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
        Some(self.entry(&line).map_err(|source| Error::Format {
            path: format!("{} line {}", self.name, self.line_no),
            source,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, kind: EntryKind) -> Entry {
        Entry {
            path: path.to_owned(),
            kind,
            size: 0,
            mtime: 1_650_000_000,
            mtime_nsec: 0,
            mode: 0o644,
            link: None,
            blake3: None,
        }
    }

    fn written(entries: &[Entry]) -> String {
        let mut w = ManifestWriter::new(Vec::new(), "S").unwrap();
        for e in entries {
            w.push(e).unwrap();
        }
        String::from_utf8(w.into_inner()).unwrap()
    }

    fn read(text: &str, format: u32) -> Result<Vec<Entry>> {
        ManifestReader::new(text.as_bytes(), "manifest", "S", format)?.collect()
    }

    #[test]
    fn siblings_are_named_and_every_path_reads_back_whole() {
        use EntryKind::{Dir, File};
        let entries = [
            entry("a", Dir),
            entry("a/b", Dir),
            entry("a/b/x", File),
            entry("a/b/y", File),
            entry("a/c", File),
            entry("a/d", File),
            entry("top", File),
            entry("z", Dir),
        ];
        let text = written(&entries);
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines[0]["backupkit_manifest"], 2);
        let shown: Vec<String> = lines[1..]
            .iter()
            .map(|l| match (&l["path"], &l["name"]) {
                (serde_json::Value::String(p), serde_json::Value::Null) => format!("path {p}"),
                (serde_json::Value::Null, serde_json::Value::String(n)) => format!("name {n}"),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            shown,
            [
                "path a",
                "path a/b",
                "path a/b/x",
                "name y",
                "path a/c",
                "name d",
                "path top",
                "name z"
            ]
        );
        assert_eq!(read(&text, 2).unwrap(), entries);
        // A format-1 reader does not take names.
        let e = read(&text, 1).unwrap_err();
        assert!(e.to_string().contains("format 2"), "{e}");
    }

    #[test]
    fn a_name_that_is_not_one_component_or_comes_first_is_refused() {
        let head = "{\"backupkit_manifest\":2,\"snapshot\":\"S\"}\n";
        let line = |field: &str, v: &str| {
            format!(
                "{{\"{field}\":\"{v}\",\"kind\":\"file\",\"size\":0,\"mtime\":0,\"mode\":420}}\n"
            )
        };
        for (body, want) in [
            (line("name", "x"), "the first entry gives a name"),
            (
                line("path", "a/x") + &line("name", "../y"),
                "is not one path component",
            ),
            (
                line("path", "a/x") + &line("name", ""),
                "is not one path component",
            ),
            (
                line("path", "a/x").replace("\"kind\"", "\"name\":\"y\",\"kind\""),
                "both a path and a name",
            ),
            (
                line("path", "x").replace("\"path\":\"x\",", ""),
                "missing field `path`",
            ),
        ] {
            let e = read(&format!("{head}{body}"), 2).unwrap_err();
            let e = format!("{e}: {}", std::error::Error::source(&e).unwrap());
            assert!(e.contains(want), "{body}: {e}");
        }
        let ok = read(
            &format!("{head}{}{}", line("path", "x"), line("name", "y")),
            2,
        )
        .unwrap();
        assert_eq!(ok[1].path, "y");
    }
}
