//! Cluster DNS for 1,000 Services × 10 endpoints (half of them headless): building the zone,
//! answering one question in process, and queries per second over UDP on loopback (batches
//! of 100 queries in flight from one client socket). The peer, when `dnsmasq` is installed
//! (Debian `dnsmasq-base`), answers the same names from a hosts file, measured the same way.
//! `cargo bench -p bosun-proxy --bench dns`
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use bosun_proxy::dns::{self, ClusterDns, DnsConfig, Zone};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use hickory_server::proto::op::{Message, MessageType, OpCode, Query};
use hickory_server::proto::rr::{Name, RecordType};
use serde_json::{json, Value};

const SERVICES: usize = 1000;
const ENDPOINTS: usize = 10;
const BATCH: usize = 100;

fn objects() -> (Vec<Value>, Vec<Value>) {
    let mut services = Vec::new();
    let mut slices = Vec::new();
    for i in 0..SERVICES {
        let ip = if i % 2 == 0 {
            format!("10.96.{}.{}", i / 250, i % 250 + 1)
        } else {
            "None".into()
        };
        services.push(
            json!({"metadata": {"namespace": "bench", "name": format!("svc-{i}")},
            "spec": {"clusterIP": ip, "ports": [{"name": "http", "port": 80}]}}),
        );
        let endpoints: Vec<Value> = (0..ENDPOINTS)
            .map(|j| {
                json!({"addresses": [format!("10.244.{}.{}", i % 250, j + 1)],
                            "conditions": {"ready": true}})
            })
            .collect();
        slices.push(json!({"metadata": {"namespace": "bench", "name": format!("svc-{i}-x"),
                                        "labels": {"kubernetes.io/service-name": format!("svc-{i}")}},
            "ports": [{"name": "http", "port": 8080}], "endpoints": endpoints}));
    }
    (services, slices)
}

fn query(id: u16, name: &str) -> Vec<u8> {
    let mut m = Message::new(id, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
    m.to_vec().unwrap()
}

fn bench(c: &mut Criterion) {
    let (services, slices) = objects();
    let mut g = c.benchmark_group("dns_1000x10");
    g.sample_size(20);
    g.bench_function("build_zone", |b| {
        b.iter(|| Zone::build("cluster.local", &services, &slices))
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let server = ClusterDns::new(DnsConfig::default());
    server.set_zone(Zone::build("cluster.local", &services, &slices));
    let name = Name::from_ascii("svc-500.bench.svc.cluster.local.").unwrap();
    g.bench_function("resolve_in_process", |b| {
        b.iter(|| rt.block_on(server.resolve(&name, RecordType::A)))
    });
    let (mut running, addr) = rt
        .block_on(dns::serve(server.clone(), "127.0.0.1:0".parse().unwrap()))
        .unwrap();
    // One client socket; a batch of queries in flight, then all the answers.
    let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    client.connect(addr).unwrap();
    client
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    let queries: Vec<Vec<u8>> = (0..BATCH)
        .map(|i| {
            let svc = (i * 37) % SERVICES;
            query(i as u16, &format!("svc-{svc}.bench.svc.cluster.local."))
        })
        .collect();
    g.throughput(Throughput::Elements(BATCH as u64));
    let batch = |client: &std::net::UdpSocket| {
        let mut buf = [0u8; 2048];
        for q in &queries {
            client.send(q).unwrap();
        }
        for _ in 0..BATCH {
            client.recv(&mut buf).unwrap();
        }
    };
    g.bench_function("udp_queries", |b| b.iter(|| batch(&client)));
    rt.block_on(running.shutdown_gracefully()).ok();
    if let Some(mut peer) = dnsmasq(&services, &slices) {
        let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        client.connect("127.0.0.1:15353").unwrap();
        client
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        g.bench_function("udp_queries_dnsmasq", |b| b.iter(|| batch(&client)));
        let _ = peer.kill();
        let _ = peer.wait();
    }
    g.finish();
}

/// dnsmasq on 127.0.0.1:15353 with the zone's A records in a hosts file, once it answers.
fn dnsmasq(services: &[Value], slices: &[Value]) -> Option<std::process::Child> {
    use std::fmt::Write as _;
    let mut hosts = String::new();
    for (i, svc) in services.iter().enumerate() {
        let name = format!("svc-{i}.bench.svc.cluster.local");
        match svc["spec"]["clusterIP"].as_str() {
            Some("None") => {
                for ep in slices[i]["endpoints"].as_array().unwrap() {
                    let _ = writeln!(hosts, "{} {name}", ep["addresses"][0].as_str().unwrap());
                }
            }
            Some(ip) => {
                let _ = writeln!(hosts, "{ip} {name}");
            }
            None => {}
        }
    }
    let dir = std::env::temp_dir().join(format!("bosun-dns-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).ok()?;
    let file = dir.join("hosts");
    std::fs::write(&file, hosts).ok()?;
    let child = std::process::Command::new("dnsmasq")
        .args([
            "--keep-in-foreground",
            "--no-resolv",
            "--no-hosts",
            "--port=15353",
            "--listen-address=127.0.0.1",
            "--bind-interfaces",
            "--cache-size=10000",
            "--user=root",
        ])
        .arg(format!("--addn-hosts={}", file.display()))
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    let probe = std::net::UdpSocket::bind("127.0.0.1:0").ok()?;
    probe
        .set_read_timeout(Some(std::time::Duration::from_millis(200)))
        .ok()?;
    for _ in 0..50 {
        let _ = probe.send_to(
            &query(1, "svc-0.bench.svc.cluster.local."),
            "127.0.0.1:15353",
        );
        let mut buf = [0u8; 512];
        if probe.recv(&mut buf).is_ok() {
            return Some(child);
        }
    }
    None
}

criterion_group!(benches, bench);
criterion_main!(benches);
