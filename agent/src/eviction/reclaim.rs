//! Node-level reclaim: what the agent frees before it evicts a pod for disk, and the periodic
//! image garbage collection — the kubelet's image GC manager.
//!
//! - Disk pressure (`nodefs.*` / `imagefs.*` thresholds): before choosing a pod, the eviction
//!   manager removes the dead containers of finished pods (writable layers and logs), then
//!   unused images, least recently used first, until the threshold is no longer crossed; only
//!   if that is not enough is a pod evicted.
//! - Every 5 minutes, when the image file system is at least `--image-gc-high-threshold` percent
//!   used (85), unused images are removed until it is under `--image-gc-low-threshold` (80).
//!   A high threshold of 100 turns this off, as in the kubelet.
//!
//! Never removed: an image a container on the node was made from (the store's root filesystem
//! leases, which exited containers keep until they are removed), an image an active pod on the
//! node names (it may be about to start), and one pulled, imported or used within
//! `--minimum-image-gc-age` (2 m).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use skerry_images::{ImageStore, UnusedImages};
use skerry_runtime::ContainerState;

use crate::pods::naming::parse_container_name;
use crate::pods::worker::blocking;
use crate::pods::PodContext;

/// How often the image GC looks at the image file system.
pub const IMAGE_GC_PERIOD: Duration = Duration::from_secs(300);

/// The image GC's thresholds (the kubelet's flags and defaults).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ImageGcPolicy {
    /// Collect when the image file system is at least this full (percent); 100: never.
    pub high_percent: u8,
    /// Collect down to under this (percent).
    pub low_percent: u8,
    /// Images younger than this (since pulled, imported or last used) are kept.
    pub min_age: Duration,
}

impl Default for ImageGcPolicy {
    fn default() -> Self {
        ImageGcPolicy { high_percent: 85, low_percent: 80, min_age: Duration::from_secs(120) }
    }
}

impl ImageGcPolicy {
    /// Applies `--image-gc-high-threshold`, `--image-gc-low-threshold` and
    /// `--minimum-image-gc-age`, checked as the kubelet checks them.
    pub fn apply_flags(
        &mut self,
        high: Option<&str>,
        low: Option<&str>,
        min_age: Option<&str>,
    ) -> Result<(), String> {
        let percent =
            |flag: &str, text: &str| {
                text.trim().parse::<u8>().ok().filter(|p| *p <= 100).ok_or_else(|| {
                    format!("{flag}: {text:?} must be a whole percentage in [0, 100]")
                })
            };
        if let Some(h) = high {
            self.high_percent = percent("--image-gc-high-threshold", h)?;
        }
        if let Some(l) = low {
            self.low_percent = percent("--image-gc-low-threshold", l)?;
        }
        if self.low_percent >= self.high_percent {
            return Err(format!(
                "--image-gc-low-threshold ({}) must be less than --image-gc-high-threshold ({})",
                self.low_percent, self.high_percent
            ));
        }
        if let Some(age) = min_age {
            self.min_age = super::thresholds::parse_duration(age)
                .map_err(|e| format!("--minimum-image-gc-age: {e}"))?;
        }
        Ok(())
    }

    /// Whether the periodic collection runs at all.
    pub fn enabled(&self) -> bool {
        self.high_percent < 100
    }
}

/// Manifest digests of the images the active (not finished, not deleted) pods name.
pub fn wanted_digests(store: &ImageStore, pods: &[Pod]) -> Vec<String> {
    pods.iter()
        .filter(|p| {
            let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
            !matches!(phase, Some("Succeeded" | "Failed"))
        })
        .filter_map(|p| p.spec.as_ref())
        .flat_map(|s| s.containers.iter().chain(s.init_containers.iter().flatten()))
        .filter_map(|c| store.get(c.image.as_deref()?).ok())
        .map(|i| i.digest)
        .collect()
}

/// What may not be removed now: images of the node's active pods, and young images.
async fn spare(ctx: &PodContext, min_age: Duration) -> Result<UnusedImages, String> {
    let pods = ctx.cache.run(|c| c.pods()).await.map_err(|e| e.to_string())?;
    Ok(UnusedImages { keep_digests: wanted_digests(&ctx.images, &pods), min_age })
}

/// Removes unused images until `enough` (asked before each removal) says so; returns the
/// names removed.
pub async fn reclaim_images(
    ctx: &PodContext,
    min_age: Duration,
    mut enough: impl FnMut() -> bool,
) -> Result<Vec<String>, String> {
    let spare = spare(ctx, min_age).await?;
    let report = ctx
        .images
        .remove_unused(&spare, || Ok(enough()))
        .await
        .map_err(|e| format!("removing unused images: {e}"))?;
    for name in &report.removed_images {
        tracing::info!(image = %name, "image garbage collection removed an unused image");
    }
    Ok(report.removed_images)
}

/// Removes the exited containers of finished (Succeeded or Failed) pods — runtime state,
/// writable layer and log — as the kubelet's container GC does under disk pressure; their
/// images become collectable. Returns how many went.
pub async fn remove_dead_containers(ctx: &PodContext) -> Result<usize, String> {
    let pods = ctx.cache.run(|c| c.pods()).await.map_err(|e| e.to_string())?;
    let finished: HashSet<String> = pods
        .iter()
        .filter(|p| {
            let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
            matches!(phase, Some("Succeeded" | "Failed"))
        })
        .filter_map(|p| p.metadata.uid.clone())
        .collect();
    let runtime = ctx.runtime.clone();
    let dead: Vec<_> = blocking(move || runtime.list_containers())
        .await?
        .into_iter()
        .filter(|c| matches!(c.state, ContainerState::Exited))
        .filter(|c| parse_container_name(&c.name).is_some_and(|(uid, _, _)| finished.contains(uid)))
        .collect();
    for c in &dead {
        tracing::info!(container = %c.name, "disk pressure: removing a finished pod's container");
        ctx.remove_instance(c).await;
        let _ = std::fs::remove_file(&c.log_path);
    }
    Ok(dead.len())
}

/// One periodic image collection: above the high threshold, down to under the low one.
pub async fn collect_images(ctx: &PodContext, policy: ImageGcPolicy) -> Result<(), String> {
    let root = ctx.images.root().to_path_buf();
    let usage = || skerry_images::disk_usage_percent(&root).map_err(|e| e.to_string());
    let before = usage()?;
    if !policy.enabled() || before < f64::from(policy.high_percent) {
        return Ok(());
    }
    tracing::info!(
        usage_percent = before,
        high = policy.high_percent,
        low = policy.low_percent,
        "image file system above the GC threshold: removing unused images"
    );
    let low = f64::from(policy.low_percent);
    // An unreadable file system stops the collection rather than emptying the store.
    let removed = reclaim_images(ctx, policy.min_age, || usage().map_or(true, |u| u < low)).await?;
    let after = usage()?;
    if after >= low {
        tracing::warn!(
            usage_percent = after,
            removed = removed.len(),
            "image garbage collection could not get under the low threshold"
        );
    }
    Ok(())
}

/// The periodic image GC, every [`IMAGE_GC_PERIOD`] (first right away) until `shutdown`.
pub async fn run_image_gc(
    ctx: Arc<PodContext>,
    policy: ImageGcPolicy,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    if !policy.enabled() {
        return;
    }
    let mut tick = tokio::time::interval(IMAGE_GC_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        if let Err(err) = collect_images(&ctx, policy).await {
            tracing::warn!(%err, "image garbage collection");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_gc_flags_are_checked_like_the_kubelets() {
        let mut p = ImageGcPolicy::default();
        assert!(p.enabled());
        p.apply_flags(Some("90"), Some("70"), Some("30s")).unwrap();
        assert_eq!(
            p,
            ImageGcPolicy { high_percent: 90, low_percent: 70, min_age: Duration::from_secs(30) }
        );
        for (high, low) in [("101", "80"), ("85", "-1"), ("80", "80"), ("50", "60"), ("x", "1")] {
            let mut p = ImageGcPolicy::default();
            assert!(p.apply_flags(Some(high), Some(low), None).is_err(), "{high} {low}");
        }
        let mut off = ImageGcPolicy::default();
        off.apply_flags(Some("100"), None, None).unwrap();
        assert!(!off.enabled());
    }
}
