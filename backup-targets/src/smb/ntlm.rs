//! `NTLMv2` authentication ([MS-NLMP]) inside SPNEGO ([RFC 4178]), as SMB2
//! session setup carries it: a NEGOTIATE token, the server's CHALLENGE,
//! and an AUTHENTICATE token computed from the password. The password is
//! only ever hashed here; it is not kept.

use std::io;

use hmac::{Hmac, KeyInit, Mac};
use md5::Md5;

use super::wire::{Reader, Writer, filetime, malformed, utf16};

type HmacMd5 = Hmac<Md5>;

const SIGNATURE: &[u8; 8] = b"NTLMSSP\0";

// NegotiateFlags ([MS-NLMP] 2.2.2.5).
const UNICODE: u32 = 0x0000_0001;
const REQUEST_TARGET: u32 = 0x0000_0004;
const SIGN: u32 = 0x0000_0010;
const NTLM: u32 = 0x0000_0200;
const ALWAYS_SIGN: u32 = 0x0000_8000;
const EXTENDED_SESSIONSECURITY: u32 = 0x0008_0000;
const TARGET_INFO: u32 = 0x0080_0000;
const NEGOTIATE_128: u32 = 0x2000_0000;
const NEGOTIATE_56: u32 = 0x8000_0000;

const CLIENT_FLAGS: u32 = UNICODE
    | REQUEST_TARGET
    | SIGN
    | NTLM
    | ALWAYS_SIGN
    | EXTENDED_SESSIONSECURITY
    | TARGET_INFO
    | NEGOTIATE_128
    | NEGOTIATE_56;

/// AV pair ids ([MS-NLMP] 2.2.2.1).
const MSV_AV_EOL: u16 = 0;
const MSV_AV_TIMESTAMP: u16 = 7;

/// DER OIDs: SPNEGO (1.3.6.1.5.5.2) and NTLMSSP (1.3.6.1.4.1.311.2.2.10).
const SPNEGO_OID: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x02];
const NTLMSSP_OID: &[u8] = &[0x2b, 0x06, 0x01, 0x04, 0x01, 0x82, 0x37, 0x02, 0x02, 0x0a];

/// Who logs on: an NTLM user in a domain (empty for a standalone server).
pub(crate) struct Credentials<'a> {
    pub domain: &'a str,
    pub user: &'a str,
    pub password: &'a str,
}

/// The first token: SPNEGO's `NegTokenInit` with an NTLM NEGOTIATE message.
pub(crate) fn negotiate_token() -> Vec<u8> {
    let mut msg = Writer::default();
    msg.bytes(SIGNATURE).u32(1).u32(CLIENT_FLAGS).zeros(16);
    let mech_types = der(0x30, &der(0x06, NTLMSSP_OID));
    let mut init = der(0xa0, &mech_types);
    init.extend(der(0xa2, &der(0x04, &msg.buf)));
    let mut inner = der(0x06, SPNEGO_OID);
    inner.extend(der(0xa0, &der(0x30, &init)));
    der(0x60, &inner)
}

/// What the AUTHENTICATE step produced: the token to send and the session
/// key that signing and encryption keys derive from.
pub(crate) struct Authenticated {
    pub token: Vec<u8>,
    pub session_key: [u8; 16],
}

/// The second token, answering the server's SPNEGO `NegTokenResp` that
/// carries its CHALLENGE.
pub(crate) fn authenticate_token(
    server_token: &[u8],
    creds: &Credentials<'_>,
    client_challenge: [u8; 8],
) -> io::Result<Authenticated> {
    let challenge = spnego_response_token(server_token)?;
    let challenge = Challenge::parse(challenge)?;
    let flags = challenge.flags & CLIENT_FLAGS | UNICODE;

    let nt_hash = nt_owf(creds.password);
    let identity = utf16(&(creds.user.to_uppercase() + creds.domain));
    let ntowf_v2 = hmac_md5(&nt_hash, &[&identity]);

    let timestamp = challenge.timestamp.unwrap_or_else(filetime::now);
    let mut temp = Writer::default();
    temp.u8(1)
        .u8(1)
        .zeros(6)
        .u64(timestamp)
        .bytes(&client_challenge)
        .zeros(4);
    temp.bytes(challenge.target_info).zeros(4);
    let proof = hmac_md5(&ntowf_v2, &[&challenge.nonce, &temp.buf]);
    let mut nt_response = proof.to_vec();
    nt_response.extend_from_slice(&temp.buf);
    // With a timestamp from the server, LMv2 is left empty (zeros), as
    // [MS-NLMP] 3.1.5.1.2 says.
    let lm_response = if challenge.timestamp.is_some() {
        vec![0; 24]
    } else {
        let mut lm = hmac_md5(&ntowf_v2, &[&challenge.nonce, &client_challenge]).to_vec();
        lm.extend_from_slice(&client_challenge);
        lm
    };
    let session_key = hmac_md5(&ntowf_v2, &[&proof]);

    let domain = utf16(creds.domain);
    let user = utf16(creds.user);
    let workstation = utf16("BACKUPKIT");
    let fields: [&[u8]; 6] = [
        &lm_response,
        &nt_response,
        &domain,
        &user,
        &workstation,
        &[],
    ];
    let mut msg = Writer::default();
    msg.bytes(SIGNATURE).u32(3);
    let mut offset = 64u32;
    for field in fields {
        let len = u16::try_from(field.len()).map_err(|_| malformed("NTLM challenge (too long)"))?;
        msg.u16(len).u16(len).u32(offset);
        offset += u32::from(len);
    }
    msg.u32(flags);
    debug_assert_eq!(msg.len(), 64);
    for field in fields {
        msg.bytes(field);
    }
    let token = der(0xa1, &der(0x30, &der(0xa2, &der(0x04, &msg.buf))));
    Ok(Authenticated { token, session_key })
}

/// The NTLM CHALLENGE message's parts that the answer needs.
struct Challenge<'a> {
    flags: u32,
    nonce: [u8; 8],
    target_info: &'a [u8],
    timestamp: Option<u64>,
}

impl<'a> Challenge<'a> {
    fn parse(msg: &'a [u8]) -> io::Result<Self> {
        let mut r = Reader::new(msg);
        if r.take(8)? != SIGNATURE || r.u32()? != 2 {
            return Err(malformed("NTLM challenge"));
        }
        r.skip(8)?; // target name
        let flags = r.u32()?;
        let mut nonce = [0; 8];
        nonce.copy_from_slice(r.take(8)?);
        r.skip(8)?;
        let len = usize::from(r.u16()?);
        r.skip(2)?;
        let offset = usize::try_from(r.u32()?).map_err(|_| malformed("NTLM challenge"))?;
        let target_info = if flags & TARGET_INFO != 0 {
            r.slice(offset, len)?
        } else {
            &[]
        };
        let mut timestamp = None;
        let mut pairs = Reader::new(target_info);
        loop {
            if target_info.is_empty() {
                break;
            }
            let id = pairs.u16()?;
            let len = usize::from(pairs.u16()?);
            let value = pairs.take(len)?;
            match id {
                MSV_AV_EOL => break,
                MSV_AV_TIMESTAMP if len == 8 => timestamp = Some(Reader::new(value).u64()?),
                _ => {}
            }
        }
        Ok(Challenge {
            flags,
            nonce,
            target_info,
            timestamp,
        })
    }
}

/// MD4 of the UTF-16LE password: the NT hash.
fn nt_owf(password: &str) -> [u8; 16] {
    use md4::Digest;
    md4::Md4::digest(utf16(password)).into()
}

fn hmac_md5(key: &[u8], parts: &[&[u8]]) -> [u8; 16] {
    let mut mac = <HmacMd5 as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// A DER element: tag, definite length, content.
fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(u8::try_from(len).unwrap_or(0));
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | u8::try_from(bytes.len() - skip).unwrap_or(0));
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

/// Reads one DER element: its tag, content, and what follows it.
fn der_next(data: &[u8]) -> io::Result<(u8, &[u8], &[u8])> {
    let bad = || malformed("SPNEGO token");
    let (&tag, rest) = data.split_first().ok_or_else(bad)?;
    let (&first, mut rest) = rest.split_first().ok_or_else(bad)?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return Err(bad());
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| acc << 8 | usize::from(*b));
        rest = &rest[n..];
        len
    };
    if rest.len() < len {
        return Err(bad());
    }
    Ok((tag, &rest[..len], &rest[len..]))
}

/// The NTLM message inside the server's `NegTokenResp` (`responseToken`, `[2]`).
/// A server that rejects NTLM says so here (negState reject, no token).
fn spnego_response_token(token: &[u8]) -> io::Result<&[u8]> {
    let (tag, resp, _) = der_next(token)?;
    if tag != 0xa1 {
        return Err(malformed("SPNEGO answer"));
    }
    let (tag, mut fields, _) = der_next(resp)?;
    if tag != 0x30 {
        return Err(malformed("SPNEGO answer"));
    }
    while !fields.is_empty() {
        let (tag, content, remaining) = der_next(fields)?;
        if tag == 0xa2 {
            let (tag, inner, _) = der_next(content)?;
            if tag == 0x04 {
                return Ok(inner);
            }
        }
        fields = remaining;
    }
    Err(io::Error::new(
        io::ErrorKind::PermissionDenied,
        "the SMB server does not accept NTLM logons (no challenge in its answer)",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// [MS-NLMP] 4.2.4: the `NTLMv2` test vectors (user "User", domain
    /// "Domain", password "Password").
    #[test]
    fn ntlmv2_matches_the_specification() {
        let nt_hash = nt_owf("Password");
        assert_eq!(hex(&nt_hash), "a4f49c406510bdcab6824ee7c30fd852");
        let ntowf_v2 = hmac_md5(&nt_hash, &[&utf16(&("User".to_uppercase() + "Domain"))]);
        assert_eq!(hex(&ntowf_v2), "0c868a403bfd7a93a3001ef22ef02e3f");
        let nonce = [0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef];
        let client_challenge = [0xaa; 8];
        // The AV pairs of 4.2.4.1.3: domain "Domain", server "Server".
        let mut info = Writer::default();
        info.u16(2).u16(12).bytes(&utf16("Domain"));
        info.u16(1).u16(12).bytes(&utf16("Server"));
        info.u16(0).u16(0);
        let mut temp = Writer::default();
        temp.u8(1)
            .u8(1)
            .zeros(6)
            .u64(0)
            .bytes(&client_challenge)
            .zeros(4);
        temp.bytes(&info.buf).zeros(4);
        let proof = hmac_md5(&ntowf_v2, &[&nonce, &temp.buf]);
        assert_eq!(hex(&proof), "68cd0ab851e51c96aabc927bebef6a1c");
        let session_key = hmac_md5(&ntowf_v2, &[&proof]);
        assert_eq!(hex(&session_key), "8de40ccadbc14a82f15cb0ad0de95ca3");
    }

    #[test]
    fn spnego_tokens_parse() {
        let token = negotiate_token();
        assert_eq!(token[0], 0x60);
        let (_, inner, rest) = der_next(&token).unwrap();
        assert!(rest.is_empty());
        let (tag, oid, _) = der_next(inner).unwrap();
        assert_eq!((tag, oid), (0x06, SPNEGO_OID));
        // A NegTokenResp with a responseToken is found through negState.
        let mut fields = der(0xa0, &der(0x0a, &[1]));
        fields.extend(der(0xa2, &der(0x04, b"NTLMSSP\0challenge")));
        let answer = der(0xa1, &der(0x30, &fields));
        assert_eq!(
            spnego_response_token(&answer).unwrap(),
            b"NTLMSSP\0challenge"
        );
        let reject = der(0xa1, &der(0x30, &der(0xa0, &der(0x0a, &[2]))));
        assert_eq!(
            spnego_response_token(&reject).unwrap_err().kind(),
            io::ErrorKind::PermissionDenied
        );
        assert!(spnego_response_token(&answer[..answer.len() - 3]).is_err());
        // Long lengths.
        let long = der(0x04, &[7; 300]);
        assert_eq!(&long[..4], &[0x04, 0x82, 0x01, 0x2c]);
        assert_eq!(der_next(&long).unwrap().1.len(), 300);
    }

    fn hex(b: &[u8]) -> String {
        use std::fmt::Write;
        b.iter().fold(String::new(), |mut s, x| {
            let _ = write!(s, "{x:02x}");
            s
        })
    }
}
