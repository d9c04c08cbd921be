//! The extension points: one trait per point, and [`Plugin`], which says which points a plugin
//! implements and which cluster events may make a pod it rejected schedulable.

use crate::cache::Snapshot;
use crate::cycle_state::CycleState;
use crate::framework::Framework;
use crate::queue::QueuedPodInfo;
use crate::status::Status;
use crate::types::{NodeInfo, PodInfo};
use async_trait::async_trait;
use bosun_api_types::core::v1::Pod;
use std::any::Any;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::ops::BitOr;
use std::sync::Arc;
use std::time::Duration;

/// The highest score a Score plugin gives after normalization.
pub const MAX_NODE_SCORE: i64 = 100;
/// The lowest score.
pub const MIN_NODE_SCORE: i64 = 0;

/// A kind of object whose changes the scheduler watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventResource {
    /// Pods already bound to a node.
    AssignedPod,
    /// The pending pod itself (updates to it).
    UnscheduledPod,
    /// Nodes.
    Node,
    /// PersistentVolumes.
    PersistentVolume,
    /// PersistentVolumeClaims.
    PersistentVolumeClaim,
    /// StorageClasses.
    StorageClass,
    /// CSINodes.
    CsiNode,
    /// Namespaces.
    Namespace,
    /// Anything (a plugin registering this is retried on every event).
    WildCard,
}

/// What happened to an object, as a bit set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ActionType(pub u32);

impl ActionType {
    /// Created.
    pub const ADD: ActionType = ActionType(1);
    /// Deleted.
    pub const DELETE: ActionType = ActionType(1 << 1);
    /// A node's allocatable changed.
    pub const UPDATE_NODE_ALLOCATABLE: ActionType = ActionType(1 << 2);
    /// A node's labels changed.
    pub const UPDATE_NODE_LABEL: ActionType = ActionType(1 << 3);
    /// A node's taints or unschedulable flag changed.
    pub const UPDATE_NODE_TAINT: ActionType = ActionType(1 << 4);
    /// A node's conditions changed.
    pub const UPDATE_NODE_CONDITION: ActionType = ActionType(1 << 5);
    /// A node's annotations changed.
    pub const UPDATE_NODE_ANNOTATION: ActionType = ActionType(1 << 6);
    /// A pod's labels changed.
    pub const UPDATE_POD_LABEL: ActionType = ActionType(1 << 7);
    /// A pod's requests went down.
    pub const UPDATE_POD_SCALE_DOWN: ActionType = ActionType(1 << 8);
    /// A pod's tolerations changed.
    pub const UPDATE_POD_TOLERATIONS: ActionType = ActionType(1 << 9);
    /// A pod's last scheduling gate was removed.
    pub const UPDATE_POD_GATES_ELIMINATED: ActionType = ActionType(1 << 10);
    /// Any other update.
    pub const UPDATE_OTHER: ActionType = ActionType(1 << 11);
    /// Any update.
    pub const UPDATE: ActionType = ActionType(0b1111_1111_1100);
    /// Anything.
    pub const ALL: ActionType = ActionType(u32::MAX);

    /// Whether the two sets share an action.
    pub fn intersects(self, other: ActionType) -> bool {
        self.0 & other.0 != 0
    }
}

impl BitOr for ActionType {
    type Output = ActionType;
    fn bitor(self, rhs: ActionType) -> ActionType {
        ActionType(self.0 | rhs.0)
    }
}

/// A change in the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ClusterEvent {
    /// The kind of object.
    pub resource: EventResource,
    /// What happened.
    pub action: ActionType,
    /// A label for metrics and logs.
    pub label: &'static str,
}

impl ClusterEvent {
    /// An event.
    pub const fn new(resource: EventResource, action: ActionType, label: &'static str) -> Self {
        ClusterEvent {
            resource,
            action,
            label,
        }
    }

    /// Whether an event a plugin registered (`self`) covers the event that happened.
    pub fn covers(&self, happened: &ClusterEvent) -> bool {
        (self.resource == EventResource::WildCard || self.resource == happened.resource)
            && self.action.intersects(happened.action)
    }
}

/// Whether an event may make a rejected pod schedulable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueingHint {
    /// Requeue the pod.
    Queue,
    /// The event cannot help this pod.
    Skip,
}

/// Decides, for one rejected pod, whether an event (old and new object, downcast with
/// [`Any`]) could make it schedulable.
pub type QueueingHintFn =
    Arc<dyn Fn(&Pod, Option<&dyn Any>, Option<&dyn Any>) -> QueueingHint + Send + Sync>;

/// An event a plugin registers, with an optional hint (no hint means always requeue).
#[derive(Clone)]
pub struct ClusterEventWithHint {
    /// The event.
    pub event: ClusterEvent,
    /// The hint.
    pub hint: Option<QueueingHintFn>,
}

impl fmt::Debug for ClusterEventWithHint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} (hint: {})", self.event, self.hint.is_some())
    }
}

impl From<ClusterEvent> for ClusterEventWithHint {
    fn from(event: ClusterEvent) -> Self {
        ClusterEventWithHint { event, hint: None }
    }
}

/// A node's score from one plugin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeScore {
    /// The node's name.
    pub name: String,
    /// The score.
    pub score: i64,
}

/// Per-node statuses from the filters of one cycle.
pub type NodeStatusMap = HashMap<String, Status>;

/// Writes [`Plugin`]'s `as_*` accessors for the extension points a plugin implements, inside
/// its `impl Plugin` block:
///
/// ```
/// use bosun_scheduler_framework::{extension_points, CycleState, FilterPlugin, NodeInfo, Plugin, PodInfo, Status};
/// struct Quiet;
/// impl Plugin for Quiet {
///     fn name(&self) -> &str { "Quiet" }
///     extension_points!(filter);
/// }
/// impl FilterPlugin for Quiet {
///     fn filter(&self, _: &CycleState, _: &PodInfo, _: &NodeInfo) -> Status { Status::success() }
/// }
/// assert!(Quiet.as_filter().is_some() && Quiet.as_score().is_none());
/// ```
#[macro_export]
macro_rules! extension_points {
    ($($point:ident),* $(,)?) => { $($crate::extension_points!(@one $point);)* };
    (@one pre_enqueue) => { fn as_pre_enqueue(&self) -> Option<&dyn $crate::PreEnqueuePlugin> { Some(self) } };
    (@one queue_sort) => { fn as_queue_sort(&self) -> Option<&dyn $crate::QueueSortPlugin> { Some(self) } };
    (@one pre_filter) => { fn as_pre_filter(&self) -> Option<&dyn $crate::PreFilterPlugin> { Some(self) } };
    (@one filter) => { fn as_filter(&self) -> Option<&dyn $crate::FilterPlugin> { Some(self) } };
    (@one post_filter) => { fn as_post_filter(&self) -> Option<&dyn $crate::PostFilterPlugin> { Some(self) } };
    (@one pre_score) => { fn as_pre_score(&self) -> Option<&dyn $crate::PreScorePlugin> { Some(self) } };
    (@one score) => { fn as_score(&self) -> Option<&dyn $crate::ScorePlugin> { Some(self) } };
    (@one reserve) => { fn as_reserve(&self) -> Option<&dyn $crate::ReservePlugin> { Some(self) } };
    (@one permit) => { fn as_permit(&self) -> Option<&dyn $crate::PermitPlugin> { Some(self) } };
    (@one pre_bind) => { fn as_pre_bind(&self) -> Option<&dyn $crate::PreBindPlugin> { Some(self) } };
    (@one bind) => { fn as_bind(&self) -> Option<&dyn $crate::BindPlugin> { Some(self) } };
    (@one post_bind) => { fn as_post_bind(&self) -> Option<&dyn $crate::PostBindPlugin> { Some(self) } };
}

/// A plugin: its name, the extension points it implements (each `as_*` returns `Some(self)`
/// for an implemented point) and the events that may make pods it rejected schedulable.
///
/// ```
/// use bosun_scheduler_framework::{CycleState, FilterPlugin, NodeInfo, Plugin, PodInfo, Status};
///
/// /// Keeps pods off nodes whose name starts with `edge-`.
/// struct NoEdge;
///
/// impl Plugin for NoEdge {
///     fn name(&self) -> &str {
///         "NoEdge"
///     }
///     fn as_filter(&self) -> Option<&dyn FilterPlugin> {
///         Some(self)
///     }
/// }
///
/// impl FilterPlugin for NoEdge {
///     fn filter(&self, _: &CycleState, _: &PodInfo, node: &NodeInfo) -> Status {
///         if node.name.starts_with("edge-") {
///             Status::unschedulable("edge nodes take no pods")
///         } else {
///             Status::success()
///         }
///     }
/// }
/// ```
///
/// Register it in a [`crate::plugins::Registry`] and enable it in a profile of a
/// KubeSchedulerConfiguration; `examples/src/label_score.rs` (Score) and
/// `examples/src/coscheduling.rs` (Permit) are whole ones, with tests.
pub trait Plugin: Send + Sync + 'static {
    /// The plugin's name, as configuration refers to it.
    fn name(&self) -> &str;
    /// Events that may make a pod this plugin rejected schedulable. Empty means "any event".
    fn events_to_register(&self) -> Vec<ClusterEventWithHint> {
        Vec::new()
    }
    /// PreEnqueue.
    fn as_pre_enqueue(&self) -> Option<&dyn PreEnqueuePlugin> {
        None
    }
    /// QueueSort.
    fn as_queue_sort(&self) -> Option<&dyn QueueSortPlugin> {
        None
    }
    /// PreFilter.
    fn as_pre_filter(&self) -> Option<&dyn PreFilterPlugin> {
        None
    }
    /// Filter.
    fn as_filter(&self) -> Option<&dyn FilterPlugin> {
        None
    }
    /// PostFilter.
    fn as_post_filter(&self) -> Option<&dyn PostFilterPlugin> {
        None
    }
    /// PreScore.
    fn as_pre_score(&self) -> Option<&dyn PreScorePlugin> {
        None
    }
    /// Score.
    fn as_score(&self) -> Option<&dyn ScorePlugin> {
        None
    }
    /// Reserve.
    fn as_reserve(&self) -> Option<&dyn ReservePlugin> {
        None
    }
    /// Permit.
    fn as_permit(&self) -> Option<&dyn PermitPlugin> {
        None
    }
    /// PreBind.
    fn as_pre_bind(&self) -> Option<&dyn PreBindPlugin> {
        None
    }
    /// Bind.
    fn as_bind(&self) -> Option<&dyn BindPlugin> {
        None
    }
    /// PostBind.
    fn as_post_bind(&self) -> Option<&dyn PostBindPlugin> {
        None
    }
}

/// Runs before a pod enters the active queue; a rejection parks it (scheduling gates).
pub trait PreEnqueuePlugin: Send + Sync {
    /// Success lets the pod in; anything else keeps it out until it is updated.
    fn pre_enqueue(&self, pod: &PodInfo) -> Status;
}

/// Orders the active queue. A profile has exactly one.
pub trait QueueSortPlugin: Send + Sync {
    /// Whether `a` goes before `b`.
    fn less(&self, a: &QueuedPodInfo, b: &QueuedPodInfo) -> bool;
}

/// Computes per-cycle state before filtering; may narrow the nodes to try.
pub trait PreFilterPlugin: Send + Sync {
    /// Ok(Some(names)) restricts filtering to those nodes; Err with Skip skips this plugin's
    /// Filter; any other Err rejects the pod on every node.
    fn pre_filter(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        snapshot: &Snapshot,
    ) -> Result<Option<HashSet<String>>, Status>;
    /// AddPod/RemovePod, for preemption and nominated pods.
    fn extensions(&self) -> Option<&dyn PreFilterExtensions> {
        None
    }
}

/// Updates a PreFilter's state as if a pod were added to or removed from a node.
pub trait PreFilterExtensions: Send + Sync {
    /// `add` is (hypothetically) placed on `node`.
    fn add_pod(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        add: &Arc<PodInfo>,
        node: &NodeInfo,
    ) -> Status;
    /// `remove` is (hypothetically) taken off `node`.
    fn remove_pod(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        remove: &Arc<PodInfo>,
        node: &NodeInfo,
    ) -> Status;
}

/// Whether a pod may run on a node. Called in parallel across nodes.
pub trait FilterPlugin: Send + Sync {
    /// Success, or why not.
    fn filter(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status;
}

/// What a PostFilter achieved.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PostFilterResult {
    /// The node the pod is nominated to (after preempting pods there).
    pub nominated_node: Option<String>,
}

/// Runs when no node fits (preemption).
#[async_trait]
pub trait PostFilterPlugin: Send + Sync {
    /// Tries to make room; Success with a nominated node if it did.
    async fn post_filter(
        &self,
        state: &CycleState,
        pod: &PodInfo,
        statuses: &NodeStatusMap,
        framework: &Framework,
        snapshot: &Snapshot,
    ) -> (PostFilterResult, Status);
}

/// Computes per-cycle state for scoring from the feasible nodes.
pub trait PreScorePlugin: Send + Sync {
    /// Success, Skip (this plugin's Score is not run), or an error.
    fn pre_score(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        nodes: &[Arc<NodeInfo>],
        snapshot: &Snapshot,
    ) -> Status;
}

/// Ranks feasible nodes. Called in parallel across nodes.
pub trait ScorePlugin: Send + Sync {
    /// A raw score for `node`.
    fn score(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Result<i64, Status>;
    /// Maps raw scores into [0, 100]; the default leaves them as they are.
    fn normalize_scores(
        &self,
        _state: &CycleState,
        _pod: &PodInfo,
        _scores: &mut [NodeScore],
    ) -> Status {
        Status::success()
    }
}

/// Reserves resources for a pod on its chosen node before binding, and releases them if the
/// cycle fails later.
pub trait ReservePlugin: Send + Sync {
    /// Reserve.
    fn reserve(&self, state: &mut CycleState, pod: &PodInfo, node: &str) -> Status;
    /// Undo Reserve (must be idempotent).
    fn unreserve(&self, state: &mut CycleState, pod: &PodInfo, node: &str);
}

/// Approves, rejects or delays binding.
pub trait PermitPlugin: Send + Sync {
    /// Success to allow, Wait (with the longest wait) to delay, anything else to reject.
    fn permit(&self, state: &CycleState, pod: &PodInfo, node: &str) -> (Status, Duration);
}

/// Work before binding (volumes).
#[async_trait]
pub trait PreBindPlugin: Send + Sync {
    /// Success, or an error that unreserves the pod and retries it.
    async fn pre_bind(&self, state: &CycleState, pod: &PodInfo, node: &str) -> Status;
}

/// Binds a pod to a node. Binders run in order until one does not Skip.
#[async_trait]
pub trait BindPlugin: Send + Sync {
    /// Success, Skip (let the next binder do it), or an error.
    async fn bind(&self, state: &CycleState, pod: &PodInfo, node: &str) -> Status;
}

/// Told after a successful bind.
pub trait PostBindPlugin: Send + Sync {
    /// Informational.
    fn post_bind(&self, state: &CycleState, pod: &PodInfo, node: &str);
}
