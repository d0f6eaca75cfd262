//! Hook commands: run with `sh -c`, the job's result in the environment,
//! their output line by line to the log, killed (with everything they
//! started) when they overrun their timeout.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::Cancel;

/// What a `before` hook may exit with to skip its job without counting
/// as a failure (as borgmatic's soft failure).
pub const SKIP_CODE: i32 = 75;

/// How a hook ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookEnd {
    Ok,
    /// Exited with this code (`None`: killed by a signal).
    Failed(Option<i32>),
    TimedOut,
    /// Could not be started at all.
    NotRun(String),
    Cancelled,
}

impl HookEnd {
    /// For messages: `exited with 3`, `timed out after 5s`.
    pub fn describe(&self, timeout: Duration) -> String {
        match self {
            HookEnd::Ok => "succeeded".into(),
            HookEnd::Failed(Some(c)) => format!("exited with {c}"),
            HookEnd::Failed(None) => "was killed by a signal".into(),
            HookEnd::TimedOut => format!("timed out after {}s and was killed", timeout.as_secs()),
            HookEnd::NotRun(e) => format!("could not be run: {e}"),
            HookEnd::Cancelled => "was stopped (interrupted)".into(),
        }
    }
}

/// Runs `command` with `env` added to the environment; `line` gets each
/// line it prints (`true` for stderr).
pub fn run_hook(
    command: &str,
    env: &[(String, String)],
    timeout: Duration,
    cancel: &Cancel,
    line: &(dyn Fn(bool, &str) + Sync),
) -> HookEnd {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(command)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so that a timeout kills what it started.
        .process_group(0);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return HookEnd::NotRun(e.to_string()),
    };
    let started = Instant::now();
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    std::thread::scope(|s| {
        let pump = |r: Option<Box<dyn Read + Send>>, err: bool| {
            s.spawn(move || {
                if let Some(r) = r {
                    for l in BufReader::new(r).lines().map_while(std::result::Result::ok) {
                        line(err, &l);
                    }
                }
            })
        };
        let a = pump(stdout.map(|r| Box::new(r) as Box<dyn Read + Send>), false);
        let b = pump(stderr.map(|r| Box::new(r) as Box<dyn Read + Send>), true);
        // Short commands (an import check per session) end in a few ms:
        // look often at first, then every 20 ms.
        let mut nap = Duration::from_micros(200);
        let end = loop {
            match child.try_wait() {
                Ok(Some(status)) if status.success() => break HookEnd::Ok,
                Ok(Some(status)) => break HookEnd::Failed(status.code()),
                Ok(None) => {}
                Err(e) => break HookEnd::NotRun(e.to_string()),
            }
            let over = started.elapsed() >= timeout;
            if over || cancel.is_cancelled() {
                kill_group(child.id());
                let _ = child.kill();
                let _ = child.wait();
                break if over {
                    HookEnd::TimedOut
                } else {
                    HookEnd::Cancelled
                };
            }
            std::thread::sleep(nap);
            nap = (nap * 2).min(Duration::from_millis(20));
        };
        // What the hook left running in the background keeps its pipes
        // open; it is killed with the group so the readers end.
        kill_group(child.id());
        let _ = a.join();
        let _ = b.join();
        end
    })
}

/// Kills a process group (the hook and what it started).
fn kill_group(pgid: u32) {
    let _ = Command::new("kill")
        .arg("-KILL")
        .arg("--")
        .arg(format!("-{pgid}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn hooks_end_as_they_should() {
        let lines = Mutex::new(Vec::new());
        let sink = |err: bool, l: &str| lines.lock().unwrap().push((err, l.to_owned()));
        let env = vec![("BACKUPKIT_JOB".to_owned(), "nightly".to_owned())];
        let t = Duration::from_secs(10);
        let c = Cancel::new();
        assert_eq!(
            run_hook("echo job=$BACKUPKIT_JOB; echo oops >&2", &env, t, &c, &sink),
            HookEnd::Ok
        );
        let got = lines.lock().unwrap().clone();
        assert!(got.contains(&(false, "job=nightly".into())), "{got:?}");
        assert!(got.contains(&(true, "oops".into())), "{got:?}");
        assert_eq!(
            run_hook("exit 75", &env, t, &c, &sink),
            HookEnd::Failed(Some(75))
        );
        let started = Instant::now();
        let end = run_hook(
            "sleep 30 & sleep 30",
            &env,
            Duration::from_millis(300),
            &c,
            &sink,
        );
        assert_eq!(end, HookEnd::TimedOut);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
    }
}
