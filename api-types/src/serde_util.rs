//! Serde helpers shared by the generated types.

use serde::{Deserialize, Deserializer};

/// Deserializes `null` as the type's default, as Go's JSON decoder leaves a zero value for
/// `null` (clients written in Go send `"rules": null` for a nil slice).
pub(crate) fn null_to_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}
