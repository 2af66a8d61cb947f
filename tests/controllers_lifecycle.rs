//! Object lifecycle controllers end to end, through kubectl 1.32 against the real `skerry
//! server` (scheduler and controllers in it, no agent and no nodes, so pods stay unbound and
//! go at once when deleted): the namespace controller (a deleted namespace loses everything
//! in it, custom resources included, reports what holds it, and disappears), the garbage
//! collector (cascading delete of a ReplicaSet in the background, foreground and orphan
//! modes; dangling dependents), the ServiceAccount controller (`default` in every namespace)
//! and node IPAM (distinct podCIDRs, remembered across a restart).

mod common;

use std::time::{Duration, Instant};

use common::server::{ok, SkerryServer};
use serde_json::Value;

/// Bounds a failing test only: the controllers react in milliseconds.
const CONVERGE: Duration = Duration::from_secs(60);

/// Polls `probe` until it returns Ok, or panics with the last state after `CONVERGE`.
fn eventually<T>(what: &str, mut probe: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + CONVERGE;
    loop {
        match probe() {
            Ok(v) => return v,
            Err(last) if Instant::now() > deadline => {
                panic!("{what}: never happened; last: {last}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

struct Cluster {
    server: SkerryServer,
    kubectl: std::path::PathBuf,
}

impl Cluster {
    fn start() -> Option<Cluster> {
        let kubectl = skerry_testkit::kubectl()?;
        Some(Cluster { server: SkerryServer::start(), kubectl })
    }

    fn k(&self, args: &[&str]) -> String {
        ok(self.server.kubectl(&self.kubectl, args), &args.join(" "))
    }

    fn create(&self, yaml: &str) {
        let out = self.server.kubectl_stdin(&self.kubectl, &["create", "-f", "-"], Some(yaml));
        ok(out, &format!("create {yaml}"));
    }

    /// `kubectl get ARGS -o json`, or `None` when it fails (NotFound).
    fn get(&self, args: &[&str]) -> Option<Value> {
        let mut all = vec!["get"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["-o", "json"]);
        let out = self.server.kubectl(&self.kubectl, &all);
        out.status.success().then(|| serde_json::from_slice(&out.stdout).unwrap())
    }

    /// The items of a list.
    fn items(&self, args: &[&str]) -> Vec<Value> {
        let list = self.get(args).unwrap_or_else(|| panic!("get {args:?} failed"));
        list["items"].as_array().cloned().unwrap_or_default()
    }
}

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
      openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}
"#;

fn condition<'a>(ns: &'a Value, type_: &str) -> Option<&'a Value> {
    ns["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == type_)
}

#[test]
fn deleting_a_namespace_deletes_its_content_then_the_namespace() {
    let Some(c) = Cluster::start() else { return };
    c.create(CRD);
    c.k(&["wait", "--for=condition=Established", "crd/widgets.example.com", "--timeout=60s"]);
    c.k(&["create", "namespace", "team"]);
    // The ServiceAccount controller gives the new namespace its `default` account.
    eventually("default ServiceAccount in team", || {
        c.get(&["serviceaccount", "default", "-n", "team"]).ok_or("missing".to_string())
    });
    c.k(&["create", "configmap", "settings", "-n", "team", "--from-literal=a=b"]);
    c.k(&["run", "web", "-n", "team", "--image=busybox", "--restart=Never"]);
    c.create("apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: free, namespace: team}\n");
    c.create(
        "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: held, namespace: team, \
         finalizers: [example.com/hold]}\n",
    );

    c.k(&["delete", "namespace", "team", "--wait=false"]);
    // Everything goes but the held widget, and the namespace says what holds it.
    let ns = eventually("team Terminating, waiting for the held widget", || {
        let ns = c.get(&["namespace", "team"]).ok_or("namespace gone too early")?;
        let remaining = condition(&ns, "NamespaceFinalizersRemaining").map(|c| c["status"].clone());
        if remaining == Some(Value::from("True")) {
            Ok(ns)
        } else {
            Err(format!("{}", ns["status"]))
        }
    });
    assert_eq!(ns["status"]["phase"], "Terminating");
    let content = condition(&ns, "NamespaceContentRemaining").unwrap();
    assert_eq!(content["reason"], "SomeResourcesRemain");
    assert!(content["message"]
        .as_str()
        .unwrap()
        .contains("widgets.example.com has 1 resource instances"));
    assert!(c.items(&["configmaps", "-n", "team"]).is_empty());
    assert!(c.items(&["pods", "-n", "team"]).is_empty());
    let widgets: Vec<String> = c
        .items(&["widgets", "-n", "team"])
        .iter()
        .map(|w| w["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(widgets, vec!["held".to_string()]);

    // Its finalizer done, the widget goes, and then the namespace.
    c.k(&[
        "patch",
        "widget",
        "held",
        "-n",
        "team",
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":null}}"#,
    ]);
    c.k(&["delete", "namespace", "team", "--wait", "--timeout=60s", "--ignore-not-found"]);
    assert!(c.get(&["namespace", "team"]).is_none());
}

fn replicaset(name: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: ReplicaSet\nmetadata: {{name: {name}}}\nspec:\n  replicas: 2\n  \
         selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    metadata: {{labels: {{app: {name}}}}}\n    \
         spec: {{containers: [{{name: c, image: busybox}}]}}\n"
    )
}

/// The pods labelled app=`app`, once there are `n` of them.
fn pods_of(c: &Cluster, app: &str, n: usize) -> Vec<Value> {
    eventually(&format!("{n} pods of {app}"), || {
        let pods = c.items(&["pods", "-l", &format!("app={app}")]);
        if pods.len() == n {
            Ok(pods)
        } else {
            Err(format!("{} pods", pods.len()))
        }
    })
}

#[test]
fn cascading_deletes_follow_the_propagation_policy() {
    let Some(c) = Cluster::start() else { return };
    for name in ["bg", "fg", "or"] {
        c.create(&replicaset(name));
    }
    for name in ["bg", "fg", "or"] {
        let pods = pods_of(&c, name, 2);
        assert_eq!(pods[0]["metadata"]["ownerReferences"][0]["name"], name);
    }

    // Background: the ReplicaSet goes at once, its pods after it.
    c.k(&["delete", "replicaset", "bg", "--cascade=background"]);
    pods_of(&c, "bg", 0);

    // Foreground: the ReplicaSet waits for its pods; one held by a finalizer keeps it.
    let held = pods_of(&c, "fg", 2)[0]["metadata"]["name"].as_str().unwrap().to_string();
    c.k(&[
        "patch",
        "pod",
        &held,
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":["example.com/hold"]}}"#,
    ]);
    c.k(&["delete", "replicaset", "fg", "--cascade=foreground", "--wait=false"]);
    let pods = eventually("the unheld pod gone, the held one terminating", || {
        let pods = c.items(&["pods", "-l", "app=fg"]);
        match &pods[..] {
            [p] if p["metadata"]["deletionTimestamp"].is_string() => Ok(pods),
            _ => Err(format!("{} pods", pods.len())),
        }
    });
    assert_eq!(pods[0]["metadata"]["name"], held.as_str());
    let rs = c.get(&["replicaset", "fg"]).expect("the ReplicaSet waits for its held pod");
    assert!(rs["metadata"]["deletionTimestamp"].is_string());
    assert!(rs["metadata"]["finalizers"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f == "foregroundDeletion"));
    c.k(&["patch", "pod", &held, "--type=merge", "-p", r#"{"metadata":{"finalizers":null}}"#]);
    eventually("the foreground ReplicaSet gone", || match c.get(&["replicaset", "fg"]) {
        None => Ok(()),
        Some(rs) => Err(format!("{}", rs["metadata"])),
    });
    assert!(c.items(&["pods", "-l", "app=fg"]).is_empty());

    // Orphan: the ReplicaSet goes, its pods stay without the reference.
    c.k(&["delete", "replicaset", "or", "--cascade=orphan"]);
    assert!(c.get(&["replicaset", "or"]).is_none());
    let pods = pods_of(&c, "or", 2);
    for pod in &pods {
        let owners = pod["metadata"]["ownerReferences"].as_array().map(Vec::len).unwrap_or(0);
        assert_eq!(owners, 0, "{}", pod["metadata"]);
    }

    // A dependent whose owner never existed (by uid) is collected.
    c.create(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: dangling\n  ownerReferences:\n  - \
         {apiVersion: v1, kind: ConfigMap, name: ghost, uid: 00000000-0000-0000-0000-000000000001}\n",
    );
    c.create("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ghost}\n");
    eventually("the dangling ConfigMap collected", || match c.get(&["configmap", "dangling"]) {
        None => Ok(()),
        Some(_) => Err("still there".to_string()),
    });
    // A namesake of the owner with another uid is no owner: it stays, untouched.
    assert!(c.get(&["configmap", "ghost"]).is_some());
}

fn create_node(c: &Cluster, name: &str) {
    c.create(&format!("apiVersion: v1\nkind: Node\nmetadata: {{name: {name}}}\n"));
}

fn pod_cidr(c: &Cluster, name: &str) -> String {
    eventually(&format!("{name} has a podCIDR"), || {
        let node = c.get(&["node", name]).ok_or("no node")?;
        let cidr = node["spec"]["podCIDR"].as_str().ok_or("no podCIDR")?.to_string();
        assert_eq!(node["spec"]["podCIDRs"], serde_json::json!([cidr]));
        Ok(cidr)
    })
}

#[test]
fn nodes_get_distinct_pod_cidrs_also_after_a_restart() {
    let Some(mut c) = Cluster::start() else { return };
    for name in ["n1", "n2", "n3"] {
        create_node(&c, name);
    }
    let mut cidrs: Vec<String> = ["n1", "n2", "n3"].iter().map(|n| pod_cidr(&c, n)).collect();
    cidrs.sort();
    assert_eq!(cidrs, vec!["10.42.0.0/24", "10.42.1.0/24", "10.42.2.0/24"]);
    // A deleted node frees its range; a restarted server knows the others' ranges.
    let n2 = pod_cidr(&c, "n2");
    c.k(&["delete", "node", "n2"]);
    c.server.restart();
    create_node(&c, "n4");
    create_node(&c, "n5");
    let mut after =
        vec![pod_cidr(&c, "n1"), pod_cidr(&c, "n3"), pod_cidr(&c, "n4"), pod_cidr(&c, "n5")];
    after.sort();
    after.dedup();
    assert_eq!(after.len(), 4, "{after:?}");
    assert!(after.contains(&n2), "the freed range is handed out again: {after:?}");
}
