//! A whole cluster in one process, on the example's own store (`LogStore`), with three
//! simulated nodes: `cargo run -p bosun-examples --bin orchestrator [PORT]`, then
//! `kubectl --server http://127.0.0.1:PORT get nodes` (no authentication: loopback only).

use bosun_examples::{log_store::LogStore, orchestrator::Orchestrator};
use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let port: u16 = match std::env::args().nth(1) {
        Some(p) => p.parse().map_err(|e| format!("the port {p:?}: {e}"))?,
        None => 8080,
    };
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let cluster = Orchestrator::start(
        Arc::new(LogStore::new()),
        listener,
        &["node-1", "node-2", "node-3"],
    )
    .await?;
    tracing::info!(
        "try: kubectl --server {} create deployment web --image=nginx --replicas=6",
        cluster.url()
    );
    tokio::signal::ctrl_c().await?;
    Ok(())
}
