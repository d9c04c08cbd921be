//! The watch cache: an in-memory mirror of every resource, fed by one store watch, that serves
//! LIST and WATCH so that a warm list never reads the store.
//!
//! One task reads the whole store once (`/registry/`), then follows a watch from that revision
//! and applies each change to the cache of its resource (the first three key segments,
//! `/registry/{group}/{plural}/`). Each resource keeps its objects in key order, a window of
//! recent events for watches that resume from a `resourceVersion`, and its live watchers, each
//! with the key prefix it watches (a namespace, or all). Objects are parsed at most once, when a selector or a printer first needs them,
//! and every watcher of an event shares one rendering of its wire line.
//!
//! If the store watch fails (the cache fell behind, the backend restarted), the cache is rebuilt
//! from a fresh read and every watch it served ends, so that clients resume as with upstream's
//! watch cache. Until the first read completes, callers fall back to the store.

use crate::object::{self, Object};
use bosun_store::{Event, EventKind, RangeRequest, Revision, Store};
use bytes::Bytes;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, OnceLock, RwLock, Weak};
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// Store prefix the cache mirrors.
pub(crate) const ROOT: &str = "/registry/";
/// Recent events each resource keeps for watches resuming from a resourceVersion.
const WINDOW: usize = 4096;
/// Events a live watcher may fall behind before its watch ends.
const LIVE_BUFFER: usize = 10_000;

/// The resource a store key belongs to: `/registry/{group}/{plural}/`.
pub(crate) fn resource_prefix(key: &str) -> Option<&str> {
    let rest = key.strip_prefix(ROOT)?;
    let group_end = rest.find('/')?;
    let plural_end = rest[group_end + 1..].find('/')?;
    Some(&key[..ROOT.len() + group_end + 1 + plural_end + 1])
}

/// One cached object: the stored bytes, its revision, and the parsed form once something needed it.
#[derive(Clone, Debug)]
pub(crate) struct Entry {
    pub(crate) value: Bytes,
    pub(crate) mod_revision: Revision,
    parsed: Arc<OnceLock<Option<Arc<Object>>>>,
}

impl Entry {
    pub(crate) fn new(value: Bytes, mod_revision: Revision) -> Self {
        Entry {
            value,
            mod_revision,
            parsed: Arc::default(),
        }
    }

    /// The object, parsed on first use (`None` if the stored bytes are not an object).
    pub(crate) fn object(&self) -> Option<Arc<Object>> {
        self.parsed
            .get_or_init(|| object::from_stored(&self.value).ok().map(Arc::new))
            .clone()
    }
}

/// One change to a resource, as watchers receive it.
#[derive(Debug)]
pub(crate) struct CachedEvent {
    pub(crate) key: String,
    pub(crate) revision: Revision,
    /// The object after the change (`None` for a delete).
    pub(crate) new: Option<Entry>,
    /// The object before the change (`None` for a create).
    pub(crate) prev: Option<Entry>,
    raw: OnceLock<Option<Bytes>>,
}

impl CachedEvent {
    /// A store event in the cache's form (for watches the store serves directly).
    pub(crate) fn from_store(ev: &Event) -> Self {
        let new = match ev.kind {
            EventKind::Put => Some(Entry::new(ev.kv.value.clone(), ev.kv.mod_revision)),
            EventKind::Delete => None,
        };
        let prev = ev
            .prev_kv
            .as_ref()
            .map(|kv| Entry::new(kv.value.clone(), kv.mod_revision));
        CachedEvent {
            key: ev.kv.key.clone(),
            revision: ev.kv.mod_revision,
            new,
            prev,
            raw: OnceLock::new(),
        }
    }

    /// The watch event type of the change for a watcher that takes every object.
    pub(crate) fn kind(&self) -> &'static str {
        match (&self.new, &self.prev) {
            (Some(_), Some(_)) => "MODIFIED",
            (Some(_), None) => "ADDED",
            (None, _) => "DELETED",
        }
    }

    /// The JSON watch line of the change, spliced from the stored bytes and rendered once for all
    /// watchers; `None` if the stored bytes are not in the layout splicing needs.
    pub(crate) fn raw_line(&self) -> Option<Bytes> {
        self.raw
            .get_or_init(|| {
                let value = self.new.as_ref().or(self.prev.as_ref())?;
                let obj = object::object_bytes(&value.value, self.revision)?;
                let kind = self.kind();
                let mut line = Vec::with_capacity(obj.len() + 32);
                line.extend_from_slice(b"{\"type\":\"");
                line.extend_from_slice(kind.as_bytes());
                line.extend_from_slice(b"\",\"object\":");
                line.extend_from_slice(&obj);
                line.extend_from_slice(b"}\n");
                Some(Bytes::from(line))
            })
            .clone()
    }
}

struct Resource {
    objects: BTreeMap<String, Entry>,
    /// Recent events, oldest first.
    events: VecDeque<Arc<CachedEvent>>,
    /// The window holds every event of this resource after this revision.
    since: Revision,
    watchers: Vec<Watcher>,
}

/// A live watcher: the keys it watches and its queue.
struct Watcher {
    key_prefix: String,
    tx: mpsc::Sender<Arc<CachedEvent>>,
}

impl Resource {
    fn new(since: Revision) -> Self {
        Resource {
            objects: BTreeMap::new(),
            events: VecDeque::new(),
            since,
            watchers: Vec::new(),
        }
    }

    /// Queues `event` for every watcher of its key; forgets watchers that are gone or so far
    /// behind that their queue is full (their watch ends, and the client resumes from the last
    /// revision it saw).
    fn dispatch(&mut self, event: &Arc<CachedEvent>) {
        self.watchers.retain(|w| {
            if !event.key.starts_with(&w.key_prefix) {
                return !w.tx.is_closed();
            }
            match w.tx.try_send(Arc::clone(event)) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    tracing::debug!("watcher fell behind the watch cache; ending it");
                    false
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            }
        });
    }
}

#[derive(Default)]
struct State {
    ready: bool,
    /// Every store change up to this revision is applied.
    revision: Revision,
    /// The revision of the last full read.
    loaded_at: Revision,
    resources: HashMap<String, Resource>,
}

/// A page of a cached list.
pub(crate) struct Page {
    /// `(key, object)` in key order, starting after the requested key.
    pub(crate) items: Vec<(String, Entry)>,
    /// The revision the page shows.
    pub(crate) revision: Revision,
}

/// Where a cached watch starts.
pub(crate) enum Start {
    /// With the current objects (sent as ADDED), then every later change.
    Snapshot,
    /// With the changes after this revision.
    After(Revision),
}

/// A watch served from the cache.
pub(crate) struct Subscription {
    /// The current objects, for [`Start::Snapshot`].
    pub(crate) snapshot: Vec<(String, Entry)>,
    /// Changes already in the window, for [`Start::After`].
    pub(crate) backlog: Vec<Arc<CachedEvent>>,
    /// The revision the snapshot or backlog reaches; live events after it follow.
    pub(crate) revision: Revision,
    live: mpsc::Receiver<Arc<CachedEvent>>,
}

impl Subscription {
    /// The next live change under the watched prefix; `None` when the watch must end (the cache
    /// was rebuilt, or this watcher fell too far behind).
    pub(crate) async fn next(&mut self) -> Option<Arc<CachedEvent>> {
        loop {
            let ev = self.live.recv().await?;
            if ev.revision > self.revision {
                return Some(ev);
            }
        }
    }
}

/// The watch cache of one server.
#[derive(Default)]
pub(crate) struct Cache {
    state: RwLock<State>,
    /// The applied revision once ready (`None` before the first read).
    applied: OnceLock<watch::Sender<Option<Revision>>>,
    started: OnceLock<()>,
    /// Set when the filling task has ended.
    stopped: std::sync::atomic::AtomicBool,
}

impl Cache {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    fn applied(&self) -> &watch::Sender<Option<Revision>> {
        self.applied.get_or_init(|| watch::channel(None).0)
    }

    /// Starts filling the cache from `store` (once; later calls do nothing). The task ends when
    /// `shutdown` changes or its sender is dropped, or when the cache is dropped.
    pub(crate) fn start(self: &Arc<Self>, store: Arc<dyn Store>, shutdown: watch::Receiver<bool>) {
        if self.started.set(()).is_err() {
            return;
        }
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            run(weak.clone(), store, shutdown).await;
            if let Some(c) = weak.upgrade() {
                c.stopped.store(true, std::sync::atomic::Ordering::Release);
            }
        });
    }

    /// Waits until every change up to `revision` is applied; false if that takes longer than
    /// `timeout` or the cache is not filled yet.
    pub(crate) async fn wait_for(&self, revision: Revision, timeout: Duration) -> bool {
        let mut rx = self.applied().subscribe();
        let reached = async {
            rx.wait_for(|r| r.is_some_and(|r| r >= revision))
                .await
                .is_ok()
        };
        matches!(tokio::time::timeout(timeout, reached).await, Ok(true))
    }

    /// The objects of `resource` whose keys start with `key_prefix` and come after
    /// `start_after`, at the cache's revision; `None` if the cache is not filled.
    pub(crate) fn list(
        &self,
        resource: &str,
        key_prefix: &str,
        start_after: Option<&str>,
    ) -> Option<Page> {
        let state = self.read();
        if !state.ready {
            return None;
        }
        let items = match state.resources.get(resource) {
            None => Vec::new(),
            Some(res) => {
                use std::ops::Bound;
                let lower = match start_after {
                    Some(k) if k >= key_prefix => Bound::Excluded(k.to_owned()),
                    _ => Bound::Included(key_prefix.to_owned()),
                };
                res.objects
                    .range((lower, Bound::Unbounded))
                    .take_while(|(k, _)| k.starts_with(key_prefix))
                    .map(|(k, e)| (k.clone(), e.clone()))
                    .collect()
            }
        };
        Some(Page {
            items,
            revision: state.revision,
        })
    }

    /// The revision the cache has applied, once filled.
    pub(crate) fn revision(&self) -> Option<Revision> {
        let state = self.read();
        state.ready.then_some(state.revision)
    }

    /// A watch of the keys under `key_prefix` in `resource`; `None` if the cache cannot serve it
    /// (not filled, or the requested revision is older than the window).
    pub(crate) fn subscribe(
        &self,
        resource: &str,
        key_prefix: &str,
        start: Start,
    ) -> Option<Subscription> {
        let mut state = self.write();
        if !state.ready {
            return None;
        }
        let revision = state.revision;
        let loaded_at = state.loaded_at;
        let res = state
            .resources
            .entry(resource.to_owned())
            .or_insert_with(|| Resource::new(loaded_at));
        let (tx, live) = mpsc::channel(LIVE_BUFFER);
        res.watchers.retain(|w| !w.tx.is_closed());
        res.watchers.push(Watcher {
            key_prefix: key_prefix.to_owned(),
            tx,
        });
        let mut sub = Subscription {
            snapshot: Vec::new(),
            backlog: Vec::new(),
            revision,
            live,
        };
        match start {
            Start::Snapshot => {
                sub.snapshot = res
                    .objects
                    .range(key_prefix.to_owned()..)
                    .take_while(|(k, _)| k.starts_with(key_prefix))
                    .map(|(k, e)| (k.clone(), e.clone()))
                    .collect();
            }
            Start::After(rv) if rv >= revision => sub.revision = rv,
            Start::After(rv) if rv < res.since => return None,
            Start::After(rv) => {
                sub.backlog = res
                    .events
                    .iter()
                    .filter(|e| e.revision > rv && e.key.starts_with(key_prefix))
                    .cloned()
                    .collect();
            }
        }
        Some(sub)
    }

    /// Replaces the contents with a full read at `revision`; ends every cached watch.
    fn reset(&self, kvs: Vec<bosun_store::KeyValue>, revision: Revision) {
        let mut resources: HashMap<String, Resource> = HashMap::new();
        for kv in kvs {
            let Some(prefix) = resource_prefix(&kv.key) else {
                continue;
            };
            resources
                .entry(prefix.to_owned())
                .or_insert_with(|| Resource::new(revision))
                .objects
                .insert(kv.key, Entry::new(kv.value, kv.mod_revision));
        }
        {
            let mut state = self.write();
            // Dropping the old resources drops their watchers' queues: their watches end.
            state.resources = resources;
            state.revision = revision;
            state.loaded_at = revision;
            state.ready = true;
        }
        self.applied().send_replace(Some(revision));
    }

    /// Applies one store change.
    fn apply(&self, ev: &Event) {
        let revision = ev.kv.mod_revision;
        {
            let mut state = self.write();
            if revision <= state.revision {
                return;
            }
            state.revision = revision;
            let loaded_at = state.loaded_at;
            if let Some(prefix) = resource_prefix(&ev.kv.key) {
                let res = state
                    .resources
                    .entry(prefix.to_owned())
                    .or_insert_with(|| Resource::new(loaded_at));
                let (new, prev) = match ev.kind {
                    EventKind::Put => {
                        let new = Entry::new(ev.kv.value.clone(), revision);
                        let prev = res.objects.insert(ev.kv.key.clone(), new.clone());
                        (Some(new), prev)
                    }
                    EventKind::Delete => (None, res.objects.remove(&ev.kv.key)),
                };
                let prev = prev.or_else(|| {
                    ev.prev_kv
                        .as_ref()
                        .map(|kv| Entry::new(kv.value.clone(), kv.mod_revision))
                });
                let event = Arc::new(CachedEvent {
                    key: ev.kv.key.clone(),
                    revision,
                    new,
                    prev,
                    raw: OnceLock::new(),
                });
                res.events.push_back(Arc::clone(&event));
                if res.events.len() > WINDOW {
                    if let Some(old) = res.events.pop_front() {
                        res.since = old.revision;
                    }
                }
                res.dispatch(&event);
            }
        }
        self.applied().send_replace(Some(revision));
    }
}

/// Fills and follows: a full read, then the store's watch; again from a fresh read when the
/// watch fails.
async fn run(cache: Weak<Cache>, store: Arc<dyn Store>, mut shutdown: watch::Receiver<bool>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        if *shutdown.borrow() {
            return;
        }
        let loaded = async {
            let page = store.range(RangeRequest::prefix(ROOT)).await?;
            let watch = store.watch(ROOT, page.revision).await?;
            Ok::<_, bosun_store::Error>((page, watch))
        };
        let (page, mut watch) = tokio::select! {
            r = loaded => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "watch cache: reading the store failed; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        r = shutdown.changed() => if r.is_err() { return },
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            },
            r = shutdown.changed() => if r.is_err() { return } else { continue },
        };
        backoff = Duration::from_millis(100);
        {
            let Some(c) = cache.upgrade() else { return };
            tracing::debug!(
                objects = page.kvs.len(),
                revision = page.revision,
                "watch cache filled"
            );
            c.reset(page.kvs, page.revision);
        }
        loop {
            tokio::select! {
                ev = watch.next() => match ev {
                    Some(Ok(ev)) => {
                        let Some(c) = cache.upgrade() else { return };
                        c.apply(&ev);
                    }
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "watch cache: store watch failed; refilling");
                        break;
                    }
                    None => {
                        tracing::warn!("watch cache: store watch ended; refilling");
                        break;
                    }
                },
                r = shutdown.changed() => if r.is_err() || *shutdown.borrow() { return },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bosun_store::memory::MemoryStore;

    #[test]
    fn resource_prefixes() {
        assert_eq!(
            resource_prefix("/registry/core/pods/default/web"),
            Some("/registry/core/pods/")
        );
        assert_eq!(
            resource_prefix("/registry/core/namespaces/default"),
            Some("/registry/core/namespaces/")
        );
        assert_eq!(resource_prefix("/registry/core"), None);
        assert_eq!(resource_prefix("/other/core/pods/x"), None);
    }

    async fn filled(store: &Arc<MemoryStore>) -> (Arc<Cache>, watch::Sender<bool>) {
        let cache = Arc::new(Cache::default());
        let (tx, rx) = watch::channel(false);
        cache.start(Arc::clone(store) as Arc<dyn Store>, rx);
        let rev = store.current_revision().await.unwrap();
        assert!(cache.wait_for(rev, Duration::from_secs(5)).await);
        (cache, tx)
    }

    #[tokio::test]
    async fn lists_follow_the_store_and_watches_resume_from_the_window() {
        let store = Arc::new(MemoryStore::new());
        let a = store
            .create("/registry/core/pods/ns1/a", "{\"n\":1}".into())
            .await
            .unwrap();
        store
            .create("/registry/core/configmaps/ns1/c", "{}".into())
            .await
            .unwrap();
        let (cache, _stop) = filled(&store).await;
        let page = cache
            .list("/registry/core/pods/", "/registry/core/pods/", None)
            .unwrap();
        assert_eq!(page.items.len(), 1);

        let b = store
            .create("/registry/core/pods/ns2/b", "{\"n\":2}".into())
            .await
            .unwrap();
        let u = store
            .update("/registry/core/pods/ns1/a", "{\"n\":3}".into(), a)
            .await
            .unwrap();
        assert!(cache.wait_for(u, Duration::from_secs(5)).await);
        let page = cache
            .list("/registry/core/pods/", "/registry/core/pods/", None)
            .unwrap();
        assert_eq!(page.revision, u);
        let keys: Vec<_> = page.items.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            ["/registry/core/pods/ns1/a", "/registry/core/pods/ns2/b"]
        );
        assert_eq!(page.items[0].1.mod_revision, u);
        let ns1 = cache
            .list("/registry/core/pods/", "/registry/core/pods/ns1/", None)
            .unwrap();
        assert_eq!(ns1.items.len(), 1);
        let after = cache
            .list(
                "/registry/core/pods/",
                "/registry/core/pods/",
                Some("/registry/core/pods/ns1/a"),
            )
            .unwrap();
        assert_eq!(after.items.len(), 1);

        // Resume after the create of b: only the update of a follows.
        let sub = cache
            .subscribe(
                "/registry/core/pods/",
                "/registry/core/pods/",
                Start::After(b),
            )
            .unwrap();
        assert_eq!(sub.backlog.len(), 1);
        assert_eq!(sub.backlog[0].kind(), "MODIFIED");
        assert_eq!(sub.backlog[0].prev.as_ref().unwrap().value, "{\"n\":1}");

        // Live events reach a subscriber, filtered by its key prefix.
        let mut sub = cache
            .subscribe(
                "/registry/core/pods/",
                "/registry/core/pods/ns2/",
                Start::Snapshot,
            )
            .unwrap();
        assert_eq!(sub.snapshot.len(), 1);
        store
            .update("/registry/core/pods/ns1/a", "{\"n\":4}".into(), u)
            .await
            .unwrap();
        let (d, _) = store
            .delete("/registry/core/pods/ns2/b", None)
            .await
            .unwrap();
        let ev = sub.next().await.unwrap();
        assert_eq!((ev.kind(), ev.revision), ("DELETED", d));
    }

    #[tokio::test]
    async fn a_too_old_revision_is_not_served() {
        let store = Arc::new(MemoryStore::new());
        store
            .create("/registry/core/pods/ns/a", "{}".into())
            .await
            .unwrap();
        let (cache, _stop) = filled(&store).await;
        let mut rev = store.current_revision().await.unwrap();
        for i in 0..(WINDOW + 10) {
            rev = store
                .update(
                    "/registry/core/pods/ns/a",
                    format!("{{\"i\":{i}}}").into(),
                    rev,
                )
                .await
                .unwrap();
        }
        assert!(cache.wait_for(rev, Duration::from_secs(5)).await);
        let p = "/registry/core/pods/";
        assert!(cache.subscribe(p, p, Start::After(1)).is_none());
        assert!(cache.subscribe(p, p, Start::After(rev - 5)).is_some());
    }

    #[tokio::test]
    async fn the_cache_stops_with_the_server() {
        let store = Arc::new(MemoryStore::new());
        let (cache, stop) = filled(&store).await;
        stop.send_replace(true);
        for _ in 0..500 {
            if cache.stopped.load(std::sync::atomic::Ordering::Acquire) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(cache.stopped.load(std::sync::atomic::Ordering::Acquire));
        let rev = store
            .create("/registry/core/pods/ns/a", "{}".into())
            .await
            .unwrap();
        // Nothing applies changes any more.
        tokio::task::yield_now().await;
        assert!(cache.revision() < Some(rev));
    }
}
