//! Pack files: many chunks in one stored object.
//!
//! A pack is a plain concatenation of self-describing records, with no
//! header or footer, so that a forward scan finds every chunk in it even
//! when every index is lost. Each record is
//!
//! ```text
//! offset size  field
//!      0    4  magic "bkCK"
//!      4    1  format version: 1
//!      5    1  payload kind: 1 = one zstd frame (content checksum on)
//!      6    2  reserved, zero
//!      8   32  chunk id: BLAKE3 of the plaintext keyed with the dedup key
//!     40    4  plaintext length, little-endian
//!     44    4  payload length, little-endian
//!     48    -  payload
//! ```
//!
//! A pack is stored under `packs/XX/SHA256`, named by the SHA-256 of all its
//! bytes (`sha256sum` verifies it), and never changes once written. A later
//! payload kind (a chunk encrypted on its own) gets a new number; kind 1
//! keeps its meaning.
//!
//! Every pack begins with a **salt record**: an ordinary record of a chunk
//! of random bytes that no index lists and no snapshot refers to. It makes
//! every pack's name new. Without it, a backup that stores again the chunks
//! of a pack a prune has marked (it must not use marked chunks) can build
//! a pack of the very same bytes, and so the same name, as the marked one,
//! and the sweep that deletes the marked pack would delete the new one too.

use super::codec::{ChunkCodec, ChunkId};
use crate::hash::Hashers;

/// Bytes before a record's payload.
pub const HEADER_LEN: usize = 48;
/// Marks the start of a record.
pub const MAGIC: &[u8; 4] = b"bkCK";
/// The record format version this code writes and reads.
pub const VERSION: u8 = 1;
/// Payload kind: one zstd frame.
pub const KIND_ZSTD: u8 = 1;
/// Packs are closed once they hold this much (the last may be smaller).
pub const PACK_TARGET: usize = 16 << 20;
/// No chunk's plaintext is longer (the chunker's maximum is far below).
pub const MAX_CHUNK: usize = 64 << 20;

/// Where one chunk's record lies in its pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackEntry {
    pub id: ChunkId,
    /// Offset of the record (its header) in the pack.
    pub offset: u32,
    /// Payload length (the record is `HEADER_LEN` longer).
    pub stored_len: u32,
    /// Plaintext length.
    pub raw_len: u32,
}

impl PackEntry {
    /// The record's length in the pack, header included.
    #[must_use]
    pub fn record_len(&self) -> u64 {
        HEADER_LEN as u64 + u64::from(self.stored_len)
    }
}

/// The key a pack is stored under.
#[must_use]
pub fn pack_key(sha256_hex: &str) -> String {
    format!(
        "packs/{}/{sha256_hex}",
        &sha256_hex[..2.min(sha256_hex.len())]
    )
}

/// A record's fixed fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub kind: u8,
    pub id: ChunkId,
    pub raw_len: u32,
    pub stored_len: u32,
}

impl Header {
    /// The 48 header bytes.
    #[must_use]
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[..4].copy_from_slice(MAGIC);
        h[4] = VERSION;
        h[5] = self.kind;
        h[8..40].copy_from_slice(&self.id.0);
        h[40..44].copy_from_slice(&self.raw_len.to_le_bytes());
        h[44..48].copy_from_slice(&self.stored_len.to_le_bytes());
        h
    }

    /// Reads a header, refusing anything this version does not write.
    ///
    /// # Errors
    ///
    /// A message naming what is wrong (for `check` to report).
    pub fn decode(b: &[u8]) -> Result<Self, String> {
        if b.len() < HEADER_LEN {
            return Err(format!("a record header is cut short ({} bytes)", b.len()));
        }
        if &b[..4] != MAGIC {
            return Err("no record starts here (bad magic)".into());
        }
        if b[4] != VERSION {
            return Err(format!("record format version {} is not 1", b[4]));
        }
        if b[5] != KIND_ZSTD {
            return Err(format!("unknown payload kind {}", b[5]));
        }
        if b[6..8] != [0, 0] {
            return Err("reserved header bytes are not zero".into());
        }
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes"));
        let header = Self {
            kind: b[5],
            id: ChunkId(b[8..40].try_into().expect("32 bytes")),
            raw_len: u32_at(40),
            stored_len: u32_at(44),
        };
        if header.raw_len as usize > MAX_CHUNK {
            return Err(format!(
                "a chunk of {} bytes is over the limit",
                header.raw_len
            ));
        }
        Ok(header)
    }
}

/// Builds one pack in memory (bounded by [`PACK_TARGET`] plus one chunk).
#[derive(Debug)]
pub struct PackBuilder {
    buf: Vec<u8>,
    entries: Vec<PackEntry>,
    salt: Salt,
}

/// What the salt record of each pack is made with.
struct Salt {
    codec: std::sync::Arc<dyn ChunkCodec>,
    key: [u8; 32],
}

impl std::fmt::Debug for Salt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Salt").finish_non_exhaustive() // never the key
    }
}

/// The salt chunk's plaintext starts with this (then 16 random bytes).
pub const SALT_LABEL: &[u8] = b"backupkit pack salt\n";

/// A finished pack, ready to store.
#[derive(Debug)]
pub struct FinishedPack {
    /// SHA-256 of `bytes`, lower-case hex: the pack's name.
    pub id: String,
    pub bytes: Vec<u8>,
    pub entries: Vec<PackEntry>,
}

impl PackBuilder {
    /// A builder whose packs' salt records are chunks of `codec` under the
    /// dedup key `key`, so that they check like any record.
    #[must_use]
    pub fn new(codec: std::sync::Arc<dyn ChunkCodec>, key: [u8; 32]) -> Self {
        Self {
            buf: Vec::new(),
            entries: Vec::new(),
            salt: Salt { codec, key },
        }
    }

    /// Starts a pack with its salt record.
    fn start(&mut self) -> std::io::Result<()> {
        let mut plain = SALT_LABEL.to_vec();
        plain.extend_from_slice(&crate::snapshot::random_u64().to_le_bytes());
        plain.extend_from_slice(&crate::snapshot::random_u64().to_le_bytes());
        let id = self.salt.codec.chunk_id(&self.salt.key, &plain);
        let mut frame = Vec::new();
        self.salt.codec.compress(&plain, 1, &mut frame)?;
        let header = Header {
            kind: KIND_ZSTD,
            id,
            raw_len: u32::try_from(plain.len()).map_err(|_| too_big())?,
            stored_len: u32::try_from(frame.len()).map_err(|_| too_big())?,
        };
        // Room for a whole pack at once: growing by doubling would copy it
        // again and again, and leave it twice as large as it is.
        self.buf.reserve(PACK_TARGET + PACK_TARGET / 4);
        self.buf.extend_from_slice(&header.encode());
        self.buf.extend_from_slice(&frame);
        Ok(())
    }

    /// Compresses `data` into a new record for chunk `id`.
    ///
    /// # Errors
    ///
    /// The compressor's error, or a chunk over [`MAX_CHUNK`].
    pub fn add(
        &mut self,
        codec: &dyn ChunkCodec,
        id: ChunkId,
        data: &[u8],
        level: i32,
    ) -> std::io::Result<()> {
        if data.len() > MAX_CHUNK {
            return Err(too_big());
        }
        let mut frame = Vec::new();
        codec.compress(data, level, &mut frame)?;
        self.add_compressed(id, data.len(), &frame)
    }

    /// Adds a record for chunk `id`, whose `raw_len` bytes of plaintext
    /// `frame` holds compressed.
    ///
    /// # Errors
    ///
    /// A chunk over [`MAX_CHUNK`], or a pack over 4 GiB.
    pub fn add_compressed(
        &mut self,
        id: ChunkId,
        raw_len: usize,
        frame: &[u8],
    ) -> std::io::Result<()> {
        if raw_len > MAX_CHUNK {
            return Err(too_big());
        }
        if self.buf.is_empty() {
            self.start()?;
        }
        let entry = PackEntry {
            id,
            offset: u32::try_from(self.buf.len()).map_err(|_| too_big())?,
            stored_len: u32::try_from(frame.len()).map_err(|_| too_big())?,
            raw_len: u32::try_from(raw_len).map_err(|_| too_big())?,
        };
        let header = Header {
            kind: KIND_ZSTD,
            id,
            raw_len: entry.raw_len,
            stored_len: entry.stored_len,
        };
        self.buf.extend_from_slice(&header.encode());
        self.buf.extend_from_slice(frame);
        self.entries.push(entry);
        Ok(())
    }

    /// Whether the pack should be closed.
    #[must_use]
    pub fn is_full(&self) -> bool {
        self.buf.len() >= PACK_TARGET
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Names the pack and hands it over; the builder is empty again.
    pub fn finish(&mut self, hashers: &dyn Hashers) -> FinishedPack {
        let bytes = std::mem::take(&mut self.buf);
        let entries = std::mem::take(&mut self.entries);
        let mut h = hashers.sha256();
        h.update(&bytes);
        FinishedPack {
            id: h.finish_hex(),
            bytes,
            entries,
        }
    }
}

fn too_big() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidInput, "chunk too large")
}

/// Lists the records of a whole pack by scanning it from the start.
///
/// # Errors
///
/// Where the scan stopped and why: a damaged header, or a record that runs
/// past the end.
pub fn scan(pack: &[u8]) -> Result<Vec<PackEntry>, String> {
    let mut out = Vec::new();
    let mut at = 0usize;
    while at < pack.len() {
        let h = Header::decode(&pack[at..]).map_err(|e| format!("at byte {at}: {e}"))?;
        let end = at + HEADER_LEN + h.stored_len as usize;
        if end > pack.len() {
            return Err(format!(
                "at byte {at}: the record runs {} bytes past the end",
                end - pack.len()
            ));
        }
        out.push(PackEntry {
            id: h.id,
            offset: u32::try_from(at).map_err(|_| "pack over 4 GiB".to_owned())?,
            stored_len: h.stored_len,
            raw_len: h.raw_len,
        });
        at = end;
    }
    Ok(out)
}

/// Checks a record (as read from its pack) against the entry that points at
/// it and returns the chunk's plaintext: the header must name the same
/// chunk and lengths, the zstd frame's checksum must hold, and the
/// plaintext's keyed hash must be the chunk id.
///
/// # Errors
///
/// A message naming the first thing that is wrong.
pub fn open_record(
    codec: &dyn ChunkCodec,
    key: &[u8; 32],
    entry: &PackEntry,
    record: &[u8],
) -> Result<Vec<u8>, String> {
    let h = Header::decode(record)?;
    if h.id != entry.id || h.stored_len != entry.stored_len || h.raw_len != entry.raw_len {
        return Err(format!(
            "the record at byte {} is not chunk {} as the index says",
            entry.offset, entry.id
        ));
    }
    let payload = &record[HEADER_LEN..];
    if payload.len() != h.stored_len as usize {
        return Err(format!(
            "chunk {} is cut short ({} of {} bytes)",
            entry.id,
            payload.len(),
            h.stored_len
        ));
    }
    let mut out = Vec::with_capacity(h.raw_len as usize);
    codec
        .decompress(payload, h.raw_len as usize, &mut out)
        .map_err(|e| format!("chunk {} does not decompress: {e}", entry.id))?;
    if codec.chunk_id(key, &out) != entry.id {
        return Err(format!("chunk {} does not match its id", entry.id));
    }
    Ok(out)
}
