//! Validation of objects with the reference apiserver's rules and error shapes: each problem is
//! a [`StatusCause`] with the reference reason (`FieldValueRequired`, `FieldValueInvalid`, ...),
//! the reference message body (`Required value`, `Invalid value: "x": <detail>`) and the field
//! path (`spec.containers[0].image`), so a 422 reads exactly like the reference's.
//!
//! [`meta`] checks names, generateName, labels, annotations and the immutable metadata;
//! [`pod`] pod specs and pod updates; [`kinds`] the per-kind rules (workloads, services,
//! configmaps, secrets, RBAC, CRDs, ...); [`schema`] custom objects against their CRD's
//! structural schema. Objects are plain JSON from users, so every check copes with any shape.

mod errors;
mod kinds;
mod meta;
mod names;
mod pod;
mod quantity;
mod schema;
mod workloads;

use serde_json::Value;

use super::resource::ResourceInfo;
pub use errors::Errors;

/// One reason an object is invalid, as in a Status's `details.causes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusCause {
    /// e.g. `FieldValueRequired`.
    pub reason: String,
    /// The reference's message body, e.g. `Required value` or `Invalid value: "A": ...`.
    pub message: String,
    /// Field path, e.g. `spec.containers[0].image`.
    pub field: String,
}

/// Validates a new object.
pub fn validate_create(info: &ResourceInfo, obj: &Value) -> Result<(), Vec<StatusCause>> {
    let mut errs = Errors::default();
    meta::validate_create(info, obj, &mut errs);
    if info.custom {
        if let Some(schema) = &info.schema {
            schema::validate(schema, obj, &mut errs);
        }
    } else {
        kinds::validate(info, obj, &mut errs);
    }
    errs.into_result()
}

/// Validates an update of `old` to `new`: the new object on its own, then what may not change.
pub fn validate_update(
    info: &ResourceInfo,
    old: &Value,
    new: &Value,
) -> Result<(), Vec<StatusCause>> {
    let mut errs = Errors::default();
    meta::validate_update(info, old, new, &mut errs);
    if info.custom {
        if let Some(schema) = &info.schema {
            schema::validate(schema, new, &mut errs);
        }
    } else {
        kinds::validate(info, new, &mut errs);
        kinds::validate_update(info, old, new, &mut errs);
    }
    errs.into_result()
}

/// Validates a custom object against a CRD's structural schema (`openAPIV3Schema`).
pub fn validate_custom(schema: &Value, obj: &Value) -> Result<(), Vec<StatusCause>> {
    let mut errs = Errors::default();
    schema::validate(schema, obj, &mut errs);
    errs.into_result()
}
