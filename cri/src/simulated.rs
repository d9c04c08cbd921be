//! [`SimulatedRuntime`]: the CRI with no processes, namespaces or files. Sandboxes get an IP
//! from a per-runtime range, containers move Created → Running → Exited as the calls (and an
//! optional schedule) say, images are only names. Thousands of simulated nodes fit in one
//! process (the role kwok plays upstream).
//!
//! A container's annotations may schedule its exit: `simulated.bosun.dev/run-seconds` (it
//! exits that long after starting) and `simulated.bosun.dev/exit-code` (default 0);
//! `simulated.bosun.dev/memory-bytes` is the memory its stats report. Images from
//! [`PRIVATE_REGISTRY`] pull only with the credentials `bosun`/`secret`.

use crate::v1::*;
use crate::{matches_labels, Error, ImageService, Result, RuntimeService, API_VERSION};
use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Annotation: seconds a container runs before exiting on its own.
pub const RUN_SECONDS: &str = "simulated.bosun.dev/run-seconds";
/// Annotation: the exit code of a container that exits on its own.
pub const EXIT_CODE: &str = "simulated.bosun.dev/exit-code";
/// A registry whose images need credentials (user `bosun`, password `secret`).
pub const PRIVATE_REGISTRY: &str = "private.simulated.example";

/// Annotation: the memory working set a container's stats report, in bytes.
pub const MEMORY_BYTES: &str = "simulated.bosun.dev/memory-bytes";

fn now_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

fn new_id() -> String {
    // 64 hex characters, like a runtime's IDs.
    (0..4).map(|_| format!("{:016x}", fastrand_u64())).collect()
}

fn fastrand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}

#[derive(Clone, Debug)]
struct Sandbox {
    id: String,
    config: PodSandboxConfig,
    ready: bool,
    created_at: i64,
    ip: String,
    handler: String,
}

#[derive(Clone, Debug)]
struct Ctr {
    id: String,
    sandbox: String,
    config: ContainerConfig,
    state: ContainerState,
    created_at: i64,
    started_at: i64,
    finished_at: i64,
    exit_code: i32,
    reason: String,
    exit_at: Option<Instant>,
    log_path: String,
}

#[derive(Default)]
struct State {
    sandboxes: HashMap<String, Sandbox>,
    containers: HashMap<String, Ctr>,
    images: HashMap<String, Image>,
    next_ip: u32,
}

/// The simulated runtime.
pub struct SimulatedRuntime {
    state: Mutex<State>,
    /// The first three octets of the sandbox IPs (e.g. `[10, 244, 0]`).
    subnet: [u8; 3],
}

impl Default for SimulatedRuntime {
    fn default() -> Self {
        SimulatedRuntime::new([10, 244, 0])
    }
}

impl SimulatedRuntime {
    /// A runtime whose sandboxes get addresses in `a.b.c.0/24`.
    pub fn new(subnet: [u8; 3]) -> Self {
        SimulatedRuntime {
            state: Mutex::new(State::default()),
            subnet,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        let mut g = self.state.lock().unwrap_or_else(|e| e.into_inner());
        // Containers whose scheduled run is over have exited.
        let now = Instant::now();
        for c in g.containers.values_mut() {
            if c.state == ContainerState::ContainerRunning && c.exit_at.is_some_and(|t| t <= now) {
                c.state = ContainerState::ContainerExited;
                c.finished_at = now_nanos();
                c.exit_code = c
                    .config
                    .annotations
                    .get(EXIT_CODE)
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                c.reason = if c.exit_code == 0 {
                    "Completed"
                } else {
                    "Error"
                }
                .into();
            }
        }
        g
    }
}

fn sandbox_state(s: &Sandbox) -> i32 {
    if s.ready {
        PodSandboxState::SandboxReady as i32
    } else {
        PodSandboxState::SandboxNotready as i32
    }
}

fn image_spec(c: &ContainerConfig) -> ImageSpec {
    c.image.clone().unwrap_or_default()
}

fn stop(c: &mut Ctr, code: i32, reason: &str) {
    if c.state == ContainerState::ContainerRunning {
        c.state = ContainerState::ContainerExited;
        c.finished_at = now_nanos();
        c.exit_code = code;
        c.reason = reason.into();
    } else if c.state == ContainerState::ContainerCreated {
        c.state = ContainerState::ContainerExited;
        c.finished_at = now_nanos();
    }
}

#[async_trait]
impl RuntimeService for SimulatedRuntime {
    async fn version(&self, _: VersionRequest) -> Result<VersionResponse> {
        Ok(VersionResponse {
            version: "0.1.0".into(),
            runtime_name: "bosun-simulated".into(),
            runtime_version: env!("CARGO_PKG_VERSION").into(),
            runtime_api_version: API_VERSION.into(),
        })
    }

    async fn run_pod_sandbox(&self, req: RunPodSandboxRequest) -> Result<RunPodSandboxResponse> {
        let config = req
            .config
            .ok_or_else(|| Error::InvalidArgument("sandbox config is required".into()))?;
        let meta = config.metadata.clone().unwrap_or_default();
        let mut g = self.lock();
        if let Some(s) = g.sandboxes.values().find(|s| {
            s.config.metadata.as_ref().is_some_and(|m| {
                m.name == meta.name && m.namespace == meta.namespace && m.attempt == meta.attempt
            })
        }) {
            return Err(Error::AlreadyExists(format!(
                "sandbox {}/{} attempt {} exists as {}",
                meta.namespace, meta.name, meta.attempt, s.id
            )));
        }
        g.next_ip = (g.next_ip % 253) + 1;
        let ip = format!(
            "{}.{}.{}.{}",
            self.subnet[0],
            self.subnet[1],
            self.subnet[2],
            g.next_ip + 1
        );
        let id = new_id();
        g.sandboxes.insert(
            id.clone(),
            Sandbox {
                id: id.clone(),
                config,
                ready: true,
                created_at: now_nanos(),
                ip,
                handler: req.runtime_handler,
            },
        );
        Ok(RunPodSandboxResponse { pod_sandbox_id: id })
    }

    async fn stop_pod_sandbox(&self, req: StopPodSandboxRequest) -> Result<StopPodSandboxResponse> {
        let mut g = self.lock();
        let s = g
            .sandboxes
            .get_mut(&req.pod_sandbox_id)
            .ok_or_else(|| Error::NotFound(format!("sandbox {}", req.pod_sandbox_id)))?;
        s.ready = false;
        for c in g
            .containers
            .values_mut()
            .filter(|c| c.sandbox == req.pod_sandbox_id)
        {
            stop(c, 137, "Error");
        }
        Ok(StopPodSandboxResponse {})
    }

    async fn remove_pod_sandbox(
        &self,
        req: RemovePodSandboxRequest,
    ) -> Result<RemovePodSandboxResponse> {
        let mut g = self.lock();
        if g.sandboxes
            .get(&req.pod_sandbox_id)
            .is_some_and(|s| s.ready)
        {
            return Err(Error::FailedPrecondition(format!(
                "sandbox {} is still running; stop it first",
                req.pod_sandbox_id
            )));
        }
        g.sandboxes.remove(&req.pod_sandbox_id);
        g.containers.retain(|_, c| c.sandbox != req.pod_sandbox_id);
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
            .ok_or_else(|| Error::NotFound(format!("sandbox {}", req.pod_sandbox_id)))?;
        Ok(PodSandboxStatusResponse {
            status: Some(PodSandboxStatus {
                id: s.id.clone(),
                metadata: s.config.metadata.clone(),
                state: sandbox_state(s),
                created_at: s.created_at,
                network: Some(PodSandboxNetworkStatus {
                    ip: s.ip.clone(),
                    additional_ips: Vec::new(),
                }),
                linux: None,
                labels: s.config.labels.clone(),
                annotations: s.config.annotations.clone(),
                runtime_handler: s.handler.clone(),
            }),
            ..Default::default()
        })
    }

    async fn list_pod_sandbox(&self, req: ListPodSandboxRequest) -> Result<ListPodSandboxResponse> {
        let g = self.lock();
        let f = req.filter.unwrap_or_default();
        let items = g
            .sandboxes
            .values()
            .filter(|s| f.id.is_empty() || s.id.starts_with(&f.id))
            .filter(|s| f.state.as_ref().is_none_or(|v| v.state == sandbox_state(s)))
            .filter(|s| matches_labels(&s.config.labels, &f.label_selector))
            .map(|s| PodSandbox {
                id: s.id.clone(),
                metadata: s.config.metadata.clone(),
                state: sandbox_state(s),
                created_at: s.created_at,
                labels: s.config.labels.clone(),
                annotations: s.config.annotations.clone(),
                runtime_handler: s.handler.clone(),
            })
            .collect();
        Ok(ListPodSandboxResponse { items })
    }

    async fn create_container(
        &self,
        req: CreateContainerRequest,
    ) -> Result<CreateContainerResponse> {
        let config = req
            .config
            .ok_or_else(|| Error::InvalidArgument("container config is required".into()))?;
        let meta = config.metadata.clone().unwrap_or_default();
        let mut g = self.lock();
        let sandbox = g
            .sandboxes
            .get(&req.pod_sandbox_id)
            .ok_or_else(|| Error::NotFound(format!("sandbox {}", req.pod_sandbox_id)))?;
        if !sandbox.ready {
            return Err(Error::FailedPrecondition(format!(
                "sandbox {} is not ready",
                sandbox.id
            )));
        }
        let log_dir = sandbox.config.log_directory.clone();
        if g.containers.values().any(|c| {
            c.sandbox == req.pod_sandbox_id
                && c.config
                    .metadata
                    .as_ref()
                    .is_some_and(|m| m.name == meta.name && m.attempt == meta.attempt)
        }) {
            return Err(Error::AlreadyExists(format!(
                "container {} attempt {} exists in sandbox {}",
                meta.name, meta.attempt, req.pod_sandbox_id
            )));
        }
        let id = new_id();
        let log_path = if config.log_path.is_empty() {
            String::new()
        } else {
            format!("{log_dir}/{}", config.log_path)
        };
        g.containers.insert(
            id.clone(),
            Ctr {
                id: id.clone(),
                sandbox: req.pod_sandbox_id,
                config,
                state: ContainerState::ContainerCreated,
                created_at: now_nanos(),
                started_at: 0,
                finished_at: 0,
                exit_code: 0,
                reason: String::new(),
                exit_at: None,
                log_path,
            },
        );
        Ok(CreateContainerResponse { container_id: id })
    }

    async fn start_container(&self, req: StartContainerRequest) -> Result<StartContainerResponse> {
        let mut g = self.lock();
        let c = g
            .containers
            .get_mut(&req.container_id)
            .ok_or_else(|| Error::NotFound(format!("container {}", req.container_id)))?;
        if c.state != ContainerState::ContainerCreated {
            return Err(Error::FailedPrecondition(format!(
                "container {} is {:?}, not created",
                c.id, c.state
            )));
        }
        c.state = ContainerState::ContainerRunning;
        c.started_at = now_nanos();
        c.exit_at = c
            .config
            .annotations
            .get(RUN_SECONDS)
            .and_then(|v| v.parse::<f64>().ok())
            .map(|s| Instant::now() + Duration::from_secs_f64(s.max(0.0)));
        Ok(StartContainerResponse {})
    }

    async fn stop_container(&self, req: StopContainerRequest) -> Result<StopContainerResponse> {
        let mut g = self.lock();
        let c = g
            .containers
            .get_mut(&req.container_id)
            .ok_or_else(|| Error::NotFound(format!("container {}", req.container_id)))?;
        // A simulated process exits at once on SIGTERM, as a well-behaved one does.
        stop(c, 143, "Error");
        Ok(StopContainerResponse {})
    }

    async fn remove_container(
        &self,
        req: RemoveContainerRequest,
    ) -> Result<RemoveContainerResponse> {
        let mut g = self.lock();
        if g.containers
            .get(&req.container_id)
            .is_some_and(|c| c.state == ContainerState::ContainerRunning)
        {
            return Err(Error::FailedPrecondition(format!(
                "container {} is running; stop it first",
                req.container_id
            )));
        }
        g.containers.remove(&req.container_id);
        Ok(RemoveContainerResponse {})
    }

    async fn list_containers(&self, req: ListContainersRequest) -> Result<ListContainersResponse> {
        let g = self.lock();
        let f = req.filter.unwrap_or_default();
        let containers = g
            .containers
            .values()
            .filter(|c| f.id.is_empty() || c.id.starts_with(&f.id))
            .filter(|c| f.pod_sandbox_id.is_empty() || c.sandbox.starts_with(&f.pod_sandbox_id))
            .filter(|c| f.state.as_ref().is_none_or(|v| v.state == c.state as i32))
            .filter(|c| matches_labels(&c.config.labels, &f.label_selector))
            .map(|c| Container {
                id: c.id.clone(),
                pod_sandbox_id: c.sandbox.clone(),
                metadata: c.config.metadata.clone(),
                image: Some(image_spec(&c.config)),
                image_ref: image_spec(&c.config).image,
                state: c.state as i32,
                created_at: c.created_at,
                labels: c.config.labels.clone(),
                annotations: c.config.annotations.clone(),
                image_id: image_spec(&c.config).image,
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
            status: Some(ContainerStatus {
                id: c.id.clone(),
                metadata: c.config.metadata.clone(),
                state: c.state as i32,
                created_at: c.created_at,
                started_at: c.started_at,
                finished_at: c.finished_at,
                exit_code: c.exit_code,
                image: Some(image_spec(&c.config)),
                image_ref: image_spec(&c.config).image,
                reason: c.reason.clone(),
                message: String::new(),
                labels: c.config.labels.clone(),
                annotations: c.config.annotations.clone(),
                mounts: c.config.mounts.clone(),
                log_path: c.log_path.clone(),
                resources: None,
                image_id: image_spec(&c.config).image,
                user: None,
            }),
            ..Default::default()
        })
    }

    async fn update_container_resources(
        &self,
        req: UpdateContainerResourcesRequest,
    ) -> Result<UpdateContainerResourcesResponse> {
        let g = self.lock();
        if !g.containers.contains_key(&req.container_id) {
            return Err(Error::NotFound(format!("container {}", req.container_id)));
        }
        Ok(UpdateContainerResourcesResponse {})
    }

    async fn reopen_container_log(
        &self,
        req: ReopenContainerLogRequest,
    ) -> Result<ReopenContainerLogResponse> {
        let g = self.lock();
        match g.containers.get(&req.container_id) {
            Some(c) if c.state == ContainerState::ContainerRunning => {
                Ok(ReopenContainerLogResponse {})
            }
            Some(_) => Err(Error::FailedPrecondition("container is not running".into())),
            None => Err(Error::NotFound(format!("container {}", req.container_id))),
        }
    }

    async fn exec_sync(&self, req: ExecSyncRequest) -> Result<ExecSyncResponse> {
        let g = self.lock();
        match g.containers.get(&req.container_id) {
            Some(c) if c.state == ContainerState::ContainerRunning => Ok(ExecSyncResponse {
                stdout: Vec::new(),
                stderr: Vec::new(),
                exit_code: 0,
            }),
            Some(_) => Err(Error::FailedPrecondition("container is not running".into())),
            None => Err(Error::NotFound(format!("container {}", req.container_id))),
        }
    }

    async fn exec(&self, _: ExecRequest) -> Result<ExecResponse> {
        Err(Error::Unimplemented(
            "the simulated runtime runs no processes".into(),
        ))
    }

    async fn attach(&self, _: AttachRequest) -> Result<AttachResponse> {
        Err(Error::Unimplemented(
            "the simulated runtime runs no processes".into(),
        ))
    }

    async fn port_forward(&self, _: PortForwardRequest) -> Result<PortForwardResponse> {
        Err(Error::Unimplemented(
            "the simulated runtime has no network".into(),
        ))
    }

    async fn container_stats(&self, req: ContainerStatsRequest) -> Result<ContainerStatsResponse> {
        let g = self.lock();
        let c = g
            .containers
            .get(&req.container_id)
            .ok_or_else(|| Error::NotFound(format!("container {}", req.container_id)))?;
        Ok(ContainerStatsResponse {
            stats: Some(stats_of(c)),
        })
    }

    async fn list_container_stats(
        &self,
        req: ListContainerStatsRequest,
    ) -> Result<ListContainerStatsResponse> {
        let g = self.lock();
        let f = req.filter.unwrap_or_default();
        let stats = g
            .containers
            .values()
            .filter(|c| f.id.is_empty() || c.id == f.id)
            .filter(|c| f.pod_sandbox_id.is_empty() || c.sandbox == f.pod_sandbox_id)
            .filter(|c| matches_labels(&c.config.labels, &f.label_selector))
            .map(stats_of)
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
            .ok_or_else(|| Error::NotFound(format!("sandbox {}", req.pod_sandbox_id)))?;
        Ok(PodSandboxStatsResponse {
            stats: Some(sandbox_stats(&g, s)),
        })
    }

    async fn list_pod_sandbox_stats(
        &self,
        _: ListPodSandboxStatsRequest,
    ) -> Result<ListPodSandboxStatsResponse> {
        let g = self.lock();
        Ok(ListPodSandboxStatsResponse {
            stats: g.sandboxes.values().map(|s| sandbox_stats(&g, s)).collect(),
        })
    }

    async fn update_runtime_config(
        &self,
        _: UpdateRuntimeConfigRequest,
    ) -> Result<UpdateRuntimeConfigResponse> {
        Ok(UpdateRuntimeConfigResponse {})
    }

    async fn status(&self, _: StatusRequest) -> Result<StatusResponse> {
        let cond = |t: &str| RuntimeCondition {
            r#type: t.into(),
            status: true,
            reason: String::new(),
            message: String::new(),
        };
        Ok(StatusResponse {
            status: Some(RuntimeStatus {
                conditions: vec![cond("RuntimeReady"), cond("NetworkReady")],
            }),
            ..Default::default()
        })
    }
}

/// A sandbox's stats: its running containers'.
fn sandbox_stats(g: &State, s: &Sandbox) -> PodSandboxStats {
    let containers: Vec<ContainerStats> = g
        .containers
        .values()
        .filter(|c| c.sandbox == s.id && c.state == ContainerState::ContainerRunning)
        .map(stats_of)
        .collect();
    let working: u64 = containers
        .iter()
        .filter_map(|c| {
            c.memory
                .as_ref()?
                .working_set_bytes
                .as_ref()
                .map(|v| v.value)
        })
        .sum();
    PodSandboxStats {
        attributes: Some(PodSandboxAttributes {
            id: s.id.clone(),
            metadata: s.config.metadata.clone(),
            labels: s.config.labels.clone(),
            annotations: s.config.annotations.clone(),
        }),
        linux: Some(LinuxPodSandboxStats {
            memory: Some(MemoryUsage {
                timestamp: now_nanos(),
                working_set_bytes: Some(UInt64Value { value: working }),
                ..Default::default()
            }),
            containers,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A container's stats: no CPU used; the memory its `simulated.bosun.dev/memory-bytes`
/// annotation says (0 without).
fn stats_of(c: &Ctr) -> ContainerStats {
    let memory = c
        .config
        .annotations
        .get(MEMORY_BYTES)
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    ContainerStats {
        attributes: Some(ContainerAttributes {
            id: c.id.clone(),
            metadata: c.config.metadata.clone(),
            labels: c.config.labels.clone(),
            annotations: c.config.annotations.clone(),
        }),
        cpu: Some(CpuUsage {
            timestamp: now_nanos(),
            usage_core_nano_seconds: Some(UInt64Value { value: 0 }),
            ..Default::default()
        }),
        memory: Some(MemoryUsage {
            timestamp: now_nanos(),
            working_set_bytes: Some(UInt64Value { value: memory }),
            usage_bytes: Some(UInt64Value { value: memory }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn image_name(spec: Option<&ImageSpec>) -> Result<String> {
    spec.map(|s| s.image.clone())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| Error::InvalidArgument("an image name is required".into()))
}

#[async_trait]
impl ImageService for SimulatedRuntime {
    async fn list_images(&self, _: ListImagesRequest) -> Result<ListImagesResponse> {
        Ok(ListImagesResponse {
            images: self.lock().images.values().cloned().collect(),
        })
    }

    async fn image_status(&self, req: ImageStatusRequest) -> Result<ImageStatusResponse> {
        let name = image_name(req.image.as_ref())?;
        let g = self.lock();
        let image = g
            .images
            .values()
            .find(|i| i.id == name || i.repo_tags.contains(&name))
            .cloned();
        Ok(ImageStatusResponse {
            image,
            ..Default::default()
        })
    }

    async fn pull_image(&self, req: PullImageRequest) -> Result<PullImageResponse> {
        let name = image_name(req.image.as_ref())?;
        if name.starts_with(&format!("{PRIVATE_REGISTRY}/")) {
            let ok = req
                .auth
                .as_ref()
                .is_some_and(|a| a.username == "bosun" && a.password == "secret");
            if !ok {
                return Err(Error::Internal(format!(
                    "pulling {name}: unauthorized: authentication required"
                )));
            }
        }
        let mut g = self.lock();
        let id = format!("sha256:{}", &new_id());
        let image = g.images.entry(name.clone()).or_insert_with(|| Image {
            id,
            repo_tags: vec![name],
            size: 1 << 20,
            ..Default::default()
        });
        Ok(PullImageResponse {
            image_ref: image.id.clone(),
        })
    }

    async fn remove_image(&self, req: RemoveImageRequest) -> Result<RemoveImageResponse> {
        let name = image_name(req.image.as_ref())?;
        self.lock()
            .images
            .retain(|tag, i| *tag != name && i.id != name);
        Ok(RemoveImageResponse {})
    }

    async fn image_fs_info(&self, _: ImageFsInfoRequest) -> Result<ImageFsInfoResponse> {
        let used: u64 = self.lock().images.values().map(|i| i.size).sum();
        Ok(ImageFsInfoResponse {
            image_filesystems: vec![FilesystemUsage {
                timestamp: now_nanos(),
                fs_id: Some(FilesystemIdentifier {
                    mountpoint: "/simulated/images".into(),
                }),
                used_bytes: Some(UInt64Value { value: used }),
                inodes_used: Some(UInt64Value { value: 0 }),
            }],
            container_filesystems: Vec::new(),
        })
    }
}
