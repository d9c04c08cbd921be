//! The conformance suite: what any [`Store`] must do, as one call.
//!
//! ```
//! # tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap().block_on(async {
//! use std::sync::Arc;
//! bosun_store::conformance::run_all(|| async { Arc::new(bosun_store::memory::MemoryStore::new()) as Arc<dyn bosun_store::Store> }).await;
//! # });
//! ```
//!
//! Each check panics with a description of the first violation. Checks use key prefixes unique
//! to the run, so they can share one store (an etcd cluster) with other data.

// A test harness: failing loudly on the first violation is its contract.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use crate::{Error, EventKind, KeyValue, RangeRequest, Revision, Store};
use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// How long a check waits for an event before declaring it missing. Generous: CI machines are slow.
const EVENT_WAIT: Duration = Duration::from_secs(60);

fn unique_prefix(check: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("/conformance/{nanos}/{check}/")
}

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

/// Runs every check, each on a fresh store from `make`.
pub async fn run_all<F, Fut>(make: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Store>>,
{
    revisions_are_monotonic(make().await).await;
    crud_semantics_and_errors(make().await).await;
    concurrent_cas_loses_no_update(make().await, 32, 20).await;
    pagination_is_consistent_during_writes(make().await).await;
    watch_delivers_every_event_in_order(make().await, 100, 400).await;
    watch_resumes_from_any_retained_revision(make().await).await;
    compaction_errors(make().await).await;
}

/// Every write returns a revision greater than the previous one, and reads report it.
pub async fn revisions_are_monotonic(store: Arc<dyn Store>) {
    let p = unique_prefix("monotonic");
    let mut last = store.current_revision().await.expect("current_revision");
    for i in 0..50 {
        let key = format!("{p}k{}", i % 7);
        let rev = match store.get(&key, None).await.expect("get") {
            None => store.create(&key, b("v")).await.expect("create"),
            Some(kv) if i % 5 == 0 => {
                store
                    .delete(&key, Some(kv.mod_revision))
                    .await
                    .expect("delete")
                    .0
            }
            Some(kv) => store
                .update(&key, b(&i.to_string()), kv.mod_revision)
                .await
                .expect("update"),
        };
        assert!(
            rev > last,
            "write {i} returned revision {rev}, not above {last}"
        );
        last = rev;
        let current = store.current_revision().await.expect("current_revision");
        assert!(
            current >= rev,
            "current revision {current} is behind a returned write {rev}"
        );
        if let Some(kv) = store.get(&key, None).await.expect("get") {
            assert_eq!(
                kv.mod_revision, rev,
                "{key}: mod_revision is not the write's revision"
            );
        }
    }
}

/// Create, update, delete, get at revisions, and every error they can return.
pub async fn crud_semantics_and_errors(store: Arc<dyn Store>) {
    let p = unique_prefix("crud");
    let key = format!("{p}a");
    let r1 = store.create(&key, b("one")).await.expect("create");
    match store.create(&key, b("again")).await {
        Err(Error::AlreadyExists { key: k }) => assert_eq!(k, key),
        other => panic!("create of an existing key: {other:?}"),
    }
    let r2 = store.update(&key, b("two"), r1).await.expect("update");
    match store.update(&key, b("stale"), r1).await {
        Err(Error::Conflict {
            expected, current, ..
        }) => {
            assert_eq!(expected, r1);
            assert_eq!(current.mod_revision, r2);
            assert_eq!(
                current.value,
                b("two"),
                "a conflict carries the current value"
            );
        }
        other => panic!("stale update: {other:?}"),
    }
    let kv = store.get(&key, None).await.expect("get").expect("present");
    assert_eq!(
        (kv.value.clone(), kv.create_revision, kv.mod_revision),
        (b("two"), r1, r2)
    );
    let old = store
        .get(&key, Some(r1))
        .await
        .expect("get at r1")
        .expect("present at r1");
    assert_eq!(
        old.value,
        b("one"),
        "get at an old revision returns the old value"
    );
    assert!(store
        .get(&key, Some(r1 - 1))
        .await
        .expect("get before create")
        .is_none());
    match store.delete(&key, Some(r1)).await {
        Err(Error::Conflict { .. }) => {}
        other => panic!("stale delete: {other:?}"),
    }
    let (r3, deleted) = store.delete(&key, Some(r2)).await.expect("delete");
    assert!(r3 > r2);
    assert_eq!(deleted.value, b("two"), "delete returns the deleted value");
    assert!(store.get(&key, None).await.expect("get").is_none());
    assert!(
        store
            .get(&key, Some(r2))
            .await
            .expect("get at r2")
            .is_some(),
        "history survives a delete"
    );
    assert!(matches!(
        store.delete(&key, None).await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        store.update(&key, b("x"), r3).await,
        Err(Error::NotFound { .. })
    ));
    let r4 = store.create(&key, b("reborn")).await.expect("re-create");
    let kv = store.get(&key, None).await.expect("get").expect("present");
    assert_eq!(
        kv.create_revision, r4,
        "a re-created key has a new create revision"
    );
    let future = store.current_revision().await.expect("rev") + 1000;
    assert!(matches!(
        store.get(&key, Some(future)).await,
        Err(Error::FutureRevision { .. })
    ));
    let (n, _) = store.count(&p).await.expect("count");
    assert_eq!(n, 1);
}

/// `writers` tasks each add `increments` to one counter with read-CAS-retry: no update is lost,
/// and every failed CAS is a [`Error::Conflict`].
pub async fn concurrent_cas_loses_no_update(
    store: Arc<dyn Store>,
    writers: usize,
    increments: usize,
) {
    let key = format!("{}counter", unique_prefix("cas"));
    store.create(&key, b("0")).await.expect("create counter");
    let mut tasks = Vec::new();
    for _ in 0..writers {
        let (store, key) = (Arc::clone(&store), key.clone());
        tasks.push(tokio::spawn(async move {
            let mut kv = store
                .get(&key, None)
                .await
                .expect("get")
                .expect("counter exists");
            for _ in 0..increments {
                loop {
                    let n: u64 = std::str::from_utf8(&kv.value)
                        .expect("utf8")
                        .parse()
                        .expect("number");
                    let next = b(&(n + 1).to_string());
                    match store.update(&key, next.clone(), kv.mod_revision).await {
                        Ok(rev) => {
                            kv = KeyValue {
                                value: next,
                                mod_revision: rev,
                                ..kv
                            };
                            break;
                        }
                        Err(Error::Conflict { current, .. }) => {
                            kv = *current;
                        }
                        Err(e) => panic!("update failed with {e}, not a conflict"),
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("writer task");
    }
    let kv = store.get(&key, None).await.expect("get").expect("counter");
    let total: usize = std::str::from_utf8(&kv.value)
        .expect("utf8")
        .parse()
        .expect("number");
    assert_eq!(total, writers * increments, "lost updates");
}

/// Paging through a range at one revision, while writes continue, returns exactly the keys of
/// an unpaginated range at that revision.
pub async fn pagination_is_consistent_during_writes(store: Arc<dyn Store>) {
    let p = unique_prefix("paginate");
    for i in 0..300 {
        store
            .create(&format!("{p}{i:04}"), b(&i.to_string()))
            .await
            .expect("create");
    }
    let writer = {
        let (store, p) = (Arc::clone(&store), p.clone());
        tokio::spawn(async move {
            for i in 0..300u32 {
                let key = format!("{p}{:04}", (i * 7) % 300);
                match i % 3 {
                    0 => {
                        let _ = store.create(&format!("{p}{:04}x", i), b("new")).await;
                    }
                    1 => {
                        if let Ok(Some(kv)) = store.get(&key, None).await {
                            let _ = store.delete(&key, Some(kv.mod_revision)).await;
                        }
                    }
                    _ => {
                        if let Ok(Some(kv)) = store.get(&key, None).await {
                            let _ = store.update(&key, b("changed"), kv.mod_revision).await;
                        }
                    }
                }
                tokio::task::yield_now().await;
            }
        })
    };
    let first = store
        .range(RangeRequest::prefix(&p).limit(37))
        .await
        .expect("first page");
    let at = first.revision;
    let mut seen: Vec<KeyValue> = first.kvs.clone();
    // (keys before the page, the page's count): a page's count is the keys left from its start.
    let mut counts = vec![(0usize, first.count)];
    let (mut more, mut last) = (first.more, first.kvs.last().map(|kv| kv.key.clone()));
    while more {
        let after = last.clone().expect("a page with more has keys");
        let page = store
            .range(RangeRequest::prefix(&p).limit(37).start_after(after).at(at))
            .await
            .expect("page");
        assert_eq!(page.revision, at, "a page was read at another revision");
        counts.push((seen.len(), page.count));
        more = page.more;
        last = page.kvs.last().map(|kv| kv.key.clone()).or(last);
        seen.extend(page.kvs);
    }
    writer.await.expect("writer");
    let whole = store
        .range(RangeRequest::prefix(&p).at(at))
        .await
        .expect("whole range");
    assert!(counts.len() > 1, "the range did not paginate");
    for (before, count) in counts {
        assert_eq!(
            count as usize,
            whole.kvs.len() - before,
            "a page's count is not the keys left"
        );
    }
    assert_eq!(
        seen, whole.kvs,
        "pages differ from one read at the same revision"
    );
    let keys: BTreeSet<&String> = seen.iter().map(|kv| &kv.key).collect();
    assert_eq!(keys.len(), seen.len(), "a key appeared twice");
}

async fn next_event(w: &mut crate::Watch, what: &str) -> Arc<crate::Event> {
    match tokio::time::timeout(EVENT_WAIT, w.next()).await {
        Ok(Some(Ok(e))) => e,
        Ok(Some(Err(e))) => panic!("{what}: watch failed: {e}"),
        Ok(None) => panic!("{what}: watch ended"),
        Err(_) => panic!("{what}: no event within {EVENT_WAIT:?}"),
    }
}

/// `watchers` watchers, started before `writes` concurrent writes on 8 writers, each receive every
/// event under their prefix exactly once, in revision order, with correct previous values.
pub async fn watch_delivers_every_event_in_order(
    store: Arc<dyn Store>,
    watchers: usize,
    writes: usize,
) {
    let p = unique_prefix("watch");
    let start = store.current_revision().await.expect("rev");
    let mut ws = Vec::new();
    for i in 0..watchers {
        // Half watch everything, half one of four sub-prefixes.
        let prefix = if i % 2 == 0 {
            p.clone()
        } else {
            format!("{p}{}/", i % 4)
        };
        ws.push((
            prefix.clone(),
            store.watch(&prefix, start).await.expect("watch"),
        ));
    }
    let mut tasks = Vec::new();
    for t in 0..8 {
        let (store, p) = (Arc::clone(&store), p.clone());
        tasks.push(tokio::spawn(async move {
            let mut revs = Vec::new();
            for i in 0..writes / 8 {
                let key = format!("{p}{}/k{}", (t + i) % 4, (t * 1000 + i) % 13);
                let rev = match store.get(&key, None).await.expect("get") {
                    None => store.create(&key, b(&format!("{t}-{i}"))).await,
                    Some(kv) if i % 6 == 5 => {
                        store.delete(&key, Some(kv.mod_revision)).await.map(|r| r.0)
                    }
                    Some(kv) => {
                        store
                            .update(&key, b(&format!("{t}-{i}")), kv.mod_revision)
                            .await
                    }
                };
                match rev {
                    Ok(r) => revs.push((key, r)),
                    Err(
                        Error::Conflict { .. }
                        | Error::AlreadyExists { .. }
                        | Error::NotFound { .. },
                    ) => {}
                    Err(e) => panic!("write failed: {e}"),
                }
            }
            revs
        }));
    }
    let mut written: Vec<(String, Revision)> = Vec::new();
    for t in tasks {
        written.extend(t.await.expect("writer"));
    }
    written.sort_by_key(|(_, r)| *r);
    for (i, (prefix, w)) in ws.iter_mut().enumerate() {
        let want: Vec<&(String, Revision)> = written
            .iter()
            .filter(|(k, _)| k.starts_with(prefix.as_str()))
            .collect();
        let mut last_value: BTreeMap<String, Bytes> = BTreeMap::new();
        let mut prev_rev = start;
        for (key, rev) in want {
            let e = next_event(w, &format!("watcher {i} on {prefix}")).await;
            assert_eq!(
                (&e.kv.key, e.revision()),
                (key, *rev),
                "watcher {i}: wrong or out-of-order event"
            );
            assert!(e.revision() > prev_rev);
            prev_rev = e.revision();
            match (&e.prev_kv, last_value.get(key)) {
                (Some(prev), Some(v)) => {
                    assert_eq!(&prev.value, v, "watcher {i}: wrong prev_kv for {key}")
                }
                (None, Some(_)) => panic!("watcher {i}: missing prev_kv for {key} at {rev}"),
                _ => {}
            }
            match e.kind {
                EventKind::Put => last_value.insert(key.clone(), e.kv.value.clone()),
                EventKind::Delete => last_value.remove(key),
            };
        }
        assert!(w.try_next().is_none(), "watcher {i}: an extra event");
    }
}

/// A watch from any retained revision replays exactly the events after it.
pub async fn watch_resumes_from_any_retained_revision(store: Arc<dyn Store>) {
    let p = unique_prefix("resume");
    let base = store.current_revision().await.expect("rev");
    let mut revs = Vec::new();
    for i in 0..30 {
        let key = format!("{p}k{}", i % 4);
        let r = match store.get(&key, None).await.expect("get") {
            None => store.create(&key, b(&i.to_string())).await.expect("create"),
            Some(kv) => store
                .update(&key, b(&i.to_string()), kv.mod_revision)
                .await
                .expect("update"),
        };
        revs.push(r);
    }
    for (i, &from) in std::iter::once(&base).chain(revs.iter()).enumerate() {
        let mut w = store.watch(&p, from).await.expect("watch");
        for &want in &revs[i..] {
            let e = next_event(&mut w, &format!("resume from {from}")).await;
            assert_eq!(e.revision(), want, "resume from {from}");
        }
        assert!(w.try_next().is_none(), "resume from {from}: an extra event");
    }
}

/// After compaction at `c`: reads below `c` and watches needing events at or below `c` fail with
/// [`Error::Compacted`] naming `c`; everything at or after `c` still works.
pub async fn compaction_errors(store: Arc<dyn Store>) {
    let p = unique_prefix("compact");
    let key = format!("{p}k");
    let r1 = store.create(&key, b("1")).await.expect("create");
    let r2 = store.update(&key, b("2"), r1).await.expect("update");
    let r3 = store.update(&key, b("3"), r2).await.expect("update");
    let other = format!("{p}gone");
    let g1 = store.create(&other, b("x")).await.expect("create");
    store.delete(&other, Some(g1)).await.expect("delete");
    store.compact(r2).await.expect("compact");
    let compacted = |r: Result<_, Error>, what: &str| match r {
        Err(Error::Compacted { oldest, .. }) => {
            assert_eq!(oldest, r2, "{what}: wrong oldest revision")
        }
        Err(e) => panic!("{what}: expected Compacted, got {e}"),
        Ok(_) => panic!("{what}: expected Compacted, got a result"),
    };
    compacted(
        store.get(&key, Some(r1)).await.map(drop),
        "get below the compaction",
    );
    compacted(
        store.range(RangeRequest::prefix(&p).at(r1)).await.map(drop),
        "range below the compaction",
    );
    compacted(
        store.watch(&p, r1).await.map(drop),
        "watch needing compacted events",
    );
    assert_eq!(
        store
            .get(&key, Some(r2))
            .await
            .expect("get at r2")
            .expect("value")
            .value,
        b("2")
    );
    assert_eq!(
        store
            .get(&key, None)
            .await
            .expect("get")
            .expect("value")
            .value,
        b("3")
    );
    let mut w = store
        .watch(&p, r2)
        .await
        .expect("watch from the compaction revision");
    assert_eq!(next_event(&mut w, "after compaction").await.revision(), r3);
    assert!(store.get(&other, None).await.expect("get").is_none());
    compacted(
        store.compact(r1).await,
        "compacting an already compacted revision",
    );
}
