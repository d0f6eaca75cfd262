//! Content hashing, abstract over the algorithm. The implementations (BLAKE3
//! for manifest entries, SHA-256 for data objects) live in `backup-archive`;
//! the engines only see these traits.

use std::fmt::Debug;
use std::io::{self, Read, Write};

/// An incremental hash.
pub trait StreamHasher: Send {
    fn update(&mut self, data: &[u8]);
    /// Lower-case hex of the digest.
    fn finish_hex(self: Box<Self>) -> String;
}

/// Makes the hashers the repository format uses.
pub trait Hashers: Debug + Send + Sync {
    /// SHA-256, recorded for every stored object (`sha256sum -c` works).
    fn sha256(&self) -> Box<dyn StreamHasher>;
    /// BLAKE3, recorded for every file in the manifest.
    fn blake3(&self) -> Box<dyn StreamHasher>;
}

/// A writer that hashes and counts what passes through it.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Box<dyn StreamHasher>,
    count: u64,
}

impl<W> std::fmt::Debug for HashingWriter<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HashingWriter")
            .field("count", &self.count)
            .finish_non_exhaustive()
    }
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W, hasher: Box<dyn StreamHasher>) -> Self {
        Self {
            inner,
            hasher,
            count: 0,
        }
    }

    /// The inner writer, the hex digest and the byte count.
    pub fn finish(self) -> (W, String, u64) {
        (self.inner, self.hasher.finish_hex(), self.count)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A reader that hashes and counts what passes through it.
pub struct HashingReader<R> {
    inner: R,
    hasher: Option<Box<dyn StreamHasher>>,
    count: u64,
}

impl<R> std::fmt::Debug for HashingReader<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HashingReader")
            .field("count", &self.count)
            .finish_non_exhaustive()
    }
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R, hasher: Box<dyn StreamHasher>) -> Self {
        Self {
            inner,
            hasher: Some(hasher),
            count: 0,
        }
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    /// The hex digest of everything read so far, and the count.
    pub fn finish(mut self) -> (String, u64) {
        let hex = self.hasher.take().map(StreamHasher::finish_hex);
        (hex.unwrap_or_default(), self.count)
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(h) = self.hasher.as_mut() {
            h.update(&buf[..n]);
        }
        self.count += n as u64;
        Ok(n)
    }
}

/// A cloneable handle to a shared hasher, so a hash can be read back after
/// the reader that feeds it has been moved into an unpacker.
#[derive(Clone)]
pub struct SharedHasher(std::sync::Arc<std::sync::Mutex<SharedState>>);

struct SharedState {
    hasher: Option<Box<dyn StreamHasher>>,
    count: u64,
}

impl std::fmt::Debug for SharedHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedHasher")
    }
}

impl SharedHasher {
    pub fn new(hasher: Box<dyn StreamHasher>) -> Self {
        Self(std::sync::Arc::new(std::sync::Mutex::new(SharedState {
            hasher: Some(hasher),
            count: 0,
        })))
    }

    fn update(&self, data: &[u8]) {
        let mut s = self.0.lock().expect("hasher lock poisoned");
        if let Some(h) = s.hasher.as_mut() {
            h.update(data);
        }
        s.count += data.len() as u64;
    }

    /// The digest and byte count of everything seen so far.
    pub fn finish(&self) -> (String, u64) {
        let mut s = self.0.lock().expect("hasher lock poisoned");
        let hex = s.hasher.take().map(StreamHasher::finish_hex);
        (hex.unwrap_or_default(), s.count)
    }

    /// Wraps a writer so every byte written is hashed into this hasher.
    pub fn writer<W: Write>(&self, inner: W) -> SharedHashWriter<W> {
        SharedHashWriter {
            inner,
            hasher: self.clone(),
        }
    }

    /// Wraps a reader so every byte read is hashed into this hasher.
    pub fn reader<R: Read>(&self, inner: R) -> SharedHashReader<R> {
        SharedHashReader {
            inner,
            hasher: self.clone(),
        }
    }
}

/// Reader half of [`SharedHasher`].
#[derive(Debug)]
pub struct SharedHashReader<R> {
    inner: R,
    hasher: SharedHasher,
}

impl<R: Read> Read for SharedHashReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Writer half of [`SharedHasher`].
#[derive(Debug)]
pub struct SharedHashWriter<W> {
    inner: W,
    hasher: SharedHasher,
}

impl<W: Write> Write for SharedHashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
