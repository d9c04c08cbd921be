//! Random operation sequences against a backend and a plain model: same results, same errors.

use bosun_store::memory::MemoryStore;
use bosun_store::{Error, RangeRequest, Revision, Store};
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};

#[derive(Clone, Debug)]
enum Op {
    Create(u8, u8),
    Update(u8, u8, bool),
    Delete(u8, bool),
    Get(u8, Option<u8>),
    Range(usize, Option<u8>),
    Compact(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..6u8, any::<u8>()).prop_map(|(k, v)| Op::Create(k, v)),
        (0..6u8, any::<u8>(), any::<bool>()).prop_map(|(k, v, stale)| Op::Update(k, v, stale)),
        (0..6u8, any::<bool>()).prop_map(|(k, guarded)| Op::Delete(k, guarded)),
        (0..6u8, prop::option::of(any::<u8>())).prop_map(|(k, r)| Op::Get(k, r)),
        (0..4usize, prop::option::of(any::<u8>())).prop_map(|(l, r)| Op::Range(l, r)),
        any::<u8>().prop_map(Op::Compact),
    ]
}

/// The state of every key: key → (create_revision, mod_revision, value).
type Snapshot = BTreeMap<String, (Revision, Revision, Vec<u8>)>;

/// The model: full history as (revision → state of every key).
struct Model {
    rev: Revision,
    compacted: Revision,
    states: BTreeMap<Revision, Snapshot>,
}

impl Model {
    /// A model of a store at revision `rev` whose history below `compacted` is gone; no key of
    /// this case's prefix exists yet.
    fn new(rev: Revision, compacted: Revision) -> Self {
        Model {
            rev,
            compacted,
            states: BTreeMap::from([(rev, BTreeMap::new())]),
        }
    }
    fn now(&self) -> Snapshot {
        self.states[&self.rev].clone()
    }
    fn commit(&mut self, s: Snapshot) -> Revision {
        self.rev += 1;
        self.states.insert(self.rev, s);
        self.rev
    }
    /// Maps a random byte onto a revision from just below the compaction to current+2 (to hit
    /// compacted and future ones).
    fn pick(&self, r: u8) -> Revision {
        let low = (self.compacted - 2).max(0);
        low + i64::from(r) % (self.rev + 3 - low)
    }
}

/// Runs `ops` under `prefix` against `store`, whose compaction revision is held in `compacted`
/// (updated as soon as a compaction succeeds, so a failing case leaves it right for the next).
async fn run(
    store: &dyn Store,
    prefix: &str,
    compacted: &AtomicI64,
    ops: Vec<Op>,
) -> Result<(), TestCaseError> {
    let key = |k: u8| format!("{prefix}{k}");
    let start = store
        .current_revision()
        .await
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    let mut m = Model::new(start, compacted.load(Ordering::SeqCst));
    for op in ops {
        match op {
            Op::Create(k, v) => {
                let got = store.create(&key(k), vec![v].into()).await;
                let mut s = m.now();
                let rev = m.rev + 1;
                if let std::collections::btree_map::Entry::Vacant(e) = s.entry(key(k)) {
                    e.insert((rev, rev, vec![v]));
                    prop_assert_eq!(got, Ok(m.commit(s)));
                } else {
                    prop_assert!(matches!(got, Err(Error::AlreadyExists { .. })), "{got:?}");
                }
            }
            Op::Update(k, v, stale) => {
                let mut s = m.now();
                let cur = s.get(&key(k)).cloned();
                let expected = cur
                    .as_ref()
                    .map_or(1, |c| if stale { c.1 - 1 } else { c.1 });
                let got = store.update(&key(k), vec![v].into(), expected).await;
                match cur {
                    None => prop_assert!(matches!(got, Err(Error::NotFound { .. })), "{got:?}"),
                    Some(_) if stale => {
                        prop_assert!(matches!(got, Err(Error::Conflict { .. })), "{got:?}")
                    }
                    Some((c, _, _)) => {
                        s.insert(key(k), (c, m.rev + 1, vec![v]));
                        prop_assert_eq!(got, Ok(m.commit(s)));
                    }
                }
            }
            Op::Delete(k, guarded) => {
                let mut s = m.now();
                let cur = s.get(&key(k)).cloned();
                let got = store
                    .delete(&key(k), cur.as_ref().filter(|_| guarded).map(|c| c.1))
                    .await;
                match cur {
                    None => prop_assert!(matches!(got, Err(Error::NotFound { .. })), "{got:?}"),
                    Some((_, _, v)) => {
                        s.remove(&key(k));
                        let rev = m.commit(s);
                        let (r, kv) = got.map_err(|e| TestCaseError::fail(e.to_string()))?;
                        prop_assert_eq!(r, rev);
                        prop_assert_eq!(kv.value.to_vec(), v);
                    }
                }
            }
            Op::Get(k, at) => {
                let at = at.map(|r| m.pick(r));
                let got = store.get(&key(k), at).await;
                let r = at.unwrap_or(m.rev);
                if r < m.compacted {
                    prop_assert!(matches!(got, Err(Error::Compacted { .. })), "{got:?}");
                } else if r > m.rev {
                    prop_assert!(matches!(got, Err(Error::FutureRevision { .. })), "{got:?}");
                } else {
                    let want = m
                        .states
                        .range(..=r)
                        .next_back()
                        .and_then(|(_, s)| s.get(&key(k)).cloned());
                    let got = got.map_err(|e| TestCaseError::fail(e.to_string()))?;
                    prop_assert_eq!(
                        got.map(|kv| (kv.create_revision, kv.mod_revision, kv.value.to_vec())),
                        want
                    );
                }
            }
            Op::Range(limit, at) => {
                let at = at.map(|r| m.pick(r));
                let mut req = RangeRequest::prefix(prefix).limit(limit);
                req.revision = at;
                let got = store.range(req).await;
                let r = at.unwrap_or(m.rev);
                if r < m.compacted || r > m.rev {
                    prop_assert!(got.is_err());
                } else {
                    let s = m
                        .states
                        .range(..=r)
                        .next_back()
                        .map(|(_, s)| s.clone())
                        .unwrap_or_default();
                    let got = got.map_err(|e| TestCaseError::fail(e.to_string()))?;
                    let want: Vec<String> = s
                        .keys()
                        .take(if limit == 0 { usize::MAX } else { limit })
                        .cloned()
                        .collect();
                    let keys: Vec<String> = got.kvs.iter().map(|kv| kv.key.clone()).collect();
                    prop_assert_eq!(keys, want);
                    prop_assert_eq!(got.count as usize, s.len());
                    prop_assert_eq!(got.more, limit != 0 && s.len() > limit);
                }
            }
            Op::Compact(r) => {
                let r = m.pick(r);
                let got = store.compact(r).await;
                if r <= m.compacted || r > m.rev {
                    prop_assert!(got.is_err(), "compact {r}: {got:?}");
                } else {
                    if got.is_ok() {
                        compacted.store(r, Ordering::SeqCst);
                    }
                    prop_assert_eq!(got, Ok(()));
                    m.compacted = r;
                }
            }
        }
        prop_assert_eq!(store.current_revision().await.ok(), Some(m.rev));
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    #[test]
    fn memory_store_matches_the_model(ops in prop::collection::vec(op(), 1..60)) {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(run(&MemoryStore::new(), "/m/", &AtomicI64::new(0), ops))?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn embedded_store_matches_the_model(ops in prop::collection::vec(op(), 1..60)) {
        let dir = tempfile::tempdir().unwrap();
        let store = bosun_store::embedded::EmbeddedStore::open(dir.path().join("db")).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(run(&store, "/m/", &AtomicI64::new(0), ops))?;
    }
}

/// One etcd for every case: each case has its own key prefix, starts at etcd's current revision
/// and inherits the compaction revision earlier cases left.
#[test]
fn etcd_store_matches_the_model() {
    use std::sync::atomic::AtomicUsize;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let cluster = bosun_store::etcd::LocalCluster::start(1).expect("etcd");
    let store = rt.block_on(cluster.connect()).expect("etcd ready");
    let compacted = AtomicI64::new(0);
    let case = AtomicUsize::new(0);
    let config = ProptestConfig {
        cases: 24,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let mut runner = proptest::test_runner::TestRunner::new(config);
    runner
        .run(&prop::collection::vec(op(), 1..40), |ops| {
            let prefix = format!("/model/{}/", case.fetch_add(1, Ordering::SeqCst));
            rt.block_on(run(&store, &prefix, &compacted, ops))
        })
        .unwrap();
}

/// Everything a client can read: every key at every retained revision, and the events replayed
/// to a watch from the compaction revision.
async fn readable(store: &dyn Store, compacted: Revision) -> Vec<String> {
    let now = store.current_revision().await.unwrap();
    let mut out = vec![format!("revision {now}")];
    for at in compacted.max(1)..=now {
        let r = store.range(RangeRequest::prefix("/").at(at)).await.unwrap();
        out.push(format!("{at}: {:?}", r.kvs));
    }
    let mut w = store.watch("/", compacted).await.unwrap();
    while let Some(e) = w.try_next() {
        out.push(format!("{:?}", e.unwrap()));
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]
    /// Reopening the embedded store rebuilds exactly what was readable before: versions, history
    /// back to the compaction, watch replay with previous values.
    #[test]
    fn embedded_store_reopens_to_the_same_history(ops in prop::collection::vec(op(), 1..60)) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let compacted = AtomicI64::new(0);
        let before = {
            let store = bosun_store::embedded::EmbeddedStore::open(&path).unwrap();
            rt.block_on(run(&store, "/m/", &compacted, ops))?;
            rt.block_on(readable(&store, compacted.load(Ordering::SeqCst)))
        };
        let store = bosun_store::embedded::EmbeddedStore::open(&path).unwrap();
        let after = rt.block_on(readable(&store, compacted.load(Ordering::SeqCst)));
        prop_assert_eq!(before, after);
    }
}
