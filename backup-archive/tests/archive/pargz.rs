//! The parallel gzip encoder and the hashers.

use super::*;

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

#[test]
fn pargz_output_does_not_depend_on_threads() {
    let mut rng = Rng::new(13);
    let mut data = Vec::new();
    for _ in 0..6 {
        data.extend(csv(&mut rng, 300_000));
        data.extend(rng.bytes(200_000));
    }
    let one = pargz(&data, 6, 1);
    for threads in [2, 3, 4] {
        assert!(pargz(&data, 6, threads) == one, "threads {threads}");
    }
}
