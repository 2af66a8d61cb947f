//! What an object costs against a ResourceQuota: the reference's quota evaluators (pods,
//! services, persistent volume claims, and an object count for every other resource), their
//! scope matching, and the pod constraint that a quota on cpu or memory makes every container
//! state it. Shared by the admission plugin (one object's delta) and the resourcequota
//! controller (a namespace's total).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::quantity::Quantity;

/// Resource name → amount, sorted (the reference prints these sorted).
pub type ResourceList = BTreeMap<String, Quantity>;

const STORAGE_CLASS_SUFFIX: &str = ".storageclass.storage.k8s.io/";
/// The resources whose quota requires every container to state them.
const CONSTRAINED: [&str; 6] =
    ["cpu", "memory", "requests.cpu", "requests.memory", "limits.cpu", "limits.memory"];
/// Pod resources that a quota can name directly.
const POD_RESOURCES: [&str; 11] = [
    "count/pods",
    "cpu",
    "memory",
    "ephemeral-storage",
    "requests.cpu",
    "requests.memory",
    "requests.ephemeral-storage",
    "limits.cpu",
    "limits.memory",
    "limits.ephemeral-storage",
    "pods",
];

/// The quota evaluator of one resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Evaluator {
    Pods,
    Services,
    PersistentVolumeClaims,
    /// Any other resource: an object count (`count/<plural>.<group>`, plus the legacy name of
    /// configmaps, secrets, replicationcontrollers and resourcequotas).
    Objects {
        group: String,
        plural: String,
    },
}

impl Evaluator {
    /// The evaluator of `plural` in `group`.
    pub fn of(group: &str, plural: &str) -> Evaluator {
        match (group, plural) {
            ("", "pods") => Evaluator::Pods,
            ("", "services") => Evaluator::Services,
            ("", "persistentvolumeclaims") => Evaluator::PersistentVolumeClaims,
            _ => Evaluator::Objects { group: group.into(), plural: plural.into() },
        }
    }

    /// The evaluator that tracks a quota resource name, with the resource it lists; `None` for
    /// names no evaluator knows.
    pub fn tracking(name: &str) -> Option<Evaluator> {
        for evaluator in [Evaluator::Pods, Evaluator::Services, Evaluator::PersistentVolumeClaims] {
            if evaluator.tracks(name) {
                return Some(evaluator);
            }
        }
        if let Some(legacy) = ["configmaps", "secrets", "replicationcontrollers", "resourcequotas"]
            .into_iter()
            .find(|l| *l == name)
        {
            return Some(Evaluator::of("", legacy));
        }
        let counted = name.strip_prefix("count/")?;
        let (plural, group) = counted.split_once('.').unwrap_or((counted, ""));
        (!plural.is_empty()).then(|| Evaluator::of(group, plural))
    }

    /// `count/<plural>` or `count/<plural>.<group>`.
    fn count_name(group: &str, plural: &str) -> String {
        if group.is_empty() {
            format!("count/{plural}")
        } else {
            format!("count/{plural}.{group}")
        }
    }

    /// The group and plural of the objects this evaluator counts.
    pub fn resource(&self) -> (&str, &str) {
        match self {
            Evaluator::Pods => ("", "pods"),
            Evaluator::Services => ("", "services"),
            Evaluator::PersistentVolumeClaims => ("", "persistentvolumeclaims"),
            Evaluator::Objects { group, plural } => (group, plural),
        }
    }

    /// Whether this evaluator computes the quota resource `name`.
    pub fn tracks(&self, name: &str) -> bool {
        match self {
            Evaluator::Pods => {
                POD_RESOURCES.contains(&name)
                    || name.starts_with("hugepages-")
                    || name.starts_with("requests.hugepages-")
                    || name.strip_prefix("requests.").is_some_and(is_extended_resource)
            }
            Evaluator::Services => matches!(
                name,
                "services" | "count/services" | "services.nodeports" | "services.loadbalancers"
            ),
            Evaluator::PersistentVolumeClaims => {
                matches!(
                    name,
                    "persistentvolumeclaims" | "count/persistentvolumeclaims" | "requests.storage"
                ) || name.split_once(STORAGE_CLASS_SUFFIX).is_some_and(|(_, r)| {
                    matches!(r, "requests.storage" | "persistentvolumeclaims")
                })
            }
            Evaluator::Objects { group, plural } => {
                name == Self::count_name(group, plural)
                    || (group.is_empty()
                        && name == plural
                        && matches!(
                            plural.as_str(),
                            "configmaps" | "secrets" | "replicationcontrollers" | "resourcequotas"
                        ))
            }
        }
    }

    /// Whether an update can change what an object costs, so admission charges updates too:
    /// a service's type (node ports, load balancers) and a claim's requested storage. The
    /// reference's pod evaluator only charges in-place resizes, which are not evaluated here.
    pub fn charges_updates(&self) -> bool {
        matches!(self, Evaluator::Services | Evaluator::PersistentVolumeClaims)
    }

    /// The names of `hard` this evaluator computes (the reference's `MatchingResources`).
    pub fn matching<'a>(&self, hard: impl IntoIterator<Item = &'a String>) -> Vec<String> {
        hard.into_iter().filter(|n| self.tracks(n)).cloned().collect()
    }

    /// What one object costs.
    pub fn usage(&self, obj: &Value) -> ResourceList {
        let one = Quantity::count(1);
        let mut out = ResourceList::new();
        match self {
            Evaluator::Pods => {
                out.insert("count/pods".into(), one);
                if counts_compute(obj) {
                    out.extend(pod_compute_usage(obj));
                }
            }
            Evaluator::Services => {
                out.insert("count/services".into(), one);
                out.insert("services".into(), one);
                let ports = obj.pointer("/spec/ports").and_then(Value::as_array);
                let port_count = ports.map_or(0, Vec::len) as i128;
                match obj.pointer("/spec/type").and_then(Value::as_str) {
                    Some("NodePort") => {
                        out.insert("services.nodeports".into(), Quantity::count(port_count));
                    }
                    Some("LoadBalancer") => {
                        let allocate = obj
                            .pointer("/spec/allocateLoadBalancerNodePorts")
                            .and_then(Value::as_bool)
                            .unwrap_or(true);
                        let node_ports = if allocate {
                            port_count
                        } else {
                            ports.into_iter().flatten().filter(|p| has_node_port(p)).count() as i128
                        };
                        out.insert("services.nodeports".into(), Quantity::count(node_ports));
                        out.insert("services.loadbalancers".into(), one);
                    }
                    _ => {}
                }
            }
            Evaluator::PersistentVolumeClaims => {
                out.insert("count/persistentvolumeclaims".into(), one);
                out.insert("persistentvolumeclaims".into(), one);
                let class = storage_class(obj);
                if let Some(class) = &class {
                    out.insert(format!("{class}{STORAGE_CLASS_SUFFIX}persistentvolumeclaims"), one);
                }
                let request = obj.pointer("/spec/resources/requests/storage");
                if let Some(mut storage) = request.and_then(Quantity::from_json) {
                    // Whole bytes, rounded up, as the reference charges.
                    storage.milli = (storage.milli + 999).div_euclid(1000) * 1000;
                    out.insert("requests.storage".into(), storage);
                    if let Some(class) = &class {
                        out.insert(
                            format!("{class}{STORAGE_CLASS_SUFFIX}requests.storage"),
                            storage,
                        );
                    }
                }
            }
            Evaluator::Objects { group, plural } => {
                out.insert(Self::count_name(group, plural), one);
                if self.tracks(plural) {
                    out.insert(plural.clone(), one);
                }
            }
        }
        out
    }

    /// Whether `quota`'s scopes (and scope selector) select `obj`. Scoped quotas only ever
    /// select pods, as in the reference.
    pub fn matches_scopes(&self, quota: &Value, obj: &Value) -> bool {
        let selectors = scope_selectors(quota);
        if selectors.is_empty() {
            return true;
        }
        if *self != Evaluator::Pods {
            return false;
        }
        selectors.iter().all(|s| pod_matches_scope(s, obj))
    }
}

/// One scope requirement: `Terminating`, or `PriorityClass In [high]`.
#[derive(Debug, Clone)]
struct ScopeSelector {
    scope: String,
    operator: String,
    values: Vec<String>,
}

/// `spec.scopes` (each an `Exists`) and `spec.scopeSelector.matchExpressions`.
fn scope_selectors(quota: &Value) -> Vec<ScopeSelector> {
    let mut out: Vec<ScopeSelector> = quota
        .pointer("/spec/scopes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(|s| ScopeSelector { scope: s.into(), operator: "Exists".into(), values: vec![] })
        .collect();
    let expressions = quota.pointer("/spec/scopeSelector/matchExpressions");
    for expr in expressions.and_then(Value::as_array).into_iter().flatten() {
        let text = |f: &str| expr.get(f).and_then(Value::as_str).unwrap_or_default().to_string();
        let values = expr.get("values").and_then(Value::as_array);
        let values = values.into_iter().flatten().filter_map(Value::as_str).map(String::from);
        out.push(ScopeSelector {
            scope: text("scopeName"),
            operator: text("operator"),
            values: values.collect(),
        });
    }
    out
}

fn pod_matches_scope(selector: &ScopeSelector, pod: &Value) -> bool {
    let terminating =
        pod.pointer("/spec/activeDeadlineSeconds").and_then(Value::as_i64).is_some_and(|s| s >= 0);
    match selector.scope.as_str() {
        "Terminating" => terminating,
        "NotTerminating" => !terminating,
        "BestEffort" => is_best_effort(pod),
        "NotBestEffort" => !is_best_effort(pod),
        "PriorityClass" => {
            let class = pod.pointer("/spec/priorityClassName").and_then(Value::as_str);
            let class = class.unwrap_or_default();
            match selector.operator.as_str() {
                "Exists" => !class.is_empty(),
                "In" => selector.values.iter().any(|v| v == class),
                "NotIn" => !selector.values.iter().any(|v| v == class),
                // The reference matches against a set that always has the key.
                _ => false,
            }
        }
        "CrossNamespacePodAffinity" => uses_cross_namespace_affinity(pod),
        _ => false,
    }
}

fn uses_cross_namespace_affinity(pod: &Value) -> bool {
    ["podAffinity", "podAntiAffinity"].iter().any(|kind| {
        let Some(affinity) = pod.pointer(&format!("/spec/affinity/{kind}")) else { return false };
        let required = affinity
            .get("requiredDuringSchedulingIgnoredDuringExecution")
            .and_then(Value::as_array)
            .into_iter()
            .flatten();
        let preferred = affinity
            .get("preferredDuringSchedulingIgnoredDuringExecution")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|w| w.get("podAffinityTerm"));
        required.chain(preferred).any(|term| {
            term.get("namespaces").and_then(Value::as_array).is_some_and(|n| !n.is_empty())
                || term.get("namespaceSelector").is_some_and(|s| !s.is_null())
        })
    })
}

/// A name like `example.com/gpu`: not native (`cpu`, `kubernetes.io/…`).
fn is_extended_resource(name: &str) -> bool {
    name.contains('/') && !name.contains("kubernetes.io/")
}

fn has_node_port(port: &Value) -> bool {
    port.get("nodePort").and_then(Value::as_i64).is_some_and(|p| p > 0)
}

fn storage_class(pvc: &Value) -> Option<String> {
    let annotated = pvc
        .pointer("/metadata/annotations/volume.beta.kubernetes.io~1storage-class")
        .and_then(Value::as_str);
    annotated
        .or_else(|| pvc.pointer("/spec/storageClassName").and_then(Value::as_str))
        .filter(|c| !c.is_empty())
        .map(String::from)
}

/// The containers and init containers of a pod.
pub fn containers(pod: &Value) -> impl Iterator<Item = &Value> {
    ["containers", "initContainers"]
        .into_iter()
        .filter_map(|f| pod.pointer(&format!("/spec/{f}")).and_then(Value::as_array))
        .flatten()
}

/// A container's `resources.requests` or `resources.limits` (malformed amounts are left out;
/// validation rejects them).
pub fn container_list(container: &Value, which: &str) -> ResourceList {
    let map = container.pointer(&format!("/resources/{which}")).and_then(Value::as_object);
    map.into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.clone(), Quantity::from_json(v)?)))
        .collect()
}

/// The QoS class is BestEffort: no container requests or limits cpu or memory.
pub fn is_best_effort(pod: &Value) -> bool {
    containers(pod).all(|c| {
        ["requests", "limits"].iter().all(|which| {
            let list = container_list(c, which);
            ["cpu", "memory"].iter().all(|r| list.get(*r).is_none_or(Quantity::is_zero))
        })
    })
}

/// Whether a pod still counts for compute quota: not Succeeded or Failed, and not past the end
/// of its graceful deletion.
pub fn counts_compute(pod: &Value) -> bool {
    let phase = pod.pointer("/status/phase").and_then(Value::as_str);
    if matches!(phase, Some("Succeeded" | "Failed")) {
        return false;
    }
    let deleted = pod.pointer("/metadata/deletionTimestamp").and_then(Value::as_str);
    let grace = pod.pointer("/metadata/deletionGracePeriodSeconds").and_then(Value::as_i64);
    match (deleted.and_then(|d| d.parse::<jiff::Timestamp>().ok()), grace) {
        (Some(at), Some(grace)) => {
            let end = at.checked_add(jiff::SignedDuration::from_secs(grace)).unwrap_or(at);
            jiff::Timestamp::now() <= end
        }
        _ => true,
    }
}

fn add_into(total: &mut ResourceList, list: &ResourceList) {
    for (name, value) in list {
        let sum = total.get(name).copied().unwrap_or(Quantity::ZERO).add(*value);
        total.insert(name.clone(), sum);
    }
}

fn max_into(total: &mut ResourceList, list: &ResourceList) {
    for (name, value) in list {
        let max = total.get(name).map_or(*value, |t| t.larger(*value));
        total.insert(name.clone(), max);
    }
}

/// A pod's effective requests or limits: the containers and sidecars summed, or an init
/// container's peak (with the sidecars started before it) if higher, plus the overhead (for
/// limits, only on resources that have a limit).
pub fn pod_total(pod: &Value, which: &str) -> ResourceList {
    let mut total = ResourceList::new();
    let list = |f: &str| pod.pointer(&format!("/spec/{f}")).and_then(Value::as_array);
    for container in list("containers").into_iter().flatten() {
        add_into(&mut total, &container_list(container, which));
    }
    let mut sidecars = ResourceList::new();
    let mut init_peak = ResourceList::new();
    for init in list("initContainers").into_iter().flatten() {
        let own = container_list(init, which);
        if init.get("restartPolicy").and_then(Value::as_str) == Some("Always") {
            add_into(&mut total, &own);
            add_into(&mut sidecars, &own);
            max_into(&mut init_peak, &sidecars);
        } else {
            let mut peak = own;
            add_into(&mut peak, &sidecars);
            max_into(&mut init_peak, &peak);
        }
    }
    max_into(&mut total, &init_peak);
    let overhead = pod.pointer("/spec/overhead").and_then(Value::as_object);
    for (name, value) in overhead.into_iter().flatten() {
        let Some(value) = Quantity::from_json(value) else { continue };
        if which == "requests" || total.contains_key(name) {
            add_into(&mut total, &ResourceList::from([(name.clone(), value)]));
        }
    }
    total
}

/// The quota names for a set of requests and limits (the reference's
/// `podComputeUsageHelper`): `pods`, `cpu`/`requests.cpu`, `limits.cpu`, … .
fn compute_usage(requests: &ResourceList, limits: &ResourceList) -> ResourceList {
    let mut out = ResourceList::from([("pods".to_string(), Quantity::count(1))]);
    for resource in ["cpu", "memory", "ephemeral-storage"] {
        if let Some(request) = requests.get(resource) {
            out.insert(resource.into(), *request);
            out.insert(format!("requests.{resource}"), *request);
        }
        if let Some(limit) = limits.get(resource) {
            out.insert(format!("limits.{resource}"), *limit);
        }
    }
    for (name, request) in requests {
        if name.starts_with("hugepages-") {
            out.insert(name.clone(), *request);
            out.insert(format!("requests.{name}"), *request);
        } else if is_extended_resource(name) {
            out.insert(format!("requests.{name}"), *request);
        }
    }
    out
}

fn pod_compute_usage(pod: &Value) -> ResourceList {
    compute_usage(&pod_total(pod, "requests"), &pod_total(pod, "limits"))
}

/// The reference's pod constraint: when a quota limits cpu or memory (`required`), every
/// container must state it. The error lists what is missing, per resource.
pub fn pod_constraints(required: &[String], pod: &Value) -> Result<(), String> {
    let required: BTreeSet<&str> =
        required.iter().map(String::as_str).filter(|r| CONSTRAINED.contains(r)).collect();
    let mut missing: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for container in containers(pod) {
        let usage = compute_usage(
            &container_list(container, "requests"),
            &container_list(container, "limits"),
        );
        let name = container.get("name").and_then(Value::as_str).unwrap_or_default();
        for resource in &required {
            if !usage.contains_key(*resource) {
                missing.entry(resource).or_default().insert(name.to_string());
            }
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    let messages: Vec<String> = missing
        .iter()
        .map(|(resource, names)| {
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            format!("must specify {resource} for: {}", names.join(","))
        })
        .collect();
    Err(messages.join("; "))
}

/// `a - b` for each resource of `a`, floored at zero (the reference's
/// `SubtractWithNonNegativeResult`): what an update adds to the stored object's usage.
pub fn subtract_non_negative(a: &ResourceList, b: &ResourceList) -> ResourceList {
    a.iter()
        .map(|(name, value)| {
            let taken = b.get(name).map_or(0, |b| b.milli);
            (name.clone(), Quantity { milli: (value.milli - taken).max(0), format: value.format })
        })
        .collect()
}

/// `a=1,b=2`, sorted by name (the reference's `prettyPrint`).
pub fn pretty(list: &ResourceList) -> String {
    list.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

/// A JSON `{name: quantity}` map as a list (malformed amounts are left out).
pub fn from_json_map(value: Option<&Value>) -> ResourceList {
    value
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.clone(), Quantity::from_json(v)?)))
        .collect()
}

/// A list as a JSON map of canonical quantities.
pub fn to_json_map(list: &ResourceList) -> Value {
    Value::Object(list.iter().map(|(k, v)| (k.clone(), v.to_json())).collect())
}

#[cfg(test)]
#[path = "usage_tests.rs"]
mod tests;
