//! Role-based access control, as upstream's RBAC authorizer decides: a request is allowed when
//! a rule of a role bound to the user allows it. Namespaced requests are decided by the
//! RoleBindings of that namespace (to a Role there or to a ClusterRole) and every
//! ClusterRoleBinding; cluster-scoped and non-resource requests by ClusterRoleBindings only.
//! Members of `system:masters` are allowed everything, as upstream's privileged group.
//!
//! Rule matching follows `rbac/v1` helpers: `*` in verbs, API groups, resources and
//! non-resource URLs; `pods/log` names a subresource and `*/scale` a subresource of any
//! resource; `resourceNames` limits a rule to named objects (so it never matches a request
//! without a name, such as list or create); a non-resource URL ending in `*` is a prefix.
//!
//! ```
//! use bosun_apiserver::auth::UserInfo;
//! use bosun_apiserver::rbac::{Access, RbacState};
//! use bosun_api_types::rbac::v1::{ClusterRole, ClusterRoleBinding};
//! let role: ClusterRole = serde_json::from_value(serde_json::json!({
//!     "metadata": {"name": "pod-reader"},
//!     "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}]})).unwrap();
//! let binding: ClusterRoleBinding = serde_json::from_value(serde_json::json!({
//!     "metadata": {"name": "alice-reads"},
//!     "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "pod-reader"},
//!     "subjects": [{"kind": "User", "name": "alice"}]})).unwrap();
//! let state = RbacState::new(&[], &[role], &[], &[binding]);
//! let alice = UserInfo::new("alice", [""; 0]);
//! assert!(state.allows(&alice, &Access::resource("list", "", "pods", Some("default"))));
//! assert!(!state.allows(&alice, &Access::resource("delete", "", "pods", Some("default"))));
//! ```

use crate::auth::{Authorizer, Decision, RequestInfo, UserInfo};
use bosun_api_types::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};
use futures_util::FutureExt;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// What a request asks, as RBAC sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Access<'a> {
    /// The verb (`get`, `list`, …; for non-resource requests the lower-case HTTP method).
    pub verb: &'a str,
    /// API group (empty: core); for resource requests.
    pub group: &'a str,
    /// Resource (plural); empty for a non-resource request.
    pub resource: &'a str,
    /// Subresource.
    pub subresource: Option<&'a str>,
    /// Namespace of a namespaced request.
    pub namespace: Option<&'a str>,
    /// The object's name, when the request names one.
    pub name: Option<&'a str>,
    /// The path of a non-resource request (`/healthz`).
    pub path: Option<&'a str>,
}

impl<'a> Access<'a> {
    /// What an authorizer's request asks, as RBAC sees it.
    pub fn of(req: &RequestInfo<'a>) -> Self {
        match req.path {
            Some(path) => Access::path(req.verb, path),
            None => Access {
                verb: req.verb,
                group: req.group,
                resource: req.resource,
                subresource: req.subresource,
                namespace: req.namespace,
                name: req.name,
                path: None,
            },
        }
    }

    /// A resource request.
    pub fn resource(
        verb: &'a str,
        group: &'a str,
        resource: &'a str,
        namespace: Option<&'a str>,
    ) -> Self {
        Access {
            verb,
            group,
            resource,
            namespace,
            ..Default::default()
        }
    }

    /// A non-resource request.
    pub fn path(verb: &'a str, path: &'a str) -> Self {
        Access {
            verb,
            path: Some(path),
            ..Default::default()
        }
    }

    /// Names the object.
    pub fn named(mut self, name: &'a str) -> Self {
        self.name = Some(name);
        self
    }

    /// Names the subresource.
    pub fn subresource(mut self, subresource: &'a str) -> Self {
        self.subresource = Some(subresource);
        self
    }
}

fn has(list: &[String], want: &str) -> bool {
    list.iter().any(|x| x == "*" || x == want)
}

/// Whether `rule` allows `access`.
pub fn rule_allows(rule: &PolicyRule, access: &Access) -> bool {
    if !has(&rule.verbs, access.verb) {
        return false;
    }
    if let Some(path) = access.path {
        return rule.non_resource_urls.iter().any(|u| {
            u == "*"
                || u == path
                || u.strip_suffix('*')
                    .is_some_and(|prefix| path.starts_with(prefix))
        });
    }
    if !has(&rule.api_groups, access.group) {
        return false;
    }
    let resource_ok = rule.resources.iter().any(|r| match access.subresource {
        None => r == "*" || r == access.resource,
        Some(sub) => {
            r == "*"
                || r.strip_prefix("*/") == Some(sub)
                || r.split_once('/') == Some((access.resource, sub))
        }
    });
    if !resource_ok {
        return false;
    }
    rule.resource_names.is_empty()
        || access
            .name
            .is_some_and(|n| !n.is_empty() && rule.resource_names.iter().any(|r| r == n))
}

/// Whether `subject` (of a binding in `binding_ns`, empty for a ClusterRoleBinding) is
/// `user`.
pub fn subject_matches(subject: &Subject, user: &UserInfo, binding_ns: &str) -> bool {
    match subject.kind.as_str() {
        "User" => subject.name == user.name,
        "Group" => user.groups.contains(&subject.name),
        "ServiceAccount" => {
            let ns = subject
                .namespace
                .as_deref()
                .filter(|n| !n.is_empty())
                .unwrap_or(binding_ns);
            !ns.is_empty() && user.name == format!("system:serviceaccount:{ns}:{}", subject.name)
        }
        _ => false,
    }
}

/// A snapshot of the cluster's roles and bindings.
#[derive(Clone, Debug, Default)]
pub struct RbacState {
    roles: HashMap<(String, String), Vec<PolicyRule>>,
    cluster_roles: HashMap<String, Vec<PolicyRule>>,
    /// (namespace, roleRef, subjects).
    role_bindings: Vec<(String, RoleRef, Vec<Subject>)>,
    cluster_role_bindings: Vec<(RoleRef, Vec<Subject>)>,
}

impl RbacState {
    /// The snapshot of these objects.
    pub fn new(
        roles: &[Role],
        cluster_roles: &[ClusterRole],
        role_bindings: &[RoleBinding],
        cluster_role_bindings: &[ClusterRoleBinding],
    ) -> Self {
        RbacState {
            roles: roles
                .iter()
                .map(|r| {
                    (
                        (
                            r.metadata.namespace.clone().unwrap_or_default(),
                            r.metadata.name.clone().unwrap_or_default(),
                        ),
                        r.rules.clone(),
                    )
                })
                .collect(),
            cluster_roles: aggregate(cluster_roles),
            role_bindings: role_bindings
                .iter()
                .map(|b| {
                    (
                        b.metadata.namespace.clone().unwrap_or_default(),
                        b.role_ref.clone(),
                        b.subjects.clone(),
                    )
                })
                .collect(),
            cluster_role_bindings: cluster_role_bindings
                .iter()
                .map(|b| (b.role_ref.clone(), b.subjects.clone()))
                .collect(),
        }
    }

    /// The rules that apply to `user` in `namespace` (cluster-wide ones only without it).
    pub fn rules_for<'s>(
        &'s self,
        user: &UserInfo,
        namespace: Option<&str>,
    ) -> Vec<&'s PolicyRule> {
        let mut out = Vec::new();
        for (role_ref, subjects) in &self.cluster_role_bindings {
            if role_ref.kind == "ClusterRole"
                && subjects.iter().any(|s| subject_matches(s, user, ""))
            {
                out.extend(self.cluster_roles.get(&role_ref.name).into_iter().flatten());
            }
        }
        let Some(ns) = namespace else { return out };
        for (bns, role_ref, subjects) in &self.role_bindings {
            if bns != ns || !subjects.iter().any(|s| subject_matches(s, user, bns)) {
                continue;
            }
            let rules = match role_ref.kind.as_str() {
                "Role" => self.roles.get(&(bns.clone(), role_ref.name.clone())),
                "ClusterRole" => self.cluster_roles.get(&role_ref.name),
                _ => None,
            };
            out.extend(rules.into_iter().flatten());
        }
        out
    }

    /// Whether `user` may do `access`.
    pub fn allows(&self, user: &UserInfo, access: &Access) -> bool {
        if user.groups.iter().any(|g| g == "system:masters") {
            return true;
        }
        // Non-resource and cluster-scoped requests: cluster-wide rules only.
        let ns = if access.path.is_some() {
            None
        } else {
            access.namespace
        };
        self.rules_for(user, ns)
            .into_iter()
            .any(|r| rule_allows(r, access))
    }
}

/// The rules of each ClusterRole, with aggregation applied: a role with an `aggregationRule`
/// has the rules of every other ClusterRole its selectors match (its own list is the
/// aggregation's to write, as upstream), to a fixed point, so `admin` gets `edit`'s aggregated rules as upstream's controller converges to.
pub fn aggregate(cluster_roles: &[ClusterRole]) -> HashMap<String, Vec<PolicyRule>> {
    use bosun_api_types::selector::LabelSelectorExt;
    let mut rules: HashMap<String, Vec<PolicyRule>> = cluster_roles
        .iter()
        .map(|r| (r.metadata.name.clone().unwrap_or_default(), r.rules.clone()))
        .collect();
    let aggregated: Vec<(&str, Vec<bosun_api_types::selector::Selector>)> = cluster_roles
        .iter()
        .filter_map(|r| {
            let rule = r.aggregation_rule.as_ref()?;
            let selectors = rule
                .cluster_role_selectors
                .iter()
                .filter_map(|s| s.to_selector().ok())
                .collect();
            Some((r.metadata.name.as_deref().unwrap_or_default(), selectors))
        })
        .collect();
    // Each pass can carry rules one aggregation level further; roles nest a few levels deep.
    for _ in 0..8 {
        let mut changed = false;
        for (name, selectors) in &aggregated {
            let mut merged: Vec<PolicyRule> = Vec::new();
            for other in cluster_roles {
                let other_name = other.metadata.name.as_deref().unwrap_or_default();
                if other_name == *name
                    || !selectors.iter().any(|s| s.matches(&other.metadata.labels))
                {
                    continue;
                }
                for r in rules.get(other_name).into_iter().flatten() {
                    if !merged.contains(r) {
                        merged.push(r.clone());
                    }
                }
            }
            if rules.get(*name) != Some(&merged) {
                rules.insert((*name).to_owned(), merged);
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    rules
}

/// Whether `owner`'s rules allow everything `rule` grants (upstream's `Covers`): each verb,
/// group, resource and name of `rule` taken literally, so a `*` in it is covered only by a
/// `*` the owner holds.
pub fn covers(owner: &[&PolicyRule], rule: &PolicyRule) -> bool {
    let held = |access: &Access| owner.iter().any(|o| rule_allows(o, access));
    for verb in &rule.verbs {
        for url in &rule.non_resource_urls {
            if !held(&Access::path(verb, url)) {
                return false;
            }
        }
        for group in &rule.api_groups {
            for resource in &rule.resources {
                let (resource, sub) = match resource.split_once('/') {
                    Some((r, s)) => (r, Some(s)),
                    None => (resource.as_str(), None),
                };
                let base = Access {
                    verb,
                    group,
                    resource,
                    subresource: sub,
                    namespace: None,
                    name: None,
                    path: None,
                };
                let ok = if rule.resource_names.is_empty() {
                    held(&base)
                } else {
                    rule.resource_names.iter().all(|n| {
                        held(&Access {
                            name: Some(n),
                            ..base
                        })
                    })
                };
                if !ok {
                    return false;
                }
            }
        }
    }
    true
}

/// Escalation prevention for RBAC writes (upstream does it in the RBAC storage): a user may
/// create or update a Role or ClusterRole only with permissions they hold themselves (or with
/// the `escalate` verb on it), and bind a role only when they hold its permissions (or the
/// `bind` verb on it). `system:masters` may do both.
#[derive(Clone)]
pub struct EscalationCheck {
    authorizer: RbacAuthorizer,
}

impl EscalationCheck {
    /// The check over `authorizer`'s snapshot.
    pub fn new(authorizer: RbacAuthorizer) -> Self {
        EscalationCheck { authorizer }
    }
}

fn rule_text(r: &PolicyRule) -> String {
    let mut parts = Vec::new();
    let list = |v: &[String]| {
        format!(
            "[{}]",
            v.iter()
                .map(|s| format!("{s:?}"))
                .collect::<Vec<_>>()
                .join(" ")
        )
    };
    if !r.api_groups.is_empty() {
        parts.push(format!("APIGroups:{}", list(&r.api_groups)));
    }
    if !r.resources.is_empty() {
        parts.push(format!("Resources:{}", list(&r.resources)));
    }
    if !r.resource_names.is_empty() {
        parts.push(format!("ResourceNames:{}", list(&r.resource_names)));
    }
    if !r.non_resource_urls.is_empty() {
        parts.push(format!("NonResourceURLs:{}", list(&r.non_resource_urls)));
    }
    parts.push(format!("Verbs:{}", list(&r.verbs)));
    format!("{{{}}}", parts.join(", "))
}

#[async_trait::async_trait]
impl crate::auth::AdmissionPlugin for EscalationCheck {
    fn name(&self) -> &str {
        "RBACEscalation"
    }

    async fn validate(
        &self,
        req: &crate::auth::AdmissionRequest<'_>,
        obj: &crate::object::Object,
    ) -> Result<(), crate::ApiError> {
        let r = req.resource;
        if r.group != "rbac.authorization.k8s.io"
            || req.operation == crate::auth::Operation::Delete
            || req.user.groups.iter().any(|g| g == "system:masters")
        {
            return Ok(());
        }
        let state = self.authorizer.state();
        let ns = req.namespace;
        let value = serde_json::Value::Object(obj.clone());
        let (wanted, exempt) = match r.plural.as_str() {
            "roles" | "clusterroles" => {
                let rules: Vec<PolicyRule> =
                    serde_json::from_value(value["rules"].clone()).unwrap_or_default();
                let access = Access {
                    verb: "escalate",
                    group: &r.group,
                    resource: &r.plural,
                    subresource: None,
                    namespace: ns,
                    name: Some(req.name),
                    path: None,
                };
                (rules, state.allows(req.user, &access))
            }
            "rolebindings" | "clusterrolebindings" => {
                let role_ref: RoleRef =
                    serde_json::from_value(value["roleRef"].clone()).unwrap_or_default();
                let rules = match role_ref.kind.as_str() {
                    "Role" => state
                        .roles
                        .get(&(ns.unwrap_or_default().to_owned(), role_ref.name.clone()))
                        .cloned(),
                    _ => state.cluster_roles.get(&role_ref.name).cloned(),
                }
                .unwrap_or_default();
                let resource = if role_ref.kind == "Role" {
                    "roles"
                } else {
                    "clusterroles"
                };
                let access = Access {
                    verb: "bind",
                    group: "rbac.authorization.k8s.io",
                    resource,
                    subresource: None,
                    namespace: ns,
                    name: Some(&role_ref.name),
                    path: None,
                };
                (rules, state.allows(req.user, &access))
            }
            _ => return Ok(()),
        };
        if exempt {
            return Ok(());
        }
        let owner = state.rules_for(req.user, ns);
        let missing: Vec<String> = wanted
            .iter()
            .filter(|rule| !covers(&owner, rule))
            .map(rule_text)
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let qualified = format!("{}.{}", r.plural, r.group);
        Err(crate::ApiError {
            code: 403,
            reason: "Forbidden",
            message: format!(
                "{qualified} {:?} is forbidden: user {:?} (groups={:?}) is attempting to grant RBAC permissions not currently held:\n{}",
                req.name,
                req.user.name,
                req.user.groups,
                missing.join("\n"),
            ),
            details: Some(Box::new(bosun_api_types::meta::v1::StatusDetails {
                name: Some(req.name.to_owned()),
                group: Some(r.group.clone()),
                kind: Some(r.plural.clone()),
                ..Default::default()
            })),
        })
    }
}

/// Store key prefix of every RBAC object (roles, cluster roles and their bindings).
const RBAC_PREFIX: &str = "/registry/rbac.authorization.k8s.io/";

/// Reads every RBAC object in `store` into a snapshot, and writes the aggregated rules into
/// ClusterRoles with an `aggregationRule` whose stored rules differ (upstream's
/// clusterrole-aggregation controller), so `kubectl get clusterrole view -o yaml` shows them.
pub async fn load(store: &dyn bosun_store::Store) -> Result<RbacState, bosun_store::Error> {
    let page = store
        .range(bosun_store::RangeRequest::prefix(RBAC_PREFIX))
        .await?;
    let (mut roles, mut cluster_roles, mut role_bindings, mut cluster_role_bindings) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut revisions = HashMap::new();
    for kv in &page.kvs {
        let rest = kv.key.trim_start_matches(RBAC_PREFIX);
        let parsed = match rest.split('/').next() {
            Some("roles") => serde_json::from_slice(&kv.value).map(|r| roles.push(r)),
            Some("clusterroles") => serde_json::from_slice::<ClusterRole>(&kv.value).map(|r| {
                revisions.insert(r.metadata.name.clone().unwrap_or_default(), kv);
                cluster_roles.push(r);
            }),
            Some("rolebindings") => {
                serde_json::from_slice(&kv.value).map(|b| role_bindings.push(b))
            }
            Some("clusterrolebindings") => {
                serde_json::from_slice(&kv.value).map(|b| cluster_role_bindings.push(b))
            }
            _ => Ok(()),
        };
        if let Err(e) = parsed {
            tracing::warn!(key = %kv.key, error = %e, "skipping an RBAC object that does not parse");
        }
    }
    let state = RbacState::new(
        &roles,
        &cluster_roles,
        &role_bindings,
        &cluster_role_bindings,
    );
    for role in cluster_roles
        .iter()
        .filter(|r| r.aggregation_rule.is_some())
    {
        let name = role.metadata.name.clone().unwrap_or_default();
        let (Some(want), Some(kv)) = (state.cluster_roles.get(&name), revisions.get(&name)) else {
            continue;
        };
        if *want == role.rules {
            continue;
        }
        let Ok(mut obj) = serde_json::from_slice::<serde_json::Value>(&kv.value) else {
            continue;
        };
        obj["rules"] = serde_json::to_value(want).unwrap_or_default();
        let Ok(bytes) = serde_json::to_vec(&obj) else {
            continue;
        };
        // A conflict means someone else wrote it: the next pass sees their version.
        if let Err(e) = store.update(&kv.key, bytes.into(), kv.mod_revision).await {
            tracing::debug!(role = %name, error = %e, "aggregated rules not written");
        }
    }
    Ok(state)
}

/// Loads the RBAC snapshot into `authorizer` now, then keeps it current as roles and bindings
/// change (a watch on the store; every change reloads, as the objects are few).
pub async fn keep_current(
    store: Arc<dyn bosun_store::Store>,
    authorizer: RbacAuthorizer,
) -> Result<(), bosun_store::Error> {
    let mut from = store.current_revision().await?;
    authorizer.set(load(store.as_ref()).await?);
    tokio::spawn(async move {
        loop {
            let mut watch = match store.watch(RBAC_PREFIX, from).await {
                Ok(w) => w,
                Err(e) => {
                    tracing::warn!(error = %e, "watching RBAC objects failed; reloading");
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                    from = store.current_revision().await.unwrap_or(from);
                    if let Ok(state) = load(store.as_ref()).await {
                        authorizer.set(state);
                    }
                    continue;
                }
            };
            while let Some(ev) = watch.next().await {
                let Ok(ev) = ev else { break };
                from = from.max(ev.revision());
                // Coalesce a burst (a `kubectl apply` of many bindings) into one reload.
                while let Some(Some(Ok(ev))) = watch.next().now_or_never() {
                    from = from.max(ev.revision());
                }
                match load(store.as_ref()).await {
                    Ok(state) => authorizer.set(state),
                    Err(e) => tracing::warn!(error = %e, "reloading RBAC objects failed"),
                }
            }
        }
    });
    Ok(())
}

/// Upstream's wording of a refusal (`User "bob" cannot list resource "pods" in API group ""
/// in the namespace "default"`).
pub fn forbidden_message(user: &UserInfo, access: &Access) -> String {
    if let Some(path) = access.path {
        return format!("User {:?} cannot {} path {path:?}", user.name, access.verb);
    }
    let resource = match access.subresource {
        Some(sub) => format!("{}/{sub}", access.resource),
        None => access.resource.to_owned(),
    };
    let scope = match access.namespace {
        Some(ns) => format!(" in the namespace {ns:?}"),
        None => " at the cluster scope".to_owned(),
    };
    format!(
        "User {:?} cannot {} resource {resource:?} in API group {:?}{scope}",
        user.name, access.verb, access.group
    )
}

/// The RBAC [`Authorizer`], deciding from a snapshot its owner keeps current
/// ([`RbacAuthorizer::set`], as roles and bindings change). It allows or has no opinion, so
/// other authorizers may be chained after it, as upstream's.
#[derive(Clone, Default)]
pub struct RbacAuthorizer {
    state: Arc<RwLock<Arc<RbacState>>>,
}

impl RbacAuthorizer {
    /// An authorizer deciding from `state`.
    pub fn new(state: RbacState) -> Self {
        RbacAuthorizer {
            state: Arc::new(RwLock::new(Arc::new(state))),
        }
    }

    /// Replaces the snapshot.
    pub fn set(&self, state: RbacState) {
        let mut s = self.state.write().unwrap_or_else(|p| p.into_inner());
        *s = Arc::new(state);
    }

    /// The snapshot decisions are made from.
    pub fn state(&self) -> Arc<RbacState> {
        Arc::clone(&self.state.read().unwrap_or_else(|p| p.into_inner()))
    }
}

/// Rules allowing everything (what `system:masters` and `cluster-admin` have).
pub fn everything() -> Vec<PolicyRule> {
    let all = || vec!["*".to_owned()];
    vec![
        PolicyRule {
            verbs: all(),
            api_groups: all(),
            resources: all(),
            ..Default::default()
        },
        PolicyRule {
            verbs: all(),
            non_resource_urls: all(),
            ..Default::default()
        },
    ]
}

#[async_trait::async_trait]
impl Authorizer for RbacAuthorizer {
    async fn rules(&self, user: &UserInfo, namespace: &str) -> Option<Vec<PolicyRule>> {
        if user.groups.iter().any(|g| g == "system:masters") {
            return Some(everything());
        }
        let state = self.state();
        let ns = Some(namespace).filter(|n| !n.is_empty());
        let mut out: Vec<PolicyRule> = Vec::new();
        for r in state.rules_for(user, ns) {
            if !out.contains(r) {
                out.push(r.clone());
            }
        }
        Some(out)
    }

    async fn authorize(&self, user: &UserInfo, req: &RequestInfo<'_>) -> Decision {
        let access = Access::of(req);
        if self.state().allows(user, &access) {
            Decision::Allow
        } else {
            Decision::NoOpinion
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn rule(v: serde_json::Value) -> PolicyRule {
        serde_json::from_value(v).unwrap()
    }

    fn user(name: &str, groups: &[&str]) -> UserInfo {
        UserInfo {
            name: name.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn covers_takes_the_granted_rule_literally() {
        let rule = |v: serde_json::Value| serde_json::from_value::<PolicyRule>(v).unwrap();
        let owner = [
            rule(
                json!({"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods", "pods/log"]}),
            ),
            rule(json!({"verbs": ["*"], "apiGroups": ["apps"], "resources": ["*"]})),
            rule(json!({"verbs": ["get"], "nonResourceURLs": ["/apis/*"]})),
        ];
        let owner: Vec<&PolicyRule> = owner.iter().collect();
        let ok = |v| covers(&owner, &rule(v));
        assert!(ok(
            json!({"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]})
        ));
        assert!(ok(
            json!({"verbs": ["list"], "apiGroups": [""], "resources": ["pods/log"], "resourceNames": ["a"]})
        ));
        assert!(ok(
            json!({"verbs": ["*"], "apiGroups": ["apps"], "resources": ["*"]})
        ));
        assert!(ok(
            json!({"verbs": ["get"], "nonResourceURLs": ["/apis/apps"]})
        ));
        assert!(!ok(
            json!({"verbs": ["delete"], "apiGroups": [""], "resources": ["pods"]})
        ));
        assert!(!ok(
            json!({"verbs": ["*"], "apiGroups": [""], "resources": ["pods"]})
        ));
        assert!(!ok(
            json!({"verbs": ["get"], "apiGroups": ["*"], "resources": ["pods"]})
        ));
        assert!(!ok(
            json!({"verbs": ["get"], "apiGroups": [""], "resources": ["secrets"]})
        ));
        assert!(!ok(
            json!({"verbs": ["get"], "nonResourceURLs": ["/metrics"]})
        ));
        assert!(
            ok(json!({"verbs": [], "apiGroups": [""], "resources": ["secrets"]})),
            "grants nothing"
        );
    }

    #[test]
    fn each_controller_has_only_its_own_role() {
        let roles: Vec<ClusterRole> = crate::bootstrap_policy::cluster_roles()
            .into_iter()
            .map(|r| serde_json::from_value(r).unwrap())
            .collect();
        let bindings: Vec<ClusterRoleBinding> = crate::bootstrap_policy::cluster_role_bindings()
            .into_iter()
            .map(|b| serde_json::from_value(b).unwrap())
            .collect();
        let state = RbacState::new(&[], &roles, &[], &bindings);
        let can = |account: &str, verb: &str, group: &str, resource: &str| {
            let user = UserInfo {
                name: crate::bootstrap_policy::controller_user(account),
                groups: vec![
                    "system:serviceaccounts".into(),
                    "system:serviceaccounts:kube-system".into(),
                    "system:authenticated".into(),
                ],
                ..Default::default()
            };
            state.allows(&user, &Access::resource(verb, group, resource, Some("ns")))
        };
        assert!(can("replicaset-controller", "create", "", "pods"));
        assert!(can(
            "replicaset-controller",
            "update",
            "apps",
            "replicasets/status"
        ));
        assert!(!can(
            "replicaset-controller",
            "create",
            "apps",
            "deployments"
        ));
        assert!(!can("replicaset-controller", "get", "", "secrets"));
        assert!(can(
            "deployment-controller",
            "create",
            "apps",
            "replicasets"
        ));
        assert!(!can("deployment-controller", "create", "", "pods"));
        assert!(can("job-controller", "create", "", "pods"));
        assert!(!can("job-controller", "delete", "", "nodes"));
        assert!(can("node-controller", "delete", "", "pods"));
        assert!(can(
            "namespace-controller",
            "deletecollection",
            "",
            "secrets"
        ));
        assert!(!can("namespace-controller", "create", "", "secrets"));
        assert!(can(
            "generic-garbage-collector",
            "delete",
            "apps",
            "replicasets"
        ));
        assert!(!can("generic-garbage-collector", "create", "", "pods"));
        for account in [
            "replicaset-controller",
            "job-controller",
            "endpoint-controller",
        ] {
            assert!(
                can(account, "create", "events.k8s.io", "events"),
                "{account}"
            );
            assert!(!can(
                account,
                "escalate",
                "rbac.authorization.k8s.io",
                "clusterroles"
            ));
        }
        // The manager's own identity reads everything, writes little.
        let manager = UserInfo {
            name: "system:kube-controller-manager".into(),
            groups: vec!["system:authenticated".into()],
            ..Default::default()
        };
        let manager_can = |verb: &str, group: &str, resource: &str| {
            state.allows(
                &manager,
                &Access::resource(verb, group, resource, Some("ns")),
            )
        };
        assert!(manager_can("watch", "apps", "deployments"));
        assert!(manager_can("update", "coordination.k8s.io", "leases"));
        assert!(!manager_can("create", "", "pods"));
        assert!(!manager_can("delete", "apps", "deployments"));
    }

    #[test]
    fn bootstrap_roles_aggregate_view_into_edit_into_admin() {
        let roles: Vec<ClusterRole> = crate::bootstrap_policy::cluster_roles()
            .into_iter()
            .map(|r| serde_json::from_value(r).unwrap())
            .collect();
        let bindings: Vec<RoleBinding> = ["view", "edit", "admin"]
            .iter()
            .map(|role| {
                serde_json::from_value(json!({
                    "metadata": {"name": role, "namespace": "ns"},
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
                    "subjects": [{"kind": "User", "name": format!("{role}-user")}],
                }))
                .unwrap()
            })
            .collect();
        let state = RbacState::new(&[], &roles, &bindings, &[]);
        let user = |n: &str| UserInfo {
            name: format!("{n}-user"),
            groups: vec!["system:authenticated".into()],
            ..Default::default()
        };
        let can = |who: &str, verb: &str, group: &str, resource: &str| {
            state.allows(
                &user(who),
                &Access::resource(verb, group, resource, Some("ns")),
            )
        };
        // view reads, but not secrets; edit writes and reads secrets; admin grants roles.
        assert!(can("view", "list", "apps", "deployments"));
        assert!(!can("view", "get", "", "secrets"));
        assert!(!can("view", "create", "", "configmaps"));
        assert!(can("edit", "create", "", "configmaps"));
        assert!(can("edit", "get", "", "secrets"));
        assert!(
            can("edit", "list", "apps", "deployments"),
            "edit has view's rules"
        );
        assert!(!can(
            "edit",
            "create",
            "rbac.authorization.k8s.io",
            "rolebindings"
        ));
        assert!(can(
            "admin",
            "create",
            "rbac.authorization.k8s.io",
            "rolebindings"
        ));
        assert!(
            can("admin", "list", "apps", "deployments"),
            "admin has view's rules"
        );
        assert!(can("admin", "delete", "", "pods"), "admin has edit's rules");
        // Nothing outside the namespace.
        assert!(!state.allows(
            &user("admin"),
            &Access::resource("list", "", "pods", Some("other"))
        ));
    }

    #[test]
    fn rules_match_as_upstream() {
        let r = rule(
            json!({"apiGroups": ["", "apps"], "resources": ["pods", "deployments/scale"], "verbs": ["get"]}),
        );
        assert!(rule_allows(
            &r,
            &Access::resource("get", "", "pods", Some("a"))
        ));
        assert!(!rule_allows(
            &r,
            &Access::resource("list", "", "pods", Some("a"))
        ));
        assert!(!rule_allows(
            &r,
            &Access::resource("get", "batch", "pods", Some("a"))
        ));
        assert!(
            !rule_allows(
                &r,
                &Access::resource("get", "", "pods", None).subresource("log")
            ),
            "pods does not cover pods/log"
        );
        assert!(rule_allows(
            &r,
            &Access::resource("get", "apps", "deployments", Some("a")).subresource("scale")
        ));
        assert!(!rule_allows(
            &r,
            &Access::resource("get", "apps", "deployments", Some("a"))
        ));
        let any_scale = rule(json!({"apiGroups": ["*"], "resources": ["*/scale"], "verbs": ["*"]}));
        assert!(rule_allows(
            &any_scale,
            &Access::resource("update", "apps", "statefulsets", Some("a")).subresource("scale")
        ));
        assert!(!rule_allows(
            &any_scale,
            &Access::resource("update", "apps", "statefulsets", Some("a"))
        ));
        let named = rule(
            json!({"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["cfg"], "verbs": ["get", "list"]}),
        );
        assert!(rule_allows(
            &named,
            &Access::resource("get", "", "configmaps", Some("a")).named("cfg")
        ));
        assert!(!rule_allows(
            &named,
            &Access::resource("get", "", "configmaps", Some("a")).named("other")
        ));
        assert!(
            !rule_allows(
                &named,
                &Access::resource("list", "", "configmaps", Some("a"))
            ),
            "no name, no match"
        );
        let urls = rule(json!({"nonResourceURLs": ["/healthz", "/apis/*"], "verbs": ["get"]}));
        assert!(rule_allows(&urls, &Access::path("get", "/healthz")));
        assert!(rule_allows(&urls, &Access::path("get", "/apis/apps/v1")));
        assert!(!rule_allows(&urls, &Access::path("get", "/api")));
        assert!(!rule_allows(
            &urls,
            &Access::resource("get", "", "healthz", None)
        ));
    }

    #[test]
    fn bindings_scope_the_rules() {
        let view: ClusterRole = serde_json::from_value(json!({"metadata": {"name": "view"},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}]}))
        .unwrap();
        let secrets: Role =
            serde_json::from_value(json!({"metadata": {"name": "s", "namespace": "b"},
            "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]}))
            .unwrap();
        let rb: RoleBinding = serde_json::from_value(json!({"metadata": {"name": "v", "namespace": "a"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
            "subjects": [{"kind": "User", "name": "bob"}, {"kind": "ServiceAccount", "name": "builder"}]}))
        .unwrap();
        let rb2: RoleBinding =
            serde_json::from_value(json!({"metadata": {"name": "s", "namespace": "b"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "s"},
            "subjects": [{"kind": "Group", "name": "ops"}]}))
            .unwrap();
        let st = RbacState::new(&[secrets], &[view], &[rb, rb2], &[]);
        let bob = user("bob", &["system:authenticated"]);
        assert!(st.allows(&bob, &Access::resource("list", "", "pods", Some("a"))));
        assert!(!st.allows(&bob, &Access::resource("create", "", "pods", Some("a"))));
        assert!(
            !st.allows(&bob, &Access::resource("list", "", "pods", Some("b"))),
            "bound in a only"
        );
        assert!(
            !st.allows(&bob, &Access::resource("list", "", "pods", None)),
            "not cluster-wide"
        );
        // The service account of the binding's namespace.
        let sa = user("system:serviceaccount:a:builder", &[]);
        assert!(st.allows(&sa, &Access::resource("get", "", "pods", Some("a"))));
        assert!(!st.allows(
            &user("system:serviceaccount:b:builder", &[]),
            &Access::resource("get", "", "pods", Some("a"))
        ));
        let ops = user("carol", &["ops"]);
        assert!(st.allows(&ops, &Access::resource("get", "", "secrets", Some("b"))));
        assert!(!st.allows(&ops, &Access::resource("get", "", "secrets", Some("a"))));
        assert!(st.allows(
            &user("root", &["system:masters"]),
            &Access::resource("delete", "", "nodes", None)
        ));
        // The same, through the Authorizer seam.
        let authz = RbacAuthorizer::default();
        let req = RequestInfo {
            verb: "list",
            group: "",
            version: "v1",
            resource: "pods",
            subresource: None,
            namespace: Some("a"),
            name: None,
            path: None,
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        assert_eq!(
            rt.block_on(authz.authorize(&bob, &req)),
            Decision::NoOpinion
        );
        authz.set(st.clone());
        assert_eq!(rt.block_on(authz.authorize(&bob, &req)), Decision::Allow);
        assert_eq!(
            forbidden_message(&bob, &Access::resource("create", "", "pods", Some("a"))),
            r#"User "bob" cannot create resource "pods" in API group "" in the namespace "a""#
        );
    }

    fn words() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("*".to_string()),
            Just("".to_string()),
            Just("pods".to_string()),
            Just("pods/log".to_string()),
            Just("*/scale".to_string()),
            Just("/".to_string()),
            "[a-z/*]{0,8}",
            any::<String>(),
        ]
    }

    proptest! {
        /// Arbitrary rules and requests: no panic; a rule allowing everything allows every
        /// resource request; adding a verb never takes a permission away.
        #[test]
        fn rule_matching_is_total_and_monotone(
            verbs in proptest::collection::vec(words(), 0..4),
            groups in proptest::collection::vec(words(), 0..4),
            resources in proptest::collection::vec(words(), 0..4),
            names in proptest::collection::vec(words(), 0..3),
            urls in proptest::collection::vec(words(), 0..3),
            verb in words(), group in words(), resource in words(),
            sub in proptest::option::of(words()), name in proptest::option::of(words()),
            path in proptest::option::of(words()),
        ) {
            let r = PolicyRule { verbs, api_groups: groups, resources, resource_names: names, non_resource_urls: urls };
            let access = Access { verb: &verb, group: &group, resource: &resource, subresource: sub.as_deref(),
                                  namespace: Some("ns"), name: name.as_deref(), path: path.as_deref() };
            let before = rule_allows(&r, &access);
            let mut wider = r.clone();
            wider.verbs.push("extra".into());
            prop_assert!(!before || rule_allows(&wider, &access));
            let all = PolicyRule { verbs: vec!["*".into()], api_groups: vec!["*".into()], resources: vec!["*".into()],
                                   resource_names: vec![], non_resource_urls: vec!["*".into()] };
            prop_assert!(rule_allows(&all, &access));
        }
    }
}
