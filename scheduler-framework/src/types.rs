//! What the scheduler knows about pods and nodes, precomputed once per object so plugins read
//! plain numbers in the hot path: [`Resource`], [`PodInfo`], [`NodeInfo`].

use bosun_api_types::core::v1::{Node, Pod, PodAffinityTerm};
use bosun_api_types::meta::v1::LabelSelector;
use bosun_api_types::selector::{LabelSelectorExt, Operator, Requirement, Selector};
use bosun_api_types::Quantity;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// The CPU a container without a CPU request counts as when scoring (upstream's 100m).
pub const DEFAULT_MILLI_CPU_REQUEST: i64 = 100;
/// The memory a container without a memory request counts as when scoring (200 MiB).
pub const DEFAULT_MEMORY_REQUEST: i64 = 200 * 1024 * 1024;

/// An amount of every resource the scheduler accounts for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resource {
    /// CPU in millicores.
    pub milli_cpu: i64,
    /// Memory in bytes.
    pub memory: i64,
    /// Ephemeral storage in bytes.
    pub ephemeral_storage: i64,
    /// The number of pods (only meaningful for allocatable).
    pub allowed_pods: i64,
    /// Extended and hugepages resources by name, in their base unit.
    pub scalar: BTreeMap<String, i64>,
}

impl Resource {
    /// Parses a resource list (`requests`, `allocatable`, …).
    pub fn from_list(list: &BTreeMap<String, Quantity>) -> Self {
        let mut r = Resource::default();
        for (name, q) in list {
            r.set(name, q);
        }
        r
    }

    fn set(&mut self, name: &str, q: &Quantity) {
        match name {
            "cpu" => self.milli_cpu = q.milli_value(),
            "memory" => self.memory = q.value(),
            "ephemeral-storage" => self.ephemeral_storage = q.value(),
            "pods" => self.allowed_pods = q.value(),
            other if is_scalar(other) => {
                self.scalar.insert(other.to_string(), q.value());
            }
            _ => {}
        }
    }

    /// Adds `other` to this amount.
    pub fn add(&mut self, other: &Resource) {
        self.milli_cpu += other.milli_cpu;
        self.memory += other.memory;
        self.ephemeral_storage += other.ephemeral_storage;
        self.allowed_pods += other.allowed_pods;
        for (k, v) in &other.scalar {
            *self.scalar.entry(k.clone()).or_default() += v;
        }
    }

    /// Subtracts `other` from this amount.
    pub fn sub(&mut self, other: &Resource) {
        self.milli_cpu -= other.milli_cpu;
        self.memory -= other.memory;
        self.ephemeral_storage -= other.ephemeral_storage;
        self.allowed_pods -= other.allowed_pods;
        for (k, v) in &other.scalar {
            *self.scalar.entry(k.clone()).or_default() -= v;
        }
    }

    /// Raises each resource to at least `other`'s.
    pub fn max_with(&mut self, other: &Resource) {
        self.milli_cpu = self.milli_cpu.max(other.milli_cpu);
        self.memory = self.memory.max(other.memory);
        self.ephemeral_storage = self.ephemeral_storage.max(other.ephemeral_storage);
        for (k, v) in &other.scalar {
            let e = self.scalar.entry(k.clone()).or_default();
            *e = (*e).max(*v);
        }
    }

    /// The amount of one resource by its API name.
    pub fn get(&self, name: &str) -> i64 {
        match name {
            "cpu" => self.milli_cpu,
            "memory" => self.memory,
            "ephemeral-storage" => self.ephemeral_storage,
            "pods" => self.allowed_pods,
            other => self.scalar.get(other).copied().unwrap_or(0),
        }
    }
}

/// Whether a resource name is an extended or hugepages resource (counted in `scalar`).
pub fn is_scalar(name: &str) -> bool {
    name.starts_with("hugepages-")
        || name.starts_with("attachable-volumes-")
        || (name.contains('/') && !name.starts_with("kubernetes.io/"))
}

/// A host port a pod asks for.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct HostPort {
    /// The host IP (`0.0.0.0` when unset).
    pub ip: String,
    /// TCP, UDP or SCTP.
    pub protocol: String,
    /// The port.
    pub port: i32,
}

impl HostPort {
    /// Whether two host ports collide: same protocol and port, and the same IP or either is
    /// the wildcard.
    pub fn conflicts(&self, other: &HostPort) -> bool {
        self.port == other.port
            && self.protocol == other.protocol
            && (self.ip == other.ip || self.ip == "0.0.0.0" || other.ip == "0.0.0.0")
    }
}

/// A pod (anti-)affinity term compiled for matching.
#[derive(Clone, Debug)]
pub struct AffinityTerm {
    /// Namespaces named by the term (the pod's own when neither namespaces nor a namespace
    /// selector is given).
    pub namespaces: Vec<String>,
    /// The namespace selector, if any (an empty one selects every namespace).
    pub namespace_selector: Option<Selector>,
    /// The label selector (matchLabelKeys / mismatchLabelKeys merged in).
    pub selector: Selector,
    /// The topology key.
    pub topology_key: String,
}

impl AffinityTerm {
    fn compile(term: &PodAffinityTerm, pod: &Pod) -> Option<Self> {
        let own_ns = pod.metadata.namespace.clone().unwrap_or_default();
        let mut selector = match &term.label_selector {
            Some(s) => s.to_selector().ok()?,
            // A nil selector matches nothing.
            None => Selector::nothing(),
        };
        if term.label_selector.is_some() {
            let mut reqs = selector.requirements().to_vec();
            for (keys, op) in [
                (&term.match_label_keys, Operator::In),
                (&term.mismatch_label_keys, Operator::NotIn),
            ] {
                for k in keys {
                    if let Some(v) = pod.metadata.labels.get(k) {
                        if let Ok(r) = Requirement::new(k, op, vec![v.clone()]) {
                            reqs.push(r);
                        }
                    }
                }
            }
            selector = Selector::from_requirements(reqs);
        }
        let namespace_selector = term
            .namespace_selector
            .as_ref()
            .and_then(|s: &LabelSelector| s.to_selector().ok());
        let namespaces = if term.namespaces.is_empty() && term.namespace_selector.is_none() {
            vec![own_ns]
        } else {
            term.namespaces.clone()
        };
        Some(AffinityTerm {
            namespaces,
            namespace_selector,
            selector,
            topology_key: term.topology_key.clone(),
        })
    }

    /// Whether `pod` (whose namespace has labels `ns_labels`) is selected by this term.
    pub fn matches(&self, pod: &Pod, ns_labels: Option<&BTreeMap<String, String>>) -> bool {
        let ns = pod.metadata.namespace.as_deref().unwrap_or("");
        let ns_ok = self.namespaces.iter().any(|n| n == ns)
            || match (&self.namespace_selector, ns_labels) {
                (Some(sel), Some(labels)) => sel.matches(labels),
                (Some(sel), None) => sel.is_everything(),
                (None, _) => false,
            };
        ns_ok && self.selector.matches(&pod.metadata.labels)
    }
}

/// A preferred (anti-)affinity term with its weight.
#[derive(Clone, Debug)]
pub struct WeightedAffinityTerm {
    /// The term.
    pub term: AffinityTerm,
    /// Its weight (1–100).
    pub weight: i32,
}

/// A pod with everything the plugins need precomputed.
#[derive(Clone, Debug)]
pub struct PodInfo {
    /// The pod itself.
    pub pod: Arc<Pod>,
    /// `namespace/name`.
    pub key: String,
    /// Effective requests: containers summed, raised to any init container, plus overhead.
    pub requests: Resource,
    /// CPU (milli) and memory requests with upstream's defaults for unset values, for scoring.
    pub non_zero_requests: (i64, i64),
    /// Host ports from every container.
    pub host_ports: Vec<HostPort>,
    /// Required pod affinity terms.
    pub required_affinity: Vec<AffinityTerm>,
    /// Required pod anti-affinity terms.
    pub required_anti_affinity: Vec<AffinityTerm>,
    /// Preferred pod affinity terms.
    pub preferred_affinity: Vec<WeightedAffinityTerm>,
    /// Preferred pod anti-affinity terms.
    pub preferred_anti_affinity: Vec<WeightedAffinityTerm>,
}

impl PodInfo {
    /// Precomputes everything for `pod`.
    pub fn new(pod: Arc<Pod>) -> Arc<Self> {
        let key = format!(
            "{}/{}",
            pod.metadata.namespace.as_deref().unwrap_or(""),
            pod.metadata.name.as_deref().unwrap_or("")
        );
        let mut requests = Resource::default();
        let mut non_zero = (0i64, 0i64);
        let mut host_ports = Vec::new();
        let (mut affinity, mut anti, mut pref, mut pref_anti) = (vec![], vec![], vec![], vec![]);
        if let Some(spec) = &pod.spec {
            for c in &spec.containers {
                let req = c
                    .resources
                    .as_ref()
                    .map(|r| Resource::from_list(&r.requests))
                    .unwrap_or_default();
                let has = |n: &str| {
                    c.resources
                        .as_ref()
                        .is_some_and(|r| r.requests.contains_key(n))
                };
                non_zero.0 += if has("cpu") {
                    req.milli_cpu
                } else {
                    DEFAULT_MILLI_CPU_REQUEST
                };
                non_zero.1 += if has("memory") {
                    req.memory
                } else {
                    DEFAULT_MEMORY_REQUEST
                };
                requests.add(&req);
                for p in &c.ports {
                    if let Some(hp) = p.host_port.filter(|p| *p > 0) {
                        host_ports.push(HostPort {
                            ip: p
                                .host_ip
                                .clone()
                                .filter(|s| !s.is_empty())
                                .unwrap_or_else(|| "0.0.0.0".into()),
                            protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                            port: hp,
                        });
                    }
                }
            }
            for c in &spec.init_containers {
                if let Some(r) = &c.resources {
                    requests.max_with(&Resource::from_list(&r.requests));
                }
            }
            if !spec.overhead.is_empty() {
                let o = Resource::from_list(&spec.overhead);
                requests.add(&o);
                non_zero.0 += o.milli_cpu;
                non_zero.1 += o.memory;
            }
            if let Some(a) = &spec.affinity {
                if let Some(pa) = &a.pod_affinity {
                    affinity = compile_terms(
                        &pa.required_during_scheduling_ignored_during_execution,
                        &pod,
                    );
                    pref = compile_weighted(
                        &pa.preferred_during_scheduling_ignored_during_execution,
                        &pod,
                    );
                }
                if let Some(pa) = &a.pod_anti_affinity {
                    anti = compile_terms(
                        &pa.required_during_scheduling_ignored_during_execution,
                        &pod,
                    );
                    pref_anti = compile_weighted(
                        &pa.preferred_during_scheduling_ignored_during_execution,
                        &pod,
                    );
                }
            }
        }
        Arc::new(PodInfo {
            pod,
            key,
            requests,
            non_zero_requests: non_zero,
            host_ports,
            required_affinity: affinity,
            required_anti_affinity: anti,
            preferred_affinity: pref,
            preferred_anti_affinity: pref_anti,
        })
    }

    /// The pod's namespace.
    pub fn namespace(&self) -> &str {
        self.pod.metadata.namespace.as_deref().unwrap_or("")
    }

    /// The pod's name.
    pub fn name(&self) -> &str {
        self.pod.metadata.name.as_deref().unwrap_or("")
    }

    /// The pod's UID.
    pub fn uid(&self) -> &str {
        self.pod.metadata.uid.as_deref().unwrap_or("")
    }

    /// The pod's priority (0 when unset).
    pub fn priority(&self) -> i32 {
        priority(&self.pod)
    }

    /// Whether the pod has any pod affinity or anti-affinity term.
    pub fn has_affinity(&self) -> bool {
        !(self.required_affinity.is_empty()
            && self.required_anti_affinity.is_empty()
            && self.preferred_affinity.is_empty()
            && self.preferred_anti_affinity.is_empty())
    }
}

/// A pod's priority (0 when unset).
pub fn priority(pod: &Pod) -> i32 {
    pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0)
}

fn compile_terms(terms: &[PodAffinityTerm], pod: &Pod) -> Vec<AffinityTerm> {
    terms
        .iter()
        .filter_map(|t| AffinityTerm::compile(t, pod))
        .collect()
}

fn compile_weighted(
    terms: &[bosun_api_types::core::v1::WeightedPodAffinityTerm],
    pod: &Pod,
) -> Vec<WeightedAffinityTerm> {
    terms
        .iter()
        .filter_map(|t| {
            Some(WeightedAffinityTerm {
                term: AffinityTerm::compile(&t.pod_affinity_term, pod)?,
                weight: t.weight,
            })
        })
        .collect()
}

/// A node with the pods on it and their totals.
#[derive(Clone, Debug, Default)]
pub struct NodeInfo {
    /// The node's name.
    pub name: String,
    /// The node object (None while only pods bound to it are known).
    pub node: Option<Arc<Node>>,
    /// Pods on the node, assumed ones included.
    pub pods: Vec<Arc<PodInfo>>,
    /// The pods with any pod (anti-)affinity term.
    pub pods_with_affinity: Vec<Arc<PodInfo>>,
    /// The pods with a required anti-affinity term.
    pub pods_with_required_anti_affinity: Vec<Arc<PodInfo>>,
    /// Host ports in use.
    pub used_ports: Vec<HostPort>,
    /// The sum of the pods' requests (allowed_pods counts the pods).
    pub requested: Resource,
    /// The sum of the pods' requests with defaults for unset CPU and memory (for scoring).
    pub non_zero_requested: (i64, i64),
    /// The node's allocatable resources.
    pub allocatable: Resource,
    /// Images on the node: normalized name to size in bytes.
    pub images: HashMap<String, i64>,
    /// PVCs in use by pods here (`namespace/name` to the number of pods).
    pub pvc_refs: HashMap<String, usize>,
    /// Bumped by the cache on every change.
    pub generation: u64,
}

impl NodeInfo {
    /// A NodeInfo for `node` with no pods.
    pub fn new(node: Arc<Node>) -> Self {
        let mut n = NodeInfo::default();
        n.set_node(node);
        n
    }

    /// Replaces the node object (allocatable and images follow it).
    pub fn set_node(&mut self, node: Arc<Node>) {
        self.name = node.metadata.name.clone().unwrap_or_default();
        let status = node.status.as_ref();
        self.allocatable = status
            .map(|s| Resource::from_list(&s.allocatable))
            .unwrap_or_default();
        self.images = status
            .map(|s| {
                s.images
                    .iter()
                    .flat_map(|i| {
                        let size = i.size_bytes.unwrap_or(0);
                        i.names.iter().map(move |n| (normalize_image(n), size))
                    })
                    .collect()
            })
            .unwrap_or_default();
        self.node = Some(node);
    }

    /// The node's labels (empty while the node is unknown).
    pub fn labels(&self) -> &BTreeMap<String, String> {
        static EMPTY: BTreeMap<String, String> = BTreeMap::new();
        self.node
            .as_ref()
            .map(|n| &n.metadata.labels)
            .unwrap_or(&EMPTY)
    }

    /// Accounts for a pod placed on this node.
    pub fn add_pod(&mut self, pi: Arc<PodInfo>) {
        self.requested.add(&pi.requests);
        self.requested.allowed_pods += 1;
        self.non_zero_requested.0 += pi.non_zero_requests.0;
        self.non_zero_requested.1 += pi.non_zero_requests.1;
        self.used_ports.extend(pi.host_ports.iter().cloned());
        for claim in pvc_names(&pi) {
            *self.pvc_refs.entry(claim).or_default() += 1;
        }
        if pi.has_affinity() {
            self.pods_with_affinity.push(pi.clone());
        }
        if !pi.required_anti_affinity.is_empty() {
            self.pods_with_required_anti_affinity.push(pi.clone());
        }
        self.pods.push(pi);
    }

    /// Removes a pod by UID; false if it was not here.
    pub fn remove_pod(&mut self, uid: &str) -> bool {
        let Some(i) = self.pods.iter().position(|p| p.uid() == uid) else {
            return false;
        };
        let pi = self.pods.swap_remove(i);
        self.pods_with_affinity.retain(|p| p.uid() != uid);
        self.pods_with_required_anti_affinity
            .retain(|p| p.uid() != uid);
        self.requested.sub(&pi.requests);
        self.requested.allowed_pods -= 1;
        self.non_zero_requested.0 -= pi.non_zero_requests.0;
        self.non_zero_requested.1 -= pi.non_zero_requests.1;
        for hp in &pi.host_ports {
            if let Some(j) = self.used_ports.iter().position(|u| u == hp) {
                self.used_ports.swap_remove(j);
            }
        }
        for claim in pvc_names(&pi) {
            if let Some(n) = self.pvc_refs.get_mut(&claim) {
                *n -= 1;
                if *n == 0 {
                    self.pvc_refs.remove(&claim);
                }
            }
        }
        true
    }
}

/// The `namespace/name` of every PVC a pod uses.
pub fn pvc_names(pi: &PodInfo) -> impl Iterator<Item = String> + '_ {
    let ns = pi.namespace();
    pi.pod
        .spec
        .iter()
        .flat_map(|s| s.volumes.iter())
        .filter_map(move |v| {
            v.persistent_volume_claim
                .as_ref()
                .map(|c| format!("{ns}/{}", c.claim_name))
        })
}

/// An image name as the node reports it and as a pod names it, made comparable: a missing
/// tag becomes `:latest`, and `docker.io/library/` is dropped.
pub fn normalize_image(name: &str) -> String {
    let name = name
        .strip_prefix("docker.io/library/")
        .or_else(|| name.strip_prefix("docker.io/"))
        .unwrap_or(name);
    let last = name.rsplit('/').next().unwrap_or(name);
    if name.contains('@') || last.contains(':') {
        name.to_string()
    } else {
        format!("{name}:latest")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(v: serde_json::Value) -> Arc<Pod> {
        Arc::new(serde_json::from_value(v).unwrap())
    }

    #[test]
    fn requests_sum_containers_and_raise_to_init() {
        let p = pod(
            json!({"metadata": {"name": "p", "namespace": "d"}, "spec": {
            "containers": [
                {"name": "a", "resources": {"requests": {"cpu": "100m", "memory": "1Gi"}}},
                {"name": "b", "resources": {"requests": {"cpu": "200m"}}, "ports": [{"containerPort": 80, "hostPort": 8080}]}],
            "initContainers": [{"name": "i", "resources": {"requests": {"cpu": "1", "example.com/gpu": "2"}}}],
            "overhead": {"cpu": "10m"}}}),
        );
        let pi = PodInfo::new(p);
        assert_eq!(pi.requests.milli_cpu, 1010);
        assert_eq!(pi.requests.memory, 1 << 30);
        assert_eq!(pi.requests.scalar["example.com/gpu"], 2);
        assert_eq!(
            pi.non_zero_requests,
            (310, (1 << 30) + DEFAULT_MEMORY_REQUEST)
        );
        assert_eq!(pi.host_ports[0].port, 8080);
        assert_eq!(pi.key, "d/p");
    }

    #[test]
    fn node_info_add_remove_round_trips() {
        let mut n = NodeInfo::default();
        let p = PodInfo::new(pod(
            json!({"metadata": {"name": "p", "uid": "u1"}, "spec": {
            "containers": [{"name": "a", "resources": {"requests": {"cpu": "1"}}, "ports": [{"containerPort": 1, "hostPort": 9}]}]}}),
        ));
        n.add_pod(p);
        assert_eq!(n.requested.milli_cpu, 1000);
        assert_eq!(n.used_ports.len(), 1);
        assert!(n.remove_pod("u1"));
        assert_eq!(n.requested, Resource::default());
        assert!(n.used_ports.is_empty());
        assert!(!n.remove_pod("u1"));
    }

    #[test]
    fn image_names_normalize() {
        assert_eq!(normalize_image("nginx"), "nginx:latest");
        assert_eq!(normalize_image("docker.io/library/nginx:1.2"), "nginx:1.2");
        assert_eq!(
            normalize_image("localhost:5000/x"),
            "localhost:5000/x:latest"
        );
    }

    #[test]
    fn host_ports_conflict_with_wildcards() {
        let hp = |ip: &str, port| HostPort {
            ip: ip.into(),
            protocol: "TCP".into(),
            port,
        };
        assert!(hp("0.0.0.0", 80).conflicts(&hp("10.0.0.1", 80)));
        assert!(!hp("10.0.0.2", 80).conflicts(&hp("10.0.0.1", 80)));
        assert!(!hp("0.0.0.0", 81).conflicts(&hp("0.0.0.0", 80)));
    }
}
