//! Creating and deleting daemon pods (the reference's `syncNodes`): a new pod is the template
//! with the revision labels, the default tolerations and a required node affinity pinning it to
//! its node, named `<ds>-<random>` and controlled by the DaemonSet; the scheduler binds it.
//! Creations go in slow-start batches, deletions in parallel, both announced to the
//! expectations first and each recorded as an Event.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use futures::future::join_all;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, PostParams};
use kube::{Api, ResourceExt};

use super::eligibility::{add_default_tolerations, pin_to_node};
use super::nodes::{REVISION_HASH, TEMPLATE_GENERATION};
use crate::controllers::replicaset::{error_message, slow_start_batch};
use crate::controllers::util::expectations::Expectations;
use crate::controllers::util::owner::controller_reference;
use crate::controllers::ControllerOptions;
use crate::machinery::{Context, ControlError, EventType, ObjectKey};

/// At most this many pods are created or deleted in one sync (the reference's `burstReplicas`).
const BURST_REPLICAS: usize = 250;

/// The pod `ds` runs on `node` (revision `hash`, template generation `generation`).
pub fn daemon_pod(ds: &DaemonSet, node: &str, hash: &str, generation: Option<&str>) -> Pod {
    let template = ds.spec.as_ref().map(|s| s.template.clone()).unwrap_or_default();
    let meta = template.metadata.unwrap_or_default();
    let mut labels = meta.labels.unwrap_or_default();
    if let Some(generation) = generation {
        labels.insert(TEMPLATE_GENERATION.into(), generation.into());
    }
    if !hash.is_empty() {
        labels.insert(REVISION_HASH.into(), hash.into());
    }
    let mut spec = template.spec.unwrap_or_default();
    add_default_tolerations(&mut spec);
    spec.affinity = Some(pin_to_node(spec.affinity.take(), node));
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-", ds.name_any())),
            namespace: ds.namespace(),
            labels: Some(labels),
            annotations: meta.annotations,
            finalizers: meta.finalizers,
            owner_references: Some(vec![controller_reference(ds)]),
            ..ObjectMeta::default()
        },
        spec: Some(spec),
        status: None,
    }
}

/// Deletes `delete` and creates a pod on each node of `create_on` (at most [`BURST_REPLICAS`]
/// of each). Returns the first error.
pub async fn sync_nodes(
    ctx: &Context<ControllerOptions>,
    expectations: &Expectations,
    ds: &DaemonSet,
    delete: &[Arc<Pod>],
    create_on: &[String],
    hash: &str,
    generation: Option<&str>,
) -> Result<(), ControlError> {
    let key = ObjectKey::of(ds);
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &key.namespace);
    let create_on = &create_on[..create_on.len().min(BURST_REPLICAS)];
    let delete = &delete[..delete.len().min(BURST_REPLICAS)];
    expectations.expect(
        &key,
        create_on.len(),
        delete.iter().filter_map(|p| p.metadata.uid.clone()),
    );

    let deletions = delete.iter().map(|pod| {
        let api = api.clone();
        let key = &key;
        async move {
            let name = pod.name_any();
            match api.delete(&name, &DeleteParams::default()).await {
                Ok(_) => {
                    let message = format!("Deleted pod: {name}");
                    ctx.events.record(ds, EventType::Normal, "SuccessfulDelete", &message).await;
                    Ok(())
                }
                Err(error) => {
                    // This deletion will not be observed.
                    expectations.deletion_observed(key, pod.metadata.uid.as_deref().unwrap_or(""));
                    if matches!(&error, kube::Error::Api(s) if s.code == 404) {
                        return Ok(());
                    }
                    let error = ControlError::from(error);
                    let message = format!("Error deleting: {}", error_message(&error));
                    ctx.events.record(ds, EventType::Warning, "FailedDelete", &message).await;
                    Err(error)
                }
            }
        }
    });
    let delete_error = join_all(deletions).await.into_iter().find_map(Result::err);

    let next = AtomicUsize::new(0);
    let (created, create_error) = slow_start_batch(create_on.len(), || {
        let node = create_on.get(next.fetch_add(1, Ordering::SeqCst)).cloned().unwrap_or_default();
        let pod = daemon_pod(ds, &node, hash, generation);
        let api = api.clone();
        async move {
            match api.create(&PostParams::default(), &pod).await {
                Ok(created) => {
                    let message = format!("Created pod: {}", created.name_any());
                    ctx.events.record(ds, EventType::Normal, "SuccessfulCreate", &message).await;
                    Ok(())
                }
                Err(error) => {
                    let error = ControlError::from(error);
                    let message = format!("Error creating: {}", error_message(&error));
                    ctx.events.record(ds, EventType::Warning, "FailedCreate", &message).await;
                    Err(error)
                }
            }
        }
    })
    .await;
    // The pods that were not created will never be observed.
    for _ in created..create_on.len() {
        expectations.creation_observed(&key);
    }
    match create_error.or(delete_error) {
        Some(error) => Err(error),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::super::eligibility::target_node;
    use super::*;
    use serde_json::json;

    #[test]
    fn a_daemon_pod_is_labelled_tolerant_pinned_and_owned() {
        let ds: DaemonSet = serde_json::from_value(json!({
            "metadata": {"name": "agent", "namespace": "kube-system", "uid": "u1"},
            "spec": {
                "selector": {"matchLabels": {"app": "agent"}},
                "template": {
                    "metadata": {"labels": {"app": "agent"}, "annotations": {"a": "b"}},
                    "spec": {"containers": [{"name": "c", "image": "i"}],
                             "nodeSelector": {"disk": "ssd"}}
                }
            }
        }))
        .unwrap();
        let pod = daemon_pod(&ds, "n1", "abc", Some("2"));
        let labels = pod.metadata.labels.as_ref().unwrap();
        assert_eq!(labels["app"], "agent");
        assert_eq!(labels[REVISION_HASH], "abc");
        assert_eq!(labels[TEMPLATE_GENERATION], "2");
        assert_eq!(pod.metadata.generate_name.as_deref(), Some("agent-"));
        assert_eq!(pod.metadata.namespace.as_deref(), Some("kube-system"));
        let owner = &pod.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
            ("DaemonSet", "u1", Some(true))
        );
        assert_eq!(target_node(&pod), Some("n1"));
        let spec = pod.spec.as_ref().unwrap();
        assert_eq!(spec.node_name, None, "the scheduler binds it");
        assert_eq!(spec.tolerations.as_ref().map(Vec::len), Some(6));
        assert_eq!(spec.node_selector.as_ref().unwrap()["disk"], "ssd");
    }
}
