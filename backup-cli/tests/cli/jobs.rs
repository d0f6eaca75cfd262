//! `backupkit run` and `backupkit config`: jobs from a config file, as
//! users run them (seeds 000 and 002 replaced).

use std::fmt::Write as _;

use super::*;

/// Writes `text` as `name` in the env's directory with `mode`.
fn write_config(env: &Env, name: &str, text: &str, mode: u32) -> String {
    let p = env.path(name);
    fs::write(&p, text).unwrap();
    set_mode(&p, mode);
    p.display().to_string()
}

/// `backupkit --config FILE ARGS...` in the env's directory.
fn with_config(env: &Env, config: &str, args: &[&str]) -> Output {
    with_config_env(env, config, args, &[])
}

/// [`with_config`] with variables set (a value of `None` removes one).
fn with_config_env(
    env: &Env,
    config: &str,
    args: &[&str],
    vars: &[(&str, Option<&str>)],
) -> Output {
    let mut all = vec!["--config", config];
    all.extend_from_slice(args);
    let mut cmd = Command::new(BIN);
    cmd.args(&all)
        .current_dir(env.dir.path())
        .env_remove("BACKUPKIT_REPOSITORY")
        .env_remove("BACKUPKIT_CONFIG")
        .stdin(Stdio::null());
    for (k, v) in vars {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    cmd.output().unwrap()
}

fn sqlite_db(path: &Path, rows: usize) {
    let c = rusqlite_free_sqlite(path);
    let mut script = String::from("CREATE TABLE results (id INTEGER PRIMARY KEY, value TEXT);\n");
    for i in 0..rows {
        let _ = writeln!(script, "INSERT INTO results (value) VALUES ('row {i}');");
    }
    c(&script);
}

/// Runs SQL through the `sqlite3` shell, or Python's sqlite3 module when
/// the shell is absent.
pub(super) fn rusqlite_free_sqlite(path: &Path) -> impl Fn(&str) {
    let path = path.to_path_buf();
    move |sql: &str| {
        let mut child = Command::new("python3")
            .arg("-c")
            .arg("import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.executescript(sys.stdin.read()); c.commit()")
            .arg(&path)
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(sql.as_bytes())
            .unwrap();
        assert!(child.wait().unwrap().success());
    }
}

fn json_of(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}\n{}", stdout(o), stderr(o)))
}

/// The result of `job`/`dest` in a run's JSON summary.
fn dest_result<'v>(summary: &'v serde_json::Value, job: &str, dest: &str) -> &'v serde_json::Value {
    summary["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["job"] == job)
        .and_then(|j| {
            j["destinations"]
                .as_array()
                .unwrap()
                .iter()
                .find(|d| d["destination"] == dest)
        })
        .unwrap_or_else(|| panic!("no {job}/{dest} in {summary}"))
}

/// Asserts that job `lab` failed through `failed` alone (its error naming
/// `needle`) while the `ok` destinations succeeded.
fn one_failed(s: &serde_json::Value, ok: &[&str], failed: &str, needle: &str) {
    assert_eq!(s["result"], "failed", "{s}");
    for d in ok {
        assert_eq!(dest_result(s, "lab", d)["result"], "ok", "{d}: {s}");
    }
    let broken = dest_result(s, "lab", failed);
    assert_eq!(broken["result"], "failed", "{s}");
    let error = broken["error"].as_str().unwrap();
    assert!(error.contains(needle), "{error}");
}

/// A config with five mistakes gives five errors, each with its line,
/// before anything runs.
#[test]
fn a_config_with_five_mistakes_gives_five_errors_with_their_lines() {
    let env = Env::new();
    env.data();
    let config = write_config(
        &env,
        "backupkit.yaml",
        "jobs:
  lab:
    sources:
      - data
      - not/there
    exlude: [\"*.tmp\"]
    destinations:
      nas:
        mirror: ftp://host/x
        keep_daily: 7
      repo:
        repository: out/repo
        keep_daily: seven
",
        0o644,
    );
    let o = with_config(&env, &config, &["config", "check"]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.starts_with("backupkit: error: 5 problems in the config:"),
        "{err}"
    );
    for (line, key, says) in [
        (5, "jobs.lab.sources[1]", "does not exist"),
        (6, "jobs.lab.exlude", "did you mean `exclude`"),
        (
            9,
            "jobs.lab.destinations.nas.mirror",
            "unknown location scheme \"ftp\"",
        ),
        (
            10,
            "jobs.lab.destinations.nas.keep_daily",
            "not an option of a mirror",
        ),
        (
            13,
            "jobs.lab.destinations.repo.keep_daily",
            "expected a whole number",
        ),
    ] {
        let want = format!("backupkit.yaml:{line}:");
        let hit = err
            .lines()
            .find(|l| l.contains(&want) && l.contains(key))
            .unwrap_or_else(|| panic!("no {want} {key} in {err}"));
        assert!(hit.contains(says), "{hit}");
    }
    // `run` refuses the same config before doing anything.
    let o = with_config(&env, &config, &["run"]);
    assert_eq!(code(&o), 2);
    assert!(!env.path("out").exists());
    assert!(!stderr(&o).contains("panicked"));
}

/// A job into a local mirror, a local repository, and a repository that
/// cannot be written, with a file tree and an SQLite database.
fn lab_job() -> (Env, PathBuf, String) {
    let env = Env::new();
    let data = env.data();
    sqlite_db(&env.path("lab.db"), 200);
    let blocked = env.path("blocked");
    fs::write(&blocked, "a file where a directory should be").unwrap();
    let config = write_config(
        &env,
        "backupkit.yaml",
        &format!(
            "log_file: logs/backup_{{date}}.log
jobs:
  lab:
    sources:
      - data
      - database: lab.db
    destinations:
      nas:
        mirror: out/mirror
      repo:
        repository: out/repo
        init: true
        keep_last: 2
      broken:
        repository: {}/repo
        init: true
",
            blocked.display()
        ),
        0o644,
    );
    (env, data, config)
}

/// A job into a local mirror and a local repository, with a database
/// dumped once for both; a destination that cannot be written fails alone;
/// `--dry-run` writes nothing.
#[test]
fn a_job_runs_its_destinations_each_on_its_own() {
    let (env, data, config) = lab_job();
    // A dry run writes nothing, says what it would do, and already finds
    // the destination that cannot work.
    let o = with_config(&env, &config, &["run", "--dry-run"]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(stderr(&o).contains("lab/broken: failed"), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("lab/nas: would mirror: 2 copied"), "{out}");
    assert!(out.contains("lab/repo: would create a repository"), "{out}");
    assert!(!env.path("out").exists(), "a dry run wrote something");

    let o = with_config(&env, &config, &["--json", "run"]);
    assert_eq!(
        code(&o),
        1,
        "a failed destination fails the run: {}",
        stderr(&o)
    );
    one_failed(&json_of(&o), &["nas", "repo"], "broken", "blocked");
    // The database was dumped once, and both destinations hold it.
    let err = stderr(&o);
    assert_eq!(err.matches("once for all destinations").count(), 1, "{err}");
    assert!(env.path("out/mirror/databases/lab.db").is_file());
    assert_eq!(
        fs::read(env.path("out/mirror/data/a.csv")).unwrap(),
        fs::read(data.join("a.csv")).unwrap()
    );
    let repo = env.path("out/repo").display().to_string();
    let o = env.run(&["-r", &repo, "--json", "snapshots"]);
    let snaps: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let kinds: Vec<&str> = snaps
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.len(), 2, "{snaps}");
    assert!(
        kinds.contains(&"files") && kinds.contains(&"database"),
        "{kinds:?}"
    );
    // The database snapshot restores to the rows dumped.
    let db_id = snaps
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["kind"] == "database")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let restored = env.path("restored.db");
    let o = env.run(&[
        "-r",
        &repo,
        "restore",
        &db_id,
        "--target",
        restored.to_str().unwrap(),
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
}

/// A job from a config file into an SMB share, without a mount: a mirror
/// and a repository, the password from the config's `password_env:`; a
/// missing variable is a config problem before anything runs.
#[test]
fn a_job_mirrors_and_snapshots_into_an_smb_share() {
    let Some(v) = smb_vars() else {
        return;
    };
    let env = Env::new();
    let data = env.data();
    sqlite_db(&env.path("lab.db"), 50);
    let unique = format!("jobs-{}", std::process::id());
    let config = write_config(
        &env,
        "backupkit.yaml",
        &format!(
            "jobs:
  lab:
    sources:
      - data
      - database: lab.db
    destinations:
      share:
        mirror: {url}/{unique}/mirror
        options: {{password_env: BACKUPKIT_TEST_SMB_PASSWORD}}
      repo:
        repository: {url}/{unique}/repo
        init: true
        options: {{password_env: BACKUPKIT_TEST_SMB_PASSWORD, timeout: 20s}}
",
            url = v[0]
        ),
        0o644,
    );
    let o = with_config(&env, &config, &["config", "check"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let o = with_config_env(
        &env,
        &config,
        &["config", "check"],
        &[("BACKUPKIT_TEST_SMB_PASSWORD", None)],
    );
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("BACKUPKIT_TEST_SMB_PASSWORD"),
        "{}",
        stderr(&o)
    );

    let o = with_config(&env, &config, &["--json", "run"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let s = json_of(&o);
    for d in ["share", "repo"] {
        assert_eq!(dest_result(&s, "lab", d)["result"], "ok", "{d}: {s}");
    }
    assert!(!stderr(&o).contains(&v[1]), "the password is never shown");
    let on_server = Path::new(&v[2]).join(&unique);
    assert_eq!(
        fs::read(on_server.join("mirror/data/a.csv")).unwrap(),
        fs::read(data.join("a.csv")).unwrap()
    );
    assert!(on_server.join("mirror/databases/lab.db").is_file());
    let repo = format!("{}/{unique}/repo", v[0]);
    let pw = "password_env=BACKUPKIT_TEST_SMB_PASSWORD";
    let o = env.run(&["-r", &repo, "-o", pw, "check", "--read-data"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(ids_at(&env, &repo, &["-o".into(), pw.into()]).len(), 2);
    let _ = fs::remove_dir_all(&on_server);
}

/// `--only`, retention per job, the dated log file, unknown names.
#[test]
fn only_retention_and_the_log_file() {
    let (env, _data, config) = lab_job();
    let o = with_config(&env, &config, &["run"]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    let repo = env.path("out/repo").display().to_string();
    // `--only` runs just those destinations: all ok, exit 0; the log file
    // is dated and holds one line per event.
    let o = with_config(
        &env,
        &config,
        &["--json", "run", "--only", "nas", "--only", "repo"],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let s = json_of(&o);
    let dests = s["jobs"][0]["destinations"].as_array().unwrap();
    assert_eq!(dests.len(), 2, "{s}");
    // Retention (keep_last: 2) per job: after a third run, two of each kind.
    let o = with_config(&env, &config, &["--json", "run", "--only", "repo"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let s = json_of(&o);
    assert_eq!(
        dest_result(&s, "lab", "repo")["forgotten"]
            .as_array()
            .unwrap()
            .len(),
        2,
        "{s}"
    );
    let o = env.run(&["-r", &repo, "--json", "snapshots"]);
    let snaps: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(snaps.as_array().unwrap().len(), 4, "{snaps}");
    let logs: Vec<PathBuf> = fs::read_dir(env.path("logs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(logs.len(), 1, "{logs:?}");
    let name = logs[0].file_name().unwrap().to_str().unwrap().to_owned();
    assert!(
        name.starts_with("backup_20")
            && Path::new(&name).extension().is_some_and(|e| e == "log")
            && name.len() == "backup_YYYYMMDD.log".len(),
        "{name}"
    );
    let log = fs::read_to_string(&logs[0]).unwrap();
    assert!(
        log.lines()
            .any(|l| l.contains("ERROR job=lab dest=broken:")),
        "{log}"
    );
    assert!(
        log.lines().all(|l| l.len() > 26 && l.as_bytes()[4] == b'-'),
        "{log}"
    );

    // Unknown names are usage errors.
    let o = with_config(&env, &config, &["run", "nightly"]);
    assert_clean_error(&o, 2, "no job named \"nightly\"");
    let o = with_config(&env, &config, &["run", "--only", "nsa"]);
    assert_clean_error(&o, 2, "no destination named \"nsa\"");
}

/// Hooks run in order with the job's result in the environment; a
/// failing `before` hook skips the job and fails it (its `on_failure`
/// runs); exit 75 skips without failing; a hook that overruns its timeout
/// is killed.
#[test]
fn hooks_run_in_order_and_can_fail_skip_or_time_out() {
    let env = Env::new();
    env.data();
    let trace = env.path("trace");
    let t = trace.display();
    let config = |before: &str, timeout: &str| {
        format!(
            "jobs:
  lab:
    sources: [data]
    destinations:
      nas:
        mirror: out/mirror
    hooks:
      before: [\"echo before $BACKUPKIT_JOB >> {t}\", \"{before}\"]
      after: \"echo after $BACKUPKIT_RESULT >> {t}\"
      on_failure: \"echo on_failure $BACKUPKIT_RESULT $BACKUPKIT_HOOK >> {t}\"
      timeout: {timeout}
"
        )
    };
    let read = || fs::read_to_string(&trace).unwrap_or_default();
    let c = write_config(&env, "ok.yaml", &config("true", "10s"), 0o644);
    let o = with_config(&env, &c, &["run"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(read(), "before lab\nafter ok\n");
    assert!(env.path("out/mirror/data/a.csv").is_file());

    fs::remove_dir_all(env.path("out")).unwrap();
    fs::remove_file(&trace).unwrap();
    let c = write_config(
        &env,
        "fail.yaml",
        &config("echo checking disk; exit 4", "10s"),
        0o644,
    );
    let o = with_config(&env, &c, &["--json", "run"]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert_eq!(read(), "before lab\non_failure failed on_failure\n");
    assert!(
        !env.path("out").exists(),
        "the job ran after its before hook failed"
    );
    let s = json_of(&o);
    assert_eq!(s["jobs"][0]["result"], "failed");
    assert!(
        s["jobs"][0]["error"]
            .as_str()
            .unwrap()
            .contains("exited with 4"),
        "{s}"
    );
    assert!(
        stderr(&o).contains("checking disk"),
        "the hook's output is logged"
    );

    fs::remove_file(&trace).unwrap();
    let c = write_config(&env, "skip.yaml", &config("exit 75", "10s"), 0o644);
    let o = with_config(&env, &c, &["--json", "run"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(json_of(&o)["jobs"][0]["result"], "skipped");
    assert_eq!(
        read(),
        "before lab\n",
        "neither after nor on_failure runs for a skip"
    );
    assert!(!env.path("out").exists());

    fs::remove_file(&trace).unwrap();
    let c = write_config(&env, "slow.yaml", &config("sleep 60", "1s"), 0o644);
    let started = std::time::Instant::now();
    let o = with_config(&env, &c, &["--json", "run"]);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    let s = json_of(&o);
    assert!(
        s["jobs"][0]["error"]
            .as_str()
            .unwrap()
            .contains("timed out"),
        "{s}"
    );
    assert!(!env.path("out").exists());
}

/// An inline secret is refused in a file others can read, with the fix;
/// in an owner-only file it is accepted. No secret, inline or from a file,
/// appears in `config show`, the log, the summary or an error.
#[test]
fn secrets_stay_out_of_everything() {
    let env = Env::new();
    env.data();
    let secret = "s3cr3t-Value-1234";
    let text = format!(
        "log_file: run.log
jobs:
  lab:
    sources:
      - data
      - database: postgres://lab:{secret}@127.0.0.1:1/lab
    destinations:
      remote:
        repository: s3://lab-backups/lab
        init: true
        options:
          endpoint: http://127.0.0.1:1
          allow_http: true
          region: us-east-1
          retries: 0
          access_key_id: AKIDEXAMPLE
          secret_access_key: {secret}
"
    );
    let c = write_config(&env, "open.yaml", &text, 0o644);
    let o = with_config(&env, &c, &["config", "check"]);
    assert_eq!(code(&o), 2);
    let err = stderr(&o);
    assert!(err.contains("open.yaml:6:"), "{err}");
    assert!(err.contains("open.yaml:17:"), "{err}");
    assert!(err.starts_with("backupkit: error: 2 problems"), "{err}");
    assert!(
        err.contains("chmod 600") && err.contains("secret_access_key_env"),
        "{err}"
    );
    assert!(!err.contains(secret), "{err}");

    let c = write_config(&env, "private.yaml", &text, 0o600);
    let o = with_config(&env, &c, &["config", "check"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let secret_file = env.path("pw");
    fs::write(&secret_file, format!("{secret}\n")).unwrap();
    let from_file = text
        .replace(
            &format!("secret_access_key: {secret}"),
            &format!("secret_access_key_file: {}", secret_file.display()),
        )
        .replace(
            &format!("lab:{secret}@127.0.0.1:1/lab"),
            &format!(
                "lab@127.0.0.1:1/lab\n        password_file: {}",
                secret_file.display()
            ),
        );
    let c2 = write_config(&env, "from-file.yaml", &from_file, 0o644);
    for c in [&c, &c2] {
        let mut everything = String::new();
        for args in [
            &["config", "show"][..],
            &["--json", "config", "show"],
            &["--json", "run"],
            &["run"],
        ] {
            let o = with_config(&env, c, args);
            everything.push_str(&stdout(&o));
            everything.push_str(&stderr(&o));
        }
        everything.push_str(&fs::read_to_string(env.path("run.log")).unwrap());
        assert!(everything.contains("***"), "{everything}");
        assert!(everything.contains("remote"), "{everything}");
        assert!(everything.contains("127.0.0.1:1/lab"), "{everything}");
        assert!(
            !everything.contains(secret),
            "a secret leaked: {everything}"
        );
    }
}

/// Seed 000's `backups:` section as the seed documents it: the errors say
/// what to add (the sources it never names; SMB without a mount); with
/// sources and reachable places added it runs, compressed destinations as
/// snapshots and the others as `--update` mirrors, with `--only`.
#[test]
fn seed_000_backups_section_works_as_written() {
    let env = Env::new();
    let as_written = "backups:
  # Enable/disable all backups
  enabled: true

  # Compression settings (DEFAULT: disabled)
  compression:
    enabled: false  # Set to true to compress CSVs and Results

  # Backup destinations (all enabled by default)
  destinations:
    smb:
      enabled: true
      base_path: \"smb://ramanfile.local/ramanfiles/cole\"
      csvs_path: \"smb://ramanfile.local/ramanfiles/cole/flyTrackingData\"
      results_path: \"smb://ramanfile.local/ramanfiles/cole/Figures\"
      use_compression: false  # Override global setting

    box:
      enabled: true
      remote: \"Box-Folder\"
      folder: \"Ramanlab-Backups\"
      use_compression: false  # Override global setting

    secured:
      enabled: true
      base_path: \"/securedstorage/DATAsec/cole/Data-secured\"
      use_compression: false  # Override global setting
";
    let c = write_config(&env, "config.yaml", as_written, 0o644);
    let o = with_config(&env, &c, &["config", "check"]);
    assert_eq!(code(&o), 2);
    let err = stderr(&o);
    assert!(err.contains("config.yaml:1:1: backups: seed 000's `backups:` section names no source paths: add `sources:`"), "{err}");
    // With the sources named, the SMB locations are the only problem left:
    // they name no user.
    fs::create_dir_all(env.path("data/flyTrackingData")).unwrap();
    fs::write(env.path("data/flyTrackingData/fly1.csv"), "t,x\n0,1\n").unwrap();
    fs::create_dir_all(env.path("outputs/Figures")).unwrap();
    fs::write(env.path("outputs/Figures/fig1.png"), "png").unwrap();
    let with_sources = as_written.replace(
        "  enabled: true\n\n",
        "  enabled: true\n  sources: {csvs: data/flyTrackingData, results: outputs/Figures}\n\n",
    );
    let c = write_config(&env, "config.yaml", &with_sources, 0o644);
    let o = with_config(&env, &c, &["config", "check"]);
    let err = stderr(&o);
    assert_eq!(code(&o), 2, "{err}");
    assert!(
        err.contains("bad SMB location smb://ramanfile.local/ramanfiles/cole/flyTrackingData: no user (USER@HOST)"),
        "{err}"
    );
    assert!(!err.contains("names no source paths"), "{err}");
    // With a user, the share is a mirror destination like any other (the
    // check neither connects nor reads the password).
    let with_user = with_sources.replace("smb://ramanfile.local", "smb://cole@ramanfile.local");
    let c = write_config(&env, "config.yaml", &with_user, 0o644);
    let o = with_config(&env, &c, &["config", "check"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
}

/// Seed 000's section with the sources added and the share mounted (a
/// local directory here), Box an rclone remote, the secured path
/// compressed: it runs, each destination as the seed meant it.
#[test]
fn seed_000_backups_section_runs() {
    let env = Env::new();
    fs::create_dir_all(env.path("data/flyTrackingData")).unwrap();
    fs::write(env.path("data/flyTrackingData/fly1.csv"), "t,x\n0,1\n").unwrap();
    fs::create_dir_all(env.path("outputs/Figures")).unwrap();
    fs::write(env.path("outputs/Figures/fig1.png"), "png").unwrap();
    // The share mounted (a local directory here), Box an rclone remote,
    // the secured path compressed: it runs.
    let mnt = env.path("mnt/ramanfiles/cole");
    let secured = env.path("securedstorage/Data-secured");
    let rclone_conf = env.path("rclone.conf");
    fs::write(&rclone_conf, "[Box-Folder]\ntype = local\n").unwrap();
    let box_dir = env.path("box");
    let mounted = format!(
        "backups:
  enabled: true
  sources: {{csvs: data/flyTrackingData, results: outputs/Figures}}
  compression:
    enabled: false
  destinations:
    smb:
      enabled: true
      base_path: \"{m}\"
      csvs_path: \"{m}/flyTrackingData\"
      results_path: \"{m}/Figures\"
      use_compression: false
    box:
      enabled: true
      remote: \"Box-Folder\"
      folder: \"{b}\"
      use_compression: false
    secured:
      enabled: true
      base_path: \"{s}\"
      use_compression: true
",
        m = mnt.display(),
        b = box_dir.display(),
        s = secured.display()
    );
    let c = write_config(&env, "config.yaml", &mounted, 0o644);
    let run = |args: &[&str]| {
        let mut all = vec!["--config", c.as_str()];
        all.extend_from_slice(args);
        Command::new(BIN)
            .args(&all)
            .current_dir(env.dir.path())
            .env("RCLONE_CONFIG", &rclone_conf)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    if Command::new("rclone").arg("version").output().is_err() {
        require_or_skip("rclone");
        return;
    }
    let o = run(&["--json", "run", "--only", "smb"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let s = json_of(&o);
    let names: Vec<&str> = s["jobs"][0]["destinations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["destination"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["smb.csvs", "smb.results"], "{s}");
    // csvs_path and results_path take their source's contents.
    assert!(
        env.path("mnt/ramanfiles/cole/flyTrackingData/fly1.csv")
            .is_file()
    );
    assert!(env.path("mnt/ramanfiles/cole/Figures/fig1.png").is_file());
    assert!(
        !box_dir.exists() && !secured.exists(),
        "--only smb ran others"
    );
    let o = run(&["--json", "run"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let s = json_of(&o);
    assert_eq!(dest_result(&s, "backups", "box")["kind"], "mirror");
    assert!(box_dir.join("csvs/fly1.csv").is_file() && box_dir.join("results/fig1.png").is_file());
    assert_eq!(dest_result(&s, "backups", "secured")["kind"], "snapshots");
    let o = env.run(&["-r", secured.to_str().unwrap(), "--json", "snapshots"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    // `enabled: false` for all backups: nothing runs.
    let off = mounted.replacen("  enabled: true\n", "  enabled: false\n", 1);
    write_config(&env, "config.yaml", &off, 0o644);
    let o = run(&["--json", "run"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(json_of(&o)["jobs"][0]["result"], "skipped");
}

/// Seed 002's `backup:` section as the seed documents it, with its `.env`
/// database variables: jobs `database`, `files` and `full`; the cloud
/// section becomes a destination; an inline `smtp_password` in a
/// readable file is refused.
#[test]
fn seed_002_backup_section_works_as_written() {
    let env = Env::new();
    let as_written = SEED_002;
    let c = write_config(&env, "backup.yaml", as_written, 0o644);
    let o = with_config(&env, &c, &["config", "check"]);
    assert_eq!(code(&o), 2);
    assert!(
        stderr(&o).contains("names nothing to back up: add `database:"),
        "{}",
        stderr(&o)
    );
    // The seed's .env names the database.
    sqlite_db(&env.path("app.db"), 50);
    let run = |config: &str, args: &[&str]| {
        let vars = [
            ("DB_TYPE", Some("sqlite")),
            ("DB_NAME", Some("app.db")),
            // The cloud destination's check wants credentials present.
            ("AWS_ACCESS_KEY_ID", Some("AKIDEXAMPLE")),
            ("AWS_SECRET_ACCESS_KEY", Some("not-a-real-key")),
        ];
        with_config_env(&env, config, args, &vars)
    };
    let o = run(&c, &["--json", "run", "database"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let s = json_of(&o);
    assert_eq!(
        dest_result(&s, "database", "local")["snapshots"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let o = env.run(&[
        "-r",
        env.path("data/backups").to_str().unwrap(),
        "--json",
        "snapshots",
    ]);
    let snaps: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(snaps[0]["kind"], "database", "{snaps}");
    // The seed's verification checks the repository the jobs share.
    let o = run(&c, &["--json", "run", "verify"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let check = dest_result(&json_of(&o), "verify", "database.local").clone();
    assert_eq!(check["kind"], "check", "{check}");
    assert_eq!(check["files"], 1, "{check}");
    assert!(
        snaps[0]["tags"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!("database"))
    );
    // The cloud section, as written for S3, becomes a second destination.
    let s3 = as_written.replace(
        "  cloud:\n    enabled: false\n",
        "  cloud:\n    enabled: true\n    provider: s3\n    s3:\n      bucket: avalanche-backups\n      prefix: production/\n      region: us-east-1\n",
    );
    let c = write_config(&env, "backup.yaml", &s3, 0o644);
    let o = run(&c, &["--json", "config", "show"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v = json_of(&o);
    let cloud = &v["jobs"]["database"]["destinations"]["cloud"];
    assert_eq!(
        cloud["repository"], "s3://avalanche-backups/production",
        "{v}"
    );
    assert_eq!(cloud["options"]["region"], "us-east-1", "{v}");
    assert_eq!(cloud["keep_daily"], 7, "{v}");
    assert_eq!(cloud["keep_monthly"], 12, "{v}");
    // The seed's crontab comes with it: `serve` runs the jobs so, and the
    // weekly cleanup and daily verification as tasks.
    assert_eq!(v["jobs"]["database"]["schedule"], "0 2 * * *", "{v}");
    assert_eq!(v["jobs"]["cleanup"]["schedule"], "0 5 * * 0", "{v}");
    assert_eq!(v["jobs"]["cleanup"]["task"], "cleanup", "{v}");
    assert_eq!(v["jobs"]["verify"]["schedule"], "0 6 * * *", "{v}");
    assert_eq!(v["jobs"]["verify"]["task"], "check", "{v}");
    assert_eq!(v["jobs"]["verify"]["read_data"], "10%", "{v}");
}

const SEED_002: &str = "backup:
  root_dir: data/backups
  retention:
    daily: 7
    weekly: 4
    monthly: 12
  compression: true
  cloud:
    enabled: false
";

/// Seed 002's notifications, with the password inline as the seed shows
/// it: refused in a file others can read, never shown.
#[test]
fn seed_002_inline_smtp_password_needs_a_private_file() {
    let env = Env::new();
    let as_written = SEED_002;
    sqlite_db(&env.path("app.db"), 5);
    let run = |config: &str, args: &[&str]| {
        let vars = [("DB_TYPE", Some("sqlite")), ("DB_NAME", Some("app.db"))];
        with_config_env(&env, config, args, &vars)
    };
    let mail = format!(
        "{as_written}  notifications:
    enabled: true
    email:
      smtp_host: smtp.gmail.com
      smtp_port: 587
      smtp_user: your-email@gmail.com
      smtp_password: your-app-password
      from_email: avalanche-backup@example.com
      to_emails:
        - admin@example.com
        - ops@example.com
"
    );
    let c = write_config(&env, "backup.yaml", &mail, 0o644);
    let o = run(&c, &["config", "check"]);
    assert_eq!(code(&o), 2);
    let err = stderr(&o);
    assert!(
        err.contains("backup.yaml:16:22: backup.notifications.email.smtp_password:"),
        "{err}"
    );
    assert!(err.contains("chmod 600"), "{err}");
    assert!(!err.contains("your-app-password"), "{err}");
    set_mode(Path::new(&c), 0o600);
    let o = run(&c, &["config", "check"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
}

/// The notification sinks of `sinks.py` (SMTP with STARTTLS and a login,
/// HTTP), running until dropped.
struct Sinks {
    child: std::process::Child,
    dir: PathBuf,
    smtp_port: u16,
    http_port: u16,
    ca_file: String,
}

impl Sinks {
    fn start(dir: PathBuf, user: &str, password: &str) -> Option<Self> {
        let python = std::env::var("BACKUPKIT_TEST_PYTHON").unwrap_or_else(|_| {
            concat!(env!("CARGO_MANIFEST_DIR"), "/../target/venv/bin/python").to_owned()
        });
        let has = Command::new(&python)
            .args(["-c", "import aiosmtpd"])
            .output()
            .is_ok_and(|o| o.status.success());
        if !has {
            require_or_skip("Python with aiosmtpd (scripts/test.sh installs it into target/venv)");
            return None;
        }
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/cli/sinks.py");
        let mut child = Command::new(&python)
            .arg(script)
            .arg(&dir)
            .arg(user)
            .arg(password)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        let parts: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(parts.first(), Some(&"ready"), "{line}");
        Some(Self {
            smtp_port: parts[1].parse().unwrap(),
            http_port: parts[2].parse().unwrap(),
            ca_file: parts[3].to_owned(),
            child,
            dir,
        })
    }

    /// The records of `kind` (`mail`, `http`) received so far.
    fn records(&self, kind: &str) -> Vec<serde_json::Value> {
        let mut files: Vec<PathBuf> = fs::read_dir(&self.dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                let name = p.file_name().unwrap().to_str().unwrap();
                name.starts_with(kind) && p.extension().is_some_and(|e| e == "json")
            })
            .collect();
        files.sort();
        files
            .iter()
            .map(|p| serde_json::from_str(&fs::read_to_string(p).unwrap()).unwrap())
            .collect()
    }
}

impl Drop for Sinks {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A job with a mirror (and, `broken`, a destination that fails) that
/// notifies by email, webhook and ping.
/// Written as `notify.yaml`; returns its path.
fn notify_config(env: &Env, sinks: &Sinks, smtp_port: u16, hook: &str, broken: bool) -> String {
    let blocked = env.path("blocked");
    fs::write(&blocked, "a file").unwrap();
    let broken = if broken {
        format!(
            "      broken:\n        repository: {}/repo\n        init: true\n",
            blocked.display()
        )
    } else {
        String::new()
    };
    let text = format!(
        "jobs:
  lab:
    sources: [data]
    destinations:
      nas:
        mirror: out/mirror
{broken}    notify:
      on: always
      email:
        smtp_host: localhost
        smtp_port: {smtp_port}
        smtp_user: backupkit
        smtp_password_file: pw
        from_email: backupkit@example.com
        to_emails: [ops@example.com, admin@example.com]
        ca_file: {ca}
        timeout: 10s
      webhook:
        url: http://127.0.0.1:{port}/{hook}
        headers:
          Authorization_env: HOOK_TOKEN
      ping: http://127.0.0.1:{port}/ping/abc
",
        ca = sinks.ca_file,
        port = sinks.http_port,
    );
    write_config(env, "notify.yaml", &text, 0o644)
}

/// `backupkit --json run` with the webhook's token in the environment.
fn notify_run(env: &Env, config: &str, token: &str) -> Output {
    Command::new(BIN)
        .args(["--config", config, "--json", "run"])
        .current_dir(env.dir.path())
        .env("HOOK_TOKEN", format!("Bearer {token}"))
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// Email (STARTTLS, a login), a webhook with a secret header and the
/// heartbeat pings, received by local servers with the expected content;
/// an unreachable SMTP server or a failing webhook changes nothing about
/// the job's result. No secret reaches any of them.
#[test]
fn notifications_are_delivered_and_never_change_the_result() {
    let env = Env::new();
    env.data();
    let password = "smtp-Pass-9876";
    let token = "hook-Token-5432";
    let Some(sinks) = Sinks::start(env.path("sinks"), "backupkit", password) else {
        return;
    };
    fs::write(env.path("pw"), format!("{password}\n")).unwrap();
    let c = notify_config(&env, &sinks, sinks.smtp_port, "hook", true);
    let o = notify_run(&env, &c, token);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    let mails = sinks.records("mail");
    assert_eq!(mails.len(), 1, "{}", stderr(&o));
    let m = &mails[0];
    assert_eq!(m["tls"], true, "{m}");
    assert_eq!(m["login"], true, "{m}");
    assert_eq!(
        m["to"],
        serde_json::json!(["ops@example.com", "admin@example.com"])
    );
    let data = m["data"].as_str().unwrap();
    let host = hostname();
    assert!(
        data.contains(&format!("Subject: backupkit: lab on {host}: failed")),
        "{data}"
    );
    assert!(
        data.contains("DESTINATION") && data.contains("broken") && data.contains("nas"),
        "{data}"
    );
    assert!(data.contains("errors:"), "{data}");
    let http = sinks.records("http");
    let paths: Vec<&str> = http.iter().map(|r| r["path"].as_str().unwrap()).collect();
    assert_eq!(
        paths,
        ["/ping/abc/start", "/ping/abc/fail", "/hook"],
        "{http:?}"
    );
    let hook = &http[2];
    assert_eq!(hook["headers"]["authorization"], format!("Bearer {token}"));
    assert_eq!(hook["headers"]["content-type"], "application/json");
    let body: serde_json::Value = serde_json::from_str(hook["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["job"]["result"], "failed", "{body}");
    assert_eq!(
        body["job"]["destinations"][1]["destination"], "broken",
        "{body}"
    );
    let all = format!("{mails:?}{http:?}{}{}", stdout(&o), stderr(&o));
    assert!(!all.contains(password), "the SMTP password leaked");

    // A successful run pings success (no /fail).
    let c = notify_config(&env, &sinks, sinks.smtp_port, "hook", false);
    let o = notify_run(&env, &c, token);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let http = sinks.records("http");
    assert_eq!(http[3]["path"], "/ping/abc/start");
    assert_eq!(http[4]["path"], "/ping/abc");
    assert_eq!(sinks.records("mail").len(), 2);
}

/// Nobody listening for mail and a webhook that answers 500: both logged,
/// the job's result unchanged.
#[test]
fn undeliverable_notifications_do_not_fail_the_job() {
    let env = Env::new();
    env.data();
    let token = "hook-Token-5432";
    let Some(sinks) = Sinks::start(env.path("sinks"), "backupkit", "pw-unused") else {
        return;
    };
    fs::write(env.path("pw"), "pw-unused\n").unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_port = closed.local_addr().unwrap().port();
    drop(closed);
    let c = notify_config(&env, &sinks, closed_port, "broken/hook", false);
    let o = notify_run(&env, &c, token);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("cannot send the email through localhost"),
        "{err}"
    );
    assert!(
        err.contains("cannot deliver the webhook") && err.contains("HTTP 500"),
        "{err}"
    );
    assert_eq!(json_of(&o)["result"], "ok");
    assert!(sinks.records("mail").is_empty());
}

/// Seed 001's spelling and order: `--db-path X --backup-dir Y` before the
/// command.
#[test]
fn seed_001_options_before_the_command_work() {
    let env = Env::new();
    let db = env.path("results.db");
    sqlite_db(&db, 30);
    let db = db.to_str().unwrap();
    let dir = env.path("db_backups");
    let dir = dir.to_str().unwrap();
    let o = env.run(&["--backup-dir", dir, "init"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let o = env.run(&["--db-path", db, "--backup-dir", dir, "backup", "--force"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let o = env.run(&["--db-path", db, "--backup-dir", dir, "--json", "list"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let list = json_of(&o);
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list[0]["kind"], "database");
    let o = env.run(&["--db-path", db, "--backup-dir", dir, "auto", "--quiet"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let copy = env.path("copy.db");
    let o = env.run(&[
        "--db-path",
        copy.to_str().unwrap(),
        "--backup-dir",
        dir,
        "restore",
        "latest",
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(copy.is_file());
}

/// `cleanup` (seed 002's) applies each snapshot destination's retention
/// and backs nothing up; `--dry-run` only says what it would remove.
#[test]
fn cleanup_applies_retention_only() {
    let env = Env::new();
    env.data();
    let text = |keep: &str| {
        format!(
            "jobs:
  files:
    sources: [data]
    destinations:
      nas:
        mirror: out/mirror
      repo:
        repository: out/repo
        init: true
{keep}"
        )
    };
    let c = write_config(&env, "backupkit.yaml", &text(""), 0o644);
    for _ in 0..3 {
        let o = with_config(&env, &c, &["run"]);
        assert_eq!(code(&o), 0, "{}", stderr(&o));
    }
    let repo = env.path("out/repo").display().to_string();
    let count = || {
        let o = env.run(&["-r", &repo, "--json", "snapshots"]);
        serde_json::from_slice::<serde_json::Value>(&o.stdout)
            .unwrap()
            .as_array()
            .unwrap()
            .len()
    };
    assert_eq!(count(), 3);
    let c = write_config(
        &env,
        "backupkit.yaml",
        &text("        keep_last: 1\n"),
        0o644,
    );
    let o = with_config(&env, &c, &["--json", "cleanup", "--dry-run"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let s = json_of(&o);
    assert_eq!(
        dest_result(&s, "files", "repo")["forgotten"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(count(), 3, "a dry run removed snapshots");
    let o = with_config(&env, &c, &["--json", "cleanup"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let s = json_of(&o);
    assert_eq!(s["result"], "ok", "{s}");
    assert_eq!(dest_result(&s, "files", "nas")["result"], "skipped");
    assert_eq!(
        dest_result(&s, "files", "repo")["snapshots"],
        serde_json::json!([])
    );
    assert_eq!(count(), 1);
}

/// The issue's job: a local mirror, an SFTP snapshot repository and an
/// rclone mirror of one tree and one database. All three succeed; then
/// with the rclone remote broken the other two still do, and the summary
/// and exit code say which failed.
#[test]
fn three_destinations_one_broken_the_others_succeed() {
    let Some(v) = ssh_and_rclone_vars() else {
        return;
    };
    let env = Env::new();
    let data = env.data();
    sqlite_db(&env.path("lab.db"), 100);
    let unique = format!("jobs-{}", std::process::id());
    let config = |remote: &str| {
        format!(
            "jobs:
  lab:
    sources:
      - data
      - database: lab.db
    destinations:
      local:
        mirror: out/mirror
      sftp:
        repository: sftp://{host}{dir}/{unique}
        init: true
        options: {{ssh_config: {ssh}}}
      rclone:
        mirror: rclone:{remote}/{unique}
        options: {{rclone_config: {rc}}}
",
            host = v[1],
            dir = v[2],
            ssh = v[0],
            rc = v[3],
        )
    };
    let c = write_config(&env, "backupkit.yaml", &config(&v[4]), 0o644);
    let o = with_config(&env, &c, &["--json", "run"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let s = json_of(&o);
    for d in ["local", "sftp", "rclone"] {
        assert_eq!(dest_result(&s, "lab", d)["result"], "ok", "{d}: {s}");
    }
    assert_eq!(stderr(&o).matches("once for all destinations").count(), 1);
    // The rclone remote is a local directory: its mirror is plain files.
    let rclone_dir = PathBuf::from(v[4].split_once(':').unwrap().1).join(&unique);
    assert_eq!(
        fs::read(rclone_dir.join("data/a.csv")).unwrap(),
        fs::read(data.join("a.csv")).unwrap()
    );
    assert!(rclone_dir.join("databases/lab.db").is_file());
    let sftp = format!("sftp://{}{}/{unique}", v[1], v[2]);
    let ssh = format!("ssh_config={}", v[0]);
    let o = env.run(&["-r", &sftp, "-o", &ssh, "--json", "snapshots"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(json_of(&o).as_array().unwrap().len(), 2);

    fs::write(data.join("new.csv"), "a,b\n").unwrap();
    let c = write_config(&env, "backupkit.yaml", &config("no-such-remote:x"), 0o644);
    let o = with_config(&env, &c, &["--json", "run"]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    one_failed(&json_of(&o), &["local", "sftp"], "rclone", "no-such-remote");
    assert!(env.path("out/mirror/data/new.csv").is_file());
    let o = env.run(&["-r", &sftp, "-o", &ssh, "--json", "snapshots"]);
    assert_eq!(json_of(&o).as_array().unwrap().len(), 4);
    let table = with_config(&env, &c, &["run", "--only", "rclone"]);
    assert_eq!(code(&table), 1);
    let out = stdout(&table);
    assert!(
        out.lines()
            .any(|l| l.starts_with("lab  rclone") && l.contains("failed")),
        "{out}"
    );
}

/// The backends check their own options at `config check`, before
/// anything runs: an unknown key, a bad value, a missing credential; two
/// destinations of a job in one place are refused too.
#[test]
fn config_check_asks_the_backends_about_their_options() {
    let env = Env::new();
    env.data();
    let c = write_config(
        &env,
        "backupkit.yaml",
        "jobs:
  lab:
    sources: [data]
    destinations:
      nas:
        mirror: out/mirror
        options: {mount_piont: /mnt}
      again:
        mirror: out/mirror
      cloud:
        repository: s3://bucket/lab
        options: {region: eu-west-1}
      ssh:
        repository: sftp://lab@127.0.0.1/backups
        options: {timeout: soon}
",
        0o644,
    );
    let no_aws = [
        ("AWS_ACCESS_KEY_ID", None),
        ("AWS_SECRET_ACCESS_KEY", None),
        ("AWS_PROFILE", None),
    ];
    let o = with_config_env(&env, &c, &["config", "check"], &no_aws);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    let err = stderr(&o);
    for (line, says) in [
        (7, "unknown option \"mount_piont\""),
        (8, "the same place as the destination `nas`"),
        (12, "AWS_ACCESS_KEY_ID"),
        (15, "option timeout: expected a number of seconds"),
    ] {
        let want = format!("backupkit.yaml:{line}:");
        assert!(
            err.lines().any(|l| l.contains(&want) && l.contains(says)),
            "no {want} {says} in {err}"
        );
    }
    assert!(!env.path("out").exists());
}

/// `backupkit schedule` lists each job's next times in the local zone
/// (here Europe/Berlin, through its spring and autumn changes), checks an
/// expression given with --expr, and refuses bad ones with the reason.
#[test]
fn schedule_lists_next_runs_across_clock_changes() {
    let env = Env::new();
    fs::create_dir_all(env.path("data")).unwrap();
    let c = write_config(
        &env,
        "backupkit.yaml",
        "jobs:
  database:
    sources: [data]
    schedule: \"30 2 * * *\"
    catch_up: true
    destinations:
      local: {repository: repo}
  pull:
    sources: [data]
    every: 5m
    destinations:
      m: {mirror: mirror}
  manual:
    sources: [data]
    destinations:
      m: {mirror: mirror2}
",
        0o644,
    );
    let berlin = [("TZ", Some("Europe/Berlin"))];
    let args = [
        "--json",
        "schedule",
        "--from",
        "2026-03-28 12:00",
        "--count",
        "2",
    ];
    let o = with_config_env(&env, &c, &args, &berlin);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v = json_of(&o);
    // 02:30 is skipped on 29 March: the run is at the change, 03:00 CEST.
    assert_eq!(v[0]["job"], "database");
    assert_eq!(
        v[0]["next"],
        serde_json::json!(["2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00"])
    );
    assert_eq!(v[1]["schedule"], "every 5m");
    assert_eq!(v[1]["next"][0], "2026-03-28T12:05:00+01:00");
    assert_eq!(v[2]["schedule"], serde_json::Value::Null);
    // 02:30 happens twice on 25 October: one run, at the first.
    let autumn = [
        "--json",
        "schedule",
        "--expr",
        "30 2 * * *",
        "--from",
        "2026-10-24 12:00",
        "--count",
        "2",
    ];
    let o = with_config_env(&env, &c, &autumn, &berlin);
    assert_eq!(
        json_of(&o)[0]["next"],
        serde_json::json!(["2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00"])
    );
    let o = with_config_env(
        &env,
        &c,
        &["schedule", "--from", "2026-12-01 12:00"],
        &berlin,
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let text = stdout(&o);
    assert!(
        text.contains("database  30 2 * * *\n  2026-12-02 02:30 Wed (+01:00)"),
        "{text}"
    );
    assert!(text.contains("manual  not scheduled"), "{text}");
    // Bad input: one line with the reason, exit 2.
    let o = with_config(&env, &c, &["schedule", "--expr", "0 25 * * *"]);
    assert_clean_error(&o, 2, "hour 25 is out of range 0-23");
    let o = with_config(&env, &c, &["schedule", "nightly"]);
    assert_clean_error(&o, 2, "no job \"nightly\"");
    let o = with_config(&env, &c, &["schedule", "--from", "yesterday"]);
    assert_clean_error(&o, 2, "--from \"yesterday\" is not a time");
    let broken = fs::read_to_string(&c)
        .unwrap()
        .replace("\"30 2 * * *\"", "\"30 2 * *\"");
    let c = write_config(&env, "broken.yaml", &broken, 0o644);
    let o = with_config(&env, &c, &["config", "check"]);
    assert_eq!(code(&o), 2);
    assert!(
        stderr(&o).contains(
            "broken.yaml:4:15: jobs.database.schedule: schedule \"30 2 * *\": 4 field(s)"
        ),
        "{}",
        stderr(&o)
    );
}

/// Tasks: `task: cleanup` applies other jobs' retention, `task: check`
/// checks their repositories (each once) and fails on damage; tasks run
/// when named or scheduled, not with every job; bad references are
/// refused with their line.
#[test]
fn cleanup_and_check_tasks_work_on_other_jobs_repositories() {
    let env = Env::new();
    fs::create_dir_all(env.path("data")).unwrap();
    fs::write(env.path("data/a.csv"), "x,y\n1,2\n").unwrap();
    let text = "jobs:
  lab:
    sources: [data]
    destinations:
      repo: {repository: repo, init: true, keep_last: 5}
  more:
    sources: [data]
    destinations:
      repo: {repository: repo, init: true, keep_last: 5}
  tidy:
    task: cleanup
    jobs: [lab]
    schedule: \"0 5 * * 0\"
  verify:
    task: check
    read_data: true
    schedule: \"0 6 * * *\"
";
    let c = write_config(&env, "backupkit.yaml", text, 0o644);
    for _ in 0..2 {
        let o = with_config(&env, &c, &["--json", "run"]);
        assert_eq!(code(&o), 0, "{}", stderr(&o));
        let names: Vec<String> = json_of(&o)["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["job"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(names, ["lab", "more"], "tasks run only when named");
        std::thread::sleep(Duration::from_millis(1100));
    }
    // Keep less from now on: the weekly cleanup applies it.
    let text = text.replacen("keep_last: 5", "keep_last: 1", 1);
    let c = write_config(&env, "backupkit.yaml", &text, 0o644);
    let o = with_config(&env, &c, &["--json", "run", "tidy"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let s = json_of(&o);
    let forgotten = dest_result(&s, "tidy", "lab.repo")["forgotten"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(forgotten, 1, "{s}");
    let o = env.run(&[
        "-r",
        env.path("repo").to_str().unwrap(),
        "--json",
        "snapshots",
    ]);
    let left: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        left.as_array().unwrap().len(),
        3,
        "lab keeps 1, more keeps its 2"
    );

    let o = with_config(&env, &c, &["--json", "run", "verify"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let s = json_of(&o);
    let dests = s["jobs"][0]["destinations"].as_array().unwrap();
    assert_eq!(dests.len(), 1, "one repository, checked once: {s}");
    assert_eq!(dests[0]["destination"], "lab.repo");
    assert_eq!(dests[0]["files"], 3);
    // Damage one archive: the check task fails and says where.
    let archive = walk_names(&env.path("repo"))
        .into_iter()
        .find(|n| n.ends_with(".tar.gz") || n.ends_with(".tar.zst"))
        .unwrap();
    let path = find_file(&env.path("repo"), &archive).unwrap();
    let mut bytes = fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    fs::write(&path, bytes).unwrap();
    let o = with_config(&env, &c, &["--json", "run", "verify"]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    let s = json_of(&o);
    let d = &s["jobs"][0]["destinations"][0];
    assert_eq!(d["result"], "failed", "{s}");
    assert!(d["error"].as_str().unwrap().contains("problem"), "{s}");

    let bad = text.replace("jobs: [lab]", "jobs: [lab, nope, tidy]");
    let c = write_config(&env, "bad.yaml", &bad, 0o644);
    let o = with_config(&env, &c, &["config", "check"]);
    assert_eq!(code(&o), 2);
    let err = stderr(&o);
    assert!(
        err.contains("bad.yaml:12:11:") && err.contains("jobs.tidy.jobs: no job named \"nope\""),
        "{err}"
    );
    assert!(err.contains("\"tidy\" is not a backup job"), "{err}");
    let bad = text.replace(
        "    task: cleanup\n",
        "    task: cleanup\n    read_data: true\n",
    );
    let c = write_config(&env, "bad.yaml", &bad, 0o644);
    let o = with_config(&env, &c, &["config", "check"]);
    assert!(
        stderr(&o).contains("only `task: check` reads data"),
        "{}",
        stderr(&o)
    );
}

fn find_file(dir: &Path, name: &str) -> Option<PathBuf> {
    for e in fs::read_dir(dir).ok()?.flatten() {
        let p = e.path();
        if p.is_dir() {
            if let Some(f) = find_file(&p, name) {
                return Some(f);
            }
        } else if e.file_name().to_string_lossy() == name {
            return Some(p);
        }
    }
    None
}
