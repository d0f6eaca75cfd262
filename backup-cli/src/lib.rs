//! The `backupkit` command line, as a library so that `python -m backupkit`
//! runs exactly the same code as the binary.

mod args;
mod commands;
mod db;
pub mod exit;
mod jobs;
mod mirror;
mod output;

use std::ffi::OsString;
use std::sync::Arc;

use backup_core::{Cancel, Registry};
use clap::Parser;

/// Every target, format, codec, hasher and database engine this build has: the one place the crates
/// are composed, used by the CLI and the Python module alike.
pub fn registry() -> Arc<Registry> {
    let mut r = Registry::new();
    backup_targets::register(&mut r);
    backup_archive::register(&mut r);
    backup_db::register(&mut r);
    Arc::new(r)
}

/// Runs the CLI with `args` (program name first) and returns the exit code.
/// Ctrl-C cancels the running command cleanly (exit code 130); a second
/// Ctrl-C exits at once.
pub fn run(args: Vec<OsString>) -> i32 {
    let cli = match args::Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            };
            let _ = e.print();
            return code;
        }
    };
    let cancel = Cancel::new();
    {
        let cancel = cancel.clone();
        // Fails only when a handler is already installed (an embedding
        // process); cancellation then comes from that process.
        let _ = ctrlc::set_handler(move || {
            if cancel.is_cancelled() {
                std::process::exit(exit::INTERRUPTED);
            }
            eprintln!("interrupted: stopping cleanly (Ctrl-C again to exit at once)");
            cancel.cancel();
        });
    }
    commands::dispatch(&cli, &registry(), &cancel)
}
