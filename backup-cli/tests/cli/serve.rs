//! `backupkit serve`: scheduled jobs run on time, SIGHUP reloads (a broken
//! config is reported and the old one kept), SIGTERM stops within the
//! bound, cancelling a running job, and exits 0.

use super::*;

/// Polls `what` every 50 ms for up to `secs` seconds.
pub(super) fn eventually(secs: u64, what: impl Fn() -> bool) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    while std::time::Instant::now() < deadline {
        if what() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    what()
}

pub(super) fn serve(env: &Env, config: &str, stop_timeout: &str) -> std::process::Child {
    serve_with(
        env,
        config,
        &["--stop-timeout", stop_timeout, "--listen", "127.0.0.1:0"],
    )
}

pub(super) fn serve_with(env: &Env, config: &str, args: &[&str]) -> std::process::Child {
    let err = fs::File::create(env.path("serve.err")).unwrap();
    Command::new(BIN)
        .args(["--config", config, "serve", "--history", "history.json"])
        .args(args)
        .current_dir(env.dir.path())
        .env_remove("BACKUPKIT_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err)
        .spawn()
        .unwrap()
}

pub(super) fn log_of(env: &Env) -> String {
    fs::read_to_string(env.path("serve.err")).unwrap_or_default()
}

pub(super) fn history(env: &Env) -> serde_json::Value {
    fs::read(env.path("history.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

pub(super) fn exit_within(child: &mut std::process::Child, secs: u64) -> Option<i32> {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    while std::time::Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    None
}

const CONFIG: &str = "jobs:
  pull:
    sources: [data]
    every: 1s
    destinations:
      m: {mirror: out}
  yearly:
    sources: [data]
    schedule: \"0 0 1 1 *\"
    destinations:
      y: {mirror: yearly}
  nightly:
    sources: [data]
    schedule: \"0 3 * * *\"
    catch_up: true
    destinations:
      n: {mirror: nightly}
";

#[test]
fn serve_runs_on_schedule_reloads_and_stops_cleanly() {
    let env = Env::new();
    fs::create_dir_all(env.path("data")).unwrap();
    fs::write(env.path("data/a.txt"), "first").unwrap();
    let config = env.path("backupkit.yaml").display().to_string();
    fs::write(&config, CONFIG).unwrap();
    let mut child = serve(&env, &config, "10s");
    // The interval job runs at start-up and again a second later; the
    // yearly one does not run.
    assert!(
        eventually(15, || history(&env)["jobs"]["pull"]["runs"].as_u64()
            >= Some(2)),
        "{}",
        log_of(&env)
    );
    assert_eq!(
        fs::read_to_string(env.path("out/data/a.txt")).unwrap(),
        "first"
    );
    assert!(!env.path("yearly").exists());
    assert_eq!(history(&env)["jobs"]["pull"]["last_result"], "ok");
    // `catch_up` and no run on record: once at start-up, not again.
    assert!(
        eventually(10, || history(&env)["jobs"]["nightly"]["last_result"]
            == "ok"),
        "{}",
        log_of(&env)
    );
    assert_eq!(history(&env)["jobs"]["nightly"]["runs"], 1);
    assert!(env.path("nightly/data/a.txt").is_file());
    // A broken config on SIGHUP: reported, the old one kept, still serving.
    fs::write(&config, format!("{CONFIG}  broken: [\n")).unwrap();
    signal_after(&child, 0, "-HUP");
    assert!(
        eventually(10, || log_of(&env).contains("the config was not reloaded")),
        "{}",
        log_of(&env)
    );
    assert!(
        child.try_wait().unwrap().is_none(),
        "serve exited on a bad config"
    );
    fs::write(env.path("data/b.txt"), "later").unwrap();
    assert!(
        eventually(10, || env.path("out/data/b.txt").is_file()),
        "the old config stopped running: {}",
        log_of(&env)
    );
    // A good config on SIGHUP replaces it: the pull now goes elsewhere.
    fs::write(&config, CONFIG.replace("{mirror: out}", "{mirror: out2}")).unwrap();
    signal_after(&child, 0, "-HUP");
    assert!(
        eventually(10, || env.path("out2/data/b.txt").is_file()),
        "{}",
        log_of(&env)
    );
    assert!(log_of(&env).contains("reloaded"), "{}", log_of(&env));
    signal_after(&child, 0, "-TERM");
    assert_eq!(exit_within(&mut child, 15), Some(0), "{}", log_of(&env));
    assert!(log_of(&env).contains("backupkit serve: stopped"));
    assert!(!log_of(&env).contains("panicked"));
}

/// Serves a job whose `before` hook sleeps `sleep` seconds, and waits
/// until it runs.
fn serving_a_slow_job(env: &Env, sleep: u32, stop_timeout: &str) -> std::process::Child {
    fs::create_dir_all(env.path("data")).unwrap();
    let config = env.path("backupkit.yaml").display().to_string();
    let text = format!(
        "jobs:
  slow:
    sources: [data]
    every: 1h
    hooks:
      before: \"sleep {sleep}\"
    destinations:
      m: {{mirror: out}}
"
    );
    fs::write(&config, text).unwrap();
    let child = serve(env, &config, stop_timeout);
    assert!(
        eventually(15, || history(env)["jobs"]["slow"]["last_result"]
            == "running"),
        "{}",
        log_of(env)
    );
    child
}

/// SIGTERM while a job runs: the run is cancelled (its hook's process
/// group killed), serve exits 0 well within the bound, and the history
/// says the run did not finish.
#[test]
fn sigterm_cancels_a_running_job_within_the_bound() {
    let env = Env::new();
    let mut child = serving_a_slow_job(&env, 60, "10s");
    let asked = std::time::Instant::now();
    signal_after(&child, 0, "-TERM");
    assert_eq!(exit_within(&mut child, 15), Some(0), "{}", log_of(&env));
    assert!(
        asked.elapsed() < Duration::from_secs(10),
        "{:?}",
        asked.elapsed()
    );
    let h = history(&env);
    assert_eq!(h["jobs"]["slow"]["runs"], 1, "{h}");
    assert_ne!(h["jobs"]["slow"]["last_result"], "ok", "{h}");
    assert!(!env.path("out").exists(), "the mirror ran after the stop");
}

/// A stop bound that runs out: exit 130, naming the job still running.
#[test]
fn a_stop_bound_that_runs_out_exits_130_naming_the_job() {
    let env = Env::new();
    let mut child = serving_a_slow_job(&env, 3, "0s");
    signal_after(&child, 0, "-TERM");
    assert_eq!(exit_within(&mut child, 10), Some(130), "{}", log_of(&env));
    assert!(
        log_of(&env).contains("still running after 0s (nothing partial is visible): slow"),
        "{}",
        log_of(&env)
    );
}
