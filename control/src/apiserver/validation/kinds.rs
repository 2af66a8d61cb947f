//! Per-kind validation dispatch and the rules of the non-workload kinds: services, configmaps,
//! secrets, namespaces, RBAC, CRDs, endpoint slices, ingresses and leases, with their immutable
//! fields on update.

use std::net::IpAddr;

use serde_json::{json, Value};

use super::errors::Errors;
use super::pod::{self, port_number, supported};
use super::{names, workloads};
use crate::apiserver::resource::ResourceInfo;

/// Total size of a configmap's or secret's data (`MaxSecretSize`, 1 MiB).
const DATA_MAX_BYTES: usize = 1024 * 1024;

/// Validates a built-in object on its own (create and update).
pub fn validate(info: &ResourceInfo, obj: &Value, errs: &mut Errors) {
    match (info.group.as_str(), info.kind.as_str()) {
        ("", "Pod") => pod::validate_spec(obj.get("spec"), "spec", errs),
        ("", "PodTemplate") => {
            pod::validate_spec(obj.pointer("/template/spec"), "template.spec", errs)
        }
        ("", "ReplicationController") => workloads::validate_controller(
            obj.get("spec"),
            "replicationcontroller",
            &["Always"],
            errs,
        ),
        ("apps", "Deployment") => workloads::validate_deployment(obj, errs),
        ("apps", "ReplicaSet") => {
            workloads::validate_controller(obj.get("spec"), "replicaset", &["Always"], errs)
        }
        ("apps", "StatefulSet") => workloads::validate_statefulset(obj, errs),
        ("apps", "DaemonSet") => workloads::validate_daemonset(obj, errs),
        ("batch", "Job") => workloads::validate_job(obj, errs),
        ("batch", "CronJob") => workloads::validate_cronjob(obj, errs),
        ("", "Service") => validate_service(obj, errs),
        ("", "ConfigMap") => validate_data(obj, &["data", "binaryData"], false, errs),
        ("", "Secret") => validate_secret(obj, errs),
        ("", "Namespace") => validate_namespace(obj, errs),
        ("rbac.authorization.k8s.io", "Role" | "ClusterRole") => validate_rules(obj, errs),
        ("rbac.authorization.k8s.io", kind @ ("RoleBinding" | "ClusterRoleBinding")) => {
            validate_binding(obj, kind == "ClusterRoleBinding", errs)
        }
        ("apiextensions.k8s.io", "CustomResourceDefinition") => validate_crd(obj, errs),
        ("discovery.k8s.io", "EndpointSlice") => supported(
            Some(obj.get("addressType").unwrap_or(&json!(""))),
            "addressType",
            &["IPv4", "IPv6", "FQDN"],
            errs,
        ),
        ("networking.k8s.io", "Ingress") => validate_ingress(obj, errs),
        ("policy", "PodDisruptionBudget") => {
            let spec = obj.get("spec").cloned().unwrap_or(Value::Null);
            let set = |k: &str| spec.get(k).is_some_and(|v| !v.is_null());
            if set("minAvailable") && set("maxUnavailable") {
                errs.invalid("spec", &spec, "minAvailable and maxUnavailable cannot be both set");
            }
        }
        ("autoscaling", "HorizontalPodAutoscaler") => validate_hpa(obj, errs),
        ("coordination.k8s.io", "Lease") => {
            if let Some(d) = obj.pointer("/spec/leaseDurationSeconds").filter(|d| !d.is_null()) {
                if d.as_i64().is_none_or(|n| n <= 0) {
                    errs.invalid("spec.leaseDurationSeconds", d, "must be greater than 0");
                }
            }
        }
        _ => {}
    }
}

/// Validates what an update of a built-in object may not change.
pub fn validate_update(info: &ResourceInfo, old: &Value, new: &Value, errs: &mut Errors) {
    match (info.group.as_str(), info.kind.as_str()) {
        ("", "Pod") => pod::validate_update(old, new, errs),
        ("", "PersistentVolumeClaim") => super::pvc::validate_update(old, new, errs),
        ("apps", kind) | ("batch", kind) => workloads::validate_update(kind, old, new, errs),
        ("", "Service") => service_update(old, new, errs),
        ("", "ConfigMap") => immutable_data(old, new, &["data", "binaryData"], errs),
        ("", "Secret") => {
            immutable_data(old, new, &["data"], errs);
            let (before, after) = (old.get("type"), new.get("type"));
            if before.is_some() && before != after {
                errs.immutable("type", after.unwrap_or(&Value::Null));
            }
        }
        ("rbac.authorization.k8s.io", "RoleBinding" | "ClusterRoleBinding")
            if old.get("roleRef") != new.get("roleRef") =>
        {
            errs.invalid(
                "roleRef",
                new.get("roleRef").unwrap_or(&Value::Null),
                "cannot change roleRef",
            );
        }
        ("apiextensions.k8s.io", "CustomResourceDefinition") => {
            for key in ["group", "scope"] {
                let (before, after) =
                    (old.pointer(&format!("/spec/{key}")), new.pointer(&format!("/spec/{key}")));
                if before != after {
                    errs.immutable(&format!("spec.{key}"), after.unwrap_or(&Value::Null));
                }
            }
        }
        ("discovery.k8s.io", "EndpointSlice")
            if old.get("addressType") != new.get("addressType") =>
        {
            errs.immutable("addressType", new.get("addressType").unwrap_or(&Value::Null));
        }
        _ => {}
    }
}

fn validate_service(obj: &Value, errs: &mut Errors) {
    let Some(spec) = obj.get("spec").filter(|s| s.is_object()) else {
        errs.required("spec.ports", "");
        return;
    };
    let kind = spec.get("type").and_then(Value::as_str).unwrap_or("ClusterIP");
    supported(
        spec.get("type"),
        "spec.type",
        &["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"],
        errs,
    );
    supported(spec.get("sessionAffinity"), "spec.sessionAffinity", &["None", "ClientIP"], errs);
    let ports = spec.get("ports").and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[]);
    let headless = spec.get("clusterIP").and_then(Value::as_str) == Some("None");
    if ports.is_empty() && kind != "ExternalName" && !headless {
        errs.required("spec.ports", "");
    }
    let mut port_names: Vec<&str> = Vec::new();
    let mut port_keys: Vec<(i64, &str)> = Vec::new();
    for (i, p) in ports.iter().enumerate() {
        let field = format!("spec.ports[{i}]");
        let name = p.get("name").and_then(Value::as_str).unwrap_or("");
        if name.is_empty() {
            // With several ports each needs a name.
            if ports.len() > 1 {
                errs.required(&format!("{field}.name"), "");
            }
        } else {
            for msg in names::dns1123_label(name) {
                errs.invalid_str(&format!("{field}.name"), name, &msg);
            }
            if port_names.contains(&name) {
                errs.duplicate(&format!("{field}.name"), &json!(name));
            }
            port_names.push(name);
        }
        match p.get("port") {
            None | Some(Value::Null) => errs.required(&format!("{field}.port"), ""),
            Some(v) => port_number(v, &format!("{field}.port"), errs),
        }
        supported(p.get("protocol"), &format!("{field}.protocol"), &["TCP", "UDP", "SCTP"], errs);
        match p.get("targetPort") {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) => {
                for msg in names::port_name(s) {
                    errs.invalid_str(&format!("{field}.targetPort"), s, &msg);
                }
            }
            Some(v) => port_number(v, &format!("{field}.targetPort"), errs),
        }
        let key = (
            p.get("port").and_then(Value::as_i64).unwrap_or(0),
            p.get("protocol").and_then(Value::as_str).unwrap_or("TCP"),
        );
        if port_keys.contains(&key) {
            errs.duplicate(&field, p);
        }
        port_keys.push(key);
    }
    if kind == "ExternalName" {
        match spec.get("externalName").and_then(Value::as_str) {
            None | Some("") => errs.required("spec.externalName", ""),
            Some(n) => {
                for msg in names::dns1123_subdomain(n.trim_end_matches('.')) {
                    errs.invalid_str("spec.externalName", n, &msg);
                }
            }
        }
    }
    let cluster_ips =
        spec.get("clusterIPs").and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[]);
    let mut check_ip = |field: &str, ip: &Value| match ip.as_str() {
        Some("None") | Some("") => {}
        Some(s) if s.parse::<IpAddr>().is_ok() => {}
        _ => {
            errs.invalid(field, ip, "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)")
        }
    };
    if let Some(ip) = spec.get("clusterIP").filter(|v| !v.is_null()) {
        check_ip("spec.clusterIP", ip);
    }
    for (i, ip) in cluster_ips.iter().enumerate() {
        check_ip(&format!("spec.clusterIPs[{i}]"), ip);
    }
}

fn service_update(old: &Value, new: &Value, errs: &mut Errors) {
    // A service keeps its cluster IPs, unless it becomes (or was) an ExternalName service.
    let kind = |v: &Value| {
        v.pointer("/spec/type").and_then(Value::as_str).unwrap_or("ClusterIP").to_string()
    };
    if kind(old) == "ExternalName" || kind(new) == "ExternalName" {
        return;
    }
    let ips = |v: &Value| -> Vec<Value> {
        match v.pointer("/spec/clusterIPs").and_then(Value::as_array) {
            Some(list) if !list.is_empty() => list.clone(),
            _ => v
                .pointer("/spec/clusterIP")
                .filter(|ip| ip.as_str().is_some_and(|s| !s.is_empty()))
                .cloned()
                .into_iter()
                .collect(),
        }
    };
    let (before, after) = (ips(old), ips(new));
    // An update that leaves the IPs unset keeps them (the strategy copies them back).
    if !before.is_empty() && !after.is_empty() && before.first() != after.first() {
        errs.invalid("spec.clusterIPs[0]", &Value::Array(after), "may not change once set");
    }
}

/// Data keys must be config keys, unique across `fields`, within 1 MiB in total (decoded, for
/// `binaryData` and a secret's `data`).
fn validate_data(obj: &Value, fields: &[&str], secret: bool, errs: &mut Errors) {
    let mut keys: Vec<&str> = Vec::new();
    let mut total = 0;
    for field in fields {
        let Some(data) = obj.get(*field).filter(|d| !d.is_null()) else { continue };
        let Some(map) = data.as_object() else {
            errs.invalid(field, data, "must be a map of keys to values");
            continue;
        };
        for (k, v) in map {
            let key_field = format!("{field}[{k}]");
            for msg in names::config_key(k) {
                errs.invalid_str(&key_field, k, &msg);
            }
            if keys.contains(&k.as_str()) {
                errs.invalid_str(&key_field, k, "duplicate of key present in data");
            }
            keys.push(k);
            let base64 = *field == "binaryData" || (secret && *field == "data");
            total += v.as_str().map(|s| stored_len(s, base64)).unwrap_or(0);
        }
    }
    if total > DATA_MAX_BYTES {
        errs.too_long(fields[0], DATA_MAX_BYTES);
    }
}

/// The size a value counts for: base64 fields (`binaryData`, secret `data`) count decoded bytes.
fn stored_len(value: &str, base64: bool) -> usize {
    if base64 && value.len().is_multiple_of(4) && looks_base64(value) {
        let padding = value.bytes().rev().take_while(|&b| b == b'=').count();
        value.len() / 4 * 3 - padding.min(2)
    } else {
        value.len()
    }
}

fn looks_base64(value: &str) -> bool {
    value.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
}

fn validate_secret(obj: &Value, errs: &mut Errors) {
    validate_data(obj, &["data", "stringData"], true, errs);
    let has = |k: &str| {
        ["data", "stringData"].iter().any(|f| obj.get(*f).and_then(|d| d.get(k)).is_some())
    };
    let required: &[&str] = match obj.get("type").and_then(Value::as_str).unwrap_or("Opaque") {
        "kubernetes.io/tls" => &["tls.crt", "tls.key"],
        "kubernetes.io/dockerconfigjson" => &[".dockerconfigjson"],
        "kubernetes.io/dockercfg" => &[".dockercfg"],
        "kubernetes.io/ssh-auth" => &["ssh-privatekey"],
        _ => &[],
    };
    for key in required {
        if !has(key) {
            errs.required(&format!("data[{key}]"), "");
        }
    }
    if obj.get("type").and_then(Value::as_str) == Some("kubernetes.io/service-account-token") {
        let annotation = obj.pointer("/metadata/annotations/kubernetes.io~1service-account.name");
        if annotation.and_then(Value::as_str).is_none_or(str::is_empty) {
            errs.required("metadata.annotations[kubernetes.io/service-account.name]", "");
        }
    }
}

/// With `immutable: true`, data may not change and `immutable` may not be unset.
fn immutable_data(old: &Value, new: &Value, fields: &[&str], errs: &mut Errors) {
    if old.get("immutable").and_then(Value::as_bool) != Some(true) {
        return;
    }
    if new.get("immutable").and_then(Value::as_bool) != Some(true) {
        errs.forbidden("immutable", "field is immutable when `immutable` is set");
    }
    for field in fields {
        if old.get(*field) != new.get(*field) {
            errs.forbidden(field, "field is immutable when `immutable` is set");
        }
    }
}

fn validate_namespace(obj: &Value, errs: &mut Errors) {
    let finalizers = obj.pointer("/spec/finalizers").and_then(Value::as_array);
    for (i, f) in finalizers.map(Vec::as_slice).unwrap_or(&[]).iter().enumerate() {
        let field = format!("spec.finalizers[{i}]");
        match f.as_str() {
            Some(name) => {
                for msg in names::qualified_name(name) {
                    errs.invalid_str(&field, name, &msg);
                }
            }
            None => errs.invalid(&field, f, "must be a string"),
        }
    }
}

fn validate_rules(obj: &Value, errs: &mut Errors) {
    let rules = obj.get("rules").and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[]);
    for (i, rule) in rules.iter().enumerate() {
        let list = |k: &str| rule.get(k).and_then(Value::as_array).map(Vec::len).unwrap_or(0);
        if list("verbs") == 0 {
            errs.required(&format!("rules[{i}].verbs"), "verbs must contain at least one value");
        }
        let urls = list("nonResourceURLs") > 0;
        if urls && (list("resources") > 0 || list("apiGroups") > 0) {
            errs.invalid(
                &format!("rules[{i}].nonResourceURLs"),
                rule.get("nonResourceURLs").unwrap_or(&Value::Null),
                "rules cannot apply to both regular resources and non-resource URLs",
            );
        } else if !urls {
            if list("apiGroups") == 0 {
                errs.required(
                    &format!("rules[{i}].apiGroups"),
                    "resource rules must supply at least one api group",
                );
            }
            if list("resources") == 0 {
                errs.required(
                    &format!("rules[{i}].resources"),
                    "resource rules must supply at least one resource",
                );
            }
        }
    }
}

fn validate_binding(obj: &Value, cluster: bool, errs: &mut Errors) {
    let role_ref = obj.get("roleRef").cloned().unwrap_or(json!({}));
    let kinds: &[&str] = if cluster { &["ClusterRole"] } else { &["Role", "ClusterRole"] };
    supported(Some(role_ref.get("kind").unwrap_or(&json!(""))), "roleRef.kind", kinds, errs);
    supported(
        Some(role_ref.get("apiGroup").unwrap_or(&json!(""))),
        "roleRef.apiGroup",
        &["rbac.authorization.k8s.io"],
        errs,
    );
    match role_ref.get("name").and_then(Value::as_str) {
        None | Some("") => errs.required("roleRef.name", ""),
        Some(n) => {
            for msg in names::path_segment(n) {
                errs.invalid_str("roleRef.name", n, &msg);
            }
        }
    }
    let subjects = obj.get("subjects").and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[]);
    for (i, s) in subjects.iter().enumerate() {
        let field = format!("subjects[{i}]");
        if s.get("name").and_then(Value::as_str).is_none_or(str::is_empty) {
            errs.required(&format!("{field}.name"), "");
        }
        let kind = s.get("kind").cloned().unwrap_or(json!(""));
        supported(
            Some(&kind),
            &format!("{field}.kind"),
            &["ServiceAccount", "User", "Group"],
            errs,
        );
        if kind == "ServiceAccount"
            && cluster
            && s.get("namespace").and_then(Value::as_str).is_none_or(str::is_empty)
        {
            errs.required(&format!("{field}.namespace"), "");
        }
    }
}

fn validate_crd(obj: &Value, errs: &mut Errors) {
    let Some(spec) = obj.get("spec").filter(|s| s.is_object()) else {
        errs.required("spec", "");
        return;
    };
    let text = |p: &str| spec.pointer(p).and_then(Value::as_str).unwrap_or("");
    let (group, plural, kind) = (text("/group"), text("/names/plural"), text("/names/kind"));
    if group.is_empty() {
        errs.required("spec.group", "");
    } else {
        if !group.contains('.') {
            errs.invalid_str("spec.group", group, "should be a domain with at least one dot");
        }
        for msg in names::dns1123_subdomain(group) {
            errs.invalid_str("spec.group", group, &msg);
        }
    }
    if plural.is_empty() {
        errs.required("spec.names.plural", "");
    } else {
        for msg in names::dns1123_label(plural) {
            errs.invalid_str("spec.names.plural", plural, &msg);
        }
    }
    if kind.is_empty() {
        errs.required("spec.names.kind", "");
    }
    let name = obj.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("");
    if !plural.is_empty() && !group.is_empty() && name != format!("{plural}.{group}") {
        errs.invalid_str("metadata.name", name, "must be spec.names.plural+\".\"+spec.group");
    }
    supported(
        Some(spec.get("scope").unwrap_or(&json!(""))),
        "spec.scope",
        &["Cluster", "Namespaced"],
        errs,
    );
    let versions = spec.get("versions").and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[]);
    if versions.is_empty() {
        errs.invalid(
            "spec.versions",
            spec.get("versions").unwrap_or(&Value::Null),
            "must have exactly one version marked as storage version",
        );
        return;
    }
    let storage =
        versions.iter().filter(|v| v.get("storage").and_then(Value::as_bool) == Some(true)).count();
    if storage != 1 {
        errs.invalid(
            "spec.versions",
            &Value::Array(versions.to_vec()),
            "must have exactly one version marked as storage version",
        );
    }
    let mut seen: Vec<&str> = Vec::new();
    for (i, v) in versions.iter().enumerate() {
        let name = v.get("name").and_then(Value::as_str).unwrap_or("");
        for msg in names::dns1035_label(name) {
            errs.invalid_str(&format!("spec.versions[{i}].name"), name, &msg);
        }
        if seen.contains(&name) {
            errs.duplicate(&format!("spec.versions[{i}].name"), &json!(name));
        }
        seen.push(name);
        match v.pointer("/schema/openAPIV3Schema") {
            Some(schema) if schema.is_object() => super::schema::validate_structural(
                schema,
                &format!("spec.versions[{i}].schema.openAPIV3Schema"),
                errs,
            ),
            _ => errs.required(
                &format!("spec.versions[{i}].schema.openAPIV3Schema"),
                "schemas are required",
            ),
        }
    }
}

fn validate_hpa(obj: &Value, errs: &mut Errors) {
    let target = obj.pointer("/spec/scaleTargetRef");
    for key in ["kind", "name"] {
        if target.and_then(|t| t.get(key)).and_then(Value::as_str).is_none_or(str::is_empty) {
            errs.required(&format!("spec.scaleTargetRef.{key}"), "");
        }
    }
    let min = obj.pointer("/spec/minReplicas").and_then(Value::as_i64);
    let max = obj.pointer("/spec/maxReplicas");
    if min.is_some_and(|m| m < 1) {
        errs.invalid("spec.minReplicas", &json!(min), "must be greater than or equal to 1");
    }
    match max.and_then(Value::as_i64) {
        Some(m) if m >= min.unwrap_or(1) => {}
        Some(m) if m >= 1 => errs.invalid(
            "spec.maxReplicas",
            &json!(m),
            "must be greater than or equal to `minReplicas`",
        ),
        _ => {
            errs.invalid("spec.maxReplicas", max.unwrap_or(&Value::Null), "must be greater than 0")
        }
    }
}

fn validate_ingress(obj: &Value, errs: &mut Errors) {
    let rules =
        obj.pointer("/spec/rules").and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[]);
    for (i, rule) in rules.iter().enumerate() {
        let paths =
            rule.pointer("/http/paths").and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[]);
        for (j, path) in paths.iter().enumerate() {
            let field = format!("spec.rules[{i}].http.paths[{j}]");
            match path.get("pathType") {
                None | Some(Value::Null) => {
                    errs.required(&format!("{field}.pathType"), "pathType must be specified")
                }
                kind => supported(
                    kind,
                    &format!("{field}.pathType"),
                    &["Exact", "Prefix", "ImplementationSpecific"],
                    errs,
                ),
            }
            if path.get("backend").is_none_or(Value::is_null) {
                errs.required(&format!("{field}.backend"), "");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::resource::Registry;

    fn info(group: &str, plural: &str) -> ResourceInfo {
        let all = Registry::builtin().all();
        (*all.into_iter().find(|r| r.group == group && r.plural == plural).unwrap()).clone()
    }

    fn fields(group: &str, plural: &str, obj: Value) -> Vec<String> {
        let mut errs = Errors::default();
        validate(&info(group, plural), &obj, &mut errs);
        errs.into_result().err().unwrap_or_default().into_iter().map(|c| c.field).collect()
    }

    fn update(group: &str, plural: &str, old: Value, new: Value) -> Vec<(String, String)> {
        let mut errs = Errors::default();
        validate_update(&info(group, plural), &old, &new, &mut errs);
        errs.into_result()
            .err()
            .unwrap_or_default()
            .into_iter()
            .map(|c| (c.field, c.message))
            .collect()
    }

    #[test]
    fn service_ports() {
        assert_eq!(fields("", "services", json!({"spec": {"type": "ClusterIP"}})), ["spec.ports"]);
        assert!(fields("", "services", json!({"spec": {"clusterIP": "None"}})).is_empty());
        let svc = json!({"spec": {"ports": [{"port": 80, "protocol": "TCP"},
            {"name": "b", "port": 80, "protocol": "TCP", "targetPort": "Not_A_Name"},
            {"name": "b", "port": 0}]}});
        assert_eq!(
            fields("", "services", svc),
            [
                "spec.ports[0].name",
                "spec.ports[1].targetPort",
                "spec.ports[1]",
                "spec.ports[2].name",
                "spec.ports[2].port"
            ]
        );
        let external = json!({"spec": {"type": "ExternalName"}});
        assert_eq!(fields("", "services", external), ["spec.externalName"]);
    }

    #[test]
    fn cluster_ip_may_not_change() {
        let old = json!({"spec": {"clusterIP": "10.43.0.5", "clusterIPs": ["10.43.0.5"]}});
        let new = json!({"spec": {"clusterIP": "10.43.0.6", "clusterIPs": ["10.43.0.6"]}});
        assert_eq!(
            update("", "services", old.clone(), new),
            [(
                "spec.clusterIPs[0]".into(),
                r#"Invalid value: ["10.43.0.6"]: may not change once set"#.into()
            )]
        );
        let to_external =
            json!({"spec": {"type": "ExternalName", "externalName": "x.example.com"}});
        assert!(update("", "services", old, to_external).is_empty());
    }

    #[test]
    fn immutable_configmaps_and_secrets() {
        let old = json!({"immutable": true, "data": {"a": "1"}});
        let new = json!({"immutable": true, "data": {"a": "2"}});
        assert_eq!(
            update("", "configmaps", old.clone(), new),
            [("data".into(), "Forbidden: field is immutable when `immutable` is set".into())]
        );
        let unset = json!({"immutable": false, "data": {"a": "1"}});
        assert_eq!(update("", "configmaps", old, unset)[0].0, "immutable");
        let mutable = json!({"data": {"a": "1"}});
        assert!(update("", "configmaps", mutable.clone(), json!({"data": {"a": "2"}})).is_empty());
        assert_eq!(fields("", "configmaps", json!({"data": {"bad/key": "x"}})), ["data[bad/key]"]);
        let tls = json!({"type": "kubernetes.io/tls", "data": {"tls.crt": "eA=="}});
        assert_eq!(fields("", "secrets", tls), ["data[tls.key]"]);
        let typed = json!({"type": "Opaque"});
        assert_eq!(update("", "secrets", typed, json!({"type": "other"}))[0].0, "type");
    }

    #[test]
    fn data_size_limit_counts_decoded_bytes() {
        let big = "a".repeat(1100 * 1024);
        assert_eq!(fields("", "configmaps", json!({"data": {"k": big}})), ["data"]);
        // 900 KiB of secret data is 1.2 MB of base64: still within the 1 MiB limit.
        let encoded = "QUJD".repeat(900 * 1024 / 3);
        assert!(fields("", "secrets", json!({"data": {"k": encoded}})).is_empty());
    }

    #[test]
    fn rbac_bindings_and_rules() {
        let rb = json!({"roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "r"},
            "subjects": [{"kind": "Robot", "name": "x"}]});
        assert_eq!(
            fields("rbac.authorization.k8s.io", "clusterrolebindings", rb.clone()),
            ["roleRef.kind", "subjects[0].kind"]
        );
        let mut changed = rb.clone();
        changed["roleRef"]["name"] = json!("other");
        assert_eq!(
            update("rbac.authorization.k8s.io", "rolebindings", rb, changed)[0].0,
            "roleRef"
        );
        let role = json!({"rules": [{"apiGroups": [""], "resources": ["pods"]}]});
        assert_eq!(fields("rbac.authorization.k8s.io", "roles", role), ["rules[0].verbs"]);
    }

    #[test]
    fn pdb_and_hpa() {
        let pdb = json!({"spec": {"minAvailable": 1, "maxUnavailable": "10%"}});
        assert_eq!(fields("policy", "poddisruptionbudgets", pdb), ["spec"]);
        let hpa = json!({"spec": {"scaleTargetRef": {"kind": "Deployment"},
            "minReplicas": 3, "maxReplicas": 2}});
        assert_eq!(
            fields("autoscaling", "horizontalpodautoscalers", hpa),
            ["spec.scaleTargetRef.name", "spec.maxReplicas"]
        );
    }

    #[test]
    fn crd_names_versions_and_schema() {
        let crd = json!({"metadata": {"name": "widgets.example.com"}, "spec": {
            "group": "example.com", "scope": "Namespaced",
            "names": {"plural": "widgets", "kind": "Widget"},
            "versions": [{"name": "v1", "served": true, "storage": true,
                          "schema": {"openAPIV3Schema": {"type": "object"}}}]}});
        assert!(fields("apiextensions.k8s.io", "customresourcedefinitions", crd.clone()).is_empty());
        let mut bad = crd.clone();
        bad["metadata"]["name"] = json!("widgets");
        bad["spec"]["versions"][0]["storage"] = json!(false);
        bad["spec"]["versions"][0]["schema"] = Value::Null;
        assert_eq!(
            fields("apiextensions.k8s.io", "customresourcedefinitions", bad),
            ["metadata.name", "spec.versions", "spec.versions[0].schema.openAPIV3Schema"]
        );
        let mut scoped = crd.clone();
        scoped["spec"]["scope"] = json!("Cluster");
        assert_eq!(
            update("apiextensions.k8s.io", "customresourcedefinitions", crd, scoped)[0].0,
            "spec.scope"
        );
    }
}
