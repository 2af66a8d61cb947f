//! Node-pressure eviction, as the kubelet's eviction manager does it.
//!
//! Every monitoring interval (10 s) [`EvictionManager`] measures the node's signals
//! ([`observe`]) against the hard thresholds ([`thresholds`], `--eviction-hard`) and the soft
//! ones ([`soft`], `--eviction-soft`). While a threshold is crossed its condition
//! (MemoryPressure, DiskPressure, PIDPressure) is True, and it stays True until the threshold
//! has not been crossed for the pressure transition period
//! (`--eviction-pressure-transition-period`, 5 m), so the condition does not flap; the
//! heartbeat reports the conditions from [`Pressure`], and pod workers consult them before
//! starting a new pod ([`admission`]). While a hard threshold is crossed, or a soft one has
//! been for its grace period, one pod per interval is evicted — for disk, only once removing
//! unused images ([`reclaim`]) did not free enough: the non-critical active pods are ranked
//! ([`rank`]) from their usage ([`usage`]), and the first is handed to its pod worker through
//! [`Evictions`]: the worker kills its containers (1 s grace for hard thresholds, the pod's
//! own capped by `--eviction-max-pod-grace-period` for soft ones) and reports phase Failed,
//! reason `Evicted`, with the kubelet's message; an `Evicted` event says the same. The pod
//! object stays (its owner replaces it; pod GC removes it later). The periodic image GC
//! ([`reclaim::run_image_gc`]) runs beside the manager.

pub mod admission;
pub mod observe;
pub mod rank;
pub mod reclaim;
pub mod soft;
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
use reclaim::ImageGcPolicy;
use soft::{GraceTracker, SoftThreshold};
use thresholds::{Condition, Threshold};

/// How often signals are measured and at most one pod is evicted.
pub const MONITORING_INTERVAL: Duration = Duration::from_secs(10);
/// The kubelet's default `--eviction-pressure-transition-period`.
pub const PRESSURE_TRANSITION_PERIOD: Duration = Duration::from_secs(300);
/// Grace period of a pod evicted for a hard threshold (the least any eviction gives).
pub const EVICTION_GRACE_SECONDS: i64 = 1;
/// `status.reason` and the event reason of an evicted pod.
pub const REASON: &str = "Evicted";

/// How the agent evicts.
#[derive(Debug, Clone)]
pub struct EvictionConfig {
    /// The hard thresholds (`--eviction-hard`).
    pub hard: Vec<Threshold>,
    /// The soft thresholds with their grace periods (`--eviction-soft`,
    /// `--eviction-soft-grace-period`).
    pub soft: Vec<SoftThreshold>,
    /// The longest grace period a pod evicted for a soft threshold gets
    /// (`--eviction-max-pod-grace-period`, seconds).
    pub max_pod_grace_seconds: i64,
    /// The image GC's thresholds (also its minimum image age for disk-pressure reclaim).
    pub image_gc: ImageGcPolicy,
    /// How long a pressure condition stays True after its threshold is no longer crossed.
    pub pressure_transition_period: Duration,
    /// How often the signals are measured.
    pub monitoring_interval: Duration,
}

impl Default for EvictionConfig {
    fn default() -> Self {
        EvictionConfig {
            hard: thresholds::defaults(),
            soft: Vec::new(),
            max_pod_grace_seconds: 0,
            image_gc: ImageGcPolicy::default(),
            pressure_transition_period: PRESSURE_TRANSITION_PERIOD,
            monitoring_interval: MONITORING_INTERVAL,
        }
    }
}

/// The eviction and image GC flags as given (`None`: not given), for
/// [`EvictionConfig::apply_flags`].
#[derive(Debug, Clone, Copy, Default)]
pub struct EvictionFlags<'a> {
    pub hard: Option<&'a str>,
    pub soft: Option<&'a str>,
    pub soft_grace_period: Option<&'a str>,
    pub max_pod_grace_period: Option<&'a str>,
    pub pressure_transition_period: Option<&'a str>,
    pub image_gc_high_threshold: Option<&'a str>,
    pub image_gc_low_threshold: Option<&'a str>,
    pub minimum_image_gc_age: Option<&'a str>,
}

impl EvictionConfig {
    /// Applies the flags that were given, checked as the kubelet checks them.
    pub fn apply_flags(&mut self, flags: EvictionFlags<'_>) -> Result<(), String> {
        if let Some(text) = flags.hard {
            self.hard =
                thresholds::parse_hard(text).map_err(|e| format!("--eviction-hard: {e}"))?;
        }
        if flags.soft.is_some() || flags.soft_grace_period.is_some() {
            self.soft = soft::parse_soft(
                flags.soft.unwrap_or_default(),
                flags.soft_grace_period.unwrap_or_default(),
            )?;
        }
        if let Some(text) = flags.max_pod_grace_period {
            self.max_pod_grace_seconds = text.trim().parse::<i64>().map_err(|_| {
                format!("--eviction-max-pod-grace-period: {text:?}: expected seconds")
            })?;
        }
        if let Some(text) = flags.pressure_transition_period {
            self.pressure_transition_period = thresholds::parse_duration(text)
                .map_err(|e| format!("--eviction-pressure-transition-period: {e}"))?;
        }
        self.image_gc.apply_flags(
            flags.image_gc_high_threshold,
            flags.image_gc_low_threshold,
            flags.minimum_image_gc_age,
        )
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

/// An eviction ordered for one pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Eviction {
    /// `status.message` and the event's message.
    pub message: String,
    /// The grace period its containers get (seconds).
    pub grace_seconds: i64,
}

/// Pods the eviction manager chose, for their workers to carry out (cheap to clone).
#[derive(Debug, Clone, Default)]
pub struct Evictions(Arc<Mutex<HashMap<String, (Eviction, bool)>>>);

impl Evictions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Eviction, bool)>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Orders the eviction of pod `uid`.
    pub fn request(&self, uid: &str, eviction: Eviction) {
        self.lock().entry(uid.to_string()).or_insert((eviction, false));
    }

    /// An eviction ordered for `uid` and not yet taken (the worker's call: it answers once).
    pub fn take(&self, uid: &str) -> Option<Eviction> {
        let mut map = self.lock();
        let (eviction, taken) = map.get_mut(uid)?;
        if *taken {
            return None;
        }
        *taken = true;
        Some(eviction.clone())
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

/// The threshold to act on among the crossed hard ones and the soft ones past their grace
/// period (`true`: soft): memory first, then disk, inodes, PIDs; a hard threshold before a soft
/// one of the same resource (the kubelet lists hard ones first and sorts stably).
pub fn acting(hard: &[Threshold], ripe_soft: &[Threshold]) -> Option<(Threshold, bool)> {
    let mut all: Vec<(Threshold, bool)> =
        hard.iter().map(|t| (*t, false)).chain(ripe_soft.iter().map(|t| (*t, true))).collect();
    all.sort_by_key(|(t, _)| t.signal.priority());
    all.first().copied()
}

/// Measures, reports pressure and evicts.
pub struct EvictionManager {
    ctx: Arc<PodContext>,
    config: EvictionConfig,
    pressure: watch::Sender<Pressure>,
    tracker: PressureTracker,
    grace: GraceTracker,
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
            grace: GraceTracker::default(),
            usage: Arc::new(usage),
        }
    }

    /// Runs until `shutdown` flips.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let soft: Vec<String> = self
            .config
            .soft
            .iter()
            .map(|s| format!("{} for {:?}", s.threshold, s.grace_period))
            .collect();
        tracing::info!(
            thresholds = %self.config.hard.iter().map(ToString::to_string).collect::<Vec<_>>().join(","),
            soft = %soft.join(","),
            "eviction manager started"
        );
        tokio::spawn(reclaim::run_image_gc(
            self.ctx.clone(),
            self.config.image_gc,
            shutdown.clone(),
        ));
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

    /// Measures every signal now.
    async fn observe(&self) -> Result<observe::Observations, String> {
        let version = self.ctx.runtime.cgroups().version();
        let (data_dir, images) = (self.ctx.data_dir.clone(), self.ctx.images.root().to_path_buf());
        blocking(move || observe::observe(version, &data_dir, &images)).await
    }

    /// One pass: measure, update the conditions, evict at most one pod.
    async fn synchronize(&mut self) -> Result<(), String> {
        let observations = self.observe().await?;
        let hard = thresholds_met(&self.config.hard, &observations);
        let soft = soft::met(&self.config.soft, &observations);
        // Conditions follow every crossed threshold, soft ones from their first crossing.
        let crossed: Vec<Threshold> =
            hard.iter().copied().chain(soft.iter().map(|s| s.threshold)).collect();
        let now = Instant::now();
        let pressure = self.tracker.update(&crossed, self.config.pressure_transition_period, now);
        self.pressure.send_if_modified(|p| std::mem::replace(p, pressure) != pressure);
        let pods = self.ctx.cache.run(|c| c.pods()).await.map_err(|e| e.to_string())?;
        let uids: HashSet<String> = pods.iter().filter_map(|p| p.metadata.uid.clone()).collect();
        self.ctx.evictions.retain(&uids);
        let ripe = self.grace.update(&soft, now);
        let Some((threshold, is_soft)) = acting(&hard, &ripe) else { return Ok(()) };
        let resource = threshold.signal.resource();
        if threshold.signal.condition() == Condition::DiskPressure
            && self.reclaim_disk(threshold).await
        {
            return Ok(());
        }
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
        let grace_seconds = if is_soft {
            soft::pod_grace_seconds(
                &victim.pod,
                self.config.max_pod_grace_seconds,
                EVICTION_GRACE_SECONDS,
            )
        } else {
            EVICTION_GRACE_SECONDS
        };
        tracing::info!(
            pod = %format!("{}/{}", victim.pod.metadata.namespace.as_deref().unwrap_or_default(),
                victim.pod.metadata.name.as_deref().unwrap_or_default()),
            %message,
            soft = is_soft,
            grace_seconds,
            "evicting a pod"
        );
        self.ctx.events.warning(&victim.pod, None, REASON, message.clone());
        self.ctx.evictions.request(&uid, Eviction { message, grace_seconds });
        Ok(())
    }

    /// Frees disk without evicting: removes dead containers of finished pods, then unused
    /// images until `threshold` is no longer crossed. Whether that was enough.
    async fn reclaim_disk(&self, threshold: Threshold) -> bool {
        let version = self.ctx.runtime.cgroups().version();
        let (data_dir, images) = (self.ctx.data_dir.clone(), self.ctx.images.root().to_path_buf());
        let relieved = move || {
            let o = observe::observe(version, &data_dir, &images);
            o.get(threshold.signal).is_some_and(|v| !threshold.is_met(v.available, v.capacity))
        };
        match reclaim::remove_dead_containers(&self.ctx).await {
            Ok(n) if n > 0 && relieved() => {
                tracing::info!(
                    threshold = %threshold,
                    containers = n,
                    "removing dead containers relieved the disk pressure; no pod evicted"
                );
                return true;
            }
            Ok(_) => {}
            Err(err) => tracing::warn!(%err, "removing dead containers"),
        }
        match reclaim::reclaim_images(&self.ctx, self.config.image_gc.min_age, relieved.clone())
            .await
        {
            Ok(removed) if !removed.is_empty() && relieved() => {
                tracing::info!(
                    threshold = %threshold,
                    images = removed.len(),
                    "removing unused images relieved the disk pressure; no pod evicted"
                );
                true
            }
            Ok(_) => false,
            Err(err) => {
                tracing::warn!(%err, "reclaiming disk before evicting");
                false
            }
        }
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
        let low = Eviction { message: "low".into(), grace_seconds: 1 };
        e.request("u1", low.clone());
        assert!(e.contains("u1"));
        assert_eq!(e.take("u1"), Some(low));
        assert_eq!(e.take("u1"), None);
        assert!(e.contains("u1"));
        e.retain(&HashSet::new());
        assert!(!e.contains("u1"));
    }

    #[test]
    fn memory_acts_first_and_hard_before_soft() {
        let hard = thresholds::parse_hard("nodefs.available<10%").unwrap();
        let soft = thresholds::parse_hard("memory.available<2Gi,nodefs.available<20%").unwrap();
        assert_eq!(acting(&hard, &soft), Some((soft[0], true)));
        assert_eq!(acting(&hard, &soft[1..]), Some((hard[0], false)));
        assert_eq!(acting(&[], &soft[1..]), Some((soft[1], true)));
        assert_eq!(acting(&[], &[]), None);
    }

    #[test]
    fn soft_thresholds_and_image_gc_come_from_their_flags() {
        let mut config = EvictionConfig::default();
        config
            .apply_flags(EvictionFlags {
                soft: Some("memory.available<1Gi"),
                soft_grace_period: Some("memory.available=30s"),
                max_pod_grace_period: Some("20"),
                image_gc_high_threshold: Some("70"),
                image_gc_low_threshold: Some("60"),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(config.soft.len(), 1);
        assert_eq!(config.soft[0].grace_period, Duration::from_secs(30));
        assert_eq!(config.max_pod_grace_seconds, 20);
        assert_eq!((config.image_gc.high_percent, config.image_gc.low_percent), (70, 60));
        // The hard defaults stay; soft thresholds reserve nothing.
        assert_eq!(config.hard, thresholds::defaults());
        assert_eq!(config.reservation(1 << 30, 1000), (100 << 20, 100));
        let missing_grace =
            EvictionFlags { soft: Some("memory.available<1Gi"), ..Default::default() };
        assert!(EvictionConfig::default().apply_flags(missing_grace).is_err());
        let bad_max = EvictionFlags { max_pod_grace_period: Some("1m"), ..Default::default() };
        assert!(EvictionConfig::default().apply_flags(bad_max).is_err());
    }

    #[test]
    fn allocatable_holds_back_the_memory_and_nodefs_thresholds() {
        let config = EvictionConfig::default();
        assert_eq!(config.reservation(1 << 30, 1000), (100 << 20, 100));
        let none = EvictionConfig { hard: Vec::new(), ..EvictionConfig::default() };
        assert_eq!(none.reservation(1 << 30, 1000), (0, 0));
    }
}
