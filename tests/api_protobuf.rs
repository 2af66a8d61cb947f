//! Protobuf bodies against the real `skerry server`: kubectl 1.32's `create` generators (which
//! send built-in kinds as `application/vnd.kubernetes.protobuf` with no JSON fallback) create
//! objects that read back with the right fields, and a client that prefers protobuf gets
//! built-in kinds in protobuf that decode to the same JSON (errors, custom resources and watches
//! stay JSON).

mod common;

use common::server::{ok, runtime, SkerryServer};
use serde_json::{json, Value};
use skerry_control::apiserver::protobuf;

const PROTOBUF_FIRST: &str = "application/vnd.kubernetes.protobuf, application/json";

#[test]
fn kubectl_create_generators_send_protobuf() {
    let Some(kubectl) = skerry_testkit::kubectl() else { return };
    let server = SkerryServer::start();
    let k = |args: &[&str]| ok(server.kubectl(&kubectl, args), &args.join(" "));
    let get = |args: &[&str]| -> Value {
        let mut all = vec!["get"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["-o", "json"]);
        server.kubectl_json(&kubectl, &all).unwrap_or_else(|e| panic!("get {args:?}: {e}"))
    };

    // A zero in a pointer field survives the trip (Go writes it; unset would default to 1).
    k(&["create", "deployment", "web", "--image=nginx", "--replicas=0", "--port=8080"]);
    let deploy = get(&["deployment", "web"]);
    assert_eq!(deploy["spec"]["replicas"], 0, "{deploy}");
    assert_eq!(deploy["spec"]["selector"]["matchLabels"], json!({"app": "web"}));
    let container = &deploy["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], "nginx");
    assert_eq!(container["ports"][0]["containerPort"], 8080);
    // Go's zero values of non-pointer fields read as unset, so defaulting still happens.
    assert_eq!(deploy["spec"]["template"]["spec"]["restartPolicy"], "Always");
    assert_eq!(deploy["spec"]["strategy"]["rollingUpdate"]["maxSurge"], "25%");

    k(&["create", "cronjob", "tick", "--image=busybox", "--schedule=*/5 * * * *", "--", "date"]);
    let cronjob = get(&["cronjob", "tick"]);
    assert_eq!(cronjob["spec"]["schedule"], "*/5 * * * *");
    let job_spec = &cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"];
    assert_eq!(job_spec["containers"][0]["command"], json!(["date"]));
    assert_eq!(job_spec["restartPolicy"], "OnFailure");

    k(&["create", "job", "manual", "--from=cronjob/tick"]);
    let job = get(&["job", "manual"]);
    assert_eq!(job["metadata"]["annotations"]["cronjob.kubernetes.io/instantiate"], "manual");
    assert_eq!(job["metadata"]["ownerReferences"][0]["kind"], "CronJob");
    assert_eq!(job["metadata"]["ownerReferences"][0]["controller"], true);
    assert_eq!(job["spec"]["template"]["spec"]["containers"][0]["command"], json!(["date"]));

    k(&["create", "service", "clusterip", "web", "--tcp=80:8080"]);
    let service = get(&["service", "web"]);
    assert_eq!(service["spec"]["ports"][0]["port"], 80);
    assert_eq!(service["spec"]["ports"][0]["targetPort"], 8080);
    assert_eq!(service["spec"]["selector"], json!({"app": "web"}));
    assert!(service["spec"]["clusterIP"].is_string(), "{service}");

    k(&["create", "pdb", "web", "--selector=app=web", "--min-available=50%"]);
    let pdb = get(&["pdb", "web"]);
    assert_eq!(pdb["spec"]["minAvailable"], "50%");
    assert_eq!(pdb["spec"]["selector"]["matchLabels"], json!({"app": "web"}));

    k(&["create", "priorityclass", "high", "--value=1000", "--description=urgent"]);
    let class = get(&["priorityclass", "high"]);
    assert_eq!(
        (class["value"].clone(), class["description"].clone()),
        (json!(1000), json!("urgent"))
    );

    k(&["create", "quota", "small", "--hard=cpu=1,memory=1G,pods=2"]);
    let quota = get(&["quota", "small"]);
    assert_eq!(quota["spec"]["hard"], json!({"cpu": "1", "memory": "1G", "pods": "2"}));

    k(&["create", "ingress", "web", "--class=nginx", "--rule=a.example.com/*=web:80"]);
    let ingress = get(&["ingress", "web"]);
    assert_eq!(ingress["spec"]["ingressClassName"], "nginx");
    let path = &ingress["spec"]["rules"][0]["http"]["paths"][0];
    assert_eq!(ingress["spec"]["rules"][0]["host"], "a.example.com");
    assert_eq!(path["pathType"], "Prefix");
    assert_eq!(path["backend"]["service"], json!({"name": "web", "port": {"number": 80}}));

    assert_eq!(k(&["auth", "can-i", "list", "pods"]).trim(), "yes");
}

#[test]
fn protobuf_responses_decode_to_the_json_form() {
    // No scheduler: its status update of the unschedulable pod would race the two reads.
    let server = SkerryServer::start_with(&["--disable-scheduler"]);
    let client = server.admin();
    let rt = runtime();
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "c", "image": "nginx",
            "resources": {"limits": {"cpu": "250m", "memory": "64Mi"}},
            "readinessProbe": {"httpGet": {"path": "/", "port": "http"}}}]}
    });
    // Created from a protobuf body.
    let body = protobuf::encode(&pod).unwrap();
    let path = "/api/v1/namespaces/default/pods";
    // (A user agent names the field manager.)
    let headers = [("content-type", protobuf::CONTENT_TYPE), ("user-agent", "pb-test/1.0")];
    let created = rt.block_on(client.request_with("POST", path, &headers, &body));
    let created = created.unwrap();
    assert_eq!(created.status, 201, "{}", String::from_utf8_lossy(&created.body));

    let (status, mut json_form) = rt.block_on(client.json("GET", &format!("{path}/web"), None));
    assert_eq!(status, 200);
    // In-process writers (the scheduler's status update) leave an empty manager, which Go's
    // `omitempty` drops from JSON and protobuf cannot tell from unset.
    for entry in json_form["metadata"]["managedFields"].as_array_mut().unwrap() {
        if entry["manager"] == "" {
            entry.as_object_mut().unwrap().remove("manager");
        }
    }
    assert_eq!(json_form["spec"]["containers"][0]["resources"]["limits"]["cpu"], "250m");
    let accept = [("accept", PROTOBUF_FIRST)];
    let resp =
        rt.block_on(client.request_with("GET", &format!("{path}/web"), &accept, b"")).unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.headers["content-type"], protobuf::CONTENT_TYPE);
    assert!(resp.body.starts_with(b"k8s\0"));
    assert_eq!(protobuf::decode(&resp.body).unwrap(), json_form);

    // Lists too.
    let resp = rt.block_on(client.request_with("GET", path, &accept, b"")).unwrap();
    assert_eq!(resp.headers["content-type"], protobuf::CONTENT_TYPE);
    let list = protobuf::decode(&resp.body).unwrap();
    assert_eq!(list["kind"], "PodList");
    assert_eq!(list["items"][0]["metadata"]["name"], "web");

    // An eviction in protobuf (kubectl drain) deletes the unscheduled pod.
    let eviction = json!({"apiVersion": "policy/v1", "kind": "Eviction",
                          "metadata": {"name": "web", "namespace": "default"},
                          "deleteOptions": {"gracePeriodSeconds": 0}});
    let body = protobuf::encode(&eviction).unwrap();
    let resp = rt.block_on(client.request_with(
        "POST",
        &format!("{path}/web/eviction"),
        &[("content-type", protobuf::CONTENT_TYPE), ("accept", PROTOBUF_FIRST)],
        &body,
    ));
    let resp = resp.unwrap();
    assert_eq!(resp.status, 201, "{}", String::from_utf8_lossy(&resp.body));

    // The pod is gone, and the 404 is a JSON Status (client-go decodes by content type).
    let resp =
        rt.block_on(client.request_with("GET", &format!("{path}/web"), &accept, b"")).unwrap();
    assert_eq!(resp.status, 404);
    assert_eq!(resp.json()["reason"], "NotFound");
}
