//! Decompression on a thread of its own.
//!
//! [`spawn`] starts a thread that reads the archive input, decompresses it
//! and sends owned chunks through a bounded channel; the [`ChannelReader`] it
//! returns reads them back on the caller's thread, so tar parsing and the
//! caller's work overlap with decompression. The thread reads the input to
//! its very end, and stops as soon as the reader is dropped.

use std::cell::Cell;
use std::io::{self, BufReader, Read};
use std::rc::Rc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use backup_core::archive::Compression;

/// Size of the chunks sent from the decompressor thread.
const CHUNK: usize = 256 * 1024;
/// Chunks buffered between the threads.
const DEPTH: usize = 4;

/// Where a failure came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// Reading the input itself failed.
    Input,
    /// The compressed data is corrupt or truncated.
    Decompress,
}

enum Msg {
    Data(Vec<u8>),
    Failed(Origin, io::Error),
    End,
}

/// Starts the decompressor thread for `input`, compressed with
/// `compression`, and returns the reader of its output and the thread.
pub(crate) fn spawn(
    input: Box<dyn Read + Send>,
    compression: Compression,
) -> io::Result<(ChannelReader, JoinHandle<()>)> {
    let (tx, rx) = sync_channel(DEPTH);
    let (recycle_tx, recycle_rx) = sync_channel(DEPTH + 2);
    let handle = std::thread::Builder::new()
        .name("archive-decompress".into())
        .spawn(move || run(input, compression, &tx, &recycle_rx))?;
    let reader = ChannelReader {
        rx,
        recycle: recycle_tx,
        chunk: Vec::new(),
        pos: 0,
        ended: false,
        failed: None,
    };
    Ok((reader, handle))
}

/// The decompressor thread's body.
fn run(
    input: Box<dyn Read + Send>,
    compression: Compression,
    tx: &SyncSender<Msg>,
    recycle: &Receiver<Vec<u8>>,
) {
    let input_failed = Rc::new(Cell::new(false));
    let src = TaggedInput {
        inner: input,
        failed: Rc::clone(&input_failed),
    };
    let outcome = match compression {
        Compression::None => pump(src, tx, recycle).map(|_| ()),
        Compression::Gzip => {
            let mut dec =
                flate2::bufread::MultiGzDecoder::new(BufReader::with_capacity(CHUNK, src));
            pump(&mut dec, tx, recycle).and_then(|alive| {
                if alive {
                    drain(dec.into_inner())
                } else {
                    Ok(())
                }
            })
        }
        Compression::Zstd => zstd::stream::read::Decoder::new(src).and_then(|mut dec| {
            let alive = pump(&mut dec, tx, recycle)?;
            if alive { drain(dec.finish()) } else { Ok(()) }
        }),
    };
    let msg = match outcome {
        Ok(()) => Msg::End,
        Err(e) if input_failed.get() => Msg::Failed(Origin::Input, e),
        // Decoders report corruption in several kinds; the contract wants
        // InvalidData for all but truncation.
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Msg::Failed(Origin::Decompress, e),
        Err(e) => Msg::Failed(
            Origin::Decompress,
            io::Error::new(io::ErrorKind::InvalidData, e.to_string()),
        ),
    };
    // The reader may be gone already; then nobody needs to know.
    let _ = tx.send(msg);
}

/// Sends everything `src` produces as chunks. `Ok(false)` when the reader
/// went away (stop quietly), `Ok(true)` at the end of `src`.
fn pump<R: Read>(
    mut src: R,
    tx: &SyncSender<Msg>,
    recycle: &Receiver<Vec<u8>>,
) -> io::Result<bool> {
    loop {
        let mut buf = recycle.try_recv().unwrap_or_default();
        buf.resize(CHUNK, 0);
        let mut filled = 0;
        while filled < CHUNK {
            match src.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    if filled > 0 {
                        buf.truncate(filled);
                        let _ = tx.send(Msg::Data(buf));
                    }
                    return Err(e);
                }
            }
        }
        if filled == 0 {
            return Ok(true);
        }
        buf.truncate(filled);
        if tx.send(Msg::Data(buf)).is_err() {
            return Ok(false);
        }
    }
}

/// Reads what follows the compressed stream, so the input is read to its end.
fn drain<R: Read>(mut rest: R) -> io::Result<()> {
    io::copy(&mut rest, &mut io::sink()).map(|_| ())
}

/// Remembers whether the input itself failed, to tell input errors from
/// decompression errors.
struct TaggedInput {
    inner: Box<dyn Read + Send>,
    failed: Rc<Cell<bool>>,
}

impl Read for TaggedInput {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf).inspect_err(|e| {
            if e.kind() != io::ErrorKind::Interrupted {
                self.failed.set(true);
            }
        })
    }
}

/// Reads the decompressed stream from the decompressor thread.
///
/// Dropping it stops the thread (its next send fails).
pub(crate) struct ChannelReader {
    rx: Receiver<Msg>,
    recycle: SyncSender<Vec<u8>>,
    chunk: Vec<u8>,
    pos: usize,
    ended: bool,
    failed: Option<(Origin, io::Error)>,
}

impl ChannelReader {
    /// Whether the end of the decompressed stream has been reached.
    pub(crate) fn at_end(&self) -> bool {
        self.ended && self.pos == self.chunk.len()
    }

    /// The error that stopped the stream, as a backup error naming whether
    /// reading or decompressing failed.
    pub(crate) fn take_error(&mut self) -> Option<backup_core::Error> {
        let (origin, e) = self.failed.take()?;
        let action = match origin {
            Origin::Input => "read",
            Origin::Decompress => "decompress",
        };
        Some(backup_core::Error::io(action, "archive", e))
    }

    fn next_chunk(&mut self) -> io::Result<()> {
        if let Some((_, e)) = &self.failed {
            return Err(io::Error::new(e.kind(), e.to_string()));
        }
        match self.rx.recv() {
            Ok(Msg::Data(data)) => {
                let old = std::mem::replace(&mut self.chunk, data);
                self.pos = 0;
                // Hand the buffer back; if the thread has enough, drop it.
                let _ = self.recycle.try_send(old);
                Ok(())
            }
            Ok(Msg::End) => {
                self.ended = true;
                Ok(())
            }
            Ok(Msg::Failed(origin, e)) => {
                let copy = io::Error::new(e.kind(), e.to_string());
                self.failed = Some((origin, e));
                Err(copy)
            }
            Err(_) => {
                let e = io::Error::other("decompressor thread stopped");
                let copy = io::Error::new(e.kind(), e.to_string());
                self.failed = Some((Origin::Decompress, e));
                Err(copy)
            }
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.pos < self.chunk.len() {
                let n = buf.len().min(self.chunk.len() - self.pos);
                buf[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
                self.pos += n;
                return Ok(n);
            }
            if self.ended || buf.is_empty() {
                return Ok(0);
            }
            self.next_chunk()?;
        }
    }
}
