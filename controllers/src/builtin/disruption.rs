//! The disruption controller: each PodDisruptionBudget's status says how many of its pods are
//! healthy, how many must be, and so how many may be disrupted now (what the eviction API
//! reads).
//!
//! As upstream: with an integer `minAvailable` the pods present are expected; with a percentage
//! or `maxUnavailable`, the expected count is the scale of the pods' controllers
//! (Deployment, ReplicaSet, ReplicationController or StatefulSet).

use super::pods;
use crate::controller::{Action, Controller, Reconciler};
use bosun_api_types::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use bosun_api_types::core::v1::{Pod, ReplicationController};
use bosun_api_types::meta::v1::Condition;
use bosun_api_types::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetStatus};
use bosun_api_types::selector::LabelSelectorExt;
use bosun_api_types::{IntOrString, Time};
use bosun_client::informer::InformerFactory;
use bosun_client::reflector::{Key, Store};
use bosun_client::{Api, Client, PostParams};
use std::collections::BTreeSet;
use std::sync::Arc;

/// The disruption controller's logic.
pub struct Disruption {
    client: Client,
    pods: Store<Pod>,
}

impl Disruption {
    /// The controller (budgets, and the pods they select) and its logic.
    pub fn new(
        client: Client,
        factory: &Arc<InformerFactory>,
    ) -> (Controller<PodDisruptionBudget>, Self) {
        let budgets = factory.informer::<PodDisruptionBudget>(None).store();
        let controller = Controller::<PodDisruptionBudget>::new(Arc::clone(factory), None)
            .watches_with::<Pod>(move |p| {
                budgets
                    .by_index("namespace", p.metadata.namespace.as_deref().unwrap_or(""))
                    .iter()
                    .filter(|b| {
                        b.spec
                            .as_ref()
                            .and_then(|s| s.selector.as_ref())
                            .and_then(|s| s.to_selector().ok())
                            .is_some_and(|s| s.matches(&p.metadata.labels))
                    })
                    .map(|b| Key::of(&**b))
                    .collect()
            });
        let pods = factory.informer::<Pod>(None).store();
        (controller, Disruption { client, pods })
    }

    /// The summed scale of the controllers of `pods`.
    async fn expected_scale(&self, ns: &str, pods: &[Arc<Pod>]) -> bosun_client::Result<i32> {
        let mut seen = BTreeSet::new();
        let mut total = 0;
        for p in pods {
            let Some(r) = pods::controller_ref(&p.metadata) else {
                continue;
            };
            if !seen.insert(r.uid.clone()) {
                continue;
            }
            let group = r.api_version.split_once('/').map_or("", |(g, _)| g);
            total += match (group, r.kind.as_str()) {
                ("apps", "ReplicaSet") => {
                    let api: Api<ReplicaSet> = Api::namespaced(self.client.clone(), ns);
                    match api.get_opt(&r.name).await? {
                        Some(rs) => match pods::controller_ref(&rs.metadata)
                            .filter(|o| o.kind == "Deployment")
                        {
                            Some(d) if seen.insert(d.uid.clone()) => {
                                let api: Api<Deployment> = Api::namespaced(self.client.clone(), ns);
                                api.get_opt(&d.name)
                                    .await?
                                    .and_then(|d| d.spec?.replicas)
                                    .unwrap_or(1)
                            }
                            Some(_) => 0,
                            None => rs.spec.and_then(|s| s.replicas).unwrap_or(1),
                        },
                        None => 0,
                    }
                }
                ("", "ReplicationController") => {
                    let api: Api<ReplicationController> = Api::namespaced(self.client.clone(), ns);
                    api.get_opt(&r.name)
                        .await?
                        .and_then(|o| o.spec?.replicas)
                        .unwrap_or(0)
                }
                ("apps", "StatefulSet") => {
                    let api: Api<StatefulSet> = Api::namespaced(self.client.clone(), ns);
                    api.get_opt(&r.name)
                        .await?
                        .and_then(|o| o.spec?.replicas)
                        .unwrap_or(0)
                }
                _ => 0,
            };
        }
        Ok(total)
    }
}

#[async_trait::async_trait]
impl Reconciler<PodDisruptionBudget> for Disruption {
    type Error = bosun_client::Error;

    async fn reconcile(&self, pdb: Arc<PodDisruptionBudget>) -> Result<Action, Self::Error> {
        let ns = pdb.metadata.namespace.clone().unwrap_or_default();
        let Some(spec) = pdb.spec.clone() else {
            return Ok(Action::Done);
        };
        let selector = spec.selector.as_ref().and_then(|s| s.to_selector().ok());
        let selected: Vec<Arc<Pod>> = match &selector {
            Some(sel) => self
                .pods
                .by_index("namespace", &ns)
                .into_iter()
                .filter(|p| {
                    sel.matches(&p.metadata.labels) && p.metadata.deletion_timestamp.is_none()
                })
                .filter(|p| !matches!(pods::phase(p), "Succeeded" | "Failed"))
                .collect(),
            None => Vec::new(),
        };
        let healthy =
            i32::try_from(selected.iter().filter(|p| pods::is_ready(p)).count()).unwrap_or(0);
        let present = i32::try_from(selected.len()).unwrap_or(0);
        let (expected, desired) = match (&spec.min_available, &spec.max_unavailable) {
            (Some(IntOrString::Int(n)), _) => (present, *n),
            (Some(pct @ IntOrString::String(_)), _) => {
                let expected = self.expected_scale(&ns, &selected).await?;
                (
                    expected,
                    pct.scaled_value(expected, true).unwrap_or(expected),
                )
            }
            (None, Some(max)) => {
                let expected = self.expected_scale(&ns, &selected).await?;
                let max = max.scaled_value(expected, true).unwrap_or(0);
                (expected, (expected - max).max(0))
            }
            (None, None) => (present, 1),
        };
        let allowed = (healthy - desired).max(0);
        let old = pdb.status.clone().unwrap_or_default();
        let (status, reason, message) = if allowed > 0 {
            ("True", "SufficientPods", String::new())
        } else {
            ("False", "InsufficientPods", String::new())
        };
        let mut conditions = old.conditions.clone();
        match conditions
            .iter_mut()
            .find(|c| c.r#type == "DisruptionAllowed")
        {
            Some(c) if c.status == status && c.reason == reason => {}
            Some(c) => {
                c.status = status.into();
                c.reason = reason.into();
                c.message = message;
                c.last_transition_time = Time::now();
                c.observed_generation = pdb.metadata.generation;
            }
            None => conditions.push(Condition {
                r#type: "DisruptionAllowed".into(),
                status: status.into(),
                reason: reason.into(),
                message,
                last_transition_time: Time::now(),
                observed_generation: pdb.metadata.generation,
            }),
        }
        let new = PodDisruptionBudgetStatus {
            observed_generation: pdb.metadata.generation,
            disrupted_pods: old.disrupted_pods.clone(),
            disruptions_allowed: allowed,
            current_healthy: healthy,
            desired_healthy: desired,
            expected_pods: expected,
            conditions,
        };
        if pdb.status.as_ref() != Some(&new) {
            let mut updated = (*pdb).clone();
            updated.status = Some(new);
            let api: Api<PodDisruptionBudget> = Api::namespaced(self.client.clone(), &ns);
            match api
                .replace_status(
                    pdb.metadata.name.as_deref().unwrap_or_default(),
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
        Ok(Action::Done)
    }
}
