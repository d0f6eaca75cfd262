//! The destination record: what backupkit last wrote to (or found at) each
//! path of a mirror, kept at the destination in `.backupkit-mirror/record`.
//!
//! It is a cache of the truth, never the truth: a file is skipped on its
//! word only when the source still has the size and mtime recorded and the
//! destination's own listing still agrees (size, and the mtime or the
//! store's stamp). It lets a run skip a file whose destination mtime is
//! coarser than the source's (SFTP, FAT) without guessing, skip an object
//! store's per-file mtime request, and keeps the BLAKE3 of what was sent
//! for verification and safe delete.
//!
//! Format: a header line, then one line per file in canonical path order,
//! tab-separated: escaped path, size, source mtime (ns), stamp, BLAKE3
//! (`-` for none). Paths escape `%`, tab, newline and carriage return as
//! `%25`, `%09`, `%0A`, `%0D`. Lines are read and written one at a time, so
//! memory stays flat for a tree of millions of files.

use std::io::{BufRead, BufReader, Read, Write};

use crate::tree::{FileAttrs, FileWriter, Tree};
use crate::{Error, Result};

/// Where the record lives, relative to the destination root.
pub const RECORD_PATH: &str = ".backupkit-mirror/record";
/// The backup directories (`--backup-dir`) used so far, one per line; a
/// destination walk skips them.
pub const BACKUP_DIRS_PATH: &str = ".backupkit-mirror/backup-dirs";
/// The directory backupkit keeps its mirror state in; walks skip it.
pub const STATE_DIR: &str = ".backupkit-mirror";

/// Where a bulk transport keeps unfinished files (inside the state
/// directory, so a killed copy leaves nothing among the user's files).
pub const STAGING_DIR: &str = ".backupkit-mirror/staging";
const HEADER: &str = "backupkit-mirror-record 1";

/// One recorded file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordLine {
    pub path: String,
    pub size: u64,
    pub mtime_ns: Option<i64>,
    pub stamp: Option<String>,
    pub blake3: Option<String>,
}

impl RecordLine {
    pub fn to_line(&self) -> String {
        let opt = |v: Option<&str>| v.map_or_else(|| "-".to_owned(), escape);
        format!(
            "{}\t{}\t{}\t{}\t{}\n",
            escape(&self.path),
            self.size,
            self.mtime_ns
                .map_or_else(|| "-".to_owned(), |m| m.to_string()),
            opt(self.stamp.as_deref()),
            opt(self.blake3.as_deref()),
        )
    }

    fn parse(line: &str) -> Option<Self> {
        let mut f = line.split('\t');
        let path = unescape(f.next()?)?;
        let size = f.next()?.parse().ok()?;
        let mtime_ns = match f.next()? {
            "-" => None,
            m => Some(m.parse().ok()?),
        };
        let opt = |v: &str| {
            if v == "-" {
                Some(None)
            } else {
                unescape(v).map(Some)
            }
        };
        let stamp = opt(f.next()?)?;
        let blake3 = opt(f.next()?)?;
        if f.next().is_some() || path.is_empty() {
            return None;
        }
        Some(Self {
            path,
            size,
            mtime_ns,
            stamp,
            blake3,
        })
    }
}

/// The header line, for a new record.
pub fn header() -> String {
    format!("{HEADER}\n")
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '%' => out.push_str("%25"),
            '\t' => out.push_str("%09"),
            '\n' => out.push_str("%0A"),
            '\r' => out.push_str("%0D"),
            c => out.push(c),
        }
    }
    out
}

fn unescape(s: &str) -> Option<String> {
    if !s.contains('%') {
        return Some(s.to_owned());
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        let code = rest.get(i + 1..i + 3)?;
        out.push(match code {
            "25" => '%',
            "09" => '\t',
            "0A" => '\n',
            "0D" => '\r',
            _ => return None,
        });
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    Some(out)
}

/// Reads a record line by line. A damaged or out-of-order record ends the
/// stream with an error; the caller then goes on without it.
pub struct RecordReader {
    lines: std::io::Lines<BufReader<Box<dyn Read + Send>>>,
    last: Option<String>,
}

impl std::fmt::Debug for RecordReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordReader").finish_non_exhaustive()
    }
}

impl RecordReader {
    /// Checks the header of an opened record.
    pub fn new(read: Box<dyn Read + Send>) -> Result<Self> {
        let mut lines = BufReader::with_capacity(256 * 1024, read).lines();
        match lines.next() {
            Some(Ok(h)) if h == HEADER => Ok(Self { lines, last: None }),
            Some(Err(e)) => Err(Error::io("read", RECORD_PATH, e)),
            _ => Err(damaged("it does not start with the record header")),
        }
    }
}

fn damaged(why: &str) -> Error {
    Error::Backend {
        backend: "mirror record".into(),
        message: format!("{RECORD_PATH} is damaged: {why}"),
        source: None,
    }
}

impl Iterator for RecordReader {
    type Item = Result<RecordLine>;

    fn next(&mut self) -> Option<Self::Item> {
        let line = match self.lines.next()? {
            Ok(l) => l,
            Err(e) => return Some(Err(Error::io("read", RECORD_PATH, e))),
        };
        let Some(rec) = RecordLine::parse(&line) else {
            return Some(Err(damaged("a line is not path, size, mtime, stamp, hash")));
        };
        if let Some(last) = &self.last
            && crate::tree::cmp_paths(last, &rec.path).is_ge()
        {
            return Some(Err(damaged("its paths are out of order")));
        }
        self.last = Some(rec.path.clone());
        Some(Ok(rec))
    }
}

/// The new record, written only when it differs from the old one: while
/// every line so far equals the old record's, nothing is written; at the
/// first difference the old lines are copied over and writing goes on.
pub(crate) struct RecordOut {
    writer: Option<Box<dyn FileWriter>>,
    same: u64,
    pub(crate) dirty: bool,
    pub(crate) damaged: bool,
    had_old: bool,
    /// A dry run writes no record.
    enabled: bool,
}

impl RecordOut {
    pub(crate) fn new(had_old: bool, enabled: bool) -> Self {
        Self {
            writer: None,
            same: 0,
            dirty: false,
            damaged: false,
            had_old,
            enabled,
        }
    }

    pub(crate) fn emit(
        &mut self,
        dest: &dyn Tree,
        new: Option<&RecordLine>,
        old: Option<&RecordLine>,
    ) -> Result<()> {
        if !self.enabled {
            return Ok(());
        }
        if !self.dirty {
            if new == old && !self.damaged {
                if old.is_some() {
                    self.same += 1;
                }
                return Ok(());
            }
            self.start(dest)?;
        }
        if let (Some(line), Some(w)) = (new, self.writer.as_mut()) {
            w.write_all(line.to_line().as_bytes())
                .map_err(|e| Error::io("write", RECORD_PATH, e))?;
        }
        Ok(())
    }

    /// Opens the new record and copies the old one's first `same` lines.
    pub(crate) fn start(&mut self, dest: &dyn Tree) -> Result<()> {
        self.dirty = true;
        let mut w = dest.write(RECORD_PATH, FileAttrs::default())?;
        w.write_all(header().as_bytes())
            .map_err(|e| Error::io("write", RECORD_PATH, e))?;
        if self.same > 0 {
            let old = RecordReader::new(dest.open(RECORD_PATH)?)?;
            for line in old.take(self.same as usize) {
                w.write_all(line?.to_line().as_bytes())
                    .map_err(|e| Error::io("write", RECORD_PATH, e))?;
            }
        }
        self.writer = Some(w);
        Ok(())
    }

    /// Whether there is a new record to commit (or a stale one to drop).
    pub(crate) fn finish(mut self, dest: &dyn Tree) -> Result<()> {
        if self.enabled && !self.dirty && self.damaged && self.had_old {
            self.start(dest)?;
        }
        match self.writer.take() {
            Some(w) => w.commit().map(drop),
            None => Ok(()),
        }
    }
}

/// Deletions (within the guards), deferred replacements, directory mtimes
/// and the record.
#[cfg(test)]
mod tests {
    use super::{RecordLine, RecordReader, header};

    #[test]
    fn lines_round_trip_with_awkward_names() {
        let recs = [
            RecordLine {
                path: "a\tb%c\nd\re".into(),
                size: 7,
                mtime_ns: Some(-5),
                stamp: Some("\"etag\"".into()),
                blake3: None,
            },
            RecordLine {
                path: "z/ü 名".into(),
                size: 0,
                mtime_ns: None,
                stamp: None,
                blake3: Some("ab".into()),
            },
        ];
        let mut text = header();
        for r in &recs {
            text.push_str(&r.to_line());
        }
        let read: Vec<RecordLine> = RecordReader::new(Box::new(std::io::Cursor::new(text)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(read, recs);
    }

    #[test]
    fn damaged_records_are_refused() {
        for text in [
            "nope\n",
            "backupkit-mirror-record 1\na\tx\t-\t-\t-\n",
            "backupkit-mirror-record 1\nb\t1\t-\t-\t-\na\t1\t-\t-\t-\n",
            "backupkit-mirror-record 1\na%zz\t1\t-\t-\t-\n",
        ] {
            let r = RecordReader::new(Box::new(std::io::Cursor::new(text.to_owned())));
            let bad = match r {
                Err(_) => true,
                Ok(r) => r.into_iter().any(|l| l.is_err()),
            };
            assert!(bad, "{text:?}");
        }
    }
}
