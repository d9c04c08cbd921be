//! A custom-resource controller in under 100 lines: `Greeting` → an owned ConfigMap.

use bosun_api_types::apiextensions::v1::CustomResourceDefinition;
use bosun_api_types::core::v1::ConfigMap;
use bosun_api_types::meta::v1::{ObjectMeta, OwnerReference};
use bosun_client::{informer::InformerFactory, Api, Client, Patch, PatchParams, PostParams};
use bosun_controllers::{Action, Controller, Reconciler};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// The custom resource: `spec.message`, and the status the controller writes.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Greeting {
    /// Standard object metadata.
    pub metadata: ObjectMeta,
    /// What to greet with.
    pub spec: GreetingSpec,
    /// What the controller did (`configMap`).
    #[serde(default)]
    pub status: serde_json::Value,
}

/// `spec` of a Greeting.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct GreetingSpec {
    /// The message.
    pub message: String,
}

bosun_api_types::custom_resource!(
    Greeting,
    group = "example.com",
    version = "v1",
    kind = "Greeting",
    plural = "greetings",
    scope = Namespaced
);

/// Installs the Greeting CRD (`greeting-crd.yaml`) if it is not there.
pub async fn install_crd(client: &Client) -> bosun_client::Result<()> {
    let bad = |e: String| bosun_client::Error::Request(e);
    let yaml = bosun_api_types::yaml::to_json(include_bytes!("../greeting-crd.yaml"));
    let crd: CustomResourceDefinition =
        serde_json::from_value(yaml.map_err(|e| bad(e.to_string()))?)
            .map_err(|e| bad(e.to_string()))?;
    match Api::all(client.clone())
        .create(&PostParams::default(), &crd)
        .await
    {
        Err(e) if !e.is_conflict() => Err(e),
        _ => Ok(()),
    }
}

struct Greeter(Client);

#[async_trait::async_trait]
impl Reconciler<Greeting> for Greeter {
    type Error = bosun_client::Error;
    async fn reconcile(&self, g: Arc<Greeting>) -> Result<Action, Self::Error> {
        let ns = g.metadata.namespace.clone().unwrap_or_default();
        let name = format!("{}-greeting", g.metadata.name.clone().unwrap_or_default());
        let owner = OwnerReference {
            api_version: "example.com/v1".into(),
            kind: "Greeting".into(),
            name: g.metadata.name.clone().unwrap_or_default(),
            uid: g.metadata.uid.clone().unwrap_or_default(),
            controller: Some(true),
            ..Default::default()
        };
        let cm = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "ownerReferences": [owner]}, "data": {"message": g.spec.message}});
        let apply = PatchParams::apply("greeting-controller").force();
        Api::<ConfigMap>::namespaced(self.0.clone(), &ns)
            .patch(&name, &apply, &Patch::Apply(&cm))
            .await?;
        let status = serde_json::json!({"status": {"configMap": name}});
        let greetings: Api<Greeting> = Api::namespaced(self.0.clone(), &ns);
        greetings
            .patch_status(
                g.metadata.name.as_deref().unwrap_or_default(),
                &PatchParams::default(),
                &Patch::Merge(&status),
            )
            .await?;
        Ok(Action::Done)
    }
}

/// Runs the controller until the process ends.
pub async fn run(client: Client) {
    let factory = Arc::new(InformerFactory::new(client.clone()));
    Controller::<Greeting>::new(factory, None)
        .owns::<ConfigMap>()
        .run(Greeter(client))
        .await;
}
