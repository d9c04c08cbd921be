//! Store hot paths on every backend in one run (memory, embedded, etcd 3.4 started locally):
//! `cargo bench -p bosun-store --all-features --bench store`
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use bosun_store::{memory::MemoryStore, RangeRequest, Store};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

static SEQ: AtomicU64 = AtomicU64::new(0);

fn next_key(prefix: &str) -> String {
    format!("{prefix}{:012}", SEQ.fetch_add(1, Ordering::Relaxed))
}

const VALUE: &[u8] = &[b'x'; 1024];

async fn creates(store: &Arc<dyn Store>, prefix: &str, n: u64, writers: u64) -> Duration {
    let start = Instant::now();
    let mut tasks = Vec::new();
    let per = n.div_ceil(writers);
    for _ in 0..writers {
        let (store, prefix) = (Arc::clone(store), prefix.to_owned());
        tasks.push(tokio::spawn(async move {
            for _ in 0..per {
                store
                    .create(&next_key(&prefix), VALUE.into())
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    start.elapsed().mul_f64(n as f64 / (per * writers) as f64)
}

fn bench_backend(
    c: &mut Criterion,
    rt: &tokio::runtime::Runtime,
    name: &str,
    store: Arc<dyn Store>,
) {
    let mut g = c.benchmark_group(format!("store/{name}"));
    g.sample_size(10)
        .measurement_time(Duration::from_secs(4))
        .warm_up_time(Duration::from_secs(1));
    g.throughput(Throughput::Elements(1));
    g.bench_function("create_1_writer", |b| {
        b.iter_custom(|n| rt.block_on(creates(&store, "/bench/c1/", n, 1)))
    });
    g.bench_function("create_64_writers", |b| {
        b.iter_custom(|n| {
            rt.block_on(creates(&store, "/bench/c64/", n.max(64), 64))
                .mul_f64(n as f64 / n.max(64) as f64)
        })
    });
    let key = next_key("/bench/get/");
    rt.block_on(store.create(&key, VALUE.into())).unwrap();
    g.bench_function("get", |b| {
        b.iter(|| rt.block_on(store.get(&key, None)).unwrap())
    });
    rt.block_on(creates(&store, "/bench/range/", 10_000, 64));
    g.throughput(Throughput::Elements(10_000));
    g.bench_function("range_10k", |b| {
        b.iter(|| {
            rt.block_on(store.range(RangeRequest::prefix("/bench/range/")))
                .unwrap()
        })
    });
    g.throughput(Throughput::Elements(500));
    g.bench_function("range_10k_limit_500", |b| {
        b.iter(|| {
            rt.block_on(store.range(RangeRequest::prefix("/bench/range/").limit(500)))
                .unwrap()
        })
    });
    // Time from one write until all 1,000 watchers have its event.
    let mut watchers = rt.block_on(async {
        let at = store.current_revision().await.unwrap();
        let mut ws = Vec::new();
        for _ in 0..1000 {
            ws.push(store.watch("/bench/fan/", at).await.unwrap());
        }
        ws
    });
    g.throughput(Throughput::Elements(1));
    g.bench_function("watch_fanout_1000", |b| {
        b.iter_custom(|n| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..n {
                    store
                        .create(&next_key("/bench/fan/"), "v".into())
                        .await
                        .unwrap();
                    for w in watchers.iter_mut() {
                        w.next().await.unwrap().unwrap();
                    }
                }
                start.elapsed()
            })
        })
    });
    g.finish();
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    bench_backend(c, &rt, "memory", Arc::new(MemoryStore::new()));
    let dir = tempfile::tempdir().unwrap();
    let embedded =
        bosun_store::embedded::EmbeddedStore::open(dir.path().join("bench-store")).unwrap();
    bench_backend(c, &rt, "embedded", Arc::new(embedded));
    let cluster =
        bosun_store::etcd::LocalCluster::start(1).expect("etcd (apt-get install etcd-server)");
    let etcd = rt.block_on(cluster.connect()).expect("etcd ready");
    bench_backend(c, &rt, "etcd", Arc::new(etcd));
}

criterion_group!(benches, bench);
criterion_main!(benches);
