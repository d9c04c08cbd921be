//! Applying patches the way the API server does: JSON merge patch (RFC 7386), JSON patch
//! (RFC 6902) and Kubernetes strategic merge patch, which merges lists by key using the field
//! metadata in [`crate::patch_meta`].
//!
//! ```
//! use bosun_api_types::patch::strategic_merge;
//! use serde_json::json;
//! let pod = json!({"spec": {"containers": [
//!     {"name": "web", "image": "nginx:1.26"},
//!     {"name": "log", "image": "busybox"}]}});
//! // Containers merge by name: only `web` changes, `log` stays.
//! let patch = json!({"spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}});
//! let out = strategic_merge(&pod, &patch, "io.k8s.api.core.v1.Pod").unwrap();
//! assert_eq!(out["spec"]["containers"][0]["image"], "nginx:1.27");
//! assert_eq!(out["spec"]["containers"][1]["name"], "log");
//! ```

use crate::patch_meta::{type_info, FieldInfo, Shape};
use serde_json::{Map, Value};

/// Why a patch could not be applied.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct PatchError {
    /// What went wrong, for the client.
    pub message: String,
}

fn err(message: impl Into<String>) -> PatchError {
    PatchError {
        message: message.into(),
    }
}

/// Applies an RFC 7386 JSON merge patch.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = Value::Object(Map::new());
            }
            if let Value::Object(t) = target {
                for (k, v) in p {
                    if v.is_null() {
                        t.shift_remove(k);
                    } else {
                        merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                    }
                }
            }
        }
        other => *target = other.clone(),
    }
}

// ---------------------------------------------------------------------------------------------
// JSON patch

fn unescape(token: &str) -> String {
    token.replace("~1", "/").replace("~0", "~")
}

/// Splits a JSON pointer into its parent's tokens and its last token.
fn split_pointer(path: &str) -> Result<(Vec<String>, String), PatchError> {
    if path.is_empty() {
        return Err(err(
            "the root of the document cannot be the target of this operation",
        ));
    }
    let Some(rest) = path.strip_prefix('/') else {
        return Err(err(format!(
            "invalid JSON pointer {path:?}: it must start with '/'"
        )));
    };
    let mut tokens: Vec<String> = rest.split('/').map(unescape).collect();
    let last = tokens.pop().unwrap_or_default();
    Ok((tokens, last))
}

fn walk_mut<'a>(
    doc: &'a mut Value,
    tokens: &[String],
    path: &str,
) -> Result<&'a mut Value, PatchError> {
    let mut cur = doc;
    for t in tokens {
        cur = match cur {
            Value::Object(m) => m
                .get_mut(t)
                .ok_or_else(|| err(format!("path {path:?} does not exist: no field {t:?}")))?,
            Value::Array(a) => {
                let i: usize = t
                    .parse()
                    .map_err(|_| err(format!("path {path:?}: {t:?} is not an array index")))?;
                let len = a.len();
                a.get_mut(i).ok_or_else(|| {
                    err(format!(
                        "path {path:?}: index {i} is out of range (length {len})"
                    ))
                })?
            }
            _ => return Err(err(format!("path {path:?} does not exist"))),
        };
    }
    Ok(cur)
}

fn pointer_get<'a>(doc: &'a Value, path: &str) -> Result<&'a Value, PatchError> {
    if path.is_empty() {
        return Ok(doc);
    }
    doc.pointer(path)
        .ok_or_else(|| err(format!("path {path:?} does not exist")))
}

fn add(doc: &mut Value, path: &str, value: Value) -> Result<(), PatchError> {
    if path.is_empty() {
        *doc = value;
        return Ok(());
    }
    let (parent, last) = split_pointer(path)?;
    match walk_mut(doc, &parent, path)? {
        Value::Object(m) => {
            m.insert(last, value);
            Ok(())
        }
        Value::Array(a) => {
            if last == "-" {
                a.push(value);
                return Ok(());
            }
            let i: usize = last
                .parse()
                .map_err(|_| err(format!("path {path:?}: {last:?} is not an array index")))?;
            if i > a.len() {
                return Err(err(format!(
                    "path {path:?}: index {i} is out of range (length {})",
                    a.len()
                )));
            }
            a.insert(i, value);
            Ok(())
        }
        _ => Err(err(format!(
            "path {path:?}: the parent is not an object or array"
        ))),
    }
}

fn remove(doc: &mut Value, path: &str) -> Result<Value, PatchError> {
    let (parent, last) = split_pointer(path)?;
    match walk_mut(doc, &parent, path)? {
        Value::Object(m) => m
            .shift_remove(&last)
            .ok_or_else(|| err(format!("path {path:?} does not exist: no field {last:?}"))),
        Value::Array(a) => {
            let i: usize = last
                .parse()
                .map_err(|_| err(format!("path {path:?}: {last:?} is not an array index")))?;
            if i >= a.len() {
                return Err(err(format!(
                    "path {path:?}: index {i} is out of range (length {})",
                    a.len()
                )));
            }
            Ok(a.remove(i))
        }
        _ => Err(err(format!("path {path:?} does not exist"))),
    }
}

/// Applies an RFC 6902 JSON patch (a list of operations), all or nothing.
pub fn json_patch(doc: &Value, patch: &Value) -> Result<Value, PatchError> {
    let ops = patch
        .as_array()
        .ok_or_else(|| err("a JSON patch must be a list of operations"))?;
    let mut out = doc.clone();
    for (i, op) in ops.iter().enumerate() {
        let o = op
            .as_object()
            .ok_or_else(|| err(format!("operation {i} is not an object")))?;
        let name = o
            .get("op")
            .and_then(Value::as_str)
            .ok_or_else(|| err(format!("operation {i} has no \"op\"")))?;
        let path = o
            .get("path")
            .and_then(Value::as_str)
            .ok_or_else(|| err(format!("operation {i} ({name}) has no \"path\"")))?;
        let value = || {
            o.get("value")
                .cloned()
                .ok_or_else(|| err(format!("operation {i} ({name}) has no \"value\"")))
        };
        let from = || {
            o.get("from")
                .and_then(Value::as_str)
                .ok_or_else(|| err(format!("operation {i} ({name}) has no \"from\"")))
        };
        match name {
            "add" => add(&mut out, path, value()?)?,
            "remove" => {
                remove(&mut out, path)?;
            }
            "replace" => {
                let v = value()?;
                if path.is_empty() {
                    out = v;
                } else {
                    remove(&mut out, path)?;
                    add(&mut out, path, v)?;
                }
            }
            "move" => {
                let from = from()?;
                if path.starts_with(from) && path[from.len()..].starts_with('/') {
                    return Err(err(format!(
                        "cannot move {from:?} into its own child {path:?}"
                    )));
                }
                let v = remove(&mut out, from)?;
                add(&mut out, path, v)?;
            }
            "copy" => {
                let v = pointer_get(&out, from()?)?.clone();
                add(&mut out, path, v)?;
            }
            "test" => {
                let expected = value()?;
                if pointer_get(&out, path)? != &expected {
                    return Err(err(format!("testing value {path} failed")));
                }
            }
            other => return Err(err(format!("unknown JSON patch operation {other:?}"))),
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// strategic merge patch

const DIRECTIVE: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const SET_ORDER: &str = "$setElementOrder/";
const DELETE_PRIMITIVE: &str = "$deleteFromPrimitiveList/";

/// Where the schema stands at one point of the document.
#[derive(Clone, Copy)]
enum At {
    /// A struct of the named definition.
    Type(&'static str),
    /// A value of this shape (maps, free-form objects).
    Shape(Shape),
}

impl At {
    fn of_shape(s: Shape) -> At {
        match s {
            Shape::Object(name) => At::Type(name),
            other => At::Shape(other),
        }
    }

    /// The schema of `key` inside this point, and the field metadata if it is a struct field.
    fn child(self, key: &str) -> (At, Option<&'static FieldInfo>) {
        match self {
            At::Type(name) => match type_info(name).and_then(|t| t.field(key)) {
                Some(f) => (At::of_shape(f.shape), Some(f)),
                None => (At::Shape(Shape::Any), None),
            },
            At::Shape(Shape::Map(inner)) => (At::of_shape(*inner), None),
            At::Shape(_) => (At::Shape(Shape::Any), None),
        }
    }

    fn atomic(self) -> bool {
        match self {
            At::Type(name) => type_info(name).is_some_and(|t| t.map_type == Some("atomic")),
            At::Shape(_) => false,
        }
    }
}

/// Applies a strategic merge patch to `original`, an object of the upstream definition
/// `type_name` (`io.k8s.api.apps.v1.Deployment`).
pub fn strategic_merge(
    original: &Value,
    patch: &Value,
    type_name: &str,
) -> Result<Value, PatchError> {
    merge_root(original, patch, type_name, false)
}

/// As [`strategic_merge`], but list items are identified as server-side apply identifies
/// them: by all of a list's `x-kubernetes-list-map-keys` (a Service's ports by port *and*
/// protocol), where strategic merge uses the single patch merge key.
pub fn apply_merge(original: &Value, patch: &Value, type_name: &str) -> Result<Value, PatchError> {
    merge_root(original, patch, type_name, true)
}

fn merge_root(
    original: &Value,
    patch: &Value,
    type_name: &str,
    apply: bool,
) -> Result<Value, PatchError> {
    let root = type_info(type_name)
        .map(|t| At::Type(t.name))
        .unwrap_or(At::Shape(Shape::Any));
    let (Value::Object(o), Value::Object(p)) = (original, patch) else {
        return Err(err("a strategic merge patch must be a JSON object"));
    };
    Ok(merge_map(o, p, root, apply)?
        .map(Value::Object)
        .unwrap_or_else(|| Value::Object(Map::new())))
}

/// Merges a patch map into an original map; `None` when the patch deletes the map.
fn merge_map(
    original: &Map<String, Value>,
    patch: &Map<String, Value>,
    at: At,
    apply: bool,
) -> Result<Option<Map<String, Value>>, PatchError> {
    match patch.get(DIRECTIVE).map(|d| d.as_str()) {
        Some(Some("delete")) => return Ok(None),
        Some(Some("replace")) => {
            let mut out = patch.clone();
            out.shift_remove(DIRECTIVE);
            return strip_directives(out).map(Some);
        }
        Some(Some("merge")) | None => {}
        Some(other) => {
            return Err(err(format!(
                "unknown patch directive {:?} in a map",
                other.unwrap_or("?")
            )))
        }
    }
    if at.atomic() {
        let mut out = patch.clone();
        out.shift_remove(DIRECTIVE);
        return strip_directives(out).map(Some);
    }
    let mut out = original.clone();
    let mut orders: Vec<(String, &Vec<Value>)> = Vec::new();
    for (k, v) in patch {
        if k == DIRECTIVE || k == RETAIN_KEYS {
            continue;
        }
        if let Some(field) = k.strip_prefix(SET_ORDER) {
            let list = v
                .as_array()
                .ok_or_else(|| err(format!("{k} must be a list")))?;
            orders.push((field.to_owned(), list));
            continue;
        }
        if let Some(field) = k.strip_prefix(DELETE_PRIMITIVE) {
            let remove = v
                .as_array()
                .ok_or_else(|| err(format!("{k} must be a list")))?;
            if let Some(Value::Array(list)) = out.get_mut(field) {
                list.retain(|x| !remove.contains(x));
            }
            continue;
        }
        if v.is_null() {
            out.shift_remove(k);
            continue;
        }
        let (child, field) = at.child(k);
        let merged = merge_value(original.get(k), v, child, field, apply)?;
        match merged {
            Some(m) => {
                out.insert(k.clone(), m);
            }
            None => {
                out.shift_remove(k);
            }
        }
    }
    for (field, order) in orders {
        let key = at.child(&field).1.and_then(|f| f.patch_merge_key);
        if let Some(Value::Array(list)) = out.get_mut(&field) {
            reorder(list, order, key);
        }
    }
    if let Some(retain) = patch.get(RETAIN_KEYS) {
        let keys: Vec<&str> = retain
            .as_array()
            .ok_or_else(|| err("$retainKeys must be a list"))?
            .iter()
            .filter_map(Value::as_str)
            .collect();
        out.retain(|k, _| keys.contains(&k.as_str()));
    }
    Ok(Some(out))
}

fn merge_value(
    original: Option<&Value>,
    patch: &Value,
    at: At,
    field: Option<&FieldInfo>,
    apply: bool,
) -> Result<Option<Value>, PatchError> {
    match patch {
        Value::Object(p) => match original {
            Some(Value::Object(o)) => Ok(merge_map(o, p, at, apply)?.map(Value::Object)),
            _ => Ok(merge_map(&Map::new(), p, at, apply)?.map(Value::Object)),
        },
        Value::Array(p) => {
            let strategy = field.and_then(|f| f.patch_strategy).unwrap_or("");
            let merge = strategy.split(',').any(|s| s == "merge");
            let elem = match at {
                At::Shape(Shape::Array(inner)) => At::of_shape(*inner),
                _ => At::Shape(Shape::Any),
            };
            let orig: &[Value] = match original {
                Some(Value::Array(a)) => a,
                _ => &[],
            };
            if p.iter()
                .any(|x| x.get(DIRECTIVE).and_then(Value::as_str) == Some("replace"))
            {
                let kept: Vec<Value> = p
                    .iter()
                    .filter(|x| x.get(DIRECTIVE).is_none())
                    .cloned()
                    .map(strip_value)
                    .collect::<Result<_, _>>()?;
                return Ok(Some(Value::Array(kept)));
            }
            if !merge {
                return Ok(Some(Value::Array(
                    p.iter()
                        .cloned()
                        .map(strip_value)
                        .collect::<Result<_, _>>()?,
                )));
            }
            let keys: Option<Vec<&str>> = match field {
                Some(f) if apply && !f.list_map_keys.is_empty() => Some(f.list_map_keys.to_vec()),
                Some(f) => f.patch_merge_key.map(|k| vec![k]),
                None => None,
            };
            match keys {
                Some(keys) => {
                    merge_keyed_list(orig, p, &keys, elem, apply).map(|v| Some(Value::Array(v)))
                }
                None => {
                    // A merged list of primitives: union, original order first.
                    let mut out = orig.to_vec();
                    for x in p {
                        if !out.contains(x) {
                            out.push(x.clone());
                        }
                    }
                    Ok(Some(Value::Array(out)))
                }
            }
        }
        other => Ok(Some(other.clone())),
    }
}

fn merge_keyed_list(
    orig: &[Value],
    patch: &[Value],
    keys: &[&str],
    elem: At,
    apply: bool,
) -> Result<Vec<Value>, PatchError> {
    let mut out: Vec<Value> = orig.to_vec();
    // An item's identity: its values of the keys (absent ones as null); none at all: no id.
    let ident = |v: &Value| -> Option<Vec<Value>> {
        let id: Vec<Value> = keys
            .iter()
            .map(|k| v.get(*k).cloned().unwrap_or(Value::Null))
            .collect();
        id.iter().any(|v| !v.is_null()).then_some(id)
    };
    for item in patch {
        let Value::Object(pm) = item else {
            return Err(err(format!(
                "elements of a list merged by {:?} must be objects",
                keys.join(",")
            )));
        };
        let id = ident(item);
        let pos = id
            .as_ref()
            .and_then(|id| out.iter().position(|o| ident(o).as_ref() == Some(id)));
        match pm.get(DIRECTIVE).and_then(Value::as_str) {
            Some("delete") => {
                if let Some(id) = &id {
                    out.retain(|o| ident(o).as_ref() != Some(id));
                }
                continue;
            }
            Some("merge") | None => {}
            Some(other) => return Err(err(format!("unknown patch directive {other:?} in a list"))),
        }
        match pos {
            Some(i) => {
                let base = match &out[i] {
                    Value::Object(m) => m.clone(),
                    _ => Map::new(),
                };
                match merge_map(&base, pm, elem, apply)? {
                    Some(m) => out[i] = Value::Object(m),
                    None => {
                        out.remove(i);
                    }
                }
            }
            None => {
                if id.is_none() {
                    return Err(err(format!(
                        "map: {item} does not contain declared merge key: {}",
                        keys.join(",")
                    )));
                }
                if let Some(m) = merge_map(&Map::new(), pm, elem, apply)? {
                    out.push(Value::Object(m));
                }
            }
        }
    }
    Ok(out)
}

/// Orders `list` as `order` says (elements named there first, in that order), keeping the
/// others after them in their current order.
fn reorder(list: &mut Vec<Value>, order: &[Value], key: Option<&str>) {
    let ident = |v: &Value| -> Value {
        match key {
            Some(k) => v.get(k).cloned().unwrap_or(Value::Null),
            None => v.clone(),
        }
    };
    let wanted: Vec<Value> = order.iter().map(ident).collect();
    let mut ordered = Vec::with_capacity(list.len());
    let mut rest: Vec<Value> = std::mem::take(list);
    for w in &wanted {
        if let Some(i) = rest.iter().position(|x| &ident(x) == w) {
            ordered.push(rest.remove(i));
        }
    }
    ordered.extend(rest);
    *list = ordered;
}

fn strip_directives(mut m: Map<String, Value>) -> Result<Map<String, Value>, PatchError> {
    m.retain(|k, _| !k.starts_with('$'));
    for v in m.values_mut() {
        let taken = std::mem::take(v);
        *v = strip_value(taken)?;
    }
    Ok(m)
}

fn strip_value(v: Value) -> Result<Value, PatchError> {
    Ok(match v {
        Value::Object(m) => Value::Object(strip_directives(m)?),
        Value::Array(a) => Value::Array(a.into_iter().map(strip_value).collect::<Result<_, _>>()?),
        other => other,
    })
}

#[cfg(test)]
mod tests {

    #[test]
    fn apply_merge_keys_service_ports_by_port_and_protocol() {
        let svc = "io.k8s.api.core.v1.Service";
        let base = json!({"spec": {"ports": [{"port": 53, "protocol": "UDP", "name": "dns"}]}});
        let patch = json!({"spec": {"ports": [
            {"port": 53, "protocol": "UDP", "targetPort": 10053},
            {"port": 53, "protocol": "TCP", "name": "dns-tcp"}]}});
        let applied = apply_merge(&base, &patch, svc).unwrap();
        assert_eq!(
            applied["spec"]["ports"],
            json!([{"port": 53, "protocol": "UDP", "name": "dns", "targetPort": 10053},
                   {"port": 53, "protocol": "TCP", "name": "dns-tcp"}])
        );
        // Strategic merge keeps upstream's single merge key (port): one item.
        let merged = strategic_merge(&base, &patch, svc).unwrap();
        assert_eq!(merged["spec"]["ports"].as_array().unwrap().len(), 1);
    }

    use super::*;
    use serde_json::json;

    const DEPLOY: &str = "io.k8s.api.apps.v1.Deployment";

    #[test]
    fn json_patch_operations() {
        let doc = json!({"a": {"b": [1, 2]}, "c": "x"});
        let p = json!([
            {"op": "add", "path": "/a/b/-", "value": 3},
            {"op": "replace", "path": "/c", "value": "y"},
            {"op": "copy", "from": "/c", "path": "/d"},
            {"op": "move", "from": "/d", "path": "/e"},
            {"op": "remove", "path": "/a/b/0"},
            {"op": "test", "path": "/e", "value": "y"},
            {"op": "add", "path": "/f~1g", "value": true},
        ]);
        let out = json_patch(&doc, &p).unwrap();
        assert_eq!(
            out,
            json!({"a": {"b": [2, 3]}, "c": "y", "e": "y", "f/g": true})
        );
        let bad = json_patch(&doc, &json!([{"op": "test", "path": "/c", "value": "z"}]));
        assert!(bad.unwrap_err().message.contains("testing value"));
        assert!(json_patch(&doc, &json!([{"op": "remove", "path": "/nope"}])).is_err());
        assert!(json_patch(&doc, &json!({"op": "add"})).is_err());
        assert!(json_patch(&doc, &json!([{"op": "add", "path": "/a/b/9", "value": 1}])).is_err());
    }

    #[test]
    fn containers_merge_by_name_and_delete_directive_removes() {
        let d = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "a", "image": "x", "ports": [{"containerPort": 80}]},
            {"name": "b", "image": "y"}]}}}});
        let p = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "b", "$patch": "delete"},
            {"name": "c", "image": "z"},
            {"name": "a", "image": "x2"}]}}}});
        let out = strategic_merge(&d, &p, DEPLOY).unwrap();
        let cs = &out["spec"]["template"]["spec"]["containers"];
        assert_eq!(cs.as_array().unwrap().len(), 2);
        assert_eq!(
            cs[0],
            json!({"name": "a", "image": "x2", "ports": [{"containerPort": 80}]})
        );
        assert_eq!(cs[1]["name"], "c");
    }

    #[test]
    fn set_element_order_and_retain_keys_and_primitive_lists() {
        let d = json!({"metadata": {"finalizers": ["a"]}, "spec": {
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}},
            "template": {"spec": {"containers": [{"name": "a"}, {"name": "b"}]}}}});
        let p = json!({"metadata": {"finalizers": ["b"]}, "spec": {
            "strategy": {"$retainKeys": ["type"], "type": "Recreate"},
            "template": {"spec": {"$setElementOrder/containers": [{"name": "b"}, {"name": "a"}]}}}});
        let out = strategic_merge(&d, &p, DEPLOY).unwrap();
        assert_eq!(out["metadata"]["finalizers"], json!(["a", "b"]));
        assert_eq!(out["spec"]["strategy"], json!({"type": "Recreate"}));
        assert_eq!(
            out["spec"]["template"]["spec"]["containers"],
            json!([{"name": "b"}, {"name": "a"}])
        );
        let del = json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}});
        let out = strategic_merge(&out, &del, DEPLOY).unwrap();
        assert_eq!(out["metadata"]["finalizers"], json!(["b"]));
    }

    #[test]
    fn replace_directives_and_null_deletes() {
        let d = json!({"metadata": {"labels": {"a": "1", "b": "2"}}, "spec": {"replicas": 2,
            "template": {"spec": {"containers": [{"name": "a"}]}}}});
        let p = json!({"metadata": {"labels": {"$patch": "replace", "c": "3"}},
            "spec": {"replicas": null, "template": {"spec": {"containers": [{"$patch": "replace"}, {"name": "z"}]}}}});
        let out = strategic_merge(&d, &p, DEPLOY).unwrap();
        assert_eq!(out["metadata"]["labels"], json!({"c": "3"}));
        assert!(out["spec"].get("replicas").is_none());
        assert_eq!(
            out["spec"]["template"]["spec"]["containers"],
            json!([{"name": "z"}])
        );
    }

    #[test]
    fn lists_without_merge_strategy_are_replaced() {
        let d = json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "args": ["1", "2"]}]}}}});
        let p =
            json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "args": ["3"]}]}}}});
        let out = strategic_merge(&d, &p, DEPLOY).unwrap();
        assert_eq!(
            out["spec"]["template"]["spec"]["containers"][0]["args"],
            json!(["3"])
        );
        // An element without its merge key is an error, as upstream reports it.
        let bad = json!({"spec": {"template": {"spec": {"containers": [{"image": "x"}]}}}});
        assert!(strategic_merge(&d, &bad, DEPLOY).is_err());
    }

    proptest::proptest! {
        #[test]
        fn patches_never_panic(doc in arb_json(), patch in arb_json()) {
            let _ = json_patch(&doc, &patch);
            let _ = strategic_merge(&doc, &patch, DEPLOY);
            let mut d = doc.clone();
            merge_patch(&mut d, &patch);
        }
    }

    fn arb_json() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i32>().prop_map(|i| json!(i)),
            "[a-z$/~0-9-]{0,6}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 32, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::vec(
                    (
                        prop_oneof![
                            Just("op".to_owned()),
                            Just("path".to_owned()),
                            Just("value".to_owned()),
                            Just("$patch".to_owned()),
                            Just("name".to_owned()),
                            Just("spec".to_owned()),
                            "[a-z]{1,3}"
                        ],
                        inner
                    ),
                    0..4
                )
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }
}
