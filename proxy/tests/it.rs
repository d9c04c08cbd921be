//! The proxy against an in-process API server (a recording dataplane proves the seam) and the
//! nftables dataplane on a real kernel, in a network namespace of its own.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use bosun_apiserver::ApiServer;
use bosun_client::{Api, Client, Config, DeleteParams, PostParams};
use bosun_proxy::model::{self, ProxyState};
use bosun_proxy::nftables::{NftConfig, NftDataplane};
use bosun_proxy::runner::{self, Timing};
use bosun_proxy::{Dataplane, Result};
use bosun_store::memory::MemoryStore;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

async fn client() -> Client {
    let s = ApiServer::new(Arc::new(MemoryStore::new()));
    s.bootstrap().await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(s.serve(listener, std::future::pending()));
    Client::try_from_config(Config::new(url.parse().unwrap())).unwrap()
}

/// A dataplane that only remembers what it was asked.
#[derive(Default)]
struct Recording {
    states: Mutex<Vec<ProxyState>>,
    cleaned: Mutex<bool>,
}

#[async_trait::async_trait]
impl Dataplane for Recording {
    async fn sync(&self, state: &ProxyState) -> Result<()> {
        self.states.lock().unwrap().push(state.clone());
        Ok(())
    }
    async fn cleanup(&self) -> Result<()> {
        *self.cleaned.lock().unwrap() = true;
        Ok(())
    }
}

async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runner_feeds_the_dataplane_from_services_and_slices() {
    use bosun_api_types::core::v1::Service;
    use bosun_api_types::discovery::v1::EndpointSlice;
    let client = client().await;
    let rec = Arc::new(Recording::default());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(runner::run(
        client.clone(),
        rec.clone(),
        Timing {
            min_interval: Duration::from_millis(10),
            resync: Duration::from_secs(60),
        },
        async {
            let _ = stopped.await;
        },
    ));
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"ports": [{"port": 80, "targetPort": 8080}]},
    }))
    .unwrap();
    services.create(&PostParams::default(), &svc).await.unwrap();
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    let slice: EndpointSlice = serde_json::from_value(json!({
        "metadata": {"name": "web-1", "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "ports": [{"name": "", "port": 8080, "protocol": "TCP"}],
        "endpoints": [{"addresses": ["10.244.0.7"], "conditions": {"ready": true}}],
    }))
    .unwrap();
    slices.create(&PostParams::default(), &slice).await.unwrap();
    // The `kubernetes` Service is there too; `web` comes and goes.
    let web = |present: bool| {
        let rec = rec.clone();
        move || {
            rec.states.lock().unwrap().last().is_some_and(|s| {
                let w = s.services.iter().find(|p| p.name == "web");
                match w {
                    Some(p) => present && p.endpoints.len() == 1,
                    None => !present,
                }
            })
        }
    };
    eventually("the service and its endpoint", web(true)).await;
    let last = rec.states.lock().unwrap().last().cloned().unwrap();
    let sp = last.services.iter().find(|p| p.name == "web").unwrap();
    assert_eq!((sp.id().as_str(), sp.port), ("default/web", 80));
    assert_eq!(sp.endpoints[0].port, 8080);
    assert!(!sp.cluster_ips.is_empty());
    services
        .delete("web", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the service gone", web(false)).await;
    stop.send(()).unwrap();
    run.await.unwrap();
    // The rules stay when the proxy stops (as upstream), so traffic survives a restart.
    assert!(!*rec.cleaned.lock().unwrap());
}

/// Root and `nft` are needed; outside CI their absence skips the test.
fn root_with_nft() -> bool {
    let ok = Command::new("nft").arg("--version").output().is_ok()
        && !std::env::var("USER").is_ok_and(|u| u != "root");
    assert!(
        ok || std::env::var("CI").as_deref() != Ok("true"),
        "the nftables test needs root and nft"
    );
    ok
}

struct Netns(String);

impl Netns {
    fn new(name: &str) -> Self {
        let sh = |c: &str| {
            assert!(
                Command::new("sh")
                    .args(["-c", c])
                    .status()
                    .unwrap()
                    .success(),
                "{c}"
            )
        };
        let _ = Command::new("ip").args(["netns", "del", name]).status();
        sh(&format!("ip netns add {name}"));
        let ex = format!("ip netns exec {name}");
        sh(&format!("{ex} ip link set lo up"));
        // A veth pair inside the namespace gives it an address and a route for the
        // Service range (the dummy module may be missing).
        sh(&format!("{ex} ip link add v0 type veth peer name v1"));
        sh(&format!("{ex} ip addr add 10.1.0.1/24 dev v0"));
        sh(&format!("{ex} ip link set v0 up"));
        sh(&format!("{ex} ip link set v1 up"));
        sh(&format!("{ex} ip route add 10.96.0.0/12 dev v0"));
        Netns(name.into())
    }

    /// Runs `f` on a thread inside the namespace.
    fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/var/run/netns/{}", self.0);
        std::thread::spawn(move || {
            let ns = std::fs::File::open(path).unwrap();
            rustix::thread::move_into_link_name_space(
                std::os::fd::AsFd::as_fd(&ns),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )
            .unwrap();
            f()
        })
        .join()
        .unwrap()
    }
}

impl Netns {
    /// As [`Netns::run`], for a namespace this value does not own (it is not deleted).
    fn run_keep<T: Send + 'static>(self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let out = self.run(f);
        std::mem::forget(self);
        out
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// `nft list table ip bosun-proxy` inside `ns`; `None` when there is no such table.
fn nft_table(ns: &Netns) -> Option<String> {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns.0,
            "nft",
            "list",
            "table",
            "ip",
            "bosun-proxy",
        ])
        .output()
        .unwrap();
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Connects to `addr` and reads what the server says (its name), or the error.
fn fetch(addr: &str) -> std::result::Result<String, std::io::ErrorKind> {
    let mut c =
        std::net::TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_secs(2))
            .map_err(|e| e.kind())?;
    c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut s = String::new();
    c.read_to_string(&mut s).map_err(|e| e.kind())?;
    Ok(s)
}

/// The distinct answers of `n` connections to `addr` from inside `ns`.
fn answers(ns: &Netns, addr: &'static str, n: usize) -> std::collections::BTreeSet<String> {
    ns.run(move || (0..n).map(|_| fetch(addr).unwrap()).collect())
}

fn service(name: &str, ip: &str, affinity: bool) -> Value {
    let mut spec =
        json!({"clusterIP": ip, "clusterIPs": [ip], "ports": [{"port": 80, "protocol": "TCP"}]});
    if affinity {
        spec["sessionAffinity"] = json!("ClientIP");
        spec["sessionAffinityConfig"] = json!({"clientIP": {"timeoutSeconds": 60}});
    }
    json!({"metadata": {"namespace": "default", "name": name}, "spec": spec})
}

fn slice(name: &str, ports: &[(u16, bool)]) -> Value {
    // One slice per backend port: each endpoint is 10.1.0.1 on its own port.
    json!(ports
        .iter()
        .enumerate()
        .map(|(i, (port, ready))| json!({
            "metadata": {"namespace": "default", "name": format!("{name}-{i}"),
                         "labels": {"kubernetes.io/service-name": name}},
            "ports": [{"name": "", "port": port, "protocol": "TCP"}],
            "endpoints": [{"addresses": ["10.1.0.1"], "conditions": {"ready": ready}}],
        }))
        .collect::<Vec<_>>())
}

#[tokio::test]
async fn real_nftables_spread_traffic_and_follow_changes() {
    if !root_with_nft() {
        return;
    }
    let ns = Netns::new(&format!("bosun-proxy-{}", std::process::id()));
    // Three backends, each answering with its port.
    ns.run(|| {
        for port in [8081u16, 8082, 8083] {
            let l = std::net::TcpListener::bind(("10.1.0.1", port)).unwrap();
            std::thread::spawn(move || {
                for c in l.incoming().flatten() {
                    let mut c = c;
                    let _ = c.write_all(port.to_string().as_bytes());
                }
            });
        }
    });
    let mut cfg = NftConfig::new("node-1");
    cfg.cluster_cidr = Some("10.1.0.0/24".into());
    cfg.nft = vec![
        "ip".into(),
        "netns".into(),
        "exec".into(),
        ns.0.clone(),
        "nft".into(),
    ];
    let dp = NftDataplane::new(cfg);
    let backends = [(8081, true), (8082, true), (8083, true)];
    let mut slices: Vec<Value> = slice("web", &backends).as_array().unwrap().clone();
    slices.extend(slice("sticky", &backends).as_array().unwrap().clone());
    slices.extend(slice("local", &backends).as_array().unwrap().clone());
    let services = vec![
        service("web", "10.96.0.10", false),
        service("sticky", "10.96.0.11", true),
        service("empty", "10.96.0.12", false),
        // NodePort with externalTrafficPolicy Local (no endpoint on this node: outside
        // traffic is dropped): the kernel takes the rules.
        {
            let mut s = service("local", "10.96.0.13", false);
            s["spec"]["type"] = json!("NodePort");
            s["spec"]["externalTrafficPolicy"] = json!("Local");
            s["spec"]["ports"][0]["nodePort"] = json!(30081);
            s
        },
    ];
    dp.sync(&model::build(&services, &slices)).await.unwrap();
    // Traffic to the ClusterIP spreads over the three endpoints.
    let seen = answers(&ns, "10.96.0.10:80", 60);
    assert_eq!(seen.len(), 3, "{seen:?}");
    // Session affinity: one client, one endpoint.
    let sticky = answers(&ns, "10.96.0.11:80", 20);
    assert_eq!(sticky.len(), 1, "{sticky:?}");
    // No endpoints: refused at once, not a timeout.
    assert_eq!(
        ns.run(|| fetch("10.96.0.12:80")),
        Err(std::io::ErrorKind::ConnectionRefused)
    );
    // An endpoint that turns unready gets no more traffic.
    let mut slices: Vec<Value> = slice("web", &[(8081, true), (8082, false), (8083, true)])
        .as_array()
        .unwrap()
        .clone();
    slices.extend(slice("sticky", &backends).as_array().unwrap().clone());
    dp.sync(&model::build(&services, &slices)).await.unwrap();
    let seen = answers(&ns, "10.96.0.10:80", 40);
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), ["8081", "8083"]);
    // That was a difference, not a rewrite.
    assert_eq!((dp.counts().full, dp.counts().incremental), (1, 1));
    // A deleted Service's rules go; cleanup removes the table.
    dp.sync(&model::build(&services[1..], &slices))
        .await
        .unwrap();
    let listing = nft_table(&ns).expect("the table exists");
    assert!(!listing.contains("10.96.0.10"), "{listing}");
    assert!(listing.contains("10.96.0.11"), "{listing}");
    assert!(
        !listing.contains("default/web/"),
        "the deleted Service's chains go: {listing}"
    );
    // Back again, incrementally, with all three endpoints.
    let slices: Vec<Value> = slice("web", &backends).as_array().unwrap().clone();
    dp.sync(&model::build(&services[..1], &slices))
        .await
        .unwrap();
    let seen = answers(&ns, "10.96.0.10:80", 60);
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert_eq!((dp.counts().full, dp.counts().incremental), (1, 3));
    dp.cleanup().await.unwrap();
    assert_eq!(nft_table(&ns), None, "cleanup removes the table");
}

/// The userspace dataplane in a network namespace: cluster IPs become local addresses, TCP
/// spreads over the endpoints, affinity sticks, UDP is relayed, a Service without endpoints
/// refuses, an unready endpoint and a deleted Service stop getting traffic.
#[test]
fn userspace_proxy_relays_tcp_and_udp() {
    use bosun_proxy::userspace::{UserspaceConfig, UserspaceDataplane};
    if !root_with_nft() {
        return;
    }
    let ns = Netns::new(&format!("bosun-us-{}", std::process::id()));
    ns.run(|| {
        for port in [8081u16, 8082, 8083] {
            let l = std::net::TcpListener::bind(("10.1.0.1", port)).unwrap();
            std::thread::spawn(move || {
                for mut c in l.incoming().flatten() {
                    let _ = c.write_all(port.to_string().as_bytes());
                }
            });
        }
        let udp = std::net::UdpSocket::bind("10.1.0.1:9053").unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while let Ok((n, from)) = udp.recv_from(&mut buf) {
                let mut reply = b"echo:".to_vec();
                reply.extend_from_slice(&buf[..n]);
                let _ = udp.send_to(&reply, from);
            }
        });
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let dp = UserspaceDataplane::new(UserspaceConfig::new("node-1"));
        let backends = [(8081, true), (8082, true), (8083, true)];
        let mut slices: Vec<Value> = slice("web", &backends).as_array().unwrap().clone();
        slices.extend(slice("sticky", &backends).as_array().unwrap().clone());
        slices.push(json!({
            "metadata": {"namespace": "default", "name": "dns-0",
                         "labels": {"kubernetes.io/service-name": "dns"}},
            "ports": [{"name": "", "port": 9053, "protocol": "UDP"}],
            "endpoints": [{"addresses": ["10.1.0.1"], "conditions": {"ready": true}}],
        }));
        let mut dns = service("dns", "10.96.0.53", false);
        dns["spec"]["ports"] = json!([{"port": 53, "protocol": "UDP"}]);
        let services = vec![
            service("web", "10.96.0.10", false),
            service("sticky", "10.96.0.11", true),
            service("empty", "10.96.0.12", false),
            dns,
        ];
        rt.block_on(dp.sync(&model::build(&services, &slices)))
            .unwrap();
        let seen: std::collections::BTreeSet<String> =
            (0..60).map(|_| fetch("10.96.0.10:80").unwrap()).collect();
        assert_eq!(seen.len(), 3, "{seen:?}");
        let sticky: std::collections::BTreeSet<String> =
            (0..20).map(|_| fetch("10.96.0.11:80").unwrap()).collect();
        assert_eq!(sticky.len(), 1, "{sticky:?}");
        assert_eq!(
            fetch("10.96.0.12:80"),
            Err(std::io::ErrorKind::ConnectionRefused)
        );
        let client = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        client.send_to(b"ping", "10.96.0.53:53").unwrap();
        let mut buf = [0u8; 64];
        let (n, from) = client.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"echo:ping");
        assert_eq!(
            from,
            "10.96.0.53:53".parse().unwrap(),
            "the reply comes from the Service"
        );

        // 8082 turns unready: no more traffic to it.
        let mut slices: Vec<Value> = slice("web", &[(8081, true), (8082, false), (8083, true)])
            .as_array()
            .unwrap()
            .clone();
        slices.extend(slice("sticky", &backends).as_array().unwrap().clone());
        rt.block_on(dp.sync(&model::build(&services, &slices)))
            .unwrap();
        let seen: Vec<String> = (0..40)
            .map(|_| fetch("10.96.0.10:80").unwrap())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        assert_eq!(seen, ["8081", "8083"]);
        // Deleted: the address goes, nothing answers.
        rt.block_on(dp.sync(&model::build(&services[1..2], &slices)))
            .unwrap();
        assert!(fetch("10.96.0.10:80").is_err());
        let addrs = Command::new("ip")
            .args(["addr", "show", "dev", "lo"])
            .output()
            .unwrap();
        let addrs = String::from_utf8_lossy(&addrs.stdout);
        assert!(
            !addrs.contains("10.96.0.10/32") && addrs.contains("10.96.0.11/32"),
            "{addrs}"
        );
        rt.block_on(dp.cleanup()).unwrap();
        let addrs = Command::new("ip")
            .args(["addr", "show", "dev", "lo"])
            .output()
            .unwrap();
        assert!(!String::from_utf8_lossy(&addrs.stdout).contains("10.96.0.11/32"));
    });
}

/// NetworkPolicy on a real kernel: a "node" namespace bridges two "pod" namespaces (pods
/// on one bridge, as the CNI bridge plugin connects them: the policy sees bridged traffic);
/// default deny blocks, an allow admits, for ingress and for egress.
#[tokio::test]
async fn real_nftables_network_policy_in_both_directions() {
    use bosun_proxy::netpol::{self, NftPolicies, PolicyDataplane};
    if !root_with_nft() {
        return;
    }
    let id = std::process::id();
    let sh = |c: &str| {
        let out = Command::new("sh").args(["-c", c]).output().unwrap();
        assert!(
            out.status.success(),
            "{c}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let node = format!("bnp-node-{id}");
    let pods = [
        (format!("bnp-a-{id}"), "10.2.0.5"),
        (format!("bnp-b-{id}"), "10.2.0.6"),
    ];
    let cleanup = |node: &str| {
        for n in [node.to_string(), pods[0].0.clone(), pods[1].0.clone()] {
            let _ = Command::new("ip").args(["netns", "del", &n]).status();
        }
    };
    cleanup(&node);
    struct Guard<F: Fn()>(F);
    impl<F: Fn()> Drop for Guard<F> {
        fn drop(&mut self) {
            (self.0)()
        }
    }
    let _guard = Guard(|| cleanup(&node));
    sh(&format!("ip netns add {node}"));
    sh(&format!("ip netns exec {node} ip link add br0 type bridge"));
    sh(&format!("ip netns exec {node} ip link set br0 up"));
    for (i, (ns, ip)) in pods.iter().enumerate() {
        sh(&format!("ip netns add {ns}"));
        sh(&format!(
            "ip netns exec {node} ip link add h{i} type veth peer name eth0 netns {ns}"
        ));
        sh(&format!(
            "ip netns exec {node} ip link set h{i} master br0 up"
        ));
        sh(&format!("ip netns exec {ns} ip addr add {ip}/24 dev eth0"));
        sh(&format!("ip netns exec {ns} ip link set eth0 up"));
        sh(&format!("ip netns exec {ns} ip link set lo up"));
    }
    // Each "pod" serves on port 80.
    let in_ns =
        |ns: String,
         f: Box<dyn FnOnce() -> std::result::Result<String, std::io::ErrorKind> + Send>| {
            Netns(ns.clone()).run_keep(f)
        };
    for (ns, ip) in &pods {
        let (ns, ip) = (ns.clone(), ip.to_string());
        let name = ns.clone();
        in_ns(
            ns,
            Box::new(move || {
                let l = std::net::TcpListener::bind((ip.as_str(), 80)).unwrap();
                std::thread::spawn(move || {
                    for mut c in l.incoming().flatten() {
                        let _ = c.write_all(name.as_bytes());
                    }
                });
                Ok(String::new())
            }),
        )
        .unwrap();
    }
    let a_to_b = || in_ns(pods[0].0.clone(), Box::new(|| fetch("10.2.0.6:80")));
    let b_to_a = || in_ns(pods[1].0.clone(), Box::new(|| fetch("10.2.0.5:80")));
    assert!(a_to_b().is_ok(), "open before any policy");

    let k8s_pod = |name: &str, ip: &str| -> bosun_api_types::core::v1::Pod {
        serde_json::from_value(json!({
            "metadata": {"namespace": "default", "name": name, "labels": {"app": name}},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "i"}]},
            "status": {"phase": "Running", "podIP": ip}
        }))
        .unwrap()
    };
    let k8s = vec![k8s_pod("a", "10.2.0.5"), k8s_pod("b", "10.2.0.6")];
    let nss: Vec<bosun_api_types::core::v1::Namespace> =
        vec![serde_json::from_value(json!({"metadata": {"name": "default"}})).unwrap()];
    let policy = |name: &str, spec: Value| -> bosun_api_types::networking::v1::NetworkPolicy {
        serde_json::from_value(
            json!({"metadata": {"namespace": "default", "name": name}, "spec": spec}),
        )
        .unwrap()
    };
    let dp = NftPolicies {
        table: "bosun-netpol".into(),
        nft: vec![
            "ip".into(),
            "netns".into(),
            "exec".into(),
            node.clone(),
            "nft".into(),
        ],
    };
    let apply = |policies: Vec<bosun_api_types::networking::v1::NetworkPolicy>| {
        let st = netpol::compute(&policies, &k8s, &nss, "n1");
        let dp = &dp;
        async move { dp.sync(&st).await.unwrap() }
    };

    // Ingress: deny all into b, then allow from a.
    let deny_in = policy(
        "deny-in",
        json!({"podSelector": {"matchLabels": {"app": "b"}}}),
    );
    apply(vec![deny_in.clone()]).await;
    assert!(a_to_b().is_err(), "default-deny ingress blocks a → b");
    assert!(
        b_to_a().is_ok(),
        "a is not isolated; b's replies... and b → a pass"
    );
    let allow_in = policy(
        "allow-in",
        json!({"podSelector": {"matchLabels": {"app": "b"}},
        "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "a"}}}], "ports": [{"port": 80}]}]}),
    );
    apply(vec![deny_in.clone(), allow_in.clone()]).await;
    assert_eq!(a_to_b(), Ok(pods[1].0.clone()), "the allow admits a → b");

    // Egress: deny all out of a, then allow to b.
    let deny_out = policy(
        "deny-out",
        json!({"podSelector": {"matchLabels": {"app": "a"}}, "policyTypes": ["Egress"]}),
    );
    apply(vec![allow_in.clone(), deny_out.clone()]).await;
    assert!(a_to_b().is_err(), "default-deny egress blocks a → b");
    assert!(b_to_a().is_ok(), "ingress to a is not isolated");
    let allow_out = policy(
        "allow-out",
        json!({"podSelector": {"matchLabels": {"app": "a"}}, "policyTypes": ["Egress"],
        "egress": [{"to": [{"ipBlock": {"cidr": "10.2.0.0/24", "except": ["10.2.0.7/32"]}}], "ports": [{"protocol": "TCP", "port": 80}]}]}),
    );
    apply(vec![allow_in, deny_out, allow_out]).await;
    assert_eq!(
        a_to_b(),
        Ok(pods[1].0.clone()),
        "the egress allow admits a → b"
    );

    // No policies: open again; cleanup removes the table.
    apply(vec![]).await;
    assert!(a_to_b().is_ok() && b_to_a().is_ok());
    dp.cleanup().await.unwrap();
}

mod dns {
    use super::*;
    use bosun_proxy::dns::{self, ClusterDns, DnsConfig};
    use hickory_server::proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
    use hickory_server::proto::rr::{Name, RecordType};
    use std::net::SocketAddr;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn query(name: &str, ty: RecordType) -> Vec<u8> {
        let mut m = Message::new(4242, MessageType::Query, OpCode::Query);
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), ty));
        m.to_vec().unwrap()
    }

    /// One question over UDP: the response code and the answers' data, sorted.
    async fn ask(server: SocketAddr, name: &str, ty: RecordType) -> (ResponseCode, Vec<String>) {
        let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        sock.send_to(&query(name, ty), server).await.unwrap();
        let mut buf = vec![0; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), sock.recv(&mut buf))
            .await
            .expect("a DNS answer")
            .unwrap();
        let m = Message::from_vec(&buf[..n]).unwrap();
        assert_eq!(m.metadata.id, 4242);
        let mut data: Vec<String> = m.answers.iter().map(|r| r.data.to_string()).collect();
        data.sort();
        (m.metadata.response_code, data)
    }

    async fn ask_tcp(server: SocketAddr, name: &str, ty: RecordType) -> Vec<String> {
        let mut s = tokio::net::TcpStream::connect(server).await.unwrap();
        let q = query(name, ty);
        s.write_all(&(q.len() as u16).to_be_bytes()).await.unwrap();
        s.write_all(&q).await.unwrap();
        let n = s.read_u16().await.unwrap();
        let mut buf = vec![0; n as usize];
        s.read_exact(&mut buf).await.unwrap();
        let m = Message::from_vec(&buf).unwrap();
        m.answers.iter().map(|r| r.data.to_string()).collect()
    }

    /// The server follows the API server's Services and EndpointSlices, answers over UDP and
    /// TCP, and forwards other names upstream (here a second server, for `example.test`).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cluster_dns_follows_services_and_forwards_the_rest() {
        use bosun_api_types::core::v1::Service;
        use bosun_api_types::discovery::v1::EndpointSlice;
        let upstream = ClusterDns::new(DnsConfig {
            domain: "example.test".into(),
            ..Default::default()
        });
        upstream.set_zone(dns::Zone::build(
            "example.test",
            &[json!({"metadata": {"name": "www", "namespace": "web"},
                     "spec": {"clusterIP": "192.0.2.80"}})],
            &[],
        ));
        let (mut up_server, up_addr) = dns::serve(upstream.clone(), "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();

        let client = client().await;
        let cluster = ClusterDns::new(DnsConfig {
            upstreams: vec![up_addr],
            ..Default::default()
        });
        let (mut server, addr) = dns::serve(cluster.clone(), "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let run = tokio::spawn(dns::run(client.clone(), cluster.clone(), async {
            let _ = stopped.await;
        }));

        let services: Api<Service> = Api::namespaced(client.clone(), "default");
        let svc: Service = serde_json::from_value(json!({
            "metadata": {"name": "web"},
            "spec": {"clusterIP": "10.96.0.77", "ports": [{"name": "http", "port": 80}]},
        }))
        .unwrap();
        services.create(&PostParams::default(), &svc).await.unwrap();
        let headless: Service = serde_json::from_value(json!({
            "metadata": {"name": "db"},
            "spec": {"clusterIP": "None", "ports": [{"port": 5432}]},
        }))
        .unwrap();
        services
            .create(&PostParams::default(), &headless)
            .await
            .unwrap();
        let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
        let slice: EndpointSlice = serde_json::from_value(json!({
            "metadata": {"name": "db-x", "labels": {"kubernetes.io/service-name": "db"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.244.0.8"], "conditions": {"ready": true}},
                          {"addresses": ["10.244.0.9"], "conditions": {"ready": true}}],
            "ports": [{"port": 5432}]
        }))
        .unwrap();
        slices.create(&PostParams::default(), &slice).await.unwrap();

        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let web = ask(addr, "web.default.svc.cluster.local.", RecordType::A).await;
            let db = ask(addr, "db.default.svc.cluster.local.", RecordType::A).await;
            if web.1 == ["10.96.0.77"] && db.1 == ["10.244.0.8", "10.244.0.9"] {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "zone never caught up: {web:?} {db:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(
            ask(
                addr,
                "_http._tcp.web.default.svc.cluster.local.",
                RecordType::SRV
            )
            .await
            .1,
            ["0 100 80 web.default.svc.cluster.local."]
        );
        assert_eq!(
            ask(addr, "77.0.96.10.in-addr.arpa.", RecordType::PTR)
                .await
                .1,
            ["web.default.svc.cluster.local."]
        );
        assert_eq!(
            ask_tcp(addr, "web.default.svc.cluster.local.", RecordType::A).await,
            ["10.96.0.77"]
        );
        assert_eq!(
            ask(addr, "missing.default.svc.cluster.local.", RecordType::A)
                .await
                .0,
            ResponseCode::NXDomain
        );
        // Forwarded.
        assert_eq!(
            ask(addr, "www.web.svc.example.test.", RecordType::A).await,
            (ResponseCode::NoError, vec!["192.0.2.80".to_owned()])
        );
        assert_eq!(
            ask(addr, "nope.web.svc.example.test.", RecordType::A)
                .await
                .0,
            ResponseCode::NXDomain
        );
        assert!(upstream.queries() >= 2);

        // A deleted Service goes away.
        services
            .delete("web", &DeleteParams::default())
            .await
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while ask(addr, "web.default.svc.cluster.local.", RecordType::A)
            .await
            .0
            != ResponseCode::NXDomain
        {
            assert!(Instant::now() < deadline, "deleted Service still answered");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // A malformed packet gets no crash: the server still answers afterwards.
        let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        sock.send_to(b"\x00\x01garbage", addr).await.unwrap();
        assert_eq!(
            ask(addr, "db.default.svc.cluster.local.", RecordType::A)
                .await
                .0,
            ResponseCode::NoError
        );

        // Registration: the kube-dns Service and this node's slice.
        dns::register(
            &client,
            "10.96.0.10".parse().unwrap(),
            "node-a",
            "192.0.2.2".parse().unwrap(),
            10053,
        )
        .await
        .unwrap();
        dns::register(
            &client,
            "10.96.0.10".parse().unwrap(),
            "node-a",
            "192.0.2.2".parse().unwrap(),
            10053,
        )
        .await
        .expect("registering twice is fine");
        let kube_dns: Api<Service> = Api::namespaced(client.clone(), "kube-system");
        let s: Value = serde_json::to_value(kube_dns.get("kube-dns").await.unwrap()).unwrap();
        assert_eq!(s["spec"]["clusterIP"], "10.96.0.10");
        assert_eq!(s["spec"]["ports"][0]["targetPort"], 10053);
        assert_eq!(s["spec"]["ports"].as_array().unwrap().len(), 2, "{s}");
        let ks: Api<EndpointSlice> = Api::namespaced(client.clone(), "kube-system");
        let sl: Value = serde_json::to_value(ks.get("kube-dns-node-a").await.unwrap()).unwrap();
        assert_eq!(sl["endpoints"][0]["addresses"][0], "192.0.2.2");
        dns::unregister(&client, "node-a").await.unwrap();
        assert!(ks.get_opt("kube-dns-node-a").await.unwrap().is_none());

        let _ = stop.send(());
        run.await.unwrap();
        server.shutdown_gracefully().await.unwrap();
        up_server.shutdown_gracefully().await.unwrap();
    }
}
