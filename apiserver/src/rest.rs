//! The REST verbs of a resource: get, list, watch, create, update, patch, delete,
//! deletecollection.

use crate::allocator;
use crate::error::ApiError;
use crate::managed;
use crate::object::{self, Object};
use crate::resources::ApiResource;
use crate::server::{json, json_bytes, ApiServer, Body};
use base64::Engine;
use bosun_api_types::meta::v1::ObjectMeta;
use bosun_api_types::patch;
use bosun_api_types::selector::{FieldSelector, Selector};
use bosun_api_types::validation::{self, FieldError, FieldPath};
use bosun_api_types::Time;
use bosun_store::{KeyValue, RangeRequest, Revision};
use bytes::Bytes;
use http::{Response, StatusCode};
use serde_json::{json, Value};
use std::sync::Arc;

/// One request to a resource.
pub(crate) struct Ctx<'a> {
    pub(crate) server: &'a ApiServer,
    pub(crate) r: &'a Arc<ApiResource>,
    pub(crate) namespace: Option<&'a str>,
    pub(crate) name: Option<&'a str>,
    pub(crate) subresource: Option<&'a str>,
    pub(crate) query: &'a crate::request::Query,
    pub(crate) content_type: Option<&'a str>,
    /// The encoding and view the client asked for.
    pub(crate) output: crate::negotiate::Output,
    /// Warnings for the `Warning` response header.
    pub(crate) warnings: std::sync::Mutex<Vec<String>>,
    /// The client's `User-Agent` (the default field manager is its product name).
    pub(crate) user_agent: &'a str,
    /// Who makes the request.
    pub(crate) user: &'a crate::auth::UserInfo,
    /// The body of a create or update sent as JSON, for the duplicate-field check.
    pub(crate) json_body: Option<&'a [u8]>,
}

impl Ctx<'_> {
    /// Whether the client asked for a `Table`.
    pub(crate) fn table(&self) -> bool {
        self.output.view == crate::negotiate::View::Table
    }

    /// Whether the client asked for `PartialObjectMetadata`.
    fn metadata_only(&self) -> bool {
        self.output.view == crate::negotiate::View::Metadata
    }

    fn store(&self) -> &Arc<dyn bosun_store::Store> {
        self.server.store()
    }

    pub(crate) fn name(&self) -> &str {
        self.name.unwrap_or("")
    }

    fn key(&self, name: &str) -> String {
        self.r.key(self.namespace, name)
    }

    fn check_verb(&self, verb: &str) -> Result<(), ApiError> {
        if self.r.has_verb(verb) {
            Ok(())
        } else {
            Err(ApiError::method_not_allowed(self.r, verb))
        }
    }

    fn check_subresource(&self, allowed: &[&str]) -> Result<(), ApiError> {
        match self.subresource {
            None => Ok(()),
            Some(s) if allowed.contains(&s) && self.r.subresources.iter().any(|x| x == s) => Ok(()),
            Some(_) => Err(ApiError::no_route()),
        }
    }

    /// The request body's format: JSON, YAML, or protobuf for built-in kinds only (a custom
    /// resource has no protobuf form: 415, as upstream).
    fn body_format(&self) -> Result<object::Format, ApiError> {
        let format = object::body_format(self.content_type)?;
        if format == object::Format::Protobuf && self.r.builtin.is_none() {
            return Err(ApiError::new(
                415,
                "UnsupportedMediaType",
                format!(
                    "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml (got {})",
                    self.content_type.unwrap_or("")
                ),
            ));
        }
        Ok(format)
    }

    /// The same request addressed to the parent object of its subresource.
    fn parent<'b>(&'b self, content_type: Option<&'b str>) -> Ctx<'b> {
        Ctx {
            server: self.server,
            r: self.r,
            namespace: self.namespace,
            name: self.name,
            subresource: None,
            query: self.query,
            content_type,
            output: crate::negotiate::Output::default(),
            warnings: std::sync::Mutex::new(Vec::new()),
            user_agent: self.user_agent,
            user: self.user,
            json_body: None,
        }
    }

    fn admission_request<'b>(
        &'b self,
        operation: crate::auth::Operation,
        name: &'b str,
        old: Option<&'b Object>,
    ) -> crate::auth::AdmissionRequest<'b> {
        crate::auth::AdmissionRequest {
            operation,
            resource: self.r,
            subresource: self.subresource,
            namespace: self.namespace,
            name,
            user: self.user,
            old,
            dry_run: self.query.dry_run,
            server: self.server,
            warnings: &self.warnings,
        }
    }

    /// Runs the mutating admission plugins.
    async fn admit_mutate(
        &self,
        operation: crate::auth::Operation,
        name: &str,
        old: Option<&Object>,
        obj: &mut Object,
    ) -> Result<(), ApiError> {
        let req = self.admission_request(operation, name, old);
        for plugin in &self.server.inner.pipeline.admission {
            plugin.mutate(&req, obj).await?;
        }
        Ok(())
    }

    /// Runs the validating admission plugins.
    async fn admit_validate(
        &self,
        operation: crate::auth::Operation,
        name: &str,
        old: Option<&Object>,
        obj: &Object,
    ) -> Result<(), ApiError> {
        let req = self.admission_request(operation, name, old);
        for plugin in &self.server.inner.pipeline.admission {
            plugin.validate(&req, obj).await?;
        }
        Ok(())
    }

    /// The field manager of this write: `fieldManager`, else the User-Agent's product name.
    fn manager(&self) -> Result<String, ApiError> {
        let m = match self.query.field_manager.as_deref() {
            Some(m) => m.to_owned(),
            None => {
                let ua = self.user_agent.split('/').next().unwrap_or("").trim();
                if ua.is_empty() {
                    "unknown".to_owned()
                } else {
                    ua.to_owned()
                }
            }
        };
        if m.chars().count() > 128 {
            return Err(ApiError::invalid_options(
                "fieldManager",
                &m,
                "must be no more than 128 characters",
            ));
        }
        Ok(m)
    }

    /// What a write by this request manages.
    fn part(&self) -> managed::Part {
        if matches!(self.subresource, Some("status" | "approval")) {
            managed::Part::Status
        } else {
            managed::Part::Main {
                status_is_separate: self.r.subresources.iter().any(|s| s == "status"),
            }
        }
    }

    fn writer<'m>(&'m self, manager: &'m str, api_version: &'m str) -> managed::Writer<'m> {
        managed::Writer {
            manager,
            api_version,
            type_name: self.r.builtin.map(|i| i.schema_name),
            part: self.part(),
        }
    }

    fn warn(&self, w: String) {
        self.warnings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(w);
    }

    /// Applies `fieldValidation` to the fields of `obj` its type does not have: Strict
    /// rejects them, Warn (the default) reports them in warnings, Ignore drops them silently.
    fn check_fields(&self, obj: &Object) -> Result<(), ApiError> {
        let mode = self.query.field_validation.as_deref().unwrap_or("Warn");
        if !matches!(mode, "Strict" | "Warn" | "Ignore") {
            return Err(ApiError::bad_request(format!(
                "fieldValidation: invalid value {mode:?}: must be one of Ignore, Warn, Strict"
            )));
        }
        if mode == "Ignore" {
            return Ok(());
        }
        let unknown = object::unknown_fields(self.r, obj);
        let duplicate = self
            .json_body
            .map(object::duplicate_fields)
            .unwrap_or_default();
        if unknown.is_empty() && duplicate.is_empty() {
            return Ok(());
        }
        let fields: Vec<String> = unknown
            .iter()
            .map(|f| format!("unknown field \"{f}\""))
            .chain(duplicate.iter().map(|f| format!("duplicate field \"{f}\"")))
            .collect();
        if mode == "Strict" {
            return Err(ApiError::bad_request(format!(
                "{kind} in version \"{v}\" cannot be handled as a {kind}: strict decoding error: {}",
                fields.join(", "),
                kind = self.r.kind,
                v = self.r.version
            )));
        }
        for f in fields {
            self.warn(f);
        }
        Ok(())
    }

    /// A custom object pruned, defaulted and validated against its CRD version's schema.
    fn admit_custom(&self, name: &str, obj: &mut Object) -> Result<(), ApiError> {
        let Some(info) = &self.r.custom else {
            return Ok(());
        };
        let errs = crate::crd::admit(info, obj);
        if errs.is_empty() {
            Ok(())
        } else {
            Err(ApiError::invalid(self.r, name, &errs))
        }
    }

    /// Upstream's per-kind validation of a defaulted object; 422 Invalid with causes.
    fn validate(&self, name: &str, obj: &Object) -> Result<(), ApiError> {
        let policy = crate::validate::Policy {
            allow_privileged: self.server.inner.config.allow_privileged,
        };
        let errs = crate::validate::validate(self.r, obj, policy);
        if errs.is_empty() {
            Ok(())
        } else {
            Err(ApiError::invalid(self.r, name, &errs))
        }
    }

    /// Reads the current object.
    pub(crate) async fn current(&self, name: &str) -> Result<(Object, KeyValue), ApiError> {
        let started = std::time::Instant::now();
        let got = self.store().get(&self.key(name), None).await;
        self.server.inner.metrics.storage("get", started.elapsed());
        let kv = got
            .map_err(|e| ApiError::from_store(e, self.r, name))?
            .ok_or_else(|| ApiError::not_found(self.r, name))?;
        let mut obj = object::from_stored(&kv.value)?;
        object::set_resource_version(&mut obj, kv.mod_revision);
        crate::crd::served_as(self.r, &mut obj);
        Ok((obj, kv))
    }
}

/// The bytes to store for `obj`: custom objects in their storage version (`obj` itself keeps the
/// version it is served in).
fn stored_value(r: &ApiResource, obj: &mut Object) -> Result<Bytes, ApiError> {
    if !crate::crd::converts(r) {
        return object::to_stored(obj);
    }
    let served = obj.get("apiVersion").cloned();
    if let Some(c) = &r.custom {
        obj.insert(
            "apiVersion".into(),
            Value::String(c.storage_version.clone()),
        );
    }
    let value = object::to_stored(obj);
    if let Some(v) = served {
        obj.insert("apiVersion".into(), v);
    }
    value
}

fn now() -> Time {
    Time::now()
}

/// A JSON response of one object (or a one-row Table).
fn object_response(
    ctx: &Ctx<'_>,
    code: StatusCode,
    obj: &Object,
) -> Result<Response<Body>, ApiError> {
    if ctx.table() {
        let rv = obj
            .get("metadata")
            .and_then(|m| m.get("resourceVersion"))
            .cloned()
            .unwrap_or(Value::Null);
        let mut metadata = serde_json::Map::new();
        metadata.insert("resourceVersion".into(), rv);
        return json(
            code,
            &crate::printers::table(ctx.r, std::slice::from_ref(obj), metadata),
        );
    }
    if ctx.metadata_only() {
        return json(code, &crate::negotiate::partial(obj));
    }
    json(code, obj)
}

// ---------------------------------------------------------------------------------------------
// get / list

pub(crate) async fn get(ctx: &Ctx<'_>) -> Result<Response<Body>, ApiError> {
    ctx.check_subresource(&["status", "scale", "approval"])?;
    ctx.check_verb("get")?;
    if ctx.subresource == Some("scale") {
        return json(StatusCode::OK, &crate::scale::get(ctx).await?);
    }
    let (obj, _) = ctx.current(ctx.name()).await?;
    object_response(ctx, StatusCode::OK, &obj)
}

/// `SelfSubjectAccessReview`, `SubjectAccessReview`, `LocalSubjectAccessReview`: the
/// authorizer's answer to "may this user do that" (`kubectl auth can-i`). `None` for other
/// resources of the group.
pub(crate) async fn access_review(
    ctx: &Ctx<'_>,
    body: &[u8],
) -> Result<Option<Response<Body>>, ApiError> {
    if matches!(ctx.r.plural.as_str(), "selfsubjectreviews" | "tokenreviews") {
        return identity_review(ctx, body).await.map(Some);
    }
    if ctx.r.plural == "selfsubjectrulesreviews" {
        return rules_review(ctx, body).await.map(Some);
    }
    let own = match ctx.r.plural.as_str() {
        "selfsubjectaccessreviews" => true,
        "subjectaccessreviews" | "localsubjectaccessreviews" => false,
        _ => return Ok(None),
    };
    let format = ctx.body_format()?;
    let mut review = object::decode_body(body, format)?;
    object::check_type(ctx.r, &mut review)?;
    let spec = review.get("spec").cloned().unwrap_or(Value::Null);
    let user = if own {
        ctx.user.clone()
    } else {
        crate::auth::UserInfo {
            name: spec["user"].as_str().unwrap_or("").to_owned(),
            groups: spec["groups"]
                .as_array()
                .map(|g| {
                    g.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default(),
            ..Default::default()
        }
    };
    let attrs = &spec["resourceAttributes"];
    let s = |k: &str| attrs[k].as_str().filter(|v| !v.is_empty());
    let info = if attrs.is_object() {
        crate::auth::RequestInfo {
            verb: s("verb").unwrap_or(""),
            group: s("group").unwrap_or(""),
            version: s("version").unwrap_or(""),
            resource: s("resource").unwrap_or(""),
            subresource: s("subresource"),
            namespace: s("namespace").or(ctx.namespace),
            name: s("name"),
            path: None,
        }
    } else {
        let non = &spec["nonResourceAttributes"];
        crate::auth::RequestInfo::non_resource(
            non["verb"].as_str().unwrap_or(""),
            non["path"].as_str().unwrap_or(""),
        )
    };
    let decision = ctx
        .server
        .inner
        .pipeline
        .authorizer
        .authorize(&user, &info)
        .await;
    let status = match decision {
        crate::auth::Decision::Allow => json!({"allowed": true}),
        crate::auth::Decision::Deny(reason) => {
            json!({"allowed": false, "denied": true, "reason": reason})
        }
        crate::auth::Decision::NoOpinion => json!({"allowed": false}),
    };
    review.insert("status".into(), status);
    if let Some(Value::Object(meta)) = review.get_mut("metadata") {
        meta.insert("creationTimestamp".into(), Value::Null);
    }
    json(StatusCode::CREATED, &review).map(Some)
}

/// `SelfSubjectRulesReview`: what the caller may do in `spec.namespace`, as resource and
/// non-resource rules (`kubectl auth can-i --list`).
async fn rules_review(ctx: &Ctx<'_>, body: &[u8]) -> Result<Response<Body>, ApiError> {
    let format = ctx.body_format()?;
    let mut review = object::decode_body(body, format)?;
    object::check_type(ctx.r, &mut review)?;
    let namespace = review
        .get("spec")
        .and_then(|s| s.get("namespace"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let rules = ctx
        .server
        .inner
        .pipeline
        .authorizer
        .rules(ctx.user, &namespace)
        .await;
    let status = match rules {
        None => json!({
            "resourceRules": [],
            "nonResourceRules": [],
            "incomplete": true,
            "evaluationError": "the authorizer cannot list rules",
        }),
        Some(rules) => {
            let mut resource = Vec::new();
            let mut non_resource = Vec::new();
            for r in rules {
                if !r.non_resource_urls.is_empty() {
                    non_resource
                        .push(json!({"verbs": r.verbs, "nonResourceURLs": r.non_resource_urls}));
                }
                if !r.resources.is_empty() {
                    let mut rule = json!({
                        "verbs": r.verbs,
                        "apiGroups": r.api_groups,
                        "resources": r.resources,
                    });
                    if !r.resource_names.is_empty() {
                        rule["resourceNames"] = json!(r.resource_names);
                    }
                    resource.push(rule);
                }
            }
            json!({"resourceRules": resource, "nonResourceRules": non_resource, "incomplete": false})
        }
    };
    review.insert("status".into(), status);
    if let Some(Value::Object(meta)) = review.get_mut("metadata") {
        meta.insert("creationTimestamp".into(), Value::Null);
    }
    json(StatusCode::CREATED, &review)
}

/// `SelfSubjectReview` (who am I: `kubectl auth whoami`) and `TokenReview` (who does this
/// token stand for, through the server's own authenticators). Nothing is stored.
async fn identity_review(ctx: &Ctx<'_>, body: &[u8]) -> Result<Response<Body>, ApiError> {
    let format = ctx.body_format()?;
    let mut review = object::decode_body(body, format)?;
    object::check_type(ctx.r, &mut review)?;
    let status = if ctx.r.plural == "selfsubjectreviews" {
        json!({"userInfo": ctx.user.to_json()})
    } else {
        let token = review
            .get("spec")
            .and_then(|s| s.get("token"))
            .and_then(Value::as_str)
            .unwrap_or("");
        let mut headers = http::HeaderMap::new();
        if let Ok(v) = http::HeaderValue::from_str(&format!("Bearer {token}")) {
            headers.insert(http::header::AUTHORIZATION, v);
        }
        let found = if token.is_empty() {
            None
        } else {
            ctx.server
                .inner
                .pipeline
                .authenticator
                .authenticate(&crate::auth::Credentials::headers(&headers))
                .await
                .ok()
                .flatten()
                .filter(|u| u.name != "system:anonymous")
        };
        match found {
            Some(u) => json!({"authenticated": true, "user": u.to_json()}),
            None => json!({"authenticated": false, "user": {}, "error": "invalid bearer token"}),
        }
    };
    review.insert("status".into(), status);
    if let Some(Value::Object(meta)) = review.get_mut("metadata") {
        meta.insert("creationTimestamp".into(), Value::Null);
    }
    json(StatusCode::CREATED, &review)
}

/// Deletes the parent object of a subresource (`eviction`) with the main resource's rules.
pub(crate) async fn delete_parent(ctx: &Ctx<'_>, body: &[u8]) -> Result<Response<Body>, ApiError> {
    delete(&ctx.parent(Some("application/json")), body).await
}

/// `POST` to an object's subresource: a pod's `binding` or `eviction`.
pub(crate) async fn post_subresource(
    ctx: &Ctx<'_>,
    body: &[u8],
) -> Result<Response<Body>, ApiError> {
    let is_pod = ctx.r.group.is_empty() && ctx.r.kind == "Pod";
    let format = ctx.body_format()?;
    match (is_pod, ctx.subresource) {
        (true, Some("binding")) => {
            let b = object::decode_body(body, format)?;
            json(StatusCode::CREATED, &crate::pods::bind(ctx, &b).await?)
        }
        (true, Some("eviction")) => {
            let b = object::decode_body(body, format)?;
            json(StatusCode::CREATED, &crate::pods::evict(ctx, &b).await?)
        }
        (false, Some("token")) if ctx.r.group.is_empty() && ctx.r.plural == "serviceaccounts" => {
            let b = object::decode_body(body, format)?;
            json(StatusCode::CREATED, &token_request(ctx, &b).await?)
        }
        _ => Err(ApiError::method_not_allowed(ctx.r, "create")),
    }
}

/// The TokenRequest API: a token for the service account, bound to a pod or secret if asked,
/// for the audiences asked (the issuer's own by default), valid `expirationSeconds` (default
/// an hour, at least ten minutes).
async fn token_request(ctx: &Ctx<'_>, req: &Object) -> Result<Value, ApiError> {
    let Some(issuer) = ctx.server.inner.config.service_account_issuer.clone() else {
        return Err(ApiError::no_route());
    };
    let ns = ctx.namespace.unwrap_or_default();
    let name = ctx.name();
    let spec = req.get("spec").cloned().unwrap_or(Value::Null);
    let seconds = spec["expirationSeconds"].as_i64().unwrap_or(3600);
    let field = FieldPath::new("spec").child("expirationSeconds");
    if seconds < 600 {
        return Err(ApiError::invalid_kind(
            "authentication.k8s.io",
            "TokenRequest",
            name,
            &[FieldError::invalid(
                &field,
                seconds,
                "may not specify a duration less than 10 minutes",
            )],
        ));
    }
    if seconds > 1 << 32 {
        return Err(ApiError::invalid_kind(
            "authentication.k8s.io",
            "TokenRequest",
            name,
            &[FieldError::invalid(
                &field,
                seconds,
                "may not specify a duration larger than 2^32 seconds",
            )],
        ));
    }
    let mut audiences: Vec<String> = spec["audiences"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_owned)
        .collect();
    if audiences.is_empty() {
        audiences.push(issuer.issuer().to_owned());
    }
    let stored = |resource: &'static str, obj_name: String| async move {
        let key = format!("/registry/core/{resource}/{ns}/{obj_name}");
        let kv = ctx
            .store()
            .get(&key, None)
            .await
            .map_err(ApiError::internal)?;
        kv.and_then(|kv| serde_json::from_slice::<Value>(&kv.value).ok())
            .ok_or_else(|| ApiError::not_found_named("", resource, &obj_name))
    };
    let account = stored("serviceaccounts", name.to_owned()).await?;
    let sa_uid = account["metadata"]["uid"].as_str().unwrap_or("").to_owned();
    let bound = &spec["boundObjectRef"];
    let mut binding = None;
    if bound.is_object() {
        let kind = bound["kind"].as_str().unwrap_or("");
        let resource = match kind {
            "Pod" => "pods",
            "Secret" => "secrets",
            other => {
                return Err(ApiError::invalid_kind(
                    "authentication.k8s.io",
                    "TokenRequest",
                    name,
                    &[FieldError::not_supported(
                        &FieldPath::new("spec").child("boundObjectRef").child("kind"),
                        other,
                        &["Pod", "Secret"],
                    )],
                ))
            }
        };
        let bound_name = bound["name"].as_str().unwrap_or("").to_owned();
        let obj = stored(resource, bound_name.clone()).await?;
        let uid = obj["metadata"]["uid"].as_str().unwrap_or("").to_owned();
        if let Some(want) = bound["uid"].as_str().filter(|u| !u.is_empty()) {
            if want != uid {
                return Err(ApiError::conflict_message(format!(
                    "the UID in the bound object reference ({want}) does not match the UID in record. The object might have been deleted and then recreated"
                )));
            }
        }
        binding = Some((kind.to_owned(), bound_name, uid));
    }
    let claims = issuer.bound_claims(
        ns,
        (name, &sa_uid),
        binding
            .as_ref()
            .map(|(k, n, u)| (k.as_str(), n.as_str(), u.as_str())),
        &audiences,
        seconds,
    );
    let token = issuer
        .sign(&claims)
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let expires = claims["exp"].as_i64().unwrap_or_default();
    let mut spec = spec;
    spec["audiences"] = json!(audiences);
    spec["expirationSeconds"] = json!(seconds);
    Ok(json!({
        "kind": "TokenRequest",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"name": name, "namespace": ns, "creationTimestamp": Value::Null},
        "spec": spec,
        "status": {
            "token": token,
            "expirationTimestamp": Time::from_unix(expires, 0),
        },
    }))
}

/// Writes the parent object of a subresource (`scale`) with the main resource's rules.
pub(crate) async fn write_parent(
    ctx: &Ctx<'_>,
    new: Object,
    old: &Object,
    old_kv: &KeyValue,
) -> Result<Object, ApiError> {
    write_update_obj(
        &ctx.parent(ctx.content_type),
        new,
        old,
        old_kv,
        Fields::Track,
    )
    .await
}

/// A continue token: the revision of the first page and the last key returned.
#[derive(serde::Serialize, serde::Deserialize)]
struct Continue {
    rv: Revision,
    start: String,
}

fn encode_continue(rv: Revision, start: &str) -> String {
    let raw = serde_json::to_vec(&Continue {
        rv,
        start: start.to_owned(),
    })
    .unwrap_or_default();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

fn decode_continue(token: &str, prefix: &str) -> Result<Continue, ApiError> {
    let bad = || {
        ApiError::bad_request(
            "The provided continue parameter is too old to display a consistent list result. \
             You can start a new list without the continue parameter, or use the continue token \
             in this response to retrieve the remainder of the results.",
        )
    };
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| bad())?;
    let c: Continue = serde_json::from_slice(&raw).map_err(|_| bad())?;
    if !c.start.starts_with(prefix) {
        return Err(bad());
    }
    Ok(c)
}

/// Label and field selectors of a request.
struct Filter {
    labels: Selector,
    fields: FieldSelector,
}

impl Filter {
    fn new(ctx: &Ctx<'_>) -> Result<Self, ApiError> {
        let labels = match &ctx.query.label_selector {
            Some(s) => s
                .parse::<Selector>()
                .map_err(|e| ApiError::bad_request(format!("unable to parse requirement: {e}")))?,
            None => Selector::everything(),
        };
        let fields = match &ctx.query.field_selector {
            Some(s) => s
                .parse::<FieldSelector>()
                .map_err(|e| ApiError::bad_request(format!("invalid field selector: {e}")))?,
            None => FieldSelector::default(),
        };
        for req in fields.requirements() {
            if !field_supported(ctx.r, &req.field) {
                return Err(ApiError::bad_request(format!(
                    "field label not supported: {}",
                    req.field
                )));
            }
        }
        Ok(Filter { labels, fields })
    }

    fn is_everything(&self) -> bool {
        self.labels.is_everything() && self.fields.is_empty()
    }

    fn matches(&self, obj: &Object) -> bool {
        if !self.labels.is_everything() && !self.labels.matches(&object::labels(obj)) {
            return false;
        }
        if self.fields.is_empty() {
            return true;
        }
        let values: Vec<(String, Option<String>)> = self
            .fields
            .requirements()
            .iter()
            .map(|r| (r.field.clone(), object::field(obj, &r.field)))
            .collect();
        self.fields.matches(|f| {
            values
                .iter()
                .find(|(k, _)| k == f)
                .and_then(|(_, v)| v.as_deref())
                .or(Some(""))
        })
    }
}

/// Field selectors upstream supports per kind (beyond metadata.name and metadata.namespace).
fn field_supported(r: &ApiResource, field: &str) -> bool {
    if field == "metadata.name" || (field == "metadata.namespace" && r.namespaced) {
        return true;
    }
    let extra: &[&str] = match (r.group.as_str(), r.kind.as_str()) {
        ("", "Pod") => &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ],
        ("", "Secret") => &["type"],
        ("", "Event") | ("events.k8s.io", "Event") => &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ],
        ("", "Namespace") => &["status.phase"],
        ("", "Node") => &["spec.unschedulable"],
        ("", "ReplicationController") => &["status.replicas"],
        ("apps", "ReplicaSet") => &["status.replicas"],
        ("batch", "Job") => &["status.successful"],
        ("certificates.k8s.io", "CertificateSigningRequest") => &["spec.signerName"],
        _ => &[],
    };
    extra.contains(&field)
}

pub(crate) async fn list(ctx: &Ctx<'_>) -> Result<Response<Body>, ApiError> {
    ctx.check_subresource(&[])?;
    ctx.check_verb("list")?;
    let filter = Filter::new(ctx)?;
    let prefix = ctx.r.list_prefix(ctx.namespace);
    let limit = ctx.query.limit.unwrap_or(0);
    let source = list_source(ctx, &prefix).await?;
    let selected = match source {
        ListSource::Cache(page) => select_cached(page, &filter, limit),
        ListSource::Store {
            revision,
            start_after,
        } => select_stored(ctx, &prefix, &filter, limit, revision, start_after).await?,
    };
    render_list(ctx, selected)
}

/// Where a list is read from.
enum ListSource {
    /// A page of the watch cache (every key after the continue key, if any).
    Cache(crate::cache::Page),
    /// The store, at a revision (the latest if `None`), after a key.
    Store {
        revision: Option<Revision>,
        start_after: Option<String>,
    },
}

/// The objects a list shows, and what the list metadata says about the rest.
struct Selected {
    items: Vec<crate::cache::Entry>,
    revision: Revision,
    /// The key to continue after, when more objects follow.
    continue_after: Option<String>,
    remaining: Option<i64>,
}

/// Chooses the source of a list the way upstream's watch cache does: a warm cache serves
/// `resourceVersion` "" (after catching up with the store's current revision), "0", and
/// NotOlderThan a revision it has reached, and the continuation of a list it still shows;
/// exact revisions and older continuations read the store.
async fn list_source(ctx: &Ctx<'_>, prefix: &str) -> Result<ListSource, ApiError> {
    let cache = ctx.server.cache();
    let resource = ctx.r.key_prefix();
    if let Some(t) = &ctx.query.continue_token {
        let c = decode_continue(t, prefix)?;
        if cache.revision() == Some(c.rv) {
            if let Some(page) = cache.list(&resource, prefix, Some(&c.start)) {
                if page.revision == c.rv {
                    return Ok(ListSource::Cache(page));
                }
            }
        }
        return Ok(ListSource::Store {
            revision: Some(c.rv),
            start_after: Some(c.start),
        });
    }
    let store_latest = ListSource::Store {
        revision: None,
        start_after: None,
    };
    let wait = std::time::Duration::from_secs(3);
    let wanted: Option<Revision> = match ctx.query.resource_version.as_deref() {
        None | Some("") => {
            // A consistent read: the cache must have applied the store's current revision.
            let current = ctx
                .store()
                .current_revision()
                .await
                .map_err(|e| ApiError::from_store(e, ctx.r, ""))?;
            // Before the cache's first fill this waits for it; a cache that cannot catch up
            // (a store it cannot read) leaves the list to the store.
            if !cache.wait_for(current, wait).await {
                return Ok(store_latest);
            }
            None
        }
        Some(rv) => {
            let n: Revision = rv
                .parse()
                .map_err(|_| ApiError::bad_request(format!("invalid resource version: {rv}")))?;
            match ctx.query.resource_version_match.as_deref() {
                Some("Exact") => {
                    return Ok(ListSource::Store {
                        revision: Some(n),
                        start_after: None,
                    })
                }
                None | Some("NotOlderThan") => Some(n),
                Some(other) => {
                    return Err(ApiError::bad_request(format!(
                        "invalid resourceVersionMatch: {other:?}; supported values: \"Exact\", \"NotOlderThan\""
                    )))
                }
            }
        }
    };
    if let Some(n) = wanted.filter(|n| *n > 0) {
        let current = ctx
            .store()
            .current_revision()
            .await
            .map_err(|e| ApiError::from_store(e, ctx.r, ""))?;
        if n > current {
            return Err(ApiError::timeout(format!(
                "Too large resource version: {n}, current: {current}"
            )));
        }
        if !cache.wait_for(n, wait).await {
            return Ok(store_latest);
        }
    }
    Ok(cache
        .list(&resource, prefix, None)
        .map_or(store_latest, ListSource::Cache))
}

/// Applies the selectors and the limit to a cached page.
fn select_cached(page: crate::cache::Page, filter: &Filter, limit: usize) -> Selected {
    let everything = filter.is_everything();
    let total = page.items.len();
    let mut items = Vec::new();
    let mut last_key: Option<String> = None;
    let mut more = false;
    let mut taken_at = 0;
    for (i, (key, entry)) in page.items.into_iter().enumerate() {
        if !everything && !entry.object().is_some_and(|o| filter.matches(&o)) {
            continue;
        }
        if limit > 0 && items.len() == limit {
            more = true;
            break;
        }
        items.push(entry);
        last_key = Some(key);
        taken_at = i + 1;
    }
    let remaining = (more && everything).then(|| (total - taken_at) as i64);
    Selected {
        items,
        revision: page.revision,
        continue_after: last_key.filter(|_| more),
        remaining,
    }
}

/// Reads a list from the store, page by page until `limit` objects match.
async fn select_stored(
    ctx: &Ctx<'_>,
    prefix: &str,
    filter: &Filter,
    limit: usize,
    mut revision: Option<Revision>,
    mut start_after: Option<String>,
) -> Result<Selected, ApiError> {
    let everything = filter.is_everything();
    let store = ctx.store();
    let mut items = Vec::new();
    let mut last_key: Option<String> = None;
    let mut remaining = None;
    let more = loop {
        let mut req = RangeRequest::prefix(prefix);
        req.start_after = start_after.clone();
        req.revision = revision;
        req.limit = if limit == 0 {
            0
        } else {
            (limit - items.len()).max(1)
        };
        let started = std::time::Instant::now();
        let page = store.range(req).await;
        ctx.server.inner.metrics.storage("list", started.elapsed());
        let page = page.map_err(|e| ApiError::from_store(e, ctx.r, ""))?;
        revision = Some(page.revision);
        let n = page.kvs.len() as i64;
        for kv in page.kvs {
            last_key = Some(kv.key);
            let entry = crate::cache::Entry::new(kv.value, kv.mod_revision);
            if everything || entry.object().is_some_and(|o| filter.matches(&o)) {
                items.push(entry);
            }
        }
        if !page.more || limit == 0 || items.len() >= limit {
            if page.more && everything {
                remaining = Some(page.count - n);
            }
            break page.more;
        }
        start_after = last_key.clone();
    };
    Ok(Selected {
        items,
        revision: revision.unwrap_or(0),
        continue_after: last_key.filter(|_| more),
        remaining,
    })
}

/// Writes a list (or its Table) from the selected objects.
fn render_list(ctx: &Ctx<'_>, selected: Selected) -> Result<Response<Body>, ApiError> {
    let rv = selected.revision;
    let mut metadata = serde_json::Map::new();
    metadata.insert("resourceVersion".into(), Value::String(rv.to_string()));
    if let Some(k) = &selected.continue_after {
        metadata.insert("continue".into(), Value::String(encode_continue(rv, k)));
    }
    if let Some(n) = selected.remaining {
        metadata.insert("remainingItemCount".into(), Value::from(n));
    }
    let builtin = ctx.r.builtin.is_some();
    let item = |e: &crate::cache::Entry| -> Result<Object, ApiError> {
        let mut obj = match e.object() {
            Some(o) => Object::clone(&o),
            None => object::from_stored(&e.value)?,
        };
        object::set_resource_version(&mut obj, e.mod_revision);
        crate::crd::served_as(ctx.r, &mut obj);
        if builtin && !ctx.table() {
            object::strip_type(&mut obj);
        }
        Ok(obj)
    };
    let converts = crate::crd::converts(ctx.r);
    if ctx.table() || ctx.metadata_only() {
        let items = selected
            .items
            .iter()
            .map(item)
            .collect::<Result<Vec<_>, _>>()?;
        return if ctx.table() {
            json(
                StatusCode::OK,
                &crate::printers::table(ctx.r, &items, metadata),
            )
        } else {
            json(
                StatusCode::OK,
                &crate::negotiate::partial_list(metadata, &items),
            )
        };
    }
    // Items are spliced from their stored bytes, never parsed, when the layout allows (built-in
    // kinds, whose list items carry no type fields).
    let mut body = Vec::with_capacity(
        selected
            .items
            .iter()
            .map(|e| e.value.len() + 24)
            .sum::<usize>()
            + 256,
    );
    body.extend_from_slice(b"{\"kind\":");
    serde_json::to_writer(&mut body, &ctx.r.list_kind).map_err(ApiError::internal)?;
    body.extend_from_slice(b",\"apiVersion\":");
    serde_json::to_writer(&mut body, &ctx.r.api_version()).map_err(ApiError::internal)?;
    body.extend_from_slice(b",\"metadata\":");
    serde_json::to_writer(&mut body, &metadata).map_err(ApiError::internal)?;
    body.extend_from_slice(b",\"items\":[");
    for (i, e) in selected.items.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        let spliced = if builtin {
            object::list_item_bytes(&e.value, e.mod_revision)
        } else if converts {
            None
        } else {
            object::object_bytes(&e.value, e.mod_revision)
        };
        match spliced {
            Some(bytes) => body.extend_from_slice(&bytes),
            None => serde_json::to_writer(&mut body, &item(e)?).map_err(ApiError::internal)?,
        }
    }
    body.extend_from_slice(b"]}");
    Ok(json_bytes(StatusCode::OK, body))
}

// ---------------------------------------------------------------------------------------------
// watch

/// One line of a watch stream.
fn watch_line(kind: &str, obj: &Value) -> Bytes {
    let mut line = serde_json::to_vec(&json!({"type": kind, "object": obj})).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

/// Where a watch's events come from.
enum WatchSource {
    Cache(crate::cache::Subscription),
    Store(bosun_store::Watch),
}

impl WatchSource {
    async fn next(&mut self) -> Option<Arc<crate::cache::CachedEvent>> {
        match self {
            WatchSource::Cache(sub) => sub.next().await,
            WatchSource::Store(w) => match w.next().await? {
                Ok(ev) => Some(Arc::new(crate::cache::CachedEvent::from_store(&ev))),
                Err(e) => {
                    tracing::debug!(error = %e, "store watch ended");
                    None
                }
            },
        }
    }
}

pub(crate) async fn watch(ctx: &Ctx<'_>) -> Result<Response<Body>, ApiError> {
    ctx.check_subresource(&[])?;
    ctx.check_verb("watch")?;
    let filter = Filter::new(ctx)?;
    let prefix = ctx.r.list_prefix(ctx.namespace);
    let resource = ctx.r.key_prefix();
    let store = Arc::clone(ctx.store());
    let cache = ctx.server.cache();
    let requested: Option<Revision> = match ctx.query.resource_version.as_deref() {
        None | Some("0") | Some("") => None,
        Some(rv) => Some(
            rv.parse()
                .map_err(|_| ApiError::bad_request(format!("invalid resource version: {rv}")))?,
        ),
    };
    let send_initial = ctx.query.send_initial_events.unwrap_or(requested.is_none());
    let mut printer = WatchPrinter {
        r: Arc::clone(ctx.r),
        output: ctx.output,
        headers_sent: false,
    };
    // Every event goes out as stored (no selector, JSON objects, no version conversion):
    // splice, do not parse.
    let raw = filter.is_everything()
        && ctx.output == crate::negotiate::Output::default()
        && !crate::crd::converts(ctx.r);
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(256);
    let mut initial = Vec::new();
    let mut source = None;
    let mut from = 0;
    if send_initial {
        // A consistent start when the client asked for one (sendInitialEvents with RV "").
        if ctx
            .query
            .resource_version
            .as_deref()
            .unwrap_or("")
            .is_empty()
        {
            let current = store
                .current_revision()
                .await
                .map_err(|e| ApiError::from_store(e, ctx.r, ""))?;
            cache
                .wait_for(current, std::time::Duration::from_secs(3))
                .await;
        }
        if let Some(sub) = cache.subscribe(&resource, &prefix, crate::cache::Start::Snapshot) {
            for (_, e) in &sub.snapshot {
                if let Some(line) = initial_line(&filter, raw, &mut printer, e)? {
                    initial.push(line);
                }
            }
            from = sub.revision;
            source = Some(WatchSource::Cache(sub));
        } else {
            let page = store
                .range(RangeRequest::prefix(prefix.clone()))
                .await
                .map_err(|e| ApiError::from_store(e, ctx.r, ""))?;
            for kv in page.kvs {
                let e = crate::cache::Entry::new(kv.value, kv.mod_revision);
                if let Some(line) = initial_line(&filter, raw, &mut printer, &e)? {
                    initial.push(line);
                }
            }
            from = page.revision;
        }
        if ctx.query.send_initial_events == Some(true) && ctx.query.allow_watch_bookmarks {
            initial.push(printer.bookmark(from, true));
        }
    } else if let Some(rv) = requested {
        from = rv;
        if let Some(sub) = cache.subscribe(&resource, &prefix, crate::cache::Start::After(rv)) {
            for ev in &sub.backlog {
                if let Some(line) = event_line(&filter, raw, &mut printer, ev) {
                    initial.push(line);
                }
            }
            source = Some(WatchSource::Cache(sub));
        }
    }
    if source.is_none() {
        source = match store.watch(&prefix, from).await {
            Ok(w) => Some(WatchSource::Store(w)),
            Err(bosun_store::Error::Compacted { requested, oldest }) => {
                let status = ApiError::expired(requested, oldest).status();
                initial.push(
                    printer
                        .value_line("ERROR", serde_json::to_value(status).unwrap_or(Value::Null)),
                );
                None
            }
            Err(e) => return Err(ApiError::from_store(e, ctx.r, "")),
        };
    }
    let content_type = if ctx.output.protobuf {
        "application/vnd.kubernetes.protobuf;stream=watch"
    } else {
        "application/json"
    };
    let timeout = ctx
        .query
        .timeout_seconds
        .map(std::time::Duration::from_secs)
        .unwrap_or(std::time::Duration::from_secs(30 * 60));
    let bookmarks = ctx.query.allow_watch_bookmarks;
    let mut shutdown = ctx.server.inner.shutdown.subscribe();
    let registered = WatcherGauge::new(ctx.server.clone(), ctx.r);
    tokio::spawn(async move {
        let _registered = registered;
        for line in initial {
            if tx.send(line).await.is_err() {
                return;
            }
        }
        let Some(mut source) = source else { return };
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
        tick.tick().await;
        let mut last = from;
        loop {
            tokio::select! {
                ev = source.next() => {
                    let Some(ev) = ev else { return };
                    last = ev.revision;
                    if let Some(line) = event_line(&filter, raw, &mut printer, &ev) {
                        if tx.send(line).await.is_err() {
                            return;
                        }
                    }
                }
                _ = tick.tick(), if bookmarks => {
                    if tx.send(printer.bookmark(last, false)).await.is_err() {
                        return;
                    }
                }
                () = &mut deadline => return,
                _ = shutdown.changed() => return,
                () = tx.closed() => return,
            }
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| {
            (
                Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(b)),
                rx,
            )
        })
    });
    let body = http_body_util::BodyExt::boxed(http_body_util::StreamBody::new(stream));
    let mut resp = Response::new(body);
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    Ok(resp)
}

/// The ADDED line of an object a watch starts with, if it matches.
fn initial_line(
    filter: &Filter,
    raw: bool,
    printer: &mut WatchPrinter,
    e: &crate::cache::Entry,
) -> Result<Option<Bytes>, ApiError> {
    if raw {
        if let Some(obj) = object::object_bytes(&e.value, e.mod_revision) {
            let mut line = Vec::with_capacity(obj.len() + 32);
            line.extend_from_slice(b"{\"type\":\"ADDED\",\"object\":");
            line.extend_from_slice(&obj);
            line.extend_from_slice(b"}\n");
            return Ok(Some(Bytes::from(line)));
        }
    }
    let mut obj = match e.object() {
        Some(o) => Object::clone(&o),
        None => object::from_stored(&e.value)?,
    };
    if !filter.matches(&obj) {
        return Ok(None);
    }
    object::set_resource_version(&mut obj, e.mod_revision);
    Ok(Some(printer.line("ADDED", obj)))
}

/// The line a change becomes for a watcher, if any.
fn event_line(
    filter: &Filter,
    raw: bool,
    printer: &mut WatchPrinter,
    ev: &crate::cache::CachedEvent,
) -> Option<Bytes> {
    if raw {
        if let Some(line) = ev.raw_line() {
            return Some(line);
        }
    }
    watch_event(filter, ev).map(|(kind, obj)| printer.line(kind, obj))
}

/// Counts a watcher in `apiserver_registered_watchers` while it lives.
struct WatcherGauge {
    server: ApiServer,
    key: (String, String, String),
}

impl WatcherGauge {
    fn new(server: ApiServer, r: &ApiResource) -> Self {
        let key = (r.group.clone(), r.version.clone(), r.kind.clone());
        server.inner.metrics.watcher(&key.0, &key.1, &key.2, 1);
        WatcherGauge { server, key }
    }
}

impl Drop for WatcherGauge {
    fn drop(&mut self) {
        let (g, v, k) = &self.key;
        self.server.inner.metrics.watcher(g, v, k, -1);
    }
}

/// Renders watch events in the negotiated form: objects as they are, `PartialObjectMetadata`, or
/// one-row Tables (column definitions in the first event only, as upstream sends them); JSON
/// lines, or length-prefixed protobuf frames.
struct WatchPrinter {
    r: Arc<ApiResource>,
    output: crate::negotiate::Output,
    headers_sent: bool,
}

impl WatchPrinter {
    fn line(&mut self, kind: &str, mut obj: Object) -> Bytes {
        crate::crd::served_as(&self.r, &mut obj);
        match self.output.view {
            crate::negotiate::View::Object => self.value_line(kind, Value::Object(obj)),
            crate::negotiate::View::Metadata => {
                let partial = crate::negotiate::partial(&obj);
                self.value_line(kind, partial)
            }
            crate::negotiate::View::Table => {
                let mut metadata = serde_json::Map::new();
                if let Some(rv) = obj.get("metadata").and_then(|m| m.get("resourceVersion")) {
                    metadata.insert("resourceVersion".into(), rv.clone());
                }
                let mut table =
                    crate::printers::table(&self.r, std::slice::from_ref(&obj), metadata);
                if self.headers_sent {
                    table["columnDefinitions"] = json!([]);
                }
                self.headers_sent = true;
                self.value_line(kind, table)
            }
        }
    }

    /// An event of `kind` carrying `v`.
    fn value_line(&self, kind: &str, v: Value) -> Bytes {
        if self.output.protobuf {
            let json_fallback = v.clone();
            if let Some(body) = crate::negotiate::to_protobuf(v) {
                return Bytes::from(bosun_api_types::proto::encode_watch_frame(kind, &body));
            }
            tracing::debug!(kind, "watch event has no protobuf form; sending JSON");
            return watch_line(kind, &json_fallback);
        }
        watch_line(kind, &v)
    }

    /// A BOOKMARK event at `rv` (marking the end of the initial events, when asked).
    fn bookmark(&self, rv: Revision, initial_end: bool) -> Bytes {
        let mut meta = json!({"resourceVersion": rv.to_string()});
        if initial_end {
            meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let obj = if self.output.view == crate::negotiate::View::Metadata {
            json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": meta})
        } else {
            json!({"kind": self.r.kind, "apiVersion": self.r.api_version(), "metadata": meta})
        };
        self.value_line("BOOKMARK", obj)
    }
}

/// The watch event a change becomes for a watcher with `filter`: an object entering the
/// selection is ADDED, one leaving it DELETED.
fn watch_event(filter: &Filter, ev: &crate::cache::CachedEvent) -> Option<(&'static str, Object)> {
    let old = ev.prev.as_ref().and_then(|e| e.object());
    let old_matches = old.as_ref().is_some_and(|o| filter.matches(o));
    match &ev.new {
        Some(new) => {
            let mut new = Object::clone(&*new.object()?);
            let new_matches = filter.matches(&new);
            object::set_resource_version(&mut new, ev.revision);
            let kind = match (old.is_some(), old_matches, new_matches) {
                (false, _, true) => "ADDED",
                (true, true, true) => "MODIFIED",
                (true, false, true) => "ADDED",
                (true, true, false) => "DELETED",
                _ => return None,
            };
            Some((kind, new))
        }
        None => {
            let mut old = Object::clone(&*old.filter(|_| old_matches)?);
            object::set_resource_version(&mut old, ev.revision);
            Some(("DELETED", old))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// create

const GENERATE_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

fn generate_suffix() -> String {
    uuid::Uuid::new_v4()
        .as_bytes()
        .iter()
        .take(5)
        .map(|b| GENERATE_ALPHABET[*b as usize % GENERATE_ALPHABET.len()] as char)
        .collect()
}

/// The name check a resource's validation applies.
fn name_check(r: &ApiResource) -> fn(&str) -> Result<(), Vec<String>> {
    match (r.group.as_str(), r.plural.as_str()) {
        ("", "namespaces" | "services") => validation::is_dns1123_label,
        ("rbac.authorization.k8s.io", _) => path_segment_name,
        _ => validation::is_dns1123_subdomain,
    }
}

fn path_segment_name(name: &str) -> Result<(), Vec<String>> {
    if name == "." || name == ".." {
        return Err(vec![format!("may not be '{name}'")]);
    }
    let mut errs = Vec::new();
    for bad in ["/", "%"] {
        if name.contains(bad) {
            errs.push(format!("may not contain '{bad}'"));
        }
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(errs)
    }
}

/// Upstream's ObjectMeta validation common to all kinds.
fn validate_meta(r: &ApiResource, meta: &ObjectMeta) -> Vec<FieldError> {
    let path = FieldPath::new("metadata");
    let mut errs = Vec::new();
    let name = meta.name.as_deref().unwrap_or("");
    if name.is_empty() {
        errs.push(FieldError::required(
            &path.child("name"),
            "name or generateName is required",
        ));
    } else {
        errs.extend(validation::validate_name(
            name,
            &path.child("name"),
            name_check(r),
        ));
    }
    errs.extend(validation::validate_labels(
        &meta.labels,
        &path.child("labels"),
    ));
    errs.extend(validation::validate_annotations(
        &meta.annotations,
        &path.child("annotations"),
    ));
    errs
}

/// Checks the namespace of a write against the path and that it exists and is not terminating.
async fn check_namespace(ctx: &Ctx<'_>, meta: &mut ObjectMeta) -> Result<(), ApiError> {
    if !ctx.r.namespaced {
        meta.namespace = None;
        return Ok(());
    }
    let Some(ns) = ctx.namespace else {
        return Err(ApiError::method_not_allowed(ctx.r, "create"));
    };
    match meta.namespace.as_deref() {
        None | Some("") => meta.namespace = Some(ns.to_owned()),
        Some(n) if n == ns => {}
        Some(_) => return Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        )),
    }
    let ns_key = format!("/registry/core/namespaces/{ns}");
    let kv = ctx
        .store()
        .get(&ns_key, None)
        .await
        .map_err(|e| ApiError::from_store(e, ctx.r, ns))?;
    let Some(kv) = kv else {
        let table = ctx.server.resources();
        return Err(match table.get("", "v1", "namespaces") {
            Some(nr) => ApiError::not_found(nr, ns),
            None => ApiError::no_route(),
        });
    };
    let nsobj = object::from_stored(&kv.value)?;
    if object::field(&nsobj, "metadata.deletionTimestamp").is_some() {
        return Err(ApiError {
            code: 403,
            reason: "Forbidden",
            message: format!(
                "{} \"{}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                ctx.r.group_resource(),
                meta.name.as_deref().unwrap_or("")
            ),
            details: None,
        });
    }
    Ok(())
}

pub(crate) async fn create(ctx: &Ctx<'_>, body: &[u8]) -> Result<Response<Body>, ApiError> {
    if ctx.subresource.is_some() || ctx.name.is_some() {
        return Err(ApiError::method_not_allowed(ctx.r, "create"));
    }
    ctx.check_verb("create")?;
    let format = ctx.body_format()?;
    let obj = object::decode_body(body, format)?;
    create_obj(ctx, obj, Fields::Track).await
}

async fn create_obj(
    ctx: &Ctx<'_>,
    mut obj: Object,
    fields: Fields,
) -> Result<Response<Body>, ApiError> {
    object::check_type(ctx.r, &mut obj)?;
    ctx.check_fields(&obj)?;
    let mut meta = object::meta(&obj)?;
    if meta
        .resource_version
        .as_deref()
        .is_some_and(|v| !v.is_empty())
    {
        return Err(ApiError::bad_request(
            "resourceVersion should not be set on objects to be created",
        ));
    }
    check_namespace(ctx, &mut meta).await?;
    if meta.name.as_deref().unwrap_or("").is_empty() {
        if let Some(g) = meta.generate_name.as_deref().filter(|g| !g.is_empty()) {
            meta.name = Some(format!("{g}{}", generate_suffix()));
        }
    }
    let name = meta.name.clone().unwrap_or_default();
    let errs = validate_meta(ctx.r, &meta);
    if !errs.is_empty() {
        return Err(ApiError::invalid(ctx.r, &name, &errs));
    }
    meta.uid = Some(uuid::Uuid::new_v4().to_string());
    meta.creation_timestamp = Some(now());
    meta.deletion_timestamp = None;
    meta.deletion_grace_period_seconds = None;
    meta.self_link = None;
    meta.generation = if ctx.r.tracks_generation || ctx.r.builtin.is_none() {
        Some(1)
    } else {
        None
    };
    object::set_meta(&mut obj, &meta)?;
    if ctx.r.group == "batch" && ctx.r.kind == "Job" {
        crate::defaults::job_selector(&mut obj, meta.uid.as_deref().unwrap_or(""), &name);
    }
    if ctx.r.subresources.iter().any(|s| s == "status") && ctx.r.builtin.is_none() {
        // Custom resources with a status subresource ignore status on create.
        obj.shift_remove("status");
    }
    defaults(ctx.r, &mut obj);
    ctx.admit_custom(&name, &mut obj)?;
    ctx.admit_mutate(crate::auth::Operation::Create, &name, None, &mut obj)
        .await?;
    let mut obj = object::normalize(ctx.r, obj)?;
    ctx.validate(&name, &obj)?;
    ctx.admit_validate(crate::auth::Operation::Create, &name, None, &obj)
        .await?;
    let claimed = if is_service(ctx.r) {
        let ranges = &ctx.server.inner.config.service_ranges;
        allocator::allocate(ctx.store(), ranges, &mut obj, None, ctx.query.dry_run).await?
    } else {
        Vec::new()
    };
    if fields == Fields::Track {
        let manager = ctx.manager()?;
        let api_version = ctx.r.api_version();
        managed::track_update(None, &mut obj, &ctx.writer(&manager, &api_version));
    }
    if ctx.query.dry_run {
        return object_response(ctx, StatusCode::CREATED, &obj);
    }
    let value = stored_value(ctx.r, &mut obj)?;
    let started = std::time::Instant::now();
    let created = ctx.store().create(&ctx.key(&name), value).await;
    ctx.server
        .inner
        .metrics
        .storage("create", started.elapsed());
    let rev = match created {
        Ok(rev) => rev,
        Err(e) => {
            allocator::release(ctx.store(), &claimed).await;
            return Err(ApiError::from_store(e, ctx.r, &name));
        }
    };
    object::set_resource_version(&mut obj, rev);
    object_response(ctx, StatusCode::CREATED, &obj)
}

fn is_service(r: &ApiResource) -> bool {
    r.group.is_empty() && r.kind == "Service"
}

/// What deleting an object frees besides its key: a Service's IP and node ports.
async fn after_delete(store: &Arc<dyn bosun_store::Store>, key: &str, value: &[u8]) {
    if key.starts_with("/registry/core/services/") {
        if let Ok(svc) = object::from_stored(value) {
            allocator::release_service(store, &svc, None).await;
        }
    }
}

/// Upstream's defaults for the kind, and the label every namespace carries with its name.
fn defaults(r: &ApiResource, obj: &mut Object) {
    crate::defaults::apply(r, obj);
    if r.group.is_empty() && r.kind == "Namespace" {
        let name = object::field(obj, "metadata.name").unwrap_or_default();
        if let Some(Value::Object(meta)) = obj.get_mut("metadata") {
            let labels = meta.entry("labels").or_insert_with(|| json!({}));
            if let Value::Object(labels) = labels {
                labels.insert("kubernetes.io/metadata.name".into(), Value::String(name));
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// update / patch

/// Everything but metadata and status: a change bumps the generation.
fn spec_part(obj: &Object) -> Object {
    obj.iter()
        .filter(|(k, _)| !matches!(k.as_str(), "metadata" | "status" | "apiVersion" | "kind"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Writes `new` over the current object `old` (stored at `old_rev`), applying the update
/// rules: system metadata kept, status or spec preserved depending on the subresource,
/// generation bumped on a spec change, a no-op write skipped.
/// Whether a write records its managed fields itself or they were computed (by an apply).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Fields {
    Track,
    Computed,
}

async fn write_update_obj(
    ctx: &Ctx<'_>,
    mut new: Object,
    old: &Object,
    old_kv: &KeyValue,
    fields: Fields,
) -> Result<Object, ApiError> {
    let name = ctx.name().to_owned();
    object::check_type(ctx.r, &mut new)?;
    let mut meta = object::meta(&new)?;
    let old_meta = object::meta(old)?;
    if let Some(n) = meta.name.as_deref().filter(|n| !n.is_empty()) {
        if n != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({n}) does not match the name on the URL ({name})"
            )));
        }
    }
    meta.name = Some(name.clone());
    if ctx.r.namespaced {
        match meta.namespace.as_deref() {
            None | Some("") => meta.namespace = ctx.namespace.map(str::to_owned),
            Some(n) if Some(n) == ctx.namespace => {}
            Some(_) => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ))
            }
        }
    } else {
        meta.namespace = None;
    }
    let expected = match meta.resource_version.as_deref().filter(|v| !v.is_empty()) {
        Some(rv) => rv.parse::<Revision>().map_err(|_| {
            ApiError::invalid(
                ctx.r,
                &name,
                &[FieldError::invalid(
                    &FieldPath::new("metadata").child("resourceVersion"),
                    rv,
                    "must be specified for an update",
                )],
            )
        })?,
        None => old_kv.mod_revision,
    };
    if expected != old_kv.mod_revision {
        return Err(ApiError::conflict(ctx.r, &name));
    }
    // System fields are the server's.
    meta.uid = old_meta.uid.clone();
    meta.creation_timestamp = old_meta.creation_timestamp;
    meta.deletion_timestamp = old_meta.deletion_timestamp;
    meta.deletion_grace_period_seconds = old_meta.deletion_grace_period_seconds;
    meta.generation = old_meta.generation;
    meta.self_link = None;
    let has_status = ctx.r.subresources.iter().any(|s| s == "status");
    if let Some(sub @ ("status" | "approval")) = ctx.subresource {
        // Only status changes through /status; through /approval only its conditions, by
        // someone who may approve for the CSR's signer (upstream's CertificateApproval).
        let part: &[&str] = if sub == "approval" {
            approve_for_signer(ctx, old, &name).await?;
            &["status", "conditions"]
        } else {
            &["status"]
        };
        new = with_part_of(old, &new, part);
        let mut m = old_meta.clone();
        m.resource_version = None;
        meta = m;
    } else if has_status {
        match old.get("status") {
            Some(s) => {
                new.insert("status".into(), s.clone());
            }
            None => {
                new.shift_remove("status");
            }
        }
    }
    let errs = validate_meta(ctx.r, &meta);
    if !errs.is_empty() {
        return Err(ApiError::invalid(ctx.r, &name, &errs));
    }
    object::set_meta(&mut new, &meta)?;
    defaults(ctx.r, &mut new);
    ctx.admit_custom(&name, &mut new)?;
    ctx.admit_mutate(crate::auth::Operation::Update, &name, Some(old), &mut new)
        .await?;
    let mut new = object::normalize(ctx.r, new)?;
    ctx.validate(&name, &new)?;
    if ctx.subresource.is_none() {
        let errs = crate::validate::validate_update(ctx.r, &new, old);
        if !errs.is_empty() {
            return Err(ApiError::invalid(ctx.r, &name, &errs));
        }
    }
    ctx.admit_validate(crate::auth::Operation::Update, &name, Some(old), &new)
        .await?;
    let claimed = if is_service(ctx.r) && ctx.subresource.is_none() {
        let ranges = &ctx.server.inner.config.service_ranges;
        allocator::allocate(ctx.store(), ranges, &mut new, Some(old), ctx.query.dry_run).await?
    } else {
        Vec::new()
    };
    if meta.generation.is_some() && spec_part(&new) != spec_part(old) {
        let mut m = object::meta(&new)?;
        m.generation = Some(m.generation.unwrap_or(0) + 1);
        object::set_meta(&mut new, &m)?;
    }
    if fields == Fields::Track {
        let manager = ctx.manager()?;
        let api_version = ctx.r.api_version();
        managed::track_update(Some(old), &mut new, &ctx.writer(&manager, &api_version));
    }
    let value = stored_value(ctx.r, &mut new)?;
    if value == old_kv.value || ctx.query.dry_run {
        // Nothing changed (no write, same resourceVersion), or nothing is to be written.
        allocator::release(ctx.store(), &claimed).await;
        object::set_resource_version(&mut new, old_kv.mod_revision);
        return Ok(new);
    }
    // The last finalizer of an object marked for deletion (grace 0) is gone: the object is
    // deleted instead of written, as upstream's store does it, so no reader ever sees it
    // present without its finalizers.
    let new_meta = object::meta(&new)?;
    if new_meta.finalizers.is_empty()
        && new_meta.deletion_timestamp.is_some()
        && old_meta_grace_zero(old)
        && (!is_namespace(ctx.r) || spec_finalizers(&new).is_empty())
    {
        allocator::release(ctx.store(), &claimed).await;
        let (rev, kv) = ctx
            .store()
            .delete(&ctx.key(&name), Some(expected))
            .await
            .map_err(|e| ApiError::from_store(e, ctx.r, &name))?;
        after_delete(ctx.store(), &kv.key, &kv.value).await;
        object::set_resource_version(&mut new, rev);
        return Ok(new);
    }
    let started = std::time::Instant::now();
    let updated = ctx.store().update(&ctx.key(&name), value, expected).await;
    ctx.server
        .inner
        .metrics
        .storage("update", started.elapsed());
    let rev = match updated {
        Ok(rev) => rev,
        Err(e) => {
            allocator::release(ctx.store(), &claimed).await;
            return Err(ApiError::from_store(e, ctx.r, &name));
        }
    };
    if is_service(ctx.r) {
        allocator::release_service(ctx.store(), old, Some(&new)).await;
    }
    object::set_resource_version(&mut new, rev);
    Ok(new)
}

/// Whether `old` was marked for deletion with no grace period left to run.
fn old_meta_grace_zero(old: &Object) -> bool {
    old.get("metadata")
        .and_then(|m| m.get("deletionGracePeriodSeconds"))
        .and_then(Value::as_i64)
        == Some(0)
}

async fn write_update(
    ctx: &Ctx<'_>,
    new: Object,
    old: &Object,
    old_kv: &KeyValue,
) -> Result<Response<Body>, ApiError> {
    let obj = write_update_obj(ctx, new, old, old_kv, Fields::Track).await?;
    object_response(ctx, StatusCode::OK, &obj)
}

/// `old` with the value at `path` taken from `new` (removed where `new` has none).
fn with_part_of(old: &Object, new: &Object, path: &[&str]) -> Object {
    let mut merged = old.clone();
    let Some((last, parents)) = path.split_last() else {
        return merged;
    };
    let mut from = Some(new);
    let mut into = &mut merged;
    for key in parents {
        from = from.and_then(|o| o.get(*key)).and_then(Value::as_object);
        let slot = into
            .entry(*key)
            .or_insert_with(|| Value::Object(Default::default()));
        if !slot.is_object() {
            *slot = Value::Object(Default::default());
        }
        let Value::Object(next) = slot else {
            return merged;
        };
        into = next;
    }
    match from.and_then(|o| o.get(*last)) {
        Some(v) => {
            into.insert((*last).to_owned(), v.clone());
        }
        None => {
            into.shift_remove(*last);
        }
    }
    merged
}

/// Refuses an approval unless the user may `approve` `signers` for the CSR's signer (by name
/// or as `DOMAIN/*`), as upstream's CertificateApproval admission plugin.
async fn approve_for_signer(ctx: &Ctx<'_>, csr: &Object, name: &str) -> Result<(), ApiError> {
    let signer = csr
        .get("spec")
        .and_then(|s| s.get("signerName"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let authorizer = &ctx.server.inner.pipeline.authorizer;
    let wildcard = signer
        .split_once('/')
        .map(|(domain, _)| format!("{domain}/*"));
    for resource_name in std::iter::once(signer.to_owned()).chain(wildcard) {
        let info = crate::auth::RequestInfo {
            verb: "approve",
            group: "certificates.k8s.io",
            version: "v1",
            resource: "signers",
            subresource: None,
            namespace: None,
            name: Some(&resource_name),
            path: None,
        };
        if authorizer.authorize(ctx.user, &info).await == crate::auth::Decision::Allow {
            return Ok(());
        }
    }
    Err(ApiError {
        code: 403,
        reason: "Forbidden",
        message: format!(
            "{} \"{name}\" is forbidden: user not permitted to approve requests with signerName {signer:?}",
            ctx.r.group_resource()
        ),
        details: None,
    })
}

pub(crate) async fn update(ctx: &Ctx<'_>, body: &[u8]) -> Result<Response<Body>, ApiError> {
    if is_namespace(ctx.r) && ctx.subresource == Some("finalize") {
        return finalize_namespace(ctx, body).await;
    }
    ctx.check_subresource(&["status", "scale", "approval"])?;
    ctx.check_verb("update")?;
    let format = ctx.body_format()?;
    if ctx.subresource == Some("scale") {
        let scale = Value::Object(object::decode_body(body, format)?);
        return json(
            StatusCode::OK,
            &crate::scale::write(ctx, Some(&scale), None).await?,
        );
    }
    let new = object::decode_body(body, format)?;
    ctx.check_fields(&new)?;
    let (old, old_kv) = ctx.current(ctx.name()).await?;
    write_update(ctx, new, &old, &old_kv).await
}

/// Server-side apply: the body is the manager's configuration of the object (YAML or JSON).
async fn server_side_apply(ctx: &Ctx<'_>, body: &[u8]) -> Result<Response<Body>, ApiError> {
    if ctx.subresource == Some("scale") {
        return Err(ApiError::unsupported_media_type(
            "application/apply-patch+yaml",
        ));
    }
    let Some(manager) = ctx.query.field_manager.clone() else {
        return Err(ApiError::invalid_options(
            "fieldManager",
            "",
            "is required for apply patch",
        ));
    };
    let config = match serde_json::from_slice::<Value>(body) {
        Ok(v) => v,
        Err(_) => object::yaml_to_json(body)?,
    };
    let Value::Object(mut config) = config else {
        return Err(ApiError::bad_request(
            "the apply configuration must be an object",
        ));
    };
    object::check_type(ctx.r, &mut config)?;
    let name = ctx.name().to_owned();
    match config
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
    {
        Some(n) if n != name => {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({n}) does not match the name on the URL ({name})"
            )))
        }
        Some(_) => {}
        None => {
            if let Value::Object(meta) = config.entry("metadata").or_insert_with(|| json!({})) {
                meta.insert("name".into(), json!(name));
            }
        }
    }
    ctx.check_fields(&config)?;
    let api_version = ctx.r.api_version();
    let writer = ctx.writer(&manager, &api_version);
    for _ in 0..5 {
        let current = match ctx.current(&name).await {
            Ok(c) => Some(c),
            Err(e) if e.code == 404 => None,
            Err(e) => return Err(e),
        };
        let Some((old, old_kv)) = current else {
            if ctx.subresource.is_some() {
                return Err(ApiError::not_found(ctx.r, &name));
            }
            // Applying to a missing object creates it.
            let applied = managed::apply(None, &config, &writer, ctx.query.force)
                .map_err(|c| apply_conflict(ctx, c))?;
            return create_obj(ctx, applied.object, Fields::Computed).await;
        };
        let applied = managed::apply(Some(&old), &config, &writer, ctx.query.force)
            .map_err(|c| apply_conflict(ctx, c))?;
        let mut new = applied.object;
        object::set_resource_version(&mut new, old_kv.mod_revision);
        match write_update_obj(ctx, new, &old, &old_kv, Fields::Computed).await {
            Err(e) if e.reason == "Conflict" => continue,
            Err(e) => return Err(e),
            Ok(obj) => return object_response(ctx, StatusCode::OK, &obj),
        }
    }
    Err(ApiError::conflict(ctx.r, &name))
}

/// The 409 of an apply that would change other managers' fields, worded as upstream words it.
fn apply_conflict(ctx: &Ctx<'_>, conflicts: Vec<managed::Conflict>) -> ApiError {
    use bosun_api_types::meta::v1::{StatusCause, StatusDetails};
    let n = conflicts.len();
    let message = if n == 1 {
        let c = &conflicts[0];
        format!(
            "Apply failed with 1 conflict: conflict with \"{}\" using {}: {}",
            c.manager, c.api_version, c.path
        )
    } else {
        let mut text = format!("Apply failed with {n} conflicts: ");
        let mut by_manager: Vec<(String, String, Vec<String>)> = Vec::new();
        for c in &conflicts {
            match by_manager
                .iter_mut()
                .find(|(m, v, _)| *m == c.manager && *v == c.api_version)
            {
                Some(entry) => entry.2.push(c.path.clone()),
                None => by_manager.push((
                    c.manager.clone(),
                    c.api_version.clone(),
                    vec![c.path.clone()],
                )),
            }
        }
        let parts: Vec<String> = by_manager
            .iter()
            .map(|(m, v, paths)| {
                if paths.len() == 1 {
                    format!("conflict with \"{m}\" using {v}: {}", paths[0])
                } else {
                    format!(
                        "conflicts with \"{m}\" using {v}:\n- {}",
                        paths.join("\n- ")
                    )
                }
            })
            .collect();
        text.push_str(&parts.join("\n"));
        text
    };
    let causes = conflicts
        .iter()
        .map(|c| StatusCause {
            reason: Some("FieldManagerConflict".into()),
            message: Some(format!(
                "conflict with \"{}\" using {}",
                c.manager, c.api_version
            )),
            field: Some(c.path.clone()),
        })
        .collect();
    ApiError {
        code: 409,
        reason: "Conflict",
        message,
        details: Some(Box::new(StatusDetails {
            name: Some(ctx.name().to_owned()),
            group: Some(ctx.r.group.clone()),
            kind: Some(ctx.r.plural.clone()),
            causes,
            ..Default::default()
        })),
    }
}

/// A patch that cannot be applied: 422 Invalid with the patch library's message.
pub(crate) fn patch_error(e: patch::PatchError) -> ApiError {
    ApiError {
        code: 422,
        reason: "Invalid",
        message: e.message,
        details: None,
    }
}

pub(crate) async fn patch(ctx: &Ctx<'_>, body: &[u8]) -> Result<Response<Body>, ApiError> {
    ctx.check_subresource(&["status", "scale", "approval"])?;
    ctx.check_verb("patch")?;
    let ct = ctx.content_type.unwrap_or("");
    let essence = object::media_type(ct)?;
    let essence = essence.as_str();
    if essence == "application/apply-patch+yaml" {
        return server_side_apply(ctx, body).await;
    }
    // A patch is JSON of one of these kinds (a protobuf body is no patch: 415, not 400).
    let known = [
        "application/merge-patch+json",
        "application/json-patch+json",
        "application/strategic-merge-patch+json",
    ];
    if !known.contains(&essence)
        || (essence == "application/strategic-merge-patch+json" && ctx.r.builtin.is_none())
    {
        return Err(ApiError::unsupported_media_type(ct));
    }
    let patch: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the patch is not valid JSON: {e}")))?;
    if ctx.subresource == Some("scale") {
        return json(
            StatusCode::OK,
            &crate::scale::write(ctx, None, Some((essence, &patch))).await?,
        );
    }
    // Retried on a conflict with a concurrent writer, as upstream does for patches.
    for _ in 0..5 {
        let (old, old_kv) = ctx.current(ctx.name()).await?;
        let mut target = Value::Object(old.clone());
        match essence {
            "application/merge-patch+json" => patch::merge_patch(&mut target, &patch),
            "application/json-patch+json" => {
                target = patch::json_patch(&target, &patch).map_err(patch_error)?;
            }
            "application/strategic-merge-patch+json" => {
                let Some(info) = ctx.r.builtin else {
                    return Err(ApiError::unsupported_media_type(ct));
                };
                target = patch::strategic_merge(&target, &patch, info.schema_name)
                    .map_err(patch_error)?;
            }
            _ => return Err(ApiError::unsupported_media_type(ct)),
        }
        let Value::Object(mut new) = target else {
            return Err(ApiError::bad_request("the patched object is not an object"));
        };
        ctx.check_fields(&new)?;
        // A patch that does not name a resourceVersion applies to the current one.
        if patch
            .get("metadata")
            .and_then(|m| m.get("resourceVersion"))
            .is_none()
        {
            object::set_resource_version(&mut new, old_kv.mod_revision);
        }
        match write_update(ctx, new, &old, &old_kv).await {
            Err(e)
                if e.reason == "Conflict"
                    && patch.pointer("/metadata/resourceVersion").is_none() =>
            {
                continue
            }
            other => return other,
        }
    }
    Err(ApiError::conflict(ctx.r, ctx.name()))
}

// ---------------------------------------------------------------------------------------------
// delete

#[derive(serde::Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct DeleteOptions {
    #[serde(default)]
    preconditions: Option<Preconditions>,
    #[serde(default)]
    dry_run: Vec<String>,
    #[serde(default)]
    grace_period_seconds: Option<i64>,
    #[serde(default)]
    propagation_policy: Option<String>,
    #[serde(default)]
    orphan_dependents: Option<bool>,
}

#[derive(serde::Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Preconditions {
    uid: Option<String>,
    resource_version: Option<String>,
}

fn delete_options(ctx: &Ctx<'_>, body: &[u8]) -> Result<DeleteOptions, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(DeleteOptions::default());
    }
    if ctx.body_format()? == object::Format::Protobuf {
        // Only preconditions matter here; protobuf delete options are rare (kubectl sends JSON).
        return Ok(DeleteOptions::default());
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the DeleteOptions body is invalid: {e}")))
}

pub(crate) async fn delete(ctx: &Ctx<'_>, body: &[u8]) -> Result<Response<Body>, ApiError> {
    ctx.check_subresource(&[])?;
    ctx.check_verb("delete")?;
    let opts = delete_options(ctx, body)?;
    // A write racing the delete (a controller updating status) moves the object on: without a
    // resourceVersion precondition the delete reads it again and retries, as upstream's store.
    let pinned = opts
        .preconditions
        .as_ref()
        .is_some_and(|p| p.resource_version.is_some());
    let mut attempts = 0;
    loop {
        match delete_once(ctx, &opts).await {
            Err(e) if e.code == 409 && !pinned && attempts < 10 => attempts += 1,
            other => return other,
        }
    }
}

async fn delete_once(ctx: &Ctx<'_>, opts: &DeleteOptions) -> Result<Response<Body>, ApiError> {
    let dry_run = ctx.query.dry_run || opts.dry_run.iter().any(|d| d == "All");
    let name = ctx.name().to_owned();
    let (obj, kv) = ctx.current(&name).await?;
    let meta = object::meta(&obj)?;
    if let Some(p) = &opts.preconditions {
        if p.uid.as_ref().is_some_and(|u| Some(u) != meta.uid.as_ref()) {
            return Err(ApiError::precondition_failed(
                ctx.r,
                &name,
                "UID",
                p.uid.as_deref().unwrap_or(""),
                meta.uid.as_deref().unwrap_or(""),
            ));
        }
        let current = kv.mod_revision.to_string();
        if let Some(rv) = p.resource_version.as_deref().filter(|rv| *rv != current) {
            return Err(ApiError::precondition_failed(
                ctx.r,
                &name,
                "ResourceVersion",
                rv,
                &current,
            ));
        }
    }
    ctx.admit_validate(crate::auth::Operation::Delete, &name, Some(&obj), &obj)
        .await?;
    if dry_run {
        return deleted_response(ctx, &obj);
    }
    let is_namespace = ctx.r.group.is_empty() && ctx.r.plural == "namespaces";
    if is_namespace {
        return delete_namespace(ctx, obj, &kv).await;
    }
    match delete_object(ctx, opts, obj, &kv).await? {
        Deletion::Marked(obj) => object_response(ctx, StatusCode::OK, &obj),
        Deletion::Gone(obj) => deleted_response(ctx, &obj),
    }
}

/// What deleting one object did.
enum Deletion {
    /// It stays, marked for deletion (finalizers, or a pod's grace period): as it is now.
    Marked(Object),
    /// It is gone: as it was.
    Gone(Object),
}

/// Deletes `obj` (at `kv`) the way upstream's store does: a pod on a node gets its grace
/// period, finalizers (including the collector's, from the propagation policy) keep the
/// object marked, anything else goes at once. Preconditions and admission are the caller's.
async fn delete_object(
    ctx: &Ctx<'_>,
    opts: &DeleteOptions,
    obj: Object,
    kv: &KeyValue,
) -> Result<Deletion, ApiError> {
    let name = ctx.name().to_owned();
    let meta = object::meta(&obj)?;
    if ctx.r.group.is_empty() && ctx.r.kind == "Pod" {
        let grace = opts.grace_period_seconds.or(ctx.query.grace_period_seconds);
        if let Some(marked) = graceful_pod_delete(ctx, &obj, kv, grace).await? {
            return Ok(Deletion::Marked(marked));
        }
    }
    let before = meta.finalizers.clone();
    let (obj, meta) = gc_finalizers(ctx, opts, obj, meta)?;
    let finalizers_changed = meta.finalizers != before;
    if !meta.finalizers.is_empty() {
        // Finalizers hold the object: mark it deleted and let their owners finish.
        if meta.deletion_timestamp.is_some() {
            if !finalizers_changed {
                return Ok(Deletion::Marked(obj));
            }
            let at = meta.deletion_timestamp.unwrap_or_else(now);
            let grace = meta.deletion_grace_period_seconds.unwrap_or(0);
            return store_deleting(ctx, obj, kv, at, grace)
                .await
                .map(Deletion::Marked);
        }
        return store_deleting(ctx, obj, kv, now(), 0)
            .await
            .map(Deletion::Marked);
    }
    ctx.store()
        .delete(&ctx.key(&name), Some(kv.mod_revision))
        .await
        .map_err(|e| ApiError::from_store(e, ctx.r, &name))?;
    after_delete(ctx.store(), &kv.key, &kv.value).await;
    Ok(Deletion::Gone(obj))
}

/// The garbage collector's finalizers for a delete's propagation policy, as upstream's store
/// sets them: `Orphan` adds `orphan` (the collector removes the dependents' references to the
/// object first), `Foreground` adds `foregroundDeletion` (the collector deletes the dependents
/// first), `Background` removes both. The policy comes from the options, then `orphanDependents`,
/// then the resource's default (`Orphan` for core/v1 ReplicationControllers, else Background).
fn gc_finalizers(
    ctx: &Ctx<'_>,
    opts: &DeleteOptions,
    mut obj: Object,
    mut meta: ObjectMeta,
) -> Result<(Object, ObjectMeta), ApiError> {
    let explicit = opts
        .propagation_policy
        .clone()
        .or_else(|| ctx.query.propagation_policy.clone());
    let policy = match (explicit.as_deref(), opts.orphan_dependents) {
        (Some(p @ ("Orphan" | "Background" | "Foreground")), None) => p,
        (Some(p), None) => {
            return Err(ApiError::invalid_kind(
                "meta.k8s.io",
                "DeleteOptions",
                "",
                &[FieldError::not_supported(
                    &FieldPath::new("propagationPolicy"),
                    p,
                    &["Foreground", "Background", "Orphan"],
                )],
            ))
        }
        (Some(p), Some(_)) => {
            return Err(ApiError::invalid_kind(
                "meta.k8s.io",
                "DeleteOptions",
                "",
                &[FieldError::invalid(
                    &FieldPath::new("propagationPolicy"),
                    p,
                    "orphanDependents and deletionPropagation cannot be both set",
                )],
            ))
        }
        (None, Some(true)) => "Orphan",
        (None, Some(false)) => "Background",
        (None, None) => {
            // Only a delete that names a policy changes the finalizers of an object already
            // being deleted.
            if meta.deletion_timestamp.is_some() {
                return Ok((obj, meta));
            }
            if ctx.r.group.is_empty() && ctx.r.plural == "replicationcontrollers" {
                "Orphan"
            } else {
                "Background"
            }
        }
    };
    let (add, remove) = match policy {
        "Orphan" => (Some(ORPHAN_FINALIZER), FOREGROUND_FINALIZER),
        "Foreground" => (Some(FOREGROUND_FINALIZER), ORPHAN_FINALIZER),
        _ => (None, ""),
    };
    let before = meta.finalizers.clone();
    meta.finalizers.retain(|f| {
        f != remove && (add.is_some() || (f != ORPHAN_FINALIZER && f != FOREGROUND_FINALIZER))
    });
    if let Some(add) = add {
        if !meta.finalizers.iter().any(|f| f == add) {
            meta.finalizers.push(add.to_owned());
        }
    }
    if meta.finalizers != before {
        object::set_meta(&mut obj, &meta)?;
    }
    Ok((obj, meta))
}

/// The finalizer that has the garbage collector orphan an object's dependents.
const ORPHAN_FINALIZER: &str = "orphan";
/// The finalizer that has the garbage collector delete an object's dependents first.
const FOREGROUND_FINALIZER: &str = "foregroundDeletion";

/// What an immediate delete answers: the deleted object for the kinds whose upstream storage
/// returns it (pods, services, service accounts, storage classes), else a Success `Status`
/// naming it.
fn deleted_response(ctx: &Ctx<'_>, obj: &Object) -> Result<Response<Body>, ApiError> {
    let returns_object = matches!(
        (ctx.r.group.as_str(), ctx.r.plural.as_str()),
        ("", "pods" | "services" | "serviceaccounts") | ("storage.k8s.io", "storageclasses")
    );
    if returns_object || ctx.table() || ctx.metadata_only() {
        return object_response(ctx, StatusCode::OK, obj);
    }
    let meta = obj.get("metadata");
    let mut details = serde_json::Map::new();
    details.insert("name".into(), json!(ctx.name()));
    if !ctx.r.group.is_empty() {
        details.insert("group".into(), json!(ctx.r.group));
    }
    details.insert("kind".into(), json!(ctx.r.plural));
    if let Some(uid) = meta.and_then(|m| m.get("uid")) {
        details.insert("uid".into(), uid.clone());
    }
    json(
        StatusCode::OK,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
            "details": details}),
    )
}

/// A pod on a node is deleted gracefully, as upstream does it: it gets a deletionTimestamp
/// `gracePeriodSeconds` ahead (the pod's own `terminationGracePeriodSeconds` by default) and
/// stays until its kubelet has stopped it and deletes it with grace 0. A pod on no node, a
/// finished pod, or grace 0 is deleted at once (`None`: go on deleting).
async fn graceful_pod_delete(
    ctx: &Ctx<'_>,
    obj: &Object,
    kv: &KeyValue,
    grace: Option<i64>,
) -> Result<Option<Object>, ApiError> {
    let on_node = object::field(obj, "spec.nodeName").is_some_and(|n| !n.is_empty());
    let phase = object::field(obj, "status.phase").unwrap_or_default();
    if !on_node || phase == "Succeeded" || phase == "Failed" {
        return Ok(None);
    }
    let default_grace = obj
        .get("spec")
        .and_then(|s| s.get("terminationGracePeriodSeconds"))
        .and_then(Value::as_i64)
        .unwrap_or(30);
    let grace = grace.unwrap_or(default_grace).max(0);
    if grace == 0 {
        return Ok(None);
    }
    let meta = object::meta(obj)?;
    if let Some(current) = meta.deletion_grace_period_seconds {
        if meta.deletion_timestamp.is_some() && current <= grace {
            // Already terminating at least this soon.
            return Ok(Some(obj.clone()));
        }
    }
    let at = Time::from_unix(now().unix_seconds() + grace, 0);
    store_deleting(ctx, obj.clone(), kv, at, grace)
        .await
        .map(Some)
}

/// Writes `obj` with `deletionTimestamp` and `deletionGracePeriodSeconds` set (CAS on `kv`).
async fn store_deleting(
    ctx: &Ctx<'_>,
    mut obj: Object,
    kv: &KeyValue,
    at: Time,
    grace: i64,
) -> Result<Object, ApiError> {
    let mut meta = object::meta(&obj)?;
    meta.deletion_timestamp = Some(at);
    meta.deletion_grace_period_seconds = Some(grace);
    object::set_meta(&mut obj, &meta)?;
    let name = ctx.name().to_owned();
    let rev = ctx
        .store()
        .update(
            &ctx.key(&name),
            stored_value(ctx.r, &mut obj)?,
            kv.mod_revision,
        )
        .await
        .map_err(|e| ApiError::from_store(e, ctx.r, &name))?;
    object::set_resource_version(&mut obj, rev);
    Ok(obj)
}

/// Namespace deletion: the namespace turns Terminating (deletionTimestamp, `status.phase`);
/// the namespace controller deletes its content, then takes `kubernetes` out of
/// `spec.finalizers` through `/finalize`, and the namespace goes once no finalizer of either
/// kind is left. A namespace with no finalizers at all goes at once.
async fn delete_namespace(
    ctx: &Ctx<'_>,
    mut obj: Object,
    kv: &KeyValue,
) -> Result<Response<Body>, ApiError> {
    let name = ctx.name().to_owned();
    let meta = object::meta(&obj)?;
    if meta.finalizers.is_empty() && spec_finalizers(&obj).is_empty() {
        ctx.store()
            .delete(&ctx.key(&name), Some(kv.mod_revision))
            .await
            .map_err(|e| ApiError::from_store(e, ctx.r, &name))?;
        after_delete(ctx.store(), &kv.key, &kv.value).await;
        return object_response(ctx, StatusCode::OK, &obj);
    }
    if meta.deletion_timestamp.is_none() {
        if let Some(Value::Object(status)) = obj.get_mut("status") {
            status.insert("phase".into(), json!("Terminating"));
        } else {
            obj.insert("status".into(), json!({"phase": "Terminating"}));
        }
        obj = store_deleting(ctx, obj, kv, now(), 0).await?;
    }
    object_response(ctx, StatusCode::OK, &obj)
}

fn is_namespace(r: &ApiResource) -> bool {
    r.group.is_empty() && r.plural == "namespaces"
}

/// A namespace's `spec.finalizers`.
fn spec_finalizers(obj: &Object) -> Vec<String> {
    obj.get("spec")
        .and_then(|s| s.get("finalizers"))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// `PUT namespaces/{name}/finalize`: only `spec.finalizers` changes (the namespace
/// controller's last step).
async fn finalize_namespace(ctx: &Ctx<'_>, body: &[u8]) -> Result<Response<Body>, ApiError> {
    let format = ctx.body_format()?;
    let new = object::decode_body(body, format)?;
    let (old, old_kv) = ctx.current(ctx.name()).await?;
    let mut merged = old.clone();
    let finalizers = new
        .get("spec")
        .and_then(|s| s.get("finalizers"))
        .cloned()
        .unwrap_or_else(|| json!([]));
    match merged.get_mut("spec") {
        Some(Value::Object(spec)) => {
            spec.insert("finalizers".into(), finalizers);
        }
        _ => {
            merged.insert("spec".into(), json!({ "finalizers": finalizers }));
        }
    }
    if let Some(rv) = new
        .get("metadata")
        .and_then(|m| m.get("resourceVersion"))
        .cloned()
    {
        if let Some(Value::Object(m)) = merged.get_mut("metadata") {
            m.insert("resourceVersion".into(), rv);
        }
    }
    let written = write_update_obj(ctx, merged, &old, &old_kv, Fields::Track).await?;
    object_response(ctx, StatusCode::OK, &written)
}

pub(crate) async fn delete_collection(
    ctx: &Ctx<'_>,
    body: &[u8],
) -> Result<Response<Body>, ApiError> {
    ctx.check_subresource(&[])?;
    ctx.check_verb("deletecollection")?;
    let opts = delete_options(ctx, body)?;
    let dry_run = ctx.query.dry_run || opts.dry_run.iter().any(|d| d == "All");
    let filter = Filter::new(ctx)?;
    let prefix = ctx.r.list_prefix(ctx.namespace);
    let page = ctx
        .store()
        .range(RangeRequest::prefix(prefix))
        .await
        .map_err(|e| ApiError::from_store(e, ctx.r, ""))?;
    let mut items = Vec::new();
    for kv in page.kvs {
        let obj = object::from_stored(&kv.value)?;
        if !filter.matches(&obj) {
            continue;
        }
        let name = object::meta(&obj)?.name.unwrap_or_default();
        // Each object is deleted as a delete of it alone would (admission, grace periods,
        // finalizers, propagation).
        let item_ctx = Ctx {
            name: Some(&name),
            warnings: std::sync::Mutex::new(Vec::new()),
            ..*ctx
        };
        item_ctx
            .admit_validate(crate::auth::Operation::Delete, &name, Some(&obj), &obj)
            .await?;
        let mut obj = if dry_run {
            obj
        } else {
            match delete_object(&item_ctx, &opts, obj, &kv).await {
                Ok(Deletion::Marked(o) | Deletion::Gone(o)) => o,
                // Changed or gone meanwhile: the next call sees it as it is.
                Err(e) if e.code == 404 || e.code == 409 => continue,
                Err(e) => return Err(e),
            }
        };
        if object::field(&obj, "metadata.resourceVersion").is_none() {
            object::set_resource_version(&mut obj, kv.mod_revision);
        }
        object::strip_type(&mut obj);
        items.push(obj);
    }
    let list = json!({
        "kind": ctx.r.list_kind,
        "apiVersion": ctx.r.api_version(),
        "metadata": {"resourceVersion": page.revision.to_string()},
        "items": items,
    });
    Ok(json_bytes(
        StatusCode::OK,
        serde_json::to_vec(&list).map_err(ApiError::internal)?,
    ))
}

// ---------------------------------------------------------------------------------------------
// bootstrap

pub(crate) async fn bootstrap(server: &ApiServer) -> Result<(), ApiError> {
    let store = server.store();
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        let key = format!("/registry/core/namespaces/{ns}");
        let obj = json!({
            "kind": "Namespace",
            "apiVersion": "v1",
            "metadata": {
                "name": ns,
                "uid": uuid::Uuid::new_v4().to_string(),
                "creationTimestamp": now(),
                "labels": {"kubernetes.io/metadata.name": ns},
            },
            "spec": {"finalizers": ["kubernetes"]},
            "status": {"phase": "Active"},
        });
        let value = Bytes::from(serde_json::to_vec(&obj).map_err(ApiError::internal)?);
        match store.create(&key, value).await {
            Ok(_) | Err(bosun_store::Error::AlreadyExists { .. }) => {}
            Err(e) => return Err(ApiError::internal(e)),
        }
    }
    for (name, value, description) in crate::admission::system_priority_classes() {
        let key = format!("/registry/scheduling.k8s.io/priorityclasses/{name}");
        let obj = json!({
            "kind": "PriorityClass",
            "apiVersion": "scheduling.k8s.io/v1",
            "metadata": {
                "name": name,
                "uid": uuid::Uuid::new_v4().to_string(),
                "creationTimestamp": now(),
            },
            "value": value,
            "description": description,
            "preemptionPolicy": "PreemptLowerPriority",
        });
        let value = Bytes::from(serde_json::to_vec(&obj).map_err(ApiError::internal)?);
        match store.create(&key, value).await {
            Ok(_) | Err(bosun_store::Error::AlreadyExists { .. }) => {}
            Err(e) => return Err(ApiError::internal(e)),
        }
    }
    allocator::repair(store).await?;
    kubernetes_service(server).await
}

/// The `kubernetes` Service in `default` (the first address of the service range, port 443)
/// and its Endpoints pointing at this server.
async fn kubernetes_service(server: &ApiServer) -> Result<(), ApiError> {
    let store = server.store();
    let config = &server.inner.config;
    let ip = config.service_ranges.first_ip().to_string();
    let (host, port) = config
        .advertise_address
        .rsplit_once(':')
        .map(|(h, p)| {
            (
                h.trim_matches(['[', ']']).to_owned(),
                p.parse::<i64>().unwrap_or(6443),
            )
        })
        .unwrap_or_else(|| (config.advertise_address.clone(), 6443));
    let svc = json!({
        "kind": "Service", "apiVersion": "v1",
        "metadata": {"name": "kubernetes", "namespace": "default",
                     "uid": uuid::Uuid::new_v4().to_string(), "creationTimestamp": now(),
                     "labels": {"component": "apiserver", "provider": "kubernetes"}},
        "spec": {"ports": [{"name": "https", "protocol": "TCP", "port": 443, "targetPort": port}],
                 "clusterIP": ip, "clusterIPs": [ip], "type": "ClusterIP", "sessionAffinity": "None",
                 "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack",
                 "internalTrafficPolicy": "Cluster"},
        "status": {"loadBalancer": {}},
    });
    let key = "/registry/core/services/default/kubernetes";
    let value = Bytes::from(serde_json::to_vec(&svc).map_err(ApiError::internal)?);
    match store.create(key, value).await {
        Ok(_) => {
            let ip_key = format!("/registry/bosun/serviceips/{ip}");
            match store
                .create(&ip_key, Bytes::from_static(b"default/kubernetes"))
                .await
            {
                Ok(_) | Err(bosun_store::Error::AlreadyExists { .. }) => {}
                Err(e) => return Err(ApiError::internal(e)),
            }
        }
        Err(bosun_store::Error::AlreadyExists { .. }) => {}
        Err(e) => return Err(ApiError::internal(e)),
    }
    let endpoints = json!({
        "kind": "Endpoints", "apiVersion": "v1",
        "metadata": {"name": "kubernetes", "namespace": "default",
                     "uid": uuid::Uuid::new_v4().to_string(), "creationTimestamp": now(),
                     "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
        "subsets": [{"addresses": [{"ip": host}],
                     "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}],
    });
    let key = "/registry/core/endpoints/default/kubernetes";
    let value = Bytes::from(serde_json::to_vec(&endpoints).map_err(ApiError::internal)?);
    match store.create(key, value).await {
        Ok(_) | Err(bosun_store::Error::AlreadyExists { .. }) => Ok(()),
        Err(e) => Err(ApiError::internal(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(v: Value) -> Object {
        match v {
            Value::Object(m) => m,
            _ => unreachable!("an object"),
        }
    }

    #[test]
    fn only_the_named_part_changes() {
        let old = obj(json!({"spec": {"a": 1}, "status": {"conditions": [1], "certificate": "c"}}));
        let new = obj(json!({"spec": {"a": 2}, "status": {"conditions": [2], "certificate": "x"}}));
        assert_eq!(
            Value::Object(with_part_of(&old, &new, &["status", "conditions"])),
            json!({"spec": {"a": 1}, "status": {"conditions": [2], "certificate": "c"}})
        );
        assert_eq!(
            Value::Object(with_part_of(&old, &new, &["status"])),
            json!({"spec": {"a": 1}, "status": {"conditions": [2], "certificate": "x"}})
        );
        // Absent in the new object: removed.
        let bare = obj(json!({"spec": {"a": 3}}));
        assert_eq!(
            Value::Object(with_part_of(&old, &bare, &["status", "conditions"])),
            json!({"spec": {"a": 1}, "status": {"certificate": "c"}})
        );
        assert_eq!(
            Value::Object(with_part_of(&old, &bare, &["status"])),
            json!({"spec": {"a": 1}})
        );
    }
}
