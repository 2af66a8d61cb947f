//! Creating and deleting a Job's pods (the reference's `manageJob`): as many active pods as
//! `parallelism` allows and the remaining completions need, replacements only after the failure
//! backoff, the lowest pending indexes first for Indexed Jobs, and none while suspended.
//! Creations go in slow-start batches and are announced to the expectations first.

use std::sync::{Arc, Mutex};

use futures::future::join_all;
use k8s_openapi::api::core::v1::Pod;
use kube::api::PostParams;
use kube::{Api, ResourceExt};

use super::indexes::{self, Intervals};
use super::per_index;
use super::pods;
use super::sync::{
    completions, is_indexed, is_suspended, only_replace_failed, parallelism, JobCtx,
};
use super::Controller;
use crate::controllers::replicaset::{error_message, pods_to_delete, slow_start_batch};
use crate::controllers::util::pod;
use crate::machinery::{ControlError, EventType};

/// At most this many pods are created or deleted in one sync (`MaxPodCreateDeletePerSync`).
const MAX_PER_SYNC: usize = 500;

/// Creates or deletes pods; the number of active pods afterwards, with the first error.
pub(super) async fn manage_job(
    controller: &Controller,
    ctx: &mut JobCtx,
) -> Result<i32, (i32, ControlError)> {
    let active = i32::try_from(ctx.active.len()).unwrap_or(i32::MAX);
    if is_suspended(&ctx.job) {
        let all = ctx.active.clone();
        return delete_pods(controller, ctx, all, active).await;
    }
    let parallelism = parallelism(&ctx.job);
    let want = match completions(&ctx.job) {
        // Without completions, once one pod succeeded the rest may finish but none are added.
        None if ctx.succeeded > 0 => active,
        None => parallelism,
        Some(total) => (total - ctx.succeeded).clamp(0, parallelism),
    };
    let surplus = usize::try_from(active - want).unwrap_or(0);
    let mut doomed = pods_for_removal(ctx, surplus);
    doomed.truncate(MAX_PER_SYNC);
    if !doomed.is_empty() {
        // Deletion and creation never share a sync; deletion goes first.
        return delete_pods(controller, ctx, doomed, active).await;
    }
    let terminating = if only_replace_failed(&ctx.job) { ctx.terminating } else { 0 };
    let missing = want - terminating - active;
    if missing <= 0 {
        return Ok(active);
    }
    // With a per-index limit each index waits on its own failures instead (below).
    let per_index = per_index::limit(&ctx.job).is_some();
    let wait = if per_index { std::time::Duration::ZERO } else { ctx.backoff.remaining(ctx.now) };
    if !wait.is_zero() {
        ctx.requeue_within(wait);
        return Ok(active);
    }
    let mut count = usize::try_from(missing).unwrap_or(0).min(MAX_PER_SYNC);
    let mut slots: Vec<Option<i32>> = vec![None; count];
    if is_indexed(&ctx.job) {
        let total = completions(&ctx.job).unwrap_or(0);
        let mut busy: std::collections::BTreeSet<i32> =
            ctx.active.iter().filter_map(|p| indexes::valid_index(p, total)).collect();
        if only_replace_failed(&ctx.job) {
            let terminating =
                ctx.pods.iter().filter(|p| pod::is_terminating(p) && !pod::is_terminal(p));
            busy.extend(terminating.filter_map(|p| indexes::valid_index(p, total)));
        }
        // Failed indexes are not retried.
        busy.extend(ctx.failed_indexes.iter().flat_map(Intervals::iter));
        let mut pending = ctx.indexes.first_pending(&busy, count, total);
        if per_index {
            let (ready, wait) = per_index::ready_now(pending, &ctx.delayed, ctx.now);
            if ready.is_empty() && !wait.is_zero() {
                ctx.requeue_within(wait);
                return Ok(active);
            }
            pending = ready;
        }
        slots = pending.into_iter().map(Some).collect();
        count = slots.len();
    }
    if count == 0 {
        return Ok(active);
    }
    controller.expectations.expect_creations(&ctx.key, count);
    let job = ctx.job.clone();
    let delayed = &ctx.delayed;
    let api: Api<Pod> = Api::namespaced(controller.ctx.client.clone(), &ctx.key.namespace);
    // Batches pop their index from the front.
    slots.reverse();
    let slots = Mutex::new(slots);
    let (created, error) = slow_start_batch(count, || async {
        let index = slots.lock().unwrap_or_else(|p| p.into_inner()).pop().flatten();
        let mut pod = pods::pod_for(&job, index);
        if let Some(index) = index.filter(|_| per_index) {
            let replaced = delayed.get(&index).map(|p| p.as_ref());
            per_index::annotate(&mut pod, per_index::new_failure_counts(&job, replaced));
        }
        match api.create(&PostParams::default(), &pod).await {
            Ok(created) => {
                let message = format!("Created pod: {}", created.name_any());
                controller
                    .ctx
                    .events
                    .record(&job, EventType::Normal, "SuccessfulCreate", &message)
                    .await;
                Ok(())
            }
            Err(error) => {
                let error = ControlError::from(error);
                let message = format!("Error creating: {}", error_message(&error));
                controller
                    .ctx
                    .events
                    .record(&job, EventType::Warning, "FailedCreate", &message)
                    .await;
                Err(error)
            }
        }
    })
    .await;
    // Creations that failed or never ran will not be observed.
    for _ in created..count {
        controller.expectations.creation_observed(&ctx.key);
    }
    let active = active + i32::try_from(created).unwrap_or(0);
    match error {
        Some(error) => Err((active, error)),
        None => Ok(active),
    }
}

/// The active pods to delete: bad or repeated indexes first, then the `surplus` least
/// advanced pods (unscheduled, pending, not ready, newest).
fn pods_for_removal(ctx: &JobCtx, surplus: usize) -> Vec<Arc<Pod>> {
    let (mut doomed, left) = if is_indexed(&ctx.job) {
        let total = completions(&ctx.job).unwrap_or(0);
        let (bad, keep) = indexes::bad_or_duplicate(&ctx.active, total);
        (bad, keep.into_values().collect())
    } else {
        (Vec::new(), ctx.active.clone())
    };
    if doomed.len() < surplus {
        let more = surplus - doomed.len();
        doomed.extend(pods_to_delete(&left, &left, more, ctx.now));
    }
    doomed
}

/// Deletes `doomed` pods of a running Job, releasing their finalizer first (a deleted pod is
/// not a failure to count); the number of active pods left, with the first error.
async fn delete_pods(
    controller: &Controller,
    ctx: &mut JobCtx,
    doomed: Vec<Arc<Pod>>,
    active: i32,
) -> Result<i32, (i32, ControlError)> {
    let uids = doomed.iter().filter_map(|p| p.uid());
    controller.expectations.expect_deletions(&ctx.key, uids);
    let api: Api<Pod> = Api::namespaced(controller.ctx.client.clone(), &ctx.key.namespace);
    let job = &ctx.job;
    let key = &ctx.key;
    let results = join_all(doomed.iter().map(|p| {
        let api = api.clone();
        async move {
            let outcome = match pods::remove_finalizer(&api, p).await {
                Ok(()) => pods::delete(&api, p).await,
                Err(error) => Err(error),
            };
            match outcome {
                Ok(()) => {
                    let message = format!("Deleted pod: {}", p.name_any());
                    controller
                        .ctx
                        .events
                        .record(job, EventType::Normal, "SuccessfulDelete", &message)
                        .await;
                    Ok(pod::is_ready(p))
                }
                Err(error) => {
                    controller.expectations.deletion_observed(key, &p.uid().unwrap_or_default());
                    let error = ControlError::from(error);
                    let message = format!("Error deleting: {}", error_message(&error));
                    controller
                        .ctx
                        .events
                        .record(job, EventType::Warning, "FailedDelete", &message)
                        .await;
                    Err(error)
                }
            }
        }
    }))
    .await;
    let mut deleted = 0;
    let mut first_error = None;
    for result in results {
        match result {
            Ok(ready) => {
                deleted += 1;
                ctx.terminating += 1;
                if ready {
                    ctx.ready -= 1;
                }
            }
            Err(error) => {
                first_error.get_or_insert(error);
            }
        }
    }
    let active = active - deleted;
    match first_error {
        Some(error) => Err((active, error)),
        None => Ok(active),
    }
}

/// Deletes every active pod of a Job that is done, keeping the finalizers (the tracking counts
/// them as failed before releasing them): (ready deleted, deleted, first error).
pub(super) async fn delete_active(
    controller: &Controller,
    ctx: &JobCtx,
) -> (i32, i32, Option<ControlError>) {
    let api: Api<Pod> = Api::namespaced(controller.ctx.client.clone(), &ctx.key.namespace);
    let results = join_all(ctx.active.iter().map(|p| {
        let api = api.clone();
        async move { pods::delete(&api, p).await.map(|()| pod::is_ready(p)) }
    }))
    .await;
    let (mut ready, mut deleted, mut first_error) = (0, 0, None);
    for result in results {
        match result {
            Ok(was_ready) => {
                deleted += 1;
                ready += i32::from(was_ready);
            }
            Err(error) => {
                first_error.get_or_insert(ControlError::from(error));
            }
        }
    }
    (ready, deleted, first_error)
}
