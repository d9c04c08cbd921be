//! In-memory backend: full MVCC history in a `BTreeMap`, for tests and simulations.

use crate::watch::{WatchHub, DEFAULT_WATCH_QUEUE_LIMIT};
use crate::{Error, Event, KeyValue, RangeRequest, RangeResponse, Result, Revision, Store, Watch};
use bytes::Bytes;
use std::collections::{BTreeMap, VecDeque};
use std::ops::Bound;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// One version of a key.
#[derive(Clone, Debug)]
struct Version {
    create: Revision,
    modified: Revision,
    /// `None` marks a delete.
    value: Option<Bytes>,
}

#[derive(Default)]
struct State {
    revision: Revision,
    /// Reads below this revision fail; watches must start at or after it.
    compacted: Revision,
    keys: BTreeMap<String, Vec<Version>>,
    /// Every event after `compacted`, in revision order.
    log: VecDeque<Arc<Event>>,
    bytes: u64,
}

impl State {
    fn check_read(&self, at: Revision) -> Result<()> {
        if at < self.compacted {
            return Err(Error::Compacted {
                requested: at,
                oldest: self.compacted,
            });
        }
        if at > self.revision {
            return Err(Error::FutureRevision {
                requested: at,
                current: self.revision,
            });
        }
        Ok(())
    }

    fn kv_at(key: &str, versions: &[Version], at: Revision) -> Option<KeyValue> {
        let v = versions.iter().rev().find(|v| v.modified <= at)?;
        let value = v.value.clone()?;
        Some(KeyValue {
            key: key.to_owned(),
            value,
            create_revision: v.create,
            mod_revision: v.modified,
        })
    }

    fn latest(&self, key: &str) -> Option<KeyValue> {
        Self::kv_at(key, self.keys.get(key)?, self.revision)
    }

    fn append(
        &mut self,
        key: &str,
        create: Revision,
        value: Option<Bytes>,
        prev: Option<KeyValue>,
    ) -> Arc<Event> {
        self.revision += 1;
        let rev = self.revision;
        self.bytes += (key.len() + value.as_ref().map_or(0, Bytes::len)) as u64;
        self.keys.entry(key.to_owned()).or_default().push(Version {
            create,
            modified: rev,
            value: value.clone(),
        });
        let event = Arc::new(Event::new(key, create, rev, value, prev));
        self.log.push_back(Arc::clone(&event));
        event
    }
}

/// The in-memory store. Cheap to create; everything is lost on drop.
pub struct MemoryStore {
    state: RwLock<State>,
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
        let state = State {
            revision: 1,
            ..Default::default()
        };
        MemoryStore {
            state: RwLock::new(state),
            hub: WatchHub::new(limit),
        }
    }

    /// Number of active watchers.
    pub fn watcher_count(&self) -> usize {
        self.hub.len()
    }

    fn read(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    fn commit(&self, state: RwLockWriteGuard<'_, State>, event: Arc<Event>) -> Revision {
        let rev = event.revision();
        // Publish while still holding the write lock: watchers see writes in revision order.
        self.hub.publish(std::slice::from_ref(&event));
        drop(state);
        rev
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
        let s = self.read();
        let at = revision.unwrap_or(s.revision);
        s.check_read(at)?;
        Ok(s.keys.get(key).and_then(|v| State::kv_at(key, v, at)))
    }

    async fn range(&self, req: RangeRequest) -> Result<RangeResponse> {
        let s = self.read();
        let at = req.revision.unwrap_or(s.revision);
        s.check_read(at)?;
        let start = match &req.start_after {
            Some(k) if k.as_str() >= req.prefix.as_str() => Bound::Excluded(k.clone()),
            _ => Bound::Included(req.prefix.clone()),
        };
        let mut resp = RangeResponse {
            revision: at,
            ..Default::default()
        };
        for (key, versions) in s.keys.range((start, Bound::Unbounded)) {
            if !key.starts_with(&req.prefix) {
                break;
            }
            let Some(kv) = State::kv_at(key, versions, at) else {
                continue;
            };
            resp.count += 1;
            if req.limit == 0 || resp.kvs.len() < req.limit {
                resp.kvs.push(kv);
            } else {
                resp.more = true;
            }
        }
        Ok(resp)
    }

    async fn count(&self, prefix: &str) -> Result<(i64, Revision)> {
        let s = self.read();
        let n = s
            .keys
            .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix))
            .filter(|(k, v)| State::kv_at(k, v, s.revision).is_some())
            .count();
        Ok((n as i64, s.revision))
    }

    async fn create(&self, key: &str, value: Bytes) -> Result<Revision> {
        let mut s = self.write();
        if s.latest(key).is_some() {
            return Err(Error::AlreadyExists {
                key: key.to_owned(),
            });
        }
        let rev = s.revision + 1;
        let event = s.append(key, rev, Some(value), None);
        Ok(self.commit(s, event))
    }

    async fn update(&self, key: &str, value: Bytes, expected: Revision) -> Result<Revision> {
        let mut s = self.write();
        let current = s.latest(key).ok_or_else(|| Error::NotFound {
            key: key.to_owned(),
        })?;
        if current.mod_revision != expected {
            return Err(Error::Conflict {
                key: key.to_owned(),
                expected,
                current: Box::new(current),
            });
        }
        let event = s.append(key, current.create_revision, Some(value), Some(current));
        Ok(self.commit(s, event))
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<(Revision, KeyValue)> {
        let mut s = self.write();
        let current = s.latest(key).ok_or_else(|| Error::NotFound {
            key: key.to_owned(),
        })?;
        if let Some(expected) = expected.filter(|e| *e != current.mod_revision) {
            return Err(Error::Conflict {
                key: key.to_owned(),
                expected,
                current: Box::new(current),
            });
        }
        let event = s.append(key, current.create_revision, None, Some(current.clone()));
        Ok((self.commit(s, event), current))
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<Watch> {
        // The write lock orders registration with writes: no event is missed or repeated.
        let s = self.write();
        if after < s.compacted {
            return Err(Error::Compacted {
                requested: after,
                oldest: s.compacted,
            });
        }
        let skip = s.log.partition_point(|e| e.revision() <= after);
        let backlog = s
            .log
            .iter()
            .skip(skip)
            .filter(|e| e.kv.key.starts_with(prefix));
        Ok(self.hub.register(prefix, backlog))
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        let mut s = self.write();
        if revision <= s.compacted {
            return Err(Error::Compacted {
                requested: revision,
                oldest: s.compacted,
            });
        }
        if revision > s.revision {
            return Err(Error::FutureRevision {
                requested: revision,
                current: s.revision,
            });
        }
        let mut freed = 0u64;
        s.keys.retain(|key, versions| {
            // Keep what is visible at `revision` (unless deleted) and everything after it.
            let keep_from = versions
                .iter()
                .rposition(|v| v.modified <= revision)
                .unwrap_or(0);
            let drop_to = if versions[keep_from].modified <= revision
                && versions[keep_from].value.is_none()
            {
                keep_from + 1
            } else {
                keep_from
            };
            for v in &versions[..drop_to] {
                freed += (key.len() + v.value.as_ref().map_or(0, Bytes::len)) as u64;
            }
            versions.drain(..drop_to);
            !versions.is_empty()
        });
        s.bytes = s.bytes.saturating_sub(freed);
        while s.log.front().is_some_and(|e| e.revision() <= revision) {
            s.log.pop_front();
        }
        s.compacted = revision;
        Ok(())
    }

    async fn current_revision(&self) -> Result<Revision> {
        Ok(self.read().revision)
    }

    async fn db_size(&self) -> Result<u64> {
        Ok(self.read().bytes)
    }
}
