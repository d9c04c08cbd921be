//! The garbage collector on the `ownerReferences` graph, with upstream's three propagation
//! policies:
//!
//! - **background**: an object whose owners are all gone is deleted, whether they went before or
//!   after it was made (a dangling owner is one that does not exist, or exists with another uid);
//! - **foreground**: an owner deleted with `propagationPolicy=Foreground` carries the
//!   `foregroundDeletion` finalizer; its dependents are deleted (foreground themselves when they
//!   have dependents), and the finalizer comes off once no dependent with
//!   `blockOwnerDeletion: true` is left;
//! - **orphan**: an owner deleted with `propagationPolicy=Orphan` carries the `orphan`
//!   finalizer; its dependents lose their reference to it, then the finalizer comes off.
//!
//! It keeps a dynamic informer per served resource with indexes by uid and by owner uid. An
//! owner's deletion queues its dependents, a dependent's deletion queues its owners (one may be
//! waiting for it), and every new or changed object with owners or a collector finalizer is
//! queued. An owner missing from the cache is looked up live before anything is deleted on its
//! account, so a lagging cache never deletes an object whose owner exists; deletes are
//! conditional on the dependent's uid, and reference and finalizer removals on its
//! resourceVersion.

use crate::workqueue::WorkQueue;
use bosun_api_types::meta::v1::OwnerReference;
use bosun_api_types::DynamicObject;
use bosun_client::discovery::{ApiResource, Discovery};
use bosun_client::informer::{InformerFactory, Notification};
use bosun_client::reflector::{Key, Store};
use bosun_client::{Api, Client, DeleteParams, Patch, PatchParams};
use serde_json::json;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};

const OWNERS: &str = "owner-uid";
const UID: &str = "uid";
/// The finalizer that has the collector orphan an object's dependents.
pub const ORPHAN: &str = "orphan";
/// The finalizer that has the collector delete an object's dependents before it.
pub const FOREGROUND: &str = "foregroundDeletion";
/// How many owner uids known to be gone are remembered (so many dependents of one deleted owner
/// cost one lookup).
const ABSENT_OWNERS: usize = 4096;

/// What an owner reference points at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum OwnerState {
    /// Exists and is not deleting its dependents.
    Solid,
    /// Exists, being deleted in the foreground: it waits for its dependents.
    Waiting,
    /// Does not exist (or exists with another uid).
    Dangling,
}

/// Runs the garbage collector until `queue` is shut down.
pub struct GarbageCollector {
    client: Client,
    resources: Vec<(ApiResource, Store<DynamicObject>)>,
    queue: WorkQueue<(usize, Key)>,
    absent: Mutex<HashSet<String>>,
}

/// Whether `o` is being deleted and still carries `finalizer`.
fn deleting_with(o: &DynamicObject, finalizer: &str) -> bool {
    o.metadata.deletion_timestamp.is_some() && o.metadata.finalizers.iter().any(|f| f == finalizer)
}

impl GarbageCollector {
    /// Discovers the served resources and starts an informer for each on `factory`.
    pub async fn new(client: Client, factory: &InformerFactory) -> bosun_client::Result<Self> {
        let discovery = Discovery::run(&client).await?;
        let queue = WorkQueue::new();
        let mut informers = Vec::new();
        for r in discovery.resources {
            // Only what can hold dependents and be collected.
            if !(r.supports("list") && r.supports("watch") && r.supports("delete")) {
                continue;
            }
            // One informer per resource (several versions of a group share storage).
            if informers
                .iter()
                .any(|(x, _): &(ApiResource, _)| x.group == r.group && x.plural == r.plural)
            {
                continue;
            }
            let informer = factory.dynamic(&r, None);
            let store = informer.store();
            store.add_index(OWNERS, |o: &DynamicObject| {
                o.metadata
                    .owner_references
                    .iter()
                    .map(|r| r.uid.clone())
                    .collect()
            });
            store.add_index(UID, |o: &DynamicObject| {
                o.metadata.uid.iter().cloned().collect()
            });
            informers.push((r, informer));
        }
        let stores: Arc<Vec<Store<DynamicObject>>> =
            Arc::new(informers.iter().map(|(_, i)| i.store()).collect());
        for (index, (_, informer)) in informers.iter().enumerate() {
            let mut rx = informer.subscribe();
            let (q, stores) = (queue.clone(), Arc::clone(&stores));
            tokio::spawn(async move {
                while let Ok(n) = rx.recv().await {
                    match &n {
                        // A new or changed dependent (its owners may be gone already), or an
                        // owner deleted with a propagation policy.
                        Notification::Added(o) | Notification::Updated(_, o) => {
                            if !o.metadata.owner_references.is_empty()
                                || deleting_with(o, ORPHAN)
                                || deleting_with(o, FOREGROUND)
                            {
                                q.add((index, Key::of(&**o)));
                            }
                        }
                        Notification::Deleted(o) => {
                            // Its dependents lost an owner.
                            if let Some(uid) = &o.metadata.uid {
                                for (i, d) in by_index(&stores, OWNERS, uid) {
                                    q.add((i, Key::of(&*d)));
                                }
                            }
                            // Its owners may be waiting for it.
                            for r in &o.metadata.owner_references {
                                for (i, owner) in by_index(&stores, UID, &r.uid) {
                                    q.add((i, Key::of(&*owner)));
                                }
                            }
                        }
                    }
                    if q.is_shutting_down() {
                        return;
                    }
                }
            });
        }
        Ok(GarbageCollector {
            client,
            resources: informers.into_iter().map(|(r, i)| (r, i.store())).collect(),
            queue,
            absent: Mutex::new(HashSet::new()),
        })
    }

    /// The collector's queue (shut it down to stop).
    pub fn queue(&self) -> WorkQueue<(usize, Key)> {
        self.queue.clone()
    }

    fn stores(&self) -> impl Iterator<Item = &Store<DynamicObject>> {
        self.resources.iter().map(|(_, s)| s)
    }

    fn api(&self, res: &ApiResource, namespace: &str) -> Api<DynamicObject> {
        if res.namespaced {
            Api::namespaced_with(self.client.clone(), namespace, res)
        } else {
            Api::all_with(self.client.clone(), res)
        }
    }

    /// The state of the owner `r` of a dependent in `namespace`: from the cache when it is
    /// there, else asked of the server.
    async fn owner_state(
        &self,
        r: &OwnerReference,
        namespace: &str,
    ) -> bosun_client::Result<OwnerState> {
        let state = |o: &DynamicObject| {
            if deleting_with(o, FOREGROUND) {
                OwnerState::Waiting
            } else {
                OwnerState::Solid
            }
        };
        for store in self.stores() {
            if let Some(o) = store.by_index(UID, &r.uid).first() {
                return Ok(state(o));
            }
        }
        if self
            .absent
            .lock()
            .map(|a| a.contains(&r.uid))
            .unwrap_or(false)
        {
            return Ok(OwnerState::Dangling);
        }
        let group = r.api_version.split_once('/').map_or("", |(g, _)| g);
        let Some((res, _)) = self
            .resources
            .iter()
            .find(|(x, _)| x.group == group && x.kind == r.kind)
        else {
            // A kind this collector does not know (a CRD made after it started, say): never
            // collect on a guess.
            tracing::debug!(kind = %r.kind, api_version = %r.api_version, "owner of an unknown kind; keeping the dependent");
            return Ok(OwnerState::Solid);
        };
        match self.api(res, namespace).get_opt(&r.name).await? {
            Some(o) if o.metadata.uid.as_deref() == Some(r.uid.as_str()) => Ok(state(&o)),
            _ => {
                if let Ok(mut absent) = self.absent.lock() {
                    if absent.len() >= ABSENT_OWNERS {
                        absent.clear();
                    }
                    absent.insert(r.uid.clone());
                }
                Ok(OwnerState::Dangling)
            }
        }
    }

    /// Whether `obj` has a live owner, which owners are gone or waiting for their dependents
    /// (by uid), and whether any owner is waiting.
    async fn classify(
        &self,
        obj: &DynamicObject,
        namespace: &str,
    ) -> bosun_client::Result<(bool, Vec<String>, bool)> {
        let mut solid = false;
        let mut gone = Vec::new();
        let mut waiting = false;
        for owner in &obj.metadata.owner_references {
            match self.owner_state(owner, namespace).await? {
                OwnerState::Solid => solid = true,
                OwnerState::Waiting => {
                    waiting = true;
                    gone.push(owner.uid.clone());
                }
                OwnerState::Dangling => gone.push(owner.uid.clone()),
            }
        }
        Ok((solid, gone, waiting))
    }

    /// Processes queued objects until the queue shuts down.
    pub async fn run(self) {
        for (_, store) in &self.resources {
            store.wait_until_ready().await;
        }
        // Everything with owners or a collector finalizer is looked at once at start.
        for (i, (_, store)) in self.resources.iter().enumerate() {
            for o in store.list() {
                if !o.metadata.owner_references.is_empty()
                    || deleting_with(&o, ORPHAN)
                    || deleting_with(&o, FOREGROUND)
                {
                    self.queue.add((i, Key::of(&*o)));
                }
            }
        }
        let this = Arc::new(self);
        while let Some(item) = this.queue.get().await {
            if let Err(e) = this.process(&item).await {
                tracing::warn!(key = %item.1, error = %e, "garbage collection failed");
                this.queue.add_rate_limited(item.clone());
            } else {
                this.queue.forget(&item);
            }
            this.queue.done(&item);
        }
    }

    async fn process(&self, (index, key): &(usize, Key)) -> bosun_client::Result<()> {
        let (res, store) = &self.resources[*index];
        let Some(obj) = store.get(key) else {
            return Ok(());
        };
        let api = self.api(res, &key.namespace);
        if obj.metadata.deletion_timestamp.is_some() {
            if deleting_with(&obj, ORPHAN) {
                return self.orphan_dependents(&api, &obj).await;
            }
            if deleting_with(&obj, FOREGROUND) {
                return self.delete_dependents_first(&api, &obj).await;
            }
            return Ok(());
        }
        if obj.metadata.owner_references.is_empty() {
            return Ok(());
        }
        let (mut solid, mut gone, mut waiting) = self.classify(&obj, &key.namespace).await?;
        if !solid {
            // About to act: on the object as it is now, not as the cache last saw it (its
            // references may have just been removed by an orphaning owner, say).
            let Some(latest) = api.get_opt(&key.name).await? else {
                return Ok(());
            };
            if latest.metadata.uid != obj.metadata.uid
                || latest.metadata.deletion_timestamp.is_some()
                || latest.metadata.owner_references.is_empty()
            {
                return Ok(());
            }
            (solid, gone, waiting) = self.classify(&latest, &key.namespace).await?;
            if latest.metadata.owner_references != obj.metadata.owner_references {
                // Changed since: the cache will bring the change, and this object again.
                return Ok(());
            }
        }
        if solid {
            // Kept for its live owner; the references to owners that are gone or deleting
            // their dependents are dropped.
            if gone.is_empty() {
                return Ok(());
            }
            let refs: Vec<&OwnerReference> = obj
                .metadata
                .owner_references
                .iter()
                .filter(|r| !gone.contains(&r.uid))
                .collect();
            return self
                .patch_meta(&api, &obj, json!({"ownerReferences": refs}))
                .await;
        }
        let has_dependents = obj
            .metadata
            .uid
            .as_deref()
            .is_some_and(|uid| !by_index_refs(self.stores(), OWNERS, uid).is_empty());
        let policy = if waiting && has_dependents {
            // An owner waits for this object, which has dependents of its own: they go first.
            "Foreground"
        } else if obj.metadata.finalizers.iter().any(|f| f == ORPHAN) {
            "Orphan"
        } else if obj.metadata.finalizers.iter().any(|f| f == FOREGROUND) {
            "Foreground"
        } else {
            "Background"
        };
        let params = DeleteParams {
            propagation_policy: Some(policy.into()),
            precondition_uid: obj.metadata.uid.clone(),
            ..Default::default()
        };
        match api.delete(&key.name, &params).await {
            Ok(_) => {
                tracing::debug!(%key, resource = %res.plural, policy, "collected an object whose owners are gone");
                Ok(())
            }
            Err(e) if e.is_not_found() || e.is_conflict() => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// An owner deleted with `Orphan`: its dependents drop their reference to it, then its
    /// `orphan` finalizer comes off.
    async fn orphan_dependents(
        &self,
        api: &Api<DynamicObject>,
        owner: &DynamicObject,
    ) -> bosun_client::Result<()> {
        let uid = owner.metadata.uid.clone().unwrap_or_default();
        for (i, d) in by_index_refs(self.stores(), OWNERS, &uid) {
            let (res, _) = &self.resources[i];
            let dapi = self.api(res, d.metadata.namespace.as_deref().unwrap_or(""));
            let refs: Vec<&OwnerReference> = d
                .metadata
                .owner_references
                .iter()
                .filter(|r| r.uid != uid)
                .collect();
            match self
                .patch_meta(&dapi, &d, json!({"ownerReferences": refs}))
                .await
            {
                Ok(()) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e),
            }
        }
        self.remove_finalizer(api, owner, ORPHAN).await
    }

    /// An owner deleted with `Foreground`: its dependents are queued (they find their owner
    /// waiting and delete themselves); once no blocking dependent is left its
    /// `foregroundDeletion` finalizer comes off. A dependent's deletion queues the owner again.
    async fn delete_dependents_first(
        &self,
        api: &Api<DynamicObject>,
        owner: &DynamicObject,
    ) -> bosun_client::Result<()> {
        let uid = owner.metadata.uid.clone().unwrap_or_default();
        let dependents = by_index_refs(self.stores(), OWNERS, &uid);
        let mut blocking = 0;
        for (i, d) in &dependents {
            if d.metadata
                .owner_references
                .iter()
                .any(|r| r.uid == uid && r.block_owner_deletion == Some(true))
            {
                blocking += 1;
            }
            if d.metadata.deletion_timestamp.is_none() {
                self.queue.add((*i, Key::of(&**d)));
            }
        }
        if blocking == 0 {
            self.remove_finalizer(api, owner, FOREGROUND).await
        } else {
            tracing::debug!(name = ?owner.metadata.name, blocking, "waiting for dependents");
            Ok(())
        }
    }

    async fn remove_finalizer(
        &self,
        api: &Api<DynamicObject>,
        obj: &DynamicObject,
        finalizer: &str,
    ) -> bosun_client::Result<()> {
        let rest: Vec<&String> = obj
            .metadata
            .finalizers
            .iter()
            .filter(|f| *f != finalizer)
            .collect();
        match self.patch_meta(api, obj, json!({"finalizers": rest})).await {
            Err(e) if e.is_not_found() => Ok(()),
            other => other,
        }
    }

    /// A merge patch of `obj`'s metadata, conditional on its resourceVersion (a conflict comes
    /// back as an error and the item is retried with the newer object).
    async fn patch_meta(
        &self,
        api: &Api<DynamicObject>,
        obj: &DynamicObject,
        mut meta: serde_json::Value,
    ) -> bosun_client::Result<()> {
        if let (Some(m), Some(rv)) = (meta.as_object_mut(), &obj.metadata.resource_version) {
            m.insert("resourceVersion".into(), json!(rv));
        }
        let name = obj.metadata.name.as_deref().unwrap_or_default();
        api.patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": meta})),
        )
        .await
        .map(|_| ())
    }
}

/// The objects of every store whose index `index` holds `value`, with their store's position.
fn by_index(
    stores: &[Store<DynamicObject>],
    index: &str,
    value: &str,
) -> Vec<(usize, Arc<DynamicObject>)> {
    by_index_refs(stores.iter(), index, value)
}

fn by_index_refs<'a>(
    stores: impl Iterator<Item = &'a Store<DynamicObject>>,
    index: &str,
    value: &str,
) -> Vec<(usize, Arc<DynamicObject>)> {
    stores
        .enumerate()
        .flat_map(|(i, s)| s.by_index(index, value).into_iter().map(move |o| (i, o)))
        .collect()
}
