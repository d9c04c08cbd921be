//! A custom [`Store`] written from scratch: one append-only log of every write, replayed for
//! reads at past revisions, folded into a snapshot on compaction. Small and slow on long
//! histories — it is here to show the seam: anything that keeps etcd's semantics, proven by
//! `bosun_store::conformance`, can hold a cluster (see [`crate::orchestrator`]).
//!
//! ```
//! use bosun_examples::log_store::LogStore;
//! use bosun_store::Store;
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let store = LogStore::new();
//! let r1 = store.create("/registry/configmaps/default/a", "v1".into()).await?;
//! let r2 = store.update("/registry/configmaps/default/a", "v2".into(), r1).await?;
//! let then = store.get("/registry/configmaps/default/a", Some(r1)).await?.unwrap();
//! assert_eq!((then.value.as_ref(), r2), (&b"v1"[..], r1 + 1));
//! # Ok::<(), bosun_store::Error>(())
//! # }).unwrap();
//! ```

use bosun_store::{
    watch_channel, Error, Event, KeyValue, RangeRequest, RangeResponse, Result, Revision, Store,
    Watch, WatchSender,
};
use bytes::Bytes;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// The log store: see the [module](self).
#[derive(Default)]
pub struct LogStore {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The keys as they were at `compacted`.
    snapshot: BTreeMap<String, KeyValue>,
    /// Reads below this revision fail.
    compacted: Revision,
    /// Every write after `compacted`, in revision order.
    log: Vec<Arc<Event>>,
    /// The keys now (what replaying the whole log onto the snapshot gives).
    now: BTreeMap<String, KeyValue>,
    revision: Revision,
    watchers: Vec<(String, WatchSender)>,
}

impl State {
    /// Fails unless `rev` can be read.
    fn check(&self, rev: Revision) -> Result<()> {
        if rev < self.compacted {
            return Err(Error::Compacted {
                requested: rev,
                oldest: self.compacted,
            });
        }
        if rev > self.revision {
            return Err(Error::FutureRevision {
                requested: rev,
                current: self.revision,
            });
        }
        Ok(())
    }

    /// The key now, or [`Error::NotFound`].
    fn current(&self, key: &str) -> Result<KeyValue> {
        self.now
            .get(key)
            .cloned()
            .ok_or_else(|| Error::NotFound { key: key.into() })
    }

    /// The keys under `prefix` at revision `rev` (checked): the snapshot, then the log.
    fn at(&self, prefix: &str, rev: Revision) -> BTreeMap<String, KeyValue> {
        if rev == self.revision {
            return under(&self.now, prefix);
        }
        let mut keys = under(&self.snapshot, prefix);
        for e in self.log.iter().take_while(|e| e.revision() <= rev) {
            if e.kv.key.starts_with(prefix) {
                apply(&mut keys, e);
            }
        }
        keys
    }

    /// Records a write: the next revision, logged, applied, sent to the watchers.
    fn write(&mut self, key: &str, value: Option<Bytes>, prev: Option<KeyValue>) -> Revision {
        self.revision += 1;
        let rev = self.revision;
        let create = prev.as_ref().map_or(rev, |p| p.create_revision);
        let event = Arc::new(Event::new(key, create, rev, value, prev));
        apply(&mut self.now, &event);
        self.log.push(Arc::clone(&event));
        // A watcher that is gone is dropped.
        self.watchers.retain(|(prefix, tx)| {
            !key.starts_with(prefix.as_str()) || tx.send(Ok(Arc::clone(&event)))
        });
        rev
    }
}

fn under(keys: &BTreeMap<String, KeyValue>, prefix: &str) -> BTreeMap<String, KeyValue> {
    keys.range(prefix.to_string()..)
        .take_while(|(k, _)| k.starts_with(prefix))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn apply(keys: &mut BTreeMap<String, KeyValue>, e: &Event) {
    match e.kind {
        bosun_store::EventKind::Put => {
            keys.insert(e.kv.key.clone(), e.kv.clone());
        }
        bosun_store::EventKind::Delete => {
            keys.remove(&e.kv.key);
        }
    }
}

impl LogStore {
    /// An empty store at revision 0.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait::async_trait]
impl Store for LogStore {
    async fn get(&self, key: &str, revision: Option<Revision>) -> Result<Option<KeyValue>> {
        let s = self.lock();
        let rev = revision.unwrap_or(s.revision);
        s.check(rev)?;
        if rev == s.revision {
            return Ok(s.now.get(key).cloned());
        }
        Ok(s.at(key, rev).remove(key))
    }

    async fn range(&self, request: RangeRequest) -> Result<RangeResponse> {
        let s = self.lock();
        let rev = request.revision.unwrap_or(s.revision);
        s.check(rev)?;
        let keys = s.at(&request.prefix, rev);
        let left: Vec<KeyValue> = keys
            .into_values()
            .filter(|kv| request.start_after.as_ref().is_none_or(|a| kv.key > *a))
            .collect();
        let count = i64::try_from(left.len()).unwrap_or(i64::MAX);
        let limit = if request.limit == 0 {
            usize::MAX
        } else {
            request.limit
        };
        Ok(RangeResponse {
            more: left.len() > limit,
            kvs: left.into_iter().take(limit).collect(),
            count,
            revision: rev,
        })
    }

    async fn count(&self, prefix: &str) -> Result<(i64, Revision)> {
        let s = self.lock();
        let n = under(&s.now, prefix).len();
        Ok((i64::try_from(n).unwrap_or(i64::MAX), s.revision))
    }

    async fn create(&self, key: &str, value: Bytes) -> Result<Revision> {
        let mut s = self.lock();
        if s.now.contains_key(key) {
            return Err(Error::AlreadyExists { key: key.into() });
        }
        Ok(s.write(key, Some(value), None))
    }

    async fn update(&self, key: &str, value: Bytes, expected: Revision) -> Result<Revision> {
        let mut s = self.lock();
        let current = s.current(key)?;
        if current.mod_revision != expected {
            return Err(Error::Conflict {
                key: key.into(),
                expected,
                current: Box::new(current),
            });
        }
        Ok(s.write(key, Some(value), Some(current)))
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<(Revision, KeyValue)> {
        let mut s = self.lock();
        let current = s.current(key)?;
        if let Some(expected) = expected.filter(|e| *e != current.mod_revision) {
            return Err(Error::Conflict {
                key: key.into(),
                expected,
                current: Box::new(current),
            });
        }
        let rev = s.write(key, None, Some(current.clone()));
        Ok((rev, current))
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<Watch> {
        let mut s = self.lock();
        if after < s.compacted {
            return Err(Error::Compacted {
                requested: after,
                oldest: s.compacted,
            });
        }
        // Replayed and registered under one lock: no write falls between.
        let (tx, watch) = watch_channel();
        for e in s
            .log
            .iter()
            .filter(|e| e.revision() > after && e.kv.key.starts_with(prefix))
        {
            tx.send(Ok(Arc::clone(e)));
        }
        s.watchers.push((prefix.to_string(), tx));
        Ok(watch)
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        let mut s = self.lock();
        if revision <= s.compacted {
            return Err(Error::Compacted {
                requested: revision,
                oldest: s.compacted,
            });
        }
        s.check(revision)?;
        let folded = s.log.partition_point(|e| e.revision() <= revision);
        let old: Vec<Arc<Event>> = s.log.drain(..folded).collect();
        for e in &old {
            apply(&mut s.snapshot, e);
        }
        s.compacted = revision;
        Ok(())
    }

    async fn current_revision(&self) -> Result<Revision> {
        Ok(self.lock().revision)
    }

    async fn db_size(&self) -> Result<u64> {
        let s = self.lock();
        let bytes: usize = s
            .snapshot
            .values()
            .map(|kv| kv.key.len() + kv.value.len())
            .sum::<usize>()
            + s.log
                .iter()
                .map(|e| e.kv.key.len() + e.kv.value.len())
                .sum::<usize>();
        Ok(bytes as u64)
    }
}
