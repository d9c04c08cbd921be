//! JSON and protobuf (de)serialization of a 100-pod PodList, the shape of a typical LIST.
//!
//! `cargo bench -p bosun-api-types --bench codec`; the peer (k8s-openapi on the same list) is
//! `cargo bench --manifest-path bench-peers/k8s-openapi/Cargo.toml`.
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stderr
)]

use bosun_api_types::core::v1::PodList;
use bosun_api_types::proto::{self, Message};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

include!("data/podlist.rs");

fn bench(c: &mut Criterion) {
    let json = serde_json::to_vec(&pod_list_json()).unwrap();
    let list: PodList = serde_json::from_slice(&json).unwrap();
    let pb = proto::encode_unknown("v1", "PodList", list.encode());
    let mut g = c.benchmark_group("podlist_100");
    g.throughput(Throughput::Elements(100));
    g.bench_function("json_serialize", |b| {
        b.iter(|| serde_json::to_vec(&list).unwrap())
    });
    g.bench_function("json_deserialize", |b| {
        b.iter(|| serde_json::from_slice::<PodList>(&json).unwrap())
    });
    g.bench_function("protobuf_encode", |b| {
        b.iter(|| proto::encode_unknown("v1", "PodList", list.encode()))
    });
    g.bench_function("protobuf_decode", |b| {
        b.iter(|| {
            let u = proto::decode_unknown(&pb).unwrap();
            PodList::decode(&u.raw).unwrap()
        })
    });
    g.bench_function("clone", |b| b.iter(|| list.clone()));
    g.finish();
    eprintln!(
        "podlist_100 sizes: json {} bytes, protobuf {} bytes",
        json.len(),
        pb.len()
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
