//! The engines against a real local repository: what goes in comes out,
//! damage is found, restore stays inside its target, and concurrent or
//! interrupted runs never hurt what was stored.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use backup_core::archive::Compression;
use backup_core::{
    BackupOptions, Cancel, CheckOptions, Error, Event, NoProgress, Registry, Repository,
    RestoreOptions, SnapshotStatus,
};

#[path = "engine/dedup.rs"]
mod dedup;
#[path = "engine/dedup_prune.rs"]
mod dedup_prune;
#[path = "engine/dedup_repo.rs"]
mod dedup_repo;
#[path = "engine/fleet.rs"]
mod fleet;
#[path = "engine/hostile.rs"]
mod hostile;
#[path = "engine/mirror.rs"]
mod mirror;
#[path = "engine/schedule.rs"]
mod schedule;
#[path = "engine/sessions.rs"]
mod sessions;

fn registry() -> Arc<Registry> {
    let mut r = Registry::new();
    backup_targets::register(&mut r);
    backup_archive::register(&mut r);
    Arc::new(r)
}

struct Fixture {
    dir: tempfile::TempDir,
    repo: Repository,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init(registry(), dir.path().join("repo").to_str().unwrap()).unwrap();
        Self { dir, repo }
    }
    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }
    fn backup(&self, paths: &[&Path]) -> backup_core::BackupSummary {
        self.backup_with(paths, |_| {})
    }
    fn backup_with(
        &self,
        paths: &[&Path],
        tweak: impl FnOnce(&mut BackupOptions),
    ) -> backup_core::BackupSummary {
        let mut opts = BackupOptions {
            paths: paths.iter().map(|p| p.to_path_buf()).collect(),
            ..BackupOptions::default()
        };
        tweak(&mut opts);
        self.repo
            .backup(&opts, &NoProgress, &Cancel::new())
            .unwrap()
    }
    fn restore(&self, id: &str, target: &Path) -> backup_core::Result<backup_core::RestoreSummary> {
        let opts = RestoreOptions {
            target: target.to_path_buf(),
            ..RestoreOptions::default()
        };
        self.repo.restore(id, &opts, &NoProgress, &Cancel::new())
    }
    fn check_all(&self) -> backup_core::CheckReport {
        let opts = CheckOptions {
            read_data: true,
            ..CheckOptions::default()
        };
        self.repo.check(&opts, &NoProgress, &Cancel::new()).unwrap()
    }
    fn snapshot_dir(&self, id: &str) -> PathBuf {
        self.path("repo/snapshots").join(id)
    }
    /// The paths of a snapshot's entries, as every reader lists them.
    fn listed_paths(&self, meta: &backup_core::SnapshotMeta) -> Vec<String> {
        let mut listed = Vec::new();
        self.repo
            .list_entries(meta, &mut |e| {
                listed.push(e.path.clone());
                Ok(())
            })
            .unwrap();
        listed
    }
}

fn rel(p: &Path) -> &Path {
    p.strip_prefix("/").unwrap()
}

fn pseudo_random(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A tree with every kind of entry a lab's data has.
fn make_tree(root: &Path) {
    fs::create_dir_all(root.join("csv/deep/er")).unwrap();
    fs::create_dir_all(root.join("empty_dir")).unwrap();
    fs::write(root.join("csv/a.csv"), "t,v\n0,1\n".repeat(1000)).unwrap();
    fs::write(root.join("csv/deep/er/b.csv"), "x\n").unwrap();
    fs::write(root.join("empty.txt"), "").unwrap();
    fs::write(root.join("video.bin"), pseudo_random(3 << 20, 1)).unwrap();
    fs::write(root.join("ünïcødé 😀 name.json"), "{}").unwrap();
    let long_dir = "d".repeat(120);
    let long_name = format!("{}.csv", "n".repeat(250));
    fs::create_dir_all(root.join(&long_dir)).unwrap();
    fs::write(root.join(&long_dir).join(&long_name), "long").unwrap();
    std::os::unix::fs::symlink("csv/a.csv", root.join("link_to_a")).unwrap();
    std::os::unix::fs::symlink("../nowhere/at/all", root.join("dangling")).unwrap();
    fs::hard_link(root.join("csv/a.csv"), root.join("hard_a.csv")).unwrap();
    fs::set_permissions(
        root.join("csv/deep/er/b.csv"),
        fs::Permissions::from_mode(0o640),
    )
    .unwrap();
    fs::set_permissions(root.join("empty_dir"), fs::Permissions::from_mode(0o700)).unwrap();
    let t = filetime::FileTime::from_unix_time(1_600_000_000, 123_456_789);
    filetime::set_file_mtime(root.join("csv/a.csv"), t).unwrap();
}

/// Compares two trees: kinds, content, modes, mtimes (ns), link targets,
/// and hard links (same inode in the copy).
fn assert_same_tree(a: &Path, b: &Path) {
    let mut names = Vec::new();
    collect(a, Path::new(""), &mut names);
    let mut names_b = Vec::new();
    collect(b, Path::new(""), &mut names_b);
    assert_eq!(names, names_b);
    assert_same_entries(a, b, &names, true);
}

/// Compares the entries `names` of two trees: kinds, link targets, modes,
/// mtimes (ns), content and, with `hard_links`, link counts.
fn assert_same_entries(a: &Path, b: &Path, names: &[PathBuf], hard_links: bool) {
    for n in names {
        let (pa, pb) = (a.join(n), b.join(n));
        let (ma, mb) = (
            fs::symlink_metadata(&pa).unwrap(),
            fs::symlink_metadata(&pb).unwrap(),
        );
        assert_eq!(ma.file_type(), mb.file_type(), "{}", n.display());
        if ma.file_type().is_symlink() {
            assert_eq!(
                fs::read_link(&pa).unwrap(),
                fs::read_link(&pb).unwrap(),
                "{}",
                n.display()
            );
            continue;
        }
        assert_eq!(
            ma.mode() & 0o7777,
            mb.mode() & 0o7777,
            "mode of {}",
            n.display()
        );
        assert_eq!(
            (ma.mtime(), ma.mtime_nsec()),
            (mb.mtime(), mb.mtime_nsec()),
            "mtime of {:?}",
            n.display()
        );
        if ma.is_file() {
            assert_eq!(
                fs::read(&pa).unwrap(),
                fs::read(&pb).unwrap(),
                "content of {}",
                n.display()
            );
            if hard_links {
                assert_eq!(ma.nlink(), mb.nlink(), "links of {}", n.display());
            }
        }
    }
}

fn collect(root: &Path, rel: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = fs::read_dir(root.join(rel)).unwrap().flatten().collect();
    entries.sort_by_key(std::fs::DirEntry::file_name);
    for e in entries {
        let r = rel.join(e.file_name());
        out.push(r.clone());
        if e.file_type().unwrap().is_dir() {
            collect(root, &r, out);
        }
    }
}

#[test]
fn round_trip_keeps_everything_for_every_compression() {
    for compression in [Compression::Gzip, Compression::Zstd, Compression::None] {
        let fx = Fixture::new();
        let src = fx.path("src");
        make_tree(&src);
        let s = fx.backup_with(&[&src], |o| o.compression = compression);
        assert!(s.warnings.is_empty(), "{:?}", s.warnings);
        let meta = s.snapshot.unwrap();
        assert_eq!(meta.status, SnapshotStatus::Success);
        assert_eq!(meta.compression, compression);
        assert_eq!(meta.file_count, 6, "hard link counted once");
        assert!(
            fx.snapshot_dir(&meta.id)
                .join(compression.data_object_name())
                .is_file()
        );
        let out = fx.path("out");
        let r = fx.restore(&meta.id, &out).unwrap();
        assert_eq!(r.files, 6);
        assert_same_tree(&src, &out.join(rel(&src)));
        assert!(fx.check_all().is_ok());
    }
}

/// An archive snapshot's manifest is zstd-compressed and does not spell a
/// directory out for each of its files: a line whose entry is in the
/// directory of the line before gives only its name. Every reader gets
/// whole paths back.
#[test]
fn an_archive_manifest_is_compressed_and_names_siblings_by_name() {
    let fx = Fixture::new();
    let src = fx.path("src");
    make_tree(&src);
    let many = src.join("csv/deep/many");
    fs::create_dir_all(&many).unwrap();
    for i in 0..500 {
        fs::write(many.join(format!("f{i:04}.csv")), format!("{i}\n")).unwrap();
    }
    let meta = fx.backup(&[&src]).snapshot.unwrap();
    assert_eq!(meta.format, backup_core::snapshot::SNAPSHOT_FORMAT);
    assert_eq!(meta.manifest_name(), "manifest.jsonl.zst");
    let dir = fx.snapshot_dir(&meta.id);
    assert!(!dir.join("manifest.jsonl").exists());
    let text = manifest_text(&dir);
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["backupkit_manifest"], 2);
    assert_eq!(lines[0]["snapshot"], meta.id.as_str());
    let named = lines[1..]
        .iter()
        .filter(|l| l["name"].as_str().is_some_and(|n| n.starts_with("f0")))
        .count();
    assert_eq!(named, 499, "the first file of many/ gives its path");
    // many/'s path: on its own line and on its first file's, nowhere else.
    assert_eq!(text.matches("csv/deep/many").count(), 2, "{text}");
    let stored = fs::metadata(dir.join("manifest.jsonl.zst")).unwrap().len();
    assert!(stored * 4 < text.len() as u64, "{stored} of {}", text.len());

    let listed = fx.listed_paths(&meta);
    assert_eq!(listed.len() as u64, meta.entry_count);
    let prefix = format!("{}/csv/deep/many", rel(&src).display());
    for i in 0..500 {
        let want = format!("{prefix}/f{i:04}.csv");
        assert!(listed.contains(&want), "{want} not listed");
    }
    assert!(listed.contains(&format!("{}/hard_a.csv", rel(&src).display())));
    let out = fx.path("out");
    fx.restore(&meta.id, &out).unwrap();
    assert_same_tree(&src, &out.join(rel(&src)));
    assert!(fx.check_all().is_ok());
}

#[test]
fn several_paths_excludes_and_exclude_file() {
    let fx = Fixture::new();
    let (a, b) = (fx.path("a"), fx.path("b"));
    fs::create_dir_all(a.join("cache")).unwrap();
    fs::create_dir_all(&b).unwrap();
    fs::write(a.join("keep.csv"), "1").unwrap();
    fs::write(a.join("skip.tmp"), "1").unwrap();
    fs::write(a.join("cache/x.csv"), "1").unwrap();
    fs::write(b.join("keep.json"), "1").unwrap();
    fs::write(b.join("also.lock"), "1").unwrap();
    let ex_file = fx.path("excludes.txt");
    fs::write(&ex_file, "# comment\n*.lock\n\n").unwrap();
    let s = fx.backup_with(&[&a, &b, &a.join("keep.csv")], |o| {
        o.excludes = vec!["*.tmp".into(), "cache/".into()];
        o.exclude_files = vec![ex_file.clone()];
        o.tags = vec!["raw".into()];
    });
    let meta = s.snapshot.unwrap();
    assert_eq!(meta.paths.len(), 2, "nested path dropped: {:?}", meta.paths);
    assert_eq!(meta.tags, vec!["raw".to_owned()]);
    let listed = fx.listed_paths(&meta);
    let names: Vec<&str> = listed
        .iter()
        .map(|p| p.rsplit('/').next().unwrap())
        .collect();
    assert_eq!(names, ["a", "keep.csv", "b", "keep.json"], "{listed:?}");
}

/// A progress hook that edits the tree when the backup reaches a file:
/// deterministic stand-in for another process writing meanwhile.
fn backup_with_hook(
    fx: &Fixture,
    src: &Path,
    hook: impl Fn(&str) + Send + Sync,
) -> backup_core::BackupSummary {
    let progress = move |e: &Event| {
        if let Event::File { path, .. } = e {
            hook(path);
        }
    };
    let opts = BackupOptions {
        paths: vec![src.to_path_buf()],
        ..BackupOptions::default()
    };
    fx.repo.backup(&opts, &progress, &Cancel::new()).unwrap()
}

/// A file replaced by a symlink after its directory was listed is not read
/// through the link: files are opened relative to their directory, without
/// following a link, so a backup never stores what the link points to.
#[test]
fn a_file_swapped_for_a_symlink_while_backing_up_is_not_followed() {
    let fx = Fixture::new();
    let src = fx.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a.csv"), "first").unwrap();
    fs::write(src.join("b.csv"), "plain data").unwrap();
    let secret = fx.path("secret.txt");
    fs::write(&secret, "SECRET-OUTSIDE-THE-SOURCE").unwrap();
    let b = src.join("b.csv");
    let s = backup_with_hook(&fx, &src, |path| {
        if path.ends_with("a.csv") {
            fs::remove_file(&b).unwrap();
            std::os::unix::fs::symlink(&secret, &b).unwrap();
        }
    });
    let meta = s.snapshot.unwrap();
    assert_eq!(meta.status, SnapshotStatus::Incomplete);
    assert!(
        s.warnings
            .iter()
            .any(|w| w.path.ends_with("b.csv") && w.message.contains("cannot read")),
        "{:?}",
        s.warnings
    );
    let data = fs::read(fx.snapshot_dir(&meta.id).join("files.tar.gz")).unwrap();
    let mut tar = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(data.as_slice()), &mut tar)
        .unwrap();
    assert!(
        !tar.windows(6).any(|w| w == b"SECRET"),
        "the link's target was stored"
    );
    let out = fx.path("out");
    fx.restore(&meta.id, &out).unwrap();
    assert_eq!(
        fs::read(out.join(rel(&src)).join("a.csv")).unwrap(),
        b"first"
    );
    assert!(!out.join(rel(&src)).join("b.csv").exists());
}

#[test]
fn vanished_and_changed_files_are_named_and_make_the_snapshot_incomplete() {
    let fx = Fixture::new();
    let src = fx.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a.csv"), "first").unwrap();
    fs::write(src.join("m.csv"), "grows while read").unwrap();
    fs::write(src.join("z.csv"), "goes away").unwrap();
    let (m, z) = (src.join("m.csv"), src.join("z.csv"));
    let s = backup_with_hook(&fx, &src, |path| {
        if path.ends_with("a.csv") {
            // After the directory was listed and stat'ed: z vanishes and m
            // changes before either is opened.
            fs::remove_file(&z).unwrap();
            fs::write(&m, "grows while read, much more than before").unwrap();
        }
    });
    let warned: Vec<&str> = s.warnings.iter().map(|w| w.path.as_str()).collect();
    assert!(
        warned.iter().any(|p| p.ends_with("z.csv")),
        "{:?}",
        s.warnings
    );
    assert!(
        warned.iter().any(|p| p.ends_with("m.csv")),
        "{:?}",
        s.warnings
    );
    assert!(s.is_incomplete());
    let meta = s.snapshot.unwrap();
    assert_eq!(meta.status, SnapshotStatus::Incomplete);
    assert_eq!(meta.warning_count, 2);
    assert!(meta.error_message.is_some());
    // The incomplete snapshot is still whole and verifiable.
    assert!(fx.check_all().is_ok());
}

#[test]
fn a_file_that_shrinks_is_padded_and_reported() {
    let fx = Fixture::new();
    let src = fx.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a.csv"), "x").unwrap();
    fs::write(src.join("b.bin"), vec![7u8; 100_000]).unwrap();
    let b = src.join("b.bin");
    let s = backup_with_hook(&fx, &src, |path| {
        if path.ends_with("a.csv") {
            fs::write(&b, vec![7u8; 10]).unwrap();
        }
    });
    assert!(
        s.warnings
            .iter()
            .any(|w| w.path.ends_with("b.bin") && w.message.contains("shrank")),
        "{:?}",
        s.warnings
    );
    let report = fx.check_all();
    assert!(report.is_ok(), "{:?}", report.problems);
}

#[test]
fn cancel_leaves_no_snapshot_and_no_leftovers() {
    let fx = Fixture::new();
    let src = fx.path("src");
    fs::create_dir_all(&src).unwrap();
    for i in 0..50 {
        fs::write(src.join(format!("f{i:02}")), "data").unwrap();
    }
    let cancel = Cancel::new();
    let c2 = cancel.clone();
    let progress = move |e: &Event| {
        if matches!(e, Event::File { path, .. } if path.ends_with("f10")) {
            c2.cancel();
        }
    };
    let opts = BackupOptions {
        paths: vec![src.clone()],
        ..BackupOptions::default()
    };
    let r = fx.repo.backup(&opts, &progress, &cancel);
    assert!(matches!(r, Err(Error::Cancelled)), "{r:?}");
    assert!(fx.repo.snapshots().unwrap().is_empty());
    assert!(fx.repo.unfinished().unwrap().is_empty());
}

#[test]
fn check_finds_flipped_truncated_and_missing_data_and_a_lying_manifest() {
    let fx = Fixture::new();
    let src = fx.path("src");
    make_tree(&src);
    let ids: Vec<String> = (0..4)
        .map(|_| fx.backup(&[&src]).snapshot.unwrap().id)
        .collect();
    let data = |id: &str| fx.snapshot_dir(id).join("files.tar.gz");

    let mut bytes = fs::read(data(&ids[0])).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x20;
    fs::write(data(&ids[0]), &bytes).unwrap();

    let bytes = fs::read(data(&ids[1])).unwrap();
    fs::write(data(&ids[1]), &bytes[..bytes.len() - 100]).unwrap();

    fs::remove_file(data(&ids[2])).unwrap();

    // A manifest edited consistently with its checksum record, so only the
    // comparison with the archive can catch it.
    let dir = fx.snapshot_dir(&ids[3]);
    let text = manifest_text(&dir);
    assert!(text.contains("\"size\":3145728"), "{text}");
    write_manifest_text(&dir, &text.replace("\"size\":3145728", "\"size\":3145729"));
    reseal(&dir);

    let report = fx.check_all();
    let damaged: Vec<&str> = report
        .problems
        .iter()
        .map(|p| p.snapshot.as_str())
        .collect();
    assert_eq!(
        damaged,
        ids.iter().map(String::as_str).collect::<Vec<_>>(),
        "{:?}",
        report.problems
    );
    for p in &report.problems {
        assert!(
            p.message.contains("files.tar.gz") || p.message.contains("manifest"),
            "{p:?}"
        );
    }
    // Without --read-data, the truncated and missing objects are still found.
    let quick = fx
        .repo
        .check(&CheckOptions::default(), &NoProgress, &Cancel::new())
        .unwrap();
    let quick_ids: Vec<&str> = quick.problems.iter().map(|p| p.snapshot.as_str()).collect();
    assert!(
        quick_ids.contains(&ids[1].as_str()) && quick_ids.contains(&ids[2].as_str()),
        "{quick:?}"
    );
}

/// Makes a snapshot directory consistent again after an edit, as an
/// attacker who can recompute every checksum would: each object's record,
/// `checksum` and `size_bytes`, the counts from the manifest, and
/// `SHA256SUMS` with `snapshot.json`'s own SHA-256. What is left for the
/// reader to find is only what no checksum can vouch for.
fn reseal(dir: &Path) {
    let path = dir.join("snapshot.json");
    let mut meta: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    for o in meta["objects"].as_array_mut().unwrap() {
        let body = fs::read(dir.join(o["name"].as_str().unwrap())).unwrap();
        o["size"] = body.len().into();
        o["sha256"] = sha256_hex(&body).into();
    }
    let data = meta["files_included"][0].as_str().unwrap().to_owned();
    let body = fs::read(dir.join(&data)).unwrap();
    meta["checksum"] = format!("sha256:{}", sha256_hex(&body)).into();
    meta["size_bytes"] = body.len().into();
    let (mut files, mut dirs, mut entries, mut bytes) = (0u64, 0u64, 0u64, 0u64);
    for line in manifest_text(dir).lines() {
        let Ok(e) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if e.get("snapshot").is_some() {
            continue; // the header line
        }
        entries += 1;
        match e["kind"].as_str() {
            Some("file") => {
                files += 1;
                bytes += e["size"].as_u64().unwrap_or(0);
            }
            Some("dir") => dirs += 1,
            _ => {}
        }
    }
    meta["file_count"] = files.into();
    meta["dir_count"] = dirs.into();
    meta["entry_count"] = entries.into();
    meta["source_bytes"] = bytes.into();
    let json = serde_json::to_vec_pretty(&meta).unwrap();
    fs::write(&path, &json).unwrap();
    let mut sums = String::new();
    for o in meta["objects"].as_array().unwrap() {
        for part in [
            o["sha256"].as_str().unwrap(),
            "  ",
            o["name"].as_str().unwrap(),
            "\n",
        ] {
            sums.push_str(part);
        }
    }
    sums.push_str(&sha256_hex(&json));
    sums.push_str("  snapshot.json\n");
    fs::write(dir.join("SHA256SUMS"), sums).unwrap();
}

/// The manifest of the archive snapshot in `dir`, decompressed, as stored
/// (`manifest.jsonl.zst`, or a forged or older snapshot's `manifest.jsonl`).
fn manifest_text(dir: &Path) -> String {
    match fs::read(dir.join("manifest.jsonl.zst")) {
        Ok(stored) => String::from_utf8(zstd::decode_all(stored.as_slice()).unwrap()).unwrap(),
        Err(_) => fs::read_to_string(dir.join("manifest.jsonl")).unwrap(),
    }
}

/// Replaces the manifest of the archive snapshot in `dir` with `text`
/// (checksums are left to [`reseal`]).
fn write_manifest_text(dir: &Path, text: &str) {
    let stored = zstd::encode_all(text.as_bytes(), 3).unwrap();
    fs::write(dir.join("manifest.jsonl.zst"), stored).unwrap();
}

fn sha256_hex(body: &[u8]) -> String {
    use backup_core::hash::Hashers;
    let mut h = backup_archive::StdHashers.sha256();
    h.update(body);
    h.finish_hex()
}

type Forged<'a> = (
    &'a str,
    backup_core::archive::EntryKind,
    Option<&'a str>,
    &'a [u8],
);

/// A hand-made snapshot whose archive and manifest agree and whose
/// checksums are right: only restore's own path rules stand between it and
/// the filesystem.
fn forge_snapshot(fx: &Fixture, entries: &[Forged<'_>]) -> String {
    use backup_core::archive::{Entry, EntryKind};
    let id = "20200101_000000_000_files_forged".to_owned();
    let dir = fx.snapshot_dir(&id);
    fs::create_dir_all(&dir).unwrap();
    let mut raw = tar::Builder::new(Vec::new());
    let mut manifest = format!("{{\"backupkit_manifest\":1,\"snapshot\":\"{id}\"}}\n");
    for (path, kind, link, content) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_mtime(1_600_000_000);
        h.set_size(content.len() as u64);
        h.set_entry_type(match kind {
            EntryKind::File => tar::EntryType::Regular,
            EntryKind::Dir => tar::EntryType::Directory,
            EntryKind::Symlink => tar::EntryType::Symlink,
            EntryKind::Hardlink => tar::EntryType::Link,
        });
        // Raw names: the tar crate's checked setters refuse `..`, which is
        // the point of the exercise.
        let name = h.as_old_mut().name.as_mut();
        name[..path.len()].copy_from_slice(path.as_bytes());
        if let Some(l) = link {
            h.as_old_mut().linkname[..l.len()].copy_from_slice(l.as_bytes());
        }
        h.set_cksum();
        raw.append(&h, *content).unwrap();
        let blake = (*kind == EntryKind::File).then(|| {
            use backup_core::hash::Hashers;
            let mut b = backup_archive::StdHashers.blake3();
            b.update(content);
            b.finish_hex()
        });
        let e = Entry {
            path: (*path).to_owned(),
            kind: *kind,
            size: content.len() as u64,
            mtime: 1_600_000_000,
            mtime_nsec: 0,
            mode: 0o644,
            link: link.map(str::to_owned),
            blake3: blake,
        };
        manifest.push_str(&serde_json::to_string(&e).unwrap());
        manifest.push('\n');
    }
    let tar_bytes = raw.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, &tar_bytes).unwrap();
    let gz = gz.finish().unwrap();
    fs::write(dir.join("files.tar.gz"), &gz).unwrap();
    fs::write(dir.join("manifest.jsonl"), &manifest).unwrap();
    let meta = serde_json::json!({
        "format": 2, "id": id, "timestamp": "2020-01-01T00:00:00Z", "kind": "files",
        "status": "success", "error_message": null, "host": "h", "paths": ["/x"],
        "tool_version": "test", "duration_seconds": 0.0, "size_bytes": gz.len(),
        "source_bytes": 0, "checksum": format!("sha256:{}", sha256_hex(&gz)),
        "files_included": ["files.tar.gz"], "file_count": 0, "dir_count": 0, "entry_count": 0,
        "compressed": true, "compression": "gzip", "level": 6, "encrypted": false,
        "objects": [
            {"name": "files.tar.gz", "size": gz.len(), "sha256": sha256_hex(&gz)},
            {"name": "manifest.jsonl", "size": manifest.len(), "sha256": sha256_hex(manifest.as_bytes())},
        ],
    });
    fs::write(
        dir.join("snapshot.json"),
        serde_json::to_vec(&meta).unwrap(),
    )
    .unwrap();
    reseal(&dir);
    id
}

#[test]
fn restore_refuses_to_write_outside_its_target() {
    use backup_core::archive::EntryKind::{Dir, File, Hardlink, Symlink};
    let cases: Vec<(&str, Vec<Forged<'_>>)> = vec![
        ("dotdot", vec![("../escaped.txt", File, None, b"pwned")]),
        (
            "nested dotdot",
            vec![("a/../../escaped.txt", File, None, b"pwned")],
        ),
        (
            "absolute",
            vec![("/tmp/backupkit-escaped.txt", File, None, b"pwned")],
        ),
        (
            "hard link out",
            vec![("h", Hardlink, Some("../../outside/victim.txt"), b"")],
        ),
        (
            "write through own symlink",
            vec![
                ("d", Dir, None, b""),
                ("d/l", Symlink, Some("../../../outside"), b""),
                ("d/l/victim.txt", File, None, b"pwned"),
            ],
        ),
    ];
    for (what, entries) in cases {
        let fx = Fixture::new();
        let outside = fx.path("outside");
        fs::create_dir_all(&outside).unwrap();
        fs::write(outside.join("victim.txt"), "safe").unwrap();
        let id = forge_snapshot(&fx, &entries);
        // check applies the same rules as restore: every forged snapshot is
        // a problem, though every checksum in it is right.
        let report = fx.check_all();
        assert_eq!(report.problems.len(), 1, "{what}: {report:?}");
        let target = fx.path("restore/here");
        let r = fx.restore(&id, &target);
        assert!(
            matches!(r, Err(Error::UnsafePath { .. } | Error::Integrity { .. })),
            "{what}: {r:?}"
        );
        // Refused in the manifest pass, before anything was written.
        assert!(!target.exists(), "{what}: restore wrote before refusing");
        assert_eq!(
            fs::read_to_string(outside.join("victim.txt")).unwrap(),
            "safe",
            "{what}"
        );
        assert!(
            !fx.path("restore/escaped.txt").exists() && !fx.path("escaped.txt").exists(),
            "{what}"
        );
        assert!(!Path::new("/tmp/backupkit-escaped.txt").exists(), "{what}");
    }
}

#[test]
fn restore_never_writes_through_a_symlink_already_in_the_target() {
    let fx = Fixture::new();
    let src = fx.path("src");
    fs::create_dir_all(src.join("sub")).unwrap();
    fs::write(src.join("sub/f.csv"), "new").unwrap();
    let id = fx.backup(&[&src]).snapshot.unwrap().id;
    let outside = fx.path("outside");
    fs::create_dir_all(&outside).unwrap();
    let target = fx.path("t");
    let parent = target.join(rel(&src));
    fs::create_dir_all(&parent).unwrap();
    std::os::unix::fs::symlink(&outside, parent.join("sub")).unwrap();
    for overwrite in [false, true] {
        let opts = RestoreOptions {
            target: target.clone(),
            overwrite,
            ..RestoreOptions::default()
        };
        let r = fx.repo.restore(&id, &opts, &NoProgress, &Cancel::new());
        if overwrite {
            // The snapshot has a directory there: the link is replaced by a
            // real directory, never followed.
            r.unwrap();
            assert!(fs::symlink_metadata(parent.join("sub")).unwrap().is_dir());
        } else {
            assert!(r.is_err(), "{r:?}");
        }
        assert!(!outside.join("f.csv").exists(), "wrote through the symlink");
    }
}

#[test]
fn a_tampered_manifest_is_refused_before_anything_is_written() {
    let fx = Fixture::new();
    let src = fx.path("src");
    make_tree(&src);
    let id = fx.backup(&[&src]).snapshot.unwrap().id;
    let dir = fx.snapshot_dir(&id);
    let original = manifest_text(&dir);
    // A file given by its whole path (the others in its directory give
    // their name).
    let first_file = original
        .lines()
        .find(|l| l.contains("\"kind\":\"file\"") && l.contains("\"path\""))
        .unwrap();
    let path: serde_json::Value = serde_json::from_str(first_file).unwrap();
    let evil = original.replacen(path["path"].as_str().unwrap(), "../../evil.csv", 1);
    write_manifest_text(&dir, &evil);
    let target = fx.path("t");
    // Checksum mismatch first...
    let r = fx.restore(&id, &target);
    assert!(matches!(r, Err(Error::Integrity { .. })), "{r:?}");
    assert!(
        !target.exists(),
        "restore wrote before verifying the manifest"
    );
    // ...and with the checksum forged too, the path rule.
    reseal(&fx.snapshot_dir(&id));
    let r = fx.restore(&id, &target);
    assert!(matches!(r, Err(Error::UnsafePath { .. })), "{r:?}");
    assert!(!target.exists());
    assert!(!fx.path("evil.csv").exists());
}

#[test]
fn damaged_content_is_not_left_behind_by_restore() {
    let fx = Fixture::new();
    let src = fx.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("only.csv"), "a,b\n".repeat(10_000)).unwrap();
    let id = fx
        .backup_with(&[&src], |o| o.compression = Compression::None)
        .snapshot
        .unwrap()
        .id;
    let data = fx.snapshot_dir(&id).join("files.tar");
    let mut bytes = fs::read(&data).unwrap();
    let pos = bytes.windows(4).position(|w| w == b"a,b\n").unwrap() + 100;
    bytes[pos] = b'X';
    fs::write(&data, &bytes).unwrap();
    let target = fx.path("t");
    let r = fx.restore(&id, &target);
    assert!(matches!(r, Err(Error::Integrity { .. })), "{r:?}");
    assert!(!target.join(rel(&src)).join("only.csv").exists());
}

#[test]
fn two_backups_at_once_both_succeed() {
    let fx = Arc::new(Fixture::new());
    let src = fx.path("src");
    make_tree(&src);
    // A rendezvous inside both backups (at their first stored file, with
    // their locks held): they provably overlap, and a backup that waited for
    // the other to finish would time out here instead of passing.
    let met = Arc::new((Mutex::new(0u32), std::sync::Condvar::new()));
    let handles: Vec<_> = (0..2)
        .map(|_| {
            let fx = Arc::clone(&fx);
            let src = src.clone();
            let met = Arc::clone(&met);
            std::thread::spawn(move || {
                let arrived = std::sync::atomic::AtomicBool::new(false);
                let progress = move |e: &Event| {
                    if matches!(e, Event::File { .. })
                        && !arrived.swap(true, std::sync::atomic::Ordering::SeqCst)
                    {
                        let (count, cv) = &*met;
                        let mut n = count.lock().unwrap();
                        *n += 1;
                        cv.notify_all();
                        let (n, timeout) = cv
                            .wait_timeout_while(n, std::time::Duration::from_secs(60), |n| *n < 2)
                            .unwrap();
                        assert!(
                            !timeout.timed_out() && *n == 2,
                            "the backups did not overlap"
                        );
                    }
                };
                let opts = BackupOptions {
                    paths: vec![src],
                    ..BackupOptions::default()
                };
                fx.repo
                    .backup(&opts, &progress, &Cancel::new())
                    .unwrap()
                    .snapshot
                    .unwrap()
                    .id
            })
        })
        .collect();
    let mut ids: Vec<String> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 2);
    assert_eq!(fx.repo.snapshots().unwrap().len(), 2);
    assert!(fx.check_all().is_ok());
    assert!(
        fx.repo.locks().unwrap().is_empty(),
        "locks were not released"
    );
}

#[test]
fn an_exclusive_lock_conflicts_and_fails_clearly() {
    let fx = Fixture::new();
    let shared = fx.repo.lock_shared(Some("x".into())).unwrap();
    match fx.repo.lock_exclusive() {
        Err(Error::Locked { holder }) => assert!(holder.contains("shared lock"), "{holder}"),
        other => panic!("{other:?}"),
    }
    drop(shared);
    let excl = fx.repo.lock_exclusive().unwrap();
    assert!(matches!(
        fx.repo.lock_shared(None),
        Err(Error::Locked { .. })
    ));
    drop(excl);
    assert!(fx.repo.locks().unwrap().is_empty());
}

#[test]
fn forget_by_policy_groups_by_paths_never_empties_a_group_and_locks_exclusively() {
    use backup_core::forget::ForgetOptions;
    use backup_core::retention::KeepPolicy;
    let fx = Fixture::new();
    let (a, b) = (fx.path("a"), fx.path("b"));
    for d in [&a, &b] {
        fs::create_dir_all(d).unwrap();
        fs::write(d.join("f"), "x").unwrap();
    }
    let groups: [&[&Path]; 5] = [&[&a], &[&a], &[&b], &[&a, &b], &[&b, &a]];
    let ids: Vec<String> = groups
        .iter()
        .map(|g| fx.backup(g).snapshot.unwrap().id)
        .collect();
    let last1 = ForgetOptions {
        policy: KeepPolicy {
            last: 1,
            ..KeepPolicy::default()
        },
        ..ForgetOptions::default()
    };
    // A deleting command takes an exclusive lock: a backup holding a shared
    // one stops it before it deletes anything.
    {
        let _backup = fx.repo.lock_shared(Some("running".into())).unwrap();
        let r = fx.repo.forget_by_policy(&last1);
        assert!(matches!(r, Err(Error::Locked { .. })), "{r:?}");
        let r = fx.repo.forget(&ids[..1], false);
        assert!(matches!(r, Err(Error::Locked { .. })), "{r:?}");
        assert_eq!(fx.repo.snapshots().unwrap().len(), 5);
    }
    // A tag no snapshot has would empty every group: refused, nothing gone.
    let no_such_tag = ForgetOptions {
        policy: KeepPolicy {
            tags: vec![vec!["no-such-tag".into()]],
            ..KeepPolicy::default()
        },
        ..ForgetOptions::default()
    };
    match fx.repo.forget_by_policy(&no_such_tag) {
        Err(Error::InvalidInput(m)) => assert!(m.contains("refusing to delete the last"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(fx.repo.snapshots().unwrap().len(), 5);
    // Groups are host and paths (in any order): a, b, and a+b.
    let planned = fx.repo.forget_by_policy(&last1).unwrap();
    assert_eq!(planned.len(), 3, "{planned:?}");
    let mut left: Vec<String> = fx
        .repo
        .snapshots()
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    left.sort();
    assert_eq!(left, [ids[1].clone(), ids[2].clone(), ids[4].clone()]);
}

#[test]
fn an_unreadable_lock_is_reported_as_such_and_unlock_removes_it() {
    let fx = Fixture::new();
    let locks = fx.path("repo/locks");
    for (name, body) in [("empty.json", ""), ("garbage.json", "{not json")] {
        fs::create_dir_all(&locks).unwrap();
        fs::write(locks.join(name), body).unwrap();
        // It blocks as an exclusive lock would, and says what it is.
        match fx.repo.lock_shared(None) {
            Err(Error::Locked { holder }) => {
                assert!(holder.contains("unreadable lock object"), "{holder}");
                assert!(holder.contains(name), "{holder}");
                assert!(!holder.contains("pid 0"), "{holder}");
            }
            other => panic!("{name}: {other:?}"),
        }
        // unlock without --remove-all removes it (and no live lock).
        let live = fx.repo.lock_shared(Some("x".into()));
        assert!(live.is_err());
        let removed = fx.repo.unlock(false).unwrap();
        assert_eq!(removed.len(), 1, "{name}: {removed:?}");
        assert!(removed[0].unreadable.is_some());
        assert!(fx.repo.locks().unwrap().is_empty());
        fx.repo.lock_shared(None).unwrap();
    }
}

#[test]
fn leftovers_are_invisible_and_removed_unless_a_live_lock_claims_them() {
    let fx = Fixture::new();
    let src = fx.path("src");
    make_tree(&src);
    let done = fx.backup(&[&src]).snapshot.unwrap().id;
    // Unfinished backups: data but no snapshot.json.
    let orphan = "20261124_000000_000_files_000001";
    let claimed = "20261124_000000_000_files_000002";
    for id in [orphan, claimed] {
        fs::create_dir_all(fx.snapshot_dir(id)).unwrap();
        fs::copy(
            fx.snapshot_dir(&done).join("files.tar.gz"),
            fx.snapshot_dir(id).join("files.tar.gz"),
        )
        .unwrap();
        fs::write(fx.snapshot_dir(id).join(".files.tar.gz.tmp-1"), "partial").unwrap();
    }
    assert_eq!(fx.repo.snapshots().unwrap().len(), 1);
    assert!(matches!(
        fx.repo.find_snapshot(orphan),
        Err(Error::SnapshotNotFound { .. })
    ));
    let _live = fx.repo.lock_shared(Some(claimed.into())).unwrap();
    let s = fx.backup(&[&src]);
    assert_eq!(s.removed_leftovers, vec![orphan.to_owned()]);
    assert!(!fx.snapshot_dir(orphan).exists());
    assert!(
        fx.snapshot_dir(claimed).join("files.tar.gz").exists(),
        "removed a running backup's data"
    );
}

#[test]
fn snapshots_are_found_by_prefix_and_latest() {
    let fx = Fixture::new();
    let src = fx.path("src");
    fs::create_dir_all(&src).unwrap();
    let a = fx.backup(&[&src]).snapshot.unwrap().id;
    let b = fx.backup(&[&src]).snapshot.unwrap().id;
    assert!(a < b);
    assert_eq!(fx.repo.find_snapshot("latest").unwrap().id, b);
    assert_eq!(fx.repo.find_snapshot(&a).unwrap().id, a);
    assert_eq!(fx.repo.find_snapshot(&b[..b.len() - 1]).unwrap().id, b);
    assert!(matches!(
        fx.repo.find_snapshot("2"),
        Err(Error::SnapshotAmbiguous { count: 2, .. })
    ));
    assert!(matches!(
        fx.repo.find_snapshot("../etc"),
        Err(Error::SnapshotNotFound { .. })
    ));
    let removed = fx.repo.forget(std::slice::from_ref(&a), false).unwrap();
    assert_eq!(removed, vec![a.clone()]);
    assert_eq!(fx.repo.snapshots().unwrap().len(), 1);
}

#[test]
fn restore_include_selects_a_subtree() {
    let fx = Fixture::new();
    let src = fx.path("src");
    make_tree(&src);
    let id = fx.backup(&[&src]).snapshot.unwrap().id;
    let target = fx.path("t");
    let opts = RestoreOptions {
        target: target.clone(),
        includes: vec!["deep".into(), "empty.txt".into()],
        overwrite: false,
    };
    let r = fx
        .repo
        .restore(&id, &opts, &NoProgress, &Cancel::new())
        .unwrap();
    assert_eq!(r.files, 2);
    let base = target.join(rel(&src));
    assert!(base.join("csv/deep/er/b.csv").is_file());
    assert!(base.join("empty.txt").is_file());
    assert!(!base.join("csv/a.csv").exists());
    assert!(!base.join("video.bin").exists());
}

#[test]
fn progress_reports_totals_files_and_finish() {
    let fx = Fixture::new();
    let src = fx.path("src");
    make_tree(&src);
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&events);
    let progress = move |e: &Event| sink.lock().unwrap().push(e.clone());
    let opts = BackupOptions {
        paths: vec![src.clone()],
        ..BackupOptions::default()
    };
    fx.repo.backup(&opts, &progress, &Cancel::new()).unwrap();
    let events = events.lock().unwrap();
    assert!(matches!(
        events.first(),
        Some(Event::Started {
            operation: "backup",
            snapshot: Some(_)
        })
    ));
    assert!(
        matches!(events.last(), Some(Event::Finished { files: 6, .. })),
        "{:?}",
        events.last()
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::Total { files: 6, .. }))
    );
    let files = events
        .iter()
        .filter(|e| matches!(e, Event::File { .. }))
        .count();
    assert!(files >= 12, "{files}");
}

#[test]
fn a_damaged_snapshot_json_blocks_nothing_else_and_is_reported() {
    let fx = Fixture::new();
    let src = fx.path("src");
    make_tree(&src);
    let good = fx.backup(&[&src]).snapshot.unwrap().id;
    let bad = fx.backup(&[&src]).snapshot.unwrap().id;
    fs::write(fx.snapshot_dir(&bad).join("snapshot.json"), "{ truncated").unwrap();

    let listing = fx.repo.list_snapshots().unwrap();
    let ids: Vec<&str> = listing.snapshots.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, [good.as_str()]);
    assert_eq!(listing.damaged.len(), 1);
    assert_eq!(listing.damaged[0].0, bad);
    // The healthy snapshot is still found and restored, by id and as latest.
    assert_eq!(fx.repo.find_snapshot("latest").unwrap().id, good);
    fx.restore(&good, &fx.path("out")).unwrap();
    // The damaged one is an integrity failure, by id and in check.
    assert!(matches!(
        fx.repo.find_snapshot(&bad),
        Err(Error::Integrity { .. })
    ));
    let report = fx.check_all();
    assert_eq!(report.problems.len(), 1);
    assert_eq!(report.problems[0].snapshot, bad);
    assert!(
        report.problems[0].message.contains("snapshot.json"),
        "{:?}",
        report.problems
    );
}

mod database_support {
    pub(crate) use super::database::{LinesSource, fixture};
}

mod database {
    //! The database snapshot engine, with a small source and target that
    //! stand in for an engine: what the engine itself guarantees (commit,
    //! damage found before loading, no overwrite, row counts checked, no
    //! trace of a failed dump). Real engines are tested in backup-db.

    use std::io::{Read, Write};
    use std::path::PathBuf;

    use backup_core::database::{DatabaseSource, DatabaseTarget, RowCounts};
    use backup_core::{Cancel, DatabaseBackupOptions, Error, NoProgress, Result};

    use super::Fixture;

    /// Dumps `rows` lines of text; fails after `fail_after` bytes if set.
    #[derive(Debug)]
    pub(crate) struct LinesSource {
        pub(crate) rows: u64,
        pub(crate) fail_after: Option<usize>,
    }

    impl DatabaseSource for LinesSource {
        fn engine(&self) -> &'static str {
            "lines"
        }
        fn describe(&self) -> String {
            "lines://test".into()
        }
        fn dump_name(&self) -> String {
            "lines.txt".into()
        }
        fn dump(&self, out: &mut dyn Write, _cancel: &Cancel) -> Result<RowCounts> {
            let mut written = 0;
            for i in 0..self.rows {
                let line = format!("row {i} {}\n", i * 31 % 977);
                written += line.len();
                if self.fail_after.is_some_and(|n| written > n) {
                    return Err(Error::Backend {
                        backend: "lines".into(),
                        message: "connection lost".into(),
                        source: None,
                    });
                }
                out.write_all(line.as_bytes())
                    .map_err(|e| Error::io("write", "dump", e))?;
            }
            Ok(RowCounts::from([("lines".to_owned(), self.rows)]))
        }
    }

    /// Loads into a file; counts its lines (minus `lose` to fake a bad load).
    #[derive(Debug)]
    struct LinesTarget {
        path: PathBuf,
        lose: u64,
    }

    impl LinesTarget {
        fn count(&self, path: &std::path::Path) -> RowCounts {
            let n = std::fs::read_to_string(path).unwrap().lines().count() as u64;
            RowCounts::from([("lines".to_owned(), n - self.lose)])
        }
    }

    impl DatabaseTarget for LinesTarget {
        fn describe(&self) -> String {
            self.path.display().to_string()
        }
        fn exists(&self) -> Result<bool> {
            Ok(self.path.exists())
        }
        fn load_verified(
            &self,
            dump: &mut dyn Read,
            _replace: bool,
            accept: &dyn Fn(&RowCounts) -> Result<()>,
            _c: &Cancel,
        ) -> Result<RowCounts> {
            let mut text = String::new();
            dump.read_to_string(&mut text)
                .map_err(|e| Error::io("read", "dump", e))?;
            let staged = self.path.with_extension("staged");
            std::fs::write(&staged, text).map_err(|e| Error::io("write", "target", e))?;
            let counts = self.count(&staged);
            if let Err(e) = accept(&counts) {
                std::fs::remove_file(&staged).unwrap();
                return Err(e);
            }
            std::fs::rename(&staged, &self.path).unwrap();
            Ok(counts)
        }
        fn verify(&self) -> Result<RowCounts> {
            Ok(self.count(&self.path))
        }
    }

    fn registry_with_lines(lose: u64) -> std::sync::Arc<backup_core::Registry> {
        let mut r = backup_core::Registry::new();
        backup_targets::register(&mut r);
        backup_archive::register(&mut r);
        r.register_database(
            "lines",
            |_| {
                Ok(std::sync::Arc::new(LinesSource {
                    rows: 50_000,
                    fail_after: None,
                }))
            },
            move |url| {
                Ok(std::sync::Arc::new(LinesTarget {
                    path: url.trim_start_matches("lines://").into(),
                    lose,
                }))
            },
        );
        std::sync::Arc::new(r)
    }

    pub(crate) fn fixture(lose: u64) -> (Fixture, backup_core::Repository) {
        let fx = Fixture::new();
        let repo = backup_core::Repository::open(
            registry_with_lines(lose),
            fx.path("repo").to_str().unwrap(),
        )
        .unwrap();
        (fx, repo)
    }

    #[test]
    fn dump_round_trip_is_plain_gzip_with_row_counts() {
        let (fx, repo) = fixture(0);
        let source = LinesSource {
            rows: 50_000,
            fail_after: None,
        };
        let meta = repo
            .backup_database(
                &source,
                &DatabaseBackupOptions::default(),
                &NoProgress,
                &Cancel::new(),
            )
            .unwrap();
        assert_eq!(meta.kind, backup_core::SnapshotKind::Database);
        let info = meta.database.clone().unwrap();
        assert_eq!(info.tables["lines"], 50_000);
        assert_eq!(meta.files_included, ["lines.txt.gz"]);
        // Readable with plain gunzip, as seed 001's backup_*.db.gz were.
        let gz = std::fs::read(fx.snapshot_dir(&meta.id).join("lines.txt.gz")).unwrap();
        let mut plain = String::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_string(&mut plain)
            .unwrap();
        assert_eq!(plain.lines().count(), 50_000);
        assert!(fx.check_all().is_ok());
        let out = fx.path("restored.txt");
        let url = format!("lines://{}", out.display());
        let r = repo
            .restore_database("latest", &url, false, &NoProgress, &Cancel::new())
            .unwrap();
        assert_eq!(r.tables["lines"], 50_000);
        assert_eq!(std::fs::read_to_string(&out).unwrap(), plain);
        // It exists now: no replacing without permission.
        let again = repo.restore_database("latest", &url, false, &NoProgress, &Cancel::new());
        assert!(
            matches!(again, Err(Error::DatabaseExists { .. })),
            "{again:?}"
        );
        repo.restore_database("latest", &url, true, &NoProgress, &Cancel::new())
            .unwrap();
        // A files restore of a database snapshot is refused, not attempted.
        let files = repo.restore(
            &meta.id,
            &backup_core::RestoreOptions {
                target: fx.path("dir"),
                ..Default::default()
            },
            &NoProgress,
            &Cancel::new(),
        );
        assert!(matches!(files, Err(Error::InvalidInput(_))), "{files:?}");
    }

    #[test]
    fn damage_is_found_before_anything_is_loaded() {
        let (fx, repo) = fixture(0);
        for compression in [
            backup_core::archive::Compression::Gzip,
            backup_core::archive::Compression::None,
        ] {
            let source = LinesSource {
                rows: 20_000,
                fail_after: None,
            };
            let opts = DatabaseBackupOptions {
                compression,
                ..Default::default()
            };
            let meta = repo
                .backup_database(&source, &opts, &NoProgress, &Cancel::new())
                .unwrap();
            let object = fx.snapshot_dir(&meta.id).join(&meta.files_included[0]);
            let mut bytes = std::fs::read(&object).unwrap();
            let mid = bytes.len() / 2;
            bytes[mid] ^= 0x04;
            std::fs::write(&object, &bytes).unwrap();
            let out = fx.path(&format!("r-{}.txt", compression.as_str()));
            let url = format!("lines://{}", out.display());
            let r = repo.restore_database(&meta.id, &url, false, &NoProgress, &Cancel::new());
            assert!(matches!(r, Err(Error::Integrity { .. })), "{r:?}");
            assert!(!out.exists(), "a damaged dump was loaded");
            let report = fx.check_all();
            assert!(
                report.problems.iter().any(|p| p.snapshot == meta.id),
                "{report:?}"
            );
        }
    }

    #[test]
    fn row_counts_that_differ_after_restore_are_an_integrity_failure() {
        let (fx, repo) = fixture(1);
        let source = LinesSource {
            rows: 100,
            fail_after: None,
        };
        repo.backup_database(
            &source,
            &DatabaseBackupOptions::default(),
            &NoProgress,
            &Cancel::new(),
        )
        .unwrap();
        let url = format!("lines://{}", fx.path("x.txt").display());
        match repo.restore_database("latest", &url, false, &NoProgress, &Cancel::new()) {
            Err(Error::Integrity { detail, .. }) => assert!(
                detail.contains("lines: 100 recorded, 99 restored"),
                "{detail}"
            ),
            other => panic!("{other:?}"),
        }
        // Nothing that failed verification is left at a new target...
        assert!(
            !fx.path("x.txt").exists(),
            "a failed restore left a database"
        );
        assert!(!fx.path("x.staged").exists());
        // ...and an existing database survives a failed replace.
        std::fs::write(fx.path("x.txt"), "the old database\n").unwrap();
        let replaced = repo.restore_database("latest", &url, true, &NoProgress, &Cancel::new());
        assert!(
            matches!(replaced, Err(Error::Integrity { .. })),
            "{replaced:?}"
        );
        assert_eq!(
            std::fs::read_to_string(fx.path("x.txt")).unwrap(),
            "the old database\n"
        );
    }

    #[test]
    fn a_failing_dump_leaves_nothing() {
        let (fx, repo) = fixture(0);
        let source = LinesSource {
            rows: 100_000,
            fail_after: Some(300_000),
        };
        let r = repo.backup_database(
            &source,
            &DatabaseBackupOptions::default(),
            &NoProgress,
            &Cancel::new(),
        );
        assert!(matches!(r, Err(Error::Backend { .. })), "{r:?}");
        assert!(repo.snapshots().unwrap().is_empty());
        assert!(repo.unfinished().unwrap().is_empty());
        assert!(
            std::fs::read_dir(fx.path("repo/snapshots")).map_or(true, |mut d| d.next().is_none())
        );
    }
}

mod auto {
    use backup_core::{AutoOptions, Cancel, NoProgress};

    use super::database_support::{LinesSource, fixture};

    #[test]
    fn auto_skips_recent_dumps_and_keeps_the_newest_n() {
        let (fx, repo) = fixture(0);
        let source = LinesSource {
            rows: 10,
            fail_after: None,
        };
        let hourly = AutoOptions {
            keep_last: 3,
            ..AutoOptions::default()
        };
        let first = repo
            .auto_backup_database(&source, &hourly, &NoProgress, &Cancel::new())
            .unwrap();
        assert_eq!(first.action, "backed_up");
        let again = repo
            .auto_backup_database(&source, &hourly, &NoProgress, &Cancel::new())
            .unwrap();
        assert_eq!(
            again.action, "skipped",
            "a dump less than an hour old is enough"
        );
        assert_eq!(again.snapshot.unwrap().id, first.snapshot.unwrap().id);
        assert_eq!(repo.snapshots().unwrap().len(), 1);
        // With no minimum interval, each call dumps; only the newest 3 stay.
        let eager = AutoOptions {
            min_interval_seconds: 0,
            keep_last: 3,
            ..AutoOptions::default()
        };
        let mut pruned = Vec::new();
        for _ in 0..4 {
            let o = repo
                .auto_backup_database(&source, &eager, &NoProgress, &Cancel::new())
                .unwrap();
            assert_eq!(o.action, "backed_up");
            pruned.extend(o.pruned);
        }
        let left = repo.snapshots().unwrap();
        assert_eq!(left.len(), 3);
        assert_eq!(pruned.len(), 2);
        for id in &pruned {
            assert!(!fx.snapshot_dir(id).exists());
            assert!(left.iter().all(|s| &s.id != id));
        }
    }
}
