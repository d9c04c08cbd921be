//! `Api<K>`: the verbs of one resource, typed by its kind.

use crate::client::Client;
use crate::error::{Error, Result};
use bosun_api_types::meta::v1::{DeleteOptions, Preconditions, Status, WatchEvent};
use bosun_api_types::{List, Resource, Scope};
use bytes::Bytes;
use futures_util::{Stream, StreamExt, TryStreamExt};
use http::{header, Method, Request};
use http_body_util::Full;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::marker::PhantomData;

/// Options of a list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListParams {
    /// `labelSelector`.
    pub label_selector: Option<String>,
    /// `fieldSelector`.
    pub field_selector: Option<String>,
    /// `limit` (a page size; 0 for all).
    pub limit: u32,
    /// `continue` token of the next page.
    pub continue_token: Option<String>,
    /// `resourceVersion` ("0" for any cached version).
    pub resource_version: Option<String>,
}

impl ListParams {
    /// Objects with these labels (`app=web,tier!=db`).
    pub fn labels(mut self, selector: &str) -> Self {
        self.label_selector = Some(selector.to_owned());
        self
    }

    /// Objects with these fields (`spec.nodeName=n1`).
    pub fn fields(mut self, selector: &str) -> Self {
        self.field_selector = Some(selector.to_owned());
        self
    }

    /// Pages of at most `n` objects.
    pub fn limit(mut self, n: u32) -> Self {
        self.limit = n;
        self
    }

    fn query_string(&self) -> String {
        let mut q = form_urlencoded::Serializer::new(String::new());
        self.query(&mut q);
        q.finish()
    }

    fn query(&self, q: &mut form_urlencoded::Serializer<'_, String>) {
        if let Some(s) = &self.label_selector {
            q.append_pair("labelSelector", s);
        }
        if let Some(s) = &self.field_selector {
            q.append_pair("fieldSelector", s);
        }
        if self.limit > 0 {
            q.append_pair("limit", &self.limit.to_string());
        }
        if let Some(c) = &self.continue_token {
            q.append_pair("continue", c);
        }
        if let Some(rv) = &self.resource_version {
            q.append_pair("resourceVersion", rv);
        }
    }
}

/// Options of a watch.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WatchParams {
    /// `labelSelector`.
    pub label_selector: Option<String>,
    /// `fieldSelector`.
    pub field_selector: Option<String>,
    /// `timeoutSeconds`: the server ends the watch after this long.
    pub timeout_seconds: Option<u32>,
    /// `allowWatchBookmarks`.
    pub bookmarks: bool,
    /// `sendInitialEvents` (a streaming list: the current objects first, then a bookmark).
    pub send_initial_events: bool,
}

/// Options of writes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PostParams {
    /// `dryRun=All`.
    pub dry_run: bool,
    /// `fieldManager`.
    pub field_manager: Option<String>,
}

/// A patch and its type.
#[derive(Clone, Debug, PartialEq)]
pub enum Patch<P: Serialize> {
    /// `application/merge-patch+json`.
    Merge(P),
    /// `application/json-patch+json` (a list of operations).
    Json(P),
    /// `application/strategic-merge-patch+json`.
    Strategic(P),
    /// Server-side apply (`application/apply-patch+yaml`); needs a field manager.
    Apply(P),
}

/// Options of a patch.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PatchParams {
    /// `dryRun=All`.
    pub dry_run: bool,
    /// `fieldManager` (required for server-side apply).
    pub field_manager: Option<String>,
    /// `force`: take fields other managers own (server-side apply).
    pub force: bool,
}

impl PatchParams {
    /// Server-side apply as `manager`.
    pub fn apply(manager: &str) -> Self {
        PatchParams {
            field_manager: Some(manager.to_owned()),
            ..Default::default()
        }
    }

    /// Take conflicting fields from other managers.
    pub fn force(mut self) -> Self {
        self.force = true;
        self
    }
}

/// Options of a delete.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeleteParams {
    /// `dryRun=All`.
    pub dry_run: bool,
    /// `gracePeriodSeconds`.
    pub grace_period_seconds: Option<u32>,
    /// `propagationPolicy`: `Orphan`, `Background` or `Foreground`.
    pub propagation_policy: Option<String>,
    /// Delete only if the object still has this uid.
    pub precondition_uid: Option<String>,
    /// Delete only if the object is still at this resourceVersion.
    pub precondition_resource_version: Option<String>,
}

/// What a delete returned, as upstream answers it: the object (marked for deletion when
/// finalizers or a grace period keep it, or as it was for the kinds whose storage returns the
/// deleted object, such as pods) or a Success `Status` naming what is gone.
#[derive(Clone, Debug, PartialEq)]
pub enum Deleted<K> {
    /// The object.
    Object(K),
    /// The server's Success `Status`.
    Status(Box<Status>),
}

/// The verbs of resource `K`, in one namespace or across all.
///
/// ```no_run
/// use bosun_client::{Api, Client, ListParams, PostParams};
/// use bosun_api_types::core::v1::ConfigMap;
/// # async fn run() -> bosun_client::Result<()> {
/// let client = Client::try_default()?;
/// let cms: Api<ConfigMap> = Api::default_namespaced(client);
/// let mut cm = ConfigMap::default();
/// cm.metadata.name = Some("settings".into());
/// cms.create(&PostParams::default(), &cm).await?;
/// for cm in cms.list(&ListParams::default().labels("app=web")).await?.items {
///     println!("{}", cm.metadata.name.unwrap_or_default());
/// }
/// # Ok(()) }
/// ```
pub struct Api<K> {
    client: Client,
    namespace: Option<String>,
    /// Protobuf decoders, when responses are asked for in protobuf ([`Api::protobuf`]).
    proto: Option<ProtoCodec<K>>,
    /// The resource of a kind known at run time (`Api<DynamicObject>`).
    dynamic: Option<std::sync::Arc<crate::discovery::ApiResource>>,
    _kind: PhantomData<fn() -> K>,
}

/// Decodes a protobuf body.
type ProtoDecode<T> = fn(&[u8]) -> std::result::Result<T, bosun_api_types::proto::ProtoError>;

/// How to read protobuf responses of `K`.
struct ProtoCodec<K> {
    encode: fn(&K) -> std::result::Result<Vec<u8>, bosun_api_types::proto::ProtoError>,
    object: ProtoDecode<K>,
    list: ProtoDecode<List<K>>,
}

impl<K> Clone for ProtoCodec<K> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<K> Copy for ProtoCodec<K> {}

impl<K> Api<K>
where
    K: Resource + bosun_api_types::proto::Message + PartialEq,
{
    /// Speaks the Kubernetes protobuf encoding (smaller and faster to decode than JSON;
    /// built-in kinds only): objects sent on create and replace, objects, lists and watch
    /// events received. Patches stay JSON (their formats are JSON).
    pub fn protobuf(mut self) -> Self {
        self.proto = Some(ProtoCodec {
            encode: bosun_api_types::proto::encode_object::<K>,
            object: bosun_api_types::proto::decode_object::<K>,
            list: bosun_api_types::proto::decode_list::<K>,
        });
        self
    }
}

impl<K> Clone for Api<K> {
    fn clone(&self) -> Self {
        Api {
            client: self.client.clone(),
            namespace: self.namespace.clone(),
            proto: self.proto,
            dynamic: self.dynamic.clone(),
            _kind: PhantomData,
        }
    }
}

impl Api<bosun_api_types::DynamicObject> {
    /// Objects of a run-time resource (from [`crate::discovery::Discovery`]) in every
    /// namespace (or the cluster-scoped ones).
    pub fn all_with(client: Client, resource: &crate::discovery::ApiResource) -> Self {
        Api {
            client,
            namespace: None,
            proto: None,
            dynamic: Some(std::sync::Arc::new(resource.clone())),
            _kind: PhantomData,
        }
    }

    /// Objects of a run-time resource in `namespace`.
    pub fn namespaced_with(
        client: Client,
        namespace: &str,
        resource: &crate::discovery::ApiResource,
    ) -> Self {
        Api {
            client,
            namespace: Some(namespace.to_owned()),
            proto: None,
            dynamic: Some(std::sync::Arc::new(resource.clone())),
            _kind: PhantomData,
        }
    }
}

impl<K> std::fmt::Debug for Api<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

fn json_body(v: &impl Serialize) -> Result<Full<Bytes>> {
    serde_json::to_vec(v)
        .map(|b| Full::new(Bytes::from(b)))
        .map_err(|e| Error::Request(e.to_string()))
}

fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(Error::Request(format!("invalid object name {name:?}")));
    }
    Ok(())
}

impl<K: Resource> Api<K> {
    /// Objects in every namespace (or the cluster-scoped ones).
    pub fn all(client: Client) -> Self {
        Api {
            client,
            namespace: None,
            proto: None,
            dynamic: None,
            _kind: PhantomData,
        }
    }

    /// Objects in `namespace`.
    pub fn namespaced(client: Client, namespace: &str) -> Self {
        Api {
            client,
            namespace: Some(namespace.to_owned()),
            proto: None,
            dynamic: None,
            _kind: PhantomData,
        }
    }

    /// Objects in the client's default namespace.
    pub fn default_namespaced(client: Client) -> Self {
        let ns = client.default_namespace().to_owned();
        Self::namespaced(client, &ns)
    }

    /// The collection path, or an object's (and its subresource's).
    fn path(&self, name: Option<&str>, subresource: Option<&str>) -> String {
        let info = K::INFO;
        let (group, version, plural, namespaced) = match &self.dynamic {
            Some(r) => (
                r.group.as_str(),
                r.version.as_str(),
                r.plural.as_str(),
                r.namespaced,
            ),
            None => (
                info.group,
                info.version,
                info.plural,
                info.scope == Scope::Namespaced,
            ),
        };
        let mut p = if group.is_empty() {
            format!("/api/{version}")
        } else {
            format!("/apis/{group}/{version}")
        };
        if let (Some(ns), true) = (&self.namespace, namespaced) {
            p.push_str("/namespaces/");
            p.push_str(ns);
        }
        p.push('/');
        p.push_str(plural);
        if let Some(n) = name {
            p.push('/');
            p.push_str(n);
            if let Some(s) = subresource {
                p.push('/');
                p.push_str(s);
            }
        }
        p
    }

    fn request(
        &self,
        method: Method,
        path: String,
        query: String,
        content_type: Option<&str>,
        body: Full<Bytes>,
    ) -> Result<Request<Full<Bytes>>> {
        let uri = if query.is_empty() {
            path
        } else {
            format!("{path}?{query}")
        };
        let mut b = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::ACCEPT, "application/json");
        if let Some(ct) = content_type {
            b = b.header(header::CONTENT_TYPE, ct);
        }
        b.body(body).map_err(|e| Error::Request(e.to_string()))
    }

    /// The content type and body that send `obj`.
    fn object_body(&self, obj: &K) -> Result<(&'static str, Full<Bytes>)> {
        match self.proto {
            Some(codec) => {
                let bytes = (codec.encode)(obj).map_err(|e| Error::Request(e.to_string()))?;
                Ok((
                    "application/vnd.kubernetes.protobuf",
                    Full::new(Bytes::from(bytes)),
                ))
            }
            None => Ok(("application/json", json_body(obj)?)),
        }
    }

    /// Sends `req` (asking for protobuf when enabled) and decodes the object it returns.
    async fn fetch(&self, req: Request<Full<Bytes>>) -> Result<K> {
        self.fetch_as(req, self.proto.map(|c| c.object)).await
    }

    /// Like [`Api::fetch`], for lists.
    async fn fetch_list(&self, req: Request<Full<Bytes>>) -> Result<List<K>> {
        self.fetch_as(req, self.proto.map(|c| c.list)).await
    }

    /// Decodes the response as JSON, or with `proto` when it is set and the server answered
    /// protobuf.
    async fn fetch_as<T: DeserializeOwned>(
        &self,
        req: Request<Full<Bytes>>,
        proto: Option<ProtoDecode<T>>,
    ) -> Result<T> {
        let Some(decode) = proto else {
            return self.client.request(req).await;
        };
        let (is_proto, body) = self.fetch_bytes(req).await?;
        if is_proto {
            decode(&body).map_err(|e| Error::Decode(e.to_string()))
        } else {
            serde_json::from_slice(&body).map_err(|e| Error::Decode(e.to_string()))
        }
    }

    /// The body of a successful protobuf-preferring request, and whether it is protobuf.
    async fn fetch_bytes(&self, mut req: Request<Full<Bytes>>) -> Result<(bool, Bytes)> {
        use http_body_util::BodyExt;
        req.headers_mut().insert(
            header::ACCEPT,
            http::HeaderValue::from_static("application/vnd.kubernetes.protobuf, application/json"),
        );
        let resp = self.client.send(req).await?;
        if !resp.status().is_success() {
            return Err(crate::client::error_from(resp).await);
        }
        let proto = resp.headers().get(header::CONTENT_TYPE).is_some_and(|ct| {
            ct.as_bytes()
                .starts_with(b"application/vnd.kubernetes.protobuf")
        });
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| Error::Transport(e.to_string()))?
            .to_bytes();
        Ok((proto, body))
    }

    fn write_query(dry_run: bool, field_manager: Option<&str>) -> String {
        let mut q = form_urlencoded::Serializer::new(String::new());
        if dry_run {
            q.append_pair("dryRun", "All");
        }
        if let Some(m) = field_manager {
            q.append_pair("fieldManager", m);
        }
        q.finish()
    }

    /// Reads one object.
    pub async fn get(&self, name: &str) -> Result<K> {
        check_name(name)?;
        let req = self.request(
            Method::GET,
            self.path(Some(name), None),
            String::new(),
            None,
            Full::default(),
        )?;
        self.fetch(req).await
    }

    /// Reads one object, `None` if it does not exist.
    pub async fn get_opt(&self, name: &str) -> Result<Option<K>> {
        match self.get(name).await {
            Ok(k) => Ok(Some(k)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// One page of objects (all of them when `limit` is 0).
    pub async fn list(&self, params: &ListParams) -> Result<List<K>> {
        let query = params.query_string();
        let req = self.request(
            Method::GET,
            self.path(None, None),
            query,
            None,
            Full::default(),
        )?;
        self.fetch_list(req).await
    }

    /// Every object, page by page (`params.limit` per page; 500 if 0), as one stream; all
    /// pages are read at the first page's revision.
    pub fn list_all(&self, params: &ListParams) -> impl Stream<Item = Result<K>> + Send + '_ {
        let mut first = params.clone();
        if first.limit == 0 {
            first.limit = 500;
        }
        futures_util::stream::try_unfold(Some(first), move |next| async move {
            let Some(p) = next else { return Ok(None) };
            let page = self.list(&p).await?;
            let more = page
                .metadata
                .r#continue
                .clone()
                .filter(|c| !c.is_empty())
                .map(|c| ListParams {
                    continue_token: Some(c),
                    ..p.clone()
                });
            Ok(Some((
                futures_util::stream::iter(page.items.into_iter().map(Ok)),
                more,
            )))
        })
        .try_flatten()
    }

    /// Creates an object.
    pub async fn create(&self, params: &PostParams, obj: &K) -> Result<K> {
        let (content_type, body) = self.object_body(obj)?;
        let req = self.request(
            Method::POST,
            self.path(None, None),
            Self::write_query(params.dry_run, params.field_manager.as_deref()),
            Some(content_type),
            body,
        )?;
        self.fetch(req).await
    }

    /// Replaces an object (compare-and-swap on its `resourceVersion`, if set: a stale one is a
    /// 409 Conflict).
    pub async fn replace(&self, name: &str, params: &PostParams, obj: &K) -> Result<K> {
        self.replace_at(name, None, params, obj).await
    }

    /// Replaces the status of an object (`/status`).
    pub async fn replace_status(&self, name: &str, params: &PostParams, obj: &K) -> Result<K> {
        self.replace_at(name, Some("status"), params, obj).await
    }

    /// Replaces an object through a subresource that takes the whole object
    /// (`namespaces/{name}/finalize`, say).
    pub async fn replace_subresource(
        &self,
        subresource: &str,
        name: &str,
        params: &PostParams,
        obj: &K,
    ) -> Result<K> {
        self.replace_at(name, Some(subresource), params, obj).await
    }

    async fn replace_at(
        &self,
        name: &str,
        subresource: Option<&str>,
        params: &PostParams,
        obj: &K,
    ) -> Result<K> {
        check_name(name)?;
        let (content_type, body) = self.object_body(obj)?;
        let req = self.request(
            Method::PUT,
            self.path(Some(name), subresource),
            Self::write_query(params.dry_run, params.field_manager.as_deref()),
            Some(content_type),
            body,
        )?;
        self.fetch(req).await
    }

    /// Patches an object.
    pub async fn patch<P: Serialize>(
        &self,
        name: &str,
        params: &PatchParams,
        patch: &Patch<P>,
    ) -> Result<K> {
        self.patch_at(name, None, params, patch).await
    }

    /// Patches the status of an object (`/status`).
    pub async fn patch_status<P: Serialize>(
        &self,
        name: &str,
        params: &PatchParams,
        patch: &Patch<P>,
    ) -> Result<K> {
        self.patch_at(name, Some("status"), params, patch).await
    }

    async fn patch_at<P: Serialize>(
        &self,
        name: &str,
        subresource: Option<&str>,
        params: &PatchParams,
        patch: &Patch<P>,
    ) -> Result<K> {
        check_name(name)?;
        let (ct, body) = match patch {
            Patch::Merge(p) => ("application/merge-patch+json", p),
            Patch::Json(p) => ("application/json-patch+json", p),
            Patch::Strategic(p) => ("application/strategic-merge-patch+json", p),
            Patch::Apply(p) => ("application/apply-patch+yaml", p),
        };
        if matches!(patch, Patch::Apply(_)) && params.field_manager.is_none() {
            return Err(Error::Request(
                "server-side apply needs a field manager (PatchParams::apply)".into(),
            ));
        }
        let query = {
            let mut q = form_urlencoded::Serializer::new(Self::write_query(
                params.dry_run,
                params.field_manager.as_deref(),
            ));
            if params.force {
                q.append_pair("force", "true");
            }
            q.finish()
        };
        let req = self.request(
            Method::PATCH,
            self.path(Some(name), subresource),
            query,
            Some(ct),
            json_body(body)?,
        )?;
        self.fetch(req).await
    }

    fn delete_body(params: &DeleteParams) -> Result<Full<Bytes>> {
        json_body(&Self::delete_options(params))
    }

    fn delete_options(params: &DeleteParams) -> DeleteOptions {
        let preconditions = (params.precondition_uid.is_some()
            || params.precondition_resource_version.is_some())
        .then(|| Preconditions {
            uid: params.precondition_uid.clone(),
            resource_version: params.precondition_resource_version.clone(),
        });
        DeleteOptions {
            api_version: "v1".into(),
            kind: "DeleteOptions".into(),
            grace_period_seconds: params.grace_period_seconds.map(i64::from),
            propagation_policy: params.propagation_policy.clone(),
            preconditions,
            dry_run: if params.dry_run {
                vec!["All".into()]
            } else {
                Vec::new()
            },
            ..Default::default()
        }
    }

    /// Deletes an object.
    pub async fn delete(&self, name: &str, params: &DeleteParams) -> Result<Deleted<K>> {
        check_name(name)?;
        let req = self.request(
            Method::DELETE,
            self.path(Some(name), None),
            String::new(),
            Some("application/json"),
            Self::delete_body(params)?,
        )?;
        let v: serde_json::Value = self.client.request(req).await?;
        if v.get("kind").and_then(serde_json::Value::as_str) == Some("Status") {
            serde_json::from_value(v)
                .map(|s| Deleted::Status(Box::new(s)))
                .map_err(|e| Error::Decode(e.to_string()))
        } else {
            serde_json::from_value(v)
                .map(Deleted::Object)
                .map_err(|e| Error::Decode(e.to_string()))
        }
    }

    /// Deletes every object the list parameters select.
    pub async fn delete_collection(
        &self,
        delete: &DeleteParams,
        list: &ListParams,
    ) -> Result<serde_json::Value> {
        let query = list.query_string();
        let req = self.request(
            Method::DELETE,
            self.path(None, None),
            query,
            Some("application/json"),
            Self::delete_body(delete)?,
        )?;
        self.client.request(req).await
    }

    /// Reads a subresource of an object (`scale`, …) as `R`.
    pub async fn get_subresource<R: DeserializeOwned>(
        &self,
        subresource: &str,
        name: &str,
    ) -> Result<R> {
        check_name(name)?;
        let req = self.request(
            Method::GET,
            self.path(Some(name), Some(subresource)),
            String::new(),
            None,
            Full::default(),
        )?;
        self.client.request(req).await
    }

    /// POSTs `body` to a subresource of an object (`binding`, `eviction`, …).
    pub async fn create_subresource<B: Serialize, R: DeserializeOwned>(
        &self,
        subresource: &str,
        name: &str,
        params: &PostParams,
        body: &B,
    ) -> Result<R> {
        check_name(name)?;
        let req = self.request(
            Method::POST,
            self.path(Some(name), Some(subresource)),
            Self::write_query(params.dry_run, params.field_manager.as_deref()),
            Some("application/json"),
            json_body(body)?,
        )?;
        self.client.request(req).await
    }

    /// The `scale` subresource (replicas and selector) of a scalable object.
    pub async fn get_scale(&self, name: &str) -> Result<bosun_api_types::autoscaling::v1::Scale> {
        self.get_subresource("scale", name).await
    }

    /// Sets the desired replicas through the `scale` subresource.
    pub async fn scale(
        &self,
        name: &str,
        replicas: i32,
    ) -> Result<bosun_api_types::autoscaling::v1::Scale> {
        check_name(name)?;
        let patch = serde_json::json!({"spec": {"replicas": replicas}});
        let req = self.request(
            Method::PATCH,
            self.path(Some(name), Some("scale")),
            String::new(),
            Some("application/merge-patch+json"),
            json_body(&patch)?,
        )?;
        self.client.request(req).await
    }

    /// Changes after `resource_version` ("0" or "" for the current objects first, as ADDED
    /// events). The stream ends when the server ends the watch; an `ERROR` event carrying a
    /// `Status` (such as 410 Expired) becomes an [`Error::Api`].
    pub async fn watch(
        &self,
        params: &WatchParams,
        resource_version: &str,
    ) -> Result<impl Stream<Item = Result<WatchEvent<K>>> + Send + use<K>> {
        let query = {
            let mut q = form_urlencoded::Serializer::new(String::new());
            q.append_pair("watch", "true");
            if !resource_version.is_empty() {
                q.append_pair("resourceVersion", resource_version);
            }
            if let Some(s) = &params.label_selector {
                q.append_pair("labelSelector", s);
            }
            if let Some(s) = &params.field_selector {
                q.append_pair("fieldSelector", s);
            }
            if let Some(t) = params.timeout_seconds {
                q.append_pair("timeoutSeconds", &t.to_string());
            }
            if params.bookmarks {
                q.append_pair("allowWatchBookmarks", "true");
            }
            if params.send_initial_events {
                q.append_pair("sendInitialEvents", "true");
                q.append_pair("resourceVersionMatch", "NotOlderThan");
            }
            q.finish()
        };
        let req = self.request(
            Method::GET,
            self.path(None, None),
            query,
            None,
            Full::default(),
        )?;
        if let Some(codec) = self.proto {
            return self.watch_protobuf(req, codec).await;
        }
        let lines = self
            .client
            .request_lines::<WatchEvent<serde_json::Value>>(req)
            .await?;
        Ok(lines
            .map(|item| {
                let ev = item?;
                if ev.r#type == "ERROR" {
                    let status: Status = serde_json::from_value(ev.object)
                        .map_err(|e| Error::Decode(e.to_string()))?;
                    return Err(Error::Api(Box::new(status)));
                }
                let object: K = decode(ev.object)?;
                Ok(WatchEvent {
                    r#type: ev.r#type,
                    object,
                })
            })
            .boxed())
    }
}

impl<K: Resource> Api<K> {
    /// A watch in protobuf frames (falls back to JSON lines if the server answers JSON).
    async fn watch_protobuf(
        &self,
        mut req: Request<Full<Bytes>>,
        codec: ProtoCodec<K>,
    ) -> Result<futures_util::stream::BoxStream<'static, Result<WatchEvent<K>>>> {
        use bosun_api_types::proto::{self, Message};
        use http_body_util::BodyExt;
        req.headers_mut().insert(
            header::ACCEPT,
            http::HeaderValue::from_static(
                "application/vnd.kubernetes.protobuf;stream=watch, application/json",
            ),
        );
        let resp = self.client.send(req).await?;
        if !resp.status().is_success() {
            return Err(crate::client::error_from(resp).await);
        }
        let framed = resp.headers().get(header::CONTENT_TYPE).is_some_and(|ct| {
            ct.as_bytes()
                .starts_with(b"application/vnd.kubernetes.protobuf")
        });
        if !framed {
            return Err(Error::Decode(
                "asked for a protobuf watch, got another content type".into(),
            ));
        }
        let body = resp.into_body();
        let stream = futures_util::stream::unfold(
            (body, Vec::<u8>::new(), false),
            move |(mut body, mut buf, mut done)| async move {
                loop {
                    match proto::decode_watch_frame(&buf) {
                        Err(e) => {
                            return Some((
                                Err(Error::Decode(e.to_string())),
                                (body, Vec::new(), true),
                            ))
                        }
                        Ok(Some((kind, object, used))) => {
                            buf.drain(..used);
                            let item = if kind == "ERROR" {
                                proto::decode_unknown(&object)
                                    .and_then(|u| Status::decode(&u.raw))
                                    .map_err(|e| Error::Decode(e.to_string()))
                                    .and_then(|s| Err(Error::Api(Box::new(s))))
                            } else {
                                (codec.object)(&object)
                                    .map(|object| WatchEvent {
                                        r#type: kind,
                                        object,
                                    })
                                    .map_err(|e| Error::Decode(e.to_string()))
                            };
                            return Some((item, (body, buf, done)));
                        }
                        Ok(None) if done => return None,
                        Ok(None) => match body.frame().await {
                            Some(Ok(frame)) => {
                                if let Ok(data) = frame.into_data() {
                                    buf.extend_from_slice(&data);
                                }
                            }
                            Some(Err(e)) => {
                                done = true;
                                return Some((
                                    Err(Error::Transport(e.to_string())),
                                    (body, Vec::new(), done),
                                ));
                            }
                            None => done = true,
                        },
                    }
                }
            },
        );
        Ok(stream.boxed())
    }
}

fn decode<T: DeserializeOwned>(v: serde_json::Value) -> Result<T> {
    serde_json::from_value(v).map_err(|e| Error::Decode(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bosun_api_types::apps::v1::Deployment;
    use bosun_api_types::core::v1::{Namespace, Pod};

    fn client() -> Client {
        crate::mock::Mock::new(|_req| crate::mock::json(200, serde_json::json!({}))).client()
    }

    #[test]
    fn paths_follow_the_group_and_scope() {
        let pods: Api<Pod> = Api::namespaced(client(), "ns1");
        assert_eq!(
            pods.path(Some("p"), Some("status")),
            "/api/v1/namespaces/ns1/pods/p/status"
        );
        let all: Api<Pod> = Api::all(client());
        assert_eq!(all.path(None, None), "/api/v1/pods");
        let deps: Api<Deployment> = Api::namespaced(client(), "ns1");
        assert_eq!(
            deps.path(None, None),
            "/apis/apps/v1/namespaces/ns1/deployments"
        );
        // Cluster-scoped kinds ignore the namespace.
        let nss: Api<Namespace> = Api::namespaced(client(), "ns1");
        assert_eq!(nss.path(Some("x"), None), "/api/v1/namespaces/x");
    }
}

/// Options of a log read (`pods/log`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogParams {
    /// The container (needed when the pod has several).
    pub container: Option<String>,
    /// Keep the stream open for new lines.
    pub follow: bool,
    /// Only the last this many lines.
    pub tail_lines: Option<i64>,
    /// The previous instance of a restarted container.
    pub previous: bool,
    /// Prefix each line with its timestamp.
    pub timestamps: bool,
}

impl Api<bosun_api_types::core::v1::Pod> {
    /// Binds the pod to `node` (what a scheduler does).
    pub async fn bind(&self, name: &str, node: &str) -> Result<Status> {
        let binding = serde_json::json!({"apiVersion": "v1", "kind": "Binding",
            "metadata": {"name": name}, "target": {"kind": "Node", "name": node}});
        self.create_subresource("binding", name, &PostParams::default(), &binding)
            .await
    }

    /// Evicts the pod, honouring PodDisruptionBudgets (a 429 says the budget forbids it now).
    pub async fn evict(&self, name: &str, delete: &DeleteParams) -> Result<Status> {
        let options = Self::delete_options(delete);
        let eviction = serde_json::json!({"apiVersion": "policy/v1", "kind": "Eviction",
            "metadata": {"name": name}, "deleteOptions": options});
        self.create_subresource("eviction", name, &PostParams::default(), &eviction)
            .await
    }

    fn log_request(&self, name: &str, params: &LogParams) -> Result<Request<Full<Bytes>>> {
        check_name(name)?;
        let query = {
            let mut q = form_urlencoded::Serializer::new(String::new());
            if let Some(c) = &params.container {
                q.append_pair("container", c);
            }
            if params.follow {
                q.append_pair("follow", "true");
            }
            if let Some(n) = params.tail_lines {
                q.append_pair("tailLines", &n.to_string());
            }
            if params.previous {
                q.append_pair("previous", "true");
            }
            if params.timestamps {
                q.append_pair("timestamps", "true");
            }
            q.finish()
        };
        self.request(
            Method::GET,
            self.path(Some(name), Some("log")),
            query,
            None,
            Full::default(),
        )
    }

    /// The pod's log as text.
    pub async fn logs(&self, name: &str, params: &LogParams) -> Result<String> {
        use http_body_util::BodyExt;
        let resp = self.client.send(self.log_request(name, params)?).await?;
        if !resp.status().is_success() {
            return Err(crate::client::error_from(resp).await);
        }
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| Error::Transport(e.to_string()))?
            .to_bytes();
        Ok(String::from_utf8_lossy(&body).into_owned())
    }

    /// The pod's log as a stream of chunks (with `follow`, until the container ends).
    pub async fn log_stream(
        &self,
        name: &str,
        params: &LogParams,
    ) -> Result<impl Stream<Item = Result<Bytes>> + Send + use<>> {
        let resp = self.client.send(self.log_request(name, params)?).await?;
        if !resp.status().is_success() {
            return Err(crate::client::error_from(resp).await);
        }
        Ok(
            http_body_util::BodyStream::new(resp.into_body()).filter_map(|f| async move {
                match f {
                    Ok(frame) => frame.into_data().ok().map(Ok),
                    Err(e) => Some(Err(Error::Transport(e.to_string()))),
                }
            }),
        )
    }
}

#[cfg(test)]
mod proto_tests {
    use super::*;
    use bosun_api_types::core::v1::ConfigMap;

    #[tokio::test]
    async fn protobuf_is_asked_for_and_decoded() {
        let mock = crate::mock::Mock::new(|req| {
            assert!(req.headers()["accept"]
                .to_str()
                .unwrap()
                .starts_with("application/vnd.kubernetes.protobuf"));
            let mut cm = ConfigMap::default();
            cm.metadata.name = Some("a".into());
            let body = bosun_api_types::proto::encode_object(&cm).unwrap();
            let mut r = http::Response::new(Bytes::from(body));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/vnd.kubernetes.protobuf"),
            );
            r
        });
        let api: Api<ConfigMap> = Api::default_namespaced(mock.client()).protobuf();
        assert_eq!(
            api.get("a").await.unwrap().metadata.name.as_deref(),
            Some("a")
        );
    }
}
