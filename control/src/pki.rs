//! The cluster's certificates: a self-signed cluster CA, the API server's serving certificate
//! and client certificates (the admin's, later the agents'), all kept as PEM files in one
//! directory so a restart reuses them.
//!
//! Keys are ECDSA P-256 made with `ring` (through `rcgen`): it cross-compiles to the ARM boards.
//! Certificates start one day in the past so that boards whose clock lags (no RTC) still accept
//! them.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SerialNumber,
};
use time::{Duration, OffsetDateTime};

/// Why a certificate could not be made, read or written.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{action} {path}: {source}")]
    Io { action: &'static str, path: PathBuf, source: std::io::Error },
    #[error("generating {what}: {source}")]
    Generate { what: String, source: rcgen::Error },
    #[error("reading {path}: {source}")]
    Parse { path: PathBuf, source: rcgen::Error },
    #[error("the certificate signing request: {0}")]
    Request(String),
}

/// The cluster CA: its certificate and the key that signs serving and client certificates.
pub struct ClusterCa {
    /// The CA certificate, PEM.
    pub cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for ClusterCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterCa").finish_non_exhaustive()
    }
}

/// A certificate with its private key, both PEM.
#[derive(Clone)]
pub struct CertifiedKey {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for CertifiedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertifiedKey").finish_non_exhaustive()
    }
}

/// Common name of the cluster CA.
const CA_COMMON_NAME: &str = "skerry-ca";

fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, CA_COMMON_NAME);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

fn validity(params: &mut CertificateParams, years: i64) {
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::days(1);
    params.not_after = now + Duration::days(365 * years);
}

fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    // The serial only needs to be unique per CA; a failing RNG leaves zeros, still a valid serial.
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes);
    bytes[0] &= 0x7f; // positive INTEGER
    SerialNumber::from_slice(&bytes)
}

fn read(path: &Path) -> Result<String, PkiError> {
    fs::read_to_string(path).map_err(|source| PkiError::Io {
        action: "reading",
        path: path.to_path_buf(),
        source,
    })
}

/// Writes `contents` to `path` with mode 0600 (private keys, kubeconfigs).
pub fn write_private(path: &Path, contents: &str) -> Result<(), PkiError> {
    let io = |source| PkiError::Io { action: "writing", path: path.to_path_buf(), source };
    let tmp = path.with_extension("tmp");
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    file.write_all(contents.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)?;
    // Renaming makes the write atomic: a crash never leaves half a key behind.
    fs::rename(&tmp, path).map_err(io)
}

impl ClusterCa {
    /// Loads the CA from `dir/ca.crt` + `dir/ca.key`, creating both on first use.
    pub fn load_or_create(dir: &Path) -> Result<ClusterCa, PkiError> {
        let cert_path = dir.join("ca.crt");
        let key_path = dir.join("ca.key");
        if cert_path.exists() && key_path.exists() {
            let key_pem = read(&key_path)?;
            let key = KeyPair::from_pem(&key_pem)
                .map_err(|source| PkiError::Parse { path: key_path.clone(), source })?;
            // Signing needs only the CA's subject and key, so rebuilding its parameters (same
            // name) is enough; the certificate on disk stays the one clients trust.
            return Ok(ClusterCa {
                cert_pem: read(&cert_path)?,
                issuer: Issuer::new(ca_params(), key),
            });
        }
        fs::create_dir_all(dir).map_err(|source| PkiError::Io {
            action: "creating",
            path: dir.to_path_buf(),
            source,
        })?;
        let gen = |source| PkiError::Generate { what: "the cluster CA".into(), source };
        let key = KeyPair::generate().map_err(gen)?;
        let mut params = ca_params();
        validity(&mut params, 10);
        params.serial_number = Some(random_serial());
        let cert = params.self_signed(&key).map_err(gen)?;
        write_private(&key_path, &key.serialize_pem())?;
        write_private(&cert_path, &cert.pem())?;
        Ok(ClusterCa { cert_pem: cert.pem(), issuer: Issuer::new(ca_params(), key) })
    }

    /// A new server certificate for `sans` (DNS names and IP addresses).
    pub fn issue_serving(
        &self,
        common_name: &str,
        sans: &[String],
    ) -> Result<CertifiedKey, PkiError> {
        let gen = |source| PkiError::Generate {
            what: format!("a serving certificate for {sans:?}"),
            source,
        };
        let mut params = CertificateParams::new(sans.to_vec()).map_err(gen)?;
        params.distinguished_name.push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages =
            vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        self.sign(params, 1, gen)
    }

    /// A new client certificate for user `common_name` in group `organization` (the subject's
    /// O; rcgen keeps one value per attribute type, so one group per certificate).
    pub fn issue_client(
        &self,
        common_name: &str,
        organization: Option<&str>,
    ) -> Result<CertifiedKey, PkiError> {
        let gen = |source| PkiError::Generate {
            what: format!("a client certificate for {common_name}"),
            source,
        };
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, common_name);
        if let Some(org) = organization {
            params.distinguished_name.push(DnType::OrganizationName, org);
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages =
            vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        self.sign(params, 1, gen)
    }

    /// Signs a PEM certificate signing request (its signature checked) as a client certificate
    /// for one year; the caller decides first whether its [`request_subject`] may be signed.
    pub fn sign_client_request(&self, csr_pem: &str) -> Result<String, PkiError> {
        let mut csr = rcgen::CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| PkiError::Request(e.to_string()))?;
        let params = &mut csr.params;
        validity(params, 1);
        params.serial_number = Some(random_serial());
        params.use_authority_key_identifier_extension = true;
        params.is_ca = IsCa::ExplicitNoCa;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages =
            vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        // Only the subject and key come from the request: no SANs or extensions of its own.
        params.subject_alt_names.clear();
        params.custom_extensions.clear();
        let cert = csr.signed_by(&self.issuer).map_err(|e| PkiError::Request(e.to_string()))?;
        Ok(cert.pem())
    }

    fn sign(
        &self,
        mut params: CertificateParams,
        years: i64,
        gen: impl Fn(rcgen::Error) -> PkiError,
    ) -> Result<CertifiedKey, PkiError> {
        validity(&mut params, years);
        params.serial_number = Some(random_serial());
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().map_err(&gen)?;
        let cert = params.signed_by(&key, &self.issuer).map_err(&gen)?;
        Ok(CertifiedKey { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }
}

/// The subject a certificate signing request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestSubject {
    /// CN: the user name.
    pub common_name: Option<String>,
    /// O: the group (rcgen reads one value per attribute type).
    pub organization: Option<String>,
}

/// The subject of a PEM certificate signing request, after checking its signature.
pub fn request_subject(csr_pem: &str) -> Result<RequestSubject, PkiError> {
    let csr = rcgen::CertificateSigningRequestParams::from_pem(csr_pem)
        .map_err(|e| PkiError::Request(e.to_string()))?;
    let name = &csr.params.distinguished_name;
    let text = |ty: DnType| {
        name.get(&ty).and_then(|v| match v {
            rcgen::DnValue::Utf8String(s) => Some(s.clone()),
            rcgen::DnValue::PrintableString(s) => Some(s.as_str().to_string()),
            _ => None,
        })
    };
    Ok(RequestSubject {
        common_name: text(DnType::CommonName),
        organization: text(DnType::OrganizationName),
    })
}

/// Loads `dir/<name>.crt` + `.key`, or issues them with `issue` and writes them. `fingerprint`
/// names what the certificate was issued for (e.g. its SANs); a change re-issues it.
pub fn load_or_issue(
    dir: &Path,
    name: &str,
    fingerprint: &str,
    issue: impl FnOnce() -> Result<CertifiedKey, PkiError>,
) -> Result<CertifiedKey, PkiError> {
    let cert_path = dir.join(format!("{name}.crt"));
    let key_path = dir.join(format!("{name}.key"));
    let fp_path = dir.join(format!("{name}.issued-for"));
    if cert_path.exists() && key_path.exists() {
        let issued_for = fs::read_to_string(&fp_path).unwrap_or_default();
        if issued_for == fingerprint {
            return Ok(CertifiedKey { cert_pem: read(&cert_path)?, key_pem: read(&key_path)? });
        }
    }
    let certified = issue()?;
    write_private(&key_path, &certified.key_pem)?;
    write_private(&cert_path, &certified.cert_pem)?;
    write_private(&fp_path, fingerprint)?;
    Ok(certified)
}

/// A kubeconfig for `server` that authenticates with a client certificate.
pub fn kubeconfig(server: &str, ca_pem: &str, client: &CertifiedKey, user: &str) -> String {
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: skerry\n  cluster:\n    server: {server}\n    \
         certificate-authority-data: {ca}\nusers:\n- name: {user}\n  user:\n    \
         client-certificate-data: {cert}\n    client-key-data: {key}\ncontexts:\n- name: skerry\n  \
         context:\n    cluster: skerry\n    user: {user}\ncurrent-context: skerry\npreferences: {{}}\n",
        ca = b64(ca_pem),
        cert = b64(&client.cert_pem),
        key = b64(&client.key_pem),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_reuses_the_ca_and_reissues_only_on_new_sans() {
        let dir = tempfile::tempdir().unwrap();
        let ca = ClusterCa::load_or_create(dir.path()).unwrap();
        let first = load_or_issue(dir.path(), "serving", "a", || {
            ca.issue_serving("skerry", &["localhost".into(), "127.0.0.1".into()])
        })
        .unwrap();
        let again = ClusterCa::load_or_create(dir.path()).unwrap();
        assert_eq!(ca.cert_pem, again.cert_pem);
        let same = load_or_issue(dir.path(), "serving", "a", || panic!("must reuse")).unwrap();
        assert_eq!(first.cert_pem, same.cert_pem);
        let other = load_or_issue(dir.path(), "serving", "b", || {
            again.issue_serving("skerry", &["x".into()])
        })
        .unwrap();
        assert_ne!(first.cert_pem, other.cert_pem);
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(dir.path().join("ca.key")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
