//! Admission under node pressure, as the kubelet's eviction admit handler decides it: while a
//! pressure condition is True, a new pod is refused before anything of it starts.
//!
//! - Critical pods (static, mirror, system-critical priority) are always admitted: the node
//!   needs them most when it is short of something.
//! - Under MemoryPressure alone, only BestEffort pods are refused, and not those tolerating the
//!   `node.kubernetes.io/memory-pressure:NoSchedule` taint (they asked to run there).
//! - Under DiskPressure or PIDPressure every other pod is refused (the kubelet honours no
//!   toleration there: the pod would be evicted again at once).
//!
//! A refused pod fails with reason `Evicted` and the kubelet's message
//! (`Pod was rejected: The node had condition: [MemoryPressure]. `); the `Evicted` event says
//! the same without the prefix. Only pods that have not started are judged (see the worker):
//! a pod already running when the agent restarts stays, so a restart under pressure evicts
//! nothing by itself.

use k8s_openapi::api::core::v1::{Pod, Toleration};
use skerry_runtime::QosClass;

use super::rank::is_critical;
use crate::node::facts::Pressure;
use crate::pods::spec::qos_class;

/// The taint key a memory-pressure toleration names.
pub const MEMORY_PRESSURE_TAINT: &str = "node.kubernetes.io/memory-pressure";
/// What the kubelet puts before the admit handler's message in the pod's status.
pub const REJECTED_PREFIX: &str = "Pod was rejected: ";

/// Why a pod is refused: the event's message (the status gets [`REJECTED_PREFIX`] before it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub message: String,
}

impl Rejection {
    /// `status.message` of the refused pod.
    pub fn status_message(&self) -> String {
        format!("{REJECTED_PREFIX}{}", self.message)
    }
}

/// The True pressure conditions, in the order the kubelet lists them.
fn conditions(p: Pressure) -> Vec<&'static str> {
    [(p.memory, "MemoryPressure"), (p.disk, "DiskPressure"), (p.pids, "PIDPressure")]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect()
}

/// Whether `t` tolerates the taint `key` (no value) with effect NoSchedule, by the API's rules:
/// an empty effect or key matches any; `Exists` ignores the value, `Equal` (the default)
/// compares it with the taint's (empty) one.
fn tolerates_no_schedule(t: &Toleration, key: &str) -> bool {
    let effect_ok = t.effect.as_deref().is_none_or(|e| e.is_empty() || e == "NoSchedule");
    let key_ok = t.key.as_deref().is_none_or(|k| k.is_empty() || k == key);
    let value_ok = match t.operator.as_deref() {
        None | Some("" | "Equal") => t.value.as_deref().unwrap_or_default().is_empty(),
        Some("Exists") => true,
        Some(_) => false,
    };
    effect_ok && key_ok && value_ok
}

/// Decides whether `pod` may start on a node under `pressure`.
pub fn admit(pod: &Pod, pressure: Pressure) -> Result<(), Rejection> {
    let on = conditions(pressure);
    if on.is_empty() || is_critical(pod) {
        return Ok(());
    }
    if on == ["MemoryPressure"] {
        if qos_class(pod) != QosClass::BestEffort {
            return Ok(());
        }
        let tolerations = pod.spec.as_ref().and_then(|s| s.tolerations.as_deref());
        if tolerations
            .into_iter()
            .flatten()
            .any(|t| tolerates_no_schedule(t, MEMORY_PRESSURE_TAINT))
        {
            return Ok(());
        }
    }
    Err(Rejection { message: format!("The node had condition: [{}]. ", on.join(" ")) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(resources: serde_json::Value, extra: serde_json::Value) -> Pod {
        let mut spec = json!({"containers": [{"name": "c", "image": "i", "resources": resources}]});
        if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
            spec.extend(extra.clone());
        }
        serde_json::from_value(json!({"metadata": {"name": "p", "uid": "u"}, "spec": spec}))
            .unwrap()
    }

    const MEMORY: Pressure = Pressure { memory: true, disk: false, pids: false };
    const DISK: Pressure = Pressure { memory: false, disk: true, pids: false };

    #[test]
    fn memory_pressure_refuses_only_besteffort_pods_without_the_toleration() {
        let besteffort = pod(json!({}), json!({}));
        let rejection = admit(&besteffort, MEMORY).unwrap_err();
        assert_eq!(rejection.message, "The node had condition: [MemoryPressure]. ");
        assert_eq!(
            rejection.status_message(),
            "Pod was rejected: The node had condition: [MemoryPressure]. "
        );
        let burstable = pod(json!({"requests": {"memory": "10Mi"}}), json!({}));
        assert_eq!(admit(&burstable, MEMORY), Ok(()));
        assert_eq!(admit(&besteffort, Pressure::default()), Ok(()));
        for toleration in [
            json!({"key": MEMORY_PRESSURE_TAINT, "operator": "Exists", "effect": "NoSchedule"}),
            json!({"key": MEMORY_PRESSURE_TAINT}),
            json!({"operator": "Exists"}),
        ] {
            let tolerating = pod(json!({}), json!({"tolerations": [toleration]}));
            assert_eq!(admit(&tolerating, MEMORY), Ok(()), "{toleration}");
        }
        for toleration in [
            json!({"key": MEMORY_PRESSURE_TAINT, "effect": "NoExecute"}),
            json!({"key": MEMORY_PRESSURE_TAINT, "value": "x"}),
            json!({"key": "node.kubernetes.io/disk-pressure", "operator": "Exists"}),
            json!({"key": MEMORY_PRESSURE_TAINT, "operator": "Sometimes"}),
        ] {
            let other = pod(json!({}), json!({"tolerations": [toleration]}));
            assert!(admit(&other, MEMORY).is_err(), "{toleration}");
        }
    }

    #[test]
    fn disk_and_pid_pressure_refuse_every_pod_but_critical_ones() {
        let guaranteed = pod(
            json!({"requests": {"cpu": "1", "memory": "1Gi"},
                   "limits": {"cpu": "1", "memory": "1Gi"}}),
            json!({}),
        );
        let rejection = admit(&guaranteed, DISK).unwrap_err();
        assert_eq!(rejection.message, "The node had condition: [DiskPressure]. ");
        // Tolerating the disk-pressure taint does not help (as in the kubelet).
        let tolerating = pod(json!({}), json!({"tolerations": [{"operator": "Exists"}]}));
        assert!(admit(&tolerating, DISK).is_err());
        let all = Pressure { memory: true, disk: true, pids: true };
        // Memory pressure with another condition refuses even a tolerating BestEffort pod.
        assert_eq!(
            admit(&tolerating, all).unwrap_err().message,
            "The node had condition: [MemoryPressure DiskPressure PIDPressure]. "
        );
        let critical = pod(json!({}), json!({"priority": 2_000_001_000}));
        assert_eq!(admit(&critical, all), Ok(()));
    }
}
