//! Volumes and scheduling against the real `skerry server` (scheduler and controllers, no
//! agent): a `WaitForFirstConsumer` claim of a class without a provisioner sends its pod to the
//! node of a matching local volume, or keeps it Pending with the reference's reason; a pod
//! parked for a claim that does not exist yet is scheduled promptly once the claim and its
//! volume appear (the storage informers wake it, well before the periodic flush); and deleting
//! a claim or volume still in use leaves it Terminating, held by the protection finalizers,
//! until its pod is gone.

mod common;

use std::time::Duration;

use common::cluster::Cluster;
use common::server::{ok, SkerryServer};
use serde_json::{json, Value};

const NS: &str = "default";
/// Bounds a failing wait only.
const LIMIT: Duration = Duration::from_secs(60);
/// A class whose volumes are made by hand and bound once a consumer is placed.
const CLASS: &str = "local-manual";
const NO_VOLUME: &str = "node(s) didn't find available persistent volumes to bind";

fn claim_path(name: &str) -> String {
    format!("/api/v1/namespaces/{NS}/persistentvolumeclaims/{name}")
}

fn volume_path(name: &str) -> String {
    format!("/api/v1/persistentvolumes/{name}")
}

fn pod_path(name: &str) -> String {
    format!("/api/v1/namespaces/{NS}/pods/{name}")
}

/// The storage scheduling tests' requests.
impl Cluster {
    /// The object at `path`, or `None` when it does not exist.
    fn find(&self, path: &str) -> Option<Value> {
        let (status, body) = self.call("GET", path, None);
        match status {
            200 => Some(body),
            404 => None,
            _ => panic!("GET {path}: {status} {body}"),
        }
    }

    /// The `WaitForFirstConsumer` class without a provisioner.
    fn manual_class(&self) {
        let class = json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
            "metadata": {"name": CLASS}, "provisioner": "kubernetes.io/no-provisioner",
            "volumeBindingMode": "WaitForFirstConsumer"});
        self.create("/apis/storage.k8s.io/v1/storageclasses", &class);
    }

    /// A 1Gi claim of `class`.
    fn claim(&self, name: &str, class: &str) {
        let body = json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": name},
            "spec": {"storageClassName": class, "accessModes": ["ReadWriteOnce"],
                     "resources": {"requests": {"storage": "1Gi"}}}});
        self.create(&format!("/api/v1/namespaces/{NS}/persistentvolumeclaims"), &body);
    }

    /// A 5Gi local volume of `class` on `node`.
    fn local_volume(&self, name: &str, class: &str, node: &str) {
        let body = json!({"apiVersion": "v1", "kind": "PersistentVolume",
            "metadata": {"name": name},
            "spec": {"capacity": {"storage": "5Gi"}, "accessModes": ["ReadWriteOnce"],
                     "storageClassName": class, "local": {"path": format!("/mnt/{name}")},
                     "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                         {"key": "kubernetes.io/hostname", "operator": "In",
                          "values": [node]}]}]}}}});
        self.create("/api/v1/persistentvolumes", &body);
    }

    /// A pod mounting the claim `claim` (placed on `node` directly when given).
    fn pod_using(&self, name: &str, claim: &str, node: Option<&str>) {
        let body = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}],
                     "volumes": [{"name": "v", "persistentVolumeClaim": {"claimName": claim}}]}});
        self.create(&format!("/api/v1/namespaces/{NS}/pods"), &body);
    }

    /// Waits until the pod is bound to a node; returns the node.
    fn scheduled(&self, pod: &str, limit: Duration) -> String {
        self.eventually_within(&format!("{pod} scheduled"), limit, || {
            let pod = self.get(&pod_path(pod));
            let node = pod["spec"]["nodeName"].as_str().unwrap_or_default().to_string();
            (!node.is_empty()).then_some(node).ok_or(pod["status"].to_string())
        })
    }

    /// Waits until the pod's `PodScheduled` condition is False; returns its message.
    fn unschedulable(&self, pod: &str) -> String {
        self.eventually(&format!("{pod} unschedulable"), || {
            let pod = self.get(&pod_path(pod));
            let conditions = pod["status"]["conditions"].as_array().cloned().unwrap_or_default();
            conditions
                .iter()
                .find(|c| c["type"] == "PodScheduled" && c["status"] == "False")
                .map(|c| c["message"].as_str().unwrap_or_default().to_string())
                .ok_or(pod.to_string())
        })
    }

    /// Waits until the claim is bound; returns its volume's name.
    fn bound_to(&self, claim: &str) -> String {
        self.eventually(&format!("claim {claim} bound"), || {
            let claim = self.get(&claim_path(claim));
            let volume = claim["spec"]["volumeName"].as_str().unwrap_or_default().to_string();
            (claim["status"]["phase"] == "Bound" && !volume.is_empty())
                .then_some(volume)
                .ok_or(claim.to_string())
        })
    }

    /// Waits until nothing is at `path`.
    fn gone(&self, path: &str) {
        self.eventually(&format!("{path} gone"), || match self.find(path) {
            None => Ok(()),
            Some(object) => Err(object.to_string()),
        });
    }
}

fn finalizers(object: &Value) -> Vec<&str> {
    let list = object["metadata"]["finalizers"].as_array();
    list.into_iter().flatten().filter_map(Value::as_str).collect()
}

#[test]
fn a_waiting_claim_takes_its_pod_to_the_node_of_a_matching_volume() {
    let server = SkerryServer::start();
    let c = Cluster::new(&server, LIMIT);
    c.create_node("a", json!({}), json!([]));
    c.create_node("b", json!({}), json!([]));
    c.manual_class();
    c.local_volume("local-b", CLASS, "b");

    // Only node b has a volume for the claim: the pod goes there, and the claim binds to it.
    c.claim("data", CLASS);
    c.pod_using("app", "data", None);
    assert_eq!(c.scheduled("app", LIMIT), "b");
    assert_eq!(c.bound_to("data"), "local-b");
    let claim = c.get(&claim_path("data"));
    assert_eq!(claim["metadata"]["annotations"]["volume.kubernetes.io/selected-node"], "b");

    // The volume is taken now and the class cannot provision: a second claim's pod fits
    // nowhere, for the reference's reason.
    c.claim("more", CLASS);
    c.pod_using("second", "more", None);
    let message = c.unschedulable("second");
    assert!(message.starts_with(&format!("0/2 nodes are available: 2 {NO_VOLUME}.")), "{message}");
    let pod = c.get(&pod_path("second"));
    assert!(pod["spec"]["nodeName"].is_null(), "{pod}");
    let claim = c.get(&claim_path("more"));
    assert_eq!(claim["status"]["phase"], "Pending", "{claim}");
}

#[test]
fn a_pod_waiting_for_its_claim_is_scheduled_once_claim_and_volume_exist() {
    let server = SkerryServer::start();
    let c = Cluster::new(&server, LIMIT);
    c.create_node("a", json!({}), json!([]));
    c.create_node("b", json!({}), json!([]));
    c.manual_class();

    c.pod_using("late", "later", None);
    let message = c.unschedulable("late");
    assert!(message.contains("persistentvolumeclaim \"later\" not found"), "{message}");

    // The pod is parked; the claim and the volume wake it. The deadline is below the
    // scheduler's 15 s flush of parked pods, so only the wake-up can meet it.
    c.local_volume("local-a", CLASS, "a");
    c.claim("later", CLASS);
    assert_eq!(c.scheduled("late", Duration::from_secs(10)), "a");
    assert_eq!(c.bound_to("later"), "local-a");
}

#[test]
fn claims_and_volumes_in_use_wait_for_their_pod_before_going() {
    let Some(kubectl) = skerry_testkit::kubectl() else { return };
    let server = SkerryServer::start();
    let c = Cluster::new(&server, LIMIT);
    let k = |args: &[&str]| ok(server.kubectl(&kubectl, args), &args.join(" "));
    c.create_node("a", json!({}), json!([]));

    // A statically bound pair (no StorageClass object: the binder binds at once), and a pod on
    // node a using the claim. Admission put the finalizers on both.
    c.local_volume("pv-held", "manual", "a");
    c.claim("held", "manual");
    assert_eq!(c.bound_to("held"), "pv-held");
    c.pod_using("user", "held", Some("a"));
    let claim = c.get(&claim_path("held"));
    assert_eq!(finalizers(&claim), ["kubernetes.io/pvc-protection"], "{claim}");
    let pv = c.get(&volume_path("pv-held"));
    assert_eq!(finalizers(&pv), ["kubernetes.io/pv-protection"], "{pv}");

    // Deleting either leaves it Terminating while the pod uses the claim.
    k(&["delete", "pvc", "held", "--wait=false"]);
    k(&["delete", "pv", "pv-held", "--wait=false"]);
    let listed = k(&["get", "pvc", "held"]);
    assert!(listed.contains("Terminating"), "{listed}");
    // Give the protection controllers time to act wrongly (no assertion on how long).
    std::thread::sleep(Duration::from_secs(2));
    let claim = c.find(&claim_path("held")).expect("claim kept while in use");
    assert!(claim["metadata"]["deletionTimestamp"].is_string(), "{claim}");
    assert_eq!(finalizers(&claim), ["kubernetes.io/pvc-protection"], "{claim}");
    let pv = c.find(&volume_path("pv-held")).expect("volume kept while bound");
    assert!(pv["metadata"]["deletionTimestamp"].is_string(), "{pv}");
    assert_eq!(pv["status"]["phase"], "Bound", "{pv}");
    let listed = k(&["get", "pv", "pv-held"]);
    assert!(listed.contains("Terminating"), "{listed}");

    // Once the pod is gone, the claim goes; its volume is then released and goes too.
    c.finish_deletion("user");
    c.gone(&claim_path("held"));
    c.gone(&volume_path("pv-held"));
}
