//! The Deployment controller against the real `skerry server` (with its ReplicaSet controller
//! creating the pods), driven by kubectl 1.32: a rolling update that keeps within maxSurge
//! and maxUnavailable, `rollout status`, `rollout history`, `rollout undo`, `scale`, the
//! Recreate strategy, pause/resume and the progress deadline. There is no agent: the test
//! makes pods Ready through `pods/status` as an agent would, and finishes the deletion of
//! pods bound to a node (grace period 0) as an agent would once their containers stopped.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::cluster::{is_ready, pod_status, Cluster, LONG_AGO};
use common::server::{ok, SkerryServer};
use serde_json::{json, Value};

const NS: &str = "default";
const LIMIT: Duration = Duration::from_secs(60);

fn deployment_yaml(
    name: &str,
    replicas: u32,
    image: &str,
    strategy: &str,
    extra_pod_spec: &str,
) -> String {
    format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: {name}}}
  strategy:
{strategy}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
      {extra_pod_spec}
      containers:
      - name: c
        image: {image}
"#
    )
}

/// One ReplicaSet as the test reads it.
#[derive(Debug, Clone)]
struct Rs {
    name: String,
    uid: String,
    replicas: i64,
    revision: String,
    image: String,
    hash: String,
    /// `status.readyReplicas`.
    ready: i64,
}

/// The Deployment test's queries.
impl Cluster {
    fn deployment(&self, name: &str) -> Value {
        self.get(&format!("/apis/apps/v1/namespaces/{NS}/deployments/{name}"))
    }

    /// The ReplicaSets controlled by the Deployment `name`, by name.
    fn replica_sets(&self, name: &str) -> BTreeMap<String, Rs> {
        let list = self.get(&format!("/apis/apps/v1/namespaces/{NS}/replicasets"));
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|rs| rs["metadata"]["ownerReferences"][0]["name"] == name)
            .map(|rs| {
                let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
                let rs = Rs {
                    name: text(&rs["metadata"]["name"]),
                    uid: text(&rs["metadata"]["uid"]),
                    replicas: rs["spec"]["replicas"].as_i64().unwrap_or(0),
                    revision: text(
                        &rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
                    ),
                    image: text(&rs["spec"]["template"]["spec"]["containers"][0]["image"]),
                    hash: text(&rs["spec"]["template"]["metadata"]["labels"]["pod-template-hash"]),
                    ready: rs["status"]["readyReplicas"].as_i64().unwrap_or(0),
                };
                (rs.name.clone(), rs)
            })
            .collect()
    }

    /// The pods controlled by the ReplicaSet with `uid`.
    fn pods_of(&self, uid: &str) -> Vec<Value> {
        let list = self.get(&format!("/api/v1/namespaces/{NS}/pods"));
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["metadata"]["ownerReferences"][0]["uid"] == uid)
            .cloned()
            .collect()
    }

    /// The pods of every ReplicaSet of the Deployment `name`.
    fn pods(&self, name: &str) -> Vec<Value> {
        self.replica_sets(name).values().flat_map(|rs| self.pods_of(&rs.uid)).collect()
    }

    /// Writes the status an agent reports for a started, ready pod, including its container
    /// `c` running the pod's image.
    fn mark_ready_with_container(&self, pod: &Value) {
        let name = pod["metadata"]["name"].as_str().unwrap();
        let mut status = pod_status("Running", true, LONG_AGO);
        status["containerStatuses"] = json!([{
            "name": "c", "ready": true, "started": true, "restartCount": 0,
            "image": pod["spec"]["containers"][0]["image"], "imageID": "",
            "state": {"running": {"startedAt": LONG_AGO}},
        }]);
        self.patch_pod_status(name, &status);
    }

    /// Pods of `name` not terminating and not yet Ready.
    fn unready_pods(&self, name: &str) -> Vec<Value> {
        self.pods(name)
            .into_iter()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null() && !is_ready(p))
            .collect()
    }

    /// Finishes the deletion of terminating pods (what an agent does once they stopped).
    fn finish_terminating(&self, name: &str) -> usize {
        let terminating: Vec<Value> = self
            .pods(name)
            .into_iter()
            .filter(|p| !p["metadata"]["deletionTimestamp"].is_null())
            .collect();
        for p in &terminating {
            self.finish_deletion(p["metadata"]["name"].as_str().unwrap());
        }
        terminating.len()
    }

    /// Waits until the controller has acted on the Deployment's current generation.
    fn observed(&self, name: &str) -> Value {
        self.eventually("generation observed", || {
            let d = self.deployment(name);
            let generation = d["metadata"]["generation"].as_i64();
            if d["status"]["observedGeneration"].as_i64() >= generation {
                Ok(d)
            } else {
                Err(format!("{d}"))
            }
        })
    }

    /// The Deployment's Progressing condition.
    fn progressing(&self, name: &str) -> Value {
        let d = self.deployment(name);
        let conditions = d["status"]["conditions"].as_array().cloned().unwrap_or_default();
        conditions.into_iter().find(|c| c["type"] == "Progressing").unwrap_or(Value::Null)
    }
}

/// Marks pods ready one at a time until `name` runs `replicas` available pods of `image` and
/// no others. With `bounds` (maxSurge, maxUnavailable) it checks before each step that the
/// controller never wants more than `replicas + surge` pods, and that while two ReplicaSets
/// exist at least `replicas - unavailable` pods stay ready.
fn roll_out(c: &Cluster, name: &str, replicas: i64, image: &str, bounds: Option<(i64, i64)>) {
    c.eventually("rollout complete", || {
        let sets = c.replica_sets(name);
        if let Some((surge, unavailable)) = bounds {
            let wanted: i64 = sets.values().map(|rs| rs.replicas).sum();
            assert!(
                wanted <= replicas + surge,
                "more than {replicas}+{surge} pods wanted: {sets:?}"
            );
            let pods = c.pods(name);
            let ready = pods
                .iter()
                .filter(|p| p["metadata"]["deletionTimestamp"].is_null() && is_ready(p))
                .count();
            let ready = i64::try_from(ready).unwrap();
            if sets.len() > 1 {
                assert!(ready >= replicas - unavailable, "only {ready} ready pods: {sets:?}");
            }
        }
        let d = c.deployment(name);
        let status = &d["status"];
        let done = sets.values().all(|rs| {
            if rs.image == image {
                rs.replicas == replicas && rs.ready == replicas
            } else {
                rs.replicas == 0
            }
        }) && status["updatedReplicas"] == replicas
            && status["availableReplicas"] == replicas
            && status["replicas"] == replicas
            && status["observedGeneration"] == d["metadata"]["generation"];
        if done {
            return Ok(());
        }
        if let Some(pod) = c.unready_pods(name).first() {
            c.mark_ready_with_container(pod);
        }
        std::thread::sleep(Duration::from_millis(300));
        let pods: Vec<(Value, bool, bool)> = c
            .pods(name)
            .iter()
            .map(|p| {
                (
                    p["metadata"]["name"].clone(),
                    is_ready(p),
                    !p["metadata"]["deletionTimestamp"].is_null(),
                )
            })
            .collect();
        Err(format!("not yet: {sets:?} status {status}; pods (name, ready, terminating): {pods:?}"))
    });
}

#[test]
fn rolling_update_history_undo_and_scale() {
    let Some(kubectl) = skerry_testkit::kubectl() else { return };
    let server = SkerryServer::start();
    let k = |args: &[&str]| ok(server.kubectl(&kubectl, args), &args.join(" "));
    let c = Cluster::new(&server, LIMIT);
    let strategy = "    type: RollingUpdate\n    rollingUpdate: {maxSurge: 1, maxUnavailable: 0}";
    let yaml = deployment_yaml("web", 3, "busybox:1", strategy, "");
    let created = ok(
        server.kubectl_stdin(&kubectl, &["create", "--validate=false", "-f", "-"], Some(&yaml)),
        "create",
    );
    assert!(created.contains("deployment.apps/web created"), "{created}");

    // One ReplicaSet named by the template hash, carrying it on selector and template, 3 pods.
    let first = c.eventually("first replica set with 3 pods", || {
        let sets = c.replica_sets("web");
        let rs = sets.values().next().cloned().ok_or("no replica set".to_string())?;
        let pods = c.pods_of(&rs.uid);
        (pods.len() == 3).then_some(rs.clone()).ok_or(format!("{rs:?} has {} pods", pods.len()))
    });
    assert_eq!(first.name, format!("web-{}", first.hash));
    assert_eq!(first.revision, "1");
    assert_eq!(first.replicas, 3);
    let rs_json = c.get(&format!("/apis/apps/v1/namespaces/{NS}/replicasets/{}", first.name));
    assert_eq!(
        rs_json["spec"]["selector"]["matchLabels"]["pod-template-hash"],
        first.hash.as_str()
    );
    for pod in c.pods_of(&first.uid) {
        assert_eq!(pod["metadata"]["labels"]["pod-template-hash"], first.hash.as_str());
    }
    let d = c.observed("web");
    assert_eq!(d["status"]["availableReplicas"].as_i64().unwrap_or(0), 0);
    assert!(c
        .events("Deployment", "web", "ScalingReplicaSet")
        .contains(&format!("Scaled up replica set {} from 0 to 3", first.name)));

    roll_out(&c, "web", 3, "busybox:1", Some((1, 0)));
    let d = c.deployment("web");
    assert_eq!(d["status"]["availableReplicas"], 3);
    assert_eq!(d["status"]["readyReplicas"], 3);
    assert_eq!(d["metadata"]["annotations"]["deployment.kubernetes.io/revision"], "1");
    let status = k(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    assert!(status.contains("successfully rolled out"), "{status}");

    // A new image: a second ReplicaSet, rolled within maxSurge 1 / maxUnavailable 0.
    k(&["set", "image", "deployment/web", "c=busybox:2"]);
    roll_out(&c, "web", 3, "busybox:2", Some((1, 0)));
    let sets = c.replica_sets("web");
    assert_eq!(sets.len(), 2, "{sets:?}");
    let second = sets.values().find(|rs| rs.image == "busybox:2").unwrap().clone();
    assert_eq!((second.revision.as_str(), second.replicas), ("2", 3));
    assert_eq!(sets[&first.name].replicas, 0, "old replica set scaled to 0");
    assert!(c.pods_of(&first.uid).is_empty());
    let status = k(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    assert!(status.contains("successfully rolled out"), "{status}");
    let events = c.events("Deployment", "web", "ScalingReplicaSet");
    assert!(
        events.contains(&format!("Scaled up replica set {} from 0 to 1", second.name)),
        "{events:?}"
    );
    assert!(
        events.contains(&format!("Scaled down replica set {} from 1 to 0", first.name)),
        "{events:?}"
    );
    let progressing = c.progressing("web");
    assert_eq!(progressing["reason"], "NewReplicaSetAvailable", "{progressing}");

    let history = k(&["rollout", "history", "deployment/web"]);
    let revisions: Vec<&str> = history
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| w.parse::<u32>().is_ok())
        .collect();
    assert_eq!(revisions, ["1", "2"], "{history}");
    assert!(k(&["rollout", "history", "deployment/web", "--revision=1"]).contains("busybox:1"));

    // Undo: revision 1's template comes back as revision 3, in the first ReplicaSet.
    let undo = k(&["rollout", "undo", "deployment/web"]);
    assert!(undo.contains("rolled back"), "{undo}");
    let d = c.deployment("web");
    assert_eq!(d["spec"]["template"]["spec"]["containers"][0]["image"], "busybox:1");
    roll_out(&c, "web", 3, "busybox:1", Some((1, 0)));
    let sets = c.replica_sets("web");
    assert_eq!(sets.len(), 2, "no third replica set: {sets:?}");
    assert_eq!((sets[&first.name].revision.as_str(), sets[&first.name].replicas), ("3", 3));
    assert_eq!(sets[&second.name].replicas, 0);
    let history = k(&["rollout", "history", "deployment/web"]);
    let revisions: Vec<&str> = history
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| w.parse::<u32>().is_ok())
        .collect();
    assert_eq!(revisions, ["2", "3"], "{history}");
    assert_eq!(
        c.deployment("web")["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "3"
    );

    // Scale: the only active ReplicaSet takes the new size.
    assert!(k(&["scale", "deployment/web", "--replicas=5"]).contains("scaled"));
    roll_out(&c, "web", 5, "busybox:1", None);
    assert_eq!(c.replica_sets("web")[&first.name].replicas, 5);
    assert_eq!(c.pods_of(&first.uid).len(), 5);
    assert!(c
        .events("Deployment", "web", "ScalingReplicaSet")
        .contains(&format!("Scaled up replica set {} from 3 to 5", first.name)));
    let status = k(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    assert!(status.contains("successfully rolled out"), "{status}");
}

#[test]
fn recreate_starts_new_pods_only_after_the_old_ones_are_gone() {
    let Some(kubectl) = skerry_testkit::kubectl() else { return };
    let server = SkerryServer::start();
    let k = |args: &[&str]| ok(server.kubectl(&kubectl, args), &args.join(" "));
    let c = Cluster::new(&server, LIMIT);
    // Bound pods are deleted gracefully: they stay terminating until the "agent" (the test)
    // finishes them, which is what Recreate must wait for.
    let yaml = deployment_yaml("db", 2, "busybox:1", "    type: Recreate", "nodeName: node-a");
    ok(
        server.kubectl_stdin(&kubectl, &["create", "--validate=false", "-f", "-"], Some(&yaml)),
        "create",
    );
    roll_out(&c, "db", 2, "busybox:1", None);
    let first = c.replica_sets("db").into_values().next().unwrap();

    k(&["set", "image", "deployment/db", "c=busybox:2"]);
    c.eventually("old pods terminating", || {
        let sets = c.replica_sets("db");
        let old = c.pods_of(&first.uid);
        let terminating = old.iter().all(|p| !p["metadata"]["deletionTimestamp"].is_null());
        (sets[&first.name].replicas == 0 && old.len() == 2 && terminating)
            .then_some(())
            .ok_or(format!("{sets:?}"))
    });
    // The controller has seen the new template and still waits for the old pods.
    c.observed("db");
    let sets = c.replica_sets("db");
    assert_eq!(sets.len(), 1, "no new replica set while old pods run: {sets:?}");
    assert_eq!(c.finish_terminating("db"), 2);

    let second = c.eventually("new replica set", || {
        let sets = c.replica_sets("db");
        sets.into_values()
            .find(|rs| rs.image == "busybox:2" && rs.replicas == 2)
            .ok_or("not yet".to_string())
    });
    assert_eq!(second.revision, "2");
    roll_out(&c, "db", 2, "busybox:2", None);
    assert!(c
        .events("Deployment", "db", "ScalingReplicaSet")
        .contains(&format!("Scaled down replica set {} from 2 to 0", first.name)));
    let status = k(&["rollout", "status", "deployment/db", "--timeout=60s"]);
    assert!(status.contains("successfully rolled out"), "{status}");
}

#[test]
fn paused_deployments_only_scale_and_resume_the_rollout() {
    let Some(kubectl) = skerry_testkit::kubectl() else { return };
    let server = SkerryServer::start();
    let k = |args: &[&str]| ok(server.kubectl(&kubectl, args), &args.join(" "));
    let c = Cluster::new(&server, LIMIT);
    let strategy = "    type: RollingUpdate\n    rollingUpdate: {maxSurge: 1, maxUnavailable: 1}";
    let yaml = deployment_yaml("api", 2, "busybox:1", strategy, "");
    ok(
        server.kubectl_stdin(&kubectl, &["create", "--validate=false", "-f", "-"], Some(&yaml)),
        "create",
    );
    roll_out(&c, "api", 2, "busybox:1", None);
    let first = c.replica_sets("api").into_values().next().unwrap();

    k(&["rollout", "pause", "deployment/api"]);
    k(&["set", "image", "deployment/api", "c=busybox:2"]);
    k(&["scale", "deployment/api", "--replicas=3"]);
    c.observed("api");
    let cond = c.progressing("api");
    assert_eq!(
        (cond["status"].as_str(), cond["reason"].as_str()),
        (Some("Unknown"), Some("DeploymentPaused")),
        "{cond}"
    );
    // Scaled, but not rolled: the old template takes the new size, no new ReplicaSet.
    c.eventually("paused scale", || {
        let sets = c.replica_sets("api");
        (sets.len() == 1 && sets[&first.name].replicas == 3)
            .then_some(())
            .ok_or(format!("{sets:?}"))
    });

    k(&["rollout", "resume", "deployment/api"]);
    roll_out(&c, "api", 3, "busybox:2", Some((1, 1)));
    let sets = c.replica_sets("api");
    assert_eq!(sets.len(), 2, "{sets:?}");
    assert_eq!(sets[&first.name].replicas, 0);
    let cond = c.progressing("api");
    assert_eq!(cond["reason"], "NewReplicaSetAvailable", "{cond}");
    let status = k(&["rollout", "status", "deployment/api", "--timeout=60s"]);
    assert!(status.contains("successfully rolled out"), "{status}");
}

#[test]
fn a_rollout_without_progress_exceeds_its_deadline() {
    let Some(kubectl) = skerry_testkit::kubectl() else { return };
    let server = SkerryServer::start();
    let c = Cluster::new(&server, LIMIT);
    let yaml = deployment_yaml("slow", 1, "busybox:1", "    type: RollingUpdate", "")
        .replace("  replicas: 1\n", "  replicas: 1\n  progressDeadlineSeconds: 2\n");
    ok(
        server.kubectl_stdin(&kubectl, &["create", "--validate=false", "-f", "-"], Some(&yaml)),
        "create",
    );
    // No pod ever becomes ready: the deadline passes on the clock alone.
    let cond = c.eventually("deadline exceeded", || {
        let cond = c.progressing("slow");
        (cond["reason"] == "ProgressDeadlineExceeded")
            .then_some(cond.clone())
            .ok_or(format!("{cond}"))
    });
    assert_eq!(cond["status"], "False");
    let out = server.kubectl(&kubectl, &["rollout", "status", "deployment/slow", "--timeout=30s"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("exceeded its progress deadline"), "{stderr}");
}

#[test]
fn a_restarted_control_plane_converges_without_duplicates() {
    let Some(kubectl) = skerry_testkit::kubectl() else { return };
    let mut server = SkerryServer::start();
    let yaml =
        deployment_yaml("web", 5, "busybox:1", "    type: RollingUpdate", "nodeName: node-a");
    let create = ["create", "--validate=false", "-f", "-"];
    ok(server.kubectl_stdin(&kubectl, &create, Some(&yaml)), "create");
    let c = Cluster::new(&server, LIMIT);
    roll_out(&c, "web", 5, "busybox:1", None);
    for round in 0..3 {
        server.restart_same_port();
        // A Deployment created after the restart rolling out shows the controllers are past
        // their first sync of everything, including `web`.
        let probe = format!("probe-{round}");
        let yaml = deployment_yaml(&probe, 1, "busybox:1", "    type: RollingUpdate", "");
        ok(server.kubectl_stdin(&kubectl, &create, Some(&yaml)), "create probe");
        c.eventually("probe pod", || {
            (c.pods(&probe).len() == 1).then_some(()).ok_or("no probe pod yet".to_string())
        });
        assert_eq!(c.replica_sets("web").len(), 1, "round {round}: one replica set");
        assert_eq!(c.pods("web").len(), 5, "round {round}: still five pods");
    }
}
