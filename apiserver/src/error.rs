//! API errors as Kubernetes `Status` objects with upstream's codes, reasons and messages.

use crate::resources::ApiResource;
use bosun_api_types::meta::v1::{Status, StatusCause, StatusDetails};
use bosun_api_types::validation::FieldError;

/// An error answered to a client as a `Status`.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{code} {reason}: {message}")]
pub struct ApiError {
    /// HTTP status code.
    pub code: u16,
    /// `Status.reason` (`NotFound`, `AlreadyExists`, …).
    pub reason: &'static str,
    /// Human-readable message, upstream's wording.
    pub message: String,
    /// `Status.details`.
    pub details: Option<Box<StatusDetails>>,
}

fn details(r: &ApiResource, name: &str) -> Option<Box<StatusDetails>> {
    Some(Box::new(StatusDetails {
        name: Some(name.to_owned()).filter(|n| !n.is_empty()),
        group: Some(r.group.clone()).filter(|g| !g.is_empty()),
        kind: Some(r.plural.clone()),
        ..Default::default()
    }))
}

impl ApiError {
    pub(crate) fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    /// 400 BadRequest.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    /// 404 NotFound for an object.
    pub fn not_found(r: &ApiResource, name: &str) -> Self {
        ApiError {
            details: details(r, name),
            ..Self::new(
                404,
                "NotFound",
                format!("{} \"{name}\" not found", r.group_resource()),
            )
        }
    }

    /// 404 NotFound for an object of `resource` in `group` known only by name.
    pub fn not_found_named(group: &str, resource: &str, name: &str) -> Self {
        let qualified = if group.is_empty() {
            resource.to_owned()
        } else {
            format!("{resource}.{group}")
        };
        ApiError {
            details: Some(Box::new(StatusDetails {
                name: Some(name.to_owned()),
                group: Some(group.to_owned()).filter(|g| !g.is_empty()),
                kind: Some(resource.to_owned()),
                ..Default::default()
            })),
            ..Self::new(404, "NotFound", format!("{qualified} \"{name}\" not found"))
        }
    }

    /// 404 NotFound for a path nothing is served at.
    pub fn no_route() -> Self {
        Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
    }

    /// 409 AlreadyExists.
    pub fn already_exists(r: &ApiResource, name: &str) -> Self {
        ApiError {
            details: details(r, name),
            ..Self::new(
                409,
                "AlreadyExists",
                format!("{} \"{name}\" already exists", r.group_resource()),
            )
        }
    }

    /// 409 Conflict of a stale resourceVersion.
    pub fn conflict(r: &ApiResource, name: &str) -> Self {
        ApiError {
            details: details(r, name),
            ..Self::new(
                409,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; \
                     please apply your changes to the latest version and try again",
                    r.group_resource()
                ),
            )
        }
    }

    /// 409 Conflict of a failed delete precondition (`what` is `UID` or `ResourceVersion`).
    pub fn precondition_failed(
        r: &ApiResource,
        name: &str,
        what: &str,
        wanted: &str,
        actual: &str,
    ) -> Self {
        ApiError {
            details: details(r, name),
            ..Self::new(
                409,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on {} \"{name}\": Precondition failed: \
                     {what} in precondition: {wanted}, {what} in object meta: {actual}",
                    r.group_resource()
                ),
            )
        }
    }

    /// 422 Invalid with field causes.
    pub fn invalid(r: &ApiResource, name: &str, errors: &[FieldError]) -> Self {
        Self::invalid_kind(&r.group, &r.kind, name, errors)
    }

    /// 422 Invalid of a kind that is not a served resource (`PatchOptions` in `meta.k8s.io`).
    pub fn invalid_kind(group: &str, kind: &str, name: &str, errors: &[FieldError]) -> Self {
        let causes = errors
            .iter()
            .map(|e| StatusCause {
                reason: Some(e.error_type.reason().to_owned()),
                message: Some(e.message()),
                field: Some(e.field.clone()),
            })
            .collect();
        let messages: Vec<String> = errors.iter().map(ToString::to_string).collect();
        let joined = if messages.len() == 1 {
            messages[0].clone()
        } else {
            format!("[{}]", messages.join(", "))
        };
        // Upstream qualifies the kind with its group: `Deployment.apps "web" is invalid`.
        let qualified = if group.is_empty() {
            kind.to_owned()
        } else {
            format!("{kind}.{group}")
        };
        ApiError {
            details: Some(Box::new(StatusDetails {
                name: Some(name.to_owned()),
                group: Some(group.to_owned()).filter(|g| !g.is_empty()),
                kind: Some(kind.to_owned()),
                causes,
                ..Default::default()
            })),
            ..Self::new(
                422,
                "Invalid",
                format!("{qualified} \"{name}\" is invalid: {joined}"),
            )
        }
    }

    /// 422 Invalid of the request's options (`fieldManager` and the like).
    pub fn invalid_options(field: &str, value: &str, detail: &str) -> Self {
        let path = bosun_api_types::validation::FieldPath::new(field);
        let err = if value.is_empty() {
            FieldError::required(&path, detail)
        } else {
            FieldError::invalid(&path, value, detail)
        };
        Self::invalid_kind("meta.k8s.io", "PatchOptions", "", &[err])
    }

    /// 405 MethodNotAllowed.
    pub fn method_not_allowed(r: &ApiResource, verb: &str) -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            format!(
                "the server does not allow this method on the requested resource ({verb} {})",
                r.group_resource()
            ),
        )
    }

    /// 410 Expired: a resourceVersion older than the retained history.
    pub fn expired(requested: i64, oldest: i64) -> Self {
        Self::new(
            410,
            "Expired",
            format!("too old resource version: {requested} ({oldest})"),
        )
    }

    /// 413 RequestEntityTooLarge.
    pub fn too_large(limit: usize) -> Self {
        Self::new(
            413,
            "RequestEntityTooLarge",
            format!("the request body is larger than the limit of {limit} bytes"),
        )
    }

    /// 415 UnsupportedMediaType.
    pub fn unsupported_media_type(content_type: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!("the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf (got {content_type})"),
        )
    }

    /// 406 NotAcceptable.
    pub fn not_acceptable(accept: &str) -> Self {
        Self::new(
            406,
            "NotAcceptable",
            format!("only the following media types are accepted: application/json, application/yaml, application/vnd.kubernetes.protobuf (asked for {accept})"),
        )
    }

    /// 500 InternalError.
    pub fn internal(message: impl std::fmt::Display) -> Self {
        Self::new(
            500,
            "InternalError",
            format!("Internal error occurred: {message}"),
        )
    }

    /// 504 Timeout.
    pub fn timeout(message: impl Into<String>) -> Self {
        Self::new(504, "Timeout", message)
    }

    /// 401 Unauthorized: no credentials the server accepts.
    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized")
    }

    /// 403 Forbidden, worded as upstream's authorizer denial.
    pub fn forbidden(
        user: &crate::auth::UserInfo,
        req: &crate::auth::RequestInfo<'_>,
        reason: &str,
    ) -> Self {
        if let Some(path) = req.path {
            let mut message = format!(
                "forbidden: User \"{}\" cannot {} path \"{path}\"",
                user.name, req.verb
            );
            if !reason.is_empty() {
                message.push_str(": ");
                message.push_str(reason);
            }
            return ApiError {
                code: 403,
                reason: "Forbidden",
                message,
                details: Some(Box::default()),
            };
        }
        let resource = match req.subresource {
            Some(sub) => format!("{}/{sub}", req.resource),
            None => req.resource.to_owned(),
        };
        let qualified = if req.group.is_empty() {
            req.resource.to_owned()
        } else {
            format!("{}.{}", req.resource, req.group)
        };
        let subject = match req.name {
            Some(n) => format!("{qualified} \"{n}\""),
            None => qualified,
        };
        let scope = match req.namespace {
            Some(ns) => format!(" in the namespace \"{ns}\""),
            None => " at the cluster scope".to_owned(),
        };
        let mut message = format!(
            "{subject} is forbidden: User \"{}\" cannot {} resource \"{resource}\" in API group \"{}\"{scope}",
            user.name, req.verb, req.group
        );
        if !reason.is_empty() {
            message.push_str(": ");
            message.push_str(reason);
        }
        ApiError {
            code: 403,
            reason: "Forbidden",
            message,
            details: Some(Box::new(StatusDetails {
                name: req.name.map(str::to_owned),
                group: Some(req.group.to_owned()).filter(|g| !g.is_empty()),
                kind: Some(req.resource.to_owned()),
                ..Default::default()
            })),
        }
    }

    /// 409 Conflict with a message of its own (no resource details).
    pub fn conflict_message(message: impl Into<String>) -> Self {
        Self::new(409, "Conflict", message)
    }

    /// 429 TooManyRequests: the server is at its in-flight limit.
    pub fn too_many_requests() -> Self {
        Self::new(
            429,
            "TooManyRequests",
            "Too many requests, please try again later.",
        )
    }

    /// The `Status` object.
    pub fn status(&self) -> Status {
        Status {
            api_version: "v1".into(),
            kind: "Status".into(),
            status: Some("Failure".into()),
            message: Some(self.message.clone()),
            reason: Some(self.reason.to_owned()).filter(|_| self.reason != "Unknown"),
            details: self.details.as_deref().cloned(),
            code: Some(i32::from(self.code)),
            ..Default::default()
        }
    }

    /// Maps a store error on `r`/`name` to its API error.
    pub fn from_store(e: bosun_store::Error, r: &ApiResource, name: &str) -> Self {
        use bosun_store::Error as E;
        match e {
            E::AlreadyExists { .. } => Self::already_exists(r, name),
            E::NotFound { .. } => Self::not_found(r, name),
            E::Conflict { .. } => Self::conflict(r, name),
            E::Compacted { requested, oldest } => Self::expired(requested, oldest),
            E::FutureRevision { requested, current } => Self::timeout(format!(
                "Too large resource version: {requested}, current: {current}"
            )),
            other => Self::internal(other),
        }
    }
}
