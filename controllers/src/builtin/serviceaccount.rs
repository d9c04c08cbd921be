//! The ServiceAccount controller: every active namespace has a `default` ServiceAccount (made
//! again if it is deleted) and, when the cluster CA is known, the `kube-root-ca.crt` ConfigMap
//! holding it (upstream's root-ca-cert-publisher), which pods' service-account volumes mount.

use crate::controller::{Action, Controller, Reconciler};
use bosun_api_types::core::v1::{ConfigMap, Namespace, ServiceAccount};
use bosun_client::informer::InformerFactory;
use bosun_client::reflector::Key;
use bosun_client::{Api, Client, PostParams};
use std::sync::Arc;

/// Ensures the `default` ServiceAccount of each namespace.
pub struct ServiceAccounts {
    client: Client,
    root_ca: Option<String>,
}

/// The ConfigMap every namespace gets with the cluster CA.
pub const ROOT_CA_CONFIGMAP: &str = "kube-root-ca.crt";

impl ServiceAccounts {
    /// The controller's logic over `client`.
    pub fn new(client: Client) -> Self {
        ServiceAccounts {
            client,
            root_ca: None,
        }
    }

    /// Also publishes `ca_pem` as `kube-root-ca.crt` (key `ca.crt`) in every namespace.
    pub fn with_root_ca(mut self, ca_pem: Option<String>) -> Self {
        self.root_ca = ca_pem;
        self
    }

    async fn publish_root_ca(&self, namespace: &str) -> Result<(), bosun_client::Error> {
        let Some(ca) = &self.root_ca else {
            return Ok(());
        };
        let maps: Api<ConfigMap> = Api::namespaced(self.client.clone(), namespace);
        let want = std::collections::BTreeMap::from([("ca.crt".to_owned(), ca.clone())]);
        let result = match maps.get_opt(ROOT_CA_CONFIGMAP).await? {
            Some(cm) if cm.data == want => return Ok(()),
            Some(mut cm) => {
                cm.data = want;
                maps.replace(ROOT_CA_CONFIGMAP, &PostParams::default(), &cm)
                    .await
                    .map(|_| ())
            }
            None => {
                let mut cm = ConfigMap::default();
                cm.metadata.name = Some(ROOT_CA_CONFIGMAP.into());
                cm.metadata.annotations.insert(
                    "kubernetes.io/description".into(),
                    "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters.".into(),
                );
                cm.data = want;
                maps.create(&PostParams::default(), &cm).await.map(|_| ())
            }
        };
        match result {
            Err(e) if e.is_conflict() || e.code() == Some(403) || e.is_not_found() => Ok(()),
            other => other,
        }
    }

    /// Runs it on `factory`'s informers (namespaces, and service accounts so that a deleted
    /// `default` is noticed) until the returned controller's queue shuts down.
    pub fn controller(factory: Arc<InformerFactory>) -> Controller<Namespace> {
        Controller::<Namespace>::new(factory, None)
            .watches_with::<ServiceAccount>(|sa| namespace_if_named(&sa.metadata, "default"))
            .watches_with::<ConfigMap>(|cm| namespace_if_named(&cm.metadata, ROOT_CA_CONFIGMAP))
    }
}

/// The key of the namespace an object named `name` lives in (nothing for other objects).
fn namespace_if_named(meta: &bosun_api_types::meta::v1::ObjectMeta, name: &str) -> Vec<Key> {
    match (meta.name.as_deref(), meta.namespace.as_deref()) {
        (Some(n), Some(ns)) if n == name => vec![Key::cluster(ns)],
        _ => Vec::new(),
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
        self.publish_root_ca(name).await?;
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
