//! The REST verbs of the real `skerry server` over HTTPS, with the reference apiserver's
//! semantics and one test per error class, each checking the `Status` it gets back.

mod common;

use common::server::{ApiClient, SkerryServer};
use serde_json::{json, Value};

fn configmap(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"k": "v"}})
}

fn assert_status(body: &Value, code: u16, reason: &str) {
    assert_eq!(body["kind"], "Status", "{body}");
    assert_eq!(body["status"], "Failure", "{body}");
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["reason"], reason, "{body}");
}

const CMS: &str = "/api/v1/namespaces/default/configmaps";

#[tokio::test]
async fn create_get_update_with_optimistic_concurrency() {
    let server = SkerryServer::start();
    let api = server.admin();

    let (code, created) = api.json("POST", CMS, Some(&configmap("one"))).await;
    assert_eq!(code, 201, "{created}");
    let uid = created["metadata"]["uid"].as_str().unwrap().to_string();
    assert_eq!(uid.len(), 36);
    assert!(created["metadata"]["creationTimestamp"].as_str().unwrap().ends_with('Z'));
    let rv1: i64 = created["metadata"]["resourceVersion"].as_str().unwrap().parse().unwrap();

    // AlreadyExists: 409 naming the object.
    let (code, body) = api.json("POST", CMS, Some(&configmap("one"))).await;
    assert_status(&body, 409, "AlreadyExists");
    assert_eq!(code, 409);
    assert_eq!(body["details"]["name"], "one");
    assert_eq!(body["details"]["kind"], "configmaps");

    // Update with the current resourceVersion succeeds and moves it forward.
    let mut update = created.clone();
    update["data"]["k"] = json!("v2");
    let (code, updated) = api.json("PUT", &format!("{CMS}/one"), Some(&update)).await;
    assert_eq!(code, 200, "{updated}");
    let rv2: i64 = updated["metadata"]["resourceVersion"].as_str().unwrap().parse().unwrap();
    assert!(rv2 > rv1);
    assert_eq!(updated["metadata"]["uid"], uid.as_str());

    // The stale resourceVersion is now a 409 Conflict.
    update["data"]["k"] = json!("v3");
    let (code, body) = api.json("PUT", &format!("{CMS}/one"), Some(&update)).await;
    assert_eq!(code, 409);
    assert_status(&body, 409, "Conflict");
    assert!(body["message"].as_str().unwrap().contains("the object has been modified"));

    // GET returns the stored version; a missing one is 404 NotFound.
    let (code, got) = api.json("GET", &format!("{CMS}/one"), None).await;
    assert_eq!(code, 200);
    assert_eq!(got["data"]["k"], "v2");
    assert_eq!(got["metadata"]["resourceVersion"], rv2.to_string());
    let (code, body) = api.json("GET", &format!("{CMS}/missing"), None).await;
    assert_eq!(code, 404);
    assert_status(&body, 404, "NotFound");
    assert_eq!(body["message"], "configmaps \"missing\" not found");

    // The list's resourceVersion is the store revision: at least the newest object's.
    let (code, list) = api.json("GET", CMS, None).await;
    assert_eq!(code, 200);
    assert_eq!(list["kind"], "ConfigMapList");
    let list_rv: i64 = list["metadata"]["resourceVersion"].as_str().unwrap().parse().unwrap();
    assert!(list_rv >= rv2);
}

#[tokio::test]
async fn generate_name_generation_and_status_split() {
    // The API server's own rules, without the Deployment controller writing status and
    // annotations to the same object meanwhile (its writes would make these PUTs conflict).
    let server = SkerryServer::start_with(&["--disable-controllers", "deployment"]);
    let api = server.admin();
    let deploys = "/apis/apps/v1/namespaces/default/deployments";
    let deployment = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"generateName": "web-"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "c", "image": "busybox"}]}}},
        "status": {"replicas": 7},
    });
    let (code, created) = api.json("POST", deploys, Some(&deployment)).await;
    assert_eq!(code, 201, "{created}");
    let name = created["metadata"]["name"].as_str().unwrap().to_string();
    assert!(name.starts_with("web-") && name.len() == 9, "{name}");
    assert_eq!(created["metadata"]["generation"], 1);
    assert!(
        created.get("status").is_none_or(|s| s.get("replicas").is_none()),
        "status is not settable on create"
    );
    let path = format!("{deploys}/{name}");

    // A label change is not a spec change: generation stays.
    let mut obj = created.clone();
    obj["metadata"]["labels"] = json!({"a": "b"});
    let (_, obj) = api.json("PUT", &path, Some(&obj)).await;
    assert_eq!(obj["metadata"]["generation"], 1);
    // A spec change bumps it; status in the main resource's body is ignored.
    let mut obj2 = obj.clone();
    obj2["spec"]["replicas"] = json!(3);
    obj2["status"] = json!({"replicas": 5});
    let (code, obj2) = api.json("PUT", &path, Some(&obj2)).await;
    assert_eq!(code, 200, "{obj2}");
    assert_eq!(obj2["metadata"]["generation"], 2);
    assert!(obj2.get("status").is_none_or(|s| s.get("replicas").is_none()));
    // /status changes only status, and not the generation.
    let mut st = obj2.clone();
    st["status"] = json!({"replicas": 3, "observedGeneration": 2});
    st["spec"]["replicas"] = json!(9);
    let (code, st) = api.json("PUT", &format!("{path}/status"), Some(&st)).await;
    assert_eq!(code, 200, "{st}");
    assert_eq!(st["status"]["replicas"], 3);
    assert_eq!(st["spec"]["replicas"], 3);
    assert_eq!(st["metadata"]["generation"], 2);

    // /scale reads and writes spec.replicas as an autoscaling/v1 Scale.
    let (code, scale) = api.json("GET", &format!("{path}/scale"), None).await;
    assert_eq!(code, 200, "{scale}");
    assert_eq!(scale["kind"], "Scale");
    assert_eq!(scale["spec"]["replicas"], 3);
    assert_eq!(scale["status"]["selector"], "app=web");
    let mut scale2 = scale.clone();
    scale2["spec"]["replicas"] = json!(4);
    let (code, _) = api.json("PUT", &format!("{path}/scale"), Some(&scale2)).await;
    assert_eq!(code, 200);
    let (_, after) = api.json("GET", &path, None).await;
    assert_eq!(after["spec"]["replicas"], 4);
    assert_eq!(after["metadata"]["generation"], 3);
}

#[tokio::test]
async fn patches_dry_run_and_body_formats() {
    let server = SkerryServer::start();
    let api = server.admin();
    let (code, _) = api.json("POST", CMS, Some(&configmap("p"))).await;
    assert_eq!(code, 201);
    let path = format!("{CMS}/p");

    // Merge patch (RFC 7386): null deletes.
    let resp = api
        .request(
            "PATCH",
            &path,
            Some("application/merge-patch+json"),
            br#"{"data":{"k":null,"m":"1"}}"#,
        )
        .await
        .unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.json()["data"], json!({"m": "1"}));
    // JSON patch (RFC 6902), including a failing test op → 422.
    let ops = br#"[{"op":"add","path":"/metadata/labels","value":{"x":"y"}}]"#;
    let resp = api.request("PATCH", &path, Some("application/json-patch+json"), ops).await.unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.json()["metadata"]["labels"]["x"], "y");
    let bad = br#"[{"op":"test","path":"/data/m","value":"nope"}]"#;
    let resp = api.request("PATCH", &path, Some("application/json-patch+json"), bad).await.unwrap();
    assert_eq!(resp.status, 422, "{}", String::from_utf8_lossy(&resp.body));
    // Strategic merge patch on a built-in kind.
    let smp = br#"{"metadata":{"labels":{"smp":"yes"}},"data":{"n":"2"}}"#;
    let resp = api
        .request("PATCH", &path, Some("application/strategic-merge-patch+json"), smp)
        .await
        .unwrap();
    assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));
    assert_eq!(resp.json()["metadata"]["labels"], json!({"x": "y", "smp": "yes"}));
    assert_eq!(resp.json()["data"], json!({"m": "1", "n": "2"}));
    // An unknown patch type is a 415.
    let resp =
        api.request("PATCH", &path, Some("application/x-unknown-patch"), b"{}").await.unwrap();
    assert_eq!(resp.status, 415);
    assert_status(&resp.json(), 415, "UnsupportedMediaType");

    // YAML in, YAML out; and a POST without Content-Type is JSON.
    let yaml = b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: from-yaml\ndata:\n  a: b\n";
    let resp = api
        .request_with(
            "POST",
            CMS,
            &[("content-type", "application/yaml"), ("accept", "application/yaml")],
            yaml,
        )
        .await
        .unwrap();
    assert_eq!(resp.status, 201);
    assert_eq!(resp.headers["content-type"], "application/yaml");
    assert!(String::from_utf8_lossy(&resp.body).contains("name: from-yaml"));
    let body = serde_json::to_vec(&configmap("no-content-type")).unwrap();
    let resp = api.request("POST", CMS, None, &body).await.unwrap();
    assert_eq!(resp.status, 201);

    // dryRun=All answers like a write but stores nothing.
    let body = serde_json::to_vec(&configmap("dry")).unwrap();
    let resp = api
        .request("POST", &format!("{CMS}?dryRun=All"), Some("application/json"), &body)
        .await
        .unwrap();
    assert_eq!(resp.status, 201);
    let (code, _) = api.json("GET", &format!("{CMS}/dry"), None).await;
    assert_eq!(code, 404);
    let resp = api.request("DELETE", &format!("{path}?dryRun=All"), None, b"").await.unwrap();
    assert_eq!(resp.status, 200);
    let (code, _) = api.json("GET", &path, None).await;
    assert_eq!(code, 200);

    // fieldValidation: unknown fields warn by default, fail with Strict.
    let mut odd = configmap("odd");
    odd["metadata"]["bogus"] = json!(1);
    let body = serde_json::to_vec(&odd).unwrap();
    let resp = api.request("POST", CMS, Some("application/json"), &body).await.unwrap();
    assert_eq!(resp.status, 201);
    assert!(
        resp.headers["warning"].to_str().unwrap().contains("unknown field \\\"metadata.bogus\\\"")
            || resp.headers["warning"].to_str().unwrap().contains("metadata.bogus")
    );
    odd["metadata"]["name"] = json!("odd2");
    let body = serde_json::to_vec(&odd).unwrap();
    let resp = api
        .request("POST", &format!("{CMS}?fieldValidation=Strict"), Some("application/json"), &body)
        .await
        .unwrap();
    assert_eq!(resp.status, 400);
    assert_status(&resp.json(), 400, "BadRequest");
}

#[tokio::test]
async fn error_classes_are_status_objects() {
    let server = SkerryServer::start();
    let api = server.admin();

    // 400: malformed JSON, wrong apiVersion/kind, namespace mismatch.
    let resp = api.request("POST", CMS, Some("application/json"), b"{not json").await.unwrap();
    assert_status(&resp.json(), 400, "BadRequest");
    let mut wrong = configmap("w");
    wrong["kind"] = json!("Secret");
    let (code, body) = api.json("POST", CMS, Some(&wrong)).await;
    assert_eq!(code, 400);
    assert_status(&body, 400, "BadRequest");
    let mut wrong = configmap("w");
    wrong["apiVersion"] = json!("apps/v1");
    let (_, body) = api.json("POST", CMS, Some(&wrong)).await;
    assert_status(&body, 400, "BadRequest");
    let mut other_ns = configmap("w");
    other_ns["metadata"]["namespace"] = json!("kube-system");
    let (_, body) = api.json("POST", CMS, Some(&other_ns)).await;
    assert_status(&body, 400, "BadRequest");
    assert!(body["message"].as_str().unwrap().contains("does not match the namespace"));
    let (_, body) = api.json("GET", &format!("{CMS}?labelSelector=a%20in%20b"), None).await;
    assert_status(&body, 400, "BadRequest");
    let (_, body) = api.json("GET", "/api/v1/pods?fieldSelector=spec.bogus%3D1", None).await;
    assert_status(&body, 400, "BadRequest");

    // 404: unknown resource, missing namespace.
    let (code, body) = api.json("GET", "/api/v1/namespaces/default/nothings", None).await;
    assert_eq!(code, 404);
    assert_status(&body, 404, "NotFound");
    let (code, body) =
        api.json("POST", "/api/v1/namespaces/nowhere/configmaps", Some(&configmap("x"))).await;
    assert_eq!(code, 404, "{body}");
    assert_eq!(body["details"]["kind"], "namespaces");

    // 405: a verb the resource does not serve.
    let (code, body) = api.json("POST", &format!("{CMS}/x"), Some(&configmap("x"))).await;
    assert_eq!(code, 405);
    assert_status(&body, 405, "MethodNotAllowed");

    // 406 and 415: media types.
    let resp = api.request_with("GET", CMS, &[("accept", "text/html")], b"").await.unwrap();
    assert_status(&resp.json(), 406, "NotAcceptable");
    let resp = api.request("POST", CMS, Some("text/plain"), b"x").await.unwrap();
    assert_eq!(resp.status, 415);
    assert_status(&resp.json(), 415, "UnsupportedMediaType");

    // 413: bodies over 3 MiB.
    let big = vec![b' '; 3 * 1024 * 1024 + 10];
    let resp = api.request("POST", CMS, Some("application/json"), &big).await.unwrap();
    assert_eq!(resp.status, 413);
    assert_status(&resp.json(), 413, "RequestEntityTooLarge");

    // 422: no name and no generateName.
    let (code, body) = api
        .json("POST", CMS, Some(&json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {}})))
        .await;
    assert_eq!(code, 422);
    assert_status(&body, 422, "Invalid");
    assert_eq!(body["details"]["causes"][0]["field"], "metadata.name");

    // 401: no credentials.
    let anon = server.anonymous(None);
    let resp = anon.request("GET", "/api/v1/namespaces", None, b"").await.unwrap();
    assert_eq!(resp.status, 401);
    assert_status(&resp.json(), 401, "Unauthorized");
}

#[tokio::test]
async fn finalizers_and_graceful_pod_deletion() {
    let server = SkerryServer::start();
    let api = server.admin();
    let mut held = configmap("held");
    held["metadata"]["finalizers"] = json!(["example.com/hold"]);
    let (code, _) = api.json("POST", CMS, Some(&held)).await;
    assert_eq!(code, 201);
    // With a finalizer, DELETE only marks the object.
    let (code, marked) = api.json("DELETE", &format!("{CMS}/held"), None).await;
    assert_eq!(code, 200);
    assert!(marked["metadata"]["deletionTimestamp"].is_string(), "{marked}");
    let (code, still) = api.json("GET", &format!("{CMS}/held"), None).await;
    assert_eq!(code, 200);
    // Removing the last finalizer completes the deletion.
    let resp = api
        .request(
            "PATCH",
            &format!("{CMS}/held"),
            Some("application/merge-patch+json"),
            br#"{"metadata":{"finalizers":null}}"#,
        )
        .await
        .unwrap();
    assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));
    let (code, _) = api.json("GET", &format!("{CMS}/held"), None).await;
    assert_eq!(code, 404, "{still}");

    // A plain delete answers a success Status for config maps.
    api.json("POST", CMS, Some(&configmap("plain"))).await;
    let (code, status) = api.json("DELETE", &format!("{CMS}/plain"), None).await;
    assert_eq!(code, 200);
    assert_eq!(status["status"], "Success");

    // A pod bound to a node is deleted gracefully: marked, then removed with grace 0.
    let pods = "/api/v1/namespaces/default/pods";
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
        "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "busybox"}]}});
    let (code, _) = api.json("POST", pods, Some(&pod)).await;
    assert_eq!(code, 201);
    let (code, marked) = api.json("DELETE", &format!("{pods}/p"), None).await;
    assert_eq!(code, 200);
    assert_eq!(marked["metadata"]["deletionGracePeriodSeconds"], 30, "{marked}");
    let (code, _) = api.json("GET", &format!("{pods}/p"), None).await;
    assert_eq!(code, 200);
    let options = json!({"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0});
    let (code, _) = api.json("DELETE", &format!("{pods}/p"), Some(&options)).await;
    assert_eq!(code, 200);
    let (code, _) = api.json("GET", &format!("{pods}/p"), None).await;
    assert_eq!(code, 404);

    // Preconditions: a wrong uid is a 409 Conflict.
    api.json("POST", CMS, Some(&configmap("pre"))).await;
    let options =
        json!({"kind": "DeleteOptions", "apiVersion": "v1", "preconditions": {"uid": "nope"}});
    let (code, body) = api.json("DELETE", &format!("{CMS}/pre"), Some(&options)).await;
    assert_eq!(code, 409);
    assert_status(&body, 409, "Conflict");

    // deletecollection with a label selector deletes only the matches.
    for (name, app) in [("a1", "x"), ("a2", "x"), ("b1", "y")] {
        let mut cm = configmap(name);
        cm["metadata"]["labels"] = json!({"app": app});
        api.json("POST", CMS, Some(&cm)).await;
    }
    let (code, _) = api.json("DELETE", &format!("{CMS}?labelSelector=app%3Dx"), None).await;
    assert_eq!(code, 200);
    let (_, list) = api.json("GET", &format!("{CMS}?labelSelector=app"), None).await;
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["b1"]);
}

#[tokio::test]
async fn namespaces_and_service_allocation() {
    let server = SkerryServer::start();
    let api = server.admin();
    // The system namespaces and the kubernetes service exist from the start.
    let (_, list) = api.json("GET", "/api/v1/namespaces", None).await;
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap())
        .collect();
    for ns in ["default", "kube-node-lease", "kube-public", "kube-system"] {
        assert!(names.contains(&ns), "{names:?}");
    }
    let (_, svc) = api.json("GET", "/api/v1/namespaces/default/services/kubernetes", None).await;
    assert_eq!(svc["spec"]["clusterIP"], "10.43.0.1");
    let (code, body) = api.json("DELETE", "/api/v1/namespaces/kube-system", None).await;
    assert_eq!(code, 403, "{body}");

    // A terminating namespace refuses new content (403 Forbidden).
    let (code, _) = api
        .json(
            "POST",
            "/api/v1/namespaces",
            Some(&json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "gone"}})),
        )
        .await;
    assert_eq!(code, 201);
    let (code, ns) = api.json("DELETE", "/api/v1/namespaces/gone", None).await;
    assert_eq!(code, 200);
    assert_eq!(ns["status"]["phase"], "Terminating");
    let (code, body) =
        api.json("POST", "/api/v1/namespaces/gone/configmaps", Some(&configmap("x"))).await;
    assert_eq!(code, 403, "{body}");
    assert_status(&body, 403, "Forbidden");

    // Concurrent Service creates get distinct ClusterIPs and NodePorts.
    let svcs = "/api/v1/namespaces/default/services";
    let mut tasks = Vec::new();
    for i in 0..20 {
        let api = api.clone();
        tasks.push(tokio::spawn(async move {
            let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": format!("s{i}")},
                "spec": {"type": "NodePort", "selector": {"app": "x"}, "ports": [{"port": 80}]}});
            api.json("POST", svcs, Some(&svc)).await
        }));
    }
    let mut ips = std::collections::HashSet::new();
    let mut ports = std::collections::HashSet::new();
    for task in tasks {
        let (code, svc) = task.await.unwrap();
        assert_eq!(code, 201, "{svc}");
        let ip = svc["spec"]["clusterIP"].as_str().unwrap().to_string();
        assert!(ip.starts_with("10.43."), "{ip}");
        assert!(ips.insert(ip));
        let port = svc["spec"]["ports"][0]["nodePort"].as_u64().unwrap();
        assert!((30000..=32767).contains(&port));
        assert!(ports.insert(port));
    }
    // A taken address is refused with 422; a deleted service frees its address.
    let (_, s0) = api.json("GET", &format!("{svcs}/s0"), None).await;
    let taken = s0["spec"]["clusterIP"].as_str().unwrap().to_string();
    let dup = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "dup"},
        "spec": {"clusterIP": taken, "ports": [{"port": 80}]}});
    let (code, body) = api.json("POST", svcs, Some(&dup)).await;
    assert_eq!(code, 422, "{body}");
    assert!(body["message"].as_str().unwrap().contains("already allocated"));
    let (code, _) = api.json("DELETE", &format!("{svcs}/s0"), None).await;
    assert_eq!(code, 200);
    let (code, body) = api.json("POST", svcs, Some(&dup)).await;
    assert_eq!(code, 201, "{body}");
}

async fn merge_patch(api: &ApiClient, path: &str, patch: &Value) -> (u16, Value) {
    let body = serde_json::to_vec(patch).unwrap();
    let resp =
        api.request("PATCH", path, Some("application/merge-patch+json"), &body).await.unwrap();
    (resp.status, resp.json())
}

#[tokio::test]
async fn service_updates_move_node_ports() {
    let server = SkerryServer::start();
    let api = server.admin();
    let svcs = "/api/v1/namespaces/default/services";
    let path = format!("{svcs}/web");
    let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
        "spec": {"selector": {"app": "x"}, "ports": [{"name": "http", "port": 80}]}});
    let (code, created) = api.json("POST", svcs, Some(&svc)).await;
    assert_eq!(code, 201, "{created}");
    assert!(created["spec"]["ports"][0].get("nodePort").is_none(), "{created}");

    // ClusterIP → NodePort allocates a nodePort and keeps the address.
    let (code, patched) = merge_patch(&api, &path, &json!({"spec": {"type": "NodePort"}})).await;
    assert_eq!(code, 200, "{patched}");
    let port = patched["spec"]["ports"][0]["nodePort"].as_u64().expect("a nodePort");
    assert!((30000..=32767).contains(&port), "{port}");
    assert_eq!(patched["spec"]["clusterIP"], created["spec"]["clusterIP"]);

    // A PUT that leaves out clusterIP and nodePort keeps both.
    let mut put = patched.clone();
    put["spec"]["ports"][0].as_object_mut().unwrap().remove("nodePort");
    put["spec"].as_object_mut().unwrap().remove("clusterIP");
    put["spec"].as_object_mut().unwrap().remove("clusterIPs");
    let (code, kept) = api.json("PUT", &path, Some(&put)).await;
    assert_eq!(code, 200, "{kept}");
    assert_eq!(kept["spec"]["ports"][0]["nodePort"].as_u64(), Some(port));
    assert_eq!(kept["spec"]["clusterIP"], created["spec"]["clusterIP"]);

    // The port is held: another Service cannot take it.
    let other = |name: &str| {
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
        "spec": {"type": "NodePort", "selector": {"app": "y"}, "ports": [{"port": 80, "nodePort": port}]}})
    };
    let (code, body) = api.json("POST", svcs, Some(&other("thief"))).await;
    assert_eq!(code, 422, "{body}");

    // NodePort → ClusterIP drops the nodePort and gives it back.
    let (code, back) = merge_patch(&api, &path, &json!({"spec": {"type": "ClusterIP"}})).await;
    assert_eq!(code, 200, "{back}");
    assert!(back["spec"]["ports"][0].get("nodePort").is_none(), "{back}");
    let (code, body) = api.json("POST", svcs, Some(&other("heir"))).await;
    assert_eq!(code, 201, "{body}");
    assert_eq!(body["spec"]["ports"][0]["nodePort"].as_u64(), Some(port));
}

#[tokio::test]
async fn pod_binding_assigns_a_node_once() {
    let server = SkerryServer::start();
    let api = server.admin();
    let pods = "/api/v1/namespaces/default/pods";
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "b"},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]}});
    let (code, _) = api.json("POST", pods, Some(&pod)).await;
    assert_eq!(code, 201);
    let binding = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "b"},
        "target": {"apiVersion": "v1", "kind": "Node", "name": "node-1"}});
    let (code, body) = api.json("POST", &format!("{pods}/b/binding"), Some(&binding)).await;
    assert_eq!(code, 201, "{body}");
    let (_, got) = api.json("GET", &format!("{pods}/b"), None).await;
    assert_eq!(got["spec"]["nodeName"], "node-1");
    // The binding also marks the pod scheduled (the reference's binding REST).
    let scheduled = got["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "PodScheduled"));
    assert_eq!(scheduled.map(|c| c["status"].clone()), Some(serde_json::json!("True")), "{got}");
    // A bound pod cannot be bound again.
    let (code, body) = api.json("POST", &format!("{pods}/b/binding"), Some(&binding)).await;
    assert_eq!(code, 409, "{body}");
    assert_status(&body, 409, "Conflict");
    // Pod status goes through /status only.
    let mut status = got.clone();
    status["status"]["phase"] = json!("Running");
    let (code, _) = api.json("PUT", &format!("{pods}/b/status"), Some(&status)).await;
    assert_eq!(code, 200);
    let (_, got) = api.json("GET", &format!("{pods}/b"), None).await;
    assert_eq!(got["status"]["phase"], "Running");
}

#[tokio::test]
async fn compacted_history_is_410_gone() {
    let server = SkerryServer::start_with(&["--etcd-compaction-interval", "1s"]);
    let api = server.admin();
    for i in 0..3 {
        api.json("POST", CMS, Some(&configmap(&format!("c{i}")))).await;
    }
    let (_, page) = api.json("GET", &format!("{CMS}?limit=1"), None).await;
    let token = page["metadata"]["continue"].as_str().unwrap().replace('=', "%3D");
    // Keep writing until compaction has passed the token's revision (the store compacts to
    // where it was one interval earlier, every interval).
    let mut expired = None;
    for i in 0..200 {
        api.json("POST", CMS, Some(&configmap(&format!("n{i}")))).await;
        let (code, body) = api.json("GET", &format!("{CMS}?limit=1&continue={token}"), None).await;
        if code == 410 {
            expired = Some(body);
            break;
        }
        assert_eq!(code, 200, "{body}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let body = expired.expect("the continue token expires once its revision is compacted");
    assert_status(&body, 410, "Expired");
    assert!(body["message"].as_str().unwrap().contains("continue parameter is too old"));

    // A watch from a compacted resourceVersion ends with an ERROR event carrying a 410.
    let (code, mut watch) = api.watch(&format!("{CMS}?watch=true&resourceVersion=1")).await;
    assert_eq!(code, 200);
    let event = watch.next(std::time::Duration::from_secs(10)).await.expect("an ERROR event");
    assert_eq!(event["type"], "ERROR");
    assert_status(&event["object"], 410, "Expired");
}

/// The watch cache could still answer the next page when no ConfigMap changed since the token
/// (only other resources were written), but compaction has passed the token: 410 all the same.
#[tokio::test]
async fn a_continue_token_expires_with_compaction_even_when_its_resource_is_unchanged() {
    let server = SkerryServer::start_with(&["--etcd-compaction-interval", "1s"]);
    let api = server.admin();
    for i in 0..3 {
        api.json("POST", CMS, Some(&configmap(&format!("c{i}")))).await;
    }
    let (_, page) = api.json("GET", &format!("{CMS}?limit=1"), None).await;
    let token = page["metadata"]["continue"].as_str().unwrap().replace('=', "%3D");
    let secrets = "/api/v1/namespaces/default/secrets";
    let mut expired = None;
    for i in 0..200 {
        let secret =
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": format!("s{i}")}});
        let (code, body) = api.json("POST", secrets, Some(&secret)).await;
        assert_eq!(code, 201, "{body}");
        let (code, body) = api.json("GET", &format!("{CMS}?limit=1&continue={token}"), None).await;
        if code == 410 {
            expired = Some(body);
            break;
        }
        assert_eq!(code, 200, "{body}");
        assert_eq!(body["items"][0]["metadata"]["name"], "c1", "{body}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let body = expired.expect("the continue token expires once its revision is compacted");
    assert_status(&body, 410, "Expired");
    assert!(body["message"].as_str().unwrap().contains("continue parameter is too old"));
}
