//! Device fleets (seed 004) against the test sshd: each "device" is a
//! directory tree on that server reached through a TCP proxy of its own on
//! loopback, so that a test can switch a device off, cut it mid-transfer,
//! or make it stall (accept and then say nothing), one device at a time.

use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use super::*;

const UP: u8 = 0;
const STALLED: u8 = 1;
const DOWN: u8 = 2;

/// A device's network: forwards 127.0.0.1:`port` to the sshd.
struct Proxy {
    port: u16,
    mode: Arc<AtomicU8>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    fn start(target: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mode = Arc::new(AtomicU8::new(UP));
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (m, c) = (Arc::clone(&mode), Arc::clone(&conns));
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if m.load(Ordering::SeqCst) == DOWN {
                    drop(client);
                    continue;
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                {
                    let mut all = c.lock().unwrap();
                    all.push(client.try_clone().unwrap());
                    all.push(server.try_clone().unwrap());
                }
                for (from, to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    let m = Arc::clone(&m);
                    std::thread::spawn(move || pump(from, to, &m));
                }
            }
        });
        Self { port, mode, conns }
    }

    fn set(&self, mode: u8) {
        self.mode.store(mode, Ordering::SeqCst);
        if mode == DOWN {
            for c in self.conns.lock().unwrap().drain(..) {
                let _ = c.shutdown(Shutdown::Both);
            }
        }
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream, mode: &AtomicU8) {
    use std::io::Read;
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        // A stalled device holds what it got and says nothing.
        while mode.load(Ordering::SeqCst) == STALLED {
            std::thread::sleep(Duration::from_millis(20));
        }
        if mode.load(Ordering::SeqCst) == DOWN || to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

/// The test sshd: its user, port, client key and a directory the user
/// reads.
struct Sshd {
    user: String,
    port: u16,
    key: String,
    dir: PathBuf,
}

fn sshd() -> Option<Sshd> {
    let v = service_vars(
        &[
            "BACKUPKIT_TEST_SFTP_URL",
            "BACKUPKIT_TEST_SSH_KEY",
            "BACKUPKIT_TEST_SFTP_DIR",
        ],
        "sshd (BACKUPKIT_TEST_SSH_*; scripts/services.sh)",
    )?;
    let rest = v[0].strip_prefix("sftp://").unwrap();
    let (user, rest) = rest.split_once('@').unwrap();
    let hostport = rest.split('/').next().unwrap();
    let port = hostport.rsplit_once(':').unwrap().1.parse().unwrap();
    Some(Sshd {
        user: user.to_owned(),
        port,
        key: v[1].clone(),
        dir: PathBuf::from(&v[2]),
    })
}

/// A fleet of devices on the test sshd, each with a results and a videos
/// tree laid out as an ethoscope's, and a proxy of its own.
struct Fleet {
    env: Env,
    base: PathBuf,
    proxies: Vec<Proxy>,
    sshd: Sshd,
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for p in &self.proxies {
            p.set(DOWN);
        }
        let _ = fs::remove_dir_all(&self.base);
    }
}

fn etho_id(n: usize) -> String {
    format!("{n:03}c0ffee{n:03}")
}

impl Fleet {
    fn new(tag: &str, devices: usize, video_bytes: usize) -> Option<Self> {
        let sshd = sshd()?;
        let base = sshd.dir.join(format!("pull-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&base);
        let mut proxies = Vec::new();
        for n in 1..=devices {
            make_device(&base, n, video_bytes);
            proxies.push(Proxy::start(sshd.port));
        }
        make_tree_readable(&base);
        Some(Self {
            env: Env::new(),
            base,
            proxies,
            sshd,
        })
    }

    fn url(&self, n: usize) -> String {
        format!(
            "ssh://{}@127.0.0.1:{}{}",
            self.sshd.user,
            self.proxies[n - 1].port,
            self.device_dir(n).display()
        )
    }

    fn device_dir(&self, n: usize) -> PathBuf {
        self.base.join(format!("dev{n}"))
    }

    fn line(&self, n: usize) -> String {
        format!(
            "{{\"id\": \"{}\", \"name\": \"ETHOSCOPE_{n:03}\", \"url\": \"{}\"}}\n",
            etho_id(n),
            self.url(n)
        )
    }

    /// Writes the discovery file with devices `which`.
    fn discover(&self, which: &[usize]) {
        let text: String = which.iter().map(|n| self.line(*n)).collect();
        fs::write(self.env.path("devices.jsonl"), text).unwrap();
    }

    /// A config with a pull job `fleet` (discovery by `cat`), and `extra`
    /// lines in its `pull:`.
    fn config(&self, extra: &str) -> String {
        let c = self.env.path("backupkit.yaml");
        fs::write(
            &c,
            format!(
                "jobs:\n  fleet:\n    pull:\n      discover:\n        command: cat {}\n      \
                 kinds:\n        results: {{remote: results, local: {}}}\n        \
                 videos: {{remote: videos, local: {}}}\n      identity_file: {}\n      \
                 known_hosts: {}\n      host_keys: accept-new\n      options: {{ssh_config: \
                 /dev/null}}\n{extra}",
                self.env.path("devices.jsonl").display(),
                self.env.path("local/results").display(),
                self.env.path("local/videos").display(),
                self.sshd.key,
                self.env.path("known_hosts").display(),
            ),
        )
        .unwrap();
        c.display().to_string()
    }

    #[allow(clippy::unused_self)] // reads as `fleet.pull(..)`
    fn pull(&self, config: &str, args: &[&str]) -> (i32, serde_json::Value, String) {
        let mut all = vec!["--config", config, "--json", "pull", "fleet"];
        all.extend_from_slice(args);
        let o = Command::new(BIN)
            .args(&all)
            .env_remove("BACKUPKIT_CONFIG")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let v = serde_json::from_slice(&o.stdout).unwrap_or_default();
        (code(&o), v, stderr(&o))
    }

    /// `pull fleet --json` started in the background, its output piped.
    #[allow(clippy::unused_self)] // reads as `fleet.spawn_pull(..)`
    fn spawn_pull(&self, config: &str) -> std::process::Child {
        Command::new(BIN)
            .args(["--config", config, "--json", "pull", "fleet"])
            .env_remove("BACKUPKIT_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// The local copy of device `n`'s `kind`.
    fn local(&self, kind: &str, n: usize) -> PathBuf {
        self.env.path(&format!("local/{kind}/{}", etho_id(n)))
    }
}

/// `results/{etho_id}/ETHOSCOPE_NNN/{timestamp}/` and the same for videos.
fn make_device(base: &Path, n: usize, video_bytes: usize) {
    for (kind, files, size) in [("results", 3, 20_000), ("videos", 2, video_bytes)] {
        for run in 0..2 {
            let dir = base
                .join(format!("dev{n}/{kind}"))
                .join(etho_id(n))
                .join(format!("ETHOSCOPE_{n:03}"))
                .join(format!("2026-12-0{}_10-00-00", run + 1));
            fs::create_dir_all(&dir).unwrap();
            for f in 0..files {
                let name = if kind == "results" {
                    format!("{}_{f}.db", etho_id(n))
                } else {
                    format!("whole_{f:03}.h264")
                };
                let body: Vec<u8> = (0..size)
                    .map(|i| ((i * 7 + n * 13 + f * 31 + run) % 251) as u8)
                    .collect();
                fs::write(dir.join(name), body).unwrap();
            }
        }
    }
}

/// As root the sshd's user is another user: it must be able to read the
/// trees the test made.
fn make_tree_readable(base: &Path) {
    let _ = Command::new("chmod")
        .args(["-R", "a+rX"])
        .arg(base)
        .status();
}

fn results_of(v: &serde_json::Value) -> Vec<(String, String)> {
    v["jobs"][0]["destinations"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|d| {
                    (
                        d["destination"].as_str().unwrap_or("").to_owned(),
                        d["result"].as_str().unwrap_or("").to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn same_tree(a: &Path, b: &Path) -> bool {
    let o = Command::new("diff")
        .args(["-r", "-x", ".backupkit-mirror"])
        .arg(a)
        .arg(b)
        .output()
        .unwrap();
    if !o.status.success() {
        eprintln!("{}{}", stdout(&o), stderr(&o));
    }
    o.status.success()
}

/// Whether a file is on its way below `dir`: in rsync's staging
/// directory, or at a temporary name.
fn in_flight(dir: &Path) -> bool {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if (e.file_name().to_string_lossy().contains(".tmp-")
                || p.to_string_lossy().contains("/staging/"))
                && e.metadata().is_ok_and(|m| m.len() > 0)
            {
                return true;
            }
        }
    }
    false
}

/// Files at final names below `dir` (the mirror's own state aside).
fn user_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if name == ".backupkit-mirror" {
                continue;
            }
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// Makes `known_hosts` hold another key for device `n`, as when another
/// machine answers at its address.
fn forge_host_key(f: &Fleet, n: usize) {
    let known = fs::read_to_string(f.env.path("known_hosts")).unwrap();
    let port = format!("[127.0.0.1]:{}", f.proxies[n - 1].port);
    let other = f.env.path("other_host_key");
    let made = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&other)
        .stdin(Stdio::null())
        .status()
        .unwrap();
    assert!(made.success());
    let other_pub = fs::read_to_string(other.with_extension("pub")).unwrap();
    let other_key: Vec<&str> = other_pub.split_whitespace().take(2).collect();
    let forged: String = known
        .lines()
        .map(|l| {
            if l.starts_with(&port) {
                format!("{port} {}\n", other_key.join(" "))
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    fs::write(f.env.path("known_hosts"), forged).unwrap();
}

/// A full discovery and pull round, then a device removed and one added
/// between rounds, the seed's `-e` and `--results-only` as `--device` and
/// `--kind`, and host keys: recorded on first sight, a changed one refused
/// for that device only.
#[test]
fn pull_rounds_follow_discovery_and_check_host_keys() {
    let Some(f) = Fleet::new("rounds", 4, 50_000) else {
        return;
    };
    let config = f.config("      concurrency: 2\n");
    f.discover(&[1, 2, 3]);
    let (code, v, err) = f.pull(&config, &[]);
    assert_eq!(code, 0, "{err}\n{v}");
    let got = results_of(&v);
    assert_eq!(got.len(), 6, "3 devices x 2 kinds: {got:?}");
    assert!(got.iter().all(|(_, r)| r == "ok"), "{got:?}");
    for n in 1..=3 {
        for kind in ["results", "videos"] {
            let remote = f.device_dir(n).join(kind).join(etho_id(n));
            assert!(same_tree(&remote, &f.local(kind, n)), "{kind} of {n}");
        }
    }
    // The devices' keys were recorded (accept-new), one line per port.
    let known = fs::read_to_string(f.env.path("known_hosts")).unwrap();
    for n in 1..=3 {
        assert!(known.contains(&format!("[127.0.0.1]:{}", f.proxies[n - 1].port)));
    }

    // Device 1 leaves, device 4 arrives; device 2 gets a new run.
    f.discover(&[2, 3, 4]);
    let new_run = f
        .device_dir(2)
        .join("results")
        .join(etho_id(2))
        .join("ETHOSCOPE_002/2026-12-03_10-00-00");
    fs::create_dir_all(&new_run).unwrap();
    fs::write(new_run.join("new.db"), b"new results").unwrap();
    make_tree_readable(&f.base);
    let (code, v, err) = f.pull(&config, &[]);
    assert_eq!(code, 0, "{err}\n{v}");
    let got = results_of(&v);
    let devices: Vec<&str> = got.iter().map(|(d, _)| d.as_str()).collect();
    assert!(
        !devices.iter().any(|d| d.starts_with(&etho_id(1))),
        "a device that left is not pulled: {devices:?}"
    );
    assert!(devices.contains(&format!("{}.videos", etho_id(4)).as_str()));
    let files_of = |dest: &str| {
        v["jobs"][0]["destinations"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["destination"] == dest)
            .map(|d| d["files"].as_u64().unwrap())
    };
    assert_eq!(files_of(&format!("{}.results", etho_id(2))), Some(1));
    assert_eq!(
        files_of(&format!("{}.results", etho_id(3))),
        Some(0),
        "no change"
    );
    assert!(
        f.local("results", 2)
            .join("ETHOSCOPE_002/2026-12-03_10-00-00/new.db")
            .is_file()
    );
    assert!(same_tree(
        &f.device_dir(4).join("videos").join(etho_id(4)),
        &f.local("videos", 4)
    ));

    // The seed's `-e 004 --results-only`.
    let (code, v, err) = f.pull(&config, &["--device", "004", "--kind", "results"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        results_of(&v),
        [(format!("{}.results", etho_id(4)), "ok".to_owned())]
    );
    let (code, _, err) = f.pull(&config, &["--device", "009"]);
    assert_eq!(code, 1);
    assert!(err.contains("no device \"009\""), "{err}");

    // Device 3's key changes (another machine answers at its address):
    // refused, and only device 3 fails.
    forge_host_key(&f, 3);
    let (code, v, err) = f.pull(&config, &[]);
    assert_eq!(code, 1, "{err}");
    for (dest, result) in results_of(&v) {
        let want = if dest.starts_with(&etho_id(3)) {
            "failed"
        } else {
            "ok"
        };
        assert_eq!(result, want, "{dest}: {v}");
    }
    let error = v["jobs"][0]["destinations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["destination"] == format!("{}.results", etho_id(3)))
        .and_then(|d| d["error"].as_str())
        .unwrap_or("")
        .to_owned();
    assert!(
        error.contains("Host key verification failed") || error.contains("CHANGED"),
        "{error}"
    );
}

/// The error and details of device `n`'s videos in a pull's JSON report.
fn err_of_video(v: &serde_json::Value, n: usize) -> String {
    v["jobs"][0]["destinations"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|d| d["destination"] == format!("{}.videos", etho_id(n)))
        .map(|d| format!("{} {}", d["error"], d["details"]))
        .unwrap_or_default()
}

/// A device cut off mid-transfer leaves nothing partial at a final name
/// and the next round completes it; a device that accepts and then stalls
/// is given up on after its timeout while the others finish; a device
/// that is off is unreachable. Every other device goes on.
#[test]
fn killed_stalled_and_off_devices_affect_only_themselves() {
    // Device 1's videos are big enough to be cut in the middle at 2 MiB/s.
    let Some(f) = Fleet::new("faults", 4, 4 << 20) else {
        return;
    };
    let config = f.config("      timeout: 3s\n      retries: 0\n      bwlimit: 2M\n");
    f.discover(&[1, 2, 3, 4]);
    f.proxies[3].set(DOWN);
    let child = f.spawn_pull(&config);
    let started = std::time::Instant::now();
    // Wait until device 1 and 2 are in the middle of their videos.
    let partial = |n: usize| in_flight(&f.env.path("local/videos").join(etho_id(n)));
    while started.elapsed() < Duration::from_secs(20) && !(partial(1) && partial(2)) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(partial(1) && partial(2), "the videos were never in flight");
    f.proxies[0].set(DOWN);
    f.proxies[1].set(STALLED);
    let o = child.wait_with_output().unwrap();
    let took = started.elapsed();
    eprintln!(
        "faulty round: {took:?}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
    assert_ne!(code(&o), 0);
    let by: std::collections::BTreeMap<String, String> = results_of(&v).into_iter().collect();
    let video = |n: usize| by.get(&format!("{}.videos", etho_id(n))).cloned();
    assert_ne!(video(1).as_deref(), Some("ok"), "{v}");
    // Device 2 stalled: given up on after its timeout, whether the stall
    // caught it reading a file (the connection stopped answering: failed)
    // or listing a directory (that listing timed out: incomplete, the next
    // round retries it).
    let stalled = err_of_video(&v, 2);
    match video(2).as_deref() {
        Some("failed") => assert!(stalled.contains("stopped answering"), "{v}"),
        Some("incomplete") => assert!(stalled.contains("did not answer for 3 s"), "{v}"),
        other => panic!("device 2's videos: {other:?}: {v}"),
    }
    assert_eq!(video(3).as_deref(), Some("ok"), "{v}");
    assert_eq!(video(4).as_deref(), Some("failed"), "{v}");
    // The stall was given up on after about its 3 s, not rsync's or ssh's
    // own minutes.
    assert!(took < Duration::from_secs(40), "took {took:?}");
    // Nothing partial at a final name: every file there is whole.
    for n in [1, 2] {
        for p in user_files(&f.local("videos", n)) {
            let rel = p.strip_prefix(f.local("videos", n)).unwrap();
            let remote = f.device_dir(n).join("videos").join(etho_id(n)).join(rel);
            assert_eq!(
                fs::read(&p).unwrap(),
                fs::read(&remote).unwrap_or_default(),
                "{} is not whole",
                p.display()
            );
        }
    }
    assert!(same_tree(
        &f.device_dir(3).join("videos").join(etho_id(3)),
        &f.local("videos", 3)
    ));

    // Back on: the next round completes what was cut.
    for p in &f.proxies {
        p.set(UP);
    }
    let config = f.config("      timeout: 3s\n      retries: 0\n");
    let (code, v, err) = f.pull(&config, &[]);
    assert_eq!(code, 0, "{err}\n{v}");
    for n in 1..=4 {
        assert!(same_tree(
            &f.device_dir(n).join("videos").join(etho_id(n)),
            &f.local("videos", n)
        ));
    }
}

/// `bwlimit` measurably slows a pull: 4 MiB at 1 MiB/s takes about 4 s.
#[test]
fn a_bandwidth_limit_slows_a_pull() {
    let Some(f) = Fleet::new("bwlimit", 1, 1 << 20) else {
        return;
    };
    f.discover(&[1]);
    let config = f.config("      bwlimit: 1M\n");
    let started = std::time::Instant::now();
    let (code, v, err) = f.pull(&config, &["--kind", "videos"]);
    let limited = started.elapsed();
    assert_eq!(code, 0, "{err}\n{v}");
    // 4 files of 1 MiB: at least 3 s at 1 MiB/s (rsync's limiter lets the
    // first burst through).
    assert!(
        limited >= Duration::from_secs(3),
        "limited pull took {limited:?}"
    );
    fs::remove_dir_all(f.env.path("local")).unwrap();
    let config = f.config("");
    let started = std::time::Instant::now();
    let (code, _, err) = f.pull(&config, &["--kind", "videos"]);
    let free = started.elapsed();
    assert_eq!(code, 0, "{err}");
    assert!(
        free * 2 < limited,
        "unlimited {free:?} against limited {limited:?}"
    );
}

/// `serve` with a pull job: it pulls at start-up; SIGTERM in the middle
/// of a device's videos exits 0 within the bound, with nothing partial at
/// a final name, and the history says the run did not finish.
#[test]
fn sigterm_during_a_pull_stops_within_the_bound() {
    use super::serve::{exit_within, history, log_of, serve};
    let Some(f) = Fleet::new("serve", 2, 4 << 20) else {
        return;
    };
    f.discover(&[1, 2]);
    let config = f.config("      bwlimit: 2M\n    every: 1h\n");
    let mut child = serve(&f.env, &config, "10s");
    assert!(
        super::serve::eventually(30, || in_flight(&f.env.path("local/videos"))),
        "{}",
        log_of(&f.env)
    );
    // The status server shows the device running, with percent and rate.
    let addr = super::http::address(&f.env);
    let (code, body) = super::http::http(&addr, "GET", &format!("/status/{}", etho_id(1)), None);
    assert_eq!(code, 200, "{body}");
    let d: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(d["state"], "running", "{d}");
    // The transfer shown is the device's current kind's: the results kind
    // may already be at 100% while the videos' plan is being made.
    let percent = d["transfer"]["percent"].as_f64().unwrap();
    assert!((0.0..=100.0).contains(&percent), "{d}");
    assert!(d["transfer"]["bytes_planned"].as_u64().unwrap() > 0, "{d}");
    let asked = std::time::Instant::now();
    signal_after(&child, 0, "-TERM");
    assert_eq!(exit_within(&mut child, 20), Some(0), "{}", log_of(&f.env));
    assert!(
        asked.elapsed() < Duration::from_secs(10),
        "{:?}",
        asked.elapsed()
    );
    let h = history(&f.env);
    assert_ne!(h["jobs"]["fleet"]["last_result"], "ok", "{h}");
    for n in [1, 2] {
        for p in user_files(&f.local("videos", n)) {
            let rel = p.strip_prefix(f.local("videos", n)).unwrap();
            let remote = f.device_dir(n).join("videos").join(etho_id(n)).join(rel);
            assert_eq!(
                fs::metadata(&p).unwrap().len(),
                fs::metadata(&remote).unwrap().len(),
                "{} is partial",
                p.display()
            );
        }
    }
}

/// A device that cannot be reached is tried again after a backoff: one
/// that comes back within it is pulled in the same round.
#[test]
fn an_unreachable_device_is_tried_again_after_a_backoff() {
    let Some(f) = Fleet::new("retry", 1, 10_000) else {
        return;
    };
    f.discover(&[1]);
    let config = f.config("      retries: 1\n");
    f.proxies[0].set(DOWN);
    let child = f.spawn_pull(&config);
    // Back on during the 2 s backoff.
    std::thread::sleep(Duration::from_secs(1));
    f.proxies[0].set(UP);
    let o = child.wait_with_output().unwrap();
    let err = stderr(&o);
    assert_eq!(code(&o), 0, "{err}");
    assert!(
        err.contains("attempt 1 did not finish; trying again in 2s"),
        "{err}"
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(results_of(&v).iter().all(|(_, r)| r == "ok"), "{v}");
    assert!(same_tree(
        &f.device_dir(1).join("videos").join(etho_id(1)),
        &f.local("videos", 1)
    ));
}
