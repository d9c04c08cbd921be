//! The controller runtime: a client-go work queue, the [`Reconciler`] trait, a [`Controller`]
//! that runs one on shared informers, a finalizer helper, leader election, and (in
//! [`builtin`]) the built-in controllers of kube-controller-manager.
//!
//! ```no_run
//! use bosun_controllers::{Action, Controller, Reconciler};
//! use bosun_client::{informer::InformerFactory, Client};
//! use bosun_api_types::core::v1::ConfigMap;
//! use std::sync::Arc;
//!
//! struct Log;
//! #[async_trait::async_trait]
//! impl Reconciler<ConfigMap> for Log {
//!     type Error = std::convert::Infallible;
//!     async fn reconcile(&self, cm: Arc<ConfigMap>) -> Result<Action, Self::Error> {
//!         tracing::info!(name = ?cm.metadata.name, "reconciled");
//!         Ok(Action::Done)
//!     }
//! }
//! # async fn run() -> bosun_client::Result<()> {
//! let factory = Arc::new(InformerFactory::new(Client::try_default()?));
//! Controller::<ConfigMap>::new(factory, None).concurrency(4).run(Log).await;
//! # Ok(()) }
//! ```

pub mod builtin;
pub mod controller;
pub mod finalizer;
pub mod leader;
pub mod workqueue;

pub use controller::{Action, Controller, Reconciler};
pub use workqueue::WorkQueue;
