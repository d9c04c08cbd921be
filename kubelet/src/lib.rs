//! The node agent (kubelet): [`node::NodeAgent`] registers the Node — capacity and
//! allocatable from the machine, upstream's labels, addresses, node info and conditions —
//! keeps its status current and renews its Lease in `kube-node-lease`; [`pods::PodWorker`]
//! runs the node's pods through any CRI runtime (sandboxes, init containers, probes, hooks,
//! volumes, restarts with back-off, logs, eviction, static pods, graceful node shutdown);
//! [`server::KubeletServer`] serves logs, exec, attach, port-forward, stats and metrics to the
//! API server over TLS with its authentication and authorization ([`auth`]); [`bootstrap`]
//! joins a cluster with a bootstrap token and renews the node's certificates.
//!
//! ```no_run
//! use bosun_cri::simulated::SimulatedRuntime;
//! use bosun_kubelet::{machine::Machine, node::{NodeAgent, NodeConfig}, pods::PodWorker};
//! use std::{sync::Arc, time::Duration};
//! # async fn demo(client: bosun_client::Client) {
//! let machine = Machine::detect(std::path::Path::new("/var/lib/bosun"));
//! let name = machine.hostname.clone();
//! // Any CRI runtime: the built-in one on runc, containerd through `RemoteRuntime`, or this
//! // simulated one (no processes).
//! let runtime = Arc::new(SimulatedRuntime::new([10, 244, 1]));
//! let pods = Arc::new(PodWorker::new(
//!     client.clone(), name.clone(), "192.0.2.10".into(), runtime, "/var/log/pods".into(),
//! ));
//! tokio::spawn(pods.run(Duration::from_secs(1), std::future::pending()));
//! let agent = NodeAgent::new(client, machine, NodeConfig::new(name));
//! agent.run(|| Ok(()), std::future::pending()).await;
//! # }
//! ```

pub mod auth;
pub mod backoff;
pub mod bootstrap;
pub mod credentials;
pub mod dns;
pub mod eviction;
pub mod gc;
pub mod logs;
pub mod machine;
pub mod network;
pub mod node;
pub mod pods;
pub mod probe;
pub mod runtime;
pub mod server;
pub mod static_pods;
pub mod stats;
pub mod volumes;

/// A kubelet operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API server refused or could not be reached.
    #[error("API: {0}")]
    Api(String),
    /// The container runtime failed.
    #[error("container runtime: {0}")]
    Runtime(String),
    /// An image could not be pulled.
    #[error("image: {0}")]
    Image(String),
    /// A volume could not be set up.
    #[error("volume: {0}")]
    Volume(String),
    /// A container's configuration refers to something missing (a configMap key, say).
    #[error("{0}")]
    Config(String),
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
