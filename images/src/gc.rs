//! Image garbage collection by disk pressure, like the kubelet's image GC: when the store's
//! file system is more than `high_percent` full, images no container uses are removed, least
//! recently used first, each followed by a prune of the content only it referenced, until usage
//! drops under `low_percent` (defaults 85 % / 80 %). Reference counts are computed by marking
//! from image records and container leases, so a crash can never leave a count wrong.

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
        let mut report = GcReport { usage_before: usage()?, ..Default::default() };
        report.usage_after = report.usage_before;
        if report.usage_before < policy.high_percent {
            return Ok(report);
        }
        let in_use: Vec<String> = self.leases()?.into_iter().map(|l| l.image_digest).collect();
        let mut candidates: Vec<_> =
            self.list()?.into_iter().filter(|i| !in_use.contains(&i.digest)).collect();
        candidates.sort_by_key(|i| (i.last_used_unix.max(i.created_unix), i.name.clone()));
        for image in candidates {
            if report.usage_after < policy.low_percent {
                break;
            }
            match self.remove(&image.name).await {
                Ok(()) => report.removed_images.push(image.name),
                Err(e) => {
                    tracing::warn!(image = %image.name, error = %e, "image GC could not remove")
                }
            }
            report.usage_after = usage()?;
        }
        report.pruned = self.prune().await?;
        report.usage_after = usage()?;
        Ok(report)
    }
}
