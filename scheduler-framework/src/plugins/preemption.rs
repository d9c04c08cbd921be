//! DefaultPreemption: when no node fits, find nodes where evicting lower-priority pods makes
//! room (respecting PodDisruptionBudgets where possible), pick the cheapest by upstream's
//! criteria, delete the victims and nominate the pod to that node.

use crate::cache::Snapshot;
use crate::cluster::{Cluster, Listers};
use crate::cycle_state::CycleState;
use crate::extension_points;
use crate::framework::Framework;
use crate::interface::*;
use crate::status::{Code, Status};
use crate::types::{NodeInfo, PodInfo};
use async_trait::async_trait;
use bosun_api_types::policy::v1::PodDisruptionBudget;
use bosun_api_types::selector::LabelSelectorExt;
use bosun_api_types::Time;
use serde::Deserialize;
use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::sync::Arc;

/// DefaultPreemptionArgs.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PreemptionArgs {
    /// Minimum candidate nodes as a percentage of nodes (default 10).
    #[serde(default = "ten")]
    pub min_candidate_nodes_percentage: usize,
    /// Minimum candidate nodes (default 100).
    #[serde(default = "hundred")]
    pub min_candidate_nodes_absolute: usize,
}

fn ten() -> usize {
    10
}
fn hundred() -> usize {
    100
}

impl Default for PreemptionArgs {
    fn default() -> Self {
        PreemptionArgs {
            min_candidate_nodes_percentage: 10,
            min_candidate_nodes_absolute: 100,
        }
    }
}

/// The plugin.
pub struct DefaultPreemption {
    args: PreemptionArgs,
    listers: Arc<Listers>,
    cluster: Arc<dyn Cluster>,
}

/// A node where preemption would make room.
#[derive(Clone, Debug)]
pub struct Candidate {
    /// The node.
    pub node: String,
    /// Pods to evict.
    pub victims: Vec<Arc<PodInfo>>,
    /// How many victims violate a PodDisruptionBudget.
    pub pdb_violations: usize,
}

fn start_time(p: &PodInfo) -> Option<Time> {
    p.pod.status.as_ref().and_then(|s| s.start_time)
}

/// Upstream's MoreImportantPod: higher priority, then started earlier.
fn more_important(a: &PodInfo, b: &PodInfo) -> Ordering {
    b.priority()
        .cmp(&a.priority())
        .then_with(|| match (start_time(a), start_time(b)) {
            (Some(x), Some(y)) => x.cmp(&y),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => Ordering::Equal,
        })
}

impl DefaultPreemption {
    /// The plugin.
    pub fn new(args: PreemptionArgs, listers: Arc<Listers>, cluster: Arc<dyn Cluster>) -> Self {
        DefaultPreemption {
            args,
            listers,
            cluster,
        }
    }

    /// Splits victims into those whose eviction would violate a PDB and those that would not.
    fn split_by_pdb(
        &self,
        victims: Vec<Arc<PodInfo>>,
        pdbs: &[Arc<PodDisruptionBudget>],
    ) -> (Vec<Arc<PodInfo>>, Vec<Arc<PodInfo>>) {
        let mut allowed: Vec<i32> = pdbs
            .iter()
            .map(|p| {
                p.status
                    .as_ref()
                    .map(|s| s.disruptions_allowed)
                    .unwrap_or(0)
            })
            .collect();
        let (mut violating, mut fine) = (Vec::new(), Vec::new());
        for v in victims {
            let mut violates = false;
            for (i, pdb) in pdbs.iter().enumerate() {
                if pdb.metadata.namespace.as_deref() != Some(v.namespace()) {
                    continue;
                }
                let Some(sel) = pdb.spec.as_ref().and_then(|s| s.selector.as_ref()) else {
                    continue;
                };
                let Ok(sel) = sel.to_selector() else { continue };
                if sel.is_everything() || !sel.matches(&v.pod.metadata.labels) {
                    continue;
                }
                let disrupted = pdb
                    .status
                    .as_ref()
                    .is_some_and(|s| s.disrupted_pods.contains_key(v.name()));
                if disrupted {
                    continue;
                }
                allowed[i] -= 1;
                if allowed[i] < 0 {
                    violates = true;
                }
            }
            if violates {
                violating.push(v);
            } else {
                fine.push(v);
            }
        }
        (violating, fine)
    }

    /// Upstream's selectVictimsOnNode: evict every lower-priority pod, check the pod fits, then
    /// reprieve as many as possible, most important first (PDB-violating ones first).
    fn select_victims(
        &self,
        fw: &Framework,
        state: &CycleState,
        pod: &PodInfo,
        node: &NodeInfo,
        pdbs: &[Arc<PodDisruptionBudget>],
    ) -> Result<Candidate, Status> {
        let mut state = state.clone();
        let mut node = node.clone();
        let mut potential: Vec<Arc<PodInfo>> = node
            .pods
            .iter()
            .filter(|p| p.priority() < pod.priority())
            .cloned()
            .collect();
        if potential.is_empty() {
            return Err(Status::unresolvable(
                "No preemption victims found for incoming pod",
            ));
        }
        for v in &potential {
            node.remove_pod(v.uid());
            let s = fw.run_pre_filter_remove_pod(&mut state, pod, v, &node);
            if !s.is_success() {
                return Err(s);
            }
        }
        let s = fw.run_filter(&state, pod, &node);
        if !s.is_success() {
            return Err(s);
        }
        potential.sort_by(|a, b| more_important(a, b));
        let (violating, fine) = self.split_by_pdb(potential, pdbs);
        let mut victims = Vec::new();
        let mut pdb_violations = 0;
        for (group, counts) in [(violating, true), (fine, false)] {
            for v in group {
                node.add_pod(v.clone());
                let add = fw.run_pre_filter_add_pod(&mut state, pod, &v, &node);
                let fits = add.is_success() && fw.run_filter(&state, pod, &node).is_success();
                if !fits {
                    node.remove_pod(v.uid());
                    let _ = fw.run_pre_filter_remove_pod(&mut state, pod, &v, &node);
                    if counts {
                        pdb_violations += 1;
                    }
                    victims.push(v);
                }
            }
        }
        if victims.is_empty() {
            return Err(Status::unschedulable(
                "No preemption victims found for incoming pod",
            ));
        }
        Ok(Candidate {
            node: node.name.clone(),
            victims,
            pdb_violations,
        })
    }

    /// Upstream's pickOneNodeForPreemption.
    pub fn pick(candidates: &[Candidate]) -> Option<&Candidate> {
        let key = |c: &Candidate| {
            let highest = c
                .victims
                .iter()
                .map(|v| v.priority())
                .max()
                .unwrap_or(i32::MIN);
            let sum: i64 = c
                .victims
                .iter()
                .map(|v| v.priority() as i64 + i32::MAX as i64 + 1)
                .sum();
            // The earliest start among the highest-priority victims; later is better.
            let earliest = c
                .victims
                .iter()
                .filter(|v| v.priority() == highest)
                .filter_map(|v| start_time(v))
                .min();
            (
                c.pdb_violations,
                highest,
                sum,
                c.victims.len(),
                std::cmp::Reverse(earliest),
            )
        };
        candidates.iter().min_by(|a, b| key(a).cmp(&key(b)))
    }
}

impl Plugin for DefaultPreemption {
    fn name(&self) -> &str {
        "DefaultPreemption"
    }
    extension_points!(post_filter);
}

#[async_trait]
impl PostFilterPlugin for DefaultPreemption {
    async fn post_filter(
        &self,
        state: &CycleState,
        pod: &PodInfo,
        statuses: &NodeStatusMap,
        fw: &Framework,
        snapshot: &Snapshot,
    ) -> (PostFilterResult, Status) {
        let spec = pod.pod.spec.as_ref();
        if spec.and_then(|s| s.preemption_policy.as_deref()) == Some("Never") {
            return (
                PostFilterResult::default(),
                Status::unschedulable("preemption: not eligible due to preemptionPolicy=Never."),
            );
        }
        let all = snapshot.len();
        let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
        let potential: Vec<&Arc<NodeInfo>> = snapshot
            .nodes()
            .iter()
            .filter(|n| match statuses.get(&n.name) {
                Some(s) if s.code == Code::UnschedulableAndUnresolvable => {
                    *reasons
                        .entry("Preemption is not helpful for scheduling".into())
                        .or_default() += 1;
                    false
                }
                _ => true,
            })
            .collect();
        let pdbs = self.listers.pdbs.list();
        let want = (all * self.args.min_candidate_nodes_percentage / 100)
            .max(self.args.min_candidate_nodes_absolute)
            .min(potential.len());
        let offset = if potential.is_empty() {
            0
        } else {
            fastrand::usize(..potential.len())
        };
        let mut candidates = Vec::new();
        for i in 0..potential.len() {
            if candidates.len() >= want {
                break;
            }
            let node = potential[(offset + i) % potential.len()];
            match self.select_victims(fw, state, pod, node, &pdbs) {
                Ok(c) => candidates.push(c),
                Err(s) => {
                    for r in s.reasons {
                        *reasons.entry(r).or_default() += 1;
                    }
                }
            }
        }
        let Some(best) = Self::pick(&candidates).cloned() else {
            let mut parts: Vec<String> = reasons.iter().map(|(r, c)| format!("{c} {r}")).collect();
            parts.sort();
            return (
                PostFilterResult::default(),
                Status::unschedulable(format!(
                    "preemption: 0/{all} nodes are available: {}.",
                    parts.join(", ")
                )),
            );
        };
        for v in &best.victims {
            // A victim waiting at Permit is rejected instead of deleted.
            if fw.waiting_pods().contains(v.uid()) {
                fw.waiting_pods().reject(v.uid(), self.name(), "preempted");
                continue;
            }
            if let Err(e) = self.cluster.delete_pod(&v.pod, &pod.pod, &best.node).await {
                if !e.not_found {
                    return (PostFilterResult::default(), Status::error(e.to_string()));
                }
            }
        }
        tracing::info!(pod = %pod.key, node = %best.node, victims = best.victims.len(), "preempting");
        (
            PostFilterResult {
                nominated_node: Some(best.node),
            },
            Status::success(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn victim(name: &str, prio: i32, start: &str) -> Arc<PodInfo> {
        PodInfo::new(Arc::new(
            serde_json::from_value(json!({"metadata": {"name": name, "uid": name},
                "spec": {"priority": prio, "containers": []}, "status": {"startTime": start}}))
            .unwrap(),
        ))
    }

    fn cand(node: &str, pdb: usize, victims: Vec<Arc<PodInfo>>) -> Candidate {
        Candidate {
            node: node.into(),
            victims,
            pdb_violations: pdb,
        }
    }

    #[test]
    fn picks_by_upstreams_criteria_in_order() {
        let t = "2026-01-01T00:00:00Z";
        let later = "2026-01-02T00:00:00Z";
        // Fewest PDB violations first.
        let c = [
            cand("a", 1, vec![victim("x", 1, t)]),
            cand("b", 0, vec![victim("y", 5, t)]),
        ];
        assert_eq!(DefaultPreemption::pick(&c).unwrap().node, "b");
        // Then the lowest highest-priority victim.
        let c = [
            cand("a", 0, vec![victim("x", 5, t)]),
            cand("b", 0, vec![victim("y", 1, t), victim("z", 1, t)]),
        ];
        assert_eq!(DefaultPreemption::pick(&c).unwrap().node, "b");
        // Then the smallest sum of priorities.
        let c = [
            cand("a", 0, vec![victim("x", 5, t), victim("w", 4, t)]),
            cand("b", 0, vec![victim("y", 5, t), victim("z", 1, t)]),
        ];
        assert_eq!(DefaultPreemption::pick(&c).unwrap().node, "b");
        // Then the latest-started highest-priority victims.
        let c = [
            cand("a", 0, vec![victim("x", 5, t)]),
            cand("b", 0, vec![victim("y", 5, later)]),
        ];
        assert_eq!(DefaultPreemption::pick(&c).unwrap().node, "b");
    }
}
