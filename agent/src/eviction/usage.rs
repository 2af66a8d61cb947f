//! Per-pod usage for ranking: memory working set and processes from each running container's
//! cgroup, and — only while disk is short, as walking directories costs — bytes and inodes of
//! each container's writable layer (`<image store>/containers/<instance>/upper`) and logs
//! (`<data dir>/pods/<ns>_<name>_<uid>/<container>`) and of the pod's disk-backed emptyDir
//! volumes (`<data dir>/pods/<uid>/volumes/kubernetes.io~empty-dir`). A pod has stats once its
//! sandbox exists. Blocking: call from the blocking pool.

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use skerry_runtime::{CgroupVersion, ContainerState, Runtime};

use super::rank::{ContainerUsage, PodStats};
use crate::pods::naming;
use crate::stats::cgroup::{single_value, CgroupReader};

/// Bytes allocated and inodes used below a directory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiskUsage {
    pub bytes: u64,
    pub inodes: u64,
}

/// `du -x`: allocated bytes and entries below `root`, not following symlinks nor crossing
/// into other file systems (a tmpfs emptyDir uses memory, not disk). Missing: zero.
pub fn disk_usage(root: &Path) -> DiskUsage {
    let Ok(top) = std::fs::symlink_metadata(root) else { return DiskUsage::default() };
    let device = top.dev();
    let mut usage = DiskUsage::default();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            if meta.dev() != device {
                continue;
            }
            usage.bytes += meta.blocks() * 512;
            usage.inodes += 1;
            if meta.is_dir() {
                stack.push(entry.path());
            }
        }
    }
    usage
}

/// Where usage is read from.
pub struct UsageReader {
    runtime: Arc<Runtime>,
    reader: CgroupReader,
    version: CgroupVersion,
    cgroup_mount: PathBuf,
    images_root: PathBuf,
    pods_dir: PathBuf,
}

impl UsageReader {
    /// A reader of `runtime`'s containers; `images_root` is the image store's root and
    /// `data_dir` the agent's.
    pub fn new(runtime: Arc<Runtime>, images_root: &Path, data_dir: &Path) -> UsageReader {
        let version = runtime.cgroups().version();
        UsageReader {
            runtime,
            reader: CgroupReader::host(version),
            version,
            cgroup_mount: PathBuf::from("/sys/fs/cgroup"),
            images_root: images_root.to_path_buf(),
            pods_dir: data_dir.join("pods"),
        }
    }

    /// Tasks in the cgroup at `path` (`pids.current`).
    fn processes(&self, path: &str) -> u64 {
        let rel = path.trim_start_matches('/');
        let file = match self.version {
            CgroupVersion::V1 => self.cgroup_mount.join("pids").join(rel),
            CgroupVersion::V2 => self.cgroup_mount.join(rel),
        }
        .join("pids.current");
        std::fs::read_to_string(file).ok().as_deref().and_then(single_value).unwrap_or(0)
    }

    /// Stats of `pods` by UID (pods without a sandbox have none); `disk`: walk their files too.
    pub fn collect(&self, pods: &[Pod], disk: bool) -> HashMap<String, PodStats> {
        let with_sandbox: HashSet<String> = self
            .runtime
            .list_sandboxes()
            .iter()
            .filter_map(|s| naming::parse_sandbox_name(&s.spec.name).map(str::to_string))
            .collect();
        let mut out: HashMap<String, PodStats> = HashMap::new();
        for pod in pods {
            let Some(uid) = pod.metadata.uid.as_deref().filter(|u| with_sandbox.contains(*u))
            else {
                continue;
            };
            let containers = pod
                .spec
                .iter()
                .flat_map(|s| s.containers.iter())
                .map(|c| ContainerUsage { name: c.name.clone(), ..Default::default() })
                .collect();
            out.insert(uid.to_string(), PodStats { containers, ..Default::default() });
        }
        for inst in self.runtime.list_containers() {
            let Some((uid, name, _)) = naming::parse_container_name(&inst.name) else { continue };
            let Some(stats) = out.get_mut(uid) else { continue };
            let mut usage = ContainerUsage::default();
            if inst.state == ContainerState::Running {
                // A container that exited since the listing has no cgroup left: nothing used.
                usage.working_set =
                    self.reader.cgroup(&inst.cgroup_path).map_or(0, |u| u.working_set_bytes);
                stats.processes += self.processes(&inst.cgroup_path);
            }
            if disk {
                let layer =
                    disk_usage(&self.images_root.join("containers").join(&inst.name).join("upper"));
                usage.disk_bytes = layer.bytes;
                stats.inodes += layer.inodes;
            }
            match stats.containers.iter_mut().find(|c| c.name == name) {
                Some(c) => {
                    c.working_set += usage.working_set;
                    c.disk_bytes += usage.disk_bytes;
                }
                // Init containers count for the pod, not in per-container messages.
                None => stats.containers.push(ContainerUsage { name: name.to_string(), ..usage }),
            }
        }
        if disk {
            for pod in pods {
                let m = &pod.metadata;
                let Some(uid) = m.uid.as_deref() else { continue };
                let Some(stats) = out.get_mut(uid) else { continue };
                let logs = self.pods_dir.join(format!(
                    "{}_{}_{uid}",
                    m.namespace.as_deref().unwrap_or("default"),
                    m.name.as_deref().unwrap_or_default()
                ));
                for c in &mut stats.containers {
                    let used = disk_usage(&logs.join(&c.name));
                    c.disk_bytes += used.bytes;
                    stats.inodes += used.inodes;
                }
                let volumes =
                    self.pods_dir.join(uid).join("volumes").join("kubernetes.io~empty-dir");
                let used = disk_usage(&volumes);
                stats.volume_bytes = used.bytes;
                stats.inodes += used.inodes;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_usage_counts_allocated_bytes_and_entries() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("a/b")).unwrap();
        std::fs::write(dir.path().join("a/b/file"), vec![7u8; 64 * 1024]).unwrap();
        std::os::unix::fs::symlink("/", dir.path().join("a/root")).unwrap();
        let usage = disk_usage(dir.path());
        // a, a/b, a/b/file and the link (not followed).
        assert_eq!(usage.inodes, 4);
        assert!(usage.bytes >= 64 * 1024, "{usage:?}");
        assert!(usage.bytes < 1 << 20, "the symlink was followed: {usage:?}");
        assert_eq!(disk_usage(&dir.path().join("missing")), DiskUsage::default());
    }
}
