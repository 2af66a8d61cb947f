//! Pod spec → runtime specs: the sandbox (namespaces, hostname, resolv.conf, /etc/hosts, QoS,
//! pod-level limits) and each container (resources, security context). Pure functions; the
//! environment, command expansion and mounts are computed elsewhere and passed in.

use k8s_openapi::api::core::v1::{Container, Pod, ResourceRequirements};
use skerry_runtime::{QosClass, Resources, SandboxSpec, SeccompProfile, SecurityContext};

use crate::config::parse_quantity;

fn quantity(r: Option<&ResourceRequirements>, which: &str, name: &str) -> Option<f64> {
    let map = match which {
        "limits" => r?.limits.as_ref()?,
        _ => r?.requests.as_ref()?,
    };
    parse_quantity(&map.get(name)?.0)
}

/// The pod's QoS class, by the Kubernetes rules (requests default to limits).
pub fn qos_class(pod: &Pod) -> QosClass {
    let Some(spec) = &pod.spec else { return QosClass::BestEffort };
    let containers: Vec<&Container> =
        spec.containers.iter().chain(spec.init_containers.iter().flatten()).collect();
    let mut any = false;
    let mut guaranteed = true;
    for c in &containers {
        let r = c.resources.as_ref();
        for name in ["cpu", "memory"] {
            let limit = quantity(r, "limits", name);
            let request = quantity(r, "requests", name).or(limit);
            if limit.is_some() || request.is_some() {
                any = true;
            }
            if limit.is_none() || request != limit {
                guaranteed = false;
            }
        }
    }
    match (any, guaranteed) {
        (false, _) => QosClass::BestEffort,
        (true, true) => QosClass::Guaranteed,
        (true, false) => QosClass::Burstable,
    }
}

/// The Kubernetes name of a QoS class (`status.qosClass`).
pub fn qos_name(q: QosClass) -> &'static str {
    match q {
        QosClass::Guaranteed => "Guaranteed",
        QosClass::Burstable => "Burstable",
        QosClass::BestEffort => "BestEffort",
    }
}

/// A container's cgroup limits: CPU limit → quota, CPU request → shares, memory limit.
pub fn container_resources(c: &Container) -> Resources {
    let r = c.resources.as_ref();
    let mut out = Resources::default();
    if let Some(cpus) = quantity(r, "limits", "cpu").filter(|v| *v > 0.0) {
        out = out.with_cpus(cpus);
    }
    let request = quantity(r, "requests", "cpu").or(quantity(r, "limits", "cpu"));
    // The kubelet's milliCPUToShares: 1024 per CPU, at least 2.
    out.cpu_shares = Some(request.map_or(2, |cpus| ((cpus * 1024.0) as u64).max(2)));
    out.memory_limit = quantity(r, "limits", "memory").map(|b| b as i64);
    out
}

/// Pod-level limits: the sum of the app containers' limits when every one sets it.
pub fn pod_resources(pod: &Pod) -> Resources {
    let Some(spec) = &pod.spec else { return Resources::default() };
    let sum = |name: &str| -> Option<f64> {
        spec.containers.iter().map(|c| quantity(c.resources.as_ref(), "limits", name)).sum()
    };
    let mut out = Resources::default();
    if let Some(cpus) = sum("cpu").filter(|v| *v > 0.0) {
        out = out.with_cpus(cpus);
    }
    out.memory_limit = sum("memory").map(|b| b as i64);
    out
}

/// The sandbox for `pod` with the given resolv.conf contents.
pub fn sandbox_spec(pod: &Pod, resolv_conf: Option<String>) -> SandboxSpec {
    let spec = pod.spec.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let hostname = spec.hostname.clone().unwrap_or_else(|| name.chars().take(63).collect());
    let mut extra_hosts = Vec::new();
    for alias in spec.host_aliases.iter().flatten() {
        let names = alias.hostnames.clone().unwrap_or_default().join("\t");
        extra_hosts.push(format!("{}\t{names}", alias.ip));
    }
    SandboxSpec {
        name: super::naming::sandbox_name(&uid),
        uid: Some(uid),
        hostname,
        host_network: spec.host_network.unwrap_or(false),
        host_pid: spec.host_pid.unwrap_or(false),
        host_ipc: spec.host_ipc.unwrap_or(false),
        share_process_namespace: spec.share_process_namespace.unwrap_or(false),
        qos: qos_class(pod),
        resources: pod_resources(pod),
        resolv_conf,
        extra_hosts,
    }
}

/// The container's security context (container fields override the pod's).
pub fn security_context(pod: &Pod, c: &Container) -> SecurityContext {
    let psc = pod.spec.as_ref().and_then(|s| s.security_context.clone()).unwrap_or_default();
    let csc = c.security_context.clone().unwrap_or_default();
    let seccomp = csc.seccomp_profile.as_ref().or(psc.seccomp_profile.as_ref()).map(|p| {
        match p.type_.as_str() {
            "RuntimeDefault" => SeccompProfile::RuntimeDefault,
            "Localhost" => {
                SeccompProfile::Localhost(p.localhost_profile.clone().unwrap_or_default().into())
            }
            _ => SeccompProfile::Unconfined,
        }
    });
    let caps = csc.capabilities.clone().unwrap_or_default();
    SecurityContext {
        run_as_user: csc.run_as_user.or(psc.run_as_user).and_then(|u| u32::try_from(u).ok()),
        run_as_group: csc.run_as_group.or(psc.run_as_group).and_then(|g| u32::try_from(g).ok()),
        run_as_non_root: csc.run_as_non_root.or(psc.run_as_non_root).unwrap_or(false),
        supplemental_groups: psc
            .supplemental_groups
            .unwrap_or_default()
            .into_iter()
            .filter_map(|g| u32::try_from(g).ok())
            .collect(),
        read_only_root_filesystem: csc.read_only_root_filesystem.unwrap_or(false),
        privileged: csc.privileged.unwrap_or(false),
        capabilities_add: caps.add.unwrap_or_default(),
        capabilities_drop: caps.drop.unwrap_or_default(),
        allow_privilege_escalation: csc.allow_privilege_escalation,
        // Kubernetes' default is Unconfined unless the pod asks for a profile.
        seccomp: seccomp.unwrap_or(SeccompProfile::Unconfined),
        proc_mount: match csc.proc_mount.as_deref() {
            Some("Unmasked") => skerry_runtime::ProcMount::Unmasked,
            _ => skerry_runtime::ProcMount::Default,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(resources: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "uid": "u1"},
            "spec": {"containers": [{"name": "c", "image": "i", "resources": resources}]}
        }))
        .unwrap()
    }

    #[test]
    fn qos_classes_follow_requests_and_limits() {
        assert_eq!(qos_class(&pod(serde_json::json!({}))), QosClass::BestEffort);
        let g = pod(serde_json::json!({"limits": {"cpu": "500m", "memory": "64Mi"}}));
        assert_eq!(qos_class(&g), QosClass::Guaranteed);
        let b = pod(serde_json::json!({"requests": {"cpu": "100m"}}));
        assert_eq!(qos_class(&b), QosClass::Burstable);
    }

    #[test]
    fn limits_become_cgroup_values() {
        let p = pod(serde_json::json!({"limits": {"cpu": "500m", "memory": "64Mi"}}));
        let r = container_resources(&p.spec.as_ref().unwrap().containers[0]);
        assert_eq!((r.cpu_quota, r.cpu_period), (Some(50_000), Some(100_000)));
        assert_eq!(r.cpu_shares, Some(512));
        assert_eq!(r.memory_limit, Some(64 << 20));
        let s = sandbox_spec(&p, None);
        assert_eq!(s.name, "pod-u1");
        assert_eq!(s.hostname, "p");
        assert_eq!(s.resources.memory_limit, Some(64 << 20));
    }
}
