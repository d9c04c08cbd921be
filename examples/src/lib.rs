//! Examples of building on Bosun's crates.
//!
//! [`greeting`]: a controller for a custom resource (`Greeting`, `example.com/v1`) against the
//! typed client: every Greeting gets a ConfigMap it owns holding its message, and its status
//! records what was written. Run it against a cluster with
//! `cargo run -p bosun-examples --bin greeting-controller` (it installs its CRD first).

pub mod greeting;
