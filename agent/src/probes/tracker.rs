//! The per-container probe state machine of kubelet's prober worker (`worker.doProbe`):
//! initial results (readiness starts failed, liveness succeeded, startup unknown), the delay
//! before the first probe, liveness/readiness gated on startup, thresholds, and the hold after a
//! liveness/startup failure until the container is replaced.
//!
//! It keeps no clock: the caller runs the probe every [`ProbeTiming::period`], tells
//! [`ProbeTracker::should_probe`] how long the container has run, and feeds outcomes to
//! [`ProbeTracker::record`].

use std::time::Duration;

use k8s_openapi::api::core::v1::Probe;

use super::{ProbeKind, ProbeOutcome, ProbeResult};

/// A probe's timing with kubelet's defaults for absent (or out-of-range) fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbeTiming {
    /// `initialDelaySeconds` (default 0).
    pub initial_delay: Duration,
    /// `periodSeconds` (default 10).
    pub period: Duration,
    /// `timeoutSeconds` (default 1).
    pub timeout: Duration,
    /// `successThreshold` (default 1).
    pub success_threshold: u32,
    /// `failureThreshold` (default 3).
    pub failure_threshold: u32,
}

impl ProbeTiming {
    /// The timing of `probe`.
    pub fn of(probe: &Probe) -> Self {
        let positive = |v: Option<i32>, default: u32| {
            v.and_then(|v| u32::try_from(v).ok()).filter(|v| *v >= 1).unwrap_or(default)
        };
        let seconds =
            |v: Option<i32>, default: u32| Duration::from_secs(positive(v, default).into());
        Self {
            initial_delay: Duration::from_secs(
                probe.initial_delay_seconds.and_then(|v| u64::try_from(v).ok()).unwrap_or(0),
            ),
            period: seconds(probe.period_seconds, 10),
            timeout: seconds(probe.timeout_seconds, 1),
            success_threshold: positive(probe.success_threshold, 1),
            failure_threshold: positive(probe.failure_threshold, 3),
        }
    }
}

/// The published result of a probe (kubelet's `results.Result`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeState {
    Unknown,
    Success,
    Failure,
}

/// One probe of one container.
#[derive(Clone, Debug)]
pub struct ProbeTracker {
    kind: ProbeKind,
    timing: ProbeTiming,
    state: ProbeState,
    last: Option<ProbeState>,
    run: u32,
    on_hold: bool,
}

impl ProbeTracker {
    /// A tracker for `probe` of kind `kind`, in its initial state.
    pub fn new(kind: ProbeKind, probe: &Probe) -> Self {
        let mut timing = ProbeTiming::of(probe);
        if kind != ProbeKind::Readiness {
            // The API requires 1 for liveness and startup; enforce it rather than trust it.
            timing.success_threshold = 1;
        }
        Self { kind, timing, state: initial(kind), last: None, run: 0, on_hold: false }
    }

    /// The probe's timing.
    pub fn timing(&self) -> &ProbeTiming {
        &self.timing
    }

    /// The published result.
    pub fn state(&self) -> ProbeState {
        self.state
    }

    /// A new container instance replaced the probed one: back to the initial state, probing
    /// resumes. Returns the new state when that changed the published result.
    pub fn reset(&mut self) -> Option<ProbeState> {
        let before = self.state;
        self.state = initial(self.kind);
        self.last = None;
        self.run = 0;
        self.on_hold = false;
        (self.state != before).then_some(self.state)
    }

    /// Whether to probe now: not during the initial delay, not while on hold after a
    /// liveness/startup failure, startup probes only until the container has started and the
    /// others only after.
    pub fn should_probe(&self, running_for: Duration, started: bool) -> bool {
        if self.on_hold || running_for < self.timing.initial_delay {
            return false;
        }
        match self.kind {
            ProbeKind::Startup => !started,
            _ => started,
        }
    }

    /// Feeds one outcome; returns the new published state when it changed. Unknown outcomes
    /// (probe errors) are discarded, as kubelet does.
    pub fn record(&mut self, outcome: &ProbeOutcome) -> Option<ProbeState> {
        let result = match outcome.result {
            ProbeResult::Success | ProbeResult::Warning => ProbeState::Success,
            ProbeResult::Failure => ProbeState::Failure,
            ProbeResult::Unknown => return None,
        };
        if self.last == Some(result) {
            self.run = self.run.saturating_add(1);
        } else {
            self.last = Some(result);
            self.run = 1;
        }
        let threshold = match result {
            ProbeState::Failure => self.timing.failure_threshold,
            _ => self.timing.success_threshold,
        };
        if self.run < threshold {
            return None;
        }
        let changed = self.state != result;
        self.state = result;
        if result == ProbeState::Failure && self.kind != ProbeKind::Readiness {
            // The container will be restarted: stop probing it until it is replaced.
            self.on_hold = true;
            self.run = 0;
        }
        changed.then_some(result)
    }
}

fn initial(kind: ProbeKind) -> ProbeState {
    match kind {
        ProbeKind::Readiness => ProbeState::Failure,
        ProbeKind::Liveness => ProbeState::Success,
        ProbeKind::Startup => ProbeState::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(result: ProbeResult) -> ProbeOutcome {
        ProbeOutcome { result, output: String::new() }
    }

    fn probe(json: serde_json::Value) -> Probe {
        serde_json::from_value(json).expect("probe json")
    }

    #[test]
    fn absent_fields_take_kubelets_defaults() {
        let t = ProbeTiming::of(&Probe::default());
        assert_eq!(t.initial_delay, Duration::ZERO);
        assert_eq!(t.period, Duration::from_secs(10));
        assert_eq!(t.timeout, Duration::from_secs(1));
        assert_eq!((t.success_threshold, t.failure_threshold), (1, 3));
        let t =
            ProbeTiming::of(&probe(serde_json::json!({"periodSeconds": 0, "timeoutSeconds": -1})));
        assert_eq!((t.period, t.timeout), (Duration::from_secs(10), Duration::from_secs(1)));
    }

    #[test]
    fn readiness_needs_success_threshold_runs_and_flips_back_after_failures() {
        let p = probe(serde_json::json!({"successThreshold": 2, "failureThreshold": 2}));
        let mut t = ProbeTracker::new(ProbeKind::Readiness, &p);
        assert_eq!(t.state(), ProbeState::Failure, "readiness starts not ready");
        assert_eq!(t.record(&outcome(ProbeResult::Success)), None);
        assert_eq!(t.record(&outcome(ProbeResult::Unknown)), None, "errors are discarded");
        assert_eq!(t.record(&outcome(ProbeResult::Warning)), Some(ProbeState::Success));
        assert_eq!(t.record(&outcome(ProbeResult::Success)), None, "no transition, no report");
        assert_eq!(t.record(&outcome(ProbeResult::Failure)), None);
        assert_eq!(
            t.record(&outcome(ProbeResult::Success)),
            None,
            "a success breaks the failure run"
        );
        assert_eq!(t.record(&outcome(ProbeResult::Failure)), None);
        assert_eq!(t.record(&outcome(ProbeResult::Failure)), Some(ProbeState::Failure));
        assert!(
            t.should_probe(Duration::from_secs(100), true),
            "readiness keeps probing after failing"
        );
    }

    #[test]
    fn liveness_fails_after_failure_threshold_then_holds_until_reset() {
        let p = probe(serde_json::json!({"initialDelaySeconds": 5}));
        let mut t = ProbeTracker::new(ProbeKind::Liveness, &p);
        assert_eq!(t.state(), ProbeState::Success);
        assert!(!t.should_probe(Duration::from_secs(4), true), "initial delay");
        assert!(!t.should_probe(Duration::from_secs(6), false), "waits for startup");
        assert!(t.should_probe(Duration::from_secs(6), true));
        assert_eq!(t.record(&outcome(ProbeResult::Failure)), None);
        assert_eq!(t.record(&outcome(ProbeResult::Failure)), None);
        assert_eq!(t.record(&outcome(ProbeResult::Failure)), Some(ProbeState::Failure));
        assert!(!t.should_probe(Duration::from_secs(60), true), "on hold until restarted");
        assert_eq!(t.reset(), Some(ProbeState::Success));
        assert!(t.should_probe(Duration::from_secs(6), true));
        assert_eq!(t.timing().initial_delay, Duration::from_secs(5), "reset keeps the timing");
    }

    #[test]
    fn startup_probes_run_only_until_started() {
        let mut t = ProbeTracker::new(
            ProbeKind::Startup,
            &probe(serde_json::json!({"failureThreshold": 30})),
        );
        assert_eq!(t.state(), ProbeState::Unknown);
        assert!(t.should_probe(Duration::ZERO, false));
        assert_eq!(t.record(&outcome(ProbeResult::Success)), Some(ProbeState::Success));
        assert!(!t.should_probe(Duration::from_secs(1), true));
    }
}
