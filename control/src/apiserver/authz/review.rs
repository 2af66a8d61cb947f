//! `authorization.k8s.io/v1`: asking the authorizer a question. Create-only, never stored:
//!
//! - `SelfSubjectAccessReview` — may I do this? (`kubectl auth can-i`)
//! - `SubjectAccessReview` — may this user (and groups) do this?
//! - `LocalSubjectAccessReview` — the same, for a resource in the URL's namespace
//! - `SelfSubjectRulesReview` — what may I do in this namespace? (`kubectl auth can-i --list`)
//!
//! The answers come from the same chain the server enforces ([`super::authorize`]), so
//! `can-i` and the real request always agree.

use http::StatusCode;
use serde_json::{json, Map, Value};

use super::{authorize, rules::PolicyRule, Attributes, Decision};
use crate::apiserver::authn::User;
use crate::apiserver::body;
use crate::apiserver::server::{ApiServer, Call, Reply};
use crate::apiserver::status::{ApiError, ApiResult, Cause};

/// The API group of the reviews.
pub const GROUP: &str = "authorization.k8s.io";

/// Whether a create is one of the reviews.
pub(crate) fn handles(call: &Call) -> bool {
    call.info.group == GROUP && call.path.subresource.is_none() && !call.info.custom
}

fn text(obj: &Value, key: &str) -> String {
    obj.get(key).and_then(Value::as_str).unwrap_or("").to_string()
}

fn invalid(call: &Call, field: &str, message: String) -> ApiError {
    let cause = Cause { reason: "FieldValueInvalid".into(), message, field: field.into() };
    ApiError::invalid(&call.info, "", vec![cause])
}

/// The attributes a review's spec asks about, for `user`.
fn spec_attributes(call: &Call, spec: &Value, user: &User) -> ApiResult<Attributes> {
    match (spec.get("resourceAttributes"), spec.get("nonResourceAttributes")) {
        (Some(r), Some(n)) if !r.is_null() && !n.is_null() => Err(invalid(
            call,
            "spec.nonResourceAttributes",
            "Invalid value: \"null\": cannot be specified in combination with resourceAttributes"
                .into(),
        )),
        (Some(r), _) if r.is_object() => {
            let mut attrs = Attributes::resource(user, &text(r, "verb"), &text(r, "group"), &text(r, "resource"));
            attrs.version = text(r, "version");
            attrs.subresource = text(r, "subresource");
            attrs.namespace = text(r, "namespace");
            attrs.name = text(r, "name");
            Ok(attrs)
        }
        (_, Some(n)) if n.is_object() => {
            Ok(Attributes::non_resource(user, &text(n, "verb"), &text(n, "path")))
        }
        _ => Err(invalid(
            call,
            "spec.resourceAttributes",
            "Invalid value: \"null\": exactly one of nonResourceAttributes or resourceAttributes must be specified"
                .into(),
        )),
    }
}

/// The user a SubjectAccessReview names.
fn spec_user(call: &Call, spec: &Value) -> ApiResult<User> {
    let name = text(spec, "user");
    let groups: Vec<String> = spec
        .get("groups")
        .and_then(Value::as_array)
        .map(|g| g.iter().filter_map(Value::as_str).map(String::from).collect())
        .unwrap_or_default();
    if name.is_empty() && groups.is_empty() {
        return Err(invalid(
            call,
            "spec.user",
            "Invalid value: \"\": at least one of user or group must be specified".into(),
        ));
    }
    // Exactly the groups asked about: `system:authenticated` is not implied.
    let mut user = User::new(name, Vec::new());
    user.groups = groups;
    user.uid = text(spec, "uid");
    if let Some(extra) = spec.get("extra").and_then(Value::as_object) {
        for (key, values) in extra {
            let values = values
                .as_array()
                .map(|v| v.iter().filter_map(Value::as_str).map(String::from).collect())
                .unwrap_or_default();
            user.extra.insert(key.clone(), values);
        }
    }
    Ok(user)
}

/// `status` of an access review.
fn access_status(decision: Decision) -> Value {
    let mut status = Map::new();
    let (allowed, denied, reason) = match decision {
        Decision::Allow(reason) => (true, false, reason),
        Decision::Deny(reason) => (false, true, reason),
        Decision::NoOpinion => (false, false, String::new()),
    };
    status.insert("allowed".into(), json!(allowed));
    if denied {
        status.insert("denied".into(), json!(true));
    }
    if !reason.is_empty() {
        status.insert("reason".into(), json!(reason));
    }
    Value::Object(status)
}

/// `status` of a rules review: the rules RBAC grants `user` in `namespace`.
async fn rules_status(server: &ApiServer, user: &User, namespace: &str) -> Value {
    server.inner.authz.catch_up(server).await;
    let rules = server.inner.authz.current(server).rules_for(user, namespace);
    let mut resource_rules = Vec::new();
    let mut non_resource_rules = Vec::new();
    for rule in rules {
        if !rule.resources.is_empty() {
            let only = PolicyRule { non_resource_urls: Vec::new(), ..rule.clone() };
            resource_rules.push(only.to_json());
        }
        if !rule.non_resource_urls.is_empty() {
            non_resource_rules
                .push(json!({"verbs": rule.verbs, "nonResourceURLs": rule.non_resource_urls}));
        }
    }
    json!({
        "resourceRules": resource_rules,
        "nonResourceRules": non_resource_rules,
        "incomplete": false,
    })
}

/// `POST` of a review: the review back with its `status` filled in (201, like a create).
pub(crate) async fn create(server: &ApiServer, call: Call) -> ApiResult<Reply> {
    let mut review = crate::apiserver::rest::decode_body(&call, None)?;
    let spec = review.get("spec").cloned().unwrap_or_else(|| json!({}));
    let status = match call.info.kind.as_str() {
        "SelfSubjectAccessReview" => {
            let attrs = spec_attributes(&call, &spec, &call.user)?;
            access_status(authorize(server, &attrs).await)
        }
        "SubjectAccessReview" => {
            let user = spec_user(&call, &spec)?;
            let attrs = spec_attributes(&call, &spec, &user)?;
            access_status(authorize(server, &attrs).await)
        }
        "LocalSubjectAccessReview" => {
            let namespace = call.namespace().unwrap_or("").to_string();
            if namespace.is_empty() {
                return Err(ApiError::bad_request("namespace is required on this type: "));
            }
            if spec.get("nonResourceAttributes").is_some_and(|n| !n.is_null()) {
                return Err(invalid(
                    &call,
                    "spec.nonResourceAttributes",
                    "Invalid value: \"null\": disallowed on this kind of request".into(),
                ));
            }
            let user = spec_user(&call, &spec)?;
            let attrs = spec_attributes(&call, &spec, &user)?;
            if attrs.namespace != namespace {
                return Err(ApiError::bad_request(format!(
                    "spec.resourceAttributes.namespace must match namespace: {namespace}"
                )));
            }
            access_status(authorize(server, &attrs).await)
        }
        "SelfSubjectRulesReview" => {
            rules_status(server, &call.user, &text(&spec, "namespace")).await
        }
        _ => return Err(ApiError::method_not_supported(Some(&call.info), "POST")),
    };
    review["status"] = status;
    if !review.get("metadata").is_some_and(Value::is_object) {
        review["metadata"] = json!({});
    }
    review["metadata"]["creationTimestamp"] = Value::Null;
    Ok(body::object_response(StatusCode::CREATED, &review, call.output).into())
}
