//! Pod traffic between nodes (host-gw): every other node's pod CIDR is routed through that
//! node's InternalIP, kept in step with the Node objects; this node's own pod CIDR is let
//! through the host's `FORWARD` chain.

use bosun_api_types::core::v1::Node;
use bosun_client::{Api, Client, ListParams};
use bosun_cni::routes::{self, Route};
use serde_json::Value;
use std::time::Duration;

/// The routes `node` needs to reach the pods of the other nodes in `nodes` (those with a pod
/// CIDR and an InternalIP), and its own pod CIDR.
pub fn desired(node: &str, nodes: &[Value]) -> (Vec<Route>, Option<String>) {
    let mut want = Vec::new();
    let mut own = None;
    for n in nodes {
        let Some(cidr) = n["spec"]["podCIDR"].as_str().filter(|c| !c.is_empty()) else {
            continue;
        };
        if n["metadata"]["name"].as_str() == Some(node) {
            own = Some(cidr.to_string());
            continue;
        }
        let ip = n["status"]["addresses"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|a| a["type"] == "InternalIP")
            .and_then(|a| a["address"].as_str())
            .and_then(|a| a.parse().ok());
        if let Some(via) = ip {
            want.push(Route {
                dst: cidr.to_string(),
                via,
            });
        }
    }
    want.sort();
    (want, own)
}

/// Keeps the routes current every `interval` until `shutdown`.
pub async fn sync_routes(
    client: Client,
    node: String,
    interval: Duration,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let nodes: Api<Node> = Api::all(client);
    let mut allowed: Option<String> = None;
    tokio::pin!(shutdown);
    loop {
        let list = match nodes.list(&ListParams::default()).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "listing nodes for pod routes");
                Default::default()
            }
        };
        let values: Vec<Value> = list
            .items
            .iter()
            .filter_map(|n| serde_json::to_value(n).ok())
            .collect();
        if !values.is_empty() {
            let (want, own) = desired(&node, &values);
            if let Err(e) = routes::sync(&want).await {
                tracing::warn!(error = %e, "syncing routes to other nodes' pods");
            }
            if own.is_some() && own != allowed {
                if let Some(cidr) = &own {
                    match routes::allow_forwarding(cidr).await {
                        Ok(()) => allowed = own.clone(),
                        Err(e) => {
                            tracing::warn!(error = %e, "allowing pod traffic to be forwarded")
                        }
                    }
                }
            }
        }
        tokio::select! {
            _ = &mut shutdown => return,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn routes_go_to_the_other_nodes() {
        let node = |name: &str, cidr: Option<&str>, ip: Option<&str>| {
            json!({"metadata": {"name": name}, "spec": {"podCIDR": cidr},
                   "status": {"addresses": ip.map(|i| vec![json!({"type": "Hostname", "address": name}), json!({"type": "InternalIP", "address": i})]).unwrap_or_default()}})
        };
        let nodes = vec![
            node("b", Some("10.244.1.0/24"), Some("172.31.250.12")),
            node("a", Some("10.244.0.0/24"), Some("172.31.250.11")),
            node("c", None, Some("172.31.250.13")),
            node("d", Some("10.244.3.0/24"), None),
        ];
        let (want, own) = desired("a", &nodes);
        assert_eq!(own.as_deref(), Some("10.244.0.0/24"));
        assert_eq!(
            want,
            vec![Route {
                dst: "10.244.1.0/24".into(),
                via: "172.31.250.12".parse().unwrap()
            }]
        );
    }
}
