//! The pod subresources that act: `binding` (the scheduler's write of a node name) and
//! `eviction` (a delete that honours PodDisruptionBudgets).

use crate::error::ApiError;
use crate::object::{self, Object};
use crate::rest::Ctx;
use bosun_api_types::meta::v1::LabelSelector;
use bosun_api_types::selector::LabelSelectorExt;
use bosun_store::RangeRequest;
use serde_json::{json, Value};

fn success(code: u16) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": code})
}

/// `POST …/pods/{name}/binding`: assigns the pod to the Binding's target node.
pub(crate) async fn bind(ctx: &Ctx<'_>, body: &Object) -> Result<Value, ApiError> {
    let target = body
        .get("target")
        .and_then(|t| t.get("name"))
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| {
            ApiError::invalid(
                ctx.r,
                ctx.name(),
                &[bosun_api_types::validation::FieldError::required(
                    &bosun_api_types::validation::FieldPath::new("target").child("name"),
                    "",
                )],
            )
        })?
        .to_owned();
    for _ in 0..5 {
        let (pod, kv) = ctx.current(ctx.name()).await?;
        if object::field(&pod, "metadata.deletionTimestamp").is_some() {
            return Err(ApiError::conflict_message(format!(
                "pod {} is being deleted, cannot be assigned to a host",
                ctx.name()
            )));
        }
        if let Some(node) = object::field(&pod, "spec.nodeName").filter(|n| !n.is_empty()) {
            return Err(ApiError::conflict_message(format!(
                "pod {} is already assigned to node \"{node}\"",
                ctx.name()
            )));
        }
        let mut new = pod.clone();
        if let Some(Value::Object(spec)) = new.get_mut("spec") {
            spec.insert("nodeName".into(), json!(target));
        }
        // Annotations of the Binding land on the pod.
        if let Some(Value::Object(ann)) = body.get("metadata").and_then(|m| m.get("annotations")) {
            if let Some(Value::Object(meta)) = new.get_mut("metadata") {
                let dst = meta.entry("annotations").or_insert_with(|| json!({}));
                if let Value::Object(dst) = dst {
                    for (k, v) in ann {
                        dst.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        let status = new.entry("status").or_insert_with(|| json!({}));
        if let Value::Object(st) = status {
            let conditions = st.entry("conditions").or_insert_with(|| json!([]));
            if let Value::Array(cs) = conditions {
                cs.retain(|c| c["type"] != "PodScheduled");
                cs.push(
                    json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null,
                               "lastTransitionTime": bosun_api_types::Time::now()}),
                );
            }
        }
        // Spec and status change together, as upstream's binding registry writes them.
        let bytes = object::to_stored(&mut new)?;
        match ctx
            .server
            .store()
            .update(&kv.key, bytes, kv.mod_revision)
            .await
        {
            Err(bosun_store::Error::Conflict { .. }) => continue,
            Err(e) => return Err(ApiError::from_store(e, ctx.r, ctx.name())),
            Ok(_) => return Ok(success(201)),
        }
    }
    Err(ApiError::conflict(ctx.r, ctx.name()))
}

/// `POST …/pods/{name}/eviction`: deletes the pod unless a PodDisruptionBudget forbids it.
pub(crate) async fn evict(ctx: &Ctx<'_>, body: &Object) -> Result<Value, ApiError> {
    let (pod, _) = ctx.current(ctx.name()).await?;
    let phase = object::field(&pod, "status.phase").unwrap_or_default();
    let terminating = object::field(&pod, "metadata.deletionTimestamp").is_some();
    // Finished, unscheduled or already terminating pods are not protected by budgets.
    let protected =
        !(phase == "Succeeded" || phase == "Failed" || phase == "Pending" || terminating);
    if protected {
        check_budgets(ctx, &pod).await?;
    }
    let options = body
        .get("deleteOptions")
        .map(|o| o.to_string())
        .unwrap_or_default();
    crate::rest::delete_parent(ctx, options.as_bytes()).await?;
    Ok(success(201))
}

async fn check_budgets(ctx: &Ctx<'_>, pod: &Object) -> Result<(), ApiError> {
    let ns = ctx.namespace.unwrap_or("default");
    let prefix = format!("/registry/policy/poddisruptionbudgets/{ns}/");
    let page = ctx
        .server
        .store()
        .range(RangeRequest::prefix(prefix))
        .await
        .map_err(ApiError::internal)?;
    let labels = object::labels(pod);
    let mut matching = Vec::new();
    for kv in &page.kvs {
        let pdb = object::from_stored(&kv.value)?;
        let selector = pdb
            .get("spec")
            .and_then(|s| s.get("selector"))
            .cloned()
            .and_then(|s| serde_json::from_value::<LabelSelector>(s).ok())
            .and_then(|s| s.to_selector().ok());
        if selector.is_some_and(|s| !s.is_everything() && s.matches(&labels)) {
            matching.push((pdb, kv.clone()));
        }
    }
    if matching.len() > 1 {
        return Err(ApiError {
            code: 500,
            reason: "InternalError",
            message: "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.".into(),
            details: None,
        });
    }
    let Some((mut pdb, kv)) = matching.pop() else {
        return Ok(());
    };
    let allowed = pdb
        .get("status")
        .and_then(|s| s.get("disruptionsAllowed"))
        .and_then(Value::as_i64)
        .unwrap_or(0);
    if allowed <= 0 {
        let name = object::field(&pdb, "metadata.name").unwrap_or_default();
        return Err(ApiError {
            code: 429,
            reason: "TooManyRequests",
            message: "Cannot evict pod as it would violate the pod's disruption budget.".into(),
            details: Some(Box::new(bosun_api_types::meta::v1::StatusDetails {
                causes: vec![bosun_api_types::meta::v1::StatusCause {
                    reason: Some("DisruptionBudget".into()),
                    message: Some(format!(
                        "The disruption budget {name} needs {} healthy pods and has {} currently",
                        pdb["status"]["desiredHealthy"].as_i64().unwrap_or(0),
                        pdb["status"]["currentHealthy"].as_i64().unwrap_or(0)
                    )),
                    field: None,
                }],
                ..Default::default()
            })),
        });
    }
    // Spend one disruption: the budget's controller recomputes it from the pods it sees.
    if let Some(Value::Object(st)) = pdb.get_mut("status") {
        st.insert("disruptionsAllowed".into(), json!(allowed - 1));
        let disrupted = st.entry("disruptedPods").or_insert_with(|| json!({}));
        if let Value::Object(d) = disrupted {
            d.insert(ctx.name().to_owned(), json!(bosun_api_types::Time::now()));
        }
    }
    let bytes = object::to_stored(&mut pdb)?;
    ctx.server
        .store()
        .update(&kv.key, bytes, kv.mod_revision)
        .await
        .map_err(|e| match e {
            bosun_store::Error::Conflict { .. } => ApiError {
                code: 429,
                reason: "TooManyRequests",
                message: "the disruption budget changed during the eviction; retry".into(),
                details: None,
            },
            other => ApiError::internal(other),
        })?;
    Ok(())
}
