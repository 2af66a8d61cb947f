//! The restricted Pod Security Standard: the baseline plus current pod hardening. Only
//! ephemeral-style volume types, no privilege escalation, non-root users, a confining seccomp
//! profile and every capability dropped (only `NET_BIND_SERVICE` may come back), as in
//! `k8s.io/pod-security-admission/policy`. Pods declaring `spec.os.name: windows` skip the
//! Linux-only checks from v1.25 on.

use serde_json::Value;

use super::baseline::{valid_seccomp, CAPABILITIES_ID, HOST_PATH_ID, SECCOMP_ID};
use super::evaluate::{
    container_field, containers_phrase, items, join_quote, name, pluralize, present, setters,
    Check, Pod, SortedSet, Violation,
};
use super::policy::Level;

/// The restricted checks, sorted by ID (the reference's order).
pub static CHECKS: [Check; 6] = [
    Check {
        id: "allowPrivilegeEscalation",
        level: Level::Restricted,
        since: 8,
        overrides: &[],
        run: allow_privilege_escalation,
    },
    Check {
        id: "capabilities_restricted",
        level: Level::Restricted,
        since: 22,
        overrides: &[CAPABILITIES_ID],
        run: capabilities,
    },
    Check {
        id: "restrictedVolumes",
        level: Level::Restricted,
        since: 0,
        overrides: &[HOST_PATH_ID],
        run: volumes,
    },
    Check {
        id: "runAsNonRoot",
        level: Level::Restricted,
        since: 0,
        overrides: &[],
        run: run_as_non_root,
    },
    Check {
        id: "runAsUser",
        level: Level::Restricted,
        since: 23,
        overrides: &[],
        run: run_as_user,
    },
    Check {
        id: "seccompProfile_restricted",
        level: Level::Restricted,
        since: 19,
        overrides: &[SECCOMP_ID],
        run: seccomp,
    },
];

/// Volume sources a restricted pod may use.
const ALLOWED_VOLUMES: [&str; 9] = [
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "image",
    "persistentVolumeClaim",
    "projected",
    "secret",
];

/// Every other volume source the reference names, in the order it tells them apart.
const RESTRICTED_VOLUMES: [&str; 21] = [
    "hostPath",
    "gcePersistentDisk",
    "awsElasticBlockStore",
    "gitRepo",
    "nfs",
    "iscsi",
    "glusterfs",
    "rbd",
    "flexVolume",
    "cinder",
    "cephfs",
    "flocker",
    "fc",
    "azureFile",
    "vsphereVolume",
    "quobyte",
    "azureDisk",
    "photonPersistentDisk",
    "portworxVolume",
    "scaleIO",
    "storageos",
];

/// Skipped for Windows pods from v1.25 on.
fn windows_exempt(pod: &Pod<'_>, minor: u32) -> bool {
    minor >= 25 && pod.is_windows()
}

/// `allowPrivilegeEscalation` must be explicitly false in every container.
fn allow_privilege_escalation(pod: &Pod<'_>, minor: u32) -> Option<Violation> {
    if windows_exempt(pod, minor) {
        return None;
    }
    let bad: Vec<String> = pod
        .containers()
        .filter(|c| {
            container_field(c, "allowPrivilegeEscalation").and_then(Value::as_bool) != Some(false)
        })
        .map(name)
        .collect();
    (!bad.is_empty()).then(|| {
        Violation::new(
            "allowPrivilegeEscalation != false",
            format!(
                "{} must set securityContext.allowPrivilegeEscalation=false",
                containers_phrase(&bad)
            ),
        )
    })
}

/// Every container drops ALL capabilities and adds back at most `NET_BIND_SERVICE`.
fn capabilities(pod: &Pod<'_>, minor: u32) -> Option<Violation> {
    if windows_exempt(pod, minor) {
        return None;
    }
    let mut missing_drop_all = Vec::new();
    let mut adding = Vec::new();
    let mut forbidden = SortedSet::new();
    for container in pod.containers() {
        let Some(caps) = container_field(container, "capabilities") else {
            missing_drop_all.push(name(container));
            continue;
        };
        if !items(caps.get("drop")).any(|c| c.as_str() == Some("ALL")) {
            missing_drop_all.push(name(container));
        }
        let mut adds_forbidden = false;
        for cap in items(caps.get("add")) {
            let cap = cap.as_str().unwrap_or("");
            if cap != "NET_BIND_SERVICE" {
                adds_forbidden = true;
                forbidden.insert(cap.to_string());
            }
        }
        if adds_forbidden {
            adding.push(name(container));
        }
    }
    let mut details = Vec::new();
    if !missing_drop_all.is_empty() {
        details.push(format!(
            "{} must set securityContext.capabilities.drop=[\"ALL\"]",
            containers_phrase(&missing_drop_all)
        ));
    }
    if !adding.is_empty() {
        details.push(format!(
            "{} must not include {} in securityContext.capabilities.add",
            containers_phrase(&adding),
            join_quote(&forbidden)
        ));
    }
    (!details.is_empty()).then(|| Violation::new("unrestricted capabilities", details.join("; ")))
}

/// Only the allowed volume types.
fn volumes(pod: &Pod<'_>, _minor: u32) -> Option<Violation> {
    let mut bad = Vec::new();
    let mut types = SortedSet::new();
    for volume in items(pod.spec.get("volumes")) {
        let has = |source: &str| present(volume.get(source)).is_some();
        if ALLOWED_VOLUMES.iter().any(|s| has(s)) {
            continue;
        }
        bad.push(name(volume));
        let kind = RESTRICTED_VOLUMES.iter().find(|s| has(s)).copied().unwrap_or("unknown");
        types.insert(kind.to_string());
    }
    if bad.is_empty() {
        return None;
    }
    Some(Violation::new(
        "restricted volume types",
        format!(
            "{} {} {} {} {}",
            pluralize("volume", "volumes", bad.len()),
            join_quote(&bad),
            pluralize("uses", "use", bad.len()),
            pluralize("restricted volume type", "restricted volume types", types.len()),
            join_quote(&types)
        ),
    ))
}

/// `runAsNonRoot: true` on the pod or on every container, and never false.
fn run_as_non_root(pod: &Pod<'_>, _minor: u32) -> Option<Violation> {
    const REASON: &str = "runAsNonRoot != true";
    let pod_value = pod.pod_field("runAsNonRoot").and_then(Value::as_bool);
    let pod_non_root = pod_value == Some(true);
    let mut explicit = Vec::new();
    let mut implicit = Vec::new();
    for container in pod.containers() {
        match container_field(container, "runAsNonRoot").and_then(Value::as_bool) {
            Some(false) => explicit.push(name(container)),
            Some(true) => {}
            None if !pod_non_root => implicit.push(name(container)),
            None => {}
        }
    }
    let setters = setters(pod_value == Some(false), &explicit);
    if !setters.is_empty() {
        let detail =
            format!("{} must not set securityContext.runAsNonRoot=false", setters.join(" and "));
        return Some(Violation::new(REASON, detail));
    }
    (!implicit.is_empty()).then(|| {
        Violation::new(
            REASON,
            format!(
                "pod or {} must set securityContext.runAsNonRoot=true",
                containers_phrase(&implicit)
            ),
        )
    })
}

/// `runAsUser` may not be 0 on the pod or any container.
fn run_as_user(pod: &Pod<'_>, _minor: u32) -> Option<Violation> {
    let is_root = |v: Option<&Value>| v.and_then(Value::as_i64) == Some(0);
    let bad: Vec<String> =
        pod.containers().filter(|c| is_root(container_field(c, "runAsUser"))).map(name).collect();
    let setters = setters(is_root(pod.pod_field("runAsUser")), &bad);
    (!setters.is_empty()).then(|| {
        Violation::new("runAsUser=0", format!("{} must not set runAsUser=0", setters.join(" and ")))
    })
}

/// A RuntimeDefault or Localhost seccomp profile on the pod or on every container.
fn seccomp(pod: &Pod<'_>, minor: u32) -> Option<Violation> {
    if windows_exempt(pod, minor) {
        return None;
    }
    let type_of = |p: &Value| p.get("type").and_then(Value::as_str).unwrap_or("").to_string();
    let mut bad_values = SortedSet::new();
    let mut pod_bad = false;
    let mut pod_set = false;
    if let Some(profile) = pod.pod_field("seccompProfile") {
        if valid_seccomp(profile) {
            pod_set = true;
        } else {
            pod_bad = true;
            bad_values.insert(type_of(profile));
        }
    }
    let mut explicit = Vec::new();
    let mut implicit = Vec::new();
    for container in pod.containers() {
        match container_field(container, "seccompProfile") {
            Some(profile) if !valid_seccomp(profile) => {
                explicit.push(name(container));
                bad_values.insert(type_of(profile));
            }
            Some(_) => {}
            None if !pod_set => implicit.push(name(container)),
            None => {}
        }
    }
    let setters = setters(pod_bad, &explicit);
    if !setters.is_empty() {
        let detail = format!(
            "{} must not set securityContext.seccompProfile.type to {}",
            setters.join(" and "),
            join_quote(&bad_values)
        );
        return Some(Violation::new("seccompProfile", detail));
    }
    (!implicit.is_empty()).then(|| {
        Violation::new(
            "seccompProfile",
            format!(
                "pod or {} must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \
                 \"Localhost\"",
                containers_phrase(&implicit)
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(check: fn(&Pod<'_>, u32) -> Option<Violation>, spec: Value) -> String {
        let meta = json!({});
        let pod = Pod { meta: &meta, spec: &spec };
        check(&pod, u32::MAX).map(|v| format!("{} ({})", v.reason, v.detail)).unwrap_or_default()
    }

    /// A container that passes every restricted check.
    fn hardened(name: &str) -> Value {
        json!({"name": name, "securityContext": {"allowPrivilegeEscalation": false,
            "runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"},
            "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}}})
    }

    #[test]
    fn a_hardened_pod_passes_every_check() {
        let spec = json!({"containers": [hardened("a")], "volumes": [
            {"name": "cm", "configMap": {"name": "x"}}, {"name": "t", "projected": {"sources": []}}]});
        for check in &CHECKS {
            assert_eq!(run(check.run, spec.clone()), "", "{}", check.id);
        }
    }

    #[test]
    fn privilege_escalation_must_be_explicitly_false() {
        let spec = json!({"containers": [hardened("a"), {"name": "b",
            "securityContext": {"allowPrivilegeEscalation": true}}, {"name": "c"}]});
        assert_eq!(
            run(allow_privilege_escalation, spec),
            "allowPrivilegeEscalation != false (containers \"b\", \"c\" must set \
             securityContext.allowPrivilegeEscalation=false)"
        );
    }

    #[test]
    fn capabilities_drop_all_and_add_only_net_bind_service() {
        let spec = json!({"containers": [{"name": "a",
            "securityContext": {"capabilities": {"add": ["NET_RAW", "NET_BIND_SERVICE"]}}}]});
        assert_eq!(
            run(capabilities, spec),
            "unrestricted capabilities (container \"a\" must set \
             securityContext.capabilities.drop=[\"ALL\"]; container \"a\" must not include \
             \"NET_RAW\" in securityContext.capabilities.add)"
        );
    }

    #[test]
    fn volume_types_are_named() {
        let spec = json!({"volumes": [{"name": "h", "hostPath": {"path": "/"}},
            {"name": "n", "nfs": {"server": "s", "path": "/"}}, {"name": "e", "emptyDir": {}}]});
        assert_eq!(
            run(volumes, spec),
            "restricted volume types (volumes \"h\", \"n\" use restricted volume types \
             \"hostPath\", \"nfs\")"
        );
    }

    #[test]
    fn run_as_non_root_explicit_false_wins_over_missing() {
        let spec = json!({"securityContext": {"runAsNonRoot": false},
            "containers": [{"name": "a"}]});
        assert_eq!(
            run(run_as_non_root, spec),
            "runAsNonRoot != true (pod must not set securityContext.runAsNonRoot=false)"
        );
        let pod_level =
            json!({"securityContext": {"runAsNonRoot": true}, "containers": [{"name": "a"}]});
        assert_eq!(run(run_as_non_root, pod_level), "");
    }

    #[test]
    fn run_as_user_zero() {
        let spec = json!({"containers": [{"name": "a", "securityContext": {"runAsUser": 0}},
            {"name": "b", "securityContext": {"runAsUser": 1000}}]});
        assert_eq!(
            run(run_as_user, spec),
            "runAsUser=0 (container \"a\" must not set runAsUser=0)"
        );
    }

    #[test]
    fn seccomp_pod_level_covers_containers_and_windows_is_exempt() {
        let spec = json!({"securityContext": {"seccompProfile": {"type": "Localhost",
            "localhostProfile": "p.json"}}, "containers": [{"name": "a"}]});
        assert_eq!(run(seccomp, spec), "");
        let unconfined = json!({"containers": [{"name": "a",
            "securityContext": {"seccompProfile": {"type": "Unconfined"}}}]});
        assert_eq!(
            run(seccomp, unconfined),
            "seccompProfile (container \"a\" must not set securityContext.seccompProfile.type to \
             \"Unconfined\")"
        );
        let windows = json!({"os": {"name": "windows"}, "containers": [{"name": "a"}]});
        assert_eq!(run(seccomp, windows.clone()), "");
        assert_eq!(run(allow_privilege_escalation, windows), "");
    }
}
