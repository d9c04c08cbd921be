//! The multi-version key index shared by the memory and embedded backends: every version of
//! every key since the last compaction, the event log watchers replay, and the write checks
//! (exists, compare-and-swap) both backends apply the same way.

use crate::{Error, Event, KeyValue, RangeRequest, RangeResponse, Result, Revision};
use bytes::Bytes;
use std::collections::{BTreeMap, VecDeque};
use std::ops::Bound;
use std::sync::Arc;

/// One version of a key.
#[derive(Clone, Debug)]
struct Version {
    create: Revision,
    modified: Revision,
    /// `None` marks a delete.
    value: Option<Bytes>,
}

/// A write to check against the key's current state.
pub(crate) enum Op {
    /// Create; the key must not exist.
    Create(Bytes),
    /// Replace if the key's mod revision is the given one.
    Update(Bytes, Revision),
    /// Delete, if given only at that mod revision.
    Delete(Option<Revision>),
}

/// A checked write: what to record at the next revision.
pub(crate) struct Planned {
    /// Create revision of the key, `None` for a new key (it is the write's own revision).
    pub(crate) create: Option<Revision>,
    /// The new value; `None` deletes.
    pub(crate) value: Option<Bytes>,
    /// The key's state before.
    pub(crate) prev: Option<KeyValue>,
}

impl Planned {
    /// The event of this write at revision `rev`.
    pub(crate) fn event(self, key: &str, rev: Revision) -> Event {
        Event::new(key, self.create.unwrap_or(rev), rev, self.value, self.prev)
    }
}

/// Checks `op` on `key` whose current state is `current`.
pub(crate) fn plan(key: &str, op: Op, current: Option<KeyValue>) -> Result<Planned> {
    let not_found = || Error::NotFound {
        key: key.to_owned(),
    };
    match op {
        Op::Create(value) => match current {
            Some(_) => Err(Error::AlreadyExists {
                key: key.to_owned(),
            }),
            None => Ok(Planned {
                create: None,
                value: Some(value),
                prev: None,
            }),
        },
        Op::Update(value, expected) => {
            let cur = current.ok_or_else(not_found)?;
            if cur.mod_revision != expected {
                return Err(Error::Conflict {
                    key: key.to_owned(),
                    expected,
                    current: Box::new(cur),
                });
            }
            Ok(Planned {
                create: Some(cur.create_revision),
                value: Some(value),
                prev: Some(cur),
            })
        }
        Op::Delete(expected) => {
            let cur = current.ok_or_else(not_found)?;
            if let Some(expected) = expected.filter(|e| *e != cur.mod_revision) {
                return Err(Error::Conflict {
                    key: key.to_owned(),
                    expected,
                    current: Box::new(cur),
                });
            }
            Ok(Planned {
                create: Some(cur.create_revision),
                value: None,
                prev: Some(cur),
            })
        }
    }
}

/// Every version since `compacted`, and the events after it.
#[derive(Default)]
pub(crate) struct Mvcc {
    revision: Revision,
    /// Reads below this revision fail; watches must start at or after it.
    compacted: Revision,
    keys: BTreeMap<String, Vec<Version>>,
    /// Every event after `compacted`, in revision order.
    log: VecDeque<Arc<Event>>,
    bytes: u64,
}

impl Mvcc {
    /// An empty index at `revision`, compacted at `compacted`.
    pub(crate) fn new(revision: Revision, compacted: Revision) -> Self {
        Mvcc {
            revision,
            compacted,
            ..Default::default()
        }
    }

    pub(crate) fn revision(&self) -> Revision {
        self.revision
    }

    /// Approximate bytes of keys and values held.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

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

    /// The key's current state.
    pub(crate) fn latest(&self, key: &str) -> Option<KeyValue> {
        Self::kv_at(key, self.keys.get(key)?, self.revision)
    }

    pub(crate) fn get(&self, key: &str, revision: Option<Revision>) -> Result<Option<KeyValue>> {
        let at = revision.unwrap_or(self.revision);
        self.check_read(at)?;
        Ok(self.keys.get(key).and_then(|v| Self::kv_at(key, v, at)))
    }

    pub(crate) fn range(&self, req: &RangeRequest) -> Result<RangeResponse> {
        let at = req.revision.unwrap_or(self.revision);
        self.check_read(at)?;
        let start = match &req.start_after {
            Some(k) if k.as_str() >= req.prefix.as_str() => Bound::Excluded(k.as_str()),
            _ => Bound::Included(req.prefix.as_str()),
        };
        let mut resp = RangeResponse {
            revision: at,
            ..Default::default()
        };
        for (key, versions) in self.keys.range::<str, _>((start, Bound::Unbounded)) {
            if !key.starts_with(&req.prefix) {
                break;
            }
            let full = req.limit != 0 && resp.kvs.len() >= req.limit;
            if full {
                // Past the page: count without copying.
                let visible = versions
                    .iter()
                    .rev()
                    .find(|v| v.modified <= at)
                    .is_some_and(|v| v.value.is_some());
                if visible {
                    resp.count += 1;
                    resp.more = true;
                }
                continue;
            }
            if let Some(kv) = Self::kv_at(key, versions, at) {
                resp.count += 1;
                resp.kvs.push(kv);
            }
        }
        Ok(resp)
    }

    pub(crate) fn count(&self, prefix: &str) -> (i64, Revision) {
        let n = self
            .keys
            .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix))
            .filter(|(_, v)| v.last().is_some_and(|v| v.value.is_some()))
            .count();
        (n as i64, self.revision)
    }

    /// Records `event`, the write at the next revision.
    pub(crate) fn apply(&mut self, event: Arc<Event>) {
        debug_assert_eq!(event.revision(), self.revision + 1);
        self.push_version(&event);
        self.log.push_back(event);
    }

    /// Records a version at or below the compaction revision (reopening): it is readable but is
    /// no longer replayed to watchers.
    #[cfg(feature = "embedded")]
    pub(crate) fn restore_compacted(&mut self, event: &Event) {
        self.push_version(event);
    }

    fn push_version(&mut self, event: &Event) {
        let kv = &event.kv;
        let value = (event.kind == crate::EventKind::Put).then(|| kv.value.clone());
        self.bytes += (kv.key.len() + kv.value.len()) as u64;
        self.revision = self.revision.max(kv.mod_revision);
        let version = Version {
            create: kv.create_revision,
            modified: kv.mod_revision,
            value,
        };
        match self.keys.get_mut(kv.key.as_str()) {
            Some(versions) => versions.push(version),
            None => {
                self.keys.insert(kv.key.clone(), vec![version]);
            }
        }
    }

    /// Checks a compaction to `to`.
    pub(crate) fn check_compact(&self, to: Revision) -> Result<()> {
        if to <= self.compacted {
            return Err(Error::Compacted {
                requested: to,
                oldest: self.compacted,
            });
        }
        if to > self.revision {
            return Err(Error::FutureRevision {
                requested: to,
                current: self.revision,
            });
        }
        Ok(())
    }

    /// Discards the versions hidden at `to` (each key keeps what is visible then) and the events
    /// up to it. Returns the revisions of the discarded versions.
    pub(crate) fn compact(&mut self, to: Revision) -> Result<Vec<Revision>> {
        self.check_compact(to)?;
        let mut freed = 0u64;
        let mut dropped = Vec::new();
        self.keys.retain(|key, versions| {
            // Keep what is visible at `to` (unless deleted) and everything after it.
            let Some(last_below) = versions.iter().rposition(|v| v.modified <= to) else {
                return true;
            };
            let drop_to = if versions[last_below].value.is_none() {
                last_below + 1
            } else {
                last_below
            };
            for v in versions.drain(..drop_to) {
                freed += (key.len() + v.value.as_ref().map_or(0, Bytes::len)) as u64;
                dropped.push(v.modified);
            }
            !versions.is_empty()
        });
        self.bytes = self.bytes.saturating_sub(freed);
        while self.log.front().is_some_and(|e| e.revision() <= to) {
            self.log.pop_front();
        }
        self.compacted = to;
        Ok(dropped)
    }

    /// The retained events under `prefix` after `after`, for a new watcher.
    pub(crate) fn backlog<'a>(
        &'a self,
        prefix: &'a str,
        after: Revision,
    ) -> Result<impl Iterator<Item = &'a Arc<Event>> + 'a> {
        if after < self.compacted {
            return Err(Error::Compacted {
                requested: after,
                oldest: self.compacted,
            });
        }
        let skip = self.log.partition_point(|e| e.revision() <= after);
        Ok(self
            .log
            .iter()
            .skip(skip)
            .filter(move |e| e.kv.key.starts_with(prefix)))
    }
}
