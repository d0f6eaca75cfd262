//! The chunker's frozen behaviour (golden vectors) and its properties.

use super::chunker::{ALGORITHM, Chunker, ChunkerParams, Cutter};

/// A reproducible, incompressible stream (`SplitMix64` output bytes).
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(len);
    out
}

fn small(seed: [u8; 32]) -> ChunkerParams {
    ChunkerParams {
        min_size: 2 << 10,
        avg_size: 8 << 10,
        max_size: 32 << 10,
        level: 2,
        seed,
    }
}

/// Chunk lengths of `data` pushed in pieces of `piece` bytes.
fn lengths(params: &ChunkerParams, data: &[u8], piece: usize) -> Vec<usize> {
    let mut out = Vec::new();
    let mut chunker = Chunker::new(Cutter::new(params).unwrap());
    let mut keep = |c: &[u8]| -> Result<(), ()> {
        out.push(c.len());
        Ok(())
    };
    for p in data.chunks(piece) {
        chunker.push(p, &mut keep).unwrap();
    }
    chunker.finish(&mut keep).unwrap();
    out
}

/// Where chunks end, as offsets into the stream.
fn ends(lengths: &[usize]) -> Vec<usize> {
    lengths
        .iter()
        .scan(0, |at, n| {
            *at += n;
            Some(*at)
        })
        .collect()
}

#[test]
fn golden_vectors_pin_the_cut_points() {
    // These lengths were produced by this chunker when its format was
    // frozen. If this test fails, the chunker changed: every repository
    // would stop deduplicating against what it stored before. Do not update
    // the numbers; restore the algorithm (or give it a new ALGORITHM name).
    assert_eq!(ALGORITHM, "fastcdc-gear64-v1");
    let data = noise(12 << 20, 1);
    let got = lengths(&ChunkerParams::new([0x42; 32]), &data, 1 << 20);
    assert_eq!(got, GOLDEN_DEFAULT, "default parameters, 12 MiB of noise");
    let data = noise(200_000, 2);
    let mut seed = [0u8; 32];
    seed[31] = 1;
    let got = lengths(&small(seed), &data, 4096);
    assert_eq!(got, GOLDEN_SMALL, "8 KiB average, 200,000 bytes of noise");
}

const GOLDEN_DEFAULT: &[usize] = &[
    2_202_736, 1_204_919, 1_441_287, 1_198_953, 1_358_558, 1_172_568, 1_135_152, 1_261_475,
    1_394_832, 212_432,
];
const GOLDEN_SMALL: &[usize] = &[
    8_722, 10_956, 9_557, 9_243, 5_151, 9_719, 4_747, 8_738, 8_657, 8_240, 5_508, 8_618, 9_988,
    8_790, 6_110, 8_404, 5_082, 11_711, 9_785, 9_254, 8_513, 8_365, 8_677, 7_465,
];

#[test]
fn pieces_do_not_change_the_chunks() {
    let data = noise(3 << 20, 3);
    let params = small([9; 32]);
    let whole = lengths(&params, &data, data.len());
    assert!(whole.len() > 100, "{} chunks", whole.len());
    for piece in [1, 7, 4096, 65_537] {
        assert_eq!(
            lengths(&params, &data, piece),
            whole,
            "pushed {piece} at a time"
        );
    }
    assert_eq!(whole.iter().sum::<usize>(), data.len());
}

#[test]
fn sizes_stay_within_bounds_around_the_average() {
    let params = small([3; 32]);
    let data = noise(8 << 20, 4);
    let got = lengths(&params, &data, 100_000);
    let (last, body) = got.split_last().unwrap();
    assert!(*last <= params.max_size);
    for n in body {
        assert!(
            (params.min_size..=params.max_size).contains(n),
            "chunk of {n} bytes"
        );
    }
    let mean = data.len() / got.len();
    assert!(
        (params.avg_size * 3 / 4..params.avg_size * 3 / 2).contains(&mean),
        "mean chunk {mean} bytes for an average of {}",
        params.avg_size
    );
    // Normalized chunking: few chunks end at the maximum on random data.
    let at_max = body.iter().filter(|n| **n == params.max_size).count();
    assert!(
        at_max * 100 < body.len(),
        "{at_max} of {} at the maximum",
        body.len()
    );
}

#[test]
fn an_insertion_moves_only_the_cuts_near_it() {
    let params = small([5; 32]);
    let data = noise(2 << 20, 5);
    let mut edited = data.clone();
    let at = 1 << 20;
    edited.splice(at..at, noise(100, 6));
    let before = ends(&lengths(&params, &data, 8192));
    let after = ends(&lengths(&params, &edited, 8192));
    // Cuts before the insertion are untouched.
    let early: Vec<_> = before.iter().filter(|e| **e <= at).collect();
    assert_eq!(
        early,
        after.iter().filter(|e| **e <= at).collect::<Vec<_>>()
    );
    // After it, all but the one or two chunks around it come back, shifted.
    let late: std::collections::BTreeSet<usize> = before
        .iter()
        .filter(|e| **e > at)
        .map(|e| e + 100)
        .collect();
    let late_after: std::collections::BTreeSet<usize> =
        after.iter().copied().filter(|e| *e > at).collect();
    let lost = late.difference(&late_after).count();
    assert!(
        lost <= 2,
        "{lost} of {} cut points after the insertion moved",
        late.len()
    );
    // And a different seed cuts elsewhere.
    let other = ends(&lengths(&small([6; 32]), &data, 8192));
    let same = other
        .iter()
        .filter(|e| before.binary_search(e).is_ok())
        .count();
    assert!(
        same * 10 < other.len(),
        "{same} of {} cuts shared across seeds",
        other.len()
    );
}

#[test]
fn a_forced_cut_ends_a_chunk_exactly_there() {
    let params = small([1; 32]);
    let a = noise(50_000, 7);
    let b = noise(70_000, 8);
    let mut got = Vec::new();
    let mut chunker = Chunker::new(Cutter::new(&params).unwrap());
    let mut keep = |c: &[u8]| -> Result<(), ()> {
        got.push(c.to_vec());
        Ok(())
    };
    chunker.push(&a, &mut keep).unwrap();
    chunker.cut_here(&mut keep).unwrap();
    assert_eq!(chunker.pending(), 0);
    chunker.push(&b, &mut keep).unwrap();
    chunker.finish(&mut keep).unwrap();
    let ends = ends(&got.iter().map(Vec::len).collect::<Vec<_>>());
    assert!(
        ends.contains(&a.len()),
        "no chunk ends at the forced cut: {ends:?}"
    );
    assert_eq!(got.concat(), [a, b].concat());
    // The chunks after the cut are those of `b` on its own.
    let alone = lengths(&params, &noise(70_000, 8), 70_000);
    let tail: Vec<usize> = got
        .iter()
        .map(Vec::len)
        .skip(got.len() - alone.len())
        .collect();
    assert_eq!(tail, alone);
}

#[test]
fn memory_stays_bounded_whatever_is_pushed_at_once() {
    let params = small([2; 32]);
    let data = noise(1 << 20, 9);
    let mut chunker = Chunker::new(Cutter::new(&params).unwrap());
    let mut count = 0;
    chunker
        .push(&data, &mut |_c: &[u8]| -> Result<(), ()> {
            count += 1;
            Ok(())
        })
        .unwrap();
    // A megabyte pushed at once is cut as it goes: less than one chunk is
    // left waiting for more data.
    assert!(count > 20, "{count} chunks");
    assert!(
        chunker.pending() < params.max_size,
        "{} bytes left undecided",
        chunker.pending()
    );
}

#[test]
fn errors_from_the_consumer_stop_the_push() {
    let data = noise(1 << 20, 10);
    let mut chunker = Chunker::new(Cutter::new(&small([4; 32])).unwrap());
    let mut seen = 0;
    let r = chunker.push(&data, &mut |_c: &[u8]| {
        seen += 1;
        if seen == 3 { Err("full") } else { Ok(()) }
    });
    assert_eq!(r, Err("full"));
    assert_eq!(seen, 3);
}

#[test]
fn bad_parameters_are_refused_and_the_seed_never_shown() {
    let mut p = ChunkerParams::new([0xAB; 32]);
    assert!(!format!("{p:?}").contains("171"), "{p:?}");
    assert!(!format!("{p:?}").to_lowercase().contains("ab, "), "{p:?}");
    p.avg_size = 3 << 20;
    let e = Cutter::new(&p).unwrap_err().to_string();
    assert!(e.contains("power of two"), "{e}");
    let mut p = ChunkerParams::new([0; 32]);
    p.min_size = p.avg_size * 2;
    assert!(
        Cutter::new(&p)
            .unwrap_err()
            .to_string()
            .contains("min <= average")
    );
    let mut p = ChunkerParams::new([0; 32]);
    p.level = 4;
    assert!(Cutter::new(&p).unwrap_err().to_string().contains("level"));
}
