//! The CRI streaming server and client. Exec, Attach and PortForward do not stream over
//! gRPC: the runtime answers with a one-time URL, and the client (the kubelet, for `kubectl
//! exec`) upgrades an HTTP request to that URL to a WebSocket that carries the streams, as
//! upstream's `k8s.io/kubelet/pkg/cri/streaming` server does:
//!
//! - exec and attach speak the channel protocols `v5.channel.k8s.io`, `v4.channel.k8s.io` and
//!   `channel.k8s.io`: every binary message starts with a channel byte (0 stdin, 1 stdout,
//!   2 stderr, 3 error — a `metav1.Status` at the end from v4 on —, 4 terminal resize as
//!   `{"Width":W,"Height":H}`, and in v5 `[255, channel]` closing a channel);
//! - port-forward speaks `v4.channel.k8s.io` (and `portforward.k8s.io`): per requested port
//!   `i`, channel `2i` carries data and `2i+1` errors, and the first message on each starts
//!   with the port number (two bytes, little-endian).
//!
//! - over SPDY/3.1 ([`crate::spdy`]), as older clients and every `kubectl port-forward`
//!   speak: `Upgrade: SPDY/3.1` with `X-Stream-Protocol-Version: v4.channel.k8s.io` (exec and
//!   attach: one SPDY stream per standard stream plus `error` and `resize`) or
//!   `portforward.k8s.io` (a `data` and an `error` stream per connection); and SPDY tunnelled
//!   in WebSocket binary messages (`SPDY/3.1+portforward.k8s.io`, kubectl 1.31 and later).
//!
//! [`StreamingServer`] serves any [`StreamingRuntime`]; [`client`] is the other end.

use crate::v1::{
    AttachRequest, AttachResponse, ExecRequest, ExecResponse, PortForwardRequest,
    PortForwardResponse,
};
use crate::{spdy, Error, Result};
use async_trait::async_trait;
use futures_util::{SinkExt, StreamExt};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// A terminal size change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TerminalSize {
    /// Columns.
    pub width: u16,
    /// Rows.
    pub height: u16,
}

/// A boxed reader.
pub type Reader = Pin<Box<dyn AsyncRead + Send>>;
/// A boxed writer.
pub type Writer = Pin<Box<dyn AsyncWrite + Send>>;

/// The streams of one exec or attach session; `None` for the ones not requested.
pub struct StreamIo {
    /// What the client types.
    pub stdin: Option<Reader>,
    /// The process's standard output (with a TTY, all its output).
    pub stdout: Option<Writer>,
    /// The process's standard error (never with a TTY).
    pub stderr: Option<Writer>,
    /// Terminal size changes (TTY sessions).
    pub resize: Option<mpsc::Receiver<TerminalSize>>,
}

/// What a runtime does for the streaming server.
#[async_trait]
pub trait StreamingRuntime: Send + Sync + 'static {
    /// Runs `req.cmd` in the container with `io`; returns its exit code.
    async fn exec_stream(&self, req: ExecRequest, io: StreamIo) -> Result<i32>;
    /// Attaches `io` to the container's main process until it exits or the client leaves.
    async fn attach_stream(&self, req: AttachRequest, io: StreamIo) -> Result<()>;
    /// Connects to `port` on localhost inside the sandbox's network namespace.
    async fn port_forward_connect(
        &self,
        sandbox_id: &str,
        port: u16,
    ) -> Result<tokio::net::TcpStream>;
}

enum Pending {
    Exec(ExecRequest),
    Attach(AttachRequest),
    PortForward(PortForwardRequest),
}

/// How long a URL stays valid (upstream's default).
const TOKEN_TTL: Duration = Duration::from_secs(60);

/// The streaming server: hands out one-time URLs and serves them.
pub struct StreamingServer {
    addr: SocketAddr,
    pending: Mutex<HashMap<String, (Pending, Instant)>>,
    runtime: Weak<dyn StreamingRuntime>,
}

fn token() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

impl StreamingServer {
    /// Binds `addr` (port 0 for any) and serves in the background; the runtime is held weakly
    /// (the server stops answering once it is gone).
    pub async fn start(addr: SocketAddr, runtime: Weak<dyn StreamingRuntime>) -> Result<Arc<Self>> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| Error::Internal(format!("binding the streaming server on {addr}: {e}")))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::Internal(format!("streaming server address: {e}")))?;
        let server = Arc::new(StreamingServer {
            addr,
            pending: Mutex::new(HashMap::new()),
            runtime,
        });
        let weak = Arc::downgrade(&server);
        tokio::spawn(async move {
            loop {
                let Ok((conn, _)) = listener.accept().await else {
                    continue;
                };
                let Some(server) = weak.upgrade() else {
                    return;
                };
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let server = server.clone();
                        async move { Ok::<_, std::convert::Infallible>(server.handle(req)) }
                    });
                    let conn = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(conn), svc)
                        .with_upgrades();
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "streaming connection");
                    }
                });
            }
        });
        tracing::info!(%addr, "CRI streaming server listening");
        Ok(server)
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn put(&self, kind: &str, p: Pending) -> String {
        let t = token();
        let mut g = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        g.retain(|_, (_, at)| at.elapsed() < TOKEN_TTL);
        g.insert(t.clone(), (p, Instant::now()));
        format!("http://{}/{kind}/{t}", self.addr)
    }

    fn take(&self, t: &str) -> Option<Pending> {
        let mut g = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        g.remove(t)
            .filter(|(_, at)| at.elapsed() < TOKEN_TTL)
            .map(|(p, _)| p)
    }

    /// A URL for an exec session.
    pub fn exec_url(&self, req: ExecRequest) -> Result<ExecResponse> {
        if req.cmd.is_empty() {
            return Err(Error::InvalidArgument("cmd is required".into()));
        }
        check_streams(req.stdin, req.stdout, req.stderr, req.tty)?;
        Ok(ExecResponse {
            url: self.put("exec", Pending::Exec(req)),
        })
    }

    /// A URL for an attach session.
    pub fn attach_url(&self, req: AttachRequest) -> Result<AttachResponse> {
        check_streams(req.stdin, req.stdout, req.stderr, req.tty)?;
        Ok(AttachResponse {
            url: self.put("attach", Pending::Attach(req)),
        })
    }

    /// A URL for a port-forward session.
    pub fn port_forward_url(&self, req: PortForwardRequest) -> Result<PortForwardResponse> {
        if req.port.iter().any(|p| !(1..=65535).contains(p)) {
            return Err(Error::InvalidArgument(format!(
                "invalid ports {:?}",
                req.port
            )));
        }
        Ok(PortForwardResponse {
            url: self.put("portforward", Pending::PortForward(req)),
        })
    }

    fn handle(self: &Arc<Self>, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let path = req.uri().path().to_string();
        let mut parts = path.trim_start_matches('/').splitn(2, '/');
        let (kind, tok) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let Some(pending) = self.take(tok) else {
            return plain(StatusCode::NOT_FOUND, "unknown or expired streaming token");
        };
        let kind_ok = matches!(
            (kind, &pending),
            ("exec", Pending::Exec(_))
                | ("attach", Pending::Attach(_))
                | ("portforward", Pending::PortForward(_))
        );
        if !kind_ok {
            return plain(StatusCode::NOT_FOUND, "unknown streaming path");
        }
        let Some(runtime) = self.runtime.upgrade() else {
            return plain(StatusCode::SERVICE_UNAVAILABLE, "the runtime is gone");
        };
        let spdy = req
            .headers()
            .get(hyper::header::UPGRADE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.to_ascii_lowercase().contains("spdy/3.1"));
        if spdy {
            return self.handle_spdy(req, pending, runtime);
        }
        let offered: Vec<String> = req
            .headers()
            .get_all("sec-websocket-protocol")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(',').map(|p| p.trim().to_string()))
            .collect();
        let supported: &[&str] = match pending {
            Pending::PortForward(_) => &[PF_SPDY_TUNNEL, PF_V4, "portforward.k8s.io", CHANNEL_V1],
            _ => &[CHANNEL_V5, CHANNEL_V4, CHANNEL_V1],
        };
        let protocol = if offered.is_empty() {
            CHANNEL_V1.to_string()
        } else {
            match supported.iter().find(|s| offered.iter().any(|o| o == *s)) {
                Some(p) => p.to_string(),
                None => {
                    return plain(
                        StatusCode::BAD_REQUEST,
                        &format!("none of the offered protocols {offered:?} is supported; use one of {supported:?}"),
                    )
                }
            }
        };
        let Some(key) = req
            .headers()
            .get("sec-websocket-key")
            .and_then(|k| k.to_str().ok())
            .map(String::from)
        else {
            return plain(
                StatusCode::BAD_REQUEST,
                "this server streams over WebSocket only (send an Upgrade: websocket request)",
            );
        };
        let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
        let proto = protocol.clone();
        tokio::spawn(async move {
            let upgraded = match hyper::upgrade::on(req).await {
                Ok(u) => u,
                Err(e) => {
                    tracing::debug!(error = %e, "streaming upgrade failed");
                    return;
                }
            };
            let ws =
                WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
            match pending {
                Pending::Exec(r) => {
                    serve_remote_command(
                        ws,
                        &proto,
                        r.stdin,
                        r.stdout,
                        r.stderr,
                        r.tty,
                        async move |io| runtime.exec_stream(r.clone(), io).await,
                    )
                    .await
                }
                Pending::Attach(r) => {
                    serve_remote_command(
                        ws,
                        &proto,
                        r.stdin,
                        r.stdout,
                        r.stderr,
                        r.tty,
                        async move |io| runtime.attach_stream(r.clone(), io).await.map(|()| 0),
                    )
                    .await
                }
                Pending::PortForward(r) if proto == PF_SPDY_TUNNEL => {
                    let conn = spdy::Connection::serve(ws_tunnel(ws));
                    serve_port_forward_spdy(conn, runtime, r.pod_sandbox_id).await
                }
                Pending::PortForward(r) => serve_port_forward(ws, runtime, r).await,
            }
        });
        let mut resp = Response::new(Full::new(Bytes::new()));
        *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let h = resp.headers_mut();
        h.insert(
            hyper::header::CONNECTION,
            hyper::header::HeaderValue::from_static("Upgrade"),
        );
        h.insert(
            hyper::header::UPGRADE,
            hyper::header::HeaderValue::from_static("websocket"),
        );
        if let Ok(v) = hyper::header::HeaderValue::from_str(&accept) {
            h.insert("sec-websocket-accept", v);
        }
        if let Ok(v) = hyper::header::HeaderValue::from_str(&protocol) {
            h.insert("sec-websocket-protocol", v);
        }
        resp
    }
}

/// Ends the session with a Normal (1000) close: clients (client-go) treat a close without a
/// code as an error on every stream still open.
async fn close_normally(sink: &mut futures_util::stream::SplitSink<Ws, Message>) {
    use tokio_tungstenite::tungstenite::protocol::{frame::coding::CloseCode, CloseFrame};
    let _ = sink
        .send(Message::Close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        })))
        .await;
    let _ = sink.close().await;
}

impl StreamingServer {
    /// A SPDY upgrade (`Upgrade: SPDY/3.1`): port-forward (`portforward.k8s.io`), or exec
    /// and attach (`v4.channel.k8s.io`), as `X-Stream-Protocol-Version` negotiates.
    fn handle_spdy(
        self: &Arc<Self>,
        req: Request<Incoming>,
        pending: Pending,
        runtime: Arc<dyn StreamingRuntime>,
    ) -> Response<Full<Bytes>> {
        let offered: Vec<String> = req
            .headers()
            .get_all("x-stream-protocol-version")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(',').map(|p| p.trim().to_string()))
            .collect();
        let wanted = match pending {
            Pending::PortForward(_) => "portforward.k8s.io",
            _ => CHANNEL_V4,
        };
        if !offered.iter().any(|o| o == wanted) {
            return plain(
                StatusCode::FORBIDDEN,
                &format!("unable to upgrade: none of the offered protocols {offered:?} is supported; use {wanted}"),
            );
        }
        tokio::spawn(async move {
            let upgraded = match hyper::upgrade::on(req).await {
                Ok(u) => u,
                Err(e) => {
                    tracing::debug!(error = %e, "spdy upgrade failed");
                    return;
                }
            };
            let conn = spdy::Connection::serve(TokioIo::new(upgraded));
            match pending {
                Pending::PortForward(r) => {
                    serve_port_forward_spdy(conn, runtime, r.pod_sandbox_id).await
                }
                Pending::Exec(r) => {
                    serve_remote_command_spdy(
                        conn,
                        r.stdin,
                        r.stdout,
                        r.stderr,
                        r.tty,
                        async move |io| runtime.exec_stream(r.clone(), io).await,
                    )
                    .await
                }
                Pending::Attach(r) => {
                    serve_remote_command_spdy(
                        conn,
                        r.stdin,
                        r.stdout,
                        r.stderr,
                        r.tty,
                        async move |io| runtime.attach_stream(r.clone(), io).await.map(|()| 0),
                    )
                    .await
                }
            }
        });
        let mut resp = Response::new(Full::new(Bytes::new()));
        *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let h = resp.headers_mut();
        h.insert(
            hyper::header::CONNECTION,
            hyper::header::HeaderValue::from_static("Upgrade"),
        );
        h.insert(
            hyper::header::UPGRADE,
            hyper::header::HeaderValue::from_static("SPDY/3.1"),
        );
        h.insert(
            "x-stream-protocol-version",
            hyper::header::HeaderValue::from_static(wanted),
        );
        resp
    }
}

/// The byte stream a client tunnels through WebSocket binary messages (newer kubectl's
/// port-forward: SPDY inside WebSocket).
fn ws_tunnel(ws: Ws) -> tokio::io::DuplexStream {
    let (mine, theirs) = tokio::io::duplex(256 * 1024);
    let (mut sink, mut source) = ws.split();
    let (mut r, mut w) = tokio::io::split(mine);
    tokio::spawn(async move {
        while let Some(Ok(m)) = source.next().await {
            match m {
                Message::Binary(b) if w.write_all(&b).await.is_err() => break,
                Message::Close(_) => break,
                _ => {}
            }
        }
        let _ = w.shutdown().await;
    });
    tokio::spawn(async move {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if sink.send(Message::binary(buf[..n].to_vec())).await.is_err() {
                        return;
                    }
                }
            }
        }
        close_normally(&mut sink).await;
    });
    theirs
}

/// Port-forward over SPDY: the client opens a `data` and an `error` stream per connection
/// (paired by `requestID`, the pod port in `port`); the data stream is joined to a
/// connection to that port in the sandbox, a failure is written on the error stream.
async fn serve_port_forward_spdy(
    mut conn: spdy::Connection,
    runtime: Arc<dyn StreamingRuntime>,
    sandbox: String,
) {
    type Pair = (Option<spdy::Stream>, Option<spdy::Stream>);
    let mut pairs: HashMap<String, Pair> = HashMap::new();
    while let Some(s) = conn.accept().await {
        let request = s
            .headers
            .get("requestid")
            .cloned()
            .unwrap_or_else(|| s.id.to_string());
        let slot = pairs.entry(request.clone()).or_default();
        match s.headers.get("streamtype").map(String::as_str) {
            Some("data") => slot.0 = Some(s),
            Some("error") => slot.1 = Some(s),
            _ => {
                s.writer.reset().await;
                continue;
            }
        }
        if matches!(pairs.get(&request), Some((Some(_), Some(_)))) {
            if let Some((Some(data), Some(error))) = pairs.remove(&request) {
                tokio::spawn(forward_one(runtime.clone(), sandbox.clone(), data, error));
            }
        }
    }
    conn.close().await;
}

async fn forward_one(
    runtime: Arc<dyn StreamingRuntime>,
    sandbox: String,
    data: spdy::Stream,
    error: spdy::Stream,
) {
    let port = data
        .headers
        .get("port")
        .and_then(|p| p.parse::<u16>().ok())
        .filter(|p| *p > 0);
    let connected = match port {
        Some(p) => runtime
            .port_forward_connect(&sandbox, p)
            .await
            .map_err(|e| format!("error forwarding port {p} to pod {sandbox}: {e}")),
        None => Err(format!("invalid port {:?}", data.headers.get("port"))),
    };
    let tcp = match connected {
        Ok(t) => t,
        Err(msg) => {
            error.writer.write(msg.as_bytes()).await;
            error.writer.close().await;
            data.writer.close().await;
            return;
        }
    };
    let (mut r, mut w) = tcp.into_split();
    let mut incoming = data.incoming;
    let to_pod = async move {
        while let Some(b) = incoming.recv().await {
            if w.write_all(&b).await.is_err() {
                break;
            }
        }
        let _ = w.shutdown().await;
    };
    let from_pod = copy_to_stream(&mut r, &data.writer);
    tokio::join!(to_pod, from_pod);
    error.writer.close().await;
}

/// A writer whose bytes go out on a SPDY stream (closed when the writer is dropped); the
/// handle finishes once everything is sent.
fn spdy_writer(w: spdy::StreamWriter) -> (Writer, tokio::task::JoinHandle<()>) {
    let (mine, mut r) = tokio::io::duplex(64 * 1024);
    let task = tokio::spawn(async move { copy_to_stream(&mut r, &w).await });
    (Box::pin(mine), task)
}

/// Sends what `r` yields on a SPDY stream until it ends, then closes the stream (or stops
/// when the connection is gone).
async fn copy_to_stream(r: &mut (impl AsyncRead + Unpin), w: &spdy::StreamWriter) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if !w.write(&buf[..n]).await {
                    return;
                }
            }
        }
    }
    w.close().await;
}

/// Exec or attach over SPDY (`v4.channel.k8s.io`): the client opens an `error` stream and one
/// per requested stream (`stdin`, `stdout`, `stderr`, and `resize` with a TTY); at the end the
/// error stream carries the `metav1.Status`.
async fn serve_remote_command_spdy<F>(
    mut conn: spdy::Connection,
    stdin: bool,
    stdout: bool,
    stderr: bool,
    tty: bool,
    run: F,
) where
    F: AsyncFnOnce(StreamIo) -> Result<i32>,
{
    let expected = 1 + [stdin, stdout, stderr && !tty, tty]
        .iter()
        .filter(|b| **b)
        .count();
    let mut streams: HashMap<String, spdy::Stream> = HashMap::new();
    let deadline = tokio::time::sleep(Duration::from_secs(30));
    tokio::pin!(deadline);
    while streams.len() < expected {
        tokio::select! {
            s = conn.accept() => match s {
                Some(s) => {
                    let kind = s.headers.get("streamtype").cloned().unwrap_or_default();
                    streams.insert(kind, s);
                }
                None => return,
            },
            _ = &mut deadline => {
                tracing::debug!("timed out waiting for the client to create streams");
                conn.close().await;
                return;
            }
        }
    }
    let error = streams.remove("error");
    let stdin_r = streams.remove("stdin").map(|s| {
        let (mut w, r) = tokio::io::duplex(64 * 1024);
        let mut incoming = s.incoming;
        tokio::spawn(async move {
            while let Some(b) = incoming.recv().await {
                if w.write_all(&b).await.is_err() {
                    break;
                }
            }
        });
        Box::pin(r) as Reader
    });
    let mut flushes = Vec::new();
    let mut out = |name: &str| {
        streams.remove(name).map(|s| {
            let (w, task) = spdy_writer(s.writer);
            flushes.push(task);
            w
        })
    };
    let (stdout_w, stderr_w) = (out("stdout"), out("stderr"));
    let resize = streams.remove("resize").map(|s| {
        let (tx, rx) = mpsc::channel::<TerminalSize>(4);
        let mut incoming = s.incoming;
        tokio::spawn(async move {
            // A stream of JSON objects, one per size change.
            let mut buf: Vec<u8> = Vec::new();
            while let Some(b) = incoming.recv().await {
                buf.extend_from_slice(&b);
                let mut it = serde_json::Deserializer::from_slice(&buf).into_iter::<TerminalSize>();
                let mut used = 0;
                while let Some(Ok(size)) = it.next() {
                    used = it.byte_offset();
                    let _ = tx.try_send(size);
                }
                buf.drain(..used);
            }
        });
        rx
    });
    let io = StreamIo {
        stdin: stdin_r,
        stdout: stdout_w,
        stderr: stderr_w,
        resize,
    };
    let result = run(io).await;
    for f in flushes {
        let _ = f.await;
    }
    if let Some(e) = error {
        let status = match &result {
            Ok(code) => exit_status_json(*code),
            Err(e) => error_status_json(&e.to_string()),
        };
        e.writer.write(status.as_bytes()).await;
        e.writer.close().await;
    }
    conn.close().await;
}

fn plain(code: StatusCode, msg: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(msg.to_string())));
    *r.status_mut() = code;
    r
}

fn check_streams(stdin: bool, stdout: bool, stderr: bool, tty: bool) -> Result<()> {
    if !(stdin || stdout || stderr) {
        return Err(Error::InvalidArgument(
            "one of stdin, stdout or stderr must be set".into(),
        ));
    }
    if tty && stderr {
        return Err(Error::InvalidArgument(
            "tty and stderr cannot both be set".into(),
        ));
    }
    Ok(())
}

/// `v5.channel.k8s.io`.
pub const CHANNEL_V5: &str = "v5.channel.k8s.io";
/// `v4.channel.k8s.io`.
pub const CHANNEL_V4: &str = "v4.channel.k8s.io";
/// `channel.k8s.io`.
pub const CHANNEL_V1: &str = "channel.k8s.io";
const PF_V4: &str = "v4.channel.k8s.io";
/// SPDY port-forwarding tunnelled through WebSocket binary messages (kubectl 1.31 and later).
const PF_SPDY_TUNNEL: &str = "SPDY/3.1+portforward.k8s.io";

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;
const RESIZE: u8 = 4;
const CLOSE: u8 = 255;

type Ws = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// Sends what `r` yields as messages on channel `ch` until it ends or the peer is gone.
async fn pump(mut r: impl AsyncRead + Unpin, ch: u8, tx: mpsc::Sender<Message>) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let mut m = Vec::with_capacity(n + 1);
                m.push(ch);
                m.extend_from_slice(&buf[..n]);
                if tx.send(Message::binary(m)).await.is_err() {
                    break;
                }
            }
        }
    }
}

/// A writer that sends what is written as messages on one channel.
fn channel_writer(ch: u8, tx: mpsc::Sender<Message>) -> Writer {
    let (w, r) = tokio::io::duplex(64 * 1024);
    tokio::spawn(pump(r, ch, tx));
    Box::pin(w)
}

/// The `metav1.Status` the error channel carries at the end (v4 and later).
pub fn exit_status_json(code: i32) -> String {
    if code == 0 {
        return r#"{"metadata":{},"status":"Success"}"#.to_string();
    }
    serde_json::json!({
        "metadata": {},
        "status": "Failure",
        "message": format!("command terminated with non-zero exit code: error executing command [...], exit code {code}"),
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
    })
    .to_string()
}

fn error_status_json(msg: &str) -> String {
    serde_json::json!({"metadata": {}, "status": "Failure", "message": msg}).to_string()
}

#[allow(clippy::too_many_arguments)]
async fn serve_remote_command<F>(
    ws: Ws,
    protocol: &str,
    stdin: bool,
    stdout: bool,
    stderr: bool,
    tty: bool,
    run: F,
) where
    F: AsyncFnOnce(StreamIo) -> Result<i32>,
{
    let (mut sink, mut source) = ws.split();
    let (tx, mut rx) = mpsc::channel::<Message>(16);
    // The writer task: everything to the client goes through it, in order.
    let writer = tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            if sink.send(m).await.is_err() {
                return;
            }
        }
        close_normally(&mut sink).await;
    });
    // Announce the channels, as upstream does (a message holding only the channel byte).
    for (on, ch) in [(stdout, STDOUT), (stderr, STDERR), (true, ERROR)] {
        if on {
            let _ = tx.send(Message::binary(vec![ch])).await;
        }
    }
    let (stdin_w, stdin_r) = tokio::io::duplex(64 * 1024);
    let (resize_tx, resize_rx) = mpsc::channel::<TerminalSize>(4);
    let v5 = protocol == CHANNEL_V5;
    // The reader task: stdin and resize from the client.
    let reader = tokio::spawn(async move {
        let mut stdin_w = Some(stdin_w);
        while let Some(Ok(m)) = source.next().await {
            let data = match m {
                Message::Binary(b) => b,
                Message::Close(_) => break,
                _ => continue,
            };
            match data.first().copied() {
                Some(STDIN) => {
                    if let Some(w) = stdin_w.as_mut() {
                        if w.write_all(&data[1..]).await.is_err() {
                            stdin_w = None;
                        }
                    }
                }
                Some(RESIZE) => {
                    if let Ok(size) = serde_json::from_slice::<TerminalSize>(&data[1..]) {
                        let _ = resize_tx.try_send(size);
                    }
                }
                Some(CLOSE) if v5 && data.get(1) == Some(&STDIN) => stdin_w = None,
                _ => {}
            }
        }
    });
    let io = StreamIo {
        stdin: stdin.then(|| Box::pin(stdin_r) as Reader),
        stdout: stdout.then(|| channel_writer(STDOUT, tx.clone())),
        stderr: stderr.then(|| channel_writer(STDERR, tx.clone())),
        resize: tty.then_some(resize_rx),
    };
    let result = run(io).await;
    // Let the channel writers flush what the process wrote last.
    tokio::time::sleep(Duration::from_millis(10)).await;
    let status = match &result {
        Ok(code) => exit_status_json(*code),
        Err(e) => error_status_json(&e.to_string()),
    };
    if protocol != CHANNEL_V1 || result.is_err() {
        let mut m = vec![ERROR];
        m.extend_from_slice(status.as_bytes());
        let _ = tx.send(Message::binary(m)).await;
    }
    drop(tx);
    reader.abort();
    let _ = writer.await;
}

async fn serve_port_forward(ws: Ws, runtime: Arc<dyn StreamingRuntime>, req: PortForwardRequest) {
    let (mut sink, mut source) = ws.split();
    let ports: Vec<u16> = req
        .port
        .iter()
        .filter_map(|p| u16::try_from(*p).ok())
        .collect();
    let (tx, mut rx) = mpsc::channel::<Message>(16);
    let writer = tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            if sink.send(m).await.is_err() {
                return;
            }
        }
        close_normally(&mut sink).await;
    });
    let mut conns: Vec<Option<tokio::net::tcp::OwnedWriteHalf>> = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let (data, err) = (2 * i as u8, 2 * i as u8 + 1);
        let p = port.to_le_bytes();
        let _ = tx.send(Message::binary(vec![data, p[0], p[1]])).await;
        let _ = tx.send(Message::binary(vec![err, p[0], p[1]])).await;
        match runtime
            .port_forward_connect(&req.pod_sandbox_id, *port)
            .await
        {
            Ok(stream) => {
                let (r, w) = stream.into_split();
                conns.push(Some(w));
                tokio::spawn(pump(r, data, tx.clone()));
            }
            Err(e) => {
                conns.push(None);
                let mut m = vec![err];
                m.extend_from_slice(
                    format!(
                        "error forwarding port {port} to pod {}: {e}",
                        req.pod_sandbox_id
                    )
                    .as_bytes(),
                );
                let _ = tx.send(Message::binary(m)).await;
            }
        }
    }
    drop(tx);
    while let Some(Ok(m)) = source.next().await {
        let data = match m {
            Message::Binary(b) => b,
            Message::Close(_) => break,
            _ => continue,
        };
        let Some(ch) = data.first().copied() else {
            continue;
        };
        let i = usize::from(ch / 2);
        if ch % 2 == 0 {
            if let Some(Some(w)) = conns.get_mut(i) {
                if w.write_all(&data[1..]).await.is_err() {
                    conns[i] = None;
                }
            }
        }
    }
    drop(conns);
    writer.abort();
}

pub mod client {
    //! The client end of the streaming protocols over WebSocket: what the kubelet (and tests)
    //! use against any CRI runtime's streaming URL.

    use super::*;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;

    /// The result of an exec or attach session.
    #[derive(Clone, Debug, Default, PartialEq, Eq)]
    pub struct Output {
        /// Everything on stdout.
        pub stdout: Vec<u8>,
        /// Everything on stderr.
        pub stderr: Vec<u8>,
        /// The exit code (from the final status; 0 when it said Success).
        pub exit_code: i32,
        /// The raw status JSON, if one came.
        pub status: Option<String>,
    }

    async fn connect(
        url: &str,
        protocol: &str,
    ) -> Result<WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>> {
        // The runtime hands out http(s) URLs; the WebSocket client wants ws(s).
        let ws_url = match url.split_once("://") {
            Some(("http", rest)) => format!("ws://{rest}"),
            Some(("https", rest)) => format!("wss://{rest}"),
            _ => url.to_string(),
        };
        let mut req = ws_url
            .as_str()
            .into_client_request()
            .map_err(|e| Error::InvalidArgument(format!("streaming URL {url:?}: {e}")))?;
        req.headers_mut().insert(
            "sec-websocket-protocol",
            protocol
                .parse()
                .map_err(|_| Error::InvalidArgument("protocol".into()))?,
        );
        let (ws, _) = tokio_tungstenite::connect_async(req)
            .await
            .map_err(|e| Error::Unavailable(format!("connecting to {url}: {e}")))?;
        Ok(ws)
    }

    type Conn = WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

    /// An open exec or attach session (`v4.channel.k8s.io`).
    pub struct Session {
        sink: futures_util::stream::SplitSink<Conn, Message>,
        source: futures_util::stream::SplitStream<Conn>,
    }

    /// What the server sent.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub enum Event {
        /// Bytes on stdout.
        Stdout(Vec<u8>),
        /// Bytes on stderr.
        Stderr(Vec<u8>),
        /// The final status (a `metav1.Status` as JSON).
        Status(String),
    }

    impl Session {
        /// Connects to an exec or attach URL.
        pub async fn open(url: &str) -> Result<Session> {
            let (sink, source) = connect(url, CHANNEL_V4).await?.split();
            Ok(Session { sink, source })
        }

        async fn send(&mut self, ch: u8, data: &[u8]) -> Result<()> {
            let mut m = Vec::with_capacity(data.len() + 1);
            m.push(ch);
            m.extend_from_slice(data);
            self.sink
                .send(Message::binary(m))
                .await
                .map_err(|e| Error::Unavailable(format!("streaming: {e}")))
        }

        /// Sends input.
        pub async fn stdin(&mut self, data: &[u8]) -> Result<()> {
            self.send(STDIN, data).await
        }

        /// Sends a terminal size.
        pub async fn resize(&mut self, size: TerminalSize) -> Result<()> {
            let json = serde_json::to_vec(&size).map_err(|e| Error::Internal(e.to_string()))?;
            self.send(RESIZE, &json).await
        }

        /// The next thing the server sent; `None` when the session is over.
        pub async fn next(&mut self) -> Result<Option<Event>> {
            while let Some(m) = self.source.next().await {
                let m = m.map_err(|e| Error::Unavailable(format!("streaming: {e}")))?;
                let Message::Binary(b) = m else { continue };
                // A message holding only the channel byte announces the channel.
                if b.len() < 2 {
                    continue;
                }
                let data = b[1..].to_vec();
                match b[0] {
                    STDOUT => return Ok(Some(Event::Stdout(data))),
                    STDERR => return Ok(Some(Event::Stderr(data))),
                    ERROR => {
                        return Ok(Some(Event::Status(
                            String::from_utf8_lossy(&data).into_owned(),
                        )))
                    }
                    _ => {}
                }
            }
            Ok(None)
        }
    }

    /// The exit code a final status reports (0 for Success).
    pub fn exit_code(status: &str) -> i32 {
        let v: serde_json::Value = serde_json::from_str(status).unwrap_or_default();
        if v["status"] == "Success" {
            return 0;
        }
        v["details"]["causes"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["reason"] == "ExitCode"))
            .and_then(|c| c["message"].as_str()?.parse().ok())
            .unwrap_or(-1)
    }

    /// Runs an exec session at `url`: sends the size (if any) and `stdin` (v4 has no way to
    /// close input, so a command reading it should know when to stop), and collects stdout
    /// and stderr until the final status.
    pub async fn remote_command(
        url: &str,
        stdin: Option<&[u8]>,
        resize: Option<TerminalSize>,
    ) -> Result<Output> {
        let mut s = Session::open(url).await?;
        if let Some(size) = resize {
            s.resize(size).await?;
        }
        if let Some(input) = stdin {
            s.stdin(input).await?;
        }
        let mut out = Output::default();
        while let Some(e) = s.next().await? {
            match e {
                Event::Stdout(d) => out.stdout.extend_from_slice(&d),
                Event::Stderr(d) => out.stderr.extend_from_slice(&d),
                Event::Status(text) => {
                    out.exit_code = exit_code(&text);
                    out.status = Some(text);
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Opens a port-forward session at `url` for one port and returns a byte stream to it.
    pub async fn port_forward(url: &str, port: u16) -> Result<tokio::io::DuplexStream> {
        let ws = connect(url, PF_V4).await?;
        let (mut sink, mut source) = ws.split();
        let (mine, theirs) = tokio::io::duplex(64 * 1024);
        let (mut r, mut w) = tokio::io::split(theirs);
        let port_bytes = port.to_le_bytes();
        tokio::spawn(async move {
            let mut seen = [false, false];
            while let Some(Ok(m)) = source.next().await {
                let Message::Binary(b) = m else { continue };
                let Some(ch) = b.first().copied() else {
                    continue;
                };
                if ch > 1 {
                    continue;
                }
                let mut data = &b[1..];
                // The first message on each channel starts with the port number.
                if !seen[usize::from(ch)] {
                    seen[usize::from(ch)] = true;
                    if data.len() >= 2 && data[..2] == port_bytes {
                        data = &data[2..];
                    }
                }
                if ch == 0 && !data.is_empty() && w.write_all(data).await.is_err() {
                    break;
                }
                if ch == 1 && !data.is_empty() {
                    tracing::warn!(error = %String::from_utf8_lossy(data), "port-forward");
                    break;
                }
            }
            let _ = w.shutdown().await;
        });
        tokio::spawn(async move {
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                match r.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let mut m = Vec::with_capacity(n + 1);
                        m.push(0);
                        m.extend_from_slice(&buf[..n]);
                        if sink.send(Message::binary(m)).await.is_err() {
                            break;
                        }
                    }
                }
            }
            let _ = sink.close().await;
        });
        Ok(mine)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spdy::tests::TestClient;

    /// Exec echoes stdin to stdout, says "err" on stderr and exits 3; port-forward reaches
    /// an echo server whatever the port.
    struct Fake {
        echo: SocketAddr,
    }

    #[async_trait]
    impl StreamingRuntime for Fake {
        async fn exec_stream(&self, _: ExecRequest, io: StreamIo) -> Result<i32> {
            let (Some(mut stdin), Some(mut stdout), Some(mut stderr)) =
                (io.stdin, io.stdout, io.stderr)
            else {
                return Err(Error::InvalidArgument("streams missing".into()));
            };
            let _ = tokio::io::copy(&mut stdin, &mut stdout).await;
            let _ = stderr.write_all(b"err").await;
            Ok(3)
        }
        async fn attach_stream(&self, _: AttachRequest, _: StreamIo) -> Result<()> {
            Ok(())
        }
        async fn port_forward_connect(&self, _: &str, _: u16) -> Result<tokio::net::TcpStream> {
            tokio::net::TcpStream::connect(self.echo)
                .await
                .map_err(|e| Error::Internal(e.to_string()))
        }
    }

    async fn echo_server() -> SocketAddr {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((c, _)) = l.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = c.into_split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    /// Sends an upgrade request for `url` with `protocol`; the status line and the stream.
    async fn upgrade(url: &str, protocol: &str) -> (String, tokio::net::TcpStream) {
        let uri: hyper::Uri = url.parse().unwrap();
        let mut c = tokio::net::TcpStream::connect(uri.authority().unwrap().as_str())
            .await
            .unwrap();
        let req = format!(
            "POST {} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\
             X-Stream-Protocol-Version: {protocol}\r\nContent-Length: 0\r\n\r\n",
            uri.path()
        );
        c.write_all(req.as_bytes()).await.unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut b = [0u8; 1];
            if c.read(&mut b).await.unwrap() == 0 {
                break;
            }
            head.push(b[0]);
        }
        (String::from_utf8_lossy(&head).into_owned(), c)
    }

    #[tokio::test]
    async fn exec_and_port_forward_over_spdy() {
        let fake: Arc<dyn StreamingRuntime> = Arc::new(Fake {
            echo: echo_server().await,
        });
        let server = StreamingServer::start(([127, 0, 0, 1], 0).into(), Arc::downgrade(&fake))
            .await
            .unwrap();
        let exec = |c: &str| ExecRequest {
            container_id: c.into(),
            cmd: vec!["cat".into()],
            stdin: true,
            stdout: true,
            stderr: true,
            tty: false,
        };

        // Exec: stdin comes back on stdout, then the exit status on the error stream.
        let url = server.exec_url(exec("c1")).unwrap().url;
        let (head, conn) = upgrade(&url, "v4.channel.k8s.io").await;
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        assert!(head
            .to_ascii_lowercase()
            .contains("x-stream-protocol-version: v4.channel.k8s.io"));
        let mut client = TestClient::new(conn);
        let error = client.open(&[("streamType", "error")], true).await;
        let stdin = client.open(&[("streamType", "stdin")], false).await;
        let stdout = client.open(&[("streamType", "stdout")], true).await;
        let stderr = client.open(&[("streamType", "stderr")], true).await;
        client.send(stdin, b"hello", true).await;
        let mut got: HashMap<u32, Vec<u8>> = HashMap::new();
        while let Some((id, data, _)) = client.next().await {
            got.entry(id).or_default().extend(data);
        }
        assert_eq!(got[&stdout], b"hello");
        assert_eq!(got[&stderr], b"err");
        let status: serde_json::Value = serde_json::from_slice(&got[&error]).unwrap();
        assert_eq!(status["reason"], "NonZeroExitCode");
        assert_eq!(status["details"]["causes"][0]["message"], "3");

        // Port-forward: a data and an error stream per connection.
        let pf = |p: i32| PortForwardRequest {
            pod_sandbox_id: "sb".into(),
            port: vec![p],
        };
        let url = server.port_forward_url(pf(80)).unwrap().url;
        let (head, conn) = upgrade(&url, "portforward.k8s.io").await;
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        let mut client = TestClient::new(conn);
        client
            .open(
                &[("streamType", "error"), ("port", "80"), ("requestID", "0")],
                false,
            )
            .await;
        let data = client
            .open(
                &[("streamType", "data"), ("port", "80"), ("requestID", "0")],
                false,
            )
            .await;
        client.send(data, b"abc", false).await;
        let (id, echoed, _) = client.next().await.unwrap();
        assert_eq!((id, echoed.as_slice()), (data, &b"abc"[..]));

        // A protocol the server does not speak is refused before any upgrade.
        let url = server.exec_url(exec("c2")).unwrap().url;
        let (head, _) = upgrade(&url, "v9.channel.k8s.io").await;
        assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    }
}
