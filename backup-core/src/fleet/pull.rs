//! A pull round: discover the devices (when the list is older than
//! `discover_every`), then pull every selected device's kinds, at most
//! `concurrency` devices at once, each watched on its own (see the module
//! docs of [`crate::fleet`]).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use chrono::Utc;
use serde::Serialize;

use crate::fleet::status::{DeviceState, FleetStatus, KindStatus, Transfer};
use crate::fleet::watch::{Activity, Watched};
use crate::fleet::{DataKind, Device, Pull, parse_devices};
use crate::jobs::hooks::{HookEnd, run_hook};
use crate::jobs::log::Level;
use crate::jobs::notify::HttpRequest;
use crate::jobs::run::Outcome;
use crate::mirror::{self, MirrorOptions, MirrorSource};
use crate::progress::{Cancel, Event};
use crate::registry::{Registry, TargetOptions, redact};
use crate::tree::{EntryKind, Tree, Walked};
use crate::{Error, Result};

/// What a round pulls.
#[derive(Debug, Clone, Default)]
pub struct Select {
    /// Devices by id, name or number (`004`); empty for all.
    pub devices: Vec<String>,
    /// Kinds by name; empty for all.
    pub kinds: Vec<String>,
    pub dry_run: bool,
}

/// One kind's pull on one device.
#[derive(Debug, Clone, Serialize)]
pub struct KindResult {
    pub kind: String,
    /// Where it went (no credentials).
    pub local: String,
    pub result: Outcome,
    pub files: u64,
    pub bytes: u64,
    pub error: Option<String>,
    /// The device could not be reached, or stopped answering.
    pub unreachable: bool,
    /// Notes worth keeping (top-level files left out, notices).
    pub details: Vec<String>,
}

/// One device's pull.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceResult {
    pub device: String,
    pub name: Option<String>,
    pub url: String,
    pub state: DeviceState,
    pub result: Outcome,
    pub error: Option<String>,
    pub files: u64,
    pub bytes: u64,
    pub seconds: f64,
    pub attempts: u32,
    pub kinds: Vec<KindResult>,
}

/// A round's result.
#[derive(Debug, Clone, Serialize)]
pub struct Round {
    pub devices: Vec<DeviceResult>,
    /// Why discovery failed (the previous list was used).
    pub discovery_error: Option<String>,
}

/// What a round works with.
pub struct Context<'a> {
    pub job: &'a str,
    pub pull: &'a Pull,
    pub registry: &'a Registry,
    /// SSH options for every device (resolved).
    pub options: &'a TargetOptions,
    pub status: &'a FleetStatus,
    /// Logs one event (a device's id as its place).
    pub log: &'a (dyn Fn(Level, Option<&str>, String) + Sync),
    pub cancel: &'a Cancel,
}

impl std::fmt::Debug for Context<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("job", &self.job)
            .finish_non_exhaustive()
    }
}

/// Bytes of discovery output read at most.
const DISCOVERY_LIMIT: usize = 16 << 20;

/// The devices to pull: the config's list and the discovered ones, found
/// again when the last discovery is older than `discover_every`. A
/// discovery that fails keeps the previous list (and says why).
pub fn devices(ctx: &Context<'_>) -> (Vec<Device>, Option<String>) {
    let pull = ctx.pull;
    let Some(discover) = &pull.discover else {
        ctx.status.set_list(pull.devices.clone(), false);
        return (pull.devices.clone(), None);
    };
    let fresh = ctx
        .status
        .lock()
        .discovered
        .is_some_and(|(at, _)| at.elapsed() < discover.every);
    if fresh {
        return (ctx.status.lock().list.clone(), None);
    }
    match discover_now(ctx, discover) {
        Ok(found) => {
            let mut list = pull.devices.clone();
            merge(&mut list, found);
            (ctx.log)(
                Level::Info,
                None,
                format!("discovered {} device(s)", list.len()),
            );
            ctx.status.set_list(list.clone(), true);
            (list, None)
        }
        Err(e) => {
            let why = format!("discovery failed: {}", crate::check::error_chain(&e));
            (ctx.log)(
                Level::Error,
                None,
                format!("{why}; pulling the devices known before"),
            );
            let known = ctx.status.lock().list.clone();
            let list = if known.is_empty() {
                // Nothing discovered yet: the config's devices, which the
                // status then knows too.
                ctx.status.set_list(pull.devices.clone(), false);
                pull.devices.clone()
            } else {
                known
            };
            ctx.status.lock().discovery_error = Some(why.clone());
            (list, Some(why))
        }
    }
}

/// Adds the devices of `more` that `list` does not have yet.
fn merge(list: &mut Vec<Device>, more: Vec<Device>) {
    for d in more {
        if !list.iter().any(|o| o.id == d.id) {
            list.push(d);
        }
    }
}

fn discover_now(ctx: &Context<'_>, discover: &crate::fleet::Discover) -> Result<Vec<Device>> {
    let mut found = Vec::new();
    if let Some(cmd) = &discover.command {
        let out = Mutex::new(String::new());
        let size = AtomicUsize::new(0);
        let line = |err: bool, l: &str| {
            if err {
                (ctx.log)(Level::Warn, None, format!("discovery command: {l}"));
            } else if size.fetch_add(l.len() + 1, Ordering::Relaxed) < DISCOVERY_LIMIT {
                let mut o = out.lock().unwrap_or_else(PoisonError::into_inner);
                o.push_str(l);
                o.push('\n');
            }
        };
        match run_hook(cmd, &[], discover.timeout, ctx.cancel, &line) {
            HookEnd::Ok => {}
            HookEnd::Cancelled => return Err(Error::Cancelled),
            end => {
                return Err(Error::InvalidInput(format!(
                    "the discovery command {}: {cmd}",
                    end.describe(discover.timeout)
                )));
            }
        }
        if size.load(Ordering::Relaxed) > DISCOVERY_LIMIT {
            return Err(Error::InvalidInput(format!(
                "the discovery command printed more than {} MiB: {cmd}",
                DISCOVERY_LIMIT >> 20
            )));
        }
        let text = out.into_inner().unwrap_or_else(PoisonError::into_inner);
        found.extend(parse_devices(&text, Some(discover))?);
    }
    if let Some(url) = &discover.url {
        let body = ctx.registry.sender()?.get(
            &HttpRequest {
                method: "GET",
                url: url.clone(),
                headers: vec![("Accept".into(), "application/json".into())],
                content_type: None,
                body: Vec::new(),
                ca_file: None,
                timeout: discover.timeout,
            },
            DISCOVERY_LIMIT,
        )?;
        let text = String::from_utf8_lossy(&body);
        let listed = parse_devices(&text, Some(discover))
            .map_err(|e| Error::InvalidInput(format!("{}: {e}", redact(url))))?;
        merge(&mut found, listed);
    }
    Ok(found)
}

/// Pulls the selected devices' kinds: discovery first, then at most
/// `concurrency` devices at once.
///
/// # Errors
///
/// [`Error::InvalidInput`] for a device or kind the selection names that
/// the fleet does not have; everything else is in the [`Round`].
pub fn round(ctx: &Context<'_>, select: &Select) -> Result<Round> {
    let kinds = selected_kinds(ctx.pull, &select.kinds)?;
    let (list, discovery_error) = devices(ctx);
    let devices = selected_devices(&list, &select.devices)?;
    let bwlimit = ctx.pull.device_bwlimit(devices.len());
    let results = crate::jobs::run::in_parallel(&devices, ctx.pull.concurrency, |d| {
        (!ctx.cancel.is_cancelled()).then(|| pull_device(ctx, d, &kinds, bwlimit, select.dry_run))
    });
    ctx.cancel.check()?;
    Ok(Round {
        devices: results,
        discovery_error,
    })
}

fn selected_kinds<'p>(pull: &'p Pull, wanted: &[String]) -> Result<Vec<&'p DataKind>> {
    for w in wanted {
        if !pull.kinds.iter().any(|k| &k.name == w) {
            return Err(Error::InvalidInput(format!(
                "no data kind {w:?} in this pull job (its kinds: {})",
                pull.kinds
                    .iter()
                    .map(|k| k.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
    }
    Ok(pull
        .kinds
        .iter()
        .filter(|k| wanted.is_empty() || wanted.contains(&k.name))
        .collect())
}

fn selected_devices(list: &[Device], wanted: &[String]) -> Result<Vec<Device>> {
    if wanted.is_empty() {
        return Ok(list.to_vec());
    }
    let mut out = Vec::new();
    for w in wanted {
        let hits: Vec<&Device> = list.iter().filter(|d| d.matches(w)).collect();
        if hits.is_empty() {
            let known: Vec<&str> = list.iter().map(|d| d.id.as_str()).collect();
            return Err(Error::InvalidInput(format!(
                "no device {w:?} in this pull job (its devices: {})",
                if known.is_empty() {
                    "none found".to_owned()
                } else {
                    known.join(", ")
                }
            )));
        }
        merge(&mut out, hits.into_iter().cloned().collect());
    }
    Ok(out)
}

/// The first wait before another attempt at a device, doubled each time.
const BACKOFF: Duration = Duration::from_secs(2);
const BACKOFF_MAX: Duration = Duration::from_secs(60);

fn pull_device(
    ctx: &Context<'_>,
    dev: &Device,
    kinds: &[&DataKind],
    bwlimit: Option<u64>,
    dry_run: bool,
) -> DeviceResult {
    let started = Instant::now();
    let log = |level, m: String| (ctx.log)(level, Some(&dev.id), m);
    ctx.status.update(&dev.id, |d| {
        d.state = DeviceState::Running;
        d.last_attempt = Some(Utc::now());
        d.transfer = Some(Transfer {
            started: Utc::now(),
            ..Transfer::default()
        });
    });
    log(Level::Info, format!("pulling {}", redact(&dev.url)));
    let mut done: BTreeMap<String, KindResult> = BTreeMap::new();
    let mut pending: Vec<&DataKind> = kinds.to_vec();
    let mut attempts = 0;
    let mut wait = BACKOFF;
    loop {
        attempts += 1;
        for r in attempt(ctx, dev, &pending, bwlimit, dry_run) {
            done.insert(r.kind.clone(), r);
        }
        pending.retain(|k| done.get(&k.name).is_some_and(worth_again));
        if pending.is_empty() || attempts > ctx.pull.retries || ctx.cancel.is_cancelled() {
            break;
        }
        log(
            Level::Warn,
            format!(
                "attempt {attempts} did not finish; trying again in {}s",
                wait.as_secs()
            ),
        );
        if sleep(wait, ctx.cancel) {
            break;
        }
        wait = (wait * 2).min(BACKOFF_MAX);
    }
    let kinds: Vec<KindResult> = kinds.iter().filter_map(|k| done.remove(&k.name)).collect();
    finish(ctx, dev, kinds, attempts, started)
}

/// Whether another attempt may get further: the device was out of reach,
/// or some files did not come (a dropped connection).
fn worth_again(r: &KindResult) -> bool {
    r.unreachable || r.result == Outcome::Incomplete
}

/// Sleeps, waking for a cancel; true when cancelled.
fn sleep(d: Duration, cancel: &Cancel) -> bool {
    let until = Instant::now() + d;
    while Instant::now() < until {
        if cancel.is_cancelled() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    cancel.is_cancelled()
}

/// One attempt at the pending kinds, under a watchdog that gives up on the
/// device after `timeout` without an answer.
fn attempt(
    ctx: &Context<'_>,
    dev: &Device,
    kinds: &[&DataKind],
    bwlimit: Option<u64>,
    dry_run: bool,
) -> Vec<KindResult> {
    let activity = Activity::new();
    let cancel = Cancel::new();
    let fired = AtomicBool::new(false);
    let over = AtomicBool::new(false);
    let timeout = ctx.pull.timeout;
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut shown = Instant::now();
            while !over.load(Ordering::SeqCst) {
                if ctx.cancel.is_cancelled() {
                    cancel.cancel();
                }
                if !cancel.is_cancelled() && activity.silent_for() > timeout {
                    fired.store(true, Ordering::SeqCst);
                    cancel.cancel();
                }
                if shown.elapsed() > Duration::from_millis(500) {
                    shown = Instant::now();
                    let read = activity.read_bytes();
                    ctx.status.update(&dev.id, |d| {
                        if let Some(t) = d.transfer.as_mut() {
                            t.update(read);
                        }
                    });
                }
                std::thread::sleep(Duration::from_millis(25));
            }
        });
        let out = kinds
            .iter()
            .map(|k| {
                let mut r = pull_kind(ctx, dev, k, &activity, bwlimit, dry_run, &cancel);
                if fired.load(Ordering::SeqCst) && r.result != Outcome::Ok {
                    r.unreachable = true;
                    r.result = Outcome::Failed;
                    r.error = Some(format!(
                        "the device stopped answering for {}s (timeout); what arrived is kept \
                         and the next round goes on from there",
                        timeout.as_secs()
                    ));
                }
                r
            })
            .collect();
        over.store(true, Ordering::SeqCst);
        out
    })
}

fn pull_kind(
    ctx: &Context<'_>,
    dev: &Device,
    kind: &DataKind,
    activity: &Arc<Activity>,
    bwlimit: Option<u64>,
    dry_run: bool,
    cancel: &Cancel,
) -> KindResult {
    let mut r = KindResult {
        kind: kind.name.clone(),
        local: redact(&kind.local_for(dev)),
        result: Outcome::Ok,
        files: 0,
        bytes: 0,
        error: None,
        unreachable: false,
        details: Vec::new(),
    };
    if cancel.is_cancelled() {
        r.result = Outcome::Failed;
        r.error = Some("interrupted".into());
        return r;
    }
    let parts = match parts(ctx, dev, kind, activity, cancel, &mut r) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let opts = MirrorOptions {
        dry_run,
        bwlimit,
        verify: ctx.pull.verify,
        ..MirrorOptions::default()
    };
    let hashers = match ctx.registry.hashers() {
        Ok(h) => h,
        Err(e) => return failed(r, &e, false),
    };
    let progress = |e: &Event| progress(ctx.status, &dev.id, e);
    for (tree, local) in parts {
        let dest = match ctx.registry.open_tree(&local, &TargetOptions::new()) {
            Ok(t) => t,
            Err(e) => return failed(r, &e, false),
        };
        let sources = [MirrorSource::new("", tree)];
        match mirror::mirror(
            &sources,
            dest.as_ref(),
            &opts,
            hashers.as_ref(),
            &progress,
            cancel,
        ) {
            Ok(s) => took_in(&mut r, &s),
            Err(Error::Cancelled) => {
                r.result = Outcome::Failed;
                r.error = Some("interrupted".into());
                return r;
            }
            Err(e) => return failed(r, &e, false),
        }
    }
    r
}

/// A device tree and the local location it is mirrored to.
type Part = (Arc<dyn Tree>, String);

/// The mirrors a kind is made of, each a device tree and where it goes:
/// the whole tree into the device's own directory, or each top-level
/// directory into the merged tree. `Err` is the kind's result when the
/// device could not be read (or has nothing there).
fn parts(
    ctx: &Context<'_>,
    dev: &Device,
    kind: &DataKind,
    activity: &Arc<Activity>,
    cancel: &Cancel,
    r: &mut KindResult,
) -> std::result::Result<Vec<Part>, KindResult> {
    let base = device_location(&dev.url, &kind.remote);
    let none = TargetOptions::new();
    let ssh = ["ssh://", "sftp://"].iter().any(|p| dev.url.starts_with(p));
    let options = if ssh { ctx.options } else { &none };
    let open = |location: &str| -> Result<Arc<dyn Tree>> {
        let inner = ctx.registry.open_tree(location, options)?;
        Ok(Arc::new(Watched {
            inner,
            activity: Arc::clone(activity),
            cancel: cancel.clone(),
        }))
    };
    let source = open(&base).map_err(|e| failed(r.clone(), &e, false))?;
    match source.root() {
        Err(e) => {
            let said = crate::check::error_chain(&e);
            let refused = said.contains("Host key verification failed")
                || said.contains("Permission denied")
                || said.contains("REMOTE HOST IDENTIFICATION HAS CHANGED");
            return Err(failed(r.clone(), &e, !refused));
        }
        Ok(None) => {
            let mut r = r.clone();
            r.result = Outcome::Skipped;
            r.error = Some(format!("nothing at {} on the device", kind.remote));
            return Err(r);
        }
        Ok(Some(e)) if e.kind != EntryKind::Dir => {
            let mut r = r.clone();
            r.result = Outcome::Failed;
            r.error = Some(format!("{} on the device is not a directory", kind.remote));
            return Err(r);
        }
        Ok(Some(_)) => {}
    }
    if kind.per_device() {
        return Ok(vec![(source, kind.local_for(dev))]);
    }
    let dirs =
        top_dirs(source.as_ref(), &mut r.details).map_err(|e| failed(r.clone(), &e, true))?;
    dirs.into_iter()
        .map(|d| {
            open(&format!("{base}/{d}"))
                .map(|t| (t, format!("{}/{d}", kind.local)))
                .map_err(|e| failed(r.clone(), &e, false))
        })
        .collect()
}

/// Adds one mirror's summary to a kind's result.
fn took_in(r: &mut KindResult, s: &mirror::MirrorSummary) {
    r.files += s.copied + s.updated;
    r.bytes += s.bytes;
    for p in s.failed.iter().take(20) {
        r.details.push(format!("failed {}: {}", p.path, p.message));
    }
    for p in s.notices.iter().take(20) {
        r.details.push(format!("{}: {}", p.path, p.message));
    }
    if !s.failed.is_empty() {
        r.result = r.result.max(Outcome::Incomplete);
        r.error = Some(format!(
            "{} file(s) did not come; the next round retries them",
            s.failed.len()
        ));
    }
    if let Some(v) = s.verify.as_ref().filter(|v| !v.matches()) {
        r.result = Outcome::Failed;
        r.error = Some(format!("verify: {}", v.describe()));
    }
}

fn failed(mut r: KindResult, e: &Error, unreachable: bool) -> KindResult {
    r.result = Outcome::Failed;
    r.unreachable = unreachable;
    r.error = Some(crate::check::error_chain(e));
    r
}

/// The top-level directories of a device's tree; its top-level files are
/// noted and left out (they have no directory of their own to merge into).
fn top_dirs(tree: &dyn Tree, details: &mut Vec<String>) -> Result<Vec<String>> {
    let skip = |path: &str, _: EntryKind| path.contains('/');
    let mut dirs = Vec::new();
    for w in tree.walk(&skip)? {
        match w? {
            Walked::Entry(e) if e.kind == EntryKind::Dir => dirs.push(e.path),
            Walked::Entry(e) => details.push(format!(
                "{} left out: only directories merge into the kind's local tree (put \
                 {{device}} in its `local:` to pull each device whole)",
                e.path
            )),
            Walked::Leftover(_) => {}
            Walked::Warning { path, message } => details.push(format!("{path}: {message}")),
        }
    }
    Ok(dirs)
}

/// A device's URL with a kind's remote path.
fn device_location(url: &str, remote: &str) -> String {
    format!("{}/{}", url.trim_end_matches('/'), remote.trim_matches('/'))
}

/// Feeds a device's mirror events into its live state.
fn progress(status: &FleetStatus, id: &str, e: &Event) {
    match e {
        Event::Planned { action, bytes, .. } if *action == "copy" || *action == "update" => {
            let bytes = *bytes;
            status.update(id, |d| {
                if let Some(t) = d.transfer.as_mut() {
                    t.files_planned += 1;
                    t.bytes_planned += bytes;
                    t.update(0);
                }
            });
        }
        Event::File { bytes, .. } => {
            let bytes = *bytes;
            status.update(id, |d| {
                if let Some(t) = d.transfer.as_mut() {
                    t.files_done += 1;
                    t.bytes_done += bytes;
                    t.update(0);
                }
            });
        }
        _ => {}
    }
}

/// Records a device's pull in the fleet's state, and its result.
fn finish(
    ctx: &Context<'_>,
    dev: &Device,
    kinds: Vec<KindResult>,
    attempts: u32,
    started: Instant,
) -> DeviceResult {
    let result = Outcome::worst(kinds.iter().map(|k| k.result));
    let unreachable = kinds.iter().any(|k| k.unreachable);
    let state = match result {
        Outcome::Ok | Outcome::Skipped => DeviceState::Idle,
        _ if unreachable => DeviceState::Unreachable,
        _ => DeviceState::Failed,
    };
    let error = kinds
        .iter()
        .filter(|k| k.result > Outcome::Skipped)
        .find_map(|k| k.error.as_ref().map(|e| format!("{}: {e}", k.kind)));
    let r = DeviceResult {
        device: dev.id.clone(),
        name: dev.name.clone(),
        url: redact(&dev.url),
        state,
        result,
        error: error.clone(),
        files: kinds.iter().map(|k| k.files).sum(),
        bytes: kinds.iter().map(|k| k.bytes).sum(),
        seconds: started.elapsed().as_secs_f64(),
        attempts,
        kinds,
    };
    (ctx.log)(
        if result > Outcome::Skipped {
            Level::Error
        } else {
            Level::Info
        },
        Some(&dev.id),
        format!(
            "{}: {} file(s), {} in {:.1}s{}",
            state.as_str(),
            r.files,
            crate::progress::human_bytes(r.bytes),
            r.seconds,
            error.map(|e| format!(" ({e})")).unwrap_or_default()
        ),
    );
    ctx.status.update(&dev.id, |d| {
        d.state = state;
        d.transfer = None;
        d.last_result = Some(result);
        d.last_error.clone_from(&r.error);
        d.files = r.files;
        d.bytes = r.bytes;
        d.seconds = r.seconds;
        d.runs += 1;
        if result > Outcome::Skipped {
            d.failures += 1;
        } else {
            d.last_success = Some(Utc::now());
        }
        d.kinds = r
            .kinds
            .iter()
            .map(|k| {
                (
                    k.kind.clone(),
                    KindStatus {
                        result: k.result,
                        files: k.files,
                        bytes: k.bytes,
                        error: k.error.clone(),
                    },
                )
            })
            .collect();
    });
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_locations() {
        assert_eq!(
            device_location("ssh://e@10.0.0.4:2222/", "/ethoscope_data/results/"),
            "ssh://e@10.0.0.4:2222/ethoscope_data/results"
        );
        assert_eq!(
            device_location("/devices/a", "results"),
            "/devices/a/results"
        );
    }
}
