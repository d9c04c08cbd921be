//! `Quantity`: a fixed-point number with an SI or binary suffix (`500m`, `1536Mi`, `1e3`).
//!
//! Semantics follow upstream `k8s.io/apimachinery/pkg/api/resource`:
//! - parsing accepts `[+-]digits[.digits][suffix]` where the suffix is a decimal SI suffix
//!   (`n u m "" k M G T P E`), a binary SI suffix (`Ki Mi Gi Ti Pi Ei`) or a decimal exponent
//!   (`e3`, `E-2`);
//! - values are exact to the nano (10⁻⁹); anything finer is rounded away from zero;
//! - the value serializes in canonical form: no fractional digits, the largest suffix that loses
//!   no precision, in the format (decimal SI, binary SI, exponent) the value was written in
//!   (`"1000m"` → `"1"`, `"0.5"` → `"500m"`, `"1536Mi"` stays, `"1.5Gi"` → `"1536Mi"`).
//!
//! Arithmetic and comparison are exact on the value; two quantities compare equal when their
//! values are equal, whatever format they were written in (`1Ki == 1024`).

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;

/// Nano units per one unit.
const NANO: i128 = 1_000_000_000;

/// How a [`Quantity`] is written when serialized.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum QuantityFormat {
    /// `12e6`.
    DecimalExponent,
    /// `12Mi` (12 × 2²⁰).
    BinarySI,
    /// `12M` (12 × 10⁶), and plain numbers.
    #[default]
    DecimalSI,
}

/// Why a string is not a quantity.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    /// The string does not have the form `[+-]digits[.digits][suffix]`.
    #[error("quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'")]
    Format,
    /// The suffix is not one of the known SI, binary or exponent suffixes.
    #[error("unable to parse quantity's suffix")]
    Suffix,
    /// The number has no digits or is out of the representable range.
    #[error("unable to parse quantity's numeric part")]
    Numeric,
}

/// A fixed-point quantity with upstream Kubernetes semantics. See the module documentation.
///
/// ```
/// use bosun_api_types::Quantity;
///
/// let request = Quantity::parse("1500m").expect("a quantity");
/// let limit = Quantity::parse("2").expect("a quantity");
/// assert_eq!(request.milli_value(), 1500);
/// let headroom = limit.checked_sub(&request).expect("no overflow");
/// assert_eq!(headroom.to_string(), "500m"); // upstream's canonical form
/// assert_eq!(Quantity::parse("1Gi").expect("a quantity").value(), 1 << 30);
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct Quantity {
    /// Value in nano units (10⁻⁹).
    nanos: i128,
    format: QuantityFormat,
}

impl Quantity {
    /// Parses a quantity string (the same as `str::parse`).
    pub fn parse(s: &str) -> Result<Self, QuantityError> {
        s.parse()
    }

    /// A quantity of `value` units in the given format.
    pub fn from_int(value: i64, format: QuantityFormat) -> Self {
        Self {
            nanos: i128::from(value) * NANO,
            format,
        }
    }

    /// A quantity of `milli` thousandths, written in decimal SI (`Quantity::from_milli(1500)` is `1500m`).
    pub fn from_milli(milli: i64) -> Self {
        Self {
            nanos: i128::from(milli) * 1_000_000,
            format: QuantityFormat::DecimalSI,
        }
    }

    /// A quantity of `nanos` billionths, written in decimal SI.
    pub fn from_nanos(nanos: i128) -> Self {
        Self {
            nanos,
            format: QuantityFormat::DecimalSI,
        }
    }

    /// The exact value in nano units.
    pub fn as_nanos(&self) -> i128 {
        self.nanos
    }

    /// The format this quantity serializes in.
    pub fn format(&self) -> QuantityFormat {
        self.format
    }

    /// Whether the value is zero.
    pub fn is_zero(&self) -> bool {
        self.nanos == 0
    }

    /// The value rounded away from zero to a whole unit (upstream `Value()`), saturating at the
    /// `i64` range.
    pub fn value(&self) -> i64 {
        saturate(div_away(self.nanos, NANO))
    }

    /// The value in thousandths rounded away from zero (upstream `MilliValue()`), saturating.
    pub fn milli_value(&self) -> i64 {
        saturate(div_away(self.nanos, 1_000_000))
    }

    /// The value as a floating-point number (lossy).
    pub fn as_f64(&self) -> f64 {
        self.nanos as f64 / NANO as f64
    }

    /// Exact sum; `None` on overflow. The result keeps `self`'s format (or `other`'s when `self` is zero).
    pub fn checked_add(&self, other: &Quantity) -> Option<Quantity> {
        let format = if self.is_zero() {
            other.format
        } else {
            self.format
        };
        Some(Quantity {
            nanos: self.nanos.checked_add(other.nanos)?,
            format,
        })
    }

    /// Exact difference; `None` on overflow.
    pub fn checked_sub(&self, other: &Quantity) -> Option<Quantity> {
        let format = if self.is_zero() {
            other.format
        } else {
            self.format
        };
        Some(Quantity {
            nanos: self.nanos.checked_sub(other.nanos)?,
            format,
        })
    }

    /// Exact product with an integer; `None` on overflow.
    pub fn checked_mul(&self, factor: i64) -> Option<Quantity> {
        Some(Quantity {
            nanos: self.nanos.checked_mul(i128::from(factor))?,
            format: self.format,
        })
    }

    /// The negated quantity.
    pub fn neg(&self) -> Quantity {
        Quantity {
            nanos: -self.nanos,
            format: self.format,
        }
    }

    /// The canonical string (what serialization writes).
    pub fn to_canonical(&self) -> String {
        self.to_string()
    }
}

fn saturate(v: i128) -> i64 {
    i64::try_from(v).unwrap_or(if v < 0 { i64::MIN } else { i64::MAX })
}

/// Division rounding away from zero.
fn div_away(n: i128, d: i128) -> i128 {
    let q = n / d;
    if n % d != 0 {
        if n < 0 {
            q - 1
        } else {
            q + 1
        }
    } else {
        q
    }
}

impl PartialEq for Quantity {
    fn eq(&self, other: &Self) -> bool {
        self.nanos == other.nanos
    }
}
impl Eq for Quantity {}
impl PartialOrd for Quantity {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Quantity {
    fn cmp(&self, other: &Self) -> Ordering {
        self.nanos.cmp(&other.nanos)
    }
}
impl Hash for Quantity {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.nanos.hash(state);
    }
}

/// The pieces of a quantity string, as upstream's `parseQuantityString` splits them.
struct Parts<'a> {
    positive: bool,
    num: &'a str,
    denom: &'a str,
    suffix: &'a str,
}

fn split(s: &str) -> Result<Parts<'_>, QuantityError> {
    let b = s.as_bytes();
    let end = b.len();
    let mut pos = 0;
    let mut positive = true;
    if pos < end {
        match b[0] {
            b'-' => {
                positive = false;
                pos += 1;
            }
            b'+' => pos += 1,
            _ => {}
        }
    }
    let num_start = pos;
    while pos < end && b[pos].is_ascii_digit() {
        pos += 1;
    }
    let num = &s[num_start..pos];
    let mut denom = "";
    if pos < end && b[pos] == b'.' {
        pos += 1;
        let d_start = pos;
        while pos < end && b[pos].is_ascii_digit() {
            pos += 1;
        }
        denom = &s[d_start..pos];
    }
    let suffix_start = pos;
    while pos < end && b"eEinumkKMGTP".contains(&b[pos]) {
        pos += 1;
    }
    if pos < end && (b[pos] == b'-' || b[pos] == b'+') {
        pos += 1;
    }
    while pos < end && b[pos].is_ascii_digit() {
        pos += 1;
    }
    if pos != end {
        return Err(QuantityError::Format);
    }
    if num.is_empty() && denom.is_empty() {
        return Err(QuantityError::Numeric);
    }
    Ok(Parts {
        positive,
        num,
        denom,
        suffix: &s[suffix_start..end],
    })
}

/// (base, exponent, format) of a suffix.
fn interpret(suffix: &str) -> Result<(u32, i32, QuantityFormat), QuantityError> {
    use QuantityFormat::*;
    let dec = |e| Ok((10, e, DecimalSI));
    let bin = |e| Ok((2, e, BinarySI));
    match suffix {
        "" => dec(0),
        "n" => dec(-9),
        "u" => dec(-6),
        "m" => dec(-3),
        "k" => dec(3),
        "M" => dec(6),
        "G" => dec(9),
        "T" => dec(12),
        "P" => dec(15),
        "E" => dec(18),
        "Ki" => bin(10),
        "Mi" => bin(20),
        "Gi" => bin(30),
        "Ti" => bin(40),
        "Pi" => bin(50),
        "Ei" => bin(60),
        s if s.len() > 1 && (s.starts_with('e') || s.starts_with('E')) => {
            let e: i32 = s[1..].parse().map_err(|_| QuantityError::Suffix)?;
            Ok((10, e, DecimalExponent))
        }
        _ => Err(QuantityError::Suffix),
    }
}

/// Parses a run of decimal digits (leading zeros allowed) into an i128.
fn digits_to_i128(d: &str) -> Result<i128, QuantityError> {
    let mut v: i128 = 0;
    for c in d.bytes() {
        v = v
            .checked_mul(10)
            .and_then(|v| v.checked_add(i128::from(c - b'0')))
            .ok_or(QuantityError::Numeric)?;
    }
    Ok(v)
}

fn pow10(e: u32) -> Result<i128, QuantityError> {
    10i128.checked_pow(e).ok_or(QuantityError::Numeric)
}

/// Exact magnitude in nano units of `num.denom × base^exp`, rounded up.
fn magnitude_nanos(num: &str, denom: &str, base: u32, exp: i32) -> Result<i128, QuantityError> {
    let num = num.trim_start_matches('0');
    let denom = denom.trim_end_matches('0');
    // Keep at most 30 fractional digits; a non-zero digit beyond them only forces rounding up.
    let (denom, sticky) = if denom.len() > 30 {
        (&denom[..30], denom[30..].bytes().any(|c| c != b'0'))
    } else {
        (denom, false)
    };
    let mut digits = String::with_capacity(num.len() + denom.len());
    digits.push_str(num);
    digits.push_str(denom);
    let frac = denom.len() as i32;
    // value × 10⁹ = digits × 10^(9 - frac) × base^exp
    let (numer, den): (i128, i128);
    if base == 10 {
        let shift = 9 - frac + exp;
        if shift >= 0 {
            // An integer; overflow is a numeric error (too large).
            let d = digits_to_i128(&digits)?;
            numer = d
                .checked_mul(pow10(shift as u32)?)
                .ok_or(QuantityError::Numeric)?;
            den = 1;
        } else {
            let cut = (-shift) as usize;
            if cut >= digits.len() {
                let nonzero = digits.bytes().any(|c| c != b'0') || sticky;
                return Ok(i128::from(nonzero));
            }
            let (int_part, rest) = digits.split_at(digits.len() - cut);
            let v = digits_to_i128(int_part)?;
            let up = rest.bytes().any(|c| c != b'0') || sticky;
            return v.checked_add(i128::from(up)).ok_or(QuantityError::Numeric);
        }
    } else {
        let d = digits_to_i128(&digits)?;
        let two = 2i128
            .checked_pow(exp as u32)
            .ok_or(QuantityError::Numeric)?;
        numer = d
            .checked_mul(two)
            .and_then(|v| v.checked_mul(NANO))
            .ok_or(QuantityError::Numeric)?;
        den = pow10(frac as u32)?;
    }
    let q = numer / den;
    let up = numer % den != 0 || sticky;
    q.checked_add(i128::from(up)).ok_or(QuantityError::Numeric)
}

impl FromStr for Quantity {
    type Err = QuantityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // Upstream trims surrounding white space in UnmarshalJSON; ParseQuantity itself does not.
        if s.is_empty() {
            return Err(QuantityError::Format);
        }
        let parts = split(s)?;
        let (base, exp, format) = interpret(parts.suffix)?;
        let mag = magnitude_nanos(parts.num, parts.denom, base, exp)?;
        let nanos = if parts.positive { mag } else { -mag };
        Ok(Quantity { nanos, format })
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.nanos == 0 {
            return f.write_str("0");
        }
        let mut format = self.format;
        if format == QuantityFormat::BinarySI
            && (self.nanos.abs() < 1024 * NANO || self.nanos % NANO != 0)
        {
            format = QuantityFormat::DecimalSI;
        }
        if format == QuantityFormat::BinarySI {
            let mut m = self.nanos / NANO;
            let mut e = 0;
            while e < 6 && m % 1024 == 0 {
                m /= 1024;
                e += 1;
            }
            let suffix = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"][e];
            return write!(f, "{m}{suffix}");
        }
        // Strip factors of ten in u64 when the value fits (i128 division is a slow libcall).
        let (mut m, mut e): (i128, i32) = match u64::try_from(self.nanos.unsigned_abs()) {
            Ok(mut small) => {
                let mut e: i32 = -9;
                while small % 10 == 0 {
                    small /= 10;
                    e += 1;
                }
                let m = i128::from(small);
                (if self.nanos < 0 { -m } else { m }, e)
            }
            Err(_) => {
                let (mut m, mut e) = (self.nanos, -9);
                while m % 10 == 0 {
                    m /= 10;
                    e += 1;
                }
                (m, e)
            }
        };
        match e.rem_euclid(3) {
            1 => {
                m *= 10;
                e -= 1;
            }
            2 => {
                m *= 100;
                e -= 2;
            }
            _ => {}
        }
        if format == QuantityFormat::DecimalExponent {
            return if e == 0 {
                write!(f, "{m}")
            } else {
                write!(f, "{m}e{e}")
            };
        }
        // Decimal SI: above exa there is no suffix; scale the mantissa up instead.
        while e > 18 {
            m *= 1000;
            e -= 3;
        }
        let suffix = match e {
            -9 => "n",
            -6 => "u",
            -3 => "m",
            3 => "k",
            6 => "M",
            9 => "G",
            12 => "T",
            15 => "P",
            18 => "E",
            _ => "",
        };
        write!(f, "{m}{suffix}")
    }
}

impl serde::Serialize for Quantity {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Quantity {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Quantity;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a quantity string or number")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Quantity, E> {
                v.trim().parse().map_err(E::custom)
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Quantity, E> {
                Ok(Quantity::from_int(v, QuantityFormat::DecimalSI))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Quantity, E> {
                Ok(Quantity {
                    nanos: i128::from(v) * NANO,
                    format: QuantityFormat::DecimalSI,
                })
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Quantity, E> {
                if !v.is_finite() {
                    return Err(E::custom(QuantityError::Numeric));
                }
                format!("{v}").parse().map_err(E::custom)
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<Quantity, E> {
                Ok(Quantity::default())
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(feature = "schemars")]
impl schemars::JsonSchema for Quantity {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Quantity".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "type": "string" })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(s: &str) -> String {
        s.parse::<Quantity>()
            .unwrap_or_else(|e| panic!("{s}: {e}"))
            .to_string()
    }

    #[test]
    fn canonical_forms_match_upstream() {
        let cases = [
            ("0", "0"),
            ("0m", "0"),
            ("1000m", "1"),
            ("0.5", "500m"),
            ("1.5", "1500m"),
            ("1536Mi", "1536Mi"),
            ("1.5Gi", "1536Mi"),
            ("1024Mi", "1Gi"),
            ("1000", "1k"),
            ("1000000", "1M"),
            ("100m", "100m"),
            ("12e6", "12e6"),
            ("1e3", "1e3"),
            ("10e3", "10e3"),
            ("1E", "1E"),
            ("0.1n", "1n"),
            ("-0.1n", "-1n"),
            ("512Ki", "512Ki"),
            ("1Ki", "1Ki"),
            ("0.5Ki", "512"),
            ("100Mi", "100Mi"),
            ("1.1Ki", "1126400m"),
            ("-1500m", "-1500m"),
            ("+5", "5"),
            (".5", "500m"),
            ("5.", "5"),
            ("1e-3", "1e-3"),
            ("129e6", "129e6"),
            ("129000000", "129M"),
            ("4G", "4G"),
            ("250M", "250M"),
            ("0.000001", "1u"),
        ];
        for (input, want) in cases {
            assert_eq!(canon(input), want, "input {input}");
        }
    }

    #[test]
    fn bad_input_is_an_error() {
        for bad in [
            "", "1.2.3", "abc", "1Qi", "1 Gi", "Mi", "-", "1e", "1ee3", "1K",
        ] {
            assert!(bad.parse::<Quantity>().is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn arithmetic_and_ordering_are_exact() {
        let a: Quantity = "1Ki".parse().unwrap();
        let b: Quantity = "1024".parse().unwrap();
        assert_eq!(a, b);
        let c = a.checked_add(&"500m".parse().unwrap()).unwrap();
        assert_eq!(c.to_string(), "1024500m");
        assert!(c > a);
        assert_eq!("1500m".parse::<Quantity>().unwrap().value(), 2);
        assert_eq!("1500m".parse::<Quantity>().unwrap().milli_value(), 1500);
    }

    #[test]
    fn json_accepts_strings_and_numbers() {
        let q: Quantity = serde_json::from_str("\"250m\"").unwrap();
        assert_eq!(q.to_string(), "250m");
        let q: Quantity = serde_json::from_str("2").unwrap();
        assert_eq!(serde_json::to_string(&q).unwrap(), "\"2\"");
        let q: Quantity = serde_json::from_str("0.5").unwrap();
        assert_eq!(q.to_string(), "500m");
    }
}
