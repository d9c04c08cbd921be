//! The kubelet's side of the container runtime's configuration and health: the node's pod
//! CIDR handed to the runtime (UpdateRuntimeConfig) whenever it changes, and the node's
//! readiness read from the runtime's RuntimeReady and NetworkReady conditions.

use bosun_api_types::core::v1::Node;
use bosun_client::{Api, Client};
use bosun_cri::v1::{NetworkConfig, RuntimeConfig, StatusRequest, UpdateRuntimeConfigRequest};
use bosun_cri::RuntimeService;
use std::sync::Arc;
use std::time::Duration;

/// `Ok` when the runtime and its network are ready; otherwise the reason, worded as
/// upstream's kubelet words it in the Ready condition.
pub async fn readiness(rt: &dyn RuntimeService) -> Result<(), String> {
    let status = rt
        .status(StatusRequest::default())
        .await
        .map_err(|e| format!("container runtime is down: {e}"))?;
    let conditions = status.status.map(|s| s.conditions).unwrap_or_default();
    for (t, what) in [
        ("RuntimeReady", "container runtime not ready"),
        ("NetworkReady", "container runtime network not ready"),
    ] {
        match conditions.iter().find(|c| c.r#type == t) {
            Some(c) if c.status => {}
            Some(c) => {
                return Err(format!(
                    "{what}: {t}=false reason:{} message:{}",
                    c.reason, c.message
                ))
            }
            None => return Err(format!("{what}: {t} missing from the runtime's status")),
        }
    }
    Ok(())
}

/// Watches the Node's `spec.podCIDR` (every 200 ms until it has one, then every `interval`)
/// and hands each new value to the runtime, until `shutdown` resolves.
pub async fn sync_pod_cidr(
    client: Client,
    node: String,
    rt: Arc<dyn RuntimeService>,
    interval: Duration,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let nodes: Api<Node> = Api::all(client);
    let mut sent = String::new();
    let mut tick = tokio::time::interval(interval);
    // A new node waits for its CIDR to be Ready: ask often until it comes.
    let mut first = tokio::time::interval(Duration::from_millis(200));
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            _ = tick.tick() => {}
            _ = first.tick(), if sent.is_empty() => {}
        }
        let cidr = match nodes.get_opt(&node).await {
            Ok(Some(n)) => n.spec.and_then(|s| s.pod_cidr).unwrap_or_default(),
            Ok(None) => continue,
            Err(e) => {
                tracing::debug!(error = %e, "reading the node's pod CIDR");
                continue;
            }
        };
        if cidr.is_empty() || cidr == sent {
            continue;
        }
        let req = UpdateRuntimeConfigRequest {
            runtime_config: Some(RuntimeConfig {
                network_config: Some(NetworkConfig {
                    pod_cidr: cidr.clone(),
                }),
            }),
        };
        match rt.update_runtime_config(req).await {
            Ok(_) => {
                tracing::info!(pod_cidr = %cidr, "pod CIDR handed to the runtime");
                sent = cidr;
            }
            Err(e) => tracing::warn!(error = %e, "updating the runtime's pod CIDR"),
        }
    }
}
