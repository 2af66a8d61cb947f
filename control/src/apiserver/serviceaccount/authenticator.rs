//! The bound service account token authenticator. A bearer token that is a JWT of this
//! server's issuer is accepted when, in the reference's order: its signature verifies, its
//! audiences meet the wanted ones, it is within `nbf`..`exp` (one minute of leeway), the service
//! account it names still exists with the same uid, and the object it is bound to (pod, secret,
//! or node for node-bound tokens) too — an object deleted (deletionTimestamp) more than the leeway
//! ago no longer validates tokens. The user is `system:serviceaccount:<ns>:<name>` in
//! `system:serviceaccounts` and `system:serviceaccounts:<ns>`, with the pod and node in `extra`.
//! Tokens of the legacy issuer go to [`super::legacy`].

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

use super::claims::{self, Claims, ObjectRef, LEEWAY_SECONDS};
use super::jwt;
use crate::apiserver::authn::User;
use crate::apiserver::server::ApiServer;
use crate::apiserver::table::format::parse_time;

/// `extra` keys of a service account user, as the reference names them.
pub const EXTRA_POD_NAME: &str = "authentication.kubernetes.io/pod-name";
pub const EXTRA_POD_UID: &str = "authentication.kubernetes.io/pod-uid";
pub const EXTRA_NODE_NAME: &str = "authentication.kubernetes.io/node-name";
pub const EXTRA_NODE_UID: &str = "authentication.kubernetes.io/node-uid";
pub const EXTRA_CREDENTIAL_ID: &str = "authentication.kubernetes.io/credential-id";

/// A token this authenticator accepted.
#[derive(Debug, Clone)]
pub struct Authenticated {
    pub user: User,
    /// The audiences both the token and the caller accept.
    pub audiences: Vec<String>,
}

/// Whether `token` is shaped like a JWT (three dot-separated parts): the cheap test that routes a
/// bearer token here rather than to the bootstrap token authenticator.
pub fn looks_like_jwt(token: &str) -> bool {
    token.bytes().filter(|b| *b == b'.').count() == 2
}

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// Authenticates `token` for the `wanted` audiences. `Ok(None)`: not a token of this issuer
/// (another authenticator may know it); `Err`: this issuer's token, but not valid — the message
/// is what a TokenReview reports.
pub async fn authenticate(
    server: &ApiServer,
    token: &str,
    wanted: &[String],
) -> Result<Option<Authenticated>, String> {
    let issuer = &server.inner.service_accounts;
    let Ok(unverified) = jwt::unverified_claims(token) else { return Ok(None) };
    match unverified["iss"].as_str() {
        Some(iss) if iss == issuer.issuer => {}
        // A token from a Secret of type `kubernetes.io/service-account-token`.
        Some(super::legacy::ISSUER) => {
            return super::legacy::authenticate(server, token, wanted).await.map(Some)
        }
        _ => return Ok(None),
    }
    let verified =
        jwt::verify(token, issuer.verifying_keys()).map_err(|e| format!("invalid token: {e}"))?;
    let claims = Claims::from_json(verified).map_err(|e| e.to_string())?;
    let audiences = claims.check_audiences(wanted, &issuer.audiences).map_err(|e| e.to_string())?;
    let now = now();
    claims.check_time(now).map_err(|e| e.to_string())?;
    let user = validate_objects(server, &claims, now).await?;
    Ok(Some(Authenticated { user, audiences }))
}

/// Reads one object; a store failure invalidates the token for this request (the reference's
/// getter error does the same).
async fn get(
    server: &ApiServer,
    plural: &str,
    namespace: Option<&str>,
    name: &str,
) -> Result<Option<Value>, String> {
    let info = server
        .inner
        .registry
        .resolve("", "v1", plural)
        .ok_or_else(|| format!("{plural} are not served"))?;
    let key = info.storage_key(namespace, name);
    match crate::apiserver::rest::read(server, &key).await {
        Ok(found) => Ok(found.map(|(obj, _)| obj)),
        Err(err) => Err(format!("looking up {plural} {name}: {}", err.message)),
    }
}

/// The object named by `reference` must exist with the same uid and not have been deleted
/// more than the leeway before `now`.
async fn check_live(
    server: &ApiServer,
    (plural, kind): (&str, &str),
    namespace: Option<&str>,
    reference: &ObjectRef,
    now: i64,
) -> Result<(), String> {
    let shown = match namespace {
        Some(ns) => format!("{ns}/{}", reference.name),
        None => reference.name.clone(),
    };
    let Some(obj) = get(server, plural, namespace, &reference.name).await? else {
        return Err(format!("{kind} \"{shown}\" not found: token has been invalidated"));
    };
    let deleted = obj
        .pointer("/metadata/deletionTimestamp")
        .and_then(Value::as_str)
        .and_then(parse_time)
        .is_some_and(|at| at < now - LEEWAY_SECONDS);
    if deleted {
        return Err(format!("{kind} {shown} has been deleted"));
    }
    let uid = obj.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or_default();
    if uid != reference.uid {
        return Err(format!("{kind} UID ({uid}) does not match claim ({})", reference.uid));
    }
    Ok(())
}

async fn validate_objects(server: &ApiServer, claims: &Claims, now: i64) -> Result<User, String> {
    let k = &claims.kubernetes;
    let ns = Some(k.namespace.as_str());
    check_live(server, ("serviceaccounts", "ServiceAccount"), ns, &k.serviceaccount, now).await?;
    if let Some(secret) = &k.secret {
        check_live(server, ("secrets", "Secret"), ns, secret, now).await?;
    }
    if let Some(pod) = &k.pod {
        check_live(server, ("pods", "Pod"), ns, pod, now).await?;
    }
    // A pod-bound token only records its node; a node-bound token needs the node alive.
    if let (Some(node), None) = (&k.node, &k.pod) {
        check_live(server, ("nodes", "Node"), None, node, now).await?;
    }
    let mut user = User::new(
        claims::username(&k.namespace, &k.serviceaccount.name),
        claims::groups(&k.namespace),
    );
    user.uid = k.serviceaccount.uid.clone();
    let mut extra = |key: &str, value: &str| {
        if !value.is_empty() {
            user.extra.insert(key.to_string(), vec![value.to_string()]);
        }
    };
    if let Some(pod) = &k.pod {
        extra(EXTRA_POD_NAME, &pod.name);
        extra(EXTRA_POD_UID, &pod.uid);
    }
    if let Some(node) = &k.node {
        extra(EXTRA_NODE_NAME, &node.name);
        extra(EXTRA_NODE_UID, &node.uid);
    }
    if !claims.jti.is_empty() {
        extra(EXTRA_CREDENTIAL_ID, &format!("JTI={}", claims.jti));
    }
    Ok(user)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::authn::TokenAuthenticator;
    use crate::apiserver::server::ApiConfig;
    use crate::store::sqlite::{SqliteOptions, SqliteStore};
    use http_body_util::{BodyExt, Full};
    use serde_json::json;
    use std::sync::Arc;

    async fn call(server: &ApiServer, method: &str, path: &str, body: Value) -> (u16, Value) {
        let request = http::Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", "application/json")
            .body(Full::new(bytes::Bytes::from(body.to_string())))
            .unwrap();
        let response = server.handle(request, Some(User::system_admin())).await;
        let code = response.status().as_u16();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (code, serde_json::from_slice(&bytes).unwrap_or_default())
    }

    /// A handler with service account `ns1/sa` and pod `ns1/p` running as it; returns a token
    /// bound to the pod, and the server.
    async fn setup() -> (tempfile::TempDir, ApiServer, String) {
        let dir = tempfile::tempdir().unwrap();
        let store =
            SqliteStore::open(dir.path().join("state.db"), SqliteOptions::default()).unwrap();
        let server =
            ApiServer::new(Arc::new(store), ApiConfig::default(), TokenAuthenticator::default());
        crate::apiserver::serve::bootstrap(&server).await.unwrap();
        let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ns1"}});
        assert_eq!(call(&server, "POST", "/api/v1/namespaces", ns).await.0, 201);
        let sa = json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "sa"}});
        let path = "/api/v1/namespaces/ns1/serviceaccounts";
        assert_eq!(call(&server, "POST", path, sa).await.0, 201);
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
            "spec": {"serviceAccountName": "sa", "containers": [{"name": "c", "image": "x"}]}});
        assert_eq!(call(&server, "POST", "/api/v1/namespaces/ns1/pods", pod).await.0, 201);
        let request =
            json!({"spec": {"boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": "p"}}});
        let path = "/api/v1/namespaces/ns1/serviceaccounts/sa/token";
        let (code, issued) = call(&server, "POST", path, request).await;
        assert_eq!(code, 201, "{issued}");
        let token = issued["status"]["token"].as_str().unwrap().to_string();
        (dir, server, token)
    }

    fn resign(server: &ApiServer, token: &str, change: impl FnOnce(&mut Value)) -> String {
        let mut claims = jwt::unverified_claims(token).unwrap();
        change(&mut claims);
        server.inner.service_accounts.signing_key().unwrap().sign(&claims).unwrap()
    }

    #[tokio::test]
    async fn tokens_are_checked_for_issuer_audience_time_and_live_objects() {
        let (_dir, server, token) = setup().await;
        let api = server.inner.service_accounts.audiences.clone();
        let found = authenticate(&server, &token, &api).await.unwrap().unwrap();
        assert_eq!(found.user.name, "system:serviceaccount:ns1:sa");
        assert_eq!(found.user.extra[EXTRA_POD_NAME], ["p"]);
        assert_eq!(found.audiences, api);

        // Another issuer: not this authenticator's token at all.
        let foreign = resign(&server, &token, |c| c["iss"] = json!("https://elsewhere"));
        assert!(authenticate(&server, &foreign, &api).await.unwrap().is_none());
        // Wrong audience, expired, tampered: this issuer's, refused with the reason.
        let vault = vec!["vault".to_string()];
        let err = authenticate(&server, &token, &vault).await.unwrap_err();
        assert!(err.contains("audiences"), "{err}");
        let expired = resign(&server, &token, |c| c["exp"] = json!(now() - 61));
        let err = authenticate(&server, &expired, &api).await.unwrap_err();
        assert_eq!(err, "service account token has expired");
        // Other claims under the original signature.
        let parts: Vec<&str> = token.split('.').collect();
        let other =
            resign(&server, &token, |c| c["kubernetes.io"]["namespace"] = json!("kube-system"));
        let tampered = format!("{}.{}.{}", parts[0], other.split('.').nth(1).unwrap(), parts[2]);
        assert!(authenticate(&server, &tampered, &api).await.unwrap_err().contains("signature"));

        // A recreated service account (new uid) invalidates the token.
        let path = "/api/v1/namespaces/ns1/serviceaccounts/sa";
        assert_eq!(call(&server, "DELETE", path, json!({})).await.0, 200);
        let sa = json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "sa"}});
        assert_eq!(
            call(&server, "POST", "/api/v1/namespaces/ns1/serviceaccounts", sa).await.0,
            201
        );
        let err = authenticate(&server, &token, &api).await.unwrap_err();
        assert!(err.contains("does not match claim"), "{err}");
    }

    #[test]
    fn only_three_part_tokens_look_like_jwts() {
        assert!(looks_like_jwt("a.b.c"));
        assert!(!looks_like_jwt("abcdef.0123456789abcdef"));
        assert!(!looks_like_jwt("static-token"));
        assert!(!looks_like_jwt("a.b.c.d"));
    }
}
