//! Jobs and CronJobs over a simulated node agent (pods run to completion with the exit code
//! their `simulated/exit-code` annotation names).

use super::agent::Agent;
use super::{client, eventually};
use bosun_api_types::batch::v1::{CronJob, Job};
use bosun_api_types::core::v1::Pod;
use bosun_api_types::Time;
use bosun_client::informer::InformerFactory;
use bosun_client::reflector::Key;
use bosun_client::{Api, Client, ListParams, Patch, PatchParams, PostParams};
use bosun_controllers::builtin::cronjob::{Clock, CronJobs};
use bosun_controllers::builtin::job::Jobs;
use bosun_controllers::builtin::ttl::TtlAfterFinished;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::Duration;

async fn cluster() -> (Client, Arc<InformerFactory>) {
    let client = client().await;
    Agent::start(client.clone(), &["node-a", "node-b"]).await;
    let factory = Arc::new(InformerFactory::new(client.clone()));
    let (c, logic) = Jobs::new(client.clone(), &factory);
    tokio::spawn(
        c.concurrency(4)
            .run(logic.with_backoff(Duration::from_millis(50))),
    );
    let (c, logic) = TtlAfterFinished::new(client.clone(), &factory);
    tokio::spawn(c.run(logic));
    // TTL deletes in the foreground: the collector finishes it.
    let gc = bosun_controllers::builtin::garbagecollector::GarbageCollector::new(
        client.clone(),
        &factory,
    )
    .await
    .unwrap();
    tokio::spawn(gc.run());
    (client, factory)
}

fn job(name: &str, spec: Value, exit: &str) -> Job {
    let mut spec = spec;
    spec["template"] = json!({
        "metadata": {"annotations": {"simulated/exit-code": exit}},
        "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}
    });
    serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).unwrap()
}

async fn condition(api: &Api<Job>, name: &str, t: &str) -> Option<(String, String)> {
    let j = api.get_opt(name).await.unwrap()?;
    j.status?
        .conditions
        .into_iter()
        .find(|c| c.r#type == t && c.status == "True")
        .map(|c| (c.reason.unwrap_or_default(), c.message.unwrap_or_default()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_complete_fail_suspend_and_expire() {
    let (client, _factory) = cluster().await;
    let api: Api<Job> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let p = PostParams::default();

    // 3 completions, 2 at a time.
    api.create(
        &p,
        &job("three", json!({"completions": 3, "parallelism": 2}), "0"),
    )
    .await
    .unwrap();
    // Indexed: each index once.
    api.create(
        &p,
        &job(
            "indexed",
            json!({"completions": 3, "parallelism": 3, "completionMode": "Indexed"}),
            "0",
        ),
    )
    .await
    .unwrap();
    // Every pod fails: the backoff limit ends it.
    api.create(&p, &job("failing", json!({"backoffLimit": 1}), "1"))
        .await
        .unwrap();
    // A podFailurePolicy rule fails the Job at the first exit code 42.
    api.create(
        &p,
        &job(
            "policy",
            json!({"backoffLimit": 5, "podFailurePolicy": {"rules": [
        {"action": "FailJob", "onExitCodes": {"operator": "In", "values": [42]}}]}}),
            "42",
        ),
    )
    .await
    .unwrap();
    // Never finishes: the deadline ends it.
    api.create(
        &p,
        &job("slow", json!({"activeDeadlineSeconds": 1}), "never"),
    )
    .await
    .unwrap();
    // Suspended: no pods until resumed.
    api.create(&p, &job("later", json!({"suspend": true}), "0"))
        .await
        .unwrap();
    // Expires after finishing.
    api.create(
        &p,
        &job("brief", json!({"ttlSecondsAfterFinished": 0}), "0"),
    )
    .await
    .unwrap();

    eventually("three to complete", || {
        let api = api.clone();
        async move { condition(&api, "three", "Complete").await.is_some() }
    })
    .await;
    let s = api.get("three").await.unwrap().status.unwrap();
    assert_eq!(
        (s.succeeded, s.active, s.failed),
        (Some(3), Some(0), Some(0))
    );
    assert!(s.completion_time.is_some() && s.start_time.is_some());

    eventually("indexed to complete", || {
        let api = api.clone();
        async move { condition(&api, "indexed", "Complete").await.is_some() }
    })
    .await;
    let s = api.get("indexed").await.unwrap().status.unwrap();
    assert_eq!(s.completed_indexes.as_deref(), Some("0-2"));
    let mut indexes: Vec<String> = pods
        .list(&ListParams::default().labels("batch.kubernetes.io/job-name=indexed"))
        .await
        .unwrap()
        .items
        .iter()
        .map(|p| p.metadata.annotations["batch.kubernetes.io/job-completion-index"].clone())
        .collect();
    indexes.sort();
    assert_eq!(indexes, ["0", "1", "2"]);

    eventually("failing to fail", || {
        let api = api.clone();
        async move { condition(&api, "failing", "Failed").await.is_some() }
    })
    .await;
    assert_eq!(
        condition(&api, "failing", "Failed").await.unwrap(),
        (
            "BackoffLimitExceeded".into(),
            "Job has reached the specified backoff limit".into()
        )
    );
    assert_eq!(
        api.get("failing").await.unwrap().status.unwrap().failed,
        Some(2)
    );

    eventually("policy to fail", || {
        let api = api.clone();
        async move { condition(&api, "policy", "Failed").await.is_some() }
    })
    .await;
    let (reason, message) = condition(&api, "policy", "Failed").await.unwrap();
    assert_eq!(reason, "PodFailurePolicy");
    assert!(
        message.contains("matching FailJob rule at index 0"),
        "{message}"
    );

    eventually("slow to pass its deadline", || {
        let api = api.clone();
        async move {
            condition(&api, "slow", "Failed")
                .await
                .is_some_and(|(r, _)| r == "DeadlineExceeded")
        }
    })
    .await;
    eventually("slow's pods to be stopped", || {
        let pods = pods.clone();
        async move {
            pods.list(&ListParams::default().labels("batch.kubernetes.io/job-name=slow"))
                .await
                .unwrap()
                .items
                .iter()
                .all(|p| p.metadata.deletion_timestamp.is_some())
        }
    })
    .await;

    eventually("later to report Suspended", || {
        let api = api.clone();
        async move { condition(&api, "later", "Suspended").await.is_some() }
    })
    .await;
    assert!(pods
        .list(&ListParams::default().labels("batch.kubernetes.io/job-name=later"))
        .await
        .unwrap()
        .items
        .is_empty());
    api.patch(
        "later",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"suspend": false}})),
    )
    .await
    .unwrap();
    eventually("later to complete once resumed", || {
        let api = api.clone();
        async move { condition(&api, "later", "Complete").await.is_some() }
    })
    .await;

    eventually("brief to expire", || {
        let api = api.clone();
        async move { api.get_opt("brief").await.unwrap().is_none() }
    })
    .await;
}

/// A clock the test moves.
struct FakeClock(Mutex<Time>);

impl Clock for FakeClock {
    fn now(&self) -> Time {
        *self.0.lock().unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cronjob_every_minute_makes_jobs_and_keeps_its_history() {
    let (client, factory) = cluster().await;
    let start = Time::now();
    let clock = Arc::new(FakeClock(Mutex::new(start)));
    let (c, logic) = CronJobs::new(client.clone(), &factory);
    let queue = c.queue();
    tokio::spawn(c.run(logic.with_clock(clock.clone())));
    let cronjobs: Api<CronJob> = Api::namespaced(client.clone(), "default");
    let jobs: Api<Job> = Api::namespaced(client.clone(), "default");
    let cj: CronJob = serde_json::from_value(json!({
        "metadata": {"name": "tick"},
        "spec": {"schedule": "*/1 * * * *", "successfulJobsHistoryLimit": 2,
            "concurrencyPolicy": "Forbid",
            "jobTemplate": {"spec": {"template": {
                "metadata": {"annotations": {"simulated/exit-code": "0"}},
                "spec": {"restartPolicy": "OnFailure", "containers": [{"name": "c", "image": "busybox"}]}}}}}
    }))
    .unwrap();
    cronjobs.create(&PostParams::default(), &cj).await.unwrap();

    let mut made = Vec::new();
    for minute in 1..=4 {
        // One minute on: the next run is due.
        *clock.0.lock().unwrap() = Time::from_unix(start.unix_seconds() + 60 * minute, 0);
        queue.add(Key::namespaced("default", "tick"));
        let before = made.len();
        eventually("the minute's Job to be made and complete", || {
            let (jobs, made_so_far) = (jobs.clone(), made.clone());
            async move {
                let list = jobs.list(&ListParams::default()).await.unwrap().items;
                list.iter().any(|j| {
                    !made_so_far.contains(j.metadata.name.as_ref().unwrap())
                        && j.status.as_ref().is_some_and(|s| s.succeeded == Some(1))
                })
            }
        })
        .await;
        let list = jobs.list(&ListParams::default()).await.unwrap().items;
        for j in list {
            let name = j.metadata.name.unwrap();
            if !made.contains(&name) {
                assert!(j
                    .metadata
                    .annotations
                    .contains_key("batch.kubernetes.io/cronjob-scheduled-timestamp"));
                made.push(name);
            }
        }
        assert_eq!(made.len(), before + 1, "one Job per minute: {made:?}");
    }
    // The history limit keeps the newest two.
    queue.add(Key::namespaced("default", "tick"));
    eventually("the history limit", || {
        let jobs = jobs.clone();
        async move { jobs.list(&ListParams::default()).await.unwrap().items.len() == 2 }
    })
    .await;
    let mut left: Vec<String> = jobs
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|j| j.metadata.name.unwrap())
        .collect();
    left.sort();
    let mut newest = made[2..].to_vec();
    newest.sort();
    assert_eq!(left, newest);
    eventually("the status", || {
        let cronjobs = cronjobs.clone();
        async move {
            let s = cronjobs
                .get("tick")
                .await
                .unwrap()
                .status
                .unwrap_or_default();
            s.active.is_empty()
                && s.last_schedule_time.is_some()
                && s.last_successful_time.is_some()
        }
    })
    .await;
}
