//! Shared informers: one watch and one cache per resource (and namespace) for every consumer
//! in the process. Consumers read the cache ([`Informer::store`]) and subscribe to change
//! notifications ([`Informer::subscribe`]) with the old and new object, and a periodic resync
//! re-announces every object so that level-triggered consumers converge.
//!
//! ```no_run
//! use bosun_client::informer::{InformerFactory, Notification};
//! use bosun_client::Client;
//! use bosun_api_types::core::v1::Pod;
//! # async fn run(client: Client) {
//! let factory = InformerFactory::new(client);
//! let pods = factory.informer::<Pod>(None);       // starts the one watch of pods
//! let same = factory.informer::<Pod>(None);       // shares it
//! let mut changes = same.subscribe();
//! pods.wait_until_ready().await;
//! while let Ok(n) = changes.recv().await {
//!     if let Notification::Deleted(pod) = n { tracing::info!(name = ?pod.metadata.name, "gone"); }
//! }
//! # }
//! ```

use crate::api::Api;
use crate::client::Client;
use crate::reflector::{Key, Store};
use crate::watcher::{self, Event};
use bosun_api_types::Resource;
use futures_util::StreamExt;
use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::broadcast;

/// A change to one object, as informer subscribers see it.
#[derive(Debug)]
pub enum Notification<K> {
    /// A new object.
    Added(Arc<K>),
    /// A changed object (old, new); also sent for every object at each resync (old = new).
    Updated(Arc<K>, Arc<K>),
    /// A deleted object (its last state).
    Deleted(Arc<K>),
}

impl<K> Clone for Notification<K> {
    fn clone(&self) -> Self {
        match self {
            Notification::Added(k) => Notification::Added(Arc::clone(k)),
            Notification::Updated(o, n) => Notification::Updated(Arc::clone(o), Arc::clone(n)),
            Notification::Deleted(k) => Notification::Deleted(Arc::clone(k)),
        }
    }
}

impl<K> Notification<K> {
    /// The object the notification is about (its new state, or last for deletes).
    pub fn object(&self) -> &Arc<K> {
        match self {
            Notification::Added(k) | Notification::Deleted(k) | Notification::Updated(_, k) => k,
        }
    }
}

/// Notifications a slow subscriber may fall behind before it is told it lagged (it should then
/// re-read the store: the cache is always complete).
const NOTIFY_BUFFER: usize = 4096;

/// One shared informer: a cache and a stream of notifications. Cheap to clone.
pub struct Informer<K> {
    store: Store<K>,
    notify: broadcast::Sender<Notification<K>>,
}

impl<K> Clone for Informer<K> {
    fn clone(&self) -> Self {
        Informer {
            store: self.store.clone(),
            notify: self.notify.clone(),
        }
    }
}

impl<K: Resource> Informer<K> {
    /// The cache.
    pub fn store(&self) -> Store<K> {
        self.store.clone()
    }

    /// Notifications of changes from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Notification<K>> {
        self.notify.subscribe()
    }

    /// Waits until the cache holds the first full list.
    pub async fn wait_until_ready(&self) {
        self.store.wait_until_ready().await
    }
}

/// Informers by kind and namespace (each an `Informer<K>` behind `Any`).
type Informers = HashMap<InformerKey, Box<dyn Any + Send + Sync>>;

/// Kind, namespace, and for dynamic objects the resource (`group/version/plural`).
type InformerKey = (TypeId, Option<String>, Option<String>);

/// Makes and shares informers; the informers' watches run until the factory is dropped.
///
/// ```no_run
/// use bosun_api_types::core::v1::Pod;
/// use bosun_client::{informer::{InformerFactory, Notification}, Client};
/// # async fn run() -> bosun_client::Result<()> {
/// let factory = InformerFactory::new(Client::try_default()?);
/// let pods = factory.informer::<Pod>(Some("default")); // shared: one watch per kind
/// let mut changes = pods.subscribe();
/// pods.wait_until_ready().await;
/// tracing::info!(cached = pods.store().list().len(), "synced");
/// while let Ok(change) = changes.recv().await {
///     if let Notification::Deleted(pod) = change {
///         tracing::info!(name = ?pod.metadata.name, "gone");
///     }
/// }
/// # Ok(()) }
/// ```
pub struct InformerFactory {
    client: Client,
    resync: Option<Duration>,
    watcher: watcher::Config,
    informers: Mutex<Informers>,
    stop: tokio::sync::watch::Sender<()>,
}

impl std::fmt::Debug for InformerFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InformerFactory")
            .field("resync", &self.resync)
            .finish_non_exhaustive()
    }
}

impl InformerFactory {
    /// A factory over `client` (no resync).
    pub fn new(client: Client) -> Self {
        InformerFactory {
            client,
            resync: None,
            watcher: watcher::Config::default(),
            informers: Mutex::default(),
            stop: tokio::sync::watch::channel(()).0,
        }
    }

    /// Re-announce every cached object this often (as `Updated(o, o)`).
    pub fn with_resync(mut self, every: Duration) -> Self {
        self.resync = Some(every);
        self
    }

    /// Use these watch settings (selectors apply to every informer of this factory).
    pub fn with_watcher_config(mut self, config: watcher::Config) -> Self {
        self.watcher = config;
        self
    }

    /// The informer of `K` in `namespace` (all namespaces if `None`): started on first use,
    /// shared afterwards. For kinds known only at run time, use [`InformerFactory::dynamic`].
    pub fn informer<K: Resource>(&self, namespace: Option<&str>) -> Informer<K> {
        let key = (TypeId::of::<K>(), namespace.map(str::to_owned), None);
        self.shared(key, || match namespace {
            Some(ns) => Api::namespaced(self.client.clone(), ns),
            None => Api::all(self.client.clone()),
        })
    }

    /// The informer of a resource found by discovery, as dynamic objects.
    pub fn dynamic(
        &self,
        resource: &crate::discovery::ApiResource,
        namespace: Option<&str>,
    ) -> Informer<bosun_api_types::DynamicObject> {
        let id = format!(
            "{}/{}/{}",
            resource.group, resource.version, resource.plural
        );
        let key = (
            TypeId::of::<bosun_api_types::DynamicObject>(),
            namespace.map(str::to_owned),
            Some(id),
        );
        self.shared(key, || match namespace {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, resource),
            None => Api::all_with(self.client.clone(), resource),
        })
    }

    fn shared<K: Resource>(&self, key: InformerKey, api: impl FnOnce() -> Api<K>) -> Informer<K> {
        let mut map = self.informers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(existing) = map.get(&key).and_then(|b| b.downcast_ref::<Informer<K>>()) {
            return existing.clone();
        }
        let informer = Informer {
            store: Store::default(),
            notify: broadcast::channel(NOTIFY_BUFFER).0,
        };
        tokio::spawn(run(
            api(),
            self.watcher.clone(),
            informer.clone(),
            self.resync,
            self.stop.subscribe(),
        ));
        map.insert(key, Box::new(informer.clone()));
        informer
    }
}

async fn run<K: Resource>(
    api: Api<K>,
    config: watcher::Config,
    informer: Informer<K>,
    resync: Option<Duration>,
    mut stop: tokio::sync::watch::Receiver<()>,
) {
    let mut events = std::pin::pin!(watcher::watcher(api, config));
    let mut tick = tokio::time::interval(resync.unwrap_or(Duration::from_secs(3600)));
    tick.tick().await;
    let mut before_relist: Option<HashMap<Key, Arc<K>>> = None;
    loop {
        tokio::select! {
            ev = events.next() => {
                let Some(ev) = ev else { return };
                let ev = match ev {
                    Ok(ev) => ev,
                    Err(e) => {
                        tracing::debug!(error = %e, "informer watch error; retrying");
                        continue;
                    }
                };
                let store = &informer.store;
                let send = |n: Notification<K>| {
                    // No subscribers is fine: the cache is still kept.
                    let _ = informer.notify.send(n);
                };
                match ev {
                    Event::Init => {
                        before_relist = Some(
                            store.list().into_iter().map(|o| (Key::of(&*o), o)).collect(),
                        );
                        store.apply(Event::Init);
                    }
                    Event::InitDone => {
                        store.apply(Event::InitDone);
                        let mut old = before_relist.take().unwrap_or_default();
                        for new in store.list() {
                            match old.remove(&Key::of(&*new)) {
                                None => send(Notification::Added(new)),
                                Some(o) => {
                                    if o.metadata().resource_version != new.metadata().resource_version {
                                        send(Notification::Updated(o, new));
                                    }
                                }
                            }
                        }
                        for (_, gone) in old {
                            send(Notification::Deleted(gone));
                        }
                    }
                    ev @ Event::InitApply(_) => {
                        store.apply(ev);
                    }
                    Event::Apply(k) => {
                        let key = Key::of(&k);
                        let old = store.apply(Event::Apply(k));
                        if let Some(new) = store.get(&key) {
                            send(match old {
                                None => Notification::Added(new),
                                Some(o) => Notification::Updated(o, new),
                            });
                        }
                    }
                    Event::Delete(k) => {
                        let last = Arc::new(k.clone());
                        store.apply(Event::Delete(k));
                        send(Notification::Deleted(last));
                    }
                }
            }
            _ = tick.tick(), if resync.is_some() => {
                for o in informer.store.list() {
                    let _ = informer.notify.send(Notification::Updated(Arc::clone(&o), o));
                }
            }
            r = stop.changed() => if r.is_err() { return },
        }
    }
}
