//! Deleting everything in a namespace: every namespaced resource the server serves (custom
//! resources included), by deletecollection where supported and one by one otherwise, with
//! Background propagation; then counting what is left and which finalizers hold it.

use kube::api::{DeleteParams, DynamicObject, ListParams, PropagationPolicy};
use kube::discovery::verbs;
use kube::{Api, Client};

use super::conditions::Cleanup;
use crate::controllers::util::discovery::{served_resources, ServedResource};

/// One pass: delete what is there, report what remains.
pub async fn delete_content(client: &Client, namespace: &str) -> Cleanup {
    let mut cleanup = Cleanup::default();
    let resources = match served_resources(client).await {
        Ok(resources) => resources,
        Err(error) => {
            cleanup.discovery_failure = Some(error.to_string());
            return cleanup;
        }
    };
    let deletable = resources.into_iter().filter(|r| {
        r.namespaced
            && r.supports(verbs::LIST)
            && (r.supports(verbs::DELETE) || r.supports(verbs::DELETE_COLLECTION))
    });
    for resource in deletable {
        if let Err(error) = delete_resource(client, namespace, &resource).await {
            cleanup.content_failures.push(error.to_string());
        }
        match remaining(client, namespace, &resource).await {
            Ok(left) if left.is_empty() => {}
            Ok(left) => {
                cleanup.remaining.insert(resource.group_resource(), left.len());
                for object in &left {
                    for finalizer in object.metadata.finalizers.iter().flatten() {
                        *cleanup.finalizers.entry(finalizer.clone()).or_default() += 1;
                    }
                }
            }
            Err(error) => cleanup.content_failures.push(error.to_string()),
        }
    }
    cleanup
}

fn params() -> DeleteParams {
    DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        ..DeleteParams::default()
    }
}

async fn delete_resource(
    client: &Client,
    namespace: &str,
    resource: &ServedResource,
) -> Result<(), kube::Error> {
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), namespace, &resource.resource);
    if resource.supports(verbs::DELETE_COLLECTION) {
        match api.delete_collection(&params(), &ListParams::default()).await {
            Ok(_) => return Ok(()),
            // Not allowed after all: fall back to deleting one by one.
            Err(kube::Error::Api(status)) if status.code == 405 || status.code == 404 => {}
            Err(error) => return Err(error),
        }
    }
    for object in api.list(&ListParams::default()).await? {
        if object.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let Some(name) = object.metadata.name.as_deref() else { continue };
        match api.delete(name, &params()).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

async fn remaining(
    client: &Client,
    namespace: &str,
    resource: &ServedResource,
) -> Result<Vec<DynamicObject>, kube::Error> {
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), namespace, &resource.resource);
    Ok(api.list(&ListParams::default()).await?.items)
}
