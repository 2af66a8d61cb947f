//! PersistentVolumeClaimResize admission, as the reference's plugin: an update that grows a
//! claim's storage request is refused (403) unless the claim is bound and its StorageClass
//! (`spec.storageClassName`, or the beta annotation) exists with `allowVolumeExpansion: true`.
//! Shrinking is validation's to refuse (`validation/pvc.rs`).

use serde_json::Value;

use super::super::authz::forbidden_status;
use super::super::server::ApiServer;
use super::super::status::ApiResult;
use super::super::validation::quantity;
use super::{stored, Operation, Request};

const STORAGE_CLASSES: (&str, &str, &str) = ("storage.k8s.io", "v1", "storageclasses");
const BETA_CLASS_ANNOTATION: &str = "volume.beta.kubernetes.io/storage-class";

fn requested(claim: &Value) -> Option<f64> {
    claim
        .pointer("/spec/resources/requests/storage")
        .and_then(Value::as_str)
        .and_then(quantity::parse)
}

/// The claim's class name: the field, else the beta annotation.
fn class_name(claim: &Value) -> Option<&str> {
    let field = claim.pointer("/spec/storageClassName").and_then(Value::as_str);
    let annotation = || {
        claim
            .pointer("/metadata/annotations")
            .and_then(|a| a.get(BETA_CLASS_ANNOTATION))
            .and_then(Value::as_str)
    };
    field.or_else(annotation).filter(|n| !n.is_empty())
}

/// Refuses growing a claim that may not grow.
pub(crate) async fn validate(
    server: &ApiServer,
    request: &mut Request<'_>,
    claim: &Value,
) -> ApiResult<()> {
    if request.operation != Operation::Update || !request.is_main("", "PersistentVolumeClaim") {
        return Ok(());
    }
    let Some(old) = request.old else { return Ok(()) };
    let (Some(before), Some(after)) = (requested(old), requested(claim)) else { return Ok(()) };
    if after <= before {
        return Ok(());
    }
    let refuse = |why: &str| Err(forbidden_status("", "persistentvolumeclaims", request.name, why));
    if old.pointer("/status/phase").and_then(Value::as_str) != Some("Bound") {
        return refuse("Only bound persistent volume claims can be expanded");
    }
    let class = match class_name(claim) {
        Some(name) => stored::get(server, STORAGE_CLASSES, None, name).await?,
        None => None,
    };
    let expandable =
        class.as_ref().and_then(|c| c.get("allowVolumeExpansion")).and_then(Value::as_bool);
    if expandable != Some(true) {
        return refuse(
            "only dynamically provisioned pvc can be resized and the storageclass that \
             provisions the pvc must support resize",
        );
    }
    Ok(())
}
