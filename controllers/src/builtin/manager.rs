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
    /// The client each controller acts with, by the name of its service account in
    /// `kube-system` ([`ACCOUNTS`]); without it every controller uses the client [`run_with`]
    /// is given. Upstream's `--use-service-account-credentials`: each controller then has
    /// only its own `system:controller:NAME` role, while the shared informers keep the
    /// manager's own identity.
    pub credentials: Option<Credentials>,
}

/// The service accounts (in `kube-system`) the controllers act as with
/// [`Options::credentials`], upstream's names: one per controller [`run`] starts (the
/// endpoints and EndpointSlice controllers share `endpoint-controller`, node IPAM and
/// lifecycle `node-controller`, the volume binder and local-path provisioner
/// `persistent-volume-binder`).
pub const ACCOUNTS: &[&str] = &[
    "service-account-controller",
    "replicaset-controller",
    "replication-controller",
    "deployment-controller",
    "namespace-controller",
    "node-controller",
    "endpoint-controller",
    "statefulset-controller",
    "daemon-set-controller",
    "pvc-protection-controller",
    "pv-protection-controller",
    "persistent-volume-binder",
    "horizontal-pod-autoscaler",
    "resourcequota-controller",
    "disruption-controller",
    "job-controller",
    "cronjob-controller",
    "ttl-after-finished-controller",
    "generic-garbage-collector",
];

/// Makes the client a controller acts with, from its service account's name.
#[derive(Clone)]
pub struct Credentials(pub Arc<dyn Fn(&str) -> Client + Send + Sync>);

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credentials(..)")
    }
}

/// Runs every built-in controller on shared informers until the task is dropped.
pub async fn run(client: Client) {
    run_with(client, Options::default()).await;
}

/// [`run`] with `options`.
pub async fn run_with(client: Client, options: Options) {
    let factory = Arc::new(InformerFactory::new(client.clone()));
    let as_account = |account: &str| match &options.credentials {
        Some(Credentials(make)) => make(account),
        None => client.clone(),
    };
    let mut tasks = tokio::task::JoinSet::new();
    let accounts = ServiceAccounts::controller(Arc::clone(&factory));
    tasks.spawn(
        accounts.run(
            ServiceAccounts::new(as_account("service-account-controller"))
                .with_root_ca(options.root_ca.clone()),
        ),
    );
    let (rs, logic) = ReplicaSets::<ReplicaSet>::new(as_account("replicaset-controller"), &factory);
    tasks.spawn(rs.concurrency(5).run(logic));
    let (rc, logic) =
        ReplicaSets::<ReplicationController>::new(as_account("replication-controller"), &factory);
    tasks.spawn(rc.concurrency(5).run(logic));
    let (namespaces, logic) = Namespaces::new(as_account("namespace-controller"), &factory);
    tasks.spawn(namespaces.concurrency(2).run(logic));
    tasks.spawn(
        NodeLifecycle::new(
            as_account("node-controller"),
            &factory,
            options.node_lifecycle.clone(),
        )
        .run(),
    );
    let (endpoints, logic) = EndpointControllers::new(as_account("endpoint-controller"), &factory);
    tasks.spawn(endpoints.concurrency(5).run(logic));
    let (sets, logic) = StatefulSets::new(as_account("statefulset-controller"), &factory);
    tasks.spawn(sets.concurrency(5).run(logic));
    let (daemons, logic) = DaemonSets::new(as_account("daemon-set-controller"), &factory);
    tasks.spawn(daemons.concurrency(2).run(logic));
    let (pvcs, logic) = PvcProtection::new(as_account("pvc-protection-controller"), &factory);
    tasks.spawn(pvcs.run(logic));
    let (pvs, logic) = PvProtection::new(as_account("pv-protection-controller"), &factory);
    tasks.spawn(pvs.run(logic));
    let (volumes, logic) = Volumes::new(as_account("persistent-volume-binder"), &factory);
    if let Err(e) = logic.ensure_default_class().await {
        tracing::warn!(error = %e, "making the local-path StorageClass");
    }
    tasks.spawn(volumes.concurrency(2).run(logic));
    let (hpas, logic) = Autoscalers::new(as_account("horizontal-pod-autoscaler"), &factory);
    tasks.spawn(hpas.concurrency(2).run(logic));
    let (quotas, logic) = ResourceQuotas::new(as_account("resourcequota-controller"), &factory);
    tasks.spawn(quotas.concurrency(2).run(logic));
    let (budgets, logic) = Disruption::new(as_account("disruption-controller"), &factory);
    tasks.spawn(budgets.concurrency(2).run(logic));
    let (jobs, logic) = Jobs::new(as_account("job-controller"), &factory);
    tasks.spawn(jobs.concurrency(5).run(logic));
    let (cronjobs, logic) = CronJobs::new(as_account("cronjob-controller"), &factory);
    tasks.spawn(cronjobs.concurrency(2).run(logic));
    let (ttl, logic) = TtlAfterFinished::new(as_account("ttl-after-finished-controller"), &factory);
    tasks.spawn(ttl.concurrency(2).run(logic));
    let (deployments, logic) = Deployments::new(as_account("deployment-controller"), &factory);
    tasks.spawn(deployments.concurrency(5).run(logic));
    // The collector needs discovery: retry until the server answers.
    let gc = loop {
        match GarbageCollector::new(as_account("generic-garbage-collector"), &factory).await {
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
