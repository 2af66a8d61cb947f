//! Service account issuer discovery: the OpenID Connect discovery document at
//! `/.well-known/openid-configuration` and the public signing keys at `/openid/v1/jwks`, so that
//! a party outside the cluster can verify service account tokens (as the reference serves them;
//! like there, the caller must be authenticated).

use http::{header, HeaderValue, Response, StatusCode};
use serde_json::{json, Value};

use super::TokenIssuer;
use crate::apiserver::body::{self, ApiBody};
use crate::apiserver::request::Output;

/// The path of the discovery document.
pub const CONFIGURATION_PATH: &str = "/.well-known/openid-configuration";
/// The path of the key set.
pub const JWKS_PATH: &str = "/openid/v1/jwks";

/// The JWKS URI: the issuer's scheme and host with [`JWKS_PATH`] (the reference's default when
/// `--service-account-jwks-uri` is not given).
fn jwks_uri(issuer: &str) -> String {
    let origin = match issuer.split_once("://") {
        Some((scheme, rest)) => format!("{scheme}://{}", rest.split('/').next().unwrap_or(rest)),
        None => issuer.trim_end_matches('/').to_string(),
    };
    format!("{origin}{JWKS_PATH}")
}

/// The OpenID provider configuration.
pub fn configuration(issuer: &TokenIssuer) -> Value {
    json!({
        "issuer": issuer.issuer,
        "jwks_uri": jwks_uri(&issuer.issuer),
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": [super::jwt::ALGORITHM],
    })
}

/// The key set.
pub fn jwks(issuer: &TokenIssuer) -> Value {
    let keys: Vec<Value> = issuer.verifying_keys().iter().map(|k| k.jwk()).collect();
    json!({ "keys": keys })
}

/// A discovery response: `content_type`, cacheable for an hour (the reference's max-age).
pub fn respond(value: &Value, content_type: &'static str) -> Response<ApiBody> {
    let mut response = body::object_response(StatusCode::OK, value, Output::Json);
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=3600"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jwks_uri_is_on_the_issuer_origin() {
        assert_eq!(
            jwks_uri("https://kubernetes.default.svc.cluster.local"),
            "https://kubernetes.default.svc.cluster.local/openid/v1/jwks"
        );
        assert_eq!(
            jwks_uri("https://example.com:8443/a/b"),
            "https://example.com:8443/openid/v1/jwks"
        );
    }
}
