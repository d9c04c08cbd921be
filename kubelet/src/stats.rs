//! Resource usage of the node and its pods, as the upstream kubelet reports it: the node's
//! CPU, memory and filesystem from the kernel (`/proc/stat`, `/proc/meminfo`, `statvfs` of
//! the kubelet's directory), the pods' and containers' from the runtime's CRI stats.
//!
//! [`Stats::summary`] is the `/stats/summary` document (upstream's `statsapi.Summary`; CPU
//! rates from the previous sample); [`Stats::resource_metrics`] is `/metrics/resource` in the
//! Prometheus text format (what metrics-server scrapes); [`node_usage`] feeds the eviction
//! manager.
//!
//! ```no_run
//! # async fn f(rt: std::sync::Arc<dyn bosun_cri::RuntimeService>) {
//! let stats = bosun_kubelet::stats::Stats::new(rt, "node-1".into(), "/var/lib/bosun".into());
//! let summary = stats.summary().await.unwrap();
//! assert_eq!(summary["node"]["nodeName"], "node-1");
//! # }
//! ```

use crate::pods::{CONTAINER_NAME, POD_NAME, POD_NAMESPACE};
use bosun_api_types::Time;
use bosun_cri::v1::*;
use bosun_cri::RuntimeService;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The node's usage at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeUsage {
    /// CPU time used since boot (all cores, not idle or iowait), in nanoseconds.
    pub cpu_nanos: u64,
    /// Physical memory.
    pub memory_capacity: u64,
    /// Memory in use, page cache included (`MemTotal - MemFree`).
    pub memory_usage: u64,
    /// Usage less inactive file pages: what cannot be reclaimed easily.
    pub memory_working_set: u64,
    /// Anonymous memory (`AnonPages`).
    pub memory_rss: u64,
    /// The kubelet filesystem's size, in bytes.
    pub fs_capacity: u64,
    /// Bytes free for unprivileged users.
    pub fs_available: u64,
    /// Inodes in all.
    pub fs_inodes: u64,
    /// Free inodes.
    pub fs_inodes_free: u64,
}

impl NodeUsage {
    /// Memory available to pods as the eviction manager counts it: capacity less the
    /// working set.
    pub fn memory_available(&self) -> u64 {
        self.memory_capacity.saturating_sub(self.memory_working_set)
    }
}

/// Busy CPU time from a `/proc/stat` text, in nanoseconds (user, nice, system, irq,
/// softirq and steal ticks at 100 Hz).
pub fn cpu_nanos(proc_stat: &str) -> Option<u64> {
    let line = proc_stat.lines().find(|l| l.starts_with("cpu "))?;
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    let busy: u64 = [0, 1, 2, 5, 6, 7]
        .iter()
        .map(|i| f.get(*i).copied().unwrap_or(0))
        .sum();
    Some(busy * 10_000_000)
}

/// `(capacity, usage, working set, rss)` from a `/proc/meminfo` text, in bytes.
pub fn memory(meminfo: &str) -> (u64, u64, u64, u64) {
    let kb = |key: &str| {
        meminfo
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    let total = kb("MemTotal");
    let usage = total.saturating_sub(kb("MemFree"));
    let working = usage.saturating_sub(kb("Inactive(file)"));
    (total, usage, working, kb("AnonPages"))
}

/// The node's usage now; `dir` is the kubelet's directory (its filesystem is nodefs).
pub fn node_usage(dir: &Path) -> NodeUsage {
    let (memory_capacity, memory_usage, memory_working_set, memory_rss) =
        memory(&std::fs::read_to_string("/proc/meminfo").unwrap_or_default());
    let fs = rustix::fs::statvfs(dir).ok();
    NodeUsage {
        cpu_nanos: cpu_nanos(&std::fs::read_to_string("/proc/stat").unwrap_or_default())
            .unwrap_or(0),
        memory_capacity,
        memory_usage,
        memory_working_set,
        memory_rss,
        fs_capacity: fs.as_ref().map_or(0, |s| s.f_blocks * s.f_frsize),
        fs_available: fs.as_ref().map_or(0, |s| s.f_bavail * s.f_frsize),
        fs_inodes: fs.as_ref().map_or(0, |s| s.f_files),
        fs_inodes_free: fs.as_ref().map_or(0, |s| s.f_ffree),
    }
}

/// One pod's usage, from the runtime.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodUsage {
    /// The pod's UID.
    pub uid: String,
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Memory working set of its running containers, in bytes.
    pub memory_working_set: u64,
    /// CPU time of its running containers, in nanoseconds.
    pub cpu_nanos: u64,
    /// Bytes its containers wrote to their writable layers.
    pub rootfs_bytes: u64,
}

/// Reads usage from the runtime and the kernel; remembers the last CPU samples for rates.
pub struct Stats {
    rt: Arc<dyn RuntimeService>,
    node: String,
    dir: PathBuf,
    /// Key → (time in ns, cumulative CPU ns) of the previous sample.
    samples: Mutex<HashMap<String, (i64, u64)>>,
}

fn v(x: &Option<UInt64Value>) -> Option<u64> {
    x.as_ref().map(|v| v.value)
}

fn now_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

fn time(nanos: i64) -> Value {
    json!(Time::from_unix(nanos.div_euclid(1_000_000_000), 0))
}

impl Stats {
    /// Usage of `node`'s pods on `rt`; `dir` is the kubelet's directory.
    pub fn new(rt: Arc<dyn RuntimeService>, node: String, dir: PathBuf) -> Self {
        Stats {
            rt,
            node,
            dir,
            samples: Mutex::new(HashMap::new()),
        }
    }

    /// The CPU rate since the previous sample of `key`, in nanocores.
    fn rate(&self, key: &str, at: i64, cumulative: u64) -> Option<u64> {
        let mut g = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        let prev = g.insert(key.to_string(), (at, cumulative));
        let (t0, c0) = prev?;
        let dt = at.checked_sub(t0).filter(|d| *d > 0)? as u128;
        let dc = cumulative.checked_sub(c0)? as u128;
        Some((dc * 1_000_000_000 / dt) as u64)
    }

    /// Every pod's usage (pods without running containers report zeros).
    pub async fn pods(&self) -> Result<Vec<PodUsage>, bosun_cri::Error> {
        Ok(self
            .sandbox_stats()
            .await?
            .iter()
            .map(|s| {
                let meta = s
                    .attributes
                    .as_ref()
                    .and_then(|a| a.metadata.clone())
                    .unwrap_or_default();
                let containers = s.linux.as_ref().map(|l| l.containers.as_slice());
                let sum = |f: &dyn Fn(&ContainerStats) -> Option<u64>| {
                    containers.into_iter().flatten().filter_map(f).sum()
                };
                PodUsage {
                    uid: meta.uid,
                    namespace: meta.namespace,
                    name: meta.name,
                    memory_working_set: sum(&|c| v(&c.memory.as_ref()?.working_set_bytes)),
                    cpu_nanos: sum(&|c| v(&c.cpu.as_ref()?.usage_core_nano_seconds)),
                    rootfs_bytes: sum(&|c| v(&c.writable_layer.as_ref()?.used_bytes)),
                }
            })
            .collect())
    }

    /// Container ID → creation time (ns).
    async fn container_starts(&self) -> Result<HashMap<String, i64>, bosun_cri::Error> {
        Ok(self
            .rt
            .list_containers(ListContainersRequest::default())
            .await?
            .containers
            .into_iter()
            .map(|c| (c.id, c.created_at))
            .collect())
    }

    async fn sandbox_stats(&self) -> Result<Vec<PodSandboxStats>, bosun_cri::Error> {
        match self
            .rt
            .list_pod_sandbox_stats(ListPodSandboxStatsRequest::default())
            .await
        {
            Ok(r) => Ok(r.stats),
            // A runtime without stats: no pod usage, the node's still counts.
            Err(bosun_cri::Error::Unimplemented(_)) => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    /// The `/stats/summary` document.
    pub async fn summary(&self) -> Result<Value, bosun_cri::Error> {
        let now = now_nanos();
        let n = node_usage(&self.dir);
        let node_rate = self.rate("", now, n.cpu_nanos);
        let boot = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|t| {
                t.lines()
                    .find_map(|l| l.strip_prefix("btime ")?.trim().parse::<i64>().ok())
            })
            .unwrap_or(0);
        let fs = json!({
            "time": time(now), "availableBytes": n.fs_available, "capacityBytes": n.fs_capacity,
            "usedBytes": n.fs_capacity.saturating_sub(n.fs_available),
            "inodesFree": n.fs_inodes_free, "inodes": n.fs_inodes,
            "inodesUsed": n.fs_inodes.saturating_sub(n.fs_inodes_free),
        });
        let node = json!({
            "nodeName": self.node,
            "startTime": time(boot * 1_000_000_000),
            "cpu": {"time": time(now), "usageNanoCores": node_rate, "usageCoreNanoSeconds": n.cpu_nanos},
            "memory": {"time": time(now), "availableBytes": n.memory_available(),
                       "usageBytes": n.memory_usage, "workingSetBytes": n.memory_working_set,
                       "rssBytes": n.memory_rss, "pageFaults": 0, "majorPageFaults": 0},
            "fs": fs,
            "runtime": {"imageFs": fs},
        });
        let started: HashMap<String, i64> = self
            .rt
            .list_pod_sandbox(ListPodSandboxRequest::default())
            .await?
            .items
            .into_iter()
            .map(|s| (s.id, s.created_at))
            .collect();
        let created = self.container_starts().await?;
        let mut pods = Vec::new();
        for s in self.sandbox_stats().await? {
            let attrs = s.attributes.clone().unwrap_or_default();
            let meta = attrs.metadata.clone().unwrap_or_default();
            let linux = s.linux.clone().unwrap_or_default();
            let mut containers = Vec::new();
            let (mut cpu, mut mem, mut rootfs) = (0u64, 0u64, 0u64);
            for c in &linux.containers {
                let a = c.attributes.clone().unwrap_or_default();
                let name = a
                    .labels
                    .get(CONTAINER_NAME)
                    .cloned()
                    .or_else(|| a.metadata.as_ref().map(|m| m.name.clone()))
                    .unwrap_or_default();
                let c_cpu = c.cpu.unwrap_or_default();
                let c_mem = c.memory.unwrap_or_default();
                let used = v(&c.writable_layer.as_ref().and_then(|w| w.used_bytes));
                let total = v(&c_cpu.usage_core_nano_seconds);
                cpu += total.unwrap_or(0);
                mem += v(&c_mem.working_set_bytes).unwrap_or(0);
                rootfs += used.unwrap_or(0);
                let rate = total.and_then(|t| self.rate(&a.id, c_cpu.timestamp, t));
                containers.push(json!({
                    "name": name,
                    "startTime": time(created.get(&a.id).copied().unwrap_or(now)),
                    "cpu": {"time": time(c_cpu.timestamp), "usageNanoCores": rate,
                            "usageCoreNanoSeconds": total},
                    "memory": {"time": time(c_mem.timestamp), "workingSetBytes": v(&c_mem.working_set_bytes),
                               "usageBytes": v(&c_mem.usage_bytes), "rssBytes": v(&c_mem.rss_bytes),
                               "pageFaults": 0, "majorPageFaults": 0},
                    "rootfs": {"time": time(now), "usedBytes": used,
                               "availableBytes": n.fs_available, "capacityBytes": n.fs_capacity},
                }));
            }
            let rate = self.rate(&attrs.id, now, cpu);
            pods.push(json!({
                "podRef": {"name": meta.name, "namespace": meta.namespace, "uid": meta.uid},
                "startTime": time(started.get(&attrs.id).copied().unwrap_or(now)),
                "containers": containers,
                "cpu": {"time": time(now), "usageNanoCores": rate, "usageCoreNanoSeconds": cpu},
                "memory": {"time": time(now), "workingSetBytes": mem},
                "ephemeral-storage": {"time": time(now), "usedBytes": rootfs,
                                      "availableBytes": n.fs_available, "capacityBytes": n.fs_capacity},
            }));
        }
        // Samples of containers and pods that are gone go.
        let keep: Vec<String> = created.keys().chain(started.keys()).cloned().collect();
        self.samples
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|k, _| k.is_empty() || keep.contains(k));
        Ok(json!({"node": node, "pods": pods}))
    }

    /// `/metrics/resource`: upstream's resource metrics in the Prometheus text format.
    pub async fn resource_metrics(&self) -> Result<String, bosun_cri::Error> {
        let now = now_nanos();
        let ms = now / 1_000_000;
        let n = node_usage(&self.dir);
        let stats = self.sandbox_stats().await?;
        let created = self.container_starts().await?;
        let mut out = String::new();
        let mut family = |name: &str, kind: &str, help: &str, rows: Vec<(String, f64, i64)>| {
            let _ = writeln!(out, "# HELP {name} [STABLE] {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for (labels, value, at) in rows {
                let _ = writeln!(out, "{name}{labels} {value} {at}");
            }
        };
        let mut c_cpu = Vec::new();
        let mut c_mem = Vec::new();
        let mut c_start = Vec::new();
        let mut p_cpu = Vec::new();
        let mut p_mem = Vec::new();
        for s in &stats {
            let attrs = s.attributes.clone().unwrap_or_default();
            let meta = attrs.metadata.clone().unwrap_or_default();
            let pod_labels = format!(
                "{{namespace=\"{}\",pod=\"{}\"}}",
                escape(&meta.namespace),
                escape(&meta.name)
            );
            let (mut cpu, mut mem) = (0u64, 0u64);
            for c in s.linux.iter().flat_map(|l| l.containers.iter()) {
                let a = c.attributes.clone().unwrap_or_default();
                let lbl = |k: &str| a.labels.get(k).cloned().unwrap_or_default();
                let labels = format!(
                    "{{container=\"{}\",namespace=\"{}\",pod=\"{}\"}}",
                    escape(&lbl(CONTAINER_NAME)),
                    escape(&lbl(POD_NAMESPACE)),
                    escape(&lbl(POD_NAME))
                );
                if let Some(u) = c.cpu.as_ref() {
                    let total = v(&u.usage_core_nano_seconds).unwrap_or(0);
                    cpu += total;
                    c_cpu.push((labels.clone(), total as f64 / 1e9, u.timestamp / 1_000_000));
                }
                if let Some(m) = c.memory.as_ref() {
                    let ws = v(&m.working_set_bytes).unwrap_or(0);
                    mem += ws;
                    c_mem.push((labels.clone(), ws as f64, m.timestamp / 1_000_000));
                }
                let started = created.get(&a.id).copied().unwrap_or(0);
                c_start.push((labels, started as f64 / 1e9, ms));
            }
            p_cpu.push((pod_labels.clone(), cpu as f64 / 1e9, ms));
            p_mem.push((pod_labels, mem as f64, ms));
        }
        family(
            "container_cpu_usage_seconds_total",
            "counter",
            "Cumulative cpu time consumed by the container in core-seconds",
            c_cpu,
        );
        family(
            "container_memory_working_set_bytes",
            "gauge",
            "Current working set of the container in bytes",
            c_mem,
        );
        family(
            "container_start_time_seconds",
            "gauge",
            "Start time of the container since unix epoch in seconds",
            c_start,
        );
        family(
            "node_cpu_usage_seconds_total",
            "counter",
            "Cumulative cpu time consumed by the node in core-seconds",
            vec![(String::new(), n.cpu_nanos as f64 / 1e9, ms)],
        );
        family(
            "node_memory_working_set_bytes",
            "gauge",
            "Current working set of the node in bytes",
            vec![(String::new(), n.memory_working_set as f64, ms)],
        );
        family(
            "pod_cpu_usage_seconds_total",
            "counter",
            "Cumulative cpu time consumed by the pod in core-seconds",
            p_cpu,
        );
        family(
            "pod_memory_working_set_bytes",
            "gauge",
            "Current working set of the pod in bytes",
            p_mem,
        );
        let _ = writeln!(
            out,
            "# HELP resource_scrape_error [STABLE] 1 if there was an error while getting container metrics, 0 otherwise"
        );
        let _ = writeln!(out, "# TYPE resource_scrape_error gauge");
        let _ = writeln!(out, "resource_scrape_error 0");
        Ok(out)
    }
}

/// A Prometheus label value, escaped.
fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_kernel_files() {
        let stat = "cpu  100 5 50 1000 20 3 2 1 0 0\ncpu0 1 2 3 4\nbtime 1700000000\n";
        // user+nice+system+irq+softirq+steal = 161 ticks of 10 ms.
        assert_eq!(cpu_nanos(stat), Some(1_610_000_000));
        assert_eq!(cpu_nanos("nothing"), None);
        let meminfo = "MemTotal:       1000 kB\nMemFree:         200 kB\nMemAvailable:    700 kB\nInactive(file):  300 kB\nAnonPages:       100 kB\n";
        assert_eq!(
            memory(meminfo),
            (1_024_000, 819_200, 512_000, 102_400),
            "capacity, usage, working set, rss"
        );
        let n = node_usage(Path::new("/"));
        assert!(n.memory_capacity > 0 && n.fs_capacity > 0 && n.cpu_nanos > 0);
        assert!(n.memory_available() <= n.memory_capacity);
    }

    #[test]
    fn cpu_rates_come_from_the_previous_sample() {
        let rt: Arc<dyn RuntimeService> =
            Arc::new(bosun_cri::simulated::SimulatedRuntime::default());
        let s = Stats::new(rt, "n".into(), "/".into());
        assert_eq!(s.rate("c", 1_000_000_000, 10), None);
        // Half a core over one second.
        assert_eq!(s.rate("c", 2_000_000_000, 500_000_010), Some(500_000_000));
        assert_eq!(escape("a\"b\\c"), "a\\\"b\\\\c");
    }
}
