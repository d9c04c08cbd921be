//! Per-kind defaulting, as upstream's `SetDefaults_*` functions do it when an object is decoded
//! (create and update), and the defaults of the admission plugins that run on pod creation
//! (ServiceAccount, DefaultTolerationSeconds).
//!
//! Checked against what an upstream API server answered for 240 real manifests (the oracle test
//! in `tests/it/oracle.rs`).

use crate::object::Object;
use crate::resources::ApiResource;
use serde_json::{json, Map, Value};

type M = Map<String, Value>;

fn or(m: &mut M, k: &str, v: Value) {
    if m.get(k).is_none_or(Value::is_null) {
        m.insert(k.to_owned(), v);
    }
}

fn obj<'a>(m: &'a mut M, k: &str) -> &'a mut M {
    let e = m.entry(k.to_owned()).or_insert_with(|| json!({}));
    if !e.is_object() {
        *e = json!({});
    }
    match e {
        Value::Object(o) => o,
        _ => unreachable!("the entry was just made an object"),
    }
}

fn each<'a>(m: &'a mut M, k: &str) -> impl Iterator<Item = &'a mut M> {
    m.get_mut(k)
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object_mut)
}

fn get_obj<'a>(m: &'a mut M, k: &str) -> Option<&'a mut M> {
    m.get_mut(k).and_then(Value::as_object_mut)
}

/// Applies the defaults of `r`'s kind to a decoded object.
pub fn apply(r: &ApiResource, o: &mut Object) {
    match (r.group.as_str(), r.kind.as_str()) {
        ("", "Pod") => {
            let spec = obj(o, "spec");
            pod_spec(spec);
            // In pods (not templates), requests default to limits where only limits are given.
            for list in ["containers", "initContainers"] {
                for c in each(spec, list) {
                    let resources = obj(c, "resources");
                    if let Some(limits) =
                        resources.get("limits").and_then(Value::as_object).cloned()
                    {
                        let requests = obj(resources, "requests");
                        for (k, v) in limits {
                            requests.entry(k).or_insert(v);
                        }
                    }
                }
            }
            pod_status(o);
        }
        ("", "PodTemplate") => pod_template(obj(o, "template")),
        ("", "ReplicationController") => {
            let spec = obj(o, "spec");
            or(spec, "replicas", json!(1));
            let template_labels = spec
                .get("template")
                .and_then(|t| t.get("metadata"))
                .and_then(|m| m.get("labels"))
                .cloned();
            if let Some(labels) = template_labels {
                if spec
                    .get("selector")
                    .is_none_or(|s| s.as_object().is_some_and(M::is_empty))
                {
                    spec.insert("selector".into(), labels.clone());
                }
                let meta = obj(o, "metadata");
                if meta
                    .get("labels")
                    .is_none_or(|l| l.as_object().is_some_and(M::is_empty))
                {
                    meta.insert("labels".into(), labels);
                }
            }
            if let Some(t) = get_obj(obj(o, "spec"), "template") {
                pod_template(t);
            }
            or(obj(o, "status"), "replicas", json!(0));
        }
        ("", "Service") => service(o),
        ("", "Endpoints") => {
            for subset in each(o, "subsets") {
                for p in each(subset, "ports") {
                    or(p, "protocol", json!("TCP"));
                }
            }
        }
        ("", "PersistentVolumeClaim") => {
            pvc_spec(obj(o, "spec"));
            or(obj(o, "status"), "phase", json!("Pending"));
        }
        ("", "PersistentVolume") => {
            let spec = obj(o, "spec");
            or(spec, "persistentVolumeReclaimPolicy", json!("Retain"));
            or(spec, "volumeMode", json!("Filesystem"));
            volume_source(spec);
            or(obj(o, "status"), "phase", json!("Pending"));
        }
        ("", "Secret") => {
            or(o, "type", json!("Opaque"));
            // stringData is write-only: it is merged into data, base64-encoded.
            if let Some(Value::Object(string_data)) = o.shift_remove("stringData") {
                use base64::Engine;
                let data = obj(o, "data");
                for (k, v) in string_data {
                    let text = v.as_str().unwrap_or_default().to_owned();
                    let encoded = base64::engine::general_purpose::STANDARD.encode(text);
                    data.insert(k, json!(encoded));
                }
            }
        }
        ("", "Namespace") => {
            or(obj(o, "spec"), "finalizers", json!(["kubernetes"]));
            or(obj(o, "status"), "phase", json!("Active"));
        }
        ("", "Node") => {
            obj(o, "status");
        }
        ("apps", "Deployment") => {
            let spec = obj(o, "spec");
            or(spec, "replicas", json!(1));
            let strategy = obj(spec, "strategy");
            or(strategy, "type", json!("RollingUpdate"));
            if strategy.get("type") == Some(&json!("RollingUpdate")) {
                let ru = obj(strategy, "rollingUpdate");
                or(ru, "maxUnavailable", json!("25%"));
                or(ru, "maxSurge", json!("25%"));
            }
            or(spec, "revisionHistoryLimit", json!(10));
            or(spec, "progressDeadlineSeconds", json!(600));
            pod_template(obj(spec, "template"));
            obj(o, "status");
        }
        ("apps", "ReplicaSet") => {
            let spec = obj(o, "spec");
            or(spec, "replicas", json!(1));
            pod_template(obj(spec, "template"));
            or(obj(o, "status"), "replicas", json!(0));
        }
        ("apps", "StatefulSet") => {
            let spec = obj(o, "spec");
            or(spec, "replicas", json!(1));
            or(spec, "podManagementPolicy", json!("OrderedReady"));
            let us = obj(spec, "updateStrategy");
            or(us, "type", json!("RollingUpdate"));
            if us.get("type") == Some(&json!("RollingUpdate")) {
                or(obj(us, "rollingUpdate"), "partition", json!(0));
            }
            or(spec, "revisionHistoryLimit", json!(10));
            let retention = obj(spec, "persistentVolumeClaimRetentionPolicy");
            or(retention, "whenDeleted", json!("Retain"));
            or(retention, "whenScaled", json!("Retain"));
            pod_template(obj(spec, "template"));
            for pvc in each(spec, "volumeClaimTemplates") {
                or(pvc, "apiVersion", json!("v1"));
                or(pvc, "kind", json!("PersistentVolumeClaim"));
                pvc_spec(obj(pvc, "spec"));
                or(obj(pvc, "status"), "phase", json!("Pending"));
            }
            let status = obj(o, "status");
            or(status, "replicas", json!(0));
            or(status, "availableReplicas", json!(0));
        }
        ("apps", "DaemonSet") => {
            let spec = obj(o, "spec");
            let us = obj(spec, "updateStrategy");
            or(us, "type", json!("RollingUpdate"));
            if us.get("type") == Some(&json!("RollingUpdate")) {
                let ru = obj(us, "rollingUpdate");
                or(ru, "maxUnavailable", json!(1));
                or(ru, "maxSurge", json!(0));
            }
            or(spec, "revisionHistoryLimit", json!(10));
            pod_template(obj(spec, "template"));
            let status = obj(o, "status");
            for k in [
                "currentNumberScheduled",
                "desiredNumberScheduled",
                "numberMisscheduled",
                "numberReady",
            ] {
                or(status, k, json!(0));
            }
        }
        ("batch", "Job") => {
            job_spec(obj(o, "spec"));
            obj(o, "status");
        }
        ("batch", "CronJob") => {
            let spec = obj(o, "spec");
            or(spec, "concurrencyPolicy", json!("Allow"));
            or(spec, "suspend", json!(false));
            or(spec, "successfulJobsHistoryLimit", json!(3));
            or(spec, "failedJobsHistoryLimit", json!(1));
            let jt = obj(spec, "jobTemplate");
            job_spec(obj(jt, "spec"));
            obj(o, "status");
        }
        ("storage.k8s.io", "StorageClass") => {
            or(o, "reclaimPolicy", json!("Delete"));
            or(o, "volumeBindingMode", json!("Immediate"));
        }
        ("autoscaling", "HorizontalPodAutoscaler") => hpa(r, o),
        ("rbac.authorization.k8s.io", "ClusterRoleBinding" | "RoleBinding") => {
            for s in each(o, "subjects") {
                if let Some("User" | "Group") = s.get("kind").and_then(Value::as_str) {
                    or(s, "apiGroup", json!("rbac.authorization.k8s.io"));
                }
            }
        }
        ("networking.k8s.io", "Ingress") => {
            obj(obj(o, "status"), "loadBalancer");
        }
        ("policy", "PodDisruptionBudget") => {
            let status = obj(o, "status");
            for k in [
                "currentHealthy",
                "desiredHealthy",
                "disruptionsAllowed",
                "expectedPods",
            ] {
                or(status, k, json!(0));
            }
        }
        _ => {}
    }
}

fn hpa(r: &ApiResource, o: &mut Object) {
    let spec = obj(o, "spec");
    or(spec, "minReplicas", json!(1));
    if r.version == "v2" {
        if let Some(b) = get_obj(spec, "behavior") {
            let up = obj(b, "scaleUp");
            or(up, "stabilizationWindowSeconds", json!(0));
            or(up, "selectPolicy", json!("Max"));
            or(
                up,
                "policies",
                json!([{"periodSeconds": 15, "type": "Pods", "value": 4},
                       {"periodSeconds": 15, "type": "Percent", "value": 100}]),
            );
            let down = obj(b, "scaleDown");
            or(down, "selectPolicy", json!("Max"));
            or(
                down,
                "policies",
                json!([{"periodSeconds": 15, "type": "Percent", "value": 100}]),
            );
        }
        if spec
            .get("metrics")
            .is_none_or(|m| m.as_array().is_some_and(Vec::is_empty))
        {
            spec.insert(
                "metrics".into(),
                json!([{"type": "Resource", "resource": {"name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": 80}}}]),
            );
        }
    }
    let status = obj(o, "status");
    or(status, "desiredReplicas", json!(0));
    if r.version == "v1" {
        or(status, "currentReplicas", json!(0));
    }
}

fn job_spec(spec: &mut M) {
    if spec.get("completions").is_none() && spec.get("parallelism").is_none() {
        spec.insert("completions".into(), json!(1));
        spec.insert("parallelism".into(), json!(1));
    }
    or(spec, "parallelism", json!(1));
    or(spec, "backoffLimit", json!(6));
    or(spec, "completionMode", json!("NonIndexed"));
    or(spec, "suspend", json!(false));
    or(spec, "podReplacementPolicy", json!("TerminatingOrFailed"));
    let template = obj(spec, "template");
    pod_template(template);
}

/// A new Job's generated selector and pod labels (unless it selects manually), as upstream's
/// job strategy sets them on create.
pub fn job_selector(o: &mut Object, uid: &str, name: &str) {
    let spec = obj(o, "spec");
    if spec.get("manualSelector") == Some(&Value::Bool(true)) {
        return;
    }
    spec.insert(
        "selector".into(),
        json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}),
    );
    let labels = obj(obj(obj(spec, "template"), "metadata"), "labels");
    labels.insert("batch.kubernetes.io/controller-uid".into(), json!(uid));
    labels.insert("batch.kubernetes.io/job-name".into(), json!(name));
    labels.insert("controller-uid".into(), json!(uid));
    labels.insert("job-name".into(), json!(name));
}

fn pvc_spec(spec: &mut M) {
    or(spec, "volumeMode", json!("Filesystem"));
}

fn service(o: &mut Object) {
    let spec = obj(o, "spec");
    or(spec, "sessionAffinity", json!("None"));
    or(spec, "type", json!("ClusterIP"));
    let ty = spec
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    for p in each(spec, "ports") {
        or(p, "protocol", json!("TCP"));
        if p.get("targetPort")
            .is_none_or(|t| t == &json!(0) || t == &json!(""))
        {
            if let Some(port) = p.get("port").cloned() {
                p.insert("targetPort".into(), port);
            }
        }
    }
    if ty != "ExternalName" {
        or(spec, "internalTrafficPolicy", json!("Cluster"));
        or(spec, "ipFamilies", json!(["IPv4"]));
        or(spec, "ipFamilyPolicy", json!("SingleStack"));
    }
    if ty == "NodePort" || ty == "LoadBalancer" {
        or(spec, "externalTrafficPolicy", json!("Cluster"));
    }
    if ty == "LoadBalancer" {
        or(spec, "allocateLoadBalancerNodePorts", json!(true));
    }
    if spec.get("sessionAffinity") == Some(&json!("ClientIP")) {
        let cfg = obj(spec, "sessionAffinityConfig");
        or(obj(cfg, "clientIP"), "timeoutSeconds", json!(10800));
    }
    obj(obj(o, "status"), "loadBalancer");
}

fn pod_template(t: &mut M) {
    obj(t, "metadata");
    pod_spec(obj(t, "spec"));
}

/// PodSpec defaults (pods and every pod template).
fn pod_spec(spec: &mut M) {
    // serviceAccount is the deprecated twin of serviceAccountName: both say the same.
    let sa = ["serviceAccountName", "serviceAccount"]
        .iter()
        .find_map(|k| {
            spec.get(*k)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
        })
        .map(str::to_owned);
    match sa {
        Some(name) => {
            spec.insert("serviceAccountName".into(), json!(name));
            spec.insert("serviceAccount".into(), json!(name));
        }
        None => {
            spec.shift_remove("serviceAccountName");
            spec.shift_remove("serviceAccount");
        }
    }
    or(spec, "dnsPolicy", json!("ClusterFirst"));
    or(spec, "restartPolicy", json!("Always"));
    or(spec, "terminationGracePeriodSeconds", json!(30));
    or(spec, "securityContext", json!({}));
    or(spec, "schedulerName", json!("default-scheduler"));
    for list in ["containers", "initContainers"] {
        for c in each(spec, list) {
            container(c);
        }
    }
    for c in each(spec, "ephemeralContainers") {
        container(c);
    }
    for v in each(spec, "volumes") {
        volume_source(v);
    }
}

fn container(c: &mut M) {
    or(c, "terminationMessagePath", json!("/dev/termination-log"));
    or(c, "terminationMessagePolicy", json!("File"));
    if c.get("imagePullPolicy").is_none() {
        let image = c.get("image").and_then(Value::as_str).unwrap_or("");
        let policy = if image_is_latest(image) {
            "Always"
        } else {
            "IfNotPresent"
        };
        c.insert("imagePullPolicy".into(), json!(policy));
    }
    obj(c, "resources");
    for p in each(c, "ports") {
        or(p, "protocol", json!("TCP"));
    }
    for m in each(c, "volumeMounts") {
        if m.get("readOnly") == Some(&Value::Bool(false)) {
            m.shift_remove("readOnly");
        }
    }
    for e in each(c, "env") {
        if let Some(vf) = get_obj(e, "valueFrom") {
            if let Some(fr) = get_obj(vf, "fieldRef") {
                or(fr, "apiVersion", json!("v1"));
            }
        }
    }
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(p) = get_obj(c, probe) {
            or(p, "timeoutSeconds", json!(1));
            or(p, "periodSeconds", json!(10));
            or(p, "successThreshold", json!(1));
            or(p, "failureThreshold", json!(3));
            if let Some(h) = get_obj(p, "httpGet") {
                or(h, "scheme", json!("HTTP"));
                or(h, "path", json!("/"));
            }
        }
    }
    for hook in ["postStart", "preStop"] {
        if let Some(h) = c
            .get_mut("lifecycle")
            .and_then(Value::as_object_mut)
            .and_then(|l| get_obj(l, hook))
            .and_then(|h| get_obj(h, "httpGet"))
        {
            or(h, "scheme", json!("HTTP"));
            or(h, "path", json!("/"));
        }
    }
}

/// `Always` for `:latest` or untagged images (without a digest), as upstream defaults it; an
/// image reference that does not parse gets `IfNotPresent`, as upstream's parser yields no tag.
fn image_is_latest(image: &str) -> bool {
    if image.contains('@') || image.is_empty() {
        return false;
    }
    let (name, tag) = match image.rsplit_once(':') {
        Some((n, t)) if !t.contains('/') => (n, Some(t)),
        _ => (image, None),
    };
    let mut parts: Vec<&str> = name.split('/').collect();
    if parts.len() > 1 {
        let first = parts[0];
        if first.contains('.') || first.contains(':') || first == "localhost" {
            parts.remove(0);
        }
    }
    let component_ok = |c: &str| {
        !c.is_empty()
            && c.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
            && c.as_bytes()[0].is_ascii_alphanumeric()
            && c.as_bytes()[c.len() - 1].is_ascii_alphanumeric()
    };
    if !parts.iter().all(|c| component_ok(c)) {
        return false;
    }
    match tag {
        None => true,
        Some(t) => {
            let valid = !t.is_empty()
                && t.len() <= 128
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
                && (t.as_bytes()[0].is_ascii_alphanumeric() || t.as_bytes()[0] == b'_');
            valid && t == "latest"
        }
    }
}

fn volume_source(v: &mut M) {
    // A volume that names no source is an emptyDir.
    if v.keys().all(|k| k == "name") {
        v.insert("emptyDir".into(), json!({}));
    }
    // Volume sources' `readOnly` is a plain Go bool upstream (azureDisk's excepted): false is
    // the same as absent and is not written.
    for (k, source) in v.iter_mut() {
        if k == "azureDisk" {
            continue;
        }
        if let Value::Object(src) = source {
            if src.get("readOnly") == Some(&Value::Bool(false)) {
                src.shift_remove("readOnly");
            }
        }
    }
    for k in ["secret", "configMap", "downwardAPI", "projected"] {
        if let Some(s) = get_obj(v, k) {
            or(s, "defaultMode", json!(420));
        }
    }
    if let Some(h) = get_obj(v, "hostPath") {
        or(h, "type", json!(""));
    }
    if let Some(i) = get_obj(v, "iscsi") {
        or(i, "iscsiInterface", json!("default"));
    }
    if let Some(r) = get_obj(v, "rbd") {
        or(r, "pool", json!("rbd"));
        or(r, "user", json!("admin"));
        or(r, "keyring", json!("/etc/ceph/keyring"));
    }
    if let Some(a) = get_obj(v, "azureDisk") {
        or(a, "cachingMode", json!("ReadWrite"));
        or(a, "fsType", json!("ext4"));
        or(a, "readOnly", json!(false));
        or(a, "kind", json!("Shared"));
    }
    if let Some(s) = get_obj(v, "scaleIO") {
        or(s, "storageMode", json!("ThinProvisioned"));
        or(s, "fsType", json!("xfs"));
    }
    if let Some(d) = get_obj(v, "downwardAPI") {
        for item in each(d, "items") {
            if let Some(fr) = get_obj(item, "fieldRef") {
                or(fr, "apiVersion", json!("v1"));
            }
        }
    }
}

fn pod_status(o: &mut Object) {
    let qos = qos_class(o.get("spec"));
    let status = obj(o, "status");
    or(status, "phase", json!("Pending"));
    or(status, "qosClass", json!(qos));
}

/// Upstream's quality-of-service class from the containers' requests and limits.
fn qos_class(spec: Option<&Value>) -> &'static str {
    let containers: Vec<&Value> = ["containers", "initContainers"]
        .iter()
        .filter_map(|k| spec.and_then(|s| s.get(*k)).and_then(Value::as_array))
        .flatten()
        .collect();
    let mut any = false;
    let mut guaranteed = true;
    for c in &containers {
        let req = c.pointer("/resources/requests").and_then(Value::as_object);
        let lim = c.pointer("/resources/limits").and_then(Value::as_object);
        let nonzero = |m: Option<&M>, k: &str| {
            m.and_then(|m| m.get(k)).is_some_and(|q| match q {
                Value::String(s) => !s.trim_start_matches(['0', '.']).is_empty(),
                Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
                _ => false,
            })
        };
        for k in ["cpu", "memory"] {
            if nonzero(req, k) || nonzero(lim, k) {
                any = true;
            }
            if !nonzero(lim, k) {
                guaranteed = false;
            }
            let r = req.and_then(|m| m.get(k));
            let l = lim.and_then(|m| m.get(k));
            if r.is_some() && r != l {
                guaranteed = false;
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

/// The ServiceAccount admission plugin's work on a new pod: `enableServiceLinks`, the service
/// account names and, unless automounting is off, its token volume and mounts.
pub fn service_account(o: &mut Object) {
    let spec = obj(o, "spec");
    or(spec, "enableServiceLinks", json!(true));
    let sa = spec
        .get("serviceAccountName")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .or_else(|| {
            spec.get("serviceAccount")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
        })
        .unwrap_or("default")
        .to_owned();
    spec.insert("serviceAccountName".into(), json!(sa));
    spec.insert("serviceAccount".into(), json!(sa));
    let automount = spec.get("automountServiceAccountToken") != Some(&json!(false));
    let has_token_mount = each(spec, "containers").any(|c| {
        each(c, "volumeMounts").any(|m| {
            m.get("mountPath") == Some(&json!("/var/run/secrets/kubernetes.io/serviceaccount"))
        })
    });
    if automount && !has_token_mount {
        let name = format!("kube-api-access-{}", token_suffix());
        let volumes = spec.entry("volumes").or_insert_with(|| json!([]));
        if let Value::Array(vs) = volumes {
            vs.push(json!({"name": name, "projected": {"defaultMode": 420, "sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                {"configMap": {"items": [{"key": "ca.crt", "path": "ca.crt"}], "name": "kube-root-ca.crt"}},
                {"downwardAPI": {"items": [{"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}, "path": "namespace"}]}}
            ]}}));
        }
        for list in ["containers", "initContainers"] {
            for c in each(spec, list) {
                let mounts = c.entry("volumeMounts").or_insert_with(|| json!([]));
                if let Value::Array(ms) = mounts {
                    ms.push(
                        json!({"mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
                                   "name": name, "readOnly": true}),
                    );
                }
            }
        }
    }
}

/// The DefaultTolerationSeconds plugin's work: tolerate not-ready and unreachable nodes 300 s.
pub fn default_tolerations(o: &mut Object) {
    let spec = obj(o, "spec");
    let tolerations = spec.entry("tolerations").or_insert_with(|| json!([]));
    if let Value::Array(ts) = tolerations {
        for key in [
            "node.kubernetes.io/not-ready",
            "node.kubernetes.io/unreachable",
        ] {
            let tolerated = ts.iter().any(|t| {
                let k = t.get("key").and_then(Value::as_str);
                let op = t.get("operator").and_then(Value::as_str);
                let effect = t.get("effect").and_then(Value::as_str).unwrap_or("");
                (k == Some(key) || (k.is_none() && op == Some("Exists")))
                    && (effect.is_empty() || effect == "NoExecute")
            });
            if !tolerated {
                ts.push(
                    json!({"effect": "NoExecute", "key": key, "operator": "Exists",
                               "tolerationSeconds": 300}),
                );
            }
        }
    }
}

fn token_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let bytes = uuid::Uuid::new_v4().into_bytes();
    bytes[..5]
        .iter()
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_pull_policy_follows_the_tag() {
        assert!(image_is_latest("nginx"));
        assert!(image_is_latest("nginx:latest"));
        assert!(image_is_latest("localhost:5000/nginx"));
        assert!(!image_is_latest("localhost:5000/nginx:1.2"));
        assert!(!image_is_latest("nginx@sha256:abc"));
        assert!(!image_is_latest("<YOUR-CONTAINER>"));
        assert!(image_is_latest("Registry.Example.com:5000/team/app"));
    }

    #[test]
    fn qos_classes() {
        let be = json!({"containers": [{"name": "a"}]});
        assert_eq!(qos_class(Some(&be)), "BestEffort");
        let g = json!({"containers": [{"resources": {"limits": {"cpu": "1", "memory": "1Gi"},
                                                     "requests": {"cpu": "1", "memory": "1Gi"}}}]});
        assert_eq!(qos_class(Some(&g)), "Guaranteed");
        let b = json!({"containers": [{"resources": {"requests": {"cpu": "100m"}}}]});
        assert_eq!(qos_class(Some(&b)), "Burstable");
    }
}
