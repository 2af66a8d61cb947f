//! Which pod goes first, and what it is told: the kubelet's ranking and eviction message.
//!
//! - memory: pods whose working set exceeds their memory request first, then lower priority,
//!   then the largest usage above the request;
//! - disk space (`nodefs`/`imagefs.available`): the same with ephemeral storage — the writable
//!   layer, logs and emptyDir volumes — against `ephemeral-storage` requests;
//! - inodes: the same with inodes used (nothing can request inodes, so any use exceeds);
//! - PIDs: lower priority first, then the most processes.
//!
//! A pod without stats (no sandbox yet) ranks first, as in the kubelet. Critical pods — static
//! pods, mirror pods and pods at system-critical priority — are never candidates.

use k8s_openapi::api::core::v1::{Container, Pod};

use super::thresholds::{format_quantity, Resource};
use crate::env::quantity::Quantity;
use crate::pods::static_pods;

/// The kubelet's `SystemCriticalPriority`: at or above it a pod is critical.
pub const SYSTEM_CRITICAL_PRIORITY: i32 = 2_000_000_000;

/// What one container of a pod uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerUsage {
    pub name: String,
    /// Memory working set of its running instance.
    pub working_set: u64,
    /// Its writable layer plus its logs.
    pub disk_bytes: u64,
}

/// What a pod uses, as far as eviction cares.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodStats {
    /// Containers in spec order.
    pub containers: Vec<ContainerUsage>,
    /// Bytes in its disk-backed emptyDir volumes.
    pub volume_bytes: u64,
    /// Inodes in its writable layers, logs and volumes.
    pub inodes: u64,
    /// Processes (tasks) in its containers' cgroups.
    pub processes: u64,
}

impl PodStats {
    /// The pod's usage of `resource`.
    pub fn usage(&self, resource: Resource) -> i64 {
        let sum = |f: fn(&ContainerUsage) -> u64| self.containers.iter().map(f).sum::<u64>();
        let v = match resource {
            Resource::Memory => sum(|c| c.working_set),
            Resource::EphemeralStorage => sum(|c| c.disk_bytes) + self.volume_bytes,
            Resource::Inodes => self.inodes,
            Resource::Pids => self.processes,
        };
        v as i64
    }
}

/// A pod that may be evicted, with its stats (`None`: none could be read).
#[derive(Debug, Clone)]
pub struct Candidate {
    pub pod: Pod,
    pub stats: Option<PodStats>,
}

/// Static pods, mirror pods and pods at system-critical priority are never evicted.
pub fn is_critical(pod: &Pod) -> bool {
    static_pods::static_hash(pod).is_some()
        || static_pods::mirror_hash(pod).is_some()
        || priority(pod) >= SYSTEM_CRITICAL_PRIORITY
}

fn priority(pod: &Pod) -> i32 {
    pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0)
}

/// A container's request of `resource` (`None` when it sets none).
fn container_request(c: &Container, resource: Resource) -> Option<(i64, bool)> {
    let text = &c.resources.as_ref()?.requests.as_ref()?.get(resource.name())?.0;
    let value = Quantity::parse(text).ok()?.value();
    Some((value, text.ends_with('i')))
}

/// The pod's request of `resource`: the larger of its app containers' sum and its largest
/// init container (they run one at a time), as the scheduler counts it.
pub fn pod_request(pod: &Pod, resource: Resource) -> i64 {
    let Some(spec) = &pod.spec else { return 0 };
    let request = |c: &Container| container_request(c, resource).map_or(0, |(v, _)| v);
    let apps: i64 = spec.containers.iter().map(request).sum();
    let init = spec.init_containers.iter().flatten().map(request).max().unwrap_or(0);
    apps.max(init)
}

/// Sorts `candidates` so the pod to evict for `resource` comes first.
pub fn rank(resource: Resource, candidates: &mut [Candidate]) {
    match resource {
        Resource::Pids => candidates.sort_by_key(|c| {
            let found = c.stats.is_some();
            let processes = c.stats.as_ref().map_or(0, |s| s.processes);
            (priority(&c.pod), found, std::cmp::Reverse(processes))
        }),
        _ => candidates.sort_by_key(|c| {
            let Some(stats) = &c.stats else {
                // No stats: first, as the kubelet prioritises such pods.
                return (false, false, priority(&c.pod), std::cmp::Reverse(0));
            };
            let above = stats.usage(resource) - pod_request(&c.pod, resource);
            (true, above <= 0, priority(&c.pod), std::cmp::Reverse(above))
        }),
    }
}

/// The eviction message, word for word the kubelet's: the resource, the threshold and what
/// is left (when known), and each container using more than it requested.
pub fn message(
    resource: Resource,
    pod: &Pod,
    stats: Option<&PodStats>,
    threshold: Option<(String, String)>,
) -> String {
    let mut message = format!("The node was low on resource: {}. ", resource.name());
    if let Some((quantity, available)) = threshold {
        message += &format!("Threshold quantity: {quantity}, available: {available}. ");
    }
    let per_container = matches!(resource, Resource::Memory | Resource::EphemeralStorage);
    let (Some(stats), Some(spec), true) = (stats, pod.spec.as_ref(), per_container) else {
        return message;
    };
    for usage in &stats.containers {
        let Some(c) = spec.containers.iter().find(|c| c.name == usage.name) else { continue };
        let used = match resource {
            Resource::Memory => usage.working_set,
            _ => usage.disk_bytes,
        } as i64;
        let (request, binary) = container_request(c, resource).unwrap_or((0, true));
        if used > request {
            message += &format!(
                "Container {} was using {}, request is {}, has larger consumption of {}. ",
                c.name,
                format_quantity(used, true),
                format_quantity(request, binary),
                resource.name()
            );
        }
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, priority: i32, memory_request: Option<&str>) -> Pod {
        let resources = match memory_request {
            Some(r) => json!({"requests": {"memory": r}, "limits": {"memory": r}}),
            None => json!({}),
        };
        serde_json::from_value(json!({
            "metadata": {"name": name, "uid": name},
            "spec": {"priority": priority, "containers": [
                {"name": "c", "image": "i", "resources": resources}]}
        }))
        .unwrap()
    }

    fn using(memory: u64, processes: u64) -> Option<PodStats> {
        Some(PodStats {
            containers: vec![ContainerUsage {
                name: "c".into(),
                working_set: memory,
                disk_bytes: 0,
            }],
            processes,
            ..Default::default()
        })
    }

    fn names(c: &[Candidate]) -> Vec<&str> {
        c.iter().map(|c| c.pod.metadata.name.as_deref().unwrap()).collect()
    }

    #[test]
    fn memory_ranks_by_exceeding_requests_then_priority_then_usage_above_requests() {
        let mut pods = vec![
            // Within its request: last, whatever its usage and priority.
            Candidate { pod: pod("guaranteed", -5, Some("1Gi")), stats: using(500 << 20, 1) },
            Candidate { pod: pod("besteffort-high", 100, None), stats: using(300 << 20, 1) },
            Candidate { pod: pod("besteffort-small", 0, None), stats: using(10 << 20, 1) },
            Candidate { pod: pod("besteffort-big", 0, None), stats: using(200 << 20, 1) },
            Candidate { pod: pod("burstable-over", 0, Some("100Mi")), stats: using(150 << 20, 1) },
        ];
        rank(Resource::Memory, &mut pods);
        assert_eq!(
            names(&pods),
            [
                "besteffort-big",
                "burstable-over",
                "besteffort-small",
                "besteffort-high",
                "guaranteed"
            ]
        );
        // A pod without stats goes before all of them.
        pods.push(Candidate { pod: pod("unmeasured", 1000, Some("1Gi")), stats: None });
        rank(Resource::Memory, &mut pods);
        assert_eq!(names(&pods)[0], "unmeasured");
    }

    #[test]
    fn pids_rank_by_priority_then_process_count() {
        let mut pods = vec![
            Candidate { pod: pod("few", 0, None), stats: using(0, 2) },
            Candidate { pod: pod("important", 10, None), stats: using(0, 500) },
            Candidate { pod: pod("many", 0, None), stats: using(0, 300) },
        ];
        rank(Resource::Pids, &mut pods);
        assert_eq!(names(&pods), ["many", "few", "important"]);
    }

    #[test]
    fn disk_counts_layers_logs_and_volumes_against_ephemeral_requests() {
        let mut requested = pod("requested", 0, None);
        requested.spec.as_mut().unwrap().containers[0].resources = Some(
            serde_json::from_value(json!({"requests": {"ephemeral-storage": "1Gi"}})).unwrap(),
        );
        let stats = |disk: u64, volume: u64| {
            Some(PodStats {
                containers: vec![ContainerUsage {
                    name: "c".into(),
                    working_set: 0,
                    disk_bytes: disk,
                }],
                volume_bytes: volume,
                ..Default::default()
            })
        };
        let mut pods = vec![
            Candidate { pod: requested, stats: stats(900 << 20, 0) },
            Candidate { pod: pod("logs", 0, None), stats: stats(1 << 20, 0) },
            Candidate { pod: pod("volume", 0, None), stats: stats(1 << 20, 50 << 20) },
        ];
        rank(Resource::EphemeralStorage, &mut pods);
        assert_eq!(names(&pods), ["volume", "logs", "requested"]);
    }

    #[test]
    fn critical_pods_are_static_mirror_or_system_critical() {
        assert!(!is_critical(&pod("plain", 1000, None)));
        assert!(is_critical(&pod("node-critical", 2_000_001_000, None)));
        let mut mirror = pod("mirror", 0, None);
        mirror.metadata.annotations =
            Some([("kubernetes.io/config.mirror".to_string(), "abc".to_string())].into());
        assert!(is_critical(&mirror));
    }

    #[test]
    fn the_message_is_the_kubelets() {
        let p = pod("web", 0, None);
        let m = message(
            Resource::Memory,
            &p,
            using(20 << 20, 1).as_ref(),
            Some(("100Mi".into(), "50Mi".into())),
        );
        assert_eq!(
            m,
            "The node was low on resource: memory. Threshold quantity: 100Mi, available: 50Mi. \
             Container c was using 20Mi, request is 0, has larger consumption of memory. "
        );
        // Within its request: no container line; PIDs never have one.
        let g = pod("g", 0, Some("64Mi"));
        let m = message(Resource::Memory, &g, using(1 << 20, 1).as_ref(), None);
        assert_eq!(m, "The node was low on resource: memory. ");
        let over = message(Resource::Memory, &g, using(65 << 20, 1).as_ref(), None);
        assert!(over.ends_with(
            "Container c was using 65Mi, request is 64Mi, has larger consumption of memory. "
        ));
        let m = message(Resource::Pids, &p, using(0, 9).as_ref(), Some(("1k".into(), "10".into())));
        assert_eq!(
            m,
            "The node was low on resource: pids. Threshold quantity: 1k, available: 10. "
        );
    }
}
