//! The same 100-pod PodList as `api-types/benches/codec.rs`, through k8s-openapi.
#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::List;

include!("../../../api-types/benches/data/podlist.rs");

fn bench(c: &mut Criterion) {
    let json = serde_json::to_vec(&pod_list_json()).expect("json");
    let list: List<Pod> = serde_json::from_slice(&json).expect("decode");
    let mut g = c.benchmark_group("podlist_100");
    g.throughput(Throughput::Elements(100));
    g.bench_function("json_serialize", |b| b.iter(|| serde_json::to_vec(&list).expect("encode")));
    g.bench_function("json_deserialize", |b| b.iter(|| serde_json::from_slice::<List<Pod>>(&json).expect("decode")));
    g.bench_function("clone", |b| b.iter(|| list.clone()));
    g.finish();
    let out = serde_json::to_vec(&list).expect("encode");
    eprintln!("podlist_100 sizes: json in {} bytes, json out {} bytes", json.len(), out.len());
}

criterion_group!(benches, bench);
criterion_main!(benches);
