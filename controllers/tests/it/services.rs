//! EndpointSlices and Endpoints for Services.

use super::agent::Agent;
use super::{client, eventually};
use bosun_api_types::apps::v1::ReplicaSet;
use bosun_api_types::core::v1::{Endpoints, Pod, Service};
use bosun_api_types::discovery::v1::EndpointSlice;
use bosun_client::informer::InformerFactory;
use bosun_client::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use bosun_controllers::builtin::endpoints::EndpointControllers;
use bosun_controllers::builtin::garbagecollector::GarbageCollector;
use bosun_controllers::builtin::replicaset::ReplicaSets;
use serde_json::json;
use std::sync::Arc;

async fn slices(api: &Api<EndpointSlice>) -> Vec<EndpointSlice> {
    api.list(&ListParams::default().labels("kubernetes.io/service-name=web"))
        .await
        .unwrap()
        .items
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_get_endpoint_slices_and_endpoints() {
    let client = client().await;
    Agent::start(client.clone(), &["node-a", "node-b"]).await;
    let factory = Arc::new(InformerFactory::new(client.clone()));
    let (c, logic) = ReplicaSets::<ReplicaSet>::new(client.clone(), &factory);
    tokio::spawn(c.concurrency(4).run(logic));
    let (c, logic) = EndpointControllers::new(client.clone(), &factory);
    tokio::spawn(c.concurrency(2).run(logic));
    tokio::spawn(
        GarbageCollector::new(client.clone(), &factory)
            .await
            .unwrap()
            .run(),
    );

    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}
    }))
    .unwrap();
    services.create(&PostParams::default(), &svc).await.unwrap();
    let sets: Api<ReplicaSet> = Api::namespaced(client.clone(), "default");
    let rs: ReplicaSet = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [
                {"name": "c", "image": "web", "ports": [{"name": "http", "containerPort": 8080}]}]}}}
    }))
    .unwrap();
    sets.create(&PostParams::default(), &rs).await.unwrap();

    let slice_api: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    let endpoints: Api<Endpoints> = Api::namespaced(client.clone(), "default");
    eventually("a slice of 3 ready endpoints and the Endpoints", || {
        let (slice_api, endpoints) = (slice_api.clone(), endpoints.clone());
        async move {
            let s = slices(&slice_api).await;
            let ep = endpoints.get_opt("web").await.unwrap();
            s.len() == 1
                && s[0].endpoints.len() == 3
                && s[0]
                    .endpoints
                    .iter()
                    .all(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true))
                && ep.is_some_and(|ep| ep.subsets.len() == 1 && ep.subsets[0].addresses.len() == 3)
        }
    })
    .await;
    let s = &slices(&slice_api).await[0];
    assert_eq!(s.address_type, "IPv4");
    assert_eq!(s.ports.len(), 1);
    assert_eq!(
        (s.ports[0].name.as_deref(), s.ports[0].port),
        (Some("http"), Some(8080))
    );
    assert_eq!(
        s.metadata.labels["endpointslice.kubernetes.io/managed-by"],
        "endpointslice-controller.k8s.io"
    );
    assert_eq!(s.metadata.owner_references[0].kind, "Service");
    let e = &s.endpoints[0];
    assert!(e.node_name.is_some());
    assert_eq!(e.target_ref.as_ref().unwrap().kind.as_deref(), Some("Pod"));

    // An unready pod is neither ready nor serving, and moves to notReadyAddresses.
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let mut pod = pods
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .remove(0);
    for c in pod.status.as_mut().unwrap().conditions.iter_mut() {
        if c.r#type == "Ready" {
            c.status = "False".into();
        }
    }
    pods.replace_status(
        pod.metadata.name.as_deref().unwrap(),
        &PostParams::default(),
        &pod,
    )
    .await
    .unwrap();
    eventually("the unready endpoint", || {
        let (slice_api, endpoints) = (slice_api.clone(), endpoints.clone());
        async move {
            let s = slices(&slice_api).await;
            let unready = s[0]
                .endpoints
                .iter()
                .filter(|e| {
                    e.conditions
                        .as_ref()
                        .is_some_and(|c| c.ready == Some(false) && c.serving == Some(false))
                })
                .count();
            let ep = endpoints.get("web").await.unwrap();
            unready == 1
                && ep.subsets[0].addresses.len() == 2
                && ep.subsets[0].not_ready_addresses.len() == 1
        }
    })
    .await;

    // 150 pods: two slices, at most 100 each.
    sets.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 150}})),
    )
    .await
    .unwrap();
    eventually("150 endpoints in 2 slices", || {
        let slice_api = slice_api.clone();
        async move {
            let s = slices(&slice_api).await;
            let mut sizes: Vec<usize> = s.iter().map(|s| s.endpoints.len()).collect();
            sizes.sort();
            sizes == [50, 100]
        }
    })
    .await;

    // The Service goes: so do its slices and Endpoints.
    services
        .delete("web", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the slices and Endpoints to go", || {
        let (slice_api, endpoints) = (slice_api.clone(), endpoints.clone());
        async move {
            slices(&slice_api).await.is_empty() && endpoints.get_opt("web").await.unwrap().is_none()
        }
    })
    .await;
}
