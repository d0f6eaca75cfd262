//! The archive contract: how a stream of entries becomes one data object and
//! back. Formats (tar, tar.gz, tar.zst) are implemented in `backup-archive`;
//! the engines here only see these traits.

use std::fmt::Debug;
use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};

/// What kind of filesystem object an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
    /// A further name for a file stored earlier in the same archive;
    /// `link` names that earlier entry.
    Hardlink,
}

impl EntryKind {
    /// The kind in words, for messages.
    pub fn describe(self) -> &'static str {
        match self {
            EntryKind::File => "file",
            EntryKind::Dir => "directory",
            EntryKind::Symlink => "symlink",
            EntryKind::Hardlink => "hard link",
        }
    }
}

/// One archive entry's metadata, as packed and as recorded in the manifest.
///
/// `path` is relative, `/`-separated, and never contains `..`, an empty
/// component or a leading `/` when produced by backupkit. Readers must not
/// trust that: restore validates every path again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub path: String,
    pub kind: EntryKind,
    /// Content length for files, 0 for everything else.
    pub size: u64,
    /// Modification time, seconds since the Unix epoch.
    pub mtime: i64,
    /// Nanoseconds part of the modification time (tar keeps only seconds;
    /// the manifest keeps both).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub mtime_nsec: u32,
    /// Permission bits (`0o7777` mask).
    pub mode: u32,
    /// Symlink target, or for hard links the path of the entry linked to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    /// BLAKE3 of the content (files only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blake3: Option<String>,
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if passes a reference
pub(crate) fn is_zero(v: &u32) -> bool {
    *v == 0
}

/// Compression applied to a tar stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    /// The seeds' format and the default (level 6).
    #[default]
    Gzip,
    Zstd,
}

impl Compression {
    /// The level used when the caller gives none.
    pub fn default_level(self) -> Option<i32> {
        match self {
            Compression::None => None,
            Compression::Gzip => Some(6),
            Compression::Zstd => Some(3),
        }
    }

    /// Valid levels for this compression, inclusive.
    pub fn level_range(self) -> Option<(i32, i32)> {
        match self {
            Compression::None => None,
            Compression::Gzip => Some((1, 9)),
            Compression::Zstd => Some((1, 19)),
        }
    }

    /// File name of the tar data object stored with this compression.
    pub fn data_object_name(self) -> &'static str {
        match self {
            Compression::None => "files.tar",
            Compression::Gzip => "files.tar.gz",
            Compression::Zstd => "files.tar.zst",
        }
    }

    /// Suffix of a single compressed stream (`.gz`, `.zst`, nothing).
    pub fn extension(self) -> &'static str {
        match self {
            Compression::None => "",
            Compression::Gzip => ".gz",
            Compression::Zstd => ".zst",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        }
    }
}

impl std::str::FromStr for Compression {
    type Err = crate::Error;
    fn from_str(s: &str) -> crate::Result<Self> {
        match s {
            "none" | "off" => Ok(Compression::None),
            "gzip" | "gz" => Ok(Compression::Gzip),
            "zstd" | "zst" => Ok(Compression::Zstd),
            other => Err(crate::Error::InvalidInput(format!(
                "unknown compression {other:?} (expected gzip, zstd or none)"
            ))),
        }
    }
}

/// Called for each entry while unpacking: the entry and a reader of its
/// content (empty for non-files). Returning an error stops the unpacking.
pub type EntryVisitor<'v> = dyn FnMut(Entry, &mut dyn Read) -> crate::Result<()> + 'v;

/// An archive format with its compression: packs entries into a byte stream
/// and unpacks such a stream.
///
/// # Contract
///
/// Unpacking what a packer wrote visits the same entries, in the same order,
/// with the same `path`, `kind`, `size`, `mtime` (seconds), `mode` and `link`,
/// and the same content bytes. The stream is readable by the standard tool for
/// the format (`tar`, `gunzip`, `zstd`). Memory stays bounded whatever the
/// size of the stream.
pub trait ArchiveFormat: Debug + Send + Sync {
    /// The compression this format applies.
    fn compression(&self) -> Compression;

    /// The compression level in use, if the format compresses.
    fn level(&self) -> Option<i32>;

    /// Starts packing into `out`. Compression may run on other threads.
    fn packer(&self, out: Box<dyn Write + Send>) -> io::Result<Box<dyn Packer>>;

    /// Unpacks `input`, calling `visit` for each entry in order, then reads
    /// the input to its end so a hashing wrapper around it sees every byte.
    ///
    /// # Errors
    ///
    /// A malformed or truncated stream gives [`crate::Error::Io`] with kind
    /// `InvalidData` or `UnexpectedEof`; an error from `visit` is returned
    /// as it is.
    fn unpack(
        &self,
        input: Box<dyn Read + Send>,
        visit: &mut EntryVisitor<'_>,
    ) -> crate::Result<()>;
}

/// Writes entries into an archive stream.
pub trait Packer: Send {
    /// Appends a regular file of `entry.size` bytes read from `data`.
    ///
    /// Exactly `entry.size` bytes are stored. Returns how many bytes `data`
    /// actually delivered, up to `entry.size`: when the file shrank while it
    /// was read, fewer, and the rest is stored as zeros so the archive stays
    /// well-formed. The caller decides what to report.
    fn append_file(&mut self, entry: &Entry, data: &mut dyn Read) -> io::Result<u64>;

    /// Writes only the header of a regular file of `entry.size` bytes; the
    /// caller then hands the output exactly the content, padded as the
    /// format pads it, itself (a deduplicating output splices in an
    /// unchanged file's stored chunks). Only for uncompressed archives.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::Unsupported`] for a packer that cannot.
    fn append_file_header(&mut self, entry: &Entry) -> io::Result<()> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!(
                "this archive format cannot append {} by its header alone",
                entry.path
            ),
        ))
    }

    /// Appends a directory, symlink or hard link (no content).
    fn append_other(&mut self, entry: &Entry) -> io::Result<()>;

    /// Hands every byte appended so far to the output writer (for an
    /// uncompressed archive: the stream up to here has reached it), so that
    /// a deduplicating output can end a chunk exactly between two entries.
    /// Compressed formats may flush their compressor, which costs ratio:
    /// call it only on uncompressed archives.
    fn flush(&mut self) -> io::Result<()>;

    /// Writes the archive trailer and flushes all compression; every byte has
    /// been written to the output writer, which is dropped, when this returns.
    fn finish(self: Box<Self>) -> io::Result<()>;
}

/// Compresses or decompresses one stream (a database dump stored as
/// `results.db.gz`), in the formats the standard tools read.
pub trait StreamCodec: Debug + Send + Sync {
    fn compression(&self) -> Compression;

    fn level(&self) -> Option<i32>;

    /// Wraps `out` in a compressor; [`Encoder::finish`] ends the stream.
    fn encoder(&self, out: Box<dyn Write + Send>) -> io::Result<Box<dyn Encoder>>;

    /// Wraps `input` in a decompressor. A damaged or truncated stream gives
    /// an `InvalidData` or `UnexpectedEof` error at the latest at its end
    /// (gzip's CRC, zstd's checksum).
    fn decoder(&self, input: Box<dyn Read + Send>) -> io::Result<Box<dyn Read + Send>>;
}

/// A compressing writer that must be finished.
pub trait Encoder: Write + Send {
    /// Writes the end of the stream and flushes; the output is dropped.
    fn finish(self: Box<Self>) -> io::Result<()>;
}
