//! Protobuf: bodies real kubectl 1.32/1.33 sent decode to the object kubectl meant and re-encode
//! to the same bytes; every reference object survives JSON → typed → protobuf → typed → JSON.

use crate::{first_diff, normalize, reference_dir};
use bosun_api_types::proto::{self, Message};
use bosun_api_types::{visit_kind, KindVisitor, List, Resource};
use serde_json::Value;
use std::path::PathBuf;

/// Decodes a whole body as `K`: its JSON and the object's message re-encoded.
struct Decode<'a>(&'a [u8]);

impl KindVisitor for Decode<'_> {
    type Output = Result<(Value, Vec<u8>), String>;
    fn visit<K: Resource + Message + PartialEq>(self) -> Self::Output {
        let obj: K = proto::decode_object(self.0).map_err(|e| e.to_string())?;
        Ok((
            serde_json::to_value(&obj).map_err(|e| e.to_string())?,
            obj.encode(),
        ))
    }
}

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/kubectl")
}

#[test]
fn kubectl_bodies_decode_and_reencode_bit_for_bit() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(fixtures())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "pb"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 18,
        "expected kubectl 1.32 and 1.33 bodies, found {}",
        files.len()
    );
    for path in files {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let body = std::fs::read(&path).unwrap();
        let u = proto::decode_unknown(&body).unwrap_or_else(|e| panic!("{name}: {e}"));
        let (json, again) = visit_kind(&u.api_version, &u.kind, Decode(&body))
            .unwrap_or_else(|| panic!("{name}: unknown kind {} {}", u.api_version, u.kind))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            again, u.raw,
            "{name}: re-encoding differs from kubectl's bytes"
        );
        assert_eq!(
            proto::encode_unknown(&u.api_version, &u.kind, again),
            body,
            "{name}: envelope differs"
        );
        let expected = path.with_extension("expected.json");
        if expected.exists() {
            let want: Value = serde_json::from_slice(&std::fs::read(&expected).unwrap()).unwrap();
            if let Some(d) = first_diff(&normalize(&want), &normalize(&json), "") {
                panic!("{name}: decoded object differs from kubectl's JSON at {d}");
            }
        }
    }
}

#[test]
fn kubectl_auth_can_i_body_decodes() {
    use bosun_api_types::authorization::v1::SelfSubjectAccessReview;
    let body = std::fs::read(fixtures().join("can-i-1.32.pb")).unwrap();
    let review: SelfSubjectAccessReview = proto::decode_object(&body).unwrap();
    let attrs = review.spec.resource_attributes.unwrap();
    assert_eq!(attrs.verb.as_deref(), Some("get"));
    assert_eq!(attrs.resource.as_deref(), Some("pods"));
    assert_eq!(attrs.namespace.as_deref(), Some("default"));
    assert!(proto::decode_object::<bosun_api_types::core::v1::Pod>(&body).is_err());
}

/// Drops apiVersion/kind below the top level: protobuf carries TypeMeta only in the envelope, so
/// embedded objects (a StatefulSet's volumeClaimTemplates) lose it, as with upstream.
fn strip_nested_type_meta(v: &mut Value, top: bool) {
    match v {
        Value::Object(m) => {
            // An embedded object (it has metadata), not a reference such as ownerReferences.
            if !top && m.contains_key("metadata") {
                m.remove("apiVersion");
                m.remove("kind");
            }
            m.values_mut()
                .for_each(|x| strip_nested_type_meta(x, false));
        }
        Value::Array(a) => a.iter_mut().for_each(|x| strip_nested_type_meta(x, false)),
        _ => {}
    }
}

struct JsonProtoJson(Value);

impl KindVisitor for JsonProtoJson {
    type Output = Result<Value, String>;
    fn visit<K: Resource + Message + PartialEq>(self) -> Self::Output {
        let mut json = self.0;
        strip_nested_type_meta(&mut json, true);
        let typed: K = serde_json::from_value(json).map_err(|e| e.to_string())?;
        let bytes = proto::encode_object(&typed).map_err(|e| e.to_string())?;
        let back: K = proto::decode_object(&bytes).map_err(|e| e.to_string())?;
        if back != typed {
            let (a, b) = (
                serde_json::to_value(&typed).unwrap(),
                serde_json::to_value(&back).unwrap(),
            );
            return Err(format!(
                "typed value changed through protobuf: {:?}",
                first_diff(&a, &b, "")
            ));
        }
        serde_json::to_value(&back).map_err(|e| e.to_string())
    }
}

struct ListJsonProtoJson(Value);

impl KindVisitor for ListJsonProtoJson {
    type Output = Result<Value, String>;
    fn visit<K: Resource + Message + PartialEq>(self) -> Self::Output {
        let mut json = self.0;
        strip_nested_type_meta(&mut json, true);
        let typed: List<K> = serde_json::from_value(json).map_err(|e| e.to_string())?;
        let back = List::<K>::decode(&typed.encode()).map_err(|e| e.to_string())?;
        if back.items != typed.items || back.metadata != typed.metadata {
            let (a, b) = (
                serde_json::to_value(&typed).unwrap(),
                serde_json::to_value(&back).unwrap(),
            );
            return Err(format!(
                "list changed through protobuf: {:?}",
                first_diff(&a, &b, "")
            ));
        }
        serde_json::to_value(&typed).map_err(|e| e.to_string())
    }
}

fn check(v: &Value, origin: &str) -> bool {
    let av = v["apiVersion"].as_str().unwrap_or("");
    let kind = v["kind"].as_str().unwrap_or("");
    let out = match visit_kind(av, kind, JsonProtoJson(v.clone())) {
        Some(r) => r,
        None => match kind
            .strip_suffix("List")
            .and_then(|k| visit_kind(av, k, ListJsonProtoJson(v.clone())))
        {
            Some(r) => r,
            None => return false,
        },
    };
    let out = out.unwrap_or_else(|e| panic!("{origin} ({av} {kind}): {e}"));
    let mut want = v.clone();
    strip_nested_type_meta(&mut want, true);
    if let Some(d) = first_diff(&normalize(&want), &normalize(&out), "") {
        panic!("{origin} ({av} {kind}): JSON → protobuf → JSON differs at {d}");
    }
    true
}

#[test]
fn reference_objects_survive_protobuf() {
    let mut n = 0;
    let dir = reference_dir().join("replays-v1.32");
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let entries: Vec<Value> = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        for e in entries {
            let Some(body) = e["response_body"].as_str() else {
                continue;
            };
            for line in body.lines().filter(|l| l.starts_with('{')) {
                let v: Value = serde_json::from_str(line).unwrap();
                let obj = if v.get("object").is_some() && v.get("type").is_some() {
                    v["object"].clone()
                } else {
                    v
                };
                if check(&obj, &path.display().to_string()) {
                    n += 1;
                }
            }
        }
    }
    let text =
        std::fs::read_to_string(reference_dir().join("upstream-v1.28.7/manifest-dry-runs.jsonl"))
            .unwrap();
    for (i, line) in text.lines().enumerate() {
        let rec: Value = serde_json::from_str(line).unwrap();
        if let Some(out) = rec.get("output") {
            if check(out, &format!("manifest-dry-runs.jsonl:{}", i + 1)) {
                n += 1;
            }
        }
    }
    assert!(n > 250, "only {n} objects went through protobuf");
}
