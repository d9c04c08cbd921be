//! The API server in process: requests through `ApiServer::handle`, no network.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use bosun_apiserver::ApiServer;
use bosun_store::memory::MemoryStore;
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};
use std::sync::Arc;

mod admission;
mod cache;
mod encryption;
mod hostile;
mod negotiation;
mod oracle;
mod proxy;
mod tables;
mod validation;

async fn server() -> ApiServer {
    let s = ApiServer::new(Arc::new(MemoryStore::new()));
    s.bootstrap().await.unwrap();
    s
}

/// A bootstrapped server of the built-in kinds with these settings, on a memory store.
async fn server_with(config: bosun_apiserver::Config) -> ApiServer {
    let s = ApiServer::with_resources(
        Arc::new(MemoryStore::new()),
        bosun_apiserver::ResourceTable::builtin(),
        config,
    );
    s.bootstrap().await.unwrap();
    s
}

async fn call(
    s: &ApiServer,
    method: Method,
    uri: &str,
    content_type: Option<&str>,
    body: impl Into<Bytes>,
) -> (StatusCode, Value) {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    let resp = s.handle(req.body(Full::new(body.into())).unwrap()).await;
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let v = serde_json::from_slice(&bytes)
        .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, v)
}

async fn post(s: &ApiServer, uri: &str, body: Value) -> (StatusCode, Value) {
    call(
        s,
        Method::POST,
        uri,
        Some("application/json"),
        body.to_string(),
    )
    .await
}

fn cm(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"k": "v"}})
}

#[tokio::test]
async fn create_get_update_delete_with_upstream_metadata() {
    let s = server().await;
    let (code, obj) = post(&s, "/api/v1/namespaces/default/configmaps", cm("a")).await;
    assert_eq!(code, StatusCode::CREATED, "{obj}");
    assert_eq!(obj["metadata"]["namespace"], "default");
    assert!(obj["metadata"]["uid"].as_str().unwrap().len() == 36);
    assert!(obj["metadata"]["creationTimestamp"].is_string());
    let rv = obj["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_owned();

    let (code, got) = call(
        &s,
        Method::GET,
        "/api/v1/namespaces/default/configmaps/a",
        None,
        "",
    )
    .await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(got, obj);

    // Update with the current resourceVersion succeeds; the stale one is a 409 Conflict.
    let mut upd = got.clone();
    upd["data"]["k"] = json!("w");
    let (code, updated) = call(
        &s,
        Method::PUT,
        "/api/v1/namespaces/default/configmaps/a",
        Some("application/json"),
        upd.to_string(),
    )
    .await;
    assert_eq!(code, StatusCode::OK, "{updated}");
    assert_ne!(updated["metadata"]["resourceVersion"], rv);
    assert_eq!(updated["metadata"]["uid"], obj["metadata"]["uid"]);
    let (code, err) = call(
        &s,
        Method::PUT,
        "/api/v1/namespaces/default/configmaps/a",
        Some("application/json"),
        upd.to_string(),
    )
    .await;
    assert_eq!(code, StatusCode::CONFLICT);
    assert_eq!(err["reason"], "Conflict");
    assert_eq!(err["kind"], "Status");

    // Create of an existing name: 409 AlreadyExists with upstream's message.
    let (code, err) = post(&s, "/api/v1/namespaces/default/configmaps", cm("a")).await;
    assert_eq!(code, StatusCode::CONFLICT);
    assert_eq!(err["message"], "configmaps \"a\" already exists");

    let (code, _) = call(
        &s,
        Method::DELETE,
        "/api/v1/namespaces/default/configmaps/a",
        None,
        "",
    )
    .await;
    assert_eq!(code, StatusCode::OK);
    let (code, err) = call(
        &s,
        Method::GET,
        "/api/v1/namespaces/default/configmaps/a",
        None,
        "",
    )
    .await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    assert_eq!(err["message"], "configmaps \"a\" not found");
    assert_eq!(err["details"]["kind"], "configmaps");
}

#[tokio::test]
async fn bad_input_gets_a_status_and_writes_nothing() {
    let s = server().await;
    let uri = "/api/v1/namespaces/default/configmaps";
    let (code, err) = call(&s, Method::POST, uri, Some("application/json"), "{not json").await;
    assert_eq!(
        (code, err["reason"].as_str()),
        (StatusCode::BAD_REQUEST, Some("BadRequest"))
    );
    let (code, _) = call(&s, Method::POST, uri, Some("text/csv"), "a,b").await;
    assert_eq!(code, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let big = json!({"metadata": {"name": "big"}, "data": {"k": "x".repeat(4 << 20)}});
    let (code, err) = post(&s, uri, big).await;
    assert_eq!(code, StatusCode::PAYLOAD_TOO_LARGE, "{err}");
    let (code, err) = post(&s, uri, cm("Not_Valid")).await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(err["reason"], "Invalid");
    assert_eq!(err["details"]["causes"][0]["field"], "metadata.name");
    let wrong = json!({"metadata": {"name": "w"}, "data": {"k": 5}});
    let (code, err) = post(&s, uri, wrong).await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{err}");
    let (code, err) = post(&s, "/api/v1/namespaces/nope/configmaps", cm("x")).await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    assert_eq!(err["message"], "namespaces \"nope\" not found");
    let (code, list) = call(&s, Method::GET, uri, None, "").await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(
        list["items"].as_array().unwrap().len(),
        0,
        "nothing was written"
    );
}

#[tokio::test]
async fn python_style_body_without_type_takes_kind_from_path() {
    let s = server().await;
    let body = json!({"metadata": {"generateName": "gen-"}, "data": {"a": "b"}});
    let (code, obj) = call(
        &s,
        Method::POST,
        "/api/v1/namespaces/default/configmaps",
        None,
        body.to_string(),
    )
    .await;
    assert_eq!(code, StatusCode::CREATED, "{obj}");
    assert_eq!(obj["kind"], "ConfigMap");
    let name = obj["metadata"]["name"].as_str().unwrap();
    assert!(name.starts_with("gen-") && name.len() == 9, "{name}");
}

#[tokio::test]
async fn list_paginates_at_one_revision_and_filters() {
    let s = server().await;
    for i in 0..7 {
        let mut o = cm(&format!("c{i}"));
        o["metadata"]["labels"] = json!({"parity": if i % 2 == 0 { "even" } else { "odd" }});
        post(&s, "/api/v1/namespaces/default/configmaps", o).await;
    }
    let (_, page1) = call(
        &s,
        Method::GET,
        "/api/v1/namespaces/default/configmaps?limit=3",
        None,
        "",
    )
    .await;
    assert_eq!(page1["items"].as_array().unwrap().len(), 3);
    assert_eq!(page1["metadata"]["remainingItemCount"], 4);
    assert!(
        page1["items"][0].get("kind").is_none(),
        "list items carry no kind"
    );
    let token = page1["metadata"]["continue"].as_str().unwrap().to_owned();
    // A write between pages does not show up in the rest of this list.
    post(&s, "/api/v1/namespaces/default/configmaps", cm("c00")).await;
    let (_, page2) = call(
        &s,
        Method::GET,
        &format!("/api/v1/namespaces/default/configmaps?limit=10&continue={token}"),
        None,
        "",
    )
    .await;
    let names: Vec<&str> = page2["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["c3", "c4", "c5", "c6"]);
    assert_eq!(
        page2["metadata"]["resourceVersion"],
        page1["metadata"]["resourceVersion"]
    );
    let (_, odd) = call(
        &s,
        Method::GET,
        "/api/v1/configmaps?labelSelector=parity%3Dodd",
        None,
        "",
    )
    .await;
    assert_eq!(odd["items"].as_array().unwrap().len(), 3);
    let (_, one) = call(
        &s,
        Method::GET,
        "/api/v1/configmaps?fieldSelector=metadata.name%3Dc2",
        None,
        "",
    )
    .await;
    assert_eq!(one["items"].as_array().unwrap().len(), 1);
    let (code, _) = call(
        &s,
        Method::GET,
        "/api/v1/configmaps?fieldSelector=spec.nodeName%3Dx",
        None,
        "",
    )
    .await;
    assert_eq!(
        code,
        StatusCode::BAD_REQUEST,
        "configmaps have no spec.nodeName field label"
    );
}

#[tokio::test]
async fn watch_streams_changes_after_a_resource_version() {
    let s = server().await;
    let (_, a) = post(&s, "/api/v1/namespaces/default/configmaps", cm("a")).await;
    let rv = a["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_owned();
    let req = Request::builder()
        .uri(format!(
            "/api/v1/namespaces/default/configmaps?watch=1&resourceVersion={rv}"
        ))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = s.handle(req).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    post(&s, "/api/v1/namespaces/default/configmaps", cm("b")).await;
    call(
        &s,
        Method::DELETE,
        "/api/v1/namespaces/default/configmaps/a",
        None,
        "",
    )
    .await;
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let frame = body.frame().await.unwrap().unwrap();
        let data = frame.into_data().unwrap();
        for line in data.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let ev: Value = serde_json::from_slice(line).unwrap();
            seen.push((
                ev["type"].as_str().unwrap().to_owned(),
                ev["object"]["metadata"]["name"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            ));
        }
    }
    assert_eq!(
        seen,
        [
            ("ADDED".to_owned(), "b".to_owned()),
            ("DELETED".to_owned(), "a".to_owned())
        ]
    );
}

#[tokio::test]
async fn discovery_documents() {
    let s = server().await;
    let (code, v) = call(&s, Method::GET, "/version", None, "").await;
    assert_eq!((code, v["minor"].as_str()), (StatusCode::OK, Some("32")));
    let (_, core) = call(&s, Method::GET, "/api/v1", None, "").await;
    let pods = core["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "pods")
        .unwrap();
    assert_eq!(pods["namespaced"], true);
    assert_eq!(pods["shortNames"], json!(["po"]));
    let req = Request::builder()
        .uri("/apis")
        .header(
            "accept",
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json",
        )
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = s.handle(req).await;
    assert_eq!(
        resp.headers()["content-type"],
        "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
    );
    let doc: Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(doc["kind"], "APIGroupDiscoveryList");
    assert!(doc["items"]
        .as_array()
        .unwrap()
        .iter()
        .any(|g| g["metadata"]["name"] == "apps"));
}

/// 64 clients incrementing one counter with compare-and-swap updates: every increment lands
/// exactly once and every lost race is a 409.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_updates_lose_nothing() {
    let s = server().await;
    let mut o = cm("counter");
    o["data"] = json!({"n": "0"});
    post(&s, "/api/v1/namespaces/default/configmaps", o).await;
    let uri = "/api/v1/namespaces/default/configmaps/counter";
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let mut conflicts = 0;
            for _ in 0..5 {
                loop {
                    let (_, mut cur) = call(&s, Method::GET, uri, None, "").await;
                    let n: u64 = cur["data"]["n"].as_str().unwrap().parse().unwrap();
                    cur["data"]["n"] = json!((n + 1).to_string());
                    let (code, body) = call(
                        &s,
                        Method::PUT,
                        uri,
                        Some("application/json"),
                        cur.to_string(),
                    )
                    .await;
                    match code {
                        StatusCode::OK => break,
                        StatusCode::CONFLICT => conflicts += 1,
                        other => panic!("unexpected {other}: {body}"),
                    }
                }
            }
            conflicts
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let (_, cur) = call(&s, Method::GET, uri, None, "").await;
    assert_eq!(cur["data"]["n"], "320");
}

#[tokio::test]
async fn delete_preconditions_are_checked() {
    let s = server().await;
    post(&s, "/api/v1/namespaces/default/configmaps", cm("p")).await;
    let uri = "/api/v1/namespaces/default/configmaps/p";
    let body =
        json!({"kind": "DeleteOptions", "apiVersion": "v1", "preconditions": {"uid": "other"}});
    let (code, err) = call(
        &s,
        Method::DELETE,
        uri,
        Some("application/json"),
        body.to_string(),
    )
    .await;
    assert_eq!(code, StatusCode::CONFLICT);
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("Precondition failed: UID in precondition: other"),
        "{err}"
    );
    let (code, _) = call(&s, Method::GET, uri, None, "").await;
    assert_eq!(code, StatusCode::OK, "the object is still there");
}

#[tokio::test]
async fn openapi_v3_index_points_at_documents_and_v2_speaks_protobuf() {
    let s = server().await;
    let (code, index) = call(&s, Method::GET, "/openapi/v3", None, "").await;
    assert_eq!(code, StatusCode::OK);
    let url = index["paths"]["apis/apps/v1"]["serverRelativeURL"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(url.starts_with("/openapi/v3/apis/apps/v1?hash="), "{url}");
    let (code, doc) = call(&s, Method::GET, &url, None, "").await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(doc["openapi"], "3.0.0");
    assert!(doc["components"]["schemas"]["io.k8s.api.apps.v1.Deployment"].is_object());
    let (code, _) = call(&s, Method::GET, "/openapi/v3/apis/nope/v1", None, "").await;
    assert_eq!(code, StatusCode::NOT_FOUND);

    let req = Request::builder()
        .uri("/openapi/v2")
        .header(
            "accept",
            "application/com.github.proto-openapi.spec.v2@v1.0+protobuf",
        )
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = s.handle(req).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .contains("protobuf"));
    let (code, v2) = call(&s, Method::GET, "/openapi/v2", None, "").await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(v2["swagger"], "2.0");
    assert!(v2["paths"]["/api/v1/namespaces/{namespace}/pods/{name}"]["patch"].is_object());
}

#[tokio::test]
async fn patches_json_strategic_and_field_validation() {
    let s = server().await;
    let dep = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "d"},
        "spec": {"selector": {"matchLabels": {"a": "b"}},
                 "template": {"metadata": {"labels": {"a": "b"}},
                              "spec": {"containers": [{"name": "c1", "image": "x"}]}}}});
    let (code, _) = post(&s, "/apis/apps/v1/namespaces/default/deployments", dep).await;
    assert_eq!(code, StatusCode::CREATED);
    let uri = "/apis/apps/v1/namespaces/default/deployments/d";
    let smp =
        json!({"spec": {"template": {"spec": {"containers": [{"name": "c2", "image": "y"}]}}}});
    let (code, d) = call(
        &s,
        Method::PATCH,
        uri,
        Some("application/strategic-merge-patch+json"),
        smp.to_string(),
    )
    .await;
    assert_eq!(code, StatusCode::OK, "{d}");
    assert_eq!(d["spec"]["template"]["spec"]["containers"][1]["name"], "c2");
    assert_eq!(d["metadata"]["generation"], 2);
    let jp = json!([{"op": "add", "path": "/spec/replicas", "value": 4}]);
    let (code, d) = call(
        &s,
        Method::PATCH,
        uri,
        Some("application/json-patch+json"),
        jp.to_string(),
    )
    .await;
    assert_eq!(code, StatusCode::OK, "{d}");
    assert_eq!(d["spec"]["replicas"], 4);
    let (code, e) = call(
        &s,
        Method::PATCH,
        uri,
        Some("application/json-patch+json"),
        r#"[{"op":"test","path":"/spec/replicas","value":5}]"#,
    )
    .await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{e}");

    // fieldValidation: Strict rejects unknown fields, Warn (default) keeps going with a warning.
    let typo =
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "t"}, "dataz": {}});
    let (code, e) = post(
        &s,
        "/api/v1/namespaces/default/configmaps?fieldValidation=Strict",
        typo.clone(),
    )
    .await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert!(e["message"]
        .as_str()
        .unwrap()
        .contains("strict decoding error: unknown field \"dataz\""));
    let req = Request::builder()
        .method(Method::POST)
        .uri("/api/v1/namespaces/default/configmaps")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(typo.to_string())))
        .unwrap();
    let resp = s.handle(req).await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(
        resp.headers()["warning"].to_str().unwrap(),
        "299 - \"unknown field \\\"dataz\\\"\""
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_get_unique_cluster_ips_and_node_ports_that_survive_repair() {
    let store: Arc<dyn bosun_store::Store> = Arc::new(MemoryStore::new());
    let s = ApiServer::new(Arc::clone(&store));
    s.bootstrap().await.unwrap();
    let (code, k) = call(
        &s,
        Method::GET,
        "/api/v1/namespaces/default/services/kubernetes",
        None,
        "",
    )
    .await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(k["spec"]["clusterIP"], "10.96.0.1");
    let mut tasks = Vec::new();
    for i in 0..40 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": format!("s{i}")},
                "spec": {"type": "NodePort", "ports": [{"port": 80}]}});
            let (code, v) = post(&s, "/api/v1/namespaces/default/services", svc).await;
            assert_eq!(code, StatusCode::CREATED, "{v}");
            (
                v["spec"]["clusterIP"].as_str().unwrap().to_owned(),
                v["spec"]["ports"][0]["nodePort"].as_i64().unwrap(),
            )
        }));
    }
    let mut ips = std::collections::HashSet::new();
    let mut ports = std::collections::HashSet::new();
    for t in tasks {
        let (ip, port) = t.await.unwrap();
        assert!(ip.starts_with("10."), "{ip}");
        assert!((30000..=32767).contains(&port));
        assert!(ips.insert(ip));
        assert!(ports.insert(port));
    }
    // Asking for a taken IP or port is a 422 naming the field; a free one is granted.
    let taken_port = *ports.iter().next().unwrap();
    let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "dup"},
        "spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": taken_port}]}});
    let (code, e) = post(&s, "/api/v1/namespaces/default/services", svc).await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    assert!(e["message"]
        .as_str()
        .unwrap()
        .contains("provided port is already allocated"));
    let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "fixed"},
        "spec": {"clusterIP": "10.96.0.10", "ports": [{"port": 53, "protocol": "UDP"}]}});
    let (code, v) = post(&s, "/api/v1/namespaces/default/services", svc.clone()).await;
    assert_eq!(code, StatusCode::CREATED, "{v}");
    let mut again = svc;
    again["metadata"]["name"] = json!("fixed2");
    let (code, _) = post(&s, "/api/v1/namespaces/default/services", again.clone()).await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);
    // Deleting frees the IP; a PUT without clusterIP keeps it; changing it is refused.
    let (code, _) = call(
        &s,
        Method::DELETE,
        "/api/v1/namespaces/default/services/fixed",
        None,
        "",
    )
    .await;
    assert_eq!(code, StatusCode::OK);
    let (code, v) = post(&s, "/api/v1/namespaces/default/services", again).await;
    assert_eq!(code, StatusCode::CREATED, "{v}");
    let mut put = v.clone();
    put["spec"].as_object_mut().unwrap().remove("clusterIP");
    put["spec"].as_object_mut().unwrap().remove("clusterIPs");
    let (code, v2) = call(
        &s,
        Method::PUT,
        "/api/v1/namespaces/default/services/fixed2",
        Some("application/json"),
        put.to_string(),
    )
    .await;
    assert_eq!(code, StatusCode::OK, "{v2}");
    assert_eq!(v2["spec"]["clusterIP"], "10.96.0.10");
    let mut change = v2.clone();
    change["spec"]["clusterIP"] = json!("10.96.0.11");
    change["spec"]["clusterIPs"] = json!(["10.96.0.11"]);
    let (code, _) = call(
        &s,
        Method::PUT,
        "/api/v1/namespaces/default/services/fixed2",
        Some("application/json"),
        change.to_string(),
    )
    .await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);

    // A stray allocation (a crash between claim and write) is freed by repair on start, and
    // held ones stay held.
    store
        .create(
            "/registry/bosun/serviceips/10.96.0.99",
            bytes::Bytes::from_static(b"x/y"),
        )
        .await
        .unwrap();
    let s2 = ApiServer::new(Arc::clone(&store));
    s2.bootstrap().await.unwrap();
    assert!(store
        .get("/registry/bosun/serviceips/10.96.0.99", None)
        .await
        .unwrap()
        .is_none());
    assert!(store
        .get("/registry/bosun/serviceips/10.96.0.10", None)
        .await
        .unwrap()
        .is_some());
}

#[tokio::test]
async fn scale_subresource_reads_and_writes_replicas() {
    let s = server().await;
    let dep = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
        "spec": {"selector": {"matchLabels": {"a": "b"}},
                 "template": {"metadata": {"labels": {"a": "b"}},
                              "spec": {"containers": [{"name": "c", "image": "x"}]}}}});
    let (code, _) = post(&s, "/apis/apps/v1/namespaces/default/deployments", dep).await;
    assert_eq!(code, StatusCode::CREATED);
    let uri = "/apis/apps/v1/namespaces/default/deployments/d/scale";
    let (code, sc) = call(&s, Method::GET, uri, None, "").await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(sc["kind"], "Scale");
    assert_eq!(sc["apiVersion"], "autoscaling/v1");
    assert_eq!(sc["spec"]["replicas"], 1);
    assert_eq!(sc["status"]["selector"], "a=b");
    let mut put = sc.clone();
    put["spec"]["replicas"] = json!(3);
    let (code, sc2) = call(
        &s,
        Method::PUT,
        uri,
        Some("application/json"),
        put.to_string(),
    )
    .await;
    assert_eq!(code, StatusCode::OK, "{sc2}");
    assert_eq!(sc2["spec"]["replicas"], 3);
    // The stale resourceVersion of the first read is a conflict.
    let (code, _) = call(
        &s,
        Method::PUT,
        uri,
        Some("application/json"),
        put.to_string(),
    )
    .await;
    assert_eq!(code, StatusCode::CONFLICT);
    let (code, sc3) = call(
        &s,
        Method::PATCH,
        uri,
        Some("application/merge-patch+json"),
        r#"{"spec":{"replicas":5}}"#,
    )
    .await;
    assert_eq!(code, StatusCode::OK, "{sc3}");
    let (_, d) = call(
        &s,
        Method::GET,
        "/apis/apps/v1/namespaces/default/deployments/d",
        None,
        "",
    )
    .await;
    assert_eq!(d["spec"]["replicas"], 5);
    assert_eq!(d["metadata"]["generation"], 3);
    let (code, _) = call(
        &s,
        Method::PATCH,
        uri,
        Some("application/merge-patch+json"),
        r#"{"spec":{"replicas":-1}}"#,
    )
    .await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn yaml_bodies_are_read_and_bad_yaml_is_a_400() {
    let s = server().await;
    let yaml = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: from-yaml\n  labels: {a: b}\ndata:\n  n: \"1\"\n";
    let (code, v) = call(
        &s,
        Method::POST,
        "/api/v1/namespaces/default/configmaps",
        Some("application/yaml"),
        yaml,
    )
    .await;
    assert_eq!(code, StatusCode::CREATED, "{v}");
    assert_eq!(v["metadata"]["labels"]["a"], "b");
    assert_eq!(v["data"]["n"], "1");
    let (code, e) = call(
        &s,
        Method::POST,
        "/api/v1/namespaces/default/configmaps",
        Some("application/yaml"),
        "metadata: [unclosed",
    )
    .await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert!(
        e["message"].as_str().unwrap().contains("not valid YAML"),
        "{e}"
    );
    let (code, _) = call(
        &s,
        Method::POST,
        "/api/v1/namespaces/default/configmaps",
        Some("application/yaml"),
        "a: 1\n---\nb: 2\n",
    )
    .await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    // A billion-laughs body is refused, not expanded.
    let mut laughs = String::from("a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for i in 1..12 {
        let p = i - 1;
        laughs.push_str(&format!(
            "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
        ));
    }
    let (code, e) = call(
        &s,
        Method::POST,
        "/api/v1/namespaces/default/configmaps",
        Some("application/yaml"),
        laughs,
    )
    .await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{e}");
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
    #[test]
    fn yaml_decoding_never_panics(text in "[a-z:{}\\[\\], \\n\"'&*!-]{0,60}") {
        let _ = bosun_apiserver::object::yaml_to_json(text.as_bytes());
    }
}

#[tokio::test]
async fn server_side_apply_tracks_managers_and_reports_conflicts() {
    let s = server().await;
    let uri = "/api/v1/namespaces/default/configmaps/ssa";
    let apply = |manager: &str, force: bool, body: Value| {
        let s = s.clone();
        let uri = format!("{uri}?fieldManager={manager}&force={force}");
        async move {
            call(
                &s,
                Method::PATCH,
                &uri,
                Some("application/apply-patch+yaml"),
                body.to_string(),
            )
            .await
        }
    };
    // Without a field manager: 422 on PatchOptions.
    let (code, e) = call(
        &s,
        Method::PATCH,
        uri,
        Some("application/apply-patch+yaml"),
        "{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\"}",
    )
    .await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    assert!(e["message"]
        .as_str()
        .unwrap()
        .starts_with("PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value"));
    // Apply creates; YAML bodies work.
    let (code, v) = call(
        &s,
        Method::PATCH,
        &format!("{uri}?fieldManager=alice"),
        Some("application/apply-patch+yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ssa\ndata:\n  a: '1'\n  b: '2'\n",
    )
    .await;
    assert_eq!(code, StatusCode::CREATED, "{v}");
    assert_eq!(v["metadata"]["managedFields"][0]["manager"], "alice");
    assert_eq!(v["metadata"]["managedFields"][0]["operation"], "Apply");
    assert_eq!(
        v["metadata"]["managedFields"][0]["fieldsV1"],
        json!({"f:data": {"f:a": {}, "f:b": {}}})
    );
    // bob changes a with a merge patch: he manages it now (an Update entry).
    let (code, v) = call(
        &s,
        Method::PATCH,
        &format!("{uri}?fieldManager=bob"),
        Some("application/merge-patch+json"),
        r#"{"data":{"a":"9"}}"#,
    )
    .await;
    assert_eq!(code, StatusCode::OK, "{v}");
    // alice re-applies a=1: conflict with bob, with a cause naming the field.
    let cfg = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa"}, "data": {"a": "1"}});
    let (code, e) = apply("alice", false, cfg.clone()).await;
    assert_eq!(code, StatusCode::CONFLICT, "{e}");
    assert_eq!(
        e["message"],
        "Apply failed with 1 conflict: conflict with \"bob\" using v1: .data.a"
    );
    assert_eq!(e["details"]["causes"][0]["reason"], "FieldManagerConflict");
    assert_eq!(e["details"]["causes"][0]["field"], ".data.a");
    // Forced: a is alice's again, and b (no longer in her configuration) is removed.
    let (code, v) = apply("alice", true, cfg).await;
    assert_eq!(code, StatusCode::OK, "{v}");
    assert_eq!(v["data"], json!({"a": "1"}));
    let managers: Vec<&str> = v["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["manager"].as_str())
        .collect();
    assert_eq!(managers, ["alice"]);
}

fn widget_crd() -> Value {
    json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {"group": "example.com", "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget",
                      "shortNames": ["wd"], "categories": ["all"]},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "subresources": {"status": {}},
                "additionalPrinterColumns": [
                    {"name": "Size", "type": "integer", "jsonPath": ".spec.size"},
                    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}],
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "spec": {"type": "object", "required": ["size"], "properties": {
                        "size": {"type": "integer", "minimum": 1},
                        "color": {"type": "string", "default": "blue"}}},
                    "status": {"type": "object", "properties": {"ready": {"type": "boolean"}}}}}}}]}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_resource_definitions_are_served_validated_and_removed() {
    let s = server().await;
    let (code, v) = post(
        &s,
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
        widget_crd(),
    )
    .await;
    assert_eq!(code, StatusCode::CREATED, "{v}");
    // Served within a second.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
    loop {
        let (code, _) = call(&s, Method::GET, "/apis/example.com/v1", None, "").await;
        if code == StatusCode::OK {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "CRD not served within a second"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let (_, list) = call(&s, Method::GET, "/apis/example.com/v1", None, "").await;
    assert_eq!(list["resources"][0]["shortNames"], json!(["wd"]));
    // Created objects are pruned and defaulted; invalid ones are 422.
    let w = json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w1"},
        "spec": {"size": 3, "junk": true}, "status": {"ready": true}});
    let (code, v) = post(&s, "/apis/example.com/v1/namespaces/default/widgets", w).await;
    assert_eq!(code, StatusCode::CREATED, "{v}");
    assert_eq!(v["spec"], json!({"size": 3, "color": "blue"}));
    assert!(
        v.get("status").is_none(),
        "status is ignored on create with a status subresource"
    );
    assert_eq!(v["metadata"]["generation"], 1);
    let bad = json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w2"},
        "spec": {"size": 0}});
    let (code, e) = post(&s, "/apis/example.com/v1/namespaces/default/widgets", bad).await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    assert!(e["message"].as_str().unwrap().contains("spec.size"), "{e}");
    // The status subresource changes only status.
    let (_, cur) = call(
        &s,
        Method::GET,
        "/apis/example.com/v1/namespaces/default/widgets/w1",
        None,
        "",
    )
    .await;
    let mut st = cur.clone();
    st["status"] = json!({"ready": true});
    st["spec"]["size"] = json!(9);
    let (code, v) = call(
        &s,
        Method::PUT,
        "/apis/example.com/v1/namespaces/default/widgets/w1/status",
        Some("application/json"),
        st.to_string(),
    )
    .await;
    assert_eq!(code, StatusCode::OK, "{v}");
    assert_eq!(
        (v["status"]["ready"].clone(), v["spec"]["size"].clone()),
        (json!(true), json!(3))
    );
    // Tables use the printer columns.
    let req = Request::builder()
        .uri("/apis/example.com/v1/namespaces/default/widgets")
        .header("accept", "application/json;as=Table;v=v1;g=meta.k8s.io")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let t: Value = serde_json::from_slice(
        &s.handle(req)
            .await
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes(),
    )
    .unwrap();
    let names: Vec<&str> = t["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Name", "Size", "Age"]);
    assert_eq!(t["rows"][0]["cells"][0], "w1");
    assert_eq!(t["rows"][0]["cells"][1], 3);
    // The CRD is Established, and its kind is in the OpenAPI v3 document.
    let (_, crd) = call(
        &s,
        Method::GET,
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.example.com",
        None,
        "",
    )
    .await;
    assert!(
        crd["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["type"] == "Established" && c["status"] == "True"),
        "{crd}"
    );
    let (code, doc) = call(&s, Method::GET, "/openapi/v3/apis/example.com/v1", None, "").await;
    assert_eq!(code, StatusCode::OK);
    assert!(
        doc["components"]["schemas"]["com.example.v1.Widget"]["properties"]["spec"].is_object()
    );
    // Deleting the CRD stops serving it and removes its objects.
    let (code, _) = call(
        &s,
        Method::DELETE,
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.example.com",
        None,
        "",
    )
    .await;
    assert_eq!(code, StatusCode::OK);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        let (code, _) = call(
            &s,
            Method::GET,
            "/apis/example.com/v1/namespaces/default/widgets",
            None,
            "",
        )
        .await;
        if code == StatusCode::NOT_FOUND {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "CRD still served after deletion"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let left = s
        .store()
        .range(bosun_store::RangeRequest::prefix("/registry/example.com/"))
        .await
        .unwrap();
    assert!(left.kvs.is_empty());
}

#[tokio::test]
async fn pods_on_nodes_are_deleted_gracefully() {
    let s = server().await;
    let pod = |name: &str, node: Option<&str>| {
        let mut p = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}});
        if let Some(n) = node {
            p["spec"]["nodeName"] = json!(n);
        }
        p
    };
    let (code, _) = post(
        &s,
        "/api/v1/namespaces/default/pods",
        pod("bound", Some("node-1")),
    )
    .await;
    assert_eq!(code, StatusCode::CREATED);
    let (code, _) = post(&s, "/api/v1/namespaces/default/pods", pod("unbound", None)).await;
    assert_eq!(code, StatusCode::CREATED);
    // Unscheduled: gone at once.
    let (code, _) = call(
        &s,
        Method::DELETE,
        "/api/v1/namespaces/default/pods/unbound",
        None,
        "",
    )
    .await;
    assert_eq!(code, StatusCode::OK);
    let (code, _) = call(
        &s,
        Method::GET,
        "/api/v1/namespaces/default/pods/unbound",
        None,
        "",
    )
    .await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    // On a node: terminating for its grace period (30 s by default), until deleted with grace 0.
    let (code, v) = call(
        &s,
        Method::DELETE,
        "/api/v1/namespaces/default/pods/bound",
        None,
        "",
    )
    .await;
    assert_eq!(code, StatusCode::OK, "{v}");
    assert_eq!(v["metadata"]["deletionGracePeriodSeconds"], 30);
    assert!(v["metadata"]["deletionTimestamp"].is_string());
    let (code, _) = call(
        &s,
        Method::GET,
        "/api/v1/namespaces/default/pods/bound",
        None,
        "",
    )
    .await;
    assert_eq!(code, StatusCode::OK);
    let (code, v) = call(
        &s,
        Method::DELETE,
        "/api/v1/namespaces/default/pods/bound",
        Some("application/json"),
        r#"{"gracePeriodSeconds":5}"#,
    )
    .await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(
        v["metadata"]["deletionGracePeriodSeconds"], 5,
        "a shorter grace period shortens it"
    );
    let (code, _) = call(
        &s,
        Method::DELETE,
        "/api/v1/namespaces/default/pods/bound?gracePeriodSeconds=0",
        None,
        "",
    )
    .await;
    assert_eq!(code, StatusCode::OK);
    let (code, _) = call(
        &s,
        Method::GET,
        "/api/v1/namespaces/default/pods/bound",
        None,
        "",
    )
    .await;
    assert_eq!(code, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn metrics_count_requests_and_watchers() {
    let s = server().await;
    let _ = post(&s, "/api/v1/namespaces/default/configmaps", cm("m1")).await;
    let _ = call(
        &s,
        Method::GET,
        "/api/v1/namespaces/default/configmaps/m1",
        None,
        "",
    )
    .await;
    let _ = call(
        &s,
        Method::GET,
        "/api/v1/namespaces/default/configmaps/nope",
        None,
        "",
    )
    .await;
    let req = Request::builder()
        .uri("/api/v1/namespaces/default/configmaps?watch=true")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let watch = s.handle(req).await;
    let (code, text) = call(&s, Method::GET, "/metrics", None, "").await;
    assert_eq!(code, StatusCode::OK);
    let text = text.as_str().unwrap().to_owned();
    for want in [
        "apiserver_request_total{code=\"201\",component=\"apiserver\",group=\"\",resource=\"configmaps\",scope=\"namespace\",subresource=\"\",verb=\"POST\",version=\"v1\",dry_run=\"\"} 1",
        "apiserver_request_total{code=\"404\",component=\"apiserver\",group=\"\",resource=\"configmaps\",scope=\"resource\",subresource=\"\",verb=\"GET\",version=\"v1\",dry_run=\"\"} 1",
        "apiserver_registered_watchers{group=\"\",kind=\"ConfigMap\",version=\"v1\"} 1",
        "apiserver_storage_request_duration_seconds_count{operation=\"create\"}",
    ] {
        assert!(text.contains(want), "missing {want} in\n{text}");
    }
    drop(watch);
}

#[tokio::test]
async fn over_the_inflight_limit_is_429_but_watches_still_open() {
    let config = bosun_apiserver::Config {
        max_requests_inflight: 0,
        ..bosun_apiserver::Config::default()
    };
    let s = ApiServer::with_resources(
        Arc::new(MemoryStore::new()),
        bosun_apiserver::ResourceTable::builtin(),
        config,
    );
    s.bootstrap().await.unwrap();
    let resp = s
        .handle(
            Request::builder()
                .uri("/api/v1/namespaces")
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(resp.headers()["retry-after"], "1");
    let body: Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(body["reason"], "TooManyRequests");
    let watch = s
        .handle(
            Request::builder()
                .uri("/api/v1/namespaces?watch=true")
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await;
    assert_eq!(watch.status(), StatusCode::OK);
}

#[tokio::test]
async fn binding_assigns_a_node_once_and_eviction_honours_budgets() {
    let s = server().await;
    let pod = |name: &str| {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": "db"}},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}})
    };
    for n in ["a", "b"] {
        let (code, _) = post(&s, "/api/v1/namespaces/default/pods", pod(n)).await;
        assert_eq!(code, StatusCode::CREATED);
    }
    let binding = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "a"},
        "target": {"apiVersion": "v1", "kind": "Node", "name": "node-1"}});
    let (code, v) = post(
        &s,
        "/api/v1/namespaces/default/pods/a/binding",
        binding.clone(),
    )
    .await;
    assert_eq!(code, StatusCode::CREATED, "{v}");
    assert_eq!(v["status"], "Success");
    let (_, a) = call(
        &s,
        Method::GET,
        "/api/v1/namespaces/default/pods/a",
        None,
        "",
    )
    .await;
    assert_eq!(a["spec"]["nodeName"], "node-1");
    assert!(a["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["type"] == "PodScheduled"));
    let (code, e) = post(&s, "/api/v1/namespaces/default/pods/a/binding", binding).await;
    assert_eq!(code, StatusCode::CONFLICT);
    assert!(e["message"]
        .as_str()
        .unwrap()
        .contains("already assigned to node \"node-1\""));

    // Running pod a, protected by a budget allowing no disruption: 429.
    let (_, mut running) = call(
        &s,
        Method::GET,
        "/api/v1/namespaces/default/pods/a",
        None,
        "",
    )
    .await;
    running["status"]["phase"] = json!("Running");
    let (code, _) = call(
        &s,
        Method::PUT,
        "/api/v1/namespaces/default/pods/a/status",
        Some("application/json"),
        running.to_string(),
    )
    .await;
    assert_eq!(code, StatusCode::OK);
    let pdb = json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "db"},
        "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "db"}}}});
    let (code, _) = post(
        &s,
        "/apis/policy/v1/namespaces/default/poddisruptionbudgets",
        pdb,
    )
    .await;
    assert_eq!(code, StatusCode::CREATED);
    let eviction =
        json!({"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "a"}});
    let (code, e) = post(
        &s,
        "/api/v1/namespaces/default/pods/a/eviction",
        eviction.clone(),
    )
    .await;
    assert_eq!(code, StatusCode::TOO_MANY_REQUESTS, "{e}");
    assert_eq!(e["details"]["causes"][0]["reason"], "DisruptionBudget");
    // The budget's controller allows one disruption: the eviction spends it.
    let (_, mut budget) = call(
        &s,
        Method::GET,
        "/apis/policy/v1/namespaces/default/poddisruptionbudgets/db",
        None,
        "",
    )
    .await;
    budget["status"]["disruptionsAllowed"] = json!(1);
    let (code, _) = call(
        &s,
        Method::PUT,
        "/apis/policy/v1/namespaces/default/poddisruptionbudgets/db/status",
        Some("application/json"),
        budget.to_string(),
    )
    .await;
    assert_eq!(code, StatusCode::OK);
    let (code, v) = post(&s, "/api/v1/namespaces/default/pods/a/eviction", eviction).await;
    assert_eq!(code, StatusCode::CREATED, "{v}");
    let (_, a) = call(
        &s,
        Method::GET,
        "/api/v1/namespaces/default/pods/a",
        None,
        "",
    )
    .await;
    assert!(
        a["metadata"]["deletionTimestamp"].is_string(),
        "evicted pod on a node terminates gracefully"
    );
    let (_, budget) = call(
        &s,
        Method::GET,
        "/apis/policy/v1/namespaces/default/poddisruptionbudgets/db",
        None,
        "",
    )
    .await;
    assert_eq!(budget["status"]["disruptionsAllowed"], 0);
    // A pending pod is evicted without consulting budgets.
    let (code, _) = post(
        &s,
        "/api/v1/namespaces/default/pods/b/eviction",
        json!({"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "b"}}),
    )
    .await;
    assert_eq!(code, StatusCode::CREATED);
    let (code, _) = call(
        &s,
        Method::GET,
        "/api/v1/namespaces/default/pods/b",
        None,
        "",
    )
    .await;
    assert_eq!(code, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_resources_scale_through_their_crd_paths() {
    let s = server().await;
    let mut crd = widget_crd();
    crd["metadata"]["name"] = json!("gadgets.example.org");
    crd["spec"]["group"] = json!("example.org");
    crd["spec"]["names"] = json!({"plural": "gadgets", "singular": "gadget", "kind": "Gadget"});
    crd["spec"]["versions"][0]["subresources"]["scale"] = json!({
        "specReplicasPath": ".spec.size", "statusReplicasPath": ".status.count",
        "labelSelectorPath": ".status.selector"});
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"] = json!({
        "type": "object", "properties": {"count": {"type": "integer"}, "selector": {"type": "string"}}});
    let (code, v) = post(
        &s,
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
        crd,
    )
    .await;
    assert_eq!(code, StatusCode::CREATED, "{v}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
    while call(&s, Method::GET, "/apis/example.org/v1", None, "")
        .await
        .0
        != StatusCode::OK
    {
        assert!(std::time::Instant::now() < deadline, "CRD not served");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let g = json!({"apiVersion": "example.org/v1", "kind": "Gadget", "metadata": {"name": "g"}, "spec": {"size": 2}});
    let (code, _) = post(&s, "/apis/example.org/v1/namespaces/default/gadgets", g).await;
    assert_eq!(code, StatusCode::CREATED);
    let uri = "/apis/example.org/v1/namespaces/default/gadgets/g/scale";
    let (code, sc) = call(&s, Method::GET, uri, None, "").await;
    assert_eq!(code, StatusCode::OK, "{sc}");
    assert_eq!(sc["spec"]["replicas"], 2);
    let (code, sc) = call(
        &s,
        Method::PATCH,
        uri,
        Some("application/merge-patch+json"),
        r#"{"spec":{"replicas":7}}"#,
    )
    .await;
    assert_eq!(code, StatusCode::OK, "{sc}");
    let (_, g) = call(
        &s,
        Method::GET,
        "/apis/example.org/v1/namespaces/default/gadgets/g",
        None,
        "",
    )
    .await;
    assert_eq!(g["spec"]["size"], 7);
}

mod seams {
    //! A second implementation of each pipeline seam, proving them: a read-mostly authorizer
    //! and an admission plugin that labels and refuses.
    use super::*;
    use bosun_apiserver::auth::{
        AdmissionPlugin, AdmissionRequest, Authorizer, Decision, Pipeline, RequestInfo, UserInfo,
    };
    use bosun_apiserver::ApiError;

    struct NoSecrets;

    #[async_trait::async_trait]
    impl Authorizer for NoSecrets {
        async fn authorize(&self, _: &UserInfo, req: &RequestInfo<'_>) -> Decision {
            if req.resource == "secrets" && req.verb != "list" {
                Decision::Deny("secrets are off limits".into())
            } else {
                Decision::Allow
            }
        }
    }

    struct Stamp;

    #[async_trait::async_trait]
    impl AdmissionPlugin for Stamp {
        fn name(&self) -> &str {
            "Stamp"
        }
        async fn mutate(
            &self,
            req: &AdmissionRequest<'_>,
            obj: &mut bosun_apiserver::object::Object,
        ) -> Result<(), ApiError> {
            if let Some(Value::Object(meta)) = obj.get_mut("metadata") {
                let labels = meta.entry("labels").or_insert_with(|| json!({}));
                labels["stamped-by"] = json!(req.user.name);
            }
            Ok(())
        }
        async fn validate(
            &self,
            _: &AdmissionRequest<'_>,
            obj: &bosun_apiserver::object::Object,
        ) -> Result<(), ApiError> {
            if obj["metadata"]["name"] == "forbidden" {
                return Err(ApiError {
                    code: 403,
                    reason: "Forbidden",
                    message: "Stamp refuses this name".into(),
                    details: None,
                });
            }
            Ok(())
        }
    }

    #[tokio::test]
    async fn custom_authorizer_and_admission_plugin_take_effect() {
        let mut pipeline = Pipeline {
            authorizer: Arc::new(NoSecrets),
            ..Pipeline::default()
        };
        pipeline.admission.push(Arc::new(Stamp));
        let s = ApiServer::build(
            Arc::new(MemoryStore::new()),
            bosun_apiserver::ResourceTable::builtin(),
            bosun_apiserver::Config::default(),
            pipeline,
        );
        s.bootstrap().await.unwrap();
        let (code, e) = call(
            &s,
            Method::GET,
            "/api/v1/namespaces/default/secrets/x",
            None,
            "",
        )
        .await;
        assert_eq!(code, StatusCode::FORBIDDEN);
        assert_eq!(
            e["message"],
            "secrets \"x\" is forbidden: User \"admin\" cannot get resource \"secrets\" in API group \"\" in the namespace \"default\": secrets are off limits"
        );
        let (code, _) = call(
            &s,
            Method::GET,
            "/api/v1/namespaces/default/secrets",
            None,
            "",
        )
        .await;
        assert_eq!(code, StatusCode::OK);
        let (code, v) = post(&s, "/api/v1/namespaces/default/configmaps", cm("ok")).await;
        assert_eq!(code, StatusCode::CREATED);
        assert_eq!(v["metadata"]["labels"]["stamped-by"], "admin");
        let (code, e) = post(&s, "/api/v1/namespaces/default/configmaps", cm("forbidden")).await;
        assert_eq!(code, StatusCode::FORBIDDEN, "{e}");
        let (code, _) = call(
            &s,
            Method::GET,
            "/api/v1/namespaces/default/configmaps/forbidden",
            None,
            "",
        )
        .await;
        assert_eq!(
            code,
            StatusCode::NOT_FOUND,
            "a refused create writes nothing"
        );
        // kubectl auth can-i asks the same authorizer.
        let review = json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
            "spec": {"resourceAttributes": {"namespace": "default", "verb": "get", "resource": "secrets"}}});
        let (code, v) = post(
            &s,
            "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
            review,
        )
        .await;
        assert_eq!(code, StatusCode::CREATED, "{v}");
        assert_eq!(v["status"]["allowed"], false);
        assert_eq!(v["status"]["reason"], "secrets are off limits");
    }
}

#[tokio::test]
async fn audit_log_records_every_resource_request() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit").join("audit.log");
    let config = bosun_apiserver::Config {
        audit_log_path: Some(path.clone()),
        ..Default::default()
    };
    let s = ApiServer::with_resources(
        Arc::new(MemoryStore::new()),
        bosun_apiserver::ResourceTable::builtin(),
        config,
    );
    s.bootstrap().await.unwrap();
    post(&s, "/api/v1/namespaces/default/configmaps", cm("a")).await;
    call(
        &s,
        Method::GET,
        "/api/v1/namespaces/default/configmaps/nope",
        None,
        "",
    )
    .await;
    let mut events: Vec<Value> = Vec::new();
    for _ in 0..100 {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        events = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        if events.len() >= 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(events.len(), 2, "{events:?}");
    let create = &events[0];
    assert_eq!(create["apiVersion"], "audit.k8s.io/v1");
    assert_eq!(create["kind"], "Event");
    assert_eq!(create["level"], "Metadata");
    assert_eq!(create["stage"], "ResponseComplete");
    assert_eq!(create["verb"], "create");
    assert_eq!(create["user"]["username"], "admin");
    assert_eq!(
        create["requestURI"],
        "/api/v1/namespaces/default/configmaps"
    );
    assert_eq!(
        create["objectRef"],
        json!({"resource": "configmaps", "namespace": "default", "apiVersion": "v1"})
    );
    assert_eq!(create["responseStatus"]["code"], 201);
    assert_eq!(events[1]["verb"], "get");
    assert_eq!(events[1]["objectRef"]["name"], "nope");
    assert_eq!(events[1]["responseStatus"]["code"], 404);
}

/// An audit policy: secrets at Metadata (never their bodies), configmap writes with their
/// request and response, reads of events not at all, the rest at Metadata; the first matching
/// rule decides.
#[tokio::test]
async fn audit_policy_sets_each_requests_level() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let policy = bosun_apiserver::audit::AuditPolicy::parse(
        br#"
apiVersion: audit.k8s.io/v1
kind: Policy
rules:
- level: Metadata
  resources: [{group: "", resources: [secrets]}]
- level: RequestResponse
  verbs: [create, update, patch]
  resources: [{group: "", resources: [configmaps]}]
- level: None
  resources: [{group: "", resources: [events, configmaps]}]
- level: Metadata
"#,
    )
    .unwrap();
    let config = bosun_apiserver::Config {
        audit_log_path: Some(path.clone()),
        audit_policy: Some(Arc::new(policy)),
        ..Default::default()
    };
    let s = ApiServer::with_resources(
        Arc::new(MemoryStore::new()),
        bosun_apiserver::ResourceTable::builtin(),
        config,
    );
    s.bootstrap().await.unwrap();
    post(&s, "/api/v1/namespaces/default/configmaps", cm("logged")).await;
    call(
        &s,
        Method::GET,
        "/api/v1/namespaces/default/configmaps/logged",
        None,
        "",
    )
    .await;
    post(
        &s,
        "/api/v1/namespaces/default/secrets",
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "stringData": {"k": "hush"}}),
    )
    .await;
    call(&s, Method::GET, "/api/v1/namespaces/default/pods", None, "").await;
    let mut events: Vec<Value> = Vec::new();
    for _ in 0..100 {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        events = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        if events.len() >= 3 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // The configmap read is not logged (level None).
    assert_eq!(events.len(), 3, "{events:?}");
    assert_eq!(events[0]["level"], "RequestResponse");
    assert_eq!(events[0]["requestObject"]["metadata"]["name"], "logged");
    assert_eq!(
        events[0]["responseObject"]["metadata"]["uid"]
            .as_str()
            .map(str::len),
        Some(36)
    );
    assert_eq!(events[1]["level"], "Metadata");
    assert_eq!(events[1]["objectRef"]["resource"], "secrets");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(!text.contains("hush") && !text.contains("aHVzaA"), "{text}");
    assert_eq!(events[2]["objectRef"]["resource"], "pods");
    for bad in ["kind: Other", "kind: Policy\nrules: [{level: Loud}]"] {
        assert!(bosun_apiserver::audit::AuditPolicy::parse(bad.as_bytes()).is_err());
    }
}

/// A CRD with two served versions: objects are stored in the storage version and served in the
/// version asked for (the `None` conversion strategy).
#[tokio::test]
async fn custom_resources_are_served_in_every_version() {
    let s = server().await;
    let schema = json!({"openAPIV3Schema": {"type": "object", "properties": {
        "spec": {"type": "object", "properties": {"size": {"type": "integer"}}}}}});
    let crd = json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "gadgets.example.com"},
        "spec": {"group": "example.com", "scope": "Namespaced",
            "names": {"plural": "gadgets", "singular": "gadget", "kind": "Gadget"},
            "versions": [
                {"name": "v1", "served": true, "storage": true, "schema": schema},
                {"name": "v2", "served": true, "storage": false, "schema": schema}]}});
    let (code, v) = post(
        &s,
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
        crd,
    )
    .await;
    assert_eq!(code, StatusCode::CREATED, "{v}");
    for _ in 0..100 {
        if call(&s, Method::GET, "/apis/example.com/v2", None, "")
            .await
            .0
            == StatusCode::OK
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let v2 = "/apis/example.com/v2/namespaces/default/gadgets";
    let v1 = "/apis/example.com/v1/namespaces/default/gadgets";
    let (code, g) = post(
        &s,
        v2,
        json!({"apiVersion": "example.com/v2", "kind": "Gadget",
        "metadata": {"name": "g"}, "spec": {"size": 2}}),
    )
    .await;
    assert_eq!(code, StatusCode::CREATED, "{g}");
    assert_eq!(g["apiVersion"], "example.com/v2");
    let stored = s
        .store()
        .get("/registry/example.com/gadgets/default/g", None)
        .await
        .unwrap()
        .unwrap();
    let stored: Value = serde_json::from_slice(&stored.value).unwrap();
    assert_eq!(stored["apiVersion"], "example.com/v1");
    let (_, got) = call(&s, Method::GET, &format!("{v1}/g"), None, "").await;
    assert_eq!(got["apiVersion"], "example.com/v1");
    let (_, got) = call(&s, Method::GET, &format!("{v2}/g"), None, "").await;
    assert_eq!(got["apiVersion"], "example.com/v2");
    let (_, list) = call(&s, Method::GET, v2, None, "").await;
    assert_eq!(list["items"][0]["apiVersion"], "example.com/v2");
    let (_, list) = call(&s, Method::GET, v1, None, "").await;
    assert_eq!(list["items"][0]["apiVersion"], "example.com/v1");
    // Updates through the other version keep the storage version.
    let mut upd = got.clone();
    upd["spec"]["size"] = json!(5);
    let (code, u) = call(
        &s,
        Method::PUT,
        &format!("{v2}/g"),
        Some("application/json"),
        upd.to_string(),
    )
    .await;
    assert_eq!(code, StatusCode::OK, "{u}");
    assert_eq!(u["apiVersion"], "example.com/v2");
    let (code, p) = call(
        &s,
        Method::PATCH,
        &format!("{v2}/g"),
        Some("application/merge-patch+json"),
        json!({"spec": {"size": 6}}).to_string(),
    )
    .await;
    assert_eq!(code, StatusCode::OK, "{p}");
    assert_eq!(p["apiVersion"], "example.com/v2");
    // A watch of v2 sees v2 objects.
    let req = Request::builder()
        .uri(format!("{v2}?watch=1"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let mut body = s.handle(req).await.into_body();
    let frame = body.frame().await.unwrap().unwrap().into_data().unwrap();
    let ev: Value = serde_json::from_slice(frame.split(|b| *b == b'\n').next().unwrap()).unwrap();
    assert_eq!(ev["object"]["apiVersion"], "example.com/v2");
    assert_eq!(ev["object"]["spec"]["size"], 6);
}
