//! The `backupkit` command line, as a library so that `python -m backupkit`
//! runs exactly the same code as the binary.

mod args;
mod commands;
mod db;
pub mod exit;
mod http;
mod jobs;
mod mirror;
mod output;
mod schedule;

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
    let args = seed001_order(args);
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

/// Seed 001 puts its options before the command:
/// `backup_database.py --db-path X --backup-dir Y backup`. Before the
/// command name, `--backup-dir Y` is the repository (`-r Y`) and
/// `--db-path X` the database of `backup` and `auto` (`--db X`), or the
/// target of a `restore` that names none (the seed restores over its
/// database). After the command name nothing changes (`mirror
/// --backup-dir` is mirror's own flag).
fn seed001_order(args: Vec<OsString>) -> Vec<OsString> {
    let mut out: Vec<OsString> = Vec::with_capacity(args.len() + 2);
    let mut db: Option<OsString> = None;
    let mut it = args.into_iter();
    if let Some(program) = it.next() {
        out.push(program);
    }
    let mut rest: Vec<OsString> = Vec::new();
    let mut command: Option<String> = None;
    while let Some(a) = it.next() {
        let text = a.to_string_lossy().into_owned();
        let value = |name: &str, it: &mut std::vec::IntoIter<OsString>| {
            text.strip_prefix(&format!("{name}="))
                .map(OsString::from)
                .or_else(|| (text == name).then(|| it.next()).flatten())
        };
        if text.starts_with("--backup-dir")
            && let Some(v) = value("--backup-dir", &mut it)
        {
            out.push("-r".into());
            out.push(v);
            continue;
        }
        if text.starts_with("--db-path")
            && let Some(v) = value("--db-path", &mut it)
        {
            db = Some(v);
            continue;
        }
        let is_command = !text.starts_with('-');
        out.push(a);
        if is_command {
            command = Some(text);
            rest.extend(it.by_ref());
            break;
        }
    }
    let has = |flags: &[&str]| {
        rest.iter().any(|a| {
            let a = a.to_string_lossy();
            flags
                .iter()
                .any(|f| a == *f || a.starts_with(&format!("{f}=")))
        })
    };
    out.extend(rest.iter().cloned());
    if let Some(db) = db {
        match command.as_deref() {
            Some("backup" | "auto") if !has(&["--db", "--db-path"]) => {
                out.push("--db".into());
                out.push(db);
            }
            Some("restore") if !has(&["--target", "-t"]) => {
                out.push("--target".into());
                out.push(db);
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::seed001_order;

    fn words(s: &str) -> Vec<std::ffi::OsString> {
        s.split_whitespace().map(Into::into).collect()
    }

    #[test]
    fn seed_001_options_before_the_command_are_moved() {
        assert_eq!(
            seed001_order(words("bk --db-path /d/x.db --backup-dir /b backup --force")),
            words("bk -r /b backup --force --db /d/x.db")
        );
        assert_eq!(
            seed001_order(words("bk --backup-dir=/b --db-path=/d/x.db restore ID")),
            words("bk -r /b restore ID --target /d/x.db")
        );
        assert_eq!(
            seed001_order(words("bk --db-path x.db --backup-dir /b list")),
            words("bk -r /b list")
        );
        // After the command, flags are the command's own.
        let mirror = words("bk mirror --backup-dir old src dest");
        assert_eq!(seed001_order(mirror.clone()), mirror);
    }
}
