//! Every object recorded from real clusters survives typed deserialization and serialization:
//! nothing lost, nothing added.

use crate::{first_diff, normalize, reference_dir};
use bosun_api_types::meta::v1::{APIGroupList, Status};
use bosun_api_types::{visit_kind, DynamicObject, KindVisitor, List, Resource};
use serde_json::Value;

struct RoundTrip(Value);

impl KindVisitor for RoundTrip {
    type Output = Result<Value, String>;
    fn visit<K: Resource>(self) -> Self::Output {
        let typed: K = serde_json::from_value(self.0).map_err(|e| e.to_string())?;
        serde_json::to_value(&typed).map_err(|e| e.to_string())
    }
}

struct ListRoundTrip(Value);

impl KindVisitor for ListRoundTrip {
    type Output = Result<Value, String>;
    fn visit<K: Resource>(self) -> Self::Output {
        let typed: List<K> = serde_json::from_value(self.0).map_err(|e| e.to_string())?;
        serde_json::to_value(&typed).map_err(|e| e.to_string())
    }
}

fn typed<T: serde::de::DeserializeOwned + serde::Serialize>(v: Value) -> Result<Value, String> {
    let t: T = serde_json::from_value(v).map_err(|e| e.to_string())?;
    serde_json::to_value(&t).map_err(|e| e.to_string())
}

/// Round-trips one object through its typed form; returns the kind used.
fn round_trip(v: &Value) -> Result<(String, Value), String> {
    let av = v
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let kind = v
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let out = match kind.as_str() {
        "Status" => typed::<Status>(v.clone())?,
        "APIGroupList" => typed::<APIGroupList>(v.clone())?,
        k => match visit_kind(&av, k, RoundTrip(v.clone())) {
            Some(r) => r?,
            None => match k
                .strip_suffix("List")
                .and_then(|item| visit_kind(&av, item, ListRoundTrip(v.clone())))
            {
                Some(r) => r?,
                None if k.ends_with("List") => typed::<List<DynamicObject>>(v.clone())?,
                None => typed::<DynamicObject>(v.clone())?,
            },
        },
    };
    Ok((format!("{av} {kind}"), out))
}

fn check(v: &Value, origin: &str, kinds: &mut std::collections::BTreeSet<String>) {
    let (kind, out) = round_trip(v).unwrap_or_else(|e| panic!("{origin}: decoding failed: {e}"));
    if let Some(d) = first_diff(&normalize(v), &normalize(&out), "") {
        panic!("{origin} ({kind}): round trip differs at {d}");
    }
    kinds.insert(kind);
}

#[test]
fn replay_objects_round_trip() {
    let dir = reference_dir().join("replays-v1.32");
    let mut kinds = std::collections::BTreeSet::new();
    let mut objects = 0;
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(
        files.len() >= 8,
        "expected the replay files in {}",
        dir.display()
    );
    for file in files {
        let entries: Vec<Value> = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
        for (i, e) in entries.iter().enumerate() {
            let url = e["request_url"].as_str().unwrap_or("");
            for key in ["request_body", "response_body"] {
                let Some(body) = e.get(key).and_then(Value::as_str).filter(|b| !b.is_empty())
                else {
                    continue;
                };
                let origin = format!(
                    "{}#{i} {key} {url}",
                    file.file_name().unwrap().to_string_lossy()
                );
                let docs: Vec<Value> = if url.contains("watch") {
                    body.lines()
                        .filter(|l| !l.trim().is_empty())
                        .map(|l| serde_json::from_str(l).unwrap())
                        .collect()
                } else {
                    vec![serde_json::from_str(body).unwrap()]
                };
                for doc in docs {
                    if doc.is_array() {
                        continue; // a JSON patch document, not an object
                    }
                    if let (Some(t), Some(obj)) = (doc.get("type"), doc.get("object")) {
                        assert!(t.is_string(), "{origin}: watch event type");
                        check(obj, &origin, &mut kinds);
                    } else {
                        check(&doc, &origin, &mut kinds);
                    }
                    objects += 1;
                }
            }
        }
    }
    assert!(objects > 30, "only {objects} objects checked");
    for want in [
        "v1 PodList",
        "apps/v1 DeploymentList",
        "batch/v1 Job",
        "apiextensions.k8s.io/v1 CustomResourceDefinition",
        "v1 Status",
        "v1 Pod",
    ] {
        assert!(kinds.contains(want), "no {want} among {kinds:?}");
    }
}

#[test]
fn upstream_defaulted_objects_round_trip() {
    let path = reference_dir().join("upstream-v1.28.7/manifest-dry-runs.jsonl");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut kinds = std::collections::BTreeSet::new();
    let mut n = 0;
    for (i, line) in text.lines().enumerate() {
        let rec: Value = serde_json::from_str(line).unwrap();
        let origin = format!("manifest-dry-runs.jsonl:{} ({})", i + 1, rec["file"]);
        // Every input upstream accepted decodes into its typed form (user input: quantities may
        // be written in non-canonical forms, so only decoding is checked).
        if rec["verdict"] == "ok" {
            round_trip(&rec["input"])
                .unwrap_or_else(|e| panic!("{origin}: input does not decode: {e}"));
        }
        if let Some(out) = rec.get("output") {
            check(out, &origin, &mut kinds);
            n += 1;
        }
    }
    assert!(n >= 200, "only {n} outputs checked");
    assert!(kinds.len() >= 10, "only kinds {kinds:?}");
}

#[test]
fn aggregated_discovery_documents_round_trip() {
    use bosun_api_types::apidiscovery::v2::APIGroupDiscoveryList;
    use bosun_api_types::proto::Message;
    for file in [
        "discovery-api-aggregated.json",
        "discovery-apis-aggregated.json",
    ] {
        let path = reference_dir().join("upstream-v1.28.7/http").join(file);
        let v: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let list: APIGroupDiscoveryList = serde_json::from_value(v.clone()).unwrap();
        assert!(
            list.items.iter().map(|g| g.versions.len()).sum::<usize>() >= 1,
            "{file}"
        );
        let out = serde_json::to_value(&list).unwrap();
        if let Some(d) = first_diff(&normalize(&v), &normalize(&out), "") {
            panic!("{file}: differs at {d}");
        }
        let back = APIGroupDiscoveryList::decode(&list.encode()).unwrap();
        assert_eq!(back.items, list.items, "{file}: protobuf round trip");
    }
    let core = reference_dir().join("upstream-v1.28.7/http/discovery-api-aggregated.json");
    let list: APIGroupDiscoveryList =
        serde_json::from_slice(&std::fs::read(core).unwrap()).unwrap();
    let pods = list.items[0].versions[0]
        .resources
        .iter()
        .find(|r| r.resource == "pods")
        .unwrap();
    assert_eq!(pods.short_names, ["po"]);
    assert!(pods.subresources.iter().any(|s| s.subresource == "status"));
}
