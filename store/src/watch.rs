//! Watch fan-out shared by the backends: registration with a backlog, in-order delivery, and
//! dropping watchers that stop reading.

use crate::{Error, Event, Result};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

/// Events a watcher may have queued before it is dropped with [`Error::WatcherLagged`].
pub const DEFAULT_WATCH_QUEUE_LIMIT: usize = 100_000;

/// A stream of changes from [`crate::Store::watch`], in revision order.
#[derive(Debug)]
pub struct Watch {
    rx: mpsc::UnboundedReceiver<Result<Arc<Event>>>,
    queued: Arc<AtomicUsize>,
}

impl Watch {
    /// The next change; `None` when the store closed the watch. After an `Err` the watch ends.
    pub async fn next(&mut self) -> Option<Result<Arc<Event>>> {
        let item = self.rx.recv().await;
        if matches!(item, Some(Ok(_))) {
            self.queued.fetch_sub(1, Ordering::Relaxed);
        }
        item
    }

    /// A change if one is ready now.
    pub fn try_next(&mut self) -> Option<Result<Arc<Event>>> {
        let item = self.rx.try_recv().ok();
        if matches!(item, Some(Ok(_))) {
            self.queued.fetch_sub(1, Ordering::Relaxed);
        }
        item
    }
}

/// The sending side of a watch fed by a backend's own stream (etcd) or by a [`crate::Store`]
/// that wraps another and transforms its events.
#[derive(Debug)]
pub struct WatchSender {
    tx: mpsc::UnboundedSender<Result<Arc<Event>>>,
    queued: Arc<AtomicUsize>,
}

impl WatchSender {
    /// Sends an event or error; false once the receiver is gone.
    pub fn send(&self, item: Result<Arc<Event>>) -> bool {
        if item.is_ok() {
            self.queued.fetch_add(1, Ordering::Relaxed);
        }
        self.tx.send(item).is_ok()
    }

    /// Whether the receiver is gone.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// Resolves when the receiver is gone.
    pub async fn closed(&self) {
        self.tx.closed().await
    }
}

/// A watch and the sender that feeds it.
pub fn watch_channel() -> (WatchSender, Watch) {
    let (tx, rx) = mpsc::unbounded_channel();
    let queued = Arc::new(AtomicUsize::new(0));
    (
        WatchSender {
            tx,
            queued: Arc::clone(&queued),
        },
        Watch { rx, queued },
    )
}

struct Watcher {
    prefix: String,
    tx: mpsc::UnboundedSender<Result<Arc<Event>>>,
    queued: Arc<AtomicUsize>,
}

impl Watcher {
    /// Delivers `event`; false if the watcher is gone or has been dropped for lagging.
    fn deliver(&self, event: &Arc<Event>, limit: usize) -> bool {
        if !event.kv.key.starts_with(&self.prefix) {
            return true;
        }
        if self.queued.fetch_add(1, Ordering::Relaxed) >= limit {
            let _ = self.tx.send(Err(Error::WatcherLagged(limit)));
            return false;
        }
        self.tx.send(Ok(Arc::clone(event))).is_ok()
    }
}

/// The watchers of one store. Callers must serialize `register` and `publish` with their writes
/// (hold the lock that orders writes) so that a watcher sees every event after its start exactly once.
pub(crate) struct WatchHub {
    watchers: Mutex<Vec<Watcher>>,
    limit: usize,
}

impl WatchHub {
    pub(crate) fn new(limit: usize) -> Self {
        WatchHub {
            watchers: Mutex::new(Vec::new()),
            limit,
        }
    }

    /// A new watcher on `prefix` that first receives `backlog` (already filtered and ordered).
    pub(crate) fn register<'a>(
        &self,
        prefix: &str,
        backlog: impl Iterator<Item = &'a Arc<Event>>,
    ) -> Watch {
        let (tx, rx) = mpsc::unbounded_channel();
        let w = Watcher {
            prefix: prefix.to_owned(),
            tx,
            queued: Arc::new(AtomicUsize::new(0)),
        };
        let mut alive = true;
        for e in backlog {
            alive = w.deliver(e, usize::MAX);
            if !alive {
                break;
            }
        }
        let watch = Watch {
            rx,
            queued: Arc::clone(&w.queued),
        };
        if alive {
            self.lock().push(w);
        }
        watch
    }

    /// Sends events (in revision order) to every interested watcher; forgets departed ones.
    pub(crate) fn publish(&self, events: &[Arc<Event>]) {
        let mut watchers = self.lock();
        watchers.retain(|w| events.iter().all(|e| w.deliver(e, self.limit)));
    }

    /// Ends every watch (store shutdown).
    pub(crate) fn close(&self) {
        self.lock().clear();
    }

    /// Number of registered watchers.
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Watcher>> {
        // A panic while holding this lock cannot leave the list inconsistent: recover it.
        self.watchers.lock().unwrap_or_else(|p| p.into_inner())
    }
}
