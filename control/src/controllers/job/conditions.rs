//! Job conditions as the reference reads and writes them: a Job is finished once `Complete` or
//! `Failed` is `True`; the interim `SuccessCriteriaMet` and `FailureTarget` are set first, while
//! pods still terminate; `Suspended` follows `spec.suspend`. Shared with the CronJob and
//! TTL-after-finished controllers.

use jiff::Timestamp;
use k8s_openapi::api::batch::v1::{Job, JobCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

pub const COMPLETE: &str = "Complete";
pub const FAILED: &str = "Failed";
pub const FAILURE_TARGET: &str = "FailureTarget";
pub const SUCCESS_CRITERIA_MET: &str = "SuccessCriteriaMet";
pub const SUSPENDED: &str = "Suspended";

/// The `Complete` or `Failed` condition that is `True`, if the Job finished.
pub fn finished_condition(job: &Job) -> Option<&JobCondition> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| (c.type_ == COMPLETE || c.type_ == FAILED) && c.status == "True")
}

/// Whether the Job finished (the reference's `IsJobFinished`).
pub fn is_finished(job: &Job) -> bool {
    finished_condition(job).is_some()
}

/// The condition of type `type_`, whatever its status.
pub fn find<'a>(conditions: &'a [JobCondition], type_: &str) -> Option<&'a JobCondition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// The condition of type `type_` if it is `True`.
pub fn find_true<'a>(conditions: &'a [JobCondition], type_: &str) -> Option<&'a JobCondition> {
    find(conditions, type_).filter(|c| c.status == "True")
}

/// A condition as the reference builds one (probe and transition time `now`).
pub fn new(type_: &str, status: &str, reason: &str, message: &str, now: Timestamp) -> JobCondition {
    JobCondition {
        type_: type_.into(),
        status: status.into(),
        reason: (!reason.is_empty()).then(|| reason.to_string()),
        message: (!message.is_empty()).then(|| message.to_string()),
        last_probe_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    }
}

/// The reference's `ensureJobConditionStatus`: sets the condition of `type_` to this status,
/// reason and message (adding it unless the status is `False`); whether anything changed.
pub fn ensure(
    conditions: &mut Vec<JobCondition>,
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    now: Timestamp,
) -> bool {
    let wanted = new(type_, status, reason, message, now);
    if let Some(existing) = conditions.iter_mut().find(|c| c.type_ == type_) {
        if existing.status != wanted.status
            || existing.reason != wanted.reason
            || existing.message != wanted.message
        {
            *existing = wanted;
            return true;
        }
        return false;
    }
    if status != "False" {
        conditions.push(wanted);
        return true;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ensure_adds_updates_and_never_adds_false() {
        let now = Timestamp::UNIX_EPOCH;
        let mut list = Vec::new();
        assert!(!ensure(&mut list, SUSPENDED, "False", "JobResumed", "Job resumed", now));
        assert!(list.is_empty());
        assert!(ensure(&mut list, SUSPENDED, "True", "JobSuspended", "Job suspended", now));
        assert!(!ensure(&mut list, SUSPENDED, "True", "JobSuspended", "Job suspended", now));
        assert!(ensure(&mut list, SUSPENDED, "False", "JobResumed", "Job resumed", now));
        assert_eq!((list.len(), list[0].status.as_str()), (1, "False"));

        let mut job = Job::default();
        assert!(!is_finished(&job));
        job.status = Some(Default::default());
        job.status.as_mut().unwrap().conditions =
            Some(vec![new(FAILURE_TARGET, "True", "BackoffLimitExceeded", "", now)]);
        assert!(!is_finished(&job), "an interim condition is not finished");
        job.status
            .as_mut()
            .unwrap()
            .conditions
            .as_mut()
            .unwrap()
            .push(new(FAILED, "True", "", "", now));
        assert_eq!(finished_condition(&job).map(|c| c.type_.as_str()), Some(FAILED));
    }
}
