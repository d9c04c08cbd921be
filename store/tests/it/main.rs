//! Integration tests of bosun-store: the conformance suite on every backend, and random
//! operation sequences compared with a simple model.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

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
