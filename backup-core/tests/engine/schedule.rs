//! The planner with an injected clock: due times, overlaps, catch-up,
//! intervals, and crontab times across both daylight-saving changes of a
//! zone defined here (Central European time in 2026), so that no test
//! sleeps and none depends on the machine's zone.

use std::time::Duration;

use backup_core::schedule::{Cron, Decision, Planned, Planner, Schedule, Why};
use chrono::{DateTime, FixedOffset, LocalResult, NaiveDate, NaiveDateTime, TimeZone, Utc};

/// Central European time in 2026: UTC+1, and UTC+2 from 29 March 01:00
/// UTC to 25 October 01:00 UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cet;

fn summer(utc: &NaiveDateTime) -> bool {
    let start = NaiveDate::from_ymd_opt(2026, 3, 29)
        .unwrap()
        .and_hms_opt(1, 0, 0)
        .unwrap();
    let end = NaiveDate::from_ymd_opt(2026, 10, 25)
        .unwrap()
        .and_hms_opt(1, 0, 0)
        .unwrap();
    *utc >= start && *utc < end
}

fn hours(h: i32) -> FixedOffset {
    FixedOffset::east_opt(h * 3600).unwrap()
}

impl TimeZone for Cet {
    type Offset = FixedOffset;

    fn from_offset(_: &FixedOffset) -> Self {
        Cet
    }

    fn offset_from_local_date(&self, local: &NaiveDate) -> LocalResult<FixedOffset> {
        self.offset_from_local_datetime(&local.and_hms_opt(12, 0, 0).unwrap())
    }

    fn offset_from_local_datetime(&self, local: &NaiveDateTime) -> LocalResult<FixedOffset> {
        let as_summer = summer(&(*local - chrono::Duration::hours(2)));
        let as_winter = !summer(&(*local - chrono::Duration::hours(1)));
        match (as_summer, as_winter) {
            (true, true) => LocalResult::Ambiguous(hours(2), hours(1)),
            (true, false) => LocalResult::Single(hours(2)),
            (false, true) => LocalResult::Single(hours(1)),
            (false, false) => LocalResult::None,
        }
    }

    fn offset_from_utc_date(&self, utc: &NaiveDate) -> FixedOffset {
        self.offset_from_utc_datetime(&utc.and_hms_opt(12, 0, 0).unwrap())
    }

    fn offset_from_utc_datetime(&self, utc: &NaiveDateTime) -> FixedOffset {
        if summer(utc) { hours(2) } else { hours(1) }
    }
}

fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Cet> {
    Cet.with_ymd_and_hms(y, mo, d, h, mi, 0).earliest().unwrap()
}

fn cron(expr: &str) -> Schedule {
    Schedule::Cron(Cron::parse(expr).unwrap())
}

fn planned(job: &str, schedule: Schedule, catch_up: bool, last: Option<DateTime<Cet>>) -> Planned {
    Planned {
        job: job.into(),
        schedule,
        catch_up,
        last_run: last.map(|t| t.with_timezone(&Utc)),
    }
}

fn shown(times: &[DateTime<Cet>]) -> Vec<String> {
    times
        .iter()
        .map(|t| t.format("%m-%d %H:%M %:z").to_string())
        .collect()
}

#[test]
fn a_daily_time_runs_once_across_both_changes() {
    // 02:30 does not exist on 29 March (02:00 -> 03:00): it runs at the
    // change, 03:00 CEST. It exists twice on 25 October: it runs once.
    let daily = cron("30 2 * * *");
    assert_eq!(
        shown(&daily.upcoming(&at(2026, 3, 28, 12, 0), 3)),
        [
            "03-29 03:00 +02:00",
            "03-30 02:30 +02:00",
            "03-31 02:30 +02:00"
        ]
    );
    assert_eq!(
        shown(&daily.upcoming(&at(2026, 10, 24, 12, 0), 3)),
        [
            "10-25 02:30 +02:00",
            "10-26 02:30 +01:00",
            "10-27 02:30 +01:00"
        ]
    );
    // Every quarter hour of the skipped hour collapses into one run.
    let quarter = cron("*/15 2 * * *");
    assert_eq!(
        shown(&quarter.upcoming(&at(2026, 3, 29, 1, 50), 2)),
        ["03-29 03:00 +02:00", "03-30 02:00 +02:00"]
    );
    // Hourly through the autumn change: 02:00 once, then 03:00 an hour
    // of wall clock later but two hours of real time later.
    let hourly = cron("0 * * * *");
    assert_eq!(
        shown(&hourly.upcoming(&at(2026, 10, 25, 0, 30), 4)),
        [
            "10-25 01:00 +02:00",
            "10-25 02:00 +02:00",
            "10-25 03:00 +01:00",
            "10-25 04:00 +01:00"
        ]
    );
}

#[test]
fn due_jobs_start_once_and_an_overlapping_time_is_skipped() {
    let start = at(2026, 12, 1, 12, 0);
    let mut plan = Planner::new(
        vec![
            planned("database", cron("0 2 * * *"), false, None),
            planned("files", cron("0 3 * * 0"), false, None),
        ],
        &start,
    );
    assert_eq!(plan.next_wake(), Some(at(2026, 12, 2, 2, 0)));
    assert!(plan.due(&at(2026, 12, 2, 1, 59)).is_empty());
    let d = plan.due(&at(2026, 12, 2, 2, 0));
    assert_eq!(
        d,
        [Decision::Start {
            job: "database".into(),
            due: at(2026, 12, 2, 2, 0),
            why: Why::Scheduled,
        }]
    );
    // Still running a day later (a stuck dump): the next time is skipped
    // and reported, not started a second time.
    let d = plan.due(&at(2026, 12, 3, 2, 0));
    assert!(
        matches!(&d[..], [Decision::Overlap { job, running_since, .. }]
            if job == "database" && *running_since == at(2026, 12, 2, 2, 0)),
        "{d:?}"
    );
    assert!(matches!(
        plan.start_now("database", &at(2026, 12, 3, 9, 0)),
        Some(Decision::Overlap { .. })
    ));
    plan.finished("database");
    assert!(matches!(
        plan.start_now("database", &at(2026, 12, 3, 9, 0)),
        Some(Decision::Start {
            why: Why::Manual,
            ..
        })
    ));
    assert!(plan.start_now("nothing", &at(2026, 12, 3, 9, 0)).is_none());
    // Sunday 03:00 for the files job; the database job (still running
    // from the manual start) overlaps its 02:00.
    let d = plan.due(&at(2026, 12, 6, 3, 0));
    let jobs: Vec<(&str, bool)> = d
        .iter()
        .map(|d| (d.job(), matches!(d, Decision::Start { .. })))
        .collect();
    assert_eq!(jobs, [("database", false), ("files", true)]);
}

#[test]
fn times_missed_while_suspended_collapse_into_one_run() {
    let mut plan = Planner::new(
        vec![planned("verify", cron("0 * * * *"), false, None)],
        &at(2026, 12, 1, 0, 30),
    );
    // The machine slept from 00:30 to 05:10: one run, then 06:00.
    let d = plan.due(&at(2026, 12, 1, 5, 10));
    assert!(matches!(&d[..], [Decision::Start { due, .. }] if *due == at(2026, 12, 1, 1, 0)));
    plan.finished("verify");
    assert_eq!(plan.next_wake(), Some(at(2026, 12, 1, 6, 0)));
}

#[test]
fn catch_up_runs_a_missed_time_once_at_start_up() {
    let now = at(2026, 12, 2, 9, 0);
    let ran_yesterday = Some(at(2026, 12, 1, 2, 0));
    let ran_today = Some(at(2026, 12, 2, 2, 0));
    let mut plan = Planner::new(
        vec![
            planned("missed", cron("0 2 * * *"), true, ran_yesterday),
            planned("not-missed", cron("0 2 * * *"), true, ran_today),
            planned("no-catch-up", cron("0 2 * * *"), false, ran_yesterday),
            planned("never-ran", cron("0 4 1 * *"), true, None),
        ],
        &now,
    );
    let d = plan.due(&now);
    let started: Vec<(&str, Why)> = d
        .iter()
        .filter_map(|d| match d {
            Decision::Start { job, why, .. } => Some((job.as_str(), *why)),
            Decision::Overlap { .. } => None,
        })
        .collect();
    assert_eq!(
        started,
        [("missed", Why::CatchUp), ("never-ran", Why::CatchUp)]
    );
    // Afterwards, all four follow their schedules.
    let next: Vec<_> = plan.view().into_iter().map(|v| v.next.unwrap()).collect();
    assert_eq!(
        next,
        [
            at(2026, 12, 3, 2, 0),
            at(2026, 12, 3, 2, 0),
            at(2026, 12, 3, 2, 0),
            at(2027, 1, 1, 4, 0)
        ]
    );
}

#[test]
fn intervals_run_at_start_up_then_after_each_start() {
    let every = Schedule::Every(Duration::from_secs(300));
    let now = at(2026, 12, 1, 10, 0);
    let mut plan = Planner::new(
        vec![
            planned("pull", every.clone(), false, None),
            planned("recent", every.clone(), false, Some(at(2026, 12, 1, 9, 58))),
        ],
        &now,
    );
    let d = plan.due(&now);
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(d[0].job(), "pull");
    plan.finished("pull");
    assert_eq!(plan.next_wake(), Some(at(2026, 12, 1, 10, 3)));
    let d = plan.due(&at(2026, 12, 1, 10, 3));
    assert_eq!(d[0].job(), "recent");
    // A run that took 12 minutes: the next starts right away, not three
    // times in a row.
    let d = plan.due(&at(2026, 12, 1, 10, 17));
    assert_eq!(d.len(), 2, "{d:?}");
    assert!(matches!(&d[0], Decision::Start { job, .. } if job == "pull"));
    assert!(matches!(&d[1], Decision::Overlap { job, .. } if job == "recent"));
    assert_eq!(
        plan.view()[0].next,
        Some(at(2026, 12, 1, 10, 22)),
        "the interval counts from the run's start"
    );
    assert_eq!(every.to_string(), "every 5m");
}

/// The history survives a restart, counts runs and failures, keeps the
/// last success through a failure, and gives `catch_up` its last start;
/// a damaged file is an error naming it, never an empty history.
#[test]
fn the_history_feeds_catch_up_across_restarts() {
    use backup_core::schedule::history::{History, RunRecord};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state/schedule.json");
    let mut h = History::load(&path).unwrap();
    assert_eq!(h.job("database").runs, 0);
    let start = at(2026, 12, 1, 2, 0).with_timezone(&Utc);
    h.started("database", start).unwrap();
    // A crash mid-run: the start is on disk, with no end.
    let reloaded = History::load(&path).unwrap().job("database");
    assert_eq!(
        (reloaded.last_start, reloaded.last_result.as_deref()),
        (Some(start), Some("running"))
    );
    let ok = RunRecord {
        started: start,
        ended: start + chrono::Duration::seconds(90),
        result: "ok".into(),
        ok: true,
        error: None,
        files: 12,
        bytes: 4096,
    };
    h.finished("database", &ok).unwrap();
    let next_day = start + chrono::Duration::days(1);
    let failed = RunRecord {
        started: next_day,
        ended: next_day + chrono::Duration::seconds(3),
        result: "failed".into(),
        ok: false,
        error: Some("the database is down".into()),
        files: 0,
        bytes: 0,
    };
    h.finished("database", &failed).unwrap();
    let j = History::load(&path).unwrap().job("database");
    assert_eq!((j.runs, j.failures), (2, 1));
    assert_eq!(j.last_success, Some(ok.ended));
    assert_eq!(j.last_error.as_deref(), Some("the database is down"));
    assert!((j.seconds - 3.0).abs() < 1e-9);
    assert!(
        std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .all(|e| !e.unwrap().file_name().to_string_lossy().contains("tmp")),
        "a temporary file was left"
    );
    // Restarted on 3 December at 09:00: the 02:00 run was missed.
    let now = at(2026, 12, 3, 9, 0);
    let mut plan = Planner::new(
        vec![Planned {
            job: "database".into(),
            schedule: cron("0 2 * * *"),
            catch_up: true,
            last_run: j.last_start,
        }],
        &now,
    );
    assert!(matches!(
        &plan.due(&now)[..],
        [Decision::Start {
            why: Why::CatchUp,
            ..
        }]
    ));
    std::fs::write(&path, "{ torn").unwrap();
    let e = History::load(&path).unwrap_err().to_string();
    assert!(e.contains("is not a backupkit schedule history"), "{e}");
}

#[test]
fn each_config_has_its_own_history_file() {
    use backup_core::schedule::history::default_path;
    let a = default_path(std::path::Path::new("/etc/backupkit/lab.yaml")).unwrap();
    let b = default_path(std::path::Path::new("/srv/other/lab.yaml")).unwrap();
    assert_ne!(a, b);
    assert!(
        a.to_string_lossy().contains("backupkit/schedule-lab-"),
        "{}",
        a.display()
    );
}
