//! Throughput of the content-defined chunker (backupkit's default 256 KiB /
//! 1 MiB / 4 MiB parameters) over 64 MiB of incompressible data pushed in
//! 1 MiB pieces, as a deduplicated backup pushes its tar stream.

use std::time::Duration;

use backup_core::dedup::{Chunker, ChunkerParams, Cutter};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn noise(len: usize) -> Vec<u8> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn bench_chunker(c: &mut Criterion) {
    let data = noise(64 << 20);
    let cutter = Cutter::new(&ChunkerParams::new([7; 32])).unwrap();
    let mut group = c.benchmark_group("chunker");
    group.throughput(Throughput::Bytes(data.len() as u64));
    group.measurement_time(Duration::from_secs(10));
    group.sample_size(10);
    group.bench_function("fastcdc 1 MiB average", |b| {
        b.iter(|| {
            let mut chunker = Chunker::new(cutter.clone());
            let mut count = 0usize;
            let mut take = |_c: &[u8]| -> Result<(), ()> {
                count += 1;
                Ok(())
            };
            for piece in data.chunks(1 << 20) {
                chunker.push(piece, &mut take).unwrap();
            }
            chunker.finish(&mut take).unwrap();
            count
        });
    });
    group.finish();
}

criterion_group!(benches, bench_chunker);
criterion_main!(benches);
