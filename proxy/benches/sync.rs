//! Rule sync for 1,000 Services × 10 endpoints: building the state from the API objects,
//! rendering the nftables script, and (as root, with `nft`) applying it to a kernel — a first
//! sync into an empty network namespace, and a sync after one endpoint changed.
//! `cargo bench -p bosun-proxy --bench sync`
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stderr
)]

use bosun_proxy::model::{self, ProxyState};
use bosun_proxy::nftables::{NftConfig, NftDataplane};
use bosun_proxy::Dataplane;
use criterion::{criterion_group, criterion_main, Criterion};
use serde_json::{json, Value};
use std::process::Command;

const SERVICES: usize = 1000;
const ENDPOINTS: usize = 10;

fn objects(generation: usize) -> (Vec<Value>, Vec<Value>) {
    let mut services = Vec::new();
    let mut slices = Vec::new();
    for i in 0..SERVICES {
        let ip = format!("10.96.{}.{}", i / 250, i % 250 + 1);
        services.push(
            json!({"metadata": {"namespace": "bench", "name": format!("svc-{i}")},
            "spec": {"clusterIPs": [ip], "ports": [{"name": "http", "port": 80}]}}),
        );
        let endpoints: Vec<Value> = (0..ENDPOINTS)
            .map(|j| {
                // `generation` moves one endpoint of the first Service.
                let last = if i == 0 && j == 0 {
                    generation % 250
                } else {
                    j
                };
                json!({"addresses": [format!("10.244.{}.{}", i % 250, last + 1)],
                       "conditions": {"ready": true}})
            })
            .collect();
        slices.push(json!({"metadata": {"namespace": "bench", "name": format!("svc-{i}-x"),
                                        "labels": {"kubernetes.io/service-name": format!("svc-{i}")}},
            "ports": [{"name": "http", "port": 8080}], "endpoints": endpoints}));
    }
    (services, slices)
}

fn root_with_nft() -> bool {
    Command::new("nft").arg("--version").output().is_ok()
        && Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout == b"0\n")
}

fn bench(c: &mut Criterion) {
    let (services, slices) = objects(0);
    let mut g = c.benchmark_group("proxy_1000x10");
    g.sample_size(10);
    g.bench_function("build", |b| b.iter(|| model::build(&services, &slices)));
    let state = model::build(&services, &slices);
    let dp = |prefix: Vec<String>| {
        let mut cfg = NftConfig::new("n1");
        cfg.cluster_cidr = Some("10.244.0.0/16".into());
        cfg.nft = prefix;
        NftDataplane::new(cfg)
    };
    g.bench_function("render", |b| {
        b.iter(|| dp(vec!["nft".into()]).render(&state))
    });
    if root_with_nft() {
        let ns = format!("bosun-bench-{}", std::process::id());
        assert!(Command::new("ip")
            .args(["netns", "add", &ns])
            .status()
            .unwrap()
            .success());
        let prefix: Vec<String> = ["ip", "netns", "exec", &ns, "nft"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let dataplane = dp(prefix);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let states: Vec<ProxyState> = (0..2)
            .map(|gen| {
                let (s, e) = objects(gen + 1);
                model::build(&s, &e)
            })
            .collect();
        g.bench_function("apply_first", |b| {
            b.iter(|| {
                rt.block_on(dataplane.cleanup()).unwrap();
                rt.block_on(dataplane.sync(&state)).unwrap();
            })
        });
        let mut n = 0usize;
        g.bench_function("apply_one_endpoint_changed", |b| {
            b.iter(|| {
                n += 1;
                rt.block_on(dataplane.sync(&states[n % 2])).unwrap();
            })
        });
        let _ = Command::new("ip").args(["netns", "del", &ns]).status();
    } else {
        eprintln!("not root or no nft: the apply benchmarks are skipped");
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
