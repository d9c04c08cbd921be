//! The userspace dataplane, for machines without nftables: a tokio TCP and UDP proxy per
//! Service frontend, as upstream's retired userspace mode was, but without any packet
//! rewriting in the kernel. Each cluster IP (and external IP) is made a local address (on
//! `lo`, as kube-proxy's IPVS mode puts them on a dummy device), so traffic to it is
//! delivered to this node, where a listener on `IP:port` takes it and opens its own
//! connection to an endpoint; node ports listen on every address.
//!
//! Endpoints are chosen at random among the usable ones (ready, else serving-terminating;
//! the node's own under a `Local` traffic policy), with `sessionAffinity: ClientIP` keeping a
//! client on its endpoint for the timeout. An endpoint that refuses is skipped for the next
//! one. A frontend without endpoints has no listener, so connections are refused, as with
//! the nftables rules. UDP keeps one session (socket) per client, closed after 60 s idle.
//! Clients' addresses are not kept (the endpoint sees the node's), the price of this mode.
//!
//! ```no_run
//! use bosun_proxy::{model, userspace::{UserspaceConfig, UserspaceDataplane}, Dataplane};
//! # async fn f(services: Vec<serde_json::Value>, slices: Vec<serde_json::Value>) {
//! let dataplane = UserspaceDataplane::new(UserspaceConfig::new("node-1"));
//! dataplane.sync(&model::build(&services, &slices)).await.unwrap();
//! # }
//! ```

use crate::model::{Endpoint, Protocol, ProxyState};
use crate::{Dataplane, Error, Result};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::JoinHandle;

/// How the userspace dataplane is set up.
#[derive(Clone, Debug)]
pub struct UserspaceConfig {
    /// This node's name (for the `Local` traffic policies).
    pub node: String,
    /// The device cluster and external IPs are added to (`lo`); `None`: leave addresses to
    /// someone else.
    pub address_device: Option<String>,
    /// The command that runs `ip` (a test may prefix `ip netns exec NS`).
    pub ip: Vec<String>,
    /// How long an idle UDP session lives.
    pub udp_idle: Duration,
    /// How long a connection to an endpoint may take before the next is tried.
    pub connect_timeout: Duration,
}

impl UserspaceConfig {
    /// Defaults for `node`: addresses on `lo`, 60 s UDP sessions, 2 s connects.
    pub fn new(node: impl Into<String>) -> Self {
        UserspaceConfig {
            node: node.into(),
            address_device: Some("lo".into()),
            ip: vec!["ip".into()],
            udp_idle: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(2),
        }
    }
}

/// Where a frontend sends traffic.
#[derive(Debug, Default)]
struct Backends {
    endpoints: Vec<SocketAddr>,
    affinity: Option<Duration>,
    sticky: HashMap<IpAddr, (SocketAddr, Instant)>,
}

impl Backends {
    /// The endpoints to try for `client`, the sticky or a random one first.
    fn order(&mut self, client: IpAddr) -> Vec<SocketAddr> {
        let mut list = self.endpoints.clone();
        if list.is_empty() {
            return list;
        }
        let start = crate::random() as usize % list.len();
        list.rotate_left(start);
        if let Some(timeout) = self.affinity {
            self.sticky.retain(|_, (_, at)| at.elapsed() < timeout);
            if let Some((ep, _)) = self.sticky.get(&client) {
                if let Some(i) = list.iter().position(|e| e == ep) {
                    list.swap(0, i);
                }
            }
        }
        list
    }

    fn used(&mut self, client: IpAddr, ep: SocketAddr) {
        if self.affinity.is_some() {
            self.sticky.insert(client, (ep, Instant::now()));
        }
    }
}

type Shared = Arc<RwLock<Backends>>;

struct Frontend {
    backends: Shared,
    task: JoinHandle<()>,
}

impl Drop for Frontend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A listening address and protocol.
type Key = (SocketAddr, Protocol);

#[derive(Default)]
struct Inner {
    frontends: HashMap<Key, Frontend>,
    addresses: BTreeSet<IpAddr>,
}

/// The userspace dataplane.
pub struct UserspaceDataplane {
    cfg: UserspaceConfig,
    inner: tokio::sync::Mutex<Inner>,
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}

impl UserspaceDataplane {
    /// A dataplane with nothing set up yet.
    pub fn new(cfg: UserspaceConfig) -> Self {
        UserspaceDataplane {
            cfg,
            inner: tokio::sync::Mutex::new(Inner::default()),
        }
    }

    /// The frontends `state` asks for, with their endpoints and affinity.
    fn desired(&self, state: &ProxyState) -> BTreeMap<Key, (Vec<SocketAddr>, Option<Duration>)> {
        let mut out = BTreeMap::new();
        let node = &self.cfg.node;
        let addrs = |eps: Vec<&Endpoint>| -> Vec<SocketAddr> {
            eps.into_iter()
                .map(|e| SocketAddr::new(e.ip, e.port))
                .collect()
        };
        for sp in &state.services {
            if sp.protocol == Protocol::Sctp {
                continue;
            }
            let affinity = sp
                .affinity_timeout
                .map(|s| Duration::from_secs(u64::from(s)));
            let internal = addrs(sp.usable(sp.internal_local, node));
            let external = addrs(sp.usable(sp.external_local, node));
            for ip in &sp.cluster_ips {
                out.insert(
                    (SocketAddr::new(*ip, sp.port), sp.protocol),
                    (internal.clone(), affinity),
                );
            }
            for ip in &sp.external_ips {
                out.insert(
                    (SocketAddr::new(*ip, sp.port), sp.protocol),
                    (external.clone(), affinity),
                );
            }
            if let Some(np) = sp.node_port {
                out.insert(
                    (
                        SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), np),
                        sp.protocol,
                    ),
                    (external.clone(), affinity),
                );
            }
        }
        out
    }

    async fn ip(&self, args: &[String]) -> Result<()> {
        let (cmd, pre) = self
            .cfg
            .ip
            .split_first()
            .ok_or_else(|| Error::Userspace("no ip command configured".into()))?;
        let out = tokio::process::Command::new(cmd)
            .args(pre)
            .args(args)
            .output()
            .await
            .map_err(|e| Error::Userspace(format!("running {cmd}: {e}")))?;
        let err = String::from_utf8_lossy(&out.stderr);
        if out.status.success() || err.contains("File exists") || err.contains("Cannot assign") {
            Ok(())
        } else {
            Err(Error::Userspace(format!("{cmd} {args:?}: {}", err.trim())))
        }
    }

    async fn set_addresses(&self, inner: &mut Inner, want: BTreeSet<IpAddr>) -> Result<()> {
        let Some(dev) = self.cfg.address_device.clone() else {
            return Ok(());
        };
        for ip in want.difference(&inner.addresses.clone()) {
            let prefix = if ip.is_ipv4() { 32 } else { 128 };
            self.ip(&[
                "addr".into(),
                "add".into(),
                format!("{ip}/{prefix}"),
                "dev".into(),
                dev.clone(),
            ])
            .await?;
            inner.addresses.insert(*ip);
        }
        for ip in inner.addresses.clone().difference(&want) {
            let prefix = if ip.is_ipv4() { 32 } else { 128 };
            self.ip(&[
                "addr".into(),
                "del".into(),
                format!("{ip}/{prefix}"),
                "dev".into(),
                dev.clone(),
            ])
            .await
            .or_else(|e| {
                tracing::debug!(error = %e, "removing a Service address");
                Ok::<(), Error>(())
            })?;
            inner.addresses.remove(ip);
        }
        Ok(())
    }

    /// How many frontends listen now (for tests and metrics).
    pub async fn listening(&self) -> usize {
        self.inner.lock().await.frontends.len()
    }
}

async fn serve_tcp(listener: TcpListener, backends: Shared, timeout: Duration) {
    loop {
        let Ok((client, peer)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let backends = backends.clone();
        tokio::spawn(async move {
            let order = write(&backends).order(peer.ip());
            for ep in order {
                match tokio::time::timeout(timeout, TcpStream::connect(ep)).await {
                    Ok(Ok(mut upstream)) => {
                        write(&backends).used(peer.ip(), ep);
                        let mut client = client;
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                        return;
                    }
                    _ => tracing::debug!(endpoint = %ep, "endpoint did not take the connection"),
                }
            }
        });
    }
}

async fn serve_udp(socket: UdpSocket, backends: Shared, idle: Duration) {
    let socket = Arc::new(socket);
    let sessions: Arc<Mutex<HashMap<SocketAddr, Arc<UdpSocket>>>> = Arc::default();
    let mut buf = vec![0u8; 65536];
    loop {
        let Ok((n, client)) = socket.recv_from(&mut buf).await else {
            continue;
        };
        let existing = sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&client)
            .cloned();
        let session = match existing {
            Some(s) => s,
            None => {
                let order = write(&backends).order(client.ip());
                let Some(ep) = order.first().copied() else {
                    continue;
                };
                let bind: SocketAddr = if ep.is_ipv4() {
                    (Ipv4Addr::UNSPECIFIED, 0).into()
                } else {
                    (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
                };
                let Ok(up) = UdpSocket::bind(bind).await else {
                    continue;
                };
                if up.connect(ep).await.is_err() {
                    continue;
                }
                write(&backends).used(client.ip(), ep);
                let up = Arc::new(up);
                sessions
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(client, up.clone());
                // Replies go back to the client until the session is idle.
                let (front, sessions, reply) = (socket.clone(), sessions.clone(), up.clone());
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 65536];
                    while let Ok(Ok(n)) = tokio::time::timeout(idle, reply.recv(&mut buf)).await {
                        let _ = front.send_to(&buf[..n], client).await;
                    }
                    sessions
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&client);
                });
                up
            }
        };
        let _ = session.send(&buf[..n]).await;
    }
}

#[async_trait::async_trait]
impl Dataplane for UserspaceDataplane {
    async fn sync(&self, state: &ProxyState) -> Result<()> {
        let desired = self.desired(state);
        let mut inner = self.inner.lock().await;
        let addresses: BTreeSet<IpAddr> = state
            .services
            .iter()
            .flat_map(|sp| sp.cluster_ips.iter().chain(&sp.external_ips))
            .copied()
            .collect();
        self.set_addresses(&mut inner, addresses).await?;
        // Frontends without endpoints, or gone, stop listening.
        inner
            .frontends
            .retain(|k, _| desired.get(k).is_some_and(|(eps, _)| !eps.is_empty()));
        let mut failed = Vec::new();
        for (key, (endpoints, affinity)) in desired {
            if endpoints.is_empty() {
                continue;
            }
            if let Some(f) = inner.frontends.get(&key) {
                let mut b = write(&f.backends);
                b.sticky.retain(|_, (ep, _)| endpoints.contains(ep));
                b.endpoints = endpoints;
                b.affinity = affinity;
                continue;
            }
            let backends: Shared = Arc::new(RwLock::new(Backends {
                endpoints,
                affinity,
                sticky: HashMap::new(),
            }));
            let (addr, proto) = key;
            let task = match proto {
                Protocol::Udp => match UdpSocket::bind(addr).await {
                    Ok(s) => tokio::spawn(serve_udp(s, backends.clone(), self.cfg.udp_idle)),
                    Err(e) => {
                        failed.push(format!("{addr}/udp: {e}"));
                        continue;
                    }
                },
                _ => match TcpListener::bind(addr).await {
                    Ok(l) => tokio::spawn(serve_tcp(l, backends.clone(), self.cfg.connect_timeout)),
                    Err(e) => {
                        failed.push(format!("{addr}/tcp: {e}"));
                        continue;
                    }
                },
            };
            inner.frontends.insert(key, Frontend { backends, task });
        }
        if failed.is_empty() {
            Ok(())
        } else {
            Err(Error::Userspace(format!(
                "cannot listen on {}",
                failed.join(", ")
            )))
        }
    }

    async fn cleanup(&self) -> Result<()> {
        let mut inner = self.inner.lock().await;
        inner.frontends.clear();
        self.set_addresses(&mut inner, BTreeSet::new()).await
    }
}
