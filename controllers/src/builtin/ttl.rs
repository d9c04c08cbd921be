//! The TTL-after-finished controller: a finished Job with `ttlSecondsAfterFinished` is deleted
//! (in the foreground, its pods first) that long after it completed or failed.

use super::job::finished;
use crate::controller::{Action, Controller, Reconciler};
use bosun_api_types::batch::v1::Job;
use bosun_api_types::Time;
use bosun_client::informer::InformerFactory;
use bosun_client::{Api, Client, DeleteParams};
use std::sync::Arc;
use std::time::Duration;

/// The TTL-after-finished controller's logic.
pub struct TtlAfterFinished {
    client: Client,
}

impl TtlAfterFinished {
    /// The controller (on `factory`'s informers) and its logic.
    pub fn new(client: Client, factory: &Arc<InformerFactory>) -> (Controller<Job>, Self) {
        (
            Controller::<Job>::new(Arc::clone(factory), None),
            TtlAfterFinished { client },
        )
    }
}

/// When `job` finished: its Complete or Failed condition's transition time.
fn finished_at(job: &Job) -> Option<Time> {
    job.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| (c.r#type == "Complete" || c.r#type == "Failed") && c.status == "True")?
        .last_transition_time
}

#[async_trait::async_trait]
impl Reconciler<Job> for TtlAfterFinished {
    type Error = bosun_client::Error;

    async fn reconcile(&self, job: Arc<Job>) -> Result<Action, Self::Error> {
        let Some(ttl) = job.spec.as_ref().and_then(|s| s.ttl_seconds_after_finished) else {
            return Ok(Action::Done);
        };
        if !finished(&job) || job.metadata.deletion_timestamp.is_some() {
            return Ok(Action::Done);
        }
        let Some(at) = finished_at(&job) else {
            return Ok(Action::Done);
        };
        let expires = at.unix_seconds() + i64::from(ttl);
        let left = expires - Time::now().unix_seconds();
        if left > 0 {
            return Ok(Action::Requeue(Duration::from_secs(
                u64::try_from(left).unwrap_or(1),
            )));
        }
        let api: Api<Job> = Api::namespaced(
            self.client.clone(),
            job.metadata.namespace.as_deref().unwrap_or(""),
        );
        let params = DeleteParams {
            propagation_policy: Some("Foreground".into()),
            precondition_uid: job.metadata.uid.clone(),
            ..Default::default()
        };
        match api
            .delete(job.metadata.name.as_deref().unwrap_or_default(), &params)
            .await
        {
            Ok(_) => {
                tracing::debug!(job = ?job.metadata.name, "deleted a finished job past its TTL");
                Ok(Action::Done)
            }
            Err(e) if e.is_not_found() || e.is_conflict() => Ok(Action::Done),
            Err(e) => Err(e),
        }
    }
}
