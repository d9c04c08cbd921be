//! Runs the built-in controllers together, as `bosun server` (in process) and
//! `bosun controller-manager` do.

use super::cronjob::CronJobs;
use super::daemonset::DaemonSets;
use super::deployment::Deployments;
use super::disruption::Disruption;
use super::endpoints::EndpointControllers;
use super::garbagecollector::GarbageCollector;
use super::hpa::Autoscalers;
use super::job::Jobs;
use super::namespace::Namespaces;
use super::nodelifecycle::{self, NodeLifecycle};
use super::protection::{PvProtection, PvcProtection};
use super::replicaset::ReplicaSets;
use super::resourcequota::ResourceQuotas;
use super::serviceaccount::ServiceAccounts;
use super::statefulset::StatefulSets;
use super::ttl::TtlAfterFinished;
use super::volume::Volumes;
use bosun_api_types::apps::v1::ReplicaSet;
use bosun_api_types::core::v1::ReplicationController;
use bosun_client::informer::InformerFactory;
use bosun_client::Client;
use std::sync::Arc;
use std::time::Duration;

/// The controllers [`run`] starts, by upstream's names.
pub const CONTROLLERS: &[&str] = &[
    "serviceaccount",
    "garbagecollector",
    "replicaset",
    "replicationcontroller",
    "deployment",
    "namespace",
    "job",
    "cronjob",
    "ttl-after-finished",
    "node-lifecycle",
    "node-ipam",
    "endpointslice",
    "endpoints",
    "statefulset",
    "daemonset",
    "pvc-protection",
    "pv-protection",
    "resourcequota",
    "disruption",
    "persistentvolume-binder",
    "local-path-provisioner",
    "horizontalpodautoscaling",
];

/// How the controllers run.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The node lifecycle monitor's settings (grace period, pod CIDRs).
    pub node_lifecycle: nodelifecycle::Config,
    /// The cluster CA (PEM) to publish as `kube-root-ca.crt` in every namespace.
    pub root_ca: Option<String>,
}

/// Runs every built-in controller on shared informers until the task is dropped.
pub async fn run(client: Client) {
    run_with(client, Options::default()).await;
}

/// [`run`] with `options`.
pub async fn run_with(client: Client, options: Options) {
    let factory = Arc::new(InformerFactory::new(client.clone()));
    let mut tasks = tokio::task::JoinSet::new();
    let accounts = ServiceAccounts::controller(Arc::clone(&factory));
    tasks.spawn(accounts.run(ServiceAccounts::new(client.clone()).with_root_ca(options.root_ca)));
    let (rs, logic) = ReplicaSets::<ReplicaSet>::new(client.clone(), &factory);
    tasks.spawn(rs.concurrency(5).run(logic));
    let (rc, logic) = ReplicaSets::<ReplicationController>::new(client.clone(), &factory);
    tasks.spawn(rc.concurrency(5).run(logic));
    let (namespaces, logic) = Namespaces::new(client.clone(), &factory);
    tasks.spawn(namespaces.concurrency(2).run(logic));
    tasks.spawn(NodeLifecycle::new(client.clone(), &factory, options.node_lifecycle).run());
    let (endpoints, logic) = EndpointControllers::new(client.clone(), &factory);
    tasks.spawn(endpoints.concurrency(5).run(logic));
    let (sets, logic) = StatefulSets::new(client.clone(), &factory);
    tasks.spawn(sets.concurrency(5).run(logic));
    let (daemons, logic) = DaemonSets::new(client.clone(), &factory);
    tasks.spawn(daemons.concurrency(2).run(logic));
    let (pvcs, logic) = PvcProtection::new(client.clone(), &factory);
    tasks.spawn(pvcs.run(logic));
    let (pvs, logic) = PvProtection::new(client.clone(), &factory);
    tasks.spawn(pvs.run(logic));
    let (volumes, logic) = Volumes::new(client.clone(), &factory);
    if let Err(e) = logic.ensure_default_class().await {
        tracing::warn!(error = %e, "making the local-path StorageClass");
    }
    tasks.spawn(volumes.concurrency(2).run(logic));
    let (hpas, logic) = Autoscalers::new(client.clone(), &factory);
    tasks.spawn(hpas.concurrency(2).run(logic));
    let (quotas, logic) = ResourceQuotas::new(client.clone(), &factory);
    tasks.spawn(quotas.concurrency(2).run(logic));
    let (budgets, logic) = Disruption::new(client.clone(), &factory);
    tasks.spawn(budgets.concurrency(2).run(logic));
    let (jobs, logic) = Jobs::new(client.clone(), &factory);
    tasks.spawn(jobs.concurrency(5).run(logic));
    let (cronjobs, logic) = CronJobs::new(client.clone(), &factory);
    tasks.spawn(cronjobs.concurrency(2).run(logic));
    let (ttl, logic) = TtlAfterFinished::new(client.clone(), &factory);
    tasks.spawn(ttl.concurrency(2).run(logic));
    let (deployments, logic) = Deployments::new(client.clone(), &factory);
    tasks.spawn(deployments.concurrency(5).run(logic));
    // The collector needs discovery: retry until the server answers.
    let gc = loop {
        match GarbageCollector::new(client.clone(), &factory).await {
            Ok(gc) => break gc,
            Err(e) => {
                tracing::warn!(error = %e, "starting the garbage collector; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    tasks.spawn(gc.run());
    tracing::info!(controllers = ?CONTROLLERS, "controllers running");
    while tasks.join_next().await.is_some() {}
}
