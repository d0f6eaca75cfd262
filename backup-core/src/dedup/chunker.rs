//! Content-defined chunking: `FastCDC` (Xia et al., USENIX ATC 2016) with a
//! gear hash and normalized chunking, as backupkit freezes it.
//!
//! A cut falls where the rolling hash of the last 64 bytes has its top bits
//! clear, so the same content is cut in the same places wherever it sits in
//! a stream: an insertion moves the cuts near it and no others. Normalized
//! chunking asks for more clear bits before the average size and fewer after
//! it, which narrows the spread of sizes around the average.
//!
//! Everything that decides a cut is fixed here and recorded in the
//! repository ([`ChunkerParams`]): the algorithm name, the three sizes, the
//! normalization level and the gear table's seed. Changing any of it would
//! only lose deduplication (old chunks stay readable), but the golden
//! vectors in the tests make sure it never changes by accident.

use std::fmt;

/// The name recorded for this algorithm; a repository written with another
/// name is refused by this chunker.
pub const ALGORITHM: &str = "fastcdc-gear64-v1";

/// What decides where chunks end. Stored in the repository's configuration
/// and never changed for a repository.
#[derive(Clone, PartialEq, Eq)]
pub struct ChunkerParams {
    /// No chunk is shorter, except the last of a stream or one ended by a
    /// forced cut.
    pub min_size: usize,
    /// The target average; a power of two.
    pub avg_size: usize,
    /// No chunk is longer.
    pub max_size: usize,
    /// Normalization level (0 to 3): how many more hash bits must be clear
    /// before `avg_size`, and how many fewer after it.
    pub level: u32,
    /// Seeds the gear table (the repository's own, so that cut points
    /// differ between repositories).
    pub seed: [u8; 32],
}

impl fmt::Debug for ChunkerParams {
    // The seed is repository key material: never shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChunkerParams")
            .field("min_size", &self.min_size)
            .field("avg_size", &self.avg_size)
            .field("max_size", &self.max_size)
            .field("level", &self.level)
            .finish_non_exhaustive()
    }
}

impl ChunkerParams {
    /// backupkit's defaults: 256 KiB / 1 MiB / 4 MiB, level 2.
    #[must_use]
    pub fn new(seed: [u8; 32]) -> Self {
        Self {
            min_size: 256 << 10,
            avg_size: 1 << 20,
            max_size: 4 << 20,
            level: 2,
            seed,
        }
    }

    /// Checks that the sizes make sense together.
    ///
    /// # Errors
    ///
    /// [`crate::Error::InvalidInput`] naming what is wrong.
    pub fn validate(&self) -> crate::Result<()> {
        let bad = |why: String| Err(crate::Error::InvalidInput(format!("chunker: {why}")));
        if !self.avg_size.is_power_of_two() || self.avg_size < 256 {
            return bad(format!(
                "the average size {} is not a power of two of at least 256",
                self.avg_size
            ));
        }
        if self.min_size == 0 || self.min_size > self.avg_size || self.avg_size > self.max_size {
            return bad(format!(
                "sizes {} / {} / {} are not min <= average <= max (min > 0)",
                self.min_size, self.avg_size, self.max_size
            ));
        }
        if self.max_size > 64 << 20 {
            return bad(format!("the maximum size {} is over 64 MiB", self.max_size));
        }
        if self.level > 3 {
            return bad(format!("normalization level {} is over 3", self.level));
        }
        Ok(())
    }
}

/// Finds cut points in a byte slice.
#[derive(Clone)]
pub struct Cutter {
    gear: Box<[u64; 256]>,
    min: usize,
    avg: usize,
    max: usize,
    /// Must be clear before `avg`: more bits, so cuts are rarer there.
    mask_small: u64,
    /// Must be clear after `avg`: fewer bits, so cuts come sooner.
    mask_large: u64,
}

impl fmt::Debug for Cutter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cutter")
            .field("min", &self.min)
            .field("avg", &self.avg)
            .field("max", &self.max)
            .finish_non_exhaustive()
    }
}

/// The top `bits` bits of a `u64` set. The gear hash shifts left, so its
/// top bits depend on the last 64 bytes and its low bits on fewer.
fn top_bits(bits: u32) -> u64 {
    if bits == 0 {
        0
    } else {
        u64::MAX << (64 - bits.min(64))
    }
}

/// `SplitMix64` (Steele, Lea, Flood 2014): expands the seed into the gear
/// table. Frozen: the table is part of the format.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Cutter {
    /// A cutter for `params`.
    ///
    /// # Errors
    ///
    /// As [`ChunkerParams::validate`].
    pub fn new(params: &ChunkerParams) -> crate::Result<Self> {
        params.validate()?;
        // Four independent streams, one per 8-byte word of the seed, taken
        // in turn: every seed byte affects the table.
        let mut states: [u64; 4] = std::array::from_fn(|i| {
            u64::from_le_bytes(params.seed[i * 8..i * 8 + 8].try_into().expect("8 bytes"))
        });
        let mut gear = Box::new([0u64; 256]);
        for (i, g) in gear.iter_mut().enumerate() {
            *g = splitmix64(&mut states[i % 4]);
        }
        let bits = params.avg_size.trailing_zeros();
        Ok(Self {
            gear,
            min: params.min_size,
            avg: params.avg_size,
            max: params.max_size,
            mask_small: top_bits(bits + params.level),
            mask_large: top_bits(bits.saturating_sub(params.level)),
        })
    }

    /// The longest chunk this cutter makes.
    #[must_use]
    pub fn max_size(&self) -> usize {
        self.max
    }

    /// The length of the chunk that starts at `data[0]`: where the content
    /// says to cut, else `max_size`, else (fewer bytes than that) all of
    /// `data`. The caller passes at least `max_size` bytes unless the
    /// stream ends there.
    #[must_use]
    pub fn cut(&self, data: &[u8]) -> usize {
        let n = data.len().min(self.max);
        if n <= self.min {
            return n;
        }
        let normal = self.avg.min(n);
        let mut h = 0u64;
        let mut i = self.min;
        while i < normal {
            h = (h << 1).wrapping_add(self.gear[usize::from(data[i])]);
            if h & self.mask_small == 0 {
                return i + 1;
            }
            i += 1;
        }
        while i < n {
            h = (h << 1).wrapping_add(self.gear[usize::from(data[i])]);
            if h & self.mask_large == 0 {
                return i + 1;
            }
            i += 1;
        }
        n
    }
}

/// Cuts a stream that arrives in pieces, holding at most `max_size` bytes
/// plus one piece: [`Chunker::push`] bytes, take finished chunks from the
/// callback, [`Chunker::cut_here`] to end a chunk at a boundary the caller
/// chooses (before and after a large file's data), [`Chunker::finish`] at the
/// end. The chunks are the same however the stream is split into pushes.
#[derive(Debug)]
pub struct Chunker {
    cutter: Cutter,
    buf: Vec<u8>,
    /// Where the next chunk starts in `buf`.
    start: usize,
}

impl Chunker {
    /// A chunker with an empty stream.
    #[must_use]
    pub fn new(cutter: Cutter) -> Self {
        let cap = cutter.max * 2;
        Self {
            cutter,
            buf: Vec::with_capacity(cap),
            start: 0,
        }
    }

    /// Bytes taken in and not yet given out as a chunk.
    #[must_use]
    pub fn pending(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Adds bytes; `chunk` gets every chunk that is now decided, in order.
    ///
    /// # Errors
    ///
    /// Whatever `chunk` returns; the chunker is then unusable.
    pub fn push<E>(
        &mut self,
        mut data: &[u8],
        chunk: &mut dyn FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        let max = self.cutter.max;
        while !data.is_empty() {
            // The buffer holds two chunks' worth: when it is full, fewer
            // than `max` bytes are undecided; move them to the front.
            if self.buf.len() == max * 2 {
                self.buf.copy_within(self.start.., 0);
                self.buf.truncate(self.buf.len() - self.start);
                self.start = 0;
            }
            let room = max * 2 - self.buf.len();
            let (now, later) = data.split_at(room.min(data.len()));
            self.buf.extend_from_slice(now);
            data = later;
            while self.pending() >= max {
                let n = self.cutter.cut(&self.buf[self.start..]);
                chunk(&self.buf[self.start..self.start + n])?;
                self.start += n;
            }
        }
        Ok(())
    }

    /// Ends the current chunk here, whatever its length, so that the next
    /// byte starts a chunk (cut points inside what was pending are still
    /// the content's).
    ///
    /// # Errors
    ///
    /// Whatever `chunk` returns.
    pub fn cut_here<E>(&mut self, chunk: &mut dyn FnMut(&[u8]) -> Result<(), E>) -> Result<(), E> {
        while self.pending() > 0 {
            let n = self.cutter.cut(&self.buf[self.start..]);
            chunk(&self.buf[self.start..self.start + n])?;
            self.start += n;
        }
        self.buf.clear();
        self.start = 0;
        Ok(())
    }

    /// Ends the stream: what is pending becomes the last chunks.
    ///
    /// # Errors
    ///
    /// Whatever `chunk` returns.
    pub fn finish<E>(mut self, chunk: &mut dyn FnMut(&[u8]) -> Result<(), E>) -> Result<(), E> {
        self.cut_here(chunk)
    }
}
