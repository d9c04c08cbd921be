//! [`BuiltinRuntime`]: the CRI RuntimeService (and, through its [`ImageStore`], the
//! ImageService) on this machine's kernel: sandboxes are namespaces held by bind mounts and
//! attached to the pod network by a [`NetworkPlugin`] (CNI), containers are overlay root
//! filesystems over image snapshots run by runc, each watched by its own [`shim`](super::shim)
//! process so it keeps running and logging while the runtime restarts.
//!
//! State lives in files: `root` (persistent) keeps each sandbox's and container's record,
//! CRI config, writable layer and exit record; `state` (volatile, e.g. under /run) keeps the
//! namespace files, runc's state, bundles and control sockets. [`BuiltinRuntime::open`] reads
//! them back, so a restarted runtime finds its sandboxes and running containers again.

use super::images::{normalize, ImageRecord, ImageStore};
use super::sandbox::Namespaces;
use super::shim::{now_nanos, write_atomic, ExitRecord, ShimArgs, ShimReply};
use super::spec;
use crate::streaming::{StreamIo, StreamingRuntime, StreamingServer};
use crate::v1::*;
use crate::{matches_labels, Error, ImageService, Result, RuntimeService};
use async_trait::async_trait;
use bosun_cni::{Attachment, NetworkPlugin};
use prost::Message;
use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

/// How the runtime is set up.
#[derive(Clone)]
pub struct BuiltinConfig {
    /// Persistent state (records, writable layers, images under `root/images`).
    pub root: PathBuf,
    /// Volatile state (namespaces, runc state, bundles, sockets), e.g. `/run/bosun/cri`.
    pub state: PathBuf,
    /// The OCI runtime binary.
    pub runc: PathBuf,
    /// The shim command: a program and the arguments before the shim's own
    /// (`[bosun, cri-shim]`, or the `bosun-cri-shim` binary alone).
    pub shim: Vec<PathBuf>,
    /// The cgroup parent for sandboxes whose config names none.
    pub cgroup_parent: String,
    /// The pod network; `None` leaves pods with only a loopback interface.
    pub network: Option<Arc<dyn NetworkPlugin>>,
    /// How images are pulled.
    pub registry: super::registry::RegistryConfig,
    /// A pod network the runtime writes itself once the kubelet tells it the node's pod CIDR
    /// (UpdateRuntimeConfig), as containerd does from its conflist template; used when
    /// `network` is `None`.
    pub cni: Option<CniSetup>,
}

/// Where the runtime keeps the bridge network it configures for the node's pod CIDR.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CniSetup {
    /// Where the conflist is written (`10-bosun.conflist`).
    pub conf_dir: PathBuf,
    /// The plugin binaries (`/usr/lib/cni`).
    pub bin_dirs: Vec<PathBuf>,
    /// Cached results and host-local's leases.
    pub cache_dir: PathBuf,
    /// The network's name.
    pub name: String,
    /// The Linux bridge.
    pub bridge: String,
}

impl CniSetup {
    /// The conflist for `pod_cidr`: bridge (gateway, masquerade, hairpin) with host-local
    /// addresses from the range, loopback, and portmap for hostPorts.
    pub fn conflist(&self, pod_cidr: &str) -> serde_json::Value {
        serde_json::json!({
            "cniVersion": "1.0.0",
            "name": self.name,
            "plugins": [
                {"type": "bridge", "bridge": self.bridge, "isGateway": true, "ipMasq": true,
                 "hairpinMode": true,
                 "ipam": {"type": "host-local", "dataDir": self.cache_dir.join("networks"),
                          "ranges": [[{"subnet": pod_cidr}]], "routes": [{"dst": "0.0.0.0/0"}]}},
                {"type": "portmap", "capabilities": {"portMappings": true}},
            ],
        })
    }

    fn path(&self) -> PathBuf {
        self.conf_dir.join("10-bosun.conflist")
    }

    /// The network, if a conflist has been written.
    fn load(&self) -> Option<Arc<dyn NetworkPlugin>> {
        let list = bosun_cni::NetworkConfigList::from_file(&self.path()).ok()?;
        Some(Arc::new(bosun_cni::CniNetwork::new(
            list,
            self.bin_dirs.clone(),
            self.cache_dir.clone(),
        )))
    }
}

impl std::fmt::Debug for BuiltinConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BuiltinConfig")
            .field("root", &self.root)
            .field("state", &self.state)
            .field("runc", &self.runc)
            .field("shim", &self.shim)
            .field("cgroup_parent", &self.cgroup_parent)
            .field(
                "network",
                &self.network.as_ref().map(|n| n.name().to_string()),
            )
            .finish()
    }
}

impl BuiltinConfig {
    /// Defaults: runc from `PATH` (or `/usr/sbin/runc`), the shim as `bosun-cri-shim` next to
    /// the current executable, cgroup parent `/bosun`, no network.
    pub fn new(root: impl Into<PathBuf>, state: impl Into<PathBuf>) -> Self {
        let runc = std::env::var_os("PATH")
            .and_then(|p| {
                std::env::split_paths(&p)
                    .map(|d| d.join("runc"))
                    .find(|p| p.is_file())
            })
            .unwrap_or_else(|| PathBuf::from("/usr/sbin/runc"));
        let shim = std::env::current_exe()
            .ok()
            .and_then(|e| Some(e.parent()?.join("bosun-cri-shim")))
            .unwrap_or_else(|| PathBuf::from("bosun-cri-shim"));
        BuiltinConfig {
            root: root.into(),
            state: state.into(),
            runc,
            shim: vec![shim],
            cgroup_parent: "/bosun".into(),
            network: None,
            registry: Default::default(),
            cni: None,
        }
    }
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct SandboxRecord {
    id: String,
    created_at: i64,
    ready: bool,
    ips: Vec<String>,
    cgroup_parent: String,
    /// Whether the runtime made the cgroup parent (and so removes it).
    own_cgroup: bool,
    host_network: bool,
}

struct Sandbox {
    rec: SandboxRecord,
    config: PodSandboxConfig,
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct ContainerRecord {
    id: String,
    sandbox_id: String,
    created_at: i64,
    started_at: i64,
    image_id: String,
    image_name: String,
    log_path: String,
    cgroups_path: String,
    shim_pid: i32,
}

struct Container {
    rec: ContainerRecord,
    config: ContainerConfig,
}

#[derive(Default)]
struct Inner {
    sandboxes: HashMap<String, Sandbox>,
    containers: HashMap<String, Container>,
}

/// The built-in runtime.
pub struct BuiltinRuntime {
    cfg: BuiltinConfig,
    images: Arc<ImageStore>,
    inner: Mutex<Inner>,
    streaming: std::sync::OnceLock<Arc<StreamingServer>>,
    network: std::sync::RwLock<Option<Arc<dyn NetworkPlugin>>>,
    /// One stop or removal of a sandbox at a time (a second caller finds it done).
    sandbox_ops: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

fn internal(what: impl std::fmt::Display, e: impl std::fmt::Display) -> Error {
    Error::Internal(format!("{what}: {e}"))
}

fn new_id() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

fn write_json(path: &Path, v: &impl serde::Serialize) -> Result<()> {
    let bytes = serde_json::to_vec(v).map_err(|e| internal("encoding a record", e))?;
    write_atomic(path, &bytes).map_err(|e| internal(format!("writing {}", path.display()), e))
}

fn read_record<T: serde::de::DeserializeOwned, M: Message + Default>(dir: &Path) -> Option<(T, M)> {
    let rec = serde_json::from_slice(&std::fs::read(dir.join("record.json")).ok()?).ok()?;
    let config = M::decode(std::fs::read(dir.join("config.pb")).ok()?.as_slice()).ok()?;
    Some((rec, config))
}

fn remove_dir(p: &Path) -> Result<()> {
    match std::fs::remove_dir_all(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(internal(format!("removing {}", p.display()), e)),
    }
}

fn unmount(p: &Path) {
    match rustix::mount::unmount(p, rustix::mount::UnmountFlags::DETACH) {
        Ok(()) | Err(rustix::io::Errno::INVAL) | Err(rustix::io::Errno::NOENT) => {}
        Err(e) => tracing::warn!(path = %p.display(), error = %e, "unmounting"),
    }
}

/// The cgroup hierarchies' mount points (`/sys/fs/cgroup/<controller>` on v1, the root on v2).
fn cgroup_hierarchies() -> Vec<PathBuf> {
    let root = Path::new("/sys/fs/cgroup");
    if root.join("cgroup.controllers").exists() {
        return vec![root.to_path_buf()];
    }
    std::fs::read_dir(root)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

/// The directory of cgroup `path` for `controller` (v1), or in the unified hierarchy (v2).
fn cgroup_dir(controller: &str, path: &str) -> PathBuf {
    let root = Path::new("/sys/fs/cgroup");
    let rel = path.trim_start_matches('/');
    if root.join("cgroup.controllers").exists() {
        root.join(rel)
    } else {
        root.join(controller).join(rel)
    }
}

fn read_u64(p: &Path) -> Option<u64> {
    std::fs::read_to_string(p).ok()?.trim().parse().ok()
}

/// The size of the files under `dir` (the writable layer).
fn dir_usage(dir: &Path) -> (u64, u64) {
    let (mut bytes, mut inodes) = (0u64, 0u64);
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            inodes += 1;
            if let Ok(m) = e.metadata() {
                if m.is_dir() {
                    stack.push(e.path());
                } else {
                    bytes += m.len();
                }
            }
        }
    }
    (bytes, inodes)
}

fn resolv_conf(dns: Option<&DnsConfig>) -> String {
    match dns.filter(|d| !d.servers.is_empty() || !d.searches.is_empty()) {
        Some(d) => {
            let mut s = String::new();
            if !d.searches.is_empty() {
                s.push_str(&format!("search {}\n", d.searches.join(" ")));
            }
            for n in &d.servers {
                s.push_str(&format!("nameserver {n}\n"));
            }
            if !d.options.is_empty() {
                s.push_str(&format!("options {}\n", d.options.join(" ")));
            }
            s
        }
        None => std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
    }
}

impl BuiltinRuntime {
    /// Opens the runtime: the image store under `root/images`, and every sandbox and
    /// container recorded by an earlier run.
    pub fn open(cfg: BuiltinConfig) -> Result<Self> {
        for d in [
            cfg.root.join("sandboxes"),
            cfg.root.join("containers"),
            cfg.state.join("sandboxes"),
            cfg.state.join("containers"),
            cfg.state.join("runc"),
            cfg.state.join("sock"),
        ] {
            std::fs::create_dir_all(&d)
                .map_err(|e| internal(format!("creating {}", d.display()), e))?;
        }
        let images = Arc::new(ImageStore::open(cfg.root.join("images"))?);
        // Tarballs dropped into the image directory (an air-gapped node's images).
        images.import_dropped();
        let mut inner = Inner::default();
        for e in std::fs::read_dir(cfg.root.join("sandboxes"))
            .map_err(|e| internal("reading sandboxes", e))?
            .flatten()
        {
            if let Some((mut rec, config)) =
                read_record::<SandboxRecord, PodSandboxConfig>(&e.path())
            {
                let ns = Namespaces {
                    dir: cfg.state.join("sandboxes").join(&rec.id),
                };
                if rec.ready && !ns.alive() {
                    // The machine restarted: the namespaces are gone.
                    rec.ready = false;
                }
                inner
                    .sandboxes
                    .insert(rec.id.clone(), Sandbox { rec, config });
            }
        }
        for e in std::fs::read_dir(cfg.root.join("containers"))
            .map_err(|e| internal("reading containers", e))?
            .flatten()
        {
            if let Some((rec, config)) = read_record::<ContainerRecord, ContainerConfig>(&e.path())
            {
                inner
                    .containers
                    .insert(rec.id.clone(), Container { rec, config });
            }
        }
        tracing::info!(
            sandboxes = inner.sandboxes.len(),
            containers = inner.containers.len(),
            "built-in runtime opened"
        );
        Ok(BuiltinRuntime {
            images,
            inner: Mutex::new(inner),
            sandbox_ops: Mutex::default(),
            streaming: std::sync::OnceLock::new(),
            network: std::sync::RwLock::new(
                cfg.network
                    .clone()
                    .or_else(|| cfg.cni.as_ref().and_then(CniSetup::load)),
            ),
            cfg,
        })
    }

    /// The image store.
    pub fn images(&self) -> &Arc<ImageStore> {
        &self.images
    }

    /// The pod network in use, if any.
    pub fn network(&self) -> Option<Arc<dyn NetworkPlugin>> {
        self.network
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The lock that orders stops and removals of sandbox `id`.
    fn sandbox_op(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.sandbox_ops
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(id.to_string())
            .or_default()
            .clone()
    }

    fn sandbox_dir(&self, id: &str) -> PathBuf {
        self.cfg.root.join("sandboxes").join(id)
    }

    fn namespaces(&self, id: &str) -> Namespaces {
        Namespaces {
            dir: self.cfg.state.join("sandboxes").join(id),
        }
    }

    fn container_dir(&self, id: &str) -> PathBuf {
        self.cfg.root.join("containers").join(id)
    }

    fn bundle(&self, id: &str) -> PathBuf {
        self.cfg.state.join("containers").join(id)
    }

    fn socket(&self, id: &str) -> PathBuf {
        // Unix socket paths are limited to 108 bytes: a short name.
        self.cfg.state.join("sock").join(&id[..id.len().min(16)])
    }

    fn exit_record(&self, id: &str) -> Option<ExitRecord> {
        serde_json::from_slice(&std::fs::read(self.container_dir(id).join("exit.json")).ok()?).ok()
    }

    fn init_pid(&self, id: &str) -> Option<i32> {
        std::fs::read_to_string(self.bundle(id).join("pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// The container's state, exit record and reason.
    fn container_state(&self, c: &ContainerRecord) -> (ContainerState, Option<ExitRecord>) {
        if let Some(exit) = self.exit_record(&c.id) {
            return (ContainerState::ContainerExited, Some(exit));
        }
        if c.started_at == 0 {
            return (ContainerState::ContainerCreated, None);
        }
        // Running, unless both its init and its shim vanished without an exit record
        // (a machine restart).
        let alive = |pid: i32| pid > 0 && Path::new(&format!("/proc/{pid}")).exists();
        if self.init_pid(&c.id).is_some_and(alive) || alive(c.shim_pid) {
            (ContainerState::ContainerRunning, None)
        } else {
            (
                ContainerState::ContainerExited,
                Some(ExitRecord {
                    exit_code: 255,
                    finished_at: 0,
                    oom_killed: false,
                }),
            )
        }
    }

    fn persist_sandbox(&self, s: &Sandbox) -> Result<()> {
        let dir = self.sandbox_dir(&s.rec.id);
        write_json(&dir.join("record.json"), &s.rec)
    }

    fn persist_container(&self, c: &Container) -> Result<()> {
        write_json(&self.container_dir(&c.rec.id).join("record.json"), &c.rec)
    }

    async fn runc(&self, args: &[&str]) -> Result<std::process::Output> {
        tokio::process::Command::new(&self.cfg.runc)
            .arg("--root")
            .arg(self.cfg.state.join("runc"))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|e| internal(format!("running {}", self.cfg.runc.display()), e))
    }

    async fn runc_ok(&self, args: &[&str]) -> Result<()> {
        let out = self.runc(args).await?;
        if out.status.success() {
            Ok(())
        } else {
            Err(Error::Internal(format!(
                "runc {}: {}",
                args.first().copied().unwrap_or_default(),
                String::from_utf8_lossy(&out.stderr).trim()
            )))
        }
    }

    /// Waits until the container has an exit record, up to `timeout`.
    async fn wait_exit(&self, id: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.exit_record(id).is_some() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Signals a running container and waits for it to exit, killing it after `timeout`.
    async fn stop(&self, id: &str, timeout: Duration) -> Result<()> {
        let rec = {
            let g = self.lock();
            match g.containers.get(id) {
                Some(c) => c.rec.clone(),
                None => return Err(Error::NotFound(format!("container {id}"))),
            }
        };
        if self.container_state(&rec).0 != ContainerState::ContainerRunning {
            return Ok(());
        }
        if !timeout.is_zero() {
            let _ = self.runc(&["kill", id, "TERM"]).await;
            if self.wait_exit(id, timeout).await {
                return Ok(());
            }
        }
        let _ = self.runc(&["kill", "--all", id, "KILL"]).await;
        if self.wait_exit(id, Duration::from_secs(10)).await {
            Ok(())
        } else {
            Err(Error::DeadlineExceeded(format!(
                "container {id} did not exit after SIGKILL"
            )))
        }
    }

    async fn remove_container_inner(&self, id: &str) -> Result<()> {
        if !self.lock().containers.contains_key(id) {
            return Ok(());
        }
        self.stop(id, Duration::ZERO).await?;
        let out = self.runc(&["delete", "--force", id]).await?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            if !err.contains("does not exist") && !err.contains("not exist") {
                return Err(Error::Internal(format!("runc delete: {}", err.trim())));
            }
        }
        let bundle = self.bundle(id);
        unmount(&bundle.join("rootfs"));
        remove_dir(&bundle)?;
        let _ = std::fs::remove_file(self.socket(id));
        remove_dir(&self.container_dir(id))?;
        self.lock().containers.remove(id);
        Ok(())
    }

    fn container_status_of(&self, c: &Container) -> ContainerStatus {
        let (state, exit) = self.container_state(&c.rec);
        let (exit_code, finished_at, reason) = match &exit {
            Some(e) if e.oom_killed => (e.exit_code, e.finished_at, "OOMKilled"),
            Some(e) if e.exit_code == 0 => (0, e.finished_at, "Completed"),
            Some(e) => (e.exit_code, e.finished_at, "Error"),
            None => (0, 0, ""),
        };
        ContainerStatus {
            id: c.rec.id.clone(),
            metadata: c.config.metadata.clone(),
            state: state as i32,
            created_at: c.rec.created_at,
            started_at: c.rec.started_at,
            finished_at,
            exit_code,
            image: Some(ImageSpec {
                image: c.rec.image_name.clone(),
                ..Default::default()
            }),
            image_ref: c.rec.image_id.clone(),
            image_id: c.rec.image_id.clone(),
            reason: reason.into(),
            labels: c.config.labels.clone(),
            annotations: c.config.annotations.clone(),
            mounts: c.config.mounts.clone(),
            log_path: c.rec.log_path.clone(),
            resources: c
                .config
                .linux
                .as_ref()
                .and_then(|l| l.resources.clone())
                .map(|r| ContainerResources {
                    linux: Some(r),
                    ..Default::default()
                }),
            ..Default::default()
        }
    }

    fn stats_of(&self, c: &Container) -> ContainerStats {
        let now = now_nanos();
        let u = |v: Option<u64>| v.map(|value| UInt64Value { value });
        let cpu = read_u64(&cgroup_dir("cpuacct", &c.rec.cgroups_path).join("cpuacct.usage"))
            .or_else(|| {
                // v2: cpu.stat usage_usec.
                std::fs::read_to_string(cgroup_dir("cpu", &c.rec.cgroups_path).join("cpu.stat"))
                    .ok()?
                    .lines()
                    .find_map(|l| l.strip_prefix("usage_usec ")?.trim().parse::<u64>().ok())
                    .map(|us| us * 1000)
            });
        let mem_dir = cgroup_dir("memory", &c.rec.cgroups_path);
        let usage = read_u64(&mem_dir.join("memory.usage_in_bytes"))
            .or_else(|| read_u64(&mem_dir.join("memory.current")));
        let stat = std::fs::read_to_string(mem_dir.join("memory.stat")).unwrap_or_default();
        let stat_val = |k: &str| {
            stat.lines().find_map(|l| {
                l.strip_prefix(k)?
                    .strip_prefix(' ')?
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
        };
        let inactive = stat_val("total_inactive_file").or_else(|| stat_val("inactive_file"));
        let working = usage.map(|u| u.saturating_sub(inactive.unwrap_or(0)));
        let (bytes, inodes) = dir_usage(&self.container_dir(&c.rec.id).join("upper"));
        ContainerStats {
            attributes: Some(ContainerAttributes {
                id: c.rec.id.clone(),
                metadata: c.config.metadata.clone(),
                labels: c.config.labels.clone(),
                annotations: c.config.annotations.clone(),
            }),
            cpu: Some(CpuUsage {
                timestamp: now,
                usage_core_nano_seconds: u(cpu),
                ..Default::default()
            }),
            memory: Some(MemoryUsage {
                timestamp: now,
                working_set_bytes: u(working),
                usage_bytes: u(usage),
                rss_bytes: u(stat_val("total_rss").or_else(|| stat_val("anon"))),
                ..Default::default()
            }),
            writable_layer: Some(FilesystemUsage {
                timestamp: now,
                fs_id: Some(FilesystemIdentifier {
                    mountpoint: self.cfg.root.display().to_string(),
                }),
                used_bytes: u(Some(bytes)),
                inodes_used: u(Some(inodes)),
            }),
            ..Default::default()
        }
    }

    fn sandbox_status_of(&self, s: &Sandbox) -> PodSandboxStatus {
        let mut ips = s.rec.ips.iter();
        PodSandboxStatus {
            id: s.rec.id.clone(),
            metadata: s.config.metadata.clone(),
            state: if s.rec.ready {
                PodSandboxState::SandboxReady as i32
            } else {
                PodSandboxState::SandboxNotready as i32
            },
            created_at: s.rec.created_at,
            network: Some(PodSandboxNetworkStatus {
                ip: ips.next().cloned().unwrap_or_default(),
                additional_ips: ips.map(|ip| PodIp { ip: ip.clone() }).collect(),
            }),
            linux: Some(LinuxPodSandboxStatus {
                namespaces: Some(Namespace {
                    options: s
                        .config
                        .linux
                        .as_ref()
                        .and_then(|l| l.security_context.as_ref())
                        .and_then(|sc| sc.namespace_options.clone()),
                }),
            }),
            labels: s.config.labels.clone(),
            annotations: s.config.annotations.clone(),
            runtime_handler: String::new(),
        }
    }

    fn attachment(&self, id: &str, config: &PodSandboxConfig) -> Attachment {
        let meta = config.metadata.clone().unwrap_or_default();
        let ports: Vec<serde_json::Value> = config
            .port_mappings
            .iter()
            .filter(|p| p.host_port > 0)
            .map(|p| {
                let proto = match Protocol::try_from(p.protocol).unwrap_or(Protocol::Tcp) {
                    Protocol::Tcp => "tcp",
                    Protocol::Udp => "udp",
                    Protocol::Sctp => "sctp",
                };
                serde_json::json!({"hostPort": p.host_port, "containerPort": p.container_port,
                                   "protocol": proto, "hostIP": p.host_ip})
            })
            .collect();
        let mut att = Attachment::new(id, self.namespaces(id).net())
            .arg("K8S_POD_NAMESPACE", meta.namespace)
            .arg("K8S_POD_NAME", meta.name)
            .arg("K8S_POD_INFRA_CONTAINER_ID", id)
            .arg("K8S_POD_UID", meta.uid);
        if !ports.is_empty() {
            att = att.capability("portMappings", serde_json::Value::Array(ports));
        }
        att
    }

    /// Tears a sandbox's network and namespaces down (idempotent).
    async fn stop_sandbox_inner(&self, id: &str) -> Result<()> {
        let (config, host_network) = {
            let g = self.lock();
            let s = g
                .sandboxes
                .get(id)
                .ok_or_else(|| Error::NotFound(format!("pod sandbox {id}")))?;
            if !s.rec.ready {
                // Stopped already: its containers and network are gone.
                return Ok(());
            }
            (s.config.clone(), s.rec.host_network)
        };
        let ids: Vec<String> = self
            .lock()
            .containers
            .values()
            .filter(|c| c.rec.sandbox_id == id)
            .map(|c| c.rec.id.clone())
            .collect();
        for c in ids {
            self.stop(&c, Duration::ZERO).await?;
        }
        if let (Some(net), false) = (&self.network(), host_network) {
            net.del(&self.attachment(id, &config))
                .await
                .map_err(|e| internal("detaching the pod network", e))?;
        }
        self.namespaces(id).remove()?;
        let mut g = self.lock();
        if let Some(s) = g.sandboxes.get_mut(id) {
            s.rec.ready = false;
            let s = &*s;
            self.persist_sandbox(s)?;
        }
        Ok(())
    }
}

/// A CRI container log path: `log_directory/log_path` (empty if either is unset).
fn log_path(sb: &PodSandboxConfig, c: &ContainerConfig) -> String {
    if sb.log_directory.is_empty() || c.log_path.is_empty() {
        return String::new();
    }
    Path::new(&sb.log_directory)
        .join(&c.log_path)
        .display()
        .to_string()
}

/// A short reading of one line from a child's stdout, with a deadline.
async fn read_reply(stdout: tokio::process::ChildStdout, timeout: Duration) -> Result<ShimReply> {
    let mut line = String::new();
    let mut r = tokio::io::BufReader::new(stdout);
    match tokio::time::timeout(timeout, r.read_line(&mut line)).await {
        Ok(Ok(n)) if n > 0 => serde_json::from_str(line.trim())
            .map_err(|e| internal(format!("shim answered {line:?}"), e)),
        Ok(Ok(_)) => Err(Error::Internal("the shim exited without answering".into())),
        Ok(Err(e)) => Err(internal("reading the shim's answer", e)),
        Err(_) => Err(Error::DeadlineExceeded("the shim did not answer".into())),
    }
}

#[async_trait]
impl RuntimeService for BuiltinRuntime {
    async fn version(&self, _: VersionRequest) -> Result<VersionResponse> {
        Ok(VersionResponse {
            version: "0.1.0".into(),
            runtime_name: "bosun".into(),
            runtime_version: env!("CARGO_PKG_VERSION").into(),
            runtime_api_version: crate::API_VERSION.into(),
        })
    }

    async fn run_pod_sandbox(&self, req: RunPodSandboxRequest) -> Result<RunPodSandboxResponse> {
        let config = req
            .config
            .ok_or_else(|| Error::InvalidArgument("config is required".into()))?;
        let meta = config
            .metadata
            .clone()
            .ok_or_else(|| Error::InvalidArgument("metadata is required".into()))?;
        if meta.name.is_empty() {
            return Err(Error::InvalidArgument("metadata.name is required".into()));
        }
        let host_network = config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .and_then(|s| s.namespace_options.as_ref())
            .is_some_and(|o| o.network == NamespaceMode::Node as i32);
        let id = new_id();
        let hostname = if config.hostname.is_empty() {
            meta.name.clone()
        } else {
            config.hostname.clone()
        };
        let dir = self.sandbox_dir(&id);
        std::fs::create_dir_all(&dir).map_err(|e| internal("creating the sandbox directory", e))?;
        let ns = match Namespaces::create(&self.namespaces(&id).dir, &hostname) {
            Ok(ns) => ns,
            Err(e) => {
                let _ = remove_dir(&dir);
                return Err(e);
            }
        };
        let cleanup = |e: Error| {
            let _ = ns.remove();
            let _ = remove_dir(&dir);
            e
        };
        let files = [
            ("resolv.conf", resolv_conf(config.dns_config.as_ref())),
            ("hostname", format!("{hostname}\n")),
        ];
        for (name, text) in files {
            std::fs::write(dir.join(name), text)
                .map_err(|e| cleanup(internal(format!("writing {name}"), e)))?;
        }
        std::fs::write(dir.join("config.pb"), config.encode_to_vec())
            .map_err(|e| cleanup(internal("writing the sandbox config", e)))?;
        let mut ips = Vec::new();
        if let (Some(net), false) = (&self.network(), host_network) {
            match net.add(&self.attachment(&id, &config)).await {
                Ok(r) => ips = r.pod_ips().iter().map(|ip| ip.to_string()).collect(),
                Err(e) => return Err(cleanup(internal("attaching the pod network", e))),
            }
        }
        let parent = config
            .linux
            .as_ref()
            .map(|l| l.cgroup_parent.clone())
            .unwrap_or_default();
        let own_cgroup = parent.is_empty();
        let sandbox = Sandbox {
            rec: SandboxRecord {
                id: id.clone(),
                created_at: now_nanos(),
                ready: true,
                ips,
                cgroup_parent: if own_cgroup {
                    format!("{}/{id}", self.cfg.cgroup_parent.trim_end_matches('/'))
                } else {
                    parent
                },
                own_cgroup,
                host_network,
            },
            config,
        };
        if let Err(e) = self.persist_sandbox(&sandbox) {
            if let Some(net) = &self.network() {
                let _ = net.del(&self.attachment(&id, &sandbox.config)).await;
            }
            return Err(cleanup(e));
        }
        tracing::debug!(sandbox = %id, name = %meta.name, "sandbox ready");
        self.lock().sandboxes.insert(id.clone(), sandbox);
        Ok(RunPodSandboxResponse { pod_sandbox_id: id })
    }

    async fn stop_pod_sandbox(&self, req: StopPodSandboxRequest) -> Result<StopPodSandboxResponse> {
        let op = self.sandbox_op(&req.pod_sandbox_id);
        let _one_at_a_time = op.lock().await;
        match self.stop_sandbox_inner(&req.pod_sandbox_id).await {
            Ok(()) | Err(Error::NotFound(_)) => Ok(StopPodSandboxResponse {}),
            Err(e) => Err(e),
        }
    }

    async fn remove_pod_sandbox(
        &self,
        req: RemovePodSandboxRequest,
    ) -> Result<RemovePodSandboxResponse> {
        let id = req.pod_sandbox_id;
        let op = self.sandbox_op(&id);
        let _one_at_a_time = op.lock().await;
        let Some((ready, parent, own)) = self
            .lock()
            .sandboxes
            .get(&id)
            .map(|s| (s.rec.ready, s.rec.cgroup_parent.clone(), s.rec.own_cgroup))
        else {
            return Ok(RemovePodSandboxResponse {});
        };
        if ready {
            self.stop_sandbox_inner(&id).await?;
        }
        let ids: Vec<String> = self
            .lock()
            .containers
            .values()
            .filter(|c| c.rec.sandbox_id == id)
            .map(|c| c.rec.id.clone())
            .collect();
        for c in ids {
            self.remove_container_inner(&c).await?;
        }
        if own {
            for h in cgroup_hierarchies() {
                let _ = std::fs::remove_dir(h.join(parent.trim_start_matches('/')));
            }
        }
        self.namespaces(&id).remove()?;
        remove_dir(&self.sandbox_dir(&id))?;
        self.lock().sandboxes.remove(&id);
        self.sandbox_ops
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
        Ok(RemovePodSandboxResponse {})
    }

    async fn pod_sandbox_status(
        &self,
        req: PodSandboxStatusRequest,
    ) -> Result<PodSandboxStatusResponse> {
        let g = self.lock();
        let s = g
            .sandboxes
            .get(&req.pod_sandbox_id)
            .ok_or_else(|| Error::NotFound(format!("pod sandbox {}", req.pod_sandbox_id)))?;
        let containers_statuses = g
            .containers
            .values()
            .filter(|c| c.rec.sandbox_id == s.rec.id)
            .map(|c| self.container_status_of(c))
            .collect();
        Ok(PodSandboxStatusResponse {
            status: Some(self.sandbox_status_of(s)),
            containers_statuses,
            timestamp: now_nanos(),
            ..Default::default()
        })
    }

    async fn list_pod_sandbox(&self, req: ListPodSandboxRequest) -> Result<ListPodSandboxResponse> {
        let f = req.filter.unwrap_or_default();
        let g = self.lock();
        let items = g
            .sandboxes
            .values()
            .filter(|s| f.id.is_empty() || s.rec.id.starts_with(&f.id))
            .filter(|s| {
                f.state.as_ref().is_none_or(|st| {
                    (st.state == PodSandboxState::SandboxReady as i32) == s.rec.ready
                })
            })
            .filter(|s| matches_labels(&s.config.labels, &f.label_selector))
            .map(|s| PodSandbox {
                id: s.rec.id.clone(),
                metadata: s.config.metadata.clone(),
                state: if s.rec.ready {
                    PodSandboxState::SandboxReady as i32
                } else {
                    PodSandboxState::SandboxNotready as i32
                },
                created_at: s.rec.created_at,
                labels: s.config.labels.clone(),
                annotations: s.config.annotations.clone(),
                runtime_handler: String::new(),
            })
            .collect();
        Ok(ListPodSandboxResponse { items })
    }

    async fn create_container(
        &self,
        req: CreateContainerRequest,
    ) -> Result<CreateContainerResponse> {
        let mut config = req
            .config
            .ok_or_else(|| Error::InvalidArgument("config is required".into()))?;
        let meta = config
            .metadata
            .clone()
            .ok_or_else(|| Error::InvalidArgument("metadata is required".into()))?;
        let (sb_config, sb_rec) = {
            let g = self.lock();
            let s = g
                .sandboxes
                .get(&req.pod_sandbox_id)
                .ok_or_else(|| Error::NotFound(format!("pod sandbox {}", req.pod_sandbox_id)))?;
            if !s.rec.ready {
                return Err(Error::FailedPrecondition(format!(
                    "pod sandbox {} is not ready",
                    req.pod_sandbox_id
                )));
            }
            let taken = g.containers.values().any(|c| {
                c.rec.sandbox_id == s.rec.id
                    && c.config
                        .metadata
                        .as_ref()
                        .is_some_and(|m| m.name == meta.name && m.attempt == meta.attempt)
            });
            if taken {
                return Err(Error::AlreadyExists(format!(
                    "container {} attempt {} in sandbox {}",
                    meta.name, meta.attempt, s.rec.id
                )));
            }
            (s.config.clone(), s.rec.clone())
        };
        let image_name = config
            .image
            .as_ref()
            .map(|i| i.image.clone())
            .unwrap_or_default();
        let image: ImageRecord = self
            .images
            .resolve(&image_name)
            .ok_or_else(|| Error::NotFound(format!("image {image_name:?} is not present")))?;
        let id = new_id();
        let dir = self.container_dir(&id);
        let bundle = self.bundle(&id);
        let rootfs = bundle.join("rootfs");
        for d in [dir.join("upper"), dir.join("work"), rootfs.clone()] {
            std::fs::create_dir_all(&d)
                .map_err(|e| internal(format!("creating {}", d.display()), e))?;
        }
        let cleanup = |e: Error| {
            unmount(&rootfs);
            let _ = remove_dir(&bundle);
            let _ = remove_dir(&dir);
            e
        };
        let lower: Vec<String> = self
            .images
            .lower_dirs(&image)
            .map_err(cleanup)?
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        let opts = format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.join(":"),
            dir.join("upper").display(),
            dir.join("work").display()
        );
        let data =
            std::ffi::CString::new(opts).map_err(|e| cleanup(internal("overlay options", e)))?;
        rustix::mount::mount(
            "overlay",
            &rootfs,
            "overlay",
            rustix::mount::MountFlags::empty(),
            Some(data.as_c_str()),
        )
        .map_err(|e| cleanup(internal("mounting the container's root filesystem", e)))?;
        // The sandbox's resolv.conf and hostname, unless the kubelet mounts its own.
        let sb_dir = self.sandbox_dir(&sb_rec.id);
        for (file, target) in [
            ("resolv.conf", "/etc/resolv.conf"),
            ("hostname", "/etc/hostname"),
        ] {
            if sb_rec.host_network && file == "hostname" {
                continue;
            }
            if !config.mounts.iter().any(|m| m.container_path == target) {
                config.mounts.push(Mount {
                    container_path: target.into(),
                    host_path: sb_dir.join(file).display().to_string(),
                    readonly: false,
                    ..Default::default()
                });
            }
        }
        let cgroups_path = format!("{}/{id}", sb_rec.cgroup_parent.trim_end_matches('/'));
        let ns = self.namespaces(&sb_rec.id);
        let mut oci = spec::generate(
            &sb_config,
            &ns,
            &config,
            &image.config,
            &rootfs,
            &cgroups_path,
        )
        .map_err(cleanup)?;
        // No terminal yet: the container's output goes to its log.
        if let Some(p) = oci.process_mut().as_mut() {
            p.set_terminal(Some(false));
        }
        oci.save(bundle.join("config.json"))
            .map_err(|e| cleanup(internal("writing config.json", e)))?;
        std::fs::write(dir.join("config.pb"), config.encode_to_vec())
            .map_err(|e| cleanup(internal("writing the container config", e)))?;
        let log = log_path(&sb_config, &config);
        let memory_cgroup = if sb_rec.cgroup_parent.is_empty() {
            PathBuf::new()
        } else {
            cgroup_dir("memory", &cgroups_path)
        };
        let args = ShimArgs {
            runc: self.cfg.runc.clone(),
            runc_root: self.cfg.state.join("runc"),
            bundle: bundle.clone(),
            id: id.clone(),
            log: PathBuf::from(&log),
            pid_file: bundle.join("pid"),
            exit_file: dir.join("exit.json"),
            socket: self.socket(&id),
            memory_cgroup,
            stdin: config.stdin,
            stdin_once: config.stdin_once,
        };
        let (program, pre) = self
            .cfg
            .shim
            .split_first()
            .ok_or_else(|| cleanup(Error::Internal("no shim command configured".into())))?;
        let shim_err = std::fs::File::create(bundle.join("shim.log"))
            .map_err(|e| cleanup(internal("creating shim.log", e)))?;
        let mut child = tokio::process::Command::new(program)
            .args(pre)
            .args(args.to_args())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(shim_err)
            // Its own process group: signals to the runtime's group do not reach it.
            .process_group(0)
            .spawn()
            .map_err(|e| {
                cleanup(internal(
                    format!("starting the shim {}", program.display()),
                    e,
                ))
            })?;
        let shim_pid = child.id().and_then(|p| i32::try_from(p).ok()).unwrap_or(0);
        let reply = match child.stdout.take() {
            Some(out) => read_reply(out, Duration::from_secs(60)).await,
            None => Err(Error::Internal("no pipe to the shim".into())),
        };
        // Reap the shim when it exits (while this process lives).
        tokio::spawn(async move {
            let _ = child.wait().await;
        });
        match reply {
            Ok(ShimReply::Created(_)) => {}
            Ok(ShimReply::Error(e)) => {
                return Err(cleanup(Error::Internal(format!(
                    "creating the container: {e}"
                ))))
            }
            Err(e) => return Err(cleanup(e)),
        }
        let c = Container {
            rec: ContainerRecord {
                id: id.clone(),
                sandbox_id: sb_rec.id.clone(),
                created_at: now_nanos(),
                started_at: 0,
                image_id: image.id.clone(),
                image_name: image
                    .repo_tags
                    .first()
                    .cloned()
                    .unwrap_or_else(|| normalize(&image_name)),
                log_path: log,
                cgroups_path,
                shim_pid,
            },
            config,
        };
        if let Err(e) = self.persist_container(&c) {
            let _ = self.runc(&["delete", "--force", &id]).await;
            return Err(cleanup(e));
        }
        self.lock().containers.insert(id.clone(), c);
        Ok(CreateContainerResponse { container_id: id })
    }

    async fn start_container(&self, req: StartContainerRequest) -> Result<StartContainerResponse> {
        let id = req.container_id;
        let rec = self
            .lock()
            .containers
            .get(&id)
            .map(|c| c.rec.clone())
            .ok_or_else(|| Error::NotFound(format!("container {id}")))?;
        if self.container_state(&rec).0 != ContainerState::ContainerCreated {
            return Err(Error::FailedPrecondition(format!(
                "container {id} is not in the created state"
            )));
        }
        self.runc_ok(&["start", &id]).await?;
        let mut g = self.lock();
        if let Some(c) = g.containers.get_mut(&id) {
            c.rec.started_at = now_nanos();
            let c = &*c;
            self.persist_container(c)?;
        }
        Ok(StartContainerResponse {})
    }

    async fn stop_container(&self, req: StopContainerRequest) -> Result<StopContainerResponse> {
        let timeout = Duration::from_secs(u64::try_from(req.timeout).unwrap_or(0));
        self.stop(&req.container_id, timeout).await?;
        Ok(StopContainerResponse {})
    }

    async fn remove_container(
        &self,
        req: RemoveContainerRequest,
    ) -> Result<RemoveContainerResponse> {
        self.remove_container_inner(&req.container_id).await?;
        Ok(RemoveContainerResponse {})
    }

    async fn list_containers(&self, req: ListContainersRequest) -> Result<ListContainersResponse> {
        let f = req.filter.unwrap_or_default();
        let g = self.lock();
        let containers = g
            .containers
            .values()
            .filter(|c| f.id.is_empty() || c.rec.id.starts_with(&f.id))
            .filter(|c| {
                f.pod_sandbox_id.is_empty() || c.rec.sandbox_id.starts_with(&f.pod_sandbox_id)
            })
            .filter(|c| matches_labels(&c.config.labels, &f.label_selector))
            .map(|c| (c, self.container_state(&c.rec).0))
            .filter(|(_, st)| f.state.as_ref().is_none_or(|want| want.state == *st as i32))
            .map(|(c, st)| crate::v1::Container {
                id: c.rec.id.clone(),
                pod_sandbox_id: c.rec.sandbox_id.clone(),
                metadata: c.config.metadata.clone(),
                image: Some(ImageSpec {
                    image: c.rec.image_name.clone(),
                    ..Default::default()
                }),
                image_ref: c.rec.image_id.clone(),
                image_id: c.rec.image_id.clone(),
                state: st as i32,
                created_at: c.rec.created_at,
                labels: c.config.labels.clone(),
                annotations: c.config.annotations.clone(),
            })
            .collect();
        Ok(ListContainersResponse { containers })
    }

    async fn container_status(
        &self,
        req: ContainerStatusRequest,
    ) -> Result<ContainerStatusResponse> {
        let g = self.lock();
        let c = g
            .containers
            .get(&req.container_id)
            .ok_or_else(|| Error::NotFound(format!("container {}", req.container_id)))?;
        Ok(ContainerStatusResponse {
            status: Some(self.container_status_of(c)),
            ..Default::default()
        })
    }

    async fn update_container_resources(
        &self,
        req: UpdateContainerResourcesRequest,
    ) -> Result<UpdateContainerResourcesResponse> {
        let id = req.container_id;
        if !self.lock().containers.contains_key(&id) {
            return Err(Error::NotFound(format!("container {id}")));
        }
        let Some(r) = req.linux else {
            return Ok(UpdateContainerResourcesResponse {});
        };
        let mut args: Vec<String> = vec!["update".into()];
        let mut push = |flag: &str, v: i64| {
            if v > 0 {
                args.push(format!("--{flag}={v}"));
            }
        };
        push("cpu-period", r.cpu_period);
        push("cpu-quota", r.cpu_quota);
        push("cpu-share", r.cpu_shares);
        push("memory", r.memory_limit_in_bytes);
        if !r.cpuset_cpus.is_empty() {
            args.push(format!("--cpuset-cpus={}", r.cpuset_cpus));
        }
        if !r.cpuset_mems.is_empty() {
            args.push(format!("--cpuset-mems={}", r.cpuset_mems));
        }
        args.push(id.clone());
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        self.runc_ok(&refs).await?;
        let mut g = self.lock();
        if let Some(c) = g.containers.get_mut(&id) {
            c.config
                .linux
                .get_or_insert_with(Default::default)
                .resources = Some(r);
            std::fs::write(
                self.container_dir(&id).join("config.pb"),
                c.config.encode_to_vec(),
            )
            .map_err(|e| internal("writing the container config", e))?;
        }
        Ok(UpdateContainerResourcesResponse {})
    }

    async fn reopen_container_log(
        &self,
        req: ReopenContainerLogRequest,
    ) -> Result<ReopenContainerLogResponse> {
        let id = req.container_id;
        let rec = self
            .lock()
            .containers
            .get(&id)
            .map(|c| c.rec.clone())
            .ok_or_else(|| Error::NotFound(format!("container {id}")))?;
        if self.container_state(&rec).0 != ContainerState::ContainerRunning {
            return Err(Error::FailedPrecondition(format!(
                "container {id} is not running"
            )));
        }
        let socket = self.socket(&id);
        let answer = tokio::task::spawn_blocking(move || -> std::io::Result<String> {
            let mut conn = std::os::unix::net::UnixStream::connect(&socket)?;
            conn.set_read_timeout(Some(Duration::from_secs(10)))?;
            conn.write_all(b"reopen\n")?;
            let mut line = String::new();
            std::io::BufReader::new(conn).read_line(&mut line)?;
            Ok(line.trim().to_string())
        })
        .await
        .map_err(|e| internal("reopening the log", e))?
        .map_err(|e| internal("asking the shim to reopen the log", e))?;
        if answer == "ok" {
            Ok(ReopenContainerLogResponse {})
        } else {
            Err(Error::Internal(format!("reopening the log: {answer}")))
        }
    }

    async fn exec_sync(&self, req: ExecSyncRequest) -> Result<ExecSyncResponse> {
        let id = req.container_id;
        let rec = self
            .lock()
            .containers
            .get(&id)
            .map(|c| c.rec.clone())
            .ok_or_else(|| Error::NotFound(format!("container {id}")))?;
        if self.container_state(&rec).0 != ContainerState::ContainerRunning {
            return Err(Error::FailedPrecondition(format!(
                "container {id} is not running"
            )));
        }
        if req.cmd.is_empty() {
            return Err(Error::InvalidArgument("cmd is required".into()));
        }
        let mut cmd = tokio::process::Command::new(&self.cfg.runc);
        cmd.arg("--root")
            .arg(self.cfg.state.join("runc"))
            .args(["exec", &id])
            .args(&req.cmd)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let out = cmd.output();
        let out = if req.timeout > 0 {
            let t = Duration::from_secs(u64::try_from(req.timeout).unwrap_or(0));
            tokio::time::timeout(t, out)
                .await
                .map_err(|_| Error::DeadlineExceeded(format!("command timed out after {t:?}")))?
        } else {
            out.await
        }
        .map_err(|e| internal("running runc exec", e))?;
        Ok(ExecSyncResponse {
            stdout: out.stdout,
            stderr: out.stderr,
            exit_code: out.status.code().unwrap_or(255),
        })
    }

    async fn exec(&self, req: ExecRequest) -> Result<ExecResponse> {
        self.running(&req.container_id)?;
        self.streaming()?.exec_url(req)
    }

    async fn attach(&self, req: AttachRequest) -> Result<AttachResponse> {
        self.running(&req.container_id)?;
        self.streaming()?.attach_url(req)
    }

    async fn port_forward(&self, req: PortForwardRequest) -> Result<PortForwardResponse> {
        if !self.lock().sandboxes.contains_key(&req.pod_sandbox_id) {
            return Err(Error::NotFound(format!(
                "pod sandbox {}",
                req.pod_sandbox_id
            )));
        }
        self.streaming()?.port_forward_url(req)
    }

    async fn container_stats(&self, req: ContainerStatsRequest) -> Result<ContainerStatsResponse> {
        let g = self.lock();
        let c = g
            .containers
            .get(&req.container_id)
            .ok_or_else(|| Error::NotFound(format!("container {}", req.container_id)))?;
        Ok(ContainerStatsResponse {
            stats: Some(self.stats_of(c)),
        })
    }

    async fn list_container_stats(
        &self,
        req: ListContainerStatsRequest,
    ) -> Result<ListContainerStatsResponse> {
        let f = req.filter.unwrap_or_default();
        let g = self.lock();
        let stats = g
            .containers
            .values()
            .filter(|c| f.id.is_empty() || c.rec.id.starts_with(&f.id))
            .filter(|c| {
                f.pod_sandbox_id.is_empty() || c.rec.sandbox_id.starts_with(&f.pod_sandbox_id)
            })
            .filter(|c| matches_labels(&c.config.labels, &f.label_selector))
            .filter(|c| self.container_state(&c.rec).0 == ContainerState::ContainerRunning)
            .map(|c| self.stats_of(c))
            .collect();
        Ok(ListContainerStatsResponse { stats })
    }

    async fn pod_sandbox_stats(
        &self,
        req: PodSandboxStatsRequest,
    ) -> Result<PodSandboxStatsResponse> {
        let g = self.lock();
        let s = g
            .sandboxes
            .get(&req.pod_sandbox_id)
            .ok_or_else(|| Error::NotFound(format!("pod sandbox {}", req.pod_sandbox_id)))?;
        Ok(PodSandboxStatsResponse {
            stats: Some(self.sandbox_stats(&g, s)),
        })
    }

    async fn list_pod_sandbox_stats(
        &self,
        req: ListPodSandboxStatsRequest,
    ) -> Result<ListPodSandboxStatsResponse> {
        let f = req.filter.unwrap_or_default();
        let g = self.lock();
        let stats = g
            .sandboxes
            .values()
            .filter(|s| f.id.is_empty() || s.rec.id.starts_with(&f.id))
            .filter(|s| matches_labels(&s.config.labels, &f.label_selector))
            .map(|s| self.sandbox_stats(&g, s))
            .collect();
        Ok(ListPodSandboxStatsResponse { stats })
    }

    async fn update_runtime_config(
        &self,
        req: UpdateRuntimeConfigRequest,
    ) -> Result<UpdateRuntimeConfigResponse> {
        let cidr = req
            .runtime_config
            .and_then(|c| c.network_config)
            .map(|n| n.pod_cidr)
            .unwrap_or_default();
        let (Some(setup), false) = (&self.cfg.cni, cidr.is_empty()) else {
            return Ok(UpdateRuntimeConfigResponse {});
        };
        // The first range in a comma-separated list (dual-stack: IPv4 first).
        let cidr = cidr
            .split(',')
            .next()
            .unwrap_or_default()
            .trim()
            .to_string();
        let bytes = serde_json::to_vec_pretty(&setup.conflist(&cidr))
            .map_err(|e| internal("encoding the conflist", e))?;
        std::fs::create_dir_all(&setup.conf_dir)
            .map_err(|e| internal(format!("creating {}", setup.conf_dir.display()), e))?;
        let unchanged = std::fs::read(setup.path()).is_ok_and(|b| b == bytes);
        if !unchanged {
            write_atomic(&setup.path(), &bytes)
                .map_err(|e| internal(format!("writing {}", setup.path().display()), e))?;
            tracing::info!(pod_cidr = %cidr, conflist = %setup.path().display(), "pod network configured");
        }
        let net = setup
            .load()
            .ok_or_else(|| Error::Internal("the written conflist does not load".into()))?;
        *self.network.write().unwrap_or_else(|e| e.into_inner()) = Some(net);
        Ok(UpdateRuntimeConfigResponse {})
    }

    async fn status(&self, _: StatusRequest) -> Result<StatusResponse> {
        let runtime_ready = self.cfg.runc.is_file();
        let network = match &self.network() {
            Some(n) => n.status().await.map_err(|e| e.to_string()),
            None if self.cfg.cni.is_some() => {
                Err("cni config uninitialized: waiting for the node's pod CIDR".to_string())
            }
            None => Ok(()),
        };
        let cond = |t: &str, ok: bool, reason: &str, message: String| RuntimeCondition {
            r#type: t.into(),
            status: ok,
            reason: if ok { String::new() } else { reason.into() },
            message,
        };
        Ok(StatusResponse {
            status: Some(RuntimeStatus {
                conditions: vec![
                    cond(
                        "RuntimeReady",
                        runtime_ready,
                        "RuncMissing",
                        if runtime_ready {
                            String::new()
                        } else {
                            format!("{} not found", self.cfg.runc.display())
                        },
                    ),
                    cond(
                        "NetworkReady",
                        network.is_ok(),
                        "NetworkPluginNotReady",
                        network.err().unwrap_or_default(),
                    ),
                ],
            }),
            ..Default::default()
        })
    }
}

impl BuiltinRuntime {
    fn sandbox_stats(&self, g: &Inner, s: &Sandbox) -> PodSandboxStats {
        let containers = g
            .containers
            .values()
            .filter(|c| c.rec.sandbox_id == s.rec.id)
            .filter(|c| self.container_state(&c.rec).0 == ContainerState::ContainerRunning)
            .map(|c| self.stats_of(c))
            .collect::<Vec<_>>();
        let sum = |f: &dyn Fn(&ContainerStats) -> Option<u64>| -> Option<UInt64Value> {
            let vals: Vec<u64> = containers.iter().filter_map(f).collect();
            (!vals.is_empty()).then(|| UInt64Value {
                value: vals.iter().sum(),
            })
        };
        let now = now_nanos();
        PodSandboxStats {
            attributes: Some(PodSandboxAttributes {
                id: s.rec.id.clone(),
                metadata: s.config.metadata.clone(),
                labels: s.config.labels.clone(),
                annotations: s.config.annotations.clone(),
            }),
            linux: Some(LinuxPodSandboxStats {
                cpu: Some(CpuUsage {
                    timestamp: now,
                    usage_core_nano_seconds: sum(&|c| {
                        c.cpu
                            .as_ref()?
                            .usage_core_nano_seconds
                            .as_ref()
                            .map(|v| v.value)
                    }),
                    ..Default::default()
                }),
                memory: Some(MemoryUsage {
                    timestamp: now,
                    working_set_bytes: sum(&|c| {
                        c.memory
                            .as_ref()?
                            .working_set_bytes
                            .as_ref()
                            .map(|v| v.value)
                    }),
                    ..Default::default()
                }),
                containers,
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}

#[async_trait]
impl ImageService for BuiltinRuntime {
    async fn list_images(&self, req: ListImagesRequest) -> Result<ListImagesResponse> {
        self.images.list_images(req).await
    }
    async fn image_status(&self, req: ImageStatusRequest) -> Result<ImageStatusResponse> {
        self.images.image_status(req).await
    }
    async fn pull_image(&self, req: PullImageRequest) -> Result<PullImageResponse> {
        let name = req.image.map(|i| i.image).unwrap_or_default();
        if name.is_empty() {
            return Err(Error::InvalidArgument("image is required".into()));
        }
        let image =
            super::registry::pull(&self.images, &self.cfg.registry, &name, req.auth.as_ref())
                .await?;
        Ok(PullImageResponse {
            image_ref: image.id,
        })
    }
    async fn remove_image(&self, req: RemoveImageRequest) -> Result<RemoveImageResponse> {
        self.images.remove_image(req).await
    }
    async fn image_fs_info(&self, req: ImageFsInfoRequest) -> Result<ImageFsInfoResponse> {
        self.images.image_fs_info(req).await
    }
}

impl BuiltinRuntime {
    /// Starts the streaming server (exec, attach, port-forward URLs) on `addr` (port 0 for
    /// any); returns the address it listens on.
    pub async fn serve_streaming(
        self: &Arc<Self>,
        addr: std::net::SocketAddr,
    ) -> Result<std::net::SocketAddr> {
        let weak: std::sync::Weak<dyn StreamingRuntime> =
            Arc::downgrade(self) as std::sync::Weak<dyn StreamingRuntime>;
        let server = StreamingServer::start(addr, weak).await?;
        let a = server.addr();
        let _ = self.streaming.set(server);
        Ok(a)
    }

    fn streaming(&self) -> Result<&Arc<StreamingServer>> {
        self.streaming.get().ok_or_else(|| {
            Error::Unavailable(
                "the streaming server is not started (BuiltinRuntime::serve_streaming)".into(),
            )
        })
    }

    fn running(&self, id: &str) -> Result<ContainerRecord> {
        let rec = self
            .lock()
            .containers
            .get(id)
            .map(|c| c.rec.clone())
            .ok_or_else(|| Error::NotFound(format!("container {id}")))?;
        if self.container_state(&rec).0 != ContainerState::ContainerRunning {
            return Err(Error::FailedPrecondition(format!(
                "container {id} is not running"
            )));
        }
        Ok(rec)
    }

    /// A terminal session: runc runs the command on a terminal of the container's own and
    /// relays it to its standard streams, which are the far end of a pseudo-terminal made
    /// here (its controlling terminal, through util-linux `setsid --ctty`), so a size set on
    /// our end reaches runc as SIGWINCH and runc passes it on. runc exits with the command's
    /// exit code.
    async fn exec_tty(&self, req: ExecRequest, mut io: StreamIo) -> Result<i32> {
        use rustix::pty::OpenptFlags;
        use std::os::fd::AsFd;
        let term = |e: std::io::Error| internal("allocating a terminal", e);
        let master = rustix::pty::openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY)
            .map_err(|e| term(e.into()))?;
        rustix::pty::grantpt(&master).map_err(|e| term(e.into()))?;
        rustix::pty::unlockpt(&master).map_err(|e| term(e.into()))?;
        let name = rustix::pty::ptsname(&master, Vec::new()).map_err(|e| term(e.into()))?;
        let slave = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(std::ffi::OsStr::from_bytes(name.as_bytes()))
            .map_err(term)?;
        let set_size = |fd: &std::os::fd::OwnedFd, s: crate::streaming::TerminalSize| {
            let ws = rustix::termios::Winsize {
                ws_row: s.height,
                ws_col: s.width,
                ws_xpixel: 0,
                ws_ypixel: 0,
            };
            let _ = rustix::termios::tcsetwinsize(fd, ws);
        };
        // The client sends its size first thing; runc reads it once at start.
        if let Some(sizes) = io.resize.as_mut() {
            if let Ok(Some(s)) =
                tokio::time::timeout(Duration::from_millis(500), sizes.recv()).await
            {
                set_size(&master, s);
            }
        }
        let mut cmd = tokio::process::Command::new("setsid");
        cmd.arg("--ctty")
            .arg(&self.cfg.runc)
            .arg("--root")
            .arg(self.cfg.state.join("runc"))
            .args(["exec", "--tty", &req.container_id])
            .args(&req.cmd)
            .stdin(slave.try_clone().map_err(term)?)
            .stdout(slave.try_clone().map_err(term)?)
            .stderr(slave)
            .kill_on_drop(true);
        let child = cmd
            .spawn()
            .map_err(|e| internal("running setsid runc exec", e));
        // Our copies of the far end go, so reading ours ends when runc does.
        drop(cmd);
        let mut child = child?;
        let resize_fd = master.as_fd().try_clone_to_owned().map_err(term)?;
        let write_fd = master.as_fd().try_clone_to_owned().map_err(term)?;
        let mut reader = tokio::fs::File::from_std(std::fs::File::from(master));
        let mut writer = tokio::fs::File::from_std(std::fs::File::from(write_fd));
        if let Some(mut sizes) = io.resize {
            tokio::spawn(async move {
                while let Some(s) = sizes.recv().await {
                    set_size(&resize_fd, s);
                }
            });
        }
        let input = io.stdin.map(|mut stdin| {
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut stdin, &mut writer).await;
            })
        });
        let output = tokio::spawn(async move {
            if let Some(mut out) = io.stdout {
                // EIO once nobody holds the far end: the session is over.
                let _ = tokio::io::copy(&mut reader, &mut out).await;
                let _ = out.shutdown().await;
            }
        });
        let status = child.wait().await.map_err(|e| internal("runc exec", e))?;
        let _ = tokio::time::timeout(Duration::from_secs(2), output).await;
        if let Some(i) = input {
            i.abort();
        }
        Ok(status.code().unwrap_or(255))
    }
}

#[async_trait]
impl StreamingRuntime for BuiltinRuntime {
    async fn exec_stream(&self, req: ExecRequest, io: StreamIo) -> Result<i32> {
        self.running(&req.container_id)?;
        if req.tty {
            return self.exec_tty(req, io).await;
        }
        let mut child = tokio::process::Command::new(&self.cfg.runc)
            .arg("--root")
            .arg(self.cfg.state.join("runc"))
            .args(["exec", &req.container_id])
            .args(&req.cmd)
            .stdin(if io.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(if io.stdout.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stderr(if io.stderr.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| internal("running runc exec", e))?;
        let input = match (io.stdin, child.stdin.take()) {
            (Some(mut from), Some(mut to)) => Some(tokio::spawn(async move {
                let _ = tokio::io::copy(&mut from, &mut to).await;
                // Dropping `to` closes the process's stdin.
            })),
            _ => None,
        };
        let pipe = |from: Option<tokio::process::ChildStdout>,
                    to: Option<crate::streaming::Writer>| {
            tokio::spawn(async move {
                if let (Some(mut from), Some(mut to)) = (from, to) {
                    let _ = tokio::io::copy(&mut from, &mut to).await;
                    let _ = to.shutdown().await;
                }
            })
        };
        let out = pipe(child.stdout.take(), io.stdout);
        let err_from = child.stderr.take();
        let err_to = io.stderr;
        let err = tokio::spawn(async move {
            if let (Some(mut from), Some(mut to)) = (err_from, err_to) {
                let _ = tokio::io::copy(&mut from, &mut to).await;
                let _ = to.shutdown().await;
            }
        });
        let status = child.wait().await.map_err(|e| internal("runc exec", e))?;
        let _ = out.await;
        let _ = err.await;
        if let Some(i) = input {
            i.abort();
        }
        Ok(status.code().unwrap_or(255))
    }

    async fn attach_stream(&self, req: AttachRequest, io: StreamIo) -> Result<()> {
        self.running(&req.container_id)?;
        let mut conn = tokio::net::UnixStream::connect(self.socket(&req.container_id))
            .await
            .map_err(|e| internal("connecting to the container's shim", e))?;
        conn.write_all(b"attach\n")
            .await
            .map_err(|e| internal("attaching", e))?;
        let (r, mut w) = conn.into_split();
        let mut r = tokio::io::BufReader::new(r);
        let mut line = String::new();
        r.read_line(&mut line)
            .await
            .map_err(|e| internal("attaching", e))?;
        if line.trim() != "ok" {
            return Err(Error::Internal(format!(
                "attaching: the shim answered {line:?}"
            )));
        }
        let input = io.stdin.map(|mut stdin| {
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut stdin, &mut w).await;
                let _ = w.shutdown().await;
            })
        });
        let (mut stdout, mut stderr) = (io.stdout, io.stderr);
        loop {
            let mut head = [0u8; 5];
            if r.read_exact(&mut head).await.is_err() {
                break;
            }
            let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
            let mut data = vec![0u8; len];
            if r.read_exact(&mut data).await.is_err() {
                break;
            }
            let to = match head[0] {
                1 => stdout.as_mut(),
                _ => stderr.as_mut().or(stdout.as_mut()),
            };
            if let Some(to) = to {
                if to.write_all(&data).await.is_err() {
                    break;
                }
            }
        }
        if let Some(i) = input {
            i.abort();
        }
        for w in [stdout.as_mut(), stderr.as_mut()].into_iter().flatten() {
            let _ = w.shutdown().await;
        }
        Ok(())
    }

    async fn port_forward_connect(
        &self,
        sandbox_id: &str,
        port: u16,
    ) -> Result<tokio::net::TcpStream> {
        let (ready, host) = self
            .lock()
            .sandboxes
            .get(sandbox_id)
            .map(|s| (s.rec.ready, s.rec.host_network))
            .ok_or_else(|| Error::NotFound(format!("pod sandbox {sandbox_id}")))?;
        if !ready {
            return Err(Error::FailedPrecondition(format!(
                "pod sandbox {sandbox_id} is not ready"
            )));
        }
        let netns = (!host).then(|| self.namespaces(sandbox_id).net());
        // A socket belongs to the network namespace it was made in: make it on a fresh
        // thread that enters the sandbox's namespace and then ends.
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let r = (|| -> std::io::Result<std::net::TcpStream> {
                if let Some(ns) = netns {
                    let f = std::fs::File::open(&ns)?;
                    rustix::thread::move_into_link_name_space(
                        std::os::fd::AsFd::as_fd(&f),
                        Some(rustix::thread::LinkNameSpaceType::Network),
                    )?;
                }
                let s = std::net::TcpStream::connect_timeout(
                    &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
                    Duration::from_secs(10),
                )?;
                s.set_nonblocking(true)?;
                Ok(s)
            })();
            let _ = tx.send(r);
        });
        let s = rx
            .await
            .map_err(|_| Error::Internal("port-forward thread failed".into()))?
            .map_err(|e| {
                Error::Internal(format!("connecting to port {port} in the sandbox: {e}"))
            })?;
        tokio::net::TcpStream::from_std(s).map_err(|e| internal("port-forward socket", e))
    }
}
