//! Runnable examples of embedding backupkit; see `embed.rs`
//! (`cargo run -p backupkit-examples --example embed`).
