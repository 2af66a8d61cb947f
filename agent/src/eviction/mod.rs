//! Node-pressure eviction, as the kubelet's eviction manager does it.
//!
//! Every monitoring interval (10 s) [`EvictionManager`] measures the node's signals
//! ([`observe`]) against the hard thresholds ([`thresholds`], `--eviction-hard`). While a
//! threshold is crossed its condition (MemoryPressure, DiskPressure, PIDPressure) is True, and
//! it stays True until the threshold has not been crossed for the pressure transition period
//! (`--eviction-pressure-transition-period`, 5 m), so the condition does not flap; the
//! heartbeat reports the conditions from [`Pressure`]. While a threshold is crossed, one pod
//! per interval is evicted: the non-critical active pods are ranked ([`rank`]) from their usage
//! ([`usage`]), and the first is handed to its pod worker through [`Evictions`]: the worker
//! kills its containers (1 s grace, the kubelet's for hard thresholds) and reports phase
//! Failed, reason `Evicted`, with the kubelet's message; an `Evicted` event says the same.
//! The pod object stays (its owner replaces it; pod GC removes it later).

pub mod observe;
pub mod rank;
pub mod thresholds;
pub mod usage;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use tokio::sync::watch;

use crate::node::facts::Pressure;
use crate::pods::worker::blocking;
use crate::pods::PodContext;
use rank::Candidate;
use thresholds::{Condition, Threshold};

/// How often signals are measured and at most one pod is evicted.
pub const MONITORING_INTERVAL: Duration = Duration::from_secs(10);
/// The kubelet's default `--eviction-pressure-transition-period`.
pub const PRESSURE_TRANSITION_PERIOD: Duration = Duration::from_secs(300);
/// Grace period of an evicted pod (the kubelet's for hard thresholds).
pub const EVICTION_GRACE_SECONDS: i64 = 1;
/// `status.reason` and the event reason of an evicted pod.
pub const REASON: &str = "Evicted";

/// How the agent evicts.
#[derive(Debug, Clone)]
pub struct EvictionConfig {
    /// The hard thresholds (`--eviction-hard`).
    pub hard: Vec<Threshold>,
    /// How long a pressure condition stays True after its threshold is no longer crossed.
    pub pressure_transition_period: Duration,
    /// How often the signals are measured.
    pub monitoring_interval: Duration,
}

impl Default for EvictionConfig {
    fn default() -> Self {
        EvictionConfig {
            hard: thresholds::defaults(),
            pressure_transition_period: PRESSURE_TRANSITION_PERIOD,
            monitoring_interval: MONITORING_INTERVAL,
        }
    }
}

impl EvictionConfig {
    /// Applies `--eviction-hard` and `--eviction-pressure-transition-period`, when given.
    pub fn apply_flags(
        &mut self,
        hard: Option<&str>,
        transition: Option<&str>,
    ) -> Result<(), String> {
        if let Some(text) = hard {
            self.hard =
                thresholds::parse_hard(text).map_err(|e| format!("--eviction-hard: {e}"))?;
        }
        if let Some(text) = transition {
            self.pressure_transition_period = thresholds::parse_duration(text)
                .map_err(|e| format!("--eviction-pressure-transition-period: {e}"))?;
        }
        Ok(())
    }

    /// The bytes held back from allocatable for the hard `memory.available` and
    /// `nodefs.available` thresholds, on a node of `memory` and `disk` bytes.
    pub fn reservation(&self, memory: u64, disk: u64) -> (u64, u64) {
        let find = |signal, capacity: u64| {
            self.hard
                .iter()
                .find(|t| t.signal == signal)
                .map_or(0, |t| t.quantity(capacity as i64).max(0) as u64)
        };
        (
            find(thresholds::Signal::MemoryAvailable, memory),
            find(thresholds::Signal::NodeFsAvailable, disk),
        )
    }
}

/// Pods the eviction manager chose, for their workers to carry out (cheap to clone).
#[derive(Debug, Clone, Default)]
pub struct Evictions(Arc<Mutex<HashMap<String, (String, bool)>>>);

impl Evictions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (String, bool)>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Orders the eviction of pod `uid` with `message`.
    pub fn request(&self, uid: &str, message: String) {
        self.lock().entry(uid.to_string()).or_insert((message, false));
    }

    /// The message of an eviction ordered for `uid` and not yet taken (the worker's call:
    /// it answers once).
    pub fn take(&self, uid: &str) -> Option<String> {
        let mut map = self.lock();
        let (message, taken) = map.get_mut(uid)?;
        if *taken {
            return None;
        }
        *taken = true;
        Some(message.clone())
    }

    /// Whether pod `uid` was chosen already.
    pub fn contains(&self, uid: &str) -> bool {
        self.lock().contains_key(uid)
    }

    /// Forgets pods that are no longer on the node.
    fn retain(&self, uids: &HashSet<String>) {
        self.lock().retain(|uid, _| uids.contains(uid));
    }
}

/// When each condition's threshold was last seen crossed; a condition is True while that is
/// less than the transition period ago.
#[derive(Debug, Default)]
struct PressureTracker {
    last_met: HashMap<Condition, Instant>,
}

impl PressureTracker {
    fn update(&mut self, met: &[Threshold], period: Duration, now: Instant) -> Pressure {
        for t in met {
            self.last_met.insert(t.signal.condition(), now);
        }
        let on = |c| {
            met.iter().any(|t| t.signal.condition() == c)
                || self
                    .last_met
                    .get(&c)
                    .is_some_and(|at| now.saturating_duration_since(*at) < period)
        };
        Pressure {
            memory: on(Condition::MemoryPressure),
            disk: on(Condition::DiskPressure),
            pids: on(Condition::PidPressure),
        }
    }
}

/// The crossed thresholds among `hard`, given the observations.
pub fn thresholds_met(hard: &[Threshold], o: &observe::Observations) -> Vec<Threshold> {
    hard.iter()
        .filter(|t| o.get(t.signal).is_some_and(|v| t.is_met(v.available, v.capacity)))
        .copied()
        .collect()
}

/// Measures, reports pressure and evicts.
pub struct EvictionManager {
    ctx: Arc<PodContext>,
    config: EvictionConfig,
    pressure: watch::Sender<Pressure>,
    tracker: PressureTracker,
    usage: Arc<usage::UsageReader>,
}

impl EvictionManager {
    /// A manager of `ctx`'s pods publishing the pressure conditions on `pressure`.
    pub fn new(
        ctx: Arc<PodContext>,
        config: EvictionConfig,
        pressure: watch::Sender<Pressure>,
    ) -> EvictionManager {
        let usage = usage::UsageReader::new(ctx.runtime.clone(), ctx.images.root(), &ctx.data_dir);
        EvictionManager {
            ctx,
            config,
            pressure,
            tracker: PressureTracker::default(),
            usage: Arc::new(usage),
        }
    }

    /// Runs until `shutdown` flips.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        tracing::info!(
            thresholds = %self.config.hard.iter().map(ToString::to_string).collect::<Vec<_>>().join(","),
            "eviction manager started"
        );
        let mut tick = tokio::time::interval(self.config.monitoring_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            if let Err(err) = self.synchronize().await {
                tracing::warn!(%err, "eviction manager");
            }
        }
    }

    /// One pass: measure, update the conditions, evict at most one pod.
    async fn synchronize(&mut self) -> Result<(), String> {
        let version = self.ctx.runtime.cgroups().version();
        let (data_dir, images) = (self.ctx.data_dir.clone(), self.ctx.images.root().to_path_buf());
        let observations = blocking(move || observe::observe(version, &data_dir, &images)).await?;
        let mut met = thresholds_met(&self.config.hard, &observations);
        let pressure =
            self.tracker.update(&met, self.config.pressure_transition_period, Instant::now());
        self.pressure.send_if_modified(|p| std::mem::replace(p, pressure) != pressure);
        let pods = self.ctx.cache.run(|c| c.pods()).await.map_err(|e| e.to_string())?;
        let uids: HashSet<String> = pods.iter().filter_map(|p| p.metadata.uid.clone()).collect();
        self.ctx.evictions.retain(&uids);
        thresholds::by_eviction_priority(&mut met);
        let Some(threshold) = met.first().copied() else { return Ok(()) };
        let resource = threshold.signal.resource();
        let observed = observations.get(threshold.signal);
        tracing::info!(
            threshold = %threshold,
            available = ?observed.map(|o| o.available),
            "eviction threshold met; looking for a pod to evict"
        );
        let active: Vec<Pod> = pods.into_iter().filter(|p| self.may_evict(p)).collect();
        if active.is_empty() {
            tracing::info!(threshold = %threshold, "no pod to evict");
            return Ok(());
        }
        let disk =
            resource != thresholds::Resource::Memory && resource != thresholds::Resource::Pids;
        let reader = self.usage.clone();
        let listed = active.clone();
        let mut stats = blocking(move || reader.collect(&listed, disk)).await?;
        let mut candidates: Vec<Candidate> = active
            .into_iter()
            .map(|pod| {
                let stats = pod.metadata.uid.as_deref().and_then(|u| stats.remove(u));
                Candidate { pod, stats }
            })
            .collect();
        rank::rank(resource, &mut candidates);
        let victim = &candidates[0];
        let info = observed.map(|o| {
            let available = thresholds::format_quantity(o.available, resource.is_bytes());
            (threshold.quantity_text(o.capacity), available)
        });
        let message = rank::message(resource, &victim.pod, victim.stats.as_ref(), info);
        let uid = victim.pod.metadata.uid.clone().unwrap_or_default();
        tracing::info!(
            pod = %format!("{}/{}", victim.pod.metadata.namespace.as_deref().unwrap_or_default(),
                victim.pod.metadata.name.as_deref().unwrap_or_default()),
            %message,
            "evicting a pod"
        );
        self.ctx.events.warning(&victim.pod, None, REASON, message.clone());
        self.ctx.evictions.request(&uid, message);
        Ok(())
    }

    /// Active, non-critical pods not chosen already: not finished, not being deleted.
    fn may_evict(&self, pod: &Pod) -> bool {
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        let uid = pod.metadata.uid.as_deref().unwrap_or_default();
        !matches!(phase, Some("Succeeded" | "Failed"))
            && pod.metadata.deletion_timestamp.is_none()
            && !uid.is_empty()
            && !self.ctx.evictions.contains(uid)
            && !rank::is_critical(pod)
    }
}

#[cfg(test)]
mod tests {
    use super::observe::{Observation, Observations};
    use super::*;

    #[test]
    fn pressure_stays_for_the_transition_period() {
        let hard = thresholds::parse_hard("memory.available<1Gi,nodefs.available<10%").unwrap();
        let low = Observations {
            memory: Some(Observation { available: 512 << 20, capacity: 8 << 30 }),
            nodefs: Some(Observation { available: 50, capacity: 100 }),
            ..Default::default()
        };
        let fine = Observations {
            memory: Some(Observation { available: 4 << 30, capacity: 8 << 30 }),
            nodefs: Some(Observation { available: 50, capacity: 100 }),
            ..Default::default()
        };
        let met = thresholds_met(&hard, &low);
        assert_eq!(met.len(), 1);
        let mut tracker = PressureTracker::default();
        let t0 = Instant::now();
        let period = Duration::from_secs(300);
        let on = tracker.update(&met, period, t0);
        assert_eq!(on, Pressure { memory: true, disk: false, pids: false });
        // Relieved, but within the transition period: still True.
        let none = thresholds_met(&hard, &fine);
        assert!(none.is_empty());
        assert!(tracker.update(&none, period, t0 + Duration::from_secs(299)).memory);
        assert!(!tracker.update(&none, period, t0 + Duration::from_secs(300)).memory);
        // A zero period follows the measurement.
        let mut tracker = PressureTracker::default();
        assert!(tracker.update(&met, Duration::ZERO, t0).memory);
        assert!(!tracker.update(&none, Duration::ZERO, t0).memory);
    }

    #[test]
    fn an_eviction_is_taken_once_and_forgotten_with_its_pod() {
        let e = Evictions::default();
        e.request("u1", "low".into());
        assert!(e.contains("u1"));
        assert_eq!(e.take("u1").as_deref(), Some("low"));
        assert_eq!(e.take("u1"), None);
        assert!(e.contains("u1"));
        e.retain(&HashSet::new());
        assert!(!e.contains("u1"));
    }

    #[test]
    fn allocatable_holds_back_the_memory_and_nodefs_thresholds() {
        let config = EvictionConfig::default();
        assert_eq!(config.reservation(1 << 30, 1000), (100 << 20, 100));
        let none = EvictionConfig { hard: Vec::new(), ..EvictionConfig::default() };
        assert_eq!(none.reservation(1 << 30, 1000), (0, 0));
    }
}
