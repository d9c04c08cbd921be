//! HorizontalPodAutoscalers on a resource metrics API (here a CRD standing in for
//! metrics-server's `metrics.k8s.io/v1beta1` PodMetrics).

use super::agent::Agent;
use super::{client, eventually};
use bosun_api_types::apiextensions::v1::CustomResourceDefinition;
use bosun_api_types::apps::v1::{Deployment, ReplicaSet};
use bosun_api_types::autoscaling::v2::HorizontalPodAutoscaler;
use bosun_api_types::core::v1::Pod;
use bosun_api_types::DynamicObject;
use bosun_client::discovery::ApiResource;
use bosun_client::informer::InformerFactory;
use bosun_client::reflector::Key;
use bosun_client::{Api, ListParams, Patch, PatchParams, PostParams};
use bosun_controllers::builtin::deployment::Deployments;
use bosun_controllers::builtin::hpa::Autoscalers;
use bosun_controllers::builtin::replicaset::ReplicaSets;
use serde_json::json;
use std::sync::Arc;

async fn condition(api: &Api<HorizontalPodAutoscaler>, t: &str) -> Option<(String, String)> {
    api.get("web")
        .await
        .unwrap()
        .status?
        .conditions
        .into_iter()
        .find(|c| c.r#type == t)
        .map(|c| (c.status, c.reason.unwrap_or_default()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_autoscaler_follows_cpu_utilization() {
    let client = client().await;
    Agent::start(client.clone(), &["node-a"]).await;
    let factory = Arc::new(InformerFactory::new(client.clone()));
    let (c, logic) = ReplicaSets::<ReplicaSet>::new(client.clone(), &factory);
    tokio::spawn(c.run(logic));
    let (c, logic) = Deployments::new(client.clone(), &factory);
    tokio::spawn(c.run(logic));
    let (c, logic) = Autoscalers::new(client.clone(), &factory);
    let queue = c.queue();
    tokio::spawn(c.run(logic));
    let kick = || queue.add(Key::namespaced("default", "web"));

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let d: Deployment = serde_json::from_value(json!({"metadata": {"name": "web"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [
                {"name": "c", "image": "i", "resources": {"requests": {"cpu": "100m"}}}]}}}}))
    .unwrap();
    deployments
        .create(&PostParams::default(), &d)
        .await
        .unwrap();
    let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(client.clone(), "default");
    let hpa: HorizontalPodAutoscaler = serde_json::from_value(json!({"metadata": {"name": "web"},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
            "minReplicas": 1, "maxReplicas": 5,
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": 0}},
            "metrics": [{"type": "Resource", "resource": {"name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": 50}}}]}}))
    .unwrap();
    hpas.create(&PostParams::default(), &hpa).await.unwrap();

    // No metrics API yet.
    eventually("FailedGetResourceMetric", || {
        let hpas = hpas.clone();
        async move {
            condition(&hpas, "ScalingActive").await
                == Some(("False".into(), "FailedGetResourceMetric".into()))
        }
    })
    .await;

    // A metrics API: each pod at 200 % of its request → up to the maximum.
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "metadata": {"name": "pods.metrics.k8s.io"},
        "spec": {"group": "metrics.k8s.io", "scope": "Namespaced",
            "names": {"plural": "pods", "singular": "podmetrics", "kind": "PodMetrics", "listKind": "PodMetricsList"},
            "versions": [{"name": "v1beta1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}
    })).unwrap();
    crds.create(&PostParams::default(), &crd).await.unwrap();
    let res = ApiResource {
        group: "metrics.k8s.io".into(),
        version: "v1beta1".into(),
        api_version: "metrics.k8s.io/v1beta1".into(),
        kind: "PodMetrics".into(),
        plural: "pods".into(),
        namespaced: true,
        ..Default::default()
    };
    let metrics: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &res);
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let report = |cpu: &'static str| {
        let (metrics, pods) = (metrics.clone(), pods.clone());
        async move {
            for p in pods
                .list(&ListParams::default().labels("app=web"))
                .await
                .unwrap()
                .items
            {
                let name = p.metadata.name.clone().unwrap();
                let m: DynamicObject = serde_json::from_value(json!({"apiVersion": "metrics.k8s.io/v1beta1", "kind": "PodMetrics",
                    "metadata": {"name": name, "labels": p.metadata.labels},
                    "window": "30s", "containers": [{"name": "c", "usage": {"cpu": cpu, "memory": "10Mi"}}]})).unwrap();
                if metrics.get_opt(&name).await.unwrap().is_some() {
                    metrics
                        .patch(
                            &name,
                            &PatchParams::default(),
                            &Patch::Merge(
                                json!({"containers": [{"name": "c", "usage": {"cpu": cpu}}]}),
                            ),
                        )
                        .await
                        .unwrap();
                } else {
                    metrics.create(&PostParams::default(), &m).await.unwrap();
                }
            }
        }
    };
    eventually("the metrics API to be served", || {
        let metrics = metrics.clone();
        async move { metrics.list(&ListParams::default()).await.is_ok() }
    })
    .await;
    report("200m").await;
    kick();
    eventually("5 replicas, limited", || {
        let (hpas, deployments) = (hpas.clone(), deployments.clone());
        async move {
            let replicas = deployments.get("web").await.unwrap().spec.unwrap().replicas;
            replicas == Some(5)
                && condition(&hpas, "ScalingLimited").await
                    == Some(("True".into(), "TooManyReplicas".into()))
        }
    })
    .await;
    let s = hpas.get("web").await.unwrap().status.unwrap();
    assert_eq!(s.desired_replicas, 5);
    assert!(s.last_scale_time.is_some());
    let current = serde_json::to_value(&s.current_metrics).unwrap();
    assert_eq!(
        current[0]["resource"]["current"]["averageUtilization"], 200,
        "{current}"
    );

    // Idle: down to the minimum (no stabilization window here).
    report("5m").await;
    kick();
    eventually("1 replica", || {
        let deployments = deployments.clone();
        async move {
            kick();
            deployments.get("web").await.unwrap().spec.unwrap().replicas == Some(1)
        }
    })
    .await;
}
