//! Protobuf bodies against the real `skerry server`: kubectl 1.32's `create` generators (which
//! send built-in kinds as `application/vnd.kubernetes.protobuf` with no JSON fallback) create
//! objects that read back with the right fields, and a client that prefers protobuf gets
//! built-in kinds, error Statuses and watch streams (length-delimited WatchEvent frames) in
//! protobuf that decode to the same JSON; custom resources answer JSON, or 406 when the client
//! accepts protobuf only, as the reference's CRD handler does.

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

    // The conflict comes back as a protobuf Status that kubectl decodes into its message.
    let again = server.kubectl(&kubectl, &["create", "deployment", "web", "--image=nginx"]);
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(!again.status.success());
    assert!(stderr.contains(r#"deployments.apps "web" already exists"#), "{stderr}");
    let described = k(&["describe", "deployment", "web"]);
    assert!(described.contains("Replicas:") && described.contains("nginx"), "{described}");

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

    // The pod is gone, and the 404 is a protobuf Status (client-go decodes by content type).
    let resp =
        rt.block_on(client.request_with("GET", &format!("{path}/web"), &accept, b"")).unwrap();
    assert_eq!(resp.status, 404);
    assert_eq!(resp.headers["content-type"], protobuf::CONTENT_TYPE);
    let status = protobuf::decode(&resp.body).unwrap();
    assert_eq!((&status["apiVersion"], &status["kind"]), (&json!("v1"), &json!("Status")));
    assert_eq!((&status["code"], &status["reason"]), (&json!(404), &json!("NotFound")));
    assert_eq!(status["message"], "pods \"web\" not found");
    // A JSON client still gets JSON.
    let resp = rt.block_on(client.request("GET", &format!("{path}/web"), None, b"")).unwrap();
    assert_eq!(
        (resp.status, &resp.headers["content-type"]),
        (404, &"application/json".parse().unwrap())
    );
    assert_eq!(resp.json()["reason"], "NotFound");
}

/// A protobuf watch from `query` (it must end by itself: `timeoutSeconds`), as its events.
fn protobuf_watch(
    client: &common::server::ApiClient,
    path: &str,
    accept: &str,
) -> Vec<(String, Value)> {
    let resp = runtime().block_on(client.request_with("GET", path, &[("accept", accept)], b""));
    let resp = resp.unwrap();
    assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));
    assert_eq!(resp.headers["content-type"], protobuf::WATCH_CONTENT_TYPE);
    protobuf::decode_watch_stream(&resp.body).unwrap()
}

#[test]
fn protobuf_watch_streams_length_delimited_events() {
    let server = SkerryServer::start_with(&["--disable-scheduler"]);
    let client = server.admin();
    let rt = runtime();
    let pods = "/api/v1/namespaces/default/pods";
    let (_, list) = rt.block_on(client.json("GET", pods, None));
    let from = list["metadata"]["resourceVersion"].as_str().unwrap().to_string();

    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"},
                     "spec": {"containers": [{"name": "c", "image": "nginx"}]}});
    let (code, _) = rt.block_on(client.json("POST", pods, Some(&pod)));
    assert_eq!(code, 201);
    let patch = serde_json::to_vec(&json!({"metadata": {"labels": {"tier": "front"}}})).unwrap();
    let patched = rt.block_on(client.request(
        "PATCH",
        &format!("{pods}/web"),
        Some("application/merge-patch+json"),
        &patch,
    ));
    assert_eq!(patched.unwrap().status, 200);
    let (code, _) =
        rt.block_on(client.json("DELETE", &format!("{pods}/web?gracePeriodSeconds=0"), None));
    assert_eq!(code, 200);

    // Replayed from `from`: the three changes, in order, as client-go's protobuf Accept asks.
    let watch = format!("{pods}?watch=true&resourceVersion={from}&timeoutSeconds=1");
    let events = protobuf_watch(&client, &watch, PROTOBUF_FIRST);
    let kinds: Vec<&str> = events.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(kinds, ["ADDED", "MODIFIED", "DELETED"], "{events:?}");
    for (_, object) in &events {
        assert_eq!((&object["kind"], &object["metadata"]["name"]), (&json!("Pod"), &json!("web")));
        assert_eq!(object["spec"]["containers"][0]["image"], "nginx");
    }
    assert!(events[0].1["metadata"]["labels"].is_null());
    assert_eq!(events[1].1["metadata"]["labels"], json!({"tier": "front"}));
    let rv = |i: usize| events[i].1["metadata"]["resourceVersion"].as_str().unwrap().parse::<i64>();
    assert!(rv(0).unwrap() < rv(1).unwrap() && rv(1).unwrap() < rv(2).unwrap());

    // A watch-list with `;stream=watch`: the current state, then the initial-events-end bookmark.
    let keep = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "keep"},
                      "spec": {"containers": [{"name": "c", "image": "busybox"}]}});
    assert_eq!(rt.block_on(client.json("POST", pods, Some(&keep))).0, 201);
    let watch = format!(
        "{pods}?watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan\
         &allowWatchBookmarks=true&timeoutSeconds=1"
    );
    let events = protobuf_watch(&client, &watch, protobuf::WATCH_CONTENT_TYPE);
    assert_eq!(events[0].0, "ADDED");
    assert_eq!(events[0].1["metadata"]["name"], "keep");
    let (kind, bookmark) = &events[1];
    assert_eq!((kind.as_str(), &bookmark["kind"]), ("BOOKMARK", &json!("Pod")));
    assert_eq!(bookmark["metadata"]["annotations"]["k8s.io/initial-events-end"], "true");

    // A JSON client's watch is unchanged.
    let watch = format!("{pods}?watch=true&resourceVersion={from}&timeoutSeconds=1");
    let resp = rt.block_on(client.request("GET", &watch, None, b"")).unwrap();
    assert_eq!(resp.headers["content-type"], "application/json");
    let first: Value =
        serde_json::from_slice(resp.body.split(|b| *b == b'\n').next().unwrap()).unwrap();
    assert_eq!(
        (&first["type"], &first["object"]["metadata"]["name"]),
        (&json!("ADDED"), &json!("web"))
    );
}

#[test]
fn custom_resources_answer_json_or_406_to_protobuf_clients() {
    let server = SkerryServer::start_with(&["--disable-scheduler"]);
    let client = server.admin();
    let rt = runtime();
    let crd = json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {"group": "example.com", "scope": "Namespaced",
                 "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
                 "versions": [{"name": "v1", "served": true, "storage": true,
                               "schema": {"openAPIV3Schema": {"type": "object",
                                   "x-kubernetes-preserve-unknown-fields": true}}}]}
    });
    let (code, body) = rt.block_on(client.json(
        "POST",
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
        Some(&crd),
    ));
    assert_eq!(code, 201, "{body}");
    let widgets = "/apis/example.com/v1/namespaces/default/widgets";
    let served = (0..200).any(|_| {
        let (code, _) = rt.block_on(client.json("GET", widgets, None));
        code == 200 || {
            std::thread::sleep(std::time::Duration::from_millis(50));
            false
        }
    });
    assert!(served, "the CRD was never served");
    let widget = json!({"apiVersion": "example.com/v1", "kind": "Widget",
                        "metadata": {"name": "w"}, "spec": {"size": 3}});
    assert_eq!(rt.block_on(client.json("POST", widgets, Some(&widget))).0, 201);

    // Protobuf first, JSON second: JSON.
    let get = |accept: &str| {
        let headers = [("accept", accept)];
        rt.block_on(client.request_with("GET", &format!("{widgets}/w"), &headers, b"")).unwrap()
    };
    let resp = get(PROTOBUF_FIRST);
    assert_eq!(
        (resp.status, &resp.headers["content-type"]),
        (200, &"application/json".parse().unwrap())
    );
    assert_eq!(resp.json()["spec"]["size"], 3);
    // Protobuf only: 406, its Status in protobuf (Status has a protobuf form).
    let resp = get(protobuf::CONTENT_TYPE);
    assert_eq!(resp.status, 406);
    assert_eq!(resp.headers["content-type"], protobuf::CONTENT_TYPE);
    let status = protobuf::decode(&resp.body).unwrap();
    assert_eq!(status["reason"], "NotAcceptable");
    assert_eq!(
        status["message"],
        "only the following media types are accepted: application/json, application/yaml, \
         application/vnd.kubernetes.protobuf"
    );
    // A watch negotiates the same way: JSON lines for a protobuf-first client.
    let watch = format!("{widgets}?watch=true&timeoutSeconds=1");
    let resp = rt
        .block_on(client.request_with("GET", &watch, &[("accept", PROTOBUF_FIRST)], b""))
        .unwrap();
    assert_eq!(
        (resp.status, &resp.headers["content-type"]),
        (200, &"application/json".parse().unwrap())
    );
    // A protobuf body for a custom resource is refused as the reference refuses it: its CRD
    // handler accepts the media type, then fails to decode into an unstructured object (400,
    // transformDecodeError's message), on create and on update alike.
    let body = [b"k8s\0".as_slice(), b"\x0a\x18\x0a\x0eexample.com/v1\x12\x06Widget"].concat();
    let expected = "Widget in version \"v1\" cannot be handled as a Widget: \
                    Object 'Kind' is missing in 'object has no kind field '";
    for (method, path) in [("POST", widgets.to_string()), ("PUT", format!("{widgets}/w"))] {
        let resp = rt
            .block_on(client.request(method, &path, Some(protobuf::CONTENT_TYPE), &body))
            .unwrap();
        let status = resp.json();
        assert_eq!(resp.status, 400, "{method}: {status}");
        assert_eq!(
            (&status["kind"], &status["reason"], &status["code"]),
            (&json!("Status"), &json!("BadRequest"), &json!(400)),
            "{method}"
        );
        assert_eq!(status["message"], expected, "{method}");
    }
    // A protobuf-first client (kubectl's typed clients) gets the same Status in protobuf.
    let headers = [("accept", PROTOBUF_FIRST), ("content-type", protobuf::CONTENT_TYPE)];
    let resp = rt.block_on(client.request_with("POST", widgets, &headers, &body)).unwrap();
    assert_eq!(
        (resp.status, &resp.headers["content-type"]),
        (400, &protobuf::CONTENT_TYPE.parse().unwrap())
    );
    assert_eq!(protobuf::decode(&resp.body).unwrap()["message"], expected);
    // The widget is untouched.
    let (code, stored) = rt.block_on(client.json("GET", &format!("{widgets}/w"), None));
    assert_eq!((code, &stored["spec"]["size"]), (200, &json!(3)));
}

/// kubectl 1.32's `run --attach` waits for its pod through client-go's typed informer: a
/// protobuf list, then a protobuf watch (`Accept: application/vnd.kubernetes.protobuf,
/// application/json`, answered as length-delimited `WatchEvent` frames). The pod completing
/// (its status written as an agent would, once the watch is open) must reach kubectl through
/// that watch: kubectl then goes on to read the pod's logs, which a pod without a node does
/// not have, so it ends with the server's "does not have a host assigned".
#[test]
fn kubectl_run_attach_follows_its_pod_through_a_protobuf_watch() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    let Some(kubectl) = skerry_testkit::kubectl() else { return };
    let server = SkerryServer::start_with(&["--disable-scheduler"]);
    let mut child = Command::new(&kubectl)
        .arg("--kubeconfig")
        .arg(&server.kubeconfig)
        .args(["run", "once", "--image=busybox", "--restart=Never", "--attach"])
        .args(["--pod-running-timeout=2m", "-v=8", "--", "true"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning kubectl");
    let stderr = child.stderr.take().expect("kubectl's stderr");
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    // A bound on the whole exchange, not a timing assertion: kubectl itself waits 2 minutes.
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut log = Vec::new();
    let watch_open = |line: &str| {
        line.contains("Content-Type: application/vnd.kubernetes.protobuf;stream=watch")
    };
    while !log.last().is_some_and(|l: &String| watch_open(l)) {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => log.push(line),
            Err(_) => {
                let _ = child.kill();
                panic!("kubectl never opened a protobuf watch:\n{}", log.join("\n"));
            }
        }
    }

    // The watch is open (the server subscribed it before answering): complete the pod.
    let client = server.admin();
    let status = json!({"status": {"phase": "Succeeded", "containerStatuses": [{
        "name": "once", "image": "busybox", "imageID": "", "ready": false, "restartCount": 0,
        "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]}});
    let resp = runtime()
        .block_on(client.request(
            "PATCH",
            "/api/v1/namespaces/default/pods/once/status",
            Some("application/merge-patch+json"),
            status.to_string().as_bytes(),
        ))
        .unwrap();
    assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));

    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            log.extend(rx.try_iter());
            panic!("kubectl did not see the pod complete:\n{}", log.join("\n"));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    reader.join().unwrap();
    log.extend(rx.try_iter());
    let log = log.join("\n");
    // kubectl asked for protobuf, and listed and watched in it.
    let watches: Vec<&str> = log.lines().filter(|l| l.contains("watch=true")).collect();
    assert!(watches.iter().any(|l| l.contains("fieldSelector=metadata.name%3Donce")), "{log}");
    assert!(log.contains("Accept: application/vnd.kubernetes.protobuf,application/json"), "{log}");
    // It saw the completion (ErrPodCompleted) and went on to the logs, which fail here.
    assert!(log.contains("/api/v1/namespaces/default/pods/once/log"), "{log}");
    assert!(log.contains("pod once does not have a host assigned"), "{log}");
    assert!(!exit.success());
}
