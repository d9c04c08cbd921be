//! A work queue with client-go's semantics.
//!
//! - A key added while it waits is not queued twice (the *dirty* set); a key added while it
//!   is being processed is queued again only once processing is [`WorkQueue::done`] (the
//!   *processing* set), so one key is never handed to two workers at once.
//! - [`WorkQueue::add_after`] delays an add (an earlier pending time wins);
//!   [`WorkQueue::add_rate_limited`] delays by the larger of a per-key exponential backoff
//!   (5 ms doubling to 1,000 s) and an overall token bucket (10 per second, burst 100);
//!   [`WorkQueue::forget`] resets a key's backoff.
//! - [`WorkQueue::shut_down`] stops handing out keys once the queue is empty;
//!   [`WorkQueue::shut_down_with_drain`] also waits for keys in processing.
//!
//! ```
//! use bosun_controllers::workqueue::WorkQueue;
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let q = WorkQueue::new();
//! q.add("a");
//! q.add("a"); // deduplicated
//! assert_eq!(q.len(), 1);
//! let key = q.get().await.unwrap();
//! q.add("a"); // while processing: queued again after done
//! assert_eq!(q.len(), 0);
//! q.done(&key);
//! assert_eq!(q.len(), 1);
//! # });
//! ```

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// Per-key exponential backoff combined with an overall token bucket.
#[derive(Debug)]
pub struct RateLimiter<T> {
    base: Duration,
    max: Duration,
    failures: HashMap<T, u32>,
    qps: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl<T: Eq + Hash + Clone> RateLimiter<T> {
    /// client-go's default: 5 ms → 1,000 s per key, 10 qps with a burst of 100 overall.
    pub fn new() -> Self {
        Self::with(
            Duration::from_millis(5),
            Duration::from_secs(1000),
            10.0,
            100.0,
        )
    }

    /// A limiter with these parameters.
    pub fn with(base: Duration, max: Duration, qps: f64, burst: f64) -> Self {
        RateLimiter {
            base,
            max,
            failures: HashMap::new(),
            qps,
            burst,
            tokens: burst,
            last: Instant::now(),
        }
    }

    /// How long to wait before retrying `item` (and count the retry).
    pub fn when(&mut self, item: &T) -> Duration {
        let n = self.failures.entry(item.clone()).or_insert(0);
        let exp = self
            .base
            .checked_mul(1u32.checked_shl(*n).unwrap_or(u32::MAX))
            .unwrap_or(self.max)
            .min(self.max);
        *n = n.saturating_add(1);
        // Token bucket: take a token, owing time if there is none.
        let now = Instant::now();
        let elapsed = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.qps).min(self.burst) - 1.0;
        let bucket = if self.tokens >= 0.0 || self.qps <= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.qps)
        };
        exp.max(bucket)
    }

    /// Forgets `item`'s failures.
    pub fn forget(&mut self, item: &T) {
        self.failures.remove(item);
    }

    /// How many times `item` has been retried since it was last forgotten.
    pub fn retries(&self, item: &T) -> u32 {
        self.failures.get(item).copied().unwrap_or(0)
    }
}

impl<T: Eq + Hash + Clone> Default for RateLimiter<T> {
    fn default() -> Self {
        Self::new()
    }
}

/// Counters of a queue.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Keys added (deduplicated adds included).
    pub adds: AtomicU64,
    /// Rate-limited re-adds.
    pub retries: AtomicU64,
    /// Sum of the time keys waited in the queue, in microseconds.
    pub queue_latency_micros: AtomicU64,
    /// Sum of the time keys spent in processing, in microseconds.
    pub work_duration_micros: AtomicU64,
    /// Keys handed out.
    pub gets: AtomicU64,
}

struct State<T> {
    queue: VecDeque<T>,
    dirty: HashSet<T>,
    processing: HashSet<T>,
    queued_at: HashMap<T, Instant>,
    started_at: HashMap<T, Instant>,
    /// Delayed adds: when each key is due (an earlier time wins).
    waiting: HashMap<T, Instant>,
    shutting_down: bool,
    limiter: RateLimiter<T>,
}

/// A deduplicating, rate-limiting queue of keys. Cheap to clone (clones share the queue).
///
/// ```
/// use bosun_controllers::workqueue::WorkQueue;
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let queue = WorkQueue::new();
/// queue.add("default/web".to_string());
/// queue.add("default/web".to_string()); // already queued: once
/// assert_eq!(queue.len(), 1);
/// let key = queue.get().await.expect("a key");
/// // … reconcile it; on failure `queue.add_rate_limited(key.clone())` instead of `forget`.
/// queue.forget(&key);
/// queue.done(&key);
/// assert!(queue.is_empty());
/// # });
/// ```
pub struct WorkQueue<T> {
    state: Arc<Mutex<State<T>>>,
    ready: Arc<Notify>,
    idle: Arc<Notify>,
    metrics: Arc<Metrics>,
}

impl<T> Clone for WorkQueue<T> {
    fn clone(&self) -> Self {
        WorkQueue {
            state: Arc::clone(&self.state),
            ready: Arc::clone(&self.ready),
            idle: Arc::clone(&self.idle),
            metrics: Arc::clone(&self.metrics),
        }
    }
}

impl<T: Eq + Hash + Clone + Send + 'static> Default for WorkQueue<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Eq + Hash + Clone + Send + 'static> WorkQueue<T> {
    /// A queue with client-go's default rate limiter.
    pub fn new() -> Self {
        Self::with_rate_limiter(RateLimiter::new())
    }

    /// A queue with this rate limiter.
    pub fn with_rate_limiter(limiter: RateLimiter<T>) -> Self {
        WorkQueue {
            state: Arc::new(Mutex::new(State {
                queue: VecDeque::new(),
                dirty: HashSet::new(),
                processing: HashSet::new(),
                queued_at: HashMap::new(),
                started_at: HashMap::new(),
                waiting: HashMap::new(),
                shutting_down: false,
                limiter,
            })),
            ready: Arc::new(Notify::new()),
            idle: Arc::new(Notify::new()),
            metrics: Arc::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The queue's counters.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The queue's metrics in Prometheus text format, labelled `name` (client-go's names:
    /// `workqueue_depth`, `workqueue_adds_total`, `workqueue_retries_total`,
    /// `workqueue_queue_duration_seconds_sum`/`_count`, `workqueue_work_duration_seconds_sum`).
    pub fn prometheus(&self, name: &str) -> String {
        let m = &self.metrics;
        let gets = m.gets.load(Ordering::Relaxed);
        let secs = |micros: &AtomicU64| micros.load(Ordering::Relaxed) as f64 / 1e6;
        format!(
            "workqueue_depth{{name=\"{name}\"}} {}\n\
             workqueue_adds_total{{name=\"{name}\"}} {}\n\
             workqueue_retries_total{{name=\"{name}\"}} {}\n\
             workqueue_queue_duration_seconds_sum{{name=\"{name}\"}} {}\n\
             workqueue_queue_duration_seconds_count{{name=\"{name}\"}} {gets}\n\
             workqueue_work_duration_seconds_sum{{name=\"{name}\"}} {}\n",
            self.len(),
            m.adds.load(Ordering::Relaxed),
            m.retries.load(Ordering::Relaxed),
            secs(&m.queue_latency_micros),
            secs(&m.work_duration_micros),
        )
    }

    /// Keys waiting to be handed out (the queue's depth).
    pub fn len(&self) -> usize {
        self.lock().queue.len()
    }

    /// Whether no key waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Queues `item` unless it already waits; one being processed is queued again when done.
    pub fn add(&self, item: T) {
        self.metrics.adds.fetch_add(1, Ordering::Relaxed);
        let mut s = self.lock();
        if s.shutting_down || s.dirty.contains(&item) {
            return;
        }
        s.dirty.insert(item.clone());
        if s.processing.contains(&item) {
            return;
        }
        s.queued_at.insert(item.clone(), Instant::now());
        s.queue.push_back(item);
        drop(s);
        self.ready.notify_one();
    }

    /// Queues `item` after `delay` (at once if zero). If it is already due earlier, that wins.
    pub fn add_after(&self, item: T, delay: Duration) {
        if delay.is_zero() {
            return self.add(item);
        }
        let due = Instant::now() + delay;
        {
            let mut s = self.lock();
            if s.shutting_down {
                return;
            }
            if s.waiting.get(&item).is_some_and(|t| *t <= due) {
                return;
            }
            s.waiting.insert(item.clone(), due);
        }
        let q = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(due.into()).await;
            let fire = {
                let mut s = q.lock();
                // A later add_after with an earlier time replaced this one.
                if s.waiting.get(&item) == Some(&due) {
                    s.waiting.remove(&item);
                    true
                } else {
                    false
                }
            };
            if fire {
                q.add(item);
            }
        });
    }

    /// Queues `item` after its rate limiter's delay (a retry).
    pub fn add_rate_limited(&self, item: T) {
        self.metrics.retries.fetch_add(1, Ordering::Relaxed);
        let delay = self.lock().limiter.when(&item);
        self.add_after(item, delay);
    }

    /// Resets `item`'s backoff (after a success).
    pub fn forget(&self, item: &T) {
        self.lock().limiter.forget(item);
    }

    /// How many times `item` was retried since it was last forgotten.
    pub fn num_requeues(&self, item: &T) -> u32 {
        self.lock().limiter.retries(item)
    }

    /// The next key, waiting for one; `None` once the queue is shut down and empty. The key is
    /// in processing until [`WorkQueue::done`].
    pub async fn get(&self) -> Option<T> {
        loop {
            let notified = self.ready.notified();
            {
                let mut s = self.lock();
                if let Some(item) = s.queue.pop_front() {
                    s.dirty.remove(&item);
                    s.processing.insert(item.clone());
                    let now = Instant::now();
                    if let Some(t) = s.queued_at.remove(&item) {
                        self.metrics
                            .queue_latency_micros
                            .fetch_add(now.duration_since(t).as_micros() as u64, Ordering::Relaxed);
                    }
                    s.started_at.insert(item.clone(), now);
                    self.metrics.gets.fetch_add(1, Ordering::Relaxed);
                    // Let another waiter look too (there may be more keys).
                    if !s.queue.is_empty() {
                        self.ready.notify_one();
                    }
                    return Some(item);
                }
                if s.shutting_down {
                    // Wake the other waiters so that they see it too.
                    self.ready.notify_one();
                    return None;
                }
            }
            notified.await;
        }
    }

    /// Ends processing of `item`; if it was added meanwhile, it is queued again.
    pub fn done(&self, item: &T) {
        let mut s = self.lock();
        s.processing.remove(item);
        if let Some(t) = s.started_at.remove(item) {
            self.metrics
                .work_duration_micros
                .fetch_add(t.elapsed().as_micros() as u64, Ordering::Relaxed);
        }
        if s.dirty.contains(item) {
            s.queued_at.insert(item.clone(), Instant::now());
            s.queue.push_back(item.clone());
            drop(s);
            self.ready.notify_one();
            return;
        }
        let idle = s.processing.is_empty();
        drop(s);
        if idle {
            self.idle.notify_waiters();
        }
    }

    /// Stops accepting keys; [`WorkQueue::get`] returns `None` once the queue is empty.
    pub fn shut_down(&self) {
        self.lock().shutting_down = true;
        self.ready.notify_waiters();
        self.ready.notify_one();
    }

    /// Whether the queue is shutting down.
    pub fn is_shutting_down(&self) -> bool {
        self.lock().shutting_down
    }

    /// Shuts down and waits until no key is in processing.
    pub async fn shut_down_with_drain(&self) {
        self.shut_down();
        loop {
            let idle = self.idle.notified();
            if self.lock().processing.is_empty() {
                return;
            }
            idle.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keys_are_deduplicated_and_never_processed_twice_at_once() {
        let q = WorkQueue::new();
        q.add(1);
        q.add(2);
        q.add(1);
        assert_eq!(q.len(), 2);
        let a = q.get().await.unwrap();
        assert_eq!(a, 1);
        q.add(1); // while processing
        assert_eq!(q.len(), 1, "1 waits for done");
        let b = q.get().await.unwrap();
        assert_eq!(b, 2);
        q.done(&a);
        assert_eq!(q.get().await, Some(1));
        assert_eq!(q.metrics().adds.load(Ordering::Relaxed), 4);
        let text = q.prometheus("test");
        assert!(
            text.contains("workqueue_adds_total{name=\"test\"} 4\n"),
            "{text}"
        );
        assert!(
            text.contains("workqueue_depth{name=\"test\"} 0\n"),
            "{text}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn delayed_and_rate_limited_adds() {
        let q = WorkQueue::new();
        q.add_after("x", Duration::from_secs(10));
        q.add_after("x", Duration::from_secs(2)); // earlier wins
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(q.len(), 1);
        let x = q.get().await.unwrap();
        q.done(&x);
        tokio::time::sleep(Duration::from_secs(20)).await;
        assert!(q.is_empty(), "the later timer was dropped");

        q.add_rate_limited("y");
        q.add_rate_limited("y");
        assert_eq!(q.num_requeues(&"y"), 2);
        q.forget(&"y");
        assert_eq!(q.num_requeues(&"y"), 0);
    }

    #[test]
    fn backoff_doubles_to_the_cap_and_the_bucket_limits_bursts() {
        let mut r: RateLimiter<u32> = RateLimiter::new();
        assert_eq!(r.when(&1), Duration::from_millis(5));
        assert_eq!(r.when(&1), Duration::from_millis(10));
        assert_eq!(r.when(&1), Duration::from_millis(20));
        for _ in 0..40 {
            r.when(&1);
        }
        assert_eq!(r.when(&1), Duration::from_secs(1000));
        // 100 fresh keys use the burst; the next ones wait for tokens (10 per second).
        let mut r: RateLimiter<u32> = RateLimiter::new();
        for k in 0..100 {
            assert!(r.when(&k) <= Duration::from_millis(5));
        }
        let d = r.when(&1000);
        assert!(
            d > Duration::from_millis(50) && d <= Duration::from_millis(110),
            "{d:?}"
        );
    }

    #[tokio::test]
    async fn shut_down_drains() {
        let q = WorkQueue::new();
        q.add(1);
        let one = q.get().await.unwrap();
        let q2 = q.clone();
        let drained = tokio::spawn(async move { q2.shut_down_with_drain().await });
        tokio::task::yield_now().await;
        assert!(!drained.is_finished());
        q.add(9); // refused while shutting down
        q.done(&one);
        drained.await.unwrap();
        assert_eq!(q.get().await, None);
    }
}
