//! Standard 5-field crontab expressions (`minute hour day-of-month month
//! day-of-week`), as `crontab(5)` reads them: `*`, numbers, ranges `a-b`,
//! steps `*/n` and `a-b/n`, lists `a,b`, month and weekday names (`jan`,
//! `sun`), Sunday as 0 or 7, and the macros `@hourly`, `@daily`
//! (`@midnight`), `@weekly`, `@monthly`, `@yearly` (`@annually`).
//!
//! When both day fields are restricted (neither starts with `*`), a day
//! matches if either does, as in cron.
//!
//! Times are wall-clock times in a time zone. Across a daylight-saving
//! change a scheduled time runs once: a time skipped by the clock moving
//! forward runs at the change (as Vixie cron and cronie do), and a time
//! that occurs twice when the clock moves back runs at its first
//! occurrence.

use chrono::{
    DateTime, Datelike, Duration, LocalResult, NaiveDate, NaiveDateTime, TimeZone, Timelike,
};

use crate::{Error, Result};

/// A parsed crontab expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron {
    text: String,
    minutes: u64,
    hours: u32,
    days: u32,
    months: u16,
    weekdays: u8,
    /// The day-of-month field starts with `*`.
    any_day: bool,
    /// The day-of-week field starts with `*`.
    any_weekday: bool,
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const WEEKDAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

/// How far ahead a next time is looked for: long enough for 29 February
/// (eight years between leap days around 2100).
const HORIZON_DAYS: i64 = 9 * 366;

impl Cron {
    /// Parses an expression.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] naming the field and what is wrong with it,
    /// or saying that the expression never matches a date (`0 0 30 2 *`).
    pub fn parse(text: &str) -> Result<Cron> {
        let trimmed = text.trim();
        let expanded = match trimmed.to_ascii_lowercase().as_str() {
            "@hourly" => "0 * * * *".to_owned(),
            "@daily" | "@midnight" => "0 0 * * *".to_owned(),
            "@weekly" => "0 0 * * 0".to_owned(),
            "@monthly" => "0 0 1 * *".to_owned(),
            "@yearly" | "@annually" => "0 0 1 1 *".to_owned(),
            m if m.starts_with('@') => {
                return Err(bad(
                    text,
                    format!(
                        "{m} is not a schedule backupkit knows (@hourly, @daily, @weekly, \
                         @monthly, @yearly)"
                    ),
                ));
            }
            _ => trimmed.to_owned(),
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(bad(
                text,
                format!(
                    "{} field(s); a crontab expression has 5: minute hour day-of-month month \
                     day-of-week (e.g. \"0 2 * * *\", daily at 02:00)",
                    fields.len()
                ),
            ));
        }
        let minutes = field(text, fields[0], "minute", 0, 59, &[])?;
        let hours = field(text, fields[1], "hour", 0, 23, &[])?;
        let days = field(text, fields[2], "day of month", 1, 31, &[])?;
        let months = field(text, fields[3], "month", 1, 12, &MONTHS)?;
        let mut weekdays = field(text, fields[4], "day of week", 0, 7, &WEEKDAYS)?;
        if weekdays & (1 << 7) != 0 {
            weekdays = (weekdays | 1) & !(1 << 7);
        }
        let cron = Cron {
            text: trimmed.to_owned(),
            minutes,
            hours: u32::try_from(hours).unwrap_or(u32::MAX),
            days: u32::try_from(days).unwrap_or(u32::MAX),
            months: u16::try_from(months).unwrap_or(u16::MAX),
            weekdays: u8::try_from(weekdays).unwrap_or(u8::MAX),
            any_day: fields[2].starts_with('*'),
            any_weekday: fields[4].starts_with('*'),
        };
        let probe = NaiveDate::from_ymd_opt(2000, 1, 1).unwrap_or_default();
        if cron.next_day(probe).is_none() {
            return Err(bad(text, "it never matches a date (no month has that day)"));
        }
        Ok(cron)
    }

    /// The expression as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The first time strictly after `after` that the expression names,
    /// as a wall-clock time in `after`'s zone (see the module docs for
    /// daylight-saving changes).
    pub fn next_after<Tz: TimeZone>(&self, after: &DateTime<Tz>) -> Option<DateTime<Tz>> {
        let tz = after.timezone();
        let local = after.naive_local();
        // The next whole minute of the wall clock; a time skipped by a
        // change may map back to before `after`, so candidates are
        // compared as instants.
        let mut day = local.date();
        let mut from = (local.hour(), local.minute() + 1);
        let end = day + Duration::days(HORIZON_DAYS);
        while day <= end {
            let d = self.next_day(day)?;
            if d != day {
                from = (0, 0);
            }
            day = d;
            for h in (from.0..24).filter(|h| self.hours & (1 << h) != 0) {
                let first = if h == from.0 { from.1 } else { 0 };
                for m in (first..60).filter(|m| self.minutes & (1 << m) != 0) {
                    let naive = day.and_hms_opt(h, m, 0)?;
                    if let Some(t) = resolve(&tz, naive)
                        && t > *after
                    {
                        return Some(t);
                    }
                }
            }
            day = day.succ_opt()?;
            from = (0, 0);
        }
        None
    }

    /// The first day on or after `from` whose month and day match.
    fn next_day(&self, from: NaiveDate) -> Option<NaiveDate> {
        let mut d = from;
        for _ in 0..HORIZON_DAYS {
            if self.day_matches(d) {
                return Some(d);
            }
            d = d.succ_opt()?;
        }
        None
    }

    fn day_matches(&self, d: NaiveDate) -> bool {
        if self.months & (1 << d.month()) == 0 {
            return false;
        }
        let dom = self.days & (1 << d.day()) != 0;
        let dow = self.weekdays & (1 << d.weekday().num_days_from_sunday()) != 0;
        match (self.any_day, self.any_weekday) {
            (false, false) => dom || dow,
            _ => dom && dow,
        }
    }
}

impl std::fmt::Display for Cron {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// The instant a wall-clock time names: its first occurrence when it
/// occurs twice, and the end of the gap when the clock skipped it.
fn resolve<Tz: TimeZone>(tz: &Tz, naive: NaiveDateTime) -> Option<DateTime<Tz>> {
    match tz.from_local_datetime(&naive) {
        LocalResult::Single(t) => Some(t),
        // The earlier of the two, by instant: not every zone source gives
        // them in order.
        LocalResult::Ambiguous(a, b) => Some(std::cmp::min(a, b)),
        LocalResult::None => {
            // Skipped: the first minute after it that exists is the
            // change itself (gaps are whole minutes in every zone in use).
            let mut probe = naive;
            for _ in 0..(24 * 60) {
                probe += Duration::minutes(1);
                match tz.from_local_datetime(&probe) {
                    LocalResult::Single(t) => return Some(t),
                    LocalResult::Ambiguous(a, b) => return Some(std::cmp::min(a, b)),
                    LocalResult::None => {}
                }
            }
            None
        }
    }
}

fn bad(text: &str, why: impl std::fmt::Display) -> Error {
    Error::InvalidInput(format!("schedule {text:?}: {why}"))
}

/// One field as a bit set of the values it names.
fn field(text: &str, f: &str, what: &str, lo: u32, hi: u32, names: &[&str]) -> Result<u64> {
    let value = |s: &str| -> Result<u32> {
        if let Some(i) = names.iter().position(|n| s.eq_ignore_ascii_case(n)) {
            return Ok(u32::try_from(i).unwrap_or(0) + u32::from(lo == 1));
        }
        let v: u32 = s.parse().map_err(|_| {
            bad(
                text,
                format!("{what} {s:?} is not a number{}", name_hint(names)),
            )
        })?;
        if v < lo || v > hi {
            return Err(bad(text, format!("{what} {v} is out of range {lo}-{hi}")));
        }
        Ok(v)
    };
    let mut bits = 0u64;
    for item in f.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => {
                let step: u32 = s.parse().ok().filter(|&n| n > 0).ok_or_else(|| {
                    bad(
                        text,
                        format!("{what} step {s:?} is not a whole number above 0"),
                    )
                })?;
                (r, step)
            }
            None => (item, 1),
        };
        let (a, b) = if range == "*" {
            (lo, if names == WEEKDAYS { 6 } else { hi })
        } else if let Some((a, b)) = range.split_once('-') {
            (value(a)?, value(b)?)
        } else if item.contains('/') {
            // `a/n`: from a to the end, every n (cronie's reading).
            (value(range)?, hi)
        } else {
            let v = value(range)?;
            (v, v)
        };
        if a > b {
            return Err(bad(
                text,
                format!("{what} range {a}-{b} runs backwards; write it as {b}-{a} or a list"),
            ));
        }
        let mut v = a;
        while v <= b {
            bits |= 1 << v;
            v += step;
        }
    }
    Ok(bits)
}

fn name_hint(names: &[&str]) -> String {
    if names.is_empty() {
        String::new()
    } else {
        format!(" or a name ({}-{})", names[0], names[names.len() - 1])
    }
}

#[cfg(test)]
mod tests {
    use super::Cron;
    use chrono::{TimeZone, Utc};

    fn next(expr: &str, from: (i32, u32, u32, u32, u32)) -> String {
        let t = Utc
            .with_ymd_and_hms(from.0, from.1, from.2, from.3, from.4, 0)
            .unwrap();
        Cron::parse(expr)
            .unwrap()
            .next_after(&t)
            .unwrap()
            .format("%Y-%m-%d %H:%M %a")
            .to_string()
    }

    #[test]
    fn the_seed_table_names_the_times_cron_would() {
        // Seed 002's crontab, from Tuesday 2026-12-01 12:00.
        let at = (2026, 12, 1, 12, 0);
        assert_eq!(next("0 2 * * *", at), "2026-12-02 02:00 Wed");
        assert_eq!(next("0 3 * * 0", at), "2026-12-06 03:00 Sun");
        assert_eq!(next("0 4 1 * *", at), "2027-01-01 04:00 Fri");
        assert_eq!(next("0 5 * * 0", at), "2026-12-06 05:00 Sun");
        assert_eq!(next("0 6 * * *", at), "2026-12-02 06:00 Wed");
    }

    #[test]
    fn fields_read_as_crontab_reads_them() {
        let at = (2026, 12, 1, 12, 7);
        assert_eq!(next("*/15 * * * *", at), "2026-12-01 12:15 Tue");
        assert_eq!(next("5-10/2 * * * *", at), "2026-12-01 12:09 Tue");
        assert_eq!(
            next("0 9 * * mon-fri", (2026, 12, 4, 10, 0)),
            "2026-12-07 09:00 Mon"
        );
        assert_eq!(next("0 0 * * 7", at), "2026-12-06 00:00 Sun");
        assert_eq!(next("0 0 1 jan *", at), "2027-01-01 00:00 Fri");
        assert_eq!(next("@weekly", at), "2026-12-06 00:00 Sun");
        assert_eq!(next("0 0 29 2 *", at), "2028-02-29 00:00 Tue");
        // Both day fields restricted: either matches (the 15th, or a Monday).
        assert_eq!(next("0 0 15 * 1", at), "2026-12-07 00:00 Mon");
        // Only the day of month restricted: it alone decides.
        assert_eq!(next("0 0 13 * *", at), "2026-12-13 00:00 Sun");
        assert_eq!(
            next("0 0 */1 * 5", (2026, 11, 1, 0, 0)),
            "2026-11-06 00:00 Fri"
        );
        // Strictly after: a time exactly on the schedule moves on.
        assert_eq!(
            next("0 2 * * *", (2026, 12, 2, 2, 0)),
            "2026-12-03 02:00 Thu"
        );
    }

    #[test]
    fn bad_expressions_say_what_is_wrong() {
        for (expr, says) in [
            ("0 2 * *", "4 field(s)"),
            ("0 25 * * *", "hour 25 is out of range 0-23"),
            ("61 * * * *", "minute 61 is out of range 0-59"),
            (
                "0 0 * * funday",
                "day of week \"funday\" is not a number or a name (sun-sat)",
            ),
            ("*/0 * * * *", "step \"0\""),
            ("0 0 10-5 * *", "runs backwards"),
            ("0 0 30 2 *", "never matches a date"),
            ("@reboot", "@reboot is not a schedule"),
        ] {
            let e = Cron::parse(expr).unwrap_err().to_string();
            assert!(e.contains(says), "{expr}: {e}");
        }
    }
}
