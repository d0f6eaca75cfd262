//! Chunk stores on a real local repository: streams come back byte for
//! byte, what is stored once is not stored again, damage is found, and an
//! unfinished stream leaves nothing any reader could depend on.

use std::io::{Read, Write};
use std::sync::Arc;

use backup_archive::{StdHashers, ZstdChunks};
use backup_core::dedup::{ChunkId, ChunkStore, ChunkerParams, Cutter, StreamSummary};
use backup_core::{Error, Target};
use backup_targets::LocalTarget;

use super::pseudo_random;

const KEY: [u8; 32] = [0x11; 32];

fn target(dir: &std::path::Path) -> Arc<dyn Target> {
    Arc::new(LocalTarget::new(dir).unwrap())
}

/// Small chunks (16 KiB average) so that a few MiB make many.
fn store(t: &Arc<dyn Target>) -> ChunkStore {
    let params = ChunkerParams {
        min_size: 4 << 10,
        avg_size: 16 << 10,
        max_size: 64 << 10,
        level: 2,
        seed: [3; 32],
    };
    let mut s = ChunkStore::new(
        Arc::clone(t),
        Arc::new(ZstdChunks),
        Arc::new(StdHashers),
        KEY,
        Cutter::new(&params).unwrap(),
        3,
    );
    s.load_index().unwrap();
    s
}

/// CSV-like text and incompressible noise, as a lab's tree has.
fn stream(seed: u64) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..40_000u64 {
        out.extend_from_slice(format!("{i},{},{}\n", (i * seed) % 977, i % 31).as_bytes());
    }
    out.extend_from_slice(&pseudo_random(3 << 20, seed));
    out
}

fn put(s: &mut ChunkStore, parts: &[&[u8]]) -> StreamSummary {
    let mut w = s.writer().unwrap();
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            w.cut_here().unwrap();
        }
        for piece in p.chunks(100_000) {
            w.write_all(piece).unwrap();
        }
    }
    w.finish().unwrap()
}

fn get(s: &mut ChunkStore, summary: &StreamSummary) -> Vec<u8> {
    let mut out = Vec::new();
    s.reader(summary.chunks.iter().map(|c| c.0).collect())
        .unwrap()
        .read_to_end(&mut out)
        .unwrap();
    out
}

fn objects(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = walk(dir)
        .into_iter()
        .map(|p| p.strip_prefix(dir).unwrap().display().to_string())
        .collect();
    v.sort();
    v
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn a_stream_comes_back_and_is_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let t = target(dir.path());
    let data = stream(7);
    let mut s = store(&t);
    let first = put(&mut s, &[&data]);
    assert_eq!(first.bytes, data.len() as u64);
    assert!(first.chunks.len() > 100, "{} chunks", first.chunks.len());
    assert_eq!(first.new_chunks as usize, first.chunks.len());
    // Compressed per chunk: the text half shrinks, the noise does not.
    assert!(
        first.stored_bytes < data.len() as u64,
        "{}",
        first.stored_bytes
    );
    assert!(first.packs.len() == 1, "{:?}", first.packs);
    assert_eq!(get(&mut s, &first), data);

    // The same stream again, in a store that reads the index afresh:
    // nothing new is written.
    let before = objects(dir.path());
    let mut s = store(&t);
    assert_eq!(s.len(), first.chunks.len());
    let again = put(&mut s, &[&data]);
    assert_eq!((again.new_chunks, again.stored_bytes), (0, 0));
    assert_eq!(again.chunks, first.chunks);
    assert_eq!(
        objects(dir.path()),
        before,
        "a no-change stream wrote objects"
    );
    assert_eq!(get(&mut s, &again), data);
}

#[test]
fn a_small_change_stores_a_little() {
    let dir = tempfile::tempdir().unwrap();
    let t = target(dir.path());
    let data = stream(11);
    let mut s = store(&t);
    put(&mut s, &[&data]);
    let mut edited = data.clone();
    edited.splice(600_000..600_000, b"an inserted row,1,2\n".iter().copied());
    let end = edited.len() - 5;
    edited[end] ^= 0xff;
    let second = put(&mut s, &[&edited]);
    assert!(
        second.new_chunks <= 6,
        "{} of {} chunks new after two small edits",
        second.new_chunks,
        second.chunks.len()
    );
    assert!(
        second.new_bytes < 6 * (64 << 10),
        "{} bytes new",
        second.new_bytes
    );
    assert_eq!(get(&mut s, &second), edited);
}

#[test]
fn forced_cuts_keep_a_moved_file_s_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let t = target(dir.path());
    let file = pseudo_random(2 << 20, 21);
    let (a, b) = (stream(22), stream(23));
    let mut s = store(&t);
    let first = put(&mut s, &[&a[..1_000_003], &file, &b[..777_777]]);
    // The file now sits after other data, at another offset.
    let second = put(&mut s, &[&b[..555_555], &file, &a[..333]]);
    // Chunks end exactly at the file's start and end, so its chunks are the
    // same ids in both streams, and nothing of it is stored twice.
    let chunks_of = |sum: &StreamSummary, start: u64| -> Vec<ChunkId> {
        let mut at = 0u64;
        let mut out = Vec::new();
        for (id, len) in &sum.chunks {
            if at >= start && at < start + file.len() as u64 {
                out.push(*id);
            }
            at += u64::from(*len);
            if at == start || at == start + file.len() as u64 {
                continue;
            }
            assert!(
                !(at > start && at - u64::from(*len) < start),
                "a chunk straddles the file's start"
            );
        }
        out
    };
    let in_first = chunks_of(&first, 1_000_003);
    assert!(in_first.len() > 20, "{} chunks", in_first.len());
    assert_eq!(in_first, chunks_of(&second, 555_555));
    let limit = 555_555 + 333 + 2 * (64 << 10);
    assert!(
        second.new_bytes <= limit as u64,
        "{} bytes new: the file's chunks were not found again",
        second.new_bytes
    );
    assert_eq!(
        get(&mut s, &second),
        [&b[..555_555], &file[..], &a[..333]].concat()
    );
}

#[test]
fn damage_is_found_and_named() {
    let dir = tempfile::tempdir().unwrap();
    let t = target(dir.path());
    let data = stream(31);
    let mut s = store(&t);
    let summary = put(&mut s, &[&data]);
    let pack_key = format!("packs/{}/{}", &summary.packs[0][..2], summary.packs[0]);
    let pack_path = dir.path().join(&pack_key);
    let mut bytes = std::fs::read(&pack_path).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x40;
    std::fs::write(&pack_path, &bytes).unwrap();
    let mut out = Vec::new();
    let err = s
        .reader(summary.chunks.iter().map(|c| c.0).collect())
        .unwrap()
        .read_to_end(&mut out)
        .unwrap_err();
    assert!(err.to_string().contains(&summary.packs[0]), "{err}");
    assert!(out.len() < data.len());

    // A damaged index fragment is refused when the store opens, by name.
    let index: Vec<_> = t.list("index/").unwrap();
    assert_eq!(index.len(), 1);
    let index_path = dir.path().join(&index[0].key);
    let mut bytes = std::fs::read(&index_path).unwrap();
    bytes.truncate(bytes.len() - 7);
    std::fs::write(&index_path, &bytes).unwrap();
    let mut s = ChunkStore::new(
        Arc::clone(&t),
        Arc::new(ZstdChunks),
        Arc::new(StdHashers),
        KEY,
        Cutter::new(&ChunkerParams::new([0; 32])).unwrap(),
        3,
    );
    match s.load_index() {
        Err(Error::Integrity { snapshot, .. }) => assert_eq!(snapshot, index[0].key),
        other => panic!("a cut index fragment was read: {other:?}"),
    }
}

#[test]
fn an_unfinished_stream_is_never_referenced() {
    let dir = tempfile::tempdir().unwrap();
    let t = target(dir.path());
    let data = stream(41);
    let mut s = store(&t);
    {
        let mut w = s.writer().unwrap();
        // Enough for the first pack (16 MiB) to be stored, then a "crash".
        w.write_all(&data).unwrap();
        w.write_all(&pseudo_random(17 << 20, 42)).unwrap();
        drop(w);
    }
    assert!(
        t.list("packs/").unwrap().len() == 1,
        "the first pack was stored"
    );
    assert!(
        t.list("index/").unwrap().is_empty(),
        "no index before the stream ends"
    );
    // A new run does not know those chunks, so it stores them again rather
    // than refer to a pack no index lists.
    let mut s = store(&t);
    assert!(s.is_empty());
    let again = put(&mut s, &[&data]);
    assert_eq!(again.new_chunks as usize, again.chunks.len());
    assert_eq!(get(&mut s, &again), data);
    let unknown = ChunkId([0xee; 32]);
    let err = s.read_chunk(&unknown).unwrap_err().to_string();
    assert!(err.contains("no index fragment lists it"), "{err}");
}

#[test]
fn check_finds_every_damage_to_packs_and_index() {
    let dir = tempfile::tempdir().unwrap();
    let t = target(dir.path());
    let mut s = store(&t);
    let summary = put(&mut s, &[&stream(51)]);
    let clean = s.check(true).unwrap();
    assert!(clean.problems.is_empty(), "{:?}", clean.problems);
    assert_eq!((clean.fragments, clean.packs), (1, 1));
    assert_eq!(clean.chunks as usize, summary.chunks.len());
    assert!(clean.bytes_read > 0 && clean.unindexed_packs.is_empty());

    let pack_key = format!("packs/{}/{}", &summary.packs[0][..2], summary.packs[0]);
    let index_key = t.list("index/").unwrap()[0].key.clone();
    for key in [&pack_key, &index_key] {
        let path = dir.path().join(key);
        let good = std::fs::read(&path).unwrap();
        let step = good.len() / 40;
        let mut found = 0;
        let mut tried = 0;
        for at in (0..good.len()).step_by(step.max(1)).chain([good.len() - 1]) {
            let mut bad = good.clone();
            bad[at] ^= 0x04;
            std::fs::write(&path, &bad).unwrap();
            tried += 1;
            let r = s.check(true).unwrap();
            if r.problems.iter().any(|p| p.contains(key.as_str())) {
                found += 1;
            }
        }
        std::fs::write(&path, &good).unwrap();
        assert_eq!(found, tried, "{key}: {found} of {tried} byte flips found");
    }
    // Without reading data: a truncated or missing pack is still found.
    let path = dir.path().join(&pack_key);
    let good = std::fs::read(&path).unwrap();
    std::fs::write(&path, &good[..good.len() - 10]).unwrap();
    let r = s.check(false).unwrap();
    assert!(
        r.problems
            .iter()
            .any(|p| p.contains("the index lists records up to")),
        "{r:?}"
    );
    std::fs::remove_file(&path).unwrap();
    let r = s.check(false).unwrap();
    assert!(r.problems.iter().any(|p| p.contains("missing")), "{r:?}");
    std::fs::write(&path, &good).unwrap();
    assert!(s.check(true).unwrap().problems.is_empty());
}

#[test]
fn check_reports_leftover_packs_without_calling_them_damage() {
    let dir = tempfile::tempdir().unwrap();
    let t = target(dir.path());
    let mut s = store(&t);
    {
        let mut w = s.writer().unwrap();
        w.write_all(&pseudo_random(17 << 20, 61)).unwrap();
        drop(w); // a backup killed before its index
    }
    let r = store(&t).check(true).unwrap();
    assert!(r.problems.is_empty(), "{:?}", r.problems);
    assert_eq!(r.unindexed_packs.len(), 1);
    assert_eq!(r.packs, 0);
}

/// The Python that has `zstandard` (scripts/test.sh installs it in its
/// venv), or `None` with the reason printed; with
/// `BACKUPKIT_REQUIRE_SERVICES=1` a missing one fails the test.
pub(crate) fn python_with_zstandard() -> Option<String> {
    let python = std::env::var("BACKUPKIT_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = std::process::Command::new(&python)
        .args(["-c", "import zstandard"])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        return Some(python);
    }
    assert!(
        std::env::var("BACKUPKIT_REQUIRE_SERVICES").as_deref() != Ok("1"),
        "{python} has no zstandard and BACKUPKIT_REQUIRE_SERVICES=1 (scripts/test.sh installs it)"
    );
    eprintln!("skipped: {python} has no zstandard package (pip install zstandard)");
    None
}

#[test]
fn restore_py_restores_a_stream_without_backupkit() {
    use backup_core::dedup::{DedupConfig, RESTORE_PY, list};
    use backup_core::hash::{Hashers, StreamHasher};
    let Some(python) = python_with_zstandard() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let t = target(dir.path());
    let config = DedupConfig::new([0x33; 32]);
    let marker = serde_json::json!({"backupkit_repository": 2, "dedup": config});
    std::fs::write(dir.path().join("backupkit.json"), marker.to_string()).unwrap();
    std::fs::write(dir.path().join("restore.py"), RESTORE_PY).unwrap();
    let mut s = ChunkStore::new(
        Arc::clone(&t),
        Arc::new(ZstdChunks),
        Arc::new(StdHashers),
        config.key_bytes().unwrap(),
        config.file_cutter(&ZstdChunks).unwrap(),
        config.zstd_level,
    );
    let data = [stream(71), pseudo_random(5 << 20, 72), stream(73)].concat();
    let summary = put(&mut s, &[&data[..4_000_000], &data[4_000_000..]]);
    assert!(summary.chunks.len() > 4, "{} chunks", summary.chunks.len());
    let mut sha: Box<dyn StreamHasher> = StdHashers.sha256();
    let snap = dir.path().join("snapshots/20261203T091500Z-abc");
    std::fs::create_dir_all(&snap).unwrap();
    let mut chunk_list = Vec::new();
    list::write(&mut chunk_list, &summary.chunks).unwrap();
    assert_eq!(list::read(&mut &chunk_list[..]).unwrap(), summary.chunks);
    std::fs::write(snap.join("chunks"), &chunk_list).unwrap();
    sha.update(&chunk_list);
    let meta = serde_json::json!({
        "checksum": format!("sha256:{}", sha.finish_hex()),
        "dedup": {"stream_bytes": data.len()},
    });
    std::fs::write(snap.join("snapshot.json"), meta.to_string()).unwrap();

    let run = || {
        std::process::Command::new(&python)
            .arg(dir.path().join("restore.py"))
            .arg("20261203")
            .output()
            .unwrap()
    };
    let out = run();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stdout == data,
        "restore.py gave {} bytes of {}",
        out.stdout.len(),
        data.len()
    );

    // A flipped byte in a pack: named, exit 1.
    let pack = dir.path().join(format!(
        "packs/{}/{}",
        &summary.packs[0][..2],
        summary.packs[0]
    ));
    let good = std::fs::read(&pack).unwrap();
    let mut bad = good.clone();
    let at = bad.len() - 100;
    bad[at] ^= 0x20;
    std::fs::write(&pack, &bad).unwrap();
    let out = run();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&summary.packs[0]), "{err}");
    std::fs::write(&pack, &good).unwrap();

    // A chunk list that is not the one snapshot.json records.
    let mut text = String::from_utf8(chunk_list.clone()).unwrap();
    let first = list::HEADER.len() + 1;
    let digit = if &text[first..=first] == "0" {
        "1"
    } else {
        "0"
    };
    text.replace_range(first..=first, digit);
    std::fs::write(snap.join("chunks"), &text).unwrap();
    let out = run();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("does not match the SHA-256"), "{err}");
    // Resealed (as an attacker or a bug might): the chunk is in no index.
    let mut sha: Box<dyn StreamHasher> = StdHashers.sha256();
    sha.update(text.as_bytes());
    let meta = serde_json::json!({
        "checksum": format!("sha256:{}", sha.finish_hex()),
        "dedup": {"stream_bytes": data.len()},
    });
    std::fs::write(snap.join("snapshot.json"), meta.to_string()).unwrap();
    let out = run();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("in no index fragment"), "{err}");
    assert!(
        list::read(&mut text.as_bytes()).is_ok(),
        "still well formed"
    );
    assert!(list::read(&mut &b"backupkit-chunks 1\nzz 1\n"[..]).is_err());
    assert!(list::read(&mut &b"backupkit-chunks 2\n"[..]).is_err());
}

#[test]
fn dedup_settings_refuse_what_this_build_cannot_read_and_hide_the_key() {
    use backup_core::dedup::DedupConfig;
    let config = DedupConfig::new([0xab; 32]);
    assert!(!format!("{config:?}").contains("abab"), "{config:?}");
    // Nor does a chunk store's debug output show its key.
    let dir = tempfile::tempdir().unwrap();
    let target: Arc<dyn Target> = Arc::new(LocalTarget::new(dir.path()).unwrap());
    let s = ChunkStore::new(
        target,
        Arc::new(ZstdChunks),
        Arc::new(StdHashers),
        [0xab; 32],
        config.file_cutter(&ZstdChunks).unwrap(),
        3,
    );
    let shown = format!("{s:?}");
    assert!(shown.contains("ChunkStore"), "{shown}");
    assert!(!shown.contains("171"), "{shown}");
    assert_eq!(config.chunker.avg_size, 1 << 20);
    assert_eq!(config.database_chunker.avg_size, 256 << 10);
    let json = serde_json::to_string(&config).unwrap();
    let back: DedupConfig = serde_json::from_str(&json).unwrap();
    assert_eq!(back.key_bytes().unwrap(), [0xab; 32]);
    // The seed is derived from the key: another key cuts elsewhere.
    let a = config.file_cutter(&ZstdChunks).unwrap();
    let b = DedupConfig::new([0xac; 32])
        .file_cutter(&ZstdChunks)
        .unwrap();
    let data = pseudo_random(8 << 20, 81);
    assert_ne!(a.cut(&data), b.cut(&data));
    let mut newer = config.clone();
    newer.format = 2;
    assert!(
        newer
            .key_bytes()
            .unwrap_err()
            .to_string()
            .contains("upgrade backupkit")
    );
    let mut other = config.clone();
    other.chunker.algorithm = "rabin".into();
    assert!(other.file_cutter(&ZstdChunks).is_err());
    let mut bad = config;
    bad.key = "00".into();
    assert!(
        bad.key_bytes()
            .unwrap_err()
            .to_string()
            .contains("64 hex digits")
    );
}

/// A tar stream packed straight into a chunk store: with a flush and a cut
/// before and after a large file, that file's chunks are found again in a
/// second archive where other files come before it, so nothing of it is
/// stored twice.
#[test]
fn a_large_file_in_a_tar_stream_is_stored_once() {
    use backup_archive::TarFormat;
    use backup_core::archive::{ArchiveFormat, Compression, Entry, EntryKind};
    use backup_core::dedup::SharedWriter;

    fn entry(path: &str, size: usize) -> Entry {
        Entry {
            path: path.into(),
            kind: EntryKind::File,
            size: size as u64,
            mtime: 1_760_000_000,
            mtime_nsec: 0,
            mode: 0o644,
            link: None,
            blake3: None,
        }
    }
    let big = pseudo_random(3 << 20, 91);
    let pack = |s: ChunkStore, before: &[(&str, Vec<u8>)], cut: bool| {
        let shared = SharedWriter::new(s.into_writer().unwrap());
        let format = TarFormat::new(Compression::None, None).unwrap();
        let mut packer = format.packer(Box::new(shared.clone())).unwrap();
        for (name, body) in before {
            packer
                .append_file(&entry(name, body.len()), &mut &body[..])
                .unwrap();
        }
        if cut {
            packer.flush().unwrap();
            shared.cut_here().unwrap();
        }
        packer
            .append_file(&entry("data/recording.bin", big.len()), &mut &big[..])
            .unwrap();
        if cut {
            packer.flush().unwrap();
            shared.cut_here().unwrap();
        }
        packer
            .append_file(&entry("data/after.csv", 5000), &mut &stream(92)[..5000])
            .unwrap();
        packer.finish().unwrap();
        shared.finish().unwrap()
    };
    for cut in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let t = target(dir.path());
        let (s, first) = pack(
            store(&t),
            &[("data/a.csv", stream(93)[..70_000].to_vec())],
            cut,
        );
        assert!(first.new_bytes > big.len() as u64);
        let others = vec![
            ("data/b.csv", stream(94)[..123_457].to_vec()),
            ("data/c.csv", stream(95)[..9_999].to_vec()),
        ];
        let (_, second) = pack(s, &others, cut);
        // What is new is at most the other files, their headers, the file
        // after the recording and the trailer: none of the recording.
        let others_len: u64 = others.iter().map(|(_, b)| b.len() as u64).sum();
        let bound = others_len + 2 * 512 + 512 + 5000 + 10_240;
        if cut {
            assert!(
                second.new_bytes <= bound,
                "{} bytes new of {}; the recording was stored again",
                second.new_bytes,
                second.bytes
            );
        } else {
            // Without the cuts, the chunk that holds the recording's start
            // holds the file before it too, so part of the recording is new.
            assert!(second.new_bytes > bound, "{} <= {bound}", second.new_bytes);
        }
    }
}
