//! Pack and unpack throughput of tar, tar.gz and tar.zst over a generated
//! in-memory tree: 400 CSV-like files (about 24 MiB) and 8 MiB of
//! incompressible data. Throughput is content bytes per second.

use std::io::{self, Cursor, Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use backup_archive::TarFormat;
use backup_core::archive::{ArchiveFormat, Compression, Entry, EntryKind};
use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};

struct File {
    entry: Entry,
    content: Vec<u8>,
}

/// xorshift64: deterministic test data without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn csv(rng: &mut Rng, len: usize) -> Vec<u8> {
    const SITES: [&str; 6] = ["north", "south", "east", "west", "lab-a", "lab-b"];
    let mut out = Vec::with_capacity(len + 80);
    let mut row = 0u64;
    while out.len() < len {
        row += 1;
        let r = rng.next();
        let line = format!(
            "{row},{},{}.{:03},{},2025-{:02}-{:02}\n",
            SITES[(r % 6) as usize],
            (r >> 8) % 10_000,
            (r >> 24) % 1000,
            (r >> 34) & 1 == 0,
            (r >> 40) % 12 + 1,
            (r >> 48) % 28 + 1
        );
        out.extend_from_slice(line.as_bytes());
    }
    out.truncate(len);
    out
}

fn entry(path: String, kind: EntryKind, size: u64) -> Entry {
    Entry {
        path,
        kind,
        size,
        mtime: 1_750_000_000,
        mtime_nsec: 0,
        mode: if kind == EntryKind::Dir { 0o755 } else { 0o644 },
        link: None,
        blake3: None,
    }
}

/// The tree: directories first, then the files.
fn tree() -> (Vec<Entry>, Vec<File>) {
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let dirs = vec![
        entry("data".into(), EntryKind::Dir, 0),
        entry("data/csv".into(), EntryKind::Dir, 0),
        entry("data/raw".into(), EntryKind::Dir, 0),
    ];
    let mut files = Vec::new();
    for i in 0..400 {
        let content = csv(&mut rng, 60 * 1024 + (i % 7) * 1000);
        let path = format!("data/csv/run-{i:04}.csv");
        files.push(File {
            entry: entry(path, EntryKind::File, content.len() as u64),
            content,
        });
    }
    for i in 0..4 {
        let content: Vec<u8> = (0..2 * 1024 * 1024 / 8)
            .flat_map(|_| rng.next().to_le_bytes())
            .collect();
        let path = format!("data/raw/blob-{i}.bin");
        files.push(File {
            entry: entry(path, EntryKind::File, content.len() as u64),
            content,
        });
    }
    (dirs, files)
}

/// Counts what is written and drops it.
#[derive(Clone, Default)]
struct CountingSink(Arc<AtomicU64>);

impl Write for CountingSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.fetch_add(buf.len() as u64, Ordering::Relaxed);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn pack_into(format: &TarFormat, dirs: &[Entry], files: &[File], out: Box<dyn Write + Send>) {
    let mut packer = format.packer(out).expect("packer");
    for dir in dirs {
        packer.append_other(dir).expect("append dir");
    }
    for file in files {
        packer
            .append_file(&file.entry, &mut file.content.as_slice())
            .expect("append file");
    }
    packer.finish().expect("finish");
}

/// Packs into memory, for the unpack benchmarks.
fn packed(format: &TarFormat, dirs: &[Entry], files: &[File]) -> Arc<[u8]> {
    struct Shared(Arc<std::sync::Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let buf = Arc::new(std::sync::Mutex::new(Vec::new()));
    pack_into(format, dirs, files, Box::new(Shared(Arc::clone(&buf))));
    let bytes = std::mem::take(&mut *buf.lock().expect("lock"));
    bytes.into()
}

fn formats() -> [(&'static str, TarFormat); 3] {
    [
        ("tar", TarFormat::new(Compression::None, None).expect("tar")),
        (
            "tar.gz",
            TarFormat::new(Compression::Gzip, None).expect("gzip"),
        ),
        (
            "tar.zst",
            TarFormat::new(Compression::Zstd, None).expect("zstd"),
        ),
    ]
}

fn bench_archive(c: &mut Criterion) {
    let (dirs, files) = tree();
    let content: u64 = files.iter().map(|f| f.entry.size).sum();

    let mut group = c.benchmark_group("pack");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .throughput(Throughput::Bytes(content));
    for (name, format) in formats() {
        let sink = CountingSink::default();
        group.bench_function(name, |b| {
            b.iter(|| {
                sink.0.store(0, Ordering::Relaxed);
                pack_into(&format, &dirs, &files, Box::new(sink.clone()));
            });
        });
        eprintln!(
            "{name}: {content} content bytes packed into {} bytes",
            sink.0.load(Ordering::Relaxed)
        );
    }
    group.finish();

    let mut group = c.benchmark_group("unpack");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .throughput(Throughput::Bytes(content));
    for (name, format) in formats() {
        let data = packed(&format, &dirs, &files);
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut seen = 0u64;
                format
                    .unpack(
                        Box::new(Cursor::new(Arc::clone(&data))),
                        &mut |_, r: &mut dyn Read| {
                            seen += io::copy(r, &mut io::sink())
                                .map_err(|e| backup_core::Error::io("read", "entry", e))?;
                            Ok(())
                        },
                    )
                    .expect("unpack");
                assert_eq!(seen, content);
            });
        });
    }
    group.finish();
}

criterion_group!(benches, bench_archive);
criterion_main!(benches);
