//! PersistentVolume binding and the `local-path` provisioner.
//!
//! A claim without a volume is bound to the smallest Available volume that fits it (class,
//! access modes, volume mode, size, selector) — the volume's `claimRef` first, then the claim's
//! `volumeName`, with both phases Bound. When none fits and the claim's StorageClass is
//! provisioned by [`PROVISIONER`], a hostPath volume is made for it under the node's
//! local-path directory: at once for `Immediate` classes, or once the scheduler has chosen a
//! node (`volume.kubernetes.io/selected-node`) for `WaitForFirstConsumer` ones, pinned to that
//! node. The controller also makes the `local-path` StorageClass the default when the cluster
//! has no default class. A volume whose claim is gone is Released, and deleted when its
//! reclaim policy says Delete.

use crate::controller::{Action, Controller, Reconciler};
use bosun_api_types::core::v1::{ObjectReference, PersistentVolume, PersistentVolumeClaim};
use bosun_api_types::selector::LabelSelectorExt;
use bosun_api_types::storage::v1::StorageClass;
use bosun_api_types::Quantity;
use bosun_client::informer::InformerFactory;
use bosun_client::reflector::{Key, Store};
use bosun_client::{Api, Client, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use std::sync::Arc;

/// The provisioner name of the `local-path` class.
pub const PROVISIONER: &str = "bosun.dev/local-path";
/// The annotation the scheduler sets on a claim waiting for its first consumer.
pub const SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";
/// Where local-path volumes live on a node.
pub const BASE_DIR: &str = "/var/lib/bosun/local-path";

/// The binder and provisioner's logic.
pub struct Volumes {
    client: Client,
    volumes: Store<PersistentVolume>,
    classes: Store<StorageClass>,
}

fn request(pvc: &PersistentVolumeClaim) -> Option<Quantity> {
    pvc.spec
        .as_ref()?
        .resources
        .as_ref()?
        .requests
        .get("storage")
        .copied()
}

fn class_of_claim(pvc: &PersistentVolumeClaim) -> String {
    pvc.spec
        .as_ref()
        .and_then(|s| s.storage_class_name.clone())
        .unwrap_or_default()
}

/// Whether `pv` can serve `pvc`.
fn fits(pv: &PersistentVolume, pvc: &PersistentVolumeClaim) -> bool {
    let (Some(vs), Some(cs)) = (pv.spec.as_ref(), pvc.spec.as_ref()) else {
        return false;
    };
    if pv.metadata.deletion_timestamp.is_some() {
        return false;
    }
    // Free, or pre-bound to this claim.
    if let Some(r) = &vs.claim_ref {
        let same = r.name == pvc.metadata.name && r.namespace == pvc.metadata.namespace;
        if !same
            || r.uid
                .as_ref()
                .is_some_and(|u| Some(u) != pvc.metadata.uid.as_ref())
        {
            return false;
        }
    }
    if vs.storage_class_name.clone().unwrap_or_default() != class_of_claim(pvc) {
        return false;
    }
    if vs.volume_mode.as_deref().unwrap_or("Filesystem")
        != cs.volume_mode.as_deref().unwrap_or("Filesystem")
    {
        return false;
    }
    if !cs.access_modes.iter().all(|m| vs.access_modes.contains(m)) {
        return false;
    }
    if let (Some(want), Some(have)) = (request(pvc), vs.capacity.get("storage")) {
        if *have < want {
            return false;
        }
    }
    if let Some(sel) = &cs.selector {
        if !sel
            .to_selector()
            .is_ok_and(|s| s.matches(&pv.metadata.labels))
        {
            return false;
        }
    }
    true
}

fn claim_ref(pvc: &PersistentVolumeClaim) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("PersistentVolumeClaim".into()),
        namespace: pvc.metadata.namespace.clone(),
        name: pvc.metadata.name.clone(),
        uid: pvc.metadata.uid.clone(),
        resource_version: pvc.metadata.resource_version.clone(),
        ..Default::default()
    }
}

impl Volumes {
    /// The controller (claims, and volumes mapped to the claims that may want them) and its
    /// logic.
    pub fn new(
        client: Client,
        factory: &Arc<InformerFactory>,
    ) -> (Controller<PersistentVolumeClaim>, Self) {
        let claims = factory.informer::<PersistentVolumeClaim>(None).store();
        let volumes = factory.informer::<PersistentVolume>(None).store();
        let classes = factory.informer::<StorageClass>(None).store();
        let controller = Controller::<PersistentVolumeClaim>::new(Arc::clone(factory), None)
            .waits_for(classes.clone())
            .watches_with::<PersistentVolume>(move |pv| {
                match pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref()) {
                    Some(r) => vec![Key::namespaced(
                        r.namespace.as_deref().unwrap_or(""),
                        r.name.as_deref().unwrap_or(""),
                    )],
                    // A free volume: every unbound claim may want it.
                    None => claims
                        .list()
                        .iter()
                        .filter(|c| c.spec.as_ref().is_some_and(|s| s.volume_name.is_none()))
                        .map(|c| Key::of(&**c))
                        .collect(),
                }
            });
        (
            controller,
            Volumes {
                client,
                volumes,
                classes,
            },
        )
    }

    /// Makes `local-path` the default StorageClass when the cluster has no default.
    pub async fn ensure_default_class(&self) -> bosun_client::Result<()> {
        let api: Api<StorageClass> = Api::all(self.client.clone());
        let classes = api.list(&ListParams::default()).await?.items;
        let is_default = |c: &StorageClass| {
            c.metadata
                .annotations
                .get("storageclass.kubernetes.io/is-default-class")
                .map(String::as_str)
                == Some("true")
        };
        if classes.iter().any(is_default)
            || classes
                .iter()
                .any(|c| c.metadata.name.as_deref() == Some("local-path"))
        {
            return Ok(());
        }
        let class: StorageClass = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "local-path",
                "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
            "provisioner": PROVISIONER,
            "reclaimPolicy": "Delete",
            "volumeBindingMode": "WaitForFirstConsumer"
        }))
        .unwrap_or_default();
        match api.create(&PostParams::default(), &class).await {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some(409) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn set_claim_status(
        &self,
        pvc: &PersistentVolumeClaim,
        phase: &str,
        pv: Option<&PersistentVolume>,
    ) -> bosun_client::Result<()> {
        let current = pvc.status.clone().unwrap_or_default();
        let mut status = current.clone();
        status.phase = Some(phase.into());
        if let Some(pv) = pv.and_then(|p| p.spec.as_ref()) {
            status.access_modes = pv.access_modes.clone();
            status.capacity = pv.capacity.clone();
        }
        if status == current {
            return Ok(());
        }
        let mut updated = pvc.clone();
        updated.status = Some(status);
        let api: Api<PersistentVolumeClaim> = Api::namespaced(
            self.client.clone(),
            pvc.metadata.namespace.as_deref().unwrap_or(""),
        );
        match api
            .replace_status(
                pvc.metadata.name.as_deref().unwrap_or_default(),
                &PostParams::default(),
                &updated,
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() || e.is_conflict() => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn set_volume_phase(
        &self,
        pv: &PersistentVolume,
        phase: &str,
    ) -> bosun_client::Result<()> {
        if pv.status.as_ref().and_then(|s| s.phase.as_deref()) == Some(phase) {
            return Ok(());
        }
        let mut updated = pv.clone();
        updated.status.get_or_insert_with(Default::default).phase = Some(phase.into());
        let api: Api<PersistentVolume> = Api::all(self.client.clone());
        match api
            .replace_status(
                pv.metadata.name.as_deref().unwrap_or_default(),
                &PostParams::default(),
                &updated,
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() || e.is_conflict() => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Binds `pvc` to `pv`: the volume's claimRef first, then the claim's volumeName.
    async fn bind(
        &self,
        pvc: &PersistentVolumeClaim,
        pv: &PersistentVolume,
    ) -> bosun_client::Result<()> {
        let pvs: Api<PersistentVolume> = Api::all(self.client.clone());
        let pv_name = pv.metadata.name.clone().unwrap_or_default();
        let bound = if pv
            .spec
            .as_ref()
            .and_then(|s| s.claim_ref.as_ref())
            .and_then(|r| r.uid.clone())
            == pvc.metadata.uid
        {
            pv.clone()
        } else {
            let patch = serde_json::json!({"metadata": {"resourceVersion": pv.metadata.resource_version},
                "spec": {"claimRef": claim_ref(pvc)}});
            pvs.patch(&pv_name, &PatchParams::default(), &Patch::Merge(patch))
                .await?
        };
        self.set_volume_phase(&bound, "Bound").await?;
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(
            self.client.clone(),
            pvc.metadata.namespace.as_deref().unwrap_or(""),
        );
        let patch = serde_json::json!({"metadata": {"annotations": {
                "pv.kubernetes.io/bind-completed": "yes", "pv.kubernetes.io/bound-by-controller": "yes"}},
            "spec": {"volumeName": pv_name}});
        let claim = claims
            .patch(
                pvc.metadata.name.as_deref().unwrap_or_default(),
                &PatchParams::default(),
                &Patch::Merge(patch),
            )
            .await?;
        self.set_claim_status(&claim, "Bound", Some(&bound)).await
    }

    /// A hostPath volume for `pvc` on `node` (any node when `None`).
    async fn provision(
        &self,
        pvc: &PersistentVolumeClaim,
        class: &StorageClass,
        node: Option<&str>,
    ) -> bosun_client::Result<()> {
        let uid = pvc.metadata.uid.clone().unwrap_or_default();
        let ns = pvc.metadata.namespace.clone().unwrap_or_default();
        let name = pvc.metadata.name.clone().unwrap_or_default();
        let spec = pvc.spec.clone().unwrap_or_default();
        let size = request(pvc)
            .map(|q| q.to_canonical())
            .unwrap_or_else(|| "1Gi".into());
        let mut pv = serde_json::json!({
            "metadata": {"name": format!("pvc-{uid}"),
                "annotations": {"pv.kubernetes.io/provisioned-by": PROVISIONER}},
            "spec": {
                "capacity": {"storage": size},
                "accessModes": spec.access_modes,
                "persistentVolumeReclaimPolicy": class.reclaim_policy.clone().unwrap_or_else(|| "Delete".into()),
                "storageClassName": class.metadata.name,
                "volumeMode": spec.volume_mode.unwrap_or_else(|| "Filesystem".into()),
                "hostPath": {"path": format!("{BASE_DIR}/pvc-{uid}_{ns}_{name}"), "type": "DirectoryOrCreate"},
                "claimRef": claim_ref(pvc),
            }
        });
        if let Some(node) = node {
            pv["spec"]["nodeAffinity"] = serde_json::json!({"required": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}]}});
        }
        let pv: PersistentVolume = serde_json::from_value(pv).unwrap_or_default();
        let api: Api<PersistentVolume> = Api::all(self.client.clone());
        let made = match api.create(&PostParams::default(), &pv).await {
            Ok(p) => p,
            Err(e) if e.code() == Some(409) => {
                api.get(pv.metadata.name.as_deref().unwrap_or_default())
                    .await?
            }
            Err(e) => return Err(e),
        };
        tracing::info!(claim = %format!("{ns}/{name}"), volume = ?made.metadata.name, "provisioned a local-path volume");
        self.bind(pvc, &made).await
    }
}

#[async_trait::async_trait]
impl Reconciler<PersistentVolumeClaim> for Volumes {
    type Error = bosun_client::Error;

    async fn reconcile(&self, pvc: Arc<PersistentVolumeClaim>) -> Result<Action, Self::Error> {
        if pvc.metadata.deletion_timestamp.is_some() {
            return Ok(Action::Done);
        }
        let spec = pvc.spec.clone().unwrap_or_default();
        if let Some(volume) = spec.volume_name.as_deref() {
            // Bound by name: finish the binding, or report the volume lost.
            return match self.volumes.get(&Key::cluster(volume)) {
                Some(pv) => {
                    if pv
                        .spec
                        .as_ref()
                        .and_then(|s| s.claim_ref.as_ref())
                        .is_none_or(|r| r.uid == pvc.metadata.uid)
                    {
                        self.bind(&pvc, &pv).await?;
                    }
                    Ok(Action::Done)
                }
                None => {
                    self.set_claim_status(&pvc, "Lost", None).await?;
                    Ok(Action::Done)
                }
            };
        }
        let mut candidates: Vec<Arc<PersistentVolume>> = self
            .volumes
            .list()
            .into_iter()
            .filter(|pv| fits(pv, &pvc))
            .collect();
        candidates.sort_by_key(|pv| {
            pv.spec
                .as_ref()
                .and_then(|s| s.capacity.get("storage").copied())
        });
        if let Some(pv) = candidates.first() {
            self.bind(&pvc, pv).await?;
            return Ok(Action::Done);
        }
        let class = self.classes.get(&Key::cluster(&class_of_claim(&pvc)));
        if let Some(class) = class.filter(|c| c.provisioner == PROVISIONER) {
            let wait = class.volume_binding_mode.as_deref() == Some("WaitForFirstConsumer");
            let node = pvc.metadata.annotations.get(SELECTED_NODE).cloned();
            if !wait || node.is_some() {
                self.provision(&pvc, &class, node.as_deref()).await?;
                return Ok(Action::Done);
            }
        }
        self.set_claim_status(&pvc, "Pending", None).await?;
        Ok(Action::Done)
    }

    async fn deleted(&self, key: &Key) {
        // The claim is gone: its volume is Released, or deleted by its reclaim policy.
        for pv in self.volumes.list() {
            let Some(r) = pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref()) else {
                continue;
            };
            if r.namespace.as_deref() != Some(key.namespace.as_str())
                || r.name.as_deref() != Some(key.name.as_str())
            {
                continue;
            }
            let policy = pv
                .spec
                .as_ref()
                .and_then(|s| s.persistent_volume_reclaim_policy.clone())
                .unwrap_or_default();
            let result = if policy == "Delete" {
                // Released first (so protection lets it go), then deleted.
                if let Err(e) = self.set_volume_phase(&pv, "Released").await {
                    tracing::debug!(volume = ?pv.metadata.name, error = %e, "releasing a volume");
                }
                let api: Api<PersistentVolume> = Api::all(self.client.clone());
                let params = DeleteParams {
                    precondition_uid: pv.metadata.uid.clone(),
                    ..Default::default()
                };
                api.delete(pv.metadata.name.as_deref().unwrap_or_default(), &params)
                    .await
                    .map(|_| ())
            } else {
                self.set_volume_phase(&pv, "Released").await
            };
            if let Err(e) = result {
                tracing::debug!(volume = ?pv.metadata.name, error = %e, "releasing a volume");
            }
        }
    }
}
