//! NetworkPolicy for 2,000 pods (200 on this node) in 20 namespaces with 100 policies:
//! computing the node's policy state and rendering its nftables script.
//! `cargo bench -p bosun-proxy --bench netpol`
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use bosun_api_types::core::v1::{Namespace, Pod};
use bosun_api_types::networking::v1::NetworkPolicy;
use bosun_proxy::netpol::{compute, NftPolicies};
use criterion::{criterion_group, criterion_main, Criterion};
use serde_json::json;

fn bench(c: &mut Criterion) {
    let pods: Vec<Pod> = (0..2000)
        .map(|i| {
            serde_json::from_value(json!({
                "metadata": {"namespace": format!("ns-{}", i % 20), "name": format!("p-{i}"),
                             "labels": {"app": format!("app-{}", i % 50), "tier": if i % 2 == 0 { "web" } else { "db" }}},
                "spec": {"nodeName": format!("n{}", i % 10), "containers": [{"name": "c", "image": "i",
                         "ports": [{"name": "http", "containerPort": 8080}]}]},
                "status": {"phase": "Running", "podIP": format!("10.244.{}.{}", i / 250, i % 250 + 1)}
            }))
            .unwrap()
        })
        .collect();
    let namespaces: Vec<Namespace> = (0..20)
        .map(|i| {
            serde_json::from_value(json!({"metadata": {"name": format!("ns-{i}"),
                                                       "labels": {"team": format!("t{}", i % 4)}}}))
            .unwrap()
        })
        .collect();
    let policies: Vec<NetworkPolicy> = (0..100)
        .map(|i| {
            serde_json::from_value(json!({
                "metadata": {"namespace": format!("ns-{}", i % 20), "name": format!("np-{i}")},
                "spec": {
                    "podSelector": {"matchLabels": {"tier": if i % 2 == 0 { "web" } else { "db" }}},
                    "policyTypes": ["Ingress", "Egress"],
                    "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": format!("app-{}", i % 50)}}},
                                          {"namespaceSelector": {"matchLabels": {"team": format!("t{}", i % 4)}}}],
                                 "ports": [{"port": "http"}, {"port": 9000, "endPort": 9100}]}],
                    "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.96.0.0/12"]}}],
                                "ports": [{"protocol": "UDP", "port": 53}]}]
                }
            }))
            .unwrap()
        })
        .collect();
    let mut g = c.benchmark_group("netpol_2000_pods_100_policies");
    g.sample_size(20);
    g.bench_function("compute", |b| {
        b.iter(|| compute(&policies, &pods, &namespaces, "n0"))
    });
    let state = compute(&policies, &pods, &namespaces, "n0");
    let nft = NftPolicies::new();
    g.bench_function("render", |b| b.iter(|| nft.render(&state)));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
