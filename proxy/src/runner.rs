//! Feeds a [`Dataplane`] from the API server: informers on Services and EndpointSlices; a
//! change schedules a sync (no more often than `min_interval`, upstream's `minSyncPeriod`),
//! and a full sync runs every `resync` regardless, repairing drift. The rules stay when the
//! runner stops, as upstream's kube-proxy leaves them: Service traffic keeps flowing while the
//! agent restarts ([`Dataplane::cleanup`] removes them on purpose).

use crate::{model, Dataplane, Error, Result};
use bosun_api_types::core::v1::Service;
use bosun_api_types::discovery::v1::EndpointSlice;
use bosun_client::informer::{Informer, InformerFactory, Notification};
use bosun_client::Client;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;

/// Timing of the sync loop.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// At least this long between two syncs.
    pub min_interval: Duration,
    /// A full sync at least this often.
    pub resync: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            min_interval: Duration::from_secs(1),
            resync: Duration::from_secs(30),
        }
    }
}

fn values<K: serde::Serialize>(items: Vec<Arc<K>>) -> Result<Vec<serde_json::Value>> {
    items
        .iter()
        .map(|k| serde_json::to_value(&**k).map_err(|e| Error::Api(e.to_string())))
        .collect()
}

/// Informers on Services and EndpointSlices with their change notifications: what the
/// proxy and the cluster DNS both follow.
pub(crate) struct ServiceWatch {
    /// Kept: the informers run as long as their factory lives.
    _factory: InformerFactory,
    services: Informer<Service>,
    slices: Informer<EndpointSlice>,
    svc_changes: broadcast::Receiver<Notification<Service>>,
    slice_changes: broadcast::Receiver<Notification<EndpointSlice>>,
}

impl ServiceWatch {
    /// Starts the informers.
    pub(crate) fn new(client: Client) -> Self {
        let factory = InformerFactory::new(client);
        let services = factory.informer::<Service>(None);
        let slices = factory.informer::<EndpointSlice>(None);
        let (svc_changes, slice_changes) = (services.subscribe(), slices.subscribe());
        ServiceWatch {
            _factory: factory,
            services,
            slices,
            svc_changes,
            slice_changes,
        }
    }

    /// Waits for both informers' first lists.
    pub(crate) async fn ready(&self) {
        self.services.wait_until_ready().await;
        self.slices.wait_until_ready().await;
    }

    /// The Services and EndpointSlices now known, as JSON.
    pub(crate) fn objects(&self) -> Result<(Vec<serde_json::Value>, Vec<serde_json::Value>)> {
        Ok((
            values(self.services.store().list())?,
            values(self.slices.store().list())?,
        ))
    }

    /// Waits for a change to either.
    pub(crate) async fn changed(&mut self) {
        tokio::select! {
            _ = self.svc_changes.recv() => {}
            _ = self.slice_changes.recv() => {}
        }
    }

    /// Waits `settle`, then forgets the changes seen meanwhile (a burst becomes one).
    pub(crate) async fn settle(&mut self, settle: Duration) {
        tokio::time::sleep(settle).await;
        while self.svc_changes.try_recv().is_ok() || self.slice_changes.try_recv().is_ok() {}
    }
}

/// Runs `dataplane` from `client`'s Services and EndpointSlices until `shutdown`.
pub async fn run(
    client: Client,
    dataplane: Arc<dyn Dataplane>,
    timing: Timing,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut watch = ServiceWatch::new(client);
    tokio::select! {
        _ = &mut shutdown => return,
        _ = watch.ready() => {}
    }
    let mut last: Option<model::ProxyState> = None;
    let mut last_full = tokio::time::Instant::now();
    loop {
        let state = match watch.objects() {
            Ok((s, e)) => model::build(&s, &e),
            Err(e) => {
                tracing::warn!(error = %e, "reading Services and EndpointSlices");
                last.clone().unwrap_or_default()
            }
        };
        let full = last_full.elapsed() >= timing.resync;
        if full || last.as_ref() != Some(&state) {
            let started = std::time::Instant::now();
            match dataplane.sync(&state).await {
                Ok(()) => {
                    tracing::debug!(services = state.services.len(), took = ?started.elapsed(), "dataplane synced");
                    last = Some(state);
                    last_full = tokio::time::Instant::now();
                }
                Err(e) => {
                    tracing::warn!(error = %e, "dataplane sync failed; retrying");
                    last = None;
                }
            }
        }
        let wait = timing.resync.saturating_sub(last_full.elapsed());
        tokio::select! {
            _ = &mut shutdown => break,
            _ = tokio::time::sleep(wait) => {}
            _ = watch.changed() => {}
        }
        // Let a burst of changes settle into one sync.
        watch.settle(timing.min_interval).await;
    }
}
