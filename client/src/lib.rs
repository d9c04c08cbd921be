//! A typed client for the Kubernetes API: configuration from kubeconfig files (upstream's merge
//! rules) or a pod's service account, `Api<K>` with every verb, watches as streams, a
//! `tower::Service` transport a user can wrap in middleware, and a mock transport for tests.
//!
//! ```no_run
//! use bosun_client::{Api, Client, ListParams, Patch, PatchParams};
//! use bosun_api_types::apps::v1::Deployment;
//! # async fn run() -> bosun_client::Result<()> {
//! let client = Client::try_default()?; // KUBECONFIG, ~/.kube/config or in-cluster
//! let deployments: Api<Deployment> = Api::namespaced(client, "default");
//! let patch = serde_json::json!({"spec": {"replicas": 3}});
//! deployments.patch("web", &PatchParams::default(), &Patch::Merge(&patch)).await?;
//! let listed = deployments.list(&ListParams::default().labels("app=web")).await?;
//! # let _ = listed; Ok(()) }
//! ```
//!
//! Errors carry the server's `Status` ([`Error::Api`]), with helpers for the common cases
//! ([`Error::is_not_found`], [`Error::is_conflict`], [`Error::is_gone`]).

pub mod api;
pub mod client;
pub mod config;
pub mod discovery;
pub mod error;
pub mod events;
pub mod informer;
pub mod middleware;
pub mod mock;
pub mod reflector;
pub mod tls;
pub mod watcher;

pub use api::{
    Api, DeleteParams, Deleted, ListParams, LogParams, Patch, PatchParams, PostParams, WatchParams,
};
pub use client::Client;
pub use config::{Config, Kubeconfig, KubeconfigOptions};
pub use error::{Error, Result};
