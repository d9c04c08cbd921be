//! The built-in controllers of kube-controller-manager, each a [`crate::Reconciler`] on the
//! shared runtime.

pub mod cron;
pub mod cronjob;
pub mod daemonset;
pub mod deployment;
pub mod disruption;
pub mod endpoints;
pub mod garbagecollector;
pub mod hpa;
pub mod job;
pub mod manager;
pub mod namespace;
pub mod nodelifecycle;
pub mod pods;
pub mod protection;
pub mod replicaset;
pub mod resourcequota;
pub mod revisions;
pub mod serviceaccount;
pub mod statefulset;
pub mod ttl;
pub mod volume;

/// Why a built-in controller's sync failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request to the API server failed.
    #[error(transparent)]
    Client(#[from] bosun_client::Error),
    /// The sync could not do all it had to (pods not created, say); retried with backoff.
    #[error("{reason}: {message}")]
    Sync {
        /// Upstream's reason (`FailedCreate`, …).
        reason: String,
        /// What went wrong.
        message: String,
    },
}
