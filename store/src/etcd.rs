//! etcd v3 backend (feature `etcd`): revisions are etcd's, writes are etcd transactions, watches
//! are etcd watches with previous values.
//!
//! ```no_run
//! # async fn demo() -> bosun_store::Result<()> {
//! use bosun_store::{etcd::EtcdStore, Store};
//! let store = EtcdStore::connect(&["http://127.0.0.1:2379"]).await?;
//! let rev = store.create("/registry/namespaces/default", "{}".into()).await?;
//! # Ok(()) }
//! ```

use crate::watch::watch_channel;
use crate::{
    Error, Event, EventKind, KeyValue, RangeRequest, RangeResponse, Result, Revision, Store, Watch,
};
use bytes::Bytes;
use etcd_client::{
    Client, CompactionOptions, Compare, CompareOp, ConnectOptions, DeleteOptions, GetOptions, Txn,
    TxnOp, TxnOpResponse, WatchOptions,
};
use std::sync::Arc;
use std::time::Duration;

/// A store backed by an etcd v3 cluster.
#[derive(Clone)]
pub struct EtcdStore {
    client: Client,
    /// KV client without gRPC's 4 MiB response limit (a LIST of many large objects exceeds it;
    /// upstream lifts it too).
    kv: etcd_client::KvClient,
    endpoints: Arc<Endpoints>,
}

/// The cluster's members and which of them are out of the client's balancer.
struct Endpoints {
    all: Vec<String>,
    evicted: tokio::sync::Mutex<std::collections::BTreeSet<String>>,
}

impl Endpoints {
    /// Evicts members that refuse connections and re-admits those that answer again, so that
    /// a retry after a member dies goes to a live one. Never evicts the last member.
    async fn refresh(&self, client: &Client) {
        let mut evicted = self.evicted.lock().await;
        for ep in &self.all {
            let addr = ep
                .trim_start_matches("http://")
                .trim_start_matches("https://")
                .to_owned();
            let alive = matches!(
                tokio::time::timeout(
                    Duration::from_millis(500),
                    tokio::net::TcpStream::connect(addr)
                )
                .await,
                Ok(Ok(_))
            );
            if !alive && !evicted.contains(ep) && evicted.len() + 1 < self.all.len() {
                if client.remove_endpoint(ep).await.is_ok() {
                    tracing::warn!(endpoint = %ep, "etcd member unreachable; removed from the client");
                    evicted.insert(ep.clone());
                }
            } else if alive && evicted.contains(ep) && client.add_endpoint(ep).await.is_ok() {
                tracing::info!(endpoint = %ep, "etcd member reachable again");
                evicted.remove(ep);
            }
        }
    }
}

fn convert(kv: &etcd_client::KeyValue) -> Result<KeyValue> {
    Ok(KeyValue {
        key: kv
            .key_str()
            .map_err(|e| Error::Backend(format!("non-UTF-8 key: {e}")))?
            .to_owned(),
        value: Bytes::copy_from_slice(kv.value()),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
    })
}

/// Maps etcd's errors onto ours (`requested` is the revision the call asked for).
fn map_err(e: etcd_client::Error, requested: Revision, oldest: Option<Revision>) -> Error {
    let text = e.to_string();
    if text.contains("required revision has been compacted") {
        Error::Compacted {
            requested,
            oldest: oldest.unwrap_or(requested + 1),
        }
    } else if text.contains("required revision is a future revision") {
        Error::FutureRevision {
            requested,
            current: requested - 1,
        }
    } else {
        Error::Backend(format!("etcd: {text}"))
    }
}

fn header_revision(h: Option<&etcd_client::ResponseHeader>) -> Result<Revision> {
    h.map(|h| h.revision())
        .ok_or_else(|| Error::Backend("etcd response without a header".into()))
}

/// The first key after every key starting with `prefix` (etcd's range end for a prefix).
fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

impl EtcdStore {
    /// Connects to the cluster (any of the endpoints), with keep-alive and timeouts suited to a
    /// control plane.
    pub async fn connect(endpoints: &[&str]) -> Result<Self> {
        let opts = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            .with_timeout(Duration::from_secs(30))
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5));
        let client = Client::connect(endpoints, Some(opts))
            .await
            .map_err(|e| Error::Backend(format!("connecting to etcd at {endpoints:?}: {e}")))?;
        let endpoints = Arc::new(Endpoints {
            all: endpoints.iter().map(|e| (*e).to_owned()).collect(),
            evicted: tokio::sync::Mutex::new(Default::default()),
        });
        let kv = client.kv_client().max_decoding_message_size(usize::MAX);
        Ok(EtcdStore {
            client,
            kv,
            endpoints,
        })
    }

    /// The underlying client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The cluster's compaction revision, from HashKV (the one etcd API that reports it
    /// deterministically). It hashes the keyspace, so it runs only on error paths and for reads
    /// below revision 1.
    async fn compacted_revision(&self) -> Option<Revision> {
        let resp = self.client.clone().hash_kv(0).await.ok()?;
        let rev = resp.compact_version();
        (rev > 0).then_some(rev)
    }

    /// Maps an error, looking up the compaction revision for `Compacted`, and refreshing the
    /// member list after a transport failure so that a retry reaches a live member.
    async fn fail(&self, e: etcd_client::Error, requested: Revision) -> Error {
        let text = e.to_string();
        if text.contains("compacted") {
            let oldest = self.compacted_revision().await;
            return map_err(e, requested, oldest);
        }
        if matches!(
            e,
            etcd_client::Error::GRpcStatus(_) | etcd_client::Error::TransportError(_)
        ) && (text.contains("unavailable")
            || text.contains("connect")
            || text.contains("transport"))
            && self.endpoints.all.len() > 1
        {
            self.endpoints.refresh(&self.client).await;
        }
        map_err(e, requested, None)
    }

    /// A read at revision `r` < 1 (before the first write): etcd would read the latest state
    /// for revision 0; the Store contract reads nothing there, or fails once it is compacted.
    async fn before_history(&self, r: Revision) -> Result<()> {
        match self.compacted_revision().await {
            Some(oldest) if oldest > r => Err(Error::Compacted {
                requested: r,
                oldest,
            }),
            _ => Ok(()),
        }
    }

    /// A txn guarded by `cmp` that does `op`, or else reads the key's current state.
    async fn guarded(
        &self,
        key: &str,
        cmp: Compare,
        op: TxnOp,
    ) -> Result<(bool, Revision, Vec<TxnOpResponse>)> {
        let txn = Txn::new()
            .when([cmp])
            .and_then([op])
            .or_else([TxnOp::get(key, None)]);
        let resp = match self.kv.clone().txn(txn).await {
            Ok(r) => r,
            Err(e) => return Err(self.fail(e, 0).await),
        };
        Ok((
            resp.succeeded(),
            header_revision(resp.header())?,
            resp.op_responses(),
        ))
    }

    fn current_of(responses: Vec<TxnOpResponse>) -> Result<Option<KeyValue>> {
        for r in responses {
            if let TxnOpResponse::Get(g) = r {
                return g.kvs().first().map(convert).transpose();
            }
        }
        Ok(None)
    }
}

#[async_trait::async_trait]
impl Store for EtcdStore {
    async fn get(&self, key: &str, revision: Option<Revision>) -> Result<Option<KeyValue>> {
        if let Some(r) = revision.filter(|r| *r < 1) {
            return self.before_history(r).await.map(|()| None);
        }
        let opts = GetOptions::new().with_revision(revision.unwrap_or(0));
        match self.kv.clone().get(key, Some(opts)).await {
            Ok(resp) => resp.kvs().first().map(convert).transpose(),
            Err(e) => Err(self.fail(e, revision.unwrap_or(0)).await),
        }
    }

    async fn range(&self, req: RangeRequest) -> Result<RangeResponse> {
        if let Some(r) = req.revision.filter(|r| *r < 1) {
            self.before_history(r).await?;
            return Ok(RangeResponse {
                revision: r,
                ..Default::default()
            });
        }
        let start = match &req.start_after {
            Some(k) if k.as_str() >= req.prefix.as_str() => format!("{k}\0"),
            _ => req.prefix.clone(),
        };
        let mut opts = GetOptions::new()
            .with_range(prefix_end(&req.prefix))
            .with_revision(req.revision.unwrap_or(0));
        if req.limit > 0 {
            opts = opts.with_limit(req.limit as i64);
        }
        let resp = match self.kv.clone().get(start, Some(opts)).await {
            Ok(r) => r,
            Err(e) => return Err(self.fail(e, req.revision.unwrap_or(0)).await),
        };
        let revision = match req.revision {
            Some(r) => r,
            None => header_revision(resp.header())?,
        };
        Ok(RangeResponse {
            kvs: resp.kvs().iter().map(convert).collect::<Result<_>>()?,
            more: resp.more(),
            count: resp.count(),
            revision,
        })
    }

    async fn count(&self, prefix: &str) -> Result<(i64, Revision)> {
        let opts = GetOptions::new().with_prefix().with_count_only();
        let resp = match self.client.clone().get(prefix, Some(opts)).await {
            Ok(r) => r,
            Err(e) => return Err(self.fail(e, 0).await),
        };
        Ok((resp.count(), header_revision(resp.header())?))
    }

    async fn create(&self, key: &str, value: Bytes) -> Result<Revision> {
        let cmp = Compare::create_revision(key, CompareOp::Equal, 0);
        let (ok, rev, _) = self
            .guarded(key, cmp, TxnOp::put(key, value.to_vec(), None))
            .await?;
        if ok {
            Ok(rev)
        } else {
            Err(Error::AlreadyExists {
                key: key.to_owned(),
            })
        }
    }

    async fn update(&self, key: &str, value: Bytes, expected: Revision) -> Result<Revision> {
        let cmp = Compare::mod_revision(key, CompareOp::Equal, expected);
        let (ok, rev, responses) = self
            .guarded(key, cmp, TxnOp::put(key, value.to_vec(), None))
            .await?;
        if ok {
            return Ok(rev);
        }
        match Self::current_of(responses)? {
            None => Err(Error::NotFound {
                key: key.to_owned(),
            }),
            Some(current) => Err(Error::Conflict {
                key: key.to_owned(),
                expected,
                current: Box::new(current),
            }),
        }
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<(Revision, KeyValue)> {
        let cmp = match expected {
            Some(e) => Compare::mod_revision(key, CompareOp::Equal, e),
            None => Compare::create_revision(key, CompareOp::NotEqual, 0),
        };
        let op = TxnOp::delete(key, Some(DeleteOptions::new().with_prev_key()));
        let (ok, rev, responses) = self.guarded(key, cmp, op).await?;
        if ok {
            for r in responses {
                if let TxnOpResponse::Delete(d) = r {
                    if let Some(prev) = d.prev_kvs().first() {
                        return Ok((rev, convert(prev)?));
                    }
                }
            }
            return Err(Error::NotFound {
                key: key.to_owned(),
            });
        }
        match Self::current_of(responses)? {
            None => Err(Error::NotFound {
                key: key.to_owned(),
            }),
            Some(current) => Err(Error::Conflict {
                key: key.to_owned(),
                expected: expected.unwrap_or_default(),
                current: Box::new(current),
            }),
        }
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<Watch> {
        // Compaction is checked up front so that the caller gets the error from this call.
        let current = self.current_revision().await?;
        if after <= current {
            let probe = GetOptions::new()
                .with_revision(after.max(1))
                .with_count_only();
            if let Err(e) = self.client.clone().get(prefix, Some(probe)).await {
                return Err(self.fail(e, after).await);
            }
        }
        let opts = WatchOptions::new()
            .with_prefix()
            .with_prev_key()
            .with_start_revision(after + 1);
        let mut stream = self
            .client
            .clone()
            .watch(prefix, Some(opts))
            .await
            .map_err(|e| Error::Backend(format!("etcd watch: {e}")))?;
        let (tx, watch) = watch_channel();
        tokio::spawn(async move {
            // The task owns the stream: when the receiver is dropped the task ends and the
            // dropped stream cancels the etcd watch.
            loop {
                let message = tokio::select! {
                    m = stream.message() => m,
                    () = tx.closed() => return,
                };
                let resp = match message {
                    Ok(Some(r)) => r,
                    Ok(None) => {
                        let _ = tx.send(Err(Error::Backend("etcd ended the watch".into())));
                        return;
                    }
                    Err(e) => {
                        let _ = tx.send(Err(Error::Backend(format!("etcd watch: {e}"))));
                        return;
                    }
                };
                if resp.compact_revision() > 0 {
                    let _ = tx.send(Err(Error::Compacted {
                        requested: after,
                        oldest: resp.compact_revision(),
                    }));
                    return;
                }
                for e in resp.events() {
                    let (Some(kv), kind) = (e.kv(), e.event_type()) else {
                        continue;
                    };
                    let prev = match e.prev_kv().map(convert).transpose() {
                        Ok(p) => p,
                        Err(err) => {
                            let _ = tx.send(Err(err));
                            return;
                        }
                    };
                    let event = match kind {
                        etcd_client::EventType::Put => convert(kv).map(|kv| Event {
                            kind: EventKind::Put,
                            kv,
                            prev_kv: prev,
                        }),
                        etcd_client::EventType::Delete => convert(kv).map(|mut kv| {
                            kv.create_revision = prev.as_ref().map_or(0, |p| p.create_revision);
                            Event {
                                kind: EventKind::Delete,
                                kv,
                                prev_kv: prev,
                            }
                        }),
                    };
                    if !tx.send(event.map(Arc::new)) {
                        return;
                    }
                }
                if resp.canceled() || tx.is_closed() {
                    return;
                }
            }
        });
        Ok(watch)
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        // etcd accepts compacting at revision 0 once (its initial compaction revision is -1);
        // the Store contract treats 0 as already compacted, like the other backends.
        if revision < 1 {
            let oldest = self.compacted_revision().await.unwrap_or(0);
            return Err(Error::Compacted {
                requested: revision,
                oldest,
            });
        }
        let opts = CompactionOptions::new().with_physical();
        match self.client.clone().compact(revision, Some(opts)).await {
            Ok(_) => Ok(()),
            Err(e) => Err(self.fail(e, revision).await),
        }
    }

    async fn current_revision(&self) -> Result<Revision> {
        match self
            .client
            .clone()
            .get("\0", Some(GetOptions::new().with_count_only()))
            .await
        {
            Ok(resp) => header_revision(resp.header()),
            Err(e) => Err(self.fail(e, 0).await),
        }
    }

    async fn db_size(&self) -> Result<u64> {
        match self.client.clone().status().await {
            Ok(status) => Ok(status.db_size().max(0) as u64),
            Err(e) => Err(self.fail(e, 0).await),
        }
    }
}

/// A throwaway etcd cluster on free loopback ports, for tests and benchmarks: runs Debian's
/// `etcd` binary (3.4+), data in a temporary directory; members are killed on drop.
pub struct LocalCluster {
    members: Vec<Option<std::process::Child>>,
    endpoints: Vec<String>,
    dir: std::path::PathBuf,
}

impl LocalCluster {
    /// Starts `n` members; fails if `etcd` is not installed (never silently skips).
    pub fn start(n: usize) -> Result<LocalCluster> {
        use std::process::{Command, Stdio};
        let etcd = std::env::var("PATH")
            .unwrap_or_default()
            .split(':')
            .chain(["/usr/bin", "/usr/local/bin"])
            .map(|d| std::path::Path::new(d).join("etcd"))
            .find(|p| p.is_file())
            .ok_or_else(|| {
                Error::Backend("etcd is not installed: apt-get install etcd-server".into())
            })?;
        let free_port = || -> Result<u16> {
            let l = std::net::TcpListener::bind("127.0.0.1:0")
                .map_err(|e| Error::Backend(format!("port: {e}")))?;
            l.local_addr()
                .map(|a| a.port())
                .map_err(|e| Error::Backend(format!("port: {e}")))
        };
        let mut ports = Vec::new();
        for _ in 0..n {
            ports.push((free_port()?, free_port()?));
        }
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir = std::env::temp_dir().join(format!("bosun-etcd-{}-{stamp}", std::process::id()));
        let initial: Vec<String> = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("m{i}=http://127.0.0.1:{peer}"))
            .collect();
        let mut members = Vec::new();
        for (i, (client, peer)) in ports.iter().enumerate() {
            let child = Command::new(&etcd)
                .args(["--name", &format!("m{i}")])
                .arg("--data-dir")
                .arg(dir.join(format!("m{i}")))
                .args([
                    "--listen-client-urls",
                    &format!("http://127.0.0.1:{client}"),
                ])
                .args([
                    "--advertise-client-urls",
                    &format!("http://127.0.0.1:{client}"),
                ])
                .args(["--listen-peer-urls", &format!("http://127.0.0.1:{peer}")])
                .args([
                    "--initial-advertise-peer-urls",
                    &format!("http://127.0.0.1:{peer}"),
                ])
                .args(["--initial-cluster", &initial.join(",")])
                .args([
                    "--initial-cluster-state",
                    "new",
                    "--initial-cluster-token",
                    &format!("bosun-{stamp}"),
                ])
                .args(["--logger", "zap", "--log-level", "error"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| Error::Backend(format!("starting {}: {e}", etcd.display())))?;
            members.push(Some(child));
        }
        let endpoints = ports
            .iter()
            .map(|(c, _)| format!("http://127.0.0.1:{c}"))
            .collect();
        Ok(LocalCluster {
            members,
            endpoints,
            dir,
        })
    }

    /// Client URLs of the members.
    pub fn endpoints(&self) -> Vec<&str> {
        self.endpoints.iter().map(String::as_str).collect()
    }

    /// Connects once the cluster answers a read, waiting up to a minute.
    pub async fn connect(&self) -> Result<EtcdStore> {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let last = match EtcdStore::connect(&self.endpoints()).await {
                Ok(store) => match store.current_revision().await {
                    Ok(_) => return Ok(store),
                    Err(e) => e,
                },
                Err(e) => e,
            };
            if std::time::Instant::now() > deadline {
                return Err(Error::Backend(format!("etcd did not become ready: {last}")));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Kills member `i` with SIGKILL.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut m) = self.members.get_mut(i).and_then(Option::take) {
            let _ = m.kill();
            let _ = m.wait();
        }
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
