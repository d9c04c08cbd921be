//! A versioned key-value store with etcd semantics: the one place cluster state lives.
//!
//! Every write increments one global revision; each key remembers the revision that created it
//! and the one that last modified it. Reads can be made at any retained revision, ranges page
//! with a continue key while staying at one revision, updates and deletes compare-and-swap on
//! the key's modification revision, and watches deliver every change after a given revision, in
//! order, with previous values. Compaction discards history up to a revision.
//!
//! ```
//! use bosun_store::{memory::MemoryStore, Store, RangeRequest, EventKind};
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let store = MemoryStore::new();
//! let rev = store.create("/registry/pods/default/web", "v1".into()).await?;
//! let mut watch = store.watch("/registry/pods/", rev).await?;
//! let rev2 = store.update("/registry/pods/default/web", "v2".into(), rev).await?;
//! let event = watch.next().await.unwrap()?;
//! assert_eq!(event.kind, EventKind::Put);
//! assert_eq!(event.kv.mod_revision, rev2);
//! assert_eq!(event.prev_kv.as_ref().unwrap().value, "v1");
//! // A stale compare-and-swap is a conflict that carries the current value.
//! let err = store.update("/registry/pods/default/web", "v3".into(), rev).await.unwrap_err();
//! assert!(matches!(err, bosun_store::Error::Conflict { .. }));
//! let page = store.range(RangeRequest::prefix("/registry/pods/").limit(10)).await?;
//! assert_eq!(page.kvs.len(), 1);
//! # Ok::<(), bosun_store::Error>(())
//! # }).unwrap();
//! ```
//!
//! Backends: [`memory::MemoryStore`] (tests, simulations), `embedded::EmbeddedStore` (durable,
//! the default; feature `embedded`). Third-party backends prove themselves
//! with [`conformance`] (feature `conformance`).

pub mod compactor;
#[cfg(feature = "embedded")]
pub mod embedded;
#[cfg(feature = "etcd")]
pub mod etcd;
pub mod memory;
mod mvcc;
mod watch;

#[cfg(feature = "conformance")]
pub mod conformance;

use bytes::Bytes;

pub use watch::{watch_channel, Watch, WatchSender};

/// A store revision: incremented by every write; the `resourceVersion` of the API.
pub type Revision = i64;

/// A key and its value at some revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    /// The key.
    pub key: String,
    /// The value (empty in the `kv` of a delete event).
    pub value: Bytes,
    /// Revision of the write that created the key.
    pub create_revision: Revision,
    /// Revision of the write that last changed it (the delete itself, in a delete event).
    pub mod_revision: Revision,
}

/// What a watch event reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// A create or an update.
    Put,
    /// A delete.
    Delete,
}

/// One change, as delivered by [`Store::watch`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// Put or delete.
    pub kind: EventKind,
    /// The key's new state; for a delete, the key with `mod_revision` = the delete's revision.
    pub kv: KeyValue,
    /// The key's state before this change (absent for a create).
    pub prev_kv: Option<KeyValue>,
}

impl Event {
    /// The event of a write at `revision` to `key`: a put of `value`, or a delete if `None`.
    pub fn new(
        key: &str,
        create_revision: Revision,
        revision: Revision,
        value: Option<Bytes>,
        prev_kv: Option<KeyValue>,
    ) -> Self {
        let kind = if value.is_some() {
            EventKind::Put
        } else {
            EventKind::Delete
        };
        let kv = KeyValue {
            key: key.to_owned(),
            value: value.unwrap_or_default(),
            create_revision,
            mod_revision: revision,
        };
        Event { kind, kv, prev_kv }
    }

    /// Revision of the write this event reports.
    pub fn revision(&self) -> Revision {
        self.kv.mod_revision
    }
}

/// A consistent, paginated read of keys under a prefix.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeRequest {
    /// Keys starting with this prefix.
    pub prefix: String,
    /// Start strictly after this key (the last key of the previous page).
    pub start_after: Option<String>,
    /// At most this many keys; 0 means no limit.
    pub limit: usize,
    /// Read at this revision; `None` for the latest.
    pub revision: Option<Revision>,
}

impl RangeRequest {
    /// Every key with this prefix, at the latest revision.
    pub fn prefix(prefix: impl Into<String>) -> Self {
        RangeRequest {
            prefix: prefix.into(),
            ..Default::default()
        }
    }

    /// Return at most `limit` keys.
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = limit;
        self
    }

    /// Start after `key` (a continue token).
    pub fn start_after(mut self, key: impl Into<String>) -> Self {
        self.start_after = Some(key.into());
        self
    }

    /// Read at `revision`.
    pub fn at(mut self, revision: Revision) -> Self {
        self.revision = Some(revision);
        self
    }
}

/// One page of a range.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeResponse {
    /// The keys, in key order.
    pub kvs: Vec<KeyValue>,
    /// Whether more keys follow this page.
    pub more: bool,
    /// How many keys under the prefix remain from the start of this page (this page included).
    pub count: i64,
    /// The revision the range was read at; pass it to the next page.
    pub revision: Revision,
}

/// Store errors. Each names the key or revision involved.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// `create` of a key that exists.
    #[error("key {key:?} already exists")]
    AlreadyExists {
        /// The key.
        key: String,
    },
    /// `update`/`delete` of a key that does not exist.
    #[error("key {key:?} not found")]
    NotFound {
        /// The key.
        key: String,
    },
    /// A compare-and-swap whose expected revision is not the key's current one.
    #[error("key {key:?} was modified: expected revision {expected}, current revision {}", current.mod_revision)]
    Conflict {
        /// The key.
        key: String,
        /// The revision the caller expected.
        expected: Revision,
        /// The key's current state, for a retry.
        current: Box<KeyValue>,
    },
    /// A read or watch at a revision that compaction discarded.
    #[error("revision {requested} has been compacted; the oldest available revision is {oldest}")]
    Compacted {
        /// The revision asked for.
        requested: Revision,
        /// The oldest revision still readable (the compaction revision).
        oldest: Revision,
    },
    /// A read at a revision not reached yet.
    #[error("revision {requested} is in the future; the current revision is {current}")]
    FutureRevision {
        /// The revision asked for.
        requested: Revision,
        /// The current revision.
        current: Revision,
    },
    /// A watcher fell too far behind and was dropped; watch again from its last revision.
    #[error("watcher fell behind by more than {0} events and was dropped")]
    WatcherLagged(usize),
    /// The backend failed (I/O, corruption, unreachable cluster), with context.
    #[error("storage backend: {0}")]
    Backend(String),
    /// The store is shut down.
    #[error("store is closed")]
    Closed,
}

/// Result of store operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What the API server needs from its storage: etcd's semantics, in nine operations.
///
/// Implementations are `Send + Sync` and used as `Arc<dyn Store>`. Writes are linearizable: each
/// returns the revision it created, and every watcher sees writes in revision order.
///
/// ```
/// use bosun_store::{memory::MemoryStore, Store};
/// use std::sync::Arc;
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
/// let created = store.create("/registry/configmaps/default/a", "{}".into()).await?;
/// let (deleted, old) = store.delete("/registry/configmaps/default/a", Some(created)).await?;
/// assert!(deleted > created && old.mod_revision == created);
/// # Ok::<(), bosun_store::Error>(()) }).unwrap();
/// ```
///
/// A new backend proves itself with `bosun_store::conformance::run_all` (feature
/// `conformance`); `examples/src/log_store.rs` is one written from scratch.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// The key's value at `revision` (latest if `None`); `None` if absent then.
    async fn get(&self, key: &str, revision: Option<Revision>) -> Result<Option<KeyValue>>;

    /// A page of keys under a prefix, all read at one revision.
    async fn range(&self, request: RangeRequest) -> Result<RangeResponse>;

    /// How many keys are under `prefix`, and the revision counted at.
    async fn count(&self, prefix: &str) -> Result<(i64, Revision)>;

    /// Creates `key`; fails with [`Error::AlreadyExists`] if it exists. Returns the new revision.
    async fn create(&self, key: &str, value: Bytes) -> Result<Revision>;

    /// Replaces `key`'s value if its mod revision is `expected`; otherwise [`Error::Conflict`].
    async fn update(&self, key: &str, value: Bytes, expected: Revision) -> Result<Revision>;

    /// Deletes `key` (only if its mod revision is `expected`, when given). Returns the new
    /// revision and the deleted value.
    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<(Revision, KeyValue)>;

    /// Every change to keys under `prefix` after revision `after`, in revision order. Fails with
    /// [`Error::Compacted`] if changes after `after` are no longer retained.
    async fn watch(&self, prefix: &str, after: Revision) -> Result<Watch>;

    /// Discards history before `revision`: reads below it fail with [`Error::Compacted`].
    async fn compact(&self, revision: Revision) -> Result<()>;

    /// The latest revision.
    async fn current_revision(&self) -> Result<Revision>;

    /// Size of the stored data in bytes (approximate for in-memory backends).
    async fn db_size(&self) -> Result<u64>;
}
