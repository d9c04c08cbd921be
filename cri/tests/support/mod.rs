//! Test support shared by the integration tests and the benchmarks.
#![allow(dead_code)]

pub mod builtin;
pub mod containerd;
pub mod critest;
pub mod image;
pub mod registry;

use bosun_cri::v1::{ContainerStatus, ContainerStatusRequest};
use bosun_cri::RuntimeService;

/// A container's status (the test fails if the call does).
pub async fn container_status(rt: &dyn RuntimeService, id: &str) -> ContainerStatus {
    rt.container_status(ContainerStatusRequest {
        container_id: id.into(),
        verbose: false,
    })
    .await
    .unwrap()
    .status
    .unwrap()
}
