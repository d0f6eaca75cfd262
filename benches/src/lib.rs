//! Benchmarks of backupkit live in `benches/`; run them with
//! `cargo bench -p backupkit-benches`. This library is empty.
