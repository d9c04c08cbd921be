//! Pod Security Admission: the Pod Security Standards (`privileged`, `baseline`, `restricted`)
//! applied per namespace by its labels, as upstream's built-in `PodSecurity` plugin.
//!
//! `pod-security.kubernetes.io/enforce: LEVEL` refuses pods that violate the level (403, with
//! upstream's wording); `warn: LEVEL` lets them in with a warning kubectl prints; `audit:
//! LEVEL` lets them in and records the violation (a `tracing` event on `bosun::audit`, where the
//! audit log annotations would go). Workloads with a pod template (Deployments, Jobs, …) get the
//! warnings and audit records for their template, never a refusal, as upstream. A namespace
//! without labels is `privileged`. Only `latest` of each level is implemented (the `-version`
//! labels are accepted and read as `latest`).
//!
//! ```
//! use bosun_apiserver::podsecurity::{check, Level};
//! let pod = serde_json::json!({"spec": {"containers": [{"name": "c", "image": "x",
//!     "securityContext": {"privileged": true}}]}});
//! let violations = check(Level::Baseline, &pod["spec"]);
//! assert_eq!(violations[0], r#"privileged (container "c" must not set securityContext.privileged=true)"#);
//! assert!(check(Level::Privileged, &pod["spec"]).is_empty());
//! ```

use crate::auth::{AdmissionPlugin, AdmissionRequest, Operation};
use crate::error::ApiError;
use crate::object::Object;
use serde_json::Value;

/// A Pod Security Standards level.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Anything goes.
    Privileged,
    /// Prevents known privilege escalations.
    Baseline,
    /// Hardened, current best practice.
    Restricted,
}

impl Level {
    /// The level a label value names.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "privileged" => Some(Level::Privileged),
            "baseline" => Some(Level::Baseline),
            "restricted" => Some(Level::Restricted),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Level::Privileged => "privileged",
            Level::Baseline => "baseline",
            Level::Restricted => "restricted",
        }
    }
}

const BASELINE_CAPS: &[&str] = &[
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

const SAFE_SYSCTLS: &[&str] = &[
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
];

const RESTRICTED_VOLUMES: &[&str] = &[
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
];

/// Every container of a pod spec (init, ephemeral and regular), with its name.
fn containers(spec: &Value) -> Vec<(&str, &Value)> {
    ["initContainers", "containers", "ephemeralContainers"]
        .iter()
        .flat_map(|k| spec[*k].as_array().into_iter().flatten())
        .map(|c| (c["name"].as_str().unwrap_or(""), c))
        .collect()
}

/// `container "a"` or `containers "a", "b"`.
fn named(names: &[&str]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("{n:?}")).collect();
    if names.len() == 1 {
        format!("container {}", quoted.join(", "))
    } else {
        format!("containers {}", quoted.join(", "))
    }
}

/// The names of containers for which `bad` holds.
fn offenders<'a>(all: &[(&'a str, &Value)], bad: impl Fn(&Value) -> bool) -> Vec<&'a str> {
    all.iter()
        .filter(|(_, c)| bad(c))
        .map(|(n, _)| *n)
        .collect()
}

/// The violations of `level` by a pod spec, each worded as upstream's check (`privileged
/// (container "c" must not set securityContext.privileged=true)`), in upstream's order.
pub fn check(level: Level, spec: &Value) -> Vec<String> {
    let mut out = Vec::new();
    if level == Level::Privileged {
        return out;
    }
    let all = containers(spec);
    let psc = &spec["securityContext"];
    // --- baseline ---
    let host: Vec<String> = ["hostNetwork", "hostPID", "hostIPC"]
        .iter()
        .filter(|k| spec[**k] == true)
        .map(|k| format!("{k}=true"))
        .collect();
    if !host.is_empty() {
        out.push(format!("host namespaces ({})", host.join(", ")));
    }
    let privileged = offenders(&all, |c| c["securityContext"]["privileged"] == true);
    if !privileged.is_empty() {
        out.push(format!(
            "privileged ({} must not set securityContext.privileged=true)",
            named(&privileged)
        ));
    }
    let mut added = Vec::new();
    for (name, c) in &all {
        for cap in c["securityContext"]["capabilities"]["add"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            if !BASELINE_CAPS.contains(&cap) {
                added.push(format!("container {name:?} must not include {cap:?} in securityContext.capabilities.add"));
            }
        }
    }
    if !added.is_empty() {
        out.push(format!("non-default capabilities ({})", added.join("; ")));
    }
    let host_paths: Vec<String> = spec["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v.get("hostPath").is_some())
        .map(|v| format!("{:?}", v["name"].as_str().unwrap_or("")))
        .collect();
    if !host_paths.is_empty() {
        let noun = if host_paths.len() == 1 {
            "volume"
        } else {
            "volumes"
        };
        out.push(format!(
            "hostPath volumes ({noun} {})",
            host_paths.join(", ")
        ));
    }
    let mut ports = Vec::new();
    for (name, c) in &all {
        for p in c["ports"].as_array().into_iter().flatten() {
            if let Some(hp) = p["hostPort"].as_i64().filter(|p| *p != 0) {
                ports.push(format!("container {name:?} uses hostPort {hp}"));
            }
        }
    }
    if !ports.is_empty() {
        out.push(format!("hostPort ({})", ports.join(", ")));
    }
    let unconfined = |sc: &Value, field: &str| sc[field]["type"] == "Unconfined";
    if unconfined(psc, "appArmorProfile")
        || !offenders(&all, |c| {
            unconfined(&c["securityContext"], "appArmorProfile")
        })
        .is_empty()
    {
        out.push("forbidden AppArmor profile (appArmorProfile.type \"Unconfined\")".into());
    }
    let selinux_bad = |sc: &Value| {
        let o = &sc["seLinuxOptions"];
        let t = o["type"].as_str().unwrap_or("");
        (!t.is_empty()
            && ![
                "container_t",
                "container_init_t",
                "container_kvm_t",
                "container_engine_t",
            ]
            .contains(&t))
            || o["user"].as_str().is_some_and(|s| !s.is_empty())
            || o["role"].as_str().is_some_and(|s| !s.is_empty())
    };
    if selinux_bad(psc) || all.iter().any(|(_, c)| selinux_bad(&c["securityContext"])) {
        out.push("seLinuxOptions (forbidden securityContext.seLinuxOptions)".into());
    }
    let proc_mount = offenders(&all, |c| {
        c["securityContext"]["procMount"]
            .as_str()
            .is_some_and(|p| p != "Default")
    });
    if !proc_mount.is_empty() {
        out.push(format!(
            "procMount ({} must not set securityContext.procMount to \"Unmasked\")",
            named(&proc_mount)
        ));
    }
    let seccomp_unconfined = unconfined(psc, "seccompProfile")
        || !offenders(&all, |c| {
            unconfined(&c["securityContext"], "seccompProfile")
        })
        .is_empty();
    if seccomp_unconfined {
        out.push(
            "seccompProfile (securityContext.seccompProfile.type must not be \"Unconfined\")"
                .into(),
        );
    }
    let sysctls: Vec<String> = psc["sysctls"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["name"].as_str())
        .filter(|n| !SAFE_SYSCTLS.contains(n))
        .map(|n| format!("{n:?}"))
        .collect();
    if !sysctls.is_empty() {
        out.push(format!("forbidden sysctls ({})", sysctls.join(", ")));
    }
    if level == Level::Baseline {
        return out;
    }
    // --- restricted ---
    let mut restricted_volumes = Vec::new();
    for v in spec["volumes"].as_array().into_iter().flatten() {
        if let Some(kind) = v
            .as_object()
            .into_iter()
            .flat_map(|o| o.keys())
            .find(|k| *k != "name" && !RESTRICTED_VOLUMES.contains(&k.as_str()))
        {
            restricted_volumes.push(format!(
                "volume {:?} uses restricted volume type {kind:?}",
                v["name"].as_str().unwrap_or("")
            ));
        }
    }
    if !restricted_volumes.is_empty() {
        out.push(format!(
            "restricted volume types ({})",
            restricted_volumes.join(", ")
        ));
    }
    let escalation = offenders(&all, |c| {
        c["securityContext"]["allowPrivilegeEscalation"] != false
    });
    if !escalation.is_empty() {
        out.push(format!(
            "allowPrivilegeEscalation != false ({} must set securityContext.allowPrivilegeEscalation=false)",
            named(&escalation)
        ));
    }
    let mut caps = Vec::new();
    let no_drop_all = offenders(&all, |c| {
        !c["securityContext"]["capabilities"]["drop"]
            .as_array()
            .is_some_and(|d| d.iter().any(|x| x == "ALL"))
    });
    if !no_drop_all.is_empty() {
        caps.push(format!(
            "{} must set securityContext.capabilities.drop=[\"ALL\"]",
            named(&no_drop_all)
        ));
    }
    for (name, c) in &all {
        let extra: Vec<String> = c["securityContext"]["capabilities"]["add"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .filter(|cap| *cap != "NET_BIND_SERVICE")
            .map(|cap| format!("{cap:?}"))
            .collect();
        if !extra.is_empty() {
            caps.push(format!(
                "container {name:?} must not include {} in securityContext.capabilities.add",
                extra.join(", ")
            ));
        }
    }
    if !caps.is_empty() {
        out.push(format!("unrestricted capabilities ({})", caps.join("; ")));
    }
    let pod_non_root = psc["runAsNonRoot"] == true;
    let not_non_root = offenders(&all, |c| {
        let v = &c["securityContext"]["runAsNonRoot"];
        *v == false || (v.is_null() && !pod_non_root)
    });
    if !not_non_root.is_empty() {
        let who = if pod_non_root || psc["runAsNonRoot"] == false {
            named(&not_non_root)
        } else {
            format!("pod or {}", named(&not_non_root))
        };
        out.push(format!(
            "runAsNonRoot != true ({who} must set securityContext.runAsNonRoot=true)"
        ));
    }
    let root_user = offenders(&all, |c| c["securityContext"]["runAsUser"] == 0);
    if psc["runAsUser"] == 0 || !root_user.is_empty() {
        let who = if psc["runAsUser"] == 0 {
            "pod".to_owned()
        } else {
            named(&root_user)
        };
        out.push(format!("runAsUser=0 ({who} must not set runAsUser=0)"));
    }
    let good_seccomp = |sc: &Value| {
        matches!(
            sc["seccompProfile"]["type"].as_str(),
            Some("RuntimeDefault" | "Localhost")
        )
    };
    if !seccomp_unconfined {
        let pod_ok = good_seccomp(psc);
        let missing = offenders(&all, |c| {
            let sc = &c["securityContext"];
            !good_seccomp(sc) && (sc["seccompProfile"]["type"].is_string() || !pod_ok)
        });
        if !missing.is_empty() {
            let who = if pod_ok {
                named(&missing)
            } else {
                format!("pod or {}", named(&missing))
            };
            out.push(format!(
                "seccompProfile ({who} must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\")"
            ));
        }
    }
    out
}

/// The pod spec a written object carries: a Pod's own, or a workload's template's.
fn pod_spec<'a>(kind: &str, obj: &'a Object) -> Option<(&'a Value, bool)> {
    let spec = obj.get("spec");
    match kind {
        "Pod" => Some((spec?, true)),
        "CronJob" => Some((&spec?["jobTemplate"]["spec"]["template"]["spec"], false)),
        "PodTemplate" => Some((&obj.get("template")?["spec"], false)),
        "Deployment"
        | "ReplicaSet"
        | "StatefulSet"
        | "DaemonSet"
        | "Job"
        | "ReplicationController" => Some((&spec?["template"]["spec"], false)),
        _ => None,
    }
}

/// The `PodSecurity` admission plugin.
#[derive(Clone, Copy, Debug, Default)]
pub struct PodSecurity;

#[async_trait::async_trait]
impl AdmissionPlugin for PodSecurity {
    fn name(&self) -> &str {
        "PodSecurity"
    }

    async fn validate(&self, req: &AdmissionRequest<'_>, obj: &Object) -> Result<(), ApiError> {
        if req.operation == Operation::Delete
            || req.subresource.is_some_and(|s| s != "ephemeralcontainers")
        {
            return Ok(());
        }
        let builtin_workload = matches!(req.resource.group.as_str(), "" | "apps" | "batch");
        let Some(ns) = req.namespace.filter(|_| builtin_workload) else {
            return Ok(());
        };
        let Some((spec, is_pod)) = pod_spec(&req.resource.kind, obj) else {
            return Ok(());
        };
        // An update that leaves the pod spec as it was (labels, status) is not re-checked.
        if let Some(old) = req.old {
            if pod_spec(&req.resource.kind, old).map(|(s, _)| s) == Some(spec) {
                return Ok(());
            }
        }
        let Ok(Some(kv)) = req
            .server
            .store()
            .get(&format!("/registry/core/namespaces/{ns}"), None)
            .await
        else {
            return Ok(());
        };
        let Ok(namespace) = serde_json::from_slice::<Value>(&kv.value) else {
            return Ok(());
        };
        let labels = &namespace["metadata"]["labels"];
        let level = |mode: &str| {
            labels[format!("pod-security.kubernetes.io/{mode}")]
                .as_str()
                .and_then(Level::parse)
                .unwrap_or(Level::Privileged)
        };
        let (enforce, warn, audit) = (level("enforce"), level("warn"), level("audit"));
        let what = format!("{} {:?}", req.resource.plural, req.name);
        if is_pod {
            let v = check(enforce, spec);
            if !v.is_empty() {
                return Err(ApiError {
                    code: 403,
                    reason: "Forbidden",
                    message: format!(
                        "{what} is forbidden: violates PodSecurity \"{}:latest\": {}",
                        enforce.name(),
                        v.join(", ")
                    ),
                    details: Some(Box::new(bosun_api_types::meta::v1::StatusDetails {
                        name: Some(req.name.to_owned()),
                        kind: Some(req.resource.plural.clone()),
                        ..Default::default()
                    })),
                });
            }
        }
        // Templates are held to `enforce` by warning, as upstream does.
        let warn = if is_pod { warn } else { warn.max(enforce) };
        let v = check(warn, spec);
        if !v.is_empty() {
            let prefix = if is_pod {
                String::new()
            } else {
                format!("{what}: ")
            };
            req.warn(format!(
                "{prefix}would violate PodSecurity \"{}:latest\": {}",
                warn.name(),
                v.join(", ")
            ));
        }
        let v = check(audit, spec);
        if !v.is_empty() {
            tracing::info!(
                target: "bosun::audit",
                namespace = ns,
                object = %what,
                "pod-security.kubernetes.io/audit-violations" = %format!("would violate PodSecurity \"{}:latest\": {}", audit.name(), v.join(", ")),
                "audit"
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use serde_json::json;

    fn pod(container_sc: Value, pod_sc: Value) -> Value {
        json!({"securityContext": pod_sc, "containers": [{"name": "c", "image": "x", "securityContext": container_sc}]})
    }

    #[test]
    fn restricted_pod_passes_and_nginx_default_fails_with_upstream_words() {
        let good = pod(
            json!({"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}}),
            json!({"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}}),
        );
        assert_eq!(check(Level::Restricted, &good), Vec::<String>::new());
        let plain = pod(Value::Null, Value::Null);
        assert!(check(Level::Baseline, &plain).is_empty());
        assert_eq!(
            check(Level::Restricted, &plain),
            vec![
                r#"allowPrivilegeEscalation != false (container "c" must set securityContext.allowPrivilegeEscalation=false)"#,
                r#"unrestricted capabilities (container "c" must set securityContext.capabilities.drop=["ALL"])"#,
                r#"runAsNonRoot != true (pod or container "c" must set securityContext.runAsNonRoot=true)"#,
                r#"seccompProfile (pod or container "c" must set securityContext.seccompProfile.type to "RuntimeDefault" or "Localhost")"#,
            ]
        );
    }

    #[test]
    fn baseline_catches_the_escalations() {
        let spec = json!({
            "hostNetwork": true,
            "volumes": [{"name": "root", "hostPath": {"path": "/"}}],
            "containers": [{"name": "c", "image": "x",
                "ports": [{"containerPort": 80, "hostPort": 8080}],
                "securityContext": {"privileged": true, "capabilities": {"add": ["NET_ADMIN", "CHOWN"]}}}],
        });
        let v = check(Level::Baseline, &spec);
        assert_eq!(
            v,
            vec![
                "host namespaces (hostNetwork=true)",
                r#"privileged (container "c" must not set securityContext.privileged=true)"#,
                r#"non-default capabilities (container "c" must not include "NET_ADMIN" in securityContext.capabilities.add)"#,
                r#"hostPath volumes (volume "root")"#,
                r#"hostPort (container "c" uses hostPort 8080)"#,
            ]
        );
        // Restricted is baseline and more: the restricted volume type shows too.
        assert!(check(Level::Restricted, &spec)
            .iter()
            .any(|m| m.starts_with("restricted volume types (volume \"root\"")));
    }
}
