//! Example (a): the custom store passes the store conformance suite, and a cluster assembled
//! around it runs a Deployment's pods on its simulated nodes.
#![allow(clippy::unwrap_used, missing_docs)]

use bosun_api_types::apps::v1::Deployment;
use bosun_api_types::core::v1::{Node, Pod};
use bosun_client::{Api, ListParams, PostParams};
use bosun_examples::{log_store::LogStore, orchestrator::Orchestrator};
use bosun_store::Store;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_store_passes_the_conformance_suite() {
    bosun_store::conformance::run_all(|| async { Arc::new(LogStore::new()) as Arc<dyn Store> })
        .await;
}

async fn within<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    mut check: impl FnMut() -> F,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_orchestrator_on_the_log_store_runs_a_deployment() {
    let store = Arc::new(LogStore::new());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let cluster = Orchestrator::start(store.clone(), listener, &["node-a", "node-b"])
        .await
        .unwrap();
    let client = cluster.client();
    let nodes: Api<Node> = Api::all(client.clone());
    within("two Ready nodes", || {
        let nodes = nodes.clone();
        async move {
            let list = nodes.list(&ListParams::default()).await.ok()?;
            let ready = list
                .items
                .iter()
                // Ready, and the node controller has lifted its not-ready taint.
                .filter(|n| {
                    n.status.as_ref().is_some_and(|s| {
                        s.conditions
                            .iter()
                            .any(|c| c.r#type == "Ready" && c.status == "True")
                    }) && n.spec.as_ref().is_none_or(|s| s.taints.is_empty())
                })
                .count();
            (ready == 2).then_some(())
        }
    })
    .await;

    let deployment: Deployment = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 4,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "nginx"}]}
            }
        }
    }))
    .unwrap();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    deployments
        .create(&PostParams::default(), &deployment)
        .await
        .unwrap();

    // The controllers make the pods, the scheduler spreads them, the kubelets run them.
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let running = within("four running pods", || {
        let pods = pods.clone();
        async move {
            let list = pods
                .list(&ListParams::default().labels("app=web"))
                .await
                .ok()?;
            let running: Vec<Pod> = list
                .items
                .into_iter()
                .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
                .collect();
            (running.len() == 4).then_some(running)
        }
    })
    .await;
    for p in &running {
        let node = p.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap();
        let ip = p.status.as_ref().and_then(|s| s.pod_ip.clone()).unwrap();
        let subnet = if node == "node-a" {
            "10.244.1."
        } else {
            "10.244.2."
        };
        assert!(ip.starts_with(subnet), "{node} gave {ip}");
    }
    let on_a = running
        .iter()
        .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some("node-a"))
        .count();
    assert_eq!(on_a, 2, "the scheduler spreads the replicas");
    within("the Deployment available", || {
        let deployments = deployments.clone();
        async move {
            let d = deployments.get("web").await.ok()?;
            (d.status?.available_replicas == Some(4)).then_some(())
        }
    })
    .await;
    // All of it lives in the custom store.
    let (stored, _) = store.count("/registry/core/pods/default/").await.unwrap();
    assert_eq!(stored, 4);
}
