//! PersistentVolumeClaim updates, as the reference's `ValidatePersistentVolumeClaimUpdate`
//! (with `RecoverVolumeExpansionFailure`, on by default since 1.32): a claim's spec is
//! immutable, except that `volumeName` may be set once, a claim without a class may get one
//! (the retroactive default class), and a bound claim may change `resources.requests`. A
//! request may not shrink to or below the capacity in the claim's status. Whether the class
//! allows expansion at all is the PersistentVolumeClaimResize admission plugin's to decide.

use serde_json::Value;

use super::quantity;
use super::Errors;

const IMMUTABLE: &str = "spec is immutable after creation except resources.requests and \
                         volumeAttributesClassName for bound claims";

/// The claim's storage request (or status capacity, under `/status/capacity`), in bytes.
fn storage(obj: &Value, pointer: &str) -> Option<f64> {
    obj.pointer(pointer).and_then(Value::as_str).and_then(quantity::parse)
}

fn is_bound(claim: &Value) -> bool {
    claim.pointer("/status/phase").and_then(Value::as_str) == Some("Bound")
}

fn is_unset(spec: &Value, field: &str) -> bool {
    spec.get(field).is_none_or(|v| v.is_null() || v.as_str() == Some(""))
}

pub fn validate_update(old: &Value, new: &Value, errs: &mut Errors) {
    let mut old_spec = old.get("spec").cloned().unwrap_or(Value::Null);
    let mut new_spec = new.get("spec").cloned().unwrap_or(Value::Null);
    // What may change, made equal before comparing the rest.
    if is_unset(&old_spec, "volumeName") {
        copy(&new_spec, &mut old_spec, "volumeName");
    }
    let old_class = old_spec.get("storageClassName");
    if old_class.is_none_or(Value::is_null) && !is_unset(&new_spec, "storageClassName") {
        copy(&new_spec, &mut old_spec, "storageClassName");
    }
    if is_bound(new) || is_bound(old) {
        let requests = old_spec.pointer("/resources/requests/storage").cloned();
        if let Some(slot) = new_spec.pointer_mut("/resources/requests/storage") {
            *slot = requests.unwrap_or(Value::Null);
        }
    }
    if old_spec != new_spec {
        errs.forbidden("spec", IMMUTABLE);
        return;
    }
    let (Some(before), Some(after)) = (
        storage(old, "/spec/resources/requests/storage"),
        storage(new, "/spec/resources/requests/storage"),
    ) else {
        return;
    };
    if after < before {
        let capacity = storage(old, "/status/capacity/storage").unwrap_or(0.0);
        if after <= capacity {
            errs.forbidden(
                "spec.resources.requests.storage",
                "field can not be less than status.capacity",
            );
        }
    }
}

fn copy(from: &Value, to: &mut Value, field: &str) {
    if let (Some(value), Some(to)) = (from.get(field), to.as_object_mut()) {
        to.insert(field.to_string(), value.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claim(storage: &str, phase: &str, capacity: Option<&str>) -> Value {
        let mut claim = json!({"spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "fast",
                               "resources": {"requests": {"storage": storage}}},
                               "status": {"phase": phase}});
        if let Some(capacity) = capacity {
            claim["status"]["capacity"] = json!({"storage": capacity});
        }
        claim
    }

    fn errors(old: &Value, new: &Value) -> Vec<(String, String, String)> {
        let mut errs = Errors::default();
        validate_update(old, new, &mut errs);
        errs.triples()
    }

    #[test]
    fn a_bound_claim_may_grow_but_not_shrink_to_its_capacity() {
        let old = claim("1Gi", "Bound", Some("1Gi"));
        assert!(errors(&old, &claim("2Gi", "Bound", Some("1Gi"))).is_empty());
        let shrunk = errors(&old, &claim("500Mi", "Bound", Some("1Gi")));
        assert_eq!(shrunk.len(), 1, "{shrunk:?}");
        assert!(format!("{shrunk:?}").contains("field can not be less than status.capacity"));
        // Recovering from a failed expansion: back down, but above the capacity.
        let failed = claim("4Gi", "Bound", Some("1Gi"));
        assert!(errors(&failed, &claim("2Gi", "Bound", Some("1Gi"))).is_empty());
    }

    #[test]
    fn an_unbound_claim_is_immutable_but_may_be_bound_and_classed() {
        let old = claim("1Gi", "Pending", None);
        let grown = errors(&old, &claim("2Gi", "Pending", None));
        assert!(format!("{grown:?}").contains("spec is immutable after creation"), "{grown:?}");
        let mut bound = claim("1Gi", "Pending", None);
        bound["spec"]["volumeName"] = json!("pv-1");
        assert!(errors(&old, &bound).is_empty());
        let mut unclassed = claim("1Gi", "Pending", None);
        unclassed["spec"].as_object_mut().map(|s| s.remove("storageClassName"));
        assert!(errors(&unclassed, &old).is_empty());
        let mut modes = claim("1Gi", "Pending", None);
        modes["spec"]["accessModes"] = json!(["ReadWriteMany"]);
        assert!(!errors(&old, &modes).is_empty());
    }
}
