//! The garbage collector, background propagation: an object whose owners (its
//! `ownerReferences`) are all gone is deleted, whether they went before or after it was made.
//!
//! It keeps a dynamic informer per served resource with an index of objects by owner uid. An
//! owner's deletion queues its dependents; a new or changed object with owners is queued too
//! (its owner may be missing already). Before deleting, the owner is looked up live, so a stale
//! cache never deletes an object whose owner exists; the delete is conditional on the
//! dependent's uid. Foreground and orphan propagation come with the finalizers the API server
//! will add for them.

use crate::workqueue::WorkQueue;
use bosun_api_types::DynamicObject;
use bosun_client::discovery::{ApiResource, Discovery};
use bosun_client::informer::{InformerFactory, Notification};
use bosun_client::reflector::{Key, Store};
use bosun_client::{Api, Client, DeleteParams};
use std::sync::Arc;

const OWNERS: &str = "owner-uid";

/// Runs the garbage collector until `queue` is shut down.
pub struct GarbageCollector {
    client: Client,
    resources: Vec<(ApiResource, Store<DynamicObject>)>,
    queue: WorkQueue<(usize, Key)>,
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
            informer.store().add_index(OWNERS, |o: &DynamicObject| {
                o.metadata
                    .owner_references
                    .iter()
                    .map(|r| r.uid.clone())
                    .collect()
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
                        // A new or changed dependent: its owners may be gone already.
                        Notification::Added(o) | Notification::Updated(_, o) => {
                            if !o.metadata.owner_references.is_empty() {
                                q.add((index, Key::of(&**o)));
                            }
                        }
                        // A deleted owner: every dependent of it.
                        Notification::Deleted(o) => {
                            if let Some(uid) = &o.metadata.uid {
                                for (i, store) in stores.iter().enumerate() {
                                    for d in store.by_index(OWNERS, uid) {
                                        q.add((i, Key::of(&*d)));
                                    }
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
        })
    }

    /// The collector's queue (shut it down to stop).
    pub fn queue(&self) -> WorkQueue<(usize, Key)> {
        self.queue.clone()
    }

    /// Whether the owner `r` of a dependent in `namespace` exists, asked of the server.
    async fn owner_exists(
        &self,
        r: &bosun_api_types::meta::v1::OwnerReference,
        namespace: &str,
    ) -> bosun_client::Result<bool> {
        let group = r.api_version.split_once('/').map_or("", |(g, _)| g);
        let Some((res, _)) = self
            .resources
            .iter()
            .find(|(x, _)| x.group == group && x.kind == r.kind)
        else {
            // A kind this collector does not know (a CRD made after it started, say): never
            // collect on a guess.
            tracing::debug!(kind = %r.kind, api_version = %r.api_version, "owner of an unknown kind; keeping the dependent");
            return Ok(true);
        };
        let api: Api<DynamicObject> = if res.namespaced {
            Api::namespaced_with(self.client.clone(), namespace, res)
        } else {
            Api::all_with(self.client.clone(), res)
        };
        Ok(api
            .get_opt(&r.name)
            .await?
            .is_some_and(|o| o.metadata.uid.as_deref() == Some(r.uid.as_str())))
    }

    /// Processes queued dependents until the queue shuts down.
    pub async fn run(self) {
        for (_, store) in &self.resources {
            store.wait_until_ready().await;
        }
        // Everything with owners is checked once at start (owners may have gone meanwhile).
        for (i, (_, store)) in self.resources.iter().enumerate() {
            for o in store.list() {
                if !o.metadata.owner_references.is_empty() {
                    self.queue.add((i, Key::of(&*o)));
                }
            }
        }
        let this = Arc::new(self);
        while let Some(item) = this.queue.get().await {
            if let Err(e) = this.collect(&item).await {
                tracing::warn!(key = %item.1, error = %e, "garbage collection failed");
                this.queue.add_rate_limited(item.clone());
            } else {
                this.queue.forget(&item);
            }
            this.queue.done(&item);
        }
    }

    async fn collect(&self, (index, key): &(usize, Key)) -> bosun_client::Result<()> {
        let (res, store) = &self.resources[*index];
        let Some(obj) = store.get(key) else {
            return Ok(());
        };
        if obj.metadata.owner_references.is_empty() || obj.metadata.deletion_timestamp.is_some() {
            return Ok(());
        }
        for owner in &obj.metadata.owner_references {
            if self.owner_exists(owner, &key.namespace).await? {
                return Ok(());
            }
        }
        let api: Api<DynamicObject> = if res.namespaced {
            Api::namespaced_with(self.client.clone(), &key.namespace, res)
        } else {
            Api::all_with(self.client.clone(), res)
        };
        let params = DeleteParams {
            propagation_policy: Some("Background".into()),
            precondition_uid: obj.metadata.uid.clone(),
            ..Default::default()
        };
        match api.delete(&key.name, &params).await {
            Ok(_) => {
                tracing::debug!(%key, resource = %res.plural, "collected an object whose owners are gone");
                Ok(())
            }
            Err(e) if e.is_not_found() || e.is_conflict() => Ok(()),
            Err(e) => Err(e),
        }
    }
}
