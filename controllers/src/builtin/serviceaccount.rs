//! The ServiceAccount controller: every active namespace has a `default` ServiceAccount (made
//! again if it is deleted).

use crate::controller::{Action, Controller, Reconciler};
use bosun_api_types::core::v1::{Namespace, ServiceAccount};
use bosun_client::informer::InformerFactory;
use bosun_client::reflector::Key;
use bosun_client::{Api, Client, PostParams};
use std::sync::Arc;

/// Ensures the `default` ServiceAccount of each namespace.
pub struct ServiceAccounts {
    client: Client,
}

impl ServiceAccounts {
    /// The controller's logic over `client`.
    pub fn new(client: Client) -> Self {
        ServiceAccounts { client }
    }

    /// Runs it on `factory`'s informers (namespaces, and service accounts so that a deleted
    /// `default` is noticed) until the returned controller's queue shuts down.
    pub fn controller(factory: Arc<InformerFactory>) -> Controller<Namespace> {
        Controller::<Namespace>::new(factory, None).watches_with::<ServiceAccount>(|sa| {
            if sa.metadata.name.as_deref() == Some("default") {
                sa.metadata
                    .namespace
                    .as_deref()
                    .map(|ns| vec![Key::cluster(ns)])
                    .unwrap_or_default()
            } else {
                Vec::new()
            }
        })
    }
}

#[async_trait::async_trait]
impl Reconciler<Namespace> for ServiceAccounts {
    type Error = bosun_client::Error;

    async fn reconcile(&self, ns: Arc<Namespace>) -> Result<Action, Self::Error> {
        let terminating = ns.metadata.deletion_timestamp.is_some()
            || ns.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Terminating");
        let Some(name) = ns.metadata.name.as_deref().filter(|_| !terminating) else {
            return Ok(Action::Done);
        };
        let accounts: Api<ServiceAccount> = Api::namespaced(self.client.clone(), name);
        if accounts.get_opt("default").await?.is_some() {
            return Ok(Action::Done);
        }
        let mut sa = ServiceAccount::default();
        sa.metadata.name = Some("default".into());
        match accounts.create(&PostParams::default(), &sa).await {
            Ok(_) => {
                tracing::debug!(namespace = name, "created the default service account");
                Ok(Action::Done)
            }
            // Made meanwhile (by us or anyone): fine. A namespace going away: nothing to do.
            Err(e) if e.is_conflict() || e.code() == Some(403) || e.is_not_found() => {
                Ok(Action::Done)
            }
            Err(e) => Err(e),
        }
    }
}
