//! InterPodAffinity: required pod affinity and anti-affinity (the incoming pod's, and existing
//! pods' anti-affinity against it) as a filter; preferred terms, and existing pods' terms
//! symmetrically, as a score (weight 2).

use super::node_event;
use crate::cache::Snapshot;
use crate::cluster::Listers;
use crate::cycle_state::CycleState;
use crate::extension_points;
use crate::interface::*;
use crate::status::Status;
use crate::types::{AffinityTerm, NodeInfo, PodInfo};
use rayon::prelude::*;
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

/// InterPodAffinityArgs.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InterPodAffinityArgs {
    /// The score weight of existing pods' required affinity terms that match the incoming pod.
    #[serde(default = "one")]
    pub hard_pod_affinity_weight: i64,
}

fn one() -> i64 {
    1
}

impl Default for InterPodAffinityArgs {
    fn default() -> Self {
        InterPodAffinityArgs {
            hard_pod_affinity_weight: 1,
        }
    }
}

/// The plugin.
pub struct InterPodAffinity {
    args: InterPodAffinityArgs,
    listers: Arc<Listers>,
}

impl InterPodAffinity {
    /// The plugin, reading namespace labels from `listers`.
    pub fn new(args: InterPodAffinityArgs, listers: Arc<Listers>) -> Self {
        InterPodAffinity { args, listers }
    }

    fn ns_labels(&self, pod: &PodInfo) -> Option<BTreeMap<String, String>> {
        self.listers.namespace_labels(pod.namespace())
    }
}

type TopologyCounts = HashMap<(String, String), i64>;

#[derive(Clone, Debug, Default)]
struct FilterState {
    /// Existing pods' anti-affinity terms matching the incoming pod.
    existing_anti: TopologyCounts,
    /// Existing pods matching each incoming affinity term (all terms share the map).
    affinity: TopologyCounts,
    anti_affinity: TopologyCounts,
    pod_ns_labels: Option<BTreeMap<String, String>>,
}

impl FilterState {
    fn merge(mut self, other: FilterState) -> FilterState {
        for (mine, theirs) in [
            (&mut self.existing_anti, other.existing_anti),
            (&mut self.affinity, other.affinity),
            (&mut self.anti_affinity, other.anti_affinity),
        ] {
            for (k, v) in theirs {
                *mine.entry(k).or_default() += v;
            }
        }
        self
    }
}

fn bump(map: &mut TopologyCounts, term: &AffinityTerm, node: &NodeInfo, delta: i64) {
    if let Some(v) = node.labels().get(&term.topology_key) {
        let e = map
            .entry((term.topology_key.clone(), v.clone()))
            .or_default();
        *e += delta;
        if *e == 0 {
            map.remove(&(term.topology_key.clone(), v.clone()));
        }
    }
}

impl InterPodAffinity {
    fn account(
        &self,
        s: &mut FilterState,
        pod: &PodInfo,
        other: &PodInfo,
        node: &NodeInfo,
        delta: i64,
    ) {
        for t in &other.required_anti_affinity {
            if t.matches(&pod.pod, s.pod_ns_labels.as_ref()) {
                bump(&mut s.existing_anti, t, node, delta);
            }
        }
        if pod.required_affinity.is_empty() && pod.required_anti_affinity.is_empty() {
            return;
        }
        // Namespace labels only matter to terms with a namespace selector.
        let other_ns = if pod
            .required_affinity
            .iter()
            .chain(&pod.required_anti_affinity)
            .any(|t| t.namespace_selector.is_some())
        {
            self.listers.namespace_labels(other.namespace())
        } else {
            None
        };
        // An affinity term counts an existing pod only if that pod matches every term.
        if !pod.required_affinity.is_empty()
            && pod
                .required_affinity
                .iter()
                .all(|t| t.matches(&other.pod, other_ns.as_ref()))
        {
            for t in &pod.required_affinity {
                bump(&mut s.affinity, t, node, delta);
            }
        }
        for t in &pod.required_anti_affinity {
            if t.matches(&other.pod, other_ns.as_ref()) {
                bump(&mut s.anti_affinity, t, node, delta);
            }
        }
    }
}

const FILTER_KEY: &str = "PreFilterInterPodAffinity";
const SCORE_KEY: &str = "PreScoreInterPodAffinity";

impl Plugin for InterPodAffinity {
    fn name(&self) -> &str {
        "InterPodAffinity"
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
                ActionType::ADD | ActionType::UPDATE_NODE_LABEL,
                "NodeLabelChange",
            ),
        ]
    }
}

impl PreFilterPlugin for InterPodAffinity {
    fn pre_filter(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        snapshot: &Snapshot,
    ) -> Result<Option<HashSet<String>>, Status> {
        let mut s = FilterState {
            pod_ns_labels: self.ns_labels(pod),
            ..Default::default()
        };
        let own_terms =
            !(pod.required_affinity.is_empty() && pod.required_anti_affinity.is_empty());
        if own_terms {
            // Every pod in the cluster is a candidate: count in parallel over nodes.
            let base = s.clone();
            s = snapshot
                .nodes()
                .par_iter()
                .with_min_len(256)
                .fold(
                    || base.clone(),
                    |mut acc, node| {
                        for other in &node.pods {
                            self.account(&mut acc, pod, other, node, 1);
                        }
                        acc
                    },
                )
                .reduce(|| base.clone(), FilterState::merge);
        } else {
            for node in snapshot.with_required_anti_affinity() {
                for other in &node.pods_with_required_anti_affinity {
                    self.account(&mut s, pod, other, node, 1);
                }
            }
        }
        if !own_terms && s.existing_anti.is_empty() {
            return Err(Status::skip());
        }
        state.write(FILTER_KEY, s);
        Ok(None)
    }
    fn extensions(&self) -> Option<&dyn PreFilterExtensions> {
        Some(self)
    }
}

impl PreFilterExtensions for InterPodAffinity {
    fn add_pod(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        add: &Arc<PodInfo>,
        node: &NodeInfo,
    ) -> Status {
        if let Some(mut s) = state.read::<FilterState>(FILTER_KEY).cloned() {
            self.account(&mut s, pod, add, node, 1);
            state.write(FILTER_KEY, s);
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
        if let Some(mut s) = state.read::<FilterState>(FILTER_KEY).cloned() {
            self.account(&mut s, pod, remove, node, -1);
            state.write(FILTER_KEY, s);
        }
        Status::success()
    }
}

impl FilterPlugin for InterPodAffinity {
    fn filter(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        let Some(s) = state.read::<FilterState>(FILTER_KEY) else {
            return Status::success();
        };
        let labels = node.labels();
        if !pod.required_affinity.is_empty() {
            let all = pod.required_affinity.iter().all(|t| {
                labels.get(&t.topology_key).is_some_and(|v| {
                    s.affinity
                        .get(&(t.topology_key.clone(), v.clone()))
                        .is_some_and(|c| *c > 0)
                })
            });
            if !all {
                // The first pod of a group that selects itself may go anywhere with the keys.
                let first = s.affinity.is_empty()
                    && pod.required_affinity.iter().all(|t| {
                        t.matches(&pod.pod, s.pod_ns_labels.as_ref())
                            && labels.contains_key(&t.topology_key)
                    });
                if !first {
                    return Status::unresolvable("node(s) didn't match pod affinity rules");
                }
            }
        }
        for t in &pod.required_anti_affinity {
            if let Some(v) = labels.get(&t.topology_key) {
                if s.anti_affinity
                    .get(&(t.topology_key.clone(), v.clone()))
                    .is_some_and(|c| *c > 0)
                {
                    return Status::unschedulable("node(s) didn't match pod anti-affinity rules");
                }
            }
        }
        if !s.existing_anti.is_empty()
            && labels.iter().any(|(k, v)| {
                s.existing_anti
                    .get(&(k.clone(), v.clone()))
                    .is_some_and(|c| *c > 0)
            })
        {
            return Status::unschedulable(
                "node(s) didn't satisfy existing pods anti-affinity rules",
            );
        }
        Status::success()
    }
}

#[derive(Clone, Debug, Default)]
struct ScoreState {
    topology: TopologyCounts,
}

impl PreScorePlugin for InterPodAffinity {
    fn pre_score(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        _: &[Arc<NodeInfo>],
        snapshot: &Snapshot,
    ) -> Status {
        let has_pref =
            !(pod.preferred_affinity.is_empty() && pod.preferred_anti_affinity.is_empty());
        let mut any_existing = snapshot.with_affinity().peekable();
        if !has_pref && any_existing.peek().is_none() {
            return Status::skip();
        }
        let pod_ns = self.ns_labels(pod);
        let mut s = ScoreState::default();
        let mut process = |node: &NodeInfo, other: &PodInfo| {
            // Namespace labels only matter to terms with a namespace selector.
            let other_ns = if pod
                .required_affinity
                .iter()
                .chain(&pod.required_anti_affinity)
                .any(|t| t.namespace_selector.is_some())
            {
                self.listers.namespace_labels(other.namespace())
            } else {
                None
            };
            for w in &pod.preferred_affinity {
                if w.term.matches(&other.pod, other_ns.as_ref()) {
                    bump(&mut s.topology, &w.term, node, w.weight as i64);
                }
            }
            for w in &pod.preferred_anti_affinity {
                if w.term.matches(&other.pod, other_ns.as_ref()) {
                    bump(&mut s.topology, &w.term, node, -(w.weight as i64));
                }
            }
            if self.args.hard_pod_affinity_weight > 0 {
                for t in &other.required_affinity {
                    if t.matches(&pod.pod, pod_ns.as_ref()) {
                        bump(&mut s.topology, t, node, self.args.hard_pod_affinity_weight);
                    }
                }
            }
            for w in &other.preferred_affinity {
                if w.term.matches(&pod.pod, pod_ns.as_ref()) {
                    bump(&mut s.topology, &w.term, node, w.weight as i64);
                }
            }
            for w in &other.preferred_anti_affinity {
                if w.term.matches(&pod.pod, pod_ns.as_ref()) {
                    bump(&mut s.topology, &w.term, node, -(w.weight as i64));
                }
            }
        };
        if has_pref {
            for node in snapshot.nodes() {
                for other in &node.pods {
                    process(node, other);
                }
            }
        } else {
            for node in snapshot.with_affinity() {
                for other in &node.pods_with_affinity {
                    process(node, other);
                }
            }
        }
        if s.topology.is_empty() {
            return Status::skip();
        }
        state.write(SCORE_KEY, s);
        Status::success()
    }
}

impl ScorePlugin for InterPodAffinity {
    fn score(&self, state: &CycleState, _: &PodInfo, node: &NodeInfo) -> Result<i64, Status> {
        let Some(s) = state.read::<ScoreState>(SCORE_KEY) else {
            return Ok(0);
        };
        let labels = node.labels();
        Ok(s.topology
            .iter()
            .filter(|((k, v), _)| labels.get(k) == Some(v))
            .map(|(_, c)| *c)
            .sum())
    }
    fn normalize_scores(
        &self,
        state: &CycleState,
        _: &PodInfo,
        scores: &mut [NodeScore],
    ) -> Status {
        if state.read::<ScoreState>(SCORE_KEY).is_none() {
            return Status::success();
        }
        let min = scores.iter().map(|s| s.score).min().unwrap_or(0);
        let max = scores.iter().map(|s| s.score).max().unwrap_or(0);
        let diff = max - min;
        for s in scores.iter_mut() {
            s.score = if diff > 0 {
                (MAX_NODE_SCORE as f64 * ((s.score - min) as f64 / diff as f64)) as i64
            } else {
                0
            };
        }
        Status::success()
    }
}
