//! Tower layers for the client's service stack: retries of throttled and unavailable
//! responses, and a client-side rate limit. [`crate::Client::try_from_config`] adds both as
//! the config asks; users composing their own stack add them (or their own layers) with
//! `tower::ServiceBuilder` and pass the result to [`crate::Client::new`].
//!
//! ```
//! use bosun_client::middleware::{RateLimitLayer, RetryLayer};
//! use bosun_client::mock::{json, Mock};
//! use tower::ServiceBuilder;
//! let mock = Mock::new(|_| json(200, serde_json::json!({})));
//! let stack = ServiceBuilder::new()
//!     .layer(RateLimitLayer::new(50.0, 100))
//!     .layer(RetryLayer::default())
//!     .service(mock);
//! let client = bosun_client::Client::new(stack, http::Uri::from_static("http://x"), "default");
//! # let _ = client;
//! ```

use crate::client::BoxError;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Retries a request answered 429 (any method: the server did not act on it) or 502/503/504
/// (idempotent methods), and connection failures of idempotent methods; waits the server's
/// `Retry-After` when it gives one, else an exponential backoff.
#[derive(Clone, Copy, Debug)]
pub struct RetryLayer {
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// First backoff.
    pub base: Duration,
    /// Longest wait.
    pub max: Duration,
}

impl Default for RetryLayer {
    /// client-go's bound of 10 retries; backoff 100 ms doubling to 10 s.
    fn default() -> Self {
        RetryLayer {
            max_retries: 10,
            base: Duration::from_millis(100),
            max: Duration::from_secs(10),
        }
    }
}

impl<S> tower::Layer<S> for RetryLayer {
    type Service = Retry<S>;
    fn layer(&self, inner: S) -> Retry<S> {
        Retry {
            inner,
            policy: *self,
        }
    }
}

/// The service [`RetryLayer`] makes.
#[derive(Clone, Debug)]
pub struct Retry<S> {
    inner: S,
    policy: RetryLayer,
}

fn copy(req: &Request<Full<Bytes>>) -> Request<Full<Bytes>> {
    let mut r = Request::new(req.body().clone());
    *r.method_mut() = req.method().clone();
    *r.uri_mut() = req.uri().clone();
    *r.version_mut() = req.version();
    *r.headers_mut() = req.headers().clone();
    r
}

fn idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::PUT | Method::DELETE | Method::OPTIONS
    )
}

impl<S, B> tower::Service<Request<Full<Bytes>>> for Retry<S>
where
    S: tower::Service<Request<Full<Bytes>>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Send + 'static,
{
    type Response = Response<B>;
    type Error = BoxError;
    type Future = BoxFuture<Result<Response<B>, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<Full<Bytes>>) -> Self::Future {
        let mut inner = self.inner.clone();
        // The clone that was made ready is the one to call first.
        std::mem::swap(&mut inner, &mut self.inner);
        let policy = self.policy;
        Box::pin(async move {
            use tower::ServiceExt;
            let mut backoff = policy.base;
            let mut attempt = 0;
            loop {
                let this = copy(&req);
                let result: Result<Response<B>, BoxError> = if attempt == 0 {
                    inner.call(this).await.map_err(Into::into)
                } else {
                    inner.ready().await.map_err(Into::into)?;
                    inner.call(this).await.map_err(Into::into)
                };
                let wait = match &result {
                    Ok(resp) => {
                        let code = resp.status();
                        let retryable = code == StatusCode::TOO_MANY_REQUESTS
                            || (matches!(code.as_u16(), 502..=504) && idempotent(req.method()));
                        if !retryable || attempt >= policy.max_retries {
                            return result;
                        }
                        resp.headers()
                            .get(http::header::RETRY_AFTER)
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| v.trim().parse::<u64>().ok())
                            .map(Duration::from_secs)
                            .unwrap_or(backoff)
                            .min(policy.max)
                    }
                    Err(_) if idempotent(req.method()) && attempt < policy.max_retries => backoff,
                    Err(_) => return result,
                };
                tracing::debug!(attempt, ?wait, uri = %req.uri(), "retrying");
                tokio::time::sleep(wait).await;
                backoff = (backoff * 2).min(policy.max);
                attempt += 1;
            }
        })
    }
}

/// A client-side token bucket: at most `qps` requests a second on average, `burst` at once
/// (client-go's `QPS`/`Burst`).
#[derive(Clone, Debug)]
pub struct RateLimitLayer {
    bucket: Arc<Mutex<Bucket>>,
}

#[derive(Debug)]
struct Bucket {
    qps: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl RateLimitLayer {
    /// `qps` requests a second, bursts of `burst`.
    pub fn new(qps: f64, burst: u32) -> Self {
        RateLimitLayer {
            bucket: Arc::new(Mutex::new(Bucket {
                qps,
                burst: f64::from(burst.max(1)),
                tokens: f64::from(burst.max(1)),
                last: Instant::now(),
            })),
        }
    }

    /// Takes a token; returns how long to wait for it.
    fn reserve(&self) -> Duration {
        let mut b = self.bucket.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let refill = now.duration_since(b.last).as_secs_f64() * b.qps;
        b.tokens = (b.tokens + refill).min(b.burst) - 1.0;
        b.last = now;
        if b.tokens >= 0.0 || b.qps <= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-b.tokens / b.qps)
        }
    }
}

impl<S> tower::Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;
    fn layer(&self, inner: S) -> RateLimit<S> {
        RateLimit {
            inner,
            limit: self.clone(),
        }
    }
}

/// The service [`RateLimitLayer`] makes.
#[derive(Clone, Debug)]
pub struct RateLimit<S> {
    inner: S,
    limit: RateLimitLayer,
}

impl<S, R> tower::Service<R> for RateLimit<S>
where
    S: tower::Service<R> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    R: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = BoxFuture<Result<S::Response, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: R) -> Self::Future {
        let wait = self.limit.reserve();
        let mut inner = self.inner.clone();
        std::mem::swap(&mut inner, &mut self.inner);
        Box::pin(async move {
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
            inner.call(req).await.map_err(Into::into)
        })
    }
}

/// Counts requests by method and response code, with their total latency, for a Prometheus
/// scrape ([`MetricsLayer::prometheus`]: `rest_client_requests_total`,
/// `rest_client_request_duration_seconds_sum`/`_count`, client-go's names).
#[derive(Clone, Debug, Default)]
pub struct MetricsLayer {
    counts: Arc<Mutex<Counts>>,
}

/// (method, code) → (requests, seconds).
type Counts = std::collections::BTreeMap<(String, u16), (u64, f64)>;

impl MetricsLayer {
    /// A fresh set of counters.
    pub fn new() -> Self {
        Self::default()
    }

    fn record(&self, method: &Method, code: u16, elapsed: Duration) {
        let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let e = c
            .entry((method.as_str().to_owned(), code))
            .or_insert((0, 0.0));
        e.0 += 1;
        e.1 += elapsed.as_secs_f64();
    }

    /// The counters in Prometheus text format (code `<error>` for transport failures).
    pub fn prometheus(&self) -> String {
        let c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = String::new();
        for ((method, code), (n, secs)) in c.iter() {
            let code = if *code == 0 {
                "<error>".to_owned()
            } else {
                code.to_string()
            };
            out.push_str(&format!(
                "rest_client_requests_total{{method=\"{method}\",code=\"{code}\"}} {n}\n\
                 rest_client_request_duration_seconds_sum{{method=\"{method}\",code=\"{code}\"}} {secs}\n\
                 rest_client_request_duration_seconds_count{{method=\"{method}\",code=\"{code}\"}} {n}\n"
            ));
        }
        out
    }
}

impl<S> tower::Layer<S> for MetricsLayer {
    type Service = Metered<S>;
    fn layer(&self, inner: S) -> Metered<S> {
        Metered {
            inner,
            metrics: self.clone(),
        }
    }
}

/// The service [`MetricsLayer`] makes.
#[derive(Clone, Debug)]
pub struct Metered<S> {
    inner: S,
    metrics: MetricsLayer,
}

impl<S, B, Rq> tower::Service<Request<Rq>> for Metered<S>
where
    S: tower::Service<Request<Rq>, Response = Response<B>>,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Send + 'static,
{
    type Response = Response<B>;
    type Error = BoxError;
    type Future = BoxFuture<Result<Response<B>, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<Rq>) -> Self::Future {
        let method = req.method().clone();
        let started = Instant::now();
        let metrics = self.metrics.clone();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let result = fut.await.map_err(Into::into);
            let code = result.as_ref().map(|r| r.status().as_u16()).unwrap_or(0);
            metrics.record(&method, code, started.elapsed());
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mock::{json, Mock};
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test(start_paused = true)]
    async fn throttled_requests_are_retried_after_retry_after() {
        let calls = Arc::new(AtomicU32::new(0));
        let c = Arc::clone(&calls);
        let mock = Mock::new(move |_| {
            if c.fetch_add(1, Ordering::SeqCst) < 2 {
                let mut r = json(
                    429,
                    serde_json::json!({"kind": "Status", "code": 429,
                    "reason": "TooManyRequests"}),
                );
                r.headers_mut()
                    .insert("retry-after", http::HeaderValue::from_static("1"));
                r
            } else {
                json(
                    200,
                    serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": "a"}}),
                )
            }
        });
        let stack = tower::ServiceBuilder::new()
            .layer(RetryLayer::default())
            .service(mock.clone());
        let client = crate::Client::new(stack, http::Uri::from_static("http://m"), "default");
        let cms: crate::Api<bosun_api_types::core::v1::ConfigMap> =
            crate::Api::default_namespaced(client);
        let started = tokio::time::Instant::now();
        cms.get("a").await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        // Two Retry-After waits of a second each (virtual time).
        assert!(started.elapsed() >= Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn unavailable_writes_are_not_retried() {
        let calls = Arc::new(AtomicU32::new(0));
        let c = Arc::clone(&calls);
        let mock = Mock::new(move |_| {
            c.fetch_add(1, Ordering::SeqCst);
            json(
                503,
                serde_json::json!({"kind": "Status", "code": 503, "reason": "ServiceUnavailable"}),
            )
        });
        let stack = tower::ServiceBuilder::new()
            .layer(RetryLayer::default())
            .service(mock);
        let client = crate::Client::new(stack, http::Uri::from_static("http://m"), "default");
        let cms: crate::Api<bosun_api_types::core::v1::ConfigMap> =
            crate::Api::default_namespaced(client);
        let err = cms
            .create(&crate::PostParams::default(), &Default::default())
            .await
            .unwrap_err();
        assert_eq!(err.code(), Some(503));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn requests_are_counted_by_method_and_code() {
        let mock = Mock::new(|req| {
            if req.uri().path().ends_with("/missing") {
                json(
                    404,
                    serde_json::json!({"kind": "Status", "code": 404, "reason": "NotFound"}),
                )
            } else {
                json(
                    200,
                    serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": "a"}}),
                )
            }
        });
        let metrics = MetricsLayer::new();
        let stack = tower::ServiceBuilder::new()
            .layer(metrics.clone())
            .service(mock);
        let client = crate::Client::new(stack, http::Uri::from_static("http://m"), "default");
        let cms: crate::Api<bosun_api_types::core::v1::ConfigMap> =
            crate::Api::default_namespaced(client);
        cms.get("a").await.unwrap();
        cms.get("a").await.unwrap();
        assert!(cms.get("missing").await.is_err());
        let text = metrics.prometheus();
        assert!(
            text.contains("rest_client_requests_total{method=\"GET\",code=\"200\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("rest_client_requests_total{method=\"GET\",code=\"404\"} 1\n"),
            "{text}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_rate_limit_spaces_requests_after_the_burst() {
        let limit = RateLimitLayer::new(10.0, 3);
        for _ in 0..3 {
            assert_eq!(limit.reserve(), Duration::ZERO);
        }
        let wait = limit.reserve();
        assert!(
            wait > Duration::from_millis(90) && wait <= Duration::from_millis(100),
            "{wait:?}"
        );
    }
}
