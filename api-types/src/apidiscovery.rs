//! `apidiscovery.k8s.io/v2`: aggregated discovery, the one-request description of every
//! resource a server serves (`Accept: application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList`).
//!
//! Written by hand from upstream's Go types (the OpenAPI document does not describe them).

/// The `v2` version.
pub mod v2 {
    use crate::meta::v1::{GroupVersionKind, ListMeta, ObjectMeta};
    use crate::proto::{self, Message, ProtoError, Reader, WireType};
    use serde::{Deserialize, Serialize};

    /// Every group a server serves (`/apis` or `/api`), with all versions and resources.
    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    #[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
    pub struct APIGroupDiscoveryList {
        /// `apidiscovery.k8s.io/v2`.
        #[serde(
            rename = "apiVersion",
            default,
            skip_serializing_if = "String::is_empty"
        )]
        pub api_version: String,
        /// `APIGroupDiscoveryList`.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        pub kind: String,
        /// List metadata.
        #[serde(default)]
        pub metadata: ListMeta,
        /// One entry per group; the core group has an empty name.
        #[serde(default, deserialize_with = "crate::serde_util::null_to_default")]
        pub items: Vec<APIGroupDiscovery>,
    }

    impl Default for APIGroupDiscoveryList {
        fn default() -> Self {
            APIGroupDiscoveryList {
                api_version: "apidiscovery.k8s.io/v2".into(),
                kind: "APIGroupDiscoveryList".into(),
                metadata: ListMeta::default(),
                items: Vec::new(),
            }
        }
    }

    /// One API group: its name (in `metadata.name`) and versions, preferred first.
    #[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
    #[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
    pub struct APIGroupDiscovery {
        /// Empty in lists.
        #[serde(
            rename = "apiVersion",
            default,
            skip_serializing_if = "String::is_empty"
        )]
        pub api_version: String,
        /// Empty in lists.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        pub kind: String,
        /// `name` is the group name.
        #[serde(default)]
        pub metadata: ObjectMeta,
        /// Versions in preference order.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        pub versions: Vec<APIVersionDiscovery>,
    }

    /// One version of a group and its resources.
    #[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
    #[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
    pub struct APIVersionDiscovery {
        /// Version name (`v1`).
        #[serde(default)]
        pub version: String,
        /// The resources of this group version.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        pub resources: Vec<APIResourceDiscovery>,
        /// `Current` or `Stale`.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        pub freshness: String,
    }

    /// One resource.
    #[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
    #[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
    pub struct APIResourceDiscovery {
        /// Plural resource name (`pods`).
        #[serde(default)]
        pub resource: String,
        /// Kind served (group and version empty when they are the enclosing ones).
        #[serde(
            rename = "responseKind",
            default,
            skip_serializing_if = "Option::is_none"
        )]
        pub response_kind: Option<GroupVersionKind>,
        /// `Namespaced` or `Cluster`.
        #[serde(default)]
        pub scope: String,
        /// Singular name (`pod`).
        #[serde(rename = "singularResource", default)]
        pub singular_resource: String,
        /// Supported verbs.
        #[serde(default, deserialize_with = "crate::serde_util::null_to_default")]
        pub verbs: Vec<String>,
        /// Short names (`po`).
        #[serde(rename = "shortNames", default, skip_serializing_if = "Vec::is_empty")]
        pub short_names: Vec<String>,
        /// Categories (`all`).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        pub categories: Vec<String>,
        /// Subresources (`status`, `scale`).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        pub subresources: Vec<APISubresourceDiscovery>,
    }

    /// One subresource.
    #[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
    #[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
    pub struct APISubresourceDiscovery {
        /// Subresource name (`status`).
        #[serde(default)]
        pub subresource: String,
        /// Kind served, if any.
        #[serde(
            rename = "responseKind",
            default,
            skip_serializing_if = "Option::is_none"
        )]
        pub response_kind: Option<GroupVersionKind>,
        /// Kinds accepted (for example `autoscaling/v1 Scale`).
        #[serde(
            rename = "acceptedTypes",
            default,
            skip_serializing_if = "Vec::is_empty"
        )]
        pub accepted_types: Vec<GroupVersionKind>,
        /// Supported verbs.
        #[serde(default, deserialize_with = "crate::serde_util::null_to_default")]
        pub verbs: Vec<String>,
    }

    type R<'a, 'b> = &'a mut Reader<'b>;

    impl Message for GroupVersionKind {
        const NAME: &'static str = "v1.GroupVersionKind";
        fn encode_fields(&self, buf: &mut Vec<u8>) {
            proto::put_field(buf, 1, &self.group);
            proto::put_field(buf, 2, &self.version);
            proto::put_field(buf, 3, &self.kind);
        }
        fn merge_field(&mut self, field: u32, wire: WireType, r: R) -> Result<(), ProtoError> {
            match field {
                1 => self.group = proto::get_field(Self::NAME, field, wire, r)?,
                2 => self.version = proto::get_field(Self::NAME, field, wire, r)?,
                3 => self.kind = proto::get_field(Self::NAME, field, wire, r)?,
                _ => r.skip(wire)?,
            }
            Ok(())
        }
    }

    impl Message for APIGroupDiscoveryList {
        const NAME: &'static str = "v2.APIGroupDiscoveryList";
        fn encode_fields(&self, buf: &mut Vec<u8>) {
            proto::put_field(buf, 1, &self.metadata);
            proto::put_repeated(buf, 2, &self.items);
        }
        fn merge_field(&mut self, field: u32, wire: WireType, r: R) -> Result<(), ProtoError> {
            match field {
                1 => self.metadata = proto::get_field(Self::NAME, field, wire, r)?,
                2 => proto::get_repeated(Self::NAME, field, wire, r, &mut self.items)?,
                _ => r.skip(wire)?,
            }
            Ok(())
        }
        fn after_decode(&mut self) {
            self.api_version.clear();
            self.kind.clear();
        }
        fn set_type_meta(&mut self, api_version: &str, kind: &str) {
            self.api_version = api_version.to_owned();
            self.kind = kind.to_owned();
        }
    }

    impl Message for APIGroupDiscovery {
        const NAME: &'static str = "v2.APIGroupDiscovery";
        fn encode_fields(&self, buf: &mut Vec<u8>) {
            proto::put_field(buf, 1, &self.metadata);
            proto::put_repeated(buf, 2, &self.versions);
        }
        fn merge_field(&mut self, field: u32, wire: WireType, r: R) -> Result<(), ProtoError> {
            match field {
                1 => self.metadata = proto::get_field(Self::NAME, field, wire, r)?,
                2 => proto::get_repeated(Self::NAME, field, wire, r, &mut self.versions)?,
                _ => r.skip(wire)?,
            }
            Ok(())
        }
    }

    impl Message for APIVersionDiscovery {
        const NAME: &'static str = "v2.APIVersionDiscovery";
        fn encode_fields(&self, buf: &mut Vec<u8>) {
            proto::put_field(buf, 1, &self.version);
            proto::put_repeated(buf, 2, &self.resources);
            proto::put_field(buf, 3, &self.freshness);
        }
        fn merge_field(&mut self, field: u32, wire: WireType, r: R) -> Result<(), ProtoError> {
            match field {
                1 => self.version = proto::get_field(Self::NAME, field, wire, r)?,
                2 => proto::get_repeated(Self::NAME, field, wire, r, &mut self.resources)?,
                3 => self.freshness = proto::get_field(Self::NAME, field, wire, r)?,
                _ => r.skip(wire)?,
            }
            Ok(())
        }
    }

    impl Message for APIResourceDiscovery {
        const NAME: &'static str = "v2.APIResourceDiscovery";
        fn encode_fields(&self, buf: &mut Vec<u8>) {
            proto::put_field(buf, 1, &self.resource);
            proto::put_opt(buf, 2, self.response_kind.as_ref(), false);
            proto::put_field(buf, 3, &self.scope);
            proto::put_field(buf, 4, &self.singular_resource);
            proto::put_repeated(buf, 5, &self.verbs);
            proto::put_repeated(buf, 6, &self.short_names);
            proto::put_repeated(buf, 7, &self.categories);
            proto::put_repeated(buf, 8, &self.subresources);
        }
        fn merge_field(&mut self, field: u32, wire: WireType, r: R) -> Result<(), ProtoError> {
            match field {
                1 => self.resource = proto::get_field(Self::NAME, field, wire, r)?,
                2 => self.response_kind = Some(proto::get_field(Self::NAME, field, wire, r)?),
                3 => self.scope = proto::get_field(Self::NAME, field, wire, r)?,
                4 => self.singular_resource = proto::get_field(Self::NAME, field, wire, r)?,
                5 => proto::get_repeated(Self::NAME, field, wire, r, &mut self.verbs)?,
                6 => proto::get_repeated(Self::NAME, field, wire, r, &mut self.short_names)?,
                7 => proto::get_repeated(Self::NAME, field, wire, r, &mut self.categories)?,
                8 => proto::get_repeated(Self::NAME, field, wire, r, &mut self.subresources)?,
                _ => r.skip(wire)?,
            }
            Ok(())
        }
    }

    impl Message for APISubresourceDiscovery {
        const NAME: &'static str = "v2.APISubresourceDiscovery";
        fn encode_fields(&self, buf: &mut Vec<u8>) {
            proto::put_field(buf, 1, &self.subresource);
            proto::put_opt(buf, 2, self.response_kind.as_ref(), false);
            proto::put_repeated(buf, 3, &self.accepted_types);
            proto::put_repeated(buf, 4, &self.verbs);
        }
        fn merge_field(&mut self, field: u32, wire: WireType, r: R) -> Result<(), ProtoError> {
            match field {
                1 => self.subresource = proto::get_field(Self::NAME, field, wire, r)?,
                2 => self.response_kind = Some(proto::get_field(Self::NAME, field, wire, r)?),
                3 => proto::get_repeated(Self::NAME, field, wire, r, &mut self.accepted_types)?,
                4 => proto::get_repeated(Self::NAME, field, wire, r, &mut self.verbs)?,
                _ => r.skip(wire)?,
            }
            Ok(())
        }
    }
}
