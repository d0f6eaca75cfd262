//! The tree conformance suite: every kind of mirror tree (local paths now;
//! SFTP, rclone and object stores as they arrive) runs the same contract
//! checks, then the same mirror round trip into it.

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

use backup_core::mirror::{self, MirrorOptions, VerifyMode};
use backup_core::source::Excludes;
use backup_core::tree::{EntryKind, FileAttrs, Tree, Walked, cmp_paths};
use backup_core::{Cancel, Error, NoProgress};

/// Runs every check against the tree `open("")`, whose root must not exist
/// yet; `open(sub)` opens the same kind of tree rooted at `sub` below it.
pub fn run_all(open: &dyn Fn(&str) -> Arc<dyn Tree>) {
    let tree = &open("");
    assert!(
        tree.root().unwrap().is_none(),
        "the suite needs a fresh root"
    );
    writes_are_atomic_and_keep_mtimes(tree.as_ref());
    walks_are_in_canonical_order_and_skip_what_is_skipped(tree.as_ref());
    remove_and_rename(tree.as_ref());
    large_files_stream(tree.as_ref());
    if tree.caps().symlinks {
        symlinks_are_entries(tree.as_ref());
    }
    mirror_round_trip(&open("m"));
}

fn put(tree: &dyn Tree, path: &str, body: &[u8], mtime_ns: i64) {
    let mut w = tree
        .write(
            path,
            FileAttrs {
                mtime_ns: Some(mtime_ns),
                mode: Some(0o640),
            },
        )
        .unwrap();
    w.write_all(body).unwrap();
    w.commit().unwrap();
    tree.flush().unwrap();
}

fn read(tree: &dyn Tree, path: &str) -> Vec<u8> {
    let mut out = Vec::new();
    tree.open(path).unwrap().read_to_end(&mut out).unwrap();
    out
}

fn within(tree: &dyn Tree, got: Option<i64>, want: i64) {
    let got = got.expect("an mtime");
    let precision = tree.caps().mtime_precision.as_nanos();
    assert!(
        u128::from(got.abs_diff(want)) <= precision,
        "mtime {got} is not within {precision} ns of {want}"
    );
}

fn writes_are_atomic_and_keep_mtimes(tree: &dyn Tree) {
    let mtime = 1_700_000_000_123_456_789;
    put(tree, "a/b/first.csv", b"version 1", mtime);
    let root = tree.root().unwrap().expect("a write creates the root");
    assert_eq!(root.kind, EntryKind::Dir);
    let st = tree.stat("a/b/first.csv").unwrap().unwrap();
    assert_eq!((st.kind, st.size), (EntryKind::File, 9));
    within(tree, st.mtime_ns, mtime);
    assert_eq!(read(tree, "a/b/first.csv"), b"version 1");

    // Not committed: the old file is what readers see, and a dropped
    // writer leaves nothing behind at the final name.
    let mut w = tree.write("a/b/first.csv", FileAttrs::default()).unwrap();
    w.write_all(b"half of version 2").unwrap();
    assert_eq!(read(tree, "a/b/first.csv"), b"version 1");
    drop(w);
    tree.flush().unwrap();
    assert_eq!(read(tree, "a/b/first.csv"), b"version 1");
    let mut w = tree.write("a/b/never.csv", FileAttrs::default()).unwrap();
    w.write_all(b"x").unwrap();
    drop(w);
    tree.flush().unwrap();
    assert!(tree.stat("a/b/never.csv").unwrap().is_none());
    // Committed: replaced whole.
    put(
        tree,
        "a/b/first.csv",
        b"version 2, longer",
        mtime + 1_000_000_000,
    );
    assert_eq!(read(tree, "a/b/first.csv"), b"version 2, longer");
    assert!(matches!(
        tree.open("a/missing"),
        Err(Error::NotFound { .. })
    ));
    assert!(tree.stat("a/missing").unwrap().is_none());
    assert!(tree.write("../escape", FileAttrs::default()).is_err());
    assert!(tree.write("a/../../escape", FileAttrs::default()).is_err());
}

fn walks_are_in_canonical_order_and_skip_what_is_skipped(tree: &dyn Tree) {
    const WALKED: [&str; 6] = [
        "w/a.txt",
        "w/a/b",
        "w/a-b/c",
        "w/Z",
        "w/ü 😀",
        "w/a/b2/deep",
    ];
    for p in WALKED.iter().chain(&["w/skip/x"]) {
        put(tree, p, p.as_bytes(), 1_600_000_000_000_000_000);
    }
    if tree.caps().dirs {
        tree.make_dir("w/empty", FileAttrs::default()).unwrap();
    }
    let skip = |p: &str, _: EntryKind| p == "w/skip";
    let walked: Vec<(String, EntryKind)> = tree
        .walk(&skip)
        .unwrap()
        .filter_map(|w| match w.unwrap() {
            Walked::Entry(e) if e.path.starts_with("w/") || e.path == "w" => Some((e.path, e.kind)),
            _ => None,
        })
        .collect();
    let paths: Vec<&str> = walked.iter().map(|(p, _)| p.as_str()).collect();
    let mut sorted = paths.clone();
    sorted.sort_by(|a, b| cmp_paths(a, b));
    assert_eq!(paths, sorted, "canonical order");
    for want in WALKED {
        assert!(paths.contains(&want), "{want} in {paths:?}");
    }
    assert!(
        !paths.iter().any(|p| p.starts_with("w/skip/")),
        "skipped: {paths:?}"
    );
    if tree.caps().dirs {
        assert!(
            walked.contains(&("w/a".to_owned(), EntryKind::Dir)),
            "{walked:?}"
        );
        assert!(
            walked.contains(&("w/empty".to_owned(), EntryKind::Dir)),
            "{walked:?}"
        );
    }
}

fn remove_and_rename(tree: &dyn Tree) {
    put(tree, "r/one", b"1", 1_600_000_000_000_000_000);
    tree.rename("r/one", "r/moved/deeper/one").unwrap();
    assert!(tree.stat("r/one").unwrap().is_none());
    assert_eq!(read(tree, "r/moved/deeper/one"), b"1");
    put(tree, "r/two", b"2", 1_600_000_000_000_000_000);
    tree.rename("r/two", "r/moved/deeper/one").unwrap();
    assert_eq!(read(tree, "r/moved/deeper/one"), b"2", "rename replaces");
    tree.remove("r/moved/deeper/one", EntryKind::File).unwrap();
    tree.remove("r/moved/deeper/one", EntryKind::File).unwrap();
    assert!(tree.stat("r/moved/deeper/one").unwrap().is_none());
    if tree.caps().dirs {
        tree.remove("r/moved/deeper", EntryKind::Dir).unwrap();
        assert!(tree.stat("r/moved/deeper").unwrap().is_none());
    }
}

fn large_files_stream(tree: &dyn Tree) {
    let chunk: Vec<u8> = (0..1_000_003u32).map(|i| (i % 251) as u8).collect();
    let mut w = tree.write("big/data.bin", FileAttrs::default()).unwrap();
    for _ in 0..20 {
        w.write_all(&chunk).unwrap();
    }
    w.commit().unwrap();
    tree.flush().unwrap();
    let mut r = tree.open("big/data.bin").unwrap();
    let mut buf = vec![0u8; 1 << 16];
    let (mut n, mut sum) = (0u64, 0u64);
    loop {
        let k = r.read(&mut buf).unwrap();
        if k == 0 {
            break;
        }
        sum += buf[..k].iter().map(|&b| u64::from(b)).sum::<u64>();
        n += k as u64;
    }
    let one: u64 = chunk.iter().map(|&b| u64::from(b)).sum();
    assert_eq!((n, sum), (20 * chunk.len() as u64, 20 * one));
}

fn symlinks_are_entries(tree: &dyn Tree) {
    tree.symlink("l/link", "../r/target").unwrap();
    let st = tree.stat("l/link").unwrap().unwrap();
    assert_eq!(
        (st.kind, st.link.as_deref()),
        (EntryKind::Symlink, Some("../r/target"))
    );
    tree.symlink("l/link", "elsewhere").unwrap();
    assert_eq!(
        tree.stat("l/link").unwrap().unwrap().link.as_deref(),
        Some("elsewhere")
    );
    // Nothing is written through a symlinked directory.
    tree.symlink("l/dir", "../r").unwrap();
    assert!(tree.write("l/dir/through", FileAttrs::default()).is_err());
    assert!(
        tree.open("l/link").is_err(),
        "a link is not opened as a file"
    );
}

/// A tree of a few kinds of files mirrored into `dest`, re-run without
/// changes, changed, and verified by content.
fn mirror_round_trip(dest: &Arc<dyn Tree>) {
    let mut registry = backup_core::Registry::new();
    backup_targets::register(&mut registry);
    backup_archive::register(&mut registry);
    let hashers = registry.hashers().unwrap();
    let src = tempfile::tempdir().unwrap();
    let root = src.path().join("data");
    std::fs::create_dir_all(root.join("sub/deeper")).unwrap();
    std::fs::write(root.join("sub/a.csv"), "x,y\n1,2\n").unwrap();
    std::fs::write(root.join("sub/deeper/empty"), b"").unwrap();
    std::fs::write(root.join("big.bin"), vec![7u8; 3 << 20]).unwrap();
    let sources = mirror::sources_for(vec![
        Arc::new(backup_targets::LocalTree::new(&root).unwrap()) as Arc<dyn Tree>,
    ])
    .unwrap();
    let opts = MirrorOptions {
        verify: Some(VerifyMode::Checksum),
        ..MirrorOptions::default()
    };
    let run = |opts: &MirrorOptions| {
        mirror::mirror(
            &sources,
            dest.as_ref(),
            opts,
            hashers.as_ref(),
            &NoProgress,
            &Cancel::new(),
        )
        .unwrap()
    };
    let first = run(&opts);
    assert_eq!(first.copied, 3, "{first:?}");
    assert!(first.is_complete(), "{first:?}");
    // A tree with a bulk transport (an SSH host's rsync) moves them all.
    let transport = dest.bulk().map(backup_core::tree::Bulk::name);
    assert_eq!(first.transport.as_deref(), transport, "{first:?}");
    if transport.is_some() {
        assert_eq!(first.transport_files, 3, "{first:?}");
    }
    let again = run(&MirrorOptions::default());
    assert_eq!(
        (again.copied, again.updated, again.unchanged),
        (0, 0, 3),
        "{again:?}"
    );
    std::fs::write(root.join("sub/a.csv"), "x,y\n1,2\n3,4\n").unwrap();
    std::fs::remove_file(root.join("big.bin")).unwrap();
    let changed = run(&MirrorOptions {
        delete: true,
        modify_window: Some(Duration::from_secs(2)),
        ..opts.clone()
    });
    assert_eq!((changed.updated, changed.deleted), (1, 1), "{changed:?}");
    let report = mirror::verify(
        &sources,
        dest.as_ref(),
        &Excludes::default(),
        VerifyMode::Checksum,
        true,
        hashers.as_ref(),
        &NoProgress,
        &Cancel::new(),
    )
    .unwrap();
    assert!(report.matches() && report.hashed == 2, "{report:?}");
    // Pulled back into a local directory (seed 004's direction): the same
    // files, through the tree's transport where it has one.
    let back = src.path().join("back");
    let pulled = mirror::mirror(
        &mirror::sources_for(vec![Arc::clone(dest)]).unwrap(),
        &backup_targets::LocalTree::new(&back).unwrap(),
        &opts,
        hashers.as_ref(),
        &NoProgress,
        &Cancel::new(),
    )
    .unwrap();
    assert!(pulled.is_complete(), "{pulled:?}");
    assert_eq!(
        (pulled.copied, pulled.transport.as_deref()),
        (2, transport),
        "{pulled:?}"
    );
    assert_eq!(
        std::fs::read(back.join("sub/a.csv")).unwrap(),
        b"x,y\n1,2\n3,4\n"
    );
    assert_eq!(std::fs::read(back.join("sub/deeper/empty")).unwrap(), b"");
}
