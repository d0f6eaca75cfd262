//! A deduplicated repository's settings, stored in `backupkit.json` under
//! `dedup` and never changed after `init`.

use serde::{Deserialize, Serialize};

use super::chunker::{ALGORITHM, ChunkerParams, Cutter};
use super::codec::{ChunkCodec, ChunkId};
use crate::{Error, Result};

/// The version of the deduplicated layout (packs, index, chunk lists).
pub const DEDUP_FORMAT: u32 = 1;
/// The context the chunker's seed is derived under.
const SEED_CONTEXT: &str = "backupkit 2026-12 dedup chunker seed v1";

/// Cut-point settings of one kind of data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkerSettings {
    pub algorithm: String,
    pub min_size: usize,
    pub avg_size: usize,
    pub max_size: usize,
    pub level: u32,
}

impl ChunkerSettings {
    fn with_average(avg_size: usize) -> Self {
        Self {
            algorithm: ALGORITHM.to_owned(),
            min_size: avg_size / 4,
            avg_size,
            max_size: avg_size * 4,
            level: 2,
        }
    }
}

/// The `dedup` section of `backupkit.json`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DedupConfig {
    pub format: u32,
    /// File trees (1 MiB average chunks).
    pub chunker: ChunkerSettings,
    /// Database dumps (256 KiB average: a clustered change stores a third
    /// less than at 1 MiB; see the README's measurements).
    pub database_chunker: ChunkerSettings,
    /// zstd level of every chunk.
    pub zstd_level: i32,
    /// The dedup key, hex: chunk ids are BLAKE3 keyed with it. Whoever
    /// holds it can confirm that a repository holds a known chunk; it
    /// decrypts nothing.
    pub key: String,
}

impl std::fmt::Debug for DedupConfig {
    // The key is never shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DedupConfig")
            .field("format", &self.format)
            .field("chunker", &self.chunker)
            .field("database_chunker", &self.database_chunker)
            .field("zstd_level", &self.zstd_level)
            .finish_non_exhaustive()
    }
}

impl DedupConfig {
    /// The settings `init` writes, with a fresh key.
    #[must_use]
    pub fn new(key: [u8; 32]) -> Self {
        Self {
            format: DEDUP_FORMAT,
            chunker: ChunkerSettings::with_average(1 << 20),
            database_chunker: ChunkerSettings::with_average(256 << 10),
            zstd_level: 3,
            key: ChunkId(key).to_hex(),
        }
    }

    /// The key's bytes, after checking every setting.
    ///
    /// # Errors
    ///
    /// [`Error::Unsupported`] for a newer format or another chunker;
    /// [`Error::InvalidInput`] for a damaged key or impossible sizes.
    pub fn key_bytes(&self) -> Result<[u8; 32]> {
        if self.format != DEDUP_FORMAT {
            return Err(Error::Unsupported(format!(
                "deduplicated repository format {} (this backupkit reads {DEDUP_FORMAT}); upgrade backupkit",
                self.format
            )));
        }
        for c in [&self.chunker, &self.database_chunker] {
            if c.algorithm != ALGORITHM {
                return Err(Error::Unsupported(format!(
                    "chunker {:?} (this backupkit has {ALGORITHM:?})",
                    c.algorithm
                )));
            }
        }
        if !(1..=19).contains(&self.zstd_level) {
            return Err(Error::InvalidInput(format!(
                "dedup zstd level {} is not 1 to 19",
                self.zstd_level
            )));
        }
        ChunkId::from_hex(&self.key)
            .map(|k| k.0)
            .map_err(|_| Error::InvalidInput("the dedup key is not 64 hex digits".into()))
    }

    fn cutter(&self, codec: &dyn ChunkCodec, c: &ChunkerSettings) -> Result<Cutter> {
        let seed = codec.derive_key(SEED_CONTEXT, &self.key_bytes()?);
        Cutter::new(&ChunkerParams {
            min_size: c.min_size,
            avg_size: c.avg_size,
            max_size: c.max_size,
            level: c.level,
            seed,
        })
    }

    /// The cutter for file trees.
    ///
    /// # Errors
    ///
    /// As [`Self::key_bytes`], or sizes the chunker refuses.
    pub fn file_cutter(&self, codec: &dyn ChunkCodec) -> Result<Cutter> {
        self.cutter(codec, &self.chunker)
    }

    /// The cutter for database dumps.
    ///
    /// # Errors
    ///
    /// As [`Self::file_cutter`].
    pub fn database_cutter(&self, codec: &dyn ChunkCodec) -> Result<Cutter> {
        self.cutter(codec, &self.database_chunker)
    }
}
