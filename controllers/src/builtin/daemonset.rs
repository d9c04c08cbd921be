//! The DaemonSet controller: one pod on every node that should run it.
//!
//! A node should run the pod when the template's `nodeSelector` and required node affinity
//! match it and the pod tolerates its NoSchedule and NoExecute taints, counting the
//! tolerations every DaemonSet pod gets (not-ready and unreachable NoExecute; disk, memory and
//! PID pressure, unschedulable and, with host networking, network-unavailable NoSchedule). As
//! upstream, each pod is pinned to its node by node affinity on `metadata.name`, for the
//! scheduler to bind. Nodes joining get a pod, nodes leaving lose theirs, extras on a node
//! are deleted, failed pods are replaced. Templates are ControllerRevisions; RollingUpdate
//! replaces old pods while at most `maxUnavailable` are unavailable, or with `maxSurge` starts
//! the new pod beside the old one first.

use super::{pods, revisions};
use crate::controller::{Action, Controller, Reconciler};
use bosun_api_types::apps::v1::{ControllerRevision, DaemonSet, DaemonSetStatus};
use bosun_api_types::core::v1::{Node, Pod, PodSpec, Toleration};
use bosun_api_types::placement;
use bosun_api_types::selector::LabelSelectorExt;
use bosun_api_types::{IntOrString, Time};
use bosun_client::events::{EventType, Recorder};
use bosun_client::informer::InformerFactory;
use bosun_client::reflector::{Key, Store};
use bosun_client::{Api, Client, DeleteParams, PostParams};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// The DaemonSet controller's logic.
pub struct DaemonSets {
    client: Client,
    pods: Store<Pod>,
    nodes: Store<Node>,
    revisions: Store<ControllerRevision>,
    recorder: Arc<Recorder>,
}

fn owner_key(meta: &bosun_api_types::meta::v1::ObjectMeta) -> Option<Key> {
    let r = pods::controller_ref(meta)?;
    (r.kind == "DaemonSet" && r.api_version.starts_with("apps/"))
        .then(|| Key::namespaced(meta.namespace.as_deref().unwrap_or(""), &r.name))
}

/// The tolerations every DaemonSet pod gets.
fn automatic_tolerations(spec: &PodSpec) -> Vec<Toleration> {
    let t = |key: &str, effect: &str| Toleration {
        key: Some(key.into()),
        operator: Some("Exists".into()),
        effect: Some(effect.into()),
        ..Default::default()
    };
    let mut out = vec![
        t("node.kubernetes.io/not-ready", "NoExecute"),
        t("node.kubernetes.io/unreachable", "NoExecute"),
        t("node.kubernetes.io/disk-pressure", "NoSchedule"),
        t("node.kubernetes.io/memory-pressure", "NoSchedule"),
        t("node.kubernetes.io/pid-pressure", "NoSchedule"),
        t("node.kubernetes.io/unschedulable", "NoSchedule"),
    ];
    if spec.host_network == Some(true) {
        out.push(t("node.kubernetes.io/network-unavailable", "NoSchedule"));
    }
    out
}

/// Whether a pod with `spec` may run on `node`: selector, required affinity, taints.
pub fn fits(spec: &PodSpec, node: &Node) -> bool {
    fits_with(spec, node, true)
}

/// Whether a pod already on `node` may stay: as [`fits`], but NoSchedule taints do not evict.
pub fn may_stay(spec: &PodSpec, node: &Node) -> bool {
    fits_with(spec, node, false)
}

fn fits_with(spec: &PodSpec, node: &Node, no_schedule_counts: bool) -> bool {
    if !placement::required_affinity_matches(spec, node) {
        return false;
    }
    let mut tolerations = spec.tolerations.clone();
    tolerations.extend(automatic_tolerations(spec));
    let taints = node
        .spec
        .as_ref()
        .map(|s| s.taints.as_slice())
        .unwrap_or(&[]);
    placement::untolerated(taints, &tolerations, |t| {
        t.effect != "PreferNoSchedule" && (no_schedule_counts || t.effect != "NoSchedule")
    })
    .is_none()
}

fn ready_status(node: &Node) -> Option<String> {
    node.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.r#type == "Ready")
        .map(|c| c.status.clone())
}

/// The node a DaemonSet pod is pinned to (its `metadata.name` affinity), or its nodeName.
fn pod_node(pod: &Pod) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    if let Some(n) = spec.node_name.clone().filter(|n| !n.is_empty()) {
        return Some(n);
    }
    spec.affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms
        .iter()
        .flat_map(|t| t.match_fields.iter())
        .find(|r| r.key == "metadata.name" && r.operator == "In")
        .and_then(|r| r.values.first().cloned())
}

impl DaemonSets {
    /// The controller (on `factory`'s informers) and its logic; run one with the other.
    pub fn new(client: Client, factory: &Arc<InformerFactory>) -> (Controller<DaemonSet>, Self) {
        let sets = factory.informer::<DaemonSet>(None).store();
        let revisions = factory.informer::<ControllerRevision>(None).store();
        let controller = Controller::<DaemonSet>::new(Arc::clone(factory), None)
            .watches_with::<Pod>(|p| owner_key(&p.metadata).into_iter().collect())
            // A node joining, leaving, or changing what decides eligibility (labels, taints,
            // unschedulable, readiness) concerns every DaemonSet; a heartbeat does not.
            .watches_changes_with::<Node>(move |old, new| {
                let relevant = old.is_none_or(|old| {
                    old.metadata.labels != new.metadata.labels
                        || old.spec != new.spec
                        || ready_status(old) != ready_status(new)
                });
                if relevant {
                    sets.list().iter().map(|s| Key::of(&**s)).collect()
                } else {
                    Vec::new()
                }
            })
            .waits_for(revisions.clone());
        let logic = DaemonSets {
            recorder: Arc::new(Recorder::core(
                client.clone(),
                "daemonset-controller",
                "daemonset-controller",
            )),
            client,
            pods: factory.informer::<Pod>(None).store(),
            nodes: factory.informer::<Node>(None).store(),
            revisions,
        };
        (controller, logic)
    }

    fn event(&self, ds: &DaemonSet, event_type: EventType, reason: &str, note: String) {
        super::pods::emit(&self.recorder, ds, event_type, reason, note);
    }

    async fn create(
        &self,
        ds: &DaemonSet,
        key: &Key,
        node: &str,
        rev: &str,
    ) -> bosun_client::Result<()> {
        let Some(spec) = ds.spec.as_ref() else {
            return Ok(());
        };
        let mut pod = pods::from_template(
            &spec.template,
            &key.name,
            pods::owner_ref(ds, "DaemonSet", "apps/v1"),
        );
        pod.metadata
            .labels
            .insert(super::statefulset::REVISION_LABEL.into(), rev.into());
        pod.metadata.labels.insert(
            "pod-template-generation".into(),
            ds.metadata.generation.unwrap_or(1).to_string(),
        );
        if let Some(ps) = pod.spec.as_mut() {
            let mut tolerations = automatic_tolerations(ps);
            tolerations.retain(|t| {
                !ps.tolerations
                    .iter()
                    .any(|x| x.key == t.key && x.effect == t.effect)
            });
            ps.tolerations.extend(tolerations);
            // Pinned to the node by affinity on its name; the scheduler binds it.
            let affinity = ps.affinity.get_or_insert_with(Default::default);
            affinity.node_affinity = Some(serde_json::from_value(serde_json::json!({
                "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                    {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}]}
            })).unwrap_or_default());
        }
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &key.namespace);
        match api.create(&PostParams::default(), &pod).await {
            Ok(p) => {
                self.event(
                    ds,
                    EventType::Normal,
                    "SuccessfulCreate",
                    format!("Created pod: {}", p.metadata.name.unwrap_or_default()),
                );
                Ok(())
            }
            Err(e) => {
                self.event(
                    ds,
                    EventType::Warning,
                    "FailedCreate",
                    format!("Error creating: {e}"),
                );
                Err(e)
            }
        }
    }

    async fn delete(&self, ds: &DaemonSet, key: &Key, pod: &Pod) -> bosun_client::Result<()> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &key.namespace);
        let name = pod.metadata.name.clone().unwrap_or_default();
        let params = DeleteParams {
            precondition_uid: pod.metadata.uid.clone(),
            ..Default::default()
        };
        match api.delete(&name, &params).await {
            Ok(_) => {
                self.event(
                    ds,
                    EventType::Normal,
                    "SuccessfulDelete",
                    format!("Deleted pod: {name}"),
                );
                Ok(())
            }
            Err(e) if e.is_not_found() || e.is_conflict() => Ok(()),
            Err(e) => Err(e),
        }
    }
}

#[async_trait::async_trait]
impl Reconciler<DaemonSet> for DaemonSets {
    type Error = bosun_client::Error;

    async fn reconcile(&self, obj: Arc<DaemonSet>) -> Result<Action, Self::Error> {
        let ds = (*obj).clone();
        let key = Key::of(&ds);
        let Some(spec) = ds.spec.clone() else {
            return Ok(Action::Done);
        };
        if spec.selector.match_labels.is_empty() && spec.selector.match_expressions.is_empty() {
            return Ok(Action::Done);
        }
        let Ok(selector) = spec.selector.to_selector() else {
            return Ok(Action::Done);
        };
        let owner = pods::owner_ref(&ds, "DaemonSet", "apps/v1");
        let ds_api: Api<DaemonSet> = Api::namespaced(self.client.clone(), &key.namespace);
        let deleting = ds.metadata.deletion_timestamp.is_some();
        let claimed = pods::claim(
            &self.client,
            &ds,
            &owner,
            self.pods.by_index("namespace", &key.namespace),
            &selector,
            false,
        )
        .await?;
        let (update, owned) = revisions::sync(
            &self.client,
            &self.revisions,
            &ds,
            "DaemonSet",
            &spec.template,
            ds.status.as_ref().and_then(|s| s.collision_count),
            spec.selector.match_labels.clone(),
        )
        .await?;
        let update_name = update.metadata.name.clone().unwrap_or_default();
        let min_ready = spec.min_ready_seconds.unwrap_or(0);
        let now = Time::now();
        let template_spec = spec.template.spec.clone().unwrap_or_default();

        let mut by_node: BTreeMap<String, Vec<Arc<Pod>>> = BTreeMap::new();
        for p in &claimed {
            if let Some(n) = pod_node(p) {
                by_node.entry(n).or_default().push(Arc::clone(p));
            }
        }
        let nodes = self.nodes.list();
        let should: Vec<String> = nodes
            .iter()
            .filter(|n| fits(&template_spec, n))
            .filter_map(|n| n.metadata.name.clone())
            .collect();
        let stay: Vec<String> = nodes
            .iter()
            .filter(|n| may_stay(&template_spec, n))
            .filter_map(|n| n.metadata.name.clone())
            .collect();
        let is_new = |p: &Pod| {
            p.metadata.labels.get(super::statefulset::REVISION_LABEL) == Some(&update_name)
        };
        let available = |p: &Pod| {
            p.metadata.deletion_timestamp.is_none() && pods::is_available(p, min_ready, now)
        };

        if !deleting {
            // Nodes that should run it: exactly one live pod; failed ones replaced.
            for node in &should {
                let live: Vec<&Arc<Pod>> = by_node
                    .get(node)
                    .map(|v| {
                        v.iter()
                            .filter(|p| p.metadata.deletion_timestamp.is_none())
                            .collect()
                    })
                    .unwrap_or_default();
                let (failed, running): (Vec<&Arc<Pod>>, Vec<&Arc<Pod>>) =
                    live.into_iter().partition(|p| pods::phase(p) == "Failed");
                for p in failed {
                    self.delete(&ds, &key, p).await?;
                }
                match running.len() {
                    0 => self.create(&ds, &key, node, &update_name).await?,
                    1 => {}
                    _ => {
                        // Extras: the oldest new-revision pod stays.
                        let mut sorted = running.clone();
                        sorted.sort_by_key(|p| (!is_new(p), p.metadata.creation_timestamp));
                        let surge_pair =
                            sorted.len() == 2 && is_new(sorted[0]) != is_new(sorted[1]);
                        if !surge_pair {
                            for p in &sorted[1..] {
                                self.delete(&ds, &key, p).await?;
                            }
                        }
                    }
                }
            }
            // Nodes where it may not stay: their pods go.
            for (node, list) in &by_node {
                if !stay.contains(node) {
                    for p in list
                        .iter()
                        .filter(|p| p.metadata.deletion_timestamp.is_none())
                    {
                        self.delete(&ds, &key, p).await?;
                    }
                }
            }
            // Rolling update.
            let strategy = spec.update_strategy.clone().unwrap_or_default();
            if strategy.r#type.as_deref() != Some("OnDelete") {
                let desired = i32::try_from(should.len()).unwrap_or(0);
                let ru = strategy.rolling_update.unwrap_or_default();
                let surge = ru
                    .max_surge
                    .unwrap_or(IntOrString::Int(0))
                    .scaled_value(desired, true)
                    .unwrap_or(0);
                let mut max_unavailable = ru
                    .max_unavailable
                    .unwrap_or(IntOrString::Int(1))
                    .scaled_value(desired, true)
                    .unwrap_or(1);
                if surge == 0 && max_unavailable == 0 {
                    max_unavailable = 1;
                }
                let mut unavailable = should
                    .iter()
                    .filter(|n| {
                        !by_node
                            .get(*n)
                            .is_some_and(|v| v.iter().any(|p| available(p)))
                    })
                    .count() as i32;
                let mut surged = 0;
                for node in &should {
                    let Some(list) = by_node.get(node) else {
                        continue;
                    };
                    let live: Vec<&Arc<Pod>> = list
                        .iter()
                        .filter(|p| p.metadata.deletion_timestamp.is_none())
                        .collect();
                    let old: Vec<&Arc<Pod>> = live.iter().filter(|p| !is_new(p)).copied().collect();
                    if old.is_empty() {
                        continue;
                    }
                    let new_ready = live.iter().any(|p| is_new(p) && available(p));
                    if surge > 0 {
                        if new_ready {
                            for p in old {
                                self.delete(&ds, &key, p).await?;
                            }
                        } else if !live.iter().any(|p| is_new(p)) && surged < surge {
                            self.create(&ds, &key, node, &update_name).await?;
                            surged += 1;
                        }
                        continue;
                    }
                    let old_available = old.iter().any(|p| available(p));
                    if !old_available {
                        // Already unavailable: replacing it costs nothing.
                        for p in old {
                            self.delete(&ds, &key, p).await?;
                        }
                    } else if unavailable < max_unavailable {
                        for p in old {
                            self.delete(&ds, &key, p).await?;
                        }
                        unavailable += 1;
                    }
                }
            }
        }

        // Status.
        let desired = should.len();
        let scheduled = should
            .iter()
            .filter(|n| {
                by_node
                    .get(*n)
                    .is_some_and(|v| v.iter().any(|p| p.metadata.deletion_timestamp.is_none()))
            })
            .count();
        let misscheduled = by_node
            .iter()
            .filter(|(n, v)| {
                !should.contains(n) && v.iter().any(|p| p.metadata.deletion_timestamp.is_none())
            })
            .count();
        let first_live = |n: &String| {
            by_node.get(n).and_then(|v| {
                v.iter()
                    .find(|p| p.metadata.deletion_timestamp.is_none())
                    .cloned()
            })
        };
        let ready = should
            .iter()
            .filter_map(first_live)
            .filter(|p| pods::is_ready(p))
            .count();
        let avail = should
            .iter()
            .filter(|n| {
                by_node
                    .get(*n)
                    .is_some_and(|v| v.iter().any(|p| available(p)))
            })
            .count();
        let updated = should
            .iter()
            .filter(|n| {
                by_node.get(*n).is_some_and(|v| {
                    v.iter()
                        .any(|p| p.metadata.deletion_timestamp.is_none() && is_new(p))
                })
            })
            .count();
        let n = |x: usize| i32::try_from(x).unwrap_or(i32::MAX);
        let status = DaemonSetStatus {
            current_number_scheduled: n(scheduled),
            number_misscheduled: n(misscheduled),
            desired_number_scheduled: n(desired),
            number_ready: n(ready),
            observed_generation: ds.metadata.generation,
            updated_number_scheduled: Some(n(updated)),
            number_available: Some(n(avail)),
            number_unavailable: Some(n(desired.saturating_sub(avail))),
            collision_count: ds.status.as_ref().and_then(|s| s.collision_count),
            conditions: ds
                .status
                .as_ref()
                .map(|s| s.conditions.clone())
                .unwrap_or_default(),
        };
        if ds.status.as_ref() != Some(&status) {
            let mut updated_ds = ds.clone();
            updated_ds.status = Some(status.clone());
            match ds_api
                .replace_status(&key.name, &PostParams::default(), &updated_ds)
                .await
            {
                Ok(_) => {}
                Err(e) if e.is_not_found() || e.is_conflict() => {}
                Err(e) => return Err(e),
            }
        }
        // Old revisions beyond the history limit that no pod uses.
        let live: Vec<String> = claimed
            .iter()
            .filter_map(|p| {
                p.metadata
                    .labels
                    .get(super::statefulset::REVISION_LABEL)
                    .cloned()
            })
            .chain([update_name.clone()])
            .collect();
        revisions::prune(
            &self.client,
            &key.namespace,
            &owned,
            &live,
            spec.revision_history_limit,
        )
        .await;
        if min_ready > 0 && status.number_ready != status.number_available.unwrap_or(0) {
            return Ok(Action::Requeue(Duration::from_secs(
                u64::try_from(min_ready).unwrap_or(1),
            )));
        }
        Ok(Action::Done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(json: serde_json::Value) -> Node {
        serde_json::from_value(json).unwrap_or_default()
    }

    #[test]
    fn eligibility_follows_selectors_affinity_and_taints() {
        let spec: PodSpec = serde_json::from_value(serde_json::json!({"containers": [],
            "nodeSelector": {"disk": "ssd"}}))
        .unwrap_or_default();
        let ssd = node(serde_json::json!({"metadata": {"name": "a", "labels": {"disk": "ssd"}}}));
        let hdd = node(serde_json::json!({"metadata": {"name": "b", "labels": {"disk": "hdd"}}}));
        assert!(fits(&spec, &ssd));
        assert!(!fits(&spec, &hdd));
        // The automatic tolerations cover not-ready and unschedulable, not a custom taint.
        let plain = PodSpec::default();
        let not_ready = node(
            serde_json::json!({"metadata": {"name": "c"}, "spec": {"taints": [
            {"key": "node.kubernetes.io/not-ready", "effect": "NoExecute"},
            {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}]}}),
        );
        assert!(fits(&plain, &not_ready));
        let dedicated = node(
            serde_json::json!({"metadata": {"name": "d"}, "spec": {"taints": [
            {"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]}}),
        );
        assert!(!fits(&plain, &dedicated));
        let tolerant: PodSpec = serde_json::from_value(serde_json::json!({"containers": [],
            "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}]})).unwrap_or_default();
        assert!(fits(&tolerant, &dedicated));
        let affinity: PodSpec = serde_json::from_value(serde_json::json!({"containers": [], "affinity": {"nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "disk", "operator": "NotIn", "values": ["hdd"]}]}]}}}})).unwrap_or_default();
        assert!(fits(&affinity, &ssd));
        assert!(!fits(&affinity, &hdd));
    }
}
