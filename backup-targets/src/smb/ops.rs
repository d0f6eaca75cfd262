//! The file operations of a [`Share`]: open and close, pipelined reads
//! and writes, listing, stat, rename (with replace), times, delete.

use std::collections::VecDeque;
use std::io::{self, Read, Write};

use super::conn::{
    DELETE, DIRECTORY_FILE, Entry, FILE_READ_ATTRIBUTES, FILE_READ_DATA, FILE_WRITE_ATTRIBUTES,
    FILE_WRITE_DATA, Handle, Info, NON_DIRECTORY_FILE, OPEN, OPEN_REPARSE_POINT, Request, Response,
    SYNCHRONIZE, Share, server_error,
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
        let body = create_body(path, how)?;
        let resp = self.call(command::CREATE, &body, 0)?;
        handle_from(&resp, path)
    }

    /// Sends `reqs` as one compound message and waits for every answer
    /// (all of them, so none is left behind for a later wait).
    fn chain(&mut self, reqs: &[Request<'_>], related: bool) -> io::Result<Vec<Response>> {
        let ids = self.send_chain(reqs, related)?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            out.push(self.wait(id)?);
        }
        Ok(out)
    }

    /// Creates the file `path` with `data` in it, its mtime (FILETIME) set
    /// after the data and everything flushed to disk: for data that fits
    /// one write, one message to the server (create, write, set times,
    /// flush, related). Nothing is left behind on failure.
    pub fn create_with(
        &mut self,
        path: &str,
        how: Open,
        data: &[u8],
        mtime: Option<u64>,
    ) -> io::Result<Handle> {
        if data.len() > self.io_size().1 as usize {
            let h = self.open(path, how)?;
            let done = self
                .write_at(h, 0, data)
                .and_then(|()| self.settle(h, mtime));
            if let Err(e) = done {
                self.discard(h);
                return Err(e);
            }
            return Ok(h);
        }
        let create = create_body(path, how)?;
        let len = u32::try_from(data.len()).map_err(|_| io::Error::other("write too large"))?;
        let write = write_body(&ANY_FILE, 0, len);
        let times =
            mtime.map(|t| set_info_body(&ANY_FILE, FILE_BASIC_INFORMATION, &basic_times(t)));
        let flush = handle_body(&ANY_FILE);
        let mut reqs = vec![Request {
            cmd: command::CREATE,
            body: &create,
            data: &[],
            payload: 0,
        }];
        if !data.is_empty() {
            reqs.push(Request {
                cmd: command::WRITE,
                body: &write,
                data,
                payload: len,
            });
        }
        push_settle(&mut reqs, times.as_deref(), &flush);
        let answers = self.chain(&reqs, true)?;
        let h = handle_from(&answers[0], path)?;
        let mut rest = answers[1..].iter();
        let checked = (|| {
            if !data.is_empty() {
                written(rest.next().expect("a write answer"), data.len())?;
            }
            if times.is_some() {
                succeeded(rest.next().expect("a set-info answer"), "set times")?;
            }
            succeeded(rest.next().expect("a flush answer"), "flush")
        })();
        if let Err(e) = checked {
            self.discard(h);
            return Err(e);
        }
        Ok(h)
    }

    /// Sets an open file's mtime (FILETIME) if asked, then flushes it to
    /// disk: one message.
    pub fn settle(&mut self, h: Handle, mtime: Option<u64>) -> io::Result<()> {
        let times = mtime.map(|t| set_info_body(&h.id, FILE_BASIC_INFORMATION, &basic_times(t)));
        let flush = handle_body(&h.id);
        let mut reqs = Vec::with_capacity(2);
        push_settle(&mut reqs, times.as_deref(), &flush);
        let answers = self.chain(&reqs, false)?;
        if times.is_some() {
            succeeded(&answers[0], "set times")?;
        }
        succeeded(answers.last().expect("a flush answer"), "flush")
    }

    /// Renames an open file over `to` (share-relative) and closes it: one
    /// message. The handle is closed whatever the rename's outcome.
    pub fn rename_and_close(&mut self, h: Handle, to: &str) -> io::Result<()> {
        let rename = set_info_body(&h.id, FILE_RENAME_INFORMATION, &rename_info(to, true));
        let close = handle_body(&h.id);
        let reqs = [
            Request {
                cmd: command::SET_INFO,
                body: &rename,
                data: &[],
                payload: u32::try_from(rename.len()).unwrap_or(u32::MAX),
            },
            Request {
                cmd: command::CLOSE,
                body: &close,
                data: &[],
                payload: 0,
            },
        ];
        let answers = self.chain(&reqs, false)?;
        succeeded(&answers[0], "rename")
            .map_err(|e| io::Error::new(e.kind(), format!("{e} (to {to})")))?;
        succeeded(&answers[1], "close")
    }

    /// Deletes an open file at close and closes it (errors ignored: for
    /// cleaning up after a failure).
    pub fn discard(&mut self, h: Handle) {
        let _ = self.delete_on_close(h);
        let _ = self.close(h);
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
        let resp = self.call(cmd, &handle_body(&h.id), 0)?;
        succeeded(&resp, what)
    }

    fn send_write(&mut self, h: Handle, offset: u64, data: &[u8]) -> io::Result<u64> {
        let len = u32::try_from(data.len()).map_err(|_| io::Error::other("write too large"))?;
        let body = write_body(&h.id, offset, len);
        let ids = self.send_chain(
            &[Request {
                cmd: command::WRITE,
                body: &body,
                data,
                payload: len,
            }],
            false,
        )?;
        Ok(ids[0])
    }

    fn finish_write(&mut self, id: u64, expected: usize) -> io::Result<()> {
        let resp = self.wait(id)?;
        written(&resp, expected)
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
        let body = set_info_body(&h.id, class, data);
        let len = u32::try_from(data.len()).map_err(|_| io::Error::other("info too large"))?;
        let resp = self.call(command::SET_INFO, &body, len)?;
        succeeded(&resp, what)
    }

    /// Renames an open file to `to` (share-relative); with `replace`, over
    /// an existing file in one step on the server.
    pub fn rename(&mut self, h: Handle, to: &str, replace: bool) -> io::Result<()> {
        self.set_info(
            h,
            FILE_RENAME_INFORMATION,
            &rename_info(to, replace),
            "rename",
        )
        .map_err(|e| io::Error::new(e.kind(), format!("{e} (to {to})")))
    }

    /// Gives an open file a second name, `to`; fails with `AlreadyExists`
    /// if `to` exists (the exclusive create of locks).
    pub fn link(&mut self, h: Handle, to: &str) -> io::Result<()> {
        self.set_info(h, FILE_LINK_INFORMATION, &rename_info(to, false), "link")
            .map_err(|e| io::Error::new(e.kind(), format!("{e} (to {to})")))
    }

    /// Sets the modification time (FILETIME), leaving the others.
    pub fn set_mtime(&mut self, h: Handle, mtime: u64) -> io::Result<()> {
        self.set_info(h, FILE_BASIC_INFORMATION, &basic_times(mtime), "set times")
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

/// Adds the requests that end a file's writing: its times (a
/// `FILE_BASIC_INFORMATION` set-info body) if any, then a flush.
fn push_settle<'a>(reqs: &mut Vec<Request<'a>>, times: Option<&'a [u8]>, flush: &'a [u8]) {
    if let Some(t) = times {
        reqs.push(Request {
            cmd: command::SET_INFO,
            body: t,
            data: &[],
            payload: 40,
        });
    }
    reqs.push(Request {
        cmd: command::FLUSH,
        body: flush,
        data: &[],
        payload: 0,
    });
}

/// The `FileId` that, in a related compound, names the file the request
/// before opened.
const ANY_FILE: [u8; 16] = [0xFF; 16];

/// A CREATE request's body.
fn create_body(path: &str, how: Open) -> io::Result<Vec<u8>> {
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
    Ok(b.buf)
}

/// The handle a CREATE answer gives, or the server's error.
fn handle_from(resp: &Response, path: &str) -> io::Result<Handle> {
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

/// A WRITE request's fixed part; the data follows it.
fn write_body(id: &[u8; 16], offset: u64, len: u32) -> Vec<u8> {
    let mut b = Writer::with_capacity(48);
    b.u16(49)
        .u16(u16::try_from(HEADER_LEN + 48).unwrap_or(0))
        .u32(len)
        .u64(offset);
    b.bytes(id).u32(0).u32(0).u16(0).u16(0).u32(0);
    b.buf
}

/// The body of CLOSE and FLUSH: 24 bytes naming a handle.
fn handle_body(id: &[u8; 16]) -> Vec<u8> {
    let mut b = Writer::with_capacity(24);
    b.u16(24).u16(0).u32(0).bytes(id);
    b.buf
}

/// A `SET_INFO` request (file information of `class`).
fn set_info_body(id: &[u8; 16], class: u8, data: &[u8]) -> Vec<u8> {
    let mut b = Writer::with_capacity(32 + data.len());
    b.u16(33)
        .u8(INFO_FILE)
        .u8(class)
        .u32(u32::try_from(data.len()).unwrap_or(u32::MAX))
        .u16(u16::try_from(HEADER_LEN + 32).unwrap_or(0))
        .u16(0)
        .u32(0);
    b.bytes(id).bytes(data);
    b.buf
}

/// `FILE_BASIC_INFORMATION` that sets the mtime only.
fn basic_times(mtime: u64) -> Vec<u8> {
    let mut b = Writer::with_capacity(40);
    b.u64(0).u64(0).u64(mtime).u64(0).u32(0).u32(0);
    b.buf
}

/// `FILE_RENAME_INFORMATION` (and `FILE_LINK_INFORMATION`, the same
/// layout) naming `to`.
fn rename_info(to: &str, replace: bool) -> Vec<u8> {
    let name = utf16(&smb_path(to));
    let mut b = Writer::with_capacity(24 + name.len());
    b.u8(u8::from(replace))
        .zeros(7)
        .u64(0)
        .u32(u32::try_from(name.len()).unwrap_or(0))
        .bytes(&name);
    b.buf
}

fn succeeded(resp: &Response, what: &str) -> io::Result<()> {
    if resp.status == status::SUCCESS {
        Ok(())
    } else {
        Err(server_error(what, "", resp.status))
    }
}

/// Checks a WRITE answer: success, and every byte taken.
fn written(resp: &Response, expected: usize) -> io::Result<()> {
    succeeded(resp, "write")?;
    let count = resp.body().at(HEADER_LEN + 4)?.u32()?;
    if count as usize != expected {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            format!("the SMB server wrote {count} of {expected} bytes"),
        ));
    }
    Ok(())
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
