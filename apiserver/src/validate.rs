//! Per-kind validation with upstream's rules and messages (a growing subset): pod specs in pods
//! and every pod template, service ports, replication controller selectors.

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
        if let Some(ports) = root.pointer("/spec/ports").and_then(Value::as_array) {
            let base = FieldPath::new("spec").child("ports");
            for (i, p) in ports.iter().enumerate() {
                protocol(p, &base.index(i), &mut errs);
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

fn pod_spec(spec: &Value, path: &FieldPath, policy: Policy, errs: &mut Vec<FieldError>) {
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
                    protocol(p, &cp.child("ports").index(j), errs);
                }
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
