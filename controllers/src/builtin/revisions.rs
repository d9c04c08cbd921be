//! ControllerRevisions of StatefulSets and DaemonSets: each pod template a workload has had,
//! numbered, as `kubectl rollout history/undo` read them.

use super::pods;
use bosun_api_types::apps::v1::ControllerRevision;
use bosun_api_types::core::v1::PodTemplateSpec;
use bosun_api_types::{RawExtension, Resource};
use bosun_client::reflector::Store;
use bosun_client::{Api, Client, PostParams};
use std::sync::Arc;

/// A revision's data: the template, replacing the owner's on a strategic merge patch (what
/// `kubectl rollout undo` applies).
pub fn data(template: &PodTemplateSpec) -> serde_json::Value {
    let mut t = serde_json::to_value(template).unwrap_or_default();
    if let Some(o) = t.as_object_mut() {
        o.insert("$patch".into(), "replace".into());
    }
    serde_json::json!({"spec": {"template": t}})
}

/// FNV-1a of the data (and collision count) in upstream's alphabet.
pub fn hash(data: &serde_json::Value, collision: Option<i32>) -> String {
    hash_bytes(&serde_json::to_vec(data).unwrap_or_default(), collision)
}

/// FNV-1a of `bytes` (then the collision count's little-endian bytes), written as upstream's
/// `SafeEncodeString` of the decimal value (no vowels, no look-alike characters).
pub fn hash_bytes(bytes: &[u8], collision: Option<i32>) -> String {
    let mut h: u32 = 0x811c_9dc5;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            h ^= u32::from(*b);
            h = h.wrapping_mul(0x0100_0193);
        }
    };
    feed(bytes);
    if let Some(c) = collision {
        feed(&c.to_le_bytes());
    }
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    h.to_string()
        .bytes()
        .map(|b| char::from(ALPHABET[usize::from(b) % ALPHABET.len()]))
        .collect()
}

/// The template recorded in `rev`.
pub fn template_of(rev: &ControllerRevision) -> Option<PodTemplateSpec> {
    let mut t = rev.data.as_ref()?.0.get("spec")?.get("template")?.clone();
    if let Some(o) = t.as_object_mut() {
        o.remove("$patch");
    }
    serde_json::from_value(t).ok()
}

/// The owner's revisions (oldest first) and the one for `template`: made when new, renumbered
/// as the newest when an older template comes back (a rollback).
pub async fn sync<K: Resource>(
    client: &Client,
    store: &Store<ControllerRevision>,
    owner: &K,
    kind: &str,
    template: &PodTemplateSpec,
    collision: Option<i32>,
    labels: std::collections::BTreeMap<String, String>,
) -> bosun_client::Result<(ControllerRevision, Vec<Arc<ControllerRevision>>)> {
    let meta = owner.metadata();
    let ns = meta.namespace.clone().unwrap_or_default();
    let name = meta.name.clone().unwrap_or_default();
    let uid = meta.uid.clone().unwrap_or_default();
    let mut owned: Vec<Arc<ControllerRevision>> = store
        .by_index("namespace", &ns)
        .into_iter()
        .filter(|r| pods::controller_ref(&r.metadata).is_some_and(|o| o.uid == uid))
        .collect();
    owned.sort_by_key(|r| r.revision);
    let api: Api<ControllerRevision> = Api::namespaced(client.clone(), &ns);
    let data = data(template);
    let max = owned.last().map_or(0, |r| r.revision);
    let existing = owned
        .iter()
        .find(|r| r.data.as_ref().map(|d| &d.0) == Some(&data))
        .cloned();
    let update = match existing {
        Some(r) if r.revision == max => (*r).clone(),
        Some(r) => {
            let mut bumped = (*r).clone();
            bumped.revision = max + 1;
            api.replace(
                r.metadata.name.as_deref().unwrap_or_default(),
                &PostParams::default(),
                &bumped,
            )
            .await?
        }
        None => {
            let h = hash(&data, collision);
            let mut rev = ControllerRevision {
                data: Some(RawExtension(data)),
                revision: max + 1,
                ..Default::default()
            };
            rev.metadata.name = Some(format!("{name}-{h}"));
            rev.metadata.labels = labels;
            rev.metadata
                .labels
                .insert("controller.kubernetes.io/hash".into(), h);
            rev.metadata.owner_references = vec![pods::owner_ref(owner, kind, "apps/v1")];
            match api.create(&PostParams::default(), &rev).await {
                Ok(r) => r,
                Err(e) if e.code() == Some(409) => {
                    api.get(rev.metadata.name.as_deref().unwrap_or_default())
                        .await?
                }
                Err(e) => return Err(e),
            }
        }
    };
    Ok((update, owned))
}

/// Deletes the oldest of `owned` beyond `limit` that are not in `live` (revisions a pod or the
/// owner's status still names).
pub async fn prune(
    client: &Client,
    namespace: &str,
    owned: &[Arc<ControllerRevision>],
    live: &[String],
    limit: Option<i32>,
) {
    let limit = usize::try_from(limit.unwrap_or(10).max(0)).unwrap_or(10);
    let history: Vec<&Arc<ControllerRevision>> = owned
        .iter()
        .filter(|r| r.metadata.name.as_ref().is_none_or(|n| !live.contains(n)))
        .collect();
    if history.len() <= limit {
        return;
    }
    let api: Api<ControllerRevision> = Api::namespaced(client.clone(), namespace);
    for r in &history[..history.len() - limit] {
        let name = r.metadata.name.as_deref().unwrap_or_default();
        if let Err(e) = api
            .delete(name, &bosun_client::DeleteParams::default())
            .await
        {
            tracing::debug!(revision = name, error = %e, "pruning a revision");
        }
    }
}
