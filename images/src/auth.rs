//! Registry authentication: parsing `WWW-Authenticate` challenges and turning credentials into an
//! `Authorization` header — HTTP basic directly, or the bearer-token flow (ask the challenge's
//! realm for a token scoped to `repository:NAME:pull`, with or without credentials).

use std::collections::BTreeMap;

use base64::Engine;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method};
use serde::Deserialize;

use crate::error::{ImageError, Result};
use crate::registry_config::Credentials;
use crate::transport::{read_body, Transport};

/// A parsed `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Challenge {
    /// `basic` or `bearer` (lowercase).
    pub scheme: String,
    /// Parameters (`realm`, `service`, `scope`), keys lowercase.
    pub params: BTreeMap<String, String>,
}

/// Parses the first challenge of a `WWW-Authenticate` value.
pub(crate) fn parse_challenge(value: &str) -> Option<Challenge> {
    let value = value.trim();
    let (scheme, rest) = value.split_once(char::is_whitespace).unwrap_or((value, ""));
    if scheme.is_empty() {
        return None;
    }
    let mut params = BTreeMap::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            break;
        }
        let mut val = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => val.extend(chars.next()),
                    '"' => break,
                    c => val.push(c),
                }
            }
        } else {
            while let Some(c) = chars.peek().copied() {
                if c == ',' {
                    break;
                }
                val.push(c);
                chars.next();
            }
        }
        params.insert(key.trim().to_ascii_lowercase(), val.trim().to_string());
    }
    Some(Challenge { scheme: scheme.to_ascii_lowercase(), params })
}

/// `Authorization: Basic ...` for `username:password`.
pub(crate) fn basic_header(username: &str, password: &str) -> Option<HeaderValue> {
    let b64 = base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
    HeaderValue::from_str(&format!("Basic {b64}")).ok()
}

#[derive(Deserialize)]
struct TokenResponse {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
}

/// Answers a challenge: the `Authorization` value to retry with.
pub(crate) async fn answer(
    transport: &Transport,
    challenge: &Challenge,
    credentials: Option<&Credentials>,
    registry: &str,
    repository: &str,
) -> Result<HeaderValue> {
    let unauthorized = |detail: String| ImageError::Unauthorized {
        registry: registry.into(),
        repository: repository.into(),
        detail,
    };
    match challenge.scheme.as_str() {
        "basic" => match credentials {
            Some(Credentials::Basic { username, password }) => basic_header(username, password)
                .ok_or_else(|| unauthorized("credentials are not valid header text".into())),
            _ => {
                Err(unauthorized("registry requires basic auth and no credentials are set".into()))
            }
        },
        "bearer" => {
            let realm = challenge
                .params
                .get("realm")
                .ok_or_else(|| unauthorized("bearer challenge without realm".into()))?;
            let service = challenge.params.get("service").cloned().unwrap_or_default();
            let scope = challenge
                .params
                .get("scope")
                .cloned()
                .unwrap_or_else(|| format!("repository:{repository}:pull"));
            let token = fetch_token(transport, realm, &service, &scope, credentials)
                .await
                .map_err(|e| match e {
                    ImageError::Unauthorized { detail, .. } => unauthorized(detail),
                    other => other,
                })?;
            HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| unauthorized("token is not valid header text".into()))
        }
        other => Err(unauthorized(format!("unsupported auth scheme {other:?}"))),
    }
}

async fn fetch_token(
    transport: &Transport,
    realm: &str,
    service: &str,
    scope: &str,
    credentials: Option<&Credentials>,
) -> Result<String> {
    let mut headers = HeaderMap::new();
    let (method, url, body) = match credentials {
        Some(Credentials::IdentityToken(refresh)) => {
            headers.insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/x-www-form-urlencoded"),
            );
            let form = format!(
                "grant_type=refresh_token&client_id=skerry&service={}&scope={}&refresh_token={}",
                encode(service),
                encode(scope),
                encode(refresh)
            );
            (Method::POST, realm.to_string(), Some(Bytes::from(form)))
        }
        other => {
            if let Some(Credentials::Basic { username, password }) = other {
                if let Some(h) = basic_header(username, password) {
                    headers.insert(http::header::AUTHORIZATION, h);
                }
            }
            let sep = if realm.contains('?') { '&' } else { '?' };
            let url = format!("{realm}{sep}service={}&scope={}", encode(service), encode(scope));
            (Method::GET, url, None)
        }
    };
    let resp = transport.send(method, &url, headers, body).await?;
    let status = resp.status();
    let body = read_body(resp, 1 << 20, realm).await?;
    if status == http::StatusCode::UNAUTHORIZED || status == http::StatusCode::FORBIDDEN {
        return Err(ImageError::Unauthorized {
            registry: realm.into(),
            repository: scope.into(),
            detail: format!("token endpoint refused the credentials ({status})"),
        });
    }
    if !status.is_success() {
        return Err(ImageError::Registry {
            registry: realm.into(),
            detail: format!("token endpoint answered {status}"),
        });
    }
    let parsed: TokenResponse = serde_json::from_slice(&body).map_err(|e| {
        ImageError::Registry { registry: realm.into(), detail: format!("token response: {e}") }
    })?;
    parsed.token.or(parsed.access_token).filter(|t| !t.is_empty()).ok_or_else(|| {
        ImageError::Registry {
            registry: realm.into(),
            detail: "token response has no token".into(),
        }
    })
}

/// Percent-encodes a query value.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_challenge_with_commas_in_quotes() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:a/b:pull,push""#,
        )
        .unwrap();
        assert_eq!(c.scheme, "bearer");
        assert_eq!(c.params["realm"], "https://auth.docker.io/token");
        assert_eq!(c.params["scope"], "repository:a/b:pull,push");
        let c = parse_challenge(r#"Basic realm="basic-realm""#).unwrap();
        assert_eq!((c.scheme.as_str(), c.params["realm"].as_str()), ("basic", "basic-realm"));
        assert!(parse_challenge("").is_none());
    }

    #[test]
    fn query_encoding() {
        assert_eq!(encode("repository:a/b:pull"), "repository%3Aa%2Fb%3Apull");
    }
}
