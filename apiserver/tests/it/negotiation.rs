//! Response negotiation: protobuf responses and watch frames for built-in kinds, and the
//! PartialObjectMetadata views.

use super::{cm, post, server};
use bosun_api_types::core::v1::ConfigMap;
use bosun_api_types::proto;
use bosun_apiserver::ApiServer;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};

const PROTO: &str = "application/vnd.kubernetes.protobuf, application/json";

async fn get(s: &ApiServer, uri: &str, accept: &str) -> (StatusCode, String, Bytes) {
    let req = Request::builder()
        .uri(uri)
        .header("accept", accept)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = s.handle(req).await;
    let status = resp.status();
    let ct = resp.headers()["content-type"].to_str().unwrap().to_owned();
    (
        status,
        ct,
        resp.into_body().collect().await.unwrap().to_bytes(),
    )
}

#[tokio::test]
async fn protobuf_objects_lists_and_watch_frames() {
    let s = server().await;
    post(&s, "/api/v1/namespaces/default/configmaps", cm("a")).await;
    post(&s, "/api/v1/namespaces/default/configmaps", cm("b")).await;

    let (code, ct, body) = get(&s, "/api/v1/namespaces/default/configmaps/a", PROTO).await;
    assert_eq!(
        (code, ct.as_str()),
        (StatusCode::OK, "application/vnd.kubernetes.protobuf")
    );
    let a: ConfigMap = proto::decode_object(&body).unwrap();
    assert_eq!(a.metadata.name.as_deref(), Some("a"));
    assert!(a.metadata.resource_version.is_some());
    assert_eq!(a.data["k"], "v");

    let (_, ct, body) = get(&s, "/api/v1/namespaces/default/configmaps", PROTO).await;
    assert_eq!(ct, "application/vnd.kubernetes.protobuf");
    let list: bosun_api_types::List<ConfigMap> = proto::decode_list(&body).unwrap();
    assert_eq!(list.items.len(), 2);
    assert!(list.metadata.resource_version.is_some());

    // Errors stay a Status (in protobuf too) with the right code.
    let (code, ct, body) = get(&s, "/api/v1/namespaces/default/configmaps/nope", PROTO).await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    assert!(
        ct == "application/json" || ct == "application/vnd.kubernetes.protobuf",
        "{ct}"
    );
    assert!(!body.is_empty());

    // Only protobuf, for a kind without one (a Table): 406.
    let (code, _, _) = get(&s, "/api/v1/namespaces/default/configmaps", "text/html").await;
    assert_eq!(code, StatusCode::NOT_ACCEPTABLE);

    // Watch: length-prefixed WatchEvent frames whose objects are protobuf bodies.
    let req = Request::builder()
        .uri("/api/v1/namespaces/default/configmaps?watch=1")
        .header("accept", PROTO)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = s.handle(req).await;
    assert_eq!(
        resp.headers()["content-type"],
        "application/vnd.kubernetes.protobuf;stream=watch"
    );
    let mut body = resp.into_body();
    let mut buf = Vec::new();
    let mut names = Vec::new();
    while names.len() < 2 {
        let frame = body.frame().await.unwrap().unwrap();
        buf.extend_from_slice(&frame.into_data().unwrap());
        while let Some((kind, obj, used)) = proto::decode_watch_frame(&buf).unwrap() {
            assert_eq!(kind, "ADDED");
            let c: ConfigMap = proto::decode_object(&obj).unwrap();
            names.push(c.metadata.name.unwrap());
            buf.drain(..used);
        }
    }
    assert_eq!(names, ["a", "b"]);
}

#[tokio::test]
async fn partial_object_metadata_views() {
    let s = server().await;
    let mut o = cm("a");
    o["metadata"]["labels"] = json!({"app": "x"});
    post(&s, "/api/v1/namespaces/default/configmaps", o).await;
    let accept = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1,application/json";
    let (code, _, body) = get(&s, "/api/v1/namespaces/default/configmaps/a", accept).await;
    assert_eq!(code, StatusCode::OK);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["kind"], "PartialObjectMetadata");
    assert_eq!(v["apiVersion"], "meta.k8s.io/v1");
    assert_eq!(v["metadata"]["labels"]["app"], "x");
    assert!(v.get("data").is_none());

    let accept =
        "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json";
    let (_, _, body) = get(&s, "/api/v1/namespaces/default/configmaps", accept).await;
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["kind"], "PartialObjectMetadataList");
    assert!(v["metadata"]["resourceVersion"].is_string());
    assert_eq!(v["items"][0]["kind"], "PartialObjectMetadata");
    assert_eq!(v["items"][0]["metadata"]["name"], "a");
    assert!(v["items"][0].get("data").is_none());

    // The protobuf form, as metadata-only informers ask for it.
    let accept = "application/vnd.kubernetes.protobuf;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json";
    let (_, ct, body) = get(&s, "/api/v1/namespaces/default/configmaps", accept).await;
    assert_eq!(ct, "application/vnd.kubernetes.protobuf");
    let u = proto::decode_unknown(&body).unwrap();
    assert_eq!(
        (u.api_version.as_str(), u.kind.as_str()),
        ("meta.k8s.io/v1", "PartialObjectMetadataList")
    );
}
