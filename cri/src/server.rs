//! Serves any [`RuntimeService`] + [`ImageService`] as a CRI gRPC endpoint on a unix socket,
//! so other CRI clients (crictl, a kubelet) can use it. RPCs outside the traits
//! (checkpointing, container events, metrics descriptors, runtime config) answer
//! Unimplemented.

use crate::v1::image_service_server::{ImageService as ImageServer, ImageServiceServer};
use crate::v1::runtime_service_server::{RuntimeService as RuntimeServer, RuntimeServiceServer};
use crate::v1::*;
use crate::{image_rpcs, runtime_rpcs, Error, ImageService, RuntimeService};
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// Adapts an implementation of the traits to the generated gRPC service traits.
pub struct Served<T>(pub Arc<T>);

impl<T> Clone for Served<T> {
    fn clone(&self) -> Self {
        Served(self.0.clone())
    }
}

type EventStream =
    Pin<Box<dyn futures_util::Stream<Item = Result<ContainerEventResponse, Status>> + Send>>;

macro_rules! serve_runtime {
    ($($method:ident: $req:ty => $resp:ty,)*) => {
        #[tonic::async_trait]
        impl<T: RuntimeService + ImageService + 'static> RuntimeServer for Served<T> {
            $(
                async fn $method(&self, req: Request<$req>) -> Result<Response<$resp>, Status> {
                    Ok(Response::new(self.0.$method(req.into_inner()).await?))
                }
            )*

            async fn checkpoint_container(
                &self,
                _: Request<CheckpointContainerRequest>,
            ) -> Result<Response<CheckpointContainerResponse>, Status> {
                Err(Status::unimplemented("checkpointing is not supported"))
            }

            type GetContainerEventsStream = EventStream;

            async fn get_container_events(
                &self,
                _: Request<GetEventsRequest>,
            ) -> Result<Response<Self::GetContainerEventsStream>, Status> {
                Err(Status::unimplemented("container events are not supported"))
            }

            async fn list_metric_descriptors(
                &self,
                _: Request<ListMetricDescriptorsRequest>,
            ) -> Result<Response<ListMetricDescriptorsResponse>, Status> {
                Ok(Response::new(ListMetricDescriptorsResponse::default()))
            }

            async fn list_pod_sandbox_metrics(
                &self,
                _: Request<ListPodSandboxMetricsRequest>,
            ) -> Result<Response<ListPodSandboxMetricsResponse>, Status> {
                Ok(Response::new(ListPodSandboxMetricsResponse::default()))
            }

            async fn runtime_config(
                &self,
                _: Request<RuntimeConfigRequest>,
            ) -> Result<Response<RuntimeConfigResponse>, Status> {
                Ok(Response::new(RuntimeConfigResponse::default()))
            }
        }
    };
}

macro_rules! serve_images {
    ($($method:ident: $req:ty => $resp:ty,)*) => {
        #[tonic::async_trait]
        impl<T: RuntimeService + ImageService + 'static> ImageServer for Served<T> {
            $(
                async fn $method(&self, req: Request<$req>) -> Result<Response<$resp>, Status> {
                    Ok(Response::new(self.0.$method(req.into_inner()).await?))
                }
            )*
        }
    };
}

runtime_rpcs!(serve_runtime);
image_rpcs!(serve_images);

/// Serves `runtime` on a unix socket at `path` (replacing a stale socket file) until
/// `shutdown` completes.
///
/// ```no_run
/// use bosun_cri::{server, simulated::SimulatedRuntime};
/// use std::sync::Arc;
/// # async fn run() -> Result<(), bosun_cri::Error> {
/// // Then: crictl --runtime-endpoint unix:///run/sim.sock pods
/// let runtime = Arc::new(SimulatedRuntime::new([10, 244, 9]));
/// server::serve(runtime, std::path::Path::new("/run/sim.sock"), std::future::pending()).await?;
/// # Ok(()) }
/// ```
pub async fn serve<T: RuntimeService + ImageService + 'static>(
    runtime: Arc<T>,
    path: &Path,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), Error> {
    if path.exists() {
        std::fs::remove_file(path).map_err(|e| {
            Error::Internal(format!("removing the stale socket {}: {e}", path.display()))
        })?;
    }
    let listener = tokio::net::UnixListener::bind(path)
        .map_err(|e| Error::Internal(format!("binding {}: {e}", path.display())))?;
    let incoming = futures_util::stream::unfold(listener, |l| async move {
        let r = l.accept().await.map(|(s, _)| s);
        Some((r, l))
    });
    let served = Served(runtime);
    tonic::transport::Server::builder()
        .add_service(RuntimeServiceServer::new(served.clone()))
        .add_service(ImageServiceServer::new(served))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .map_err(|e| Error::Internal(format!("serving {}: {e}", path.display())))
}
