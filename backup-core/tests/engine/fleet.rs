//! The fleet engine with devices that are local directories: the `pull:`
//! config and its errors, rounds through `jobs::run` with the live state
//! kept across rounds (devices that leave, devices that fail, last
//! successes), and both layouts (merged, `{device}`).

use std::fs;
use std::path::Path;
use std::sync::Arc;

use backup_core::Cancel;
use backup_core::fleet::status::{DeviceState, Fleets};
use backup_core::jobs::doc::Format;
use backup_core::jobs::log::Quiet;
use backup_core::jobs::model;
use backup_core::jobs::run::{self, Outcome, RunOptions};

fn parse(dir: &Path, text: &str) -> Result<model::Config, String> {
    let path = dir.join("backupkit.yaml");
    fs::write(&path, text).unwrap();
    model::parse(&path, text, Format::Yaml, false, &super::registry()).map_err(|e| e.to_string())
}

fn device(root: &Path, n: usize) {
    for kind in ["results", "videos"] {
        let d = root.join(format!("dev{n}/{kind}/id{n}/ETHOSCOPE_00{n}/2026-12-01"));
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join("a.db"), format!("{kind} of {n}")).unwrap();
    }
}

/// The fleets kept across rounds, and a round of `config`'s jobs that
/// keeps them (as the service does).
fn rounds(config: &model::Config) -> (Arc<Fleets>, impl Fn() -> run::RunSummary + '_) {
    let fleets = Arc::new(Fleets::new());
    let opts = RunOptions {
        fleets: Some(Arc::clone(&fleets)),
        ..RunOptions::default()
    };
    let registry = super::registry();
    let round = move || run::run(config, &registry, &opts, &Quiet, &Cancel::new()).unwrap();
    (fleets, round)
}

#[test]
fn pull_config_is_checked_with_positions() {
    let dir = tempfile::tempdir().unwrap();
    let e = parse(
        dir.path(),
        "jobs:\n  fleet:\n    sources: [data]\n    pull:\n      devices:\n        - id: ../x\n          \
         url: ssh://h\n        - {id: a}\n      kinds:\n        results: {remote: r}\n      \
         concurrency: 0\n      host_keys: no\n      timeout: 0s\n      bwlimit: fast\n      \
         discover: {url: ftp://node}\n",
    )
    .unwrap_err();
    for want in [
        "jobs.fleet.sources",
        "a pull job takes its data",
        "may hold only letters",
        "needs `id:` and `url:`",
        "a kind needs `remote:`",
        "concurrency: must be at least 1",
        "trusting any key is not offered",
        "timeout: must be at least 1s",
        "bwlimit",
        "expected an http:// or https:// URL",
    ] {
        assert!(e.contains(want), "{want:?} missing from:\n{e}");
    }
    let e = parse(dir.path(), "jobs:\n  fleet:\n    pull: {}\n").unwrap_err();
    assert!(
        e.contains("needs `devices:`") && e.contains("needs `kinds:`"),
        "{e}"
    );

    // A pull job without a schedule is pulled as often as devices are
    // discovered; `config show` shows its devices without credentials.
    let c = parse(
        dir.path(),
        "jobs:\n  fleet:\n    pull:\n      devices: {a: /srv/devices/a}\n      discover: \
         {command: 'true'}\n      discover_every: 2m\n      kinds: {results: {remote: r, \
         local: 'out/{device}'}}\n",
    )
    .unwrap();
    let j = &c.jobs[0];
    assert_eq!(
        j.schedule,
        Some(backup_core::schedule::Schedule::Every(
            std::time::Duration::from_secs(120)
        ))
    );
    let view = c.view();
    assert_eq!(view["jobs"]["fleet"]["pull"]["devices"][0]["id"], "a");
    assert_eq!(view["jobs"]["fleet"]["pull"]["discover_every"], "2m");
    assert!(view["jobs"]["fleet"].get("destinations").is_none());
}

#[test]
fn rounds_keep_each_devices_state_and_follow_the_device_list() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for n in 1..=3 {
        device(root, n);
    }
    let list = root.join("devices.json");
    let write_list = |ns: &[usize]| {
        let items: Vec<String> = ns
            .iter()
            .map(|n| {
                format!(
                    "{{\"id\": \"id{n}\", \"name\": \"ETHOSCOPE_00{n}\", \"url\": \"{}\"}}",
                    root.join(format!("dev{n}")).display()
                )
            })
            .collect();
        fs::write(&list, format!("[{}]", items.join(", "))).unwrap();
    };
    write_list(&[1, 2]);
    let config = parse(
        root,
        &format!(
            "jobs:\n  fleet:\n    pull:\n      discover: {{command: cat {}}}\n      \
             discover_every: 1s\n      kinds:\n        results: {{remote: results, local: \
             merged}}\n        videos: {{remote: videos, local: 'each/{{device}}'}}\n",
            list.display()
        ),
    )
    .unwrap();
    let (fleets, round) = rounds(&config);

    let s = round();
    assert_eq!(s.result, Outcome::Ok, "{:?}", s.jobs[0]);
    let names: Vec<&str> = s.jobs[0]
        .destinations
        .iter()
        .map(|d| d.destination.as_str())
        .collect();
    assert_eq!(
        names,
        ["id1.results", "id1.videos", "id2.results", "id2.videos"]
    );
    // Merged: each device's own top-level directory; per device: whole.
    assert_eq!(
        fs::read_to_string(root.join("merged/id2/ETHOSCOPE_002/2026-12-01/a.db")).unwrap(),
        "results of 2"
    );
    assert_eq!(
        fs::read_to_string(root.join("each/id1/id1/ETHOSCOPE_001/2026-12-01/a.db")).unwrap(),
        "videos of 1"
    );
    let fleet = fleets.get("fleet");
    {
        let st = fleet.lock();
        let d1 = &st.devices["id1"];
        assert_eq!(d1.state, DeviceState::Idle);
        assert_eq!((d1.runs, d1.failures, d1.files), (1, 0, 2));
        assert!(d1.last_success.is_some() && d1.transfer.is_none());
    }

    // Device 1 leaves, 3 arrives; device 2's videos become unreadable.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    write_list(&[2, 3]);
    fs::remove_dir_all(root.join("dev2/videos")).unwrap();
    fs::write(root.join("dev2/videos"), "not a directory").unwrap();
    let s = round();
    assert_eq!(s.result, Outcome::Failed);
    let by: std::collections::BTreeMap<&str, Outcome> = s.jobs[0]
        .destinations
        .iter()
        .map(|d| (d.destination.as_str(), d.result))
        .collect();
    assert!(!by.keys().any(|k| k.starts_with("id1.")), "{by:?}");
    assert_eq!(by["id2.videos"], Outcome::Failed);
    assert_eq!(by["id3.videos"], Outcome::Ok, "the others go on");
    let st = fleet.lock();
    assert!(!st.devices["id1"].present, "gone from the list");
    assert_eq!(st.devices["id1"].runs, 1, "and not pulled");
    let d2 = &st.devices["id2"];
    assert_eq!(d2.state, DeviceState::Failed);
    assert_eq!((d2.runs, d2.failures), (2, 1));
    assert!(d2.last_success.is_some(), "the earlier success stays");
    assert!(
        d2.last_error
            .as_deref()
            .is_some_and(|e| e.to_lowercase().contains("not a directory")),
        "{:?}",
        d2.last_error
    );
    assert_eq!(st.devices["id3"].state, DeviceState::Idle);
    assert_eq!(st.devices.len(), 3, "the one that left is still known");
}

/// Discovery by URL, as the ethoscope node's `/devices`: an object of ids
/// to devices, sent chunked; offline devices are left out. A node that is
/// down fails the discovery (a failed `discovery` result) while the
/// devices found before are still pulled.
#[test]
fn discovery_by_url_reads_a_node_and_survives_its_outage() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for n in 1..=2 {
        device(root, n);
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let body = format!(
        "{{\"id1\": {{\"name\": \"ETHOSCOPE_001\", \"url\": \"{}\", \"status\": \"running\"}}, \
         \"id2\": {{\"name\": \"ETHOSCOPE_002\", \"url\": \"{}\", \"status\": \"offline\"}}}}",
        root.join("dev1").display(),
        root.join("dev2").display()
    );
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut req = [0u8; 4096];
        let n = s.read(&mut req).unwrap();
        assert!(String::from_utf8_lossy(&req[..n]).starts_with("GET /devices HTTP/1.1"));
        let (a, b) = body.split_at(body.len() / 2);
        write!(
            s,
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: \
             chunked\r\n\r\n{:x}\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\n\r\n",
            a.len(),
            b.len()
        )
        .unwrap();
        // The listener closes here: the node goes down.
    });
    let config = parse(
        root,
        &format!(
            "jobs:\n  fleet:\n    pull:\n      discover: {{url: 'http://127.0.0.1:{port}/devices', \
             timeout: 5s}}\n      discover_every: 1s\n      kinds:\n        results: {{remote: \
             results, local: merged}}\n"
        ),
    )
    .unwrap();
    let (fleets, round) = rounds(&config);
    let s = round();
    server.join().unwrap();
    let names: Vec<&str> = s.jobs[0]
        .destinations
        .iter()
        .map(|d| d.destination.as_str())
        .collect();
    assert_eq!(names, ["id1.results"], "the offline device is left out");
    assert_eq!(s.result, Outcome::Ok);

    std::thread::sleep(std::time::Duration::from_millis(1100));
    let s = round();
    let by: Vec<(&str, Outcome)> = s.jobs[0]
        .destinations
        .iter()
        .map(|d| (d.destination.as_str(), d.result))
        .collect();
    assert_eq!(
        by,
        [("discovery", Outcome::Failed), ("id1.results", Outcome::Ok)]
    );
    let error = fleets.get("fleet").lock().discovery_error.clone();
    assert!(
        error
            .as_deref()
            .is_some_and(|e| e.contains("cannot connect")),
        "{error:?}"
    );
}
