//! Index fragments: which chunks each pack holds, so that a backup can ask
//! "is this chunk stored?" and a restore "where?" without reading packs.
//!
//! A fragment is written once, by the backup that wrote its packs, and
//! stored under `index/SHA256` (named by the SHA-256 of its bytes). It only
//! ever repeats what the packs' own record headers say, so a lost or
//! damaged fragment can be rebuilt by scanning packs.
//!
//! ```text
//! "bkIX" | version 1 | 3 reserved zero bytes
//! then, per pack:
//!   pack SHA-256 (32 bytes) | entry count (u32 LE)
//!   per entry: chunk id (32) | record offset | payload length | plaintext length (u32 LE each)
//! ```

use super::codec::ChunkId;
use super::pack::PackEntry;

pub const MAGIC: &[u8; 4] = b"bkIX";
pub const VERSION: u8 = 1;
/// Bytes per entry.
pub const ENTRY_LEN: usize = 44;
/// A fragment holds at most this many entries (about 17 MiB), so reading
/// one is bounded.
pub const MAX_ENTRIES: usize = 400_000;

/// The chunks of one pack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackIndex {
    /// The pack's SHA-256.
    pub pack: ChunkId,
    pub entries: Vec<PackEntry>,
}

/// Encodes a fragment.
#[must_use]
pub fn encode(packs: &[PackIndex]) -> Vec<u8> {
    let n: usize = packs.iter().map(|p| 36 + p.entries.len() * ENTRY_LEN).sum();
    let mut out = Vec::with_capacity(8 + n);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[VERSION, 0, 0, 0]);
    for p in packs {
        out.extend_from_slice(&p.pack.0);
        let count = u32::try_from(p.entries.len()).expect("a pack holds fewer than 2^32 chunks");
        out.extend_from_slice(&count.to_le_bytes());
        for e in &p.entries {
            out.extend_from_slice(&e.id.0);
            out.extend_from_slice(&e.offset.to_le_bytes());
            out.extend_from_slice(&e.stored_len.to_le_bytes());
            out.extend_from_slice(&e.raw_len.to_le_bytes());
        }
    }
    out
}

/// Decodes a fragment, refusing anything malformed.
///
/// # Errors
///
/// A message naming what is wrong and where.
pub fn decode(b: &[u8]) -> Result<Vec<PackIndex>, String> {
    if b.len() < 8 || &b[..4] != MAGIC {
        return Err("not an index fragment (bad magic)".into());
    }
    if b[4] != VERSION || b[5..8] != [0, 0, 0] {
        return Err(format!("index format version {} is not 1", b[4]));
    }
    let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes"));
    let mut at = 8;
    let mut out = Vec::new();
    let mut total = 0usize;
    while at < b.len() {
        if b.len() - at < 36 {
            return Err(format!("at byte {at}: a pack entry is cut short"));
        }
        let pack = ChunkId(b[at..at + 32].try_into().expect("32 bytes"));
        let count = u32_at(at + 32) as usize;
        at += 36;
        total += count;
        if total > MAX_ENTRIES || count * ENTRY_LEN > b.len() - at {
            return Err(format!(
                "at byte {}: pack {pack} claims {count} chunks, more than the fragment holds",
                at - 36
            ));
        }
        let mut entries = Vec::with_capacity(count);
        let mut end_of_last = 0u64;
        for _ in 0..count {
            let e = PackEntry {
                id: ChunkId(b[at..at + 32].try_into().expect("32 bytes")),
                offset: u32_at(at + 32),
                stored_len: u32_at(at + 36),
                raw_len: u32_at(at + 40),
            };
            if u64::from(e.offset) < end_of_last {
                return Err(format!("at byte {at}: records of pack {pack} overlap"));
            }
            end_of_last = u64::from(e.offset) + e.record_len();
            entries.push(e);
            at += ENTRY_LEN;
        }
        out.push(PackIndex { pack, entries });
    }
    Ok(out)
}
