//! Local persistent volumes against the real `skerry server` (scheduler and controllers, no
//! agent): the default StorageClass `local-path`, dynamic provisioning of a hostPath volume on
//! the node the scheduler chose for the claim's first pod, static binding of claims to
//! matching volumes (and not to others), pre-binding by `volumeName` and by `claimRef`, a
//! claim whose volume vanished (`Lost`), and the reclaim policies when a claim is deleted.

mod common;

use std::time::Duration;

use common::cluster::Cluster;
use common::server::{ok, SkerryServer};
use serde_json::{json, Value};

const NS: &str = "default";
/// Bounds a failing wait only.
const LIMIT: Duration = Duration::from_secs(60);

fn claim_path(name: &str) -> String {
    format!("/api/v1/namespaces/{NS}/persistentvolumeclaims/{name}")
}

fn volume_path(name: &str) -> String {
    format!("/api/v1/persistentvolumes/{name}")
}

fn text(v: &Value) -> &str {
    v.as_str().unwrap_or_default()
}

/// The storage test's queries.
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

    /// Waits until the claim `name` is Bound; returns it.
    fn bound_claim(&self, name: &str) -> Value {
        self.eventually(&format!("claim {name} bound"), || {
            let claim = self.get(&claim_path(name));
            (claim["status"]["phase"] == "Bound").then_some(claim.clone()).ok_or(claim.to_string())
        })
    }

    /// Waits until the volume `name` has `phase`; returns it.
    fn volume_in(&self, name: &str, phase: &str) -> Value {
        self.eventually(&format!("volume {name} {phase}"), || {
            let pv = self.find(&volume_path(name)).ok_or("no volume")?;
            (pv["status"]["phase"] == phase).then_some(pv.clone()).ok_or(pv.to_string())
        })
    }

    /// Waits until nothing is at `path`.
    fn gone(&self, path: &str) {
        self.eventually(&format!("{path} gone"), || match self.find(path) {
            None => Ok(()),
            Some(object) => Err(object.to_string()),
        });
    }

    fn claim(&self, name: &str, spec: Value) -> Value {
        let body = json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                          "metadata": {"name": name}, "spec": spec});
        self.create(&format!("/api/v1/namespaces/{NS}/persistentvolumeclaims"), &body)
    }

    fn volume(&self, name: &str, labels: Value, spec: Value) -> Value {
        let mut full = json!({"accessModes": ["ReadWriteOnce"], "storageClassName": "manual",
                              "hostPath": {"path": format!("/srv/{name}")}});
        full.as_object_mut().unwrap().extend(spec.as_object().unwrap().clone());
        let body = json!({"apiVersion": "v1", "kind": "PersistentVolume",
                          "metadata": {"name": name, "labels": labels}, "spec": full});
        self.create("/api/v1/persistentvolumes", &body)
    }
}

/// Checks both halves of a binding: the volume points at the claim (with its uid), the claim
/// names the volume, and both report Bound with the volume's capacity and modes on the claim.
fn assert_bound(c: &Cluster, claim_name: &str, volume_name: &str) {
    let claim = c.bound_claim(claim_name);
    let pv = c.volume_in(volume_name, "Bound");
    assert_eq!(claim["spec"]["volumeName"], volume_name, "{claim}");
    assert_eq!(pv["spec"]["claimRef"]["name"], claim_name, "{pv}");
    assert_eq!(pv["spec"]["claimRef"]["namespace"], NS, "{pv}");
    assert_eq!(pv["spec"]["claimRef"]["uid"], claim["metadata"]["uid"], "{pv}");
    assert_eq!(claim["status"]["capacity"], pv["spec"]["capacity"], "{claim}");
    assert_eq!(claim["status"]["accessModes"], pv["spec"]["accessModes"], "{claim}");
    assert_eq!(claim["metadata"]["annotations"]["pv.kubernetes.io/bind-completed"], "yes");
}

#[test]
fn the_default_class_provisions_a_volume_on_the_pods_node() {
    let Some(kubectl) = skerry_testkit::kubectl() else { return };
    let server = SkerryServer::start_with(&["--default-local-storage-path", "{dir}/storage"]);
    let c = Cluster::new(&server, LIMIT);
    let base = server.dir.path().join("storage");

    // The default class is made at start and kubectl marks it.
    let classes = c.eventually("default class", || {
        let out = server.kubectl(&kubectl, &["get", "storageclass"]);
        let text = ok(out, "kubectl get sc");
        text.contains("local-path (default)").then_some(text.clone()).ok_or(text)
    });
    assert!(classes.contains("skerry.io/local-path"), "{classes}");
    assert!(classes.contains("WaitForFirstConsumer"), "{classes}");
    assert!(classes.contains("Delete"), "{classes}");

    c.create_node("n1", json!({}), json!([]));
    c.create_node("n2", json!({}), json!([]));

    // A claim without a class gets the default one, and waits for a consumer.
    c.claim(
        "data",
        json!({"accessModes": ["ReadWriteOnce"],
                           "resources": {"requests": {"storage": "2Gi"}}}),
    );
    let claim = c.eventually("default class assigned", || {
        let claim = c.get(&claim_path("data"));
        (claim["spec"]["storageClassName"] == "local-path")
            .then_some(claim.clone())
            .ok_or(claim.to_string())
    });
    let uid = text(&claim["metadata"]["uid"]).to_string();
    assert_eq!(claim["status"]["phase"], "Pending", "{claim}");
    assert!(claim["spec"]["volumeName"].is_null(), "{claim}");

    // A pod using it lands on n2; the claim follows it there.
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "app"},
        "spec": {"nodeSelector": {"kubernetes.io/hostname": "n2"},
                 "containers": [{"name": "c", "image": "busybox"}],
                 "volumes": [{"name": "v", "persistentVolumeClaim": {"claimName": "data"}}]}});
    c.create(&format!("/api/v1/namespaces/{NS}/pods"), &pod);
    c.eventually("pod scheduled", || {
        let pod = c.get(&format!("/api/v1/namespaces/{NS}/pods/app"));
        (pod["spec"]["nodeName"] == "n2").then_some(()).ok_or(pod.to_string())
    });
    let name = format!("pvc-{uid}");
    assert_bound(&c, "data", &name);
    let claim = c.get(&claim_path("data"));
    let notes = &claim["metadata"]["annotations"];
    assert_eq!(notes["volume.kubernetes.io/selected-node"], "n2", "{claim}");
    assert_eq!(notes["volume.kubernetes.io/storage-provisioner"], "skerry.io/local-path");
    assert_eq!(claim["status"]["capacity"]["storage"], "2Gi", "{claim}");

    let pv = c.get(&volume_path(&name));
    let dir = base.join(format!("{name}_{NS}_data"));
    assert_eq!(pv["spec"]["hostPath"]["path"], dir.to_string_lossy().as_ref(), "{pv}");
    assert_eq!(pv["spec"]["hostPath"]["type"], "DirectoryOrCreate", "{pv}");
    assert_eq!(pv["spec"]["storageClassName"], "local-path", "{pv}");
    assert_eq!(pv["spec"]["persistentVolumeReclaimPolicy"], "Delete", "{pv}");
    assert_eq!(
        pv["metadata"]["annotations"]["pv.kubernetes.io/provisioned-by"],
        "skerry.io/local-path"
    );
    let term = &pv["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0];
    assert_eq!(
        term["matchExpressions"],
        json!([{"key": "kubernetes.io/hostname", "operator": "In", "values": ["n2"]}]),
        "{pv}"
    );
    let listed = ok(server.kubectl(&kubectl, &["get", "pvc", "data"]), "kubectl get pvc");
    assert!(listed.contains("Bound") && listed.contains(&name), "{listed}");

    assert_eq!(
        pv["metadata"]["finalizers"],
        json!(["skerry.io/local-path-cleanup", "kubernetes.io/pv-protection"]),
        "{pv}"
    );

    // Reclaim Delete: the claim goes, and its volume is deleted but waits for n2's agent to
    // remove the directory (there is none here). Once n2 itself is gone, nobody will: the
    // finalizer comes off, and an event says where the data stays.
    c.finish_deletion("app");
    let (status, body) = c.call("DELETE", &claim_path("data"), None);
    assert_eq!(status, 200, "{body}");
    c.eventually("volume terminating", || {
        let pv = c.get(&volume_path(&name));
        pv["metadata"]["deletionTimestamp"].is_string().then_some(()).ok_or(pv.to_string())
    });
    let (status, body) = c.call("DELETE", "/api/v1/nodes/n2", None);
    assert_eq!(status, 200, "{body}");
    c.gone(&volume_path(&name));
    let left = c.events("PersistentVolume", &name, "VolumeDataLeft");
    assert!(left.iter().any(|m| m.contains(&dir.to_string_lossy().to_string())), "{left:?}");
}

#[test]
fn static_volumes_bind_to_matching_claims_only() {
    let server = SkerryServer::start();
    let c = Cluster::new(&server, LIMIT);

    c.volume("pv-small", json!({"tier": "fast"}), json!({"capacity": {"storage": "1Gi"}}));
    c.volume(
        "pv-big",
        json!({}),
        json!({"capacity": {"storage": "10Gi"},
                                          "persistentVolumeReclaimPolicy": "Delete"}),
    );
    c.volume(
        "pv-named",
        json!({}),
        json!({"capacity": {"storage": "1Gi"},
                                            "storageClassName": "named"}),
    );
    c.volume(
        "pv-reserved",
        json!({}),
        json!({"capacity": {"storage": "1Gi"},
        "storageClassName": "reserved", "claimRef": {"namespace": NS, "name": "wanted"}}),
    );
    c.volume_in("pv-small", "Available");
    c.volume_in("pv-reserved", "Available");

    // Matching on class, modes, selector and size: the smallest fitting volume wins.
    let fast = json!({"matchLabels": {"tier": "fast"}});
    c.claim(
        "fits",
        json!({"storageClassName": "manual", "accessModes": ["ReadWriteOnce"],
        "selector": fast, "resources": {"requests": {"storage": "512Mi"}}}),
    );
    c.claim(
        "large",
        json!({"storageClassName": "manual", "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": "5Gi"}}}),
    );
    c.claim(
        "too-big",
        json!({"storageClassName": "manual", "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": "20Gi"}}}),
    );
    c.claim(
        "shared",
        json!({"storageClassName": "manual", "accessModes": ["ReadWriteMany"],
        "resources": {"requests": {"storage": "1Gi"}}}),
    );
    // Pre-bound by volumeName, and a claim that would fit the volume reserved for another.
    c.claim(
        "by-name",
        json!({"storageClassName": "named", "volumeName": "pv-named",
        "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}),
    );
    c.claim(
        "intruder",
        json!({"storageClassName": "reserved", "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": "1Gi"}}}),
    );
    c.claim(
        "wanted",
        json!({"storageClassName": "reserved", "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": "1Gi"}}}),
    );

    assert_bound(&c, "fits", "pv-small");
    assert_bound(&c, "large", "pv-big");
    assert_bound(&c, "by-name", "pv-named");
    assert_bound(&c, "wanted", "pv-reserved");
    let fits = c.get(&claim_path("fits"));
    assert_eq!(fits["metadata"]["annotations"]["pv.kubernetes.io/bound-by-controller"], "yes");
    // The binder looked at every claim after binding the volumes they could have taken.
    for name in ["too-big", "shared", "intruder"] {
        let claim = c.get(&claim_path(name));
        assert_eq!(claim["status"]["phase"], "Pending", "{claim}");
        assert!(claim["spec"]["volumeName"].is_null(), "{claim}");
    }

    // Retain: the volume is Released and stays; Delete: it goes.
    let (status, body) = c.call("DELETE", &claim_path("fits"), None);
    assert_eq!(status, 200, "{body}");
    c.volume_in("pv-small", "Released");
    let (status, body) = c.call("DELETE", &claim_path("large"), None);
    assert_eq!(status, 200, "{body}");
    c.gone(&volume_path("pv-big"));
    let kept = c.volume_in("pv-small", "Released");
    assert_eq!(kept["spec"]["claimRef"]["name"], "fits", "{kept}");
    // A Released volume is not offered to a new claim of the same name.
    c.claim(
        "fits",
        json!({"storageClassName": "manual", "accessModes": ["ReadWriteOnce"],
        "selector": fast, "resources": {"requests": {"storage": "512Mi"}}}),
    );

    // A bound claim whose volume vanishes is Lost. Deleting a bound volume only marks it
    // (pv-protection holds it while bound); taking the finalizer off makes it vanish.
    let (status, body) = c.call("DELETE", &volume_path("pv-named"), None);
    assert_eq!(status, 200, "{body}");
    let held = c.get(&volume_path("pv-named"));
    assert_eq!(held["metadata"]["finalizers"], json!(["kubernetes.io/pv-protection"]), "{held}");
    c.merge_patch(&volume_path("pv-named"), &json!({"metadata": {"finalizers": null}}));
    c.eventually("claim lost", || {
        let claim = c.get(&claim_path("by-name"));
        (claim["status"]["phase"] == "Lost").then_some(()).ok_or(claim.to_string())
    });
    let again = c.get(&claim_path("fits"));
    assert!(again["spec"]["volumeName"].is_null(), "{again}");
    c.volume_in("pv-small", "Released");
}
