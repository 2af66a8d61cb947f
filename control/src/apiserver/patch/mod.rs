//! Patch and apply logic of the API server: JSON merge patch (RFC 7386, [`merge`]), strategic
//! merge patch ([`strategic`]) driven by the built-in types' patch metadata ([`schema`]), and
//! server-side apply with its managedFields bookkeeping ([`fieldset`], [`apply`]). Everything
//! here is a pure function over `serde_json::Value`: no I/O, no clock, no store, and no panic on
//! any JSON shape, since patches come from users. The REST layer picks the function from the
//! request's Content-Type and maps the typed errors to HTTP statuses.

pub mod apply;
pub mod fieldset;
pub mod merge;
pub mod schema;
pub mod strategic;

pub use schema::Schema;

/// The reference apiserver's answer (415 UnsupportedMediaType) to a strategic merge patch on a
/// custom resource: it does not fall back; clients (kubectl) send a merge patch instead.
pub const CUSTOM_RESOURCE_SMP_UNSUPPORTED: &str = "the body of the request was in an unknown \
    format - accepted media types include: application/json-patch+json, \
    application/merge-patch+json, application/apply-patch+yaml";

/// Why a strategic merge patch could not be applied (a client error: see [`PatchError::status_code`]).
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
    MissingMergeKey {
        /// The element, as JSON.
        element: String,
        /// The list's merge key.
        key: String,
    },
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

impl PatchError {
    /// The HTTP status the reference gives (its `interpretStrategicMergePatchError`): 422 for a
    /// list of lists, 400 for malformed directives. The reference answers 500 to a bad `$patch`
    /// value or a missing merge key; those are the client's fault, so they are 400 here.
    pub fn status_code(&self) -> u16 {
        match self {
            PatchError::MixedList(_) => 422,
            _ => 400,
        }
    }
}
