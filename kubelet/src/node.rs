//! The Node object: registration with capacity, allocatable, labels, addresses, node info and
//! conditions; status kept current every `status_interval`; and the node's Lease in
//! `kube-node-lease` renewed every `lease_interval` (the heartbeat the node lifecycle
//! controller watches).

use crate::eviction::Pressure;
use crate::machine::Machine;
use crate::{Error, Result};
use bosun_api_types::coordination::v1::Lease;
use bosun_api_types::core::v1::Node;
use bosun_api_types::Time;
use bosun_client::{Api, Client, Patch, PatchParams, PostParams};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// How the node presents itself.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeConfig {
    /// The Node's name (the host name by default).
    pub name: String,
    /// Labels added to the standard ones.
    pub labels: BTreeMap<String, String>,
    /// The `pods` capacity.
    pub max_pods: u32,
    /// CPU held back for the system, in millicores.
    pub system_reserved_cpu_millis: u64,
    /// Memory held back for the system, in bytes.
    pub system_reserved_memory: u64,
    /// The hard eviction threshold `memory.available` (default 100 MiB), in bytes.
    pub eviction_hard_memory: u64,
    /// The hard eviction threshold `nodefs.available`, in percent of the disk (default 10).
    pub eviction_hard_nodefs_percent: u64,
    /// The runtime's `name://version` (`nodeInfo.containerRuntimeVersion`).
    pub runtime_version: String,
    /// The kubelet's HTTPS port.
    pub kubelet_port: u16,
    /// How often the status is written.
    pub status_interval: Duration,
    /// How often the Lease is renewed.
    pub lease_interval: Duration,
    /// The Lease's duration.
    pub lease_duration_seconds: i32,
}

/// The version the node reports as its kubelet's.
pub const KUBELET_VERSION: &str = concat!("v1.32.0-bosun.", env!("CARGO_PKG_VERSION"));

impl NodeConfig {
    /// Upstream's defaults for a node named `name`.
    pub fn new(name: impl Into<String>) -> Self {
        NodeConfig {
            name: name.into(),
            labels: BTreeMap::new(),
            max_pods: 110,
            system_reserved_cpu_millis: 0,
            system_reserved_memory: 0,
            eviction_hard_memory: 100 << 20,
            eviction_hard_nodefs_percent: 10,
            runtime_version: format!("bosun://{}", env!("CARGO_PKG_VERSION")),
            kubelet_port: 10250,
            status_interval: Duration::from_secs(10),
            lease_interval: Duration::from_secs(10),
            lease_duration_seconds: 40,
        }
    }
}

fn ki(bytes: u64) -> String {
    format!("{}Ki", bytes / 1024)
}

/// The node's capacity.
pub fn capacity(m: &Machine, cfg: &NodeConfig) -> Map<String, Value> {
    let mut c = Map::new();
    c.insert("cpu".into(), json!(m.cores.to_string()));
    c.insert("memory".into(), json!(ki(m.memory_bytes)));
    c.insert("ephemeral-storage".into(), json!(ki(m.ephemeral_bytes)));
    c.insert("hugepages-1Gi".into(), json!("0"));
    c.insert("hugepages-2Mi".into(), json!("0"));
    c.insert("pods".into(), json!(cfg.max_pods.to_string()));
    c
}

/// Capacity less the system reservation and the hard eviction thresholds (upstream's rule).
pub fn allocatable(m: &Machine, cfg: &NodeConfig) -> Map<String, Value> {
    let mut a = capacity(m, cfg);
    let cpu = (m.cores * 1000).saturating_sub(cfg.system_reserved_cpu_millis);
    a.insert(
        "cpu".into(),
        json!(if cpu.is_multiple_of(1000) {
            (cpu / 1000).to_string()
        } else {
            format!("{cpu}m")
        }),
    );
    let mem = m
        .memory_bytes
        .saturating_sub(cfg.system_reserved_memory)
        .saturating_sub(cfg.eviction_hard_memory);
    a.insert("memory".into(), json!(ki(mem)));
    let disk =
        m.ephemeral_bytes - m.ephemeral_bytes / 100 * cfg.eviction_hard_nodefs_percent.min(100);
    // Upstream writes allocatable ephemeral storage in plain bytes.
    a.insert("ephemeral-storage".into(), json!(disk.to_string()));
    a
}

/// Reads `--system-reserved`'s syntax, `cpu=500m,memory=1Gi`: (CPU millicores, memory
/// bytes).
pub fn parse_system_reserved(s: &str) -> std::result::Result<(u64, u64), String> {
    let mut out = (0, 0);
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| format!("{part}: use RESOURCE=QUANTITY"))?;
        let q = bosun_api_types::Quantity::parse(v.trim()).map_err(|e| format!("{part}: {e}"))?;
        let n = |x: i64| u64::try_from(x).map_err(|_| format!("{part}: negative"));
        match k.trim() {
            "cpu" => out.0 = n(q.milli_value())?,
            "memory" => out.1 = n(q.value())?,
            other => {
                return Err(format!(
                    "{other} is not a reservable resource (cpu, memory)"
                ))
            }
        }
    }
    Ok(out)
}

/// The standard labels, then the configured ones.
pub fn labels(m: &Machine, cfg: &NodeConfig) -> BTreeMap<String, String> {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let mut l = BTreeMap::from([
        ("beta.kubernetes.io/arch".to_string(), arch.to_string()),
        ("beta.kubernetes.io/os".to_string(), "linux".to_string()),
        ("kubernetes.io/arch".to_string(), arch.to_string()),
        ("kubernetes.io/hostname".to_string(), cfg.name.clone()),
        ("kubernetes.io/os".to_string(), "linux".to_string()),
    ]);
    let _ = m;
    l.extend(cfg.labels.clone());
    l
}

/// The conditions, keeping a condition's `lastTransitionTime` while its status holds.
/// `pressure` is `(memory, disk)`: the eviction manager's findings.
pub fn conditions(
    previous: &[Value],
    ready: Result<(), String>,
    pressure: (bool, bool),
    now: &Time,
) -> Vec<Value> {
    let ready_msg = ready.clone().err();
    let want = [
        if pressure.0 {
            (
                "MemoryPressure",
                "True",
                "KubeletHasInsufficientMemory",
                "kubelet has insufficient memory available".to_string(),
            )
        } else {
            (
                "MemoryPressure",
                "False",
                "KubeletHasSufficientMemory",
                "kubelet has sufficient memory available".to_string(),
            )
        },
        if pressure.1 {
            (
                "DiskPressure",
                "True",
                "KubeletHasDiskPressure",
                "kubelet has disk pressure".to_string(),
            )
        } else {
            (
                "DiskPressure",
                "False",
                "KubeletHasNoDiskPressure",
                "kubelet has no disk pressure".to_string(),
            )
        },
        (
            "PIDPressure",
            "False",
            "KubeletHasSufficientPID",
            "kubelet has sufficient PID available".to_string(),
        ),
        if ready.is_ok() {
            (
                "Ready",
                "True",
                "KubeletReady",
                "kubelet is posting ready status".to_string(),
            )
        } else {
            (
                "Ready",
                "False",
                "KubeletNotReady",
                ready_msg.unwrap_or_default(),
            )
        },
    ];
    want.into_iter()
        .map(|(t, status, reason, message)| {
            let prev = previous.iter().find(|c| c["type"] == t);
            let transition = match prev {
                Some(p) if p["status"] == status => p["lastTransitionTime"].clone(),
                _ => json!(now),
            };
            json!({"type": t, "status": status, "lastHeartbeatTime": now,
                   "lastTransitionTime": transition, "reason": reason, "message": message})
        })
        .collect()
}

/// The full status (without images and volumes).
pub fn status(
    m: &Machine,
    cfg: &NodeConfig,
    previous: &[Value],
    ready: Result<(), String>,
    pressure: (bool, bool),
) -> Value {
    let now = Time::now();
    let mut addresses = Vec::new();
    if let Some(ip) = m.internal_ip {
        addresses.push(json!({"type": "InternalIP", "address": ip.to_string()}));
    }
    addresses.push(json!({"type": "Hostname", "address": cfg.name}));
    json!({
        "capacity": capacity(m, cfg),
        "allocatable": allocatable(m, cfg),
        "conditions": conditions(previous, ready, pressure, &now),
        "addresses": addresses,
        "daemonEndpoints": {"kubeletEndpoint": {"Port": cfg.kubelet_port}},
        "nodeInfo": {
            "machineID": m.machine_id,
            "systemUUID": m.system_uuid,
            "bootID": m.boot_id,
            "kernelVersion": m.kernel_version,
            "osImage": m.os_image,
            "containerRuntimeVersion": cfg.runtime_version,
            "kubeletVersion": KUBELET_VERSION,
            "kubeProxyVersion": KUBELET_VERSION,
            "operatingSystem": "linux",
            "architecture": labels(m, cfg).get("kubernetes.io/arch").cloned().unwrap_or_default(),
        },
    })
}

fn api_err(what: &str, e: bosun_client::Error) -> Error {
    Error::Api(format!("{what}: {e}"))
}

/// Registers and keeps one Node current.
///
/// ```no_run
/// use bosun_kubelet::{machine::Machine, node::{NodeAgent, NodeConfig}};
/// # async fn run(client: bosun_client::Client) {
/// let machine = Machine::detect(std::path::Path::new("/var/lib/bosun"));
/// let mut config = NodeConfig::new("node-1");
/// config.labels.insert("topology.kubernetes.io/zone".into(), "rack-3".into());
/// let agent = NodeAgent::new(client, machine, config);
/// // Ready while the closure says so; the Lease renewed every 10 s.
/// agent.run(|| Ok(()), std::future::pending()).await;
/// # }
/// ```
pub struct NodeAgent {
    nodes: Api<Node>,
    leases: Api<Lease>,
    machine: Machine,
    cfg: NodeConfig,
    pressure: Option<Arc<Pressure>>,
}

impl NodeAgent {
    /// An agent for `cfg.name` on `machine`.
    pub fn new(client: Client, machine: Machine, cfg: NodeConfig) -> Self {
        NodeAgent {
            nodes: Api::all(client.clone()),
            leases: Api::namespaced(client, "kube-node-lease"),
            machine,
            cfg,
            pressure: None,
        }
    }

    /// Reports the eviction manager's pressure conditions.
    pub fn with_pressure(mut self, pressure: Arc<Pressure>) -> Self {
        self.pressure = Some(pressure);
        self
    }

    /// The configuration.
    pub fn config(&self) -> &NodeConfig {
        &self.cfg
    }

    /// Creates the Node, or brings an existing one's labels up to date; then writes its
    /// status. Returns the Node's UID.
    pub async fn register(&self) -> Result<String> {
        let name = &self.cfg.name;
        let labels = labels(&self.machine, &self.cfg);
        let obj: Node = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": labels,
                         "annotations": {"volumes.kubernetes.io/controller-managed-attach-detach": "true"}},
        }))
        .map_err(|e| Error::Api(format!("building the Node: {e}")))?;
        let node = match self.nodes.create(&PostParams::default(), &obj).await {
            Ok(n) => {
                tracing::info!(node = %name, "registered");
                n
            }
            Err(e) if e.is_conflict() => {
                tracing::info!(node = %name, "already registered; updating its labels");
                self.nodes
                    .patch(
                        name,
                        &PatchParams::default(),
                        &Patch::Merge(json!({"metadata": {"labels": labels}})),
                    )
                    .await
                    .map_err(|e| api_err("updating the Node's labels", e))?
            }
            Err(e) => return Err(api_err("registering the Node", e)),
        };
        self.update_status(Ok(())).await?;
        Ok(node.metadata.uid.unwrap_or_default())
    }

    /// Writes the status, with `ready` as the Ready condition.
    pub async fn update_status(&self, ready: Result<(), String>) -> Result<()> {
        let current = self
            .nodes
            .get(&self.cfg.name)
            .await
            .map_err(|e| api_err("reading the Node", e))?;
        let previous: Vec<Value> = current
            .status
            .as_ref()
            .and_then(|s| serde_json::to_value(&s.conditions).ok())
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default();
        let pressure = self
            .pressure
            .as_ref()
            .map_or((false, false), |p| (p.memory(), p.disk()));
        let status = status(&self.machine, &self.cfg, &previous, ready, pressure);
        self.nodes
            .patch_status(
                &self.cfg.name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": status})),
            )
            .await
            .map_err(|e| api_err("writing the Node's status", e))?;
        Ok(())
    }

    /// Creates or renews the node's Lease (owned by the Node, so it goes with it).
    pub async fn renew_lease(&self, node_uid: &str) -> Result<()> {
        let name = &self.cfg.name;
        let now = bosun_api_types::MicroTime::now();
        match self
            .leases
            .get_opt(name)
            .await
            .map_err(|e| api_err("reading the Lease", e))?
        {
            Some(mut lease) => {
                let spec = lease.spec.get_or_insert_with(Default::default);
                spec.renew_time = Some(now);
                spec.holder_identity = Some(name.clone());
                spec.lease_duration_seconds = Some(self.cfg.lease_duration_seconds);
                self.leases
                    .replace(name, &PostParams::default(), &lease)
                    .await
                    .map_err(|e| api_err("renewing the Lease", e))?;
            }
            None => {
                let lease: Lease = serde_json::from_value(json!({
                    "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": name, "namespace": "kube-node-lease",
                        "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": name, "uid": node_uid}]},
                    "spec": {"holderIdentity": name, "leaseDurationSeconds": self.cfg.lease_duration_seconds,
                             "renewTime": now},
                }))
                .map_err(|e| Error::Api(format!("building the Lease: {e}")))?;
                self.leases
                    .create(&PostParams::default(), &lease)
                    .await
                    .map_err(|e| api_err("creating the Lease", e))?;
            }
        }
        Ok(())
    }

    /// Registers (retrying with backoff until it works), then renews the Lease and writes the
    /// status on their intervals until `shutdown` resolves. `ready` is asked before each
    /// status write.
    pub async fn run<F>(self, ready: F, shutdown: impl std::future::Future<Output = ()>)
    where
        F: Fn() -> Result<(), String> + Send + Sync,
    {
        tokio::pin!(shutdown);
        let mut backoff = Duration::from_millis(200);
        let uid = loop {
            match self.register().await {
                Ok(uid) => break uid,
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?backoff, "node registration failed");
                    tokio::select! {
                        _ = &mut shutdown => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(7));
                }
            }
        };
        let mut lease = tokio::time::interval(self.cfg.lease_interval);
        let mut status = tokio::time::interval(self.cfg.status_interval);
        // Readiness is looked at often: a change is written at once, not at the next interval.
        let mut watch = tokio::time::interval(Duration::from_millis(100));
        let mut reported: Option<bool> = None;
        loop {
            let write = tokio::select! {
                _ = &mut shutdown => return,
                _ = lease.tick() => {
                    if let Err(e) = self.renew_lease(&uid).await {
                        tracing::warn!(error = %e, "lease renewal failed");
                    }
                    false
                }
                _ = status.tick() => true,
                _ = watch.tick() => reported.is_some_and(|r| r != ready().is_ok()),
            };
            if write {
                let now = ready();
                let is_ready = now.is_ok();
                match self.update_status(now).await {
                    Ok(()) => reported = Some(is_ready),
                    Err(e) => tracing::warn!(error = %e, "node status update failed"),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_system_reservations() {
        assert_eq!(parse_system_reserved(""), Ok((0, 0)));
        assert_eq!(
            parse_system_reserved("cpu=500m, memory=1Gi"),
            Ok((500, 1 << 30))
        );
        assert!(parse_system_reserved("gpu=1").is_err());
        assert!(parse_system_reserved("cpu").is_err());
        assert!(parse_system_reserved("memory=lots").is_err());
        let m = Machine {
            cores: 2,
            memory_bytes: 4 << 30,
            ephemeral_bytes: 100 << 30,
            hostname: "h".into(),
            internal_ip: None,
            machine_id: String::new(),
            system_uuid: String::new(),
            boot_id: String::new(),
            kernel_version: String::new(),
            os_image: String::new(),
        };
        let mut cfg = NodeConfig::new("h");
        (cfg.system_reserved_cpu_millis, cfg.system_reserved_memory) =
            parse_system_reserved("cpu=500m,memory=1Gi").unwrap();
        let a = allocatable(&m, &cfg);
        // 4 GiB less 1 GiB reserved less the 100 MiB eviction threshold.
        assert_eq!(
            (a["cpu"].as_str(), a["memory"].as_str()),
            (Some("1500m"), Some("3043328Ki"))
        );
    }
}
