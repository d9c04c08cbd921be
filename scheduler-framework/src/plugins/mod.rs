//! Upstream's default plugins, the [`Registry`] that builds plugins by name, and the default
//! profile's plugin order and score weights.

mod basic;
mod interpod;
mod preemption;
mod resources;
mod spread;
mod volumes;

pub use basic::{
    ports_conflict, ImageLocality, NodeAffinity, NodeName, NodePorts, NodeUnschedulable,
    PrioritySort, SchedulingGates, TaintToleration,
};
pub use interpod::{InterPodAffinity, InterPodAffinityArgs};
pub use preemption::{Candidate, DefaultPreemption, PreemptionArgs};
pub use resources::{
    BalancedArgs, FitArgs, NodeResourcesBalancedAllocation, NodeResourcesFit,
    RequestedToCapacityRatioParam, ResourceSpec, ScoringStrategy, UtilizationShapePoint,
};
pub use spread::{PodTopologySpread, SpreadArgs};
pub use volumes::{
    NodeVolumeLimits, VolumeBinding, VolumeBindingArgs, VolumeRestrictions, SELECTED_NODE,
};

use crate::config::ConfigError;
use crate::cycle_state::CycleState;
use crate::extension_points;
use crate::framework::Handle;
use crate::interface::*;
use crate::status::Status;
use crate::types::PodInfo;
use async_trait::async_trait;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;

/// Upstream's DefaultNormalizeScore: scales scores so the highest becomes `max`
/// (`reverse` flips them, for "fewer is better" counts).
pub fn default_normalize(max: i64, reverse: bool, scores: &mut [NodeScore]) {
    let highest = scores.iter().map(|s| s.score).max().unwrap_or(0);
    if highest == 0 {
        if reverse {
            for s in scores.iter_mut() {
                s.score = max;
            }
        }
        return;
    }
    for s in scores.iter_mut() {
        let v = max * s.score / highest;
        s.score = if reverse { max - v } else { v };
    }
}

pub(crate) fn node_event(action: ActionType, label: &'static str) -> ClusterEventWithHint {
    ClusterEvent::new(EventResource::Node, action, label).into()
}

pub(crate) fn pod_event(resource: EventResource, action: ActionType) -> ClusterEventWithHint {
    ClusterEvent::new(resource, action, "PodChange").into()
}

/// Binds through [`crate::cluster::Cluster::bind`] (pods/binding with the real client).
pub struct DefaultBinder {
    handle: Handle,
}

impl DefaultBinder {
    /// The binder.
    pub fn new(handle: Handle) -> Self {
        DefaultBinder { handle }
    }
}

impl Plugin for DefaultBinder {
    fn name(&self) -> &str {
        "DefaultBinder"
    }
    extension_points!(bind);
}

#[async_trait]
impl BindPlugin for DefaultBinder {
    async fn bind(&self, _: &CycleState, pod: &PodInfo, node: &str) -> Status {
        match self.handle.cluster.bind(&pod.pod, node).await {
            Ok(()) => Status::success(),
            Err(e) => Status::error(e.to_string()),
        }
    }
}

/// Builds a plugin from its `pluginConfig` args (None when not configured).
pub type Factory =
    Arc<dyn Fn(Option<&Value>, &Handle) -> Result<Arc<dyn Plugin>, ConfigError> + Send + Sync>;

/// Plugin factories by name: upstream's in-tree plugins, plus any out-of-tree ones.
#[derive(Clone)]
pub struct Registry {
    factories: HashMap<String, Factory>,
}

fn args<T: DeserializeOwned + Default>(name: &str, v: Option<&Value>) -> Result<T, ConfigError> {
    match v {
        None | Some(Value::Null) => Ok(T::default()),
        Some(v) => {
            let mut v = v.clone();
            if let Some(o) = v.as_object_mut() {
                o.remove("apiVersion");
                o.remove("kind");
            }
            serde_json::from_value(v).map_err(|e| ConfigError::Invalid(format!("{name} args: {e}")))
        }
    }
}

impl Default for Registry {
    fn default() -> Self {
        Registry::in_tree()
    }
}

impl Registry {
    /// An empty registry.
    pub fn empty() -> Self {
        Registry {
            factories: HashMap::new(),
        }
    }

    /// Upstream's in-tree plugins.
    pub fn in_tree() -> Self {
        let mut r = Registry::empty();
        fn simple<P: Plugin>(p: impl Fn() -> P + Send + Sync + 'static) -> Factory {
            Arc::new(move |_, _| Ok(Arc::new(p()) as Arc<dyn Plugin>))
        }
        r.register("PrioritySort", simple(|| PrioritySort));
        r.register("SchedulingGates", simple(|| SchedulingGates));
        r.register("NodeUnschedulable", simple(|| NodeUnschedulable));
        r.register("NodeName", simple(|| NodeName));
        r.register("TaintToleration", simple(|| TaintToleration));
        r.register("NodeAffinity", simple(|| NodeAffinity));
        r.register("NodePorts", simple(|| NodePorts));
        r.register("ImageLocality", simple(|| ImageLocality));
        r.register(
            "NodeResourcesFit",
            Arc::new(|a, _| {
                Ok(
                    Arc::new(NodeResourcesFit::new(args("NodeResourcesFit", a)?)?)
                        as Arc<dyn Plugin>,
                )
            }),
        );
        r.register(
            "NodeResourcesBalancedAllocation",
            Arc::new(|a, _| {
                Ok(Arc::new(NodeResourcesBalancedAllocation::new(args(
                    "NodeResourcesBalancedAllocation",
                    a,
                )?)) as Arc<dyn Plugin>)
            }),
        );
        r.register(
            "PodTopologySpread",
            Arc::new(|a, h| {
                Ok(Arc::new(PodTopologySpread::new(
                    args("PodTopologySpread", a)?,
                    h.listers.clone(),
                )) as Arc<dyn Plugin>)
            }),
        );
        r.register(
            "InterPodAffinity",
            Arc::new(|a, h| {
                Ok(Arc::new(InterPodAffinity::new(
                    args("InterPodAffinity", a)?,
                    h.listers.clone(),
                )) as Arc<dyn Plugin>)
            }),
        );
        r.register(
            "VolumeBinding",
            Arc::new(|a, h| {
                Ok(Arc::new(VolumeBinding::new(
                    args("VolumeBinding", a)?,
                    h.listers.clone(),
                    h.cluster.clone(),
                )) as Arc<dyn Plugin>)
            }),
        );
        r.register(
            "VolumeRestrictions",
            Arc::new(|_, h| {
                Ok(Arc::new(VolumeRestrictions::new(h.listers.clone())) as Arc<dyn Plugin>)
            }),
        );
        r.register(
            "NodeVolumeLimits",
            Arc::new(|_, h| {
                Ok(Arc::new(NodeVolumeLimits::new(h.listers.clone())) as Arc<dyn Plugin>)
            }),
        );
        r.register(
            "DefaultPreemption",
            Arc::new(|a, h| {
                Ok(Arc::new(DefaultPreemption::new(
                    args("DefaultPreemption", a)?,
                    h.listers.clone(),
                    h.cluster.clone(),
                )) as Arc<dyn Plugin>)
            }),
        );
        r.register(
            "DefaultBinder",
            Arc::new(|_, h| Ok(Arc::new(DefaultBinder::new(h.clone())) as Arc<dyn Plugin>)),
        );
        r
    }

    /// Adds (or replaces) a factory.
    pub fn register(&mut self, name: &str, factory: Factory) -> &mut Self {
        self.factories.insert(name.to_string(), factory);
        self
    }

    /// Builds the plugin `name`.
    pub fn build(
        &self,
        name: &str,
        args: Option<&Value>,
        handle: &Handle,
    ) -> Result<Arc<dyn Plugin>, ConfigError> {
        let f = self
            .factories
            .get(name)
            .ok_or_else(|| ConfigError::Invalid(format!("plugin {name:?} does not exist")))?;
        f(args, handle)
    }
}

/// The default profile's plugins in order, with score weights (upstream's v1 defaults).
pub const DEFAULT_PLUGINS: &[(&str, i64)] = &[
    ("SchedulingGates", 0),
    ("PrioritySort", 0),
    ("NodeUnschedulable", 0),
    ("NodeName", 0),
    ("TaintToleration", 3),
    ("NodeAffinity", 2),
    ("NodePorts", 0),
    ("NodeResourcesFit", 1),
    ("VolumeRestrictions", 0),
    ("NodeVolumeLimits", 0),
    ("VolumeBinding", 0),
    ("PodTopologySpread", 2),
    ("InterPodAffinity", 2),
    ("DefaultPreemption", 0),
    ("NodeResourcesBalancedAllocation", 1),
    ("ImageLocality", 1),
    ("DefaultBinder", 0),
];

#[cfg(test)]
mod tests {
    use super::*;

    fn scores(v: &[i64]) -> Vec<NodeScore> {
        v.iter()
            .enumerate()
            .map(|(i, s)| NodeScore {
                name: i.to_string(),
                score: *s,
            })
            .collect()
    }

    #[test]
    fn default_normalize_matches_upstream() {
        let mut s = scores(&[0, 1, 2, 4]);
        default_normalize(100, false, &mut s);
        assert_eq!(
            s.iter().map(|s| s.score).collect::<Vec<_>>(),
            [0, 25, 50, 100]
        );
        let mut s = scores(&[0, 1, 2, 4]);
        default_normalize(100, true, &mut s);
        assert_eq!(
            s.iter().map(|s| s.score).collect::<Vec<_>>(),
            [100, 75, 50, 0]
        );
        let mut s = scores(&[0, 0]);
        default_normalize(100, true, &mut s);
        assert_eq!(s.iter().map(|s| s.score).collect::<Vec<_>>(), [100, 100]);
    }
}
