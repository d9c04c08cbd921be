//! Server-side printing against the Tables an upstream API server sent kubectl
//! (`../shared/reference/upstream-v1.28.7/http/table_*.json`).

use super::{call, post, server};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};

fn reference(file: &str) -> Value {
    let dir = std::env::var_os("BOSUN_REFERENCE")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/reference")
        });
    let path = dir.join("upstream-v1.28.7/http").join(file);
    serde_json::from_str(
        &std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap()
}

async fn table(s: &bosun_apiserver::ApiServer, uri: &str) -> Value {
    let req = Request::builder()
        .uri(uri)
        .header(
            "accept",
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json",
        )
        .body(Full::new(bytes::Bytes::new()))
        .unwrap();
    let resp = s.handle(req).await;
    assert_eq!(resp.status(), StatusCode::OK);
    serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap()
}

/// Column definitions equal upstream's for every recorded kind whose columns did not change
/// between 1.28 (the recording) and 1.32 (Jobs gained Status, CronJobs Timezone, volumes
/// VolumeAttributesClass since).
#[tokio::test]
async fn column_definitions_match_upstream() {
    let s = server().await;
    let changed_since_1_28 = [
        "jobs",
        "cronjobs",
        "persistentvolumeclaims",
        "persistentvolumes",
    ];
    let mut checked = 0;
    for entry in std::fs::read_dir(
        std::env::var_os("BOSUN_REFERENCE")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| {
                std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/reference")
            })
            .join("upstream-v1.28.7/http"),
    )
    .unwrap()
    {
        let name = entry.unwrap().file_name().into_string().unwrap();
        let Some(path) = name
            .strip_prefix("table_")
            .and_then(|n| n.strip_suffix(".json"))
        else {
            continue;
        };
        let plural = path.rsplit('_').next().unwrap();
        if changed_since_1_28.contains(&plural) {
            continue;
        }
        let uri = format!("/{}", path.replace('_', "/"));
        let want = reference(&name);
        let got = table(&s, &uri).await;
        // Names, types, formats and priorities exactly; descriptions where upstream takes them
        // from the served API version (some come from retired versions' docs, e.g.
        // extensions/v1beta1's, which differ in wording and which kubectl never shows).
        let strip = |cols: &Value| -> Vec<Value> {
            cols.as_array()
                .unwrap()
                .iter()
                .map(|c| {
                    let keep_doc = matches!(c["name"].as_str(), Some("Name" | "Age"));
                    json!({"name": c["name"], "type": c["type"], "format": c["format"],
                           "priority": c["priority"],
                           "description": if keep_doc { c["description"].clone() } else { Value::Null }})
                })
                .collect()
        };
        assert_eq!(
            strip(&got["columnDefinitions"]),
            strip(&want["columnDefinitions"]),
            "{uri}"
        );
        checked += 1;
    }
    assert!(checked >= 18, "{checked}");
}

#[tokio::test]
async fn cells_follow_upstream_printers() {
    let s = server().await;
    let ns = table(&s, "/api/v1/namespaces").await;
    let default = ns["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["cells"][0] == "default")
        .unwrap();
    assert_eq!(default["cells"][1], "Active");
    assert!(default["cells"][2].as_str().unwrap().ends_with('s'));
    assert_eq!(default["object"]["kind"], "PartialObjectMetadata");

    let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
        "spec": {"selector": {"b": "2", "a": "1"}, "ports": [{"name": "http", "port": 80}, {"name": "dns", "port": 53, "protocol": "UDP"}]}});
    let (code, _) = post(&s, "/api/v1/namespaces/default/services", svc).await;
    assert_eq!(code, StatusCode::CREATED);
    let t = table(&s, "/api/v1/namespaces/default/services").await;
    let row = t["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["cells"][0] == "web")
        .unwrap();
    let cells = &row["cells"];
    assert_eq!(cells[1], "ClusterIP");
    assert!(cells[2].as_str().unwrap().starts_with("10."), "{cells}");
    assert_eq!(cells[3], "<none>");
    assert_eq!(cells[4], "80/TCP,53/UDP");
    assert_eq!(cells[6], "a=1,b=2");

    let dep = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d1"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "d1"}},
                 "template": {"metadata": {"labels": {"app": "d1"}},
                              "spec": {"containers": [{"name": "busybox", "image": "busybox"}]}}}});
    let (code, _) = post(&s, "/apis/apps/v1/namespaces/default/deployments", dep).await;
    assert_eq!(code, StatusCode::CREATED);
    let t = table(&s, "/apis/apps/v1/namespaces/default/deployments").await;
    // Upstream's recorded row for the same deployment: ["d1", "0/2", 2, 0, "10s", "busybox", "busybox", "app=d1"]
    // (its controller had already counted 2 updated replicas; ours has no controller yet).
    let cells = t["rows"][0]["cells"].as_array().unwrap();
    assert_eq!(cells[0], "d1");
    assert_eq!(cells[1], "0/2");
    assert_eq!(cells[3], 0);
    assert_eq!(
        cells[5..],
        [json!("busybox"), json!("busybox"), json!("app=d1")]
    );

    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]}});
    let (code, _) = post(&s, "/api/v1/namespaces/default/pods", pod).await;
    assert_eq!(code, StatusCode::CREATED);
    let t = table(&s, "/api/v1/namespaces/default/pods/p").await;
    let cells = t["rows"][0]["cells"].as_array().unwrap();
    // Upstream's recorded row of a pending pod: ["cassandra-0", "0/1", "Pending", "0", "1s", "<none>", "<none>", "<none>", "<none>"]
    assert_eq!(cells[1..4], [json!("0/1"), json!("Pending"), json!("0")]);
    assert_eq!(
        cells[5..],
        [
            json!("<none>"),
            json!("<none>"),
            json!("<none>"),
            json!("<none>")
        ]
    );
    let (code, _) = call(
        &s,
        Method::GET,
        "/api/v1/namespaces/default/pods/p",
        None,
        "",
    )
    .await;
    assert_eq!(code, StatusCode::OK);
}
