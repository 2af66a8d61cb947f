//! The CronJob controller (the reference's `cronjob_controllerv2`): for each CronJob it
//! reconciles `status.active` with the Jobs it controls, creates the Job of the most recent due
//! activation (named by its scheduled minute, so a retry never runs it twice) under the
//! concurrency policy and starting deadline, deletes finished Jobs beyond the history limits,
//! and then sleeps on its work queue until the next activation rather than polling.

mod plan;
mod schedule;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use jiff::tz::TimeZone;
use jiff::Timestamp;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{DeleteParams, PostParams};
use kube::{Api, ResourceExt};

use self::plan::Timing;
use self::schedule::Schedule;
use super::job::conditions;
use crate::controllers::util::owner;
use crate::controllers::ControllerOptions;
use crate::machinery::{
    object_reference, run_workers, Action, Context, ControlError, EventType, Informer, ObjectKey,
    WorkQueue,
};

/// The name `--disable-controllers` takes.
pub const NAME: &str = "cronjob";
/// The component name on Events.
pub const COMPONENT: &str = "cronjob-controller";

/// The annotation carrying a Job's scheduled time.
const SCHEDULED_TIMESTAMP: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";

/// Starts the CronJob controller.
pub fn start(ctx: Context<ControllerOptions>) {
    let controller = Arc::new(Controller {
        cronjobs: ctx.informers.get::<CronJob>(),
        jobs: ctx.informers.get::<Job>(),
        // The reference reads schedules without a timeZone in the controller's local zone.
        local: TimeZone::try_system().unwrap_or(TimeZone::UTC),
        ctx,
    });
    let queue = WorkQueue::new();
    controller.cronjobs.feed(queue.clone(), |cj: &CronJob| vec![ObjectKey::of(cj)]);
    controller.jobs.feed(queue.clone(), |job: &Job| {
        let namespace = job.namespace().unwrap_or_default();
        owner::controller_of(&job.metadata)
            .filter(|r| r.kind == "CronJob")
            .map(|r| ObjectKey::new(namespace, r.name.clone()))
            .into_iter()
            .collect()
    });
    let workers = controller.ctx.options.workers;
    run_workers(NAME, queue, workers, move |key| {
        let controller = controller.clone();
        async move { controller.reconcile(key).await }
    });
}

struct Controller {
    ctx: Context<ControllerOptions>,
    cronjobs: Informer<CronJob>,
    jobs: Informer<Job>,
    local: TimeZone,
}

/// What one sync decided besides its writes.
struct Outcome {
    /// Sleep until the next activation.
    requeue: Option<Duration>,
    /// `status` changed and must be written.
    update: bool,
}

impl Controller {
    async fn reconcile(self: Arc<Self>, key: ObjectKey) -> Result<Action, ControlError> {
        // The Jobs a CronJob owns come from this cache: wait for its first list.
        self.jobs.ready().await;
        let Some(cached) = self.cronjobs.get(key.namespace(), &key.name) else {
            return Ok(Action::Done);
        };
        let uid = cached.uid().unwrap_or_default();
        let jobs: Vec<Arc<Job>> = self
            .jobs
            .list_namespace(&key.namespace)
            .into_iter()
            .filter(|j| owner::controller_of(&j.metadata).is_some_and(|r| r.uid == uid))
            .collect();
        let mut cronjob = (*cached).clone();
        let now = Timestamp::now();
        let mut outcome = Outcome { requeue: None, update: false };
        let synced = self.sync(&mut cronjob, &jobs, now, &mut outcome).await;
        if self.clean_up_finished(&mut cronjob, &jobs).await {
            outcome.update = true;
        }
        if outcome.update {
            let api: Api<CronJob> = Api::namespaced(self.ctx.client.clone(), &key.namespace);
            api.replace_status(&key.name, &PostParams::default(), &cronjob).await?;
        }
        synced?;
        Ok(outcome.requeue.map_or(Action::Done, Action::RequeueAfter))
    }

    async fn event(&self, cronjob: &CronJob, kind: EventType, reason: &str, message: &str) {
        self.ctx.events.record(cronjob, kind, reason, message).await;
    }

    /// The reference's `syncCronJob`: reconcile `status.active`, then start the due Job.
    async fn sync(
        &self,
        cronjob: &mut CronJob,
        jobs: &[Arc<Job>],
        now: Timestamp,
        outcome: &mut Outcome,
    ) -> Result<(), ControlError> {
        let namespace = cronjob.namespace().unwrap_or_default();
        let job_api: Api<Job> = Api::namespaced(self.ctx.client.clone(), &namespace);
        let mut children = HashSet::new();
        for job in jobs {
            let uid = job.uid().unwrap_or_default();
            children.insert(uid.clone());
            let listed = in_active(cronjob, &uid);
            let finished = conditions::finished_condition(job);
            match finished {
                None if !listed => {
                    // A Job of ours that the status forgot (a crash between creating it and
                    // writing the status, or `kubectl create job --from`).
                    let message = format!(
                        "Saw a job that the controller did not create or forgot: {}",
                        job.name_any()
                    );
                    self.event(cronjob, EventType::Warning, "UnexpectedJob", &message).await;
                }
                Some(condition) if listed => {
                    remove_active(cronjob, &uid);
                    let message = format!(
                        "Saw completed job: {}, condition: {}",
                        job.name_any(),
                        condition.type_
                    );
                    self.event(cronjob, EventType::Normal, "SawCompletedJob", &message).await;
                    outcome.update = true;
                }
                Some(_) => {
                    let completed = job.status.as_ref().and_then(|s| s.completion_time.clone());
                    let status = cronjob.status.get_or_insert_with(Default::default);
                    if let Some(completed) = completed {
                        if status.last_successful_time.as_ref().is_none_or(|t| t.0 < completed.0) {
                            status.last_successful_time = Some(completed);
                            outcome.update = true;
                        }
                    }
                }
                None => {}
            }
        }
        // Active Jobs that are gone: ask the API server, the cache may just be behind.
        let listed: Vec<ObjectReference> = active_refs(cronjob);
        for reference in listed {
            let uid = reference.uid.clone().unwrap_or_default();
            if children.contains(&uid) {
                continue;
            }
            let name = reference.name.clone().unwrap_or_default();
            match job_api.get_opt(&name).await? {
                Some(job) if job.uid().as_deref() == Some(uid.as_str()) => {}
                _ => {
                    let message = format!("Active job went missing: {name}");
                    self.event(cronjob, EventType::Normal, "MissingJob", &message).await;
                    remove_active(cronjob, &uid);
                    outcome.update = true;
                }
            }
        }
        if cronjob.metadata.deletion_timestamp.is_some() {
            return Ok(());
        }
        let spec = cronjob.spec.clone().unwrap_or_default();
        let zone = match spec.time_zone.as_deref() {
            Some(name) => match TimeZone::get(name) {
                Ok(zone) => Some(zone),
                Err(error) => {
                    let message = format!("invalid timeZone: {name:?}: {error}");
                    self.event(cronjob, EventType::Warning, "UnknownTimeZone", &message).await;
                    return Ok(());
                }
            },
            None => None,
        };
        if spec.suspend == Some(true) {
            return Ok(());
        }
        if spec.schedule.contains("TZ") {
            let message = format!(
                "CRON_TZ or TZ used in schedule {:?} is not officially supported, see \
                 https://kubernetes.io/docs/concepts/workloads/controllers/cron-jobs/ for more details",
                spec.schedule
            );
            self.event(cronjob, EventType::Warning, "UnsupportedSchedule", &message).await;
        }
        let schedule = match Schedule::parse(&spec.schedule) {
            Ok(schedule) => schedule,
            Err(error) => {
                let message = format!("unparseable schedule: {:?} : {error}", spec.schedule);
                self.event(cronjob, EventType::Warning, "UnparseableSchedule", &message).await;
                return Ok(());
            }
        };
        // A `TZ=` prefix wins over `timeZone` (the API server refuses both together).
        let fields_zone = zone.clone().unwrap_or_else(|| self.local.clone());
        let timing = Timing {
            schedule: &schedule,
            zone: fields_zone,
            created: cronjob.metadata.creation_timestamp.as_ref().map_or(now, |t| t.0),
            last_schedule: cronjob
                .status
                .as_ref()
                .and_then(|s| s.last_schedule_time.as_ref())
                .map(|t| t.0),
            starting_deadline_seconds: spec.starting_deadline_seconds,
        };
        let scheduled = match plan::due(&timing, now) {
            Ok((scheduled, too_many)) => {
                if too_many {
                    let message = "too many missed start times. Set or decrease \
                                   .spec.startingDeadlineSeconds or check clock skew";
                    self.event(cronjob, EventType::Warning, "TooManyMissedTimes", message).await;
                }
                scheduled
            }
            Err(error) => {
                let message = format!("invalid schedule: {} : {error}", spec.schedule);
                self.event(cronjob, EventType::Warning, "InvalidSchedule", &message).await;
                return Ok(());
            }
        };
        outcome.requeue = plan::requeue_after(&timing, now);
        let Some(scheduled) = scheduled else { return Ok(()) };
        if let Some(deadline) = spec.starting_deadline_seconds {
            let cutoff = scheduled.checked_add(jiff::SignedDuration::from_secs(deadline));
            if cutoff.is_ok_and(|cutoff| cutoff < now) {
                let message = format!(
                    "Missed scheduled time to start a job: {}",
                    scheduled.strftime("%a, %d %b %Y %H:%M:%S +0000")
                );
                self.event(cronjob, EventType::Warning, "MissSchedule", &message).await;
                return Ok(());
            }
        }
        let name = plan::job_name(&cronjob.name_any(), scheduled);
        let already = active_refs(cronjob).iter().any(|r| r.name.as_deref() == Some(&name))
            || timing.last_schedule == Some(scheduled);
        if already {
            return Ok(());
        }
        let policy = spec.concurrency_policy.as_deref().unwrap_or("Allow");
        if policy == "Forbid" && !active_refs(cronjob).is_empty() {
            let message = "Not starting job because prior execution is running and concurrency \
                           policy is Forbid";
            self.event(cronjob, EventType::Normal, "JobAlreadyActive", message).await;
            return Ok(());
        }
        if policy == "Replace" {
            for reference in active_refs(cronjob) {
                let name = reference.name.clone().unwrap_or_default();
                match job_api.get_opt(&name).await? {
                    Some(job) => self.delete_job(cronjob, &job).await?,
                    None => remove_active(cronjob, reference.uid.as_deref().unwrap_or_default()),
                }
                outcome.update = true;
            }
        }
        let job =
            job_from_template(cronjob, scheduled, &name, zone.as_ref().unwrap_or(&TimeZone::UTC));
        let created = match job_api.create(&PostParams::default(), &job).await {
            Ok(created) => {
                let message = format!("Created job {}", created.name_any());
                self.event(cronjob, EventType::Normal, "SuccessfulCreate", &message).await;
                created
            }
            Err(kube::Error::Api(status)) if status.code == 409 => {
                // Someone (an earlier attempt) created it: adopt it into the status if ours.
                let Some(existing) = job_api.get_opt(&name).await? else { return Ok(()) };
                let ours = owner::controller_of(&existing.metadata)
                    .is_some_and(|r| Some(&r.uid) == cronjob.metadata.uid.as_ref());
                if !ours || in_active(cronjob, &existing.uid().unwrap_or_default()) {
                    return Ok(());
                }
                existing
            }
            Err(error) => {
                let error = ControlError::from(error);
                let message = format!("Error creating job: {error}");
                self.event(cronjob, EventType::Warning, "FailedCreate", &message).await;
                return Err(error);
            }
        };
        let status = cronjob.status.get_or_insert_with(Default::default);
        status.active.get_or_insert_with(Vec::new).push(object_reference(&created));
        status.last_schedule_time = Some(Time(scheduled));
        outcome.update = true;
        Ok(())
    }

    /// Deletes `job` (Background: the garbage collector takes its pods) and drops it from
    /// `status.active`.
    async fn delete_job(&self, cronjob: &mut CronJob, job: &Job) -> Result<(), ControlError> {
        let api: Api<Job> =
            Api::namespaced(self.ctx.client.clone(), &job.namespace().unwrap_or_default());
        match api.delete(&job.name_any(), &DeleteParams::background()).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(error) => {
                let error = ControlError::from(error);
                let message = format!("Deleted job: {error}");
                self.event(cronjob, EventType::Warning, "FailedDelete", &message).await;
                return Err(error);
            }
        }
        remove_active(cronjob, &job.uid().unwrap_or_default());
        let message = format!("Deleted job {}", job.name_any());
        self.event(cronjob, EventType::Normal, "SuccessfulDelete", &message).await;
        Ok(())
    }

    /// Deletes the oldest finished Jobs beyond `successfulJobsHistoryLimit` and
    /// `failedJobsHistoryLimit`; whether the status changed.
    async fn clean_up_finished(&self, cronjob: &mut CronJob, jobs: &[Arc<Job>]) -> bool {
        let spec = cronjob.spec.clone().unwrap_or_default();
        if spec.successful_jobs_history_limit.is_none() && spec.failed_jobs_history_limit.is_none()
        {
            return false;
        }
        let mut succeeded = Vec::new();
        let mut failed = Vec::new();
        for job in jobs {
            match conditions::finished_condition(job).map(|c| c.type_.as_str()) {
                Some("Complete") => succeeded.push(job.clone()),
                Some("Failed") => failed.push(job.clone()),
                _ => {}
            }
        }
        let mut changed = false;
        for (mut finished, limit) in [
            (succeeded, spec.successful_jobs_history_limit),
            (failed, spec.failed_jobs_history_limit),
        ] {
            let Some(limit) = limit else { continue };
            let keep = usize::try_from(limit).unwrap_or(0);
            if finished.len() <= keep {
                continue;
            }
            finished.sort_by_key(|job| start_order(job));
            let surplus = finished.len() - keep;
            for job in finished.iter().take(surplus) {
                if job.metadata.deletion_timestamp.is_some() {
                    continue;
                }
                if self.delete_job(cronjob, job).await.is_ok() {
                    changed = true;
                }
            }
        }
        changed
    }
}

/// Oldest first: by `status.startTime` (never started last), then name.
fn start_order(job: &Job) -> (bool, Option<Timestamp>, String) {
    let start = job.status.as_ref().and_then(|s| s.start_time.as_ref()).map(|t| t.0);
    (start.is_none(), start, job.name_any())
}

fn active_refs(cronjob: &CronJob) -> Vec<ObjectReference> {
    cronjob.status.as_ref().and_then(|s| s.active.clone()).unwrap_or_default()
}

fn in_active(cronjob: &CronJob, uid: &str) -> bool {
    active_refs(cronjob).iter().any(|r| r.uid.as_deref() == Some(uid))
}

fn remove_active(cronjob: &mut CronJob, uid: &str) {
    if let Some(active) = cronjob.status.as_mut().and_then(|s| s.active.as_mut()) {
        active.retain(|r| r.uid.as_deref() != Some(uid));
    }
    // An empty list is left out, as the reference's `omitempty` does.
    if let Some(status) = cronjob.status.as_mut() {
        if status.active.as_ref().is_some_and(Vec::is_empty) {
            status.active = None;
        }
    }
}

/// The Job of one activation: the template's labels, annotations and spec, the scheduled-time
/// annotation, controlled by the CronJob.
fn job_from_template(cronjob: &CronJob, scheduled: Timestamp, name: &str, zone: &TimeZone) -> Job {
    let template = cronjob.spec.as_ref().map(|s| s.job_template.clone()).unwrap_or_default();
    let meta = template.metadata.unwrap_or_default();
    let mut annotations = meta.annotations.unwrap_or_default();
    annotations.insert(SCHEDULED_TIMESTAMP.into(), plan::scheduled_timestamp(scheduled, zone));
    Job {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: cronjob.namespace(),
            labels: meta.labels,
            annotations: Some(annotations),
            owner_references: Some(vec![owner::controller_reference(cronjob)]),
            ..ObjectMeta::default()
        },
        spec: template.spec,
        status: None,
    }
}
