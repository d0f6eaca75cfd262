//! The `backupkit` binary, tested as users run it: exit codes, output
//! streams, confirmations, and survival of `kill -9`.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

#[path = "cli/dedup.rs"]
mod dedup;
#[path = "cli/http.rs"]
mod http;
#[path = "cli/jobs.rs"]
mod jobs;
#[path = "cli/pull.rs"]
mod pull;
#[path = "cli/serve.rs"]
mod serve;
#[path = "cli/sessions.rs"]
mod sessions;

const BIN: &str = env!("CARGO_BIN_EXE_backupkit");

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }
    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }
    fn repo(&self) -> String {
        self.path("repo").display().to_string()
    }
    #[allow(clippy::unused_self)] // reads as `env.run(..)` beside `env.bk(..)`
    fn run(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(args)
            .env_remove("BACKUPKIT_REPOSITORY")
            .env("BACKUPKIT_CACHE_DIR", self.path("cache"))
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }
    fn bk(&self, args: &[&str]) -> Output {
        let repo = self.repo();
        let mut all = vec!["-r", repo.as_str()];
        all.extend_from_slice(args);
        self.run(&all)
    }
    fn data(&self) -> PathBuf {
        let d = self.path("data");
        fs::create_dir_all(d.join("sub")).unwrap();
        fs::write(d.join("a.csv"), "x,y\n1,2\n").unwrap();
        fs::write(d.join("sub/b.json"), "{\"k\": 1}").unwrap();
        d
    }
    /// Runs `backup ARGS`, asserts success, returns the new snapshot's id.
    fn backup_ok(&self, args: &[&str]) -> String {
        let mut all = vec!["--json", "backup"];
        all.extend_from_slice(args);
        let o = self.bk(&all);
        assert_eq!(code(&o), 0, "{}", stderr(&o));
        let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        summary["snapshot"]["id"].as_str().unwrap().to_owned()
    }
    fn restore_to(&self, id: &str, dir: &str) -> Output {
        self.bk(&["restore", id, "--target", self.path(dir).to_str().unwrap()])
    }
    fn init(&self) {
        let o = self.bk(&["init"]);
        assert_eq!(code(&o), 0, "{}", stderr(&o));
    }
    fn snapshot_ids(&self) -> Vec<String> {
        let o = self.bk(&["snapshots", "--json"]);
        assert_eq!(code(&o), 0, "{}", stderr(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_owned())
            .collect()
    }
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}
fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}
fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// An error is one line on stderr, names the problem, and is no panic.
fn assert_clean_error(o: &Output, code_want: i32, needle: &str) {
    let err = stderr(o);
    assert_eq!(code(o), code_want, "stderr: {err}");
    assert!(
        !err.contains("panicked") && !err.contains("RUST_BACKTRACE"),
        "{err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err}");
    assert!(err.contains(needle), "{err:?} lacks {needle:?}");
}

#[test]
fn main_job_backs_up_lists_restores_and_checks() {
    let env = Env::new();
    env.init();
    let data = env.data();
    let o = env.bk(&["backup", data.to_str().unwrap(), "--tag", "nightly"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stdout(&o).contains("saved"), "{}", stdout(&o));
    let ids = env.snapshot_ids();
    assert_eq!(ids.len(), 1);
    // `list` is the seeds' name for `snapshots`.
    assert!(stdout(&env.bk(&["list"])).contains(&ids[0]));
    let out = env.path("out");
    let o = env.bk(&["restore", "latest", "--target", out.to_str().unwrap()]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let restored = out.join(data.strip_prefix("/").unwrap());
    assert_eq!(fs::read(restored.join("a.csv")).unwrap(), b"x,y\n1,2\n");
    assert_eq!(
        fs::read(restored.join("sub/b.json")).unwrap(),
        b"{\"k\": 1}"
    );
    let o = env.bk(&["check", "--read-data"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let o = env.bk(&["ls", &ids[0], "--json"]);
    let entries: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(
        entries
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["path"].as_str().unwrap().ends_with("sub/b.json"))
    );
}

/// The README's `zstdcat | jq` command prints every entry of a manifest
/// with its whole path (stored, a line in the directory of the line before
/// gives only its name), as `ls --json` lists them.
#[test]
fn the_readme_jq_command_gives_every_manifest_entry_its_whole_path() {
    let readme = fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let start = readme
        .find("zstdcat manifest.jsonl.zst | jq")
        .expect("the README gives the command");
    let command = &readme[start..start + readme[start..].find("\n```").unwrap()];
    let env = Env::new();
    env.init();
    let data = env.data();
    for name in ["sub/c.json", "sub/d.json", "z.txt"] {
        fs::write(data.join(name), name).unwrap();
    }
    let id = env.backup_ok(&[data.to_str().unwrap()]);
    let dir = env.path("repo/snapshots").join(&id);
    let o = Command::new("sh")
        .args(["-c", "zstdcat manifest.jsonl.zst"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let stored = stdout(&o);
    assert!(stored.contains("\"name\":\"d.json\""), "{stored}");
    let o = Command::new("sh")
        .args(["-c", command])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "{command}: {}", stderr(&o));
    let printed: Vec<String> = stdout(&o)
        .lines()
        .map(|l| {
            let e: serde_json::Value = serde_json::from_str(l).unwrap();
            assert!(e["name"].is_null(), "{l}");
            e["path"].as_str().unwrap().to_owned()
        })
        .collect();
    let o = env.bk(&["ls", &id, "--json"]);
    let listed: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let listed: Vec<String> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            e["path"]
                .as_str()
                .unwrap()
                .trim_start_matches('/')
                .to_owned()
        })
        .collect();
    assert_eq!(printed, listed);
    assert!(printed.iter().any(|p| p.ends_with("data/sub/d.json")));
}

/// A walk that runs ahead of the reading holds no open directories for
/// the entries in flight: a tree of many one-file directories backs up
/// completely under a small limit of open files.
#[test]
fn many_small_directories_back_up_within_a_small_open_file_limit() {
    let env = Env::new();
    env.init();
    let data = env.path("many");
    for i in 0..600 {
        let d = data.join(format!("d{i:03}"));
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join("f.csv"), format!("{i}\n")).unwrap();
    }
    let o = Command::new("sh")
        .args([
            "-c",
            "ulimit -n 64 && exec \"$0\" -r \"$1\" --json backup \"$2\"",
            BIN,
            &env.repo(),
            data.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(summary["snapshot"]["file_count"], 600, "{summary}");
    assert_eq!(
        summary["warnings"].as_array().map(Vec::len),
        Some(0),
        "{summary}"
    );
}

#[test]
fn quiet_success_prints_nothing_and_env_names_the_repository() {
    let env = Env::new();
    let data = env.data();
    let o = Command::new(BIN)
        .args(["--quiet", "init"])
        .env("BACKUPKIT_REPOSITORY", env.repo())
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let o = Command::new(BIN)
        .args(["-q", "backup", data.to_str().unwrap()])
        .env("BACKUPKIT_REPOSITORY", env.repo())
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(o.stdout.is_empty() && o.stderr.is_empty(), "{o:?}");
}

#[test]
fn exit_codes_for_bad_input() {
    let env = Env::new();
    let data = env.data();
    // 10: no repository there.
    assert_clean_error(&env.bk(&["snapshots"]), 10, "no backupkit repository");
    env.init();
    // 1: init twice.
    assert_clean_error(&env.bk(&["init"]), 1, "already exists");
    // 2: usage errors.
    assert_eq!(code(&env.run(&["backup"])), 2);
    assert_eq!(code(&env.run(&["--no-such-flag"])), 2);
    assert_clean_error(&env.run(&["snapshots"]), 2, "no repository given");
    assert_clean_error(
        &env.bk(&["backup", data.to_str().unwrap(), "--compression", "lz9"]),
        2,
        "unknown compression",
    );
    assert_clean_error(
        &env.bk(&["backup", data.to_str().unwrap(), "--level", "42"]),
        2,
        "level",
    );
    // 4: missing source path, unknown snapshot.
    assert_clean_error(
        &env.bk(&["backup", env.path("nope").to_str().unwrap()]),
        4,
        "source path not found",
    );
    assert_clean_error(
        &env.bk(&[
            "restore",
            "deadbeef",
            "--target",
            env.path("o").to_str().unwrap(),
        ]),
        4,
        "no snapshot matches",
    );
    assert_clean_error(&env.bk(&["ls", "latest"]), 4, "no snapshot matches");
    assert!(
        env.snapshot_ids().is_empty(),
        "a failed backup left a snapshot"
    );
    // 1: a restore target that cannot be created (under a regular file).
    env.backup_ok(&[data.to_str().unwrap()]);
    let blocker = env.path("file");
    fs::write(&blocker, "x").unwrap();
    assert_clean_error(
        &env.bk(&[
            "restore",
            "latest",
            "--target",
            blocker.join("sub").to_str().unwrap(),
        ]),
        1,
        "create restore target",
    );
}

#[test]
fn restore_does_not_overwrite_without_flag() {
    let env = Env::new();
    env.init();
    let data = env.data();
    env.backup_ok(&[data.to_str().unwrap()]);
    let out = env.path("out");
    let target = out.to_str().unwrap();
    assert_eq!(code(&env.bk(&["restore", "latest", "--target", target])), 0);
    let f = out.join(data.strip_prefix("/").unwrap()).join("a.csv");
    fs::write(&f, "local edit").unwrap();
    assert_clean_error(
        &env.bk(&["restore", "latest", "--target", target]),
        1,
        "--overwrite",
    );
    assert_eq!(fs::read_to_string(&f).unwrap(), "local edit");
    let o = env.bk(&["restore", "latest", "--target", target, "--overwrite"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(fs::read_to_string(&f).unwrap(), "x,y\n1,2\n");
}

#[test]
fn forget_needs_confirmation_without_a_terminal() {
    let env = Env::new();
    env.init();
    let data = env.data();
    env.backup_ok(&[data.to_str().unwrap()]);
    let id = env.snapshot_ids().remove(0);
    assert_clean_error(&env.bk(&["forget", &id]), 2, "--yes");
    assert_eq!(env.snapshot_ids(), vec![id.clone()]);
    let o = env.bk(&["forget", &id, "--dry-run"]);
    assert_eq!(code(&o), 0);
    assert!(stdout(&o).contains("would remove"));
    assert_eq!(env.snapshot_ids().len(), 1);
    let o = env.bk(&["forget", &id, "--yes"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(env.snapshot_ids().is_empty());
    assert!(!env.path("repo/snapshots").join(&id).exists());
}

#[test]
fn damaged_data_gives_integrity_exit_code() {
    let env = Env::new();
    env.init();
    let data = env.data();
    fs::write(data.join("big.bin"), pseudo_random(300_000, 7)).unwrap();
    env.backup_ok(&[data.to_str().unwrap()]);
    let id = env.snapshot_ids().remove(0);
    let obj = env.path("repo/snapshots").join(&id).join("files.tar.gz");
    let mut bytes = fs::read(&obj).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    fs::write(&obj, &bytes).unwrap();
    let o = env.bk(&["check", "--read-data"]);
    assert_eq!(code(&o), 13, "{}", stderr(&o));
    assert!(
        stdout(&o).contains(&id) && stdout(&o).contains("files.tar.gz"),
        "{}",
        stdout(&o)
    );
    // Restoring damaged data fails the same way.
    let o = env.restore_to(&id, "out");
    assert_eq!(code(&o), 13, "{}", stderr(&o));
}

#[test]
fn an_exclusive_lock_of_a_live_process_gives_locked() {
    let env = Env::new();
    env.init();
    let data = env.data();
    env.backup_ok(&[data.to_str().unwrap()]);
    let id = env.snapshot_ids().remove(0);
    let mut holder = Command::new("sleep").arg("30").spawn().unwrap();
    let lock = serde_json::json!({
        "exclusive": true,
        "host": hostname(),
        "pid": holder.id(),
        "time": chrono::Utc::now(),
        "snapshot": null,
    });
    fs::create_dir_all(env.path("repo/locks")).unwrap();
    fs::write(env.path("repo/locks/held.json"), lock.to_string()).unwrap();
    assert_clean_error(&env.bk(&["backup", data.to_str().unwrap()]), 11, "locked");
    assert_clean_error(&env.bk(&["forget", &id, "--yes"]), 11, "backupkit unlock");
    // A live lock is not stale: plain unlock keeps it.
    assert_eq!(code(&env.bk(&["unlock"])), 0);
    assert!(env.path("repo/locks/held.json").exists());
    holder.kill().unwrap();
    holder.wait().unwrap();
    // Its process is gone: the lock is stale, blocks nothing, and unlock removes it.
    env.backup_ok(&[data.to_str().unwrap()]);
    let o = env.bk(&["unlock"]);
    assert_eq!(code(&o), 0);
    assert!(stdout(&o).contains("1 lock(s) removed"), "{}", stdout(&o));
    assert!(!env.path("repo/locks/held.json").exists());
}

fn hostname() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
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

#[test]
fn unreadable_file_gives_a_warning_and_exit_3() {
    let env = Env::new();
    // The repository and tree must be usable by an unprivileged user.
    let root = env.path("world");
    fs::create_dir_all(root.join("data")).unwrap();
    set_mode(env.dir.path(), 0o755);
    set_mode(&root, 0o777);
    set_mode(&root.join("data"), 0o777);
    fs::write(root.join("data/ok.csv"), "1\n").unwrap();
    fs::write(root.join("data/secret.csv"), "2\n").unwrap();
    set_mode(&root.join("data/ok.csv"), 0o644);
    set_mode(&root.join("data/secret.csv"), 0o000);
    let repo = root.join("repo");
    // root reads everything: run as `nobody` so the file is unreadable.
    let as_user = |args: &[&str]| unprivileged(&repo, args);
    let o = as_user(&["init"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let o = as_user(&["backup", root.join("data").to_str().unwrap()]);
    let err = stderr(&o);
    assert_eq!(code(&o), 3, "{err}");
    assert!(
        err.contains("secret.csv") && err.contains("incomplete"),
        "{err}"
    );
    let o = as_user(&["snapshots", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v[0]["status"], "incomplete");
    assert_eq!(v[0]["file_count"], 1);
    assert!(v[0]["warnings"][0].as_str().unwrap().contains("secret.csv"));
}

#[test]
fn a_read_only_repository_is_restored_and_checked_with_no_lock() {
    let env = Env::new();
    env.init();
    let data = env.data();
    let id = env.backup_ok(&[data.to_str().unwrap()]);
    // The repository is not writable by the user who reads it (root writes
    // everywhere, so the reader is `nobody`; otherwise the mode is enough).
    set_mode(env.dir.path(), 0o755);
    let out = env.path("out");
    fs::create_dir_all(&out).unwrap();
    set_mode(&out, 0o777);
    let reader = |args: &[&str]| unprivileged(&env.path("repo"), args);
    if !is_root() {
        set_mode(&env.path("repo"), 0o555);
    }
    let target = out.to_str().unwrap();
    let o = reader(&["restore", &id, "--target", target]);
    assert_clean_error(&o, 1, "cannot write a lock");
    assert!(stderr(&o).contains("--no-lock"), "{}", stderr(&o));
    let o = reader(&["--no-lock", "restore", &id, "--target", target]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(
        fs::read_to_string(out.join(rel_path(&data)).join("a.csv")).unwrap(),
        "x,y\n1,2\n"
    );
    let o = reader(&["--no-lock", "check", "--read-data"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    // Commands that write do not take it.
    let o = reader(&["--no-lock", "forget", &id, "--yes"]);
    assert_clean_error(&o, 2, "only for read-only commands");
    if !is_root() {
        set_mode(&env.path("repo"), 0o755);
    }
    assert_eq!(env.snapshot_ids(), vec![id]);
}

/// Runs backupkit on `repo` as a user without root's rights: `nobody` when
/// the tests run as root, else the current user.
fn unprivileged(repo: &Path, args: &[&str]) -> Output {
    let repo = repo.to_str().unwrap();
    let mut all = vec!["-r", repo];
    all.extend_from_slice(args);
    as_nobody(&all)
}

/// Runs backupkit as `nobody` when the tests run as root (root reads
/// everything), else as the current user.
fn as_nobody(args: &[&str]) -> Output {
    let mut c = if is_root() {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", BIN]);
        c
    } else {
        Command::new(BIN)
    };
    c.args(args).stdin(Stdio::null()).output().unwrap()
}

fn rel_path(p: &Path) -> &Path {
    p.strip_prefix("/").unwrap()
}

fn is_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

fn set_mode(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn full_disk_fails_cleanly_and_leaves_nothing_visible() {
    let env = Env::new();
    let mnt = env.path("small");
    fs::create_dir_all(&mnt).unwrap();
    let mounted = Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            "size=1m",
            "tmpfs",
            mnt.to_str().unwrap(),
        ])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        require_or_skip("mounting a 1 MiB tmpfs (needs root)");
        return;
    }
    let repo = mnt.join("repo");
    let r = repo.to_str().unwrap();
    let data = env.data();
    assert_eq!(code(&env.run(&["-r", r, "init"])), 0);
    // A first, small snapshot fits; the second does not.
    let o = env.run(&["-r", r, "--json", "backup", data.to_str().unwrap()]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let first: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let first = first["snapshot"]["id"].as_str().unwrap().to_owned();
    fs::write(data.join("big.bin"), pseudo_random(3 << 20, 3)).unwrap();
    let o = env.run(&[
        "-r",
        r,
        "backup",
        data.to_str().unwrap(),
        "--compression",
        "none",
    ]);
    let err = stderr(&o);
    // What is visible afterwards: the first snapshot only, whole; no
    // unfinished directory, no temporary file, no lock.
    let listed = env.run(&["-r", r, "snapshots", "--json"]);
    let ids: Vec<String> = serde_json::from_slice::<serde_json::Value>(&listed.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_owned())
        .collect();
    let check = env.run(&["-r", r, "--json", "check", "--read-data"]);
    let left = walk_names(&repo);
    let _ = Command::new("umount").arg("-l").arg(&mnt).status();
    assert_eq!(code(&o), 1, "{err}");
    assert!(
        err.contains("No space left") || err.contains("space"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(ids, [first]);
    assert_eq!(code(&check), 0, "{}", stderr(&check));
    let report: serde_json::Value = serde_json::from_slice(&check.stdout).unwrap();
    assert_eq!(report["unfinished"], serde_json::json!([]), "{report}");
    let stray = |n: &String| {
        n.contains(".tmp-")
            || (Path::new(n).extension().is_some_and(|e| e == "json")
                && n != "backupkit.json"
                && n != "snapshot.json")
    };
    assert!(!left.iter().any(stray), "left behind: {left:?}");
    assert_eq!(
        left.iter().filter(|n| n.contains("_files_")).count(),
        1,
        "only the first snapshot's directory: {left:?}"
    );
}

fn require_or_skip(what: &str) {
    assert!(
        std::env::var("BACKUPKIT_REQUIRE_SERVICES").is_err_and(|_| true)
            || std::env::var("BACKUPKIT_REQUIRE_SERVICES").is_ok_and(|v| v != "1"),
        "required for this test but unavailable: {what}"
    );
    eprintln!("skipped: {what} is not possible here");
}

#[test]
fn kill_9_during_backup_leaves_earlier_snapshots_intact() {
    kill_9_during_backup(false);
}

#[test]
fn kill_9_during_a_dedup_backup_leaves_earlier_snapshots_intact() {
    kill_9_during_backup(true);
}

fn kill_9_during_backup(dedup: bool) {
    let env = Env::new();
    if dedup {
        env.init_dedup();
    } else {
        env.init();
    }
    let data = env.path("data");
    fs::create_dir_all(&data).unwrap();
    for i in 0..300 {
        fs::write(
            data.join(format!("r{i:03}.csv")),
            format!("{i},{}\n", i * 7).repeat(50),
        )
        .unwrap();
    }
    for i in 0..4 {
        fs::write(
            data.join(format!("video{i}.bin")),
            pseudo_random(8 << 20, i),
        )
        .unwrap();
    }
    let d = data.to_str().unwrap();
    env.backup_ok(&[d]);
    let first = env.snapshot_ids();
    let repo = env.repo();
    let mut completed = 0;
    let mut interrupted_mid_write = 0;
    for (run, delay_ms) in [5u64, 30, 80, 150, 300, 600].into_iter().enumerate() {
        // New data each run, so that every backup has chunks to store (an
        // unchanged tree stores nothing before its commit).
        fs::write(
            data.join("video0.bin"),
            pseudo_random(8 << 20, 100 + run as u64),
        )
        .unwrap();
        let exited_cleanly = run_killed_after(&["-r", &repo, "-q", "backup", d], delay_ms);
        let ids = env.snapshot_ids();
        // A kill that lands after the commit (while the process saves its
        // stat cache or exits) leaves a complete snapshot, which is right;
        // one before the commit leaves none. `check --read-data` below
        // proves whatever is listed is whole.
        let new = ids.len() - first.len() - completed;
        assert!(new <= 1, "one backup made two snapshots: {ids:?}");
        assert!(
            !exited_cleanly || new == 1,
            "a finished backup is missing: {ids:?}"
        );
        completed += new;
        assert!(ids.starts_with(&first));
        let o = env.bk(&["check", "--read-data", "--json"]);
        assert_eq!(
            code(&o),
            0,
            "after kill at {delay_ms} ms: {}{}",
            stdout(&o),
            stderr(&o)
        );
        let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        // Mid-write: the kill stopped a backup before its commit (in a
        // deduplicated repository that leaves packs at most, or only
        // temporary files: its snapshot objects are all written at the end),
        // or left a snapshot directory without its commit.
        if (!exited_cleanly && new == 0) || !report["unfinished"].as_array().unwrap().is_empty() {
            interrupted_mid_write += 1;
        }
    }
    // Some kills landed mid-write (the test would prove nothing otherwise).
    assert!(interrupted_mid_write > 0, "no kill hit a backup mid-write");
    // The next backup succeeds and removes every leftover.
    let o = env.bk(&["backup", d]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let o = env.bk(&["check", "--read-data", "--json"]);
    assert_eq!(code(&o), 0);
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["unfinished"], serde_json::json!([]), "{report}");
    let dirs = fs::read_dir(env.path("repo/snapshots")).unwrap().count();
    assert_eq!(dirs, first.len() + completed + 1);
    let tmp_left = walk_names(&env.path("repo/snapshots"))
        .into_iter()
        .filter(|n| n.contains(".tmp-"))
        .count();
    assert_eq!(tmp_left, 0);
}

/// `kill -9` of backups into a (remote) repository at several moments:
/// no killed backup is ever listed, at least one kill lands mid-upload, and
/// the next backup and `check --read-data` pass with no leftovers.
fn kill_9_mid_upload_leaves_nothing_visible(
    env: &Env,
    location: &str,
    opts: &[String],
    data: &str,
) {
    let before = ids_at(env, location, opts).len();
    let mut killed = 0;
    // Kills that landed inside the backup's work: it held its lock (taken
    // before the first object is written, released after the commit), so
    // the kill left it behind.
    let mut killed_while_writing = 0;
    // Kills that left a snapshot directory with objects but no commit: an
    // upload was under way. Over SFTP the temporary objects show it; object
    // stores and rclone keep an unfinished upload invisible, so there only
    // the lock left behind shows the kill landed inside the backup.
    let mut killed_mid_upload = 0;
    let mut listed = before;
    // Longer delays only while no kill has yet landed inside the backup:
    // a loaded machine (or a slow rclone start) can put all the short
    // ones before the lock is taken.
    for delay_ms in [120, 300, 700, 1500, 3000] {
        if delay_ms > 700
            && killed_while_writing > 0
            && (killed_mid_upload > 0 || !location.starts_with("sftp://"))
        {
            break;
        }
        let mut all: Vec<&str> = vec!["-r", location];
        all.extend(opts.iter().map(String::as_str));
        all.extend(["-q", "backup", data]);
        let finished = run_killed_after(&all, delay_ms);
        let ids = ids_at(env, location, opts);
        if finished {
            assert_eq!(ids.len(), listed + 1, "{location}: {ids:?}");
        } else if ids.len() == listed + 1 {
            // Killed after its commit point (snapshot.json stored): a
            // complete snapshot, which must read back whole.
            let newest = ids.last().unwrap();
            let mut check: Vec<&str> = vec!["-r", location];
            check.extend(opts.iter().map(String::as_str));
            check.extend(["check", "--read-data", newest]);
            let o = env.run(&check);
            assert_eq!(
                code(&o),
                0,
                "{location}: killed after its commit: {}",
                stderr(&o)
            );
        } else {
            assert_eq!(
                ids.len(),
                listed,
                "{location}: a killed backup is listed: {ids:?}"
            );
            killed += 1;
            let mut check: Vec<&str> = vec!["-r", location];
            check.extend(opts.iter().map(String::as_str));
            check.extend(["--json", "check"]);
            let o = env.run(&check);
            let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
            if report["unfinished"]
                .as_array()
                .is_some_and(|u| !u.is_empty())
            {
                killed_mid_upload += 1;
            }
            let mut unlock: Vec<&str> = vec!["-r", location];
            unlock.extend(opts.iter().map(String::as_str));
            unlock.push("unlock");
            let o = env.run(&unlock);
            assert_eq!(code(&o), 0, "{location}: {}", stderr(&o));
            if !stdout(&o).starts_with("0 lock(s)") {
                killed_while_writing += 1;
            }
        }
        listed = ids.len();
    }
    assert!(
        killed > 0,
        "{location}: no kill landed before the backup finished"
    );
    assert!(
        killed_while_writing > 0,
        "{location}: no kill landed while the backup was writing (none left its lock)"
    );
    assert!(
        killed_mid_upload > 0 || !location.starts_with("sftp://"),
        "{location}: no kill landed mid-upload (none left an unfinished snapshot)"
    );
    let mut all: Vec<&str> = vec!["-r", location];
    all.extend(opts.iter().map(String::as_str));
    let run = |extra: &[&str]| {
        let mut a = all.clone();
        a.extend_from_slice(extra);
        env.run(&a)
    };
    let o = run(&["backup", data]);
    assert_eq!(code(&o), 0, "{location}: {}", stderr(&o));
    let o = run(&["check", "--read-data", "--json"]);
    assert_eq!(code(&o), 0, "{location}: {}", stderr(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        report["unfinished"],
        serde_json::json!([]),
        "{location}: {report}"
    );
}

/// Runs backupkit quietly and `kill -9`s it after `ms` milliseconds;
/// returns whether it had finished successfully first.
fn run_killed_after(args: &[&str], ms: u64) -> bool {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    signal_after(&child, ms, "-9");
    child.wait().unwrap().success()
}

/// Sends `signal` (`-9`, `-INT`) to a child after `ms` milliseconds.
fn signal_after(child: &std::process::Child, ms: u64, signal: &str) {
    std::thread::sleep(Duration::from_millis(ms));
    let _ = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status();
}

fn walk_names(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap().flatten() {
        out.push(e.file_name().to_string_lossy().into_owned());
        if e.file_type().unwrap().is_dir() {
            out.extend(walk_names(&e.path()));
        }
    }
    out
}

#[test]
fn broken_pipe_is_not_an_error() {
    let env = Env::new();
    env.init();
    let data = env.data();
    for i in 0..2000 {
        fs::write(data.join(format!("f{i}")), "x").unwrap();
    }
    env.backup_ok(&[data.to_str().unwrap()]);
    let mut child = Command::new(BIN)
        .args(["-r", &env.repo(), "ls", "latest"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read one byte, then close the pipe like `| head -c1`.
    let mut out = child.stdout.take().unwrap();
    let mut one = [0u8; 1];
    std::io::Read::read_exact(&mut out, &mut one).unwrap();
    drop(out);
    let o = child.wait_with_output().unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let _ = std::io::stderr().flush();
}

#[test]
fn dry_run_writes_nothing() {
    let env = Env::new();
    env.init();
    let data = env.data();
    let o = env.bk(&[
        "backup",
        "--dry-run",
        data.to_str().unwrap(),
        "--exclude",
        "*.json",
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(
        stdout(&o).contains("would back up 1 files"),
        "{}",
        stdout(&o)
    );
    assert!(env.snapshot_ids().is_empty());
    // Nothing at all was written: the repository holds only its marker.
    assert_eq!(walk_names(&env.path("repo")), ["backupkit.json"]);
}

/// The README's promise: with backupkit gone, `sha256sum -c` and plain `tar`
/// verify and restore a snapshot of each compression.
#[test]
fn snapshots_restore_with_plain_sha256sum_and_tar() {
    let env = Env::new();
    env.init();
    let data = env.data();
    fs::write(data.join("video.bin"), pseudo_random(1 << 20, 9)).unwrap();
    std::os::unix::fs::symlink("a.csv", data.join("link")).unwrap();
    for (compression, flags) in [("gzip", "-xzf"), ("zstd", "--zstd -xf"), ("none", "-xf")] {
        let o = env.bk(&[
            "backup",
            data.to_str().unwrap(),
            "--compression",
            compression,
        ]);
        assert_eq!(code(&o), 0, "{}", stderr(&o));
        let id = env.snapshot_ids().pop().unwrap();
        let dir = env.path("repo/snapshots").join(&id);
        let o = Command::new("sha256sum")
            .arg("-c")
            .arg("SHA256SUMS")
            .current_dir(&dir)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stdout(&o));
        let object = fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .find(|n| n.starts_with("files.tar"))
            .unwrap();
        let out = env.path(&format!("plain-{compression}"));
        fs::create_dir_all(&out).unwrap();
        let script = format!(
            "tar {flags} '{}' -C '{}'",
            dir.join(&object).display(),
            out.display()
        );
        let o = Command::new("bash")
            .arg("-c")
            .arg(&script)
            .output()
            .unwrap();
        assert!(o.status.success(), "{script}: {}", stderr(&o));
        let copy = out.join(data.strip_prefix("/").unwrap());
        for f in ["a.csv", "sub/b.json", "video.bin"] {
            assert_eq!(
                fs::read(copy.join(f)).unwrap(),
                fs::read(data.join(f)).unwrap(),
                "{f}"
            );
        }
        assert_eq!(
            fs::read_link(copy.join("link")).unwrap(),
            Path::new("a.csv")
        );
    }
}

#[test]
fn snapshots_filter_by_tag_host_and_path() {
    let env = Env::new();
    env.init();
    let data = env.data();
    let other = env.path("other");
    fs::create_dir_all(&other).unwrap();
    let d = data.to_str().unwrap();
    let o = other.to_str().unwrap();
    env.backup_ok(&[d, "--tag", "raw,nightly"]);
    env.backup_ok(&[o, "--host", "cluster-node-7"]);
    let count = |args: &[&str]| -> usize {
        let mut all = vec!["snapshots", "--json"];
        all.extend_from_slice(args);
        let out = env.bk(&all);
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        serde_json::from_slice::<serde_json::Value>(&out.stdout)
            .unwrap()
            .as_array()
            .unwrap()
            .len()
    };
    assert_eq!(count(&[]), 2);
    assert_eq!(count(&["--tag", "nightly"]), 1);
    assert_eq!(count(&["--tag", "weekly"]), 0);
    assert_eq!(count(&["--host", "cluster-node-7"]), 1);
    assert_eq!(count(&["--path", o]), 1);
    assert_eq!(count(&["--path", d, "--tag", "raw"]), 1);
    assert_eq!(count(&["--path", d, "--host", "cluster-node-7"]), 0);
}

/// Whether util-linux `script` is there to give the binary a terminal
/// (otherwise the test skips, or fails under `BACKUPKIT_REQUIRE_SERVICES`).
fn have_pty_tool() -> bool {
    let ok = Command::new("script").arg("--version").output().is_ok();
    if !ok {
        require_or_skip("util-linux `script` for a pseudo-terminal");
    }
    ok
}

/// Runs the binary on a pseudo-terminal (util-linux `script`), feeding
/// `input` to it; returns everything the terminal showed.
fn on_terminal(env: &Env, args: &str, input: &str) -> (i32, String) {
    let cmd = format!("'{BIN}' -r '{}' {args}", env.repo());
    let mut child = Command::new("script")
        .args(["-qefc", &cmd, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let o = child.wait_with_output().unwrap();
    (code(&o), stdout(&o))
}

#[test]
fn on_a_terminal_forget_asks_for_a_typed_yes() {
    if !have_pty_tool() {
        return;
    }
    let env = Env::new();
    env.init();
    let data = env.data();
    env.backup_ok(&[data.to_str().unwrap()]);
    let id = env.snapshot_ids().remove(0);
    let (rc, screen) = on_terminal(&env, &format!("forget {id}"), "no\n");
    assert_eq!(rc, 2, "{screen}");
    assert!(screen.contains("Type \"yes\" to confirm"), "{screen}");
    assert_eq!(
        env.snapshot_ids(),
        vec![id.clone()],
        "deleted without a yes"
    );
    let (rc, screen) = on_terminal(&env, &format!("forget {id}"), "yes\n");
    assert_eq!(rc, 0, "{screen}");
    assert!(env.snapshot_ids().is_empty());
}

#[test]
fn progress_is_drawn_on_a_terminal_only() {
    if !have_pty_tool() {
        return;
    }
    let env = Env::new();
    env.init();
    let data = env.data();
    fs::write(data.join("big.bin"), pseudo_random(40 << 20, 5)).unwrap();
    let (rc, screen) = on_terminal(&env, &format!("backup '{}'", data.display()), "");
    assert_eq!(rc, 0, "{screen}");
    // indicatif draws the bar with the byte counts and a rate.
    assert!(
        screen.contains("MiB/s") || screen.contains("KiB/s") || screen.contains("B/s"),
        "{screen:?}"
    );
    // Without a terminal, stderr has no progress at all.
    let o = env.bk(&["backup", data.to_str().unwrap()]);
    assert_eq!(code(&o), 0);
    assert!(o.stderr.is_empty(), "{}", stderr(&o));
}

#[test]
fn read_data_subsets_cover_every_snapshot_once() {
    let env = Env::new();
    env.init();
    let data = env.data();
    for _ in 0..6 {
        env.backup_ok(&["-q", data.to_str().unwrap()]);
    }
    let mut read: Vec<String> = Vec::new();
    for n in 1..=3 {
        let subset = format!("{n}/3");
        let o = env.bk(&["check", "--read-data-subset", &subset, "--json"]);
        assert_eq!(code(&o), 0, "{}", stderr(&o));
        let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(report["snapshots_checked"], 6);
        let ids: Vec<String> = report["read"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect();
        assert_eq!(report["snapshots_read"], ids.len());
        read.extend(ids);
    }
    read.sort();
    let mut all = env.snapshot_ids();
    all.sort();
    assert_eq!(
        read, all,
        "the three groups together read every snapshot, each once"
    );
    let o = env.bk(&["check", "--read-data-subset", "50%", "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["snapshots_read"], 3);
    assert_clean_error(
        &env.bk(&["check", "--read-data-subset", "4/3"]),
        2,
        "read-data-subset",
    );
}

#[test]
fn restore_include_and_verbose_listing() {
    let env = Env::new();
    env.init();
    let data = env.data();
    let o = env.bk(&["-v", "backup", data.to_str().unwrap()]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    // -v names each file on stderr; stdout keeps only the result.
    assert!(
        stderr(&o).contains("sub/b.json") && stderr(&o).contains("a.csv"),
        "{}",
        stderr(&o)
    );
    assert_eq!(stdout(&o).lines().count(), 1, "{}", stdout(&o));
    let out = env.path("out");
    let o = env.bk(&[
        "restore",
        "latest",
        "--target",
        out.to_str().unwrap(),
        "--include",
        "sub",
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let base = out.join(data.strip_prefix("/").unwrap());
    assert!(base.join("sub/b.json").is_file());
    assert!(!base.join("a.csv").exists());
}

#[test]
fn a_damaged_snapshot_json_is_reported_and_blocks_nothing_else() {
    let env = Env::new();
    env.init();
    let data = env.data();
    let good = env.backup_ok(&[data.to_str().unwrap()]);
    let bad = env.backup_ok(&[data.to_str().unwrap()]);
    fs::write(
        env.path("repo/snapshots").join(&bad).join("snapshot.json"),
        "{",
    )
    .unwrap();
    let o = env.bk(&["snapshots"]);
    assert_eq!(code(&o), 0);
    assert!(
        stdout(&o).contains(&good) && !stdout(&o).contains(&bad),
        "{}",
        stdout(&o)
    );
    assert!(
        stderr(&o).contains(&bad) && stderr(&o).contains("damaged"),
        "{}",
        stderr(&o)
    );
    let o = env.restore_to(&good, "out");
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(code(&env.bk(&["ls", &bad])), 13);
    let o = env.bk(&["check"]);
    assert_eq!(code(&o), 13);
    assert!(stdout(&o).contains(&bad), "{}", stdout(&o));
}

#[test]
fn ctrl_c_cancels_cleanly_with_exit_130() {
    let env = Env::new();
    env.init();
    let data = env.data();
    for i in 0..6 {
        fs::write(
            data.join(format!("video{i}.bin")),
            pseudo_random(8 << 20, i),
        )
        .unwrap();
    }
    let d = data.to_str().unwrap();
    let before = env.backup_ok(&[d]);
    let child = Command::new(BIN)
        .args(["-r", &env.repo(), "backup", d])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    signal_after(&child, 150, "-INT");
    let o = child.wait_with_output().unwrap();
    let err = stderr(&o);
    assert_eq!(code(&o), 130, "{err}");
    assert!(
        err.contains("interrupted") && !err.contains("panicked"),
        "{err}"
    );
    // Nothing partial is visible, and nothing is left behind to clean up.
    assert_eq!(env.snapshot_ids(), vec![before]);
    let o = env.bk(&["check", "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["unfinished"], serde_json::json!([]), "{report}");
    assert!(env.bk(&["unlock"]).stdout.starts_with(b"0 lock(s) removed"));
}

#[test]
fn ctrl_c_stops_restore_and_check_inside_a_large_file() {
    let env = Env::new();
    env.init();
    let data = env.path("data");
    fs::create_dir_all(&data).unwrap();
    // One large file (sparse, so cheap to make): cancellation between
    // entries alone could not stop inside it.
    let big = fs::File::create(data.join("recording.bin")).unwrap();
    big.set_len(1 << 30).unwrap();
    drop(big);
    let id = env.backup_ok(&["--compression", "none", data.to_str().unwrap()]);

    let out = env.path("out");
    let restored = out
        .join(data.strip_prefix("/").unwrap())
        .join("recording.bin");
    let child = Command::new(BIN)
        .args(["-r", &env.repo(), "restore", &id, "--target"])
        .arg(&out)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Interrupt once the file is being written.
    let started = std::time::Instant::now();
    while !restored.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "restore never started"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    signal_after(&child, 20, "-INT");
    let signalled = std::time::Instant::now();
    let o = child.wait_with_output().unwrap();
    assert_eq!(code(&o), 130, "{}", stderr(&o));
    assert!(
        signalled.elapsed() < Duration::from_secs(5),
        "took {:?} to stop",
        signalled.elapsed()
    );
    assert!(!restored.exists(), "the partial file was left behind");

    let child = Command::new(BIN)
        .args(["-r", &env.repo(), "check", "--read-data"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    signal_after(&child, 300, "-INT");
    let o = child.wait_with_output().unwrap();
    assert_eq!(code(&o), 130, "{}", stderr(&o));
    assert!(env.bk(&["unlock"]).stdout.starts_with(b"0 lock(s) removed"));
}

/// Moves a snapshot's recorded time (the policy works on `timestamp`).
fn set_time(env: &Env, id: &str, time: &str) {
    let path = env.path("repo/snapshots").join(id).join("snapshot.json");
    let mut meta: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    meta["timestamp"] = time.into();
    fs::write(&path, serde_json::to_vec(&meta).unwrap()).unwrap();
}

#[test]
fn forget_by_policy_keeps_what_restic_would_and_says_why() {
    let env = Env::new();
    env.init();
    let data = env.data();
    let d = data.to_str().unwrap();
    // Noon UTC is the same calendar day in every time zone CI may use.
    let days = [
        "2026-11-20",
        "2026-11-21",
        "2026-11-21",
        "2026-11-23",
        "2026-11-24",
    ];
    let mut ids = Vec::new();
    for (i, day) in days.iter().enumerate() {
        let id = env.backup_ok(&[d]);
        set_time(&env, &id, &format!("{day}T12:00:0{i}Z"));
        ids.push(id);
    }
    let other = env.backup_ok(&[d, "--host", "other-host"]);

    let o = env.bk(&["forget", "--keep-daily", "2", "--dry-run", "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let groups = v["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 2, "one group per host: {v}");
    let mine = groups.iter().find(|g| g["host"] != "other-host").unwrap();
    let kept: Vec<&str> = mine["keep"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["id"].as_str().unwrap())
        .collect();
    assert_eq!(kept, [ids[4].as_str(), ids[3].as_str()]);
    assert_eq!(
        mine["keep"][0]["reasons"],
        serde_json::json!(["daily snapshot"])
    );
    assert_eq!(mine["remove"].as_array().unwrap().len(), 3);
    assert_eq!(env.snapshot_ids().len(), 6, "a dry run deleted something");

    // Deleting needs --yes without a terminal.
    assert_clean_error(&env.bk(&["forget", "--keep-daily", "2"]), 2, "--yes");
    assert_eq!(env.snapshot_ids().len(), 6);
    // The seeds' grandfather-father-son policy, in one command, only for this host.
    let host = hostname();
    let o = env.bk(&[
        "forget",
        "--keep-daily",
        "2",
        "--keep-weekly",
        "4",
        "--keep-monthly",
        "12",
        "--host",
        &host,
        "--yes",
        "--prune",
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stdout(&o).contains("weekly snapshot"), "{}", stdout(&o));
    let mut left = env.snapshot_ids();
    left.sort();
    // Weekly: 23-24 Nov are ISO week 48 (kept as daily), 20-21 Nov week 47:
    // its newest, 21 Nov (the later one). Monthly: November's newest, and
    // as the monthly count is not used up, the oldest, 20 Nov.
    let mut want = vec![
        ids[0].clone(),
        ids[2].clone(),
        ids[3].clone(),
        ids[4].clone(),
        other,
    ];
    want.sort();
    assert_eq!(left, want);
    assert!(
        !env.path("repo/snapshots").join(&ids[1]).exists(),
        "data of a forgotten snapshot is left"
    );
}

#[test]
fn forget_refuses_ambiguous_or_empty_requests() {
    let env = Env::new();
    env.init();
    let data = env.data();
    let id = env.backup_ok(&[data.to_str().unwrap()]);
    assert_clean_error(&env.bk(&["forget"]), 2, "policy");
    assert_clean_error(&env.bk(&["forget", &id, "--keep-last", "1"]), 2, "not both");
    assert_eq!(code(&env.bk(&["forget", "--keep-last", "lots"])), 2);
    assert_clean_error(
        &env.bk(&["forget", "--keep-within", "3 weeks"]),
        2,
        "duration",
    );
    let o = env.bk(&["forget", "--keep-last", "unlimited", "--yes"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(env.snapshot_ids(), vec![id.clone()]);
    // An empty id (an unset shell variable) selects nothing, anywhere.
    for args in [
        &["forget", "", "--yes"][..],
        &["forget", " ", "--yes"],
        &["restore", "", "--target", env.path("out").to_str().unwrap()],
        &["ls", ""],
        &["check", ""],
    ] {
        assert_clean_error(&env.bk(args), 2, "empty snapshot id");
    }
    assert_eq!(env.snapshot_ids(), vec![id]);
    assert!(!env.path("out").exists());
}

#[test]
fn hostile_names_are_escaped_in_human_output_and_exact_in_json() {
    let env = Env::new();
    env.init();
    let data = env.path("data");
    fs::create_dir_all(&data).unwrap();
    let evil = "x\nd6666            0 2020-01-01 00:00:00 forged\x1b[2J";
    fs::write(data.join(evil), "boo").unwrap();
    let id = env.backup_ok(&[data.to_str().unwrap()]);
    let o = env.bk(&["ls", &id]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let text = stdout(&o);
    assert!(
        !text.contains('\x1b'),
        "an escape sequence reached the terminal"
    );
    assert!(text.contains("x\\nd6666"), "{text}");
    assert_eq!(
        text.lines().filter(|l| l.contains("forged")).count(),
        1,
        "{text}"
    );
    assert!(
        !text.lines().any(|l| l.starts_with("d6666")),
        "a forged line: {text}"
    );
    let o = env.bk(&["--json", "ls", &id]);
    let entries: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(
        entries
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["path"].as_str().unwrap().ends_with(evil)),
        "JSON must keep the exact name"
    );
    let out = env.path("out");
    let o = env.bk(&["-v", "restore", &id, "--target", out.to_str().unwrap()]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(!stderr(&o).contains('\x1b'), "{}", stderr(&o));
    assert!(stderr(&o).contains("x\\nd6666"), "{}", stderr(&o));
    assert!(!stderr(&o).lines().any(|l| l.starts_with("d6666")));
}

#[test]
fn a_symlinked_snapshot_directory_is_never_read_or_deleted_through() {
    let env = Env::new();
    env.init();
    let data = env.data();
    let id = env.backup_ok(&[data.to_str().unwrap()]);
    // Outside the repository: a directory with files and a subdirectory.
    let canary = env.path("canary");
    fs::create_dir_all(canary.join("sub")).unwrap();
    fs::write(canary.join("precious.txt"), "keep me").unwrap();
    fs::write(canary.join("sub/also.txt"), "and me").unwrap();
    // A copy of a real snapshot's objects, so that read through the link it
    // would look like a snapshot.
    for name in [
        "files.tar.gz",
        "manifest.jsonl.zst",
        "SHA256SUMS",
        "snapshot.json",
    ] {
        fs::copy(
            env.path("repo/snapshots").join(&id).join(name),
            canary.join(name),
        )
        .unwrap();
    }
    let before = walk_names(&canary);
    let evil = id.replace("_files_", "_evil_");
    std::os::unix::fs::symlink(&canary, env.path("repo/snapshots").join(&evil)).unwrap();

    assert_eq!(env.snapshot_ids(), vec![id.clone()]);
    for args in [
        &["forget", evil.as_str(), "--yes"][..],
        &["ls", evil.as_str()],
        &[
            "restore",
            evil.as_str(),
            "--target",
            env.path("out").to_str().unwrap(),
        ],
    ] {
        assert_clean_error(&env.bk(args), 4, "no snapshot matches");
    }
    let o = env.bk(&["forget", "--keep-last", "1", "--yes"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let o = env.bk(&["check", "--read-data"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(walk_names(&canary), before, "the directory outside changed");
    assert_eq!(
        fs::read_to_string(canary.join("precious.txt")).unwrap(),
        "keep me"
    );
    assert!(!env.path("out").exists());
}

/// A results database like seed 001's: two tables, one with a quoted name.
fn make_results_db(path: &Path, rows: i64) {
    let c = rusqlite::Connection::open(path).unwrap();
    c.execute_batch(
        "CREATE TABLE runs(id INTEGER PRIMARY KEY, score REAL, note TEXT);
         CREATE INDEX runs_score ON runs(score);
         CREATE TABLE \"odd name\"(x BLOB);
         INSERT INTO \"odd name\" VALUES (x'00ff10');",
    )
    .unwrap();
    let tx = c.unchecked_transaction().unwrap();
    for i in 0..rows {
        tx.execute(
            "INSERT INTO runs(score, note) VALUES (?1, ?2)",
            rusqlite::params![i as f64 * 0.25, format!("run {i}")],
        )
        .unwrap();
    }
    tx.commit().unwrap();
}

fn count_rows(path: &Path, table: &str) -> i64 {
    let c = rusqlite::Connection::open(path).unwrap();
    c.query_row(&format!("SELECT count(*) FROM \"{table}\""), [], |r| {
        r.get(0)
    })
    .unwrap()
}

/// Seed 001's workflow: `backup --db-path`, `list`, `auto`, `restore --target test_db.db`.
#[test]
fn sqlite_backup_auto_list_and_restore_like_seed_001() {
    let env = Env::new();
    env.init();
    let db = env.path("outputs/results.db");
    fs::create_dir_all(db.parent().unwrap()).unwrap();
    make_results_db(&db, 5000);
    let db_arg = db.to_str().unwrap();

    let id = env.backup_ok(&["--db-path", db_arg, "--force"]);
    let o = env.bk(&["list", "--json"]);
    let list: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(list[0]["kind"], "database");
    assert_eq!(list[0]["database"]["engine"], "sqlite");
    assert_eq!(list[0]["database"]["tables"]["runs"], 5000);
    assert_eq!(list[0]["database"]["tables"]["odd name"], 1);
    assert_eq!(
        list[0]["files_included"],
        serde_json::json!(["results.db.gz"])
    );

    // auto: the newest dump is recent, so nothing new; with a zero
    // interval it dumps and keeps the newest 2.
    let o = env.bk(&["--json", "auto", "--db", db_arg]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let auto: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(auto["action"], "skipped");
    for _ in 0..3 {
        let o = env.bk(&[
            "-q",
            "auto",
            "--db",
            db_arg,
            "--min-interval",
            "0",
            "--keep",
            "2",
        ]);
        assert_eq!(code(&o), 0, "{}", stderr(&o));
        assert!(o.stdout.is_empty(), "--quiet printed {}", stdout(&o));
    }
    let ids = env.snapshot_ids();
    assert_eq!(ids.len(), 2);
    assert!(
        !ids.contains(&id),
        "the oldest dump should have been pruned"
    );

    // Restore into a new file, as the seed's `--target test_db.db`.
    let test_db = env.path("test_db.db");
    let o = env.bk(&["restore", "latest", "--target", test_db.to_str().unwrap()]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stdout(&o).contains("counts verified"), "{}", stdout(&o));
    assert_eq!(count_rows(&test_db, "runs"), 5000);
    // Replacing an existing database needs --force; without it nothing changes.
    make_results_db(&env.path("other.db"), 7);
    fs::copy(env.path("other.db"), &test_db).unwrap();
    assert_clean_error(
        &env.bk(&["restore", "latest", "--target", test_db.to_str().unwrap()]),
        1,
        "--force",
    );
    assert_eq!(count_rows(&test_db, "runs"), 7);
    let o = env.bk(&[
        "restore",
        "latest",
        "--target",
        test_db.to_str().unwrap(),
        "--force",
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(count_rows(&test_db, "runs"), 5000);
    // The dump is a plain gzip of an SQLite file.
    let gz = env
        .path("repo/snapshots")
        .join(&ids[1])
        .join("results.db.gz");
    let o = Command::new("bash")
        .arg("-c")
        .arg(format!("gunzip -c '{}' | head -c 15", gz.display()))
        .output()
        .unwrap();
    assert_eq!(o.stdout, b"SQLite format 3");
    assert_eq!(code(&env.bk(&["check", "--read-data"])), 0);
    // A second database in the same repository: each keeps its own newest
    // two; pruning one never touches the other's dumps.
    let second = env.path("second.db");
    make_results_db(&second, 3);
    for _ in 0..3 {
        let o = env.bk(&[
            "-q",
            "auto",
            "--db",
            second.to_str().unwrap(),
            "--min-interval",
            "0",
            "--keep",
            "2",
        ]);
        assert_eq!(code(&o), 0, "{}", stderr(&o));
    }
    let after = env.snapshot_ids();
    assert_eq!(after.len(), 4, "{after:?}");
    assert!(
        ids.iter().all(|i| after.contains(i)),
        "the first database's dumps were pruned"
    );
}

#[test]
fn database_bad_input_is_one_clear_line() {
    let env = Env::new();
    env.init();
    assert_clean_error(
        &env.bk(&["backup", "--db", env.path("missing.db").to_str().unwrap()]),
        4,
        "missing.db",
    );
    let not_db = env.path("notes.txt");
    fs::write(&not_db, "this is not a database\n".repeat(100)).unwrap();
    let o = env.bk(&["backup", "--db", not_db.to_str().unwrap()]);
    assert_ne!(code(&o), 0);
    assert!(
        stderr(&o).contains("notes.txt") && !stderr(&o).contains("panicked"),
        "{}",
        stderr(&o)
    );
    assert_eq!(stderr(&o).trim_end().lines().count(), 1, "{}", stderr(&o));
    let o = env.bk(&[
        "backup",
        "--db",
        "postgres://lab:s3cret@127.0.0.1:1/results",
    ]);
    assert_ne!(code(&o), 0);
    assert!(
        !stderr(&o).contains("s3cret"),
        "a password was printed: {}",
        stderr(&o)
    );
    assert!(env.snapshot_ids().is_empty());
    // A database is never restored over a directory, and nothing in it is
    // touched.
    let data = env.data();
    let db = env.path("r.db");
    make_results_db(&db, 3);
    let db_id = env.backup_ok(&["--db", db.to_str().unwrap()]);
    assert_clean_error(&env.restore_to(&db_id, "data"), 2, "is a directory");
    assert!(data.join("a.csv").is_file());
}

/// Snapshot ids of the repository at `location` (with options).
fn ids_at(env: &Env, location: &str, options: &[String]) -> Vec<String> {
    let mut args: Vec<&str> = vec!["-r", location];
    args.extend(options.iter().map(String::as_str));
    args.extend(["snapshots", "--json"]);
    let o = env.run(&args);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn copy_replicates_snapshots_verifies_them_and_skips_those_present() {
    let env = Env::new();
    env.init();
    let data = env.data();
    fs::write(data.join("big.bin"), pseudo_random(2_000_000, 3)).unwrap();
    let d = data.to_str().unwrap();
    let first = env.backup_ok(&[d]);
    fs::write(data.join("later.txt"), "later").unwrap();
    let second = env.backup_ok(&[d]);
    let mirror = env.path("mirror").display().to_string();
    assert_eq!(code(&env.run(&["-r", &mirror, "init"])), 0);

    // One snapshot by prefix, then all: the first is skipped the second time.
    let o = env.run(&[
        "copy",
        "--from-repo",
        &env.repo(),
        "--to-repo",
        &mirror,
        &first,
        "--json",
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["copied"], serde_json::json!([first]));
    let o = env.run(&[
        "copy",
        "--from-repo",
        &env.repo(),
        "--to-repo",
        &mirror,
        "--json",
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["copied"], serde_json::json!([second]));
    assert_eq!(v["skipped"], serde_json::json!([first]));
    assert_eq!(
        ids_at(&env, &mirror, &[]),
        vec![first.clone(), second.clone()]
    );

    // The copy is byte-identical metadata, passes check --read-data, and
    // restores the same files.
    for id in [&first, &second] {
        let meta = |repo: &str| {
            fs::read(
                Path::new(repo)
                    .join("snapshots")
                    .join(id)
                    .join("snapshot.json"),
            )
            .unwrap()
        };
        assert_eq!(meta(&env.repo()), meta(&mirror));
    }
    let o = env.run(&["-r", &mirror, "check", "--read-data"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let out = env.path("out");
    let o = env.run(&[
        "-r",
        &mirror,
        "restore",
        &second,
        "--target",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let restored = out.join(data.strip_prefix("/").unwrap());
    assert_eq!(
        fs::read(restored.join("big.bin")).unwrap(),
        pseudo_random(2_000_000, 3)
    );
    assert_eq!(fs::read(restored.join("later.txt")).unwrap(), b"later");

    // Damaged source data is refused, and nothing of it appears in the
    // destination.
    let obj = env
        .path("repo/snapshots")
        .join(&second)
        .join("files.tar.gz");
    let mut bytes = fs::read(&obj).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    fs::write(&obj, &bytes).unwrap();
    let third = env.path("third").display().to_string();
    assert_eq!(code(&env.run(&["-r", &third, "init"])), 0);
    let o = env.run(&["-r", &third, "copy", "--from-repo", &env.repo(), &second]);
    assert_clean_error(&o, 13, "files.tar.gz");
    assert!(ids_at(&env, &third, &[]).is_empty());

    // Same repository twice, and an unknown option: usage errors.
    let o = env.run(&["-r", &mirror, "copy", "--from-repo", &mirror]);
    assert_clean_error(&o, 2, "two repositories");
    let o = env.run(&["-r", &mirror, "-o", "endpoint=x", "snapshots"]);
    assert_clean_error(&o, 2, "unknown option \"endpoint\" for local repositories");
}

/// The S3 server the tests use (moto, started by scripts/services.sh), as
/// `-o` arguments, or `None` when there is none.
fn s3_service(test: &str) -> Option<(String, Vec<String>)> {
    let vars = [
        "BACKUPKIT_TEST_S3_ENDPOINT",
        "BACKUPKIT_TEST_S3_BUCKET",
        "BACKUPKIT_TEST_S3_ACCESS_KEY_ID",
        "BACKUPKIT_TEST_S3_SECRET_ACCESS_KEY",
    ];
    let values: Vec<String> = vars
        .iter()
        .filter_map(|v| std::env::var(v).ok().filter(|s| !s.is_empty()))
        .collect();
    if values.len() < vars.len() {
        require_or_skip(&format!(
            "{test}: an S3 server (BACKUPKIT_TEST_S3_*; run through scripts/services.sh)"
        ));
        return None;
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let location = format!("s3://{}/cli-{}-{nanos}", values[1], std::process::id());
    let options = [
        ("endpoint", values[0].as_str()),
        ("allow_http", "true"),
        ("region", "us-east-1"),
        ("access_key_id", values[2].as_str()),
        ("secret_access_key", values[3].as_str()),
    ]
    .iter()
    .flat_map(|(k, v)| ["-o".to_owned(), format!("{k}={v}")])
    .collect();
    Some((location, options))
}

#[test]
fn an_s3_repository_works_like_a_local_one() {
    let Some((s3, opts)) = s3_service("an_s3_repository_works_like_a_local_one") else {
        return;
    };
    let env = Env::new();
    let data = env.data();
    fs::write(data.join("big.bin"), pseudo_random(12 << 20, 5)).unwrap();
    let d = data.to_str().unwrap();
    let run = |args: &[&str]| {
        let mut all: Vec<&str> = vec!["-r", &s3];
        all.extend(opts.iter().map(String::as_str));
        all.extend_from_slice(args);
        env.run(&all)
    };
    let o = run(&["init"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let o = run(&["--json", "backup", d]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let id = v["snapshot"]["id"].as_str().unwrap().to_owned();
    assert_eq!(ids_at(&env, &s3, &opts), vec![id.clone()]);
    let o = run(&["check", "--read-data"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let out = env.path("out");
    let o = run(&["restore", "latest", "--target", out.to_str().unwrap()]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let restored = out.join(data.strip_prefix("/").unwrap());
    assert_eq!(
        fs::read(restored.join("big.bin")).unwrap(),
        pseudo_random(12 << 20, 5)
    );

    // copy: S3 to local and back into a second S3 prefix.
    env.init();
    let mut args: Vec<&str> = vec!["copy", "--from-repo", &s3, "--to-repo"];
    let local = env.repo();
    args.push(&local);
    for pair in opts.chunks(2) {
        args.extend(["--from-option", pair[1].as_str()]);
    }
    let o = env.run(&args);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(env.snapshot_ids(), vec![id.clone()]);
    let o = env.bk(&["check", "--read-data"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));

    kill_9_mid_upload_leaves_nothing_visible(&env, &s3, &opts, d);

    // A bucket that does not exist: one line that says so.
    let missing = s3.replacen("s3://", "s3://no-such-bucket-", 1);
    let mut all: Vec<&str> = vec!["-r", &missing];
    all.extend(opts.iter().map(String::as_str));
    all.push("init");
    let o = env.run(&all);
    assert_clean_error(&o, 1, "NoSuchBucket: The specified bucket does not exist");
}

#[test]
fn an_unreachable_object_store_fails_in_one_line_without_secrets() {
    let env = Env::new();
    let o = env.run(&[
        "-r",
        "s3://backupkit-nowhere/repo",
        "-o",
        "endpoint=http://127.0.0.1:9",
        "-o",
        "allow_http=true",
        "-o",
        "region=us-east-1",
        "-o",
        "access_key_id=AKIDEXAMPLE",
        "-o",
        "secret_access_key=very-secret-value-123",
        "-o",
        "retry_timeout=1s",
        "snapshots",
    ]);
    assert_clean_error(&o, 1, "s3://backupkit-nowhere/repo");
    assert!(
        !stderr(&o).contains("very-secret-value-123"),
        "{}",
        stderr(&o)
    );
    let o = env.run(&["-r", "s3://b/p", "-o", "no_such_option=1", "snapshots"]);
    assert_clean_error(
        &o,
        2,
        "unknown option \"no_such_option\" for S3 repositories",
    );
    let o = env.run(&["-r", "s3://b/p", "-o", "retry_timeout=soon", "snapshots"]);
    assert_clean_error(&o, 2, "retry_timeout");
    // No credentials at all: said at once, no request to any metadata
    // endpoint.
    let o = Command::new(BIN)
        .args(["-r", "s3://b/p", "snapshots"])
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_WEB_IDENTITY_TOKEN_FILE")
        .env_remove("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
        .env_remove("AWS_CONTAINER_CREDENTIALS_FULL_URI")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_clean_error(&o, 2, "no S3 credentials: set AWS_ACCESS_KEY_ID");
}

/// Waits for a child up to `limit`; kills it and fails the test if it hangs.
fn wait_with_limit(mut child: std::process::Child, limit: Duration) -> Output {
    let started = std::time::Instant::now();
    while started.elapsed() < limit {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    panic!("backupkit hung for {limit:?}");
}

fn mounted(path: &Path) -> bool {
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|l| l.split(' ').nth(4) == path.to_str())
}

#[test]
fn a_stale_or_missing_mount_fails_fast_and_clearly() {
    let vars = [
        "BACKUPKIT_TEST_SSH_CONFIG",
        "BACKUPKIT_TEST_SSH_HOST",
        "BACKUPKIT_TEST_SFTP_DIR",
    ];
    let v: Vec<String> = vars.iter().filter_map(|k| std::env::var(k).ok()).collect();
    let have_sshfs = Command::new("sshfs").arg("--version").output().is_ok();
    if v.len() < vars.len() || !have_sshfs || !is_root() {
        require_or_skip("a network mount (sshd from scripts/services.sh, sshfs, root)");
        return;
    }
    let env = Env::new();
    let mnt = env.path("share");
    fs::create_dir(&mnt).unwrap();
    // A real network filesystem: sshfs over the test sshd, in the
    // foreground so the test holds its process.
    let mut sshfs = Command::new("sshfs")
        .args(["-f", "-F", &v[0]])
        .arg(format!("{}:{}", v[1], v[2]))
        .arg(&mnt)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while !mounted(&mnt) {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "sshfs did not mount"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let unique = format!("stale-{}-{:?}", std::process::id(), started);
    let repo = mnt.join(unique.replace(['.', ' '], "_"));
    let repo = repo.to_str().unwrap();
    let mount_opt = format!("mount_point={}", mnt.display());
    let data = env.data();
    for args in [vec!["init"], vec!["backup", data.to_str().unwrap()]] {
        let mut all = vec!["-r", repo, "-o", &mount_opt];
        all.extend(args);
        let o = env.run(&all);
        assert_eq!(code(&o), 0, "{}", stderr(&o));
    }

    // Freeze the filesystem's server side: every access now hangs.
    let pid = sshfs.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-STOP", &pid])
            .status()
            .unwrap()
            .success()
    );
    let child = Command::new(BIN)
        .args([
            "-r",
            repo,
            "-o",
            &mount_opt,
            "-o",
            "mount_timeout=2s",
            "snapshots",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = std::time::Instant::now();
    let o = wait_with_limit(child, Duration::from_secs(30));
    let took = t0.elapsed();
    let _ = Command::new("kill").args(["-CONT", &pid]).status();
    assert_clean_error(&o, 1, "no answer within 2 s: the mount may be stale");
    assert!(took < Duration::from_secs(10), "took {took:?}");

    // Thawed, it works again; then unmounted, it says so.
    let o = env.run(&["-r", repo, "-o", &mount_opt, "snapshots"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let _ = fs::remove_dir_all(repo);
    let _ = Command::new("fusermount3").arg("-u").arg(&mnt).status();
    let _ = sshfs.kill();
    let _ = sshfs.wait();
    assert!(!mounted(&mnt));
    let o = env.run(&["-r", repo, "-o", &mount_opt, "snapshots"]);
    assert_clean_error(&o, 4, "mount it, e.g. `sudo mount");
}

/// The ssh config, SSH host, SFTP directory, rclone config and a local
/// rclone remote of the test services, or `None` (skipped) without them.
fn ssh_and_rclone_vars() -> Option<Vec<String>> {
    service_vars(
        &[
            "BACKUPKIT_TEST_SSH_CONFIG",
            "BACKUPKIT_TEST_SSH_HOST",
            "BACKUPKIT_TEST_SFTP_DIR",
            "BACKUPKIT_TEST_RCLONE_CONFIG",
            "BACKUPKIT_TEST_RCLONE_LOCAL_REMOTE",
        ],
        "sshd and rclone (BACKUPKIT_TEST_SSH_*, _RCLONE_*; scripts/services.sh)",
    )
}

/// The values of `vars`, or `None` (after `require_or_skip(what)`) when one
/// is unset.
fn service_vars(vars: &[&str], what: &str) -> Option<Vec<String>> {
    let v: Vec<String> = vars
        .iter()
        .filter_map(|k| std::env::var(k).ok().filter(|s| !s.is_empty()))
        .collect();
    if v.len() < vars.len() {
        require_or_skip(what);
        return None;
    }
    Some(v)
}

/// rclone has no exclusive create (backupkit's is check-then-write there,
/// exclusive only inside one process), so locking between two processes
/// rests on the create-then-look protocol: a process that wants an
/// exclusive lock while another's backup holds a shared one must back off.
/// Two processes racing to create the same object may both succeed, but the
/// object is always one whole version (atomic replace).
#[test]
fn two_processes_on_an_rclone_repository_lock_each_other_out() {
    let Some(v) = service_vars(
        &[
            "BACKUPKIT_TEST_RCLONE_CONFIG",
            "BACKUPKIT_TEST_RCLONE_LOCAL_REMOTE",
        ],
        "rclone (BACKUPKIT_TEST_RCLONE_*; scripts/services.sh)",
    ) else {
        return;
    };
    let env = Env::new();
    let data = env.data();
    fs::write(data.join("big.bin"), pseudo_random(48 << 20, 11)).unwrap();
    let unique = format!("two-{}", std::process::id());
    let location = format!("rclone:{}/{unique}", v[1]);
    let opt = format!("rclone_config={}", v[0]);
    let dir = Path::new(v[1].split_once(':').unwrap().1).join(&unique);
    let args = |extra: &[&str]| -> Vec<String> {
        let mut all: Vec<String> = vec!["-r".into(), location.clone(), "-o".into(), opt.clone()];
        all.extend(extra.iter().map(|s| (*s).to_owned()));
        all
    };
    let run = |extra: &[&str]| {
        let all = args(extra);
        env.run(&all.iter().map(String::as_str).collect::<Vec<_>>())
    };
    assert_eq!(code(&run(&["init"])), 0);
    // Two snapshots of one group: `forget --keep-last 1` has one to delete.
    for _ in 0..2 {
        let o = run(&["-q", "backup", env.path("data/a.csv").to_str().unwrap()]);
        assert_eq!(code(&o), 0, "{}", stderr(&o));
    }

    // Process A backs up (a shared lock, for seconds); process B's forget
    // (an exclusive lock) must be refused while A runs.
    let mut a = Command::new(BIN)
        .args(args(&["-q", "backup", data.to_str().unwrap()]))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    // A committed lock (not the temporary object it is written to first).
    let locked = || {
        fs::read_dir(dir.join("locks")).is_ok_and(|d| {
            d.flatten()
                .any(|e| !e.file_name().to_string_lossy().contains(".tmp-"))
        })
    };
    while !locked() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "A never took its lock"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let b = run(&["forget", "--keep-last", "1", "--yes"]);
    let a_still_running = a.try_wait().unwrap().is_none();
    assert_eq!(code(&b), 11, "B: {}", stderr(&b));
    assert!(stderr(&b).contains("shared lock"), "{}", stderr(&b));
    assert!(
        a_still_running,
        "A finished before B looked: nothing was shown"
    );
    let a = a.wait_with_output().unwrap();
    assert!(
        a.status.success(),
        "A: {}",
        String::from_utf8_lossy(&a.stderr)
    );
    // Once A is done, B's forget goes through: one of the two is removed.
    let b = run(&["--json", "forget", "--keep-last", "1", "--yes"]);
    assert_eq!(code(&b), 0, "{}", stderr(&b));
    let report: serde_json::Value = serde_json::from_slice(&b.stdout).unwrap();
    let removed: usize = report["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["remove"].as_array().unwrap().len())
        .sum();
    assert_eq!(removed, 1, "{report}");

    // Two processes creating the same repository marker at once: one or
    // both report success, and the marker is whole either way.
    let fresh = format!("{location}-init");
    let both: Vec<std::process::Child> = (0..2)
        .map(|_| {
            Command::new(BIN)
                .args(["-r", &fresh, "-o", &opt, "init"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    let codes: Vec<i32> = both
        .into_iter()
        .map(|c| c.wait_with_output().unwrap().status.code().unwrap_or(-1))
        .collect();
    assert!(codes.contains(&0), "{codes:?}");
    let o = env.run(&["-r", &fresh, "-o", &opt, "snapshots", "--json"]);
    assert_eq!(code(&o), 0, "the marker is not whole: {}", stderr(&o));
}

#[test]
fn sftp_and_rclone_repositories_from_the_command_line() {
    let Some(v) = ssh_and_rclone_vars() else {
        return;
    };
    let env = Env::new();
    let data = env.data();
    // Large enough that an upload is under way for a while.
    fs::write(data.join("big.bin"), pseudo_random(24 << 20, 9)).unwrap();
    let unique = format!("cli-{}", std::process::id());
    let sftp = format!("sftp://{}{}/{unique}", v[1], v[2]);
    let ssh_opt = format!("ssh_config={}", v[0]);
    let rclone = format!("rclone:{}/{unique}", v[4]);
    let rclone_opt = format!("rclone_config={}", v[3]);
    for (location, opt) in [(&sftp, &ssh_opt), (&rclone, &rclone_opt)] {
        let run = |args: &[&str]| {
            let mut all = vec!["-r", location.as_str(), "-o", opt.as_str()];
            all.extend_from_slice(args);
            env.run(&all)
        };
        assert_eq!(code(&run(&["init"])), 0, "{location}");
        let o = run(&["--json", "backup", data.to_str().unwrap()]);
        assert_eq!(code(&o), 0, "{location}: {}", stderr(&o));
        let o = run(&["check", "--read-data"]);
        assert_eq!(code(&o), 0, "{location}: {}", stderr(&o));
        let out = env.path(&format!("out-{}", location.len()));
        let o = run(&["restore", "latest", "--target", out.to_str().unwrap()]);
        assert_eq!(code(&o), 0, "{location}: {}", stderr(&o));
        let restored = out.join(data.strip_prefix("/").unwrap());
        assert_eq!(
            fs::read(restored.join("sub/b.json")).unwrap(),
            b"{\"k\": 1}"
        );
        kill_9_mid_upload_leaves_nothing_visible(
            &env,
            location,
            &["-o".to_owned(), opt.clone()],
            data.to_str().unwrap(),
        );
    }
    // A wrong option is a usage error for each kind.
    let o = env.run(&["-r", &sftp, "-o", "password=x", "snapshots"]);
    assert_clean_error(&o, 2, "unknown option \"password\" for SFTP locations");
}

/// A source tree for mirrors: `n` small CSVs in two directories and `big`
/// binaries of `mib` MiB each.
fn mirror_tree(root: &Path, n: usize, big: u64, mib: usize) {
    fs::create_dir_all(root.join("runs/2026")).unwrap();
    fs::create_dir_all(root.join("videos")).unwrap();
    for i in 0..n {
        let dir = if i % 2 == 0 { "runs" } else { "runs/2026" };
        fs::write(
            root.join(format!("{dir}/r{i:03}.csv")),
            format!("{i},{}\n", i * 7).repeat(40),
        )
        .unwrap();
    }
    for i in 0..big {
        fs::write(
            root.join(format!("videos/v{i}.bin")),
            pseudo_random(mib << 20, i),
        )
        .unwrap();
    }
}

#[test]
fn mirror_copies_only_what_changed_and_says_so() {
    let env = Env::new();
    let (src, dst) = (env.path("src"), env.path("dst"));
    mirror_tree(&src, 20, 1, 1);
    let (s, d) = (src.to_str().unwrap(), dst.to_str().unwrap());
    let o = env.run(&["mirror", s, d]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(
        stdout(&o).contains("21 copied, 0 updated, 0 deleted"),
        "{}",
        stdout(&o)
    );
    assert_eq!(stderr(&o), "");
    // `sync` is the same command; a second run copies nothing.
    let o = env.run(&["--json", "sync", s, d]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (v["copied"].as_u64(), v["unchanged"].as_u64()),
        (Some(0), Some(21))
    );
    assert_eq!(v["failed"], serde_json::json!([]));
    // A dry run prints its plan on stdout, a line per decision, and writes
    // nothing.
    fs::write(src.join("runs/r000.csv"), "changed").unwrap();
    fs::remove_file(src.join("videos/v0.bin")).unwrap();
    let o = env.run(&["mirror", "-n", "--delete", s, d]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains("update  runs/r000.csv (size differs)")
            || out.contains("update  runs/r000.csv (changed in the source)"),
        "{out}"
    );
    assert!(
        out.contains("delete  videos/v0.bin (not in the source)"),
        "{out}"
    );
    assert!(out.contains("dry run: would mirror"), "{out}");
    assert!(dst.join("videos/v0.bin").exists());
    // -v lists each decision on a real run; --verify checks afterwards.
    let o = env.run(&["mirror", "-v", "--delete", "--verify", "checksum", s, d]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("1 updated, 1 deleted"), "{out}");
    assert!(
        out.contains("verify (checksum)") && out.contains(": ok:"),
        "{out}"
    );
    assert!(!dst.join("videos/v0.bin").exists());
    // --quiet prints nothing on success.
    let o = env.run(&["-q", "mirror", s, d]);
    assert_eq!(
        (code(&o), stdout(&o), stderr(&o)),
        (0, String::new(), String::new())
    );
}

#[test]
fn mirror_refusals_and_mismatches_have_their_exit_codes() {
    let env = Env::new();
    let (src, dst) = (env.path("src"), env.path("dst"));
    mirror_tree(&src, 20, 0, 0);
    let (s, d) = (src.to_str().unwrap(), dst.to_str().unwrap());
    assert_eq!(code(&env.run(&["mirror", s, d])), 0);
    // A missing source: 4, one line, nothing touched.
    let missing = env.path("nowhere");
    let o = env.run(&["mirror", "--delete", missing.to_str().unwrap(), d]);
    assert_clean_error(&o, 4, "mirror source not found");
    // An empty source (an unmounted share) never deletes: 1, one line.
    let empty = env.path("empty");
    fs::create_dir(&empty).unwrap();
    let o = env.run(&["mirror", "--delete", empty.to_str().unwrap(), d]);
    assert_clean_error(&o, 1, "refusing to delete");
    assert_eq!(walk_names(&dst.join("runs")).len(), 21);
    // More deletions than --max-delete: nothing deleted, exit 3.
    for i in 0..6 {
        fs::remove_file(src.join(format!("runs/r{:03}.csv", i * 2))).unwrap();
    }
    let o = env.run(&["mirror", "--delete", "--max-delete", "5", s, d]);
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("refusing to delete: the plan deletes 6"),
        "{}",
        stderr(&o)
    );
    assert_eq!(walk_names(&dst.join("runs")).len(), 21);
    let o = env.run(&["mirror", "--delete", "--max-delete", "60%", s, d]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    // Bad flag values: 2.
    for bad in [
        vec!["mirror", "--verify", "all", s, d],
        vec!["mirror", "--delete", "--max-delete", "lots", s, d],
        vec!["mirror", "--modify-window", "soon", s, d],
        vec!["mirror", "--max-delete", "5", s, d],
        vec!["mirror", s],
    ] {
        let o = env.run(&bad);
        assert_eq!(code(&o), 2, "{bad:?}: {}", stderr(&o));
    }
    // Bit rot at the destination: only content verification finds it (13).
    let victim = dst.join("runs/2026/r001.csv");
    let meta = fs::metadata(&victim).unwrap();
    let mut body = fs::read(&victim).unwrap();
    body[3] ^= 0x20;
    fs::write(&victim, &body).unwrap();
    filetime_like(&victim, &meta);
    assert_eq!(
        code(&env.run(&["mirror", "--verify-only", s, d])),
        0,
        "sizes match"
    );
    let o = env.run(&["mirror", "--verify-only", "--verify", "checksum", s, d]);
    assert_eq!(code(&o), 13, "{}", stderr(&o));
    assert!(
        stdout(&o).contains("different runs/2026/r001.csv"),
        "{}",
        stdout(&o)
    );
    let o = env.run(&["mirror", "--verify", "checksum", s, d]);
    assert_eq!(
        code(&o),
        13,
        "a quick-check mirror keeps the rotten copy: {}",
        stderr(&o)
    );
    assert!(
        stderr(&o).contains("differs from its source"),
        "{}",
        stderr(&o)
    );
    let o = env.run(&["mirror", "--checksum", "--verify", "checksum", s, d]);
    assert_eq!(code(&o), 0, "--checksum repairs it: {}", stderr(&o));
}

/// Gives `path` the mtime in `meta` again (after an edit in place).
fn filetime_like(path: &Path, meta: &fs::Metadata) {
    let t = meta.modified().unwrap();
    let f = fs::OpenOptions::new().write(true).open(path).unwrap();
    f.set_modified(t).unwrap();
}

#[test]
fn a_mirror_file_that_cannot_be_read_is_named_and_exits_3() {
    let env = Env::new();
    let root = env.path("world");
    fs::create_dir_all(root.join("data")).unwrap();
    set_mode(env.dir.path(), 0o755);
    set_mode(&root, 0o777);
    set_mode(&root.join("data"), 0o777);
    fs::write(root.join("data/ok.csv"), "1\n").unwrap();
    fs::write(root.join("data/secret.csv"), "2\n").unwrap();
    set_mode(&root.join("data/ok.csv"), 0o644);
    set_mode(&root.join("data/secret.csv"), 0o000);
    let dst = root.join("dst");
    let (data, dst_s) = (root.join("data"), dst.to_str().unwrap().to_owned());
    let o = as_nobody(&["mirror", data.to_str().unwrap(), &dst_s]);
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("secret.csv") && err.contains("incomplete"),
        "{err}"
    );
    assert_eq!(fs::read(dst.join("ok.csv")).unwrap(), b"1\n");
    assert!(!dst.join("secret.csv").exists());
}

/// A destination another live mirror is writing into is refused with exit
/// 11 and a line that says what to delete if that run is gone; nothing is
/// copied.
#[test]
fn a_mirror_into_a_destination_in_use_exits_11() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a.csv"), "1").unwrap();
    let dst = env.path("dst");
    fs::create_dir_all(dst.join(".backupkit-mirror")).unwrap();
    let host = fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    fs::write(
        dst.join(".backupkit-mirror/lock"),
        format!(
            r#"{{"exclusive":true,"host":"{}","pid":{},"time":"2999-01-01T00:00:00Z","snapshot":null}}"#,
            host.trim(),
            std::process::id()
        ),
    )
    .unwrap();
    let o = env.run(&["mirror", src.to_str().unwrap(), dst.to_str().unwrap()]);
    assert_clean_error(&o, 11, "in use by pid");
    assert!(
        stderr(&o).contains(".backupkit-mirror/lock"),
        "{}",
        stderr(&o)
    );
    assert!(!dst.join("a.csv").exists());
}

/// A 1 GiB file is mirrored (and verified by content) with flat memory:
/// the process's peak resident set, read from `/proc` while it runs, stays
/// far below the file's size.
#[test]
fn a_1_gib_file_is_mirrored_with_flat_memory() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    // Sparse, so cheap to make; the copy reads and writes every byte.
    let big = fs::File::create(src.join("recording.bin")).unwrap();
    big.set_len(1 << 30).unwrap();
    drop(big);
    fs::write(src.join("notes.txt"), "session notes").unwrap();
    let dst = env.path("dst");
    let mut child = Command::new(BIN)
        .args(["--json", "mirror", "--verify", "checksum"])
        .args([&src, &dst])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = format!("/proc/{}/status", child.id());
    let mut peak_kb = 0u64;
    while child.try_wait().unwrap().is_none() {
        if let Ok(text) = fs::read_to_string(&status)
            && let Some(kb) = text
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
        {
            peak_kb = peak_kb.max(kb);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let o = child.wait_with_output().unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["bytes"], (1u64 << 30) + 13, "{v}");
    assert_eq!(v["verify"]["hashed"], 2, "{v}");
    assert_eq!(
        fs::metadata(dst.join("recording.bin")).unwrap().len(),
        1 << 30
    );
    assert!(peak_kb > 0, "the process was never seen running");
    assert!(
        peak_kb < 100 * 1024,
        "peak RSS {peak_kb} kB for a 1 GiB file: memory is not flat"
    );
}

#[test]
fn kill_9_during_a_mirror_leaves_no_partial_file_and_the_next_run_finishes() {
    let env = Env::new();
    let (src, dst) = (env.path("src"), env.path("dst"));
    mirror_tree(&src, 300, 6, 8);
    let (s, d) = (src.to_str().unwrap(), dst.to_str().unwrap());
    let mut leftovers_seen = 0;
    for delay_ms in [5u64, 40, 90, 160, 300] {
        // Each run starts from scratch, so that every kill lands mid-copy.
        let _ = fs::remove_dir_all(&dst);
        run_killed_after(&["mirror", "--transfers", "2", s, d], delay_ms);
        if !dst.exists() {
            continue;
        }
        leftovers_seen += assert_whole_or_temporary(&dst, &src, delay_ms);
    }
    assert!(leftovers_seen > 0, "no kill landed mid-copy");
    // A killed run into an existing mirror, then a run that finishes it.
    let _ = fs::remove_dir_all(&dst);
    run_killed_after(&["mirror", s, d], 120);
    let o = env.run(&["--json", "mirror", "--verify", "checksum", s, d]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["verify"]["hashed"], 306, "{v}");
    assert!(
        walk_files(&dst)
            .iter()
            .all(|p| !p.to_string_lossy().contains(".tmp-"))
    );
}

/// After a killed mirror into `dst`: every file at a final name is whole
/// (the source's content); returns how many temporary files were left.
fn assert_whole_or_temporary(dst: &Path, src: &Path, delay_ms: u64) -> usize {
    let mut temporary = 0;
    for name in walk_files(dst) {
        let rel = name.strip_prefix(dst).unwrap();
        let text = rel.to_string_lossy();
        if text.contains(".tmp-") {
            temporary += 1;
        } else if !text.starts_with(".backupkit-mirror") {
            assert_eq!(
                fs::read(&name).unwrap(),
                fs::read(src.join(rel)).unwrap(),
                "partial file at a final name after a kill at {delay_ms} ms: {text}"
            );
        }
    }
    temporary
}

fn walk_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap().flatten() {
        if e.file_type().unwrap().is_dir() {
            out.extend(walk_files(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out
}

/// Runs backupkit with `args` and `kill -9`s it as soon as a file under
/// `dir` is `unfinished` (so the kill lands mid-upload however slowly the
/// run connects); fails if none shows within 30 s.
fn kill_once_unfinished_shows(args: &[&str], dir: &Path, unfinished: &dyn Fn(&Path) -> bool) {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::time::Instant::now() < deadline
        && !(dir.exists() && walk_files(dir).iter().any(|p| unfinished(p)))
    {
        std::thread::sleep(Duration::from_millis(1));
    }
    let writing = std::time::Instant::now() < deadline;
    signal_after(&child, 0, "-9");
    child.wait().unwrap();
    assert!(
        writing,
        "{args:?}: no unfinished file showed in {} within 30 s",
        dir.display()
    );
}

/// `kill -9` of mirrors to an SSH host: once a temporary file shows on
/// the server, then at fixed moments; nothing partial at a final name.
fn kill_mid_push(ssh: &str, src: &Path, remote: &str, on_server: &Path) {
    let s = src.to_str().unwrap();
    // Killed once a temporary file shows on the server (so the kill lands
    // mid-upload however slowly ssh connects), then at fixed moments; with
    // each transport (rsync keeps its unfinished files in the staging
    // directory, SFTP beside their final names).
    for transport in ["rsync", "sftp"] {
        let way = format!("transport={transport}");
        let _ = fs::remove_dir_all(on_server);
        kill_once_unfinished_shows(
            &["-o", ssh, "-o", &way, "mirror", s, remote],
            on_server,
            &|p| {
                let text = p.to_string_lossy();
                text.contains(".tmp-") || text.contains(".backupkit-mirror/staging/")
            },
        );
        // (The server may still finish requests the killed client had sent.)
        assert_whole_or_temporary(on_server, src, 0);
        for delay_ms in [150u64, 400, 700] {
            let _ = fs::remove_dir_all(on_server);
            run_killed_after(&["-o", ssh, "-o", &way, "mirror", s, remote], delay_ms);
            if on_server.exists() {
                assert_whole_or_temporary(on_server, src, delay_ms);
            }
        }
    }
}

/// The test Samba server's writable share, its password and its directory
/// on this machine, if it runs.
fn smb_vars() -> Option<Vec<String>> {
    service_vars(
        &[
            "BACKUPKIT_TEST_SMB_URL",
            "BACKUPKIT_TEST_SMB_PASSWORD",
            "BACKUPKIT_TEST_SMB_DIR",
        ],
        "Samba (BACKUPKIT_TEST_SMB_*; scripts/services.sh)",
    )
}

/// An SMB share as a repository from the command line, without a mount:
/// backup, `check --read-data`, restore, `copy` out of it, `kill -9`
/// mid-upload, and a wrong password.
#[test]
fn smb_repositories_from_the_command_line() {
    let Some(v) = smb_vars() else {
        return;
    };
    let env = Env::new();
    let data = env.data();
    fs::write(data.join("big.bin"), pseudo_random(24 << 20, 11)).unwrap();
    let unique = format!("cli-{}", std::process::id());
    let repo = format!("{}/{unique}/repo", v[0]);
    let on_server = Path::new(&v[2]).join(&unique);
    let pw = "password_env=BACKUPKIT_TEST_SMB_PASSWORD".to_owned();
    let run = |args: &[&str]| {
        let mut all = vec!["-r", repo.as_str(), "-o", pw.as_str()];
        all.extend_from_slice(args);
        env.run(&all)
    };
    assert_eq!(code(&run(&["init"])), 0);
    let o = run(&["backup", data.to_str().unwrap()]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let o = run(&["check", "--read-data"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let out = env.path("out");
    let o = run(&["restore", "latest", "--target", out.to_str().unwrap()]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let restored = out.join(data.strip_prefix("/").unwrap());
    assert_eq!(
        fs::read(restored.join("big.bin")).unwrap(),
        pseudo_random(24 << 20, 11)
    );
    // copy: out of the share into a local repository, which checks whole.
    env.init();
    let local = env.repo();
    let o = env.run(&[
        "copy",
        "--from-repo",
        &repo,
        "--from-option",
        &pw,
        "--to-repo",
        &local,
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(
        env.snapshot_ids(),
        ids_at(&env, &repo, &["-o".into(), pw.clone()])
    );
    let o = env.bk(&["check", "--read-data"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    kill_9_mid_upload_leaves_nothing_visible(
        &env,
        &repo,
        &["-o".to_owned(), pw.clone()],
        data.to_str().unwrap(),
    );
    let snapshots = on_server.join("repo/snapshots");
    assert!(
        walk_files(&snapshots)
            .iter()
            .all(|p| !p.to_string_lossy().contains(".tmp-")),
        "later backups remove what killed ones left"
    );

    // A wrong password: one line, without the password.
    let o = env.run(&[
        "-r",
        &repo,
        "-o",
        "password_command=echo not-the-password-42",
        "snapshots",
    ]);
    assert_clean_error(&o, 1, "logon failure");
    assert!(
        !stderr(&o).contains("not-the-password-42"),
        "{}",
        stderr(&o)
    );
    let _ = fs::remove_dir_all(&on_server);
}

/// A mirror into an SMB share from the command line, without a mount:
/// killed once a temporary file shows there (nothing partial at a final
/// name), finished, re-run without changes, and pulled back out.
#[test]
fn smb_mirrors_from_the_command_line() {
    let Some(v) = smb_vars() else {
        return;
    };
    let env = Env::new();
    let unique = format!("cli-mirror-{}", std::process::id());
    let on_server = Path::new(&v[2]).join(&unique);
    let pw = "password_env=BACKUPKIT_TEST_SMB_PASSWORD".to_owned();
    // A mirror into the share, killed once a temporary file shows there.
    let src = env.path("src");
    mirror_tree(&src, 40, 2, 8);
    let s = src.to_str().unwrap();
    let mirror = format!("{}/{unique}/mirror", v[0]);
    let mirrored = on_server.join("mirror");
    kill_once_unfinished_shows(&["-o", &pw, "mirror", s, &mirror], &mirrored, &|p| {
        p.to_string_lossy().contains(".tmp-")
    });
    assert_whole_or_temporary(&mirrored, &src, 0);
    let o = env.run(&[
        "-o", &pw, "--json", "mirror", "--verify", "checksum", s, &mirror,
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(summary["verify"]["hashed"], 42, "{summary}");
    assert_eq!(assert_whole_or_temporary(&mirrored, &src, 0), 0);
    let o = env.run(&["-o", &pw, "--json", "mirror", s, &mirror]);
    let again: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (again["copied"].as_u64(), again["updated"].as_u64()),
        (Some(0), Some(0)),
        "{again}"
    );
    // Pulled back out of the share, the same files.
    let back = env.path("back");
    let o = env.run(&[
        "--json",
        "mirror",
        "--source-option",
        &pw,
        &mirror,
        back.to_str().unwrap(),
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let pulled: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(pulled["copied"], 42, "{pulled}");
    let o = env.run(&[
        "mirror",
        "--verify-only",
        "--verify",
        "checksum",
        s,
        back.to_str().unwrap(),
    ]);
    assert_eq!(code(&o), 0, "{}", stdout(&o));

    let _ = fs::remove_dir_all(&on_server);
}

/// The test sshd's ssh config, host and directory, if it runs.
fn sshd_vars() -> Option<Vec<String>> {
    service_vars(
        &[
            "BACKUPKIT_TEST_SSH_CONFIG",
            "BACKUPKIT_TEST_SSH_HOST",
            "BACKUPKIT_TEST_SFTP_DIR",
        ],
        "sshd (BACKUPKIT_TEST_SSH_*; scripts/services.sh)",
    )
}

/// Mirrors to and from the test sshd from the command line: a push, a
/// no-change re-run, `kill -9` mid-push at several moments (nothing partial
/// at a final name on the server), a finishing run verified by content,
/// and a pull back (seed 004's direction) that matches the source.
#[test]
fn mirrors_push_to_and_pull_from_an_sftp_host() {
    let Some(v) = sshd_vars() else {
        return;
    };
    let env = Env::new();
    let src = env.path("src");
    mirror_tree(&src, 60, 3, 6);
    let unique = format!("mirror-cli-{}", std::process::id());
    let remote = format!("sftp://{}{}/{unique}", v[1], v[2]);
    let on_server = Path::new(&v[2]).join(&unique);
    let ssh = format!("ssh_config={}", v[0]);
    let s = src.to_str().unwrap();
    kill_mid_push(&ssh, &src, &remote, &on_server);
    let o = env.run(&[
        "-o",
        &ssh,
        "-o",
        "transport=rsync",
        "--json",
        "mirror",
        "--verify",
        "checksum",
        s,
        &remote,
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(summary["verify"]["hashed"], 63, "{summary}");
    // (The killed runs may have copied everything already.)
    let moved = summary["copied"].as_u64().unwrap() + summary["updated"].as_u64().unwrap();
    assert_eq!(
        summary["transport"],
        if moved > 0 {
            serde_json::json!("rsync")
        } else {
            serde_json::Value::Null
        },
        "{summary}"
    );
    assert!(
        walk_files(&on_server)
            .iter()
            .all(|p| !p.to_string_lossy().contains(".tmp-")),
        "the finishing run removes what the killed ones left"
    );
    assert!(
        !on_server.join(".backupkit-mirror/staging").exists(),
        "and the staging directory"
    );
    let o = env.run(&[
        "-o",
        &ssh,
        "--json",
        "sync",
        "--timeout",
        "30s",
        "--bwlimit",
        "50M",
        s,
        &remote,
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let again: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (again["copied"].as_u64(), again["updated"].as_u64()),
        (Some(0), Some(0))
    );
    // Pull it back: the sources take --source-option.
    let back = env.path("back");
    let o = env.run(&[
        "--json",
        "mirror",
        "--source-option",
        &ssh,
        "--source-option",
        "transport=rsync",
        &remote,
        back.to_str().unwrap(),
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let pulled: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (&pulled["transport"], &pulled["copied"]),
        (&serde_json::json!("rsync"), &serde_json::json!(63)),
        "{pulled}"
    );

    let o = env.run(&[
        "mirror",
        "--verify-only",
        "--verify",
        "checksum",
        s,
        back.to_str().unwrap(),
    ]);
    assert_eq!(code(&o), 0, "{}", stdout(&o));
    // A wrong option is a usage error; an unknown host fails in one line.
    let o = env.run(&["-o", "nonsense=1", "mirror", s, &remote]);
    assert_clean_error(&o, 2, "unknown option");
    let _ = fs::remove_dir_all(&on_server);
}

/// Which transport a mirror to an SSH host takes: by default, a batch of a
/// few small files goes over the open SFTP connection (a new ssh
/// connection for rsync would cost more); a host without rsync gets one
/// warning and the files over SFTP.
#[test]
fn a_mirror_to_an_ssh_host_picks_its_transport_and_falls_back_to_sftp() {
    let Some(v) = sshd_vars() else {
        return;
    };
    let env = Env::new();
    let src = env.path("src");
    mirror_tree(&src, 60, 3, 1);
    let s = src.to_str().unwrap();
    let unique = format!("mirror-transport-{}", std::process::id());
    let remote = format!("sftp://{}{}/{unique}", v[1], v[2]);
    let ssh = format!("ssh_config={}", v[0]);
    let o = env.run(&["-o", &ssh, "--json", "mirror", s, &remote]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    // By default a batch this small goes over the open SFTP connection.
    let o = env.run(&[
        "--json",
        "mirror",
        "--source-option",
        &ssh,
        &remote,
        env.path("back-auto").to_str().unwrap(),
    ]);
    let auto: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (&auto["transport"], &auto["copied"]),
        (&serde_json::Value::Null, &serde_json::json!(63)),
        "{auto}"
    );
    // A host without rsync: one warning, and the files go over SFTP.
    let other = format!("{remote}-no-rsync");
    let o = env.run(&[
        "-o",
        &ssh,
        "-o",
        "rsync_path=/nonexistent/rsync",
        "-o",
        "transport=rsync",
        "--json",
        "mirror",
        s,
        &other,
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let fell_back: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (&fell_back["transport"], &fell_back["copied"]),
        (&serde_json::Value::Null, &serde_json::json!(63)),
        "{fell_back}"
    );
    assert!(
        stderr(&o).contains("rsync could not run") && stderr(&o).contains("file by file"),
        "{}",
        stderr(&o)
    );
    let _ = fs::remove_dir_all(Path::new(&v[2]).join(format!("{unique}-no-rsync")));
    let _ = fs::remove_dir_all(Path::new(&v[2]).join(&unique));
}

/// A mirror to an rclone remote (its local backend, whose directory the
/// test can read): batches through `rclone copy` into the staging
/// directory and `rclone move` into place, `kill -9` once the staging
/// directory fills and at fixed moments (nothing partial at a final name),
/// a finishing run verified by content, and a no-change re-run.
#[test]
fn a_mirror_to_an_rclone_remote_survives_kill_9() {
    let Some(v) = service_vars(
        &[
            "BACKUPKIT_TEST_RCLONE_CONFIG",
            "BACKUPKIT_TEST_RCLONE_LOCAL_REMOTE",
        ],
        "rclone (BACKUPKIT_TEST_RCLONE_*; scripts/services.sh)",
    ) else {
        return;
    };
    let env = Env::new();
    let src = env.path("src");
    mirror_tree(&src, 40, 3, 8);
    let s = src.to_str().unwrap();
    let unique = format!("mirror-rclone-{}", std::process::id());
    let remote = format!("rclone:{}/{unique}", v[1]);
    let dir = Path::new(v[1].split_once(':').unwrap().1).join(&unique);
    let opt = format!("rclone_config={}", v[0]);
    let (mut child, staged) = spawn_until_staged(&["-o", &opt, "mirror", s, &remote], &dir);
    let staging = dir.join(".backupkit-mirror/staging");
    signal_after(&child, 0, "-9");
    child.wait().unwrap();
    assert!(
        staged,
        "nothing showed in the staging directory within 30 s"
    );
    // (rclone may finish what it had started: whole files only.)
    std::thread::sleep(Duration::from_millis(500));
    assert_whole_or_temporary(&dir, &src, 0);
    for delay_ms in [300u64, 900] {
        run_killed_after(&["-o", &opt, "mirror", s, &remote], delay_ms);
        if dir.exists() {
            assert_whole_or_temporary(&dir, &src, delay_ms);
        }
    }
    let o = env.run(&[
        "-o", &opt, "--json", "mirror", "--verify", "checksum", s, &remote,
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["verify"]["hashed"], 43, "{v}");
    assert!(
        !staging.exists(),
        "the finishing run empties the staging directory"
    );
    let o = env.run(&["-o", &opt, "--json", "mirror", s, &remote]);
    let again: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (again["copied"].as_u64(), again["updated"].as_u64()),
        (Some(0), Some(0)),
        "{again}"
    );
    let _ = fs::remove_dir_all(&dir);
}

/// Starts backupkit with `args` and waits (30 s at most) until a file shows
/// in the staging directory of the destination at `dir`: a transport is
/// copying. Whether one showed.
fn spawn_until_staged(args: &[&str], dir: &Path) -> (std::process::Child, bool) {
    let child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let staging = dir.join(".backupkit-mirror/staging");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::time::Instant::now() < deadline
        && (!staging.exists() || walk_files(&staging).is_empty())
    {
        std::thread::sleep(Duration::from_millis(1));
    }
    (child, std::time::Instant::now() < deadline)
}

/// Ctrl-C while a transport process is still copying a batch (a large
/// file held back by `--bwlimit`) stops the run within seconds, with exit
/// 130 and nothing at a final name. `dir` is where the destination is on
/// this machine.
fn ctrl_c_mid_batch(options: &[&str], remote: &str, dir: &Path) {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("big.bin"), pseudo_random(24 << 20, 5)).unwrap();
    let mut args = options.to_vec();
    args.extend(["mirror", "--bwlimit", "2M", src.to_str().unwrap(), remote]);
    let (mut child, staged) = spawn_until_staged(&args, dir);
    assert!(staged, "{remote}: nothing showed in the staging directory");
    let sent = std::time::Instant::now();
    signal_after(&child, 0, "-INT");
    let status = child.wait().unwrap();
    assert!(
        sent.elapsed() < Duration::from_secs(5),
        "{remote}: took {:?} to stop",
        sent.elapsed()
    );
    assert_eq!(status.code(), Some(130), "{remote}");
    assert!(
        !dir.join("big.bin").exists(),
        "{remote}: nothing at the final name"
    );
    let _ = fs::remove_dir_all(dir);
}

#[test]
fn ctrl_c_stops_a_mirror_mid_batch_through_rclone_and_rsync() {
    if let Some(v) = service_vars(
        &[
            "BACKUPKIT_TEST_RCLONE_CONFIG",
            "BACKUPKIT_TEST_RCLONE_LOCAL_REMOTE",
        ],
        "rclone (BACKUPKIT_TEST_RCLONE_*; scripts/services.sh)",
    ) {
        let unique = format!("mirror-rclone-int-{}", std::process::id());
        let opt = format!("rclone_config={}", v[0]);
        ctrl_c_mid_batch(
            &["-o", &opt],
            &format!("rclone:{}/{unique}", v[1]),
            &Path::new(v[1].split_once(':').unwrap().1).join(&unique),
        );
    }
    if let Some(v) = sshd_vars() {
        let unique = format!("mirror-rsync-int-{}", std::process::id());
        let ssh = format!("ssh_config={}", v[0]);
        ctrl_c_mid_batch(
            &["-o", &ssh, "-o", "transport=rsync"],
            &format!("sftp://{}{}/{unique}", v[1], v[2]),
            &Path::new(&v[2]).join(&unique),
        );
    }
}

/// A mirror into an S3 bucket from the command line: plain objects under
/// the prefix, a no-change re-run, a changed file, `kill -9` mid-upload
/// (no half object is ever listed: uploads complete or do not exist), and
/// a finishing run verified by reading the objects back.
#[test]
fn a_mirror_into_s3_holds_plain_objects_and_survives_kill_9() {
    let Some((location, options)) =
        s3_service("a_mirror_into_s3_holds_plain_objects_and_survives_kill_9")
    else {
        return;
    };
    let env = Env::new();
    let src = env.path("src");
    mirror_tree(&src, 30, 2, 8);
    let s = src.to_str().unwrap();
    let with = |args: &[&str]| {
        let mut all: Vec<&str> = options.iter().map(String::as_str).collect();
        all.extend_from_slice(args);
        env.run(&all)
    };
    for delay_ms in [100u64, 300] {
        let mut all: Vec<&str> = options.iter().map(String::as_str).collect();
        all.extend_from_slice(&["mirror", s, &location]);
        run_killed_after(&all, delay_ms);
        // Whatever is listed is whole: verify by size sees no short object.
        let o = with(&[
            "--json",
            "mirror",
            "--verify-only",
            "--verify",
            "size",
            s,
            &location,
        ]);
        if code(&o) != 4 {
            let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
            assert_eq!(
                v["different"],
                serde_json::json!([]),
                "after a kill at {delay_ms} ms: {v}"
            );
        }
    }
    let o = with(&["--json", "mirror", "--verify", "checksum", s, &location]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["verify"]["hashed"], 32, "{v}");
    let o = with(&["--json", "mirror", s, &location]);
    let again: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (
            again["copied"].as_u64(),
            again["updated"].as_u64(),
            again["unchanged"].as_u64()
        ),
        (Some(0), Some(0), Some(32)),
        "{again}"
    );
    fs::write(src.join("runs/r000.csv"), "changed").unwrap();
    let o = with(&["--json", "mirror", "--delete", s, &location]);
    let changed: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(changed["updated"], 1, "{changed}");
    // Pull it back and compare with the source, file by file.
    let back = env.path("back");
    let mut pull: Vec<&str> = vec!["mirror"];
    let source_opts: Vec<String> = options
        .chunks(2)
        .flat_map(|kv| ["--source-option".to_owned(), kv[1].clone()])
        .collect();
    pull.extend(source_opts.iter().map(String::as_str));
    pull.extend([location.as_str(), back.to_str().unwrap()]);
    let o = env.run(&pull);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let o = env.run(&[
        "mirror",
        "--verify-only",
        "--verify",
        "checksum",
        s,
        back.to_str().unwrap(),
    ]);
    assert_eq!(code(&o), 0, "{}", stdout(&o));
}
