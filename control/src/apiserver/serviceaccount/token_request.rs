//! `POST …/serviceaccounts/<name>/token`: an `authentication.k8s.io/v1` TokenRequest, answered
//! (not stored) with a signed token in `status.token`, as the reference's TokenREST does:
//!
//! - `spec.audiences` defaults to the API audiences; `spec.expirationSeconds` to 3600, at least
//!   600 and at most 2³², capped by `--service-account-max-token-expiration` (with a warning);
//! - `spec.boundObjectRef` names a Pod, Secret (in the namespace) or Node that must exist, with
//!   the given uid when one is given; a pod must run as this service account. A pod-bound token
//!   also records the pod's node;
//! - a pod-bound request for exactly 3607 s with API audiences (what the admission's projected
//!   volume asks for) is extended to a year with `warnafter` at 3607 s, unless disabled: the
//!   reference's safe transition for clients that do not reload rotated tokens.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::StatusCode;
use serde_json::{json, Value};

use super::claims::{self, Claims, KubernetesClaims, ObjectRef};
use crate::apiserver::meta;
use crate::apiserver::rest::{self, decode_body};
use crate::apiserver::server::{ApiServer, Call, Reply};
use crate::apiserver::status::{ApiError, ApiResult, Cause};

/// `spec.expirationSeconds` when none is given.
pub const DEFAULT_EXPIRATION_SECONDS: i64 = 3600;
/// The shortest lifetime a token may be asked for.
pub const MIN_EXPIRATION_SECONDS: i64 = 600;
/// The lifetime that marks the admission's projected tokens (reference: `WarnOnlyBoundTokenExpirationSeconds`).
pub const WARN_ONLY_EXPIRATION_SECONDS: i64 = 3607;
/// What such tokens are extended to: one year.
pub const EXTENDED_EXPIRATION_SECONDS: i64 = 365 * 24 * 3600;

fn invalid(call: &Call, name: &str, field: &str, message: String) -> ApiError {
    let mut info = (*call.info).clone();
    info.kind = "TokenRequest".into();
    ApiError::invalid(
        &info,
        name,
        vec![Cause { reason: "FieldValueInvalid".into(), message, field: field.into() }],
    )
}

async fn get(
    server: &ApiServer,
    plural: &str,
    namespace: Option<&str>,
    name: &str,
) -> ApiResult<Value> {
    let info = server
        .inner
        .registry
        .resolve("", "v1", plural)
        .ok_or_else(|| ApiError::internal(format!("{plural} are not served")))?;
    let key = info.storage_key(namespace, name);
    let (obj, _) =
        rest::read(server, &key).await?.ok_or_else(|| ApiError::not_found(&info, name))?;
    Ok(obj)
}

fn object_ref(obj: &Value) -> ObjectRef {
    let field = |f: &str| meta::meta_str(obj, f).unwrap_or_default().to_string();
    ObjectRef { name: field("name"), uid: field("uid") }
}

/// The bound objects of a request: (pod, secret, node).
type Bound = (Option<ObjectRef>, Option<ObjectRef>, Option<ObjectRef>);

async fn bound_objects(
    server: &ApiServer,
    namespace: &str,
    account: &str,
    reference: &Value,
) -> ApiResult<Bound> {
    let api_version = reference["apiVersion"].as_str().unwrap_or_default();
    let kind = reference["kind"].as_str().unwrap_or_default();
    let name = reference["name"].as_str().unwrap_or_default();
    let group = api_version.rsplit_once('/').map(|(g, _)| g).unwrap_or_default();
    let (pod, secret, node, uid) = match (group, kind) {
        ("", "Pod") => {
            let pod = get(server, "pods", Some(namespace), name).await?;
            let runs_as = pod.pointer("/spec/serviceAccountName").and_then(Value::as_str);
            if runs_as != Some(account) {
                return Err(ApiError::bad_request(format!(
                    "cannot bind token for serviceaccount {account:?} to pod running with different serviceaccount name."
                )));
            }
            // The node is informational: a missing one does not stop the token (reference).
            let node_name = pod.pointer("/spec/nodeName").and_then(Value::as_str);
            let node = match node_name.filter(|n| !n.is_empty()) {
                Some(n) => get(server, "nodes", None, n).await.ok().map(|node| object_ref(&node)),
                None => None,
            };
            let pod = object_ref(&pod);
            let uid = pod.uid.clone();
            (Some(pod), None, node, uid)
        }
        ("", "Secret") => {
            let secret = object_ref(&get(server, "secrets", Some(namespace), name).await?);
            let uid = secret.uid.clone();
            (None, Some(secret), None, uid)
        }
        ("", "Node") => {
            let node = object_ref(&get(server, "nodes", None, name).await?);
            let uid = node.uid.clone();
            (None, None, Some(node), uid)
        }
        _ => {
            let version = api_version.rsplit('/').next().unwrap_or_default();
            return Err(ApiError::bad_request(format!(
                "cannot bind token to object of type {group}/{version}, Kind={kind}"
            )));
        }
    };
    let wanted_uid = reference["uid"].as_str().unwrap_or_default();
    if !wanted_uid.is_empty() && wanted_uid != uid {
        let mut err =
            ApiError::conflict(&crate::apiserver::resource::ResourceInfo::default(), name, "");
        err.message = format!(
            "Operation cannot be fulfilled on {kind} \"{name}\": the UID in the bound object reference ({wanted_uid}) does not match the UID in record. The object might have been deleted and then recreated"
        );
        return Err(err);
    }
    Ok((pod, secret, node))
}

/// Issues a token for `serviceaccounts/<name>/token`.
pub(crate) async fn create(server: &ApiServer, call: Call) -> ApiResult<Reply> {
    let issuer = &server.inner.service_accounts;
    let name = call.path.name.clone().unwrap_or_default();
    let namespace = call.namespace().unwrap_or_default().to_string();
    let mut request = decode_body(&call, Some(("authentication.k8s.io/v1", "TokenRequest")))?;
    for (field, want) in [("name", &name), ("namespace", &namespace)] {
        if meta::meta_str(&request, field).is_some_and(|v| !v.is_empty() && v != want) {
            let what = if field == "name" { "name" } else { "namespace" };
            return Err(invalid(
                &call,
                &name,
                &format!("metadata.{field}"),
                format!(
                    "Invalid value: {:?}: must match the service account {what} if specified",
                    meta::meta_str(&request, field).unwrap_or_default()
                ),
            ));
        }
    }
    let account = get(server, "serviceaccounts", Some(&namespace), &name).await?;
    let spec = request.get("spec").filter(|s| s.is_object()).cloned().unwrap_or_else(|| json!({}));
    let audiences: Vec<String> = match spec.get("audiences").and_then(Value::as_array) {
        Some(list) if !list.is_empty() => {
            list.iter().filter_map(Value::as_str).map(String::from).collect()
        }
        _ => issuer.audiences.clone(),
    };
    let mut expiration = match spec.get("expirationSeconds") {
        None | Some(Value::Null) => DEFAULT_EXPIRATION_SECONDS,
        Some(v) => v.as_i64().ok_or_else(|| {
            invalid(&call, "", "spec.expirationSeconds", "Invalid value: must be an integer".into())
        })?,
    };
    if expiration < MIN_EXPIRATION_SECONDS {
        return Err(invalid(
            &call,
            "",
            "spec.expirationSeconds",
            format!("Invalid value: {expiration}: may not specify a duration less than 10 minutes"),
        ));
    }
    if expiration > 1 << 32 {
        return Err(invalid(
            &call,
            "",
            "spec.expirationSeconds",
            format!(
                "Invalid value: {expiration}: may not specify a duration larger than 2^32 seconds"
            ),
        ));
    }
    let bound_ref = spec.get("boundObjectRef").filter(|r| r.is_object());
    let (pod, secret, node) = match bound_ref {
        Some(reference) => bound_objects(server, &namespace, &name, reference).await?,
        None => (None, None, None),
    };
    let mut warnings = Vec::new();
    if let Some(max) = issuer.max_token_expiration.filter(|max| expiration > *max) {
        warnings.push(format!(
            "requested expiration of {expiration} seconds shortened to {max} seconds"
        ));
        expiration = max;
    }
    let (mut lifetime, mut warnafter) = (expiration, None);
    let api_audiences_only = audiences.iter().all(|a| issuer.audiences.contains(a));
    if issuer.extend_token_expiration
        && pod.is_some()
        && expiration == WARN_ONLY_EXPIRATION_SECONDS
        && api_audiences_only
    {
        lifetime = EXTENDED_EXPIRATION_SECONDS;
        warnafter = Some(expiration);
    }
    let issued_at = SystemTime::now();
    let now = issued_at.duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    let claims = Claims {
        iss: issuer.issuer.clone(),
        sub: claims::username(&namespace, &name),
        aud: audiences.clone(),
        exp: now + lifetime,
        iat: now,
        nbf: now,
        jti: meta::new_uid(),
        kubernetes: KubernetesClaims {
            namespace: namespace.clone(),
            serviceaccount: object_ref(&account),
            pod,
            secret,
            node,
            warnafter: warnafter.map(|w| now + w),
        },
    };
    let key = issuer
        .signing_key()
        .ok_or_else(|| ApiError::internal("failed to generate token: no signing key"))?;
    let claims = serde_json::to_value(&claims).map_err(|e| ApiError::internal(e.to_string()))?;
    let token = key
        .sign(&claims)
        .map_err(|e| ApiError::internal(format!("failed to generate token: {e}")))?;
    let expires = issued_at + Duration::from_secs(expiration.unsigned_abs());
    meta::set_meta(&mut request, "name", json!(name));
    meta::set_meta(&mut request, "namespace", json!(namespace));
    meta::set_meta(&mut request, "creationTimestamp", json!(meta::rfc3339(issued_at)));
    let mut spec = spec;
    spec["audiences"] = json!(audiences);
    spec["expirationSeconds"] = json!(expiration);
    request["spec"] = spec;
    request["status"] = json!({"token": token, "expirationTimestamp": meta::rfc3339(expires)});
    let response =
        crate::apiserver::body::object_response(StatusCode::CREATED, &request, call.output);
    Ok(Reply { response, warnings })
}
