//! Deduplicated repositories: the pieces that do not depend on storage.
//!
//! A deduplicated snapshot is the same tar stream an archive snapshot
//! holds, cut into content-defined chunks ([`chunker`]) so that what an
//! earlier snapshot already stored is stored once. Chunks are named by a
//! keyed hash and compressed one by one ([`codec`]), stored in pack files
//! of self-describing records ([`pack`]), and found through write-once
//! index fragments ([`index`]); [`store`] writes a stream that way and
//! reads it back.

pub mod chunker;
pub mod codec;
pub mod config;
pub mod index;
pub mod list;
pub mod pack;
pub mod prune;
pub mod store;

pub use chunker::{Chunker, ChunkerParams, Cutter};
pub use codec::{ChunkCodec, ChunkId};
pub use config::DedupConfig;
pub use store::{ChunkCheck, ChunkStore, SharedWriter, StreamReader, StreamSummary, StreamWriter};

/// `FORMAT.md`, written into every deduplicated repository: the layout,
/// described well enough to restore without backupkit.
pub const FORMAT_MD: &str = include_str!("repo/FORMAT.md");
/// `restore.py`, written into every deduplicated repository: restores a
/// snapshot's tar stream with Python and `zstandard` alone.
pub const RESTORE_PY: &str = include_str!("repo/restore.py");

#[cfg(test)]
mod tests;
