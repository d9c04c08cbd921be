//! Node-pressure eviction, as upstream's eviction manager does it with hard thresholds:
//! every interval the node's `memory.available` (capacity less the working set) and
//! `nodefs.available` (free space on the kubelet's filesystem) are compared with the
//! thresholds (`--eviction-hard`, default `memory.available<100Mi,nodefs.available<10%`).
//! Under a threshold the node reports `MemoryPressure` or `DiskPressure` (held for the
//! transition period after the signal recovers) and one pod is evicted per interval, ranked
//! as upstream ranks them: pods using more than they request first, then lower priority
//! first, then the most usage above requests.

use crate::pods::PodWorker;
use crate::stats::{node_usage, NodeUsage, PodUsage, Stats};
use crate::Result;
use bosun_api_types::core::v1::Pod;
use bosun_api_types::Quantity;
use bosun_client::{Api, ListParams};
use bosun_cri::{ImageService, RuntimeService};
use serde_json::Value;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The hard eviction thresholds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Thresholds {
    /// Evict when `memory.available` falls below this many bytes.
    pub memory_available: u64,
    /// Evict when `nodefs.available` falls below this percentage of the filesystem.
    pub nodefs_available_percent: u64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            memory_available: 100 << 20,
            nodefs_available_percent: 10,
        }
    }
}

impl Thresholds {
    /// Reads `--eviction-hard`'s syntax: `memory.available<100Mi,nodefs.available<10%`
    /// (signals not named keep their defaults).
    pub fn parse(s: &str) -> std::result::Result<Self, String> {
        let mut t = Thresholds::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (signal, value) = part
                .split_once('<')
                .ok_or_else(|| format!("{part:?}: use SIGNAL<QUANTITY"))?;
            match signal.trim() {
                "memory.available" => {
                    let q = Quantity::parse(value.trim()).map_err(|e| format!("{part:?}: {e}"))?;
                    t.memory_available = u64::try_from(q.value())
                        .map_err(|_| format!("{part:?}: the quantity must not be negative"))?;
                }
                "nodefs.available" => {
                    t.nodefs_available_percent = value
                        .trim()
                        .strip_suffix('%')
                        .and_then(|p| p.parse::<u64>().ok())
                        .filter(|p| *p <= 100)
                        .ok_or_else(|| format!("{part:?}: use a percentage such as 10%"))?;
                }
                other => {
                    return Err(format!(
                    "{other:?}: unsupported eviction signal (memory.available, nodefs.available)"
                ))
                }
            }
        }
        Ok(t)
    }
}

/// The node's pressure conditions, shared with the node agent that reports them.
#[derive(Debug, Default)]
pub struct Pressure {
    memory: AtomicBool,
    disk: AtomicBool,
}

impl Pressure {
    /// `MemoryPressure`.
    pub fn memory(&self) -> bool {
        self.memory.load(Ordering::Relaxed)
    }

    /// `DiskPressure`.
    pub fn disk(&self) -> bool {
        self.disk.load(Ordering::Relaxed)
    }
}

/// What is short.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resource {
    /// `memory.available`.
    Memory,
    /// `nodefs.available`.
    Disk,
}

/// Which signals are under their thresholds in `n`.
pub fn starved(n: &NodeUsage, t: &Thresholds) -> Vec<Resource> {
    let mut out = Vec::new();
    if n.memory_capacity > 0 && n.memory_available() < t.memory_available {
        out.push(Resource::Memory);
    }
    if n.fs_capacity > 0 && n.fs_available * 100 < n.fs_capacity * t.nodefs_available_percent {
        out.push(Resource::Disk);
    }
    out
}

fn bytes_of(q: &Value) -> u64 {
    q.as_str()
        .and_then(|s| Quantity::parse(s).ok())
        .map_or(0, |q| q.value().max(0) as u64)
}

/// What the pod's containers request of `resource` (`memory` or `ephemeral-storage`).
fn requests(pod: &Value, resource: &str) -> u64 {
    pod["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| bytes_of(&c["resources"]["requests"][resource]))
        .sum()
}

/// Orders `pods` (with their usage) for eviction: the first goes first.
pub fn rank(pods: &mut [(Value, PodUsage)], resource: Resource) {
    let name = match resource {
        Resource::Memory => "memory",
        Resource::Disk => "ephemeral-storage",
    };
    let usage = |u: &PodUsage| match resource {
        Resource::Memory => u.memory_working_set,
        Resource::Disk => u.rootfs_bytes,
    };
    pods.sort_by_key(|(pod, u)| {
        let req = requests(pod, name);
        let used = usage(u);
        let exceeds = used > req;
        let priority = pod["spec"]["priority"].as_i64().unwrap_or(0);
        let above = used as i128 - req as i128;
        (!exceeds, priority, std::cmp::Reverse(above))
    });
}

/// A byte count as the eviction message shows it (`100Mi`, `52428Ki`).
fn quantity(bytes: u64) -> String {
    if bytes.is_multiple_of(1 << 20) {
        format!("{}Mi", bytes >> 20)
    } else {
        format!("{}Ki", bytes >> 10)
    }
}

/// Watches the node's usage and evicts pods under pressure.
pub struct EvictionManager<R> {
    worker: Arc<PodWorker<R>>,
    pods: Api<Pod>,
    node: String,
    stats: Stats,
    dir: PathBuf,
    thresholds: Thresholds,
    pressure: Arc<Pressure>,
    /// A condition holds this long after its signal recovers.
    transition: Duration,
    last_starved: Mutex<[Option<Instant>; 2]>,
}

impl<R> EvictionManager<R>
where
    R: RuntimeService + ImageService + 'static,
{
    /// A manager evicting `node`'s pods through `worker`; `dir` is the kubelet's directory
    /// (nodefs).
    pub fn new(
        client: bosun_client::Client,
        node: String,
        worker: Arc<PodWorker<R>>,
        rt: Arc<R>,
        dir: PathBuf,
        thresholds: Thresholds,
    ) -> Self {
        let rt: Arc<dyn RuntimeService> = rt;
        EvictionManager {
            worker,
            pods: Api::all(client),
            stats: Stats::new(rt, node.clone(), dir.clone()),
            node,
            dir,
            thresholds,
            pressure: Arc::new(Pressure::default()),
            transition: Duration::from_secs(300),
            last_starved: Mutex::new([None, None]),
        }
    }

    /// How long a pressure condition holds after its signal recovers (upstream's
    /// `evictionPressureTransitionPeriod`, 5 min by default).
    pub fn with_transition_period(mut self, d: Duration) -> Self {
        self.transition = d;
        self
    }

    /// The pressure conditions this manager keeps, for the node agent.
    pub fn pressure(&self) -> Arc<Pressure> {
        self.pressure.clone()
    }

    /// One check against `usage`: updates the conditions, evicts at most one pod; returns
    /// the evicted pod's `namespace/name`.
    pub async fn check(&self, usage: &NodeUsage) -> Result<Option<String>> {
        let short = starved(usage, &self.thresholds);
        let now = Instant::now();
        {
            let mut last = self.last_starved.lock().unwrap_or_else(|e| e.into_inner());
            for (i, r) in [Resource::Memory, Resource::Disk].iter().enumerate() {
                if short.contains(r) {
                    last[i] = Some(now);
                }
                let on = last[i].is_some_and(|t| now.duration_since(t) < self.transition);
                let flag = if i == 0 {
                    &self.pressure.memory
                } else {
                    &self.pressure.disk
                };
                flag.store(on, Ordering::Relaxed);
            }
        }
        let Some(resource) = short.first().copied() else {
            return Ok(None);
        };
        let list = self
            .pods
            .list(&ListParams::default().fields(&format!("spec.nodeName={}", self.node)))
            .await
            .map_err(|e| crate::Error::Api(format!("listing the node's pods: {e}")))?;
        let usage_of: Vec<PodUsage> = self
            .stats
            .pods()
            .await
            .map_err(|e| crate::Error::Runtime(format!("reading pod stats: {e}")))?;
        let mut candidates: Vec<(Value, PodUsage)> = list
            .items
            .iter()
            .filter_map(|p| serde_json::to_value(p).ok())
            .filter(|p| {
                p["metadata"]["deletionTimestamp"].is_null()
                    && !matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed"))
                    // Static pods are the node's own: never evicted here.
                    && p["metadata"]["annotations"]["kubernetes.io/config.source"]
                        .as_str()
                        .is_none_or(|s| s == "api")
            })
            .map(|p| {
                let uid = p["metadata"]["uid"].as_str().unwrap_or_default();
                let u = usage_of
                    .iter()
                    .find(|u| u.uid == uid)
                    .cloned()
                    .unwrap_or_default();
                (p, u)
            })
            .collect();
        rank(&mut candidates, resource);
        let Some((pod, used)) = candidates.first() else {
            return Ok(None);
        };
        let (what, threshold, available, used) = match resource {
            Resource::Memory => (
                "memory",
                quantity(self.thresholds.memory_available),
                quantity(usage.memory_available()),
                used.memory_working_set,
            ),
            Resource::Disk => (
                "ephemeral-storage",
                format!("{}%", self.thresholds.nodefs_available_percent),
                quantity(usage.fs_available),
                used.rootfs_bytes,
            ),
        };
        let message = format!(
            "The node was low on resource: {what}. Threshold quantity: {threshold}, available: {available}. Pod was using {}, request is {}. ",
            quantity(used),
            quantity(requests(pod, if what == "memory" { "memory" } else { "ephemeral-storage" }))
        );
        self.worker.evict(pod, &message).await?;
        Ok(Some(format!(
            "{}/{}",
            pod["metadata"]["namespace"].as_str().unwrap_or_default(),
            pod["metadata"]["name"].as_str().unwrap_or_default()
        )))
    }

    /// Checks every `interval` until `shutdown`.
    pub async fn run(self, interval: Duration, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut tick = tokio::time::interval(interval);
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tick.tick() => {}
            }
            let usage = node_usage(&self.dir);
            if let Err(e) = self.check(&usage).await {
                tracing::warn!(error = %e, "eviction check failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_thresholds() {
        assert_eq!(Thresholds::parse("").unwrap(), Thresholds::default());
        let t = Thresholds::parse("memory.available<1Gi, nodefs.available<5%").unwrap();
        assert_eq!(
            (t.memory_available, t.nodefs_available_percent),
            (1 << 30, 5)
        );
        assert!(Thresholds::parse("memory.available>1Gi").is_err());
        assert!(Thresholds::parse("nodefs.available<5Gi").is_err());
        assert!(Thresholds::parse("pid.available<5").is_err());
        assert!(Thresholds::parse("memory.available<lots").is_err());
    }

    #[test]
    fn finds_the_starved_signals() {
        let n = NodeUsage {
            memory_capacity: 1000 << 20,
            memory_working_set: 950 << 20,
            fs_capacity: 100,
            fs_available: 9,
            ..Default::default()
        };
        assert_eq!(
            starved(&n, &Thresholds::default()),
            vec![Resource::Memory, Resource::Disk]
        );
        let fine = NodeUsage {
            memory_working_set: 100 << 20,
            fs_available: 50,
            ..n
        };
        assert!(starved(&fine, &Thresholds::default()).is_empty());
    }

    #[test]
    fn ranks_like_upstream() {
        let pod = |name: &str, req: Option<&str>, priority: i64| {
            let mut c = json!({"name": "c"});
            if let Some(r) = req {
                c["resources"] = json!({"requests": {"memory": r}});
            }
            json!({"metadata": {"name": name}, "spec": {"priority": priority, "containers": [c]}})
        };
        let usage = |mib: u64| PodUsage {
            memory_working_set: mib << 20,
            ..Default::default()
        };
        let mut pods = vec![
            // Within its request: last.
            (pod("guaranteed", Some("100Mi"), 0), usage(50)),
            // Over, but important.
            (pod("critical", None, 1000), usage(500)),
            // Over its request by 10 Mi.
            (pod("burstable", Some("10Mi"), 0), usage(20)),
            // Over by 30 Mi: first.
            (pod("besteffort", None, 0), usage(30)),
        ];
        rank(&mut pods, Resource::Memory);
        let order: Vec<&str> = pods
            .iter()
            .map(|(p, _)| p["metadata"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(order, ["besteffort", "burstable", "critical", "guaranteed"]);
        assert_eq!(quantity(100 << 20), "100Mi");
        assert_eq!(quantity(51_200 * 1024 + 5), "51200Ki");
    }
}
