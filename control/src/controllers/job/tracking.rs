//! Counting finished pods exactly once (the reference's `trackJobStatusAndRemoveFinalizers`).
//! A finished pod keeps the `batch.kubernetes.io/job-tracking` finalizer until it is counted:
//! its uid first goes to `status.uncountedTerminatedPods` (written with the Job's
//! resourceVersion, so a stale cache cannot write), then the finalizer is removed, then the uid
//! moves to `succeeded`/`failed`. A crash at any step leaves a state the next sync completes.
//! Indexed Jobs count succeeded pods by index in `completedIndexes` instead. The terminal
//! condition (`Complete`/`Failed`) is written once nothing is uncounted or terminating.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use futures::future::join_all;
use k8s_openapi::api::batch::v1::{Job, JobStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::PostParams;
use kube::{Api, ResourceExt};

use super::conditions::{self, COMPLETE, FAILED, FAILURE_TARGET, SUCCESS_CRITERIA_MET};
use super::indexes;
use super::sync::{completions, is_indexed, is_pod_failed, JobCtx};
use super::{failure_policy, pods, Controller};
use crate::controllers::util::pod;
use crate::machinery::{ControlError, EventType, ObjectKey};

/// At most this many pods are added to `uncountedTerminatedPods` per sync (keeps the status
/// small and one big Job from starving the others).
const MAX_UNCOUNTED: usize = 500;

/// Finalizer removals not yet seen by the pod informer, per Job (the reference's
/// `finalizerExpectations`): until the cache shows them, those pods must not be counted again.
#[derive(Debug, Clone, Default)]
pub struct FinalizerExpectations {
    table: Arc<Mutex<HashMap<ObjectKey, HashSet<String>>>>,
}

impl FinalizerExpectations {
    fn lock(&self) -> MutexGuard<'_, HashMap<ObjectKey, HashSet<String>>> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn expected(&self, key: &ObjectKey) -> HashSet<String> {
        self.lock().get(key).cloned().unwrap_or_default()
    }

    pub fn expect(&self, key: &ObjectKey, uids: impl IntoIterator<Item = String>) {
        self.lock().entry(key.clone()).or_default().extend(uids);
    }

    /// The pod `uid` shows no finalizer (or is gone).
    pub fn observed(&self, uid: &str) {
        let mut table = self.lock();
        table.values_mut().for_each(|uids| {
            uids.remove(uid);
        });
        table.retain(|_, uids| !uids.is_empty());
    }

    pub fn forget(&self, key: &ObjectKey) {
        self.lock().remove(key);
    }

    /// Every uid still expected, for re-checking against the cache after a relist.
    pub fn all(&self) -> Vec<String> {
        self.lock().values().flatten().cloned().collect()
    }
}

/// Moves the uncounted uids whose pods no longer carry the finalizer to the counters; whether
/// anything moved.
fn clean_uncounted(status: &mut JobStatus, with_finalizer: &HashSet<String>) -> bool {
    let uncounted = status.uncounted_terminated_pods.get_or_insert_with(Default::default);
    let moved = |list: &mut Option<Vec<String>>| {
        let before = list.as_ref().map_or(0, Vec::len);
        if let Some(list) = list.as_mut() {
            list.retain(|uid| with_finalizer.contains(uid));
        }
        if list.as_ref().is_some_and(Vec::is_empty) {
            *list = None;
        }
        i32::try_from(before - list.as_ref().map_or(0, Vec::len)).unwrap_or(0)
    };
    let succeeded = moved(&mut uncounted.succeeded);
    let failed = moved(&mut uncounted.failed);
    if succeeded > 0 {
        status.succeeded = Some(status.succeeded.unwrap_or(0) + succeeded);
    }
    if failed > 0 {
        status.failed = Some(status.failed.unwrap_or(0) + failed);
    }
    succeeded > 0 || failed > 0
}

/// Writes the status, keeping the Job's resourceVersion as the precondition (a conflict means
/// this sync read a stale Job: it is retried).
async fn write(controller: &Controller, job: &mut Job) -> Result<(), ControlError> {
    let api: Api<Job> =
        Api::namespaced(controller.ctx.client.clone(), &job.namespace().unwrap_or_default());
    *job = api.replace_status(&job.name_any(), &PostParams::default(), job).await?;
    Ok(())
}

/// Counts finished pods, releases their finalizers, and writes the status and the terminal
/// condition when the Job is done.
pub(super) async fn track_and_remove_finalizers(
    controller: &Controller,
    ctx: &mut JobCtx,
    mut needs_flush: bool,
) -> Result<(), ControlError> {
    let indexed = is_indexed(&ctx.job);
    let total = completions(&ctx.job).unwrap_or(0);
    let mut candidates: Vec<Arc<Pod>> = ctx.pods.clone();
    if indexed {
        // Completed indexes are added in order.
        candidates.sort_by_key(|p| indexes::completion_index(p).unwrap_or(i32::MAX));
    }
    let mut with_finalizer: HashSet<String> = candidates
        .iter()
        .filter(|p| pods::has_tracking_finalizer(p))
        .filter_map(|p| p.uid())
        .filter(|uid| !ctx.expected_rm.contains(uid))
        .collect();
    let status = ctx.job.status.get_or_insert_with(Default::default);
    needs_flush |= clean_uncounted(status, &with_finalizer);
    let finishing = ctx.finished.as_ref().is_some_and(|c| c.type_ != SUCCESS_CRITERIA_MET);
    let deleting = ctx.job.metadata.deletion_timestamp.is_some();
    let mut release = Vec::new();
    let mut new_indexes = Vec::new();
    let mut add_succeeded = Vec::new();
    let mut add_failed = Vec::new();
    let mut reached_max = false;
    for p in &candidates {
        let uid = p.uid().unwrap_or_default();
        if !pods::has_tracking_finalizer(p) || ctx.expected_rm.contains(&uid) {
            continue;
        }
        let failed = is_pod_failed(p, &ctx.job);
        let done = pod::phase(p) == "Succeeded";
        if !(deleting || ctx.finished.is_some() || done || failed) {
            continue;
        }
        // The last failed pod of an index to retry stays until its replacement has read its
        // failure count (the reference's `canRemoveFinalizer`).
        let delayed = indexes::completion_index(p)
            .and_then(|ix| ctx.delayed.get(&ix))
            .is_some_and(|d| d.uid().as_deref() == Some(uid.as_str()));
        if failed && delayed && !(deleting || ctx.finished.is_some()) {
            continue;
        }
        release.push(p.clone());
        if done && !ctx.uncounted_failed.contains(&uid) {
            if indexed {
                if let Some(ix) =
                    indexes::valid_index(p, total).filter(|ix| !ctx.prev_indexes.has(*ix))
                {
                    new_indexes.push(ix);
                    needs_flush = true;
                }
            } else if !ctx.uncounted_succeeded.contains(&uid) {
                add_succeeded.push(uid);
                needs_flush = true;
            }
        } else if failed || finishing {
            // When the Job is done, every pod not succeeded counts as failed.
            let in_range = !indexed || indexes::valid_index(p, total).is_some();
            if !ctx.uncounted_failed.contains(&uid)
                && in_range
                && failure_policy::evaluate_for(&ctx.job, p).counts
            {
                add_failed.push(uid);
                needs_flush = true;
            }
        }
        if new_indexes.len() + add_succeeded.len() + add_failed.len() >= MAX_UNCOUNTED {
            reached_max = true;
            break;
        }
    }
    let status = ctx.job.status.get_or_insert_with(Default::default);
    let uncounted = status.uncounted_terminated_pods.get_or_insert_with(Default::default);
    if !add_succeeded.is_empty() {
        uncounted.succeeded.get_or_insert_with(Vec::new).extend(add_succeeded);
    }
    if !add_failed.is_empty() {
        uncounted.failed.get_or_insert_with(Vec::new).extend(add_failed);
    }
    if indexed {
        ctx.indexes = ctx.indexes.with(new_indexes);
        let text = ctx.indexes.to_string();
        if status.completed_indexes.as_deref().unwrap_or("") != text {
            needs_flush = true;
        }
        status.succeeded = Some(ctx.indexes.total());
        status.completed_indexes = Some(text);
        if let Some(failed) = &ctx.failed_indexes {
            let text = failed.to_string();
            if status.failed_indexes.as_deref() != Some(text.as_str()) {
                status.failed_indexes = Some(text);
                needs_flush = true;
            }
        }
    }
    // The interim condition goes in before any finalizer is released, so the decision
    // survives a crash; the terminal one follows once everything is counted.
    let list = status.conditions.get_or_insert_with(Vec::new);
    if let Some(finished) = ctx.finished.take() {
        let (reason, message) = (
            finished.reason.clone().unwrap_or_default(),
            finished.message.clone().unwrap_or_default(),
        );
        let terminal = match finished.type_.as_str() {
            FAILURE_TARGET => {
                list.push(finished);
                needs_flush = true;
                FAILED
            }
            SUCCESS_CRITERIA_MET => {
                if conditions::find_true(list, SUCCESS_CRITERIA_MET).is_none() {
                    list.push(finished);
                    needs_flush = true;
                }
                COMPLETE
            }
            other => other,
        };
        ctx.finished = Some(conditions::new(
            if terminal == COMPLETE { COMPLETE } else { FAILED },
            "True",
            &reason,
            &message,
            ctx.now,
        ));
    }
    if list.is_empty() {
        status.conditions = None;
    }

    // Flush the uncounted uids, release the finalizers, count what was released.
    if needs_flush {
        write(controller, &mut ctx.job).await?;
        needs_flush = false;
    }
    let mut release_error = None;
    if !release.is_empty() {
        let uids: Vec<String> = release.iter().filter_map(|p| p.uid()).collect();
        controller.finalizers.expect(&ctx.key, uids);
        let api: Api<Pod> = Api::namespaced(controller.ctx.client.clone(), &ctx.key.namespace);
        let results = join_all(release.iter().map(|p| pods::remove_finalizer(&api, p))).await;
        for (p, result) in release.iter().zip(results) {
            let uid = p.uid().unwrap_or_default();
            match result {
                Ok(()) => {
                    with_finalizer.remove(&uid);
                }
                Err(error) => {
                    // No update will show this removal.
                    controller.finalizers.observed(&uid);
                    release_error.get_or_insert(ControlError::from(error));
                }
            }
        }
    }
    let status = ctx.job.status.get_or_insert_with(Default::default);
    needs_flush |= clean_uncounted(status, &with_finalizer);
    if let Some(error) = release_error {
        if needs_flush {
            write(controller, &mut ctx.job).await?;
        }
        return Err(error);
    }
    let finished = !reached_max && enact_finished(ctx);
    if finished || needs_flush {
        write(controller, &mut ctx.job).await?;
    }
    if finished {
        record_finished(controller, ctx).await;
    }
    Ok(())
}

/// Adds the terminal condition once no pod is uncounted or still terminating; whether it did.
fn enact_finished(ctx: &mut JobCtx) -> bool {
    let Some(finished) = ctx.finished.clone() else { return false };
    let status = ctx.job.status.get_or_insert_with(Default::default);
    let uncounted = status.uncounted_terminated_pods.as_ref();
    let pending = uncounted.map_or(0, |u| {
        u.succeeded.as_ref().map_or(0, Vec::len) + u.failed.as_ref().map_or(0, Vec::len)
    });
    if pending > 0 || ctx.terminating > 0 {
        return false;
    }
    let list = status.conditions.get_or_insert_with(Vec::new);
    let reason = finished.reason.clone().unwrap_or_default();
    let message = finished.message.clone().unwrap_or_default();
    conditions::ensure(list, &finished.type_, "True", &reason, &message, ctx.now);
    if finished.type_ == COMPLETE {
        status.completion_time = Some(Time(ctx.now));
    }
    true
}

async fn record_finished(controller: &Controller, ctx: &JobCtx) {
    let Some(finished) = &ctx.finished else { return };
    let events = &controller.ctx.events;
    if finished.type_ == COMPLETE {
        let succeeded = ctx.job.status.as_ref().and_then(|s| s.succeeded).unwrap_or(0);
        if completions(&ctx.job).is_some_and(|c| succeeded > c) {
            let message = "Too many succeeded pods running after completion count reached";
            events.record(&ctx.job, EventType::Warning, "TooManySucceededPods", message).await;
        }
        events.record(&ctx.job, EventType::Normal, "Completed", "Job completed").await;
    } else {
        let reason = finished.reason.as_deref().unwrap_or_default();
        let message = finished.message.as_deref().unwrap_or_default();
        events.record(&ctx.job, EventType::Warning, reason, message).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::batch::v1::UncountedTerminatedPods;

    #[test]
    fn released_uids_move_to_the_counters() {
        let mut status = JobStatus {
            succeeded: Some(2),
            uncounted_terminated_pods: Some(UncountedTerminatedPods {
                succeeded: Some(vec!["a".into(), "b".into()]),
                failed: Some(vec!["c".into()]),
            }),
            ..Default::default()
        };
        // "b" still carries the finalizer: it stays uncounted.
        let with_finalizer = HashSet::from(["b".to_string()]);
        assert!(clean_uncounted(&mut status, &with_finalizer));
        assert_eq!((status.succeeded, status.failed), (Some(3), Some(1)));
        let uncounted = status.uncounted_terminated_pods.as_ref().unwrap();
        assert_eq!(uncounted.succeeded.as_deref(), Some(&["b".to_string()][..]));
        assert_eq!(uncounted.failed, None);
        assert!(!clean_uncounted(&mut status, &with_finalizer));
    }

    #[test]
    fn finalizer_expectations_clear_on_observation() {
        let e = FinalizerExpectations::default();
        let key = ObjectKey::new("ns", "job");
        e.expect(&key, ["a".to_string(), "b".to_string()]);
        e.observed("a");
        assert_eq!(e.expected(&key), HashSet::from(["b".to_string()]));
        e.observed("b");
        assert!(e.expected(&key).is_empty());
        assert!(e.all().is_empty());
    }
}
