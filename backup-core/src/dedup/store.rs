//! Storing a byte stream as chunks, and reading it back.
//!
//! [`ChunkStore`] is a deduplicated repository's data half: it knows which
//! chunks the repository holds (from the index fragments), writes new ones
//! into packs, and reads chunks back out of packs with ranged reads.
//! [`StreamWriter`] cuts a stream into chunks and stores the new ones;
//! [`StreamReader`] plays a list of chunks back as a stream, checking every
//! chunk against its id.
//!
//! Order of writes, so that a crash at any moment leaves only garbage and
//! never a reference to something missing: packs first, then the index
//! fragment that lists them, then (the caller's) chunk list and snapshot.
//!
//! Memory: the chunker holds two maximum chunks (8 MiB), the open pack up to
//! 16 MiB plus one chunk. What the repository holds is known from a sorted
//! array of the first 128 bits of every chunk id, 16 bytes per chunk: 160 MB
//! for 10 million chunks, that is 10 TB at the 1 MiB average (a collision of
//! two ids' first 128 bits among 10 million is about as likely as 1 in
//! 10^25). Where chunks are is loaded only for the chunks a reader needs,
//! streaming the index fragments (each at most 17 MiB) past that list.

use std::borrow::{Borrow, BorrowMut};
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::sync::Arc;

use super::chunker::{Chunker, Cutter};
use super::codec::{ChunkCodec, ChunkId};
use super::index::{self, PackIndex};
use super::pack::{self, PackBuilder, PackEntry};
use crate::hash::Hashers;
use crate::target::{Target, TargetExt};
use crate::{Error, Result};

/// Index fragments live under this prefix.
pub const INDEX_PREFIX: &str = "index/";

/// Where a stored chunk is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Location {
    /// Position in [`ChunkStore`]'s pack table.
    pack: u32,
    offset: u32,
    stored_len: u32,
    raw_len: u32,
}

/// A deduplicated repository's chunks.
pub struct ChunkStore {
    target: Arc<dyn Target>,
    codec: Arc<dyn ChunkCodec>,
    /// SHA-256 names packs and index fragments.
    hashers: Arc<dyn Hashers>,
    key: [u8; 32],
    cutter: Cutter,
    level: i32,
    /// The first 128 bits of every indexed chunk's id, sorted.
    indexed: Vec<u128>,
    /// Chunks stored by this store since the index was read.
    added: std::collections::HashSet<u128>,
    /// Pack names, for `located`.
    packs: Vec<ChunkId>,
    /// Where the chunks that readers asked for (and those added) are.
    located: HashMap<ChunkId, Location>,
    /// Packs a prune has marked for deletion (see [`super::prune`]):
    /// writers do not use their chunks, readers prefer other copies.
    marked: std::collections::HashSet<ChunkId>,
    /// Whether `marked` was read.
    marks_read: bool,
}

impl std::fmt::Debug for ChunkStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the dedup key.
        f.debug_struct("ChunkStore")
            .field("target", &self.target.location())
            .field("indexed", &self.indexed.len())
            .field("added", &self.added.len())
            .field("marked", &self.marked.len())
            .finish_non_exhaustive()
    }
}

/// The part of an id the membership array keeps.
pub(super) fn prefix(id: &ChunkId) -> u128 {
    u128::from_be_bytes(id.0[..16].try_into().expect("16 bytes"))
}

/// What a stream cost to store.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamSummary {
    /// The stream's chunks, in order, with their plaintext lengths.
    pub chunks: Vec<(ChunkId, u32)>,
    /// Bytes of the stream.
    pub bytes: u64,
    /// Chunks stored by this stream (the others were stored already).
    pub new_chunks: u64,
    /// Plaintext bytes of the new chunks.
    pub new_bytes: u64,
    /// Bytes written to the target: packs and index fragments.
    pub stored_bytes: u64,
    /// Packs written.
    pub packs: Vec<String>,
}

impl ChunkStore {
    /// A store over `target` that knows nothing yet; [`Self::load_index`]
    /// reads what the repository holds.
    #[must_use]
    pub fn new(
        target: Arc<dyn Target>,
        codec: Arc<dyn ChunkCodec>,
        hashers: Arc<dyn Hashers>,
        key: [u8; 32],
        cutter: Cutter,
        level: i32,
    ) -> Self {
        Self {
            target,
            codec,
            hashers,
            key,
            cutter,
            level,
            indexed: Vec::new(),
            added: std::collections::HashSet::new(),
            packs: Vec::new(),
            located: HashMap::new(),
            marked: std::collections::HashSet::new(),
            marks_read: false,
        }
    }

    /// The same store, cutting the streams written from now on with
    /// `cutter` (a manifest is cut finer than the tree it lists).
    #[must_use]
    pub fn with_cutter(mut self, cutter: Cutter) -> Self {
        self.cutter = cutter;
        self
    }

    /// The target the store is on.
    #[must_use]
    pub fn target(&self) -> &Arc<dyn Target> {
        &self.target
    }

    /// Reads which packs a prune has marked; a backup calls this (after
    /// taking its lock) before [`Self::load_index`], so that it stores its
    /// own copy of any chunk that only a marked pack holds.
    ///
    /// # Errors
    ///
    /// Listing failed, or a mark cannot be read ([`Error::Integrity`]:
    /// which packs to avoid is unknown; `prune` removes a damaged mark).
    pub fn avoid_marked(&mut self) -> Result<()> {
        self.marked = self.read_marked(true)?;
        self.marks_read = true;
        Ok(())
    }

    /// The index fragments' keys, sorted.
    pub(super) fn fragment_keys(&self) -> Result<Vec<String>> {
        let mut keys: Vec<String> = self
            .target
            .list(INDEX_PREFIX)?
            .into_iter()
            .map(|o| o.key)
            .collect();
        keys.sort();
        Ok(keys)
    }

    /// Lower-case hex SHA-256 of `bytes` (the name of a pack or fragment).
    pub(super) fn sha256_hex(&self, bytes: &[u8]) -> String {
        let mut h = self.hashers.sha256();
        h.update(bytes);
        h.finish_hex()
    }

    /// Calls `each` for every pack of every index fragment, one fragment
    /// in memory at a time.
    fn each_fragment(&self, each: &mut dyn FnMut(PackIndex)) -> Result<()> {
        self.each_keyed_fragment(&mut |_, packs| packs.into_iter().for_each(&mut *each))
    }

    /// One fragment's packs; `None` if it is gone.
    pub(super) fn read_fragment(&self, key: &str) -> Result<Option<Vec<PackIndex>>> {
        let bytes = match self.target.get_bytes(key) {
            Ok(b) => b,
            Err(Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        index::decode(&bytes)
            .map(Some)
            .map_err(|detail| Error::Integrity {
                snapshot: key.to_owned(),
                detail,
            })
    }

    /// Calls `each` for every index fragment, with its key, one in memory
    /// at a time. A fragment that vanished since the listing was replaced
    /// by a sweep (which writes the replacement first): the fragments are
    /// listed again, and those not seen yet read too.
    pub(super) fn each_keyed_fragment(
        &self,
        each: &mut dyn FnMut(&str, Vec<PackIndex>),
    ) -> Result<()> {
        let mut seen = std::collections::HashSet::new();
        loop {
            let mut vanished = false;
            for key in self.fragment_keys()? {
                if !seen.insert(key.clone()) {
                    continue;
                }
                match self.read_fragment(&key)? {
                    Some(packs) => each(&key, packs),
                    None => vanished = true,
                }
            }
            if !vanished {
                return Ok(());
            }
        }
    }

    /// The packs prune marks name; with `strict`, a mark that cannot be
    /// read is an error, otherwise it is passed over.
    fn read_marked(&self, strict: bool) -> Result<std::collections::HashSet<ChunkId>> {
        let mut marked = std::collections::HashSet::new();
        for m in super::prune::read_marks(self.target.as_ref())? {
            if let (Some(why), true) = (&m.unreadable, strict) {
                return Err(Error::Integrity {
                    snapshot: format!("{}{}", super::prune::PRUNE_PREFIX, m.name),
                    detail: format!(
                        "a prune mark cannot be read ({why}); `backupkit prune` removes it"
                    ),
                });
            }
            for p in m.mark.map(|m| m.packs).unwrap_or_default() {
                match ChunkId::from_hex(&p) {
                    Ok(id) => {
                        marked.insert(id);
                    }
                    Err(e) if strict => return Err(e),
                    Err(_) => {}
                }
            }
        }
        Ok(marked)
    }

    /// Reads which chunks the repository holds, from every index fragment
    /// (leaving out the packs a prune marked, if [`Self::avoid_marked`] read
    /// them).
    ///
    /// # Errors
    ///
    /// A fragment that cannot be read or is damaged ([`Error::Integrity`]
    /// naming it: `check` reports it, a scan of the packs can rebuild it).
    pub fn load_index(&mut self) -> Result<()> {
        let mut indexed = Vec::new();
        let marked = &self.marked;
        self.each_fragment(&mut |p| {
            if !marked.contains(&p.pack) {
                indexed.extend(p.entries.iter().map(|e| prefix(&e.id)));
            }
        })?;
        indexed.sort_unstable();
        indexed.dedup();
        indexed.shrink_to_fit();
        self.indexed = indexed;
        Ok(())
    }

    /// Reads where the chunks in `wanted` are (those not known yet), from
    /// every index fragment; what is not in `wanted` is not kept.
    ///
    /// # Errors
    ///
    /// As [`Self::load_index`].
    pub fn load_locations(&mut self, wanted: &[ChunkId]) -> Result<()> {
        let mut wanted: std::collections::HashSet<ChunkId> = wanted
            .iter()
            .filter(|id| !self.located.contains_key(id))
            .copied()
            .collect();
        if wanted.is_empty() {
            return Ok(());
        }
        if !self.marks_read {
            // Only a preference for readers: a mark that cannot be read
            // changes nothing they can read.
            self.marked = self.read_marked(false)?;
            self.marks_read = true;
        }
        // A chunk in a marked pack and in another is read from the other,
        // which no sweep deletes while this reader holds its lock.
        let mut found = Vec::new();
        let mut fallback = Vec::new();
        let marked = &self.marked;
        self.each_fragment(&mut |p| {
            let in_marked = marked.contains(&p.pack);
            let mine: Vec<PackEntry> = p
                .entries
                .iter()
                .filter(|e| {
                    if in_marked {
                        wanted.contains(&e.id)
                    } else {
                        wanted.remove(&e.id)
                    }
                })
                .copied()
                .collect();
            if !mine.is_empty() {
                let at = if in_marked { &mut fallback } else { &mut found };
                at.push(PackIndex {
                    pack: p.pack,
                    entries: mine,
                });
            }
        })?;
        for p in found.iter().chain(&fallback) {
            self.add_locations(p);
        }
        Ok(())
    }

    /// Stores index fragments listing `written` (a new fragment once one
    /// holds half of [`index::MAX_ENTRIES`], so that the pack added last
    /// cannot take it over the limit); `before` is told each key first.
    /// Returns the bytes written.
    pub(super) fn write_fragments(
        &self,
        written: Vec<PackIndex>,
        before: &mut dyn FnMut(&str) -> Result<()>,
    ) -> Result<u64> {
        let mut stored = 0;
        let mut group: Vec<PackIndex> = Vec::new();
        let mut count = 0;
        let last = written.len();
        for (i, p) in written.into_iter().enumerate() {
            count += p.entries.len();
            group.push(p);
            if i + 1 == last || count >= index::MAX_ENTRIES / 2 {
                let bytes = index::encode(&group);
                let key = format!("{INDEX_PREFIX}{}", self.sha256_hex(&bytes));
                before(&key)?;
                self.target.put_bytes(&key, &bytes)?;
                stored += bytes.len() as u64;
                group.clear();
                count = 0;
            }
        }
        Ok(stored)
    }

    /// Checks one record read from a pack against its entry and id.
    pub(super) fn open_record(
        &self,
        entry: &PackEntry,
        record: &[u8],
    ) -> std::result::Result<Vec<u8>, String> {
        pack::open_record(self.codec.as_ref(), &self.key, entry, record)
    }

    /// A builder of packs whose salt records are this repository's chunks.
    pub(super) fn pack_builder(&self) -> PackBuilder {
        PackBuilder::new(Arc::clone(&self.codec), self.key)
    }

    /// The hashers naming packs.
    pub(super) fn hashers(&self) -> &dyn Hashers {
        self.hashers.as_ref()
    }

    fn add_locations(&mut self, p: &PackIndex) {
        let n = u32::try_from(self.packs.len()).expect("fewer than 2^32 packs");
        self.packs.push(p.pack);
        for e in &p.entries {
            self.located.entry(e.id).or_insert(Location {
                pack: n,
                offset: e.offset,
                stored_len: e.stored_len,
                raw_len: e.raw_len,
            });
        }
    }

    /// Whether the repository holds chunk `id`.
    #[must_use]
    pub fn contains(&self, id: &ChunkId) -> bool {
        let p = prefix(id);
        self.added.contains(&p) || self.indexed.binary_search(&p).is_ok()
    }

    /// How many chunks the repository holds.
    #[must_use]
    pub fn len(&self) -> usize {
        self.indexed.len() + self.added.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Where chunk `id` is, if its location was loaded
    /// ([`Self::load_locations`]) or it was stored by this store: the
    /// pack's name and the record.
    #[must_use]
    pub fn locate(&self, id: &ChunkId) -> Option<(String, PackEntry)> {
        let l = self.located.get(id)?;
        Some((
            self.packs[l.pack as usize].to_hex(),
            PackEntry {
                id: *id,
                offset: l.offset,
                stored_len: l.stored_len,
                raw_len: l.raw_len,
            },
        ))
    }

    /// Reads chunk `id` and checks it against its id.
    ///
    /// # Errors
    ///
    /// [`Error::Integrity`] for a chunk the index does not know or whose
    /// record is damaged; the target's error for a failed read.
    pub fn read_chunk(&self, id: &ChunkId) -> Result<Vec<u8>> {
        let (pack_id, entry) = self.locate(id).ok_or_else(|| Error::Integrity {
            snapshot: format!("chunk {id}"),
            detail: "no index fragment lists it".into(),
        })?;
        let key = pack::pack_key(&pack_id);
        let mut record = Vec::with_capacity(usize::try_from(entry.record_len()).unwrap_or(0));
        self.target
            .get_range(&key, u64::from(entry.offset), entry.record_len())?
            .read_to_end(&mut record)
            .map_err(|e| Error::io("read", format!("{}/{key}", self.target.location()), e))?;
        pack::open_record(self.codec.as_ref(), &self.key, &entry, &record).map_err(|detail| {
            Error::Integrity {
                snapshot: key,
                detail,
            }
        })
    }

    /// Starts storing a stream.
    ///
    /// # Errors
    ///
    /// The compression threads could not be started.
    pub fn writer(&mut self) -> Result<StreamWriter<&mut ChunkStore>> {
        StreamWriter::start(self)
    }

    /// Starts storing a stream with a writer that owns the store (to hand
    /// to another thread); [`StreamWriter::finish`] gives it back.
    ///
    /// # Errors
    ///
    /// The compression threads could not be started.
    pub fn into_writer(self) -> Result<StreamWriter<ChunkStore>> {
        StreamWriter::start(self)
    }

    /// Plays `chunks` back as one stream, after loading their locations.
    ///
    /// # Errors
    ///
    /// As [`Self::load_locations`].
    pub fn reader(&mut self, chunks: Vec<ChunkId>) -> Result<StreamReader<&ChunkStore>> {
        self.load_locations(&chunks)?;
        Ok(StreamReader::new(self, chunks))
    }

    /// As [`Self::reader`], with a reader that owns the store (to hand to
    /// an unpacker on another thread).
    ///
    /// # Errors
    ///
    /// As [`Self::load_locations`].
    pub fn into_reader(mut self, chunks: Vec<ChunkId>) -> Result<StreamReader<ChunkStore>> {
        self.load_locations(&chunks)?;
        Ok(StreamReader::new(self, chunks))
    }
}

/// A compressed chunk coming back from the pool: id, plaintext length,
/// zstd frame.
type Compressed = io::Result<(ChunkId, usize, Vec<u8>)>;

/// Compresses chunks on worker threads (one per core, at most four). At
/// most two chunks per worker wait, so memory stays bounded.
#[derive(Debug)]
struct Pool {
    jobs: Option<std::sync::mpsc::SyncSender<(ChunkId, Vec<u8>)>>,
    done: std::sync::mpsc::Receiver<Compressed>,
    threads: Vec<std::thread::JoinHandle<()>>,
    /// Chunks sent and not yet taken back.
    outstanding: usize,
}

impl Pool {
    fn start(codec: &Arc<dyn ChunkCodec>, level: i32) -> Result<Self> {
        let workers = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
        let (jobs, rx) = std::sync::mpsc::sync_channel::<(ChunkId, Vec<u8>)>(workers * 2);
        let rx = Arc::new(std::sync::Mutex::new(rx));
        let (tx, done) = std::sync::mpsc::channel::<Compressed>();
        let mut threads = Vec::with_capacity(workers);
        for _ in 0..workers {
            let (rx, tx, codec) = (Arc::clone(&rx), tx.clone(), Arc::clone(codec));
            let t = std::thread::Builder::new()
                .name("backupkit-compress".into())
                .spawn(move || {
                    loop {
                        let job = rx.lock().map(|r| r.recv());
                        let Ok(Ok((id, data))) = job else { break };
                        let mut frame = Vec::new();
                        let r = codec.compress(&data, level, &mut frame);
                        if tx.send(r.map(|()| (id, data.len(), frame))).is_err() {
                            break;
                        }
                    }
                })
                .map_err(|e| Error::io("start", "compression thread", e))?;
            threads.push(t);
        }
        Ok(Self {
            jobs: Some(jobs),
            done,
            threads,
            outstanding: 0,
        })
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // Closing the job channel ends the workers once they are idle; the
        // results channel is unbounded, so none waits to hand one back.
        self.jobs.take();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Stores built packs on a thread of its own, one at a time, so that the
/// stream goes on being cut, hashed and compressed while a pack is written
/// and synced. The channel is a rendezvous: at most one pack is being
/// stored while the next is built.
#[derive(Debug)]
struct PackWriter {
    packs: Option<std::sync::mpsc::SyncSender<(String, Vec<u8>)>>,
    thread: Option<std::thread::JoinHandle<Result<()>>>,
}

impl PackWriter {
    fn start(target: Arc<dyn Target>) -> Result<Self> {
        let (packs, rx) = std::sync::mpsc::sync_channel::<(String, Vec<u8>)>(0);
        let thread = std::thread::Builder::new()
            .name("backupkit-packs".into())
            .spawn(move || {
                for (key, bytes) in rx {
                    target.put_bytes(&key, &bytes)?;
                }
                Ok(())
            })
            .map_err(|e| Error::io("start", "the pack writer", e))?;
        Ok(Self {
            packs: Some(packs),
            thread: Some(thread),
        })
    }

    /// Hands a pack over to be stored.
    fn send(&mut self, key: String, bytes: Vec<u8>) -> Result<()> {
        let sent = self
            .packs
            .as_ref()
            .is_some_and(|p| p.send((key, bytes)).is_ok());
        if sent {
            return Ok(());
        }
        // The writer stopped: at its error.
        self.finish()?;
        Err(Error::io(
            "write",
            "a pack",
            io::Error::other("the pack writer stopped"),
        ))
    }

    /// Waits until every pack handed over is stored.
    fn finish(&mut self) -> Result<()> {
        self.packs.take();
        match self.thread.take().map(std::thread::JoinHandle::join) {
            None => Ok(()),
            Some(Ok(stored)) => stored,
            Some(Err(_)) => Err(Error::io(
                "write",
                "a pack",
                io::Error::other("the pack writer panicked"),
            )),
        }
    }
}

impl Drop for PackWriter {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

/// Cuts a stream into chunks and stores the ones the repository lacks.
/// Nothing is referenced until [`StreamWriter::finish`] has stored every
/// pack and the index fragment that lists them.
#[derive(Debug)]
pub struct StreamWriter<S: BorrowMut<ChunkStore>> {
    store: S,
    chunker: Option<Chunker>,
    pool: Pool,
    packs: PackWriter,
    /// New chunks sent for compression and not yet stored in a pack.
    pending: std::collections::HashSet<ChunkId>,
    pack: PackBuilder,
    /// Packs stored by this stream, for its index fragment.
    written: Vec<PackIndex>,
    summary: StreamSummary,
}

impl<S: BorrowMut<ChunkStore>> StreamWriter<S> {
    fn start(store: S) -> Result<Self> {
        let s: &ChunkStore = store.borrow();
        let pack = s.pack_builder();
        Ok(StreamWriter {
            chunker: Some(Chunker::new(s.cutter.clone())),
            pool: Pool::start(&s.codec, s.level)?,
            packs: PackWriter::start(Arc::clone(&s.target))?,
            pending: std::collections::HashSet::new(),
            store,
            pack,
            written: Vec::new(),
            summary: StreamSummary::default(),
        })
    }

    fn take(&mut self, chunk: &[u8]) -> Result<()> {
        let store: &ChunkStore = self.store.borrow();
        let id = store.codec.chunk_id(&store.key, chunk);
        let len = u32::try_from(chunk.len()).expect("chunks are under 64 MiB");
        self.summary.chunks.push((id, len));
        self.summary.bytes += u64::from(len);
        if store.contains(&id) || !self.pending.insert(id) {
            return Ok(());
        }
        self.summary.new_chunks += 1;
        self.summary.new_bytes += u64::from(len);
        // The job channel is bounded: while it is full, take results back
        // (waiting for one), so that memory stays bounded.
        let mut job = Some((id, chunk.to_vec()));
        while let Some(j) = job.take() {
            let jobs = self.pool.jobs.as_ref().expect("pool open while writing");
            match jobs.try_send(j) {
                Ok(()) => self.pool.outstanding += 1,
                Err(std::sync::mpsc::TrySendError::Full(j)) => {
                    job = Some(j);
                    self.place_one(true)?;
                }
                Err(std::sync::mpsc::TrySendError::Disconnected(_)) => {
                    return Err(Error::io(
                        "compress",
                        format!("chunk {id}"),
                        io::Error::other("the compression threads stopped"),
                    ));
                }
            }
        }
        while self.place_one(false)? {}
        Ok(())
    }

    /// Puts one compressed chunk into the pack, waiting for one if `wait`;
    /// returns whether there was one.
    fn place_one(&mut self, wait: bool) -> Result<bool> {
        if self.pool.outstanding == 0 {
            return Ok(false);
        }
        let got = if wait {
            self.pool.done.recv().ok()
        } else {
            self.pool.done.try_recv().ok()
        };
        let Some(result) = got else {
            return Ok(false);
        };
        self.pool.outstanding -= 1;
        let (id, raw_len, frame) = result.map_err(|e| Error::io("compress", "a chunk", e))?;
        self.pack
            .add_compressed(id, raw_len, &frame)
            .map_err(|e| Error::io("compress", format!("chunk {id}"), e))?;
        if self.pack.is_full() {
            self.flush_pack()?;
        }
        Ok(true)
    }

    /// Stores the open pack, and makes its chunks known.
    fn flush_pack(&mut self) -> Result<()> {
        if self.pack.is_empty() {
            return Ok(());
        }
        let store: &mut ChunkStore = self.store.borrow_mut();
        let built = self.pack.finish(store.hashers.as_ref());
        self.summary.stored_bytes += built.bytes.len() as u64;
        self.packs.send(pack::pack_key(&built.id), built.bytes)?;
        let entry = PackIndex {
            pack: ChunkId::from_hex(&built.id)?,
            entries: built.entries,
        };
        store
            .added
            .extend(entry.entries.iter().map(|e| prefix(&e.id)));
        for e in &entry.entries {
            self.pending.remove(&e.id);
        }
        store.add_locations(&entry);
        self.summary.packs.push(built.id);
        self.written.push(entry);
        Ok(())
    }

    /// Ends a chunk here (before and after a large file's data, so that an
    /// unchanged file gives the same chunks wherever it sits).
    ///
    /// # Errors
    ///
    /// Storing a pack failed.
    pub fn cut_here(&mut self) -> Result<()> {
        let mut chunker = self.chunker.take().expect("writer in use");
        let r = chunker.cut_here(&mut |c: &[u8]| self.take(c));
        self.chunker = Some(chunker);
        r
    }

    /// Whether every chunk of `chunks` is stored (or being stored by this
    /// stream), so that [`Self::splice`] may refer to them.
    #[must_use]
    pub fn holds_all(&self, chunks: &[(ChunkId, u32)]) -> bool {
        let store: &ChunkStore = self.store.borrow();
        chunks
            .iter()
            .all(|(id, _)| store.contains(id) || self.pending.contains(id))
    }

    /// Ends a chunk here, then continues the stream with `chunks`, already
    /// stored, without their data (an unchanged large file, known from the
    /// stat cache). The caller checks [`Self::holds_all`] first.
    ///
    /// # Errors
    ///
    /// As [`Self::cut_here`].
    pub fn splice(&mut self, chunks: &[(ChunkId, u32)]) -> Result<()> {
        self.cut_here()?;
        debug_assert!(self.holds_all(chunks));
        for (id, len) in chunks {
            self.summary.chunks.push((*id, *len));
            self.summary.bytes += u64::from(*len);
        }
        Ok(())
    }

    /// How many chunks the stream has so far (see [`Self::chunks_since`]).
    #[must_use]
    pub fn chunk_count(&self) -> usize {
        self.summary.chunks.len()
    }

    /// The stream's chunks from position `start` on.
    #[must_use]
    pub fn chunks_since(&self, start: usize) -> Vec<(ChunkId, u32)> {
        self.summary
            .chunks
            .get(start..)
            .unwrap_or_default()
            .to_vec()
    }

    /// Stores what is left, then the index fragments listing this stream's
    /// packs (a new fragment once one holds half of [`index::MAX_ENTRIES`],
    /// so that the pack added last cannot take it over the limit). Only
    /// then may anything refer to the stream's chunks.
    ///
    /// # Errors
    ///
    /// Storing a pack or a fragment failed; the chunks stored so far are
    /// garbage a prune removes.
    pub fn finish(self) -> Result<StreamSummary> {
        self.finish_with_store().map(|(_, summary)| summary)
    }

    /// As [`Self::finish`], giving back the store (which then knows the
    /// stream's chunks).
    ///
    /// # Errors
    ///
    /// As [`Self::finish`].
    pub fn finish_with_store(mut self) -> Result<(S, StreamSummary)> {
        let chunker = self.chunker.take().expect("writer in use");
        chunker.finish(&mut |c: &[u8]| self.take(c))?;
        while self.place_one(true)? {}
        self.flush_pack()?;
        // Every pack is stored before an index fragment names it.
        self.packs.finish()?;
        let store: &ChunkStore = self.store.borrow();
        let written = std::mem::take(&mut self.written);
        self.summary.stored_bytes += store.write_fragments(written, &mut |_| Ok(()))?;
        Ok((self.store, self.summary))
    }
}

impl<S: BorrowMut<ChunkStore>> Write for StreamWriter<S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut chunker = self
            .chunker
            .take()
            .ok_or_else(|| io::Error::other("writer in use"))?;
        let r = chunker.push(buf, &mut |c: &[u8]| self.take(c));
        self.chunker = Some(chunker);
        r.map_err(|e| io::Error::other(crate::error_chain(&e)))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Plays a list of chunks back as one stream, each chunk checked.
#[derive(Debug)]
pub struct StreamReader<S: Borrow<ChunkStore>> {
    store: S,
    chunks: std::vec::IntoIter<ChunkId>,
    current: Vec<u8>,
    pos: usize,
}

impl<S: Borrow<ChunkStore>> StreamReader<S> {
    fn new(store: S, chunks: Vec<ChunkId>) -> Self {
        Self {
            store,
            chunks: chunks.into_iter(),
            current: Vec::new(),
            pos: 0,
        }
    }
}

impl<S: Borrow<ChunkStore>> Read for StreamReader<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.current.len() {
            let Some(id) = self.chunks.next() else {
                return Ok(0);
            };
            self.current =
                self.store.borrow().read_chunk(&id).map_err(|e| {
                    io::Error::new(io::ErrorKind::InvalidData, crate::error_chain(&e))
                })?;
            self.pos = 0;
        }
        let n = buf.len().min(self.current.len() - self.pos);
        buf[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// What [`ChunkStore::check`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ChunkCheck {
    /// Index fragments read.
    pub fragments: u64,
    /// Packs the index lists.
    pub packs: u64,
    /// Chunk records the index lists.
    pub chunks: u64,
    /// Bytes of pack data read and checked (with `read_data`).
    pub bytes_read: u64,
    /// Packs stored that no index lists: left by a backup that stopped
    /// before its index was written. Nothing refers to them; a prune
    /// removes them.
    pub unindexed_packs: Vec<String>,
    /// Damage, one line each, naming the object.
    pub problems: Vec<String>,
}

impl ChunkStore {
    /// Checks the index fragments (each named by its SHA-256 and well
    /// formed) and that every pack they list exists and is long enough;
    /// with `read_data`, reads every pack: its SHA-256 must be its name,
    /// a scan of its records must find each record the index lists, and
    /// each such record must decompress (zstd checksum) to the plaintext
    /// its keyed id names.
    ///
    /// # Errors
    ///
    /// Only for failures to list; damage is reported in
    /// [`ChunkCheck::problems`].
    pub fn check(&self, read_data: bool) -> Result<ChunkCheck> {
        let mut report = ChunkCheck::default();
        let mut listed: HashMap<String, Vec<PackEntry>> = HashMap::new();
        for key in self.fragment_keys()? {
            report.fragments += 1;
            let bytes = match self.target.get_bytes(&key) {
                Ok(b) => b,
                Err(e) => {
                    report
                        .problems
                        .push(format!("{key}: {}", crate::error_chain(&e)));
                    continue;
                }
            };
            if Some(self.sha256_hex(&bytes).as_str()) != key.strip_prefix(INDEX_PREFIX) {
                report
                    .problems
                    .push(format!("{key}: its SHA-256 is not its name (damaged)"));
                continue;
            }
            match index::decode(&bytes) {
                Ok(packs) => {
                    for p in packs {
                        listed.entry(p.pack.to_hex()).or_default().extend(p.entries);
                    }
                }
                Err(e) => report.problems.push(format!("{key}: {e}")),
            }
        }
        let stored: HashMap<String, u64> = self
            .target
            .list("packs/")?
            .into_iter()
            .filter_map(|o| Some((o.key.rsplit_once('/')?.1.to_owned(), o.size)))
            .collect();
        report.unindexed_packs = stored
            .keys()
            .filter(|k| !listed.contains_key(*k))
            .cloned()
            .collect();
        report.unindexed_packs.sort();
        let mut packs: Vec<(String, Vec<PackEntry>)> = listed.into_iter().collect();
        packs.sort_by(|a, b| a.0.cmp(&b.0));
        for (pack_id, mut entries) in packs {
            entries.sort_by_key(|e| e.offset);
            entries.dedup();
            report.packs += 1;
            report.chunks += entries.len() as u64;
            let key = pack::pack_key(&pack_id);
            let needed = entries
                .iter()
                .map(|e| u64::from(e.offset) + e.record_len())
                .max()
                .unwrap_or(0);
            match stored.get(&pack_id) {
                None => {
                    report.problems.push(format!(
                        "{key}: missing (the index lists {} chunks in it)",
                        entries.len()
                    ));
                    continue;
                }
                Some(size) if *size < needed => {
                    report.problems.push(format!(
                        "{key}: {size} bytes, but the index lists records up to byte {needed}"
                    ));
                    continue;
                }
                Some(_) => {}
            }
            if read_data {
                self.check_pack(&key, &pack_id, &entries, &mut report);
            }
        }
        Ok(report)
    }

    /// Reads one pack whole (packs are bounded) and checks it.
    fn check_pack(&self, key: &str, pack_id: &str, entries: &[PackEntry], report: &mut ChunkCheck) {
        let bytes = match self.target.get_bytes(key) {
            Ok(b) => b,
            Err(e) => {
                report
                    .problems
                    .push(format!("{key}: {}", crate::error_chain(&e)));
                return;
            }
        };
        report.bytes_read += bytes.len() as u64;
        if self.sha256_hex(&bytes) != pack_id {
            report
                .problems
                .push(format!("{key}: its SHA-256 is not its name (damaged)"));
        }
        let scanned = match pack::scan(&bytes) {
            Ok(s) => s,
            Err(e) => {
                report.problems.push(format!("{key}: {e}"));
                Vec::new()
            }
        };
        for e in entries {
            if !scanned.is_empty()
                && scanned
                    .binary_search_by_key(&e.offset, |s| s.offset)
                    .is_err()
            {
                report.problems.push(format!(
                    "{key}: no record starts at byte {} where the index puts chunk {}",
                    e.offset, e.id
                ));
                continue;
            }
            let start = e.offset as usize;
            let end = start + usize::try_from(e.record_len()).unwrap_or(usize::MAX);
            let Some(record) = bytes.get(start..end) else {
                continue;
            };
            if let Err(detail) = pack::open_record(self.codec.as_ref(), &self.key, e, record) {
                report.problems.push(format!("{key}: {detail}"));
            }
        }
    }
}

/// A [`StreamWriter`] that several owners share: the archive packer writes
/// into one clone while the backup engine, holding another, ends chunks
/// between entries ([`SharedWriter::cut_here`], after flushing the packer).
#[derive(Debug, Clone)]
pub struct SharedWriter(Arc<std::sync::Mutex<Option<StreamWriter<ChunkStore>>>>);

impl SharedWriter {
    #[must_use]
    pub fn new(writer: StreamWriter<ChunkStore>) -> Self {
        Self(Arc::new(std::sync::Mutex::new(Some(writer))))
    }

    fn error(why: &str) -> Error {
        Error::io("write", "chunk stream", io::Error::other(why.to_owned()))
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Option<StreamWriter<ChunkStore>>>> {
        self.0.lock().map_err(|_| Self::error("a writer panicked"))
    }

    fn with<T>(&self, f: impl FnOnce(&mut StreamWriter<ChunkStore>) -> Result<T>) -> Result<T> {
        let mut guard = self.lock()?;
        f(guard
            .as_mut()
            .ok_or_else(|| Self::error("the stream is finished"))?)
    }

    /// Ends a chunk at the current end of the stream.
    ///
    /// # Errors
    ///
    /// Storing a pack failed.
    pub fn cut_here(&self) -> Result<()> {
        self.with(StreamWriter::cut_here)
    }

    /// See [`StreamWriter::holds_all`].
    ///
    /// # Errors
    ///
    /// The stream is finished.
    pub fn holds_all(&self, chunks: &[(ChunkId, u32)]) -> Result<bool> {
        self.with(|w| Ok(w.holds_all(chunks)))
    }

    /// See [`StreamWriter::splice`].
    ///
    /// # Errors
    ///
    /// As [`StreamWriter::splice`].
    pub fn splice(&self, chunks: &[(ChunkId, u32)]) -> Result<()> {
        self.with(|w| w.splice(chunks))
    }

    /// Ends a chunk here (see [`StreamWriter::cut_here`]) and returns how
    /// many the stream has then.
    ///
    /// # Errors
    ///
    /// As [`StreamWriter::cut_here`].
    pub fn cut_and_count(&self) -> Result<usize> {
        self.with(|w| {
            w.cut_here()?;
            Ok(w.chunk_count())
        })
    }

    /// See [`StreamWriter::chunks_since`].
    ///
    /// # Errors
    ///
    /// The stream is finished.
    pub fn chunks_since(&self, start: usize) -> Result<Vec<(ChunkId, u32)>> {
        self.with(|w| Ok(w.chunks_since(start)))
    }

    /// Ends the stream (see [`StreamWriter::finish`]) and gives back the
    /// store; the other clones can write no more.
    ///
    /// # Errors
    ///
    /// As [`StreamWriter::finish`], or the stream was finished already.
    pub fn finish(&self) -> Result<(ChunkStore, StreamSummary)> {
        let taken = self.lock()?.take();
        taken
            .ok_or_else(|| Self::error("the stream is finished"))?
            .finish_with_store()
    }
}

impl Write for SharedWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.with(|w| {
            w.write(buf)
                .map_err(|e| Error::io("write", "chunk stream", e))
        })
        .map_err(|e| io::Error::other(crate::error_chain(&e)))
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
