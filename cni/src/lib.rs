//! The Container Network Interface, spec 1.x: network configuration lists loaded from a
//! directory ([`config`]), typed results ([`result`]), and [`CniNetwork`], which runs the
//! standard plugin binaries (bridge, host-local, loopback, portmap, …) for ADD, DEL, CHECK,
//! STATUS, VERSION and GC as the spec says: environment variables, the plugin's configuration
//! on stdin with `prevResult` chaining and `runtimeConfig` from declared capabilities, and the
//! result of each ADD cached so DEL and CHECK get it back even after a restart.
//!
//! The kubelet and the built-in container runtime talk to networks through the
//! [`NetworkPlugin`] trait, whose default implementation is [`CniNetwork`].
//!
//! ```no_run
//! use bosun_cni::{Attachment, CniNetwork, NetworkPlugin};
//! # async fn demo() -> Result<(), bosun_cni::Error> {
//! let net = CniNetwork::from_dir("/etc/cni/net.d", vec!["/usr/lib/cni".into()], "/var/lib/bosun/cni")?;
//! let att = Attachment::new("sandbox-1", "/run/bosun/netns/sandbox-1")
//!     .arg("K8S_POD_NAMESPACE", "default")
//!     .arg("K8S_POD_NAME", "web-0");
//! let result = net.add(&att).await?;
//! tracing::info!(ip = ?result.pod_ips(), "pod network ready");
//! net.del(&att).await?;
//! # Ok(()) }
//! ```

pub mod cleanup;
pub mod config;
pub mod exec;
pub mod result;
pub mod routes;

pub use config::NetworkConfigList;
pub use exec::CniNetwork;
pub use result::CniResult;

use async_trait::async_trait;
use std::path::PathBuf;

/// A CNI operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The network configuration is missing or malformed.
    #[error("network configuration {path}: {msg}")]
    Config {
        /// Where the configuration came from.
        path: String,
        /// What is wrong with it.
        msg: String,
    },
    /// A plugin binary is not in any of the plugin directories.
    #[error("CNI plugin {plugin:?} not found in {dirs:?}")]
    PluginNotFound {
        /// The plugin type.
        plugin: String,
        /// The directories searched.
        dirs: Vec<PathBuf>,
    },
    /// A plugin ran and reported an error (the spec's error object).
    #[error("CNI plugin {plugin} {command} failed (code {code}): {msg}{}", if details.is_empty() { String::new() } else { format!("; {details}") })]
    Plugin {
        /// The plugin type.
        plugin: String,
        /// The command (ADD, DEL, …).
        command: String,
        /// The spec's error code (1–99 well-known, 100+ plugin-specific).
        code: u32,
        /// The error message.
        msg: String,
        /// Further details.
        details: String,
    },
    /// A plugin's output was not what the spec promises.
    #[error("CNI plugin {plugin} {command}: {msg}")]
    Protocol {
        /// The plugin type.
        plugin: String,
        /// The command.
        command: String,
        /// What was wrong.
        msg: String,
    },
    /// A plugin took longer than the configured timeout.
    #[error("CNI plugin {plugin} {command} timed out")]
    Timeout {
        /// The plugin type.
        plugin: String,
        /// The command.
        command: String,
    },
    /// A host networking command (`ip`, `iptables`) failed.
    #[error("{0}")]
    Command(String),
    /// Reading or writing the result cache, or starting a plugin, failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One container's attachment to a network: what CNI calls the runtime configuration.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Attachment {
    /// The container (for Kubernetes, the pod sandbox) ID: `CNI_CONTAINERID`.
    pub container_id: String,
    /// The network namespace's path: `CNI_NETNS`.
    pub netns: PathBuf,
    /// The interface to create inside the namespace: `CNI_IFNAME` (default `eth0`).
    pub ifname: String,
    /// `CNI_ARGS` key/value pairs (`K8S_POD_NAMESPACE`, `K8S_POD_NAME`, …).
    pub args: Vec<(String, String)>,
    /// Capability arguments, handed to the plugins that declare the capability as
    /// `runtimeConfig` (for example `portMappings`, `bandwidth`, `ipRanges`).
    pub capability_args: serde_json::Map<String, serde_json::Value>,
}

impl Attachment {
    /// An attachment of `container_id` in `netns` on `eth0`.
    pub fn new(container_id: impl Into<String>, netns: impl Into<PathBuf>) -> Self {
        Attachment {
            container_id: container_id.into(),
            netns: netns.into(),
            ifname: "eth0".into(),
            ..Default::default()
        }
    }

    /// Adds a `CNI_ARGS` pair.
    pub fn arg(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.args.push((key.into(), value.into()));
        self
    }

    /// Sets a capability argument (for example `portMappings`).
    pub fn capability(mut self, name: impl Into<String>, value: serde_json::Value) -> Self {
        self.capability_args.insert(name.into(), value);
        self
    }
}

/// A port mapping for the `portMappings` capability (the portmap plugin's hostPorts).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    /// The port on the host.
    pub host_port: u16,
    /// The port in the container.
    pub container_port: u16,
    /// `tcp`, `udp` or `sctp`.
    pub protocol: String,
    /// The host address to bind (empty: all).
    #[serde(default, skip_serializing_if = "String::is_empty", rename = "hostIP")]
    pub host_ip: String,
}

/// How a container runtime or kubelet attaches sandboxes to the pod network. The default
/// implementation is [`CniNetwork`]; anything else (a test double, an in-process dataplane)
/// can take its place.
///
/// ```
/// use bosun_cni::{Attachment, CniNetwork, NetworkPlugin};
/// # async fn demo() -> Result<(), bosun_cni::Error> {
/// let net = CniNetwork::from_dir("/etc/cni/net.d", vec!["/usr/lib/cni".into()], "/var/lib/bosun/cni")?;
/// let pod = Attachment::new("sandbox-1", "/run/bosun/netns/sandbox-1");
/// let result = net.add(&pod).await?;
/// assert_eq!(net.cached(&pod).await.map(|r| r.pod_ips()), Some(result.pod_ips()));
/// net.del(&pod).await?;
/// # Ok(()) }
/// ```
#[async_trait]
pub trait NetworkPlugin: Send + Sync + 'static {
    /// The network's name.
    fn name(&self) -> &str;
    /// Attaches the container (CNI ADD); on failure nothing stays attached.
    async fn add(&self, att: &Attachment) -> Result<CniResult>;
    /// Detaches the container (CNI DEL); succeeds when there is nothing to remove.
    async fn del(&self, att: &Attachment) -> Result<()>;
    /// Verifies the attachment is as ADD left it (CNI CHECK).
    async fn check(&self, att: &Attachment) -> Result<()>;
    /// Whether the network is ready to attach containers (CNI STATUS).
    async fn status(&self) -> Result<()>;
    /// The cached result of an earlier ADD, if any.
    async fn cached(&self, att: &Attachment) -> Option<CniResult>;
}
