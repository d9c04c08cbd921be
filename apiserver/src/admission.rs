//! The default admission plugins that read other objects: Priority (from PriorityClasses),
//! LimitRanger, ResourceQuota, DefaultStorageClass, StorageObjectInUseProtection and
//! TaintNodesByCondition. They read through [`crate::ApiServer::list_objects`] (the watch cache when
//! warm) and follow upstream's rules and messages.

use crate::auth::{AdmissionPlugin, AdmissionRequest, Operation};
use crate::error::ApiError;
use crate::object::Object;
use bosun_api_types::quota::{add_into, pod_requests_limits, resource_list, usage};
use bosun_api_types::Quantity;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// A 403 from an admission plugin, worded as upstream's `admission.NewForbidden`.
fn forbidden(req: &AdmissionRequest<'_>, reason: impl std::fmt::Display) -> ApiError {
    ApiError {
        code: 403,
        reason: "Forbidden",
        message: format!(
            "{} \"{}\" is forbidden: {reason}",
            req.resource.group_resource(),
            req.name
        ),
        details: None,
    }
}

fn is_create_of(req: &AdmissionRequest<'_>, group: &str, kind: &str) -> bool {
    req.operation == Operation::Create
        && req.subresource.is_none()
        && req.resource.group == group
        && req.resource.kind == kind
}

fn spec_mut(obj: &mut Object) -> &mut Map<String, Value> {
    let spec = obj.entry("spec").or_insert_with(|| json!({}));
    if !spec.is_object() {
        *spec = json!({});
    }
    match spec {
        Value::Object(m) => m,
        _ => unreachable!("spec was just made an object"),
    }
}

/// The string at a path of fields in an object.
fn str_at<'a>(o: &'a Object, path: &[&str]) -> Option<&'a str> {
    let (first, rest) = path.split_first()?;
    rest.iter()
        .try_fold(o.get(*first)?, |v, k| v.get(k))?
        .as_str()
}

/// `k=v,k=v` in key order, as upstream's quota messages print resource lists.
fn pretty(list: &BTreeMap<String, Quantity>) -> String {
    list.iter()
        .map(|(k, v)| format!("{k}={}", v.to_canonical()))
        .collect::<Vec<_>>()
        .join(",")
}

// ---------------------------------------------------------------------------------------------
// Priority

/// Resolves a pod's priority from its PriorityClass (or the global default class) and rejects
/// pods that name a missing class or set a priority that disagrees with it.
pub struct Priority;

#[async_trait::async_trait]
impl AdmissionPlugin for Priority {
    fn name(&self) -> &str {
        "Priority"
    }
    async fn mutate(&self, req: &AdmissionRequest<'_>, obj: &mut Object) -> Result<(), ApiError> {
        if !is_create_of(req, "", "Pod") {
            return Ok(());
        }
        let classes = req
            .server
            .list_objects("scheduling.k8s.io", "priorityclasses", None)
            .await?;
        let spec = spec_mut(obj);
        let name = spec
            .get("priorityClassName")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let class = if name.is_empty() {
            // The global default (the lowest-valued one if several claim it).
            classes
                .iter()
                .filter(|c| c.get("globalDefault").and_then(Value::as_bool) == Some(true))
                .min_by_key(|c| c.get("value").and_then(Value::as_i64).unwrap_or(0))
        } else {
            let found = classes.iter().find(|c| {
                c.get("metadata")
                    .and_then(|m| m.get("name"))
                    .and_then(Value::as_str)
                    == Some(name.as_str())
            });
            match found {
                Some(c) => Some(c),
                None => {
                    return Err(forbidden(
                        req,
                        format!("no PriorityClass with name {name} was found"),
                    ))
                }
            }
        };
        let (value, policy) = match class {
            Some(c) => {
                if name.is_empty() {
                    if let Some(n) = c
                        .get("metadata")
                        .and_then(|m| m.get("name"))
                        .and_then(Value::as_str)
                    {
                        spec.insert("priorityClassName".into(), json!(n));
                    }
                }
                (
                    c.get("value").and_then(Value::as_i64).unwrap_or(0),
                    c.get("preemptionPolicy")
                        .and_then(Value::as_str)
                        .unwrap_or("PreemptLowerPriority")
                        .to_owned(),
                )
            }
            None => (0, "PreemptLowerPriority".to_owned()),
        };
        if let Some(given) = spec.get("priority").and_then(Value::as_i64) {
            if given != value {
                return Err(forbidden(
                    req,
                    format!(
                        "the integer value of priority ({given}) must not be provided in pod spec; priority admission controller computed {value} from the given PriorityClass name"
                    ),
                ));
            }
        }
        if let Some(given) = spec.get("preemptionPolicy").and_then(Value::as_str) {
            if given != policy {
                return Err(forbidden(
                    req,
                    format!(
                        "the string value of PreemptionPolicy ({given}) must not be provided in pod spec; priority admission controller computed {policy} from the given PriorityClass name"
                    ),
                ));
            }
        }
        spec.insert("priority".into(), json!(value));
        spec.insert("preemptionPolicy".into(), json!(policy));
        Ok(())
    }
}

/// The PriorityClasses every cluster has (created by `bootstrap`).
pub(crate) fn system_priority_classes() -> [(&'static str, i64, &'static str); 2] {
    [
        (
            "system-node-critical",
            2_000_001_000,
            "Used for system critical pods that must not be moved from their current node.",
        ),
        (
            "system-cluster-critical",
            2_000_000_000,
            "Used for system critical pods that must run in the cluster, but can be moved to another node if necessary.",
        ),
    ]
}

// ---------------------------------------------------------------------------------------------
// LimitRanger

/// The container defaults of a `Container` limit range item, with upstream's API defaulting
/// (default limit from max; default request from the default limit, then from min).
fn container_defaults(item: &Value) -> (BTreeMap<String, Value>, BTreeMap<String, Value>) {
    let obj = |k: &str| -> BTreeMap<String, Value> {
        item.get(k)
            .and_then(Value::as_object)
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default()
    };
    let mut limits = obj("default");
    for (k, v) in obj("max") {
        limits.entry(k).or_insert(v);
    }
    let mut requests = obj("defaultRequest");
    for (k, v) in &limits {
        requests.entry(k.clone()).or_insert_with(|| v.clone());
    }
    for (k, v) in obj("min") {
        requests.entry(k).or_insert(v);
    }
    (requests, limits)
}

fn check_min_max(
    item: &Value,
    what: &str,
    requests: &BTreeMap<String, Quantity>,
    limits: &BTreeMap<String, Quantity>,
    errors: &mut Vec<String>,
) {
    for (res, min) in resource_list(item.get("min")) {
        let min_s = min.to_canonical();
        match requests.get(&res) {
            None => errors.push(format!(
                "minimum {res} usage per {what} is {min_s}.  No request is specified"
            )),
            Some(r) if r < &min => errors.push(format!(
                "minimum {res} usage per {what} is {min_s}, but request is {}",
                r.to_canonical()
            )),
            Some(_) => {}
        }
        if let Some(l) = limits.get(&res) {
            if l < &min {
                errors.push(format!(
                    "minimum {res} usage per {what} is {min_s}, but limit is {}",
                    l.to_canonical()
                ));
            }
        }
    }
    for (res, max) in resource_list(item.get("max")) {
        let max_s = max.to_canonical();
        match limits.get(&res) {
            None => errors.push(format!(
                "maximum {res} usage per {what} is {max_s}.  No limit is specified"
            )),
            Some(l) if l > &max => errors.push(format!(
                "maximum {res} usage per {what} is {max_s}, but limit is {}",
                l.to_canonical()
            )),
            Some(_) => {}
        }
        if let Some(r) = requests.get(&res) {
            if r > &max {
                errors.push(format!(
                    "maximum {res} usage per {what} is {max_s}, but request is {}",
                    r.to_canonical()
                ));
            }
        }
    }
}

fn aggregate(errors: Vec<String>) -> String {
    if errors.len() == 1 {
        errors.into_iter().next().unwrap_or_default()
    } else {
        format!("[{}]", errors.join(", "))
    }
}

/// Applies the LimitRanges of a namespace: default requests and limits for containers that set
/// none (recorded in the `kubernetes.io/limit-ranger` annotation), then min/max checks for
/// containers, pods and PersistentVolumeClaims.
pub struct LimitRanger;

impl LimitRanger {
    async fn ranges(req: &AdmissionRequest<'_>) -> Result<Vec<Value>, ApiError> {
        let Some(ns) = req.namespace else {
            return Ok(Vec::new());
        };
        let ranges = req.server.list_objects("", "limitranges", Some(ns)).await?;
        Ok(ranges
            .iter()
            .filter_map(|r| r.get("spec")?.get("limits")?.as_array())
            .flatten()
            .cloned()
            .collect())
    }
}

const CONTAINER_LISTS: [(&str, &str); 2] = [
    ("initContainers", "init container"),
    ("containers", "container"),
];

#[async_trait::async_trait]
impl AdmissionPlugin for LimitRanger {
    fn name(&self) -> &str {
        "LimitRanger"
    }
    async fn mutate(&self, req: &AdmissionRequest<'_>, obj: &mut Object) -> Result<(), ApiError> {
        if !is_create_of(req, "", "Pod") {
            return Ok(());
        }
        let items = Self::ranges(req).await?;
        let mut annotations = Vec::new();
        for item in items
            .iter()
            .filter(|i| i.get("type").and_then(Value::as_str) == Some("Container"))
        {
            let (def_requests, def_limits) = container_defaults(item);
            let spec = spec_mut(obj);
            for (list, label) in CONTAINER_LISTS {
                let Some(Value::Array(containers)) = spec.get_mut(list) else {
                    continue;
                };
                for c in containers.iter_mut() {
                    let name = c
                        .get("name")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_owned();
                    let Some(c) = c.as_object_mut() else { continue };
                    let resources = c.entry("resources").or_insert_with(|| json!({}));
                    let mut set = |field: &str, defaults: &BTreeMap<String, Value>| {
                        let mut names = Vec::new();
                        if defaults.is_empty() {
                            return names;
                        }
                        let Some(r) = resources.as_object_mut() else {
                            return names;
                        };
                        let slot = r.entry(field).or_insert_with(|| json!({}));
                        if let Some(m) = slot.as_object_mut() {
                            for (k, v) in defaults {
                                if !m.contains_key(k) {
                                    m.insert(k.clone(), v.clone());
                                    names.push(k.clone());
                                }
                            }
                        }
                        names
                    };
                    let mut set_requests = set("requests", &def_requests);
                    let mut set_limits = set("limits", &def_limits);
                    set_requests.sort();
                    set_limits.sort();
                    if !set_requests.is_empty() {
                        annotations.push(format!(
                            "{} request for {label} {name}",
                            set_requests.join(", ")
                        ));
                    }
                    if !set_limits.is_empty() {
                        annotations.push(format!(
                            "{} limit for {label} {name}",
                            set_limits.join(", ")
                        ));
                    }
                }
            }
        }
        if !annotations.is_empty() {
            let meta = obj.entry("metadata").or_insert_with(|| json!({}));
            if let Some(meta) = meta.as_object_mut() {
                let ann = meta.entry("annotations").or_insert_with(|| json!({}));
                if let Some(ann) = ann.as_object_mut() {
                    ann.insert(
                        "kubernetes.io/limit-ranger".into(),
                        json!(format!(
                            "LimitRanger plugin set: {}",
                            annotations.join("; ")
                        )),
                    );
                }
            }
        }
        Ok(())
    }

    async fn validate(&self, req: &AdmissionRequest<'_>, obj: &Object) -> Result<(), ApiError> {
        let pod = is_create_of(req, "", "Pod");
        let pvc = is_create_of(req, "", "PersistentVolumeClaim");
        if !pod && !pvc {
            return Ok(());
        }
        let items = Self::ranges(req).await?;
        if items.is_empty() {
            return Ok(());
        }
        let mut errors = Vec::new();
        let spec = obj.get("spec").cloned().unwrap_or_else(|| json!({}));
        for item in &items {
            match item.get("type").and_then(Value::as_str) {
                Some("Container") if pod => {
                    for (list, _) in CONTAINER_LISTS {
                        for c in spec
                            .get(list)
                            .and_then(Value::as_array)
                            .into_iter()
                            .flatten()
                        {
                            let r = c.get("resources");
                            check_min_max(
                                item,
                                "Container",
                                &resource_list(r.and_then(|r| r.get("requests"))),
                                &resource_list(r.and_then(|r| r.get("limits"))),
                                &mut errors,
                            );
                        }
                    }
                }
                Some("Pod") if pod => {
                    let (requests, limits) = pod_requests_limits(&spec);
                    check_min_max(item, "Pod", &requests, &limits, &mut errors);
                }
                Some("PersistentVolumeClaim") if pvc => {
                    let r = spec.get("resources");
                    check_min_max(
                        item,
                        "PersistentVolumeClaim",
                        &resource_list(r.and_then(|r| r.get("requests"))),
                        &resource_list(r.and_then(|r| r.get("limits"))),
                        &mut errors,
                    );
                }
                _ => {}
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(forbidden(req, aggregate(errors)))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// ResourceQuota

/// Which of a pod's compute resources a quota requires every container to state.
fn missing_compute(hard: &BTreeMap<String, Quantity>, spec: &Value) -> Vec<String> {
    let mut missing = Vec::new();
    for key in hard.keys() {
        let (field, res) = match key.as_str() {
            "cpu" | "memory" => ("requests", key.as_str()),
            k => match k.split_once('.') {
                Some(("requests", r)) if r == "cpu" || r == "memory" => ("requests", r),
                Some(("limits", r)) if r == "cpu" || r == "memory" => ("limits", r),
                _ => continue,
            },
        };
        let all_state = spec
            .get("containers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .chain(
                spec.get("initContainers")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten(),
            )
            .all(|c| {
                c.get("resources")
                    .and_then(|r| r.get(field))
                    .and_then(|m| m.get(res))
                    .is_some()
            });
        if !all_state {
            missing.push(key.clone());
        }
    }
    missing
}

/// Enforces the ResourceQuotas of a namespace on creates: the namespace's current usage of the
/// created kind (from the watch cache) plus the new object must stay within every quota's hard
/// limits; an admitted create records the new usage in the quota's status, as upstream's
/// quota admission does. Quotas with scopes or a scope selector are not enforced yet.
pub struct ResourceQuota;

#[async_trait::async_trait]
impl AdmissionPlugin for ResourceQuota {
    fn name(&self) -> &str {
        "ResourceQuota"
    }
    async fn validate(&self, req: &AdmissionRequest<'_>, obj: &Object) -> Result<(), ApiError> {
        let (Some(ns), Operation::Create, None) = (req.namespace, req.operation, req.subresource)
        else {
            return Ok(());
        };
        let r = req.resource;
        let quotas = req
            .server
            .list_objects("", "resourcequotas", Some(ns))
            .await?;
        if quotas.is_empty() {
            return Ok(());
        }
        let requested = usage(&r.group, &r.plural, obj);
        if requested.is_empty() {
            return Ok(());
        }
        // The namespace's usage of this kind now.
        let mut used: BTreeMap<String, Quantity> = BTreeMap::new();
        for other in req
            .server
            .list_objects(&r.group, &r.plural, Some(ns))
            .await?
        {
            for (k, q) in usage(&r.group, &r.plural, &other) {
                add_into(&mut used, k, &q);
            }
        }
        let spec = obj.get("spec").cloned().unwrap_or(Value::Null);
        let mut updates = Vec::new();
        for quota in &quotas {
            let qspec = quota.get("spec").cloned().unwrap_or(Value::Null);
            if qspec.get("scopes").is_some() || qspec.get("scopeSelector").is_some() {
                continue;
            }
            let name = str_at(quota, &["metadata", "name"])
                .unwrap_or("")
                .to_owned();
            let hard = resource_list(qspec.get("hard"));
            if r.group.is_empty() && r.plural == "pods" {
                let missing = missing_compute(&hard, &spec);
                if !missing.is_empty() {
                    return Err(forbidden(
                        req,
                        format!("failed quota: {name}: must specify {}", missing.join(",")),
                    ));
                }
            }
            let mut exceeded = Vec::new();
            let mut new_used = resource_list(quota.get("status").and_then(|s| s.get("used")));
            for (k, limit) in &hard {
                let Some(req_q) = requested.get(k) else {
                    continue;
                };
                let now = used.get(k).cloned().unwrap_or_default();
                let after = now.checked_add(req_q).unwrap_or(now);
                if &after > limit {
                    exceeded.push(k.clone());
                }
                new_used.insert(k.clone(), after);
            }
            if !exceeded.is_empty() {
                let mask = |m: &BTreeMap<String, Quantity>| -> BTreeMap<String, Quantity> {
                    exceeded
                        .iter()
                        .map(|k| (k.clone(), m.get(k).cloned().unwrap_or_default()))
                        .collect()
                };
                return Err(forbidden(
                    req,
                    format!(
                        "exceeded quota: {name}, requested: {}, used: {}, limited: {}",
                        pretty(&mask(&requested)),
                        pretty(&mask(&used)),
                        pretty(&mask(&hard))
                    ),
                ));
            }
            for k in hard.keys() {
                new_used.entry(k.clone()).or_default();
            }
            updates.push((name, qspec.get("hard").cloned(), new_used));
        }
        if !req.dry_run {
            for (name, hard, new_used) in updates {
                let used: Map<String, Value> = new_used
                    .into_iter()
                    .map(|(k, q)| (k, json!(q.to_canonical())))
                    .collect();
                let status = json!({"hard": hard.unwrap_or_else(|| json!({})), "used": used});
                // Best effort: the quota controller recomputes usage; a lost race here only
                // delays the recorded figure.
                if let Err(e) = req
                    .server
                    .set_status("", "resourcequotas", Some(ns), &name, status)
                    .await
                {
                    tracing::debug!(quota = %name, error = %e, "recording quota usage failed");
                }
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// DefaultStorageClass, StorageObjectInUseProtection, TaintNodesByCondition

/// Gives a PersistentVolumeClaim without a class the default StorageClass (the newest one
/// annotated `storageclass.kubernetes.io/is-default-class: "true"`).
pub struct DefaultStorageClass;

#[async_trait::async_trait]
impl AdmissionPlugin for DefaultStorageClass {
    fn name(&self) -> &str {
        "DefaultStorageClass"
    }
    async fn mutate(&self, req: &AdmissionRequest<'_>, obj: &mut Object) -> Result<(), ApiError> {
        if !is_create_of(req, "", "PersistentVolumeClaim") {
            return Ok(());
        }
        if obj
            .get("spec")
            .and_then(|s| s.get("storageClassName"))
            .is_some_and(|c| !c.is_null())
        {
            return Ok(());
        }
        let classes = req
            .server
            .list_objects("storage.k8s.io", "storageclasses", None)
            .await?;
        let default = newest_default_class(&classes);
        if let Some(name) = default.and_then(|c| str_at(c, &["metadata", "name"])) {
            spec_mut(obj).insert("storageClassName".into(), json!(name));
        }
        Ok(())
    }
}

/// The default StorageClass: among those annotated as default, the newest (upstream 1.28+).
fn newest_default_class(classes: &[Object]) -> Option<&Object> {
    classes
        .iter()
        .filter(|c| {
            let ann = |k: &str| str_at(c, &["metadata", "annotations", k]) == Some("true");
            ann("storageclass.kubernetes.io/is-default-class")
                || ann("storageclass.beta.kubernetes.io/is-default-class")
        })
        .max_by(|a, b| {
            let ts = |o: &Object| {
                str_at(o, &["metadata", "creationTimestamp"])
                    .unwrap_or("")
                    .to_owned()
            };
            ts(a).cmp(&ts(b))
        })
}

/// Adds the protection finalizers to new PersistentVolumeClaims and PersistentVolumes, so
/// that one in use is not removed until its protection controller lets it go.
pub struct StorageObjectInUseProtection;

#[async_trait::async_trait]
impl AdmissionPlugin for StorageObjectInUseProtection {
    fn name(&self) -> &str {
        "StorageObjectInUseProtection"
    }
    async fn mutate(&self, req: &AdmissionRequest<'_>, obj: &mut Object) -> Result<(), ApiError> {
        let finalizer = if is_create_of(req, "", "PersistentVolumeClaim") {
            "kubernetes.io/pvc-protection"
        } else if is_create_of(req, "", "PersistentVolume") {
            "kubernetes.io/pv-protection"
        } else {
            return Ok(());
        };
        let meta = obj.entry("metadata").or_insert_with(|| json!({}));
        if let Some(meta) = meta.as_object_mut() {
            let list = meta.entry("finalizers").or_insert_with(|| json!([]));
            if let Some(list) = list.as_array_mut() {
                if !list.iter().any(|f| f == finalizer) {
                    list.push(json!(finalizer));
                }
            }
        }
        Ok(())
    }
}

/// Taints a new Node `node.kubernetes.io/not-ready:NoSchedule` until its kubelet reports Ready
/// (the node lifecycle controller removes the taint).
pub struct TaintNodesByCondition;

#[async_trait::async_trait]
impl AdmissionPlugin for TaintNodesByCondition {
    fn name(&self) -> &str {
        "TaintNodesByCondition"
    }
    async fn mutate(&self, req: &AdmissionRequest<'_>, obj: &mut Object) -> Result<(), ApiError> {
        if !is_create_of(req, "", "Node") {
            return Ok(());
        }
        let spec = spec_mut(obj);
        let taints = spec.entry("taints").or_insert_with(|| json!([]));
        if let Some(list) = taints.as_array_mut() {
            if !list.iter().any(|t| {
                t.get("key").and_then(Value::as_str) == Some("node.kubernetes.io/not-ready")
            }) {
                list.push(json!({"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"}));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_effective_resources_take_the_largest_init_container() {
        let spec = json!({
            "containers": [
                {"resources": {"requests": {"cpu": "100m"}, "limits": {"cpu": "200m"}}},
                {"resources": {"requests": {"cpu": "150m", "memory": "64Mi"}}},
            ],
            "initContainers": [{"resources": {"requests": {"cpu": "1"}}}],
            "overhead": {"memory": "10Mi"},
        });
        let (req, lim) = pod_requests_limits(&spec);
        assert_eq!(req["cpu"].to_canonical(), "1");
        assert_eq!(req["memory"].to_canonical(), "74Mi");
        assert_eq!(lim["cpu"].to_canonical(), "200m");
    }

    #[test]
    fn limit_range_defaults_follow_upstream_api_defaulting() {
        let item = json!({"type": "Container", "max": {"cpu": "2"}, "min": {"memory": "10Mi"},
            "default": {"memory": "1Gi"}});
        let (req, lim) = container_defaults(&item);
        assert_eq!(lim["cpu"], "2");
        assert_eq!(lim["memory"], "1Gi");
        assert_eq!(req["cpu"], "2");
        assert_eq!(req["memory"], "1Gi");
        let mut errors = Vec::new();
        check_min_max(
            &item,
            "Container",
            &resource_list(Some(&json!({"memory": "5Mi"}))),
            &resource_list(Some(&json!({"cpu": "3"}))),
            &mut errors,
        );
        assert_eq!(
            errors,
            [
                "minimum memory usage per Container is 10Mi, but request is 5Mi",
                "maximum cpu usage per Container is 2, but limit is 3",
            ]
        );
    }

    #[test]
    fn the_newest_default_storage_class_wins() {
        let class = |name: &str, default: bool, ts: &str| -> Object {
            let mut c = json!({"metadata": {"name": name, "creationTimestamp": ts}});
            if default {
                c["metadata"]["annotations"] =
                    json!({"storageclass.kubernetes.io/is-default-class": "true"});
            }
            c.as_object().cloned().unwrap_or_default()
        };
        let classes = [
            class("old", true, "2020-01-01T00:00:00Z"),
            class("new", true, "2021-01-01T00:00:00Z"),
            class("newest-but-not-default", false, "2022-01-01T00:00:00Z"),
        ];
        let picked = newest_default_class(&classes).and_then(|c| str_at(c, &["metadata", "name"]));
        assert_eq!(picked, Some("new"));
        assert!(newest_default_class(&classes[2..]).is_none());
    }

    #[test]
    fn quota_usage_of_pods_services_and_claims() {
        let pod = json!({"spec": {"containers": [{"resources": {"requests": {"cpu": "250m"}}}]}});
        let u = usage("", "pods", pod.as_object().unwrap());
        assert_eq!(pretty(&u), "count/pods=1,cpu=250m,pods=1,requests.cpu=250m");
        let done = json!({"spec": {}, "status": {"phase": "Succeeded"}});
        assert!(usage("", "pods", done.as_object().unwrap()).is_empty());
        let svc = json!({"spec": {"type": "NodePort", "ports": [{"port": 80}, {"port": 443}]}});
        assert_eq!(
            pretty(&usage("", "services", svc.as_object().unwrap())),
            "count/services=1,services=1,services.nodeports=2"
        );
        let d = json!({"spec": {}});
        assert_eq!(
            pretty(&usage("apps", "deployments", d.as_object().unwrap())),
            "count/deployments.apps=1"
        );
        let spec = json!({"containers": [{"resources": {"requests": {"cpu": "1"}}}]});
        let hard = resource_list(Some(
            &json!({"requests.cpu": "2", "limits.memory": "1Gi", "pods": "3"}),
        ));
        assert_eq!(missing_compute(&hard, &spec), ["limits.memory"]);
    }
}
