//! `kubectl drain`, `cordon` and `uncordon` against the real `skerry server`: the
//! `pods/eviction` subresource honouring a PodDisruptionBudget, and the disruption controller
//! keeping the budget's status. There is no agent: the test creates two Ready Node objects,
//! makes pods Running/Ready through `pods/status`, and finishes the deletion of evicted pods
//! (grace period 0) as an agent would once their containers stopped. The node lifecycle
//! controller is disabled: nobody renews the nodes' Leases, and its taints would evict the pods
//! on their own.

mod common;

use std::ops::Deref;
use std::process::Output;
use std::time::{Duration, Instant};

use common::cluster::{is_ready, Cluster};
use common::server::{ok, SkerryServer};
use serde_json::{json, Value};

const NS: &str = "default";
const LIMIT: Duration = Duration::from_secs(60);
const VIOLATION: &str = "Cannot evict pod as it would violate the pod's disruption budget.";

const DEPLOYMENT: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: c
        image: busybox
"#;

fn budget_yaml(min_available: u32) -> String {
    format!(
        r#"
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: web
spec:
  minAvailable: {min_available}
  selector:
    matchLabels: {{app: web}}
"#
    )
}

/// The shared [`Cluster`] view plus kubectl.
struct DrainCluster<'a> {
    server: &'a SkerryServer,
    kubectl: std::path::PathBuf,
    cluster: Cluster,
}

impl Deref for DrainCluster<'_> {
    type Target = Cluster;

    fn deref(&self) -> &Cluster {
        &self.cluster
    }
}

impl DrainCluster<'_> {
    fn kubectl(&self, args: &[&str]) -> Output {
        self.server.kubectl(&self.kubectl, args)
    }

    fn apply(&self, yaml: &str) {
        let out = self.server.kubectl_stdin(&self.kubectl, &["apply", "-f", "-"], Some(yaml));
        ok(out, "kubectl apply");
    }

    fn node(&self, name: &str) -> Value {
        self.get(&format!("/api/v1/nodes/{name}"))
    }

    /// The pods of the Deployment `web`.
    fn pods(&self) -> Vec<Value> {
        let list = self.get(&format!("/api/v1/namespaces/{NS}/pods?labelSelector=app%3Dweb"));
        list["items"].as_array().cloned().unwrap_or_default()
    }

    fn budget(&self) -> Value {
        self.get(&format!("/apis/policy/v1/namespaces/{NS}/poddisruptionbudgets/web"))
    }

    /// Waits until the budget's status says `allowed` for `min_available` over 2 ready pods.
    fn budget_settles(&self, min_available: i64, allowed: i64) -> Value {
        self.eventually("budget status", || {
            let pdb = self.budget();
            let status = &pdb["status"];
            let condition = status["conditions"]
                .as_array()
                .and_then(|c| c.iter().find(|c| c["type"] == "DisruptionAllowed").cloned())
                .unwrap_or(Value::Null);
            let (want_status, want_reason) = if allowed > 0 {
                ("True", "SufficientPods")
            } else {
                ("False", "InsufficientPods")
            };
            let settled = status["observedGeneration"] == pdb["metadata"]["generation"]
                && status["expectedPods"] == 2
                && status["currentHealthy"] == 2
                && status["desiredHealthy"] == min_available
                && status["disruptionsAllowed"] == allowed
                && condition["status"] == want_status
                && condition["reason"] == want_reason;
            if settled {
                Ok(pdb)
            } else {
                Err(format!("{pdb}"))
            }
        })
    }

    /// One step of the missing agent: bound pods become Running and Ready, terminating pods
    /// finish (their `DisruptionTarget` reasons are returned).
    fn act_as_agent(&self) -> Vec<String> {
        let mut reasons = Vec::new();
        for pod in self.pods() {
            let name = pod["metadata"]["name"].as_str().unwrap_or_default().to_string();
            if !pod["metadata"]["deletionTimestamp"].is_null() {
                let conditions =
                    pod["status"]["conditions"].as_array().cloned().unwrap_or_default();
                if let Some(c) = conditions.iter().find(|c| c["type"] == "DisruptionTarget") {
                    reasons.push(c["reason"].as_str().unwrap_or_default().to_string());
                }
                self.finish_deletion(&name);
            } else if pod["spec"]["nodeName"].is_string() && !is_ready(&pod) {
                self.mark_ready(&name);
            }
        }
        reasons
    }

    fn evict(&self, pod: &str, body: &Value, query: &str) -> (u16, Value) {
        let path = format!("/api/v1/namespaces/{NS}/pods/{pod}/eviction{query}");
        self.call("POST", &path, Some(body))
    }
}

fn eviction(api_version: &str, name: &str) -> Value {
    json!({"apiVersion": api_version, "kind": "Eviction",
           "metadata": {"name": name, "namespace": NS}})
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[test]
fn drain_honours_the_disruption_budget() {
    let Some(kubectl) = skerry_testkit::kubectl() else { return };
    let server = SkerryServer::start_with(&["--disable-controllers", "nodelifecycle"]);
    let c = DrainCluster { server: &server, kubectl, cluster: Cluster::new(&server, LIMIT) };

    // Both replicas land on node-a (the only node yet) and become ready.
    c.create_node("node-a", json!({}), json!([]));
    c.apply(DEPLOYMENT);
    c.eventually("two ready pods on node-a", || {
        c.act_as_agent();
        let pods = c.pods();
        let on_a = pods.iter().filter(|p| p["spec"]["nodeName"] == "node-a" && is_ready(p));
        if pods.len() == 2 && on_a.count() == 2 {
            Ok(())
        } else {
            Err(format!("{pods:?}"))
        }
    });
    c.create_node("node-b", json!({}), json!([]));

    // minAvailable 2 of 2: no disruption allowed.
    c.apply(&budget_yaml(2));
    c.budget_settles(2, 0);
    let victim = c.pods()[0]["metadata"]["name"].as_str().unwrap().to_string();
    let (code, status) = c.evict(&victim, &eviction("policy/v1", &victim), "");
    assert_eq!(code, 429, "{status}");
    assert_eq!(status["reason"], "TooManyRequests", "{status}");
    assert_eq!(status["message"], VIOLATION, "{status}");
    assert_eq!(status["details"]["causes"][0]["reason"], "DisruptionBudget", "{status}");
    assert_eq!(
        status["details"]["causes"][0]["message"],
        "The disruption budget web needs 2 healthy pods and has 2 currently"
    );
    let pod = c.get(&format!("/api/v1/namespaces/{NS}/pods/{victim}"));
    assert!(pod["metadata"]["deletionTimestamp"].is_null(), "refused eviction deleted: {pod}");
    // The name in the body must be the URL's.
    let (code, status) = c.evict(&victim, &eviction("policy/v1", "other"), "");
    assert_eq!(code, 400, "{status}");

    // kubectl drain cordons the node, then keeps retrying the refused evictions until its
    // timeout.
    let out = c.kubectl(&[
        "drain",
        "node-a",
        "--ignore-daemonsets",
        "--delete-emptydir-data",
        "--timeout=8s",
    ]);
    assert!(!out.status.success(), "drain succeeded despite the budget: {}", text(&out));
    assert!(text(&out).contains(VIOLATION), "{}", text(&out));
    assert_eq!(c.node("node-a")["spec"]["unschedulable"], true);
    assert_eq!(c.pods().iter().filter(|p| p["spec"]["nodeName"] == "node-a").count(), 2);

    // minAvailable 1: one disruption at a time. A dry-run eviction (policy/v1beta1 body)
    // spends nothing and deletes nothing.
    c.apply(&budget_yaml(1));
    c.budget_settles(1, 1);
    let (code, status) = c.evict(&victim, &eviction("policy/v1beta1", &victim), "?dryRun=All");
    assert_eq!((code, &status["status"]), (201, &json!("Success")), "{status}");
    let pod = c.get(&format!("/api/v1/namespaces/{NS}/pods/{victim}"));
    assert!(pod["metadata"]["deletionTimestamp"].is_null(), "dry run deleted: {pod}");
    assert_eq!(c.budget()["status"]["disruptionsAllowed"], 1);

    // The drain now goes through while the "agent" finishes evicted pods and readies their
    // replacements (on node-b: node-a is cordoned).
    let mut reasons = Vec::new();
    let out = std::thread::scope(|scope| {
        let drain = scope.spawn(|| {
            c.kubectl(&[
                "drain",
                "node-a",
                "--ignore-daemonsets",
                "--delete-emptydir-data",
                "--timeout=120s",
            ])
        });
        let deadline = Instant::now() + Duration::from_secs(150);
        while !drain.is_finished() {
            assert!(Instant::now() < deadline, "drain did not finish");
            reasons.extend(c.act_as_agent());
            std::thread::sleep(Duration::from_millis(300));
        }
        drain.join().unwrap()
    });
    let output = ok(out, "kubectl drain with room in the budget");
    assert!(output.contains("node/node-a drained"), "{output}");
    assert_eq!(reasons.len(), 2, "evicted pods seen terminating: {reasons:?}");
    assert!(reasons.iter().all(|r| r == "EvictionByEvictionAPI"), "{reasons:?}");
    assert!(c.pods().iter().all(|p| p["metadata"]["name"] != victim.as_str()));
    c.eventually("replacements ready on node-b", || {
        c.act_as_agent();
        let pods = c.pods();
        let on_b = pods.iter().filter(|p| p["spec"]["nodeName"] == "node-b" && is_ready(p));
        if pods.len() == 2 && on_b.count() == 2 {
            Ok(())
        } else {
            Err(format!("{pods:?}"))
        }
    });
    // The spent disruption comes back once the replacements are healthy.
    let pdb = c.budget_settles(1, 1);
    assert!(pdb["status"]["disruptedPods"].as_object().is_none_or(|d| d.is_empty()), "{pdb}");
    assert_eq!(c.node("node-a")["spec"]["unschedulable"], true);

    // uncordon makes node-a schedulable again; cordon and uncordon of node-b round-trip.
    ok(c.kubectl(&["uncordon", "node-a"]), "kubectl uncordon");
    assert_ne!(c.node("node-a")["spec"]["unschedulable"], true);
    ok(c.kubectl(&["cordon", "node-b"]), "kubectl cordon");
    assert_eq!(c.node("node-b")["spec"]["unschedulable"], true);
    ok(c.kubectl(&["uncordon", "node-b"]), "kubectl uncordon");
    assert_ne!(c.node("node-b")["spec"]["unschedulable"], true);
}
