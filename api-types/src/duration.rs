//! `Duration` (upstream `metav1.Duration`): a Go duration string on the wire (`1h30m0s`, `500ms`).

use std::fmt;
use std::str::FromStr;

/// A signed span of time with nanosecond resolution, written as Go's `time.Duration.String()`.
///
/// ```
/// use bosun_api_types::Duration;
/// let d: Duration = "1h30m".parse().unwrap();
/// assert_eq!(d.to_string(), "1h30m0s");
/// assert_eq!("1.5ms".parse::<Duration>().unwrap().as_nanos(), 1_500_000);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration(i64);

/// Why a string is not a Go duration.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("time: invalid duration {0:?}")]
pub struct DurationError(String);

impl Duration {
    /// A duration of `nanos` nanoseconds.
    pub const fn from_nanos(nanos: i64) -> Self {
        Duration(nanos)
    }

    /// A duration of whole seconds.
    pub const fn from_secs(secs: i64) -> Self {
        Duration(secs.saturating_mul(1_000_000_000))
    }

    /// Nanoseconds.
    pub const fn as_nanos(&self) -> i64 {
        self.0
    }

    /// The duration as a `std::time::Duration` (negative durations become zero).
    pub fn to_std(&self) -> std::time::Duration {
        std::time::Duration::from_nanos(u64::try_from(self.0).unwrap_or(0))
    }
}

impl From<std::time::Duration> for Duration {
    fn from(d: std::time::Duration) -> Self {
        Duration(i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
    }
}

impl FromStr for Duration {
    type Err = DurationError;

    /// Go's `time.ParseDuration`: `[-+]?([0-9]*(\.[0-9]*)?(ns|us|µs|μs|ms|s|m|h))+`, or `0`.
    fn from_str(s: &str) -> Result<Self, DurationError> {
        let err = || DurationError(s.to_owned());
        let (neg, mut rest) = match s.as_bytes().first() {
            Some(b'-') => (true, &s[1..]),
            Some(b'+') => (false, &s[1..]),
            _ => (false, s),
        };
        if rest == "0" {
            return Ok(Duration(0));
        }
        if rest.is_empty() {
            return Err(err());
        }
        let mut total: u128 = 0;
        while !rest.is_empty() {
            let int_len = rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len());
            let (int_part, after) = rest.split_at(int_len);
            let (frac_part, after) = match after.strip_prefix('.') {
                Some(a) => {
                    let n = a.find(|c: char| !c.is_ascii_digit()).unwrap_or(a.len());
                    a.split_at(n)
                }
                None => ("", after),
            };
            if int_part.is_empty() && frac_part.is_empty() {
                return Err(err());
            }
            let unit_len = after
                .find(|c: char| c.is_ascii_digit() || c == '.')
                .unwrap_or(after.len());
            let (unit, after) = after.split_at(unit_len);
            let scale: u128 = match unit {
                "ns" => 1,
                "us" | "µs" | "μs" => 1_000,
                "ms" => 1_000_000,
                "s" => 1_000_000_000,
                "m" => 60_000_000_000,
                "h" => 3_600_000_000_000,
                _ => return Err(err()),
            };
            let int: u128 = if int_part.is_empty() {
                0
            } else {
                int_part.parse().map_err(|_| err())?
            };
            let mut v = int.checked_mul(scale).ok_or_else(err)?;
            // Fractional digits, truncated toward zero like Go.
            let mut place = scale;
            for c in frac_part.bytes().take(30) {
                place /= 10;
                v += u128::from(c - b'0') * place;
            }
            total = total.checked_add(v).ok_or_else(err)?;
            rest = after;
        }
        let total = i64::try_from(total).map_err(|_| err())?;
        Ok(Duration(if neg { -total } else { total }))
    }
}

/// Go's `fmtFrac`: the fraction of `v / 10^prec` without trailing zeros, and the integer part.
fn frac(v: u64, prec: u32) -> (String, u64) {
    let mut digits = Vec::new();
    let mut v = v;
    let mut print = false;
    for _ in 0..prec {
        let d = (v % 10) as u8;
        print = print || d != 0;
        if print {
            digits.push(b'0' + d);
        }
        v /= 10;
    }
    if print {
        digits.push(b'.');
    }
    digits.reverse();
    (String::from_utf8(digits).unwrap_or_default(), v)
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let u = self.0.unsigned_abs();
        let sign = if self.0 < 0 { "-" } else { "" };
        if u == 0 {
            return f.write_str("0s");
        }
        if u < 1_000_000_000 {
            let (prec, unit) = match u {
                _ if u < 1_000 => (0, "ns"),
                _ if u < 1_000_000 => (3, "µs"),
                _ => (6, "ms"),
            };
            let (fr, int) = frac(u, prec);
            return write!(f, "{sign}{int}{fr}{unit}");
        }
        let (fr, secs) = frac(u, 9);
        let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
        if h > 0 {
            write!(f, "{sign}{h}h{m}m{s}{fr}s")
        } else if m > 0 {
            write!(f, "{sign}{m}m{s}{fr}s")
        } else {
            write!(f, "{sign}{s}{fr}s")
        }
    }
}

impl serde::Serialize for Duration {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Duration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(feature = "schemars")]
impl schemars::JsonSchema for Duration {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "type": "string" })
    }
}

impl crate::proto::Message for Duration {
    const NAME: &'static str = "v1.Duration";
    fn encode_fields(&self, buf: &mut Vec<u8>) {
        crate::proto::put_field(buf, 1, &self.0);
    }
    fn merge_field(
        &mut self,
        field: u32,
        wire: crate::proto::WireType,
        r: &mut crate::proto::Reader<'_>,
    ) -> Result<(), crate::proto::ProtoError> {
        match field {
            1 => self.0 = crate::proto::get_field(Self::NAME, field, wire, r)?,
            _ => r.skip(wire)?,
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_go() {
        for (nanos, want) in [
            (0, "0s"),
            (1, "1ns"),
            (1_100, "1.1µs"),
            (2_200_000, "2.2ms"),
            (3_300_000_000, "3.3s"),
            (60_000_000_000, "1m0s"),
            (4 * 60_000_000_000 + 5_000_000_000, "4m5s"),
            (3_600_000_000_000, "1h0m0s"),
            (5_400_000_000_000 + 1, "1h30m0.000000001s"),
            (-1_500_000_000, "-1.5s"),
        ] {
            assert_eq!(Duration(nanos).to_string(), want);
            assert_eq!(want.parse::<Duration>().unwrap(), Duration(nanos), "{want}");
        }
    }

    #[test]
    fn parses_go_syntax() {
        assert_eq!("1h30m".parse::<Duration>().unwrap().to_string(), "1h30m0s");
        assert_eq!("300ms".parse::<Duration>().unwrap().as_nanos(), 300_000_000);
        assert_eq!("1us".parse::<Duration>().unwrap().as_nanos(), 1_000);
        assert_eq!(".5s".parse::<Duration>().unwrap().as_nanos(), 500_000_000);
        assert_eq!("0".parse::<Duration>().unwrap().as_nanos(), 0);
        assert_eq!("1.h".parse::<Duration>().unwrap().to_string(), "1h0m0s");
        for bad in ["", "1", "1d", "h", ".s", "--1s", "1s2", "9999999999999h"] {
            assert!(bad.parse::<Duration>().is_err(), "{bad}");
        }
    }
}
