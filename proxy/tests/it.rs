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

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
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
    let listing = Command::new("ip")
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
    let listing = String::from_utf8_lossy(&listing.stdout);
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
    let gone = Command::new("ip")
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
    assert!(!gone.status.success());
}
