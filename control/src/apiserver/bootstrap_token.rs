//! Bootstrap tokens, as the reference apiserver's bootstrap-token authenticator: a token
//! `<id>.<secret>` (6 and 16 characters of `[a-z0-9]`) is a Secret `kube-system/bootstrap-token-<id>`
//! of type `bootstrap.kubernetes.io/token`; a request bearing it is the user
//! `system:bootstrap:<id>` in `system:bootstrappers` while the Secret exists, allows
//! authentication and has not expired. Agents join with one (`DATA_DIR/server/node-token`, or
//! `skerry token create`).
//!
//! The join token handed to agents is `K10<sha256 of the CA PEM>::<id>.<secret>` (k3s's
//! shape): the hash lets a new agent pin the cluster CA it fetches from `/cacerts`.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use serde_json::{json, Value};

use super::authn::User;
use super::server::ApiServer;
use super::status::ApiError;
use super::table::format::parse_time;

/// The Secret type of bootstrap tokens.
pub const SECRET_TYPE: &str = "bootstrap.kubernetes.io/token";
/// The group every bootstrap token authenticates into.
pub const BOOTSTRAPPERS: &str = "system:bootstrappers";
/// The namespace of bootstrap token Secrets.
pub const NAMESPACE: &str = "kube-system";

const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// A bootstrap token: its public id and its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootstrapToken {
    pub id: String,
    pub secret: String,
}

impl BootstrapToken {
    /// A new random token.
    pub fn generate() -> BootstrapToken {
        let mut bytes = [0u8; 22];
        // The OS RNG does not fail on Linux.
        let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes);
        let text: String =
            bytes.iter().map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char).collect();
        BootstrapToken { id: text[..6].to_string(), secret: text[6..].to_string() }
    }

    /// `<id>.<secret>`, or `None` when `text` is not of that form.
    pub fn parse(text: &str) -> Option<BootstrapToken> {
        let (id, secret) = text.split_once('.')?;
        let ok = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| ALPHABET.contains(&b));
        (ok(id, 6) && ok(secret, 16))
            .then(|| BootstrapToken { id: id.to_string(), secret: secret.to_string() })
    }

    /// `<id>.<secret>`.
    pub fn text(&self) -> String {
        format!("{}.{}", self.id, self.secret)
    }

    /// The Secret's name.
    pub fn secret_name(&self) -> String {
        secret_name(&self.id)
    }

    /// The Secret holding this token; `expires` is an RFC 3339 time.
    pub fn secret(&self, expires: Option<&str>, description: &str) -> Value {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let mut data = json!({
            "token-id": b64(&self.id),
            "token-secret": b64(&self.secret),
            "usage-bootstrap-authentication": b64("true"),
            "usage-bootstrap-signing": b64("true"),
            "description": b64(description),
        });
        if let Some(at) = expires {
            data["expiration"] = json!(b64(at));
        }
        json!({
            "apiVersion": "v1", "kind": "Secret", "type": SECRET_TYPE,
            "metadata": {"name": self.secret_name(), "namespace": NAMESPACE},
            "data": data,
        })
    }
}

/// The Secret name of token `id`.
pub fn secret_name(id: &str) -> String {
    format!("bootstrap-token-{id}")
}

/// The hex SHA-256 of the CA certificate PEM, as carried in join tokens.
pub fn ca_hash(ca_pem: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, ca_pem.as_bytes());
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// The join token agents are given: `K10<ca hash>::<id>.<secret>`.
pub fn join_token(ca_pem: &str, token: &BootstrapToken) -> String {
    format!("K10{}::{}", ca_hash(ca_pem), token.text())
}

/// A string field of a Secret's `data`, decoded.
fn data_field(secret: &Value, key: &str) -> Option<String> {
    let encoded = secret["data"][key].as_str()?;
    let bytes = base64::engine::general_purpose::STANDARD.decode(encoded).ok()?;
    String::from_utf8(bytes).ok()
}

/// The user a bootstrap token Secret makes of `token`, if it is valid now.
pub fn user_for(secret: &Value, token: &BootstrapToken, now: SystemTime) -> Option<User> {
    if secret["type"].as_str() != Some(SECRET_TYPE)
        || secret["metadata"]["deletionTimestamp"].is_string()
    {
        return None;
    }
    let matches = data_field(secret, "token-id")? == token.id
        && constant_time_eq(
            data_field(secret, "token-secret")?.as_bytes(),
            token.secret.as_bytes(),
        );
    if !matches || data_field(secret, "usage-bootstrap-authentication").as_deref() != Some("true") {
        return None;
    }
    if let Some(expiration) = data_field(secret, "expiration") {
        let expires = parse_time(&expiration)?;
        let now = now.duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
        if now >= expires {
            return None;
        }
    }
    let mut groups = vec![BOOTSTRAPPERS.to_string()];
    if let Some(extra) = data_field(secret, "auth-extra-groups") {
        groups.extend(
            extra
                .split(',')
                .map(str::trim)
                .filter(|g| g.starts_with("system:bootstrappers:"))
                .map(String::from),
        );
    }
    Some(User::new(format!("system:bootstrap:{}", token.id), groups))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Authenticates `bearer` as a bootstrap token against the store.
pub async fn authenticate(server: &ApiServer, bearer: &str) -> Option<User> {
    let token = BootstrapToken::parse(bearer)?;
    let key = format!("/registry/secrets/{NAMESPACE}/{}", token.secret_name());
    let (secret, _) = super::rest::read(server, &key).await.ok().flatten()?;
    user_for(&secret, &token, SystemTime::now())
}

/// Makes sure `DATA_DIR/server/node-token` holds a join token whose Secret exists (reusing the
/// file's token across restarts); returns the join token.
pub async fn ensure_node_token(
    server: &ApiServer,
    data_dir: &Path,
    ca_pem: &str,
) -> Result<String, ApiError> {
    let dir = data_dir.join("server");
    let path = dir.join("node-token");
    let existing = std::fs::read_to_string(&path)
        .ok()
        .and_then(|text| text.trim().rsplit_once("::").and_then(|(_, t)| BootstrapToken::parse(t)));
    let token = existing.unwrap_or_else(BootstrapToken::generate);
    let secret =
        token.secret(None, "The node join token of skerry server (DATA_DIR/server/node-token).");
    super::serve::ensure(server, &format!("/api/v1/namespaces/{NAMESPACE}/secrets"), secret)
        .await?;
    let join = join_token(ca_pem, &token);
    std::fs::create_dir_all(&dir)
        .map_err(|e| ApiError::internal(format!("creating {}: {e}", dir.display())))?;
    let text = format!("{join}\n");
    if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
        crate::pki::write_private(&path, &text).map_err(|e| ApiError::internal(e.to_string()))?;
    }
    Ok(join)
}

/// A bootstrap token as `skerry token list` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    pub id: String,
    /// RFC 3339, or `None` for a token that does not expire.
    pub expires: Option<String>,
    pub description: String,
}

/// Creates a token valid for `ttl` (`None`: forever) through the API; returns it.
pub async fn create(
    client: kube::Client,
    ttl: Option<std::time::Duration>,
    description: &str,
) -> Result<BootstrapToken, kube::Error> {
    let token = BootstrapToken::generate();
    let expires = ttl.map(|ttl| super::meta::rfc3339(SystemTime::now() + ttl));
    let secret: k8s_openapi::api::core::v1::Secret =
        serde_json::from_value(token.secret(expires.as_deref(), description))
            .map_err(kube::Error::SerdeError)?;
    let api: kube::Api<k8s_openapi::api::core::v1::Secret> =
        kube::Api::namespaced(client, NAMESPACE);
    api.create(&Default::default(), &secret).await?;
    Ok(token)
}

/// Every bootstrap token, oldest first.
pub async fn list(client: kube::Client) -> Result<Vec<TokenInfo>, kube::Error> {
    let api: kube::Api<k8s_openapi::api::core::v1::Secret> =
        kube::Api::namespaced(client, NAMESPACE);
    let params = kube::api::ListParams::default().fields(&format!("type={SECRET_TYPE}"));
    let secrets = match api.list(&params).await {
        Ok(list) => list.items,
        // A server without the `type` field selector: filter here.
        Err(_) => api.list(&Default::default()).await?.items,
    };
    Ok(secrets
        .into_iter()
        .filter(|s| s.type_.as_deref() == Some(SECRET_TYPE))
        .filter_map(|s| {
            let value = serde_json::to_value(&s).ok()?;
            Some(TokenInfo {
                id: data_field(&value, "token-id")?,
                expires: data_field(&value, "expiration"),
                description: data_field(&value, "description").unwrap_or_default(),
            })
        })
        .collect())
}

/// Deletes token `id` (its Secret).
pub async fn delete(client: kube::Client, id: &str) -> Result<(), kube::Error> {
    let api: kube::Api<k8s_openapi::api::core::v1::Secret> =
        kube::Api::namespaced(client, NAMESPACE);
    api.delete(&secret_name(id), &Default::default()).await.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn tokens_round_trip_and_malformed_ones_are_not_tokens() {
        let token = BootstrapToken::generate();
        assert_eq!(BootstrapToken::parse(&token.text()), Some(token.clone()));
        for bad in [
            "abcdef",
            "abcdef.0123456789abcdeF",
            "abc.0123456789abcdef",
            "abcdef.0123456789abcde",
            "ab-def.0123456789abcdef",
        ] {
            assert_eq!(BootstrapToken::parse(bad), None, "{bad}");
        }
        let join = join_token("CA", &token);
        assert!(
            join.starts_with("K10") && join.ends_with(&format!("::{}", token.text())),
            "{join}"
        );
        assert_eq!(join.len(), 3 + 64 + 2 + 23);
    }

    #[test]
    fn a_secret_authenticates_its_token_until_it_expires() {
        let token = BootstrapToken { id: "abcdef".into(), secret: "0123456789abcdef".into() };
        let secret = token.secret(Some("2030-01-01T00:00:00Z"), "test");
        let before = UNIX_EPOCH + Duration::from_secs(1_800_000_000); // 2027
        let user = user_for(&secret, &token, before).unwrap();
        assert_eq!(user.name, "system:bootstrap:abcdef");
        assert!(user.groups.contains(&BOOTSTRAPPERS.to_string()), "{:?}", user.groups);

        let after = UNIX_EPOCH + Duration::from_secs(1_900_000_000); // 2030-03
        assert_eq!(user_for(&secret, &token, after), None, "expired");
        let wrong = BootstrapToken { secret: "0123456789abcdee".into(), ..token.clone() };
        assert_eq!(user_for(&secret, &wrong, before), None, "wrong secret");
        let mut opaque = secret.clone();
        opaque["type"] = json!("Opaque");
        assert_eq!(user_for(&opaque, &token, before), None, "not a bootstrap token secret");
        let mut no_auth = secret;
        no_auth["data"]["usage-bootstrap-authentication"] = json!("ZmFsc2U="); // "false"
        assert_eq!(user_for(&no_auth, &token, before), None, "not for authentication");
    }
}
