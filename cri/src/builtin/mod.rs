//! The built-in runtime's parts (the default for `bosun agent`, so a node needs no
//! containerd). This slice has the image store; the runtime service comes next.

pub mod images;
