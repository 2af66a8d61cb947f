//! The baseline Pod Security Standard: no known privilege escalations. Host namespaces,
//! privileged containers, capabilities beyond the container runtime's default set, hostPath
//! volumes, host ports, unconfined AppArmor / seccomp, custom SELinux users, roles and types,
//! unmasked `/proc` and unsafe sysctls are refused, as in `k8s.io/pod-security-admission/policy`
//! (same reasons and details, since they reach users as-is).

use serde_json::Value;

use super::evaluate::{
    container_field, containers_phrase, items, join_quote, name, pluralize, present, setters,
    Check, Pod, SortedSet, Violation,
};
use super::policy::Level;

/// The ID of the baseline seccomp check, which the restricted one replaces.
pub const SECCOMP_ID: &str = "seccompProfile_baseline";
/// The ID of the baseline capabilities check, which the restricted one replaces.
pub const CAPABILITIES_ID: &str = "capabilities_baseline";
/// The ID of the hostPath check, which the restricted volume check replaces.
pub const HOST_PATH_ID: &str = "hostPathVolumes";

const fn check(id: &'static str, run: fn(&Pod<'_>, u32) -> Option<Violation>) -> Check {
    Check { id, level: Level::Baseline, since: 0, overrides: &[], run }
}

/// The baseline checks, sorted by ID (the reference's order).
pub static CHECKS: [Check; 11] = [
    check("appArmorProfile", app_armor),
    check(CAPABILITIES_ID, capabilities),
    check("hostNamespaces", host_namespaces),
    check(HOST_PATH_ID, host_path_volumes),
    check("hostPorts", host_ports),
    check("privileged", privileged),
    check("procMount", proc_mount),
    check("seLinuxOptions", se_linux_options),
    check(SECCOMP_ID, seccomp),
    check("sysctls", sysctls),
    check("windowsHostProcess", windows_host_process),
];

/// Names of the containers for which `bad` holds.
fn containers_where(pod: &Pod<'_>, mut bad: impl FnMut(&Value) -> bool) -> Vec<String> {
    pod.containers().filter(|c| bad(c)).map(name).collect()
}

fn is_true(value: Option<&Value>) -> bool {
    value.and_then(Value::as_bool) == Some(true)
}

fn str_at<'a>(value: &'a Value, field: &str) -> &'a str {
    value.get(field).and_then(Value::as_str).unwrap_or("")
}

/// AppArmor: only the RuntimeDefault and Localhost profile types, and the deprecated
/// annotations only with `runtime/default` or `localhost/…`.
fn app_armor(pod: &Pod<'_>, _minor: u32) -> Option<Violation> {
    const ANNOTATION_PREFIX: &str = "container.apparmor.security.beta.kubernetes.io/";
    let allowed = |profile: &Value| {
        matches!(profile.get("type").and_then(Value::as_str), Some("RuntimeDefault" | "Localhost"))
    };
    let mut bad_values = SortedSet::new();
    let mut pod_bad = false;
    if let Some(profile) = pod.pod_field("appArmorProfile") {
        if !allowed(profile) {
            pod_bad = true;
            bad_values.insert(str_at(profile, "type").to_string());
        }
    }
    let bad_containers = containers_where(pod, |c| match container_field(c, "appArmorProfile") {
        Some(profile) if !allowed(profile) => {
            bad_values.insert(str_at(profile, "type").to_string());
            true
        }
        _ => false,
    });
    let mut setters = setters(pod_bad, &bad_containers);
    let mut bad_list: Vec<String> = bad_values.into_iter().collect();
    let mut annotations: Vec<String> = pod
        .annotations()
        .filter(|(k, v)| {
            k.starts_with(ANNOTATION_PREFIX)
                && !(v.is_empty() || *v == "runtime/default" || v.starts_with("localhost/"))
        })
        .map(|(k, v)| format!("{k}={v:?}"))
        .collect();
    if !annotations.is_empty() {
        annotations.sort();
        setters.push(pluralize("annotation", "annotations", annotations.len()).to_string());
        bad_list.extend(annotations);
    }
    if setters.is_empty() {
        return None;
    }
    Some(Violation::new(
        pluralize("forbidden AppArmor profile", "forbidden AppArmor profiles", bad_list.len()),
        format!(
            "{} must not set AppArmor profile type to {}",
            setters.join(" and "),
            join_quote(&bad_list)
        ),
    ))
}

/// Capabilities: only the container runtime's default set may be added.
fn capabilities(pod: &Pod<'_>, _minor: u32) -> Option<Violation> {
    const ALLOWED: [&str; 13] = [
        "AUDIT_WRITE",
        "CHOWN",
        "DAC_OVERRIDE",
        "FOWNER",
        "FSETID",
        "KILL",
        "MKNOD",
        "NET_BIND_SERVICE",
        "SETFCAP",
        "SETGID",
        "SETPCAP",
        "SETUID",
        "SYS_CHROOT",
    ];
    let mut forbidden = SortedSet::new();
    let bad = containers_where(pod, |c| {
        let added = container_field(c, "capabilities").and_then(|caps| caps.get("add"));
        let mut valid = true;
        for cap in items(added) {
            let cap = cap.as_str().unwrap_or("");
            if !ALLOWED.contains(&cap) {
                valid = false;
                forbidden.insert(cap.to_string());
            }
        }
        !valid
    });
    (!bad.is_empty()).then(|| {
        Violation::new(
            "non-default capabilities",
            format!(
                "{} must not include {} in securityContext.capabilities.add",
                containers_phrase(&bad),
                join_quote(&forbidden)
            ),
        )
    })
}

/// Host namespaces: no hostNetwork, hostPID or hostIPC.
fn host_namespaces(pod: &Pod<'_>, _minor: u32) -> Option<Violation> {
    let shared: Vec<String> = ["hostNetwork", "hostPID", "hostIPC"]
        .into_iter()
        .filter(|field| is_true(pod.spec.get(*field)))
        .map(|field| format!("{field}=true"))
        .collect();
    (!shared.is_empty()).then(|| Violation::new("host namespaces", shared.join(", ")))
}

/// HostPath volumes are forbidden.
fn host_path_volumes(pod: &Pod<'_>, _minor: u32) -> Option<Violation> {
    let volumes: Vec<String> = items(pod.spec.get("volumes"))
        .filter(|v| present(v.get("hostPath")).is_some())
        .map(name)
        .collect();
    (!volumes.is_empty()).then(|| {
        Violation::new(
            "hostPath volumes",
            format!("{} {}", pluralize("volume", "volumes", volumes.len()), join_quote(&volumes)),
        )
    })
}

/// Host ports are forbidden.
fn host_ports(pod: &Pod<'_>, _minor: u32) -> Option<Violation> {
    // Sorted as strings, as the reference's string set lists them.
    let mut ports = SortedSet::new();
    let bad = containers_where(pod, |c| {
        let mut valid = true;
        for port in items(c.get("ports")) {
            let host_port = port.get("hostPort").and_then(Value::as_i64).unwrap_or(0);
            if host_port != 0 {
                valid = false;
                ports.insert(host_port.to_string());
            }
        }
        !valid
    });
    if bad.is_empty() {
        return None;
    }
    let ports: Vec<String> = ports.into_iter().collect();
    Some(Violation::new(
        "hostPort",
        format!(
            "{} {} {} {}",
            containers_phrase(&bad),
            pluralize("uses", "use", bad.len()),
            pluralize("hostPort", "hostPorts", ports.len()),
            ports.join(", ")
        ),
    ))
}

/// Privileged containers are forbidden.
fn privileged(pod: &Pod<'_>, _minor: u32) -> Option<Violation> {
    let bad = containers_where(pod, |c| is_true(container_field(c, "privileged")));
    (!bad.is_empty()).then(|| {
        Violation::new(
            "privileged",
            format!("{} must not set securityContext.privileged=true", containers_phrase(&bad)),
        )
    })
}

/// `/proc` must keep its default masks.
fn proc_mount(pod: &Pod<'_>, _minor: u32) -> Option<Violation> {
    let mut types = SortedSet::new();
    let bad = containers_where(pod, |c| match container_field(c, "procMount") {
        Some(t) if t.as_str() != Some("Default") => {
            types.insert(t.as_str().unwrap_or("").to_string());
            true
        }
        _ => false,
    });
    (!bad.is_empty()).then(|| {
        Violation::new(
            "procMount",
            format!(
                "{} must not set securityContext.procMount to {}",
                containers_phrase(&bad),
                join_quote(&types)
            ),
        )
    })
}

/// SELinux: no user or role, and only the container types (`container_engine_t` from v1.31).
fn se_linux_options(pod: &Pod<'_>, minor: u32) -> Option<Violation> {
    let mut allowed = vec!["", "container_t", "container_init_t", "container_kvm_t"];
    if minor >= 31 {
        allowed.push("container_engine_t");
    }
    let mut bad_types = SortedSet::new();
    let (mut set_user, mut set_role) = (false, false);
    let mut valid = |opts: &Value| {
        let mut ok = true;
        let kind = str_at(opts, "type");
        if !allowed.contains(&kind) {
            ok = false;
            bad_types.insert(kind.to_string());
        }
        if !str_at(opts, "user").is_empty() {
            ok = false;
            set_user = true;
        }
        if !str_at(opts, "role").is_empty() {
            ok = false;
            set_role = true;
        }
        ok
    };
    let pod_bad = pod.pod_field("seLinuxOptions").is_some_and(|o| !valid(o));
    let bad =
        containers_where(pod, |c| container_field(c, "seLinuxOptions").is_some_and(|o| !valid(o)));
    let setters = setters(pod_bad, &bad);
    if setters.is_empty() {
        return None;
    }
    let mut data = Vec::new();
    if !bad_types.is_empty() {
        data.push(format!(
            "{} {}",
            pluralize("type", "types", bad_types.len()),
            join_quote(&bad_types)
        ));
    }
    if set_user {
        data.push("user may not be set".to_string());
    }
    if set_role {
        data.push("role may not be set".to_string());
    }
    Some(Violation::new(
        "seLinuxOptions",
        format!(
            "{} set forbidden securityContext.seLinuxOptions: {}",
            setters.join(" and "),
            data.join("; ")
        ),
    ))
}

/// Whether a seccomp profile type confines the container.
pub fn valid_seccomp(profile: &Value) -> bool {
    matches!(profile.get("type").and_then(Value::as_str), Some("RuntimeDefault" | "Localhost"))
}

/// Seccomp: not Unconfined. Before v1.19 the (then alpha) annotations were checked instead.
fn seccomp(pod: &Pod<'_>, minor: u32) -> Option<Violation> {
    if minor < 19 {
        return seccomp_annotations(pod);
    }
    let mut bad_values = SortedSet::new();
    let mut pod_bad = false;
    if let Some(profile) = pod.pod_field("seccompProfile") {
        if !valid_seccomp(profile) {
            pod_bad = true;
            bad_values.insert(str_at(profile, "type").to_string());
        }
    }
    let bad = containers_where(pod, |c| match container_field(c, "seccompProfile") {
        Some(profile) if !valid_seccomp(profile) => {
            bad_values.insert(str_at(profile, "type").to_string());
            true
        }
        _ => false,
    });
    let setters = setters(pod_bad, &bad);
    (!setters.is_empty()).then(|| {
        Violation::new(
            "seccompProfile",
            format!(
                "{} must not set securityContext.seccompProfile.type to {}",
                setters.join(" and "),
                join_quote(&bad_values)
            ),
        )
    })
}

fn seccomp_annotations(pod: &Pod<'_>) -> Option<Violation> {
    const POD_KEY: &str = "seccomp.security.alpha.kubernetes.io/pod";
    const CONTAINER_PREFIX: &str = "container.seccomp.security.alpha.kubernetes.io/";
    let valid =
        |v: &str| v == "runtime/default" || v == "docker/default" || v.starts_with("localhost/");
    let annotations: Vec<(&str, &str)> = pod.annotations().collect();
    let value_of = |key: &str| annotations.iter().find(|(k, _)| *k == key).map(|(_, v)| *v);
    let mut forbidden = SortedSet::new();
    let mut keys = vec![POD_KEY.to_string()];
    keys.extend(pod.containers().map(|c| format!("{CONTAINER_PREFIX}{}", name(c))));
    for key in keys {
        if let Some(value) = value_of(&key).filter(|v| !valid(v)) {
            forbidden.insert(format!("{key}={value:?}"));
        }
    }
    (!forbidden.is_empty()).then(|| {
        let list: Vec<String> = forbidden.iter().cloned().collect();
        Violation::new(
            "seccompProfile",
            format!(
                "forbidden {} {}",
                pluralize("annotation", "annotations", list.len()),
                list.join(", ")
            ),
        )
    })
}

/// Sysctls: only the namespaced ones known to be safe at the version.
fn sysctls(pod: &Pod<'_>, minor: u32) -> Option<Violation> {
    let mut allowed = vec![
        "kernel.shm_rmid_forced",
        "net.ipv4.ip_local_port_range",
        "net.ipv4.tcp_syncookies",
        "net.ipv4.ping_group_range",
        "net.ipv4.ip_unprivileged_port_start",
    ];
    if minor >= 27 {
        allowed.push("net.ipv4.ip_local_reserved_ports");
    }
    if minor >= 29 {
        allowed.extend([
            "net.ipv4.tcp_keepalive_time",
            "net.ipv4.tcp_fin_timeout",
            "net.ipv4.tcp_keepalive_intvl",
            "net.ipv4.tcp_keepalive_probes",
        ]);
    }
    if minor >= 32 {
        allowed.extend(["net.ipv4.tcp_rmem", "net.ipv4.tcp_wmem"]);
    }
    let forbidden: Vec<&str> = items(pod.pod_field("sysctls"))
        .map(|s| s.get("name").and_then(Value::as_str).unwrap_or(""))
        .filter(|n| !allowed.contains(n))
        .collect();
    (!forbidden.is_empty()).then(|| Violation::new("forbidden sysctls", forbidden.join(", ")))
}

/// Windows HostProcess containers are forbidden.
fn windows_host_process(pod: &Pod<'_>, _minor: u32) -> Option<Violation> {
    let host_process = |sc: Option<&Value>| {
        is_true(
            sc.and_then(|o| present(o.get("windowsOptions"))).and_then(|w| w.get("hostProcess")),
        )
    };
    let bad = containers_where(pod, |c| host_process(present(c.get("securityContext"))));
    let setters = setters(host_process(pod.security_context()), &bad);
    (!setters.is_empty()).then(|| {
        Violation::new(
            "hostProcess",
            format!(
                "{} must not set securityContext.windowsOptions.hostProcess=true",
                setters.join(" and ")
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(check: fn(&Pod<'_>, u32) -> Option<Violation>, meta: Value, spec: Value) -> String {
        let pod = Pod { meta: &meta, spec: &spec };
        check(&pod, u32::MAX).map(|v| format!("{} ({})", v.reason, v.detail)).unwrap_or_default()
    }

    fn with_sc(sc: Value) -> Value {
        json!({"containers": [{"name": "c", "securityContext": sc}]})
    }

    #[test]
    fn host_namespaces_lists_each_shared_namespace() {
        let spec = json!({"hostNetwork": true, "hostPID": false, "hostIPC": true});
        assert_eq!(
            run(host_namespaces, json!({}), spec),
            "host namespaces (hostNetwork=true, hostIPC=true)"
        );
        assert_eq!(run(host_namespaces, json!({}), json!({})), "");
    }

    #[test]
    fn privileged_names_the_containers() {
        let spec = json!({"initContainers": [{"name": "i", "securityContext": {"privileged": true}}],
            "containers": [{"name": "a", "securityContext": {"privileged": true}},
                           {"name": "b", "securityContext": {"privileged": false}}]});
        assert_eq!(
            run(privileged, json!({}), spec),
            "privileged (containers \"i\", \"a\" must not set securityContext.privileged=true)"
        );
    }

    #[test]
    fn capabilities_beyond_the_default_set() {
        let spec = with_sc(json!({"capabilities": {"add": ["SYS_ADMIN", "CHOWN", "NET_ADMIN"]}}));
        assert_eq!(
            run(capabilities, json!({}), spec),
            "non-default capabilities (container \"c\" must not include \"NET_ADMIN\", \"SYS_ADMIN\" \
             in securityContext.capabilities.add)"
        );
        assert_eq!(
            run(capabilities, json!({}), with_sc(json!({"capabilities": {"add": ["KILL"]}}))),
            ""
        );
    }

    #[test]
    fn host_path_and_host_ports() {
        let spec = json!({"volumes": [{"name": "a", "hostPath": {"path": "/"}}, {"name": "b", "emptyDir": {}}]});
        assert_eq!(run(host_path_volumes, json!({}), spec), "hostPath volumes (volume \"a\")");
        let spec = json!({"containers": [{"name": "c", "ports": [
            {"containerPort": 80, "hostPort": 8080}, {"containerPort": 443, "hostPort": 443}]}]});
        assert_eq!(
            run(host_ports, json!({}), spec),
            "hostPort (container \"c\" uses hostPorts 443, 8080)"
        );
    }

    #[test]
    fn app_armor_profiles_and_annotations() {
        let spec = json!({"securityContext": {"appArmorProfile": {"type": "Unconfined"}},
            "containers": [{"name": "c"}]});
        let meta = json!({"annotations": {
            "container.apparmor.security.beta.kubernetes.io/c": "unconfined"}});
        assert_eq!(
            run(app_armor, meta, spec),
            "forbidden AppArmor profiles (pod and annotation must not set AppArmor profile type to \
             \"Unconfined\", \"container.apparmor.security.beta.kubernetes.io/c=\"unconfined\"\")"
        );
        let ok = with_sc(json!({"appArmorProfile": {"type": "RuntimeDefault"}}));
        assert_eq!(run(app_armor, json!({}), ok), "");
    }

    #[test]
    fn se_linux_types_users_and_roles() {
        let spec = with_sc(json!({"seLinuxOptions": {"type": "spc_t", "user": "root"}}));
        assert_eq!(
            run(se_linux_options, json!({}), spec),
            "seLinuxOptions (container \"c\" set forbidden securityContext.seLinuxOptions: type \
             \"spc_t\"; user may not be set)"
        );
        let engine = with_sc(json!({"seLinuxOptions": {"type": "container_engine_t"}}));
        let pod = Pod { meta: &json!({}), spec: &engine };
        assert!(se_linux_options(&pod, 31).is_none());
        assert!(se_linux_options(&pod, 30).is_some());
    }

    #[test]
    fn proc_mount_and_seccomp_unconfined() {
        assert_eq!(
            run(proc_mount, json!({}), with_sc(json!({"procMount": "Unmasked"}))),
            "procMount (container \"c\" must not set securityContext.procMount to \"Unmasked\")"
        );
        let spec = json!({"securityContext": {"seccompProfile": {"type": "Unconfined"}},
            "containers": [{"name": "c"}]});
        assert_eq!(
            run(seccomp, json!({}), spec),
            "seccompProfile (pod must not set securityContext.seccompProfile.type to \"Unconfined\")"
        );
        // Unset is fine at baseline.
        assert_eq!(run(seccomp, json!({}), with_sc(json!({}))), "");
    }

    #[test]
    fn unsafe_sysctls_by_version() {
        let spec = json!({"securityContext": {"sysctls": [
            {"name": "net.ipv4.tcp_rmem", "value": "1"}, {"name": "kernel.msgmax", "value": "1"}]}});
        assert_eq!(run(sysctls, json!({}), spec.clone()), "forbidden sysctls (kernel.msgmax)");
        let pod = Pod { meta: &json!({}), spec: &spec };
        assert_eq!(
            sysctls(&pod, 31).map(|v| v.detail).unwrap(),
            "net.ipv4.tcp_rmem, kernel.msgmax"
        );
    }

    #[test]
    fn windows_host_process_pod_and_containers() {
        let spec = json!({"securityContext": {"windowsOptions": {"hostProcess": true}},
            "containers": [{"name": "c", "securityContext": {"windowsOptions": {"hostProcess": true}}}]});
        assert_eq!(
            run(windows_host_process, json!({}), spec),
            "hostProcess (pod and container \"c\" must not set \
             securityContext.windowsOptions.hostProcess=true)"
        );
    }
}
