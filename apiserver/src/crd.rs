//! CustomResourceDefinitions: a created CRD is served as soon as the store's watch delivers it
//! (the resource table is rebuilt, discovery and OpenAPI follow), its status says Established,
//! and a deleted one stops being served and its objects are deleted.
//!
//! Custom objects are checked against the version's structural schema: unknown fields pruned
//! (unless `x-kubernetes-preserve-unknown-fields`), defaults applied, types, required fields,
//! enums, bounds and lengths validated with upstream's messages; tables use the version's
//! `additionalPrinterColumns`.

use crate::object::Object;
use crate::resources::{ApiResource, ResourceTable};
use crate::server::ApiServer;
use bosun_api_types::validation::{FieldError, FieldPath};
use bosun_store::{EventKind, RangeRequest};
use bytes::Bytes;
use serde_json::{json, Value};
use std::sync::Arc;

/// Store prefix of CustomResourceDefinitions.
pub(crate) const PREFIX: &str = "/registry/apiextensions.k8s.io/customresourcedefinitions/";

/// What a custom resource version carries beyond its names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CustomInfo {
    /// The version's `openAPIV3Schema` (`Null` when none).
    pub schema: Value,
    /// The version's `additionalPrinterColumns`.
    pub printer_columns: Vec<Value>,
    /// `subresources.scale` (`specReplicasPath`, `statusReplicasPath`, `labelSelectorPath`).
    pub scale: Option<Value>,
    /// `apiVersion` of the storage version: objects are stored in it and served in the
    /// requested version (the `None` conversion strategy: only `apiVersion` changes).
    pub storage_version: String,
}

/// Sets a custom object's `apiVersion` to the version it is served in (`r`'s).
pub(crate) fn served_as(r: &ApiResource, obj: &mut crate::object::Object) {
    if r.custom.is_some() {
        obj.insert("apiVersion".into(), Value::String(r.api_version()));
    }
}

/// Whether `r` is a custom resource version other than its storage version (its objects must be
/// converted on the way in and out).
pub(crate) fn converts(r: &ApiResource) -> bool {
    r.custom
        .as_ref()
        .is_some_and(|c| c.storage_version != r.api_version())
}

/// The served resources of a CRD object (one per served version).
pub fn resources_of(crd: &Value) -> Vec<ApiResource> {
    let spec = &crd["spec"];
    let group = spec["group"].as_str().unwrap_or("").to_owned();
    let names = &spec["names"];
    let plural = names["plural"].as_str().unwrap_or("").to_owned();
    let kind = names["kind"].as_str().unwrap_or("").to_owned();
    if group.is_empty() || plural.is_empty() || kind.is_empty() {
        return Vec::new();
    }
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    };
    let storage_version = spec["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|v| v["storage"] == json!(true))
        .and_then(|v| v["name"].as_str())
        .map(|v| format!("{group}/{v}"))
        .unwrap_or_default();
    let mut out = Vec::new();
    for v in spec["versions"].as_array().into_iter().flatten() {
        if v["served"] != json!(true) {
            continue;
        }
        let mut subresources = Vec::new();
        if v["subresources"]["status"].is_object() {
            subresources.push("status".to_owned());
        }
        let scale = v["subresources"]["scale"]
            .as_object()
            .map(|s| Value::Object(s.clone()));
        if scale.is_some() {
            subresources.push("scale".to_owned());
        }
        out.push(ApiResource {
            group: group.clone(),
            version: v["name"].as_str().unwrap_or("").to_owned(),
            plural: plural.clone(),
            singular: names["singular"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| kind.to_lowercase()),
            kind: kind.clone(),
            list_kind: names["listKind"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| format!("{kind}List")),
            namespaced: spec["scope"] == json!("Namespaced"),
            verbs: [
                "delete",
                "deletecollection",
                "get",
                "list",
                "patch",
                "create",
                "update",
                "watch",
            ]
            .iter()
            .map(|s| (*s).to_owned())
            .collect(),
            short_names: strings(&names["shortNames"]),
            categories: strings(&names["categories"]),
            subresources,
            builtin: None,
            tracks_generation: true,
            custom: Some(Arc::new(CustomInfo {
                schema: v["schema"]["openAPIV3Schema"].clone(),
                printer_columns: v["additionalPrinterColumns"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default(),
                scale,
                storage_version: storage_version.clone(),
            })),
        });
    }
    out
}

/// Rebuilds the served table: the server's own resources plus every CRD in the store.
pub(crate) async fn rebuild(server: &ApiServer) -> Result<(), crate::ApiError> {
    let page = server
        .store()
        .range(RangeRequest::prefix(PREFIX))
        .await
        .map_err(crate::ApiError::internal)?;
    let mut table: ResourceTable = (*server.inner.base_table).clone();
    for kv in &page.kvs {
        let Ok(crd) = serde_json::from_slice::<Value>(&kv.value) else {
            continue;
        };
        if crd["metadata"]["deletionTimestamp"].is_string() {
            continue;
        }
        for r in resources_of(&crd) {
            if table
                .get(&r.group, &r.version, &r.plural)
                .is_some_and(|e| e.custom.is_none())
            {
                // A CRD may not shadow a built-in resource.
                continue;
            }
            table.add(r);
        }
        mark_established(server, &kv.key, &crd, kv.mod_revision).await;
    }
    *server
        .inner
        .table
        .write()
        .unwrap_or_else(|p| p.into_inner()) = Arc::new(table);
    Ok(())
}

/// Sets the CRD's status as upstream's controllers do: names accepted, established.
async fn mark_established(server: &ApiServer, key: &str, crd: &Value, rev: i64) {
    let established = crd["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "Established" && c["status"] == "True")
    });
    if established {
        return;
    }
    let mut updated = crd.clone();
    let now = bosun_api_types::Time::now();
    let names = crd["spec"]["names"].clone();
    let mut accepted = names.clone();
    if accepted["singular"].is_null() {
        accepted["singular"] = json!(names["kind"].as_str().unwrap_or("").to_lowercase());
    }
    if accepted["listKind"].is_null() {
        accepted["listKind"] = json!(format!("{}List", names["kind"].as_str().unwrap_or("")));
    }
    let stored: Vec<Value> = crd["spec"]["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v["storage"] == json!(true))
        .map(|v| v["name"].clone())
        .collect();
    updated["status"] = json!({
        "acceptedNames": accepted,
        "conditions": [
            {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
             "message": "no conflicts found", "lastTransitionTime": now},
            {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
             "message": "the initial names have been accepted", "lastTransitionTime": now},
        ],
        "storedVersions": stored,
    });
    let Ok(bytes) = serde_json::to_vec(&updated) else {
        return;
    };
    if let Err(e) = server.store().update(key, Bytes::from(bytes), rev).await {
        // A concurrent write wins; the next event re-marks it.
        tracing::debug!(%key, error = %e, "marking the CRD established");
    }
}

/// Keeps the table in step with the CRDs in the store, from `after` on.
pub(crate) fn spawn_controller(server: ApiServer, after: i64) {
    tokio::spawn(async move {
        let mut from = after;
        loop {
            let mut watch = match server.store().watch(PREFIX, from).await {
                Ok(w) => w,
                Err(e) => {
                    tracing::warn!(error = %e, "watching CRDs failed; relisting");
                    if let Err(e) = rebuild(&server).await {
                        tracing::warn!(error = %e, "rebuilding the resource table failed");
                    }
                    from = server.store().current_revision().await.unwrap_or(from);
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                    continue;
                }
            };
            while let Some(ev) = watch.next().await {
                let Ok(ev) = ev else { break };
                from = ev.revision();
                if ev.kind == EventKind::Delete {
                    if let Some(prev) = &ev.prev_kv {
                        if let Ok(crd) = serde_json::from_slice::<Value>(&prev.value) {
                            delete_instances(&server, &crd).await;
                        }
                    }
                }
                if let Err(e) = rebuild(&server).await {
                    tracing::warn!(error = %e, "rebuilding the resource table failed");
                }
            }
        }
    });
}

/// Deletes every object of a deleted CRD (upstream's cleanup finalizer does this).
async fn delete_instances(server: &ApiServer, crd: &Value) {
    for r in resources_of(crd).into_iter().take(1) {
        let prefix = r.key_prefix();
        let Ok(page) = server.store().range(RangeRequest::prefix(prefix)).await else {
            continue;
        };
        for kv in page.kvs {
            let _ = server.store().delete(&kv.key, None).await;
        }
    }
}

// ---- schema: pruning, defaulting, validation ----

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn preserves(schema: &Value) -> bool {
    schema["x-kubernetes-preserve-unknown-fields"] == json!(true)
}

/// Removes fields the schema does not specify (structural pruning).
fn prune(v: &mut Value, schema: &Value) {
    if schema.is_null() || schema["x-kubernetes-int-or-string"] == json!(true) {
        return;
    }
    match v {
        Value::Object(m) => {
            let props = schema["properties"].as_object();
            let additional = &schema["additionalProperties"];
            if let Some(props) = props {
                if !preserves(schema) {
                    m.retain(|k, _| props.contains_key(k));
                }
                for (k, x) in m.iter_mut() {
                    if let Some(s) = props.get(k) {
                        prune(x, s);
                    }
                }
            } else if additional.is_object() {
                for x in m.values_mut() {
                    prune(x, additional);
                }
            } else if !preserves(schema) && schema["type"] == json!("object") {
                m.clear();
            }
        }
        Value::Array(a) => {
            for x in a {
                prune(x, &schema["items"]);
            }
        }
        _ => {}
    }
}

/// Applies `default`s of absent fields.
fn default(v: &mut Value, schema: &Value) {
    match v {
        Value::Object(m) => {
            if let Some(props) = schema["properties"].as_object() {
                for (k, s) in props {
                    if !m.contains_key(k) {
                        if let Some(d) = s.get("default") {
                            m.insert(k.clone(), d.clone());
                        }
                    }
                    if let Some(x) = m.get_mut(k) {
                        default(x, s);
                    }
                }
            } else if schema["additionalProperties"].is_object() {
                for x in m.values_mut() {
                    default(x, &schema["additionalProperties"]);
                }
            }
        }
        Value::Array(a) => {
            for x in a {
                default(x, &schema["items"]);
            }
        }
        _ => {}
    }
}

fn validate(v: &Value, schema: &Value, path: &FieldPath, errs: &mut Vec<FieldError>) {
    if schema.is_null() {
        return;
    }
    if v.is_null() {
        if schema["nullable"] != json!(true) && schema["type"].is_string() {
            errs.push(FieldError::invalid(
                path,
                "null",
                &format!(
                    "{path} in body must be of type {}: \"null\"",
                    schema["type"].as_str().unwrap_or("")
                ),
            ));
        }
        return;
    }
    let int_or_string = schema["x-kubernetes-int-or-string"] == json!(true);
    if let Some(want) = schema["type"].as_str() {
        let got = type_name(v);
        let ok = got == want
            || (want == "number" && got == "integer")
            || (int_or_string && (got == "integer" || got == "string"));
        if !ok && !int_or_string {
            errs.push(FieldError::invalid(
                path,
                got,
                &format!("{path} in body must be of type {want}: \"{got}\""),
            ));
            return;
        }
    }
    if let Some(options) = schema["enum"].as_array() {
        if !options.contains(v) {
            let list: Vec<String> = options.iter().map(Value::to_string).collect();
            errs.push(FieldError::not_supported(
                path,
                v.as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| v.to_string()),
                &list.iter().map(String::as_str).collect::<Vec<_>>(),
            ));
        }
    }
    match v {
        Value::Number(n) => {
            let x = n.as_f64().unwrap_or(0.0);
            if let Some(min) = schema["minimum"].as_f64() {
                if x < min {
                    errs.push(FieldError::invalid(
                        path,
                        x,
                        &format!("{path} in body should be greater than or equal to {min}"),
                    ));
                }
            }
            if let Some(max) = schema["maximum"].as_f64() {
                if x > max {
                    errs.push(FieldError::invalid(
                        path,
                        x,
                        &format!("{path} in body should be less than or equal to {max}"),
                    ));
                }
            }
        }
        Value::String(s) => {
            let n = s.chars().count() as u64;
            if let Some(max) = schema["maxLength"].as_u64() {
                if n > max {
                    errs.push(FieldError::too_long(path, max as usize));
                }
            }
            if let Some(min) = schema["minLength"].as_u64() {
                if n < min {
                    errs.push(FieldError::invalid(
                        path,
                        s,
                        &format!("{path} in body should be at least {min} chars long"),
                    ));
                }
            }
        }
        Value::Array(a) => {
            if let Some(max) = schema["maxItems"].as_u64() {
                if a.len() as u64 > max {
                    errs.push(FieldError::too_many(path, a.len(), max as usize));
                }
            }
            if let Some(min) = schema["minItems"].as_u64() {
                if (a.len() as u64) < min {
                    errs.push(FieldError::invalid(
                        path,
                        a.len(),
                        &format!("{path} in body should have at least {min} items"),
                    ));
                }
            }
            for (i, x) in a.iter().enumerate() {
                validate(x, &schema["items"], &path.index(i), errs);
            }
        }
        Value::Object(m) => {
            for r in schema["required"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                if !m.contains_key(r) {
                    errs.push(FieldError::required(&path.child(r), ""));
                }
            }
            if let Some(props) = schema["properties"].as_object() {
                for (k, x) in m {
                    if let Some(s) = props.get(k) {
                        validate(x, s, &path.child(k), errs);
                    }
                }
            } else if schema["additionalProperties"].is_object() {
                for (k, x) in m {
                    validate(x, &schema["additionalProperties"], &path.key(k), errs);
                }
            }
        }
        _ => {}
    }
}

/// Prunes, defaults and validates a custom object against its version's schema.
pub(crate) fn admit(info: &CustomInfo, obj: &mut Object) -> Vec<FieldError> {
    let schema = &info.schema;
    if schema.is_null() {
        return Vec::new();
    }
    let mut v = Value::Object(std::mem::take(obj));
    // apiVersion, kind and metadata are the server's to check, not the schema's.
    let (api_version, kind, metadata) = match &mut v {
        Value::Object(m) => (
            m.shift_remove("apiVersion"),
            m.shift_remove("kind"),
            m.shift_remove("metadata"),
        ),
        _ => (None, None, None),
    };
    prune(&mut v, schema);
    default(&mut v, schema);
    let mut errs = Vec::new();
    if let Value::Object(m) = &v {
        for r in schema["required"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            if !m.contains_key(r) && !matches!(r, "apiVersion" | "kind" | "metadata") {
                errs.push(FieldError::required(&FieldPath::new(r), ""));
            }
        }
        if let Some(props) = schema["properties"].as_object() {
            for (k, x) in m {
                if let Some(s) = props.get(k) {
                    validate(x, s, &FieldPath::new(k), &mut errs);
                }
            }
        }
    }
    let Value::Object(mut m) = v else {
        return errs;
    };
    let mut out = Object::new();
    if let Some(a) = api_version {
        out.insert("apiVersion".into(), a);
    }
    if let Some(k) = kind {
        out.insert("kind".into(), k);
    }
    if let Some(md) = metadata {
        out.insert("metadata".into(), md);
    }
    out.append(&mut m);
    *obj = out;
    errs
}

/// A simple JSONPath (`.spec.replicas`, `.status.conditions[0].type`) as printer columns use,
/// from an object's top level.
pub(crate) fn json_path<'a>(root: &'a Object, path: &str) -> Option<&'a Value> {
    let path = path.trim().trim_start_matches('{').trim_end_matches('}');
    let path = path.strip_prefix('$').unwrap_or(path);
    let mut parts = path.split('.').filter(|p| !p.is_empty());
    let first = parts.next()?;
    let (name, indexes) = match first.find('[') {
        Some(i) => (&first[..i], &first[i..]),
        None => (first, ""),
    };
    let mut cur = root.get(name)?;
    for idx in indexes.split('[').filter(|s| !s.is_empty()) {
        let n: usize = idx.trim_end_matches(']').parse().ok()?;
        cur = cur.get(n)?;
    }
    for part in parts {
        let (name, indexes) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !name.is_empty() {
            cur = cur.get(name)?;
        }
        for idx in indexes.split('[').filter(|s| !s.is_empty()) {
            let n: usize = idx.trim_end_matches(']').parse().ok()?;
            cur = cur.get(n)?;
        }
    }
    Some(cur)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(schema: Value) -> CustomInfo {
        CustomInfo {
            schema,
            printer_columns: vec![],
            scale: None,
            storage_version: "x/v1".into(),
        }
    }

    #[test]
    fn prune_default_validate() {
        let schema = json!({"type": "object", "properties": {
            "spec": {"type": "object", "required": ["size"], "properties": {
                "size": {"type": "integer", "minimum": 1, "maximum": 10},
                "color": {"type": "string", "enum": ["red", "blue"], "default": "red"},
                "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}}});
        let mut o: Object = serde_json::from_value(json!({"apiVersion": "x/v1", "kind": "W",
            "metadata": {"name": "a"}, "spec": {"size": 3, "junk": 1, "free": {"any": [1]}}, "top": 1}))
        .unwrap();
        let errs = admit(&info(schema.clone()), &mut o);
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(
            Value::Object(o),
            json!({"apiVersion": "x/v1", "kind": "W", "metadata": {"name": "a"},
                   "spec": {"size": 3, "free": {"any": [1]}, "color": "red"}})
        );
        let mut bad: Object =
            serde_json::from_value(json!({"spec": {"size": "big", "color": "green"}})).unwrap();
        let errs = admit(&info(schema.clone()), &mut bad);
        let msgs: Vec<String> = errs.iter().map(ToString::to_string).collect();
        assert!(
            msgs.iter()
                .any(|m| m.contains("spec.size") && m.contains("must be of type integer")),
            "{msgs:?}"
        );
        assert!(
            msgs.iter()
                .any(|m| m.contains("spec.color") && m.contains("Unsupported value")),
            "{msgs:?}"
        );
        let mut missing: Object = serde_json::from_value(json!({"spec": {"size": 20}})).unwrap();
        let errs = admit(&info(schema), &mut missing);
        assert!(errs
            .iter()
            .any(|e| e.to_string().contains("less than or equal to 10")));
    }

    #[test]
    fn json_paths() {
        let v: Object = serde_json::from_value(
            json!({"spec": {"replicas": 3}, "status": {"conditions": [{"type": "Ready"}]}}),
        )
        .unwrap();
        assert_eq!(json_path(&v, ".spec.replicas"), Some(&json!(3)));
        assert_eq!(
            json_path(&v, ".status.conditions[0].type"),
            Some(&json!("Ready"))
        );
        assert_eq!(json_path(&v, ".spec.nope"), None);
    }
}
