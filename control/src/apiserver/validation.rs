//! Validation of objects with the reference apiserver's rules.

use serde_json::Value;

use super::resource::ResourceInfo;

/// One reason an object is invalid, as in a Status's `details.causes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusCause {
    /// e.g. `FieldValueRequired`.
    pub reason: String,
    /// Human-readable message.
    pub message: String,
    /// Field path, e.g. `spec.containers[0].image`.
    pub field: String,
}

/// Validates a new object.
pub fn validate_create(_info: &ResourceInfo, _obj: &Value) -> Result<(), Vec<StatusCause>> {
    Ok(())
}

/// Validates an update of `old` to `new`.
pub fn validate_update(
    _info: &ResourceInfo,
    _old: &Value,
    _new: &Value,
) -> Result<(), Vec<StatusCause>> {
    Ok(())
}

/// Validates a custom object against a CRD's structural schema.
pub fn validate_custom(_schema: &Value, _obj: &Value) -> Result<(), Vec<StatusCause>> {
    Ok(())
}
