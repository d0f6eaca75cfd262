//! Every target runs the same conformance suite; this release has the local
//! target, remote targets join the list as they land.

mod conformance {
    use std::io::{Read, Write};
    use std::sync::Arc;

    use backup_core::{Error, Target, TargetExt};

    /// Runs every conformance check against a fresh, empty target.
    pub fn run_all(t: &Arc<dyn Target>) {
        put_get_list_delete(t.as_ref());
        not_found_is_an_outcome(t.as_ref());
        uncommitted_put_is_invisible(t.as_ref());
        atomic_replace(t.as_ref());
        create_new_is_exclusive(t);
        large_streamed_object(t.as_ref());
        list_dirs_sees_unfinished_writes(t.as_ref());
    }

    fn put_get_list_delete(t: &dyn Target) {
        t.put_bytes("a/one", b"1").unwrap();
        t.put_bytes("a/b/two", b"22").unwrap();
        t.put_bytes("c", b"333").unwrap();
        assert_eq!(t.get_bytes("a/b/two").unwrap(), b"22");
        let mut keys: Vec<(String, u64)> = t
            .list("a/")
            .unwrap()
            .into_iter()
            .map(|o| (o.key, o.size))
            .collect();
        keys.sort();
        assert_eq!(keys, vec![("a/b/two".into(), 2), ("a/one".into(), 1)]);
        assert_eq!(t.list("").unwrap().len(), 3);
        assert_eq!(t.stat("c").unwrap().size, 3);
        for k in ["a/one", "a/b/two", "c"] {
            t.delete(k).unwrap();
        }
        assert!(t.list("").unwrap().is_empty());
    }

    fn not_found_is_an_outcome(t: &dyn Target) {
        assert!(matches!(t.get("missing"), Err(Error::NotFound { .. })));
        assert!(matches!(t.stat("missing"), Err(Error::NotFound { .. })));
        assert!(!t.exists("missing").unwrap());
        assert!(matches!(
            t.delete("missing"),
            Ok(()) | Err(Error::NotFound { .. })
        ));
        assert!(t.list("nothing/here/").unwrap().is_empty());
        assert!(matches!(t.put("../escape"), Err(Error::InvalidInput(_))));
    }

    fn uncommitted_put_is_invisible(t: &dyn Target) {
        let mut w = t.put("half").unwrap();
        w.write_all(b"partial").unwrap();
        assert!(!t.exists("half").unwrap());
        assert!(t.list("").unwrap().is_empty());
        drop(w);
        assert!(!t.exists("half").unwrap());
        assert!(t.list("").unwrap().is_empty());
    }

    fn atomic_replace(t: &dyn Target) {
        t.put_bytes("obj", b"old").unwrap();
        let mut w = t.put("obj").unwrap();
        w.write_all(b"new new new").unwrap();
        // While the new version is being written, readers see the old one.
        assert_eq!(t.get_bytes("obj").unwrap(), b"old");
        w.commit().unwrap();
        assert_eq!(t.get_bytes("obj").unwrap(), b"new new new");
        t.delete("obj").unwrap();
    }

    fn create_new_is_exclusive(t: &Arc<dyn Target>) {
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let t = Arc::clone(t);
                std::thread::spawn(move || {
                    t.create_new("locks/l", format!("{i}").as_bytes()).is_ok()
                })
            })
            .collect();
        let won = handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .filter(|ok| *ok)
            .count();
        assert_eq!(won, 1, "exactly one creator wins");
        assert!(matches!(
            t.create_new("locks/l", b"x"),
            Err(Error::AlreadyExists { .. })
        ));
        assert_eq!(
            t.get_bytes("locks/l").unwrap().len(),
            1,
            "content is complete"
        );
        t.delete("locks/l").unwrap();
    }

    fn large_streamed_object(t: &dyn Target) {
        // 64 MiB in 1 MiB writes, read back in chunks and hashed on the fly.
        let chunk: Vec<u8> = (0..1 << 20)
            .map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
            .collect();
        let mut w = t.put("big/object").unwrap();
        for _ in 0..64 {
            w.write_all(&chunk).unwrap();
        }
        w.commit().unwrap();
        assert_eq!(t.stat("big/object").unwrap().size, 64 << 20);
        let mut r = t.get("big/object").unwrap();
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0usize;
        loop {
            let n = r.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            let off = total % chunk.len();
            let take = n.min(chunk.len() - off);
            assert_eq!(&buf[..take], &chunk[off..off + take]);
            total += n;
        }
        assert_eq!(total, 64 << 20);
        t.delete("big/object").unwrap();
    }

    fn list_dirs_sees_unfinished_writes(t: &dyn Target) {
        t.put_bytes("snaps/done/x", b"1").unwrap();
        let mut pending = t.put("snaps/pending/x").unwrap();
        pending.write_all(b"2").unwrap();
        let dirs = t.list_dirs("snaps/").unwrap();
        assert!(dirs.contains(&"done".to_owned()), "{dirs:?}");
        drop(pending);
        t.delete("snaps/done/x").unwrap();
        t.sweep("snaps/pending/").unwrap();
    }
}

#[test]
fn local_target_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let t: std::sync::Arc<dyn backup_core::Target> =
        std::sync::Arc::new(backup_targets::LocalTarget::new(dir.path().join("store")).unwrap());
    conformance::run_all(&t);
}

#[test]
fn local_list_dirs_includes_directories_with_only_unfinished_writes() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let t = backup_targets::LocalTarget::new(dir.path()).unwrap();
    let mut w = backup_core::Target::put(&t, "snaps/killed/data").unwrap();
    w.write_all(b"x").unwrap();
    // A killed process never commits nor drops: forget the writer.
    std::mem::forget(w);
    assert!(backup_core::Target::list(&t, "snaps/").unwrap().is_empty());
    assert_eq!(
        backup_core::Target::list_dirs(&t, "snaps/").unwrap(),
        vec!["killed".to_owned()]
    );
    backup_core::Target::sweep(&t, "snaps/killed/").unwrap();
    assert!(
        backup_core::Target::list_dirs(&t, "snaps/")
            .unwrap()
            .is_empty()
    );
}

#[test]
fn registry_opens_plain_paths_and_file_urls_and_names_missing_features() {
    let mut r = backup_core::Registry::new();
    backup_targets::register(&mut r);
    let dir = tempfile::tempdir().unwrap();
    let plain = r.open_target(dir.path().to_str().unwrap()).unwrap();
    assert_eq!(plain.location(), dir.path().display().to_string());
    let url = r
        .open_target(&format!("file://{}", dir.path().display()))
        .unwrap();
    assert_eq!(url.location(), plain.location());
    let err = r.open_target("s3://bucket/prefix").unwrap_err().to_string();
    assert!(err.contains("built without feature `s3`"), "{err}");
    let err = r.open_target("weird://x").unwrap_err().to_string();
    assert!(err.contains("unknown repository scheme"), "{err}");
}
