//! What objects count against ResourceQuotas, under upstream's resource names: shared by the
//! API server's quota admission and the quota controller that recomputes usage.
//!
//! ```
//! use bosun_api_types::quota::usage;
//! let pod = serde_json::json!({"spec": {"containers": [
//!     {"name": "c", "resources": {"requests": {"cpu": "250m"}}}]}});
//! let u = usage("", "pods", pod.as_object().unwrap());
//! assert_eq!(u["requests.cpu"].to_canonical(), "250m");
//! assert_eq!(u["count/pods"].value(), 1);
//! ```

use crate::Quantity;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

fn str_at<'a>(o: &'a Map<String, Value>, path: &[&str]) -> Option<&'a str> {
    let (first, rest) = path.split_first()?;
    rest.iter()
        .try_fold(o.get(*first)?, |v, k| v.get(k))?
        .as_str()
}

/// A resource list (`{"cpu": "100m", …}`) with its quantities parsed; unparsable ones dropped
/// (validation reports them).
pub fn resource_list(v: Option<&Value>) -> BTreeMap<String, Quantity> {
    v.and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), Quantity::parse(v.as_str()?).ok()?)))
                .collect()
        })
        .unwrap_or_default()
}

/// Adds `q` to `total[key]`.
pub fn add_into(total: &mut BTreeMap<String, Quantity>, key: String, q: &Quantity) {
    let sum = match total.get(&key) {
        Some(old) => old.checked_add(q).unwrap_or(*old),
        None => *q,
    };
    total.insert(key, sum);
}

/// A pod's effective requests and limits: the sum over its containers, raised to any single
/// init container's (which run one at a time, before the others), plus the pod overhead.
pub fn pod_requests_limits(
    spec: &Value,
) -> (BTreeMap<String, Quantity>, BTreeMap<String, Quantity>) {
    let mut out = (BTreeMap::new(), BTreeMap::new());
    for (field, total) in [("requests", &mut out.0), ("limits", &mut out.1)] {
        for c in spec
            .get("containers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            for (k, q) in resource_list(c.get("resources").and_then(|r| r.get(field))) {
                add_into(total, k, &q);
            }
        }
        for c in spec
            .get("initContainers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            for (k, q) in resource_list(c.get("resources").and_then(|r| r.get(field))) {
                if total.get(&k).is_none_or(|t| *t < q) {
                    total.insert(k, q);
                }
            }
        }
        for (k, q) in resource_list(spec.get("overhead")) {
            add_into(total, k, &q);
        }
    }
    out
}

/// What one object counts against quotas, under upstream's resource names.
pub fn usage(group: &str, plural: &str, obj: &Map<String, Value>) -> BTreeMap<String, Quantity> {
    let mut u = BTreeMap::new();
    let one = Quantity::from_int(1, crate::QuantityFormat::DecimalSI);
    let count = if group.is_empty() {
        format!("count/{plural}")
    } else {
        format!("count/{plural}.{group}")
    };
    u.insert(count, one);
    let spec = obj.get("spec").cloned().unwrap_or(Value::Null);
    match (group, plural) {
        ("", "pods") => {
            let phase = str_at(obj, &["status", "phase"]);
            if matches!(phase, Some("Succeeded") | Some("Failed")) {
                return BTreeMap::new();
            }
            u.insert("pods".into(), one);
            let (requests, limits) = pod_requests_limits(&spec);
            for (k, q) in requests {
                if k == "cpu" || k == "memory" {
                    u.insert(k.clone(), q);
                }
                u.insert(format!("requests.{k}"), q);
            }
            for (k, q) in limits {
                u.insert(format!("limits.{k}"), q);
            }
        }
        ("", "services") => {
            u.insert("services".into(), one);
            let ty = spec
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or("ClusterIP");
            if ty == "LoadBalancer" {
                u.insert("services.loadbalancers".into(), one);
            }
            if ty == "NodePort" || ty == "LoadBalancer" {
                let ports = spec
                    .get("ports")
                    .and_then(Value::as_array)
                    .map_or(0, Vec::len);
                u.insert(
                    "services.nodeports".into(),
                    Quantity::from_int(ports as i64, crate::QuantityFormat::DecimalSI),
                );
            }
        }
        ("", "persistentvolumeclaims") => {
            u.insert("persistentvolumeclaims".into(), one);
            let storage = resource_list(spec.get("resources").and_then(|r| r.get("requests")))
                .remove("storage");
            if let Some(s) = &storage {
                u.insert("requests.storage".into(), *s);
            }
            if let Some(class) = spec.get("storageClassName").and_then(Value::as_str) {
                let prefix = format!("{class}.storageclass.storage.k8s.io");
                u.insert(format!("{prefix}/persistentvolumeclaims"), one);
                if let Some(s) = storage {
                    u.insert(format!("{prefix}/requests.storage"), s);
                }
            }
        }
        ("", legacy @ ("configmaps" | "secrets" | "replicationcontrollers" | "resourcequotas")) => {
            u.insert(legacy.to_owned(), one);
        }
        _ => {}
    }
    u
}
