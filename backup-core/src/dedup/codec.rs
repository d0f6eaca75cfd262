//! The contract between the deduplication engine and the code that hashes
//! and compresses chunks (`backup-archive` implements it; backup-core holds
//! no compression code).

use std::fmt;
use std::io;

/// A chunk's id: the BLAKE3 hash of its plaintext keyed with the
/// repository's dedup key, so that an id reveals nothing about content to
/// whoever lacks the key (and stays the same when chunks are later
/// encrypted).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ChunkId(pub [u8; 32]);

impl ChunkId {
    /// Lower-case hex, as ids appear in chunk lists.
    #[must_use]
    pub fn to_hex(&self) -> String {
        use fmt::Write;
        self.0.iter().fold(String::with_capacity(64), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
    }

    /// Parses 64 hex digits.
    ///
    /// # Errors
    ///
    /// [`crate::Error::InvalidInput`] if `hex` is not 64 hex digits.
    pub fn from_hex(hex: &str) -> crate::Result<Self> {
        let bad = || crate::Error::InvalidInput(format!("not a chunk id: {hex:?}"));
        if hex.len() != 64 || !hex.is_ascii() {
            return Err(bad());
        }
        let mut out = [0u8; 32];
        for (i, b) in out.iter_mut().enumerate() {
            *b = u8::from_str_radix(&hex[i * 2..i * 2 + 2], 16).map_err(|_| bad())?;
        }
        Ok(Self(out))
    }
}

impl fmt::Debug for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChunkId({})", &self.to_hex()[..16])
    }
}

impl fmt::Display for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// Hashes and compresses chunks.
pub trait ChunkCodec: fmt::Debug + Send + Sync {
    /// `BLAKE3(key = dedup key, data)`.
    fn chunk_id(&self, key: &[u8; 32], data: &[u8]) -> ChunkId;

    /// Appends `data` to `out` as one zstd frame at `level`, with the
    /// frame's content checksum and content size recorded.
    ///
    /// # Errors
    ///
    /// The compressor's error.
    fn compress(&self, data: &[u8], level: i32, out: &mut Vec<u8>) -> io::Result<()>;

    /// Appends the content of the zstd frame `frame` to `out`, checking the
    /// frame's checksum, and refuses a frame that holds anything but
    /// `raw_len` bytes (so a damaged length cannot make it allocate more).
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::InvalidData`] for a damaged frame or a wrong length.
    fn decompress(&self, frame: &[u8], raw_len: usize, out: &mut Vec<u8>) -> io::Result<()>;

    /// `BLAKE3::derive_key(context, key)`: a sub-key for one purpose (the
    /// chunker's seed), so that no two purposes share key material.
    fn derive_key(&self, context: &str, key: &[u8; 32]) -> [u8; 32];
}
