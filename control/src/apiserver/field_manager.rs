//! The REST layer's side of field ownership: who a write's field manager is (the `fieldManager`
//! parameter, else the User-Agent's product name, as the reference does), and the calls into the
//! pure functions of [`super::patch::apply`] — `metadata.managedFields` bookkeeping for every
//! create, update and patch, and server-side apply (`application/apply-patch+yaml`).

use serde_json::Value;

use super::patch::apply::{self, ApplyError, Manager};
use super::patch::Schema;
use super::server::Call;
use super::status::{ApiError, ApiResult};

/// The reference's limit on a field manager's name.
const MAX_MANAGER_LEN: usize = 128;

/// The writer of one request, as recorded in `metadata.managedFields`.
pub(crate) struct Writer {
    name: String,
    api_version: String,
    subresource: Option<String>,
    time: String,
    schema: Schema,
}

impl Writer {
    /// The writer of `call`: 422 for a malformed `fieldManager`, or one missing on an apply,
    /// or a `force` on a patch that is not an apply (the reference's PatchOptions validation).
    pub fn of(call: &Call, applying: bool) -> ApiResult<Writer> {
        let given = call.query.get("fieldManager").filter(|m| !m.is_empty());
        if let Some(name) = given {
            if name.chars().count() > MAX_MANAGER_LEN {
                return Err(options_invalid(
                    "fieldManager",
                    "FieldValueTooLong",
                    "Too long: may not be more than 128 bytes",
                ));
            }
            if name.chars().any(char::is_control) {
                return Err(options_invalid(
                    "fieldManager",
                    "FieldValueInvalid",
                    "Invalid value: must only contain printable characters",
                ));
            }
        }
        if applying && given.is_none() {
            return Err(options_invalid(
                "fieldManager",
                "FieldValueRequired",
                "Required value: is required for apply patch",
            ));
        }
        if !applying && call.method == http::Method::PATCH && call.query.flag("force") {
            return Err(options_invalid(
                "force",
                "FieldValueForbidden",
                "Forbidden: may not be specified for non-apply patch",
            ));
        }
        let name = match given {
            Some(name) => name.to_string(),
            None => default_manager(call),
        };
        Ok(Writer {
            name,
            api_version: call.info.api_version(),
            subresource: call.path.subresource.clone(),
            time: super::meta::now_rfc3339(),
            schema: Schema::for_kind(&call.info.group, &call.info.kind),
        })
    }

    fn manager(&self) -> Manager<'_> {
        Manager {
            name: &self.name,
            api_version: &self.api_version,
            subresource: self.subresource.as_deref(),
            time: &self.time,
            schema: self.schema,
        }
    }

    /// Sets `new.metadata.managedFields` after the server reset its metadata: the `sent` entries
    /// (what an apply computed, or what the client sent to hand ownership over), then, unless
    /// this was an apply, this writer's `Update` of `new` over `old` (`None`: created it).
    pub fn track(
        &self,
        old: Option<&Value>,
        sent: Option<Value>,
        new: &mut Value,
        applied: bool,
    ) -> ApiResult<()> {
        if let Some(entries) = sent {
            super::meta::set_meta(new, "managedFields", entries);
        }
        if applied {
            return Ok(());
        }
        apply::record_update(old, new, &self.manager()).map_err(apply_error)
    }

    /// Server-side apply of `applied` over `live` (`None`: the apply creates the object).
    pub fn apply(&self, live: Option<&Value>, applied: &Value, force: bool) -> ApiResult<Value> {
        apply::server_side_apply_upgrading(live, applied, &self.manager(), force)
            .map_err(apply_error)
    }
}

/// The reference's default manager: the User-Agent up to its first `/` (`kubectl`,
/// `OpenAPI-Generator`), truncated to the length limit.
fn default_manager(call: &Call) -> String {
    let agent = call.headers.get(http::header::USER_AGENT).and_then(|v| v.to_str().ok());
    let product = agent.unwrap_or("").split('/').next().unwrap_or("");
    product.chars().filter(|c| !c.is_control()).take(MAX_MANAGER_LEN).collect()
}

/// 422 on the request's options, as the reference words it (`PatchOptions.meta.k8s.io "" is
/// invalid: fieldManager: Required value: …`).
fn options_invalid(field: &str, reason: &str, message: &str) -> ApiError {
    ApiError {
        code: 422,
        reason: "Invalid",
        message: format!("PatchOptions.meta.k8s.io \"\" is invalid: {field}: {message}"),
        details: Some(serde_json::json!({
            "group": "meta.k8s.io",
            "kind": "PatchOptions",
            "causes": [{"reason": reason, "message": message, "field": field}],
        })),
        retry_after: None,
    }
}

/// Conflicts are 409 with one `FieldManagerConflict` cause per field; a configuration whose
/// lists break their keys is 422.
fn apply_error(err: ApplyError) -> ApiError {
    let message = err.to_string();
    match err {
        ApplyError::Conflicts(conflicts) => ApiError {
            code: 409,
            reason: "Conflict",
            details: Some(serde_json::json!({
                "causes": conflicts
                    .iter()
                    .map(|c| serde_json::json!({
                        "reason": "FieldManagerConflict",
                        "message": c.cause_message(),
                        "field": c.field,
                    }))
                    .collect::<Vec<_>>(),
            })),
            message,
            retry_after: None,
        },
        ApplyError::Invalid(_) => {
            ApiError { code: 422, reason: "Invalid", message, details: None, retry_after: None }
        }
    }
}
