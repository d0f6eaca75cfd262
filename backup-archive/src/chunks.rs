//! Chunk hashing and compression for deduplicated repositories: keyed
//! BLAKE3 ids and one zstd frame per chunk, with the frame's content
//! checksum and size recorded.

use std::io;

use backup_core::dedup::{ChunkCodec, ChunkId};

/// The chunk codec backupkit registers.
#[derive(Debug, Default, Clone, Copy)]
pub struct ZstdChunks;

fn invalid(why: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why)
}

impl ChunkCodec for ZstdChunks {
    fn chunk_id(&self, key: &[u8; 32], data: &[u8]) -> ChunkId {
        ChunkId(*blake3::keyed_hash(key, data).as_bytes())
    }

    fn compress(&self, data: &[u8], level: i32, out: &mut Vec<u8>) -> io::Result<()> {
        let mut c = zstd::bulk::Compressor::new(level)?;
        c.set_parameter(zstd::zstd_safe::CParameter::ChecksumFlag(true))?;
        c.set_parameter(zstd::zstd_safe::CParameter::ContentSizeFlag(true))?;
        let start = out.len();
        out.reserve(zstd::zstd_safe::compress_bound(data.len()));
        let mut cursor = io::Cursor::new(&mut *out);
        cursor.set_position(start as u64);
        let n = c.compress_to_buffer(data, &mut cursor)?;
        debug_assert_eq!(out.len(), start + n);
        Ok(())
    }

    fn decompress(&self, frame: &[u8], raw_len: usize, out: &mut Vec<u8>) -> io::Result<()> {
        // The frame must say how long its content is, and say `raw_len`:
        // a damaged length is refused before anything is allocated.
        match zstd::zstd_safe::get_frame_content_size(frame) {
            Ok(Some(n)) if n == raw_len as u64 => {}
            Ok(Some(n)) => {
                return Err(invalid(format!(
                    "the frame holds {n} bytes where the record says {raw_len}"
                )));
            }
            _ => return Err(invalid("not a zstd frame with a content size".into())),
        }
        let start = out.len();
        out.reserve(raw_len);
        let mut cursor = io::Cursor::new(&mut *out);
        cursor.set_position(start as u64);
        let mut d = zstd::bulk::Decompressor::new()?;
        let n = d
            .decompress_to_buffer(frame, &mut cursor)
            .map_err(|e| invalid(format!("zstd: {e}")))?;
        if n != raw_len {
            out.truncate(start);
            return Err(invalid(format!(
                "the frame gave {n} bytes where the record says {raw_len}"
            )));
        }
        Ok(())
    }

    fn derive_key(&self, context: &str, key: &[u8; 32]) -> [u8; 32] {
        blake3::derive_key(context, key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StdHashers;
    use backup_core::dedup::index::{self, PackIndex};
    use backup_core::dedup::pack::{self, HEADER_LEN, PackBuilder};
    use backup_core::hash::Hashers;

    const KEY: [u8; 32] = [0x5a; 32];

    fn csv(rows: usize, salt: u64) -> Vec<u8> {
        use std::fmt::Write;
        let mut s = String::new();
        for i in 0..rows {
            let _ = writeln!(s, "{i},{},{}", (i as u64 * 7 + salt) % 1000, i % 13);
        }
        s.into_bytes()
    }

    #[test]
    fn ids_are_keyed_blake3() {
        let id = ZstdChunks.chunk_id(&KEY, b"abc");
        assert_eq!(id.0, *blake3::keyed_hash(&KEY, b"abc").as_bytes());
        assert_ne!(
            id,
            ZstdChunks.chunk_id(&[0x5b; 32], b"abc"),
            "the key matters"
        );
        assert_ne!(
            id.0,
            *blake3::hash(b"abc").as_bytes(),
            "not the unkeyed hash"
        );
        assert_eq!(ChunkId::from_hex(&id.to_hex()).unwrap(), id);
        assert!(ChunkId::from_hex("zz").is_err());
        let sub = ZstdChunks.derive_key("backupkit test context", &KEY);
        assert_eq!(sub, blake3::derive_key("backupkit test context", &KEY));
        assert_ne!(sub, ZstdChunks.derive_key("another context", &KEY));
    }

    #[test]
    fn frames_round_trip_and_append() {
        let data = csv(20_000, 1);
        let mut out = b"kept".to_vec();
        ZstdChunks.compress(&data, 3, &mut out).unwrap();
        assert_eq!(&out[..4], b"kept", "compress appends");
        assert!(
            out.len() < data.len() / 2,
            "{} bytes from {}",
            out.len(),
            data.len()
        );
        let frame = &out[4..];
        let mut back = b"x".to_vec();
        ZstdChunks.decompress(frame, data.len(), &mut back).unwrap();
        assert_eq!(&back[1..], &data[..]);
        // The frame carries its checksum: `zstd -t` style damage is found.
        let mut bad = frame.to_vec();
        let mid = bad.len() / 2;
        bad[mid] ^= 0x10;
        assert!(
            ZstdChunks
                .decompress(&bad, data.len(), &mut Vec::new())
                .is_err()
        );
        let last = bad.len() - 1;
        let mut bad = frame.to_vec();
        bad[last] ^= 1;
        assert!(
            ZstdChunks
                .decompress(&bad, data.len(), &mut Vec::new())
                .is_err()
        );
        // A wrong length is refused before decompressing.
        let e = ZstdChunks
            .decompress(frame, data.len() + 1, &mut Vec::new())
            .unwrap_err();
        assert!(e.to_string().contains("record says"), "{e}");
    }

    #[test]
    fn packs_scan_and_open_records() {
        let chunks: Vec<Vec<u8>> = (0..5).map(|i| csv(3000 + i * 500, i as u64)).collect();
        let mut b = PackBuilder::new(std::sync::Arc::new(ZstdChunks), KEY);
        let mut make_pack = || {
            for c in &chunks {
                b.add(&ZstdChunks, ZstdChunks.chunk_id(&KEY, c), c, 3)
                    .unwrap();
            }
            let built = b.finish(&StdHashers);
            assert!(b.is_empty());
            built
        };
        let built = make_pack();
        // The same chunks again make a pack of another name (its salt).
        let again = make_pack();
        assert_eq!(again.entries.len(), built.entries.len());
        assert_ne!(again.id, built.id);
        let mut h = StdHashers.sha256();
        h.update(&built.bytes);
        assert_eq!(built.id, h.finish_hex(), "packs are named by their SHA-256");
        assert_eq!(
            pack::pack_key(&built.id),
            format!("packs/{}/{}", &built.id[..2], built.id)
        );
        // A forward scan finds the salt record, then what the builder
        // recorded; the salt is a chunk of this key no index lists.
        let scanned = pack::scan(&built.bytes).unwrap();
        assert_eq!(scanned[1..], built.entries[..]);
        let salt = scanned[0];
        assert_eq!(salt.offset, 0);
        let plain = pack::open_record(
            &ZstdChunks,
            &KEY,
            &salt,
            &built.bytes[..HEADER_LEN + salt.stored_len as usize],
        )
        .unwrap();
        assert!(plain.starts_with(pack::SALT_LABEL), "{plain:?}");
        assert_eq!(plain.len(), pack::SALT_LABEL.len() + 16);
        for (e, c) in built.entries.iter().zip(&chunks) {
            let start = e.offset as usize;
            let record = &built.bytes[start..start + HEADER_LEN + e.stored_len as usize];
            assert_eq!(&pack::open_record(&ZstdChunks, &KEY, e, record).unwrap(), c);
        }
        // Damage anywhere in a record is found, and named.
        let e = built.entries[2];
        let start = e.offset as usize;
        let end = start + HEADER_LEN + e.stored_len as usize;
        for at in [start, start + 5, start + 9, start + 41, start + 49, end - 1] {
            let mut bytes = built.bytes.clone();
            bytes[at] ^= 0x01;
            let got = pack::open_record(&ZstdChunks, &KEY, &e, &bytes[start..end]);
            assert!(
                got.is_err(),
                "a flip at byte {} of the record was not found",
                at - start
            );
        }
        // With the wrong key, the id does not match.
        let record = &built.bytes[start..end];
        let err = pack::open_record(&ZstdChunks, &[0; 32], &e, record).unwrap_err();
        assert!(err.contains("does not match its id"), "{err}");
        // A truncated pack: the scan says where.
        let err = pack::scan(&built.bytes[..built.bytes.len() - 3]).unwrap_err();
        assert!(err.contains("past the end"), "{err}");
    }

    #[test]
    fn index_fragments_round_trip_and_refuse_damage() {
        let mut b = PackBuilder::new(std::sync::Arc::new(ZstdChunks), KEY);
        for i in 0..3 {
            let c = csv(1000, i);
            b.add(&ZstdChunks, ZstdChunks.chunk_id(&KEY, &c), &c, 1)
                .unwrap();
        }
        let built = b.finish(&StdHashers);
        let packs = vec![
            PackIndex {
                pack: ChunkId::from_hex(&built.id).unwrap(),
                entries: built.entries.clone(),
            },
            PackIndex {
                pack: ChunkId([7; 32]),
                entries: Vec::new(),
            },
        ];
        let bytes = index::encode(&packs);
        assert_eq!(bytes.len(), 8 + 2 * 36 + 3 * index::ENTRY_LEN);
        assert_eq!(index::decode(&bytes).unwrap(), packs);
        assert!(index::decode(&bytes[..bytes.len() - 1]).is_err());
        let mut bad = bytes.clone();
        bad[0] = b'x';
        assert!(index::decode(&bad).is_err());
        // A count that claims more than is there.
        let mut bad = bytes.clone();
        bad[8 + 32] = 0xff;
        let err = index::decode(&bad).unwrap_err();
        assert!(err.contains("more than the fragment holds"), "{err}");
        // Overlapping records.
        let mut bad = bytes;
        let second_offset = 8 + 36 + index::ENTRY_LEN + 32;
        bad[second_offset..second_offset + 4].copy_from_slice(&0u32.to_le_bytes());
        assert!(index::decode(&bad).unwrap_err().contains("overlap"));
    }
}
