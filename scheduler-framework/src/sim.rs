//! [`Simulator`]: a scheduler against an in-memory cluster, with its binds and preemption
//! deletions fed straight back as informer events — for plugin tests and benchmarks (in the
//! spirit of upstream's scheduler_perf) without an API server.

use crate::cluster::{Listers, MemoryCluster, Recorded};
use crate::config::{ConfigError, SchedulerConfig};
use crate::plugins::Registry;
use crate::scheduler::{Attempt, Events, Scheduler};
use bosun_api_types::core::v1::{Node, Pod};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedReceiver;

/// What a run achieved.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RunStats {
    /// Pods bound.
    pub bound: usize,
    /// Attempts that found no node.
    pub unschedulable: usize,
    /// Pods deleted by preemption.
    pub preempted: usize,
    /// Wall time.
    pub elapsed: Duration,
}

impl RunStats {
    /// Bound pods per second.
    pub fn pods_per_second(&self) -> f64 {
        self.bound as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// A scheduler wired to a [`MemoryCluster`].
///
/// ```
/// use bosun_scheduler_framework::sim::Simulator;
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let mut sim = Simulator::new()?;
/// for name in ["a", "b"] {
///     sim.add_node(serde_json::from_value(serde_json::json!({
///         "metadata": {"name": name},
///         "status": {"allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"}}
///     }))?);
/// }
/// sim.add_pod(serde_json::from_value(serde_json::json!({
///     "metadata": {"name": "web", "namespace": "default", "uid": "u1"},
///     "spec": {"containers": [{"name": "c", "image": "nginx"}]}
/// }))?);
/// let stats = sim.run().await;
/// assert_eq!(stats.bound, 1);
/// assert!(sim.node_of("u1").is_some());
/// # Ok::<(), Box<dyn std::error::Error>>(()) }).unwrap();
/// ```
pub struct Simulator {
    /// The scheduler.
    pub scheduler: Scheduler,
    events: Events,
    applied: UnboundedReceiver<(Recorded, Pod)>,
    cluster: Arc<MemoryCluster>,
    in_flight: usize,
    pods: HashMap<String, Arc<Pod>>,
}

impl Simulator {
    /// A simulator with upstream's default profile.
    pub fn new() -> Result<Self, ConfigError> {
        Self::with(
            SchedulerConfig::default(),
            Registry::default(),
            Arc::new(Listers::default()),
        )
    }

    /// A simulator with this configuration, registry and listers.
    pub fn with(
        config: SchedulerConfig,
        registry: Registry,
        listers: Arc<Listers>,
    ) -> Result<Self, ConfigError> {
        let (cluster, applied) = MemoryCluster::with_channel();
        let cluster = Arc::new(cluster);
        let scheduler = Scheduler::builder(cluster.clone())
            .config(config)
            .registry(registry)
            .listers(listers)
            .build()?;
        Ok(Simulator {
            events: scheduler.events(),
            scheduler,
            applied,
            cluster,
            in_flight: 0,
            pods: HashMap::new(),
        })
    }

    /// The recording cluster.
    pub fn cluster(&self) -> &MemoryCluster {
        &self.cluster
    }

    /// Adds a node.
    pub fn add_node(&self, node: Node) {
        self.events.node_added(Arc::new(node));
    }

    /// Adds a pod (pending, or already bound if it has `spec.nodeName`).
    pub fn add_pod(&mut self, pod: Pod) {
        let pod = Arc::new(pod);
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        self.pods.insert(uid, pod.clone());
        self.events.pod_added(pod);
    }

    /// Deletes a pod.
    pub fn delete_pod(&mut self, uid: &str) {
        if let Some(p) = self.pods.remove(uid) {
            self.events.pod_deleted(&p);
        }
    }

    /// The node a pod is bound to.
    pub fn node_of(&self, uid: &str) -> Option<String> {
        self.pods
            .get(uid)
            .and_then(|p| p.spec.as_ref()?.node_name.clone())
    }

    /// Whether the pod still exists (preemption may have deleted it).
    pub fn exists(&self, uid: &str) -> bool {
        self.pods.contains_key(uid)
    }

    fn drain(&mut self, stats: &mut RunStats) {
        while let Ok((r, pod)) = self.applied.try_recv() {
            let uid = pod.metadata.uid.clone().unwrap_or_default();
            match r {
                Recorded::Bound(_, node) => {
                    self.in_flight = self.in_flight.saturating_sub(1);
                    let mut bound = pod;
                    if let Some(s) = bound.spec.as_mut() {
                        s.node_name = Some(node);
                    }
                    let bound = Arc::new(bound);
                    self.pods.insert(uid, bound.clone());
                    self.events.pod_added(bound);
                    stats.bound += 1;
                }
                Recorded::Deleted(_) => {
                    stats.preempted += 1;
                    self.delete_pod(&uid);
                }
                _ => {}
            }
        }
    }

    /// Schedules until no pod is ready and no binding is in flight. Backoff is skipped (the
    /// queue is flushed as if it had passed) so preemptors retry at once.
    pub async fn run(&mut self) -> RunStats {
        let start = Instant::now();
        let mut stats = RunStats::default();
        let mut idle_rounds = 0;
        // Pods that keep failing would cycle through backoff forever: stop once nothing bound
        // for more attempts than there are pods.
        let mut since_progress = 0usize;
        loop {
            if since_progress > 2 * self.pods.len() + 100 {
                break;
            }
            match self.scheduler.try_schedule_one().await {
                Some(Attempt::Assumed(_)) => {
                    self.in_flight += 1;
                    idle_rounds = 0;
                    since_progress = 0;
                }
                Some(Attempt::Unschedulable(_)) => {
                    stats.unschedulable += 1;
                    since_progress += 1;
                }
                Some(_) => since_progress += 1,
                None => {
                    self.drain(&mut stats);
                    let shared = self.scheduler.shared().clone();
                    Scheduler::tick(&shared, Instant::now() + Duration::from_secs(11));
                    if shared.queue.pending().active > 0 {
                        continue;
                    }
                    if self.in_flight == 0 {
                        idle_rounds += 1;
                        if idle_rounds > 3 {
                            break;
                        }
                    }
                    tokio::time::sleep(Duration::from_micros(200)).await;
                    continue;
                }
            }
            self.drain(&mut stats);
        }
        stats.elapsed = start.elapsed();
        stats
    }
}
