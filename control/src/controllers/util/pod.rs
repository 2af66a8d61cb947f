//! Pod state as the reference's `podutil` reads it: readiness, terminal phases, and the
//! rule for whether a pod belongs in a Service's endpoints.

use k8s_openapi::api::core::v1::Pod;

/// The `Ready` condition is `True`.
pub fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The pod's phase (`""` before the agent reported one).
pub fn phase(pod: &Pod) -> &str {
    pod.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("")
}

/// Succeeded or Failed: its containers will not run again.
pub fn is_terminal(pod: &Pod) -> bool {
    matches!(phase(pod), "Succeeded" | "Failed")
}

/// `metadata.deletionTimestamp` is set.
pub fn is_terminating(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
}

/// The pod's primary IP (`status.podIP`, else the first of `status.podIPs`).
pub fn ip(pod: &Pod) -> Option<&str> {
    let status = pod.status.as_ref()?;
    status.pod_ip.as_deref().filter(|ip| !ip.is_empty()).or_else(|| {
        status.pod_ips.iter().flatten().map(|p| p.ip.as_str()).find(|ip| !ip.is_empty())
    })
}

/// The reference's `ShouldPodBeInEndpoints`: the pod has an IP, is not terminating (unless
/// `include_terminating`), and may still run per its restartPolicy.
pub fn should_be_in_endpoints(pod: &Pod, include_terminating: bool) -> bool {
    if ip(pod).is_none() {
        return false;
    }
    if !include_terminating && is_terminating(pod) {
        return false;
    }
    let restart = pod.spec.as_ref().and_then(|s| s.restart_policy.as_deref()).unwrap_or("Always");
    match restart {
        "Never" => !is_terminal(pod),
        "OnFailure" => phase(pod) != "Succeeded",
        _ => true,
    }
}

/// When the `Ready` condition last became `True` (`None` if the pod is not ready).
pub fn ready_since(pod: &Pod) -> Option<k8s_openapi::jiff::Timestamp> {
    let conditions = pod.status.as_ref()?.conditions.as_ref()?;
    let ready = conditions.iter().find(|c| c.type_ == "Ready" && c.status == "True")?;
    ready.last_transition_time.as_ref().map(|t| t.0)
}

/// The reference's `IsPodAvailable`: ready for at least `min_ready_seconds` at `now`.
pub fn is_available(pod: &Pod, min_ready_seconds: i32, now: k8s_openapi::jiff::Timestamp) -> bool {
    if !is_ready(pod) {
        return false;
    }
    if min_ready_seconds <= 0 {
        return true;
    }
    match ready_since(pod) {
        Some(since) => {
            let needed = k8s_openapi::jiff::SignedDuration::from_secs(i64::from(min_ready_seconds));
            since.checked_add(needed).is_ok_and(|t| t < now)
        }
        None => false,
    }
}

/// Neither terminal nor terminating (the reference's `IsPodActive`).
pub fn is_active(pod: &Pod) -> bool {
    !is_terminal(pod) && !is_terminating(pod)
}
