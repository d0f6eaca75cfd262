//! `prune` in deduplicated repositories: it deletes what no snapshot uses,
//! and never what one needs, whatever runs beside it or wherever it stops.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use backup_core::dedup::prune::PruneStep;
use backup_core::{BackupOptions, Cancel, Error, Event, PruneOptions, Repository};

use super::dedup_repo::{Dedup, check_ok, restore};
use super::{assert_same_tree, pseudo_random, registry, rel};

fn now() -> PruneOptions {
    PruneOptions {
        grace: Duration::ZERO,
        ..PruneOptions::default()
    }
}

/// Writes a tree of `files` random files of about `size` bytes.
fn write_tree(dir: &Path, files: u64, size: usize, seed: u64) {
    fs::create_dir_all(dir).unwrap();
    for j in 0..files {
        fs::write(
            dir.join(format!("rec{j}.bin")),
            pseudo_random(size + j as usize * 4099, seed * 1000 + j),
        )
        .unwrap();
    }
}

/// Restores `id` and compares it with `src`.
fn assert_restores(repo: &Repository, id: &str, src: &Path, out: &Path) {
    let _ = fs::remove_dir_all(out);
    restore(repo, id, out);
    assert_same_tree(src, &out.join(rel(src)));
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap().flatten() {
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            fs::copy(e.path(), dest).unwrap();
        }
    }
}

fn count_files(dir: &Path) -> usize {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| {
            if e.file_type().unwrap().is_dir() {
                count_files(&e.path())
            } else {
                1
            }
        })
        .sum()
}

#[test]
fn prune_deletes_what_no_snapshot_uses_after_the_grace_period() {
    let fx = Dedup::new();
    let (old, kept) = (fx.path("old"), fx.path("kept"));
    write_tree(&old, 3, 2 << 20, 1);
    write_tree(&kept, 2, 2 << 20, 2);
    let a = fx.backup(&[&old], "lab");
    let b = fx.backup(&[&kept], "lab");
    let packs_before = fx.pack_files();

    // Nothing unused yet: nothing marked.
    let r = fx.repo.prune(&now()).unwrap();
    assert_eq!((r.marked_packs, r.swept.packs_deleted), (0, 0), "{r:?}");
    assert_eq!(r.snapshots, 2);

    fx.repo.forget(std::slice::from_ref(&a.id), false).unwrap();
    // A dry run marks nothing.
    let dry = fx
        .repo
        .prune(&PruneOptions {
            dry_run: true,
            ..now()
        })
        .unwrap();
    assert!(dry.marked_packs > 0, "{dry:?}");
    assert_eq!(count_files(&fx.path("repo/prune")), 0);

    // With the default grace period the packs are marked, not deleted.
    let r = fx.repo.prune(&PruneOptions::default()).unwrap();
    assert_eq!(r.marked_packs, dry.marked_packs);
    assert_eq!(r.swept.packs_deleted, 0);
    assert_eq!(r.waiting.len(), 1, "{r:?}");
    assert!(r.waiting[0].reason.contains("grace period"), "{r:?}");
    let packs_now = fx.pack_files();
    assert!(packs_before.iter().all(|p| packs_now.contains(p)));

    // A backup of the forgotten data now stores its own copies: it does
    // not use chunks of marked packs.
    let again = fx.backup(&[&old], "lab");
    let info = again.dedup.clone().unwrap();
    assert!(
        info.new_chunks * 10 >= a.dedup.clone().unwrap().new_chunks * 9,
        "a backup used marked chunks: {info:?}"
    );

    // The grace period over, the sweep deletes the marked packs; the new
    // copies stay.
    let r = fx.repo.prune(&now()).unwrap();
    assert_eq!(r.marks_swept, 1, "{r:?}");
    assert_eq!(r.swept.packs_deleted, dry.marked_packs, "{r:?}");
    assert!(r.swept.spared.is_empty(), "{r:?}");
    assert!(r.swept.bytes_deleted > 5 << 20, "{r:?}");
    assert_eq!(count_files(&fx.path("repo/prune")), 0);
    check_ok(&fx.repo);
    assert_restores(&fx.repo, &b.id, &kept, &fx.path("out"));
    assert_restores(&fx.repo, &again.id, &old, &fx.path("out"));

    // Nothing left to do.
    let r = fx.repo.prune(&now()).unwrap();
    assert_eq!((r.marked_packs, r.marks_swept), (0, 0), "{r:?}");
}

/// A repository with a kept snapshot and a forgotten one, for the crash
/// test to copy.
struct Template {
    fx: Dedup,
    kept: PathBuf,
    forgotten: PathBuf,
    kept_id: String,
}

fn template() -> Template {
    let fx = Dedup::new();
    let (kept, forgotten) = (fx.path("kept"), fx.path("forgotten"));
    write_tree(&kept, 2, 1 << 20, 5);
    write_tree(&forgotten, 3, 14 << 20, 6);
    // One snapshot of both: its packs hold the forgotten data and (in one
    // of them) the kept data, and one index fragment lists them all.
    let both = fx.backup(&[&forgotten, &kept], "lab");
    let kept_id = fx.backup(&[&kept], "lab").id;
    fx.repo.forget(&[both.id], false).unwrap();
    Template {
        fx,
        kept,
        forgotten,
        kept_id,
    }
}

fn open_copy(t: &Template, dir: &Path) -> Repository {
    let _ = fs::remove_dir_all(dir);
    copy_dir(&t.fx.path("repo"), dir);
    Repository::open(registry(), dir.to_str().unwrap())
        .unwrap()
        .with_cache_dir(Some(dir.with_extension("cache")))
}

#[test]
fn a_prune_stopped_at_any_step_loses_nothing_and_the_next_one_finishes() {
    let t = template();
    // Every write and delete of a whole prune.
    let mut steps: Vec<PruneStep> = Vec::new();
    let probe = open_copy(&t, &t.fx.path("probe"));
    let r = probe
        .prune_with_hook(&now(), &mut |s| {
            steps.push(s.clone());
            Ok(())
        })
        .unwrap();
    assert!(r.swept.packs_deleted >= 2, "{r:?}");
    let kinds = |prefix: &str, action: &str| {
        steps
            .iter()
            .filter(|s| s.key.starts_with(prefix) && s.action == action)
            .count()
    };
    assert_eq!(kinds("prune/", "write"), 2, "{steps:?}");
    assert!(kinds("index/", "delete") >= 1, "{steps:?}");
    assert!(
        kinds("index/", "write") >= 1,
        "a fragment listing kept packs is rewritten: {steps:?}"
    );
    assert!(kinds("packs/", "delete") >= 2, "{steps:?}");
    assert_eq!(kinds("prune/", "delete"), 2, "{steps:?}");

    for stop_at in 0..steps.len() {
        let dir = t.fx.path(&format!("crash{stop_at}"));
        let repo = open_copy(&t, &dir);
        let mut n = 0;
        let stopped = repo.prune_with_hook(&now(), &mut |s| {
            if n == stop_at {
                return Err(Error::InvalidInput(format!(
                    "stopped before {} {}",
                    s.action, s.key
                )));
            }
            n += 1;
            Ok(())
        });
        assert!(stopped.is_err(), "step {stop_at} did not stop the prune");
        // Whatever was done, the kept snapshot is whole.
        check_ok(&repo);
        let out = t.fx.path("out");
        assert_restores(&repo, &t.kept_id, &t.kept, &out);
        // A backup of the forgotten data between the crash and the next
        // prune is kept whole by it.
        let opts = BackupOptions {
            paths: vec![t.forgotten.clone()],
            host: Some("lab".into()),
            ..BackupOptions::default()
        };
        let again = repo
            .backup(&opts, &backup_core::NoProgress, &Cancel::new())
            .unwrap()
            .snapshot
            .unwrap();
        let r = repo.prune(&now()).unwrap();
        assert!(
            r.waiting.is_empty(),
            "after a stop at step {stop_at}: {r:?}"
        );
        check_ok(&repo);
        assert_restores(&repo, &t.kept_id, &t.kept, &out);
        assert_restores(&repo, &again.id, &t.forgotten, &out);
        assert_eq!(count_files(&dir.join("prune")), 0, "step {stop_at}");
        // Nothing unused is left: a further prune finds nothing to mark
        // (no pack of the stopped prune, no second copy of a chunk).
        let r = repo.prune(&now()).unwrap();
        assert_eq!(r.marked_packs, 0, "after a stop at step {stop_at}: {r:?}");
        fs::remove_dir_all(&dir).unwrap();
    }
}

/// Blocks a backup at its first file (after it read the index) until told.
struct Gate {
    reached: mpsc::SyncSender<()>,
    go: std::sync::Mutex<mpsc::Receiver<()>>,
    once: std::sync::Once,
}

impl backup_core::Progress for Gate {
    fn event(&self, event: &Event) {
        if matches!(event, Event::File { .. }) {
            self.once.call_once(|| {
                let _ = self.reached.send(());
                let _ = self.go.lock().unwrap().recv();
            });
        }
    }
}

#[test]
fn a_backup_running_across_a_prune_keeps_the_chunks_it_found() {
    let fx = Dedup::new();
    let (data, kept) = (fx.path("data"), fx.path("kept"));
    write_tree(&data, 3, 3 << 20, 8);
    write_tree(&kept, 1, 1 << 20, 9);
    let first = fx.backup(&[&data], "lab");
    fx.backup(&[&kept], "lab");
    fx.repo.forget(&[first.id], false).unwrap();
    let packs = fx.pack_files();

    // A backup of the same data reads the index (which still lists the
    // forgotten snapshot's chunks) and is held at its first file.
    let (reached_tx, reached) = mpsc::sync_channel(1);
    let (go, go_rx) = mpsc::channel();
    let gate = Gate {
        reached: reached_tx,
        go: std::sync::Mutex::new(go_rx),
        once: std::sync::Once::new(),
    };
    let opts = BackupOptions {
        paths: vec![data.clone()],
        host: Some("lab".into()),
        no_cache: true,
        ..BackupOptions::default()
    };
    std::thread::scope(|s| {
        // Moved in, so that a failed assertion drops it and frees the
        // backup (instead of the scope waiting for it forever).
        let go = go;
        let backup = s.spawn(|| fx.repo.backup(&opts, &gate, &Cancel::new()));
        reached.recv().unwrap();
        // The prune marks the forgotten snapshot's packs but cannot sweep
        // them while the backup holds its lock.
        let r = fx.repo.prune(&now()).unwrap();
        assert!(r.marked_packs > 0, "{r:?}");
        assert_eq!(r.swept.packs_deleted, 0, "{r:?}");
        assert_eq!(r.waiting.len(), 1, "{r:?}");
        assert!(
            r.waiting[0].reason.contains("still hold their lock"),
            "{r:?}"
        );
        let packs_now = fx.pack_files();
        assert!(packs.iter().all(|p| packs_now.contains(p)));
        go.send(()).unwrap();
        let summary = backup.join().unwrap().unwrap();
        let snap = summary.snapshot.unwrap();
        // It used the chunks it found (nothing new but tar headers).
        let info = snap.dedup.clone().unwrap();
        assert!(info.new_bytes < 1 << 20, "{info:?}");

        // Now the mark is due, and the sweep spares the packs the new
        // snapshot uses.
        let r = fx.repo.prune(&now()).unwrap();
        assert!(r.marks_swept >= 1, "{r:?}");
        assert!(!r.swept.spared.is_empty(), "{r:?}");
        check_ok(&fx.repo);
        assert_restores(&fx.repo, &snap.id, &data, &fx.path("out"));
    });
}

/// Tree `v` of host `h`: three files, one of them different in each
/// version.
fn version_tree(dir: &Path, h: u64, v: u64) {
    let _ = fs::remove_dir_all(dir);
    fs::create_dir_all(dir).unwrap();
    for j in 0..3u64 {
        let seed = if j == v % 3 {
            h * 100 + v
        } else {
            h * 100 + 50 + j
        };
        fs::write(dir.join(format!("f{j}.bin")), pseudo_random(700_000, seed)).unwrap();
    }
}

#[test]
fn two_hosts_backing_up_while_prunes_run_keep_every_snapshot_restorable() {
    let fx = Dedup::new();
    let versions = 4u64;
    // Earlier snapshots of the same data, forgotten: the backups below
    // find their chunks while prunes mark and sweep them.
    for h in 1..=2u64 {
        for v in 0..versions {
            let dir = fx.path(&format!("host{h}"));
            version_tree(&dir, h, v);
            let id = fx.backup(&[&dir], &format!("host{h}")).id;
            fx.repo.forget(&[id], false).unwrap();
        }
    }
    let done = std::sync::atomic::AtomicUsize::new(0);
    let made: std::sync::Mutex<Vec<(String, u64, u64)>> = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for h in 1..=2u64 {
            let (fx, done, made) = (&fx, &done, &made);
            s.spawn(move || {
                // Each host opens the repository on its own.
                let repo = Repository::open(registry(), fx.path("repo").to_str().unwrap())
                    .unwrap()
                    .with_cache_dir(Some(fx.path(&format!("cache{h}"))));
                let dir = fx.path(&format!("host{h}"));
                for v in 0..versions {
                    version_tree(&dir, h, v);
                    let opts = BackupOptions {
                        paths: vec![dir.clone()],
                        host: Some(format!("host{h}")),
                        ..BackupOptions::default()
                    };
                    let snap = repo
                        .backup(&opts, &backup_core::NoProgress, &Cancel::new())
                        .unwrap()
                        .snapshot
                        .unwrap();
                    made.lock().unwrap().push((snap.id, h, v));
                }
                done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            });
        }
        let (fx, done) = (&fx, &done);
        s.spawn(move || {
            let repo = Repository::open(registry(), fx.path("repo").to_str().unwrap()).unwrap();
            while done.load(std::sync::atomic::Ordering::SeqCst) < 2 {
                match repo.prune(&now()) {
                    Ok(_) | Err(Error::Locked { .. }) => {}
                    Err(e) => panic!("{e}"),
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        });
    });
    let r = fx.repo.prune(&now()).unwrap();
    assert!(r.waiting.is_empty(), "{r:?}");
    check_ok(&fx.repo);
    let made = made.into_inner().unwrap();
    assert_eq!(made.len() as u64, 2 * versions);
    let expected = fx.path("expected");
    for (id, h, v) in made {
        version_tree(&expected, h, v);
        let out = fx.path("out");
        let _ = fs::remove_dir_all(&out);
        restore(&fx.repo, &id, &out);
        let got = out.join(rel(&fx.path(&format!("host{h}"))));
        for j in 0..3 {
            let name = format!("f{j}.bin");
            assert!(
                fs::read(got.join(&name)).unwrap() == fs::read(expected.join(&name)).unwrap(),
                "{id}: {name} of host {h} version {v} differs"
            );
        }
    }
}

/// A local target that holds the first write of an index fragment after
/// it is armed, until told to go on (so a backup can be stopped with its
/// packs stored and not yet indexed).
#[derive(Debug)]
struct HoldIndexWrite {
    inner: std::sync::Arc<dyn backup_core::target::Target>,
    armed: std::sync::atomic::AtomicBool,
    reached: std::sync::Mutex<Option<mpsc::SyncSender<()>>>,
    go: std::sync::Mutex<Option<mpsc::Receiver<()>>>,
}

impl backup_core::target::Target for HoldIndexWrite {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn put(&self, key: &str) -> backup_core::Result<Box<dyn backup_core::target::ObjectWriter>> {
        if key.starts_with("index/") && self.armed.swap(false, std::sync::atomic::Ordering::SeqCst)
        {
            if let Some(tx) = self.reached.lock().unwrap().take() {
                let _ = tx.send(());
            }
            if let Some(rx) = self.go.lock().unwrap().take() {
                let _ = rx.recv();
            }
        }
        self.inner.put(key)
    }
    fn create_new(&self, key: &str, data: &[u8]) -> backup_core::Result<()> {
        self.inner.create_new(key, data)
    }
    fn get(&self, key: &str) -> backup_core::Result<Box<dyn std::io::Read + Send>> {
        self.inner.get(key)
    }
    fn get_range(
        &self,
        key: &str,
        offset: u64,
        len: u64,
    ) -> backup_core::Result<Box<dyn std::io::Read + Send>> {
        self.inner.get_range(key, offset, len)
    }
    fn list(&self, prefix: &str) -> backup_core::Result<Vec<backup_core::target::ObjectMeta>> {
        self.inner.list(prefix)
    }
    fn list_dirs(&self, prefix: &str) -> backup_core::Result<Vec<String>> {
        self.inner.list_dirs(prefix)
    }
    fn stat(&self, key: &str) -> backup_core::Result<backup_core::target::ObjectMeta> {
        self.inner.stat(key)
    }
    fn delete(&self, key: &str) -> backup_core::Result<()> {
        self.inner.delete(key)
    }
}

#[test]
fn a_pack_stored_again_after_a_mark_is_never_the_marked_one() {
    // A backup that read a mark stores its own copies of the marked
    // chunks. Stored again, the same chunks must make a pack of another
    // name: a sweep that deletes the marked pack while this backup runs
    // (its lock came after the mark, so the sweep does not wait for it)
    // must not delete what the backup stored.
    let dir = tempfile::tempdir().unwrap();
    let (target, repo) = held_repo(dir.path());
    let data = dir.path().join("data");
    write_tree(&data, 1, 100_000, 21);
    let opts = BackupOptions {
        paths: vec![data.clone()],
        host: Some("lab".into()),
        no_cache: true,
        ..BackupOptions::default()
    };
    let first = repo
        .backup(&opts, &backup_core::NoProgress, &Cancel::new())
        .unwrap()
        .snapshot
        .unwrap();
    repo.forget(&[first.id], false).unwrap();
    let marked = repo.prune(&PruneOptions::default()).unwrap();
    assert!(marked.marked_packs > 0, "{marked:?}");
    let old_packs = pack_names(&dir.path().join("repo"));

    let (reached, go) = target.arm();
    std::thread::scope(|s| {
        let go = go;
        let backup = s.spawn(|| repo.backup(&opts, &backup_core::NoProgress, &Cancel::new()));
        reached.recv().unwrap();
        // The backup's packs are stored, none has a marked pack's name.
        let now_packs = pack_names(&dir.path().join("repo"));
        let new: Vec<_> = now_packs.difference(&old_packs).collect();
        assert!(!new.is_empty(), "the backup stored no pack of a new name");
        // The old mark is due: its packs are deleted while the backup
        // runs.
        let r = repo.prune(&now()).unwrap();
        assert_eq!(r.marks_swept, 1, "{r:?}");
        assert!(r.swept.packs_deleted >= old_packs.len() as u64, "{r:?}");
        go.send(()).unwrap();
        let snap = backup.join().unwrap().unwrap().snapshot.unwrap();
        check_ok(&repo);
        assert_restores(&repo, &snap.id, &data, &dir.path().join("out"));
    });
}

impl HoldIndexWrite {
    /// Holds the next `index/` put: returns the signal that it is reached
    /// and the sender that lets it go on.
    fn arm(&self) -> (mpsc::Receiver<()>, mpsc::Sender<()>) {
        let (reached_tx, reached) = mpsc::sync_channel(1);
        let (go, go_rx) = mpsc::channel();
        *self.reached.lock().unwrap() = Some(reached_tx);
        *self.go.lock().unwrap() = Some(go_rx);
        self.armed.store(true, std::sync::atomic::Ordering::SeqCst);
        (reached, go)
    }
}

/// A new deduplicated repository in `dir` on a [`HoldIndexWrite`] target.
fn held_repo(dir: &Path) -> (std::sync::Arc<HoldIndexWrite>, Repository) {
    let target = std::sync::Arc::new(HoldIndexWrite {
        inner: registry()
            .open_target(dir.join("repo").to_str().unwrap())
            .unwrap(),
        armed: std::sync::atomic::AtomicBool::new(false),
        reached: std::sync::Mutex::new(None),
        go: std::sync::Mutex::new(None),
    });
    let repo = Repository::init_with(
        registry(),
        target.clone(),
        backup_core::repository::InitOptions { dedup: true },
    )
    .unwrap()
    .with_cache_dir(Some(dir.join("cache")));
    (target, repo)
}

/// A backup whose lock went longer than its trusted gap without a stored
/// refresh (as on a machine asleep: another host's prune may have taken
/// the lock for stale and deleted chunks the backup found) commits nothing
/// and says why; one whose lock was refreshed meanwhile commits. The
/// timing is shortened from minutes to milliseconds.
#[test]
fn a_backup_whose_lock_went_unrefreshed_commits_nothing() {
    use backup_core::lock::LockTiming;
    let dir = tempfile::tempdir().unwrap();
    let (target, repo) = held_repo(dir.path());
    let data = dir.path().join("data");
    write_tree(&data, 1, 100_000, 22);
    let opts = BackupOptions {
        paths: vec![data.clone()],
        no_cache: true,
        ..BackupOptions::default()
    };
    let held_backup = |repo: &Repository| {
        let (reached, go) = target.arm();
        std::thread::scope(|s| {
            let backup = s.spawn(|| repo.backup(&opts, &backup_core::NoProgress, &Cancel::new()));
            reached
                .recv_timeout(Duration::from_secs(60))
                .expect("the backup writes an index fragment");
            std::thread::sleep(Duration::from_millis(600));
            go.send(()).unwrap();
            backup.join().unwrap()
        })
    };
    let never_refreshed = repo.clone().with_lock_timing(LockTiming {
        refresh_every: Duration::from_secs(3600),
        trusted_gap: Duration::from_millis(300),
    });
    let r = held_backup(&never_refreshed);
    let Err(e @ Error::LockLost { .. }) = r else {
        panic!("{r:?}")
    };
    assert!(e.to_string().contains("nothing was committed"), "{e}");
    assert!(repo.snapshots().unwrap().is_empty());
    assert!(repo.unfinished().unwrap().is_empty());

    // New data, so that the next backup stores chunks (and an index
    // fragment, where it is held).
    write_tree(&data, 1, 100_000, 23);
    let refreshed = repo.clone().with_lock_timing(LockTiming {
        refresh_every: Duration::from_millis(50),
        trusted_gap: Duration::from_secs(3),
    });
    let snap = held_backup(&refreshed).unwrap().snapshot.unwrap();
    check_ok(&repo);
    assert_restores(&repo, &snap.id, &data, &dir.path().join("out"));

    // An archive snapshot relies on nothing stored before: it commits
    // whatever its lock went through.
    let plain = Repository::init(registry(), dir.path().join("plain").to_str().unwrap())
        .unwrap()
        .with_lock_timing(LockTiming {
            refresh_every: Duration::from_secs(3600),
            trusted_gap: Duration::from_millis(300),
        });
    let slow = |e: &Event| {
        if let Event::File { .. } = e {
            std::thread::sleep(Duration::from_millis(400));
        }
    };
    let s = plain.backup(&opts, &slow, &Cancel::new()).unwrap();
    assert!(s.snapshot.is_some());
}

fn pack_names(repo: &Path) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    for d in fs::read_dir(repo.join("packs")).unwrap().flatten() {
        for e in fs::read_dir(d.path()).unwrap().flatten() {
            out.insert(e.file_name().to_string_lossy().into_owned());
        }
    }
    out
}
