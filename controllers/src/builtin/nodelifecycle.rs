//! Node lifecycle, taint-based eviction and node IPAM, on one periodic monitor (upstream's
//! node-lifecycle, taint-eviction and node-ipam controllers).
//!
//! - A node whose kubelet has not renewed its Lease (or posted its Ready condition) for the
//!   grace period (40 s by default) gets its conditions set to Unknown ("Kubelet stopped
//!   posting node status."), its pods marked not Ready, and the
//!   `node.kubernetes.io/unreachable` NoExecute and NoSchedule taints; a node reporting
//!   Ready=False gets `node.kubernetes.io/not-ready` instead. A node Ready again loses them.
//! - A pod on a node with NoExecute taints it does not tolerate is deleted (after the shortest
//!   matching `tolerationSeconds` when it tolerates them for a while), with a
//!   `DisruptionTarget` condition saying why.
//! - Every node without one gets a `podCIDR` from the cluster CIDR.

use bosun_api_types::coordination::v1::Lease;
use bosun_api_types::core::v1::{Node, NodeCondition, Pod, PodCondition, Taint};
use bosun_api_types::Time;
use bosun_client::informer::InformerFactory;
use bosun_client::reflector::{Key, Store};
use bosun_client::{Api, Client, DeleteParams, Patch, PatchParams, PostParams};
use std::collections::{BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The taint of a node whose status is Unknown.
pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
/// The taint of a node reporting Ready=False.
pub const NOT_READY: &str = "node.kubernetes.io/not-ready";

/// How the monitor runs.
#[derive(Debug, Clone)]
pub struct Config {
    /// How often nodes and pods are looked at (upstream: 5 s).
    pub monitor_period: Duration,
    /// How long a kubelet may stay silent before its node is Unknown (upstream: 40 s).
    pub grace_period: Duration,
    /// The cluster's pod network, cut into one block per node (`None`: no IPAM).
    pub cluster_cidr: Option<(Ipv4Addr, u8)>,
    /// The prefix length of each node's block (upstream: 24).
    pub node_mask: u8,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            monitor_period: Duration::from_secs(5),
            grace_period: Duration::from_secs(40),
            cluster_cidr: Some((Ipv4Addr::new(10, 244, 0, 0), 16)),
            node_mask: 24,
        }
    }
}

/// Parses `a.b.c.d/n`.
pub fn parse_cidr(s: &str) -> Option<(Ipv4Addr, u8)> {
    let (ip, len) = s.split_once('/')?;
    let len: u8 = len.parse().ok().filter(|l| *l <= 32)?;
    Some((ip.parse().ok()?, len))
}

/// The node lifecycle monitor.
pub struct NodeLifecycle {
    client: Client,
    config: Config,
    nodes: Store<Node>,
    leases: Store<Lease>,
    pods: Store<Pod>,
    /// Node notifications: a new node gets its pod CIDR at once, not at the next pass.
    node_events: tokio::sync::broadcast::Receiver<bosun_client::informer::Notification<Node>>,
    /// Per node: the last heartbeat seen and when (on this clock) it changed.
    seen: HashMap<String, (String, Instant)>,
}

/// The node's heartbeat as last posted: its Lease's renew time and its Ready condition's
/// heartbeat time.
fn heartbeat(node: &Node, lease: Option<&Lease>) -> String {
    let renew = lease
        .and_then(|l| l.spec.as_ref())
        .and_then(|s| s.renew_time)
        .map(|t| t.to_string())
        .unwrap_or_default();
    let ready = ready_condition(node)
        .and_then(|c| c.last_heartbeat_time)
        .map(|t| t.to_string())
        .unwrap_or_default();
    format!("{renew}|{ready}")
}

fn ready_condition(node: &Node) -> Option<&NodeCondition> {
    node.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.r#type == "Ready")
}

fn tolerates(
    tolerations: &[bosun_api_types::core::v1::Toleration],
    taint: &Taint,
) -> Option<Option<i64>> {
    for t in tolerations {
        let effect_ok = t
            .effect
            .as_deref()
            .is_none_or(|e| e.is_empty() || e == taint.effect);
        let key_ok = match t.operator.as_deref() {
            Some("Exists") => t
                .key
                .as_deref()
                .is_none_or(|k| k.is_empty() || k == taint.key),
            _ => {
                t.key.as_deref() == Some(taint.key.as_str())
                    && t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or("")
            }
        };
        if effect_ok && key_ok {
            return Some(t.toleration_seconds);
        }
    }
    None
}

impl NodeLifecycle {
    /// The monitor on `factory`'s informers.
    pub fn new(client: Client, factory: &Arc<InformerFactory>, config: Config) -> Self {
        let nodes = factory.informer::<Node>(None);
        NodeLifecycle {
            client,
            config,
            node_events: nodes.subscribe(),
            nodes: nodes.store(),
            leases: factory.informer::<Lease>(Some("kube-node-lease")).store(),
            pods: factory.informer::<Pod>(None).store(),
            seen: HashMap::new(),
        }
    }

    /// Runs the monitor until the task is dropped.
    pub async fn run(mut self) {
        self.nodes.wait_until_ready().await;
        self.leases.wait_until_ready().await;
        self.pods.wait_until_ready().await;
        let mut tick = tokio::time::interval(self.config.monitor_period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if let Err(e) = self.monitor().await {
                        tracing::warn!(error = %e, "node monitor");
                    }
                }
                event = self.node_events.recv() => {
                    let needs_cidr = match &event {
                        Ok(n) => n.object().spec.as_ref().is_none_or(|s| s.pod_cidr.is_none()),
                        // Fell behind: look at every node.
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => true,
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                            tick.tick().await;
                            false
                        }
                    };
                    if needs_cidr {
                        let api: Api<Node> = Api::all(self.client.clone());
                        if let Err(e) = self.assign_cidrs(&api, &self.nodes.list()).await {
                            tracing::warn!(error = %e, "assigning pod CIDRs");
                        }
                    }
                }
            }
        }
    }

    /// One pass over nodes and pods.
    pub async fn monitor(&mut self) -> bosun_client::Result<()> {
        let nodes = self.nodes.list();
        let api: Api<Node> = Api::all(self.client.clone());
        self.assign_cidrs(&api, &nodes).await?;
        let now = Instant::now();
        self.seen
            .retain(|n, _| nodes.iter().any(|x| x.metadata.name.as_deref() == Some(n)));
        for node in &nodes {
            let name = node.metadata.name.clone().unwrap_or_default();
            let lease = self.leases.get(&Key::namespaced("kube-node-lease", &name));
            let beat = heartbeat(node, lease.as_deref());
            let entry = self
                .seen
                .entry(name.clone())
                .or_insert_with(|| (beat.clone(), now));
            if entry.0 != beat {
                *entry = (beat, now);
            }
            let silent = now.duration_since(entry.1) > self.config.grace_period;
            let mut status = ready_condition(node)
                .map(|c| c.status.clone())
                .unwrap_or_else(|| "Unknown".into());
            if silent && status != "Unknown" {
                self.mark_unknown(&api, node).await?;
                self.mark_pods_not_ready(&name).await?;
                status = "Unknown".into();
            }
            let want: Option<&str> = match status.as_str() {
                "True" => None,
                "False" => Some(NOT_READY),
                _ => Some(UNREACHABLE),
            };
            self.set_taints(&api, node, want).await?;
        }
        self.evict(&nodes).await
    }

    /// Gives every node without one a block of the cluster CIDR.
    async fn assign_cidrs(&self, api: &Api<Node>, nodes: &[Arc<Node>]) -> bosun_client::Result<()> {
        let Some((base, len)) = self.config.cluster_cidr else {
            return Ok(());
        };
        let mask = self.config.node_mask;
        if mask < len || mask > 32 {
            return Ok(());
        }
        let block = |i: u32| -> String {
            let ip = u32::from(base) + (i << (32 - u32::from(mask)));
            format!("{}/{mask}", Ipv4Addr::from(ip))
        };
        let count = 1u32 << (u32::from(mask - len)).min(31);
        let used: BTreeSet<String> = nodes
            .iter()
            .filter_map(|n| n.spec.as_ref()?.pod_cidr.clone())
            .collect();
        let mut next = 0u32;
        for node in nodes {
            if node.spec.as_ref().is_some_and(|s| s.pod_cidr.is_some()) {
                continue;
            }
            while next < count && used.contains(&block(next)) {
                next += 1;
            }
            if next >= count {
                tracing::warn!(node = ?node.metadata.name, "no pod CIDR left in the cluster CIDR");
                return Ok(());
            }
            let cidr = block(next);
            next += 1;
            let patch = serde_json::json!({"spec": {"podCIDR": cidr, "podCIDRs": [cidr]}});
            match api
                .patch(
                    node.metadata.name.as_deref().unwrap_or_default(),
                    &PatchParams::default(),
                    &Patch::Merge(patch),
                )
                .await
            {
                Ok(_) => tracing::info!(node = ?node.metadata.name, %cidr, "assigned a pod CIDR"),
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    async fn mark_unknown(&self, api: &Api<Node>, node: &Node) -> bosun_client::Result<()> {
        let mut updated = node.clone();
        let now = Time::now();
        let status = updated.status.get_or_insert_with(Default::default);
        for t in ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"] {
            match status.conditions.iter_mut().find(|c| c.r#type == t) {
                Some(c) => {
                    if c.status != "Unknown" {
                        c.last_transition_time = Some(now);
                    }
                    c.status = "Unknown".into();
                    c.reason = Some("NodeStatusUnknown".into());
                    c.message = Some("Kubelet stopped posting node status.".into());
                }
                None => status.conditions.push(NodeCondition {
                    r#type: t.into(),
                    status: "Unknown".into(),
                    reason: Some("NodeStatusNeverUpdated".into()),
                    message: Some("Kubelet never posted node status.".into()),
                    last_heartbeat_time: node.metadata.creation_timestamp,
                    last_transition_time: Some(now),
                }),
            }
        }
        let name = node.metadata.name.clone().unwrap_or_default();
        tracing::info!(node = %name, "node stopped posting status; marking it Unknown");
        match api
            .replace_status(&name, &PostParams::default(), &updated)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() || e.is_conflict() => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn mark_pods_not_ready(&self, node: &str) -> bosun_client::Result<()> {
        for pod in self.pods.list() {
            if pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) != Some(node) {
                continue;
            }
            let ready = pod.status.as_ref().is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.r#type == "Ready" && c.status == "True")
            });
            if !ready {
                continue;
            }
            let mut updated = (*pod).clone();
            if let Some(status) = updated.status.as_mut() {
                for c in status.conditions.iter_mut().filter(|c| c.r#type == "Ready") {
                    c.status = "False".into();
                    c.last_transition_time = Some(Time::now());
                }
            }
            let api: Api<Pod> = Api::namespaced(
                self.client.clone(),
                pod.metadata.namespace.as_deref().unwrap_or(""),
            );
            match api
                .replace_status(
                    pod.metadata.name.as_deref().unwrap_or_default(),
                    &PostParams::default(),
                    &updated,
                )
                .await
            {
                Ok(_) => {}
                Err(e) if e.is_not_found() || e.is_conflict() => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Keeps exactly the wanted lifecycle taint (NoExecute and NoSchedule) on the node.
    async fn set_taints(
        &self,
        api: &Api<Node>,
        node: &Node,
        want: Option<&str>,
    ) -> bosun_client::Result<()> {
        let taints = node
            .spec
            .as_ref()
            .map(|s| s.taints.clone())
            .unwrap_or_default();
        let ours = |t: &Taint| {
            (t.key == UNREACHABLE || t.key == NOT_READY)
                && (t.effect == "NoExecute" || t.effect == "NoSchedule")
        };
        let mut next: Vec<Taint> = taints
            .iter()
            .filter(|t| !ours(t) || Some(t.key.as_str()) == want)
            .cloned()
            .collect();
        if let Some(key) = want {
            for effect in ["NoSchedule", "NoExecute"] {
                if !next.iter().any(|t| t.key == key && t.effect == effect) {
                    next.push(Taint {
                        key: key.into(),
                        effect: effect.into(),
                        time_added: (effect == "NoExecute").then(Time::now),
                        value: None,
                    });
                }
            }
        }
        if next == taints {
            return Ok(());
        }
        let patch = serde_json::json!({"spec": {"taints": next}, "metadata": {"resourceVersion": node.metadata.resource_version}});
        match api
            .patch(
                node.metadata.name.as_deref().unwrap_or_default(),
                &PatchParams::default(),
                &Patch::Merge(patch),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() || e.is_conflict() => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Deletes the pods NoExecute taints no longer let stay.
    async fn evict(&self, nodes: &[Arc<Node>]) -> bosun_client::Result<()> {
        let now = Time::now().unix_seconds();
        let tainted: HashMap<String, Vec<Taint>> = nodes
            .iter()
            .filter_map(|n| {
                let t: Vec<Taint> = n
                    .spec
                    .as_ref()?
                    .taints
                    .iter()
                    .filter(|t| t.effect == "NoExecute")
                    .cloned()
                    .collect();
                (!t.is_empty()).then(|| (n.metadata.name.clone().unwrap_or_default(), t))
            })
            .collect();
        if tainted.is_empty() {
            return Ok(());
        }
        for pod in self.pods.list() {
            if pod.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let Some(taints) = pod
                .spec
                .as_ref()
                .and_then(|s| s.node_name.as_ref())
                .and_then(|n| tainted.get(n))
            else {
                continue;
            };
            let tolerations = pod
                .spec
                .as_ref()
                .map(|s| s.tolerations.clone())
                .unwrap_or_default();
            // When the pod must go: now if any taint is not tolerated, else after the shortest
            // tolerationSeconds (counted from when the taint was added).
            let mut due: Option<i64> = None;
            let mut forever = true;
            for t in taints {
                match tolerates(&tolerations, t) {
                    None => {
                        due = Some(now);
                        forever = false;
                    }
                    Some(None) => {}
                    Some(Some(secs)) => {
                        forever = false;
                        let added = t.time_added.map_or(now, |a| a.unix_seconds());
                        let at = added + secs.max(0);
                        due = Some(due.map_or(at, |d| d.min(at)));
                    }
                }
            }
            if forever || due.is_none_or(|d| d > now) {
                continue;
            }
            let ns = pod.metadata.namespace.clone().unwrap_or_default();
            let name = pod.metadata.name.clone().unwrap_or_default();
            let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
            // Say why first, as upstream does.
            let mut marked = (*pod).clone();
            let status = marked.status.get_or_insert_with(Default::default);
            if !status
                .conditions
                .iter()
                .any(|c| c.r#type == "DisruptionTarget")
            {
                status.conditions.push(PodCondition {
                    r#type: "DisruptionTarget".into(),
                    status: "True".into(),
                    reason: Some("DeletionByTaintManager".into()),
                    message: Some("Taint manager: deleting due to NoExecute taint".into()),
                    last_transition_time: Some(Time::now()),
                    ..Default::default()
                });
                let _ = api
                    .replace_status(&name, &PostParams::default(), &marked)
                    .await;
            }
            let params = DeleteParams {
                precondition_uid: pod.metadata.uid.clone(),
                ..Default::default()
            };
            match api.delete(&name, &params).await {
                Ok(_) => {
                    tracing::info!(pod = %format!("{ns}/{name}"), "evicted by a NoExecute taint")
                }
                Err(e) if e.is_not_found() || e.is_conflict() => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tolerations_match_taints() {
        let taint = Taint {
            key: UNREACHABLE.into(),
            effect: "NoExecute".into(),
            value: None,
            time_added: None,
        };
        let t = |json: serde_json::Value| -> bosun_api_types::core::v1::Toleration {
            serde_json::from_value(json).unwrap_or_default()
        };
        assert_eq!(tolerates(&[], &taint), None);
        assert_eq!(
            tolerates(
                &[t(
                    serde_json::json!({"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 5})
                )],
                &taint
            ),
            Some(Some(5))
        );
        assert_eq!(
            tolerates(&[t(serde_json::json!({"operator": "Exists"}))], &taint),
            Some(None)
        );
        assert_eq!(
            tolerates(
                &[t(serde_json::json!({"key": "other", "operator": "Exists"}))],
                &taint
            ),
            None
        );
        assert_eq!(
            parse_cidr("10.244.0.0/16"),
            Some((Ipv4Addr::new(10, 244, 0, 0), 16))
        );
        assert_eq!(parse_cidr("10.244.0.0/33"), None);
    }
}
