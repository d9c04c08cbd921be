//! What the workload controllers share: pod states, controller references, adoption, pods from
//! templates, and expectations (so a lagging cache never causes double creation).

use crate::workqueue::WorkQueue;
use bosun_api_types::core::v1::{Pod, PodTemplateSpec};
use bosun_api_types::meta::v1::{ObjectMeta, OwnerReference};
use bosun_api_types::selector::Selector;
use bosun_api_types::{Resource, Time};
use bosun_client::informer::{Informer, Notification};
use bosun_client::reflector::Key;
use bosun_client::{Api, Client, Patch, PatchParams};
use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The controller reference (`controller: true`) among `meta`'s owners.
pub fn controller_ref(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .iter()
        .find(|r| r.controller == Some(true))
}

/// A controller reference to `owner`, as the workload controllers set it.
pub fn owner_ref<K: Resource>(owner: &K, kind: &str, api_version: &str) -> OwnerReference {
    let meta = owner.metadata();
    OwnerReference {
        api_version: api_version.into(),
        kind: kind.into(),
        name: meta.name.clone().unwrap_or_default(),
        uid: meta.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// Not finished (Succeeded or Failed) and not being deleted.
pub fn is_active(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    pod.metadata.deletion_timestamp.is_none() && !matches!(phase, Some("Succeeded" | "Failed"))
}

/// The pod's phase, `Pending` when it has none yet.
pub fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

/// Since when the pod's Ready condition has been True (`None`: not ready).
pub fn ready_since(pod: &Pod) -> Option<Time> {
    let c = pod
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.r#type == "Ready")?;
    (c.status == "True").then(|| {
        c.last_transition_time
            .unwrap_or_else(|| Time::from_unix(0, 0))
    })
}

/// Whether the pod's Ready condition is True.
pub fn is_ready(pod: &Pod) -> bool {
    ready_since(pod).is_some()
}

/// Ready for at least `min_ready_seconds` at `now`.
pub fn is_available(pod: &Pod, min_ready_seconds: i32, now: Time) -> bool {
    match ready_since(pod) {
        None => false,
        Some(_) if min_ready_seconds <= 0 => true,
        Some(t) => t.unix_seconds() + i64::from(min_ready_seconds) <= now.unix_seconds(),
    }
}

/// A pod made from `template`, named `<prefix>-<random>` by the server, controlled by `owner`.
pub fn from_template(template: &PodTemplateSpec, prefix: &str, owner: OwnerReference) -> Pod {
    let meta = template.metadata.clone().unwrap_or_default();
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{prefix}-")),
            labels: meta.labels,
            annotations: meta.annotations,
            finalizers: meta.finalizers,
            owner_references: vec![owner],
            ..Default::default()
        },
        spec: template.spec.clone(),
        ..Default::default()
    }
}

/// The objects of `candidates` (pods, or ReplicaSets of a Deployment) that `owner` controls
/// once orphans matching `selector` are adopted and objects it controls that no longer match
/// are released (upstream's ControllerRefManager). Nothing is adopted or released while the
/// owner is being deleted or `frozen` (a finished Job); before adopting, the owner is read
/// fresh from the server, so a deleted owner never adopts.
pub async fn claim<O, K>(
    client: &Client,
    owner: &O,
    owner_ref: &OwnerReference,
    candidates: Vec<std::sync::Arc<K>>,
    selector: &Selector,
    frozen: bool,
) -> bosun_client::Result<Vec<std::sync::Arc<K>>>
where
    O: Resource,
    K: Resource,
{
    let meta = owner.metadata();
    let ns = meta.namespace.clone().unwrap_or_default();
    let owner_deleting = frozen || meta.deletion_timestamp.is_some();
    let api: Api<K> = Api::namespaced(client.clone(), &ns);
    let owners: Api<O> = Api::namespaced(client.clone(), &ns);
    let name = meta.name.clone().unwrap_or_default();
    let owner = owner_ref;
    let can_adopt = || async {
        Ok::<_, bosun_client::Error>(owners.get_opt(&name).await?.is_some_and(|o| {
            o.metadata().uid.as_deref() == Some(owner.uid.as_str())
                && o.metadata().deletion_timestamp.is_none()
        }))
    };
    let mut claimed = Vec::new();
    let mut adoptable = Vec::new();
    for obj in candidates {
        let meta = obj.metadata();
        let matches = selector.matches(&meta.labels);
        match controller_ref(meta) {
            Some(r) if r.uid == owner.uid => {
                if matches || owner_deleting {
                    claimed.push(obj);
                } else {
                    let refs: Vec<&OwnerReference> = meta
                        .owner_references
                        .iter()
                        .filter(|r| r.uid != owner.uid)
                        .collect();
                    set_owners(&api, meta, &refs).await?;
                }
            }
            Some(_) => {}
            None if matches && !owner_deleting && meta.deletion_timestamp.is_none() => {
                adoptable.push(obj);
            }
            None => {}
        }
    }
    if adoptable.is_empty() || !can_adopt().await? {
        return Ok(claimed);
    }
    for obj in adoptable {
        let mut refs = obj.metadata().owner_references.clone();
        refs.push(owner.clone());
        if let Some(adopted) = set_owners(&api, obj.metadata(), &refs).await? {
            claimed.push(std::sync::Arc::new(adopted));
        }
    }
    Ok(claimed)
}

/// Sets an object's owner references to `refs` if its uid and owner references are still what
/// the cache said (a JSON patch with tests, so only a change of ownership, never a status
/// update, makes it fail). `None`: gone or changed meanwhile (the next sync sees it as it is).
async fn set_owners<K: Resource, R: serde::Serialize>(
    api: &Api<K>,
    meta: &ObjectMeta,
    refs: &[R],
) -> bosun_client::Result<Option<K>> {
    let current = &meta.owner_references;
    let mut ops = vec![json!({"op": "test", "path": "/metadata/uid", "value": meta.uid})];
    if !current.is_empty() {
        ops.push(json!({"op": "test", "path": "/metadata/ownerReferences", "value": current}));
    }
    ops.push(json!({"op": "add", "path": "/metadata/ownerReferences", "value": refs}));
    let name = meta.name.as_deref().unwrap_or_default();
    match api
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Json(serde_json::Value::Array(ops)),
        )
        .await
    {
        Ok(o) => Ok(Some(o)),
        Err(e) if e.is_not_found() || e.is_conflict() || e.code() == Some(422) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Feeds a controller's queue and expectations from the pod informer: a pod maps to its
/// controller (`owner_of`, lowering its expectations as creations and deletions are seen), an
/// orphan whose labels change to the owners `orphan_keys` names (candidate adopters). Runs
/// until the queue shuts down.
pub fn track_owned(
    pods: &Informer<Pod>,
    expectations: Arc<Expectations>,
    queue: WorkQueue<Key>,
    owner_of: impl Fn(&Pod) -> Option<Key> + Send + 'static,
    orphan_keys: impl Fn(&Pod) -> Vec<Key> + Send + 'static,
) {
    let mut rx = pods.subscribe();
    let exp = expectations;
    tokio::spawn(async move {
        loop {
            let n = match rx.recv().await {
                Ok(n) => n,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            };
            let mut keys = Vec::new();
            match &n {
                Notification::Added(pod) => {
                    if let Some(k) = owner_of(pod) {
                        if pod.metadata.deletion_timestamp.is_some() {
                            exp.deletion_observed(&k, &pod_key(pod));
                        } else {
                            exp.creation_observed(&k);
                        }
                        keys.push(k);
                    } else {
                        keys.extend(orphan_keys(pod));
                    }
                }
                Notification::Updated(old, new) => {
                    let (ok, nk) = (owner_of(old), owner_of(new));
                    if let Some(k) = &nk {
                        if new.metadata.deletion_timestamp.is_some()
                            && old.metadata.deletion_timestamp.is_none()
                        {
                            exp.deletion_observed(k, &pod_key(new));
                        }
                    }
                    if ok != nk {
                        keys.extend(ok);
                    }
                    match nk {
                        Some(k) => keys.push(k),
                        None => {
                            if old.metadata.labels != new.metadata.labels
                                || old.metadata.owner_references != new.metadata.owner_references
                            {
                                keys.extend(orphan_keys(new));
                            }
                        }
                    }
                }
                Notification::Deleted(pod) => {
                    if let Some(k) = owner_of(pod) {
                        exp.deletion_observed(&k, &pod_key(pod));
                        keys.push(k);
                    }
                }
            }
            for k in keys {
                queue.add(k);
            }
            if queue.is_shutting_down() {
                return;
            }
        }
    });
}

/// How long expectations are waited for before a controller acts anyway (a watch event lost
/// for good must not wedge it).
const EXPECTATIONS_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Debug)]
struct Expected {
    adds: i64,
    deletes: HashSet<String>,
    at: Instant,
}

/// Creations and deletions a controller has asked for and not yet seen in its cache, per
/// controller key (upstream's UIDTrackingControllerExpectations). A controller that has
/// outstanding expectations does not create or delete again.
#[derive(Debug, Default)]
pub struct Expectations {
    inner: Mutex<HashMap<Key, Expected>>,
}

impl Expectations {
    fn with<T>(&self, f: impl FnOnce(&mut HashMap<Key, Expected>) -> T) -> T {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut g)
    }

    /// Whether `key` may act: nothing outstanding, or waited too long.
    pub fn satisfied(&self, key: &Key) -> bool {
        self.with(|m| match m.get(key) {
            None => true,
            Some(e) => {
                (e.adds <= 0 && e.deletes.is_empty()) || e.at.elapsed() > EXPECTATIONS_TIMEOUT
            }
        })
    }

    /// `key` is about to create `n` pods.
    pub fn expect_creations(&self, key: &Key, n: usize) {
        self.with(|m| {
            m.insert(
                key.clone(),
                Expected {
                    adds: i64::try_from(n).unwrap_or(i64::MAX),
                    deletes: HashSet::new(),
                    at: Instant::now(),
                },
            );
        });
    }

    /// `key` is about to delete these pods (by pod key).
    pub fn expect_deletions(&self, key: &Key, pods: impl IntoIterator<Item = String>) {
        self.with(|m| {
            m.insert(
                key.clone(),
                Expected {
                    adds: 0,
                    deletes: pods.into_iter().collect(),
                    at: Instant::now(),
                },
            );
        });
    }

    /// A creation of `key` was seen (or failed, or was skipped).
    pub fn creation_observed(&self, key: &Key) {
        self.with(|m| {
            if let Some(e) = m.get_mut(key) {
                e.adds -= 1;
            }
        });
    }

    /// The deletion of pod `pod` of `key` was seen (or failed).
    pub fn deletion_observed(&self, key: &Key, pod: &str) {
        self.with(|m| {
            if let Some(e) = m.get_mut(key) {
                e.deletes.remove(pod);
            }
        });
    }

    /// Forgets `key` (its object is gone).
    pub fn forget(&self, key: &Key) {
        self.with(|m| {
            m.remove(key);
        });
    }
}

/// Records an event about `obj` without holding up the caller (as client-go's broadcaster
/// does); a failure to record is only logged.
pub fn emit<K: Resource>(
    recorder: &Arc<bosun_client::events::Recorder>,
    obj: &K,
    event_type: bosun_client::events::EventType,
    reason: &str,
    note: String,
) {
    let (recorder, regarding) = (
        Arc::clone(recorder),
        bosun_client::events::Recorder::reference_to(obj),
    );
    let reason = reason.to_owned();
    tokio::spawn(async move {
        if let Err(e) = recorder
            .publish(&regarding, event_type, &reason, &reason, &note)
            .await
        {
            tracing::debug!(error = %e, "event not recorded");
        }
    });
}

/// `namespace/name` of a pod, as expectations track deletions.
pub fn pod_key(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expectations_hold_until_observed() {
        let e = Expectations::default();
        let k = Key::namespaced("ns", "rs");
        assert!(e.satisfied(&k));
        e.expect_creations(&k, 2);
        assert!(!e.satisfied(&k));
        e.creation_observed(&k);
        assert!(!e.satisfied(&k));
        e.creation_observed(&k);
        assert!(e.satisfied(&k));
        e.expect_deletions(&k, ["ns/a".to_string(), "ns/b".to_string()]);
        e.deletion_observed(&k, "ns/a");
        e.deletion_observed(&k, "ns/a");
        assert!(!e.satisfied(&k));
        e.deletion_observed(&k, "ns/b");
        assert!(e.satisfied(&k));
    }

    #[test]
    fn availability_needs_min_ready_seconds() {
        let mut pod = Pod::default();
        assert!(!is_ready(&pod));
        pod.status = Some(bosun_api_types::core::v1::PodStatus {
            conditions: vec![bosun_api_types::core::v1::PodCondition {
                r#type: "Ready".into(),
                status: "True".into(),
                last_transition_time: Some(Time::from_unix(100, 0)),
                ..Default::default()
            }],
            ..Default::default()
        });
        assert!(is_available(&pod, 0, Time::from_unix(100, 0)));
        assert!(!is_available(&pod, 10, Time::from_unix(105, 0)));
        assert!(is_available(&pod, 10, Time::from_unix(110, 0)));
    }
}
