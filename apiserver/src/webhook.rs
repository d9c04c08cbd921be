//! Dynamic admission: the webhooks of `admissionregistration.k8s.io/v1`
//! `MutatingWebhookConfiguration`s and `ValidatingWebhookConfiguration`s, called with an
//! `admission.k8s.io/v1` `AdmissionReview` as upstream's `MutatingAdmissionWebhook` and
//! `ValidatingAdmissionWebhook` plugins do.
//!
//! A webhook is called when one of its `rules` matches the request (operations, API groups,
//! versions, resources with `*` and `res/sub`, scope) and its `namespaceSelector` and
//! `objectSelector` match. It is reached by `clientConfig.url` or `clientConfig.service`
//! (through a ready endpoint of the Service's EndpointSlices, the certificate checked for
//! `NAME.NAMESPACE.svc`), over HTTPS trusting `caBundle`, within `timeoutSeconds` (default 10).
//! Mutating webhooks may answer a JSONPatch; a denial becomes the client's error (`admission
//! webhook "NAME" denied the request: MESSAGE`, code from the webhook's status, at least 400);
//! a webhook that cannot be called fails the request unless its `failurePolicy` is `Ignore`.
//! `matchConditions` (CEL) are not evaluated: a webhook that has them is called as if they
//! matched.

use crate::auth::{AdmissionPlugin, AdmissionRequest, Operation};
use crate::error::ApiError;
use crate::object::Object;
use bosun_api_types::selector::LabelSelectorExt;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

/// Which configurations a plugin calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Mutating,
    Validating,
}

/// The webhook configurations of one kind, read from the store on first use and kept current
/// by a watch, so a write costs no store read to learn there are none.
#[derive(Clone, Default)]
struct Configs(Arc<tokio::sync::OnceCell<Shared>>);

/// The current configurations, swapped whole on each change.
type Shared = Arc<std::sync::RwLock<Arc<Vec<Object>>>>;

impl Configs {
    async fn load(store: &dyn bosun_store::Store, prefix: &str) -> Arc<Vec<Object>> {
        let Ok(page) = store.range(bosun_store::RangeRequest::prefix(prefix)).await else {
            return Arc::default();
        };
        let mut out: Vec<Object> = page
            .kvs
            .iter()
            .filter_map(|kv| serde_json::from_slice(&kv.value).ok())
            .collect();
        let name = |o: &Object| {
            o.get("metadata")
                .and_then(|m| m["name"].as_str())
                .unwrap_or("")
                .to_owned()
        };
        out.sort_by_key(name);
        Arc::new(out)
    }

    /// The configurations now (shared, not copied: this runs on every write).
    async fn get(&self, server: &crate::ApiServer, kind: Kind) -> Arc<Vec<Object>> {
        let plural = match kind {
            Kind::Mutating => "mutatingwebhookconfigurations",
            Kind::Validating => "validatingwebhookconfigurations",
        };
        let prefix = format!("/registry/admissionregistration.k8s.io/{plural}/");
        let cell = self
            .0
            .get_or_init(|| async {
                let store = Arc::clone(server.store());
                let from = store.current_revision().await.unwrap_or(0);
                let shared = Arc::new(std::sync::RwLock::new(
                    Self::load(store.as_ref(), &prefix).await,
                ));
                let kept = Arc::clone(&shared);
                let prefix = prefix.clone();
                tokio::spawn(async move {
                    let mut from = from;
                    loop {
                        let mut watch = match store.watch(&prefix, from).await {
                            Ok(w) => w,
                            Err(_) => {
                                tokio::time::sleep(Duration::from_millis(200)).await;
                                from = store.current_revision().await.unwrap_or(from);
                                let now = Self::load(store.as_ref(), &prefix).await;
                                *kept.write().unwrap_or_else(|p| p.into_inner()) = now;
                                continue;
                            }
                        };
                        while let Some(Ok(ev)) = watch.next().await {
                            from = from.max(ev.revision());
                            let now = Self::load(store.as_ref(), &prefix).await;
                            *kept.write().unwrap_or_else(|p| p.into_inner()) = now;
                        }
                    }
                });
                shared
            })
            .await;
        cell.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Calls the webhooks of every `MutatingWebhookConfiguration` (in name order) while objects
/// are mutated.
#[derive(Clone, Default)]
pub struct MutatingWebhooks {
    configs: Configs,
}

/// Calls the webhooks of every `ValidatingWebhookConfiguration` once the object is final.
#[derive(Clone, Default)]
pub struct ValidatingWebhooks {
    configs: Configs,
}

#[async_trait::async_trait]
impl AdmissionPlugin for MutatingWebhooks {
    fn name(&self) -> &str {
        "MutatingAdmissionWebhook"
    }

    async fn mutate(&self, req: &AdmissionRequest<'_>, obj: &mut Object) -> Result<(), ApiError> {
        let configs = self.configs.get(req.server, Kind::Mutating).await;
        for hook in webhooks(req, &configs).await {
            if let Some(patched) = call(&hook, req, Some(obj)).await? {
                *obj = patched;
            }
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl AdmissionPlugin for ValidatingWebhooks {
    fn name(&self) -> &str {
        "ValidatingAdmissionWebhook"
    }

    async fn validate(&self, req: &AdmissionRequest<'_>, obj: &Object) -> Result<(), ApiError> {
        let configs = self.configs.get(req.server, Kind::Validating).await;
        let hooks = webhooks(req, &configs).await;
        // Validating webhooks run in parallel upstream; they cannot change anything.
        let calls = hooks.iter().map(|h| call(h, req, Some(obj)));
        for result in futures_util::future::join_all(calls).await {
            result?;
        }
        Ok(())
    }
}

/// The webhooks of `configs` whose rules and namespace selectors match `req`.
async fn webhooks(req: &AdmissionRequest<'_>, configs: &[Object]) -> Vec<Value> {
    // The configurations themselves are never sent to webhooks (upstream's rule: a broken
    // webhook must not lock its own configuration).
    if configs.is_empty() || req.resource.group == "admissionregistration.k8s.io" {
        return Vec::new();
    }
    let mut namespace_labels = None;
    let mut out = Vec::new();
    for config in configs {
        for hook in config
            .get("webhooks")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if !rules_match(hook, req) {
                continue;
            }
            if hook["namespaceSelector"].is_object() {
                if namespace_labels.is_none() {
                    namespace_labels = Some(namespace_labels_of(req).await);
                }
                let Some(labels) = namespace_labels.as_ref().and_then(Option::as_ref) else {
                    // Cluster-scoped objects other than namespaces are not filtered.
                    out.push(hook.clone());
                    continue;
                };
                if !selector_matches(&hook["namespaceSelector"], labels) {
                    continue;
                }
            }
            out.push(hook.clone());
        }
    }
    out
}

fn operation_name(op: Operation) -> &'static str {
    match op {
        Operation::Create => "CREATE",
        Operation::Update => "UPDATE",
        Operation::Delete => "DELETE",
    }
}

fn strings(v: &Value) -> impl Iterator<Item = &str> {
    v.as_array().into_iter().flatten().filter_map(Value::as_str)
}

/// Whether one of the webhook's rules covers the request.
fn rules_match(hook: &Value, req: &AdmissionRequest<'_>) -> bool {
    let op = operation_name(req.operation);
    let r = req.resource;
    let resource = match req.subresource {
        Some(sub) => format!("{}/{sub}", r.plural),
        None => r.plural.clone(),
    };
    strings_rules(hook).any(|rule| {
        let has = |field: &str, want: &str| strings(&rule[field]).any(|v| v == "*" || v == want);
        let resource_ok = strings(&rule["resources"]).any(|v| {
            v == "*" && req.subresource.is_none()
                || v == "*/*"
                || v == resource
                || v.strip_prefix("*/")
                    .is_some_and(|s| Some(s) == req.subresource)
                || v.strip_suffix("/*")
                    .is_some_and(|p| p == r.plural && req.subresource.is_some())
        });
        let scope_ok = match rule["scope"].as_str().unwrap_or("*") {
            "Namespaced" => r.namespaced,
            "Cluster" => !r.namespaced,
            _ => true,
        };
        (has("operations", op) || strings(&rule["operations"]).any(|o| o == "*"))
            && has("apiGroups", &r.group)
            && has("apiVersions", &r.version)
            && resource_ok
            && scope_ok
    })
}

fn strings_rules(hook: &Value) -> impl Iterator<Item = &Value> {
    hook["rules"].as_array().into_iter().flatten()
}

fn labels_of(v: Option<&Value>) -> std::collections::BTreeMap<String, String> {
    v.and_then(|o| o["metadata"]["labels"].as_object())
        .map(|l| {
            l.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

fn selector_matches(selector: &Value, labels: &std::collections::BTreeMap<String, String>) -> bool {
    if !selector.is_object() {
        return true;
    }
    match serde_json::from_value::<bosun_api_types::meta::v1::LabelSelector>(selector.clone())
        .ok()
        .and_then(|s| s.to_selector().ok())
    {
        Some(s) => s.matches(labels),
        None => false,
    }
}

/// The labels of the request's namespace (of the namespace itself, for Namespace objects);
/// `None` for other cluster-scoped objects.
async fn namespace_labels_of(
    req: &AdmissionRequest<'_>,
) -> Option<std::collections::BTreeMap<String, String>> {
    let ns = if req.resource.group.is_empty() && req.resource.plural == "namespaces" {
        req.name
    } else {
        req.namespace?
    };
    let kv = req
        .server
        .store()
        .get(&format!("/registry/core/namespaces/{ns}"), None)
        .await
        .ok()
        .flatten()?;
    let v: Value = serde_json::from_slice(&kv.value).ok()?;
    Some(labels_of(Some(&v)))
}

/// Calls one webhook; for a mutating webhook, the patched object if it answered a patch.
async fn call(
    hook: &Value,
    req: &AdmissionRequest<'_>,
    obj: Option<&Object>,
) -> Result<Option<Object>, ApiError> {
    let name = hook["name"].as_str().unwrap_or("").to_owned();
    // The object selector matches when the object or the old object matches (upstream).
    let selector = &hook["objectSelector"];
    if selector.is_object() {
        let new = labels_of(obj.map(|o| Value::Object(o.clone())).as_ref());
        let old = labels_of(req.old.map(|o| Value::Object(o.clone())).as_ref());
        let matched = selector_matches(selector, &new)
            || (req.old.is_some() && selector_matches(selector, &old));
        if !matched {
            return Ok(None);
        }
    }
    let ignore = hook["failurePolicy"].as_str() == Some("Ignore");
    let timeout = Duration::from_secs(hook["timeoutSeconds"].as_u64().unwrap_or(10).clamp(1, 30));
    let uid = uuid::Uuid::new_v4().to_string();
    let r = req.resource;
    let object = match req.operation {
        Operation::Delete => Value::Null,
        _ => obj.map(|o| Value::Object(o.clone())).unwrap_or(Value::Null),
    };
    let old = match req.operation {
        Operation::Delete => obj.map(|o| Value::Object(o.clone())).unwrap_or(Value::Null),
        _ => req
            .old
            .map(|o| Value::Object(o.clone()))
            .unwrap_or(Value::Null),
    };
    let gvk = json!({"group": r.group, "version": r.version, "kind": r.kind});
    let gvr = json!({"group": r.group, "version": r.version, "resource": r.plural});
    let mut request = json!({
        "uid": uid,
        "kind": gvk,
        "resource": gvr,
        "requestKind": gvk,
        "requestResource": gvr,
        "name": req.name,
        "operation": operation_name(req.operation),
        "userInfo": {"username": req.user.name, "groups": req.user.groups},
        "object": object,
        "oldObject": old,
        "dryRun": req.dry_run,
    });
    if let Some(sub) = req.subresource {
        request["subResource"] = json!(sub);
        request["requestSubResource"] = json!(sub);
    }
    if let Some(ns) = req.namespace {
        request["namespace"] = json!(ns);
    }
    let review = json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": request,
    });
    let answer = match tokio::time::timeout(timeout, post(hook, req, &review)).await {
        Ok(Ok(a)) => a,
        Ok(Err(e)) => return failed(&name, ignore, &e),
        Err(_) => {
            return failed(
                &name,
                ignore,
                &format!("context deadline exceeded (timeout {}s)", timeout.as_secs()),
            )
        }
    };
    let response = &answer["response"];
    if response["uid"].as_str() != Some(uid.as_str()) {
        return failed(
            &name,
            ignore,
            "the response's uid does not match the request's",
        );
    }
    for w in strings(&response["warnings"]) {
        req.warn(w.to_owned());
    }
    if response["allowed"] != true {
        let status = &response["status"];
        let code = status["code"]
            .as_u64()
            .and_then(|c| u16::try_from(c).ok())
            .filter(|c| *c >= 400)
            .unwrap_or(400);
        let message = match status["message"].as_str().filter(|m| !m.is_empty()) {
            Some(m) => format!("admission webhook {name:?} denied the request: {m}"),
            None => format!("admission webhook {name:?} denied the request without explanation"),
        };
        return Err(ApiError {
            code,
            reason: reason_for(code),
            message,
            details: None,
        });
    }
    let Some(patch) = response["patch"].as_str() else {
        return Ok(None);
    };
    if obj.is_none() || req.operation == Operation::Delete {
        return Ok(None);
    }
    use base64::Engine;
    let bytes = match base64::engine::general_purpose::STANDARD.decode(patch) {
        Ok(b) => b,
        Err(e) => return failed(&name, ignore, &format!("the patch is not base64: {e}")),
    };
    let patch: Value = match serde_json::from_slice(&bytes) {
        Ok(p) => p,
        Err(e) => return failed(&name, ignore, &format!("the patch is not JSON: {e}")),
    };
    let current = Value::Object(obj.cloned().unwrap_or_default());
    match bosun_api_types::patch::json_patch(&current, &patch) {
        Ok(Value::Object(patched)) => Ok(Some(patched)),
        Ok(_) => failed(&name, ignore, "the patch did not leave an object"),
        Err(e) => failed(&name, ignore, &format!("the patch does not apply: {e}")),
    }
}

fn reason_for(code: u16) -> &'static str {
    match code {
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        409 => "Conflict",
        422 => "Invalid",
        429 => "TooManyRequests",
        500 => "InternalError",
        _ => "BadRequest",
    }
}

/// A webhook that could not be called: ignored, or the request fails (upstream's wording).
fn failed(name: &str, ignore: bool, why: &str) -> Result<Option<Object>, ApiError> {
    if ignore {
        tracing::warn!(
            webhook = name,
            error = why,
            "webhook failed; ignored (failurePolicy Ignore)"
        );
        return Ok(None);
    }
    Err(ApiError {
        code: 500,
        reason: "InternalError",
        message: format!(
            "Internal error occurred: failed calling webhook {name:?}: failed to call webhook: {why}"
        ),
        details: None,
    })
}

/// Where a webhook is reached: address, TLS server name, path.
async fn target(
    hook: &Value,
    req: &AdmissionRequest<'_>,
) -> Result<(String, String, String), String> {
    let cc = &hook["clientConfig"];
    if let Some(url) = cc["url"].as_str() {
        let uri: http::Uri = url.parse().map_err(|e| format!("url {url:?}: {e}"))?;
        if uri.scheme_str() != Some("https") {
            return Err(format!("url {url:?}: webhooks are called over https"));
        }
        let host = uri.host().ok_or_else(|| format!("url {url:?}: no host"))?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = uri.port_u16().unwrap_or(443);
        let addr = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let path = uri
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_else(|| "/".into());
        return Ok((addr, host, path));
    }
    let svc = &cc["service"];
    let (Some(ns), Some(name)) = (svc["namespace"].as_str(), svc["name"].as_str()) else {
        return Err("clientConfig: neither url nor service".into());
    };
    let port = svc["port"].as_i64().unwrap_or(443);
    let path = svc["path"].as_str().unwrap_or("/").to_owned();
    let server_name = format!("{name}.{ns}.svc");
    let service = req
        .server
        .store()
        .get(&format!("/registry/core/services/{ns}/{name}"), None)
        .await
        .map_err(|e| e.to_string())?
        .and_then(|kv| serde_json::from_slice::<Value>(&kv.value).ok())
        .ok_or_else(|| format!("service \"{name}\" not found"))?;
    let svc_port = service["spec"]["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["port"].as_i64() == Some(port))
        .cloned()
        .ok_or_else(|| format!("service {ns}/{name} has no port {port}"))?;
    let slices = req
        .server
        .list_objects("discovery.k8s.io", "endpointslices", Some(ns))
        .await
        .map_err(|e| e.message)?;
    for slice in slices {
        if slice
            .get("metadata")
            .and_then(|m| m["labels"]["kubernetes.io/service-name"].as_str())
            != Some(name)
        {
            continue;
        }
        let port_name = svc_port["name"].as_str().unwrap_or("");
        let Some(target_port) = slice
            .get("ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|p| p["name"].as_str().unwrap_or("") == port_name)
            .and_then(|p| p["port"].as_i64())
        else {
            continue;
        };
        for ep in slice
            .get("endpoints")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if ep["conditions"]["ready"] == false {
                continue;
            }
            if let Some(ip) = strings(&ep["addresses"]).next() {
                let addr = if ip.contains(':') {
                    format!("[{ip}]:{target_port}")
                } else {
                    format!("{ip}:{target_port}")
                };
                return Ok((addr, server_name, path));
            }
        }
    }
    Err(format!("service {ns}/{name} has no ready endpoints"))
}

/// POSTs the review over HTTPS and reads the answer.
async fn post(hook: &Value, req: &AdmissionRequest<'_>, review: &Value) -> Result<Value, String> {
    let (addr, server_name, path) = target(hook, req).await?;
    let url = format!("https://{addr}{path}");
    let ca = hook["clientConfig"]["caBundle"].as_str().unwrap_or("");
    use base64::Engine;
    let ca = base64::engine::general_purpose::STANDARD
        .decode(ca)
        .map_err(|e| format!("caBundle: {e}"))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut &ca[..]) {
        let cert = cert.map_err(|e| format!("caBundle: {e}"))?;
        roots.add(cert).map_err(|e| format!("caBundle: {e}"))?;
    }
    if roots.is_empty() {
        return Err(format!(
            "Post {url:?}: no caBundle to verify the webhook's certificate with"
        ));
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(server_name.clone())
        .map_err(|e| format!("{server_name}: {e}"))?;
    let tcp = tokio::net::TcpStream::connect(&addr)
        .await
        .map_err(|e| format!("Post {url:?}: dial tcp {addr}: {e}"))?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("Post {url:?}: tls: {e}"))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .map_err(|e| format!("Post {url:?}: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let body = serde_json::to_vec(review).map_err(|e| e.to_string())?;
    let request = http::Request::post(path)
        .header(http::header::HOST, server_name)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::ACCEPT, "application/json")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let resp = sender
        .send_request(request)
        .await
        .map_err(|e| format!("Post {url:?}: {e}"))?;
    let status = resp.status();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("Post {url:?}: {e}"))?
        .to_bytes();
    if !status.is_success() {
        return Err(format!("Post {url:?}: the webhook answered {status}"));
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| format!("the webhook's answer is not an AdmissionReview: {e}"))
}
