//! bosun-cri integration tests.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stderr,
    missing_docs
)]

mod builtin_images;
mod containerd;
mod image;
mod simulated;
