//! Run-time field metadata for strategic merge patch and server-side apply.
//!
//! Generated from upstream's `x-kubernetes-patch-strategy`, `x-kubernetes-patch-merge-key`,
//! `x-kubernetes-list-type`, `x-kubernetes-list-map-keys` and `x-kubernetes-map-type`.
//!
//! ```
//! use bosun_api_types::patch_meta::{type_info, Shape};
//! let spec = type_info("io.k8s.api.core.v1.PodSpec").unwrap();
//! let containers = spec.field("containers").unwrap();
//! assert_eq!(containers.patch_strategy, Some("merge"));
//! assert_eq!(containers.patch_merge_key, Some("name"));
//! assert!(matches!(containers.shape, Shape::Array(Shape::Object("io.k8s.api.core.v1.Container"))));
//! ```

/// The JSON shape of a field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// A string (also quantities, times, int-or-string, base64 bytes).
    String,
    /// An integer.
    Integer,
    /// A floating-point number.
    Number,
    /// A boolean.
    Boolean,
    /// Arbitrary JSON (embedded objects, free-form schemas).
    Any,
    /// An object of the named definition; look it up with [`type_info`].
    Object(&'static str),
    /// An array of the inner shape.
    Array(&'static Shape),
    /// A map from strings to the inner shape.
    Map(&'static Shape),
}

/// Metadata of one field of a type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FieldInfo {
    /// JSON name.
    pub name: &'static str,
    /// JSON shape.
    pub shape: Shape,
    /// Whether upstream marks the field required.
    pub required: bool,
    /// `x-kubernetes-patch-strategy` (`merge`, `retainKeys`, `merge,retainKeys`, `replace`).
    pub patch_strategy: Option<&'static str>,
    /// `x-kubernetes-patch-merge-key`.
    pub patch_merge_key: Option<&'static str>,
    /// `x-kubernetes-list-type` (`atomic`, `set`, `map`).
    pub list_type: Option<&'static str>,
    /// `x-kubernetes-list-map-keys`.
    pub list_map_keys: &'static [&'static str],
    /// `x-kubernetes-map-type` (`atomic`, `granular`).
    pub map_type: Option<&'static str>,
}

/// Metadata of one type (an upstream OpenAPI definition).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TypeInfo {
    /// Upstream definition name, e.g. `io.k8s.api.core.v1.PodSpec`.
    pub name: &'static str,
    /// `x-kubernetes-map-type` of the whole struct (`atomic` structs are replaced, not merged).
    pub map_type: Option<&'static str>,
    /// The fields, in upstream declaration order.
    pub fields: &'static [FieldInfo],
}

impl TypeInfo {
    /// The field with this JSON name.
    pub fn field(&self, name: &str) -> Option<&'static FieldInfo> {
        self.fields.iter().find(|f| f.name == name)
    }
}

/// Metadata of the upstream definition `name`, if this crate has the type.
pub fn type_info(name: &str) -> Option<&'static TypeInfo> {
    let types = crate::api::TYPES;
    types
        .binary_search_by(|t| t.name.cmp(name))
        .ok()
        .map(|i| &types[i])
}

/// Every type's metadata, sorted by definition name.
pub fn all_types() -> &'static [TypeInfo] {
    crate::api::TYPES
}
