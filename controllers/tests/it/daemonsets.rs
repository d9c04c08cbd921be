//! DaemonSets follow nodes, selectors and templates.

use super::agent::Agent;
use super::{eventually, serve};
use bosun_api_types::apps::v1::DaemonSet;
use bosun_api_types::core::v1::{Node, Pod};
use bosun_client::informer::InformerFactory;
use bosun_client::{Api, ListParams, Patch, PatchParams, PostParams};
use bosun_controllers::builtin::daemonset::DaemonSets;
use serde_json::json;
use std::sync::Arc;

async fn placement(pods: &Api<Pod>) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = pods
        .list(&ListParams::default().labels("app=agent"))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .map(|p| {
            let spec = p.spec.unwrap();
            (
                spec.node_name.unwrap_or_default(),
                spec.containers[0].image.clone().unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemonset_runs_one_pod_per_eligible_node() {
    let (client, url) = serve().await;
    let agent = Agent::start(client.clone(), &["node-a", "node-b"]).await;
    let nodes: Api<Node> = Api::all(client.clone());
    for n in ["node-a", "node-b"] {
        nodes
            .patch(
                n,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": {"role": "worker"}}})),
            )
            .await
            .unwrap();
    }
    let factory = Arc::new(InformerFactory::new(client.clone()));
    let (c, logic) = DaemonSets::new(client.clone(), &factory);
    tokio::spawn(c.run(logic));
    // New nodes carry not-ready:NoSchedule until the lifecycle controller sees them Ready.
    let config = bosun_controllers::builtin::nodelifecycle::Config {
        monitor_period: std::time::Duration::from_millis(100),
        ..Default::default()
    };
    tokio::spawn(
        bosun_controllers::builtin::nodelifecycle::NodeLifecycle::new(
            client.clone(),
            &factory,
            config,
        )
        .run(),
    );

    let sets: Api<DaemonSet> = Api::namespaced(client.clone(), "default");
    let ds: DaemonSet = serde_json::from_value(json!({
        "metadata": {"name": "agent"},
        "spec": {"selector": {"matchLabels": {"app": "agent"}},
            "template": {"metadata": {"labels": {"app": "agent"}}, "spec": {
                "nodeSelector": {"role": "worker"},
                "containers": [{"name": "c", "image": "agent:v1"}]}}}
    }))
    .unwrap();
    sets.create(&PostParams::default(), &ds).await.unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    eventually("a pod on each worker", || {
        let pods = pods.clone();
        async move {
            placement(&pods).await
                == [
                    ("node-a".to_string(), "agent:v1".to_string()),
                    ("node-b".into(), "agent:v1".into()),
                ]
        }
    })
    .await;
    let pod = pods
        .list(&ListParams::default().labels("app=agent"))
        .await
        .unwrap()
        .items
        .remove(0);
    let tolerations = pod.spec.unwrap().tolerations;
    assert!(tolerations.iter().any(
        |t| t.key.as_deref() == Some("node.kubernetes.io/unreachable")
            && t.effect.as_deref() == Some("NoExecute")
            && t.toleration_seconds.is_none()
    ));

    // A worker joins: it gets one; a node without the label does not.
    agent.add_node("node-c", json!({"role": "worker"})).await;
    agent.add_node("node-d", json!({"role": "db"})).await;
    eventually("node-c's pod", || {
        let pods = pods.clone();
        async move {
            placement(&pods)
                .await
                .iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>()
                == ["node-a", "node-b", "node-c"]
        }
    })
    .await;
    eventually("the status", || {
        let sets = sets.clone();
        async move {
            let s = sets.get("agent").await.unwrap().status.unwrap_or_default();
            s.desired_number_scheduled == 3
                && s.current_number_scheduled == 3
                && s.number_ready == 3
                && s.number_available == Some(3)
                && s.number_misscheduled == 0
        }
    })
    .await;

    // A node that stops matching loses its pod.
    nodes
        .patch(
            "node-c",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"role": null}}})),
        )
        .await
        .unwrap();
    eventually("node-c's pod to go", || {
        let pods = pods.clone();
        async move { placement(&pods).await.len() == 2 }
    })
    .await;

    // A new template rolls over every node.
    sets.patch(
        "agent",
        &PatchParams::default(),
        &Patch::Strategic(json!({"spec": {"template": {"spec": {
        "containers": [{"name": "c", "image": "agent:v2"}]}}}})),
    )
    .await
    .unwrap();
    let out = std::process::Command::new("kubectl")
        .args([
            &format!("--server={url}"),
            "rollout",
            "status",
            "daemonset/agent",
            "--timeout=60s",
        ])
        .output()
        .expect("kubectl");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eventually("v2 everywhere", || {
        let pods = pods.clone();
        async move {
            placement(&pods).await
                == [
                    ("node-a".to_string(), "agent:v2".to_string()),
                    ("node-b".into(), "agent:v2".into()),
                ]
        }
    })
    .await;
}
