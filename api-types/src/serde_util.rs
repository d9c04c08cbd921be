//! Serde helpers shared by the generated types.

use serde::{Deserialize, Deserializer, Serializer};

/// Deserializes `null` as the type's default, as Go's JSON decoder leaves a zero value for
/// `null` (clients written in Go send `"rules": null` for a nil slice).
pub(crate) fn null_to_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// Serializes a float as Go's encoder does: whole values without a fraction (`1`, not `1.0`).
pub(crate) fn go_float<S: Serializer>(v: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => s.serialize_i64(*f as i64),
        Some(f) => s.serialize_f64(*f),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use crate::apiextensions::v1::JSONSchemaProps;

    #[test]
    fn whole_floats_are_written_as_go_writes_them() {
        let p = JSONSchemaProps {
            minimum: Some(1.0),
            maximum: Some(2.5),
            ..Default::default()
        };
        let v = serde_json::to_string(&p).unwrap();
        assert!(
            v.contains("\"minimum\":1,") || v.contains("\"minimum\":1}"),
            "{v}"
        );
        assert!(v.contains("\"maximum\":2.5"), "{v}");
    }
}
