//! Periodic compaction, as upstream's API server runs it against etcd (every 5 minutes by
//! default): each tick compacts to the revision observed one tick earlier, so readers and
//! watchers always have at least one interval of history.

use crate::{Error, Revision, Store};
use std::sync::Arc;
use std::time::Duration;

/// Upstream's default compaction interval.
pub const DEFAULT_COMPACTION_INTERVAL: Duration = Duration::from_secs(300);

/// Spawns the compactor on the current tokio runtime; abort the handle to stop it.
pub fn spawn_compactor(store: Arc<dyn Store>, interval: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        let mut previous: Option<Revision> = None;
        loop {
            ticker.tick().await;
            let current = match store.current_revision().await {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, "compactor: reading the current revision failed");
                    continue;
                }
            };
            if let Some(target) = previous {
                match store.compact(target).await {
                    Ok(()) => tracing::debug!(revision = target, "compacted"),
                    // Nothing written since the last compaction, or someone else compacted further.
                    Err(Error::Compacted { .. }) => {}
                    Err(e) => tracing::warn!(error = %e, revision = target, "compaction failed"),
                }
            }
            previous = Some(current);
        }
    })
}
