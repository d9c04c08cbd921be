//! The HTTP server: connection handling (HTTP/1.1 and HTTP/2), routing, content negotiation.

use crate::auth::{Decision, Pipeline, RequestInfo};
use crate::error::ApiError;
use crate::openapi::Documents;
use crate::request::{route, Query, Route, Target};
use crate::resources::{ApiResource, ResourceTable};
use crate::{discovery, rest};
use bosun_store::Store;
use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full, Limited};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::future::Future;
use std::sync::{Arc, RwLock};
use tokio::net::TcpListener;

/// Response bodies.
pub type Body = BoxBody<Bytes, Infallible>;

/// The version the server reports at `/version` (kubectl picks its behaviour from it).
pub const KUBERNETES_VERSION: (&str, &str) = ("1", "32");

/// Server settings.
#[derive(Clone, Debug)]
pub struct Config {
    /// Largest request body accepted (upstream: 3 MiB); larger gets 413.
    pub max_body_bytes: usize,
    /// The address clients reach the server at (reported by `/api`).
    pub advertise_address: String,
    /// Whether containers may run privileged (upstream's `--allow-privileged`; on by default
    /// here, as every real cluster sets it for its node agents).
    pub allow_privileged: bool,
    /// Where Services get cluster IPs and node ports (upstream's
    /// `--service-cluster-ip-range`, `--service-node-port-range`).
    pub service_ranges: crate::allocator::Ranges,
    /// Requests served at once, watches excepted (upstream's `--max-requests-inflight` plus
    /// `--max-mutating-requests-inflight`); more get 429 with `Retry-After`.
    pub max_requests_inflight: usize,
    /// How long a request other than a watch may take before it is answered 504.
    pub request_timeout: std::time::Duration,
    /// Where to append the audit log (`audit.k8s.io/v1` events as JSON lines, Metadata level;
    /// upstream's `--audit-log-path`); none if `None`.
    pub audit_log_path: Option<std::path::PathBuf>,
    /// Which requests the audit log records, and how much of each (upstream's
    /// `--audit-policy-file`); `None` logs every resource request at `Metadata`.
    pub audit_policy: Option<Arc<crate::audit::AuditPolicy>>,
    /// Signs service-account tokens: the TokenRequest API and the tokens of
    /// `kubernetes.io/service-account-token` Secrets are served only with one.
    pub service_account_issuer: Option<Arc<crate::serviceaccount::TokenIssuer>>,
    /// The cluster CA (PEM) put into token Secrets as `ca.crt`.
    pub root_ca_pem: Option<String>,
    /// How the server reaches kubelets (logs, exec, attach, port-forward, node proxy): HTTPS
    /// with this configuration — the kubelets' CA and the server's client certificate
    /// (upstream's `--kubelet-certificate-authority`, `--kubelet-client-certificate`), see
    /// [`crate::pki::Pki::kubelet_client_config`]. Plain HTTP if `None`.
    pub kubelet_tls: Option<Arc<rustls::ClientConfig>>,
    /// Connection limits and timeouts: a cap on open connections, how long headers may take,
    /// how long an idle connection stays.
    pub limits: crate::connection::Limits,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_body_bytes: 3 * 1024 * 1024,
            advertise_address: "127.0.0.1:6443".into(),
            allow_privileged: true,
            service_ranges: crate::allocator::Ranges::default(),
            max_requests_inflight: 600,
            request_timeout: std::time::Duration::from_secs(60),
            audit_log_path: None,
            audit_policy: None,
            service_account_issuer: None,
            root_ca_pem: None,
            kubelet_tls: None,
            limits: crate::connection::Limits::default(),
        }
    }
}

pub(crate) struct Inner {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) table: RwLock<Arc<ResourceTable>>,
    /// The resources the server was built with (CRDs are added to a copy of these).
    pub(crate) base_table: Arc<ResourceTable>,
    pub(crate) config: Config,
    pub(crate) shutdown: tokio::sync::watch::Sender<bool>,
    openapi: std::sync::Mutex<Option<Arc<Documents>>>,
    pub(crate) metrics: crate::metrics::Metrics,
    inflight: Arc<tokio::sync::Semaphore>,
    pub(crate) pipeline: Pipeline,
    cache: Arc<crate::cache::Cache>,
    audit: Option<crate::audit::AuditLog>,
}

/// The Kubernetes API server over a [`Store`]. Cheap to clone.
///
/// ```no_run
/// use bosun_apiserver::{auth::Pipeline, ApiServer, Config, ResourceTable};
/// use bosun_store::memory::MemoryStore;
/// use std::sync::Arc;
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// // The built-in kinds, the default settings, no authentication (loopback only).
/// let server = ApiServer::build(
///     Arc::new(MemoryStore::new()),
///     ResourceTable::builtin(),
///     Config::default(),
///     Pipeline::default(),
/// );
/// server.bootstrap().await?;
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
/// server.serve(listener, std::future::pending()).await?; // or a shutdown signal
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ApiServer {
    pub(crate) inner: Arc<Inner>,
}

impl ApiServer {
    /// A server of every built-in resource over `store`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self::with_resources(store, ResourceTable::builtin(), Config::default())
    }

    /// A server of the resources in `table`.
    pub fn with_resources(store: Arc<dyn Store>, table: ResourceTable, config: Config) -> Self {
        Self::build(store, table, config, Pipeline::default())
    }

    /// A server of the resources in `table` that authenticates, authorizes and admits requests
    /// with `pipeline`.
    pub fn build(
        store: Arc<dyn Store>,
        table: ResourceTable,
        config: Config,
        pipeline: Pipeline,
    ) -> Self {
        let (shutdown, _) = tokio::sync::watch::channel(false);
        let audit = config.audit_log_path.as_deref().and_then(|path| {
            crate::audit::AuditLog::open(path)
                .map_err(|e| {
                    tracing::error!(path = %path.display(), error = %e, "cannot open the audit log; auditing is off");
                })
                .ok()
        });
        ApiServer {
            inner: Arc::new(Inner {
                store,
                base_table: Arc::new(table.clone()),
                table: RwLock::new(Arc::new(table)),
                shutdown,
                openapi: std::sync::Mutex::new(None),
                metrics: crate::metrics::Metrics::default(),
                inflight: Arc::new(tokio::sync::Semaphore::new(config.max_requests_inflight)),
                config,
                pipeline,
                cache: Arc::default(),
                audit,
            }),
        }
    }

    /// The settings the server was built with.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The served resources now.
    pub fn resources(&self) -> Arc<ResourceTable> {
        Arc::clone(&self.inner.table.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// The watch cache, started on first use.
    pub(crate) fn cache(&self) -> &Arc<crate::cache::Cache> {
        let cache = &self.inner.cache;
        cache.start(
            Arc::clone(&self.inner.store),
            self.inner.shutdown.subscribe(),
        );
        cache
    }

    /// The objects of a resource (`group` "" for core, `plural` as in URLs) in one namespace or
    /// all, with their resourceVersions: from the watch cache once it has caught up with the
    /// store, else from the store.
    pub async fn list_objects(
        &self,
        group: &str,
        plural: &str,
        namespace: Option<&str>,
    ) -> Result<Vec<crate::object::Object>, ApiError> {
        let g = if group.is_empty() { "core" } else { group };
        let resource = format!("/registry/{g}/{plural}/");
        let prefix = match namespace {
            Some(ns) => format!("{resource}{ns}/"),
            None => resource.clone(),
        };
        let current = self
            .inner
            .store
            .current_revision()
            .await
            .map_err(ApiError::internal)?;
        let cache = self.cache();
        let entries: Vec<(Bytes, i64)> = match cache
            .wait_for(current, std::time::Duration::from_secs(1))
            .await
            .then(|| cache.list(&resource, &prefix, None))
            .flatten()
        {
            Some(page) => page
                .items
                .into_iter()
                .map(|(_, e)| (e.value, e.mod_revision))
                .collect(),
            None => self
                .inner
                .store
                .range(bosun_store::RangeRequest::prefix(prefix))
                .await
                .map_err(ApiError::internal)?
                .kvs
                .into_iter()
                .map(|kv| (kv.value, kv.mod_revision))
                .collect(),
        };
        entries
            .into_iter()
            .map(|(value, rv)| {
                let mut obj = crate::object::from_stored(&value)?;
                crate::object::set_resource_version(&mut obj, rv);
                Ok(obj)
            })
            .collect()
    }

    /// Replaces the `status` of one stored object (a compare-and-swap on its current revision;
    /// a conflict is returned, not retried).
    pub async fn set_status(
        &self,
        group: &str,
        plural: &str,
        namespace: Option<&str>,
        name: &str,
        status: serde_json::Value,
    ) -> Result<(), ApiError> {
        let g = if group.is_empty() { "core" } else { group };
        let key = match namespace {
            Some(ns) => format!("/registry/{g}/{plural}/{ns}/{name}"),
            None => format!("/registry/{g}/{plural}/{name}"),
        };
        let store = &self.inner.store;
        let Some(kv) = store.get(&key, None).await.map_err(ApiError::internal)? else {
            return Err(ApiError::internal(format!("{key} does not exist")));
        };
        let mut obj = crate::object::from_stored(&kv.value)?;
        obj.insert("status".into(), status);
        let value = crate::object::to_stored(&mut obj)?;
        store
            .update(&key, value, kv.mod_revision)
            .await
            .map_err(ApiError::internal)?;
        Ok(())
    }

    /// The store behind the server.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// Creates the system objects a fresh cluster has (namespaces `default`, `kube-system`,
    /// `kube-public`, `kube-node-lease`, the system priority classes, the bootstrap RBAC
    /// roles and bindings of [`crate::bootstrap_policy`]) if missing.
    /// Also starts serving the CustomResourceDefinitions in the store, and keeps doing so as
    /// they change.
    pub async fn bootstrap(&self) -> Result<(), ApiError> {
        rest::bootstrap(self).await?;
        crate::bootstrap_policy::ensure(self.store().as_ref())
            .await
            .map_err(ApiError::internal)?;
        self.cache();
        let rev = self
            .inner
            .store
            .current_revision()
            .await
            .map_err(ApiError::internal)?;
        crate::crd::rebuild(self).await?;
        crate::crd::spawn_controller(self.clone(), rev);
        Ok(())
    }

    /// Accepts plain-HTTP connections on `listener` until `shutdown` resolves, then ends open
    /// watches and waits for in-flight requests.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> std::io::Result<()> {
        self.serve_with(listener, None, shutdown).await
    }

    /// As [`ApiServer::serve`], over TLS with `tls` (see [`crate::pki::server_config`]): the
    /// client certificate a handshake verified is handed to the authenticators.
    pub async fn serve_tls(
        self,
        listener: TcpListener,
        tls: Arc<rustls::ServerConfig>,
        shutdown: impl Future<Output = ()>,
    ) -> std::io::Result<()> {
        self.serve_with(
            listener,
            Some(tokio_rustls::TlsAcceptor::from(tls)),
            shutdown,
        )
        .await
    }

    async fn serve_with(
        self,
        listener: TcpListener,
        tls: Option<tokio_rustls::TlsAcceptor>,
        shutdown: impl Future<Output = ()>,
    ) -> std::io::Result<()> {
        use crate::connection::{Activity, Backoff, LogLimiter, Tracked};
        let limits = self.inner.config.limits.clone();
        let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout);
        // Upstream's HTTP/2 settings: 1,000 streams a connection (kube-apiserver's recommended
        // options), 256 KiB per stream and frame; what one connection may have in flight
        // unread is bounded at 16 MiB (upstream allows the streams' sum, 250 MiB).
        builder
            .http2()
            .timer(hyper_util::rt::TokioTimer::new())
            .max_concurrent_streams(1000)
            .initial_stream_window_size(256 * 1024)
            .max_frame_size(256 * 1024)
            .initial_connection_window_size(16 * 1024 * 1024);
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        let connections = Arc::new(tokio::sync::Semaphore::new(limits.connection_cap()));
        let mut backoff = Backoff::default();
        let accept_errors = LogLimiter::new(std::time::Duration::from_secs(10));
        let refused = LogLimiter::new(std::time::Duration::from_secs(10));
        tokio::pin!(shutdown);
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = &mut shutdown => break,
            };
            let (stream, peer) = match accepted {
                Ok(a) => {
                    backoff.succeeded();
                    a
                }
                Err(e) => {
                    // Out of descriptors (or memory): wait before trying again rather than
                    // spin, and say so once in a while rather than per attempt.
                    if let Some(held) = accept_errors.allow() {
                        tracing::warn!(error = %e, repeated = held, "accept failed; backing off");
                    }
                    let wait = backoff.failed();
                    tokio::select! {
                        () = tokio::time::sleep(wait) => continue,
                        () = &mut shutdown => break,
                    }
                }
            };
            let Ok(permit) = Arc::clone(&connections).try_acquire_owned() else {
                if let Some(held) = refused.allow() {
                    tracing::warn!(%peer, limit = limits.connection_cap(), repeated = held, "too many connections; refusing");
                }
                drop(stream);
                continue;
            };
            let _ = stream.set_nodelay(true);
            let server = self.clone();
            let activity = Activity::new();
            let service = {
                let activity = Arc::clone(&activity);
                move |certs: ClientCertificates| {
                    let activity = Arc::clone(&activity);
                    hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                        let guard = activity.request();
                        let (parts, body) = req.into_parts();
                        let (body, read) = crate::connection::Watched::new(body);
                        let mut req = Request::from_parts(parts, body);
                        req.extensions_mut().insert(PeerAddr(peer));
                        req.extensions_mut().insert(certs.clone());
                        let http1 = req.version() < http::Version::HTTP_2;
                        let server = server.clone();
                        async move {
                            let mut resp = server.handle(req).await;
                            // Answered before the body was read: the rest of it must not be
                            // taken for the next request, so the connection ends here.
                            if http1
                                && !read.load(std::sync::atomic::Ordering::Relaxed)
                                && resp.status() != StatusCode::SWITCHING_PROTOCOLS
                            {
                                resp.headers_mut()
                                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
                            }
                            Ok::<_, Infallible>(
                                resp.map(|b| {
                                    BoxBody::new(crate::connection::Guarded::new(b, guard))
                                }),
                            )
                        }
                    })
                }
            };
            let builder = builder.clone();
            let watcher = graceful.watcher();
            let tls = tls.clone();
            let idle_timeout = limits.idle_timeout;
            let handshake_timeout = limits.tls_handshake_timeout;
            tokio::spawn(async move {
                let _permit = permit;
                let stream = Tracked::new(stream, Arc::clone(&activity));
                let served = match tls {
                    None => {
                        let conn = builder.serve_connection_with_upgrades(
                            TokioIo::new(stream),
                            service(ClientCertificates::default()),
                        );
                        tokio::select! {
                            r = watcher.watch(conn.into_owned()) => r,
                            () = activity.idle(idle_timeout) => Ok(()),
                        }
                    }
                    Some(acceptor) => {
                        // The handshake runs on the connection's own task, bounded, so a slow
                        // client holds up nobody.
                        let stream =
                            match tokio::time::timeout(handshake_timeout, acceptor.accept(stream))
                                .await
                            {
                                Ok(Ok(s)) => s,
                                Ok(Err(e)) => {
                                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                                    return;
                                }
                                Err(_) => {
                                    tracing::debug!(%peer, "TLS handshake timed out");
                                    return;
                                }
                            };
                        let certs = ClientCertificates(Arc::new(
                            stream
                                .get_ref()
                                .1
                                .peer_certificates()
                                .map(|c| c.iter().map(|c| c.clone().into_owned()).collect())
                                .unwrap_or_default(),
                        ));
                        let conn = builder
                            .serve_connection_with_upgrades(TokioIo::new(stream), service(certs));
                        tokio::select! {
                            r = watcher.watch(conn.into_owned()) => r,
                            () = activity.idle(idle_timeout) => Ok(()),
                        }
                    }
                };
                if let Err(e) = served {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
            });
        }
        let _ = self.inner.shutdown.send(true);
        tokio::select! {
            () = graceful.shutdown() => {}
            () = tokio::time::sleep(std::time::Duration::from_secs(10)) => {
                tracing::warn!("connections still open after 10s; closing");
            }
        }
        Ok(())
    }

    /// Who sent `req`, by the pipeline's authenticator (401 when nobody), and who it acts as:
    /// the user its `Impersonate-*` headers name, if it may impersonate them. Returns the user
    /// to act as and, when impersonating, the sender.
    async fn authenticate<B>(
        &self,
        req: &Request<B>,
    ) -> Result<(crate::auth::UserInfo, Option<crate::auth::UserInfo>), ApiError> {
        let certs = req.extensions().get::<ClientCertificates>();
        let creds = crate::auth::Credentials {
            headers: req.headers(),
            client_certificates: certs.map(|c| c.0.as_slice()).unwrap_or_default(),
        };
        let pipeline = &self.inner.pipeline;
        let user = pipeline
            .authenticator
            .authenticate(&creds)
            .await?
            .ok_or_else(ApiError::unauthorized)?;
        crate::impersonation::impersonate(pipeline.authorizer.as_ref(), user, req.headers()).await
    }

    /// Authenticates and authorizes a request outside the resource API (discovery, OpenAPI,
    /// `/healthz`, `/metrics`, unknown paths) by its path and method.
    async fn admit_non_resource<B>(&self, req: &Request<B>) -> Result<(), ApiError> {
        let (user, _) = self.authenticate(req).await?;
        let verb = req.method().as_str().to_ascii_lowercase();
        let path = req.uri().path();
        let info = RequestInfo::non_resource(&verb, path);
        match self.inner.pipeline.authorizer.authorize(&user, &info).await {
            Decision::Allow => Ok(()),
            Decision::Deny(reason) => Err(ApiError::forbidden(&user, &info, &reason)),
            Decision::NoOpinion => Err(ApiError::forbidden(&user, &info, "")),
        }
    }

    /// Answers one request.
    pub async fn handle<B>(&self, req: Request<B>) -> Response<Body>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        use tracing::Instrument;
        let mut req = req;
        let method = req.method().clone();
        let path = req.uri().path().to_owned();
        let span = tracing::debug_span!("request", %method, %path);
        let started = std::time::Instant::now();
        let labels = self.request_labels(&req);
        let watch = labels.as_ref().is_some_and(|l| l.verb == "WATCH");
        // Watches and the connect subresources (logs, exec, …) may run for as long as the
        // client wants: no in-flight slot, no timeout.
        let long_running = watch
            || labels.as_ref().is_some_and(|l| {
                matches!(
                    l.subresource.as_str(),
                    "log" | "exec" | "attach" | "portforward" | "proxy"
                )
            });
        // A watch over WebSocket: answer as usual, then move the stream onto the connection.
        let websocket = websocket_key(&req)
            .filter(|_| watch)
            .map(|key| (key, hyper::upgrade::on(&mut req)));
        let resp = if long_running {
            self.dispatch(req).instrument(span.clone()).await
        } else {
            match Arc::clone(&self.inner.inflight).try_acquire_owned() {
                Err(_) => Err(ApiError::too_many_requests()),
                Ok(_permit) => {
                    let m = &self.inner.metrics;
                    m.inflight
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let r = tokio::time::timeout(
                        self.inner.config.request_timeout,
                        self.dispatch(req).instrument(span.clone()),
                    )
                    .await
                    .unwrap_or_else(|_| {
                        Err(ApiError::timeout(
                            "Timeout: request did not complete within the allowed duration",
                        ))
                    });
                    m.inflight
                        .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                    r
                }
            }
        };
        let mut resp = match resp {
            Ok(r) => r,
            Err(e) => error_response(&e),
        };
        if let Some((key, upgrade)) = websocket {
            if resp.status() == StatusCode::OK {
                resp = websocket_watch(&key, resp, upgrade);
            }
        }
        if resp.status() == StatusCode::TOO_MANY_REQUESTS {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if let Some(l) = labels {
            self.inner
                .metrics
                .request(l, resp.status().as_u16(), started.elapsed());
        }
        span.in_scope(|| tracing::debug!(status = resp.status().as_u16(), "answered"));
        resp
    }

    /// The metric labels of a resource request (`None` for discovery and other paths).
    fn request_labels<B>(&self, req: &Request<B>) -> Option<crate::metrics::RequestLabels> {
        let table = self.resources();
        let Some(Route::Resource(t)) = route(req.uri().path(), &table) else {
            return None;
        };
        let query = req.uri().query().unwrap_or("");
        let watch = query
            .split('&')
            .any(|kv| kv == "watch=true" || kv == "watch=1");
        let apply = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("application/apply-patch"));
        let verb = match (req.method().as_str(), t.name.is_some()) {
            ("GET", true) => "GET",
            ("GET", false) if watch => "WATCH",
            ("GET", false) => "LIST",
            ("POST", _) => "POST",
            ("PUT", _) => "PUT",
            ("PATCH", _) if apply => "APPLY",
            ("PATCH", _) => "PATCH",
            ("DELETE", true) => "DELETE",
            ("DELETE", false) => "DELETECOLLECTION",
            _ => "OTHER",
        };
        let scope = if t.name.is_some() {
            "resource"
        } else if t.namespace.is_some() {
            "namespace"
        } else {
            "cluster"
        };
        Some(crate::metrics::RequestLabels {
            verb,
            group: t.group,
            version: t.version,
            resource: t.plural,
            subresource: t.subresource.unwrap_or_default(),
            scope,
        })
    }

    async fn dispatch<B>(&self, req: Request<B>) -> Result<Response<Body>, ApiError>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let table = self.resources();
        let route = route(req.uri().path(), &table);
        if !matches!(route, Some(Route::Resource(_))) {
            self.admit_non_resource(&req).await?;
        }
        let Some(route) = route else {
            return Err(ApiError::no_route());
        };
        let accept = header_str(&req, header::ACCEPT).to_owned();
        let is_get = req.method() == Method::GET;
        // Discovery, /version and OpenAPI answer JSON (and protobuf where asked): an Accept
        // that allows neither is 406, as upstream's router answers.
        let documents = matches!(
            route,
            Route::Version
                | Route::CoreGroup
                | Route::Groups
                | Route::Group(_)
                | Route::GroupVersion(..)
                | Route::OpenApiV2
                | Route::OpenApiV3Index
                | Route::OpenApiV3(_)
        );
        if documents && !crate::negotiate::accepts_json_or_protobuf(&accept) {
            return Err(ApiError::not_acceptable(&accept));
        }
        match route {
            Route::Version if is_get => json(StatusCode::OK, &version_info()),
            Route::Health if is_get => Ok(text(StatusCode::OK, "ok")),
            Route::Metrics if is_get => {
                let mut r = Response::new(full(self.inner.metrics.render()));
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                Ok(r)
            }
            Route::CoreGroup if is_get => match aggregated_version(&accept) {
                Some(v) => aggregated(
                    &discovery::aggregated(&table, true, &format!("apidiscovery.k8s.io/{v}")),
                    v,
                ),
                None => json(
                    StatusCode::OK,
                    &discovery::api_versions(&self.inner.config.advertise_address),
                ),
            },
            Route::Groups if is_get => match aggregated_version(&accept) {
                Some(v) => aggregated(
                    &discovery::aggregated(&table, false, &format!("apidiscovery.k8s.io/{v}")),
                    v,
                ),
                None => json(StatusCode::OK, &discovery::api_group_list(&table)),
            },
            Route::Group(g) if is_get => match discovery::api_group(&table, &g) {
                Some(doc) => json(StatusCode::OK, &doc),
                None => Err(ApiError::no_route()),
            },
            Route::GroupVersion(g, v) if is_get => {
                match discovery::api_resource_list(&table, &g, &v) {
                    Some(doc) => json(StatusCode::OK, &doc),
                    None => Err(ApiError::no_route()),
                }
            }
            Route::OpenApiV2 if is_get => {
                let docs = self.openapi_documents(&table);
                let proto = accept.contains("protobuf");
                // Rendering is CPU work of tens of milliseconds the first time: off the reactor.
                let body = blocking(move || {
                    if proto {
                        docs.v2_proto()
                    } else {
                        docs.v2_json()
                    }
                })
                .await?;
                Ok(bytes_response(
                    body,
                    if proto {
                        "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"
                    } else {
                        "application/json"
                    },
                ))
            }
            Route::OpenApiV3Index if is_get => {
                let docs = self.openapi_documents(&table);
                json(StatusCode::OK, &blocking(move || docs.v3_index()).await?)
            }
            Route::OpenApiV3(path) if is_get => {
                let docs = self.openapi_documents(&table);
                match blocking(move || docs.v3(&path)).await? {
                    Some((doc, hash)) => {
                        let mut r = bytes_response(doc, "application/json");
                        if let Ok(etag) = HeaderValue::from_str(&format!("\"{hash}\"")) {
                            r.headers_mut().insert(header::ETAG, etag);
                        }
                        Ok(r)
                    }
                    None => Err(ApiError::no_route()),
                }
            }
            Route::Resource(target) => {
                let Some(resource) = table
                    .get(&target.group, &target.version, &target.plural)
                    .cloned()
                else {
                    return Err(ApiError::no_route());
                };
                self.resource(req, resource, target, &accept).await
            }
            _ => Err(ApiError {
                code: 405,
                reason: "MethodNotAllowed",
                message: "the server does not allow this method on the requested resource".into(),
                details: None,
            }),
        }
    }

    /// The OpenAPI documents of `table`, rendered once per table.
    fn openapi_documents(&self, table: &Arc<ResourceTable>) -> Arc<Documents> {
        let mut cached = self.inner.openapi.lock().unwrap_or_else(|p| p.into_inner());
        match cached.as_ref() {
            Some(d) if d.describes(table) => Arc::clone(d),
            _ => {
                let d = Arc::new(Documents::new(Arc::clone(table)));
                *cached = Some(Arc::clone(&d));
                d
            }
        }
    }

    /// Serves a resource request and records it in the audit log (denied ones too).
    async fn resource<B>(
        &self,
        req: Request<B>,
        r: Arc<ApiResource>,
        target: Target,
        accept: &str,
    ) -> Result<Response<Body>, ApiError>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let received = bosun_api_types::MicroTime::now();
        let uri = req.uri().to_string();
        let user_agent = header_str(&req, header::USER_AGENT).to_owned();
        let source_ip = req.extensions().get::<PeerAddr>().map(|p| p.0.ip());
        let mut who = Audited::default();
        let result = self
            .resource_inner(req, &r, &target, accept, &mut who)
            .await;
        let code = match &result {
            Ok(resp) => resp.status().as_u16(),
            Err(e) => e.code,
        };
        let anonymous = crate::auth::UserInfo {
            name: "system:anonymous".into(),
            groups: vec!["system:unauthenticated".into()],
            ..Default::default()
        };
        let user = who.user.as_ref().unwrap_or(&anonymous);
        let level = match &self.inner.config.audit_policy {
            None => crate::audit::Level::Metadata,
            Some(p) => p.level(&crate::audit::Subject {
                user,
                verb: who.verb,
                group: &r.group,
                resource: &r.plural,
                subresource: target.subresource.as_deref(),
                namespace: target.namespace.as_deref(),
                name: target.name.as_deref(),
            }),
        };
        // Also a tracing event: `RUST_LOG=bosun::audit=debug`.
        tracing::debug!(
            target: "bosun::audit",
            user = %user.name,
            verb = who.verb,
            group = %r.group,
            resource = %r.plural,
            namespace = target.namespace.as_deref().unwrap_or(""),
            name = target.name.as_deref().unwrap_or(""),
            code,
            "audit"
        );
        let mut result = result;
        if let (Some(log), true) = (&self.inner.audit, level > crate::audit::Level::None) {
            let json_of = |b: &[u8]| serde_json::from_slice::<serde_json::Value>(b).ok();
            let request_object = (level >= crate::audit::Level::Request)
                .then(|| who.body.as_deref().and_then(json_of))
                .flatten();
            let mut response_object = None;
            // Whole responses only: a watch or a stream is never buffered for the log.
            let streaming = who.verb == "watch"
                || target.subresource.as_deref().is_some_and(|s| {
                    matches!(s, "log" | "exec" | "attach" | "portforward" | "proxy")
                });
            if level == crate::audit::Level::RequestResponse && !streaming {
                match result {
                    Ok(resp) => {
                        use http_body_util::BodyExt;
                        let (parts, body) = resp.into_parts();
                        let bytes = body
                            .collect()
                            .await
                            .map(|c| c.to_bytes())
                            .unwrap_or_default();
                        response_object = json_of(&bytes);
                        result = Ok(Response::from_parts(parts, full(bytes)));
                    }
                    Err(ref e) => response_object = serde_json::to_value(e.status()).ok(),
                }
            }
            log.record(&crate::audit::Record {
                request_uri: &uri,
                verb: who.verb,
                user,
                impersonated_user: who.impersonated.as_ref(),
                source_ip,
                user_agent: &user_agent,
                group: &r.group,
                version: &r.version,
                resource: &r.plural,
                subresource: target.subresource.as_deref(),
                namespace: target.namespace.as_deref(),
                name: target.name.as_deref(),
                code,
                received,
                level,
                request_object,
                response_object,
            });
        }
        result
    }

    async fn resource_inner<B>(
        &self,
        req: Request<B>,
        r: &Arc<ApiResource>,
        target: &Target,
        accept: &str,
        who: &mut Audited,
    ) -> Result<Response<Body>, ApiError>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let r = Arc::clone(r);
        let query = Query::parse(req.uri().query())?;
        let output = crate::negotiate::negotiate(accept, r.builtin.is_some())?;
        // Who asks, and may they.
        let (user, impersonator) = self.authenticate(&req).await?;
        let verb = match (req.method().as_str(), target.name.is_some()) {
            ("GET", true) => "get",
            ("GET", false) if query.watch => "watch",
            ("GET", false) => "list",
            ("POST", _) => "create",
            ("PUT", _) => "update",
            ("PATCH", _) => "patch",
            ("DELETE", true) => "delete",
            ("DELETE", false) => "deletecollection",
            _ => "unknown",
        };
        // The audit log names the sender, and whom it acted as.
        match impersonator {
            Some(sender) => {
                who.user = Some(sender);
                who.impersonated = Some(user.clone());
            }
            None => who.user = Some(user.clone()),
        }
        who.verb = verb;
        let info = RequestInfo {
            verb,
            group: &r.group,
            version: &r.version,
            resource: &r.plural,
            subresource: target.subresource.as_deref(),
            namespace: target.namespace.as_deref(),
            name: target.name.as_deref(),
            path: None,
        };
        match self.inner.pipeline.authorizer.authorize(&user, &info).await {
            Decision::Allow => {}
            Decision::Deny(reason) => return Err(ApiError::forbidden(&user, &info, &reason)),
            Decision::NoOpinion => return Err(ApiError::forbidden(&user, &info, "")),
        }
        if let Some(sub) = target.subresource.as_deref() {
            // A subresource the kind does not have (`namespaces/default/namespaces`) is no
            // route at all, whatever the method.
            if !r.subresources.iter().any(|s| s == sub) {
                return Err(ApiError::no_route());
            }
            if crate::proxy::is_connect(&r, sub) {
                return crate::proxy::connect(self, &r, target, req).await;
            }
        }
        let content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let method = req.method().clone();
        let user_agent = header_str(&req, header::USER_AGENT).to_owned();
        let body = if method == Method::POST
            || method == Method::PUT
            || method == Method::PATCH
            || method == Method::DELETE
        {
            read_body(req.into_body(), self.inner.config.max_body_bytes).await?
        } else {
            Bytes::new()
        };
        if self.inner.audit.is_some() && !body.is_empty() {
            who.body = Some(body.clone());
        }
        let ctx = rest::Ctx {
            server: self,
            r: &r,
            namespace: target.namespace.as_deref(),
            name: target.name.as_deref(),
            subresource: target.subresource.as_deref(),
            query: &query,
            content_type: content_type.as_deref(),
            output,
            warnings: std::sync::Mutex::new(Vec::new()),
            user_agent: &user_agent,
            user: &user,
            json_body: (matches!(method, Method::POST | Method::PUT)
                && crate::object::body_format(content_type.as_deref()).ok()
                    == Some(crate::object::Format::Json))
            .then_some(&body[..]),
        };
        if (r.group == "authorization.k8s.io" || r.group == "authentication.k8s.io")
            && method == Method::POST
        {
            if let Some(resp) = crate::rest::access_review(&ctx, &body).await? {
                return Ok(resp);
            }
        }
        if !r.namespaced && target.namespace.is_some() {
            return Err(ApiError::no_route());
        }
        match method {
            Method::GET if target.name.is_none() => query.validate_list()?,
            Method::POST => query.validate_write("CreateOptions")?,
            Method::PUT => query.validate_write("UpdateOptions")?,
            Method::PATCH => query.validate_write("PatchOptions")?,
            _ => {}
        }
        let result = match (&method, target.name.is_some()) {
            (&Method::GET, true) => rest::get(&ctx).await,
            (&Method::GET, false) if query.watch => rest::watch(&ctx).await,
            (&Method::GET, false) => rest::list(&ctx).await,
            (&Method::POST, false) => rest::create(&ctx, &body).await,
            (&Method::POST, true) if target.subresource.is_some() => {
                rest::post_subresource(&ctx, &body).await
            }
            (&Method::PUT, true) => rest::update(&ctx, &body).await,
            (&Method::DELETE, true) => rest::delete(&ctx, &body).await,
            (&Method::DELETE, false) => rest::delete_collection(&ctx, &body).await,
            (&Method::PATCH, true) => rest::patch(&ctx, &body).await,
            _ => Err(ApiError::method_not_allowed(&r, method.as_str())),
        };
        let warnings = std::mem::take(&mut *ctx.warnings.lock().unwrap_or_else(|p| p.into_inner()));
        let result = match result {
            Ok(resp) if output.protobuf && !query.watch => Ok(protobuf_response(resp).await),
            other => other,
        };
        result.map(|mut resp| {
            for w in warnings {
                let quoted = w.replace('\\', "\\\\").replace('"', "\\\"");
                if let Ok(v) = HeaderValue::from_str(&format!("299 - \"{quoted}\"")) {
                    resp.headers_mut().append(header::WARNING, v);
                }
            }
            resp
        })
    }
}

/// Who made a request and what they asked, as far as the pipeline got (for the audit log).
#[derive(Default)]
struct Audited {
    user: Option<crate::auth::UserInfo>,
    /// Whom `user` acted as, when it impersonated someone.
    impersonated: Option<crate::auth::UserInfo>,
    verb: &'static str,
    /// The request body, kept for `Request`-level audit records.
    body: Option<Bytes>,
}

/// The client certificate chain a TLS handshake verified (leaf first), attached to each
/// request by [`ApiServer::serve_tls`]; empty over plain HTTP.
#[derive(Clone, Debug, Default)]
pub struct ClientCertificates(pub Arc<Vec<rustls::pki_types::CertificateDer<'static>>>);

/// The client's address, attached to each request by [`ApiServer::serve`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct PeerAddr(pub(crate) std::net::SocketAddr);

fn header_str<B>(req: &Request<B>, name: header::HeaderName) -> &str {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// The aggregated discovery version a client asked for, if any.
fn aggregated_version(accept: &str) -> Option<&'static str> {
    for part in accept.split(',') {
        let p = part.replace(' ', "");
        if p.contains("g=apidiscovery.k8s.io") && p.contains("as=APIGroupDiscoveryList") {
            if p.contains("v=v2beta1") {
                return Some("v2beta1");
            }
            if p.contains("v=v2") {
                return Some("v2");
            }
        }
    }
    None
}

/// The `Sec-WebSocket-Key` of a WebSocket upgrade request.
fn websocket_key<B>(req: &Request<B>) -> Option<String> {
    let upgrade = req.headers().get(header::UPGRADE)?.to_str().ok()?;
    if !upgrade.eq_ignore_ascii_case("websocket") || req.method() != Method::GET {
        return None;
    }
    Some(
        req.headers()
            .get(header::SEC_WEBSOCKET_KEY)?
            .to_str()
            .ok()?
            .to_owned(),
    )
}

/// Switches a watch response to WebSocket: 101 now, then each watch event as one message (text
/// for JSON, binary for protobuf) until the watch or the client ends.
fn websocket_watch(
    key: &str,
    resp: Response<Body>,
    upgrade: hyper::upgrade::OnUpgrade,
) -> Response<Body> {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::protocol::{Message, Role};
    let binary = resp.headers().get(header::CONTENT_TYPE).is_some_and(|ct| {
        ct.as_bytes()
            .starts_with(b"application/vnd.kubernetes.protobuf")
    });
    let mut body = resp.into_body();
    tokio::spawn(async move {
        let upgraded = match upgrade.await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!(error = %e, "websocket upgrade failed");
                return;
            }
        };
        let ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
            TokioIo::new(upgraded),
            Role::Server,
            None,
        )
        .await;
        let (mut sink, mut incoming) = ws.split();
        loop {
            tokio::select! {
                frame = body.frame() => {
                    let Some(Ok(frame)) = frame else { break };
                    let Ok(data) = frame.into_data() else { continue };
                    let msg = if binary {
                        Message::Binary(data)
                    } else {
                        let line = data.strip_suffix(b"\n").unwrap_or(&data);
                        match std::str::from_utf8(line) {
                            Ok(text) => Message::text(text),
                            Err(_) => Message::Binary(data),
                        }
                    };
                    if sink.send(msg).await.is_err() {
                        return;
                    }
                }
                msg = incoming.next() => match msg {
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                    Some(Ok(_)) => {}
                },
            }
        }
        let _ = sink.send(Message::Close(None)).await;
    });
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let mut r = Response::new(full(Bytes::new()));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(v) = HeaderValue::from_str(&accept) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    r
}

/// A JSON response re-encoded in protobuf, for clients that asked for it; what has no protobuf
/// form (Tables, custom kinds) stays JSON.
async fn protobuf_response(resp: Response<Body>) -> Response<Body> {
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes() == b"application/json");
    if !is_json {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let bytes = match body.collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) => match e {},
    };
    let converted = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(crate::negotiate::to_protobuf);
    match converted {
        Some(proto) => {
            parts.headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/vnd.kubernetes.protobuf"),
            );
            parts.headers.remove(header::CONTENT_LENGTH);
            Response::from_parts(parts, full(proto))
        }
        None => Response::from_parts(parts, full(bytes)),
    }
}

async fn read_body<B>(body: B, limit: usize) -> Result<Bytes, ApiError>
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    match Limited::new(body, limit).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(ApiError::too_large(limit)),
        Err(e) => Err(ApiError::bad_request(format!(
            "reading the request body failed: {e}"
        ))),
    }
}

fn version_info() -> serde_json::Value {
    serde_json::json!({
        "major": KUBERNETES_VERSION.0,
        "minor": KUBERNETES_VERSION.1,
        "gitVersion": format!("v{}.{}.0", KUBERNETES_VERSION.0, KUBERNETES_VERSION.1),
        "gitCommit": "bosun",
        "gitTreeState": "clean",
        "buildDate": "2026-11-22T00:00:00Z",
        "goVersion": "rust",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            other => other,
        }),
    })
}

pub(crate) fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).boxed()
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(ApiError::internal)
}

fn bytes_response(body: Bytes, content_type: &'static str) -> Response<Body> {
    let mut r = Response::new(full(body));
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

fn text(code: StatusCode, s: &'static str) -> Response<Body> {
    let mut r = Response::new(full(s));
    *r.status_mut() = code;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// A JSON response.
pub(crate) fn json(
    code: StatusCode,
    v: &impl serde::Serialize,
) -> Result<Response<Body>, ApiError> {
    let body = serde_json::to_vec(v).map_err(ApiError::internal)?;
    Ok(json_bytes(code, body))
}

pub(crate) fn json_bytes(code: StatusCode, body: Vec<u8>) -> Response<Body> {
    let mut r = Response::new(full(body));
    *r.status_mut() = code;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn aggregated(
    doc: &bosun_api_types::apidiscovery::v2::APIGroupDiscoveryList,
    version: &str,
) -> Result<Response<Body>, ApiError> {
    let mut r = json(StatusCode::OK, doc)?;
    let ct = format!("application/json;g=apidiscovery.k8s.io;v={version};as=APIGroupDiscoveryList");
    if let Ok(v) = HeaderValue::from_str(&ct) {
        r.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    Ok(r)
}

/// The `Status` response of an error.
pub fn error_response(e: &ApiError) -> Response<Body> {
    let body = serde_json::to_vec(&e.status()).unwrap_or_default();
    let code = StatusCode::from_u16(e.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_bytes(code, body)
}
