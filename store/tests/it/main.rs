//! Integration tests of bosun-store: the conformance suite on every backend, and random
//! operation sequences compared with a simple model.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod embedded;
mod etcd;
mod model;

use bosun_store::memory::MemoryStore;
use bosun_store::Store;
use std::sync::Arc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_store_passes_conformance() {
    bosun_store::conformance::run_all(|| async { Arc::new(MemoryStore::new()) as Arc<dyn Store> })
        .await;
}

#[tokio::test]
async fn lagging_watcher_is_dropped_with_an_error() {
    let store = MemoryStore::with_watch_queue_limit(3);
    let mut w = store.watch("/", 1).await.unwrap();
    for i in 0..5 {
        store.create(&format!("/k{i}"), "v".into()).await.unwrap();
    }
    let mut got = 0;
    let err = loop {
        match w.next().await {
            Some(Ok(_)) => got += 1,
            Some(Err(e)) => break e,
            None => panic!("watch ended without an error"),
        }
    };
    assert_eq!(got, 3);
    assert_eq!(err, bosun_store::Error::WatcherLagged(3));
    assert_eq!(store.watcher_count(), 0);
}

#[tokio::test]
async fn dropped_watch_is_forgotten() {
    let store = MemoryStore::new();
    let w = store.watch("/", 1).await.unwrap();
    assert_eq!(store.watcher_count(), 1);
    drop(w);
    store.create("/a", "v".into()).await.unwrap();
    assert_eq!(store.watcher_count(), 0);
}

#[tokio::test(start_paused = true)]
async fn compactor_keeps_one_interval_of_history() {
    use std::time::Duration;
    let store = Arc::new(MemoryStore::new());
    let interval = Duration::from_secs(300);
    let handle = bosun_store::compactor::spawn_compactor(store.clone(), interval);
    let r1 = store.create("/a", "1".into()).await.unwrap();
    tokio::time::sleep(interval + Duration::from_secs(1)).await; // tick 1 records the revision
    let r2 = store.update("/a", "2".into(), r1).await.unwrap();
    assert!(
        store.get("/a", Some(r1)).await.is_ok(),
        "history is kept for one interval"
    );
    tokio::time::sleep(interval).await; // tick 2 compacts to what tick 1 saw
    assert!(matches!(
        store.get("/a", Some(r1 - 1)).await,
        Err(bosun_store::Error::Compacted { oldest, .. }) if oldest == r1
    ));
    assert_eq!(store.get("/a", Some(r2)).await.unwrap().unwrap().value, "2");
    handle.abort();
}
