//! The PVC and PV protection controllers: the `kubernetes.io/pvc-protection` finalizer of a
//! deleted claim comes off once no pod uses it, and `kubernetes.io/pv-protection` of a deleted
//! volume once no claim is bound to it.

use crate::controller::{Action, Controller, Reconciler};
use bosun_api_types::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use bosun_api_types::Resource;
use bosun_client::informer::InformerFactory;
use bosun_client::reflector::{Key, Store};
use bosun_client::{Api, Client, Patch, PatchParams};
use std::sync::Arc;

/// The claim finalizer.
pub const PVC_PROTECTION: &str = "kubernetes.io/pvc-protection";
/// The volume finalizer.
pub const PV_PROTECTION: &str = "kubernetes.io/pv-protection";

/// The PVC protection controller's logic.
pub struct PvcProtection {
    client: Client,
    pods: Store<Pod>,
}

/// The PV protection controller's logic.
pub struct PvProtection {
    client: Client,
}

/// Whether a pod that has not finished mounts claim `name`.
fn uses(pod: &Pod, name: &str) -> bool {
    !matches!(super::pods::phase(pod), "Succeeded" | "Failed")
        && pod.spec.as_ref().is_some_and(|s| {
            s.volumes.iter().any(|v| {
                v.persistent_volume_claim
                    .as_ref()
                    .is_some_and(|c| c.claim_name == name)
            })
        })
}

async fn drop_finalizer<K: Resource>(
    api: &Api<K>,
    obj: &K,
    finalizer: &str,
) -> bosun_client::Result<()> {
    let meta = obj.metadata();
    let rest: Vec<&String> = meta.finalizers.iter().filter(|f| *f != finalizer).collect();
    let patch = serde_json::json!({"metadata": {"finalizers": rest, "resourceVersion": meta.resource_version}});
    match api
        .patch(
            meta.name.as_deref().unwrap_or_default(),
            &PatchParams::default(),
            &Patch::Merge(patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if e.is_not_found() => Ok(()),
        Err(e) => Err(e),
    }
}

impl PvcProtection {
    /// The controller (claims, and the pods that use them) and its logic.
    pub fn new(
        client: Client,
        factory: &Arc<InformerFactory>,
    ) -> (Controller<PersistentVolumeClaim>, Self) {
        let pods = factory.informer::<Pod>(None).store();
        let controller = Controller::<PersistentVolumeClaim>::new(Arc::clone(factory), None)
            .watches_with::<Pod>(|p| {
                let ns = p.metadata.namespace.clone().unwrap_or_default();
                p.spec
                    .as_ref()
                    .map(|s| {
                        s.volumes
                            .iter()
                            .filter_map(|v| v.persistent_volume_claim.as_ref())
                            .map(|c| Key::namespaced(&ns, &c.claim_name))
                            .collect()
                    })
                    .unwrap_or_default()
            });
        (controller, PvcProtection { client, pods })
    }
}

#[async_trait::async_trait]
impl Reconciler<PersistentVolumeClaim> for PvcProtection {
    type Error = bosun_client::Error;

    async fn reconcile(&self, pvc: Arc<PersistentVolumeClaim>) -> Result<Action, Self::Error> {
        if pvc.metadata.deletion_timestamp.is_none()
            || !pvc.metadata.finalizers.iter().any(|f| f == PVC_PROTECTION)
        {
            return Ok(Action::Done);
        }
        let ns = pvc.metadata.namespace.clone().unwrap_or_default();
        let name = pvc.metadata.name.clone().unwrap_or_default();
        if self
            .pods
            .by_index("namespace", &ns)
            .iter()
            .any(|p| uses(p, &name))
        {
            return Ok(Action::Done);
        }
        // The cache may lag a new pod: ask the server before letting the claim go.
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        if pods
            .list(&Default::default())
            .await?
            .items
            .iter()
            .any(|p| uses(p, &name))
        {
            return Ok(Action::Done);
        }
        let api: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), &ns);
        drop_finalizer(&api, &*pvc, PVC_PROTECTION).await?;
        Ok(Action::Done)
    }
}

impl PvProtection {
    /// The controller and its logic.
    pub fn new(
        client: Client,
        factory: &Arc<InformerFactory>,
    ) -> (Controller<PersistentVolume>, Self) {
        (
            Controller::<PersistentVolume>::new(Arc::clone(factory), None),
            PvProtection { client },
        )
    }
}

#[async_trait::async_trait]
impl Reconciler<PersistentVolume> for PvProtection {
    type Error = bosun_client::Error;

    async fn reconcile(&self, pv: Arc<PersistentVolume>) -> Result<Action, Self::Error> {
        if pv.metadata.deletion_timestamp.is_none()
            || !pv.metadata.finalizers.iter().any(|f| f == PV_PROTECTION)
        {
            return Ok(Action::Done);
        }
        let bound = pv.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound");
        if bound {
            return Ok(Action::Done);
        }
        let api: Api<PersistentVolume> = Api::all(self.client.clone());
        drop_finalizer(&api, &*pv, PV_PROTECTION).await?;
        Ok(Action::Done)
    }
}
