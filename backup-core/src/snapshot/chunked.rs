//! Deduplicated snapshots: a snapshot's stream (the tar archive of a tree,
//! or a database dump) stored into the repository's chunk store, and read
//! back from it.
//!
//! The stream is what an archive snapshot would hold, uncompressed; its
//! data object is the chunk list (`chunks`), and `checksum` that list's
//! SHA-256, as for an archive: the chunks' keyed ids then vouch for every
//! byte (a large file's unchanged chunks are taken from the stat cache, not
//! read again, so no SHA-256 of the whole stream can be made). Packs and
//! index fragments are written before the chunk list, so a snapshot never
//! refers to a chunk that is not stored and indexed.

use std::io::{BufReader, Read};

use crate::dedup::{ChunkId, ChunkStore, SharedWriter, list};
use crate::manifest::MANIFEST_CHUNKS_NAME;
use crate::progress::{Cancel, CancelReader};
use crate::repository::Repository;
use crate::snapshot::verify::Expected;
use crate::snapshot::{CHUNKS_NAME, DedupInfo, ObjectRecord, SNAPSHOT_FORMAT, SnapshotMeta};
use crate::target::TargetExt;
use crate::{Error, IoContext, Result};

/// The context the stat cache's name is derived under.
const STAT_CACHE_CONTEXT: &str = "backupkit 2026-12 dedup stat cache name v1";

/// A stream being stored into the chunk store.
pub(crate) struct ChunkedStream {
    shared: SharedWriter,
    /// Files at least this large get chunk boundaries of their own.
    threshold: u64,
    level: i32,
    /// The stat cache's file name: from the dedup key, so that each
    /// repository has its own, and the name reveals nothing of the key.
    cache_name: String,
}

/// How a finished stream was stored, for its snapshot's metadata.
pub(crate) struct Chunked {
    info: DedupInfo,
    /// Packs and index fragments written (the manifest's too).
    pub(crate) stored_bytes: u64,
    level: i32,
}

impl Repository {
    /// Starts storing a stream (cut as a file tree, or with `database` as
    /// a dump), after reading which chunks the repository holds.
    pub(crate) fn start_chunked(&self, database: bool) -> Result<ChunkedStream> {
        let config = self.dedup().ok_or_else(|| {
            Error::Unsupported(format!(
                "{} is not a deduplicated repository",
                self.location()
            ))
        })?;
        let threshold = config.chunker.avg_size as u64;
        let level = config.zstd_level;
        let name = self
            .registry()
            .chunk_codec()?
            .derive_key(STAT_CACHE_CONTEXT, &config.key_bytes()?);
        let cache_name = format!(
            "dedup-{}.jsonl",
            ChunkId(name).to_hex().get(..32).unwrap_or("")
        );
        let mut store = self.chunk_store(database)?;
        // The caller holds its lock: a prune marking packs from now on
        // waits for it, and marks written before are seen here.
        store.avoid_marked()?;
        store.load_index()?;
        Ok(ChunkedStream {
            shared: SharedWriter::new(store.into_writer()?),
            threshold,
            level,
            cache_name,
        })
    }

    /// Reads a deduplicated snapshot's chunk list, checked against its
    /// recorded SHA-256 and size before any of it is used.
    pub(crate) fn read_chunk_list(&self, meta: &SnapshotMeta) -> Result<Vec<(ChunkId, u32)>> {
        self.read_chunk_list_named(meta, CHUNKS_NAME)
    }

    /// Every chunk a snapshot refers to: its stream's, and its manifest's
    /// if that is stored as chunks.
    pub(crate) fn snapshot_chunks(&self, meta: &SnapshotMeta) -> Result<Vec<(ChunkId, u32)>> {
        let mut chunks = self.read_chunk_list(meta)?;
        if meta.object(MANIFEST_CHUNKS_NAME).is_some() {
            chunks.extend(self.read_chunk_list_named(meta, MANIFEST_CHUNKS_NAME)?);
        }
        Ok(chunks)
    }

    /// Reads chunk list `name` of a snapshot, checked against its recorded
    /// SHA-256 and size before any of it is used.
    pub(crate) fn read_chunk_list_named(
        &self,
        meta: &SnapshotMeta,
        name: &str,
    ) -> Result<Vec<(ChunkId, u32)>> {
        let damaged = |detail: String| Error::Integrity {
            snapshot: meta.id.clone(),
            detail,
        };
        let record = meta
            .object(name)
            .ok_or_else(|| damaged(format!("snapshot.json has no record of {name}")))?;
        let key = Repository::key(&meta.id, name);
        let input = match self.target().get(&key) {
            Err(Error::NotFound { .. }) => {
                return Err(damaged(format!("object {key} is missing")));
            }
            other => other?,
        };
        let mut text = Vec::new();
        input
            .take(record.size.saturating_add(1))
            .read_to_end(&mut text)
            .map_err(|e| Error::io("read", key.clone(), e))?;
        let mut hasher = self.registry().hashers()?.sha256();
        hasher.update(&text);
        if text.len() as u64 != record.size || hasher.finish_hex() != record.sha256 {
            return Err(damaged(format!("{name} does not match its SHA-256")));
        }
        list::read(&mut text.as_slice()).map_err(|e| damaged(format!("{name}: {e}")))
    }

    /// A manifest stored as chunks, as plaintext: the header line (made
    /// here), then the chunks (each checked against its id as it is read).
    pub(crate) fn open_manifest_chunks(&self, meta: &SnapshotMeta) -> Result<Box<dyn Read + Send>> {
        let chunks: Vec<ChunkId> = self
            .read_chunk_list_named(meta, MANIFEST_CHUNKS_NAME)?
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        let database = meta.kind == crate::snapshot::SnapshotKind::Database;
        let reader = self.chunk_store(database)?.into_reader(chunks)?;
        let header =
            crate::manifest::header_line(&meta.id, crate::manifest::lines_format(meta.format));
        Ok(Box::new(std::io::Cursor::new(header).chain(reader)))
    }

    /// A deduplicated snapshot's stream, each chunk checked against its
    /// keyed id as it is read, and the record its length must match at the
    /// end (checked by the caller, as for an archive; there is no SHA-256 of
    /// the whole stream, the chunks' ids stand for it).
    pub(crate) fn open_chunk_stream(
        &self,
        meta: &SnapshotMeta,
        info: &DedupInfo,
        cancel: &Cancel,
    ) -> Result<(Box<dyn Read + Send>, Expected)> {
        let chunks: Vec<ChunkId> = self
            .read_chunk_list(meta)?
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        let database = meta.kind == crate::snapshot::SnapshotKind::Database;
        let reader = self.chunk_store(database)?.into_reader(chunks)?;
        let expected = Expected {
            name: format!("the stream {CHUNKS_NAME} lists"),
            size: info.stream_bytes,
            sha256: None,
        };
        Ok((
            Box::new(CancelReader {
                inner: BufReader::with_capacity(256 * 1024, reader),
                cancel: cancel.clone(),
            }),
            expected,
        ))
    }
}

impl ChunkedStream {
    /// Where the stream is written.
    pub(crate) fn writer(&self) -> SharedWriter {
        self.shared.clone()
    }

    /// The handle that ends chunks between a large file's header and data,
    /// and the size from which files get chunks of their own.
    pub(crate) fn cuts(&self) -> (SharedWriter, u64) {
        (self.shared.clone(), self.threshold)
    }

    /// The stat cache's file name.
    pub(crate) fn cache_name(&self) -> &str {
        &self.cache_name
    }

    /// Ends the stream (packs, then index fragments), then stores the chunk
    /// list as snapshot `id`'s data object. Gives back the store, which
    /// knows the stream's chunks (the manifest is stored into it next).
    pub(crate) fn finish(
        self,
        repo: &Repository,
        id: &str,
    ) -> Result<(ObjectRecord, Chunked, ChunkStore)> {
        let (store, summary) = self.shared.finish()?;
        let record = repo.store_chunk_list(id, CHUNKS_NAME, &summary.chunks)?;
        Ok((
            record,
            Chunked {
                info: DedupInfo {
                    stream_bytes: summary.bytes,
                    chunks: summary.chunks.len() as u64,
                    new_chunks: summary.new_chunks,
                    new_bytes: summary.new_bytes,
                },
                stored_bytes: summary.stored_bytes,
                level: self.level,
            },
            store,
        ))
    }
}

impl Repository {
    /// Stores `chunks` (in memory already) as object `name` of snapshot
    /// `id`, in the chunk list format; returns its record.
    pub(crate) fn store_chunk_list(
        &self,
        id: &str,
        name: &str,
        chunks: &[(ChunkId, u32)],
    ) -> Result<ObjectRecord> {
        let key = Repository::key(id, name);
        let mut text = Vec::with_capacity(chunks.len() * 72 + 32);
        list::write(&mut text, chunks).ctx("write", &key)?;
        let mut sha = self.registry().hashers()?.sha256();
        sha.update(&text);
        self.target().put_bytes(&key, &text)?;
        Ok(ObjectRecord {
            name: name.to_owned(),
            size: text.len() as u64,
            sha256: sha.finish_hex(),
        })
    }

    /// Stores a manifest's lines after its header (`rest`) into `store` as
    /// snapshot `id`'s `manifest.chunks`. The header, which names the
    /// snapshot, is not stored: readers make it from `snapshot.json` (the
    /// chunk list's SHA-256 there ties the list to its snapshot), so an
    /// unchanged tree's manifest is all chunks stored before. Returns the
    /// record and the bytes of packs and index written.
    pub(crate) fn store_manifest_chunks(
        &self,
        id: &str,
        store: ChunkStore,
        rest: &mut dyn Read,
    ) -> Result<(ObjectRecord, u64)> {
        let key = Repository::key(id, MANIFEST_CHUNKS_NAME);
        let cutter = self
            .dedup()
            .ok_or_else(|| Error::Unsupported("not a deduplicated repository".into()))?
            .database_cutter(self.registry().chunk_codec()?.as_ref())?;
        let mut writer = store.with_cutter(cutter).into_writer()?;
        std::io::copy(rest, &mut writer).ctx("write", &key)?;
        let summary = writer.finish()?;
        let record = self.store_chunk_list(id, MANIFEST_CHUNKS_NAME, &summary.chunks)?;
        Ok((record, summary.stored_bytes))
    }
}

impl Chunked {
    /// Makes the metadata of an archive snapshot that of this stream,
    /// whose chunk list is stored as `list`.
    pub(crate) fn apply(self, meta: &mut SnapshotMeta, list: &ObjectRecord) {
        meta.format = SNAPSHOT_FORMAT;
        meta.checksum = format!("sha256:{}", list.sha256);
        meta.size_bytes = self.stored_bytes;
        meta.files_included = vec![CHUNKS_NAME.to_owned()];
        meta.compression = crate::archive::Compression::Zstd;
        meta.compressed = true;
        meta.level = Some(self.level);
        meta.dedup = Some(self.info);
    }
}
