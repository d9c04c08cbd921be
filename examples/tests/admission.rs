//! The team-label admission plugin in a real API server's pipeline, through the typed client.
#![allow(clippy::unwrap_used, missing_docs)]

use bosun_api_types::core::v1::{Namespace, Pod};
use bosun_apiserver::auth::Pipeline;
use bosun_client::{Api, Client, Config, PostParams};
use bosun_examples::team_label::{RequireTeam, TEAM};
use std::sync::Arc;

fn pod(name: &str, team: Option<&str>) -> Pod {
    let mut v = serde_json::json!({
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    });
    if let Some(t) = team {
        v["metadata"]["labels"] = serde_json::json!({ TEAM: t });
    }
    serde_json::from_value(v).unwrap()
}

fn team_of(p: &Pod) -> Option<String> {
    p.metadata.labels.get(TEAM).cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_need_a_team() {
    let mut pipeline = Pipeline::default();
    pipeline.admission.push(Arc::new(RequireTeam));
    let server = bosun_apiserver::ApiServer::build(
        Arc::new(bosun_store::memory::MemoryStore::new()),
        bosun_apiserver::ResourceTable::builtin(),
        bosun_apiserver::Config::default(),
        pipeline,
    );
    server.bootstrap().await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(server.serve(listener, std::future::pending()));
    let client = Client::try_from_config(Config::new(url.parse().unwrap())).unwrap();
    let pp = PostParams::default();

    // Without the label: refused, nothing stored.
    let default: Api<Pod> = Api::namespaced(client.clone(), "default");
    let err = default
        .create(&pp, &pod("anonymous", None))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(403), "{err}");
    assert!(
        err.to_string()
            .contains("the example.com/team label is required"),
        "{err}"
    );
    assert!(default.get_opt("anonymous").await.unwrap().is_none());

    // With it: lower-cased.
    let created = default
        .create(&pp, &pod("owned", Some("Blue")))
        .await
        .unwrap();
    assert_eq!(team_of(&created).as_deref(), Some("blue"));

    // In a team-NAME namespace the label is filled in.
    let ns: Namespace =
        serde_json::from_value(serde_json::json!({"metadata": {"name": "team-green"}})).unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&pp, &ns)
        .await
        .unwrap();
    let green: Api<Pod> = Api::namespaced(client.clone(), "team-green");
    let created = green.create(&pp, &pod("filled", None)).await.unwrap();
    assert_eq!(team_of(&created).as_deref(), Some("green"));

    // kube-system is left alone.
    let system: Api<Pod> = Api::namespaced(client, "kube-system");
    let created = system.create(&pp, &pod("system", None)).await.unwrap();
    assert_eq!(team_of(&created), None);
}
