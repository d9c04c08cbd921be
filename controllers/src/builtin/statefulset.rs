//! The StatefulSet controller: pods with stable identities `<set>-<ordinal>`, each with its own
//! PersistentVolumeClaims from `volumeClaimTemplates` (`<claim>-<set>-<ordinal>`).
//!
//! As upstream's controller:
//! - every template is recorded in a ControllerRevision (`<set>-<hash>`, data
//!   `{"spec":{"template":…,"$patch":"replace"}}`, so `kubectl rollout history/undo` work), and
//!   pods carry their revision in `controller-revision-hash`;
//! - `OrderedReady` creates pods in ordinal order, each once the previous is Running and Ready,
//!   and removes them in reverse; `Parallel` does both at once;
//! - `RollingUpdate` replaces pods from the highest ordinal down to `partition`, one at a time
//!   once the rest are Ready; `OnDelete` waits for pods to be deleted by someone else;
//! - failed pods are recreated; `persistentVolumeClaimRetentionPolicy` deletes the claims of
//!   pods scaled away (`whenScaled: Delete`) or lets the collector take them with the set
//!   (`whenDeleted: Delete`);
//! - status carries replicas, ready, available, current and updated counts and revisions.

use super::{pods, revisions};
use crate::controller::{Action, Controller, Reconciler};
use bosun_api_types::apps::v1::{ControllerRevision, StatefulSet, StatefulSetStatus};
use bosun_api_types::core::v1::{PersistentVolumeClaim, Pod, Volume};
use bosun_api_types::selector::LabelSelectorExt;
use bosun_api_types::Time;
use bosun_client::events::{EventType, Recorder};
use bosun_client::informer::InformerFactory;
use bosun_client::reflector::{Key, Store};
use bosun_client::{Api, Client, DeleteParams, PostParams};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// The pod label with the pod's revision.
pub const REVISION_LABEL: &str = "controller-revision-hash";
/// The pod label with the pod's name.
pub const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
/// The pod label with the pod's ordinal.
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";

/// The StatefulSet controller's logic.
pub struct StatefulSets {
    client: Client,
    pods: Store<Pod>,
    revisions: Store<ControllerRevision>,
    recorder: Arc<Recorder>,
}

fn owner_key(meta: &bosun_api_types::meta::v1::ObjectMeta) -> Option<Key> {
    let r = pods::controller_ref(meta)?;
    (r.kind == "StatefulSet" && r.api_version.starts_with("apps/"))
        .then(|| Key::namespaced(meta.namespace.as_deref().unwrap_or(""), &r.name))
}

/// The ordinal of `pod` in the set `set` (`None` if its name is not `<set>-<n>`).
pub fn ordinal(set: &str, pod: &Pod) -> Option<i32> {
    pod.metadata
        .name
        .as_deref()?
        .strip_prefix(set)?
        .strip_prefix('-')?
        .parse()
        .ok()
        .filter(|n: &i32| *n >= 0)
}

fn healthy(pod: &Pod, min_ready: i32) -> bool {
    pods::phase(pod) == "Running"
        && pod.metadata.deletion_timestamp.is_none()
        && pods::is_available(pod, min_ready, Time::now())
}

impl StatefulSets {
    /// The controller (on `factory`'s informers) and its logic; run one with the other.
    pub fn new(client: Client, factory: &Arc<InformerFactory>) -> (Controller<StatefulSet>, Self) {
        let pod_store = factory.informer::<Pod>(None).store();
        let revisions = factory.informer::<ControllerRevision>(None).store();
        let controller = Controller::<StatefulSet>::new(Arc::clone(factory), None)
            .watches_with::<Pod>(|p| owner_key(&p.metadata).into_iter().collect())
            .waits_for(revisions.clone());
        let logic = StatefulSets {
            recorder: Arc::new(Recorder::core(
                client.clone(),
                "statefulset-controller",
                "statefulset-controller",
            )),
            client,
            pods: pod_store,
            revisions,
        };
        (controller, logic)
    }

    fn event(&self, set: &StatefulSet, event_type: EventType, reason: &str, note: String) {
        super::pods::emit(&self.recorder, set, event_type, reason, note);
    }

    /// The set's revisions, the current and the update one (made or renumbered as needed).
    async fn revisions(
        &self,
        set: &StatefulSet,
    ) -> bosun_client::Result<(
        ControllerRevision,
        ControllerRevision,
        Vec<Arc<ControllerRevision>>,
    )> {
        let spec = set.spec.clone().unwrap_or_default();
        let (update, owned) = revisions::sync(
            &self.client,
            &self.revisions,
            set,
            "StatefulSet",
            &spec.template,
            set.status.as_ref().and_then(|s| s.collision_count),
            spec.selector.match_labels.clone(),
        )
        .await?;
        let current_name = set.status.as_ref().and_then(|s| s.current_revision.clone());
        let current = current_name
            .and_then(|n| {
                owned
                    .iter()
                    .find(|r| r.metadata.name.as_deref() == Some(n.as_str()))
                    .map(|r| (**r).clone())
            })
            .unwrap_or_else(|| update.clone());
        Ok((current, update, owned))
    }

    async fn make_pod(
        &self,
        set: &StatefulSet,
        key: &Key,
        ord: i32,
        rev: &ControllerRevision,
    ) -> bosun_client::Result<()> {
        let Some(spec) = set.spec.as_ref() else {
            return Ok(());
        };
        let template = revisions::template_of(rev).unwrap_or_else(|| spec.template.clone());
        let name = format!("{}-{ord}", key.name);
        // Claims first.
        let claims: Api<PersistentVolumeClaim> =
            Api::namespaced(self.client.clone(), &key.namespace);
        let delete_with_set = spec
            .persistent_volume_claim_retention_policy
            .as_ref()
            .and_then(|p| p.when_deleted.as_deref())
            == Some("Delete");
        let mut volumes: Vec<Volume> = Vec::new();
        for t in &spec.volume_claim_templates {
            let tname = t.metadata.name.clone().unwrap_or_default();
            let claim_name = format!("{tname}-{name}");
            volumes.push(
                serde_json::from_value(serde_json::json!({
                    "name": tname, "persistentVolumeClaim": {"claimName": claim_name}
                }))
                .unwrap_or_default(),
            );
            if claims.get_opt(&claim_name).await?.is_some() {
                continue;
            }
            let mut claim = t.clone();
            claim.metadata = Default::default();
            claim.metadata.name = Some(claim_name.clone());
            claim.metadata.labels = t.metadata.labels.clone();
            claim
                .metadata
                .labels
                .extend(spec.selector.match_labels.clone());
            claim.metadata.annotations = t.metadata.annotations.clone();
            claim.status = None;
            if delete_with_set {
                let mut r = pods::owner_ref(set, "StatefulSet", "apps/v1");
                r.controller = None;
                claim.metadata.owner_references = vec![r];
            }
            match claims.create(&PostParams::default(), &claim).await {
                Ok(_) => self.event(
                    set,
                    EventType::Normal,
                    "SuccessfulCreate",
                    format!(
                        "create Claim {claim_name} Pod {name} in StatefulSet {} success",
                        key.name
                    ),
                ),
                Err(e) if e.code() == Some(409) => {}
                Err(e) => {
                    self.event(set, EventType::Warning, "FailedCreate", format!("create Claim {claim_name} for Pod {name} in StatefulSet {} failed error: {e}", key.name));
                    return Err(e);
                }
            }
        }
        let mut pod = pods::from_template(
            &template,
            "",
            pods::owner_ref(set, "StatefulSet", "apps/v1"),
        );
        pod.metadata.generate_name = None;
        pod.metadata.name = Some(name.clone());
        pod.metadata
            .labels
            .insert(POD_NAME_LABEL.into(), name.clone());
        pod.metadata
            .labels
            .insert(POD_INDEX_LABEL.into(), ord.to_string());
        pod.metadata.labels.insert(
            REVISION_LABEL.into(),
            rev.metadata.name.clone().unwrap_or_default(),
        );
        if let Some(ps) = pod.spec.as_mut() {
            ps.hostname = Some(name.clone());
            if !spec.service_name.is_empty() {
                ps.subdomain = Some(spec.service_name.clone());
            }
            for v in volumes {
                ps.volumes.retain(|x| x.name != v.name);
                ps.volumes.push(v);
            }
        }
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &key.namespace);
        match api.create(&PostParams::default(), &pod).await {
            Ok(_) => {
                self.event(
                    set,
                    EventType::Normal,
                    "SuccessfulCreate",
                    format!("create Pod {name} in StatefulSet {} successful", key.name),
                );
                Ok(())
            }
            Err(e) if e.code() == Some(409) => Ok(()),
            Err(e) => {
                self.event(
                    set,
                    EventType::Warning,
                    "FailedCreate",
                    format!(
                        "create Pod {name} in StatefulSet {} failed error: {e}",
                        key.name
                    ),
                );
                Err(e)
            }
        }
    }

    async fn delete_pod(
        &self,
        set: &StatefulSet,
        key: &Key,
        pod: &Pod,
    ) -> bosun_client::Result<()> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &key.namespace);
        let name = pod.metadata.name.clone().unwrap_or_default();
        let params = DeleteParams {
            precondition_uid: pod.metadata.uid.clone(),
            ..Default::default()
        };
        match api.delete(&name, &params).await {
            Ok(_) => {
                self.event(
                    set,
                    EventType::Normal,
                    "SuccessfulDelete",
                    format!("delete Pod {name} in StatefulSet {} successful", key.name),
                );
                Ok(())
            }
            Err(e) if e.is_not_found() || e.is_conflict() => Ok(()),
            Err(e) => Err(e),
        }
    }
}

#[async_trait::async_trait]
impl Reconciler<StatefulSet> for StatefulSets {
    type Error = bosun_client::Error;

    async fn reconcile(&self, obj: Arc<StatefulSet>) -> Result<Action, Self::Error> {
        let set = (*obj).clone();
        let key = Key::of(&set);
        let Some(spec) = set.spec.clone() else {
            return Ok(Action::Done);
        };
        let Ok(selector) = spec.selector.to_selector() else {
            return Ok(Action::Done);
        };
        if spec.selector.match_labels.is_empty() && spec.selector.match_expressions.is_empty() {
            return Ok(Action::Done);
        }
        let owner = pods::owner_ref(&set, "StatefulSet", "apps/v1");
        let set_api: Api<StatefulSet> = Api::namespaced(self.client.clone(), &key.namespace);
        let deleting = set.metadata.deletion_timestamp.is_some();
        let claimed = pods::claim(
            &self.client,
            &set,
            &owner,
            self.pods.by_index("namespace", &key.namespace),
            &selector,
            false,
        )
        .await?;
        let (current, update, owned) = self.revisions(&set).await?;
        let current_name = current.metadata.name.clone().unwrap_or_default();
        let update_name = update.metadata.name.clone().unwrap_or_default();
        let replicas = spec.replicas.unwrap_or(1).max(0);
        let min_ready = spec.min_ready_seconds.unwrap_or(0);
        let ordered = spec.pod_management_policy.as_deref() != Some("Parallel");
        let strategy = spec.update_strategy.clone().unwrap_or_default();
        let rolling = strategy.r#type.as_deref() != Some("OnDelete");
        let partition = strategy
            .rolling_update
            .as_ref()
            .and_then(|r| r.partition)
            .unwrap_or(0);

        let mut by_ordinal: BTreeMap<i32, Arc<Pod>> = BTreeMap::new();
        for p in &claimed {
            if let Some(o) = ordinal(&key.name, p) {
                by_ordinal.insert(o, Arc::clone(p));
            }
        }
        let status_of = |by_ordinal: &BTreeMap<i32, Arc<Pod>>| {
            let live: Vec<&Arc<Pod>> = by_ordinal.values().collect();
            let count = |f: &dyn Fn(&Pod) -> bool| {
                i32::try_from(live.iter().filter(|p| f(p)).count()).unwrap_or(0)
            };
            let rev = |p: &Pod| {
                p.metadata
                    .labels
                    .get(REVISION_LABEL)
                    .cloned()
                    .unwrap_or_default()
            };
            let mut s = StatefulSetStatus {
                observed_generation: set.metadata.generation,
                replicas: count(&|_| true),
                ready_replicas: Some(count(&|p| pods::is_ready(p))),
                available_replicas: Some(count(&|p| pods::is_available(p, min_ready, Time::now()))),
                current_replicas: Some(count(&|p| rev(p) == current_name)),
                updated_replicas: Some(count(&|p| rev(p) == update_name)),
                current_revision: Some(current_name.clone()),
                update_revision: Some(update_name.clone()),
                collision_count: set.status.as_ref().and_then(|s| s.collision_count),
                conditions: set
                    .status
                    .as_ref()
                    .map(|s| s.conditions.clone())
                    .unwrap_or_default(),
            };
            // Every pod updated: the update revision is current.
            if s.updated_replicas == Some(replicas) && s.replicas == replicas {
                s.current_revision = Some(update_name.clone());
                s.current_replicas = s.updated_replicas;
            }
            s
        };

        if !deleting {
            let mut blocked = false;
            // Pods for the ordinals [0, replicas): failed ones replaced, missing ones made.
            for ord in 0..replicas {
                match by_ordinal.get(&ord) {
                    Some(p)
                        if pods::phase(p) == "Failed"
                            && p.metadata.deletion_timestamp.is_none() =>
                    {
                        self.delete_pod(&set, &key, p).await?;
                        blocked |= ordered;
                    }
                    Some(p) => {
                        if ordered && !healthy(p, min_ready) {
                            // Wait for this one before the next.
                            blocked = true;
                        }
                    }
                    None => {
                        let old = rolling && ord < partition
                            || !rolling
                                && ord
                                    < set
                                        .status
                                        .as_ref()
                                        .and_then(|s| s.current_replicas)
                                        .unwrap_or(0);
                        let rev = if old { &current } else { &update };
                        self.make_pod(&set, &key, ord, rev).await?;
                        blocked |= ordered;
                    }
                }
                if blocked {
                    break;
                }
            }
            // Pods beyond replicas go, the highest first.
            if !blocked {
                let condemned: Vec<(i32, Arc<Pod>)> = by_ordinal
                    .range(replicas..)
                    .rev()
                    .map(|(o, p)| (*o, Arc::clone(p)))
                    .collect();
                for (_, p) in &condemned {
                    if p.metadata.deletion_timestamp.is_some() {
                        if ordered {
                            blocked = true;
                            break;
                        }
                        continue;
                    }
                    self.delete_pod(&set, &key, p).await?;
                    if ordered {
                        blocked = true;
                        break;
                    }
                }
                // Claims of pods scaled away, once the pods are gone.
                if spec
                    .persistent_volume_claim_retention_policy
                    .as_ref()
                    .and_then(|p| p.when_scaled.as_deref())
                    == Some("Delete")
                {
                    let claims: Api<PersistentVolumeClaim> =
                        Api::namespaced(self.client.clone(), &key.namespace);
                    for list in claims.list(&Default::default()).await?.items {
                        let cname = list.metadata.name.clone().unwrap_or_default();
                        for t in &spec.volume_claim_templates {
                            let prefix = format!(
                                "{}-{}-",
                                t.metadata.name.as_deref().unwrap_or_default(),
                                key.name
                            );
                            let Some(ord) = cname
                                .strip_prefix(&prefix)
                                .and_then(|o| o.parse::<i32>().ok())
                            else {
                                continue;
                            };
                            if ord >= replicas && !by_ordinal.contains_key(&ord) {
                                let _ = claims.delete(&cname, &DeleteParams::default()).await;
                            }
                        }
                    }
                }
            }
            // Rolling update: from the highest ordinal down to the partition, one at a time,
            // once every pod is healthy.
            if rolling && !blocked {
                let all_healthy = (0..replicas)
                    .all(|o| by_ordinal.get(&o).is_some_and(|p| healthy(p, min_ready)));
                if all_healthy {
                    for ord in (partition.max(0)..replicas).rev() {
                        let Some(p) = by_ordinal.get(&ord) else {
                            continue;
                        };
                        if p.metadata.labels.get(REVISION_LABEL) != Some(&update_name) {
                            self.delete_pod(&set, &key, p).await?;
                            break;
                        }
                    }
                }
            }
        }

        let status = status_of(&by_ordinal);
        if set.status.as_ref() != Some(&status) {
            let mut updated = set.clone();
            updated.status = Some(status.clone());
            match set_api
                .replace_status(&key.name, &PostParams::default(), &updated)
                .await
            {
                Ok(_) => {}
                Err(e) if e.is_not_found() || e.is_conflict() => {}
                Err(e) => return Err(e),
            }
        }
        // Old revisions beyond the history limit, not used by any pod.
        let live: Vec<String> = by_ordinal
            .values()
            .filter_map(|p| p.metadata.labels.get(REVISION_LABEL).cloned())
            .chain([current_name.clone(), update_name.clone()])
            .collect();
        revisions::prune(
            &self.client,
            &key.namespace,
            &owned,
            &live,
            spec.revision_history_limit,
        )
        .await;
        if min_ready > 0 && status.ready_replicas != status.available_replicas {
            return Ok(Action::Requeue(Duration::from_secs(
                u64::try_from(min_ready).unwrap_or(1),
            )));
        }
        Ok(Action::Done)
    }
}
