//! The workload controllers against an in-process API server on the memory store: how long the
//! ReplicaSet controller takes to bring up 10,000 pods, and a 1,000-replica Deployment to roll
//! to a new template (pods made Running and Ready by a simulated node agent).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[path = "../tests/it/agent.rs"]
#[allow(dead_code)]
mod agent;

use bosun_api_types::apps::v1::{Deployment, ReplicaSet};
use bosun_apiserver::ApiServer;
use bosun_client::informer::InformerFactory;
use bosun_client::{Api, Client, Config, Patch, PatchParams, PostParams};
use bosun_controllers::builtin::deployment::Deployments;
use bosun_controllers::builtin::replicaset::ReplicaSets;
use bosun_store::memory::MemoryStore;
use criterion::{criterion_group, criterion_main, Criterion};
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};

async fn serve() -> Client {
    let s = ApiServer::new(Arc::new(MemoryStore::new()));
    s.bootstrap().await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(s.serve(listener, std::future::pending()));
    // No client-side rate limit: this measures the controllers, not a limiter.
    Client::try_from_config(Config::new(url.parse().unwrap())).unwrap()
}

async fn wait_for(what: &str, mut cond: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(600);
    while !cond().await {
        assert!(Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut g = c.benchmark_group("controllers");
    g.sample_size(10).measurement_time(Duration::from_secs(60));

    g.bench_function("replicaset_10k_pods", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let client = serve().await;
                    let factory = Arc::new(InformerFactory::new(client.clone()));
                    let (controller, logic) =
                        ReplicaSets::<ReplicaSet>::new(client.clone(), &factory);
                    let queue = controller.queue();
                    tokio::spawn(controller.concurrency(5).run(logic));
                    let sets: Api<ReplicaSet> = Api::namespaced(client.clone(), "default");
                    let rs: ReplicaSet = serde_json::from_value(json!({
                        "metadata": {"name": "big"},
                        "spec": {"replicas": 10_000, "selector": {"matchLabels": {"app": "big"}},
                            "template": {"metadata": {"labels": {"app": "big"}},
                                "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}
                    }))
                    .unwrap();
                    let start = Instant::now();
                    sets.create(&PostParams::default(), &rs).await.unwrap();
                    wait_for("10k pods", async || {
                        sets.get("big")
                            .await
                            .unwrap()
                            .status
                            .is_some_and(|s| s.replicas == 10_000)
                    })
                    .await;
                    total += start.elapsed();
                    queue.shut_down();
                }
                total
            })
        })
    });

    g.bench_function("deployment_1000_replica_rollout", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let client = serve().await;
                    agent::Agent::start(client.clone(), &["n1", "n2", "n3", "n4"]).await;
                    let factory = Arc::new(InformerFactory::new(client.clone()));
                    let (rs, logic) = ReplicaSets::<ReplicaSet>::new(client.clone(), &factory);
                    let q1 = rs.queue();
                    tokio::spawn(rs.concurrency(5).run(logic));
                    let (d, logic) = Deployments::new(client.clone(), &factory);
                    let q3 = d.queue();
                    tokio::spawn(d.concurrency(5).run(logic));
                    let api: Api<Deployment> = Api::namespaced(client.clone(), "default");
                    let d: Deployment = serde_json::from_value(json!({
                        "metadata": {"name": "roll"},
                        "spec": {"replicas": 1000, "selector": {"matchLabels": {"app": "roll"}},
                            "template": {"metadata": {"labels": {"app": "roll"}},
                                "spec": {"containers": [{"name": "c", "image": "v1"}]}}}
                    }))
                    .unwrap();
                    api.create(&PostParams::default(), &d).await.unwrap();
                    let done = async |api: &Api<Deployment>| {
                        let d = api.get("roll").await.unwrap();
                        let s = d.status.unwrap_or_default();
                        s.observed_generation == d.metadata.generation
                            && s.updated_replicas == Some(1000)
                            && s.available_replicas == Some(1000)
                            && s.replicas == Some(1000)
                    };
                    wait_for("v1", async || done(&api).await).await;
                    // The measured part: v1 → v2 with the default 25%/25%.
                    let start = Instant::now();
                    api.patch(
                        "roll",
                        &PatchParams::default(),
                        &Patch::Strategic(json!({"spec": {"template": {"spec": {
                            "containers": [{"name": "c", "image": "v2"}]}}}})),
                    )
                    .await
                    .unwrap();
                    wait_for("v2", async || done(&api).await).await;
                    total += start.elapsed();
                    q1.shut_down();
                    q3.shut_down();
                }
                total
            })
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
