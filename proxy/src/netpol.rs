//! NetworkPolicy (`networking.k8s.io/v1`) enforcement for the pods of one node.
//!
//! Upstream's semantics: a pod selected by a policy with the `Ingress` type is isolated for
//! ingress, and then takes only the traffic some rule of some selecting policy allows (the
//! policies add up; none takes away); likewise for `Egress`. A rule's peers are pods
//! (`podSelector` in the policy's namespace, `namespaceSelector` across namespaces, both
//! together), address blocks (`ipBlock` with `except`), or anyone when it lists none; its
//! ports (protocol, number or a named container port, `endPort` ranges) or every port when
//! it lists none. A connection must be allowed both as the sender's egress and as the
//! receiver's ingress; replies of an allowed connection pass. Traffic to and from the node
//! itself (probes, host-network pods, the node's DNS) is always allowed, as upstream states.
//!
//! [`compute`] turns policies, pods and namespaces into a [`PolicyState`] (the allowed
//! traffic of each isolated pod on this node); a [`PolicyDataplane`] enforces it. The default,
//! [`NftPolicies`], keeps a table of its own (`ip bosun-netpol`): a `forward` chain sends
//! each isolated pod's traffic through a chain of its own (one verdict map per direction),
//! whose rules `return` what is allowed and drop the rest. Since bridged traffic passes the
//! IP hooks (`br_netfilter`), pods on one bridge are policed too. [`run`] keeps it in step
//! with the API server.
//!
//! ```no_run
//! use bosun_proxy::netpol::{self, NftPolicies, PolicyDataplane};
//! # async fn f(policies: Vec<bosun_api_types::networking::v1::NetworkPolicy>,
//! #            pods: Vec<bosun_api_types::core::v1::Pod>,
//! #            namespaces: Vec<bosun_api_types::core::v1::Namespace>) {
//! let state = netpol::compute(&policies, &pods, &namespaces, "node-1");
//! NftPolicies::new().sync(&state).await.unwrap();
//! # }
//! ```

use crate::Result;
use bosun_api_types::core::v1::{Namespace, Pod};
use bosun_api_types::meta::v1::LabelSelector;
use bosun_api_types::networking::v1::{NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort};
use bosun_api_types::selector::{LabelSelectorExt, Selector};
use bosun_api_types::IntOrString;
use bosun_client::informer::InformerFactory;
use bosun_client::Client;
use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

/// A protocol and a port range; `None`: every port of the protocol.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortMatch {
    /// `tcp`, `udp` or `sctp`.
    pub protocol: String,
    /// First and last port.
    pub range: Option<(u16, u16)>,
}

/// Traffic a rule lets through: from (ingress) or to (egress) `peers`, on `ports`.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Allow {
    /// Peer addresses and blocks (CIDRs); `None`: anyone.
    pub peers: Option<BTreeSet<String>>,
    /// Blocks taken out of `peers` (`ipBlock.except`).
    pub except: BTreeSet<String>,
    /// Ports; empty: every port and protocol.
    pub ports: BTreeSet<PortMatch>,
}

/// What one isolated pod may take and send; `None`: not isolated in that direction.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodPolicy {
    /// The pod, as `namespace/name`.
    pub pod: String,
    /// Allowed incoming traffic, when isolated for ingress.
    pub ingress: Option<Vec<Allow>>,
    /// Allowed outgoing traffic, when isolated for egress.
    pub egress: Option<Vec<Allow>>,
}

/// The isolated pods of a node, by address.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicyState {
    /// Pod address → its policy.
    pub pods: BTreeMap<Ipv4Addr, PodPolicy>,
}

/// A pod as policies see it.
struct PodRef<'a> {
    namespace: &'a str,
    name: &'a str,
    ip: Ipv4Addr,
    labels: &'a BTreeMap<String, String>,
    node: &'a str,
    /// (name, port, protocol) of its containers' named ports.
    ports: Vec<(&'a str, u16, String)>,
}

fn proto(p: Option<&str>) -> String {
    p.unwrap_or("TCP").to_ascii_lowercase()
}

fn pod_refs<Q: Borrow<Pod>>(pods: &[Q]) -> Vec<PodRef<'_>> {
    pods.iter()
        .map(Borrow::borrow)
        .filter_map(|p: &Pod| {
            let spec = p.spec.as_ref()?;
            let status = p.status.as_ref()?;
            if spec.host_network == Some(true)
                || matches!(status.phase.as_deref(), Some("Succeeded") | Some("Failed"))
            {
                return None;
            }
            let ip: Ipv4Addr = status.pod_ip.as_deref()?.parse().ok()?;
            let ports = spec
                .containers
                .iter()
                .flat_map(|c| c.ports.iter())
                .filter_map(|cp| {
                    Some((
                        cp.name.as_deref()?,
                        u16::try_from(cp.container_port).ok()?,
                        proto(cp.protocol.as_deref()),
                    ))
                })
                .collect();
            Some(PodRef {
                namespace: p.metadata.namespace.as_deref().unwrap_or_default(),
                name: p.metadata.name.as_deref().unwrap_or_default(),
                ip,
                labels: &p.metadata.labels,
                node: spec.node_name.as_deref().unwrap_or_default(),
                ports,
            })
        })
        .collect()
}

/// A parsed selector; an invalid one matches nothing.
fn parse(sel: &LabelSelector) -> Option<Selector> {
    sel.to_selector()
        .map_err(|e| tracing::debug!(error = %e, "an invalid selector in a NetworkPolicy matches nothing"))
        .ok()
}

fn matches(sel: &Option<Selector>, labels: &BTreeMap<String, String>) -> bool {
    sel.as_ref().is_some_and(|s| s.matches(labels))
}

/// Peers of one rule, resolved: pods (with their named ports) and address blocks.
struct Peers<'p, 'a> {
    pods: Vec<&'p PodRef<'a>>,
    /// The pods' addresses, as the rules write them.
    ips: BTreeSet<String>,
    blocks: Vec<(String, Vec<String>)>,
}

fn resolve_peers<'p, 'a>(
    peers: &[NetworkPolicyPeer],
    policy_ns: &str,
    pods: &'p [PodRef<'a>],
    ns_labels: &BTreeMap<String, BTreeMap<String, String>>,
) -> Peers<'p, 'a> {
    let mut out = Peers {
        pods: Vec::new(),
        ips: BTreeSet::new(),
        blocks: Vec::new(),
    };
    let none = BTreeMap::new();
    let mut seen = std::collections::HashSet::new();
    for peer in peers {
        if let Some(b) = &peer.ip_block {
            out.blocks.push((b.cidr.clone(), b.except.clone()));
            continue;
        }
        let ns_sel = peer.namespace_selector.as_ref().map(parse);
        let pod_sel = peer.pod_selector.as_ref().map(parse);
        // Namespaces decided once each.
        let mut ns_cache: BTreeMap<&str, bool> = BTreeMap::new();
        for p in pods {
            let ns_ok = *ns_cache
                .entry(p.namespace)
                .or_insert_with(|| match &ns_sel {
                    Some(sel) => matches(sel, ns_labels.get(p.namespace).unwrap_or(&none)),
                    None => p.namespace == policy_ns,
                });
            if !ns_ok {
                continue;
            }
            let pod_ok = match &pod_sel {
                Some(sel) => matches(sel, p.labels),
                None => ns_sel.is_some(),
            };
            if ns_ok && pod_ok && seen.insert(p.ip) {
                out.pods.push(p);
                out.ips.insert(p.ip.to_string());
            }
        }
    }
    out
}

/// A rule's ports as seen at `pod` (named ports resolved against its containers); `None`:
/// the rule names ports but none exists there, so it matches nothing.
fn resolve_ports(ports: &[NetworkPolicyPort], pod: Option<&PodRef>) -> Option<BTreeSet<PortMatch>> {
    let mut out = BTreeSet::new();
    for p in ports {
        let protocol = proto(p.protocol.as_deref());
        let range = match &p.port {
            None => None,
            Some(IntOrString::Int(n)) => {
                let Ok(from) = u16::try_from(*n) else {
                    continue;
                };
                let to = p
                    .end_port
                    .and_then(|e| u16::try_from(e).ok())
                    .filter(|e| *e >= from)
                    .unwrap_or(from);
                Some((from, to))
            }
            Some(IntOrString::String(name)) => {
                let found = pod.and_then(|pod| {
                    pod.ports
                        .iter()
                        .find(|(n, _, pr)| n == name && *pr == protocol)
                        .map(|(_, port, _)| *port)
                });
                match found {
                    Some(port) => Some((port, port)),
                    None => continue,
                }
            }
        };
        out.insert(PortMatch { protocol, range });
    }
    (ports.is_empty() || !out.is_empty()).then_some(out)
}

/// The allows of one rule as seen by `target` (whose named ports an ingress rule means).
fn rule_allows(
    peers: &[NetworkPolicyPeer],
    ports: &[NetworkPolicyPort],
    resolved: &Peers,
    ingress_target: Option<&PodRef>,
) -> Vec<Allow> {
    let mut out = Vec::new();
    let block_allows = |ports: BTreeSet<PortMatch>, out: &mut Vec<Allow>| {
        for (cidr, except) in &resolved.blocks {
            out.push(Allow {
                peers: Some(BTreeSet::from([cidr.clone()])),
                except: except.iter().cloned().collect(),
                ports: ports.clone(),
            });
        }
    };
    if let Some(target) = ingress_target {
        let Some(ports) = resolve_ports(ports, Some(target)) else {
            return out;
        };
        if peers.is_empty() {
            out.push(Allow {
                peers: None,
                except: BTreeSet::new(),
                ports,
            });
            return out;
        }
        if !resolved.pods.is_empty() {
            out.push(Allow {
                peers: Some(resolved.ips.clone()),
                except: BTreeSet::new(),
                ports: ports.clone(),
            });
        }
        block_allows(ports, &mut out);
        return out;
    }
    // Egress: a named port means each destination pod's own port of that name.
    let named = ports
        .iter()
        .any(|p| matches!(p.port, Some(IntOrString::String(_))));
    if peers.is_empty() {
        if let Some(ports) = resolve_ports(ports, None) {
            out.push(Allow {
                peers: None,
                except: BTreeSet::new(),
                ports,
            });
        }
        return out;
    }
    let mut by_ports: BTreeMap<BTreeSet<PortMatch>, BTreeSet<String>> = BTreeMap::new();
    if !named && !resolved.ips.is_empty() {
        if let Some(ps) = resolve_ports(ports, None) {
            by_ports.insert(ps, resolved.ips.clone());
        }
    }
    for p in resolved.pods.iter().filter(|_| named) {
        if let Some(ps) = resolve_ports(ports, Some(p)) {
            by_ports.entry(ps).or_default().insert(p.ip.to_string());
        }
    }
    for (ports, ips) in by_ports {
        out.push(Allow {
            peers: Some(ips),
            except: BTreeSet::new(),
            ports,
        });
    }
    if let Some(ports) = resolve_ports(ports, None) {
        block_allows(ports, &mut out);
    }
    out
}

/// The policy state of `node`'s pods.
/// (Any `Borrow` of the objects: the informers' `Arc`s, or the objects themselves.)
pub fn compute<P: Borrow<NetworkPolicy>, Q: Borrow<Pod>, N: Borrow<Namespace>>(
    policies: &[P],
    pods: &[Q],
    namespaces: &[N],
    node: &str,
) -> PolicyState {
    let refs = pod_refs(pods);
    let ns_labels: BTreeMap<String, BTreeMap<String, String>> = namespaces
        .iter()
        .map(Borrow::borrow)
        .filter_map(|n: &Namespace| {
            let name = n.metadata.name.clone()?;
            let mut labels = n.metadata.labels.clone();
            labels
                .entry("kubernetes.io/metadata.name".into())
                .or_insert_with(|| name.clone());
            Some((name, labels))
        })
        .collect();
    let mut state = PolicyState::default();
    for policy in policies.iter().map(Borrow::borrow) {
        let policy: &NetworkPolicy = policy;
        let Some(spec) = &policy.spec else { continue };
        let ns = policy.metadata.namespace.as_deref().unwrap_or_default();
        let types: Vec<&str> = if spec.policy_types.is_empty() {
            // The API's default: Ingress, and Egress when there are egress rules.
            let mut t = vec!["Ingress"];
            if !spec.egress.is_empty() {
                t.push("Egress");
            }
            t
        } else {
            spec.policy_types.iter().map(String::as_str).collect()
        };
        let selected = parse(&spec.pod_selector);
        let ingress = types.contains(&"Ingress");
        let egress = types.contains(&"Egress");
        let ingress_peers: Vec<Peers> = spec
            .ingress
            .iter()
            .map(|r| resolve_peers(&r.from, ns, &refs, &ns_labels))
            .collect();
        let egress_peers: Vec<Peers> = spec
            .egress
            .iter()
            .map(|r| resolve_peers(&r.to, ns, &refs, &ns_labels))
            .collect();
        for pod in refs
            .iter()
            .filter(|p| p.node == node && p.namespace == ns && matches(&selected, p.labels))
        {
            let entry = state.pods.entry(pod.ip).or_insert_with(|| PodPolicy {
                pod: format!("{}/{}", pod.namespace, pod.name),
                ..Default::default()
            });
            if ingress {
                let list = entry.ingress.get_or_insert_with(Vec::new);
                for (rule, peers) in spec.ingress.iter().zip(&ingress_peers) {
                    list.extend(rule_allows(&rule.from, &rule.ports, peers, Some(pod)));
                }
            }
            if egress {
                let list = entry.egress.get_or_insert_with(Vec::new);
                for (rule, peers) in spec.egress.iter().zip(&egress_peers) {
                    list.extend(rule_allows(&rule.to, &rule.ports, peers, None));
                }
            }
        }
    }
    for p in state.pods.values_mut() {
        for list in [&mut p.ingress, &mut p.egress].into_iter().flatten() {
            list.sort();
            list.dedup();
        }
    }
    state
}

/// Enforces a [`PolicyState`] on the node.
#[async_trait::async_trait]
pub trait PolicyDataplane: Send + Sync {
    /// Brings the node to `state` (the whole state each time).
    async fn sync(&self, state: &PolicyState) -> Result<()>;
    /// Removes everything this dataplane installed.
    async fn cleanup(&self) -> Result<()>;
}

/// The nftables policy dataplane: table `ip bosun-netpol`, rewritten in one transaction on
/// every change.
pub struct NftPolicies {
    /// The table's name.
    pub table: String,
    /// The command that runs `nft`.
    pub nft: Vec<String>,
}

impl Default for NftPolicies {
    fn default() -> Self {
        Self::new()
    }
}

impl NftPolicies {
    /// Table `bosun-netpol`, `nft` from the PATH.
    pub fn new() -> Self {
        NftPolicies {
            table: "bosun-netpol".into(),
            nft: vec!["nft".into()],
        }
    }

    /// The nft script that makes the table say `state`.
    pub fn render(&self, state: &PolicyState) -> String {
        let t = &self.table;
        let mut out = format!("table ip {t}\ndelete table ip {t}\ntable ip {t} {{\n");
        let chain =
            |dir: &str, ip: &Ipv4Addr| format!("{dir}-{}", ip.to_string().replace('.', "-"));
        for (dir, pick) in [
            (
                "ingress",
                (|p: &PodPolicy| p.ingress.as_ref()) as fn(&PodPolicy) -> Option<&Vec<Allow>>,
            ),
            ("egress", |p: &PodPolicy| p.egress.as_ref()),
        ] {
            let pods: Vec<(&Ipv4Addr, &Vec<Allow>)> = state
                .pods
                .iter()
                .filter_map(|(ip, p)| Some((ip, pick(p)?)))
                .collect();
            let _ = writeln!(out, "  map {dir} {{\n    type ipv4_addr : verdict");
            if !pods.is_empty() {
                let elems: Vec<String> = pods
                    .iter()
                    .map(|(ip, _)| format!("{ip} : jump {}", chain(dir, ip)))
                    .collect();
                let _ = writeln!(out, "    elements = {{ {} }}", elems.join(", "));
            }
            let _ = writeln!(out, "  }}");
            // The peer is the source of incoming traffic, the destination of outgoing.
            let peer = if dir == "ingress" { "saddr" } else { "daddr" };
            for (ip, allows) in pods {
                let _ = writeln!(out, "  chain {} {{", chain(dir, ip));
                for a in allows {
                    for line in allow_lines(a, peer) {
                        let _ = writeln!(out, "    {line}");
                    }
                }
                let _ = writeln!(out, "    drop\n  }}");
            }
        }
        let _ = writeln!(
            out,
            "  chain forward {{\n    type filter hook forward priority filter; policy accept;\n    ct state established,related accept\n    ip saddr vmap @egress\n    ip daddr vmap @ingress\n  }}\n}}"
        );
        out
    }
}

/// The nft rules (each ending in `return`) of one allow.
fn allow_lines(a: &Allow, peer: &str) -> Vec<String> {
    let mut prefix = String::new();
    if let Some(peers) = &a.peers {
        let _ = write!(
            prefix,
            "ip {peer} {{ {} }} ",
            peers.iter().cloned().collect::<Vec<_>>().join(", ")
        );
    }
    if !a.except.is_empty() {
        let _ = write!(
            prefix,
            "ip {peer} != {{ {} }} ",
            a.except.iter().cloned().collect::<Vec<_>>().join(", ")
        );
    }
    if a.ports.is_empty() {
        return vec![format!("{prefix}return")];
    }
    let mut by_proto: BTreeMap<&str, Option<Vec<String>>> = BTreeMap::new();
    for p in &a.ports {
        let e = by_proto
            .entry(&p.protocol)
            .or_insert_with(|| Some(Vec::new()));
        match (p.range, e.as_mut()) {
            (None, _) => *e = None,
            (Some((from, to)), Some(list)) if from == to => list.push(from.to_string()),
            (Some((from, to)), Some(list)) => list.push(format!("{from}-{to}")),
            (Some(_), None) => {}
        }
    }
    by_proto
        .into_iter()
        .map(|(proto, ports)| match ports {
            None => format!("{prefix}meta l4proto {proto} return"),
            Some(list) => format!(
                "{prefix}meta l4proto {proto} th dport {{ {} }} return",
                list.join(", ")
            ),
        })
        .collect()
}

#[async_trait::async_trait]
impl PolicyDataplane for NftPolicies {
    async fn sync(&self, state: &PolicyState) -> Result<()> {
        crate::nftables::run_nft(&self.nft, &self.render(state)).await
    }

    async fn cleanup(&self) -> Result<()> {
        let t = &self.table;
        crate::nftables::run_nft(&self.nft, &format!("table ip {t}\ndelete table ip {t}\n")).await
    }
}

/// Enforces `node`'s policies from `client`'s NetworkPolicies, Pods and Namespaces until
/// `shutdown`: on every change (settled for `min_interval`) and every `resync`.
pub async fn run(
    client: Client,
    node: String,
    dataplane: Arc<dyn PolicyDataplane>,
    timing: crate::runner::Timing,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let factory = InformerFactory::new(client);
    let policies = factory.informer::<NetworkPolicy>(None);
    let pods = factory.informer::<Pod>(None);
    let namespaces = factory.informer::<Namespace>(None);
    let (mut a, mut b, mut c) = (
        policies.subscribe(),
        pods.subscribe(),
        namespaces.subscribe(),
    );
    tokio::select! {
        _ = &mut shutdown => return,
        _ = async {
            policies.wait_until_ready().await;
            pods.wait_until_ready().await;
            namespaces.wait_until_ready().await;
        } => {}
    }
    let mut last: Option<PolicyState> = None;
    let mut last_sync = tokio::time::Instant::now();
    loop {
        let state = compute(
            &policies.store().list(),
            &pods.store().list(),
            &namespaces.store().list(),
            &node,
        );
        if last.as_ref() != Some(&state) || last_sync.elapsed() >= timing.resync {
            match dataplane.sync(&state).await {
                Ok(()) => {
                    tracing::debug!(pods = state.pods.len(), "network policies synced");
                    last = Some(state);
                    last_sync = tokio::time::Instant::now();
                }
                Err(e) => {
                    tracing::warn!(error = %e, "network policy sync failed; retrying");
                    last = None;
                }
            }
        }
        tokio::select! {
            _ = &mut shutdown => break,
            _ = tokio::time::sleep(timing.resync.saturating_sub(last_sync.elapsed()).max(Duration::from_secs(1))) => {}
            _ = a.recv() => {}
            _ = b.recv() => {}
            _ = c.recv() => {}
        }
        tokio::time::sleep(timing.min_interval).await;
        while a.try_recv().is_ok() || b.try_recv().is_ok() || c.try_recv().is_ok() {}
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use serde_json::json;

    fn pod(ns: &str, name: &str, ip: &str, node: &str, labels: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"namespace": ns, "name": name, "labels": labels},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "i",
                     "ports": [{"name": "http", "containerPort": 8080}, {"name": "dns", "containerPort": 53, "protocol": "UDP"}]}]},
            "status": {"phase": "Running", "podIP": ip}
        }))
        .unwrap()
    }

    fn policy(ns: &str, spec: serde_json::Value) -> NetworkPolicy {
        serde_json::from_value(json!({"metadata": {"namespace": ns, "name": "p"}, "spec": spec}))
            .unwrap()
    }

    fn world() -> (Vec<Pod>, Vec<Namespace>) {
        let pods = vec![
            pod("a", "web", "10.244.0.5", "n1", json!({"app": "web"})),
            pod("a", "client", "10.244.0.6", "n1", json!({"app": "client"})),
            pod("b", "other", "10.244.1.7", "n2", json!({"app": "client"})),
            pod("a", "far", "10.244.1.8", "n2", json!({"app": "web"})),
        ];
        let nss = vec![
            serde_json::from_value(json!({"metadata": {"name": "a"}})).unwrap(),
            serde_json::from_value(json!({"metadata": {"name": "b", "labels": {"team": "x"}}}))
                .unwrap(),
        ];
        (pods, nss)
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn default_deny_isolates_only_this_nodes_selected_pods() {
        let (pods, nss) = world();
        let deny = policy("a", json!({"podSelector": {}}));
        let st = compute(&[deny], &pods, &nss, "n1");
        assert_eq!(st.pods.len(), 2, "web and client on n1; far is on n2");
        let web = &st.pods[&ip("10.244.0.5")];
        assert_eq!(web.ingress, Some(vec![]));
        assert_eq!(web.egress, None, "policyTypes defaults to Ingress only");
        let script = NftPolicies::new().render(&st);
        assert!(
            script.contains("10.244.0.5 : jump ingress-10-244-0-5"),
            "{script}"
        );
        assert!(
            script.contains("chain ingress-10-244-0-5 {\n    drop\n  }"),
            "{script}"
        );
        // No policy: nothing isolated.
        assert!(compute::<NetworkPolicy, _, _>(&[], &pods, &nss, "n1")
            .pods
            .is_empty());
    }

    #[test]
    fn peers_ports_and_blocks() {
        let (pods, nss) = world();
        let p = policy(
            "a",
            json!({
                "podSelector": {"matchLabels": {"app": "web"}},
                "policyTypes": ["Ingress", "Egress"],
                "ingress": [
                    {"from": [{"podSelector": {"matchLabels": {"app": "client"}}}],
                     "ports": [{"port": "http"}, {"port": 9000, "endPort": 9010}]},
                    {"from": [{"namespaceSelector": {"matchLabels": {"team": "x"}}},
                              {"ipBlock": {"cidr": "192.0.2.0/24", "except": ["192.0.2.128/25"]}}]}
                ],
                "egress": [
                    {"to": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": "client"}}}],
                     "ports": [{"port": "dns", "protocol": "UDP"}]},
                    {"ports": [{"protocol": "TCP", "port": 443}]}
                ]
            }),
        );
        let st = compute(&[p], &pods, &nss, "n1");
        assert_eq!(st.pods.len(), 1);
        let web = &st.pods[&ip("10.244.0.5")];
        let ingress = web.ingress.as_ref().unwrap();
        // Same-namespace clients on the named port (8080) and the range.
        assert!(ingress.iter().any(|a| a.peers
            == Some(BTreeSet::from(["10.244.0.6".to_string()]))
            && a.ports
                == BTreeSet::from([
                    PortMatch {
                        protocol: "tcp".into(),
                        range: Some((8080, 8080))
                    },
                    PortMatch {
                        protocol: "tcp".into(),
                        range: Some((9000, 9010))
                    }
                ])));
        // Namespace b's pods, any port; the block with its exception.
        assert!(ingress.iter().any(|a| a.peers
            == Some(BTreeSet::from(["10.244.1.7".to_string()]))
            && a.ports.is_empty()));
        assert!(ingress
            .iter()
            .any(|a| a.except == BTreeSet::from(["192.0.2.128/25".to_string()])));
        let egress = web.egress.as_ref().unwrap();
        // Clients in every namespace, on their own UDP port named dns; anyone on 443.
        assert!(egress.iter().any(|a| a.peers
            == Some(BTreeSet::from([
                "10.244.0.6".to_string(),
                "10.244.1.7".to_string()
            ]))
            && a.ports
                == BTreeSet::from([PortMatch {
                    protocol: "udp".into(),
                    range: Some((53, 53))
                }])));
        assert!(egress.iter().any(|a| a.peers.is_none()));
        let script = NftPolicies::new().render(&st);
        for want in [
            "ip saddr { 10.244.0.6 } meta l4proto tcp th dport { 8080, 9000-9010 } return",
            "ip saddr { 192.0.2.0/24 } ip saddr != { 192.0.2.128/25 } return",
            "ip daddr { 10.244.0.6, 10.244.1.7 } meta l4proto udp th dport { 53 } return",
            "meta l4proto tcp th dport { 443 } return",
            "ip saddr vmap @egress",
        ] {
            assert!(script.contains(want), "{want} missing from\n{script}");
        }
    }

    #[test]
    fn policies_add_up_and_unknown_named_ports_match_nothing() {
        let (pods, nss) = world();
        let a = policy(
            "a",
            json!({"podSelector": {"matchLabels": {"app": "web"}},
            "ingress": [{"ports": [{"port": "nope"}]}]}),
        );
        let b = policy(
            "a",
            json!({"podSelector": {}, "ingress": [{"from": [{"podSelector": {}}]}]}),
        );
        let st = compute(std::slice::from_ref(&a), &pods, &nss, "n1");
        assert_eq!(
            st.pods[&ip("10.244.0.5")].ingress,
            Some(vec![]),
            "isolated, nothing allowed"
        );
        let st = compute(&[a, b], &pods, &nss, "n1");
        let ing = st.pods[&ip("10.244.0.5")].ingress.clone().unwrap();
        assert_eq!(ing.len(), 1);
        assert_eq!(
            ing[0].peers,
            Some(
                ["10.244.0.5", "10.244.0.6", "10.244.1.8"]
                    .iter()
                    .map(|s| s.to_string())
                    .collect()
            )
        );
    }
}
