//! ReplicaSets and ReplicationControllers with a simulated node agent.

use super::agent::Agent;
use super::{client, eventually};
use bosun_api_types::apps::v1::ReplicaSet;
use bosun_api_types::core::v1::{Pod, ReplicationController};
use bosun_client::informer::InformerFactory;
use bosun_client::{Api, ListParams, Patch, PatchParams, PostParams};
use bosun_controllers::builtin::replicaset::ReplicaSets;
use serde_json::json;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};

fn pod_template(app: &str) -> serde_json::Value {
    json!({
        "metadata": {"labels": {"app": app}},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]}
    })
}

async fn owned_pods(pods: &Api<Pod>, uid: &str) -> Vec<Pod> {
    pods.list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|p| {
            p.metadata
                .owner_references
                .iter()
                .any(|r| r.uid == uid && r.controller == Some(true))
                && p.metadata.deletion_timestamp.is_none()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replicaset_keeps_its_pods_adopts_releases_and_reports() {
    let client = client().await;
    Agent::start(client.clone(), &["node-a", "node-b"]).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let sets: Api<ReplicaSet> = Api::namespaced(client.clone(), "default");

    // Every pod name ever created, seen through a watch: expectations mean no double creation.
    let created = Arc::new(Mutex::new(HashSet::new()));
    {
        let (created, factory) = (Arc::clone(&created), InformerFactory::new(client.clone()));
        let informer = factory.informer::<Pod>(Some("default"));
        let mut rx = informer.subscribe();
        tokio::spawn(async move {
            let _keep = factory;
            while let Ok(n) = rx.recv().await {
                if let Some(name) = &n.object().metadata.name {
                    created.lock().unwrap().insert(name.clone());
                }
            }
        });
    }

    // An orphan that the set will adopt.
    // It costs most to delete (set now, so the controller's cache has it long before the
    // scale-down below).
    let orphan: Pod = serde_json::from_value(json!({
        "metadata": {"name": "orphan", "labels": {"app": "web"},
            "annotations": {"controller.kubernetes.io/pod-deletion-cost": "100"}},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]}
    }))
    .unwrap();
    pods.create(&PostParams::default(), &orphan).await.unwrap();

    let factory = Arc::new(InformerFactory::new(client.clone()));
    let (controller, logic) = ReplicaSets::<ReplicaSet>::new(client.clone(), &factory);
    tokio::spawn(controller.concurrency(2).run(logic));

    let rs: ReplicaSet = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                 "template": pod_template("web")}
    }))
    .unwrap();
    let rs = sets.create(&PostParams::default(), &rs).await.unwrap();
    let uid = rs.metadata.uid.clone().unwrap();
    eventually("3 ready replicas", || {
        let sets = sets.clone();
        async move {
            let s = sets.get("web").await.unwrap().status.unwrap_or_default();
            s.replicas == 3
                && s.ready_replicas == Some(3)
                && s.available_replicas == Some(3)
                && s.fully_labeled_replicas == Some(3)
                && s.observed_generation == Some(1)
        }
    })
    .await;
    let owned = owned_pods(&pods, &uid).await;
    assert_eq!(owned.len(), 3);
    assert!(
        owned
            .iter()
            .any(|p| p.metadata.name.as_deref() == Some("orphan")),
        "the orphan was adopted"
    );
    for p in &owned {
        let r = &p.metadata.owner_references[0];
        assert_eq!(
            (r.kind.as_str(), r.api_version.as_str()),
            ("ReplicaSet", "apps/v1")
        );
        assert_eq!(r.block_owner_deletion, Some(true));
    }
    // One adopted, two made: no more were ever created.
    let seen = created.lock().unwrap().clone();
    assert_eq!(seen.len(), 3, "{seen:?}");

    // A pod relabelled out of the selector is released and replaced.
    let released = owned
        .iter()
        .find(|p| p.metadata.name.as_deref() != Some("orphan"))
        .unwrap()
        .metadata
        .name
        .clone()
        .unwrap();
    pods.patch(
        &released,
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"app": "other"}}})),
    )
    .await
    .unwrap();
    eventually("the released pod to lose its owner and be replaced", || {
        let (pods, uid, released) = (pods.clone(), uid.clone(), released.clone());
        async move {
            let p = pods.get(&released).await.unwrap();
            p.metadata.owner_references.is_empty() && owned_pods(&pods, &uid).await.len() == 3
        }
    })
    .await;

    // Scale down to 1: the survivor is the pod that costs most to delete (all are Running and
    // Ready; the orphan carries the highest pod-deletion-cost).
    sets.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 1}})),
    )
    .await
    .unwrap();
    eventually("1 replica", || {
        let (sets, pods, uid) = (sets.clone(), pods.clone(), uid.clone());
        async move {
            let s = sets.get("web").await.unwrap().status.unwrap_or_default();
            s.replicas == 1
                && s.observed_generation == Some(2)
                && owned_pods(&pods, &uid).await.len() == 1
        }
    })
    .await;
    assert_eq!(
        owned_pods(&pods, &uid).await[0].metadata.name.as_deref(),
        Some("orphan"),
        "the costliest pod stays"
    );

    // The set's events say what it did, as kubectl describe shows them.
    let events: Api<bosun_api_types::core::v1::Event> = Api::namespaced(client.clone(), "default");
    eventually("SuccessfulCreate and SuccessfulDelete events", || {
        let events = events.clone();
        async move {
            let reasons: HashSet<String> = events
                .list(&ListParams::default())
                .await
                .unwrap()
                .items
                .into_iter()
                .filter_map(|e| e.reason)
                .collect();
            reasons.contains("SuccessfulCreate") && reasons.contains("SuccessfulDelete")
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replication_controller_keeps_its_pods() {
    let client = client().await;
    Agent::start(client.clone(), &["node-a"]).await;
    let factory = Arc::new(InformerFactory::new(client.clone()));
    let (controller, logic) = ReplicaSets::<ReplicationController>::new(client.clone(), &factory);
    tokio::spawn(controller.run(logic));
    let rcs: Api<ReplicationController> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let rc: ReplicationController = serde_json::from_value(json!({
        "metadata": {"name": "legacy"},
        "spec": {"replicas": 2, "selector": {"app": "legacy"}, "template": pod_template("legacy")}
    }))
    .unwrap();
    let rc = rcs.create(&PostParams::default(), &rc).await.unwrap();
    let uid = rc.metadata.uid.clone().unwrap();
    eventually("2 ready replicas", || {
        let rcs = rcs.clone();
        async move {
            let s = rcs.get("legacy").await.unwrap().status.unwrap_or_default();
            s.replicas == 2 && s.ready_replicas == Some(2) && s.available_replicas == Some(2)
        }
    })
    .await;
    // A deleted pod is replaced.
    let victim = owned_pods(&pods, &uid).await[0]
        .metadata
        .name
        .clone()
        .unwrap();
    pods.delete(&victim, &Default::default()).await.unwrap();
    eventually("the replacement", || {
        let (pods, uid, victim) = (pods.clone(), uid.clone(), victim.clone());
        async move {
            let owned = owned_pods(&pods, &uid).await;
            owned.len() == 2
                && owned
                    .iter()
                    .all(|p| p.metadata.name.as_deref() != Some(&victim))
        }
    })
    .await;
    let r = &owned_pods(&pods, &uid).await[0].metadata.owner_references[0];
    assert_eq!(
        (r.kind.as_str(), r.api_version.as_str()),
        ("ReplicationController", "v1")
    );
}
