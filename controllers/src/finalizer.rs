//! The finalizer helper: a reconciler's object carries `name` as a finalizer while it lives, and
//! when it is deleted the cleanup runs before the finalizer is removed (so the object goes only
//! once the cleanup has succeeded).
//!
//! ```no_run
//! use bosun_controllers::finalizer::{finalizer, Event};
//! use bosun_controllers::controller::Action;
//! use bosun_client::Api;
//! use bosun_api_types::core::v1::ConfigMap;
//! # async fn reconcile(api: Api<ConfigMap>, cm: std::sync::Arc<ConfigMap>) -> Result<Action, Box<dyn std::error::Error>> {
//! let action = finalizer(&api, "example.com/cleanup", cm, |event| async move {
//!     match event {
//!         Event::Apply(cm) => { /* make the world match cm */ Ok::<_, std::io::Error>(Action::Done) }
//!         Event::Cleanup(cm) => { /* undo what was made */ Ok(Action::Done) }
//!     }
//! })
//! .await?;
//! # Ok(action) }
//! ```

use crate::controller::Action;
use bosun_api_types::Resource;
use bosun_client::{Api, Patch, PatchParams};
use std::future::Future;
use std::sync::Arc;

/// What the helper asks the reconciler to do.
#[derive(Debug)]
pub enum Event<K> {
    /// The object lives (and carries the finalizer): reconcile it.
    Apply(Arc<K>),
    /// The object is being deleted: clean up.
    Cleanup(Arc<K>),
}

/// Why the helper failed.
#[derive(Debug, thiserror::Error)]
pub enum Error<E: std::fmt::Display> {
    /// The reconciler's apply or cleanup failed.
    #[error("{0}")]
    Reconcile(E),
    /// Adding or removing the finalizer failed.
    #[error("updating the finalizers: {0}")]
    Client(#[from] bosun_client::Error),
    /// The object has no name.
    #[error("the object has no name")]
    Unnamed,
}

/// Runs `reconcile` under the finalizer `name` (see the module documentation).
pub async fn finalizer<K, E, F, Fut>(
    api: &Api<K>,
    name: &str,
    obj: Arc<K>,
    reconcile: F,
) -> Result<Action, Error<E>>
where
    K: Resource,
    E: std::fmt::Display,
    F: FnOnce(Event<K>) -> Fut,
    Fut: Future<Output = Result<Action, E>>,
{
    let meta = obj.metadata();
    let object_name = meta.name.clone().ok_or(Error::Unnamed)?;
    let index = meta.finalizers.iter().position(|f| f == name);
    let rv = meta.resource_version.clone().unwrap_or_default();
    match (meta.deletion_timestamp.is_some(), index) {
        // Deleting, and ours to finish: clean up, then let it go.
        (true, Some(i)) => {
            let action = reconcile(Event::Cleanup(Arc::clone(&obj)))
                .await
                .map_err(Error::Reconcile)?;
            let patch = serde_json::json!([
                {"op": "test", "path": "/metadata/resourceVersion", "value": rv},
                {"op": "test", "path": format!("/metadata/finalizers/{i}"), "value": name},
                {"op": "remove", "path": format!("/metadata/finalizers/{i}")},
            ]);
            api.patch(&object_name, &PatchParams::default(), &Patch::Json(&patch))
                .await?;
            Ok(action)
        }
        // Deleting, not ours (anymore): nothing to do.
        (true, None) => Ok(Action::Done),
        // Alive without the finalizer: add it first (the change brings the object back).
        (false, None) => {
            let patch = if meta.finalizers.is_empty() {
                serde_json::json!([
                    {"op": "test", "path": "/metadata/resourceVersion", "value": rv},
                    {"op": "add", "path": "/metadata/finalizers", "value": [name]},
                ])
            } else {
                serde_json::json!([
                    {"op": "test", "path": "/metadata/resourceVersion", "value": rv},
                    {"op": "add", "path": "/metadata/finalizers/-", "value": name},
                ])
            };
            api.patch(&object_name, &PatchParams::default(), &Patch::Json(&patch))
                .await?;
            Ok(Action::Done)
        }
        (false, Some(_)) => reconcile(Event::Apply(obj)).await.map_err(Error::Reconcile),
    }
}
