//! kubectl 1.32 against the real `skerry server`: the everyday commands on built-in kinds and
//! on a CustomResourceDefinition's resources. `create`/`replace -f` run with `--validate=false`
//! until the server serves OpenAPI (a later part).

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::server::{ok, SkerryServer};

const POD: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: web
  labels: {app: web}
spec:
  nodeName: node-a
  # No token volume from the ServiceAccount admission: `replace` below sends this spec again,
  # and (as in the reference) a pod update may not drop the admission's `kube-api-access-*`.
  automountServiceAccountToken: false
  containers:
  - name: c
    image: busybox
"#;

const CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.com
spec:
  group: example.com
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget, shortNames: [wd]}
  versions:
  - name: v1
    served: true
    storage: true
    subresources:
      status: {}
      scale: {specReplicasPath: .spec.replicas, statusReplicasPath: .status.replicas}
    additionalPrinterColumns:
    - {name: Size, type: integer, jsonPath: .spec.size}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              size: {type: integer, default: 1}
              replicas: {type: integer}
          status:
            type: object
            properties:
              replicas: {type: integer}
"#;

const WIDGET: &str = r#"
apiVersion: example.com/v1
kind: Widget
metadata:
  name: w1
  labels: {tier: gold}
spec:
  replicas: 1
"#;

#[test]
fn kubectl_everyday_commands_on_builtin_kinds() {
    let Some(kubectl) = skerry_testkit::kubectl() else { return };
    let server = SkerryServer::start();
    let k = |args: &[&str]| ok(server.kubectl(&kubectl, args), &args.join(" "));
    let k_in = |args: &[&str], stdin: &str| {
        ok(server.kubectl_stdin(&kubectl, args, Some(stdin)), &args.join(" "))
    };

    let version = k(&["version", "-o", "json"]);
    assert!(version.contains("\"gitVersion\": \"v1.33."), "{version}");
    let resources = k(&["api-resources"]);
    for line in ["pods  ", "deployments", "customresourcedefinitions", "leases"] {
        assert!(resources.contains(line), "{line} missing from:\n{resources}");
    }
    assert!(resources.lines().any(|l| l.starts_with("services") && l.contains(" svc ")));

    assert!(k_in(&["create", "--validate=false", "-f", "-"], POD).contains("pod/web created"));
    let table = k(&["get", "pods"]);
    assert!(
        table.starts_with("NAME") && table.contains("READY") && table.contains("STATUS"),
        "{table}"
    );
    assert!(table.contains("web") && table.contains("Pending"), "{table}");
    let wide = k(&["get", "pods", "-o", "wide"]);
    assert!(wide.contains("NODE") && wide.contains("node-a"), "{wide}");
    let json: serde_json::Value =
        serde_json::from_str(&k(&["get", "pod", "web", "-o", "json"])).unwrap();
    assert_eq!(json["spec"]["restartPolicy"], "Always", "defaults applied");
    assert!(k(&["get", "pod", "web", "-o", "yaml"]).contains("name: web"));
    assert_eq!(k(&["get", "pod", "web", "-o", "jsonpath={.spec.nodeName}"]), "node-a");
    assert!(k(&["label", "pod", "web", "tier=front"]).contains("labeled"));
    assert!(k(&["annotate", "pod", "web", "note=hi"]).contains("annotated"));
    k(&["patch", "pod", "web", "--type=merge", "-p", r#"{"metadata":{"labels":{"m":"1"}}}"#]);
    k(&[
        "patch",
        "pod",
        "web",
        "--type=json",
        "-p",
        r#"[{"op":"add","path":"/metadata/labels/j","value":"2"}]"#,
    ]);
    // kubectl's default patch type is a strategic merge: containers merge by name.
    k(&["patch", "pod", "web", "-p", r#"{"spec":{"containers":[{"name":"c","image":"nginx"}]}}"#]);
    assert_eq!(k(&["get", "pod", "web", "-o", "jsonpath={.spec.containers[*].image}"]), "nginx");
    let labels = k(&["get", "pod", "web", "-o", "jsonpath={.metadata.labels}"]);
    for l in ["tier", "front", "\"m\":\"1\"", "\"j\":\"2\""] {
        assert!(labels.contains(l), "{labels}");
    }
    assert!(k(&["get", "pods", "-l", "tier=front", "-o", "name"]).contains("pod/web"));
    assert!(k(&["get", "pods", "-l", "tier!=front", "-o", "name"]).is_empty());
    assert!(k(&["get", "pods", "--field-selector", "spec.nodeName=node-a", "-o", "name"])
        .contains("pod/web"));
    assert!(
        k(&["get", "pods", "--field-selector", "status.phase=Running", "-o", "name"]).is_empty()
    );
    assert!(k(&["get", "ns", "--chunk-size=1", "-o", "name"]).lines().count() >= 4);
    let replaced = POD.replace("app: web", "app: web2");
    assert!(k_in(&["replace", "--validate=false", "-f", "-"], &replaced).contains("replaced"));
    assert_eq!(k(&["get", "pod", "web", "-o", "jsonpath={.metadata.labels.app}"]), "web2");

    // get -w --output-watch-events follows the changes.
    let mut watch = Command::new(&kubectl)
        .arg("--kubeconfig")
        .arg(&server.kubeconfig)
        .arg("--cache-dir")
        .arg(server.dir.path().join("watch-cache"))
        .args(["get", "pods", "-w", "--output-watch-events", "--request-timeout=20s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    k(&["label", "pod", "web", "watched=yes"]);
    // A bound pod is deleted gracefully; --grace-period=0 --force removes it now.
    k(&["delete", "pod", "web", "--grace-period=0", "--force", "--wait=true"]);
    std::thread::sleep(Duration::from_millis(1500));
    let _ = watch.kill();
    let out = watch.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let events: Vec<&str> =
        text.lines().skip(1).filter_map(|l| l.split_whitespace().next()).collect();
    assert!(events.starts_with(&["ADDED", "MODIFIED"]), "{text}");
    assert_eq!(events.last(), Some(&"DELETED"), "{text}");
    assert!(k(&["get", "pods", "-o", "name"]).is_empty());
}

#[test]
fn kubectl_with_a_custom_resource_definition() {
    let Some(kubectl) = skerry_testkit::kubectl() else { return };
    let server = SkerryServer::start();
    let k = |args: &[&str]| ok(server.kubectl(&kubectl, args), &args.join(" "));
    let k_in = |args: &[&str], stdin: &str| {
        ok(server.kubectl_stdin(&kubectl, args, Some(stdin)), &args.join(" "))
    };

    k_in(&["create", "--validate=false", "-f", "-"], CRD);
    let crd: serde_json::Value =
        serde_json::from_str(&k(&["get", "crd", "widgets.example.com", "-o", "json"])).unwrap();
    let conditions = crd["status"]["conditions"].as_array().unwrap();
    assert!(conditions.iter().any(|c| c["type"] == "Established" && c["status"] == "True"));
    assert!(k(&["api-resources", "--api-group=example.com"]).contains("widgets"));

    assert!(k_in(&["create", "--validate=false", "-f", "-"], WIDGET)
        .contains("widget.example.com/w1 created"));
    let table = k(&["get", "widgets"]);
    assert!(table.contains("SIZE") && table.contains("w1"), "{table}");
    assert_eq!(
        k(&["get", "wd", "w1", "-o", "jsonpath={.spec.size}"]),
        "1",
        "schema default applied"
    );
    k(&["label", "widget", "w1", "color=blue"]);
    k(&["patch", "widget", "w1", "--type=merge", "-p", r#"{"spec":{"size":3}}"#]);
    assert_eq!(k(&["get", "widget", "w1", "-o", "jsonpath={.spec.size}"]), "3");
    assert_eq!(
        k(&["get", "widgets", "-l", "color=blue", "-o", "name"]).trim(),
        "widget.example.com/w1"
    );
    k(&["scale", "widget", "w1", "--replicas=4"]);
    assert_eq!(k(&["get", "widget", "w1", "-o", "jsonpath={.spec.replicas}"]), "4");
    let generation = k(&["get", "widget", "w1", "-o", "jsonpath={.metadata.generation}"]);
    assert_eq!(generation, "3", "spec changes by patch and scale bump the generation");
    k(&["delete", "widget", "w1", "--wait=true"]);
    assert!(k(&["get", "widgets", "-o", "name"]).is_empty());

    // `create ns` / `create configmap` send protobuf bodies.
    assert!(k(&["create", "ns", "team"]).contains("namespace/team created"));
    k(&["create", "configmap", "settings", "-n", "team", "--from-literal=mode=fast"]);
    assert_eq!(k(&["get", "cm", "settings", "-n", "team", "-o", "jsonpath={.data.mode}"]), "fast");
    let mut widget = WIDGET.replace("name: w1", "name: w2");
    widget = widget.replace("metadata:", "metadata:\n  namespace: team");
    k_in(&["create", "--validate=false", "-f", "-"], &widget);
    assert!(k(&["get", "widgets", "-A", "-o", "name"]).contains("w2"));
    k(&["delete", "crd", "widgets.example.com"]);
    let gone = server.kubectl(&kubectl, &["get", "widgets", "-A"]);
    assert!(!gone.status.success(), "the resource is gone with its CRD");
}
