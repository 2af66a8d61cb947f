//! The reference's `field.Error` kinds, rendered as [`StatusCause`]s with its reason strings and
//! message bodies (`field.Error.ErrorBody`).

use serde_json::Value;

use super::StatusCause;

/// Accumulated validation errors.
#[derive(Debug, Default)]
pub struct Errors {
    causes: Vec<StatusCause>,
}

/// A bad value as the reference prints it: strings quoted, numbers and booleans bare, anything
/// else as compact JSON.
pub fn show(value: &Value) -> String {
    match value {
        Value::String(s) => format!("{s:?}"),
        Value::Null => "\"null\"".to_string(),
        other => other.to_string(),
    }
}

impl Errors {
    fn push(&mut self, reason: &str, field: &str, message: String) {
        self.causes.push(StatusCause {
            reason: reason.to_string(),
            message,
            field: field.to_string(),
        });
    }

    /// `Required value[: detail]`.
    pub fn required(&mut self, field: &str, detail: &str) {
        let message = with_detail("Required value".to_string(), detail);
        self.push("FieldValueRequired", field, message);
    }

    /// `Invalid value: <value>: detail`.
    pub fn invalid(&mut self, field: &str, value: &Value, detail: &str) {
        let message = with_detail(format!("Invalid value: {}", show(value)), detail);
        self.push("FieldValueInvalid", field, message);
    }

    /// `Invalid value: detail`, for a bad value the reference leaves out (`field.OmitValueType`).
    pub fn invalid_omitted(&mut self, field: &str, detail: &str) {
        self.push("FieldValueInvalid", field, with_detail("Invalid value".to_string(), detail));
    }

    /// [`Errors::invalid`] for a string value.
    pub fn invalid_str(&mut self, field: &str, value: &str, detail: &str) {
        self.invalid(field, &Value::String(value.to_string()), detail);
    }

    /// `Invalid value: <value>: field is immutable`.
    pub fn immutable(&mut self, field: &str, value: &Value) {
        self.invalid(field, value, "field is immutable");
    }

    /// `Duplicate value: <value>`.
    pub fn duplicate(&mut self, field: &str, value: &Value) {
        self.push("FieldValueDuplicate", field, format!("Duplicate value: {}", show(value)));
    }

    /// `Unsupported value: <value>: supported values: "a", "b"`.
    pub fn not_supported(&mut self, field: &str, value: &Value, supported: &[&str]) {
        let list: Vec<String> = supported.iter().map(|s| format!("{s:?}")).collect();
        let detail = format!("supported values: {}", list.join(", "));
        let message = with_detail(format!("Unsupported value: {}", show(value)), &detail);
        self.push("FieldValueNotSupported", field, message);
    }

    /// `Forbidden: detail`.
    pub fn forbidden(&mut self, field: &str, detail: &str) {
        self.push("FieldValueForbidden", field, with_detail("Forbidden".to_string(), detail));
    }

    /// `Not found: <value>`.
    pub fn not_found(&mut self, field: &str, value: &Value) {
        self.push("FieldValueNotFound", field, format!("Not found: {}", show(value)));
    }

    /// `Too long: may not be more than N bytes`.
    pub fn too_long(&mut self, field: &str, max: usize) {
        let unit = if max == 1 { "byte" } else { "bytes" };
        self.push(
            "FieldValueTooLong",
            field,
            format!("Too long: may not be more than {max} {unit}"),
        );
    }

    /// `Too many: N: must have at most M items`.
    pub fn too_many(&mut self, field: &str, actual: usize, max: usize) {
        let message = format!("Too many: {actual}: must have at most {max} items");
        self.push("FieldValueTooMany", field, message);
    }

    /// `Invalid value: <value>: <type> expected`-style type errors of custom schemas.
    pub fn type_invalid(&mut self, field: &str, value: &Value, detail: &str) {
        let message = with_detail(format!("Invalid value: {}", show(value)), detail);
        self.push("FieldValueTypeInvalid", field, message);
    }

    /// True when nothing was reported.
    pub fn is_empty(&self) -> bool {
        self.causes.is_empty()
    }

    /// `Ok` when nothing was reported, else every cause in report order.
    pub fn into_result(self) -> Result<(), Vec<StatusCause>> {
        if self.causes.is_empty() {
            Ok(())
        } else {
            Err(self.causes)
        }
    }

    /// Every cause as `(reason, field, message)`, for tests to compare against the reference.
    #[cfg(test)]
    pub fn triples(self) -> Vec<(String, String, String)> {
        self.causes.into_iter().map(|c| (c.reason, c.field, c.message)).collect()
    }
}

fn with_detail(body: String, detail: &str) -> String {
    if detail.is_empty() {
        body
    } else {
        format!("{body}: {detail}")
    }
}
