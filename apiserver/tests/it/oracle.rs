//! The dry-run oracle: 240 objects from public manifests, each created with `dryRun=All` in
//! namespace `oracle`, compared with what an upstream API server answered (the defaulted object,
//! or the rejection). Reference data: `../shared/reference/upstream-v1.28.7/manifest-dry-runs.jsonl`.

use super::call;
use bosun_apiserver::Config;
use http::{Method, StatusCode};
use serde_json::{json, Value};
use std::path::PathBuf;

fn reference_dir() -> PathBuf {
    let dir = std::env::var_os("BOSUN_REFERENCE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/reference")
        });
    assert!(
        dir.join("upstream-v1.28.7").is_dir(),
        "reference data not found at {} (set BOSUN_REFERENCE)",
        dir.display()
    );
    dir
}

/// Removes what the recording removed (and what differs per run), and `null`s.
fn scrub(v: &mut Value) {
    if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        for k in [
            "uid",
            "creationTimestamp",
            "resourceVersion",
            "managedFields",
        ] {
            meta.shift_remove(k);
        }
        if let Some(a) = meta.get_mut("annotations").and_then(Value::as_object_mut) {
            a.shift_remove("kubectl.kubernetes.io/last-applied-configuration");
        }
        if meta
            .get("annotations")
            .is_some_and(|a| a.as_object().is_some_and(|a| a.is_empty()))
        {
            meta.shift_remove("annotations");
        }
    }
    if let Some(spec) = v.get_mut("spec").and_then(Value::as_object_mut) {
        if v_kind_is_service(spec) {
            for k in ["clusterIP", "clusterIPs"] {
                spec.shift_remove(k);
            }
            if let Some(Value::Array(ports)) = spec.get_mut("ports") {
                for p in ports {
                    if let Some(p) = p.as_object_mut() {
                        p.shift_remove("nodePort");
                    }
                }
            }
        }
    }
    drop_nulls(v);
    // The service-account token volume has a random suffix.
    let text = v.to_string();
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while let Some(i) = rest.find("kube-api-access-") {
        let end = i + "kube-api-access-".len();
        out.push_str(&rest[..end]);
        out.push_str("XXXXX");
        rest = &rest[(end + 5).min(rest.len())..];
    }
    out.push_str(rest);
    *v = serde_json::from_str(&out).unwrap();
}

fn v_kind_is_service(spec: &serde_json::Map<String, Value>) -> bool {
    spec.contains_key("ports")
        && (spec.contains_key("selector")
            || spec.contains_key("type")
            || spec.contains_key("sessionAffinity"))
}

fn drop_nulls(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|_, x| !x.is_null());
            m.values_mut().for_each(drop_nulls);
        }
        Value::Array(a) => a.iter_mut().for_each(drop_nulls),
        _ => {}
    }
}

/// Where two values first differ, as a path.
fn first_difference(a: &Value, b: &Value, path: &str) -> Option<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for (k, v) in x {
                match y.get(k) {
                    Some(w) => {
                        if let Some(d) = first_difference(v, w, &format!("{path}.{k}")) {
                            return Some(d);
                        }
                    }
                    None => return Some(format!("{path}.{k}: ours has {v}, upstream has nothing")),
                }
            }
            y.iter()
                .find(|(k, _)| !x.contains_key(*k))
                .map(|(k, w)| format!("{path}.{k}: upstream has {w}, ours has nothing"))
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .find_map(|(i, (v, w))| first_difference(v, w, &format!("{path}[{i}]"))),
        _ if a == b => None,
        _ => Some(format!("{path}: ours {a}, upstream {b}")),
    }
}

/// Objects whose answer matches upstream's exactly, of the 240; raise it as defaulting and
/// validation grow, never lower it.
const MATCHING_AT_LEAST: usize = 240;

#[tokio::test]
async fn dry_run_creates_match_upstream() {
    let path = reference_dir().join("upstream-v1.28.7/manifest-dry-runs.jsonl");
    let text = std::fs::read_to_string(&path).unwrap();
    // The recording's server disallowed privileged containers.
    let config = Config {
        allow_privileged: false,
        ..Config::default()
    };
    let s = super::server_with(config).await;
    let (code, _) = super::post(
        &s,
        "/api/v1/namespaces",
        json!({"metadata": {"name": "oracle"}}),
    )
    .await;
    assert_eq!(code, StatusCode::CREATED);
    let table = s.resources();
    let mut matching = 0;
    let mut misses: Vec<String> = Vec::new();
    let mut total = 0;
    for line in text.lines() {
        let case: Value = serde_json::from_str(line).unwrap();
        total += 1;
        let api_version = case["apiVersion"].as_str().unwrap();
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        let r = table
            .by_kind(group, version, case["kind"].as_str().unwrap())
            .unwrap();
        let base = if group.is_empty() {
            format!("/api/{version}")
        } else {
            format!("/apis/{group}/{version}")
        };
        let uri = if r.namespaced {
            format!(
                "{base}/namespaces/oracle/{}?dryRun=All&fieldValidation=Strict",
                r.plural
            )
        } else {
            format!("{base}/{}?dryRun=All&fieldValidation=Strict", r.plural)
        };
        let (code, mut got) = call(
            &s,
            Method::POST,
            &uri,
            Some("application/json"),
            case["input"].to_string(),
        )
        .await;
        let file = case["file"].as_str().unwrap_or("?");
        if case["verdict"] == "ok" {
            if code != StatusCode::CREATED {
                misses.push(format!("{file}: rejected ({code}): {}", got["message"]));
                continue;
            }
            let mut want = case["output"].clone();
            scrub(&mut got);
            scrub(&mut want);
            match first_difference(&got, &want, "") {
                None => matching += 1,
                Some(d) => misses.push(format!("{file}: {d}")),
            }
        } else if code.is_success() {
            misses.push(format!("{file}: accepted; upstream: {}", case["message"]));
        } else {
            matching += 1;
        }
    }
    eprintln!("{matching}/{total} dry-run creates match upstream");
    for m in &misses {
        eprintln!("  {m}");
    }
    assert!(
        matching >= MATCHING_AT_LEAST,
        "{matching}/{total} match; at least {MATCHING_AT_LEAST} did before"
    );
}
