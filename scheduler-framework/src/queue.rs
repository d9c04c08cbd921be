//! The scheduling queue, with upstream's three parts:
//! - **activeQ**, a heap ordered by the QueueSort plugin (priority, then arrival);
//! - **backoffQ**, pods that failed recently, each waiting `1 s × 2^(attempts-1)` (at most
//!   10 s) before going back to activeQ;
//! - **unschedulable pods**, parked until a cluster event that one of the plugins that rejected
//!   them registered for (and whose queueing hint agrees) happens, or until they have waited
//!   five minutes; pods held back by a PreEnqueue plugin (scheduling gates) wait there too,
//!   until they are updated.
//!
//! It also keeps the nominator: pods nominated to a node by preemption, which later cycles
//! account for on that node.

use crate::interface::{ClusterEvent, ClusterEventWithHint, Plugin, QueueingHint};
use crate::status::Status;
use crate::types::PodInfo;
use bosun_api_types::core::v1::Pod;
use std::any::Any;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// A pod in the queue with its scheduling history.
#[derive(Clone, Debug)]
pub struct QueuedPodInfo {
    /// The pod.
    pub info: Arc<PodInfo>,
    /// When the pod was last added to the queue (activeQ order) or last failed (backoff).
    pub timestamp: Instant,
    /// How many times it was popped for scheduling.
    pub attempts: u32,
    /// When it was first added (for end-to-end latency).
    pub initial_timestamp: Instant,
    /// Plugins that rejected it in its last attempt.
    pub unschedulable_plugins: HashSet<String>,
    /// Whether a PreEnqueue plugin holds it back.
    pub gated: bool,
    /// The PreEnqueue plugin's status when gated.
    pub gating_status: Option<Status>,
    seq: u64,
}

impl QueuedPodInfo {
    /// The pod's UID.
    pub fn uid(&self) -> &str {
        self.info.uid()
    }
}

/// Timing of the queue (upstream's defaults).
#[derive(Clone, Debug)]
pub struct QueueConfig {
    /// Backoff after the first failure.
    pub initial_backoff: Duration,
    /// The longest backoff.
    pub max_backoff: Duration,
    /// How long a pod may stay unschedulable before the periodic flush retries it anyway.
    pub max_in_unschedulable: Duration,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(10),
            max_in_unschedulable: Duration::from_secs(300),
        }
    }
}

/// A binary heap with an index, so entries can be updated and removed by UID.
#[derive(Debug, Default)]
struct Heap {
    items: Vec<QueuedPodInfo>,
    pos: HashMap<String, usize>,
}

type Less<'a> = &'a dyn Fn(&QueuedPodInfo, &QueuedPodInfo) -> bool;

impl Heap {
    fn len(&self) -> usize {
        self.items.len()
    }
    fn contains(&self, uid: &str) -> bool {
        self.pos.contains_key(uid)
    }
    fn get(&self, uid: &str) -> Option<&QueuedPodInfo> {
        self.pos.get(uid).map(|i| &self.items[*i])
    }
    fn peek(&self) -> Option<&QueuedPodInfo> {
        self.items.first()
    }
    fn swap(&mut self, a: usize, b: usize) {
        self.items.swap(a, b);
        self.pos.insert(self.items[a].uid().to_string(), a);
        self.pos.insert(self.items[b].uid().to_string(), b);
    }
    fn up(&mut self, mut i: usize, less: Less) {
        while i > 0 {
            let parent = (i - 1) / 2;
            if !less(&self.items[i], &self.items[parent]) {
                break;
            }
            self.swap(i, parent);
            i = parent;
        }
    }
    fn down(&mut self, mut i: usize, less: Less) {
        loop {
            let (l, r) = (2 * i + 1, 2 * i + 2);
            let mut best = i;
            if l < self.items.len() && less(&self.items[l], &self.items[best]) {
                best = l;
            }
            if r < self.items.len() && less(&self.items[r], &self.items[best]) {
                best = r;
            }
            if best == i {
                return;
            }
            self.swap(i, best);
            i = best;
        }
    }
    /// Adds or replaces (by UID).
    fn push(&mut self, item: QueuedPodInfo, less: Less) {
        let uid = item.uid().to_string();
        if let Some(&i) = self.pos.get(&uid) {
            self.items[i] = item;
            self.up(i, less);
            let i = self.pos[&uid];
            self.down(i, less);
            return;
        }
        self.items.push(item);
        let i = self.items.len() - 1;
        self.pos.insert(uid, i);
        self.up(i, less);
    }
    fn remove(&mut self, uid: &str, less: Less) -> Option<QueuedPodInfo> {
        let i = self.pos.remove(uid)?;
        let last = self.items.len() - 1;
        if i != last {
            self.items.swap(i, last);
            self.pos.insert(self.items[i].uid().to_string(), i);
        }
        let out = self.items.pop();
        if i < self.items.len() {
            self.down(i, less);
            self.up(i, less);
        }
        out
    }
    fn pop(&mut self, less: Less) -> Option<QueuedPodInfo> {
        let uid = self.items.first()?.uid().to_string();
        self.remove(&uid, less)
    }
}

/// How many pods wait in each part of the queue.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PendingPods {
    /// In activeQ.
    pub active: usize,
    /// In backoffQ.
    pub backoff: usize,
    /// Unschedulable (gated ones excluded).
    pub unschedulable: usize,
    /// Held back by a PreEnqueue plugin.
    pub gated: usize,
}

struct Inner {
    active: Heap,
    backoff: Heap,
    unschedulable: HashMap<String, QueuedPodInfo>,
    in_flight: HashSet<String>,
    scheduling_cycle: u64,
    move_request_cycle: u64,
    seq: u64,
    closed: bool,
    /// Nominated node by pod UID, and the pods nominated to each node.
    nominated: HashMap<String, (String, Arc<PodInfo>)>,
    by_node: HashMap<String, Vec<String>>,
}

/// Plugins the queue consults: QueueSort, PreEnqueue per scheduler name, and the events each
/// plugin registered.
#[derive(Clone, Default)]
pub struct QueuePlugins {
    /// The QueueSort plugin (PrioritySort when None).
    pub sort: Option<Arc<dyn Plugin>>,
    /// PreEnqueue plugins by scheduler name.
    pub pre_enqueue: HashMap<String, Vec<Arc<dyn Plugin>>>,
    /// Events registered by plugin name.
    pub events: HashMap<String, Vec<ClusterEventWithHint>>,
}

/// The scheduling queue. Cheap to share behind an `Arc`; every method takes `&self`.
pub struct SchedulingQueue {
    inner: Mutex<Inner>,
    notify: Notify,
    plugins: QueuePlugins,
    config: QueueConfig,
}

fn default_less(a: &QueuedPodInfo, b: &QueuedPodInfo) -> bool {
    let (pa, pb) = (a.info.priority(), b.info.priority());
    pa > pb || (pa == pb && (a.timestamp, a.seq) < (b.timestamp, b.seq))
}

fn scheduler_name(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.scheduler_name.as_deref())
        .unwrap_or("default-scheduler")
}

impl SchedulingQueue {
    /// An empty queue.
    pub fn new(plugins: QueuePlugins, config: QueueConfig) -> Self {
        SchedulingQueue {
            inner: Mutex::new(Inner {
                active: Heap::default(),
                backoff: Heap::default(),
                unschedulable: HashMap::new(),
                in_flight: HashSet::new(),
                scheduling_cycle: 0,
                move_request_cycle: 0,
                seq: 0,
                closed: false,
                nominated: HashMap::new(),
                by_node: HashMap::new(),
            }),
            notify: Notify::new(),
            plugins,
            config,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn less(&self) -> impl Fn(&QueuedPodInfo, &QueuedPodInfo) -> bool + '_ {
        move |a, b| match self.plugins.sort.as_ref().and_then(|p| p.as_queue_sort()) {
            Some(s) => s.less(a, b),
            None => default_less(a, b),
        }
    }

    fn backoff_less(&self) -> impl Fn(&QueuedPodInfo, &QueuedPodInfo) -> bool + '_ {
        move |a, b| self.backoff_expiry(a) < self.backoff_expiry(b)
    }

    /// How long a pod with this many attempts backs off.
    pub fn backoff_duration(&self, attempts: u32) -> Duration {
        let mut d = self.config.initial_backoff;
        for _ in 1..attempts {
            d *= 2;
            if d > self.config.max_backoff {
                return self.config.max_backoff;
            }
        }
        d.min(self.config.max_backoff)
    }

    fn backoff_expiry(&self, p: &QueuedPodInfo) -> Instant {
        p.timestamp + self.backoff_duration(p.attempts)
    }

    fn run_pre_enqueue(&self, p: &mut QueuedPodInfo) {
        let name = scheduler_name(&p.info.pod);
        p.gated = false;
        p.gating_status = None;
        for plugin in self.plugins.pre_enqueue.get(name).into_iter().flatten() {
            if let Some(pe) = plugin.as_pre_enqueue() {
                let s = pe.pre_enqueue(&p.info);
                if !s.is_success() {
                    p.gated = true;
                    p.gating_status = Some(s.with_plugin(plugin.name()));
                    p.unschedulable_plugins = HashSet::from([plugin.name().to_string()]);
                    return;
                }
            }
        }
    }

    /// A new pending pod.
    pub fn add(&self, info: Arc<PodInfo>) {
        self.add_at(info, Instant::now());
    }

    /// A new pending pod, as if added at `now`.
    pub fn add_at(&self, info: Arc<PodInfo>, now: Instant) {
        let mut g = self.lock();
        g.seq += 1;
        let mut p = QueuedPodInfo {
            info,
            timestamp: now,
            attempts: 0,
            initial_timestamp: now,
            unschedulable_plugins: HashSet::new(),
            gated: false,
            gating_status: None,
            seq: g.seq,
        };
        self.run_pre_enqueue(&mut p);
        let uid = p.uid().to_string();
        if p.gated {
            g.unschedulable.insert(uid, p);
            return;
        }
        g.unschedulable.remove(&uid);
        g.backoff.remove(&uid, &self.backoff_less());
        g.active.push(p, &self.less());
        drop(g);
        self.notify.notify_one();
    }

    /// A pending pod changed. Gated pods are re-checked; others move to activeQ (or stay in
    /// backoff while it lasts) so the change gets a fresh attempt.
    pub fn update(&self, info: Arc<PodInfo>) {
        let now = Instant::now();
        let uid = info.uid().to_string();
        let mut g = self.lock();
        if let Some(mut p) = g.active.get(&uid).cloned() {
            p.info = info;
            g.active.push(p, &self.less());
            return;
        }
        if let Some(mut p) = g.backoff.get(&uid).cloned() {
            p.info = info;
            g.backoff.push(p, &self.backoff_less());
            return;
        }
        if let Some(mut p) = g.unschedulable.remove(&uid) {
            p.info = info;
            let was_gated = p.gated;
            self.run_pre_enqueue(&mut p);
            if p.gated {
                g.unschedulable.insert(uid, p);
                return;
            }
            if was_gated {
                p.timestamp = now;
            }
            self.requeue_locked(&mut g, p, now);
            drop(g);
            self.notify.notify_one();
            return;
        }
        if g.in_flight.contains(&uid) {
            return;
        }
        drop(g);
        self.add_at(info, now);
    }

    /// A pending pod was deleted (or bound by someone else).
    pub fn delete(&self, uid: &str) {
        let mut g = self.lock();
        g.active.remove(uid, &self.less());
        g.backoff.remove(uid, &self.backoff_less());
        g.unschedulable.remove(uid);
        Self::delete_nominated_locked(&mut g, uid);
    }

    /// Takes the next pod, waiting for one; None once the queue is closed.
    pub async fn pop(&self) -> Option<QueuedPodInfo> {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(p) = self.try_pop() {
                return Some(p);
            }
            if self.lock().closed {
                return None;
            }
            notified.await;
        }
    }

    /// Takes the next pod if one is ready.
    pub fn try_pop(&self) -> Option<QueuedPodInfo> {
        let mut g = self.lock();
        let mut p = g.active.pop(&self.less())?;
        g.scheduling_cycle += 1;
        p.attempts += 1;
        g.in_flight.insert(p.uid().to_string());
        Some(p)
    }

    /// The scheduling cycle counter (bumped by every pop).
    pub fn scheduling_cycle(&self) -> u64 {
        self.lock().scheduling_cycle
    }

    /// The pod's attempt ended (scheduled or not).
    pub fn done(&self, uid: &str) {
        self.lock().in_flight.remove(uid);
    }

    /// A pod failed in the cycle `cycle`: it waits in backoffQ if something may have changed
    /// while it was being scheduled (or it failed with an error), otherwise among the
    /// unschedulable pods.
    pub fn add_unschedulable(&self, mut p: QueuedPodInfo, cycle: u64) {
        let now = Instant::now();
        p.timestamp = now;
        let uid = p.uid().to_string();
        let mut g = self.lock();
        g.in_flight.remove(&uid);
        if g.active.contains(&uid) || g.backoff.contains(&uid) || g.unschedulable.contains_key(&uid)
        {
            return;
        }
        if g.move_request_cycle >= cycle || p.unschedulable_plugins.is_empty() {
            g.backoff.push(p, &self.backoff_less());
        } else {
            g.unschedulable.insert(uid, p);
        }
    }

    fn requeue_locked(&self, g: &mut Inner, p: QueuedPodInfo, now: Instant) {
        if self.backoff_expiry(&p) > now && p.attempts > 0 {
            g.backoff.push(p, &self.backoff_less());
        } else {
            g.active.push(p, &self.less());
        }
    }

    fn hint_queues(
        &self,
        p: &QueuedPodInfo,
        event: &ClusterEvent,
        old: Option<&dyn Any>,
        new: Option<&dyn Any>,
    ) -> bool {
        if p.unschedulable_plugins.is_empty() {
            return true;
        }
        p.unschedulable_plugins.iter().any(|plugin| {
            match self.plugins.events.get(plugin) {
                // A plugin that registered nothing is retried on every event.
                None => true,
                Some(evs) if evs.is_empty() => true,
                Some(evs) => evs.iter().any(|e| {
                    e.event.covers(event)
                        && e.hint
                            .as_ref()
                            .is_none_or(|h| h(&p.info.pod, old, new) == QueueingHint::Queue)
                }),
            }
        })
    }

    /// A cluster event happened: unschedulable pods that a rejecting plugin said it may help
    /// move to backoffQ or activeQ.
    pub fn on_event(&self, event: ClusterEvent, old: Option<&dyn Any>, new: Option<&dyn Any>) {
        let now = Instant::now();
        let mut g = self.lock();
        g.move_request_cycle = g.scheduling_cycle;
        let moving: Vec<String> = g
            .unschedulable
            .iter()
            .filter(|(_, p)| !p.gated && self.hint_queues(p, &event, old, new))
            .map(|(uid, _)| uid.clone())
            .collect();
        let any = !moving.is_empty();
        for uid in moving {
            if let Some(p) = g.unschedulable.remove(&uid) {
                self.requeue_locked(&mut g, p, now);
            }
        }
        drop(g);
        if any {
            self.notify.notify_waiters();
            self.notify.notify_one();
        }
    }

    /// Moves pods whose backoff ended to activeQ, and pods unschedulable for too long back to
    /// the queue. Run about once a second.
    pub fn flush(&self, now: Instant) {
        let mut g = self.lock();
        let mut moved = false;
        while let Some(p) = g.backoff.peek() {
            if self.backoff_expiry(p) > now {
                break;
            }
            if let Some(p) = g.backoff.pop(&self.backoff_less()) {
                g.active.push(p, &self.less());
                moved = true;
            }
        }
        let stale: Vec<String> = g
            .unschedulable
            .iter()
            .filter(|(_, p)| {
                !p.gated && now.duration_since(p.timestamp) > self.config.max_in_unschedulable
            })
            .map(|(uid, _)| uid.clone())
            .collect();
        for uid in stale {
            if let Some(p) = g.unschedulable.remove(&uid) {
                self.requeue_locked(&mut g, p, now);
                moved = true;
            }
        }
        drop(g);
        if moved {
            self.notify.notify_one();
        }
    }

    /// How many pods wait where.
    pub fn pending(&self) -> PendingPods {
        let g = self.lock();
        let gated = g.unschedulable.values().filter(|p| p.gated).count();
        PendingPods {
            active: g.active.len(),
            backoff: g.backoff.len(),
            unschedulable: g.unschedulable.len() - gated,
            gated,
        }
    }

    /// Whether the pod is anywhere in the queue (or being scheduled).
    pub fn contains(&self, uid: &str) -> bool {
        let g = self.lock();
        g.active.contains(uid)
            || g.backoff.contains(uid)
            || g.unschedulable.contains_key(uid)
            || g.in_flight.contains(uid)
    }

    /// Where the pod waits: "active", "backoff", "unschedulable", "gated" or None.
    pub fn location(&self, uid: &str) -> Option<&'static str> {
        let g = self.lock();
        if g.active.contains(uid) {
            Some("active")
        } else if g.backoff.contains(uid) {
            Some("backoff")
        } else {
            g.unschedulable
                .get(uid)
                .map(|p| if p.gated { "gated" } else { "unschedulable" })
        }
    }

    /// Stops [`SchedulingQueue::pop`] waiters.
    pub fn close(&self) {
        self.lock().closed = true;
        self.notify.notify_waiters();
        self.notify.notify_one();
    }

    /// Records that `pod` is nominated to `node` (preemption made room there).
    pub fn add_nominated(&self, pod: Arc<PodInfo>, node: &str) {
        let mut g = self.lock();
        let uid = pod.uid().to_string();
        Self::delete_nominated_locked(&mut g, &uid);
        g.by_node
            .entry(node.to_string())
            .or_default()
            .push(uid.clone());
        g.nominated.insert(uid, (node.to_string(), pod));
    }

    fn delete_nominated_locked(g: &mut Inner, uid: &str) {
        if let Some((node, _)) = g.nominated.remove(uid) {
            if let Some(v) = g.by_node.get_mut(&node) {
                v.retain(|u| u != uid);
                if v.is_empty() {
                    g.by_node.remove(&node);
                }
            }
        }
    }

    /// Forgets a nomination.
    pub fn delete_nominated(&self, uid: &str) {
        Self::delete_nominated_locked(&mut self.lock(), uid);
    }

    /// The node a pod is nominated to.
    pub fn nominated_node(&self, uid: &str) -> Option<String> {
        self.lock().nominated.get(uid).map(|(n, _)| n.clone())
    }

    /// The pods nominated to `node`.
    pub fn nominated_pods(&self, node: &str) -> Vec<Arc<PodInfo>> {
        let g = self.lock();
        g.by_node
            .get(node)
            .into_iter()
            .flatten()
            .filter_map(|uid| g.nominated.get(uid).map(|(_, p)| p.clone()))
            .collect()
    }

    /// Whether any pod is nominated anywhere (a fast path for the filters).
    pub fn has_nominated(&self) -> bool {
        !self.lock().nominated.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::interface::{ActionType, EventResource};
    use serde_json::json;

    fn pod(uid: &str, prio: i32) -> Arc<PodInfo> {
        PodInfo::new(Arc::new(
            serde_json::from_value(
                json!({"metadata": {"name": uid, "namespace": "d", "uid": uid},
                "spec": {"priority": prio, "containers": [{"name": "c"}]}}),
            )
            .unwrap(),
        ))
    }

    fn queue(events: Vec<(&str, Vec<ClusterEventWithHint>)>) -> SchedulingQueue {
        SchedulingQueue::new(
            QueuePlugins {
                events: events
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect(),
                ..Default::default()
            },
            QueueConfig::default(),
        )
    }

    const NODE_ADD: ClusterEvent =
        ClusterEvent::new(EventResource::Node, ActionType::ADD, "NodeAdd");
    const PVC_ADD: ClusterEvent = ClusterEvent::new(
        EventResource::PersistentVolumeClaim,
        ActionType::ADD,
        "PvcAdd",
    );

    #[test]
    fn active_queue_orders_by_priority_then_arrival() {
        let q = queue(vec![]);
        let t = Instant::now();
        q.add_at(pod("a", 0), t);
        q.add_at(pod("b", 10), t + Duration::from_millis(1));
        q.add_at(pod("c", 0), t + Duration::from_millis(2));
        q.add_at(pod("d", 10), t + Duration::from_millis(3));
        let order: Vec<String> =
            std::iter::from_fn(|| q.try_pop().map(|p| p.uid().to_string())).collect();
        assert_eq!(order, ["b", "d", "a", "c"]);
    }

    #[test]
    fn backoff_doubles_from_one_to_ten_seconds() {
        let q = queue(vec![]);
        let d: Vec<u64> = (1..=6).map(|a| q.backoff_duration(a).as_secs()).collect();
        assert_eq!(d, [1, 2, 4, 8, 10, 10]);
    }

    #[test]
    fn unschedulable_pods_move_only_on_registered_events() {
        let q = queue(vec![("NodeResourcesFit", vec![NODE_ADD.into()])]);
        q.add(pod("a", 0));
        let mut p = q.try_pop().unwrap();
        let cycle = q.scheduling_cycle();
        p.unschedulable_plugins.insert("NodeResourcesFit".into());
        q.add_unschedulable(p, cycle);
        assert_eq!(q.location("a"), Some("unschedulable"));
        q.on_event(PVC_ADD, None, None);
        assert_eq!(q.location("a"), Some("unschedulable"));
        q.on_event(NODE_ADD, None, None);
        // Still within its 1 s backoff.
        assert_eq!(q.location("a"), Some("backoff"));
        q.flush(Instant::now() + Duration::from_secs(2));
        assert_eq!(q.location("a"), Some("active"));
    }

    #[test]
    fn queueing_hints_can_skip() {
        let hint: crate::interface::QueueingHintFn = Arc::new(|_, _, _| QueueingHint::Skip);
        let q = queue(vec![(
            "P",
            vec![ClusterEventWithHint {
                event: NODE_ADD,
                hint: Some(hint),
            }],
        )]);
        q.add(pod("a", 0));
        let mut p = q.try_pop().unwrap();
        p.unschedulable_plugins.insert("P".into());
        q.add_unschedulable(p, q.scheduling_cycle());
        q.on_event(NODE_ADD, None, None);
        assert_eq!(q.location("a"), Some("unschedulable"));
        // The periodic flush retries it after five minutes anyway.
        q.flush(Instant::now() + Duration::from_secs(301));
        assert_eq!(q.location("a"), Some("active"));
    }

    #[test]
    fn an_event_during_the_attempt_sends_the_pod_to_backoff() {
        let q = queue(vec![("P", vec![NODE_ADD.into()])]);
        q.add(pod("a", 0));
        let mut p = q.try_pop().unwrap();
        let cycle = q.scheduling_cycle();
        q.on_event(PVC_ADD, None, None);
        p.unschedulable_plugins.insert("P".into());
        q.add_unschedulable(p, cycle);
        assert_eq!(q.location("a"), Some("backoff"));
    }

    #[test]
    fn nominator_tracks_pods_per_node() {
        let q = queue(vec![]);
        q.add_nominated(pod("a", 5), "n1");
        q.add_nominated(pod("b", 5), "n1");
        q.add_nominated(pod("a", 5), "n2");
        assert_eq!(q.nominated_pods("n1").len(), 1);
        assert_eq!(q.nominated_node("a").as_deref(), Some("n2"));
        q.delete("a");
        assert!(q.nominated_pods("n2").is_empty());
    }

    #[tokio::test]
    async fn pop_waits_for_a_pod() {
        let q = Arc::new(queue(vec![]));
        let q2 = q.clone();
        let h = tokio::spawn(async move { q2.pop().await.map(|p| p.uid().to_string()) });
        tokio::task::yield_now().await;
        q.add(pod("x", 0));
        assert_eq!(h.await.unwrap().as_deref(), Some("x"));
        let q3 = q.clone();
        let h = tokio::spawn(async move { q3.pop().await.is_none() });
        tokio::task::yield_now().await;
        q.close();
        assert!(h.await.unwrap());
    }
}
