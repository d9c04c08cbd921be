//! A mock transport: a [`Client`] whose requests a closure answers, so that code using the
//! client (a controller, a tool) is unit tested without any server.
//!
//! ```
//! use bosun_client::mock::{json, Mock};
//! use bosun_client::Api;
//! use bosun_api_types::core::v1::ConfigMap;
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let mock = Mock::new(|req| match req.uri().path() {
//!     "/api/v1/namespaces/default/configmaps/a" => json(200, serde_json::json!(
//!         {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}})),
//!     _ => json(404, serde_json::json!({"kind": "Status", "apiVersion": "v1",
//!         "status": "Failure", "reason": "NotFound", "code": 404})),
//! });
//! let cms: Api<ConfigMap> = Api::default_namespaced(mock.client());
//! assert_eq!(cms.get("a").await.unwrap().metadata.name.as_deref(), Some("a"));
//! assert!(cms.get("b").await.unwrap_err().is_not_found());
//! assert_eq!(mock.requests().len(), 2);
//! # });
//! ```

use crate::client::{BoxError, Client};
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

type Handler = dyn Fn(&Request<Bytes>) -> Response<Bytes> + Send + Sync;

/// A transport that answers every request with a closure and remembers the requests.
///
/// ```
/// use bosun_api_types::core::v1::ConfigMap;
/// use bosun_client::{mock::{self, Mock}, Api};
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let mock = Mock::new(|req| {
///     assert_eq!(req.uri().path(), "/api/v1/namespaces/default/configmaps/settings");
///     mock::json(200, serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
///         "metadata": {"name": "settings"}, "data": {"mode": "fast"}}))
/// });
/// let config_maps: Api<ConfigMap> = Api::namespaced(mock.client(), "default");
/// let cm = config_maps.get("settings").await?;
/// assert_eq!(cm.data["mode"], "fast");
/// assert_eq!(mock.requests().len(), 1);
/// # Ok::<(), bosun_client::Error>(()) }).unwrap();
/// ```
#[derive(Clone)]
pub struct Mock {
    handler: Arc<Handler>,
    seen: Arc<Mutex<Vec<Request<Bytes>>>>,
}

impl std::fmt::Debug for Mock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mock").finish_non_exhaustive()
    }
}

/// A JSON response with `code`.
pub fn json(code: u16, body: serde_json::Value) -> Response<Bytes> {
    let mut r = Response::new(Bytes::from(body.to_string()));
    *r.status_mut() = http::StatusCode::from_u16(code).unwrap_or(http::StatusCode::OK);
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

impl Mock {
    /// A mock that answers with `handler`.
    pub fn new(
        handler: impl Fn(&Request<Bytes>) -> Response<Bytes> + Send + Sync + 'static,
    ) -> Self {
        Mock {
            handler: Arc::new(handler),
            seen: Arc::default(),
        }
    }

    /// A client over this mock (base `http://mock`, namespace `default`).
    pub fn client(&self) -> Client {
        Client::new(
            self.clone(),
            http::Uri::from_static("http://mock"),
            "default",
        )
    }

    /// The requests made so far (paths relative to the mock's base, bodies whole).
    pub fn requests(&self) -> Vec<Request<Bytes>> {
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|r| {
                let mut b = Request::builder().method(r.method()).uri(r.uri());
                for (k, v) in r.headers() {
                    b = b.header(k, v);
                }
                b.body(r.body().clone()).unwrap_or_default()
            })
            .collect()
    }
}

impl tower::Service<Request<Full<Bytes>>> for Mock {
    type Response = Response<Full<Bytes>>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Full<Bytes>>) -> Self::Future {
        let handler = Arc::clone(&self.handler);
        let seen = Arc::clone(&self.seen);
        Box::pin(async move {
            let (mut parts, body) = req.into_parts();
            // Record paths as the code under test wrote them (without the mock's base).
            if let Some(pq) = parts.uri.path_and_query().cloned() {
                parts.uri = http::Uri::from(pq);
            }
            let body = body
                .collect()
                .await
                .map(|c| c.to_bytes())
                .unwrap_or_default();
            let req = Request::from_parts(parts, body);
            let resp = handler(&req);
            seen.lock().unwrap_or_else(|p| p.into_inner()).push(req);
            Ok(resp.map(Full::new))
        })
    }
}
