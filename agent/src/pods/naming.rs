//! How pods map onto runtime objects, so a restarted agent finds its containers again from the
//! runtime alone: the sandbox is named by the pod UID, each container instance
//! `<pod-uid>_<container>_<attempt>` (the attempt is the restart count, like the kubelet's
//! docker names). Kubernetes names never contain `_`, so the split is unambiguous, and the
//! longest name (36 + 63 + digits) stays under the runtime's 128 bytes.

/// The sandbox name of a pod.
pub fn sandbox_name(pod_uid: &str) -> String {
    format!("pod-{pod_uid}")
}

/// The pod UID of a sandbox name made by [`sandbox_name`].
pub fn parse_sandbox_name(name: &str) -> Option<&str> {
    name.strip_prefix("pod-")
}

/// The runtime name of one instance of a container.
pub fn container_name(pod_uid: &str, container: &str, attempt: u32) -> String {
    format!("{pod_uid}_{container}_{attempt}")
}

/// (pod UID, container, attempt) of a runtime name made by [`container_name`].
pub fn parse_container_name(name: &str) -> Option<(&str, &str, u32)> {
    let mut parts = name.rsplitn(3, '_');
    let attempt = parts.next()?.parse().ok()?;
    let container = parts.next()?;
    let uid = parts.next()?;
    (!uid.is_empty() && !container.is_empty()).then_some((uid, container, attempt))
}

/// The `containerID` in pod status (`skerry://<runtime id>`).
pub fn container_id(runtime_id: &str) -> String {
    format!("skerry://{runtime_id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_names_round_trip() {
        let uid = "0c9e1f9e-64b4-4c1c-a7c2-4c5d3c1b2a10";
        let name = container_name(uid, "web-1", 7);
        assert_eq!(parse_container_name(&name), Some((uid, "web-1", 7)));
        assert_eq!(parse_container_name("ctr-abc"), None);
        assert_eq!(parse_sandbox_name(&sandbox_name(uid)), Some(uid));
        assert!(container_name(uid, &"c".repeat(63), u32::MAX).len() <= 128);
    }
}
