//! The file operations of a [`Share`]: open and close, pipelined reads
//! and writes, listing, stat, rename (with replace), times, delete.

use std::collections::VecDeque;
use std::io::{self, Read, Write};

use super::conn::{
    DELETE, DIRECTORY_FILE, Entry, FILE_READ_ATTRIBUTES, FILE_READ_DATA, FILE_WRITE_ATTRIBUTES,
    FILE_WRITE_DATA, Handle, Info, NON_DIRECTORY_FILE, OPEN, OPEN_REPARSE_POINT, SYNCHRONIZE,
    Share, server_error,
};
use super::wire::{HEADER_LEN, Reader, Writer, command, from_utf16, status, utf16};

// Information classes ([MS-FSCC] 2.4, 2.5).
const FILE_DIRECTORY_INFORMATION: u8 = 0x01;
const FILE_BASIC_INFORMATION: u8 = 0x04;
const FILE_RENAME_INFORMATION: u8 = 0x0A;
const FILE_LINK_INFORMATION: u8 = 0x0B;
const FILE_DISPOSITION_INFORMATION: u8 = 0x0D;
const FILE_NETWORK_OPEN_INFORMATION: u8 = 0x22;
const INFO_FILE: u8 = 1;
/// Reads or writes kept in flight on one file.
const WINDOW: usize = 8;

/// What an open asks for.
#[derive(Clone, Copy, Debug)]
pub struct Open {
    pub access: u32,
    pub disposition: u32,
    pub options: u32,
}

impl Open {
    /// An existing file or directory, to read its data and attributes.
    pub fn read() -> Self {
        Open {
            access: FILE_READ_DATA | FILE_READ_ATTRIBUTES | SYNCHRONIZE,
            disposition: OPEN,
            options: OPEN_REPARSE_POINT,
        }
    }
    /// An existing file or directory, to change its attributes, rename or
    /// delete it.
    pub fn modify() -> Self {
        Open {
            access: FILE_READ_ATTRIBUTES | FILE_WRITE_ATTRIBUTES | DELETE | SYNCHRONIZE,
            disposition: OPEN,
            options: OPEN_REPARSE_POINT,
        }
    }
    /// A file to write, created with `disposition` (`CREATE`: must not
    /// exist; `OVERWRITE_IF`: truncated or created).
    pub fn write(disposition: u32) -> Self {
        Open {
            access: FILE_READ_DATA
                | FILE_WRITE_DATA
                | FILE_READ_ATTRIBUTES
                | FILE_WRITE_ATTRIBUTES
                | DELETE
                | SYNCHRONIZE,
            disposition,
            options: NON_DIRECTORY_FILE,
        }
    }
    /// A directory, created with `disposition` (`CREATE` or `OPEN_IF`).
    pub fn directory(disposition: u32) -> Self {
        Open {
            access: FILE_READ_DATA | FILE_READ_ATTRIBUTES | SYNCHRONIZE,
            disposition,
            options: DIRECTORY_FILE,
        }
    }
}

/// A share path with backslashes and no leading separator.
fn smb_path(path: &str) -> String {
    path.trim_matches('/').replace('/', "\\")
}

impl Share {
    /// Opens (or creates) `path`, relative to the share (`/` separated).
    pub fn open(&mut self, path: &str, how: Open) -> io::Result<Handle> {
        let name = utf16(&smb_path(path));
        let mut b = Writer::with_capacity(64 + name.len());
        b.u16(57).u8(0).u8(0).u32(2).u64(0).u64(0);
        b.u32(how.access)
            .u32(0)
            .u32(0x7)
            .u32(how.disposition)
            .u32(how.options);
        b.u16(u16::try_from(HEADER_LEN + 56).unwrap_or(0));
        b.u16(u16::try_from(name.len()).map_err(|_| {
            io::Error::new(io::ErrorKind::InvalidInput, "the path is too long for SMB")
        })?);
        b.u32(0).u32(0);
        b.bytes(&name);
        if name.is_empty() {
            b.u8(0);
        }
        let resp = self.call(command::CREATE, &b.buf, 0)?;
        if resp.status != status::SUCCESS {
            return Err(server_error("open", path, resp.status));
        }
        let r = resp.body();
        let size = r.at(HEADER_LEN + 48)?.u64()?;
        let attributes = r.at(HEADER_LEN + 56)?.u32()?;
        let mut id = [0; 16];
        id.copy_from_slice(r.slice(HEADER_LEN + 64, 16)?);
        Ok(Handle {
            id,
            size,
            attributes,
        })
    }

    /// Asks whether the server still answers on this connection.
    pub fn echo(&mut self) -> io::Result<()> {
        let resp = self.call(command::ECHO, &[4, 0, 0, 0], 0)?;
        if resp.status != status::SUCCESS {
            return Err(server_error("echo", "", resp.status));
        }
        Ok(())
    }

    /// Closes a handle.
    pub fn close(&mut self, h: Handle) -> io::Result<()> {
        self.handle_request(command::CLOSE, h, "close")
    }

    /// Asks the server to write its buffers for this file to disk.
    pub fn flush(&mut self, h: Handle) -> io::Result<()> {
        self.handle_request(command::FLUSH, h, "flush")
    }

    /// CLOSE and FLUSH: the same 24-byte request naming a handle.
    fn handle_request(&mut self, cmd: u16, h: Handle, what: &str) -> io::Result<()> {
        let mut b = Writer::with_capacity(24);
        b.u16(24).u16(0).u32(0).bytes(&h.id);
        let resp = self.call(cmd, &b.buf, 0)?;
        if resp.status != status::SUCCESS {
            return Err(server_error(what, "", resp.status));
        }
        Ok(())
    }

    fn send_write(&mut self, h: Handle, offset: u64, data: &[u8]) -> io::Result<u64> {
        let mut b = Writer::with_capacity(48 + data.len());
        let len = u32::try_from(data.len()).map_err(|_| io::Error::other("write too large"))?;
        b.u16(49)
            .u16(u16::try_from(HEADER_LEN + 48).unwrap_or(0))
            .u32(len)
            .u64(offset);
        b.bytes(&h.id).u32(0).u32(0).u16(0).u16(0).u32(0);
        b.bytes(data);
        self.send(command::WRITE, &b.buf, len, None)
    }

    fn finish_write(&mut self, id: u64, expected: usize) -> io::Result<()> {
        let resp = self.wait(id)?;
        if resp.status != status::SUCCESS {
            return Err(server_error("write", "", resp.status));
        }
        let count = resp.body().at(HEADER_LEN + 4)?.u32()?;
        if count as usize != expected {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("the SMB server wrote {count} of {expected} bytes"),
            ));
        }
        Ok(())
    }

    /// Writes everything `src` yields at `offset` on, with up to `WINDOW`
    /// writes in flight; memory stays at that many blocks. Returns the
    /// bytes written.
    pub fn write_from(
        &mut self,
        h: Handle,
        mut offset: u64,
        src: &mut dyn Read,
    ) -> io::Result<u64> {
        let block = self.io_size().1 as usize;
        let mut in_flight: VecDeque<(u64, usize)> = VecDeque::new();
        let mut buf = vec![0u8; block];
        let mut total = 0u64;
        loop {
            let n = read_full(src, &mut buf)?;
            if n == 0 {
                break;
            }
            if in_flight.len() >= WINDOW {
                let (id, len) = in_flight.pop_front().expect("not empty");
                self.finish_write(id, len)?;
            }
            let id = self.send_write(h, offset, &buf[..n])?;
            in_flight.push_back((id, n));
            offset += n as u64;
            total += n as u64;
            if n < block {
                break;
            }
        }
        while let Some((id, len)) = in_flight.pop_front() {
            self.finish_write(id, len)?;
        }
        Ok(total)
    }

    /// Writes `data` at `offset`.
    pub fn write_at(&mut self, h: Handle, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut src = data;
        self.write_from(h, offset, &mut src).map(|_| ())
    }

    fn send_read(&mut self, h: Handle, offset: u64, len: u32) -> io::Result<u64> {
        let mut b = Writer::with_capacity(49);
        b.u16(49).u8(0x50).u8(0).u32(len).u64(offset).bytes(&h.id);
        b.u32(1).u32(0).u32(0).u16(0).u16(0).u8(0);
        self.send(command::READ, &b.buf, len, None)
    }

    /// The data of a read answer; empty at the end of the file.
    fn finish_read(&mut self, id: u64, out: &mut dyn Write) -> io::Result<usize> {
        let resp = self.wait(id)?;
        if resp.status == status::END_OF_FILE {
            return Ok(0);
        }
        if resp.status != status::SUCCESS {
            return Err(server_error("read", "", resp.status));
        }
        let mut r = resp.body();
        r.skip(2)?;
        let offset = usize::from(r.u8()?);
        r.skip(1)?;
        let len = r.u32()? as usize;
        let data = Reader::new(&resp.msg).slice(offset, len)?;
        out.write_all(data)?;
        Ok(len)
    }

    /// Reads up to `len` bytes from `offset` into `out`, with up to
    /// `WINDOW` reads in flight. Returns the bytes read (fewer at the end
    /// of the file).
    pub fn read_into(
        &mut self,
        h: Handle,
        offset: u64,
        len: u64,
        out: &mut dyn Write,
    ) -> io::Result<u64> {
        let block = u64::from(self.io_size().0);
        let mut in_flight: VecDeque<(u64, u64)> = VecDeque::new();
        let mut next = offset;
        let end = offset.saturating_add(len);
        let mut total = 0u64;
        let mut short = false;
        loop {
            while !short && in_flight.len() < WINDOW && next < end {
                let n = block.min(end - next);
                let id = self.send_read(h, next, u32::try_from(n).unwrap_or(u32::MAX))?;
                in_flight.push_back((id, n));
                next += n;
            }
            let Some((id, asked)) = in_flight.pop_front() else {
                break;
            };
            if short {
                // Past a short read: drain what is in flight unread.
                self.finish_read(id, &mut io::sink())?;
                continue;
            }
            let got = self.finish_read(id, out)? as u64;
            total += got;
            if got < asked {
                short = true;
            }
        }
        Ok(total)
    }

    /// The entries of a directory, without `.` and `..`.
    pub fn list(&mut self, path: &str) -> io::Result<Vec<Entry>> {
        let h = self.open(path, Open::directory(OPEN))?;
        let result = self.list_open(h, path);
        let closed = self.close(h);
        let entries = result?;
        closed?;
        Ok(entries)
    }

    fn list_open(&mut self, h: Handle, path: &str) -> io::Result<Vec<Entry>> {
        let pattern = utf16("*");
        let mut entries = Vec::new();
        let out_len: u32 = 65536;
        let mut first = true;
        loop {
            let mut b = Writer::with_capacity(40);
            b.u16(33)
                .u8(FILE_DIRECTORY_INFORMATION)
                .u8(u8::from(first))
                .u32(0)
                .bytes(&h.id);
            b.u16(u16::try_from(HEADER_LEN + 32).unwrap_or(0))
                .u16(u16::try_from(pattern.len()).unwrap_or(0))
                .u32(out_len);
            b.bytes(&pattern);
            first = false;
            let resp = self.call(command::QUERY_DIRECTORY, &b.buf, out_len)?;
            if resp.status == status::NO_MORE_FILES {
                break;
            }
            if resp.status != status::SUCCESS {
                return Err(server_error("list", path, resp.status));
            }
            let mut r = resp.body();
            r.skip(2)?;
            let offset = usize::from(r.u16()?);
            let len = r.u32()? as usize;
            let buf = Reader::new(&resp.msg).slice(offset, len)?;
            let mut at = 0usize;
            loop {
                let mut e = Reader::new(buf).at(at)?;
                let next = e.u32()? as usize;
                e.skip(4 + 16)?;
                let mtime = e.u64()?;
                e.skip(8)?;
                let size = e.u64()?;
                e.skip(8)?;
                let attributes = e.u32()?;
                let name_len = e.u32()? as usize;
                let name = from_utf16(e.take(name_len)?)?;
                if name != "." && name != ".." {
                    entries.push(Entry {
                        name,
                        info: Info {
                            size,
                            attributes,
                            mtime,
                        },
                    });
                }
                if next == 0 {
                    break;
                }
                at += next;
            }
        }
        Ok(entries)
    }

    fn query_info(&mut self, h: Handle, kind: u8, class: u8, out_len: u32) -> io::Result<Vec<u8>> {
        let mut b = Writer::with_capacity(41);
        b.u16(41)
            .u8(kind)
            .u8(class)
            .u32(out_len)
            .u16(0)
            .u16(0)
            .u32(0)
            .u32(0)
            .u32(0)
            .bytes(&h.id)
            .u8(0);
        let resp = self.call(command::QUERY_INFO, &b.buf, out_len)?;
        if resp.status != status::SUCCESS {
            return Err(server_error("query", "", resp.status));
        }
        let mut r = resp.body();
        r.skip(2)?;
        let offset = usize::from(r.u16()?);
        let len = r.u32()? as usize;
        Ok(Reader::new(&resp.msg).slice(offset, len)?.to_vec())
    }

    /// Size, attributes and modification time of an open file.
    pub fn info(&mut self, h: Handle) -> io::Result<Info> {
        let data = self.query_info(h, INFO_FILE, FILE_NETWORK_OPEN_INFORMATION, 56)?;
        let r = Reader::new(&data);
        Ok(Info {
            mtime: r.at(16)?.u64()?,
            size: r.at(40)?.u64()?,
            attributes: r.at(48)?.u32()?,
        })
    }

    /// Stat of a path.
    pub fn stat(&mut self, path: &str) -> io::Result<Info> {
        let h = self.open(
            path,
            Open {
                access: FILE_READ_ATTRIBUTES | SYNCHRONIZE,
                disposition: OPEN,
                options: OPEN_REPARSE_POINT,
            },
        )?;
        let info = self.info(h);
        let closed = self.close(h);
        let info = info.map_err(|e| io::Error::new(e.kind(), format!("{e} ({path})")))?;
        closed?;
        Ok(info)
    }

    fn set_info(&mut self, h: Handle, class: u8, data: &[u8], what: &str) -> io::Result<()> {
        let mut b = Writer::with_capacity(40 + data.len());
        let len = u32::try_from(data.len()).map_err(|_| io::Error::other("info too large"))?;
        b.u16(33)
            .u8(INFO_FILE)
            .u8(class)
            .u32(len)
            .u16(u16::try_from(HEADER_LEN + 32).unwrap_or(0))
            .u16(0)
            .u32(0);
        b.bytes(&h.id).bytes(data);
        let resp = self.call(command::SET_INFO, &b.buf, len)?;
        if resp.status != status::SUCCESS {
            return Err(server_error(what, "", resp.status));
        }
        Ok(())
    }

    /// Renames an open file to `to` (share-relative); with `replace`, over
    /// an existing file in one step on the server.
    pub fn rename(&mut self, h: Handle, to: &str, replace: bool) -> io::Result<()> {
        let name = utf16(&smb_path(to));
        let mut b = Writer::with_capacity(24 + name.len());
        b.u8(u8::from(replace))
            .zeros(7)
            .u64(0)
            .u32(u32::try_from(name.len()).unwrap_or(0))
            .bytes(&name);
        self.set_info(h, FILE_RENAME_INFORMATION, &b.buf, "rename")
            .map_err(|e| io::Error::new(e.kind(), format!("{e} (to {to})")))
    }

    /// Gives an open file a second name, `to`; fails with `AlreadyExists`
    /// if `to` exists (the exclusive create of locks).
    pub fn link(&mut self, h: Handle, to: &str) -> io::Result<()> {
        let name = utf16(&smb_path(to));
        let mut b = Writer::with_capacity(24 + name.len());
        b.u8(0)
            .zeros(7)
            .u64(0)
            .u32(u32::try_from(name.len()).unwrap_or(0))
            .bytes(&name);
        self.set_info(h, FILE_LINK_INFORMATION, &b.buf, "link")
            .map_err(|e| io::Error::new(e.kind(), format!("{e} (to {to})")))
    }

    /// Sets the modification time (FILETIME), leaving the others.
    pub fn set_mtime(&mut self, h: Handle, mtime: u64) -> io::Result<()> {
        let mut b = Writer::with_capacity(40);
        b.u64(0).u64(0).u64(mtime).u64(0).u32(0).u32(0);
        self.set_info(h, FILE_BASIC_INFORMATION, &b.buf, "set times")
    }

    /// Marks an open file or empty directory for deletion at close.
    pub fn delete_on_close(&mut self, h: Handle) -> io::Result<()> {
        self.set_info(h, FILE_DISPOSITION_INFORMATION, &[1], "delete")
    }

    /// Deletes a file or an empty directory.
    pub fn remove(&mut self, path: &str) -> io::Result<()> {
        let h = self.open(path, Open::modify())?;
        let marked = self
            .delete_on_close(h)
            .map_err(|e| io::Error::new(e.kind(), format!("{e} ({path})")));
        let closed = self.close(h);
        marked?;
        closed
    }
}

/// Fills `buf` as far as `src` goes.
fn read_full(src: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match src.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}
