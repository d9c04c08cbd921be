//! Hostile and careless clients: what a review of `bosun server` found accepted, or held open,
//! where upstream refuses or closes. Each test fails on the code before its fix.

use super::{call, cm, post, server};
use bosun_apiserver::connection::Limits;
use bosun_apiserver::Config;
use http::{Method, StatusCode};
use serde_json::{json, Value};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn pod(container: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
           "spec": {"containers": [container]}})
}

fn causes(v: &Value) -> String {
    v["message"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn objects_upstream_refuses_are_refused() {
    let s = server().await;
    let pods = "/api/v1/namespaces/default/pods";
    let cases = [
        (
            pod(json!({"name": "c", "image": "i", "ports": [{"containerPort": 70000}]})),
            "spec.containers[0].ports[0].containerPort: Invalid value: 70000: must be between 1 and 65535, inclusive",
        ),
        (
            pod(json!({"name": "c", "image": "i", "ports": [{"containerPort": 80, "hostPort": -1}]})),
            "hostPort: Invalid value: -1",
        ),
        (
            pod(json!({"name": "c", "image": "i", "resources": {"requests": {"cpu": "-1"}}})),
            "spec.containers[0].resources.requests[cpu]: Invalid value: \"-1\": must be greater than or equal to 0",
        ),
        (
            pod(json!({"name": "c", "image": "i", "resources": {"limits": {"memory": "-5Mi"}}})),
            "must be greater than or equal to 0",
        ),
        (
            pod(json!({"name": "c", "image": "i", "resources": {"requests": {"cpu": "2"}, "limits": {"cpu": "1"}}})),
            "spec.containers[0].resources.requests: Invalid value: \"2\": must be less than or equal to cpu limit of 1",
        ),
        (
            pod(json!({"name": "c", "image": "i", "resources": {"requests": {"example.com/gpu": "1"}}})),
            "Limit must be set for non overcommitable resources",
        ),
    ];
    for (body, expected) in cases {
        let (code, v) = post(&s, pods, body).await;
        assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
        assert!(causes(&v).contains(expected), "{expected:?} not in {v}");
    }
    let mut deadline = pod(json!({"name": "c", "image": "i"}));
    deadline["spec"]["activeDeadlineSeconds"] = json!(-5);
    let (code, v) = post(&s, pods, deadline).await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(causes(&v).contains("spec.activeDeadlineSeconds: Invalid value: -5"));
    let job = json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j"},
        "spec": {"activeDeadlineSeconds": -1, "template": {"spec": {"restartPolicy": "Never",
            "containers": [{"name": "c", "image": "i"}]}}}});
    let (code, v) = post(&s, "/apis/batch/v1/namespaces/default/jobs", job).await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    // A request equal to its limit, and an extended resource with both, are fine.
    let ok = pod(
        json!({"name": "c", "image": "i", "ports": [{"containerPort": 65535}],
        "resources": {"requests": {"cpu": "1", "example.com/gpu": "1"}, "limits": {"cpu": "1", "example.com/gpu": "1"}}}),
    );
    let (code, v) = post(&s, pods, ok).await;
    assert_eq!(code, StatusCode::CREATED, "{v}");
}

#[tokio::test]
async fn config_maps_and_secrets_hold_at_most_a_mebibyte() {
    let s = server().await;
    let big = "x".repeat(1024 * 1024 + 1);
    let mut c = cm("big");
    c["data"] = json!({"a": big});
    let (code, v) = post(&s, "/api/v1/namespaces/default/configmaps", c).await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(causes(&v).contains("Too long"), "{v}");
    use base64::Engine;
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "big"},
        "data": {"a": base64::engine::general_purpose::STANDARD.encode(vec![7u8; 1024 * 1024 + 1])}});
    let (code, v) = post(&s, "/api/v1/namespaces/default/secrets", secret).await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(causes(&v).contains("data: Too long"), "{v}");
    // Exactly a mebibyte is allowed.
    let mut c = cm("full");
    c["data"] = json!({"a": "x".repeat(1024 * 1024)});
    let (code, _) = post(&s, "/api/v1/namespaces/default/configmaps", c).await;
    assert_eq!(code, StatusCode::CREATED);
}

#[tokio::test]
async fn requests_upstream_refuses_are_refused() {
    let s = server().await;
    let cms = "/api/v1/namespaces/default/configmaps";
    let long = "m".repeat(129);
    let body = cm("a").to_string();
    let (code, v) = call(
        &s,
        Method::POST,
        &format!("{cms}?fieldManager={long}"),
        Some("application/json"),
        body.clone(),
    )
    .await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    for ct in [
        "application/json;;=x",
        "application/",
        "json",
        "application/json; charset",
        "a b/c",
        "application/json; a=1; a=2",
    ] {
        let (code, v) = call(&s, Method::POST, cms, Some(ct), body.clone()).await;
        assert_eq!(code, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{ct:?}: {v}");
    }
    // Trailing semicolons and parameters are fine.
    let (code, v) = call(
        &s,
        Method::POST,
        cms,
        Some("application/json; charset=utf-8;"),
        body,
    )
    .await;
    assert_eq!(code, StatusCode::CREATED, "{v}");
    let numeric = json!({"apiVersion": 5, "kind": "ConfigMap", "metadata": {"name": "b"}});
    let (code, v) = post(&s, cms, numeric).await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{v}");
    assert!(causes(&v).contains("apiVersion of type string"), "{v}");
    for options in [
        "resourceVersionMatch=NotOlderThan",
        "sendInitialEvents=true",
    ] {
        let (code, v) = call(&s, Method::GET, &format!("{cms}?{options}"), None, "").await;
        assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{options}: {v}");
    }
    // Protobuf is no patch format.
    let (code, v) = call(
        &s,
        Method::PATCH,
        &format!("{cms}/a"),
        Some("application/vnd.kubernetes.protobuf"),
        "k8s\0junk",
    )
    .await;
    assert_eq!(code, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{v}");
    // A subresource the kind does not have is no route, whatever the method.
    let (code, v) = post(
        &s,
        "/api/v1/namespaces/default/namespaces",
        json!({"metadata": {"name": "x"}}),
    )
    .await;
    assert_eq!(code, StatusCode::NOT_FOUND, "{v}");
}

#[tokio::test]
async fn empty_path_segments_are_no_route() {
    let s = server().await;
    post(&s, "/api/v1/namespaces/default/configmaps", cm("keep")).await;
    for path in [
        "/api/v1//namespaces/default/configmaps",
        "/api/v1/namespaces//configmaps",
        "//api/v1/namespaces/default/configmaps",
    ] {
        let (code, v) = call(&s, Method::DELETE, path, None, "").await;
        assert_eq!(code, StatusCode::NOT_FOUND, "{path}: {v}");
    }
    let (code, _) = call(
        &s,
        Method::GET,
        "/api/v1/namespaces/default/configmaps/keep",
        None,
        "",
    )
    .await;
    assert_eq!(code, StatusCode::OK, "nothing was deleted");
}

/// A server on loopback with these limits; its address.
async fn listening(limits: Limits) -> std::net::SocketAddr {
    let config = Config {
        limits,
        ..Config::default()
    };
    let s = super::server_with(config).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(s.serve(listener, std::future::pending()));
    addr
}

/// Reads until the server closes the connection (or `within` passes: `false`).
async fn closed_by_server(conn: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 4096];
    let read_all = async {
        loop {
            match conn.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(within, read_all).await.is_ok()
}

async fn get_version(addr: std::net::SocketAddr) -> String {
    let mut c = TcpStream::connect(addr).await.unwrap();
    c.write_all(b"GET /version HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    c.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test]
async fn slow_headers_and_idle_connections_are_closed() {
    let addr = listening(Limits {
        header_read_timeout: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(2),
        ..Limits::default()
    })
    .await;
    // Slowloris: a header byte now and then, never the end of the headers.
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET /version HTTP/1.1\r\n").await.unwrap();
    let trickle = async {
        for _ in 0..60 {
            if slow.write_all(b"x").await.is_err() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        false
    };
    assert!(
        tokio::time::timeout(Duration::from_secs(60), trickle)
            .await
            .unwrap_or(false),
        "a slow client keeps its connection"
    );
    // A connection that never says anything.
    let mut idle = TcpStream::connect(addr).await.unwrap();
    assert!(
        closed_by_server(&mut idle, Duration::from_secs(60)).await,
        "an idle connection stays open"
    );
    // Meanwhile ordinary requests are answered.
    assert!(get_version(addr).await.starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn connections_beyond_the_cap_are_refused_until_one_closes() {
    let addr = listening(Limits {
        max_connections: Some(2),
        ..Limits::default()
    })
    .await;
    let a = TcpStream::connect(addr).await.unwrap();
    let _b = TcpStream::connect(addr).await.unwrap();
    let mut c = TcpStream::connect(addr).await.unwrap();
    assert!(
        closed_by_server(&mut c, Duration::from_secs(30)).await,
        "a third connection is served"
    );
    drop(a);
    // The freed place is taken by the next client.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let mut d = TcpStream::connect(addr).await.unwrap();
        d.write_all(b"GET /version HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut out = String::new();
        let _ = d.read_to_string(&mut out).await;
        if out.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never served after a place freed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn an_answer_before_the_body_is_read_closes_the_connection() {
    let addr = listening(Limits::default()).await;
    let mut c = TcpStream::connect(addr).await.unwrap();
    let body = vec![b'a'; 200 * 1024];
    let head = format!(
        "POST /api/v1/namespaces/default/nosuchthings HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    c.write_all(head.as_bytes()).await.unwrap();
    // The server may answer (404, no route) before reading the body; the body's bytes must
    // then not be read as a next request on the same connection.
    let _ = c.write_all(&body).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(30), c.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 404"), "{text}");
    assert!(text.contains("connection: close"), "{text}");
    assert_eq!(
        text.matches("http/1.1 ").count(),
        1,
        "the body was read as requests: {text}"
    );
}

#[tokio::test]
async fn duplicate_fields_are_an_error_under_strict_and_a_warning_under_warn() {
    let s = server().await;
    let body = r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"d","name":"d"},"data":{"k":"v"}}"#;
    let cms = "/api/v1/namespaces/default/configmaps";
    let (code, v) = call(
        &s,
        Method::POST,
        &format!("{cms}?fieldValidation=Strict"),
        Some("application/json"),
        body,
    )
    .await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{v}");
    assert!(
        causes(&v).contains("duplicate field \"metadata.name\""),
        "{v}"
    );
    let req = http::Request::builder()
        .method(Method::POST)
        .uri(format!("{cms}?fieldValidation=Warn"))
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
        .unwrap();
    let resp = s.handle(req).await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let warning = resp
        .headers()
        .get("warning")
        .map(|w| w.to_str().unwrap().to_owned());
    assert!(
        warning.is_some_and(|w| w.contains("duplicate field")),
        "no warning"
    );
}

#[tokio::test]
async fn an_accept_the_server_cannot_produce_is_406() {
    let s = server().await;
    for path in [
        "/version",
        "/api",
        "/apis",
        "/api/v1",
        "/openapi/v2",
        "/api/v1/namespaces/default/configmaps",
    ] {
        let req = http::Request::builder()
            .uri(path)
            .header("accept", "text/html")
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap();
        assert_eq!(
            s.handle(req).await.status(),
            StatusCode::NOT_ACCEPTABLE,
            "{path}"
        );
        let req = http::Request::builder()
            .uri(path)
            .header("accept", "application/json, */*")
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap();
        assert_eq!(s.handle(req).await.status(), StatusCode::OK, "{path}");
    }
}
