//! Retention: which snapshots a `--keep-*` policy keeps.
//!
//! The semantics are restic's, so that users' policies mean what they are
//! used to: snapshots are taken newest first; each counted rule (`last`,
//! `hourly`, `daily`, `weekly`, `monthly`, `yearly`) keeps a snapshot when
//! its time falls in a bucket (hour, day, ISO week, month, year) other than
//! the last bucket that rule kept, until its count runs out; while a rule
//! still has count left, the oldest snapshot is kept too (`oldest daily
//! snapshot`). `within` keeps everything newer than the duration before the
//! newest snapshot (not before now); `within_*` keep one snapshot per bucket
//! in that range, and the oldest snapshot when it is in the range (`oldest
//! daily within 30d`); tags keep every snapshot that has all tags of one of
//! the lists. A snapshot is kept if any rule keeps it, and each reason is
//! reported. Buckets are taken in the time zone given (the local one in the
//! CLI, as restic does).

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Datelike, Days, NaiveDate, TimeZone, Timelike, Utc};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// A count that means "no limit" (restic's `unlimited`).
pub const UNLIMITED: u32 = u32::MAX;

/// A calendar duration, restic style: `1y5m7d2h` (years, months, days,
/// hours; any subset, in that order).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeepDuration {
    pub years: u32,
    pub months: u32,
    pub days: u32,
    pub hours: u32,
}

impl KeepDuration {
    pub fn is_zero(&self) -> bool {
        *self == Self::default()
    }

    /// `t` moved back by this duration, calendar-wise in `t`'s time zone,
    /// normalising out-of-range days the way restic (Go's `AddDate`) does:
    /// March 31 minus one month is March 3, not February 28.
    fn before<Tz: TimeZone>(&self, t: &DateTime<Tz>) -> Option<DateTime<Tz>> {
        let local = t.naive_local();
        let total_months = i64::from(local.year()) * 12 + i64::from(local.month0())
            - i64::from(self.years) * 12
            - i64::from(self.months);
        let (year, month0) = (total_months.div_euclid(12), total_months.rem_euclid(12));
        let first = NaiveDate::from_ymd_opt(i32::try_from(year).ok()?, month0 as u32 + 1, 1)?;
        let offset = i64::from(local.day()) - 1 - i64::from(self.days);
        let date = if offset >= 0 {
            first.checked_add_days(Days::new(offset as u64))?
        } else {
            first.checked_sub_days(Days::new(offset.unsigned_abs()))?
        };
        let moved = date.and_time(local.time()) - chrono::Duration::hours(i64::from(self.hours));
        t.timezone().from_local_datetime(&moved).earliest()
    }
}

impl FromStr for KeepDuration {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            Error::InvalidInput(format!(
                "duration {s:?}: expected a number and unit for each part, like 1y5m7d2h (y years, m months, d days, h hours)"
            ))
        };
        let mut d = KeepDuration::default();
        let mut digits = String::new();
        let mut seen = String::new();
        for c in s.trim().chars() {
            if c.is_ascii_digit() {
                digits.push(c);
                continue;
            }
            if digits.is_empty() || seen.contains(c) {
                return Err(bad());
            }
            let n: u32 = digits.parse().map_err(|_| bad())?;
            match c {
                'y' => d.years = n,
                'm' => d.months = n,
                'd' => d.days = n,
                'h' => d.hours = n,
                _ => return Err(bad()),
            }
            seen.push(c);
            digits.clear();
        }
        if !digits.is_empty() || seen.is_empty() {
            return Err(bad());
        }
        Ok(d)
    }
}

impl fmt::Display for KeepDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (n, unit) in [
            (self.years, 'y'),
            (self.months, 'm'),
            (self.days, 'd'),
            (self.hours, 'h'),
        ] {
            if n > 0 {
                write!(f, "{n}{unit}")?;
            }
        }
        if self.is_zero() {
            f.write_str("0h")?;
        }
        Ok(())
    }
}

impl Serialize for KeepDuration {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for KeepDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A retention policy. Counts of 0 are off; [`UNLIMITED`] keeps every
/// bucket. Seed 002's grandfather-father-son policy is
/// `KeepPolicy { daily: 7, weekly: 4, monthly: 12, ..Default::default() }`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KeepPolicy {
    pub last: u32,
    pub hourly: u32,
    pub daily: u32,
    pub weekly: u32,
    pub monthly: u32,
    pub yearly: u32,
    pub within: Option<KeepDuration>,
    pub within_hourly: Option<KeepDuration>,
    pub within_daily: Option<KeepDuration>,
    pub within_weekly: Option<KeepDuration>,
    pub within_monthly: Option<KeepDuration>,
    pub within_yearly: Option<KeepDuration>,
    /// Keep snapshots that have every tag of at least one of these lists.
    pub tags: Vec<Vec<String>>,
}

impl KeepPolicy {
    /// Whether the policy keeps nothing by itself (no rule given).
    pub fn is_empty(&self) -> bool {
        let within = [
            self.within,
            self.within_hourly,
            self.within_daily,
            self.within_weekly,
            self.within_monthly,
            self.within_yearly,
        ];
        [
            self.last,
            self.hourly,
            self.daily,
            self.weekly,
            self.monthly,
            self.yearly,
        ]
        .iter()
        .all(|c| *c == 0)
            && within.iter().all(|w| w.is_none_or(|d| d.is_zero()))
            && self.tags.is_empty()
    }
}

/// Tag lists as users write them, `a,b` per list (`--keep-tag a,b`):
/// each list is kept if a snapshot has all of its tags.
pub fn tag_lists<S: AsRef<str>>(lists: &[S]) -> Vec<Vec<String>> {
    lists
        .iter()
        .map(|l| {
            l.as_ref()
                .split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .filter(|l| !l.is_empty())
        .collect()
}

/// What the policy sees of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub id: String,
    pub time: DateTime<Utc>,
    pub tags: Vec<String>,
}

/// The policy's verdict on one snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub id: String,
    pub time: DateTime<Utc>,
    pub keep: bool,
    /// Why it is kept (`daily snapshot`, `within 2d`, `has tags [a]`, ...).
    pub reasons: Vec<String>,
}

/// The bucket of a snapshot's local time (or, for `last`, its position).
type Bucketer = fn(&chrono::NaiveDateTime, usize) -> i64;

fn position_bucket(_: &chrono::NaiveDateTime, nr: usize) -> i64 {
    nr as i64
}
fn hour_bucket(t: &chrono::NaiveDateTime, _: usize) -> i64 {
    i64::from(t.year()) * 1_000_000 + i64::from(t.month() * 10_000 + t.day() * 100 + t.hour())
}
fn day_bucket(t: &chrono::NaiveDateTime, _: usize) -> i64 {
    i64::from(t.year()) * 10_000 + i64::from(t.month() * 100 + t.day())
}
fn week_bucket(t: &chrono::NaiveDateTime, _: usize) -> i64 {
    let w = t.iso_week();
    i64::from(w.year()) * 100 + i64::from(w.week())
}
fn month_bucket(t: &chrono::NaiveDateTime, _: usize) -> i64 {
    i64::from(t.year()) * 100 + i64::from(t.month())
}
fn year_bucket(t: &chrono::NaiveDateTime, _: usize) -> i64 {
    i64::from(t.year())
}

/// A counted rule: keeps one snapshot per bucket until `count` runs out.
struct Rule {
    count: u32,
    bucket: Bucketer,
    last: Option<i64>,
    reason: &'static str,
}

impl Rule {
    fn new(count: u32, bucket: Bucketer, reason: &'static str) -> Self {
        Self {
            count,
            bucket,
            last: None,
            reason,
        }
    }
}

/// A `within_*` rule: one snapshot per bucket newer than `since`.
struct WithinRule {
    since: DateTime<Utc>,
    bucket: Bucketer,
    last: Option<i64>,
    /// `daily within`, and the duration, for the reason.
    kind: &'static str,
    within: KeepDuration,
}

/// The time `d` before `latest`, if `d` is given and not zero.
fn since<Tz: TimeZone>(d: Option<KeepDuration>, latest: &DateTime<Tz>) -> Option<DateTime<Utc>> {
    d.filter(|d| !d.is_zero()).map(|d| {
        d.before(latest)
            .map_or(DateTime::<Utc>::MIN_UTC, |t| t.with_timezone(&Utc))
    })
}

/// The `within_*` rules the policy sets.
fn within_rules<Tz: TimeZone>(policy: &KeepPolicy, latest: &DateTime<Tz>) -> Vec<WithinRule> {
    [
        (
            policy.within_hourly,
            hour_bucket as Bucketer,
            "hourly within",
        ),
        (policy.within_daily, day_bucket, "daily within"),
        (policy.within_weekly, week_bucket, "weekly within"),
        (policy.within_monthly, month_bucket, "monthly within"),
        (policy.within_yearly, year_bucket, "yearly within"),
    ]
    .into_iter()
    .filter_map(|(d, bucket, why)| {
        Some(WithinRule {
            since: since(d, latest)?,
            kind: why,
            within: d?,
            bucket,
            last: None,
        })
    })
    .collect()
}

/// Applies `policy` to one group of snapshots, bucketing times in `tz`
/// (the local time zone in the CLI, as restic does). Returns a decision for
/// every snapshot, newest first. `now` bounds the "newest snapshot" that
/// `within` counts from (a snapshot dated in the future is not it).
pub fn apply<Tz: TimeZone>(
    candidates: &[Candidate],
    policy: &KeepPolicy,
    tz: &Tz,
    now: DateTime<Utc>,
) -> Vec<Decision> {
    let mut list: Vec<&Candidate> = candidates.iter().collect();
    // Newest first; equal times keep their order (a stable sort).
    list.sort_by_key(|c| std::cmp::Reverse(c.time));
    if policy.is_empty() {
        return list
            .into_iter()
            .map(|c| Decision {
                id: c.id.clone(),
                time: c.time,
                keep: true,
                reasons: vec!["policy is empty".into()],
            })
            .collect();
    }
    let latest = list
        .iter()
        .map(|c| c.time)
        .filter(|t| *t < now)
        .max()
        .unwrap_or(DateTime::<Utc>::UNIX_EPOCH)
        .with_timezone(tz);
    let mut counted = [
        Rule::new(policy.last, position_bucket, "last snapshot"),
        Rule::new(policy.hourly, hour_bucket, "hourly snapshot"),
        Rule::new(policy.daily, day_bucket, "daily snapshot"),
        Rule::new(policy.weekly, week_bucket, "weekly snapshot"),
        Rule::new(policy.monthly, month_bucket, "monthly snapshot"),
        Rule::new(policy.yearly, year_bucket, "yearly snapshot"),
    ];
    let mut within = within_rules(policy, &latest);
    let keep_since = since(policy.within, &latest);

    let last_index = list.len().saturating_sub(1);
    let mut out = Vec::with_capacity(list.len());
    for (nr, cur) in list.into_iter().enumerate() {
        let mut reasons = Vec::new();
        for wanted in &policy.tags {
            if wanted.iter().all(|t| cur.tags.contains(t)) {
                reasons.push(format!("has tags [{}]", wanted.join(",")));
            }
        }
        if let (Some(t), Some(d)) = (keep_since, policy.within)
            && cur.time > t
        {
            reasons.push(format!("within {d}"));
        }
        let local = cur.time.with_timezone(tz).naive_local();
        for rule in &mut counted {
            if rule.count == 0 {
                continue;
            }
            let val = (rule.bucket)(&local, nr);
            // While count is left, the oldest snapshot is kept as well: it
            // makes the history kept as long as the policy allows.
            if Some(val) != rule.last || nr == last_index {
                let oldest = Some(val) == rule.last;
                rule.last = Some(val);
                if rule.count != UNLIMITED {
                    rule.count -= 1;
                }
                reasons.push(if oldest {
                    format!("oldest {}", rule.reason)
                } else {
                    rule.reason.to_owned()
                });
            }
        }
        for rule in &mut within {
            if cur.time > rule.since {
                let val = (rule.bucket)(&local, nr);
                // The oldest snapshot in the range is kept too, as restic
                // does for the counted rules.
                if Some(val) != rule.last || nr == last_index {
                    let oldest = Some(val) == rule.last;
                    rule.last = Some(val);
                    reasons.push(format!(
                        "{}{} {}",
                        if oldest { "oldest " } else { "" },
                        rule.kind,
                        rule.within
                    ));
                }
            }
        }
        out.push(Decision {
            id: cur.id.clone(),
            time: cur.time,
            keep: !reasons.is_empty(),
            reasons,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_move_back_like_restic() {
        let d: KeepDuration = "1y5m7d2h".parse().unwrap();
        assert_eq!((d.years, d.months, d.days, d.hours), (1, 5, 7, 2));
        assert_eq!(d.to_string(), "1y5m7d2h");
        for bad in ["", "5", "d", "1x", "1d1d", "-1d"] {
            assert!(bad.parse::<KeepDuration>().is_err(), "{bad:?}");
        }
        let t: DateTime<Utc> = "2026-03-31T10:00:00Z".parse().unwrap();
        let month: KeepDuration = "1m".parse().unwrap();
        // Go's AddDate: February 31 normalises to March 3.
        assert_eq!(
            month.before(&t).unwrap().to_rfc3339(),
            "2026-03-03T10:00:00+00:00"
        );
        let mixed: KeepDuration = "1y2d3h".parse().unwrap();
        assert_eq!(
            mixed.before(&t).unwrap().to_rfc3339(),
            "2025-03-29T07:00:00+00:00"
        );
    }

    fn at(s: &str) -> DateTime<Utc> {
        format!("{s}Z").parse().unwrap()
    }

    /// The kept snapshots' times, newest first, for snapshots at `times`
    /// (`tags` by index).
    fn kept(times: &[&str], tags: &[(usize, &str)], policy: &KeepPolicy) -> Vec<String> {
        let candidates: Vec<Candidate> = times
            .iter()
            .enumerate()
            .map(|(i, t)| Candidate {
                id: format!("s{i}"),
                time: at(t),
                tags: tags
                    .iter()
                    .filter(|(j, _)| *j == i)
                    .map(|(_, t)| (*t).to_owned())
                    .collect(),
            })
            .collect();
        let now = at("2030-01-01T00:00:00");
        apply(&candidates, policy, &Utc, now)
            .into_iter()
            .filter(|d| d.keep)
            .map(|d| d.time.format("%Y-%m-%dT%H:%M:%S").to_string())
            .collect()
    }

    fn policy(f: impl FnOnce(&mut KeepPolicy)) -> KeepPolicy {
        let mut p = KeepPolicy::default();
        f(&mut p);
        p
    }

    /// Several snapshots a day, gaps between days, out of order on input.
    const DAYS: &[&str] = &[
        "2026-11-20T08:00:00",
        "2026-11-24T18:00:00",
        "2026-11-20T09:00:00",
        "2026-11-24T09:30:00",
        "2026-11-24T09:10:00",
        "2026-11-23T23:59:59",
        "2026-11-10T12:00:00",
    ];

    #[test]
    #[allow(clippy::too_many_lines)] // a table: one row per policy
    fn table_of_policies_matches_restic_semantics() {
        let cases: Vec<(&str, KeepPolicy, Vec<&str>)> = vec![
            // The 3 newest; the count is used up, so the oldest is not kept.
            (
                "last 3",
                policy(|p| p.last = 3),
                vec![
                    "2026-11-24T18:00:00",
                    "2026-11-24T09:30:00",
                    "2026-11-24T09:10:00",
                ],
            ),
            // More count than snapshots: all of them.
            (
                "last 10",
                policy(|p| p.last = 10),
                vec![
                    "2026-11-24T18:00:00",
                    "2026-11-24T09:30:00",
                    "2026-11-24T09:10:00",
                    "2026-11-23T23:59:59",
                    "2026-11-20T09:00:00",
                    "2026-11-20T08:00:00",
                    "2026-11-10T12:00:00",
                ],
            ),
            // The newest of each of the 2 newest days.
            (
                "daily 2",
                policy(|p| p.daily = 2),
                vec!["2026-11-24T18:00:00", "2026-11-23T23:59:59"],
            ),
            // 4 days exist (gaps do not count): the newest of each, and as
            // the count is not used up, the oldest snapshot as well.
            (
                "daily 5",
                policy(|p| p.daily = 5),
                vec![
                    "2026-11-24T18:00:00",
                    "2026-11-23T23:59:59",
                    "2026-11-20T09:00:00",
                    "2026-11-10T12:00:00",
                ],
            ),
            // ISO weeks: 23-24 Nov are week 48, 20 Nov week 47, 10 Nov week 46.
            (
                "weekly 2",
                policy(|p| p.weekly = 2),
                vec!["2026-11-24T18:00:00", "2026-11-20T09:00:00"],
            ),
            (
                "hourly 3",
                policy(|p| p.hourly = 3),
                vec![
                    "2026-11-24T18:00:00",
                    "2026-11-24T09:30:00",
                    "2026-11-23T23:59:59",
                ],
            ),
            // 2 days before the newest (24 Nov 18:00) is 22 Nov 18:00.
            (
                "within 2d",
                policy(|p| p.within = Some("2d".parse().unwrap())),
                vec![
                    "2026-11-24T18:00:00",
                    "2026-11-24T09:30:00",
                    "2026-11-24T09:10:00",
                    "2026-11-23T23:59:59",
                ],
            ),
            // One per day within 5 days of the newest (after 19 Nov 18:00).
            (
                "within-daily 5d",
                policy(|p| p.within_daily = Some("5d".parse().unwrap())),
                vec![
                    "2026-11-24T18:00:00",
                    "2026-11-23T23:59:59",
                    "2026-11-20T09:00:00",
                ],
            ),
            // Union of rules: last 1 and daily 3.
            (
                "last 1 + daily 3",
                policy(|p| {
                    p.last = 1;
                    p.daily = 3;
                }),
                vec![
                    "2026-11-24T18:00:00",
                    "2026-11-23T23:59:59",
                    "2026-11-20T09:00:00",
                ],
            ),
            // Tags keep regardless of counts; a tag list needs all its tags.
            (
                "last 1 + tag",
                policy(|p| {
                    p.last = 1;
                    p.tags = vec![vec!["keep".into()], vec!["a".into(), "b".into()]];
                }),
                vec!["2026-11-24T18:00:00", "2026-11-20T08:00:00"],
            ),
            // 2026 and no other year: the newest, plus the oldest while count is left.
            (
                "yearly 3",
                policy(|p| p.yearly = 3),
                vec!["2026-11-24T18:00:00", "2026-11-10T12:00:00"],
            ),
            (
                "monthly unlimited",
                policy(|p| p.monthly = UNLIMITED),
                vec!["2026-11-24T18:00:00", "2026-11-10T12:00:00"],
            ),
        ];
        // Index 6 = 10 Nov has only `a`; index 0 = 20 Nov 08:00 has `keep`.
        let tags = [(0, "keep"), (6, "a")];
        for (name, p, want) in cases {
            assert_eq!(kept(DAYS, &tags, &p), want, "{name}");
        }
    }

    #[test]
    fn empty_policy_keeps_everything() {
        assert!(KeepPolicy::default().is_empty());
        assert_eq!(kept(DAYS, &[], &KeepPolicy::default()).len(), DAYS.len());
    }

    #[test]
    fn weeks_follow_iso_8601_across_the_new_year() {
        // 2026-12-31 (Thursday) and 2027-01-01 (Friday) are both in ISO week
        // 2026-W53; 2027-01-04 (Monday) starts 2027-W01.
        let times = [
            "2026-12-28T10:00:00",
            "2026-12-31T10:00:00",
            "2027-01-01T10:00:00",
            "2027-01-04T10:00:00",
        ];
        assert_eq!(
            kept(&times, &[], &policy(|p| p.weekly = 2)),
            ["2027-01-04T10:00:00", "2027-01-01T10:00:00"]
        );
        assert_eq!(
            kept(&times, &[], &policy(|p| p.yearly = 1)),
            ["2027-01-04T10:00:00"]
        );
    }

    /// Seed 002's grandfather-father-son policy over a year of nightly
    /// backups at 02:00.
    #[test]
    fn grandfather_father_son_over_a_year() {
        let mut days = Vec::new();
        let mut d = NaiveDate::from_ymd_opt(2025, 1, 1).unwrap();
        while d.year() == 2025 {
            days.push(format!("{d}T02:00:00"));
            d = d.succ_opt().unwrap();
        }
        let times: Vec<&str> = days.iter().map(String::as_str).collect();
        let gfs = policy(|p| {
            p.daily = 7;
            p.weekly = 4;
            p.monthly = 12;
        });
        let mut want: Vec<String> = (25..=31)
            .rev()
            .map(|day| format!("2025-12-{day:02}T02:00:00"))
            .collect();
        // ISO weeks: 29-31 Dec are 2026-W01, 22-28 Dec W52 (both already
        // kept by daily), then 15-21 Dec and 8-14 Dec.
        want.push("2025-12-21T02:00:00".into());
        want.push("2025-12-14T02:00:00".into());
        // The last day of each month, November back to January.
        for (m, last) in [
            (11, 30),
            (10, 31),
            (9, 30),
            (8, 31),
            (7, 31),
            (6, 30),
            (5, 31),
            (4, 30),
            (3, 31),
            (2, 28),
            (1, 31),
        ] {
            want.push(format!("2025-{m:02}-{last:02}T02:00:00"));
        }
        assert_eq!(kept(&times, &[], &gfs), want);
        // With a 13th month asked for and none left, the oldest is kept too.
        let mut longer = gfs.clone();
        longer.monthly = 13;
        let got = kept(&times, &[], &longer);
        assert_eq!(got.len(), want.len() + 1);
        assert_eq!(got.last().unwrap(), "2025-01-01T02:00:00");
    }

    #[test]
    fn within_counts_from_the_newest_snapshot_not_in_the_future() {
        let times = [
            "2026-11-24T12:00:00",
            "2026-11-22T13:00:00",
            "2026-11-22T11:00:00",
            "2031-01-01T00:00:00",
        ];
        // The 2031 snapshot is after `now` (2030): 48 h are counted from
        // 24 Nov 12:00. A future snapshot is still kept, being newer.
        let got = kept(
            &times,
            &[],
            &policy(|p| p.within = Some("2d".parse().unwrap())),
        );
        assert_eq!(
            got,
            [
                "2031-01-01T00:00:00",
                "2026-11-24T12:00:00",
                "2026-11-22T13:00:00"
            ]
        );
    }

    /// Snapshots `s0`, `s1`, ... at `times`, without tags.
    fn untagged(times: &[&str]) -> Vec<Candidate> {
        times
            .iter()
            .enumerate()
            .map(|(i, t)| Candidate {
                id: format!("s{i}"),
                time: at(t),
                tags: Vec::new(),
            })
            .collect()
    }

    /// Current restic (`internal/data/snapshot_policy.go`) keeps the oldest
    /// snapshot for the `within_*` rules too, when it is in the range, and
    /// says "oldest" when that is the only reason.
    #[test]
    fn the_oldest_snapshot_is_kept_and_labelled_like_restic() {
        let c = untagged(&[
            "2026-11-24T18:00:00",
            "2026-11-24T09:00:00",
            "2026-11-23T10:00:00",
            "2026-11-23T08:00:00",
        ]);
        let now = at("2030-01-01T00:00:00");
        let reasons = |p: &KeepPolicy| -> Vec<Vec<String>> {
            apply(&c, p, &Utc, now)
                .into_iter()
                .map(|d| d.reasons)
                .collect()
        };
        let within_daily = policy(|p| p.within_daily = Some("30d".parse().unwrap()));
        assert_eq!(
            reasons(&within_daily),
            [
                vec!["daily within 30d"],
                vec![],
                vec!["daily within 30d"],
                vec!["oldest daily within 30d"],
            ]
        );
        assert_eq!(
            reasons(&policy(|p| p.daily = 5)),
            [
                vec!["daily snapshot"],
                vec![],
                vec!["daily snapshot"],
                vec!["oldest daily snapshot"],
            ]
        );
        // Out of range, the oldest is not kept by a within rule.
        let short = policy(|p| p.within_hourly = Some("2h".parse().unwrap()));
        assert_eq!(
            reasons(&short),
            [vec!["hourly within 2h"], vec![], vec![], vec![]]
        );
        // A count used up keeps no oldest (restic: only while count is left).
        assert_eq!(
            reasons(&policy(|p| p.daily = 2)),
            [
                vec!["daily snapshot"],
                vec![],
                vec!["daily snapshot"],
                vec![]
            ]
        );
    }

    /// Days, weeks, ... are those of the time zone given: two snapshots an
    /// hour apart across midnight UTC are one day two hours east.
    #[test]
    fn buckets_are_taken_in_the_time_zone_given() {
        let c = untagged(&[
            "2026-11-25T01:30:00",
            "2026-11-25T00:30:00",
            "2026-11-24T23:30:00",
            "2026-11-24T22:30:00",
            "2026-11-20T12:00:00",
        ]);
        let now = at("2030-01-01T00:00:00");
        let daily3 = policy(|p| p.daily = 3);
        let ids = |tz: &dyn Fn(&[Candidate]) -> Vec<Decision>| -> Vec<String> {
            tz(&c)
                .into_iter()
                .filter(|d| d.keep)
                .map(|d| d.id)
                .collect()
        };
        assert_eq!(
            ids(&|c| apply(c, &daily3, &Utc, now)),
            ["s0", "s2", "s4"],
            "in UTC: 25, 24 and 20 November"
        );
        let east = chrono::FixedOffset::east_opt(2 * 3600).unwrap();
        assert_eq!(
            ids(&|c| apply(c, &daily3, &east, now)),
            ["s0", "s4"],
            "at +02:00 the first four are all on 25 November"
        );
    }

    #[test]
    fn reasons_name_every_rule_that_keeps() {
        let c = vec![Candidate {
            id: "x".into(),
            time: at("2026-11-24T10:00:00"),
            tags: vec!["t".into()],
        }];
        let p = policy(|p| {
            p.last = 1;
            p.daily = 1;
            p.tags = vec![vec!["t".into()]];
        });
        let d = apply(&c, &p, &Utc, at("2030-01-01T00:00:00"));
        assert_eq!(
            d[0].reasons,
            ["has tags [t]", "last snapshot", "daily snapshot"]
        );
    }
}
