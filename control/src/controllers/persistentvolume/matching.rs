//! Which PersistentVolume a claim may bind to, as the reference's `findMatchingVolume`: a volume
//! already pointing at the claim (`claimRef` pre-binding, or a provisioned one) wins outright;
//! otherwise, among Available volumes not reserved for another claim, the smallest one whose
//! class, volume mode, access modes, label selector and capacity fit the claim. A claim of a
//! `WaitForFirstConsumer` class is matched only once a node is chosen, and then only against
//! volumes whose node affinity admits that node.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;

use crate::apiserver::validation::quantity;
use crate::controllers::util::selector;
use crate::scheduler::selectors::node_selector_term_matches;

/// Set on a claim once the binder bound it (the reference's `AnnBindCompleted`).
pub const BIND_COMPLETED: &str = "pv.kubernetes.io/bind-completed";
/// Set on whichever side the binder (not the user) pointed at the other.
pub const BOUND_BY_CONTROLLER: &str = "pv.kubernetes.io/bound-by-controller";
/// The node the scheduler chose for a pod using a `WaitForFirstConsumer` claim.
pub const SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";
/// The provisioner asked to make a volume for a claim.
pub const STORAGE_PROVISIONER: &str = "volume.kubernetes.io/storage-provisioner";
/// The same, under the name provisioners older than v1.23 read.
pub const BETA_STORAGE_PROVISIONER: &str = "volume.beta.kubernetes.io/storage-provisioner";
/// The provisioner that made a volume.
pub const PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";
/// Marks the default StorageClass.
pub const DEFAULT_CLASS: &str = "storageclass.kubernetes.io/is-default-class";
const BETA_DEFAULT_CLASS: &str = "storageclass.beta.kubernetes.io/is-default-class";

/// An annotation of an object's metadata.
pub fn annotation<'a>(
    meta: &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    key: &str,
) -> Option<&'a str> {
    meta.annotations.as_ref().and_then(|a| a.get(key)).map(String::as_str)
}

/// The claim's class (`""`: none).
pub fn claim_class(claim: &PersistentVolumeClaim) -> &str {
    claim.spec.as_ref().and_then(|s| s.storage_class_name.as_deref()).unwrap_or("")
}

/// The claim's `spec.volumeName` (`""`: unbound).
pub fn claim_volume(claim: &PersistentVolumeClaim) -> &str {
    claim.spec.as_ref().and_then(|s| s.volume_name.as_deref()).unwrap_or("")
}

/// The volume's class (`""`: none).
pub fn volume_class(pv: &PersistentVolume) -> &str {
    pv.spec.as_ref().and_then(|s| s.storage_class_name.as_deref()).unwrap_or("")
}

/// The volume's `status.phase`.
pub fn volume_phase(pv: &PersistentVolume) -> &str {
    pv.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("")
}

/// Whether the class binds only once a consumer is scheduled.
pub fn is_delayed(class: Option<&StorageClass>) -> bool {
    class.and_then(|c| c.volume_binding_mode.as_deref()) == Some("WaitForFirstConsumer")
}

/// The default class: marked `is-default-class: "true"`, the newest if several are (as the
/// reference picks).
pub fn default_class(classes: &[Arc<StorageClass>]) -> Option<Arc<StorageClass>> {
    classes
        .iter()
        .filter(|c| {
            [DEFAULT_CLASS, BETA_DEFAULT_CLASS]
                .iter()
                .any(|key| annotation(&c.metadata, key) == Some("true"))
        })
        .max_by(|a, b| {
            let created = |c: &StorageClass| c.metadata.creation_timestamp.clone().map(|t| t.0);
            created(a).cmp(&created(b)).then_with(|| b.metadata.name.cmp(&a.metadata.name))
        })
        .cloned()
}

/// The claim's storage request in bytes (`None`: absent or malformed).
pub fn requested_bytes(claim: &PersistentVolumeClaim) -> Option<f64> {
    let requests = claim.spec.as_ref()?.resources.as_ref()?.requests.as_ref()?;
    quantity::parse(&requests.get("storage")?.0)
}

/// The volume's capacity in bytes (`None`: absent or malformed).
fn capacity_bytes(pv: &PersistentVolume) -> Option<f64> {
    let capacity = pv.spec.as_ref()?.capacity.as_ref()?;
    quantity::parse(&capacity.get("storage")?.0)
}

/// Whether the volume's `claimRef` names this claim (with its uid, or no uid yet: pre-bound).
pub fn points_at(pv: &PersistentVolume, claim: &PersistentVolumeClaim) -> bool {
    let Some(reference) = pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref()) else {
        return false;
    };
    let uid = reference.uid.as_deref().unwrap_or("");
    reference.name.as_deref() == claim.metadata.name.as_deref()
        && reference.namespace.as_deref() == claim.metadata.namespace.as_deref()
        && (uid.is_empty() || Some(uid) == claim.metadata.uid.as_deref())
}

/// Whether `node` is one the volume's node affinity admits (no affinity: every node).
pub fn admits_node(pv: &PersistentVolume, node: &Node) -> bool {
    let required =
        pv.spec.as_ref().and_then(|s| s.node_affinity.as_ref()).and_then(|a| a.required.as_ref());
    required
        .is_none_or(|r| r.node_selector_terms.iter().any(|t| node_selector_term_matches(t, node)))
}

/// Why the volume cannot serve the claim (the reference's `checkVolumeSatisfyClaim`), ignoring
/// who either side points at.
pub fn unsatisfied(pv: &PersistentVolume, claim: &PersistentVolumeClaim) -> Option<String> {
    let spec = claim.spec.as_ref();
    let requested = requested_bytes(claim).unwrap_or(0.0);
    let capacity = capacity_bytes(pv).unwrap_or(0.0);
    if capacity < requested {
        return Some("requested PV is too small".into());
    }
    if volume_class(pv) != claim_class(claim) {
        return Some("storageClassName does not match".into());
    }
    let pv_mode = pv.spec.as_ref().and_then(|s| s.volume_mode.as_deref()).unwrap_or("Filesystem");
    let claim_mode = spec.and_then(|s| s.volume_mode.as_deref()).unwrap_or("Filesystem");
    if pv_mode != claim_mode {
        return Some(format!("incompatible volumeMode: volume {pv_mode}, claim {claim_mode}"));
    }
    let offered = pv.spec.as_ref().and_then(|s| s.access_modes.as_deref()).unwrap_or_default();
    let wanted = spec.and_then(|s| s.access_modes.as_deref()).unwrap_or_default();
    if !wanted.iter().all(|m| offered.contains(m)) {
        return Some("incompatible accessMode".into());
    }
    None
}

/// The volume `claim` should bind to among `volumes`, or `None`. `node` is the node chosen for
/// a delayed claim (`delayed`: its class waits for a consumer), whose volumes must admit it.
pub fn best_volume(
    claim: &PersistentVolumeClaim,
    volumes: &[Arc<PersistentVolume>],
    delayed: bool,
    node: Option<&Node>,
) -> Option<Arc<PersistentVolume>> {
    let wanted_name = claim_volume(claim);
    let requested = requested_bytes(claim).unwrap_or(0.0);
    let mut best: Option<(f64, &Arc<PersistentVolume>)> = None;
    for pv in volumes {
        if pv.metadata.deletion_timestamp.is_some() {
            continue;
        }
        if points_at(pv, claim) {
            // Pre-bound by the user or a provisioner: only the volume mode must agree, and a
            // chosen node must be admitted (the reference checks the same two).
            let node_ok = node.is_none_or(|n| admits_node(pv, n));
            let mode_ok = unsatisfied(pv, claim).is_none_or(|why| !why.contains("volumeMode"));
            if node_ok && mode_ok {
                return Some(pv.clone());
            }
            continue;
        }
        let reserved = pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref()).is_some();
        if reserved || volume_phase(pv) != "Available" {
            continue;
        }
        if !wanted_name.is_empty() && pv.metadata.name.as_deref() != Some(wanted_name) {
            continue;
        }
        if delayed && node.is_none() {
            // The scheduler has not chosen a node yet; binding now could strand the pod.
            continue;
        }
        if node.is_some_and(|n| !admits_node(pv, n)) {
            continue;
        }
        let selected = claim
            .spec
            .as_ref()
            .and_then(|s| s.selector.as_ref())
            .is_none_or(|s| selector::matches(s, pv.metadata.labels.as_ref()));
        if !selected || unsatisfied(pv, claim).is_some() {
            continue;
        }
        let capacity = capacity_bytes(pv).unwrap_or(0.0);
        if capacity < requested {
            continue;
        }
        if best.is_none_or(|(size, _)| capacity < size) {
            best = Some((capacity, pv));
        }
    }
    best.map(|(_, pv)| pv.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn pv(name: &str, extra: Value) -> Arc<PersistentVolume> {
        let mut value = json!({
            "metadata": {"name": name, "labels": {"tier": "fast"}},
            "spec": {"capacity": {"storage": "5Gi"}, "accessModes": ["ReadWriteOnce"],
                     "storageClassName": "manual", "hostPath": {"path": "/tmp/x"}},
            "status": {"phase": "Available"}
        });
        crate::scheduler::node_info::testing::merge(&mut value, extra);
        Arc::new(serde_json::from_value(value).unwrap())
    }

    fn claim(extra: Value) -> PersistentVolumeClaim {
        let mut value = json!({
            "metadata": {"name": "data", "namespace": "ns", "uid": "u1"},
            "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "manual",
                     "resources": {"requests": {"storage": "1Gi"}}}
        });
        crate::scheduler::node_info::testing::merge(&mut value, extra);
        serde_json::from_value(value).unwrap()
    }

    fn node(name: &str) -> Node {
        serde_json::from_value(json!({"metadata": {"name": name,
            "labels": {"kubernetes.io/hostname": name}}}))
        .unwrap()
    }

    fn best(claim: &PersistentVolumeClaim, volumes: &[Arc<PersistentVolume>]) -> Option<String> {
        best_volume(claim, volumes, false, None).and_then(|pv| pv.metadata.name.clone())
    }

    #[test]
    fn the_smallest_fitting_available_volume_wins() {
        let volumes = [
            pv("big", json!({"spec": {"capacity": {"storage": "10Gi"}}})),
            pv("small", json!({"spec": {"capacity": {"storage": "2Gi"}}})),
            pv("tiny", json!({"spec": {"capacity": {"storage": "512Mi"}}})),
            pv(
                "bound",
                json!({"spec": {"capacity": {"storage": "1Gi"}},
                "status": {"phase": "Bound"}}),
            ),
        ];
        assert_eq!(best(&claim(json!({})), &volumes).as_deref(), Some("small"));
    }

    #[test]
    fn class_modes_selector_and_size_must_fit() {
        let volumes = [pv("v", json!({}))];
        assert_eq!(best(&claim(json!({})), &volumes).as_deref(), Some("v"));
        let other_class = claim(json!({"spec": {"storageClassName": "other"}}));
        assert_eq!(best(&other_class, &volumes), None);
        let rwx = claim(json!({"spec": {"accessModes": ["ReadWriteMany"]}}));
        assert_eq!(best(&rwx, &volumes), None);
        let huge = claim(json!({"spec": {"resources": {"requests": {"storage": "6Gi"}}}}));
        assert_eq!(best(&huge, &volumes), None);
        let block = claim(json!({"spec": {"volumeMode": "Block"}}));
        assert_eq!(best(&block, &volumes), None);
        let slow = claim(json!({"spec": {"selector": {"matchLabels": {"tier": "slow"}}}}));
        assert_eq!(best(&slow, &volumes), None);
        let fast = claim(json!({"spec": {"selector": {"matchLabels": {"tier": "fast"}}}}));
        assert_eq!(best(&fast, &volumes).as_deref(), Some("v"));
        let named = claim(json!({"spec": {"volumeName": "other"}}));
        assert_eq!(best(&named, &volumes), None);
    }

    #[test]
    fn claim_ref_reserves_a_volume() {
        let mine = pv(
            "mine",
            json!({"spec": {"claimRef": {"namespace": "ns", "name": "data"},
            "capacity": {"storage": "100Gi"}, "storageClassName": "other"}}),
        );
        let theirs = pv("theirs", json!({"spec": {"claimRef": {"namespace": "ns", "name": "x"}}}));
        // Pre-bound to this claim: chosen even though it is bigger and of another class.
        assert_eq!(best(&claim(json!({})), &[theirs.clone(), mine]).as_deref(), Some("mine"));
        // Reserved for another claim: never chosen.
        assert_eq!(best(&claim(json!({})), &[theirs]), None);
        // A claimRef with another uid belongs to an earlier claim of the same name.
        let stale = pv(
            "stale",
            json!({"spec": {"claimRef": {"namespace": "ns", "name": "data",
            "uid": "old"}}, "status": {"phase": "Released"}}),
        );
        assert_eq!(best(&claim(json!({})), &[stale]), None);
    }

    #[test]
    fn delayed_claims_wait_for_a_node_and_follow_its_affinity() {
        let pinned = |name: &str, host: &str| {
            pv(
                name,
                json!({"spec": {"nodeAffinity": {"required": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In",
                                        "values": [host]}]}]}}}}),
            )
        };
        let volumes = [pinned("on-n1", "n1"), pinned("on-n2", "n2")];
        let c = claim(json!({}));
        assert!(best_volume(&c, &volumes, true, None).is_none());
        let chosen = best_volume(&c, &volumes, true, Some(&node("n2"))).unwrap();
        assert_eq!(chosen.metadata.name.as_deref(), Some("on-n2"));
        assert!(best_volume(&c, &volumes, true, Some(&node("n3"))).is_none());
    }

    #[test]
    fn the_newest_marked_class_is_the_default() {
        let class = |name: &str, created: &str, default: &str| {
            Arc::new(
                serde_json::from_value::<StorageClass>(json!({
                    "metadata": {"name": name, "creationTimestamp": created,
                                 "annotations": {DEFAULT_CLASS: default}},
                    "provisioner": "x"
                }))
                .unwrap(),
            )
        };
        let classes = [
            class("old", "2024-01-01T00:00:00Z", "true"),
            class("new", "2024-02-01T00:00:00Z", "true"),
            class("newest", "2024-03-01T00:00:00Z", "false"),
        ];
        assert_eq!(default_class(&classes).unwrap().metadata.name.as_deref(), Some("new"));
        assert!(default_class(&classes[2..]).is_none());
    }
}
