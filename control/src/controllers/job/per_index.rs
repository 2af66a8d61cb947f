//! `spec.backoffLimitPerIndex` for Indexed Jobs (the reference's KEP-3850): each index may fail
//! that many times before it is marked failed in `status.failedIndexes` (a `FailIndex` rule of
//! the pod failure policy fails it at once); the Job goes on with its other indexes and fails once
//! every index finished with some failed (`FailedIndexes`), or as soon as more than
//! `maxFailedIndexes` failed (`MaxFailedIndexesExceeded`).
//!
//! The count lives on the pods: a replacement carries its index's failures so far in the
//! `batch.kubernetes.io/job-index-failure-count` annotation (failures the policy ignored in
//! `…-ignored-failure-count`), one more than the failed pod it replaces. That pod must still be
//! there to be read, so its tracking finalizer stays until the replacement is active (the
//! reference's "delayed deletion"). The delay before a replacement grows with the index's own
//! failures, not the Job's.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;

use super::backoff::{self, Record};
use super::failure_policy::{self, FAIL_INDEX};
use super::indexes::{self, Intervals};
use super::pods::has_tracking_finalizer;
use super::sync::{is_pod_failed, JobCtx};

/// Failures of the pod's index before this pod (counted ones).
pub const INDEX_FAILURE_COUNT: &str = "batch.kubernetes.io/job-index-failure-count";
/// Failures of the pod's index before this pod that the pod failure policy ignored.
pub const INDEX_IGNORED_FAILURE_COUNT: &str = "batch.kubernetes.io/job-index-ignored-failure-count";

/// `spec.backoffLimitPerIndex`, if set.
pub fn limit(job: &Job) -> Option<i32> {
    job.spec.as_ref()?.backoff_limit_per_index
}

/// A count annotation; missing, unparsable or negative values read as 0 (the reference's
/// `parseInt32`: users can write these annotations).
fn count(pod: &Pod, key: &str) -> i32 {
    let value = pod.metadata.annotations.as_ref().and_then(|a| a.get(key));
    value.and_then(|v| v.parse::<i32>().ok()).filter(|v| *v >= 0).unwrap_or(0)
}

/// Counted failures of the pod's index before this pod.
pub fn failure_count(pod: &Pod) -> i32 {
    count(pod, INDEX_FAILURE_COUNT)
}

/// All failures of the pod's index before this pod, ignored ones included.
pub fn absolute_failure_count(pod: &Pod) -> i32 {
    failure_count(pod).saturating_add(count(pod, INDEX_IGNORED_FAILURE_COUNT))
}

/// Whether this pod's failure fails its index (the reference's `isIndexFailed`): a `FailIndex`
/// rule matched, or it is a counted failure and its index had failed `limit` times before.
pub fn is_index_failed(job: &Job, pod: &Pod, limit: i32) -> bool {
    if !is_pod_failed(pod, job) {
        return false;
    }
    let verdict = failure_policy::evaluate_for(job, pod);
    if verdict.action.as_deref() == Some(FAIL_INDEX) {
        return true;
    }
    verdict.counts && failure_count(pod) >= limit
}

/// `status.failedIndexes` plus the indexes that failed since (pods not yet counted: they
/// still carry the finalizer).
pub fn failed_indexes(job: &Job, pods: &[Arc<Pod>], completions: i32, limit: i32) -> Intervals {
    let text = job.status.as_ref().and_then(|s| s.failed_indexes.as_deref()).unwrap_or("");
    let newly = pods
        .iter()
        .filter(|p| has_tracking_finalizer(p) && is_index_failed(job, p, limit))
        .filter_map(|p| indexes::valid_index(p, completions));
    Intervals::parse(text, completions).with(newly)
}

/// Per index still to run (not succeeded, failed or active), its last failed pod not yet
/// counted (the reference's `getPodsWithDelayedDeletionPerIndex`): the pod whose finalizer
/// stays until its replacement exists, and whose counts and finish time the replacement uses.
pub fn delayed_deletions(ctx: &JobCtx, failed: &Intervals) -> HashMap<i32, Arc<Pod>> {
    let total = super::sync::completions(&ctx.job).unwrap_or(0);
    let active: std::collections::HashSet<i32> =
        ctx.active.iter().filter_map(|p| indexes::completion_index(p)).collect();
    let mut delayed: HashMap<i32, Arc<Pod>> = HashMap::new();
    for p in &ctx.pods {
        let uid = p.uid().unwrap_or_default();
        if !has_tracking_finalizer(p) || ctx.expected_rm.contains(&uid) {
            continue;
        }
        if !is_pod_failed(p, &ctx.job) {
            continue;
        }
        let Some(ix) = indexes::valid_index(p, total) else { continue };
        if ctx.indexes.has(ix) || failed.has(ix) || active.contains(&ix) {
            continue;
        }
        let replace = delayed.get(&ix).is_none_or(|last| {
            absolute_failure_count(last) <= absolute_failure_count(p)
                && backoff::finished_at(p) >= backoff::finished_at(last)
        });
        if replace {
            delayed.insert(ix, p.clone());
        }
    }
    delayed
}

/// The (counted, ignored) failure counts of a new pod for an index whose last failed pod is
/// `replaced` (the reference's `getNewIndexFailureCounts`).
pub fn new_failure_counts(job: &Job, replaced: Option<&Pod>) -> (i32, i32) {
    let Some(replaced) = replaced else { return (0, 0) };
    let (failures, ignored) =
        (failure_count(replaced), count(replaced, INDEX_IGNORED_FAILURE_COUNT));
    if failure_policy::evaluate_for(job, replaced).counts {
        (failures.saturating_add(1), ignored)
    } else {
        (failures, ignored.saturating_add(1))
    }
}

/// Writes the failure counts on a new pod (the ignored count only when there is one).
pub fn annotate(pod: &mut Pod, (failures, ignored): (i32, i32)) {
    let annotations = pod.annotations_mut();
    annotations.insert(INDEX_FAILURE_COUNT.into(), failures.to_string());
    if ignored > 0 {
        annotations.insert(INDEX_IGNORED_FAILURE_COUNT.into(), ignored.to_string());
    }
}

/// How long the index whose last failed pod is `replaced` must still wait for its replacement
/// (the reference's `getRemainingTimePerIndex`): the usual backoff over the index's failures.
pub fn remaining_backoff(replaced: Option<&Pod>, now: Timestamp) -> Duration {
    let Some(replaced) = replaced else { return Duration::ZERO };
    let failures = u32::try_from(absolute_failure_count(replaced)).unwrap_or(0).saturating_add(1);
    Record { failures, last_failure: Some(backoff::finished_at(replaced)) }.remaining(now)
}

/// Of the indexes to create, those whose backoff is over; when none is, the shortest wait
/// (the reference's `getPodCreationInfoForIndependentIndexes`).
pub fn ready_now(
    wanted: Vec<i32>,
    delayed: &HashMap<i32, Arc<Pod>>,
    now: Timestamp,
) -> (Vec<i32>, Duration) {
    let mut shortest: Option<Duration> = None;
    let mut ready = Vec::new();
    for ix in wanted {
        let wait = remaining_backoff(delayed.get(&ix).map(|p| p.as_ref()), now);
        if wait.is_zero() {
            ready.push(ix);
        } else {
            shortest = Some(shortest.map_or(wait, |s| s.min(wait)));
        }
    }
    let wait = if ready.is_empty() { shortest.unwrap_or_default() } else { Duration::ZERO };
    (ready, wait)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::batch::v1::{
        JobSpec, JobStatus, PodFailurePolicy, PodFailurePolicyOnExitCodesRequirement,
        PodFailurePolicyRule,
    };
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateTerminated, ContainerStatus, PodStatus,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use crate::controllers::job::indexes::COMPLETION_INDEX;
    use crate::controllers::job::pods::TRACKING_FINALIZER;

    fn job(limit: i32, rules: Vec<PodFailurePolicyRule>, failed_indexes: Option<&str>) -> Job {
        Job {
            spec: Some(JobSpec {
                completions: Some(4),
                completion_mode: Some("Indexed".into()),
                backoff_limit_per_index: Some(limit),
                pod_failure_policy: (!rules.is_empty()).then_some(PodFailurePolicy { rules }),
                ..Default::default()
            }),
            status: Some(JobStatus {
                failed_indexes: failed_indexes.map(String::from),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn rule(action: &str, code: i32) -> PodFailurePolicyRule {
        PodFailurePolicyRule {
            action: action.into(),
            on_exit_codes: Some(PodFailurePolicyOnExitCodesRequirement {
                container_name: None,
                operator: "In".into(),
                values: vec![code],
            }),
            on_pod_conditions: None,
        }
    }

    /// A pod of index `ix` in `phase` (exit code `code` when Failed), with the finalizer,
    /// `failures` in its count annotation, finished at second `at`.
    fn pod(uid: &str, ix: i32, phase: &str, code: i32, failures: &str, at: i64) -> Arc<Pod> {
        let mut p = Pod::default();
        p.metadata.uid = Some(uid.into());
        p.metadata.finalizers = Some(vec![TRACKING_FINALIZER.into()]);
        p.metadata.annotations = Some(
            [
                (COMPLETION_INDEX.to_string(), ix.to_string()),
                (INDEX_FAILURE_COUNT.to_string(), failures.to_string()),
            ]
            .into(),
        );
        let finished = Timestamp::from_second(at).unwrap();
        p.status = Some(PodStatus {
            phase: Some(phase.into()),
            container_statuses: Some(vec![ContainerStatus {
                name: "c".into(),
                state: Some(ContainerState {
                    terminated: Some(ContainerStateTerminated {
                        exit_code: code,
                        finished_at: Some(Time(finished)),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }]),
            ..Default::default()
        });
        Arc::new(p)
    }

    #[test]
    fn an_index_fails_past_its_limit_or_on_a_fail_index_rule() {
        let j = job(1, vec![rule("FailIndex", 42), rule("Ignore", 7)], None);
        // First failure of the index (count 0): within the limit of 1.
        assert!(!is_index_failed(&j, &pod("a", 0, "Failed", 1, "0", 0), 1));
        // Second failure (count 1 before it): the index fails.
        assert!(is_index_failed(&j, &pod("b", 0, "Failed", 1, "1", 0), 1));
        // FailIndex fails it on the first failure; an ignored failure never does.
        assert!(is_index_failed(&j, &pod("c", 1, "Failed", 42, "0", 0), 1));
        assert!(!is_index_failed(&j, &pod("d", 2, "Failed", 7, "5", 0), 1));
        // Bad annotations read as 0.
        assert!(!is_index_failed(&j, &pod("e", 3, "Failed", 1, "-3", 0), 1));
        assert!(!is_index_failed(&j, &pod("f", 3, "Running", 0, "9", 0), 1));
    }

    #[test]
    fn failed_indexes_add_uncounted_pods_to_the_status() {
        let j = job(0, vec![], Some("3"));
        let released = {
            let mut p = (*pod("b", 1, "Failed", 1, "0", 0)).clone();
            p.metadata.finalizers = None;
            Arc::new(p)
        };
        let pods =
            vec![pod("a", 0, "Failed", 1, "0", 0), released, pod("c", 9, "Failed", 1, "0", 0)];
        // Index 1's pod was counted already (no finalizer): only the status says so, and
        // here it does not. Index 9 is out of range.
        assert_eq!(failed_indexes(&j, &pods, 4, 0).to_string(), "0,3");
    }

    #[test]
    fn the_last_failure_of_each_index_to_retry_is_kept() {
        let j = job(5, vec![], None);
        let older = pod("a", 0, "Failed", 1, "0", 10);
        let newer = pod("b", 0, "Failed", 1, "1", 20);
        let released = {
            let mut p = (*pod("c", 0, "Failed", 1, "2", 30)).clone();
            p.metadata.finalizers = None;
            Arc::new(p)
        };
        let replaced = pod("d", 1, "Failed", 1, "0", 10);
        let running = pod("e", 1, "Running", 0, "1", 0);
        let succeeded = pod("f", 2, "Failed", 1, "0", 10);
        let failed = pod("g", 3, "Failed", 1, "0", 10);
        let all =
            vec![newer.clone(), older, released, replaced, running.clone(), succeeded, failed];
        let ctx = JobCtx {
            key: crate::machinery::ObjectKey::new("ns", "j"),
            job: j,
            pods: all,
            active: vec![running],
            ready: 0,
            terminating: 0,
            uncounted_succeeded: Default::default(),
            uncounted_failed: Default::default(),
            expected_rm: Default::default(),
            succeeded: 1,
            failed: 0,
            finished: None,
            prev_indexes: Intervals::default(),
            indexes: Intervals::parse("2", 4),
            failed_indexes: None,
            delayed: HashMap::new(),
            backoff: Record::default(),
            now: Timestamp::UNIX_EPOCH,
            requeue: None,
        };
        let delayed = delayed_deletions(&ctx, &Intervals::parse("3", 4));
        // Index 0: the failure with the highest count (the released pod no longer counts);
        // 1 is running again, 2 succeeded, 3 failed for good.
        assert_eq!(delayed.keys().copied().collect::<Vec<_>>(), vec![0]);
        assert_eq!(delayed[&0].uid(), newer.uid());
    }

    #[test]
    fn replacements_carry_the_counts_and_wait_per_index() {
        let j = job(3, vec![rule("Ignore", 7)], None);
        assert_eq!(new_failure_counts(&j, None), (0, 0));
        assert_eq!(new_failure_counts(&j, Some(&pod("a", 0, "Failed", 1, "2", 0))), (3, 0));
        let ignored = pod("b", 0, "Failed", 7, "2", 0);
        assert_eq!(new_failure_counts(&j, Some(&ignored)), (2, 1));
        let mut new_pod = Pod::default();
        annotate(&mut new_pod, (2, 1));
        assert_eq!(new_pod.annotations()[INDEX_FAILURE_COUNT], "2");
        assert_eq!(new_pod.annotations()[INDEX_IGNORED_FAILURE_COUNT], "1");
        assert_eq!(absolute_failure_count(&new_pod), 3);

        // Index 0 failed once at t=100 (10 s backoff), index 1 three times (count 2: 40 s).
        let delayed = HashMap::from([
            (0, pod("x", 0, "Failed", 1, "0", 100)),
            (1, pod("y", 1, "Failed", 1, "2", 100)),
        ]);
        let at = |s| Timestamp::from_second(s).unwrap();
        assert_eq!(ready_now(vec![0, 1, 2], &delayed, at(105)), (vec![2], Duration::ZERO));
        assert_eq!(ready_now(vec![0, 1], &delayed, at(105)), (vec![], Duration::from_secs(5)));
        assert_eq!(ready_now(vec![0, 1], &delayed, at(120)), (vec![0], Duration::ZERO));
        assert_eq!(ready_now(vec![1], &delayed, at(120)), (vec![], Duration::from_secs(20)));
    }
}
