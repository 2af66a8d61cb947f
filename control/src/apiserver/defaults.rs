//! Defaulting of built-in objects as the reference apiserver does it.

use serde_json::Value;

use super::resource::ResourceInfo;

/// Fills in the reference defaults of a built-in object in place.
pub fn apply(_info: &ResourceInfo, _obj: &mut Value) {}

/// Fills in the defaults a CRD's structural schema declares.
pub fn apply_custom(_schema: &Value, _obj: &mut Value) {}
