//! The `scale` subresource (`autoscaling/v1` `Scale`) of deployments, replica sets, stateful
//! sets and replication controllers: `kubectl scale` reads and writes `spec.replicas` through it.

use crate::error::ApiError;
use crate::object::{self, Object};
use crate::rest::Ctx;
use bosun_api_types::meta::v1::LabelSelector;
use bosun_api_types::patch;
use bosun_api_types::selector::LabelSelectorExt;
use serde_json::{json, Value};

/// Where a resource keeps its replica counts and selector: upstream's fixed fields for the
/// built-in workloads, the CRD's `subresources.scale` paths for custom resources.
pub(crate) struct Paths {
    spec: String,
    status: String,
    selector: Option<String>,
}

impl Paths {
    pub(crate) fn of(r: &crate::resources::ApiResource) -> Paths {
        if let Some(scale) = r.custom.as_ref().and_then(|c| c.scale.as_ref()) {
            let s = |k: &str| scale.get(k).and_then(Value::as_str).map(str::to_owned);
            return Paths {
                spec: s("specReplicasPath").unwrap_or_else(|| ".spec.replicas".into()),
                status: s("statusReplicasPath").unwrap_or_else(|| ".status.replicas".into()),
                selector: s("labelSelectorPath"),
            };
        }
        Paths {
            spec: ".spec.replicas".into(),
            status: ".status.replicas".into(),
            selector: Some(".spec.selector".into()),
        }
    }
}

fn set_path(v: &mut Value, path: &str, value: Value) {
    let parts: Vec<&str> = path.split('.').filter(|p| !p.is_empty()).collect();
    let Some((last, parents)) = parts.split_last() else {
        return;
    };
    let mut cur = v;
    for p in parents {
        if !cur.get(*p).is_some_and(Value::is_object) {
            if let Value::Object(m) = cur {
                m.insert((*p).to_owned(), json!({}));
            }
        }
        match cur.get_mut(*p) {
            Some(next) => cur = next,
            None => return,
        }
    }
    if let Value::Object(m) = cur {
        m.insert((*last).to_owned(), value);
    }
}

/// The Scale view of a parent object.
pub(crate) fn to_scale(obj: &Object, paths: &Paths) -> Object {
    let meta = obj.get("metadata").cloned().unwrap_or_else(|| json!({}));
    let pick = |k: &str| meta.get(k).cloned().unwrap_or(Value::Null);
    let mut m = serde_json::Map::new();
    for k in [
        "name",
        "namespace",
        "uid",
        "resourceVersion",
        "creationTimestamp",
    ] {
        let v = pick(k);
        if !v.is_null() {
            m.insert(k.into(), v);
        }
    }
    let get = |p: &str| crate::crd::json_path(obj, p).cloned();
    let spec_replicas = get(&paths.spec).and_then(|v| v.as_i64()).unwrap_or(0);
    let status_replicas = get(&paths.status).and_then(|v| v.as_i64()).unwrap_or(0);
    let selector = paths.selector.as_deref().and_then(get);
    let selector = selector.as_ref();
    let selector = match selector {
        Some(sel) if sel.get("matchLabels").is_some() || sel.get("matchExpressions").is_some() => {
            serde_json::from_value::<LabelSelector>(sel.clone())
                .ok()
                .and_then(|ls| ls.to_selector().ok())
                .map(|s| s.to_string())
                .unwrap_or_default()
        }
        Some(Value::Object(map)) => {
            let mut pairs: Vec<String> = map
                .iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect();
            pairs.sort();
            pairs.join(",")
        }
        Some(Value::String(text)) => text.clone(),
        _ => String::new(),
    };
    let mut status = json!({"replicas": status_replicas});
    if !selector.is_empty() {
        status["selector"] = json!(selector);
    }
    let mut out = Object::new();
    out.insert("kind".into(), json!("Scale"));
    out.insert("apiVersion".into(), json!("autoscaling/v1"));
    out.insert("metadata".into(), Value::Object(m));
    out.insert("spec".into(), json!({"replicas": spec_replicas}));
    out.insert("status".into(), status);
    out
}

fn replicas_of(scale: &Value) -> Result<i64, ApiError> {
    let r = scale
        .get("spec")
        .and_then(|s| s.get("replicas"))
        .cloned()
        .unwrap_or(json!(0));
    let n = r.as_i64().ok_or_else(|| {
        ApiError::bad_request(format!(
            "Scale in version \"v1\" cannot be handled as a Scale: spec.replicas: {r} is not an integer"
        ))
    })?;
    if n < 0 {
        return Err(ApiError {
            code: 422,
            reason: "Invalid",
            message: format!(
                "Scale.autoscaling \"{}\" is invalid: spec.replicas: Invalid value: {n}: must be greater than or equal to 0",
                scale.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("")
            ),
            details: None,
        });
    }
    Ok(n)
}

/// `GET …/scale`.
pub(crate) async fn get(ctx: &Ctx<'_>) -> Result<Object, ApiError> {
    let (obj, _) = ctx.current(ctx.name()).await?;
    Ok(to_scale(&obj, &Paths::of(ctx.r)))
}

/// `PUT …/scale` (`body` a Scale) or `PATCH …/scale` (`patch` applied to the current Scale).
pub(crate) async fn write(
    ctx: &Ctx<'_>,
    body: Option<&Value>,
    patch_body: Option<(&str, &Value)>,
) -> Result<Object, ApiError> {
    for _ in 0..5 {
        let (parent, kv) = ctx.current(ctx.name()).await?;
        let paths = Paths::of(ctx.r);
        let current = Value::Object(to_scale(&parent, &paths));
        let wanted = match (body, patch_body) {
            (Some(b), _) => b.clone(),
            (None, Some((kind, p))) => {
                let mut target = current.clone();
                match kind {
                    "application/merge-patch+json" => patch::merge_patch(&mut target, p),
                    "application/json-patch+json" => {
                        target = patch::json_patch(&target, p).map_err(crate::rest::patch_error)?;
                    }
                    "application/strategic-merge-patch+json" => {
                        target =
                            patch::strategic_merge(&target, p, "io.k8s.api.autoscaling.v1.Scale")
                                .map_err(crate::rest::patch_error)?;
                    }
                    other => return Err(ApiError::unsupported_media_type(other)),
                }
                target
            }
            (None, None) => current.clone(),
        };
        // A resourceVersion in the Scale is a precondition on the parent.
        if let Some(rv) = wanted
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .filter(|rv| !rv.is_empty())
        {
            if rv != kv.mod_revision.to_string() {
                return Err(ApiError::conflict(ctx.r, ctx.name()));
            }
        }
        let replicas = replicas_of(&wanted)?;
        let mut whole = Value::Object(parent.clone());
        set_path(&mut whole, &paths.spec, json!(replicas));
        let Value::Object(mut new) = whole else {
            return Err(ApiError::internal("the scaled object is not an object"));
        };
        object::set_resource_version(&mut new, kv.mod_revision);
        match crate::rest::write_parent(ctx, new, &parent, &kv).await {
            Err(e) if e.reason == "Conflict" && body.is_none() => continue,
            Err(e) => return Err(e),
            Ok(updated) => return Ok(to_scale(&updated, &paths)),
        }
    }
    Err(ApiError::conflict(ctx.r, ctx.name()))
}
