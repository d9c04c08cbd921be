//! `meta/v1` types that upstream's OpenAPI document does not describe, written by hand from the
//! upstream Go types: server-side printing (`Table`), `PartialObjectMetadata`, `TypeMeta`,
//! `FieldsV1`, a typed `WatchEvent` and `GroupVersionKind`.

use crate::meta::v1::{ListMeta, ObjectMeta};
use serde::{Deserialize, Serialize};

/// Managed-fields set in the `FieldsV1` JSON format (`{"f:spec":{"f:replicas":{}}}`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct FieldsV1(pub serde_json::Value);

#[cfg(feature = "schemars")]
impl schemars::JsonSchema for FieldsV1 {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "FieldsV1".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "type": "object" })
    }
}

/// apiVersion and kind, as embedded inline in every object.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
pub struct TypeMeta {
    /// `group/version` of the object.
    #[serde(
        rename = "apiVersion",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub api_version: String,
    /// Kind of the object.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
}

/// Group, version and kind of a type.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
pub struct GroupVersionKind {
    /// API group (empty for core).
    #[serde(default)]
    pub group: String,
    /// API version.
    #[serde(default)]
    pub version: String,
    /// Kind.
    #[serde(default)]
    pub kind: String,
}

/// Watch event types, as they appear in `WatchEvent.type`.
pub mod event_type {
    /// An object was created (or is part of the initial state).
    pub const ADDED: &str = "ADDED";
    /// An object was changed.
    pub const MODIFIED: &str = "MODIFIED";
    /// An object was deleted.
    pub const DELETED: &str = "DELETED";
    /// A progress marker carrying only a resourceVersion.
    pub const BOOKMARK: &str = "BOOKMARK";
    /// The watch failed; the object is a `Status`.
    pub const ERROR: &str = "ERROR";
}

/// One event of a watch stream. `K` is the object type (`RawExtension` for any JSON).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
pub struct WatchEvent<K = crate::RawExtension> {
    /// `ADDED`, `MODIFIED`, `DELETED`, `BOOKMARK` or `ERROR` (see [`event_type`]).
    #[serde(rename = "type", default)]
    pub r#type: String,
    /// The object: its new state, its last state before deletion, or a `Status` for errors.
    pub object: K,
}

/// Server-side printing result (`Accept: application/json;as=Table;v=v1;g=meta.k8s.io`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
pub struct Table {
    /// `meta.k8s.io/v1`.
    #[serde(
        rename = "apiVersion",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub api_version: String,
    /// `Table`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
    /// List metadata of the underlying list.
    #[serde(default)]
    pub metadata: ListMeta,
    /// The columns, in display order.
    #[serde(
        rename = "columnDefinitions",
        default,
        deserialize_with = "crate::serde_util::null_to_default"
    )]
    pub column_definitions: Vec<TableColumnDefinition>,
    /// One row per object.
    #[serde(default, deserialize_with = "crate::serde_util::null_to_default")]
    pub rows: Vec<TableRow>,
}

impl Default for Table {
    fn default() -> Self {
        Table {
            api_version: "meta.k8s.io/v1".into(),
            kind: "Table".into(),
            metadata: ListMeta::default(),
            column_definitions: Vec::new(),
            rows: Vec::new(),
        }
    }
}

/// A column of a [`Table`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
pub struct TableColumnDefinition {
    /// Human-readable column name.
    #[serde(default)]
    pub name: String,
    /// OpenAPI type of the cells (`string`, `integer`, `number`, `boolean`, `date`).
    #[serde(rename = "type", default)]
    pub r#type: String,
    /// Optional OpenAPI format (`name`, …).
    #[serde(default)]
    pub format: String,
    /// Description of the column.
    #[serde(default)]
    pub description: String,
    /// 0 for columns shown by default; higher for `-o wide` columns.
    #[serde(default)]
    pub priority: i32,
}

/// A row of a [`Table`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
pub struct TableRow {
    /// One cell per column definition.
    #[serde(default, deserialize_with = "crate::serde_util::null_to_default")]
    pub cells: Vec<serde_json::Value>,
    /// Row conditions (`Completed` rows are hidden by kubectl unless `--show-all`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<TableRowCondition>,
    /// The object (full, `PartialObjectMetadata`, or absent) depending on `includeObject`.
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub object: serde_json::Value,
}

/// A condition of a [`TableRow`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
pub struct TableRowCondition {
    /// Condition type (`Completed`).
    #[serde(rename = "type", default)]
    pub r#type: String,
    /// `True`, `False` or `Unknown`.
    #[serde(default)]
    pub status: String,
    /// Machine-readable reason.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// Human-readable message.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// Only the metadata of an object (`as=PartialObjectMetadata`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
pub struct PartialObjectMetadata {
    /// `meta.k8s.io/v1`.
    #[serde(
        rename = "apiVersion",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub api_version: String,
    /// `PartialObjectMetadata`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
    /// The object's metadata.
    #[serde(default)]
    pub metadata: ObjectMeta,
}

/// A list of [`PartialObjectMetadata`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
pub struct PartialObjectMetadataList {
    /// `meta.k8s.io/v1`.
    #[serde(
        rename = "apiVersion",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub api_version: String,
    /// `PartialObjectMetadataList`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
    /// List metadata.
    #[serde(default)]
    pub metadata: ListMeta,
    /// The items.
    #[serde(default, deserialize_with = "crate::serde_util::null_to_default")]
    pub items: Vec<PartialObjectMetadata>,
}
