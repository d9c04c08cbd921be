//! The request pipeline's seams: who is asking ([`Authenticator`]), may they
//! ([`Authorizer`]), and what admission does to and thinks of the object
//! ([`AdmissionPlugin`], mutating then validating, around defaulting and validation).
//!
//! The defaults are [`AllowAllOnLoopback`] (every request is the cluster admin; `bosun server`
//! only binds to loopback until the security issue lands), [`AlwaysAllow`], and the admission
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
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserInfo {
    /// User name (`admin`, `system:serviceaccount:default:builder`).
    pub name: String,
    /// Groups (`system:masters`, `system:authenticated`).
    pub groups: Vec<String>,
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
#[async_trait::async_trait]
pub trait Authenticator: Send + Sync {
    /// The user behind these request headers; `None` when the request carries no credentials
    /// this authenticator accepts (answered 401).
    async fn authenticate(&self, headers: &http::HeaderMap) -> Result<Option<UserInfo>, ApiError>;
}

/// Decides whether a user may make a request.
#[async_trait::async_trait]
pub trait Authorizer: Send + Sync {
    /// The decision for `user` doing `req`.
    async fn authorize(&self, user: &UserInfo, req: &RequestInfo<'_>) -> Decision;
}

/// Every request is the cluster admin (`admin` in `system:masters`). Acceptable only while the
/// server listens on loopback.
#[derive(Clone, Copy, Debug, Default)]
pub struct AllowAllOnLoopback;

#[async_trait::async_trait]
impl Authenticator for AllowAllOnLoopback {
    async fn authenticate(&self, _: &http::HeaderMap) -> Result<Option<UserInfo>, ApiError> {
        Ok(Some(UserInfo {
            name: "admin".into(),
            groups: vec!["system:masters".into(), "system:authenticated".into()],
        }))
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
}

/// An admission plugin: mutates, then (after defaulting and validation) validates.
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
/// NamespaceLifecycle, LimitRanger, ServiceAccount, TaintNodesByCondition, Priority,
/// DefaultTolerationSeconds, DefaultStorageClass, StorageObjectInUseProtection, ResourceQuota.
pub fn default_admission() -> Vec<Arc<dyn AdmissionPlugin>> {
    vec![
        Arc::new(NamespaceLifecycle),
        Arc::new(LimitRanger),
        Arc::new(ServiceAccount),
        Arc::new(TaintNodesByCondition),
        Arc::new(Priority),
        Arc::new(DefaultTolerationSeconds),
        Arc::new(DefaultStorageClass),
        Arc::new(StorageObjectInUseProtection),
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
