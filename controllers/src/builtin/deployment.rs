//! The Deployment controller: ReplicaSets per pod template, rolled with upstream's RollingUpdate
//! and Recreate strategies.
//!
//! Each sync claims the namespace's ReplicaSets by selector, finds the one whose template is
//! the Deployment's (ignoring `pod-template-hash`) or makes it (`<name>-<hash>`), and keeps the
//! revision annotations (`deployment.kubernetes.io/revision`, `revision-history`,
//! `desired-replicas`, `max-replicas`) as upstream does, so `kubectl rollout
//! history/undo/status/pause/resume/restart` work. Then, as upstream's controller:
//! - a paused Deployment, or a change of `replicas`, only scales (proportionally over the
//!   active ReplicaSets during a rollout);
//! - RollingUpdate scales the new set up to `replicas + maxSurge` pods in all, and the old ones
//!   down while `replicas - maxUnavailable` pods stay available (unhealthy old pods first);
//! - Recreate scales the old sets to zero, waits for their pods to go, then scales up the new.
//!
//! Status carries the counts, `Available` and `Progressing` (with `progressDeadlineSeconds`)
//! conditions; old ReplicaSets beyond `revisionHistoryLimit` are deleted once the rollout is
//! complete.

use super::pods;
use crate::controller::{Action, Controller, Reconciler};
use bosun_api_types::apps::v1::{Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet};
use bosun_api_types::core::v1::{Pod, PodTemplateSpec};
use bosun_api_types::selector::LabelSelectorExt;
use bosun_api_types::{IntOrString, Time};
use bosun_client::events::{EventType, Recorder};
use bosun_client::informer::InformerFactory;
use bosun_client::reflector::{Key, Store};
use bosun_client::{Api, Client, DeleteParams, Patch, PatchParams, PostParams};
use std::sync::Arc;
use std::time::Duration;

/// The pod label that tells the ReplicaSets of one Deployment apart.
pub const POD_TEMPLATE_HASH: &str = "pod-template-hash";
/// A ReplicaSet's (and its Deployment's) revision.
pub const REVISION: &str = "deployment.kubernetes.io/revision";
/// The revisions a ReplicaSet had before (a rollback reuses a set).
pub const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
/// The Deployment's replicas when the ReplicaSet was last scaled.
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
/// `replicas + maxSurge` when the ReplicaSet was last scaled.
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";

/// Deployment annotations never copied to its ReplicaSets.
const NOT_COPIED: &[&str] = &[
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    REVISION_HISTORY,
    DESIRED_REPLICAS,
    MAX_REPLICAS,
    "deprecated.deployment.rollback.to",
];

const PROGRESSING: &str = "Progressing";
const AVAILABLE: &str = "Available";
const REPLICA_FAILURE: &str = "ReplicaFailure";

// ---------------------------------------------------------------------------------------------
// What a Deployment asks for

fn replicas(d: &Deployment) -> i32 {
    d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

fn template(d: &Deployment) -> PodTemplateSpec {
    d.spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default()
}

fn is_recreate(d: &Deployment) -> bool {
    d.spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.r#type.as_deref())
        == Some("Recreate")
}

fn paused(d: &Deployment) -> bool {
    d.spec.as_ref().and_then(|s| s.paused).unwrap_or(false)
}

fn min_ready_seconds(d: &Deployment) -> i32 {
    d.spec
        .as_ref()
        .and_then(|s| s.min_ready_seconds)
        .unwrap_or(0)
}

fn progress_deadline(d: &Deployment) -> Option<i32> {
    d.spec
        .as_ref()
        .and_then(|s| s.progress_deadline_seconds)
        .filter(|s| *s != i32::MAX)
}

/// `maxSurge` and `maxUnavailable` for `desired` replicas (upstream's ResolveFenceposts:
/// surge rounds up, unavailable down, and both zero means one unavailable).
pub fn fenceposts(
    max_surge: Option<&IntOrString>,
    max_unavailable: Option<&IntOrString>,
    desired: i32,
) -> (i32, i32) {
    let quarter = IntOrString::String("25%".into());
    let surge = max_surge
        .unwrap_or(&quarter)
        .scaled_value(desired, true)
        .unwrap_or(0);
    let unavailable = max_unavailable
        .unwrap_or(&quarter)
        .scaled_value(desired, false)
        .unwrap_or(0);
    if surge == 0 && unavailable == 0 {
        (0, 1)
    } else {
        (surge, unavailable)
    }
}

fn rolling(d: &Deployment) -> (Option<&IntOrString>, Option<&IntOrString>) {
    let r = d
        .spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.rolling_update.as_ref());
    (
        r.and_then(|r| r.max_surge.as_ref()),
        r.and_then(|r| r.max_unavailable.as_ref()),
    )
}

/// How many pods above `replicas` a rollout may run (0 for Recreate).
pub fn max_surge(d: &Deployment) -> i32 {
    if is_recreate(d) {
        return 0;
    }
    let (s, u) = rolling(d);
    fenceposts(s, u, replicas(d)).0
}

/// How many of `replicas` may be unavailable during a rollout (0 for Recreate).
pub fn max_unavailable(d: &Deployment) -> i32 {
    if is_recreate(d) || replicas(d) == 0 {
        return 0;
    }
    let (s, u) = rolling(d);
    fenceposts(s, u, replicas(d)).1.min(replicas(d))
}

// ---------------------------------------------------------------------------------------------
// ReplicaSet facts

fn rs_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)
}

fn rs_status(rs: &ReplicaSet) -> (i32, i32, i32) {
    rs.status.as_ref().map_or((0, 0, 0), |s| {
        (
            s.replicas,
            s.ready_replicas.unwrap_or(0),
            s.available_replicas.unwrap_or(0),
        )
    })
}

/// The available pods a ReplicaSet can still have: its status may predate its last scale
/// down (the pods beyond `replicas` are going, and never count).
fn available_within_spec(rs: &ReplicaSet) -> i32 {
    rs_status(rs).2.min(rs_replicas(rs))
}

fn annotation_i32(rs: &ReplicaSet, key: &str) -> Option<i32> {
    rs.metadata.annotations.get(key)?.parse().ok()
}

fn revision(rs: &ReplicaSet) -> i64 {
    rs.metadata
        .annotations
        .get(REVISION)
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

fn created(rs: &ReplicaSet) -> (Option<Time>, String) {
    (
        rs.metadata.creation_timestamp,
        rs.metadata.name.clone().unwrap_or_default(),
    )
}

/// The hash of a pod template (with a collision count), in upstream's alphabet: FNV-1a over
/// the template's JSON.
pub fn template_hash(template: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    super::revisions::hash_bytes(
        &serde_json::to_vec(template).unwrap_or_default(),
        collision_count,
    )
}

/// Whether two templates are the same but for the `pod-template-hash` label.
pub fn equal_ignoring_hash(a: &PodTemplateSpec, b: &PodTemplateSpec) -> bool {
    let strip = |t: &PodTemplateSpec| {
        let mut t = t.clone();
        if let Some(m) = t.metadata.as_mut() {
            m.labels.remove(POD_TEMPLATE_HASH);
        }
        serde_json::to_value(t).unwrap_or_default()
    };
    strip(a) == strip(b)
}

// ---------------------------------------------------------------------------------------------
// Conditions and status

fn condition<'a>(s: &'a DeploymentStatus, t: &str) -> Option<&'a DeploymentCondition> {
    s.conditions.iter().find(|c| c.r#type == t)
}

fn new_condition(t: &str, status: &str, reason: &str, message: String) -> DeploymentCondition {
    let now = Time::now();
    DeploymentCondition {
        r#type: t.into(),
        status: status.into(),
        last_update_time: Some(now),
        last_transition_time: Some(now),
        reason: Some(reason.into()),
        message: Some(message),
    }
}

/// Sets `c`, keeping the transition time when the status does not change and changing
/// nothing when status and reason are the same (upstream's SetDeploymentCondition).
fn set_condition(s: &mut DeploymentStatus, mut c: DeploymentCondition) {
    if let Some(cur) = condition(s, &c.r#type) {
        if cur.status == c.status && cur.reason == c.reason {
            return;
        }
        if cur.status == c.status {
            c.last_transition_time = cur.last_transition_time;
        }
    }
    s.conditions.retain(|x| x.r#type != c.r#type);
    s.conditions.push(c);
}

fn remove_condition(s: &mut DeploymentStatus, t: &str) {
    s.conditions.retain(|x| x.r#type != t);
}

/// The status the ReplicaSets make (upstream's calculateStatus).
fn calculate_status(
    all: &[ReplicaSet],
    new: Option<&ReplicaSet>,
    d: &Deployment,
) -> DeploymentStatus {
    let sum = |f: &dyn Fn(&ReplicaSet) -> i32| all.iter().map(f).sum::<i32>();
    let available = sum(&|rs| rs_status(rs).2);
    let total = sum(&|rs| rs_status(rs).0);
    let old = d.status.clone().unwrap_or_default();
    let mut s = DeploymentStatus {
        observed_generation: d.metadata.generation,
        replicas: Some(total),
        updated_replicas: Some(new.map_or(0, |rs| rs_status(rs).0)),
        ready_replicas: Some(sum(&|rs| rs_status(rs).1)),
        available_replicas: Some(available),
        unavailable_replicas: Some((total - available).max(0)),
        conditions: old.conditions.clone(),
        collision_count: old.collision_count,
    };
    if available >= replicas(d) - max_unavailable(d) {
        set_condition(
            &mut s,
            new_condition(
                AVAILABLE,
                "True",
                "MinimumReplicasAvailable",
                "Deployment has minimum availability.".into(),
            ),
        );
    } else {
        set_condition(
            &mut s,
            new_condition(
                AVAILABLE,
                "False",
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.".into(),
            ),
        );
    }
    s
}

/// Every replica updated, present and available, for the latest generation.
fn complete(d: &Deployment, s: &DeploymentStatus) -> bool {
    let want = replicas(d);
    s.updated_replicas == Some(want)
        && s.replicas == Some(want)
        && s.available_replicas == Some(want)
        && s.observed_generation >= d.metadata.generation
}

/// Whether the rollout moved since the last status (upstream's DeploymentProgressing).
fn progressing(d: &Deployment, s: &DeploymentStatus) -> bool {
    let old = d.status.clone().unwrap_or_default();
    let v = |x: Option<i32>| x.unwrap_or(0);
    let old_old = v(old.replicas) - v(old.updated_replicas);
    let new_old = v(s.replicas) - v(s.updated_replicas);
    v(s.updated_replicas) > v(old.updated_replicas)
        || new_old < old_old
        || v(s.ready_replicas) > v(old.ready_replicas)
        || v(s.available_replicas) > v(old.available_replicas)
}

/// Whether the rollout has gone `progressDeadlineSeconds` without progress.
fn timed_out(d: &Deployment, s: &DeploymentStatus, now: Time) -> bool {
    let Some(deadline) = progress_deadline(d) else {
        return false;
    };
    let Some(c) = condition(s, PROGRESSING) else {
        return false;
    };
    match c.reason.as_deref() {
        Some("NewReplicaSetAvailable") => false,
        Some("ProgressDeadlineExceeded") => true,
        _ => c
            .last_update_time
            .is_some_and(|t| t.unix_seconds() + i64::from(deadline) < now.unix_seconds()),
    }
}

// ---------------------------------------------------------------------------------------------
// Proportional scaling

/// How many replicas `rs` gets of `to_add` more (or fewer) across the active sets
/// (upstream's GetProportion and getReplicaSetFraction).
fn proportion(rs: &ReplicaSet, d: &Deployment, to_add: i32, added: i32) -> i32 {
    if rs_replicas(rs) == 0 || to_add == 0 || to_add == added {
        return 0;
    }
    let fraction = if replicas(d) == 0 {
        -rs_replicas(rs)
    } else {
        let deployment_replicas = replicas(d) + max_surge(d);
        let annotated = annotation_i32(rs, MAX_REPLICAS)
            .unwrap_or_else(|| d.status.as_ref().and_then(|s| s.replicas).unwrap_or(0));
        if annotated == 0 {
            0
        } else {
            let size =
                f64::from(rs_replicas(rs)) * f64::from(deployment_replicas) / f64::from(annotated);
            #[allow(clippy::cast_possible_truncation)]
            let rounded = size.round() as i32;
            rounded - rs_replicas(rs)
        }
    };
    let allowed = to_add - added;
    if to_add > 0 {
        fraction.min(allowed)
    } else {
        fraction.max(allowed)
    }
}

// ---------------------------------------------------------------------------------------------
// The controller

/// The Deployment controller's logic.
pub struct Deployments {
    client: Client,
    sets: Store<ReplicaSet>,
    pods: Store<Pod>,
    recorder: Arc<Recorder>,
}

fn owner_key(meta: &bosun_api_types::meta::v1::ObjectMeta) -> Option<Key> {
    let r = pods::controller_ref(meta)?;
    (r.kind == "Deployment" && r.api_version.starts_with("apps/"))
        .then(|| Key::namespaced(meta.namespace.as_deref().unwrap_or(""), &r.name))
}

impl Deployments {
    /// The controller (on `factory`'s informers) and its logic; run one with the other.
    pub fn new(client: Client, factory: &Arc<InformerFactory>) -> (Controller<Deployment>, Self) {
        let sets = factory.informer::<ReplicaSet>(None).store();
        let pod_store = factory.informer::<Pod>(None).store();
        let deployments = factory.informer::<Deployment>(None).store();
        let (d_for_rs, rs_for_pods, d_for_pods) =
            (deployments.clone(), sets.clone(), deployments.clone());
        let controller = Controller::<Deployment>::new(Arc::clone(factory), None)
            .waits_for(pod_store.clone())
            // A ReplicaSet maps to its Deployment, an orphan to every one that could adopt it.
            .watches_with::<ReplicaSet>(move |rs| {
                if let Some(k) = owner_key(&rs.metadata) {
                    return vec![k];
                }
                if pods::controller_ref(&rs.metadata).is_some() {
                    return Vec::new();
                }
                let ns = rs.metadata.namespace.as_deref().unwrap_or("");
                d_for_rs
                    .by_index("namespace", ns)
                    .iter()
                    .filter(|d| {
                        d.spec.as_ref().is_some_and(|s| {
                            s.selector
                                .to_selector()
                                .is_ok_and(|sel| sel.matches(&rs.metadata.labels))
                        })
                    })
                    .map(|d| Key::of(&**d))
                    .collect()
            })
            // Recreate waits for the old pods to go: their changes wake it.
            .watches_with::<Pod>(move |pod| {
                let Some(r) = pods::controller_ref(&pod.metadata) else {
                    return Vec::new();
                };
                let ns = pod.metadata.namespace.as_deref().unwrap_or("");
                let Some(rs) = rs_for_pods.get(&Key::namespaced(ns, &r.name)) else {
                    return Vec::new();
                };
                owner_key(&rs.metadata)
                    .filter(|k| d_for_pods.get(k).is_some_and(|d| is_recreate(&d)))
                    .into_iter()
                    .collect()
            });
        let logic = Deployments {
            recorder: Arc::new(Recorder::core(
                client.clone(),
                "deployment-controller",
                "deployment-controller",
            )),
            client,
            sets,
            pods: pod_store,
        };
        (controller, logic)
    }

    fn event(&self, d: &Deployment, event_type: EventType, reason: &str, note: String) {
        super::pods::emit(&self.recorder, d, event_type, reason, note);
    }

    fn sets_api(&self, ns: &str) -> Api<ReplicaSet> {
        Api::namespaced(self.client.clone(), ns)
    }

    /// Sets `rs`'s replicas (and the desired/max annotations) to `to`.
    async fn scale(
        &self,
        d: &Deployment,
        rs: &mut ReplicaSet,
        to: i32,
    ) -> bosun_client::Result<bool> {
        let from = rs_replicas(rs);
        let max = replicas(d) + max_surge(d);
        let annotations_stale = annotation_i32(rs, DESIRED_REPLICAS) != Some(replicas(d))
            || annotation_i32(rs, MAX_REPLICAS) != Some(max);
        if from == to && !annotations_stale {
            return Ok(false);
        }
        let mut updated = rs.clone();
        if let Some(spec) = updated.spec.as_mut() {
            spec.replicas = Some(to);
        }
        updated
            .metadata
            .annotations
            .insert(DESIRED_REPLICAS.into(), replicas(d).to_string());
        updated
            .metadata
            .annotations
            .insert(MAX_REPLICAS.into(), max.to_string());
        let ns = rs.metadata.namespace.clone().unwrap_or_default();
        let name = rs.metadata.name.clone().unwrap_or_default();
        *rs = self
            .sets_api(&ns)
            .replace(&name, &PostParams::default(), &updated)
            .await?;
        if from != to {
            let op = if to > from { "up" } else { "down" };
            self.event(
                d,
                EventType::Normal,
                "ScalingReplicaSet",
                format!("Scaled {op} replica set {name} to {to} from {from}"),
            );
        }
        Ok(from != to)
    }

    /// The new ReplicaSet (made when `create` and missing) and the old ones, with revisions
    /// synced (upstream's getAllReplicaSetsAndSyncRevision).
    async fn new_and_old(
        &self,
        d: &mut Deployment,
        sets: Vec<ReplicaSet>,
        create: bool,
    ) -> Result<(Option<ReplicaSet>, Vec<ReplicaSet>), super::Error> {
        let tmpl = template(d);
        let mut sorted = sets;
        sorted.sort_by_key(created);
        let new_index = sorted.iter().position(|rs| {
            rs.spec
                .as_ref()
                .and_then(|s| s.template.as_ref())
                .is_some_and(|t| equal_ignoring_hash(t, &tmpl))
        });
        let existing = new_index.map(|i| sorted.remove(i));
        let old = sorted;
        let max_old = old.iter().map(revision).max().unwrap_or(0);
        let new_revision = (max_old + 1).to_string();
        let ns = d.metadata.namespace.clone().unwrap_or_default();
        let api = self.sets_api(&ns);

        if let Some(mut rs) = existing {
            let mut copy = rs.clone();
            let changed = set_new_rs_annotations(d, &mut copy, &new_revision, true);
            let min_ready_stale = copy
                .spec
                .as_ref()
                .and_then(|s| s.min_ready_seconds)
                .unwrap_or(0)
                != min_ready_seconds(d);
            if changed || min_ready_stale {
                if let Some(spec) = copy.spec.as_mut() {
                    spec.min_ready_seconds = Some(min_ready_seconds(d));
                }
                let name = copy.metadata.name.clone().unwrap_or_default();
                rs = api.replace(&name, &PostParams::default(), &copy).await?;
            }
            let rev = rs
                .metadata
                .annotations
                .get(REVISION)
                .cloned()
                .unwrap_or_default();
            self.set_deployment_revision(d, &rev).await?;
            let mut status = d.status.clone().unwrap_or_default();
            if progress_deadline(d).is_some() && condition(&status, PROGRESSING).is_none() {
                let name = rs.metadata.name.clone().unwrap_or_default();
                set_condition(
                    &mut status,
                    new_condition(
                        PROGRESSING,
                        "True",
                        "FoundNewReplicaSet",
                        format!("Found new replica set {name:?}"),
                    ),
                );
                self.write_status(d, status).await?;
            }
            return Ok((Some(rs), old));
        }
        if !create {
            return Ok((None, old));
        }

        // A new ReplicaSet for the template.
        let collision = d.status.as_ref().and_then(|s| s.collision_count);
        let hash = template_hash(&tmpl, collision);
        let mut rs_template = tmpl.clone();
        rs_template
            .metadata
            .get_or_insert_with(Default::default)
            .labels
            .insert(POD_TEMPLATE_HASH.into(), hash.clone());
        let mut selector = d
            .spec
            .as_ref()
            .map(|s| s.selector.clone())
            .unwrap_or_default();
        selector
            .match_labels
            .insert(POD_TEMPLATE_HASH.into(), hash.clone());
        let name = format!("{}-{hash}", d.metadata.name.as_deref().unwrap_or_default());
        let mut rs = ReplicaSet::default();
        rs.metadata.name = Some(name.clone());
        rs.metadata.namespace = Some(ns.clone());
        rs.metadata.labels = rs_template
            .metadata
            .as_ref()
            .map(|m| m.labels.clone())
            .unwrap_or_default();
        rs.metadata.owner_references = vec![pods::owner_ref(&*d, "Deployment", "apps/v1")];
        rs.spec = Some(bosun_api_types::apps::v1::ReplicaSetSpec {
            replicas: Some(0),
            min_ready_seconds: Some(min_ready_seconds(d)),
            selector,
            template: Some(rs_template),
        });
        let want = new_rs_replicas(d, &old, None);
        if let Some(spec) = rs.spec.as_mut() {
            spec.replicas = Some(want);
        }
        set_new_rs_annotations(d, &mut rs, &new_revision, false);
        let created = match api.create(&PostParams::default(), &rs).await {
            Ok(rs) => rs,
            Err(e) if e.is_conflict() || e.code() == Some(409) => {
                // A set of that name exists: ours (a lagging cache) if its template matches,
                // else a hash collision, retried with a bumped collision count.
                if let Some(found) = api.get_opt(&name).await? {
                    let ours = pods::controller_ref(&found.metadata)
                        .is_some_and(|r| Some(&r.uid) == d.metadata.uid.as_ref());
                    let same = found
                        .spec
                        .as_ref()
                        .and_then(|s| s.template.as_ref())
                        .is_some_and(|t| equal_ignoring_hash(t, &tmpl));
                    if ours && same {
                        return Ok((Some(found), old));
                    }
                    let mut status = d.status.clone().unwrap_or_default();
                    status.collision_count = Some(collision.unwrap_or(0) + 1);
                    self.write_status(d, status).await?;
                }
                return Err(e.into());
            }
            Err(e) => {
                let mut status = d.status.clone().unwrap_or_default();
                if progress_deadline(d).is_some() {
                    set_condition(
                        &mut status,
                        new_condition(
                            PROGRESSING,
                            "False",
                            "ReplicaSetCreateError",
                            format!("Failed to create new replica set {name:?}: {e}"),
                        ),
                    );
                    self.write_status(d, status).await?;
                }
                self.event(
                    d,
                    EventType::Warning,
                    "FailedCreate",
                    format!("Failed to create new replica set {name:?}: {e}"),
                );
                return Err(e.into());
            }
        };
        if want > 0 {
            self.event(
                d,
                EventType::Normal,
                "ScalingReplicaSet",
                format!("Scaled up replica set {name} to {want}"),
            );
        }
        self.set_deployment_revision(d, &new_revision).await?;
        if progress_deadline(d).is_some() {
            let mut status = d.status.clone().unwrap_or_default();
            set_condition(
                &mut status,
                new_condition(
                    PROGRESSING,
                    "True",
                    "NewReplicaSetCreated",
                    format!("Created new replica set {name:?}"),
                ),
            );
            self.write_status(d, status).await?;
        }
        Ok((Some(created), old))
    }

    /// Records `revision` on the Deployment (a metadata patch; `d` becomes the result).
    async fn set_deployment_revision(
        &self,
        d: &mut Deployment,
        revision: &str,
    ) -> bosun_client::Result<()> {
        if revision.is_empty()
            || d.metadata.annotations.get(REVISION).map(String::as_str) == Some(revision)
        {
            return Ok(());
        }
        let api: Api<Deployment> = Api::namespaced(
            self.client.clone(),
            d.metadata.namespace.as_deref().unwrap_or(""),
        );
        let name = d.metadata.name.clone().unwrap_or_default();
        let patch = serde_json::json!({"metadata": {"annotations": {REVISION: revision}}});
        *d = api
            .patch(&name, &PatchParams::default(), &Patch::Merge(patch))
            .await?;
        Ok(())
    }

    /// Writes `status` if it differs (`d` becomes the result).
    async fn write_status(
        &self,
        d: &mut Deployment,
        status: DeploymentStatus,
    ) -> bosun_client::Result<()> {
        if d.status.as_ref() == Some(&status) {
            return Ok(());
        }
        let api: Api<Deployment> = Api::namespaced(
            self.client.clone(),
            d.metadata.namespace.as_deref().unwrap_or(""),
        );
        let name = d.metadata.name.clone().unwrap_or_default();
        let mut updated = d.clone();
        updated.status = Some(status);
        *d = api
            .replace_status(&name, &PostParams::default(), &updated)
            .await?;
        Ok(())
    }

    /// Scaling only: a paused Deployment, or one whose replicas changed (upstream's sync).
    async fn sync_scale(
        &self,
        d: &mut Deployment,
        sets: Vec<ReplicaSet>,
    ) -> Result<Action, super::Error> {
        let (mut new, mut old) = self.new_and_old(d, sets, false).await?;
        self.proportional_scale(d, &mut new, &mut old).await?;
        if paused(d) {
            self.cleanup(d, &old).await?;
        }
        let all: Vec<ReplicaSet> = old.iter().cloned().chain(new.clone()).collect();
        let status = calculate_status(&all, new.as_ref(), d);
        self.write_status(d, status).await?;
        Ok(Action::Done)
    }

    async fn proportional_scale(
        &self,
        d: &Deployment,
        new: &mut Option<ReplicaSet>,
        old: &mut [ReplicaSet],
    ) -> bosun_client::Result<()> {
        let want = replicas(d);
        // One active set (or none): it gets everything.
        old.sort_by_key(created);
        let active: Vec<usize> = (0..old.len())
            .filter(|i| rs_replicas(&old[*i]) > 0)
            .collect();
        let new_active = new.as_ref().is_some_and(|rs| rs_replicas(rs) > 0);
        match (active.len(), new_active) {
            (0, false) => {
                if let Some(rs) = new.as_mut() {
                    self.scale(d, rs, want).await?;
                } else if let Some(rs) = old.last_mut() {
                    self.scale(d, rs, want).await?;
                }
                return Ok(());
            }
            (0, true) => {
                if let Some(rs) = new.as_mut() {
                    self.scale(d, rs, want).await?;
                }
                return Ok(());
            }
            (1, false) => {
                self.scale(d, &mut old[active[0]], want).await?;
                return Ok(());
            }
            _ => {}
        }
        // The new set is saturated: the old ones go.
        if let Some(rs) = new.as_ref() {
            if rs_replicas(rs) == want
                && annotation_i32(rs, DESIRED_REPLICAS) == Some(want)
                && rs_status(rs).2 == want
            {
                for i in active {
                    self.scale(d, &mut old[i], 0).await?;
                }
                return Ok(());
            }
        }
        if is_recreate(d) {
            return Ok(());
        }
        // Spread the difference over the active sets in proportion to their size.
        let mut all: Vec<&mut ReplicaSet> =
            old.iter_mut().filter(|rs| rs_replicas(rs) > 0).collect();
        if let Some(rs) = new.as_mut().filter(|rs| rs_replicas(rs) > 0) {
            all.push(rs);
        }
        let current: i32 = all.iter().map(|rs| rs_replicas(rs)).sum();
        let allowed = if want > 0 { want + max_surge(d) } else { 0 };
        let to_add = allowed - current;
        // Largest first; ties: newer first when growing, older first when shrinking.
        all.sort_by(|a, b| {
            rs_replicas(b).cmp(&rs_replicas(a)).then_with(|| {
                if to_add > 0 {
                    created(b).cmp(&created(a))
                } else {
                    created(a).cmp(&created(b))
                }
            })
        });
        let mut sizes = Vec::with_capacity(all.len());
        let mut added = 0;
        for rs in &all {
            if to_add == 0 {
                sizes.push(rs_replicas(rs));
            } else {
                let p = proportion(rs, d, to_add, added);
                sizes.push(rs_replicas(rs) + p);
                added += p;
            }
        }
        if to_add != 0 {
            if let Some(first) = sizes.first_mut() {
                *first = (*first + to_add - added).max(0);
            }
        }
        for (rs, size) in all.into_iter().zip(sizes) {
            self.scale(d, rs, size).await?;
        }
        Ok(())
    }

    /// Deletes the oldest old ReplicaSets beyond `revisionHistoryLimit` that have no pods.
    async fn cleanup(&self, d: &Deployment, old: &[ReplicaSet]) -> bosun_client::Result<()> {
        let Some(limit) = d.spec.as_ref().and_then(|s| s.revision_history_limit) else {
            return Ok(());
        };
        let mut cleanable: Vec<&ReplicaSet> = old
            .iter()
            .filter(|rs| rs.metadata.deletion_timestamp.is_none())
            .collect();
        let excess = cleanable
            .len()
            .saturating_sub(usize::try_from(limit.max(0)).unwrap_or(0));
        if excess == 0 {
            return Ok(());
        }
        cleanable.sort_by_key(|rs| (revision(rs), created(rs)));
        for rs in cleanable.into_iter().take(excess) {
            let observed = rs
                .status
                .as_ref()
                .and_then(|s| s.observed_generation)
                .unwrap_or(0);
            if rs_status(rs).0 != 0
                || rs_replicas(rs) != 0
                || rs.metadata.generation.unwrap_or(0) > observed
            {
                continue;
            }
            let name = rs.metadata.name.clone().unwrap_or_default();
            let params = DeleteParams {
                precondition_uid: rs.metadata.uid.clone(),
                ..Default::default()
            };
            match self
                .sets_api(rs.metadata.namespace.as_deref().unwrap_or(""))
                .delete(&name, &params)
                .await
            {
                Ok(_) => {
                    tracing::debug!(replicaset = %name, "deleted an old replica set beyond the history limit")
                }
                Err(e) if e.is_not_found() || e.is_conflict() => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The rollout status: counts, Available, Progressing (upstream's syncRolloutStatus).
    async fn sync_rollout_status(
        &self,
        d: &mut Deployment,
        all: &[ReplicaSet],
        new: Option<&ReplicaSet>,
    ) -> Result<Action, super::Error> {
        let mut status = calculate_status(all, new, d);
        let now = Time::now();
        if progress_deadline(d).is_none() {
            remove_condition(&mut status, PROGRESSING);
        }
        let current = condition(&status, PROGRESSING).cloned();
        let already_complete = status.replicas == status.updated_replicas
            && current.as_ref().and_then(|c| c.reason.as_deref()) == Some("NewReplicaSetAvailable");
        let new_name = new
            .and_then(|rs| rs.metadata.name.clone())
            .unwrap_or_default();
        if progress_deadline(d).is_some() && !already_complete {
            if complete(d, &status) {
                set_condition(
                    &mut status,
                    new_condition(
                        PROGRESSING,
                        "True",
                        "NewReplicaSetAvailable",
                        format!("ReplicaSet {new_name:?} has successfully progressed."),
                    ),
                );
            } else if progressing(d, &status) {
                let mut c = new_condition(
                    PROGRESSING,
                    "True",
                    "ReplicaSetUpdated",
                    format!("ReplicaSet {new_name:?} is progressing."),
                );
                if let Some(cur) = current.as_ref().filter(|c| c.status == "True") {
                    c.last_transition_time = cur.last_transition_time;
                }
                // Progress refreshes the update time even with the same reason.
                remove_condition(&mut status, PROGRESSING);
                status.conditions.push(c);
            } else if timed_out(d, &status, now) {
                set_condition(
                    &mut status,
                    new_condition(
                        PROGRESSING,
                        "False",
                        "ProgressDeadlineExceeded",
                        format!("ReplicaSet {new_name:?} has timed out progressing."),
                    ),
                );
            }
        }
        let failure = all.iter().find_map(|rs| {
            rs.status
                .as_ref()?
                .conditions
                .iter()
                .find(|c| c.r#type == REPLICA_FAILURE)
                .cloned()
        });
        match failure {
            Some(f) => set_condition(
                &mut status,
                DeploymentCondition {
                    r#type: REPLICA_FAILURE.into(),
                    status: f.status,
                    last_update_time: f.last_transition_time,
                    last_transition_time: f.last_transition_time,
                    reason: f.reason,
                    message: f.message,
                },
            ),
            None => remove_condition(&mut status, REPLICA_FAILURE),
        }
        let requeue = stuck_requeue(d, &status, now);
        self.write_status(d, status).await?;
        Ok(requeue.map_or(Action::Done, Action::Requeue))
    }

    async fn rollout_rolling(
        &self,
        d: &mut Deployment,
        sets: Vec<ReplicaSet>,
    ) -> Result<Action, super::Error> {
        let (new, mut old) = self.new_and_old(d, sets, true).await?;
        let Some(mut new) = new else {
            return Ok(Action::Done);
        };
        let want = replicas(d);
        // Scale the new set up (within maxSurge) or down to replicas.
        let target = if rs_replicas(&new) > want {
            want
        } else {
            new_rs_replicas(d, &old, Some(&new))
        };
        if rs_replicas(&new) != want && self.scale(d, &mut new, target).await? {
            let all: Vec<ReplicaSet> = old.iter().cloned().chain([new.clone()]).collect();
            return self.sync_rollout_status(d, &all, Some(&new)).await;
        }
        // Scale the old sets down while enough pods stay available.
        if self.reconcile_old(d, &mut old, &new).await? {
            let all: Vec<ReplicaSet> = old.iter().cloned().chain([new.clone()]).collect();
            return self.sync_rollout_status(d, &all, Some(&new)).await;
        }
        if complete(d, d.status.as_ref().unwrap_or(&DeploymentStatus::default())) {
            self.cleanup(d, &old).await?;
        }
        let all: Vec<ReplicaSet> = old.iter().cloned().chain([new.clone()]).collect();
        self.sync_rollout_status(d, &all, Some(&new)).await
    }

    /// Upstream's reconcileOldReplicaSets: unhealthy old pods first, then old pods while
    /// `replicas - maxUnavailable` stay available. Whether anything was scaled down.
    async fn reconcile_old(
        &self,
        d: &Deployment,
        old: &mut [ReplicaSet],
        new: &ReplicaSet,
    ) -> bosun_client::Result<bool> {
        let old_pods: i32 = old.iter().map(rs_replicas).sum();
        if old_pods == 0 {
            return Ok(false);
        }
        let all_pods = old_pods + rs_replicas(new);
        let min_available = replicas(d) - max_unavailable(d);
        let new_unavailable = rs_replicas(new) - available_within_spec(new);
        let max_scaled_down = all_pods - min_available - new_unavailable;
        if max_scaled_down <= 0 {
            return Ok(false);
        }
        old.sort_by_key(created);
        // Unhealthy replicas first: they count against nothing.
        let mut cleaned = 0;
        for rs in old.iter_mut() {
            if cleaned >= max_scaled_down {
                break;
            }
            let (have, available) = (rs_replicas(rs), available_within_spec(rs));
            if have == 0 || have <= available {
                continue;
            }
            let n = (max_scaled_down - cleaned).min(have - available);
            self.scale(d, rs, have - n).await?;
            cleaned += n;
        }
        // Then available ones, as far as availability allows.
        let available: i32 =
            old.iter().map(available_within_spec).sum::<i32>() + available_within_spec(new);
        let mut scaled = 0;
        if available > min_available {
            let total = available - min_available;
            for rs in old.iter_mut() {
                if scaled >= total {
                    break;
                }
                let have = rs_replicas(rs);
                if have == 0 {
                    continue;
                }
                let n = have.min(total - scaled);
                self.scale(d, rs, have - n).await?;
                scaled += n;
            }
        }
        Ok(cleaned + scaled > 0)
    }

    async fn rollout_recreate(
        &self,
        d: &mut Deployment,
        sets: Vec<ReplicaSet>,
    ) -> Result<Action, super::Error> {
        let (mut new, mut old) = self.new_and_old(d, sets.clone(), false).await?;
        // Old sets to zero first.
        let mut scaled_down = false;
        for rs in old.iter_mut().filter(|rs| rs_replicas(rs) > 0) {
            scaled_down |= self.scale(d, rs, 0).await?;
        }
        let all: Vec<ReplicaSet> = old.iter().cloned().chain(new.clone()).collect();
        if scaled_down {
            return self.sync_rollout_status(d, &all, new.as_ref()).await;
        }
        // Then wait for their pods to be gone.
        if self.old_pods_running(new.as_ref(), &old) {
            return self.sync_rollout_status(d, &all, new.as_ref()).await;
        }
        if new.is_none() {
            let (n, o) = self.new_and_old(d, sets, true).await?;
            new = n;
            old = o;
        }
        if let Some(rs) = new.as_mut() {
            self.scale(d, rs, replicas(d)).await?;
        }
        if complete(d, d.status.as_ref().unwrap_or(&DeploymentStatus::default())) {
            self.cleanup(d, &old).await?;
        }
        let all: Vec<ReplicaSet> = old.iter().cloned().chain(new.clone()).collect();
        self.sync_rollout_status(d, &all, new.as_ref()).await
    }

    /// Whether any pod of the old sets is still there and not finished.
    fn old_pods_running(&self, new: Option<&ReplicaSet>, old: &[ReplicaSet]) -> bool {
        if old.iter().map(|rs| rs_status(rs).0).sum::<i32>() > 0 {
            return true;
        }
        let new_uid = new.and_then(|rs| rs.metadata.uid.clone());
        let old_uids: Vec<&str> = old
            .iter()
            .filter_map(|rs| rs.metadata.uid.as_deref())
            .collect();
        let ns = old
            .first()
            .and_then(|rs| rs.metadata.namespace.as_deref())
            .unwrap_or("");
        self.pods.by_index("namespace", ns).iter().any(|p| {
            pods::controller_ref(&p.metadata).is_some_and(|r| {
                Some(&r.uid) != new_uid.as_ref() && old_uids.contains(&r.uid.as_str())
            }) && !matches!(pods::phase(p), "Succeeded" | "Failed")
        })
    }
}

/// The new ReplicaSet's replicas for this step (upstream's NewRSNewReplicas).
fn new_rs_replicas(d: &Deployment, old: &[ReplicaSet], new: Option<&ReplicaSet>) -> i32 {
    let want = replicas(d);
    if is_recreate(d) {
        return want;
    }
    let new_now = new.map_or(0, rs_replicas);
    let current: i32 = old.iter().map(rs_replicas).sum::<i32>() + new_now;
    let max_total = want + max_surge(d);
    if current >= max_total {
        return new_now;
    }
    let up = (max_total - current).min(want - new_now);
    new_now + up.max(0)
}

/// Copies the Deployment's annotations and sets the revision annotations on `rs`; whether
/// anything changed (upstream's SetNewReplicaSetAnnotations).
fn set_new_rs_annotations(
    d: &Deployment,
    rs: &mut ReplicaSet,
    new_revision: &str,
    exists: bool,
) -> bool {
    let mut changed = false;
    for (k, v) in &d.metadata.annotations {
        if NOT_COPIED.contains(&k.as_str()) {
            continue;
        }
        if rs.metadata.annotations.get(k) != Some(v) {
            rs.metadata.annotations.insert(k.clone(), v.clone());
            changed = true;
        }
    }
    let old_revision = rs
        .metadata
        .annotations
        .get(REVISION)
        .cloned()
        .unwrap_or_default();
    let old_n: i64 = old_revision.parse().unwrap_or(0);
    let new_n: i64 = new_revision.parse().unwrap_or(0);
    if old_n < new_n {
        rs.metadata
            .annotations
            .insert(REVISION.into(), new_revision.to_owned());
        changed = true;
        if !old_revision.is_empty() {
            let history = match rs.metadata.annotations.get(REVISION_HISTORY) {
                Some(h) if !h.is_empty() => format!("{h},{old_revision}"),
                _ => old_revision,
            };
            rs.metadata
                .annotations
                .insert(REVISION_HISTORY.into(), history);
        }
    }
    if !exists {
        let max = replicas(d) + max_surge(d);
        let mut set = |k: &str, v: String| {
            if rs.metadata.annotations.get(k) != Some(&v) {
                rs.metadata.annotations.insert(k.into(), v);
                changed = true;
            }
        };
        set(DESIRED_REPLICAS, replicas(d).to_string());
        set(MAX_REPLICAS, max.to_string());
    }
    changed
}

/// When a rollout in progress should be looked at again for its deadline.
fn stuck_requeue(d: &Deployment, s: &DeploymentStatus, now: Time) -> Option<Duration> {
    let deadline = progress_deadline(d)?;
    if complete(d, s) {
        return None;
    }
    let c = condition(s, PROGRESSING)?;
    if timed_out(d, s, now) {
        return None;
    }
    let from = c.last_update_time?.unix_seconds();
    let after = from + i64::from(deadline) - now.unix_seconds();
    Some(Duration::from_secs(
        u64::try_from(after.max(1)).unwrap_or(1),
    ))
}

#[async_trait::async_trait]
impl Reconciler<Deployment> for Deployments {
    type Error = super::Error;

    async fn reconcile(&self, obj: Arc<Deployment>) -> Result<Action, Self::Error> {
        let mut d = (*obj).clone();
        let ns = d.metadata.namespace.clone().unwrap_or_default();
        let selector = d
            .spec
            .as_ref()
            .map(|s| s.selector.clone())
            .unwrap_or_default();
        if selector.match_labels.is_empty() && selector.match_expressions.is_empty() {
            self.event(
                &d,
                EventType::Warning,
                "SelectingAll",
                "This deployment is selecting all pods. A non-empty selector is required.".into(),
            );
            return Ok(Action::Done);
        }
        let selector = match selector.to_selector() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(deployment = ?d.metadata.name, error = %e, "invalid selector");
                return Ok(Action::Done);
            }
        };
        let owner = pods::owner_ref(&d, "Deployment", "apps/v1");
        let deleting = d.metadata.deletion_timestamp.is_some();
        let candidates = self.sets.by_index("namespace", &ns);
        let claimed = pods::claim(&self.client, &d, &owner, candidates, &selector, false).await?;
        let sets: Vec<ReplicaSet> = claimed.iter().map(|rs| (**rs).clone()).collect();
        if deleting {
            let (new, old) = self.new_and_old(&mut d, sets, false).await?;
            let all: Vec<ReplicaSet> = old.iter().cloned().chain(new.clone()).collect();
            let status = calculate_status(&all, new.as_ref(), &d);
            self.write_status(&mut d, status).await?;
            return Ok(Action::Done);
        }
        // Paused and resumed show in Progressing.
        if progress_deadline(&d).is_some() {
            let mut status = d.status.clone().unwrap_or_default();
            let reason = condition(&status, PROGRESSING).and_then(|c| c.reason.clone());
            if paused(&d) && reason.as_deref() != Some("DeploymentPaused") {
                set_condition(
                    &mut status,
                    new_condition(
                        PROGRESSING,
                        "Unknown",
                        "DeploymentPaused",
                        "Deployment is paused".into(),
                    ),
                );
                self.write_status(&mut d, status).await?;
            } else if !paused(&d) && reason.as_deref() == Some("DeploymentPaused") {
                set_condition(
                    &mut status,
                    new_condition(
                        PROGRESSING,
                        "Unknown",
                        "DeploymentResumed",
                        "Deployment is resumed".into(),
                    ),
                );
                self.write_status(&mut d, status).await?;
            }
        }
        if paused(&d) {
            return self.sync_scale(&mut d, sets).await;
        }
        // A change of replicas alone is a scaling event, not a rollout step.
        let (new, old) = self.new_and_old(&mut d, sets.clone(), false).await?;
        let scaling = old
            .iter()
            .chain(new.as_ref())
            .filter(|rs| rs_replicas(rs) > 0)
            .any(|rs| annotation_i32(rs, DESIRED_REPLICAS).is_some_and(|v| v != replicas(&d)));
        if scaling {
            return self.sync_scale(&mut d, sets).await;
        }
        // The sets may have changed (annotations): read them again from what was written.
        let sets: Vec<ReplicaSet> = old.into_iter().chain(new).collect();
        if is_recreate(&d) {
            self.rollout_recreate(&mut d, sets).await
        } else {
            self.rollout_rolling(&mut d, sets).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(
        replicas: i32,
        surge: serde_json::Value,
        unavailable: serde_json::Value,
    ) -> Deployment {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "d"},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"a": "b"}},
                "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": []}},
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable}}}
        }))
        .unwrap_or_default()
    }

    #[test]
    fn fenceposts_round_like_upstream() {
        let p = |s: &str| IntOrString::String(s.into());
        assert_eq!(fenceposts(Some(&p("25%")), Some(&p("25%")), 10), (3, 2));
        assert_eq!(fenceposts(Some(&p("0%")), Some(&p("0%")), 10), (0, 1));
        assert_eq!(
            fenceposts(Some(&IntOrString::Int(2)), Some(&IntOrString::Int(0)), 3),
            (2, 0)
        );
        assert_eq!(fenceposts(None, None, 1), (1, 0));
        let d = deployment(3, "25%".into(), "100%".into());
        assert_eq!(max_unavailable(&d), 3);
    }

    #[test]
    fn the_new_set_grows_within_max_surge() {
        let d = deployment(10, 3.into(), 2.into());
        let rs = |n: i32| ReplicaSet {
            spec: Some(bosun_api_types::apps::v1::ReplicaSetSpec {
                replicas: Some(n),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(new_rs_replicas(&d, &[rs(10)], None), 3);
        assert_eq!(new_rs_replicas(&d, &[rs(8)], Some(&rs(3))), 5);
        assert_eq!(new_rs_replicas(&d, &[rs(10)], Some(&rs(3))), 3);
    }

    #[test]
    fn template_hashes_are_stable_and_differ() {
        let a = template(&deployment(1, 1.into(), 1.into()));
        let mut b = a.clone();
        b.metadata
            .get_or_insert_with(Default::default)
            .labels
            .insert("x".into(), "y".into());
        assert_eq!(template_hash(&a, None), template_hash(&a, None));
        assert_ne!(template_hash(&a, None), template_hash(&b, None));
        assert_ne!(template_hash(&a, None), template_hash(&a, Some(1)));
        assert!(template_hash(&a, None)
            .bytes()
            .all(|c| b"bcdfghjklmnpqrstvwxz2456789".contains(&c)));
        let mut hashed = a.clone();
        hashed
            .metadata
            .get_or_insert_with(Default::default)
            .labels
            .insert(POD_TEMPLATE_HASH.into(), "abc".into());
        assert!(equal_ignoring_hash(&a, &hashed));
        assert!(!equal_ignoring_hash(&a, &b));
    }
}
