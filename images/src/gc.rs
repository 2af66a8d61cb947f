//! Image garbage collection by disk pressure, like the kubelet's image GC: when the store's
//! file system is more than `high_percent` full, images no container uses are removed, least
//! recently used first, each followed by a prune of the content only it referenced, until usage
//! drops under `low_percent` (defaults 85 % / 80 %). Reference counts are computed by marking
//! from image records and container leases, so a crash can never leave a count wrong.
//! [`ImageStore::remove_unused`] is the step underneath, for callers with their own stopping
//! rule (the node agent's disk-pressure reclaim) and images to spare (those its pods name, and
//! young ones).

use std::path::Path;

use crate::error::{ImageError, Result};
use crate::store::{ImageStore, PruneReport};

/// Disk thresholds for [`ImageStore::gc`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GcPolicy {
    /// Start collecting above this usage (percent of the file system).
    pub high_percent: f64,
    /// Stop once usage is below this.
    pub low_percent: f64,
}

impl Default for GcPolicy {
    fn default() -> Self {
        GcPolicy { high_percent: 85.0, low_percent: 80.0 }
    }
}

/// What a collection did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GcReport {
    /// Usage when it started (percent).
    pub usage_before: f64,
    /// Usage when it ended (percent).
    pub usage_after: f64,
    /// Image names removed, in order.
    pub removed_images: Vec<String>,
    /// Content deleted.
    pub pruned: PruneReport,
}

/// Percentage of the file system holding `path` that is used (as `df` shows it).
pub fn disk_usage_percent(path: &Path) -> Result<f64> {
    let st = rustix::fs::statvfs(path).map_err(|e| ImageError::io("statvfs", path, e.into()))?;
    let total = st.f_blocks as f64;
    if total == 0.0 {
        return Ok(0.0);
    }
    let used = (st.f_blocks - st.f_bfree) as f64;
    let avail = st.f_bavail as f64;
    Ok(100.0 * used / (used + avail).max(1.0))
}

impl ImageStore {
    /// Collects unused images while the store's file system is above the policy's threshold.
    pub async fn gc(&self, policy: GcPolicy) -> Result<GcReport> {
        let root = self.root().to_path_buf();
        self.gc_with_usage(policy, move || disk_usage_percent(&root)).await
    }

    /// [`ImageStore::gc`] with the usage measured by `usage` (another volume, or a test).
    pub async fn gc_with_usage(
        &self,
        policy: GcPolicy,
        usage: impl Fn() -> Result<f64>,
    ) -> Result<GcReport> {
        let usage_before = usage()?;
        if usage_before < policy.high_percent {
            return Ok(GcReport { usage_before, usage_after: usage_before, ..Default::default() });
        }
        let spare = UnusedImages::default();
        let mut report = self.remove_unused(&spare, || Ok(usage()? < policy.low_percent)).await?;
        report.usage_before = usage_before;
        report.usage_after = usage()?;
        Ok(report)
    }

    /// Removes images no container root filesystem uses and `spare` does not protect, least
    /// recently used first (then by name), until `enough` says so (asked before each removal),
    /// then prunes content nothing references. The node agent's image GC and its disk-pressure
    /// reclaim both come here; the usage fields of the report are left at zero.
    pub async fn remove_unused(
        &self,
        spare: &UnusedImages,
        mut enough: impl FnMut() -> Result<bool>,
    ) -> Result<GcReport> {
        let mut report = GcReport::default();
        let in_use: Vec<String> = self.leases()?.into_iter().map(|l| l.image_digest).collect();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut candidates: Vec<_> = self
            .list()?
            .into_iter()
            .filter(|i| !in_use.contains(&i.digest) && !spare.keep_digests.contains(&i.digest))
            // Images pulled or used within the minimum age stay (a pod may be about to use it).
            .filter(|i| {
                now.saturating_sub(i.last_used_unix.max(i.created_unix)) >= spare.min_age.as_secs()
            })
            .collect();
        candidates.sort_by_key(|i| (i.last_used_unix.max(i.created_unix), i.name.clone()));
        for image in candidates {
            if enough()? {
                break;
            }
            match self.remove(&image.name).await {
                Ok(()) => report.removed_images.push(image.name),
                Err(e) => {
                    tracing::warn!(image = %image.name, error = %e, "image GC could not remove")
                }
            }
        }
        report.pruned = self.prune().await?;
        Ok(report)
    }
}

/// What [`ImageStore::remove_unused`] spares besides images in use by a container.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UnusedImages {
    /// Manifest digests to keep (e.g. images of pods about to start).
    pub keep_digests: Vec<String>,
    /// Images registered or last used more recently than this are kept.
    pub min_age: std::time::Duration,
}
