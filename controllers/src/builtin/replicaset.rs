//! The ReplicaSet and ReplicationController controllers: as many active pods as `replicas`,
//! made from the template.
//!
//! Each sync claims the namespace's active pods (adopting orphans the selector matches,
//! releasing owned pods it no longer matches), then creates or deletes the difference, at most
//! 500 per sync, creations in slow-start batches (1, 2, 4, …; a failure stops the rest) and
//! deletions chosen by upstream's ranking (unscheduled, pending, not ready, lower
//! `controller.kubernetes.io/pod-deletion-cost`, doubled up on a node, ready for less time,
//! more restarts, newest first). Expectations hold a set back from acting again until its
//! cache has seen its own creations and deletions. Status carries replicas, fullyLabeled, ready
//! and available counts, observedGeneration and the ReplicaFailure condition.
//!
//! ```no_run
//! use bosun_controllers::builtin::replicaset::ReplicaSets;
//! use bosun_api_types::apps::v1::ReplicaSet;
//! use bosun_client::{informer::InformerFactory, Client};
//! use std::sync::Arc;
//! # async fn run() -> bosun_client::Result<()> {
//! let client = Client::try_default()?;
//! let factory = Arc::new(InformerFactory::new(client.clone()));
//! let (controller, logic) = ReplicaSets::<ReplicaSet>::new(client, &factory);
//! controller.concurrency(5).run(logic).await;
//! # Ok(()) }
//! ```

use super::pods::{self, Expectations};
use crate::controller::{Action, Controller, Reconciler};
use bosun_api_types::apps::v1::{ReplicaSet, ReplicaSetCondition, ReplicaSetStatus};
use bosun_api_types::core::v1::{Pod, PodTemplateSpec, ReplicationController};
use bosun_api_types::meta::v1::LabelSelector;
use bosun_api_types::selector::{LabelSelectorExt, Selector};
use bosun_api_types::{Resource, Time};
use bosun_client::events::{EventType, Recorder};
use bosun_client::informer::InformerFactory;
use bosun_client::reflector::{Key, Store};
use bosun_client::{Api, Client, DeleteParams, PostParams};
use std::cmp::Ordering;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// At most this many pods are created or deleted by one sync (upstream's burstReplicas).
pub const BURST_REPLICAS: usize = 500;

/// The annotation whose (integer) value makes a pod cheaper to delete when lower.
pub const DELETION_COST: &str = "controller.kubernetes.io/pod-deletion-cost";

/// What the controller needs of a ReplicaSet or a ReplicationController.
pub trait ReplicaSetLike: Resource + Clone + Send + Sync + 'static {
    /// `spec.replicas` (1 when unset).
    fn replicas(&self) -> i32;
    /// The pod selector (an error for a malformed one).
    fn selector(&self) -> Result<Selector, String>;
    /// The pod template.
    fn template(&self) -> Option<&PodTemplateSpec>;
    /// `spec.minReadySeconds`.
    fn min_ready_seconds(&self) -> i32;
    /// The status, in the ReplicaSet's shape (a ReplicationController's is the same JSON).
    fn status(&self) -> ReplicaSetStatus;
    /// Sets the status.
    fn set_status(&mut self, status: ReplicaSetStatus);
}

impl ReplicaSetLike for ReplicaSet {
    fn replicas(&self) -> i32 {
        self.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
    }
    fn selector(&self) -> Result<Selector, String> {
        let empty = LabelSelector::default();
        let sel = self.spec.as_ref().map_or(&empty, |s| &s.selector);
        if sel.match_labels.is_empty() && sel.match_expressions.is_empty() {
            // An empty selector matches nothing here, as upstream's controllers treat it.
            return Err("the selector is empty".into());
        }
        sel.to_selector().map_err(|e| e.to_string())
    }
    fn template(&self) -> Option<&PodTemplateSpec> {
        self.spec.as_ref()?.template.as_ref()
    }
    fn min_ready_seconds(&self) -> i32 {
        self.spec
            .as_ref()
            .and_then(|s| s.min_ready_seconds)
            .unwrap_or(0)
    }
    fn status(&self) -> ReplicaSetStatus {
        self.status.clone().unwrap_or_default()
    }
    fn set_status(&mut self, status: ReplicaSetStatus) {
        self.status = Some(status);
    }
}

impl ReplicaSetLike for ReplicationController {
    fn replicas(&self) -> i32 {
        self.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
    }
    fn selector(&self) -> Result<Selector, String> {
        let labels = self
            .spec
            .as_ref()
            .map(|s| s.selector.clone())
            .unwrap_or_default();
        if labels.is_empty() {
            return Err("the selector is empty".into());
        }
        LabelSelector {
            match_labels: labels,
            ..Default::default()
        }
        .to_selector()
        .map_err(|e| e.to_string())
    }
    fn template(&self) -> Option<&PodTemplateSpec> {
        self.spec.as_ref()?.template.as_ref()
    }
    fn min_ready_seconds(&self) -> i32 {
        self.spec
            .as_ref()
            .and_then(|s| s.min_ready_seconds)
            .unwrap_or(0)
    }
    fn status(&self) -> ReplicaSetStatus {
        self.status
            .as_ref()
            .and_then(|s| serde_json::to_value(s).ok())
            .and_then(|v| serde_json::from_value(v).ok())
            .unwrap_or_default()
    }
    fn set_status(&mut self, status: ReplicaSetStatus) {
        self.status = serde_json::to_value(status)
            .ok()
            .and_then(|v| serde_json::from_value(v).ok());
    }
}

/// The controller's logic for `K` (ReplicaSet or ReplicationController).
pub struct ReplicaSets<K: ReplicaSetLike> {
    client: Client,
    pods: Store<Pod>,
    _kind: std::marker::PhantomData<fn() -> K>,
    expectations: Arc<Expectations>,
    recorder: Arc<Recorder>,
}

/// The group of an `apiVersion` (`apps/v1` → `apps`, `v1` → ``).
fn group_of(api_version: &str) -> &str {
    api_version.split_once('/').map_or("", |(g, _)| g)
}

/// The key of the `K` that controls `pod`, if one does.
fn owner_key<K: Resource>(pod: &Pod) -> Option<Key> {
    let r = pods::controller_ref(&pod.metadata)?;
    (r.kind == K::INFO.kind && group_of(&r.api_version) == group_of(K::INFO.api_version))
        .then(|| Key::namespaced(pod.metadata.namespace.as_deref().unwrap_or(""), &r.name))
}

impl<K: ReplicaSetLike> ReplicaSets<K> {
    /// The controller (on `factory`'s informers) and its logic; run one with the other.
    pub fn new(client: Client, factory: &Arc<InformerFactory>) -> (Controller<K>, Self) {
        let pod_informer = factory.informer::<Pod>(None);
        let controller =
            Controller::<K>::new(Arc::clone(factory), None).waits_for(pod_informer.store());
        let owners = factory.informer::<K>(None).store();
        let expectations = Arc::new(Expectations::default());
        let queue = controller.queue();
        // Orphans map to every set whose selector matches them (a candidate adopter).
        let matching = move |pod: &Pod| -> Vec<Key> {
            let ns = pod.metadata.namespace.as_deref().unwrap_or("");
            owners
                .by_index("namespace", ns)
                .iter()
                .filter(|o| o.selector().is_ok_and(|s| s.matches(&pod.metadata.labels)))
                .map(|o| Key::of(&**o))
                .collect()
        };
        pods::track_owned(
            &pod_informer,
            Arc::clone(&expectations),
            queue,
            owner_key::<K>,
            matching,
        );
        let component = if K::INFO.kind == "ReplicaSet" {
            "replicaset-controller"
        } else {
            "replication-controller"
        };
        let logic = ReplicaSets {
            recorder: Arc::new(Recorder::core(client.clone(), component, component)),
            client,
            pods: pod_informer.store(),
            _kind: std::marker::PhantomData,
            expectations,
        };
        (controller, logic)
    }

    fn event(&self, owner: &K, event_type: EventType, reason: &str, note: String) {
        super::pods::emit(&self.recorder, owner, event_type, reason, note);
    }

    /// Creates `n` pods from the template in slow-start batches; stops at the first failure.
    async fn create_pods(&self, owner: &K, key: &Key, n: usize) -> Result<(), String> {
        let Some(template) = owner.template() else {
            return Err("the pod template is missing".into());
        };
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &key.namespace);
        let owner_ref = pods::owner_ref(owner, K::INFO.kind, K::INFO.api_version);
        let pod = pods::from_template(template, &key.name, owner_ref);
        let params = PostParams::default();
        self.expectations.expect_creations(key, n);
        let (mut remaining, mut batch) = (n, 1usize);
        while remaining > 0 {
            let size = batch.min(remaining);
            let results =
                futures_util::future::join_all((0..size).map(|_| api.create(&params, &pod))).await;
            remaining -= size;
            let mut error = None;
            for r in results {
                match r {
                    Ok(p) => self.event(
                        owner,
                        EventType::Normal,
                        "SuccessfulCreate",
                        format!("Created pod: {}", p.metadata.name.unwrap_or_default()),
                    ),
                    Err(e) => {
                        // This creation will never be observed.
                        self.expectations.creation_observed(key);
                        // A namespace going away refuses new pods: nothing to report.
                        if e.code() == Some(403) && e.to_string().contains("being terminated") {
                            continue;
                        }
                        self.event(
                            owner,
                            EventType::Warning,
                            "FailedCreate",
                            format!("Error creating: {e}"),
                        );
                        error = Some(e.to_string());
                    }
                }
            }
            if let Some(e) = error {
                for _ in 0..remaining {
                    self.expectations.creation_observed(key);
                }
                return Err(e);
            }
            batch *= 2;
        }
        Ok(())
    }

    /// Deletes `victims`, all at once.
    async fn delete_pods(
        &self,
        owner: &K,
        key: &Key,
        victims: Vec<Arc<Pod>>,
    ) -> Result<(), String> {
        self.expectations
            .expect_deletions(key, victims.iter().map(|p| pods::pod_key(p)));
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &key.namespace);
        let results = futures_util::future::join_all(victims.iter().map(|p| {
            let name = p.metadata.name.clone().unwrap_or_default();
            let params = DeleteParams {
                precondition_uid: p.metadata.uid.clone(),
                ..Default::default()
            };
            let api = api.clone();
            async move { (name.clone(), api.delete(&name, &params).await) }
        }))
        .await;
        let mut error = None;
        for ((name, r), pod) in results.into_iter().zip(&victims) {
            match r {
                Ok(_) => self.event(
                    owner,
                    EventType::Normal,
                    "SuccessfulDelete",
                    format!("Deleted pod: {name}"),
                ),
                Err(e) => {
                    self.expectations
                        .deletion_observed(key, &pods::pod_key(pod));
                    if !e.is_not_found() {
                        self.event(
                            owner,
                            EventType::Warning,
                            "FailedDelete",
                            format!("Error deleting: {e}"),
                        );
                        error = Some(e.to_string());
                    }
                }
            }
        }
        error.map_or(Ok(()), Err)
    }

    async fn write_status(&self, owner: &K, status: ReplicaSetStatus) -> bosun_client::Result<()> {
        if owner.status() == status {
            return Ok(());
        }
        let api: Api<K> = Api::namespaced(
            self.client.clone(),
            owner.metadata().namespace.as_deref().unwrap_or(""),
        );
        let name = owner.metadata().name.clone().unwrap_or_default();
        let mut updated = owner.clone();
        updated.set_status(status.clone());
        match api
            .replace_status(&name, &PostParams::default(), &updated)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.is_conflict() => {
                // Written meanwhile (a spec change, say): once more on the latest object.
                let Some(mut latest) = api.get_opt(&name).await? else {
                    return Ok(());
                };
                if latest.metadata().uid != owner.metadata().uid {
                    return Ok(());
                }
                latest.set_status(status);
                api.replace_status(&name, &PostParams::default(), &latest)
                    .await
                    .map(|_| ())
            }
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// Orders pods with the first to delete first (upstream's ActivePodsWithRanks).
fn deletion_order(a: &Pod, b: &Pod, colocated: &HashMap<String, usize>) -> Ordering {
    let node = |p: &Pod| {
        p.spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default()
    };
    let (na, nb) = (node(a), node(b));
    // 1. Unassigned first.
    let o = (!na.is_empty()).cmp(&!nb.is_empty());
    if o != Ordering::Equal {
        return o;
    }
    // 2. Pending < Unknown < Running.
    let phase_rank = |p: &Pod| match pods::phase(p) {
        "Pending" => 0,
        "Unknown" => 1,
        "Running" => 2,
        _ => 3,
    };
    let o = phase_rank(a).cmp(&phase_rank(b));
    if o != Ordering::Equal {
        return o;
    }
    // 3. Not ready first.
    let o = pods::is_ready(a).cmp(&pods::is_ready(b));
    if o != Ordering::Equal {
        return o;
    }
    // 4. Lower deletion cost first.
    let cost = |p: &Pod| {
        p.metadata
            .annotations
            .get(DELETION_COST)
            .and_then(|v| v.parse::<i32>().ok())
            .unwrap_or(0)
    };
    let o = cost(a).cmp(&cost(b));
    if o != Ordering::Equal {
        return o;
    }
    // 5. More pods of the set on the same node first.
    let rank = |n: &str| colocated.get(n).copied().unwrap_or(0);
    let o = rank(&nb).cmp(&rank(&na));
    if o != Ordering::Equal {
        return o;
    }
    // 6. Ready for less time first (both are ready or neither is here).
    if let (Some(ra), Some(rb)) = (pods::ready_since(a), pods::ready_since(b)) {
        let o = rb.cmp(&ra);
        if o != Ordering::Equal {
            return o;
        }
    }
    // 7. More restarts first.
    let restarts = |p: &Pod| {
        p.status.as_ref().map_or(0, |s| {
            s.container_statuses
                .iter()
                .map(|c| c.restart_count)
                .max()
                .unwrap_or(0)
        })
    };
    let o = restarts(b).cmp(&restarts(a));
    if o != Ordering::Equal {
        return o;
    }
    // 8. Newest first (no creation time counts as newest).
    let created = |p: &Pod| p.metadata.creation_timestamp;
    match (created(a), created(b)) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (Some(x), Some(y)) => y.cmp(&x),
    }
}

/// The pods to delete: the first `n` in deletion order.
pub fn pods_to_delete(mut candidates: Vec<Arc<Pod>>, n: usize) -> Vec<Arc<Pod>> {
    let mut colocated: HashMap<String, usize> = HashMap::new();
    for p in &candidates {
        if let Some(node) = p.spec.as_ref().and_then(|s| s.node_name.clone()) {
            *colocated.entry(node).or_default() += 1;
        }
    }
    candidates.sort_by(|a, b| deletion_order(a, b, &colocated));
    candidates.truncate(n);
    candidates
}

/// The status the pods make: replicas, fully labeled, ready and available counts.
fn counts(
    pods: &[Arc<Pod>],
    template: Option<&PodTemplateSpec>,
    min_ready: i32,
) -> ReplicaSetStatus {
    let now = Time::now();
    let template_labels = template
        .and_then(|t| t.metadata.as_ref())
        .map(|m| m.labels.clone())
        .unwrap_or_default();
    let count = |f: &dyn Fn(&Pod) -> bool| -> i32 {
        i32::try_from(pods.iter().filter(|p| f(p)).count()).unwrap_or(i32::MAX)
    };
    ReplicaSetStatus {
        replicas: i32::try_from(pods.len()).unwrap_or(i32::MAX),
        fully_labeled_replicas: Some(count(&|p| {
            template_labels
                .iter()
                .all(|(k, v)| p.metadata.labels.get(k) == Some(v))
        })),
        ready_replicas: Some(count(&|p| pods::is_ready(p))),
        available_replicas: Some(count(&|p| pods::is_available(p, min_ready, now))),
        ..Default::default()
    }
}

#[async_trait::async_trait]
impl<K: ReplicaSetLike> Reconciler<K> for ReplicaSets<K> {
    type Error = super::Error;

    async fn reconcile(&self, owner: Arc<K>) -> Result<Action, Self::Error> {
        let key = Key::of(&*owner);
        let meta = owner.metadata();
        let selector = match owner.selector() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(%key, error = %e, "invalid selector; not syncing");
                return Ok(Action::Done);
            }
        };
        let satisfied = self.expectations.satisfied(&key);
        let active: Vec<Arc<Pod>> = self
            .pods
            .by_index("namespace", &key.namespace)
            .into_iter()
            .filter(|p| pods::is_active(p))
            .collect();
        let owner_ref = pods::owner_ref(&*owner, K::INFO.kind, K::INFO.api_version);
        let deleting = meta.deletion_timestamp.is_some();
        let claimed =
            pods::claim(&self.client, &*owner, &owner_ref, active, &selector, false).await?;

        let mut manage_error = None;
        if satisfied && !deleting {
            let want = usize::try_from(owner.replicas().max(0)).unwrap_or(0);
            let have = claimed.len();
            let result = match have.cmp(&want) {
                Ordering::Less => {
                    let n = (want - have).min(BURST_REPLICAS);
                    self.create_pods(&owner, &key, n)
                        .await
                        .map_err(|e| ("FailedCreate", e))
                }
                Ordering::Greater => {
                    let n = (have - want).min(BURST_REPLICAS);
                    let victims = pods_to_delete(claimed.clone(), n);
                    self.delete_pods(&owner, &key, victims)
                        .await
                        .map_err(|e| ("FailedDelete", e))
                }
                Ordering::Equal => Ok(()),
            };
            manage_error = result.err();
        }

        let min_ready = owner.min_ready_seconds();
        let mut status = counts(&claimed, owner.template(), min_ready);
        status.observed_generation = meta.generation;
        let mut conditions = owner.status().conditions;
        match &manage_error {
            Some((reason, message)) => {
                if !conditions.iter().any(|c| c.r#type == "ReplicaFailure") {
                    conditions.push(ReplicaSetCondition {
                        r#type: "ReplicaFailure".into(),
                        status: "True".into(),
                        last_transition_time: Some(Time::now()),
                        reason: Some((*reason).into()),
                        message: Some(message.clone()),
                    });
                }
            }
            None => conditions.retain(|c| c.r#type != "ReplicaFailure"),
        }
        status.conditions = conditions;
        let (ready, available) = (status.ready_replicas, status.available_replicas);
        self.write_status(&owner, status).await?;
        if let Some((reason, message)) = manage_error {
            return Err(super::Error::Sync {
                reason: reason.into(),
                message,
            });
        }
        if min_ready > 0 && ready != available {
            // Pods turn available with time alone.
            return Ok(Action::Requeue(Duration::from_secs(
                u64::try_from(min_ready).unwrap_or(1).max(1),
            )));
        }
        Ok(Action::Done)
    }

    async fn deleted(&self, key: &Key) {
        self.expectations.forget(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(
        name: &str,
        node: Option<&str>,
        phase: &str,
        ready: Option<i64>,
        created: i64,
    ) -> Arc<Pod> {
        let mut p: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "creationTimestamp": Time::from_unix(created, 0)},
            "spec": {"containers": [], "nodeName": node},
            "status": {"phase": phase}
        }))
        .unwrap_or_default();
        if let (Some(t), Some(s)) = (ready, p.status.as_mut()) {
            s.conditions.push(bosun_api_types::core::v1::PodCondition {
                r#type: "Ready".into(),
                status: "True".into(),
                last_transition_time: Some(Time::from_unix(t, 0)),
                ..Default::default()
            });
        }
        Arc::new(p)
    }

    fn names(v: &[Arc<Pod>]) -> Vec<&str> {
        v.iter()
            .filter_map(|p| p.metadata.name.as_deref())
            .collect()
    }

    #[test]
    fn deletion_ranking_follows_upstream() {
        let all = vec![
            pod("ready-old", Some("n1"), "Running", Some(10), 1),
            pod("ready-new", Some("n2"), "Running", Some(20), 2),
            pod("unready", Some("n1"), "Running", None, 3),
            pod("pending", Some("n2"), "Pending", None, 4),
            pod("unscheduled", None, "Pending", None, 5),
        ];
        let order = pods_to_delete(all, 5);
        assert_eq!(
            names(&order),
            [
                "unscheduled",
                "pending",
                "unready",
                "ready-new",
                "ready-old"
            ]
        );
        // Doubled up on a node goes before alone on one.
        let all = vec![
            pod("alone", Some("n1"), "Running", Some(10), 1),
            pod("pair-a", Some("n2"), "Running", Some(10), 1),
            pod("pair-b", Some("n2"), "Running", Some(10), 1),
        ];
        assert_eq!(names(&pods_to_delete(all, 1)), ["pair-a"]);
    }
}
