//! The controller runtime against an in-process API server.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod agent;
mod autoscaling;
mod daemonsets;
mod deployments;
mod jobs;
mod namespaces;
mod nodes;
mod quotas;
mod services;
mod statefulsets;
mod volumes;
mod workloads;

use bosun_api_types::core::v1::ConfigMap;
use bosun_api_types::meta::v1::{ObjectMeta, OwnerReference};
use bosun_apiserver::ApiServer;
use bosun_client::informer::InformerFactory;
use bosun_client::reflector::Key;
use bosun_client::{Api, Client, Config, DeleteParams, Patch, PatchParams, PostParams};
use bosun_controllers::finalizer::{finalizer, Event};
use bosun_controllers::{Action, Controller, Reconciler};
use bosun_store::memory::MemoryStore;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

async fn client() -> Client {
    serve().await.0
}

/// An in-process API server on the memory store: a client of it and its URL.
async fn serve() -> (Client, String) {
    let s = ApiServer::new(Arc::new(MemoryStore::new()));
    s.bootstrap().await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(s.serve(listener, std::future::pending()));
    let client = Client::try_from_config(Config::new(url.parse().unwrap())).unwrap();
    (client, url)
}

/// Keeps `<name>-copy` equal to every ConfigMap labelled `mirror=yes`, and removes the copy
/// (through a finalizer) when the source goes. Records any key reconciled twice at once.
struct Mirror {
    api: Api<ConfigMap>,
    in_flight: Mutex<HashSet<Key>>,
    overlaps: Mutex<u32>,
    runs: Mutex<u32>,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Failed(String);

#[async_trait::async_trait]
impl Reconciler<ConfigMap> for Mirror {
    type Error = Failed;
    async fn reconcile(&self, cm: Arc<ConfigMap>) -> Result<Action, Failed> {
        let key = Key::of(&*cm);
        if !self.in_flight.lock().unwrap().insert(key.clone()) {
            *self.overlaps.lock().unwrap() += 1;
        }
        *self.runs.lock().unwrap() += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
        let result = if cm.metadata.labels.get("mirror").map(String::as_str) != Some("yes") {
            Ok(Action::Done)
        } else {
            let api = self.api.clone();
            finalizer(
                &self.api,
                "example.com/mirror",
                Arc::clone(&cm),
                |ev| async move {
                    match ev {
                        Event::Apply(src) => {
                            let name =
                                format!("{}-copy", src.metadata.name.clone().unwrap_or_default());
                            let copy = ConfigMap {
                                metadata: ObjectMeta {
                                    name: Some(name.clone()),
                                    owner_references: vec![OwnerReference {
                                        api_version: "v1".into(),
                                        kind: "ConfigMap".into(),
                                        name: src.metadata.name.clone().unwrap_or_default(),
                                        uid: src.metadata.uid.clone().unwrap_or_default(),
                                        controller: Some(true),
                                        ..Default::default()
                                    }],
                                    ..Default::default()
                                },
                                data: src.data.clone(),
                                ..Default::default()
                            };
                            let apply =
                                serde_json::to_value(&copy).map_err(|e| Failed(e.to_string()))?;
                            let mut apply = apply;
                            apply["apiVersion"] = "v1".into();
                            apply["kind"] = "ConfigMap".into();
                            api.patch(
                                &name,
                                &PatchParams::apply("mirror").force(),
                                &Patch::Apply(&apply),
                            )
                            .await
                            .map_err(|e| Failed(e.to_string()))?;
                            Ok(Action::Done)
                        }
                        Event::Cleanup(src) => {
                            let name =
                                format!("{}-copy", src.metadata.name.clone().unwrap_or_default());
                            match api.delete(&name, &DeleteParams::default()).await {
                                Ok(_) => Ok(Action::Done),
                                Err(e) if e.is_not_found() => Ok(Action::Done),
                                Err(e) => Err(Failed(e.to_string())),
                            }
                        }
                    }
                },
            )
            .await
            .map_err(|e| Failed(e.to_string()))
        };
        self.in_flight.lock().unwrap().remove(&key);
        result
    }
}

async fn eventually<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..500 {
        if cond().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_reconciles_owns_and_finalizes() {
    let client = client().await;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let factory = Arc::new(InformerFactory::new(client.clone()));
    let mirror = Arc::new(Mirror {
        api: api.clone(),
        in_flight: Mutex::default(),
        overlaps: Mutex::default(),
        runs: Mutex::default(),
    });
    struct Shared(Arc<Mirror>);
    #[async_trait::async_trait]
    impl Reconciler<ConfigMap> for Shared {
        type Error = Failed;
        async fn reconcile(&self, cm: Arc<ConfigMap>) -> Result<Action, Failed> {
            self.0.reconcile(cm).await
        }
    }
    let controller = Controller::<ConfigMap>::new(Arc::clone(&factory), Some("default"))
        .owns::<ConfigMap>()
        .concurrency(4);
    let queue = controller.queue();
    let running = tokio::spawn(controller.run(Shared(Arc::clone(&mirror))));

    let mut src = ConfigMap::default();
    src.metadata.name = Some("src".into());
    src.metadata.labels.insert("mirror".into(), "yes".into());
    src.data.insert("k".into(), "1".into());
    api.create(&PostParams::default(), &src).await.unwrap();
    eventually("the copy", || async {
        api.get_opt("src-copy")
            .await
            .unwrap()
            .is_some_and(|c| c.data.get("k").map(String::as_str) == Some("1"))
    })
    .await;
    let with_finalizer = api.get("src").await.unwrap();
    assert_eq!(with_finalizer.metadata.finalizers, ["example.com/mirror"]);

    // Rapid changes to one object: reconciled again, never twice at once.
    for i in 2..12 {
        api.patch(
            "src",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"data": {"k": i.to_string()}})),
        )
        .await
        .unwrap();
    }
    eventually("the copy to follow", || async {
        api.get("src-copy")
            .await
            .unwrap()
            .data
            .get("k")
            .map(String::as_str)
            == Some("11")
    })
    .await;

    // An owned object that goes is put back (its owner is reconciled).
    api.delete("src-copy", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the copy to come back", || async {
        api.get_opt("src-copy").await.unwrap().is_some()
    })
    .await;

    // Deleting the source runs the cleanup, then the source goes.
    api.delete("src", &DeleteParams::default()).await.unwrap();
    eventually("cleanup and removal", || async {
        api.get_opt("src").await.unwrap().is_none()
            && api.get_opt("src-copy").await.unwrap().is_none()
    })
    .await;
    assert_eq!(
        *mirror.overlaps.lock().unwrap(),
        0,
        "a key was reconciled twice at once"
    );
    assert!(*mirror.runs.lock().unwrap() >= 3);

    queue.shut_down_with_drain().await;
    tokio::time::timeout(Duration::from_secs(5), running)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leadership_moves_on_release_and_on_expiry() {
    use bosun_controllers::leader::{LeaderElection, Timings};
    let client = client().await;
    let timings = Timings {
        lease_duration: Duration::from_secs(1),
        renew_deadline: Duration::from_millis(700),
        retry_period: Duration::from_millis(100),
    };
    let a = LeaderElection::new(client.clone(), "default", "ctl", "a").with_timings(timings);
    let b = LeaderElection::new(client.clone(), "default", "ctl", "b").with_timings(timings);
    let la = a.acquire().await;
    // b waits while a renews.
    let b_task = tokio::spawn(async move { b.acquire().await });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!b_task.is_finished(), "b took a lease that a renews");
    // a dies without releasing: b takes over once the lease expires (the timeout only guards
    // against a hang).
    la.abandon().await;
    let lb = tokio::time::timeout(Duration::from_secs(10), b_task)
        .await
        .unwrap()
        .unwrap();
    let leases: Api<bosun_api_types::coordination::v1::Lease> =
        Api::namespaced(client.clone(), "default");
    let lease = leases.get("ctl").await.unwrap();
    let spec = lease.spec.unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some("b"));
    assert_eq!(spec.lease_transitions, Some(1));
    // b releases at shutdown: the lease is free, and a new candidate takes it.
    lb.release().await;
    let spec = leases.get("ctl").await.unwrap().spec.unwrap();
    assert_eq!(spec.holder_identity, None);
    assert_eq!(spec.lease_duration_seconds, Some(1));
    let c = LeaderElection::new(client, "default", "ctl", "c").with_timings(timings);
    let _lc = tokio::time::timeout(Duration::from_secs(10), c.acquire())
        .await
        .unwrap();
    let spec = leases.get("ctl").await.unwrap().spec.unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some("c"));
    assert_eq!(spec.lease_transitions, Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_namespace_gets_a_default_service_account() {
    use bosun_api_types::core::v1::{Namespace, ServiceAccount};
    use bosun_controllers::builtin::serviceaccount::ServiceAccounts;
    let client = client().await;
    let factory = Arc::new(InformerFactory::new(client.clone()));
    let controller = ServiceAccounts::controller(Arc::clone(&factory));
    let queue = controller.queue();
    let running = tokio::spawn(controller.run(ServiceAccounts::new(client.clone())));

    // The system namespaces get theirs, and so does a new one.
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let mut ns = Namespace::default();
    ns.metadata.name = Some("team".into());
    namespaces
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    for name in ["default", "kube-system", "team"] {
        let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), name);
        eventually("the default service account", || {
            let accounts = accounts.clone();
            async move { accounts.get_opt("default").await.unwrap().is_some() }
        })
        .await;
    }
    // Deleted, it comes back.
    let team: Api<ServiceAccount> = Api::namespaced(client.clone(), "team");
    let first = team.get("default").await.unwrap().metadata.uid;
    team.delete("default", &DeleteParams::default())
        .await
        .unwrap();
    eventually("a new default service account", || {
        let team = team.clone();
        let first = first.clone();
        async move {
            team.get_opt("default")
                .await
                .unwrap()
                .is_some_and(|sa| sa.metadata.uid != first)
        }
    })
    .await;
    queue.shut_down_with_drain().await;
    tokio::time::timeout(Duration::from_secs(5), running)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_garbage_collector_deletes_what_lost_its_owners() {
    use bosun_controllers::builtin::garbagecollector::GarbageCollector;
    let client = client().await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let owned_by = |owner: &ConfigMap, name: &str| {
        let mut c = ConfigMap::default();
        c.metadata.name = Some(name.into());
        c.metadata.owner_references = vec![OwnerReference {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            name: owner.metadata.name.clone().unwrap(),
            uid: owner.metadata.uid.clone().unwrap(),
            ..Default::default()
        }];
        c
    };
    let named = |name: &str| {
        let mut c = ConfigMap::default();
        c.metadata.name = Some(name.into());
        c
    };
    let owner = cms
        .create(&PostParams::default(), &named("owner"))
        .await
        .unwrap();
    let child = cms
        .create(&PostParams::default(), &owned_by(&owner, "child"))
        .await
        .unwrap();
    cms.create(&PostParams::default(), &owned_by(&child, "grandchild"))
        .await
        .unwrap();
    // A dependent whose owner never existed (a dangling reference).
    let mut ghost = owner.clone();
    ghost.metadata.uid = Some("00000000-0000-0000-0000-000000000000".into());
    ghost.metadata.name = Some("ghost".into());
    cms.create(&PostParams::default(), &owned_by(&ghost, "orphaned"))
        .await
        .unwrap();

    let factory = InformerFactory::new(client.clone());
    let gc = GarbageCollector::new(client.clone(), &factory)
        .await
        .unwrap();
    let queue = gc.queue();
    let running = tokio::spawn(gc.run());
    eventually("the dangling dependent to go", || {
        let cms = cms.clone();
        async move { cms.get_opt("orphaned").await.unwrap().is_none() }
    })
    .await;
    // Owners that exist keep their dependents.
    assert!(cms.get_opt("child").await.unwrap().is_some());
    // Deleting the owner takes the child, then the grandchild.
    cms.delete("owner", &DeleteParams::default()).await.unwrap();
    eventually("the cascade", || {
        let cms = cms.clone();
        async move {
            cms.get_opt("child").await.unwrap().is_none()
                && cms.get_opt("grandchild").await.unwrap().is_none()
        }
    })
    .await;

    // Foreground: the owner stays (marked, with the foregroundDeletion finalizer) until its
    // blocking dependents are gone, and they go depth first.
    let block = |mut c: ConfigMap| {
        c.metadata.owner_references[0].block_owner_deletion = Some(true);
        c
    };
    let owner = cms
        .create(&PostParams::default(), &named("fg-owner"))
        .await
        .unwrap();
    let mut held = block(owned_by(&owner, "fg-child"));
    held.metadata.finalizers = vec!["example.com/hold".into()];
    let child = cms.create(&PostParams::default(), &held).await.unwrap();
    cms.create(
        &PostParams::default(),
        &block(owned_by(&child, "fg-grandchild")),
    )
    .await
    .unwrap();
    let fg = DeleteParams {
        propagation_policy: Some("Foreground".into()),
        ..Default::default()
    };
    match cms.delete("fg-owner", &fg).await.unwrap() {
        bosun_client::Deleted::Object(o) => {
            assert!(o.metadata.deletion_timestamp.is_some());
            assert_eq!(
                o.metadata.finalizers,
                vec!["foregroundDeletion".to_string()]
            );
        }
        other => panic!("a foreground delete answers with the marked object: {other:?}"),
    }
    eventually("the grandchild to go first", || {
        let cms = cms.clone();
        async move { cms.get_opt("fg-grandchild").await.unwrap().is_none() }
    })
    .await;
    let child = cms.get("fg-child").await.unwrap();
    assert!(child.metadata.deletion_timestamp.is_some(), "{child:?}");
    let owner = cms.get("fg-owner").await.unwrap();
    assert!(owner.metadata.deletion_timestamp.is_some());
    cms.patch(
        "fg-child",
        &PatchParams::default(),
        &Patch::Json(serde_json::json!([{"op": "remove", "path": "/metadata/finalizers/0"}])),
    )
    .await
    .unwrap();
    eventually("the foreground owner to go last", || {
        let cms = cms.clone();
        async move {
            cms.get_opt("fg-child").await.unwrap().is_none()
                && cms.get_opt("fg-owner").await.unwrap().is_none()
        }
    })
    .await;

    // Orphan: the owner goes, the dependent stays without its reference.
    let owner = cms
        .create(&PostParams::default(), &named("orphan-owner"))
        .await
        .unwrap();
    cms.create(&PostParams::default(), &owned_by(&owner, "kept"))
        .await
        .unwrap();
    let orphan = DeleteParams {
        propagation_policy: Some("Orphan".into()),
        ..Default::default()
    };
    cms.delete("orphan-owner", &orphan).await.unwrap();
    eventually("the orphaning owner to go", || {
        let cms = cms.clone();
        async move { cms.get_opt("orphan-owner").await.unwrap().is_none() }
    })
    .await;
    let kept = cms.get("kept").await.unwrap();
    assert!(kept.metadata.owner_references.is_empty(), "{kept:?}");
    assert!(kept.metadata.deletion_timestamp.is_none());

    // A policy that does not exist is refused.
    let bad = DeleteParams {
        propagation_policy: Some("Sideways".into()),
        ..Default::default()
    };
    let err = cms.delete("kept", &bad).await.unwrap_err();
    assert_eq!(err.code(), Some(422), "{err}");
    assert!(
        err.to_string().contains("Unsupported value: \"Sideways\""),
        "{err}"
    );

    queue.shut_down_with_drain().await;
    tokio::time::timeout(Duration::from_secs(5), running)
        .await
        .unwrap()
        .unwrap();
}
