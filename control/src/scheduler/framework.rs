//! The vocabulary of one scheduling decision: why a node was rejected ([`Rejection`], with the
//! reference's distinction between reasons preemption can and cannot fix), the cluster objects
//! besides nodes and pods that filters read ([`ClusterObjects`]), and [`FitError`], which turns
//! the per-node reasons into the reference's `0/3 nodes are available: ...` message.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;

/// Whether preempting pods could make a rejected node fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// Removing lower-priority pods might help (resources, ports, anti-affinity).
    Unschedulable,
    /// Nothing on the node's pods would change the answer (taints, labels, cordon).
    Unresolvable,
}

/// Why one node cannot take the pod: one or more reference reason strings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub code: Code,
    pub reasons: Vec<String>,
}

impl Rejection {
    /// A reason that preemption might fix.
    pub fn unschedulable(reason: impl Into<String>) -> Rejection {
        Rejection { code: Code::Unschedulable, reasons: vec![reason.into()] }
    }

    /// A reason that preemption cannot fix.
    pub fn unresolvable(reason: impl Into<String>) -> Rejection {
        Rejection { code: Code::Unresolvable, reasons: vec![reason.into()] }
    }
}

/// The outcome of one filter on one node.
pub type Verdict = Result<(), Rejection>;

/// The objects besides nodes and pods that the filters read.
#[derive(Debug, Clone, Default)]
pub struct ClusterObjects {
    /// Namespace name → labels, for pod affinity terms' `namespaceSelector`.
    pub namespace_labels: HashMap<String, BTreeMap<String, String>>,
    /// `(namespace, name)` → claim.
    pub claims: HashMap<(String, String), Arc<PersistentVolumeClaim>>,
    /// Volume name → volume, for the volumes the pod's claims are bound to.
    pub volumes: HashMap<String, Arc<PersistentVolume>>,
    /// The volumes an unbound `WaitForFirstConsumer` claim may still get (every volume but
    /// those promised to another claim by an earlier decision); filled only when the pod has
    /// such a claim.
    pub unbound_volumes: Vec<Arc<PersistentVolume>>,
    /// StorageClass name → class.
    pub classes: HashMap<String, Arc<StorageClass>>,
}

/// Why a pod fits no node.
#[derive(Debug, Clone, Default)]
pub struct FitError {
    /// Nodes considered.
    pub num_nodes: usize,
    /// A reason that rules out every node at once (a missing claim, ...).
    pub pre_filter: Option<String>,
    /// Node name → why it was rejected.
    pub rejections: HashMap<String, Rejection>,
    /// What preemption had to say (`preemption: 0/3 nodes are available: ...`), appended.
    pub post_filter: Option<String>,
}

impl FitError {
    /// The reference's `0/N nodes are available: 1 reason, 2 other reason.`: each reason with
    /// the number of nodes it applies to, sorted as strings.
    /// The reference also appends preemption's own message after a space and a period (which
    /// doubles the period its message already ends with: `...incoming pod..`).
    pub fn message(&self) -> String {
        let mut message = match &self.pre_filter {
            Some(reason) => format!("0/{} nodes are available: {reason}.", self.num_nodes),
            None => {
                let mut counts: HashMap<&str, usize> = HashMap::new();
                for rejection in self.rejections.values() {
                    for reason in &rejection.reasons {
                        *counts.entry(reason.as_str()).or_insert(0) += 1;
                    }
                }
                summary(self.num_nodes, counts)
            }
        };
        if let Some(post) = &self.post_filter {
            message.push_str(&format!(" {post}."));
        }
        message
    }
}

/// `0/N nodes are available: <count> <reason>, ....` from reason counts.
pub fn summary(num_nodes: usize, counts: HashMap<&str, usize>) -> String {
    let mut parts: Vec<String> = counts.iter().map(|(r, n)| format!("{n} {r}")).collect();
    parts.sort();
    if parts.is_empty() {
        return format!("0/{num_nodes} nodes are available.");
    }
    format!("0/{num_nodes} nodes are available: {}.", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_counts_and_sorts_reasons_like_the_reference() {
        let mut e = FitError { num_nodes: 3, ..FitError::default() };
        e.rejections
            .insert("a".into(), Rejection::unresolvable("node(s) had untolerated taint {k: v}"));
        e.rejections.insert("b".into(), Rejection::unschedulable("Insufficient memory"));
        e.rejections.insert("c".into(), Rejection::unschedulable("Insufficient memory"));
        assert_eq!(
            e.message(),
            "0/3 nodes are available: 1 node(s) had untolerated taint {k: v}, 2 Insufficient memory."
        );
    }

    #[test]
    fn preemption_message_is_appended_like_the_reference() {
        let mut e = FitError { num_nodes: 1, ..FitError::default() };
        e.rejections.insert("a".into(), Rejection::unschedulable("Insufficient cpu"));
        e.post_filter = Some(
            "preemption: 0/1 nodes are available: 1 No preemption victims found for incoming pod."
                .into(),
        );
        assert_eq!(
            e.message(),
            "0/1 nodes are available: 1 Insufficient cpu. preemption: 0/1 nodes are available: \
             1 No preemption victims found for incoming pod.."
        );
    }

    #[test]
    fn no_nodes_at_all() {
        let e = FitError::default();
        assert_eq!(e.message(), "0/0 nodes are available.");
    }
}
