//! Client certificates whose subject rcgen cannot express: a user in several groups (one `O`
//! per group, as the reference's client-certificate authenticator reads them), and certificate
//! signing requests signed with their subject kept verbatim, as the reference's signers do.
//! rcgen keeps one value per attribute type, so these certificates are assembled here in DER
//! and signed with the cluster CA's key.

use std::time::Duration;

use rcgen::{PublicKeyData, SigningKey};
use time::OffsetDateTime;

use super::{random_serial, CertifiedKey, ClusterCa, PkiError};

/// How long a certificate is valid when nobody asked for less (the reference's default
/// `--cluster-signing-duration`).
pub const DEFAULT_TTL: Duration = Duration::from_secs(365 * 24 * 3600);
/// The shortest validity the reference lets a request ask for (`spec.expirationSeconds`).
pub const MIN_TTL: Duration = Duration::from_secs(600);

/// OIDs, DER content bytes.
const OID_COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];
const OID_ORGANIZATION: &[u8] = &[0x55, 0x04, 0x0a];
const OID_KEY_USAGE: &[u8] = &[0x55, 0x1d, 0x0f];
const OID_EXT_KEY_USAGE: &[u8] = &[0x55, 0x1d, 0x25];
const OID_BASIC_CONSTRAINTS: &[u8] = &[0x55, 0x1d, 0x13];
const OID_CLIENT_AUTH: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x02];
const OID_ECDSA_SHA256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02];
const OID_ECDSA_SHA384: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03];
const OID_ED25519: &[u8] = &[0x2b, 0x65, 0x70];

/// One DER TLV.
fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

fn seq(parts: &[&[u8]]) -> Vec<u8> {
    tlv(0x30, &parts.concat())
}

/// One TLV read: (tag, whole TLV, content, rest).
type Tlv<'a> = (u8, &'a [u8], &'a [u8], &'a [u8]);

/// Reads one TLV.
fn read_tlv(input: &[u8]) -> Option<Tlv<'_>> {
    let (&tag, rest) = input.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let mut header = 2;
    let len = if first < 0x80 {
        first as usize
    } else {
        let count = (first & 0x7f) as usize;
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let len = rest[..count].iter().fold(0usize, |acc, b| (acc << 8) | *b as usize);
        rest = &rest[count..];
        header += count;
        len
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &input[..header + len], &rest[..len], &rest[len..]))
}

/// A positive INTEGER in minimal form (DER forbids redundant leading zeros).
fn der_integer(bytes: &[u8]) -> Vec<u8> {
    let mut start = 0;
    while start + 1 < bytes.len() && bytes[start] == 0 && bytes[start + 1] < 0x80 {
        start += 1;
    }
    let mut content = Vec::new();
    if bytes.get(start).is_some_and(|b| *b >= 0x80) {
        content.push(0);
    }
    content.extend_from_slice(&bytes[start..]);
    tlv(0x02, &content)
}

/// A `Name` with one RDN per group (`O`) and the user (`CN`), in the order Go writes them.
pub fn subject_der(user: &str, groups: &[String]) -> Vec<u8> {
    let attribute =
        |oid: &[u8], value: &str| tlv(0x31, &seq(&[&tlv(0x06, oid), &tlv(0x0c, value.as_bytes())]));
    let mut rdns: Vec<Vec<u8>> = groups.iter().map(|g| attribute(OID_ORGANIZATION, g)).collect();
    rdns.push(attribute(OID_COMMON_NAME, user));
    tlv(0x30, &rdns.concat())
}

/// The (CN, every O) of a DER `Name`.
pub fn name_parts(name: &[u8]) -> Option<(Option<String>, Vec<String>)> {
    let (0x30, _, mut rdns, _) = read_tlv(name)? else { return None };
    let (mut cn, mut orgs) = (None, Vec::new());
    while !rdns.is_empty() {
        let (0x31, _, mut set, rest) = read_tlv(rdns)? else { return None };
        rdns = rest;
        while !set.is_empty() {
            let (0x30, _, attr, rest) = read_tlv(set)? else { return None };
            set = rest;
            let (0x06, _, oid, value) = read_tlv(attr)? else { return None };
            let (_, _, value, _) = read_tlv(value)?;
            let value = String::from_utf8_lossy(value).into_owned();
            match oid {
                OID_COMMON_NAME => cn = Some(value),
                OID_ORGANIZATION => orgs.push(value),
                _ => {}
            }
        }
    }
    Some((cn, orgs))
}

/// The subject `Name` (whole TLV) of a DER certificate.
fn certificate_subject(cert: &[u8]) -> Option<&[u8]> {
    let (0x30, _, cert, _) = read_tlv(cert)? else { return None };
    let (0x30, _, tbs, _) = read_tlv(cert)? else { return None };
    let mut rest = tbs;
    if read_tlv(rest)?.0 == 0xa0 {
        rest = read_tlv(rest)?.3;
    }
    // serial, signature algorithm, issuer, validity; then the subject.
    for _ in 0..4 {
        rest = read_tlv(rest)?.3;
    }
    let (0x30, subject, _, _) = read_tlv(rest)? else { return None };
    Some(subject)
}

/// The subject `Name` (whole TLV) of a DER certificate signing request.
pub fn request_subject_der(csr: &[u8]) -> Option<&[u8]> {
    let (0x30, _, csr, _) = read_tlv(csr)? else { return None };
    let (0x30, _, info, _) = read_tlv(csr)? else { return None };
    let (0x02, _, _, rest) = read_tlv(info)? else { return None };
    let (0x30, subject, _, _) = read_tlv(rest)? else { return None };
    Some(subject)
}

/// The DER of the first `label` block of a PEM text.
pub fn pem_der(pem: &str, label: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = pem.find(&begin)? + begin.len();
    let stop = start + pem[start..].find(&end)?;
    let body: String = pem[start..stop].chars().filter(|c| !c.is_whitespace()).collect();
    base64::engine::general_purpose::STANDARD.decode(body).ok()
}

fn to_pem(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// UTCTime before 2050, GeneralizedTime after (RFC 5280).
fn der_time(t: OffsetDateTime) -> Vec<u8> {
    let (y, mo, d) = (t.year(), u8::from(t.month()), t.day());
    let (h, mi, s) = (t.hour(), t.minute(), t.second());
    if (1950..2050).contains(&y) {
        tlv(0x17, format!("{:02}{mo:02}{d:02}{h:02}{mi:02}{s:02}Z", y % 100).as_bytes())
    } else {
        tlv(0x18, format!("{y:04}{mo:02}{d:02}{h:02}{mi:02}{s:02}Z").as_bytes())
    }
}

impl ClusterCa {
    /// The signature algorithm identifier of the CA's key.
    fn signature_algorithm(&self) -> Result<Vec<u8>, PkiError> {
        let alg = self.issuer.key().algorithm();
        let oid = if alg == &rcgen::PKCS_ECDSA_P256_SHA256 {
            OID_ECDSA_SHA256
        } else if alg == &rcgen::PKCS_ECDSA_P384_SHA384 {
            OID_ECDSA_SHA384
        } else if alg == &rcgen::PKCS_ED25519 {
            OID_ED25519
        } else {
            return Err(PkiError::Request(format!(
                "the CA key's algorithm {alg:?} is not supported"
            )));
        };
        Ok(seq(&[&tlv(0x06, oid)]))
    }

    /// A client certificate (DER) for `subject` and the public key `spki`, valid from a day ago
    /// (boards without a clock lag) until `ttl` from now.
    fn sign_client(&self, subject: &[u8], spki: &[u8], ttl: Duration) -> Result<Vec<u8>, PkiError> {
        let bad = |what: &str| PkiError::Request(what.to_string());
        let ca_der = pem_der(&self.cert_pem, "CERTIFICATE").ok_or_else(|| bad("the CA PEM"))?;
        let issuer = certificate_subject(&ca_der).ok_or_else(|| bad("the CA certificate"))?;
        let algorithm = self.signature_algorithm()?;
        let now = OffsetDateTime::now_utc();
        let ttl = time::Duration::try_from(ttl).unwrap_or(time::Duration::days(365));
        let validity = seq(&[&der_time(now - time::Duration::days(1)), &der_time(now + ttl)]);
        let serial = der_integer(&random_serial().to_bytes());
        let extension = |oid: &[u8], critical: bool, value: Vec<u8>| {
            let flag = if critical { tlv(0x01, &[0xff]) } else { Vec::new() };
            seq(&[&tlv(0x06, oid), &flag, &tlv(0x04, &value)])
        };
        // digitalSignature | keyEncipherment: bits 0 and 2, five unused bits.
        let key_usage = extension(OID_KEY_USAGE, true, tlv(0x03, &[0x05, 0xa0]));
        let ext_key_usage =
            extension(OID_EXT_KEY_USAGE, false, seq(&[&tlv(0x06, OID_CLIENT_AUTH)]));
        let basic = extension(OID_BASIC_CONSTRAINTS, true, seq(&[]));
        let extensions = tlv(0xa3, &seq(&[&key_usage, &ext_key_usage, &basic]));
        let version = tlv(0xa0, &tlv(0x02, &[2]));
        let tbs =
            seq(&[&version, &serial, &algorithm, issuer, &validity, subject, spki, &extensions]);
        let signature =
            self.issuer.key().sign(&tbs).map_err(|e| PkiError::Request(format!("signing: {e}")))?;
        let mut bits = vec![0u8];
        bits.extend_from_slice(&signature);
        Ok(seq(&[&tbs, &algorithm, &tlv(0x03, &bits)]))
    }

    /// A new key and client certificate for `user` in every group of `groups`, valid for `ttl`
    /// (default a year).
    pub fn issue_user(
        &self,
        user: &str,
        groups: &[String],
        ttl: Option<Duration>,
    ) -> Result<CertifiedKey, PkiError> {
        let key = rcgen::KeyPair::generate()
            .map_err(|source| PkiError::Generate { what: format!("a key for {user}"), source })?;
        let ttl = ttl.unwrap_or(DEFAULT_TTL).max(MIN_TTL);
        let der =
            self.sign_client(&subject_der(user, groups), &key.subject_public_key_info(), ttl)?;
        Ok(CertifiedKey { cert_pem: to_pem("CERTIFICATE", &der), key_pem: key.serialize_pem() })
    }

    /// Signs a PEM certificate signing request (signature checked) as a client certificate for
    /// `ttl` (default a year, at least ten minutes), its subject copied verbatim; only the
    /// subject and key come from the request.
    pub fn sign_client_request_for(
        &self,
        csr_pem: &str,
        ttl: Option<Duration>,
    ) -> Result<String, PkiError> {
        let parsed = rcgen::CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| PkiError::Request(e.to_string()))?;
        let der = pem_der(csr_pem, "CERTIFICATE REQUEST")
            .or_else(|| pem_der(csr_pem, "NEW CERTIFICATE REQUEST"))
            .ok_or_else(|| PkiError::Request("no CERTIFICATE REQUEST block".into()))?;
        let subject = request_subject_der(&der)
            .ok_or_else(|| PkiError::Request("unreadable subject".into()))?;
        let ttl = ttl.unwrap_or(DEFAULT_TTL).clamp(MIN_TTL, DEFAULT_TTL);
        let cert = self.sign_client(subject, &parsed.public_key.subject_public_key_info(), ttl)?;
        Ok(to_pem("CERTIFICATE", &cert))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn not_after(cert_pem: &str) -> OffsetDateTime {
        super::super::not_after(cert_pem).expect("a readable certificate")
    }

    #[test]
    fn user_certificates_carry_every_group_and_verify_against_the_ca() {
        let dir = tempfile::tempdir().unwrap();
        let ca = ClusterCa::load_or_create(dir.path()).unwrap();
        let groups = vec!["devs".to_string(), "ops".to_string()];
        let issued = ca.issue_user("alice", &groups, Some(Duration::from_secs(3600))).unwrap();
        let der = pem_der(&issued.cert_pem, "CERTIFICATE").unwrap();
        let user = crate::apiserver::authn::user_from_certificate(&der).unwrap();
        assert_eq!(user.name, "alice");
        assert_eq!(user.groups, vec!["devs", "ops", "system:authenticated"]);
        let left = not_after(&issued.cert_pem) - OffsetDateTime::now_utc();
        assert!(left <= time::Duration::hours(1) && left > time::Duration::minutes(50), "{left}");

        // rustls (webpki) accepts it as a client certificate of the CA, as the listener will.
        let mut roots = rustls::RootCertStore::empty();
        roots.add(pem_der(&ca.cert_pem, "CERTIFICATE").unwrap().into()).unwrap();
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                .build()
                .unwrap();
        let now = rustls::pki_types::UnixTime::now();
        verifier.verify_client_cert(&der.clone().into(), &[], now).expect("a valid chain");
    }

    #[test]
    fn requests_keep_their_subject_and_ttl() {
        let dir = tempfile::tempdir().unwrap();
        let ca = ClusterCa::load_or_create(dir.path()).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(rcgen::DnType::CommonName, "carol");
        params.distinguished_name.push(rcgen::DnType::OrganizationName, "g1");
        let csr = params.serialize_request(&key).unwrap().pem().unwrap();
        let cert = ca.sign_client_request_for(&csr, Some(Duration::from_secs(1800))).unwrap();
        let der = pem_der(&cert, "CERTIFICATE").unwrap();
        let user = crate::apiserver::authn::user_from_certificate(&der).unwrap();
        assert_eq!((user.name.as_str(), user.groups[0].as_str()), ("carol", "g1"));
        let left = not_after(&cert) - OffsetDateTime::now_utc();
        assert!(left <= time::Duration::minutes(30) && left > time::Duration::minutes(25));
        // Asking for less than the minimum gets the minimum.
        let short = ca.sign_client_request_for(&csr, Some(Duration::from_secs(5))).unwrap();
        assert!(not_after(&short) - OffsetDateTime::now_utc() > time::Duration::minutes(9));
        assert!(ca.sign_client_request_for("garbage", None).is_err());
    }

    #[test]
    fn names_round_trip() {
        let name = subject_der("alice", &["a".into(), "b".into()]);
        let (cn, orgs) = name_parts(&name).unwrap();
        assert_eq!(cn.as_deref(), Some("alice"));
        assert_eq!(orgs, vec!["a", "b"]);
    }
}
