//! The volume plugins: VolumeBinding (bound PVs' node affinity; unbound
//! WaitForFirstConsumer claims matched to a PV or marked for provisioning on the chosen node),
//! VolumeRestrictions (ReadWriteOncePod and inline disk conflicts) and NodeVolumeLimits
//! (CSINode attach limits).

use super::node_event;
use crate::cache::Snapshot;
use crate::cluster::{Cluster, Listers};
use crate::cycle_state::CycleState;
use crate::extension_points;
use crate::interface::*;
use crate::status::Status;
use crate::types::{NodeInfo, PodInfo};
use async_trait::async_trait;
use bosun_api_types::core::v1::{Node, PersistentVolume, PersistentVolumeClaim, Volume};
use bosun_api_types::placement;
use bosun_api_types::selector::LabelSelectorExt;
use serde::Deserialize;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The annotation that tells the provisioner which node the scheduler chose.
pub const SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";

fn pod_claims(pod: &PodInfo) -> impl Iterator<Item = (&Volume, &str)> {
    pod.pod
        .spec
        .iter()
        .flat_map(|s| s.volumes.iter())
        .filter_map(|v| Some((v, v.persistent_volume_claim.as_ref()?.claim_name.as_str())))
}

fn storage_events() -> Vec<ClusterEventWithHint> {
    vec![
        ClusterEvent::new(
            EventResource::PersistentVolumeClaim,
            ActionType::ADD | ActionType::UPDATE,
            "PvcChange",
        )
        .into(),
        ClusterEvent::new(
            EventResource::PersistentVolume,
            ActionType::ADD | ActionType::UPDATE,
            "PvChange",
        )
        .into(),
        ClusterEvent::new(
            EventResource::StorageClass,
            ActionType::ADD | ActionType::UPDATE,
            "StorageClassChange",
        )
        .into(),
        ClusterEvent::new(
            EventResource::CsiNode,
            ActionType::ADD | ActionType::UPDATE,
            "CsiNodeChange",
        )
        .into(),
        node_event(
            ActionType::ADD | ActionType::UPDATE_NODE_LABEL,
            "NodeLabelChange",
        ),
    ]
}

/// VolumeBindingArgs.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeBindingArgs {
    /// How long PreBind waits for claims to be bound (default 600).
    #[serde(default = "default_timeout")]
    pub bind_timeout_seconds: u64,
}

fn default_timeout() -> u64 {
    600
}

impl Default for VolumeBindingArgs {
    fn default() -> Self {
        VolumeBindingArgs {
            bind_timeout_seconds: default_timeout(),
        }
    }
}

/// The plugin.
pub struct VolumeBinding {
    args: VolumeBindingArgs,
    listers: Arc<Listers>,
    cluster: Arc<dyn Cluster>,
    /// PVs chosen for a claim in Reserve and not yet bound, so two pods do not take one PV.
    assumed: Mutex<HashSet<String>>,
}

#[derive(Clone, Debug, Default)]
struct ClaimsState {
    bound: Vec<Arc<PersistentVolume>>,
    /// Unbound WaitForFirstConsumer claims.
    to_bind: Vec<Arc<PersistentVolumeClaim>>,
    /// Decided in Reserve: (claim, Some(pv) to pre-bind, or None to provision).
    decisions: Vec<Decision>,
}

/// A claim and the PV chosen for it (None: provision one).
type Decision = (Arc<PersistentVolumeClaim>, Option<String>);

const KEY: &str = "VolumeBinding";

fn class_of(pvc: &PersistentVolumeClaim) -> String {
    pvc.spec
        .as_ref()
        .and_then(|s| s.storage_class_name.clone())
        .unwrap_or_default()
}

fn pv_node_affinity_ok(pv: &PersistentVolume, node: &Node) -> bool {
    match pv
        .spec
        .as_ref()
        .and_then(|s| s.node_affinity.as_ref())
        .and_then(|a| a.required.as_ref())
    {
        Some(sel) => placement::selector_matches(sel, node),
        None => true,
    }
}

/// Whether an available `pv` can satisfy `pvc`: class, access modes, size, selector.
fn pv_fits(pv: &PersistentVolume, pvc: &PersistentVolumeClaim) -> bool {
    let (Some(ps), Some(cs)) = (pv.spec.as_ref(), pvc.spec.as_ref()) else {
        return false;
    };
    if let Some(r) = &ps.claim_ref {
        if r.name.as_deref() != pvc.metadata.name.as_deref()
            || r.namespace != pvc.metadata.namespace
        {
            return false;
        }
    } else if pv
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .is_some_and(|p| p != "Available")
    {
        return false;
    }
    if ps.storage_class_name.clone().unwrap_or_default() != class_of(pvc) {
        return false;
    }
    if !cs.access_modes.iter().all(|m| ps.access_modes.contains(m)) {
        return false;
    }
    if ps.volume_mode.as_deref().unwrap_or("Filesystem")
        != cs.volume_mode.as_deref().unwrap_or("Filesystem")
    {
        return false;
    }
    let want = cs
        .resources
        .as_ref()
        .and_then(|r| r.requests.get("storage").copied());
    let have = ps.capacity.get("storage").copied();
    if let (Some(w), Some(h)) = (want, have) {
        if h < w {
            return false;
        }
    }
    if let Some(sel) = &cs.selector {
        match sel.to_selector() {
            Ok(s) if s.matches(&pv.metadata.labels) => {}
            _ => return false,
        }
    }
    true
}

impl VolumeBinding {
    /// The plugin.
    pub fn new(args: VolumeBindingArgs, listers: Arc<Listers>, cluster: Arc<dyn Cluster>) -> Self {
        VolumeBinding {
            args,
            listers,
            cluster,
            assumed: Mutex::new(HashSet::new()),
        }
    }

    fn assumed(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.assumed.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// For each unbound claim: a PV that fits on `node`, or None to provision. Err if one
    /// claim can be neither.
    fn decide(
        &self,
        claims: &[Arc<PersistentVolumeClaim>],
        node: &Node,
    ) -> Result<Vec<Decision>, Status> {
        let assumed = self.assumed().clone();
        let mut taken: HashSet<String> = HashSet::new();
        let mut out = Vec::new();
        let pvs = if claims.is_empty() {
            Vec::new()
        } else {
            self.listers.pvs.list()
        };
        for pvc in claims {
            let mut fitting: Vec<&Arc<PersistentVolume>> = pvs
                .iter()
                .filter(|pv| {
                    let name = pv.metadata.name.clone().unwrap_or_default();
                    !taken.contains(&name)
                        && !assumed.contains(&name)
                        && pv_fits(pv, pvc)
                        && pv_node_affinity_ok(pv, node)
                })
                .collect();
            fitting.sort_by_key(|pv| {
                pv.spec
                    .as_ref()
                    .and_then(|s| s.capacity.get("storage").copied())
            });
            if let Some(pv) = fitting.first() {
                let name = pv.metadata.name.clone().unwrap_or_default();
                taken.insert(name.clone());
                out.push((pvc.clone(), Some(name)));
                continue;
            }
            let provisionable = self
                .listers
                .storage_classes
                .get(&class_of(pvc))
                .is_some_and(|c| c.provisioner != "kubernetes.io/no-provisioner");
            if provisionable {
                out.push((pvc.clone(), None));
            } else {
                return Err(Status::unresolvable(
                    "node(s) didn't find available persistent volumes to bind",
                ));
            }
        }
        Ok(out)
    }
}

impl Plugin for VolumeBinding {
    fn name(&self) -> &str {
        "VolumeBinding"
    }
    extension_points!(pre_filter, filter, reserve, pre_bind);
    fn events_to_register(&self) -> Vec<ClusterEventWithHint> {
        storage_events()
    }
}

impl PreFilterPlugin for VolumeBinding {
    fn pre_filter(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        _: &Snapshot,
    ) -> Result<Option<HashSet<String>>, Status> {
        let mut s = ClaimsState::default();
        let mut any = false;
        for (_, claim) in pod_claims(pod) {
            any = true;
            let key = format!("{}/{claim}", pod.namespace());
            let Some(pvc) = self.listers.pvcs.get(&key) else {
                return Err(Status::unresolvable(format!(
                    "persistentvolumeclaim \"{claim}\" not found"
                )));
            };
            if pvc.metadata.deletion_timestamp.is_some() {
                return Err(Status::unresolvable(format!(
                    "persistentvolumeclaim \"{claim}\" is being deleted"
                )));
            }
            match pvc
                .spec
                .as_ref()
                .and_then(|s| s.volume_name.as_deref())
                .filter(|v| !v.is_empty())
            {
                Some(pv) => match self.listers.pvs.get(pv) {
                    Some(pv) => s.bound.push(pv),
                    None => return Err(Status::unresolvable("pvc(s) bound to non-existent pv(s)")),
                },
                None => {
                    let wait = self
                        .listers
                        .storage_classes
                        .get(&class_of(&pvc))
                        .is_some_and(|c| {
                            c.volume_binding_mode.as_deref() == Some("WaitForFirstConsumer")
                        });
                    if !wait {
                        return Err(Status::unresolvable(
                            "pod has unbound immediate PersistentVolumeClaims",
                        ));
                    }
                    s.to_bind.push(pvc);
                }
            }
        }
        if !any {
            return Err(Status::skip());
        }
        state.write(KEY, s);
        Ok(None)
    }
}

impl FilterPlugin for VolumeBinding {
    fn filter(&self, state: &CycleState, _: &PodInfo, node: &NodeInfo) -> Status {
        let (Some(s), Some(n)) = (state.read::<ClaimsState>(KEY), &node.node) else {
            return Status::success();
        };
        if s.bound.iter().any(|pv| !pv_node_affinity_ok(pv, n)) {
            return Status::unresolvable("node(s) had volume node affinity conflict");
        }
        match self.decide(&s.to_bind, n) {
            Ok(_) => Status::success(),
            Err(e) => e,
        }
    }
}

impl ReservePlugin for VolumeBinding {
    fn reserve(&self, state: &mut CycleState, _: &PodInfo, node: &str) -> Status {
        let Some(s) = state.read::<ClaimsState>(KEY).cloned() else {
            return Status::success();
        };
        if s.to_bind.is_empty() {
            return Status::success();
        }
        let Some(n) = self.listers.nodes.get(node) else {
            return Status::error(format!("node {node} not found"));
        };
        match self.decide(&s.to_bind, &n) {
            Ok(decisions) => {
                let mut a = self.assumed();
                for (_, pv) in &decisions {
                    if let Some(pv) = pv {
                        a.insert(pv.clone());
                    }
                }
                drop(a);
                if let Some(st) = state.read_mut::<ClaimsState>(KEY) {
                    st.decisions = decisions;
                }
                Status::success()
            }
            Err(e) => e,
        }
    }
    fn unreserve(&self, state: &mut CycleState, _: &PodInfo, _: &str) {
        if let Some(s) = state.read::<ClaimsState>(KEY) {
            let mut a = self.assumed();
            for (_, pv) in &s.decisions {
                if let Some(pv) = pv {
                    a.remove(pv);
                }
            }
        }
    }
}

#[async_trait]
impl PreBindPlugin for VolumeBinding {
    async fn pre_bind(&self, state: &CycleState, pod: &PodInfo, node: &str) -> Status {
        let Some(s) = state.read::<ClaimsState>(KEY) else {
            return Status::success();
        };
        if s.decisions.is_empty() {
            return Status::success();
        }
        for (pvc, pv) in &s.decisions {
            let ns = pvc.metadata.namespace.as_deref().unwrap_or("");
            let name = pvc.metadata.name.as_deref().unwrap_or("");
            let r = match pv {
                Some(pv) => self.cluster.bind_pv(pv, pvc).await,
                None => {
                    self.cluster
                        .annotate_pvc(ns, name, SELECTED_NODE, node)
                        .await
                }
            };
            if let Err(e) = r {
                return Status::error(e.to_string());
            }
        }
        // Wait until every claim is bound (the PV controller or provisioner finishes).
        let deadline =
            tokio::time::Instant::now() + Duration::from_secs(self.args.bind_timeout_seconds);
        loop {
            let all = s.decisions.iter().all(|(pvc, _)| {
                self.listers
                    .pvcs
                    .get(&crate::cluster::key_of(&pvc.metadata))
                    .is_some_and(|c| {
                        c.spec
                            .as_ref()
                            .and_then(|s| s.volume_name.as_deref())
                            .is_some_and(|v| !v.is_empty())
                    })
            });
            if all {
                let mut a = self.assumed();
                for (_, pv) in &s.decisions {
                    if let Some(pv) = pv {
                        a.remove(pv);
                    }
                }
                return Status::success();
            }
            if tokio::time::Instant::now() >= deadline {
                return Status::error(format!(
                    "binding volumes of {}: timed out waiting for the condition",
                    pod.key
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// ReadWriteOncePod claims in use elsewhere, and inline disks in use on the node.
pub struct VolumeRestrictions {
    listers: Arc<Listers>,
}

impl VolumeRestrictions {
    /// The plugin.
    pub fn new(listers: Arc<Listers>) -> Self {
        VolumeRestrictions { listers }
    }
}

#[derive(Clone, Debug, Default)]
struct RestrictionsState {
    rwop_claims: HashSet<String>,
    conflicts: i64,
}

const RESTRICTIONS_KEY: &str = "PreFilterVolumeRestrictions";

fn disk_conflict(a: &Volume, b: &Volume) -> bool {
    if let (Some(x), Some(y)) = (&a.gce_persistent_disk, &b.gce_persistent_disk) {
        return x.pd_name == y.pd_name && !(x.read_only == Some(true) && y.read_only == Some(true));
    }
    if let (Some(x), Some(y)) = (&a.aws_elastic_block_store, &b.aws_elastic_block_store) {
        return x.volume_id == y.volume_id;
    }
    if let (Some(x), Some(y)) = (&a.iscsi, &b.iscsi) {
        return x.iqn == y.iqn && !(x.read_only == Some(true) && y.read_only == Some(true));
    }
    false
}

fn has_disks(pod: &PodInfo) -> bool {
    pod.pod.spec.iter().flat_map(|s| s.volumes.iter()).any(|v| {
        v.gce_persistent_disk.is_some() || v.aws_elastic_block_store.is_some() || v.iscsi.is_some()
    })
}

impl Plugin for VolumeRestrictions {
    fn name(&self) -> &str {
        "VolumeRestrictions"
    }
    extension_points!(pre_filter, filter);
    fn events_to_register(&self) -> Vec<ClusterEventWithHint> {
        vec![
            ClusterEvent::new(
                EventResource::AssignedPod,
                ActionType::DELETE,
                "AssignedPodDelete",
            )
            .into(),
            ClusterEvent::new(
                EventResource::PersistentVolumeClaim,
                ActionType::ADD | ActionType::UPDATE,
                "PvcChange",
            )
            .into(),
            node_event(ActionType::ADD, "NodeAdd"),
        ]
    }
}

impl PreFilterPlugin for VolumeRestrictions {
    fn pre_filter(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        snapshot: &Snapshot,
    ) -> Result<Option<HashSet<String>>, Status> {
        let mut s = RestrictionsState::default();
        for (_, claim) in pod_claims(pod) {
            let key = format!("{}/{claim}", pod.namespace());
            let rwop = self.listers.pvcs.get(&key).is_some_and(|c| {
                c.spec
                    .as_ref()
                    .is_some_and(|s| s.access_modes.iter().any(|m| m == "ReadWriteOncePod"))
            });
            if rwop {
                s.rwop_claims.insert(key);
            }
        }
        if s.rwop_claims.is_empty() && !has_disks(pod) {
            return Err(Status::skip());
        }
        for n in snapshot.nodes() {
            s.conflicts += s
                .rwop_claims
                .iter()
                .filter(|c| n.pvc_refs.contains_key(*c))
                .count() as i64;
        }
        state.write(RESTRICTIONS_KEY, s);
        Ok(None)
    }
    fn extensions(&self) -> Option<&dyn PreFilterExtensions> {
        Some(self)
    }
}

impl VolumeRestrictions {
    fn adjust(state: &mut CycleState, other: &PodInfo, delta: i64) {
        if let Some(s) = state.read_mut::<RestrictionsState>(RESTRICTIONS_KEY) {
            let n = crate::types::pvc_names(other)
                .filter(|c| s.rwop_claims.contains(c))
                .count() as i64;
            s.conflicts += delta * n;
        }
    }
}

impl PreFilterExtensions for VolumeRestrictions {
    fn add_pod(
        &self,
        state: &mut CycleState,
        _: &PodInfo,
        add: &Arc<PodInfo>,
        _: &NodeInfo,
    ) -> Status {
        Self::adjust(state, add, 1);
        Status::success()
    }
    fn remove_pod(
        &self,
        state: &mut CycleState,
        _: &PodInfo,
        remove: &Arc<PodInfo>,
        _: &NodeInfo,
    ) -> Status {
        Self::adjust(state, remove, -1);
        Status::success()
    }
}

impl FilterPlugin for VolumeRestrictions {
    fn filter(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        if let Some(s) = state.read::<RestrictionsState>(RESTRICTIONS_KEY) {
            if s.conflicts > 0 {
                return Status::unschedulable(
                    "node has pod using PersistentVolumeClaim with the same name and ReadWriteOncePod access mode",
                );
            }
        }
        let mine: Vec<&Volume> = pod.pod.spec.iter().flat_map(|s| s.volumes.iter()).collect();
        for other in &node.pods {
            for v in other.pod.spec.iter().flat_map(|s| s.volumes.iter()) {
                if mine.iter().any(|m| disk_conflict(m, v)) {
                    return Status::unschedulable("node(s) had no available disk");
                }
            }
        }
        Status::success()
    }
}

/// CSI volumes per driver must stay within the node's CSINode allocatable count.
pub struct NodeVolumeLimits {
    listers: Arc<Listers>,
}

impl NodeVolumeLimits {
    /// The plugin.
    pub fn new(listers: Arc<Listers>) -> Self {
        NodeVolumeLimits { listers }
    }

    /// CSI volumes of a pod: (driver, handle).
    fn csi_volumes(&self, pod: &PodInfo) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for v in pod.pod.spec.iter().flat_map(|s| s.volumes.iter()) {
            if let Some(c) = &v.persistent_volume_claim {
                let key = format!("{}/{}", pod.namespace(), c.claim_name);
                let pv = self
                    .listers
                    .pvcs
                    .get(&key)
                    .and_then(|pvc| pvc.spec.as_ref()?.volume_name.clone())
                    .and_then(|pv| self.listers.pvs.get(&pv));
                if let Some(csi) = pv.as_ref().and_then(|pv| pv.spec.as_ref()?.csi.as_ref()) {
                    out.push((csi.driver.clone(), csi.volume_handle.clone()));
                }
            } else if let Some(csi) = &v.csi {
                out.push((csi.driver.clone(), format!("{}/{}", pod.key, v.name)));
            }
        }
        out
    }
}

impl Plugin for NodeVolumeLimits {
    fn name(&self) -> &str {
        "NodeVolumeLimits"
    }
    extension_points!(filter);
    fn events_to_register(&self) -> Vec<ClusterEventWithHint> {
        vec![
            ClusterEvent::new(
                EventResource::AssignedPod,
                ActionType::DELETE,
                "AssignedPodDelete",
            )
            .into(),
            ClusterEvent::new(
                EventResource::CsiNode,
                ActionType::ADD | ActionType::UPDATE,
                "CsiNodeChange",
            )
            .into(),
            node_event(ActionType::ADD, "NodeAdd"),
        ]
    }
}

impl FilterPlugin for NodeVolumeLimits {
    fn filter(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        let new = self.csi_volumes(pod);
        if new.is_empty() {
            return Status::success();
        }
        let Some(csi_node) = self.listers.csi_nodes.get(&node.name) else {
            return Status::success();
        };
        let limits: HashMap<&str, i64> = csi_node
            .spec
            .drivers
            .iter()
            .filter_map(|d| Some((d.name.as_str(), d.allocatable.as_ref()?.count? as i64)))
            .collect();
        let mut in_use: HashMap<String, HashSet<String>> = HashMap::new();
        for p in &node.pods {
            for (d, h) in self.csi_volumes(p) {
                in_use.entry(d).or_default().insert(h);
            }
        }
        let mut adding: HashMap<String, HashSet<String>> = HashMap::new();
        for (d, h) in new {
            if !in_use.get(&d).is_some_and(|s| s.contains(&h)) {
                adding.entry(d).or_default().insert(h);
            }
        }
        for (d, add) in adding {
            if let Some(limit) = limits.get(d.as_str()) {
                let used = in_use.get(&d).map(HashSet::len).unwrap_or(0) as i64;
                if used + add.len() as i64 > *limit {
                    return Status::unschedulable("node(s) exceed max volume count");
                }
            }
        }
        Status::success()
    }
}
