//! API errors and their wire form, the `meta/v1` `Status` object. Every failure the server sends
//! is one of these, with the reason and HTTP code the reference apiserver uses for the same case,
//! so clients (kubectl, client-go, the Python client) react the same way.

use serde_json::{json, Value};

use super::resource::ResourceInfo;
use crate::store::StoreError;

pub use super::validation::StatusCause as Cause;

/// An API error: a `Status` with `status: Failure`.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// HTTP status code, also `Status.code`.
    pub code: u16,
    /// `Status.reason`, e.g. `NotFound`.
    pub reason: &'static str,
    pub message: String,
    /// `Status.details`, when the error names an object.
    pub details: Option<Value>,
    /// Seconds for a `Retry-After` header (429, 504).
    pub retry_after: Option<u64>,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.reason, self.code, self.message)
    }
}

impl std::error::Error for ApiError {}

/// Result of an API operation.
pub type ApiResult<T> = Result<T, ApiError>;

fn details(info: &ResourceInfo, name: &str, kind: &str) -> Value {
    json!({ "name": name, "group": info.group, "kind": kind })
}

/// `pods` or `deployments.apps`: how the reference names a resource in messages.
pub fn qualified_resource(info: &ResourceInfo) -> String {
    if info.group.is_empty() {
        info.plural.clone()
    } else {
        format!("{}.{}", info.plural, info.group)
    }
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { code, reason, message: message.into(), details: None, retry_after: None }
    }

    /// 400 BadRequest.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        Self::new(400, "BadRequest", message)
    }

    /// 401 Unauthorized.
    pub fn unauthorized() -> ApiError {
        Self::new(401, "Unauthorized", "Unauthorized")
    }

    /// 404 NotFound for an object.
    pub fn not_found(info: &ResourceInfo, name: &str) -> ApiError {
        let resource = qualified_resource(info);
        ApiError {
            details: Some(details(info, name, &info.plural)),
            ..Self::new(404, "NotFound", format!("{resource} \"{name}\" not found"))
        }
    }

    /// 404 NotFound for a path that serves nothing.
    pub fn path_not_found() -> ApiError {
        Self::new(404, "NotFound", "the server could not find the requested resource")
    }

    /// 405 MethodNotAllowed.
    pub fn method_not_supported(info: Option<&ResourceInfo>, verb: &str) -> ApiError {
        let what = info.map(qualified_resource).unwrap_or_else(|| "this resource".into());
        Self::new(
            405,
            "MethodNotAllowed",
            format!("{verb} is not supported on resources of kind \"{what}\""),
        )
    }

    /// 406 NotAcceptable.
    /// 406 NotAcceptable, worded as the reference's (custom resources list protobuf too: their
    /// handler has the serializer, for Tables, though plain objects are never sent in it).
    pub fn not_acceptable() -> ApiError {
        Self::new(
            406,
            "NotAcceptable",
            "only the following media types are accepted: application/json, application/yaml, application/vnd.kubernetes.protobuf",
        )
    }

    /// 409 AlreadyExists.
    pub fn already_exists(info: &ResourceInfo, name: &str) -> ApiError {
        let resource = qualified_resource(info);
        ApiError {
            details: Some(details(info, name, &info.plural)),
            ..Self::new(409, "AlreadyExists", format!("{resource} \"{name}\" already exists"))
        }
    }

    /// 409 Conflict (stale resourceVersion, or another conflicting state).
    pub fn conflict(info: &ResourceInfo, name: &str, why: &str) -> ApiError {
        let resource = qualified_resource(info);
        ApiError {
            details: Some(details(info, name, &info.plural)),
            ..Self::new(
                409,
                "Conflict",
                format!("Operation cannot be fulfilled on {resource} \"{name}\": {why}"),
            )
        }
    }

    /// The message of a stale-update conflict.
    pub const MODIFIED: &'static str =
        "the object has been modified; please apply your changes to the latest version and try again";

    /// 410 Gone (expired resourceVersion or continue token).
    pub fn gone(message: impl Into<String>) -> ApiError {
        Self::new(410, "Expired", message)
    }

    /// 413 RequestEntityTooLarge.
    pub fn too_large(limit: usize) -> ApiError {
        Self::new(
            413,
            "RequestEntityTooLarge",
            format!("Request entity too large: limit is {limit}"),
        )
    }

    /// 415 UnsupportedMediaType.
    pub fn unsupported_media_type(content_type: &str) -> ApiError {
        Self::new(415, "UnsupportedMediaType", format!("the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/json-patch+json, application/merge-patch+json (got {content_type})"))
    }

    /// 422 Invalid with field causes.
    pub fn invalid(info: &ResourceInfo, name: &str, causes: Vec<Cause>) -> ApiError {
        let summary: Vec<String> = causes
            .iter()
            .map(|c| {
                if c.field.is_empty() {
                    c.message.clone()
                } else {
                    format!("{}: {}", c.field, c.message)
                }
            })
            .collect();
        let mut d = details(info, name, &info.kind);
        d["causes"] = causes
            .iter()
            .map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field}))
            .collect();
        let message = match summary.len() {
            1 => format!("{} \"{name}\" is invalid: {}", info.kind, summary[0]),
            _ => format!("{} \"{name}\" is invalid: [{}]", info.kind, summary.join(", ")),
        };
        ApiError { details: Some(d), ..Self::new(422, "Invalid", message) }
    }

    /// 403 Forbidden (admission refusals such as a terminating namespace).
    pub fn forbidden(info: &ResourceInfo, name: &str, why: &str) -> ApiError {
        let resource = qualified_resource(info);
        ApiError {
            details: Some(details(info, name, &info.plural)),
            ..Self::new(403, "Forbidden", format!("{resource} \"{name}\" is forbidden: {why}"))
        }
    }

    /// 429 TooManyRequests with Retry-After.
    pub fn too_many_requests() -> ApiError {
        ApiError {
            retry_after: Some(1),
            ..Self::new(429, "TooManyRequests", "Too many requests, please try again later.")
        }
    }

    /// 500 InternalError.
    pub fn internal(message: impl Into<String>) -> ApiError {
        Self::new(500, "InternalError", format!("Internal error occurred: {}", message.into()))
    }

    /// 503 ServiceUnavailable.
    pub fn unavailable(message: impl Into<String>) -> ApiError {
        Self::new(503, "ServiceUnavailable", message)
    }

    /// 504 Timeout, e.g. a resourceVersion the cache has not reached.
    pub fn timeout(message: impl Into<String>) -> ApiError {
        ApiError { retry_after: Some(1), ..Self::new(504, "Timeout", message) }
    }

    /// The `Status` object.
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(details) = &self.details {
            status["details"] = details.clone();
        }
        if let Some(seconds) = self.retry_after {
            let details = status.as_object_mut().and_then(|s| {
                s.entry("details").or_insert_with(|| json!({})).as_object_mut().map(|d| {
                    d.insert("retryAfterSeconds".into(), json!(seconds));
                })
            });
            debug_assert!(details.is_some());
        }
        status
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> ApiError {
        match err {
            StoreError::Compacted { .. } => {
                ApiError::gone("The resourceVersion for the provided list is too old.".to_string())
            }
            StoreError::FutureRevision => {
                ApiError::timeout("Too large resource version".to_string())
            }
            StoreError::Unavailable(msg) => {
                ApiError::unavailable(format!("store unavailable: {msg}"))
            }
            other => ApiError::internal(other.to_string()),
        }
    }
}

/// A `Status` with `status: Success` (deletes that do not return the object).
pub fn success_status(info: &ResourceInfo, name: &str, uid: &str) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": { "name": name, "group": info.group, "kind": info.plural, "uid": uid },
    })
}
