//! The ClusterRoles and ClusterRoleBindings every cluster starts with, after upstream's
//! bootstrap policy: `cluster-admin` for `system:masters`; discovery, basic-user and
//! public-info-viewer for everyone signed in; the user-facing `admin`, `edit` and `view`,
//! aggregated from the `system:aggregate-to-*` roles (and from any role labelled
//! `rbac.authorization.k8s.io/aggregate-to-view: "true"`, …); and the roles of the system's
//! components (`system:kube-scheduler`, `system:volume-scheduler`,
//! `system:kube-controller-manager`, `system:node`, `system:node-proxier`, `system:kube-dns`,
//! `system:monitoring`, `system:auth-delegator`).
//!
//! Each carries `kubernetes.io/bootstrapping: rbac-defaults` and
//! `rbac.authorization.kubernetes.io/autoupdate: "true"`: at start the server creates the
//! missing ones and adds the missing rules and subjects to those still marked for autoupdate,
//! leaving an administrator's removals alone on objects they marked `"false"`.

use serde_json::{json, Value};

const READ: &[&str] = &["get", "list", "watch"];
const WRITE: &[&str] = &["create", "delete", "deletecollection", "patch", "update"];
const READ_WRITE: &[&str] = &[
    "get",
    "list",
    "watch",
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
];

fn rule(verbs: &[&str], groups: &[&str], resources: &[&str]) -> Value {
    json!({"verbs": verbs, "apiGroups": groups, "resources": resources})
}

fn urls(verbs: &[&str], paths: &[&str]) -> Value {
    json!({"verbs": verbs, "nonResourceURLs": paths})
}

fn events() -> [Value; 2] {
    [
        rule(&["create", "patch", "update"], &[""], &["events"]),
        rule(
            &["create", "patch", "update"],
            &["events.k8s.io"],
            &["events"],
        ),
    ]
}

const AGGREGATE: &str = "rbac.authorization.k8s.io/aggregate-to-";

fn role(name: &str, rules: Vec<Value>) -> Value {
    role_labelled(name, rules, &[])
}

fn role_labelled(name: &str, rules: Vec<Value>, aggregate_to: &[&str]) -> Value {
    let mut labels = serde_json::Map::new();
    labels.insert("kubernetes.io/bootstrapping".into(), "rbac-defaults".into());
    for to in aggregate_to {
        labels.insert(format!("{AGGREGATE}{to}"), "true".into());
    }
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {
            "name": name,
            "labels": labels,
            "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"},
        },
        "rules": rules,
    })
}

/// An aggregated role: its rules are those of every ClusterRole its selector matches.
fn aggregated(name: &str, from: &str, aggregate_to: &[&str]) -> Value {
    let mut r = role_labelled(name, Vec::new(), aggregate_to);
    r["aggregationRule"] = json!({
        "clusterRoleSelectors": [{"matchLabels": {format!("{AGGREGATE}{from}"): "true"}}]
    });
    r
}

/// The bootstrap ClusterRoles.
pub fn cluster_roles() -> Vec<Value> {
    let mut scheduler = vec![
        rule(&["create"], &["coordination.k8s.io"], &["leases"]),
        rule(&["get", "update"], &["coordination.k8s.io"], &["leases"]),
        rule(READ, &[""], &["nodes"]),
        rule(&["delete", "get", "list", "watch"], &[""], &["pods"]),
        rule(&["create"], &[""], &["bindings", "pods/binding"]),
        rule(&["patch", "update"], &[""], &["pods/status"]),
        rule(
            READ,
            &[""],
            &[
                "replicationcontrollers",
                "services",
                "namespaces",
                "persistentvolumeclaims",
                "persistentvolumes",
            ],
        ),
        rule(READ, &["apps"], &["replicasets", "statefulsets"]),
        rule(READ, &["policy"], &["poddisruptionbudgets"]),
        rule(
            READ,
            &["storage.k8s.io"],
            &[
                "csinodes",
                "csidrivers",
                "csistoragecapacities",
                "storageclasses",
            ],
        ),
        rule(&["create"], &["authentication.k8s.io"], &["tokenreviews"]),
        rule(
            &["create"],
            &["authorization.k8s.io"],
            &["subjectaccessreviews"],
        ),
    ];
    scheduler.extend(events());
    let mut proxier = vec![
        rule(&["list", "watch"], &[""], &["services", "endpoints"]),
        rule(READ, &[""], &["nodes"]),
        rule(
            &["list", "watch"],
            &["discovery.k8s.io"],
            &["endpointslices"],
        ),
    ];
    proxier.extend(events());
    let mut node = vec![
        rule(&["create"], &["authentication.k8s.io"], &["tokenreviews"]),
        rule(
            &["create"],
            &["authorization.k8s.io"],
            &["subjectaccessreviews", "localsubjectaccessreviews"],
        ),
        rule(READ, &[""], &["services"]),
        rule(&["create", "get", "list", "watch"], &[""], &["nodes"]),
        rule(&["patch", "update"], &[""], &["nodes/status"]),
        rule(&["patch", "update"], &[""], &["nodes"]),
        rule(READ, &[""], &["pods"]),
        rule(&["create", "delete"], &[""], &["pods"]),
        rule(&["patch", "update"], &[""], &["pods/status"]),
        rule(&["create"], &[""], &["pods/eviction"]),
        rule(&["get", "list", "watch"], &[""], &["configmaps", "secrets"]),
        rule(
            &["get"],
            &[""],
            &["persistentvolumeclaims", "persistentvolumes"],
        ),
        rule(
            &["update", "patch"],
            &[""],
            &["persistentvolumeclaims/status"],
        ),
        rule(&["create"], &[""], &["serviceaccounts/token"]),
        rule(
            &["create", "get", "list", "watch"],
            &["certificates.k8s.io"],
            &["certificatesigningrequests"],
        ),
        rule(
            &["get", "create", "update", "patch", "delete"],
            &["coordination.k8s.io"],
            &["leases"],
        ),
        rule(READ, &["node.k8s.io"], &["runtimeclasses"]),
        rule(
            READ,
            &["storage.k8s.io"],
            &["csidrivers", "volumeattachments"],
        ),
        rule(READ_WRITE, &["storage.k8s.io"], &["csinodes"]),
    ];
    node.extend(events());
    let view = vec![
        rule(
            READ,
            &[""],
            &[
                "configmaps",
                "endpoints",
                "persistentvolumeclaims",
                "persistentvolumeclaims/status",
                "pods",
                "replicationcontrollers",
                "replicationcontrollers/scale",
                "serviceaccounts",
                "services",
                "services/status",
            ],
        ),
        rule(
            READ,
            &[""],
            &[
                "bindings",
                "events",
                "limitranges",
                "namespaces/status",
                "pods/log",
                "pods/status",
                "replicationcontrollers/status",
                "resourcequotas",
                "resourcequotas/status",
            ],
        ),
        rule(READ, &[""], &["namespaces"]),
        rule(READ, &["discovery.k8s.io"], &["endpointslices"]),
        rule(
            READ,
            &["apps"],
            &[
                "controllerrevisions",
                "daemonsets",
                "daemonsets/status",
                "deployments",
                "deployments/scale",
                "deployments/status",
                "replicasets",
                "replicasets/scale",
                "replicasets/status",
                "statefulsets",
                "statefulsets/scale",
                "statefulsets/status",
            ],
        ),
        rule(
            READ,
            &["autoscaling"],
            &[
                "horizontalpodautoscalers",
                "horizontalpodautoscalers/status",
            ],
        ),
        rule(
            READ,
            &["batch"],
            &["cronjobs", "cronjobs/status", "jobs", "jobs/status"],
        ),
        rule(
            READ,
            &["policy"],
            &["poddisruptionbudgets", "poddisruptionbudgets/status"],
        ),
        rule(
            READ,
            &["networking.k8s.io"],
            &["ingresses", "ingresses/status", "networkpolicies"],
        ),
    ];
    let edit = vec![
        rule(&["impersonate"], &[""], &["serviceaccounts"]),
        rule(
            WRITE,
            &[""],
            &[
                "pods",
                "pods/attach",
                "pods/exec",
                "pods/portforward",
                "pods/proxy",
            ],
        ),
        rule(&["create"], &[""], &["pods/eviction"]),
        rule(
            WRITE,
            &[""],
            &[
                "configmaps",
                "events",
                "persistentvolumeclaims",
                "replicationcontrollers",
                "replicationcontrollers/scale",
                "secrets",
                "serviceaccounts",
                "services",
                "services/proxy",
            ],
        ),
        rule(&["create"], &[""], &["serviceaccounts/token"]),
        rule(
            WRITE,
            &["apps"],
            &[
                "daemonsets",
                "deployments",
                "deployments/rollback",
                "deployments/scale",
                "replicasets",
                "replicasets/scale",
                "statefulsets",
                "statefulsets/scale",
            ],
        ),
        rule(WRITE, &["autoscaling"], &["horizontalpodautoscalers"]),
        rule(WRITE, &["batch"], &["cronjobs", "jobs"]),
        rule(WRITE, &["policy"], &["poddisruptionbudgets"]),
        rule(
            WRITE,
            &["networking.k8s.io"],
            &["ingresses", "networkpolicies"],
        ),
        rule(WRITE, &["coordination.k8s.io"], &["leases"]),
        rule(
            READ,
            &[""],
            &[
                "pods/attach",
                "pods/exec",
                "pods/portforward",
                "pods/proxy",
                "secrets",
                "services/proxy",
            ],
        ),
    ];
    let admin = vec![
        rule(
            &["create"],
            &["authorization.k8s.io"],
            &["localsubjectaccessreviews"],
        ),
        rule(
            READ_WRITE,
            &["rbac.authorization.k8s.io"],
            &["rolebindings", "roles"],
        ),
    ];
    let mut roles = vec![
        role(
            "cluster-admin",
            vec![rule(&["*"], &["*"], &["*"]), urls(&["*"], &["*"])],
        ),
        role(
            "system:discovery",
            vec![urls(
                &["get"],
                &[
                    "/api",
                    "/api/*",
                    "/apis",
                    "/apis/*",
                    "/healthz",
                    "/livez",
                    "/openapi",
                    "/openapi/*",
                    "/readyz",
                    "/version",
                    "/version/",
                ],
            )],
        ),
        role(
            "system:public-info-viewer",
            vec![urls(
                &["get"],
                &["/healthz", "/livez", "/readyz", "/version", "/version/"],
            )],
        ),
        role(
            "system:monitoring",
            vec![urls(
                &["get"],
                &[
                    "/healthz",
                    "/healthz/*",
                    "/livez",
                    "/livez/*",
                    "/metrics",
                    "/metrics/slis",
                    "/readyz",
                    "/readyz/*",
                ],
            )],
        ),
        role(
            "system:basic-user",
            vec![
                rule(
                    &["create"],
                    &["authorization.k8s.io"],
                    &["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
                ),
                rule(
                    &["create"],
                    &["authentication.k8s.io"],
                    &["selfsubjectreviews"],
                ),
            ],
        ),
        aggregated("admin", "admin", &[]),
        aggregated("edit", "edit", &["admin"]),
        aggregated("view", "view", &["edit"]),
        role_labelled("system:aggregate-to-admin", admin, &["admin"]),
        role_labelled("system:aggregate-to-edit", edit, &["edit"]),
        role_labelled("system:aggregate-to-view", view, &["view"]),
        role(
            "system:auth-delegator",
            vec![
                rule(&["create"], &["authentication.k8s.io"], &["tokenreviews"]),
                rule(
                    &["create"],
                    &["authorization.k8s.io"],
                    &["subjectaccessreviews"],
                ),
            ],
        ),
        role("system:kube-scheduler", scheduler),
        role(
            "system:volume-scheduler",
            vec![
                rule(
                    &["get", "list", "patch", "update", "watch"],
                    &[""],
                    &["persistentvolumes"],
                ),
                rule(READ, &["storage.k8s.io"], &["storageclasses"]),
                rule(
                    &["get", "list", "patch", "update", "watch"],
                    &[""],
                    &["persistentvolumeclaims"],
                ),
            ],
        ),
        // As upstream: the controller manager's own identity runs the shared informers and
        // leader election; each controller writes as its own service account
        // (`system:controller:NAME`, see `controller_roles`).
        role("system:kube-controller-manager", controller_manager()),
        role("system:node", node),
        role("system:node-proxier", proxier),
        role(
            "system:kube-dns",
            vec![rule(&["list", "watch"], &[""], &["endpoints", "services"])],
        ),
        // What a node agent's service proxy, network policy and DNS read, and the kube-dns
        // Service and EndpointSlices its DNS publishes (bosun's; upstream runs kube-proxy and
        // CoreDNS as service accounts with roles of their own).
        role(
            "bosun:network-agent",
            vec![
                rule(
                    READ,
                    &[""],
                    &["pods", "namespaces", "services", "endpoints", "nodes"],
                ),
                rule(READ, &["networking.k8s.io"], &["networkpolicies"]),
                rule(READ, &["discovery.k8s.io"], &["endpointslices"]),
                rule(&["create", "patch", "update"], &[""], &["services"]),
                rule(
                    &["create", "patch", "update", "delete"],
                    &["discovery.k8s.io"],
                    &["endpointslices"],
                ),
            ],
        ),
        role(
            "system:node-bootstrapper",
            vec![rule(
                &["create", "get", "list", "watch"],
                &["certificates.k8s.io"],
                &["certificatesigningrequests"],
            )],
        ),
        role(
            "system:certificates.k8s.io:certificatesigningrequests:nodeclient",
            vec![rule(
                &["create"],
                &["certificates.k8s.io"],
                &["certificatesigningrequests/nodeclient"],
            )],
        ),
        role(
            "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient",
            vec![rule(
                &["create"],
                &["certificates.k8s.io"],
                &["certificatesigningrequests/selfnodeclient"],
            )],
        ),
    ];
    roles.extend(controller_roles().into_iter().map(|(account, mut rules)| {
        rules.extend(events());
        role(&format!("system:controller:{account}"), rules)
    }));
    roles
}

/// `system:kube-controller-manager`: what the controller manager itself does (shared
/// informers over everything, its leader Lease, events, token requests for its controllers'
/// service accounts), after upstream's role.
fn controller_manager() -> Vec<Value> {
    let mut rules = vec![
        rule(&["create"], &["coordination.k8s.io"], &["leases"]),
        rule(&["get", "update"], &["coordination.k8s.io"], &["leases"]),
        rule(&["create"], &[""], &["secrets", "serviceaccounts"]),
        rule(&["delete"], &[""], &["secrets"]),
        rule(
            &["get"],
            &[""],
            &["namespaces", "secrets", "serviceaccounts", "configmaps"],
        ),
        rule(&["update"], &[""], &["secrets", "serviceaccounts"]),
        rule(&["create"], &["authentication.k8s.io"], &["tokenreviews"]),
        rule(
            &["create"],
            &["authorization.k8s.io"],
            &["subjectaccessreviews"],
        ),
        rule(&["list", "watch"], &["*"], &["*"]),
        rule(&["create"], &[""], &["serviceaccounts/token"]),
    ];
    rules.extend(events());
    rules
}

/// The built-in controllers' service accounts (in `kube-system`) and the rules of each one's
/// `system:controller:NAME` ClusterRole (events come on top), after upstream's controller
/// policy, with what bosun's controllers do differently (patches where upstream updates,
/// evictions, the local-path provisioner's volumes).
pub fn controller_roles() -> Vec<(&'static str, Vec<Value>)> {
    let apps = &["apps"][..];
    let core = &[""][..];
    let batch = &["batch"][..];
    vec![
        (
            "service-account-controller",
            vec![
                rule(&["get", "create"], core, &["serviceaccounts"]),
                // The root CA publisher's part: kube-root-ca.crt in every namespace.
                rule(&["get", "create", "update"], core, &["configmaps"]),
            ],
        ),
        (
            "replicaset-controller",
            vec![
                rule(
                    &["get", "list", "watch", "update", "patch"],
                    apps,
                    &["replicasets"],
                ),
                rule(
                    &["update"],
                    apps,
                    &["replicasets/status", "replicasets/finalizers"],
                ),
                rule(
                    &["list", "watch", "patch", "create", "delete"],
                    core,
                    &["pods"],
                ),
            ],
        ),
        (
            "replication-controller",
            vec![
                rule(
                    &["get", "list", "watch", "update", "patch"],
                    core,
                    &["replicationcontrollers"],
                ),
                rule(
                    &["update"],
                    core,
                    &[
                        "replicationcontrollers/status",
                        "replicationcontrollers/finalizers",
                    ],
                ),
                rule(
                    &["list", "watch", "patch", "create", "delete"],
                    core,
                    &["pods"],
                ),
            ],
        ),
        (
            "deployment-controller",
            vec![
                rule(
                    &["get", "list", "watch", "update", "patch"],
                    apps,
                    &["deployments"],
                ),
                rule(
                    &["update"],
                    apps,
                    &["deployments/status", "deployments/finalizers"],
                ),
                rule(
                    &[
                        "get", "list", "watch", "create", "update", "patch", "delete",
                    ],
                    apps,
                    &["replicasets"],
                ),
                rule(&["get", "list", "watch", "update"], core, &["pods"]),
            ],
        ),
        (
            "namespace-controller",
            vec![
                rule(&["get", "list", "watch", "delete"], core, &["namespaces"]),
                rule(
                    &["update"],
                    core,
                    &["namespaces/finalize", "namespaces/status"],
                ),
                rule(
                    &["get", "list", "watch", "delete", "deletecollection"],
                    &["*"],
                    &["*"],
                ),
            ],
        ),
        (
            "node-controller",
            vec![
                rule(
                    &["get", "list", "watch", "update", "delete", "patch"],
                    core,
                    &["nodes"],
                ),
                rule(&["patch", "update"], core, &["nodes/status", "pods/status"]),
                rule(&["list", "watch", "get", "delete"], core, &["pods"]),
                rule(&["create"], core, &["pods/eviction"]),
            ],
        ),
        (
            "endpoint-controller",
            vec![
                rule(READ, core, &["services", "pods", "nodes"]),
                rule(
                    &[
                        "get", "list", "watch", "create", "update", "patch", "delete",
                    ],
                    core,
                    &["endpoints"],
                ),
                rule(&["create"], core, &["endpoints/restricted"]),
                rule(&["update"], core, &["services/finalizers"]),
                rule(
                    &[
                        "get", "list", "watch", "create", "update", "patch", "delete",
                    ],
                    &["discovery.k8s.io"],
                    &["endpointslices"],
                ),
            ],
        ),
        (
            "statefulset-controller",
            vec![
                rule(&["list", "watch"], core, &["pods"]),
                rule(READ, apps, &["statefulsets"]),
                rule(
                    &["update"],
                    apps,
                    &["statefulsets/status", "statefulsets/finalizers"],
                ),
                rule(
                    &["get", "create", "delete", "update", "patch"],
                    core,
                    &["pods"],
                ),
                rule(
                    &[
                        "get", "create", "delete", "update", "patch", "list", "watch",
                    ],
                    apps,
                    &["controllerrevisions"],
                ),
                rule(
                    &[
                        "get", "create", "list", "watch", "update", "patch", "delete",
                    ],
                    core,
                    &["persistentvolumeclaims"],
                ),
                rule(&["update"], core, &["pods/finalizers"]),
            ],
        ),
        (
            "daemon-set-controller",
            vec![
                rule(READ, apps, &["daemonsets"]),
                rule(
                    &["update"],
                    apps,
                    &["daemonsets/status", "daemonsets/finalizers"],
                ),
                rule(&["list", "watch"], core, &["nodes"]),
                rule(
                    &["get", "list", "watch", "create", "delete", "patch"],
                    core,
                    &["pods"],
                ),
                rule(&["create"], core, &["pods/binding"]),
                rule(
                    &[
                        "get", "list", "watch", "create", "delete", "update", "patch",
                    ],
                    apps,
                    &["controllerrevisions"],
                ),
            ],
        ),
        (
            "pvc-protection-controller",
            vec![
                rule(
                    &["get", "list", "watch", "update", "patch"],
                    core,
                    &["persistentvolumeclaims"],
                ),
                rule(READ, core, &["pods"]),
            ],
        ),
        (
            "pv-protection-controller",
            vec![rule(
                &["get", "list", "watch", "update", "patch"],
                core,
                &["persistentvolumes"],
            )],
        ),
        (
            "persistent-volume-binder",
            vec![
                rule(
                    &[
                        "get", "list", "watch", "update", "patch", "create", "delete",
                    ],
                    core,
                    &["persistentvolumes"],
                ),
                rule(&["update", "patch"], core, &["persistentvolumes/status"]),
                rule(
                    &["get", "list", "watch", "update", "patch"],
                    core,
                    &["persistentvolumeclaims"],
                ),
                rule(
                    &["update", "patch"],
                    core,
                    &["persistentvolumeclaims/status"],
                ),
                rule(
                    &["list", "watch", "get", "create", "delete"],
                    core,
                    &["pods"],
                ),
                // The local-path provisioner makes its StorageClass.
                rule(
                    &["get", "list", "watch", "create"],
                    &["storage.k8s.io"],
                    &["storageclasses"],
                ),
                rule(&["get", "list", "watch"], core, &["nodes"]),
            ],
        ),
        (
            "horizontal-pod-autoscaler",
            vec![
                rule(READ, &["autoscaling"], &["horizontalpodautoscalers"]),
                rule(
                    &["update"],
                    &["autoscaling"],
                    &["horizontalpodautoscalers/status"],
                ),
                rule(&["get", "update", "patch"], &["*"], &["*/scale"]),
                rule(&["list", "watch"], core, &["pods"]),
                rule(&["get", "list", "watch"], &["metrics.k8s.io"], &["pods"]),
            ],
        ),
        (
            "resourcequota-controller",
            vec![
                rule(&["list", "watch"], &["*"], &["*"]),
                rule(&["update"], core, &["resourcequotas/status"]),
            ],
        ),
        (
            "disruption-controller",
            vec![
                rule(READ, apps, &["deployments", "replicasets", "statefulsets"]),
                rule(READ, core, &["replicationcontrollers"]),
                rule(READ, &["policy"], &["poddisruptionbudgets"]),
                rule(&["update"], &["policy"], &["poddisruptionbudgets/status"]),
                rule(&["patch", "update"], core, &["pods/status"]),
                rule(&["get"], &["*"], &["*/scale"]),
            ],
        ),
        (
            "job-controller",
            vec![
                rule(
                    &["get", "list", "watch", "update", "patch"],
                    batch,
                    &["jobs"],
                ),
                rule(&["update"], batch, &["jobs/status", "jobs/finalizers"]),
                rule(
                    &["get", "list", "watch", "create", "delete", "patch"],
                    core,
                    &["pods"],
                ),
            ],
        ),
        (
            "cronjob-controller",
            vec![
                rule(&["get", "list", "watch", "update"], batch, &["cronjobs"]),
                rule(
                    &[
                        "get", "list", "watch", "create", "update", "delete", "patch",
                    ],
                    batch,
                    &["jobs"],
                ),
                rule(
                    &["update"],
                    batch,
                    &["cronjobs/status", "cronjobs/finalizers"],
                ),
                rule(&["list", "watch", "delete"], core, &["pods"]),
            ],
        ),
        (
            "ttl-after-finished-controller",
            vec![rule(&["get", "list", "watch", "delete"], batch, &["jobs"])],
        ),
        (
            "generic-garbage-collector",
            vec![rule(
                &["get", "list", "watch", "patch", "update", "delete"],
                &["*"],
                &["*"],
            )],
        ),
    ]
}

/// The user a controller's service account authenticates as.
pub fn controller_user(account: &str) -> String {
    format!("system:serviceaccount:kube-system:{account}")
}

fn binding(name: &str, role: &str, subjects: &[(&str, &str)]) -> Value {
    let subjects: Vec<Value> = subjects
        .iter()
        .map(|(kind, name)| match *kind {
            "ServiceAccount" => {
                let (ns, n) = name.split_once('/').unwrap_or(("default", name));
                json!({"kind": kind, "name": n, "namespace": ns})
            }
            _ => json!({"kind": kind, "name": name, "apiGroup": "rbac.authorization.k8s.io"}),
        })
        .collect();
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {
            "name": name,
            "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"},
            "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"},
        },
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": subjects,
    })
}

/// The bootstrap ClusterRoleBindings.
pub fn cluster_role_bindings() -> Vec<Value> {
    let same = |role: &str, subjects: &[(&str, &str)]| binding(role, role, subjects);
    let mut bindings = vec![
        same("cluster-admin", &[("Group", "system:masters")]),
        same("system:discovery", &[("Group", "system:authenticated")]),
        same("system:basic-user", &[("Group", "system:authenticated")]),
        same(
            "system:public-info-viewer",
            &[
                ("Group", "system:authenticated"),
                ("Group", "system:unauthenticated"),
            ],
        ),
        same("system:monitoring", &[("Group", "system:monitoring")]),
        same(
            "system:kube-scheduler",
            &[("User", "system:kube-scheduler")],
        ),
        same(
            "system:volume-scheduler",
            &[("User", "system:kube-scheduler")],
        ),
        same(
            "system:kube-controller-manager",
            &[("User", "system:kube-controller-manager")],
        ),
        // Upstream leaves system:node unbound: the Node authorizer decides for kubelets.
        same("system:node", &[]),
        same("system:node-proxier", &[("User", "system:kube-proxy")]),
        same(
            "system:kube-dns",
            &[("ServiceAccount", "kube-system/kube-dns")],
        ),
        binding(
            "bosun:network-agent",
            "bosun:network-agent",
            &[("User", "system:kube-proxy")],
        ),
        // kubeadm's: nodes joining with a bootstrap token may ask for, and get, a client
        // certificate; nodes renew their own.
        binding(
            "bosun:kubelet-bootstrap",
            "system:node-bootstrapper",
            &[("Group", "system:bootstrappers")],
        ),
        binding(
            "bosun:node-autoapprove-bootstrap",
            "system:certificates.k8s.io:certificatesigningrequests:nodeclient",
            &[("Group", "system:bootstrappers")],
        ),
        binding(
            "bosun:node-autoapprove-certificate-rotation",
            "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient",
            &[("Group", "system:nodes")],
        ),
    ];
    bindings.extend(controller_roles().into_iter().map(|(account, _)| {
        let name = format!("system:controller:{account}");
        binding(
            &name,
            &name,
            &[("ServiceAccount", &format!("kube-system/{account}"))],
        )
    }));
    bindings
}

/// What to write over `existing` (a stored bootstrap object) so it has everything `wanted`
/// has, or `None` if nothing is missing or its owner turned autoupdate off. Missing rules
/// and subjects are added; nothing is taken away.
pub fn reconcile(existing: &Value, wanted: &Value) -> Option<Value> {
    let auto =
        existing["metadata"]["annotations"]["rbac.authorization.kubernetes.io/autoupdate"].as_str();
    if auto == Some("false") {
        return None;
    }
    let mut out = existing.clone();
    let mut changed = false;
    // Aggregated roles' rules belong to the aggregation, not to this list.
    let field = if wanted.get("aggregationRule").is_some() {
        None
    } else if wanted.get("rules").is_some() {
        Some("rules")
    } else {
        Some("subjects")
    };
    if let Some(field) = field {
        let have = out[field].as_array().cloned().unwrap_or_default();
        let mut merged = have.clone();
        for item in wanted[field].as_array().into_iter().flatten() {
            if !have.contains(item) {
                merged.push(item.clone());
                changed = true;
            }
        }
        out[field] = Value::Array(merged);
    }
    if out.get("aggregationRule").is_none() && wanted.get("aggregationRule").is_some() {
        out["aggregationRule"] = wanted["aggregationRule"].clone();
        changed = true;
    }
    changed.then_some(out)
}

/// Creates the bootstrap roles and bindings `store` lacks and adds what is missing to those
/// still marked for autoupdate.
pub async fn ensure(store: &dyn bosun_store::Store) -> Result<(), bosun_store::Error> {
    let objects = cluster_roles()
        .into_iter()
        .map(|o| ("clusterroles", o))
        .chain(
            cluster_role_bindings()
                .into_iter()
                .map(|o| ("clusterrolebindings", o)),
        );
    for (plural, mut wanted) in objects {
        let name = wanted["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let key = format!("/registry/rbac.authorization.k8s.io/{plural}/{name}");
        match store.get(&key, None).await? {
            None => {
                wanted["metadata"]["uid"] = json!(uuid::Uuid::new_v4().to_string());
                wanted["metadata"]["creationTimestamp"] =
                    serde_json::to_value(bosun_api_types::Time::now()).unwrap_or_default();
                let bytes = serde_json::to_vec(&wanted)
                    .map_err(|e| bosun_store::Error::Backend(format!("encoding {name}: {e}")))?;
                match store.create(&key, bytes.into()).await {
                    Ok(_) | Err(bosun_store::Error::AlreadyExists { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
            Some(kv) => {
                let Ok(existing) = serde_json::from_slice::<Value>(&kv.value) else {
                    continue;
                };
                if let Some(fixed) = reconcile(&existing, &wanted) {
                    let bytes = serde_json::to_vec(&fixed).map_err(|e| {
                        bosun_store::Error::Backend(format!("encoding {name}: {e}"))
                    })?;
                    match store.update(&key, bytes.into(), kv.mod_revision).await {
                        Ok(_) | Err(bosun_store::Error::Conflict { .. }) => {}
                        Err(e) => return Err(e),
                    }
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn every_binding_names_a_bootstrap_role_and_names_are_unique() {
        let roles = cluster_roles();
        let names: std::collections::BTreeSet<&str> = roles
            .iter()
            .map(|r| r["metadata"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(names.len(), roles.len());
        for b in cluster_role_bindings() {
            let role = b["roleRef"]["name"].as_str().unwrap();
            assert!(names.contains(role), "{role}");
        }
        // Each parses as its API type.
        for r in &roles {
            serde_json::from_value::<bosun_api_types::rbac::v1::ClusterRole>(r.clone()).unwrap();
        }
        for b in cluster_role_bindings() {
            serde_json::from_value::<bosun_api_types::rbac::v1::ClusterRoleBinding>(b).unwrap();
        }
    }

    #[test]
    fn reconcile_adds_missing_rules_and_respects_autoupdate_false() {
        let wanted = &cluster_roles()[1];
        let mut trimmed = wanted.clone();
        trimmed["rules"] = json!([]);
        let fixed = reconcile(&trimmed, wanted).unwrap();
        assert_eq!(fixed["rules"], wanted["rules"]);
        assert_eq!(reconcile(wanted, wanted), None);
        trimmed["metadata"]["annotations"]["rbac.authorization.kubernetes.io/autoupdate"] =
            json!("false");
        assert_eq!(reconcile(&trimmed, wanted), None);
    }
}
