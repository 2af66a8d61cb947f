//! Defaulting as the reference apiserver does it before validation and storage: the
//! `SetDefaults_*` functions of core, apps, batch, networking, rbac, storage, scheduling,
//! admissionregistration and apiextensions, plus the defaults their REST strategies apply on
//! create (namespace finalizers and phase, service IP families, job selectors).
//!
//! Everything works on `serde_json::Value` in place and only ever fills fields that are absent
//! or `null`: a field of the wrong JSON type is left alone for validation to reject, and no input
//! shape panics. Custom resources get the defaults of their CRD's structural schema
//! ([`apply_custom`]).

mod custom;
mod kinds;
mod pod;

use serde_json::{Map, Value};

use super::resource::ResourceInfo;

pub use custom::{apply_custom, prune_custom};

/// Fills in the reference defaults of a built-in object in place.
pub fn apply(info: &ResourceInfo, obj: &mut Value) {
    if info.custom {
        if let Some(schema) = &info.schema {
            apply_custom(schema, obj);
        }
        return;
    }
    kinds::apply(&info.group, &info.kind, obj);
}

/// Sets `key` to `value` on an object when it is absent or null; a no-op on non-objects.
pub(crate) fn set(obj: &mut Value, key: &str, value: Value) {
    if let Some(map) = obj.as_object_mut() {
        match map.get(key) {
            Some(v) if !v.is_null() => {}
            _ => {
                map.insert(key.to_string(), value);
            }
        }
    }
}

/// The object at `key`, created empty when absent or null; `None` when `obj` is not an object
/// or `key` holds something other than an object.
pub(crate) fn child<'a>(obj: &'a mut Value, key: &str) -> Option<&'a mut Value> {
    set(obj, key, Value::Object(Map::new()));
    obj.get_mut(key).filter(|v| v.is_object())
}

/// The object at `key` only if it already exists.
pub(crate) fn existing<'a>(obj: &'a mut Value, key: &str) -> Option<&'a mut Value> {
    obj.get_mut(key).filter(|v| v.is_object())
}

/// Each element of the array at `key`, if any.
pub(crate) fn each(obj: &mut Value, key: &str, mut f: impl FnMut(&mut Value)) {
    if let Some(items) = obj.get_mut(key).and_then(Value::as_array_mut) {
        items.iter_mut().for_each(&mut f);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::resource::Registry;
    use serde_json::json;

    fn defaulted(group: &str, plural: &str, mut obj: Value) -> Value {
        let info = Registry::builtin()
            .all()
            .into_iter()
            .find(|r| r.group == group && r.plural == plural)
            .unwrap();
        apply(&info, &mut obj);
        obj
    }

    #[test]
    fn minimal_pod_gets_the_reference_defaults() {
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"},
            "spec": {"containers": [{"name": "web", "image": "nginx",
                                     "ports": [{"containerPort": 80}]}]}});
        // As `kubectl get pod -o yaml` shows it against the reference apiserver (less the
        // service account token volume, which comes with token issuance).
        assert_eq!(
            defaulted("", "pods", pod),
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"},
                "spec": {
                    "containers": [{"name": "web", "image": "nginx", "imagePullPolicy": "Always",
                        "ports": [{"containerPort": 80, "protocol": "TCP"}], "resources": {},
                        "terminationMessagePath": "/dev/termination-log",
                        "terminationMessagePolicy": "File"}],
                    "dnsPolicy": "ClusterFirst", "enableServiceLinks": true,
                    "restartPolicy": "Always", "schedulerName": "default-scheduler",
                    "securityContext": {}, "serviceAccount": "default",
                    "serviceAccountName": "default", "terminationGracePeriodSeconds": 30,
                    "tolerations": [
                        {"effect": "NoExecute", "key": "node.kubernetes.io/not-ready",
                         "operator": "Exists", "tolerationSeconds": 300},
                        {"effect": "NoExecute", "key": "node.kubernetes.io/unreachable",
                         "operator": "Exists", "tolerationSeconds": 300}]},
                "status": {"phase": "Pending", "qosClass": "BestEffort"}})
        );
    }

    #[test]
    fn pod_requests_default_to_limits_and_qos_follows() {
        let pod = json!({"spec": {"containers": [{"name": "a", "image": "x:1",
            "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]}});
        let pod = defaulted("", "pods", pod);
        assert_eq!(
            pod["spec"]["containers"][0]["resources"]["requests"],
            json!({"cpu": "1", "memory": "1Gi"})
        );
        assert_eq!(pod["spec"]["containers"][0]["imagePullPolicy"], "IfNotPresent");
        assert_eq!(pod["status"]["qosClass"], "Guaranteed");
    }

    #[test]
    fn minimal_deployment_gets_strategy_and_template_defaults() {
        let deploy = json!({"metadata": {"name": "web"}, "spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                         "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}}}});
        let d = defaulted("apps", "deployments", deploy);
        let spec = &d["spec"];
        assert_eq!(spec["replicas"], 1);
        assert_eq!(spec["revisionHistoryLimit"], 10);
        assert_eq!(spec["progressDeadlineSeconds"], 600);
        assert_eq!(
            spec["strategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}})
        );
        let pod_spec = &spec["template"]["spec"];
        assert_eq!(pod_spec["restartPolicy"], "Always");
        assert_eq!(pod_spec["containers"][0]["imagePullPolicy"], "IfNotPresent");
        // Templates do not get the pod-only enableServiceLinks, nor a status.
        assert!(pod_spec.get("enableServiceLinks").is_none());
        assert!(d.get("status").is_none());
    }

    #[test]
    fn recreate_strategy_gets_no_rolling_update() {
        let deploy = json!({"spec": {"strategy": {"type": "Recreate"}}});
        let d = defaulted("apps", "deployments", deploy);
        assert_eq!(d["spec"]["strategy"], json!({"type": "Recreate"}));
    }

    #[test]
    fn minimal_service_gets_the_reference_defaults() {
        let svc = json!({"metadata": {"name": "web"}, "spec": {"selector": {"app": "web"},
            "ports": [{"port": 80}, {"port": 443, "targetPort": "https"}]}});
        assert_eq!(
            defaulted("", "services", svc)["spec"],
            json!({"selector": {"app": "web"}, "type": "ClusterIP", "sessionAffinity": "None",
                "ports": [{"port": 80, "protocol": "TCP", "targetPort": 80},
                          {"port": 443, "protocol": "TCP", "targetPort": "https"}],
                "internalTrafficPolicy": "Cluster", "ipFamilyPolicy": "SingleStack",
                "ipFamilies": ["IPv4"]})
        );
        let node_port = json!({"spec": {"type": "NodePort", "sessionAffinity": "ClientIP"}});
        let spec = defaulted("", "services", node_port)["spec"].clone();
        assert_eq!(spec["externalTrafficPolicy"], "Cluster");
        assert_eq!(spec["sessionAffinityConfig"]["clientIP"]["timeoutSeconds"], 10800);
        let external = json!({"spec": {"type": "ExternalName", "externalName": "db.example.com"}});
        assert!(defaulted("", "services", external)["spec"].get("ipFamilies").is_none());
    }

    #[test]
    fn secret_string_data_is_merged_into_data() {
        let s = defaulted(
            "",
            "secrets",
            json!({"metadata": {"name": "s"}, "data": {"a": "MQ==", "b": "Mg=="},
                   "stringData": {"b": "two", "c": "three"}}),
        );
        assert_eq!(s["type"], "Opaque");
        assert_eq!(s["data"], json!({"a": "MQ==", "b": "dHdv", "c": "dGhyZWU="}));
        assert!(s.get("stringData").is_none());
    }

    #[test]
    fn namespace_gets_finalizer_phase_and_name_label() {
        let ns = defaulted("", "namespaces", json!({"metadata": {"name": "team-a"}}));
        assert_eq!(ns["spec"]["finalizers"], json!(["kubernetes"]));
        assert_eq!(ns["status"]["phase"], "Active");
        assert_eq!(ns["metadata"]["labels"]["kubernetes.io/metadata.name"], "team-a");
    }

    #[test]
    fn jobs_cronjobs_statefulsets_daemonsets() {
        let job = json!({"metadata": {"name": "pi", "uid": "u-1"},
            "spec": {"template": {"spec": {"containers": [{"name": "pi", "image": "perl:5"}],
                                           "restartPolicy": "Never"}}}});
        let job = defaulted("batch", "jobs", job);
        let spec = &job["spec"];
        assert_eq!((&spec["completions"], &spec["parallelism"]), (&json!(1), &json!(1)));
        assert_eq!(spec["backoffLimit"], 6);
        assert_eq!(spec["completionMode"], "NonIndexed");
        assert_eq!(spec["selector"]["matchLabels"]["batch.kubernetes.io/controller-uid"], "u-1");
        assert_eq!(spec["template"]["metadata"]["labels"]["job-name"], "pi");
        assert_eq!(spec["template"]["spec"]["restartPolicy"], "Never");

        let parallel = defaulted("batch", "jobs", json!({"spec": {"parallelism": 3}}));
        assert!(parallel["spec"].get("completions").is_none());

        let cj = defaulted("batch", "cronjobs", json!({"spec": {"schedule": "* * * * *"}}));
        assert_eq!(cj["spec"]["concurrencyPolicy"], "Allow");
        assert_eq!(cj["spec"]["successfulJobsHistoryLimit"], 3);
        assert_eq!(cj["spec"]["failedJobsHistoryLimit"], 1);

        let sts = defaulted("apps", "statefulsets", json!({"spec": {}}));
        assert_eq!(sts["spec"]["podManagementPolicy"], "OrderedReady");
        assert_eq!(sts["spec"]["updateStrategy"]["rollingUpdate"]["partition"], 0);
        let ds = defaulted("apps", "daemonsets", json!({"spec": {}}));
        assert_eq!(
            ds["spec"]["updateStrategy"]["rollingUpdate"],
            json!({"maxUnavailable": 1, "maxSurge": 0})
        );
    }

    #[test]
    fn defaulting_never_panics_and_keeps_wrong_types_for_validation() {
        let registry = Registry::builtin();
        let shapes = [
            json!(null),
            json!("pod"),
            json!({"spec": 5}),
            json!({"spec": {"containers": "x", "template": [], "ports": {"a": 1}}}),
            json!({"metadata": {"name": 3, "uid": []}, "spec": {"containers": [7, null],
                "strategy": "fast", "updateStrategy": {"type": 1}, "selector": "x"}}),
        ];
        for info in registry.all() {
            for shape in &shapes {
                let mut obj = shape.clone();
                apply(&info, &mut obj);
            }
        }
        let mut bad = json!({"spec": {"replicas": "three"}});
        apply(&registry.resolve("apps", "v1", "deployments").unwrap(), &mut bad);
        assert_eq!(bad["spec"]["replicas"], "three");
    }
}
