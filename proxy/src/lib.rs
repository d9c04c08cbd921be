//! bosun-proxy: the Service dataplane (kube-proxy). Services and EndpointSlices, read through
//! shared informers, become a [`model::ProxyState`] (one entry per Service port with the
//! endpoints that serve it); a [`Dataplane`] makes the kernel forward traffic accordingly.
//! The default dataplane is [`nftables::NftDataplane`].
//!
//! ```no_run
//! use bosun_proxy::{model, nftables::{NftConfig, NftDataplane}, Dataplane};
//! # async fn f(services: Vec<serde_json::Value>, slices: Vec<serde_json::Value>) {
//! let mut cfg = NftConfig::new("node-1");
//! cfg.cluster_cidr = Some("10.244.0.0/16".into());
//! let dataplane = NftDataplane::new(cfg);
//! let state = model::build(&services, &slices);
//! dataplane.sync(&state).await.unwrap();
//! # }
//! ```

pub mod dns;
pub mod model;
pub mod netpol;
pub mod nftables;
pub mod runner;
pub mod userspace;

/// What can go wrong.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `nft` refused the rules or could not run.
    #[error("nftables: {0}")]
    Nft(String),
    /// The userspace proxy could not listen or set addresses.
    #[error("userspace proxy: {0}")]
    Userspace(String),
    /// The DNS server could not start.
    #[error("DNS: {0}")]
    Dns(String),
    /// The API server could not be read.
    #[error("API: {0}")]
    Api(String),
}

/// A result with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// Makes the node forward Service traffic as a [`model::ProxyState`] says.
///
/// ```
/// use bosun_proxy::{model::ProxyState, Dataplane};
///
/// /// Programs nothing: says how many Service ports there are (a dry run).
/// struct Report;
///
/// #[async_trait::async_trait]
/// impl Dataplane for Report {
///     async fn sync(&self, state: &ProxyState) -> bosun_proxy::Result<()> {
///         tracing::info!(ports = state.services.len(), "would program");
///         Ok(())
///     }
///     async fn cleanup(&self) -> bosun_proxy::Result<()> {
///         Ok(())
///     }
/// }
/// ```
///
/// `bosun_proxy::runner::run` feeds a dataplane from the cluster's Services and
/// EndpointSlices; [`nftables::NftDataplane`] is the default, [`userspace`] the fallback.
#[async_trait::async_trait]
pub trait Dataplane: Send + Sync {
    /// Brings the dataplane to `state` (the whole state each time: an implementation may
    /// apply only the difference).
    async fn sync(&self, state: &model::ProxyState) -> Result<()>;

    /// Removes everything this dataplane installed.
    async fn cleanup(&self) -> Result<()>;
}

/// A random number for load spreading and query IDs (std's per-process random hash keys,
/// mixed with the time; not for secrets).
pub(crate) fn random() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}
