//! StorageObjectInUseProtection admission, as the reference's plugin: every new
//! PersistentVolumeClaim gets the finalizer `kubernetes.io/pvc-protection` and every new
//! PersistentVolume `kubernetes.io/pv-protection`, so that deleting one still in use leaves
//! it `Terminating` until the `pvc-protection` / `pv-protection` controllers see it unused
//! and take the finalizer off (see `crate::controllers::pvprotection`).

use serde_json::{json, Value};

use super::super::server::ApiServer;
use super::super::status::ApiResult;
use super::{Operation, Request};

/// The finalizer that keeps a claim while pods use it.
pub const PVC_FINALIZER: &str = "kubernetes.io/pvc-protection";
/// The finalizer that keeps a volume while it is bound.
pub const PV_FINALIZER: &str = "kubernetes.io/pv-protection";

/// Adds the protection finalizer to a new claim or volume that lacks it.
pub(crate) async fn mutate(
    _server: &ApiServer,
    request: &mut Request<'_>,
    obj: &mut Value,
) -> ApiResult<()> {
    if request.operation != Operation::Create {
        return Ok(());
    }
    let finalizer = if request.is_main("", "PersistentVolumeClaim") {
        PVC_FINALIZER
    } else if request.is_main("", "PersistentVolume") {
        PV_FINALIZER
    } else {
        return Ok(());
    };
    add_finalizer(obj, finalizer);
    Ok(())
}

/// Appends `finalizer` to `metadata.finalizers` unless present (a body of another shape is
/// left for validation to refuse).
fn add_finalizer(obj: &mut Value, finalizer: &str) {
    let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) else { return };
    let list = meta.entry("finalizers").or_insert_with(|| json!([]));
    if list.is_null() {
        *list = json!([]);
    }
    let Some(list) = list.as_array_mut() else { return };
    if !list.iter().any(|f| f.as_str() == Some(finalizer)) {
        list.push(json!(finalizer));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_finalizer_is_added_once_and_others_are_kept() {
        let mut claim = json!({"metadata": {"name": "data"}});
        add_finalizer(&mut claim, PVC_FINALIZER);
        add_finalizer(&mut claim, PVC_FINALIZER);
        assert_eq!(claim["metadata"]["finalizers"], json!([PVC_FINALIZER]));

        let mut volume =
            json!({"metadata": {"name": "pv", "finalizers": ["skerry.io/local-path-cleanup"]}});
        add_finalizer(&mut volume, PV_FINALIZER);
        assert_eq!(
            volume["metadata"]["finalizers"],
            json!(["skerry.io/local-path-cleanup", PV_FINALIZER])
        );

        let mut null = json!({"metadata": {"finalizers": null}});
        add_finalizer(&mut null, PV_FINALIZER);
        assert_eq!(null["metadata"]["finalizers"], json!([PV_FINALIZER]));

        // Bodies of the wrong shape are left alone for validation.
        let mut odd = json!({"metadata": {"finalizers": "x"}});
        add_finalizer(&mut odd, PV_FINALIZER);
        assert_eq!(odd["metadata"]["finalizers"], "x");
    }
}
