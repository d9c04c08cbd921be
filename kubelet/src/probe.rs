//! Liveness, readiness and startup probes, run as upstream's prober runs them: one task per
//! probe of each running container, every `periodSeconds` after `initialDelaySeconds`, each
//! attempt bounded by `timeoutSeconds`; `successThreshold` consecutive successes make the
//! result a success and `failureThreshold` consecutive failures a failure. Until a startup
//! probe succeeds the other two wait. The pod worker reads the results: readiness makes the
//! container ready; a failed liveness or startup probe gets it killed and restarted.
//!
//! Handlers: `exec` (the runtime's ExecSync; exit code 0 succeeds), `httpGet` (a status in
//! 200–399 succeeds), `tcpSocket` (a connection succeeds) and `grpc` (the standard
//! `grpc.health.v1.Health/Check` answering SERVING succeeds).

use bosun_cri::v1::ExecSyncRequest;
use bosun_cri::RuntimeService;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinHandle;

/// What a probe does.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Run a command in the container.
    Exec(Vec<String>),
    /// An HTTP GET.
    Http {
        /// `HTTP` or `HTTPS`.
        scheme: String,
        /// The host (the pod's IP when empty).
        host: String,
        /// The port.
        port: u16,
        /// The path and query.
        path: String,
        /// Extra request headers.
        headers: Vec<(String, String)>,
    },
    /// A TCP connection.
    Tcp {
        /// The host (the pod's IP when empty).
        host: String,
        /// The port.
        port: u16,
    },
    /// A gRPC health check.
    Grpc {
        /// The port.
        port: u16,
        /// The service name sent in the request.
        service: String,
    },
    /// A pause (the `sleep` lifecycle handler).
    Sleep(Duration),
}

/// A probe with its timing (upstream's defaults filled in).
#[derive(Clone, Debug, PartialEq)]
pub struct ProbeSpec {
    /// What it does.
    pub action: Action,
    /// Wait before the first attempt.
    pub initial_delay: Duration,
    /// Time between attempts.
    pub period: Duration,
    /// Bound of one attempt.
    pub timeout: Duration,
    /// Consecutive successes for a success.
    pub success_threshold: u32,
    /// Consecutive failures for a failure.
    pub failure_threshold: u32,
    /// The probe's own grace period for the kill a failure causes.
    pub termination_grace_period: Option<i64>,
}

fn secs(v: &Value, default: u64) -> Duration {
    Duration::from_secs(v.as_u64().unwrap_or(default))
}

/// A port as the probe names it: a number, or the name of one of the container's ports.
fn port_of(port: &Value, container: &Value) -> Result<u16, String> {
    if let Some(n) = port.as_u64() {
        return u16::try_from(n)
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("invalid port {n}"));
    }
    let name = port.as_str().ok_or("a probe needs a port")?;
    if let Ok(n) = name.parse::<u16>() {
        return Ok(n);
    }
    container["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"].as_str() == Some(name))
        .and_then(|p| p["containerPort"].as_u64())
        .and_then(|p| u16::try_from(p).ok())
        .ok_or_else(|| format!("the container has no port named {name:?}"))
}

impl Action {
    /// Reads a probe's or a lifecycle hook's handler (`exec`, `httpGet`, `tcpSocket`, `grpc`,
    /// `sleep`); the container's named ports resolve port names.
    pub fn from_handler(probe: &Value, container: &Value) -> Result<Self, String> {
        let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
        Ok(if let Some(cmd) = probe["exec"]["command"].as_array() {
            Action::Exec(cmd.iter().map(s).collect())
        } else if probe["httpGet"].is_object() {
            let h = &probe["httpGet"];
            let mut path = s(&h["path"]);
            if !path.starts_with('/') {
                path.insert(0, '/');
            }
            Action::Http {
                scheme: h["scheme"].as_str().unwrap_or("HTTP").to_uppercase(),
                host: s(&h["host"]),
                port: port_of(&h["port"], container)?,
                path,
                headers: h["httpHeaders"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|x| (s(&x["name"]), s(&x["value"])))
                    .collect(),
            }
        } else if probe["tcpSocket"].is_object() {
            Action::Tcp {
                host: s(&probe["tcpSocket"]["host"]),
                port: port_of(&probe["tcpSocket"]["port"], container)?,
            }
        } else if probe["grpc"].is_object() {
            Action::Grpc {
                port: port_of(&probe["grpc"]["port"], container)?,
                service: s(&probe["grpc"]["service"]),
            }
        } else if let Some(n) = probe["sleep"]["seconds"].as_u64() {
            Action::Sleep(Duration::from_secs(n))
        } else {
            return Err("a handler needs exec, httpGet, tcpSocket, grpc or sleep".into());
        })
    }
}

impl ProbeSpec {
    /// Reads a probe of `container` (its named ports resolve the probe's port names).
    pub fn from_json(probe: &Value, container: &Value) -> Result<Self, String> {
        let action = Action::from_handler(probe, container)?;
        let at_least_one = |v: &Value, d: u64| v.as_u64().unwrap_or(d).max(1) as u32;
        Ok(ProbeSpec {
            action,
            initial_delay: secs(&probe["initialDelaySeconds"], 0),
            period: secs(&probe["periodSeconds"], 10).max(Duration::from_secs(1)),
            timeout: secs(&probe["timeoutSeconds"], 1).max(Duration::from_secs(1)),
            success_threshold: at_least_one(&probe["successThreshold"], 1),
            failure_threshold: at_least_one(&probe["failureThreshold"], 3),
            termination_grace_period: probe["terminationGracePeriodSeconds"].as_i64(),
        })
    }
}

/// The three probes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Restart the container when it fails.
    Liveness,
    /// Serve traffic only while it succeeds.
    Readiness,
    /// Hold the other two until it succeeds; restart when it fails.
    Startup,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Liveness => "Liveness",
            Kind::Readiness => "Readiness",
            Kind::Startup => "Startup",
        }
    }
}

/// What the probes of one container found so far.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Results {
    /// The readiness probe succeeds (true without one).
    pub ready: bool,
    /// The startup probe succeeded (true without one).
    pub started: bool,
    /// A liveness or startup failure: the container must be restarted. The message and the
    /// grace period for the kill.
    pub failed: Option<(String, Option<i64>)>,
}

struct Worker {
    pod: String,
    results: Arc<Mutex<Results>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Worker {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Runs the probes of the node's containers.
pub struct Prober {
    rt: Arc<dyn RuntimeService>,
    workers: Mutex<HashMap<String, Worker>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Prober {
    /// A prober using `rt` for exec probes.
    pub fn new(rt: Arc<dyn RuntimeService>) -> Self {
        Prober {
            rt,
            workers: Mutex::new(HashMap::new()),
        }
    }

    /// Starts probing the running container `id` of pod `pod_uid` (once; later calls for the
    /// same container do nothing). `spec` is its entry in the pod spec; `ip` the pod's IP.
    pub fn ensure(&self, pod_uid: &str, id: &str, spec: &Value, ip: &str) {
        let mut workers = lock(&self.workers);
        if workers.contains_key(id) {
            return;
        }
        let probes: Vec<(Kind, Option<ProbeSpec>)> = [
            (Kind::Startup, "startupProbe"),
            (Kind::Liveness, "livenessProbe"),
            (Kind::Readiness, "readinessProbe"),
        ]
        .into_iter()
        .map(|(k, field)| {
            let p = (!spec[field].is_null()).then(|| ProbeSpec::from_json(&spec[field], spec));
            match p {
                Some(Err(e)) => {
                    tracing::warn!(container = %id, probe = k.name(), error = %e, "probe ignored");
                    (k, None)
                }
                Some(Ok(p)) => (k, Some(p)),
                None => (k, None),
            }
        })
        .collect();
        let has = |k: Kind| probes.iter().any(|(kind, p)| *kind == k && p.is_some());
        let results = Arc::new(Mutex::new(Results {
            ready: !has(Kind::Readiness),
            started: !has(Kind::Startup),
            failed: None,
        }));
        let mut tasks = Vec::new();
        for (kind, p) in probes {
            let Some(p) = p else { continue };
            let ctx = Ctx {
                rt: self.rt.clone(),
                id: id.to_string(),
                ip: ip.to_string(),
                results: results.clone(),
            };
            tasks.push(tokio::spawn(ctx.run(kind, p)));
        }
        workers.insert(
            id.to_string(),
            Worker {
                pod: pod_uid.to_string(),
                results,
                tasks,
            },
        );
    }

    /// The results for container `id` (`None`: not probed — ready and started as it runs).
    pub fn results(&self, id: &str) -> Option<Results> {
        lock(&self.workers)
            .get(id)
            .map(|w| lock(&w.results).clone())
    }

    /// Stops probing the containers of `pod_uid` other than `keep`.
    pub fn retain(&self, pod_uid: &str, keep: &[String]) {
        lock(&self.workers).retain(|id, w| w.pod != pod_uid || keep.contains(id));
    }

    /// Stops probing the containers of pods other than `pods`.
    pub fn retain_pods(&self, pods: &[String]) {
        lock(&self.workers).retain(|_, w| pods.contains(&w.pod));
    }
}

struct Ctx {
    rt: Arc<dyn RuntimeService>,
    id: String,
    ip: String,
    results: Arc<Mutex<Results>>,
}

impl Ctx {
    async fn run(self, kind: Kind, p: ProbeSpec) {
        tokio::time::sleep(p.initial_delay).await;
        let (mut successes, mut failures) = (0u32, 0u32);
        loop {
            let gated = kind != Kind::Startup && !lock(&self.results).started;
            if !gated {
                let outcome = self.attempt(&p).await;
                match outcome {
                    Ok(()) => {
                        successes += 1;
                        failures = 0;
                    }
                    Err(ref why) => {
                        failures += 1;
                        successes = 0;
                        tracing::debug!(container = %self.id, probe = kind.name(), %why, "probe failed");
                    }
                }
                let mut r = lock(&self.results);
                match (kind, &outcome) {
                    (Kind::Readiness, Ok(())) if successes >= p.success_threshold => r.ready = true,
                    (Kind::Readiness, Err(_)) if failures >= p.failure_threshold => r.ready = false,
                    (Kind::Startup, Ok(())) => {
                        r.started = true;
                        return;
                    }
                    (Kind::Liveness | Kind::Startup, Err(why))
                        if failures >= p.failure_threshold =>
                    {
                        r.failed = Some((
                            format!("{} probe failed: {why}", kind.name()),
                            p.termination_grace_period,
                        ));
                        return;
                    }
                    _ => {}
                }
            }
            tokio::time::sleep(p.period).await;
        }
    }

    async fn attempt(&self, p: &ProbeSpec) -> Result<(), String> {
        run_action(&*self.rt, &self.id, &self.ip, &p.action, p.timeout, true).await
    }
}

/// Runs `action` against container `id` of the pod with IP `ip` (an empty host means the
/// pod's IP), bounded by `timeout`. `check_status`: an HTTP answer outside 200–399 fails (as
/// for probes; a lifecycle hook only needs an answer).
pub async fn run_action(
    rt: &dyn RuntimeService,
    id: &str,
    ip: &str,
    action: &Action,
    timeout: Duration,
    check_status: bool,
) -> Result<(), String> {
    let host = |h: &str| {
        if h.is_empty() {
            ip.to_string()
        } else {
            h.to_string()
        }
    };
    match action {
        Action::Exec(cmd) => {
            let r = tokio::time::timeout(
                timeout,
                rt.exec_sync(ExecSyncRequest {
                    container_id: id.to_string(),
                    cmd: cmd.clone(),
                    timeout: timeout.as_secs() as i64,
                }),
            )
            .await
            .map_err(|_| format!("command timed out after {timeout:?}"))?
            .map_err(|e| e.to_string())?;
            if r.exit_code == 0 {
                Ok(())
            } else {
                let out = String::from_utf8_lossy(&r.stdout).trim().to_string();
                Err(format!("command exited with {}: {out}", r.exit_code))
            }
        }
        Action::Tcp { host: h, port } => {
            let addr = join(&host(h), *port);
            tokio::time::timeout(timeout, tokio::net::TcpStream::connect(&addr))
                .await
                .map_err(|_| format!("dial tcp {addr}: i/o timeout"))?
                .map(drop)
                .map_err(|e| format!("dial tcp {addr}: {e}"))
        }
        Action::Http {
            scheme,
            host: h,
            port,
            path,
            headers,
        } => {
            if scheme != "HTTP" {
                return Err(format!("{scheme} probes are not supported yet"));
            }
            let addr = join(&host(h), *port);
            tokio::time::timeout(timeout, http_get(&addr, path, headers, check_status))
                .await
                .map_err(|_| format!("Get \"http://{addr}{path}\": context deadline exceeded"))?
        }
        Action::Grpc { port, service } => {
            let addr = join(&host(""), *port);
            tokio::time::timeout(timeout, grpc_check(&addr, service))
                .await
                .map_err(|_| format!("timeout: health rpc did not complete within {timeout:?}"))?
        }
        Action::Sleep(d) => {
            tokio::time::sleep((*d).min(timeout)).await;
            Ok(())
        }
    }
}

fn join(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

async fn http_get(
    addr: &str,
    path: &str,
    headers: &[(String, String)],
    check_status: bool,
) -> Result<(), String> {
    use http_body_util::Empty;
    let url = format!("http://{addr}{path}");
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("Get \"{url}\": dial tcp {addr}: {e}"))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| format!("Get \"{url}\": {e}"))?;
    tokio::spawn(conn);
    let mut req = hyper::Request::get(path)
        .header(hyper::header::HOST, addr)
        .header(hyper::header::USER_AGENT, "kube-probe/1.32")
        .header(hyper::header::ACCEPT, "*/*");
    for (k, v) in headers {
        req = req.header(k.as_str(), v.as_str());
    }
    let req = req
        .body(Empty::<bytes::Bytes>::new())
        .map_err(|e| format!("Get \"{url}\": {e}"))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("Get \"{url}\": {e}"))?;
    let code = resp.status().as_u16();
    if !check_status || (200..400).contains(&code) {
        Ok(())
    } else {
        Err(format!("HTTP probe failed with statuscode: {code}"))
    }
}

#[derive(Clone, PartialEq, prost::Message)]
struct HealthCheckRequest {
    #[prost(string, tag = "1")]
    service: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct HealthCheckResponse {
    #[prost(int32, tag = "1")]
    status: i32,
}

async fn grpc_check(addr: &str, service: &str) -> Result<(), String> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| e.to_string())?
        .connect()
        .await
        .map_err(|e| format!("failed to connect service {addr:?}: {e}"))?;
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.map_err(|e| e.to_string())?;
    let codec = tonic_prost::ProstCodec::<HealthCheckRequest, HealthCheckResponse>::default();
    let path = http::uri::PathAndQuery::from_static("/grpc.health.v1.Health/Check");
    let resp = grpc
        .unary(
            tonic::Request::new(HealthCheckRequest {
                service: service.to_string(),
            }),
            path,
            codec,
        )
        .await
        .map_err(|e| format!("health rpc failed: {}", e.message()))?;
    match resp.into_inner().status {
        1 => Ok(()),
        s => Err(format!("service unhealthy (responded with {s})")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_probes_with_upstream_defaults() {
        let c = json!({"ports": [{"name": "http", "containerPort": 8080}]});
        let p = ProbeSpec::from_json(&json!({"httpGet": {"path": "healthz", "port": "http"}}), &c)
            .unwrap();
        assert_eq!(
            p.action,
            Action::Http {
                scheme: "HTTP".into(),
                host: String::new(),
                port: 8080,
                path: "/healthz".into(),
                headers: vec![]
            }
        );
        assert_eq!(
            (
                p.initial_delay,
                p.period,
                p.timeout,
                p.success_threshold,
                p.failure_threshold
            ),
            (
                Duration::ZERO,
                Duration::from_secs(10),
                Duration::from_secs(1),
                1,
                3
            )
        );
        let p = ProbeSpec::from_json(
            &json!({"exec": {"command": ["true"]}, "periodSeconds": 2, "failureThreshold": 1,
                    "initialDelaySeconds": 5, "timeoutSeconds": 3, "terminationGracePeriodSeconds": 4}),
            &c,
        )
        .unwrap();
        assert_eq!(p.action, Action::Exec(vec!["true".into()]));
        assert_eq!(p.period, Duration::from_secs(2));
        assert_eq!(p.initial_delay, Duration::from_secs(5));
        assert_eq!(p.termination_grace_period, Some(4));
        assert!(ProbeSpec::from_json(&json!({"tcpSocket": {"port": "nope"}}), &c).is_err());
        assert!(ProbeSpec::from_json(&json!({}), &c).is_err());
        assert_eq!(
            ProbeSpec::from_json(&json!({"grpc": {"port": 9000}}), &c)
                .unwrap()
                .action,
            Action::Grpc {
                port: 9000,
                service: String::new()
            }
        );
    }

    #[tokio::test]
    async fn http_and_tcp_probes_reach_a_server() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((conn, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(
                        |req: hyper::Request<hyper::body::Incoming>| async move {
                            let code = if req.uri().path() == "/ok" { 200 } else { 503 };
                            let mut r = hyper::Response::new(http_body_util::Full::new(
                                bytes::Bytes::new(),
                            ));
                            *r.status_mut() = hyper::StatusCode::from_u16(code).unwrap();
                            Ok::<_, std::convert::Infallible>(r)
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(conn), svc)
                        .await;
                });
            }
        });
        let a = addr.to_string();
        assert_eq!(http_get(&a, "/ok", &[], true).await, Ok(()));
        let bad = http_get(&a, "/bad", &[], true).await.unwrap_err();
        assert!(bad.contains("503"), "{bad}");
        // A hook only needs an answer.
        assert_eq!(http_get(&a, "/bad", &[], false).await, Ok(()));
        // Nothing listens on a closed port.
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let gone = closed.local_addr().unwrap().to_string();
        drop(closed);
        assert!(http_get(&gone, "/", &[], false).await.is_err());
        assert!(grpc_check(&gone, "").await.is_err());
    }
}
