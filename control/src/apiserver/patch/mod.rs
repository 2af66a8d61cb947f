//! Patch and apply logic of the API server: JSON merge patch (RFC 7386), strategic merge patch
//! and the field-ownership bookkeeping of server-side apply. Everything here is a pure function
//! over `serde_json::Value`: no I/O, no store, no panics on user input.

pub mod schema;
pub mod merge;
pub mod strategic;

pub use schema::Schema;

/// Why a strategic merge patch could not be applied; every variant is the client's fault (400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatchError {
    /// The patch (or the object) is not a JSON object.
    #[error("strategic merge patch must be a JSON object")]
    NotAnObject,
    /// `$patch` has a value other than `replace` or `delete` (`merge` inside a list).
    #[error("unknown patch type: {0}")]
    BadDirective(String),
    /// A list element lacks the merge key of its list.
    #[error("map: {element} does not contain declared merge key: {key}")]
    MissingMergeKey { element: String, key: String },
    /// A list with merge strategy holds elements that are not all maps or not all scalars.
    #[error("list {0}: elements are not all of one type, or are lists")]
    MixedList(String),
    /// `$retainKeys` is not a list, or the patch sets a field it does not retain.
    #[error("doesn't match the expected format of retainKeys: {0}")]
    BadRetainKeys(String),
    /// `$setElementOrder/<field>` is not a list, disagrees with the patch list, or names a
    /// field that is not a list.
    #[error("invalid $setElementOrder for {0}")]
    BadSetElementOrder(String),
}
