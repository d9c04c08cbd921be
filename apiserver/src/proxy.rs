//! The connect subresources proxied to a node's kubelet: `pods/log`, `pods/exec`,
//! `pods/attach`, `pods/portforward` and `nodes/proxy`.
//!
//! The server finds the pod's node, the node's address (`InternalIP`, then `ExternalIP`, then
//! `Hostname`) and kubelet port (`status.daemonEndpoints.kubeletEndpoint.Port`, 10250 if unset),
//! and forwards the request to the kubelet's paths (`/containerLogs/…`, `/exec/…`,
//! `/attach/…`, `/portForward/…`, or the node proxy path) over HTTP/1.1. Streaming responses
//! (`logs -f`) stream through; upgrades (WebSocket or SPDY, for exec, attach and port-forward)
//! are answered with the kubelet's 101 and the two connections are then joined byte for byte.
//! With [`crate::Config::kubelet_tls`] the kubelet is reached over HTTPS: its serving
//! certificate must chain to the cluster CA and name the address dialled, and the server
//! presents its kubelet client certificate; otherwise over plain HTTP.

use crate::error::ApiError;
use crate::resources::ApiResource;
use crate::server::{ApiServer, Body};
use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use std::sync::Arc;

/// Whether `subresource` of `r` is a connect subresource this module proxies.
pub(crate) fn is_connect(r: &ApiResource, subresource: &str) -> bool {
    r.group.is_empty()
        && match r.kind.as_str() {
            "Pod" => matches!(subresource, "log" | "exec" | "attach" | "portforward"),
            "Node" => subresource == "proxy",
            _ => false,
        }
}

/// Default kubelet port.
const KUBELET_PORT: i64 = 10250;

async fn stored(
    server: &ApiServer,
    r: &ApiResource,
    key: &str,
    name: &str,
) -> Result<Value, ApiError> {
    let kv = server
        .store()
        .get(key, None)
        .await
        .map_err(|e| ApiError::from_store(e, r, name))?
        .ok_or_else(|| ApiError::not_found(r, name))?;
    serde_json::from_slice(&kv.value).map_err(ApiError::internal)
}

/// `host:port` of a node's kubelet.
async fn kubelet_address(server: &ApiServer, node: &str) -> Result<String, ApiError> {
    let table = server.resources();
    let nodes = table
        .get("", "v1", "nodes")
        .ok_or_else(|| ApiError::internal("nodes are not served"))?;
    let obj = stored(server, nodes, &nodes.key(None, node), node).await?;
    let addresses = obj
        .pointer("/status/addresses")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let address = ["InternalIP", "ExternalIP", "Hostname"]
        .iter()
        .find_map(|ty| {
            addresses
                .iter()
                .find(|a| a.get("type").and_then(Value::as_str) == Some(ty))
                .and_then(|a| a.get("address").and_then(Value::as_str))
        })
        .ok_or_else(|| {
            ApiError::bad_request(format!("node {node} has no address the server can reach"))
        })?;
    let port = obj
        .pointer("/status/daemonEndpoints/kubeletEndpoint/Port")
        .and_then(Value::as_i64)
        .filter(|p| *p > 0)
        .unwrap_or(KUBELET_PORT);
    Ok(if address.contains(':') {
        format!("[{address}]:{port}")
    } else {
        format!("{address}:{port}")
    })
}

/// The query of a kubelet request: the client's, translated for exec and attach
/// (`stdin`/`stdout`/`stderr`/`tty` become `input`/`output`/`error`/`tty`), without
/// `container`.
fn kubelet_query(subresource: &str, query: &str) -> String {
    let mut out = form_urlencoded::Serializer::new(String::new());
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        let truthy = v == "true" || v == "1";
        match (subresource, k.as_ref()) {
            (_, "container") => {}
            ("exec" | "attach", "stdin") if truthy => {
                out.append_pair("input", "1");
            }
            ("exec" | "attach", "stdout") if truthy => {
                out.append_pair("output", "1");
            }
            ("exec" | "attach", "stderr") if truthy => {
                out.append_pair("error", "1");
            }
            ("exec" | "attach", "tty") if truthy => {
                out.append_pair("tty", "1");
            }
            ("exec" | "attach", "stdin" | "stdout" | "stderr" | "tty") => {}
            _ => {
                out.append_pair(&k, &v);
            }
        }
    }
    out.finish()
}

/// The kubelet path of a pod connect request.
async fn pod_target(
    server: &ApiServer,
    r: &ApiResource,
    namespace: &str,
    name: &str,
    subresource: &str,
    query: &str,
) -> Result<(String, String), ApiError> {
    let pod = stored(server, r, &r.key(Some(namespace), name), name).await?;
    let node = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::bad_request(format!("pod {name} does not have a host assigned")))?
        .to_owned();
    let containers: Vec<String> = [
        "/spec/containers",
        "/spec/initContainers",
        "/spec/ephemeralContainers",
    ]
    .iter()
    .flat_map(|p| {
        pod.pointer(p)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    })
    .filter_map(|c| c.get("name").and_then(Value::as_str).map(str::to_owned))
    .collect();
    let requested = form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "container")
        .map(|(_, v)| v.into_owned());
    let path = if subresource == "portforward" {
        format!("/portForward/{namespace}/{name}")
    } else {
        let container = match requested {
            Some(c) if containers.contains(&c) => c,
            Some(c) => {
                return Err(ApiError::bad_request(format!(
                    "container {c} is not valid for pod {name}"
                )))
            }
            None => {
                let regular: Vec<&String> = pod
                    .pointer("/spec/containers")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|c| c.get("name").and_then(Value::as_str))
                    .filter_map(|n| containers.iter().find(|c| *c == n))
                    .collect();
                match regular.as_slice() {
                    [only] => (*only).clone(),
                    _ => {
                        let names: Vec<&str> = regular.iter().map(|s| s.as_str()).collect();
                        return Err(ApiError::bad_request(format!(
                            "a container name must be specified for pod {name}, choose one of: [{}]",
                            names.join(" ")
                        )));
                    }
                }
            }
        };
        let prefix = match subresource {
            "log" => "containerLogs",
            other => other,
        };
        format!("/{prefix}/{namespace}/{name}/{container}")
    };
    Ok((node, path))
}

/// How long connecting to a kubelet (TCP and TLS) may take.
const KUBELET_DIAL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// An HTTP/1.1 connection to a kubelet at `address` over `stream`: HTTPS when the server has
/// [`crate::Config::kubelet_tls`] (the kubelet's certificate must name the address dialled).
async fn kubelet_connection(
    server: &ApiServer,
    address: &str,
    stream: tokio::net::TcpStream,
) -> Result<
    hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    Box<dyn std::error::Error + Send + Sync>,
> {
    let Some(tls) = &server.inner.config.kubelet_tls else {
        return Ok(handshake(TokioIo::new(stream)).await?);
    };
    let host = address
        .rsplit_once(':')
        .map_or(address, |(h, _)| h)
        .trim_start_matches('[')
        .trim_end_matches(']');
    let name = rustls::pki_types::ServerName::try_from(host.to_owned())?;
    let stream = tokio_rustls::TlsConnector::from(Arc::clone(tls))
        .connect(name, stream)
        .await?;
    Ok(handshake(TokioIo::new(stream)).await?)
}

/// An HTTP/1.1 connection (with upgrades) over `io`, driven in the background.
async fn handshake<T>(
    io: T,
) -> Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>, hyper::Error>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(io).await?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "kubelet connection ended with an error");
        }
    });
    Ok(sender)
}

/// Proxies a connect request to the kubelet of the object's node.
pub(crate) async fn connect<B>(
    server: &ApiServer,
    r: &ApiResource,
    target: &crate::request::Target,
    mut req: Request<B>,
) -> Result<Response<Body>, ApiError>
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let name = target.name.as_deref().ok_or_else(ApiError::no_route)?;
    let subresource = target.subresource.as_deref().unwrap_or("");
    let query = req.uri().query().unwrap_or("").to_owned();
    let (node, path) = if r.kind == "Node" {
        let rest = target.proxy_path.as_deref().unwrap_or("");
        (name.to_owned(), format!("/{rest}"))
    } else {
        let ns = target.namespace.as_deref().ok_or_else(ApiError::no_route)?;
        pod_target(server, r, ns, name, subresource, &query).await?
    };
    let address = kubelet_address(server, &node).await?;
    let query = if r.kind == "Node" {
        query
    } else {
        kubelet_query(subresource, &query)
    };
    let path_and_query = if query.is_empty() {
        path
    } else {
        format!("{path}?{query}")
    };
    let upgrade = req
        .headers()
        .contains_key(header::UPGRADE)
        .then(|| hyper::upgrade::on(&mut req));
    let (parts, body) = req.into_parts();
    let body = http_body_util::Limited::new(body, server.inner.config.max_body_bytes)
        .collect()
        .await
        .map_err(|e| ApiError::bad_request(format!("reading the request body failed: {e}")))?
        .to_bytes();
    let unreachable = |e: &dyn std::fmt::Display| {
        ApiError::internal(format!(
            "error trying to reach the kubelet of node {node} at {address}: {e}"
        ))
    };
    let connect = async {
        let stream = tokio::net::TcpStream::connect(&address)
            .await
            .map_err(|e| unreachable(&e))?;
        kubelet_connection(server, &address, stream)
            .await
            .map_err(|e| unreachable(&e))
    };
    // A kubelet that accepts but never answers (its server not up yet) fails the request.
    let mut sender = tokio::time::timeout(KUBELET_DIAL_TIMEOUT, connect)
        .await
        .map_err(|_| unreachable(&"timed out connecting"))??;
    let mut out = Request::builder()
        .method(parts.method.clone())
        .uri(path_and_query);
    for (k, v) in &parts.headers {
        // Credentials for this server are not the kubelet's business.
        if k == header::AUTHORIZATION || k == header::HOST {
            continue;
        }
        out = out.header(k, v);
    }
    out = out.header(header::HOST, address.as_str());
    let out = out
        .body(Full::new(body))
        .map_err(|e| ApiError::bad_request(format!("cannot forward the request: {e}")))?;
    let mut resp = sender
        .send_request(out)
        .await
        .map_err(|e| unreachable(&e))?;
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        let Some(client) = upgrade else {
            return Err(ApiError::internal(
                "the kubelet upgraded a request that asked for no upgrade",
            ));
        };
        let backend = hyper::upgrade::on(&mut resp);
        tokio::spawn(async move {
            let (client, backend) = match tokio::try_join!(client, backend) {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::debug!(error = %e, "upgrade through the proxy failed");
                    return;
                }
            };
            let (mut a, mut b) = (TokioIo::new(client), TokioIo::new(backend));
            if let Err(e) = tokio::io::copy_bidirectional(&mut a, &mut b).await {
                tracing::debug!(error = %e, "proxied stream ended with an error");
            }
        });
        let (parts, _) = resp.into_parts();
        return Ok(Response::from_parts(
            parts,
            crate::server::full(Bytes::new()),
        ));
    }
    // A log the kubelet refused becomes a Status, as upstream's response checker makes it
    // (the kubelet's text as the message).
    let code = resp.status().as_u16();
    if subresource == "log" && !(200..=206).contains(&code) {
        let body = http_body_util::Limited::new(resp.into_body(), 4096)
            .collect()
            .await
            .map(|b| String::from_utf8_lossy(&b.to_bytes()).trim().to_string())
            .unwrap_or_default();
        return Err(match code {
            400 => ApiError::bad_request(body),
            404 => ApiError::not_found(r, name),
            _ => ApiError::internal(body),
        });
    }
    // Stream the kubelet's answer through (logs with follow never end on their own); a read
    // error ends the stream.
    let (mut parts, incoming) = resp.into_parts();
    parts.headers.remove(header::TRANSFER_ENCODING);
    parts.headers.remove(header::CONNECTION);
    if !parts.headers.contains_key(header::CONTENT_TYPE) {
        parts
            .headers
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    }
    let stream =
        futures_util::StreamExt::scan(http_body_util::BodyStream::new(incoming), (), |_, frame| {
            std::future::ready(frame.ok())
        });
    let stream = futures_util::StreamExt::map(stream, Ok::<_, std::convert::Infallible>);
    Ok(Response::from_parts(
        parts,
        http_body_util::StreamBody::new(stream).boxed(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_parameters_are_translated_for_the_kubelet() {
        assert_eq!(
            kubelet_query(
                "exec",
                "command=sh&command=-c&command=ls%20-l&container=app&stdin=true&stdout=true&stderr=true&tty=false"
            ),
            "command=sh&command=-c&command=ls+-l&input=1&output=1&error=1"
        );
        assert_eq!(
            kubelet_query("log", "container=app&follow=true&tailLines=10"),
            "follow=true&tailLines=10"
        );
    }
}
