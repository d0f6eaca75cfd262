//! Writing a data object on a thread of its own.
//!
//! The thread that packs (reads files, hashes them, frames tar entries)
//! is the busiest in a backup; hashing and writing the compressed output
//! there would put SHA-256 and every `write` on that critical path. Instead
//! the output travels in 256 KiB chunks through a small bounded channel
//! (1 MiB in flight) to a writer thread that hashes and writes it.

use std::io::{self, Write};
use std::sync::mpsc::{SyncSender, sync_channel};
use std::thread::JoinHandle;

use crate::hash::StreamHasher;
use crate::target::ObjectWriter;
use crate::{Error, Result};

const CHUNK: usize = 256 * 1024;
const IN_FLIGHT: usize = 4;

/// What the writer thread hands back: the uncommitted object, its SHA-256
/// and its size.
type Written = (Box<dyn ObjectWriter>, String, u64);

/// The `Write` end, given to the packer. Dropping it ends the stream.
pub(crate) struct ObjectSink {
    tx: Option<SyncSender<Vec<u8>>>,
    buf: Vec<u8>,
}

/// The writer thread; [`SinkHandle::finish`] waits for it.
pub(crate) struct SinkHandle {
    thread: JoinHandle<io::Result<Written>>,
}

/// Starts a writer thread for `out`.
pub(crate) fn spawn(
    mut out: Box<dyn ObjectWriter>,
    mut hasher: Box<dyn StreamHasher>,
) -> Result<(ObjectSink, SinkHandle)> {
    let (tx, rx) = sync_channel::<Vec<u8>>(IN_FLIGHT);
    let thread = std::thread::Builder::new()
        .name("backupkit-write".into())
        .spawn(move || {
            let mut count = 0u64;
            for chunk in rx {
                out.write_all(&chunk)?;
                hasher.update(&chunk);
                count += chunk.len() as u64;
            }
            out.flush()?;
            Ok((out, hasher.finish_hex(), count))
        })
        .map_err(|e| Error::io("start", "writer thread", e))?;
    Ok((
        ObjectSink {
            tx: Some(tx),
            buf: Vec::with_capacity(CHUNK),
        },
        SinkHandle { thread },
    ))
}

impl ObjectSink {
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        let tx = self.tx.as_ref().ok_or_else(stopped)?;
        tx.send(chunk).map_err(|_| stopped())
    }
}

fn stopped() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "the data object writer stopped")
}

impl Write for ObjectSink {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = CHUNK - self.buf.len();
        let n = data.len().min(room);
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

impl Drop for ObjectSink {
    fn drop(&mut self) {
        // The rest of the stream; if the writer already failed, its error is
        // what `finish` reports.
        let _ = self.send();
        self.tx.take();
    }
}

impl SinkHandle {
    /// Waits for the writer thread (its `ObjectSink` must be dropped first)
    /// and returns the uncommitted object, its SHA-256 and its size.
    pub(crate) fn finish(self, key: &str) -> Result<Written> {
        match self.thread.join() {
            Ok(r) => r.map_err(|e| Error::io("write", key, e)),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}
