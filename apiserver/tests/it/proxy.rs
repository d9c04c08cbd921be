//! Connect subresources proxied to a (fake) kubelet: logs stream through, exec upgrades to
//! WebSocket end to end, node proxy paths are forwarded.

use super::{call, post, server};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use serde_json::json;
use std::sync::{Arc, Mutex};
use tokio_tungstenite::tungstenite::{self, Message};

/// A kubelet stand-in: answers log and node-proxy requests and echoes WebSocket exec sessions.
async fn fake_kubelet(seen: Arc<Mutex<Vec<String>>>) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let seen = Arc::clone(&seen);
            let svc = hyper::service::service_fn(move |mut req: Request<hyper::body::Incoming>| {
                let seen = Arc::clone(&seen);
                async move {
                    let uri = req.uri().to_string();
                    seen.lock().unwrap().push(uri.clone());
                    if let Some(key) = req.headers().get("sec-websocket-key").cloned() {
                        let upgrade = hyper::upgrade::on(&mut req);
                        tokio::spawn(async move {
                            let io = TokioIo::new(upgrade.await.unwrap());
                            let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
                                io,
                                tungstenite::protocol::Role::Server,
                                None,
                            )
                            .await;
                            while let Some(Ok(msg)) = ws.next().await {
                                if let Message::Text(t) = msg {
                                    ws.send(Message::text(format!("echo: {t}"))).await.unwrap();
                                }
                            }
                        });
                        let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
                        return Ok::<_, std::convert::Infallible>(
                            Response::builder()
                                .status(101)
                                .header("upgrade", "websocket")
                                .header("connection", "Upgrade")
                                .header("sec-websocket-accept", accept)
                                .body(Full::new(Bytes::new()))
                                .unwrap(),
                        );
                    }
                    Ok(Response::new(Full::new(Bytes::from(format!(
                        "line1\nline2 from {uri}\n"
                    )))))
                }
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .with_upgrades(),
            );
        }
    });
    port
}

#[tokio::test]
async fn logs_exec_and_node_proxy_reach_the_kubelet() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let port = fake_kubelet(Arc::clone(&seen)).await;
    let s = server().await;
    let (code, _) = post(
        &s,
        "/api/v1/nodes",
        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}}),
    )
    .await;
    assert_eq!(code, StatusCode::CREATED);
    let status = json!({"status": {"addresses": [{"type": "Hostname", "address": "n1"},
        {"type": "InternalIP", "address": "127.0.0.1"}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": port}}}});
    let (code, n) = call(
        &s,
        Method::PATCH,
        "/api/v1/nodes/n1/status",
        Some("application/merge-patch+json"),
        status.to_string(),
    )
    .await;
    assert_eq!(code, StatusCode::OK, "{n}");
    let pod = |name: &str, node: Option<&str>, containers: &[&str]| {
        let mut p = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"containers": containers.iter().map(|c| json!({"name": c, "image": "busybox"})).collect::<Vec<_>>()}});
        if let Some(n) = node {
            p["spec"]["nodeName"] = json!(n);
        }
        p
    };
    post(
        &s,
        "/api/v1/namespaces/default/pods",
        pod("p", Some("n1"), &["app"]),
    )
    .await;
    post(
        &s,
        "/api/v1/namespaces/default/pods",
        pod("two", Some("n1"), &["a", "b"]),
    )
    .await;
    post(
        &s,
        "/api/v1/namespaces/default/pods",
        pod("pending", None, &["app"]),
    )
    .await;

    let (code, body) = call(
        &s,
        Method::GET,
        "/api/v1/namespaces/default/pods/p/log?tailLines=2&follow=true",
        None,
        "",
    )
    .await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(
        body,
        "line1\nline2 from /containerLogs/default/p/app?tailLines=2&follow=true\n"
    );
    let (code, st) = call(
        &s,
        Method::GET,
        "/api/v1/namespaces/default/pods/two/log",
        None,
        "",
    )
    .await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert_eq!(
        st["message"],
        "a container name must be specified for pod two, choose one of: [a b]"
    );
    let (code, st) = call(
        &s,
        Method::GET,
        "/api/v1/namespaces/default/pods/pending/log",
        None,
        "",
    )
    .await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert_eq!(st["message"], "pod pending does not have a host assigned");
    let (code, body) = call(
        &s,
        Method::GET,
        "/api/v1/nodes/n1/proxy/stats/summary?x=1",
        None,
        "",
    )
    .await;
    assert_eq!(code, StatusCode::OK);
    assert!(body.as_str().unwrap().contains("from /stats/summary?x=1"));

    // exec over WebSocket, through a real connection to the API server.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(s.clone().serve(listener, std::future::pending()));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut ws, resp) = tokio_tungstenite::client_async(
        format!("ws://{addr}/api/v1/namespaces/default/pods/p/exec?command=sh&command=-c&stdin=true&stdout=true&tty=false"),
        tcp,
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 101);
    ws.send(Message::text("hi")).await.unwrap();
    let Some(Ok(Message::Text(t))) = ws.next().await else {
        panic!("no echo")
    };
    assert_eq!(t.as_str(), "echo: hi");
    assert!(seen
        .lock()
        .unwrap()
        .iter()
        .any(|u| u == "/exec/default/p/app?command=sh&command=-c&input=1&output=1"));

    // A node without an address, and an unreachable kubelet: a Status, not a hang.
    post(
        &s,
        "/api/v1/nodes",
        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n2"}}),
    )
    .await;
    let (code, st) = call(&s, Method::GET, "/api/v1/nodes/n2/proxy/x", None, "").await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{st}");
    let closed = json!({"status": {"addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": 1}}}});
    call(
        &s,
        Method::PATCH,
        "/api/v1/nodes/n2/status",
        Some("application/merge-patch+json"),
        closed.to_string(),
    )
    .await;
    let (code, st) = call(&s, Method::GET, "/api/v1/nodes/n2/proxy/x", None, "").await;
    assert_eq!(code, StatusCode::INTERNAL_SERVER_ERROR, "{st}");
    assert!(st["message"]
        .as_str()
        .unwrap()
        .contains("error trying to reach the kubelet of node n2"));
}
