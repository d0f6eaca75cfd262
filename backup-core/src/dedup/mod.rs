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
pub mod index;
pub mod pack;
pub mod store;

pub use chunker::{Chunker, ChunkerParams, Cutter};
pub use codec::{ChunkCodec, ChunkId};
pub use store::{ChunkCheck, ChunkStore, StreamReader, StreamSummary, StreamWriter};

#[cfg(test)]
mod tests;
