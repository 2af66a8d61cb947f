//! The two kinds one controller serves: apps/v1 ReplicaSet and core/v1 ReplicationController
//! differ only in how they spell the selector (a `LabelSelector` or a label map) and in their
//! status types, whose JSON is the same. [`ReplicaKind`] is that difference.

use std::collections::BTreeMap;
use std::fmt::Debug;

use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetCondition, ReplicaSetStatus};
use k8s_openapi::api::core::v1::{PodTemplateSpec, ReplicationController};
use kube::Resource;
use serde::de::DeserializeOwned;

use crate::controllers::util::selector;

/// An object that keeps `replicas` pods from a template running.
pub trait ReplicaKind:
    Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
    + Clone
    + DeserializeOwned
    + Debug
    + Send
    + Sync
    + 'static
{
    /// `spec.replicas` (defaulted to 1 by the API server).
    fn replicas(&self) -> i32;
    /// `spec.minReadySeconds`.
    fn min_ready_seconds(&self) -> i32;
    /// Whether the selector picks a pod with these labels (a missing selector picks none).
    fn selects(&self, labels: Option<&BTreeMap<String, String>>) -> bool;
    /// `spec.template`.
    fn template(&self) -> Option<&PodTemplateSpec>;
    /// The status, in the ReplicaSet's spelling.
    fn replica_status(&self) -> ReplicaSetStatus;
}

impl ReplicaKind for ReplicaSet {
    fn replicas(&self) -> i32 {
        self.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
    }

    fn min_ready_seconds(&self) -> i32 {
        self.spec.as_ref().and_then(|s| s.min_ready_seconds).unwrap_or(0)
    }

    fn selects(&self, labels: Option<&BTreeMap<String, String>>) -> bool {
        self.spec.as_ref().is_some_and(|s| selector::matches(&s.selector, labels))
    }

    fn template(&self) -> Option<&PodTemplateSpec> {
        self.spec.as_ref().and_then(|s| s.template.as_ref())
    }

    fn replica_status(&self) -> ReplicaSetStatus {
        self.status.clone().unwrap_or_default()
    }
}

impl ReplicaKind for ReplicationController {
    fn replicas(&self) -> i32 {
        self.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
    }

    fn min_ready_seconds(&self) -> i32 {
        self.spec.as_ref().and_then(|s| s.min_ready_seconds).unwrap_or(0)
    }

    fn selects(&self, labels: Option<&BTreeMap<String, String>>) -> bool {
        // The API server defaults an empty selector to the template's labels; one still empty
        // would select every pod, which the reference never does for an RC.
        match self.spec.as_ref().and_then(|s| s.selector.as_ref()) {
            Some(sel) if !sel.is_empty() => selector::map_matches(sel, labels),
            _ => false,
        }
    }

    fn template(&self) -> Option<&PodTemplateSpec> {
        self.spec.as_ref().and_then(|s| s.template.as_ref())
    }

    fn replica_status(&self) -> ReplicaSetStatus {
        let Some(status) = &self.status else { return ReplicaSetStatus::default() };
        ReplicaSetStatus {
            replicas: status.replicas,
            fully_labeled_replicas: status.fully_labeled_replicas,
            ready_replicas: status.ready_replicas,
            available_replicas: status.available_replicas,
            observed_generation: status.observed_generation,
            conditions: status.conditions.as_ref().map(|conditions| {
                conditions
                    .iter()
                    .map(|c| ReplicaSetCondition {
                        type_: c.type_.clone(),
                        status: c.status.clone(),
                        reason: c.reason.clone(),
                        message: c.message.clone(),
                        last_transition_time: c.last_transition_time.clone(),
                    })
                    .collect()
            }),
            terminating_replicas: None,
        }
    }
}
