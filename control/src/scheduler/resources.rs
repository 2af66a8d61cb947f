//! Resource amounts as the scheduler counts them: what a pod requests (the reference's
//! `PodRequests`: containers summed, each init container's peak, pod overhead) and what a node
//! can allocate, in integer units (milli-CPU, bytes, pod slots, extended-resource units).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Node, Pod, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::apiserver::validation::quantity;

/// CPU requested by a container without requests, for scoring only (the reference's
/// `DefaultMilliCPURequest`): without it, pods with no requests would all pile on one node.
pub const DEFAULT_MILLI_CPU: i64 = 100;
/// Memory requested by a container without requests, for scoring only (200 MiB).
pub const DEFAULT_MEMORY: i64 = 200 * 1024 * 1024;

/// An amount of each resource.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resources {
    pub milli_cpu: i64,
    pub memory: i64,
    pub ephemeral_storage: i64,
    /// Pod slots (only meaningful for a node's allocatable).
    pub pods: i64,
    /// Extended resources (`example.com/gpu`, `hugepages-2Mi`, ...).
    pub scalar: BTreeMap<String, i64>,
}

impl Resources {
    /// Adds `other` to `self`.
    pub fn add(&mut self, other: &Resources) {
        self.milli_cpu += other.milli_cpu;
        self.memory += other.memory;
        self.ephemeral_storage += other.ephemeral_storage;
        self.pods += other.pods;
        for (name, value) in &other.scalar {
            *self.scalar.entry(name.clone()).or_insert(0) += value;
        }
    }

    /// Subtracts `other` from `self`.
    pub fn sub(&mut self, other: &Resources) {
        self.milli_cpu -= other.milli_cpu;
        self.memory -= other.memory;
        self.ephemeral_storage -= other.ephemeral_storage;
        self.pods -= other.pods;
        for (name, value) in &other.scalar {
            *self.scalar.entry(name.clone()).or_insert(0) -= value;
        }
    }

    /// Raises each amount of `self` to at least `other`'s.
    fn max_with(&mut self, other: &Resources) {
        self.milli_cpu = self.milli_cpu.max(other.milli_cpu);
        self.memory = self.memory.max(other.memory);
        self.ephemeral_storage = self.ephemeral_storage.max(other.ephemeral_storage);
        for (name, value) in &other.scalar {
            let entry = self.scalar.entry(name.clone()).or_insert(0);
            *entry = (*entry).max(*value);
        }
    }

    /// Amounts from a `resources.requests`-style map.
    pub fn from_map(map: &BTreeMap<String, Quantity>) -> Resources {
        let mut out = Resources::default();
        for (name, value) in map {
            match name.as_str() {
                "cpu" => out.milli_cpu = milli(value),
                "memory" => out.memory = units(value),
                "ephemeral-storage" => out.ephemeral_storage = units(value),
                "pods" => out.pods = units(value),
                other => {
                    out.scalar.insert(other.to_string(), units(value));
                }
            }
        }
        out
    }
}

/// A quantity in thousandths, rounded up (`100m` → 100, `1.5` → 1500); 0 when malformed
/// (validation rejects malformed quantities before they reach the scheduler).
fn milli(q: &Quantity) -> i64 {
    quantity::parse(&q.0).map_or(0, |v| round_up(v * 1000.0))
}

/// A quantity in whole units, rounded up (`1Ki` → 1024).
fn units(q: &Quantity) -> i64 {
    quantity::parse(&q.0).map_or(0, round_up)
}

/// Rounds up, but not for float noise (`0.1 * 1000` is 100.00000000000001, not 101).
fn round_up(v: f64) -> i64 {
    let nearest = v.round();
    if (v - nearest).abs() < 1e-6 {
        nearest as i64
    } else {
        v.ceil() as i64
    }
}

/// What one container asks for: its requests, or its limits where a request is absent (the
/// reference defaults requests to limits).
fn container_requests(container: &Container) -> Resources {
    let Some(ResourceRequirements { requests, limits, .. }) = &container.resources else {
        return Resources::default();
    };
    let mut merged = limits.clone().unwrap_or_default();
    merged.extend(requests.clone().unwrap_or_default());
    Resources::from_map(&merged)
}

/// Whether an init container is a sidecar (`restartPolicy: Always`): it keeps running beside
/// the app containers, so it adds to their sum instead of running before them.
fn is_sidecar(container: &Container) -> bool {
    container.restart_policy.as_deref() == Some("Always")
}

/// What a pod needs on a node: the sum of its containers and sidecars, or the peak of an init
/// container (with the sidecars started before it) if higher, plus the pod overhead.
pub fn pod_requests(pod: &Pod) -> Resources {
    let Some(spec) = &pod.spec else { return Resources::default() };
    let mut total = Resources::default();
    for container in &spec.containers {
        total.add(&container_requests(container));
    }
    let mut sidecars = Resources::default();
    let mut init_peak = Resources::default();
    for init in spec.init_containers.iter().flatten() {
        let requests = container_requests(init);
        if is_sidecar(init) {
            sidecars.add(&requests);
            total.add(&requests);
        } else {
            let mut peak = requests;
            peak.add(&sidecars);
            init_peak.max_with(&peak);
        }
    }
    total.max_with(&init_peak);
    if let Some(overhead) = &spec.overhead {
        total.add(&Resources::from_map(overhead));
    }
    total
}

/// CPU and memory of a pod for scoring: each container without a request counts the defaults.
pub fn pod_nonzero_requests(pod: &Pod) -> (i64, i64) {
    let Some(spec) = &pod.spec else { return (0, 0) };
    let mut cpu = 0;
    let mut memory = 0;
    for container in &spec.containers {
        let requests = container_requests(container);
        let has = |name: &str| {
            container
                .resources
                .as_ref()
                .and_then(|r| r.requests.as_ref().or(r.limits.as_ref()))
                .is_some_and(|m| m.contains_key(name))
        };
        cpu += if has("cpu") { requests.milli_cpu } else { DEFAULT_MILLI_CPU };
        memory += if has("memory") { requests.memory } else { DEFAULT_MEMORY };
    }
    (cpu, memory)
}

/// What a node can allocate (`status.allocatable`, else `status.capacity`).
pub fn node_allocatable(node: &Node) -> Resources {
    let status = node.status.as_ref();
    let map = status.and_then(|s| s.allocatable.as_ref().or(s.capacity.as_ref()));
    map.map(Resources::from_map).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": spec})).unwrap()
    }

    #[test]
    fn requests_sum_containers_and_take_the_init_peak() {
        let p = pod(json!({
            "containers": [
                {"name": "a", "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}},
                {"name": "b", "resources": {"limits": {"cpu": "200m", "example.com/gpu": "1"}}}
            ],
            "initContainers": [
                {"name": "i", "resources": {"requests": {"cpu": "1", "memory": "10Mi"}}}
            ],
            "overhead": {"cpu": "10m"}
        }));
        let r = pod_requests(&p);
        // cpu: max(100m + 200m, 1) + 10m overhead; memory: max(64Mi, 10Mi).
        assert_eq!(r.milli_cpu, 1010);
        assert_eq!(r.memory, 64 * 1024 * 1024);
        assert_eq!(r.scalar["example.com/gpu"], 1);
    }

    #[test]
    fn sidecars_add_to_the_containers_and_to_later_init_containers() {
        let p = pod(json!({
            "containers": [{"name": "a", "resources": {"requests": {"cpu": "100m"}}}],
            "initContainers": [
                {"name": "s", "restartPolicy": "Always", "resources": {"requests": {"cpu": "50m"}}},
                {"name": "i", "resources": {"requests": {"cpu": "500m"}}}
            ]
        }));
        assert_eq!(pod_requests(&p).milli_cpu, 550);
    }

    #[test]
    fn nonzero_requests_default_what_is_missing() {
        let p = pod(json!({"containers": [
            {"name": "a"},
            {"name": "b", "resources": {"requests": {"memory": "1Gi"}}}
        ]}));
        assert_eq!(pod_nonzero_requests(&p), (200, DEFAULT_MEMORY + 1024 * 1024 * 1024));
    }

    #[test]
    fn quantities_round_up_without_float_noise() {
        assert_eq!(milli(&Quantity("100m".into())), 100);
        assert_eq!(milli(&Quantity("0.1".into())), 100);
        assert_eq!(milli(&Quantity("1.0001m".into())), 2);
        assert_eq!(units(&Quantity("1Gi".into())), 1 << 30);
    }
}
