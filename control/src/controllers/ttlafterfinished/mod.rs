//! The TTL-after-finished controller: deletes a finished Job (`Complete` or `Failed`)
//! `spec.ttlSecondsAfterFinished` seconds after that condition's transition. A Job not yet due
//! is requeued for the moment it expires; before deleting, the Job is read afresh from the API
//! server (its TTL may have changed) and deleted with a uid precondition and Foreground
//! propagation, as the reference does, so its pods go with it.

use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::batch::v1::Job;
use kube::api::{DeleteParams, Preconditions};
use kube::{Api, ResourceExt};

use super::job::conditions;
use crate::controllers::ControllerOptions;
use crate::machinery::{
    run_workers, Action, Context, ControlError, Informer, ObjectKey, WorkQueue,
};

/// The name `--disable-controllers` takes.
pub const NAME: &str = "ttl-after-finished";
/// The component name on Events.
pub const COMPONENT: &str = "ttl-after-finished-controller";

/// Starts the TTL-after-finished controller.
pub fn start(ctx: Context<ControllerOptions>) {
    let controller = Arc::new(Controller { jobs: ctx.informers.get::<Job>(), ctx });
    let queue = WorkQueue::new();
    controller.jobs.feed(queue.clone(), |job: &Job| {
        // Only finished Jobs with a TTL concern this controller.
        if needs_cleanup(job) {
            vec![ObjectKey::of(job)]
        } else {
            Vec::new()
        }
    });
    let workers = controller.ctx.options.workers;
    run_workers(NAME, queue, workers, move |key| {
        let controller = controller.clone();
        async move { controller.reconcile(key).await }
    });
}

struct Controller {
    ctx: Context<ControllerOptions>,
    jobs: Informer<Job>,
}

/// Finished, with a TTL, and not already being deleted.
fn needs_cleanup(job: &Job) -> bool {
    job.metadata.deletion_timestamp.is_none()
        && job.spec.as_ref().and_then(|s| s.ttl_seconds_after_finished).is_some()
        && conditions::is_finished(job)
}

/// How long until `job` expires at `now` (zero or less: expired); `None` if it needs no
/// cleanup. A finish time in the future (clock skew) simply defers the cleanup.
fn time_left(job: &Job, now: Timestamp) -> Result<Option<SignedDuration>, ControlError> {
    if !needs_cleanup(job) {
        return Ok(None);
    }
    let ttl = job.spec.as_ref().and_then(|s| s.ttl_seconds_after_finished).unwrap_or(0);
    let finished = conditions::finished_condition(job)
        .and_then(|c| c.last_transition_time.as_ref())
        .map(|t| t.0)
        .ok_or_else(|| {
            ControlError::Other(format!(
                "unable to find the time when the Job {}/{} finished",
                job.namespace().unwrap_or_default(),
                job.name_any()
            ))
        })?;
    let expires =
        finished.checked_add(SignedDuration::from_secs(i64::from(ttl))).unwrap_or(finished);
    Ok(Some(expires.duration_since(now)))
}

/// The wait before looking again, if the Job is not expired yet.
fn wait(left: SignedDuration) -> Option<Duration> {
    (left > SignedDuration::ZERO).then(|| Duration::try_from(left).unwrap_or_default())
}

impl Controller {
    async fn reconcile(self: Arc<Self>, key: ObjectKey) -> Result<Action, ControlError> {
        let Some(cached) = self.jobs.get(key.namespace(), &key.name) else {
            return Ok(Action::Done);
        };
        let Some(left) = time_left(&cached, Timestamp::now())? else { return Ok(Action::Done) };
        if let Some(wait) = wait(left) {
            return Ok(Action::RequeueAfter(wait));
        }
        // The cached TTL may be stale: decide again on a fresh read.
        let api: Api<Job> = Api::namespaced(self.ctx.client.clone(), &key.namespace);
        let Some(fresh) = api.get_opt(&key.name).await? else { return Ok(Action::Done) };
        let Some(left) = time_left(&fresh, Timestamp::now())? else { return Ok(Action::Done) };
        if let Some(wait) = wait(left) {
            return Ok(Action::RequeueAfter(wait));
        }
        let params = DeleteParams {
            preconditions: Some(Preconditions { uid: fresh.uid(), resource_version: None }),
            ..DeleteParams::foreground()
        };
        tracing::debug!(job = %key, "TTL expired; deleting");
        match api.delete(&key.name, &params).await {
            Ok(_) => Ok(Action::Done),
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(Action::Done),
            Err(error) => Err(error.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::batch::v1::{JobSpec, JobStatus};

    fn job(ttl: Option<i32>, finished_at: Option<&str>) -> Job {
        let now: Timestamp = finished_at.unwrap_or("2024-01-01T00:00:00Z").parse().unwrap();
        Job {
            spec: Some(JobSpec { ttl_seconds_after_finished: ttl, ..Default::default() }),
            status: Some(JobStatus {
                conditions: finished_at
                    .map(|_| vec![conditions::new(conditions::COMPLETE, "True", "", "", now)]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn expiry_counts_from_the_finish_condition() {
        let now: Timestamp = "2024-01-01T00:01:00Z".parse().unwrap();
        let left = time_left(&job(Some(100), Some("2024-01-01T00:00:00Z")), now).unwrap();
        assert_eq!(left, Some(SignedDuration::from_secs(40)));
        assert_eq!(wait(left.unwrap()), Some(Duration::from_secs(40)));
        let expired = time_left(&job(Some(0), Some("2024-01-01T00:00:00Z")), now).unwrap();
        assert_eq!(wait(expired.unwrap()), None);
        assert_eq!(time_left(&job(None, Some("2024-01-01T00:00:00Z")), now).unwrap(), None);
        assert_eq!(time_left(&job(Some(5), None), now).unwrap(), None, "not finished");
        let mut deleting = job(Some(0), Some("2024-01-01T00:00:00Z"));
        deleting.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now));
        assert_eq!(time_left(&deleting, now).unwrap(), None);
    }
}
