//! The table of served resources: every built-in kind of `bosun-api-types`, plus whatever a
//! library user adds.

use bosun_api_types::{ResourceInfo, Scope, BUILTIN_RESOURCES};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// One served resource (`pods` in `v1`, `deployments` in `apps/v1`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiResource {
    /// API group; empty for the core group.
    pub group: String,
    /// Version within the group.
    pub version: String,
    /// Resource name in URLs (`pods`).
    pub plural: String,
    /// Singular name (`pod`).
    pub singular: String,
    /// Kind of one object.
    pub kind: String,
    /// Kind of a list.
    pub list_kind: String,
    /// Namespaced or cluster-scoped.
    pub namespaced: bool,
    /// Verbs served.
    pub verbs: Vec<String>,
    /// Short names (`po`).
    pub short_names: Vec<String>,
    /// Categories (`all`).
    pub categories: Vec<String>,
    /// Subresources served (`status`, `scale`).
    pub subresources: Vec<String>,
    /// The built-in type behind the resource, if any (typed decoding and validation).
    pub builtin: Option<&'static ResourceInfo>,
    /// Whether writes that change anything but metadata and status bump `metadata.generation`.
    pub tracks_generation: bool,
    /// For custom resources: the CRD version's schema and printer columns.
    pub custom: Option<Arc<crate::crd::CustomInfo>>,
}

/// Kinds whose strategies set and bump `metadata.generation` upstream.
const GENERATION_KINDS: &[(&str, &str)] = &[
    ("apps", "Deployment"),
    ("apps", "ReplicaSet"),
    ("apps", "StatefulSet"),
    ("apps", "DaemonSet"),
    ("", "ReplicationController"),
    ("batch", "Job"),
    ("batch", "CronJob"),
    ("networking.k8s.io", "Ingress"),
    ("networking.k8s.io", "NetworkPolicy"),
    ("policy", "PodDisruptionBudget"),
    ("apiextensions.k8s.io", "CustomResourceDefinition"),
    ("admissionregistration.k8s.io", "ValidatingAdmissionPolicy"),
    (
        "admissionregistration.k8s.io",
        "ValidatingAdmissionPolicyBinding",
    ),
    ("flowcontrol.apiserver.k8s.io", "FlowSchema"),
    ("flowcontrol.apiserver.k8s.io", "PriorityLevelConfiguration"),
];

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

impl ApiResource {
    /// The served resource of a built-in kind.
    pub fn from_info(info: &'static ResourceInfo) -> Self {
        ApiResource {
            group: info.group.to_owned(),
            version: info.version.to_owned(),
            plural: info.plural.to_owned(),
            singular: info.singular.to_owned(),
            kind: info.kind.to_owned(),
            list_kind: info.list_kind.to_owned(),
            namespaced: info.scope == Scope::Namespaced,
            verbs: strings(info.verbs),
            short_names: strings(info.short_names),
            categories: strings(info.categories),
            subresources: strings(info.subresources),
            builtin: Some(info),
            tracks_generation: GENERATION_KINDS.contains(&(info.group, info.kind)),
            custom: None,
        }
    }

    /// `group/version`, or `version` for the core group.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The group-qualified resource name used in messages (`pods`, `deployments.apps`).
    pub fn group_resource(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// Store key prefix of every object of this resource (all namespaces).
    pub fn key_prefix(&self) -> String {
        let group = if self.group.is_empty() {
            "core"
        } else {
            &self.group
        };
        format!("/registry/{group}/{}/", self.plural)
    }

    /// Store key prefix of the objects in `namespace` (or of all, for `None`).
    pub fn list_prefix(&self, namespace: Option<&str>) -> String {
        match namespace.filter(|_| self.namespaced) {
            Some(ns) => format!("{}{ns}/", self.key_prefix()),
            None => self.key_prefix(),
        }
    }

    /// Store key of one object.
    pub fn key(&self, namespace: Option<&str>, name: &str) -> String {
        match namespace.filter(|_| self.namespaced) {
            Some(ns) => format!("{}{ns}/{name}", self.key_prefix()),
            None => format!("{}{name}", self.key_prefix()),
        }
    }

    /// Whether the resource serves `verb`.
    pub fn has_verb(&self, verb: &str) -> bool {
        self.verbs.iter().any(|v| v == verb)
    }
}

/// Every served resource, looked up by URL.
///
/// ```
/// use bosun_api_types::core::v1::ConfigMap;
/// use bosun_api_types::Resource;
/// use bosun_apiserver::{ApiResource, ResourceTable};
///
/// let mut table = ResourceTable::builtin();
/// let config_maps = table.get("", "v1", "configmaps").expect("a built-in kind");
/// assert_eq!(config_maps.kind, "ConfigMap");
/// // A kind of your own, served like the built-in ones (CRDs do this at run time):
/// let mut mine = ApiResource::from_info(&ConfigMap::INFO);
/// mine.group = "example.com".into();
/// mine.plural = "settings".into();
/// mine.kind = "Setting".into();
/// table.add(mine);
/// assert!(table.by_kind("example.com", "v1", "Setting").is_some());
/// ```
#[derive(Clone, Debug, Default)]
pub struct ResourceTable {
    resources: Vec<Arc<ApiResource>>,
    by_path: HashMap<(String, String, String), usize>,
}

impl ResourceTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every built-in kind of `bosun-api-types` (kinds served only as subresources excluded).
    pub fn builtin() -> Self {
        let mut t = Self::new();
        for info in BUILTIN_RESOURCES.iter().filter(|i| !i.subresource_only) {
            t.add(ApiResource::from_info(info));
        }
        t
    }

    /// Adds (or replaces) a resource.
    pub fn add(&mut self, resource: ApiResource) {
        let key = (
            resource.group.clone(),
            resource.version.clone(),
            resource.plural.clone(),
        );
        match self.by_path.get(&key) {
            Some(&i) => self.resources[i] = Arc::new(resource),
            None => {
                self.by_path.insert(key, self.resources.len());
                self.resources.push(Arc::new(resource));
            }
        }
    }

    /// The resource at `/apis/{group}/{version}/{plural}`.
    pub fn get(&self, group: &str, version: &str, plural: &str) -> Option<&Arc<ApiResource>> {
        let key = (group.to_owned(), version.to_owned(), plural.to_owned());
        self.by_path.get(&key).map(|&i| &self.resources[i])
    }

    /// The resource of a kind.
    pub fn by_kind(&self, group: &str, version: &str, kind: &str) -> Option<&Arc<ApiResource>> {
        self.resources
            .iter()
            .find(|r| r.group == group && r.version == version && r.kind == kind)
    }

    /// Every resource, in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<ApiResource>> {
        self.resources.iter()
    }

    /// Groups and their versions, in the order discovery lists them: the core group first, then
    /// groups in insertion order.
    pub fn groups(&self) -> Vec<(String, Vec<String>)> {
        let mut order: Vec<String> = Vec::new();
        let mut versions: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for r in &self.resources {
            if !versions.contains_key(&r.group) {
                order.push(r.group.clone());
            }
            let vs = versions.entry(r.group.clone()).or_default();
            if !vs.contains(&r.version) {
                vs.push(r.version.clone());
            }
        }
        order.sort_by_key(|g| !g.is_empty());
        order
            .into_iter()
            .map(|g| {
                let vs = versions.remove(&g).unwrap_or_default();
                (g, vs)
            })
            .collect()
    }

    /// The resources of one group version.
    pub fn in_group_version<'a>(
        &'a self,
        group: &'a str,
        version: &'a str,
    ) -> impl Iterator<Item = &'a Arc<ApiResource>> + 'a {
        self.resources
            .iter()
            .filter(move |r| r.group == group && r.version == version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_table_serves_pods_and_deployments() {
        let t = ResourceTable::builtin();
        let pods = t.get("", "v1", "pods").unwrap();
        assert!(pods.namespaced);
        assert_eq!(
            pods.key(Some("default"), "web"),
            "/registry/core/pods/default/web"
        );
        let d = t.get("apps", "v1", "deployments").unwrap();
        assert_eq!(d.group_resource(), "deployments.apps");
        assert!(d.tracks_generation);
        assert!(t.get("", "v1", "scale").is_none());
        let groups = t.groups();
        assert_eq!(groups[0].0, "");
    }
}
