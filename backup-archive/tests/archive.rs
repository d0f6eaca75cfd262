//! Integration tests of backup-archive: round trips through every format,
//! interoperability with GNU tar, gzip, zstd and Python, error handling of
//! damaged streams, and the parallel gzip encoder.

use std::io::{self, Cursor, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use backup_archive::pargz::{BLOCK_SIZE, DICT_SIZE, ParallelGzEncoder};
use backup_archive::{StdHashers, TarFormat};
use backup_core::Error;
use backup_core::archive::{ArchiveFormat, Compression, Entry, EntryKind};
use backup_core::hash::{Hashers, SharedHasher};

#[path = "archive/damaged.rs"]
mod damaged;
#[path = "archive/interop.rs"]
mod interop;
#[path = "archive/pargz.rs"]
mod pargz;

// ---------------------------------------------------------------- helpers

/// xorshift64*: small, deterministic, good enough for test data.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(len + 8);
        while v.len() < len {
            v.extend_from_slice(&self.next().to_le_bytes());
        }
        v.truncate(len);
        v
    }
}

/// CSV-like text: compressible, but not trivially.
fn csv(rng: &mut Rng, len: usize) -> Vec<u8> {
    const WORDS: [&str; 8] = [
        "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel",
    ];
    let mut v = Vec::with_capacity(len + 64);
    let mut id = 0u64;
    while v.len() < len {
        id += 1;
        let line = format!(
            "{id},{},{}.{:02},2024-{:02}-{:02}T{:02}:{:02}:00Z\n",
            WORDS[rng.below(8) as usize],
            rng.below(100_000),
            rng.below(100),
            rng.below(12) + 1,
            rng.below(28) + 1,
            rng.below(24),
            rng.below(60)
        );
        v.extend_from_slice(line.as_bytes());
    }
    v.truncate(len);
    v
}

/// Whether an external tool is installed. A test that needs it skips
/// (saying so) without it, unless `BACKUPKIT_REQUIRE_SERVICES=1` (as in CI),
/// where a missing tool fails the test instead: nothing skips silently.
fn has_tool(name: &str) -> bool {
    let found = Command::new(name)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !found {
        assert!(
            std::env::var("BACKUPKIT_REQUIRE_SERVICES").as_deref() != Ok("1"),
            "{name} is not installed and BACKUPKIT_REQUIRE_SERVICES=1 (scripts/test.sh installs it)"
        );
        eprintln!("skipping what needs {name}: not installed");
    }
    found
}

/// A `Write + Send + 'static` whose bytes can be taken back.
#[derive(Clone, Default)]
struct SharedBuf(Arc<Mutex<Vec<u8>>>);

impl Write for SharedBuf {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

struct Item {
    entry: Entry,
    content: Vec<u8>,
}

fn item(path: &str, kind: EntryKind, content: Vec<u8>, link: Option<&str>) -> Item {
    let mode = match kind {
        EntryKind::Dir => 0o750,
        EntryKind::Symlink => 0o777,
        EntryKind::File | EntryKind::Hardlink => 0o640,
    };
    Item {
        entry: Entry {
            path: path.to_owned(),
            kind,
            size: content.len() as u64,
            mtime: 1_700_000_000 + path.len() as i64,
            mtime_nsec: 0,
            mode,
            link: link.map(str::to_owned),
            blake3: None,
        },
        content,
    }
}

fn file(path: &str, content: Vec<u8>) -> Item {
    item(path, EntryKind::File, content, None)
}

/// Files of awkward sizes, random and compressible data, directories,
/// symlinks, a hard link, long and unicode names.
fn sample_items() -> Vec<Item> {
    let mut rng = Rng::new(42);
    let long_dir = format!("d/long/{}", "x".repeat(140));
    let long_file = format!("{long_dir}/{}", "y".repeat(300 - long_dir.len() - 1));
    assert_eq!(long_file.len(), 300);
    let long_target = format!("../{}", "t/".repeat(100))[..200].to_owned();
    let mut items = vec![
        item("d", EntryKind::Dir, Vec::new(), None),
        item("d/sub", EntryKind::Dir, Vec::new(), None),
        file("d/empty", Vec::new()),
    ];
    for size in [1, 511, 512, 513, 128 * 1024 - 1, 128 * 1024, 128 * 1024 + 1] {
        items.push(file(&format!("d/sub/size-{size}"), rng.bytes(size)));
    }
    items.push(file("d/random.bin", rng.bytes(3 * 1024 * 1024 + 7)));
    items.push(file("d/table.csv", csv(&mut rng, 4 * 1024 * 1024)));
    items.push(item("d/long", EntryKind::Dir, Vec::new(), None));
    items.push(item(&long_dir, EntryKind::Dir, Vec::new(), None));
    items.push(file(&long_file, b"long name".to_vec()));
    items.push(file("d/ünïcödé-日本語.txt", "grüße".as_bytes().to_vec()));
    items.push(file("d/🦀 crab", b"ferris".to_vec()));
    items.push(item(
        "d/link",
        EntryKind::Symlink,
        Vec::new(),
        Some("sub/size-1"),
    ));
    items.push(item(
        "d/long-link",
        EntryKind::Symlink,
        Vec::new(),
        Some(&long_target),
    ));
    items.push(item(
        "d/hard",
        EntryKind::Hardlink,
        Vec::new(),
        Some("d/sub/size-513"),
    ));
    for it in &mut items {
        if it.entry.kind == EntryKind::Hardlink {
            it.entry.size = 0;
        }
    }
    items
}

fn pack(format: &TarFormat, items: &[Item]) -> Vec<u8> {
    let buf = SharedBuf::default();
    let mut packer = format.packer(Box::new(buf.clone())).unwrap();
    for it in items {
        if it.entry.kind == EntryKind::File {
            let n = packer
                .append_file(&it.entry, &mut it.content.as_slice())
                .unwrap();
            assert_eq!(n, it.entry.size);
        } else {
            packer.append_other(&it.entry).unwrap();
        }
    }
    packer.finish().unwrap();
    // finish dropped the output writer: ours is the only handle left.
    assert_eq!(Arc::strong_count(&buf.0), 1);
    std::mem::take(&mut *buf.0.lock().unwrap())
}

type Visited = Vec<(Entry, Vec<u8>)>;

fn unpack_from(format: &TarFormat, input: Box<dyn Read + Send>) -> backup_core::Result<Visited> {
    let mut seen = Vec::new();
    format.unpack(input, &mut |entry, r| {
        let mut content = Vec::new();
        r.read_to_end(&mut content)
            .map_err(|e| Error::io("read", entry.path.clone(), e))?;
        seen.push((entry, content));
        Ok(())
    })?;
    Ok(seen)
}

fn unpack(format: &TarFormat, data: Vec<u8>) -> backup_core::Result<Visited> {
    unpack_from(format, Box::new(Cursor::new(data)))
}

fn assert_same(items: &[Item], seen: &Visited) {
    assert_eq!(items.len(), seen.len());
    for (it, (entry, content)) in items.iter().zip(seen) {
        assert_eq!(&it.entry, entry, "entry {}", it.entry.path);
        assert_eq!(content.len(), it.content.len(), "{}", entry.path);
        assert!(
            blake3::hash(content) == blake3::hash(&it.content),
            "content of {}",
            entry.path
        );
    }
}

fn formats() -> Vec<TarFormat> {
    vec![
        TarFormat::new(Compression::None, None).unwrap(),
        TarFormat::new(Compression::Gzip, None).unwrap(),
        TarFormat::new(Compression::Gzip, Some(1))
            .unwrap()
            .with_threads(1),
        TarFormat::new(Compression::Zstd, None).unwrap(),
        TarFormat::new(Compression::Zstd, Some(5))
            .unwrap()
            .with_threads(1),
    ]
}

fn gz_decode(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(data)
        .read_to_end(&mut out)
        .expect("valid gzip");
    out
}

fn pargz(data: &[u8], level: i32, threads: usize) -> Vec<u8> {
    let mut enc = ParallelGzEncoder::new(Vec::new(), level, threads).unwrap();
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

/// Runs `cmd` with `input` on stdin and returns its stdout.
fn pipe_through(cmd: &mut Command, input: &[u8]) -> Vec<u8> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(out.status.success(), "{cmd:?} failed");
    out.stdout
}

fn io_kind(err: &Error) -> io::ErrorKind {
    err.io_kind()
        .unwrap_or_else(|| panic!("not an I/O error: {err:?}"))
}

// ------------------------------------------------------------ round trips

#[test]
fn round_trip_every_format() {
    let items = sample_items();
    for format in formats() {
        let packed = pack(&format, &items);
        let seen = unpack(&format, packed).unwrap();
        assert_same(&items, &seen);
    }
}

#[test]
fn compression_shrinks_compressible_data() {
    let items = sample_items();
    let plain = pack(&TarFormat::new(Compression::None, None).unwrap(), &items).len();
    for c in [Compression::Gzip, Compression::Zstd] {
        let packed = pack(&TarFormat::new(c, None).unwrap(), &items).len();
        // 3 MiB of random data stays, 4 MiB of CSV shrinks by well over half.
        assert!(packed < plain * 3 / 4, "{c:?}: {packed} vs {plain}");
    }
    assert_eq!(plain % 512, 0);
}

#[test]
fn unpack_reads_input_to_its_end() {
    let items = sample_items();
    for format in formats() {
        let mut packed = pack(&format, &items);
        if format.compression() == Compression::None {
            // GNU tar pads to 10 KiB records; that padding must be read too.
            packed.resize(packed.len().next_multiple_of(10240) + 10240, 0);
        }
        let hasher = SharedHasher::new(StdHashers.sha256());
        let input = hasher.reader(Cursor::new(packed.clone()));
        let seen = unpack_from(&format, Box::new(input)).unwrap();
        assert_same(&items, &seen);
        let (hex, count) = hasher.finish();
        assert_eq!(count, packed.len() as u64);
        let mut direct = StdHashers.sha256();
        direct.update(&packed);
        assert_eq!(hex, direct.finish_hex());
    }
}

#[test]
fn empty_archive_round_trips() {
    for format in formats() {
        let packed = pack(&format, &[]);
        assert!(unpack(&format, packed).unwrap().is_empty());
    }
}

#[test]
fn short_reader_is_padded_and_counted() {
    let format = TarFormat::new(Compression::Gzip, None).unwrap();
    let buf = SharedBuf::default();
    let mut sink = format.packer(Box::new(buf.clone())).unwrap();
    let mut entry = file("shrunk", Vec::new()).entry;
    entry.size = 1000;
    let delivered = sink.append_file(&entry, &mut &b"only this"[..]).unwrap();
    assert_eq!(delivered, 9);
    // A longer reader is cut at the size.
    let mut entry2 = file("grown", Vec::new()).entry;
    entry2.size = 4;
    let delivered = sink.append_file(&entry2, &mut &b"abcdefgh"[..]).unwrap();
    assert_eq!(delivered, 4);
    sink.finish().unwrap();
    let bytes = std::mem::take(&mut *buf.0.lock().unwrap());
    let seen = unpack(&format, bytes).unwrap();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].0.size, 1000);
    let mut expected = b"only this".to_vec();
    expected.resize(1000, 0);
    assert_eq!(seen[0].1, expected);
    assert_eq!(seen[1].1, b"abcd");
}

#[test]
fn dropping_a_packer_unfinished_abandons_the_stream() {
    let it = file("big", Rng::new(3).bytes(2 * 1024 * 1024));
    for format in formats() {
        let buf = SharedBuf::default();
        let mut packer = format.packer(Box::new(buf.clone())).unwrap();
        packer
            .append_file(&it.entry, &mut it.content.as_slice())
            .unwrap();
        drop(packer);
        // The output writer is gone, and what it got is not a whole archive.
        assert_eq!(Arc::strong_count(&buf.0), 1);
        let written = std::mem::take(&mut *buf.0.lock().unwrap());
        let err = unpack(&format, written).unwrap_err();
        assert!(matches!(
            io_kind(&err),
            io::ErrorKind::UnexpectedEof | io::ErrorKind::InvalidData
        ));
    }
}

#[test]
fn a_failed_append_stops_the_packer() {
    struct Broken(usize);
    impl Read for Broken {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.0 == 0 {
                return Err(io::Error::other("disk error"));
            }
            let n = buf.len().min(self.0);
            buf[..n].fill(b'x');
            self.0 -= n;
            Ok(n)
        }
    }
    for format in formats() {
        let mut packer = format.packer(Box::new(io::sink())).unwrap();
        let mut entry = file("f", Vec::new()).entry;
        entry.size = 100_000;
        let err = packer.append_file(&entry, &mut Broken(5000)).unwrap_err();
        assert_eq!(err.to_string(), "disk error");
        let dir = item("d", EntryKind::Dir, Vec::new(), None).entry;
        assert!(packer.append_other(&dir).is_err());
        assert!(packer.finish().is_err());
    }
}

#[test]
fn entries_of_the_wrong_kind_are_refused_without_harm() {
    let format = TarFormat::new(Compression::None, None).unwrap();
    let buf = SharedBuf::default();
    let mut packer = format.packer(Box::new(buf.clone())).unwrap();
    let dir = item("d", EntryKind::Dir, Vec::new(), None);
    let err = packer
        .append_file(&dir.entry, &mut io::empty())
        .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    let mut link = item("l", EntryKind::Symlink, Vec::new(), None).entry;
    let err = packer.append_other(&link).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    link.link = Some("target".into());
    packer.append_other(&link).unwrap();
    packer.finish().unwrap();
    let bytes = std::mem::take(&mut *buf.0.lock().unwrap());
    let seen = unpack(&format, bytes).unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].0, link);
}
