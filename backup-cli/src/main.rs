//! The `backupkit` binary: everything is in the library, shared with
//! `python -m backupkit`.

fn main() {
    std::process::exit(backup_cli::run(std::env::args_os().collect()));
}
