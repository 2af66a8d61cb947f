//! The cluster's certificates: a self-signed cluster CA, the API server's serving certificate
//! and client certificates (the admin's, later the agents'), all kept as PEM files in one
//! directory so a restart reuses them.
//!
//! Keys are ECDSA P-256 made with `ring` (through `rcgen`): it cross-compiles to the ARM boards.
//! Certificates start one day in the past so that boards whose clock lags (no RTC) still accept
//! them. Leaf certificates live a year and are issued again once within [`RENEW_WITHIN`] of
//! their end, as k3s does (the CA lives ten years and is kept).

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

mod client;

pub use client::{DEFAULT_TTL, MIN_TTL};

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

/// How long before its end a leaf certificate is issued again (k3s: 90 days).
pub const RENEW_WITHIN: Duration = Duration::days(90);
/// How long a leaf certificate lives.
const LEAF_LIFETIME: Duration = Duration::days(365);

fn validity(params: &mut CertificateParams, lifetime: Duration) {
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::days(1);
    params.not_after = now + lifetime;
}

/// The end of a PEM certificate's validity.
pub fn not_after(cert_pem: &str) -> Result<OffsetDateTime, PkiError> {
    let der = rustls_pemfile::certs(&mut cert_pem.as_bytes())
        .next()
        .ok_or_else(|| PkiError::Request("no PEM certificate found".into()))?
        .map_err(|e| PkiError::Request(format!("reading a PEM certificate: {e}")))?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der)
        .map_err(|e| PkiError::Request(format!("reading a certificate: {e}")))?;
    Ok(cert.validity().not_after.to_datetime())
}

/// Whether a certificate must be issued again at `at`: it ends within [`RENEW_WITHIN`], or it
/// cannot be read (a damaged file is replaced rather than served).
pub fn needs_renewal(cert_pem: &str, at: std::time::SystemTime) -> bool {
    not_after(cert_pem).map_or(true, |end| end - OffsetDateTime::from(at) < RENEW_WITHIN)
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
        validity(&mut params, Duration::days(365 * 10));
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
        self.issue_serving_for(common_name, sans, LEAF_LIFETIME.unsigned_abs())
    }

    /// A server certificate valid for `lifetime` from now (tests make nearly expired ones).
    pub fn issue_serving_for(
        &self,
        common_name: &str,
        sans: &[String],
        lifetime: std::time::Duration,
    ) -> Result<CertifiedKey, PkiError> {
        let lifetime = Duration::try_from(lifetime).unwrap_or(LEAF_LIFETIME);
        let gen = |source| PkiError::Generate {
            what: format!("a serving certificate for {sans:?}"),
            source,
        };
        let mut params = CertificateParams::new(sans.to_vec()).map_err(gen)?;
        params.distinguished_name.push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages =
            vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        self.sign(params, lifetime, gen)
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
        self.sign(params, LEAF_LIFETIME, gen)
    }

    /// Signs a PEM certificate signing request (its signature checked) as a client certificate
    /// for one year, its subject (every `O`) kept; the caller decides first whether its
    /// [`request_subject`] may be signed.
    pub fn sign_client_request(&self, csr_pem: &str) -> Result<String, PkiError> {
        self.sign_client_request_for(csr_pem, None)
    }

    fn sign(
        &self,
        mut params: CertificateParams,
        lifetime: Duration,
        gen: impl Fn(rcgen::Error) -> PkiError,
    ) -> Result<CertifiedKey, PkiError> {
        validity(&mut params, lifetime);
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
    /// O: the group, when the subject has exactly one.
    pub organization: Option<String>,
    /// Every O (the groups), in order.
    pub organizations: Vec<String>,
}

/// The subject of a PEM certificate signing request, after checking its signature.
pub fn request_subject(csr_pem: &str) -> Result<RequestSubject, PkiError> {
    // rcgen checks the signature; the subject is read from the DER because rcgen keeps only
    // one value per attribute type, and a second `O` must not go unseen.
    rcgen::CertificateSigningRequestParams::from_pem(csr_pem)
        .map_err(|e| PkiError::Request(e.to_string()))?;
    let unreadable = || PkiError::Request("unreadable subject".into());
    let der = client::pem_der(csr_pem, "CERTIFICATE REQUEST")
        .or_else(|| client::pem_der(csr_pem, "NEW CERTIFICATE REQUEST"))
        .ok_or_else(unreadable)?;
    let subject = client::request_subject_der(&der).ok_or_else(unreadable)?;
    let (common_name, organizations) = client::name_parts(subject).ok_or_else(unreadable)?;
    let organization = match organizations.as_slice() {
        [only] => Some(only.clone()),
        _ => None,
    };
    Ok(RequestSubject { common_name, organization, organizations })
}

/// Loads `dir/<name>.crt` + `.key`, or issues them with `issue` and writes them. `fingerprint`
/// names what the certificate was issued for (e.g. its SANs); a change re-issues it, and so
/// does the certificate nearing its end ([`needs_renewal`]).
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
            let cert_pem = read(&cert_path)?;
            if !needs_renewal(&cert_pem, std::time::SystemTime::now()) {
                return Ok(CertifiedKey { cert_pem, key_pem: read(&key_path)? });
            }
            tracing::info!(certificate = %cert_path.display(), "renewing a certificate near its end");
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

    #[test]
    fn certificates_are_renewed_within_ninety_days_of_their_end() {
        let dir = tempfile::tempdir().unwrap();
        let ca = ClusterCa::load_or_create(dir.path()).unwrap();
        let sans = ["localhost".to_string()];
        let now = std::time::SystemTime::now();
        let days = |n: u64| std::time::Duration::from_secs(n * 24 * 3600);
        let fresh = ca.issue_serving("skerry", &sans).unwrap();
        assert!(!needs_renewal(&fresh.cert_pem, now));
        assert!(!needs_renewal(&fresh.cert_pem, now + days(365 - 91)));
        assert!(needs_renewal(&fresh.cert_pem, now + days(365 - 89)));
        let short = ca.issue_serving_for("skerry", &sans, days(30)).unwrap();
        assert!(needs_renewal(&short.cert_pem, now));
        assert!(needs_renewal("not a certificate", now));
        // On disk: the same fingerprint, but near its end, is issued again.
        write_private(&dir.path().join("serving.crt"), &short.cert_pem).unwrap();
        write_private(&dir.path().join("serving.key"), &short.key_pem).unwrap();
        write_private(&dir.path().join("serving.issued-for"), "a").unwrap();
        let renewed =
            load_or_issue(dir.path(), "serving", "a", || ca.issue_serving("skerry", &sans))
                .unwrap();
        assert_ne!(renewed.cert_pem, short.cert_pem);
        assert!(!needs_renewal(&renewed.cert_pem, now + days(200)));
    }
}
