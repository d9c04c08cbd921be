//! The built-in runtime's parts (the default for `bosun agent`, so a node needs no
//! containerd). So far: the image store and the sandbox namespaces; the runtime service
//! comes next.

pub mod images;
pub mod sandbox;
pub mod spec;
