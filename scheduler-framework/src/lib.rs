//! The scheduling framework: upstream kube-scheduler's extension points as traits, the
//! scheduling queue, the cache and incremental snapshot, the default plugins with upstream's
//! weights, preemption, and a [`Scheduler`] that runs them — with or without an API server.
//!
//! Run the default profile in process against a recording [`cluster::MemoryCluster`]:
//!
//! ```
//! use bosun_scheduler_framework::{cluster::MemoryCluster, Attempt, Scheduler};
//! use std::sync::Arc;
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let mut sched = Scheduler::builder(Arc::new(MemoryCluster::default())).build().unwrap();
//! let events = sched.events();
//! events.node_added(Arc::new(serde_json::from_value(serde_json::json!({
//!     "metadata": {"name": "node-1"},
//!     "status": {"allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"}}})).unwrap()));
//! events.pod_added(Arc::new(serde_json::from_value(serde_json::json!({
//!     "metadata": {"name": "web", "namespace": "default", "uid": "u1"},
//!     "spec": {"containers": [{"name": "c", "image": "nginx"}]}})).unwrap()));
//! assert_eq!(sched.try_schedule_one().await, Some(Attempt::Assumed("node-1".into())));
//! # });
//! ```
//!
//! A plugin implements [`Plugin`] plus the extension-point traits it needs, and is added to a
//! profile through a [`plugins::Registry`] and a [`config::SchedulerConfig`]; `examples/` has
//! a Score plugin and a Permit-based gang-scheduling plugin. [`runner`] connects a scheduler
//! to a cluster with informers.

pub mod cache;
pub mod cluster;
pub mod config;
pub mod cycle_state;
pub mod framework;
pub mod interface;
pub mod metrics;
pub mod plugins;
pub mod queue;
pub mod runner;
pub mod scheduler;
pub mod sim;
pub mod status;
pub mod types;

pub use cache::{Cache, Snapshot};
pub use config::SchedulerConfig;
pub use cycle_state::CycleState;
pub use framework::{Framework, Handle};
pub use interface::*;
pub use scheduler::{Attempt, Events, Scheduler};
pub use status::{Code, Status};
pub use types::{NodeInfo, PodInfo, Resource};
