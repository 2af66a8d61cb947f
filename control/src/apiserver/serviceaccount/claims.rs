//! The claims of a bound service account token, as the reference issues them: the registered
//! ones (`iss`, `sub`, `aud`, `exp`, `iat`, `nbf`, `jti`) plus the private `kubernetes.io`
//! object naming the namespace, the service account and the object the token is bound to (a
//! pod — with its node —, a secret or a node), each by name and uid.
//!
//! This module is pure: building claims and the checks that need no store (issuer, time with the
//! reference's one-minute leeway, audiences). The checks against live objects are in
//! `authenticator`.

use serde::{Deserialize, Deserializer, Serialize};

/// go-jose's default leeway for `exp`, `nbf` and `iat`, which the reference uses; objects deleted
/// less than this long ago still validate a token, for the same clock-skew reason.
pub const LEEWAY_SECONDS: i64 = 60;

/// `system:serviceaccount:<namespace>:<name>`.
pub fn username(namespace: &str, name: &str) -> String {
    format!("system:serviceaccount:{namespace}:{name}")
}

/// The groups of every service account of `namespace`.
pub fn groups(namespace: &str) -> Vec<String> {
    vec!["system:serviceaccounts".to_string(), format!("system:serviceaccounts:{namespace}")]
}

/// An object a token names: name and uid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ObjectRef {
    pub name: String,
    pub uid: String,
}

/// The `kubernetes.io` private claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct KubernetesClaims {
    pub namespace: String,
    pub serviceaccount: ObjectRef,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<ObjectRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<ObjectRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<ObjectRef>,
    /// When a token with an extended lifetime should have been refreshed (see `token_request`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warnafter: Option<i64>,
}

/// Every claim of a service account token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub sub: String,
    /// Always an array when issued; a single string is accepted too (RFC 7519 allows both).
    #[serde(deserialize_with = "string_or_list")]
    pub aud: Vec<String>,
    pub exp: i64,
    pub iat: i64,
    pub nbf: i64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub jti: String,
    #[serde(rename = "kubernetes.io")]
    pub kubernetes: KubernetesClaims,
}

fn string_or_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

/// Why claims are not acceptable. The messages are the reference's (TokenReview shows them).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClaimsError {
    #[error("service account token has expired")]
    Expired,
    #[error("service account token is not valid yet")]
    NotValidYet,
    #[error("service account token is issued in the future")]
    IssuedInTheFuture,
    #[error("token audiences {token:?} is invalid for the target audiences {wanted:?}")]
    Audience { token: Vec<String>, wanted: Vec<String> },
    #[error("service account token claims are malformed: {0}")]
    Malformed(String),
}

impl Claims {
    /// Parses verified claims; anything not shaped like a service account token is an error.
    pub fn from_json(value: serde_json::Value) -> Result<Claims, ClaimsError> {
        let claims: Claims =
            serde_json::from_value(value).map_err(|e| ClaimsError::Malformed(e.to_string()))?;
        let k = &claims.kubernetes;
        if k.namespace.is_empty() || k.serviceaccount.name.is_empty() {
            return Err(ClaimsError::Malformed("namespace or service account missing".into()));
        }
        if claims.sub != username(&k.namespace, &k.serviceaccount.name) {
            return Err(ClaimsError::Malformed("subject does not name the service account".into()));
        }
        Ok(claims)
    }

    /// `exp`, `nbf` and `iat` against `now` (Unix seconds), with the reference's leeway.
    pub fn check_time(&self, now: i64) -> Result<(), ClaimsError> {
        if now >= self.exp.saturating_add(LEEWAY_SECONDS) {
            return Err(ClaimsError::Expired);
        }
        if now.saturating_add(LEEWAY_SECONDS) < self.nbf {
            return Err(ClaimsError::NotValidYet);
        }
        if now.saturating_add(LEEWAY_SECONDS) < self.iat {
            return Err(ClaimsError::IssuedInTheFuture);
        }
        Ok(())
    }

    /// The audiences both the token and the caller accept; an error when there are none.
    /// A token without audiences is taken as issued for `implicit` (the API audiences), as
    /// the reference does for legacy tokens.
    pub fn check_audiences(
        &self,
        wanted: &[String],
        implicit: &[String],
    ) -> Result<Vec<String>, ClaimsError> {
        let token = if self.aud.is_empty() { implicit } else { &self.aud };
        let common: Vec<String> = token.iter().filter(|a| wanted.contains(a)).cloned().collect();
        if common.is_empty() {
            return Err(ClaimsError::Audience { token: token.to_vec(), wanted: wanted.to_vec() });
        }
        Ok(common)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample(now: i64) -> Claims {
        Claims {
            iss: "https://kubernetes.default.svc.cluster.local".into(),
            sub: username("ns", "sa"),
            aud: vec!["api".into(), "vault".into()],
            exp: now + 600,
            iat: now,
            nbf: now,
            jti: "id".into(),
            kubernetes: KubernetesClaims {
                namespace: "ns".into(),
                serviceaccount: ObjectRef { name: "sa".into(), uid: "u1".into() },
                pod: Some(ObjectRef { name: "p".into(), uid: "u2".into() }),
                ..Default::default()
            },
        }
    }

    #[test]
    fn claims_serialize_like_the_reference() {
        let c = sample(1000);
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(v["aud"], json!(["api", "vault"]));
        assert_eq!(v["kubernetes.io"]["serviceaccount"], json!({"name": "sa", "uid": "u1"}));
        assert_eq!(v["kubernetes.io"]["pod"]["uid"], "u2");
        assert!(v["kubernetes.io"].get("node").is_none());
        assert_eq!(Claims::from_json(v).unwrap(), c);

        let mut single = serde_json::to_value(&c).unwrap();
        single["aud"] = json!("api");
        assert_eq!(Claims::from_json(single).unwrap().aud, ["api"]);
        let mut wrong_sub = serde_json::to_value(&c).unwrap();
        wrong_sub["sub"] = json!("system:serviceaccount:ns:other");
        assert!(Claims::from_json(wrong_sub).is_err());
        assert!(Claims::from_json(json!({"sub": 1})).is_err());
    }

    #[test]
    fn expiry_and_validity_window_allow_one_minute_of_skew() {
        let c = sample(1000);
        assert_eq!(c.check_time(1000), Ok(()));
        assert_eq!(c.check_time(1600 + 59), Ok(()));
        assert_eq!(c.check_time(1600 + 60), Err(ClaimsError::Expired));
        assert_eq!(c.check_time(1000 - 60), Ok(()));
        let mut future = sample(1000);
        future.iat = 900;
        assert_eq!(future.check_time(1000 - 61), Err(ClaimsError::NotValidYet));
        future.nbf = 900;
        future.iat = 1000;
        assert_eq!(future.check_time(1000 - 61), Err(ClaimsError::IssuedInTheFuture));
    }

    #[test]
    fn audiences_must_intersect() {
        let c = sample(0);
        let api = vec!["api".to_string()];
        assert_eq!(c.check_audiences(&api, &api).unwrap(), ["api"]);
        let other = vec!["other".to_string()];
        assert!(matches!(c.check_audiences(&other, &api), Err(ClaimsError::Audience { .. })));
        let mut none = sample(0);
        none.aud.clear();
        assert_eq!(none.check_audiences(&api, &api).unwrap(), ["api"]);
    }
}
