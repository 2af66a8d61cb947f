//! The PodSecurity, Priority and DefaultStorageClass admission plugins against the real
//! `skerry server`: kubectl 1.32 sees the reference's refusals and `Warning:` lines for
//! namespaces labelled with Pod Security levels; pods get their priority from their
//! PriorityClass (or the global default), unknown classes are refused; a claim without a
//! class gets the default StorageClass.

mod common;

use std::time::Duration;

use common::server::{ApiClient, SkerryServer};
use serde_json::{json, Value};

/// Creates namespace `name` with `labels` and waits for its `default` service account (made
/// by the controller; pods need it).
async fn namespace(api: &ApiClient, name: &str, labels: Value) {
    let ns = json!({"apiVersion": "v1", "kind": "Namespace",
                    "metadata": {"name": name, "labels": labels}});
    let (code, body) = api.json("POST", "/api/v1/namespaces", Some(&ns)).await;
    assert_eq!(code, 201, "{body}");
    let path = format!("/api/v1/namespaces/{name}/serviceaccounts/default");
    for _ in 0..300 {
        if api.json("GET", &path, None).await.0 == 200 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("namespace {name} never got its default service account");
}

/// A pod named `name` with one container `c` whose securityContext is `sc`.
fn pod(name: &str, sc: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
           "spec": {"containers": [{"name": "c", "image": "busybox", "securityContext": sc}]}})
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

const PRIVILEGED_POD: &str = "
apiVersion: v1
kind: Pod
metadata: {name: priv, namespace: psa-baseline}
spec:
  containers:
  - {name: c, image: busybox, securityContext: {privileged: true}}
";

const DEPLOYMENT: &str = "
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: psa-warn}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - {name: web, image: nginx}
";

#[tokio::test]
async fn pod_security_enforces_and_warns_per_namespace() {
    let Some(kubectl) = skerry_testkit::kubectl() else {
        eprintln!("skipping: kubectl 1.32 is not available");
        return;
    };
    let server = SkerryServer::start();
    let api = server.admin();
    namespace(&api, "psa-baseline", json!({"pod-security.kubernetes.io/enforce": "baseline"}))
        .await;
    namespace(&api, "psa-restricted", json!({"pod-security.kubernetes.io/enforce": "restricted"}))
        .await;
    namespace(&api, "psa-warn", json!({"pod-security.kubernetes.io/warn": "restricted"})).await;
    namespace(&api, "psa-open", json!({})).await;

    // Enforce=baseline: a privileged pod is refused with the reference's message.
    let out = server.kubectl_stdin(&kubectl, &["apply", "-f", "-"], Some(PRIVILEGED_POD));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(
            "pods \"priv\" is forbidden: violates PodSecurity \"baseline:latest\": privileged \
             (container \"c\" must not set securityContext.privileged=true)"
        ),
        "{}",
        stderr(&out)
    );
    // A plain pod is fine at baseline.
    let (code, body) = api
        .json("POST", "/api/v1/namespaces/psa-baseline/pods", Some(&pod("plain", json!({}))))
        .await;
    assert_eq!(code, 201, "{body}");

    // Enforce=restricted: the plain pod is refused with every reason, a hardened one passes.
    let (code, status) = api
        .json("POST", "/api/v1/namespaces/psa-restricted/pods", Some(&pod("plain", json!({}))))
        .await;
    assert_eq!(code, 403, "{status}");
    assert_eq!(status["reason"], "Forbidden");
    assert_eq!(
        status["message"],
        "pods \"plain\" is forbidden: violates PodSecurity \"restricted:latest\": \
         allowPrivilegeEscalation != false (container \"c\" must set \
         securityContext.allowPrivilegeEscalation=false), unrestricted capabilities (container \
         \"c\" must set securityContext.capabilities.drop=[\"ALL\"]), runAsNonRoot != true (pod \
         or container \"c\" must set securityContext.runAsNonRoot=true), seccompProfile (pod or \
         container \"c\" must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \
         \"Localhost\")"
    );
    let hardened = json!({"allowPrivilegeEscalation": false, "runAsNonRoot": true,
        "runAsUser": 1000, "seccompProfile": {"type": "RuntimeDefault"},
        "capabilities": {"drop": ["ALL"]}});
    let (code, body) = api
        .json("POST", "/api/v1/namespaces/psa-restricted/pods", Some(&pod("hardened", hardened)))
        .await;
    assert_eq!(code, 201, "{body}");

    // Warn=restricted: a Deployment is created, and kubectl prints the warning for its template.
    let out = server.kubectl_stdin(&kubectl, &["apply", "-f", "-"], Some(DEPLOYMENT));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(
            "Warning: would violate PodSecurity \"restricted:latest\": allowPrivilegeEscalation \
             != false (container \"web\" must set securityContext.allowPrivilegeEscalation=false)"
        ),
        "{}",
        stderr(&out)
    );

    // Raising a namespace's enforce level warns about the pods already there.
    let (code, body) = api
        .json(
            "POST",
            "/api/v1/namespaces/psa-open/pods",
            Some(&pod("priv", json!({"privileged": true}))),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    let label = ["label", "ns", "psa-open", "pod-security.kubernetes.io/enforce=baseline"];
    let out = server.kubectl(&kubectl, &label);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(
            "Warning: existing pods in namespace \"psa-open\" violate the new PodSecurity \
             enforce level \"baseline:latest\""
        ),
        "{err}"
    );
    assert!(err.contains("Warning: priv: privileged"), "{err}");

    // A level that does not exist is refused (422).
    let label =
        ["label", "ns", "psa-open", "--overwrite", "pod-security.kubernetes.io/enforce=strict"];
    let out = server.kubectl(&kubectl, &label);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(
            "metadata.labels[pod-security.kubernetes.io/enforce]: Invalid value: \"strict\": must \
             be one of privileged, baseline, restricted"
        ),
        "{}",
        stderr(&out)
    );
}

#[tokio::test]
async fn priority_classes_resolve_into_pod_priority() {
    let server = SkerryServer::start();
    let api = server.admin();
    const CLASSES: &str = "/apis/scheduling.k8s.io/v1/priorityclasses";
    const PODS: &str = "/api/v1/namespaces/default/pods";
    let wait_for_account = || async {
        for _ in 0..300 {
            if api.json("GET", "/api/v1/namespaces/default/serviceaccounts/default", None).await.0
                == 200
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    wait_for_account().await;

    // The built-in classes exist from the start.
    let (code, node_critical) =
        api.json("GET", &format!("{CLASSES}/system-node-critical"), None).await;
    assert_eq!(code, 200, "{node_critical}");
    assert_eq!(node_critical["value"], 2_000_001_000);
    let (_, cluster_critical) =
        api.json("GET", &format!("{CLASSES}/system-cluster-critical"), None).await;
    assert_eq!(cluster_critical["value"], 2_000_000_000);

    // Without a class and without a default class: priority 0.
    let (code, plain) = api.json("POST", PODS, Some(&pod("plain", json!({})))).await;
    assert_eq!(code, 201, "{plain}");
    assert_eq!(plain["spec"]["priority"], 0);

    // A named class gives its value and preemption policy.
    let high = json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
        "metadata": {"name": "high"}, "value": 1000, "preemptionPolicy": "Never"});
    let (code, body) = api.json("POST", CLASSES, Some(&high)).await;
    assert_eq!(code, 201, "{body}");
    let mut with_class = pod("important", json!({}));
    with_class["spec"]["priorityClassName"] = json!("high");
    let (code, important) = api.json("POST", PODS, Some(&with_class)).await;
    assert_eq!(code, 201, "{important}");
    assert_eq!(important["spec"]["priority"], 1000);
    assert_eq!(important["spec"]["preemptionPolicy"], "Never");

    // An unknown class, or a priority that contradicts the class, is refused.
    let mut unknown = pod("lost", json!({}));
    unknown["spec"]["priorityClassName"] = json!("nope");
    let (code, status) = api.json("POST", PODS, Some(&unknown)).await;
    assert_eq!(code, 403, "{status}");
    assert_eq!(
        status["message"],
        "pods \"lost\" is forbidden: no PriorityClass with name nope was found"
    );
    let mut contradicting = with_class.clone();
    contradicting["metadata"]["name"] = json!("sneaky");
    contradicting["spec"]["priority"] = json!(5);
    let (code, status) = api.json("POST", PODS, Some(&contradicting)).await;
    assert_eq!(code, 403, "{status}");
    assert_eq!(
        status["message"],
        "pods \"sneaky\" is forbidden: the integer value of priority (5) must not be provided in \
         pod spec; priority admission controller computed 1000 from the given PriorityClass name"
    );

    // A global default class applies to pods without a class; there can be only one.
    let default = json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
        "metadata": {"name": "everyday"}, "value": 50, "globalDefault": true});
    let (code, body) = api.json("POST", CLASSES, Some(&default)).await;
    assert_eq!(code, 201, "{body}");
    let (code, defaulted) = api.json("POST", PODS, Some(&pod("defaulted", json!({})))).await;
    assert_eq!(code, 201, "{defaulted}");
    assert_eq!(defaulted["spec"]["priorityClassName"], "everyday");
    assert_eq!(defaulted["spec"]["priority"], 50);
    let mut second = default.clone();
    second["metadata"]["name"] = json!("another");
    let (code, status) = api.json("POST", CLASSES, Some(&second)).await;
    assert_eq!(code, 403, "{status}");
    assert_eq!(
        status["message"],
        "priorityclasses.scheduling.k8s.io \"another\" is forbidden: PriorityClass everyday is \
         already marked as default. Only one default can exist"
    );

    // Reserved names and values beyond the user range are invalid.
    let reserved = json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
        "metadata": {"name": "system-mine"}, "value": 10});
    let (code, status) = api.json("POST", CLASSES, Some(&reserved)).await;
    assert_eq!(code, 422, "{status}");
    let huge = json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
        "metadata": {"name": "huge"}, "value": 2_000_000_000});
    let (code, status) = api.json("POST", CLASSES, Some(&huge)).await;
    assert_eq!(code, 422, "{status}");
    assert_eq!(
        status["details"]["causes"][0]["message"],
        "Forbidden: maximum allowed value of a user defined priority is 1000000000"
    );
}

#[tokio::test]
async fn claims_without_a_class_get_the_default_storage_class() {
    let server = SkerryServer::start();
    let api = server.admin();
    const PVCS: &str = "/api/v1/namespaces/default/persistentvolumeclaims";
    // "fast" sorts before any class made at start, so it wins even in the same second.
    let class = json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
        "metadata": {"name": "fast",
                     "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
        "provisioner": "example.com/fast"});
    let (code, body) =
        api.json("POST", "/apis/storage.k8s.io/v1/storageclasses", Some(&class)).await;
    assert_eq!(code, 201, "{body}");
    let claim = |name: &str, class: Option<&str>| {
        let mut claim = json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": name},
            "spec": {"accessModes": ["ReadWriteOnce"],
                     "resources": {"requests": {"storage": "1Gi"}}}});
        if let Some(class) = class {
            claim["spec"]["storageClassName"] = json!(class);
        }
        claim
    };

    let (code, defaulted) = api.json("POST", PVCS, Some(&claim("data", None))).await;
    assert_eq!(code, 201, "{defaulted}");
    assert_eq!(defaulted["spec"]["storageClassName"], "fast");
    // An empty class asks for none; a named class is kept.
    let (_, none) = api.json("POST", PVCS, Some(&claim("static", Some("")))).await;
    assert_eq!(none["spec"]["storageClassName"], "");
    let (_, named) = api.json("POST", PVCS, Some(&claim("slow", Some("slow")))).await;
    assert_eq!(named["spec"]["storageClassName"], "slow");
    // What was stored is what was answered.
    let (_, stored) = api.json("GET", &format!("{PVCS}/data"), None).await;
    assert_eq!(stored["spec"]["storageClassName"], "fast");
}
