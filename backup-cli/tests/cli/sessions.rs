//! `backupkit session ...` and the config's `sessions:` section (seed 003).

use std::fmt::Write as _;

use super::*;

/// A lab tree like seed 003's: participants with the seed's prefixes and
/// others, dates across two months, videos and side files.
fn lab_tree(root: &Path) {
    for (p, d) in [
        ("p001", "20250104"),
        ("p001", "20250211"),
        ("m12", "20250120"),
        ("TR3", "20250131"),
        ("x99", "20250110"),
    ] {
        let dir = root.join(p).join(d);
        fs::create_dir_all(dir.join("calib")).unwrap();
        for cam in 0..3 {
            fs::write(dir.join(format!("cam{cam}.mp4")), format!("{p}{d}{cam}")).unwrap();
        }
        fs::write(dir.join("calib/params.json"), "{}").unwrap();
        fs::write(dir.join("recording.lock"), "").unwrap();
    }
    fs::create_dir_all(root.join("p001/notes")).unwrap();
}

fn sessions_config(env: &Env, dest_layout: &str) -> String {
    let text = format!(
        "sessions:
  recordings:
    source: data
    layout: \"{{participant_id}}/{{session_date}}\"
    filters:
      participant_prefixes: [m, p, b, s, TR, TF]
      exclude_patterns: [\"*.tmp\", \"*.lock\"]
    destinations:
      cottonlab:
        mirror: net/mobile_system_data
        layout: \"{dest_layout}\"
"
    );
    let p = env.path("backupkit.yaml");
    fs::write(&p, text).unwrap();
    p.display().to_string()
}

/// The lab tree and its config, with an import check that passes for
/// p001's two sessions and m12's (a marker file each).
fn imported_lab() -> (Env, String) {
    let env = Env::new();
    lab_tree(&env.path("data"));
    fs::create_dir_all(env.path("imported")).unwrap();
    for s in ["p001_20250104", "m12_20250120", "p001_20250211"] {
        fs::write(env.path("imported").join(s), "").unwrap();
    }
    let c = sessions_config(&env, "{session_date}/{participant_id}");
    let mut text = fs::read_to_string(&c).unwrap();
    let _ = write!(
        text,
        "    imported:\n      command: \"test -e {}/{{participant_id}}_{{session_date}}\"\n",
        env.path("imported").display()
    );
    fs::write(&c, text).unwrap();
    (env, c)
}

/// The seed's inverted layout: every session found (the seed's prefixes
/// only, dated directories only) and where it goes; a date range.
#[test]
fn session_list_maps_each_session_to_its_inverted_place() {
    let env = Env::new();
    lab_tree(&env.path("data"));
    let c = sessions_config(&env, "{session_date}/{participant_id}");
    let o = env.run(&["--config", &c, "--json", "session", "list"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let rows: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let got: Vec<(String, String)> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["source"]
                    .as_str()
                    .unwrap()
                    .rsplit("data/")
                    .next()
                    .unwrap()
                    .to_owned(),
                r["destinations"]["cottonlab"]
                    .as_str()
                    .unwrap()
                    .rsplit("mobile_system_data/")
                    .next()
                    .unwrap()
                    .to_owned(),
            )
        })
        .collect();
    let want = [
        ("p001/20250104", "20250104/p001"),
        ("m12/20250120", "20250120/m12"),
        ("TR3/20250131", "20250131/TR3"),
        ("p001/20250211", "20250211/p001"),
    ];
    let want: Vec<(String, String)> = want
        .iter()
        .map(|(a, b)| ((*a).into(), (*b).into()))
        .collect();
    assert_eq!(got, want);
    let o = env.run(&[
        "--config",
        &c,
        "--json",
        "session",
        "list",
        "--start-date",
        "2025-01-10",
        "--end-date",
        "20250131",
    ]);
    let rows: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let dates: Vec<&str> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["date"].as_str().unwrap())
        .collect();
    assert_eq!(dates, ["20250120", "20250131"]);
    let o = env.run(&["--config", &c, "session", "list", "--start-date", "Jan 4"]);
    assert_eq!(code(&o), 2);
    let o = env.run(&["--config", &c, "--json", "config", "show"]);
    let shown: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let set = &shown["sessions"]["recordings"];
    assert_eq!(
        set["destinations"]["cottonlab"]["layout"],
        "{session_date}/{participant_id}"
    );
    assert_eq!(set["filters"]["prefixes"]["participant_id"][4], "TR");
}

/// A destination layout that could put two sessions in one place, or that
/// uses a variable the source does not capture, is refused when the
/// config is loaded, with the reason and the line.
#[test]
fn layouts_that_could_lose_sessions_are_refused_at_load() {
    let env = Env::new();
    lab_tree(&env.path("data"));
    for (layout, says) in [
        ("{session_date}", "leaves out {participant_id}"),
        ("{session_date}/{participant_id}/{camera}", "uses {camera}"),
        (
            "{session_date}-{participant_id}",
            "two variables in one path segment",
        ),
    ] {
        let c = sessions_config(&env, layout);
        let o = env.run(&["--config", &c, "config", "check"]);
        assert_eq!(code(&o), 2, "{layout}");
        let err = stderr(&o);
        assert!(
            err.contains(
                "backupkit.yaml:11:17: sessions.recordings.destinations.cottonlab.layout:"
            ) && err.contains(says),
            "{layout}: {err}"
        );
    }
}

/// `session sync P D` mirrors one session to its inverted place (the
/// excluded `*.lock` left out) and verifies it by count; `session verify`
/// names a truncated file, and passes again after the next sync.
#[test]
fn session_sync_and_verify_one_session() {
    let env = Env::new();
    lab_tree(&env.path("data"));
    let c = sessions_config(&env, "{session_date}/{participant_id}");
    let o = env.run(&[
        "--config",
        &c,
        "session",
        "sync",
        "p001",
        "20250104",
        "--dry-run",
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let place = env.path("net/mobile_system_data/20250104/p001");
    assert!(!place.join("cam0.mp4").exists(), "a dry run copied");
    let o = env.run(&[
        "--config", &c, "--json", "session", "sync", "p001", "20250104",
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(s["copied"], 4, "{s}");
    assert_eq!(s["verify"]["mode"], "count", "{s}");
    assert_eq!(fs::read(place.join("cam1.mp4")).unwrap(), b"p001202501041");
    assert!(place.join("calib/params.json").is_file());
    assert!(
        !place.join("recording.lock").exists(),
        "an excluded file was synced"
    );

    let o = env.run(&[
        "--config", &c, "session", "verify", "p001", "20250104", "--full",
    ]);
    assert_eq!(code(&o), 0, "{}", stdout(&o));
    fs::write(place.join("cam2.mp4"), "trunc").unwrap();
    let o = env.run(&["--config", &c, "session", "verify", "p001", "20250104"]);
    assert_eq!(code(&o), 13, "{}", stdout(&o));
    assert!(stdout(&o).contains("different cam2.mp4"), "{}", stdout(&o));

    // Unknown sessions and wrong arity are clean errors.
    let o = env.run(&["--config", &c, "session", "sync", "p001", "20250105"]);
    assert_clean_error(&o, 4, "session not found");
    let o = env.run(&["--config", &c, "session", "sync", "p001"]);
    assert_clean_error(&o, 2, "2 value(s) (participant_id, session_date); 1 given");
    // Only the commands that change something take --dry-run.
    let o = env.run(&[
        "--config",
        &c,
        "session",
        "verify",
        "p001",
        "20250104",
        "--dry-run",
    ]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
}

/// `status-range` before and after syncing, after a backup file is
/// truncated (Verified and Safe ✗) and for a session the import check
/// rejects (Safe ✗); `status` gives the reason of each check.
#[test]
fn status_tables_follow_sync_damage_and_the_import_check() {
    let (env, c) = imported_lab();
    let table = |env: &Env| -> Vec<serde_json::Value> {
        let o = env.run(&["--config", &c, "--json", "session", "status-range"]);
        assert_eq!(code(&o), 0, "{}", stderr(&o));
        serde_json::from_slice::<serde_json::Value>(&o.stdout)
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    };
    let flags = |rows: &[serde_json::Value], key: &str| -> Vec<bool> {
        rows.iter().map(|r| r[key].as_bool().unwrap()).collect()
    };
    let rows = table(&env);
    assert_eq!(rows.len(), 4);
    assert_eq!(rows[0]["videos"], 3);
    assert_eq!(flags(&rows, "imported"), [true, true, false, true]);
    assert_eq!(flags(&rows, "backup"), [false; 4]);
    assert_eq!(flags(&rows, "safe"), [false; 4]);
    for (p, d) in [
        ("p001", "20250104"),
        ("m12", "20250120"),
        ("TR3", "20250131"),
    ] {
        let o = env.run(&["--config", &c, "session", "sync", p, d]);
        assert_eq!(code(&o), 0, "{}", stderr(&o));
    }
    let rows = table(&env);
    assert_eq!(flags(&rows, "backup"), [true, true, true, false]);
    assert_eq!(flags(&rows, "verified"), [true, true, true, false]);
    // TR3 is backed up but not imported: not safe.
    assert_eq!(flags(&rows, "safe"), [true, true, false, false]);
    fs::write(
        env.path("net/mobile_system_data/20250120/m12/cam0.mp4"),
        "x",
    )
    .unwrap();
    let rows = table(&env);
    assert_eq!(flags(&rows, "verified"), [true, false, true, false]);
    assert_eq!(flags(&rows, "safe"), [true, false, false, false]);
    let o = env.run(&[
        "--config", &c, "--json", "session", "status", "m12", "20250120",
    ]);
    let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let why = s["checks"][2]["reason"].as_str().unwrap();
    assert!(why.contains("cam0.mp4"), "{s}");
    assert_eq!(s["safe"], false);
    // In a pipe the table says yes/no.
    let o = env.run(&[
        "--config",
        &c,
        "session",
        "status-range",
        "--end-date",
        "20250110",
    ]);
    let text = stdout(&o);
    assert!(text.starts_with("Date"), "{text}");
    assert!(
        text.contains("20250104  p001         3       yes       yes     yes       yes"),
        "{text}"
    );
}

/// A listing of every file and its content below `root`, to compare a
/// tree before and after.
fn snapshot_of(root: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((p.display().to_string(), fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

/// `delete` refuses an unsafe session with the reason, never prompts
/// without a terminal, changes nothing with `--dry-run`, asks for
/// `DELETE` on a terminal (a wrong word deletes nothing), and deletes with
/// an audit record; `bulk-delete` deletes exactly the safe sessions after
/// `DELETE ALL`.
#[test]
fn safe_delete_and_bulk_delete() {
    if !have_pty_tool() {
        return;
    }
    let (env, c) = imported_lab();
    for (p, d) in [
        ("p001", "20250104"),
        ("m12", "20250120"),
        ("TR3", "20250131"),
    ] {
        let o = env.run(&["--config", &c, "session", "sync", p, d]);
        assert_eq!(code(&o), 0, "{}", stderr(&o));
    }
    let data = env.path("data");
    let before = snapshot_of(&data);
    // Not imported: refused with the reason.
    let o = env.run(&[
        "--config", &c, "session", "delete", "TR3", "20250131", "--yes",
    ]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("not safe to delete TR3/20250131: imported:"),
        "{}",
        stderr(&o)
    );
    // Not backed up: refused.
    let o = env.run(&[
        "--config", &c, "session", "delete", "p001", "20250211", "--yes",
    ]);
    assert_eq!(code(&o), 1);
    assert!(stderr(&o).contains("backup: nothing at"), "{}", stderr(&o));
    // Safe, but no terminal and no --yes: refused without a prompt.
    let o = env.run(&["--config", &c, "session", "delete", "p001", "20250104"]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("stdin is not a terminal; pass --yes"),
        "{}",
        stderr(&o)
    );
    let o = env.run(&[
        "--config",
        &c,
        "session",
        "delete",
        "p001",
        "20250104",
        "--dry-run",
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let o = env.run(&["--config", &c, "session", "bulk-delete", "--dry-run"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(
        stdout(&o).contains("safe      m12/20250120"),
        "{}",
        stdout(&o)
    );
    assert_eq!(
        snapshot_of(&data),
        before,
        "a refusal or dry run changed the source"
    );
    // On a terminal: a wrong word deletes nothing, DELETE deletes.
    let args = format!("--config '{c}' session delete p001 20250104");
    let (code_wrong, shown) = on_terminal(&env, &args, "delete\n");
    assert_eq!(code_wrong, 2, "{shown}");
    assert!(shown.contains("Type \"DELETE\" to confirm"), "{shown}");
    assert_eq!(snapshot_of(&data), before);
    let (code_ok, shown) = on_terminal(&env, &args, "DELETE\n");
    assert_eq!(code_ok, 0, "{shown}");
    // Only the excluded lock file (never backed up) is left.
    let left: Vec<String> = fs::read_dir(data.join("p001/20250104"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, ["recording.lock"], "{shown}");
    assert!(shown.contains("kept 1 excluded file(s)"), "{shown}");
    assert!(
        env.path("net/mobile_system_data/20250104/p001/cam0.mp4")
            .is_file()
    );
    // bulk-delete: exactly the safe sessions (m12), after DELETE ALL.
    let bulk = format!("--config '{c}' session bulk-delete");
    let (code_bulk, shown) = on_terminal(&env, &bulk, "DELETE ALL\n");
    assert_eq!(code_bulk, 0, "{shown}");
    assert!(!data.join("m12/20250120/cam0.mp4").exists(), "{shown}");
    for kept in ["TR3/20250131", "p001/20250211", "x99/20250110"] {
        assert!(data.join(kept).join("cam0.mp4").is_file(), "{kept}");
    }
    let audit = fs::read_to_string(data.join(".backupkit-deletions.jsonl")).unwrap();
    assert_eq!(audit.lines().count(), 2, "{audit}");
    let remote = fs::read_dir(env.path("net/mobile_system_data/.backupkit-deletions")).unwrap();
    assert_eq!(remote.count(), 2);
    // The deleted session still has a status: gone here (its lock file
    // removed too), preserved there.
    fs::remove_dir_all(data.join("m12/20250120")).unwrap();
    let o = env.run(&["--config", &c, "session", "status", "m12", "20250120"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stdout(&o).contains("20250120: not there"), "{}", stdout(&o));
    assert!(
        stdout(&o).contains("backup    yes  ") && stdout(&o).contains("verified  no"),
        "{}",
        stdout(&o)
    );
}

/// The import check as SQL against the lab's record (SQLite here; the
/// engines' own tests ask PostgreSQL and MariaDB too): a session is
/// imported only when every query finds it; a record that cannot be read
/// makes every session unsafe, with the reason.
#[test]
fn the_import_check_can_be_sql_queries() {
    let env = Env::new();
    lab_tree(&env.path("data"));
    let db = env.path("imports.db");
    super::jobs::rusqlite_free_sqlite(&db)(
        "CREATE TABLE session (participant_id TEXT, session_date TEXT, imported INT);
         INSERT INTO session VALUES ('p001', '20250104', 1), ('m12', '20250120', 0);
         CREATE TABLE video (participant_id TEXT, session_date TEXT);
         INSERT INTO video VALUES ('p001', '20250104'), ('m12', '20250120');",
    );
    let c = sessions_config(&env, "{session_date}/{participant_id}");
    let mut text = fs::read_to_string(&c).unwrap();
    text.push_str(
        "    imported:
      database: imports.db
      queries:
        - SELECT 1 FROM session WHERE participant_id = :participant_id AND session_date = :session_date AND imported = 1
        - SELECT 1 FROM video WHERE participant_id = :participant_id AND session_date = :session_date
",
    );
    fs::write(&c, &text).unwrap();
    let o = env.run(&["--config", &c, "--json", "session", "status-range"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let rows: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let imported: Vec<bool> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["imported"].as_bool().unwrap())
        .collect();
    assert_eq!(imported, [true, false, false, false], "{rows}");
    let why = rows[1]["checks"][0]["reason"].as_str().unwrap();
    assert!(why.contains("no row for SELECT 1 FROM session"), "{why}");
    // A record that is not a database: every session unsafe, saying why.
    fs::write(&db, "not a database").unwrap();
    let o = env.run(&[
        "--config", &c, "--json", "session", "status", "p001", "20250104",
    ]);
    let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(s["safe"], false);
    let why = s["checks"][0]["reason"].as_str().unwrap();
    assert!(why.contains("the import database cannot be asked"), "{why}");
    // A query naming a variable the layout lacks is caught at use.
    fs::write(
        &c,
        text.replace(":session_date AND imported", ":camera AND imported"),
    )
    .unwrap();
}

/// `batch` over two months to a local "network" directory, the test sshd
/// and moto S3, each with the inverted layout: every session synced and
/// verified (the status table says so), a second batch skips them all,
/// and `verify --full` reads every file back from each.
#[test]
fn batch_syncs_to_local_sshd_and_s3_with_the_inverted_layout() {
    let Some(ssh) = sshd_vars() else {
        return;
    };
    let Some((s3, s3_opts)) = s3_service("sessions batch") else {
        return;
    };
    let env = Env::new();
    lab_tree(&env.path("data"));
    let opt = |k: &str| {
        s3_opts
            .iter()
            .find_map(|o| o.strip_prefix(&format!("{k}=")))
            .unwrap()
            .to_owned()
    };
    let unique = format!("sessions-{}", std::process::id());
    let text = format!(
        "sessions:
  recordings:
    source: data
    layout: \"{{participant_id}}/{{session_date}}\"
    filters:
      participant_prefixes: [m, p, b, s, TR, TF]
      exclude_patterns: [\"*.lock\"]
    destinations:
      net:
        mirror: net/mobile_system_data
        layout: \"{{session_date}}/{{participant_id}}\"
      ssh:
        mirror: sftp://{host}{dir}/{unique}
        layout: \"{{session_date}}/{{participant_id}}\"
        options: {{ssh_config: {cfg}}}
      s3:
        mirror: {s3}
        layout: \"{{session_date}}/{{participant_id}}\"
        options:
          endpoint: {endpoint}
          allow_http: true
          region: us-east-1
          access_key_id: {key}
          secret_access_key_env: BACKUPKIT_TEST_S3_SECRET_ACCESS_KEY
",
        host = ssh[1],
        dir = ssh[2],
        cfg = ssh[0],
        endpoint = opt("endpoint"),
        key = opt("access_key_id"),
    );
    let c = env.path("backupkit.yaml");
    fs::write(&c, text).unwrap();
    let c = c.display().to_string();
    for dest in ["net", "ssh", "s3"] {
        let o = env.run(&[
            "--config", &c, "--json", "session", "batch", "20250101", "20250228", "--dest", dest,
        ]);
        assert_eq!(code(&o), 0, "{dest}: {}", stderr(&o));
        let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(
            (s["succeeded"].as_u64(), s["skipped"].as_u64()),
            (Some(4), Some(0)),
            "{dest}: {s}"
        );
        let o = env.run(&[
            "--config",
            &c,
            "--json",
            "session",
            "status-range",
            "--dest",
            dest,
        ]);
        let rows: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        for r in rows.as_array().unwrap() {
            assert!(
                r["backup"].as_bool().unwrap() && r["verified"].as_bool().unwrap(),
                "{dest}: {r}"
            );
            assert!(
                r["place"].as_str().unwrap().ends_with(&format!(
                    "{}/{}",
                    r["variables"]["session_date"].as_str().unwrap(),
                    r["variables"]["participant_id"].as_str().unwrap()
                )),
                "{r}"
            );
        }
        let o = env.run(&[
            "--config", &c, "--json", "session", "batch", "20250101", "20250228", "--dest", dest,
        ]);
        assert_eq!(code(&o), 0, "{dest}: {} {}", stdout(&o), stderr(&o));
        let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(s["skipped"], 4, "{dest}: {s}");
        let o = env.run(&[
            "--config", &c, "session", "verify", "TR3", "20250131", "--full", "--dest", dest,
        ]);
        assert_eq!(code(&o), 0, "{dest}: {}", stdout(&o));
    }
}

/// Seed 003's own `backup:` section, as its documentation writes it: read
/// directly (the missing recording disk is named); with its paths on this
/// machine it lists the sessions with the inverted layout, and its
/// `verify_mount: true` refuses a destination that is not mounted.
#[test]
fn seed_003_backup_section_works_as_written() {
    let as_written = "backup:
  destinations:
    - name: \"CottonLab Network\"
      mount_point: \"/mnt/CottonLab\"
      base_path: \"/mnt/CottonLab/mobile_system_data\"
      # Path structure at destination (can differ from source)
      path_structure: \"{session_date}/{participant_id}\"
      enabled: true
      verify_mount: true

  source:
    base_path: \"/data\"
    path_structure: \"{participant_id}/{session_date}\"

  filters:
    # Only sync participants with these prefixes
    participant_prefixes: [\"m\", \"p\", \"b\", \"s\", \"TR\", \"TF\"]
    exclude_patterns: [\"*.tmp\", \"*.lock\"]

  rsync:
    flags: \"-avzh\"

  verification:
    verify_after_sync: true
    verify_method: \"size\"  # File size + count verification
";
    let env = Env::new();
    let c = env.path("backup_config.yaml");
    fs::write(&c, as_written).unwrap();
    let c = c.display().to_string();
    if !Path::new("/data").is_dir() {
        let o = env.run(&["--config", &c, "config", "check"]);
        assert_eq!(code(&o), 2, "{}", stderr(&o));
        assert!(
            stderr(&o).contains("backup.source.base_path: /data is not a directory"),
            "{}",
            stderr(&o)
        );
    }
    lab_tree(&env.path("data"));
    let mnt = env.path("mnt/CottonLab");
    fs::create_dir_all(&mnt).unwrap();
    let here = as_written
        .replace("\"/data\"", &format!("\"{}\"", env.path("data").display()))
        .replace("/mnt/CottonLab", mnt.to_str().unwrap());
    fs::write(&c, &here).unwrap();
    let o = env.run(&["--config", &c, "--json", "config", "show"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let shown: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(shown["read_as"], "seed 003 `backup:`");
    let dest = &shown["sessions"]["recordings"]["destinations"]["cottonlab-network"];
    assert_eq!(dest["layout"], "{session_date}/{participant_id}", "{shown}");
    let o = env.run(&["--config", &c, "--json", "session", "list"]);
    let rows: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 4, "{rows}");
    // The share is "mounted" at a plain directory: not a mount point, so
    // the sync is refused and nothing lands on the local disk.
    let o = env.run(&["--config", &c, "session", "sync", "p001", "20250104"]);
    assert_ne!(code(&o), 0);
    assert!(
        stderr(&o).contains("not mounted") || stderr(&o).contains("mount"),
        "{}",
        stderr(&o)
    );
    assert!(!mnt.join("mobile_system_data/20250104").exists());
    fs::write(
        &c,
        here.replace("verify_mount: true", "verify_mount: false"),
    )
    .unwrap();
    let o = env.run(&["--config", &c, "session", "sync", "p001", "20250104"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(
        mnt.join("mobile_system_data/20250104/p001/cam0.mp4")
            .is_file()
    );
}
