//! Objects as JSON maps: body decoding (JSON, protobuf), typed normalization of built-in kinds,
//! and typed access to `metadata`.

use crate::error::ApiError;
use crate::resources::ApiResource;
use bosun_api_types::meta::v1::ObjectMeta;
use bosun_api_types::{proto, KindVisitor, Resource};
use serde_json::{Map, Value};

/// An object: the top-level JSON map, in field order.
pub type Object = Map<String, Value>;

/// Media types of request bodies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `application/json` (also the default when a client sends no Content-Type).
    Json,
    /// `application/vnd.kubernetes.protobuf`.
    Protobuf,
    /// `application/yaml` (one document).
    Yaml,
}

/// The body format named by a Content-Type header.
pub fn body_format(content_type: Option<&str>) -> Result<Format, ApiError> {
    let Some(ct) = content_type else {
        return Ok(Format::Json);
    };
    let essence = media_type(ct)?;
    match essence.as_str() {
        "" | "application/json" | "*/*" => Ok(Format::Json),
        "application/vnd.kubernetes.protobuf" => Ok(Format::Protobuf),
        "application/yaml" => Ok(Format::Yaml),
        _ => Err(ApiError::unsupported_media_type(ct)),
    }
}

/// The media type of a `Content-Type` (`type/subtype`, lower case), checked as Go's
/// `mime.ParseMediaType` checks it: tokens, `;key=value` parameters with token or quoted
/// values, no parameter twice. A malformed one is 415, as upstream answers.
pub fn media_type(content_type: &str) -> Result<String, ApiError> {
    fn token(s: &str) -> bool {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    }
    let bad = || ApiError::unsupported_media_type(content_type);
    let mut parts = content_type.split(';');
    let essence = parts.next().unwrap_or("").trim().to_ascii_lowercase();
    let (kind, sub) = essence.split_once('/').unwrap_or((essence.as_str(), ""));
    if !token(kind) || !token(sub) {
        return Err(bad());
    }
    let mut seen = std::collections::BTreeSet::new();
    let params: Vec<&str> = parts.collect();
    for (i, p) in params.iter().enumerate() {
        let p = p.trim();
        if p.is_empty() && params[i..].iter().all(|r| r.trim().is_empty()) {
            break; // trailing semicolons are ignored
        }
        let Some((k, v)) = p.split_once('=') else {
            return Err(bad());
        };
        let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
        let quoted = v.len() >= 2 && v.starts_with('"') && v.ends_with('"');
        if !token(&k) || !(token(v) || quoted) || !seen.insert(k) {
            return Err(bad());
        }
    }
    Ok(essence)
}

/// The fields a JSON body names twice in one object, as paths (`spec.replicas`,
/// `spec.containers[0].name`): a client's mistake that decoding would otherwise hide (the
/// last value wins), reported under `fieldValidation` as upstream's strict decoder does.
/// Empty for anything that is not JSON.
pub fn duplicate_fields(body: &[u8]) -> Vec<String> {
    use serde::de::{DeserializeSeed, MapAccess, SeqAccess, Visitor};
    use std::cell::RefCell;

    struct Walk<'a> {
        path: String,
        out: &'a RefCell<Vec<String>>,
    }

    impl<'de> DeserializeSeed<'de> for Walk<'_> {
        type Value = ();
        fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_any(self)
        }
    }

    impl<'de> Visitor<'de> for Walk<'_> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("any JSON value")
        }
        fn visit_bool<E>(self, _: bool) -> Result<(), E> {
            Ok(())
        }
        fn visit_i64<E>(self, _: i64) -> Result<(), E> {
            Ok(())
        }
        fn visit_u64<E>(self, _: u64) -> Result<(), E> {
            Ok(())
        }
        fn visit_f64<E>(self, _: f64) -> Result<(), E> {
            Ok(())
        }
        fn visit_str<E>(self, _: &str) -> Result<(), E> {
            Ok(())
        }
        fn visit_unit<E>(self) -> Result<(), E> {
            Ok(())
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            let mut seen: Vec<String> = Vec::new();
            while let Some(key) = map.next_key::<String>()? {
                let path = if self.path.is_empty() {
                    key.clone()
                } else {
                    format!("{}.{key}", self.path)
                };
                if seen.contains(&key) {
                    self.out.borrow_mut().push(path.clone());
                } else {
                    seen.push(key);
                }
                map.next_value_seed(Walk {
                    path,
                    out: self.out,
                })?;
            }
            Ok(())
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            let mut i = 0usize;
            while seq
                .next_element_seed(Walk {
                    path: format!("{}[{i}]", self.path),
                    out: self.out,
                })?
                .is_some()
            {
                i += 1;
            }
            Ok(())
        }
    }

    let out = RefCell::new(Vec::new());
    let mut de = serde_json::Deserializer::from_slice(body);
    let walked = Walk {
        path: String::new(),
        out: &out,
    }
    .deserialize(&mut de);
    match walked {
        Ok(()) => out.into_inner(),
        Err(_) => Vec::new(),
    }
}

/// Decodes a request body into an object.
pub fn decode_body(body: &[u8], format: Format) -> Result<Object, ApiError> {
    match format {
        Format::Json => decode_json(body),
        Format::Protobuf => decode_protobuf(body),
        Format::Yaml => match yaml_to_json(body)? {
            Value::Object(map) => Ok(map),
            other => Err(ApiError::bad_request(format!(
                "the request body must be a YAML mapping, not {}",
                json_type(&other)
            ))),
        },
    }
}

/// Parses one YAML document into JSON, as Kubernetes reads YAML bodies (keys become strings);
/// errors are 400s that say what is wrong.
pub fn yaml_to_json(body: &[u8]) -> Result<Value, ApiError> {
    bosun_api_types::yaml::to_json(body).map_err(|e| ApiError::bad_request(e.to_string()))
}

fn decode_json(body: &[u8]) -> Result<Object, ApiError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(ApiError::bad_request(format!(
            "the request body must be a JSON object, not {}",
            json_type(&other)
        ))),
        Err(e) => Err(ApiError::bad_request(format!(
            "the request body is not valid JSON: {e}"
        ))),
    }
}

/// How Go's JSON decoder names a value's type in its errors.
fn go_type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

struct ProtoToJson<'a>(&'a [u8]);

impl KindVisitor for ProtoToJson<'_> {
    type Output = Result<Object, String>;
    fn visit<K: Resource + proto::Message + PartialEq>(self) -> Self::Output {
        let obj: K = proto::decode_object(self.0).map_err(|e| e.to_string())?;
        match serde_json::to_value(&obj) {
            Ok(Value::Object(map)) => Ok(map),
            Ok(_) => Err("not an object".into()),
            Err(e) => Err(e.to_string()),
        }
    }
}

fn decode_protobuf(body: &[u8]) -> Result<Object, ApiError> {
    let unknown = proto::decode_unknown(body)
        .map_err(|e| ApiError::bad_request(format!("the protobuf request body is invalid: {e}")))?;
    bosun_api_types::visit_kind(&unknown.api_version, &unknown.kind, ProtoToJson(body))
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "no kind \"{}\" is registered for version \"{}\" in protobuf",
                unknown.kind, unknown.api_version
            ))
        })?
        .map_err(|e| ApiError::bad_request(format!("the protobuf request body is invalid: {e}")))
}

struct Normalize(Object);

impl KindVisitor for Normalize {
    type Output = Result<Object, String>;
    fn visit<K: Resource + proto::Message + PartialEq>(self) -> Self::Output {
        let typed: K = serde_json::from_value(Value::Object(self.0)).map_err(|e| e.to_string())?;
        match serde_json::to_value(&typed) {
            Ok(Value::Object(map)) => Ok(map),
            Ok(_) => Err("not an object".into()),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// Checks a built-in object against its type and rewrites it in upstream's form (field order,
/// omitted empty fields, unknown fields dropped). Other resources pass through.
pub fn normalize(r: &ApiResource, obj: Object) -> Result<Object, ApiError> {
    let Some(info) = r.builtin else {
        return Ok(obj);
    };
    bosun_api_types::visit_kind(info.api_version, info.kind, Normalize(obj))
        .unwrap_or_else(|| Err(format!("kind {} is not registered", info.kind)))
        .map_err(|e| {
            ApiError::bad_request(format!(
                "{kind} in version \"{v}\" cannot be handled as a {kind}: {e}",
                kind = r.kind,
                v = r.version
            ))
        })
}

/// Checks and fills `apiVersion` and `kind` against the resource the request addressed. A body
/// without them (as the Python client sends) takes them from the path.
pub fn check_type(r: &ApiResource, obj: &mut Object) -> Result<(), ApiError> {
    let api_version = r.api_version();
    for field in ["apiVersion", "kind"] {
        if let Some(v) = obj.get(field).filter(|v| !v.is_string() && !v.is_null()) {
            return Err(ApiError::bad_request(format!(
                "couldn't get version/kind; json parse error: json: cannot unmarshal {} into Go struct field .{field} of type string",
                go_type_name(v)
            )));
        }
    }
    match obj.get("apiVersion").and_then(Value::as_str) {
        None | Some("") => {
            obj.insert("apiVersion".into(), Value::String(api_version.clone()));
        }
        Some(v) if v == api_version => {}
        Some(v) => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({v}) does not match the expected API version ({api_version})"
            )))
        }
    }
    match obj.get("kind").and_then(Value::as_str) {
        None | Some("") => {
            obj.insert("kind".into(), Value::String(r.kind.clone()));
        }
        Some(k) if k == r.kind => {}
        Some(k) => {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind ({})",
                r.kind
            )))
        }
    }
    Ok(())
}

/// The object's metadata, typed.
pub fn meta(obj: &Object) -> Result<ObjectMeta, ApiError> {
    match obj.get("metadata") {
        None | Some(Value::Null) => Ok(ObjectMeta::default()),
        Some(v) => <ObjectMeta as serde::Deserialize>::deserialize(v)
            .map_err(|e| ApiError::bad_request(format!("metadata is invalid: {e}"))),
    }
}

/// Replaces the object's metadata (keeping its position among the fields).
pub fn set_meta(obj: &mut Object, meta: &ObjectMeta) -> Result<(), ApiError> {
    let v = serde_json::to_value(meta).map_err(ApiError::internal)?;
    match obj.get_mut("metadata") {
        Some(slot) => *slot = v,
        None => {
            obj.insert("metadata".into(), v);
        }
    }
    Ok(())
}

/// Sets `metadata.resourceVersion` in place (a stored object has none).
pub fn set_resource_version(obj: &mut Object, rv: i64) {
    if let Some(Value::Object(m)) = obj.get_mut("metadata") {
        let v = Value::String(rv.to_string());
        match m.get_mut("resourceVersion") {
            Some(slot) => *slot = v,
            None => {
                // Upstream order: after uid.
                let at = m
                    .keys()
                    .position(|k| k == "uid")
                    .map(|i| i + 1)
                    .unwrap_or(m.len());
                m.shift_insert(at, "resourceVersion".into(), v);
            }
        }
    }
}

/// Drops `apiVersion` and `kind`, as list items of built-in kinds carry neither.
pub fn strip_type(obj: &mut Object) {
    obj.shift_remove("apiVersion");
    obj.shift_remove("kind");
}

/// Parses a stored value.
pub fn from_stored(value: &[u8]) -> Result<Object, ApiError> {
    match serde_json::from_slice::<Value>(value) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(ApiError::internal("stored object is not a JSON object")),
        Err(e) => Err(ApiError::internal(format!("stored object is corrupt: {e}"))),
    }
}

/// The value to store: the object without its resourceVersion (removed in place; callers set
/// the new one after the write).
pub fn to_stored(obj: &mut Object) -> Result<bytes::Bytes, ApiError> {
    if let Some(Value::Object(m)) = obj.get_mut("metadata") {
        m.shift_remove("resourceVersion");
        m.shift_remove("selfLink");
    }
    serde_json::to_vec(obj)
        .map(bytes::Bytes::from)
        .map_err(ApiError::internal)
}

/// A stored object as a list item, without parsing it: `apiVersion` and `kind` dropped and
/// `resourceVersion` put first in `metadata`. `None` when the bytes are not in the layout
/// [`to_stored`] writes (`apiVersion` and `kind`, then `metadata`), for the caller to parse.
pub fn list_item_bytes(stored: &[u8], rv: i64) -> Option<Vec<u8>> {
    splice_rv(stored, rv, false)
}

/// A stored object as served (type fields kept), `resourceVersion` spliced in without parsing;
/// `None` for bytes not in [`to_stored`]'s layout.
pub fn object_bytes(stored: &[u8], rv: i64) -> Option<Vec<u8>> {
    splice_rv(stored, rv, true)
}

fn splice_rv(stored: &[u8], rv: i64, keep_type: bool) -> Option<Vec<u8>> {
    const META: &[u8] = b",\"metadata\":{";
    let prefix_end = stored.windows(META.len()).position(|w| w == META)?;
    // Only `{"apiVersion":"…","kind":"…"` may come before metadata: two plain strings.
    let head = &stored[..prefix_end];
    let quotes = head.iter().filter(|b| **b == b'"').count();
    let has = |needle: &[u8]| head.windows(needle.len()).any(|w| w == needle);
    if !head.starts_with(b"{\"")
        || quotes != 8
        || head.contains(&b'\\')
        || !has(b"\"apiVersion\":\"")
        || !has(b"\"kind\":\"")
    {
        return None;
    }
    let rest = &stored[prefix_end + META.len()..];
    let mut out = Vec::with_capacity(stored.len() + 32);
    if keep_type {
        out.extend_from_slice(head);
        out.extend_from_slice(b",\"metadata\":{\"resourceVersion\":\"");
    } else {
        out.extend_from_slice(b"{\"metadata\":{\"resourceVersion\":\"");
    }
    out.extend_from_slice(rv.to_string().as_bytes());
    out.push(b'"');
    if rest.first() != Some(&b'}') {
        out.push(b',');
    }
    out.extend_from_slice(rest);
    Some(out)
}

/// A label map or field value for selectors.
pub fn labels(obj: &Object) -> std::collections::BTreeMap<String, String> {
    obj.get("metadata")
        .and_then(|m| m.get("labels"))
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

/// The value of a field path (`metadata.name`, `spec.nodeName`) as a string, for field
/// selectors.
pub fn field(obj: &Object, path: &str) -> Option<String> {
    let mut parts = path.split('.');
    let first = parts.next()?;
    let mut cur = obj.get(first)?;
    for p in parts {
        cur = cur.get(p)?;
    }
    match cur {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The paths of fields in `obj` that its built-in type does not have (`spec.replicasx`,
/// `spec.containers[0].imagex`), as upstream's strict decoding names them.
pub fn unknown_fields(r: &ApiResource, obj: &Object) -> Vec<String> {
    use bosun_api_types::patch_meta::{type_info, Shape};
    fn walk(v: &Value, shape: Shape, path: &str, out: &mut Vec<String>) {
        match (shape, v) {
            (Shape::Object(name), Value::Object(m)) => {
                let Some(t) = type_info(name) else { return };
                for (k, x) in m {
                    let p = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    match t.field(k) {
                        Some(f) => walk(x, f.shape, &p, out),
                        None => out.push(p),
                    }
                }
            }
            (Shape::Array(inner), Value::Array(a)) => {
                for (i, x) in a.iter().enumerate() {
                    walk(x, *inner, &format!("{path}[{i}]"), out);
                }
            }
            (Shape::Map(inner), Value::Object(m)) => {
                for (k, x) in m {
                    walk(x, *inner, &format!("{path}.{k}"), out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    if let Some(info) = r.builtin {
        for (k, v) in obj {
            if k == "apiVersion" || k == "kind" {
                continue;
            }
            match type_info(info.schema_name).and_then(|t| t.field(k)) {
                Some(f) => walk(v, f.shape, k, &mut out),
                None => out.push(k.clone()),
            }
        }
    }
    out
}

#[cfg(test)]
mod duplicate_tests {
    #[test]
    fn duplicate_fields_are_found_with_their_paths() {
        let body = br#"{"a": 1, "spec": {"replicas": 1, "replicas": 2, "containers": [{"name": "x", "name": "y"}]}, "a": 2}"#;
        assert_eq!(
            super::duplicate_fields(body),
            ["spec.replicas", "spec.containers[0].name", "a"]
        );
        assert!(super::duplicate_fields(br#"{"a": {"a": 1}, "b": [1, {"a": null}]}"#).is_empty());
        assert!(super::duplicate_fields(b"k8s\0not json").is_empty());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_items_are_spliced_from_stored_bytes() {
        let mut obj: Object = serde_json::from_str(
            r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a","labels":{"x":"y"}},"data":{"k":"\"q\""}}"#,
        )
        .unwrap();
        let stored = to_stored(&mut obj).unwrap();
        let item = list_item_bytes(&stored, 42).unwrap();
        let v: Value = serde_json::from_slice(&item).unwrap();
        let mut want = obj.clone();
        strip_type(&mut want);
        set_resource_version(&mut want, 42);
        assert_eq!(v, Value::Object(want));
        // Empty metadata, and bytes in another layout.
        let item = list_item_bytes(br#"{"apiVersion":"v1","kind":"X","metadata":{}}"#, 7).unwrap();
        assert_eq!(
            serde_json::from_slice::<Value>(&item).unwrap(),
            serde_json::json!({"metadata": {"resourceVersion": "7"}})
        );
        assert!(list_item_bytes(br#"{"metadata":{},"kind":"X"}"#, 1).is_none());
        assert!(list_item_bytes(br#"{"apiVersion":"v\"1","kind":"X","metadata":{}}"#, 1).is_none());
    }
}
