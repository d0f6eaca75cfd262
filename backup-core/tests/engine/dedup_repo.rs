//! Deduplicated repositories end to end: every command works on them as on
//! archive repositories, what was stored is not stored again (across
//! snapshots, hosts and paths), damage is found, copies convert between
//! the kinds, and `restore.py` restores a backup without backupkit.

use std::fs;
use std::io::Write;
use std::path::Path;

use backup_core::database::{DatabaseSource, RowCounts};
use backup_core::repository::InitOptions;
use backup_core::{
    BackupOptions, Cancel, CheckOptions, DatabaseBackupOptions, Error, NoProgress, Repository,
    SnapshotMeta,
};

use super::{assert_same_tree, make_tree, pseudo_random, registry, rel};

pub(super) struct Dedup {
    pub(super) dir: tempfile::TempDir,
    pub(super) repo: Repository,
}

pub(super) fn init_dedup(path: &Path) -> Repository {
    let target = registry().open_target(path.to_str().unwrap()).unwrap();
    Repository::init_with(registry(), target, InitOptions { dedup: true }).unwrap()
}

impl Dedup {
    pub(super) fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let repo =
            init_dedup(&dir.path().join("repo")).with_cache_dir(Some(dir.path().join("cache")));
        Self { dir, repo }
    }

    pub(super) fn path(&self, p: &str) -> std::path::PathBuf {
        self.dir.path().join(p)
    }

    pub(super) fn backup(&self, paths: &[&Path], host: &str) -> SnapshotMeta {
        self.backup_with(paths, host, false).snapshot.unwrap()
    }

    pub(super) fn backup_with(
        &self,
        paths: &[&Path],
        host: &str,
        no_cache: bool,
    ) -> backup_core::BackupSummary {
        let opts = BackupOptions {
            paths: paths.iter().map(|p| p.to_path_buf()).collect(),
            host: Some(host.into()),
            no_cache,
            ..BackupOptions::default()
        };
        let s = self
            .repo
            .backup(&opts, &NoProgress, &Cancel::new())
            .unwrap();
        assert!(s.warnings.is_empty(), "{:?}", s.warnings);
        s
    }
}

pub(super) fn restore(repo: &Repository, id: &str, out: &Path) {
    let opts = backup_core::RestoreOptions {
        target: out.to_path_buf(),
        ..backup_core::RestoreOptions::default()
    };
    repo.restore(id, &opts, &NoProgress, &Cancel::new())
        .unwrap();
}

impl Dedup {
    fn backup_dump(&self, dump: &FakeDump) -> SnapshotMeta {
        let opts = DatabaseBackupOptions::default();
        self.repo
            .backup_database(dump, &opts, &NoProgress, &Cancel::new())
            .unwrap()
    }

    pub(super) fn pack_files(&self) -> Vec<std::path::PathBuf> {
        let mut out = Vec::new();
        let packs = self.path("repo/packs");
        if let Ok(dirs) = fs::read_dir(packs) {
            for d in dirs.flatten() {
                out.extend(fs::read_dir(d.path()).unwrap().flatten().map(|e| e.path()));
            }
        }
        out.sort();
        out
    }
}

pub(super) fn check(repo: &Repository, read_data: bool) -> backup_core::CheckReport {
    let opts = CheckOptions {
        read_data,
        ..CheckOptions::default()
    };
    repo.check(&opts, &NoProgress, &Cancel::new()).unwrap()
}

/// A whole check (`--read-data`) that must find nothing.
pub(super) fn check_ok(repo: &Repository) -> backup_core::CheckReport {
    let report = check(repo, true);
    assert!(
        report.is_ok(),
        "{:?} {:?}",
        report.problems,
        report.repository_problems
    );
    report
}

#[test]
fn a_deduplicated_repository_round_trips_every_kind_of_entry() {
    let fx = Dedup::new();
    let marker: serde_json::Value =
        serde_json::from_slice(&fs::read(fx.path("repo/backupkit.json")).unwrap()).unwrap();
    assert_eq!(marker["backupkit_repository"], 2);
    assert_eq!(marker["dedup"]["chunker"]["avg_size"], 1 << 20);
    assert_eq!(marker["dedup"]["key"].as_str().unwrap().len(), 64);
    assert!(fx.path("repo/FORMAT.md").is_file());
    assert!(fx.path("repo/restore.py").is_file());
    // Two repositories never share a key.
    let other = tempfile::tempdir().unwrap();
    init_dedup(&other.path().join("r"));
    let marker2: serde_json::Value =
        serde_json::from_slice(&fs::read(other.path().join("r/backupkit.json")).unwrap()).unwrap();
    assert_ne!(marker["dedup"]["key"], marker2["dedup"]["key"]);

    let src = fx.path("src");
    make_tree(&src);
    let meta = fx.backup(&[&src], "lab1");
    assert_eq!(meta.format, backup_core::snapshot::SNAPSHOT_FORMAT);
    assert_eq!(meta.files_included, ["chunks"]);
    // The manifest is stored as chunks (restore.py --manifest prints it,
    // as a test below shows); its chunk list is an object of its own.
    assert_eq!(meta.manifest_name(), "manifest.chunks");
    assert!(
        fx.path("repo/snapshots")
            .join(&meta.id)
            .join("manifest.chunks")
            .is_file()
    );
    assert!(
        !fx.path("repo/snapshots")
            .join(&meta.id)
            .join("manifest.jsonl.zst")
            .exists()
    );
    let info = meta.dedup.clone().unwrap();
    assert!(info.chunks >= 3, "{info:?}");
    assert_eq!(info.new_chunks, info.chunks);
    assert!(meta.size_bytes > 0);
    assert!(fx.repo.dedup().is_some());

    // Reopened: the same kind, and everything reads back.
    let repo = Repository::open(registry(), fx.path("repo").to_str().unwrap()).unwrap();
    assert!(repo.dedup().is_some());
    assert_eq!(repo.snapshots().unwrap(), vec![meta.clone()]);
    let mut listed = Vec::new();
    repo.list_entries(&meta, &mut |e| {
        listed.push(e.path.clone());
        Ok(())
    })
    .unwrap();
    assert_eq!(listed.len() as u64, meta.entry_count);
    let out = fx.path("out");
    restore(&repo, &meta.id, &out);
    assert_same_tree(&src, &out.join(rel(&src)));
    let report = check_ok(&repo);
    assert_eq!(report.snapshots_read, 1);
    let chunks = report.chunks.unwrap();
    assert!(
        chunks.bytes_read > 0 && chunks.chunks >= info.chunks,
        "{chunks:?}"
    );
}

#[test]
fn an_unchanged_tree_stores_nothing_and_a_recording_is_stored_once_under_any_name() {
    let fx = Dedup::new();
    let src = fx.path("src");
    fs::create_dir_all(src.join("day1")).unwrap();
    let recording = pseudo_random(6 << 20, 9);
    fs::write(src.join("day1/rec.bin"), &recording).unwrap();
    fs::write(src.join("day1/notes.csv"), "t,v\n1,2\n".repeat(500)).unwrap();
    let first = fx.backup(&[&src], "lab1");
    let packs = fx.pack_files();

    // No change: no chunk, no pack, no index fragment.
    let again = fx.backup(&[&src], "lab1");
    let info = again.dedup.clone().unwrap();
    assert_eq!(info.new_chunks, 0, "{info:?}");
    assert_eq!(again.size_bytes, 0);
    assert_eq!(fx.pack_files(), packs);

    // The recording under another name, in another directory, after other
    // files, backed up from another host: only the tar headers and the
    // small files around it are new.
    let other = fx.path("other");
    fs::create_dir_all(other.join("sorted/2026")).unwrap();
    fs::write(other.join("aaa.txt"), pseudo_random(300_000, 4)).unwrap();
    fs::write(other.join("sorted/2026/session_07.bin"), &recording).unwrap();
    let moved = fx.backup(&[&other], "lab2");
    let info = moved.dedup.clone().unwrap();
    assert!(
        info.new_bytes < 400_000,
        "a 6 MiB recording under a new name cost {} new bytes",
        info.new_bytes
    );
    let out = fx.path("out");
    restore(&fx.repo, &moved.id, &out);
    assert_eq!(
        fs::read(out.join(rel(&other)).join("sorted/2026/session_07.bin")).unwrap(),
        recording
    );
    assert!(check(&fx.repo, true).is_ok());
    assert_ne!(first.id, moved.id);
}

/// A stand-in dump: rows of text, `changed` of them rewritten.
#[derive(Debug)]
struct FakeDump {
    rows: u64,
    changed: std::ops::Range<u64>,
}

impl DatabaseSource for FakeDump {
    fn engine(&self) -> &'static str {
        "sqlite"
    }
    fn describe(&self) -> String {
        "sqlite:///lab/results.db".into()
    }
    fn dump_name(&self) -> String {
        "results.db".into()
    }
    fn dump(&self, out: &mut dyn Write, _cancel: &Cancel) -> backup_core::Result<RowCounts> {
        let mut w = std::io::BufWriter::new(out);
        for i in 0..self.rows {
            let v = if self.changed.contains(&i) { i * 7 } else { i };
            writeln!(
                w,
                "INSERT INTO results VALUES({i},'sample-{v}',{});",
                v % 977
            )
            .unwrap();
        }
        w.flush().unwrap();
        Ok(RowCounts::from([("results".to_owned(), self.rows)]))
    }
}

#[test]
fn a_database_dump_is_stored_raw_and_a_small_change_stores_little() {
    let fx = Dedup::new();
    let first = fx.backup_dump(&FakeDump {
        rows: 600_000,
        changed: 0..0,
    });
    let info = first.dedup.clone().unwrap();
    // Raw, cut at 256 KiB on average (a .gz would make every chunk new).
    assert!(info.stream_bytes > 30 << 20, "{info:?}");
    assert!(info.chunks >= 60, "{info:?}");
    assert_eq!(first.files_included, ["chunks"]);

    // 1,000 rows in one run (55 KB): the chunks around it, however the
    // key placed the cut points (at most 1 MiB each), are a few percent.
    let second = fx.backup_dump(&FakeDump {
        rows: 600_000,
        changed: 300_000..301_000,
    });
    let info2 = second.dedup.clone().unwrap();
    assert!(
        info2.new_bytes * 10 < info2.stream_bytes,
        "0.17% of rows changed stored {} of {} bytes",
        info2.new_bytes,
        info2.stream_bytes
    );
    let report = check_ok(&fx.repo);
    assert_eq!(report.snapshots_read, 2);
}

#[test]
fn damage_to_packs_index_and_chunk_lists_is_found() {
    let fx = Dedup::new();
    let src = fx.path("src");
    make_tree(&src);
    let meta = fx.backup(&[&src], "lab1");
    assert!(check(&fx.repo, true).is_ok());

    // A flipped byte in a pack: the pack and the snapshot that needs it.
    // (The largest pack holds the tree; the manifest's chunks, which every
    // check reads, are in a small one.)
    let pack = fx
        .pack_files()
        .into_iter()
        .max_by_key(|p| fs::metadata(p).unwrap().len())
        .unwrap();
    let good = fs::read(&pack).unwrap();
    let mut bad = good.clone();
    let at = bad.len() / 2;
    bad[at] ^= 0x04;
    fs::write(&pack, &bad).unwrap();
    let report = check(&fx.repo, true);
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
    assert!(
        report
            .repository_problems
            .iter()
            .any(|p| p.contains(pack.file_name().unwrap().to_str().unwrap())),
        "{:?}",
        report.repository_problems
    );
    // Without --read-data the pack's length is right, so nothing is read.
    assert!(check(&fx.repo, false).is_ok());
    let out = fx.path("out");
    let opts = backup_core::RestoreOptions {
        target: out.clone(),
        ..backup_core::RestoreOptions::default()
    };
    assert!(matches!(
        fx.repo
            .restore(&meta.id, &opts, &NoProgress, &Cancel::new()),
        Err(Error::Integrity { .. })
    ));
    fs::write(&pack, &good).unwrap();

    // A missing pack: found without reading data.
    fs::rename(&pack, fx.path("aside")).unwrap();
    let report = check(&fx.repo, false);
    assert!(!report.repository_problems.is_empty());
    fs::rename(fx.path("aside"), &pack).unwrap();

    // A chunk list edited to name a chunk no index lists: the list's
    // SHA-256 no longer matches (and, were it resealed, the chunk would be
    // in no index).
    let list = fx.path("repo/snapshots").join(&meta.id).join("chunks");
    let text = fs::read_to_string(&list).unwrap();
    let line = text.lines().nth(1).unwrap();
    let flipped = format!(
        "{}{}",
        if line.starts_with('0') { "1" } else { "0" },
        &line[1..]
    );
    fs::write(&list, text.replacen(line, &flipped, 1)).unwrap();
    let report = check(&fx.repo, false);
    assert_eq!(report.problems.len(), 1);
    assert!(
        report.problems[0].message.contains("chunks"),
        "{:?}",
        report.problems
    );
    fs::write(&list, &text).unwrap();

    // A flipped byte in the manifest's chunk list.
    let manifest = fx
        .path("repo/snapshots")
        .join(&meta.id)
        .join("manifest.chunks");
    let good_manifest = fs::read(&manifest).unwrap();
    for at in [0, good_manifest.len() / 2, good_manifest.len() - 1] {
        let mut bad = good_manifest.clone();
        bad[at] ^= 0x08;
        fs::write(&manifest, &bad).unwrap();
        let report = check(&fx.repo, false);
        assert_eq!(report.problems.len(), 1, "flip at {at}");
    }
    fs::write(&manifest, &good_manifest).unwrap();

    // An index fragment with a flipped byte.
    let index = fs::read_dir(fx.path("repo/index"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let good = fs::read(&index).unwrap();
    let mut bad = good.clone();
    bad[20] ^= 0x01;
    fs::write(&index, &bad).unwrap();
    let report = check(&fx.repo, false);
    assert!(!report.repository_problems.is_empty(), "{report:?}");
    fs::write(&index, &good).unwrap();
    assert!(check(&fx.repo, true).is_ok());
}

#[test]
fn copy_converts_between_the_kinds_and_stores_only_missing_chunks() {
    let fx = Dedup::new();
    let src = fx.path("src");
    make_tree(&src);
    // Enough data for many chunks: a converted stream has no large-file
    // cuts, so its chunks are content-defined only (up to 4 MiB each).
    fs::write(src.join("big.bin"), pseudo_random(24 << 20, 5)).unwrap();
    let first = fx.backup(&[&src], "lab1");
    fs::write(src.join("csv/new.csv"), "a,b\n1,2\n").unwrap();
    let second = fx.backup(&[&src], "lab1");

    // Dedup -> archive repository: zstd archives, restorable, checked.
    let plain = Repository::init(registry(), fx.path("plain").to_str().unwrap()).unwrap();
    let s = fx
        .repo
        .copy_to(&plain, &[], &NoProgress, &Cancel::new())
        .unwrap();
    assert_eq!(s.copied, [first.id.clone(), second.id.clone()]);
    let copied = plain.load_snapshot(&second.id).unwrap();
    assert!(copied.dedup.is_none());
    assert_eq!(copied.files_included, ["files.tar.zst"]);
    // The manifest is written anew as the archive repository's own:
    // compressed lines, the same entries.
    assert_eq!(copied.manifest_name(), "manifest.jsonl.zst");
    assert_eq!(copied.format, backup_core::snapshot::SNAPSHOT_FORMAT);
    let entries = |repo: &Repository, meta: &SnapshotMeta| {
        let mut all = Vec::new();
        repo.list_entries(meta, &mut |e| {
            all.push(e.clone());
            Ok(())
        })
        .unwrap();
        all
    };
    assert_eq!(entries(&plain, &copied), entries(&fx.repo, &second));
    assert!(check(&plain, true).is_ok());
    let out = fx.path("out-plain");
    restore(&plain, &second.id, &out);
    assert_same_tree(&src, &out.join(rel(&src)));

    // Archive -> another dedup repository (its own key): the second
    // snapshot adds only what changed.
    let other = init_dedup(&fx.path("other"));
    let s = plain
        .copy_to(
            &other,
            std::slice::from_ref(&first.id),
            &NoProgress,
            &Cancel::new(),
        )
        .unwrap();
    assert_eq!(s.copied, std::slice::from_ref(&first.id));
    plain
        .copy_to(
            &other,
            std::slice::from_ref(&second.id),
            &NoProgress,
            &Cancel::new(),
        )
        .unwrap();
    let c2 = other.load_snapshot(&second.id).unwrap();
    let info = c2.dedup.clone().unwrap();
    // The new file and its directory's header change a few chunks.
    assert!(
        info.new_chunks * 3 < info.chunks,
        "a copy of an almost unchanged snapshot stored {info:?}"
    );
    // Dedup -> dedup: every snapshot is there already.
    let s = fx
        .repo
        .copy_to(&other, &[], &NoProgress, &Cancel::new())
        .unwrap();
    assert_eq!(s.skipped.len(), 2);
    check_ok(&other);
    let out = fx.path("out-other");
    restore(&other, &second.id, &out);
    assert_same_tree(&src, &out.join(rel(&src)));
    // The copies keep their id, time and counts.
    assert_eq!(c2.timestamp, second.timestamp);
    assert_eq!(c2.entry_count, second.entry_count);
}

#[test]
fn a_damaged_source_is_never_copied() {
    let fx = Dedup::new();
    let src = fx.path("src");
    make_tree(&src);
    let meta = fx.backup(&[&src], "lab1");
    let pack = fx.pack_files().remove(0);
    let mut bytes = fs::read(&pack).unwrap();
    let at = bytes.len() - 10;
    bytes[at] ^= 0x10;
    fs::write(&pack, &bytes).unwrap();
    let plain = Repository::init(registry(), fx.path("plain").to_str().unwrap()).unwrap();
    let r = fx.repo.copy_to(&plain, &[], &NoProgress, &Cancel::new());
    assert!(matches!(r, Err(Error::Integrity { .. })), "{r:?}");
    assert!(plain.snapshots().unwrap().is_empty());
    assert!(matches!(
        plain.load_snapshot(&meta.id),
        Err(Error::SnapshotNotFound { .. })
    ));
}

#[test]
fn a_marker_whose_kind_and_settings_disagree_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("repo");
    init_dedup(&path);
    let marker_path = path.join("backupkit.json");
    let marker: serde_json::Value =
        serde_json::from_slice(&fs::read(&marker_path).unwrap()).unwrap();
    let open = || Repository::open(registry(), path.to_str().unwrap());

    let mut no_settings = marker.clone();
    no_settings.as_object_mut().unwrap().remove("dedup");
    fs::write(&marker_path, no_settings.to_string()).unwrap();
    let e = open().unwrap_err();
    assert!(matches!(e, Error::RepositoryUnsupported { .. }), "{e:?}");

    let mut old_kind = marker.clone();
    old_kind["backupkit_repository"] = 1.into();
    fs::write(&marker_path, old_kind.to_string()).unwrap();
    assert!(matches!(
        open().unwrap_err(),
        Error::RepositoryUnsupported { .. }
    ));

    let mut bad_key = marker.clone();
    bad_key["dedup"]["key"] = "zz".into();
    fs::write(&marker_path, bad_key.to_string()).unwrap();
    let e = open().unwrap_err();
    assert!(!format!("{e}").contains(marker["dedup"]["key"].as_str().unwrap()));
    assert!(matches!(e, Error::RepositoryUnsupported { .. }), "{e:?}");

    fs::write(&marker_path, marker.to_string()).unwrap();
    assert!(open().unwrap().dedup().is_some());
}

#[test]
fn restore_py_restores_a_backup_byte_identical() {
    let Some(python) = super::dedup::python_with_zstandard() else {
        return;
    };
    let fx = Dedup::new();
    let src = fx.path("src");
    make_tree(&src);
    let meta = fx.backup(&[&src], "lab1");
    let out = fx.path("out");
    fs::create_dir_all(&out).unwrap();
    let script = format!(
        "{python:?} {:?} {} {:?} | tar -x -C {:?}",
        fx.path("repo/restore.py"),
        &meta.id[..15],
        fx.path("repo"),
        out
    );
    let run = std::process::Command::new("bash")
        .args(["-o", "pipefail", "-c", &script])
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    // tar keeps whole seconds and sets directory times as it goes, so
    // what is compared is what restore.py is for: kinds, content, links.
    let (mut names, mut got) = (Vec::new(), Vec::new());
    super::collect(&src, Path::new(""), &mut names);
    let restored = out.join(rel(&src));
    super::collect(&restored, Path::new(""), &mut got);
    assert_eq!(names, got);
    for n in &names {
        let (a, b) = (src.join(n), restored.join(n));
        let (ma, mb) = (
            fs::symlink_metadata(&a).unwrap(),
            fs::symlink_metadata(&b).unwrap(),
        );
        assert_eq!(ma.file_type(), mb.file_type(), "{}", n.display());
        if ma.is_symlink() {
            assert_eq!(fs::read_link(&a).unwrap(), fs::read_link(&b).unwrap());
        } else if ma.is_file() {
            assert!(
                fs::read(&a).unwrap() == fs::read(&b).unwrap(),
                "{}",
                n.display()
            );
        }
    }

    // The manifest, as JSON lines: the header, then every entry with its
    // BLAKE3, as backupkit lists them.
    let printed = run_restore_py(&python, &fx, &["--manifest", &meta.id]);
    let lines: Vec<serde_json::Value> = String::from_utf8(printed)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["snapshot"], meta.id.as_str());
    // Stored, a line in the directory of the line before gives only its
    // name; printed, every line has its whole path.
    assert_eq!(lines[0]["backupkit_manifest"], 2);
    assert!(
        lines[1..]
            .iter()
            .all(|l| l["path"].is_string() && l["name"].is_null())
    );
    let mut listed = Vec::new();
    fx.repo
        .list_entries(&meta, &mut |e| {
            listed.push(serde_json::to_value(e).unwrap());
            Ok(())
        })
        .unwrap();
    assert_eq!(lines[1..], listed[..]);
    assert!(listed.iter().any(|e| e["blake3"].is_string()));

    // A database snapshot: the dump itself.
    let dump = FakeDump {
        rows: 20_000,
        changed: 0..0,
    };
    let db = fx.backup_dump(&dump);
    let restored = run_restore_py(&python, &fx, &[&db.id]);
    let mut expected = Vec::new();
    dump.dump(&mut expected, &Cancel::new()).unwrap();
    assert!(restored == expected, "the dump differs");
}

/// Runs `restore.py ARGS REPOSITORY`, which must succeed; its output.
fn run_restore_py(python: &str, fx: &Dedup, args: &[&str]) -> Vec<u8> {
    let run = std::process::Command::new(python)
        .arg(fx.path("repo/restore.py"))
        .args(args)
        .arg(fx.path("repo"))
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    run.stdout
}

#[test]
fn an_unchanged_large_file_is_not_read_again_and_a_rewritten_one_is() {
    let fx = Dedup::new();
    let src = fx.path("src");
    fs::create_dir_all(&src).unwrap();
    let big = src.join("recording.bin");
    let first_content = pseudo_random((3 << 20) + 123, 21);
    fs::write(&big, &first_content).unwrap();
    fs::write(src.join("small.csv"), "a,b\n1,2\n").unwrap();
    let s1 = fx.backup_with(&[&src], "lab1", false);
    assert_eq!(s1.reused_files, 0);

    // Unchanged: spliced from the cache, no chunk stored, restorable.
    let s2 = fx.backup_with(&[&src], "lab1", false);
    assert_eq!(s2.reused_files, 1);
    let m2 = s2.snapshot.unwrap();
    assert_eq!(m2.dedup.as_ref().unwrap().new_chunks, 0);
    assert_eq!(m2.size_bytes, 0);
    let out = fx.path("out2");
    restore(&fx.repo, &m2.id, &out);
    assert!(fs::read(out.join(rel(&big))).unwrap() == first_content);
    check_ok(&fx.repo);
    // The cache's name does not show the dedup key.
    let key = fx.repo.dedup().unwrap().key.clone();
    for e in fs::read_dir(fx.path("cache")).unwrap().flatten() {
        let name = e.file_name().into_string().unwrap();
        assert!(!key.contains(&name[6..name.len() - 6]), "{name}");
    }

    // Rewritten with the same size and its old mtime put back: the ctime
    // moved, so it is read again.
    let mtime = filetime::FileTime::from_last_modification_time(&fs::metadata(&big).unwrap());
    let mut second_content = first_content.clone();
    second_content[1 << 20] ^= 0xff;
    fs::write(&big, &second_content).unwrap();
    filetime::set_file_mtime(&big, mtime).unwrap();
    let s3 = fx.backup_with(&[&src], "lab1", false);
    assert_eq!(s3.reused_files, 0);
    let m3 = s3.snapshot.unwrap();
    assert!(m3.dedup.as_ref().unwrap().new_chunks >= 1);
    let out = fx.path("out3");
    restore(&fx.repo, &m3.id, &out);
    assert!(fs::read(out.join(rel(&big))).unwrap() == second_content);

    // --no-cache reads it; the one after may reuse it again.
    assert_eq!(fx.backup_with(&[&src], "lab1", true).reused_files, 0);
    assert_eq!(fx.backup_with(&[&src], "lab1", false).reused_files, 1);

    // An entry naming a chunk the repository lacks costs only a read.
    let cache_files: Vec<_> = fs::read_dir(fx.path("cache")).unwrap().flatten().collect();
    assert_eq!(cache_files.len(), 1);
    let cache_file = cache_files[0].path();
    let text = fs::read_to_string(&cache_file).unwrap();
    let at = text.find("\"chunks\":\"").unwrap() + 10;
    let mut forged = text.clone().into_bytes();
    forged[at] = if forged[at] == b'0' { b'1' } else { b'0' };
    fs::write(&cache_file, &forged).unwrap();
    let s = fx.backup_with(&[&src], "lab1", false);
    assert_eq!(s.reused_files, 0);
    let out = fx.path("out5");
    restore(&fx.repo, &s.snapshot.unwrap().id, &out);
    assert!(fs::read(out.join(rel(&big))).unwrap() == second_content);
    check_ok(&fx.repo);
}

/// The chunk ids of a snapshot's `manifest.chunks`.
fn manifest_chunks(fx: &Dedup, meta: &SnapshotMeta) -> Vec<String> {
    let text = fs::read_to_string(
        fx.path("repo/snapshots")
            .join(&meta.id)
            .join("manifest.chunks"),
    )
    .unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("backupkit-chunks 1"));
    lines
        .map(|l| l.split(' ').next().unwrap().to_owned())
        .collect()
}

#[test]
fn a_manifest_is_stored_as_chunks_and_one_changed_file_changes_few() {
    let fx = Dedup::new();
    let src = fx.path("src");
    for d in 0..60 {
        let dir = src.join(format!("day{d:02}"));
        fs::create_dir_all(&dir).unwrap();
        for f in 0..100 {
            fs::write(dir.join(format!("run{f:03}.csv")), format!("{d},{f}\n")).unwrap();
        }
    }
    let first = fx.backup(&[&src], "lab1");
    let one = manifest_chunks(&fx, &first);
    assert!(one.len() >= 3, "{} chunks", one.len());

    // No change: the same manifest chunks, nothing stored.
    let again = fx.backup(&[&src], "lab1");
    assert_eq!(manifest_chunks(&fx, &again), one);
    assert_eq!(again.size_bytes, 0);

    // One file changed in the middle of the tree: its line and the chunks
    // around it are new, the rest of the manifest is not stored again.
    fs::write(src.join("day30/run050.csv"), "changed\n").unwrap();
    let changed = fx.backup(&[&src], "lab1");
    let two = manifest_chunks(&fx, &changed);
    let new = two.iter().filter(|c| !one.contains(c)).count();
    assert!(
        (1..=2).contains(&new),
        "{new} of {} manifest chunks are new",
        two.len()
    );
    // And it reads back: the changed entry is listed with its new size.
    let mut size = None;
    fx.repo
        .list_entries(&changed, &mut |e| {
            if e.path.ends_with("day30/run050.csv") {
                size = Some(e.size);
            }
            Ok(())
        })
        .unwrap();
    assert_eq!(size, Some(8));
    check_ok(&fx.repo);
}
