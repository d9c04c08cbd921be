//! `apiextensions.k8s.io/v1` types that are unions on the wire, written by hand.

use crate::apiextensions::v1::JSONSchemaProps;
use serde::{Deserialize, Serialize};

/// Arbitrary JSON (a default value, an enum member, an example).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(transparent)]
pub struct JSON(pub serde_json::Value);

/// `items`: one schema for every element, or a schema per position.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(untagged)]
pub enum JSONSchemaPropsOrArray {
    /// A schema per position.
    Schemas(Vec<JSONSchemaProps>),
    /// One schema for every element.
    Schema(Box<JSONSchemaProps>),
}

/// `additionalProperties` / `additionalItems`: allowed or not, or a schema they must match.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(untagged)]
pub enum JSONSchemaPropsOrBool {
    /// Allowed (`true`) or not (`false`).
    Bool(bool),
    /// Allowed when matching this schema.
    Schema(Box<JSONSchemaProps>),
}

/// A `dependencies` entry: a list of required property names, or a schema.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(untagged)]
pub enum JSONSchemaPropsOrStringArray {
    /// Property names that must be present.
    Strings(Vec<String>),
    /// A schema the object must match.
    Schema(Box<JSONSchemaProps>),
}
