//! Single compressed streams (a database dump as `results.db.gz`): gzip
//! compressed on every core like the archives, zstd multi-threaded, or
//! stored as it is.

use std::io::{self, BufReader, Read, Write};

use backup_core::archive::{Compression, Encoder, StreamCodec};

use crate::pargz::ParallelGzEncoder;

/// A [`StreamCodec`] for one compression and level.
#[derive(Debug, Clone, Copy)]
pub struct Codec {
    compression: Compression,
    level: Option<i32>,
    threads: usize,
}

impl Codec {
    /// `level` `None` is the compression's default; a level out of range is
    /// `InvalidInput`.
    pub fn new(compression: Compression, level: Option<i32>) -> backup_core::Result<Self> {
        let level = crate::tar_format::checked_level(compression, level)?;
        let threads = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        Ok(Self {
            compression,
            level,
            threads,
        })
    }
}

impl StreamCodec for Codec {
    fn compression(&self) -> Compression {
        self.compression
    }

    fn level(&self) -> Option<i32> {
        self.level
    }

    fn encoder(&self, out: Box<dyn Write + Send>) -> io::Result<Box<dyn Encoder>> {
        Ok(match self.compression {
            Compression::None => Box::new(Plain(out)),
            Compression::Gzip => Box::new(ParallelGzEncoder::new(
                out,
                self.level.unwrap_or(6),
                self.threads,
            )?),
            Compression::Zstd => Box::new(Zstd(crate::tar_format::zstd_encoder(
                out,
                self.level.unwrap_or(3),
                self.threads,
            )?)),
        })
    }

    fn decoder(&self, input: Box<dyn Read + Send>) -> io::Result<Box<dyn Read + Send>> {
        Ok(match self.compression {
            Compression::None => input,
            Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(
                BufReader::with_capacity(256 * 1024, input),
            )),
            Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(input)?),
        })
    }
}

struct Plain(Box<dyn Write + Send>);

impl Write for Plain {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl Encoder for Plain {
    fn finish(mut self: Box<Self>) -> io::Result<()> {
        self.0.flush()
    }
}

impl Encoder for ParallelGzEncoder<Box<dyn Write + Send>> {
    fn finish(self: Box<Self>) -> io::Result<()> {
        let mut out = ParallelGzEncoder::finish(*self)?;
        out.flush()
    }
}

struct Zstd(zstd::stream::write::Encoder<'static, Box<dyn Write + Send>>);

impl Write for Zstd {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl Encoder for Zstd {
    fn finish(self: Box<Self>) -> io::Result<()> {
        let mut out = self.0.finish()?;
        out.flush()
    }
}
