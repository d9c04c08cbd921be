//! The Container Runtime Interface, CRI v1 (`runtime.v1`, Kubernetes 1.32): the messages,
//! [`RuntimeService`] and [`ImageService`] as async traits, and implementations of them:
//! - [`remote::RemoteRuntime`]: a gRPC client for any CRI runtime (containerd, CRI-O, …) over
//!   its unix socket;
//! - [`simulated::SimulatedRuntime`]: no processes; sandboxes and containers only change state,
//!   for scale tests with thousands of nodes in one process;
//! - and [`server::serve`], which exposes any implementation as a CRI endpoint.
//!
//! ```no_run
//! use bosun_cri::{remote::RemoteRuntime, v1, RuntimeService};
//! # async fn demo() -> Result<(), bosun_cri::Error> {
//! let rt = RemoteRuntime::connect("/run/containerd/containerd.sock").await?;
//! let v = rt.version(v1::VersionRequest { version: "v1".into() }).await?;
//! tracing::info!(runtime = %v.runtime_name, version = %v.runtime_version, "connected");
//! # Ok(()) }
//! ```

pub mod builtin;
pub mod remote;
pub mod server;
pub mod simulated;
pub mod spdy;
pub mod streaming;

/// The CRI v1 messages and gRPC stubs, generated from upstream's `api.proto`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("runtime.v1");
}

use async_trait::async_trait;
use v1::*;

/// A CRI call failed, with the gRPC status code's meaning.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The sandbox, container or image does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// The request is malformed.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The object exists already.
    #[error("already exists: {0}")]
    AlreadyExists(String),
    /// The object is not in a state that allows the call.
    #[error("failed precondition: {0}")]
    FailedPrecondition(String),
    /// The runtime does not implement the call.
    #[error("unimplemented: {0}")]
    Unimplemented(String),
    /// The runtime cannot be reached.
    #[error("runtime unavailable: {0}")]
    Unavailable(String),
    /// The call took too long.
    #[error("deadline exceeded: {0}")]
    DeadlineExceeded(String),
    /// Anything else.
    #[error("runtime error: {0}")]
    Internal(String),
}

/// The result of a CRI call.
pub type Result<T> = std::result::Result<T, Error>;

impl From<tonic::Status> for Error {
    fn from(s: tonic::Status) -> Self {
        let m = s.message().to_string();
        match s.code() {
            tonic::Code::NotFound => Error::NotFound(m),
            tonic::Code::InvalidArgument => Error::InvalidArgument(m),
            tonic::Code::AlreadyExists => Error::AlreadyExists(m),
            tonic::Code::FailedPrecondition => Error::FailedPrecondition(m),
            tonic::Code::Unimplemented => Error::Unimplemented(m),
            tonic::Code::Unavailable => Error::Unavailable(m),
            tonic::Code::DeadlineExceeded => Error::DeadlineExceeded(m),
            _ => Error::Internal(m),
        }
    }
}

impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        match e {
            Error::NotFound(m) => tonic::Status::not_found(m),
            Error::InvalidArgument(m) => tonic::Status::invalid_argument(m),
            Error::AlreadyExists(m) => tonic::Status::already_exists(m),
            Error::FailedPrecondition(m) => tonic::Status::failed_precondition(m),
            Error::Unimplemented(m) => tonic::Status::unimplemented(m),
            Error::Unavailable(m) => tonic::Status::unavailable(m),
            Error::DeadlineExceeded(m) => tonic::Status::deadline_exceeded(m),
            Error::Internal(m) => tonic::Status::internal(m),
        }
    }
}

/// Calls one macro with the RuntimeService RPCs: `method: Request => Response`.
macro_rules! runtime_rpcs {
    ($m:ident) => {
        $m! {
            version: VersionRequest => VersionResponse,
            run_pod_sandbox: RunPodSandboxRequest => RunPodSandboxResponse,
            stop_pod_sandbox: StopPodSandboxRequest => StopPodSandboxResponse,
            remove_pod_sandbox: RemovePodSandboxRequest => RemovePodSandboxResponse,
            pod_sandbox_status: PodSandboxStatusRequest => PodSandboxStatusResponse,
            list_pod_sandbox: ListPodSandboxRequest => ListPodSandboxResponse,
            create_container: CreateContainerRequest => CreateContainerResponse,
            start_container: StartContainerRequest => StartContainerResponse,
            stop_container: StopContainerRequest => StopContainerResponse,
            remove_container: RemoveContainerRequest => RemoveContainerResponse,
            list_containers: ListContainersRequest => ListContainersResponse,
            container_status: ContainerStatusRequest => ContainerStatusResponse,
            update_container_resources: UpdateContainerResourcesRequest => UpdateContainerResourcesResponse,
            reopen_container_log: ReopenContainerLogRequest => ReopenContainerLogResponse,
            exec_sync: ExecSyncRequest => ExecSyncResponse,
            exec: ExecRequest => ExecResponse,
            attach: AttachRequest => AttachResponse,
            port_forward: PortForwardRequest => PortForwardResponse,
            container_stats: ContainerStatsRequest => ContainerStatsResponse,
            list_container_stats: ListContainerStatsRequest => ListContainerStatsResponse,
            pod_sandbox_stats: PodSandboxStatsRequest => PodSandboxStatsResponse,
            list_pod_sandbox_stats: ListPodSandboxStatsRequest => ListPodSandboxStatsResponse,
            update_runtime_config: UpdateRuntimeConfigRequest => UpdateRuntimeConfigResponse,
            status: StatusRequest => StatusResponse,
        }
    };
}

/// Calls one macro with the ImageService RPCs.
macro_rules! image_rpcs {
    ($m:ident) => {
        $m! {
            list_images: ListImagesRequest => ListImagesResponse,
            image_status: ImageStatusRequest => ImageStatusResponse,
            pull_image: PullImageRequest => PullImageResponse,
            remove_image: RemoveImageRequest => RemoveImageResponse,
            image_fs_info: ImageFsInfoRequest => ImageFsInfoResponse,
        }
    };
}

pub(crate) use {image_rpcs, runtime_rpcs};

/// CRI's RuntimeService: pod sandboxes and containers. Each method is the RPC of the same name
/// (see `proto/api.proto` for the contract of each).
///
/// ```
/// use bosun_cri::{simulated::SimulatedRuntime, v1, RuntimeService};
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let rt = SimulatedRuntime::new([10, 244, 1]);
/// let config = v1::PodSandboxConfig {
///     metadata: Some(v1::PodSandboxMetadata {
///         name: "web".into(),
///         namespace: "default".into(),
///         uid: "uid-1".into(),
///         attempt: 0,
///     }),
///     ..Default::default()
/// };
/// let sandbox = rt
///     .run_pod_sandbox(v1::RunPodSandboxRequest { config: Some(config), runtime_handler: String::new() })
///     .await?
///     .pod_sandbox_id;
/// let listed = rt.list_pod_sandbox(v1::ListPodSandboxRequest::default()).await?;
/// assert_eq!(listed.items[0].id, sandbox);
/// # Ok::<(), bosun_cri::Error>(()) }).unwrap();
/// ```
///
/// Implementations: [`remote::RemoteRuntime`] (containerd), [`simulated::SimulatedRuntime`],
/// the built-in runtime on runc (`builtin`); [`server::serve`] exposes any of them over gRPC.
#[async_trait]
pub trait RuntimeService: Send + Sync {
    /// The runtime's name and versions.
    async fn version(&self, req: VersionRequest) -> Result<VersionResponse>;
    /// Creates and starts a pod sandbox (namespaces, network); it is Ready on success.
    async fn run_pod_sandbox(&self, req: RunPodSandboxRequest) -> Result<RunPodSandboxResponse>;
    /// Stops the sandbox's containers and tears its network down (idempotent).
    async fn stop_pod_sandbox(&self, req: StopPodSandboxRequest) -> Result<StopPodSandboxResponse>;
    /// Removes a sandbox and its containers (idempotent).
    async fn remove_pod_sandbox(
        &self,
        req: RemovePodSandboxRequest,
    ) -> Result<RemovePodSandboxResponse>;
    /// A sandbox's status.
    async fn pod_sandbox_status(
        &self,
        req: PodSandboxStatusRequest,
    ) -> Result<PodSandboxStatusResponse>;
    /// Sandboxes matching a filter.
    async fn list_pod_sandbox(&self, req: ListPodSandboxRequest) -> Result<ListPodSandboxResponse>;
    /// Creates a container in a sandbox.
    async fn create_container(
        &self,
        req: CreateContainerRequest,
    ) -> Result<CreateContainerResponse>;
    /// Starts a created container.
    async fn start_container(&self, req: StartContainerRequest) -> Result<StartContainerResponse>;
    /// Stops a container, killing it after the timeout (idempotent).
    async fn stop_container(&self, req: StopContainerRequest) -> Result<StopContainerResponse>;
    /// Removes a container (idempotent).
    async fn remove_container(
        &self,
        req: RemoveContainerRequest,
    ) -> Result<RemoveContainerResponse>;
    /// Containers matching a filter.
    async fn list_containers(&self, req: ListContainersRequest) -> Result<ListContainersResponse>;
    /// A container's status.
    async fn container_status(
        &self,
        req: ContainerStatusRequest,
    ) -> Result<ContainerStatusResponse>;
    /// Changes a running container's resources.
    async fn update_container_resources(
        &self,
        req: UpdateContainerResourcesRequest,
    ) -> Result<UpdateContainerResourcesResponse>;
    /// Reopens a container's log file (after the kubelet rotated it).
    async fn reopen_container_log(
        &self,
        req: ReopenContainerLogRequest,
    ) -> Result<ReopenContainerLogResponse>;
    /// Runs a command in a container and returns its output.
    async fn exec_sync(&self, req: ExecSyncRequest) -> Result<ExecSyncResponse>;
    /// A streaming URL for exec.
    async fn exec(&self, req: ExecRequest) -> Result<ExecResponse>;
    /// A streaming URL for attach.
    async fn attach(&self, req: AttachRequest) -> Result<AttachResponse>;
    /// A streaming URL for port-forward.
    async fn port_forward(&self, req: PortForwardRequest) -> Result<PortForwardResponse>;
    /// A container's resource usage.
    async fn container_stats(&self, req: ContainerStatsRequest) -> Result<ContainerStatsResponse>;
    /// Resource usage of containers matching a filter.
    async fn list_container_stats(
        &self,
        req: ListContainerStatsRequest,
    ) -> Result<ListContainerStatsResponse>;
    /// A sandbox's resource usage.
    async fn pod_sandbox_stats(
        &self,
        req: PodSandboxStatsRequest,
    ) -> Result<PodSandboxStatsResponse>;
    /// Resource usage of sandboxes matching a filter.
    async fn list_pod_sandbox_stats(
        &self,
        req: ListPodSandboxStatsRequest,
    ) -> Result<ListPodSandboxStatsResponse>;
    /// Runtime configuration from the kubelet (the node's pod CIDR).
    async fn update_runtime_config(
        &self,
        req: UpdateRuntimeConfigRequest,
    ) -> Result<UpdateRuntimeConfigResponse>;
    /// The runtime's conditions (RuntimeReady, NetworkReady).
    async fn status(&self, req: StatusRequest) -> Result<StatusResponse>;
}

/// CRI's ImageService.
#[async_trait]
pub trait ImageService: Send + Sync {
    /// Images matching a filter.
    async fn list_images(&self, req: ListImagesRequest) -> Result<ListImagesResponse>;
    /// One image's status (`image` unset if absent).
    async fn image_status(&self, req: ImageStatusRequest) -> Result<ImageStatusResponse>;
    /// Pulls an image.
    async fn pull_image(&self, req: PullImageRequest) -> Result<PullImageResponse>;
    /// Removes an image (idempotent).
    async fn remove_image(&self, req: RemoveImageRequest) -> Result<RemoveImageResponse>;
    /// Filesystem usage of image storage.
    async fn image_fs_info(&self, req: ImageFsInfoRequest) -> Result<ImageFsInfoResponse>;
}

/// Whether `labels` has every pair of `selector` (CRI filters' label selectors).
pub(crate) fn matches_labels(
    labels: &std::collections::HashMap<String, String>,
    selector: &std::collections::HashMap<String, String>,
) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// The CRI API version these traits speak.
pub const API_VERSION: &str = "v1";
