//! The default [`Dataplane`]: nftables, programmed as upstream's nftables kube-proxy does it,
//! in one table of its own (`ip bosun-proxy`):
//!
//! - `services` (jumped to from `nat-prerouting` and `nat-output`) looks the packet's
//!   destination up in the `service-ips` verdict map (cluster IPs and external IPs, by
//!   address . protocol . port) and, for the node's own addresses, in `service-nodeports`;
//! - each service port has a chain that marks off-cluster traffic for masquerade and picks an
//!   endpoint with `numgen random` (after the session-affinity sets, if any); each endpoint has
//!   a chain that marks hairpin traffic (a pod reaching itself) for masquerade and DNATs;
//! - `nat-postrouting` masquerades marked packets; service ports without endpoints are
//!   rejected by the `filter-*` chains, so clients get a refusal instead of a timeout.
//!
//! The first sync writes the whole table as one `nft -f -` transaction (the table deleted and
//! made again inside it, atomically: no packet sees a half-written state, conntrack keeps
//! existing connections). Later syncs compare the new [`Ruleset`] with the last one and send
//! only the difference — new chains and sets, changed chains flushed and refilled, map
//! elements added and removed, chains nothing refers to any more deleted — again as one
//! transaction. A full rewrite every `full_every` (and after any failure) repairs drift.
//!
//! We drive the `nft` tool (Debian's `nftables`) with its text syntax, as upstream's knftables
//! does: the kernel's netlink encoding of nftables is large and versioned, the text syntax is
//! stable and readable in `nft list ruleset`, and the tool does the encoding for us.

use crate::model::{Endpoint, ProxyState, ServicePort};
use crate::{Dataplane, Error, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::Mutex;

/// How the nftables dataplane is set up.
#[derive(Clone, Debug)]
pub struct NftConfig {
    /// The table's name (in family `ip`).
    pub table: String,
    /// This node's name (for `internalTrafficPolicy: Local`).
    pub node: String,
    /// The pods' address range: traffic from outside it to a Service is masqueraded.
    pub cluster_cidr: Option<String>,
    /// Masquerade all Service traffic.
    pub masquerade_all: bool,
    /// The command that runs `nft` (`["nft"]`; a test may prefix `ip netns exec NS`).
    pub nft: Vec<String>,
    /// A sync rewrites the whole table at least this often (drift repair); in between, it
    /// writes only what changed.
    pub full_every: std::time::Duration,
}

impl NftConfig {
    /// Defaults for `node`: table `bosun-proxy`, `nft` from the PATH.
    pub fn new(node: impl Into<String>) -> Self {
        NftConfig {
            table: "bosun-proxy".into(),
            node: node.into(),
            cluster_cidr: None,
            masquerade_all: false,
            nft: vec!["nft".into()],
            full_every: std::time::Duration::from_secs(300),
        }
    }
}

/// The nftables dataplane.
///
/// ```no_run
/// use bosun_proxy::{nftables::{NftConfig, NftDataplane}, runner, Dataplane};
/// use std::sync::Arc;
/// # async fn run(client: bosun_client::Client) {
/// let mut config = NftConfig::new("node-1");
/// config.cluster_cidr = Some("10.244.0.0/16".into());
/// let dataplane = Arc::new(NftDataplane::new(config));
/// // Services and EndpointSlices from the cluster, in table `ip bosun-proxy`, until `stopped`.
/// let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
/// let proxy = tokio::spawn(runner::run(client, dataplane.clone(), Default::default(), async { let _ = stopped.await; }));
/// // … later:
/// let _ = stop.send(());
/// let _ = proxy.await;
/// let _ = dataplane.cleanup().await;
/// # }
/// ```
pub struct NftDataplane {
    cfg: NftConfig,
    last: Mutex<Option<Last>>,
    counts: Mutex<SyncCounts>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A short stable hash, as upstream prefixes its chain names with.
fn hash(s: &str) -> String {
    // FNV-1a, 32 bits, base32: stable across builds and versions.
    let mut h: u32 = 0x811c_9dc5;
    for b in s.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    const A: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    (0..7)
        .map(|i| A[((h >> (i * 5)) & 31) as usize] as char)
        .collect()
}

/// `ns/name/proto/portname`.
fn port_key(sp: &ServicePort) -> String {
    format!(
        "{}/{}/{}/{}",
        sp.namespace,
        sp.name,
        sp.protocol.nft(),
        sp.port_name
    )
}

fn service_chain(sp: &ServicePort) -> String {
    let k = port_key(sp);
    format!("service-{}-{k}", hash(&k))
}

fn external_chain(sp: &ServicePort) -> String {
    let k = port_key(sp);
    format!("external-{}-{k}", hash(&k))
}

fn endpoint_chain(sp: &ServicePort, e: &Endpoint) -> String {
    let k = format!("{}__{}/{}", port_key(sp), e.ip, e.port);
    format!("endpoint-{}-{k}", hash(&k))
}

fn affinity_set(sp: &ServicePort, e: &Endpoint) -> String {
    let k = format!("{}__{}/{}", port_key(sp), e.ip, e.port);
    format!("affinity-{}-{k}", hash(&k))
}

/// Chains are written before the chains that jump to them: endpoint chains, then service
/// chains, then external chains.
fn chain_rank(name: &str) -> u8 {
    match name.split('-').next() {
        Some("endpoint") => 0,
        Some("service") => 1,
        _ => 2,
    }
}

fn v4(ip: &IpAddr) -> bool {
    ip.is_ipv4()
}

/// The service-specific contents of the table, as data: what a sync compares with the last
/// one to write only the difference.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ruleset {
    /// Verdict map → its elements (`key : verdict`).
    pub maps: BTreeMap<&'static str, BTreeSet<String>>,
    /// Session-affinity sets → their timeout in seconds.
    pub sets: BTreeMap<String, u32>,
    /// Service, external and endpoint chains → their rules.
    pub chains: BTreeMap<String, Vec<String>>,
}

/// The verdict maps and their key types.
const MAPS: [(&str, &str); 3] = [
    ("service-ips", "ipv4_addr . inet_proto . inet_service"),
    (
        "no-endpoint-services",
        "ipv4_addr . inet_proto . inet_service",
    ),
    ("service-nodeports", "inet_proto . inet_service"),
];

/// How many syncs wrote the whole table and how many only a difference.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyncCounts {
    /// Whole-table rewrites.
    pub full: u64,
    /// Difference-only transactions (empty differences are not counted).
    pub incremental: u64,
}

struct Last {
    rules: Ruleset,
    full_at: std::time::Instant,
}

impl NftDataplane {
    /// A dataplane with `cfg`.
    pub fn new(cfg: NftConfig) -> Self {
        NftDataplane {
            cfg,
            last: Mutex::new(None),
            counts: Mutex::new(SyncCounts::default()),
        }
    }

    /// The syncs so far.
    pub fn counts(&self) -> SyncCounts {
        *lock(&self.counts)
    }

    /// What `state` needs in the table (IPv4 service ports).
    pub fn ruleset(&self, state: &ProxyState) -> Ruleset {
        let mut rs = Ruleset::default();
        for (name, _) in MAPS {
            rs.maps.insert(name, BTreeSet::new());
        }
        let mut element = |map: &'static str, e: String| {
            if let Some(m) = rs.maps.get_mut(map) {
                m.insert(e);
            }
        };
        let mut chains = BTreeMap::new();
        let mut sets = BTreeMap::new();
        for sp in &state.services {
            let proto = sp.protocol.nft();
            let ips: Vec<&IpAddr> = sp.cluster_ips.iter().filter(|i| v4(i)).collect();
            if ips.is_empty() {
                continue;
            }
            let internal = sp.usable(sp.internal_local, &self.cfg.node);
            let external = sp.usable(false, &self.cfg.node);
            let svc = service_chain(sp);
            let ext = external_chain(sp);
            // Cluster IPs lead to the service chain, external IPs to the external one; an
            // address whose endpoints are none is rejected.
            let addresses = ips.iter().map(|ip| (*ip, internal.is_empty(), &svc)).chain(
                sp.external_ips
                    .iter()
                    .filter(|i| v4(i))
                    .map(|ip| (ip, external.is_empty(), &ext)),
            );
            for (ip, none, chain) in addresses {
                let key = format!("{ip} . {proto} . {}", sp.port);
                if none {
                    element("no-endpoint-services", format!("{key} : goto reject-chain"));
                } else {
                    element("service-ips", format!("{key} : goto {chain}"));
                }
            }
            if let (Some(np), false) = (sp.node_port, external.is_empty()) {
                element("service-nodeports", format!("{proto} . {np} : goto {ext}"));
            }
            if internal.is_empty() && external.is_empty() {
                continue;
            }
            // The service chain: masquerade what comes from outside the pods, then pick.
            let mut rules = Vec::new();
            for ip in &ips {
                if self.cfg.masquerade_all {
                    rules.push(format!(
                        "ip daddr {ip} {proto} dport {} jump mark-for-masquerade",
                        sp.port
                    ));
                } else if let Some(cidr) = &self.cfg.cluster_cidr {
                    rules.push(format!(
                        "ip daddr {ip} {proto} dport {} ip saddr != {cidr} jump mark-for-masquerade",
                        sp.port
                    ));
                }
            }
            let targets = if internal.is_empty() {
                &external
            } else {
                &internal
            };
            if sp.affinity_timeout.is_some() {
                for e in targets {
                    rules.push(format!(
                        "ip saddr @{} goto {}",
                        affinity_set(sp, e),
                        endpoint_chain(sp, e)
                    ));
                }
            }
            let picks: Vec<String> = targets
                .iter()
                .enumerate()
                .map(|(i, e)| format!("{i} : goto {}", endpoint_chain(sp, e)))
                .collect();
            rules.push(format!(
                "numgen random mod {} vmap {{ {} }}",
                picks.len(),
                picks.join(", ")
            ));
            chains.insert(svc.clone(), rules);
            // Traffic from outside (node ports, external IPs): with the Cluster policy it is
            // masqueraded, so the replies come back through this node; with Local it keeps
            // its client address and goes only to this node's endpoints (dropped without
            // one), while the node's own traffic is treated as Cluster, as upstream.
            let local = if sp.external_local {
                sp.usable(true, &self.cfg.node)
            } else {
                Vec::new()
            };
            let ext_rules = if sp.external_local {
                let mut r = vec![
                    "fib saddr type local jump mark-for-masquerade".to_string(),
                    format!("fib saddr type local goto {svc}"),
                ];
                if local.is_empty() {
                    r.push("drop".into());
                } else {
                    let picks: Vec<String> = local
                        .iter()
                        .enumerate()
                        .map(|(i, e)| format!("{i} : goto {}", endpoint_chain(sp, e)))
                        .collect();
                    r.push(format!(
                        "numgen random mod {} vmap {{ {} }}",
                        picks.len(),
                        picks.join(", ")
                    ));
                }
                r
            } else {
                vec!["jump mark-for-masquerade".into(), format!("goto {svc}")]
            };
            chains.insert(ext, ext_rules);
            // Endpoint chains for every endpoint either path may pick.
            let mut chosen: Vec<&Endpoint> = targets.iter().chain(local.iter()).copied().collect();
            chosen.sort();
            chosen.dedup();
            for e in chosen {
                let mut rules = vec![format!("ip saddr {} jump mark-for-masquerade", e.ip)];
                if let Some(timeout) = sp.affinity_timeout {
                    let set = affinity_set(sp, e);
                    rules.push(format!("update @{set} {{ ip saddr }}"));
                    sets.insert(set, timeout);
                }
                rules.push(format!("meta l4proto {proto} dnat to {}:{}", e.ip, e.port));
                chains.insert(endpoint_chain(sp, e), rules);
            }
        }
        rs.chains = chains;
        rs.sets = sets;
        rs
    }

    /// The `nft -f` script that makes the table hold `state` from scratch (one transaction
    /// that deletes the table and writes it again).
    pub fn render(&self, state: &ProxyState) -> String {
        self.full_script(&self.ruleset(state))
    }

    fn full_script(&self, rs: &Ruleset) -> String {
        let t = &self.cfg.table;
        // Create-then-delete makes the delete succeed on a first run.
        let mut out = format!(
            "add table ip {t}\ndelete table ip {t}\ntable ip {t} {{\n\tcomment \"rules for bosun-proxy\"\n"
        );
        // Maps and sets first: the chains refer to them.
        for (name, key) in MAPS {
            let _ = write!(out, "\tmap {name} {{\n\t\ttype {key} : verdict\n");
            if let Some(elements) = rs.maps.get(name).filter(|e| !e.is_empty()) {
                let list: Vec<&str> = elements.iter().map(String::as_str).collect();
                let _ = writeln!(out, "\t\telements = {{ {} }}", list.join(",\n\t\t\t"));
            }
            out.push_str("\t}\n");
        }
        for (set, timeout) in &rs.sets {
            let _ = writeln!(out, "\tset {set} {{\n\t\ttype ipv4_addr\n\t\tflags dynamic,timeout\n\t\ttimeout {timeout}s\n\t}}");
        }
        for (name, hook, prio, body) in [
            ("nat-prerouting", "prerouting", "dstnat", "jump services"),
            ("nat-output", "output", "-100", "jump services"),
            (
                "nat-postrouting",
                "postrouting",
                "srcnat",
                "jump masquerading",
            ),
        ] {
            let _ = writeln!(
                out,
                "\tchain {name} {{\n\t\ttype nat hook {hook} priority {prio}; policy accept;\n\t\t{body}\n\t}}"
            );
        }
        for (name, hook) in [("filter-forward", "forward"), ("filter-output", "output")] {
            let _ = writeln!(
                out,
                "\tchain {name} {{\n\t\ttype filter hook {hook} priority -110; policy accept;\n\t\tct state new jump service-endpoints-check\n\t}}"
            );
        }
        out.push_str("\tchain service-endpoints-check {\n\t\tip daddr . meta l4proto . th dport vmap @no-endpoint-services\n\t}\n");
        out.push_str("\tchain reject-chain {\n\t\treject\n\t}\n");
        out.push_str("\tchain mark-for-masquerade {\n\t\tmeta mark set meta mark | 0x4000\n\t}\n");
        out.push_str("\tchain masquerading {\n\t\tmeta mark & 0x4000 == 0 return\n\t\tmeta mark set meta mark ^ 0x4000\n\t\tmasquerade fully-random\n\t}\n");
        out.push_str("\tchain services {\n\t\tip daddr . meta l4proto . th dport vmap @service-ips\n\t\tfib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @service-nodeports\n\t}\n");
        let mut names: Vec<&String> = rs.chains.keys().collect();
        names.sort_by_key(|n| (chain_rank(n), n.as_str()));
        for name in names {
            let _ = writeln!(out, "\tchain {name} {{");
            for r in &rs.chains[name] {
                let _ = writeln!(out, "\t\t{r}");
            }
            out.push_str("\t}\n");
        }
        out.push_str("}\n");
        out
    }

    /// The transaction that turns `old` into `new`, or `None` when they are the same.
    pub fn diff_script(&self, old: &Ruleset, new: &Ruleset) -> Option<String> {
        if old == new {
            return None;
        }
        let t = &self.cfg.table;
        let mut out = String::new();
        // New sets and chains exist before anything refers to them.
        for (set, timeout) in new.sets.iter().filter(|(s, _)| !old.sets.contains_key(*s)) {
            let _ = writeln!(out, "add set ip {t} {set} {{ type ipv4_addr; flags dynamic,timeout; timeout {timeout}s; }}");
        }
        for name in new.chains.keys().filter(|c| !old.chains.contains_key(*c)) {
            let _ = writeln!(out, "add chain ip {t} {name}");
        }
        // Changed and new chains get their rules; endpoint chains first, as in a full sync.
        let mut changed: Vec<(&String, &Vec<String>)> = new
            .chains
            .iter()
            .filter(|(c, rules)| old.chains.get(*c) != Some(rules))
            .collect();
        changed.sort_by_key(|(n, _)| (chain_rank(n), n.as_str()));
        for (name, rules) in changed {
            if old.chains.contains_key(name) {
                let _ = writeln!(out, "flush chain ip {t} {name}");
            }
            for r in rules {
                let _ = writeln!(out, "add rule ip {t} {name} {r}");
            }
        }
        // Map elements: removed (or re-pointed) keys go, then the new ones come.
        let key = |e: &str| e.split(" : ").next().unwrap_or(e).to_string();
        for (map, _) in MAPS {
            let empty = BTreeSet::new();
            let before = old.maps.get(map).unwrap_or(&empty);
            let after = new.maps.get(map).unwrap_or(&empty);
            let gone: Vec<String> = before.difference(after).map(|e| key(e)).collect();
            if !gone.is_empty() {
                let _ = writeln!(out, "delete element ip {t} {map} {{ {} }}", gone.join(", "));
            }
            let added: Vec<&str> = after.difference(before).map(String::as_str).collect();
            if !added.is_empty() {
                let _ = writeln!(out, "add element ip {t} {map} {{ {} }}", added.join(", "));
            }
        }
        // Chains and sets nothing refers to any more: emptied first (they may jump to each
        // other), then deleted.
        let gone: Vec<&String> = old
            .chains
            .keys()
            .filter(|c| !new.chains.contains_key(*c))
            .collect();
        for name in &gone {
            let _ = writeln!(out, "flush chain ip {t} {name}");
        }
        for name in &gone {
            let _ = writeln!(out, "delete chain ip {t} {name}");
        }
        for set in old.sets.keys().filter(|s| !new.sets.contains_key(*s)) {
            let _ = writeln!(out, "delete set ip {t} {set}");
        }
        Some(out)
    }

    async fn nft(&self, script: &str) -> Result<()> {
        run_nft(&self.cfg.nft, script).await
    }
}

/// Feeds `script` to `nft -f -` (`cmd`: the command line that runs nft) as one transaction.
pub(crate) async fn run_nft(cmd: &[String], script: &str) -> Result<()> {
    use tokio::io::AsyncWriteExt;
    let (cmd, args) = cmd
        .split_first()
        .ok_or_else(|| Error::Nft("no nft command configured".into()))?;
    let mut child = tokio::process::Command::new(cmd)
        .args(args)
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| Error::Nft(format!("running {cmd}: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .await
            .map_err(|e| Error::Nft(format!("writing to nft: {e}")))?;
    }
    let out = child
        .wait_with_output()
        .await
        .map_err(|e| Error::Nft(format!("waiting for nft: {e}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Error::Nft(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ))
    }
}

#[async_trait::async_trait]
impl Dataplane for NftDataplane {
    /// Writes only the difference from the last sync; the whole table the first time, after
    /// a failure, and every `full_every` (which repairs drift).
    async fn sync(&self, state: &ProxyState) -> Result<()> {
        let rules = self.ruleset(state);
        let previous = lock(&self.last).take();
        let incremental = previous
            .as_ref()
            .filter(|l| l.full_at.elapsed() < self.cfg.full_every)
            .map(|l| self.diff_script(&l.rules, &rules));
        match incremental {
            Some(None) => {
                *lock(&self.last) = previous;
                return Ok(());
            }
            Some(Some(script)) => match self.nft(&script).await {
                Ok(()) => {
                    lock(&self.counts).incremental += 1;
                    let full_at = previous.map_or_else(std::time::Instant::now, |l| l.full_at);
                    *lock(&self.last) = Some(Last { rules, full_at });
                    return Ok(());
                }
                Err(e) => {
                    tracing::warn!(error = %e, "incremental nftables sync failed; rewriting the table")
                }
            },
            None => {}
        }
        self.nft(&self.full_script(&rules)).await?;
        lock(&self.counts).full += 1;
        *lock(&self.last) = Some(Last {
            rules,
            full_at: std::time::Instant::now(),
        });
        Ok(())
    }

    async fn cleanup(&self) -> Result<()> {
        *lock(&self.last) = None;
        let t = &self.cfg.table;
        self.nft(&format!("add table ip {t}\ndelete table ip {t}\n"))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::build;
    use serde_json::json;

    #[test]
    fn renders_upstreams_structure() {
        let svc = json!({"metadata": {"namespace": "ns", "name": "web"},
            "spec": {"type": "NodePort", "clusterIPs": ["10.96.0.10"], "externalIPs": ["192.0.2.9"],
                     "ports": [{"name": "http", "port": 80, "nodePort": 30080}]}});
        let slice = json!({"metadata": {"namespace": "ns", "name": "web-1",
                                        "labels": {"kubernetes.io/service-name": "web"}},
            "ports": [{"name": "http", "port": 8080}],
            "endpoints": [{"addresses": ["10.244.0.5"]}, {"addresses": ["10.244.1.5"]}]});
        let empty = json!({"metadata": {"namespace": "ns", "name": "none"},
            "spec": {"clusterIPs": ["10.96.0.11"], "ports": [{"port": 53, "protocol": "UDP"}]}});
        let mut cfg = NftConfig::new("n1");
        cfg.cluster_cidr = Some("10.244.0.0/16".into());
        let script = NftDataplane::new(cfg).render(&build(&[svc, empty], &[slice]));
        let svc_chain = format!("service-{}-ns/web/tcp/http", hash("ns/web/tcp/http"));
        for want in [
            "add table ip bosun-proxy\ndelete table ip bosun-proxy\ntable ip bosun-proxy {",
            &format!("10.96.0.10 . tcp . 80 : goto {svc_chain}"),
            "192.0.2.9 . tcp . 80 : goto external-",
            "tcp . 30080 : goto external-",
            "10.96.0.11 . udp . 53 : goto reject-chain",
            "ip daddr 10.96.0.10 tcp dport 80 ip saddr != 10.244.0.0/16 jump mark-for-masquerade",
            "numgen random mod 2 vmap { 0 : goto endpoint-",
            "ip saddr 10.244.1.5 jump mark-for-masquerade",
            "meta l4proto tcp dnat to 10.244.0.5:8080",
        ] {
            assert!(script.contains(want), "{want:?} missing from\n{script}");
        }
        // externalTrafficPolicy Local: outside clients keep their address and reach only
        // this node's endpoints; without one here, their traffic is dropped.
        let loc = json!({"metadata": {"namespace": "ns", "name": "loc"},
            "spec": {"type": "NodePort", "clusterIPs": ["10.96.0.12"], "externalTrafficPolicy": "Local",
                     "ports": [{"port": 80, "nodePort": 30081}]}});
        let loc_slice = json!({"metadata": {"namespace": "ns", "name": "loc-1",
                                            "labels": {"kubernetes.io/service-name": "loc"}},
            "ports": [{"name": "", "port": 8080}],
            "endpoints": [{"addresses": ["10.244.0.5"], "nodeName": "n1"},
                          {"addresses": ["10.244.1.5"], "nodeName": "n2"}]});
        let state = build(&[loc], &[loc_slice]);
        let on = |node: &str| NftDataplane::new(NftConfig::new(node)).ruleset(&state);
        let ext = |rs: &Ruleset| {
            rs.chains
                .iter()
                .find(|(k, _)| k.starts_with("external-"))
                .map(|(_, v)| v.clone())
                .unwrap()
        };
        let here = ext(&on("n1"));
        assert_eq!(here[0], "fib saddr type local jump mark-for-masquerade");
        assert!(here[2].starts_with("numgen random mod 1 vmap"), "{here:?}");
        assert!(
            here.iter().all(|r| r != "jump mark-for-masquerade"),
            "no masquerade: {here:?}"
        );
        assert_eq!(ext(&on("n3")).last().map(String::as_str), Some("drop"));

        // Names are stable: the same input, the same script.
        assert_eq!(hash("ns/web/tcp/http"), hash("ns/web/tcp/http"));
        assert_ne!(hash("ns/web/tcp/http"), hash("ns/web/udp/http"));
    }
}

#[cfg(test)]
mod diff_tests {
    use super::*;
    use crate::model::build;
    use serde_json::json;

    fn state(ips: &[&str], affinity: bool) -> ProxyState {
        let mut spec = json!({"clusterIPs": ["10.96.0.10"], "ports": [{"port": 80}]});
        if affinity {
            spec["sessionAffinity"] = json!("ClientIP");
        }
        let svc = json!({"metadata": {"namespace": "ns", "name": "web"}, "spec": spec});
        let endpoints: Vec<_> = ips.iter().map(|ip| json!({"addresses": [ip]})).collect();
        let slice = json!({"metadata": {"namespace": "ns", "name": "w",
                                        "labels": {"kubernetes.io/service-name": "web"}},
                           "ports": [{"name": "", "port": 8080}], "endpoints": endpoints});
        build(&[svc], &[slice])
    }

    #[test]
    fn diffs_only_what_changed() {
        let dp = NftDataplane::new(NftConfig::new("n"));
        let a = dp.ruleset(&state(&["10.244.0.1", "10.244.0.2"], false));
        assert_eq!(dp.diff_script(&a, &a), None);
        // One endpoint replaced: its chain comes and goes, the service chain is refilled.
        let b = dp.ruleset(&state(&["10.244.0.1", "10.244.0.3"], false));
        let d = dp.diff_script(&a, &b).unwrap();
        let lines: Vec<&str> = d.lines().collect();
        let add = lines
            .iter()
            .position(|l| l.starts_with("add chain") && l.contains("10.244.0.3"))
            .unwrap();
        let flush = lines
            .iter()
            .position(|l| l.starts_with("flush chain") && l.contains("service-"))
            .unwrap();
        let delete = lines
            .iter()
            .position(|l| l.starts_with("delete chain") && l.contains("10.244.0.2"))
            .unwrap();
        assert!(add < flush && flush < delete, "{d}");
        assert!(
            !d.contains("10.244.0.1/8080 {") && !d.contains("element"),
            "{d}"
        );
        // No endpoints: the ClusterIP moves from one map to the other; the chains go.
        let c = dp.ruleset(&state(&[], false));
        let d = dp.diff_script(&a, &c).unwrap();
        assert!(
            d.contains("delete element ip bosun-proxy service-ips { 10.96.0.10 . tcp . 80 }"),
            "{d}"
        );
        assert!(d.contains("add element ip bosun-proxy no-endpoint-services { 10.96.0.10 . tcp . 80 : goto reject-chain }"), "{d}");
        assert_eq!(
            d.matches("delete chain").count(),
            4,
            "service, external, two endpoints: {d}"
        );
        // Affinity on: sets are made before the rules that use them.
        let s = dp.ruleset(&state(&["10.244.0.1"], true));
        let d = dp.diff_script(&c, &s).unwrap();
        let set = d.find("add set").unwrap();
        let rule = d.find("update @affinity-").unwrap();
        assert!(set < rule, "{d}");
    }
}
