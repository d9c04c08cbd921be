//! The running scheduler against an in-process API server, and the default plugins through
//! the in-memory simulator.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod plugins;

use bosun_api_types::core::v1::{Event, Node, Pod};
use bosun_apiserver::ApiServer;
use bosun_client::{Api, Client, Config, DeleteParams, ListParams, PostParams};
use bosun_scheduler_framework::runner;
use bosun_store::memory::MemoryStore;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

/// An API server with a scheduler running against it, and a stand-in kubelet that finishes
/// graceful deletions (so preemption victims go away).
async fn cluster() -> Client {
    let s = ApiServer::new(Arc::new(MemoryStore::new()));
    s.bootstrap().await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(s.serve(listener, std::future::pending()));
    let client = Client::try_from_config(Config::new(url.parse().unwrap())).unwrap();
    let c = client.clone();
    tokio::spawn(async move {
        runner::run(c, runner::Options::default()).await.unwrap();
    });
    let c = client.clone();
    tokio::spawn(async move {
        let pods: Api<Pod> = Api::all(c.clone());
        loop {
            if let Ok(list) = pods.list(&ListParams::default()).await {
                for p in list
                    .items
                    .iter()
                    .filter(|p| p.metadata.deletion_timestamp.is_some())
                {
                    let api: Api<Pod> =
                        Api::namespaced(c.clone(), p.metadata.namespace.as_deref().unwrap());
                    let now = DeleteParams {
                        grace_period_seconds: Some(0),
                        ..Default::default()
                    };
                    let _ = api.delete(p.metadata.name.as_deref().unwrap(), &now).await;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    client
}

async fn add_node(client: &Client, name: &str, cpu: &str, labels: Value, taints: Value) {
    let api: Api<Node> = Api::all(client.clone());
    let mut labels = labels;
    labels["kubernetes.io/hostname"] = json!(name);
    let node: Node = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels},
        "spec": {"taints": taints},
        "status": {"allocatable": {"cpu": cpu, "memory": "16Gi", "pods": "110"},
                   "capacity": {"cpu": cpu, "memory": "16Gi", "pods": "110"},
                   "conditions": [{"type": "Ready", "status": "True"}]}}))
    .unwrap();
    let mut created = api.create(&PostParams::default(), &node).await.unwrap();
    created.status = node.status;
    let mut created = api
        .replace_status(name, &PostParams::default(), &created)
        .await
        .unwrap();
    // Admission adds the not-ready taint the node lifecycle controller would lift; this test
    // has no controllers, so set the taints the test wants.
    created.spec = node.spec;
    api.replace(name, &PostParams::default(), &created)
        .await
        .unwrap();
}

async fn create_pod(client: &Client, name: &str, extra: Value) {
    let mut v = json!({"metadata": {"name": name, "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "c", "image": "busybox",
            "resources": {"requests": {"cpu": "100m"}}}]}});
    merge(&mut v, extra);
    let pod: Pod = serde_json::from_value(v).unwrap();
    Api::<Pod>::namespaced(client.clone(), "default")
        .create(&PostParams::default(), &pod)
        .await
        .unwrap();
}

fn merge(a: &mut Value, b: Value) {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(Value::Null), v);
            }
        }
        (a, b) => *a = b,
    }
}

/// Waits (up to 20 s) for `f` to return Some.
async fn eventually<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    mut f: impl FnMut() -> F,
) -> T {
    for _ in 0..200 {
        if let Some(v) = f().await {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

async fn node_of(client: &Client, pod: &str) -> String {
    let api: Api<Pod> = Api::namespaced(client.clone(), "default");
    eventually(&format!("{pod} to be scheduled"), || {
        let api = api.clone();
        async move { api.get(pod).await.ok()?.spec?.node_name }
    })
    .await
}

/// Waits for the pod's PodScheduled=False condition with a message containing `want`.
async fn failed_scheduling(client: &Client, pod: &str, want: &str) -> String {
    let api: Api<Pod> = Api::namespaced(client.clone(), "default");
    eventually(&format!("{pod}'s PodScheduled=False condition"), || {
        let api = api.clone();
        async move {
            let p = api.get(pod).await.ok()?;
            let c = p
                .status?
                .conditions
                .into_iter()
                .find(|c| c.r#type == "PodScheduled")?;
            let m = c.message.unwrap_or_default();
            (c.status == "False" && m.contains(want)).then_some(m)
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn taints_and_tolerations() {
    let c = cluster().await;
    add_node(&c, "plain", "4", json!({}), json!([])).await;
    add_node(
        &c,
        "gpu",
        "4",
        json!({"gpu": "yes"}),
        json!([{"key": "gpu", "value": "yes", "effect": "NoSchedule"}]),
    )
    .await;
    for i in 0..4 {
        create_pod(&c, &format!("p{i}"), json!({})).await;
    }
    for i in 0..4 {
        assert_eq!(node_of(&c, &format!("p{i}")).await, "plain");
    }
    create_pod(&c, "tolerant", json!({"spec": {"nodeSelector": {"gpu": "yes"},
        "tolerations": [{"key": "gpu", "operator": "Equal", "value": "yes", "effect": "NoSchedule"}]}})).await;
    assert_eq!(node_of(&c, "tolerant").await, "gpu");
    // Only the tainted node matches, and the pod does not tolerate it.
    create_pod(
        &c,
        "intolerant",
        json!({"spec": {"nodeSelector": {"gpu": "yes"}}}),
    )
    .await;
    let msg = failed_scheduling(&c, "intolerant", "untolerated").await;
    assert!(msg.starts_with("0/2 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, 1 node(s) had untolerated taint {gpu: yes}."), "{msg}");
    // The event carries the same message.
    let events: Api<Event> = Api::namespaced(c.clone(), "default");
    eventually("a FailedScheduling event", || {
        let events = events.clone();
        async move {
            let l = events.list(&ListParams::default()).await.ok()?;
            l.items.into_iter().find(|e| {
                e.reason.as_deref() == Some("FailedScheduling")
                    && e.involved_object.name.as_deref() == Some("intolerant")
            })
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_and_preferred_node_affinity() {
    let c = cluster().await;
    add_node(
        &c,
        "a",
        "4",
        json!({"disk": "hdd", "zone": "z1"}),
        json!([]),
    )
    .await;
    add_node(
        &c,
        "b",
        "4",
        json!({"disk": "ssd", "zone": "z1"}),
        json!([]),
    )
    .await;
    add_node(
        &c,
        "c",
        "4",
        json!({"disk": "ssd", "zone": "z2"}),
        json!([]),
    )
    .await;
    let affinity = json!({"spec": {"affinity": {"nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "disk", "operator": "In", "values": ["ssd"]}]}]},
        "preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 100, "preference": {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["z2"]}]}}]}}}});
    for i in 0..3 {
        create_pod(&c, &format!("p{i}"), affinity.clone()).await;
        assert_eq!(node_of(&c, &format!("p{i}")).await, "c");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_anti_affinity_spreads_across_hostnames() {
    let c = cluster().await;
    for n in ["n1", "n2", "n3"] {
        add_node(&c, n, "4", json!({}), json!([])).await;
    }
    let anti = json!({"spec": {"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "kubernetes.io/hostname"}]}}}});
    let mut nodes = Vec::new();
    for i in 0..3 {
        create_pod(&c, &format!("w{i}"), anti.clone()).await;
        nodes.push(node_of(&c, &format!("w{i}")).await);
    }
    nodes.sort();
    assert_eq!(nodes, ["n1", "n2", "n3"]);
    create_pod(&c, "w3", anti).await;
    let msg = failed_scheduling(&c, "w3", "anti-affinity").await;
    assert_eq!(
        msg,
        "0/3 nodes are available: 3 node(s) didn't match pod anti-affinity rules. preemption: 0/3 nodes are available: 3 No preemption victims found for incoming pod."
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topology_spread_across_zones() {
    let c = cluster().await;
    for (n, z) in [("a1", "a"), ("a2", "a"), ("a3", "a"), ("b1", "b")] {
        add_node(
            &c,
            n,
            "4",
            json!({"topology.kubernetes.io/zone": z}),
            json!([]),
        )
        .await;
    }
    let spread = json!({"spec": {"topologySpreadConstraints": [{"maxSkew": 1,
        "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "DoNotSchedule",
        "labelSelector": {"matchLabels": {"app": "web"}}}]}});
    let mut per_zone = std::collections::BTreeMap::new();
    for i in 0..6 {
        create_pod(&c, &format!("s{i}"), spread.clone()).await;
        let n = node_of(&c, &format!("s{i}")).await;
        *per_zone.entry(n[..1].to_string()).or_insert(0) += 1;
    }
    // Three nodes in zone a and one in b, yet the pods split evenly.
    assert_eq!(per_zone.get("a"), Some(&3));
    assert_eq!(per_zone.get("b"), Some(&3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preemption_evicts_a_lower_priority_pod() {
    let c = cluster().await;
    let pcs: Api<bosun_api_types::scheduling::v1::PriorityClass> = Api::all(c.clone());
    for (name, value) in [("low", 10), ("high", 1000)] {
        pcs.create(
            &PostParams::default(),
            &serde_json::from_value(json!({
            "metadata": {"name": name}, "value": value}))
            .unwrap(),
        )
        .await
        .unwrap();
    }
    add_node(&c, "only", "1", json!({}), json!([])).await;
    let big = |class: &str| {
        json!({"spec": {"priorityClassName": class, "containers": [{"name": "c", "image": "busybox",
        "resources": {"requests": {"cpu": "800m"}}}]}})
    };
    create_pod(&c, "victim", big("low")).await;
    assert_eq!(node_of(&c, "victim").await, "only");
    create_pod(&c, "preemptor", big("high")).await;
    assert_eq!(node_of(&c, "preemptor").await, "only");
    let api: Api<Pod> = Api::namespaced(c.clone(), "default");
    eventually("the victim to be gone", || {
        let api = api.clone();
        async move { api.get("victim").await.err().filter(|e| e.is_not_found()) }
    })
    .await;
    let p = api.get("preemptor").await.unwrap();
    assert_eq!(
        p.status.unwrap().nominated_node_name.as_deref(),
        Some("only")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unschedulable_pod_is_scheduled_when_a_fitting_node_joins() {
    let c = cluster().await;
    add_node(&c, "small", "2", json!({}), json!([])).await;
    create_pod(
        &c,
        "big",
        json!({"spec": {"containers": [{"name": "c", "image": "busybox",
        "resources": {"requests": {"cpu": "8"}}}]}}),
    )
    .await;
    let msg = failed_scheduling(&c, "big", "Insufficient cpu").await;
    assert!(
        msg.starts_with("0/1 nodes are available: 1 Insufficient cpu."),
        "{msg}"
    );
    let started = std::time::Instant::now();
    add_node(&c, "large", "16", json!({}), json!([])).await;
    assert_eq!(node_of(&c, "big").await, "large");
    // Moved by the NodeAdd event, not by the five-minute flush (nor a 10 s backoff).
    assert!(started.elapsed() < Duration::from_secs(15));
}
