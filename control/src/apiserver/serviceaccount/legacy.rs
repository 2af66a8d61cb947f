//! Legacy service account tokens: the non-expiring JWTs the tokens controller writes into
//! Secrets of type `kubernetes.io/service-account-token`, as the reference's legacy token
//! generator and validator make and check them. They are signed with the same key as bound
//! tokens ([`super::jwt`]), but carry the reference's legacy claims (issuer
//! `kubernetes/serviceaccount`, no audience, no expiry) and are valid only while their Secret
//! holds exactly this token and the service account they name exists with the same uid, so
//! deleting the Secret revokes the token. A Secret labelled
//! `kubernetes.io/legacy-token-invalid-since` no longer authenticates either.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::authenticator::Authenticated;
use super::claims;
use super::jwt::{self, JwtError, SigningKey};
use crate::apiserver::authn::User;
use crate::apiserver::server::ApiServer;

/// The `iss` of every legacy token.
pub const ISSUER: &str = "kubernetes/serviceaccount";
/// The Secret type the tokens controller fills in.
pub const SECRET_TYPE: &str = "kubernetes.io/service-account-token";
/// The annotation naming a token Secret's service account.
pub const NAME_ANNOTATION: &str = "kubernetes.io/service-account.name";
/// The annotation holding that service account's uid (filled in by the controller).
pub const UID_ANNOTATION: &str = "kubernetes.io/service-account.uid";
/// The label the reference's legacy token cleaner puts on a Secret it has invalidated.
pub const INVALID_SINCE_LABEL: &str = "kubernetes.io/legacy-token-invalid-since";

/// The claims of a legacy token, with the reference's claim names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LegacyClaims {
    pub iss: String,
    pub sub: String,
    #[serde(rename = "kubernetes.io/serviceaccount/namespace")]
    pub namespace: String,
    #[serde(rename = "kubernetes.io/serviceaccount/secret.name")]
    pub secret_name: String,
    #[serde(rename = "kubernetes.io/serviceaccount/service-account.name")]
    pub service_account_name: String,
    #[serde(rename = "kubernetes.io/serviceaccount/service-account.uid")]
    pub service_account_uid: String,
}

impl LegacyClaims {
    /// The claims of a token for service account `name` (`uid`) stored in Secret `secret`.
    pub fn new(namespace: &str, name: &str, uid: &str, secret: &str) -> LegacyClaims {
        LegacyClaims {
            iss: ISSUER.into(),
            sub: claims::username(namespace, name),
            namespace: namespace.into(),
            secret_name: secret.into(),
            service_account_name: name.into(),
            service_account_uid: uid.into(),
        }
    }

    /// Parses verified claims; every field must be there and the subject must match.
    pub fn from_json(value: Value) -> Result<LegacyClaims, String> {
        let claims: LegacyClaims =
            serde_json::from_value(value).map_err(|e| format!("malformed legacy token: {e}"))?;
        let fields = [
            &claims.namespace,
            &claims.secret_name,
            &claims.service_account_name,
            &claims.service_account_uid,
        ];
        if fields.iter().any(|f| f.is_empty()) {
            return Err("legacy token is missing a claim".into());
        }
        if claims.sub != claims::username(&claims.namespace, &claims.service_account_name) {
            return Err("legacy token subject does not name its service account".into());
        }
        Ok(claims)
    }

    /// The signed token.
    pub fn sign(&self, key: &SigningKey) -> Result<String, JwtError> {
        let value = serde_json::to_value(self).map_err(|_| JwtError::Sign)?;
        key.sign(&value)
    }
}

async fn get(server: &ApiServer, plural: &str, ns: &str, name: &str) -> Result<Value, String> {
    let info = server
        .inner
        .registry
        .resolve("", "v1", plural)
        .ok_or_else(|| format!("{plural} are not served"))?;
    match crate::apiserver::rest::read(server, &info.storage_key(Some(ns), name)).await {
        Ok(Some((obj, _))) => Ok(obj),
        Ok(None) => Err(format!("{plural} {ns}/{name} not found: token has been invalidated")),
        Err(err) => Err(format!("looking up {plural} {name}: {}", err.message)),
    }
}

fn being_deleted(obj: &Value) -> bool {
    obj.pointer("/metadata/deletionTimestamp").is_some_and(|t| !t.is_null())
}

/// Authenticates a token of the legacy issuer for the `wanted` audiences (it is implicitly for
/// the API audiences); the error is why this legacy token is not (or no longer) valid.
pub async fn authenticate(
    server: &ApiServer,
    token: &str,
    wanted: &[String],
) -> Result<Authenticated, String> {
    let issuer = &server.inner.service_accounts;
    let verified =
        jwt::verify(token, issuer.verifying_keys()).map_err(|e| format!("invalid token: {e}"))?;
    let claims = LegacyClaims::from_json(verified)?;
    let audiences: Vec<String> =
        issuer.audiences.iter().filter(|a| wanted.contains(a)).cloned().collect();
    if audiences.is_empty() {
        return Err(format!(
            "token audiences {:?} is invalid for the target audiences {wanted:?}",
            issuer.audiences
        ));
    }
    let ns = &claims.namespace;
    let secret = get(server, "secrets", ns, &claims.secret_name).await?;
    if being_deleted(&secret) {
        return Err(format!("token secret {ns}/{} is being deleted", claims.secret_name));
    }
    let stored = secret.pointer("/data/token").and_then(Value::as_str).unwrap_or_default();
    if STANDARD.decode(stored).ok().as_deref() != Some(token.as_bytes()) {
        return Err("token does not match the server's copy".into());
    }
    let invalid = secret.pointer("/metadata/labels").and_then(|l| l.get(INVALID_SINCE_LABEL));
    if invalid.and_then(Value::as_str).is_some_and(|since| !since.is_empty()) {
        return Err("token has been invalidated".into());
    }
    let account = get(server, "serviceaccounts", ns, &claims.service_account_name).await?;
    if being_deleted(&account) {
        return Err(format!(
            "service account {ns}/{} has been deleted",
            claims.service_account_name
        ));
    }
    let uid = account.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or_default();
    if uid != claims.service_account_uid {
        return Err(format!(
            "service account UID ({uid}) does not match claim ({})",
            claims.service_account_uid
        ));
    }
    let mut user =
        User::new(claims::username(ns, &claims.service_account_name), claims::groups(ns));
    user.uid = uid.to_string();
    Ok(Authenticated { user, audiences })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn claims_have_the_reference_names_and_are_checked() {
        let claims = LegacyClaims::new("ns", "sa", "u1", "sa-token");
        let value = serde_json::to_value(&claims).unwrap();
        assert_eq!(
            value,
            json!({
                "iss": "kubernetes/serviceaccount",
                "sub": "system:serviceaccount:ns:sa",
                "kubernetes.io/serviceaccount/namespace": "ns",
                "kubernetes.io/serviceaccount/secret.name": "sa-token",
                "kubernetes.io/serviceaccount/service-account.name": "sa",
                "kubernetes.io/serviceaccount/service-account.uid": "u1",
            })
        );
        assert!(value.get("exp").is_none(), "legacy tokens do not expire");
        assert_eq!(LegacyClaims::from_json(value.clone()).unwrap(), claims);
        let mut other_subject = value.clone();
        other_subject["sub"] = json!("system:serviceaccount:ns:admin");
        assert!(LegacyClaims::from_json(other_subject).is_err());
        let mut no_uid = value;
        no_uid["kubernetes.io/serviceaccount/service-account.uid"] = json!("");
        assert!(LegacyClaims::from_json(no_uid).is_err());
    }

    #[test]
    fn a_signed_token_verifies_with_the_same_key() {
        let key = SigningKey::generate().unwrap();
        let token = LegacyClaims::new("ns", "sa", "u1", "s").sign(&key).unwrap();
        let verified = jwt::verify(&token, std::slice::from_ref(key.verifying_key())).unwrap();
        assert_eq!(verified["iss"], ISSUER);
    }
}
