//! `IntOrString`: a value that is either an integer or a string on the wire (`8080` or `"http"`).

use std::fmt;

/// An integer or a string, as upstream `intstr.IntOrString` (ports, `maxUnavailable: 25%`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum IntOrString {
    /// An integer value.
    Int(i32),
    /// A string value (for example a named port or a percentage).
    String(String),
}

impl Default for IntOrString {
    fn default() -> Self {
        IntOrString::Int(0)
    }
}

impl From<i32> for IntOrString {
    fn from(v: i32) -> Self {
        IntOrString::Int(v)
    }
}

impl From<&str> for IntOrString {
    fn from(v: &str) -> Self {
        IntOrString::String(v.to_owned())
    }
}

impl From<String> for IntOrString {
    fn from(v: String) -> Self {
        IntOrString::String(v)
    }
}

/// Why an `IntOrString` could not be scaled against a total.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IntOrPercentError {
    /// A string that is not of the form `N%`.
    #[error("invalid value for IntOrString: invalid type: string is not a percentage")]
    NotPercent,
    /// The percentage is not a number.
    #[error("invalid value {0:?}: percentage is not an integer")]
    BadPercent(String),
}

impl IntOrString {
    /// Upstream `GetScaledValueFromIntOrPercent`: an integer as is, or `N%` of `total`, rounded up
    /// or down.
    pub fn scaled_value(&self, total: i32, round_up: bool) -> Result<i32, IntOrPercentError> {
        match self {
            IntOrString::Int(v) => Ok(*v),
            IntOrString::String(s) => {
                let p = s.strip_suffix('%').ok_or(IntOrPercentError::NotPercent)?;
                let p: i64 = p
                    .parse()
                    .map_err(|_| IntOrPercentError::BadPercent(s.clone()))?;
                let v = i64::from(total) * p;
                let r = if round_up {
                    (v + 99).div_euclid(100)
                } else {
                    v.div_euclid(100)
                };
                Ok(i32::try_from(r).unwrap_or(i32::MAX))
            }
        }
    }
}

impl fmt::Display for IntOrString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IntOrString::Int(v) => write!(f, "{v}"),
            IntOrString::String(s) => f.write_str(s),
        }
    }
}

impl serde::Serialize for IntOrString {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            IntOrString::Int(v) => s.serialize_i32(*v),
            IntOrString::String(v) => s.serialize_str(v),
        }
    }
}

impl<'de> serde::Deserialize<'de> for IntOrString {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = IntOrString;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an integer or a string")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<IntOrString, E> {
                i32::try_from(v)
                    .map(IntOrString::Int)
                    .map_err(|_| E::custom(format!("integer {v} out of range for int32")))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<IntOrString, E> {
                i32::try_from(v)
                    .map(IntOrString::Int)
                    .map_err(|_| E::custom(format!("integer {v} out of range for int32")))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<IntOrString, E> {
                Ok(IntOrString::String(v.to_owned()))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<IntOrString, E> {
                Ok(IntOrString::String(v))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(feature = "schemars")]
impl schemars::JsonSchema for IntOrString {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "IntOrString".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "type": "string", "format": "int-or-string", "x-kubernetes-int-or-string": true })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_both_forms() {
        let i: IntOrString = serde_json::from_str("8080").unwrap();
        assert_eq!(i, IntOrString::Int(8080));
        assert_eq!(serde_json::to_string(&i).unwrap(), "8080");
        let s: IntOrString = serde_json::from_str("\"25%\"").unwrap();
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"25%\"");
        assert_eq!(s.scaled_value(10, true).unwrap(), 3);
        assert_eq!(s.scaled_value(10, false).unwrap(), 2);
        assert!(serde_json::from_str::<IntOrString>("1.5").is_err());
        assert!(serde_json::from_str::<IntOrString>("4294967296").is_err());
    }
}
