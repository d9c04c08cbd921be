//! The `Resource` trait, generic lists and objects of kinds known only at run time.

use crate::meta::v1::{ListMeta, ObjectMeta};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Whether objects of a resource live in a namespace or at cluster scope.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Objects live in a namespace (`/api/v1/namespaces/{ns}/pods`).
    Namespaced,
    /// Objects are cluster-wide (`/api/v1/nodes`).
    Cluster,
}

/// Everything a server or client needs to know about a resource to address and describe it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResourceInfo {
    /// API group; empty for the core group.
    pub group: &'static str,
    /// API version within the group (`v1`).
    pub version: &'static str,
    /// `group/version`, or just `version` for the core group.
    pub api_version: &'static str,
    /// Kind of one object (`Pod`).
    pub kind: &'static str,
    /// Kind of a list of objects (`PodList`).
    pub list_kind: &'static str,
    /// Resource name in URLs (`pods`); for a subresource-only kind, the subresource (`scale`).
    pub plural: &'static str,
    /// Singular resource name (`pod`).
    pub singular: &'static str,
    /// Short names kubectl accepts (`po`).
    pub short_names: &'static [&'static str],
    /// Categories the resource belongs to (`all`).
    pub categories: &'static [&'static str],
    /// Namespaced or cluster-scoped.
    pub scope: Scope,
    /// Verbs upstream serves for the resource (`create`, `get`, `list`, …).
    pub verbs: &'static [&'static str],
    /// Subresources upstream serves (`status`, `scale`, `log`, …).
    pub subresources: &'static [&'static str],
    /// True for kinds served only as a subresource of others (`Scale`, `Eviction`).
    pub subresource_only: bool,
    /// Name of the upstream OpenAPI definition, the key for [`crate::patch_meta::type_info`].
    pub schema_name: &'static str,
}

/// A typed Kubernetes object kind.
///
/// ```
/// use bosun_api_types::{core::v1::Pod, Resource, Scope};
/// assert_eq!(Pod::INFO.plural, "pods");
/// assert_eq!(Pod::INFO.scope, Scope::Namespaced);
/// let mut pod = Pod::default();
/// pod.metadata_mut().name = Some("web".into());
/// assert_eq!(pod.name(), "web");
/// ```
pub trait Resource: Clone + Serialize + DeserializeOwned + Send + Sync + 'static {
    /// Static facts about the resource.
    const INFO: ResourceInfo;
    /// The object's metadata.
    fn metadata(&self) -> &ObjectMeta;
    /// The object's metadata, mutably.
    fn metadata_mut(&mut self) -> &mut ObjectMeta;
    /// The object's name, or `""` if unset.
    fn name(&self) -> &str {
        self.metadata().name.as_deref().unwrap_or("")
    }
    /// The object's namespace, if set.
    fn namespace(&self) -> Option<&str> {
        self.metadata().namespace.as_deref()
    }
}

/// Something to do with a built-in kind chosen at run time; see [`crate::visit_kind`].
///
/// ```
/// use bosun_api_types::{visit_kind, KindVisitor, Resource};
/// struct Plural;
/// impl KindVisitor for Plural {
///     type Output = &'static str;
///     fn visit<K: Resource + bosun_api_types::proto::Message + PartialEq>(self) -> &'static str {
///         K::INFO.plural
///     }
/// }
/// assert_eq!(visit_kind("apps/v1", "Deployment", Plural), Some("deployments"));
/// assert_eq!(visit_kind("v1", "NoSuchKind", Plural), None);
/// ```
pub trait KindVisitor {
    /// What the visit returns.
    type Output;
    /// Called with the chosen kind.
    fn visit<K: Resource + crate::proto::Message + PartialEq>(self) -> Self::Output;
}

/// A list of objects of one kind (`PodList` is `List<Pod>`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(bound(serialize = "K: Serialize", deserialize = "K: DeserializeOwned"))]
pub struct List<K> {
    /// `group/version` of the list.
    #[serde(
        rename = "apiVersion",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub api_version: String,
    /// Kind of the list (`PodList`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
    /// Standard list metadata (resourceVersion, continue, remainingItemCount).
    #[serde(default)]
    pub metadata: ListMeta,
    /// The objects.
    #[serde(default, deserialize_with = "crate::serde_util::null_to_default")]
    pub items: Vec<K>,
}

impl<K: Resource> Default for List<K> {
    fn default() -> Self {
        List {
            api_version: K::INFO.api_version.into(),
            kind: K::INFO.list_kind.into(),
            metadata: ListMeta::default(),
            items: Vec::new(),
        }
    }
}

impl<K: Resource> From<Vec<K>> for List<K> {
    fn from(items: Vec<K>) -> Self {
        List {
            items,
            ..Default::default()
        }
    }
}

/// An object of a kind known only at run time (custom resources, generic tooling): apiVersion,
/// kind and metadata are typed, everything else is kept as JSON.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
pub struct DynamicObject {
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
    /// Standard object metadata.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// Every other top-level field (`spec`, `status`, `data`, …).
    #[serde(flatten)]
    pub data: serde_json::Map<String, serde_json::Value>,
}

/// A `DynamicObject`'s kind is known only at run time: its `INFO` is empty, and clients address
/// it through a resource descriptor found by discovery (`bosun_client::Api::namespaced_with`).
impl Resource for DynamicObject {
    const INFO: ResourceInfo = ResourceInfo {
        group: "",
        version: "",
        api_version: "",
        kind: "",
        list_kind: "",
        plural: "",
        singular: "",
        short_names: &[],
        categories: &[],
        scope: Scope::Namespaced,
        verbs: &[],
        subresources: &[],
        subresource_only: false,
        schema_name: "",
    };
    fn metadata(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

impl DynamicObject {
    /// An empty object of the given apiVersion and kind.
    pub fn new(api_version: impl Into<String>, kind: impl Into<String>) -> Self {
        DynamicObject {
            api_version: api_version.into(),
            kind: kind.into(),
            ..Default::default()
        }
    }

    /// Converts a typed object into a dynamic one.
    pub fn from_typed<K: Resource>(obj: &K) -> Result<Self, serde_json::Error> {
        let mut d: DynamicObject = serde_json::from_value(serde_json::to_value(obj)?)?;
        if d.api_version.is_empty() {
            d.api_version = K::INFO.api_version.into();
        }
        if d.kind.is_empty() {
            d.kind = K::INFO.kind.into();
        }
        Ok(d)
    }

    /// Converts into a typed object; fails if the JSON does not fit `K`.
    pub fn to_typed<K: Resource>(&self) -> Result<K, serde_json::Error> {
        serde_json::from_value(serde_json::to_value(self)?)
    }
}

/// Implements [`Resource`] for a user-defined custom resource type (a struct with a `metadata:
/// ObjectMeta` field), so that it works with typed clients like a built-in kind.
///
/// ```
/// use bosun_api_types::meta::v1::ObjectMeta;
/// use bosun_api_types::Resource;
/// #[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
/// struct Widget {
///     metadata: ObjectMeta,
///     #[serde(default)]
///     spec: serde_json::Value,
/// }
/// bosun_api_types::custom_resource!(Widget, group = "example.com", version = "v1",
///     kind = "Widget", plural = "widgets", scope = Namespaced);
/// assert_eq!(Widget::INFO.api_version, "example.com/v1");
/// assert_eq!(Widget::INFO.list_kind, "WidgetList");
/// ```
#[macro_export]
macro_rules! custom_resource {
    ($ty:ty, group = $g:literal, version = $v:literal, kind = $k:literal, plural = $p:literal, scope = $scope:ident) => {
        impl $crate::Resource for $ty {
            const INFO: $crate::ResourceInfo = $crate::ResourceInfo {
                group: $g,
                version: $v,
                api_version: concat!($g, "/", $v),
                kind: $k,
                list_kind: concat!($k, "List"),
                plural: $p,
                singular: "",
                short_names: &[],
                categories: &[],
                scope: $crate::Scope::$scope,
                verbs: &[
                    "create",
                    "delete",
                    "deletecollection",
                    "get",
                    "list",
                    "patch",
                    "update",
                    "watch",
                ],
                subresources: &[],
                subresource_only: false,
                schema_name: "",
            };
            fn metadata(&self) -> &$crate::meta::v1::ObjectMeta {
                &self.metadata
            }
            fn metadata_mut(&mut self) -> &mut $crate::meta::v1::ObjectMeta {
                &mut self.metadata
            }
        }
    };
}
