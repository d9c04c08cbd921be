//! Per-kind validation and immutable fields, with upstream's messages.

use super::{call, post, server};
use http::{Method, StatusCode};
use serde_json::{json, Value};

fn deployment(name: &str, selector: Value, labels: Value) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"selector": selector, "template": {"metadata": {"labels": labels},
            "spec": {"containers": [{"name": "app", "image": "nginx"}]}}}})
}

async fn put(s: &bosun_apiserver::ApiServer, uri: &str, body: &Value) -> (StatusCode, Value) {
    call(
        s,
        Method::PUT,
        uri,
        Some("application/json"),
        body.to_string(),
    )
    .await
}

#[tokio::test]
async fn workloads_services_and_config_keys_are_validated() {
    let s = server().await;
    let deps = "/apis/apps/v1/namespaces/default/deployments";
    let (code, st) = post(
        &s,
        deps,
        deployment(
            "d",
            json!({"matchLabels": {"app": "y"}}),
            json!({"app": "x"}),
        ),
    )
    .await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        st["message"],
        "Deployment.apps \"d\" is invalid: spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"x\"}: `selector` does not match template `labels`"
    );
    assert_eq!(
        st["details"]["causes"][0]["field"],
        "spec.template.metadata.labels"
    );
    let (code, st) = post(&s, deps, json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "d"}, "spec": {"template": {"spec": {"containers": [{"name": "a", "image": "x"}]}}}})).await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        st["message"]
            .as_str()
            .unwrap()
            .contains("spec.selector: Required value"),
        "{st}"
    );

    let (code, st) = post(
        &s,
        "/api/v1/namespaces/default/services",
        json!({"apiVersion": "v1",
        "kind": "Service", "metadata": {"name": "s"},
        "spec": {"ports": [{"port": 80}, {"port": 70000}]}}),
    )
    .await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        st["message"],
        "Service \"s\" is invalid: [spec.ports[0].name: Required value, spec.ports[1].name: Required value, spec.ports[1].port: Invalid value: 70000: must be between 1 and 65535, inclusive]"
    );

    let (code, st) = post(
        &s,
        "/api/v1/namespaces/default/configmaps",
        json!({"apiVersion": "v1",
        "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a b": "x"}}),
    )
    .await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(st["message"].as_str().unwrap().starts_with(
        "ConfigMap \"c\" is invalid: data[a b]: Invalid value: \"a b\": a valid config key must consist of alphanumeric characters"
    ), "{st}");
}

#[tokio::test]
async fn immutable_fields_stay_as_they_were() {
    let s = server().await;
    let deps = "/apis/apps/v1/namespaces/default/deployments";
    let (code, mut d) = post(
        &s,
        deps,
        deployment(
            "d",
            json!({"matchLabels": {"app": "x"}}),
            json!({"app": "x", "v": "1"}),
        ),
    )
    .await;
    assert_eq!(code, StatusCode::CREATED, "{d}");
    d["spec"]["selector"] = json!({"matchLabels": {"app": "x", "v": "1"}});
    let (code, st) = put(&s, &format!("{deps}/d"), &d).await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        st["message"],
        "Deployment.apps \"d\" is invalid: spec.selector: Invalid value: v1.LabelSelector{MatchLabels:map[string]string{\"app\":\"x\", \"v\":\"1\"}, MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: field is immutable"
    );

    let cms = "/api/v1/namespaces/default/configmaps";
    let (_, mut c) = post(
        &s,
        cms,
        json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "frozen"}, "data": {"k": "v"}, "immutable": true}),
    )
    .await;
    c["data"]["k"] = json!("changed");
    let (code, st) = put(&s, &format!("{cms}/frozen"), &c).await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        st["message"],
        "ConfigMap \"frozen\" is invalid: data: Forbidden: field is immutable when `immutable` is set"
    );

    let pods = "/api/v1/namespaces/default/pods";
    let (_, mut p) = post(
        &s,
        pods,
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "app", "image": "nginx:1"}]}}),
    )
    .await;
    // Images may change; other spec fields may not.
    p["spec"]["containers"][0]["image"] = json!("nginx:2");
    let (code, p2) = put(&s, &format!("{pods}/p"), &p).await;
    assert_eq!(code, StatusCode::OK, "{p2}");
    let mut p = p2;
    p["spec"]["restartPolicy"] = json!("Never");
    let (code, st) = put(&s, &format!("{pods}/p"), &p).await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(st["message"].as_str().unwrap().starts_with(
        "Pod \"p\" is invalid: spec: Forbidden: pod updates may not change fields other than `spec.containers[*].image`"
    ), "{st}");
}
