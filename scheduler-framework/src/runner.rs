//! The running scheduler: [`ApiCluster`] writes through the API (pods/binding, victim
//! deletion, `nominatedNodeName`, the PodScheduled condition, FailedScheduling and Scheduled
//! events), and [`run`] feeds shared informers into a [`Scheduler`] and drives its loop.
//!
//! ```no_run
//! # async fn demo(client: bosun_client::Client) {
//! use bosun_scheduler_framework::runner;
//! runner::run(client, runner::Options::default()).await.unwrap();
//! # }
//! ```

use crate::cluster::{key_of, Cluster, ClusterError, Listers};
use crate::config::{ConfigError, SchedulerConfig};
use crate::interface::{ActionType, EventResource};
use crate::plugins::Registry;
use crate::scheduler::{Events, Scheduler, Shared};
use async_trait::async_trait;
use bosun_api_types::apps::v1::{ReplicaSet, StatefulSet};
use bosun_api_types::core::v1::{
    Namespace, Node, PersistentVolume, PersistentVolumeClaim, Pod, ReplicationController, Service,
};
use bosun_api_types::policy::v1::PodDisruptionBudget;
use bosun_api_types::storage::v1::{CSINode, StorageClass};
use bosun_api_types::Resource;
use bosun_client::events::{EventType, Recorder};
use bosun_client::informer::{Informer, InformerFactory, Notification};
use bosun_client::{Api, Client, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::broadcast::error::RecvError;

/// [`Cluster`] through the API server.
pub struct ApiCluster {
    client: Client,
    recorder: Recorder,
}

impl ApiCluster {
    /// Writes with `client`; events come from `default-scheduler`.
    pub fn new(client: Client) -> Self {
        let host = std::fs::read_to_string("/etc/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_default();
        ApiCluster {
            recorder: Recorder::core(client.clone(), "default-scheduler", &host),
            client,
        }
    }

    fn pods(&self, pod: &Pod) -> Api<Pod> {
        Api::namespaced(
            self.client.clone(),
            pod.metadata.namespace.as_deref().unwrap_or(""),
        )
    }
}

fn err(action: &'static str, object: String, e: bosun_client::Error) -> ClusterError {
    ClusterError {
        action,
        not_found: e.is_not_found(),
        message: e.to_string(),
        object,
    }
}

fn name(pod: &Pod) -> &str {
    pod.metadata.name.as_deref().unwrap_or("")
}

#[async_trait]
impl Cluster for ApiCluster {
    async fn bind(&self, pod: &Pod, node: &str) -> Result<(), ClusterError> {
        let binding = json!({
            "apiVersion": "v1", "kind": "Binding",
            "metadata": {"name": name(pod), "namespace": pod.metadata.namespace, "uid": pod.metadata.uid},
            "target": {"apiVersion": "v1", "kind": "Node", "name": node},
        });
        self.pods(pod)
            .create_subresource::<_, serde_json::Value>(
                "binding",
                name(pod),
                &PostParams::default(),
                &binding,
            )
            .await
            .map(|_| ())
            .map_err(|e| err("bind", key_of(&pod.metadata), e))
    }

    async fn delete_pod(&self, pod: &Pod, preemptor: &Pod, node: &str) -> Result<(), ClusterError> {
        let params = DeleteParams {
            precondition_uid: pod.metadata.uid.clone(),
            ..Default::default()
        };
        self.pods(pod)
            .delete(name(pod), &params)
            .await
            .map_err(|e| err("delete", key_of(&pod.metadata), e))?;
        let note = format!(
            "Preempted by pod {} on node {node}",
            preemptor.metadata.uid.as_deref().unwrap_or("")
        );
        let _ = self
            .recorder
            .publish(
                &Recorder::reference_to(pod),
                EventType::Normal,
                "Preempted",
                "Preempting",
                &note,
            )
            .await;
        Ok(())
    }

    async fn set_nominated_node(&self, pod: &Pod, node: Option<&str>) -> Result<(), ClusterError> {
        self.pods(pod)
            .patch_status::<serde_json::Value>(
                name(pod),
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"nominatedNodeName": node}})),
            )
            .await
            .map(|_| ())
            .map_err(|e| err("nominate", key_of(&pod.metadata), e))
    }

    async fn unschedulable(
        &self,
        pod: &Pod,
        reason: &str,
        message: &str,
    ) -> Result<(), ClusterError> {
        let patch = json!({"status": {"conditions": [{
            "type": "PodScheduled", "status": "False", "reason": reason, "message": message,
            "lastProbeTime": null,
            "lastTransitionTime": bosun_api_types::Time::now(),
        }]}});
        let r = self
            .pods(pod)
            .patch_status::<serde_json::Value>(
                name(pod),
                &PatchParams::default(),
                &Patch::Strategic(patch),
            )
            .await;
        let _ = self
            .recorder
            .publish(
                &Recorder::reference_to(pod),
                EventType::Warning,
                "FailedScheduling",
                "Scheduling",
                message,
            )
            .await;
        r.map(|_| ())
            .map_err(|e| err("report", key_of(&pod.metadata), e))
    }

    async fn scheduled(&self, pod: &Pod, node: &str) -> Result<(), ClusterError> {
        let note = format!("Successfully assigned {} to {node}", key_of(&pod.metadata));
        self.recorder
            .publish(
                &Recorder::reference_to(pod),
                EventType::Normal,
                "Scheduled",
                "Binding",
                &note,
            )
            .await
            .map_err(|e| err("record", key_of(&pod.metadata), e))
    }

    async fn annotate_pvc(
        &self,
        namespace: &str,
        name: &str,
        key: &str,
        value: &str,
    ) -> Result<(), ClusterError> {
        let api: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), namespace);
        api.patch::<serde_json::Value>(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {key: value}}})),
        )
        .await
        .map(|_| ())
        .map_err(|e| err("annotate", format!("{namespace}/{name}"), e))
    }

    async fn bind_pv(&self, pv: &str, claim: &PersistentVolumeClaim) -> Result<(), ClusterError> {
        let api: Api<PersistentVolume> = Api::all(self.client.clone());
        let claim_ref = json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "namespace": claim.metadata.namespace, "name": claim.metadata.name, "uid": claim.metadata.uid});
        api.patch::<serde_json::Value>(
            pv,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"claimRef": claim_ref}})),
        )
        .await
        .map(|_| ())
        .map_err(|e| err("bind", pv.to_string(), e))
    }
}

/// How to run.
///
/// ```no_run
/// use bosun_scheduler_framework::{config::SchedulerConfig, plugins::Registry, runner};
/// # async fn run(client: bosun_client::Client) -> Result<(), Box<dyn std::error::Error>> {
/// let config = SchedulerConfig::parse(std::fs::read("scheduler.yaml")?.as_slice())?;
/// let registry = Registry::default(); // add out-of-tree plugins with `register`
/// runner::run(client, runner::Options { config, registry: Some(registry) }).await?;
/// # Ok(()) }
/// ```
#[derive(Default)]
pub struct Options {
    /// The configuration (default: upstream's default profile).
    pub config: SchedulerConfig,
    /// Plugins (default: the in-tree ones); add out-of-tree plugins here.
    pub registry: Option<Registry>,
}

/// Follows one informer, calling `f` for each notification (and for every object when the
/// subscription lagged, so nothing is missed).
fn follow<K: Resource + Send + Sync + 'static>(
    informer: &Informer<K>,
    f: impl Fn(Notification<K>) + Send + Sync + 'static,
) -> tokio::task::JoinHandle<()> {
    let mut rx = informer.subscribe();
    let store = informer.store();
    tokio::spawn(async move {
        store.wait_until_ready().await;
        for obj in store.list() {
            f(Notification::Added(obj));
        }
        loop {
            match rx.recv().await {
                Ok(n) => f(n),
                Err(RecvError::Lagged(_)) => {
                    for obj in store.list() {
                        f(Notification::Updated(obj.clone(), obj));
                    }
                }
                Err(RecvError::Closed) => return,
            }
        }
    })
}

fn lister_events<K: Resource + Send + Sync + 'static>(
    factory: &InformerFactory,
    events: &Events,
    resource: Option<EventResource>,
    lister: impl Fn(&Listers) -> &crate::cluster::Lister<K> + Send + Sync + 'static,
) -> tokio::task::JoinHandle<()> {
    let informer = factory.informer::<K>(None);
    let events = events.clone();
    follow(&informer, move |n| {
        let listers = &events.shared().handle.listers;
        let (action, obj) = match &n {
            Notification::Added(o) => (ActionType::ADD, o),
            Notification::Updated(old, o) if Arc::ptr_eq(old, o) => return,
            Notification::Updated(_, o) => (ActionType::UPDATE_OTHER, o),
            Notification::Deleted(o) => (ActionType::DELETE, o),
        };
        let key = key_of(obj.metadata());
        if action == ActionType::DELETE {
            lister(listers).remove(&key);
        } else {
            lister(listers).insert(key, obj.clone());
        }
        if let Some(r) = resource {
            events.other(r, action);
        }
    })
}

/// Builds a scheduler writing through `client` and runs it: informers feed it, a ticker
/// flushes its queue every second. Returns when the pod watch ends.
pub async fn run(client: Client, options: Options) -> Result<(), ConfigError> {
    let scheduler = Scheduler::builder(Arc::new(ApiCluster::new(client.clone())))
        .config(options.config)
        .registry(options.registry.unwrap_or_default())
        .build()?;
    run_scheduler(client, scheduler).await;
    Ok(())
}

/// Runs an already built scheduler against the cluster `client` reaches.
pub async fn run_scheduler(client: Client, scheduler: Scheduler) {
    let factory = InformerFactory::new(client);
    let events = scheduler.events();
    let mut tasks = vec![
        lister_events::<PersistentVolumeClaim>(
            &factory,
            &events,
            Some(EventResource::PersistentVolumeClaim),
            |l| &l.pvcs,
        ),
        lister_events::<PersistentVolume>(
            &factory,
            &events,
            Some(EventResource::PersistentVolume),
            |l| &l.pvs,
        ),
        lister_events::<StorageClass>(&factory, &events, Some(EventResource::StorageClass), |l| {
            &l.storage_classes
        }),
        lister_events::<CSINode>(&factory, &events, Some(EventResource::CsiNode), |l| {
            &l.csi_nodes
        }),
        lister_events::<Namespace>(&factory, &events, Some(EventResource::Namespace), |l| {
            &l.namespaces
        }),
        lister_events::<PodDisruptionBudget>(&factory, &events, None, |l| &l.pdbs),
        lister_events::<Service>(&factory, &events, None, |l| &l.services),
        lister_events::<ReplicaSet>(&factory, &events, None, |l| &l.replica_sets),
        lister_events::<StatefulSet>(&factory, &events, None, |l| &l.stateful_sets),
        lister_events::<ReplicationController>(&factory, &events, None, |l| {
            &l.replication_controllers
        }),
    ];
    let nodes = factory.informer::<Node>(None);
    let ev = events.clone();
    tasks.push(follow(&nodes, move |n| match n {
        Notification::Added(n) => ev.node_added(n),
        Notification::Updated(old, new) => {
            if !Arc::ptr_eq(&old, &new) {
                ev.node_updated(old, new)
            }
        }
        Notification::Deleted(n) => ev.node_deleted(n.metadata.name.as_deref().unwrap_or("")),
    }));
    // Nodes first, so the first cycles see them.
    nodes.wait_until_ready().await;
    let pods = factory.informer::<Pod>(None);
    let ev = events.clone();
    let pod_task = follow(&pods, move |n| match n {
        Notification::Added(p) => ev.pod_added(p),
        Notification::Updated(old, new) => {
            if !Arc::ptr_eq(&old, &new) {
                ev.pod_updated(old, new)
            }
        }
        Notification::Deleted(p) => ev.pod_deleted(&p),
    });
    let shared: Arc<Shared> = scheduler.shared().clone();
    let ticker_shared = shared.clone();
    tasks.push(tokio::spawn(async move {
        let mut t = tokio::time::interval(Duration::from_secs(1));
        loop {
            t.tick().await;
            Scheduler::tick(&ticker_shared, Instant::now());
        }
    }));
    tracing::info!("scheduler started");
    let queue = shared.queue.clone();
    let main = tokio::spawn(scheduler.run());
    let _ = pod_task.await;
    queue.close();
    let _ = main.await;
    for t in tasks {
        t.abort();
    }
}
