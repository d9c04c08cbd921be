//! PodTopologySpread: `topologySpreadConstraints` (DoNotSchedule filters, ScheduleAnyway
//! scores), with upstream's cluster-level defaults (zone skew 5, hostname skew 3) for pods
//! that set none, selected by the Services and controllers that own them.

use super::node_event;
use crate::cache::Snapshot;
use crate::cluster::Listers;
use crate::cycle_state::CycleState;
use crate::extension_points;
use crate::interface::*;
use crate::status::Status;
use crate::types::{NodeInfo, PodInfo};
use bosun_api_types::core::v1::{Pod, TopologySpreadConstraint};
use bosun_api_types::placement;
use bosun_api_types::selector::{LabelSelectorExt, Operator, Requirement, Selector};
use rayon::prelude::*;
use serde::Deserialize;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

const ZONE: &str = "topology.kubernetes.io/zone";
const HOSTNAME: &str = "kubernetes.io/hostname";

/// PodTopologySpreadArgs.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SpreadArgs {
    /// Constraints for pods that set none (only with `defaultingType: List`).
    #[serde(default)]
    pub default_constraints: Vec<TopologySpreadConstraint>,
    /// `System` (upstream's built-in defaults) or `List`.
    #[serde(default = "system")]
    pub defaulting_type: String,
}

fn system() -> String {
    "System".into()
}

impl Default for SpreadArgs {
    fn default() -> Self {
        SpreadArgs {
            default_constraints: Vec::new(),
            defaulting_type: system(),
        }
    }
}

/// A constraint compiled for matching.
#[derive(Clone, Debug)]
struct Constraint {
    max_skew: i64,
    key: String,
    selector: Selector,
    min_domains: usize,
    honor_affinity: bool,
    honor_taints: bool,
}

/// The plugin.
pub struct PodTopologySpread {
    args: SpreadArgs,
    listers: Arc<Listers>,
}

impl PodTopologySpread {
    /// The plugin with `args`, reading Services and controllers from `listers` for defaults.
    pub fn new(args: SpreadArgs, listers: Arc<Listers>) -> Self {
        PodTopologySpread { args, listers }
    }

    fn compile(&self, pod: &Pod, list: &[TopologySpreadConstraint], when: &str) -> Vec<Constraint> {
        list.iter()
            .filter(|c| c.when_unsatisfiable == when)
            .filter_map(|c| {
                let mut reqs = c
                    .label_selector
                    .as_ref()?
                    .to_selector()
                    .ok()?
                    .requirements()
                    .to_vec();
                for k in &c.match_label_keys {
                    if let Some(v) = pod.metadata.labels.get(k) {
                        reqs.push(Requirement::new(k, Operator::In, vec![v.clone()]).ok()?);
                    }
                }
                Some(Constraint {
                    max_skew: c.max_skew as i64,
                    key: c.topology_key.clone(),
                    selector: Selector::from_requirements(reqs),
                    min_domains: c.min_domains.unwrap_or(1).max(1) as usize,
                    honor_affinity: c.node_affinity_policy.as_deref() != Some("Ignore"),
                    honor_taints: c.node_taints_policy.as_deref() == Some("Honor"),
                })
            })
            .collect()
    }

    /// The selector of the Services, ReplicationControllers, ReplicaSets and StatefulSets
    /// that select `pod` (upstream's DefaultSelector).
    fn default_selector(&self, pod: &Pod) -> Option<Selector> {
        let ns = pod.metadata.namespace.as_deref().unwrap_or("");
        let labels = &pod.metadata.labels;
        let mut reqs: Vec<Requirement> = Vec::new();
        let mut add_map = |m: &std::collections::BTreeMap<String, String>| {
            for (k, v) in m {
                if let Ok(r) = Requirement::new(k, Operator::Equals, vec![v.clone()]) {
                    reqs.push(r);
                }
            }
        };
        for s in self.listers.services.list_namespace(ns) {
            let sel = s.spec.as_ref().map(|s| &s.selector);
            if let Some(sel) =
                sel.filter(|m| !m.is_empty() && m.iter().all(|(k, v)| labels.get(k) == Some(v)))
            {
                add_map(sel);
            }
        }
        for rc in self.listers.replication_controllers.list_namespace(ns) {
            let sel = rc.spec.as_ref().map(|s| &s.selector);
            if let Some(sel) =
                sel.filter(|m| !m.is_empty() && m.iter().all(|(k, v)| labels.get(k) == Some(v)))
            {
                add_map(sel);
            }
        }
        let mut add_label_selector = |sel: &bosun_api_types::meta::v1::LabelSelector| {
            if let Ok(s) = sel.to_selector() {
                if !s.is_everything() && s.matches(labels) {
                    reqs.extend(s.requirements().iter().cloned());
                }
            }
        };
        for rs in self.listers.replica_sets.list_namespace(ns) {
            if let Some(spec) = &rs.spec {
                add_label_selector(&spec.selector);
            }
        }
        for ss in self.listers.stateful_sets.list_namespace(ns) {
            if let Some(spec) = &ss.spec {
                add_label_selector(&spec.selector);
            }
        }
        (!reqs.is_empty()).then(|| Selector::from_requirements(reqs))
    }

    fn constraints(&self, pod: &Pod, when: &str) -> Vec<Constraint> {
        let own = pod
            .spec
            .as_ref()
            .map(|s| s.topology_spread_constraints.as_slice())
            .unwrap_or(&[]);
        if !own.is_empty() {
            return self.compile(pod, own, when);
        }
        if self.args.defaulting_type == "List" {
            return self.compile(pod, &self.args.default_constraints, when);
        }
        // System defaults are ScheduleAnyway only.
        if when != "ScheduleAnyway" {
            return Vec::new();
        }
        let Some(selector) = self.default_selector(pod) else {
            return Vec::new();
        };
        [(ZONE, 5), (HOSTNAME, 3)]
            .into_iter()
            .map(|(key, skew)| Constraint {
                max_skew: skew,
                key: key.into(),
                selector: selector.clone(),
                min_domains: 1,
                honor_affinity: true,
                honor_taints: false,
            })
            .collect()
    }
}

fn node_eligible(c: &Constraint, pod: &Pod, node: &NodeInfo) -> bool {
    let Some(n) = &node.node else { return false };
    if c.honor_affinity {
        if let Some(spec) = &pod.spec {
            if !placement::required_affinity_matches(spec, n) {
                return false;
            }
        }
    }
    if c.honor_taints {
        let taints = n.spec.as_ref().map(|s| s.taints.as_slice()).unwrap_or(&[]);
        let tol = pod
            .spec
            .as_ref()
            .map(|s| s.tolerations.as_slice())
            .unwrap_or(&[]);
        if placement::untolerated(taints, tol, |t| {
            t.effect == "NoSchedule" || t.effect == "NoExecute"
        })
        .is_some()
        {
            return false;
        }
    }
    true
}

fn count_matching(c: &Constraint, ns: &str, node: &NodeInfo) -> i64 {
    node.pods
        .iter()
        .filter(|p| {
            p.namespace() == ns
                && p.pod.metadata.deletion_timestamp.is_none()
                && c.selector.matches(&p.pod.metadata.labels)
        })
        .count() as i64
}

/// Per DoNotSchedule constraint: matching pods per domain.
#[derive(Clone, Debug)]
struct FilterState {
    constraints: Vec<Constraint>,
    counts: Vec<HashMap<String, i64>>,
}

impl FilterState {
    fn min_match(&self, i: usize) -> i64 {
        let counts = &self.counts[i];
        if counts.len() < self.constraints[i].min_domains {
            return 0;
        }
        counts.values().copied().min().unwrap_or(0)
    }

    fn update(&mut self, pod: &Pod, other: &PodInfo, node: &NodeInfo, delta: i64) {
        let ns = pod.metadata.namespace.as_deref().unwrap_or("");
        if other.namespace() != ns {
            return;
        }
        if !self
            .constraints
            .iter()
            .all(|c| node.labels().contains_key(&c.key))
        {
            return;
        }
        for (i, c) in self.constraints.iter().enumerate() {
            if !node_eligible(c, pod, node) || !c.selector.matches(&other.pod.metadata.labels) {
                continue;
            }
            if let Some(v) = node.labels().get(&c.key) {
                *self.counts[i].entry(v.clone()).or_default() += delta;
            }
        }
    }
}

const FILTER_KEY: &str = "PreFilterPodTopologySpread";
const SCORE_KEY: &str = "PreScorePodTopologySpread";

impl Plugin for PodTopologySpread {
    fn name(&self) -> &str {
        "PodTopologySpread"
    }
    extension_points!(pre_filter, filter, pre_score, score);
    fn events_to_register(&self) -> Vec<ClusterEventWithHint> {
        vec![
            ClusterEvent::new(
                EventResource::AssignedPod,
                ActionType::ALL,
                "AssignedPodChange",
            )
            .into(),
            node_event(
                ActionType::ADD
                    | ActionType::DELETE
                    | ActionType::UPDATE_NODE_LABEL
                    | ActionType::UPDATE_NODE_TAINT,
                "NodeChange",
            ),
        ]
    }
}

impl PreFilterPlugin for PodTopologySpread {
    fn pre_filter(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        snapshot: &Snapshot,
    ) -> Result<Option<HashSet<String>>, Status> {
        let constraints = self.constraints(&pod.pod, "DoNotSchedule");
        if constraints.is_empty() {
            return Err(Status::skip());
        }
        // Count in parallel over nodes, on borrowed domain names; only the few distinct
        // domains are copied at the end.
        let ns = pod.namespace();
        let n = constraints.len();
        let acc = snapshot
            .nodes()
            .par_iter()
            .with_min_len(256)
            .fold(
                || vec![HashMap::<&str, i64>::new(); n],
                |mut acc, node| {
                    let labels = node.labels();
                    if !constraints.iter().all(|c| labels.contains_key(&c.key)) {
                        return acc;
                    }
                    for (i, c) in constraints.iter().enumerate() {
                        if !node_eligible(c, &pod.pod, node) {
                            continue;
                        }
                        if let Some(v) = labels.get(&c.key) {
                            let m = if node.pods.is_empty() {
                                0
                            } else {
                                count_matching(c, ns, node)
                            };
                            *acc[i].entry(v.as_str()).or_insert(0) += m;
                        }
                    }
                    acc
                },
            )
            .reduce(
                || vec![HashMap::new(); n],
                |mut a, b| {
                    for (x, y) in a.iter_mut().zip(b) {
                        for (k, v) in y {
                            *x.entry(k).or_insert(0) += v;
                        }
                    }
                    a
                },
            );
        let counts: Vec<HashMap<String, i64>> = acc
            .into_iter()
            .map(|m| m.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
            .collect();
        state.write(
            FILTER_KEY,
            FilterState {
                constraints,
                counts,
            },
        );
        Ok(None)
    }
    fn extensions(&self) -> Option<&dyn PreFilterExtensions> {
        Some(self)
    }
}

impl PreFilterExtensions for PodTopologySpread {
    fn add_pod(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        add: &Arc<PodInfo>,
        node: &NodeInfo,
    ) -> Status {
        if let Some(s) = state.read_mut::<FilterState>(FILTER_KEY) {
            s.update(&pod.pod, add, node, 1);
        }
        Status::success()
    }
    fn remove_pod(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        remove: &Arc<PodInfo>,
        node: &NodeInfo,
    ) -> Status {
        if let Some(s) = state.read_mut::<FilterState>(FILTER_KEY) {
            s.update(&pod.pod, remove, node, -1);
        }
        Status::success()
    }
}

impl FilterPlugin for PodTopologySpread {
    fn filter(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        let Some(s) = state.read::<FilterState>(FILTER_KEY) else {
            return Status::success();
        };
        for (i, c) in s.constraints.iter().enumerate() {
            let Some(v) = node.labels().get(&c.key) else {
                return Status::unresolvable(
                    "node(s) didn't match pod topology spread constraints (missing required label)",
                );
            };
            let self_match = i64::from(c.selector.matches(&pod.pod.metadata.labels));
            let matched = s.counts[i].get(v).copied().unwrap_or(0);
            if matched + self_match - s.min_match(i) > c.max_skew {
                return Status::unschedulable(
                    "node(s) didn't match pod topology spread constraints",
                );
            }
        }
        Status::success()
    }
}

#[derive(Clone, Debug)]
struct ScoreState {
    constraints: Vec<Constraint>,
    weights: Vec<f64>,
    counts: Vec<HashMap<String, i64>>,
    ignored: HashSet<String>,
}

impl PreScorePlugin for PodTopologySpread {
    fn pre_score(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        nodes: &[Arc<NodeInfo>],
        snapshot: &Snapshot,
    ) -> Status {
        let constraints = self.constraints(&pod.pod, "ScheduleAnyway");
        if constraints.is_empty() {
            return Status::skip();
        }
        let mut ignored = HashSet::new();
        let mut domains: Vec<HashSet<&str>> = vec![HashSet::new(); constraints.len()];
        for n in nodes {
            let labels = n.labels();
            if !constraints.iter().all(|c| labels.contains_key(&c.key)) {
                ignored.insert(n.name.clone());
                continue;
            }
            for (i, c) in constraints.iter().enumerate() {
                if let Some(v) = labels.get(&c.key) {
                    domains[i].insert(v.as_str());
                }
            }
        }
        let weights = domains
            .iter()
            .map(|d| ((d.len() + 2) as f64).ln())
            .collect();
        let mut counts: Vec<HashMap<String, i64>> = domains
            .iter()
            .map(|d| d.iter().map(|v| (v.to_string(), 0)).collect())
            .collect();
        let ns = pod.namespace();
        for node in snapshot.nodes() {
            let labels = node.labels();
            if !constraints.iter().all(|c| labels.contains_key(&c.key)) {
                continue;
            }
            for (i, c) in constraints.iter().enumerate() {
                let Some(v) = labels.get(&c.key) else {
                    continue;
                };
                let Some(slot) = counts[i].get_mut(v) else {
                    continue;
                };
                if node_eligible(c, &pod.pod, node) {
                    *slot += count_matching(c, ns, node);
                }
            }
        }
        state.write(
            SCORE_KEY,
            ScoreState {
                constraints,
                weights,
                counts,
                ignored,
            },
        );
        Status::success()
    }
}

impl ScorePlugin for PodTopologySpread {
    fn score(&self, state: &CycleState, _: &PodInfo, node: &NodeInfo) -> Result<i64, Status> {
        let Some(s) = state.read::<ScoreState>(SCORE_KEY) else {
            return Ok(0);
        };
        if s.ignored.contains(&node.name) {
            return Ok(0);
        }
        let mut score = 0.0;
        for (i, c) in s.constraints.iter().enumerate() {
            if let Some(v) = node.labels().get(&c.key) {
                let cnt = s.counts[i].get(v).copied().unwrap_or(0);
                score += cnt as f64 * s.weights[i] + (c.max_skew - 1) as f64;
            }
        }
        Ok(score.round() as i64)
    }
    fn normalize_scores(
        &self,
        state: &CycleState,
        _: &PodInfo,
        scores: &mut [NodeScore],
    ) -> Status {
        let Some(s) = state.read::<ScoreState>(SCORE_KEY) else {
            return Status::success();
        };
        let valid = scores.iter().filter(|x| !s.ignored.contains(&x.name));
        let (min, max) = valid.fold((i64::MAX, 0i64), |(lo, hi), x| {
            (lo.min(x.score), hi.max(x.score))
        });
        for x in scores.iter_mut() {
            x.score = if s.ignored.contains(&x.name) {
                0
            } else if max == 0 {
                MAX_NODE_SCORE
            } else {
                MAX_NODE_SCORE * (max + min - x.score) / max
            };
        }
        Status::success()
    }
}
