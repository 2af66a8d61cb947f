//! VolumeBinding, the part local volumes need: a pod's claims must exist; a claim bound to a
//! PersistentVolume with `nodeAffinity` (a local or hostPath-backed volume) pins the pod to the
//! nodes that affinity selects; an unbound claim of a `WaitForFirstConsumer` class waits for
//! this decision (the binder annotates it with the chosen node), and an unbound claim of any
//! other class keeps the pod pending until the claim is bound.

use k8s_openapi::api::core::v1::{NodeSelector, Pod};

use crate::scheduler::framework::{ClusterObjects, Rejection, Verdict};
use crate::scheduler::node_info::NodeInfo;
use crate::scheduler::selectors::node_selector_term_matches;

/// What the claims of one pod require of a node.
#[derive(Debug, Clone, Default)]
pub struct VolumeState {
    /// Node affinity of each bound volume.
    affinities: Vec<NodeSelector>,
    /// Some claim is bound to a volume that does not exist.
    missing_volume: bool,
    /// Unbound claims of `WaitForFirstConsumer` classes: they follow the pod's node.
    pub delayed_claims: Vec<String>,
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
                let class = spec.and_then(|s| s.storage_class_name.as_deref()).unwrap_or("");
                let mode = objects.binding_modes.get(class).map(String::as_str);
                if mode == Some("WaitForFirstConsumer") {
                    state.delayed_claims.push(name);
                } else {
                    return Err("pod has unbound immediate PersistentVolumeClaims".to_string());
                }
            }
        }
    }
    Ok(state)
}

/// Rejects nodes outside a bound volume's node affinity.
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
    if fits {
        Ok(())
    } else {
        Err(Rejection::unresolvable("node(s) had volume node affinity conflict"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::node_info::testing::*;
    use crate::scheduler::node_info::PodInfo;
    use serde_json::json;
    use std::sync::Arc;

    fn objects() -> ClusterObjects {
        let claim = |name: &str, volume: Option<&str>, class: &str| {
            let c: k8s_openapi::api::core::v1::PersistentVolumeClaim =
                serde_json::from_value(json!({
                    "metadata": {"name": name, "namespace": "default"},
                    "spec": {"volumeName": volume, "storageClassName": class}
                }))
                .unwrap();
            (("default".to_string(), name.to_string()), Arc::new(c))
        };
        let pv: k8s_openapi::api::core::v1::PersistentVolume = serde_json::from_value(json!({
            "metadata": {"name": "pv1"},
            "spec": {"nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "In", "values": ["n1"]}]}]}}}
        }))
        .unwrap();
        ClusterObjects {
            claims: [
                claim("bound", Some("pv1"), "local"),
                claim("later", None, "local-path"),
                claim("now", None, "x"),
            ]
            .into(),
            volumes: [("pv1".to_string(), Arc::new(pv))].into(),
            binding_modes: [("local-path".to_string(), "WaitForFirstConsumer".to_string())].into(),
            ..ClusterObjects::default()
        }
    }

    fn using(claim: &str) -> PodInfo {
        pod(
            "p",
            json!({"spec": {"volumes": [{"name": "v", "persistentVolumeClaim": {"claimName": claim}}]}}),
        )
    }

    #[test]
    fn a_bound_local_volume_pins_the_pod_to_its_node() {
        let state = pre_filter(&using("bound").pod, &objects()).unwrap();
        assert!(filter(&state, &node("n1", "1", "1Gi", json!({}))).is_ok());
        let err = filter(&state, &node("n2", "1", "1Gi", json!({}))).unwrap_err();
        assert_eq!(err.reasons, ["node(s) had volume node affinity conflict"]);
    }

    #[test]
    fn missing_and_unbound_claims() {
        let objects = objects();
        assert_eq!(
            pre_filter(&using("gone").pod, &objects).unwrap_err(),
            "persistentvolumeclaim \"gone\" not found"
        );
        assert_eq!(
            pre_filter(&using("now").pod, &objects).unwrap_err(),
            "pod has unbound immediate PersistentVolumeClaims"
        );
        let delayed = pre_filter(&using("later").pod, &objects).unwrap();
        assert_eq!(delayed.delayed_claims, ["later"]);
        assert!(filter(&delayed, &node("n2", "1", "1Gi", json!({}))).is_ok());
    }
}
