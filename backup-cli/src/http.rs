//! The HTTP frontend of `backupkit serve`: a status page, `/status` JSON,
//! `/metrics` in the Prometheus text format, and `POST /jobs/NAME/run`.
//!
//! It only translates: the service's [`Board`] says what is going on, and
//! run requests go to the service loop, which answers them between ticks.
//! It listens on 127.0.0.1:8093 by default (seed 004's port). Any other
//! address needs a bearer token for every request but `/health`; with a
//! token configured it is required on loopback too. The server runs on a
//! small current-thread runtime of its own, beside the scheduler.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::mpsc::Sender;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use backup_core::fleet::status::DeviceState;
use backup_core::jobs::run::Outcome;
use backup_core::schedule::service::RunRequest;
use backup_core::schedule::status::{Board, DeviceView, ServiceStatus};
use chrono::{DateTime, Utc};

/// The default address (seed 004's port).
pub(crate) const DEFAULT_LISTEN: &str = "127.0.0.1:8093";

struct App {
    board: Arc<Board>,
    requests: Sender<RunRequest>,
    token: Option<String>,
}

/// Starts the server on `listen`; returns the address it listens on.
///
/// # Errors
///
/// A message for the user: an address that is not one, a port taken, or
/// a non-loopback address without a token.
pub(crate) fn start(
    listen: &str,
    token: Option<String>,
    board: Arc<Board>,
    requests: Sender<RunRequest>,
) -> Result<SocketAddr, String> {
    let addr: SocketAddr = listen.parse().map_err(|_| {
        format!("--listen {listen:?} is not an address such as 127.0.0.1:8093 or [::1]:8093")
    })?;
    if !addr.ip().is_loopback() && token.is_none() {
        return Err(format!(
            "the status server on {addr} would be reachable from other machines: give it a \
             token (`http: {{token_file: PATH}}` in the config; clients send `Authorization: \
             Bearer TOKEN`), or listen on 127.0.0.1"
        ));
    }
    let listener = std::net::TcpListener::bind(addr)
        .map_err(|e| format!("cannot listen on {addr}: {e} (another serve? set --listen)"))?;
    let bound = listener.local_addr().map_err(|e| e.to_string())?;
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(|e| format!("cannot start the status server: {e}"))?;
    let app = Arc::new(App {
        board,
        requests,
        token,
    });
    let router = Router::new()
        .route("/", get(page))
        .route("/status", get(status))
        .route("/status/{device}", get(device))
        .route("/metrics", get(metrics))
        .route("/jobs/{name}/run", post(run_job))
        .layer(middleware::from_fn_with_state(Arc::clone(&app), auth))
        .route("/health", get(|| async { "ok\n" }))
        .with_state(app);
    std::thread::Builder::new()
        .name("backupkit-http".into())
        .spawn(move || {
            runtime.block_on(async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                    return;
                };
                let _ = axum::serve(listener, router).await;
            });
        })
        .map_err(|e| format!("cannot start the status server: {e}"))?;
    Ok(bound)
}

/// Every request but `/health` shows the token when one is set.
async fn auth(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    if let Some(want) = &app.token {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !same(given.as_bytes(), want.as_bytes()) {
            let mut r = (
                StatusCode::UNAUTHORIZED,
                "a bearer token is needed: Authorization: Bearer TOKEN\n",
            )
                .into_response();
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"backupkit\""),
            );
            return r;
        }
    }
    next.run(req).await
}

/// Compares without stopping at the first difference.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn json_response(code: StatusCode, v: &impl serde::Serialize) -> Response {
    let body = serde_json::to_vec_pretty(v).unwrap_or_default();
    (code, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn status(State(app): State<Arc<App>>) -> Response {
    json_response(StatusCode::OK, &app.board.status())
}

async fn device(State(app): State<Arc<App>>, Path(id): Path<String>) -> Response {
    let s = app.board.status();
    let found: Vec<&DeviceView> = s
        .devices
        .iter()
        .filter(|d| d.device.id == id || d.device.name.as_deref() == Some(id.as_str()))
        .collect();
    match found.as_slice() {
        [one] => json_response(StatusCode::OK, one),
        [] => json_response(
            StatusCode::NOT_FOUND,
            &serde_json::json!({"error": format!("no device {id:?}")}),
        ),
        many => json_response(StatusCode::OK, &many),
    }
}

async fn run_job(State(app): State<Arc<App>>, Path(name): Path<String>) -> Response {
    let (tx, rx) = std::sync::mpsc::channel();
    let sent = app.requests.send(RunRequest {
        job: name.clone(),
        reply: tx,
    });
    if sent.is_err() {
        return json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &serde_json::json!({"error": "the service is stopping"}),
        );
    }
    let answer = tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(10)))
        .await
        .ok()
        .and_then(Result::ok);
    match answer {
        Some(Ok(true)) => json_response(
            StatusCode::ACCEPTED,
            &serde_json::json!({"job": name, "started": true}),
        ),
        Some(Ok(false)) => json_response(
            StatusCode::CONFLICT,
            &serde_json::json!({"job": name, "started": false,
                                "error": "running already, or the service is stopping"}),
        ),
        Some(Err(e)) => json_response(
            StatusCode::NOT_FOUND,
            &serde_json::json!({"job": name, "started": false, "error": match e {
                backup_core::Error::InvalidInput(m) => m,
                e => e.to_string(),
            }}),
        ),
        None => json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &serde_json::json!({"job": name, "error": "the service did not answer"}),
        ),
    }
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    typed(
        "text/plain; version=0.0.4; charset=utf-8",
        render_metrics(&app.board.status()),
    )
}

async fn page(State(app): State<Arc<App>>) -> Response {
    typed("text/html; charset=utf-8", render_page(&app.board.status()))
}

fn typed(content_type: &'static str, body: String) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    (headers, body).into_response()
}

/// One metric family: its samples as (labels, value); a family with none
/// is left out.
struct Family<'a> {
    name: &'a str,
    kind: &'a str,
    help: &'a str,
    samples: Vec<(String, f64)>,
}

impl<'a> Family<'a> {
    fn new(name: &'a str, kind: &'a str, help: &'a str, samples: Vec<(String, f64)>) -> Self {
        Self {
            name,
            kind,
            help,
            samples,
        }
    }
}

fn label_value(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn ts(t: Option<DateTime<Utc>>) -> Option<f64> {
    t.map(|t| t.timestamp_millis() as f64 / 1000.0)
}

fn flag(b: bool) -> f64 {
    if b { 1.0 } else { 0.0 }
}

type JobStatus = backup_core::schedule::status::JobStatus;

fn job_families(s: &ServiceStatus) -> Vec<Family<'static>> {
    let jobs = |f: &dyn Fn(&JobStatus) -> Option<f64>| {
        s.jobs
            .iter()
            .filter_map(|j| f(j).map(|v| (format!("job=\"{}\"", label_value(&j.name)), v)))
            .collect::<Vec<_>>()
    };
    vec![
        Family::new(
            "backupkit_job_last_success_timestamp_seconds",
            "gauge",
            "Unix time of the job's last successful run.",
            jobs(&|j| ts(j.last.last_success)),
        ),
        Family::new(
            "backupkit_job_last_run_timestamp_seconds",
            "gauge",
            "Unix time the job's last run started.",
            jobs(&|j| ts(j.last.last_start)),
        ),
        Family::new(
            "backupkit_job_last_run_success",
            "gauge",
            "1 if the job's last run succeeded, 0 if it failed or was incomplete.",
            jobs(&|j| ok(j.last.last_result.as_deref())),
        ),
        Family::new(
            "backupkit_job_last_run_duration_seconds",
            "gauge",
            "How long the job's last run took.",
            jobs(&|j| j.last.last_end.map(|_| j.last.seconds)),
        ),
        Family::new(
            "backupkit_job_last_run_bytes",
            "gauge",
            "Bytes the job's last run stored or transferred.",
            jobs(&|j| j.last.last_end.map(|_| j.last.bytes as f64)),
        ),
        Family::new(
            "backupkit_job_last_run_files",
            "gauge",
            "Files the job's last run stored or transferred.",
            jobs(&|j| j.last.last_end.map(|_| j.last.files as f64)),
        ),
        Family::new(
            "backupkit_job_runs_total",
            "counter",
            "Runs of the job recorded.",
            jobs(&|j| Some(j.last.runs as f64)),
        ),
        Family::new(
            "backupkit_job_failures_total",
            "counter",
            "Runs of the job that failed.",
            jobs(&|j| Some(j.last.failures as f64)),
        ),
        Family::new(
            "backupkit_job_running",
            "gauge",
            "1 while the job runs.",
            jobs(&|j| Some(flag(j.state == "running"))),
        ),
        Family::new(
            "backupkit_job_overdue",
            "gauge",
            "1 when the job has had no success for three times its interval.",
            jobs(&|j| Some(flag(j.overdue))),
        ),
        Family::new(
            "backupkit_job_next_run_timestamp_seconds",
            "gauge",
            "Unix time of the job's next scheduled run.",
            jobs(&|j| ts(j.next_run)),
        ),
    ]
}

fn device_families(s: &ServiceStatus) -> Vec<Family<'static>> {
    let devices = |f: &dyn Fn(&DeviceView) -> Option<f64>| {
        s.devices
            .iter()
            .filter(|d| d.device.present)
            .filter_map(|d| {
                f(d).map(|v| {
                    (
                        format!(
                            "job=\"{}\",device=\"{}\"",
                            label_value(&d.job),
                            label_value(&d.device.id)
                        ),
                        v,
                    )
                })
            })
            .collect::<Vec<_>>()
    };
    let ran = |d: &DeviceView| d.device.last_result.is_some();
    vec![
        Family::new(
            "backupkit_device_last_success_timestamp_seconds",
            "gauge",
            "Unix time of the device's last successful pull.",
            devices(&|d| ts(d.device.last_success)),
        ),
        Family::new(
            "backupkit_device_last_run_success",
            "gauge",
            "1 if the device's last pull succeeded, 0 if not.",
            devices(&|d| ok(d.device.last_result.map(Outcome::as_str))),
        ),
        Family::new(
            "backupkit_device_up",
            "gauge",
            "0 when the device could not be reached (or stopped answering) on its last pull.",
            devices(&|d| Some(flag(d.device.state != DeviceState::Unreachable))),
        ),
        Family::new(
            "backupkit_device_last_run_duration_seconds",
            "gauge",
            "How long the device's last pull took.",
            devices(&|d| ran(d).then_some(d.device.seconds)),
        ),
        Family::new(
            "backupkit_device_last_run_bytes",
            "gauge",
            "Bytes the device's last pull transferred.",
            devices(&|d| ran(d).then_some(d.device.bytes as f64)),
        ),
        Family::new(
            "backupkit_device_last_run_files",
            "gauge",
            "Files the device's last pull transferred.",
            devices(&|d| ran(d).then_some(d.device.files as f64)),
        ),
        Family::new(
            "backupkit_device_runs_total",
            "counter",
            "Pulls of the device recorded.",
            devices(&|d| Some(d.device.runs as f64)),
        ),
        Family::new(
            "backupkit_device_failures_total",
            "counter",
            "Pulls of the device that failed.",
            devices(&|d| Some(d.device.failures as f64)),
        ),
        Family::new(
            "backupkit_device_overdue",
            "gauge",
            "1 when the device has had no successful pull for three times the job's interval.",
            devices(&|d| Some(flag(d.overdue))),
        ),
    ]
}

/// 1 for a run that went well, 0 for one that did not.
fn ok(result: Option<&str>) -> Option<f64> {
    result.map(|r| flag(r == "ok" || r == "skipped"))
}

/// The status in the Prometheus text format (version 0.0.4), in base
/// units; a family without samples is left out.
pub(crate) fn render_metrics(s: &ServiceStatus) -> String {
    let mut out = String::new();
    for f in job_families(s).into_iter().chain(device_families(s)) {
        if f.samples.is_empty() {
            continue;
        }
        let _ = writeln!(out, "# HELP {} {}", f.name, f.help);
        let _ = writeln!(out, "# TYPE {} {}", f.name, f.kind);
        for (labels, v) in f.samples {
            let _ = writeln!(out, "{}{{{labels}}} {v}", f.name);
        }
    }
    out
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// `3m ago`, `2h ago`, `5d ago`.
fn age(now: DateTime<Utc>, t: Option<DateTime<Utc>>) -> String {
    let Some(t) = t else {
        return "never".into();
    };
    let s = (now - t).num_seconds().max(0);
    match s {
        0..60 => format!("{s}s ago"),
        60..3600 => format!("{}m ago", s / 60),
        3600..86_400 => format!("{}h {}m ago", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h ago", s / 86_400, s % 86_400 / 3600),
    }
}

fn when(t: Option<DateTime<Utc>>) -> String {
    t.map_or_else(
        || "-".into(),
        |t| {
            t.with_timezone(&chrono::Local)
                .format("%Y-%m-%d %H:%M")
                .to_string()
        },
    )
}

/// The status page: one table of jobs, one of devices; server-rendered,
/// refreshed every 10 s, readable on a phone.
pub(crate) fn render_page(s: &ServiceStatus) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta http-equiv=\"refresh\" content=\"10\"><title>backupkit on {host}</title>\
         <style>{STYLE}</style></head><body>\
         <h1>backupkit on {host}</h1><p class=\"meta\">{config} &middot; up since {up} \
         &middot; <a href=\"status\">status JSON</a> &middot; <a href=\"metrics\">metrics</a></p>",
        host = esc(&s.host),
        config = esc(&s.config),
        up = when(Some(s.started)),
    );
    h.push_str(
        "<h2>Jobs</h2><div class=\"scroll\"><table><tr><th>Job</th><th>State</th>\
         <th>Last success</th><th>Last run</th><th>Files</th><th>Bytes</th><th>Took</th>\
         <th>Next run</th><th>Last error</th></tr>",
    );
    for j in &s.jobs {
        job_row(&mut h, s.now, j);
    }
    h.push_str("</table></div>");
    if !s.devices.is_empty() || !s.discovery_errors.is_empty() {
        h.push_str("<h2>Devices</h2>");
        for (job, e) in &s.discovery_errors {
            let _ = write!(h, "<p class=\"err\">{}: {}</p>", esc(job), esc(e));
        }
        h.push_str(
            "<div class=\"scroll\"><table><tr><th>Device</th><th>State</th>\
             <th>Last success</th><th>Files</th><th>Bytes</th><th>Took</th>\
             <th>Last error</th></tr>",
        );
        for d in &s.devices {
            device_row(&mut h, s.now, d);
        }
        h.push_str("</table></div>");
    }
    let _ = writeln!(
        h,
        "<p class=\"meta\">backupkit {} &middot; {}</p></body></html>",
        s.version,
        when(Some(s.now))
    );
    h
}

const OVERDUE: &str = " <span class=\"badge\">overdue</span>";

fn job_row(h: &mut String, now: DateTime<Utc>, j: &JobStatus) {
    let state = if j.state == "running" {
        format!(
            "running since {}",
            age(now, j.running_since).trim_end_matches(" ago")
        )
    } else {
        j.state.to_owned()
    };
    let _ = write!(
        h,
        "<tr class=\"{cls}\"><td><b>{name}</b><br><small>{kind} &middot; {sched}</small></td>\
         <td><span class=\"state {st}\">{state}</span>{over}</td>\
         <td>{succ}<br><small>{succ_at}</small></td><td>{res}</td><td>{files}</td>\
         <td>{bytes}</td><td>{took:.1}s</td><td>{next}</td><td class=\"err\">{err}</td></tr>",
        cls = if j.overdue { "overdue" } else { "" },
        name = esc(&j.name),
        kind = j.kind,
        sched = esc(j.schedule.as_deref().unwrap_or("on request")),
        st = j.state,
        state = esc(&state),
        over = if j.overdue { OVERDUE } else { "" },
        succ = age(now, j.last.last_success),
        succ_at = when(j.last.last_success),
        res = esc(j.last.last_result.as_deref().unwrap_or("-")),
        files = j.last.files,
        bytes = backup_core::progress::human_bytes(j.last.bytes),
        took = j.last.seconds,
        next = when(j.next_run),
        err = esc(j.last.last_error.as_deref().unwrap_or("")),
    );
}

fn device_row(h: &mut String, now: DateTime<Utc>, d: &DeviceView) {
    let dv = &d.device;
    let state = match &dv.transfer {
        Some(t) => format!(
            "running {:.0}% at {}/s",
            t.percent,
            backup_core::progress::human_bytes(t.rate as u64)
        ),
        None if !dv.present => "gone".into(),
        None => dv.state.as_str().into(),
    };
    let _ = write!(
        h,
        "<tr class=\"{cls}\"><td><b>{name}</b><br><small>{id} &middot; {job}</small></td>\
         <td><span class=\"state {st}\">{state}</span>{over}</td>\
         <td>{succ}<br><small>{succ_at}</small></td><td>{files}</td><td>{bytes}</td>\
         <td>{took:.1}s</td><td class=\"err\">{err}</td></tr>",
        cls = if d.overdue { "overdue" } else { "" },
        name = esc(dv.name.as_deref().unwrap_or(&dv.id)),
        id = esc(&dv.id),
        job = esc(&d.job),
        st = if dv.present {
            dv.state.as_str()
        } else {
            "gone"
        },
        state = esc(&state),
        over = if d.overdue { OVERDUE } else { "" },
        succ = age(now, dv.last_success),
        succ_at = when(dv.last_success),
        files = dv.files,
        bytes = backup_core::progress::human_bytes(dv.bytes),
        took = dv.seconds,
        err = esc(dv.last_error.as_deref().unwrap_or("")),
    );
}

const STYLE: &str = "body{font:15px/1.4 system-ui,sans-serif;margin:1em;color:#222}\
h1{font-size:1.3em}h2{font-size:1.1em;margin-top:1.5em}.meta{color:#666;font-size:.9em}\
.scroll{overflow-x:auto}table{border-collapse:collapse;width:100%}\
th,td{text-align:left;padding:.35em .6em;border-bottom:1px solid #ddd;vertical-align:top}\
th{background:#f4f4f4;font-weight:600}small{color:#666}\
.state{padding:.1em .45em;border-radius:.3em;white-space:nowrap}\
.idle{background:#e3f4e3}.running{background:#e3ecfb}.failed{background:#fbe3e3}\
.unreachable{background:#fbefd9}.gone{background:#eee;color:#777}\
tr.overdue{background:#fff4f4}.badge{background:#c62828;color:#fff;padding:.1em .4em;\
border-radius:.3em;font-size:.8em}.err{color:#b00020;font-size:.9em}";
