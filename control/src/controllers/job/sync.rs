//! One sync of a Job (the reference's `syncJob`): count its pods, decide whether it has
//! succeeded or must fail (backoff limit, active deadline, pod failure policy), create or delete
//! pods otherwise (see [`manage`](super::manage)), and hand the status to
//! [`tracking`](super::tracking), which counts finished pods through
//! `status.uncountedTerminatedPods` before releasing their finalizers.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::batch::v1::{Job, JobCondition, PodFailurePolicy, UncountedTerminatedPods};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{Api, ResourceExt};

use super::backoff::{self, Record};
use super::conditions::{self, FAILED, FAILURE_TARGET, SUCCESS_CRITERIA_MET, SUSPENDED};
use super::indexes::{self, Intervals};
use super::{failure_policy, manage, per_index, pods, success_policy, tracking, Controller};
use crate::controllers::util::pod;
use crate::machinery::{Action, ControlError, EventType, ObjectKey};

/// The only `spec.managedBy` this controller acts on (unset means the same).
const MANAGED_BY: &str = "kubernetes.io/job-controller";

/// Everything one sync knows about its Job (the reference's `syncJobCtx`).
pub(super) struct JobCtx {
    pub key: ObjectKey,
    /// The working copy whose status this sync builds.
    pub job: Job,
    /// Every pod the Job controls, finished ones included.
    pub pods: Vec<Arc<Pod>>,
    /// Pods neither finished nor terminating.
    pub active: Vec<Arc<Pod>>,
    pub ready: i32,
    /// Pods being deleted that have not finished.
    pub terminating: i32,
    /// `status.uncountedTerminatedPods` as this sync found it.
    pub uncounted_succeeded: HashSet<String>,
    pub uncounted_failed: HashSet<String>,
    /// Pods whose finalizer this controller removed but the cache still shows.
    pub expected_rm: HashSet<String>,
    pub succeeded: i32,
    pub failed: i32,
    /// The condition the Job is heading for, if it is done.
    pub finished: Option<JobCondition>,
    /// Indexed Jobs: the indexes in the status, and those plus newly succeeded pods.
    pub prev_indexes: Intervals,
    pub indexes: Intervals,
    /// With `backoffLimitPerIndex`: the failed indexes, and per index to retry the failed pod
    /// whose finalizer stays until its replacement exists.
    pub failed_indexes: Option<Intervals>,
    pub delayed: HashMap<i32, Arc<Pod>>,
    pub backoff: Record,
    pub now: Timestamp,
    /// Look again after this long (deadline, backoff).
    pub requeue: Option<Duration>,
}

impl JobCtx {
    pub fn requeue_within(&mut self, after: Duration) {
        self.requeue = Some(self.requeue.map_or(after, |r| r.min(after)));
    }
}

/// `spec.completions` (unset: any single success completes the Job).
pub fn completions(job: &Job) -> Option<i32> {
    job.spec.as_ref()?.completions
}

pub fn parallelism(job: &Job) -> i32 {
    job.spec.as_ref().and_then(|s| s.parallelism).unwrap_or(1)
}

pub fn is_indexed(job: &Job) -> bool {
    job.spec.as_ref().and_then(|s| s.completion_mode.as_deref()) == Some("Indexed")
}

pub fn is_suspended(job: &Job) -> bool {
    job.spec.as_ref().and_then(|s| s.suspend) == Some(true)
}

pub fn failure_policy(job: &Job) -> Option<&PodFailurePolicy> {
    job.spec.as_ref()?.pod_failure_policy.as_ref()
}

/// Replacement pods wait until the old ones are fully gone (`podReplacementPolicy: Failed`,
/// implied by a pod failure policy).
pub fn only_replace_failed(job: &Job) -> bool {
    failure_policy(job).is_some()
        || job.spec.as_ref().and_then(|s| s.pod_replacement_policy.as_deref()) == Some("Failed")
}

/// The reference's `isPodFailed`: Failed, or (unless only failed pods are replaced) deleted
/// before it succeeded — an orphaned pod never gets to report Failed.
pub fn is_pod_failed(p: &Pod, job: &Job) -> bool {
    if pod::phase(p) == "Failed" {
        return true;
    }
    !only_replace_failed(job)
        && p.metadata.deletion_timestamp.is_some()
        && pod::phase(p) != "Succeeded"
}

fn succeeded(p: &Pod) -> bool {
    pod::phase(p) == "Succeeded"
}

impl Controller {
    /// Syncs the Job `key`.
    pub(super) async fn sync_job(&self, key: &ObjectKey) -> Result<Action, ControlError> {
        // Decide only on a complete pod cache: pods not yet listed would be created again.
        self.pods.ready().await;
        let Some(cached) = self.jobs.get(key.namespace(), &key.name) else {
            self.expectations.forget(key);
            self.finalizers.forget(key);
            self.release_pods_of_missing(key).await?;
            return Ok(Action::Done);
        };
        let managed_by = cached.spec.as_ref().and_then(|s| s.managed_by.as_deref());
        if managed_by.is_some_and(|m| m != MANAGED_BY) {
            return Ok(Action::Done);
        }
        if conditions::is_finished(&cached) {
            self.release_pods_of_finished(&cached).await?;
            return Ok(Action::Done);
        }
        let mode = cached.spec.as_ref().and_then(|s| s.completion_mode.as_deref());
        if !matches!(mode, None | Some("NonIndexed" | "Indexed")) {
            let message = "Skipped Job sync because completion mode is unknown";
            self.ctx
                .events
                .record(cached.as_ref(), EventType::Warning, "UnknownCompletionMode", message)
                .await;
            return Ok(Action::Done);
        }
        // Expectations before the pods: a pod that shows up after this check is still seen.
        let satisfied = self.expectations.satisfied(key);
        let all = self.claimed_pods(&cached).await?;
        let mut ctx = self.observe(key, &cached, all);
        self.decide_failure(&mut ctx);
        decide_indexed(&mut ctx);
        let mut manage_error = None;
        let mut suspend_changed = false;
        let mut active = i32::try_from(ctx.active.len()).unwrap_or(i32::MAX);
        if ctx.finished.is_some() {
            let (deleted_ready, deleted, error) = manage::delete_active(self, &ctx).await;
            if deleted != active || !satisfied {
                // Pods may still be unseen or undeleted: not finished yet.
                ctx.finished = None;
            }
            active -= deleted;
            ctx.terminating += deleted;
            ctx.ready -= deleted_ready;
            manage_error = error;
        } else {
            let mut managed = false;
            if satisfied && ctx.job.metadata.deletion_timestamp.is_none() {
                match manage::manage_job(self, &mut ctx).await {
                    Ok(now_active) => active = now_active,
                    Err((now_active, error)) => {
                        active = now_active;
                        manage_error = Some(error);
                    }
                }
                managed = true;
            }
            let complete = match completions(&ctx.job) {
                None => ctx.succeeded > 0 && active == 0,
                Some(wanted) => ctx.succeeded >= wanted && active == 0,
            };
            if complete {
                ctx.finished = Some(conditions::new(
                    SUCCESS_CRITERIA_MET,
                    "True",
                    "CompletionsReached",
                    "Reached expected number of succeeded pods",
                    ctx.now,
                ));
            } else if managed {
                suspend_changed = self.track_suspension(&mut ctx).await;
            }
        }
        let status = ctx.job.status.get_or_insert_with(Default::default);
        let needs_update = suspend_changed
            || status.active.unwrap_or(0) != active
            || status.ready != Some(ctx.ready)
            || status.terminating != Some(ctx.terminating)
            || cached.status.as_ref().and_then(|s| s.start_time.as_ref())
                != status.start_time.as_ref();
        status.active = (active > 0).then_some(active);
        status.ready = Some(ctx.ready);
        status.terminating = Some(ctx.terminating);
        tracking::track_and_remove_finalizers(self, &mut ctx, needs_update).await?;
        if let Some(error) = manage_error {
            return Err(error);
        }
        Ok(ctx.requeue.map_or(Action::Done, Action::RequeueAfter))
    }

    /// Counts what the Job's pods say (the first half of the reference's `syncJob`).
    fn observe(&self, key: &ObjectKey, cached: &Job, all: Vec<Arc<Pod>>) -> JobCtx {
        let mut job = cached.clone();
        let now = Timestamp::now();
        let status = job.status.get_or_insert_with(Default::default);
        let uncounted =
            status.uncounted_terminated_pods.get_or_insert_with(UncountedTerminatedPods::default);
        let uncounted_succeeded: HashSet<String> =
            uncounted.succeeded.iter().flatten().cloned().collect();
        let uncounted_failed: HashSet<String> =
            uncounted.failed.iter().flatten().cloned().collect();
        let expected_rm = self.finalizers.expected(key);
        let active: Vec<Arc<Pod>> = all.iter().filter(|p| pod::is_active(p)).cloned().collect();
        let ready = active.iter().filter(|p| pod::is_ready(p)).count();
        let terminating =
            all.iter().filter(|p| pod::is_terminating(p) && !pod::is_terminal(p)).count();
        let completions_total = completions(cached).unwrap_or(i32::MAX);
        // Finished pods not yet counted: they still carry the finalizer and are not listed.
        let fresh = |p: &&Arc<Pod>, listed: &HashSet<String>| {
            let uid = p.uid().unwrap_or_default();
            pods::has_tracking_finalizer(p)
                && !listed.contains(&uid)
                && !expected_rm.contains(&uid)
                && (!is_indexed(cached) || indexes::valid_index(p, completions_total).is_some())
        };
        let new_succeeded: Vec<&Arc<Pod>> =
            all.iter().filter(|p| fresh(p, &uncounted_succeeded) && succeeded(p)).collect();
        let new_failed: Vec<&Arc<Pod>> = all
            .iter()
            .filter(|p| fresh(p, &uncounted_failed) && is_pod_failed(p, cached))
            .collect();
        let counted_failures =
            new_failed.iter().filter(|p| failure_policy::evaluate_for(cached, p).counts).count();
        let count = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
        let succeeded_total = status.succeeded.unwrap_or(0)
            + count(new_succeeded.len())
            + count(uncounted_succeeded.len());
        let failed_total =
            status.failed.unwrap_or(0) + count(counted_failures) + count(uncounted_failed.len());
        if status.start_time.is_none() && !is_suspended(cached) {
            status.start_time = Some(Time(now));
        }
        let finished_succeeded: Vec<&Pod> =
            all.iter().filter(|p| succeeded(p)).map(|p| p.as_ref()).collect();
        let finished_failed: Vec<&Pod> =
            all.iter().filter(|p| is_pod_failed(p, cached)).map(|p| p.as_ref()).collect();
        let backoff = backoff::record(&finished_succeeded, &finished_failed);
        let mut ctx = JobCtx {
            key: key.clone(),
            job,
            active,
            ready: count(ready),
            terminating: count(terminating),
            uncounted_succeeded,
            uncounted_failed,
            expected_rm,
            succeeded: succeeded_total,
            failed: failed_total,
            finished: None,
            prev_indexes: Intervals::default(),
            indexes: Intervals::default(),
            failed_indexes: None,
            delayed: HashMap::new(),
            backoff,
            now,
            requeue: None,
            pods: all,
        };
        if is_indexed(&ctx.job) {
            let total = completions(&ctx.job).unwrap_or(0);
            let text =
                ctx.job.status.as_ref().and_then(|s| s.completed_indexes.as_deref()).unwrap_or("");
            ctx.prev_indexes = Intervals::parse(text, total);
            let newly = ctx
                .pods
                .iter()
                .filter(|p| succeeded(p) && pods::has_tracking_finalizer(p))
                .filter_map(|p| indexes::valid_index(p, total));
            ctx.indexes = ctx.prev_indexes.with(newly);
            ctx.succeeded = ctx.indexes.total();
        }
        ctx
    }

    /// Whether the Job already succeeded, or must fail: an earlier `FailureTarget`, a
    /// `FailJob` rule, the backoff limit, the active deadline.
    fn decide_failure(&self, ctx: &mut JobCtx) {
        let list = ctx.job.status.as_ref().and_then(|s| s.conditions.clone()).unwrap_or_default();
        ctx.finished = conditions::find_true(&list, SUCCESS_CRITERIA_MET).cloned();
        if ctx.finished.is_none() {
            if let Some(target) = conditions::find_true(&list, FAILURE_TARGET) {
                let reason = target.reason.clone().unwrap_or_default();
                let message = target.message.clone().unwrap_or_default();
                ctx.finished = Some(conditions::new(FAILED, "True", &reason, &message, ctx.now));
            } else if let Some(message) = self.fail_job_message(ctx) {
                ctx.finished = Some(conditions::new(
                    FAILURE_TARGET,
                    "True",
                    "PodFailurePolicy",
                    &message,
                    ctx.now,
                ));
            }
        }
        if ctx.finished.is_some() {
            return;
        }
        // The API server defaults it (to "unlimited" with a per-index limit).
        let unset = if per_index::limit(&ctx.job).is_some() { i32::MAX } else { 6 };
        let limit = ctx.job.spec.as_ref().and_then(|s| s.backoff_limit).unwrap_or(unset);
        if ctx.failed > limit || past_backoff_limit_on_failure(&ctx.job, &ctx.pods, limit) {
            let message = "Job has reached the specified backoff limit";
            ctx.finished = Some(conditions::new(
                FAILURE_TARGET,
                "True",
                "BackoffLimitExceeded",
                message,
                ctx.now,
            ));
            return;
        }
        let deadline = ctx.job.spec.as_ref().and_then(|s| s.active_deadline_seconds);
        let started = ctx.job.status.as_ref().and_then(|s| s.start_time.as_ref()).map(|t| t.0);
        if let (Some(deadline), Some(started), false) = (deadline, started, is_suspended(&ctx.job))
        {
            let ends = started.checked_add(SignedDuration::from_secs(deadline)).unwrap_or(started);
            if ctx.now >= ends {
                let message = "Job was active longer than specified deadline";
                ctx.finished = Some(conditions::new(
                    FAILURE_TARGET,
                    "True",
                    "DeadlineExceeded",
                    message,
                    ctx.now,
                ));
            } else {
                let left = Duration::try_from(ends.duration_since(ctx.now)).unwrap_or_default();
                ctx.requeue_within(left);
            }
        }
    }

    /// The message of the first `FailJob` rule a failed pod matches.
    fn fail_job_message(&self, ctx: &JobCtx) -> Option<String> {
        failure_policy(&ctx.job)?;
        ctx.pods
            .iter()
            .filter(|p| is_pod_failed(p, &ctx.job))
            .find_map(|p| failure_policy::evaluate_for(&ctx.job, p).fail_job)
    }

    /// Sets the `Suspended` condition from `spec.suspend`; a resumed Job restarts its clock.
    async fn track_suspension(&self, ctx: &mut JobCtx) -> bool {
        let suspended = is_suspended(&ctx.job);
        let now = ctx.now;
        let status = ctx.job.status.get_or_insert_with(Default::default);
        let list = status.conditions.get_or_insert_with(Vec::new);
        let (state, reason, message, event) = if suspended {
            ("True", "JobSuspended", "Job suspended", "Suspended")
        } else {
            ("False", "JobResumed", "Job resumed", "Resumed")
        };
        let changed = conditions::ensure(list, SUSPENDED, state, reason, message, now);
        if list.is_empty() {
            status.conditions = None;
        }
        if changed {
            if !suspended {
                // activeDeadlineSeconds counts continuous activity.
                status.start_time = Some(Time(now));
            }
            self.ctx.events.record(&ctx.job, EventType::Normal, event, message).await;
        }
        changed
    }

    /// Pods of a Job that no longer exists keep no finalizer of ours.
    async fn release_pods_of_missing(&self, key: &ObjectKey) -> Result<(), ControlError> {
        let leftovers: Vec<Arc<Pod>> = self
            .pods
            .list_namespace(&key.namespace)
            .into_iter()
            .filter(|p| pods::has_tracking_finalizer(p))
            .filter(|p| {
                crate::controllers::util::owner::controller_of(&p.metadata)
                    .is_some_and(|r| r.kind == "Job" && r.name == key.name)
            })
            .collect();
        let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &key.namespace);
        for p in leftovers {
            pods::remove_finalizer(&api, &p).await?;
        }
        Ok(())
    }

    /// A finished Job counts no more pods: any that still carry the finalizer are released.
    async fn release_pods_of_finished(&self, job: &Job) -> Result<(), ControlError> {
        let uid = job.uid().unwrap_or_default();
        let namespace = job.namespace().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &namespace);
        for p in self.pods.list_namespace(&namespace) {
            let ours = crate::controllers::util::owner::controller_of(&p.metadata)
                .is_some_and(|r| r.uid == uid);
            if ours && pods::has_tracking_finalizer(&p) {
                pods::remove_finalizer(&api, &p).await?;
            }
        }
        Ok(())
    }
}

/// The Indexed Job's own verdicts, after the Job-wide ones (the reference's order): failed
/// indexes may fail the Job, a success policy may complete it.
fn decide_indexed(ctx: &mut JobCtx) {
    if !is_indexed(&ctx.job) {
        return;
    }
    let total = completions(&ctx.job).unwrap_or(0);
    if let Some(limit) = per_index::limit(&ctx.job) {
        let failed = per_index::failed_indexes(&ctx.job, &ctx.pods, total, limit);
        let max = ctx.job.spec.as_ref().and_then(|s| s.max_failed_indexes);
        let verdict = if max.is_some_and(|m| failed.total() > m) {
            Some((
                "MaxFailedIndexesExceeded",
                "Job has exceeded the specified maximal number of failed indexes",
            ))
        } else if failed.total() > 0 && failed.total() + ctx.indexes.total() >= total {
            Some(("FailedIndexes", "Job has failed indexes"))
        } else {
            None
        };
        if let (None, Some((reason, message))) = (&ctx.finished, verdict) {
            ctx.finished = Some(conditions::new(FAILURE_TARGET, "True", reason, message, ctx.now));
        }
        ctx.delayed = per_index::delayed_deletions(ctx, &failed);
        ctx.failed_indexes = Some(failed);
    }
    if ctx.finished.is_none() {
        let policy = ctx.job.spec.as_ref().and_then(|s| s.success_policy.as_ref());
        if let Some(message) = success_policy::matched(policy, total, &ctx.indexes) {
            ctx.finished = Some(conditions::new(
                SUCCESS_CRITERIA_MET,
                "True",
                success_policy::REASON,
                &message,
                ctx.now,
            ));
        }
    }
}

/// With `restartPolicy: OnFailure` failures are container restarts: the Job fails once the
/// restarts of its running and pending pods reach the backoff limit.
fn past_backoff_limit_on_failure(job: &Job, all: &[Arc<Pod>], limit: i32) -> bool {
    let policy = job
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|s| s.restart_policy.as_deref());
    if policy != Some("OnFailure") {
        return false;
    }
    let restarts: i32 = all
        .iter()
        .filter(|p| matches!(pod::phase(p), "Running" | "Pending"))
        .filter_map(|p| p.status.as_ref())
        .flat_map(|s| {
            s.init_container_statuses.iter().flatten().chain(s.container_statuses.iter().flatten())
        })
        .map(|c| c.restart_count)
        .sum();
    if limit == 0 {
        restarts > 0
    } else {
        restarts >= limit
    }
}
