// Mirror checks every object-store tree runs beyond the conformance suite,
// included (`include!`) into each cloud's module: a module exists only with
// its cloud's cargo feature, and these need no other.

/// A TCP proxy in front of the endpoint `upstream` (`http://HOST:PORT/PATH`)
/// that counts the HEAD requests passing through; returns its endpoint
/// (same path) and the count.
fn head_counting_proxy(upstream: &str) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::sync::atomic::Ordering;
    let rest = upstream.trim_start_matches("http://");
    let (authority, path) = rest.find('/').map_or((rest, ""), |i| rest.split_at(i));
    let authority = authority.to_owned();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}{path}", listener.local_addr().unwrap());
    let heads = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = std::sync::Arc::clone(&heads);
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(client) = conn else { break };
            let Ok(server) = TcpStream::connect(&authority) else {
                continue;
            };
            let (mut c2, mut s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            let (mut client, mut server) = (client, server);
            let counted = std::sync::Arc::clone(&counted);
            std::thread::spawn(move || {
                // A request line starts the connection or follows a line
                // break; bodies here never hold "\nHEAD /".
                const LINE: &[u8] = b"\nHEAD /";
                let mut tail = b"\n".to_vec();
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let n = match c2.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    let mut seen = std::mem::take(&mut tail);
                    seen.extend_from_slice(&buf[..n]);
                    let found = seen.windows(LINE.len()).filter(|w| *w == LINE).count();
                    counted.fetch_add(found, Ordering::SeqCst);
                    // Shorter than the pattern: no match is counted twice.
                    tail = seen[seen.len().saturating_sub(LINE.len() - 1)..].to_vec();
                    if s2.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                let _ = s2.shutdown(std::net::Shutdown::Write);
            });
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut server, &mut client);
                let _ = client.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    (endpoint, heads)
}

/// A local source tree of `n` files in a few directories, with mtimes that
/// have nanoseconds; returns the directory (kept alive) and its root.
fn source_files(n: usize) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    for i in 0..n {
        let path = root.join(format!("d{}/f{i:02}.txt", i % 4));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, format!("file {i}\n")).unwrap();
        let ns =
            1_600_000_000_000_000_000 + i64::try_from(i).unwrap() * 1_000_000_007 + 123_456_789;
        filetime::set_file_mtime(
            &path,
            filetime::FileTime::from_unix_time(ns / 1_000_000_000, (ns % 1_000_000_000) as u32),
        )
        .unwrap();
    }
    (dir, root)
}

/// One mirror run from the local `root` into `dest`.
fn mirror_into(
    root: &std::path::Path,
    dest: &dyn backup_core::tree::Tree,
    opts: &backup_core::mirror::MirrorOptions,
) -> backup_core::mirror::MirrorSummary {
    let mut registry = backup_core::Registry::new();
    backup_archive::register(&mut registry);
    let hashers = registry.hashers().unwrap();
    let sources = backup_core::mirror::sources_for(vec![std::sync::Arc::new(
        backup_targets::LocalTree::new(root).unwrap(),
    )
        as std::sync::Arc<dyn backup_core::tree::Tree>])
    .unwrap();
    backup_core::mirror::mirror(
        &sources,
        dest,
        opts,
        hashers.as_ref(),
        &backup_core::NoProgress,
        &backup_core::Cancel::new(),
    )
    .unwrap()
}

/// A run without changes trusts the listing's `ETag`s and the record: no
/// HEAD request per file (an object store's listing has no mtimes). `open`
/// opens a fresh tree through the given endpoint.
fn unchanged_rerun_makes_no_head_requests(
    upstream: &str,
    open: &dyn Fn(&str) -> std::sync::Arc<dyn backup_core::tree::Tree>,
) {
    use std::sync::atomic::Ordering;
    let (endpoint, heads) = head_counting_proxy(upstream);
    let dest = open(&endpoint);
    let (_dir, root) = source_files(50);
    let opts = backup_core::mirror::MirrorOptions::default();
    let first = mirror_into(&root, dest.as_ref(), &opts);
    assert_eq!(first.copied, 50, "{first:?}");
    assert!(first.is_complete(), "{first:?}");

    let before = heads.load(Ordering::SeqCst);
    let again = mirror_into(&root, dest.as_ref(), &opts);
    let during = heads.load(Ordering::SeqCst) - before;
    assert_eq!(
        (again.copied, again.updated, again.unchanged),
        (0, 0, 50),
        "{again:?}"
    );
    assert!(again.is_complete(), "{again:?}");
    assert_eq!(during, 0, "HEAD requests in a run without changes");

    // The proxy does see a stat's HEAD: the zero above is measured.
    let seen = heads.load(Ordering::SeqCst);
    assert!(dest.stat("d1/f01.txt").unwrap().is_some());
    assert!(
        heads.load(Ordering::SeqCst) > seen,
        "the proxy counts no HEAD"
    );
    clear(dest.as_ref());
}

/// An object rewritten behind backupkit's back (same size, other content,
/// no mtime metadata, as a foreign tool writes it) is found by the next
/// run and copied again; the others stay.
fn changes_at_the_destination_are_found(dest: &dyn backup_core::tree::Tree) {
    use std::io::{Read, Write};
    let (_dir, root) = source_files(6);
    let opts = backup_core::mirror::MirrorOptions::default();
    let first = mirror_into(&root, dest, &opts);
    assert_eq!(first.copied, 6, "{first:?}");

    let path = "d1/f01.txt";
    let original = std::fs::read(root.join(path)).unwrap();
    let mut w = dest
        .write(path, backup_core::tree::FileAttrs::default())
        .unwrap();
    w.write_all(b"FILE 1\n").unwrap();
    assert_eq!(original.len(), b"FILE 1\n".len());
    w.commit().unwrap();
    dest.flush().unwrap();

    let again = mirror_into(&root, dest, &opts);
    assert_eq!(
        (again.copied, again.updated, again.unchanged),
        (0, 1, 5),
        "{again:?}"
    );
    let mut back = Vec::new();
    dest.open(path).unwrap().read_to_end(&mut back).unwrap();
    assert_eq!(back, original);
    let third = mirror_into(&root, dest, &opts);
    assert_eq!((third.updated, third.unchanged), (0, 6), "{third:?}");
    clear(dest);
}

/// A file's commit reports the stamp its listing and its `HEAD` show (what
/// lets the record vouch for it), and its mtime survives, whether it goes up
/// in one request or as a multipart upload (past the 8 MiB part size).
fn stamps_and_mtimes_agree_for_small_and_multipart_files(tree: &dyn backup_core::tree::Tree) {
    use std::io::Write;
    let mut stamps = Vec::new();
    for (path, len, mtime) in [
        ("small/one.bin", 1000, 1_500_000_000_987_654_321),
        ("large/two.bin", (9 << 20) + 17, -1_000_000_001),
    ] {
        let attrs = backup_core::tree::FileAttrs {
            mtime_ns: Some(mtime),
            mode: None,
        };
        let mut w = tree.write(path, attrs).unwrap();
        let chunk: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        w.write_all(&chunk).unwrap();
        let stamp = w.commit().unwrap().stamp.expect("a stamp");
        let st = tree.stat(path).unwrap().unwrap();
        assert_eq!(
            (st.size, st.mtime_ns, st.stamp.as_deref()),
            (len as u64, Some(mtime), Some(stamp.as_str())),
            "{path}"
        );
        stamps.push((path.to_owned(), stamp));
    }
    let listed: Vec<(String, String)> = tree
        .walk(&|_, _| false)
        .unwrap()
        .filter_map(|w| match w.unwrap() {
            backup_core::tree::Walked::Entry(e) if e.kind == backup_core::tree::EntryKind::File => {
                Some((e.path, e.stamp.expect("a listed stamp")))
            }
            _ => None,
        })
        .collect();
    stamps.sort();
    let mut listed = listed;
    listed.sort();
    assert_eq!(listed, stamps);
    clear(tree);
}

/// Every request of a tree whose credentials the server refuses fails as
/// `PermissionDenied`, naming the location and never showing `secret`.
fn tree_access_is_denied(tree: &dyn backup_core::tree::Tree, secret: &str) {
    use std::io::Write;
    let write = || -> backup_core::Result<()> {
        let mut w = tree.write("denied/x", backup_core::tree::FileAttrs::default())?;
        w.write_all(b"1")
            .map_err(|e| backup_core::Error::io("write", "denied/x", e))?;
        w.commit().map(drop)
    };
    let errors = [
        ("root", tree.root().map(drop).unwrap_err()),
        ("stat", tree.stat("denied/x").map(drop).unwrap_err()),
        ("walk", tree.walk(&|_, _| false).map(drop).unwrap_err()),
        ("open", tree.open("denied/x").map(drop).unwrap_err()),
        ("write", write().unwrap_err()),
        ("rename", tree.rename("denied/x", "denied/y").unwrap_err()),
    ];
    for (op, err) in errors {
        assert!(
            matches!(err, backup_core::Error::PermissionDenied { .. }),
            "{op}: {err:?}"
        );
        let text = backup_core::error_chain(&err);
        assert!(text.contains(&tree.location()), "{op}: {text}");
        assert!(!text.contains(secret), "{op}: {text}");
    }
}

/// Removes every file of a test's tree.
fn clear(tree: &dyn backup_core::tree::Tree) {
    let files: Vec<String> = tree
        .walk(&|_, _| false)
        .unwrap()
        .filter_map(|w| match w.unwrap() {
            backup_core::tree::Walked::Entry(e) if e.kind == backup_core::tree::EntryKind::File => {
                Some(e.path)
            }
            _ => None,
        })
        .collect();
    for f in files {
        tree.remove(&f, backup_core::tree::EntryKind::File).unwrap();
    }
    assert!(tree.root().unwrap().is_none(), "cleared");
}
