//! The request pipeline's seams: who is asking ([`Authenticator`]), may they
//! ([`Authorizer`]), and what admission does to and thinks of the object
//! ([`AdmissionPlugin`], mutating then validating, around defaulting and validation).
//!
//! The defaults are [`AllowAllOnLoopback`] (every request is the cluster admin: for library
//! users on loopback; `bosun server` chains [`X509`], [`TokenFile`] and optionally
//! [`Anonymous`] with [`Union`], and authorizes with [`crate::rbac::RbacAuthorizer`]),
//! [`AlwaysAllow`], and the admission
//! plugins upstream enables by default that need no other component (see
//! [`default_admission`]). A library user passes their own through [`Pipeline`].
//!
//! ```
//! use bosun_apiserver::auth::{Authorizer, Decision, RequestInfo, UserInfo};
//! struct ReadOnly;
//! #[async_trait::async_trait]
//! impl Authorizer for ReadOnly {
//!     async fn authorize(&self, _user: &UserInfo, req: &RequestInfo<'_>) -> Decision {
//!         match req.verb {
//!             "get" | "list" | "watch" => Decision::Allow,
//!             _ => Decision::Deny("read-only cluster".into()),
//!         }
//!     }
//! }
//! ```

pub use crate::admission::{
    DefaultStorageClass, LimitRanger, Priority, ResourceQuota, StorageObjectInUseProtection,
    TaintNodesByCondition,
};
use crate::error::ApiError;
use crate::object::Object;
use crate::resources::ApiResource;
use std::sync::Arc;

/// The user a request is made by.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserInfo {
    /// User name (`admin`, `system:serviceaccount:default:builder`).
    pub name: String,
    /// Groups (`system:masters`, `system:authenticated`).
    pub groups: Vec<String>,
    /// A unique identifier of the user, if the authenticator (or an impersonation) gives one.
    pub uid: String,
    /// What else the authenticator knows (a service account token's pod, an impersonation's
    /// `Impersonate-Extra-*` headers).
    pub extra: std::collections::BTreeMap<String, Vec<String>>,
}

impl UserInfo {
    /// A user of this name in these groups.
    pub fn new(
        name: impl Into<String>,
        groups: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        UserInfo {
            name: name.into(),
            groups: groups.into_iter().map(Into::into).collect(),
            ..UserInfo::default()
        }
    }

    /// As `authentication.k8s.io/v1` `UserInfo` (reviews and audit events carry it).
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = serde_json::json!({"username": self.name, "groups": self.groups});
        if !self.uid.is_empty() {
            v["uid"] = self.uid.clone().into();
        }
        if !self.extra.is_empty() {
            v["extra"] = serde_json::json!(self.extra);
        }
        v
    }
}

/// What a request asks to do, for authorization.
#[derive(Clone, Debug)]
pub struct RequestInfo<'a> {
    /// Kubernetes verb: `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`,
    /// `deletecollection`.
    pub verb: &'a str,
    /// API group (empty for core).
    pub group: &'a str,
    /// API version.
    pub version: &'a str,
    /// Resource (plural).
    pub resource: &'a str,
    /// Subresource, if any.
    pub subresource: Option<&'a str>,
    /// Namespace, if any.
    pub namespace: Option<&'a str>,
    /// Object name, if any.
    pub name: Option<&'a str>,
    /// For a request outside the resource API (`/healthz`, `/api`, `/metrics`): its path.
    /// The verb is then the HTTP method in lower case (`get`, `post`), and the resource
    /// fields are empty.
    pub path: Option<&'a str>,
}

impl<'a> RequestInfo<'a> {
    /// A request for `path` outside the resource API, with the HTTP method's verb.
    pub fn non_resource(verb: &'a str, path: &'a str) -> Self {
        RequestInfo {
            verb,
            group: "",
            version: "",
            resource: "",
            subresource: None,
            namespace: None,
            name: None,
            path: Some(path),
        }
    }
}

/// What a request presents to prove who sent it.
#[derive(Clone, Copy, Debug)]
pub struct Credentials<'a> {
    /// The request's headers (`Authorization: Bearer …`).
    pub headers: &'a http::HeaderMap,
    /// The client certificate chain, leaf first, that the TLS handshake verified against the
    /// cluster CA; empty over plain HTTP or when the client sent none.
    pub client_certificates: &'a [rustls::pki_types::CertificateDer<'static>],
}

impl<'a> Credentials<'a> {
    /// Credentials of these headers only (no client certificate).
    pub fn headers(headers: &'a http::HeaderMap) -> Self {
        Credentials {
            headers,
            client_certificates: &[],
        }
    }

    /// The bearer token, if the request carries one.
    pub fn bearer_token(&self) -> Option<&'a str> {
        self.headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
    }
}

/// An authorizer's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Allowed.
    Allow,
    /// Denied, with the reason.
    Deny(String),
    /// No opinion (denied unless another authorizer allows).
    NoOpinion,
}

/// Finds out who made a request.
///
/// ```
/// use bosun_apiserver::auth::{Authenticator, Credentials, UserInfo};
/// use bosun_apiserver::ApiError;
///
/// /// Trusts the `X-Remote-User` header (behind a proxy that sets it and strips clients' own).
/// struct RemoteUser;
///
/// #[async_trait::async_trait]
/// impl Authenticator for RemoteUser {
///     async fn authenticate(&self, req: &Credentials<'_>) -> Result<Option<UserInfo>, ApiError> {
///         let name = req.headers.get("x-remote-user").and_then(|v| v.to_str().ok());
///         Ok(name.map(|name| UserInfo::new(name, ["proxied"])))
///     }
/// }
/// ```
///
/// Put it in [`Pipeline::authenticator`] (alone, or before others in a [`FirstOpinion`]).
#[async_trait::async_trait]
pub trait Authenticator: Send + Sync {
    /// The user behind these credentials; `None` when the request carries none this
    /// authenticator accepts (answered 401 unless another authenticator knows the user).
    async fn authenticate(&self, req: &Credentials<'_>) -> Result<Option<UserInfo>, ApiError>;
}

/// Decides whether a user may make a request.
///
/// ```
/// use bosun_apiserver::auth::{Authorizer, Decision, RequestInfo, UserInfo};
///
/// /// Members of `viewers` may read anything; other requests are for the next authorizer.
/// struct Viewers;
///
/// #[async_trait::async_trait]
/// impl Authorizer for Viewers {
///     async fn authorize(&self, user: &UserInfo, req: &RequestInfo<'_>) -> Decision {
///         let reads = matches!(req.verb, "get" | "list" | "watch");
///         if reads && user.groups.iter().any(|g| g == "viewers") {
///             Decision::Allow
///         } else {
///             Decision::NoOpinion
///         }
///     }
/// }
/// ```
#[async_trait::async_trait]
pub trait Authorizer: Send + Sync {
    /// The decision for `user` doing `req`.
    async fn authorize(&self, user: &UserInfo, req: &RequestInfo<'_>) -> Decision;

    /// The rules `user` has in `namespace` (cluster-wide ones included), for
    /// SelfSubjectRulesReview (`kubectl auth can-i --list`); `None` when this authorizer
    /// cannot enumerate them (the review then says it is incomplete).
    async fn rules(
        &self,
        _user: &UserInfo,
        _namespace: &str,
    ) -> Option<Vec<bosun_api_types::rbac::v1::PolicyRule>> {
        None
    }
}

/// Every request is the cluster admin (`admin` in `system:masters`). Acceptable only while the
/// server listens on loopback.
#[derive(Clone, Copy, Debug, Default)]
pub struct AllowAllOnLoopback;

#[async_trait::async_trait]
impl Authenticator for AllowAllOnLoopback {
    async fn authenticate(&self, _: &Credentials<'_>) -> Result<Option<UserInfo>, ApiError> {
        Ok(Some(UserInfo {
            name: "admin".into(),
            groups: vec!["system:masters".into(), "system:authenticated".into()],
            ..Default::default()
        }))
    }
}

/// Users from a static token file, upstream's `--token-auth-file` format: CSV lines
/// `token,user,uid[,"group1,group2"]` (blank lines and `#` comments skipped). A request with
/// `Authorization: Bearer TOKEN` is that user, in `system:authenticated` too; one without the
/// header, or with an unknown token, is not authenticated (401).
#[derive(Clone, Debug, Default)]
pub struct TokenFile {
    users: std::collections::HashMap<String, UserInfo>,
}

impl TokenFile {
    /// Adds (or replaces) the user a token stands for; `system:authenticated` is added to its
    /// groups.
    pub fn insert(&mut self, token: impl Into<String>, mut user: UserInfo) {
        if !user.groups.iter().any(|g| g == "system:authenticated") {
            user.groups.push("system:authenticated".into());
        }
        self.users.insert(token.into(), user);
    }

    /// Parses the file's text; the error names the bad line.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut users = std::collections::HashMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let fields = split_csv(line);
            let [token, user, ..] = fields.as_slice() else {
                return Err(format!("line {}: want token,user,uid[,groups]", n + 1));
            };
            if token.is_empty() || user.is_empty() {
                return Err(format!(
                    "line {}: the token and the user may not be empty",
                    n + 1
                ));
            }
            let mut groups: Vec<String> = fields
                .get(3)
                .map(|g| {
                    g.split(',')
                        .map(str::trim)
                        .filter(|g| !g.is_empty())
                        .map(String::from)
                        .collect()
                })
                .unwrap_or_default();
            groups.push("system:authenticated".into());
            users.insert(
                token.clone(),
                UserInfo {
                    name: user.clone(),
                    groups,
                    ..Default::default()
                },
            );
        }
        Ok(TokenFile { users })
    }
}

/// One CSV line's fields (double quotes group commas; `""` is a quote).
fn split_csv(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                chars.next();
                if let Some(f) = fields.last_mut() {
                    f.push('"');
                }
            }
            ('"', _) => quoted = !quoted,
            (',', false) => fields.push(String::new()),
            (c, _) => {
                if let Some(f) = fields.last_mut() {
                    f.push(c);
                }
            }
        }
    }
    fields.into_iter().map(|f| f.trim().to_owned()).collect()
}

#[async_trait::async_trait]
impl Authenticator for TokenFile {
    async fn authenticate(&self, req: &Credentials<'_>) -> Result<Option<UserInfo>, ApiError> {
        Ok(req.bearer_token().and_then(|t| self.users.get(t)).cloned())
    }
}

/// Users from client certificates (upstream's x509 authenticator): the leaf certificate's
/// CN is the user and each O a group, plus `system:authenticated`. The server hands over only
/// certificates its TLS handshake verified against the cluster CA.
#[derive(Clone, Copy, Debug, Default)]
pub struct X509;

#[async_trait::async_trait]
impl Authenticator for X509 {
    async fn authenticate(&self, req: &Credentials<'_>) -> Result<Option<UserInfo>, ApiError> {
        let Some(leaf) = req.client_certificates.first() else {
            return Ok(None);
        };
        Ok(
            crate::pki::certificate_user(leaf).map(|(name, mut groups)| {
                if !groups.iter().any(|g| g == "system:authenticated") {
                    groups.push("system:authenticated".into());
                }
                UserInfo {
                    name,
                    groups,
                    ..UserInfo::default()
                }
            }),
        )
    }
}

/// Asks each authenticator in turn; the first that knows the user wins (upstream's union).
/// An error is returned only when no authenticator knows the user.
#[derive(Clone, Default)]
pub struct Union(pub Vec<Arc<dyn Authenticator>>);

#[async_trait::async_trait]
impl Authenticator for Union {
    async fn authenticate(&self, req: &Credentials<'_>) -> Result<Option<UserInfo>, ApiError> {
        let mut failed = None;
        for a in &self.0 {
            match a.authenticate(req).await {
                Ok(Some(user)) => return Ok(Some(user)),
                Ok(None) => {}
                Err(e) => failed = Some(e),
            }
        }
        failed.map_or(Ok(None), Err)
    }
}

/// A request without credentials is `system:anonymous` in `system:unauthenticated`
/// (upstream's `--anonymous-auth`). Put last in a [`Union`]; a request that presented a
/// token no authenticator accepted stays unauthenticated (401), as upstream's.
#[derive(Clone, Copy, Debug, Default)]
pub struct Anonymous;

#[async_trait::async_trait]
impl Authenticator for Anonymous {
    async fn authenticate(&self, req: &Credentials<'_>) -> Result<Option<UserInfo>, ApiError> {
        if req.headers.contains_key(http::header::AUTHORIZATION) {
            return Ok(None);
        }
        Ok(Some(UserInfo {
            name: "system:anonymous".into(),
            groups: vec!["system:unauthenticated".into()],
            ..Default::default()
        }))
    }
}

/// Asks each authorizer in turn (upstream's `--authorization-mode Node,RBAC`): the first
/// `Allow` or `Deny` decides; no opinion from all of them is no opinion.
#[derive(Clone, Default)]
pub struct FirstOpinion(pub Vec<Arc<dyn Authorizer>>);

#[async_trait::async_trait]
impl Authorizer for FirstOpinion {
    async fn authorize(&self, user: &UserInfo, req: &RequestInfo<'_>) -> Decision {
        for a in &self.0 {
            match a.authorize(user, req).await {
                Decision::NoOpinion => {}
                decided => return decided,
            }
        }
        Decision::NoOpinion
    }

    async fn rules(
        &self,
        user: &UserInfo,
        namespace: &str,
    ) -> Option<Vec<bosun_api_types::rbac::v1::PolicyRule>> {
        let mut out = Vec::new();
        let mut any = false;
        for a in &self.0 {
            if let Some(rules) = a.rules(user, namespace).await {
                any = true;
                out.extend(rules);
            }
        }
        any.then_some(out)
    }
}

/// Allows everything.
#[derive(Clone, Copy, Debug, Default)]
pub struct AlwaysAllow;

#[async_trait::async_trait]
impl Authorizer for AlwaysAllow {
    async fn authorize(&self, _: &UserInfo, _: &RequestInfo<'_>) -> Decision {
        Decision::Allow
    }

    async fn rules(
        &self,
        _: &UserInfo,
        _: &str,
    ) -> Option<Vec<bosun_api_types::rbac::v1::PolicyRule>> {
        Some(crate::rbac::everything())
    }
}

/// The operation an admission plugin sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    /// A create.
    Create,
    /// An update or patch.
    Update,
    /// A delete.
    Delete,
}

/// What an admission plugin is told about a write.
pub struct AdmissionRequest<'a> {
    /// The operation.
    pub operation: Operation,
    /// The resource written.
    pub resource: &'a ApiResource,
    /// Its subresource, if any.
    pub subresource: Option<&'a str>,
    /// Namespace, if any.
    pub namespace: Option<&'a str>,
    /// Object name.
    pub name: &'a str,
    /// Who writes.
    pub user: &'a UserInfo,
    /// The object before the write (updates and deletes).
    pub old: Option<&'a Object>,
    /// Whether nothing will be persisted.
    pub dry_run: bool,
    /// The server, for plugins that read other objects ([`crate::ApiServer::list_objects`]).
    pub server: &'a crate::ApiServer,
    /// Warnings for the client (`Warning` headers; see [`AdmissionRequest::warn`]).
    pub warnings: &'a std::sync::Mutex<Vec<String>>,
}

impl AdmissionRequest<'_> {
    /// Adds a warning the client shows (kubectl prints `Warning: …`).
    pub fn warn(&self, message: impl Into<String>) {
        self.warnings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(message.into());
    }
}

/// An admission plugin: mutates, then (after defaulting and validation) validates.
///
/// ```
/// use bosun_apiserver::auth::{AdmissionPlugin, AdmissionRequest, Pipeline};
/// use bosun_apiserver::{object::Object, ApiError};
/// use std::sync::Arc;
///
/// /// Every ConfigMap gets a `managed-by: bosun` label.
/// struct Stamp;
///
/// #[async_trait::async_trait]
/// impl AdmissionPlugin for Stamp {
///     fn name(&self) -> &str {
///         "example.com/Stamp"
///     }
///     async fn mutate(&self, req: &AdmissionRequest<'_>, obj: &mut Object) -> Result<(), ApiError> {
///         if req.resource.kind == "ConfigMap" {
///             let metadata = obj.entry("metadata").or_insert_with(|| serde_json::json!({}));
///             metadata["labels"]["managed-by"] = "bosun".into();
///         }
///         Ok(())
///     }
/// }
///
/// let mut pipeline = Pipeline::default();
/// pipeline.admission.push(Arc::new(Stamp));
/// ```
///
/// `examples/src/team_label.rs` is a whole one, with its tests.
#[async_trait::async_trait]
pub trait AdmissionPlugin: Send + Sync {
    /// The plugin's name (`NamespaceLifecycle`).
    fn name(&self) -> &str;
    /// Changes the object before it is validated (creates and updates).
    async fn mutate(&self, _req: &AdmissionRequest<'_>, _obj: &mut Object) -> Result<(), ApiError> {
        Ok(())
    }
    /// Accepts or refuses the final object (for deletes, the object being deleted).
    async fn validate(&self, _req: &AdmissionRequest<'_>, _obj: &Object) -> Result<(), ApiError> {
        Ok(())
    }
}

/// What the server authenticates, authorizes and admits with.
#[derive(Clone)]
pub struct Pipeline {
    /// Who is asking.
    pub authenticator: Arc<dyn Authenticator>,
    /// May they.
    pub authorizer: Arc<dyn Authorizer>,
    /// Admission plugins, in order.
    pub admission: Vec<Arc<dyn AdmissionPlugin>>,
}

impl Default for Pipeline {
    fn default() -> Self {
        Pipeline {
            authenticator: Arc::new(AllowAllOnLoopback),
            authorizer: Arc::new(AlwaysAllow),
            admission: default_admission(),
        }
    }
}

/// The plugins upstream enables by default that need no other component, in upstream's order:
/// NamespaceLifecycle, LimitRanger, ServiceAccount, TaintNodesByCondition, PodSecurity, Priority,
/// DefaultTolerationSeconds, DefaultStorageClass, StorageObjectInUseProtection,
/// MutatingAdmissionWebhook, ValidatingAdmissionWebhook, ResourceQuota.
pub fn default_admission() -> Vec<Arc<dyn AdmissionPlugin>> {
    vec![
        Arc::new(NamespaceLifecycle),
        Arc::new(LimitRanger),
        Arc::new(ServiceAccount),
        Arc::new(crate::serviceaccount::TokenSecrets),
        Arc::new(crate::certificates::CsrRequestor),
        Arc::new(crate::node::NodeRestriction),
        Arc::new(TaintNodesByCondition),
        Arc::new(crate::podsecurity::PodSecurity),
        Arc::new(Priority),
        Arc::new(DefaultTolerationSeconds),
        Arc::new(DefaultStorageClass),
        Arc::new(StorageObjectInUseProtection),
        Arc::new(crate::webhook::MutatingWebhooks::default()),
        Arc::new(crate::webhook::ValidatingWebhooks::default()),
        Arc::new(ResourceQuota),
    ]
}

fn is_pod(req: &AdmissionRequest<'_>) -> bool {
    req.resource.group.is_empty()
        && req.resource.kind == "Pod"
        && req.subresource.is_none()
        && req.operation == Operation::Create
}

/// Refuses to delete the namespaces the cluster needs (`default`, `kube-system`,
/// `kube-public`). Creating in a missing or terminating namespace is refused by the server.
pub struct NamespaceLifecycle;

#[async_trait::async_trait]
impl AdmissionPlugin for NamespaceLifecycle {
    fn name(&self) -> &str {
        "NamespaceLifecycle"
    }
    async fn validate(&self, req: &AdmissionRequest<'_>, _obj: &Object) -> Result<(), ApiError> {
        let r = req.resource;
        if req.operation == Operation::Delete
            && r.group.is_empty()
            && r.kind == "Namespace"
            && matches!(req.name, "default" | "kube-system" | "kube-public")
        {
            return Err(ApiError {
                code: 403,
                reason: "Forbidden",
                message: format!(
                    "namespaces \"{}\" is forbidden: this namespace may not be deleted",
                    req.name
                ),
                details: None,
            });
        }
        Ok(())
    }
}

/// New pods run as a service account (`default` unless named) and mount its token.
pub struct ServiceAccount;

#[async_trait::async_trait]
impl AdmissionPlugin for ServiceAccount {
    fn name(&self) -> &str {
        "ServiceAccount"
    }
    async fn mutate(&self, req: &AdmissionRequest<'_>, obj: &mut Object) -> Result<(), ApiError> {
        if is_pod(req) {
            crate::defaults::service_account(obj);
        }
        Ok(())
    }
}

/// New pods tolerate not-ready and unreachable nodes for 300 s.
pub struct DefaultTolerationSeconds;

#[async_trait::async_trait]
impl AdmissionPlugin for DefaultTolerationSeconds {
    fn name(&self) -> &str {
        "DefaultTolerationSeconds"
    }
    async fn mutate(&self, req: &AdmissionRequest<'_>, obj: &mut Object) -> Result<(), ApiError> {
        if is_pod(req) {
            crate::defaults::default_tolerations(obj);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[tokio::test]
    async fn token_file_users() {
        let file = TokenFile::parse("# users\nt0k3n,alice,1,\"dev,ops\"\n\nother,bob,2\n").unwrap();
        let mut h = http::HeaderMap::new();
        assert_eq!(
            file.authenticate(&Credentials::headers(&h)).await.unwrap(),
            None,
            "no credentials"
        );
        h.insert(http::header::AUTHORIZATION, "Bearer t0k3n".parse().unwrap());
        let alice = file
            .authenticate(&Credentials::headers(&h))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(alice.name, "alice");
        assert_eq!(alice.groups, ["dev", "ops", "system:authenticated"]);
        h.insert(http::header::AUTHORIZATION, "Bearer nope".parse().unwrap());
        assert_eq!(
            file.authenticate(&Credentials::headers(&h)).await.unwrap(),
            None
        );
        h.insert(http::header::AUTHORIZATION, "Bearer other".parse().unwrap());
        assert_eq!(
            file.authenticate(&Credentials::headers(&h))
                .await
                .unwrap()
                .unwrap()
                .groups,
            ["system:authenticated"]
        );
        assert!(TokenFile::parse("lonely\n").unwrap_err().contains("line 1"));
        assert!(TokenFile::parse(",bob,1\n").is_err());
        assert_eq!(split_csv(r#"a,"b,""c""",d"#), ["a", "b,\"c\"", "d"]);
    }

    proptest::proptest! {
        /// Any file text parses or fails with a message; any header value authenticates or
        /// not — never a panic; a parsed line's token finds its user.
        #[test]
        fn token_files_and_headers_never_panic(
            text in ".{0,200}",
            header in proptest::collection::vec(proptest::num::u8::ANY, 0..80),
            token in "[A-Za-z0-9]{1,20}",
            user in "[a-z]{1,10}",
        ) {
            let _ = TokenFile::parse(&text);
            let file = TokenFile::parse(&format!("{token},{user},1\n")).unwrap();
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            if let Ok(v) = http::HeaderValue::from_bytes(&header) {
                let mut h = http::HeaderMap::new();
                h.insert(http::header::AUTHORIZATION, v);
                let _ = rt.block_on(file.authenticate(&Credentials::headers(&h))).unwrap();
            }
            let mut h = http::HeaderMap::new();
            h.insert(http::header::AUTHORIZATION, format!("Bearer {token}").parse().unwrap());
            let found = rt.block_on(file.authenticate(&Credentials::headers(&h))).unwrap().unwrap();
            proptest::prop_assert_eq!(found.name, user);
        }
    }
}
