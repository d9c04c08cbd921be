//! bosun-cri integration tests.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stderr,
    missing_docs
)]

#[path = "../support/mod.rs"]
mod support;

mod builtin_images;
mod builtin_runc;
mod builtin_runtime;
mod builtin_sandbox;
mod containerd;
mod registry;
mod simulated;
