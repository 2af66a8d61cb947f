//! Pod (anti-)affinity terms resolved for matching: which namespaces a term covers (its own
//! pod's namespace by default, the listed `namespaces`, and those its `namespaceSelector`
//! selects — `{}` selects all) and which pods its `labelSelector` selects (none when absent).
//! Shared by the inter-pod affinity filter and score.

use std::collections::HashSet;

use k8s_openapi::api::core::v1::{Pod, PodAffinityTerm, WeightedPodAffinityTerm};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use super::framework::ClusterObjects;
use super::node_info::{NodeInfo, PodInfo};
use super::selectors::label_selector_matches;

/// One term, ready to match pods.
#[derive(Debug, Clone)]
pub struct AffinityTerm {
    pub topology_key: String,
    selector: Option<LabelSelector>,
    all_namespaces: bool,
    namespaces: HashSet<String>,
    /// The weight of a preferred term (1 for a required one).
    pub weight: i64,
}

impl AffinityTerm {
    /// Resolves `term` of a pod in `namespace`.
    pub fn new(
        term: &PodAffinityTerm,
        namespace: &str,
        objects: &ClusterObjects,
        weight: i64,
    ) -> AffinityTerm {
        let mut namespaces: HashSet<String> = term.namespaces.iter().flatten().cloned().collect();
        let mut all_namespaces = false;
        match &term.namespace_selector {
            None => {
                if namespaces.is_empty() {
                    namespaces.insert(namespace.to_string());
                }
            }
            Some(selector) => {
                let empty = selector.match_labels.as_ref().is_none_or(|m| m.is_empty())
                    && selector.match_expressions.as_ref().is_none_or(|e| e.is_empty());
                if empty {
                    all_namespaces = true;
                } else {
                    namespaces.extend(
                        objects
                            .namespace_labels
                            .iter()
                            .filter(|(_, labels)| label_selector_matches(selector, labels))
                            .map(|(name, _)| name.clone()),
                    );
                }
            }
        }
        AffinityTerm {
            topology_key: term.topology_key.clone(),
            selector: term.label_selector.clone(),
            all_namespaces,
            namespaces,
            weight,
        }
    }

    /// Whether the term selects `pod`.
    pub fn matches(&self, pod: &PodInfo) -> bool {
        let Some(selector) = &self.selector else { return false };
        (self.all_namespaces || self.namespaces.contains(&pod.namespace))
            && label_selector_matches(selector, pod.labels())
    }

    /// The node's value for this term's topology key.
    pub fn domain<'n>(&self, node: &'n NodeInfo) -> Option<&'n String> {
        node.labels().get(&self.topology_key)
    }
}

/// Which of a pod's terms to read (the reference's four term lists).
#[allow(clippy::enum_variant_names)]
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    RequiredAffinity,
    RequiredAntiAffinity,
    PreferredAffinity,
    PreferredAntiAffinity,
}

/// The pod's terms of `kind`, resolved.
pub fn terms_of(pod: &Pod, kind: Kind, objects: &ClusterObjects) -> Vec<AffinityTerm> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("");
    let affinity = pod.spec.as_ref().and_then(|s| s.affinity.as_ref());
    let affinity_part = affinity.and_then(|a| a.pod_affinity.as_ref());
    let anti_part = affinity.and_then(|a| a.pod_anti_affinity.as_ref());
    let required = |terms: Option<&Vec<PodAffinityTerm>>| -> Vec<AffinityTerm> {
        terms.into_iter().flatten().map(|t| AffinityTerm::new(t, namespace, objects, 1)).collect()
    };
    let preferred = |terms: Option<&Vec<WeightedPodAffinityTerm>>| -> Vec<AffinityTerm> {
        terms
            .into_iter()
            .flatten()
            .map(|t| {
                AffinityTerm::new(&t.pod_affinity_term, namespace, objects, i64::from(t.weight))
            })
            .collect()
    };
    match kind {
        Kind::RequiredAffinity => required(
            affinity_part
                .and_then(|a| a.required_during_scheduling_ignored_during_execution.as_ref()),
        ),
        Kind::RequiredAntiAffinity => required(
            anti_part.and_then(|a| a.required_during_scheduling_ignored_during_execution.as_ref()),
        ),
        Kind::PreferredAffinity => preferred(
            affinity_part
                .and_then(|a| a.preferred_during_scheduling_ignored_during_execution.as_ref()),
        ),
        Kind::PreferredAntiAffinity => preferred(
            anti_part.and_then(|a| a.preferred_during_scheduling_ignored_during_execution.as_ref()),
        ),
    }
}

/// Whether the pod has any pod affinity or anti-affinity at all.
pub fn has_pod_affinity(pod: &Pod) -> bool {
    let affinity = pod.spec.as_ref().and_then(|s| s.affinity.as_ref());
    affinity.is_some_and(|a| a.pod_affinity.is_some() || a.pod_anti_affinity.is_some())
}
