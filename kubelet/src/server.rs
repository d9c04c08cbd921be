//! The kubelet's HTTP server, the one the API server proxies `kubectl logs`, `exec`, `attach`
//! and `port-forward` to (upstream's paths):
//!
//! - `GET /healthz`: `ok`;
//! - `GET /pods`: the pods bound to this node, as a `PodList`;
//! - `GET /containerLogs/{namespace}/{pod}/{container}`: the container's log with
//!   [`LogOptions`](crate::logs::LogOptions) from the query;
//! - `/exec/{namespace}/{pod}/{container}?command=…&input=1&output=1&error=1&tty=1`,
//!   `/attach/{namespace}/{pod}/{container}` and `/portForward/{namespace}/{pod}`: the runtime
//!   is asked for a streaming URL (CRI `Exec`, `Attach`, `PortForward`) and the request —
//!   a WebSocket or SPDY upgrade — is proxied to it, so every protocol the runtime's
//!   streaming server speaks reaches the client;
//! - `GET /stats/summary`: the node's and pods' usage ([`Stats::summary`]);
//! - `GET /metrics/resource`: the same as Prometheus metrics ([`Stats::resource_metrics`]);
//! - `GET /metrics`: the kubelet's own metrics (running pods and containers, the process's
//!   memory and CPU).
//!
//! [`KubeletServer::serve_tls`] serves HTTPS with the node's serving certificate; with
//! [`KubeletServer::with_auth`] every request is authenticated and authorized first
//! ([`crate::auth`]: the API server's client certificate, or a token by TokenReview, and a
//! SubjectAccessReview on `nodes/…`). [`KubeletServer::serve`] is plain HTTP, for tests and
//! clusters served without TLS.

use crate::logs::{self, form_pairs, LogOptions};
use crate::pods::{CONTAINER_NAME, POD_NAME, POD_NAMESPACE};
use crate::stats::Stats;
use bosun_api_types::core::v1::Pod;
use bosun_client::{Api, Client, ListParams};
use bosun_cri::v1::*;
use bosun_cri::RuntimeService;
use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{header, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::sync::Arc;

/// A response body.
pub type Body = BoxBody<Bytes, Infallible>;

/// The kubelet's HTTP server.
pub struct KubeletServer {
    rt: Arc<dyn RuntimeService>,
    pods: Api<Pod>,
    node: String,
    stats: Stats,
    auth: std::sync::OnceLock<Arc<crate::auth::KubeletAuth>>,
}

fn text(code: StatusCode, msg: impl Into<String>) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(msg.into())).boxed());
    *r.status_mut() = code;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// An error answered to the client: a status code and a message.
struct Failure(StatusCode, String);

impl Failure {
    fn bad(msg: impl Into<String>) -> Self {
        Failure(StatusCode::BAD_REQUEST, msg.into())
    }
    fn not_found(msg: impl Into<String>) -> Self {
        Failure(StatusCode::NOT_FOUND, msg.into())
    }
    fn runtime(what: &str, e: bosun_cri::Error) -> Self {
        Failure(StatusCode::INTERNAL_SERVER_ERROR, format!("{what}: {e}"))
    }
}

type Answer = Result<Response<Body>, Failure>;

fn json_response(v: &serde_json::Value) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(v.to_string())).boxed());
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r
}

fn metrics_response(text: String) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(text)).boxed());
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}

/// This process's resident memory (bytes), CPU time (seconds) and start time (seconds since
/// the epoch), from `/proc/self/stat` and `/proc/stat`.
fn process_usage() -> (u64, f64, f64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command (which may hold spaces) in parentheses.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // Counting from the state (field 3): utime 14, stime 15, starttime 22, rss 24.
    let at = |n: usize| f.get(n - 3).copied().unwrap_or(0);
    let ticks = 100.0;
    let page = rustix::param::page_size() as u64;
    let boot = std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("btime ")?.trim().parse::<u64>().ok())
        })
        .unwrap_or(0);
    (
        at(24) * page,
        (at(14) + at(15)) as f64 / ticks,
        boot as f64 + at(22) as f64 / ticks,
    )
}

impl KubeletServer {
    /// A server for `node`'s pods running on `rt`; `dir` is the kubelet's directory (its
    /// filesystem is the node's in `/stats/summary`).
    pub fn new(
        client: Client,
        node: String,
        rt: Arc<dyn RuntimeService>,
        dir: std::path::PathBuf,
    ) -> Arc<Self> {
        Arc::new(KubeletServer {
            stats: Stats::new(rt.clone(), node.clone(), dir),
            rt,
            pods: Api::all(client),
            node,
            auth: std::sync::OnceLock::new(),
        })
    }

    /// The same server, checking every request with `auth` first.
    pub fn with_auth(self: Arc<Self>, auth: Arc<crate::auth::KubeletAuth>) -> Arc<Self> {
        if self.auth.set(auth).is_err() {
            tracing::warn!(
                "the kubelet server's authentication was already set; keeping the first"
            );
        }
        self
    }

    /// Serves HTTPS connections from `listener` with `tls` (see [`crate::auth::server_config`])
    /// until `shutdown`; the client certificate verified in the handshake, if any, is the
    /// request's identity.
    pub async fn serve_tls(
        self: Arc<Self>,
        listener: tokio::net::TcpListener,
        tls: Arc<rustls::ServerConfig>,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
        tokio::pin!(shutdown);
        loop {
            let conn = tokio::select! {
                _ = &mut shutdown => return,
                c = listener.accept() => c,
            };
            let Ok((conn, from)) = conn else {
                continue;
            };
            let (me, acceptor) = (self.clone(), acceptor.clone());
            tokio::spawn(async move {
                let tls = match acceptor.accept(conn).await {
                    Ok(tls) => tls,
                    Err(e) => {
                        tracing::debug!(%from, error = %e, "kubelet TLS handshake failed");
                        return;
                    }
                };
                // The verified certificate's user, read once per connection.
                let peer = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .and_then(|c| crate::auth::certificate_user(c.as_ref()))
                    .map(Arc::new);
                me.serve_connection(tls, peer).await;
            });
        }
    }

    /// Checks a request (when the server has [`KubeletServer::with_auth`]) and answers it.
    async fn answer(
        self: Arc<Self>,
        peer: Option<&crate::auth::User>,
        req: Request<Incoming>,
    ) -> Response<Body> {
        if let Some(auth) = self.auth.get() {
            if let Err(refusal) = auth.check(peer, &req).await {
                let code = match refusal {
                    crate::auth::Refusal::Unauthorized => StatusCode::UNAUTHORIZED,
                    crate::auth::Refusal::Forbidden { .. } => StatusCode::FORBIDDEN,
                    crate::auth::Refusal::Failed(_) => StatusCode::INTERNAL_SERVER_ERROR,
                };
                tracing::debug!(path = req.uri().path(), %refusal, "kubelet request refused");
                return text(code, refusal.to_string());
            }
        }
        self.handle(req).await
    }

    /// Serves connections from `listener` until `shutdown`.
    pub async fn serve(
        self: Arc<Self>,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        loop {
            let conn = tokio::select! {
                _ = &mut shutdown => return,
                c = listener.accept() => c,
            };
            let Ok((conn, _)) = conn else {
                continue;
            };
            tokio::spawn(self.clone().serve_connection(conn, None));
        }
    }

    /// Serves one connection (HTTP/1.1 with upgrades); `peer` is the user of the client
    /// certificate the TLS handshake verified, if any.
    async fn serve_connection<I>(self: Arc<Self>, io: I, peer: Option<Arc<crate::auth::User>>)
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let svc = hyper::service::service_fn(move |req| {
            let (me, peer) = (self.clone(), peer.clone());
            async move { Ok::<_, Infallible>(me.answer(peer.as_deref(), req).await) }
        });
        let conn = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(io), svc)
            .with_upgrades();
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "kubelet connection");
        }
    }

    /// Answers one request, unchecked (see [`KubeletServer::with_auth`]).
    pub async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        let path = req.uri().path().to_string();
        let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
        let get = req.method() == hyper::Method::GET;
        let result = match segs.as_slice() {
            ["healthz"] if get => Ok(text(StatusCode::OK, "ok")),
            ["pods"] if get => self.list_pods().await,
            ["stats", "summary"] if get => match self.stats.summary().await {
                Ok(v) => Ok(json_response(&v)),
                Err(e) => Err(Failure::runtime("reading stats", e)),
            },
            ["metrics", "resource"] if get => match self.stats.resource_metrics().await {
                Ok(m) => Ok(metrics_response(m)),
                Err(e) => Err(Failure::runtime("reading stats", e)),
            },
            ["metrics"] if get => self.metrics().await,
            ["containerLogs", ns, pod, container] if get => {
                self.clone()
                    .logs(ns, pod, container, req.uri().query())
                    .await
            }
            ["exec", ns, pod, container] => self.exec(ns, pod, container, req).await,
            ["attach", ns, pod, container] => self.attach(ns, pod, container, req).await,
            ["portForward", ns, pod] => self.port_forward(ns, pod, req).await,
            _ => Err(Failure::not_found(format!("no handler for {path}"))),
        };
        result.unwrap_or_else(|Failure(code, msg)| {
            tracing::debug!(%path, %code, %msg, "kubelet request failed");
            text(code, msg)
        })
    }

    async fn list_pods(&self) -> Answer {
        let list = self
            .pods
            .list(&ListParams::default().fields(&format!("spec.nodeName={}", self.node)))
            .await
            .map_err(|e| Failure(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
        let body = serde_json::json!({
            "kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": list.items,
        });
        Ok(json_response(&body))
    }

    /// The kubelet's own metrics, in the Prometheus text format.
    async fn metrics(&self) -> Answer {
        use std::fmt::Write as _;
        let sandboxes = self
            .rt
            .list_pod_sandbox(ListPodSandboxRequest::default())
            .await
            .map_err(|e| Failure::runtime("listing sandboxes", e))?
            .items;
        let containers = self
            .rt
            .list_containers(ListContainersRequest::default())
            .await
            .map_err(|e| Failure::runtime("listing containers", e))?
            .containers;
        let running_pods = sandboxes
            .iter()
            .filter(|s| s.state == PodSandboxState::SandboxReady as i32)
            .count();
        let mut out = String::new();
        let mut gauge = |name: &str, help: &str, rows: &[(String, f64)]| {
            let _ = writeln!(out, "# HELP {name} [ALPHA] {help}\n# TYPE {name} gauge");
            for (labels, value) in rows {
                let _ = writeln!(out, "{name}{labels} {value}");
            }
        };
        gauge(
            "kubelet_node_name",
            "The node's name. The count is always 1.",
            &[(format!("{{node=\"{}\"}}", self.node), 1.0)],
        );
        gauge(
            "kubelet_running_pods",
            "Number of pods that have a running pod sandbox",
            &[(String::new(), running_pods as f64)],
        );
        let states = [
            (ContainerState::ContainerCreated, "created"),
            (ContainerState::ContainerRunning, "running"),
            (ContainerState::ContainerExited, "exited"),
            (ContainerState::ContainerUnknown, "unknown"),
        ];
        let rows: Vec<(String, f64)> = states
            .iter()
            .map(|(st, label)| {
                let n = containers.iter().filter(|c| c.state == *st as i32).count();
                (format!("{{container_state=\"{label}\"}}"), n as f64)
            })
            .collect();
        gauge(
            "kubelet_running_containers",
            "Number of containers currently running",
            &rows,
        );
        let me = process_usage();
        gauge(
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            &[(String::new(), me.0 as f64)],
        );
        gauge(
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds.",
            &[(String::new(), me.2)],
        );
        let _ = writeln!(
            out,
            "# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.\n# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total {}",
            me.1
        );
        Ok(metrics_response(out))
    }

    /// The sandboxes of pod `ns/pod` (only ready ones with `ready`).
    async fn sandboxes(
        &self,
        ns: &str,
        pod: &str,
        ready: bool,
    ) -> Result<Vec<PodSandbox>, Failure> {
        Ok(self
            .rt
            .list_pod_sandbox(ListPodSandboxRequest {
                filter: Some(PodSandboxFilter {
                    label_selector: [
                        (POD_NAMESPACE.to_string(), ns.to_string()),
                        (POD_NAME.to_string(), pod.to_string()),
                    ]
                    .into(),
                    state: ready.then_some(PodSandboxStateValue {
                        state: PodSandboxState::SandboxReady as i32,
                    }),
                    ..Default::default()
                }),
            })
            .await
            .map_err(|e| Failure::runtime("listing sandboxes", e))?
            .items)
    }

    /// The runtime's instances of a pod's container, newest first.
    async fn instances(
        &self,
        ns: &str,
        pod: &str,
        container: &str,
    ) -> Result<Vec<Container>, Failure> {
        let sandboxes = self.sandboxes(ns, pod, false).await?;
        if sandboxes.is_empty() {
            return Err(Failure::not_found(format!(
                "pod {ns}/{pod} is not running on node {}",
                self.node
            )));
        }
        let mut found = Vec::new();
        for sb in sandboxes {
            let cs = self
                .rt
                .list_containers(ListContainersRequest {
                    filter: Some(ContainerFilter {
                        pod_sandbox_id: sb.id.clone(),
                        label_selector: [(CONTAINER_NAME.to_string(), container.to_string())]
                            .into(),
                        ..Default::default()
                    }),
                })
                .await
                .map_err(|e| Failure::runtime("listing containers", e))?
                .containers;
            found.extend(cs);
        }
        found.sort_by_key(|c| {
            std::cmp::Reverse((c.metadata.as_ref().map_or(0, |m| m.attempt), c.created_at))
        });
        Ok(found)
    }

    /// The newest instance, which must be running (exec, attach).
    async fn running(&self, ns: &str, pod: &str, container: &str) -> Result<String, Failure> {
        let all = self.instances(ns, pod, container).await?;
        match all.first() {
            Some(c) if c.state == ContainerState::ContainerRunning as i32 => Ok(c.id.clone()),
            Some(_) => Err(Failure::bad(format!(
                "container {container} is not running in pod {pod}"
            ))),
            None => Err(Failure::bad(format!(
                "container {container} not found in pod {pod}"
            ))),
        }
    }

    async fn logs(
        self: Arc<Self>,
        ns: &str,
        pod: &str,
        container: &str,
        query: Option<&str>,
    ) -> Answer {
        let opts = LogOptions::from_query(query.unwrap_or(""), jiff::Timestamp::now())
            .map_err(Failure::bad)?;
        let all = match self.instances(ns, pod, container).await {
            // No sandbox yet: the container is waiting like any other.
            Err(Failure(StatusCode::NOT_FOUND, _)) => Vec::new(),
            other => other?,
        };
        let chosen = if opts.previous {
            all.get(1).ok_or_else(|| {
                Failure::bad(format!(
                    "previous terminated container \"{container}\" in pod \"{pod}\" not found"
                ))
            })?
        } else {
            all.first().ok_or_else(|| {
                Failure::bad(format!(
                    "container \"{container}\" in pod \"{pod}\" is waiting to start: ContainerCreating"
                ))
            })?
        };
        let status = self
            .rt
            .container_status(ContainerStatusRequest {
                container_id: chosen.id.clone(),
                verbose: false,
            })
            .await
            .map_err(|e| Failure::runtime("container status", e))?
            .status
            .unwrap_or_default();
        if status.log_path.is_empty() {
            return Err(Failure::bad(format!(
                "container \"{container}\" in pod \"{pod}\" has no log"
            )));
        }
        let path = std::path::PathBuf::from(&status.log_path);
        if !path.exists() {
            // Nothing written yet (or the file is gone): an empty log, as upstream.
            return Ok(text(StatusCode::OK, ""));
        }
        let (tx, rx) = tokio::sync::mpsc::channel::<Vec<u8>>(16);
        let live = Live {
            rt: self.rt.clone(),
            id: chosen.id.clone(),
        };
        let shown = path.display().to_string();
        tokio::spawn(async move {
            if let Err(e) = logs::stream(path, opts, live, tx).await {
                tracing::debug!(path = %shown, error = %e, "streaming a log");
            }
        });
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv()
                .await
                .map(|b| (Ok::<_, Infallible>(Frame::data(Bytes::from(b))), rx))
        });
        let mut r = Response::new(StreamBody::new(stream).boxed());
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("text/plain"),
        );
        Ok(r)
    }

    async fn exec(&self, ns: &str, pod: &str, container: &str, req: Request<Incoming>) -> Answer {
        let q = Streams::from_query(req.uri().query().unwrap_or(""));
        if q.command.is_empty() {
            return Err(Failure::bad(
                "you must specify at least one command for the container",
            ));
        }
        let id = self.running(ns, pod, container).await?;
        let url = self
            .rt
            .exec(ExecRequest {
                container_id: id,
                cmd: q.command.clone(),
                tty: q.tty,
                stdin: q.input,
                stdout: q.output,
                stderr: q.error,
            })
            .await
            .map_err(|e| Failure::runtime("exec", e))?
            .url;
        proxy_upgrade(&url, req).await
    }

    async fn attach(&self, ns: &str, pod: &str, container: &str, req: Request<Incoming>) -> Answer {
        let q = Streams::from_query(req.uri().query().unwrap_or(""));
        let id = self.running(ns, pod, container).await?;
        let url = self
            .rt
            .attach(AttachRequest {
                container_id: id,
                tty: q.tty,
                stdin: q.input,
                stdout: q.output,
                stderr: q.error,
            })
            .await
            .map_err(|e| Failure::runtime("attach", e))?
            .url;
        proxy_upgrade(&url, req).await
    }

    async fn port_forward(&self, ns: &str, pod: &str, req: Request<Incoming>) -> Answer {
        let sandboxes = self.sandboxes(ns, pod, true).await?;
        let sb = sandboxes.first().ok_or_else(|| {
            Failure::not_found(format!(
                "pod {ns}/{pod} is not running on node {}",
                self.node
            ))
        })?;
        // The ports travel in the streams themselves (SPDY) or in the query (WebSocket).
        let ports: Vec<i32> = form_pairs(req.uri().query().unwrap_or(""))
            .into_iter()
            .filter(|(k, _)| k == "port")
            .filter_map(|(_, v)| v.parse().ok())
            .collect();
        let url = self
            .rt
            .port_forward(PortForwardRequest {
                pod_sandbox_id: sb.id.clone(),
                port: ports,
            })
            .await
            .map_err(|e| Failure::runtime("port-forward", e))?
            .url;
        proxy_upgrade(&url, req).await
    }
}

/// Follow keeps going while the container runs.
struct Live {
    rt: Arc<dyn RuntimeService>,
    id: String,
}

impl logs::Liveness for Live {
    async fn running(&mut self) -> bool {
        match self
            .rt
            .container_status(ContainerStatusRequest {
                container_id: self.id.clone(),
                verbose: false,
            })
            .await
        {
            Ok(r) => r
                .status
                .is_some_and(|s| s.state == ContainerState::ContainerRunning as i32),
            Err(_) => false,
        }
    }
}

/// The stream options of exec and attach (`command`, `input`, `output`, `error`, `tty`).
#[derive(Debug, Default, PartialEq)]
struct Streams {
    command: Vec<String>,
    input: bool,
    output: bool,
    error: bool,
    tty: bool,
}

impl Streams {
    fn from_query(q: &str) -> Self {
        let mut s = Streams::default();
        for (k, v) in form_pairs(q) {
            let on = v == "1" || v == "true";
            match k.as_str() {
                "command" => s.command.push(v),
                "input" | "stdin" => s.input = on,
                "output" | "stdout" => s.output = on,
                "error" | "stderr" => s.error = on,
                "tty" => s.tty = on,
                _ => {}
            }
        }
        s
    }
}

/// Sends `req` to the streaming `url` and joins the two connections once the runtime's
/// streaming server switches protocols (any error it answers goes back as is).
async fn proxy_upgrade(url: &str, mut req: Request<Incoming>) -> Answer {
    let uri: hyper::Uri = url.parse().map_err(|e| {
        Failure(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("streaming URL {url}: {e}"),
        )
    })?;
    let authority = uri.authority().map(|a| a.to_string()).ok_or_else(|| {
        Failure(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("streaming URL {url} has no host"),
        )
    })?;
    let unreachable = |e: &dyn std::fmt::Display| {
        Failure(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("reaching the runtime's streaming server at {authority}: {e}"),
        )
    };
    let client_upgrade = req
        .headers()
        .contains_key(header::UPGRADE)
        .then(|| hyper::upgrade::on(&mut req));
    let (parts, _body) = req.into_parts();
    let stream = tokio::net::TcpStream::connect(&authority)
        .await
        .map_err(|e| unreachable(&e))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| unreachable(&e))?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "streaming server connection");
        }
    });
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
    let mut out = Request::builder().method(parts.method.clone()).uri(path);
    for (k, v) in &parts.headers {
        if k == header::HOST || k == header::AUTHORIZATION || k == header::CONTENT_LENGTH {
            continue;
        }
        out = out.header(k, v);
    }
    let out = out
        .header(header::HOST, authority.as_str())
        .body(Full::new(Bytes::new()))
        .map_err(|e| Failure::bad(format!("cannot forward the request: {e}")))?;
    let mut resp = sender
        .send_request(out)
        .await
        .map_err(|e| unreachable(&e))?;
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        let Some(client) = client_upgrade else {
            return Err(Failure(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the streaming server upgraded a request that asked for no upgrade".into(),
            ));
        };
        let backend = hyper::upgrade::on(&mut resp);
        tokio::spawn(async move {
            let (client, backend) = match tokio::try_join!(client, backend) {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::debug!(error = %e, "streaming upgrade failed");
                    return;
                }
            };
            let (mut a, mut b) = (TokioIo::new(client), TokioIo::new(backend));
            let _ = tokio::io::copy_bidirectional(&mut a, &mut b).await;
        });
        let (parts, _) = resp.into_parts();
        return Ok(Response::from_parts(parts, Full::new(Bytes::new()).boxed()));
    }
    let (parts, body) = resp.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    Ok(Response::from_parts(parts, Full::new(body).boxed()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_stream_options() {
        let s = Streams::from_query(
            "command=sh&command=-c&command=echo%20hi&input=1&output=1&tty=true",
        );
        assert_eq!(s.command, ["sh", "-c", "echo hi"]);
        assert!(s.input && s.output && s.tty && !s.error);
    }
}
