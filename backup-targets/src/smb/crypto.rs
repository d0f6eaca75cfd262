//! SMB2/3 message protection ([MS-SMB2] 3.1.4): signing with HMAC-SHA256
//! (2.x) or AES-128-CMAC (3.x), the SP800-108 key derivation, SMB 3.1.1's
//! pre-authentication integrity hash, and AES-128-GCM encryption in the
//! transform header.

use std::io;

use aes_gcm::aead::AeadInOut;
use aes_gcm::{Aes128Gcm, Nonce, Tag};
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256, Sha512};

use super::wire::{HEADER_LEN, malformed};

type HmacSha256 = Hmac<Sha256>;

/// How messages of a session are signed.
#[derive(Clone)]
pub(crate) enum Signer {
    /// SMB 2.0.2 and 2.1: HMAC-SHA256 with the session key.
    HmacSha256([u8; 16]),
    /// SMB 3.x: AES-128-CMAC with a derived key.
    AesCmac([u8; 16]),
}

impl Signer {
    /// The 16-byte signature of a message whose signature field is zero.
    fn mac(&self, msg: &[u8]) -> [u8; 16] {
        match self {
            Signer::HmacSha256(key) => {
                let mut mac = <HmacSha256 as KeyInit>::new_from_slice(key).expect("any key length");
                mac.update(msg);
                let full = mac.finalize().into_bytes();
                let mut out = [0; 16];
                out.copy_from_slice(&full[..16]);
                out
            }
            Signer::AesCmac(key) => {
                let mut mac = <cmac::Cmac<aes::Aes128> as KeyInit>::new_from_slice(key)
                    .expect("a 16-byte key");
                mac.update(msg);
                mac.finalize().into_bytes().into()
            }
        }
    }

    /// Signs a message in place (the SIGNED flag must already be set).
    pub fn sign(&self, msg: &mut [u8]) {
        msg[48..64].fill(0);
        let sig = self.mac(msg);
        msg[48..64].copy_from_slice(&sig);
    }

    /// Checks a received message's signature.
    pub fn verify(&self, msg: &mut [u8]) -> io::Result<()> {
        if msg.len() < HEADER_LEN {
            return Err(malformed("message"));
        }
        let mut got = [0; 16];
        got.copy_from_slice(&msg[48..64]);
        msg[48..64].fill(0);
        let want = self.mac(msg);
        msg[48..64].copy_from_slice(&got);
        if got == want {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "an SMB message's signature is wrong: the connection may have been tampered with",
            ))
        }
    }
}

/// SP800-108 in counter mode with HMAC-SHA256, 128 bits out, as SMB 3
/// derives its keys ([MS-SMB2] 3.1.4.2). `label` and `context` include
/// their terminating NUL where the specification's strings do.
pub(crate) fn kdf(key: &[u8; 16], label: &[u8], context: &[u8]) -> [u8; 16] {
    let mut mac = <HmacSha256 as KeyInit>::new_from_slice(key).expect("any key length");
    mac.update(&1u32.to_be_bytes());
    mac.update(label);
    mac.update(&[0]);
    mac.update(context);
    mac.update(&128u32.to_be_bytes());
    let full = mac.finalize().into_bytes();
    let mut out = [0; 16];
    out.copy_from_slice(&full[..16]);
    out
}

/// SMB 3.1.1's pre-authentication integrity hash: SHA-512 chained over
/// the negotiate and session-setup messages.
#[derive(Clone)]
pub(crate) struct Preauth(pub [u8; 64]);

impl Preauth {
    pub fn new() -> Self {
        Preauth([0; 64])
    }
    pub fn update(&mut self, msg: &[u8]) {
        let mut h = Sha512::new();
        h.update(self.0);
        h.update(msg);
        self.0.copy_from_slice(&h.finalize());
    }
}

/// The transform header's protocol id.
pub(crate) const TRANSFORM_ID: &[u8; 4] = b"\xfdSMB";
pub(crate) const TRANSFORM_LEN: usize = 52;

/// AES-128-GCM keys of an encrypted session, and the nonce counter (a
/// nonce is never used twice with one key).
pub(crate) struct Sealer {
    encrypt: Aes128Gcm,
    decrypt: Aes128Gcm,
    session_id: u64,
    nonce: u64,
    nonce_salt: u32,
}

impl Sealer {
    pub fn new(encrypt_key: &[u8; 16], decrypt_key: &[u8; 16], session_id: u64, salt: u32) -> Self {
        Sealer {
            encrypt: Aes128Gcm::new(encrypt_key.into()),
            decrypt: Aes128Gcm::new(decrypt_key.into()),
            session_id,
            nonce: 0,
            nonce_salt: salt,
        }
    }

    /// Wraps a message in a transform header and encrypts it.
    #[cfg(test)]
    pub fn seal(&mut self, msg: &[u8]) -> io::Result<Vec<u8>> {
        let mut out = vec![0u8; TRANSFORM_LEN];
        out.extend_from_slice(msg);
        self.seal_in_place(&mut out)?;
        Ok(out)
    }

    /// Encrypts `frame[TRANSFORM_LEN..]` in place and writes the transform
    /// header into the space before it.
    pub fn seal_in_place(&mut self, frame: &mut [u8]) -> io::Result<()> {
        self.nonce += 1;
        let mut nonce = [0u8; 16];
        nonce[..8].copy_from_slice(&self.nonce.to_le_bytes());
        nonce[8..12].copy_from_slice(&self.nonce_salt.to_le_bytes());
        let (head, body) = frame.split_at_mut(TRANSFORM_LEN);
        let size = u32::try_from(body.len()).map_err(|_| malformed("message size"))?;
        head[..4].copy_from_slice(TRANSFORM_ID);
        head[4..20].fill(0);
        head[20..36].copy_from_slice(&nonce);
        head[36..40].copy_from_slice(&size.to_le_bytes());
        head[40..42].copy_from_slice(&0u16.to_le_bytes());
        head[42..44].copy_from_slice(&1u16.to_le_bytes()); // encrypted
        head[44..52].copy_from_slice(&self.session_id.to_le_bytes());
        let tag = self
            .encrypt
            .encrypt_inout_detached(
                &Nonce::try_from(&nonce[..12]).expect("12 bytes"),
                &head[20..],
                body.into(),
            )
            .map_err(|_| io::Error::other("SMB encryption failed"))?;
        head[4..20].copy_from_slice(&tag);
        Ok(())
    }

    /// Decrypts a transform-wrapped message; a wrong tag is an error.
    pub fn open(&self, mut data: Vec<u8>) -> io::Result<Vec<u8>> {
        if data.len() < TRANSFORM_LEN || &data[..4] != TRANSFORM_ID {
            return Err(malformed("encrypted message"));
        }
        let size = u32::from_le_bytes([data[36], data[37], data[38], data[39]]) as usize;
        if size != data.len() - TRANSFORM_LEN {
            return Err(malformed("encrypted message (size)"));
        }
        let session = u64::from_le_bytes(data[44..52].try_into().expect("8 bytes"));
        if session != self.session_id {
            return Err(malformed("encrypted message (session)"));
        }
        let (head, body) = data.split_at_mut(TRANSFORM_LEN);
        let tag = Tag::try_from(&head[4..20]).expect("16 bytes");
        self.decrypt
            .decrypt_inout_detached(
                &Nonce::try_from(&head[20..32]).expect("12 bytes"),
                &head[20..],
                body.into(),
                &tag,
            )
            .map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    "an encrypted SMB message failed its integrity check",
                )
            })?;
        data.drain(..TRANSFORM_LEN);
        Ok(data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_messages_open_and_tampering_is_found() {
        let key_a = [1u8; 16];
        let key_b = [2u8; 16];
        let mut client = Sealer::new(&key_a, &key_b, 42, 7);
        let server = Sealer::new(&key_b, &key_a, 42, 9);
        let msg = b"\xfeSMB a message of some length, at least a header's worth......".to_vec();
        let sealed = client.seal(&msg).unwrap();
        assert_ne!(&sealed[52..], &msg[..]);
        assert_eq!(server.open(sealed.clone()).unwrap(), msg);
        let mut flipped = sealed.clone();
        flipped[60] ^= 1;
        assert!(server.open(flipped).is_err());
        let mut header = sealed.clone();
        header[40] ^= 1; // the AAD (reserved field)
        assert!(server.open(header).is_err());
        // Two seals of one message differ (the nonce moves on).
        assert_ne!(client.seal(&msg).unwrap(), sealed);
    }

    #[test]
    fn signatures_verify_and_catch_changes() {
        for signer in [Signer::HmacSha256([3; 16]), Signer::AesCmac([4; 16])] {
            let mut msg = vec![0u8; 100];
            msg[..4].copy_from_slice(b"\xfeSMB");
            msg[80] = 9;
            signer.sign(&mut msg);
            signer.verify(&mut msg).unwrap();
            msg[80] = 8;
            assert!(signer.verify(&mut msg).is_err());
        }
    }

    /// AES-CMAC against RFC 4493's example 2 (16 bytes of message).
    #[test]
    fn aes_cmac_matches_rfc_4493() {
        let key = unhex("2b7e151628aed2a6abf7158809cf4f3c");
        let mut mac = <cmac::Cmac<aes::Aes128> as KeyInit>::new_from_slice(&key).unwrap();
        mac.update(&unhex("6bc1bee22e409f96e93d7e117393172a"));
        assert_eq!(
            mac.finalize().into_bytes().as_slice(),
            unhex("070a16b46b4d4144f79bdd9dd04a287c").as_slice()
        );
    }

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }
}
