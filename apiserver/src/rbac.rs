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
//! let alice = UserInfo { name: "alice".into(), groups: vec![] };
//! assert!(state.allows(&alice, &Access::resource("list", "", "pods", Some("default"))));
//! assert!(!state.allows(&alice, &Access::resource("delete", "", "pods", Some("default"))));
//! ```

use crate::auth::{Authorizer, Decision, RequestInfo, UserInfo};
use bosun_api_types::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};
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
            cluster_roles: cluster_roles
                .iter()
                .map(|r| (r.metadata.name.clone().unwrap_or_default(), r.rules.clone()))
                .collect(),
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

#[async_trait::async_trait]
impl Authorizer for RbacAuthorizer {
    async fn authorize(&self, user: &UserInfo, req: &RequestInfo<'_>) -> Decision {
        let access = Access {
            verb: req.verb,
            group: req.group,
            resource: req.resource,
            subresource: req.subresource,
            namespace: req.namespace,
            name: req.name,
            path: None,
        };
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
        }
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
