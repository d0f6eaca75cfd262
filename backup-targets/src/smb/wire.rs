//! SMB2's little-endian encoding: a writer that builds a message and a
//! reader that takes one apart with every length checked, plus the
//! protocol's numbers (commands, statuses, flags) used by the client.

use std::io;

/// SMB2 commands ([MS-SMB2] 2.2.1.2).
pub(crate) mod command {
    pub const NEGOTIATE: u16 = 0x00;
    pub const SESSION_SETUP: u16 = 0x01;
    pub const TREE_CONNECT: u16 = 0x03;
    pub const CREATE: u16 = 0x05;
    pub const CLOSE: u16 = 0x06;
    pub const FLUSH: u16 = 0x07;
    pub const READ: u16 = 0x08;
    pub const WRITE: u16 = 0x09;
    pub const ECHO: u16 = 0x0D;
    pub const QUERY_DIRECTORY: u16 = 0x0E;
    pub const QUERY_INFO: u16 = 0x10;
    pub const SET_INFO: u16 = 0x11;
}

/// NTSTATUS values the client tells apart ([MS-ERREF] 2.3.1).
pub(crate) mod status {
    pub const SUCCESS: u32 = 0x0000_0000;
    pub const PENDING: u32 = 0x0000_0103;
    pub const BUFFER_OVERFLOW: u32 = 0x8000_0005;
    pub const NO_MORE_FILES: u32 = 0x8000_0006;
    pub const STOPPED_ON_SYMLINK: u32 = 0x8000_002D;
    pub const INVALID_PARAMETER: u32 = 0xC000_000D;
    pub const NO_SUCH_FILE: u32 = 0xC000_000F;
    pub const END_OF_FILE: u32 = 0xC000_0011;
    pub const MORE_PROCESSING_REQUIRED: u32 = 0xC000_0016;
    pub const ACCESS_DENIED: u32 = 0xC000_0022;
    pub const OBJECT_NAME_INVALID: u32 = 0xC000_0033;
    pub const OBJECT_NAME_NOT_FOUND: u32 = 0xC000_0034;
    pub const OBJECT_NAME_COLLISION: u32 = 0xC000_0035;
    pub const OBJECT_PATH_NOT_FOUND: u32 = 0xC000_003A;
    pub const SHARING_VIOLATION: u32 = 0xC000_0043;
    pub const DELETE_PENDING: u32 = 0xC000_0056;
    pub const LOGON_FAILURE: u32 = 0xC000_006D;
    pub const ACCOUNT_RESTRICTION: u32 = 0xC000_006E;
    pub const PASSWORD_EXPIRED: u32 = 0xC000_0071;
    pub const ACCOUNT_DISABLED: u32 = 0xC000_0072;
    pub const DISK_FULL: u32 = 0xC000_007F;
    pub const FILE_IS_A_DIRECTORY: u32 = 0xC000_00BA;
    pub const NOT_SUPPORTED: u32 = 0xC000_00BB;
    pub const NETWORK_NAME_DELETED: u32 = 0xC000_00C9;
    pub const BAD_NETWORK_NAME: u32 = 0xC000_00CC;
    pub const DIRECTORY_NOT_EMPTY: u32 = 0xC000_0101;
    pub const NOT_A_DIRECTORY: u32 = 0xC000_0103;
    pub const CANNOT_DELETE: u32 = 0xC000_0121;
    pub const USER_SESSION_DELETED: u32 = 0xC000_0203;
    pub const NETWORK_SESSION_EXPIRED: u32 = 0xC000_035C;
    pub const QUOTA_EXCEEDED: u32 = 0xC000_0044;

    /// The status's name, for messages.
    pub fn name(code: u32) -> String {
        let name = match code {
            SUCCESS => "success",
            PENDING => "pending",
            BUFFER_OVERFLOW => "buffer overflow",
            NO_MORE_FILES => "no more files",
            STOPPED_ON_SYMLINK => "stopped on a symbolic link",
            INVALID_PARAMETER => "invalid parameter",
            NO_SUCH_FILE | OBJECT_NAME_NOT_FOUND => "no such file",
            END_OF_FILE => "end of file",
            MORE_PROCESSING_REQUIRED => "more processing required",
            ACCESS_DENIED => "access denied",
            OBJECT_NAME_INVALID => "invalid name",
            OBJECT_NAME_COLLISION => "the name exists",
            OBJECT_PATH_NOT_FOUND => "no such directory",
            SHARING_VIOLATION => "in use by another open (sharing violation)",
            DELETE_PENDING => "being deleted",
            LOGON_FAILURE => "logon failure: wrong user name or password",
            ACCOUNT_RESTRICTION => "account restriction",
            PASSWORD_EXPIRED => "the password has expired",
            ACCOUNT_DISABLED => "the account is disabled",
            DISK_FULL => "the disk is full",
            QUOTA_EXCEEDED => "quota exceeded",
            FILE_IS_A_DIRECTORY => "is a directory",
            NOT_SUPPORTED => "not supported by the server",
            NETWORK_NAME_DELETED => "the share was disconnected",
            BAD_NETWORK_NAME => "no such share",
            DIRECTORY_NOT_EMPTY => "the directory is not empty",
            NOT_A_DIRECTORY => "not a directory",
            CANNOT_DELETE => "cannot be deleted",
            USER_SESSION_DELETED => "the session was closed by the server",
            NETWORK_SESSION_EXPIRED => "the session expired",
            _ => return format!("NT status 0x{code:08x}"),
        };
        name.to_owned()
    }

    /// The `io::ErrorKind` a status stands for.
    pub fn kind(code: u32) -> std::io::ErrorKind {
        use std::io::ErrorKind;
        match code {
            NO_SUCH_FILE | OBJECT_NAME_NOT_FOUND | OBJECT_PATH_NOT_FOUND => ErrorKind::NotFound,
            OBJECT_NAME_COLLISION => ErrorKind::AlreadyExists,
            ACCESS_DENIED | LOGON_FAILURE | ACCOUNT_RESTRICTION | PASSWORD_EXPIRED
            | ACCOUNT_DISABLED | CANNOT_DELETE => ErrorKind::PermissionDenied,
            DISK_FULL | QUOTA_EXCEEDED => ErrorKind::StorageFull,
            FILE_IS_A_DIRECTORY => ErrorKind::IsADirectory,
            NOT_A_DIRECTORY => ErrorKind::NotADirectory,
            DIRECTORY_NOT_EMPTY => ErrorKind::DirectoryNotEmpty,
            OBJECT_NAME_INVALID | INVALID_PARAMETER => ErrorKind::InvalidInput,
            NOT_SUPPORTED => ErrorKind::Unsupported,
            SHARING_VIOLATION | DELETE_PENDING => ErrorKind::ResourceBusy,
            NETWORK_NAME_DELETED | USER_SESSION_DELETED | NETWORK_SESSION_EXPIRED => {
                ErrorKind::ConnectionAborted
            }
            _ => ErrorKind::Other,
        }
    }
}

/// Header flags ([MS-SMB2] 2.2.1.2).
pub(crate) mod flags {
    pub const ASYNC_COMMAND: u32 = 0x0000_0002;
    pub const RELATED: u32 = 0x0000_0004;
    pub const SIGNED: u32 = 0x0000_0008;
}

/// The size of the SMB2 header.
pub(crate) const HEADER_LEN: usize = 64;

/// Builds a message: little-endian numbers and byte strings, with offsets
/// patched in once known.
#[derive(Default)]
pub(crate) struct Writer {
    pub buf: Vec<u8>,
}

impl Writer {
    pub fn with_capacity(capacity: usize) -> Self {
        Writer {
            buf: Vec::with_capacity(capacity),
        }
    }
    pub fn len(&self) -> usize {
        self.buf.len()
    }
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(v);
        self
    }
    pub fn zeros(&mut self, n: usize) -> &mut Self {
        self.buf.resize(self.buf.len() + n, 0);
        self
    }
    pub fn set_u32(&mut self, at: usize, v: u32) {
        self.buf[at..at + 4].copy_from_slice(&v.to_le_bytes());
    }
}

/// Reads a message with every access bounds-checked: a short or damaged
/// message is an `InvalidData` error, never a panic.
#[derive(Clone, Copy)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

pub(crate) fn malformed(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("the SMB server sent a malformed {what}"),
    )
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }
    /// A reader at `offset` of the same buffer.
    pub fn at(&self, offset: usize) -> io::Result<Reader<'a>> {
        if offset > self.buf.len() {
            return Err(malformed("offset"));
        }
        Ok(Reader {
            buf: self.buf,
            pos: offset,
        })
    }
    pub fn skip(&mut self, n: usize) -> io::Result<()> {
        self.take(n).map(|_| ())
    }
    pub fn take(&mut self, n: usize) -> io::Result<&'a [u8]> {
        let end = self.pos.checked_add(n).ok_or_else(|| malformed("length"))?;
        let out = self
            .buf
            .get(self.pos..end)
            .ok_or_else(|| malformed("message (too short)"))?;
        self.pos = end;
        Ok(out)
    }
    pub fn u8(&mut self) -> io::Result<u8> {
        Ok(self.take(1)?[0])
    }
    pub fn u16(&mut self) -> io::Result<u16> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    pub fn u32(&mut self) -> io::Result<u32> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    pub fn u64(&mut self) -> io::Result<u64> {
        let mut b = [0; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(b))
    }
    /// `len` bytes at `offset` of the whole buffer.
    pub fn slice(&self, offset: usize, len: usize) -> io::Result<&'a [u8]> {
        let end = offset.checked_add(len).ok_or_else(|| malformed("length"))?;
        self.buf
            .get(offset..end)
            .ok_or_else(|| malformed("buffer (out of bounds)"))
    }
}

/// UTF-16LE, as SMB names are.
pub(crate) fn utf16(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

/// A UTF-16LE name back to a string (unpaired surrogates are an error:
/// such a name cannot be represented on this side).
pub(crate) fn from_utf16(b: &[u8]) -> io::Result<String> {
    if !b.len().is_multiple_of(2) {
        return Err(malformed("name"));
    }
    let units: Vec<u16> = b
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    String::from_utf16(&units).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "the SMB server sent a name that is not valid UTF-16",
        )
    })
}

/// Windows FILETIME (100 ns since 1601-01-01 UTC) to and from Unix time.
pub(crate) mod filetime {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    /// 100 ns intervals between 1601-01-01 and 1970-01-01.
    const UNIX_OFFSET: u64 = 116_444_736_000_000_000;

    pub fn to_system(ft: u64) -> SystemTime {
        if ft >= UNIX_OFFSET {
            let t = ft - UNIX_OFFSET;
            UNIX_EPOCH
                + Duration::new(
                    t / 10_000_000,
                    u32::try_from(t % 10_000_000).unwrap_or(0) * 100,
                )
        } else {
            let t = UNIX_OFFSET - ft;
            UNIX_EPOCH
                - Duration::new(
                    t / 10_000_000,
                    u32::try_from(t % 10_000_000).unwrap_or(0) * 100,
                )
        }
    }

    /// The FILETIME of `t`, truncated to 100 ns.
    pub fn from_system(t: SystemTime) -> u64 {
        match t.duration_since(UNIX_EPOCH) {
            Ok(d) => UNIX_OFFSET.saturating_add(
                d.as_secs().saturating_mul(10_000_000) + u64::from(d.subsec_nanos() / 100),
            ),
            Err(e) => {
                let d = e.duration();
                let back = d.as_secs().saturating_mul(10_000_000)
                    + u64::from(d.subsec_nanos()).div_ceil(100);
                UNIX_OFFSET.saturating_sub(back)
            }
        }
    }

    pub fn now() -> u64 {
        from_system(SystemTime::now())
    }

    /// Nanoseconds since the Unix epoch of a FILETIME.
    pub fn to_unix_ns(ft: u64) -> i64 {
        let ns = (i128::from(ft) - i128::from(UNIX_OFFSET)) * 100;
        i64::try_from(ns).unwrap_or(if ns < 0 { i64::MIN } else { i64::MAX })
    }

    /// The FILETIME of nanoseconds since the Unix epoch, rounded down to
    /// 100 ns (as the server stores it).
    pub fn from_unix_ns(ns: i64) -> u64 {
        let ft = i128::from(ns.div_euclid(100)) + i128::from(UNIX_OFFSET);
        u64::try_from(ft.max(0)).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filetime_round_trips_at_100ns() {
        use std::time::{Duration, UNIX_EPOCH};
        let t = UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_700);
        assert_eq!(filetime::to_system(filetime::from_system(t)), t);
        // Below 100 ns is cut off, as the server would store it.
        let fine = UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789);
        assert_eq!(filetime::to_system(filetime::from_system(fine)), t);
        assert_eq!(filetime::from_system(UNIX_EPOCH), 116_444_736_000_000_000);
        let before = UNIX_EPOCH - Duration::from_secs(86_400);
        assert_eq!(filetime::to_system(filetime::from_system(before)), before);
        let ns = 1_700_000_000_123_456_789;
        assert_eq!(
            filetime::to_unix_ns(filetime::from_unix_ns(ns)),
            1_700_000_000_123_456_700
        );
        assert_eq!(filetime::to_unix_ns(filetime::from_unix_ns(-150)), -200);
        assert_eq!(filetime::from_unix_ns(0), 116_444_736_000_000_000);
    }

    #[test]
    fn reader_refuses_out_of_bounds() {
        let data = [1u8, 0, 2, 0, 0, 0];
        let mut r = Reader::new(&data);
        assert_eq!(r.u16().unwrap(), 1);
        assert_eq!(r.u32().unwrap(), 2);
        assert!(r.u8().is_err());
        assert!(r.slice(4, 3).is_err());
        assert!(r.at(7).is_err());
        assert_eq!(from_utf16(&utf16("Grüße/✓")).unwrap(), "Grüße/✓");
        assert!(from_utf16(&[0, 0xD8]).is_err());
    }
}
