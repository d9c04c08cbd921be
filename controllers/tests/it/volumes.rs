//! PersistentVolume binding and local-path provisioning.

use super::{client, eventually};
use bosun_api_types::core::v1::{PersistentVolume, PersistentVolumeClaim};
use bosun_api_types::storage::v1::StorageClass;
use bosun_client::informer::InformerFactory;
use bosun_client::{Api, DeleteParams, Patch, PatchParams, PostParams};
use bosun_controllers::builtin::protection::{PvProtection, PvcProtection};
use bosun_controllers::builtin::volume::Volumes;
use serde_json::json;
use std::sync::Arc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_bind_to_volumes_and_local_path_provisions() {
    let client = client().await;
    let factory = Arc::new(InformerFactory::new(client.clone()));
    let (c, logic) = Volumes::new(client.clone(), &factory);
    logic.ensure_default_class().await.unwrap();
    tokio::spawn(c.run(logic));
    let (c, logic) = PvcProtection::new(client.clone(), &factory);
    tokio::spawn(c.run(logic));
    let (c, logic) = PvProtection::new(client.clone(), &factory);
    tokio::spawn(c.run(logic));

    let classes: Api<StorageClass> = Api::all(client.clone());
    let lp = classes.get("local-path").await.unwrap();
    assert_eq!(
        lp.metadata.annotations["storageclass.kubernetes.io/is-default-class"],
        "true"
    );

    // A static volume and a claim of its class.
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    let pv: PersistentVolume = serde_json::from_value(json!({"metadata": {"name": "static"},
        "spec": {"capacity": {"storage": "5Gi"}, "accessModes": ["ReadWriteOnce"], "storageClassName": "manual",
            "hostPath": {"path": "/tmp/static"}}})).unwrap();
    pvs.create(&PostParams::default(), &pv).await.unwrap();
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), "default");
    let claim = |name: &str, class: Option<&str>| -> PersistentVolumeClaim {
        let mut spec = json!({"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}});
        if let Some(c) = class {
            spec["storageClassName"] = json!(c);
        }
        serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).unwrap()
    };
    claims
        .create(&PostParams::default(), &claim("manual", Some("manual")))
        .await
        .unwrap();
    eventually("the static binding", || {
        let (claims, pvs) = (claims.clone(), pvs.clone());
        async move {
            let c = claims.get("manual").await.unwrap();
            let v = pvs.get("static").await.unwrap();
            c.status.and_then(|s| s.phase).as_deref() == Some("Bound")
                && c.spec.unwrap().volume_name.as_deref() == Some("static")
                && v.status.and_then(|s| s.phase).as_deref() == Some("Bound")
                && v.spec.unwrap().claim_ref.and_then(|r| r.name).as_deref() == Some("manual")
        }
    })
    .await;

    // The default class waits for a consumer's node, then provisions there.
    claims
        .create(&PostParams::default(), &claim("data", None))
        .await
        .unwrap();
    let data = claims.get("data").await.unwrap();
    assert_eq!(
        data.spec.as_ref().unwrap().storage_class_name.as_deref(),
        Some("local-path")
    );
    eventually("data Pending", || {
        let claims = claims.clone();
        async move {
            claims
                .get("data")
                .await
                .unwrap()
                .status
                .and_then(|s| s.phase)
                .as_deref()
                == Some("Pending")
        }
    })
    .await;
    claims
        .patch(
            "data",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {
            "volume.kubernetes.io/selected-node": "node-a"}}})),
        )
        .await
        .unwrap();
    let uid = data.metadata.uid.clone().unwrap();
    eventually("the provisioned volume bound", || {
        let (claims, pvs, uid) = (claims.clone(), pvs.clone(), uid.clone());
        async move {
            let Some(v) = pvs.get_opt(&format!("pvc-{uid}")).await.unwrap() else {
                return false;
            };
            let c = claims.get("data").await.unwrap();
            let spec = v.spec.unwrap();
            c.status.and_then(|s| s.phase).as_deref() == Some("Bound")
                && spec
                    .host_path
                    .is_some_and(|h| h.path.starts_with("/var/lib/bosun/local-path/pvc-"))
                && spec.node_affinity.is_some()
        }
    })
    .await;

    // The claim goes: its Delete-policy volume goes too.
    claims
        .delete("data", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the provisioned volume to go", || {
        let (pvs, uid) = (pvs.clone(), uid.clone());
        async move { pvs.get_opt(&format!("pvc-{uid}")).await.unwrap().is_none() }
    })
    .await;
}
