//! Streaming objects up and down: many reads or writes in flight, so
//! throughput does not wait on round trips.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::sync::Arc;
use std::sync::mpsc::Receiver;

use backup_core::{Error, ObjectWriter, Result};

use super::protocol::{
    CHUNK, Conn, FXP_CLOSE, FXP_DATA, FXP_EXTENDED, FXP_FSETSTAT, FXP_READ, FXP_WRITE, IN_FLIGHT,
    In, Out, Reply, attrs_body, status,
};

pub(super) fn fsync(conn: &Conn, handle: &[u8]) -> io::Result<()> {
    if conn.has("fsync@openssh.com") {
        conn.extended("fsync@openssh.com", &Out::default().bytes(handle))
    } else {
        Ok(())
    }
}

/// Streams one object up to a temporary name, with many writes in flight;
/// `commit` waits for them, syncs, and renames into place.
pub(super) struct SftpWriter {
    conn: Arc<Conn>,
    handle: Option<Vec<u8>>,
    tmp: String,
    path: String,
    shown: String,
    buf: Vec<u8>,
    offset: u64,
    in_flight: VecDeque<Receiver<Reply>>,
    /// An mtime (seconds) and permission bits to set before the rename.
    attrs: Option<(Option<u32>, Option<u32>)>,
}

impl SftpWriter {
    /// A writer into the open temporary file `handle` at `tmp`, renamed to
    /// `path` on commit; `shown` names the object in errors.
    pub(super) fn new(
        conn: Arc<Conn>,
        handle: Vec<u8>,
        tmp: String,
        path: String,
        shown: String,
    ) -> Self {
        Self {
            conn,
            handle: Some(handle),
            tmp,
            path,
            shown,
            buf: Vec::with_capacity(CHUNK),
            offset: 0,
            in_flight: VecDeque::new(),
            attrs: None,
        }
    }

    /// Also sets an mtime (seconds) and permission bits on the file before
    /// it is renamed into place.
    pub(super) fn with_attrs(mut self, mtime: Option<u32>, mode: Option<u32>) -> Self {
        self.attrs = Some((mtime, mode));
        self
    }

    fn send_chunk(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let handle = self.handle.as_ref().expect("open until commit");
        let body = Out::default()
            .bytes(handle)
            .u64(self.offset)
            .bytes(&self.buf);
        let rx = self.conn.send(FXP_WRITE, &body)?;
        self.offset += self.buf.len() as u64;
        self.buf.clear();
        self.in_flight.push_back(rx);
        while self.in_flight.len() > IN_FLIGHT {
            self.wait_one()?;
        }
        Ok(())
    }

    fn wait_one(&mut self) -> io::Result<()> {
        match self.in_flight.pop_front() {
            Some(rx) => status(&self.conn.wait(&rx)?),
            None => Ok(()),
        }
    }

    fn finish(&mut self) -> io::Result<()> {
        self.send_chunk()?;
        while !self.in_flight.is_empty() {
            self.wait_one()?;
        }
        let handle = self.handle.take().expect("open until commit");
        // Attributes, sync and close go out together (the server handles a
        // session's requests in order) and are awaited together: one round
        // trip instead of three. The rename waits for all of them.
        let set = match self.attrs {
            Some((mtime, mode)) => Some(self.conn.send(
                FXP_FSETSTAT,
                &attrs_body(Out::default().bytes(&handle), mtime, mode),
            )?),
            None => None,
        };
        let synced = if self.conn.has("fsync@openssh.com") {
            Some(self.conn.send(
                FXP_EXTENDED,
                &Out::default().str("fsync@openssh.com").bytes(&handle),
            )?)
        } else {
            None
        };
        let closed = self.conn.send(FXP_CLOSE, &Out::default().bytes(&handle))?;
        let wait = |rx: Option<Receiver<Reply>>| match rx {
            Some(rx) => status(&self.conn.wait(&rx)?),
            None => Ok(()),
        };
        let set = wait(set);
        let synced = wait(synced);
        let closed = wait(Some(closed));
        set.and(synced).and(closed)?;
        self.conn.rename_over(&self.tmp, &self.path)
    }
}

impl Write for SftpWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.send_chunk()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl ObjectWriter for SftpWriter {
    fn commit(mut self: Box<Self>) -> Result<()> {
        self.finish()
            .map_err(|e| Error::io("write", self.shown.clone(), e))?;
        self.tmp.clear();
        Ok(())
    }
}

impl backup_core::tree::FileWriter for SftpWriter {
    fn commit(mut self: Box<Self>) -> Result<backup_core::tree::Stored> {
        self.finish()
            .map_err(|e| Error::io("write", self.shown.clone(), e))?;
        self.tmp.clear();
        Ok(backup_core::tree::Stored::default())
    }
}

impl Drop for SftpWriter {
    fn drop(&mut self) {
        // Not committed: drop what was written.
        for rx in std::mem::take(&mut self.in_flight) {
            let _ = self.conn.wait(&rx);
        }
        if let Some(handle) = self.handle.take() {
            let _ = self.conn.close(&handle);
        }
        if !self.tmp.is_empty() {
            let _ = self.conn.remove(&self.tmp);
        }
    }
}

/// Streams one object down with many reads in flight.
pub(super) struct SftpReader {
    conn: Arc<Conn>,
    handle: Vec<u8>,
    next_offset: u64,
    /// Where the read stops (`u64::MAX`: at the end of the file).
    end: u64,
    /// Requests sent: offset, length asked, answer.
    in_flight: VecDeque<(u64, usize, Receiver<Reply>)>,
    current: Vec<u8>,
    pos: usize,
    eof: bool,
}

impl SftpReader {
    /// A reader of the open file `handle`, of the bytes from `offset` up
    /// to `end` (or the end of the file, if sooner).
    pub(super) fn new(conn: Arc<Conn>, handle: Vec<u8>, offset: u64, end: u64) -> Self {
        Self {
            conn,
            handle,
            next_offset: offset,
            end,
            in_flight: VecDeque::new(),
            current: Vec::new(),
            pos: 0,
            eof: false,
        }
    }

    fn request(&mut self) -> io::Result<()> {
        while !self.eof && self.in_flight.len() < IN_FLIGHT && self.next_offset < self.end {
            let asked =
                usize::try_from(self.end - self.next_offset).map_or(CHUNK, |n| n.min(CHUNK));
            let body = Out::default()
                .bytes(&self.handle)
                .u64(self.next_offset)
                .u32(asked as u32);
            let rx = self.conn.send(FXP_READ, &body)?;
            self.in_flight.push_back((self.next_offset, asked, rx));
            self.next_offset += asked as u64;
        }
        Ok(())
    }

    /// The next chunk in order, or `None` at the end.
    fn next_chunk(&mut self) -> io::Result<Option<Vec<u8>>> {
        self.request()?;
        let Some((offset, asked, rx)) = self.in_flight.pop_front() else {
            return Ok(None);
        };
        let reply = self.conn.wait(&rx)?;
        if reply.kind != FXP_DATA {
            return match status(&reply) {
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    self.eof = true;
                    self.drain();
                    Ok(None)
                }
                Err(e) => Err(e),
                Ok(()) => Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "SFTP read answered OK without data",
                )),
            };
        }
        let data = In(&reply.body).bytes()?.to_vec();
        if data.len() < asked {
            // A short read: requests beyond it would leave a gap; start
            // again right after it.
            self.drain();
            self.next_offset = offset + data.len() as u64;
        }
        Ok(Some(data))
    }

    fn drain(&mut self) {
        for (_, _, rx) in std::mem::take(&mut self.in_flight) {
            let _ = self.conn.wait(&rx);
        }
    }
}

impl Read for SftpReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.current.len() {
            if self.eof {
                return Ok(0);
            }
            match self.next_chunk()? {
                Some(data) => {
                    self.current = data;
                    self.pos = 0;
                }
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len() - self.pos);
        buf[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl Drop for SftpReader {
    fn drop(&mut self) {
        self.drain();
        let _ = self.conn.close(&self.handle);
    }
}
