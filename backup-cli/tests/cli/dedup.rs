//! Deduplicated repositories through the binary: `init --dedup`, the main
//! job, `export`, database dumps, and `restore.py` beside the data.

use std::fs;
use std::process::Command;

use super::{Env, code, count_rows, make_results_db, pseudo_random, stderr, stdout};

impl Env {
    pub(crate) fn init_dedup(&self) {
        let o = self.bk(&["init", "--dedup"]);
        assert_eq!(code(&o), 0, "{}", stderr(&o));
        assert!(stdout(&o).contains("deduplicated"), "{}", stdout(&o));
    }

    fn latest(&self) -> serde_json::Value {
        let o = self.bk(&["snapshots", "--json"]);
        let list: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        list.as_array().unwrap().last().unwrap().clone()
    }
}

#[test]
fn dedup_main_job_stores_a_rerun_as_nothing_and_exports_a_plain_archive() {
    let env = Env::new();
    env.init_dedup();
    let data = env.data();
    fs::write(data.join("rec.bin"), pseudo_random(3 << 20, 7)).unwrap();
    let src = data.to_str().unwrap();
    let first = env.backup_ok(&[src]);
    // Again: the recording is known from the stat cache, not read.
    let o = env.bk(&["--json", "backup", src]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(summary["reused_files"], 1, "{summary}");
    let again = summary["snapshot"]["id"].as_str().unwrap().to_owned();
    assert_ne!(first, again);
    assert!(env.path("cache").read_dir().unwrap().next().is_some());
    let latest = env.latest();
    assert_eq!(latest["dedup"]["new_chunks"], 0, "{latest}");
    assert_eq!(latest["size_bytes"], 0, "{latest}");

    let o = env.bk(&["check", "--read-data"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stdout(&o).contains("chunk store"), "{}", stdout(&o));
    let o = env.restore_to("latest", "out");
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let restored = env.path("out").join(data.strip_prefix("/").unwrap());
    assert_eq!(
        fs::read(restored.join("rec.bin")).unwrap(),
        fs::read(data.join("rec.bin")).unwrap()
    );

    // restore --include: only the subtree.
    let o = env.bk(&[
        "restore",
        "latest",
        "--target",
        env.path("inc").to_str().unwrap(),
        "--include",
        "sub",
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let inc = env.path("inc").join(data.strip_prefix("/").unwrap());
    assert!(inc.join("sub/b.json").is_file());
    assert!(!inc.join("rec.bin").exists());

    // export: a .tar.zst that tar reads, never over an existing file.
    let archive = env.path("snap.tar.zst");
    let o = env.bk(&["export", &first, "--to", archive.to_str().unwrap()]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let x = env.path("x");
    fs::create_dir_all(&x).unwrap();
    let untar = Command::new("tar")
        .args(["--zstd", "-xf"])
        .arg(&archive)
        .arg("-C")
        .arg(&x)
        .output()
        .unwrap();
    assert!(
        untar.status.success(),
        "{}",
        String::from_utf8_lossy(&untar.stderr)
    );
    let extracted = x.join(data.strip_prefix("/").unwrap());
    assert_eq!(
        fs::read(extracted.join("sub/b.json")).unwrap(),
        b"{\"k\": 1}"
    );
    assert_eq!(
        fs::read(extracted.join("rec.bin")).unwrap(),
        fs::read(data.join("rec.bin")).unwrap()
    );
    // To stdout, even with --json, nothing but the archive.
    let o = env.bk(&[
        "--json",
        "export",
        &first,
        "--to",
        "-",
        "--compression",
        "zstd",
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(
        o.stdout == fs::read(&archive).unwrap(),
        "stdout is not the archive alone"
    );
    let before = fs::read(&archive).unwrap();
    let o = env.bk(&["export", &first, "--to", archive.to_str().unwrap()]);
    super::assert_clean_error(&o, 2, "exists");
    assert_eq!(fs::read(&archive).unwrap(), before);

    // forget: the snapshot goes, the other stays.
    let o = env.bk(&["forget", &again, "--yes"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(env.snapshot_ids(), std::slice::from_ref(&first));
}

#[test]
fn a_damaged_pack_fails_export_leaving_nothing_and_check_names_it() {
    let env = Env::new();
    env.init_dedup();
    let data = env.data();
    fs::write(data.join("rec.bin"), pseudo_random(3 << 20, 7)).unwrap();
    let first = env.backup_ok(&[data.to_str().unwrap()]);
    // A damaged pack: export fails and leaves no file.
    let packs = env.path("repo/packs");
    for dir in fs::read_dir(&packs).unwrap().flatten() {
        for pack in fs::read_dir(dir.path()).unwrap().flatten() {
            let mut bytes = fs::read(pack.path()).unwrap();
            let at = bytes.len() / 2;
            bytes[at] ^= 1;
            fs::write(pack.path(), bytes).unwrap();
        }
    }
    let out = env.path("damaged.tar");
    let o = env.bk(&["export", &first, "--to", out.to_str().unwrap()]);
    super::assert_clean_error(&o, 13, "damaged");
    let left: Vec<_> = fs::read_dir(env.path(""))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains("damaged"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    let o = env.bk(&["check", "--read-data"]);
    assert_eq!(code(&o), 13, "{}", stdout(&o));
    assert!(
        stdout(&o).contains("error: repository: packs/"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn a_sqlite_database_in_a_dedup_repository_restores_and_a_change_stores_little() {
    let env = Env::new();
    env.init_dedup();
    let db = env.path("results.db");
    make_results_db(&db, 200_000);
    let db_arg = db.to_str().unwrap();
    env.backup_ok(&["--db-path", db_arg, "--force"]);
    let first = env.latest();
    assert_eq!(first["files_included"], serde_json::json!(["chunks"]));
    assert_eq!(first["database"]["tables"]["runs"], 200_000);

    // A few rows more: a few chunks more.
    let c = rusqlite::Connection::open(&db).unwrap();
    c.execute_batch("INSERT INTO runs(score, note) VALUES (1.5, 'late run');")
        .unwrap();
    drop(c);
    env.backup_ok(&["--db-path", db_arg, "--force"]);
    let second = env.latest();
    let (new, all) = (
        second["dedup"]["new_bytes"].as_u64().unwrap(),
        second["dedup"]["stream_bytes"].as_u64().unwrap(),
    );
    assert!(new * 4 < all, "one row more stored {new} of {all} bytes");

    // auto: recent enough, nothing new; with a zero interval, a new dump.
    let o = env.bk(&[
        "--json",
        "auto",
        "--db",
        db_arg,
        "--min-interval",
        "0",
        "--keep",
        "3",
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let auto: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(auto["action"], "backed_up", "{auto}");
    assert_eq!(
        auto["snapshot"]["files_included"],
        serde_json::json!(["chunks"])
    );
    assert_eq!(auto["snapshot"]["dedup"]["new_chunks"], 0, "{auto}");
    assert_eq!(env.snapshot_ids().len(), 3);

    let restored = env.path("restored.db");
    let o = env.bk(&[
        "restore",
        second["id"].as_str().unwrap(),
        "--target",
        restored.to_str().unwrap(),
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(count_rows(&restored, "runs"), 200_001);

    // Without backupkit: restore.py writes the database file itself.
    let python = std::env::var("BACKUPKIT_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let has_zstd = Command::new(&python)
        .args(["-c", "import zstandard"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_zstd {
        assert_ne!(
            std::env::var("BACKUPKIT_REQUIRE_SERVICES").as_deref(),
            Ok("1"),
            "{python} has no zstandard"
        );
        eprintln!("skipped restore.py: {python} has no zstandard");
        return;
    }
    let r = Command::new(&python)
        .arg(env.path("repo/restore.py"))
        .arg(first["id"].as_str().unwrap())
        .arg(env.path("repo"))
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let by_hand = env.path("by_hand.db");
    fs::write(&by_hand, &r.stdout).unwrap();
    assert_eq!(count_rows(&by_hand, "runs"), 200_000);
}

/// Pack files in the repository.
fn packs(env: &Env) -> usize {
    fs::read_dir(env.path("repo/packs"))
        .unwrap()
        .flatten()
        .map(|d| fs::read_dir(d.path()).unwrap().count())
        .sum()
}

#[test]
fn forget_prune_marks_then_a_prune_after_the_grace_period_deletes() {
    let env = Env::new();
    env.init_dedup();
    let data = env.path("data");
    fs::create_dir_all(&data).unwrap();
    fs::write(data.join("rec.bin"), pseudo_random(3 << 20, 1)).unwrap();
    let src = data.to_str().unwrap();
    env.backup_ok(&[src]);
    fs::remove_file(data.join("rec.bin")).unwrap();
    fs::write(data.join("rec2.bin"), pseudo_random(3 << 20, 2)).unwrap();
    env.backup_ok(&[src]);
    let before = packs(&env);

    // forget --prune with the default grace period: marked, not deleted.
    let o = env.bk(&["--json", "forget", "--keep-last", "1", "--prune", "--yes"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["groups"][0]["remove"].as_array().unwrap().len(), 1, "{v}");
    assert!(v["prune"]["marked_packs"].as_u64().unwrap() >= 1, "{v}");
    assert_eq!(v["prune"]["waiting"].as_array().unwrap().len(), 1, "{v}");
    assert!(packs(&env) >= before);

    // A dry run with no grace says the mark is due and deletes nothing.
    let o = env.bk(&["prune", "--grace", "0", "--dry-run"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stdout(&o).contains("1 mark(s) due"), "{}", stdout(&o));
    let marked = packs(&env);

    let o = env.bk(&["prune", "--grace", "0s"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stdout(&o).contains("deleted"), "{}", stdout(&o));
    assert!(packs(&env) < marked, "{}", stdout(&o));
    let o = env.bk(&["check", "--read-data"]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    let o = env.restore_to("latest", "out");
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let restored = env.path("out").join(data.strip_prefix("/").unwrap());
    assert_eq!(
        fs::read(restored.join("rec2.bin")).unwrap(),
        fs::read(data.join("rec2.bin")).unwrap()
    );
    let o = env.bk(&["prune", "--grace", "0"]);
    assert!(stdout(&o).contains("nothing to prune"), "{}", stdout(&o));

    // Another live prune's lock: refused with the lock exit code.
    let lock = serde_json::json!({
        "exclusive": false, "prune": true, "host": super::hostname(),
        "pid": std::process::id(), "time": chrono::Utc::now(), "snapshot": null
    });
    fs::create_dir_all(env.path("repo/locks")).unwrap();
    fs::write(env.path("repo/locks/other.json"), lock.to_string()).unwrap();
    let o = env.bk(&["prune"]);
    assert_eq!(code(&o), 11, "{}", stderr(&o));
    assert!(stderr(&o).contains("a prune lock"), "{}", stderr(&o));
    // Bad values are usage errors.
    let o = env.bk(&["prune", "--repack-unused", "101"]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
}

#[test]
fn prune_in_an_archive_repository_has_nothing_to_do() {
    let env = Env::new();
    env.init();
    let data = env.data();
    env.backup_ok(&[data.to_str().unwrap()]);
    let o = env.bk(&["prune"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stdout(&o).contains("archive repository"), "{}", stdout(&o));
}
