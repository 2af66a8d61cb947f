//! OpenAPI against the real `skerry server` and real clients: kubectl 1.32 applies and creates
//! without `--validate=false` (it sees that the server validates fields), explains built-in and
//! custom fields from `/openapi/v3`, and the server answers `fieldValidation` Strict/Warn/Ignore
//! on a Deployment with the reference's messages. `/openapi/v2` in protobuf decodes as gnostic's
//! Document, and Debian's kubectl 1.20 validates against it on the client side.

mod common;

use common::server::{ok, runtime, SkerryServer};
use serde_json::{json, Value};

const DEPLOYMENT: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 1
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: c
        image: busybox
        ports:
        - containerPort: 80
"#;

const CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.com
spec:
  group: example.com
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        description: A widget on the shelf.
        properties:
          spec:
            type: object
            description: What the widget should be.
            properties:
              size:
                type: integer
                description: How many centimetres wide the widget is.
"#;

fn text(out: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[test]
fn kubectl_apply_and_create_validate_through_openapi() {
    let Some(kubectl) = skerry_testkit::kubectl() else { return };
    let server = SkerryServer::start();
    let k_in = |args: &[&str], stdin: &str| {
        ok(server.kubectl_stdin(&kubectl, args, Some(stdin)), &args.join(" "))
    };

    // Without OpenAPI, kubectl refuses these unless --validate=false.
    assert!(k_in(&["apply", "-f", "-"], DEPLOYMENT).contains("deployment.apps/web created"));
    assert!(k_in(&["apply", "-f", "-"], DEPLOYMENT).contains("deployment.apps/web unchanged"));
    let edited = DEPLOYMENT.replace("replicas: 1", "replicas: 3");
    assert!(k_in(&["apply", "-f", "-"], &edited).contains("deployment.apps/web configured"));
    let out = server.kubectl(&kubectl, &["get", "deployment", "web", "-o", "json"]);
    let live: Value = serde_json::from_str(&ok(out, "get deployment")).unwrap();
    assert_eq!(live["spec"]["replicas"], 3);
    let last = live["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
        .as_str()
        .unwrap_or_else(|| panic!("no last-applied annotation: {live}"));
    assert_eq!(serde_json::from_str::<Value>(last).unwrap()["spec"]["replicas"], 3);

    // kubectl sends fieldValidation=Strict (the PATCH operation in /openapi/v3 declares it), so
    // an unknown field fails with the reference's strict decoding error.
    let bad = DEPLOYMENT
        .replace("name: web", "name: bad")
        .replace("replicas: 1", "replicas: 1\n  foo: bar");
    let out = server.kubectl_stdin(&kubectl, &["create", "-f", "-"], Some(&bad));
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(
            r#"Deployment in version "v1" cannot be handled as a Deployment: strict decoding error: unknown field "spec.foo""#
        ),
        "{}",
        text(&out)
    );
    // --validate=false still creates it; the unknown field is dropped.
    assert!(k_in(&["create", "--validate=false", "-f", "-"], &bad)
        .contains("deployment.apps/bad created"));
    let out = server.kubectl(&kubectl, &["get", "deployment", "bad", "-o", "json"]);
    let stored: Value = serde_json::from_str(&ok(out, "get bad")).unwrap();
    assert!(stored["spec"].get("foo").is_none(), "{stored}");
}

#[test]
fn kubectl_explain_reads_descriptions_of_built_in_and_custom_fields() {
    let Some(kubectl) = skerry_testkit::kubectl() else { return };
    let server = SkerryServer::start();
    let k = |args: &[&str]| ok(server.kubectl(&kubectl, args), &args.join(" "));

    let replicas = k(&["explain", "deployment.spec.replicas"]);
    assert!(replicas.contains("GROUP:      apps") || replicas.contains("apps"), "{replicas}");
    assert!(replicas.contains("Number of desired pods."), "{replicas}");
    assert!(replicas.contains("<integer>"), "{replicas}");
    let containers = k(&["explain", "pods.spec.containers"]);
    assert!(containers.contains("List of containers belonging to the pod."), "{containers}");
    assert!(containers.contains("image\t<string>") || containers.contains("image"), "{containers}");

    // The v3 index before and after a CRD: a new group version appears, the others keep their hash.
    let client = server.admin();
    let rt = runtime();
    let index =
        |rt: &tokio::runtime::Runtime| rt.block_on(client.json("GET", "/openapi/v3", None)).1;
    let before = index(&rt);
    assert!(before["paths"]["apis/example.com/v1"].is_null());
    ok(server.kubectl_stdin(&kubectl, &["apply", "-f", "-"], Some(CRD)), "apply crd");
    let after = index(&rt);
    let url =
        after["paths"]["apis/example.com/v1"]["serverRelativeURL"].as_str().unwrap().to_string();
    assert_eq!(after["paths"]["apis/apps/v1"], before["paths"]["apis/apps/v1"]);
    let widget = k(&["explain", "widgets.spec.size"]);
    assert!(widget.contains("How many centimetres wide the widget is."), "{widget}");

    // Changing the CRD's schema changes its document and hash.
    let changed = CRD.replace("How many centimetres", "How many inches");
    ok(server.kubectl_stdin(&kubectl, &["apply", "-f", "-"], Some(&changed)), "apply crd again");
    let newer = index(&rt);
    let new_url = newer["paths"]["apis/example.com/v1"]["serverRelativeURL"].as_str().unwrap();
    assert_ne!(new_url, url);
    let widget = k(&["explain", "widgets.spec.size"]);
    assert!(widget.contains("How many inches wide"), "{widget}");
}

#[test]
fn group_version_documents_are_cached_by_hash_and_etag() {
    let server = SkerryServer::start();
    let client = server.admin();
    let rt = runtime();
    let (status, index) = rt.block_on(client.json("GET", "/openapi/v3", None));
    assert_eq!(status, 200);
    let url = index["paths"]["apis/apps/v1"]["serverRelativeURL"].as_str().unwrap();
    let hash = url.split("hash=").nth(1).unwrap();

    let resp = rt.block_on(client.request("GET", url, None, b"")).unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.headers["cache-control"], "public, immutable");
    assert!(resp.headers.contains_key("expires"));
    let etag = resp.headers["etag"].to_str().unwrap().to_string();
    assert_eq!(etag, format!("\"{hash}\""));
    let doc = resp.json();
    assert_eq!(doc["openapi"], "3.0.0");
    assert_eq!(
        doc["components"]["schemas"]["io.k8s.api.apps.v1.Deployment"]
            ["x-kubernetes-group-version-kind"],
        json!([{"group": "apps", "kind": "Deployment", "version": "v1"}])
    );

    // Unchanged since the client's copy: 304. A stale hash: a redirect to the current one.
    let headers = [("if-none-match", etag.as_str())];
    let resp =
        rt.block_on(client.request_with("GET", "/openapi/v3/apis/apps/v1", &headers, b"")).unwrap();
    assert_eq!(resp.status, 304);
    let resp = rt
        .block_on(client.request("GET", "/openapi/v3/apis/apps/v1?hash=0BAD", None, b""))
        .unwrap();
    assert_eq!(resp.status, 301);
    assert_eq!(resp.headers["location"], url);
    let (status, _) = rt.block_on(client.json("GET", "/openapi/v3/apis/nothing.example/v1", None));
    assert_eq!(status, 404);
}

#[test]
fn field_validation_of_a_deployment_over_https() {
    let server = SkerryServer::start();
    let client = server.admin();
    let rt = runtime();
    let deployment = |name: &str| {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": 1, "foo": "bar",
                "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "c", "image": "busybox", "colour": "red"}]}}}})
    };
    let post = |mode: &str, name: &str| {
        let body = serde_json::to_vec(&deployment(name)).unwrap();
        let path = format!("/apis/apps/v1/namespaces/default/deployments?fieldValidation={mode}");
        rt.block_on(client.request("POST", &path, Some("application/json"), &body)).unwrap()
    };

    let strict = post("Strict", "strict");
    assert_eq!(strict.status, 400);
    let status = strict.json();
    assert_eq!(status["reason"], "BadRequest");
    assert_eq!(
        status["message"],
        r#"Deployment in version "v1" cannot be handled as a Deployment: strict decoding error: unknown field "spec.foo", unknown field "spec.template.spec.containers[0].colour""#
    );

    let warn = post("Warn", "warn");
    assert_eq!(warn.status, 201);
    let warnings: Vec<&str> =
        warn.headers.get_all("warning").iter().map(|v| v.to_str().unwrap()).collect();
    assert_eq!(
        warnings,
        [
            r#"299 - "unknown field \"spec.foo\"""#,
            r#"299 - "unknown field \"spec.template.spec.containers[0].colour\"""#
        ]
    );
    assert!(warn.json()["spec"].get("foo").is_none(), "unknown fields are dropped");

    // Duplicate fields too, with the reference's message.
    let duplicated =
        br#"{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "dup"},
        "spec": {"replicas": 1, "replicas": 2, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}}"#;
    let path = "/apis/apps/v1/namespaces/default/deployments?fieldValidation=Strict";
    let dup =
        rt.block_on(client.request("POST", path, Some("application/json"), duplicated)).unwrap();
    assert_eq!(dup.status, 400);
    assert!(
        dup.json()["message"]
            .as_str()
            .unwrap()
            .ends_with(r#"strict decoding error: duplicate field "spec.replicas""#),
        "{:?}",
        dup.json()
    );

    let ignore = post("Ignore", "ignore");
    assert_eq!(ignore.status, 201);
    assert!(ignore.headers.get("warning").is_none());
    // Warn is the default.
    let default = rt
        .block_on(client.request(
            "POST",
            "/apis/apps/v1/namespaces/default/deployments",
            Some("application/json"),
            &serde_json::to_vec(&deployment("default")).unwrap(),
        ))
        .unwrap();
    assert_eq!(default.headers.get_all("warning").iter().count(), 2);
}

#[test]
fn openapi_v2_protobuf_is_a_gnostic_document() {
    let server = SkerryServer::start();
    let client = server.admin();
    let rt = runtime();
    let accept = [("accept", "application/com.github.proto-openapi.spec.v2@v1.0+protobuf")];
    let resp = rt.block_on(client.request_with("GET", "/openapi/v2", &accept, b"")).unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(
        resp.headers["content-type"],
        "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"
    );
    let doc = skerry_control::apiserver::openapi::gnostic::decode(&resp.body).unwrap();
    assert_eq!(doc.swagger, "2.0");
    let definitions = doc.definitions.unwrap().additional_properties;
    let deployment =
        definitions.iter().find(|d| d.name == "io.k8s.api.apps.v1.Deployment").unwrap();
    let deployment = deployment.value.as_ref().unwrap();
    let gvk = deployment
        .vendor_extension
        .iter()
        .find(|e| e.name == "x-kubernetes-group-version-kind")
        .unwrap();
    let gvk: Value = serde_json::from_str(&gvk.value.as_ref().unwrap().yaml).unwrap();
    assert_eq!(gvk, json!([{"group": "apps", "kind": "Deployment", "version": "v1"}]));
    let paths = doc.paths.unwrap().path;
    let create = paths
        .iter()
        .find(|p| p.name == "/apis/apps/v1/namespaces/{namespace}/deployments")
        .unwrap();
    assert_eq!(
        create.value.as_ref().unwrap().post.as_ref().unwrap().operation_id,
        "createAppsV1NamespacedDeployment"
    );

    // The same document in JSON.
    let (status, json_doc) = rt.block_on(client.json("GET", "/openapi/v2", None));
    assert_eq!(status, 200);
    assert_eq!(json_doc["swagger"], "2.0");
    assert!(
        json_doc["definitions"]["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"]
            ["x-kubernetes-patch-merge-key"]
            == "name"
    );
}

#[test]
fn debian_kubectl_1_20_validates_against_openapi_v2() {
    // Debian's kubernetes-client conflicts with /usr/bin/kubectl of the Cloud SDK package, so
    // scripts/install-deps.sh unpacks it under /opt.
    let Some(kubectl) =
        skerry_testkit::require_program(&["/opt/kubernetes-client-1.20/usr/bin/kubectl"])
    else {
        return;
    };
    let server = SkerryServer::start();
    // Client-side validation against the protobuf v2 document, with kubectl 1.20's message.
    let bad = DEPLOYMENT.replace("replicas: 1", "replicas: 1\n  foo: bar");
    let out = server.kubectl_stdin(&kubectl, &["create", "-f", "-"], Some(&bad));
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(r#"ValidationError(Deployment.spec): unknown field "foo" in io.k8s.api.apps.v1.DeploymentSpec"#),
        "{}",
        text(&out)
    );
    let out = server.kubectl_stdin(&kubectl, &["apply", "-f", "-"], Some(DEPLOYMENT));
    assert!(ok(out, "kubectl 1.20 apply").contains("deployment.apps/web created"));
    let out = server.kubectl(&kubectl, &["get", "deployments"]);
    assert!(ok(out, "kubectl 1.20 get").contains("web"));
}
