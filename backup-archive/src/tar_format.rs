//! tar, tar.gz and tar.zst: [`TarFormat`] packs entries into a GNU tar stream
//! through the chosen compressor and unpacks such streams.

use std::io::{self, BufWriter, Read, Write};
use std::num::NonZeroUsize;

use backup_core::archive::{ArchiveFormat, Compression, Entry, EntryKind, EntryVisitor, Packer};
use backup_core::{Error, Result};
use tar::{EntryType, Header};

use crate::pargz::ParallelGzEncoder;
use crate::pipe::{self, ChannelReader};

/// Buffer between the tar builder and the compressor.
const WRITE_BUFFER: usize = 256 * 1024;
/// Longest link name a plain tar header holds.
const HEADER_LINK_MAX: usize = 100;

/// Bytes per zstd worker job.
const ZSTD_JOB_SIZE: u32 = 2 << 20;

/// The level to use: `level`, or the compression's default; an error when
/// out of range (any level for no compression).
pub(crate) fn checked_level(compression: Compression, level: Option<i32>) -> Result<Option<i32>> {
    match (level, compression.level_range()) {
        (None, _) => Ok(compression.default_level()),
        (Some(l), Some((lo, hi))) if (lo..=hi).contains(&l) => Ok(Some(l)),
        (Some(l), Some((lo, hi))) => Err(Error::InvalidInput(format!(
            "{} level {l} is outside {lo}..={hi}",
            compression.as_str()
        ))),
        (Some(l), None) => Err(Error::InvalidInput(format!(
            "compression {} takes no level (got {l})",
            compression.as_str()
        ))),
    }
}

/// A zstd encoder with a checksum, on `threads` workers.
pub(crate) fn zstd_encoder<W: Write>(
    out: W,
    level: i32,
    threads: usize,
) -> io::Result<zstd::stream::write::Encoder<'static, W>> {
    let mut enc = zstd::stream::write::Encoder::new(out, level)?;
    enc.include_checksum(true)?;
    if threads > 1 {
        enc.multithread(threads as u32)?;
        // zstd's default job is 4 windows (8 MiB at level 3) and each worker
        // holds input, output and overlap buffers of that size: 2 MiB jobs
        // keep a backup's peak memory well under 100 MB at the same speed
        // (benches/compare.py).
        enc.set_parameter(zstd::stream::raw::CParameter::JobSize(ZSTD_JOB_SIZE))?;
    }
    Ok(enc)
}

/// A tar archive with optional gzip or zstd compression.
///
/// Packing writes GNU tar headers (long names and link targets use GNU
/// extension records) that GNU `tar` extracts; gzip output is one member
/// compressed on several threads ([`ParallelGzEncoder`]), zstd output one
/// multi-threaded frame with a checksum. Unpacking reads and decompresses
/// the input on a thread of its own while the caller's thread parses tar and
/// visits entries (so the input must not wait on a lock the caller holds,
/// such as a locked stdin).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TarFormat {
    compression: Compression,
    level: Option<i32>,
    threads: usize,
}

impl TarFormat {
    /// A format with `compression` at `level`; `None` picks
    /// [`Compression::default_level`]. Compression uses as many threads as
    /// the machine has cores unless [`with_threads`](Self::with_threads)
    /// says otherwise.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] when the level is outside
    /// [`Compression::level_range`] (any level for `Compression::None`).
    pub fn new(compression: Compression, level: Option<i32>) -> Result<Self> {
        let level = checked_level(compression, level)?;
        let threads = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
        Ok(Self {
            compression,
            level,
            threads,
        })
    }

    /// Uses `threads` compression threads (at least one).
    #[must_use]
    pub fn with_threads(self, threads: usize) -> Self {
        Self {
            threads: threads.max(1),
            ..self
        }
    }

    /// The number of compression threads.
    pub fn threads(&self) -> usize {
        self.threads
    }
}

impl ArchiveFormat for TarFormat {
    fn compression(&self) -> Compression {
        self.compression
    }

    fn level(&self) -> Option<i32> {
        self.level
    }

    fn packer(&self, out: Box<dyn Write + Send>) -> io::Result<Box<dyn Packer>> {
        let compressor = match (self.compression, self.level) {
            (Compression::None, _) => Compressor::Plain(out),
            (Compression::Gzip, level) => {
                let level = level.unwrap_or(6);
                Compressor::Gzip(ParallelGzEncoder::new(out, level, self.threads)?)
            }
            (Compression::Zstd, level) => {
                Compressor::Zstd(zstd_encoder(out, level.unwrap_or(3), self.threads)?)
            }
        };
        // An uncompressed archive is not buffered here: every byte reaches
        // `out` as soon as it is appended (its writer buffers), so that when
        // a file's content is first read its header has reached `out`, and a
        // deduplicating output can end a chunk exactly there.
        let buffer = match self.compression {
            Compression::None => 0,
            _ => WRITE_BUFFER,
        };
        let builder = tar::Builder::new(BufWriter::with_capacity(buffer, compressor));
        Ok(Box::new(TarPacker {
            builder: Some(builder),
            failed: false,
        }))
    }

    fn unpack(&self, input: Box<dyn Read + Send>, visit: &mut EntryVisitor<'_>) -> Result<()> {
        let (reader, thread) = pipe::spawn(input, self.compression)
            .map_err(|e| Error::io("start", "decompressor", e))?;
        // Returning drops the reader, which stops the thread if it still runs.
        let result = unpack_tar(reader, visit);
        let joined = thread.join();
        result?;
        joined.map_err(|_| {
            Error::io(
                "decompress",
                "archive",
                io::Error::other("decompressor thread panicked"),
            )
        })
    }
}

/// The compressor under the tar builder.
enum Compressor {
    Plain(Box<dyn Write + Send>),
    Gzip(ParallelGzEncoder<Box<dyn Write + Send>>),
    Zstd(zstd::stream::write::Encoder<'static, Box<dyn Write + Send>>),
    /// An abandoned stream: writes are discarded.
    Closed,
}

impl Compressor {
    /// Ends the compressed stream and returns the flushed output.
    fn finish(self) -> io::Result<Box<dyn Write + Send>> {
        let mut out = match self {
            Compressor::Plain(out) => out,
            Compressor::Gzip(enc) => enc.finish()?,
            Compressor::Zstd(enc) => enc.finish()?,
            Compressor::Closed => return Err(io::Error::other("archive stream was abandoned")),
        };
        out.flush()?;
        Ok(out)
    }
}

impl Write for Compressor {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Compressor::Plain(w) => w.write(buf),
            Compressor::Gzip(w) => w.write(buf),
            Compressor::Zstd(w) => w.write(buf),
            Compressor::Closed => Ok(buf.len()),
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Compressor::Plain(w) => w.write_all(buf),
            Compressor::Gzip(w) => w.write_all(buf),
            Compressor::Zstd(w) => w.write_all(buf),
            Compressor::Closed => Ok(()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Compressor::Plain(w) => w.flush(),
            Compressor::Gzip(w) => w.flush(),
            Compressor::Zstd(w) => w.flush(),
            Compressor::Closed => Ok(()),
        }
    }
}

type TarBuilder = tar::Builder<BufWriter<Compressor>>;

/// Packs entries with a tar builder over the compressor.
///
/// An append that fails while writing leaves the stream unusable: later
/// calls fail too. Dropped without `finish`, the packer abandons the stream
/// without writing a trailer, so an interrupted archive never looks whole.
struct TarPacker {
    builder: Option<TarBuilder>,
    failed: bool,
}

impl TarPacker {
    fn builder(&mut self) -> io::Result<&mut TarBuilder> {
        if self.failed {
            return Err(io::Error::other(
                "an earlier append failed; the archive cannot be continued",
            ));
        }
        Ok(self.builder.as_mut().expect("builder present until finish"))
    }

    /// Notes a failed write so the packer refuses to go on.
    fn check<T>(&mut self, result: io::Result<T>) -> io::Result<T> {
        if result.is_err() {
            self.failed = true;
        }
        result
    }
}

impl Drop for TarPacker {
    fn drop(&mut self) {
        if let Some(mut builder) = self.builder.take() {
            // Drop the compressor and the output now; the builder's own drop
            // then writes its trailer into nothing.
            *builder.get_mut().get_mut() = Compressor::Closed;
        }
    }
}

/// A header of `kind` carrying the entry's mode and mtime, owned by root.
fn header_for(entry: &Entry, kind: EntryType) -> Header {
    let mut header = Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(entry.mode & 0o7777);
    header.set_mtime(u64::try_from(entry.mtime).unwrap_or(0));
    header.set_uid(0);
    header.set_gid(0);
    header.set_size(0);
    header
}

impl Packer for TarPacker {
    fn append_file(&mut self, entry: &Entry, data: &mut dyn Read) -> io::Result<u64> {
        if entry.kind != EntryKind::File {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("append_file given a {:?} entry: {}", entry.kind, entry.path),
            ));
        }
        let mut header = header_for(entry, EntryType::Regular);
        header.set_size(entry.size);
        let mut content = PaddedReader {
            inner: data.take(entry.size),
            delivered: 0,
            remaining: entry.size,
            exhausted: false,
        };
        let result = self
            .builder()?
            .append_data(&mut header, &entry.path, &mut content);
        self.check(result)?;
        Ok(content.delivered)
    }

    fn append_file_header(&mut self, entry: &Entry) -> io::Result<()> {
        if entry.kind != EntryKind::File {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "append_file_header given a {:?} entry: {}",
                    entry.kind, entry.path
                ),
            ));
        }
        let mut header = header_for(entry, EntryType::Regular);
        header.set_size(entry.size);
        // No content: the builder writes the header (and any long-name
        // entry before it) and, for zero bytes read, no padding.
        let result = self
            .builder()?
            .append_data(&mut header, &entry.path, io::empty());
        self.check(result)
    }

    fn flush(&mut self) -> io::Result<()> {
        let result = self.builder()?.get_mut().flush();
        self.check(result)
    }

    fn append_other(&mut self, entry: &Entry) -> io::Result<()> {
        let link_target = || {
            entry.link.as_deref().ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "{:?} entry without a link target: {}",
                        entry.kind, entry.path
                    ),
                )
            })
        };
        let (kind, target) = match entry.kind {
            EntryKind::Dir => {
                let mut header = header_for(entry, EntryType::Directory);
                let path = format!("{}/", entry.path.trim_end_matches('/'));
                let result = self.builder()?.append_data(&mut header, path, io::empty());
                return self.check(result);
            }
            EntryKind::Symlink => (EntryType::Symlink, link_target()?),
            EntryKind::Hardlink => (EntryType::Link, link_target()?),
            EntryKind::File => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("files go through append_file: {}", entry.path),
                ));
            }
        };
        let mut header = header_for(entry, kind);
        if target.len() <= HEADER_LINK_MAX {
            // Stored byte for byte, without the path normalisation of
            // `set_link_name`.
            header.set_link_name_literal(target)?;
            let result = self
                .builder()?
                .append_data(&mut header, &entry.path, io::empty());
            self.check(result)
        } else {
            // Too long for the header: a GNU long-link record carries it.
            let result = self
                .builder()?
                .append_link(&mut header, &entry.path, target);
            self.check(result)
        }
    }

    fn finish(mut self: Box<Self>) -> io::Result<()> {
        self.builder()?;
        let builder = self.builder.take().expect("builder present until finish");
        let buffered = builder.into_inner()?;
        let compressor = buffered
            .into_inner()
            .map_err(io::IntoInnerError::into_error)?;
        let out = compressor.finish()?;
        drop(out);
        Ok(())
    }
}

/// Delivers exactly `remaining` bytes: the source's, then zeros if it ends
/// early. Counts the bytes the source delivered.
struct PaddedReader<R> {
    inner: R,
    delivered: u64,
    remaining: u64,
    /// The source ended; the rest is zeros.
    exhausted: bool,
}

impl<R: Read> Read for PaddedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        let buf = &mut buf[..want];
        let n = match if self.exhausted {
            0
        } else {
            self.inner.read(buf)?
        } {
            0 => {
                self.exhausted = true;
                buf.fill(0);
                want
            }
            n => {
                self.delivered += n as u64;
                n
            }
        };
        self.remaining -= n as u64;
        Ok(n)
    }
}

/// How unpacking stopped early.
enum Stop {
    /// The visitor's own error, returned as it is.
    Visitor(Error),
    /// An error from the tar parser (or the stream under it).
    Tar(io::Error),
    /// A well-formed header this format does not accept.
    Unsupported(io::Error),
}

/// Parses the tar stream, visits each entry, then reads the stream to its end.
fn unpack_tar(reader: ChannelReader, visit: &mut EntryVisitor<'_>) -> Result<()> {
    let mut archive = tar::Archive::new(reader);
    let outcome = visit_entries(&mut archive, visit);
    let mut reader = archive.into_inner();
    match outcome {
        Ok(()) => {}
        Err(Stop::Visitor(e)) => return Err(e),
        Err(Stop::Unsupported(e)) => return Err(Error::io("unpack", "archive", e)),
        Err(Stop::Tar(e)) => return Err(stream_error(&mut reader, &e)),
    }
    // The parser stops at the first of the two zero blocks that end an
    // archive, or quietly at the end of the data: insist on both blocks.
    let mut second = [0u8; 512];
    if reader.at_end() || reader.read_exact(&mut second).is_err() {
        if let Some(err) = reader.take_error() {
            return Err(err);
        }
        return Err(Error::io(
            "unpack",
            "archive",
            io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "archive is truncated: no end-of-archive marker",
            ),
        ));
    }
    io::copy(&mut reader, &mut io::sink()).map_err(|e| stream_error(&mut reader, &e))?;
    Ok(())
}

/// The error to report for `e` from the parser: the stream's own error when
/// reading or decompressing failed, otherwise a malformed or truncated tar.
fn stream_error(reader: &mut ChannelReader, e: &io::Error) -> Error {
    if let Some(err) = reader.take_error() {
        return err;
    }
    let kind = if reader.at_end() || e.kind() == io::ErrorKind::UnexpectedEof {
        io::ErrorKind::UnexpectedEof
    } else {
        io::ErrorKind::InvalidData
    };
    Error::io(
        "unpack",
        "archive",
        io::Error::new(kind, format!("malformed tar stream: {e}")),
    )
}

fn visit_entries(
    archive: &mut tar::Archive<ChannelReader>,
    visit: &mut EntryVisitor<'_>,
) -> std::result::Result<(), Stop> {
    for item in archive.entries().map_err(Stop::Tar)? {
        let mut tar_entry = item.map_err(Stop::Tar)?;
        let Some(entry) = to_entry(&tar_entry)? else {
            continue;
        };
        let result = if entry.kind == EntryKind::File {
            visit(entry, &mut tar_entry)
        } else {
            visit(entry, &mut io::empty())
        };
        result.map_err(Stop::Visitor)?;
    }
    Ok(())
}

/// The [`Entry`] a tar entry describes; `None` for records that describe no
/// entry (pax global headers).
fn to_entry<R: Read>(tar_entry: &tar::Entry<'_, R>) -> std::result::Result<Option<Entry>, Stop> {
    let header = tar_entry.header();
    let entry_type = header.entry_type();
    let path_bytes = tar_entry.path_bytes();
    let path = std::str::from_utf8(&path_bytes).map_err(|_| {
        Stop::Unsupported(invalid(format!(
            "entry path is not UTF-8: {}",
            String::from_utf8_lossy(&path_bytes)
        )))
    })?;
    let kind = match entry_type {
        EntryType::Regular | EntryType::Continuous => EntryKind::File,
        EntryType::Directory => EntryKind::Dir,
        EntryType::Symlink => EntryKind::Symlink,
        EntryType::Link => EntryKind::Hardlink,
        EntryType::XGlobalHeader => return Ok(None),
        other => {
            return Err(Stop::Unsupported(invalid(format!(
                "unsupported tar entry type {:?} ('{}') for {path}",
                other,
                char::from(other.as_byte()).escape_default()
            ))));
        }
    };
    let path = match path.trim_end_matches('/') {
        "" => path,
        trimmed => trimmed,
    };
    let link = match kind {
        EntryKind::Symlink | EntryKind::Hardlink => {
            let bytes = tar_entry.link_name_bytes().ok_or_else(|| {
                Stop::Unsupported(invalid(format!("link without target: {path}")))
            })?;
            Some(String::from_utf8(bytes.into_owned()).map_err(|_| {
                Stop::Unsupported(invalid(format!("link target of {path} is not UTF-8")))
            })?)
        }
        EntryKind::File | EntryKind::Dir => None,
    };
    let size = if kind == EntryKind::File {
        tar_entry.size()
    } else {
        0
    };
    Ok(Some(Entry {
        path: path.to_owned(),
        kind,
        size,
        mtime: i64::try_from(header.mtime().map_err(Stop::Tar)?).unwrap_or(i64::MAX),
        mtime_nsec: 0,
        mode: header.mode().map_err(Stop::Tar)? & 0o7777,
        link,
        blake3: None,
    }))
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padded_reader_pads_and_counts() {
        let mut r = PaddedReader {
            inner: (&b"abc"[..]).take(5),
            delivered: 0,
            remaining: 5,
            exhausted: false,
        };
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        assert_eq!(out, b"abc\0\0");
        assert_eq!(r.delivered, 3);
    }

    #[test]
    fn level_validation() {
        assert_eq!(
            TarFormat::new(Compression::Gzip, None).unwrap().level(),
            Some(6)
        );
        assert_eq!(
            TarFormat::new(Compression::Zstd, None).unwrap().level(),
            Some(3)
        );
        assert_eq!(
            TarFormat::new(Compression::None, None).unwrap().level(),
            None
        );
        assert!(TarFormat::new(Compression::Zstd, Some(19)).is_ok());
        for (c, l) in [
            (Compression::Gzip, 0),
            (Compression::Gzip, 10),
            (Compression::Zstd, 20),
            (Compression::None, 1),
        ] {
            assert!(matches!(
                TarFormat::new(c, Some(l)),
                Err(Error::InvalidInput(_))
            ));
        }
        assert_eq!(
            TarFormat::new(Compression::Gzip, None)
                .unwrap()
                .with_threads(0)
                .threads(),
            1
        );
    }
}
