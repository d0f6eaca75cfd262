//! A small command-line harness for measuring the codecs against `pigz`,
//! `zstd` and `gzip`:
//!
//! ```text
//! archive_tool gz LEVEL THREADS   < in > out.gz    # ParallelGzEncoder
//! archive_tool zst LEVEL THREADS  < in > out.zst   # zstd, multi-threaded
//! archive_tool gz-single LEVEL    < in > out.gz    # flate2 GzEncoder, one thread
//! archive_tool unpack gzip|zstd|none < archive     # TarFormat::unpack, content read and dropped
//! ```

use std::io::{self, Read, Write};

use backup_archive::TarFormat;
use backup_archive::pargz::ParallelGzEncoder;
use backup_core::archive::{ArchiveFormat, Compression};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, default: &str| args.get(i).cloned().unwrap_or_else(|| default.to_owned());
    let out = io::BufWriter::with_capacity(1 << 20, io::stdout().lock());
    match arg(0, "").as_str() {
        "gz" => {
            let mut enc = ParallelGzEncoder::new(out, arg(1, "6").parse()?, arg(2, "2").parse()?)?;
            io::copy(&mut io::stdin().lock(), &mut enc)?;
            enc.finish()?.flush()?;
        }
        "zst" => {
            let mut enc = zstd::stream::write::Encoder::new(out, arg(1, "3").parse()?)?;
            enc.multithread(arg(2, "2").parse()?)?;
            io::copy(&mut io::stdin().lock(), &mut enc)?;
            enc.finish()?.flush()?;
        }
        "gz-single" => {
            let level = flate2::Compression::new(arg(1, "6").parse()?);
            let mut enc = flate2::write::GzEncoder::new(out, level);
            io::copy(&mut io::stdin().lock(), &mut enc)?;
            enc.finish()?.flush()?;
        }
        "unpack" => {
            let format = TarFormat::new(arg(1, "gzip").parse::<Compression>()?, None)?;
            let (mut entries, mut bytes) = (0u64, 0u64);
            format.unpack(Box::new(io::stdin()), &mut |_, r: &mut dyn Read| {
                entries += 1;
                bytes += io::copy(r, &mut io::sink())
                    .map_err(|e| backup_core::Error::io("read", "entry", e))?;
                Ok(())
            })?;
            eprintln!("{entries} entries, {bytes} content bytes");
        }
        _ => return Err(
            "usage: archive_tool gz|zst LEVEL THREADS | gz-single LEVEL | unpack gzip|zstd|none"
                .into(),
        ),
    }
    Ok(())
}
