//! Compact JWS with ES256 (ECDSA P-256 + SHA-256), the only algorithm Skerry signs service
//! account tokens with: `ring` has it and it cross-compiles to the boards. The signing key is a
//! PKCS#8 PEM file in the server's data directory (mode 0600), made at first start and reused so
//! tokens survive a restart. The public half is published as a JWK (`/openid/v1/jwks`) with the
//! reference's key id: the unpadded base64url SHA-256 of the key's PKIX (SubjectPublicKeyInfo) DER.
//!
//! Verification never panics: every malformed part is an error value.

use std::path::Path;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{
    EcdsaKeyPair, KeyPair, UnparsedPublicKey, ECDSA_P256_SHA256_FIXED,
    ECDSA_P256_SHA256_FIXED_SIGNING,
};
use serde_json::{json, Value};

/// The JWS algorithm of every token Skerry signs.
pub const ALGORITHM: &str = "ES256";

/// The DER prefix of a P-256 SubjectPublicKeyInfo (id-ecPublicKey, prime256v1, BIT STRING of
/// 66 bytes); the 65-byte uncompressed point follows.
const P256_SPKI_PREFIX: &[u8] = &[
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// Why a key could not be made, read or written.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{action} service account key {path}: {source}")]
    Io { action: &'static str, path: String, source: std::io::Error },
    #[error("service account key {path}: {reason}")]
    Invalid { path: String, reason: String },
}

/// Why a token was not accepted (or not produced).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    #[error("unsupported signing algorithm {0:?}")]
    Algorithm(String),
    #[error("token signature is invalid")]
    Signature,
    #[error("signing failed")]
    Sign,
}

/// The service account token signing key (private).
pub struct SigningKey {
    pair: EcdsaKeyPair,
    pkcs8: Vec<u8>,
    public: VerifyingKey,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey").field("kid", &self.public.kid).finish_non_exhaustive()
    }
}

/// A public key tokens are verified with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyingKey {
    /// The uncompressed EC point (0x04 ‖ X ‖ Y).
    point: Vec<u8>,
    /// The key id carried in token headers and the JWKS.
    pub kid: String,
}

impl SigningKey {
    /// A new random key.
    pub fn generate() -> Result<SigningKey, String> {
        let rng = SystemRandom::new();
        let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| "generating an ECDSA P-256 key failed".to_string())?;
        SigningKey::from_pkcs8(doc.as_ref())
    }

    fn from_pkcs8(pkcs8: &[u8]) -> Result<SigningKey, String> {
        let pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8, &SystemRandom::new())
                .map_err(|e| format!("not a PKCS#8 ECDSA P-256 key: {e}"))?;
        let public = VerifyingKey::from_point(pair.public_key().as_ref().to_vec());
        Ok(SigningKey { pair, pkcs8: pkcs8.to_vec(), public })
    }

    /// A key from PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`).
    pub fn from_pem(pem: &str) -> Result<SigningKey, String> {
        let mut reader = pem.as_bytes();
        match rustls_pemfile::private_key(&mut reader) {
            Ok(Some(rustls::pki_types::PrivateKeyDer::Pkcs8(der))) => {
                SigningKey::from_pkcs8(der.secret_pkcs8_der())
            }
            Ok(Some(_)) => Err("want a PKCS#8 \"PRIVATE KEY\" PEM block".into()),
            Ok(None) => Err("no private key PEM block".into()),
            Err(e) => Err(format!("reading PEM: {e}")),
        }
    }

    /// The key as PKCS#8 PEM.
    pub fn to_pem(&self) -> String {
        let b64 = STANDARD.encode(&self.pkcs8);
        let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
        for line in b64.as_bytes().chunks(64) {
            pem.push_str(&String::from_utf8_lossy(line));
            pem.push('\n');
        }
        pem.push_str("-----END PRIVATE KEY-----\n");
        pem
    }

    /// Loads the key at `path`, creating it (mode 0600) when the file does not exist.
    pub fn load_or_create(path: &Path) -> Result<SigningKey, KeyError> {
        let shown = path.display().to_string();
        match std::fs::read_to_string(path) {
            Ok(pem) => SigningKey::from_pem(&pem)
                .map_err(|reason| KeyError::Invalid { path: shown, reason }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = SigningKey::generate()
                    .map_err(|reason| KeyError::Invalid { path: shown.clone(), reason })?;
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).map_err(|source| KeyError::Io {
                        action: "creating the directory of",
                        path: shown.clone(),
                        source,
                    })?;
                }
                crate::pki::write_private(path, &key.to_pem())
                    .map_err(|e| KeyError::Invalid { path: shown, reason: e.to_string() })?;
                Ok(key)
            }
            Err(source) => Err(KeyError::Io { action: "reading", path: shown, source }),
        }
    }

    /// The public half.
    pub fn verifying_key(&self) -> &VerifyingKey {
        &self.public
    }

    /// Signs `claims` as a compact JWS: `header.payload.signature`.
    pub fn sign(&self, claims: &Value) -> Result<String, JwtError> {
        let header = json!({"alg": ALGORITHM, "kid": self.public.kid});
        let encode = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
        let signing_input = format!("{}.{}", encode(&header), encode(claims));
        let signature = self
            .pair
            .sign(&SystemRandom::new(), signing_input.as_bytes())
            .map_err(|_| JwtError::Sign)?;
        Ok(format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature.as_ref())))
    }
}

impl VerifyingKey {
    fn from_point(point: Vec<u8>) -> VerifyingKey {
        let mut spki = P256_SPKI_PREFIX.to_vec();
        spki.extend_from_slice(&point);
        let digest = ring::digest::digest(&ring::digest::SHA256, &spki);
        VerifyingKey { point, kid: URL_SAFE_NO_PAD.encode(digest.as_ref()) }
    }

    /// A key from a JWK (`kty: EC`, `crv: P-256`); `None` when it is not one.
    pub fn from_jwk(jwk: &Value) -> Option<VerifyingKey> {
        if jwk["kty"] != "EC" || jwk["crv"] != "P-256" {
            return None;
        }
        let coordinate =
            |name: &str| URL_SAFE_NO_PAD.decode(jwk[name].as_str()?).ok().filter(|c| c.len() == 32);
        let mut point = vec![0x04];
        point.extend(coordinate("x")?);
        point.extend(coordinate("y")?);
        Some(VerifyingKey::from_point(point))
    }

    /// The key as a JWK, as the reference publishes it.
    pub fn jwk(&self) -> Value {
        let x = self.point.get(1..33).unwrap_or_default();
        let y = self.point.get(33..65).unwrap_or_default();
        json!({
            "use": "sig",
            "kty": "EC",
            "kid": self.kid,
            "crv": "P-256",
            "alg": ALGORITHM,
            "x": URL_SAFE_NO_PAD.encode(x),
            "y": URL_SAFE_NO_PAD.encode(y),
        })
    }

    fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &self.point)
            .verify(message, signature)
            .is_ok()
    }
}

/// The claims of a compact JWS, without checking its signature: for routing a token to the
/// authenticator that owns its issuer before doing any cryptography.
pub fn unverified_claims(token: &str) -> Result<Value, JwtError> {
    let mut parts = token.split('.');
    let (Some(_), Some(payload), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Malformed("want three dot-separated parts"));
    };
    decode_json(payload)
}

fn decode_json(part: &str) -> Result<Value, JwtError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .map_err(|_| JwtError::Malformed("a part is not base64url"))?;
    let value: Value =
        serde_json::from_slice(&bytes).map_err(|_| JwtError::Malformed("a part is not JSON"))?;
    if value.is_object() {
        Ok(value)
    } else {
        Err(JwtError::Malformed("a part is not a JSON object"))
    }
}

/// Verifies a compact JWS against `keys` (the one its `kid` names first, then the others, as
/// the reference tries every key) and returns its claims.
pub fn verify(token: &str, keys: &[VerifyingKey]) -> Result<Value, JwtError> {
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Malformed("want three dot-separated parts"));
    };
    let header_json = decode_json(header)?;
    match header_json["alg"].as_str() {
        Some(ALGORITHM) => {}
        other => return Err(JwtError::Algorithm(other.unwrap_or_default().to_string())),
    }
    let signature =
        URL_SAFE_NO_PAD.decode(signature).map_err(|_| JwtError::Malformed("bad signature"))?;
    let message = &token.as_bytes()[..header.len() + 1 + payload.len()];
    let kid = header_json["kid"].as_str();
    let mut ordered: Vec<&VerifyingKey> = keys.iter().filter(|k| Some(&*k.kid) == kid).collect();
    ordered.extend(keys.iter().filter(|k| Some(&*k.kid) != kid));
    if ordered.iter().any(|k| k.verify(message, &signature)) {
        decode_json(payload)
    } else {
        Err(JwtError::Signature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_and_verifies_and_rejects_tampering() {
        let key = SigningKey::generate().unwrap();
        let claims = json!({"sub": "system:serviceaccount:default:x", "exp": 10});
        let token = key.sign(&claims).unwrap();
        let keys = [key.verifying_key().clone()];
        assert_eq!(verify(&token, &keys).unwrap(), claims);

        // Another payload under the same signature.
        let (head, rest) = token.split_once('.').unwrap();
        let (_, signature) = rest.split_once('.').unwrap();
        let forged = URL_SAFE_NO_PAD.encode(json!({"sub": "system:admin", "exp": 10}).to_string());
        assert_eq!(
            verify(&format!("{head}.{forged}.{signature}"), &keys),
            Err(JwtError::Signature)
        );
        // A flipped signature byte.
        let mut bytes = URL_SAFE_NO_PAD.decode(signature).unwrap();
        bytes[5] ^= 1;
        let bad =
            format!("{head}.{}.{}", rest.split_once('.').unwrap().0, URL_SAFE_NO_PAD.encode(bytes));
        assert_eq!(verify(&bad, &keys), Err(JwtError::Signature));
        // Another key.
        let other = SigningKey::generate().unwrap();
        assert_eq!(verify(&token, &[other.verifying_key().clone()]), Err(JwtError::Signature));
    }

    #[test]
    fn malformed_tokens_are_errors_not_panics() {
        let key = SigningKey::generate().unwrap();
        let keys = [key.verifying_key().clone()];
        for token in ["", ".", "..", "a.b.c", "a.b.c.d", "😀.😀.😀", "e30.e30.", "W10.e30.AA"]
        {
            assert!(verify(token, &keys).is_err(), "{token}");
        }
        // `alg: none` is refused whatever the signature.
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#),
            URL_SAFE_NO_PAD.encode("{}")
        );
        assert_eq!(verify(&none, &keys), Err(JwtError::Algorithm("none".into())));
    }

    #[test]
    fn pem_round_trip_and_jwk_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tls/sa.key");
        let first = SigningKey::load_or_create(&path).unwrap();
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&path).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        let again = SigningKey::load_or_create(&path).unwrap();
        assert_eq!(first.verifying_key(), again.verifying_key());
        assert_eq!(first.verifying_key().kid.len(), 43);

        let jwk = first.verifying_key().jwk();
        let from_jwk = VerifyingKey::from_jwk(&jwk).unwrap();
        let token = again.sign(&json!({"a": 1})).unwrap();
        assert_eq!(verify(&token, &[from_jwk]).unwrap(), json!({"a": 1}));

        std::fs::write(&path, "not a key").unwrap();
        assert!(SigningKey::load_or_create(&path).is_err());
    }
}
