//! Stores files as successive deduplicated streams in a fresh local chunk
//! store and prints what each one cost: how a chunk size fares on real
//! data before it is frozen into a repository format.
//!
//!     cargo run --release -p backupkit-benches --example dedup-sizes -- \
//!         [--avg 1M] [--level 3] FILE...
//!
//! Each FILE is one snapshot's stream (a tar of a tree, a database copy);
//! the minimum chunk is a quarter of `--avg` and the maximum four times it.

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Instant;

use backup_archive::{StdHashers, ZstdChunks};
use backup_core::Target;
use backup_core::dedup::{ChunkStore, ChunkerParams, Cutter};
use backup_targets::LocalTarget;

fn size(s: &str) -> usize {
    let (n, mult) = match s.chars().last() {
        Some('K' | 'k') => (&s[..s.len() - 1], 1 << 10),
        Some('M' | 'm') => (&s[..s.len() - 1], 1 << 20),
        _ => (s, 1),
    };
    n.parse::<usize>().expect("a size such as 256K or 1M") * mult
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (mut avg, mut level, mut files) = (1 << 20, 3, Vec::new());
    while let Some(a) = args.next() {
        match a.as_str() {
            "--avg" => avg = size(&args.next().expect("--avg SIZE")),
            "--level" => level = args.next().expect("--level N").parse().expect("a number"),
            _ => files.push(a),
        }
    }
    let dir = tempfile::tempdir().expect("temporary directory");
    let target: Arc<dyn Target> = Arc::new(LocalTarget::new(dir.path()).expect("local target"));
    let params = ChunkerParams {
        min_size: avg / 4,
        avg_size: avg,
        max_size: avg * 4,
        level: 2,
        seed: [7; 32],
    };
    let mut store = ChunkStore::new(
        target,
        Arc::new(ZstdChunks),
        Arc::new(StdHashers),
        [9; 32],
        Cutter::new(&params).expect("chunker parameters"),
        level,
    );
    println!(
        "average chunk {} KiB, zstd level {level}\n{:<40} {:>12} {:>8} {:>8} {:>12} {:>12} {:>8}",
        avg >> 10,
        "stream",
        "bytes",
        "chunks",
        "new",
        "new bytes",
        "stored",
        "seconds"
    );
    let mut total = 0u64;
    for f in &files {
        let started = Instant::now();
        let mut input = std::fs::File::open(f).unwrap_or_else(|e| panic!("{f}: {e}"));
        let mut w = store.writer().expect("compression threads");
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = input.read(&mut buf).expect("read");
            if n == 0 {
                break;
            }
            w.write_all(&buf[..n]).expect("store");
        }
        let s = w.finish().expect("store");
        total += s.stored_bytes;
        let name = std::path::Path::new(f)
            .file_name()
            .map_or(f.clone(), |n| n.to_string_lossy().into_owned());
        println!(
            "{name:<40} {:>12} {:>8} {:>8} {:>12} {:>12} {:>8.2}",
            s.bytes,
            s.chunks.len(),
            s.new_chunks,
            s.new_bytes,
            s.stored_bytes,
            started.elapsed().as_secs_f64()
        );
    }
    println!("stored in all: {total} bytes");
}
