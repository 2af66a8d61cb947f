//! Per-node registry configuration in the shape of k3s's `registries.yaml`, and credentials from
//! Docker config JSON (`.dockerconfigjson`, the payload of Kubernetes `imagePullSecrets`).
//!
//! ```yaml
//! mirrors:
//!   docker.io:
//!     endpoint: ["https://mirror.local:5000", "http://10.0.0.2:5000"]
//!     rewrite: { "^library/(.*)": "dockerhub/$1" }
//! configs:
//!   "mirror.local:5000":
//!     auth: { username: u, password: p }        # or auth: <base64 u:p>, identity_token
//!     tls: { ca_file: /etc/ca.pem, cert_file: c.pem, key_file: k.pem, insecure_skip_verify: false }
//!   "registry.local:5000":
//!     plain_http: true                          # skerry extension: upstream speaks plain HTTP
//! ```
//!
//! Endpoints are tried in order, then the upstream registry itself (HTTPS unless `plain_http`).
//! An `http://` endpoint is the only way to get plain HTTP: localhost gets no implicit exception.
//! Rewrites are regular expressions over the repository with `$1`/`${name}` replacements, like
//! k3s's (Go `regexp.ReplaceAllString`); the first pattern that matches, in key order, applies.
//! An invalid expression is rejected when the file is loaded.

use std::collections::BTreeMap;
use std::path::Path;

use base64::Engine;
use serde::Deserialize;

use crate::error::{ImageError, Result};
use crate::reference::{Reference, DOCKER_HUB};

/// The whole `registries.yaml`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RegistryConfig {
    /// Mirrors per registry host (`*` applies to every registry).
    #[serde(default)]
    pub mirrors: BTreeMap<String, Mirror>,
    /// Auth and TLS per endpoint host.
    #[serde(default)]
    pub configs: BTreeMap<String, EndpointConfig>,
}

/// Mirrors of one registry.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Mirror {
    /// Endpoint URLs (`https://host[:port][/prefix]`), tried in order.
    #[serde(default)]
    pub endpoint: Vec<String>,
    /// Repository rewrites applied when talking to the mirrors.
    #[serde(default)]
    pub rewrite: BTreeMap<String, String>,
}

/// Auth and TLS for one endpoint host.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct EndpointConfig {
    /// Credentials.
    #[serde(default)]
    pub auth: Option<AuthConfig>,
    /// TLS settings.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Talk plain HTTP to this host when it is the upstream (skerry extension).
    #[serde(default)]
    pub plain_http: bool,
}

/// Credentials in a registry config.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct AuthConfig {
    /// User name.
    #[serde(default)]
    pub username: Option<String>,
    /// Password.
    #[serde(default)]
    pub password: Option<String>,
    /// base64 of `user:password`.
    #[serde(default)]
    pub auth: Option<String>,
    /// An OAuth2 refresh token.
    #[serde(default)]
    pub identity_token: Option<String>,
}

/// TLS settings for one endpoint.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct TlsConfig {
    /// PEM bundle of CAs to trust (in addition to nothing else: it replaces the web roots).
    #[serde(default)]
    pub ca_file: Option<String>,
    /// Client certificate (PEM).
    #[serde(default)]
    pub cert_file: Option<String>,
    /// Client key (PEM).
    #[serde(default)]
    pub key_file: Option<String>,
    /// Skip server certificate verification (discouraged).
    #[serde(default)]
    pub insecure_skip_verify: bool,
}

/// Credentials for one registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    /// HTTP basic (also used to obtain bearer tokens).
    Basic {
        /// User name.
        username: String,
        /// Password.
        password: String,
    },
    /// An OAuth2 refresh token exchanged at the token endpoint.
    IdentityToken(String),
}

impl AuthConfig {
    /// The credentials this block describes, if any.
    pub fn credentials(&self, source: &str) -> Result<Option<Credentials>> {
        if let Some(t) = &self.identity_token {
            return Ok(Some(Credentials::IdentityToken(t.clone())));
        }
        if let (Some(u), Some(p)) = (&self.username, &self.password) {
            return Ok(Some(Credentials::Basic { username: u.clone(), password: p.clone() }));
        }
        if let Some(a) = &self.auth {
            return decode_basic(a, source).map(Some);
        }
        Ok(None)
    }
}

fn decode_basic(b64: &str, source: &str) -> Result<Credentials> {
    let bad = |d: &str| ImageError::Config { source_name: source.into(), detail: d.into() };
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|_| bad("auth is not base64"))?;
    let s = String::from_utf8(raw).map_err(|_| bad("auth is not UTF-8"))?;
    let (u, p) = s.split_once(':').ok_or_else(|| bad("auth is not user:password"))?;
    Ok(Credentials::Basic { username: u.into(), password: p.into() })
}

/// One place to try for an image: a base URL plus the repository name to use there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `http` or `https`.
    pub scheme: String,
    /// `host[:port]`.
    pub host: String,
    /// Path prefix before `/v2` (usually empty).
    pub prefix: String,
    /// Repository after rewrites.
    pub repository: String,
    /// Whether this is the registry itself rather than a mirror.
    pub upstream: bool,
}

impl Endpoint {
    /// `scheme://host`.
    pub fn base(&self) -> String {
        format!("{}://{}{}", self.scheme, self.host, self.prefix)
    }
}

impl RegistryConfig {
    /// Loads a `registries.yaml`; a missing file is an empty config.
    pub fn load(path: &Path) -> Result<Self> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(ImageError::io("reading", path, e)),
        };
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses YAML text; `source` names it in errors.
    pub fn parse(text: &str, source: &str) -> Result<Self> {
        let cfg: RegistryConfig = if text.trim().is_empty() {
            Self::default()
        } else {
            serde_yaml::from_str(text).map_err(|e| ImageError::Config {
                source_name: source.into(),
                detail: e.to_string(),
            })?
        };
        for (reg, m) in &cfg.mirrors {
            for pat in m.rewrite.keys() {
                regex_lite::Regex::new(pat).map_err(|e| ImageError::Config {
                    source_name: source.into(),
                    detail: format!("mirrors.{reg}.rewrite: invalid pattern {pat:?}: {e}"),
                })?;
            }
            for ep in &m.endpoint {
                parse_url(ep).ok_or_else(|| ImageError::Config {
                    source_name: source.into(),
                    detail: format!("mirrors.{reg}.endpoint: {ep:?} is not http(s)://host"),
                })?;
            }
        }
        Ok(cfg)
    }

    /// The endpoints to try for `reference`, mirrors first, the upstream last.
    pub fn endpoints(&self, reference: &Reference) -> Vec<Endpoint> {
        let mirror = self.mirrors.get(&reference.registry).or_else(|| self.mirrors.get("*"));
        let mut out = Vec::new();
        if let Some(m) = mirror {
            let repository = apply_rewrites(&m.rewrite, &reference.repository);
            for url in &m.endpoint {
                if let Some((scheme, host, prefix)) = parse_url(url) {
                    let upstream = host == reference.registry;
                    let repository =
                        if upstream { reference.repository.clone() } else { repository.clone() };
                    out.push(Endpoint { scheme, host, prefix, repository, upstream });
                }
            }
        }
        let host = if reference.registry == DOCKER_HUB {
            "registry-1.docker.io".to_string()
        } else {
            reference.registry.clone()
        };
        if !out.iter().any(|e| e.upstream && e.prefix.is_empty()) {
            let plain = self.configs.get(&reference.registry).is_some_and(|c| c.plain_http);
            out.push(Endpoint {
                scheme: if plain { "http" } else { "https" }.into(),
                host,
                prefix: String::new(),
                repository: reference.repository.clone(),
                upstream: true,
            });
        }
        out
    }

    /// Settings for an endpoint host.
    pub fn endpoint_config(&self, host: &str) -> Option<&EndpointConfig> {
        self.configs.get(host).or_else(|| {
            // docker.io's endpoint is registry-1.docker.io; configs are usually keyed docker.io.
            (host == "registry-1.docker.io").then(|| self.configs.get(DOCKER_HUB)).flatten()
        })
    }
}

fn parse_url(url: &str) -> Option<(String, String, String)> {
    let (scheme, rest) = url.split_once("://").unwrap_or(("https", url));
    if scheme != "http" && scheme != "https" {
        return None;
    }
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if host.is_empty() {
        return None;
    }
    let prefix = path.trim_end_matches('/').trim_end_matches("/v2").trim_end_matches('/');
    Some((scheme.to_string(), host.to_string(), prefix.to_string()))
}

/// The repository after the first rewrite (in key order) whose pattern matches it.
fn apply_rewrites(rules: &BTreeMap<String, String>, repository: &str) -> String {
    for (pattern, replacement) in rules {
        // Patterns were validated in `parse`; one that fails to compile here cannot match.
        let Ok(re) = regex_lite::Regex::new(pattern) else { continue };
        if re.is_match(repository) {
            return re.replace_all(repository, replacement.as_str()).into_owned();
        }
    }
    repository.to_string()
}

/// Credentials from a Docker config JSON (`{"auths": {"host": {"auth": "..."}}}`).
#[derive(Debug, Clone, Default)]
pub struct DockerConfig {
    auths: BTreeMap<String, Credentials>,
}

#[derive(Deserialize)]
struct DockerConfigFile {
    #[serde(default)]
    auths: BTreeMap<String, AuthConfig>,
}

impl DockerConfig {
    /// Parses the JSON of a `kubernetes.io/dockerconfigjson` secret or `~/.docker/config.json`.
    pub fn parse(json: &[u8]) -> Result<Self> {
        let file: DockerConfigFile = serde_json::from_slice(json).map_err(|e| {
            ImageError::Config { source_name: ".dockerconfigjson".into(), detail: e.to_string() }
        })?;
        let mut auths = BTreeMap::new();
        for (key, a) in file.auths {
            if let Some(c) = a.credentials(".dockerconfigjson")? {
                auths.insert(normalise_auth_key(&key), c);
            }
        }
        Ok(DockerConfig { auths })
    }

    /// Adds (or replaces) credentials for a registry host.
    pub fn insert(&mut self, registry: &str, credentials: Credentials) {
        self.auths.insert(normalise_auth_key(registry), credentials);
    }

    /// Credentials for a registry host, if any.
    pub fn get(&self, registry: &str) -> Option<&Credentials> {
        self.auths.get(&normalise_auth_key(registry))
    }
}

fn normalise_auth_key(key: &str) -> String {
    let k = key.trim_start_matches("https://").trim_start_matches("http://");
    let host = k.split('/').next().unwrap_or(k);
    match host {
        "index.docker.io" | "registry-1.docker.io" | "docker.io" => DOCKER_HUB.to_string(),
        h => h.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirrors_then_upstream_with_rewrites() {
        let cfg = RegistryConfig::parse(
            r#"
mirrors:
  docker.io:
    endpoint: ["http://127.0.0.1:5001", "https://m2.local/v2"]
    rewrite: { "^library/(.*)": "hub/$1" }
configs:
  "reg.local:5000": { plain_http: true }
"#,
            "t",
        )
        .unwrap();
        let eps = cfg.endpoints(&Reference::parse("busybox").unwrap());
        let urls: Vec<_> = eps.iter().map(|e| (e.base(), e.repository.clone())).collect();
        assert_eq!(
            urls,
            vec![
                ("http://127.0.0.1:5001".into(), "hub/busybox".into()),
                ("https://m2.local".into(), "hub/busybox".into()),
                ("https://registry-1.docker.io".into(), "library/busybox".into()),
            ]
        );
        let eps = cfg.endpoints(&Reference::parse("reg.local:5000/a").unwrap());
        assert_eq!(eps[0].base(), "http://reg.local:5000");
    }

    #[test]
    fn invalid_rewrite_is_rejected() {
        let err = RegistryConfig::parse("mirrors: {x: {rewrite: {'a(b': c}}}", "f").unwrap_err();
        assert!(err.to_string().contains("invalid pattern"), "{err}");
    }

    // k3s applies rewrites with Go's regexp.ReplaceAllString: any expression, `$n` references.
    #[test]
    fn rewrites_are_regular_expressions() {
        let cfg = RegistryConfig::parse(
            r#"
mirrors:
  "reg.example":
    endpoint: ["https://m.local"]
    rewrite: { "^team-([a-z]+)/(.+)$": "teams/$1/$2", "^x$": "unused" }
"#,
            "t",
        )
        .unwrap();
        let repo = |r: &str| cfg.endpoints(&Reference::parse(r).unwrap())[0].repository.clone();
        assert_eq!(repo("reg.example/team-edge/agent:1"), "teams/edge/agent");
        assert_eq!(repo("reg.example/other/app"), "other/app", "no match leaves it alone");
    }

    #[test]
    fn dockerconfigjson_credentials() {
        let json = br#"{"auths":{"https://index.docker.io/v1/":{"auth":"dTpw"},
            "reg:5000":{"username":"a","password":"b"}}}"#;
        let dc = DockerConfig::parse(json).unwrap();
        assert_eq!(
            dc.get("docker.io"),
            Some(&Credentials::Basic { username: "u".into(), password: "p".into() })
        );
        assert!(matches!(dc.get("reg:5000"), Some(Credentials::Basic { .. })));
        assert!(dc.get("other").is_none());
    }
}
