//! Embedding backupkit in a Rust program: back up a directory, list,
//! restore and verify, with a progress callback. Exits non-zero if anything
//! does not round-trip, so CI runs it as a test of the public API.
//!
//! `cargo run -p backupkit-examples --example embed [DIR]` (default: a small
//! generated tree in a temporary directory).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use backup_core::{
    BackupOptions, Cancel, CheckOptions, Event, NoProgress, Repository, RestoreOptions,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let work = std::env::temp_dir().join(format!("backupkit-embed-{}", std::process::id()));
    let source = match std::env::args_os().nth(1) {
        Some(dir) => std::path::absolute(PathBuf::from(dir))?,
        None => sample_tree(&work.join("data"))?,
    };

    // One line composes every target, format and hasher of this build.
    let registry = backup_cli::registry();
    let repo = Repository::init(
        registry,
        work.join("repo").to_str().ok_or("non-UTF-8 path")?,
    )?;

    let files = AtomicU64::new(0);
    let progress = |e: &Event| {
        if let Event::File { .. } = e {
            files.fetch_add(1, Ordering::Relaxed);
        }
    };
    let opts = BackupOptions {
        paths: vec![source.clone()],
        tags: vec!["example".into()],
        excludes: vec!["*.tmp".into()],
        ..BackupOptions::default()
    };
    let summary = repo.backup(&opts, &progress, &Cancel::new())?;
    let snapshot = summary.snapshot.ok_or("no snapshot")?;
    println!(
        "saved {} ({} files, {} bytes stored, {} progress events)",
        snapshot.id,
        snapshot.file_count,
        snapshot.size_bytes,
        files.load(Ordering::Relaxed)
    );

    for s in repo.snapshots()? {
        println!("listed {} {} {:?}", s.id, s.timestamp, s.tags);
    }

    let target = work.join("restore");
    let restore = RestoreOptions {
        target: target.clone(),
        ..RestoreOptions::default()
    };
    let restored = repo.restore("latest", &restore, &NoProgress, &Cancel::new())?;
    println!(
        "restored {} files into {}",
        restored.files,
        target.display()
    );

    let check = CheckOptions {
        read_data: true,
        ..CheckOptions::default()
    };
    let report = repo.check(&check, &NoProgress, &Cancel::new())?;
    if !report.is_ok() {
        return Err(format!("check found problems: {:?}", report.problems).into());
    }

    let copy = target.join(source.strip_prefix("/")?);
    compare(&source, &copy)?;
    println!("verified: restored tree equals {}", source.display());
    std::fs::remove_dir_all(&work)?;
    Ok(())
}

fn sample_tree(dir: &Path) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir.join("csv"))?;
    for i in 0..50 {
        std::fs::write(
            dir.join("csv").join(format!("run_{i}.csv")),
            format!("t,v\n{i},{}\n", i * i),
        )?;
    }
    std::fs::write(dir.join("scratch.tmp"), "not backed up")?;
    std::fs::write(dir.join("summary.json"), "{\"runs\": 50}")?;
    Ok(dir.to_path_buf())
}

/// Every file of `a` (except excluded `*.tmp`) has identical content in `b`.
fn compare(a: &Path, b: &Path) -> Result<(), Box<dyn std::error::Error>> {
    for entry in std::fs::read_dir(a)? {
        let entry = entry?;
        let name = entry.file_name();
        let (pa, pb) = (entry.path(), b.join(&name));
        if name.to_string_lossy().ends_with(".tmp") {
            if pb.exists() {
                return Err(format!("excluded {} was restored", pb.display()).into());
            }
        } else if entry.file_type()?.is_dir() {
            compare(&pa, &pb)?;
        } else if std::fs::read(&pa)? != std::fs::read(&pb)? {
            return Err(format!("{} differs", pb.display()).into());
        }
    }
    Ok(())
}
