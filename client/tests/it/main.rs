//! The client against an in-process API server on the in-memory store, over real HTTP.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use bosun_api_types::core::v1::ConfigMap;
use bosun_api_types::meta::v1::ObjectMeta;
use bosun_apiserver::auth::{Authenticator, Credentials, Pipeline, UserInfo};
use bosun_apiserver::{ApiError, ApiServer};
use bosun_client::{
    Api, Client, Config, DeleteParams, Deleted, Kubeconfig, KubeconfigOptions, ListParams, Patch,
    PatchParams, PostParams, WatchParams,
};
use bosun_store::memory::MemoryStore;
use futures_util::{StreamExt, TryStreamExt};
use serde_json::json;
use std::sync::Arc;

mod runtime;
mod tls;

/// Accepts exactly one bearer token.
struct OneToken;

#[async_trait::async_trait]
impl Authenticator for OneToken {
    async fn authenticate(&self, req: &Credentials<'_>) -> Result<Option<UserInfo>, ApiError> {
        let ok = req.bearer_token() == Some("t0k3n");
        Ok(ok.then(|| UserInfo {
            name: "tester".into(),
            groups: vec!["system:masters".into()],
            ..Default::default()
        }))
    }
}

async fn start() -> (ApiServer, String) {
    let pipeline = Pipeline {
        authenticator: Arc::new(OneToken),
        ..Pipeline::default()
    };
    let s = ApiServer::build(
        Arc::new(MemoryStore::new()),
        bosun_apiserver::ResourceTable::builtin(),
        bosun_apiserver::Config::default(),
        pipeline,
    );
    s.bootstrap().await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(s.clone().serve(listener, std::future::pending()));
    (s, url)
}

/// A server that lets every request in (loopback default).
async fn start_open() -> (ApiServer, String) {
    let s = ApiServer::new(Arc::new(MemoryStore::new()));
    s.bootstrap().await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(s.clone().serve(listener, std::future::pending()));
    (s, url)
}

/// A client from a kubeconfig file, as a user's tool would make one.
fn client_from_kubeconfig(url: &str, dir: &std::path::Path) -> Client {
    let path = dir.join("config");
    std::fs::write(dir.join("token"), "t0k3n\n").unwrap();
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: bosun\nclusters:\n- name: bosun\n  cluster:\n    server: {url}\ncontexts:\n- name: bosun\n  context:\n    cluster: bosun\n    user: me\n    namespace: default\nusers:\n- name: me\n  user:\n    tokenFile: token\n"
        ),
    )
    .unwrap();
    let k = Kubeconfig::read(&path).unwrap();
    let config = Config::from_kubeconfig(&k, &KubeconfigOptions::default()).unwrap();
    Client::try_from_config(config).unwrap()
}

fn cm(name: &str, labels: &[(&str, &str)]) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            ..Default::default()
        },
        data: [("k".to_owned(), "v".to_owned())].into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn typed_crud_patches_and_errors() {
    let (_s, url) = start().await;
    let dir = tempfile::tempdir().unwrap();
    let client = client_from_kubeconfig(&url, dir.path());
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());

    // Without the token the server says 401, and the error carries its Status.
    let anonymous = Client::try_from_config(Config::new(url.parse().unwrap())).unwrap();
    let err = Api::<ConfigMap>::default_namespaced(anonymous)
        .get("x")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(401));
    assert_eq!(err.reason(), Some("Unauthorized"));

    let a = cms
        .create(&PostParams::default(), &cm("a", &[("app", "web")]))
        .await
        .unwrap();
    assert!(a.metadata.uid.is_some());
    cms.create(&PostParams::default(), &cm("b", &[("app", "db")]))
        .await
        .unwrap();
    let err = cms
        .create(&PostParams::default(), &cm("a", &[]))
        .await
        .unwrap_err();
    assert!(err.is_conflict(), "{err}");
    assert_eq!(err.reason(), Some("AlreadyExists"));

    let got = cms.get("a").await.unwrap();
    assert_eq!(got.data["k"], "v");
    assert!(cms.get_opt("nope").await.unwrap().is_none());
    let web = cms
        .list(&ListParams::default().labels("app=web"))
        .await
        .unwrap();
    assert_eq!(web.items.len(), 1);

    // Replace: compare-and-swap on resourceVersion.
    let mut changed = got.clone();
    changed.data.insert("k".into(), "v2".into());
    let replaced = cms
        .replace("a", &PostParams::default(), &changed)
        .await
        .unwrap();
    assert_eq!(replaced.data["k"], "v2");
    let err = cms
        .replace("a", &PostParams::default(), &changed)
        .await
        .unwrap_err();
    assert!(err.is_conflict(), "{err}");

    // Patches of every type.
    let p = cms
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"m": "1"}})),
        )
        .await
        .unwrap();
    assert_eq!(p.data["m"], "1");
    let p = cms
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Json(json!([{"op": "add", "path": "/data/j", "value": "2"}])),
        )
        .await
        .unwrap();
    assert_eq!(p.data["j"], "2");
    let p = cms
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Strategic(json!({"data": {"s": "3"}})),
        )
        .await
        .unwrap();
    assert_eq!(p.data["s"], "3");
    let apply = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"},
        "data": {"k": "mine"}});
    let err = cms
        .patch("a", &PatchParams::apply("tool"), &Patch::Apply(&apply))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(409), "{err}");
    let p = cms
        .patch(
            "a",
            &PatchParams::apply("tool").force(),
            &Patch::Apply(&apply),
        )
        .await
        .unwrap();
    assert_eq!(p.data["k"], "mine");

    // Validation errors come back with their causes.
    let err = cms
        .create(&PostParams::default(), &cm("Bad_Name", &[]))
        .await
        .unwrap_err();
    let status = err.status().unwrap();
    assert_eq!(status.code, Some(422));
    assert_eq!(status.reason.as_deref(), Some("Invalid"));
    assert!(status.details.as_ref().unwrap().causes[0].field.is_some());

    match cms.delete("b", &DeleteParams::default()).await.unwrap() {
        Deleted::Status(s) => assert_eq!(s.status.as_deref(), Some("Success")),
        Deleted::Object(_) => panic!("a ConfigMap delete answers a Status"),
    }
    assert!(cms.get_opt("b").await.unwrap().is_none());
}

#[tokio::test]
async fn pages_stream_and_watches_resume() {
    let (s, url) = start().await;
    let dir = tempfile::tempdir().unwrap();
    let client = client_from_kubeconfig(&url, dir.path());
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    for i in 0..5 {
        cms.create(&PostParams::default(), &cm(&format!("c{i}"), &[]))
            .await
            .unwrap();
    }
    let all: Vec<ConfigMap> = cms
        .list_all(&ListParams::default().limit(2))
        .try_collect()
        .await
        .unwrap();
    // kube-root-ca.crt is not published here (no controllers), so exactly ours.
    let names: Vec<_> = all
        .iter()
        .map(|c| c.metadata.name.clone().unwrap())
        .collect();
    assert_eq!(names, ["c0", "c1", "c2", "c3", "c4"]);

    let rv = cms
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut events = cms
        .watch(&WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();
    cms.create(&PostParams::default(), &cm("later", &[]))
        .await
        .unwrap();
    cms.delete("c0", &DeleteParams::default()).await.unwrap();
    let ev = events.next().await.unwrap().unwrap();
    assert_eq!(
        (ev.r#type.as_str(), ev.object.metadata.name.as_deref()),
        ("ADDED", Some("later"))
    );
    let ev = events.next().await.unwrap().unwrap();
    assert_eq!(
        (ev.r#type.as_str(), ev.object.metadata.name.as_deref()),
        ("DELETED", Some("c0"))
    );

    // A watch from a compacted revision is an error the caller can recognise (relist).
    let current = s.store().current_revision().await.unwrap();
    s.store().compact(current).await.unwrap();
    let mut events = cms
        .watch(&WatchParams::default(), "2")
        .await
        .unwrap()
        .boxed();
    let err = events.next().await.unwrap().unwrap_err();
    assert!(err.is_gone(), "{err}");
}

#[tokio::test]
async fn subresources_scale_bind_evict_and_log() {
    use bosun_api_types::apps::v1::Deployment;
    use bosun_api_types::core::v1::Pod;
    use bosun_client::LogParams;
    let (_s, url) = start_open().await;
    let client = Client::try_from_config(Config::new(url.parse().unwrap())).unwrap();
    let deps: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let d: Deployment = serde_json::from_value(json!({"metadata": {"name": "web"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "app", "image": "nginx"}]}}}}))
    .unwrap();
    deps.create(&PostParams::default(), &d).await.unwrap();
    let scale = deps.scale("web", 4).await.unwrap();
    assert_eq!(scale.spec.and_then(|s| s.replicas), Some(4));
    assert_eq!(
        deps.get_scale("web").await.unwrap().spec.unwrap().replicas,
        Some(4)
    );

    let pods: Api<Pod> = Api::namespaced(client, "default");
    let p: Pod = serde_json::from_value(json!({"metadata": {"name": "p"},
        "spec": {"containers": [{"name": "app", "image": "nginx"}]}}))
    .unwrap();
    pods.create(&PostParams::default(), &p).await.unwrap();
    // No node yet: the log read is refused with the server's reason.
    let err = pods.logs("p", &LogParams::default()).await.unwrap_err();
    assert_eq!(err.code(), Some(400), "{err}");
    pods.bind("p", "node-1").await.unwrap();
    assert_eq!(
        pods.get("p")
            .await
            .unwrap()
            .spec
            .unwrap()
            .node_name
            .as_deref(),
        Some("node-1")
    );
    pods.evict(
        "p",
        &DeleteParams {
            grace_period_seconds: Some(0),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(pods.get_opt("p").await.unwrap().is_none());
}

#[tokio::test]
async fn repeated_events_become_a_series() {
    use bosun_api_types::events::v1::Event;
    use bosun_client::events::{EventType, Recorder};
    let (_s, url) = start_open().await;
    let client = Client::try_from_config(Config::new(url.parse().unwrap())).unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let target = cms
        .create(&PostParams::default(), &cm("target", &[]))
        .await
        .unwrap();
    let recorder = Recorder::new(client.clone(), "tester", "tester-1");
    let regarding = Recorder::reference_to(&target);
    for _ in 0..3 {
        recorder
            .publish(
                &regarding,
                EventType::Warning,
                "Failed",
                "Sync",
                "could not sync",
            )
            .await
            .unwrap();
    }
    recorder
        .publish(&regarding, EventType::Normal, "Synced", "Sync", "synced")
        .await
        .unwrap();
    let events: Api<Event> = Api::namespaced(client, "default");
    let list = events.list(&ListParams::default()).await.unwrap().items;
    assert_eq!(list.len(), 2, "{list:?}");
    let failed = list
        .iter()
        .find(|e| e.reason.as_deref() == Some("Failed"))
        .unwrap();
    assert_eq!(failed.series.as_ref().map(|s| s.count), Some(2));
    assert_eq!(failed.reporting_controller.as_deref(), Some("tester"));
    assert_eq!(
        failed.regarding.as_ref().unwrap().name.as_deref(),
        Some("target")
    );
    assert_eq!(failed.r#type.as_deref(), Some("Warning"));
}

#[tokio::test]
async fn dynamic_objects_through_discovery() {
    use bosun_api_types::apiextensions::v1::CustomResourceDefinition;
    use bosun_api_types::DynamicObject;
    use bosun_client::discovery::Discovery;
    let (_s, url) = start_open().await;
    let client = Client::try_from_config(Config::new(url.parse().unwrap())).unwrap();
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "metadata": {"name": "widgets.example.com"},
        "spec": {"group": "example.com", "scope": "Namespaced",
            "names": {"plural": "widgets", "kind": "Widget"},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object",
                    "x-kubernetes-preserve-unknown-fields": true}}}]}}))
    .unwrap();
    Api::<CustomResourceDefinition>::all(client.clone())
        .create(&PostParams::default(), &crd)
        .await
        .unwrap();
    let mut found = None;
    for _ in 0..100 {
        let d = Discovery::run(&client).await.unwrap();
        assert_eq!(d.resolve("", "Pod").unwrap().plural, "pods");
        assert!(!d.resolve("", "Namespace").unwrap().namespaced);
        if let Some(r) = d.resolve("example.com", "Widget") {
            found = Some(r);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let widgets = found.expect("Widget discovered");
    let (client_for_informers, client2) = (client.clone(), client.clone());
    assert_eq!(
        (widgets.plural.as_str(), widgets.api_version.as_str()),
        ("widgets", "example.com/v1")
    );
    let api: Api<DynamicObject> = Api::namespaced_with(client, "default", &widgets);
    let mut w = DynamicObject::new("example.com/v1", "Widget");
    w.metadata.name = Some("w1".into());
    w.data.insert("spec".into(), json!({"size": 3}));
    let created = api.create(&PostParams::default(), &w).await.unwrap();
    assert_eq!(created.data["spec"]["size"], 3);
    assert_eq!(
        api.list(&ListParams::default()).await.unwrap().items.len(),
        1
    );
    assert_eq!(api.get("w1").await.unwrap().kind, "Widget");
    // Dynamic informers are kept apart by resource.
    let factory = bosun_client::informer::InformerFactory::new(client_for_informers);
    let widget_informer = factory.dynamic(&widgets, Some("default"));
    let pods = Discovery::run(&client2)
        .await
        .unwrap()
        .resolve("", "Pod")
        .unwrap();
    let pod_informer = factory.dynamic(&pods, Some("default"));
    widget_informer.wait_until_ready().await;
    pod_informer.wait_until_ready().await;
    assert_eq!(widget_informer.store().len(), 1);
    assert_eq!(pod_informer.store().len(), 0);
    api.delete("w1", &DeleteParams::default()).await.unwrap();
    assert!(api.get_opt("w1").await.unwrap().is_none());
}

#[tokio::test]
async fn exec_credential_plugins_supply_the_token() {
    use std::os::unix::fs::PermissionsExt;
    let (_s, url) = start().await;
    let dir = tempfile::tempdir().unwrap();
    let plugin = dir.path().join("plugin.sh");
    std::fs::write(
        &plugin,
        "#!/bin/sh\necho run >> \"$(dirname \"$0\")/runs\"\n[ -n \"$KUBERNETES_EXEC_INFO\" ] || exit 3\n\
         echo '{\"apiVersion\":\"client.authentication.k8s.io/v1\",\"kind\":\"ExecCredential\",\
         \"status\":{\"token\":\"'\"$TOKEN\"'\",\"expirationTimestamp\":\"2999-01-01T00:00:00Z\"}}'\n",
    )
    .unwrap();
    std::fs::set_permissions(&plugin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = dir.path().join("config");
    std::fs::write(
        &path,
        format!(
            "current-context: c\nclusters: [{{name: k, cluster: {{server: '{url}'}}}}]\n\
             contexts: [{{name: c, context: {{cluster: k, user: u}}}}]\n\
             users:\n- name: u\n  user:\n    exec:\n      apiVersion: client.authentication.k8s.io/v1\n\
             \x20     command: ./plugin.sh\n      env: [{{name: TOKEN, value: t0k3n}}]\n"
        ),
    )
    .unwrap();
    let k = Kubeconfig::read(&path).unwrap();
    let client = Client::try_from_config(
        Config::from_kubeconfig(&k, &KubeconfigOptions::default()).unwrap(),
    )
    .unwrap();
    let cms: Api<ConfigMap> = Api::default_namespaced(client);
    for i in 0..3 {
        cms.create(&PostParams::default(), &cm(&format!("e{i}"), &[]))
            .await
            .unwrap();
    }
    // The token is cached until it expires: the plugin ran once.
    let runs = std::fs::read_to_string(dir.path().join("runs")).unwrap();
    assert_eq!(runs.lines().count(), 1);
}

#[tokio::test]
async fn protobuf_responses_decode_like_json() {
    let (s, url) = start_open().await;
    let client = Client::try_from_config(Config::new(url.parse().unwrap())).unwrap();
    let json_api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let proto_api = json_api.clone().protobuf();
    let created = proto_api
        .create(&PostParams::default(), &cm("pb", &[("app", "web")]))
        .await
        .unwrap();
    assert_eq!(created.metadata.labels["app"], "web");
    let via_proto = proto_api.get("pb").await.unwrap();
    let via_json = json_api.get("pb").await.unwrap();
    assert_eq!(via_proto.data, via_json.data);
    assert_eq!(via_proto.metadata.uid, via_json.metadata.uid);
    assert_eq!(
        via_proto.metadata.resource_version,
        via_json.metadata.resource_version
    );
    let list = proto_api.list(&ListParams::default()).await.unwrap();
    assert_eq!(list.items.len(), 1);
    assert!(list.metadata.resource_version.is_some());
    let patched = proto_api
        .patch(
            "pb",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"x": "1"}})),
        )
        .await
        .unwrap();
    assert_eq!(patched.data["x"], "1");
    // Errors still carry the Status.
    assert!(proto_api.get("nope").await.unwrap_err().is_not_found());
    // Replace sends a protobuf body.
    let mut changed = patched.clone();
    changed.data.insert("y".into(), "2".into());
    let replaced = proto_api
        .replace("pb", &PostParams::default(), &changed)
        .await
        .unwrap();
    assert_eq!(replaced.data["y"], "2");
    // A protobuf watch: frames decoded into typed events.
    let rv = list.metadata.resource_version.clone().unwrap();
    let mut events = proto_api
        .watch(&bosun_client::WatchParams::default(), &rv)
        .await
        .unwrap();
    let ev = events.next().await.unwrap().unwrap();
    assert_eq!(ev.r#type, "MODIFIED");
    assert_eq!(ev.object.metadata.name.as_deref(), Some("pb"));
    // An ERROR frame (a compacted version) is the server's Status.
    let current = s.store().current_revision().await.unwrap();
    s.store().compact(current).await.unwrap();
    let mut events = proto_api
        .watch(&bosun_client::WatchParams::default(), "2")
        .await
        .unwrap();
    let err = events.next().await.unwrap().unwrap_err();
    assert!(err.is_gone(), "{err}");
}
