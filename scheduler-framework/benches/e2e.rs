//! End to end through the real API server (in process, memory store, loopback HTTP): 5,000
//! Node objects, then pods created as fast as the API takes them while the scheduler (the
//! informer-driven runner) binds them; reports pods/s until every pod has `spec.nodeName`.
//!
//! `cargo bench -p bosun-scheduler-framework --bench e2e [-- --nodes N --pods P]`
#![allow(
    missing_docs,
    clippy::print_stdout,
    clippy::unwrap_used,
    clippy::expect_used
)]

use bosun_api_types::core::v1::{Node, Pod};
use bosun_apiserver::ApiServer;
use bosun_client::informer::InformerFactory;
use bosun_client::{Api, Client, Config, PostParams};
use bosun_scheduler_framework::runner;
use bosun_store::memory::MemoryStore;
use futures_util::stream::{self, StreamExt};
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn add_node(api: Api<Node>, i: usize) {
    let name = format!("node-{i}");
    let node: Node = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name,
            "topology.kubernetes.io/zone": format!("zone-{}", i % 3)}},
        "status": {"allocatable": {"cpu": "4", "memory": "32Gi", "pods": "110"},
                   "capacity": {"cpu": "4", "memory": "32Gi", "pods": "110"}}}))
    .unwrap();
    let mut n = api.create(&PostParams::default(), &node).await.unwrap();
    n.status = node.status;
    let mut n = api
        .replace_status(&name, &PostParams::default(), &n)
        .await
        .unwrap();
    // Lift the not-ready taint admission adds (there is no node lifecycle controller here).
    n.spec = None;
    api.replace(&name, &PostParams::default(), &n)
        .await
        .unwrap();
}

fn main() {
    let nodes = arg("--nodes", 5000);
    let pods = arg("--pods", 5000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let s = ApiServer::new(Arc::new(MemoryStore::new()));
        s.bootstrap().await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(s.serve(listener, std::future::pending()));
        let client = Client::try_from_config(Config::new(url.parse().unwrap())).unwrap();
        let t = Instant::now();
        let node_api: Api<Node> = Api::all(client.clone());
        stream::iter(0..nodes)
            .for_each_concurrent(32, |i| add_node(node_api.clone(), i))
            .await;
        println!("{nodes} nodes created in {:.1} s", t.elapsed().as_secs_f64());
        let c = client.clone();
        tokio::spawn(async move { runner::run(c, runner::Options::default()).await.unwrap() });
        // Count bound pods through an informer of our own.
        let factory = InformerFactory::new(client.clone());
        let informer = factory.informer::<Pod>(None);
        informer.wait_until_ready().await;
        let store = informer.store();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let pod_api: Api<Pod> = Api::namespaced(client.clone(), "default");
        let start = Instant::now();
        let create = stream::iter(0..pods).for_each_concurrent(32, |i| {
            let api = pod_api.clone();
            async move {
                let p: Pod = serde_json::from_value(json!({
                    "metadata": {"name": format!("p-{i}")},
                    "spec": {"containers": [{"name": "pause", "image": "registry.k8s.io/pause:3.10",
                        "resources": {"requests": {"cpu": "100m", "memory": "500Mi"}}}]}}))
                .unwrap();
                api.create(&PostParams::default(), &p).await.unwrap();
            }
        });
        create.await;
        let created = start.elapsed();
        loop {
            let bound = store
                .list()
                .iter()
                .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some())
                .count();
            if bound >= pods {
                break;
            }
            if start.elapsed() > Duration::from_secs(600) {
                println!("timed out with {bound}/{pods} bound");
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let all = start.elapsed();
        println!(
            "{pods} pods on {nodes} nodes: created in {:.2} s ({:.0} pods/s), all bound after {:.2} s: {:.0} pods/s end to end",
            created.as_secs_f64(),
            pods as f64 / created.as_secs_f64(),
            all.as_secs_f64(),
            pods as f64 / all.as_secs_f64()
        );
    });
}
