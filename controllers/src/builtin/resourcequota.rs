//! The ResourceQuota controller: `status.used` recomputed from what is in the namespace (the
//! API server's admission adds each new object's usage; this brings deletions and updates in),
//! and `status.hard` kept equal to `spec.hard`.

use crate::controller::{Action, Controller, Reconciler};
use bosun_api_types::core::v1::{
    ConfigMap, PersistentVolumeClaim, Pod, ResourceQuota, Secret, Service,
};
use bosun_api_types::quota::{add_into, usage};
use bosun_api_types::{DynamicObject, Quantity, Resource};
use bosun_client::discovery::ApiResource;
use bosun_client::informer::InformerFactory;
use bosun_client::reflector::{Key, Store};
use bosun_client::{Api, Client, ListParams, PostParams};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// How often usage is recomputed even when nothing seems to change (upstream: 5 minutes).
const RESYNC: Duration = Duration::from_secs(300);

/// The kinds whose usage the controller counts: (group, version, plural, kind).
const COUNTED: &[(&str, &str, &str, &str)] = &[
    ("", "v1", "pods", "Pod"),
    ("", "v1", "services", "Service"),
    ("", "v1", "configmaps", "ConfigMap"),
    ("", "v1", "secrets", "Secret"),
    ("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim"),
    ("", "v1", "replicationcontrollers", "ReplicationController"),
    ("", "v1", "resourcequotas", "ResourceQuota"),
    ("apps", "v1", "deployments", "Deployment"),
    ("apps", "v1", "replicasets", "ReplicaSet"),
    ("apps", "v1", "statefulsets", "StatefulSet"),
    ("apps", "v1", "daemonsets", "DaemonSet"),
    ("batch", "v1", "jobs", "Job"),
    ("batch", "v1", "cronjobs", "CronJob"),
];

/// The ResourceQuota controller's logic.
pub struct ResourceQuotas {
    client: Client,
}

fn quotas_in<C: Resource>(quotas: &Store<ResourceQuota>, obj: &C) -> Vec<Key> {
    quotas
        .by_index("namespace", obj.namespace().unwrap_or(""))
        .iter()
        .map(|q| Key::of(&**q))
        .collect()
}

impl ResourceQuotas {
    /// The controller (quotas, and the objects they count) and its logic.
    pub fn new(
        client: Client,
        factory: &Arc<InformerFactory>,
    ) -> (Controller<ResourceQuota>, Self) {
        let quotas = factory.informer::<ResourceQuota>(None).store();
        let (q1, q2, q3, q4, q5) = (
            quotas.clone(),
            quotas.clone(),
            quotas.clone(),
            quotas.clone(),
            quotas,
        );
        let controller = Controller::<ResourceQuota>::new(Arc::clone(factory), None)
            .watches_with::<Pod>(move |o| quotas_in(&q1, o))
            .watches_with::<Service>(move |o| quotas_in(&q2, o))
            .watches_with::<ConfigMap>(move |o| quotas_in(&q3, o))
            .watches_with::<Secret>(move |o| quotas_in(&q4, o))
            .watches_with::<PersistentVolumeClaim>(move |o| quotas_in(&q5, o));
        (controller, ResourceQuotas { client })
    }
}

#[async_trait::async_trait]
impl Reconciler<ResourceQuota> for ResourceQuotas {
    type Error = bosun_client::Error;

    async fn reconcile(&self, quota: Arc<ResourceQuota>) -> Result<Action, Self::Error> {
        let ns = quota.metadata.namespace.clone().unwrap_or_default();
        let hard: BTreeMap<String, Quantity> = quota
            .spec
            .as_ref()
            .map(|s| s.hard.clone())
            .unwrap_or_default();
        let mut used: BTreeMap<String, Quantity> = hard
            .keys()
            .map(|k| {
                (
                    k.clone(),
                    Quantity::from_int(0, bosun_api_types::QuantityFormat::DecimalSI),
                )
            })
            .collect();
        for (group, version, plural, kind) in COUNTED {
            let concerned = hard.keys().any(|k| {
                let count = if group.is_empty() {
                    format!("count/{plural}")
                } else {
                    format!("count/{plural}.{group}")
                };
                *k == count
                    || group.is_empty()
                        && (k == plural
                            || k.starts_with("requests.")
                            || k.starts_with("limits.")
                            || k == "cpu"
                            || k == "memory"
                            || k.starts_with("services.")
                            || k.contains(".storageclass.storage.k8s.io/"))
            });
            if !concerned {
                continue;
            }
            let res = ApiResource {
                group: (*group).into(),
                version: (*version).into(),
                api_version: if group.is_empty() {
                    (*version).into()
                } else {
                    format!("{group}/{version}")
                },
                kind: (*kind).into(),
                plural: (*plural).into(),
                namespaced: true,
                ..Default::default()
            };
            let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), &ns, &res);
            for o in api.list(&ListParams::default()).await?.items {
                let value = serde_json::to_value(&o).unwrap_or_default();
                let Some(map) = value.as_object() else {
                    continue;
                };
                for (k, q) in usage(group, plural, map) {
                    if hard.contains_key(&k) {
                        add_into(&mut used, k, &q);
                    }
                }
            }
        }
        let status = quota.status.clone().unwrap_or_default();
        if status.hard != hard || status.used != used {
            let mut updated = (*quota).clone();
            let s = updated.status.get_or_insert_with(Default::default);
            s.hard = hard;
            s.used = used;
            let api: Api<ResourceQuota> = Api::namespaced(self.client.clone(), &ns);
            match api
                .replace_status(
                    quota.metadata.name.as_deref().unwrap_or_default(),
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
        Ok(Action::Requeue(RESYNC))
    }
}
