//! The hashes the repository format uses: SHA-256 for stored objects and
//! BLAKE3 for file contents.

use backup_core::hash::{Hashers, StreamHasher};
use sha2::Digest;

/// Makes SHA-256 (the `sha2` crate) and BLAKE3 (the `blake3` crate) hashers.
/// Digests come out as lower-case hex, as `sha256sum` and `b3sum` print them.
#[derive(Debug, Default, Clone, Copy)]
pub struct StdHashers;

impl Hashers for StdHashers {
    fn sha256(&self) -> Box<dyn StreamHasher> {
        Box::new(Sha256Hasher(sha2::Sha256::new()))
    }

    fn blake3(&self) -> Box<dyn StreamHasher> {
        Box::new(Blake3Hasher(blake3::Hasher::new()))
    }
}

struct Sha256Hasher(sha2::Sha256);

impl StreamHasher for Sha256Hasher {
    fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }

    fn finish_hex(self: Box<Self>) -> String {
        format!("{:x}", self.0.finalize())
    }
}

struct Blake3Hasher(blake3::Hasher);

impl StreamHasher for Blake3Hasher {
    fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }

    fn finish_hex(self: Box<Self>) -> String {
        self.0.finalize().to_hex().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(mut h: Box<dyn StreamHasher>, data: &[u8]) -> String {
        h.update(data);
        h.finish_hex()
    }

    #[test]
    fn known_digests() {
        assert_eq!(
            hex(StdHashers.sha256(), b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            hex(StdHashers.blake3(), b""),
            "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
        );
    }
}
