//! Integration tests of bosun-api-types against the upstream reference data in
//! `../shared/reference` (or `$BOSUN_REFERENCE`). Missing reference data is a failure.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod proptests;
mod protobuf;
mod replays;
mod schema;

use std::path::PathBuf;

/// The reference directory; panics (never skips) when it is missing.
pub fn reference_dir() -> PathBuf {
    let dir = std::env::var_os("BOSUN_REFERENCE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/reference")
        });
    assert!(
        dir.join("kubernetes-v1.32-swagger.json").is_file(),
        "reference data not found at {} (set BOSUN_REFERENCE)",
        dir.display()
    );
    dir
}

/// Drops `null` members recursively: upstream writes `"creationTimestamp": null` where we omit.
pub fn normalize(v: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), normalize(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(normalize).collect()),
        other => other.clone(),
    }
}

/// The first difference between upstream's JSON `a` and ours `b`, as a path and both sides.
/// Upstream writes a nil required list as `null` (dropped by [`normalize`]); we write `[]`.
pub fn first_diff(a: &serde_json::Value, b: &serde_json::Value, path: &str) -> Option<String> {
    use serde_json::Value;
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for k in x.keys().chain(y.keys()) {
                let p = format!("{path}.{k}");
                match (x.get(k), y.get(k)) {
                    (Some(l), Some(r)) => {
                        if let Some(d) = first_diff(l, r, &p) {
                            return Some(d);
                        }
                    }
                    (None, Some(Value::Array(r))) if r.is_empty() => {}
                    (l, r) => return Some(format!("{p}: {l:?} vs {r:?}")),
                }
            }
            None
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .find_map(|(i, (l, r))| first_diff(l, r, &format!("{path}[{i}]"))),
        _ if a == b => None,
        _ => Some(format!("{path}: {a} vs {b}")),
    }
}
