//! `ByteString` (base64 on the wire) and `RawExtension` (an embedded object of any kind).

use base64::Engine as _;
use std::fmt;

/// Bytes that travel as standard base64 in JSON (Secret `data`, CA bundles, …).
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ByteString(pub Vec<u8>);

impl fmt::Debug for ByteString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ByteString({} bytes)", self.0.len())
    }
}

impl From<Vec<u8>> for ByteString {
    fn from(v: Vec<u8>) -> Self {
        ByteString(v)
    }
}

impl From<&str> for ByteString {
    fn from(v: &str) -> Self {
        ByteString(v.as_bytes().to_vec())
    }
}

impl serde::Serialize for ByteString {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(&self.0))
    }
}

impl<'de> serde::Deserialize<'de> for ByteString {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = Option::<std::borrow::Cow<'de, str>>::deserialize(d)?.unwrap_or_default();
        base64::engine::general_purpose::STANDARD
            .decode(s.as_bytes())
            .map(ByteString)
            .map_err(|e| serde::de::Error::custom(format!("illegal base64 data: {e}")))
    }
}

#[cfg(feature = "schemars")]
impl schemars::JsonSchema for ByteString {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ByteString".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "type": "string", "format": "byte" })
    }
}

/// An embedded object whose kind is known only at run time (upstream `runtime.RawExtension`).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct RawExtension(pub serde_json::Value);

#[cfg(feature = "schemars")]
impl schemars::JsonSchema for RawExtension {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "RawExtension".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "type": "object" })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trip_and_errors() {
        let b = ByteString::from("hello");
        let j = serde_json::to_string(&b).unwrap();
        assert_eq!(j, "\"aGVsbG8=\"");
        assert_eq!(serde_json::from_str::<ByteString>(&j).unwrap(), b);
        assert!(serde_json::from_str::<ByteString>("\"not base64!\"").is_err());
    }
}
