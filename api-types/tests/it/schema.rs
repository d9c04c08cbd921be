//! Our JSON schemas (derived from the Rust types by schemars) match the upstream OpenAPI
//! definitions: every property name and JSON type, for every definition we cover.

use crate::reference_dir;
use serde_json::Value;
use std::collections::BTreeSet;

/// Packages whose every definition must have a Rust type.
const COVERED: &[&str] = &[
    "io.k8s.api.admissionregistration.v1.",
    "io.k8s.api.apps.v1.",
    "io.k8s.api.authentication.v1.",
    "io.k8s.api.authorization.v1.",
    "io.k8s.api.autoscaling.v1.",
    "io.k8s.api.autoscaling.v2.",
    "io.k8s.api.batch.v1.",
    "io.k8s.api.certificates.v1.",
    "io.k8s.api.coordination.v1.",
    "io.k8s.api.core.v1.",
    "io.k8s.api.discovery.v1.",
    "io.k8s.api.events.v1.",
    "io.k8s.api.flowcontrol.v1.",
    "io.k8s.api.networking.v1.",
    "io.k8s.api.node.v1.",
    "io.k8s.api.policy.v1.",
    "io.k8s.api.rbac.v1.",
    "io.k8s.api.scheduling.v1.",
    "io.k8s.api.storage.v1.",
    "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.",
    "io.k8s.apimachinery.pkg.apis.meta.v1.",
    "io.k8s.kube-aggregator.pkg.apis.apiregistration.v1.",
];

/// Written by hand (wire unions and free-form JSON); their shapes are checked by unit tests.
const HAND_WRITTEN: &[&str] = &[
    "io.k8s.apimachinery.pkg.apis.meta.v1.Time",
    "io.k8s.apimachinery.pkg.apis.meta.v1.MicroTime",
    "io.k8s.apimachinery.pkg.apis.meta.v1.FieldsV1",
    "io.k8s.apimachinery.pkg.apis.meta.v1.Patch",
    "io.k8s.apimachinery.pkg.apis.meta.v1.WatchEvent",
    "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.JSON",
    "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.JSONSchemaPropsOrArray",
    "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.JSONSchemaPropsOrBool",
    "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.JSONSchemaPropsOrStringArray",
];

/// Resolves `$ref`, `Option` unions and single `allOf` wrappers in a schemars schema.
fn resolve<'a>(mut node: &'a Value, root: &'a Value) -> &'a Value {
    'outer: loop {
        if let Some(r) = node.get("$ref").and_then(Value::as_str) {
            node = if r == "#" {
                root
            } else {
                &root["$defs"][r.rsplit('/').next().unwrap_or("")]
            };
            continue 'outer;
        }
        for key in ["anyOf", "oneOf", "allOf"] {
            if let Some(list) = node.get(key).and_then(Value::as_array) {
                let non_null: Vec<&Value> = list
                    .iter()
                    .filter(|s| s.get("type") != Some(&Value::from("null")))
                    .collect();
                if non_null.len() == 1 {
                    node = non_null[0];
                    continue 'outer;
                }
            }
        }
        return node;
    }
}

/// The JSON type of a schemars node, ignoring `null` alternatives.
fn our_type(node: &Value) -> Option<String> {
    match node.get("type") {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .find(|t| *t != "null")
            .map(str::to_owned),
        _ => None,
    }
}

fn swagger_type<'a>(node: &'a Value, defs: &'a Value) -> (Option<String>, &'a Value) {
    if let Some(r) = node.get("$ref").and_then(Value::as_str) {
        let target = &defs[r.trim_start_matches("#/definitions/")];
        return (
            target
                .get("type")
                .and_then(Value::as_str)
                .map(str::to_owned),
            target,
        );
    }
    (
        node.get("type").and_then(Value::as_str).map(str::to_owned),
        node,
    )
}

fn compare(
    theirs: &Value,
    ours: &Value,
    root: &Value,
    defs: &Value,
    path: &str,
    errors: &mut Vec<String>,
) {
    let ours = resolve(ours, root);
    let (t, target) = swagger_type(theirs, defs);
    let Some(t) = t else { return }; // free-form upstream: anything goes
    let o = our_type(ours);
    if o.as_deref() != Some(t.as_str()) {
        errors.push(format!("{path}: upstream type {t}, ours {o:?}"));
        return;
    }
    match t.as_str() {
        "array" => compare(
            &theirs["items"],
            &ours["items"],
            root,
            defs,
            &format!("{path}[]"),
            errors,
        ),
        "object" => {
            if let Some(ap) = target.get("additionalProperties") {
                compare(
                    ap,
                    &ours["additionalProperties"],
                    root,
                    defs,
                    &format!("{path}{{}}"),
                    errors,
                );
            }
            let theirs_props: BTreeSet<&String> = target
                .get("properties")
                .and_then(Value::as_object)
                .map(|m| m.keys().collect())
                .unwrap_or_default();
            let ours_props: BTreeSet<&String> = ours
                .get("properties")
                .and_then(Value::as_object)
                .map(|m| m.keys().collect())
                .unwrap_or_default();
            if theirs_props != ours_props {
                let missing: Vec<_> = theirs_props.difference(&ours_props).collect();
                let extra: Vec<_> = ours_props.difference(&theirs_props).collect();
                errors.push(format!("{path}: missing {missing:?}, extra {extra:?}"));
            }
            // Properties of a referenced definition are compared where that definition is checked.
            if theirs.get("$ref").is_none() {
                for name in theirs_props.intersection(&ours_props) {
                    compare(
                        &target["properties"][*name],
                        &ours["properties"][*name],
                        root,
                        defs,
                        &format!("{path}.{name}"),
                        errors,
                    );
                }
            }
        }
        _ => {}
    }
}

#[test]
fn schemas_match_upstream_openapi() {
    let swagger: Value = serde_json::from_slice(
        &std::fs::read(reference_dir().join("kubernetes-v1.32-swagger.json")).unwrap(),
    )
    .unwrap();
    let defs = &swagger["definitions"];
    let ours = bosun_api_types::definition_schemas();
    let have: BTreeSet<&str> = ours.iter().map(|(n, _)| *n).collect();
    let mut errors = Vec::new();
    for name in defs.as_object().unwrap().keys() {
        if COVERED
            .iter()
            .any(|p| name.starts_with(p) && !name[p.len()..].contains('.'))
            && !HAND_WRITTEN.contains(&name.as_str())
            && !have.contains(name.as_str())
        {
            errors.push(format!("{name}: no Rust type"));
        }
    }
    for (name, schema) in &ours {
        let theirs = defs
            .get(*name)
            .unwrap_or_else(|| panic!("{name} is not an upstream definition"));
        let root = schema.as_value();
        compare(theirs, root, root, defs, name, &mut errors);
    }
    assert!(ours.len() > 450, "only {} definitions", ours.len());
    assert!(
        errors.is_empty(),
        "{} mismatches:\n{}",
        errors.len(),
        errors.join("\n")
    );
}

#[test]
fn every_kind_the_issue_names_is_a_resource() {
    let kinds: BTreeSet<(String, &str)> = bosun_api_types::BUILTIN_RESOURCES
        .iter()
        .map(|r| (r.api_version.to_owned(), r.kind))
        .collect();
    let want = [
        ("v1", "Pod"),
        ("v1", "Node"),
        ("v1", "Namespace"),
        ("v1", "Service"),
        ("v1", "Endpoints"),
        ("v1", "ConfigMap"),
        ("v1", "Secret"),
        ("v1", "ServiceAccount"),
        ("v1", "Event"),
        ("v1", "PersistentVolume"),
        ("v1", "PersistentVolumeClaim"),
        ("v1", "LimitRange"),
        ("v1", "ResourceQuota"),
        ("v1", "Binding"),
        ("v1", "ReplicationController"),
        ("v1", "PodTemplate"),
        ("v1", "ComponentStatus"),
        ("apps/v1", "Deployment"),
        ("apps/v1", "ReplicaSet"),
        ("apps/v1", "StatefulSet"),
        ("apps/v1", "DaemonSet"),
        ("apps/v1", "ControllerRevision"),
        ("autoscaling/v1", "Scale"),
        ("autoscaling/v2", "HorizontalPodAutoscaler"),
        ("batch/v1", "Job"),
        ("batch/v1", "CronJob"),
        ("coordination.k8s.io/v1", "Lease"),
        ("rbac.authorization.k8s.io/v1", "Role"),
        ("rbac.authorization.k8s.io/v1", "ClusterRole"),
        ("rbac.authorization.k8s.io/v1", "RoleBinding"),
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"),
        ("networking.k8s.io/v1", "NetworkPolicy"),
        ("networking.k8s.io/v1", "Ingress"),
        ("networking.k8s.io/v1", "IngressClass"),
        ("storage.k8s.io/v1", "StorageClass"),
        ("storage.k8s.io/v1", "CSIDriver"),
        ("storage.k8s.io/v1", "CSINode"),
        ("storage.k8s.io/v1", "VolumeAttachment"),
        ("discovery.k8s.io/v1", "EndpointSlice"),
        ("policy/v1", "PodDisruptionBudget"),
        ("policy/v1", "Eviction"),
        ("scheduling.k8s.io/v1", "PriorityClass"),
        ("events.k8s.io/v1", "Event"),
        ("apiextensions.k8s.io/v1", "CustomResourceDefinition"),
        ("authentication.k8s.io/v1", "TokenReview"),
        ("authentication.k8s.io/v1", "TokenRequest"),
        ("authentication.k8s.io/v1", "SelfSubjectReview"),
        ("authorization.k8s.io/v1", "SubjectAccessReview"),
        ("authorization.k8s.io/v1", "SelfSubjectAccessReview"),
        ("authorization.k8s.io/v1", "LocalSubjectAccessReview"),
        ("certificates.k8s.io/v1", "CertificateSigningRequest"),
        (
            "admissionregistration.k8s.io/v1",
            "ValidatingWebhookConfiguration",
        ),
        (
            "admissionregistration.k8s.io/v1",
            "MutatingWebhookConfiguration",
        ),
    ];
    for (av, kind) in want {
        assert!(
            kinds.contains(&(av.to_owned(), kind)),
            "{av} {kind} is not a Resource"
        );
    }
}

/// Scope, kind and singular name of every resource agree with what a real API server's
/// aggregated discovery reports (upstream 1.28; resources it does not serve are skipped).
#[test]
fn resource_scopes_match_recorded_discovery() {
    use bosun_api_types::{Scope, BUILTIN_RESOURCES};
    let dir = crate::reference_dir().join("upstream-v1.28.7/http");
    let mut checked = 0;
    for file in [
        "discovery-api-aggregated.json",
        "discovery-apis-aggregated.json",
    ] {
        let doc: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join(file)).unwrap()).unwrap();
        for group in doc["items"].as_array().unwrap() {
            let g = group["metadata"]["name"].as_str().unwrap_or("");
            for version in group["versions"].as_array().unwrap() {
                let v = version["version"].as_str().unwrap();
                for r in version["resources"].as_array().unwrap() {
                    let plural = r["resource"].as_str().unwrap();
                    let Some(ours) = BUILTIN_RESOURCES
                        .iter()
                        .find(|i| i.group == g && i.version == v && i.plural == plural)
                    else {
                        continue;
                    };
                    let scope = match ours.scope {
                        Scope::Namespaced => "Namespaced",
                        Scope::Cluster => "Cluster",
                    };
                    assert_eq!(scope, r["scope"], "{g}/{v} {plural}");
                    assert_eq!(ours.kind, r["responseKind"]["kind"], "{g}/{v} {plural}");
                    assert_eq!(ours.singular, r["singularResource"], "{g}/{v} {plural}");
                    checked += 1;
                }
            }
        }
    }
    assert!(checked > 50, "only {checked} resources compared");
}
