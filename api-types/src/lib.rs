//! Typed Kubernetes API objects, wire-compatible with Kubernetes v1.32.
//!
//! Every kind of the stable built-in API groups is a plain Rust struct with upstream's JSON field
//! names; unset optional fields are omitted when serializing, exactly as the upstream API server
//! does, and fields appear in upstream's order.
//!
//! ```
//! use bosun_api_types::core::v1::{Container, Pod, PodSpec};
//! use bosun_api_types::{Quantity, Resource};
//!
//! let mut pod = Pod::default();
//! pod.metadata.name = Some("web".into());
//! pod.spec = Some(PodSpec {
//!     containers: vec![Container {
//!         name: "nginx".into(),
//!         image: Some("nginx:1.27".into()),
//!         ..Default::default()
//!     }],
//!     ..Default::default()
//! });
//! let json = serde_json::to_value(&pod).unwrap();
//! assert_eq!(json["apiVersion"], "v1");
//! assert_eq!(json["kind"], "Pod");
//! assert_eq!(json["spec"]["containers"][0]["image"], "nginx:1.27");
//! assert_eq!(Pod::INFO.short_names, &["po"]);
//!
//! let cpu: Quantity = "1500m".parse().unwrap();
//! assert_eq!(cpu.to_string(), "1500m");
//! assert_eq!("0.5".parse::<Quantity>().unwrap().to_string(), "500m");
//! ```
//!
//! Modules follow API groups: `core::v1`, `apps::v1`, `batch::v1`, `meta::v1`,
//! `rbac::v1`, `apiextensions::v1`, … A list of a kind is [`List<K>`] (`core::v1::PodList` is
//! `List<Pod>`); a kind known only at run time is a [`DynamicObject`].

mod api;
pub mod apidiscovery;
mod apiextensions_ext;
mod bytes;
mod duration;
mod intstr;
mod meta_ext;
pub mod openapi;
pub mod patch;
pub mod patch_meta;
pub mod placement;
pub mod proto;
mod quantity;
pub mod quota;
mod resource;
pub mod selector;
mod serde_util;
mod time;
pub mod validation;
pub mod yaml;

pub use api::*;
pub use bytes::{ByteString, RawExtension};
pub use duration::{Duration, DurationError};
pub use intstr::{IntOrPercentError, IntOrString};
pub use quantity::{Quantity, QuantityError, QuantityFormat};
pub use resource::{DynamicObject, KindVisitor, List, Resource, ResourceInfo, Scope};
pub use time::{MicroTime, Time, TimeError};
