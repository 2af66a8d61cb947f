//! Soft eviction thresholds, as the kubelet's `--eviction-soft`, `--eviction-soft-grace-period`
//! and `--eviction-max-pod-grace-period` define them.
//!
//! A soft threshold (`memory.available<1.5Gi`, the same syntax as the hard ones) must stay
//! crossed for its signal's grace period (`memory.available=1m30s`) before a pod is evicted
//! for it; if one measurement finds it no longer crossed, the wait starts over. The pressure
//! condition is True from the first crossing, as in the kubelet (so new pods are refused while
//! the node waits). A pod evicted for a soft threshold gets its own termination grace period,
//! capped at `--eviction-max-pod-grace-period`. Soft thresholds hold nothing back from
//! allocatable.
//!
//! [`GraceTracker`] takes the time as an argument, so tests drive it with made-up instants.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;

use super::observe::Observations;
use super::thresholds::{self, Signal, Threshold};

/// The kubelet's default termination grace period, for pods that set none.
const DEFAULT_TERMINATION_GRACE_SECONDS: i64 = 30;

/// One soft threshold and how long it must stay crossed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SoftThreshold {
    pub threshold: Threshold,
    pub grace_period: Duration,
}

/// Parses `--eviction-soft-grace-period`: comma-separated `SIGNAL=DURATION`.
pub fn parse_grace_periods(text: &str) -> Result<HashMap<Signal, Duration>, String> {
    let mut out = HashMap::new();
    for statement in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (name, value) = statement
            .split_once('=')
            .ok_or_else(|| format!("{statement:?}: expected SIGNAL=DURATION"))?;
        let signal = Signal::parse(name.trim())
            .ok_or_else(|| format!("{statement:?}: unsupported eviction signal {name:?}"))?;
        let period = thresholds::parse_duration(value)?;
        if out.insert(signal, period).is_some() {
            return Err(format!("found duplicate grace period for signal {name}"));
        }
    }
    Ok(out)
}

/// Parses `--eviction-soft` with the grace periods of `--eviction-soft-grace-period`; every
/// soft threshold needs one (the kubelet refuses to start otherwise).
pub fn parse_soft(soft: &str, grace_periods: &str) -> Result<Vec<SoftThreshold>, String> {
    let periods = parse_grace_periods(grace_periods)
        .map_err(|e| format!("--eviction-soft-grace-period: {e}"))?;
    let thresholds = thresholds::parse_hard(soft).map_err(|e| format!("--eviction-soft: {e}"))?;
    thresholds
        .into_iter()
        .map(|threshold| {
            let grace_period = periods.get(&threshold.signal).copied().ok_or_else(|| {
                format!(
                    "grace period must be specified for the soft eviction threshold {} \
                     (--eviction-soft-grace-period)",
                    threshold.signal.name()
                )
            })?;
            Ok(SoftThreshold { threshold, grace_period })
        })
        .collect()
}

/// The crossed soft thresholds, given the observations.
pub fn met(soft: &[SoftThreshold], o: &Observations) -> Vec<SoftThreshold> {
    soft.iter()
        .filter(|s| {
            o.get(s.threshold.signal).is_some_and(|v| s.threshold.is_met(v.available, v.capacity))
        })
        .copied()
        .collect()
}

/// When each soft threshold was first seen crossed, in an unbroken run of measurements.
#[derive(Debug, Default)]
pub struct GraceTracker {
    first_met: HashMap<Signal, Instant>,
}

impl GraceTracker {
    /// Records the thresholds crossed `now`; returns those crossed for their whole grace period
    /// (which may drive eviction). A threshold not crossed now starts over.
    pub fn update(&mut self, met: &[SoftThreshold], now: Instant) -> Vec<Threshold> {
        self.first_met.retain(|signal, _| met.iter().any(|s| s.threshold.signal == *signal));
        met.iter()
            .filter(|s| {
                let since = *self.first_met.entry(s.threshold.signal).or_insert(now);
                now.saturating_duration_since(since) >= s.grace_period
            })
            .map(|s| s.threshold)
            .collect()
    }
}

/// The grace period of a pod evicted for a soft threshold: its own termination grace period
/// (30 s if unset), at most `max_pod_grace_seconds`, and at least `floor` (the agent's minimum
/// for a kill, as for hard evictions).
pub fn pod_grace_seconds(pod: &Pod, max_pod_grace_seconds: i64, floor: i64) -> i64 {
    let own = pod
        .spec
        .as_ref()
        .and_then(|s| s.termination_grace_period_seconds)
        .unwrap_or(DEFAULT_TERMINATION_GRACE_SECONDS);
    own.min(max_pod_grace_seconds).max(floor)
}

#[cfg(test)]
mod tests {
    use super::super::observe::Observation;
    use super::*;

    fn memory(available: i64) -> Observations {
        Observations {
            memory: Some(Observation { available, capacity: 8 << 30 }),
            ..Default::default()
        }
    }

    #[test]
    fn soft_thresholds_need_a_grace_period_each() {
        let soft = parse_soft(
            "memory.available<1Gi,nodefs.available<20%",
            "memory.available=1m30s,nodefs.available=0s",
        )
        .unwrap();
        assert_eq!(soft.len(), 2);
        assert_eq!(soft[0].grace_period, Duration::from_secs(90));
        assert_eq!(soft[1].grace_period, Duration::ZERO);
        let missing = parse_soft("memory.available<1Gi", "nodefs.available=1m").unwrap_err();
        assert!(missing.contains("grace period must be specified"), "{missing}");
        for bad in ["memory.available", "memory.free=1m", "memory.available=soon"] {
            assert!(parse_grace_periods(bad).is_err(), "{bad}");
        }
        assert!(parse_grace_periods("memory.available=1m,memory.available=2m").is_err());
        assert!(parse_soft("", "").unwrap().is_empty());
    }

    #[test]
    fn a_soft_threshold_acts_only_after_staying_crossed_for_its_grace_period() {
        let soft = parse_soft("memory.available<1Gi", "memory.available=1m").unwrap();
        let (low, fine) = (memory(512 << 20), memory(4 << 30));
        let mut tracker = GraceTracker::default();
        let t0 = Instant::now();
        let at = |s| t0 + Duration::from_secs(s);
        assert_eq!(met(&soft, &low).len(), 1);
        assert!(tracker.update(&met(&soft, &low), at(0)).is_empty());
        assert!(tracker.update(&met(&soft, &low), at(59)).is_empty());
        assert_eq!(tracker.update(&met(&soft, &low), at(60)), [soft[0].threshold]);
        // One measurement under the threshold starts the wait over.
        assert!(tracker.update(&met(&soft, &fine), at(70)).is_empty());
        assert!(tracker.update(&met(&soft, &low), at(80)).is_empty());
        assert!(tracker.update(&met(&soft, &low), at(139)).is_empty());
        assert_eq!(tracker.update(&met(&soft, &low), at(140)).len(), 1);
        // A zero grace period acts at once.
        let now = parse_soft("memory.available<1Gi", "memory.available=0s").unwrap();
        assert_eq!(GraceTracker::default().update(&met(&now, &low), at(0)).len(), 1);
    }

    #[test]
    fn soft_evictions_cap_the_pods_grace_period() {
        let pod = |grace: Option<i64>| -> Pod {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "p"},
                "spec": {"terminationGracePeriodSeconds": grace, "containers": []}
            }))
            .unwrap()
        };
        assert_eq!(pod_grace_seconds(&pod(Some(10)), 60, 1), 10);
        assert_eq!(pod_grace_seconds(&pod(Some(120)), 60, 1), 60);
        assert_eq!(pod_grace_seconds(&pod(None), 60, 1), 30);
        // The kubelet's default maximum (0) kills at once (here: after the minimum).
        assert_eq!(pod_grace_seconds(&pod(Some(120)), 0, 1), 1);
    }
}
