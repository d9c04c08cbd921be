//! The `Reconciler` trait and the `Controller` that drives one: level-triggered, keyed by
//! object reference, on shared informers.
//!
//! A controller watches its primary kind `K`, the kinds it owns (mapped to their controller
//! owner through `ownerReferences`), and any other kinds through a mapping function. Every
//! change queues the key of the primary object it concerns; workers take keys from a
//! [`WorkQueue`] (so one key is never reconciled by two workers at once), read the object from
//! the cache and call the reconciler. `Ok(Action::Requeue(d))` comes back after `d`; an error
//! comes back after the queue's per-key backoff.

use crate::workqueue::WorkQueue;
use bosun_api_types::Resource;
use bosun_client::informer::{InformerFactory, Notification};
use bosun_client::reflector::{Key, Store};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// What to do with a key after reconciling it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Nothing until something changes.
    Done,
    /// Reconcile again after this long even if nothing changes.
    Requeue(Duration),
}

/// The logic of a controller: bring the world in line with one object.
///
/// ```no_run
/// use bosun_api_types::core::v1::ConfigMap;
/// use bosun_client::{informer::InformerFactory, Client};
/// use bosun_controllers::{Action, Controller, Reconciler};
/// use std::sync::Arc;
///
/// struct Audit;
///
/// #[async_trait::async_trait]
/// impl Reconciler<ConfigMap> for Audit {
///     type Error = std::convert::Infallible;
///     async fn reconcile(&self, cm: Arc<ConfigMap>) -> Result<Action, Self::Error> {
///         tracing::info!(name = ?cm.metadata.name, "seen");
///         Ok(Action::Done)
///     }
/// }
///
/// # async fn run() -> bosun_client::Result<()> {
/// let factory = Arc::new(InformerFactory::new(Client::try_default()?));
/// Controller::<ConfigMap>::new(factory, None).run(Audit).await;
/// # Ok(()) }
/// ```
#[async_trait::async_trait]
pub trait Reconciler<K: Resource>: Send + Sync + 'static {
    /// Why a reconcile failed.
    type Error: std::fmt::Display + Send + Sync + 'static;

    /// Reconciles the object `obj` (its latest cached state). Called again for the same key
    /// only after this call returns.
    async fn reconcile(&self, obj: Arc<K>) -> Result<Action, Self::Error>;

    /// Called when the key's object is gone from the cache (deleted). Finalizers are the way
    /// to run cleanup that must happen; this is for in-memory bookkeeping.
    async fn deleted(&self, _key: &Key) {}
}

/// Maps a change (the object before, if it was updated, and after) to the keys of the primary
/// objects to reconcile.
type KeyMap<C> = Arc<dyn Fn(Option<&C>, &C) -> Vec<Key> + Send + Sync>;

type Watch = Box<dyn FnOnce(WorkQueue<Key>) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

/// Waits until one informer's cache has its first list.
type Ready = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Builds and runs a controller for primary kind `K`.
pub struct Controller<K: Resource> {
    factory: Arc<InformerFactory>,
    namespace: Option<String>,
    watches: Vec<Watch>,
    ready: Vec<Ready>,
    concurrency: usize,
    queue: WorkQueue<Key>,
    _kind: std::marker::PhantomData<fn() -> K>,
}

/// Forwards an informer's notifications as keys (also every cached object once ready, and
/// again after a subscriber lag).
fn forward<C: Resource>(
    store: Store<C>,
    mut rx: tokio::sync::broadcast::Receiver<Notification<C>>,
    map: KeyMap<C>,
    queue: WorkQueue<Key>,
) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    Box::pin(async move {
        store.wait_until_ready().await;
        for o in store.list() {
            for k in map(None, &o) {
                queue.add(k);
            }
        }
        loop {
            match rx.recv().await {
                Ok(n) => {
                    let old = match &n {
                        Notification::Updated(old, _) => Some(&**old),
                        _ => None,
                    };
                    for k in map(old, n.object()) {
                        queue.add(k);
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    for o in store.list() {
                        for k in map(None, &o) {
                            queue.add(k);
                        }
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
            if queue.is_shutting_down() {
                return;
            }
        }
    })
}

impl<K: Resource> Controller<K> {
    /// A controller of `K` objects in `namespace` (all if `None`), on `factory`'s informers.
    pub fn new(factory: Arc<InformerFactory>, namespace: Option<&str>) -> Self {
        let mut c = Controller {
            factory,
            namespace: namespace.map(str::to_owned),
            watches: Vec::new(),
            ready: Vec::new(),
            concurrency: 2,
            queue: WorkQueue::new(),
            _kind: std::marker::PhantomData,
        };
        c = c.watches_with::<K>(|k| vec![Key::of(k)]);
        c
    }

    /// How many keys are reconciled at once (never the same key twice).
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// Also reconcile the controller owner (of kind `K`) of every changed `C`.
    pub fn owns<C: Resource>(self) -> Self {
        self.watches_with::<C>(|c| {
            c.metadata()
                .owner_references
                .iter()
                .filter(|r| {
                    r.controller == Some(true)
                        && r.kind == K::INFO.kind
                        && r.api_version == K::INFO.api_version
                })
                .map(|r| Key::namespaced(c.namespace().unwrap_or(""), &r.name))
                .collect()
        })
    }

    /// Also reconcile the `K` keys `map` names for every changed `C`.
    pub fn watches_with<C: Resource>(
        self,
        map: impl Fn(&C) -> Vec<Key> + Send + Sync + 'static,
    ) -> Self {
        // A change can move an object to another owner: both hear of it.
        self.watches_changes_with::<C>(move |old, new| {
            let mut keys = old.map(&map).unwrap_or_default();
            keys.extend(map(new));
            keys
        })
    }

    /// Also reconcile the `K` keys `map` names for every change of a `C`, given the object
    /// before (for an update) and after; returning nothing for updates that do not matter
    /// (a node's heartbeat, say) keeps the queue quiet.
    pub fn watches_changes_with<C: Resource>(
        mut self,
        map: impl Fn(Option<&C>, &C) -> Vec<Key> + Send + Sync + 'static,
    ) -> Self {
        let factory = Arc::clone(&self.factory);
        let namespace = self.namespace.clone();
        let map: KeyMap<C> = Arc::new(map);
        let store = self.factory.informer::<C>(namespace.as_deref()).store();
        self = self.waits_for(store);
        self.watches.push(Box::new(move |queue| {
            let informer = factory.informer::<C>(namespace.as_deref());
            let rx = informer.subscribe();
            forward(informer.store(), rx, map, queue)
        }));
        self
    }

    /// Starts no reconcile before `store` has its first list (a controller reading a kind
    /// from a cache it does not watch through this builder).
    pub fn waits_for<C: Resource>(mut self, store: Store<C>) -> Self {
        self.ready
            .push(Box::pin(async move { store.wait_until_ready().await }));
        self
    }

    /// The controller's queue (to add keys from elsewhere, or to shut it down).
    pub fn queue(&self) -> WorkQueue<Key> {
        self.queue.clone()
    }

    /// Runs until the queue is shut down (then waits for the reconciles in progress).
    pub async fn run<R: Reconciler<K>>(self, reconciler: R) {
        let reconciler = Arc::new(reconciler);
        let queue = self.queue.clone();
        let primary = self
            .factory
            .informer::<K>(self.namespace.as_deref())
            .store();
        let mut tasks = tokio::task::JoinSet::new();
        for w in self.watches {
            tasks.spawn(w(queue.clone()));
        }
        // Every cache the reconciler reads is complete before the first reconcile (a partial
        // cache would look like missing pods, and make them twice).
        futures_util::future::join_all(self.ready).await;
        let mut workers = tokio::task::JoinSet::new();
        for _ in 0..self.concurrency {
            let (queue, reconciler, store) =
                (queue.clone(), Arc::clone(&reconciler), primary.clone());
            workers.spawn(async move {
                while let Some(key) = queue.get().await {
                    match store.get(&key) {
                        None => reconciler.deleted(&key).await,
                        Some(obj) => match reconciler.reconcile(obj).await {
                            Ok(Action::Done) => queue.forget(&key),
                            Ok(Action::Requeue(after)) => {
                                queue.forget(&key);
                                queue.add_after(key.clone(), after);
                            }
                            Err(e) => {
                                // A conflict or a stale cache clears on the next try: only
                                // a failure that keeps coming back is worth a warning.
                                let retries = queue.num_requeues(&key);
                                if retries >= 3 {
                                    tracing::warn!(%key, error = %e, retries, "reconcile failed");
                                } else {
                                    tracing::debug!(%key, error = %e, retries, "reconcile failed; retrying");
                                }
                                queue.add_rate_limited(key.clone());
                            }
                        },
                    }
                    queue.done(&key);
                }
            });
        }
        while workers.join_next().await.is_some() {}
        tasks.abort_all();
    }
}
