//! Node lifecycle: a silent node is tainted, its pods evicted and replaced elsewhere.

use super::agent::Agent;
use super::{client, eventually};
use bosun_api_types::apps::v1::{Deployment, ReplicaSet};
use bosun_api_types::core::v1::{Node, Pod};
use bosun_client::informer::InformerFactory;
use bosun_client::{Api, ListParams, PostParams};
use bosun_controllers::builtin::deployment::Deployments;
use bosun_controllers::builtin::nodelifecycle::{Config, NodeLifecycle};
use bosun_controllers::builtin::replicaset::ReplicaSets;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

fn on(pods: &[Pod], node: &str) -> usize {
    pods.iter()
        .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node))
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_node_is_tainted_and_its_pods_move() {
    let client = client().await;
    let agent = Agent::start(client.clone(), &["node-a", "node-b"]).await;
    let factory = Arc::new(InformerFactory::new(client.clone()));
    let (c, logic) = ReplicaSets::<ReplicaSet>::new(client.clone(), &factory);
    tokio::spawn(c.run(logic));
    let (c, logic) = Deployments::new(client.clone(), &factory);
    tokio::spawn(c.run(logic));
    let config = Config {
        monitor_period: Duration::from_millis(100),
        grace_period: Duration::from_secs(1),
        ..Config::default()
    };
    tokio::spawn(NodeLifecycle::new(client.clone(), &factory, config).run());

    let nodes: Api<Node> = Api::all(client.clone());
    eventually("pod CIDRs", || {
        let nodes = nodes.clone();
        async move {
            let mut cidrs: Vec<String> = nodes
                .list(&ListParams::default())
                .await
                .unwrap()
                .items
                .into_iter()
                .filter_map(|n| n.spec?.pod_cidr)
                .collect();
            cidrs.sort();
            cidrs == ["10.244.0.0/24", "10.244.1.0/24"]
        }
    })
    .await;

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let d: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"replicas": 4, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {
                "containers": [{"name": "c", "image": "web"}],
                "tolerations": [{"key": "node.kubernetes.io/unreachable", "operator": "Exists",
                    "effect": "NoExecute", "tolerationSeconds": 1}]}}}
    }))
    .unwrap();
    deployments
        .create(&PostParams::default(), &d)
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    eventually("4 available pods on both nodes", || {
        let (deployments, pods) = (deployments.clone(), pods.clone());
        async move {
            let s = deployments
                .get("web")
                .await
                .unwrap()
                .status
                .unwrap_or_default();
            let list = pods.list(&ListParams::default()).await.unwrap().items;
            s.available_replicas == Some(4) && on(&list, "node-a") > 0 && on(&list, "node-b") > 0
        }
    })
    .await;

    // node-a's kubelet goes silent.
    agent.alive.lock().unwrap().retain(|n| n != "node-a");
    eventually("node-a Unknown and tainted", || {
        let nodes = nodes.clone();
        async move {
            let n = nodes.get("node-a").await.unwrap();
            let ready = n
                .status
                .unwrap()
                .conditions
                .into_iter()
                .find(|c| c.r#type == "Ready")
                .unwrap();
            let taints = n.spec.unwrap_or_default().taints;
            ready.status == "Unknown"
                && ready.message.as_deref() == Some("Kubelet stopped posting node status.")
                && taints
                    .iter()
                    .any(|t| t.key == "node.kubernetes.io/unreachable" && t.effect == "NoExecute")
                && taints
                    .iter()
                    .any(|t| t.key == "node.kubernetes.io/unreachable" && t.effect == "NoSchedule")
        }
    })
    .await;
    eventually(
        "the pods evicted from node-a and replaced on node-b",
        || {
            let (deployments, pods) = (deployments.clone(), pods.clone());
            async move {
                let s = deployments
                    .get("web")
                    .await
                    .unwrap()
                    .status
                    .unwrap_or_default();
                let list = pods.list(&ListParams::default()).await.unwrap().items;
                s.available_replicas == Some(4)
                    && on(&list, "node-a") == 0
                    && on(&list, "node-b") == 4
            }
        },
    )
    .await;
    let evicted = pods
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .find(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some("node-a"))
        .expect("the evicted pods wait for their kubelet");
    assert!(evicted.status.unwrap().conditions.iter().any(|c| {
        c.r#type == "DisruptionTarget" && c.reason.as_deref() == Some("DeletionByTaintManager")
    }));

    // node-a comes back: the taints go.
    agent.alive.lock().unwrap().push("node-a".into());
    eventually("node-a untainted", || {
        let nodes = nodes.clone();
        async move {
            let n = nodes.get("node-a").await.unwrap();
            n.spec.unwrap_or_default().taints.is_empty()
        }
    })
    .await;
}
