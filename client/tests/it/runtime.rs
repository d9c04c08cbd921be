//! Watchers, reflectors and shared informers against a real (in-process) API server.

use super::cm;
use bosun_api_types::core::v1::ConfigMap;
use bosun_apiserver::ApiServer;
use bosun_client::informer::{InformerFactory, Notification};
use bosun_client::reflector::{Key, Store};
use bosun_client::watcher::{self, Event};
use bosun_client::{Api, Client, Config, DeleteParams, PostParams};
use bosun_store::memory::MemoryStore;
use bosun_store::Store as _;
use futures_util::StreamExt;
use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Serves `store` on `addr` until the returned sender fires.
async fn serve_on(
    store: Arc<MemoryStore>,
    addr: std::net::SocketAddr,
) -> tokio::sync::oneshot::Sender<()> {
    let s = ApiServer::new(store);
    s.bootstrap().await.unwrap();
    let listener = loop {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => break l,
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    };
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(s.serve(listener, async {
        let _ = rx.await;
    }));
    tx
}

async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..500 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}");
}

fn names(store: &Store<ConfigMap>) -> BTreeSet<String> {
    store
        .list()
        .iter()
        .map(|c| c.metadata.name.clone().unwrap_or_default())
        .collect()
}

#[tokio::test]
async fn a_watcher_survives_a_restart_and_a_compaction() {
    let store = Arc::new(MemoryStore::new());
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let stop = serve_on(Arc::clone(&store), addr).await;
    let client =
        Client::try_from_config(Config::new(format!("http://{addr}").parse().unwrap())).unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    for i in 0..3 {
        cms.create(&PostParams::default(), &cm(&format!("c{i}"), &[]))
            .await
            .unwrap();
    }

    // The reflector, and a log of every applied (name, resourceVersion) outside relists.
    let cache: Store<ConfigMap> = Store::default();
    let applied: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let config = watcher::Config {
        min_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(200),
        ..Default::default()
    };
    let stream = watcher::watcher(cms.clone(), config);
    let (c2, a2) = (cache.clone(), Arc::clone(&applied));
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(ev) = stream.next().await {
            let Ok(ev) = ev else { continue };
            if let Event::Apply(k) | Event::Delete(k) = &ev {
                a2.lock().unwrap().push((
                    k.metadata.name.clone().unwrap_or_default(),
                    k.metadata.resource_version.clone().unwrap_or_default(),
                ));
            }
            c2.apply(ev);
        }
    });
    cache.wait_until_ready().await;
    assert_eq!(names(&cache).len(), 3);
    cms.create(&PostParams::default(), &cm("live", &[]))
        .await
        .unwrap();
    eventually("the live create", || names(&cache).contains("live")).await;

    // The server goes away; meanwhile the state changes through another server on the same
    // store, and history is compacted past what the watcher saw.
    stop.send(()).unwrap();
    let offline = ApiServer::new(Arc::clone(&store) as Arc<dyn bosun_store::Store>);
    let req = |method: &str, uri: &str, body: String| {
        http::Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", "application/json")
            .body(http_body_util::Full::new(bytes::Bytes::from(body)))
            .unwrap()
    };
    offline
        .handle(req(
            "DELETE",
            "/api/v1/namespaces/default/configmaps/c0",
            String::new(),
        ))
        .await;
    let body = serde_json::to_string(&cm("while-down", &[])).unwrap();
    offline
        .handle(req("POST", "/api/v1/namespaces/default/configmaps", body))
        .await;
    let rev = store.current_revision().await.unwrap();
    store.compact(rev).await.unwrap();

    // Back on the same address: the watcher gets 410, lists again, and converges.
    let _stop = serve_on(Arc::clone(&store), addr).await;
    eventually("convergence after the restart", || {
        names(&cache)
            == ["c1", "c2", "live", "while-down"]
                .iter()
                .map(|s| s.to_string())
                .collect()
    })
    .await;
    // And it keeps following live changes.
    cms.delete("c1", &DeleteParams::default()).await.unwrap();
    eventually("the delete after the restart", || {
        !names(&cache).contains("c1")
    })
    .await;
    let applied = applied.lock().unwrap();
    let unique: HashSet<_> = applied.iter().collect();
    assert_eq!(
        unique.len(),
        applied.len(),
        "an event was applied twice: {applied:?}"
    );
}

#[tokio::test]
async fn informers_share_one_watch_and_notify_every_subscriber() {
    let (_s, url) = super::start_open().await;
    let client = Client::try_from_config(Config::new(url.parse().unwrap())).unwrap();
    let factory = InformerFactory::new(client.clone());
    let first = factory.informer::<ConfigMap>(Some("default"));
    let second = factory.informer::<ConfigMap>(Some("default"));
    let mut sub1 = first.subscribe();
    let mut sub2 = second.subscribe();
    first.wait_until_ready().await;
    second.wait_until_ready().await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    cms.create(&PostParams::default(), &cm("shared", &[]))
        .await
        .unwrap();
    for sub in [&mut sub1, &mut sub2] {
        let n = tokio::time::timeout(Duration::from_secs(5), sub.recv())
            .await
            .unwrap()
            .unwrap();
        assert!(
            matches!(n, Notification::Added(ref o) if o.metadata.name.as_deref() == Some("shared"))
        );
    }
    assert!(second
        .store()
        .get(&Key::namespaced("default", "shared"))
        .is_some());
    // Exactly one watch of ConfigMaps reached the server.
    let metrics = client
        .send(
            http::Request::get("/metrics")
                .body(Default::default())
                .unwrap(),
        )
        .await
        .unwrap();
    let text = http_body_util::BodyExt::collect(metrics.into_body())
        .await
        .unwrap()
        .to_bytes();
    let text = String::from_utf8_lossy(&text);
    let line = text
        .lines()
        .find(|l| l.starts_with("apiserver_registered_watchers{group=\"\",kind=\"ConfigMap\""))
        .unwrap_or_else(|| panic!("no ConfigMap watcher gauge in\n{text}"));
    assert!(line.ends_with(" 1"), "{line}");
}

#[tokio::test]
async fn a_streaming_list_watcher_starts_from_the_watch_itself() {
    let (_s, url) = super::start_open().await;
    let client = Client::try_from_config(Config::new(url.parse().unwrap())).unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    for i in 0..3 {
        cms.create(&PostParams::default(), &cm(&format!("s{i}"), &[]))
            .await
            .unwrap();
    }
    let config = watcher::Config {
        streaming_list: true,
        ..Default::default()
    };
    let mut events = std::pin::pin!(watcher::watcher(cms.clone(), config));
    let mut seen = Vec::new();
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(10), events.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let done = ev == Event::InitDone;
        seen.push(match ev {
            Event::Init => "init".to_owned(),
            Event::InitApply(c) => c.metadata.name.unwrap_or_default(),
            Event::InitDone => "done".to_owned(),
            other => panic!("unexpected {other:?}"),
        });
        if done {
            break;
        }
    }
    assert_eq!(seen, ["init", "s0", "s1", "s2", "done"]);
    cms.create(&PostParams::default(), &cm("after", &[]))
        .await
        .unwrap();
    let ev = tokio::time::timeout(Duration::from_secs(10), events.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        matches!(ev, Event::Apply(ref c) if c.metadata.name.as_deref() == Some("after")),
        "{ev:?}"
    );
}

#[tokio::test]
async fn resync_reannounces_every_cached_object() {
    let (_s, url) = super::start_open().await;
    let client = Client::try_from_config(Config::new(url.parse().unwrap())).unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    cms.create(&PostParams::default(), &cm("steady", &[]))
        .await
        .unwrap();
    let factory = InformerFactory::new(client).with_resync(Duration::from_millis(100));
    let informer = factory.informer::<ConfigMap>(Some("default"));
    let mut sub = informer.subscribe();
    informer.wait_until_ready().await;
    // Nothing changes, yet the object is announced again (old and new the same).
    let resynced = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Ok(Notification::Updated(old, new)) = sub.recv().await {
                if new.metadata.name.as_deref() == Some("steady") {
                    return Arc::ptr_eq(&old, &new);
                }
            }
        }
    })
    .await
    .unwrap();
    assert!(resynced);
}
