//! LimitRanger and ResourceQuota against the real `skerry server`: LimitRange defaults land on
//! a new pod (with the `kubernetes.io/limit-ranger` annotation) and a pod or claim over a bound
//! is 403 with the reference's message; a quota refuses the create that would exceed it with the
//! reference's message, `kubectl get/describe quota` show the usage, deleting (or finishing) a
//! pod gives quota back through the resourcequota controller's recount, and concurrent creates
//! against a quota never get past it and leave `status.used` exact.

mod common;

use std::time::Duration;

use common::agent::eventually;
use common::server::{ok, runtime, ApiClient, SkerryServer};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(30);

fn pod(name: &str, resources: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"containers": [{"name": "c", "image": "busybox", "resources": resources}]}})
}

/// Creates namespace `ns` and waits for its `default` service account (pods need it).
fn namespace(rt: &tokio::runtime::Runtime, api: &ApiClient, ns: &str) {
    let body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
    let (code, answer) = rt.block_on(api.json("POST", "/api/v1/namespaces", Some(&body)));
    assert_eq!(code, 201, "{answer}");
    eventually("the default service account", WAIT, || {
        let path = format!("/api/v1/namespaces/{ns}/serviceaccounts/default");
        match rt.block_on(api.json("GET", &path, None)) {
            (200, _) => Ok(()),
            (code, body) => Err(format!("{code}: {body}")),
        }
    });
}

fn post(rt: &tokio::runtime::Runtime, api: &ApiClient, path: &str, body: &Value) -> (u16, Value) {
    rt.block_on(api.json("POST", path, Some(body)))
}

/// Creates a quota and waits until the controller has filled in its status.
fn quota(rt: &tokio::runtime::Runtime, api: &ApiClient, ns: &str, name: &str, hard: Value) {
    let body = json!({"apiVersion": "v1", "kind": "ResourceQuota",
        "metadata": {"name": name}, "spec": {"hard": hard}});
    let path = format!("/api/v1/namespaces/{ns}/resourcequotas");
    let (code, answer) = post(rt, api, &path, &body);
    assert_eq!(code, 201, "{answer}");
    let keys: Vec<String> = hard.as_object().unwrap().keys().cloned().collect();
    eventually("the quota's status", WAIT, || {
        let q = used(rt, api, ns, name);
        if keys.iter().all(|k| q["status"]["used"].get(k).is_some()) {
            Ok(())
        } else {
            Err(q.to_string())
        }
    });
}

fn used(rt: &tokio::runtime::Runtime, api: &ApiClient, ns: &str, name: &str) -> Value {
    let path = format!("/api/v1/namespaces/{ns}/resourcequotas/{name}");
    let (code, q) = rt.block_on(api.json("GET", &path, None));
    assert_eq!(code, 200, "{q}");
    q
}

#[test]
fn limit_ranges_default_and_bound_pods_and_claims() {
    let server = SkerryServer::start();
    let (rt, api) = (runtime(), server.admin());
    namespace(&rt, &api, "lr");
    let limits = json!({"apiVersion": "v1", "kind": "LimitRange", "metadata": {"name": "limits"},
        "spec": {"limits": [
            {"type": "Container", "default": {"cpu": "500m", "memory": "256Mi"},
             "defaultRequest": {"cpu": "100m"}, "max": {"cpu": "1"}},
            {"type": "PersistentVolumeClaim", "max": {"storage": "1Gi"}}]}});
    let (code, answer) = post(&rt, &api, "/api/v1/namespaces/lr/limitranges", &limits);
    assert_eq!(code, 201, "{answer}");

    let (code, created) = post(&rt, &api, "/api/v1/namespaces/lr/pods", &pod("plain", json!({})));
    assert_eq!(code, 201, "{created}");
    assert_eq!(
        created["spec"]["containers"][0]["resources"],
        json!({"requests": {"cpu": "100m", "memory": "256Mi"},
               "limits": {"cpu": "500m", "memory": "256Mi"}})
    );
    assert_eq!(
        created["metadata"]["annotations"]["kubernetes.io/limit-ranger"],
        "LimitRanger plugin set: cpu, memory request for container c; \
         cpu, memory limit for container c"
    );

    let greedy = pod("greedy", json!({"limits": {"cpu": "2"}}));
    let (code, status) = post(&rt, &api, "/api/v1/namespaces/lr/pods", &greedy);
    assert_eq!(code, 403, "{status}");
    assert_eq!(
        status["message"],
        "pods \"greedy\" is forbidden: maximum cpu usage per Container is 1, but limit is 2"
    );
    assert_eq!(status["reason"], "Forbidden");

    let claim = json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": "big"}, "spec": {"accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": "2Gi"}}}});
    let (code, status) = post(&rt, &api, "/api/v1/namespaces/lr/persistentvolumeclaims", &claim);
    assert_eq!(code, 403, "{status}");
    assert_eq!(
        status["message"],
        "persistentvolumeclaims \"big\" is forbidden: maximum storage usage per \
         PersistentVolumeClaim is 1Gi, but request is 2Gi"
    );

    // kubectl shows the same refusal.
    let Some(kubectl) = skerry_testkit::kubectl() else {
        eprintln!("skipping the kubectl part: kubectl 1.32 is not available");
        return;
    };
    let out = server.kubectl_stdin(
        &kubectl,
        &["create", "-n", "lr", "-f", "-"],
        Some(&greedy.to_string()),
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "pods \"greedy\" is forbidden: maximum cpu usage per Container is 1, but limit is 2"
        ),
        "{stderr}"
    );
}

#[test]
fn quota_refuses_the_create_beyond_it_and_deletes_give_it_back() {
    let server = SkerryServer::start();
    let (rt, api) = (runtime(), server.admin());
    namespace(&rt, &api, "quota");
    quota(&rt, &api, "quota", "q", json!({"pods": "2"}));
    let pods = "/api/v1/namespaces/quota/pods";
    for name in ["p1", "p2"] {
        let (code, answer) = post(&rt, &api, pods, &pod(name, json!({})));
        assert_eq!(code, 201, "{answer}");
    }
    // Charged by admission at once, not at the controller's next recount.
    assert_eq!(used(&rt, &api, "quota", "q")["status"]["used"]["pods"], "2");
    let (code, status) = post(&rt, &api, pods, &pod("p3", json!({})));
    assert_eq!(code, 403, "{status}");
    assert_eq!(
        status["message"],
        "pods \"p3\" is forbidden: exceeded quota: q, requested: pods=1, used: pods=2, limited: pods=2"
    );

    if let Some(kubectl) = skerry_testkit::kubectl() {
        let described =
            ok(server.kubectl(&kubectl, &["describe", "quota", "q", "-n", "quota"]), "describe");
        assert!(
            described
                .lines()
                .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["pods", "2", "2"]),
            "{described}"
        );
        let listed = ok(server.kubectl(&kubectl, &["get", "quota", "-n", "quota"]), "get quota");
        assert!(listed.contains("pods: 2/2"), "{listed}");
    }

    // Deleting a pod frees its slot: the controller recounts.
    let (code, answer) =
        rt.block_on(api.json("DELETE", &format!("{pods}/p1?gracePeriodSeconds=0"), None));
    assert_eq!(code, 200, "{answer}");
    eventually("the quota recounted after the delete", WAIT, || {
        let q = used(&rt, &api, "quota", "q");
        if q["status"]["used"]["pods"] == "1" {
            Ok(())
        } else {
            Err(q.to_string())
        }
    });
    let (code, answer) = post(&rt, &api, pods, &pod("p3", json!({})));
    assert_eq!(code, 201, "{answer}");
}

#[test]
fn compute_quota_needs_stated_resources_and_frees_finished_pods() {
    let server = SkerryServer::start();
    let (rt, api) = (runtime(), server.admin());
    namespace(&rt, &api, "compute");
    quota(&rt, &api, "compute", "compute", json!({"requests.cpu": "1", "limits.cpu": "2"}));
    let pods = "/api/v1/namespaces/compute/pods";
    let (code, status) = post(&rt, &api, pods, &pod("bare", json!({})));
    assert_eq!(code, 403, "{status}");
    assert_eq!(
        status["message"],
        "pods \"bare\" is forbidden: failed quota: compute: must specify limits.cpu for: c; \
         must specify requests.cpu for: c"
    );
    let sized = json!({"requests": {"cpu": "600m"}, "limits": {"cpu": "1"}});
    let (code, answer) = post(&rt, &api, pods, &pod("a", sized.clone()));
    assert_eq!(code, 201, "{answer}");
    let (code, status) = post(&rt, &api, pods, &pod("b", sized.clone()));
    assert_eq!(code, 403, "{status}");
    assert_eq!(
        status["message"],
        "pods \"b\" is forbidden: exceeded quota: compute, requested: requests.cpu=600m, \
         used: requests.cpu=600m, limited: requests.cpu=1"
    );
    assert_eq!(
        used(&rt, &api, "compute", "compute")["status"]["used"],
        json!({"requests.cpu": "600m", "limits.cpu": "1"})
    );

    // A pod that finished no longer uses compute (written as its agent would).
    let (code, mut a) = rt.block_on(api.json("GET", &format!("{pods}/a"), None));
    assert_eq!(code, 200, "{a}");
    a["status"] = json!({"phase": "Succeeded"});
    let (code, answer) = rt.block_on(api.json("PUT", &format!("{pods}/a/status"), Some(&a)));
    assert_eq!(code, 200, "{answer}");
    eventually("the finished pod's compute given back", WAIT, || {
        let q = used(&rt, &api, "compute", "compute");
        if q["status"]["used"] == json!({"requests.cpu": "0", "limits.cpu": "0"}) {
            Ok(())
        } else {
            Err(q.to_string())
        }
    });
    let (code, answer) = post(&rt, &api, pods, &pod("b", sized));
    assert_eq!(code, 201, "{answer}");
}

#[test]
fn concurrent_creates_never_exceed_the_quota() {
    const ATTEMPTS: usize = 24;
    let server = SkerryServer::start();
    let (rt, api) = (runtime(), server.admin());
    namespace(&rt, &api, "race");
    // The CA config map every namespace gets counts too: wait for it so the count is known.
    eventually("kube-root-ca.crt", WAIT, || {
        match rt.block_on(api.json(
            "GET",
            "/api/v1/namespaces/race/configmaps/kube-root-ca.crt",
            None,
        )) {
            (200, _) => Ok(()),
            (code, body) => Err(format!("{code}: {body}")),
        }
    });
    quota(&rt, &api, "race", "cm", json!({"count/configmaps": "5"}));
    assert_eq!(used(&rt, &api, "race", "cm")["status"]["used"]["count/configmaps"], "1");

    let outcomes: Vec<(u16, Value)> = rt.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..ATTEMPTS {
            let api = server.admin();
            tasks.spawn(async move {
                let body = json!({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": format!("cm-{i}")}, "data": {"i": i.to_string()}});
                api.json("POST", "/api/v1/namespaces/race/configmaps", Some(&body)).await
            });
        }
        let mut out = Vec::new();
        while let Some(done) = tasks.join_next().await {
            out.push(done.unwrap());
        }
        out
    });
    // Codes and messages only: full objects make a failure unreadable.
    let summary: Vec<(u16, &Value)> =
        outcomes.iter().map(|(code, body)| (*code, &body["message"])).collect();
    let created = outcomes.iter().filter(|(code, _)| *code == 201).count();
    let refused: Vec<&Value> =
        outcomes.iter().filter(|(code, _)| *code == 403).map(|(_, body)| body).collect();
    assert_eq!(created, 4, "{summary:?}");
    assert_eq!(refused.len(), ATTEMPTS - 4, "{summary:?}");
    for status in refused {
        let message = status["message"].as_str().unwrap_or_default();
        assert!(
            message.ends_with(
                "is forbidden: exceeded quota: cm, requested: count/configmaps=1, \
                 used: count/configmaps=5, limited: count/configmaps=5"
            ),
            "{message}"
        );
    }
    let (_, list) = rt.block_on(api.json("GET", "/api/v1/namespaces/race/configmaps", None));
    assert_eq!(list["items"].as_array().map(Vec::len), Some(5), "{list}");
    assert_eq!(used(&rt, &api, "race", "cm")["status"]["used"]["count/configmaps"], "5");

    // A spec change makes the controller recount from the objects: still exactly 5.
    let mut q = used(&rt, &api, "race", "cm");
    q["spec"]["hard"]["count/configmaps"] = json!("6");
    let path = "/api/v1/namespaces/race/resourcequotas/cm";
    let (code, answer) = rt.block_on(api.json("PUT", path, Some(&q)));
    assert_eq!(code, 200, "{answer}");
    eventually("the recount after the spec change", WAIT, || {
        let q = used(&rt, &api, "race", "cm");
        let status = &q["status"];
        if status["hard"]["count/configmaps"] == "6" && status["used"]["count/configmaps"] == "5" {
            Ok(())
        } else {
            Err(q.to_string())
        }
    });
}

/// A merge patch; answers status and JSON.
fn patch(rt: &tokio::runtime::Runtime, api: &ApiClient, path: &str, body: &Value) -> (u16, Value) {
    let bytes = serde_json::to_vec(body).unwrap();
    let resp = rt
        .block_on(api.request("PATCH", path, Some("application/merge-patch+json"), &bytes))
        .unwrap();
    (resp.status, resp.json())
}

#[test]
fn updates_are_charged_what_they_add() {
    let server = SkerryServer::start();
    let (rt, api) = (runtime(), server.admin());
    namespace(&rt, &api, "grow");
    quota(&rt, &api, "grow", "ports", json!({"services.nodeports": "1"}));
    let services = "/api/v1/namespaces/grow/services";
    for name in ["a", "b"] {
        let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"ports": [{"port": 80}], "selector": {"app": name}}});
        let (code, answer) = post(&rt, &api, services, &svc);
        assert_eq!(code, 201, "{answer}");
    }
    // ClusterIP services cost no node port; turning one into a NodePort takes the only one.
    let to_node_port = json!({"spec": {"type": "NodePort"}});
    let (code, answer) = patch(&rt, &api, &format!("{services}/a"), &to_node_port);
    assert_eq!(code, 200, "{answer}");
    assert_eq!(used(&rt, &api, "grow", "ports")["status"]["used"]["services.nodeports"], "1");
    let (code, status) = patch(&rt, &api, &format!("{services}/b"), &to_node_port);
    assert_eq!(code, 403, "{status}");
    assert_eq!(
        status["message"],
        "services \"b\" is forbidden: exceeded quota: ports, requested: services.nodeports=1, \
         used: services.nodeports=1, limited: services.nodeports=1"
    );
    let (code, svc) = rt.block_on(api.json("GET", &format!("{services}/b"), None));
    assert_eq!((code, &svc["spec"]["type"]), (200, &json!("ClusterIP")), "{svc}");

    // A claim resized past requests.storage (and its class's share) is refused.
    let class = json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
        "metadata": {"name": "grow-fast"}, "provisioner": "example.com/none",
        "allowVolumeExpansion": true});
    let (code, answer) = post(&rt, &api, "/apis/storage.k8s.io/v1/storageclasses", &class);
    assert_eq!(code, 201, "{answer}");
    let class_key = "grow-fast.storageclass.storage.k8s.io/requests.storage";
    quota(&rt, &api, "grow", "storage", json!({"requests.storage": "3Gi", class_key: "2Gi"}));
    // Only a bound claim may grow (as in the reference): a volume pre-bound to it.
    let pv = json!({"apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": "grow-pv"}, "spec": {"storageClassName": "grow-fast",
        "capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
        "hostPath": {"path": "/tmp/grow-pv"}, "claimRef": {"namespace": "grow", "name": "data"}}});
    let (code, answer) = post(&rt, &api, "/api/v1/persistentvolumes", &pv);
    assert_eq!(code, 201, "{answer}");
    let claims = "/api/v1/namespaces/grow/persistentvolumeclaims";
    let pvc = json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": "data"}, "spec": {"storageClassName": "grow-fast",
        "volumeName": "grow-pv", "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": "1Gi"}}}});
    let (code, answer) = post(&rt, &api, claims, &pvc);
    assert_eq!(code, 201, "{answer}");
    eventually("the claim is bound", WAIT, || {
        let (_, claim) = rt.block_on(api.json("GET", &format!("{claims}/data"), None));
        (claim["status"]["phase"] == "Bound").then_some(()).ok_or_else(|| claim.to_string())
    });
    let resize = |size: &str| json!({"spec": {"resources": {"requests": {"storage": size}}}});
    let (code, answer) = patch(&rt, &api, &format!("{claims}/data"), &resize("2Gi"));
    assert_eq!(code, 200, "{answer}");
    let q = used(&rt, &api, "grow", "storage");
    assert_eq!(q["status"]["used"]["requests.storage"], "2Gi", "{q}");
    assert_eq!(q["status"]["used"][class_key], "2Gi", "{q}");
    let (code, status) = patch(&rt, &api, &format!("{claims}/data"), &resize("3Gi"));
    assert_eq!(code, 403, "{status}");
    assert_eq!(
        status["message"],
        format!(
            "persistentvolumeclaims \"data\" is forbidden: exceeded quota: storage, requested: \
             {class_key}=1Gi, used: {class_key}=2Gi, limited: {class_key}=2Gi"
        )
    );
}
