//! The delay before a Job replaces failed pods: 10 s after the last failure, doubling with each
//! failure since the last success, capped at six minutes (the reference's
//! `DefaultJobPodFailureBackOff`/`MaxJobPodFailureBackOff`). The reference keeps this record in
//! memory, fed by newly finished pods; here it is read from the Job's finished pods on every
//! sync (they stay until the Job is deleted), so a restarted controller keeps the backoff.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;

const BASE: Duration = Duration::from_secs(10);
const MAX: Duration = Duration::from_secs(6 * 60);

/// Failures since the last success and when the last of them happened.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Record {
    pub failures: u32,
    pub last_failure: Option<Timestamp>,
}

/// When a pod finished: its containers' last termination, else when it stopped being ready,
/// else its deletion, else its creation (the reference's `getFinishedTime`).
pub fn finished_at(pod: &Pod) -> Timestamp {
    let status = pod.status.as_ref();
    let containers = status.and_then(|s| s.container_statuses.as_deref()).unwrap_or_default();
    let terminated: Vec<Option<Timestamp>> = containers
        .iter()
        .map(|c| {
            c.state
                .as_ref()
                .and_then(|s| s.terminated.as_ref())
                .and_then(|t| t.finished_at.as_ref())
                .map(|t| t.0)
        })
        .collect();
    if !terminated.is_empty() && terminated.iter().all(Option::is_some) {
        if let Some(latest) = terminated.into_iter().flatten().max() {
            return latest;
        }
    }
    let not_ready = status
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready" && c.status == "False"))
        .and_then(|c| c.last_transition_time.as_ref())
        .map(|t| t.0);
    not_ready
        .or_else(|| pod.metadata.deletion_timestamp.as_ref().map(|t| t.0))
        .or_else(|| pod.metadata.creation_timestamp.as_ref().map(|t| t.0))
        .unwrap_or(Timestamp::UNIX_EPOCH)
}

/// The record of a Job whose finished pods are `succeeded` and `failed`: failures after the
/// latest success count.
pub fn record(succeeded: &[&Pod], failed: &[&Pod]) -> Record {
    let last_success = succeeded.iter().map(|p| finished_at(p)).max();
    let after: Vec<Timestamp> = failed
        .iter()
        .map(|p| finished_at(p))
        .filter(|t| last_success.is_none_or(|s| *t > s))
        .collect();
    Record {
        failures: u32::try_from(after.len()).unwrap_or(u32::MAX),
        last_failure: after.into_iter().max(),
    }
}

impl Record {
    /// How long pod creation must still wait at `now` (zero: create now).
    pub fn remaining(&self, now: Timestamp) -> Duration {
        let Some(last) = self.last_failure.filter(|_| self.failures > 0) else {
            return Duration::ZERO;
        };
        let exponent = self.failures.saturating_sub(1).min(16);
        let backoff = BASE.saturating_mul(1 << exponent).min(MAX);
        let elapsed = now.duration_since(last);
        let elapsed = Duration::try_from(elapsed).unwrap_or(Duration::ZERO);
        backoff.saturating_sub(elapsed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateTerminated, ContainerStatus, PodStatus,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn finished(at: &str) -> Pod {
        Pod {
            status: Some(PodStatus {
                container_statuses: Some(vec![ContainerStatus {
                    name: "c".into(),
                    state: Some(ContainerState {
                        terminated: Some(ContainerStateTerminated {
                            finished_at: Some(Time(at.parse().unwrap())),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn ts(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    #[test]
    fn backoff_doubles_from_ten_seconds_and_is_capped() {
        let last = ts("2024-01-01T00:00:00Z");
        let after = |failures, secs| {
            let r = Record { failures, last_failure: Some(last) };
            r.remaining(last.checked_add(jiff::SignedDuration::from_secs(secs)).unwrap())
        };
        assert_eq!(after(0, 0), Duration::ZERO);
        assert_eq!(after(1, 0), Duration::from_secs(10));
        assert_eq!(after(1, 4), Duration::from_secs(6));
        assert_eq!(after(2, 0), Duration::from_secs(20));
        assert_eq!(after(3, 0), Duration::from_secs(40));
        assert_eq!(after(10, 0), Duration::from_secs(360));
        assert_eq!(after(40, 0), Duration::from_secs(360));
        assert_eq!(after(1, 11), Duration::ZERO);
    }

    #[test]
    fn only_failures_after_the_last_success_count() {
        let f1 = finished("2024-01-01T00:00:01Z");
        let s = finished("2024-01-01T00:00:05Z");
        let f2 = finished("2024-01-01T00:00:07Z");
        let f3 = finished("2024-01-01T00:00:09Z");
        let r = record(&[&s], &[&f1, &f2, &f3]);
        assert_eq!(r.failures, 2);
        assert_eq!(r.last_failure, Some(ts("2024-01-01T00:00:09Z")));
        assert_eq!(record(&[&s], &[&f1]), Record::default());
        assert_eq!(record(&[], &[&f1]).failures, 1);
    }
}
