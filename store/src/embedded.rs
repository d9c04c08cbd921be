//! Embedded durable backend on [fjall](https://fjall-rs.github.io) (an LSM-tree engine with a
//! checksummed write-ahead journal): the default store of `bosun server`.
//!
//! Layout: the engine holds an append-only revision log, and memory holds the index.
//! - partition `log`: one entry per write batch, keyed by its first revision (8 bytes, BE), whose
//!   value is the batch's records (revision, create revision, put/delete, key, value): every
//!   write since the last compaction, plus the versions still visible at the compaction
//!   revision. A batch is one journal append and one sync, however many writes it holds.
//! - partition `meta`: `compacted`.
//! - in memory: the multi-version index of every retained version (keys, values and the events
//!   watchers replay), rebuilt by scanning the log when the store opens. Reads never touch disk.
//!
//! Writes go to one writer thread that checks every request waiting against the index, appends
//! them to the log as one atomic batch and syncs the journal (group commit): concurrent writers
//! share syncs, and a write is acknowledged, readable and sent to watchers only after its batch
//! is durable. A failed commit fails the whole batch and leaves the index untouched. When the
//! previous batch was larger than what is waiting, the writer waits up to [`GATHER_WAIT`] for
//! the rest of those writers, so that batches stay full under steady concurrent load.
//!
//! The trade-off is memory: the retained data lives in RAM as well as on disk (etcd keeps its
//! index in RAM and its values in the page cache, much the same in practice).

use crate::mvcc::{plan, Mvcc, Op};
use crate::watch::{WatchHub, DEFAULT_WATCH_QUEUE_LIMIT};
use crate::{
    Error, Event, EventKind, KeyValue, RangeRequest, RangeResponse, Result, Revision, Store, Watch,
};
use bytes::Bytes;
use fjall::{Keyspace, PartitionCreateOptions, PartitionHandle, PersistMode};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Most write requests folded into one batch.
const MAX_BATCH: usize = 4096;

/// Longest the writer waits for the writers of the previous batch to come back.
pub const GATHER_WAIT: Duration = Duration::from_micros(200);

macro_rules! try_db {
    ($e:expr, $ctx:expr) => {
        $e.map_err(|e| Error::Backend(format!("{}: {e}", $ctx)))
    };
}

/// Appends the log record of `event` to `out`:
/// `revision(8) | create_revision(8) | 1 put / 0 delete | key length(4) | value length(4) | key |
/// value`, integers big-endian.
fn encode_record(event: &Event, out: &mut Vec<u8>) {
    let key = event.kv.key.as_bytes();
    let value = &event.kv.value;
    out.extend_from_slice(&(event.revision() as u64).to_be_bytes());
    out.extend_from_slice(&(event.kv.create_revision as u64).to_be_bytes());
    out.push(u8::from(event.kind == EventKind::Put));
    out.extend_from_slice(&(key.len() as u32).to_be_bytes());
    out.extend_from_slice(&(value.len() as u32).to_be_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(value);
}

/// One decoded log record.
struct Record {
    revision: Revision,
    key: String,
    create: Revision,
    /// `None` for a delete.
    value: Option<Bytes>,
}

impl Record {
    fn event(self, prev: Option<KeyValue>) -> Event {
        Event::new(&self.key, self.create, self.revision, self.value, prev)
    }
}

/// The records of one batch entry, in revision order.
fn decode_batch(first: Revision, raw: &[u8]) -> Result<Vec<Record>> {
    let corrupt = |what: &str| Error::Backend(format!("corrupt log batch {first}: {what}"));
    let be64 = |b: &[u8]| {
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        u64::from_be_bytes(a) as Revision
    };
    let be32 = |b: &[u8]| {
        let mut a = [0u8; 4];
        a.copy_from_slice(b);
        u32::from_be_bytes(a) as usize
    };
    let mut out = Vec::new();
    let mut rest = raw;
    while !rest.is_empty() {
        if rest.len() < 25 {
            return Err(corrupt("truncated record header"));
        }
        let revision = be64(&rest[..8]);
        let create = be64(&rest[8..16]);
        let put = match rest[16] {
            0 => false,
            1 => true,
            _ => return Err(corrupt("bad record kind")),
        };
        let (klen, vlen) = (be32(&rest[17..21]), be32(&rest[21..25]));
        let body = &rest[25..];
        if body.len() < klen + vlen {
            return Err(corrupt("truncated record"));
        }
        let key = std::str::from_utf8(&body[..klen]).map_err(|_| corrupt("key is not UTF-8"))?;
        let value = put.then(|| Bytes::copy_from_slice(&body[klen..klen + vlen]));
        out.push(Record {
            revision,
            key: key.to_owned(),
            create,
            value,
        });
        rest = &body[klen + vlen..];
    }
    Ok(out)
}

fn decode_revision(raw: &[u8]) -> Result<Revision> {
    let bytes: [u8; 8] = raw
        .try_into()
        .map_err(|_| Error::Backend(format!("corrupt log key {raw:?}")))?;
    Ok(u64::from_be_bytes(bytes) as Revision)
}

/// What a write answers: its revision and the key's previous state.
type Written = Result<(Revision, Option<KeyValue>)>;

type WriteReply = oneshot::Sender<Written>;

enum Cmd {
    Write(String, Op, WriteReply),
    Compact(Revision, oneshot::Sender<Result<()>>),
}

struct Shared {
    keyspace: Keyspace,
    log: PartitionHandle,
    meta: PartitionHandle,
    hub: WatchHub,
    state: RwLock<Mvcc>,
}

impl Shared {
    fn read(&self) -> RwLockReadGuard<'_, Mvcc> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Mvcc> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }
}

/// The embedded durable store. Open one per data directory.
///
/// ```
/// use bosun_store::{embedded::EmbeddedStore, Store};
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let dir = tempfile::tempdir().map_err(|e| bosun_store::Error::Backend(e.to_string()))?;
/// let rev = {
///     let store = EmbeddedStore::open(dir.path())?;
///     store.create("/registry/namespaces/shop", "{}".into()).await?
///     // An acknowledged write is on disk: it survives the process.
/// };
/// let store = EmbeddedStore::open(dir.path())?;
/// let kv = store.get("/registry/namespaces/shop", None).await?;
/// assert_eq!(kv.map(|kv| kv.mod_revision), Some(rev));
/// # Ok::<(), bosun_store::Error>(()) }).unwrap();
/// ```
pub struct EmbeddedStore {
    shared: Arc<Shared>,
    queue: Arc<Queue>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// Makes `dir` (created if missing) readable by its owner only, as etcd requires of its data
/// directory: the directory 0700 and every file below it 0600 (the engine creates files with
/// the process's umask; the directory's mode is what keeps them private between starts). A
/// directory left readable by others (an older bosun, a hand-made directory) is tightened, and
/// the change is logged.
fn make_private(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let mode = std::fs::metadata(dir)?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        tracing::warn!(
            dir = %dir.display(),
            was = format!("{mode:o}"),
            "the store's directory was readable by other users; made it 0700 and its files 0600"
        );
    }
    fn tighten(path: &Path) -> std::io::Result<()> {
        let meta = std::fs::symlink_metadata(path)?;
        if meta.is_dir() {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))?;
            for entry in std::fs::read_dir(path)? {
                tighten(&entry?.path())?;
            }
        } else if meta.is_file() {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        }
        Ok(())
    }
    tighten(dir)
}

impl EmbeddedStore {
    /// Opens (or creates) the store in directory `path`. Reopening after a crash yields exactly
    /// the acknowledged writes (and possibly writes whose acknowledgement was lost with the
    /// crash).
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        make_private(&path).map_err(|e| {
            Error::Backend(format!(
                "the data directory {} must be private to this user, as it holds Secrets: {e}",
                path.display()
            ))
        })?;
        let keyspace = try_db!(
            fjall::Config::new(&path)
                // Syncs are ours (one per batch); the engine only reads back at open.
                .manual_journal_persist(true)
                .cache_size(4 << 20)
                .max_write_buffer_size(16 << 20)
                .open(),
            format!("opening {}", path.display())
        )?;
        let log = try_db!(
            keyspace.open_partition(
                "log",
                // Batch entries are large: keep them out of the tree's compactions.
                PartitionCreateOptions::default()
                    .with_kv_separation(fjall::KvSeparationOptions::default())
            ),
            "opening the log"
        )?;
        let meta = try_db!(
            keyspace.open_partition("meta", PartitionCreateOptions::default()),
            "opening the metadata"
        )?;
        let compacted = match try_db!(meta.get("compacted"), "reading the metadata")? {
            Some(raw) => decode_revision(&raw)?,
            None => 0,
        };
        let state = load(&log, compacted)?;
        let revision = state.revision();
        let shared = Arc::new(Shared {
            keyspace,
            log,
            meta,
            hub: WatchHub::new(DEFAULT_WATCH_QUEUE_LIMIT),
            state: RwLock::new(state),
        });
        let queue = Arc::new(Queue::default());
        let rx = Arc::clone(&queue);
        let worker = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("bosun-store-writer".into())
            .spawn(move || writer_loop(&worker, &rx))
            .map_err(|e| Error::Backend(format!("starting the writer thread: {e}")))?;
        tracing::info!(path = %path.display(), revision, compacted, "embedded store opened");
        Ok(EmbeddedStore {
            shared,
            queue,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Number of active watchers.
    pub fn watcher_count(&self) -> usize {
        self.shared.hub.len()
    }

    fn send(&self, cmd: Cmd) -> Result<()> {
        self.queue.push(cmd)
    }

    async fn write(&self, key: &str, op: Op) -> Written {
        let (tx, rx) = oneshot::channel();
        self.send(Cmd::Write(key.to_owned(), op, tx))?;
        rx.await.map_err(|_| Error::Closed)?
    }

    /// Stops the writer after pending writes and ends every watch.
    pub fn close(&self) {
        self.queue.close();
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

/// Rebuilds the index from the log.
fn load(log: &PartitionHandle, compacted: Revision) -> Result<Mvcc> {
    let mut state = Mvcc::new(compacted.max(1), compacted);
    for entry in log.iter() {
        let (k, raw) = try_db!(entry, "scanning the log")?;
        for record in decode_batch(decode_revision(&k)?, &raw)? {
            let rev = record.revision;
            if rev <= compacted {
                state.restore_compacted(&record.event(None));
            } else {
                if rev != state.revision() + 1 {
                    return Err(Error::Backend(format!(
                        "log has a gap: revision {rev} follows {}",
                        state.revision()
                    )));
                }
                let prev = state.latest(&record.key);
                state.apply(Arc::new(record.event(prev)));
            }
        }
    }
    Ok(state)
}

/// The requests waiting for the writer thread.
#[derive(Default)]
struct Queue {
    inner: Mutex<Pending>,
    ready: Condvar,
}

#[derive(Default)]
struct Pending {
    cmds: Vec<Cmd>,
    /// Wake the writer once this many requests wait (`0`: it is busy, do not wake it).
    wake_at: usize,
    closed: bool,
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn push(&self, cmd: Cmd) -> Result<()> {
        let mut q = self.lock();
        if q.closed {
            return Err(Error::Closed);
        }
        q.cmds.push(cmd);
        // Waking the writer for every request would cost a context switch each: wake it only
        // when what it waits for has arrived.
        if q.wake_at != 0 && q.cmds.len() >= q.wake_at {
            q.wake_at = 0;
            self.ready.notify_one();
        }
        Ok(())
    }

    fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_one();
    }

    /// The next batch: at least one request, and if fewer than `expect` are waiting, whatever
    /// arrives within [`GATHER_WAIT`] (up to `expect`). `None` once closed and drained.
    fn gather(&self, expect: usize) -> Option<Vec<Cmd>> {
        let mut q = self.lock();
        while q.cmds.is_empty() {
            if q.closed {
                return None;
            }
            q.wake_at = 1;
            q = self.ready.wait(q).unwrap_or_else(|p| p.into_inner());
        }
        let deadline = Instant::now() + GATHER_WAIT;
        while q.cmds.len() < expect.min(MAX_BATCH) && !q.closed {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            q.wake_at = expect;
            q = self
                .ready
                .wait_timeout(q, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        q.wake_at = 0;
        let take = q.cmds.len().min(MAX_BATCH);
        Some(q.cmds.drain(..take).collect())
    }
}

fn writer_loop(shared: &Shared, queue: &Queue) {
    let mut expect = 1;
    while let Some(batch) = queue.gather(expect) {
        expect = batch.len();
        let mut replies: Vec<(WriteReply, Written)> = Vec::new();
        let mut events: Vec<Arc<Event>> = Vec::new();
        let mut compactions = Vec::new();
        {
            // Only this thread changes the index: check the batch against it plus the batch's own
            // earlier writes.
            let state = shared.read();
            let mut rev = state.revision();
            let mut pending: HashMap<String, Option<KeyValue>> = HashMap::new();
            for cmd in batch {
                let (key, op, tx) = match cmd {
                    Cmd::Write(key, op, tx) => (key, op, tx),
                    Cmd::Compact(to, tx) => {
                        compactions.push((to, tx));
                        continue;
                    }
                };
                let current = match pending.get(&key) {
                    Some(c) => c.clone(),
                    None => state.latest(&key),
                };
                match plan(&key, op, current) {
                    Err(e) => replies.push((tx, Err(e))),
                    Ok(planned) => {
                        rev += 1;
                        let event = Arc::new(planned.event(&key, rev));
                        let now = (event.kind == EventKind::Put).then(|| event.kv.clone());
                        replies.push((tx, Ok((rev, event.prev_kv.clone()))));
                        pending.insert(key, now);
                        events.push(event);
                    }
                }
            }
        }
        if !events.is_empty() {
            match persist(shared, &events) {
                Ok(()) => {
                    let mut state = shared.write();
                    for e in &events {
                        state.apply(Arc::clone(e));
                    }
                    // Publish under the write lock: registration (under the read lock) cannot
                    // interleave, so a new watcher sees each event exactly once.
                    shared.hub.publish(&events);
                }
                Err(e) => {
                    tracing::error!(error = %e, writes = events.len(), "store write batch failed");
                    for (_, r) in replies.iter_mut().filter(|(_, r)| r.is_ok()) {
                        *r = Err(e.clone());
                    }
                }
            }
        }
        for (tx, r) in replies {
            let _ = tx.send(r);
        }
        for (to, tx) in compactions {
            let _ = tx.send(compact(shared, to));
        }
    }
}

/// Appends the batch to the log as one entry (keyed by its first revision) and syncs the
/// journal.
fn persist(shared: &Shared, events: &[Arc<Event>]) -> Result<()> {
    let Some(first) = events.first() else {
        return Ok(());
    };
    let size: usize = events
        .iter()
        .map(|e| 25 + e.kv.key.len() + e.kv.value.len())
        .sum();
    let mut entry = Vec::with_capacity(size);
    for e in events {
        encode_record(e, &mut entry);
    }
    let mut batch = shared
        .keyspace
        .batch()
        .durability(Some(PersistMode::SyncAll));
    batch.insert(&shared.log, (first.revision() as u64).to_be_bytes(), entry);
    try_db!(batch.commit(), "committing a write batch")
}

/// Compacts the index, then drops the discarded versions from the log: batch entries that keep
/// none of their records are removed, the others rewritten with the records that remain.
fn compact(shared: &Shared, to: Revision) -> Result<()> {
    // Reads are served from the index alone, so the log may lag it: a crash in between only
    // leaves extra history, dropped by the next compaction.
    let dropped: std::collections::HashSet<Revision> =
        shared.write().compact(to)?.into_iter().collect();
    let mut batch = shared
        .keyspace
        .batch()
        .durability(Some(PersistMode::SyncAll));
    for entry in shared.log.range(..=(to as u64).to_be_bytes()) {
        let (k, raw) = try_db!(entry, "scanning the log")?;
        let records = decode_batch(decode_revision(&k)?, &raw)?;
        let before = records.len();
        let kept: Vec<Record> = records
            .into_iter()
            .filter(|r| !dropped.contains(&r.revision))
            .collect();
        if kept.is_empty() {
            batch.remove(&shared.log, k);
        } else if kept.len() != before {
            let mut entry = Vec::new();
            for r in kept {
                encode_record(&r.event(None), &mut entry);
            }
            batch.insert(&shared.log, k, entry);
        }
    }
    batch.insert(&shared.meta, "compacted", (to as u64).to_be_bytes());
    try_db!(batch.commit(), "committing a compaction")?;
    tracing::debug!(to, dropped = dropped.len(), "embedded store compacted");
    Ok(())
}

#[async_trait::async_trait]
impl Store for EmbeddedStore {
    async fn get(&self, key: &str, revision: Option<Revision>) -> Result<Option<KeyValue>> {
        self.shared.read().get(key, revision)
    }

    async fn range(&self, req: RangeRequest) -> Result<RangeResponse> {
        self.shared.read().range(&req)
    }

    async fn count(&self, prefix: &str) -> Result<(i64, Revision)> {
        Ok(self.shared.read().count(prefix))
    }

    async fn create(&self, key: &str, value: Bytes) -> Result<Revision> {
        Ok(self.write(key, Op::Create(value)).await?.0)
    }

    async fn update(&self, key: &str, value: Bytes, expected: Revision) -> Result<Revision> {
        Ok(self.write(key, Op::Update(value, expected)).await?.0)
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<(Revision, KeyValue)> {
        let (rev, prev) = self.write(key, Op::Delete(expected)).await?;
        let prev = prev.ok_or_else(|| Error::Backend("delete without a previous value".into()))?;
        Ok((rev, prev))
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<Watch> {
        let state = self.shared.read();
        let backlog = state.backlog(prefix, after)?;
        Ok(self.shared.hub.register(prefix, backlog))
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        self.send(Cmd::Compact(revision, tx))?;
        rx.await.map_err(|_| Error::Closed)?
    }

    async fn current_revision(&self) -> Result<Revision> {
        Ok(self.shared.read().revision())
    }

    async fn db_size(&self) -> Result<u64> {
        Ok(self.shared.keyspace.disk_space())
    }
}
