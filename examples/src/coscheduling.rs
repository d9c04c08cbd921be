//! Gang scheduling with a Permit plugin: pods labelled
//! `scheduling.example.com/pod-group: G` with `scheduling.example.com/min-available: N` wait
//! at Permit, holding their node, until N pods of the group have one; then all of them bind.
//! If the group does not fill up within the timeout, the waiting pods are rejected, release
//! their nodes and are retried later.

use bosun_scheduler_framework::config::ConfigError;
use bosun_scheduler_framework::framework::{Handle, WaitingPods};
use bosun_scheduler_framework::plugins::Registry;
use bosun_scheduler_framework::{
    extension_points, CycleState, PermitPlugin, Plugin, PodInfo, ReservePlugin, SchedulerConfig,
    Status,
};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The plugin's name in configuration.
pub const NAME: &str = "Coscheduling";
/// The label naming a pod's group.
pub const GROUP: &str = "scheduling.example.com/pod-group";
/// The label giving the group's minimum size.
pub const MIN_AVAILABLE: &str = "scheduling.example.com/min-available";

/// The plugin: which pods of each group hold a node (reserved or bound).
pub struct Coscheduling {
    waiting: Arc<WaitingPods>,
    placed: Mutex<HashMap<String, HashSet<String>>>,
    timeout: Duration,
}

fn group(pod: &PodInfo) -> Option<(String, usize)> {
    let labels = &pod.pod.metadata.labels;
    let name = labels.get(GROUP)?;
    let min = labels.get(MIN_AVAILABLE)?.parse().ok()?;
    Some((format!("{}/{name}", pod.namespace()), min))
}

impl Coscheduling {
    /// The plugin, allowing waiting pods through `handle`.
    pub fn new(handle: &Handle, timeout: Duration) -> Self {
        Coscheduling {
            waiting: handle.waiting_pods.clone(),
            placed: Mutex::new(HashMap::new()),
            timeout,
        }
    }

    fn placed(&self) -> std::sync::MutexGuard<'_, HashMap<String, HashSet<String>>> {
        self.placed.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Plugin for Coscheduling {
    fn name(&self) -> &str {
        NAME
    }
    extension_points!(reserve, permit);
}

impl ReservePlugin for Coscheduling {
    fn reserve(&self, _: &mut CycleState, pod: &PodInfo, _: &str) -> Status {
        if let Some((g, _)) = group(pod) {
            self.placed()
                .entry(g)
                .or_default()
                .insert(pod.uid().to_string());
        }
        Status::success()
    }
    fn unreserve(&self, _: &mut CycleState, pod: &PodInfo, _: &str) {
        if let Some((g, _)) = group(pod) {
            if let Some(set) = self.placed().get_mut(&g) {
                set.remove(pod.uid());
            }
        }
    }
}

impl PermitPlugin for Coscheduling {
    fn permit(&self, _: &CycleState, pod: &PodInfo, _: &str) -> (Status, Duration) {
        let Some((g, min)) = group(pod) else {
            return (Status::success(), Duration::ZERO);
        };
        let placed = self.placed().get(&g).map(HashSet::len).unwrap_or(0);
        if placed < min {
            return (
                Status::new(
                    bosun_scheduler_framework::Code::Wait,
                    "waiting for the group",
                ),
                self.timeout,
            );
        }
        // The group is complete: release the others, and let this one through.
        for (waiting, _) in self.waiting.list() {
            if group(&waiting).is_some_and(|(wg, _)| wg == g) {
                self.waiting.allow(waiting.uid(), NAME);
            }
        }
        (Status::success(), Duration::ZERO)
    }
}

/// The in-tree plugins plus this one (waiting at most `timeout`).
pub fn registry(timeout: Duration) -> Registry {
    let mut r = Registry::in_tree();
    r.register(
        NAME,
        Arc::new(move |_, handle| {
            Ok(Arc::new(Coscheduling::new(handle, timeout)) as Arc<dyn Plugin>)
        }),
    );
    r
}

/// The default profile plus `scheduler_name` with this plugin at Reserve and Permit.
pub fn config(scheduler_name: &str) -> Result<SchedulerConfig, ConfigError> {
    let yaml = format!(
        "apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
profiles:
- schedulerName: default-scheduler
- schedulerName: {scheduler_name}
  plugins:
    multiPoint:
      enabled:
      - name: {NAME}
"
    );
    SchedulerConfig::parse(yaml.as_bytes())
}
