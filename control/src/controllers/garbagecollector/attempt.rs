//! Reconciling one object uid: the Orphan and Foreground work of an owner being deleted, or
//! the fate of a dependent given its owners (decided by [`decide`]). Writes are guarded: deletes
//! carry the dependent's uid as a precondition, and metadata patches pin the resourceVersion
//! the graph saw, so a stale graph never removes the wrong thing (a conflict is retried).

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{
    DeleteParams, DynamicObject, Patch, PatchParams, Preconditions, PropagationPolicy,
};
use kube::Api;
use serde_json::{json, Value};

use super::decide::{decide, Decision, OwnerState, Policy};
use super::graph::{blocking_dependents, Node, FOREGROUND, ORPHAN};
use super::Collector;
use crate::controllers::util::discovery::ServedResource;
use crate::machinery::{Action, ControlError};

/// How long to wait before looking again at something that cannot be decided yet.
const RETRY: Duration = Duration::from_secs(5);
/// How long to wait before retrying an owner whose kind is not served.
const UNKNOWN_KIND_RETRY: Duration = Duration::from_secs(30);

/// Reconciles the object `uid`.
pub(super) async fn reconcile(collector: &Collector, uid: &str) -> Result<Action, ControlError> {
    let Some(node) = collector.graph().get(uid).cloned() else {
        return Ok(Action::Done);
    };
    if node.being_deleted {
        if node.is_orphaning() {
            return orphan_dependents(collector, &node).await;
        }
        if node.is_deleting_dependents() {
            return delete_dependents(collector, &node).await;
        }
        // Being deleted for other reasons: its own finalizers decide.
        return Ok(Action::Done);
    }
    if node.owners.is_empty() {
        return Ok(Action::Done);
    }
    let mut owners = Vec::new();
    for owner in &node.owners {
        owners.push((owner.uid.clone(), owner_state(collector, &node, owner).await?));
    }
    let has_dependents = collector.graph().has_dependents(&node.uid);
    match decide(&owners, has_dependents, &node.finalizers) {
        Decision::Keep => Ok(Action::Done),
        Decision::Retry => Ok(Action::RequeueAfter(UNKNOWN_KIND_RETRY)),
        Decision::RemoveOwnerReferences(dead) => {
            let remaining: Vec<&OwnerReference> =
                node.owners.iter().filter(|o| !dead.contains(&o.uid)).collect();
            patch_metadata(collector, &node, json!({ "ownerReferences": remaining })).await?;
            Ok(Action::Done)
        }
        Decision::Delete(policy) => {
            tracing::info!(object = %node.describe(), ?policy, "deleting dependent: its owners are gone");
            delete(collector, &node, policy).await?;
            Ok(Action::Done)
        }
    }
}

/// What the owner `reference` of `dependent` is: from the graph if it holds that uid, else
/// from a live GET (the graph may lag behind, or not watch the owner's kind yet).
async fn owner_state(
    collector: &Collector,
    dependent: &Node,
    reference: &OwnerReference,
) -> Result<OwnerState, ControlError> {
    if let Some(owner) = collector.graph().get(&reference.uid) {
        return Ok(state_of(owner.is_deleting_dependents()));
    }
    let Some(resource) = collector.resolve(&reference.api_version, &reference.kind) else {
        return Ok(OwnerState::Unknown);
    };
    // ownerReferences name an owner in the dependent's namespace, or a cluster-scoped one; a
    // cluster-scoped dependent cannot have a namespaced owner (the reference reports it invalid).
    let namespace = match (resource.namespaced, dependent.namespace.as_str()) {
        (true, "") => return Ok(OwnerState::Dangling),
        (true, ns) => Some(ns),
        (false, _) => None,
    };
    let live = api(collector, &resource, namespace).get_opt(&reference.name).await?;
    Ok(match live {
        Some(owner) if owner.metadata.uid.as_deref() == Some(reference.uid.as_str()) => {
            let deleting = owner.metadata.deletion_timestamp.is_some()
                && owner.metadata.finalizers.iter().flatten().any(|f| f == FOREGROUND);
            state_of(deleting)
        }
        _ => OwnerState::Dangling,
    })
}

fn state_of(deleting_dependents: bool) -> OwnerState {
    if deleting_dependents {
        OwnerState::WaitingForDependents
    } else {
        OwnerState::Solid
    }
}

/// Orphan propagation: strip the owner from every dependent, then drop the `orphan` finalizer.
async fn orphan_dependents(collector: &Collector, owner: &Node) -> Result<Action, ControlError> {
    if !collector.synced() {
        // A dependent the watches have not listed yet would keep a reference to a dead owner.
        return Ok(Action::RequeueAfter(RETRY));
    }
    let dependents: Vec<Node> =
        collector.graph().dependents(&owner.uid).into_iter().cloned().collect();
    for dependent in dependents {
        let remaining: Vec<&OwnerReference> =
            dependent.owners.iter().filter(|o| o.uid != owner.uid).collect();
        match patch_metadata(collector, &dependent, json!({ "ownerReferences": remaining })).await {
            Err(e) if e.is_not_found() => {}
            other => other?,
        }
    }
    remove_finalizer(collector, owner, ORPHAN).await?;
    Ok(Action::Done)
}

/// Foreground propagation: delete every dependent; drop `foregroundDeletion` once none with
/// `blockOwnerDeletion` is left.
async fn delete_dependents(collector: &Collector, owner: &Node) -> Result<Action, ControlError> {
    if !collector.synced() {
        return Ok(Action::RequeueAfter(RETRY));
    }
    let (dependents, blocking): (Vec<String>, usize) = {
        let graph = collector.graph();
        let dependents = graph.dependents(&owner.uid).into_iter().map(|d| d.uid.clone()).collect();
        (dependents, blocking_dependents(&graph, &owner.uid).len())
    };
    if blocking == 0 {
        remove_finalizer(collector, owner, FOREGROUND).await?;
        return Ok(Action::Done);
    }
    // Each dependent sees this owner waiting and is deleted; its disappearance brings the
    // owner back here.
    dependents.into_iter().for_each(|d| collector.queue.add(d));
    Ok(Action::Done)
}

fn api(
    collector: &Collector,
    resource: &ServedResource,
    namespace: Option<&str>,
) -> Api<DynamicObject> {
    match namespace {
        Some(ns) => Api::namespaced_with(collector.client.clone(), ns, &resource.resource),
        None => Api::all_with(collector.client.clone(), &resource.resource),
    }
}

fn node_api(collector: &Collector, node: &Node) -> Api<DynamicObject> {
    let namespace = (!node.namespace.is_empty()).then_some(node.namespace.as_str());
    api(collector, &node.resource, namespace)
}

/// Deletes `node` (if it is still the object with that uid) with `policy`.
async fn delete(collector: &Collector, node: &Node, policy: Policy) -> Result<(), ControlError> {
    let params = DeleteParams {
        preconditions: Some(Preconditions { uid: Some(node.uid.clone()), resource_version: None }),
        propagation_policy: Some(match policy {
            Policy::Background => PropagationPolicy::Background,
            Policy::Foreground => PropagationPolicy::Foreground,
            Policy::Orphan => PropagationPolicy::Orphan,
        }),
        ..DeleteParams::default()
    };
    match node_api(collector, node).delete(&node.name, &params).await {
        Ok(_) => Ok(()),
        // Gone already, or replaced by a new object of the same name: nothing to delete.
        Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => Ok(()),
        Err(error) => Err(error.into()),
    }
}

/// Merge-patches `fields` into the object's metadata, pinned to the resourceVersion the graph
/// saw (a newer object is a conflict, retried once the watch delivers it).
async fn patch_metadata(
    collector: &Collector,
    node: &Node,
    mut fields: Value,
) -> Result<(), ControlError> {
    fields["resourceVersion"] = json!(node.resource_version);
    let patch = json!({ "metadata": fields });
    node_api(collector, node)
        .patch(&node.name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(())
}

async fn remove_finalizer(
    collector: &Collector,
    node: &Node,
    finalizer: &str,
) -> Result<(), ControlError> {
    let remaining: Vec<&String> = node.finalizers.iter().filter(|f| *f != finalizer).collect();
    match patch_metadata(collector, node, json!({ "finalizers": remaining })).await {
        // The object went away with its last finalizer: done.
        Err(e) if e.is_not_found() => Ok(()),
        other => other,
    }
}
