//! NodeResourcesFit (filter on requests vs allocatable; score by LeastAllocated, MostAllocated
//! or RequestedToCapacityRatio) and NodeResourcesBalancedAllocation.

use super::{node_event, pod_event};
use crate::cache::Snapshot;
use crate::config::ConfigError;
use crate::cycle_state::CycleState;
use crate::extension_points;
use crate::interface::*;
use crate::status::Status;
use crate::types::{NodeInfo, PodInfo, Resource};
use serde::Deserialize;
use std::any::Any;
use std::collections::HashSet;
use std::sync::Arc;

/// A resource and its weight in scoring.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct ResourceSpec {
    /// The resource name.
    pub name: String,
    /// Its weight (default 1).
    #[serde(default = "one")]
    pub weight: i64,
}

fn one() -> i64 {
    1
}

/// A point of the RequestedToCapacityRatio shape.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct UtilizationShapePoint {
    /// Utilization, 0–100.
    pub utilization: i64,
    /// Score, 0–10.
    pub score: i64,
}

/// RequestedToCapacityRatio's parameters.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct RequestedToCapacityRatioParam {
    /// The shape, by increasing utilization.
    pub shape: Vec<UtilizationShapePoint>,
}

/// How NodeResourcesFit scores.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ScoringStrategy {
    /// LeastAllocated (default), MostAllocated or RequestedToCapacityRatio.
    #[serde(rename = "type", default = "least")]
    pub kind: String,
    /// Resources and weights (default cpu and memory, weight 1).
    #[serde(default = "default_resources")]
    pub resources: Vec<ResourceSpec>,
    /// The RequestedToCapacityRatio shape.
    #[serde(default)]
    pub requested_to_capacity_ratio: Option<RequestedToCapacityRatioParam>,
}

fn least() -> String {
    "LeastAllocated".into()
}

fn default_resources() -> Vec<ResourceSpec> {
    vec![
        ResourceSpec {
            name: "cpu".into(),
            weight: 1,
        },
        ResourceSpec {
            name: "memory".into(),
            weight: 1,
        },
    ]
}

impl Default for ScoringStrategy {
    fn default() -> Self {
        ScoringStrategy {
            kind: least(),
            resources: default_resources(),
            requested_to_capacity_ratio: None,
        }
    }
}

/// NodeResourcesFitArgs.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct FitArgs {
    /// Resources the filter ignores.
    #[serde(default)]
    pub ignored_resources: Vec<String>,
    /// Resource groups (prefixes before `/`) the filter ignores.
    #[serde(default)]
    pub ignored_resource_groups: Vec<String>,
    /// The scoring strategy.
    #[serde(default)]
    pub scoring_strategy: ScoringStrategy,
}

/// Requests must fit the node's allocatable; scores by the configured strategy (weight 1).
pub struct NodeResourcesFit {
    args: FitArgs,
    shape: Vec<UtilizationShapePoint>,
}

impl NodeResourcesFit {
    /// The plugin with `args` (validated).
    pub fn new(args: FitArgs) -> Result<Self, ConfigError> {
        let shape = match args.scoring_strategy.kind.as_str() {
            "LeastAllocated" | "MostAllocated" => Vec::new(),
            "RequestedToCapacityRatio" => {
                let shape = args
                    .scoring_strategy
                    .requested_to_capacity_ratio
                    .as_ref()
                    .map(|r| r.shape.clone())
                    .unwrap_or_else(|| {
                        vec![
                            UtilizationShapePoint {
                                utilization: 0,
                                score: 10,
                            },
                            UtilizationShapePoint {
                                utilization: 100,
                                score: 0,
                            },
                        ]
                    });
                if shape.is_empty()
                    || shape
                        .windows(2)
                        .any(|w| w[0].utilization >= w[1].utilization)
                    || shape.iter().any(|p| {
                        !(0..=100).contains(&p.utilization) || !(0..=10).contains(&p.score)
                    })
                {
                    return Err(ConfigError::Invalid(
                        "NodeResourcesFit: requestedToCapacityRatio.shape must have increasing utilization in 0-100 and scores in 0-10".into(),
                    ));
                }
                shape
                    .into_iter()
                    .map(|p| UtilizationShapePoint {
                        utilization: p.utilization,
                        score: p.score * (MAX_NODE_SCORE / 10),
                    })
                    .collect()
            }
            other => {
                return Err(ConfigError::Invalid(format!(
                    "NodeResourcesFit: scoring strategy {other:?} is not supported"
                )))
            }
        };
        Ok(NodeResourcesFit { args, shape })
    }

    fn ignored(&self, name: &str) -> bool {
        self.args.ignored_resources.iter().any(|r| r == name)
            || name
                .split_once('/')
                .is_some_and(|(g, _)| self.args.ignored_resource_groups.iter().any(|x| x == g))
    }

    /// The reasons the pod's requests do not fit the node (empty if they do).
    pub fn insufficient(&self, req: &Resource, node: &NodeInfo) -> Vec<String> {
        let mut out = Vec::new();
        if node.allocatable.allowed_pods < node.requested.allowed_pods + 1 {
            out.push("Too many pods".to_string());
        }
        let fits =
            |name: &str| node.allocatable.get(name) >= req.get(name) + node.requested.get(name);
        for (name, r) in [
            ("cpu", req.milli_cpu),
            ("memory", req.memory),
            ("ephemeral-storage", req.ephemeral_storage),
        ] {
            if r > 0 && !fits(name) {
                out.push(format!("Insufficient {name}"));
            }
        }
        for (name, r) in &req.scalar {
            if *r > 0 && !self.ignored(name) && !fits(name) {
                out.push(format!("Insufficient {name}"));
            }
        }
        out
    }

    fn score_resource(&self, requested: i64, alloc: i64) -> i64 {
        match self.args.scoring_strategy.kind.as_str() {
            "MostAllocated" => {
                if alloc == 0 {
                    0
                } else {
                    requested.min(alloc) * MAX_NODE_SCORE / alloc
                }
            }
            "RequestedToCapacityRatio" => {
                let util = if alloc == 0 || requested > alloc {
                    100
                } else {
                    requested * 100 / alloc
                };
                broken_linear(&self.shape, util)
            }
            _ => {
                if alloc == 0 || requested > alloc {
                    0
                } else {
                    (alloc - requested) * MAX_NODE_SCORE / alloc
                }
            }
        }
    }
}

fn broken_linear(shape: &[UtilizationShapePoint], p: i64) -> i64 {
    for (i, pt) in shape.iter().enumerate() {
        if p <= pt.utilization {
            if i == 0 {
                return pt.score;
            }
            let prev = &shape[i - 1];
            return prev.score
                + (pt.score - prev.score) * (p - prev.utilization)
                    / (pt.utilization - prev.utilization);
        }
    }
    shape.last().map(|p| p.score).unwrap_or(0)
}

/// What a resource scorer compares for one resource: requested (with the pod) and allocatable.
fn requested_and_allocatable(
    name: &str,
    pod: &PodInfo,
    node: &NodeInfo,
    non_zero: bool,
) -> (i64, i64) {
    let alloc = node.allocatable.get(name);
    let requested = match (name, non_zero) {
        ("cpu", true) => node.non_zero_requested.0 + pod.non_zero_requests.0,
        ("memory", true) => node.non_zero_requested.1 + pod.non_zero_requests.1,
        _ => node.requested.get(name) + pod.requests.get(name),
    };
    (requested, alloc)
}

fn fit_hint() -> QueueingHintFn {
    Arc::new(
        |pod: &bosun_api_types::core::v1::Pod, _, new: Option<&dyn Any>| {
            let Some(n) = new.and_then(|a| a.downcast_ref::<bosun_api_types::core::v1::Node>())
            else {
                return QueueingHint::Queue;
            };
            // A node too small for the pod even when empty cannot help.
            let info = NodeInfo::new(Arc::new(n.clone()));
            let pi = PodInfo::new(Arc::new(pod.clone()));
            let fits = ["cpu", "memory"].iter().all(|r| {
                let want = pi.requests.get(r);
                want == 0 || info.allocatable.get(r) >= want
            });
            if fits {
                QueueingHint::Queue
            } else {
                QueueingHint::Skip
            }
        },
    )
}

impl Plugin for NodeResourcesFit {
    fn name(&self) -> &str {
        "NodeResourcesFit"
    }
    extension_points!(pre_filter, filter, score);
    fn events_to_register(&self) -> Vec<ClusterEventWithHint> {
        vec![
            pod_event(
                EventResource::AssignedPod,
                ActionType::DELETE | ActionType::UPDATE_POD_SCALE_DOWN,
            ),
            ClusterEventWithHint {
                event: ClusterEvent::new(
                    EventResource::Node,
                    ActionType::ADD | ActionType::UPDATE_NODE_ALLOCATABLE,
                    "NodeAllocatableChange",
                ),
                hint: Some(fit_hint()),
            },
        ]
    }
}

impl PreFilterPlugin for NodeResourcesFit {
    fn pre_filter(
        &self,
        _: &mut CycleState,
        _: &PodInfo,
        _: &Snapshot,
    ) -> Result<Option<HashSet<String>>, Status> {
        // The pod's requests are precomputed in PodInfo.
        Ok(None)
    }
}

impl FilterPlugin for NodeResourcesFit {
    fn filter(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        let reasons = self.insufficient(&pod.requests, node);
        if reasons.is_empty() {
            Status::success()
        } else {
            Status {
                code: crate::status::Code::Unschedulable,
                reasons,
                plugin: String::new(),
            }
        }
    }
}

impl ScorePlugin for NodeResourcesFit {
    fn score(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Result<i64, Status> {
        let rtcr = self.args.scoring_strategy.kind == "RequestedToCapacityRatio";
        let (mut total, mut weights) = (0i64, 0i64);
        for r in &self.args.scoring_strategy.resources {
            let (req, alloc) = requested_and_allocatable(&r.name, pod, node, true);
            if alloc == 0 {
                continue;
            }
            let s = self.score_resource(req, alloc);
            if rtcr && s == 0 {
                continue;
            }
            total += s * r.weight;
            weights += r.weight;
        }
        if weights == 0 {
            return Ok(0);
        }
        Ok(if rtcr {
            (total as f64 / weights as f64).round() as i64
        } else {
            total / weights
        })
    }
}

/// Prefers nodes whose CPU and memory utilization stay balanced (weight 1).
pub struct NodeResourcesBalancedAllocation {
    resources: Vec<ResourceSpec>,
}

/// NodeResourcesBalancedAllocationArgs.
#[derive(Clone, Debug, Deserialize)]
pub struct BalancedArgs {
    /// Resources to balance (default cpu and memory).
    #[serde(default = "default_resources")]
    pub resources: Vec<ResourceSpec>,
}

impl Default for BalancedArgs {
    fn default() -> Self {
        BalancedArgs {
            resources: default_resources(),
        }
    }
}

impl NodeResourcesBalancedAllocation {
    /// The plugin with `args`.
    pub fn new(args: BalancedArgs) -> Self {
        NodeResourcesBalancedAllocation {
            resources: args.resources,
        }
    }
}

impl Plugin for NodeResourcesBalancedAllocation {
    fn name(&self) -> &str {
        "NodeResourcesBalancedAllocation"
    }
    extension_points!(pre_score, score);
    fn events_to_register(&self) -> Vec<ClusterEventWithHint> {
        vec![node_event(ActionType::ADD, "NodeAdd")]
    }
}

impl PreScorePlugin for NodeResourcesBalancedAllocation {
    fn pre_score(
        &self,
        _: &mut CycleState,
        pod: &PodInfo,
        _: &[Arc<NodeInfo>],
        _: &Snapshot,
    ) -> Status {
        // Best-effort pods change no balance.
        if self
            .resources
            .iter()
            .all(|r| pod.requests.get(&r.name) == 0)
        {
            Status::skip()
        } else {
            Status::success()
        }
    }
}

impl ScorePlugin for NodeResourcesBalancedAllocation {
    fn score(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Result<i64, Status> {
        let fractions: Vec<f64> = self
            .resources
            .iter()
            .filter_map(|r| {
                let (req, alloc) = requested_and_allocatable(&r.name, pod, node, false);
                (alloc != 0).then(|| (req as f64 / alloc as f64).min(1.0))
            })
            .collect();
        let std = match fractions.len() {
            0 | 1 => 0.0,
            2 => ((fractions[0] - fractions[1]) / 2.0).abs(),
            n => {
                let mean = fractions.iter().sum::<f64>() / n as f64;
                (fractions
                    .iter()
                    .map(|f| (f - mean) * (f - mean))
                    .sum::<f64>()
                    / n as f64)
                    .sqrt()
            }
        };
        Ok(((1.0 - std) * MAX_NODE_SCORE as f64) as i64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(cpu: &str, mem: &str, pods: &[(i64, i64)]) -> NodeInfo {
        let n = serde_json::from_value(json!({"metadata": {"name": "n"},
            "status": {"allocatable": {"cpu": cpu, "memory": mem, "pods": "110"}}}))
        .unwrap();
        let mut info = NodeInfo::new(Arc::new(n));
        for (i, (c, m)) in pods.iter().enumerate() {
            info.add_pod(pod(&format!("p{i}"), *c, *m));
        }
        info
    }

    fn pod(name: &str, milli: i64, mem: i64) -> Arc<PodInfo> {
        PodInfo::new(Arc::new(
            serde_json::from_value(json!({"metadata": {"name": name, "uid": name},
                "spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": format!("{milli}m"), "memory": mem.to_string()}}}]}}))
            .unwrap(),
        ))
    }

    fn fit(kind: &str) -> NodeResourcesFit {
        NodeResourcesFit::new(FitArgs {
            scoring_strategy: ScoringStrategy {
                kind: kind.into(),
                ..Default::default()
            },
            ..Default::default()
        })
        .unwrap()
    }

    #[test]
    fn filter_reports_each_insufficient_resource() {
        let f = fit("LeastAllocated");
        let n = node("1", "1000", &[(600, 600)]);
        let s = FilterPlugin::filter(&f, &CycleState::new(), &pod("x", 500, 500), &n);
        assert_eq!(s.reasons, ["Insufficient cpu", "Insufficient memory"]);
        assert!(FilterPlugin::filter(&f, &CycleState::new(), &pod("x", 400, 400), &n).is_success());
    }

    #[test]
    fn least_and_most_allocated_match_upstream_table() {
        // Upstream's table case: node 4000m/10000, pod 3000m/5000 on an empty node.
        let n = node("4", "10000", &[]);
        let p = pod("x", 3000, 5000);
        let s = CycleState::new();
        // cpu (4000-3000)*100/4000 = 25, memory (10000-5000)*100/10000 = 50 → 37.
        assert_eq!(fit("LeastAllocated").score(&s, &p, &n).unwrap(), 37);
        // cpu 75, memory 50 → 62.
        assert_eq!(fit("MostAllocated").score(&s, &p, &n).unwrap(), 62);
        // Default shape {0:10, 100:0}: utilization 75 → 25, 50 → 50 → 37.5 → 38.
        assert_eq!(
            fit("RequestedToCapacityRatio").score(&s, &p, &n).unwrap(),
            38
        );
    }

    #[test]
    fn balanced_allocation_prefers_even_use() {
        let b = NodeResourcesBalancedAllocation::new(BalancedArgs::default());
        let s = CycleState::new();
        let even = node("4", "4000", &[]);
        // cpu 2000/4000 = 0.5, memory 2000/4000 = 0.5 → 100.
        assert_eq!(b.score(&s, &pod("x", 2000, 2000), &even).unwrap(), 100);
        // cpu 0.5, memory 0.0 → std 0.25 → 75.
        assert_eq!(b.score(&s, &pod("x", 2000, 0), &even).unwrap(), 75);
    }

    #[test]
    fn bad_shapes_are_rejected() {
        let args: FitArgs = serde_json::from_value(json!({"scoringStrategy": {"type": "RequestedToCapacityRatio",
            "requestedToCapacityRatio": {"shape": [{"utilization": 50, "score": 1}, {"utilization": 10, "score": 2}]}}}))
        .unwrap();
        assert!(NodeResourcesFit::new(args).is_err());
    }
}
