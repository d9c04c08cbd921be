//! The node agent (kubelet). This first part registers the node — capacity and allocatable
//! from the machine, upstream's labels, addresses, node info and conditions — keeps its status
//! current, and renews its Lease in `kube-node-lease`; running pods through the CRI and CNI
//! builds on it.
//!
//! ```no_run
//! use bosun_kubelet::{machine::Machine, node::{NodeAgent, NodeConfig}};
//! # async fn demo(client: bosun_client::Client) {
//! let machine = Machine::detect(std::path::Path::new("/var/lib/bosun"));
//! let agent = NodeAgent::new(client, machine.clone(), NodeConfig::new(machine.hostname.clone()));
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
