//! The CronJob controller: Jobs on a cron schedule.
//!
//! Each sync brings `status.active` in line with the CronJob's Jobs, then, unless suspended,
//! finds the most recent scheduled time not yet run (no earlier than `startingDeadlineSeconds`
//! ago) and creates its Job, named `<cronjob>-<minutes since the epoch>` (so a time never runs
//! twice). `concurrencyPolicy` Forbid skips a run while one is active, Replace deletes the
//! active ones first. Finished Jobs beyond `successfulJobsHistoryLimit` and
//! `failedJobsHistoryLimit` are deleted, oldest first. The controller comes back at the next
//! scheduled time. Time comes from a [`Clock`], so tests can move it.

use super::cron::Schedule;
use super::job::finished;
use super::pods;
use crate::controller::{Action, Controller, Reconciler};
use bosun_api_types::batch::v1::{CronJob, Job};
use bosun_api_types::core::v1::ObjectReference;
use bosun_api_types::Time;
use bosun_client::events::{EventType, Recorder};
use bosun_client::informer::InformerFactory;
use bosun_client::reflector::{Key, Store};
use bosun_client::{Api, Client, DeleteParams, PostParams};
use jiff::tz::TimeZone;
use jiff::Timestamp;
use std::sync::Arc;
use std::time::Duration;

/// The annotation with the time a Job was scheduled for.
pub const SCHEDULED_TIMESTAMP: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";

/// Where the controller reads the time.
pub trait Clock: Send + Sync + 'static {
    /// Now.
    fn now(&self) -> Time;
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Time {
        Time::now()
    }
}

/// The CronJob controller's logic.
pub struct CronJobs {
    client: Client,
    jobs: Store<Job>,
    clock: Arc<dyn Clock>,
    recorder: Arc<Recorder>,
}

fn to_ts(t: Time) -> Timestamp {
    Timestamp::new(t.unix_seconds(), 0).unwrap_or(Timestamp::UNIX_EPOCH)
}

fn to_time(t: Timestamp) -> Time {
    Time::from_unix(t.as_second(), 0)
}

fn job_owner(job: &Job) -> Option<Key> {
    let r = pods::controller_ref(&job.metadata)?;
    (r.kind == "CronJob" && r.api_version.starts_with("batch/"))
        .then(|| Key::namespaced(job.metadata.namespace.as_deref().unwrap_or(""), &r.name))
}

fn reference(job: &Job) -> ObjectReference {
    ObjectReference {
        api_version: Some("batch/v1".into()),
        kind: Some("Job".into()),
        namespace: job.metadata.namespace.clone(),
        name: job.metadata.name.clone(),
        uid: job.metadata.uid.clone(),
        resource_version: job.metadata.resource_version.clone(),
        ..Default::default()
    }
}

fn succeeded(job: &Job) -> bool {
    job.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.r#type == "Complete" && c.status == "True")
    })
}

impl CronJobs {
    /// The controller (on `factory`'s informers) and its logic, on the system clock.
    pub fn new(client: Client, factory: &Arc<InformerFactory>) -> (Controller<CronJob>, Self) {
        let jobs = factory.informer::<Job>(None).store();
        let controller = Controller::<CronJob>::new(Arc::clone(factory), None)
            .watches_with::<Job>(|j| job_owner(j).into_iter().collect());
        let logic = CronJobs {
            recorder: Arc::new(Recorder::core(
                client.clone(),
                "cronjob-controller",
                "cronjob-controller",
            )),
            client,
            jobs,
            clock: Arc::new(SystemClock),
        };
        (controller, logic)
    }

    /// Reads the time from `clock` instead.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    fn event(&self, cj: &CronJob, event_type: EventType, reason: &str, note: String) {
        super::pods::emit(&self.recorder, cj, event_type, reason, note);
    }

    /// Deletes the oldest finished Jobs beyond the history limits.
    async fn cleanup(&self, cj: &CronJob, children: &[Arc<Job>]) -> bosun_client::Result<()> {
        let Some(spec) = cj.spec.as_ref() else {
            return Ok(());
        };
        let api: Api<Job> = Api::namespaced(
            self.client.clone(),
            cj.metadata.namespace.as_deref().unwrap_or(""),
        );
        for (ok, limit) in [
            (true, spec.successful_jobs_history_limit),
            (false, spec.failed_jobs_history_limit),
        ] {
            let Some(limit) = limit else { continue };
            let mut done: Vec<&Arc<Job>> = children
                .iter()
                .filter(|j| {
                    finished(j) && succeeded(j) == ok && j.metadata.deletion_timestamp.is_none()
                })
                .collect();
            let excess = done
                .len()
                .saturating_sub(usize::try_from(limit.max(0)).unwrap_or(0));
            done.sort_by_key(|j| {
                (
                    j.status.as_ref().and_then(|s| s.start_time),
                    j.metadata.creation_timestamp,
                )
            });
            for j in done.into_iter().take(excess) {
                let name = j.metadata.name.clone().unwrap_or_default();
                let params = DeleteParams {
                    propagation_policy: Some("Background".into()),
                    precondition_uid: j.metadata.uid.clone(),
                    ..Default::default()
                };
                match api.delete(&name, &params).await {
                    Ok(_) => self.event(
                        cj,
                        EventType::Normal,
                        "SuccessfulDelete",
                        format!("Deleted job {name}"),
                    ),
                    Err(e) if e.is_not_found() || e.is_conflict() => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl Reconciler<CronJob> for CronJobs {
    type Error = super::Error;

    async fn reconcile(&self, cj: Arc<CronJob>) -> Result<Action, Self::Error> {
        let key = Key::of(&*cj);
        let Some(spec) = cj.spec.as_ref() else {
            return Ok(Action::Done);
        };
        let now = self.clock.now();
        let uid = cj.metadata.uid.clone().unwrap_or_default();
        let children: Vec<Arc<Job>> = self
            .jobs
            .by_index("namespace", &key.namespace)
            .into_iter()
            .filter(|j| pods::controller_ref(&j.metadata).is_some_and(|r| r.uid == uid))
            .collect();
        let old_status = cj.status.clone().unwrap_or_default();
        let mut status = old_status.clone();
        // Active: the unfinished children.
        let mut active: Vec<ObjectReference> = children
            .iter()
            .filter(|j| !finished(j) && j.metadata.deletion_timestamp.is_none())
            .map(|j| reference(j))
            .collect();
        active.sort_by(|a, b| a.name.cmp(&b.name));
        for j in children.iter().filter(|j| finished(j)) {
            let was_active = old_status.active.iter().any(|r| r.uid == j.metadata.uid);
            if was_active {
                self.event(
                    &cj,
                    EventType::Normal,
                    "SawCompletedJob",
                    format!(
                        "Saw completed job: {}, status: {}",
                        j.metadata.name.as_deref().unwrap_or_default(),
                        if succeeded(j) { "Complete" } else { "Failed" }
                    ),
                );
            }
            if succeeded(j) {
                let done = j.status.as_ref().and_then(|s| s.completion_time);
                if done > status.last_successful_time {
                    status.last_successful_time = done;
                }
            }
        }
        status.active = active;

        let api: Api<CronJob> = Api::namespaced(self.client.clone(), &key.namespace);
        let write = |status: bosun_api_types::batch::v1::CronJobStatus| {
            let (api, cj) = (api.clone(), Arc::clone(&cj));
            async move {
                if cj.status.as_ref() == Some(&status) {
                    return Ok(());
                }
                let mut updated = (*cj).clone();
                updated.status = Some(status);
                match api
                    .replace_status(
                        cj.metadata.name.as_deref().unwrap_or_default(),
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
        };

        self.cleanup(&cj, &children).await?;
        if cj.metadata.deletion_timestamp.is_some() {
            write(status).await?;
            return Ok(Action::Done);
        }
        let tz = match spec.time_zone.as_deref() {
            None => TimeZone::UTC,
            Some(name) => match TimeZone::get(name) {
                Ok(tz) => tz,
                Err(_) => {
                    self.event(
                        &cj,
                        EventType::Warning,
                        "UnknownTimeZone",
                        format!("invalid timeZone: {name:?}"),
                    );
                    write(status).await?;
                    return Ok(Action::Done);
                }
            },
        };
        let schedule: Schedule = match spec.schedule.parse() {
            Ok(s) => s,
            Err(e) => {
                self.event(
                    &cj,
                    EventType::Warning,
                    "UnparseableSchedule",
                    e.to_string(),
                );
                write(status).await?;
                return Ok(Action::Done);
            }
        };
        let now_ts = to_ts(now);
        let next_wake = |from: Timestamp| {
            schedule.next_after(from, &tz).map(|t| {
                Duration::from_secs(
                    u64::try_from((t.as_second() - now_ts.as_second()).max(0)).unwrap_or(0),
                ) + Duration::from_millis(100)
            })
        };
        if spec.suspend.unwrap_or(false) {
            write(status).await?;
            return Ok(Action::Done);
        }
        // The runs missed since the last one (or creation), no earlier than the deadline.
        let mut earliest = status
            .last_schedule_time
            .or(cj.metadata.creation_timestamp)
            .map_or(now_ts, to_ts);
        if let Some(sds) = spec.starting_deadline_seconds {
            let deadline = Timestamp::new(now_ts.as_second() - sds, 0).unwrap_or(now_ts);
            if earliest < deadline {
                earliest = deadline;
            }
        }
        let (scheduled, missed) = schedule.most_recent(earliest, now_ts, &tz, 100);
        let Some(scheduled) = scheduled else {
            write(status).await?;
            return Ok(next_wake(now_ts).map_or(Action::Done, Action::Requeue));
        };
        if missed >= 100 {
            self.event(&cj, EventType::Warning, "TooManyMissedTimes", "too many missed start times. Set or decrease .spec.startingDeadlineSeconds or check clock skew".into());
        }
        let job_name = format!("{}-{}", key.name, scheduled.as_second() / 60);
        let already = children
            .iter()
            .any(|j| j.metadata.name.as_deref() == Some(job_name.as_str()));
        if already {
            write(status).await?;
            return Ok(next_wake(now_ts).map_or(Action::Done, Action::Requeue));
        }
        match spec.concurrency_policy.as_deref() {
            Some("Forbid") if !status.active.is_empty() => {
                self.event(&cj, EventType::Normal, "JobAlreadyActive", "Not starting job because prior execution is running and concurrency policy is Forbid".into());
                write(status).await?;
                // Looked at again when the running Job finishes (its update wakes us).
                return Ok(next_wake(now_ts).map_or(Action::Done, Action::Requeue));
            }
            Some("Replace") => {
                let jobs: Api<Job> = Api::namespaced(self.client.clone(), &key.namespace);
                for r in std::mem::take(&mut status.active) {
                    let name = r.name.clone().unwrap_or_default();
                    let params = DeleteParams {
                        propagation_policy: Some("Background".into()),
                        precondition_uid: r.uid.clone(),
                        ..Default::default()
                    };
                    match jobs.delete(&name, &params).await {
                        Ok(_) => self.event(
                            &cj,
                            EventType::Normal,
                            "SuccessfulDelete",
                            format!("Deleted job {name}"),
                        ),
                        Err(e) if e.is_not_found() => {}
                        Err(e) => return Err(e.into()),
                    }
                }
            }
            _ => {}
        }
        // The Job for `scheduled`.
        let template = spec.job_template.clone();
        let mut job = Job::default();
        let meta = template.metadata.unwrap_or_default();
        job.metadata.name = Some(job_name.clone());
        job.metadata.labels = meta.labels;
        job.metadata.annotations = meta.annotations;
        job.metadata.annotations.insert(
            SCHEDULED_TIMESTAMP.into(),
            scheduled
                .to_zoned(tz.clone())
                .strftime("%Y-%m-%dT%H:%M:%S%:z")
                .to_string(),
        );
        job.metadata.owner_references = vec![pods::owner_ref(&*cj, "CronJob", "batch/v1")];
        job.spec = template.spec;
        let jobs: Api<Job> = Api::namespaced(self.client.clone(), &key.namespace);
        match jobs.create(&PostParams::default(), &job).await {
            Ok(created) => {
                self.event(
                    &cj,
                    EventType::Normal,
                    "SuccessfulCreate",
                    format!("Created job {job_name}"),
                );
                status.active.push(reference(&created));
            }
            // Made already (a lagging cache): the time has run.
            Err(e) if e.code() == Some(409) => {}
            Err(e) => {
                self.event(
                    &cj,
                    EventType::Warning,
                    "FailedCreate",
                    format!("Error creating job: {e}"),
                );
                return Err(e.into());
            }
        }
        status.last_schedule_time = Some(to_time(scheduled));
        write(status).await?;
        Ok(next_wake(now_ts).map_or(Action::Done, Action::Requeue))
    }
}
