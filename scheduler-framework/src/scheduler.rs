//! [`Scheduler`]: the scheduling loop over the queue, cache and profiles — one pod at a time
//! through PreFilter, Filter, PostFilter, PreScore, Score, Reserve and Permit, then a binding
//! cycle (wait on Permit, PreBind, Bind, PostBind) running concurrently with the next pods.
//! [`Events`] is how informers (or a test harness) tell it what changed.

use crate::cache::{Cache, Snapshot};
use crate::cluster::{Cluster, Listers};
use crate::config::{ConfigError, SchedulerConfig};
use crate::cycle_state::CycleState;
use crate::framework::{FitError, Framework, Handle, WaitingPods};
use crate::interface::{ActionType, ClusterEvent, EventResource, NodeScore};
use crate::metrics::Metrics;
use crate::plugins::Registry;
use crate::queue::{QueueConfig, QueuePlugins, QueuedPodInfo, SchedulingQueue};
use crate::status::{Code, Status};
use crate::types::{NodeInfo, PodInfo};
use bosun_api_types::core::v1::{Node, Pod};
use std::any::Any;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// What the scheduler shares with its binding cycles and event handlers.
pub struct Shared {
    frameworks: HashMap<String, Arc<Framework>>,
    /// The scheduling queue.
    pub queue: Arc<SchedulingQueue>,
    cache: Mutex<Cache>,
    /// The plugin handle (cluster, listers, waiting pods).
    pub handle: Handle,
    /// Metrics.
    pub metrics: Metrics,
}

impl Shared {
    fn cache(&self) -> MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Builds a [`Scheduler`].
pub struct Builder {
    config: SchedulerConfig,
    registry: Registry,
    cluster: Arc<dyn Cluster>,
    listers: Arc<Listers>,
    assumed_ttl: Duration,
}

impl Builder {
    /// Uses this configuration (default: one default profile).
    pub fn config(mut self, config: SchedulerConfig) -> Self {
        self.config = config;
        self
    }

    /// Uses this registry (add out-of-tree plugins to [`Registry::in_tree`]).
    pub fn registry(mut self, registry: Registry) -> Self {
        self.registry = registry;
        self
    }

    /// Reads PVCs, PVs, … from these listers.
    pub fn listers(mut self, listers: Arc<Listers>) -> Self {
        self.listers = listers;
        self
    }

    /// How long an assumed pod whose binding finished waits to be confirmed.
    pub fn assumed_pod_ttl(mut self, ttl: Duration) -> Self {
        self.assumed_ttl = ttl;
        self
    }

    /// Builds the scheduler.
    pub fn build(self) -> Result<Scheduler, ConfigError> {
        let threads = self.config.parallelism.unwrap_or(16).clamp(
            1,
            std::thread::available_parallelism()
                .map(|n| n.get() as u32)
                .unwrap_or(1),
        );
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads as usize)
            .thread_name(|i| format!("sched-worker-{i}"))
            .build()
            .map_err(|e| ConfigError::Invalid(format!("starting worker threads: {e}")))?;
        let handle = Handle {
            cluster: self.cluster,
            listers: self.listers,
            waiting_pods: Arc::new(WaitingPods::default()),
        };
        let frameworks = self.config.build(&self.registry, &handle, Arc::new(pool))?;
        let mut qp = QueuePlugins::default();
        for fw in &frameworks {
            if qp.sort.is_none() {
                qp.sort = fw.plugins().queue_sort.first().cloned();
            }
            qp.pre_enqueue
                .insert(fw.name().to_string(), fw.plugins().pre_enqueue.clone());
            for p in fw.plugins().all() {
                qp.events
                    .entry(p.name().to_string())
                    .or_insert_with(|| p.events_to_register());
            }
        }
        let qc = QueueConfig {
            initial_backoff: Duration::from_secs(
                self.config.pod_initial_backoff_seconds.unwrap_or(1),
            ),
            max_backoff: Duration::from_secs(self.config.pod_max_backoff_seconds.unwrap_or(10)),
            ..QueueConfig::default()
        };
        let shared = Arc::new(Shared {
            frameworks: frameworks
                .into_iter()
                .map(|f| (f.name().to_string(), Arc::new(f)))
                .collect(),
            queue: Arc::new(SchedulingQueue::new(qp, qc)),
            cache: Mutex::new(Cache::new(self.assumed_ttl)),
            handle,
            metrics: Metrics::default(),
        });
        Ok(Scheduler {
            shared,
            snapshot: Snapshot::default(),
            next_start: 0,
        })
    }
}

/// The result of one scheduling attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attempt {
    /// The pod was assumed onto this node; binding continues in the background.
    Assumed(String),
    /// The pod fits no node (the message is the FailedScheduling message).
    Unschedulable(String),
    /// An error.
    Error(String),
    /// The pod was skipped (deleted, or not ours).
    Skipped,
}

/// The scheduler: profiles, queue, cache and the snapshot of the running cycle.
pub struct Scheduler {
    shared: Arc<Shared>,
    snapshot: Snapshot,
    next_start: usize,
}

fn scheduler_name(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.scheduler_name.as_deref())
        .unwrap_or("default-scheduler")
}

fn node_name(pod: &Pod) -> Option<&str> {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .filter(|n| !n.is_empty())
}

impl Scheduler {
    /// A builder writing to `cluster`.
    pub fn builder(cluster: Arc<dyn Cluster>) -> Builder {
        Builder {
            config: SchedulerConfig::default(),
            registry: Registry::default(),
            cluster,
            listers: Arc::new(Listers::default()),
            assumed_ttl: Duration::from_secs(30),
        }
    }

    /// Where informers send changes.
    pub fn events(&self) -> Events {
        Events {
            shared: self.shared.clone(),
        }
    }

    /// The shared parts (queue, metrics, handle).
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The profile serving `scheduler_name`.
    pub fn framework(&self, scheduler_name: &str) -> Option<&Arc<Framework>> {
        self.shared.frameworks.get(scheduler_name)
    }

    /// The snapshot of the last cycle.
    pub fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    /// Runs until the queue is closed.
    pub async fn run(mut self) {
        while self.schedule_one().await.is_some() {}
    }

    /// Waits for a pod and makes one attempt; None once the queue is closed.
    pub async fn schedule_one(&mut self) -> Option<Attempt> {
        let qpi = self.shared.queue.pop().await?;
        Some(self.attempt(qpi).await)
    }

    /// Makes one attempt if a pod is ready.
    pub async fn try_schedule_one(&mut self) -> Option<Attempt> {
        let qpi = self.shared.queue.try_pop()?;
        Some(self.attempt(qpi).await)
    }

    async fn attempt(&mut self, qpi: QueuedPodInfo) -> Attempt {
        let start = Instant::now();
        let cycle = self.shared.queue.scheduling_cycle();
        let pod = qpi.info.clone();
        let Some(fw) = self
            .shared
            .frameworks
            .get(scheduler_name(&pod.pod))
            .cloned()
        else {
            self.shared.queue.done(pod.uid());
            return Attempt::Skipped;
        };
        if pod.pod.metadata.deletion_timestamp.is_some() {
            self.shared.queue.done(pod.uid());
            return Attempt::Skipped;
        }
        self.shared.cache().update_snapshot(&mut self.snapshot);
        let mut state = CycleState::new();
        let result = self.schedule_pod(&fw, &mut state, &pod).await;
        let host = match result {
            Ok(host) => host,
            Err(failure) => {
                let attempt = self.fail(qpi, cycle, failure, start).await;
                return attempt;
            }
        };
        // Assume, Reserve, Permit.
        let mut assumed_pod = (*pod.pod).clone();
        if let Some(spec) = assumed_pod.spec.as_mut() {
            spec.node_name = Some(host.clone());
        }
        let assumed = PodInfo::new(Arc::new(assumed_pod));
        let assumed_ok = self.shared.cache().assume_pod(assumed.clone(), &host);
        if let Err(e) = assumed_ok {
            return self
                .fail(qpi, cycle, Failure::Error(e.to_string()), start)
                .await;
        }
        let s = fw.run_reserve(&mut state, &assumed, &host);
        if !s.is_success() {
            fw.run_unreserve(&mut state, &assumed, &host);
            let _ = self.shared.cache().forget_pod(assumed.uid());
            return self.fail(qpi, cycle, Failure::from_status(s), start).await;
        }
        let (s, wait) = fw.run_permit(&state, &assumed, &host);
        if !(s.is_success() || s.code == Code::Wait) {
            fw.run_unreserve(&mut state, &assumed, &host);
            let _ = self.shared.cache().forget_pod(assumed.uid());
            return self.fail(qpi, cycle, Failure::from_status(s), start).await;
        }
        self.shared.queue.delete_nominated(pod.uid());
        self.shared
            .metrics
            .attempt_duration
            .observe(start.elapsed());
        let shared = self.shared.clone();
        let host2 = host.clone();
        tokio::spawn(async move {
            binding_cycle(shared, fw, state, qpi, assumed, host2, wait, cycle).await;
        });
        Attempt::Assumed(host)
    }

    async fn schedule_pod(
        &mut self,
        fw: &Framework,
        state: &mut CycleState,
        pod: &Arc<PodInfo>,
    ) -> Result<String, Failure> {
        let all = self.snapshot.len();
        if all == 0 {
            return Err(Failure::Unschedulable(FitError::default(), None));
        }
        let narrowed = match fw.run_pre_filter(state, pod, &self.snapshot) {
            Ok(n) => n,
            Err(s) if s.is_rejected() => {
                let statuses = self
                    .snapshot
                    .nodes()
                    .iter()
                    .map(|n| (n.name.clone(), s.clone()))
                    .collect();
                let fe = FitError {
                    num_all_nodes: all,
                    statuses,
                    pre_filter_msg: s.message(),
                    post_filter_msg: String::new(),
                };
                return Err(Failure::Unschedulable(fe, None));
            }
            Err(s) => return Err(Failure::Error(s.to_string())),
        };
        let queue = self.shared.queue.clone();
        let has_nominated = queue.has_nominated();
        let nominated = move |node: &str| {
            if has_nominated {
                queue.nominated_pods(node)
            } else {
                Vec::new()
            }
        };
        // A pod nominated by an earlier preemption tries its node first.
        if let Some(n) = pod
            .pod
            .status
            .as_ref()
            .and_then(|s| s.nominated_node_name.as_deref())
            .and_then(|n| self.snapshot.get(n))
        {
            if narrowed.as_ref().is_none_or(|set| set.contains(&n.name))
                && fw
                    .run_filter_with_nominated(state, pod, n, &nominated(&n.name))
                    .is_success()
            {
                return Ok(n.name.clone());
            }
        }
        let subset: Vec<Arc<NodeInfo>>;
        let nodes: &[Arc<NodeInfo>] = match &narrowed {
            Some(names) => {
                subset = self
                    .snapshot
                    .nodes()
                    .iter()
                    .filter(|n| names.contains(&n.name))
                    .cloned()
                    .collect();
                &subset
            }
            None => self.snapshot.nodes(),
        };
        let start = if nodes.is_empty() {
            0
        } else {
            self.next_start % nodes.len()
        };
        let feasible = fw.find_feasible(state, pod, nodes, start, &nominated);
        if narrowed.is_none() && all > 0 {
            self.next_start = (self.next_start + feasible.processed) % all;
        }
        if feasible.nodes.is_empty() {
            let mut statuses = feasible.statuses;
            let mut fe = FitError {
                num_all_nodes: all,
                statuses: HashMap::new(),
                pre_filter_msg: String::new(),
                post_filter_msg: String::new(),
            };
            if narrowed.is_some() {
                for n in self.snapshot.nodes() {
                    statuses.entry(n.name.clone()).or_insert_with(|| {
                        Status::unresolvable("node(s) didn't satisfy plugin(s) [NodeAffinity]")
                            .with_plugin("NodeAffinity")
                    });
                }
            }
            let mut nominated_node = None;
            if !fw.plugins().post_filter.is_empty() {
                self.shared
                    .metrics
                    .preemption_attempts
                    .fetch_add(1, Ordering::Relaxed);
                let (r, s) = fw
                    .run_post_filter(state, pod, &statuses, &self.snapshot)
                    .await;
                if s.is_success() {
                    nominated_node = r.nominated_node;
                } else if s.code == Code::Error {
                    tracing::warn!(pod = %pod.key, error = %s, "preemption failed");
                } else {
                    fe.post_filter_msg = s.message();
                }
            }
            fe.statuses = statuses;
            return Err(Failure::Unschedulable(fe, nominated_node));
        }
        if feasible.nodes.len() == 1 {
            return Ok(feasible.nodes[0].name.clone());
        }
        let s = fw.run_pre_score(state, pod, &feasible.nodes, &self.snapshot);
        if !s.is_success() {
            return Err(Failure::Error(s.to_string()));
        }
        let scores = fw
            .run_score(state, pod, &feasible.nodes)
            .map_err(|s| Failure::Error(s.to_string()))?;
        Ok(select_host(&scores))
    }

    async fn fail(
        &mut self,
        mut qpi: QueuedPodInfo,
        cycle: u64,
        failure: Failure,
        start: Instant,
    ) -> Attempt {
        let shared = self.shared.clone();
        let pod = qpi.info.clone();
        let (reason, message, attempt) = match &failure {
            Failure::Unschedulable(fe, nominated) => {
                qpi.unschedulable_plugins = fe.rejecting_plugins();
                qpi.unschedulable_plugins.remove("");
                if let Some(node) = nominated {
                    shared.queue.add_nominated(pod.clone(), node);
                    let cluster = shared.handle.cluster.clone();
                    let (p, n) = (pod.pod.clone(), node.clone());
                    tokio::spawn(async move {
                        if let Err(e) = cluster.set_nominated_node(&p, Some(&n)).await {
                            tracing::debug!(error = %e, "setting nominatedNodeName");
                        }
                    });
                }
                shared.metrics.unschedulable.fetch_add(1, Ordering::Relaxed);
                let m = fe.message();
                ("Unschedulable", m.clone(), Attempt::Unschedulable(m))
            }
            Failure::Rejected(s) => {
                qpi.unschedulable_plugins = [s.plugin.clone()]
                    .into_iter()
                    .filter(|p| !p.is_empty())
                    .collect();
                shared.metrics.unschedulable.fetch_add(1, Ordering::Relaxed);
                let m = s.message();
                ("Unschedulable", m.clone(), Attempt::Unschedulable(m))
            }
            Failure::Error(e) => {
                qpi.unschedulable_plugins.clear();
                shared.metrics.errors.fetch_add(1, Ordering::Relaxed);
                ("SchedulerError", e.clone(), Attempt::Error(e.clone()))
            }
        };
        tracing::debug!(pod = %pod.key, %message, "unable to schedule pod");
        shared.metrics.attempt_duration.observe(start.elapsed());
        shared.queue.add_unschedulable(qpi, cycle);
        let cluster = shared.handle.cluster.clone();
        tokio::spawn(async move {
            if let Err(e) = cluster.unschedulable(&pod.pod, reason, &message).await {
                tracing::debug!(error = %e, "reporting an unschedulable pod");
            }
        });
        attempt
    }

    /// Periodic housekeeping: backoff flush, stale unschedulable pods, expired assumed pods.
    pub fn tick(shared: &Shared, now: Instant) {
        shared.queue.flush(now);
        shared.cache().cleanup_expired(now);
    }
}

/// Why an attempt failed.
#[derive(Debug)]
enum Failure {
    /// No node fits; maybe a node was nominated by preemption.
    Unschedulable(FitError, Option<String>),
    /// Reserve or Permit rejected the pod.
    Rejected(Status),
    /// An internal error.
    Error(String),
}

impl Failure {
    fn from_status(s: Status) -> Self {
        if s.is_rejected() {
            Failure::Rejected(s)
        } else {
            Failure::Error(s.to_string())
        }
    }
}

/// The highest total score; ties broken uniformly at random (reservoir sampling).
fn select_host(scores: &[NodeScore]) -> String {
    let mut best = &scores[0];
    let mut ties = 1;
    for s in &scores[1..] {
        if s.score > best.score {
            best = s;
            ties = 1;
        } else if s.score == best.score {
            ties += 1;
            if fastrand::usize(..ties) == 0 {
                best = s;
            }
        }
    }
    best.name.clone()
}

#[allow(clippy::too_many_arguments)]
async fn binding_cycle(
    shared: Arc<Shared>,
    fw: Arc<Framework>,
    mut state: CycleState,
    qpi: QueuedPodInfo,
    assumed: Arc<PodInfo>,
    host: String,
    wait: Option<tokio::sync::oneshot::Receiver<Status>>,
    cycle: u64,
) {
    let mut status = Status::success();
    if let Some(rx) = wait {
        status = fw.wait_on_permit(&assumed, rx).await;
    }
    if status.is_success() {
        status = fw.run_pre_bind(&state, &assumed, &host).await;
    }
    if status.is_success() {
        status = fw.run_bind(&state, &assumed, &host).await;
    }
    if !status.is_success() {
        fw.run_unreserve(&mut state, &assumed, &host);
        let _ = shared.cache().forget_pod(assumed.uid());
        let mut qpi = qpi;
        let message = status.message();
        qpi.unschedulable_plugins = if status.is_rejected() && !status.plugin.is_empty() {
            [status.plugin.clone()].into()
        } else {
            Default::default()
        };
        if status.is_rejected() {
            shared.metrics.unschedulable.fetch_add(1, Ordering::Relaxed);
        } else {
            shared.metrics.errors.fetch_add(1, Ordering::Relaxed);
        }
        tracing::debug!(pod = %assumed.key, node = %host, %message, "binding failed");
        let pod = qpi.info.pod.clone();
        shared.queue.add_unschedulable(qpi, cycle);
        // Something (our own assumed pod) changed: let waiting pods retry.
        shared.queue.on_event(
            ClusterEvent::new(
                EventResource::AssignedPod,
                ActionType::DELETE,
                "AssumedPodDelete",
            ),
            None,
            None,
        );
        let reason = if status.is_rejected() {
            "Unschedulable"
        } else {
            "SchedulerError"
        };
        if let Err(e) = shared
            .handle
            .cluster
            .unschedulable(&pod, reason, &message)
            .await
        {
            tracing::debug!(error = %e, "reporting a binding failure");
        }
        return;
    }
    shared.cache().finish_binding(assumed.uid(), Instant::now());
    fw.run_post_bind(&state, &assumed, &host);
    shared.metrics.scheduled.fetch_add(1, Ordering::Relaxed);
    shared
        .metrics
        .e2e_latency
        .observe(qpi.initial_timestamp.elapsed());
    shared.queue.done(assumed.uid());
    if let Err(e) = shared.handle.cluster.scheduled(&qpi.info.pod, &host).await {
        tracing::debug!(error = %e, "recording the Scheduled event");
    }
}

/// Feeds cluster changes to the scheduler: the cache, the queue and the listers.
#[derive(Clone)]
pub struct Events {
    shared: Arc<Shared>,
}

fn labels_changed(a: &Pod, b: &Pod) -> bool {
    a.metadata.labels != b.metadata.labels
}

impl Events {
    /// The shared parts.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    fn responsible(&self, pod: &Pod) -> bool {
        self.shared.frameworks.contains_key(scheduler_name(pod))
    }

    /// A pod appeared.
    pub fn pod_added(&self, pod: Arc<Pod>) {
        if node_name(&pod).is_some() {
            let uid = pod.metadata.uid.clone().unwrap_or_default();
            self.shared.queue.delete(&uid);
            self.shared.cache().add_pod(PodInfo::new(pod.clone()));
            self.shared.queue.on_event(
                ClusterEvent::new(
                    EventResource::AssignedPod,
                    ActionType::ADD,
                    "AssignedPodAdd",
                ),
                None,
                Some(pod.as_ref() as &dyn Any),
            );
        } else if self.responsible(&pod) && pod.metadata.deletion_timestamp.is_none() {
            let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
            if !matches!(phase, Some("Succeeded") | Some("Failed")) {
                self.shared.queue.add(PodInfo::new(pod));
            }
        }
    }

    /// A pod changed.
    pub fn pod_updated(&self, old: Arc<Pod>, new: Arc<Pod>) {
        let uid = new.metadata.uid.clone().unwrap_or_default();
        if node_name(&new).is_some() {
            if node_name(&old).is_none() {
                return self.pod_added(new);
            }
            // One PodInfo for the new state; the old requests come from the cache.
            let n = PodInfo::new(new.clone());
            let old_requests = {
                let mut cache = self.shared.cache();
                let before = cache.pod(&uid).map(|(p, _)| p.requests.clone());
                cache.add_pod(n.clone());
                before
            };
            let mut action = ActionType::UPDATE_OTHER;
            if labels_changed(&old, &new) {
                action = action | ActionType::UPDATE_POD_LABEL;
            }
            if old_requests
                .is_some_and(|o| n.requests.milli_cpu < o.milli_cpu || n.requests.memory < o.memory)
            {
                action = action | ActionType::UPDATE_POD_SCALE_DOWN;
            }
            if new.metadata.deletion_timestamp.is_some() {
                // A terminating pod will free its resources.
                action = action | ActionType::UPDATE_POD_SCALE_DOWN;
            }
            self.shared.queue.on_event(
                ClusterEvent::new(EventResource::AssignedPod, action, "AssignedPodUpdate"),
                Some(old.as_ref() as &dyn Any),
                Some(new.as_ref() as &dyn Any),
            );
            return;
        }
        if !self.responsible(&new) || self.shared.cache().is_assumed(&uid) {
            return;
        }
        if new.metadata.deletion_timestamp.is_some() {
            self.shared.queue.delete(&uid);
            return;
        }
        self.shared.queue.update(PodInfo::new(new));
    }

    /// A pod was deleted.
    pub fn pod_deleted(&self, pod: &Pod) {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        self.shared.queue.delete(&uid);
        self.shared
            .handle
            .waiting_pods
            .reject(&uid, "", "pod deleted");
        if node_name(pod).is_some() || self.shared.cache().pod(&uid).is_some() {
            self.shared.cache().remove_pod(&uid);
            self.shared.queue.on_event(
                ClusterEvent::new(
                    EventResource::AssignedPod,
                    ActionType::DELETE,
                    "AssignedPodDelete",
                ),
                Some(pod as &dyn Any),
                None,
            );
        }
    }

    /// A node appeared.
    pub fn node_added(&self, node: Arc<Node>) {
        let name = node.metadata.name.clone().unwrap_or_default();
        self.shared.handle.listers.nodes.insert(name, node.clone());
        self.shared.cache().add_node(node.clone());
        self.shared.queue.on_event(
            ClusterEvent::new(EventResource::Node, ActionType::ADD, "NodeAdd"),
            None,
            Some(node.as_ref() as &dyn Any),
        );
    }

    /// A node changed.
    pub fn node_updated(&self, old: Arc<Node>, new: Arc<Node>) {
        let name = new.metadata.name.clone().unwrap_or_default();
        self.shared.handle.listers.nodes.insert(name, new.clone());
        self.shared.cache().add_node(new.clone());
        let mut action = ActionType(0);
        let (os, ns) = (old.status.as_ref(), new.status.as_ref());
        if os.map(|s| &s.allocatable) != ns.map(|s| &s.allocatable) {
            action = action | ActionType::UPDATE_NODE_ALLOCATABLE;
        }
        if old.metadata.labels != new.metadata.labels {
            action = action | ActionType::UPDATE_NODE_LABEL;
        }
        let taints = |n: &Node| {
            n.spec
                .as_ref()
                .map(|s| (s.taints.clone(), s.unschedulable))
                .unwrap_or_default()
        };
        if taints(&old) != taints(&new) {
            action = action | ActionType::UPDATE_NODE_TAINT;
        }
        let conds = |n: &Node| {
            n.status
                .as_ref()
                .map(|s| {
                    s.conditions
                        .iter()
                        .map(|c| (c.r#type.clone(), c.status.clone()))
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default()
        };
        if conds(&old) != conds(&new) {
            action = action | ActionType::UPDATE_NODE_CONDITION;
        }
        if old.metadata.annotations != new.metadata.annotations {
            action = action | ActionType::UPDATE_NODE_ANNOTATION;
        }
        if action.0 != 0 {
            self.shared.queue.on_event(
                ClusterEvent::new(EventResource::Node, action, "NodeUpdate"),
                Some(old.as_ref() as &dyn Any),
                Some(new.as_ref() as &dyn Any),
            );
        }
    }

    /// A node was deleted.
    pub fn node_deleted(&self, name: &str) {
        self.shared.handle.listers.nodes.remove(name);
        self.shared.cache().remove_node(name);
        self.shared.queue.on_event(
            ClusterEvent::new(EventResource::Node, ActionType::DELETE, "NodeDelete"),
            None,
            None,
        );
    }

    /// Something else changed (a PVC, PV, StorageClass, CSINode, namespace…): requeue the
    /// pods whose rejecting plugins registered for it. Update the listers first.
    pub fn other(&self, resource: EventResource, action: ActionType) {
        self.shared
            .queue
            .on_event(ClusterEvent::new(resource, action, "Other"), None, None);
    }
}
