//! Per-kind validation with upstream's rules and messages (a growing subset): pod specs in pods
//! and every pod template; workload selectors, replicas and restart policies; service types,
//! ports and port names; ConfigMap and Secret keys; replication controller selectors; and on
//! updates the immutable fields (workload selectors, pod specs, StatefulSet specs, immutable
//! ConfigMaps and Secrets, Secret types).

use crate::object::Object;
use crate::resources::ApiResource;
use bosun_api_types::validation::{is_dns1123_label, FieldError, FieldPath};
use serde_json::Value;

/// Cluster policy that validation enforces.
#[derive(Clone, Copy, Debug)]
pub struct Policy {
    /// Whether containers may run privileged (upstream's `--allow-privileged`).
    pub allow_privileged: bool,
}

/// Validates a defaulted object of `r`'s kind.
pub fn validate(r: &ApiResource, o: &Object, policy: Policy) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let root = Value::Object(o.clone());
    let template = |path: &str| root.pointer(path);
    let spec_paths: &[(&str, &str)] = match (r.group.as_str(), r.kind.as_str()) {
        ("", "Pod") => &[("/spec", "spec")],
        ("", "PodTemplate") => &[("/template/spec", "template.spec")],
        ("", "ReplicationController")
        | ("apps", "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet")
        | ("batch", "Job") => &[("/spec/template/spec", "spec.template.spec")],
        ("batch", "CronJob") => &[(
            "/spec/jobTemplate/spec/template/spec",
            "spec.jobTemplate.spec.template.spec",
        )],
        _ => &[],
    };
    for (pointer, path) in spec_paths {
        if let Some(spec) = template(pointer) {
            pod_spec(spec, &path_of(path), policy, &mut errs);
        }
    }
    if r.group.is_empty() && r.kind == "Service" {
        service(&root, &mut errs);
    }
    if r.group == "apps"
        && matches!(
            r.kind.as_str(),
            "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet"
        )
    {
        workload(r, &root, &mut errs);
    }
    if r.group == "batch" && r.kind == "Job" {
        if let Some(n) = root
            .pointer("/spec/activeDeadlineSeconds")
            .and_then(Value::as_i64)
        {
            if n < 0 {
                errs.push(FieldError::invalid_rendered(
                    &path_of("spec.activeDeadlineSeconds"),
                    n.to_string(),
                    "must be greater than or equal to 0",
                ));
            }
        }
        restart_policy(
            root.pointer("/spec/template/spec/restartPolicy"),
            &path_of("spec.template.spec.restartPolicy"),
            &["OnFailure", "Never"],
            &mut errs,
        );
    }
    if r.group.is_empty() && matches!(r.kind.as_str(), "ConfigMap" | "Secret") {
        config_size(&r.kind, &root, &mut errs);
        for field in ["data", "binaryData", "stringData"] {
            for key in root
                .get(field)
                .and_then(Value::as_object)
                .into_iter()
                .flat_map(|m| m.keys())
            {
                if let Some(msg) = config_key_error(key) {
                    errs.push(FieldError::invalid(
                        &FieldPath::new(field).key(key),
                        key,
                        &msg,
                    ));
                }
            }
        }
    }
    if r.group.is_empty() && r.kind == "ReplicationController" {
        let empty = root
            .pointer("/spec/selector")
            .and_then(Value::as_object)
            .is_none_or(|m| m.is_empty());
        if empty {
            errs.push(FieldError::required(
                &FieldPath::new("spec").child("selector"),
                "",
            ));
        }
    }
    errs
}

/// The most a ConfigMap's or a Secret's data may hold (upstream's `MaxSecretSize`): an object
/// must fit in the store's 1.5 MiB value with room for its metadata.
pub const MAX_CONFIG_SIZE: usize = 1024 * 1024;

/// A ConfigMap's `data` and `binaryData` (decoded), or a Secret's `data` (decoded) and
/// `stringData`, add up to at most [`MAX_CONFIG_SIZE`] bytes.
fn config_size(kind: &str, root: &Value, errs: &mut Vec<FieldError>) {
    let values = |field: &str| {
        root.get(field)
            .and_then(Value::as_object)
            .into_iter()
            .flat_map(|m| m.values())
            .filter_map(Value::as_str)
    };
    // base64's decoded length, without decoding: three bytes a four-character group.
    let decoded = |s: &str| {
        let s = s.trim_end_matches('=');
        s.len() / 4 * 3 + (s.len() % 4).saturating_sub(1)
    };
    let total: usize = match kind {
        "ConfigMap" => {
            values("data").map(str::len).sum::<usize>()
                + values("binaryData").map(decoded).sum::<usize>()
        }
        _ => {
            values("data").map(decoded).sum::<usize>()
                + values("stringData").map(str::len).sum::<usize>()
        }
    };
    if total > MAX_CONFIG_SIZE {
        let field = if kind == "ConfigMap" { "" } else { "data" };
        errs.push(FieldError::too_long(
            &FieldPath::new(field),
            MAX_CONFIG_SIZE,
        ));
    }
}

fn path_of(dotted: &str) -> FieldPath {
    let mut parts = dotted.split('.');
    let mut p = FieldPath::new(parts.next().unwrap_or(""));
    for part in parts {
        p = p.child(part);
    }
    p
}

fn protocol(port: &Value, path: &FieldPath, errs: &mut Vec<FieldError>) {
    if let Some(proto) = port.get("protocol").and_then(Value::as_str) {
        if !matches!(proto, "TCP" | "UDP" | "SCTP") {
            errs.push(FieldError::not_supported(
                &path.child("protocol"),
                proto,
                &["SCTP", "TCP", "UDP"],
            ));
        }
    }
}

/// A container port's numbers: `containerPort` required and a port number, `hostPort` a
/// port number when set.
fn container_port(port: &Value, path: &FieldPath, errs: &mut Vec<FieldError>) {
    const RANGE: &str = "must be between 1 and 65535, inclusive";
    match port.get("containerPort").and_then(Value::as_i64) {
        None | Some(0) => errs.push(FieldError::required(&path.child("containerPort"), "")),
        Some(n) if !(1..=65535).contains(&n) => {
            errs.push(FieldError::invalid_rendered(
                &path.child("containerPort"),
                n.to_string(),
                RANGE,
            ));
        }
        Some(_) => {}
    }
    if let Some(n) = port.get("hostPort").and_then(Value::as_i64) {
        if n != 0 && !(1..=65535).contains(&n) {
            errs.push(FieldError::invalid_rendered(
                &path.child("hostPort"),
                n.to_string(),
                RANGE,
            ));
        }
    }
}

/// Requests and limits: no negative quantity, whole numbers of integer resources, and no
/// request above its limit (equal to it for resources that cannot be overcommitted), as
/// upstream's `validateResourceRequirements`.
fn resource_requirements(resources: &Value, path: &FieldPath, errs: &mut Vec<FieldError>) {
    use bosun_api_types::Quantity;
    let parsed = |field: &str| -> Vec<(String, Option<Quantity>)> {
        resources
            .get(field)
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.as_str().and_then(|q| Quantity::parse(q).ok())))
            .collect()
    };
    let limits = parsed("limits");
    let requests = parsed("requests");
    let zero = Quantity::from_milli(0);
    // As upstream's helpers: native resources have no domain or one under kubernetes.io;
    // extended resources (any other domain) come in whole numbers and, like hugepages, cannot
    // be overcommitted.
    let native = |name: &str| !name.contains('/') || name.contains("kubernetes.io/");
    let integer = |name: &str| !native(name) && !name.starts_with("requests.");
    let overcommit = |name: &str| native(name) && !name.starts_with("hugepages-");
    for (field, list) in [("limits", &limits), ("requests", &requests)] {
        for (name, q) in list.iter() {
            let Some(q) = q else { continue };
            let fp = path.child(field).key(name);
            if *q < zero {
                errs.push(FieldError::invalid(
                    &fp,
                    q.to_string(),
                    "must be greater than or equal to 0",
                ));
            }
            if integer(name) && q.milli_value() % 1000 != 0 {
                errs.push(FieldError::invalid(
                    &fp,
                    q.to_string(),
                    "must be an integer",
                ));
            }
        }
    }
    for (name, q) in &requests {
        let Some(q) = q else { continue };
        match limits.iter().find(|(n, _)| n == name) {
            Some((_, Some(limit))) => {
                if !overcommit(name) && q != limit {
                    errs.push(FieldError::invalid(
                        &path.child("requests"),
                        q.to_string(),
                        &format!("must be equal to {name} limit of {limit}"),
                    ));
                } else if q > limit {
                    errs.push(FieldError::invalid(
                        &path.child("requests"),
                        q.to_string(),
                        &format!("must be less than or equal to {name} limit of {limit}"),
                    ));
                }
            }
            Some((_, None)) => {}
            None if !overcommit(name) => errs.push(FieldError::required(
                &path.child("limits"),
                "Limit must be set for non overcommitable resources",
            )),
            None => {}
        }
    }
}

fn pod_spec(spec: &Value, path: &FieldPath, policy: Policy, errs: &mut Vec<FieldError>) {
    if let Some(n) = spec.get("activeDeadlineSeconds").and_then(Value::as_i64) {
        if !(1..=i64::from(i32::MAX)).contains(&n) {
            errs.push(FieldError::invalid_rendered(
                &path.child("activeDeadlineSeconds"),
                n.to_string(),
                "must be between 1 and 2147483647, inclusive",
            ));
        }
    }
    let containers = spec.get("containers").and_then(Value::as_array);
    if containers.is_none_or(|c| c.is_empty()) {
        errs.push(FieldError::required(&path.child("containers"), ""));
    }
    for list in ["initContainers", "containers", "ephemeralContainers"] {
        let Some(cs) = spec.get(list).and_then(Value::as_array) else {
            continue;
        };
        let base = path.child(list);
        for (i, c) in cs.iter().enumerate() {
            let cp = base.index(i);
            match c.get("name").and_then(Value::as_str) {
                None | Some("") => errs.push(FieldError::required(&cp.child("name"), "")),
                Some(n) => {
                    if let Err(msgs) = is_dns1123_label(n) {
                        for m in msgs {
                            errs.push(FieldError::invalid(&cp.child("name"), n, &m));
                        }
                    }
                }
            }
            if list != "ephemeralContainers"
                && c.get("image")
                    .and_then(Value::as_str)
                    .is_none_or(str::is_empty)
            {
                errs.push(FieldError::required(&cp.child("image"), ""));
            }
            if let Some(ports) = c.get("ports").and_then(Value::as_array) {
                for (j, p) in ports.iter().enumerate() {
                    let pp = cp.child("ports").index(j);
                    protocol(p, &pp, errs);
                    container_port(p, &pp, errs);
                }
            }
            if let Some(resources) = c.get("resources") {
                resource_requirements(resources, &cp.child("resources"), errs);
            }
            let privileged = c.pointer("/securityContext/privileged") == Some(&Value::Bool(true));
            if privileged && !policy.allow_privileged {
                errs.push(FieldError::forbidden(
                    &cp.child("securityContext").child("privileged"),
                    "disallowed by cluster policy",
                ));
            }
        }
    }
}

/// Go's `%#v` of a `map[string]string` (keys sorted, as Go prints maps).
fn go_string_map(m: Option<&serde_json::Map<String, Value>>) -> String {
    match m {
        None => "map[string]string(nil)".to_owned(),
        Some(m) => {
            let mut items: Vec<(&String, &Value)> = m.iter().collect();
            items.sort_by(|a, b| a.0.cmp(b.0));
            let inner: Vec<String> = items
                .iter()
                .map(|(k, v)| format!("{:?}:{:?}", k, v.as_str().unwrap_or("")))
                .collect();
            format!("map[string]string{{{}}}", inner.join(", "))
        }
    }
}

/// Go's `%#v` of a `v1.LabelSelector`.
fn go_label_selector(sel: &Value) -> String {
    let labels = go_string_map(sel.get("matchLabels").and_then(Value::as_object));
    let exprs = match sel.get("matchExpressions").and_then(Value::as_array) {
        None => "[]v1.LabelSelectorRequirement(nil)".to_owned(),
        Some(list) => {
            let items: Vec<String> = list
                .iter()
                .map(|e| {
                    let values = match e.get("values").and_then(Value::as_array) {
                        None => "[]string(nil)".to_owned(),
                        Some(vs) => format!(
                            "[]string{{{}}}",
                            vs.iter()
                                .map(|v| format!("{:?}", v.as_str().unwrap_or("")))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    };
                    format!(
                        "v1.LabelSelectorRequirement{{Key:{:?}, Operator:{:?}, Values:{values}}}",
                        e.get("key").and_then(Value::as_str).unwrap_or(""),
                        e.get("operator").and_then(Value::as_str).unwrap_or("")
                    )
                })
                .collect();
            format!("[]v1.LabelSelectorRequirement{{{}}}", items.join(", "))
        }
    };
    format!("v1.LabelSelector{{MatchLabels:{labels}, MatchExpressions:{exprs}}}")
}

/// Whether a label selector (`matchLabels`/`matchExpressions`) selects `labels`.
fn selector_matches(sel: &Value, labels: &serde_json::Map<String, Value>) -> bool {
    let get = |k: &str| labels.get(k).and_then(Value::as_str);
    let by_labels = sel
        .get("matchLabels")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .all(|(k, v)| get(k) == v.as_str());
    let by_exprs = sel
        .get("matchExpressions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .all(|e| {
            let key = e.get("key").and_then(Value::as_str).unwrap_or("");
            let values: Vec<&str> = e
                .get("values")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            match e.get("operator").and_then(Value::as_str) {
                Some("In") => get(key).is_some_and(|v| values.contains(&v)),
                Some("NotIn") => get(key).is_none_or(|v| !values.contains(&v)),
                Some("Exists") => get(key).is_some(),
                Some("DoesNotExist") => get(key).is_none(),
                _ => false,
            }
        });
    by_labels && by_exprs
}

fn restart_policy(
    v: Option<&Value>,
    path: &FieldPath,
    allowed: &[&str],
    errs: &mut Vec<FieldError>,
) {
    if let Some(p) = v.and_then(Value::as_str) {
        if !allowed.contains(&p) {
            errs.push(FieldError::not_supported(path, p, allowed));
        }
    }
}

/// Selector, template labels, replicas and restart policy of apps/v1 workloads.
fn workload(r: &ApiResource, root: &Value, errs: &mut Vec<FieldError>) {
    let spec = FieldPath::new("spec");
    // The typed form turns a missing selector into `{}`: both mean "no selector" here, which
    // upstream reports as required and as matching no template.
    let selector = root
        .pointer("/spec/selector")
        .filter(|s| s.as_object().is_some_and(|m| !m.is_empty()));
    let labels = root
        .pointer("/spec/template/metadata/labels")
        .and_then(Value::as_object);
    let empty_map = serde_json::Map::new();
    let mismatch = || {
        FieldError::invalid_rendered(
            &spec.child("template").child("metadata").child("labels"),
            go_string_map(labels),
            "`selector` does not match template `labels`",
        )
    };
    match selector {
        None => {
            errs.push(FieldError::required(&spec.child("selector"), ""));
            errs.push(mismatch());
        }
        Some(sel) => {
            let empty = sel
                .get("matchLabels")
                .and_then(Value::as_object)
                .is_none_or(|m| m.is_empty())
                && sel
                    .get("matchExpressions")
                    .and_then(Value::as_array)
                    .is_none_or(|a| a.is_empty());
            if empty {
                errs.push(FieldError::invalid_rendered(
                    &spec.child("selector"),
                    go_label_selector(sel),
                    &format!("empty selector is invalid for {}", r.kind.to_lowercase()),
                ));
            } else if !selector_matches(sel, labels.unwrap_or(&empty_map)) {
                errs.push(mismatch());
            }
        }
    }
    if let Some(n) = root.pointer("/spec/replicas").and_then(Value::as_i64) {
        if n < 0 {
            errs.push(FieldError::invalid(
                &spec.child("replicas"),
                n,
                "must be greater than or equal to 0",
            ));
        }
    }
    restart_policy(
        root.pointer("/spec/template/spec/restartPolicy"),
        &path_of("spec.template.spec.restartPolicy"),
        &["Always"],
        errs,
    );
}

/// Service type, ports (range, names when several, protocol).
fn service(root: &Value, errs: &mut Vec<FieldError>) {
    let spec = FieldPath::new("spec");
    let ty = root
        .pointer("/spec/type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP");
    if !matches!(
        ty,
        "ClusterIP" | "ExternalName" | "LoadBalancer" | "NodePort"
    ) {
        errs.push(FieldError::not_supported(
            &spec.child("type"),
            ty,
            &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"],
        ));
    }
    let ports = root.pointer("/spec/ports").and_then(Value::as_array);
    let headless = root.pointer("/spec/clusterIP").and_then(Value::as_str) == Some("None");
    if ports.is_none_or(|p| p.is_empty()) && ty != "ExternalName" && !headless {
        errs.push(FieldError::required(&spec.child("ports"), ""));
    }
    let Some(ports) = ports else { return };
    let base = spec.child("ports");
    let mut names = std::collections::BTreeSet::new();
    for (i, p) in ports.iter().enumerate() {
        let pp = base.index(i);
        let name = p.get("name").and_then(Value::as_str).unwrap_or("");
        if ports.len() > 1 && name.is_empty() {
            errs.push(FieldError::required(&pp.child("name"), ""));
        } else if !name.is_empty() {
            if let Err(msgs) = is_dns1123_label(name) {
                for m in msgs {
                    errs.push(FieldError::invalid(&pp.child("name"), name, &m));
                }
            }
            if !names.insert(name.to_owned()) {
                errs.push(FieldError::duplicate(&pp.child("name"), name));
            }
        }
        match p.get("port").and_then(Value::as_i64) {
            None => errs.push(FieldError::required(&pp.child("port"), "")),
            Some(n) if !(1..=65535).contains(&n) => errs.push(FieldError::invalid(
                &pp.child("port"),
                n,
                "must be between 1 and 65535, inclusive",
            )),
            Some(_) => {}
        }
        protocol(p, &pp, errs);
    }
}

/// Upstream's check of ConfigMap and Secret keys.
fn config_key_error(key: &str) -> Option<String> {
    if key.is_empty()
        || key.len() > 253
        || !key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        if key.len() > 253 {
            return Some("must be no more than 253 characters".into());
        }
        return Some(
            "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')"
                .into(),
        );
    }
    if key == "." {
        return Some("must not be '.'".into());
    }
    if key == ".." {
        return Some("must not be '..'".into());
    }
    if key.starts_with("..") {
        return Some("must not start with '..'".into());
    }
    None
}

/// Fields an update may not change, with upstream's messages.
pub fn validate_update(r: &ApiResource, new: &Object, old: &Object) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let (n, o) = (Value::Object(new.clone()), Value::Object(old.clone()));
    match (r.group.as_str(), r.kind.as_str()) {
        ("apps", "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet") => {
            let (ns, os) = (n.pointer("/spec/selector"), o.pointer("/spec/selector"));
            if ns != os {
                errs.push(FieldError::invalid_rendered(
                    &FieldPath::new("spec").child("selector"),
                    ns.map(go_label_selector).unwrap_or_else(|| "nil".into()),
                    "field is immutable",
                ));
            }
            if r.kind == "StatefulSet" {
                let strip = |v: &Value| -> Value {
                    let mut spec = v.get("spec").cloned().unwrap_or(Value::Null);
                    if let Some(m) = spec.as_object_mut() {
                        for f in [
                            "replicas",
                            "ordinals",
                            "template",
                            "updateStrategy",
                            "persistentVolumeClaimRetentionPolicy",
                            "minReadySeconds",
                        ] {
                            m.remove(f);
                        }
                    }
                    spec
                };
                if strip(&n) != strip(&o) {
                    errs.push(FieldError::forbidden(
                        &FieldPath::new("spec"),
                        "updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden",
                    ));
                }
            }
        }
        ("", "Pod") => {
            // Only images, activeDeadlineSeconds, added tolerations and (from negative to 1)
            // terminationGracePeriodSeconds may change.
            let strip = |v: &Value| -> Value {
                let mut spec = v.get("spec").cloned().unwrap_or(Value::Null);
                if let Some(m) = spec.as_object_mut() {
                    for list in ["containers", "initContainers"] {
                        if let Some(Value::Array(cs)) = m.get_mut(list) {
                            for c in cs {
                                if let Some(c) = c.as_object_mut() {
                                    c.remove("image");
                                }
                            }
                        }
                    }
                    for f in [
                        "activeDeadlineSeconds",
                        "tolerations",
                        "terminationGracePeriodSeconds",
                        "ephemeralContainers",
                    ] {
                        m.remove(f);
                    }
                }
                spec
            };
            let old_tolerations = o.pointer("/spec/tolerations").and_then(Value::as_array);
            let new_tolerations = n.pointer("/spec/tolerations").and_then(Value::as_array);
            let tolerations_kept = old_tolerations
                .into_iter()
                .flatten()
                .all(|t| new_tolerations.is_some_and(|nt| nt.contains(t)));
            if strip(&n) != strip(&o) || !tolerations_kept {
                errs.push(FieldError::forbidden(
                    &FieldPath::new("spec"),
                    "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)",
                ));
            }
        }
        ("", "ConfigMap" | "Secret") => {
            if o.get("immutable") == Some(&Value::Bool(true)) {
                for field in ["data", "binaryData"] {
                    if n.get(field) != o.get(field) {
                        errs.push(FieldError::forbidden(
                            &FieldPath::new(field),
                            "field is immutable when `immutable` is set",
                        ));
                    }
                }
                if n.get("immutable") != Some(&Value::Bool(true)) {
                    errs.push(FieldError::forbidden(
                        &FieldPath::new("immutable"),
                        "field is immutable when `immutable` is set",
                    ));
                }
            }
            if r.kind == "Secret" {
                let (nt, ot) = (n.get("type"), o.get("type"));
                if nt != ot {
                    errs.push(FieldError::invalid(
                        &FieldPath::new("type"),
                        nt.and_then(Value::as_str).unwrap_or(""),
                        "field is immutable",
                    ));
                }
            }
        }
        _ => {}
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn go_renderings_match_upstream() {
        let m = json!({"tier": "x", "app": "web"});
        assert_eq!(
            go_string_map(m.as_object()),
            r#"map[string]string{"app":"web", "tier":"x"}"#
        );
        assert_eq!(
            go_label_selector(&json!({"matchLabels": {"app": "b"}})),
            r#"v1.LabelSelector{MatchLabels:map[string]string{"app":"b"}, MatchExpressions:[]v1.LabelSelectorRequirement(nil)}"#
        );
        assert!(selector_matches(
            &json!({"matchExpressions": [{"key": "app", "operator": "In", "values": ["a", "b"]}]}),
            json!({"app": "b"}).as_object().unwrap()
        ));
        assert_eq!(config_key_error("ok.key-1_x"), None);
        assert!(config_key_error("a b").is_some());
        assert_eq!(config_key_error(".."), Some("must not be '..'".into()));
    }
}
