//! Every target runs the same conformance suite: the local target always,
//! each remote target against a real server on loopback when one is given
//! (`scripts/services.sh` starts them and exports `BACKUPKIT_TEST_*`).
//! Without its server a test is skipped with the reason printed, unless
//! `BACKUPKIT_REQUIRE_SERVICES=1`, which makes it fail.

mod conformance {
    use std::io::{Read, Write};
    use std::sync::Arc;

    use backup_core::{Error, Target, TargetExt};

    /// Runs every conformance check against a fresh, empty target, then a
    /// backup, `check --read-data` and restore through a repository on it.
    pub fn run_all(t: &Arc<dyn Target>) {
        put_get_list_delete(t.as_ref());
        not_found_is_an_outcome(t.as_ref());
        uncommitted_put_is_invisible(t.as_ref());
        atomic_replace(t.as_ref());
        create_new_is_exclusive(t);
        large_streamed_object(t.as_ref());
        ranged_reads(t.as_ref());
        list_dirs_lists_directories_not_unfinished_objects(t.as_ref());
        round_trip(t);
    }

    /// Byte ranges of an object come back as the same bytes of a whole
    /// read: inside one read block, across blocks, crossing the end
    /// (shortened), empty; a missing key is `NotFound`.
    fn ranged_reads(t: &dyn Target) {
        let body: Vec<u8> = (0..3_300_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        t.put_bytes("ranges/pack", &body).unwrap();
        let size = body.len() as u64;
        for (offset, len) in [
            (0, 10),
            (1, 1),
            (4_095, 70_000),
            (1_000_000, 2_100_000),
            (size - 100, 1_000),
            (17, size - 17),
            (5, 0),
        ] {
            let mut got = Vec::new();
            t.get_range("ranges/pack", offset, len)
                .unwrap()
                .read_to_end(&mut got)
                .unwrap();
            let start = usize::try_from(offset).unwrap();
            let end = usize::try_from((offset + len).min(size)).unwrap();
            assert!(
                got == body[start..end],
                "{}: range {offset}+{len} gave {} bytes, not the {} bytes at that offset",
                t.location(),
                got.len(),
                end - start
            );
        }
        match t.get_range("ranges/missing", 0, 10) {
            Err(Error::NotFound { .. }) => {}
            other => panic!("ranged read of a missing key: {:?}", other.map(|_| ())),
        }
        t.delete("ranges/pack").unwrap();
    }

    /// A files snapshot stored on the target, checked byte for byte, and
    /// restored; the repository on the target is removed afterwards.
    fn round_trip(t: &Arc<dyn Target>) {
        use backup_core::{
            BackupOptions, Cancel, CheckOptions, NoProgress, Registry, Repository, RestoreOptions,
        };
        let mut registry = Registry::new();
        backup_targets::register(&mut registry);
        backup_archive::register(&mut registry);
        let registry = Arc::new(registry);

        let src = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(src.path().join("data/sub")).unwrap();
        std::fs::write(src.path().join("data/a.csv"), "x,y\n1,2\n").unwrap();
        let big: Vec<u8> = (0..9_000_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(src.path().join("data/sub/big.bin"), &big).unwrap();
        std::fs::write(src.path().join("data/empty"), b"").unwrap();

        let repo = Repository::init_target(Arc::clone(&registry), Arc::clone(t)).unwrap();
        let summary = repo
            .backup(
                &BackupOptions {
                    paths: vec![src.path().join("data")],
                    ..BackupOptions::default()
                },
                &NoProgress,
                &Cancel::new(),
            )
            .unwrap();
        let report = repo
            .check(
                &CheckOptions {
                    read_data: true,
                    ..CheckOptions::default()
                },
                &NoProgress,
                &Cancel::new(),
            )
            .unwrap();
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        let out = tempfile::tempdir().unwrap();
        let id = summary.snapshot.expect("a snapshot was committed").id;
        repo.restore(
            &id,
            &RestoreOptions {
                target: out.path().to_path_buf(),
                ..RestoreOptions::default()
            },
            &NoProgress,
            &Cancel::new(),
        )
        .unwrap();
        let restored = out
            .path()
            .join(src.path().join("data").strip_prefix("/").unwrap());
        assert_eq!(std::fs::read(restored.join("sub/big.bin")).unwrap(), big);
        assert_eq!(
            std::fs::read(restored.join("a.csv")).unwrap(),
            b"x,y\n1,2\n"
        );
        assert_eq!(std::fs::read(restored.join("empty")).unwrap(), b"");

        // Leave the target empty for the next run.
        for o in t.list("").unwrap() {
            t.delete(&o.key).unwrap();
        }
    }

    /// A target whose objects live in the local directory `root` (a local
    /// target, or an SFTP server on this machine) never reads, lists, writes
    /// through or deletes through a symlink, and never opens a FIFO: a
    /// hostile repository cannot reach outside its root or hang a reader.
    pub fn links_and_special_files_are_not_objects(t: &Arc<dyn Target>, root: &std::path::Path) {
        use std::os::unix::fs::symlink;
        use std::path::Path;

        let outside = tempfile::tempdir().unwrap();
        let victim = outside.path().join("victim");
        std::fs::create_dir_all(victim.join("sub")).unwrap();
        std::fs::write(victim.join("keep"), b"precious").unwrap();
        std::fs::write(victim.join("sub/inner"), b"also precious").unwrap();
        let before = tree(&victim);

        t.put_bytes("hostile/real/ok", b"fine").unwrap();
        let real = root.join("hostile/real");
        symlink(&victim, root.join("hostile/linked")).unwrap();
        symlink(victim.join("keep"), real.join("file-link")).unwrap();
        let fifo = std::process::Command::new("mkfifo")
            .arg(real.join("fifo"))
            .status()
            .unwrap();
        assert!(fifo.success(), "mkfifo failed");

        let keys: Vec<String> = t
            .list("hostile/")
            .unwrap()
            .into_iter()
            .map(|o| o.key)
            .collect();
        assert_eq!(
            keys,
            ["hostile/real/ok"],
            "links or a FIFO listed as objects"
        );
        assert!(t.list("hostile/linked/").unwrap().is_empty());
        assert_eq!(t.list_dirs("hostile/").unwrap(), ["real"]);

        for key in [
            "hostile/linked/keep",
            "hostile/linked/sub/inner",
            "hostile/real/file-link",
            "hostile/real/fifo",
        ] {
            // A FIFO must not block the open: bound the wait.
            let (reader, owned) = (Arc::clone(t), key.to_owned());
            let got = within_seconds(10, move || reader.get(&owned).map(|_| ()));
            assert!(
                matches!(got, Err(Error::NotFound { .. })),
                "get {key}: {got:?}"
            );
            assert!(
                matches!(t.stat(key), Err(Error::NotFound { .. })),
                "stat {key}"
            );
            let _ = t.delete(key);
        }
        t.sweep("hostile/linked/").unwrap();
        t.sweep("hostile/linked/sub/").unwrap();
        assert!(
            t.put_bytes("hostile/linked/new", b"x").is_err(),
            "wrote through a symlink"
        );
        assert!(t.put_bytes("hostile/linked/sub/new", b"x").is_err());
        assert!(t.create_new("hostile/linked/lock", b"x").is_err());
        assert_eq!(
            tree(&victim),
            before,
            "the directory outside the target changed"
        );
        assert!(!Path::new(&victim.join("new")).exists());

        // Clean up what the test put there by hand.
        let _ = std::fs::remove_file(root.join("hostile/linked"));
        let _ = std::fs::remove_file(real.join("file-link"));
        let _ = std::fs::remove_file(real.join("fifo"));
        t.delete("hostile/real/ok").unwrap();
    }

    /// Every file below `dir` with its content, sorted.
    fn tree(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let e = e.unwrap();
                let p = e.path();
                if e.file_type().unwrap().is_dir() {
                    out.push((p.display().to_string(), Vec::new()));
                    stack.push(p);
                } else {
                    out.push((p.display().to_string(), std::fs::read(&p).unwrap()));
                }
            }
        }
        out.sort();
        out
    }

    /// Runs `f` on a thread; fails the test if it takes longer than `secs`.
    fn within_seconds<T: Send + 'static>(secs: u64, f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        rx.recv_timeout(std::time::Duration::from_secs(secs))
            .expect("the operation hung")
    }

    /// Every operation on a target the credentials or the server's
    /// permissions keep us out of fails as `PermissionDenied`, the same
    /// outcome for every backend; the error names the location and never
    /// shows `secret`.
    pub fn access_is_denied(t: &dyn Target, location: &str, secret: Option<&str>) {
        let errors = [
            ("put", t.put_bytes("denied/x", b"1").unwrap_err()),
            ("get", t.get("denied/x").map(|_| ()).unwrap_err()),
            ("stat", t.stat("denied/x").map(|_| ()).unwrap_err()),
            ("list", t.list("").map(|_| ()).unwrap_err()),
        ];
        for (op, err) in errors {
            assert!(
                matches!(err, Error::PermissionDenied { .. }),
                "{op}: {err:?}"
            );
            let text = backup_core::error_chain(&err);
            assert!(text.contains(location), "{op}: {text}");
            if let Some(secret) = secret {
                assert!(!text.contains(secret), "{op}: {text}");
            }
        }
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
        // The same size, within the same second: still replaced (rclone's
        // moveto alone would call the two identical and keep the old one).
        t.put_bytes("obj", b"NEW NEW NEW").unwrap();
        assert_eq!(t.get_bytes("obj").unwrap(), b"NEW NEW NEW");
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

    /// `list_dirs` names the directory of a finished object; an unfinished
    /// write is never a listed object. (Whether its directory shows depends
    /// on the backend: see `unfinished_writes_leave_a_directory_to_sweep`.)
    fn list_dirs_lists_directories_not_unfinished_objects(t: &dyn Target) {
        t.put_bytes("snaps/done/x", b"1").unwrap();
        let mut pending = t.put("snaps/pending/x").unwrap();
        pending.write_all(b"2").unwrap();
        let dirs = t.list_dirs("snaps/").unwrap();
        assert!(dirs.contains(&"done".to_owned()), "{dirs:?}");
        let keys: Vec<String> = t
            .list("snaps/")
            .unwrap()
            .into_iter()
            .map(|o| o.key)
            .collect();
        assert_eq!(keys, ["snaps/done/x"]);
        drop(pending);
        t.delete("snaps/done/x").unwrap();
        t.sweep("snaps/pending/").unwrap();
    }

    /// For targets that write a temporary file first (local, SFTP): a
    /// directory holding only an unfinished write is named by `list_dirs`,
    /// so that a killed backup's leftovers are found, and `sweep` removes
    /// it. (Object stores keep an unfinished upload invisible.)
    pub fn unfinished_writes_leave_a_directory_to_sweep(t: &dyn Target) {
        let mut pending = t.put("killed/pending/x").unwrap();
        pending.write_all(&[7u8; 4096]).unwrap();
        pending.flush().unwrap();
        // A killed process never commits nor drops.
        std::mem::forget(pending);
        assert!(t.list("killed/").unwrap().is_empty());
        assert_eq!(t.list_dirs("killed/").unwrap(), ["pending"]);
        t.sweep("killed/pending/").unwrap();
        assert!(t.list_dirs("killed/").unwrap().is_empty());
    }
}

#[path = "targets/trees.rs"]
mod trees;

#[test]
fn local_tree_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("tree");
    trees::run_all(&|sub: &str| {
        std::sync::Arc::new(backup_targets::LocalTree::new(root.join(sub)).unwrap())
            as std::sync::Arc<dyn backup_core::tree::Tree>
    });
}

#[test]
fn local_target_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let t: std::sync::Arc<dyn backup_core::Target> =
        std::sync::Arc::new(backup_targets::LocalTarget::new(dir.path().join("store")).unwrap());
    conformance::run_all(&t);
}

#[test]
fn local_target_ignores_links_and_special_files() {
    let dir = tempfile::tempdir().unwrap();
    let t: std::sync::Arc<dyn backup_core::Target> =
        std::sync::Arc::new(backup_targets::LocalTarget::new(dir.path()).unwrap());
    conformance::links_and_special_files_are_not_objects(&t, dir.path());
}

#[test]
fn local_list_dirs_includes_directories_with_only_unfinished_writes() {
    let dir = tempfile::tempdir().unwrap();
    let t = backup_targets::LocalTarget::new(dir.path()).unwrap();
    conformance::unfinished_writes_leave_a_directory_to_sweep(&t);
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
    // A registry whose builder left out a remote kind names the feature.
    let err = backup_core::Registry::new()
        .open_target("s3://bucket/prefix")
        .unwrap_err()
        .to_string();
    assert!(err.contains("built without feature `s3`"), "{err}");
    let err = r.open_target("weird://x").unwrap_err().to_string();
    assert!(err.contains("unknown repository scheme"), "{err}");
}

/// The value of each variable, or `None` (with the reason printed) when one
/// is unset; with `BACKUPKIT_REQUIRE_SERVICES=1` a missing one fails.
fn service(test: &str, vars: &[&str]) -> Option<Vec<String>> {
    let mut values = Vec::new();
    for var in vars {
        match std::env::var(var) {
            Ok(v) if !v.is_empty() => values.push(v),
            _ => {
                assert!(
                    std::env::var("BACKUPKIT_REQUIRE_SERVICES").as_deref() != Ok("1"),
                    "{test}: {var} is not set and BACKUPKIT_REQUIRE_SERVICES=1 \
                     (start the services with scripts/services.sh)"
                );
                eprintln!(
                    "SKIPPED {test}: {var} is not set (run the tests through \
                     scripts/services.sh to start the service)"
                );
                return None;
            }
        }
    }
    Some(values)
}

/// A prefix no other test run uses, so runs never see each other's objects.
fn unique_prefix(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{name}-{}-{nanos}", std::process::id())
}

fn open(
    location: &str,
    options: &[(&str, &str)],
) -> backup_core::Result<std::sync::Arc<dyn backup_core::Target>> {
    registry().open_target_with(location, &owned(options))
}

/// A mirror tree through the registry, as frontends open one.
fn open_tree(
    location: &str,
    options: &[(&str, &str)],
) -> std::sync::Arc<dyn backup_core::tree::Tree> {
    registry().open_tree(location, &owned(options)).unwrap()
}

fn registry() -> backup_core::Registry {
    let mut r = backup_core::Registry::new();
    backup_targets::register(&mut r);
    r
}

fn owned(options: &[(&str, &str)]) -> backup_core::TargetOptions {
    options
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// The remote targets' tests exist only with their cargo features; a run
/// without them (`cargo nextest run -p backup-targets` without
/// `--all-features`) would pass having tested nothing remote. Under
/// `BACKUPKIT_REQUIRE_SERVICES=1` that fails here instead.
#[test]
fn every_remote_target_is_compiled_in_when_services_are_required() {
    let compiled = [
        ("s3", cfg!(feature = "s3")),
        ("azure", cfg!(feature = "azure")),
        ("gcs", cfg!(feature = "gcs")),
        ("sftp", cfg!(feature = "sftp")),
        ("rclone", cfg!(feature = "rclone")),
    ];
    let missing: Vec<&str> = compiled
        .iter()
        .filter(|(_, on)| !on)
        .map(|(f, _)| *f)
        .collect();
    if missing.is_empty() {
        return;
    }
    assert!(
        std::env::var("BACKUPKIT_REQUIRE_SERVICES").as_deref() != Ok("1"),
        "built without the features {missing:?}: their tests are compiled out (use --all-features)"
    );
    eprintln!("skipping the tests of {missing:?}: built without those features");
}

#[cfg(feature = "s3")]
mod s3 {
    use super::*;

    const VARS: &[&str] = &[
        "BACKUPKIT_TEST_S3_ENDPOINT",
        "BACKUPKIT_TEST_S3_BUCKET",
        "BACKUPKIT_TEST_S3_ACCESS_KEY_ID",
        "BACKUPKIT_TEST_S3_SECRET_ACCESS_KEY",
    ];

    fn options(v: &[String]) -> Vec<(&'static str, String)> {
        vec![
            ("endpoint", v[0].clone()),
            ("allow_http", "true".into()),
            ("region", "us-east-1".into()),
            ("access_key_id", v[2].clone()),
            ("secret_access_key", v[3].clone()),
        ]
    }

    fn target(v: &[String], prefix: &str) -> std::sync::Arc<dyn backup_core::Target> {
        let opts = options(v);
        let opts: Vec<(&str, &str)> = opts.iter().map(|(k, v)| (*k, v.as_str())).collect();
        open(&format!("s3://{}/{prefix}", v[1]), &opts).unwrap()
    }

    /// A TCP proxy in front of the S3 server that answers every third new
    /// connection with `503 Slow Down` (or, with `always`, every one) and
    /// drops it; returns its endpoint and the count of faults injected.
    fn flaky_proxy(
        upstream: &str,
        always: bool,
    ) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        use std::io::{Read, Write};
        use std::net::{TcpListener, TcpStream};
        use std::sync::atomic::Ordering;
        let upstream = upstream.trim_start_matches("http://").to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let faults = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = std::sync::Arc::clone(&faults);
        std::thread::spawn(move || {
            for (n, conn) in listener.incoming().enumerate() {
                let Ok(mut client) = conn else { break };
                if always || n % 3 == 1 {
                    counted.fetch_add(1, Ordering::SeqCst);
                    let mut head = [0u8; 1024];
                    let _ = client.read(&mut head);
                    let _ = client.write_all(
                        b"HTTP/1.1 503 Slow Down\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    );
                    continue;
                }
                let Ok(server) = TcpStream::connect(&upstream) else {
                    continue;
                };
                let (mut c2, mut s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let (mut client, mut server) = (client, server);
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut c2, &mut s2);
                    let _ = s2.shutdown(std::net::Shutdown::Write);
                });
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut server, &mut client);
                    let _ = client.shutdown(std::net::Shutdown::Write);
                });
            }
        });
        (endpoint, faults)
    }

    #[test]
    fn s3_transient_failures_are_retried_and_persistent_ones_named() {
        let Some(mut v) = service(
            "s3_transient_failures_are_retried_and_persistent_ones_named",
            VARS,
        ) else {
            return;
        };
        let (endpoint, faults) = flaky_proxy(&v[0], false);
        v[0] = endpoint;
        let t = target(&v, &unique_prefix("flaky"));
        conformance::run_all(&t);
        assert!(
            faults.load(std::sync::atomic::Ordering::SeqCst) > 0,
            "the proxy injected no fault"
        );

        let (endpoint, faults) = flaky_proxy(&v[0], true);
        let mut opts = options(&v);
        opts[0].1 = endpoint;
        opts.push(("retry_timeout", "2s".into()));
        let opts: Vec<(&str, &str)> = opts.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let t = open(&format!("s3://{}/down", v[1]), &opts).unwrap();
        let started = std::time::Instant::now();
        let err = backup_core::error_chain(&t.list("").unwrap_err());
        assert!(err.contains(&format!("s3://{}/down", v[1])), "{err}");
        assert!(err.contains("503"), "{err}");
        assert!(
            faults.load(std::sync::atomic::Ordering::SeqCst) > 1,
            "not retried"
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(20));
    }

    /// moto checks keys and signatures (scripts/services.sh turns its
    /// authentication on): a wrong secret is refused like AWS refuses it.
    #[test]
    fn s3_wrong_secret_is_permission_denied_and_not_shown() {
        let Some(mut v) = service("s3_wrong_secret_is_permission_denied_and_not_shown", VARS)
        else {
            return;
        };
        let wrong = "wrong-secret-wrong-secret-wrong-secret";
        v[3] = wrong.into();
        let t = target(&v, "denied");
        conformance::access_is_denied(t.as_ref(), &format!("s3://{}/denied", v[1]), Some(wrong));
        v[2] = "AKIAUNKNOWNUNKNOWN00".into();
        let t = target(&v, "denied");
        conformance::access_is_denied(t.as_ref(), &format!("s3://{}/denied", v[1]), Some(wrong));
    }

    #[test]
    fn s3_target_conforms() {
        let Some(v) = service("s3_target_conforms", VARS) else {
            return;
        };
        let t = target(&v, &unique_prefix("conformance"));
        conformance::run_all(&t);
    }

    include!("targets/cloud_trees.rs");

    /// A mirror tree at `prefix` in the test bucket, opened through the
    /// registry; `endpoint` replaces the server's.
    fn tree(
        v: &[String],
        prefix: &str,
        endpoint: Option<&str>,
    ) -> std::sync::Arc<dyn backup_core::tree::Tree> {
        let mut opts = options(v);
        if let Some(endpoint) = endpoint {
            endpoint.clone_into(&mut opts[0].1);
        }
        let opts: Vec<(&str, &str)> = opts.iter().map(|(k, v)| (*k, v.as_str())).collect();
        open_tree(&format!("s3://{}/{prefix}", v[1]), &opts)
    }

    #[test]
    fn s3_tree_conforms() {
        let Some(v) = service("s3_tree_conforms", VARS) else {
            return;
        };
        let base = unique_prefix("tree");
        super::trees::run_all(&|sub: &str| {
            tree(&v, format!("{base}/{sub}").trim_end_matches('/'), None)
        });
        clear(tree(&v, &base, None).as_ref());
    }

    #[test]
    fn s3_tree_rerun_without_changes_makes_no_head_requests() {
        let Some(v) = service("s3_tree_rerun_without_changes_makes_no_head_requests", VARS) else {
            return;
        };
        let prefix = unique_prefix("no-head");
        unchanged_rerun_makes_no_head_requests(&v[0], &|endpoint| {
            tree(&v, &prefix, Some(endpoint))
        });
    }

    #[test]
    fn s3_tree_stamps_and_mtimes_agree_for_small_and_multipart_files() {
        let Some(v) = service(
            "s3_tree_stamps_and_mtimes_agree_for_small_and_multipart_files",
            VARS,
        ) else {
            return;
        };
        stamps_and_mtimes_agree_for_small_and_multipart_files(
            tree(&v, &unique_prefix("stamps"), None).as_ref(),
        );
    }

    #[test]
    fn s3_tree_finds_objects_changed_behind_its_back() {
        let Some(v) = service("s3_tree_finds_objects_changed_behind_its_back", VARS) else {
            return;
        };
        changes_at_the_destination_are_found(tree(&v, &unique_prefix("changed"), None).as_ref());
    }

    #[test]
    fn s3_tree_wrong_secret_is_permission_denied_and_not_shown() {
        let Some(mut v) = service(
            "s3_tree_wrong_secret_is_permission_denied_and_not_shown",
            VARS,
        ) else {
            return;
        };
        let wrong = "wrong-secret-wrong-secret-wrong-secret";
        v[3] = wrong.into();
        tree_access_is_denied(tree(&v, "denied", None).as_ref(), wrong);
    }

    /// After a mirror, rclone reads the source's exact mtimes from the
    /// metadata backupkit wrote (the same bucket as a remote defined by
    /// `RCLONE_CONFIG_BKCHECK_*` variables, not in any config file).
    #[test]
    fn s3_tree_mtimes_are_read_by_rclone() {
        let Some(v) = service("s3_tree_mtimes_are_read_by_rclone", VARS) else {
            return;
        };
        let prefix = unique_prefix("rclone");
        let dest = tree(&v, &prefix, None);
        let (_dir, root) = source_files(5);
        let opts = backup_core::mirror::MirrorOptions::default();
        let first = mirror_into(&root, dest.as_ref(), &opts);
        assert_eq!(first.copied, 5, "{first:?}");

        let config = tempfile::NamedTempFile::new().unwrap();
        let mut cmd = std::process::Command::new("rclone");
        cmd.args(["lsjson", "-R", "--files-only", "--retries", "1"])
            .args(["--low-level-retries", "1", "--contimeout", "5s"])
            .args(["--timeout", "20s", "--config"])
            .arg(config.path())
            .arg(format!("bkcheck:{}/{prefix}", v[1]));
        // rclone 1.60's AWS SDK cannot load a CA bundle into its HTTP
        // transport and fails on this variable, which plain HTTP never needs.
        cmd.env_remove("AWS_CA_BUNDLE");
        for (key, value) in [
            ("TYPE", "s3"),
            ("PROVIDER", "Other"),
            ("ENDPOINT", &v[0]),
            ("ACCESS_KEY_ID", &v[2]),
            ("SECRET_ACCESS_KEY", &v[3]),
            ("REGION", "us-east-1"),
        ] {
            cmd.env(format!("RCLONE_CONFIG_BKCHECK_{key}"), value);
        }
        let out = match cmd.output() {
            Ok(out) => out,
            Err(e) => {
                assert!(
                    std::env::var("BACKUPKIT_REQUIRE_SERVICES").as_deref() != Ok("1"),
                    "rclone cannot be run ({e}) and BACKUPKIT_REQUIRE_SERVICES=1"
                );
                eprintln!("SKIPPED s3_tree_mtimes_are_read_by_rclone: rclone cannot be run ({e})");
                clear(dest.as_ref());
                return;
            }
        };
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "rclone lsjson failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // One object per line: {"Path":"d1/f01.txt",...,"ModTime":"...",...}
        let field = |line: &str, name: &str| -> Option<String> {
            let start = line.find(&format!("\"{name}\":\""))? + name.len() + 4;
            let end = start + line[start..].find('"')?;
            Some(line[start..end].to_owned())
        };
        let mut listed: Vec<(String, i64)> = text
            .lines()
            .filter_map(|l| Some((field(l, "Path")?, field(l, "ModTime")?)))
            .filter(|(p, _)| !p.starts_with(".backupkit-mirror/"))
            .map(|(p, time)| {
                let ns = chrono::DateTime::parse_from_rfc3339(&time)
                    .unwrap_or_else(|e| panic!("{time}: {e}"))
                    .timestamp_nanos_opt()
                    .unwrap();
                (p, ns)
            })
            .collect();
        listed.sort();
        let mut want: Vec<(String, i64)> = (0..5)
            .map(|i| {
                let path = format!("d{}/f{i:02}.txt", i % 4);
                let mtime = std::fs::metadata(root.join(&path))
                    .unwrap()
                    .modified()
                    .unwrap()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos();
                (path, i64::try_from(mtime).unwrap())
            })
            .collect();
        want.sort();
        assert_eq!(listed, want, "rclone's view of the mirror: {text}");
        clear(dest.as_ref());
    }
}

#[cfg(feature = "azure")]
mod azure {
    use super::*;

    const VARS: &[&str] = &[
        "BACKUPKIT_TEST_AZURE_ENDPOINT",
        "BACKUPKIT_TEST_AZURE_ACCOUNT",
        "BACKUPKIT_TEST_AZURE_ACCESS_KEY",
        "BACKUPKIT_TEST_AZURE_CONTAINER",
    ];

    fn target(
        v: &[String],
        key: &str,
    ) -> backup_core::Result<std::sync::Arc<dyn backup_core::Target>> {
        open(
            &format!("az://{}/{}", v[3], unique_prefix("conformance")),
            &[
                ("endpoint", &v[0]),
                ("account_name", &v[1]),
                ("access_key", key),
                ("allow_http", "true"),
            ],
        )
    }

    #[test]
    fn azure_target_conforms() {
        let Some(v) = service("azure_target_conforms", VARS) else {
            return;
        };
        conformance::run_all(&target(&v, &v[2]).unwrap());
    }

    #[test]
    fn azure_wrong_key_is_permission_denied_and_not_shown() {
        let Some(v) = service("azure_wrong_key_is_permission_denied_and_not_shown", VARS) else {
            return;
        };
        // A well-formed key (base64) that is not the account's.
        let wrong = "d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZy1rZXktd3Jvbmcta2V5LXdyb25nLWtleQ==";
        let t = target(&v, wrong).unwrap();
        conformance::access_is_denied(t.as_ref(), &format!("az://{}", v[3]), Some(wrong));
    }

    include!("targets/cloud_trees.rs");

    /// A mirror tree at `prefix` in the test container, opened through the
    /// registry; `endpoint` replaces the server's.
    fn tree(
        v: &[String],
        prefix: &str,
        endpoint: Option<&str>,
    ) -> std::sync::Arc<dyn backup_core::tree::Tree> {
        open_tree(
            &format!("az://{}/{prefix}", v[3]),
            &[
                ("endpoint", endpoint.unwrap_or(&v[0])),
                ("account_name", &v[1]),
                ("access_key", &v[2]),
                ("allow_http", "true"),
            ],
        )
    }

    #[test]
    fn azure_tree_conforms() {
        let Some(v) = service("azure_tree_conforms", VARS) else {
            return;
        };
        let base = unique_prefix("tree");
        super::trees::run_all(&|sub: &str| {
            tree(&v, format!("{base}/{sub}").trim_end_matches('/'), None)
        });
        clear(tree(&v, &base, None).as_ref());
    }

    #[test]
    fn azure_tree_rerun_without_changes_makes_no_head_requests() {
        let Some(v) = service(
            "azure_tree_rerun_without_changes_makes_no_head_requests",
            VARS,
        ) else {
            return;
        };
        let prefix = unique_prefix("no-head");
        unchanged_rerun_makes_no_head_requests(&v[0], &|endpoint| {
            tree(&v, &prefix, Some(endpoint))
        });
    }

    #[test]
    fn azure_tree_wrong_key_is_permission_denied_and_not_shown() {
        let Some(mut v) = service(
            "azure_tree_wrong_key_is_permission_denied_and_not_shown",
            VARS,
        ) else {
            return;
        };
        // A well-formed key (base64) that is not the account's.
        let wrong = "d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZy1rZXktd3Jvbmcta2V5LXdyb25nLWtleQ==";
        v[2] = wrong.into();
        tree_access_is_denied(tree(&v, "denied", None).as_ref(), wrong);
    }

    #[test]
    fn azure_tree_stamps_and_mtimes_agree_for_small_and_multipart_files() {
        let Some(v) = service(
            "azure_tree_stamps_and_mtimes_agree_for_small_and_multipart_files",
            VARS,
        ) else {
            return;
        };
        stamps_and_mtimes_agree_for_small_and_multipart_files(
            tree(&v, &unique_prefix("stamps"), None).as_ref(),
        );
    }

    #[test]
    fn azure_tree_finds_objects_changed_behind_its_back() {
        let Some(v) = service("azure_tree_finds_objects_changed_behind_its_back", VARS) else {
            return;
        };
        changes_at_the_destination_are_found(tree(&v, &unique_prefix("changed"), None).as_ref());
    }
}

/// GCS: no local emulator accepts `object_store`'s XML-API uploads
/// (fake-gcs-server answers 400 "invalid uploadType"; gcp-storage-emulator
/// sends no `ETag` and has no HEAD or XML list), so the emulator test seeds
/// objects through the JSON API and checks every read path, listing and
/// deletion; the full suite runs against a real bucket on request.
#[cfg(feature = "gcs")]
mod gcs {
    use std::io::{Read, Write};

    use super::*;

    const VARS: &[&str] = &[
        "BACKUPKIT_TEST_GCS_SERVICE_ACCOUNT",
        "BACKUPKIT_TEST_GCS_BUCKET",
        "BACKUPKIT_TEST_GCS_ENDPOINT",
    ];

    /// Uploads through the emulator's JSON media upload (plain HTTP/1.1).
    fn seed(endpoint: &str, bucket: &str, name: &str, body: &[u8]) {
        let host = endpoint.trim_start_matches("http://").trim_end_matches('/');
        let mut conn = std::net::TcpStream::connect(host).unwrap();
        let name = name.replace('/', "%2F");
        write!(
            conn,
            "POST /upload/storage/v1/b/{bucket}/o?uploadType=media&name={name} HTTP/1.1\r\n\
             Host: {host}\r\nContent-Type: application/octet-stream\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .unwrap();
        conn.write_all(body).unwrap();
        let mut reply = String::new();
        conn.read_to_string(&mut reply).unwrap();
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    }

    #[test]
    fn gcs_reads_lists_and_deletes_against_the_emulator() {
        let Some(v) = service("gcs_reads_lists_and_deletes_against_the_emulator", VARS) else {
            return;
        };
        let prefix = unique_prefix("gcs");
        let big: Vec<u8> = (0..20_000_000u32).map(|i| (i % 253) as u8).collect();
        seed(&v[2], &v[1], &format!("{prefix}/snapshots/s1/data"), &big);
        seed(
            &v[2],
            &v[1],
            &format!("{prefix}/snapshots/s1/snapshot.json"),
            b"{}",
        );
        seed(&v[2], &v[1], &format!("{prefix}/snapshots/s2/data"), b"2");
        let t = open(
            &format!("gs://{}/{prefix}", v[1]),
            &[("service_account", &v[0]), ("allow_http", "true")],
        )
        .unwrap();

        let mut read = Vec::new();
        t.get("snapshots/s1/data")
            .unwrap()
            .read_to_end(&mut read)
            .unwrap();
        assert!(read == big, "streamed read differs");
        assert_eq!(t.stat("snapshots/s1/data").unwrap().size, big.len() as u64);
        let mut keys: Vec<String> = t
            .list("snapshots/")
            .unwrap()
            .into_iter()
            .map(|o| o.key)
            .collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "snapshots/s1/data",
                "snapshots/s1/snapshot.json",
                "snapshots/s2/data"
            ]
        );
        assert_eq!(t.list_dirs("snapshots/").unwrap(), ["s1", "s2"]);
        assert!(matches!(
            t.get("missing"),
            Err(backup_core::Error::NotFound { .. })
        ));
        assert!(matches!(
            t.stat("missing"),
            Err(backup_core::Error::NotFound { .. })
        ));
        for k in keys {
            t.delete(&k).unwrap();
        }
        assert!(t.list("").unwrap().is_empty());
    }

    /// The whole suite against a real bucket, only when asked for:
    /// `BACKUPKIT_TEST_GCS_REAL_BUCKET` and `GOOGLE_SERVICE_ACCOUNT` set.
    #[test]
    #[ignore = "opt-in: needs a real GCS bucket (BACKUPKIT_TEST_GCS_REAL_BUCKET, \
                GOOGLE_SERVICE_ACCOUNT); run with --run-ignored only"]
    fn gcs_real_bucket_conforms() {
        let (Ok(bucket), Ok(_)) = (
            std::env::var("BACKUPKIT_TEST_GCS_REAL_BUCKET"),
            std::env::var("GOOGLE_SERVICE_ACCOUNT"),
        ) else {
            panic!(
                "set BACKUPKIT_TEST_GCS_REAL_BUCKET and GOOGLE_SERVICE_ACCOUNT to run this test"
            );
        };
        let t = open(
            &format!("gs://{bucket}/{}", unique_prefix("conformance")),
            &[],
        )
        .unwrap();
        conformance::run_all(&t);
    }
}

#[cfg(feature = "sftp")]
mod sftp {
    use backup_core::TargetExt;

    use super::*;

    const VARS: &[&str] = &[
        "BACKUPKIT_TEST_SSH_CONFIG",
        "BACKUPKIT_TEST_SSH_HOST",
        "BACKUPKIT_TEST_SFTP_DIR",
    ];

    fn location(v: &[String], name: &str) -> String {
        format!("sftp://{}{}/{}", v[1], v[2], unique_prefix(name))
    }

    #[test]
    fn sftp_target_conforms() {
        let Some(v) = service("sftp_target_conforms", VARS) else {
            return;
        };
        let t = open(&location(&v, "conformance"), &[("ssh_config", &v[0])]).unwrap();
        conformance::run_all(&t);
        conformance::unfinished_writes_leave_a_directory_to_sweep(t.as_ref());
    }

    /// An ssh that records its pid in `dir`, so that a test can stop or
    /// drop exactly its own connection (other tests share the server).
    fn pid_recording_ssh(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
        let pidfile = dir.join("pid");
        let wrapper = dir.join("ssh");
        std::fs::write(
            &wrapper,
            format!(
                "#!/bin/sh\necho $$ > {}\nexec ssh \"$@\"\n",
                pidfile.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(
            &wrapper,
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        (wrapper, pidfile)
    }

    fn tree(location: &str, ssh_config: &str) -> std::sync::Arc<dyn backup_core::tree::Tree> {
        open_tree(location, &[("ssh_config", ssh_config)])
    }

    /// Both transports: rsync (for every batch) and SFTP alone.
    #[test]
    fn sftp_tree_conforms() {
        let Some(v) = service("sftp_tree_conforms", VARS) else {
            return;
        };
        for transport in ["rsync", "sftp"] {
            let base = location(&v, &format!("tree-{transport}"));
            super::trees::run_all(&|sub: &str| {
                let loc = if sub.is_empty() {
                    base.clone()
                } else {
                    format!("{base}/{sub}")
                };
                open_tree(&loc, &[("ssh_config", &v[0]), ("transport", transport)])
            });
        }
    }

    /// One rsync batch with the staging directory at its usual place.
    fn job<'a>(
        direction: backup_core::tree::Direction,
        local: &'a std::path::Path,
        files: &'a [backup_core::tree::BulkFile],
    ) -> backup_core::tree::BulkCopy<'a> {
        backup_core::tree::BulkCopy {
            direction,
            local,
            dir: "",
            staging: ".backupkit-mirror/staging",
            modes: true,
            bwlimit: None,
            files,
        }
    }

    /// The rsync transport on its own: a push and a pull of listed files
    /// with their mtimes, unfinished files only in the staging directory,
    /// a listed file that is missing named alone, and an rsync that cannot
    /// run at either end an error (the engine then copies over SFTP).
    #[test]
    #[allow(clippy::too_many_lines)] // one scenario, end to end
    fn the_rsync_transport_moves_listed_files_and_names_failures() {
        use backup_core::Cancel;
        use backup_core::tree::{BulkFile, Direction, FileAttrs};
        let Some(v) = service(
            "the_rsync_transport_moves_listed_files_and_names_failures",
            VARS,
        ) else {
            return;
        };
        let name = unique_prefix("rsync");
        let loc = format!("sftp://{}{}/{name}", v[1], v[2]);
        let on_server = std::path::Path::new(&v[2]).join(&name);
        let t = open_tree(&loc, &[("ssh_config", &v[0])]);
        let bulk = t.bulk().expect("rsync is there by default");
        assert!(
            !bulk.worth(10, 1 << 20) && bulk.worth(10, 1 << 30) && bulk.worth(1000, 0),
            "by default, rsync for many files or large changed ones"
        );
        t.make_dir(".backupkit-mirror/staging", FileAttrs::default())
            .unwrap();
        let local = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(local.path().join("d/e")).unwrap();
        std::fs::write(local.path().join("d/e/a b's.csv"), "1,2\n").unwrap();
        std::fs::write(local.path().join("top.bin"), vec![9u8; 1 << 20]).unwrap();
        let mtime = 1_700_000_000_000_000_000i64;
        for f in ["d/e/a b's.csv", "top.bin"] {
            filetime::set_file_mtime(
                local.path().join(f),
                filetime::FileTime::from_unix_time(mtime / 1_000_000_000, 0),
            )
            .unwrap();
        }
        let file = |path: &str, size| BulkFile {
            path: path.into(),
            size,
            mtime_ns: Some(mtime),
        };
        let files = [
            file("d/e/a b's.csv", 4),
            file("missing.csv", 1),
            file("top.bin", 1 << 20),
        ];
        let got = bulk
            .copy(&job(Direction::Push, local.path(), &files), &Cancel::new())
            .unwrap();
        assert!(got[0].is_none() && got[2].is_none(), "{got:?}");
        assert!(
            got[1].as_deref().is_some_and(|m| m.contains("missing.csv")),
            "{got:?}"
        );
        assert_eq!(
            std::fs::read(on_server.join("d/e/a b's.csv")).unwrap(),
            b"1,2\n"
        );
        let e = t.stat("top.bin").unwrap().unwrap();
        assert_eq!((e.size, e.mtime_ns), (1 << 20, Some(mtime)));
        assert_eq!(
            std::fs::read_dir(on_server.join(".backupkit-mirror/staging"))
                .unwrap()
                .count(),
            0,
            "nothing left in the staging directory"
        );
        // Pull both back into a new local directory.
        let back = tempfile::tempdir().unwrap();
        let pulled_files = [file("d/e/a b's.csv", 4), file("top.bin", 1 << 20)];
        std::fs::create_dir_all(back.path().join("x/.backupkit-mirror/staging")).unwrap();
        let got = bulk
            .copy(
                &job(Direction::Pull, &back.path().join("x"), &pulled_files),
                &Cancel::new(),
            )
            .unwrap();
        assert_eq!(got, [None, None]);
        assert_eq!(
            std::fs::read(back.path().join("x/top.bin")).unwrap(),
            vec![9u8; 1 << 20]
        );
        for (option, value) in [
            ("rsync_command", "/nonexistent/rsync"),
            ("rsync_path", "/nonexistent/rsync"),
        ] {
            let broken = open_tree(&loc, &[("ssh_config", &v[0]), (option, value)]);
            let e = broken
                .bulk()
                .unwrap()
                .copy(
                    &job(Direction::Push, local.path(), &pulled_files),
                    &Cancel::new(),
                )
                .unwrap_err();
            assert!(e.to_string().contains("rsync"), "{option}: {e}");
        }
        assert!(
            open_tree(&loc, &[("ssh_config", &v[0]), ("transport", "sftp")])
                .bulk()
                .is_none()
        );
        let _ = std::fs::remove_dir_all(&on_server);
    }

    /// A server that stops answering (its ssh stopped with SIGSTOP) fails
    /// the operation within the `timeout` option, never hangs it.
    #[test]
    fn a_stalled_sftp_server_fails_within_the_timeout() {
        let Some(v) = service("a_stalled_sftp_server_fails_within_the_timeout", VARS) else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let (wrapper, pidfile) = pid_recording_ssh(dir.path());
        let t = open_tree(
            &location(&v, "stall"),
            &[
                ("ssh_config", &v[0]),
                ("ssh_command", wrapper.to_str().unwrap()),
                ("timeout", "2"),
            ],
        );
        t.make_dir("d", backup_core::tree::FileAttrs::default())
            .unwrap();
        let pid = std::fs::read_to_string(&pidfile).unwrap();
        let signal = |sig: &str| {
            std::process::Command::new("kill")
                .args([sig, pid.trim()])
                .status()
                .unwrap()
        };
        assert!(signal("-STOP").success());
        let started = std::time::Instant::now();
        let e = t.stat("d").unwrap_err();
        let took = started.elapsed();
        let _ = signal("-CONT");
        assert!(took < std::time::Duration::from_secs(10), "took {took:?}");
        assert!(took >= std::time::Duration::from_secs(2), "took {took:?}");
        let msg = backup_core::error_chain(&e);
        assert!(msg.contains("did not answer"), "{msg}");
    }

    /// Seed 004's pull: a device's tree over SFTP mirrored to a local
    /// directory, incrementally, verified by content, with the device's
    /// mtimes (whole seconds over SFTP) kept.
    #[test]
    fn a_tree_is_pulled_from_an_sftp_host_incrementally() {
        use backup_core::mirror::{self, MirrorOptions, VerifyMode};
        use backup_core::{Cancel, NoProgress};
        let Some(v) = service("a_tree_is_pulled_from_an_sftp_host_incrementally", VARS) else {
            return;
        };
        let prefix = unique_prefix("pull");
        // The server is this machine: the device's files are made in place.
        let device = std::path::Path::new(&v[2]).join(&prefix);
        std::fs::create_dir_all(device.join("results/ETHOSCOPE_004/2026-12-01")).unwrap();
        std::fs::write(
            device.join("results/ETHOSCOPE_004/2026-12-01/db.db"),
            vec![3u8; 700_000],
        )
        .unwrap();
        std::fs::write(device.join("results/ETHOSCOPE_004/notes.txt"), "n").unwrap();
        std::os::unix::fs::symlink("notes.txt", device.join("results/ETHOSCOPE_004/latest"))
            .unwrap();
        let _ = std::process::Command::new("chown")
            .args(["-R", "backupkit-sftp", device.to_str().unwrap()])
            .status();
        let local = tempfile::tempdir().unwrap();
        let dest = backup_targets::LocalTree::new(local.path().join("pulled")).unwrap();
        let src = tree(&format!("sftp://{}{}/{prefix}", v[1], v[2]), &v[0]);
        let sources = mirror::sources_for(vec![src]).unwrap();
        let mut registry = backup_core::Registry::new();
        backup_archive::register(&mut registry);
        let hashers = registry.hashers().unwrap();
        let run = |verify: Option<VerifyMode>| {
            let opts = MirrorOptions {
                verify,
                ..MirrorOptions::default()
            };
            mirror::mirror(
                &sources,
                &dest,
                &opts,
                hashers.as_ref(),
                &NoProgress,
                &Cancel::new(),
            )
            .unwrap()
        };
        let first = run(Some(VerifyMode::Checksum));
        assert_eq!((first.copied, first.links), (2, 1), "{first:?}");
        assert!(first.is_complete(), "{first:?}");
        assert_eq!(
            first.modify_window_ns, 1_000_000_000,
            "SFTP keeps whole seconds"
        );
        let pulled = local.path().join("pulled/results/ETHOSCOPE_004");
        assert_eq!(std::fs::read(pulled.join("notes.txt")).unwrap(), b"n");
        assert_eq!(
            std::fs::read_link(pulled.join("latest")).unwrap(),
            std::path::Path::new("notes.txt")
        );
        let device_mtime = std::fs::metadata(device.join("results/ETHOSCOPE_004/notes.txt"))
            .unwrap()
            .modified()
            .unwrap()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let local_mtime = std::fs::metadata(pulled.join("notes.txt"))
            .unwrap()
            .modified()
            .unwrap()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert_eq!(device_mtime, local_mtime);
        let again = run(None);
        assert_eq!(
            (again.copied, again.updated, again.unchanged),
            (0, 0, 3),
            "{again:?}"
        );
        std::fs::write(
            device.join("results/ETHOSCOPE_004/2026-12-01/db.db"),
            vec![4u8; 800_000],
        )
        .unwrap();
        let changed = run(Some(VerifyMode::Checksum));
        assert_eq!(changed.updated, 1, "{changed:?}");
        assert!(changed.is_complete());
        let _ = std::fs::remove_dir_all(&device);
    }

    /// The server is on this machine: its directory can be given links and
    /// a FIFO behind the target's back.
    #[test]
    fn sftp_target_ignores_links_and_special_files() {
        let Some(v) = service("sftp_target_ignores_links_and_special_files", VARS) else {
            return;
        };
        let prefix = unique_prefix("hostile");
        let t = open(
            &format!("sftp://{}{}/{prefix}", v[1], v[2]),
            &[("ssh_config", &v[0])],
        )
        .unwrap();
        let root = std::path::Path::new(&v[2]).join(&prefix);
        conformance::links_and_special_files_are_not_objects(&t, &root);
    }

    #[test]
    fn sftp_reconnects_after_the_connection_drops() {
        let Some(v) = service("sftp_reconnects_after_the_connection_drops", VARS) else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let (wrapper, pidfile) = pid_recording_ssh(dir.path());
        let t = open(
            &location(&v, "reconnect"),
            &[
                ("ssh_config", &v[0]),
                ("ssh_command", wrapper.to_str().unwrap()),
            ],
        )
        .unwrap();
        t.put_bytes("a/one", b"1").unwrap();
        let pid = std::fs::read_to_string(&pidfile).unwrap();
        let status = std::process::Command::new("kill")
            .args(["-KILL", pid.trim()])
            .status()
            .unwrap();
        assert!(status.success());
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert_eq!(t.get_bytes("a/one").unwrap(), b"1");
        t.delete("a/one").unwrap();
    }

    #[test]
    fn sftp_unknown_host_key_fails_at_once_without_a_prompt() {
        let Some(v) = service("sftp_unknown_host_key_fails_at_once_without_a_prompt", VARS) else {
            return;
        };
        // The same config with an empty known_hosts file.
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("known_hosts");
        std::fs::write(&empty, "").unwrap();
        let config: String = std::fs::read_to_string(&v[0])
            .unwrap()
            .lines()
            .map(|l| {
                if l.trim_start().starts_with("UserKnownHostsFile") {
                    format!("  UserKnownHostsFile {}\n", empty.display())
                } else {
                    format!("{l}\n")
                }
            })
            .collect();
        let cfg = dir.path().join("ssh_config");
        std::fs::write(&cfg, config).unwrap();
        let started = std::time::Instant::now();
        let t = open(
            &location(&v, "hostkey"),
            &[("ssh_config", cfg.to_str().unwrap()), ("retries", "1")],
        )
        .unwrap();
        let err = backup_core::error_chain(&t.list("").unwrap_err());
        assert!(err.contains("Host key verification failed"), "{err}");
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
    }

    #[test]
    fn sftp_permission_errors_are_permission_denied() {
        let Some(v) = service("sftp_permission_errors_are_permission_denied", VARS) else {
            return;
        };
        // /root is closed to the test user.
        let location = format!("sftp://{}/root/backupkit-forbidden", v[1]);
        let t = open(&location, &[("ssh_config", &v[0])]).unwrap();
        conformance::access_is_denied(t.as_ref(), &location, None);
    }

    #[test]
    fn sftp_urls_and_options_are_checked() {
        for bad in ["sftp://", "sftp://host", "sftp://h:port/x", "sftp://h/../x"] {
            let err = open(bad, &[]).unwrap_err();
            assert!(
                matches!(err, backup_core::Error::InvalidInput(_)),
                "{bad}: {err}"
            );
        }
        let err = open("sftp://h/x", &[("password", "x")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown option \"password\""), "{err}");
        let err = open("sftp://h/x", &[("ssh_command", "/nonexistent/ssh")])
            .unwrap()
            .list("")
            .unwrap_err()
            .to_string();
        assert!(err.contains("cannot run \"/nonexistent/ssh\""), "{err}");
    }
}

#[cfg(feature = "rclone")]
mod rclone {
    use super::*;

    /// The tree suite (and the mirror round trip, in batches through
    /// `rclone copy` and `rclone move`) on the remote named by `remote_var`.
    fn tree_conforms(test: &str, remote_var: &str) {
        let Some(v) = service(test, &["BACKUPKIT_TEST_RCLONE_CONFIG", remote_var]) else {
            return;
        };
        let base = format!("rclone:{}/{}", v[1], unique_prefix("tree"));
        super::trees::run_all(&|sub: &str| {
            let loc = if sub.is_empty() {
                base.clone()
            } else {
                format!("{base}/{sub}")
            };
            open_tree(&loc, &[("rclone_config", &v[0])])
        });
    }

    #[test]
    fn rclone_local_tree_conforms() {
        tree_conforms(
            "rclone_local_tree_conforms",
            "BACKUPKIT_TEST_RCLONE_LOCAL_REMOTE",
        );
    }

    #[test]
    fn rclone_sftp_tree_conforms() {
        tree_conforms(
            "rclone_sftp_tree_conforms",
            "BACKUPKIT_TEST_RCLONE_SFTP_REMOTE",
        );
    }

    /// rclone says what a remote keeps: the sftp remote whole seconds, the
    /// local one nanoseconds, and the local one told to act as a
    /// case-insensitive drive (as Box and `OneDrive` are) says so. On that
    /// one, two source names that differ only in case are an error naming
    /// both, and neither overwrites the other.
    #[test]
    fn a_case_insensitive_rclone_remote_refuses_names_that_differ_only_in_case() {
        let Some(v) = service(
            "a_case_insensitive_rclone_remote_refuses_names_that_differ_only_in_case",
            &[
                "BACKUPKIT_TEST_RCLONE_CONFIG",
                "BACKUPKIT_TEST_RCLONE_LOCAL_REMOTE",
                "BACKUPKIT_TEST_RCLONE_SFTP_REMOTE",
            ],
        ) else {
            return;
        };
        let sftp = open_tree(
            &format!("rclone:{}/{}", v[2], unique_prefix("caps")),
            &[("rclone_config", &v[0])],
        );
        assert_eq!(
            sftp.caps().mtime_precision,
            std::time::Duration::from_secs(1)
        );
        assert!(!sftp.caps().case_insensitive);
        let prefix = unique_prefix("case");
        let loc = format!("rclone:{}/{prefix}", v[1]);
        let plain = open_tree(&loc, &[("rclone_config", &v[0])]);
        assert_eq!(
            plain.caps().mtime_precision,
            std::time::Duration::from_nanos(1)
        );
        let dest = open_tree(
            &loc,
            &[
                ("rclone_config", &v[0]),
                ("rclone_args", "--local-case-insensitive"),
            ],
        );
        assert!(dest.caps().case_insensitive && !dest.caps().symlinks);
        let src = tempfile::tempdir().unwrap();
        std::fs::write(src.path().join("Data.csv"), "upper").unwrap();
        std::fs::write(src.path().join("data.csv"), "lower").unwrap();
        std::fs::write(src.path().join("notes.txt"), "n").unwrap();
        let sources = backup_core::mirror::sources_for(vec![std::sync::Arc::new(
            backup_targets::LocalTree::new(src.path()).unwrap(),
        )
            as std::sync::Arc<dyn backup_core::tree::Tree>])
        .unwrap();
        let mut reg = registry();
        backup_archive::register(&mut reg);
        let s = backup_core::mirror::mirror(
            &sources,
            dest.as_ref(),
            &backup_core::mirror::MirrorOptions::default(),
            reg.hashers().unwrap().as_ref(),
            &backup_core::NoProgress,
            &backup_core::Cancel::new(),
        )
        .unwrap();
        assert_eq!(s.failed.len(), 1, "{s:?}");
        assert_eq!(s.failed[0].path, "data.csv");
        assert!(
            s.failed[0].message.contains("Data.csv") && s.failed[0].message.contains("case"),
            "{s:?}"
        );
        let dir = std::path::Path::new(v[1].split_once(':').unwrap().1).join(&prefix);
        assert_eq!(std::fs::read(dir.join("Data.csv")).unwrap(), b"upper");
        assert!(!dir.join("data.csv").exists());
        assert_eq!(std::fs::read(dir.join("notes.txt")).unwrap(), b"n");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The conformance suite on the remote named by `remote_var`.
    fn conforms(test: &str, remote_var: &str) {
        let Some(v) = service(test, &["BACKUPKIT_TEST_RCLONE_CONFIG", remote_var]) else {
            return;
        };
        let t = open(
            &format!("rclone:{}/{}", v[1], unique_prefix("conformance")),
            &[("rclone_config", &v[0])],
        )
        .unwrap();
        conformance::run_all(&t);
    }

    /// Links and a FIFO put into the directory behind the remote named by
    /// `remote_var` (on this machine) are not objects.
    fn ignores_links(test: &str, remote_var: &str) {
        let Some(v) = service(test, &["BACKUPKIT_TEST_RCLONE_CONFIG", remote_var]) else {
            return;
        };
        let prefix = unique_prefix("hostile");
        let t = open(
            &format!("rclone:{}/{prefix}", v[1]),
            &[("rclone_config", &v[0])],
        )
        .unwrap();
        let dir = v[1].split_once(':').unwrap().1;
        let root = std::path::Path::new(dir).join(&prefix);
        conformance::links_and_special_files_are_not_objects(&t, &root);
    }

    #[test]
    fn rclone_sftp_remote_ignores_links_and_special_files() {
        ignores_links(
            "rclone_sftp_remote_ignores_links_and_special_files",
            "BACKUPKIT_TEST_RCLONE_SFTP_REMOTE",
        );
    }

    #[test]
    fn rclone_local_remote_ignores_links_and_special_files() {
        ignores_links(
            "rclone_local_remote_ignores_links_and_special_files",
            "BACKUPKIT_TEST_RCLONE_LOCAL_REMOTE",
        );
    }

    #[test]
    fn rclone_sftp_remote_conforms() {
        conforms(
            "rclone_sftp_remote_conforms",
            "BACKUPKIT_TEST_RCLONE_SFTP_REMOTE",
        );
    }

    #[test]
    fn rclone_local_remote_conforms() {
        conforms(
            "rclone_local_remote_conforms",
            "BACKUPKIT_TEST_RCLONE_LOCAL_REMOTE",
        );
    }

    #[test]
    fn rclone_permission_errors_are_permission_denied() {
        let Some(v) = service(
            "rclone_permission_errors_are_permission_denied",
            &[
                "BACKUPKIT_TEST_RCLONE_CONFIG",
                "BACKUPKIT_TEST_RCLONE_SFTP_REMOTE",
            ],
        ) else {
            return;
        };
        // The sftp remote's user cannot enter /root.
        let remote = v[1].split(':').next().unwrap();
        let location = format!("rclone:{remote}:/root/backupkit-forbidden");
        let t = open(&location, &[("rclone_config", &v[0])]).unwrap();
        conformance::access_is_denied(t.as_ref(), &location, None);
    }

    #[test]
    fn rclone_unknown_remote_and_options_are_clear() {
        let Some(v) = service(
            "rclone_unknown_remote_and_options_are_clear",
            &["BACKUPKIT_TEST_RCLONE_CONFIG"],
        ) else {
            return;
        };
        let t = open("rclone:no-such-remote:x", &[("rclone_config", &v[0])]).unwrap();
        let err = backup_core::error_chain(&t.list("").unwrap_err());
        assert!(err.contains("no-such-remote"), "{err}");
        assert!(err.lines().count() == 1, "{err}");
        let err = open("rclone:r:x", &[("token", "x")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown option \"token\""), "{err}");
        assert!(open("rclone:nocolon", &[]).is_err());
        let err = open("rclone:r:x", &[("timeout", "soon")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("option timeout") && !err.contains("soon"),
            "{err}"
        );
    }

    /// A remote that accepts connections and never answers (an HTTP server
    /// gone silent, through rclone's on-the-fly `:http:` backend) fails
    /// within the `timeout` option instead of rclone's five minutes.
    #[test]
    fn a_silent_rclone_remote_fails_within_the_timeout() {
        if service(
            "a_silent_rclone_remote_fails_within_the_timeout",
            &["BACKUPKIT_TEST_RCLONE_CONFIG"],
        )
        .is_none()
        {
            return;
        }
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for conn in listener.incoming().flatten() {
                held.push(conn);
            }
        });
        let started = std::time::Instant::now();
        let location = format!("rclone::http,url='http://127.0.0.1:{port}/':");
        let failed = registry()
            .open_tree(&location, &owned(&[("timeout", "2")]))
            .and_then(|t| t.walk(&|_, _| false).map(Iterator::count));
        let took = started.elapsed();
        assert!(failed.is_err(), "a silent remote cannot be listed");
        assert!(
            took < std::time::Duration::from_secs(60),
            "took {took:?} with a 2 s timeout"
        );
    }
}

/// backupkit's SMB client against the Samba server of `scripts/services.sh`
/// (encryption `desired`, a writable and a read-only share).
#[cfg(feature = "smb")]
mod smb_client {
    use std::io::{self, Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

    use backup_targets::smb::{
        CREATE, Config, Encryption, OPEN, OPEN_IF, OVERWRITE_IF, Open, Share,
    };

    use super::{service, unique_prefix as unique};

    const VARS: &[&str] = &[
        "BACKUPKIT_TEST_SMB_PORT",
        "BACKUPKIT_TEST_SMB_PASSWORD",
        "BACKUPKIT_TEST_SMB_DIR",
    ];

    fn config(v: &[String], share: &str) -> Config {
        Config {
            host: "127.0.0.1".into(),
            port: v[0].parse().unwrap(),
            share: share.into(),
            domain: String::new(),
            user: std::env::var("BACKUPKIT_TEST_SMB_USER")
                .unwrap_or_else(|_| "backupkit-smb".into()),
            password: v[1].clone(),
            timeout: Duration::from_secs(10),
            encryption: Encryption::Auto,
        }
    }

    fn pattern(len: usize, seed: u32) -> Vec<u8> {
        (0..len)
            .map(|i| (u32::try_from(i).unwrap().wrapping_mul(2_654_435_761) ^ seed) as u8)
            .collect()
    }

    fn write_file(s: &mut Share, path: &str, disposition: u32, data: &[u8]) -> io::Result<()> {
        let h = s.open(path, Open::write(disposition))?;
        let mut src = data;
        let written = s.write_from(h, 0, &mut src);
        s.close(h)?;
        assert_eq!(written? as usize, data.len());
        Ok(())
    }

    fn read_file(s: &mut Share, path: &str) -> Vec<u8> {
        let h = s.open(path, Open::read()).unwrap();
        let mut out = Vec::new();
        s.read_into(h, 0, h.size, &mut out).unwrap();
        s.close(h).unwrap();
        out
    }

    /// Every operation the targets use, with encryption (3.1.1, AES-GCM)
    /// and with signing only; what the client wrote is checked on the
    /// server's own disk.
    #[test]
    fn smb_client_file_operations() {
        let Some(v) = service("smb_client_file_operations", VARS) else {
            return;
        };
        for encryption in [Encryption::Auto, Encryption::Off] {
            let mut s = Share::connect(&Config {
                encryption,
                ..config(&v, "backupkit")
            })
            .unwrap();
            assert_eq!(s.dialect(), "3.1.1");
            assert_eq!(s.is_encrypted(), encryption == Encryption::Auto);
            let dir = unique(&format!("client-{encryption:?}"));
            let local = std::path::Path::new(&v[2]).join(&dir);
            let h = s.open(&dir, Open::directory(CREATE)).unwrap();
            s.close(h).unwrap();
            // Creating it again, exclusively, fails; OPEN_IF does not.
            let err = s.open(&dir, Open::directory(CREATE)).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::AlreadyExists, "{err}");
            let h = s.open(&dir, Open::directory(OPEN_IF)).unwrap();
            s.close(h).unwrap();

            // A 20 MiB file, written and read with requests in flight.
            let big = pattern((20 << 20) + 12_345, 7);
            write_file(&mut s, &format!("{dir}/big.tmp"), OVERWRITE_IF, &big).unwrap();
            assert_eq!(std::fs::read(local.join("big.tmp")).unwrap(), big);
            assert_eq!(read_file(&mut s, &format!("{dir}/big.tmp")), big);
            // A read past the end returns what there is.
            let h = s.open(&format!("{dir}/big.tmp"), Open::read()).unwrap();
            let mut tail = Vec::new();
            let n = s
                .read_into(h, big.len() as u64 - 10, 1 << 20, &mut tail)
                .unwrap();
            s.close(h).unwrap();
            assert_eq!((n, tail.as_slice()), (10, &big[big.len() - 10..]));

            // Exclusive create.
            write_file(&mut s, &format!("{dir}/lock"), CREATE, b"mine").unwrap();
            let err = write_file(&mut s, &format!("{dir}/lock"), CREATE, b"theirs").unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::AlreadyExists, "{err}");
            assert_eq!(read_file(&mut s, &format!("{dir}/lock")), b"mine");

            // Rename over an existing file replaces it in one step; without
            // replace it is refused and both stay.
            write_file(&mut s, &format!("{dir}/new.tmp"), CREATE, b"new").unwrap();
            let h = s.open(&format!("{dir}/new.tmp"), Open::modify()).unwrap();
            let err = s.rename(h, &format!("{dir}/lock"), false).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::AlreadyExists, "{err}");
            s.rename(h, &format!("{dir}/lock"), true).unwrap();
            s.close(h).unwrap();
            assert_eq!(std::fs::read(local.join("lock")).unwrap(), b"new");
            assert!(!local.join("new.tmp").exists());

            // Modification times keep 100 ns.
            let mtime = UNIX_EPOCH + Duration::new(1_600_000_000, 123_456_700);
            let h = s.open(&format!("{dir}/lock"), Open::modify()).unwrap();
            s.set_mtime(h, backup_targets_filetime(mtime)).unwrap();
            s.close(h).unwrap();
            let info = s.stat(&format!("{dir}/lock")).unwrap();
            assert_eq!(info.modified(), mtime);
            assert_eq!(info.size, 3);
            assert_eq!(
                std::fs::metadata(local.join("lock"))
                    .unwrap()
                    .modified()
                    .unwrap(),
                mtime
            );

            // Listing, stat of what is missing, case-insensitive names.
            let mut names: Vec<_> = s
                .list(&dir)
                .unwrap()
                .into_iter()
                .map(|e| (e.name, e.info.size))
                .collect();
            names.sort();
            assert_eq!(
                names,
                vec![
                    ("big.tmp".to_string(), big.len() as u64),
                    ("lock".to_string(), 3)
                ]
            );
            let err = s.stat(&format!("{dir}/missing")).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::NotFound, "{err}");
            assert!(err.to_string().contains("missing"), "{err}");
            // Samba matches names without case on this (case-sensitive) disk:
            // the mirror must probe, not trust the file system's flags.
            assert_eq!(s.stat(&format!("{dir}/LOCK")).unwrap().size, 3);

            // Delete: a non-empty directory is refused, then emptied and removed.
            assert!(s.remove(&dir).is_err());
            s.remove(&format!("{dir}/big.tmp")).unwrap();
            s.remove(&format!("{dir}/lock")).unwrap();
            s.remove(&dir).unwrap();
            assert!(!local.exists());

            compounds(&mut s, &v, &unique(&format!("compound-{encryption:?}")));
        }
    }

    /// The compound chains the writers send: create + write + times +
    /// flush in one message, times + flush, rename + close; a chain whose
    /// create fails leaves nothing and the connection goes on.
    fn compounds(s: &mut Share, v: &[String], dir: &str) {
        let local = std::path::Path::new(&v[2]).join(dir);
        let h = s.open(dir, Open::directory(CREATE)).unwrap();
        s.close(h).unwrap();
        let mtime = UNIX_EPOCH + Duration::new(1_500_000_000, 987_654_300);
        let ft = backup_targets_filetime(mtime);
        let h = s
            .create_with(
                &format!("{dir}/a.tmp"),
                Open::write(CREATE),
                b"small",
                Some(ft),
            )
            .unwrap();
        // Written and timed before the rename; the close leaves the time.
        s.rename_and_close(h, &format!("{dir}/a")).unwrap();
        let meta = std::fs::metadata(local.join("a")).unwrap();
        assert_eq!((meta.len(), meta.modified().unwrap()), (5, mtime));
        assert!(!local.join("a.tmp").exists());
        // Empty data, and data larger than one write (not one message).
        let h = s
            .create_with(&format!("{dir}/empty"), Open::write(CREATE), b"", Some(ft))
            .unwrap();
        s.close(h).unwrap();
        assert_eq!(std::fs::metadata(local.join("empty")).unwrap().len(), 0);
        let big = pattern((3 << 20) + 7, 3);
        let h = s
            .create_with(&format!("{dir}/big"), Open::write(CREATE), &big, Some(ft))
            .unwrap();
        s.close(h).unwrap();
        let meta = std::fs::metadata(local.join("big")).unwrap();
        assert_eq!(meta.modified().unwrap(), mtime);
        assert_eq!(std::fs::read(local.join("big")).unwrap(), big);
        // An exclusive create of an existing name fails the whole chain:
        // the file keeps its data and time.
        let err = s
            .create_with(&format!("{dir}/a"), Open::write(CREATE), b"other", None)
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists, "{err}");
        assert_eq!(std::fs::read(local.join("a")).unwrap(), b"small");
        // Times and flush on an open handle, then a rename that fails (no
        // such directory): the handle is closed all the same.
        let h = s.open(&format!("{dir}/a"), Open::write(OPEN)).unwrap();
        let later = UNIX_EPOCH + Duration::new(1_700_000_000, 100);
        s.settle(h, Some(backup_targets_filetime(later))).unwrap();
        let err = s
            .rename_and_close(h, &format!("{dir}/no-such-dir/a"))
            .unwrap_err();
        assert!(err.to_string().contains("no-such-dir"), "{err}");
        assert_eq!(
            std::fs::metadata(local.join("a"))
                .unwrap()
                .modified()
                .unwrap(),
            later
        );
        // Closed: the handle is no longer known to the server.
        assert!(s.close(h).is_err());
        for name in ["a", "empty", "big"] {
            s.remove(&format!("{dir}/{name}")).unwrap();
        }
        s.remove(dir).unwrap();
        assert!(!local.exists());
    }

    fn backup_targets_filetime(t: SystemTime) -> u64 {
        let d = t.duration_since(UNIX_EPOCH).unwrap();
        116_444_736_000_000_000 + d.as_secs() * 10_000_000 + u64::from(d.subsec_nanos() / 100)
    }

    /// A wrong password, a share that does not exist and a read-only share
    /// each fail with one clear message that never holds the password.
    #[test]
    fn smb_client_refusals() {
        let Some(v) = service("smb_client_refusals", VARS) else {
            return;
        };
        let wrong = Config {
            password: "not-the-password".into(),
            ..config(&v, "backupkit")
        };
        let err = Share::connect(&wrong).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied, "{err}");
        let msg = err.to_string();
        assert!(msg.contains("logon failure"), "{msg}");
        assert!(!msg.contains("not-the-password"), "{msg}");
        assert!(!format!("{wrong:?}").contains("not-the-password"));

        let err = Share::connect(&config(&v, "no-such-share")).unwrap_err();
        assert!(err.to_string().contains("no such share"), "{err}");

        let mut ro = Share::connect(&config(&v, "readonly")).unwrap();
        assert_eq!(
            read_file(&mut ro, "README"),
            b"a file the test user may read\n"
        );
        let err = write_file(&mut ro, "x", CREATE, b"x").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied, "{err}");
        assert!(!v[1].is_empty() && !err.to_string().contains(&v[1]));

        let refused = Config {
            port: free_port(),
            timeout: Duration::from_secs(2),
            ..config(&v, "backupkit")
        };
        let err = Share::connect(&refused).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused, "{err}");
    }

    fn free_port() -> u16 {
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    /// A share that stops answering mid-write fails the write within the
    /// timeout (a proxy in front of Samba stops forwarding), and the
    /// connection says it is broken.
    #[test]
    fn smb_client_stalled_server_times_out() {
        let Some(v) = service("smb_client_stalled_server_times_out", VARS) else {
            return;
        };
        let stall = Arc::new(AtomicBool::new(false));
        let port = proxy(v[0].parse().unwrap(), Arc::clone(&stall));
        let cfg = Config {
            port,
            timeout: Duration::from_secs(2),
            ..config(&v, "backupkit")
        };
        let mut s = Share::connect(&cfg).unwrap();
        // The pool's question to a connection that sat idle: answered.
        s.echo().unwrap();
        let path = unique("stall.bin");
        let data = pattern(32 << 20, 3);
        let h = s.open(&path, Open::write(CREATE)).unwrap();
        stall.store(true, Ordering::SeqCst);
        let start = Instant::now();
        let mut src = data.as_slice();
        let err = s.write_from(h, 0, &mut src).unwrap_err();
        let took = start.elapsed();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
        assert!(err.to_string().contains("stopped answering"), "{err}");
        assert!(
            took < Duration::from_secs(4),
            "gave up after {took:?}: {err}"
        );
        assert!(s.is_broken());
        assert!(s.close(h).is_err());
        assert!(s.echo().is_err(), "a broken connection is never reused");
        // A new connection (the proxy forwarding again) cleans up.
        stall.store(false, Ordering::SeqCst);
        let mut s = Share::connect(&cfg).unwrap();
        s.remove(&path).unwrap();
    }

    /// A repository put that the server stops answering after its first
    /// blocks fails within the timeout (the upload thread's failure reaches
    /// the writer), and nothing is at the key.
    #[test]
    fn smb_put_to_a_stalled_server_fails_within_the_timeout() {
        let Some(v) = service("smb_put_to_a_stalled_server_fails_within_the_timeout", VARS) else {
            return;
        };
        let stall = Arc::new(AtomicBool::new(false));
        let port = proxy(v[0].parse().unwrap(), Arc::clone(&stall));
        let user = config(&v, "backupkit").user;
        let dir = unique("stalled-put");
        let options: backup_core::TargetOptions = [
            ("password_env", "BACKUPKIT_TEST_SMB_PASSWORD"),
            ("timeout", "2s"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        let t = backup_targets::smb::SmbTarget::open(
            &format!("smb://{user}@127.0.0.1:{port}/backupkit/{dir}"),
            &options,
        )
        .unwrap();
        let mut w = backup_core::Target::put(&t, "big.bin").unwrap();
        let block = pattern(8 << 20, 5);
        // Two blocks: the first on this thread, the second by the uploader.
        w.write_all(&block).unwrap();
        w.write_all(&block).unwrap();
        stall.store(true, Ordering::SeqCst);
        let start = Instant::now();
        let failed = (0..8)
            .try_for_each(|_| w.write_all(&block))
            .err()
            .map(|e| e.to_string())
            .or_else(|| w.commit().err().map(|e| e.to_string()));
        let took = start.elapsed();
        let err = failed.expect("a stalled server fails the put");
        assert!(err.contains("stopped answering"), "{err}");
        assert!(
            took < Duration::from_secs(6),
            "gave up after {took:?}: {err}"
        );
        let on_disk = std::path::Path::new(&v[2]).join(&dir).join("big.bin");
        assert!(!on_disk.exists(), "nothing at the key");
        stall.store(false, Ordering::SeqCst);
    }

    /// Forwards connections to Samba; while `stall` is set it forwards
    /// nothing (bytes wait, as with a hung server).
    fn proxy(target: u16, stall: Arc<AtomicBool>) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    let stall = Arc::clone(&stall);
                    std::thread::spawn(move || {
                        let mut buf = vec![0u8; 65536];
                        loop {
                            while stall.load(Ordering::SeqCst) {
                                std::thread::sleep(Duration::from_millis(20));
                            }
                            match from.read(&mut buf) {
                                Ok(0) | Err(_) => break,
                                Ok(n) => {
                                    if to.write_all(&buf[..n]).is_err() {
                                        break;
                                    }
                                }
                            }
                        }
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        port
    }
}

/// `smb://` repositories through backupkit's client, against Samba.
#[cfg(feature = "smb")]
mod smb {
    use std::io::Write;
    use std::sync::Arc;
    use std::time::{Duration, UNIX_EPOCH};

    use backup_core::tree::FileAttrs;
    use backup_core::{Error, Target, TargetExt};

    use super::{conformance, service, unique_prefix};

    const VARS: &[&str] = &[
        "BACKUPKIT_TEST_SMB_URL",
        "BACKUPKIT_TEST_SMB_READONLY_URL",
        "BACKUPKIT_TEST_SMB_DIR",
    ];

    fn open(location: &str, options: &[(&str, &str)]) -> backup_core::Result<Arc<dyn Target>> {
        let mut all = vec![("password_env", "BACKUPKIT_TEST_SMB_PASSWORD")];
        all.extend_from_slice(options);
        super::open(location, &all)
    }

    #[test]
    fn smb_target_conforms() {
        let Some(v) = service("smb_target_conforms", VARS) else {
            return;
        };
        let prefix = unique_prefix("conformance");
        let t = open(&format!("{}/{prefix}", v[0]), &[]).unwrap();
        assert_eq!(t.location(), format!("{}/{prefix}", v[0]));
        conformance::run_all(&t);
        // Nothing is left behind on the server's disk: no temporary files,
        // no empty directories.
        let left: Vec<_> = walkdir(&std::path::Path::new(&v[2]).join(&prefix));
        assert!(left.iter().all(|p| !p.contains(".tmp-")), "{left:?}");
    }

    fn open_tree(location: &str) -> Arc<dyn backup_core::tree::Tree> {
        super::open_tree(location, &[("password_env", "BACKUPKIT_TEST_SMB_PASSWORD")])
    }

    /// The mirror conformance suite; behind the server, the file carries
    /// the asked-for mtime to 100 ns and no temporary file is left.
    #[test]
    fn smb_tree_conforms() {
        let Some(v) = service("smb_tree_conforms", VARS) else {
            return;
        };
        let prefix = unique_prefix("tree");
        let base = format!("{}/{prefix}", v[0]);
        super::trees::run_all(&|sub: &str| {
            open_tree(&if sub.is_empty() {
                base.clone()
            } else {
                format!("{base}/{sub}")
            })
        });
        let tree = open_tree(&base);
        let caps = tree.caps();
        assert_eq!(caps.mtime_precision, Duration::from_nanos(100));
        assert!(caps.case_insensitive, "Samba matches names in any case");
        assert!(!caps.symlinks && !caps.modes && caps.dirs);
        let mut w = tree
            .write(
                "stamp/x.csv",
                FileAttrs {
                    mtime_ns: Some(1_700_000_000_123_456_789),
                    mode: None,
                },
            )
            .unwrap();
        w.write_all(b"x").unwrap();
        w.commit().unwrap();
        tree.set_dir_mtime("stamp", 1_600_000_000_987_654_321)
            .unwrap();
        let disk = std::path::Path::new(&v[2]).join(&prefix);
        let mtime = |p: &str| std::fs::metadata(disk.join(p)).unwrap().modified().unwrap();
        assert_eq!(
            mtime("stamp/x.csv"),
            UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_700)
        );
        assert_eq!(
            mtime("stamp"),
            UNIX_EPOCH + Duration::new(1_600_000_000, 987_654_300)
        );
        let left = walkdir(&disk);
        assert!(left.iter().all(|p| !p.contains(".tmp-")), "{left:?}");
    }

    /// A mirror into the share refuses names that differ only in case (on a
    /// share with case-sensitive names it copies both) and skips symlinks
    /// with a warning; a mirror back out of the share gives the same files
    /// with the same mtimes.
    #[test]
    fn smb_mirrors_both_ways_detecting_case_and_skipping_symlinks() {
        let mut vars = VARS.to_vec();
        vars.push("BACKUPKIT_TEST_SMB_EXACT_URL");
        let Some(v) = service(
            "smb_mirrors_both_ways_detecting_case_and_skipping_symlinks",
            &vars,
        ) else {
            return;
        };
        let src = tempfile::tempdir().unwrap();
        let at = |p: &str| src.path().join(p);
        std::fs::create_dir_all(at("runs/deep")).unwrap();
        std::fs::write(at("Data.csv"), "upper").unwrap();
        std::fs::write(at("data.csv"), "lower").unwrap();
        std::fs::write(at("runs/deep/trace.bin"), vec![3u8; 3 << 20]).unwrap();
        std::os::unix::fs::symlink("Data.csv", at("link.csv")).unwrap();
        let when = UNIX_EPOCH + Duration::new(1_650_000_000, 555_555_555);
        std::fs::File::options()
            .write(true)
            .open(at("runs/deep/trace.bin"))
            .unwrap()
            .set_modified(when)
            .unwrap();
        let hashers = {
            let mut reg = super::registry();
            backup_archive::register(&mut reg);
            reg.hashers().unwrap()
        };
        let run = |from: Arc<dyn backup_core::tree::Tree>, to: &dyn backup_core::tree::Tree| {
            let sources = backup_core::mirror::sources_for(vec![from]).unwrap();
            backup_core::mirror::mirror(
                &sources,
                to,
                &backup_core::mirror::MirrorOptions {
                    verify: Some(backup_core::mirror::VerifyMode::Checksum),
                    ..backup_core::mirror::MirrorOptions::default()
                },
                hashers.as_ref(),
                &backup_core::NoProgress,
                &backup_core::Cancel::new(),
            )
            .unwrap()
        };
        let local = || -> Arc<dyn backup_core::tree::Tree> {
            Arc::new(backup_targets::LocalTree::new(src.path()).unwrap())
        };
        let prefix = unique_prefix("both-ways");
        let share = open_tree(&format!("{}/{prefix}", v[0]));
        let pushed = run(local(), share.as_ref());
        assert_eq!(pushed.copied, 2, "{pushed:?}");
        assert_eq!(pushed.failed.len(), 1, "{pushed:?}");
        assert_eq!(pushed.failed[0].path, "data.csv");
        assert!(pushed.failed[0].message.contains("case"), "{pushed:?}");
        assert!(
            pushed
                .notices
                .iter()
                .any(|n| n.path == "link.csv" && n.message.contains("symlink")),
            "{pushed:?}"
        );
        let disk = std::path::Path::new(&v[2]).join(&prefix);
        assert_eq!(std::fs::read(disk.join("Data.csv")).unwrap(), b"upper");
        assert!(!disk.join("link.csv").exists());

        let exact = open_tree(&format!("{}/{prefix}", v[3]));
        assert!(
            !exact.caps().case_insensitive,
            "the share is case-sensitive"
        );
        let both = run(local(), exact.as_ref());
        assert_eq!((both.copied, both.failed.len()), (3, 0), "{both:?}");

        // And back out of the share, into an empty directory.
        let back = tempfile::tempdir().unwrap();
        let dest = backup_targets::LocalTree::new(back.path().join("copy")).unwrap();
        let pulled = run(share, &dest);
        assert_eq!((pulled.copied, pulled.failed.len()), (2, 0), "{pulled:?}");
        let copy = back.path().join("copy");
        assert_eq!(std::fs::read(copy.join("Data.csv")).unwrap(), b"upper");
        assert_eq!(
            std::fs::read(copy.join("runs/deep/trace.bin")).unwrap(),
            vec![3u8; 3 << 20]
        );
        assert_eq!(
            std::fs::metadata(copy.join("runs/deep/trace.bin"))
                .unwrap()
                .modified()
                .unwrap(),
            UNIX_EPOCH + Duration::new(1_650_000_000, 555_555_500),
            "the share's 100 ns mtime comes back"
        );
    }

    fn walkdir(dir: &std::path::Path) -> Vec<String> {
        let mut out = Vec::new();
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                out.push(e.path().display().to_string());
                if e.file_type().unwrap().is_dir() {
                    out.extend(walkdir(&e.path()));
                }
            }
        }
        out
    }

    /// A wrong password fails at open, naming the location and not the
    /// password; a read-only share can be read but every write is refused
    /// as `PermissionDenied`.
    #[test]
    fn smb_target_permissions() {
        let Some(v) = service("smb_target_permissions", VARS) else {
            return;
        };
        let wrong = "wrong-password-123";
        let err = super::open(
            &format!("{}/x", v[0]),
            &[("password_command", &format!("echo {wrong}"))],
        )
        .unwrap_err();
        assert!(matches!(err, Error::PermissionDenied { .. }), "{err:?}");
        let text = backup_core::error_chain(&err);
        assert!(
            text.contains(&v[0]) && text.contains("logon failure"),
            "{text}"
        );
        assert!(!text.contains(wrong), "{text}");

        let ro = open(&v[1], &[]).unwrap();
        assert_eq!(
            ro.get_bytes("README").unwrap(),
            b"a file the test user may read\n"
        );
        for (op, err) in [
            ("put", ro.put_bytes("denied/x", b"1").unwrap_err()),
            ("create_new", ro.create_new("lock", b"1").unwrap_err()),
            ("delete", ro.delete("README").unwrap_err()),
        ] {
            assert!(
                matches!(err, Error::PermissionDenied { .. }),
                "{op}: {err:?}"
            );
            assert!(
                backup_core::error_chain(&err).contains(&v[1]),
                "{op}: {err}"
            );
        }
        assert!(matches!(
            ro.get("missing").map(|_| ()).unwrap_err(),
            Error::NotFound { .. }
        ));

        let err = super::open(&v[0], &[]).unwrap_err().to_string();
        assert!(
            err.contains("no password for the SMB user")
                || std::env::var_os("SMB_PASSWORD").is_some(),
            "{err}"
        );
    }
}
