//! The default admission plugins that read other objects.

use super::{call, post, server};
use http::{Method, StatusCode};
use serde_json::{json, Value};

fn pod(name: &str, extra: Value) -> Value {
    let mut p = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"containers": [{"name": "app", "image": "nginx"}]}});
    if let (Some(spec), Some(extra)) = (p["spec"].as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            spec.insert(k.clone(), v.clone());
        }
    }
    p
}

const PODS: &str = "/api/v1/namespaces/default/pods";

#[tokio::test]
async fn priority_classes_resolve_and_missing_ones_are_refused() {
    let s = server().await;
    let (code, _) = post(
        &s,
        "/apis/scheduling.k8s.io/v1/priorityclasses",
        json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
            "metadata": {"name": "high"}, "value": 1000, "preemptionPolicy": "Never"}),
    )
    .await;
    assert_eq!(code, StatusCode::CREATED);
    let (code, p) = post(&s, PODS, pod("a", json!({"priorityClassName": "high"}))).await;
    assert_eq!(code, StatusCode::CREATED, "{p}");
    assert_eq!(p["spec"]["priority"], 1000);
    assert_eq!(p["spec"]["preemptionPolicy"], "Never");
    let (_, p) = post(
        &s,
        PODS,
        pod("b", json!({"priorityClassName": "system-node-critical"})),
    )
    .await;
    assert_eq!(p["spec"]["priority"], 2_000_001_000);
    let (_, p) = post(&s, PODS, pod("c", json!({}))).await;
    assert_eq!(p["spec"]["priority"], 0);
    let (code, st) = post(&s, PODS, pod("d", json!({"priorityClassName": "nope"}))).await;
    assert_eq!(code, StatusCode::FORBIDDEN);
    assert_eq!(
        st["message"],
        "pods \"d\" is forbidden: no PriorityClass with name nope was found"
    );
    let (code, st) = post(
        &s,
        PODS,
        pod("e", json!({"priorityClassName": "high", "priority": 5})),
    )
    .await;
    assert_eq!(code, StatusCode::FORBIDDEN);
    assert!(st["message"]
        .as_str()
        .unwrap()
        .contains("the integer value of priority (5) must not be provided in pod spec"));
}

#[tokio::test]
async fn limit_ranges_default_and_bound_containers() {
    let s = server().await;
    let (code, lr) = post(
        &s,
        "/api/v1/namespaces/default/limitranges",
        json!({"apiVersion": "v1", "kind": "LimitRange", "metadata": {"name": "lr"},
            "spec": {"limits": [{"type": "Container", "max": {"cpu": "1"},
                "default": {"cpu": "500m", "memory": "256Mi"},
                "defaultRequest": {"cpu": "100m"}}]}}),
    )
    .await;
    assert_eq!(code, StatusCode::CREATED, "{lr}");
    let (code, p) = post(&s, PODS, pod("a", json!({}))).await;
    assert_eq!(code, StatusCode::CREATED, "{p}");
    let res = &p["spec"]["containers"][0]["resources"];
    assert_eq!(res["limits"], json!({"cpu": "500m", "memory": "256Mi"}));
    assert_eq!(res["requests"], json!({"cpu": "100m", "memory": "256Mi"}));
    assert_eq!(
        p["metadata"]["annotations"]["kubernetes.io/limit-ranger"],
        "LimitRanger plugin set: cpu, memory request for container app; cpu, memory limit for container app"
    );
    let big = pod(
        "b",
        json!({"containers": [{"name": "app", "image": "nginx",
            "resources": {"limits": {"cpu": "2"}}}]}),
    );
    let (code, st) = post(&s, PODS, big).await;
    assert_eq!(code, StatusCode::FORBIDDEN);
    assert_eq!(
        st["message"],
        "pods \"b\" is forbidden: [maximum cpu usage per Container is 1, but limit is 2, maximum cpu usage per Container is 1, but request is 2]"
    );
}

#[tokio::test]
async fn resource_quotas_refuse_what_exceeds_them_and_record_usage() {
    let s = server().await;
    let (code, _) = post(
        &s,
        "/api/v1/namespaces/default/resourcequotas",
        json!({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "q"},
            "spec": {"hard": {"pods": "1", "count/configmaps": "5"}}}),
    )
    .await;
    assert_eq!(code, StatusCode::CREATED);
    let (code, p) = post(&s, PODS, pod("a", json!({}))).await;
    assert_eq!(code, StatusCode::CREATED, "{p}");
    let (code, st) = post(&s, PODS, pod("b", json!({}))).await;
    assert_eq!(code, StatusCode::FORBIDDEN);
    assert_eq!(
        st["message"],
        "pods \"b\" is forbidden: exceeded quota: q, requested: pods=1, used: pods=1, limited: pods=1"
    );
    let (_, q) = call(
        &s,
        Method::GET,
        "/api/v1/namespaces/default/resourcequotas/q",
        None,
        "",
    )
    .await;
    assert_eq!(q["status"]["used"]["pods"], "1");
    assert_eq!(q["status"]["hard"]["pods"], "1");

    // Compute quotas need every container to state the resource.
    post(
        &s,
        "/api/v1/namespaces/default/resourcequotas",
        json!({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "cpu"},
            "spec": {"hard": {"requests.cpu": "1"}}}),
    )
    .await;
    call(
        &s,
        Method::DELETE,
        "/api/v1/namespaces/default/pods/a?gracePeriodSeconds=0",
        None,
        "",
    )
    .await;
    let (code, st) = post(&s, PODS, pod("c", json!({}))).await;
    assert_eq!(code, StatusCode::FORBIDDEN, "{st}");
    assert_eq!(
        st["message"],
        "pods \"c\" is forbidden: failed quota: cpu: must specify requests.cpu"
    );
}

#[tokio::test]
async fn claims_get_the_default_class_and_protection_and_nodes_a_taint() {
    let s = server().await;
    // Which of several defaults wins is unit tested (admission::tests); here, one default.
    for (name, default) in [("standard", true), ("other", false)] {
        let mut sc = json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
            "metadata": {"name": name}, "provisioner": "x"});
        if default {
            sc["metadata"]["annotations"] =
                json!({"storageclass.kubernetes.io/is-default-class": "true"});
        }
        let (code, sc) = post(&s, "/apis/storage.k8s.io/v1/storageclasses", sc).await;
        assert_eq!(code, StatusCode::CREATED, "{sc}");
    }
    let (code, pvc) = post(
        &s,
        "/api/v1/namespaces/default/persistentvolumeclaims",
        json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "c"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}),
    )
    .await;
    assert_eq!(code, StatusCode::CREATED, "{pvc}");
    assert_eq!(pvc["spec"]["storageClassName"], "standard");
    assert_eq!(
        pvc["metadata"]["finalizers"],
        json!(["kubernetes.io/pvc-protection"])
    );

    let (code, node) = post(
        &s,
        "/api/v1/nodes",
        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}}),
    )
    .await;
    assert_eq!(code, StatusCode::CREATED, "{node}");
    assert_eq!(
        node["spec"]["taints"],
        json!([{"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"}])
    );
}
