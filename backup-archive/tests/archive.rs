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

fn has_tool(name: &str) -> bool {
    Command::new(name)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
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
fn dropping_a_packer_unfinished_does_not_hang() {
    for format in formats() {
        let mut packer = format.packer(Box::new(io::sink())).unwrap();
        let it = file("big", Rng::new(3).bytes(2 * 1024 * 1024));
        packer
            .append_file(&it.entry, &mut it.content.as_slice())
            .unwrap();
        drop(packer);
    }
}

// ----------------------------------------------------------- interop

#[test]
fn gnu_tar_extracts_our_archives() {
    if !has_tool("tar") {
        eprintln!("skipping: tar not installed");
        return;
    }
    let items = sample_items();
    for format in formats() {
        let flag = match format.compression() {
            Compression::None => "-xf",
            Compression::Gzip => "-xzf",
            Compression::Zstd if has_tool("zstd") => "--zstd",
            Compression::Zstd => continue,
        };
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("a.tar");
        std::fs::write(&archive, pack(&format, &items)).unwrap();
        let dest = dir.path().join("out");
        std::fs::create_dir(&dest).unwrap();
        let mut cmd = Command::new("tar");
        cmd.arg(flag);
        if flag == "--zstd" {
            cmd.arg("-xf");
        }
        let status = cmd.arg(&archive).arg("-C").arg(&dest).status().unwrap();
        assert!(status.success(), "tar {flag} failed");
        check_extracted(&items, &dest);
    }
}

fn check_extracted(items: &[Item], dest: &Path) {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    for it in items {
        let path = dest.join(&it.entry.path);
        let meta = std::fs::symlink_metadata(&path).unwrap();
        match it.entry.kind {
            EntryKind::File => {
                assert!(meta.is_file());
                assert_eq!(
                    std::fs::read(&path).unwrap(),
                    it.content,
                    "{}",
                    path.display()
                );
                assert_eq!(meta.permissions().mode() & 0o7777, it.entry.mode);
                assert_eq!(meta.mtime(), it.entry.mtime);
            }
            EntryKind::Dir => assert!(meta.is_dir(), "{}", path.display()),
            EntryKind::Symlink => {
                let target = std::fs::read_link(&path).unwrap();
                assert_eq!(target.to_str(), it.entry.link.as_deref());
            }
            EntryKind::Hardlink => {
                let other = dest.join(it.entry.link.as_deref().unwrap());
                assert_eq!(meta.ino(), std::fs::metadata(other).unwrap().ino());
            }
        }
    }
}

#[test]
fn we_read_gnu_tar_archives() {
    if !has_tool("tar") {
        eprintln!("skipping: tar not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let long = src.join("n".repeat(120)).join("m".repeat(120));
    std::fs::create_dir_all(&long).unwrap();
    let mut rng = Rng::new(9);
    let content = csv(&mut rng, 300_000);
    std::fs::write(long.join("f.csv"), &content).unwrap();
    std::fs::write(src.join("ä.txt"), b"x").unwrap();
    std::os::unix::fs::symlink("ä.txt", src.join("s")).unwrap();
    for (compression, flag) in [
        (Compression::None, "-cf"),
        (Compression::Gzip, "-czf"),
        (Compression::Zstd, "--zstd"),
    ] {
        if compression == Compression::Zstd && !has_tool("zstd") {
            continue;
        }
        let archive = dir.path().join("gnu.tar");
        let mut cmd = Command::new("tar");
        cmd.arg("-C").arg(&src).arg(flag);
        if flag == "--zstd" {
            cmd.arg("-cf");
        }
        assert!(cmd.arg(&archive).arg(".").status().unwrap().success());
        let format = TarFormat::new(compression, None).unwrap();
        let seen = unpack(&format, std::fs::read(&archive).unwrap()).unwrap();
        let find = |p: &str| seen.iter().find(|(e, _)| e.path == p);
        let csv_path = format!("./{}/{}/f.csv", "n".repeat(120), "m".repeat(120));
        let (entry, data) = find(&csv_path).expect("long path entry");
        assert_eq!(entry.kind, EntryKind::File);
        assert_eq!(data, &content);
        let (entry, _) = find("./s").expect("symlink");
        assert_eq!(entry.link.as_deref(), Some("ä.txt"));
        let (entry, _) = find(&format!("./{}", "n".repeat(120))).expect("dir");
        assert_eq!(entry.kind, EntryKind::Dir);
    }
}

#[test]
fn standard_tools_decompress_our_streams() {
    let items = sample_items();
    let plain = pack(&TarFormat::new(Compression::None, None).unwrap(), &items);
    if has_tool("gzip") {
        let gz = pack(&TarFormat::new(Compression::Gzip, None).unwrap(), &items);
        assert_eq!(pipe_through(Command::new("gzip").arg("-dc"), &gz), plain);
    }
    if has_tool("zstd") {
        let zst = pack(&TarFormat::new(Compression::Zstd, None).unwrap(), &items);
        assert_eq!(pipe_through(Command::new("zstd").arg("-dc"), &zst), plain);
    }
}

#[test]
fn python_gzip_reads_pargz_output() {
    if !has_tool("python3") {
        eprintln!("skipping: python3 not installed");
        return;
    }
    let mut rng = Rng::new(5);
    let mut data = csv(&mut rng, 700_000);
    data.extend(rng.bytes(300_000));
    for threads in [1, 4] {
        let gz = pargz(&data, 6, threads);
        let script =
            "import gzip,sys; sys.stdout.buffer.write(gzip.decompress(sys.stdin.buffer.read()))";
        let out = pipe_through(Command::new("python3").args(["-c", script]), &gz);
        assert!(out == data, "python3 gzip output differs");
    }
}

// ----------------------------------------------------- damaged streams

#[test]
fn corrupt_gzip_is_an_error() {
    let items = sample_items();
    let format = TarFormat::new(Compression::Gzip, None).unwrap();
    let packed = pack(&format, &items);
    for at in [packed.len() / 2, packed.len() / 3, packed.len() - 6, 20] {
        let mut bad = packed.clone();
        bad[at] ^= 0x55;
        let err = unpack(&format, bad).unwrap_err();
        let kind = io_kind(&err);
        assert!(
            matches!(
                kind,
                io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof
            ),
            "flip at {at}: {err:?}"
        );
    }
}

#[test]
fn corrupt_zstd_is_an_error() {
    let items = sample_items();
    let format = TarFormat::new(Compression::Zstd, None).unwrap();
    let mut bad = pack(&format, &items);
    let mid = bad.len() / 2;
    bad[mid] ^= 0x55;
    let err = unpack(&format, bad).unwrap_err();
    assert!(matches!(
        io_kind(&err),
        io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof
    ));
}

#[test]
fn truncated_streams_are_errors() {
    let items = sample_items();
    for format in formats() {
        let packed = pack(&format, &items);
        let mut cuts = vec![0, 7, packed.len() / 2, packed.len() - 1];
        if format.compression() == Compression::None {
            // Exactly at entry boundaries: before the trailer, and inside it.
            cuts.extend([packed.len() - 1024, packed.len() - 512]);
        } else {
            cuts.extend([packed.len() - 4, packed.len() - 8]);
        }
        for cut in cuts {
            let Err(err) = unpack(&format, packed[..cut].to_vec()) else {
                panic!(
                    "{:?} cut at {cut} of {} unpacked fine",
                    format.compression(),
                    packed.len()
                );
            };
            assert!(
                matches!(
                    io_kind(&err),
                    io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof
                ),
                "{err:?}"
            );
        }
    }
}

#[test]
fn unknown_entry_type_is_rejected() {
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Char);
    header.set_size(0);
    header.set_mode(0o600);
    builder
        .append_data(&mut header, "dev/tty0", io::empty())
        .unwrap();
    let data = builder.into_inner().unwrap();
    let format = TarFormat::new(Compression::None, None).unwrap();
    let err = unpack(&format, data).unwrap_err();
    assert_eq!(io_kind(&err), io::ErrorKind::InvalidData);
    let chain = format!("{err:?}");
    assert!(chain.contains("entry type Char"), "{chain}");
}

#[test]
fn non_utf8_path_is_rejected() {
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(0);
    header.as_old_mut().name[..3].copy_from_slice(b"a\xffb");
    header.set_cksum();
    builder.append(&header, io::empty()).unwrap();
    let data = builder.into_inner().unwrap();
    let format = TarFormat::new(Compression::None, None).unwrap();
    let err = unpack(&format, data).unwrap_err();
    assert_eq!(io_kind(&err), io::ErrorKind::InvalidData);
}

#[test]
fn visitor_error_stops_unpack_and_is_returned() {
    let items = sample_items();
    for format in formats() {
        let packed = pack(&format, &items);
        // An endless input: the decompressor thread only stops because the
        // reader side goes away.
        let input: Box<dyn Read + Send> = if format.compression() == Compression::None {
            Box::new(Cursor::new(packed).chain(io::repeat(0)))
        } else {
            Box::new(Cursor::new(packed))
        };
        let mut calls = 0;
        let err = format
            .unpack(input, &mut |_, _| {
                calls += 1;
                if calls == 4 {
                    Err(Error::Cancelled)
                } else {
                    Ok(())
                }
            })
            .unwrap_err();
        assert!(matches!(err, Error::Cancelled), "{err:?}");
        assert_eq!(calls, 4);
    }
}

#[test]
fn input_read_errors_keep_their_kind() {
    struct Failing;
    impl Read for Failing {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            Err(io::Error::new(io::ErrorKind::ConnectionReset, "peer gone"))
        }
    }
    for format in formats() {
        let err = unpack_from(&format, Box::new(Failing)).unwrap_err();
        assert_eq!(io_kind(&err), io::ErrorKind::ConnectionReset);
        assert!(err.is_retryable());
    }
}

// ------------------------------------------------------- parallel gzip

#[test]
fn pargz_decodes_for_many_sizes() {
    let mut rng = Rng::new(7);
    let sizes = [
        0,
        1,
        100,
        DICT_SIZE,
        BLOCK_SIZE - 1,
        BLOCK_SIZE,
        BLOCK_SIZE + 1,
        2 * BLOCK_SIZE,
        3 * BLOCK_SIZE + DICT_SIZE + 5,
        8 * BLOCK_SIZE,
    ];
    let gunzip = has_tool("gunzip");
    for size in sizes {
        let mut data = csv(&mut rng, size / 2);
        data.extend(rng.bytes(size - size / 2));
        for threads in [1, 4] {
            for level in [1, 6, 9] {
                let gz = pargz(&data, level, threads);
                assert!(gz_decode(&gz) == data, "size {size} threads {threads}");
            }
            if gunzip {
                let gz = pargz(&data, 6, threads);
                let out = pipe_through(Command::new("gunzip").arg("-c"), &gz);
                assert!(out == data, "gunzip: size {size} threads {threads}");
            }
        }
    }
}

#[test]
fn pargz_property_random_inputs_and_chunkings() {
    let mut rng = Rng::new(2024);
    for case in 0..50 {
        let len = match rng.below(4) {
            0 => rng.below(1000) as usize,
            1 => rng.below(3 * BLOCK_SIZE as u64) as usize,
            _ => rng.below(700_000) as usize,
        };
        let data = match rng.below(3) {
            0 => rng.bytes(len),
            1 => csv(&mut rng, len),
            _ => {
                // Long repeats that cross block boundaries.
                let unit_len = rng.below(5000) as usize + 1;
                let unit = rng.bytes(unit_len);
                unit.iter().copied().cycle().take(len).collect()
            }
        };
        let level = rng.below(9) as i32 + 1;
        let threads = rng.below(4) as usize + 1;
        let mut enc = ParallelGzEncoder::new(Vec::new(), level, threads).unwrap();
        let mut rest = data.as_slice();
        while !rest.is_empty() {
            let n = (rng.below(300_000) as usize + 1).min(rest.len());
            enc.write_all(&rest[..n]).unwrap();
            rest = &rest[n..];
            if rng.below(20) == 0 {
                enc.flush().unwrap();
            }
        }
        let gz = enc.finish().unwrap();
        assert!(
            gz_decode(&gz) == data,
            "case {case}: len {len} level {level} threads {threads}"
        );
    }
}

#[test]
fn pargz_size_is_close_to_single_threaded_gzip() {
    let mut rng = Rng::new(11);
    let data = csv(&mut rng, 8 * 1024 * 1024);
    let mut single = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
    single.write_all(&data).unwrap();
    let single = single.finish().unwrap().len();
    for threads in [1, 4] {
        let parallel = pargz(&data, 6, threads).len();
        let ratio = parallel as f64 / single as f64;
        assert!(
            ratio <= 1.02,
            "threads {threads}: {parallel} vs {single} ({ratio:.4})"
        );
        assert!(parallel < data.len() / 3, "compresses at all");
    }
}

// --------------------------------------------------------------- hashes

#[test]
fn streaming_hash_equals_one_shot() {
    use sha2::Digest;
    let mut rng = Rng::new(77);
    for round in 0..20 {
        let len = rng.below(200_000) as usize;
        let data = rng.bytes(len);
        let mut sha = StdHashers.sha256();
        let mut b3 = StdHashers.blake3();
        let mut rest = data.as_slice();
        while !rest.is_empty() {
            let n =
                (rng.below(if round % 2 == 0 { 64 } else { 70_000 }) as usize + 1).min(rest.len());
            sha.update(&rest[..n]);
            b3.update(&rest[..n]);
            rest = &rest[n..];
        }
        let sha_hex = sha.finish_hex();
        assert_eq!(sha_hex, format!("{:x}", sha2::Sha256::digest(&data)));
        assert_eq!(sha_hex.len(), 64);
        assert_eq!(b3.finish_hex(), blake3::hash(&data).to_hex().as_str());
    }
}
