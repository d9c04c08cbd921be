//! Secrets at rest: `EncryptingStore` passes the Store conformance suite, and an API server
//! over it keeps Secrets encrypted in the store while clients read them in the clear.

use super::{call, post};
use bosun_apiserver::encryption::{EncryptingStore, EncryptionConfig};
use bosun_apiserver::ApiServer;
use bosun_store::memory::MemoryStore;
use bosun_store::Store;
use http::{Method, StatusCode};
use serde_json::json;
use std::sync::Arc;

const CONFIG: &str = "
apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
- resources: [secrets]
  providers:
  - aesgcm: {keys: [{name: key1, secret: c2VjcmV0IGlzIHNlY3VyZSwgb3IgaXMgaXQ/Pz8/Pz8=}]}
  - identity: {}
- resources: ['*.*']
  providers:
  - secretbox: {keys: [{name: box1, secret: dGhpcnR5LXR3by1ieXRlLXNlY3JldGJveC1rZXkhISE=}]}
";

#[tokio::test]
async fn encrypting_store_passes_the_conformance_suite() {
    bosun_store::conformance::run_all(|| async {
        let config = EncryptionConfig::parse(CONFIG.as_bytes()).unwrap();
        Arc::new(EncryptingStore::new(Arc::new(MemoryStore::new()), config)) as Arc<dyn Store>
    })
    .await;
}

#[tokio::test]
async fn secrets_are_ciphertext_in_the_store_and_plaintext_to_clients() {
    let raw = Arc::new(MemoryStore::new());
    let config = EncryptionConfig::parse(CONFIG.as_bytes()).unwrap();
    let s = ApiServer::new(Arc::new(EncryptingStore::new(raw.clone(), config)));
    s.bootstrap().await.unwrap();
    let (code, _) = post(
        &s,
        "/api/v1/namespaces/default/secrets",
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db"},
               "stringData": {"password": "correct-horse-battery"}}),
    )
    .await;
    assert_eq!(code, StatusCode::CREATED);
    let (code, got) = call(
        &s,
        Method::GET,
        "/api/v1/namespaces/default/secrets/db",
        None,
        "",
    )
    .await;
    assert_eq!(code, StatusCode::OK);
    // "correct-horse-battery", base64 as the API returns it.
    assert_eq!(got["data"]["password"], "Y29ycmVjdC1ob3JzZS1iYXR0ZXJ5");
    let stored = raw
        .get("/registry/core/secrets/default/db", None)
        .await
        .unwrap()
        .unwrap();
    assert!(stored.value.starts_with(b"k8s:enc:aesgcm:v1:key1:"));
    for needle in [
        &b"correct-horse-battery"[..],
        b"Y29ycmVjdC1ob3JzZS1iYXR0ZXJ5",
        b"password",
    ] {
        assert!(!stored.value.windows(needle.len()).any(|w| w == needle));
    }
    // Other kinds fall under `*.*` and its secretbox key.
    let ns = raw
        .get("/registry/core/namespaces/default", None)
        .await
        .unwrap()
        .unwrap();
    // (The namespace was written at bootstrap, through the encrypting store as well.)
    assert!(ns.value.starts_with(b"k8s:enc:secretbox:v1:box1:"));
    // Lists and watches see plaintext as well.
    let (code, list) = call(&s, Method::GET, "/api/v1/secrets", None, "").await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(
        list["items"][0]["data"]["password"],
        "Y29ycmVjdC1ob3JzZS1iYXR0ZXJ5"
    );
}
