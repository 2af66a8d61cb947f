//! How many pods a budget's pods' controllers want: the sum of `spec.replicas` over the
//! distinct controllers of the matching pods, found as the reference's finders do, in order:
//! a ReplicationController, the Deployment of a ReplicaSet, a ReplicaSet of its own, a
//! StatefulSet (all from the shared caches), and last any other kind through its `/scale`
//! subresource. A pod without a controller is *unmanaged* (reported, not an error); a pod
//! whose controller cannot be found makes the whole computation fail.

use std::collections::HashMap;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Pod, ReplicationController};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DynamicObject, GroupVersionKind};

use super::super::util::owner;
use super::super::ControllerOptions;
use crate::machinery::{Context, ControlError};

/// One controller and the replicas it wants.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ControllerScale {
    uid: String,
    replicas: i32,
}

/// The summed scale of the pods' controllers, and the names of the pods without one.
pub(super) async fn expected_scale(
    ctx: &Context<ControllerOptions>,
    namespace: &str,
    pods: &[&Pod],
) -> Result<(i32, Vec<String>), ControlError> {
    let mut scales: HashMap<String, i32> = HashMap::new();
    let mut unmanaged = Vec::new();
    for pod in pods {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let Some(reference) = owner::controller_of(&pod.metadata) else {
            unmanaged.push(name);
            continue;
        };
        if scales.contains_key(&reference.uid) {
            continue;
        }
        match find(ctx, reference, namespace).await? {
            Some(found) => {
                scales.insert(found.uid, found.replicas);
            }
            None => {
                return Err(ControlError::Other(format!("found no controllers for pod {name:?}")))
            }
        }
    }
    Ok((scales.values().copied().fold(0i32, i32::saturating_add), unmanaged))
}

/// The group of an ownerReference's `apiVersion` (`""` for the core group).
fn group_of(api_version: &str) -> &str {
    api_version.rsplit_once('/').map_or("", |(group, _)| group)
}

/// Whether `reference` names `kind` in one of `groups`.
fn names(reference: &OwnerReference, kind: &str, groups: &[&str]) -> bool {
    reference.kind == kind && groups.contains(&group_of(&reference.api_version))
}

/// Runs the finders in the reference's order; the first that recognises the controller wins.
async fn find(
    ctx: &Context<ControllerOptions>,
    reference: &OwnerReference,
    namespace: &str,
) -> Result<Option<ControllerScale>, ControlError> {
    let ns = Some(namespace);
    let replicas = |r: Option<i32>| r.unwrap_or(1);
    if names(reference, "ReplicationController", &[""]) {
        let rc = ctx.informers.get::<ReplicationController>().get(ns, &reference.name);
        if let Some(rc) = rc.filter(|rc| rc.metadata.uid.as_deref() == Some(&reference.uid)) {
            let wanted = replicas(rc.spec.as_ref().and_then(|s| s.replicas));
            return Ok(Some(ControllerScale { uid: reference.uid.clone(), replicas: wanted }));
        }
    }
    if names(reference, "ReplicaSet", &["apps", "extensions"]) {
        let rs = ctx.informers.get::<ReplicaSet>().get(ns, &reference.name);
        if let Some(rs) = rs.filter(|rs| rs.metadata.uid.as_deref() == Some(&reference.uid)) {
            match owner::controller_of(&rs.metadata) {
                // A Deployment's ReplicaSet counts as its Deployment.
                Some(d) if names(d, "Deployment", &["apps", "extensions"]) => {
                    let deployment = ctx.informers.get::<Deployment>().get(ns, &d.name);
                    let deployment =
                        deployment.filter(|dep| dep.metadata.uid.as_deref() == Some(&d.uid));
                    if let Some(dep) = deployment {
                        let wanted = replicas(dep.spec.as_ref().and_then(|s| s.replicas));
                        return Ok(Some(ControllerScale { uid: d.uid.clone(), replicas: wanted }));
                    }
                }
                Some(d) if d.kind == "Deployment" => {}
                _ => {
                    let wanted = replicas(rs.spec.as_ref().and_then(|s| s.replicas));
                    return Ok(Some(ControllerScale {
                        uid: reference.uid.clone(),
                        replicas: wanted,
                    }));
                }
            }
        }
    }
    if names(reference, "StatefulSet", &["apps"]) {
        let ss = ctx.informers.get::<StatefulSet>().get(ns, &reference.name);
        if let Some(ss) = ss.filter(|ss| ss.metadata.uid.as_deref() == Some(&reference.uid)) {
            let wanted = replicas(ss.spec.as_ref().and_then(|s| s.replicas));
            return Ok(Some(ControllerScale { uid: reference.uid.clone(), replicas: wanted }));
        }
    }
    scale_subresource(ctx, reference, namespace).await
}

/// Any other controller: its `/scale`. A 404 means either no such object (not found: `None`)
/// or a kind without `/scale` (an error saying so).
async fn scale_subresource(
    ctx: &Context<ControllerOptions>,
    reference: &OwnerReference,
    namespace: &str,
) -> Result<Option<ControllerScale>, ControlError> {
    let (group, version) = match reference.api_version.rsplit_once('/') {
        Some((group, version)) => (group, version),
        None => ("", reference.api_version.as_str()),
    };
    let gvk = GroupVersionKind::gvk(group, version, &reference.kind);
    let (resource, capabilities) = kube::discovery::pinned_kind(&ctx.client, &gvk).await?;
    let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), namespace, &resource);
    match api.get_scale(&reference.name).await {
        Ok(scale) if scale.metadata.uid.as_deref() == Some(reference.uid.as_str()) => {
            let wanted = scale.spec.and_then(|s| s.replicas).unwrap_or(0);
            Ok(Some(ControllerScale { uid: reference.uid.clone(), replicas: wanted }))
        }
        Ok(_) => Ok(None),
        Err(kube::Error::Api(status)) if status.code == 404 => {
            if capabilities.subresources.iter().any(|(sub, _)| sub.plural == "scale") {
                Ok(None)
            } else {
                let resource = if resource.group.is_empty() {
                    resource.plural.clone()
                } else {
                    format!("{}.{}", resource.plural, resource.group)
                };
                Err(ControlError::Other(format!(
                    "{resource} does not implement the scale subresource"
                )))
            }
        }
        Err(error) => Err(error.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(api_version: &str, kind: &str) -> OwnerReference {
        OwnerReference {
            api_version: api_version.into(),
            kind: kind.into(),
            name: "x".into(),
            uid: "u".into(),
            ..Default::default()
        }
    }

    #[test]
    fn finders_match_kind_and_group() {
        assert!(names(&reference("apps/v1", "ReplicaSet"), "ReplicaSet", &["apps", "extensions"]));
        assert!(names(
            &reference("extensions/v1beta1", "ReplicaSet"),
            "ReplicaSet",
            &["apps", "extensions"]
        ));
        assert!(!names(&reference("example.com/v1", "ReplicaSet"), "ReplicaSet", &["apps"]));
        assert!(names(&reference("v1", "ReplicationController"), "ReplicationController", &[""]));
        assert!(!names(&reference("apps/v1", "StatefulSet"), "ReplicaSet", &["apps"]));
    }
}
