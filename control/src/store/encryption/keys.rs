//! The keys of encryption at rest: an `EncryptionConfiguration` file (the reference
//! apiserver's `apiserver.config.k8s.io/v1` format, `aesgcm` provider, as k3s keeps one in its
//! data dir) and the AES-256-GCM seal/open of one value. A sealed value is
//! `k8s:enc:aesgcm:v1:<key name>:` + 12-byte nonce + ciphertext and tag; the store key is the
//! additional authenticated data, so a value cannot be moved to another key.

use std::path::{Path, PathBuf};

use base64::Engine;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use serde_json::{json, Value};

/// The prefix of every value sealed by this provider.
pub const PREFIX: &[u8] = b"k8s:enc:aesgcm:v1:";

/// Why the keys could not be loaded, or a value not opened.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{action} {path}: {source}")]
    Io { action: &'static str, path: PathBuf, source: std::io::Error },
    #[error("{path}: {reason}")]
    Config { path: PathBuf, reason: String },
    #[error("no randomness for a key or nonce")]
    Random,
    #[error("value sealed with unknown key {0:?}")]
    UnknownKey(String),
    #[error("value under key {0:?} does not decrypt (corrupt, or sealed for another store key)")]
    Corrupt(String),
}

/// One named AES-256 key.
struct NamedKey {
    name: String,
    secret: [u8; 32],
    key: LessSafeKey,
}

/// The keys, newest (the one that seals) first.
pub struct KeyRing {
    keys: Vec<NamedKey>,
    rng: SystemRandom,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.keys.iter().map(|k| k.name.as_str()).collect();
        f.debug_struct("KeyRing").field("keys", &names).finish()
    }
}

impl KeyRing {
    /// Reads the configuration at `path`, or writes one with a fresh key (mode 0600).
    pub fn load_or_create(path: &Path) -> Result<KeyRing, KeyError> {
        if path.exists() {
            return KeyRing::load(path);
        }
        let mut ring = KeyRing { keys: Vec::new(), rng: SystemRandom::new() };
        ring.add_key()?;
        ring.save(path)?;
        Ok(ring)
    }

    /// Reads the configuration at `path`.
    pub fn load(path: &Path) -> Result<KeyRing, KeyError> {
        let bad = |reason: String| KeyError::Config { path: path.to_path_buf(), reason };
        let text = std::fs::read_to_string(path).map_err(|source| KeyError::Io {
            action: "reading",
            path: path.to_path_buf(),
            source,
        })?;
        let doc: Value = serde_json::from_str(&text).map_err(|e| bad(format!("not JSON: {e}")))?;
        let providers = doc
            .pointer("/resources/0/providers")
            .and_then(Value::as_array)
            .ok_or_else(|| bad("no resources[0].providers".into()))?;
        let listed = providers
            .iter()
            .find_map(|p| p.pointer("/aesgcm/keys").and_then(Value::as_array))
            .ok_or_else(|| bad("no aesgcm provider with keys".into()))?;
        let mut keys = Vec::new();
        for entry in listed {
            let name = entry["name"].as_str().unwrap_or("").to_string();
            let encoded = entry["secret"].as_str().unwrap_or("");
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .map_err(|e| bad(format!("key {name:?}: secret is not base64: {e}")))?;
            let secret: [u8; 32] = bytes
                .try_into()
                .map_err(|_| bad(format!("key {name:?}: secret must be 32 bytes")))?;
            if name.is_empty() || name.contains(':') {
                return Err(bad(format!("key name {name:?} must be non-empty without ':'")));
            }
            keys.push(named(name, secret));
        }
        if keys.is_empty() {
            return Err(bad("the aesgcm provider lists no keys".into()));
        }
        Ok(KeyRing { keys, rng: SystemRandom::new() })
    }

    /// Adds a fresh key in front (it seals from now on; the others still open).
    pub fn add_key(&mut self) -> Result<&str, KeyError> {
        let mut secret = [0u8; 32];
        self.rng.fill(&mut secret).map_err(|_| KeyError::Random)?;
        let next = self
            .keys
            .iter()
            .filter_map(|k| k.name.strip_prefix("key-").and_then(|n| n.parse::<u64>().ok()))
            .max()
            .unwrap_or(0)
            + 1;
        self.keys.insert(0, named(format!("key-{next}"), secret));
        Ok(&self.keys[0].name)
    }

    /// Writes the configuration to `path` (mode 0600, atomically).
    pub fn save(&self, path: &Path) -> Result<(), KeyError> {
        let keys: Vec<Value> = self
            .keys
            .iter()
            .map(|k| {
                let secret = base64::engine::general_purpose::STANDARD.encode(k.secret);
                json!({"name": k.name, "secret": secret})
            })
            .collect();
        let doc = json!({
            "kind": "EncryptionConfiguration",
            "apiVersion": "apiserver.config.k8s.io/v1",
            "resources": [{"resources": ["secrets"],
                "providers": [{"aesgcm": {"keys": keys}}, {"identity": {}}]}],
        });
        let text = serde_json::to_string_pretty(&doc).unwrap_or_default();
        crate::pki::write_private(path, &text)
            .map_err(|e| KeyError::Config { path: path.to_path_buf(), reason: e.to_string() })
    }

    /// The key names, the sealing one first.
    pub fn names(&self) -> Vec<&str> {
        self.keys.iter().map(|k| k.name.as_str()).collect()
    }

    /// The name of the key that sealed `value`, if it is sealed.
    pub fn sealed_by(value: &[u8]) -> Option<&str> {
        let rest = value.strip_prefix(PREFIX)?;
        let end = rest.iter().position(|b| *b == b':')?;
        std::str::from_utf8(&rest[..end]).ok()
    }

    /// `plaintext` sealed with the newest key, bound to `store_key`.
    pub fn seal(&self, store_key: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, KeyError> {
        let key = &self.keys[0];
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).map_err(|_| KeyError::Random)?;
        let mut sealed = plaintext.to_vec();
        key.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(store_key),
                &mut sealed,
            )
            .map_err(|_| KeyError::Corrupt(key.name.clone()))?;
        let mut out =
            Vec::with_capacity(PREFIX.len() + key.name.len() + 1 + NONCE_LEN + sealed.len());
        out.extend_from_slice(PREFIX);
        out.extend_from_slice(key.name.as_bytes());
        out.push(b':');
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// The plaintext of a stored value: sealed values are opened, others (written before
    /// encryption was turned on) pass through, as the reference's trailing `identity` provider.
    pub fn open(&self, store_key: &[u8], value: &[u8]) -> Result<Vec<u8>, KeyError> {
        let Some(name) = KeyRing::sealed_by(value) else { return Ok(value.to_vec()) };
        let key = self
            .keys
            .iter()
            .find(|k| k.name == name)
            .ok_or_else(|| KeyError::UnknownKey(name.to_string()))?;
        let body = &value[PREFIX.len() + name.len() + 1..];
        if body.len() < NONCE_LEN {
            return Err(KeyError::Corrupt(name.to_string()));
        }
        let (nonce, sealed) = body.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce)
            .map_err(|_| KeyError::Corrupt(name.to_string()))?;
        let mut buf = sealed.to_vec();
        let plain = key
            .key
            .open_in_place(nonce, Aad::from(store_key), &mut buf)
            .map_err(|_| KeyError::Corrupt(name.to_string()))?;
        Ok(plain.to_vec())
    }

    /// Whether `value` is sealed with the newest key (else a rewrite would re-seal it).
    pub fn is_current(&self, value: &[u8]) -> bool {
        KeyRing::sealed_by(value) == Some(self.keys[0].name.as_str())
    }
}

fn named(name: String, secret: [u8; 32]) -> NamedKey {
    let key = LessSafeKey::new(
        UnboundKey::new(&AES_256_GCM, &secret).expect("AES-256 takes a 32-byte key"),
    );
    NamedKey { name, secret, key }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_rotate_and_reject_tampering() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("encryption-config.json");
        let mut ring = KeyRing::load_or_create(&path).unwrap();
        let sealed = ring.seal(b"/registry/secrets/a/b", b"hunter2").unwrap();
        assert!(sealed.starts_with(b"k8s:enc:aesgcm:v1:key-1:"));
        assert!(!sealed.windows(7).any(|w| w == b"hunter2"), "no plaintext in the sealed value");
        assert_eq!(ring.open(b"/registry/secrets/a/b", &sealed).unwrap(), b"hunter2");
        // Bound to its store key: moved elsewhere, it does not open.
        assert!(matches!(ring.open(b"/registry/secrets/a/c", &sealed), Err(KeyError::Corrupt(_))));
        let mut flipped = sealed.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(ring.open(b"/registry/secrets/a/b", &flipped).is_err());
        // Plaintext from before encryption passes through.
        assert_eq!(ring.open(b"k", b"{\"plain\":1}").unwrap(), b"{\"plain\":1}");

        // Rotation: the new key seals, the old one still opens; the file round-trips.
        assert_eq!(ring.add_key().unwrap(), "key-2");
        ring.save(&path).unwrap();
        let ring = KeyRing::load(&path).unwrap();
        assert_eq!(ring.names(), ["key-2", "key-1"]);
        assert!(!ring.is_current(&sealed));
        assert_eq!(ring.open(b"/registry/secrets/a/b", &sealed).unwrap(), b"hunter2");
        let resealed = ring.seal(b"/registry/secrets/a/b", b"hunter2").unwrap();
        assert!(ring.is_current(&resealed));
    }

    #[test]
    fn bad_configurations_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.json");
        std::fs::write(&path, "{").unwrap();
        assert!(KeyRing::load(&path).unwrap_err().to_string().contains("not JSON"));
        let short =
            r#"{"resources":[{"providers":[{"aesgcm":{"keys":[{"name":"k","secret":"AAAA"}]}}]}]}"#;
        std::fs::write(&path, short).unwrap();
        assert!(KeyRing::load(&path).unwrap_err().to_string().contains("32 bytes"));
        let unknown = KeyRing::load_or_create(&dir.path().join("n.json")).unwrap();
        let err = unknown.open(b"k", b"k8s:enc:aesgcm:v1:nope:0123456789abcdef").unwrap_err();
        assert!(matches!(err, KeyError::UnknownKey(n) if n == "nope"));
    }
}
