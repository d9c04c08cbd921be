//! [`Framework`]: one profile's plugins per extension point, and the code that runs them:
//! Filter and Score in parallel across nodes on a persistent thread pool, the adaptive
//! `percentageOfNodesToScore`, and Permit's waiting pods.

use crate::cache::Snapshot;
use crate::cycle_state::CycleState;
use crate::interface::{
    FilterPlugin, NodeScore, NodeStatusMap, Plugin, PostFilterResult, PreFilterExtensions,
};
use crate::status::{Code, Status};
use crate::types::{NodeInfo, PodInfo};
use rayon::prelude::*;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Below this many nodes every node is evaluated.
pub const MIN_FEASIBLE_NODES_TO_FIND: usize = 100;
/// The adaptive percentage never goes below this.
pub const MIN_FEASIBLE_NODES_PERCENTAGE_TO_FIND: usize = 5;
/// Upstream's starting percentage for the adaptive default.
pub const BASE_PERCENTAGE_OF_NODES_TO_SCORE: usize = 50;

/// How many feasible nodes to look for among `all` nodes: every node below 100, otherwise
/// `percentage` (or upstream's adaptive default, 50% minus 1% per 125 nodes, at least 5%) of
/// them, at least 100.
pub fn num_feasible_nodes_to_find(all: usize, percentage: Option<u32>) -> usize {
    if all < MIN_FEASIBLE_NODES_TO_FIND {
        return all;
    }
    let pct = match percentage.filter(|p| *p > 0) {
        Some(p) if p >= 100 => return all,
        Some(p) => p as usize,
        None => (BASE_PERCENTAGE_OF_NODES_TO_SCORE.saturating_sub(all / 125))
            .max(MIN_FEASIBLE_NODES_PERCENTAGE_TO_FIND),
    };
    (all * pct / 100).max(MIN_FEASIBLE_NODES_TO_FIND)
}

struct Waiting {
    pod: Arc<PodInfo>,
    node: String,
    pending: HashMap<String, Instant>,
    tx: Option<oneshot::Sender<Status>>,
}

/// Pods held at Permit, which plugins allow or reject by UID (gang scheduling).
#[derive(Default)]
pub struct WaitingPods {
    pods: Mutex<HashMap<String, Waiting>>,
}

impl WaitingPods {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Waiting>> {
        self.pods.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn add(
        &self,
        pod: Arc<PodInfo>,
        node: &str,
        pending: HashMap<String, Instant>,
    ) -> oneshot::Receiver<Status> {
        let (tx, rx) = oneshot::channel();
        self.lock().insert(
            pod.uid().to_string(),
            Waiting {
                pod,
                node: node.to_string(),
                pending,
                tx: Some(tx),
            },
        );
        rx
    }

    /// The waiting pods with the node each is reserved on.
    pub fn list(&self) -> Vec<(Arc<PodInfo>, String)> {
        self.lock()
            .values()
            .map(|w| (w.pod.clone(), w.node.clone()))
            .collect()
    }

    /// Whether the pod is waiting.
    pub fn contains(&self, uid: &str) -> bool {
        self.lock().contains_key(uid)
    }

    /// `plugin` allows the pod; once every plugin that asked it to wait has, it proceeds.
    pub fn allow(&self, uid: &str, plugin: &str) {
        let mut g = self.lock();
        let done = match g.get_mut(uid) {
            Some(w) => {
                w.pending.remove(plugin);
                w.pending.is_empty()
            }
            None => false,
        };
        if done {
            if let Some(mut w) = g.remove(uid) {
                if let Some(tx) = w.tx.take() {
                    let _ = tx.send(Status::success());
                }
            }
        }
    }

    /// `plugin` rejects the pod; it is unreserved and retried later.
    pub fn reject(&self, uid: &str, plugin: &str, message: &str) {
        if let Some(mut w) = self.lock().remove(uid) {
            if let Some(tx) = w.tx.take() {
                let _ = tx.send(Status::unschedulable(message).with_plugin(plugin));
            }
        }
    }

    fn deadline(&self, uid: &str) -> Option<(Instant, String)> {
        self.lock().get(uid).and_then(|w| {
            w.pending
                .iter()
                .min_by_key(|(_, d)| **d)
                .map(|(p, d)| (*d, p.clone()))
        })
    }
}

/// What plugins get when they are built: the cluster to write to, the objects they may read,
/// and the pods waiting at Permit.
#[derive(Clone)]
pub struct Handle {
    /// Writes (bind, delete victims, annotate claims).
    pub cluster: Arc<dyn crate::cluster::Cluster>,
    /// Reads beyond nodes and pods.
    pub listers: Arc<crate::cluster::Listers>,
    /// Pods held at Permit.
    pub waiting_pods: Arc<WaitingPods>,
}

/// Plugins of one profile, in configured order, with score weights.
#[derive(Default)]
pub struct Plugins {
    /// PreEnqueue.
    pub pre_enqueue: Vec<Arc<dyn Plugin>>,
    /// QueueSort (the first one is used).
    pub queue_sort: Vec<Arc<dyn Plugin>>,
    /// PreFilter.
    pub pre_filter: Vec<Arc<dyn Plugin>>,
    /// Filter.
    pub filter: Vec<Arc<dyn Plugin>>,
    /// PostFilter.
    pub post_filter: Vec<Arc<dyn Plugin>>,
    /// PreScore.
    pub pre_score: Vec<Arc<dyn Plugin>>,
    /// Score, with weights.
    pub score: Vec<(Arc<dyn Plugin>, i64)>,
    /// Reserve.
    pub reserve: Vec<Arc<dyn Plugin>>,
    /// Permit.
    pub permit: Vec<Arc<dyn Plugin>>,
    /// PreBind.
    pub pre_bind: Vec<Arc<dyn Plugin>>,
    /// Bind.
    pub bind: Vec<Arc<dyn Plugin>>,
    /// PostBind.
    pub post_bind: Vec<Arc<dyn Plugin>>,
}

impl Plugins {
    /// Every distinct plugin instance (by name).
    pub fn all(&self) -> Vec<Arc<dyn Plugin>> {
        let mut seen = HashSet::new();
        let lists = [
            &self.pre_enqueue,
            &self.queue_sort,
            &self.pre_filter,
            &self.filter,
            &self.post_filter,
            &self.pre_score,
            &self.reserve,
            &self.permit,
            &self.pre_bind,
            &self.bind,
            &self.post_bind,
        ];
        lists
            .into_iter()
            .flatten()
            .chain(self.score.iter().map(|(p, _)| p))
            .filter(|p| seen.insert(p.name().to_string()))
            .cloned()
            .collect()
    }
}

/// The result of filtering.
pub struct Feasible {
    /// Nodes that passed every filter (at most the number to find).
    pub nodes: Vec<Arc<NodeInfo>>,
    /// Why the others did not.
    pub statuses: NodeStatusMap,
    /// How many nodes were evaluated (for the next cycle's start index).
    pub processed: usize,
}

/// One profile: a scheduler name and its plugins.
pub struct Framework {
    name: String,
    plugins: Plugins,
    percentage_of_nodes_to_score: Option<u32>,
    pool: Arc<rayon::ThreadPool>,
    waiting: Arc<WaitingPods>,
}

/// Runs `f` over `items` on the pool, in parallel when there are enough of them.
fn par_map<T: Sync, R: Send>(
    pool: &rayon::ThreadPool,
    items: &[T],
    f: impl Fn(&T) -> R + Sync + Send,
) -> Vec<R> {
    if items.len() < 32 {
        return items.iter().map(f).collect();
    }
    pool.install(|| items.par_iter().with_min_len(16).map(f).collect())
}

impl Framework {
    /// A profile named `name` with these plugins, running node-parallel work on `pool`.
    pub fn new(
        name: impl Into<String>,
        plugins: Plugins,
        percentage_of_nodes_to_score: Option<u32>,
        pool: Arc<rayon::ThreadPool>,
        waiting: Arc<WaitingPods>,
    ) -> Self {
        Framework {
            name: name.into(),
            plugins,
            percentage_of_nodes_to_score,
            pool,
            waiting,
        }
    }

    /// The scheduler name this profile serves.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The plugins.
    pub fn plugins(&self) -> &Plugins {
        &self.plugins
    }

    /// The pods waiting at Permit.
    pub fn waiting_pods(&self) -> &Arc<WaitingPods> {
        &self.waiting
    }

    /// How many feasible nodes to look for among `all`.
    pub fn num_feasible_nodes_to_find(&self, all: usize) -> usize {
        num_feasible_nodes_to_find(all, self.percentage_of_nodes_to_score)
    }

    /// Runs PreFilter plugins. Ok(Some(names)) narrows the nodes to evaluate.
    pub fn run_pre_filter(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        snapshot: &Snapshot,
    ) -> Result<Option<HashSet<String>>, Status> {
        let mut narrowed: Option<HashSet<String>> = None;
        for p in &self.plugins.pre_filter {
            let Some(pf) = p.as_pre_filter() else {
                continue;
            };
            match pf.pre_filter(state, pod, snapshot) {
                Ok(Some(names)) => {
                    narrowed = Some(match narrowed {
                        Some(prev) => prev.intersection(&names).cloned().collect(),
                        None => names,
                    });
                    if narrowed.as_ref().is_some_and(HashSet::is_empty) {
                        return Err(Status::unresolvable(format!(
                            "node(s) didn't satisfy plugin(s) [{}] simultaneously",
                            p.name()
                        ))
                        .with_plugin(p.name()));
                    }
                }
                Ok(None) => {}
                Err(s) if s.is_skip() => {
                    state.skip_filter.insert(p.name().to_string());
                }
                Err(s) => return Err(s.with_plugin(p.name())),
            }
        }
        Ok(narrowed)
    }

    /// Runs the AddPod extensions (a pod placed on `node`).
    pub fn run_pre_filter_add_pod(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        add: &Arc<PodInfo>,
        node: &NodeInfo,
    ) -> Status {
        self.run_extensions(state, |ext, state| ext.add_pod(state, pod, add, node))
    }

    /// Runs the RemovePod extensions (a pod taken off `node`).
    pub fn run_pre_filter_remove_pod(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        remove: &Arc<PodInfo>,
        node: &NodeInfo,
    ) -> Status {
        self.run_extensions(state, |ext, state| ext.remove_pod(state, pod, remove, node))
    }

    fn run_extensions(
        &self,
        state: &mut CycleState,
        f: impl Fn(&dyn PreFilterExtensions, &mut CycleState) -> Status,
    ) -> Status {
        for p in &self.plugins.pre_filter {
            if state.skip_filter.contains(p.name()) {
                continue;
            }
            if let Some(ext) = p.as_pre_filter().and_then(|pf| pf.extensions()) {
                let s = f(ext, state);
                if !s.is_success() {
                    return s.with_plugin(p.name());
                }
            }
        }
        Status::success()
    }

    /// Runs every Filter plugin on one node; the first failure wins.
    pub fn run_filter(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        self.filter_with(&self.active_filters(state), state, pod, node)
    }

    /// The Filter plugins not skipped by their PreFilter (looked up once per cycle rather
    /// than once per node).
    fn active_filters(&self, state: &CycleState) -> Vec<(&str, &dyn FilterPlugin)> {
        self.plugins
            .filter
            .iter()
            .filter(|p| !state.skip_filter.contains(p.name()))
            .filter_map(|p| Some((p.name(), p.as_filter()?)))
            .collect()
    }

    fn filter_with(
        &self,
        active: &[(&str, &dyn FilterPlugin)],
        state: &CycleState,
        pod: &PodInfo,
        node: &NodeInfo,
    ) -> Status {
        for (name, f) in active {
            let s = f.filter(state, pod, node);
            if !s.is_success() {
                return s.with_plugin(name);
            }
        }
        Status::success()
    }

    /// Runs the filters as upstream does with nominated pods: if pods of at least this pod's
    /// priority are nominated to the node, the node must fit with them added, and also without
    /// them (inter-pod affinity may depend on them being there or not).
    pub fn run_filter_with_nominated(
        &self,
        state: &CycleState,
        pod: &PodInfo,
        node: &NodeInfo,
        nominated: &[Arc<PodInfo>],
    ) -> Status {
        let relevant: Vec<&Arc<PodInfo>> = nominated
            .iter()
            .filter(|n| n.uid() != pod.uid() && n.priority() >= pod.priority())
            .collect();
        if relevant.is_empty() {
            return self.run_filter(state, pod, node);
        }
        let mut with_state = state.clone();
        let mut with_node = node.clone();
        for n in relevant {
            with_node.add_pod(n.clone());
            let s = self.run_pre_filter_add_pod(&mut with_state, pod, n, &with_node);
            if !s.is_success() {
                return s;
            }
        }
        let s = self.run_filter(&with_state, pod, &with_node);
        if !s.is_success() {
            return s;
        }
        self.run_filter(state, pod, node)
    }

    /// Filters nodes in parallel, starting at `start` (round robin), until enough feasible
    /// ones are found. `nominated` gives the pods nominated to a node, if any are.
    pub fn find_feasible(
        &self,
        state: &CycleState,
        pod: &PodInfo,
        nodes: &[Arc<NodeInfo>],
        start: usize,
        nominated: &(dyn Fn(&str) -> Vec<Arc<PodInfo>> + Sync),
    ) -> Feasible {
        let n = nodes.len();
        if n == 0 {
            return Feasible {
                nodes: Vec::new(),
                statuses: NodeStatusMap::new(),
                processed: 0,
            };
        }
        let to_find = self.num_feasible_nodes_to_find(n);
        let found = AtomicUsize::new(0);
        let active = self.active_filters(state);
        let check = |i: usize| {
            if found.load(Ordering::Relaxed) >= to_find {
                return None;
            }
            let node = &nodes[i];
            let nominated = nominated(&node.name);
            let s = if nominated.is_empty() {
                self.filter_with(&active, state, pod, node)
            } else {
                self.run_filter_with_nominated(state, pod, node, &nominated)
            };
            if s.is_success() {
                if found.fetch_add(1, Ordering::Relaxed) >= to_find {
                    return None;
                }
                Some(Ok(i))
            } else {
                Some(Err((i, s)))
            }
        };
        // Only evaluated nodes produce an entry, in round-robin order from `start`.
        let results: Vec<Result<usize, (usize, Status)>> = if n < 32 {
            (0..n).filter_map(|i| check((start + i) % n)).collect()
        } else {
            self.pool.install(|| {
                (0..n)
                    .into_par_iter()
                    .with_min_len(16)
                    .filter_map(|i| check((start + i) % n))
                    .collect()
            })
        };
        let mut out = Feasible {
            nodes: Vec::with_capacity(to_find.min(n)),
            statuses: NodeStatusMap::new(),
            processed: 0,
        };
        for r in results {
            out.processed += 1;
            match r {
                Ok(i) => out.nodes.push(nodes[i].clone()),
                Err((i, s)) => {
                    out.statuses.insert(nodes[i].name.clone(), s);
                }
            }
        }
        out
    }

    /// Runs PostFilter plugins until one succeeds.
    pub async fn run_post_filter(
        &self,
        state: &CycleState,
        pod: &PodInfo,
        statuses: &NodeStatusMap,
        snapshot: &Snapshot,
    ) -> (PostFilterResult, Status) {
        let mut last = Status::unschedulable("no PostFilter plugin");
        let mut messages = Vec::new();
        for p in &self.plugins.post_filter {
            let Some(pf) = p.as_post_filter() else {
                continue;
            };
            let (r, s) = pf.post_filter(state, pod, statuses, self, snapshot).await;
            if s.is_success() {
                return (r, s);
            }
            if !s.reasons.is_empty() {
                messages.push(s.message());
            }
            last = s.with_plugin(p.name());
        }
        last.reasons = messages;
        (PostFilterResult::default(), last)
    }

    /// Runs PreScore plugins; Skip marks a Score plugin to be skipped.
    pub fn run_pre_score(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        nodes: &[Arc<NodeInfo>],
        snapshot: &Snapshot,
    ) -> Status {
        for p in &self.plugins.pre_score {
            let Some(ps) = p.as_pre_score() else { continue };
            let s = ps.pre_score(state, pod, nodes, snapshot);
            if s.is_skip() {
                state.skip_score.insert(p.name().to_string());
            } else if !s.is_success() {
                return s.with_plugin(p.name());
            }
        }
        Status::success()
    }

    /// Scores every node (in parallel), normalizes per plugin, and sums with weights.
    pub fn run_score(
        &self,
        state: &CycleState,
        pod: &PodInfo,
        nodes: &[Arc<NodeInfo>],
    ) -> Result<Vec<NodeScore>, Status> {
        let active: Vec<&(Arc<dyn Plugin>, i64)> = self
            .plugins
            .score
            .iter()
            .filter(|(p, _)| !state.skip_score.contains(p.name()) && p.as_score().is_some())
            .collect();
        let raw = par_map(&self.pool, nodes, |node| {
            active
                .iter()
                .map(|(p, _)| match p.as_score() {
                    Some(s) => s
                        .score(state, pod, node)
                        .map_err(|e| e.with_plugin(p.name())),
                    None => Ok(0),
                })
                .collect::<Result<Vec<i64>, Status>>()
        });
        let raw: Vec<Vec<i64>> = raw.into_iter().collect::<Result<_, _>>()?;
        let mut totals: Vec<NodeScore> = nodes
            .iter()
            .map(|n| NodeScore {
                name: n.name.clone(),
                score: 0,
            })
            .collect();
        let mut per: Vec<NodeScore> = totals.clone();
        for (j, (p, weight)) in active.iter().enumerate() {
            for (i, s) in per.iter_mut().enumerate() {
                s.score = raw[i][j];
            }
            if let Some(sp) = p.as_score() {
                let st = sp.normalize_scores(state, pod, &mut per);
                if !st.is_success() {
                    return Err(st.with_plugin(p.name()));
                }
            }
            for (t, s) in totals.iter_mut().zip(&per) {
                if !(crate::interface::MIN_NODE_SCORE..=crate::interface::MAX_NODE_SCORE)
                    .contains(&s.score)
                {
                    return Err(Status::error(format!(
                        "plugin {} returns an invalid score {} for node {}",
                        p.name(),
                        s.score,
                        s.name
                    )));
                }
                t.score += s.score * weight;
            }
        }
        Ok(totals)
    }

    /// Runs Reserve plugins; on failure the caller runs Unreserve.
    pub fn run_reserve(&self, state: &mut CycleState, pod: &PodInfo, node: &str) -> Status {
        for p in &self.plugins.reserve {
            if let Some(r) = p.as_reserve() {
                let s = r.reserve(state, pod, node);
                if !s.is_success() {
                    return s.with_plugin(p.name());
                }
            }
        }
        Status::success()
    }

    /// Runs Unreserve in reverse order.
    pub fn run_unreserve(&self, state: &mut CycleState, pod: &PodInfo, node: &str) {
        for p in self.plugins.reserve.iter().rev() {
            if let Some(r) = p.as_reserve() {
                r.unreserve(state, pod, node);
            }
        }
    }

    /// Runs Permit plugins. Wait registers the pod as waiting (see [`Framework::wait_on_permit`]).
    pub fn run_permit(
        &self,
        state: &CycleState,
        pod: &Arc<PodInfo>,
        node: &str,
    ) -> (Status, Option<oneshot::Receiver<Status>>) {
        let now = Instant::now();
        let mut pending = HashMap::new();
        for p in &self.plugins.permit {
            let Some(pm) = p.as_permit() else { continue };
            let (s, timeout) = pm.permit(state, pod, node);
            match s.code {
                Code::Success => {}
                Code::Wait => {
                    pending.insert(
                        p.name().to_string(),
                        now + timeout.min(Duration::from_secs(15 * 60)),
                    );
                }
                _ => return (s.with_plugin(p.name()), None),
            }
        }
        if pending.is_empty() {
            return (Status::success(), None);
        }
        let rx = self.waiting.add(pod.clone(), node, pending);
        (Status::new(Code::Wait, "waiting"), Some(rx))
    }

    /// Waits until every plugin allowed the pod, one rejected it, or the earliest timeout.
    pub async fn wait_on_permit(&self, pod: &PodInfo, rx: oneshot::Receiver<Status>) -> Status {
        let Some((deadline, plugin)) = self.waiting.deadline(pod.uid()) else {
            return rx
                .await
                .unwrap_or_else(|_| Status::error("permit wait abandoned"));
        };
        let wait = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(wait, rx).await {
            Ok(Ok(s)) => s,
            Ok(Err(_)) => Status::error("permit wait abandoned"),
            Err(_) => {
                self.waiting.reject(pod.uid(), &plugin, "timeout");
                Status::unschedulable(format!(
                    "rejected due to timeout after waiting {:?} at plugin {plugin}",
                    wait
                ))
                .with_plugin(&plugin)
            }
        }
    }

    /// Runs PreBind plugins.
    pub async fn run_pre_bind(&self, state: &CycleState, pod: &PodInfo, node: &str) -> Status {
        for p in &self.plugins.pre_bind {
            if let Some(pb) = p.as_pre_bind() {
                let s = pb.pre_bind(state, pod, node).await;
                if !s.is_success() {
                    return s.with_plugin(p.name());
                }
            }
        }
        Status::success()
    }

    /// Runs Bind plugins until one does not Skip.
    pub async fn run_bind(&self, state: &CycleState, pod: &PodInfo, node: &str) -> Status {
        for p in &self.plugins.bind {
            if let Some(b) = p.as_bind() {
                let s = b.bind(state, pod, node).await;
                if !s.is_skip() {
                    return s.with_plugin(p.name());
                }
            }
        }
        Status::error("no bind plugin bound the pod")
    }

    /// Runs PostBind plugins.
    pub fn run_post_bind(&self, state: &CycleState, pod: &PodInfo, node: &str) {
        for p in &self.plugins.post_bind {
            if let Some(pb) = p.as_post_bind() {
                pb.post_bind(state, pod, node);
            }
        }
    }
}

/// Why a pod fits no node, formatted as upstream's FailedScheduling message.
#[derive(Clone, Debug, Default)]
pub struct FitError {
    /// How many nodes the cluster has.
    pub num_all_nodes: usize,
    /// Per-node statuses.
    pub statuses: NodeStatusMap,
    /// A PreFilter rejection, if that is what failed.
    pub pre_filter_msg: String,
    /// What PostFilter (preemption) said.
    pub post_filter_msg: String,
}

impl FitError {
    /// "0/5 nodes are available: 3 Insufficient cpu, 2 node(s) had untolerated taint {…}.
    /// preemption: …"
    pub fn message(&self) -> String {
        let mut msg = format!("0/{} nodes are available:", self.num_all_nodes);
        if !self.pre_filter_msg.is_empty() {
            msg.push_str(&format!(" {}.", self.pre_filter_msg));
        } else {
            msg.push_str(&format!(" {}.", histogram(&self.statuses)));
        }
        if !self.post_filter_msg.is_empty() {
            msg.push_str(&format!(" {}", self.post_filter_msg));
        }
        msg
    }

    /// The plugins that rejected the pod anywhere.
    pub fn rejecting_plugins(&self) -> HashSet<String> {
        self.statuses
            .values()
            .filter(|s| s.is_rejected())
            .map(|s| s.plugin.clone())
            .collect()
    }
}

/// "3 Insufficient cpu, 2 node(s) had …": reasons counted over nodes, sorted as strings.
pub fn histogram(statuses: &NodeStatusMap) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for s in statuses.values() {
        for r in &s.reasons {
            *counts.entry(r.as_str()).or_default() += 1;
        }
    }
    let mut parts: Vec<String> = counts.iter().map(|(r, c)| format!("{c} {r}")).collect();
    parts.sort();
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adaptive_percentage_matches_upstream() {
        assert_eq!(num_feasible_nodes_to_find(50, None), 50);
        assert_eq!(num_feasible_nodes_to_find(100, None), 100);
        // 50 - 1000/125 = 42%.
        assert_eq!(num_feasible_nodes_to_find(1000, None), 420);
        // 50 - 5000/125 = 10%.
        assert_eq!(num_feasible_nodes_to_find(5000, None), 500);
        // Never below 5%.
        assert_eq!(num_feasible_nodes_to_find(10000, None), 500);
        assert_eq!(num_feasible_nodes_to_find(5000, Some(1)), 100);
        assert_eq!(num_feasible_nodes_to_find(5000, Some(100)), 5000);
    }

    #[test]
    fn fit_error_message_is_upstreams() {
        let mut statuses = NodeStatusMap::new();
        for i in 0..3 {
            statuses.insert(format!("a{i}"), Status::unschedulable("Insufficient cpu"));
        }
        for i in 0..2 {
            statuses.insert(
                format!("b{i}"),
                Status::unresolvable("node(s) had untolerated taint {k: v}"),
            );
        }
        let e = FitError {
            num_all_nodes: 5,
            statuses,
            pre_filter_msg: String::new(),
            post_filter_msg: "preemption: 0/5 nodes are available: 2 Preemption is not helpful for scheduling, 3 No preemption victims found for incoming pod.".into(),
        };
        assert_eq!(
            e.message(),
            "0/5 nodes are available: 2 node(s) had untolerated taint {k: v}, 3 Insufficient cpu. preemption: 0/5 nodes are available: 2 Preemption is not helpful for scheduling, 3 No preemption victims found for incoming pod."
        );
    }
}
