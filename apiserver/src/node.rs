//! What a node's own credentials may do: upstream's Node authorizer and NodeRestriction
//! admission plugin, for users `system:node:NAME` in `system:nodes`.
//!
//! - [`NodeAuthorizer`] lets a node read the Secrets, ConfigMaps, PersistentVolumeClaims and
//!   PersistentVolumes that pods bound to it use, ask for tokens of the service accounts those
//!   pods run as, and use its own Lease; everything else it decides by the `system:node`
//!   rules (nodes, pods, events, statuses, CSRs, …), as upstream's authorizer does. Requests of
//!   other users get no opinion. The pod → object graph is kept from a watch on pods.
//! - [`NodeRestriction`] limits writes: a node creates only mirror pods bound to itself, changes
//!   and evicts only its own pods, writes only its own Node object and Lease.

use crate::auth::{
    AdmissionPlugin, AdmissionRequest, Authorizer, Decision, Operation, RequestInfo, UserInfo,
};
use crate::error::ApiError;
use crate::object::Object;
use crate::rbac::{rule_allows, Access};
use bosun_api_types::rbac::v1::PolicyRule;
use serde_json::Value;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, RwLock};

/// The node a user is, if it is one.
pub fn node_of(user: &UserInfo) -> Option<&str> {
    let name = user.name.strip_prefix("system:node:")?;
    (!name.is_empty() && user.groups.iter().any(|g| g == "system:nodes")).then_some(name)
}

/// What one pod bound to a node uses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct PodRefs {
    namespace: String,
    service_account: String,
    /// (`secrets` | `configmaps` | `persistentvolumeclaims`, name).
    objects: BTreeSet<(&'static str, String)>,
}

fn refs_of(pod: &Value) -> PodRefs {
    let mut objects = BTreeSet::new();
    let spec = &pod["spec"];
    let mut add = |kind: &'static str, v: &Value| {
        if let Some(n) = v.as_str().filter(|n| !n.is_empty()) {
            objects.insert((kind, n.to_owned()));
        }
    };
    for v in spec["volumes"].as_array().into_iter().flatten() {
        add("secrets", &v["secret"]["secretName"]);
        add("configmaps", &v["configMap"]["name"]);
        add(
            "persistentvolumeclaims",
            &v["persistentVolumeClaim"]["claimName"],
        );
        if v["ephemeral"].is_object() {
            if let (Some(pod), Some(vol)) = (pod["metadata"]["name"].as_str(), v["name"].as_str()) {
                add(
                    "persistentvolumeclaims",
                    &Value::String(format!("{pod}-{vol}")),
                );
            }
        }
        for src in v["projected"]["sources"].as_array().into_iter().flatten() {
            add("secrets", &src["secret"]["name"]);
            add("configmaps", &src["configMap"]["name"]);
        }
    }
    for list in ["initContainers", "containers", "ephemeralContainers"] {
        for c in spec[list].as_array().into_iter().flatten() {
            for e in c["env"].as_array().into_iter().flatten() {
                add("secrets", &e["valueFrom"]["secretKeyRef"]["name"]);
                add("configmaps", &e["valueFrom"]["configMapKeyRef"]["name"]);
            }
            for e in c["envFrom"].as_array().into_iter().flatten() {
                add("secrets", &e["secretRef"]["name"]);
                add("configmaps", &e["configMapRef"]["name"]);
            }
        }
    }
    for s in spec["imagePullSecrets"].as_array().into_iter().flatten() {
        add("secrets", &s["name"]);
    }
    PodRefs {
        namespace: pod["metadata"]["namespace"]
            .as_str()
            .unwrap_or("")
            .to_owned(),
        service_account: spec["serviceAccountName"]
            .as_str()
            .unwrap_or("default")
            .to_owned(),
        objects,
    }
}

/// Pods by node, with what each uses.
#[derive(Debug, Default)]
struct Graph {
    /// node → pod key → refs.
    by_node: HashMap<String, HashMap<String, PodRefs>>,
    /// pod key → node.
    node_of_pod: HashMap<String, String>,
}

impl Graph {
    fn remove(&mut self, key: &str) {
        if let Some(node) = self.node_of_pod.remove(key) {
            if let Some(pods) = self.by_node.get_mut(&node) {
                pods.remove(key);
                if pods.is_empty() {
                    self.by_node.remove(&node);
                }
            }
        }
    }

    fn put(&mut self, key: &str, pod: &Value) {
        self.remove(key);
        let Some(node) = pod["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()) else {
            return;
        };
        self.node_of_pod.insert(key.to_owned(), node.to_owned());
        self.by_node
            .entry(node.to_owned())
            .or_default()
            .insert(key.to_owned(), refs_of(pod));
    }

    fn pods(&self, node: &str) -> impl Iterator<Item = &PodRefs> {
        self.by_node.get(node).into_iter().flat_map(|p| p.values())
    }
}

const PODS: &str = "/registry/core/pods/";

/// Upstream's Node authorizer over a pod graph kept current from the store.
#[derive(Clone)]
pub struct NodeAuthorizer {
    graph: Arc<RwLock<Graph>>,
    store: Arc<dyn bosun_store::Store>,
    rules: Arc<Vec<PolicyRule>>,
}

impl NodeAuthorizer {
    /// Reads every pod of `store` into the graph and keeps it current (a watch).
    pub async fn keep_current(
        store: Arc<dyn bosun_store::Store>,
    ) -> Result<Self, bosun_store::Error> {
        // The static rules: `system:node`'s, without the objects the graph decides.
        let rules = crate::bootstrap_policy::cluster_roles()
            .into_iter()
            .find(|r| r["metadata"]["name"] == "system:node")
            .and_then(|r| serde_json::from_value::<Vec<PolicyRule>>(r["rules"].clone()).ok())
            .unwrap_or_default()
            .into_iter()
            .filter_map(|mut r| {
                r.resources.retain(|res| {
                    !matches!(
                        res.as_str(),
                        "secrets"
                            | "configmaps"
                            | "persistentvolumeclaims"
                            | "persistentvolumes"
                            | "serviceaccounts/token"
                            | "leases"
                    )
                });
                (!r.resources.is_empty()).then_some(r)
            })
            .collect();
        let page = store.range(bosun_store::RangeRequest::prefix(PODS)).await?;
        let mut graph = Graph::default();
        for kv in &page.kvs {
            if let Ok(pod) = serde_json::from_slice::<Value>(&kv.value) {
                graph.put(&kv.key, &pod);
            }
        }
        let this = NodeAuthorizer {
            graph: Arc::new(RwLock::new(graph)),
            store: Arc::clone(&store),
            rules: Arc::new(rules),
        };
        let graph = Arc::clone(&this.graph);
        let mut from = page.revision;
        tokio::spawn(async move {
            loop {
                let Ok(mut watch) = store.watch(PODS, from).await else {
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                    // Compacted past us: read everything again.
                    if let Ok(page) = store.range(bosun_store::RangeRequest::prefix(PODS)).await {
                        let mut fresh = Graph::default();
                        for kv in &page.kvs {
                            if let Ok(pod) = serde_json::from_slice::<Value>(&kv.value) {
                                fresh.put(&kv.key, &pod);
                            }
                        }
                        *graph.write().unwrap_or_else(|p| p.into_inner()) = fresh;
                        from = page.revision;
                    }
                    continue;
                };
                while let Some(Ok(ev)) = watch.next().await {
                    from = from.max(ev.revision());
                    let mut g = graph.write().unwrap_or_else(|p| p.into_inner());
                    match ev.kind {
                        bosun_store::EventKind::Delete => g.remove(&ev.kv.key),
                        _ => match serde_json::from_slice::<Value>(&ev.kv.value) {
                            Ok(pod) => g.put(&ev.kv.key, &pod),
                            Err(_) => g.remove(&ev.kv.key),
                        },
                    }
                }
            }
        });
        Ok(this)
    }

    fn uses(&self, node: &str, namespace: &str, kind: &str, name: &str) -> bool {
        let g = self.graph.read().unwrap_or_else(|p| p.into_inner());
        let found = g.pods(node).any(|p| {
            p.namespace == namespace && p.objects.iter().any(|(k, n)| *k == kind && n == name)
        });
        found
    }

    /// Whether a pod on `node` uses a claim bound to the volume `pv`.
    async fn uses_volume(&self, node: &str, pv: &str) -> bool {
        let claims: Vec<(String, String)> = {
            let g = self.graph.read().unwrap_or_else(|p| p.into_inner());
            g.pods(node)
                .flat_map(|p| {
                    p.objects
                        .iter()
                        .filter(|(k, _)| *k == "persistentvolumeclaims")
                        .map(|(_, n)| (p.namespace.clone(), n.clone()))
                })
                .collect()
        };
        for (ns, claim) in claims {
            let key = format!("/registry/core/persistentvolumeclaims/{ns}/{claim}");
            if let Ok(Some(kv)) = self.store.get(&key, None).await {
                if let Ok(pvc) = serde_json::from_slice::<Value>(&kv.value) {
                    if pvc["spec"]["volumeName"].as_str() == Some(pv) {
                        return true;
                    }
                }
            }
        }
        false
    }
}

#[async_trait::async_trait]
impl Authorizer for NodeAuthorizer {
    async fn authorize(&self, user: &UserInfo, req: &RequestInfo<'_>) -> Decision {
        let Some(node) = node_of(user) else {
            return Decision::NoOpinion;
        };
        if req.path.is_none() {
            let ns = req.namespace.unwrap_or("");
            let read = matches!(req.verb, "get" | "list" | "watch");
            let graph_decides = match (req.group, req.resource, req.subresource) {
                ("", "secrets" | "configmaps" | "persistentvolumeclaims", None) => {
                    // One named object at a time (a list of them all is never allowed).
                    Some(
                        read && req
                            .name
                            .is_some_and(|n| self.uses(node, ns, req.resource, n)),
                    )
                }
                ("", "persistentvolumes", None) => Some(match req.name {
                    Some(pv) if read => self.uses_volume(node, pv).await,
                    _ => false,
                }),
                ("", "serviceaccounts", Some("token")) => Some(
                    req.verb == "create"
                        && req.name.is_some_and(|sa| {
                            let g = self.graph.read().unwrap_or_else(|p| p.into_inner());
                            let found = g
                                .pods(node)
                                .any(|p| p.namespace == ns && p.service_account == sa);
                            found
                        }),
                ),
                ("coordination.k8s.io", "leases", None) => Some(
                    ns == "kube-node-lease"
                        && (req.name == Some(node) || (req.name.is_none() && req.verb == "create")),
                ),
                _ => None,
            };
            if let Some(allowed) = graph_decides {
                return if allowed {
                    Decision::Allow
                } else {
                    Decision::NoOpinion
                };
            }
        }
        let access = Access::of(req);
        if self.rules.iter().any(|r| rule_allows(r, &access)) {
            Decision::Allow
        } else {
            Decision::NoOpinion
        }
    }
}

/// Upstream's NodeRestriction admission plugin.
#[derive(Clone, Copy, Debug, Default)]
pub struct NodeRestriction;

fn forbidden(message: String) -> ApiError {
    ApiError {
        code: 403,
        reason: "Forbidden",
        message,
        details: None,
    }
}

#[async_trait::async_trait]
impl AdmissionPlugin for NodeRestriction {
    fn name(&self) -> &str {
        "NodeRestriction"
    }

    async fn validate(&self, req: &AdmissionRequest<'_>, obj: &Object) -> Result<(), ApiError> {
        let Some(node) = node_of(req.user) else {
            return Ok(());
        };
        let r = req.resource;
        let who = &req.user.name;
        match (r.group.as_str(), r.plural.as_str()) {
            ("", "pods") => {
                let bound = obj
                    .get("spec")
                    .and_then(|s| s["nodeName"].as_str())
                    .unwrap_or("");
                let old_bound = req
                    .old
                    .and_then(|o| o.get("spec"))
                    .and_then(|s| s["nodeName"].as_str())
                    .unwrap_or(bound);
                if req.operation == Operation::Create && req.subresource.is_none() {
                    let mirror = obj
                        .get("metadata")
                        .and_then(|m| m["annotations"].get("kubernetes.io/config.mirror"))
                        .is_some();
                    if !mirror {
                        return Err(forbidden(format!(
                            "pod {:?} is forbidden: node {node:?} can only create mirror pods",
                            req.name
                        )));
                    }
                    if bound != node {
                        return Err(forbidden(format!(
                            "pod {:?} is forbidden: node {node:?} can only create pods with spec.nodeName set to itself",
                            req.name
                        )));
                    }
                    // Mirror pods are rare: the copy for the reference scan is fine here.
                    let refs = refs_of(&Value::Object(obj.clone()));
                    if let Some((kind, name)) = refs.objects.iter().next() {
                        return Err(forbidden(format!(
                            "pod {:?} is forbidden: node {node:?} can not create pods that reference {kind} ({name})",
                            req.name
                        )));
                    }
                    return Ok(());
                }
                if bound != node || old_bound != node {
                    return Err(forbidden(format!(
                        "pod {:?} is forbidden: node {node:?} can only change or evict pods bound to itself",
                        req.name
                    )));
                }
                Ok(())
            }
            ("", "nodes") => {
                if req.name != node {
                    return Err(forbidden(format!(
                        "node {:?} is forbidden: {who} can only change its own node object",
                        req.name
                    )));
                }
                admit_own_node(node, req, obj)
            }
            ("coordination.k8s.io", "leases") => {
                if req.namespace != Some("kube-node-lease") || req.name != node {
                    return Err(forbidden(format!(
                        "lease {:?} is forbidden: {who} can only access its own node lease",
                        req.name
                    )));
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

/// What a node may not change on its own Node object, as upstream: its taints (after
/// creation), labels in `node-restriction.kubernetes.io/`, and `kubernetes.io`/`k8s.io` labels
/// other than the ones a kubelet sets itself — each would let a node steer workloads to itself.
fn admit_own_node(node: &str, req: &AdmissionRequest<'_>, obj: &Object) -> Result<(), ApiError> {
    let labels = |o: Option<&Object>| -> std::collections::BTreeMap<String, String> {
        o.and_then(|o| o.get("metadata"))
            .and_then(|m| m.get("labels"))
            .and_then(Value::as_object)
            .map(|l| {
                l.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                    .collect()
            })
            .unwrap_or_default()
    };
    let (new, old) = match req.operation {
        Operation::Create => (labels(Some(obj)), Default::default()),
        Operation::Update => {
            let taints = |o: Option<&Object>| {
                o.and_then(|o| o.get("spec"))
                    .and_then(|s| s.get("taints"))
                    .filter(|t| !t.is_null())
                    .cloned()
                    .unwrap_or_else(|| Value::Array(Vec::new()))
            };
            if taints(Some(obj)) != taints(req.old) {
                return Err(forbidden(format!(
                    "node {node:?} is not allowed to modify taints"
                )));
            }
            (labels(Some(obj)), labels(req.old))
        }
        _ => return Ok(()),
    };
    let mut changed: Vec<&str> = new
        .iter()
        .filter(|(k, v)| old.get(*k) != Some(*v))
        .map(|(k, _)| k.as_str())
        .chain(
            old.keys()
                .filter(|k| !new.contains_key(*k))
                .map(String::as_str),
        )
        .filter(|k| forbidden_node_label(k))
        .collect();
    if changed.is_empty() {
        return Ok(());
    }
    changed.sort_unstable();
    changed.dedup();
    let list = changed.join(", ");
    Err(forbidden(match req.operation {
        Operation::Create => {
            format!("node {node:?} is not allowed to set the following labels: {list}")
        }
        _ => format!("node {node:?} is not allowed to modify labels: {list}"),
    }))
}

/// A label a node may not add, change or remove on itself (upstream's `getForbiddenLabels`).
pub fn forbidden_node_label(key: &str) -> bool {
    let Some((prefix, _)) = key.split_once('/') else {
        return false;
    };
    let within = |domain: &str| prefix == domain || prefix.ends_with(&format!(".{domain}"));
    if within("node-restriction.kubernetes.io") {
        return true;
    }
    if !(within("kubernetes.io") || within("k8s.io")) {
        return false;
    }
    // The labels a kubelet sets on its own node (upstream's `kubeletapis.IsKubeletLabel`).
    const KUBELET_LABELS: [&str; 11] = [
        "kubernetes.io/hostname",
        "topology.kubernetes.io/zone",
        "topology.kubernetes.io/region",
        "failure-domain.beta.kubernetes.io/zone",
        "failure-domain.beta.kubernetes.io/region",
        "beta.kubernetes.io/instance-type",
        "node.kubernetes.io/instance-type",
        "kubernetes.io/os",
        "kubernetes.io/arch",
        "beta.kubernetes.io/os",
        "beta.kubernetes.io/arch",
    ];
    let kubelet_label = KUBELET_LABELS.contains(&key)
        || within("kubelet.kubernetes.io")
        || within("node.kubernetes.io");
    !kubelet_label
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn a_node_may_set_only_the_labels_a_kubelet_sets() {
        for allowed in [
            "kubernetes.io/hostname",
            "kubernetes.io/arch",
            "node.kubernetes.io/instance-type",
            "x.node.kubernetes.io/anything",
            "kubelet.kubernetes.io/anything",
            "example.com/team",
            "plain",
        ] {
            assert!(!forbidden_node_label(allowed), "{allowed}");
        }
        for refused in [
            "node-restriction.kubernetes.io/x",
            "a.node-restriction.kubernetes.io/x",
            "node-role.kubernetes.io/control-plane",
            "kubernetes.io/role",
            "k8s.io/x",
            "sub.k8s.io/x",
        ] {
            assert!(forbidden_node_label(refused), "{refused}");
        }
    }

    #[test]
    fn a_pods_references_are_found_everywhere_it_names_them() {
        let pod = json!({
            "metadata": {"name": "p", "namespace": "ns"},
            "spec": {
                "serviceAccountName": "builder",
                "imagePullSecrets": [{"name": "pull"}],
                "volumes": [
                    {"name": "a", "secret": {"secretName": "vol-secret"}},
                    {"name": "b", "configMap": {"name": "vol-cm"}},
                    {"name": "c", "persistentVolumeClaim": {"claimName": "data"}},
                    {"name": "d", "projected": {"sources": [{"secret": {"name": "proj-secret"}}, {"configMap": {"name": "kube-root-ca.crt"}}]}},
                    {"name": "e", "ephemeral": {"volumeClaimTemplate": {}}},
                ],
                "containers": [{"name": "c", "env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "env-secret", "key": "k"}}}],
                                "envFrom": [{"configMapRef": {"name": "env-cm"}}]}],
            },
        });
        let refs = refs_of(&pod);
        assert_eq!(refs.service_account, "builder");
        let names: Vec<String> = refs
            .objects
            .iter()
            .map(|(k, n)| format!("{k}/{n}"))
            .collect();
        assert_eq!(
            names,
            [
                "configmaps/env-cm",
                "configmaps/kube-root-ca.crt",
                "configmaps/vol-cm",
                "persistentvolumeclaims/data",
                "persistentvolumeclaims/p-e",
                "secrets/env-secret",
                "secrets/proj-secret",
                "secrets/pull",
                "secrets/vol-secret",
            ]
        );
    }
}
