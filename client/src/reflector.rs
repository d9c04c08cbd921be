//! The reflector: an in-memory cache of objects kept current by a [`crate::watcher`] stream,
//! with indexes (by namespace, by label, or by any function of an object).
//!
//! ```
//! use bosun_client::reflector::{Key, Store};
//! use bosun_client::watcher::Event;
//! use bosun_api_types::core::v1::ConfigMap;
//! let store: Store<ConfigMap> = Store::default();
//! store.add_index("by-app", |cm: &ConfigMap| {
//!     cm.metadata.labels.get("app").cloned().into_iter().collect()
//! });
//! let mut cm = ConfigMap::default();
//! cm.metadata.name = Some("a".into());
//! cm.metadata.namespace = Some("ns".into());
//! cm.metadata.labels.insert("app".into(), "web".into());
//! store.apply(Event::Apply(cm));
//! assert!(store.get(&Key::namespaced("ns", "a")).is_some());
//! assert_eq!(store.by_index("by-app", "web").len(), 1);
//! assert_eq!(store.by_index("namespace", "ns").len(), 1);
//! ```

use crate::watcher::Event;
use bosun_api_types::Resource;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, RwLock};

/// An object's identity in a cache: namespace (empty for cluster-scoped kinds) and name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    /// Namespace, or empty.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl Key {
    /// The key of a namespaced object.
    pub fn namespaced(namespace: &str, name: &str) -> Self {
        Key {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }
    }

    /// The key of a cluster-scoped object.
    pub fn cluster(name: &str) -> Self {
        Self::namespaced("", name)
    }

    /// The key of `obj`.
    pub fn of<K: Resource>(obj: &K) -> Self {
        Self::namespaced(obj.namespace().unwrap_or(""), obj.name())
    }
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.namespace.is_empty() {
            f.write_str(&self.name)
        } else {
            write!(f, "{}/{}", self.namespace, self.name)
        }
    }
}

type IndexFn<K> = Arc<dyn Fn(&K) -> Vec<String> + Send + Sync>;

struct Inner<K> {
    objects: HashMap<Key, Arc<K>>,
    indexers: BTreeMap<String, IndexFn<K>>,
    /// index name → value → keys
    indexes: BTreeMap<String, HashMap<String, BTreeSet<Key>>>,
    /// Objects of a relist in progress.
    relist: Option<HashMap<Key, Arc<K>>>,
    ready: bool,
}

/// A cache of `K` objects shared by readers; cheap to clone.
pub struct Store<K> {
    inner: Arc<RwLock<Inner<K>>>,
    ready: Arc<tokio::sync::Notify>,
}

impl<K> Clone for Store<K> {
    fn clone(&self) -> Self {
        Store {
            inner: Arc::clone(&self.inner),
            ready: Arc::clone(&self.ready),
        }
    }
}

impl<K: Resource> Default for Store<K> {
    fn default() -> Self {
        let store = Store {
            inner: Arc::new(RwLock::new(Inner {
                objects: HashMap::new(),
                indexers: BTreeMap::new(),
                indexes: BTreeMap::new(),
                relist: None,
                ready: false,
            })),
            ready: Arc::new(tokio::sync::Notify::new()),
        };
        store.add_index("namespace", |k: &K| {
            k.namespace().map(str::to_owned).into_iter().collect()
        });
        store
    }
}

impl<K: Resource> Store<K> {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner<K>> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner<K>> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds an index: `f` gives the values an object is found under.
    pub fn add_index(&self, name: &str, f: impl Fn(&K) -> Vec<String> + Send + Sync + 'static) {
        let mut inner = self.write();
        let f: IndexFn<K> = Arc::new(f);
        let mut index: HashMap<String, BTreeSet<Key>> = HashMap::new();
        for (key, obj) in &inner.objects {
            for v in f(obj) {
                index.entry(v).or_default().insert(key.clone());
            }
        }
        inner.indexers.insert(name.to_owned(), f);
        inner.indexes.insert(name.to_owned(), index);
    }

    /// An object by key.
    pub fn get(&self, key: &Key) -> Option<Arc<K>> {
        self.read().objects.get(key).cloned()
    }

    /// Every object.
    pub fn list(&self) -> Vec<Arc<K>> {
        self.read().objects.values().cloned().collect()
    }

    /// How many objects there are.
    pub fn len(&self) -> usize {
        self.read().objects.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The objects an index finds under `value`.
    pub fn by_index(&self, index: &str, value: &str) -> Vec<Arc<K>> {
        let inner = self.read();
        inner
            .indexes
            .get(index)
            .and_then(|i| i.get(value))
            .map(|keys| {
                keys.iter()
                    .filter_map(|k| inner.objects.get(k).cloned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Whether the first list has been applied.
    pub fn is_ready(&self) -> bool {
        self.read().ready
    }

    /// Waits until the first list has been applied.
    pub async fn wait_until_ready(&self) {
        loop {
            let notified = self.ready.notified();
            if self.is_ready() {
                return;
            }
            notified.await;
        }
    }

    /// Applies one watcher event; returns the object's previous state for applies and
    /// deletes (what informer handlers need).
    pub fn apply(&self, event: Event<K>) -> Option<Arc<K>> {
        let mut inner = self.write();
        match event {
            Event::Init => {
                inner.relist = Some(HashMap::new());
                None
            }
            Event::InitApply(k) => {
                let key = Key::of(&k);
                match inner.relist.as_mut() {
                    Some(buf) => {
                        buf.insert(key, Arc::new(k));
                    }
                    None => {
                        insert(&mut inner, key, Arc::new(k));
                    }
                }
                None
            }
            Event::InitDone => {
                let fresh = inner.relist.take().unwrap_or_default();
                let gone: Vec<Key> = inner
                    .objects
                    .keys()
                    .filter(|k| !fresh.contains_key(k))
                    .cloned()
                    .collect();
                for key in gone {
                    remove(&mut inner, &key);
                }
                for (key, obj) in fresh {
                    insert(&mut inner, key, obj);
                }
                inner.ready = true;
                drop(inner);
                self.ready.notify_waiters();
                None
            }
            Event::Apply(k) => {
                let key = Key::of(&k);
                insert(&mut inner, key, Arc::new(k))
            }
            Event::Delete(k) => remove(&mut inner, &Key::of(&k)),
        }
    }
}

fn insert<K>(inner: &mut Inner<K>, key: Key, obj: Arc<K>) -> Option<Arc<K>> {
    let old = remove(inner, &key);
    let values: Vec<(String, Vec<String>)> = inner
        .indexers
        .iter()
        .map(|(name, f)| (name.clone(), f(&obj)))
        .collect();
    for (name, vals) in values {
        let index = inner.indexes.entry(name).or_default();
        for v in vals {
            index.entry(v).or_default().insert(key.clone());
        }
    }
    inner.objects.insert(key, obj);
    old
}

fn remove<K>(inner: &mut Inner<K>, key: &Key) -> Option<Arc<K>> {
    let old = inner.objects.remove(key)?;
    let values: Vec<(String, Vec<String>)> = inner
        .indexers
        .iter()
        .map(|(name, f)| (name.clone(), f(&old)))
        .collect();
    for (name, vals) in values {
        if let Some(index) = inner.indexes.get_mut(&name) {
            for v in vals {
                if let Some(keys) = index.get_mut(&v) {
                    keys.remove(key);
                    if keys.is_empty() {
                        index.remove(&v);
                    }
                }
            }
        }
    }
    Some(old)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bosun_api_types::core::v1::ConfigMap;

    fn cm(ns: &str, name: &str, app: &str) -> ConfigMap {
        let mut c = ConfigMap::default();
        c.metadata.name = Some(name.into());
        c.metadata.namespace = Some(ns.into());
        c.metadata.labels.insert("app".into(), app.into());
        c
    }

    #[test]
    fn relists_replace_the_state_and_indexes_follow() {
        let store: Store<ConfigMap> = Store::default();
        store.add_index("app", |c: &ConfigMap| {
            c.metadata.labels.get("app").cloned().into_iter().collect()
        });
        store.apply(Event::Init);
        store.apply(Event::InitApply(cm("a", "x", "web")));
        store.apply(Event::InitApply(cm("a", "y", "db")));
        assert!(!store.is_ready());
        store.apply(Event::InitDone);
        assert!(store.is_ready());
        assert_eq!(store.len(), 2);
        let old = store.apply(Event::Apply(cm("a", "x", "db"))).unwrap();
        assert_eq!(old.metadata.labels["app"], "web");
        assert_eq!(store.by_index("app", "db").len(), 2);
        assert!(store.by_index("app", "web").is_empty());
        // A relist that no longer has y removes it.
        store.apply(Event::Init);
        store.apply(Event::InitApply(cm("a", "x", "db")));
        store.apply(Event::InitDone);
        assert_eq!(store.len(), 1);
        assert_eq!(store.by_index("app", "db").len(), 1);
        assert_eq!(store.by_index("namespace", "a").len(), 1);
        store.apply(Event::Delete(cm("a", "x", "db")));
        assert!(store.is_empty());
        assert!(store.by_index("namespace", "a").is_empty());
    }
}
