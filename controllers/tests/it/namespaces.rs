//! Namespace deletion through the namespace controller.

use super::{client, eventually};
use bosun_api_types::apiextensions::v1::CustomResourceDefinition;
use bosun_api_types::core::v1::{ConfigMap, Namespace, Pod, Secret, Service};
use bosun_api_types::DynamicObject;
use bosun_client::discovery::ApiResource;
use bosun_client::informer::InformerFactory;
use bosun_client::{Api, DeleteParams, Patch, PatchParams, PostParams};
use bosun_controllers::builtin::namespace::Namespaces;
use serde_json::json;
use std::sync::Arc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_of_500_objects_is_emptied_then_removed() {
    let client = client().await;
    let factory = Arc::new(InformerFactory::new(client.clone()));
    let (controller, logic) = Namespaces::new(client.clone(), &factory);
    tokio::spawn(controller.run(logic));

    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "doomed"}})).unwrap();
    namespaces
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "metadata": {"name": "widgets.example.com"},
        "spec": {"group": "example.com", "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList"},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}
    }))
    .unwrap();
    crds.create(&PostParams::default(), &crd).await.unwrap();

    let p = PostParams::default();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "doomed");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "doomed");
    let services: Api<Service> = Api::namespaced(client.clone(), "doomed");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "doomed");
    let widget_res = ApiResource {
        group: "example.com".into(),
        version: "v1".into(),
        api_version: "example.com/v1".into(),
        kind: "Widget".into(),
        plural: "widgets".into(),
        namespaced: true,
        ..Default::default()
    };
    let widgets: Api<DynamicObject> = Api::namespaced_with(client.clone(), "doomed", &widget_res);
    let mut made = 0;
    for i in 0..200 {
        let cm: ConfigMap =
            serde_json::from_value(json!({"metadata": {"name": format!("cm-{i}")}})).unwrap();
        cms.create(&p, &cm).await.unwrap();
        made += 1;
    }
    for i in 0..150 {
        let s: Secret = serde_json::from_value(
            json!({"metadata": {"name": format!("s-{i}")}, "stringData": {"k": "v"}}),
        )
        .unwrap();
        secrets.create(&p, &s).await.unwrap();
        made += 1;
    }
    for i in 0..50 {
        let s: Service = serde_json::from_value(json!({"metadata": {"name": format!("svc-{i}")},
            "spec": {"ports": [{"port": 80}], "selector": {"app": "x"}}}))
        .unwrap();
        services.create(&p, &s).await.unwrap();
        made += 1;
    }
    for i in 0..50 {
        let pod: Pod = serde_json::from_value(json!({"metadata": {"name": format!("pod-{i}")},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}}))
        .unwrap();
        pods.create(&p, &pod).await.unwrap();
        made += 1;
    }
    eventually("the CRD to be served", || {
        let widgets = widgets.clone();
        async move { widgets.list(&Default::default()).await.is_ok() }
    })
    .await;
    for i in 0..49 {
        let w: DynamicObject =
            serde_json::from_value(json!({"apiVersion": "example.com/v1", "kind": "Widget",
            "metadata": {"name": format!("w-{i}")}, "size": i}))
            .unwrap();
        widgets.create(&p, &w).await.unwrap();
        made += 1;
    }
    // One object a finalizer holds.
    let held: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "held",
        "finalizers": ["example.com/hold"]}}))
    .unwrap();
    cms.create(&p, &held).await.unwrap();
    made += 1;
    assert_eq!(made, 500);

    match namespaces
        .delete("doomed", &DeleteParams::default())
        .await
        .unwrap()
    {
        bosun_client::Deleted::Object(ns) => {
            assert_eq!(ns.status.unwrap().phase.as_deref(), Some("Terminating"));
        }
        other => panic!("{other:?}"),
    }
    // Nothing new gets in.
    let late: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "late"}})).unwrap();
    let err = cms.create(&p, &late).await.unwrap_err();
    assert_eq!(err.code(), Some(403), "{err}");

    eventually("everything but the held object to go", || {
        let namespaces = namespaces.clone();
        async move {
            let ns = namespaces.get("doomed").await.unwrap();
            ns.status.unwrap_or_default().conditions.iter().any(|c| {
                c.r#type == "NamespaceFinalizersRemaining"
                    && c.status == "True"
                    && c.message.as_deref()
                        == Some("Some content in the namespace has finalizers remaining: example.com/hold in 1 resource instances")
            })
        }
    })
    .await;
    eventually("the content to be gone", || {
        let (cms, secrets, widgets, pods) =
            (cms.clone(), secrets.clone(), widgets.clone(), pods.clone());
        async move {
            cms.list(&Default::default()).await.unwrap().items.len() == 1
                && secrets
                    .list(&Default::default())
                    .await
                    .unwrap()
                    .items
                    .is_empty()
                && widgets
                    .list(&Default::default())
                    .await
                    .unwrap()
                    .items
                    .is_empty()
                && pods
                    .list(&Default::default())
                    .await
                    .unwrap()
                    .items
                    .is_empty()
        }
    })
    .await;
    let ns = namespaces.get("doomed").await.unwrap();
    let remaining = ns
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.r#type == "NamespaceContentRemaining")
        .unwrap();
    assert_eq!(remaining.status, "True");
    assert_eq!(
        remaining.message.as_deref(),
        Some("Some resources are remaining: configmaps. has 1 resource instances")
    );

    // The finalizer goes: so does the namespace.
    cms.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    eventually("the namespace to go", || {
        let namespaces = namespaces.clone();
        async move { namespaces.get_opt("doomed").await.unwrap().is_none() }
    })
    .await;
}
