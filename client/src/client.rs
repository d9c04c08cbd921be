//! The client: a cloneable handle over a boxed `tower::Service` that sends API requests and
//! turns responses into typed values or [`Error`]s carrying the server's `Status`.

use crate::config::{Auth, Config};
use crate::error::{Error, Result};
use bytes::Bytes;
use futures_util::Stream;
use http::{header, HeaderValue, Request, Response, Uri};
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full};
use serde::de::DeserializeOwned;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Errors of the service stack.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Response bodies, whatever the transport.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// The service a [`Client`] sends through: requests with whole bodies, streaming responses.
pub type Service = tower::util::BoxCloneSyncService<Request<Full<Bytes>>, Response<Body>, BoxError>;

/// A handle to an API server. Cheap to clone; clones share the connection pool.
///
/// ```no_run
/// use bosun_api_types::core::v1::Namespace;
/// use bosun_client::{Api, Client, Config};
/// # async fn run() -> bosun_client::Result<()> {
/// // From the usual places (KUBECONFIG, ~/.kube/config, in-cluster) …
/// let client = Client::try_default()?;
/// // … or from a URL.
/// let local = Client::try_from_config(Config::new("http://127.0.0.1:8080".parse().expect("a URL")))?;
/// let namespaces: Api<Namespace> = Api::all(local);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    service: Service,
    base: Uri,
    default_namespace: String,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base)
            .field("default_namespace", &self.default_namespace)
            .finish_non_exhaustive()
    }
}

/// Adds the configured credentials to each request; a token file is re-read once a minute.
#[derive(Clone)]
struct Credentials {
    auth: Auth,
    cached: Arc<Mutex<Option<(Instant, HeaderValue)>>>,
}

impl Credentials {
    fn header(&self) -> Option<HeaderValue> {
        use base64::Engine;
        match &self.auth {
            Auth::None => None,
            Auth::Bearer(t) => HeaderValue::from_str(&format!("Bearer {t}")).ok(),
            Auth::Basic { username, password } => {
                let raw = base64::engine::general_purpose::STANDARD
                    .encode(format!("{username}:{password}"));
                HeaderValue::from_str(&format!("Basic {raw}")).ok()
            }
            Auth::Exec(exec) => self.bearer_cached(|| run_exec_plugin(exec), false),
            Auth::TokenFile(path) => self.bearer_cached(
                || {
                    std::fs::read_to_string(path)
                        .map(|t| (t.trim().to_owned(), Duration::from_secs(60)))
                        .map_err(|e| format!("reading the token file {}: {e}", path.display()))
                },
                // A token file that cannot be read now keeps its last token (client-go's rule).
                true,
            ),
        }
    }
}

impl Credentials {
    /// A bearer header from `fetch` (a token and how long it holds), reused until then; when
    /// `fetch` fails, the last token if `keep_stale`.
    fn bearer_cached(
        &self,
        fetch: impl FnOnce() -> std::result::Result<(String, Duration), String>,
        keep_stale: bool,
    ) -> Option<HeaderValue> {
        let mut cached = self.cached.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((until, v)) = cached.as_ref() {
            if Instant::now() < *until {
                return Some(v.clone());
            }
        }
        match fetch() {
            Ok((token, valid_for)) => {
                let v = HeaderValue::from_str(&format!("Bearer {token}")).ok()?;
                *cached = Some((Instant::now() + valid_for, v.clone()));
                Some(v)
            }
            Err(e) => {
                tracing::warn!(error = %e, "getting a bearer token failed");
                cached
                    .as_ref()
                    .filter(|_| keep_stale)
                    .map(|(_, v)| v.clone())
            }
        }
    }
}

/// Runs a credential plugin: its token, and how long to use it (until the expiry it states,
/// less a minute; a day if it states none).
fn run_exec_plugin(
    exec: &crate::config::ExecConfig,
) -> std::result::Result<(String, Duration), String> {
    let api_version = if exec.api_version.is_empty() {
        "client.authentication.k8s.io/v1"
    } else {
        exec.api_version.as_str()
    };
    let info = serde_json::json!({"apiVersion": api_version, "kind": "ExecCredential",
        "spec": {"interactive": false}});
    let out = std::process::Command::new(&exec.command)
        .args(&exec.args)
        .envs(exec.env.iter().map(|e| (e.name.as_str(), e.value.as_str())))
        .env("KUBERNETES_EXEC_INFO", info.to_string())
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("running {}: {e}", exec.command))?;
    if !out.status.success() {
        return Err(format!(
            "{} exited with {}: {}",
            exec.command,
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let cred: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("{} printed no ExecCredential: {e}", exec.command))?;
    let status = &cred["status"];
    let token = status["token"]
        .as_str()
        .filter(|t| !t.is_empty())
        .ok_or_else(|| format!("{}: the ExecCredential has no status.token", exec.command))?;
    let valid_for = match status["expirationTimestamp"].as_str() {
        None => Duration::from_secs(24 * 3600),
        Some(ts) => {
            let at: bosun_api_types::Time = ts
                .parse()
                .map_err(|e| format!("{}: expirationTimestamp {ts:?}: {e}", exec.command))?;
            std::time::SystemTime::from(at)
                .duration_since(std::time::SystemTime::now())
                .unwrap_or_default()
                .saturating_sub(Duration::from_secs(60))
        }
    };
    Ok((token.to_owned(), valid_for))
}

impl Client {
    /// A client sending through `service` (any tower stack: the default HTTP transport with
    /// middleware added, or [`crate::mock::Mock`] in tests). Request URIs are paths such as
    /// `/api/v1/pods`; `base` is prepended.
    pub fn new<S, B>(service: S, base: Uri, default_namespace: impl Into<String>) -> Self
    where
        S: tower::Service<Request<Full<Bytes>>, Response = Response<B>>
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        use tower::ServiceExt;
        let service = service
            .map_response(|r: Response<B>| r.map(|b| b.map_err(Into::into).boxed_unsync()))
            .map_err(Into::into);
        Client {
            service: Service::new(service),
            base,
            default_namespace: default_namespace.into(),
        }
    }

    /// A client for `config` over the default transport: hyper's pooled client, with rustls for
    /// `https` servers ([`crate::tls`]), the credentials of the config, retries and the
    /// client-side rate limit it asks for. Over `https` it speaks HTTP/2 where the server offers
    /// it (ALPN), as client-go does: every request and watch of the client shares one
    /// connection, however many are under way. Plain `http` is HTTP/1.1, a connection per
    /// request under way.
    pub fn try_from_config(config: Config) -> Result<Self> {
        let executor = hyper_util::rt::TokioExecutor::new();
        match config.cluster_url.scheme_str() {
            Some("http") => {
                let http = hyper_util::client::legacy::Client::builder(executor)
                    .build_http::<Full<Bytes>>();
                Ok(Self::with_stack(http, config))
            }
            Some("https") => {
                let tls = crate::tls::client_config(&config.tls)?;
                let builder = hyper_rustls::HttpsConnectorBuilder::new()
                    .with_tls_config(tls)
                    .https_only();
                let builder = match &config.tls.server_name {
                    Some(name) => {
                        let name = rustls::pki_types::ServerName::try_from(name.clone())
                            .map_err(|e| Error::Config(format!("tls-server-name {name:?}: {e}")))?;
                        builder.with_server_name_resolver(
                            hyper_rustls::FixedServerNameResolver::new(name),
                        )
                    }
                    None => builder,
                };
                let https = hyper_util::client::legacy::Client::builder(executor)
                    .timer(hyper_util::rt::TokioTimer::new())
                    // Notice a dead server on a quiet connection (client-go: 30 s pings).
                    .http2_keep_alive_interval(Duration::from_secs(30))
                    .http2_keep_alive_while_idle(true)
                    .build::<_, Full<Bytes>>(builder.enable_all_versions().build());
                Ok(Self::with_stack(https, config))
            }
            other => Err(Error::Config(format!(
                "{}: unsupported scheme {other:?} (http or https)",
                config.cluster_url
            ))),
        }
    }

    fn with_stack<S, B>(transport: S, config: Config) -> Self
    where
        S: tower::Service<Request<Full<Bytes>>, Response = Response<B>>
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let credentials = Credentials {
            auth: config.auth.clone(),
            cached: Arc::default(),
        };
        let with_credentials = tower::ServiceBuilder::new()
            .map_request(move |mut req: Request<Full<Bytes>>| {
                if let Some(v) = credentials.header() {
                    req.headers_mut().insert(header::AUTHORIZATION, v);
                }
                req
            })
            .service(transport);
        let retry = crate::middleware::RetryLayer {
            max_retries: config.max_retries,
            ..Default::default()
        };
        let limit = config
            .qps
            .map(|q| crate::middleware::RateLimitLayer::new(f64::from(q), config.burst));
        let service = tower::ServiceBuilder::new()
            .option_layer(limit)
            .layer(retry)
            .service(with_credentials);
        Self::new(service, config.cluster_url, config.default_namespace)
    }

    /// The config the environment gives ([`Config::infer`]) over the default transport.
    pub fn try_default() -> Result<Self> {
        Self::try_from_config(Config::infer()?)
    }

    /// The namespace of `Api::default_namespaced`.
    pub fn default_namespace(&self) -> &str {
        &self.default_namespace
    }

    fn absolute(&self, uri: &Uri) -> Result<Uri> {
        if uri.scheme().is_some() {
            return Ok(uri.clone());
        }
        let base_path = self.base.path().trim_end_matches('/');
        let pq = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let mut parts = self.base.clone().into_parts();
        parts.path_and_query = Some(
            format!("{base_path}{pq}")
                .parse()
                .map_err(|e| Error::Request(format!("{pq}: {e}")))?,
        );
        Uri::from_parts(parts).map_err(|e| Error::Request(e.to_string()))
    }

    /// Sends a request; the response comes back whatever its status.
    pub async fn send(&self, mut req: Request<Full<Bytes>>) -> Result<Response<Body>> {
        use tower::ServiceExt;
        *req.uri_mut() = self.absolute(req.uri())?;
        use tracing::Instrument;
        let span = tracing::debug_span!("request", method = %req.method(), uri = %req.uri());
        let resp = self
            .service
            .clone()
            .oneshot(req)
            .instrument(span.clone())
            .await
            .map_err(|e| Error::Transport(e.to_string()))?;
        span.in_scope(|| tracing::debug!(status = resp.status().as_u16(), "response"));
        Ok(resp)
    }

    /// Sends a request and decodes a successful JSON response; an error status becomes
    /// [`Error::Api`] with the server's `Status`.
    pub async fn request<T: DeserializeOwned>(&self, req: Request<Full<Bytes>>) -> Result<T> {
        let resp = self.send(req).await?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| Error::Transport(e.to_string()))?
            .to_bytes();
        if !status.is_success() {
            return Err(error_of(status.as_u16(), &body));
        }
        serde_json::from_slice(&body).map_err(|e| Error::Decode(e.to_string()))
    }

    /// Sends a request whose successful response is a stream of JSON lines (a watch), decoded
    /// one by one.
    pub async fn request_lines<T: DeserializeOwned>(
        &self,
        req: Request<Full<Bytes>>,
    ) -> Result<impl Stream<Item = Result<T>> + Send + use<T>> {
        let resp = self.send(req).await?;
        if !resp.status().is_success() {
            return Err(error_from(resp).await);
        }
        let body = resp.into_body();
        Ok(futures_util::stream::unfold(
            (body, Vec::<u8>::new(), false),
            |(mut body, mut buf, mut done)| async move {
                loop {
                    if let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                        let line: Vec<u8> = buf.drain(..=pos).collect();
                        let line = &line[..line.len() - 1];
                        if line.iter().all(u8::is_ascii_whitespace) {
                            continue;
                        }
                        let item = serde_json::from_slice::<T>(line)
                            .map_err(|e| Error::Decode(e.to_string()));
                        return Some((item, (body, buf, done)));
                    }
                    if done {
                        if buf.iter().all(u8::is_ascii_whitespace) {
                            return None;
                        }
                        let item = serde_json::from_slice::<T>(&buf)
                            .map_err(|e| Error::Decode(e.to_string()));
                        buf.clear();
                        return Some((item, (body, buf, done)));
                    }
                    match body.frame().await {
                        Some(Ok(frame)) => {
                            if let Ok(data) = frame.into_data() {
                                buf.extend_from_slice(&data);
                            }
                        }
                        Some(Err(e)) => {
                            done = true;
                            buf.clear();
                            return Some((Err(Error::Transport(e.to_string())), (body, buf, done)));
                        }
                        None => done = true,
                    }
                }
            },
        ))
    }
}

/// The error an unsuccessful response stands for (its body read whole).
pub(crate) async fn error_from(resp: Response<Body>) -> Error {
    let code = resp.status().as_u16();
    match resp.into_body().collect().await {
        Ok(c) => error_of(code, &c.to_bytes()),
        Err(e) => Error::Transport(e.to_string()),
    }
}

/// The error an unsuccessful response body stands for.
pub(crate) fn error_of(code: u16, body: &[u8]) -> Error {
    match serde_json::from_slice::<bosun_api_types::meta::v1::Status>(body) {
        Ok(s) if s.code.is_some() || s.reason.is_some() => Error::Api(Box::new(s)),
        _ => Error::Http {
            code,
            body: String::from_utf8_lossy(body).into_owned(),
        },
    }
}
