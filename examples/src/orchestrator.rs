//! A custom orchestrator assembled from the crates, on a [`Store`] of your own: the API
//! server (`bosun-apiserver`) over the store, the default scheduler
//! (`bosun-scheduler-framework`), the built-in controllers (`bosun-controllers`) and nodes
//! whose kubelets (`bosun-kubelet`) run pods on the simulated runtime (`bosun-cri`) — a
//! whole cluster in one process, without root, for tests and simulations. The reference
//! binary `bosun` composes the same pieces with the embedded store, TLS and real containers.
//!
//! ```no_run
//! use bosun_examples::{log_store::LogStore, orchestrator::Orchestrator};
//! use std::sync::Arc;
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let cluster = Orchestrator::start(Arc::new(LogStore::new()), listener, &["node-a", "node-b"]).await?;
//! // Any client works against cluster.url(): kubectl, the typed client below, `kube`.
//! let nodes: bosun_client::Api<bosun_api_types::core::v1::Node> =
//!     bosun_client::Api::all(cluster.client());
//! # Ok(()) }
//! ```

use bosun_apiserver::{auth::Pipeline, ApiServer, Config, ResourceTable};
use bosun_client::Client;
use bosun_cri::simulated::SimulatedRuntime;
use bosun_kubelet::{machine::Machine, node::NodeAgent, node::NodeConfig, pods::PodWorker};
use bosun_store::Store;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// Why the orchestrator could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The listener has no local address.
    #[error("the listener's address: {0}")]
    Listener(#[source] std::io::Error),
    /// Writing the API server's built-in objects to the store failed.
    #[error("bootstrapping the API server: {0}")]
    Bootstrap(String),
    /// The client to the API server could not be made.
    #[error("a client for {url}: {message}")]
    Client {
        /// The API server's URL.
        url: String,
        /// What went wrong.
        message: String,
    },
}

/// A running cluster: see the [module](self). Dropping it stops every part.
pub struct Orchestrator {
    url: String,
    client: Client,
    tasks: Vec<JoinHandle<()>>,
}

impl Orchestrator {
    /// Starts the API server on `store`, serving plain HTTP on `listener` (no
    /// authentication: keep it on loopback), with the scheduler, the controllers and one
    /// simulated node per name in `nodes`.
    pub async fn start(
        store: Arc<dyn Store>,
        listener: TcpListener,
        nodes: &[&str],
    ) -> Result<Self, StartError> {
        let url = format!(
            "http://{}",
            listener.local_addr().map_err(StartError::Listener)?
        );
        let server = ApiServer::build(
            store,
            ResourceTable::builtin(),
            Config::default(),
            Pipeline::default(),
        );
        server
            .bootstrap()
            .await
            .map_err(|e| StartError::Bootstrap(e.to_string()))?;
        let client_error = |message: String| StartError::Client {
            url: url.clone(),
            message,
        };
        let config =
            bosun_client::Config::new(url.parse().map_err(|e| client_error(format!("{e}")))?);
        let client = Client::try_from_config(config).map_err(|e| client_error(e.to_string()))?;
        let mut tasks = vec![tokio::spawn(async move {
            if let Err(e) = server.serve(listener, std::future::pending()).await {
                tracing::error!(error = %e, "the API server stopped");
            }
        })];
        tasks.push(tokio::spawn(bosun_controllers::builtin::manager::run_with(
            client.clone(),
            Default::default(),
        )));
        let scheduler = client.clone();
        tasks.push(tokio::spawn(async move {
            if let Err(e) =
                bosun_scheduler_framework::runner::run(scheduler, Default::default()).await
            {
                tracing::error!(error = %e, "the scheduler stopped");
            }
        }));
        let logs = std::env::temp_dir().join("bosun-orchestrator-logs");
        for (i, name) in nodes.iter().enumerate() {
            let n = u8::try_from(i + 1).unwrap_or(u8::MAX);
            let address = std::net::Ipv4Addr::new(192, 0, 2, n);
            let machine = Machine {
                hostname: name.to_string(),
                internal_ip: Some(address.into()),
                ..Machine::detect(&std::env::temp_dir())
            };
            let agent = NodeAgent::new(client.clone(), machine, NodeConfig::new(*name));
            tasks.push(tokio::spawn(agent.run(|| Ok(()), std::future::pending())));
            // Each node's pods get addresses from their own /24 (10.244.N.0/24).
            let runtime = Arc::new(SimulatedRuntime::new([10, 244, n]));
            let worker = Arc::new(PodWorker::new(
                client.clone(),
                name.to_string(),
                address.to_string(),
                runtime,
                logs.clone(),
            ));
            tasks.push(tokio::spawn(
                worker.run(Duration::from_secs(1), std::future::pending()),
            ));
        }
        tracing::info!(%url, nodes = nodes.len(), "orchestrator running");
        Ok(Orchestrator { url, client, tasks })
    }

    /// The API server's URL (`http://127.0.0.1:PORT`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A client of the API server.
    pub fn client(&self) -> Client {
        self.client.clone()
    }
}

impl Drop for Orchestrator {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}
