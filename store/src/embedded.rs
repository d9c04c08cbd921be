//! Embedded durable backend on [redb](https://www.redb.org): the default store of `bosun server`.
//!
//! Layout (three tables in one file):
//! - `kv`: `key \0 revision(8 bytes, big-endian)` → `create_revision(8) | 1 put / 0 delete | value`:
//!   every version of every key since the last compaction, versions of a key adjacent and in order;
//! - `log`: `revision` → `key`: which key each revision wrote (watch replay);
//! - `meta`: `revision`, `compacted`.
//!
//! Writes go to one writer thread that batches every request waiting into one transaction and
//! commits it with an fsync (group commit): concurrent writers share syncs, and a write is
//! acknowledged only after its batch is durable. Watchers receive events after the commit.

use crate::watch::{WatchHub, DEFAULT_WATCH_QUEUE_LIMIT};
use crate::{Error, Event, KeyValue, RangeRequest, RangeResponse, Result, Revision, Store, Watch};
use bytes::Bytes;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};
use tokio::sync::oneshot;

const KV: TableDefinition<&[u8], &[u8]> = TableDefinition::new("kv");
const LOG: TableDefinition<u64, &str> = TableDefinition::new("log");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// Most write requests folded into one transaction.
const MAX_BATCH: usize = 1024;

macro_rules! try_db {
    ($e:expr, $ctx:expr) => {
        $e.map_err(|e| Error::Backend(format!("{}: {e}", $ctx)))
    };
}

fn version_key(key: &str, rev: Revision) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 9);
    k.extend_from_slice(key.as_bytes());
    k.push(0);
    k.extend_from_slice(&(rev as u64).to_be_bytes());
    k
}

/// Bounds of every version of `key`.
fn key_bounds(key: &str) -> (Vec<u8>, Vec<u8>) {
    (version_key(key, 0), version_key(key, i64::MAX))
}

fn split_version_key(raw: &[u8]) -> Result<(&str, Revision)> {
    let corrupt = || Error::Backend("corrupt kv entry key".into());
    if raw.len() < 9 {
        return Err(corrupt());
    }
    let (k, rev) = raw.split_at(raw.len() - 9);
    let key = std::str::from_utf8(k).map_err(|_| corrupt())?;
    let rev = u64::from_be_bytes(rev[1..].try_into().map_err(|_| corrupt())?);
    Ok((key, rev as Revision))
}

fn encode_value(create: Revision, value: Option<&[u8]>) -> Vec<u8> {
    let mut v = Vec::with_capacity(9 + value.map_or(0, <[u8]>::len));
    v.extend_from_slice(&(create as u64).to_be_bytes());
    match value {
        Some(b) => {
            v.push(1);
            v.extend_from_slice(b);
        }
        None => v.push(0),
    }
    v
}

/// (create revision, value or `None` for a delete).
fn decode_value(raw: &[u8]) -> Result<(Revision, Option<Bytes>)> {
    if raw.len() < 9 {
        return Err(Error::Backend("corrupt kv entry value".into()));
    }
    let create = u64::from_be_bytes(
        raw[..8]
            .try_into()
            .map_err(|_| Error::Backend("corrupt value".into()))?,
    );
    let value = (raw[8] == 1).then(|| Bytes::copy_from_slice(&raw[9..]));
    Ok((create as Revision, value))
}

/// The version of `key` visible at `at`, if any (a delete hides the key).
fn kv_at<T: ReadableTable<&'static [u8], &'static [u8]>>(
    table: &T,
    key: &str,
    at: Revision,
) -> Result<Option<KeyValue>> {
    let (lo, _) = key_bounds(key);
    let hi = version_key(key, at);
    let mut it = try_db!(table.range(lo.as_slice()..=hi.as_slice()), "kv range")?;
    let Some(entry) = it.next_back() else {
        return Ok(None);
    };
    let (k, v) = try_db!(entry, "kv read")?;
    let (_, modified) = split_version_key(k.value())?;
    let (create, value) = decode_value(v.value())?;
    Ok(value.map(|value| KeyValue {
        key: key.to_owned(),
        value,
        create_revision: create,
        mod_revision: modified,
    }))
}

/// The exact version written at `rev`, and the one before it (for prev_kv).
fn event_at<T: ReadableTable<&'static [u8], &'static [u8]>>(
    table: &T,
    key: &str,
    rev: Revision,
) -> Result<Event> {
    let (lo, _) = key_bounds(key);
    let hi = version_key(key, rev);
    let mut it = try_db!(table.range(lo.as_slice()..=hi.as_slice()), "kv range")?;
    let missing = || {
        Error::Backend(format!(
            "log names {key:?} at revision {rev} but the version is missing"
        ))
    };
    let (k, v) = try_db!(it.next_back().ok_or_else(missing)?, "kv read")?;
    if split_version_key(k.value())?.1 != rev {
        return Err(missing());
    }
    let (create, value) = decode_value(v.value())?;
    let prev = match it.next_back() {
        Some(entry) => {
            let (pk, pv) = try_db!(entry, "kv read")?;
            let (_, prev_mod) = split_version_key(pk.value())?;
            let (prev_create, prev_value) = decode_value(pv.value())?;
            prev_value.map(|value| KeyValue {
                key: key.to_owned(),
                value,
                create_revision: prev_create,
                mod_revision: prev_mod,
            })
        }
        None => None,
    };
    Ok(Event::new(key, create, rev, value, prev))
}

fn meta_get<T: ReadableTable<&'static str, u64>>(t: &T, name: &str) -> Result<Option<u64>> {
    Ok(try_db!(t.get(name), "meta read")?.map(|v| v.value()))
}

enum Cmd {
    Create(String, Bytes, oneshot::Sender<Result<Revision>>),
    Update(String, Bytes, Revision, oneshot::Sender<Result<Revision>>),
    Delete(
        String,
        Option<Revision>,
        oneshot::Sender<Result<(Revision, KeyValue)>>,
    ),
    Compact(Revision, oneshot::Sender<Result<()>>),
}

/// A reply to send once the batch is durable.
enum Reply {
    Rev(oneshot::Sender<Result<Revision>>, Result<Revision>),
    Del(
        oneshot::Sender<Result<(Revision, KeyValue)>>,
        Result<(Revision, KeyValue)>,
    ),
    Unit(oneshot::Sender<Result<()>>, Result<()>),
}

impl Reply {
    fn fail(self, e: &Error) -> Reply {
        match self {
            Reply::Rev(tx, Ok(_)) => Reply::Rev(tx, Err(e.clone())),
            Reply::Del(tx, Ok(_)) => Reply::Del(tx, Err(e.clone())),
            Reply::Unit(tx, Ok(())) => Reply::Unit(tx, Err(e.clone())),
            other => other,
        }
    }

    fn send(self) {
        match self {
            Reply::Rev(tx, r) => drop(tx.send(r)),
            Reply::Del(tx, r) => drop(tx.send(r)),
            Reply::Unit(tx, r) => drop(tx.send(r)),
        }
    }
}

/// What watchers have been sent, guarded with the hub so registration and publishing serialize.
struct Published {
    revision: Revision,
}

struct Shared {
    db: Database,
    hub: WatchHub,
    published: Mutex<Published>,
}

/// The embedded durable store. Open one per data directory.
pub struct EmbeddedStore {
    shared: Arc<Shared>,
    writer: Mutex<Option<mpsc::Sender<Cmd>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    path: PathBuf,
}

impl EmbeddedStore {
    /// Opens (or creates) the store in file `path`. Reopening after a crash yields exactly the
    /// acknowledged writes (and possibly writes whose acknowledgement was lost with the crash).
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                Error::Backend(format!("creating data directory {}: {e}", dir.display()))
            })?;
        }
        let db = Database::create(&path)
            .map_err(|e| Error::Backend(format!("opening {}: {e}", path.display())))?;
        let revision = {
            let txn = try_db!(db.begin_write(), "begin")?;
            let rev = {
                let mut meta = try_db!(txn.open_table(META), "open meta")?;
                try_db!(txn.open_table(KV), "open kv")?;
                try_db!(txn.open_table(LOG), "open log")?;
                match meta_get(&meta, "revision")? {
                    Some(r) => r as Revision,
                    None => {
                        try_db!(meta.insert("revision", 1u64), "init meta")?;
                        try_db!(meta.insert("compacted", 0u64), "init meta")?;
                        1
                    }
                }
            };
            try_db!(txn.commit(), "commit")?;
            rev
        };
        let shared = Arc::new(Shared {
            db,
            hub: WatchHub::new(DEFAULT_WATCH_QUEUE_LIMIT),
            published: Mutex::new(Published { revision }),
        });
        let (tx, rx) = mpsc::channel();
        let worker = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("bosun-store-writer".into())
            .spawn(move || writer_loop(&worker, &rx))
            .map_err(|e| Error::Backend(format!("starting the writer thread: {e}")))?;
        tracing::info!(path = %path.display(), revision, "embedded store opened");
        Ok(EmbeddedStore {
            shared,
            writer: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
            path,
        })
    }

    /// Number of active watchers.
    pub fn watcher_count(&self) -> usize {
        self.shared.hub.len()
    }

    fn send(&self, cmd: Cmd) -> Result<()> {
        let guard = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        guard
            .as_ref()
            .ok_or(Error::Closed)?
            .send(cmd)
            .map_err(|_| Error::Closed)
    }

    fn read<R>(&self, f: impl FnOnce(&redb::ReadTransaction) -> Result<R>) -> Result<R> {
        let txn = try_db!(self.shared.db.begin_read(), "begin read")?;
        f(&txn)
    }

    /// Checks a read revision against (compacted, current).
    fn read_at(txn: &redb::ReadTransaction, requested: Option<Revision>) -> Result<Revision> {
        let meta = try_db!(txn.open_table(META), "open meta")?;
        let current = meta_get(&meta, "revision")?.unwrap_or(1) as Revision;
        let compacted = meta_get(&meta, "compacted")?.unwrap_or(0) as Revision;
        let at = requested.unwrap_or(current);
        if at < compacted {
            return Err(Error::Compacted {
                requested: at,
                oldest: compacted,
            });
        }
        if at > current {
            return Err(Error::FutureRevision {
                requested: at,
                current,
            });
        }
        Ok(at)
    }

    /// Stops the writer after pending writes and ends every watch.
    pub fn close(&self) {
        drop(self.writer.lock().unwrap_or_else(|p| p.into_inner()).take());
        if let Some(t) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = t.join();
        }
        self.shared.hub.close();
    }
}

impl Drop for EmbeddedStore {
    fn drop(&mut self) {
        self.close();
    }
}

fn writer_loop(shared: &Shared, rx: &mpsc::Receiver<Cmd>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(c) => batch.push(c),
                Err(_) => break,
            }
        }
        let (replies, events, revision) = match apply_batch(&shared.db, batch) {
            Ok(done) => done,
            Err((replies, e)) => {
                tracing::error!(error = %e, "store write batch failed");
                replies.into_iter().for_each(|r| r.fail(&e).send());
                continue;
            }
        };
        {
            let mut published = shared.published.lock().unwrap_or_else(|p| p.into_inner());
            shared.hub.publish(&events);
            published.revision = revision;
        }
        replies.into_iter().for_each(Reply::send);
    }
}

type Applied = (Vec<Reply>, Vec<Arc<Event>>, Revision);

/// The tables of one write transaction and what the batch has done so far.
struct Batch<'t> {
    kv: redb::Table<'t, &'static [u8], &'static [u8]>,
    log: redb::Table<'t, u64, &'static str>,
    revision: Revision,
    events: Vec<Arc<Event>>,
}

impl Batch<'_> {
    fn current(&self, key: &str) -> Result<Option<KeyValue>> {
        kv_at(&self.kv, key, self.revision)
    }

    /// Writes the next revision of `key` (`None` deletes) and records its event.
    fn write(
        &mut self,
        key: &str,
        create: Option<Revision>,
        value: Option<&Bytes>,
        prev: Option<KeyValue>,
    ) -> Result<Revision> {
        self.revision += 1;
        let rev = self.revision;
        let create = create.unwrap_or(rev);
        let vk = version_key(key, rev);
        let vv = encode_value(create, value.map(|b| b.as_ref()));
        try_db!(self.kv.insert(vk.as_slice(), vv.as_slice()), "kv insert")?;
        try_db!(self.log.insert(rev as u64, key), "log insert")?;
        self.events
            .push(Arc::new(Event::new(key, create, rev, value.cloned(), prev)));
        Ok(rev)
    }

    /// Applies one command; a failed table write fails the whole batch (`Err`), a refused
    /// command (conflict, missing key) only its own reply.
    fn apply(
        &mut self,
        cmd: Cmd,
        compacted: &mut Revision,
        meta: &mut redb::Table<'_, &'static str, u64>,
    ) -> Result<Reply> {
        Ok(match cmd {
            Cmd::Create(key, value, tx) => {
                let r = if key.contains('\0') {
                    Err(Error::Backend(format!("key {key:?} contains a NUL byte")))
                } else if self.current(&key)?.is_some() {
                    Err(Error::AlreadyExists { key })
                } else {
                    Ok(self.write(&key, None, Some(&value), None)?)
                };
                Reply::Rev(tx, r)
            }
            Cmd::Update(key, value, expected, tx) => {
                let r = match self.current(&key)? {
                    None => Err(Error::NotFound { key }),
                    Some(cur) if cur.mod_revision != expected => Err(Error::Conflict {
                        key,
                        expected,
                        current: Box::new(cur),
                    }),
                    Some(cur) => {
                        Ok(self.write(&key, Some(cur.create_revision), Some(&value), Some(cur))?)
                    }
                };
                Reply::Rev(tx, r)
            }
            Cmd::Delete(key, expected, tx) => {
                let r = match self.current(&key)? {
                    None => Err(Error::NotFound { key }),
                    Some(cur) if expected.is_some_and(|e| e != cur.mod_revision) => {
                        Err(Error::Conflict {
                            key,
                            expected: expected.unwrap_or_default(),
                            current: Box::new(cur),
                        })
                    }
                    Some(cur) => Ok((
                        self.write(&key, Some(cur.create_revision), None, Some(cur.clone()))?,
                        cur,
                    )),
                };
                Reply::Del(tx, r)
            }
            Cmd::Compact(to, tx) => {
                let r = if to <= *compacted {
                    Err(Error::Compacted {
                        requested: to,
                        oldest: *compacted,
                    })
                } else if to > self.revision {
                    Err(Error::FutureRevision {
                        requested: to,
                        current: self.revision,
                    })
                } else {
                    compact(&mut self.kv, &mut self.log, to)?;
                    try_db!(meta.insert("compacted", to as u64), "meta write")?;
                    *compacted = to;
                    Ok(())
                };
                Reply::Unit(tx, r)
            }
        })
    }
}

/// Applies a batch in one transaction and commits it durably.
fn apply_batch(
    db: &Database,
    batch: Vec<Cmd>,
) -> std::result::Result<Applied, (Vec<Reply>, Error)> {
    let mut txn = match db.begin_write() {
        Ok(t) => t,
        Err(e) => {
            let err = Error::Backend(format!("begin write: {e}"));
            return Err((batch.into_iter().map(|c| reply_err(c, &err)).collect(), err));
        }
    };
    // Acknowledged means on disk: commit fsyncs.
    let _ = txn.set_durability(redb::Durability::Immediate);
    let mut replies = Vec::with_capacity(batch.len());
    let mut cmds = batch.into_iter();
    let outcome = (|| -> Result<(Vec<Arc<Event>>, Revision)> {
        let mut meta = try_db!(txn.open_table(META), "open meta")?;
        let mut b = Batch {
            kv: try_db!(txn.open_table(KV), "open kv")?,
            log: try_db!(txn.open_table(LOG), "open log")?,
            revision: meta_get(&meta, "revision")?.unwrap_or(1) as Revision,
            events: Vec::new(),
        };
        let mut compacted = meta_get(&meta, "compacted")?.unwrap_or(0) as Revision;
        for cmd in cmds.by_ref() {
            replies.push(b.apply(cmd, &mut compacted, &mut meta)?);
        }
        try_db!(meta.insert("revision", b.revision as u64), "meta write")?;
        Ok((b.events, b.revision))
    })();
    let (events, revision) = match outcome {
        Ok(done) => done,
        Err(e) => {
            // The command being applied was consumed; the rest are answered here.
            replies.extend(cmds.map(|c| reply_err(c, &e)));
            return Err((replies, e));
        }
    };
    if let Err(e) = txn.commit() {
        return Err((replies, Error::Backend(format!("commit: {e}"))));
    }
    Ok((replies, events, revision))
}

fn reply_err(cmd: Cmd, e: &Error) -> Reply {
    match cmd {
        Cmd::Create(_, _, tx) | Cmd::Update(_, _, _, tx) => Reply::Rev(tx, Err(e.clone())),
        Cmd::Delete(_, _, tx) => Reply::Del(tx, Err(e.clone())),
        Cmd::Compact(_, tx) => Reply::Unit(tx, Err(e.clone())),
    }
}

/// Drops versions hidden at `to` (keeping each key's visible version) and log entries up to `to`.
fn compact(
    kv: &mut redb::Table<&[u8], &[u8]>,
    log: &mut redb::Table<u64, &str>,
    to: Revision,
) -> Result<()> {
    let mut doomed: Vec<Vec<u8>> = Vec::new();
    // Per key: the versions at or below `to`, oldest first.
    let mut current_key: Option<String> = None;
    let mut below: Vec<(Vec<u8>, bool)> = Vec::new();
    let flush = |below: &mut Vec<(Vec<u8>, bool)>, doomed: &mut Vec<Vec<u8>>| {
        if let Some((_, last_is_delete)) = below.last().cloned() {
            let keep_last = !last_is_delete;
            let n = below.len() - usize::from(keep_last);
            doomed.extend(below.drain(..).take(n).map(|(k, _)| k));
        }
        below.clear();
    };
    for entry in try_db!(kv.iter(), "kv scan")? {
        let (k, v) = try_db!(entry, "kv scan")?;
        let (key, rev) = split_version_key(k.value())?;
        if current_key.as_deref() != Some(key) {
            flush(&mut below, &mut doomed);
            current_key = Some(key.to_owned());
        }
        if rev <= to {
            let is_delete = v.value().get(8) != Some(&1);
            below.push((k.value().to_vec(), is_delete));
        }
    }
    flush(&mut below, &mut doomed);
    for k in &doomed {
        try_db!(kv.remove(k.as_slice()), "kv remove")?;
    }
    let mut old: Vec<u64> = Vec::new();
    for entry in try_db!(log.range(..=(to as u64)), "log scan")? {
        old.push(try_db!(entry, "log scan")?.0.value());
    }
    for r in old {
        try_db!(log.remove(r), "log remove")?;
    }
    Ok(())
}

#[async_trait::async_trait]
impl Store for EmbeddedStore {
    async fn get(&self, key: &str, revision: Option<Revision>) -> Result<Option<KeyValue>> {
        self.read(|txn| {
            let at = Self::read_at(txn, revision)?;
            let kv = try_db!(txn.open_table(KV), "open kv")?;
            kv_at(&kv, key, at)
        })
    }

    async fn range(&self, req: RangeRequest) -> Result<RangeResponse> {
        self.read(|txn| {
            let at = Self::read_at(txn, req.revision)?;
            let kv = try_db!(txn.open_table(KV), "open kv")?;
            let start: Vec<u8> = match &req.start_after {
                // Every version of the continue key sorts below `key \0 \xff…`.
                Some(k) if k.as_str() >= req.prefix.as_str() => version_key(k, i64::MAX),
                _ => req.prefix.as_bytes().to_vec(),
            };
            let mut resp = RangeResponse {
                revision: at,
                ..Default::default()
            };
            // The key being scanned: `Some(Some(kv))` if its newest version at or below `at`
            // is a put with room in the page, `Some(None)` if it is a put past the limit (only
            // counted: its value is never copied), `None` if absent or deleted.
            let mut pending: Option<Option<KeyValue>> = None;
            let mut pending_key: Option<String> = None;
            let finish = |pending: Option<Option<KeyValue>>, resp: &mut RangeResponse| match pending
            {
                Some(Some(kv)) => {
                    resp.count += 1;
                    resp.kvs.push(kv);
                }
                Some(None) => {
                    resp.count += 1;
                    resp.more = true;
                }
                None => {}
            };
            for entry in try_db!(kv.range(start.as_slice()..), "kv range")? {
                let (k, v) = try_db!(entry, "kv range")?;
                let (key, rev) = split_version_key(k.value())?;
                if !key.starts_with(&req.prefix) {
                    break;
                }
                if pending_key.as_deref() != Some(key) {
                    finish(pending.take(), &mut resp);
                    pending_key = Some(key.to_owned());
                }
                if rev > at {
                    continue;
                }
                let raw = v.value();
                pending = if raw.get(8) != Some(&1) {
                    None
                } else if req.limit == 0 || resp.kvs.len() < req.limit {
                    let (create, value) = decode_value(raw)?;
                    value.map(|value| {
                        Some(KeyValue {
                            key: key.to_owned(),
                            value,
                            create_revision: create,
                            mod_revision: rev,
                        })
                    })
                } else {
                    Some(None)
                };
            }
            finish(pending.take(), &mut resp);
            Ok(resp)
        })
    }

    async fn count(&self, prefix: &str) -> Result<(i64, Revision)> {
        let resp = self.range(RangeRequest::prefix(prefix)).await?;
        Ok((resp.count, resp.revision))
    }

    async fn create(&self, key: &str, value: Bytes) -> Result<Revision> {
        let (tx, rx) = oneshot::channel();
        self.send(Cmd::Create(key.to_owned(), value, tx))?;
        rx.await.map_err(|_| Error::Closed)?
    }

    async fn update(&self, key: &str, value: Bytes, expected: Revision) -> Result<Revision> {
        let (tx, rx) = oneshot::channel();
        self.send(Cmd::Update(key.to_owned(), value, expected, tx))?;
        rx.await.map_err(|_| Error::Closed)?
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<(Revision, KeyValue)> {
        let (tx, rx) = oneshot::channel();
        self.send(Cmd::Delete(key.to_owned(), expected, tx))?;
        rx.await.map_err(|_| Error::Closed)?
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<Watch> {
        // Holding `published` keeps the writer from publishing while the backlog is read.
        let published = self
            .shared
            .published
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let backlog = self.read(|txn| {
            let meta = try_db!(txn.open_table(META), "open meta")?;
            let compacted = meta_get(&meta, "compacted")?.unwrap_or(0) as Revision;
            if after < compacted {
                return Err(Error::Compacted {
                    requested: after,
                    oldest: compacted,
                });
            }
            let kv = try_db!(txn.open_table(KV), "open kv")?;
            let log = try_db!(txn.open_table(LOG), "open log")?;
            let mut events = Vec::new();
            let from = (after + 1).max(0) as u64;
            for entry in try_db!(log.range(from..=(published.revision as u64)), "log range")? {
                let (rev, key) = try_db!(entry, "log range")?;
                if key.value().starts_with(prefix) {
                    events.push(Arc::new(event_at(
                        &kv,
                        key.value(),
                        rev.value() as Revision,
                    )?));
                }
            }
            Ok(events)
        })?;
        let watch = self.shared.hub.register(prefix, backlog.iter());
        drop(published);
        Ok(watch)
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        self.send(Cmd::Compact(revision, tx))?;
        rx.await.map_err(|_| Error::Closed)?
    }

    async fn current_revision(&self) -> Result<Revision> {
        // The revision watchers have seen: every acknowledged write is at or below it.
        Ok(self
            .shared
            .published
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .revision)
    }

    async fn db_size(&self) -> Result<u64> {
        std::fs::metadata(&self.path)
            .map(|m| m.len())
            .map_err(|e| Error::Backend(format!("stat {}: {e}", self.path.display())))
    }
}
