//! The small plugins: PrioritySort, SchedulingGates, NodeUnschedulable, NodeName,
//! TaintToleration, NodeAffinity, NodePorts and ImageLocality.

use super::{default_normalize, node_event, pod_event};
use crate::cache::Snapshot;
use crate::cycle_state::CycleState;
use crate::extension_points;
use crate::interface::*;
use crate::queue::QueuedPodInfo;
use crate::status::Status;
use crate::types::{normalize_image, HostPort, NodeInfo, PodInfo};
use bosun_api_types::core::v1::{Node, Taint, Toleration};
use bosun_api_types::placement;
use std::any::Any;
use std::collections::HashSet;
use std::sync::Arc;

/// Orders the queue by priority, then by arrival.
pub struct PrioritySort;

impl Plugin for PrioritySort {
    fn name(&self) -> &str {
        "PrioritySort"
    }
    extension_points!(queue_sort);
}

impl QueueSortPlugin for PrioritySort {
    fn less(&self, a: &QueuedPodInfo, b: &QueuedPodInfo) -> bool {
        let (pa, pb) = (a.info.priority(), b.info.priority());
        pa > pb || (pa == pb && a.timestamp < b.timestamp)
    }
}

/// Keeps pods with `spec.schedulingGates` out of the active queue.
pub struct SchedulingGates;

impl Plugin for SchedulingGates {
    fn name(&self) -> &str {
        "SchedulingGates"
    }
    extension_points!(pre_enqueue);
    fn events_to_register(&self) -> Vec<ClusterEventWithHint> {
        vec![pod_event(
            EventResource::UnscheduledPod,
            ActionType::UPDATE_POD_GATES_ELIMINATED,
        )]
    }
}

impl PreEnqueuePlugin for SchedulingGates {
    fn pre_enqueue(&self, pod: &PodInfo) -> Status {
        let gates: Vec<&str> = pod
            .pod
            .spec
            .iter()
            .flat_map(|s| s.scheduling_gates.iter())
            .map(|g| g.name.as_str())
            .collect();
        if gates.is_empty() {
            Status::success()
        } else {
            Status::unresolvable(format!(
                "waiting for scheduling gates: [{}]",
                gates.join(" ")
            ))
        }
    }
}

fn node_of(any: Option<&dyn Any>) -> Option<&Node> {
    any.and_then(|a| a.downcast_ref::<Node>())
}

/// Rejects nodes with `spec.unschedulable` unless the pod tolerates
/// `node.kubernetes.io/unschedulable:NoSchedule`.
pub struct NodeUnschedulable;

const UNSCHEDULABLE_TAINT: &str = "node.kubernetes.io/unschedulable";

impl Plugin for NodeUnschedulable {
    fn name(&self) -> &str {
        "NodeUnschedulable"
    }
    extension_points!(filter);
    fn events_to_register(&self) -> Vec<ClusterEventWithHint> {
        let hint: QueueingHintFn =
            Arc::new(
                |_, _, new| match node_of(new).and_then(|n| n.spec.as_ref()) {
                    Some(s) if s.unschedulable == Some(true) => QueueingHint::Skip,
                    _ => QueueingHint::Queue,
                },
            );
        vec![ClusterEventWithHint {
            event: ClusterEvent::new(
                EventResource::Node,
                ActionType::ADD | ActionType::UPDATE_NODE_TAINT,
                "NodeSchedulable",
            ),
            hint: Some(hint),
        }]
    }
}

impl FilterPlugin for NodeUnschedulable {
    fn filter(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        let Some(n) = &node.node else {
            return Status::unresolvable("node not found");
        };
        if n.spec.as_ref().and_then(|s| s.unschedulable) != Some(true) {
            return Status::success();
        }
        let taint = Taint {
            key: UNSCHEDULABLE_TAINT.into(),
            effect: "NoSchedule".into(),
            ..Default::default()
        };
        let tolerated = pod
            .pod
            .spec
            .iter()
            .flat_map(|s| s.tolerations.iter())
            .any(|t| placement::tolerates(t, &taint));
        if tolerated {
            Status::success()
        } else {
            Status::unresolvable("node(s) were unschedulable")
        }
    }
}

/// Honours `spec.nodeName` set on a pending pod.
pub struct NodeName;

impl Plugin for NodeName {
    fn name(&self) -> &str {
        "NodeName"
    }
    extension_points!(filter);
    fn events_to_register(&self) -> Vec<ClusterEventWithHint> {
        vec![node_event(ActionType::ADD, "NodeAdd")]
    }
}

impl FilterPlugin for NodeName {
    fn filter(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        match pod.pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) {
            Some(n) if !n.is_empty() && n != node.name => {
                Status::unresolvable("node(s) didn't match the requested node name")
            }
            _ => Status::success(),
        }
    }
}

/// NoSchedule and NoExecute taints must be tolerated; untolerated PreferNoSchedule taints
/// lower a node's score (weight 3 by default).
pub struct TaintToleration;

#[derive(Clone)]
struct PreferTolerations(Vec<Toleration>);

impl Plugin for TaintToleration {
    fn name(&self) -> &str {
        "TaintToleration"
    }
    extension_points!(filter, pre_score, score);
    fn events_to_register(&self) -> Vec<ClusterEventWithHint> {
        let hint: QueueingHintFn = Arc::new(|pod, _, new| {
            let Some(n) = node_of(new) else {
                return QueueingHint::Queue;
            };
            let taints = n.spec.as_ref().map(|s| s.taints.as_slice()).unwrap_or(&[]);
            let tolerations = pod
                .spec
                .as_ref()
                .map(|s| s.tolerations.as_slice())
                .unwrap_or(&[]);
            match placement::untolerated(taints, tolerations, |t| {
                t.effect == "NoSchedule" || t.effect == "NoExecute"
            }) {
                Some(_) => QueueingHint::Skip,
                None => QueueingHint::Queue,
            }
        });
        vec![
            ClusterEventWithHint {
                event: ClusterEvent::new(
                    EventResource::Node,
                    ActionType::ADD | ActionType::UPDATE_NODE_TAINT,
                    "NodeTaintChange",
                ),
                hint: Some(hint),
            },
            pod_event(
                EventResource::UnscheduledPod,
                ActionType::UPDATE_POD_TOLERATIONS,
            ),
        ]
    }
}

impl FilterPlugin for TaintToleration {
    fn filter(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        let Some(n) = &node.node else {
            return Status::unresolvable("node not found");
        };
        let taints = n.spec.as_ref().map(|s| s.taints.as_slice()).unwrap_or(&[]);
        if taints.is_empty() {
            return Status::success();
        }
        let tolerations = pod
            .pod
            .spec
            .as_ref()
            .map(|s| s.tolerations.as_slice())
            .unwrap_or(&[]);
        match placement::untolerated(taints, tolerations, |t| {
            t.effect == "NoSchedule" || t.effect == "NoExecute"
        }) {
            Some(t) => Status::unresolvable(format!(
                "node(s) had untolerated taint {{{}: {}}}",
                t.key,
                t.value.as_deref().unwrap_or("")
            )),
            None => Status::success(),
        }
    }
}

impl PreScorePlugin for TaintToleration {
    fn pre_score(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        _: &[Arc<NodeInfo>],
        _: &Snapshot,
    ) -> Status {
        let t = pod
            .pod
            .spec
            .iter()
            .flat_map(|s| s.tolerations.iter())
            .filter(|t| {
                t.effect
                    .as_deref()
                    .is_none_or(|e| e.is_empty() || e == "PreferNoSchedule")
            })
            .cloned()
            .collect();
        state.write("PreScoreTaintToleration", PreferTolerations(t));
        Status::success()
    }
}

impl ScorePlugin for TaintToleration {
    fn score(&self, state: &CycleState, _: &PodInfo, node: &NodeInfo) -> Result<i64, Status> {
        let empty = PreferTolerations(Vec::new());
        let tol = state
            .read::<PreferTolerations>("PreScoreTaintToleration")
            .unwrap_or(&empty);
        let taints = node
            .node
            .as_ref()
            .and_then(|n| n.spec.as_ref())
            .map(|s| s.taints.as_slice())
            .unwrap_or(&[]);
        Ok(taints
            .iter()
            .filter(|t| t.effect == "PreferNoSchedule")
            .filter(|t| !tol.0.iter().any(|x| placement::tolerates(x, t)))
            .count() as i64)
    }
    fn normalize_scores(&self, _: &CycleState, _: &PodInfo, scores: &mut [NodeScore]) -> Status {
        default_normalize(MAX_NODE_SCORE, true, scores);
        Status::success()
    }
}

/// `nodeSelector` and required node affinity must match; matching preferred terms add their
/// weights to the score (weight 2 by default).
pub struct NodeAffinity;

impl Plugin for NodeAffinity {
    fn name(&self) -> &str {
        "NodeAffinity"
    }
    extension_points!(pre_filter, filter, pre_score, score);
    fn events_to_register(&self) -> Vec<ClusterEventWithHint> {
        let hint: QueueingHintFn =
            Arc::new(|pod, _, new| match (node_of(new), pod.spec.as_ref()) {
                (Some(n), Some(spec)) if !placement::required_affinity_matches(spec, n) => {
                    QueueingHint::Skip
                }
                _ => QueueingHint::Queue,
            });
        vec![ClusterEventWithHint {
            event: ClusterEvent::new(
                EventResource::Node,
                ActionType::ADD | ActionType::UPDATE_NODE_LABEL,
                "NodeLabelChange",
            ),
            hint: Some(hint),
        }]
    }
}

impl PreFilterPlugin for NodeAffinity {
    fn pre_filter(
        &self,
        _: &mut CycleState,
        pod: &PodInfo,
        _: &Snapshot,
    ) -> Result<Option<HashSet<String>>, Status> {
        let Some(sel) = pod
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.affinity.as_ref())
            .and_then(|a| a.node_affinity.as_ref())
            .and_then(|n| {
                n.required_during_scheduling_ignored_during_execution
                    .as_ref()
            })
        else {
            return Ok(None);
        };
        // Terms that only pin metadata.name narrow the nodes to evaluate (DaemonSet pods).
        let mut names = HashSet::new();
        for t in &sel.node_selector_terms {
            let pinned = t.match_expressions.is_empty()
                && t.match_fields.len() == 1
                && t.match_fields[0].key == "metadata.name"
                && t.match_fields[0].operator == "In";
            if !pinned {
                return Ok(None);
            }
            names.extend(t.match_fields[0].values.iter().cloned());
        }
        if names.is_empty() {
            return Ok(None);
        }
        Ok(Some(names))
    }
}

impl FilterPlugin for NodeAffinity {
    fn filter(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        let (Some(n), Some(spec)) = (&node.node, pod.pod.spec.as_ref()) else {
            return Status::unresolvable("node not found");
        };
        if placement::required_affinity_matches(spec, n) {
            Status::success()
        } else {
            Status::unresolvable("node(s) didn't match Pod's node affinity/selector")
        }
    }
}

impl PreScorePlugin for NodeAffinity {
    fn pre_score(
        &self,
        _: &mut CycleState,
        pod: &PodInfo,
        _: &[Arc<NodeInfo>],
        _: &Snapshot,
    ) -> Status {
        let has = pod
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.affinity.as_ref())
            .and_then(|a| a.node_affinity.as_ref())
            .is_some_and(|n| {
                !n.preferred_during_scheduling_ignored_during_execution
                    .is_empty()
            });
        if has {
            Status::success()
        } else {
            Status::skip()
        }
    }
}

impl ScorePlugin for NodeAffinity {
    fn score(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Result<i64, Status> {
        let terms = pod
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.affinity.as_ref())
            .and_then(|a| a.node_affinity.as_ref())
            .map(|n| {
                n.preferred_during_scheduling_ignored_during_execution
                    .as_slice()
            })
            .unwrap_or(&[]);
        Ok(terms
            .iter()
            .filter(|t| {
                t.weight != 0 && placement::term_matches(&t.preference, node.labels(), &node.name)
            })
            .map(|t| t.weight as i64)
            .sum())
    }
    fn normalize_scores(&self, _: &CycleState, _: &PodInfo, scores: &mut [NodeScore]) -> Status {
        default_normalize(MAX_NODE_SCORE, false, scores);
        Status::success()
    }
}

/// A pod's host ports must be free on the node.
pub struct NodePorts;

impl Plugin for NodePorts {
    fn name(&self) -> &str {
        "NodePorts"
    }
    extension_points!(pre_filter, filter);
    fn events_to_register(&self) -> Vec<ClusterEventWithHint> {
        vec![
            pod_event(EventResource::AssignedPod, ActionType::DELETE),
            node_event(ActionType::ADD, "NodeAdd"),
        ]
    }
}

impl PreFilterPlugin for NodePorts {
    fn pre_filter(
        &self,
        _: &mut CycleState,
        pod: &PodInfo,
        _: &Snapshot,
    ) -> Result<Option<HashSet<String>>, Status> {
        if pod.host_ports.is_empty() {
            Err(Status::skip())
        } else {
            Ok(None)
        }
    }
}

/// Whether any of `wanted` collides with `used`.
pub fn ports_conflict(wanted: &[HostPort], used: &[HostPort]) -> bool {
    wanted.iter().any(|w| used.iter().any(|u| w.conflicts(u)))
}

impl FilterPlugin for NodePorts {
    fn filter(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        if ports_conflict(&pod.host_ports, &node.used_ports) {
            Status::unschedulable("node(s) didn't have free ports for the requested pod ports")
        } else {
            Status::success()
        }
    }
}

/// Prefers nodes that already have the pod's images, scaled by how widely each image is
/// spread (weight 1 by default).
pub struct ImageLocality;

const MB: i64 = 1024 * 1024;
const MIN_THRESHOLD: i64 = 23 * MB;
const MAX_CONTAINER_THRESHOLD: i64 = 1000 * MB;

impl Plugin for ImageLocality {
    fn name(&self) -> &str {
        "ImageLocality"
    }
    extension_points!(pre_score, score);
}

#[derive(Clone)]
struct ImageSpread {
    total_nodes: usize,
    /// Per image of the pod: normalized name and on how many nodes it is.
    images: Vec<(String, usize)>,
}

impl PreScorePlugin for ImageLocality {
    fn pre_score(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        _: &[Arc<NodeInfo>],
        snapshot: &Snapshot,
    ) -> Status {
        let images = pod
            .pod
            .spec
            .iter()
            .flat_map(|s| s.init_containers.iter().chain(s.containers.iter()))
            .filter_map(|c| c.image.as_deref())
            .map(|i| {
                let n = normalize_image(i);
                let count = snapshot.image_num_nodes(&n);
                (n, count)
            })
            .collect();
        state.write(
            "PreScoreImageLocality",
            ImageSpread {
                total_nodes: snapshot.len(),
                images,
            },
        );
        Status::success()
    }
}

impl ScorePlugin for ImageLocality {
    fn score(&self, state: &CycleState, _: &PodInfo, node: &NodeInfo) -> Result<i64, Status> {
        let Some(sp) = state.read::<ImageSpread>("PreScoreImageLocality") else {
            return Ok(0);
        };
        if sp.total_nodes == 0 || sp.images.is_empty() {
            return Ok(0);
        }
        let sum: i64 = sp
            .images
            .iter()
            .filter_map(|(name, count)| {
                let size = *node.images.get(name)?;
                Some((size as f64 * (*count as f64 / sp.total_nodes as f64)) as i64)
            })
            .sum();
        let max = MAX_CONTAINER_THRESHOLD * sp.images.len() as i64;
        let sum = sum.clamp(MIN_THRESHOLD, max);
        Ok(MAX_NODE_SCORE * (sum - MIN_THRESHOLD) / (max - MIN_THRESHOLD))
    }
}
