//! The watch cache: warm lists and watches are served without reading the store, and still
//! show every acknowledged write.

use super::{call, cm, post};
use bosun_apiserver::ApiServer;
use bosun_store::memory::MemoryStore;
use bosun_store::{KeyValue, RangeRequest, RangeResponse, Result, Revision, Store, Watch};
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::Value;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// A store that counts the reads a list or watch could make.
struct Counting {
    inner: MemoryStore,
    ranges: AtomicUsize,
    watches: AtomicUsize,
}

#[async_trait::async_trait]
impl Store for Counting {
    async fn get(&self, key: &str, revision: Option<Revision>) -> Result<Option<KeyValue>> {
        self.inner.get(key, revision).await
    }
    async fn range(&self, request: RangeRequest) -> Result<RangeResponse> {
        self.ranges.fetch_add(1, Ordering::SeqCst);
        self.inner.range(request).await
    }
    async fn count(&self, prefix: &str) -> Result<(i64, Revision)> {
        self.inner.count(prefix).await
    }
    async fn create(&self, key: &str, value: Bytes) -> Result<Revision> {
        self.inner.create(key, value).await
    }
    async fn update(&self, key: &str, value: Bytes, expected: Revision) -> Result<Revision> {
        self.inner.update(key, value, expected).await
    }
    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<(Revision, KeyValue)> {
        self.inner.delete(key, expected).await
    }
    async fn watch(&self, prefix: &str, after: Revision) -> Result<Watch> {
        self.watches.fetch_add(1, Ordering::SeqCst);
        self.inner.watch(prefix, after).await
    }
    async fn compact(&self, revision: Revision) -> Result<()> {
        self.inner.compact(revision).await
    }
    async fn current_revision(&self) -> Result<Revision> {
        self.inner.current_revision().await
    }
    async fn db_size(&self) -> Result<u64> {
        self.inner.db_size().await
    }
}

async fn names(s: &ApiServer, uri: &str) -> (Vec<String>, Value) {
    let (code, list) = call(s, Method::GET, uri, None, "").await;
    assert_eq!(code, StatusCode::OK, "{list}");
    let names = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["metadata"]["name"].as_str().unwrap().to_owned())
        .collect();
    (names, list)
}

async fn first_lines(s: &ApiServer, uri: &str, n: usize) -> Vec<Value> {
    let req = Request::builder()
        .uri(uri)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = s.handle(req).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    let mut seen = Vec::new();
    while seen.len() < n {
        let frame = body.frame().await.unwrap().unwrap();
        let data = frame.into_data().unwrap();
        for line in data.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            seen.push(serde_json::from_slice(line).unwrap());
        }
    }
    seen
}

#[tokio::test]
async fn warm_lists_and_watches_never_read_the_store() {
    let store = Arc::new(Counting {
        inner: MemoryStore::new(),
        ranges: AtomicUsize::new(0),
        watches: AtomicUsize::new(0),
    });
    let s = ApiServer::new(Arc::clone(&store) as Arc<dyn Store>);
    s.bootstrap().await.unwrap();
    let mut last_rv = String::new();
    for i in 0..5 {
        let mut o = cm(&format!("c{i}"));
        o["metadata"]["labels"] = serde_json::json!({"i": i.to_string()});
        let (_, created) = post(&s, "/api/v1/namespaces/default/configmaps", o).await;
        last_rv = created["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .to_owned();
    }
    // The first list may wait for the cache to fill; from then on the store is not read.
    names(&s, "/api/v1/namespaces/default/configmaps").await;
    let ranges = store.ranges.load(Ordering::SeqCst);
    let watches = store.watches.load(Ordering::SeqCst);

    // A write is visible to the very next list (consistent reads from the cache).
    post(&s, "/api/v1/namespaces/default/configmaps", cm("c5")).await;
    let (all, list) = names(&s, "/api/v1/namespaces/default/configmaps").await;
    assert_eq!(all, ["c0", "c1", "c2", "c3", "c4", "c5"]);
    assert!(list["items"][0].get("kind").is_none());
    assert!(list["items"][0]["metadata"]["resourceVersion"].is_string());
    let (sel, _) = names(&s, "/api/v1/configmaps?labelSelector=i%20in%20(1,3)").await;
    assert_eq!(sel, ["c1", "c3"]);
    let (zero, _) = names(
        &s,
        "/api/v1/namespaces/default/configmaps?resourceVersion=0",
    )
    .await;
    assert_eq!(zero.len(), 6);
    let (page1, list) = names(&s, "/api/v1/namespaces/default/configmaps?limit=4").await;
    assert_eq!(page1.len(), 4);
    assert_eq!(list["metadata"]["remainingItemCount"], 2);
    let token = list["metadata"]["continue"].as_str().unwrap().to_owned();
    let (page2, list2) = names(
        &s,
        &format!("/api/v1/namespaces/default/configmaps?limit=4&continue={token}"),
    )
    .await;
    assert_eq!(page2, ["c4", "c5"]);
    assert!(list2["metadata"].get("continue").is_none());
    // A watch with its initial objects, and one resuming from a revision in the window.
    let initial = first_lines(&s, "/api/v1/namespaces/default/configmaps?watch=1", 6).await;
    assert!(initial.iter().all(|e| e["type"] == "ADDED"));
    let resumed = first_lines(
        &s,
        &format!("/api/v1/namespaces/default/configmaps?watch=1&resourceVersion={last_rv}"),
        1,
    )
    .await;
    assert_eq!(resumed[0]["type"], "ADDED");
    assert_eq!(resumed[0]["object"]["metadata"]["name"], "c5");
    // Tables come from the cache too.
    let req = Request::builder()
        .uri("/api/v1/namespaces/default/configmaps")
        .header("accept", "application/json;as=Table;v=v1;g=meta.k8s.io")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = s.handle(req).await;
    let table: Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(table["rows"].as_array().unwrap().len(), 6);

    assert_eq!(
        store.ranges.load(Ordering::SeqCst),
        ranges,
        "a warm list read the store"
    );
    assert_eq!(
        store.watches.load(Ordering::SeqCst),
        watches,
        "a warm watch opened a store watch"
    );

    // A continue token from before a later write is served from the store, at its revision.
    post(&s, "/api/v1/namespaces/default/configmaps", cm("c6")).await;
    let (all, _) = names(&s, "/api/v1/namespaces/default/configmaps").await;
    assert_eq!(all.len(), 7);
    let (page2, _) = names(
        &s,
        &format!("/api/v1/namespaces/default/configmaps?limit=4&continue={token}"),
    )
    .await;
    assert_eq!(page2, ["c4", "c5"]);
    assert!(store.ranges.load(Ordering::SeqCst) > ranges);
}

#[tokio::test]
async fn watches_are_served_over_websocket() {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let s = super::server().await;
    post(&s, "/api/v1/namespaces/default/configmaps", cm("a")).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(s.clone().serve(listener, std::future::pending()));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut ws, resp) = tokio_tungstenite::client_async(
        format!("ws://{addr}/api/v1/namespaces/default/configmaps?watch=true"),
        tcp,
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 101);
    let next = |m: Option<Result<Message, _>>| -> Value {
        match m.unwrap().unwrap() {
            Message::Text(t) => serde_json::from_str(t.as_str()).unwrap(),
            other => panic!("expected a text message, got {other:?}"),
        }
    };
    let ev = next(ws.next().await);
    assert_eq!(
        (
            ev["type"].as_str(),
            ev["object"]["metadata"]["name"].as_str()
        ),
        (Some("ADDED"), Some("a"))
    );
    post(&s, "/api/v1/namespaces/default/configmaps", cm("b")).await;
    let ev = next(ws.next().await);
    assert_eq!(ev["object"]["metadata"]["name"], "b");

    // An error before the upgrade is a plain HTTP error.
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let err = tokio_tungstenite::client_async(
        format!("ws://{addr}/api/v1/namespaces/default/nosuchthings?watch=true"),
        tcp,
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("404"), "{err}");
}
