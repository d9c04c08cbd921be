//! In-memory backend: full MVCC history in a `BTreeMap`, for tests and simulations.

use crate::mvcc::{plan, Mvcc, Op};
use crate::watch::{WatchHub, DEFAULT_WATCH_QUEUE_LIMIT};
use crate::{Error, KeyValue, RangeRequest, RangeResponse, Result, Revision, Store, Watch};
use bytes::Bytes;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// The in-memory store. Cheap to create; everything is lost on drop.
///
/// ```
/// use bosun_store::{memory::MemoryStore, RangeRequest, Store};
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let store = MemoryStore::new();
/// store.create("/registry/pods/default/a", "{}".into()).await?;
/// store.create("/registry/pods/default/b", "{}".into()).await?;
/// let page = store.range(RangeRequest::prefix("/registry/pods/").limit(1)).await?;
/// assert!(page.more && page.count == 2);
/// # Ok::<(), bosun_store::Error>(()) }).unwrap();
/// ```
pub struct MemoryStore {
    state: RwLock<Mvcc>,
    hub: WatchHub,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// An empty store at revision 1 (as a fresh etcd).
    pub fn new() -> Self {
        Self::with_watch_queue_limit(DEFAULT_WATCH_QUEUE_LIMIT)
    }

    /// An empty store whose watchers are dropped once `limit` events queue up unread.
    pub fn with_watch_queue_limit(limit: usize) -> Self {
        MemoryStore {
            state: RwLock::new(Mvcc::new(1, 0)),
            hub: WatchHub::new(limit),
        }
    }

    /// Number of active watchers.
    pub fn watcher_count(&self) -> usize {
        self.hub.len()
    }

    fn read(&self) -> RwLockReadGuard<'_, Mvcc> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Mvcc> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Checks and applies one write; returns its revision and the key's previous state.
    fn apply(&self, key: &str, op: Op) -> Result<(Revision, Option<KeyValue>)> {
        let mut s = self.write();
        let planned = plan(key, op, s.latest(key))?;
        let rev = s.revision() + 1;
        let event = Arc::new(planned.event(key, rev));
        let prev = event.prev_kv.clone();
        s.apply(Arc::clone(&event));
        // Publish while still holding the write lock: watchers see writes in revision order.
        self.hub.publish(std::slice::from_ref(&event));
        Ok((rev, prev))
    }
}

impl Drop for MemoryStore {
    fn drop(&mut self) {
        self.hub.close();
    }
}

#[async_trait::async_trait]
impl Store for MemoryStore {
    async fn get(&self, key: &str, revision: Option<Revision>) -> Result<Option<KeyValue>> {
        self.read().get(key, revision)
    }

    async fn range(&self, req: RangeRequest) -> Result<RangeResponse> {
        self.read().range(&req)
    }

    async fn count(&self, prefix: &str) -> Result<(i64, Revision)> {
        Ok(self.read().count(prefix))
    }

    async fn create(&self, key: &str, value: Bytes) -> Result<Revision> {
        Ok(self.apply(key, Op::Create(value))?.0)
    }

    async fn update(&self, key: &str, value: Bytes, expected: Revision) -> Result<Revision> {
        Ok(self.apply(key, Op::Update(value, expected))?.0)
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<(Revision, KeyValue)> {
        let (rev, prev) = self.apply(key, Op::Delete(expected))?;
        let prev = prev.ok_or_else(|| Error::Backend("delete without a previous value".into()))?;
        Ok((rev, prev))
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<Watch> {
        // Writes publish under the write lock: holding the read lock orders registration with
        // them, so no event is missed or repeated.
        let s = self.read();
        let backlog = s.backlog(prefix, after)?;
        Ok(self.hub.register(prefix, backlog))
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        self.write().compact(revision).map(drop)
    }

    async fn current_revision(&self) -> Result<Revision> {
        Ok(self.read().revision())
    }

    async fn db_size(&self) -> Result<u64> {
        Ok(self.read().bytes())
    }
}
