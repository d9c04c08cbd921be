//! ResourceQuota usage follows deletions.

use super::{client, eventually};
use bosun_api_types::core::v1::{ConfigMap, Pod, ResourceQuota};
use bosun_client::informer::InformerFactory;
use bosun_client::{Api, DeleteParams, PostParams};
use bosun_controllers::builtin::resourcequota::ResourceQuotas;
use serde_json::json;
use std::sync::Arc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_usage_is_recomputed() {
    let client = client().await;
    let factory = Arc::new(InformerFactory::new(client.clone()));
    let (c, logic) = ResourceQuotas::new(client.clone(), &factory);
    tokio::spawn(c.run(logic));
    let quotas: Api<ResourceQuota> = Api::namespaced(client.clone(), "default");
    let q: ResourceQuota = serde_json::from_value(json!({"metadata": {"name": "q"},
        "spec": {"hard": {"pods": "5", "requests.cpu": "2", "configmaps": "10"}}}))
    .unwrap();
    quotas.create(&PostParams::default(), &q).await.unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    for i in 0..3 {
        let p: Pod = serde_json::from_value(json!({"metadata": {"name": format!("p{i}")}, "spec": {"containers": [
            {"name": "c", "image": "i", "resources": {"requests": {"cpu": "250m"}, "limits": {"cpu": "250m"}}}]}})).unwrap();
        pods.create(&PostParams::default(), &p).await.unwrap();
    }
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    for i in 0..2 {
        let c: ConfigMap =
            serde_json::from_value(json!({"metadata": {"name": format!("c{i}")}})).unwrap();
        cms.create(&PostParams::default(), &c).await.unwrap();
    }
    let used = |pods: &'static str, cpu: &'static str, cms: &'static str| {
        let quotas = quotas.clone();
        move || {
            let quotas = quotas.clone();
            async move {
                let s = quotas.get("q").await.unwrap().status.unwrap_or_default();
                let get = |k: &str| s.used.get(k).map(|q| q.to_canonical()).unwrap_or_default();
                s.hard.len() == 3
                    && get("pods") == pods
                    && get("requests.cpu") == cpu
                    && get("configmaps") == cms
            }
        }
    };
    eventually("usage of 3 pods and 2 configmaps", used("3", "750m", "2")).await;
    pods.delete("p0", &DeleteParams::default()).await.unwrap();
    cms.delete("c0", &DeleteParams::default()).await.unwrap();
    eventually("usage after the deletes", used("2", "500m", "1")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disruption_budgets_report_what_may_go() {
    use bosun_api_types::apps::v1::{Deployment, ReplicaSet};
    use bosun_api_types::policy::v1::PodDisruptionBudget;
    use bosun_controllers::builtin::deployment::Deployments;
    use bosun_controllers::builtin::disruption::Disruption;
    use bosun_controllers::builtin::replicaset::ReplicaSets;
    let client = client().await;
    super::agent::Agent::start(client.clone(), &["node-a"]).await;
    let factory = Arc::new(InformerFactory::new(client.clone()));
    let (c, logic) = ReplicaSets::<ReplicaSet>::new(client.clone(), &factory);
    tokio::spawn(c.run(logic));
    let (c, logic) = Deployments::new(client.clone(), &factory);
    tokio::spawn(c.run(logic));
    let (c, logic) = Disruption::new(client.clone(), &factory);
    tokio::spawn(c.run(logic));
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let d: Deployment = serde_json::from_value(json!({"metadata": {"name": "web"},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}})).unwrap();
    deployments
        .create(&PostParams::default(), &d)
        .await
        .unwrap();
    let budgets: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), "default");
    for (name, rule) in [
        ("min", json!({"minAvailable": 2})),
        ("max", json!({"maxUnavailable": "34%"})),
    ] {
        let mut spec = rule;
        spec["selector"] = json!({"matchLabels": {"app": "web"}});
        let pdb: PodDisruptionBudget =
            serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).unwrap();
        budgets.create(&PostParams::default(), &pdb).await.unwrap();
    }
    eventually("both budgets' status", || {
        let budgets = budgets.clone();
        async move {
            let min = budgets.get("min").await.unwrap().status.unwrap_or_default();
            let max = budgets.get("max").await.unwrap().status.unwrap_or_default();
            (
                min.current_healthy,
                min.desired_healthy,
                min.expected_pods,
                min.disruptions_allowed,
            ) == (3, 2, 3, 1)
                && (
                    max.current_healthy,
                    max.desired_healthy,
                    max.expected_pods,
                    max.disruptions_allowed,
                ) == (3, 1, 3, 2)
                && min.conditions.iter().any(|c| {
                    c.r#type == "DisruptionAllowed"
                        && c.status == "True"
                        && c.reason == "SufficientPods"
                })
        }
    })
    .await;
}
