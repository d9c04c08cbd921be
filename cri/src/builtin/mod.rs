//! The built-in runtime (the default for `bosun agent`, so a node needs no containerd):
//! [`runtime::BuiltinRuntime`] ties together the image store, the sandbox namespaces, the
//! OCI spec generator, runc and the per-container [`shim`].

pub mod images;
pub mod registry;
pub mod runtime;
pub mod sandbox;
pub mod shim;
pub mod spec;
