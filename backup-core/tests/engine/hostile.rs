//! Hostile repositories, in the spirit of the targets' conformance suite.
//!
//! Part one forges snapshots whose tar archive, manifest, `SHA256SUMS` and
//! `snapshot.json` all agree (an attacker can recompute every checksum) but
//! whose entries are hostile, and runs each through check, restore, ls and
//! forget beside a canary directory that must never change. Part two is a
//! corruption sweep: bytes flipped at many offsets of every object kind, and
//! truncations, each of which `check --read-data` must report.

use super::*;
use backup_core::archive::EntryKind::{Dir, File, Hardlink, Symlink};

/// Every file and directory below `dir` with its content and mode.
fn tree(dir: &Path) -> Vec<(PathBuf, Vec<u8>, u32)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let m = fs::symlink_metadata(&p).unwrap();
            let body = if m.is_file() {
                fs::read(&p).unwrap()
            } else {
                Vec::new()
            };
            if m.is_dir() {
                stack.push(p.clone());
            }
            out.push((p, body, m.mode()));
        }
    }
    out.sort();
    out
}

/// The hostile cases: a name and the entries of a consistent snapshot.
fn cases() -> Vec<(&'static str, Vec<Forged<'static>>)> {
    vec![
        ("dotdot", vec![("../../canary/pwned", File, None, b"x")]),
        (
            "nested dotdot",
            vec![("a/../../../canary/pwned", File, None, b"x")],
        ),
        (
            "absolute",
            vec![("/tmp/backupkit-hostile-pwned", File, None, b"x")],
        ),
        ("empty name", vec![("", File, None, b"x")]),
        ("empty component", vec![("a//b", File, None, b"x")]),
        ("dot component", vec![("./a", File, None, b"x")]),
        (
            "hard link out",
            vec![("h", Hardlink, Some("../../canary/precious.txt"), b"")],
        ),
        (
            "hard link absolute",
            vec![("h", Hardlink, Some("/etc/passwd"), b"")],
        ),
        (
            "hard link to a later file",
            vec![("h", Hardlink, Some("f"), b""), ("f", File, None, b"x")],
        ),
        (
            "hard link to a directory",
            vec![("d", Dir, None, b""), ("h", Hardlink, Some("d"), b"")],
        ),
        (
            "write through own symlink",
            vec![
                ("d", Dir, None, b""),
                ("d/l", Symlink, Some("../../../canary"), b""),
                ("d/l/pwned", File, None, b"x"),
            ],
        ),
        (
            "file twice",
            vec![("f", File, None, b"one"), ("f", File, None, b"two")],
        ),
        (
            "directory, then symlink, then file",
            vec![
                ("p", Dir, None, b""),
                ("p", Symlink, Some("../../canary"), b""),
                ("p", File, None, b"x"),
            ],
        ),
        (
            "entry inside a file",
            vec![("f", File, None, b"x"), ("f/inner", File, None, b"y")],
        ),
        (
            "symlink without target",
            vec![("l", Symlink, Some(""), b"")],
        ),
    ]
}

#[test]
fn hostile_snapshots_are_refused_everywhere_and_the_canary_never_changes() {
    for (what, entries) in cases() {
        let fx = Fixture::new();
        let canary = fx.path("canary");
        fs::create_dir_all(canary.join("sub")).unwrap();
        fs::write(canary.join("precious.txt"), "keep me").unwrap();
        fs::write(canary.join("sub/also.txt"), "and me").unwrap();
        let before = tree(&canary);
        let id = forge_snapshot(&fx, &entries);

        // check, with and without reading the data: one problem, this one.
        for read_data in [false, true] {
            let opts = CheckOptions {
                read_data,
                ..CheckOptions::default()
            };
            let report = fx.repo.check(&opts, &NoProgress, &Cancel::new()).unwrap();
            assert_eq!(
                report
                    .problems
                    .iter()
                    .map(|p| p.snapshot.as_str())
                    .collect::<Vec<_>>(),
                [id.as_str()],
                "{what} (read_data {read_data})"
            );
            let message = &report.problems[0].message;
            assert!(
                !message.contains("Symlink"),
                "{what}: a debug name in {message:?}"
            );
            // Refused for what it is, not for a side effect of forging.
            assert!(
                !message.contains("records") && !message.contains("SHA-256"),
                "{what}: {message}"
            );
        }
        // restore: refused in the manifest pass, before anything is written.
        let target = fx.path("restore/here");
        let r = fx.restore(&id, &target);
        assert!(
            matches!(r, Err(Error::UnsafePath { .. } | Error::Integrity { .. })),
            "{what}: {r:?}"
        );
        assert!(!target.exists(), "{what}: restore wrote before refusing");
        // ls: the same rules.
        let meta = fx.repo.find_snapshot(&id).unwrap();
        let listed = fx.repo.list_entries(&meta, &mut |_| Ok(()));
        assert!(
            matches!(
                listed,
                Err(Error::UnsafePath { .. } | Error::Integrity { .. })
            ),
            "{what}: {listed:?}"
        );
        // forget: removes the snapshot's own objects and nothing else.
        let ids = std::slice::from_ref(&id);
        assert_eq!(fx.repo.forget(ids, false).unwrap(), ids);
        assert!(!fx.snapshot_dir(&id).exists(), "{what}");

        assert_eq!(tree(&canary), before, "{what}: the canary changed");
        assert!(
            !Path::new("/tmp/backupkit-hostile-pwned").exists(),
            "{what}"
        );
        assert!(!fx.path("restore/pwned").exists(), "{what}");
    }
}

/// `snapshot.json` edits an attacker can make consistent with `SHA256SUMS`:
/// object names that leave the directory, counts that are not the
/// manifest's, a format or encryption this build cannot read.
#[test]
#[allow(clippy::too_many_lines)] // a table: one row per edit
fn hostile_snapshot_json_is_refused_with_the_right_outcome() {
    type Edit = fn(&mut serde_json::Value);
    // (what, the edit, an integrity failure (else unsupported), found by a
    // plain listing (else only once the manifest is read))
    let edits: Vec<(&str, Edit, bool, bool)> = vec![
        (
            "object name ../..",
            |m| m["objects"][0]["name"] = "../..".into(),
            true,
            true,
        ),
        (
            "object name /etc/passwd",
            |m| m["objects"][0]["name"] = "/etc/passwd".into(),
            true,
            true,
        ),
        (
            "object recorded twice",
            |m| {
                let first = m["objects"][0].clone();
                m["objects"].as_array_mut().unwrap().push(first);
            },
            true,
            true,
        ),
        (
            "garbage checksum",
            |m| m["checksum"] = "sha256:00".into(),
            true,
            true,
        ),
        (
            "wrong size_bytes",
            |m| m["size_bytes"] = 1.into(),
            true,
            true,
        ),
        (
            "compressed but none",
            |m| m["compressed"] = false.into(),
            true,
            true,
        ),
        (
            "wrong file_count",
            |m| m["file_count"] = 99.into(),
            true,
            false,
        ),
        (
            "wrong dir_count",
            |m| m["dir_count"] = 99.into(),
            true,
            false,
        ),
        (
            "wrong entry_count",
            |m| m["entry_count"] = 99.into(),
            true,
            false,
        ),
        (
            "wrong source_bytes",
            |m| m["source_bytes"] = 12345.into(),
            true,
            false,
        ),
        ("a newer format", |m| m["format"] = 99.into(), false, true),
        ("encrypted", |m| m["encrypted"] = true.into(), false, true),
    ];
    for (what, edit, integrity, listed) in edits {
        let fx = Fixture::new();
        let src = fx.path("src");
        make_tree(&src);
        let id = fx.backup(&[&src]).snapshot.unwrap().id;
        let dir = fx.snapshot_dir(&id);
        let path = dir.join("snapshot.json");
        let mut meta: serde_json::Value =
            serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        edit(&mut meta);
        let json = serde_json::to_vec_pretty(&meta).unwrap();
        fs::write(&path, &json).unwrap();
        // Recompute SHA256SUMS as the attacker would.
        let mut sums: String = fs::read_to_string(dir.join("SHA256SUMS"))
            .unwrap()
            .lines()
            .filter(|l| !l.ends_with("  snapshot.json"))
            .flat_map(|l| [l, "\n"])
            .collect();
        sums.push_str(&sha256_hex(&json));
        sums.push_str("  snapshot.json\n");
        fs::write(dir.join("SHA256SUMS"), sums).unwrap();

        let report = fx.check_all();
        assert_eq!(report.problems.len(), 1, "{what}: {report:?}");
        let r = fx.restore(&id, &fx.path("out"));
        if integrity {
            assert!(matches!(r, Err(Error::Integrity { .. })), "{what}: {r:?}");
        } else {
            match r {
                Err(Error::Unsupported(m)) => {
                    assert!(
                        m.contains("upgrade") || m.contains("encrypted"),
                        "{what}: {m}"
                    );
                }
                other => panic!("{what}: {other:?}"),
            }
        }
        assert!(!fx.path("out").exists(), "{what}");
        // Listing names it as damaged (without blocking anything else)
        // when snapshot.json alone shows it.
        let listing = fx.repo.list_snapshots().unwrap();
        assert_eq!(listing.damaged.len(), usize::from(listed), "{what}");
    }
}

/// What the sweep found, per object: (flips and truncations tried, found).
type Sweep = Vec<(&'static str, usize, usize)>;

/// Every object of a snapshot, damaged at many offsets: each damage must be
/// reported by `check --read-data` and refused by restore.
#[test]
fn corruption_sweep_finds_every_damaged_byte() {
    let fx = Fixture::new();
    let src = fx.path("src");
    fs::create_dir_all(src.join("sub")).unwrap();
    fs::write(src.join("a.csv"), "t,v\n0,1\n".repeat(200)).unwrap();
    fs::write(src.join("sub/b.bin"), pseudo_random(20_000, 7)).unwrap();
    std::os::unix::fs::symlink("a.csv", src.join("link")).unwrap();
    let id = fx.backup(&[&src]).snapshot.unwrap().id;
    let dir = fx.snapshot_dir(&id);
    let mut found: Sweep = Vec::new();
    for name in [
        "files.tar.gz",
        "manifest.jsonl.zst",
        "SHA256SUMS",
        "snapshot.json",
    ] {
        let path = dir.join(name);
        let original = fs::read(&path).unwrap();
        let len = original.len();
        // Up to 64 offsets spread over the object, first and last included.
        let step = (len / 64).max(1);
        let mut damages: Vec<Vec<u8>> = (0..len)
            .step_by(step)
            .chain([len - 1])
            .map(|at| {
                let mut b = original.clone();
                b[at] ^= 0x01;
                b
            })
            .collect();
        damages.push(Vec::new());
        damages.push(original[..len / 2].to_vec());
        damages.push(original[..len - 1].to_vec());
        let mut caught = 0;
        for damaged in &damages {
            fs::write(&path, damaged).unwrap();
            let report = fx.check_all();
            let target = fx.path("restored");
            let restored = fx.restore(&id, &target);
            if report.problems.len() == 1 && restored.is_err() {
                caught += 1;
            }
            let _ = fs::remove_dir_all(&target);
        }
        fs::write(&path, &original).unwrap();
        found.push((name, damages.len(), caught));
    }
    assert!(fx.check_all().is_ok(), "the sweep left damage behind");
    // A missing SHA256SUMS: reported by check and refused by restore alike.
    let sums = dir.join("SHA256SUMS");
    let kept = fs::read(&sums).unwrap();
    fs::remove_file(&sums).unwrap();
    let report = fx.check_all();
    assert_eq!(report.problems.len(), 1, "{report:?}");
    assert!(
        report.problems[0].message.contains("SHA256SUMS is missing"),
        "{report:?}"
    );
    assert!(matches!(
        fx.restore(&id, &fx.path("r")),
        Err(Error::Integrity { .. })
    ));
    assert!(!fx.path("r").exists());
    fs::write(&sums, kept).unwrap();
    for (name, tried, caught) in &found {
        assert_eq!(caught, tried, "{name}: {caught} of {tried} damages found");
    }

    eprintln!("corruption sweep: {found:?}");
}

/// Rewrites the snapshot's gzip archive through `edit` on the plain tar, then
/// reseals everything: only what no checksum covers is left to find.
fn edit_archive(fx: &Fixture, id: &str, edit: impl FnOnce(&mut Vec<u8>)) {
    use std::io::{Read, Write};
    let path = fx.snapshot_dir(id).join("files.tar.gz");
    let mut tar = Vec::new();
    flate2::read::GzDecoder::new(&fs::read(&path).unwrap()[..])
        .read_to_end(&mut tar)
        .unwrap();
    edit(&mut tar);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar).unwrap();
    fs::write(&path, gz.finish().unwrap()).unwrap();
    reseal(&fx.snapshot_dir(id));
}

/// The per-file BLAKE3 alone finds changed content when the archive's
/// SHA-256 was recomputed; a changed mtime alone is named with both values.
#[test]
fn per_file_hashes_and_metadata_are_checked_on_their_own() {
    let fx = Fixture::new();
    let src = fx.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("data.csv"), "UNIQUE-CONTENT-0123456789\n").unwrap();
    filetime::set_file_mtime(
        src.join("data.csv"),
        filetime::FileTime::from_unix_time(1_650_000_000, 0),
    )
    .unwrap();
    let id = fx.backup(&[&src]).snapshot.unwrap().id;
    assert!(fx.check_all().is_ok());

    edit_archive(&fx, &id, |tar| {
        let at = tar
            .windows(14)
            .position(|w| w == b"UNIQUE-CONTENT")
            .unwrap();
        tar[at] = b'X';
    });
    let report = fx.check_all();
    assert_eq!(report.problems.len(), 1, "{report:?}");
    assert!(
        report.problems[0]
            .message
            .contains("does not match its manifest hash"),
        "{report:?}"
    );
    let out = fx.path("out");
    assert!(matches!(
        fx.restore(&id, &out),
        Err(Error::Integrity { .. })
    ));
    assert!(
        !out.join(rel(&src)).join("data.csv").exists(),
        "a file that failed its hash was left behind"
    );

    // Put the content back; change the manifest's mtime only.
    edit_archive(&fx, &id, |tar| {
        let at = tar
            .windows(14)
            .position(|w| w == b"XNIQUE-CONTENT")
            .unwrap();
        tar[at] = b'U';
    });
    assert!(fx.check_all().is_ok());
    let dir = fx.snapshot_dir(&id);
    let text = manifest_text(&dir);
    assert!(text.contains("\"mtime\":1650000000"), "{text}");
    write_manifest_text(
        &dir,
        &text.replace("\"mtime\":1650000000", "\"mtime\":1650000001"),
    );
    reseal(&fx.snapshot_dir(&id));
    let report = fx.check_all();
    assert_eq!(report.problems.len(), 1, "{report:?}");
    let message = &report.problems[0].message;
    assert!(
        message.contains("mtime is 1650000000 in the archive but 1650000001 in manifest.jsonl"),
        "{message}"
    );
}

/// `backupkit.json`: damage that makes it unreadable is reported when the
/// repository is opened; damage that leaves it valid JSON of a known format
/// (a digit of its date) harms nothing it describes.
#[test]
fn corruption_sweep_of_the_repository_marker() {
    let fx = Fixture::new();
    let src = fx.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a.csv"), "1\n").unwrap();
    fx.backup(&[&src]);
    let marker = fx.path("repo/backupkit.json");
    let original = fs::read(&marker).unwrap();
    let (mut refused, mut harmless) = (0, 0);
    for at in 0..original.len() {
        let mut b = original.clone();
        b[at] ^= 0x01;
        fs::write(&marker, &b).unwrap();
        match Repository::open(registry(), fx.path("repo").to_str().unwrap()) {
            Err(Error::RepositoryUnsupported { .. } | Error::RepositoryNotFound { .. }) => {
                refused += 1;
            }
            Ok(repo) => {
                let parsed: Option<serde_json::Value> = serde_json::from_slice(&b).ok();
                assert!(
                    parsed.is_some(),
                    "opened a repository with an unreadable marker"
                );
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
                assert!(report.is_ok());
                harmless += 1;
            }
            Err(e) => panic!("byte {at}: {e:?}"),
        }
    }
    fs::write(&marker, &original).unwrap();
    assert_eq!(refused + harmless, original.len());
    assert!(
        refused > original.len() / 2,
        "{refused} of {}",
        original.len()
    );
    eprintln!("backupkit.json: {refused} refused, {harmless} harmless");
}
