//! The Greeting controller example, run against an in-process API server.
#![allow(clippy::unwrap_used, missing_docs)]

use bosun_api_types::core::v1::ConfigMap;
use bosun_client::{Api, Client, Config, Patch, PatchParams, PostParams};
use bosun_examples::greeting::{self, Greeting, GreetingSpec};
use std::sync::Arc;
use std::time::Duration;

async fn eventually<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..500 {
        if cond().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn greetings_get_their_config_maps() {
    let server = bosun_apiserver::ApiServer::new(Arc::new(bosun_store::memory::MemoryStore::new()));
    server.bootstrap().await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(server.serve(listener, std::future::pending()));
    let client = Client::try_from_config(Config::new(url.parse().unwrap())).unwrap();

    greeting::install_crd(&client).await.unwrap();
    greeting::install_crd(&client).await.unwrap(); // already there: fine
    tokio::spawn(greeting::run(client.clone()));

    let greetings: Api<Greeting> = Api::namespaced(client.clone(), "default");
    let mut g = Greeting {
        spec: GreetingSpec {
            message: "hello".into(),
        },
        ..Default::default()
    };
    g.metadata.name = Some("hi".into());
    // The CRD is served within a second of its creation.
    eventually("the Greeting resource", || {
        let (greetings, g) = (greetings.clone(), g.clone());
        async move { greetings.create(&PostParams::default(), &g).await.is_ok() }
    })
    .await;

    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    eventually("the ConfigMap", || {
        let cms = cms.clone();
        async move {
            cms.get_opt("hi-greeting")
                .await
                .unwrap()
                .is_some_and(|c| c.data.get("message").map(String::as_str) == Some("hello"))
        }
    })
    .await;
    let cm = cms.get("hi-greeting").await.unwrap();
    assert_eq!(cm.metadata.owner_references[0].kind, "Greeting");
    eventually("the status", || {
        let greetings = greetings.clone();
        async move { greetings.get("hi").await.unwrap().status["configMap"] == "hi-greeting" }
    })
    .await;

    // A new message reaches the ConfigMap.
    greetings
        .patch(
            "hi",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"message": "bye"}})),
        )
        .await
        .unwrap();
    eventually("the new message", || {
        let cms = cms.clone();
        async move {
            cms.get("hi-greeting")
                .await
                .unwrap()
                .data
                .get("message")
                .map(String::as_str)
                == Some("bye")
        }
    })
    .await;
}
