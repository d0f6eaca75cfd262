//! `serve`'s HTTP frontend: the status page, `/status` JSON field by
//! field, `/status/DEVICE`, `/metrics` checked by `promtool`, `POST
//! /jobs/NAME/run`, and the token that guards it.

use std::io::Read;
use std::net::TcpStream;

use super::serve::{eventually, exit_within, history, log_of, serve, serve_with};
use super::*;

/// One HTTP/1.1 request; the status code and the body.
pub(super) fn http(addr: &str, method: &str, path: &str, token: Option<&str>) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let auth = token.map_or_else(String::new, |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Length: 0\r\nConnection: \
         close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (code, body)
}

/// The address serve says its status server listens on.
pub(super) fn address(env: &Env) -> String {
    let find = || {
        log_of(env)
            .split_once("status on http://")
            .map(|(_, rest)| rest.split('/').next().unwrap_or("").to_owned())
    };
    assert!(eventually(15, || find().is_some()), "{}", log_of(env));
    find().unwrap()
}

fn job<'v>(status: &'v serde_json::Value, name: &str) -> &'v serde_json::Value {
    status["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["name"] == name)
        .unwrap_or_else(|| panic!("no job {name} in {status}"))
}

fn device<'v>(status: &'v serde_json::Value, id: &str) -> &'v serde_json::Value {
    status["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"] == id)
        .unwrap_or_else(|| panic!("no device {id} in {status}"))
}

fn config(env: &Env) -> String {
    fs::create_dir_all(env.path("data")).unwrap();
    fs::write(env.path("data/a.csv"), "x,y\n1,2\n").unwrap();
    fs::write(env.path("blocker"), "a file where a directory should be").unwrap();
    for (n, kind) in [(1, "results"), (1, "videos"), (2, "videos")] {
        let d = env.path(&format!("dev{n}/{kind}/id{n}/run1"));
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join("a.db"), format!("{kind} {n}")).unwrap();
    }
    // Device 2's results are not a directory: that device fails.
    fs::write(env.path("dev2/results"), "broken").unwrap();
    let c = env.path("backupkit.yaml");
    fs::write(
        &c,
        format!(
            "jobs:
  lab:
    sources: [data]
    every: 1h
    destinations:
      m: {{mirror: out}}
  broken:
    sources: [data]
    every: 2h
    destinations:
      m: {{mirror: blocker/out}}
  nightly:
    sources: [data]
    schedule: \"0 3 * * *\"
    destinations:
      n: {{mirror: nightly}}
  fleet:
    pull:
      devices:
        - {{id: id1, name: ETHOSCOPE_001, url: {d1}}}
        - {{id: id2, name: ETHOSCOPE_002, url: {d2}}}
      kinds:
        results: {{remote: results, local: pulled/results}}
        videos: {{remote: videos, local: pulled/videos}}
    every: 1h
",
            d1 = env.path("dev1").display(),
            d2 = env.path("dev2").display(),
        ),
    )
    .unwrap();
    c.display().to_string()
}

/// The status server while jobs and a fleet have run: `/status` field by
/// field, one device, the page, `/metrics` through promtool, and a job
/// started by `POST /jobs/NAME/run`.
#[test]
fn the_status_server_shows_jobs_and_devices() {
    let env = Env::new();
    let config = config(&env);
    let mut child = serve(&env, &config, "10s");
    let addr = address(&env);
    assert!(
        eventually(30, || {
            let h = history(&env);
            ["lab", "broken", "fleet"]
                .iter()
                .all(|j| h["jobs"][j]["last_end"].is_string())
        }),
        "{}",
        log_of(&env)
    );
    let (code, body) = http(&addr, "GET", "/status", None);
    assert_eq!(code, 200, "{body}");
    check_status(&serde_json::from_str(&body).unwrap());

    let (code, body) = http(&addr, "GET", "/status/id2", None);
    assert_eq!(code, 200);
    let one: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(one["id"], "id2");
    assert_eq!(one["state"], "failed");
    let (code, _) = http(&addr, "GET", "/status/ETHOSCOPE_001", None);
    assert_eq!(code, 200, "by name too");
    let (code, _) = http(&addr, "GET", "/status/nope", None);
    assert_eq!(code, 404);

    check_page_and_metrics(&addr);

    // A job started on request, out of its schedule.
    let (code, body) = http(&addr, "POST", "/jobs/nightly/run", None);
    assert_eq!(code, 202, "{body}");
    assert!(
        eventually(15, || history(&env)["jobs"]["nightly"]["last_result"]
            == "ok"),
        "{}",
        log_of(&env)
    );
    let (code, body) = http(&addr, "POST", "/jobs/nope/run", None);
    assert_eq!(code, 404, "{body}");
    assert!(body.contains("no job \\\"nope\\\""), "{body}");
    let (code, _) = http(&addr, "GET", "/health", None);
    assert_eq!(code, 200);

    signal_after(&child, 0, "-TERM");
    assert_eq!(exit_within(&mut child, 15), Some(0), "{}", log_of(&env));
}

/// `/status` of the config above, field by field.
fn check_status(s: &serde_json::Value) {
    assert!(s["config"].as_str().unwrap().ends_with("backupkit.yaml"));
    let lab = job(s, "lab");
    assert_eq!(lab["kind"], "backup");
    assert_eq!(lab["schedule"], "every 1h");
    assert_eq!(lab["state"], "idle");
    assert_eq!(lab["last_result"], "ok");
    assert_eq!(lab["files"], 1);
    assert_eq!(lab["bytes"], 8);
    assert_eq!(lab["runs"], 1);
    assert_eq!(lab["failures"], 0);
    assert_eq!(lab["interval_seconds"], 3600);
    assert_eq!(lab["overdue"], false);
    assert!(lab["last_success"].is_string() && lab["next_run"].is_string());
    let next: chrono::DateTime<chrono::Utc> = lab["next_run"].as_str().unwrap().parse().unwrap();
    let in_secs = (next - chrono::Utc::now()).num_seconds();
    assert!((3500..=3600).contains(&in_secs), "next run in {in_secs}s");
    let broken = job(s, "broken");
    assert_eq!(broken["state"], "failed");
    assert_eq!(broken["last_result"], "failed");
    assert_eq!(broken["failures"], 1);
    assert_eq!(broken["overdue"], true, "ran and never succeeded");
    assert!(broken["last_success"].is_null());
    assert!(!broken["last_error"].as_str().unwrap_or("").is_empty());
    let nightly = job(s, "nightly");
    assert_eq!(nightly["schedule"], "0 3 * * *");
    assert_eq!(nightly["runs"], 0);
    assert_eq!(nightly["interval_seconds"], 86_400);
    assert_eq!(nightly["overdue"], false, "never ran: not overdue yet");
    assert_eq!(job(s, "fleet")["kind"], "pull");
    let d1 = device(s, "id1");
    assert_eq!(d1["name"], "ETHOSCOPE_001");
    assert_eq!(d1["job"], "fleet");
    assert_eq!(d1["state"], "idle");
    assert_eq!(d1["present"], true);
    assert_eq!(d1["files"], 2);
    assert_eq!(d1["last_result"], "ok");
    assert!(d1["last_success"].is_string());
    assert!(d1["transfer"].is_null());
    let d2 = device(s, "id2");
    assert_eq!(d2["state"], "failed");
    assert_eq!(
        d2["kinds"]["videos"]["result"], "ok",
        "its other kind went on"
    );
    assert!(d2["last_error"].as_str().unwrap().contains("results"));
    assert!(d2["last_success"].is_null());
}

/// The page shows jobs, devices and what stands out; `/metrics` has the
/// samples users alert on and passes promtool.
fn check_page_and_metrics(addr: &str) {
    let (code, page) = http(addr, "GET", "/", None);
    assert_eq!(code, 200);
    for want in [
        "<title>backupkit on",
        "name=\"viewport\"",
        "<b>lab</b>",
        "<b>ETHOSCOPE_002</b>",
        "class=\"overdue\"",
        "class=\"state failed\"",
        "every 1h",
    ] {
        assert!(
            page.contains(want),
            "{want:?} missing from the page:\n{page}"
        );
    }

    let (code, metrics) = http(addr, "GET", "/metrics", None);
    assert_eq!(code, 200);
    for want in [
        "backupkit_job_last_success_timestamp_seconds{job=\"lab\"}",
        "backupkit_job_last_run_success{job=\"broken\"} 0",
        "backupkit_job_failures_total{job=\"broken\"} 1",
        "backupkit_job_last_run_bytes{job=\"lab\"} 8",
        "backupkit_device_last_success_timestamp_seconds{job=\"fleet\",device=\"id1\"}",
        "backupkit_device_last_run_success{job=\"fleet\",device=\"id2\"} 0",
        "backupkit_device_up{job=\"fleet\",device=\"id1\"} 1",
    ] {
        assert!(metrics.contains(want), "{want:?} missing:\n{metrics}");
    }
    assert!(
        !metrics.contains("backupkit_job_last_success_timestamp_seconds{job=\"broken\"}"),
        "no success, no sample"
    );
    promtool(&metrics);
}

/// `promtool check metrics` accepts the text (Debian's prometheus package;
/// the test skips without it, or fails under `BACKUPKIT_REQUIRE_SERVICES`).
fn promtool(metrics: &str) {
    let Ok(mut child) = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    else {
        require_or_skip("promtool (apt-get install prometheus)");
        return;
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(metrics.as_bytes())
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(
        o.status.success(),
        "promtool: {}{}\n{metrics}",
        stdout(&o),
        stderr(&o)
    );
}

/// A token from a secret file guards everything but `/health`; an address
/// off loopback without a token is refused before anything runs.
#[test]
fn a_token_guards_the_status_server() {
    let env = Env::new();
    fs::create_dir_all(env.path("data")).unwrap();
    let token = env.path("token");
    fs::write(&token, "s3cret-t0ken\n").unwrap();
    let config = env.path("backupkit.yaml");
    let text = |listen: &str, token_line: &str| {
        format!(
            "http:\n  listen: \"{listen}\"\n{token_line}jobs:\n  lab:\n    sources: [data]\n    \
             every: 1h\n    destinations:\n      m: {{mirror: out}}\n"
        )
    };
    fs::write(
        &config,
        text(
            "127.0.0.1:0",
            &format!("  token_file: {}\n", token.display()),
        ),
    )
    .unwrap();
    let c = config.display().to_string();
    let mut child = serve_with(&env, &c, &[]);
    let addr = address(&env);
    let (code, body) = http(&addr, "GET", "/status", None);
    assert_eq!(code, 401, "{body}");
    let (code, _) = http(&addr, "GET", "/status", Some("wrong"));
    assert_eq!(code, 401);
    let (code, _) = http(&addr, "POST", "/jobs/lab/run", None);
    assert_eq!(code, 401);
    let (code, body) = http(&addr, "GET", "/status", Some("s3cret-t0ken"));
    assert_eq!(code, 200, "{body}");
    assert!(!body.contains("s3cret"), "the token is never shown");
    let (code, _) = http(&addr, "GET", "/health", None);
    assert_eq!(code, 200);
    signal_after(&child, 0, "-TERM");
    assert_eq!(exit_within(&mut child, 15), Some(0), "{}", log_of(&env));
    assert!(!log_of(&env).contains("s3cret"));

    // Off loopback without a token: refused, nothing run.
    fs::write(&config, text("0.0.0.0:0", "")).unwrap();
    let mut child = serve_with(&env, &c, &[]);
    assert_eq!(exit_within(&mut child, 15), Some(2), "{}", log_of(&env));
    assert!(
        log_of(&env).contains("reachable from other machines"),
        "{}",
        log_of(&env)
    );
    // A port that is taken is a clear error too.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let listen = format!("127.0.0.1:{port}");
    let mut child = serve_with(&env, &c, &["--listen", &listen]);
    assert_eq!(exit_within(&mut child, 15), Some(2), "{}", log_of(&env));
    assert!(
        log_of(&env).contains("cannot listen on"),
        "{}",
        log_of(&env)
    );
}
