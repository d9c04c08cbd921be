//! StatefulSets over a simulated node agent.

use super::agent::Agent;
use super::{eventually, serve};
use bosun_api_types::apps::v1::{ControllerRevision, StatefulSet};
use bosun_api_types::core::v1::{PersistentVolumeClaim, Pod};
use bosun_client::informer::{InformerFactory, Notification};
use bosun_client::reflector::Key;
use bosun_client::{Api, ListParams, Patch, PatchParams, PostParams};
use bosun_controllers::builtin::statefulset::StatefulSets;
use serde_json::json;
use std::sync::{Arc, Mutex};

fn image(p: &Pod) -> String {
    p.spec.as_ref().unwrap().containers[0]
        .image
        .clone()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statefulset_orders_its_pods_claims_and_updates() {
    let (client, url) = serve().await;
    Agent::start(client.clone(), &["node-a", "node-b"]).await;
    let factory = Arc::new(InformerFactory::new(client.clone()));
    let (c, logic) = StatefulSets::new(client.clone(), &factory);
    tokio::spawn(c.concurrency(2).run(logic));
    let (c, logic) =
        bosun_controllers::builtin::protection::PvcProtection::new(client.clone(), &factory);
    tokio::spawn(c.run(logic));

    // The order pods appear in, and whether the one before each was Ready then.
    let order = Arc::new(Mutex::new(Vec::<(String, bool)>::new()));
    let watch = InformerFactory::new(client.clone());
    let informer = watch.informer::<Pod>(Some("default"));
    informer.store().wait_until_ready().await;
    {
        let (store, mut rx, order) = (informer.store(), informer.subscribe(), Arc::clone(&order));
        tokio::spawn(async move {
            let _keep = watch;
            while let Ok(n) = rx.recv().await {
                if let Notification::Added(p) = n {
                    let name = p.metadata.name.clone().unwrap();
                    let ord: i32 = name.rsplit('-').next().unwrap().parse().unwrap();
                    let prev_ready = ord == 0
                        || store
                            .get(&Key::namespaced("default", &format!("db-{}", ord - 1)))
                            .is_some_and(|p| {
                                p.status.as_ref().is_some_and(|s| {
                                    s.conditions
                                        .iter()
                                        .any(|c| c.r#type == "Ready" && c.status == "True")
                                })
                            });
                    order.lock().unwrap().push((name, prev_ready));
                }
            }
        });
    }

    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), "default");
    let set: StatefulSet = serde_json::from_value(json!({
        "metadata": {"name": "db"},
        "spec": {"replicas": 3, "serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
            "persistentVolumeClaimRetentionPolicy": {"whenScaled": "Delete", "whenDeleted": "Retain"},
            "template": {"metadata": {"labels": {"app": "db"}},
                "spec": {"containers": [{"name": "c", "image": "db:v1"}]}},
            "volumeClaimTemplates": [{"metadata": {"name": "data"},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]}
    }))
    .unwrap();
    sets.create(&PostParams::default(), &set).await.unwrap();
    let ready = |n: i32| {
        let sets = sets.clone();
        move || {
            let sets = sets.clone();
            async move {
                let s = sets.get("db").await.unwrap().status.unwrap_or_default();
                s.ready_replicas == Some(n)
                    && s.replicas == n
                    && s.current_revision == s.update_revision
                    && s.updated_replicas == Some(n)
            }
        }
    };
    eventually("3 ready replicas", ready(3)).await;
    let seen = order.lock().unwrap().clone();
    assert_eq!(
        seen,
        vec![
            ("db-0".into(), true),
            ("db-1".into(), true),
            ("db-2".into(), true)
        ],
        "OrderedReady: one at a time, each after the previous is Ready"
    );
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let db1 = pods.get("db-1").await.unwrap();
    let spec = db1.spec.as_ref().unwrap();
    assert_eq!(
        (spec.hostname.as_deref(), spec.subdomain.as_deref()),
        (Some("db-1"), Some("db"))
    );
    assert!(spec.volumes.iter().any(|v| v
        .persistent_volume_claim
        .as_ref()
        .is_some_and(|c| c.claim_name == "data-db-1")));
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), "default");
    for i in 0..3 {
        assert!(claims
            .get_opt(&format!("data-db-{i}"))
            .await
            .unwrap()
            .is_some());
    }

    // A new template rolls from the highest ordinal down.
    sets.patch(
        "db",
        &PatchParams::default(),
        &Patch::Strategic(json!({"spec": {"template": {"spec": {
        "containers": [{"name": "c", "image": "db:v2"}]}}}})),
    )
    .await
    .unwrap();
    let out = std::process::Command::new("kubectl")
        .args([
            &format!("--server={url}"),
            "rollout",
            "status",
            "statefulset/db",
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
    eventually("every pod at v2", || {
        let pods = pods.clone();
        async move {
            let list = pods
                .list(&ListParams::default().labels("app=db"))
                .await
                .unwrap()
                .items;
            list.len() == 3
                && list
                    .iter()
                    .all(|p| image(p) == "db:v2" && p.metadata.deletion_timestamp.is_none())
        }
    })
    .await;
    eventually("the revision to be current", ready(3)).await;
    let revisions: Api<ControllerRevision> = Api::namespaced(client.clone(), "default");
    let revs = revisions.list(&ListParams::default()).await.unwrap().items;
    assert_eq!(revs.len(), 2);
    let history = std::process::Command::new("kubectl")
        .args([
            &format!("--server={url}"),
            "rollout",
            "history",
            "statefulset/db",
        ])
        .output()
        .expect("kubectl");
    let history = String::from_utf8_lossy(&history.stdout);
    assert!(history.contains('1') && history.contains('2'), "{history}");

    // With a partition, only the ordinals at or above it move.
    sets.patch(
        "db",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {
        "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 2}},
        "template": {"spec": {"containers": [{"name": "c", "image": "db:v3"}]}}}})),
    )
    .await
    .unwrap();
    eventually("db-2 alone at v3", || {
        let (pods, sets) = (pods.clone(), sets.clone());
        async move {
            let s = sets.get("db").await.unwrap().status.unwrap_or_default();
            let v: Vec<String> = futures_images(&pods).await;
            v == ["db:v2", "db:v2", "db:v3"]
                && s.updated_replicas == Some(1)
                && s.ready_replicas == Some(3)
        }
    })
    .await;

    // Scaling down removes the highest ordinals and, with whenScaled: Delete, their claims.
    sets.patch(
        "db",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 1}})),
    )
    .await
    .unwrap();
    eventually("one pod and one claim", || {
        let (pods, claims) = (pods.clone(), claims.clone());
        async move {
            let p = pods
                .list(&ListParams::default().labels("app=db"))
                .await
                .unwrap()
                .items;
            let c = claims.list(&ListParams::default()).await.unwrap().items;
            p.len() == 1
                && p[0].metadata.name.as_deref() == Some("db-0")
                && c.len() == 1
                && c[0].metadata.name.as_deref() == Some("data-db-0")
        }
    })
    .await;
}

async fn futures_images(pods: &Api<Pod>) -> Vec<String> {
    let mut list = pods
        .list(&ListParams::default().labels("app=db"))
        .await
        .unwrap()
        .items;
    list.retain(|p| p.metadata.deletion_timestamp.is_none());
    list.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    list.iter().map(image).collect()
}
