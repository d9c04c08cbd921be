//! The Rust `kube` client, unchanged, against `bosun server`: typed CRUD, a watcher that survives
//! a server restart, and a reflector.

use super::{free_port, spawn_server};
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{reflector, watcher, WatchStreamExt};
use std::collections::BTreeMap;
use std::time::Duration;

/// A client from the kubeconfig `bosun server` wrote: TLS to the cluster CA, the admin's
/// client certificate.
async fn client(kubeconfig: &std::path::Path) -> kube::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let k = kube::config::Kubeconfig::read_from(kubeconfig).unwrap();
    let config = kube::Config::from_custom_kubeconfig(k, &Default::default())
        .await
        .unwrap();
    assert_eq!(config.cluster_url.scheme_str(), Some("https"));
    kube::Client::try_from(config).unwrap()
}

/// A pod no scheduler serves (so nothing but the test writes it, and optimistic-concurrency
/// checks are deterministic).
fn pod(name: &str) -> Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "labels": {"app": "kube-test"}},
        "spec": {"schedulerName": "nobody", "containers": [{"name": "main", "image": "busybox:1.36"}]}
    }))
    .unwrap()
}

fn config_map(name: &str) -> ConfigMap {
    ConfigMap {
        metadata: kube::api::ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([("k".to_owned(), "v".to_owned())])),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_client_crud_watcher_across_restart_and_reflector() {
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let (mut server, kubeconfig) = spawn_server(data.path(), port);
    let client = client(&kubeconfig).await;

    // Typed CRUD on pods.
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let created = pods
        .create(&PostParams::default(), &pod("p1"))
        .await
        .unwrap();
    assert!(created.metadata.uid.is_some());
    let spec = created.spec.as_ref().unwrap();
    assert_eq!(
        spec.restart_policy.as_deref(),
        Some("Always"),
        "defaults applied"
    );
    let mut got = pods.get("p1").await.unwrap();
    got.metadata
        .labels
        .get_or_insert_with(Default::default)
        .insert("stage".into(), "two".into());
    let replaced = pods
        .replace("p1", &PostParams::default(), &got)
        .await
        .unwrap();
    assert_eq!(replaced.metadata.labels.as_ref().unwrap()["stage"], "two");
    let stale = pods.replace("p1", &PostParams::default(), &got).await;
    match stale {
        Err(kube::Error::Api(e)) => assert_eq!(e.code, 409),
        other => panic!("a stale replace must be a 409, got {other:?}"),
    }
    let patched = pods
        .patch(
            "p1",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"metadata": {"annotations": {"a": "b"}}})),
        )
        .await
        .unwrap();
    assert_eq!(patched.metadata.annotations.as_ref().unwrap()["a"], "b");
    let listed = pods
        .list(&ListParams::default().labels("stage=two"))
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 1);
    pods.delete("p1", &DeleteParams::default()).await.unwrap();
    match pods.get("p1").await {
        Err(kube::Error::Api(e)) => assert_eq!(e.code, 404),
        other => panic!("a deleted pod must be a 404, got {other:?}"),
    }

    // Server-side apply: creates, then updates what the manager applies.
    let ssa = PatchParams::apply("kube-e2e");
    let applied = pods
        .patch("p2", &ssa, &Patch::Apply(pod("p2")))
        .await
        .unwrap();
    assert_eq!(applied.metadata.name.as_deref(), Some("p2"));
    let managed = applied.metadata.managed_fields.clone().unwrap_or_default();
    assert!(
        managed
            .iter()
            .any(|m| m.manager.as_deref() == Some("kube-e2e")
                && m.operation.as_deref() == Some("Apply")),
        "{managed:?}"
    );
    let mut relabeled = pod("p2");
    relabeled
        .metadata
        .labels
        .get_or_insert_with(Default::default)
        .insert("applied".into(), "yes".into());
    let again = pods
        .patch("p2", &ssa, &Patch::Apply(&relabeled))
        .await
        .unwrap();
    assert_eq!(again.metadata.labels.as_ref().unwrap()["applied"], "yes");
    pods.delete("p2", &DeleteParams::default()).await.unwrap();

    // A reflector and a watcher over config maps.
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let (reader, writer) = reflector::store::<ConfigMap>();
    let stream = reflector::reflector(writer, watcher(cms.clone(), watcher::Config::default()))
        .default_backoff()
        .applied_objects();
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let task = tokio::spawn(async move {
        futures_util::pin_mut!(stream);
        while let Some(ev) = stream.next().await {
            if let Ok(cm) = ev {
                let _ = seen_tx.send(cm.metadata.name.unwrap_or_default());
            }
        }
    });
    cms.create(&PostParams::default(), &config_map("before"))
        .await
        .unwrap();
    wait_for(&mut seen_rx, "before").await;
    reader.wait_until_ready().await.unwrap();
    assert!(reader
        .state()
        .iter()
        .any(|c| c.metadata.name.as_deref() == Some("before")));

    // Restart the server: the watcher reconnects (resuming or relisting) and sees what follows.
    server.kill().unwrap();
    server.wait().unwrap();
    let (mut server, _) = spawn_server(data.path(), port);
    cms.create(&PostParams::default(), &config_map("after"))
        .await
        .unwrap();
    wait_for(&mut seen_rx, "after").await;
    let names: Vec<String> = reader
        .state()
        .iter()
        .filter_map(|c| c.metadata.name.clone())
        .collect();
    assert!(
        names.contains(&"before".to_owned()) && names.contains(&"after".to_owned()),
        "{names:?}"
    );
    task.abort();
    server.kill().unwrap();
    server.wait().unwrap();
}

async fn wait_for(rx: &mut tokio::sync::mpsc::UnboundedReceiver<String>, name: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(n)) if n == name => return,
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => panic!("the watcher never saw {name}"),
        }
    }
}
