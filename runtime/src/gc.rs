//! Startup garbage collection: undoes what a crash in the middle of an operation left behind —
//! a sandbox whose creation never finished (its mounts, network and cgroup), a container dir
//! without a record, the files of removed containers not yet deleted (`trash.rs`), pod cgroups
//! under the runtime's root that no sandbox owns. Live sandboxes and containers (running or
//! exited) are kept: they are re-adopted, not collected.

use crate::error::Result;
use crate::runtime::Runtime;
use crate::state::{self, SandboxRecord};

/// What a garbage collection removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GcReport {
    /// Half-created sandboxes torn down.
    pub sandboxes: Vec<String>,
    /// Container dirs without a record, and removed containers' dirs left in the trash, deleted.
    pub containers: Vec<String>,
    /// Orphaned pod cgroups removed.
    pub cgroups: Vec<String>,
}

impl GcReport {
    /// Nothing was collected.
    pub fn is_empty(&self) -> bool {
        self.sandboxes.is_empty() && self.containers.is_empty() && self.cgroups.is_empty()
    }
}

impl Runtime {
    /// Removes crash leftovers (see the module doc). Runs at `open`; safe to run any time.
    pub fn garbage_collect(&self) -> Result<GcReport> {
        let _lock = self.lock()?;
        let mut report = GcReport::default();
        for id in self.state.container_ids() {
            let dir = self.state.container_dir(&id);
            if !dir.join("container.json").exists() {
                let _ = std::fs::remove_dir_all(&dir);
                report.containers.push(id);
            }
        }
        for id in self.state.removed_ids() {
            crate::trash::delete(&self.state.removed_dir(&id));
            report.containers.push(id);
        }
        let mut live_pods = Vec::new();
        for id in self.state.sandbox_ids() {
            let dir = self.state.sandbox_dir(&id);
            match state::read_json::<SandboxRecord>(&dir.join("sandbox.json")) {
                Ok(Some(record)) if record.ready => live_pods.push(record.cgroup_path),
                Ok(Some(record)) => {
                    self.destroy_sandbox(&record)?;
                    report.sandboxes.push(id);
                }
                Ok(None) | Err(_) => {
                    crate::sandbox::destroy(&dir)?;
                    report.sandboxes.push(id);
                }
            }
        }
        for pod in self.tree.list_pods() {
            if !live_pods.contains(&pod) && self.tree.remove(&pod).is_ok() {
                report.cgroups.push(pod);
            }
        }
        Ok(report)
    }
}
