//! The informer cache: 100,000 pods applied through a reflector store (a full list, then
//! updates), with the memory the cache holds per object.
#![allow(clippy::unwrap_used, clippy::print_stdout, missing_docs)]

use bosun_api_types::core::v1::{Container, Pod, PodSpec};
use bosun_client::reflector::Store;
use bosun_client::watcher::Event;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::time::{Duration, Instant};

const N: usize = 100_000;

fn pod(i: usize, rv: u64) -> Pod {
    let mut p = Pod::default();
    p.metadata.name = Some(format!("pod-{i}"));
    p.metadata.namespace = Some(format!("ns-{}", i % 100));
    p.metadata.resource_version = Some(rv.to_string());
    p.metadata.uid = Some(format!("00000000-0000-0000-0000-{i:012}"));
    p.metadata
        .labels
        .insert("app".into(), format!("app-{}", i % 1000));
    p.spec = Some(PodSpec {
        containers: vec![Container {
            name: "app".into(),
            image: Some("nginx:1.27".into()),
            ..Default::default()
        }],
        node_name: Some(format!("node-{}", i % 500)),
        ..Default::default()
    });
    p
}

/// Resident memory of this process, in bytes (Linux).
fn rss() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map(|pages| pages * 4096)
        .unwrap_or(0)
}

fn bench(c: &mut Criterion) {
    let pods: Vec<Pod> = (0..N).map(|i| pod(i, 1)).collect();
    let updates: Vec<Pod> = (0..N).map(|i| pod(i, 2)).collect();

    let before = rss();
    let store: Store<Pod> = Store::default();
    store.apply(Event::Init);
    for p in pods.iter().cloned() {
        store.apply(Event::InitApply(p));
    }
    store.apply(Event::InitDone);
    let after = rss();
    println!(
        "informer cache: {N} pods, ~{} bytes of resident memory per pod (RSS {} -> {} MiB)",
        after.saturating_sub(before) / N as u64,
        before >> 20,
        after >> 20
    );
    drop(store);

    let mut g = c.benchmark_group("informer");
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    g.throughput(Throughput::Elements(N as u64));
    g.bench_function("list_100k_pods_into_cache", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let batch = pods.clone();
                let start = Instant::now();
                let store: Store<Pod> = Store::default();
                store.apply(Event::Init);
                for p in batch {
                    store.apply(Event::InitApply(p));
                }
                store.apply(Event::InitDone);
                total += start.elapsed();
            }
            total
        })
    });
    g.bench_function("apply_100k_pod_updates", |b| {
        let store: Store<Pod> = Store::default();
        for p in pods.iter().cloned() {
            store.apply(Event::Apply(p));
        }
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let batch = updates.clone();
                let start = Instant::now();
                for p in batch {
                    store.apply(Event::Apply(p));
                }
                total += start.elapsed();
            }
            total
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
