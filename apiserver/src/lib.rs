//! The Kubernetes REST API, served over HTTP/1.1 and HTTP/2 from any [`bosun_store::Store`].
//!
//! Real clients (kubectl, client-go tools, the Python `kubernetes` client, the Rust `kube`
//! crate) talk to it unchanged: discovery, CRUD with upstream's metadata rules and `Status`
//! errors, lists with selectors and pagination, and watch streams.
//!
//! ```no_run
//! use bosun_apiserver::ApiServer;
//! use bosun_store::memory::MemoryStore;
//! use std::sync::Arc;
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let server = ApiServer::new(Arc::new(MemoryStore::new()));
//! server.bootstrap().await?; // namespaces default, kube-system, …
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:6443").await?;
//! server.serve(listener, std::future::pending()).await?;
//! # Ok(()) }
//! ```
//!
//! A library user serves their own kinds by adding [`ApiResource`]s to a [`ResourceTable`] and
//! passing it to [`ApiServer::with_resources`].

pub mod admission;
pub mod allocator;
pub mod audit;
pub mod auth;
pub mod bootstrap_policy;
mod cache;
pub mod certificates;
pub mod connection;
pub mod crd;
mod defaults;
pub mod discovery;
pub mod encryption;
pub mod error;
pub mod impersonation;
mod managed;
mod metrics;
mod negotiate;
pub mod node;
pub mod object;
pub mod openapi;
pub mod pki;
mod pods;
pub mod podsecurity;
pub mod printers;
mod proxy;
pub mod rbac;
pub mod request;
pub mod resources;
mod rest;
mod scale;
mod server;
pub mod serviceaccount;
pub mod validate;
pub mod webhook;

pub use error::ApiError;
pub use resources::{ApiResource, ResourceTable};
pub use server::{error_response, ApiServer, Body, Config, KUBERNETES_VERSION};
