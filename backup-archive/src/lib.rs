//! backupkit's archive formats and hashes.
//!
//! - [`TarFormat`] implements [`backup_core::archive::ArchiveFormat`] for
//!   tar, tar.gz and tar.zst: GNU tar headers, gzip compressed on several
//!   threads by [`pargz::ParallelGzEncoder`], multi-threaded zstd, and
//!   unpacking with decompression on a thread of its own.
//! - [`StdHashers`] implements [`backup_core::hash::Hashers`] with SHA-256
//!   and BLAKE3.
//! - [`ZstdChunks`] implements [`backup_core::dedup::ChunkCodec`]: keyed
//!   BLAKE3 chunk ids and one checksummed zstd frame per chunk.

mod chunks;
mod codec;
mod hashers;
pub mod pargz;
mod pipe;
mod tar_format;

pub use chunks::ZstdChunks;
pub use codec::Codec;
pub use hashers::StdHashers;
pub use tar_format::TarFormat;

use std::sync::Arc;

use backup_core::Registry;
use backup_core::archive::ArchiveFormat;

/// Registers the tar formats, the stream codecs, the standard hashers and
/// the chunk codec of deduplicated repositories.
pub fn register(registry: &mut Registry) {
    registry.set_formats(|compression, level| {
        Ok(Box::new(TarFormat::new(compression, level)?) as Box<dyn ArchiveFormat>)
    });
    registry.set_codecs(|compression, level| {
        Ok(Box::new(Codec::new(compression, level)?) as Box<dyn backup_core::archive::StreamCodec>)
    });
    registry.set_hashers(Arc::new(StdHashers));
    registry.set_chunk_codec(Arc::new(ZstdChunks));
}
