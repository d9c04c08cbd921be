//! The namespace controller: a namespace marked for deletion is emptied of every namespaced
//! object (custom resources too) through the API, so grace periods, finalizers and garbage
//! collection apply as for any delete. Its status conditions say what is left (upstream's
//! `NamespaceContentRemaining`, `NamespaceFinalizersRemaining` and the others); once nothing
//! is left, the `kubernetes` finalizer is taken out of `spec.finalizers` through `/finalize`
//! and the API server removes the namespace.

use crate::controller::{Action, Controller, Reconciler};
use bosun_api_types::core::v1::{Namespace, NamespaceCondition};
use bosun_api_types::{DynamicObject, Time};
use bosun_client::discovery::Discovery;
use bosun_client::informer::InformerFactory;
use bosun_client::{Api, Client, DeleteParams, ListParams, PostParams};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// The finalizer this controller owns in `spec.finalizers`.
pub const FINALIZER: &str = "kubernetes";

/// How soon a namespace with content left is looked at again.
const RECHECK: Duration = Duration::from_secs(1);

/// The namespace controller's logic.
pub struct Namespaces {
    client: Client,
}

impl Namespaces {
    /// The controller (on `factory`'s informers) and its logic.
    pub fn new(client: Client, factory: &Arc<InformerFactory>) -> (Controller<Namespace>, Self) {
        (
            Controller::<Namespace>::new(Arc::clone(factory), None),
            Namespaces { client },
        )
    }

    /// Deletes what is in `ns`; returns what is left per resource (`plural.group` → count)
    /// and the finalizers holding it (finalizer → count), and any deletion failures.
    async fn empty(
        &self,
        ns: &str,
    ) -> bosun_client::Result<(
        BTreeMap<String, usize>,
        BTreeMap<String, usize>,
        Vec<String>,
    )> {
        let discovery = Discovery::run(&self.client).await?;
        let mut remaining = BTreeMap::new();
        let mut finalizers = BTreeMap::new();
        let mut failures = Vec::new();
        let mut seen: Vec<(String, String)> = Vec::new();
        for r in discovery.resources {
            if !r.namespaced || !r.supports("list") || !r.supports("delete") {
                continue;
            }
            // One version per resource.
            if seen.iter().any(|(g, p)| *g == r.group && *p == r.plural) {
                continue;
            }
            seen.push((r.group.clone(), r.plural.clone()));
            let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), ns, &r);
            let params = DeleteParams {
                propagation_policy: Some("Background".into()),
                ..Default::default()
            };
            if r.supports("deletecollection") {
                if let Err(e) = api.delete_collection(&params, &ListParams::default()).await {
                    if !e.is_not_found() {
                        failures.push(format!("{}.{}: {e}", r.plural, r.group));
                    }
                }
            }
            let left = match api.list(&ListParams::default()).await {
                Ok(l) => l.items,
                Err(e) if e.is_not_found() => Vec::new(),
                Err(e) => {
                    failures.push(format!("{}.{}: {e}", r.plural, r.group));
                    continue;
                }
            };
            for o in &left {
                if o.metadata.deletion_timestamp.is_none() {
                    let name = o.metadata.name.as_deref().unwrap_or_default();
                    match api.delete(name, &params).await {
                        Ok(_) => {}
                        Err(e) if e.is_not_found() || e.is_conflict() => {}
                        Err(e) => failures.push(format!("{}.{} {name}: {e}", r.plural, r.group)),
                    }
                }
                for f in &o.metadata.finalizers {
                    *finalizers.entry(f.clone()).or_insert(0) += 1;
                }
            }
            if !left.is_empty() {
                remaining.insert(format!("{}.{}", r.plural, r.group), left.len());
            }
        }
        Ok((remaining, finalizers, failures))
    }

    async fn write_conditions(
        &self,
        ns: &Namespace,
        conditions: Vec<NamespaceCondition>,
    ) -> bosun_client::Result<()> {
        let mut updated = ns.clone();
        let status = updated.status.get_or_insert_with(Default::default);
        let now = Time::now();
        let mut merged = Vec::new();
        for mut c in conditions {
            if let Some(old) = status.conditions.iter().find(|o| o.r#type == c.r#type) {
                if old.status == c.status && old.reason == c.reason && old.message == c.message {
                    merged.push(old.clone());
                    continue;
                }
            }
            c.last_transition_time = Some(now);
            merged.push(c);
        }
        if status.conditions == merged {
            return Ok(());
        }
        status.conditions = merged;
        let api: Api<Namespace> = Api::all(self.client.clone());
        let name = ns.metadata.name.clone().unwrap_or_default();
        match api
            .replace_status(&name, &PostParams::default(), &updated)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() || e.is_conflict() => Ok(()),
            Err(e) => Err(e),
        }
    }
}

fn condition(t: &str, status: bool, reason: &str, message: String) -> NamespaceCondition {
    NamespaceCondition {
        r#type: t.into(),
        status: if status { "True" } else { "False" }.into(),
        reason: Some(reason.into()),
        message: Some(message),
        last_transition_time: None,
    }
}

#[async_trait::async_trait]
impl Reconciler<Namespace> for Namespaces {
    type Error = super::Error;

    async fn reconcile(&self, ns: Arc<Namespace>) -> Result<Action, Self::Error> {
        let spec_finalizers = ns
            .spec
            .as_ref()
            .map(|s| s.finalizers.clone())
            .unwrap_or_default();
        if ns.metadata.deletion_timestamp.is_none()
            || !spec_finalizers.iter().any(|f| f == FINALIZER)
        {
            return Ok(Action::Done);
        }
        let name = ns.metadata.name.clone().unwrap_or_default();
        let (remaining, finalizers, failures) = match self.empty(&name).await {
            Ok(r) => r,
            Err(e) => {
                self.write_conditions(
                    &ns,
                    vec![condition(
                        "NamespaceDeletionDiscoveryFailure",
                        true,
                        "DiscoveryFailed",
                        format!("Discovery failed for some groups: {e}"),
                    )],
                )
                .await?;
                return Err(e.into());
            }
        };
        let mut conditions = vec![
            condition(
                "NamespaceDeletionDiscoveryFailure",
                false,
                "ResourcesDiscovered",
                "All resources successfully discovered".into(),
            ),
            condition(
                "NamespaceDeletionGroupVersionParsingFailure",
                false,
                "ParsedGroupVersions",
                "All legacy kube types successfully parsed".into(),
            ),
        ];
        conditions.push(if failures.is_empty() {
            condition(
                "NamespaceDeletionContentFailure",
                false,
                "ContentDeleted",
                "All content successfully deleted, may be waiting on finalization".into(),
            )
        } else {
            condition(
                "NamespaceDeletionContentFailure",
                true,
                "ContentDeletionFailed",
                format!(
                    "Failed to delete all resource types, {} remaining: {}",
                    failures.len(),
                    failures.join(", ")
                ),
            )
        });
        conditions.push(if remaining.is_empty() {
            condition(
                "NamespaceContentRemaining",
                false,
                "ContentRemoved",
                "All content successfully removed".into(),
            )
        } else {
            let parts: Vec<String> = remaining
                .iter()
                .map(|(r, n)| format!("{r} has {n} resource instances"))
                .collect();
            condition(
                "NamespaceContentRemaining",
                true,
                "SomeResourcesRemain",
                format!("Some resources are remaining: {}", parts.join(", ")),
            )
        });
        conditions.push(if finalizers.is_empty() {
            condition(
                "NamespaceFinalizersRemaining",
                false,
                "ContentHasNoFinalizers",
                "All content-preserving finalizers finished".into(),
            )
        } else {
            let parts: Vec<String> = finalizers
                .iter()
                .map(|(f, n)| format!("{f} in {n} resource instances"))
                .collect();
            condition(
                "NamespaceFinalizersRemaining",
                true,
                "SomeFinalizersRemain",
                format!(
                    "Some content in the namespace has finalizers remaining: {}",
                    parts.join(", ")
                ),
            )
        });
        self.write_conditions(&ns, conditions).await?;
        if !remaining.is_empty() || !failures.is_empty() {
            return Ok(Action::Requeue(RECHECK));
        }
        // Empty: our finalizer comes off, and with it the namespace.
        let api: Api<Namespace> = Api::all(self.client.clone());
        let Some(mut latest) = api.get_opt(&name).await? else {
            return Ok(Action::Done);
        };
        if let Some(spec) = latest.spec.as_mut() {
            spec.finalizers.retain(|f| f != FINALIZER);
        }
        match api
            .replace_subresource("finalize", &name, &PostParams::default(), &latest)
            .await
        {
            Ok(_) => Ok(Action::Done),
            Err(e) if e.is_not_found() => Ok(Action::Done),
            Err(e) => Err(e.into()),
        }
    }
}
