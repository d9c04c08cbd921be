//! The Job controller: pods run to completion.
//!
//! A Job runs up to `parallelism` pods at once until `completions` of them succeed (or, with
//! no `completions`, until one succeeds and the rest finish). `Indexed` completion mode gives
//! each pod an index (`batch.kubernetes.io/job-completion-index`, `JOB_COMPLETION_INDEX`) and
//! completes when every index has succeeded. Failed pods are replaced after an exponential
//! delay until more than `backoffLimit` have failed; `podFailurePolicy` rules (exit codes, pod
//! conditions; FailJob, Ignore, Count) decide first. `activeDeadlineSeconds` fails a Job that
//! runs too long, and `suspend` stops its pods. Status carries active, ready, succeeded,
//! failed, terminating, completedIndexes, start and completion times, and the Complete,
//! Failed and Suspended conditions `kubectl wait` and `get` read.

use super::pods::{self, Expectations};
use crate::controller::{Action, Controller, Reconciler};
use bosun_api_types::batch::v1::{Job, JobCondition, JobStatus, PodFailurePolicyRule};
use bosun_api_types::core::v1::{EnvVar, Pod};
use bosun_api_types::selector::LabelSelectorExt;
use bosun_api_types::Time;
use bosun_client::events::{EventType, Recorder};
use bosun_client::informer::InformerFactory;
use bosun_client::reflector::{Key, Store};
use bosun_client::{Api, Client, DeleteParams, PostParams};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

/// The annotation and label with an Indexed Job pod's index.
pub const COMPLETION_INDEX: &str = "batch.kubernetes.io/job-completion-index";

/// The Job controller's logic.
pub struct Jobs {
    client: Client,
    pods: Store<Pod>,
    expectations: Arc<Expectations>,
    recorder: Arc<Recorder>,
    backoff_base: Duration,
}

fn owner_key(pod: &Pod) -> Option<Key> {
    let r = pods::controller_ref(&pod.metadata)?;
    (r.kind == "Job" && r.api_version.starts_with("batch/"))
        .then(|| Key::namespaced(pod.metadata.namespace.as_deref().unwrap_or(""), &r.name))
}

fn condition_true(s: &JobStatus, t: &str) -> bool {
    s.conditions
        .iter()
        .any(|c| c.r#type == t && c.status == "True")
}

/// Whether the Job has finished (Complete or Failed).
pub fn finished(job: &Job) -> bool {
    job.status
        .as_ref()
        .is_some_and(|s| condition_true(s, "Complete") || condition_true(s, "Failed"))
}

fn set_condition(s: &mut JobStatus, t: &str, status: &str, reason: &str, message: &str, now: Time) {
    if let Some(c) = s.conditions.iter_mut().find(|c| c.r#type == t) {
        if c.status != status {
            c.last_transition_time = Some(now);
        }
        if c.status != status || c.reason.as_deref() != Some(reason) {
            c.last_probe_time = Some(now);
        }
        c.status = status.into();
        c.reason = Some(reason.into());
        c.message = Some(message.into());
        return;
    }
    s.conditions.push(JobCondition {
        r#type: t.into(),
        status: status.into(),
        last_probe_time: Some(now),
        last_transition_time: Some(now),
        reason: Some(reason.into()),
        message: Some(message.into()),
    });
}

/// `0,1,2,4` → `0-2,4` (upstream's completedIndexes format).
pub fn format_indexes(set: &BTreeSet<i32>) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut iter = set.iter().copied().peekable();
    while let Some(start) = iter.next() {
        let mut end = start;
        while iter.peek() == Some(&(end + 1)) {
            end += 1;
            iter.next();
        }
        out.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
    }
    out.join(",")
}

fn index_of(pod: &Pod) -> Option<i32> {
    pod.metadata
        .annotations
        .get(COMPLETION_INDEX)
        .or_else(|| pod.metadata.labels.get(COMPLETION_INDEX))?
        .parse()
        .ok()
}

/// What a podFailurePolicy makes of a failed pod.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    FailJob(String),
    Ignore,
    Count,
}

fn rule_matches(rule: &PodFailurePolicyRule, pod: &Pod) -> bool {
    if let Some(req) = &rule.on_exit_codes {
        let statuses = pod
            .status
            .as_ref()
            .map(|s| s.container_statuses.clone())
            .unwrap_or_default();
        return statuses.iter().any(|c| {
            if req.container_name.as_ref().is_some_and(|n| *n != c.name) {
                return false;
            }
            let Some(code) = c
                .state
                .as_ref()
                .and_then(|s| s.terminated.as_ref())
                .map(|t| t.exit_code)
            else {
                return false;
            };
            // Exit code 0 never matches (upstream).
            if code == 0 {
                return false;
            }
            match req.operator.as_str() {
                "In" => req.values.contains(&code),
                "NotIn" => !req.values.contains(&code),
                _ => false,
            }
        });
    }
    let conditions = pod
        .status
        .as_ref()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    rule.on_pod_conditions.iter().any(|p| {
        conditions
            .iter()
            .any(|c| c.r#type == p.r#type && c.status == p.status)
    })
}

fn verdict(job: &Job, pod: &Pod) -> Verdict {
    let Some(policy) = job
        .spec
        .as_ref()
        .and_then(|s| s.pod_failure_policy.as_ref())
    else {
        return Verdict::Count;
    };
    for (i, rule) in policy.rules.iter().enumerate() {
        if rule_matches(rule, pod) {
            return match rule.action.as_str() {
                "FailJob" => Verdict::FailJob(format!(
                    "Pod {}/{} has condition or exit code matching FailJob rule at index {i}",
                    pod.metadata.namespace.as_deref().unwrap_or_default(),
                    pod.metadata.name.as_deref().unwrap_or_default()
                )),
                "Ignore" => Verdict::Ignore,
                _ => Verdict::Count,
            };
        }
    }
    Verdict::Count
}

impl Jobs {
    /// The controller (on `factory`'s informers) and its logic; run one with the other.
    pub fn new(client: Client, factory: &Arc<InformerFactory>) -> (Controller<Job>, Self) {
        let pod_informer = factory.informer::<Pod>(None);
        let controller =
            Controller::<Job>::new(Arc::clone(factory), None).waits_for(pod_informer.store());
        let expectations = Arc::new(Expectations::default());
        pods::track_owned(
            &pod_informer,
            Arc::clone(&expectations),
            controller.queue(),
            owner_key,
            |_| Vec::new(),
        );
        let logic = Jobs {
            recorder: Arc::new(Recorder::core(
                client.clone(),
                "job-controller",
                "job-controller",
            )),
            client,
            pods: pod_informer.store(),
            expectations,
            backoff_base: Duration::from_secs(10),
        };
        (controller, logic)
    }

    /// The delay before a failed pod is replaced, doubled per failure (10 s, capped at 6 min,
    /// as upstream); tests shorten it.
    pub fn with_backoff(mut self, base: Duration) -> Self {
        self.backoff_base = base;
        self
    }

    fn event(&self, job: &Job, event_type: EventType, reason: &str, note: String) {
        super::pods::emit(&self.recorder, job, event_type, reason, note);
    }

    async fn delete_pods(
        &self,
        job: &Job,
        key: &Key,
        victims: &[Arc<Pod>],
    ) -> bosun_client::Result<()> {
        if victims.is_empty() {
            return Ok(());
        }
        self.expectations
            .expect_deletions(key, victims.iter().map(|p| pods::pod_key(p)));
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &key.namespace);
        for p in victims {
            let name = p.metadata.name.clone().unwrap_or_default();
            let params = DeleteParams {
                precondition_uid: p.metadata.uid.clone(),
                propagation_policy: Some("Background".into()),
                ..Default::default()
            };
            match api.delete(&name, &params).await {
                Ok(_) => self.event(
                    job,
                    EventType::Normal,
                    "SuccessfulDelete",
                    format!("Deleted pod: {name}"),
                ),
                Err(e) => {
                    self.expectations.deletion_observed(key, &pods::pod_key(p));
                    if !e.is_not_found() && !e.is_conflict() {
                        return Err(e);
                    }
                }
            }
        }
        Ok(())
    }

    async fn create_pods(
        &self,
        job: &Job,
        key: &Key,
        indexes: Vec<Option<i32>>,
    ) -> bosun_client::Result<()> {
        if indexes.is_empty() {
            return Ok(());
        }
        let Some(spec) = job.spec.as_ref() else {
            return Ok(());
        };
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &key.namespace);
        let owner = pods::owner_ref(job, "Job", "batch/v1");
        self.expectations.expect_creations(key, indexes.len());
        let mut failure = None;
        for index in indexes {
            let prefix = match index {
                Some(i) => format!("{}-{i}", key.name),
                None => key.name.clone(),
            };
            let mut pod = pods::from_template(&spec.template, &prefix, owner.clone());
            if let Some(i) = index {
                pod.metadata
                    .annotations
                    .insert(COMPLETION_INDEX.into(), i.to_string());
                pod.metadata
                    .labels
                    .insert(COMPLETION_INDEX.into(), i.to_string());
                if let Some(ps) = pod.spec.as_mut() {
                    // The index for the containers, and a stable hostname.
                    ps.hostname
                        .get_or_insert_with(|| format!("{}-{i}", key.name));
                    for c in ps
                        .init_containers
                        .iter_mut()
                        .chain(ps.containers.iter_mut())
                    {
                        c.env.push(EnvVar {
                            name: "JOB_COMPLETION_INDEX".into(),
                            value_from: Some(serde_json::from_value(serde_json::json!({
                                "fieldRef": {"fieldPath": format!("metadata.annotations['{COMPLETION_INDEX}']")}
                            })).unwrap_or_default()),
                            ..Default::default()
                        });
                    }
                }
            }
            if failure.is_some() {
                self.expectations.creation_observed(key);
                continue;
            }
            match api.create(&PostParams::default(), &pod).await {
                Ok(p) => self.event(
                    job,
                    EventType::Normal,
                    "SuccessfulCreate",
                    format!("Created pod: {}", p.metadata.name.unwrap_or_default()),
                ),
                Err(e) => {
                    self.expectations.creation_observed(key);
                    if !(e.code() == Some(403) && e.to_string().contains("being terminated")) {
                        self.event(
                            job,
                            EventType::Warning,
                            "FailedCreate",
                            format!("Error creating: {e}"),
                        );
                    }
                    failure = Some(e);
                }
            }
        }
        failure.map_or(Ok(()), Err)
    }

    async fn write_status(&self, job: &Job, status: JobStatus) -> bosun_client::Result<()> {
        if job.status.as_ref() == Some(&status) {
            return Ok(());
        }
        let api: Api<Job> = Api::namespaced(
            self.client.clone(),
            job.metadata.namespace.as_deref().unwrap_or(""),
        );
        let mut updated = job.clone();
        updated.status = Some(status);
        match api
            .replace_status(
                job.metadata.name.as_deref().unwrap_or_default(),
                &PostParams::default(),
                &updated,
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }
}

#[async_trait::async_trait]
impl Reconciler<Job> for Jobs {
    type Error = super::Error;

    async fn reconcile(&self, job: Arc<Job>) -> Result<Action, Self::Error> {
        let key = Key::of(&*job);
        let Some(spec) = job.spec.as_ref() else {
            return Ok(Action::Done);
        };
        let now = Time::now();
        let old_status = job.status.clone().unwrap_or_default();
        let mut status = old_status.clone();
        let selector = match spec.selector.as_ref().map(LabelSelectorExt::to_selector) {
            Some(Ok(s)) => s,
            _ => return Ok(Action::Done),
        };
        let owner = pods::owner_ref(&*job, "Job", "batch/v1");
        let all = self.pods.by_index("namespace", &key.namespace);
        let claimed =
            pods::claim(&self.client, &*job, &owner, all, &selector, finished(&job)).await?;
        let active: Vec<Arc<Pod>> = claimed
            .iter()
            .filter(|p| pods::is_active(p))
            .cloned()
            .collect();
        let terminating = claimed
            .iter()
            .filter(|p| {
                p.metadata.deletion_timestamp.is_some()
                    && !matches!(pods::phase(p), "Succeeded" | "Failed")
            })
            .count();
        let succeeded_pods: Vec<&Arc<Pod>> = claimed
            .iter()
            .filter(|p| pods::phase(p) == "Succeeded")
            .collect();
        let failed_pods: Vec<&Arc<Pod>> = claimed
            .iter()
            .filter(|p| pods::phase(p) == "Failed")
            .collect();

        if finished(&job) {
            // Only stragglers to stop.
            if !active.is_empty() {
                self.delete_pods(&job, &key, &active).await?;
            }
            return Ok(Action::Done);
        }

        let indexed = spec.completion_mode.as_deref() == Some("Indexed");
        let completions = spec.completions;
        let parallelism = spec.parallelism.unwrap_or(1).max(0);
        let mut counted_failures = 0i32;
        let mut fail: Option<(String, String)> = None;
        for p in &failed_pods {
            match verdict(&job, p) {
                Verdict::FailJob(message) => {
                    fail.get_or_insert(("PodFailurePolicy".into(), message));
                }
                Verdict::Ignore => {}
                Verdict::Count => counted_failures += 1,
            }
        }
        let failed = counted_failures.max(old_status.failed.unwrap_or(0));
        let succeeded_indexes: BTreeSet<i32> = succeeded_pods
            .iter()
            .filter_map(|p| index_of(p))
            .filter(|i| completions.is_none_or(|c| *i < c))
            .collect();
        let succeeded = if indexed {
            i32::try_from(succeeded_indexes.len()).unwrap_or(i32::MAX)
        } else {
            i32::try_from(succeeded_pods.len()).unwrap_or(i32::MAX)
        }
        .max(old_status.succeeded.unwrap_or(0));
        let suspended = spec.suspend.unwrap_or(false);

        if fail.is_none() && failed > spec.backoff_limit.unwrap_or(6) {
            fail = Some((
                "BackoffLimitExceeded".into(),
                "Job has reached the specified backoff limit".into(),
            ));
        }
        if fail.is_none() && !suspended {
            if let (Some(deadline), Some(start)) =
                (spec.active_deadline_seconds, old_status.start_time)
            {
                if now.unix_seconds() - start.unix_seconds() >= deadline {
                    fail = Some((
                        "DeadlineExceeded".into(),
                        "Job was active longer than specified deadline".into(),
                    ));
                }
            }
        }
        let complete = fail.is_none()
            && if indexed {
                completions.is_some_and(|c| succeeded >= c)
            } else {
                match completions {
                    Some(c) => succeeded >= c,
                    None => succeeded > 0 && active.is_empty(),
                }
            };

        let mut requeue = None;
        let mut manage_error = None;
        if let Some((reason, message)) = &fail {
            self.delete_pods(&job, &key, &active).await?;
            set_condition(&mut status, "FailureTarget", "True", reason, message, now);
            set_condition(&mut status, "Failed", "True", reason, message, now);
            self.event(&job, EventType::Warning, reason, message.clone());
        } else if complete {
            self.delete_pods(&job, &key, &active).await?;
            set_condition(
                &mut status,
                "SuccessCriteriaMet",
                "True",
                "CompletionsReached",
                "Reached expected number of succeeded pods",
                now,
            );
            set_condition(
                &mut status,
                "Complete",
                "True",
                "CompletionsReached",
                "Reached expected number of succeeded pods",
                now,
            );
            status.completion_time = Some(now);
            self.event(&job, EventType::Normal, "Completed", "Job completed".into());
        } else if suspended {
            self.delete_pods(&job, &key, &active).await?;
            if !condition_true(&status, "Suspended") {
                set_condition(
                    &mut status,
                    "Suspended",
                    "True",
                    "JobSuspended",
                    "Job suspended",
                    now,
                );
                status.start_time = None;
                self.event(&job, EventType::Normal, "Suspended", "Job suspended".into());
            }
        } else {
            if condition_true(&status, "Suspended") {
                set_condition(
                    &mut status,
                    "Suspended",
                    "False",
                    "JobResumed",
                    "Job resumed",
                    now,
                );
                status.start_time = Some(now);
                self.event(&job, EventType::Normal, "Resumed", "Job resumed".into());
            }
            if status.start_time.is_none() {
                status.start_time = Some(now);
            }
            if self.expectations.satisfied(&key) {
                // Failed pods are replaced only after the backoff.
                let last_failure = failed_pods
                    .iter()
                    .filter_map(|p| {
                        p.status
                            .as_ref()
                            .and_then(|s| {
                                s.container_statuses
                                    .iter()
                                    .filter_map(|c| {
                                        c.state.as_ref()?.terminated.as_ref()?.finished_at
                                    })
                                    .max()
                            })
                            .or(p.metadata.creation_timestamp)
                    })
                    .max();
                let delay = if counted_failures > 0 {
                    let factor = 2u32
                        .saturating_pow(u32::try_from(counted_failures - 1).unwrap_or(0).min(10));
                    (self.backoff_base * factor).min(Duration::from_secs(360))
                } else {
                    Duration::ZERO
                };
                let wait = last_failure
                    .map(|t| {
                        t.unix_seconds() * 1000
                            + i64::from(t.subsec_nanos() / 1_000_000)
                            + i64::try_from(delay.as_millis()).unwrap_or(0)
                            - (now.unix_seconds() * 1000
                                + i64::from(now.subsec_nanos() / 1_000_000))
                    })
                    .unwrap_or(0);
                if wait > 0 && active.len() < usize::try_from(parallelism).unwrap_or(0) {
                    requeue = Some(Duration::from_millis(u64::try_from(wait).unwrap_or(0)));
                } else if indexed {
                    let c = completions.unwrap_or(0);
                    let busy: BTreeSet<i32> = active.iter().filter_map(|p| index_of(p)).collect();
                    let room = usize::try_from(parallelism)
                        .unwrap_or(0)
                        .saturating_sub(active.len());
                    let todo: Vec<Option<i32>> = (0..c)
                        .filter(|i| !succeeded_indexes.contains(i) && !busy.contains(i))
                        .take(room)
                        .map(Some)
                        .collect();
                    // Duplicates (two active pods of one index): the newer goes.
                    let mut seen = BTreeSet::new();
                    let dupes: Vec<Arc<Pod>> = active
                        .iter()
                        .filter(|p| index_of(p).is_some_and(|i| !seen.insert(i)))
                        .cloned()
                        .collect();
                    self.delete_pods(&job, &key, &dupes).await?;
                    if let Err(e) = self.create_pods(&job, &key, todo).await {
                        manage_error = Some(e);
                    }
                } else {
                    let want = match completions {
                        Some(c) => parallelism.min((c - succeeded).max(0)),
                        None if succeeded > 0 => 0,
                        None => parallelism,
                    };
                    let have = i32::try_from(active.len()).unwrap_or(i32::MAX);
                    if have < want {
                        let n = usize::try_from(want - have)
                            .unwrap_or(0)
                            .min(super::replicaset::BURST_REPLICAS);
                        if let Err(e) = self.create_pods(&job, &key, vec![None; n]).await {
                            manage_error = Some(e);
                        }
                    } else if have > want {
                        let n = usize::try_from(have - want).unwrap_or(0);
                        let victims = super::replicaset::pods_to_delete(active.clone(), n);
                        self.delete_pods(&job, &key, &victims).await?;
                    }
                }
            }
            if let Some(deadline) = spec.active_deadline_seconds {
                let start = status.start_time.unwrap_or(now).unix_seconds();
                let left = (start + deadline - now.unix_seconds()).max(1);
                let d = Duration::from_secs(u64::try_from(left).unwrap_or(1));
                requeue = Some(requeue.map_or(d, |r: Duration| r.min(d)));
            }
        }
        let ready = active.iter().filter(|p| pods::is_ready(p)).count();
        status.active = Some(
            i32::try_from(if fail.is_some() || complete || suspended {
                0
            } else {
                active.len()
            })
            .unwrap_or(i32::MAX),
        );
        status.ready = Some(i32::try_from(ready).unwrap_or(i32::MAX));
        status.succeeded = Some(succeeded);
        status.failed = Some(failed);
        status.terminating = Some(i32::try_from(terminating).unwrap_or(i32::MAX));
        if indexed {
            status.completed_indexes = Some(format_indexes(&succeeded_indexes));
        }
        status.uncounted_terminated_pods = Some(Default::default());
        self.write_status(&job, status).await?;
        if let Some(e) = manage_error {
            return Err(e.into());
        }
        Ok(requeue.map_or(Action::Done, Action::Requeue))
    }

    async fn deleted(&self, key: &Key) {
        self.expectations.forget(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completed_indexes_are_ranges() {
        let s: BTreeSet<i32> = [0, 1, 2, 4, 6, 7].into_iter().collect();
        assert_eq!(format_indexes(&s), "0-2,4,6-7");
        assert_eq!(format_indexes(&BTreeSet::new()), "");
    }

    #[test]
    fn failure_policy_rules_match_exit_codes_and_conditions() {
        let job: Job = serde_json::from_value(serde_json::json!({
            "spec": {"template": {}, "podFailurePolicy": {"rules": [
                {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
                {"action": "FailJob", "onExitCodes": {"operator": "In", "values": [42]}}
            ]}}
        }))
        .unwrap_or_default();
        let pod = |code: i32, disrupted: bool| -> Pod {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "p", "namespace": "ns"},
                "status": {"phase": "Failed",
                    "conditions": if disrupted { serde_json::json!([{"type": "DisruptionTarget", "status": "True"}]) } else { serde_json::json!([]) },
                    "containerStatuses": [{"name": "c", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
                        "state": {"terminated": {"exitCode": code}}}]}
            }))
            .unwrap_or_default()
        };
        assert_eq!(verdict(&job, &pod(1, true)), Verdict::Ignore);
        assert!(matches!(
            verdict(&job, &pod(42, false)),
            Verdict::FailJob(_)
        ));
        assert_eq!(verdict(&job, &pod(1, false)), Verdict::Count);
    }
}
