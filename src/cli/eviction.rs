//! The node-pressure eviction and image garbage collection flags of an agent: `skerry agent`
//! and the embedded agent of `skerry server` take the same ones (and `/etc/skerry/config.yaml`
//! the same keys), with the kubelet's names and syntax.

use clap::Args;

/// Eviction and image GC flags.
#[derive(Args, Debug, Clone, Default)]
pub struct EvictionArgs {
    /// Hard eviction thresholds, the kubelet's syntax: `memory.available<100Mi,nodefs.available<10%`
    /// (signals: memory.available, nodefs.available, nodefs.inodesFree, imagefs.available,
    /// imagefs.inodesFree, pid.available). Replaces the defaults as a whole.
    #[arg(long)]
    pub eviction_hard: Option<String>,
    /// How long a pressure condition stays True after its threshold is no longer crossed
    /// (default `5m`).
    #[arg(long)]
    pub eviction_pressure_transition_period: Option<String>,
    /// Soft eviction thresholds (the `--eviction-hard` syntax): a pod is evicted only after the
    /// signal stayed past its threshold for the grace period given in --eviction-soft-grace-period.
    #[arg(long)]
    pub eviction_soft: Option<String>,
    /// Grace periods of the soft thresholds, `memory.available=1m30s,nodefs.available=2m`
    /// (one per soft threshold).
    #[arg(long)]
    pub eviction_soft_grace_period: Option<String>,
    /// The longest grace period (seconds) a pod evicted for a soft threshold gets (default 0).
    #[arg(long)]
    pub eviction_max_pod_grace_period: Option<String>,
    /// Image file system usage (percent) at which unused images are removed (default 85;
    /// 100 turns image garbage collection off).
    #[arg(long)]
    pub image_gc_high_threshold: Option<String>,
    /// Image garbage collection removes images until usage is under this percent (default 80).
    #[arg(long)]
    pub image_gc_low_threshold: Option<String>,
    /// Images pulled, imported or used more recently than this are never collected (default 2m).
    #[arg(long)]
    pub minimum_image_gc_age: Option<String>,
}

impl EvictionArgs {
    /// Each flag given, else the same key of `fallback` (the config file).
    pub fn or(self, fallback: EvictionArgs) -> EvictionArgs {
        EvictionArgs {
            eviction_hard: self.eviction_hard.or(fallback.eviction_hard),
            eviction_pressure_transition_period: self
                .eviction_pressure_transition_period
                .or(fallback.eviction_pressure_transition_period),
            eviction_soft: self.eviction_soft.or(fallback.eviction_soft),
            eviction_soft_grace_period: self
                .eviction_soft_grace_period
                .or(fallback.eviction_soft_grace_period),
            eviction_max_pod_grace_period: self
                .eviction_max_pod_grace_period
                .or(fallback.eviction_max_pod_grace_period),
            image_gc_high_threshold: self
                .image_gc_high_threshold
                .or(fallback.image_gc_high_threshold),
            image_gc_low_threshold: self.image_gc_low_threshold.or(fallback.image_gc_low_threshold),
            minimum_image_gc_age: self.minimum_image_gc_age.or(fallback.minimum_image_gc_age),
        }
    }

    /// Applies the flags given to `config`, checked as the kubelet checks them.
    pub fn apply(&self, config: &mut skerry_agent::eviction::EvictionConfig) -> anyhow::Result<()> {
        config
            .apply_flags(skerry_agent::eviction::EvictionFlags {
                hard: self.eviction_hard.as_deref(),
                soft: self.eviction_soft.as_deref(),
                soft_grace_period: self.eviction_soft_grace_period.as_deref(),
                max_pod_grace_period: self.eviction_max_pod_grace_period.as_deref(),
                pressure_transition_period: self.eviction_pressure_transition_period.as_deref(),
                image_gc_high_threshold: self.image_gc_high_threshold.as_deref(),
                image_gc_low_threshold: self.image_gc_low_threshold.as_deref(),
                minimum_image_gc_age: self.minimum_image_gc_age.as_deref(),
            })
            .map_err(anyhow::Error::msg)
    }
}
