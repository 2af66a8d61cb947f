//! The StatefulSet controller against the real `skerry server` (scheduler and controllers, no
//! agent), driven by kubectl 1.32. The test creates a Ready Node and plays the agent: it makes
//! pods Running and Ready through `pods/status`, and finishes the deletion of terminating pods
//! (the pods name the node, so deleting them is graceful, as with a real agent). Covered:
//! OrderedReady start (web-1 only once web-0 is Ready), stable identities and claims from
//! `volumeClaimTemplates`, `kubectl scale` down (highest ordinal first, claims kept) and up,
//! a RollingUpdate held at a partition, `kubectl rollout status/history/undo`, and Parallel
//! creation, the recreation of a failed pod and a `whenScaled: Delete` claim following its
//! scaled-down pod.

mod common;

use std::time::Duration;

use common::cluster::{is_ready, Cluster};
use common::server::{ok, SkerryServer};
use serde_json::{json, Value};

const NS: &str = "default";
const NODE: &str = "node-a";
/// Bounds a failing wait only.
const LIMIT: Duration = Duration::from_secs(60);

fn statefulset_yaml(name: &str, replicas: u32, policy: &str, image: &str, claims: bool) -> String {
    let templates = if claims {
        r#"
  volumeClaimTemplates:
  - metadata: {name: www}
    spec:
      accessModes: [ReadWriteOnce]
      resources: {requests: {storage: 1Gi}}"#
    } else {
        ""
    };
    format!(
        r#"
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: {name}
spec:
  replicas: {replicas}
  serviceName: nginx
  podManagementPolicy: {policy}
  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
      nodeName: {NODE}
      containers:
      - name: c
        image: {image}{templates}
"#
    )
}

/// A view of `server` with the Ready node [`NODE`] the sets' pods name.
fn cluster_with_node(server: &SkerryServer) -> Cluster {
    let c = Cluster::new(server, LIMIT);
    c.create_node(NODE, json!({}), json!([]));
    c
}

/// The StatefulSet test's queries and its part of the agent.
impl Cluster {
    fn statefulset(&self, name: &str) -> Value {
        self.get(&format!("/apis/apps/v1/namespaces/{NS}/statefulsets/{name}"))
    }

    /// The pod `name`, or `None` if it does not exist.
    fn pod(&self, name: &str) -> Option<Value> {
        let (status, body) =
            self.call("GET", &format!("/api/v1/namespaces/{NS}/pods/{name}"), None);
        match status {
            200 => Some(body),
            404 => None,
            _ => panic!("GET pod {name}: {status} {body}"),
        }
    }

    /// The pods of the set `name`, sorted by name.
    fn pods(&self, name: &str) -> Vec<Value> {
        let list = self.get(&format!("/api/v1/namespaces/{NS}/pods?labelSelector=app%3D{name}"));
        let mut pods = list["items"].as_array().cloned().unwrap_or_default();
        pods.sort_by_key(|p| p["metadata"]["name"].as_str().unwrap_or_default().to_string());
        pods
    }

    fn pod_names(&self, name: &str) -> Vec<String> {
        self.pods(name).iter().map(|p| text(&p["metadata"]["name"])).collect()
    }

    /// Waits for the pod `name` to exist, returning it.
    fn wait_pod(&self, name: &str) -> Value {
        self.eventually(&format!("pod {name} created"), || self.pod(name).ok_or("absent".into()))
    }

    /// Plays the agent (readies pods, finishes terminating ones) until the set `name` has
    /// observed its generation and runs exactly `replicas` pods, all ready.
    fn settle(&self, name: &str, replicas: i64) -> Value {
        self.eventually(&format!("{name} settles at {replicas}"), || {
            for p in self.pods(name) {
                let pod = text(&p["metadata"]["name"]);
                if !p["metadata"]["deletionTimestamp"].is_null() {
                    self.finish_deletion(&pod);
                } else if !is_ready(&p) {
                    self.mark_ready(&pod);
                }
            }
            let set = self.statefulset(name);
            let s = &set["status"];
            let done = s["observedGeneration"] == set["metadata"]["generation"]
                && s["replicas"] == replicas
                && s["readyReplicas"] == replicas
                && self.pods(name).len() == usize::try_from(replicas).unwrap();
            done.then_some(set.clone()).ok_or(format!("{s}; pods {:?}", self.pod_names(name)))
        })
    }
}

fn text(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_string()
}

fn image(pod: &Value) -> String {
    text(&pod["spec"]["containers"][0]["image"])
}

fn terminating(pod: &Value) -> bool {
    !pod["metadata"]["deletionTimestamp"].is_null()
}

/// The revision numbers `kubectl rollout history` lists.
fn history_revisions(history: &str) -> Vec<String> {
    history
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| w.parse::<u32>().is_ok())
        .map(String::from)
        .collect()
}

#[test]
fn ordered_start_stable_identities_claims_and_scale() {
    let Some(kubectl) = skerry_testkit::kubectl() else { return };
    let server = SkerryServer::start();
    let k = |args: &[&str]| ok(server.kubectl(&kubectl, args), &args.join(" "));
    let c = cluster_with_node(&server);
    let yaml = statefulset_yaml("web", 3, "OrderedReady", "busybox:1", true);
    let created = ok(server.kubectl_stdin(&kubectl, &["create", "-f", "-"], Some(&yaml)), "create");
    assert!(created.contains("statefulset.apps/web created"), "{created}");

    // web-0 comes first, with its claim; web-1 waits for it to be Ready.
    let web0 = c.wait_pod("web-0");
    let set = c.eventually("status reports web-0", || {
        let set = c.statefulset("web");
        (set["status"]["replicas"] == 1).then_some(set.clone()).ok_or(format!("{}", set["status"]))
    });
    assert!(c.pod("web-1").is_none(), "web-1 exists before web-0 is ready");
    let update_revision = text(&set["status"]["updateRevision"]);
    assert!(update_revision.starts_with("web-"), "{}", set["status"]);
    assert_eq!(set["status"]["currentRevision"], update_revision.as_str());
    assert_eq!(web0["spec"]["hostname"], "web-0");
    assert_eq!(web0["spec"]["subdomain"], "nginx");
    let labels = &web0["metadata"]["labels"];
    assert_eq!(labels["statefulset.kubernetes.io/pod-name"], "web-0");
    assert_eq!(labels["apps.kubernetes.io/pod-index"], "0");
    assert_eq!(labels["controller-revision-hash"], update_revision.as_str());
    let volume = &web0["spec"]["volumes"][0];
    assert_eq!(
        (volume["name"].as_str(), volume["persistentVolumeClaim"]["claimName"].as_str()),
        (Some("www"), Some("www-web-0")),
        "{volume}"
    );
    let claim = c.get(&format!("/api/v1/namespaces/{NS}/persistentvolumeclaims/www-web-0"));
    assert_eq!(claim["metadata"]["labels"]["app"], "web");
    assert_eq!(claim["spec"]["resources"]["requests"]["storage"], "1Gi");

    // Ready one by one: each ordinal appears only after its predecessor is Ready.
    for (ready, next) in [("web-0", "web-1"), ("web-1", "web-2")] {
        assert!(c.pod(next).is_none(), "{next} before {ready} is ready");
        c.mark_ready(ready);
        c.wait_pod(next);
    }
    c.settle("web", 3);
    for ordinal in 0..3 {
        c.get(&format!("/api/v1/namespaces/{NS}/persistentvolumeclaims/www-web-{ordinal}"));
    }
    let status = k(&["rollout", "status", "sts/web", "--timeout=60s"]);
    assert!(status.contains("roll out complete"), "{status}");
    let created = c.events("StatefulSet", "web", "SuccessfulCreate");
    for message in [
        "create Pod web-0 in StatefulSet web successful",
        "create Pod web-2 in StatefulSet web successful",
        "create Claim www-web-0 Pod web-0 in StatefulSet web success",
    ] {
        assert!(created.iter().any(|m| m == message), "{message:?} not in {created:?}");
    }

    // Scale down: web-2 goes first; web-1 only once web-2 is gone.
    assert!(k(&["scale", "sts/web", "--replicas=1"]).contains("scaled"));
    c.eventually("web-2 terminating", || {
        let pod = c.pod("web-2").ok_or("web-2 gone")?;
        terminating(&pod).then_some(()).ok_or("not yet".into())
    });
    let web1 = c.pod("web-1").expect("web-1 deleted before web-2 was gone");
    assert!(!terminating(&web1), "web-1 deleted while web-2 terminates");
    c.finish_deletion("web-2");
    c.eventually("web-1 terminating", || {
        let pod = c.pod("web-1").ok_or("web-1 gone")?;
        terminating(&pod).then_some(()).ok_or("not yet".into())
    });
    c.finish_deletion("web-1");
    c.settle("web", 1);
    assert_eq!(c.pod_names("web"), ["web-0"]);
    // Claims are retained by default.
    c.get(&format!("/api/v1/namespaces/{NS}/persistentvolumeclaims/www-web-2"));
    let deleted = c.events("StatefulSet", "web", "SuccessfulDelete");
    assert!(
        deleted.iter().any(|m| m == "delete Pod web-2 in StatefulSet web successful"),
        "{deleted:?}"
    );

    // Scale up again: the same names, mounting the same claims.
    k(&["scale", "sts/web", "--replicas=3"]);
    c.settle("web", 3);
    let web2 = c.pod("web-2").unwrap();
    assert_eq!(web2["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"], "www-web-2");
}

#[test]
fn rolling_update_with_partition_history_and_undo() {
    let Some(kubectl) = skerry_testkit::kubectl() else { return };
    let server = SkerryServer::start();
    let k = |args: &[&str]| ok(server.kubectl(&kubectl, args), &args.join(" "));
    let c = cluster_with_node(&server);
    let yaml = statefulset_yaml("web", 3, "OrderedReady", "busybox:1", false);
    ok(server.kubectl_stdin(&kubectl, &["create", "-f", "-"], Some(&yaml)), "create");
    let first = c.settle("web", 3);
    let first_revision = text(&first["status"]["updateRevision"]);

    // Only ordinals >= 1 move to the new template, from the highest down.
    k(&[
        "patch",
        "sts/web",
        "-p",
        r#"{"spec":{"updateStrategy":{"rollingUpdate":{"partition":1}}}}"#,
    ]);
    k(&["set", "image", "sts/web", "c=busybox:2"]);
    c.eventually("web-2 replaced first", || {
        let pods = c.pods("web");
        let web1 = pods.iter().find(|p| p["metadata"]["name"] == "web-1").ok_or("no web-1")?;
        assert!(!terminating(web1) && image(web1) == "busybox:1", "web-1 updated before web-2");
        let web2 = pods.iter().find(|p| p["metadata"]["name"] == "web-2");
        match web2 {
            Some(p) if terminating(p) => {
                c.finish_deletion("web-2");
                Err("web-2 terminating".into())
            }
            Some(p) if image(p) == "busybox:2" => Ok(()),
            _ => Err("web-2 not yet replaced".into()),
        }
    });
    let set = c.eventually("partitioned rollout", || {
        for p in c.pods("web") {
            let pod = text(&p["metadata"]["name"]);
            if terminating(&p) {
                c.finish_deletion(&pod);
            } else if !is_ready(&p) {
                c.mark_ready(&pod);
            }
        }
        let set = c.statefulset("web");
        (set["status"]["updatedReplicas"] == 2 && set["status"]["readyReplicas"] == 3)
            .then_some(set.clone())
            .ok_or(format!("{}", set["status"]))
    });
    let images: Vec<String> = c.pods("web").iter().map(image).collect();
    assert_eq!(images, ["busybox:1", "busybox:2", "busybox:2"]);
    let second_revision = text(&set["status"]["updateRevision"]);
    assert_ne!(second_revision, first_revision);
    assert_eq!(set["status"]["currentRevision"], first_revision.as_str());
    assert_eq!(set["status"]["currentReplicas"], 1);
    let web0 = c.pod("web-0").unwrap();
    assert_eq!(web0["metadata"]["labels"]["controller-revision-hash"], first_revision.as_str());
    let status = k(&["rollout", "status", "sts/web", "--timeout=60s"]);
    assert!(status.contains("partitioned roll out complete: 2 new pods"), "{status}");

    // Partition 0: web-0 follows, and the update revision becomes the current one.
    k(&[
        "patch",
        "sts/web",
        "-p",
        r#"{"spec":{"updateStrategy":{"rollingUpdate":{"partition":0}}}}"#,
    ]);
    let set = c.eventually("full rollout", || {
        for p in c.pods("web") {
            let pod = text(&p["metadata"]["name"]);
            if terminating(&p) {
                c.finish_deletion(&pod);
            } else if !is_ready(&p) {
                c.mark_ready(&pod);
            }
        }
        let set = c.statefulset("web");
        (set["status"]["currentRevision"] == second_revision.as_str()
            && set["status"]["readyReplicas"] == 3)
            .then_some(set.clone())
            .ok_or(format!("{}", set["status"]))
    });
    assert_eq!(set["status"]["updatedReplicas"], 3);
    assert!(c.pods("web").iter().all(|p| image(p) == "busybox:2"));
    let status = k(&["rollout", "status", "sts/web", "--timeout=60s"]);
    assert!(status.contains("roll out complete: 3 new pods"), "{status}");

    // History lists both revisions; undo brings busybox:1 back as revision 3.
    let history = k(&["rollout", "history", "sts/web"]);
    assert_eq!(history_revisions(&history), ["1", "2"], "{history}");
    assert!(k(&["rollout", "history", "sts/web", "--revision=1"]).contains("busybox:1"));
    let undo = k(&["rollout", "undo", "sts/web"]);
    assert!(undo.contains("rolled back"), "{undo}");
    let set = c.eventually("rolled back", || {
        for p in c.pods("web") {
            let pod = text(&p["metadata"]["name"]);
            if terminating(&p) {
                c.finish_deletion(&pod);
            } else if !is_ready(&p) {
                c.mark_ready(&pod);
            }
        }
        let set = c.statefulset("web");
        let back = c.pods("web").iter().filter(|p| image(p) == "busybox:1").count() == 3;
        (back && set["status"]["currentRevision"] == first_revision.as_str())
            .then_some(set.clone())
            .ok_or(format!("{}", set["status"]))
    });
    assert_eq!(
        set["status"]["updateRevision"],
        first_revision.as_str(),
        "the old revision is reused"
    );
    let history = k(&["rollout", "history", "sts/web"]);
    assert_eq!(history_revisions(&history), ["2", "3"], "{history}");
}

#[test]
fn parallel_creates_all_pods_at_once_and_failed_pods_are_recreated() {
    let Some(kubectl) = skerry_testkit::kubectl() else { return };
    let server = SkerryServer::start();
    let c = cluster_with_node(&server);
    let yaml = statefulset_yaml("db", 3, "Parallel", "busybox:1", true).replace(
        "  podManagementPolicy",
        "  persistentVolumeClaimRetentionPolicy: {whenScaled: Delete}\n  podManagementPolicy",
    );
    ok(server.kubectl_stdin(&kubectl, &["create", "-f", "-"], Some(&yaml)), "create");
    // No pod is Ready, yet all three exist.
    c.eventually("all pods created", || {
        let names = c.pod_names("db");
        (names == ["db-0", "db-1", "db-2"]).then_some(()).ok_or(format!("{names:?}"))
    });
    assert!(c.pods("db").iter().all(|p| !is_ready(p)));
    c.settle("db", 3);

    // A pod whose containers failed is deleted and comes back under its name.
    let old_uid = text(&c.pod("db-1").unwrap()["metadata"]["uid"]);
    c.set_pod_phase("db-1", "Failed", false);
    c.eventually("db-1 recreated", || {
        let pod = c.pod("db-1").ok_or("db-1 gone")?;
        if terminating(&pod) {
            c.finish_deletion("db-1");
            return Err("terminating".into());
        }
        (text(&pod["metadata"]["uid"]) != old_uid).then_some(()).ok_or("old pod".into())
    });
    c.settle("db", 3);

    // whenScaled: Delete: the claim of a scaled-down pod goes with it; the others stay.
    let k = |args: &[&str]| ok(server.kubectl(&kubectl, args), &args.join(" "));
    k(&["scale", "sts/db", "--replicas=2"]);
    c.settle("db", 2);
    let claim = |name: &str| format!("/api/v1/namespaces/{NS}/persistentvolumeclaims/{name}");
    c.eventually("www-db-2 collected", || {
        let (status, body) = c.call("GET", &claim("www-db-2"), None);
        (status == 404).then_some(()).ok_or(format!("{status} {body}"))
    });
    for name in ["www-db-0", "www-db-1"] {
        let claim = c.get(&claim(name));
        assert!(claim["metadata"]["deletionTimestamp"].is_null(), "{claim}");
    }
}
