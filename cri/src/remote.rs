//! [`RemoteRuntime`]: the CRI traits over gRPC to a runtime's unix socket.

use crate::v1::image_service_client::ImageServiceClient;
use crate::v1::runtime_service_client::RuntimeServiceClient;
use crate::v1::*;
use crate::{image_rpcs, runtime_rpcs, Error, ImageService, Result, RuntimeService};
use async_trait::async_trait;
use hyper_util::rt::TokioIo;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tonic::transport::{Channel, Endpoint, Uri};

/// A CRI runtime reached over gRPC on a unix socket.
#[derive(Clone, Debug)]
pub struct RemoteRuntime {
    runtime: RuntimeServiceClient<Channel>,
    images: ImageServiceClient<Channel>,
    socket: PathBuf,
}

impl RemoteRuntime {
    /// Connects to the socket (a path, or `unix:///path`).
    pub async fn connect(socket: impl AsRef<Path>) -> Result<Self> {
        let raw = socket.as_ref().to_string_lossy().to_string();
        let path = PathBuf::from(raw.strip_prefix("unix://").unwrap_or(&raw));
        let p = path.clone();
        // The URI is required by the transport but unused: every connection is the socket.
        let channel = Endpoint::from_static("http://[::1]:50051")
            .connect_timeout(Duration::from_secs(5))
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let p = p.clone();
                async move {
                    Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(p).await?))
                }
            }))
            .await
            .map_err(|e| Error::Unavailable(format!("connecting to {}: {e}", path.display())))?;
        // Image pulls and image lists can be large.
        let max = 16 * 1024 * 1024;
        Ok(RemoteRuntime {
            runtime: RuntimeServiceClient::new(channel.clone())
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
            images: ImageServiceClient::new(channel)
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
            socket: path,
        })
    }

    /// The socket this client talks to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }
}

macro_rules! forward_runtime {
    ($($method:ident: $req:ty => $resp:ty,)*) => {
        #[async_trait]
        impl RuntimeService for RemoteRuntime {
            $(
                async fn $method(&self, req: $req) -> Result<$resp> {
                    let mut c = self.runtime.clone();
                    Ok(c.$method(req).await?.into_inner())
                }
            )*
        }
    };
}

macro_rules! forward_images {
    ($($method:ident: $req:ty => $resp:ty,)*) => {
        #[async_trait]
        impl ImageService for RemoteRuntime {
            $(
                async fn $method(&self, req: $req) -> Result<$resp> {
                    let mut c = self.images.clone();
                    Ok(c.$method(req).await?.into_inner())
                }
            )*
        }
    };
}

runtime_rpcs!(forward_runtime);
image_rpcs!(forward_images);
