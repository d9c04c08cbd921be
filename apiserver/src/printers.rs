//! Server-side printing: the `Table` kubectl asks for (`Accept: application/json;as=Table;…`),
//! with the columns and cell values upstream computes for each built-in kind. Every column is
//! always filled (the wide ones too); kubectl hides priority-1 columns unless `-o wide`.
//! Kinds without a printer get upstream's default: Name and Created At.

use crate::object::Object;
use crate::resources::ApiResource;
use bosun_api_types::meta::v1::LabelSelector;
use bosun_api_types::selector::LabelSelectorExt;
use bosun_api_types::Time;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// One column: name, type, format, priority, and where its description comes from.
struct Col {
    name: &'static str,
    ty: &'static str,
    priority: u8,
    /// `(definition, field)` of the upstream OpenAPI description, or `("", text)`.
    doc: (&'static str, &'static str),
}

const fn col(name: &'static str, ty: &'static str, doc: (&'static str, &'static str)) -> Col {
    Col {
        name,
        ty,
        priority: 0,
        doc,
    }
}

const fn wide(name: &'static str, ty: &'static str, doc: (&'static str, &'static str)) -> Col {
    Col {
        name,
        ty,
        priority: 1,
        doc,
    }
}

const META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";
const NAME: Col = col("Name", "string", (META, "name"));
const AGE: Col = col("Age", "string", (META, "creationTimestamp"));
const CONTAINERS: Col = wide(
    "Containers",
    "string",
    ("", "Names of each container in the template."),
);
const IMAGES: Col = wide(
    "Images",
    "string",
    ("", "Images referenced by each container in the template."),
);

/// The columns of a kind, or `None` for the default table.
fn columns(group: &str, kind: &str) -> Option<Vec<Col>> {
    Some(match (group, kind) {
        ("", "Pod") => vec![
            NAME,
            col("Ready", "string", ("", "The aggregate readiness state of this pod for accepting traffic.")),
            col("Status", "string", ("", "The aggregate status of the containers in this pod.")),
            col("Restarts", "string", ("", "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.")),
            AGE,
            wide("IP", "string", ("io.k8s.api.core.v1.PodStatus", "podIP")),
            wide("Node", "string", ("io.k8s.api.core.v1.PodSpec", "nodeName")),
            wide("Nominated Node", "string", ("io.k8s.api.core.v1.PodStatus", "nominatedNodeName")),
            wide("Readiness Gates", "string", ("io.k8s.api.core.v1.PodSpec", "readinessGates")),
        ],
        ("", "PodTemplate") => vec![
            NAME,
            col("Containers", "string", ("", "Names of each container in the template.")),
            col("Images", "string", ("", "Images referenced by each container in the template.")),
            col("Pod Labels", "string", ("", "The labels for the pod template.")),
        ],
        ("", "Namespace") => vec![NAME, col("Status", "string", ("", "The status of the namespace")), AGE],
        ("certificates.k8s.io", "CertificateSigningRequest") => vec![
            NAME,
            AGE,
            col("SignerName", "string", ("io.k8s.api.certificates.v1.CertificateSigningRequestSpec", "signerName")),
            col("Requestor", "string", ("io.k8s.api.certificates.v1.CertificateSigningRequestSpec", "request")),
            col("RequestedDuration", "string", ("io.k8s.api.certificates.v1.CertificateSigningRequestSpec", "expirationSeconds")),
            col("Condition", "string", ("io.k8s.api.certificates.v1.CertificateSigningRequestStatus", "conditions")),
        ],
        ("", "ConfigMap") => vec![NAME, col("Data", "string", ("io.k8s.api.core.v1.ConfigMap", "data")), AGE],
        ("", "Secret") => vec![
            NAME,
            col("Type", "string", ("io.k8s.api.core.v1.Secret", "type")),
            col("Data", "string", ("io.k8s.api.core.v1.Secret", "data")),
            AGE,
        ],
        ("", "ServiceAccount") => vec![NAME, col("Secrets", "string", ("io.k8s.api.core.v1.ServiceAccount", "secrets")), AGE],
        ("", "Service") => vec![
            NAME,
            col("Type", "string", ("io.k8s.api.core.v1.ServiceSpec", "type")),
            col("Cluster-IP", "string", ("io.k8s.api.core.v1.ServiceSpec", "clusterIP")),
            col("External-IP", "string", ("io.k8s.api.core.v1.ServiceSpec", "externalIPs")),
            col("Port(s)", "string", ("io.k8s.api.core.v1.ServiceSpec", "ports")),
            AGE,
            wide("Selector", "string", ("io.k8s.api.core.v1.ServiceSpec", "selector")),
        ],
        ("", "Endpoints") => vec![NAME, col("Endpoints", "string", ("io.k8s.api.core.v1.Endpoints", "subsets")), AGE],
        ("", "Node") => vec![
            NAME,
            col("Status", "string", ("", "The status of the node")),
            col("Roles", "string", ("", "The roles of the node")),
            AGE,
            col("Version", "string", ("io.k8s.api.core.v1.NodeSystemInfo", "kubeletVersion")),
            wide("Internal-IP", "string", ("io.k8s.api.core.v1.NodeStatus", "addresses")),
            wide("External-IP", "string", ("io.k8s.api.core.v1.NodeStatus", "addresses")),
            wide("OS-Image", "string", ("io.k8s.api.core.v1.NodeSystemInfo", "osImage")),
            wide("Kernel-Version", "string", ("io.k8s.api.core.v1.NodeSystemInfo", "kernelVersion")),
            wide("Container-Runtime", "string", ("io.k8s.api.core.v1.NodeSystemInfo", "containerRuntimeVersion")),
        ],
        ("", "Event") => vec![
            col("Last Seen", "string", ("io.k8s.api.core.v1.Event", "lastTimestamp")),
            col("Type", "string", ("io.k8s.api.core.v1.Event", "type")),
            col("Reason", "string", ("io.k8s.api.core.v1.Event", "reason")),
            col("Object", "string", ("io.k8s.api.core.v1.Event", "involvedObject")),
            wide("Subobject", "string", ("io.k8s.api.core.v1.ObjectReference", "fieldPath")),
            wide("Source", "string", ("io.k8s.api.core.v1.Event", "source")),
            col("Message", "string", ("io.k8s.api.core.v1.Event", "message")),
            wide("First Seen", "string", ("io.k8s.api.core.v1.Event", "firstTimestamp")),
            wide("Count", "string", ("io.k8s.api.core.v1.Event", "count")),
            Col { name: "Name", ty: "string", priority: 1, doc: (META, "name") },
        ],
        ("", "PersistentVolumeClaim") => vec![
            NAME,
            col("Status", "string", ("io.k8s.api.core.v1.PersistentVolumeClaimStatus", "phase")),
            col("Volume", "string", ("io.k8s.api.core.v1.PersistentVolumeClaimSpec", "volumeName")),
            col("Capacity", "string", ("io.k8s.api.core.v1.PersistentVolumeClaimStatus", "capacity")),
            col("Access Modes", "string", ("io.k8s.api.core.v1.PersistentVolumeClaimStatus", "accessModes")),
            col("StorageClass", "string", ("", "StorageClass of the pvc")),
            col("VolumeAttributesClass", "string", ("", "VolumeAttributesClass of the pvc")),
            AGE,
            wide("VolumeMode", "string", ("io.k8s.api.core.v1.PersistentVolumeClaimSpec", "volumeMode")),
        ],
        ("", "PersistentVolume") => vec![
            NAME,
            col("Capacity", "string", ("io.k8s.api.core.v1.PersistentVolumeSpec", "capacity")),
            col("Access Modes", "string", ("io.k8s.api.core.v1.PersistentVolumeSpec", "accessModes")),
            col("Reclaim Policy", "string", ("io.k8s.api.core.v1.PersistentVolumeSpec", "persistentVolumeReclaimPolicy")),
            col("Status", "string", ("io.k8s.api.core.v1.PersistentVolumeStatus", "phase")),
            col("Claim", "string", ("io.k8s.api.core.v1.PersistentVolumeSpec", "claimRef")),
            col("StorageClass", "string", ("", "StorageClass of the pv")),
            col("VolumeAttributesClass", "string", ("", "VolumeAttributesClass of the pv")),
            col("Reason", "string", ("io.k8s.api.core.v1.PersistentVolumeStatus", "reason")),
            AGE,
            wide("VolumeMode", "string", ("io.k8s.api.core.v1.PersistentVolumeSpec", "volumeMode")),
        ],
        ("", "ReplicationController") => vec![
            NAME,
            col("Desired", "integer", ("io.k8s.api.core.v1.ReplicationControllerSpec", "replicas")),
            col("Current", "integer", ("io.k8s.api.core.v1.ReplicationControllerStatus", "replicas")),
            col("Ready", "integer", ("io.k8s.api.core.v1.ReplicationControllerStatus", "readyReplicas")),
            AGE,
            CONTAINERS,
            IMAGES,
            wide("Selector", "string", ("io.k8s.api.core.v1.ReplicationControllerSpec", "selector")),
        ],
        ("apps", "ReplicaSet") => vec![
            NAME,
            col("Desired", "integer", ("io.k8s.api.apps.v1.ReplicaSetSpec", "replicas")),
            col("Current", "integer", ("io.k8s.api.apps.v1.ReplicaSetStatus", "replicas")),
            col("Ready", "integer", ("io.k8s.api.apps.v1.ReplicaSetStatus", "readyReplicas")),
            AGE,
            CONTAINERS,
            IMAGES,
            wide("Selector", "string", ("io.k8s.api.apps.v1.ReplicaSetSpec", "selector")),
        ],
        ("apps", "Deployment") => vec![
            NAME,
            col("Ready", "string", ("", "Number of the pod with ready state")),
            col("Up-to-date", "string", ("io.k8s.api.apps.v1.DeploymentStatus", "updatedReplicas")),
            col("Available", "string", ("io.k8s.api.apps.v1.DeploymentStatus", "availableReplicas")),
            AGE,
            CONTAINERS,
            IMAGES,
            wide("Selector", "string", ("io.k8s.api.apps.v1.DeploymentSpec", "selector")),
        ],
        ("apps", "StatefulSet") => vec![
            NAME,
            col("Ready", "string", ("", "Number of the pod with ready state")),
            AGE,
            CONTAINERS,
            IMAGES,
        ],
        ("apps", "DaemonSet") => vec![
            NAME,
            col("Desired", "integer", ("io.k8s.api.apps.v1.DaemonSetStatus", "desiredNumberScheduled")),
            col("Current", "integer", ("io.k8s.api.apps.v1.DaemonSetStatus", "currentNumberScheduled")),
            col("Ready", "integer", ("io.k8s.api.apps.v1.DaemonSetStatus", "numberReady")),
            col("Up-to-date", "integer", ("io.k8s.api.apps.v1.DaemonSetStatus", "updatedNumberScheduled")),
            col("Available", "integer", ("io.k8s.api.apps.v1.DaemonSetStatus", "numberAvailable")),
            col("Node Selector", "string", ("io.k8s.api.core.v1.PodSpec", "nodeSelector")),
            AGE,
            CONTAINERS,
            IMAGES,
            wide("Selector", "string", ("io.k8s.api.apps.v1.DaemonSetSpec", "selector")),
        ],
        ("apps", "ControllerRevision") => vec![
            NAME,
            col("Controller", "string", ("", "Controller of the object")),
            col("Revision", "string", ("io.k8s.api.apps.v1.ControllerRevision", "revision")),
            AGE,
        ],
        ("batch", "Job") => vec![
            NAME,
            col("Status", "string", ("", "Status of the job.")),
            col("Completions", "string", ("io.k8s.api.batch.v1.JobStatus", "succeeded")),
            col("Duration", "string", ("", "Time required to complete the job.")),
            AGE,
            CONTAINERS,
            IMAGES,
            wide("Selector", "string", ("io.k8s.api.batch.v1.JobSpec", "selector")),
        ],
        ("batch", "CronJob") => vec![
            NAME,
            col("Schedule", "string", ("io.k8s.api.batch.v1.CronJobSpec", "schedule")),
            col("Timezone", "string", ("io.k8s.api.batch.v1.CronJobSpec", "timeZone")),
            col("Suspend", "boolean", ("io.k8s.api.batch.v1.CronJobSpec", "suspend")),
            col("Active", "integer", ("io.k8s.api.batch.v1.CronJobStatus", "active")),
            col("Last Schedule", "string", ("io.k8s.api.batch.v1.CronJobStatus", "lastScheduleTime")),
            AGE,
            CONTAINERS,
            IMAGES,
            wide("Selector", "string", ("io.k8s.api.batch.v1.JobSpec", "selector")),
        ],
        ("coordination.k8s.io", "Lease") => vec![
            NAME,
            col("Holder", "string", ("io.k8s.api.coordination.v1.LeaseSpec", "holderIdentity")),
            AGE,
        ],
        ("discovery.k8s.io", "EndpointSlice") => vec![
            NAME,
            col("AddressType", "string", ("io.k8s.api.discovery.v1.EndpointSlice", "addressType")),
            col("Ports", "string", ("io.k8s.api.discovery.v1.EndpointSlice", "ports")),
            col("Endpoints", "string", ("io.k8s.api.discovery.v1.EndpointSlice", "endpoints")),
            AGE,
        ],
        ("rbac.authorization.k8s.io", "RoleBinding" | "ClusterRoleBinding") => {
            let what = if kind == "RoleBinding" { "roleBinding" } else { "clusterRoleBinding" };
            let (users, groups, sas) = match what {
                "roleBinding" => ("Users in the roleBinding", "Groups in the roleBinding", "ServiceAccounts in the roleBinding"),
                _ => ("Users in the clusterRoleBinding", "Groups in the clusterRoleBinding", "ServiceAccounts in the clusterRoleBinding"),
            };
            vec![
                NAME,
                col("Role", "string", ("io.k8s.api.rbac.v1.RoleBinding", "roleRef")),
                AGE,
                wide("Users", "string", ("", users)),
                wide("Groups", "string", ("", groups)),
                wide("ServiceAccounts", "string", ("", sas)),
            ]
        }
        ("scheduling.k8s.io", "PriorityClass") => vec![
            NAME,
            col("Value", "integer", ("io.k8s.api.scheduling.v1.PriorityClass", "value")),
            col("Global-Default", "boolean", ("io.k8s.api.scheduling.v1.PriorityClass", "globalDefault")),
            AGE,
        ],
        ("storage.k8s.io", "StorageClass") => vec![
            NAME,
            col("Provisioner", "string", ("io.k8s.api.storage.v1.StorageClass", "provisioner")),
            col("ReclaimPolicy", "string", ("io.k8s.api.storage.v1.StorageClass", "reclaimPolicy")),
            col("VolumeBindingMode", "string", ("io.k8s.api.storage.v1.StorageClass", "volumeBindingMode")),
            col("AllowVolumeExpansion", "string", ("io.k8s.api.storage.v1.StorageClass", "allowVolumeExpansion")),
            AGE,
        ],
        ("networking.k8s.io", "Ingress") => vec![
            NAME,
            col("Class", "string", ("", "The name of the IngressClass resource that should be used for additional configuration")),
            col("Hosts", "string", ("", "Hosts that incoming requests are matched against before the ingress rule")),
            col("Address", "string", ("", "Address is a list containing ingress points for the load-balancer")),
            col("Ports", "string", ("", "Ports of TLS configurations that open")),
            AGE,
        ],
        ("networking.k8s.io", "NetworkPolicy") => vec![
            NAME,
            col("Pod-Selector", "string", ("io.k8s.api.networking.v1.NetworkPolicySpec", "podSelector")),
            AGE,
        ],
        ("policy", "PodDisruptionBudget") => vec![
            NAME,
            col("Min Available", "string", ("", "The minimum number of pods that must be available.")),
            col("Max Unavailable", "string", ("", "The maximum number of pods that may be unavailable.")),
            col("Allowed Disruptions", "integer", ("", "Calculated number of pods that may be disrupted at this time.")),
            AGE,
        ],
        ("autoscaling", "HorizontalPodAutoscaler") => vec![
            NAME,
            col("Reference", "string", ("io.k8s.api.autoscaling.v2.HorizontalPodAutoscalerSpec", "scaleTargetRef")),
            col("Targets", "string", ("io.k8s.api.autoscaling.v2.HorizontalPodAutoscalerSpec", "metrics")),
            col("MinPods", "string", ("io.k8s.api.autoscaling.v2.HorizontalPodAutoscalerSpec", "minReplicas")),
            col("MaxPods", "string", ("io.k8s.api.autoscaling.v2.HorizontalPodAutoscalerSpec", "maxReplicas")),
            col("Replicas", "string", ("io.k8s.api.autoscaling.v2.HorizontalPodAutoscalerStatus", "currentReplicas")),
            AGE,
        ],
        _ => return None,
    })
}

fn description((def, field): (&str, &str)) -> String {
    if def.is_empty() {
        return field.to_owned();
    }
    crate::openapi::field_description(def, field).unwrap_or_default()
}

fn column_definitions(cols: &[Col]) -> Vec<Value> {
    cols.iter()
        .map(|c| {
            json!({
                "name": c.name,
                "type": c.ty,
                "format": if c.name == "Name" { "name" } else { "" },
                "description": description(c.doc),
                "priority": c.priority,
            })
        })
        .collect()
}

fn default_columns() -> Vec<Value> {
    vec![
        json!({"name": "Name", "type": "string", "format": "name",
               "description": description((META, "name")), "priority": 0}),
        json!({"name": "Created At", "type": "date", "format": "",
               "description": description((META, "creationTimestamp")), "priority": 0}),
    ]
}

/// The Table of `items` (objects of `r`), as upstream serves it.
pub fn table(r: &ApiResource, items: &[Object], metadata: Map<String, Value>) -> Value {
    if let Some(info) = &r.custom {
        return custom_table(&info.printer_columns, items, metadata);
    }
    let cols = columns(&r.group, &r.kind);
    let now = Time::now();
    let rows: Vec<Value> = items
        .iter()
        .map(|o| {
            let cells = match &cols {
                Some(_) => cells(&r.group, &r.kind, o, &now),
                None => vec![
                    s(o, "/metadata/name"),
                    o.get("metadata")
                        .and_then(|m| m.get("creationTimestamp"))
                        .cloned()
                        .unwrap_or(Value::Null),
                ],
            };
            let mut row = json!({
                "cells": cells,
                "object": {
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": o.get("metadata").cloned().unwrap_or_else(|| json!({})),
                },
            });
            if let Some(c) = row_conditions(r, o) {
                row["conditions"] = c;
            }
            row
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": cols.as_deref().map(column_definitions).unwrap_or_else(default_columns),
        "rows": rows,
    })
}

/// A custom resource's Table: Name and the CRD's printer columns (Age when it has none).
fn custom_table(columns: &[Value], items: &[Object], metadata: Map<String, Value>) -> Value {
    let age = json!({"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp",
                     "description": description((META, "creationTimestamp"))});
    let cols: Vec<Value> = if columns.is_empty() {
        vec![age]
    } else {
        columns.to_vec()
    };
    let mut defs = vec![json!({"name": "Name", "type": "string", "format": "name",
        "description": description((META, "name")), "priority": 0})];
    for c in &cols {
        defs.push(json!({
            "name": c["name"],
            "type": c["type"],
            "format": c.get("format").cloned().unwrap_or(json!("")),
            "description": c.get("description").cloned().unwrap_or(json!("")),
            "priority": c.get("priority").cloned().unwrap_or(json!(0)),
        }));
    }
    let now = Time::now();
    let rows: Vec<Value> = items
        .iter()
        .map(|o| {
            let mut cells = vec![s(o, "/metadata/name")];
            for c in &cols {
                let cell = c["jsonPath"]
                    .as_str()
                    .and_then(|p| crate::crd::json_path(o, p))
                    .cloned()
                    .unwrap_or(Value::Null);
                let cell = match (c["type"].as_str(), &cell) {
                    (Some("date"), Value::String(_)) => json!(since(Some(&cell), &now)),
                    (_, Value::Object(_) | Value::Array(_)) => json!(cell.to_string()),
                    _ => cell,
                };
                cells.push(cell);
            }
            json!({
                "cells": cells,
                "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                           "metadata": o.get("metadata").cloned().unwrap_or_else(|| json!({}))},
            })
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": defs,
        "rows": rows,
    })
}

fn row_conditions(r: &ApiResource, o: &Object) -> Option<Value> {
    if !(r.group.is_empty() && r.kind == "Pod") {
        return None;
    }
    match o
        .get("status")
        .and_then(|s| s.get("phase"))
        .and_then(Value::as_str)
    {
        Some("Succeeded") => Some(
            json!([{"type": "Completed", "status": "True", "reason": "Succeeded",
                                          "message": "The pod has completed successfully."}]),
        ),
        Some("Failed") => Some(
            json!([{"type": "Completed", "status": "True", "reason": "Failed",
                                       "message": "The pod failed."}]),
        ),
        _ => None,
    }
}

// ---- cell helpers ----

fn at<'a>(o: &'a Object, pointer: &str) -> Option<&'a Value> {
    let mut parts = pointer.trim_start_matches('/').splitn(2, '/');
    let first = parts.next()?;
    let v = o.get(first)?;
    match parts.next() {
        Some(rest) => v.pointer(&format!("/{rest}")),
        None => Some(v),
    }
}

fn s(o: &Object, pointer: &str) -> Value {
    Value::String(st(o, pointer))
}

fn st(o: &Object, pointer: &str) -> String {
    at(o, pointer)
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned()
}

fn int(o: &Object, pointer: &str) -> i64 {
    at(o, pointer).and_then(Value::as_i64).unwrap_or(0)
}

fn len(o: &Object, pointer: &str) -> i64 {
    match at(o, pointer) {
        Some(Value::Array(a)) => a.len() as i64,
        Some(Value::Object(m)) => m.len() as i64,
        _ => 0,
    }
}

fn age(o: &Object, now: &Time) -> Value {
    Value::String(since(at(o, "/metadata/creationTimestamp"), now))
}

/// Time since a timestamp value, as upstream's `HumanDuration`; `<unknown>` when unset.
fn since(ts: Option<&Value>, now: &Time) -> String {
    match ts
        .and_then(Value::as_str)
        .and_then(|t| t.parse::<Time>().ok())
    {
        Some(t) => human_duration(now.unix_seconds() - t.unix_seconds()),
        None => "<unknown>".into(),
    }
}

/// Upstream's `duration.HumanDuration` of a number of seconds.
pub fn human_duration(secs: i64) -> String {
    if secs < -1 {
        return "<invalid>".into();
    }
    if secs < 0 {
        return "0s".into();
    }
    if secs < 120 {
        return format!("{secs}s");
    }
    let minutes = secs / 60;
    if minutes < 10 {
        let s = secs % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = secs / 3600;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        return if dy == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{dy}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

/// `k=v,k2=v2` in key order, or `<none>`.
fn format_labels(v: Option<&Value>) -> String {
    let map: BTreeMap<&str, &str> = v
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.as_str(), v.as_str().unwrap_or("")))
                .collect()
        })
        .unwrap_or_default();
    if map.is_empty() {
        return "<none>".into();
    }
    map.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// A `LabelSelector` as upstream's selector string; `none` is what a missing or empty one prints.
fn format_selector(v: Option<&Value>, none: &str) -> String {
    let Some(v) = v else {
        return none.into();
    };
    match serde_json::from_value::<LabelSelector>(v.clone()).map(|ls| ls.to_selector()) {
        Ok(Ok(sel)) => {
            let text = sel.to_string();
            if text.is_empty() {
                none.into()
            } else {
                text
            }
        }
        _ => "<invalid>".into(),
    }
}

fn containers_cells(spec: Option<&Value>) -> (Value, Value) {
    let cs: Vec<&Value> = spec
        .and_then(|s| s.get("containers"))
        .and_then(Value::as_array)
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    let names: Vec<&str> = cs
        .iter()
        .map(|c| c.get("name").and_then(Value::as_str).unwrap_or(""))
        .collect();
    let images: Vec<&str> = cs
        .iter()
        .map(|c| c.get("image").and_then(Value::as_str).unwrap_or(""))
        .collect();
    (json!(names.join(",")), json!(images.join(",")))
}

fn none_if_empty(s: String) -> String {
    if s.is_empty() {
        "<none>".into()
    } else {
        s
    }
}

fn access_modes(v: Option<&Value>) -> String {
    let modes: Vec<&str> = v
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut out = Vec::new();
    for (mode, short) in [
        ("ReadWriteOnce", "RWO"),
        ("ReadOnlyMany", "ROX"),
        ("ReadWriteMany", "RWX"),
        ("ReadWriteOncePod", "RWOP"),
    ] {
        if modes.contains(&mode) {
            out.push(short);
        }
    }
    out.join(",")
}

fn int_or_string(v: Option<&Value>) -> String {
    match v {
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::String(s)) => s.clone(),
        _ => "N/A".into(),
    }
}

fn cells(group: &str, kind: &str, o: &Object, now: &Time) -> Vec<Value> {
    let name = s(o, "/metadata/name");
    match (group, kind) {
        ("", "Pod") => pod_cells(o, now),
        ("", "PodTemplate") => {
            let (names, images) = containers_cells(at(o, "/template/spec"));
            vec![
                name,
                names,
                images,
                json!(format_labels(at(o, "/template/metadata/labels"))),
            ]
        }
        ("", "Namespace") => vec![name, s(o, "/status/phase"), age(o, now)],
        ("certificates.k8s.io", "CertificateSigningRequest") => {
            let signer = at(o, "/spec/signerName")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .unwrap_or("<none>");
            let duration = at(o, "/spec/expirationSeconds")
                .and_then(Value::as_i64)
                .map_or_else(|| "<none>".to_owned(), human_duration);
            // Upstream's: each condition type that holds, then Issued; Pending when none.
            let mut state: Vec<String> = at(o, "/status/conditions")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter(|c| c["status"] != "False")
                .filter_map(|c| c["type"].as_str().map(str::to_owned))
                .collect();
            if at(o, "/status/certificate")
                .and_then(Value::as_str)
                .is_some_and(|c| !c.is_empty())
            {
                state.push("Issued".into());
            }
            let condition = if state.is_empty() {
                "Pending".to_owned()
            } else {
                state.join(",")
            };
            vec![
                name,
                age(o, now),
                json!(signer),
                s(o, "/spec/username"),
                json!(duration),
                json!(condition),
            ]
        }
        ("", "ConfigMap") => vec![
            name,
            json!(len(o, "/data") + len(o, "/binaryData")),
            age(o, now),
        ],
        ("", "Secret") => vec![name, s(o, "/type"), json!(len(o, "/data")), age(o, now)],
        ("", "ServiceAccount") => vec![name, json!(len(o, "/secrets")), age(o, now)],
        ("", "Service") => service_cells(o, now),
        ("", "Endpoints") => vec![name, json!(format_endpoints(o)), age(o, now)],
        ("", "Node") => node_cells(o, now),
        ("", "Event") => event_cells(o, now),
        ("", "PersistentVolumeClaim") => {
            let mut phase = st(o, "/status/phase");
            if at(o, "/metadata/deletionTimestamp").is_some() {
                phase = "Terminating".into();
            }
            let volume = st(o, "/spec/volumeName");
            let (capacity, modes) = if volume.is_empty() {
                (String::new(), String::new())
            } else {
                (
                    st(o, "/status/capacity/storage"),
                    access_modes(at(o, "/status/accessModes")),
                )
            };
            let class = at(o, "/spec/storageClassName")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .or_else(|| {
                    at(
                        o,
                        "/metadata/annotations/volume.beta.kubernetes.io~1storage-class",
                    )
                    .and_then(Value::as_str)
                    .map(str::to_owned)
                })
                .unwrap_or_default();
            vec![
                name,
                json!(phase),
                json!(volume),
                json!(capacity),
                json!(modes),
                json!(class),
                json!(at(o, "/spec/volumeAttributesClassName")
                    .and_then(Value::as_str)
                    .unwrap_or("<unset>")),
                age(o, now),
                json!(at(o, "/spec/volumeMode")
                    .and_then(Value::as_str)
                    .unwrap_or("<unset>")),
            ]
        }
        ("", "PersistentVolume") => {
            let mut phase = st(o, "/status/phase");
            if at(o, "/metadata/deletionTimestamp").is_some() {
                phase = "Terminating".into();
            }
            let claim = match at(o, "/spec/claimRef") {
                Some(c) => format!(
                    "{}/{}",
                    c.get("namespace").and_then(Value::as_str).unwrap_or(""),
                    c.get("name").and_then(Value::as_str).unwrap_or("")
                ),
                None => String::new(),
            };
            vec![
                name,
                json!(at(o, "/spec/capacity/storage")
                    .and_then(Value::as_str)
                    .unwrap_or("0")),
                json!(access_modes(at(o, "/spec/accessModes"))),
                s(o, "/spec/persistentVolumeReclaimPolicy"),
                json!(phase),
                json!(claim),
                s(o, "/spec/storageClassName"),
                json!(at(o, "/spec/volumeAttributesClassName")
                    .and_then(Value::as_str)
                    .unwrap_or("<unset>")),
                s(o, "/status/reason"),
                age(o, now),
                json!(at(o, "/spec/volumeMode")
                    .and_then(Value::as_str)
                    .unwrap_or("<unset>")),
            ]
        }
        ("", "ReplicationController") => {
            let (names, images) = containers_cells(at(o, "/spec/template/spec"));
            vec![
                name,
                json!(int(o, "/spec/replicas")),
                json!(int(o, "/status/replicas")),
                json!(int(o, "/status/readyReplicas")),
                age(o, now),
                names,
                images,
                json!(format_labels(at(o, "/spec/selector"))),
            ]
        }
        ("apps", "ReplicaSet") => {
            let (names, images) = containers_cells(at(o, "/spec/template/spec"));
            vec![
                name,
                json!(int(o, "/spec/replicas")),
                json!(int(o, "/status/replicas")),
                json!(int(o, "/status/readyReplicas")),
                age(o, now),
                names,
                images,
                json!(format_selector(at(o, "/spec/selector"), "<none>")),
            ]
        }
        ("apps", "Deployment") => {
            let (names, images) = containers_cells(at(o, "/spec/template/spec"));
            vec![
                name,
                json!(format!(
                    "{}/{}",
                    int(o, "/status/readyReplicas"),
                    int(o, "/spec/replicas")
                )),
                json!(int(o, "/status/updatedReplicas")),
                json!(int(o, "/status/availableReplicas")),
                age(o, now),
                names,
                images,
                json!(format_selector(at(o, "/spec/selector"), "")),
            ]
        }
        ("apps", "StatefulSet") => {
            let (names, images) = containers_cells(at(o, "/spec/template/spec"));
            vec![
                name,
                json!(format!(
                    "{}/{}",
                    int(o, "/status/readyReplicas"),
                    int(o, "/spec/replicas")
                )),
                age(o, now),
                names,
                images,
            ]
        }
        ("apps", "DaemonSet") => {
            let (names, images) = containers_cells(at(o, "/spec/template/spec"));
            vec![
                name,
                json!(int(o, "/status/desiredNumberScheduled")),
                json!(int(o, "/status/currentNumberScheduled")),
                json!(int(o, "/status/numberReady")),
                json!(int(o, "/status/updatedNumberScheduled")),
                json!(int(o, "/status/numberAvailable")),
                json!(format_labels(at(o, "/spec/template/spec/nodeSelector"))),
                age(o, now),
                names,
                images,
                json!(format_selector(at(o, "/spec/selector"), "<none>")),
            ]
        }
        ("apps", "ControllerRevision") => {
            let controller = at(o, "/metadata/ownerReferences")
                .and_then(Value::as_array)
                .and_then(|refs| {
                    refs.iter()
                        .find(|r| r.get("controller") == Some(&Value::Bool(true)))
                })
                .map(|r| {
                    let kind = r
                        .get("kind")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_lowercase();
                    let api = r.get("apiVersion").and_then(Value::as_str).unwrap_or("");
                    let group = api.split_once('/').map(|(g, _)| g).unwrap_or("");
                    let n = r.get("name").and_then(Value::as_str).unwrap_or("");
                    if group.is_empty() {
                        format!("{kind}/{n}")
                    } else {
                        format!("{kind}.{group}/{n}")
                    }
                })
                .unwrap_or_else(|| "<none>".into());
            vec![
                name,
                json!(controller),
                json!(int(o, "/revision")),
                age(o, now),
            ]
        }
        ("batch", "Job") => job_cells(o, now),
        ("batch", "CronJob") => {
            let (names, images) = containers_cells(at(o, "/spec/jobTemplate/spec/template/spec"));
            let last = match at(o, "/status/lastScheduleTime") {
                Some(t) => since(Some(t), now),
                None => "<none>".into(),
            };
            let suspend = match at(o, "/spec/suspend").and_then(Value::as_bool) {
                Some(true) => "True",
                Some(false) => "False",
                None => "<unset>",
            };
            vec![
                name,
                s(o, "/spec/schedule"),
                json!(at(o, "/spec/timeZone")
                    .and_then(Value::as_str)
                    .unwrap_or("<none>")),
                json!(suspend),
                json!(len(o, "/status/active")),
                json!(last),
                age(o, now),
                names,
                images,
                json!(format_selector(
                    at(o, "/spec/jobTemplate/spec/selector"),
                    "<none>"
                )),
            ]
        }
        ("coordination.k8s.io", "Lease") => vec![name, s(o, "/spec/holderIdentity"), age(o, now)],
        ("discovery.k8s.io", "EndpointSlice") => {
            let ports: Vec<String> = at(o, "/ports")
                .and_then(Value::as_array)
                .map(|ps| {
                    ps.iter()
                        .map(|p| match (p.get("port"), p.get("name")) {
                            (Some(n), _) => n.to_string(),
                            (None, Some(Value::String(n))) => n.clone(),
                            _ => "*".into(),
                        })
                        .collect()
                })
                .unwrap_or_default();
            let addresses: Vec<String> = at(o, "/endpoints")
                .and_then(Value::as_array)
                .map(|es| {
                    es.iter()
                        .flat_map(|e| {
                            e.get("addresses")
                                .and_then(Value::as_array)
                                .cloned()
                                .unwrap_or_default()
                        })
                        .filter_map(|a| a.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            vec![
                name,
                s(o, "/addressType"),
                json!(list_with_more(&ports, 3)),
                json!(list_with_more(&addresses, 3)),
                age(o, now),
            ]
        }
        ("rbac.authorization.k8s.io", "RoleBinding" | "ClusterRoleBinding") => {
            let (mut users, mut groups, mut sas) = (vec![], vec![], vec![]);
            for subj in at(o, "/subjects")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let n = subj
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned();
                match subj.get("kind").and_then(Value::as_str) {
                    Some("User") => users.push(n),
                    Some("Group") => groups.push(n),
                    Some("ServiceAccount") => {
                        let ns = subj.get("namespace").and_then(Value::as_str).unwrap_or("");
                        sas.push(format!("{ns}/{n}"));
                    }
                    _ => {}
                }
            }
            vec![
                name,
                json!(format!(
                    "{}/{}",
                    st(o, "/roleRef/kind"),
                    st(o, "/roleRef/name")
                )),
                age(o, now),
                json!(users.join(", ")),
                json!(groups.join(", ")),
                json!(sas.join(", ")),
            ]
        }
        ("scheduling.k8s.io", "PriorityClass") => vec![
            name,
            json!(int(o, "/value")),
            json!(at(o, "/globalDefault")
                .and_then(Value::as_bool)
                .unwrap_or(false)),
            age(o, now),
        ],
        ("storage.k8s.io", "StorageClass") => {
            let default = [
                "storageclass.kubernetes.io~1is-default-class",
                "storageclass.beta.kubernetes.io~1is-default-class",
            ]
            .iter()
            .any(|k| {
                at(o, &format!("/metadata/annotations/{k}")).and_then(Value::as_str) == Some("true")
            });
            let shown = if default {
                json!(format!("{} (default)", st(o, "/metadata/name")))
            } else {
                name
            };
            vec![
                shown,
                s(o, "/provisioner"),
                json!(at(o, "/reclaimPolicy")
                    .and_then(Value::as_str)
                    .unwrap_or("Delete")),
                json!(at(o, "/volumeBindingMode")
                    .and_then(Value::as_str)
                    .unwrap_or("Immediate")),
                json!(at(o, "/allowVolumeExpansion")
                    .and_then(Value::as_bool)
                    .unwrap_or(false)),
                age(o, now),
            ]
        }
        ("networking.k8s.io", "Ingress") => {
            let rules: Vec<&Value> = at(o, "/spec/rules")
                .and_then(Value::as_array)
                .map(|a| a.iter().collect())
                .unwrap_or_default();
            let hosts: Vec<String> = rules
                .iter()
                .filter_map(|r| r.get("host").and_then(Value::as_str))
                .filter(|h| !h.is_empty())
                .take(3)
                .map(str::to_owned)
                .collect();
            let hosts = if hosts.is_empty() {
                "*".to_owned()
            } else if rules.len() > 3 {
                format!("{} + {} more...", hosts.join(","), rules.len() - 3)
            } else {
                hosts.join(",")
            };
            let mut addrs: Vec<String> = at(o, "/status/loadBalancer/ingress")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|i| {
                            i.get("ip")
                                .and_then(Value::as_str)
                                .filter(|s| !s.is_empty())
                                .or_else(|| i.get("hostname").and_then(Value::as_str))
                                .map(str::to_owned)
                        })
                        .collect()
                })
                .unwrap_or_default();
            addrs.sort();
            addrs.dedup();
            let ports = if len(o, "/spec/tls") > 0 {
                "80, 443"
            } else {
                "80"
            };
            vec![
                name,
                json!(at(o, "/spec/ingressClassName")
                    .and_then(Value::as_str)
                    .unwrap_or("<none>")),
                json!(hosts),
                json!(addrs.join(",")),
                json!(ports),
                age(o, now),
            ]
        }
        ("networking.k8s.io", "NetworkPolicy") => vec![
            name,
            json!(none_if_empty(format_selector(
                at(o, "/spec/podSelector"),
                ""
            ))),
            age(o, now),
        ],
        ("policy", "PodDisruptionBudget") => vec![
            name,
            json!(int_or_string(at(o, "/spec/minAvailable"))),
            json!(int_or_string(at(o, "/spec/maxUnavailable"))),
            json!(int(o, "/status/disruptionsAllowed")),
            age(o, now),
        ],
        ("autoscaling", "HorizontalPodAutoscaler") => {
            let reference = format!(
                "{}/{}",
                st(o, "/spec/scaleTargetRef/kind"),
                st(o, "/spec/scaleTargetRef/name")
            );
            let min = at(o, "/spec/minReplicas")
                .and_then(Value::as_i64)
                .map_or("<unset>".to_owned(), |m| m.to_string());
            vec![
                name,
                json!(reference),
                json!(hpa_targets(o)),
                json!(min),
                json!(int(o, "/spec/maxReplicas")),
                json!(int(o, "/status/currentReplicas")),
                age(o, now),
            ]
        }
        _ => vec![name, age(o, now)],
    }
}

fn list_with_more(list: &[String], max: usize) -> String {
    if list.is_empty() {
        return "<unset>".into();
    }
    let shown = list[..list.len().min(max)].join(",");
    if list.len() > max {
        format!("{shown} + {} more...", list.len() - max)
    } else {
        shown
    }
}

fn hpa_targets(o: &Object) -> String {
    let specs: Vec<&Value> = at(o, "/spec/metrics")
        .and_then(Value::as_array)
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    if specs.is_empty() {
        // autoscaling/v1: the CPU utilisation target.
        if let Some(t) = at(o, "/spec/targetCPUUtilizationPercentage").and_then(Value::as_i64) {
            let current = at(o, "/status/currentCPUUtilizationPercentage")
                .and_then(Value::as_i64)
                .map_or("<unknown>".to_owned(), |c| format!("{c}%"));
            return format!("cpu: {current}/{t}%");
        }
        return "<none>".into();
    }
    let statuses: Vec<&Value> = at(o, "/status/currentMetrics")
        .and_then(Value::as_array)
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    let mut list = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        let status = statuses.get(i);
        let ty = spec.get("type").and_then(Value::as_str).unwrap_or("");
        let key = match ty {
            "Resource" => "resource",
            "ContainerResource" => "containerResource",
            "Pods" => "pods",
            "Object" => "object",
            "External" => "external",
            _ => "",
        };
        let target = spec.get(key).and_then(|m| m.get("target"));
        let current = status
            .and_then(|s| s.get(key))
            .and_then(|m| m.get("current"));
        let text = match target {
            Some(t) if t.get("averageUtilization").is_some() => {
                let cur = current
                    .and_then(|c| c.get("averageUtilization"))
                    .and_then(Value::as_i64)
                    .map_or("<unknown>".to_owned(), |v| format!("{v}%"));
                let res = spec
                    .get(key)
                    .and_then(|m| m.get("name"))
                    .and_then(Value::as_str)
                    .unwrap_or("");
                format!("{res}: {cur}/{}%", t["averageUtilization"])
            }
            Some(t) => {
                let field = if t.get("averageValue").is_some() {
                    "averageValue"
                } else {
                    "value"
                };
                let cur = current
                    .and_then(|c| c.get(field))
                    .and_then(Value::as_str)
                    .unwrap_or("<unknown>");
                let want = t.get(field).and_then(Value::as_str).unwrap_or("");
                let avg = if field == "averageValue" && ty != "Pods" {
                    " (avg)"
                } else {
                    ""
                };
                format!("{cur}/{want}{avg}")
            }
            None => "<unknown>".into(),
        };
        list.push(text);
    }
    if list.len() > 2 {
        format!("{} + {} more...", list[..2].join(", "), list.len() - 2)
    } else {
        list.join(", ")
    }
}

fn format_endpoints(o: &Object) -> String {
    let subsets: Vec<&Value> = at(o, "/subsets")
        .and_then(Value::as_array)
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    if subsets.is_empty() {
        return "<none>".into();
    }
    let max = 3;
    let mut list = Vec::new();
    let mut count = 0;
    for ss in subsets {
        let addrs: Vec<&str> = ss
            .get("addresses")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.get("ip").and_then(Value::as_str))
                    .collect()
            })
            .unwrap_or_default();
        let ports: Vec<i64> = ss
            .get("ports")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|p| p.get("port").and_then(Value::as_i64))
                    .collect()
            })
            .unwrap_or_default();
        if ports.is_empty() {
            count += addrs.len();
            for a in &addrs {
                if list.len() < max {
                    list.push((*a).to_owned());
                }
            }
            continue;
        }
        for p in &ports {
            count += addrs.len();
            for a in &addrs {
                if list.len() < max {
                    let host = if a.contains(':') {
                        format!("[{a}]")
                    } else {
                        (*a).to_owned()
                    };
                    list.push(format!("{host}:{p}"));
                }
            }
        }
    }
    let joined = list.join(",");
    if count > max {
        format!("{joined} + {} more...", count - max)
    } else {
        joined
    }
}

fn service_cells(o: &Object, now: &Time) -> Vec<Value> {
    let ty = st(o, "/spec/type");
    let cluster_ip = at(o, "/spec/clusterIPs")
        .and_then(Value::as_array)
        .and_then(|a| a.first())
        .and_then(Value::as_str)
        .unwrap_or("<none>")
        .to_owned();
    let external: Vec<String> = at(o, "/spec/externalIPs")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let external_ip = match ty.as_str() {
        "ClusterIP" | "NodePort" => {
            if external.is_empty() {
                "<none>".to_owned()
            } else {
                external.join(",")
            }
        }
        "LoadBalancer" => {
            let mut lb: Vec<String> = at(o, "/status/loadBalancer/ingress")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|i| {
                            i.get("ip")
                                .and_then(Value::as_str)
                                .filter(|s| !s.is_empty())
                                .or_else(|| i.get("hostname").and_then(Value::as_str))
                                .map(str::to_owned)
                        })
                        .collect()
                })
                .unwrap_or_default();
            lb.sort();
            lb.dedup();
            lb.extend(external);
            if lb.is_empty() {
                "<pending>".to_owned()
            } else {
                lb.join(",")
            }
        }
        "ExternalName" => st(o, "/spec/externalName"),
        _ => "<unknown>".to_owned(),
    };
    let ports: Vec<String> = at(o, "/spec/ports")
        .and_then(Value::as_array)
        .map(|ps| {
            ps.iter()
                .map(|p| {
                    let port = p.get("port").and_then(Value::as_i64).unwrap_or(0);
                    let proto = p.get("protocol").and_then(Value::as_str).unwrap_or("");
                    match p.get("nodePort").and_then(Value::as_i64).filter(|n| *n > 0) {
                        Some(np) => format!("{port}:{np}/{proto}"),
                        None => format!("{port}/{proto}"),
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    vec![
        s(o, "/metadata/name"),
        json!(ty),
        json!(cluster_ip),
        json!(external_ip),
        json!(none_if_empty(ports.join(","))),
        age(o, now),
        json!(format_labels(at(o, "/spec/selector"))),
    ]
}

fn node_cells(o: &Object, now: &Time) -> Vec<Value> {
    let mut status: Vec<String> = Vec::new();
    if let Some(ready) = at(o, "/status/conditions")
        .and_then(Value::as_array)
        .and_then(|cs| {
            cs.iter()
                .find(|c| c.get("type").and_then(Value::as_str) == Some("Ready"))
        })
    {
        if ready.get("status").and_then(Value::as_str) == Some("True") {
            status.push("Ready".into());
        } else {
            status.push("NotReady".into());
        }
    }
    if status.is_empty() {
        status.push("Unknown".into());
    }
    if at(o, "/spec/unschedulable").and_then(Value::as_bool) == Some(true) {
        status.push("SchedulingDisabled".into());
    }
    let mut roles: Vec<String> = at(o, "/metadata/labels")
        .and_then(Value::as_object)
        .map(|labels| {
            labels
                .iter()
                .filter_map(|(k, v)| {
                    if let Some(role) = k.strip_prefix("node-role.kubernetes.io/") {
                        (!role.is_empty()).then(|| role.to_owned())
                    } else if k == "kubernetes.io/role" {
                        v.as_str().filter(|v| !v.is_empty()).map(str::to_owned)
                    } else {
                        None
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    roles.sort();
    roles.dedup();
    let address = |ty: &str| {
        at(o, "/status/addresses")
            .and_then(Value::as_array)
            .and_then(|a| {
                a.iter()
                    .find(|x| x.get("type").and_then(Value::as_str) == Some(ty))
            })
            .and_then(|x| x.get("address"))
            .and_then(Value::as_str)
            .unwrap_or("<none>")
            .to_owned()
    };
    let info = |f: &str| {
        let v = st(o, &format!("/status/nodeInfo/{f}"));
        if v.is_empty() {
            "<unknown>".to_owned()
        } else {
            v
        }
    };
    vec![
        s(o, "/metadata/name"),
        json!(status.join(",")),
        json!(none_if_empty(roles.join(","))),
        age(o, now),
        s(o, "/status/nodeInfo/kubeletVersion"),
        json!(address("InternalIP")),
        json!(address("ExternalIP")),
        json!(info("osImage")),
        json!(info("kernelVersion")),
        json!(info("containerRuntimeVersion")),
    ]
}

fn event_cells(o: &Object, now: &Time) -> Vec<Value> {
    let first = match at(o, "/firstTimestamp").filter(|v| !v.is_null()) {
        Some(t) => since(Some(t), now),
        None => since(at(o, "/eventTime"), now),
    };
    let mut last = match at(o, "/lastTimestamp").filter(|v| !v.is_null()) {
        Some(t) => since(Some(t), now),
        None => first.clone(),
    };
    let mut count = int(o, "/count");
    if let Some(series) = at(o, "/series").filter(|v| v.is_object()) {
        last = since(series.get("lastObservedTime"), now);
        count = series.get("count").and_then(Value::as_i64).unwrap_or(0);
    } else if count == 0 {
        count = 1;
    }
    let kind = st(o, "/involvedObject/kind").to_lowercase();
    let obj_name = st(o, "/involvedObject/name");
    let target = if obj_name.is_empty() {
        kind
    } else {
        format!("{kind}/{obj_name}")
    };
    // Source: component and host of the old API, else the reporting controller and instance.
    let (component, host) = {
        let c = st(o, "/source/component");
        if c.is_empty() {
            (st(o, "/reportingComponent"), st(o, "/reportingInstance"))
        } else {
            (c, st(o, "/source/host"))
        }
    };
    let source = if host.is_empty() {
        component
    } else {
        format!("{component}, {host}")
    };
    vec![
        json!(last),
        s(o, "/type"),
        s(o, "/reason"),
        json!(target),
        s(o, "/involvedObject/fieldPath"),
        json!(source),
        json!(st(o, "/message").trim()),
        json!(first),
        json!(count),
        s(o, "/metadata/name"),
    ]
}

fn job_cells(o: &Object, now: &Time) -> Vec<Value> {
    let succeeded = int(o, "/status/succeeded");
    let completions = match at(o, "/spec/completions").and_then(Value::as_i64) {
        Some(c) => format!("{succeeded}/{c}"),
        None => {
            let p = int(o, "/spec/parallelism");
            if p > 1 {
                format!("{succeeded}/1 of {p}")
            } else {
                format!("{succeeded}/1")
            }
        }
    };
    let start = at(o, "/status/startTime")
        .and_then(Value::as_str)
        .and_then(|t| t.parse::<Time>().ok());
    let end = at(o, "/status/completionTime")
        .and_then(Value::as_str)
        .and_then(|t| t.parse::<Time>().ok());
    let duration = match (start, end) {
        (None, _) => String::new(),
        (Some(s), None) => human_duration(now.unix_seconds() - s.unix_seconds()),
        (Some(s), Some(e)) => human_duration(e.unix_seconds() - s.unix_seconds()),
    };
    let condition = |ty: &str| {
        at(o, "/status/conditions")
            .and_then(Value::as_array)
            .and_then(|cs| {
                cs.iter()
                    .find(|c| c.get("type").and_then(Value::as_str) == Some(ty))
            })
            .is_some_and(|c| c.get("status").and_then(Value::as_str) == Some("True"))
    };
    let status = if condition("Complete") {
        "Complete"
    } else if condition("Failed") {
        "Failed"
    } else if at(o, "/metadata/deletionTimestamp").is_some() {
        "Terminating"
    } else if condition("Suspended") {
        "Suspended"
    } else if condition("FailureTarget") {
        "FailureTarget"
    } else {
        "Running"
    };
    let (names, images) = containers_cells(at(o, "/spec/template/spec"));
    vec![
        s(o, "/metadata/name"),
        json!(status),
        json!(completions),
        json!(duration),
        age(o, now),
        names,
        images,
        json!(format_selector(at(o, "/spec/selector"), "<none>")),
    ]
}

fn pod_cells(o: &Object, now: &Time) -> Vec<Value> {
    let empty = Vec::new();
    let arr = |p: &str| at(o, p).and_then(Value::as_array).unwrap_or(&empty);
    let init_specs = arr("/spec/initContainers");
    let restartable = |name: &str| {
        init_specs.iter().any(|c| {
            c.get("name").and_then(Value::as_str) == Some(name)
                && c.get("restartPolicy").and_then(Value::as_str) == Some("Always")
        })
    };
    let mut total = arr("/spec/containers").len() as i64;
    total += init_specs
        .iter()
        .filter(|c| c.get("restartPolicy").and_then(Value::as_str) == Some("Always"))
        .count() as i64;
    let mut ready = 0i64;
    let mut restarts = 0i64;
    let mut sidecar_restarts = 0i64;
    let mut last_restart: Option<Time> = None;
    let mut last_sidecar_restart: Option<Time> = None;
    let phase = st(o, "/status/phase");
    let mut reason = st(o, "/status/reason");
    if reason.is_empty() {
        reason = phase.clone();
    }
    let conditions = arr("/status/conditions");
    if conditions.iter().any(|c| {
        c.get("type").and_then(Value::as_str) == Some("PodScheduled")
            && c.get("reason").and_then(Value::as_str) == Some("SchedulingGated")
    }) {
        reason = "SchedulingGated".into();
    }
    let finished = |c: &Value| -> Option<Time> {
        c.pointer("/lastState/terminated/finishedAt")
            .and_then(Value::as_str)
            .and_then(|t| t.parse::<Time>().ok())
    };
    let later = |a: Option<Time>, b: Option<Time>| match (a, b) {
        (Some(x), Some(y)) => Some(if y.unix_seconds() > x.unix_seconds() {
            y
        } else {
            x
        }),
        (x, None) => x,
        (None, y) => y,
    };
    let init_statuses = arr("/status/initContainerStatuses");
    let mut initializing = false;
    for (i, c) in init_statuses.iter().enumerate() {
        restarts += c.get("restartCount").and_then(Value::as_i64).unwrap_or(0);
        last_restart = later(last_restart, finished(c));
        let name = c.get("name").and_then(Value::as_str).unwrap_or("");
        let is_sidecar = restartable(name);
        if is_sidecar {
            sidecar_restarts += c.get("restartCount").and_then(Value::as_i64).unwrap_or(0);
            last_sidecar_restart = later(last_sidecar_restart, finished(c));
        }
        let terminated = c.pointer("/state/terminated");
        let waiting_reason = c
            .pointer("/state/waiting/reason")
            .and_then(Value::as_str)
            .unwrap_or("");
        if terminated
            .and_then(|t| t.get("exitCode"))
            .and_then(Value::as_i64)
            == Some(0)
        {
            continue;
        }
        if is_sidecar && c.get("started") == Some(&Value::Bool(true)) {
            if c.get("ready") == Some(&Value::Bool(true)) {
                ready += 1;
            }
            continue;
        }
        if let Some(t) = terminated {
            let r = t.get("reason").and_then(Value::as_str).unwrap_or("");
            reason = if r.is_empty() {
                match t.get("signal").and_then(Value::as_i64).filter(|s| *s != 0) {
                    Some(sig) => format!("Init:Signal:{sig}"),
                    None => format!(
                        "Init:ExitCode:{}",
                        t.get("exitCode").and_then(Value::as_i64).unwrap_or(0)
                    ),
                }
            } else {
                format!("Init:{r}")
            };
        } else if !waiting_reason.is_empty() && waiting_reason != "PodInitializing" {
            reason = format!("Init:{waiting_reason}");
        } else {
            reason = format!("Init:{i}/{}", init_specs.len());
        }
        initializing = true;
        break;
    }
    let initialized = conditions.iter().any(|c| {
        c.get("type").and_then(Value::as_str) == Some("Initialized")
            && c.get("status").and_then(Value::as_str) == Some("True")
    });
    if !initializing || initialized {
        restarts = sidecar_restarts;
        last_restart = last_sidecar_restart;
        let mut has_running = false;
        for c in arr("/status/containerStatuses").iter().rev() {
            restarts += c.get("restartCount").and_then(Value::as_i64).unwrap_or(0);
            last_restart = later(last_restart, finished(c));
            let waiting = c
                .pointer("/state/waiting/reason")
                .and_then(Value::as_str)
                .unwrap_or("");
            let terminated = c.pointer("/state/terminated");
            if !waiting.is_empty() {
                reason = waiting.to_owned();
            } else if let Some(t) = terminated {
                let r = t.get("reason").and_then(Value::as_str).unwrap_or("");
                reason = if !r.is_empty() {
                    r.to_owned()
                } else {
                    match t.get("signal").and_then(Value::as_i64).filter(|s| *s != 0) {
                        Some(sig) => format!("Signal:{sig}"),
                        None => format!(
                            "ExitCode:{}",
                            t.get("exitCode").and_then(Value::as_i64).unwrap_or(0)
                        ),
                    }
                };
            } else if c.get("ready") == Some(&Value::Bool(true))
                && c.pointer("/state/running").is_some()
            {
                has_running = true;
                ready += 1;
            }
        }
        if reason == "Completed" && has_running {
            let pod_ready = conditions.iter().any(|c| {
                c.get("type").and_then(Value::as_str) == Some("Ready")
                    && c.get("status").and_then(Value::as_str) == Some("True")
            });
            reason = if pod_ready { "Running" } else { "NotReady" }.into();
        }
    }
    if at(o, "/metadata/deletionTimestamp").is_some() {
        if st(o, "/status/reason") == "NodeLost" {
            reason = "Unknown".into();
        } else if phase != "Succeeded" && phase != "Failed" {
            reason = "Terminating".into();
        }
    }
    let restarts_text = match last_restart {
        Some(t) if restarts != 0 => format!(
            "{restarts} ({} ago)",
            human_duration(now.unix_seconds() - t.unix_seconds())
        ),
        _ => restarts.to_string(),
    };
    let pod_ip = arr("/status/podIPs")
        .first()
        .and_then(|p| p.get("ip"))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .unwrap_or("<none>")
        .to_owned();
    let gates = arr("/spec/readinessGates");
    let readiness = if gates.is_empty() {
        "<none>".to_owned()
    } else {
        let ok = gates
            .iter()
            .filter(|g| {
                let ty = g.get("conditionType").and_then(Value::as_str);
                conditions
                    .iter()
                    .find(|c| c.get("type").and_then(Value::as_str) == ty)
                    .is_some_and(|c| c.get("status").and_then(Value::as_str) == Some("True"))
            })
            .count();
        format!("{ok}/{}", gates.len())
    };
    vec![
        s(o, "/metadata/name"),
        json!(format!("{ready}/{total}")),
        json!(reason),
        json!(restarts_text),
        age(o, now),
        json!(pod_ip),
        json!(none_if_empty(st(o, "/spec/nodeName"))),
        json!(none_if_empty(st(o, "/status/nominatedNodeName"))),
        json!(readiness),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_durations_match_upstream() {
        for (secs, want) in [
            (-5, "<invalid>"),
            (-1, "0s"),
            (0, "0s"),
            (119, "119s"),
            (120, "2m"),
            (125, "2m5s"),
            (600, "10m"),
            (179 * 60, "179m"),
            (3 * 3600, "3h"),
            (3 * 3600 + 60, "3h1m"),
            (47 * 3600, "47h"),
            (50 * 3600, "2d2h"),
            (10 * 86400, "10d"),
            (800 * 86400, "2y70d"),
            (9 * 365 * 86400, "9y"),
        ] {
            assert_eq!(human_duration(secs), want, "{secs}");
        }
    }
}
