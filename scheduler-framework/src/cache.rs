//! The scheduler's view of the cluster: [`Cache`] follows nodes and bound pods (and pods the
//! scheduler assumed onto nodes before their binding is confirmed); [`Snapshot`] is the
//! immutable copy one scheduling cycle reads, brought up to date incrementally: only the nodes
//! changed since the last cycle are copied in.

use crate::types::{NodeInfo, PodInfo};
use bosun_api_types::core::v1::Node;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The nodes as one scheduling cycle sees them.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    nodes: Vec<Arc<NodeInfo>>,
    index: HashMap<String, usize>,
    with_affinity: BTreeSet<String>,
    with_required_anti_affinity: BTreeSet<String>,
    image_nodes: HashMap<String, usize>,
    generation: u64,
}

impl Snapshot {
    /// A snapshot of these nodes (for tests and benchmarks that need no cache).
    pub fn from_nodes(nodes: impl IntoIterator<Item = NodeInfo>) -> Self {
        let mut s = Snapshot::default();
        for n in nodes {
            s.upsert(Arc::new(n));
        }
        s
    }

    /// Every node.
    pub fn nodes(&self) -> &[Arc<NodeInfo>] {
        &self.nodes
    }

    /// The number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether there are no nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// A node by name.
    pub fn get(&self, name: &str) -> Option<&Arc<NodeInfo>> {
        self.index.get(name).and_then(|i| self.nodes.get(*i))
    }

    /// Nodes that have a pod with any pod (anti-)affinity term.
    pub fn with_affinity(&self) -> impl Iterator<Item = &Arc<NodeInfo>> {
        self.with_affinity.iter().filter_map(|n| self.get(n))
    }

    /// Nodes that have a pod with a required anti-affinity term.
    pub fn with_required_anti_affinity(&self) -> impl Iterator<Item = &Arc<NodeInfo>> {
        self.with_required_anti_affinity
            .iter()
            .filter_map(|n| self.get(n))
    }

    /// On how many nodes an image (normalized name) is present.
    pub fn image_num_nodes(&self, image: &str) -> usize {
        self.image_nodes.get(image).copied().unwrap_or(0)
    }

    /// The cache generation this snapshot reflects.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    fn upsert(&mut self, info: Arc<NodeInfo>) {
        let name = info.name.clone();
        for img in info.images.keys() {
            *self.image_nodes.entry(img.clone()).or_default() += 1;
        }
        set_membership(
            &mut self.with_affinity,
            &name,
            !info.pods_with_affinity.is_empty(),
        );
        set_membership(
            &mut self.with_required_anti_affinity,
            &name,
            !info.pods_with_required_anti_affinity.is_empty(),
        );
        match self.index.get(&name) {
            Some(&i) => {
                let old = std::mem::replace(&mut self.nodes[i], info);
                self.forget_images(&old);
            }
            None => {
                self.index.insert(name, self.nodes.len());
                self.nodes.push(info);
            }
        }
    }

    fn remove(&mut self, name: &str) {
        let Some(i) = self.index.remove(name) else {
            return;
        };
        let old = self.nodes.swap_remove(i);
        if let Some(moved) = self.nodes.get(i) {
            self.index.insert(moved.name.clone(), i);
        }
        self.forget_images(&old);
        self.with_affinity.remove(name);
        self.with_required_anti_affinity.remove(name);
    }

    fn forget_images(&mut self, old: &NodeInfo) {
        for img in old.images.keys() {
            if let Some(n) = self.image_nodes.get_mut(img) {
                *n -= 1;
                if *n == 0 {
                    self.image_nodes.remove(img);
                }
            }
        }
    }
}

fn set_membership(set: &mut BTreeSet<String>, name: &str, member: bool) {
    if member {
        if !set.contains(name) {
            set.insert(name.to_string());
        }
    } else {
        set.remove(name);
    }
}

#[derive(Debug)]
struct PodState {
    info: Arc<PodInfo>,
    node: String,
    assumed: bool,
    /// Set when binding finished; an assumed pod not confirmed by then is dropped.
    deadline: Option<Instant>,
}

/// Errors from cache operations that the caller got wrong.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CacheError {
    /// The pod is already in the cache.
    #[error("pod {0} is already in the scheduler cache")]
    AlreadyPresent(String),
    /// The pod is not in the cache, or not assumed.
    #[error("pod {0} is not assumed in the scheduler cache")]
    NotAssumed(String),
}

/// Nodes and the pods on them, including assumed pods.
#[derive(Debug)]
pub struct Cache {
    nodes: HashMap<String, Arc<NodeInfo>>,
    changed: BTreeMap<u64, String>,
    last_change: HashMap<String, u64>,
    generation: u64,
    pods: HashMap<String, PodState>,
    ttl: Duration,
}

impl Default for Cache {
    fn default() -> Self {
        Cache::new(Duration::from_secs(30))
    }
}

impl Cache {
    /// An empty cache; assumed pods whose binding finished but was not confirmed by an informer
    /// within `ttl` are dropped.
    pub fn new(ttl: Duration) -> Self {
        Cache {
            nodes: HashMap::new(),
            changed: BTreeMap::new(),
            last_change: HashMap::new(),
            generation: 0,
            pods: HashMap::new(),
            ttl,
        }
    }

    fn touch(&mut self, name: &str) -> u64 {
        self.generation += 1;
        let g = self.generation;
        if let Some(old) = self.last_change.insert(name.to_string(), g) {
            self.changed.remove(&old);
        }
        self.changed.insert(g, name.to_string());
        g
    }

    fn node_mut(&mut self, name: &str) -> &mut NodeInfo {
        let g = self.touch(name);
        let entry = self.nodes.entry(name.to_string()).or_insert_with(|| {
            Arc::new(NodeInfo {
                name: name.to_string(),
                ..NodeInfo::default()
            })
        });
        let info = Arc::make_mut(entry);
        info.generation = g;
        info
    }

    /// A node was added or updated.
    pub fn add_node(&mut self, node: Arc<Node>) {
        let name = node.metadata.name.clone().unwrap_or_default();
        self.node_mut(&name).set_node(node);
    }

    /// A node was deleted; its pods stay until they are deleted too.
    pub fn remove_node(&mut self, name: &str) {
        let keep = match self.nodes.get_mut(name) {
            Some(info) if !info.pods.is_empty() => {
                Arc::make_mut(info).node = None;
                true
            }
            _ => false,
        };
        if !keep {
            self.nodes.remove(name);
        }
        self.touch(name);
    }

    /// The number of nodes with a Node object.
    pub fn node_count(&self) -> usize {
        self.nodes.values().filter(|n| n.node.is_some()).count()
    }

    /// The number of pods (assumed ones included).
    pub fn pod_count(&self) -> usize {
        self.pods.len()
    }

    /// Places `pod` on `node` before its binding is confirmed.
    pub fn assume_pod(&mut self, pod: Arc<PodInfo>, node: &str) -> Result<(), CacheError> {
        let uid = pod.uid().to_string();
        if self.pods.contains_key(&uid) {
            return Err(CacheError::AlreadyPresent(pod.key.clone()));
        }
        self.node_mut(node).add_pod(pod.clone());
        self.pods.insert(
            uid,
            PodState {
                info: pod,
                node: node.to_string(),
                assumed: true,
                deadline: None,
            },
        );
        Ok(())
    }

    /// Binding of an assumed pod finished: start its expiry clock.
    pub fn finish_binding(&mut self, uid: &str, now: Instant) {
        if let Some(p) = self.pods.get_mut(uid).filter(|p| p.assumed) {
            p.deadline = Some(now + self.ttl);
        }
    }

    /// Undoes [`Cache::assume_pod`] (binding failed).
    pub fn forget_pod(&mut self, uid: &str) -> Result<(), CacheError> {
        match self.pods.get(uid) {
            Some(p) if p.assumed => {
                let node = p.node.clone();
                self.pods.remove(uid);
                self.remove_from_node(&node, uid);
                Ok(())
            }
            _ => Err(CacheError::NotAssumed(uid.to_string())),
        }
    }

    /// Whether a pod is assumed (placed but not yet confirmed).
    pub fn is_assumed(&self, uid: &str) -> bool {
        self.pods.get(uid).is_some_and(|p| p.assumed)
    }

    fn remove_from_node(&mut self, node: &str, uid: &str) {
        let Some(info) = self.nodes.get(node) else {
            return;
        };
        if !info.pods.iter().any(|p| p.uid() == uid) {
            return;
        }
        let info = self.node_mut(node);
        info.remove_pod(uid);
        if info.node.is_none() && info.pods.is_empty() {
            self.nodes.remove(node);
        }
    }

    /// A bound pod was seen (added or updated); confirms an assumed pod.
    pub fn add_pod(&mut self, pod: Arc<PodInfo>) {
        let Some(node) = pod
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .filter(|n| !n.is_empty())
        else {
            return;
        };
        let uid = pod.uid().to_string();
        if let Some(old) = self.pods.remove(&uid) {
            self.remove_from_node(&old.node, &uid);
        }
        self.node_mut(&node).add_pod(pod.clone());
        self.pods.insert(
            uid,
            PodState {
                info: pod,
                node,
                assumed: false,
                deadline: None,
            },
        );
    }

    /// A bound pod was deleted.
    pub fn remove_pod(&mut self, uid: &str) {
        if let Some(old) = self.pods.remove(uid) {
            self.remove_from_node(&old.node, uid);
        }
    }

    /// A pod by UID, with its node.
    pub fn pod(&self, uid: &str) -> Option<(Arc<PodInfo>, &str)> {
        self.pods
            .get(uid)
            .map(|p| (p.info.clone(), p.node.as_str()))
    }

    /// Drops assumed pods whose binding finished more than the TTL ago without an informer
    /// confirming them; returns how many.
    pub fn cleanup_expired(&mut self, now: Instant) -> usize {
        let expired: Vec<String> = self
            .pods
            .iter()
            .filter(|(_, p)| p.assumed && p.deadline.is_some_and(|d| d <= now))
            .map(|(uid, _)| uid.clone())
            .collect();
        for uid in &expired {
            tracing::warn!(pod = %uid, "assumed pod expired without its binding being observed");
            if let Some(p) = self.pods.remove(uid) {
                self.remove_from_node(&p.node, uid);
            }
        }
        expired.len()
    }

    /// Brings `snapshot` up to date, copying only the nodes changed since its generation.
    /// Returns how many nodes were copied or removed.
    pub fn update_snapshot(&self, snapshot: &mut Snapshot) -> usize {
        let mut n = 0;
        for (_, name) in self.changed.range(snapshot.generation + 1..) {
            n += 1;
            match self.nodes.get(name) {
                Some(info) if info.node.is_some() => snapshot.upsert(info.clone()),
                _ => snapshot.remove(name),
            }
        }
        snapshot.generation = self.generation;
        n
    }

    /// A node's current info.
    pub fn node(&self, name: &str) -> Option<&Arc<NodeInfo>> {
        self.nodes.get(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bosun_api_types::core::v1::Pod;
    use serde_json::json;

    fn node(name: &str) -> Arc<Node> {
        Arc::new(
            serde_json::from_value(json!({"metadata": {"name": name},
                "status": {"allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"},
                           "images": [{"names": ["nginx:1"], "sizeBytes": 100}]}}))
            .unwrap(),
        )
    }

    fn pod(uid: &str, node: Option<&str>) -> Arc<PodInfo> {
        let p: Pod = serde_json::from_value(json!({"metadata": {"name": uid, "namespace": "d", "uid": uid},
            "spec": {"nodeName": node, "containers": [{"name": "c", "resources": {"requests": {"cpu": "1"}}}]}}))
        .unwrap();
        PodInfo::new(Arc::new(p))
    }

    #[test]
    fn snapshot_updates_only_changed_nodes() {
        let mut c = Cache::default();
        for i in 0..100 {
            c.add_node(node(&format!("n{i}")));
        }
        let mut s = Snapshot::default();
        assert_eq!(c.update_snapshot(&mut s), 100);
        assert_eq!(s.len(), 100);
        assert_eq!(s.image_num_nodes("nginx:1"), 100);
        c.assume_pod(pod("a", None), "n7").unwrap();
        assert_eq!(c.update_snapshot(&mut s), 1);
        assert_eq!(s.get("n7").unwrap().requested.milli_cpu, 1000);
        assert_eq!(c.update_snapshot(&mut s), 0);
        c.remove_node("n3");
        c.remove_node("n8");
        assert_eq!(c.update_snapshot(&mut s), 2);
        assert_eq!(s.len(), 98);
        assert!(s.get("n3").is_none());
        assert_eq!(s.image_num_nodes("nginx:1"), 98);
        // Every remaining node is reachable through the index after swap removals.
        for n in s.nodes() {
            assert_eq!(s.get(&n.name).map(|x| &x.name), Some(&n.name));
        }
    }

    #[test]
    fn a_cycle_keeps_its_snapshot_while_the_cache_moves_on() {
        let mut c = Cache::default();
        c.add_node(node("n"));
        let mut s = Snapshot::default();
        c.update_snapshot(&mut s);
        let held = s.get("n").unwrap().clone();
        c.assume_pod(pod("a", None), "n").unwrap();
        assert_eq!(held.requested.milli_cpu, 0, "copy on write");
        c.update_snapshot(&mut s);
        assert_eq!(s.get("n").unwrap().requested.milli_cpu, 1000);
    }

    #[test]
    fn assumed_pods_confirm_forget_and_expire() {
        let mut c = Cache::new(Duration::from_secs(30));
        c.add_node(node("n"));
        c.assume_pod(pod("a", None), "n").unwrap();
        assert_eq!(
            c.assume_pod(pod("a", None), "n"),
            Err(CacheError::AlreadyPresent("d/a".into()))
        );
        c.forget_pod("a").unwrap();
        assert_eq!(c.node("n").unwrap().pods.len(), 0);
        // Confirmed by an informer: no longer assumed, never expires.
        c.assume_pod(pod("b", None), "n").unwrap();
        c.add_pod(pod("b", Some("n")));
        assert!(!c.is_assumed("b"));
        assert_eq!(c.node("n").unwrap().pods.len(), 1);
        // Not confirmed: expires after the TTL once binding finished.
        let t0 = Instant::now();
        c.assume_pod(pod("c", None), "n").unwrap();
        c.finish_binding("c", t0);
        assert_eq!(c.cleanup_expired(t0 + Duration::from_secs(29)), 0);
        assert_eq!(c.cleanup_expired(t0 + Duration::from_secs(31)), 1);
        assert_eq!(c.node("n").unwrap().pods.len(), 1);
        c.remove_pod("b");
        assert_eq!(c.node("n").unwrap().requested.milli_cpu, 0);
    }

    #[test]
    fn pods_seen_before_their_node_wait_for_it() {
        let mut c = Cache::default();
        c.add_pod(pod("a", Some("late")));
        let mut s = Snapshot::default();
        c.update_snapshot(&mut s);
        assert!(s.get("late").is_none());
        c.add_node(node("late"));
        c.update_snapshot(&mut s);
        assert_eq!(s.get("late").unwrap().pods.len(), 1);
    }
}
