//! The `authentication.k8s.io/v1` reviews, answered and not stored:
//!
//! - TokenReview: runs `spec.token` through the same bearer token authenticators as a request
//!   (static tokens, service account tokens, bootstrap tokens) for `spec.audiences` (default: the
//!   API audiences) and reports `status.authenticated`, `user`, `audiences` and `error`. The
//!   audience-agnostic authenticators only answer when the wanted audiences include an API
//!   audience, as the reference's wrapper does.
//! - SelfSubjectReview (`kubectl auth whoami`): the caller's own user.

use http::StatusCode;
use serde_json::{json, Value};

use super::authenticator;
use crate::apiserver::authn::User;
use crate::apiserver::body;
use crate::apiserver::rest::decode_body;
use crate::apiserver::server::{ApiServer, Call, Reply};
use crate::apiserver::status::{ApiError, ApiResult};

/// The API group of both reviews.
const GROUP: &str = "authentication.k8s.io";

/// Whether `call` creates one of the reviews this module answers.
pub(crate) fn handles(call: &Call) -> bool {
    call.info.group == GROUP
        && matches!(call.info.kind.as_str(), "TokenReview" | "SelfSubjectReview")
        && call.path.subresource.is_none()
}

/// Answers a TokenReview or SelfSubjectReview create.
pub(crate) async fn create(server: &ApiServer, call: Call) -> ApiResult<Reply> {
    if call.path.name.is_some() {
        return Err(ApiError::method_not_supported(Some(&call.info), "POST"));
    }
    let mut review = decode_body(&call, None)?;
    let status = if call.info.kind == "TokenReview" {
        token_review(server, &review).await?
    } else {
        json!({ "userInfo": user_info(&call.user) })
    };
    if !review.get("metadata").is_some_and(Value::is_object) {
        review["metadata"] = json!({});
    }
    review["metadata"]["creationTimestamp"] = Value::Null;
    review["status"] = status;
    Ok(body::object_response(StatusCode::CREATED, &review, call.output).into())
}

/// `UserInfo` as the reviews spell it (empty fields omitted, as Go's `omitempty`).
pub fn user_info(user: &User) -> Value {
    let mut info = json!({ "username": user.name });
    if !user.uid.is_empty() {
        info["uid"] = json!(user.uid);
    }
    if !user.groups.is_empty() {
        info["groups"] = json!(user.groups);
    }
    if !user.extra.is_empty() {
        info["extra"] = json!(user.extra);
    }
    info
}

async fn token_review(server: &ApiServer, review: &Value) -> ApiResult<Value> {
    let token = review.pointer("/spec/token").and_then(Value::as_str).unwrap_or_default();
    if token.is_empty() {
        return Err(ApiError::bad_request("token is required for TokenReview in authentication"));
    }
    let api_audiences = &server.inner.service_accounts.audiences;
    let wanted: Vec<String> = review
        .pointer("/spec/audiences")
        .and_then(Value::as_array)
        .map(|list| list.iter().filter_map(Value::as_str).map(String::from).collect())
        .filter(|list: &Vec<String>| !list.is_empty())
        .unwrap_or_else(|| api_audiences.clone());
    let (user, audiences, error) = authenticate(server, token, &wanted).await;
    let mut status = json!({});
    match user {
        Some(user) => {
            status["authenticated"] = json!(true);
            status["user"] = user_info(&user);
            status["audiences"] = json!(audiences);
        }
        None => status["error"] = json!(error.unwrap_or_else(|| "invalid bearer token".into())),
    }
    Ok(status)
}

/// The bearer token authenticators in the request path's order, for `wanted` audiences:
/// (user, audiences, error).
async fn authenticate(
    server: &ApiServer,
    token: &str,
    wanted: &[String],
) -> (Option<User>, Vec<String>, Option<String>) {
    let api_audiences = &server.inner.service_accounts.audiences;
    let agnostic: Vec<String> =
        api_audiences.iter().filter(|a| wanted.contains(a)).cloned().collect();
    if !agnostic.is_empty() {
        if let Some(user) = server.inner.tokens.authenticate(token) {
            return (Some(user), agnostic, None);
        }
    }
    let mut error = None;
    if authenticator::looks_like_jwt(token) {
        match authenticator::authenticate(server, token, wanted).await {
            Ok(Some(found)) => return (Some(found.user), found.audiences, None),
            Ok(None) => {}
            Err(message) => error = Some(message),
        }
    }
    if !agnostic.is_empty() {
        if let Some(user) = crate::apiserver::bootstrap_token::authenticate(server, token).await {
            return (Some(user), agnostic, None);
        }
    }
    (None, Vec::new(), error)
}
