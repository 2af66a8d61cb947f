//! VolumeBinding, as the reference's `FindPodVolumes`: a pod's claims must exist; a claim bound
//! to a PersistentVolume with `nodeAffinity` (a local or hostPath-backed volume) pins the pod to
//! the nodes that affinity selects; an unbound claim of any class but a `WaitForFirstConsumer`
//! one keeps the pod pending until the claim is bound. An unbound claim of a
//! `WaitForFirstConsumer` class waits for this decision (the binder then annotates it with the
//! chosen node): a node suits it if an Available volume matches the claim and admits the node
//! (the binder's own [`best_volume`], so both pick alike), or else if the claim's class has a
//! provisioner and its `allowedTopologies` admit the node. Two delayed claims of one pod never
//! count on the same volume.

use std::collections::HashSet;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{
    Node, NodeSelector, PersistentVolume, PersistentVolumeClaim, Pod, TopologySelectorTerm,
};

use crate::controllers::persistentvolume::{best_volume, SELECTED_NODE};
use crate::scheduler::framework::{ClusterObjects, Rejection, Verdict};
use crate::scheduler::node_info::NodeInfo;
use crate::scheduler::selectors::node_selector_term_matches;

/// The reference's reason for a node where some delayed claim finds no volume and cannot be
/// provisioned.
pub const NO_VOLUME_TO_BIND: &str = "node(s) didn't find available persistent volumes to bind";
/// The provisioner name of classes that cannot provision (local volumes made by hand).
const NO_PROVISIONER: &str = "kubernetes.io/no-provisioner";

/// An unbound claim of a `WaitForFirstConsumer` class.
#[derive(Debug, Clone)]
pub struct DelayedClaim {
    pub name: String,
    claim: Arc<PersistentVolumeClaim>,
    /// `Some(allowedTopologies)` when its class can provision a volume for it.
    provisioning: Option<Vec<TopologySelectorTerm>>,
    /// The node an earlier consumer settled it on.
    selected_node: Option<String>,
}

/// What the claims of one pod require of a node.
#[derive(Debug, Clone, Default)]
pub struct VolumeState {
    /// Node affinity of each bound volume.
    affinities: Vec<NodeSelector>,
    /// Some claim is bound to a volume that does not exist.
    missing_volume: bool,
    /// Unbound claims of `WaitForFirstConsumer` classes: they follow the pod's node.
    pub delayed_claims: Vec<DelayedClaim>,
    /// The volumes those claims may bind to.
    volumes: Vec<Arc<PersistentVolume>>,
}

/// The claim names a pod uses (generic ephemeral volumes own a claim `<pod>-<volume>`).
pub fn claim_names(pod: &Pod) -> Vec<String> {
    let pod_name = pod.metadata.name.as_deref().unwrap_or("");
    let volumes = pod.spec.as_ref().and_then(|s| s.volumes.as_deref()).unwrap_or_default();
    volumes
        .iter()
        .filter_map(|v| match (&v.persistent_volume_claim, &v.ephemeral) {
            (Some(claim), _) => Some(claim.claim_name.clone()),
            (None, Some(_)) => Some(format!("{pod_name}-{}", v.name)),
            _ => None,
        })
        .collect()
}

/// Looks up the pod's claims; a reason that rules out every node if one is missing or cannot
/// be bound by scheduling.
pub fn pre_filter(pod: &Pod, objects: &ClusterObjects) -> Result<VolumeState, String> {
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let mut state = VolumeState::default();
    for name in claim_names(pod) {
        let Some(claim) = objects.claims.get(&(namespace.clone(), name.clone())) else {
            return Err(format!("persistentvolumeclaim \"{name}\" not found"));
        };
        if claim.metadata.deletion_timestamp.is_some() {
            return Err(format!("persistentvolumeclaim \"{name}\" is being deleted"));
        }
        let spec = claim.spec.as_ref();
        match spec.and_then(|s| s.volume_name.as_deref()).filter(|v| !v.is_empty()) {
            Some(volume) => match objects.volumes.get(volume) {
                Some(pv) => {
                    let affinity = pv.spec.as_ref().and_then(|s| s.node_affinity.as_ref());
                    if let Some(required) = affinity.and_then(|a| a.required.clone()) {
                        state.affinities.push(required);
                    }
                }
                None => state.missing_volume = true,
            },
            None => {
                let class_name = spec.and_then(|s| s.storage_class_name.as_deref()).unwrap_or("");
                let class = objects.classes.get(class_name);
                let mode = class.and_then(|c| c.volume_binding_mode.as_deref());
                let Some(class) = class.filter(|_| mode == Some("WaitForFirstConsumer")) else {
                    return Err("pod has unbound immediate PersistentVolumeClaims".to_string());
                };
                let provisioner = class.provisioner.as_str();
                let can_provision = !provisioner.is_empty() && provisioner != NO_PROVISIONER;
                let annotations = claim.metadata.annotations.as_ref();
                state.delayed_claims.push(DelayedClaim {
                    name,
                    claim: claim.clone(),
                    provisioning: can_provision
                        .then(|| class.allowed_topologies.clone().unwrap_or_default()),
                    selected_node: annotations.and_then(|a| a.get(SELECTED_NODE)).cloned(),
                });
            }
        }
    }
    if !state.delayed_claims.is_empty() {
        state.volumes = objects.unbound_volumes.clone();
    }
    Ok(state)
}

/// Rejects nodes outside a bound volume's node affinity, and nodes where a delayed claim finds
/// neither a volume nor a provisioner.
pub fn filter(state: &VolumeState, node: &NodeInfo) -> Verdict {
    if state.missing_volume {
        return Err(Rejection::unresolvable(
            "node(s) unavailable due to one or more pvc(s) bound to non-existent pv(s)",
        ));
    }
    let fits = state
        .affinities
        .iter()
        .all(|s| s.node_selector_terms.iter().any(|t| node_selector_term_matches(t, &node.node)));
    if !fits {
        return Err(Rejection::unresolvable("node(s) had volume node affinity conflict"));
    }
    match delayed_volumes(state, &node.node) {
        Some(_) => Ok(()),
        None => Err(Rejection::unresolvable(NO_VOLUME_TO_BIND)),
    }
}

/// For each delayed claim, the volume it would bind to on `node` (`None`: to be provisioned);
/// `None` when some claim can be served neither way. No volume serves two claims.
pub fn delayed_volumes(state: &VolumeState, node: &Node) -> Option<Vec<(String, Option<String>)>> {
    let node_name = node.metadata.name.as_deref().unwrap_or("");
    let mut chosen: HashSet<String> = HashSet::new();
    let mut plan = Vec::with_capacity(state.delayed_claims.len());
    for delayed in &state.delayed_claims {
        if delayed.selected_node.as_deref().is_some_and(|n| n != node_name) {
            // An earlier consumer settled the claim elsewhere (the reference's fast path).
            return None;
        }
        let found = if chosen.is_empty() {
            best_volume(&delayed.claim, &state.volumes, true, Some(node))
        } else {
            let left: Vec<Arc<PersistentVolume>> = state
                .volumes
                .iter()
                .filter(|pv| !chosen.contains(pv.metadata.name.as_deref().unwrap_or("")))
                .cloned()
                .collect();
            best_volume(&delayed.claim, &left, true, Some(node))
        };
        match found {
            Some(pv) => {
                let pv_name = pv.metadata.name.clone().unwrap_or_default();
                chosen.insert(pv_name.clone());
                plan.push((delayed.name.clone(), Some(pv_name)));
            }
            None => match &delayed.provisioning {
                Some(topologies) if topology_matches(topologies, node) => {
                    plan.push((delayed.name.clone(), None));
                }
                _ => return None,
            },
        }
    }
    Some(plan)
}

/// Whether the node's labels satisfy a class's `allowedTopologies` (none: every node), as the
/// reference's `MatchTopologySelectorTerms`: some non-empty term whose every expression holds.
fn topology_matches(terms: &[TopologySelectorTerm], node: &Node) -> bool {
    if terms.is_empty() {
        return true;
    }
    let labels = node.metadata.labels.as_ref();
    terms.iter().any(|term| {
        let expressions = term.match_label_expressions.as_deref().unwrap_or_default();
        !expressions.is_empty()
            && expressions.iter().all(|e| {
                labels.and_then(|l| l.get(&e.key)).is_some_and(|value| e.values.contains(value))
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::node_info::testing::*;
    use crate::scheduler::node_info::PodInfo;
    use k8s_openapi::api::storage::v1::StorageClass;
    use serde_json::{json, Value};

    /// A 1Gi claim with `spec` and `annotations`.
    fn claim(
        name: &str,
        spec: Value,
        annotations: Value,
    ) -> ((String, String), Arc<PersistentVolumeClaim>) {
        let mut value = json!({"metadata": {"name": name, "namespace": "default",
                                            "annotations": annotations},
            "spec": {"accessModes": ["ReadWriteOnce"],
                     "resources": {"requests": {"storage": "1Gi"}}}});
        merge(&mut value, json!({"spec": spec}));
        let c: PersistentVolumeClaim = serde_json::from_value(value).unwrap();
        (("default".to_string(), name.to_string()), Arc::new(c))
    }

    /// An Available 5Gi volume of `class` pinned to `host`.
    fn pinned(name: &str, class: &str, host: &str) -> Arc<PersistentVolume> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name},
                "spec": {"capacity": {"storage": "5Gi"}, "accessModes": ["ReadWriteOnce"],
                         "storageClassName": class, "local": {"path": "/mnt/x"},
                         "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                    {"key": "kubernetes.io/hostname", "operator": "In", "values": [host]}]}]}}},
                "status": {"phase": "Available"}
            }))
            .unwrap(),
        )
    }

    fn class(name: &str, provisioner: &str, extra: Value) -> (String, Arc<StorageClass>) {
        let mut value = json!({"metadata": {"name": name}, "provisioner": provisioner,
                               "volumeBindingMode": "WaitForFirstConsumer"});
        merge(&mut value, extra);
        (name.to_string(), Arc::new(serde_json::from_value(value).unwrap()))
    }

    fn objects() -> ClusterObjects {
        ClusterObjects {
            claims: [
                claim(
                    "bound",
                    json!({"volumeName": "pv1", "storageClassName": "local"}),
                    json!({}),
                ),
                claim("later", json!({"storageClassName": "local-path"}), json!({})),
                claim("now", json!({"storageClassName": "x"}), json!({})),
                claim("static", json!({"storageClassName": "manual"}), json!({})),
                claim("static-2", json!({"storageClassName": "manual"}), json!({})),
                claim("zoned", json!({"storageClassName": "zoned"}), json!({})),
                claim(
                    "settled",
                    json!({"storageClassName": "local-path"}),
                    json!({SELECTED_NODE: "n1"}),
                ),
            ]
            .into(),
            volumes: [("pv1".to_string(), pinned("pv1", "local", "n1"))].into(),
            unbound_volumes: vec![pinned("on-n2", "manual", "n2")],
            classes: [
                class("local-path", "skerry.io/local-path", json!({})),
                class("manual", NO_PROVISIONER, json!({})),
                class("x", "x.io/disk", json!({"volumeBindingMode": "Immediate"})),
                class(
                    "zoned",
                    "x.io/disk",
                    json!({"allowedTopologies": [{"matchLabelExpressions": [
                        {"key": "zone", "values": ["a"]}]}]}),
                ),
            ]
            .into(),
            ..ClusterObjects::default()
        }
    }

    fn using(claims: &[&str]) -> PodInfo {
        let volumes: Vec<Value> = claims
            .iter()
            .enumerate()
            .map(|(i, c)| json!({"name": format!("v{i}"), "persistentVolumeClaim": {"claimName": c}}))
            .collect();
        pod("p", json!({"spec": {"volumes": volumes}}))
    }

    fn verdict(claims: &[&str], node_name: &str, labels: Value) -> Result<(), Vec<String>> {
        let state = pre_filter(&using(claims).pod, &objects()).unwrap();
        let node = node(node_name, "1", "1Gi", json!({"metadata": {"labels": labels}}));
        filter(&state, &node).map_err(|r| r.reasons)
    }

    #[test]
    fn a_bound_local_volume_pins_the_pod_to_its_node() {
        assert!(verdict(&["bound"], "n1", json!({})).is_ok());
        assert_eq!(
            verdict(&["bound"], "n2", json!({})).unwrap_err(),
            ["node(s) had volume node affinity conflict"]
        );
    }

    #[test]
    fn missing_and_unbound_immediate_claims_rule_out_every_node() {
        let objects = objects();
        assert_eq!(
            pre_filter(&using(&["gone"]).pod, &objects).unwrap_err(),
            "persistentvolumeclaim \"gone\" not found"
        );
        assert_eq!(
            pre_filter(&using(&["now"]).pod, &objects).unwrap_err(),
            "pod has unbound immediate PersistentVolumeClaims"
        );
    }

    #[test]
    fn a_delayed_claim_with_a_provisioner_fits_any_node() {
        assert!(verdict(&["later"], "n1", json!({})).is_ok());
        assert!(verdict(&["later"], "n2", json!({})).is_ok());
    }

    #[test]
    fn a_delayed_claim_without_a_provisioner_needs_a_volume_on_the_node() {
        assert!(verdict(&["static"], "n2", json!({})).is_ok());
        assert_eq!(verdict(&["static"], "n1", json!({})).unwrap_err(), [NO_VOLUME_TO_BIND]);
        // The one volume on n2 cannot serve two claims of the pod.
        assert_eq!(
            verdict(&["static", "static-2"], "n2", json!({})).unwrap_err(),
            [NO_VOLUME_TO_BIND]
        );
        let state = pre_filter(&using(&["static", "later"]).pod, &objects()).unwrap();
        let plan = delayed_volumes(&state, &node("n2", "1", "1Gi", json!({})).node).unwrap();
        assert_eq!(
            plan,
            [("static".to_string(), Some("on-n2".to_string())), ("later".to_string(), None)]
        );
    }

    #[test]
    fn provisioning_follows_the_class_allowed_topologies() {
        assert!(verdict(&["zoned"], "n1", json!({"zone": "a"})).is_ok());
        assert_eq!(
            verdict(&["zoned"], "n1", json!({"zone": "b"})).unwrap_err(),
            [NO_VOLUME_TO_BIND]
        );
    }

    #[test]
    fn a_claim_settled_on_a_node_keeps_its_pods_there() {
        assert!(verdict(&["settled"], "n1", json!({})).is_ok());
        assert_eq!(verdict(&["settled"], "n2", json!({})).unwrap_err(), [NO_VOLUME_TO_BIND]);
    }
}
