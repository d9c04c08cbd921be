//! Examples of building on Bosun's crates.
//!
//! [`orchestrator`]: a custom orchestrator assembled from the crates (API server, scheduler,
//! controllers, kubelets on the simulated runtime) around a custom store, [`log_store`],
//! written from scratch and proven by `bosun_store::conformance`. Run it with
//! `cargo run -p bosun-examples --bin orchestrator` and use kubectl against it.
//!
//! [`greeting`]: a controller for a custom resource (`Greeting`, `example.com/v1`) against the
//! typed client: every Greeting gets a ConfigMap it owns holding its message, and its status
//! records what was written. Run it against a cluster with
//! `cargo run -p bosun-examples --bin greeting-controller` (it installs its CRD first).
//!
//! [`label_score`]: an out-of-tree Score plugin (prefer nodes by a numeric label) in a custom
//! scheduler profile. [`coscheduling`]: a Permit plugin that holds the pods of a group until
//! enough of them have a node, then lets them all bind (gang scheduling).
//!
//! [`team_label`]: an admission plugin (mutating and validating) added to the API server's
//! pipeline: Pods must carry a team label, filled in from a `team-NAME` namespace.

pub mod coscheduling;
pub mod greeting;
pub mod label_score;
pub mod log_store;
pub mod orchestrator;
pub mod team_label;

/// The README's Rust snippets, compiled by the doc tests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeSnippets;
