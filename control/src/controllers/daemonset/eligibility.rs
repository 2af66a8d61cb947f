//! Which nodes a DaemonSet's pod belongs on (the reference's `NodeShouldRunDaemonPod`), and
//! the shape of a daemon pod: the tolerations the controller adds to every daemon pod, and the
//! required node affinity `metadata.name In [node]` that pins a new pod to its node while
//! leaving the binding to the scheduler.
//!
//! A node is eligible when the pod template's `nodeName` (if any) names it, its labels satisfy
//! the template's `nodeSelector` and required node affinity, and every `NoSchedule`/`NoExecute`
//! taint is tolerated (with the default tolerations added). A pod already running on a node
//! that stopped being eligible only because of a `NoSchedule` taint may stay there.

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{
    Affinity, Node, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod,
    PodSpec, Taint, Toleration,
};

use crate::scheduler::selectors::{required_node_affinity_matches, tolerates};

pub const NOT_READY: &str = "node.kubernetes.io/not-ready";
pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
pub const DISK_PRESSURE: &str = "node.kubernetes.io/disk-pressure";
pub const MEMORY_PRESSURE: &str = "node.kubernetes.io/memory-pressure";
pub const PID_PRESSURE: &str = "node.kubernetes.io/pid-pressure";
pub const UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";
pub const NETWORK_UNAVAILABLE: &str = "node.kubernetes.io/network-unavailable";

/// The field a daemon pod's node affinity selects its node by.
const NAME_FIELD: &str = "metadata.name";

/// What a DaemonSet may do on one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    /// A daemon pod should be created there if there is none.
    pub should_run: bool,
    /// A daemon pod already there may stay.
    pub should_continue_running: bool,
}

fn exists(key: &str, effect: &str) -> Toleration {
    Toleration {
        key: Some(key.to_string()),
        operator: Some("Exists".to_string()),
        effect: Some(effect.to_string()),
        ..Toleration::default()
    }
}

/// The reference's `AddOrUpdateTolerationInPodSpec`: a toleration with the same key, operator,
/// value and effect is replaced (its `tolerationSeconds` may differ), else this one is added.
fn add_or_update_toleration(spec: &mut PodSpec, toleration: Toleration) {
    let tolerations = spec.tolerations.get_or_insert_with(Vec::new);
    let same = |t: &Toleration| {
        t.key == toleration.key
            && t.operator.as_deref().unwrap_or("Equal")
                == toleration.operator.as_deref().unwrap_or("Equal")
            && t.value.as_deref().unwrap_or("") == toleration.value.as_deref().unwrap_or("")
            && t.effect.as_deref().unwrap_or("") == toleration.effect.as_deref().unwrap_or("")
    };
    match tolerations.iter_mut().find(|t| same(t)) {
        Some(existing) => *existing = toleration,
        None => tolerations.push(toleration),
    }
}

/// Adds the tolerations every daemon pod gets (the reference's
/// `AddOrUpdateDaemonPodTolerations`): a daemon stays on a not-ready or unreachable node for
/// good, and lands on nodes under resource pressure or cordoned; on a node whose network is not
/// set up yet too when it uses the host's network.
pub fn add_default_tolerations(spec: &mut PodSpec) {
    add_or_update_toleration(spec, exists(NOT_READY, "NoExecute"));
    add_or_update_toleration(spec, exists(UNREACHABLE, "NoExecute"));
    add_or_update_toleration(spec, exists(DISK_PRESSURE, "NoSchedule"));
    add_or_update_toleration(spec, exists(MEMORY_PRESSURE, "NoSchedule"));
    add_or_update_toleration(spec, exists(PID_PRESSURE, "NoSchedule"));
    add_or_update_toleration(spec, exists(UNSCHEDULABLE, "NoSchedule"));
    if spec.host_network == Some(true) {
        add_or_update_toleration(spec, exists(NETWORK_UNAVAILABLE, "NoSchedule"));
    }
}

/// The first taint with an effect `effects` names that `tolerations` do not tolerate.
fn untolerated<'a>(
    taints: &'a [Taint],
    tolerations: &[Toleration],
    effects: &[&str],
) -> Option<&'a Taint> {
    taints
        .iter()
        .filter(|t| effects.contains(&t.effect.as_str()))
        .find(|t| !tolerations.iter().any(|tol| tolerates(tol, t)))
}

/// Where `ds` may run on `node`.
pub fn placement(ds: &DaemonSet, node: &Node) -> Placement {
    const NOWHERE: Placement = Placement { should_run: false, should_continue_running: false };
    let Some(ds_spec) = ds.spec.as_ref() else { return NOWHERE };
    let node_name = node.metadata.name.as_deref().unwrap_or("");
    let mut spec = ds_spec.template.spec.clone().unwrap_or_default();
    if spec.node_name.as_deref().is_some_and(|n| !n.is_empty() && n != node_name) {
        return NOWHERE;
    }
    add_default_tolerations(&mut spec);
    let pod = Pod { spec: Some(spec), ..Pod::default() };
    if !required_node_affinity_matches(&pod, node) {
        return NOWHERE;
    }
    let tolerations = pod.spec.as_ref().and_then(|s| s.tolerations.as_deref()).unwrap_or_default();
    let taints = node.spec.as_ref().and_then(|s| s.taints.as_deref()).unwrap_or_default();
    if untolerated(taints, tolerations, &["NoSchedule", "NoExecute"]).is_none() {
        return Placement { should_run: true, should_continue_running: true };
    }
    // Only a NoExecute taint evicts what already runs there.
    let evicting = untolerated(taints, tolerations, &["NoExecute"]).is_some();
    Placement { should_run: false, should_continue_running: !evicting }
}

/// The node a daemon pod is for: its `spec.nodeName` once bound, else the single value of the
/// `metadata.name In [...]` requirement of its required node affinity (the reference's
/// `GetTargetNodeName`). `None` for a pod that names no node that way.
pub fn target_node(pod: &Pod) -> Option<&str> {
    let spec = pod.spec.as_ref()?;
    if let Some(name) = spec.node_name.as_deref().filter(|n| !n.is_empty()) {
        return Some(name);
    }
    let required = spec
        .affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?;
    let requirement = required
        .node_selector_terms
        .iter()
        .flat_map(|t| t.match_fields.iter().flatten())
        .find(|r| r.key == NAME_FIELD && r.operator == "In")?;
    match requirement.values.as_deref() {
        Some([only]) => Some(only.as_str()),
        _ => None,
    }
}

/// `affinity` with its required node affinity replaced by `metadata.name In [node]` (the
/// reference's `ReplaceDaemonSetPodNodeNameNodeAffinity`; the node already satisfied the terms
/// it replaces, and the preferred terms stay).
pub fn pin_to_node(affinity: Option<Affinity>, node: &str) -> Affinity {
    let term = NodeSelectorTerm {
        match_fields: Some(vec![NodeSelectorRequirement {
            key: NAME_FIELD.to_string(),
            operator: "In".to_string(),
            values: Some(vec![node.to_string()]),
        }]),
        match_expressions: None,
    };
    let mut affinity = affinity.unwrap_or_default();
    let node_affinity = affinity.node_affinity.get_or_insert_with(NodeAffinity::default);
    node_affinity.required_during_scheduling_ignored_during_execution =
        Some(NodeSelector { node_selector_terms: vec![term] });
    affinity
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ds(template_spec: serde_json::Value) -> DaemonSet {
        serde_json::from_value(json!({
            "metadata": {"name": "d", "namespace": "default"},
            "spec": {
                "selector": {"matchLabels": {"app": "d"}},
                "template": {"metadata": {"labels": {"app": "d"}}, "spec": template_spec}
            }
        }))
        .unwrap()
    }

    fn node(name: &str, labels: serde_json::Value, taints: serde_json::Value) -> Node {
        serde_json::from_value(json!({
            "metadata": {"name": name, "labels": labels},
            "spec": {"taints": taints}
        }))
        .unwrap()
    }

    const RUN: Placement = Placement { should_run: true, should_continue_running: true };
    const STAY: Placement = Placement { should_run: false, should_continue_running: true };
    const NONE: Placement = Placement { should_run: false, should_continue_running: false };

    #[test]
    fn taints_keep_new_pods_out_and_only_no_execute_evicts() {
        let d = ds(json!({"containers": [{"name": "c", "image": "i"}]}));
        assert_eq!(placement(&d, &node("a", json!({}), json!([]))), RUN);
        let no_schedule = json!([{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]);
        assert_eq!(placement(&d, &node("b", json!({}), no_schedule)), STAY);
        let no_execute = json!([{"key": "dedicated", "value": "db", "effect": "NoExecute"}]);
        assert_eq!(placement(&d, &node("c", json!({}), no_execute)), NONE);
        let soft = json!([{"key": "dedicated", "effect": "PreferNoSchedule"}]);
        assert_eq!(placement(&d, &node("d", json!({}), soft)), RUN);

        let tolerant = ds(json!({
            "containers": [{"name": "c", "image": "i"}],
            "tolerations": [{"key": "dedicated", "operator": "Exists"}]
        }));
        let both = json!([
            {"key": "dedicated", "value": "db", "effect": "NoSchedule"},
            {"key": "dedicated", "value": "db", "effect": "NoExecute"}
        ]);
        assert_eq!(placement(&tolerant, &node("e", json!({}), both)), RUN);
    }

    #[test]
    fn default_tolerations_cover_node_conditions() {
        let d = ds(json!({"containers": [{"name": "c", "image": "i"}]}));
        for (key, effect) in [
            (NOT_READY, "NoExecute"),
            (UNREACHABLE, "NoExecute"),
            (DISK_PRESSURE, "NoSchedule"),
            (MEMORY_PRESSURE, "NoSchedule"),
            (PID_PRESSURE, "NoSchedule"),
            (UNSCHEDULABLE, "NoSchedule"),
        ] {
            let taints = json!([{"key": key, "effect": effect}]);
            assert_eq!(placement(&d, &node("n", json!({}), taints)), RUN, "{key}");
        }
        // The not-ready NoSchedule taint is not tolerated: no new pods on a node going down.
        let taints = json!([{"key": NOT_READY, "effect": "NoSchedule"}]);
        assert_eq!(placement(&d, &node("n", json!({}), taints)), STAY);
        // Network-unavailable only for pods on the host network.
        let taints = json!([{"key": NETWORK_UNAVAILABLE, "effect": "NoSchedule"}]);
        assert_eq!(placement(&d, &node("n", json!({}), taints.clone())), STAY);
        let host = ds(json!({"hostNetwork": true, "containers": [{"name": "c", "image": "i"}]}));
        assert_eq!(placement(&host, &node("n", json!({}), taints)), RUN);
    }

    #[test]
    fn tolerations_are_added_once_and_replace_their_equal() {
        let mut spec: PodSpec = serde_json::from_value(json!({
            "containers": [],
            "tolerations": [{"key": NOT_READY, "operator": "Exists", "effect": "NoExecute",
                             "tolerationSeconds": 30}]
        }))
        .unwrap();
        add_default_tolerations(&mut spec);
        add_default_tolerations(&mut spec);
        let tolerations = spec.tolerations.unwrap();
        assert_eq!(tolerations.len(), 6);
        let not_ready = tolerations.iter().find(|t| t.key.as_deref() == Some(NOT_READY)).unwrap();
        assert_eq!(not_ready.toleration_seconds, None, "forever, as the reference");
    }

    #[test]
    fn node_selector_affinity_and_node_name_restrict_nodes() {
        let by_selector = ds(json!({"nodeSelector": {"disk": "ssd"}, "containers": []}));
        assert_eq!(placement(&by_selector, &node("a", json!({"disk": "ssd"}), json!([]))), RUN);
        assert_eq!(placement(&by_selector, &node("b", json!({"disk": "hdd"}), json!([]))), NONE);
        assert_eq!(placement(&by_selector, &node("c", json!({}), json!([]))), NONE);

        let by_affinity = ds(json!({"containers": [], "affinity": {"nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["x"]}]}]}}}}));
        assert_eq!(placement(&by_affinity, &node("a", json!({"zone": "x"}), json!([]))), RUN);
        assert_eq!(placement(&by_affinity, &node("a", json!({"zone": "y"}), json!([]))), NONE);

        let by_name = ds(json!({"nodeName": "a", "containers": []}));
        assert_eq!(placement(&by_name, &node("a", json!({}), json!([]))), RUN);
        assert_eq!(placement(&by_name, &node("b", json!({}), json!([]))), NONE);
    }

    #[test]
    fn pinning_replaces_required_terms_and_is_read_back() {
        let affinity: Affinity = serde_json::from_value(json!({"nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["x"]}]}]},
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 1, "preference": {"matchExpressions": [
                    {"key": "a", "operator": "Exists"}]}}]}}))
        .unwrap();
        let pinned = pin_to_node(Some(affinity), "n1");
        let node_affinity = pinned.node_affinity.as_ref().unwrap();
        assert_eq!(
            node_affinity
                .preferred_during_scheduling_ignored_during_execution
                .as_ref()
                .map(Vec::len),
            Some(1)
        );
        let pod = Pod {
            spec: Some(PodSpec { affinity: Some(pinned), ..PodSpec::default() }),
            ..Pod::default()
        };
        assert_eq!(target_node(&pod), Some("n1"));
        let terms = &pod.spec.as_ref().unwrap().affinity.as_ref().unwrap().node_affinity.as_ref();
        let required = terms.unwrap().required_during_scheduling_ignored_during_execution.as_ref();
        assert_eq!(required.unwrap().node_selector_terms.len(), 1);

        let mut bound = pod.clone();
        bound.spec.as_mut().unwrap().node_name = Some("n2".into());
        assert_eq!(target_node(&bound), Some("n2"), "spec.nodeName wins once bound");
        assert_eq!(target_node(&Pod::default()), None);
    }
}
