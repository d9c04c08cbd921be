//! What a connection may cost the server: how many are open at once, how long one may sit idle
//! or take to send its headers, and how the accept loop behaves when the process is out of
//! descriptors. Upstream's Go server gives the shape: `ReadHeaderTimeout` 32 s, `IdleTimeout`
//! 90 s, accept errors backed off from 5 ms doubling to 1 s.

use bytes::Bytes;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// Connection limits of one listener.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Connections open at once; one more is closed as soon as it is accepted. `None`: three
    /// quarters of the process's open-file limit, so that the store, watches and the log keep
    /// their descriptors.
    pub max_connections: Option<usize>,
    /// How long a client may take to send a request's headers (upstream: 32 s); on an HTTP/1.1
    /// connection this also bounds the wait for the next request.
    pub header_read_timeout: Duration,
    /// How long a connection with no request under way may stay open without a byte either way
    /// (upstream: 90 s).
    pub idle_timeout: Duration,
    /// How long a TLS handshake may take.
    pub tls_handshake_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: None,
            header_read_timeout: Duration::from_secs(32),
            idle_timeout: Duration::from_secs(90),
            tls_handshake_timeout: Duration::from_secs(10),
        }
    }
}

impl Limits {
    /// The connection cap in force: the configured one, else three quarters of the open-file
    /// limit (at least 64).
    pub fn connection_cap(&self) -> usize {
        self.max_connections.unwrap_or_else(|| {
            let soft = open_file_limit().unwrap_or(1024);
            usize::try_from(soft / 4 * 3).unwrap_or(usize::MAX).max(64)
        })
    }
}

/// The process's soft limit on open files, if it can be read.
pub fn open_file_limit() -> Option<u64> {
    rustix::process::getrlimit(rustix::process::Resource::Nofile).current
}

/// Raises the soft limit on open files to the hard limit (what Go's runtime does at start since
/// 1.19) and returns the limit in force. A server that serves many clients needs more than the
/// customary 1,024.
pub fn raise_open_file_limit() -> Option<u64> {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        let raised = rustix::process::Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        if let Err(e) = setrlimit(Resource::Nofile, raised) {
            tracing::debug!(error = %e, "cannot raise the open-file limit");
        }
    }
    getrlimit(Resource::Nofile).current
}

/// The accept loop's back-off after a failed `accept` (out of descriptors, out of memory): 5 ms,
/// doubling to 1 s, reset by the next success — as Go's `net/http` server.
#[derive(Debug, Default)]
pub(crate) struct Backoff {
    next: Option<Duration>,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(5);
    const MAX: Duration = Duration::from_secs(1);

    /// How long to wait after another failure.
    pub(crate) fn failed(&mut self) -> Duration {
        let d = match self.next {
            None => Self::FIRST,
            Some(d) => (d * 2).min(Self::MAX),
        };
        self.next = Some(d);
        d
    }

    /// An accept succeeded.
    pub(crate) fn succeeded(&mut self) {
        self.next = None;
    }
}

/// Lets a repeated log line through once per period, counting what it held back.
#[derive(Debug)]
pub(crate) struct LogLimiter {
    period: Duration,
    state: Mutex<(Option<Instant>, u64)>,
}

impl LogLimiter {
    pub(crate) fn new(period: Duration) -> Self {
        LogLimiter {
            period,
            state: Mutex::new((None, 0)),
        }
    }

    /// `Some(held back since the last line)` when a line may be written now.
    pub(crate) fn allow(&self) -> Option<u64> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        match s.0 {
            Some(last) if now.duration_since(last) < self.period => {
                s.1 += 1;
                None
            }
            _ => {
                let held = s.1;
                *s = (Some(now), 0);
                Some(held)
            }
        }
    }
}

/// What a connection is doing: when a byte last moved, and how many requests are under way
/// (a request counts until its response body has been sent or dropped).
#[derive(Debug)]
pub(crate) struct Activity {
    start: Instant,
    last_ms: AtomicU64,
    requests: AtomicUsize,
}

impl Activity {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Activity {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
            requests: AtomicUsize::new(0),
        })
    }

    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// A request starts; it ends when the guard is dropped.
    pub(crate) fn request(self: &Arc<Self>) -> RequestGuard {
        self.requests.fetch_add(1, Ordering::Relaxed);
        RequestGuard(Arc::clone(self))
    }

    /// How long nothing has happened on the connection (zero while a request is under way).
    fn idle_for(&self) -> Duration {
        if self.requests.load(Ordering::Relaxed) > 0 {
            return Duration::ZERO;
        }
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.start.elapsed().saturating_sub(last)
    }

    /// Resolves once the connection has been idle for `limit`.
    pub(crate) async fn idle(&self, limit: Duration) {
        loop {
            let idle = self.idle_for();
            if idle >= limit {
                return;
            }
            // Check again when the limit could first be reached.
            tokio::time::sleep((limit - idle).clamp(Duration::from_millis(50), limit)).await;
        }
    }
}

/// Marks a request under way on its connection.
#[derive(Debug)]
pub(crate) struct RequestGuard(Arc<Activity>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.touch();
        self.0.requests.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A stream that records its traffic in an [`Activity`].
pub(crate) struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S> Tracked<S> {
    pub(crate) fn new(inner: S, activity: Arc<Activity>) -> Self {
        activity.touch();
        Tracked { inner, activity }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A request body that notes whether it was read to its end, so that a response sent before
/// the body was read (an early 401, 403 or 413) can close the connection instead of leaving
/// the rest of the body to be read as the next request.
pub(crate) struct Watched<B> {
    inner: B,
    done: Arc<std::sync::atomic::AtomicBool>,
}

impl<B: hyper::body::Body> Watched<B> {
    /// The body, and a flag that is set once it has been read to its end.
    pub(crate) fn new(inner: B) -> (Self, Arc<std::sync::atomic::AtomicBool>) {
        let done = Arc::new(std::sync::atomic::AtomicBool::new(inner.is_end_stream()));
        (
            Watched {
                inner,
                done: Arc::clone(&done),
            },
            done,
        )
    }
}

impl<B> hyper::body::Body for Watched<B>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        let r = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(r, Poll::Ready(None)) || self.inner.is_end_stream() {
            self.done.store(true, Ordering::Relaxed);
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that holds its request's [`RequestGuard`] until it is sent or dropped.
pub(crate) struct Guarded<B> {
    inner: B,
    _guard: RequestGuard,
}

impl<B> Guarded<B> {
    pub(crate) fn new(inner: B, guard: RequestGuard) -> Self {
        Guarded {
            inner,
            _guard: guard,
        }
    }
}

impl<B> hyper::body::Body for Guarded<B>
where
    B: hyper::body::Body + Unpin,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_a_second_and_resets() {
        let mut b = Backoff::default();
        let waits: Vec<u128> = (0..10).map(|_| b.failed().as_millis()).collect();
        assert_eq!(waits, [5, 10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
        b.succeeded();
        assert_eq!(b.failed(), Duration::from_millis(5));
    }

    #[test]
    fn the_log_limiter_lets_one_line_through_per_period() {
        let l = LogLimiter::new(Duration::from_secs(3600));
        assert_eq!(l.allow(), Some(0));
        for _ in 0..1000 {
            assert_eq!(l.allow(), None);
        }
        let l = LogLimiter::new(Duration::ZERO);
        assert_eq!(l.allow(), Some(0));
        assert_eq!(l.allow(), Some(0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_is_idle_only_without_requests_and_traffic() {
        let a = Activity::new();
        let guard = a.request();
        // A request under way (a quiet watch) is never idle.
        let idle = tokio::time::timeout(Duration::from_secs(600), a.idle(Duration::from_secs(90)));
        assert!(idle.await.is_err());
        drop(guard);
        let started = tokio::time::Instant::now();
        a.idle(Duration::from_secs(90)).await;
        assert!(started.elapsed() >= Duration::from_secs(89));
    }

    #[test]
    fn the_cap_follows_the_open_file_limit() {
        let l = Limits::default();
        assert!(l.connection_cap() >= 64);
        let fixed = Limits {
            max_connections: Some(7),
            ..Limits::default()
        };
        assert_eq!(fixed.connection_cap(), 7);
    }
}
