//! The API server over real HTTP (loopback, HTTP/1.1, a pooled client), on the embedded store
//! `bosun server` uses by default: creates (1 and 64 concurrent clients), gets, a LIST of
//! 10,000 pods, and the latency of one change reaching 1,000 watchers.
//!
//! `cargo bench -p bosun-apiserver --bench http`
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use bosun_apiserver::ApiServer;
use bosun_store::embedded::EmbeddedStore;
use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use futures_util::StreamExt;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

type HttpClient = Client<HttpConnector, Full<Bytes>>;

static SEQ: AtomicU64 = AtomicU64::new(0);

struct Bench {
    base: String,
    client: HttpClient,
    _dir: tempfile::TempDir,
}

impl Bench {
    async fn start() -> Bench {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(EmbeddedStore::open(dir.path().join("store")).unwrap());
        let server = ApiServer::new(store);
        server.bootstrap().await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(server.serve(listener, std::future::pending()));
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(256)
            .build(connector);
        Bench {
            base: format!("http://{addr}"),
            client,
            _dir: dir,
        }
    }

    async fn call(&self, method: Method, path: &str, body: String) -> (u16, Bytes) {
        let req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let resp = self.client.request(req).await.unwrap();
        let code = resp.status().as_u16();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (code, bytes)
    }

    async fn create_cm(&self, ns: &str) {
        let name = format!("cm-{}", SEQ.fetch_add(1, Ordering::Relaxed));
        let body = format!(
            r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"{name}","labels":{{"app":"bench"}}}},"data":{{"k":"v"}}}}"#
        );
        let (code, b) = self
            .call(
                Method::POST,
                &format!("/api/v1/namespaces/{ns}/configmaps"),
                body,
            )
            .await;
        assert_eq!(code, 201, "{}", String::from_utf8_lossy(&b));
    }

    async fn namespace(&self, ns: &str) {
        let body = format!(r#"{{"metadata":{{"name":"{ns}"}}}}"#);
        let (code, _) = self.call(Method::POST, "/api/v1/namespaces", body).await;
        assert!(code == 201 || code == 409);
    }
}

async fn creates(b: &Arc<Bench>, ns: &str, n: u64, clients: u64) -> Duration {
    let per = n.div_ceil(clients);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (b, ns) = (Arc::clone(b), ns.to_owned());
        tasks.push(tokio::spawn(async move {
            for _ in 0..per {
                b.create_cm(&ns).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    start.elapsed().mul_f64(n as f64 / (per * clients) as f64)
}

fn pod(i: usize) -> String {
    format!(
        r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"pod-{i}","labels":{{"app":"list"}}}},"spec":{{"containers":[{{"name":"main","image":"registry.k8s.io/pause:3.10","resources":{{"requests":{{"cpu":"10m","memory":"16Mi"}}}}}}]}}}}"#
    )
}

async fn current_rv(b: &Bench) -> String {
    let (_, body) = b
        .call(
            Method::GET,
            "/api/v1/namespaces/fan/configmaps?limit=1",
            String::new(),
        )
        .await;
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    v["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let b = Arc::new(rt.block_on(Bench::start()));
    rt.block_on(async {
        for ns in ["c1", "c64", "get", "list", "fan"] {
            b.namespace(ns).await;
        }
    });
    let mut g = c.benchmark_group("apiserver_http");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(5))
        .warm_up_time(Duration::from_secs(1));
    g.throughput(Throughput::Elements(1));
    g.bench_function("create_configmap_1_client", |bn| {
        bn.iter_custom(|n| rt.block_on(creates(&b, "c1", n, 1)))
    });
    g.bench_function("create_configmap_64_clients", |bn| {
        bn.iter_custom(|n| {
            rt.block_on(creates(&b, "c64", n.max(64), 64))
                .mul_f64(n as f64 / n.max(64) as f64)
        })
    });
    rt.block_on(b.create_cm("get"));
    let path = format!(
        "/api/v1/namespaces/get/configmaps/cm-{}",
        SEQ.load(Ordering::Relaxed) - 1
    );
    g.bench_function("get_configmap", |bn| {
        bn.iter_custom(|n| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..n {
                    let (code, _) = b.call(Method::GET, &path, String::new()).await;
                    assert_eq!(code, 200);
                }
                start.elapsed()
            })
        })
    });

    // 10,000 pods, created through the API by 64 clients.
    rt.block_on(async {
        let mut tasks = Vec::new();
        for t in 0..64usize {
            let b = Arc::clone(&b);
            tasks.push(tokio::spawn(async move {
                let mut i = t;
                while i < 10_000 {
                    let (code, body) = b
                        .call(Method::POST, "/api/v1/namespaces/list/pods", pod(i))
                        .await;
                    assert_eq!(code, 201, "{}", String::from_utf8_lossy(&body));
                    i += 64;
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
    g.bench_function("list_10k_pods", |bn| {
        bn.iter_custom(|n| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..n {
                    let (code, body) = b
                        .call(Method::GET, "/api/v1/namespaces/list/pods", String::new())
                        .await;
                    assert_eq!(code, 200);
                    assert!(body.len() > 10_000 * 500);
                }
                start.elapsed()
            })
        })
    });

    // 1,000 open watches; one create; the time until every watcher has the event.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    rt.block_on(async {
        let rv = current_rv(&b).await;
        for _ in 0..1000 {
            let tx = tx.clone();
            let req = Request::builder()
                .uri(format!(
                    "{}/api/v1/namespaces/fan/configmaps?watch=true&resourceVersion={rv}",
                    b.base
                ))
                .body(Full::new(Bytes::new()))
                .unwrap();
            let resp = b.client.request(req).await.unwrap();
            assert_eq!(resp.status(), 200);
            tokio::spawn(async move {
                let mut body = resp.into_body().into_data_stream();
                while let Some(Ok(chunk)) = body.next().await {
                    for _ in chunk.iter().filter(|c| **c == b'\n') {
                        if tx.send(()).is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    g.bench_function("watch_fanout_1000_watchers", |bn| {
        bn.iter_custom(|n| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..n {
                    let start = Instant::now();
                    b.create_cm("fan").await;
                    for _ in 0..1000 {
                        rx.recv().await.unwrap();
                    }
                    total += start.elapsed();
                }
                total
            })
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
