//! Round trips JSON → protobuf → JSON for representative objects of many kinds, Go's zero-value
//! habits on the wire, and cross-checks against the independent `k8s-pb` prost structs.

use prost::Message as _;
use serde_json::{json, Value};

use super::{decode, encode, wire};

fn round_trip(obj: Value) {
    let body = encode(&obj).unwrap_or_else(|| panic!("no protobuf form for {obj}"));
    assert!(body.starts_with(super::MAGIC));
    let back = decode(&body).unwrap_or_else(|e| panic!("decoding {}: {}", obj["kind"], e.message));
    assert_eq!(back, obj, "round trip of {}", obj["kind"]);
}

/// The envelope around a message's bytes, as a client sends it.
fn envelope(api_version: &str, kind: &str, raw: &[u8]) -> Vec<u8> {
    let mut type_meta = Vec::new();
    wire::put_bytes_field(&mut type_meta, 1, api_version.as_bytes());
    wire::put_bytes_field(&mut type_meta, 2, kind.as_bytes());
    let mut out = super::MAGIC.to_vec();
    wire::put_bytes_field(&mut out, 1, &type_meta);
    wire::put_bytes_field(&mut out, 2, raw);
    out
}

/// The object bytes inside an encoded envelope.
fn raw_of(body: &[u8]) -> Vec<u8> {
    let (_, _, raw) = super::unwrap_envelope(&body[4..]).unwrap();
    raw.to_vec()
}

#[test]
fn pod_with_quantities_int_or_strings_times_and_inlined_structs() {
    round_trip(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": "web", "namespace": "default", "uid": "u-1", "resourceVersion": "7",
            "creationTimestamp": "2024-01-02T03:04:05Z", "labels": {"app": "web"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-1",
                                 "uid": "u-0", "controller": true, "blockOwnerDeletion": true}],
            "managedFields": [{"manager": "kubectl", "operation": "Update", "apiVersion": "v1",
                               "time": "2024-01-02T03:04:05Z", "fieldsType": "FieldsV1",
                               "fieldsV1": {"f:metadata": {"f:labels": {".": {}, "f:app": {}}}}}]
        },
        "spec": {
            "enableServiceLinks": false, "terminationGracePeriodSeconds": 0,
            "containers": [{
                "name": "web", "image": "nginx", "args": ["-g", "daemon off;"],
                "ports": [{"containerPort": 8080, "name": "http", "protocol": "TCP"}],
                "resources": {"limits": {"cpu": "500m", "memory": "128Mi"}, "requests": {"cpu": "1"}},
                "readinessProbe": {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 5},
                "livenessProbe": {"tcpSocket": {"port": 8080}},
                "env": [{"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "pw"}}}],
                "volumeMounts": [{"name": "conf", "mountPath": "/etc/conf", "readOnly": true}]
            }],
            "volumes": [
                {"name": "conf", "configMap": {"name": "web-conf", "defaultMode": 420}},
                {"name": "scratch", "emptyDir": {"sizeLimit": "1Gi"}}
            ],
            "tolerations": [{"key": "k", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 30}]
        },
        "status": {
            "phase": "Running", "podIP": "10.0.0.5", "startTime": "2024-01-02T03:04:06Z",
            "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2024-01-02T03:04:07Z"}]
        }
    }));
}

#[test]
fn workloads_keep_pointer_zeros() {
    round_trip(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "generation": 3},
        "spec": {
            "replicas": 0, "selector": {"matchLabels": {"app": "web"}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": "25%"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}
        },
        "status": {"observedGeneration": 3}
    }));
    round_trip(json!({
        "apiVersion": "batch/v1", "kind": "CronJob",
        "metadata": {"name": "nightly", "namespace": "ops"},
        "spec": {
            "schedule": "0 3 * * *", "timeZone": "Etc/UTC", "suspend": false, "concurrencyPolicy": "Forbid",
            "jobTemplate": {"spec": {"backoffLimit": 0, "template": {"spec": {
                "restartPolicy": "OnFailure", "containers": [{"name": "job", "image": "busybox", "command": ["date"]}]}}}}
        },
        "status": {"lastScheduleTime": "2024-01-02T03:00:00Z"}
    }));
}

#[test]
fn custom_resource_definition_schemas() {
    round_trip(json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {
            "group": "example.com", "scope": "Namespaced",
            "names": {"plural": "widgets", "kind": "Widget", "shortNames": ["wd"]},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "additionalPrinterColumns": [{"name": "Size", "type": "integer", "jsonPath": ".spec.size"}],
                "schema": {"openAPIV3Schema": {
                    "type": "object", "required": ["spec"],
                    "properties": {
                        "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": true,
                            "properties": {
                                "size": {"type": "integer", "maximum": 10.5, "default": 3, "format": "int32"},
                                "mode": {"type": "string", "enum": ["a", "b"], "maxLength": 8},
                                "ports": {"type": "array", "x-kubernetes-list-type": "map",
                                    "x-kubernetes-list-map-keys": ["name"],
                                    "items": {"type": "object", "x-kubernetes-int-or-string": true}},
                                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                                "free": {"type": "object", "additionalProperties": false}
                            },
                            "x-kubernetes-validations": [{"rule": "self.size > 0", "message": "positive"}]},
                        "tuple": {"items": [{"type": "string"}, {"type": "integer"}]},
                        "deps": {"dependencies": {"a": ["b", "c"], "d": {"type": "object"}}}
                    }
                }}}]
        }
    }));
}

#[test]
fn reviews_tokens_and_evictions() {
    round_trip(json!({
        "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
        "metadata": {},
        "spec": {"user": "alice", "groups": ["dev"], "extra": {"scopes": ["a", "b"]},
                 "resourceAttributes": {"namespace": "default", "verb": "list", "resource": "pods"}},
        "status": {"allowed": true, "reason": "RBAC"}
    }));
    round_trip(json!({
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
        "metadata": {"name": "default", "namespace": "default"},
        "spec": {"audiences": ["api"], "expirationSeconds": 3600,
                 "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "web", "uid": "u-1"}},
        "status": {"token": "abc", "expirationTimestamp": "2024-01-02T04:04:05Z"}
    }));
    round_trip(json!({
        "apiVersion": "policy/v1", "kind": "Eviction",
        "metadata": {"name": "web", "namespace": "default"},
        "deleteOptions": {"gracePeriodSeconds": 0, "preconditions": {"uid": "u-1"}}
    }));
    round_trip(json!({
        "apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Failure",
        "message": "pods \"x\" not found", "reason": "NotFound", "code": 404,
        "details": {"name": "x", "kind": "pods", "causes": [{"reason": "FieldValueInvalid", "field": "spec"}]}
    }));
}

#[test]
fn lists_networking_storage_and_events() {
    round_trip(json!({
        "apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": "10", "continue": "c"},
        "items": [{"metadata": {"name": "a"}, "spec": {"containers": [{"name": "c", "image": "i"}]}}]
    }));
    round_trip(json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "web"},
        "spec": {"ingressClassName": "nginx", "rules": [{"host": "a.example.com", "http": {"paths": [
            {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]}
    }));
    round_trip(json!({
        "apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "pv"},
        "spec": {"capacity": {"storage": "1Gi"}, "hostPath": {"path": "/data"}, "accessModes": ["ReadWriteOnce"]}
    }));
    round_trip(json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "c"},
        "spec": {"storageClassName": "", "resources": {"requests": {"storage": "1Gi"}}}
    }));
    round_trip(json!({
        "apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e"},
        "eventTime": "2024-01-02T03:04:05.123456Z", "reportingController": "skerry", "reportingInstance": "x",
        "action": "Scheduled", "reason": "Scheduled", "type": "Normal",
        "series": {"count": 2, "lastObservedTime": "2024-01-02T03:04:06.000001Z"}
    }));
    round_trip(json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": "v"},
        "webhooks": [{"name": "v.example.com", "sideEffects": "None", "admissionReviewVersions": ["v1"],
            "clientConfig": {"caBundle": "AAEC", "url": "https://x"},
            "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}]}]
    }));
    round_trip(json!({
        "apiVersion": "apps/v1", "kind": "ControllerRevision", "metadata": {"name": "r"},
        "revision": 2, "data": {"spec": {"template": {"spec": {}}}}
    }));
    round_trip(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
                      "type": "Opaque", "data": {"k": "dmFsdWU="}, "immutable": true}));
}

#[test]
fn go_zero_values_of_non_pointer_fields_mean_unset() {
    // What a Go client writes for a minimal Service: every non-pointer field, zero or not.
    let written = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "generateName": "", "namespace": "", "generation": 0,
                     "creationTimestamp": null},
        "spec": {"ports": [{"name": "", "port": 80, "targetPort": 0, "nodePort": 0}],
                 "type": "", "publishNotReadyAddresses": false, "sessionAffinity": ""},
        "status": {"loadBalancer": {}}
    });
    let body = encode(&written).unwrap();
    assert_eq!(
        decode(&body).unwrap(),
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
               "spec": {"ports": [{"port": 80}]}, "status": {"loadBalancer": {}}})
    );
}

#[test]
fn rbac_and_access_reviews_as_kubectl_sends_them() {
    // `kubectl auth can-i list pods`: Go writes the empty strings too; they read as unset.
    let written = json!({
        "apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview", "metadata": {},
        "spec": {"resourceAttributes": {"namespace": "default", "verb": "list", "group": "",
                                        "version": "", "resource": "pods", "subresource": "", "name": ""}}
    });
    assert_eq!(
        decode(&encode(&written).unwrap()).unwrap()["spec"],
        json!({"resourceAttributes": {"namespace": "default", "verb": "list", "resource": "pods"}})
    );
    // An empty string inside a list is a value (the core group), not "unset".
    round_trip(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "reader"},
        "rules": [{"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods"]}]
    }));
    round_trip(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "b"},
        "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "alice"}],
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"}
    }));
    round_trip(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"},
                      "data": {"k": "v", "empty": ""}, "binaryData": {"b": "AAE="}}));
}

#[test]
fn decodes_bytes_written_by_k8s_pb() {
    use k8s_pb::api::apps::v1 as apps;
    use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
    use k8s_pb::apimachinery::pkg::util::intstr::IntOrString;
    let deployment = apps::Deployment {
        metadata: Some(meta::ObjectMeta {
            name: Some("web".into()),
            creation_timestamp: Some(meta::Time { seconds: Some(1_704_164_645), nanos: Some(0) }),
            ..Default::default()
        }),
        spec: Some(apps::DeploymentSpec {
            replicas: Some(2),
            strategy: Some(apps::DeploymentStrategy {
                r#type: Some("RollingUpdate".into()),
                rolling_update: Some(apps::RollingUpdateDeployment {
                    // Go writes all three fields of an IntOrString; so do we.
                    max_surge: Some(IntOrString {
                        r#type: Some(1),
                        int_val: Some(0),
                        str_val: Some("50%".into()),
                    }),
                    max_unavailable: Some(IntOrString {
                        r#type: Some(0),
                        int_val: Some(1),
                        str_val: Some(String::new()),
                    }),
                }),
            }),
            ..Default::default()
        }),
        status: None,
    };
    let body = envelope("apps/v1", "Deployment", &deployment.encode_to_vec());
    let obj = decode(&body).unwrap();
    assert_eq!(
        obj,
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
               "metadata": {"name": "web", "creationTimestamp": "2024-01-02T03:04:05Z"},
               "spec": {"replicas": 2, "strategy": {"type": "RollingUpdate",
                        "rollingUpdate": {"maxSurge": "50%", "maxUnavailable": 1}}}})
    );
    // And the other way: k8s-pb reads what we write.
    let back = apps::Deployment::decode(raw_of(&encode(&obj).unwrap()).as_slice()).unwrap();
    assert_eq!(back, deployment);
}

#[test]
fn malformed_and_unknown_bodies() {
    assert_eq!(decode(b"k8s\0\x0a\xff").unwrap_err().code, 400);
    assert_eq!(decode(b"{}").unwrap_err().code, 400);
    // A custom resource in protobuf gets as far as decoding in the reference, which fails
    // there: 400 BadRequest with transformDecodeError's message (see `no_protobuf_form`).
    let widget = envelope("example.com/v1", "Widget", b"\x0a\x03\x0a\x01w");
    let err = decode(&widget).unwrap_err();
    assert_eq!((err.code, err.reason), (400, "BadRequest"));
    assert_eq!(
        err.message,
        "Widget in version \"v1\" cannot be handled as a Widget: \
         Object 'Kind' is missing in 'object has no kind field '"
    );
    assert_eq!(decode(&envelope("", "", b"")).unwrap_err().code, 400);
    // A string where a message belongs.
    let broken = envelope("v1", "Pod", b"\x12\x03abc\x12\x01\xff");
    assert_eq!(decode(&broken).unwrap_err().code, 400);
    assert!(encode(&json!({"apiVersion": "example.com/v1", "kind": "Widget"})).is_none());
    assert!(encode(&json!({"apiVersion": "v1", "kind": "Pod", "spec": "nope"})).is_none());
    // Deep nesting is refused, not a stack overflow.
    let mut schema = json!({"type": "string"});
    for _ in 0..200 {
        schema = json!({"items": schema});
    }
    let crd = json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
                     "spec": {"versions": [{"schema": {"openAPIV3Schema": schema}}]}});
    assert!(encode(&crd).is_none());
}

#[test]
fn beta_kinds_skerry_serves() {
    // metrics.k8s.io/v1beta1 (kubectl top, autoscalers) as metrics-server answers it.
    let pod_metrics = json!({
        "apiVersion": "metrics.k8s.io/v1beta1", "kind": "PodMetrics",
        "metadata": {"name": "web", "namespace": "default",
                     "creationTimestamp": "2024-01-02T03:04:05Z"},
        "timestamp": "2024-01-02T03:04:00Z", "window": "10.5s",
        "containers": [{"name": "c", "usage": {"cpu": "1234n", "memory": "2048Ki"}}]
    });
    round_trip(pod_metrics.clone());
    round_trip(json!({
        "apiVersion": "metrics.k8s.io/v1beta1", "kind": "NodeMetricsList",
        "metadata": {"resourceVersion": "42"},
        "items": [{"metadata": {"name": "node-a"}, "timestamp": "2024-01-02T03:04:00Z",
                   "window": "20s", "usage": {"cpu": "250m", "memory": "1Gi"}}]
    }));
    // The independent k8s-pb structs read what we write.
    use k8s_pb::metrics::pkg::apis::metrics::v1beta1 as metrics;
    let back =
        metrics::PodMetrics::decode(raw_of(&encode(&pod_metrics).unwrap()).as_slice()).unwrap();
    assert_eq!(back.window.and_then(|w| w.duration), Some(10_500_000_000));
    let usage = &back.containers[0].usage;
    assert_eq!(usage["memory"].string.as_deref(), Some("2048Ki"));
    // policy/v1beta1 Evictions are still accepted by the eviction subresource.
    round_trip(json!({
        "apiVersion": "policy/v1beta1", "kind": "Eviction",
        "metadata": {"name": "web", "namespace": "default"},
        "deleteOptions": {"gracePeriodSeconds": 0}
    }));
}
