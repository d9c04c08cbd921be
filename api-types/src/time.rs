//! `Time` and `MicroTime`: RFC 3339 timestamps at upstream precision.
//!
//! `Time` serializes to whole seconds in UTC (`2024-05-01T12:00:00Z`), `MicroTime` to
//! microseconds (`2024-05-01T12:00:00.000000Z`), exactly as upstream's `metav1.Time` and
//! `metav1.MicroTime`. Parsing accepts any RFC 3339 timestamp (fractional seconds, offsets).

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Why a string is not an RFC 3339 timestamp.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("parsing time {input:?} as RFC 3339: {reason}")]
pub struct TimeError {
    input: String,
    reason: &'static str,
}

/// An instant with nanosecond resolution, counted from the Unix epoch in UTC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Instant {
    secs: i64,
    nanos: u32,
}

/// Go's zero `time.Time` (0001-01-01T00:00:00Z), which upstream serializes as `null`.
const GO_ZERO_SECS: i64 = -62_135_596_800;

impl Default for Instant {
    fn default() -> Self {
        Instant {
            secs: GO_ZERO_SECS,
            nanos: 0,
        }
    }
}

// Days from 1970-01-01 to the civil date (proleptic Gregorian), after H. Hinnant.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

fn parse_rfc3339(s: &str) -> Result<Instant, TimeError> {
    let err = |reason| TimeError {
        input: s.to_owned(),
        reason,
    };
    let b = s.as_bytes();
    let num = |from: usize, len: usize| -> Result<u32, TimeError> {
        let part = b.get(from..from + len).ok_or_else(|| err("too short"))?;
        if !part.iter().all(u8::is_ascii_digit) {
            return Err(err("expected digits"));
        }
        Ok(part.iter().fold(0u32, |a, c| a * 10 + u32::from(c - b'0')))
    };
    let sep = |at: usize, c: u8| -> Result<(), TimeError> {
        if b.get(at) == Some(&c) {
            Ok(())
        } else {
            Err(err("unexpected separator"))
        }
    };
    let year = i64::from(num(0, 4)?);
    sep(4, b'-')?;
    let month = num(5, 2)?;
    sep(7, b'-')?;
    let day = num(8, 2)?;
    sep(10, b'T')?;
    let hour = num(11, 2)?;
    sep(13, b':')?;
    let min = num(14, 2)?;
    sep(16, b':')?;
    let sec = num(17, 2)?;
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return Err(err("day or month out of range"));
    }
    if hour > 23 || min > 59 || sec > 59 {
        return Err(err("hour, minute or second out of range"));
    }
    let mut i = 19;
    let mut nanos = 0u32;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            if i - start < 9 {
                nanos = nanos * 10 + u32::from(b[i] - b'0');
            }
            i += 1;
        }
        if i == start {
            return Err(err("empty fractional second"));
        }
        for _ in (i - start)..9 {
            nanos *= 10;
        }
    }
    let offset: i64 = match b.get(i) {
        Some(b'Z') if i + 1 == b.len() => 0,
        Some(c @ (b'+' | b'-')) if i + 6 == b.len() => {
            let h = i64::from(num(i + 1, 2)?);
            sep(i + 3, b':')?;
            let m = i64::from(num(i + 4, 2)?);
            if h > 23 || m > 59 {
                return Err(err("time zone offset out of range"));
            }
            let o = h * 3600 + m * 60;
            if *c == b'-' {
                -o
            } else {
                o
            }
        }
        _ => return Err(err("expected Z or a ±hh:mm offset at the end")),
    };
    let days = days_from_civil(year, month, day);
    let secs =
        days * 86_400 + i64::from(hour) * 3600 + i64::from(min) * 60 + i64::from(sec) - offset;
    Ok(Instant { secs, nanos })
}

fn write_rfc3339(f: &mut fmt::Formatter<'_>, t: Instant, micros: bool) -> fmt::Result {
    let days = t.secs.div_euclid(86_400);
    let rem = t.secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    if !(0..=9999).contains(&y) {
        write!(
            f,
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
            rem / 3600,
            rem % 3600 / 60,
            rem % 60
        )?;
        if micros {
            write!(f, ".{:06}", t.nanos / 1000)?;
        }
        return f.write_str("Z");
    }
    // Hand-formatted: this runs for every timestamp of every object served.
    let mut buf = *b"0000-00-00T00:00:00.000000Z";
    let mut put = |at: usize, width: usize, mut v: u64| {
        for i in (at..at + width).rev() {
            buf[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, 4, y as u64);
    put(5, 2, u64::from(m));
    put(8, 2, u64::from(d));
    put(11, 2, (rem / 3600) as u64);
    put(14, 2, (rem % 3600 / 60) as u64);
    put(17, 2, (rem % 60) as u64);
    let text = if micros {
        put(20, 6, u64::from(t.nanos / 1000));
        &buf[..]
    } else {
        buf[19] = b'Z';
        &buf[..20]
    };
    f.write_str(std::str::from_utf8(text).map_err(|_| fmt::Error)?)
}

macro_rules! timestamp {
    ($name:ident, $micros:expr, $doc:literal, $schema:literal) => {
        #[doc = $doc]
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(Instant);

        impl $name {
            /// The current time, truncated to this type's precision.
            pub fn now() -> Self {
                Self::from(SystemTime::now())
            }

            /// Seconds since the Unix epoch.
            pub fn unix_seconds(&self) -> i64 {
                self.0.secs
            }

            /// Nanoseconds within the second.
            pub fn subsec_nanos(&self) -> u32 {
                self.0.nanos
            }

            /// Whether this is Go's zero time (the `Default`), which serializes as `null`.
            pub fn is_zero(&self) -> bool {
                self.0 == Instant::default()
            }

            /// The time at `secs` seconds (and `nanos`) after the Unix epoch.
            pub fn from_unix(secs: i64, nanos: u32) -> Self {
                let t = Instant { secs, nanos: nanos.min(999_999_999) };
                Self(Self::truncate(t))
            }

            fn truncate(t: Instant) -> Instant {
                if $micros {
                    Instant { secs: t.secs, nanos: t.nanos / 1000 * 1000 }
                } else {
                    Instant { secs: t.secs, nanos: 0 }
                }
            }

            /// Time elapsed from `earlier` to `self` (zero if `earlier` is later).
            pub fn duration_since(&self, earlier: &Self) -> Duration {
                let a = i128::from(self.0.secs) * 1_000_000_000 + i128::from(self.0.nanos);
                let b = i128::from(earlier.0.secs) * 1_000_000_000 + i128::from(earlier.0.nanos);
                Duration::from_nanos(u64::try_from((a - b).max(0)).unwrap_or(u64::MAX))
            }
        }

        impl From<SystemTime> for $name {
            fn from(t: SystemTime) -> Self {
                let i = match t.duration_since(UNIX_EPOCH) {
                    Ok(d) => Instant { secs: d.as_secs() as i64, nanos: d.subsec_nanos() },
                    Err(e) => {
                        let d = e.duration();
                        let (s, n) = (d.as_secs() as i64, d.subsec_nanos());
                        if n == 0 {
                            Instant { secs: -s, nanos: 0 }
                        } else {
                            Instant { secs: -s - 1, nanos: 1_000_000_000 - n }
                        }
                    }
                };
                Self(Self::truncate(i))
            }
        }

        impl From<$name> for SystemTime {
            fn from(t: $name) -> SystemTime {
                let base = if t.0.secs >= 0 {
                    UNIX_EPOCH + Duration::from_secs(t.0.secs as u64)
                } else {
                    UNIX_EPOCH - Duration::from_secs(t.0.secs.unsigned_abs())
                };
                base + Duration::from_nanos(u64::from(t.0.nanos))
            }
        }

        impl FromStr for $name {
            type Err = TimeError;
            fn from_str(s: &str) -> Result<Self, TimeError> {
                parse_rfc3339(s).map(|t| Self(Self::truncate(t)))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write_rfc3339(f, self.0, $micros)
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                if self.is_zero() {
                    s.serialize_none()
                } else {
                    s.collect_str(self)
                }
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                match <Option<std::borrow::Cow<'de, str>>>::deserialize(d)? {
                    None => Ok(Self::default()),
                    Some(s) => s.parse().map_err(serde::de::Error::custom),
                }
            }
        }

        #[cfg(feature = "schemars")]
        impl schemars::JsonSchema for $name {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                $schema.into()
            }
            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                schemars::json_schema!({ "type": "string", "format": "date-time" })
            }
        }
    };
}

timestamp!(
    Time,
    false,
    "A timestamp serialized to the second in UTC (upstream `metav1.Time`), e.g. `2024-05-01T12:00:00Z`; the default is Go's zero time, serialized as `null`.",
    "Time"
);
timestamp!(
    MicroTime,
    true,
    "A timestamp serialized to the microsecond in UTC (upstream `metav1.MicroTime`), e.g. `2024-05-01T12:00:00.123456Z`.",
    "MicroTime"
);

impl From<MicroTime> for Time {
    fn from(t: MicroTime) -> Time {
        Time(Time::truncate(t.0))
    }
}

impl From<Time> for MicroTime {
    fn from(t: Time) -> MicroTime {
        MicroTime(t.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_at_upstream_precision() {
        let t: Time = "2024-02-29T23:59:58.987654321Z".parse().unwrap();
        assert_eq!(t.to_string(), "2024-02-29T23:59:58Z");
        let m: MicroTime = "2024-02-29T23:59:58.987654321Z".parse().unwrap();
        assert_eq!(m.to_string(), "2024-02-29T23:59:58.987654Z");
        let o: Time = "2024-03-01T01:00:00+02:00".parse().unwrap();
        assert_eq!(o.to_string(), "2024-02-29T23:00:00Z");
        let epoch: Time = "1970-01-01T00:00:00Z".parse().unwrap();
        assert_eq!(epoch.unix_seconds(), 0);
        let old: Time = "1969-12-31T23:59:59Z".parse().unwrap();
        assert_eq!(old.unix_seconds(), -1);
        assert_eq!(old.to_string(), "1969-12-31T23:59:59Z");
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "2024-02-30T00:00:00Z",
            "2024-01-01 00:00:00Z",
            "2024-01-01T00:00:00",
            "2024-01-01T24:00:00Z",
            "2024-01-01T00:00:00.Z",
        ] {
            assert!(bad.parse::<Time>().is_err(), "{bad}");
        }
    }

    #[test]
    fn zero_time_is_null() {
        assert!(Time::default().is_zero());
        assert_eq!(serde_json::to_string(&Time::default()).unwrap(), "null");
        assert!(serde_json::from_str::<Time>("null").unwrap().is_zero());
        assert_eq!(Time::default().unix_seconds(), GO_ZERO_SECS);
        assert!(!Time::from_unix(0, 0).is_zero());
    }

    #[test]
    fn system_time_round_trip() {
        let now = MicroTime::now();
        let back = MicroTime::from(SystemTime::from(now));
        assert_eq!(now, back);
        let s = serde_json::to_string(&now).unwrap();
        assert_eq!(serde_json::from_str::<MicroTime>(&s).unwrap(), now);
    }
}
