//! Work queue throughput: keys added, handed to workers and marked done.
#![allow(clippy::unwrap_used, missing_docs)]

use bosun_controllers::WorkQueue;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::time::{Duration, Instant};

const KEYS: usize = 100_000;

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut g = c.benchmark_group("workqueue");
    g.sample_size(10).measurement_time(Duration::from_secs(10));
    g.throughput(Throughput::Elements(KEYS as u64));
    for workers in [1usize, 4] {
        g.bench_function(format!("100k_keys_{workers}_workers"), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let q: WorkQueue<String> = WorkQueue::new();
                        let keys: Vec<String> = (0..KEYS).map(|i| format!("ns/obj-{i}")).collect();
                        let start = Instant::now();
                        let mut handles = Vec::new();
                        for _ in 0..workers {
                            let q = q.clone();
                            handles.push(tokio::spawn(async move {
                                while let Some(k) = q.get().await {
                                    q.done(&k);
                                }
                            }));
                        }
                        for k in keys {
                            q.add(k);
                        }
                        q.shut_down_with_drain().await;
                        for h in handles {
                            h.await.unwrap();
                        }
                        total += start.elapsed();
                    }
                    total
                })
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
