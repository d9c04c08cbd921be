//! Deployments rolled over a simulated node agent, checked through watches and with kubectl.

use super::agent::Agent;
use super::{eventually, serve};
use bosun_api_types::apps::v1::{Deployment, ReplicaSet};
use bosun_api_types::core::v1::Pod;
use bosun_client::informer::{InformerFactory, Notification};
use bosun_client::{Api, Client, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use bosun_controllers::builtin::deployment::Deployments;
use bosun_controllers::builtin::garbagecollector::GarbageCollector;
use bosun_controllers::builtin::replicaset::ReplicaSets;
use serde_json::json;
use std::sync::{Arc, Mutex};

/// Starts the agent, the ReplicaSet and Deployment controllers and the garbage collector.
async fn cluster() -> (Client, String) {
    let (client, url) = serve().await;
    Agent::start(client.clone(), &["node-a", "node-b", "node-c"]).await;
    let factory = Arc::new(InformerFactory::new(client.clone()));
    let (rs, logic) = ReplicaSets::<ReplicaSet>::new(client.clone(), &factory);
    tokio::spawn(rs.concurrency(4).run(logic));
    let (d, logic) = Deployments::new(client.clone(), &factory);
    tokio::spawn(d.concurrency(2).run(logic));
    let gc = GarbageCollector::new(client.clone(), &factory)
        .await
        .unwrap();
    tokio::spawn(gc.run());
    (client, url)
}

fn deployment(name: &str, replicas: i32, image: &str) -> Deployment {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "strategy": {"type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": 3, "maxUnavailable": 2}},
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": image}]}}
        }
    }))
    .unwrap()
}

async fn rolled_out(api: &Api<Deployment>, name: &str, replicas: i32) -> bool {
    let d = api.get(name).await.unwrap();
    let s = d.status.clone().unwrap_or_default();
    s.observed_generation == d.metadata.generation
        && s.replicas == Some(replicas)
        && s.updated_replicas == Some(replicas)
        && s.available_replicas == Some(replicas)
        && s.conditions.iter().any(|c| {
            c.r#type == "Progressing" && c.reason.as_deref() == Some("NewReplicaSetAvailable")
        })
}

fn image_of(d: &Deployment) -> String {
    d.spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0]
        .image
        .clone()
        .unwrap()
}

fn kubectl(url: &str, args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new("kubectl")
        .arg(format!("--server={url}"))
        .args(args)
        .output()
        .expect("kubectl on PATH");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_update_stays_within_its_bounds_and_rolls_back() {
    let (client, url) = cluster().await;
    let api: Api<Deployment> = Api::namespaced(client.clone(), "default");
    api.create(&PostParams::default(), &deployment("web", 10, "web:v1"))
        .await
        .unwrap();
    eventually("revision 1 rolled out", || {
        let api = api.clone();
        async move { rolled_out(&api, "web", 10).await }
    })
    .await;

    // Every pod transition of the rollout, seen through a watch: at least replicas -
    // maxUnavailable pods ready.
    let violations = Arc::new(Mutex::new(Vec::<String>::new()));
    let transitions = Arc::new(Mutex::new(0usize));
    let factory = InformerFactory::new(client.clone());
    let informer = factory.informer::<Pod>(Some("default"));
    informer.store().wait_until_ready().await;
    {
        let (store, mut rx) = (informer.store(), informer.subscribe());
        let (violations, transitions) = (Arc::clone(&violations), Arc::clone(&transitions));
        tokio::spawn(async move {
            while let Ok(n) = rx.recv().await {
                let _ = matches!(n, Notification::Deleted(_));
                let live: Vec<_> = store
                    .list()
                    .into_iter()
                    .filter(|p| p.metadata.deletion_timestamp.is_none())
                    .collect();
                let ready = live
                    .iter()
                    .filter(|p| {
                        p.status.as_ref().is_some_and(|s| {
                            s.conditions
                                .iter()
                                .any(|c| c.r#type == "Ready" && c.status == "True")
                        })
                    })
                    .count();
                *transitions.lock().unwrap() += 1;
                if ready < 8 {
                    violations
                        .lock()
                        .unwrap()
                        .push(format!("{} pods, {ready} ready", live.len()));
                }
            }
        });
    }
    // maxSurge bounds the ReplicaSets' replicas, as upstream (a scaled-down ReplicaSet's pod
    // may live a moment longer, until its controller deletes it).
    let sets = factory.informer::<ReplicaSet>(Some("default"));
    sets.store().wait_until_ready().await;
    {
        let (store, mut rx) = (sets.store(), sets.subscribe());
        let violations = Arc::clone(&violations);
        tokio::spawn(async move {
            while rx.recv().await.is_ok() {
                let total: i32 = store
                    .list()
                    .iter()
                    .filter_map(|rs| rs.spec.as_ref()?.replicas)
                    .sum();
                if total > 13 {
                    violations
                        .lock()
                        .unwrap()
                        .push(format!("ReplicaSets want {total} replicas"));
                }
            }
        });
    }

    api.patch(
        "web",
        &PatchParams::default(),
        &Patch::Strategic(json!({
            "metadata": {"annotations": {"kubernetes.io/change-cause": "to v2"}},
            "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "web:v2"}]}}}
        })),
    )
    .await
    .unwrap();
    eventually("revision 2 rolled out", || {
        let api = api.clone();
        async move { rolled_out(&api, "web", 10).await }
    })
    .await;
    let (ok, out) = kubectl(
        &url,
        &["rollout", "status", "deployment/web", "--timeout=30s"],
    );
    assert!(ok, "{out}");
    assert!(out.contains("successfully rolled out"), "{out}");
    assert!(
        *transitions.lock().unwrap() >= 20,
        "the rollout went through its pods"
    );
    assert_eq!(*violations.lock().unwrap(), Vec::<String>::new());

    let d = api.get("web").await.unwrap();
    assert_eq!(
        d.metadata
            .annotations
            .get("deployment.kubernetes.io/revision")
            .map(String::as_str),
        Some("2")
    );
    let sets: Api<ReplicaSet> = Api::namespaced(client.clone(), "default");
    let all = sets.list(&ListParams::default()).await.unwrap().items;
    assert_eq!(all.len(), 2);
    for rs in &all {
        let hash = rs.metadata.labels["pod-template-hash"].clone();
        assert_eq!(
            rs.metadata.name.as_deref(),
            Some(format!("web-{hash}").as_str())
        );
        let replicas = rs.spec.as_ref().unwrap().replicas;
        match rs.metadata.annotations["deployment.kubernetes.io/revision"].as_str() {
            "1" => assert_eq!(replicas, Some(0)),
            "2" => {
                assert_eq!(replicas, Some(10));
                assert_eq!(
                    rs.metadata
                        .annotations
                        .get("kubernetes.io/change-cause")
                        .map(String::as_str),
                    Some("to v2")
                );
            }
            other => panic!("revision {other}"),
        }
    }
    let (ok, out) = kubectl(&url, &["rollout", "history", "deployment/web"]);
    assert!(ok && out.contains("to v2"), "{out}");
    // The controller's events are core/v1 Events, which kubectl describe lists.
    let (ok, out) = kubectl(&url, &["describe", "deployment", "web"]);
    assert!(
        ok && out.contains("ScalingReplicaSet") && out.contains("Scaled up replica set web-"),
        "{out}"
    );
    assert!(out.contains("deployment-controller"), "{out}");

    // kubectl rollout undo: revision 1's template comes back as revision 3.
    let (ok, out) = kubectl(&url, &["rollout", "undo", "deployment/web"]);
    assert!(ok, "{out}");
    eventually("the rollback", || {
        let api = api.clone();
        async move {
            image_of(&api.get("web").await.unwrap()) == "web:v1"
                && rolled_out(&api, "web", 10).await
        }
    })
    .await;
    let back = sets
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .find(|rs| image_of_rs(rs) == "web:v1")
        .unwrap();
    assert_eq!(
        back.metadata.annotations["deployment.kubernetes.io/revision"],
        "3"
    );
    assert_eq!(
        back.metadata.annotations["deployment.kubernetes.io/revision-history"],
        "1"
    );
    assert_eq!(*violations.lock().unwrap(), Vec::<String>::new());

    // Paused: a template change makes no new ReplicaSet until resumed.
    let (ok, out) = kubectl(&url, &["rollout", "pause", "deployment/web"]);
    assert!(ok, "{out}");
    let (ok, out) = kubectl(&url, &["set", "image", "deployment/web", "c=web:v3"]);
    assert!(ok, "{out}");
    eventually("the paused condition", || {
        let api = api.clone();
        async move {
            api.get("web")
                .await
                .unwrap()
                .status
                .unwrap_or_default()
                .conditions
                .iter()
                .any(|c| {
                    c.r#type == "Progressing" && c.reason.as_deref() == Some("DeploymentPaused")
                })
        }
    })
    .await;
    assert_eq!(
        sets.list(&ListParams::default()).await.unwrap().items.len(),
        2
    );
    let (ok, out) = kubectl(&url, &["rollout", "resume", "deployment/web"]);
    assert!(ok, "{out}");
    let (ok, out) = kubectl(
        &url,
        &["rollout", "status", "deployment/web", "--timeout=60s"],
    );
    assert!(ok, "{out}");
    assert_eq!(
        sets.list(&ListParams::default()).await.unwrap().items.len(),
        3
    );

    // A restart is a rollout too.
    let (ok, out) = kubectl(&url, &["rollout", "restart", "deployment/web"]);
    assert!(ok, "{out}");
    let (ok, out) = kubectl(
        &url,
        &["rollout", "status", "deployment/web", "--timeout=60s"],
    );
    assert!(ok, "{out}");
    assert_eq!(
        sets.list(&ListParams::default()).await.unwrap().items.len(),
        4
    );
    assert_eq!(*violations.lock().unwrap(), Vec::<String>::new());
}

fn image_of_rs(rs: &ReplicaSet) -> String {
    rs.spec
        .as_ref()
        .unwrap()
        .template
        .as_ref()
        .unwrap()
        .spec
        .as_ref()
        .unwrap()
        .containers[0]
        .image
        .clone()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_recreate_and_propagation() {
    let (client, _url) = cluster().await;
    let api: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let sets: Api<ReplicaSet> = Api::namespaced(client.clone(), "default");

    // Recreate: the old pods are gone before any new one exists.
    let mut d = deployment("batch", 4, "batch:v1");
    d.spec.as_mut().unwrap().strategy =
        serde_json::from_value(json!({"type": "Recreate"})).unwrap();
    api.create(&PostParams::default(), &d).await.unwrap();
    eventually("batch rolled out", || {
        let api = api.clone();
        async move { rolled_out(&api, "batch", 4).await }
    })
    .await;
    let mixed = Arc::new(Mutex::new(false));
    let factory = InformerFactory::new(client.clone());
    let informer = factory.informer::<Pod>(Some("default"));
    informer.store().wait_until_ready().await;
    {
        let (store, mut rx, mixed) = (informer.store(), informer.subscribe(), Arc::clone(&mixed));
        tokio::spawn(async move {
            while rx.recv().await.is_ok() {
                let images: std::collections::HashSet<String> = store
                    .list()
                    .iter()
                    .filter(|p| p.metadata.labels.get("app").map(String::as_str) == Some("batch"))
                    .map(|p| {
                        p.spec.as_ref().unwrap().containers[0]
                            .image
                            .clone()
                            .unwrap()
                    })
                    .collect();
                if images.len() > 1 {
                    *mixed.lock().unwrap() = true;
                }
            }
        });
    }
    api.patch(
        "batch",
        &PatchParams::default(),
        &Patch::Strategic(json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "batch:v2"}]}}}})),
    )
    .await
    .unwrap();
    eventually("batch v2 rolled out", || {
        let api = api.clone();
        async move {
            image_of(&api.get("batch").await.unwrap()) == "batch:v2"
                && rolled_out(&api, "batch", 4).await
        }
    })
    .await;
    assert!(!*mixed.lock().unwrap(), "Recreate never runs both versions");

    // Scaling mid-way is proportional; at rest the one set gets everything.
    api.patch(
        "batch",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 7}})),
    )
    .await
    .unwrap();
    eventually("7 replicas", || {
        let api = api.clone();
        async move { rolled_out(&api, "batch", 7).await }
    })
    .await;

    // Foreground: pods and ReplicaSets go before the Deployment.
    let fg = DeleteParams {
        propagation_policy: Some("Foreground".into()),
        ..Default::default()
    };
    api.delete("batch", &fg).await.unwrap();
    let saw_marked = Arc::new(Mutex::new(false));
    eventually("the foreground deletion", || {
        let (api, pods, sets) = (api.clone(), pods.clone(), sets.clone());
        let seen = Arc::clone(&saw_marked);
        async move {
            let d = api.get_opt("batch").await.unwrap();
            let left_pods = pods
                .list(&ListParams::default().labels("app=batch"))
                .await
                .unwrap()
                .items
                .len();
            let left_sets = sets
                .list(&ListParams::default().labels("app=batch"))
                .await
                .unwrap()
                .items
                .len();
            match d {
                Some(d) => {
                    assert!(d
                        .metadata
                        .finalizers
                        .contains(&"foregroundDeletion".to_string()));
                    *seen.lock().unwrap() = true;
                    false
                }
                None => {
                    assert_eq!(
                        (left_pods, left_sets),
                        (0, 0),
                        "dependents outlived the owner"
                    );
                    true
                }
            }
        }
    })
    .await;
    assert!(*saw_marked.lock().unwrap());

    // Orphan: the ReplicaSet and pods stay, without their owner.
    api.create(&PostParams::default(), &deployment("kept", 2, "kept:v1"))
        .await
        .unwrap();
    eventually("kept rolled out", || {
        let api = api.clone();
        async move { rolled_out(&api, "kept", 2).await }
    })
    .await;
    let orphan = DeleteParams {
        propagation_policy: Some("Orphan".into()),
        ..Default::default()
    };
    api.delete("kept", &orphan).await.unwrap();
    eventually("kept to go alone", || {
        let api = api.clone();
        async move { api.get_opt("kept").await.unwrap().is_none() }
    })
    .await;
    let left = sets
        .list(&ListParams::default().labels("app=kept"))
        .await
        .unwrap()
        .items;
    assert_eq!(left.len(), 1);
    assert!(left[0].metadata.owner_references.is_empty());
    assert_eq!(
        pods.list(&ListParams::default().labels("app=kept"))
            .await
            .unwrap()
            .items
            .len(),
        2
    );
}
