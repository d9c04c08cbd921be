//! Cron schedules as CronJobs write them: five fields (minute, hour, day of month, month, day
//! of week) with `*`, lists, ranges, steps and names (`JAN`, `MON`), `?` as `*`, and the
//! `@yearly`, `@annually`, `@monthly`, `@weekly`, `@daily`, `@midnight` and `@hourly` macros.
//! As in Vixie cron (and upstream's robfig/cron), when both day fields are restricted a day
//! matching either runs. Times are found in a time zone (the CronJob's `timeZone`, or UTC).

use jiff::civil::{Date, DateTime};
use jiff::tz::TimeZone;
use jiff::Timestamp;

/// Why a schedule does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unparseable schedule {schedule:?}: {reason}")]
pub struct ScheduleError {
    schedule: String,
    reason: String,
}

/// A parsed schedule: the allowed values of each field as bit sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    minutes: u64,
    hours: u64,
    days: u64,
    months: u64,
    weekdays: u64,
    /// Whether the day-of-month field was `*` (then only the weekday restricts days).
    any_day: bool,
    /// Whether the day-of-week field was `*`.
    any_weekday: bool,
}

const MONTHS: &[&str] = &[
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const WEEKDAYS: &[&str] = &["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

fn field(
    text: &str,
    min: u32,
    max: u32,
    names: &[&str],
    name_base: u32,
) -> Result<(u64, bool), String> {
    let mut bits = 0u64;
    let mut star = false;
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => {
                let s: u32 = s.parse().map_err(|_| format!("bad step {s:?}"))?;
                if s == 0 {
                    return Err("a step must be positive".into());
                }
                (r, Some(s))
            }
            None => (part, None),
        };
        let value = |v: &str| -> Result<u32, String> {
            if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(v)) {
                return Ok(u32::try_from(i).unwrap_or(0) + name_base);
            }
            v.parse::<u32>().map_err(|_| format!("bad value {v:?}"))
        };
        let (lo, hi) = if range == "*" || range == "?" {
            if step.is_none() && part == range {
                star = true;
            }
            (min, max)
        } else if let Some((a, b)) = range.split_once('-') {
            (value(a)?, value(b)?)
        } else {
            let v = value(range)?;
            // `N/step` runs from N to the end of the range.
            (v, if step.is_some() { max } else { v })
        };
        if lo < min || hi > max || lo > hi {
            return Err(format!("{part:?} is outside {min}-{max}"));
        }
        let step = step.unwrap_or(1);
        let mut v = lo;
        while v <= hi {
            bits |= 1 << v;
            v += step;
        }
    }
    Ok((bits, star))
}

impl std::str::FromStr for Schedule {
    type Err = ScheduleError;

    fn from_str(s: &str) -> Result<Self, ScheduleError> {
        let err = |reason: String| ScheduleError {
            schedule: s.to_owned(),
            reason,
        };
        let text = match s.trim() {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            t if t.starts_with('@') => return Err(err(format!("unrecognized descriptor {t:?}"))),
            t => t,
        };
        let fields: Vec<&str> = text.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(err(format!(
                "expected exactly 5 fields, found {}",
                fields.len()
            )));
        }
        let (minutes, _) = field(fields[0], 0, 59, &[], 0).map_err(err)?;
        let (hours, _) = field(fields[1], 0, 23, &[], 0).map_err(err)?;
        let (days, any_day) = field(fields[2], 1, 31, &[], 0).map_err(err)?;
        let (months, _) = field(fields[3], 1, 12, MONTHS, 1).map_err(err)?;
        let (mut weekdays, any_weekday) = field(fields[4], 0, 7, WEEKDAYS, 0).map_err(err)?;
        // 7 is Sunday too.
        if weekdays & (1 << 7) != 0 {
            weekdays |= 1;
        }
        Ok(Schedule {
            minutes,
            hours,
            days,
            months,
            weekdays,
            any_day,
            any_weekday,
        })
    }
}

impl Schedule {
    fn day_matches(&self, d: Date) -> bool {
        let dom = self.days & (1 << d.day()) != 0;
        let dow = self.weekdays & (1 << d.weekday().to_sunday_zero_offset()) != 0;
        match (self.any_day, self.any_weekday) {
            (true, true) => true,
            (true, false) => dow,
            (false, true) => dom,
            (false, false) => dom || dow,
        }
    }

    /// The first time strictly after `after` the schedule fires, in `tz` (`None` if none
    /// within five years, as for `0 0 30 2 *`).
    pub fn next_after(&self, after: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        let start = after.to_zoned(tz.clone()).datetime();
        let mut day = start.date();
        let limit = day.checked_add(jiff::Span::new().years(5)).ok()?;
        while day <= limit {
            if self.months & (1 << day.month()) != 0 && self.day_matches(day) {
                for h in 0..24i8 {
                    if self.hours & (1 << h) == 0 {
                        continue;
                    }
                    for m in 0..60i8 {
                        if self.minutes & (1 << m) == 0 {
                            continue;
                        }
                        let dt = DateTime::from_parts(day, jiff::civil::time(h, m, 0, 0));
                        // A local time a DST change skips or repeats: its earlier instant.
                        let Ok(z) = dt.to_zoned(tz.clone()) else {
                            continue;
                        };
                        let t = z.timestamp();
                        if t > after {
                            return Some(t);
                        }
                    }
                }
            }
            day = day.tomorrow().ok()?;
        }
        None
    }

    /// The most recent time at or before `now` and strictly after `since` the schedule fired,
    /// and how many times it fired in that span (up to `cap`).
    pub fn most_recent(
        &self,
        since: Timestamp,
        now: Timestamp,
        tz: &TimeZone,
        cap: usize,
    ) -> (Option<Timestamp>, usize) {
        let mut last = None;
        let mut count = 0;
        let mut t = since;
        while let Some(next) = self.next_after(t, tz) {
            if next > now {
                break;
            }
            last = Some(next);
            count += 1;
            if count >= cap {
                // Too many missed: jump to the last one before now.
                let mut probe = next;
                while let Some(n) = self.next_after(probe, tz) {
                    if n > now {
                        break;
                    }
                    probe = n;
                }
                return (Some(probe), count);
            }
            t = next;
        }
        (last, count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap_or(Timestamp::UNIX_EPOCH)
    }

    #[test]
    fn fields_macros_and_names() {
        let every5: Schedule = "*/5 * * * *".parse().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            every5.next_after(ts("2026-01-01T00:03:00Z"), &TimeZone::UTC),
            Some(ts("2026-01-01T00:05:00Z"))
        );
        let hourly: Schedule = "@hourly".parse().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            hourly.next_after(ts("2026-01-01T00:00:00Z"), &TimeZone::UTC),
            Some(ts("2026-01-01T01:00:00Z"))
        );
        let weekdays: Schedule = "30 9 * JAN-MAR MON-FRI"
            .parse()
            .unwrap_or_else(|e| panic!("{e}"));
        // 2026-01-03 is a Saturday: the next run is Monday the 5th.
        assert_eq!(
            weekdays.next_after(ts("2026-01-02T10:00:00Z"), &TimeZone::UTC),
            Some(ts("2026-01-05T09:30:00Z"))
        );
        // Both day fields restricted: either matches (the 1st, or any Friday).
        let either: Schedule = "0 0 1 * 5".parse().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            either.next_after(ts("2026-01-01T00:00:00Z"), &TimeZone::UTC),
            Some(ts("2026-01-02T00:00:00Z"))
        );
        let never: Schedule = "0 0 30 2 *".parse().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            never.next_after(ts("2026-01-01T00:00:00Z"), &TimeZone::UTC),
            None
        );
        for bad in [
            "* * * *",
            "60 * * * *",
            "*/0 * * * *",
            "@often",
            "a * * * *",
            "5-1 * * * *",
        ] {
            assert!(bad.parse::<Schedule>().is_err(), "{bad}");
        }
    }

    #[test]
    fn time_zones_shift_the_wall_clock() {
        let daily: Schedule = "0 9 * * *".parse().unwrap_or_else(|e| panic!("{e}"));
        let Ok(tokyo) = TimeZone::get("Asia/Tokyo") else {
            return; // no tz database on this machine
        };
        assert_eq!(
            daily.next_after(ts("2026-01-01T00:30:00Z"), &tokyo),
            Some(ts("2026-01-02T00:00:00Z"))
        );
    }

    #[test]
    fn most_recent_counts_missed_runs() {
        let every: Schedule = "* * * * *".parse().unwrap_or_else(|e| panic!("{e}"));
        let (last, n) = every.most_recent(
            ts("2026-01-01T00:00:00Z"),
            ts("2026-01-01T00:05:30Z"),
            &TimeZone::UTC,
            100,
        );
        assert_eq!((last, n), (Some(ts("2026-01-01T00:05:00Z")), 5));
    }

    proptest! {
        #[test]
        fn parsing_never_panics(s in "\\PC{0,40}") {
            let _ = s.parse::<Schedule>();
        }

        #[test]
        fn the_next_run_matches_and_nothing_earlier_does(
            m in 0u32..60, h in 0u32..24, step in 1u32..30, start in 0i64..200_000_000,
        ) {
            let text = format!("{m}/{step} {h} * * *");
            let s: Schedule = text.parse().unwrap_or_else(|e| panic!("{e}"));
            let after = Timestamp::from_second(1_700_000_000 + start).unwrap_or(Timestamp::UNIX_EPOCH);
            let next = s.next_after(after, &TimeZone::UTC).unwrap_or_else(|| panic!("no run"));
            prop_assert!(next > after);
            let dt = next.to_zoned(TimeZone::UTC).datetime();
            prop_assert_eq!(u32::try_from(dt.hour()).unwrap_or(99), h);
            let minute = u32::try_from(dt.minute()).unwrap_or(99);
            prop_assert!(minute >= m && (minute - m) % step == 0);
            prop_assert!(next.as_second() - after.as_second() <= 86_400 + 60);
        }
    }
}
