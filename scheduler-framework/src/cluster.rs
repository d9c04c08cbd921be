//! What the framework needs from the cluster, behind seams so the core runs without a server:
//! [`Cluster`] (the writes: bind, delete victims, nominate, report) and [`Listers`] (the
//! objects some plugins read: PVCs, PVs, StorageClasses, CSINodes, namespaces, PDBs, and the
//! Services and controllers that give topology spreading its default selectors).
//! [`MemoryCluster`] records writes in memory; `crate::runner` implements them with the API.

use async_trait::async_trait;
use bosun_api_types::apps::v1::{ReplicaSet, StatefulSet};
use bosun_api_types::core::v1::{
    Namespace, Node, PersistentVolume, PersistentVolumeClaim, Pod, ReplicationController, Service,
};
use bosun_api_types::policy::v1::PodDisruptionBudget;
use bosun_api_types::storage::v1::{CSINode, StorageClass};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

/// A write to the cluster failed.
#[derive(Debug, thiserror::Error)]
#[error("{action} {object}: {message}")]
pub struct ClusterError {
    /// What was attempted ("bind", "delete", …).
    pub action: &'static str,
    /// The object (`namespace/name`).
    pub object: String,
    /// Why it failed.
    pub message: String,
    /// Whether the object is gone (404), so there is nothing to retry.
    pub not_found: bool,
}

/// The writes the scheduler makes.
#[async_trait]
pub trait Cluster: Send + Sync {
    /// Binds `pod` to `node` (pods/binding).
    async fn bind(&self, pod: &Pod, node: &str) -> Result<(), ClusterError>;
    /// Deletes a preemption victim.
    async fn delete_pod(&self, pod: &Pod, preemptor: &Pod, node: &str) -> Result<(), ClusterError>;
    /// Sets (or clears) `status.nominatedNodeName`.
    async fn set_nominated_node(&self, pod: &Pod, node: Option<&str>) -> Result<(), ClusterError>;
    /// Reports a failed attempt: the PodScheduled=False condition and a FailedScheduling event.
    async fn unschedulable(
        &self,
        pod: &Pod,
        reason: &str,
        message: &str,
    ) -> Result<(), ClusterError>;
    /// Reports a successful bind (the Scheduled event).
    async fn scheduled(&self, pod: &Pod, node: &str) -> Result<(), ClusterError>;
    /// Sets an annotation on a PVC (`volume.kubernetes.io/selected-node`).
    async fn annotate_pvc(
        &self,
        namespace: &str,
        name: &str,
        key: &str,
        value: &str,
    ) -> Result<(), ClusterError>;
    /// Pre-binds a PV to a claim (`spec.claimRef`), for the PV controller to finish.
    async fn bind_pv(&self, pv: &str, claim: &PersistentVolumeClaim) -> Result<(), ClusterError>;
}

/// One kind of object, by key (`namespace/name`, or `name` for cluster-scoped kinds).
pub struct Lister<T> {
    items: RwLock<HashMap<String, Arc<T>>>,
}

impl<T> Default for Lister<T> {
    fn default() -> Self {
        Lister {
            items: RwLock::new(HashMap::new()),
        }
    }
}

impl<T> Lister<T> {
    /// An object by key.
    pub fn get(&self, key: &str) -> Option<Arc<T>> {
        self.items
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .cloned()
    }
    /// Every object.
    pub fn list(&self) -> Vec<Arc<T>> {
        self.items
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }
    /// Objects whose key starts with `namespace/`.
    pub fn list_namespace(&self, namespace: &str) -> Vec<Arc<T>> {
        let prefix = format!("{namespace}/");
        self.items
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(k, _)| k.starts_with(&prefix))
            .map(|(_, v)| v.clone())
            .collect()
    }
    /// Adds or replaces.
    pub fn insert(&self, key: impl Into<String>, item: Arc<T>) {
        self.items
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.into(), item);
    }
    /// Removes.
    pub fn remove(&self, key: &str) {
        self.items
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }
    /// How many.
    pub fn len(&self) -> usize {
        self.items.read().unwrap_or_else(|e| e.into_inner()).len()
    }
    /// Whether empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The objects plugins read besides nodes and pods.
#[derive(Default)]
pub struct Listers {
    /// Nodes by name (the cache has them too; Reserve and PreBind plugins look here).
    pub nodes: Lister<Node>,
    /// PersistentVolumeClaims by `namespace/name`.
    pub pvcs: Lister<PersistentVolumeClaim>,
    /// PersistentVolumes by name.
    pub pvs: Lister<PersistentVolume>,
    /// StorageClasses by name.
    pub storage_classes: Lister<StorageClass>,
    /// CSINodes by name.
    pub csi_nodes: Lister<CSINode>,
    /// Namespaces by name.
    pub namespaces: Lister<Namespace>,
    /// PodDisruptionBudgets by `namespace/name`.
    pub pdbs: Lister<PodDisruptionBudget>,
    /// Services by `namespace/name`.
    pub services: Lister<Service>,
    /// ReplicaSets by `namespace/name`.
    pub replica_sets: Lister<ReplicaSet>,
    /// StatefulSets by `namespace/name`.
    pub stateful_sets: Lister<StatefulSet>,
    /// ReplicationControllers by `namespace/name`.
    pub replication_controllers: Lister<ReplicationController>,
}

/// The key of a namespaced object.
pub fn key_of(meta: &bosun_api_types::meta::v1::ObjectMeta) -> String {
    match meta.namespace.as_deref() {
        Some(ns) if !ns.is_empty() => format!("{ns}/{}", meta.name.as_deref().unwrap_or("")),
        _ => meta.name.clone().unwrap_or_default(),
    }
}

impl Listers {
    /// A namespace's labels.
    pub fn namespace_labels(
        &self,
        name: &str,
    ) -> Option<std::collections::BTreeMap<String, String>> {
        self.namespaces.get(name).map(|n| n.metadata.labels.clone())
    }
}

/// A write recorded by [`MemoryCluster`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Recorded {
    /// A pod (`namespace/name`) bound to a node.
    Bound(String, String),
    /// A victim deleted.
    Deleted(String),
    /// A nomination set or cleared.
    Nominated(String, Option<String>),
    /// A FailedScheduling report: pod and message.
    Unschedulable(String, String),
    /// A PVC annotated: PVC key, annotation key, value.
    AnnotatedPvc(String, String, String),
    /// A PV pre-bound to a claim.
    BoundPv(String, String),
}

/// A [`Cluster`] that records every write and succeeds, for running the framework without a
/// server (tests and benchmarks). Writes are also sent on a channel, with the pod they apply
/// to, so a harness can feed them back as informer events.
#[derive(Default)]
pub struct MemoryCluster {
    log: Mutex<Vec<Recorded>>,
    applied: Mutex<Option<tokio::sync::mpsc::UnboundedSender<(Recorded, Pod)>>>,
}

impl MemoryCluster {
    /// A recording cluster whose writes are also sent on the returned channel.
    pub fn with_channel() -> (Self, tokio::sync::mpsc::UnboundedReceiver<(Recorded, Pod)>) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        (
            MemoryCluster {
                log: Mutex::new(Vec::new()),
                applied: Mutex::new(Some(tx)),
            },
            rx,
        )
    }

    /// Everything recorded so far.
    pub fn log(&self) -> Vec<Recorded> {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn push(&self, r: Recorded) {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).push(r);
    }

    fn apply(&self, r: Recorded, pod: &Pod) {
        if let Some(tx) = self
            .applied
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            let _ = tx.send((r.clone(), pod.clone()));
        }
        self.push(r);
    }
}

fn pod_key(pod: &Pod) -> String {
    key_of(&pod.metadata)
}

#[async_trait]
impl Cluster for MemoryCluster {
    async fn bind(&self, pod: &Pod, node: &str) -> Result<(), ClusterError> {
        self.apply(Recorded::Bound(pod_key(pod), node.to_string()), pod);
        Ok(())
    }
    async fn delete_pod(
        &self,
        pod: &Pod,
        _preemptor: &Pod,
        _node: &str,
    ) -> Result<(), ClusterError> {
        self.apply(Recorded::Deleted(pod_key(pod)), pod);
        Ok(())
    }
    async fn set_nominated_node(&self, pod: &Pod, node: Option<&str>) -> Result<(), ClusterError> {
        self.push(Recorded::Nominated(pod_key(pod), node.map(String::from)));
        Ok(())
    }
    async fn unschedulable(
        &self,
        pod: &Pod,
        _reason: &str,
        message: &str,
    ) -> Result<(), ClusterError> {
        self.push(Recorded::Unschedulable(pod_key(pod), message.to_string()));
        Ok(())
    }
    async fn scheduled(&self, _pod: &Pod, _node: &str) -> Result<(), ClusterError> {
        Ok(())
    }
    async fn annotate_pvc(
        &self,
        namespace: &str,
        name: &str,
        key: &str,
        value: &str,
    ) -> Result<(), ClusterError> {
        self.push(Recorded::AnnotatedPvc(
            format!("{namespace}/{name}"),
            key.into(),
            value.into(),
        ));
        Ok(())
    }
    async fn bind_pv(&self, pv: &str, claim: &PersistentVolumeClaim) -> Result<(), ClusterError> {
        self.push(Recorded::BoundPv(pv.into(), key_of(&claim.metadata)));
        Ok(())
    }
}
