//! Authentication: who is making a request. Two ways in, as in the reference apiserver:
//! an x509 client certificate signed by the cluster CA (user = subject CN, groups = subject O;
//! rustls has already verified the chain during the handshake), or a bearer token listed in the
//! static token file (`--token-auth-file`, the reference's CSV format).
//!
//! The result is a [`User`], which the request handler receives as an input: the TLS listener and
//! the in-process client both hand one over, so authorization (a later issue) has one seam.

use std::collections::HashMap;
use std::path::Path;

/// An authenticated user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub uid: String,
    pub groups: Vec<String>,
    /// Extra attributes (e.g. a service account token's `authentication.kubernetes.io/pod-name`).
    pub extra: std::collections::BTreeMap<String, Vec<String>>,
}

/// The group every authenticated user is in.
pub const AUTHENTICATED_GROUP: &str = "system:authenticated";

impl User {
    /// A user with `groups` plus `system:authenticated`.
    pub fn new(name: impl Into<String>, groups: Vec<String>) -> User {
        let mut groups = groups;
        if !groups.iter().any(|g| g == AUTHENTICATED_GROUP) {
            groups.push(AUTHENTICATED_GROUP.to_string());
        }
        User { name: name.into(), uid: String::new(), groups, extra: Default::default() }
    }

    /// The control plane's own identity, used by in-process components.
    pub fn system_admin() -> User {
        User::new("system:apiserver", vec!["system:masters".to_string()])
    }
}

/// Why the token file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    #[error("reading token file {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("token file {path} line {line}: {reason}")]
    Format { path: String, line: usize, reason: &'static str },
}

/// Static bearer tokens: `token,user,uid[,"group1,group2"]` per line.
#[derive(Debug, Default, Clone)]
pub struct TokenAuthenticator {
    tokens: HashMap<String, User>,
}

impl TokenAuthenticator {
    /// Reads a token CSV file.
    pub fn from_file(path: &Path) -> Result<TokenAuthenticator, TokenFileError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| TokenFileError::Io { path: path.display().to_string(), source })?;
        Self::parse(&text).map_err(|(line, reason)| TokenFileError::Format {
            path: path.display().to_string(),
            line,
            reason,
        })
    }

    /// Parses token CSV text; the error is (line number, reason).
    pub fn parse(text: &str) -> Result<TokenAuthenticator, (usize, &'static str)> {
        let mut tokens = HashMap::new();
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let fields = split_csv(line);
            if fields.len() < 3 {
                return Err((index + 1, "want at least token,user,uid"));
            }
            if fields[0].is_empty() || fields[1].is_empty() {
                return Err((index + 1, "empty token or user name"));
            }
            let groups = fields
                .get(3)
                .map(|g| g.split(',').map(str::trim).filter(|g| !g.is_empty()).map(String::from))
                .into_iter()
                .flatten()
                .collect();
            let mut user = User::new(fields[1].clone(), groups);
            user.uid = fields[2].clone();
            tokens.insert(fields[0].clone(), user);
        }
        Ok(TokenAuthenticator { tokens })
    }

    /// The user of an `Authorization: Bearer` token.
    pub fn authenticate(&self, token: &str) -> Option<User> {
        self.tokens.get(token).cloned()
    }

    /// Adds one token (e.g. the node join token).
    pub fn insert(&mut self, token: impl Into<String>, user: User) {
        self.tokens.insert(token.into(), user);
    }
}

/// Splits one CSV line, honouring double quotes.
fn split_csv(line: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                current.push('"');
                chars.next();
            }
            '"' => quoted = !quoted,
            ',' if !quoted => fields.push(std::mem::take(&mut current).trim().to_string()),
            c => current.push(c),
        }
    }
    fields.push(current.trim().to_string());
    fields
}

/// The user named by a verified client certificate (DER): CN = name, each O = a group.
pub fn user_from_certificate(der: &[u8]) -> Option<User> {
    let subject = der::certificate_subject(der)?;
    let mut name = None;
    let mut groups = Vec::new();
    for (oid, value) in der::name_attributes(subject)? {
        match oid {
            der::OID_COMMON_NAME => name = Some(value),
            der::OID_ORGANIZATION => groups.push(value),
            _ => {}
        }
    }
    name.filter(|n| !n.is_empty()).map(|n| User::new(n, groups))
}

/// Just enough DER to read a certificate's subject (the TLS stack already verified it).
mod der {
    /// OID 2.5.4.3 (commonName), content bytes.
    pub const OID_COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];
    /// OID 2.5.4.10 (organizationName), content bytes.
    pub const OID_ORGANIZATION: &[u8] = &[0x55, 0x04, 0x0a];

    /// One TLV: (tag, content, rest).
    fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
        let (&tag, rest) = input.split_first()?;
        let (&first, mut rest) = rest.split_first()?;
        let len = if first < 0x80 {
            first as usize
        } else {
            let count = (first & 0x7f) as usize;
            if count == 0 || count > 4 || rest.len() < count {
                return None;
            }
            let mut len = 0usize;
            for &b in &rest[..count] {
                len = (len << 8) | b as usize;
            }
            rest = &rest[count..];
            len
        };
        if rest.len() < len {
            return None;
        }
        Some((tag, &rest[..len], &rest[len..]))
    }

    /// The subject `Name` (content of its SEQUENCE) of a certificate.
    pub fn certificate_subject(cert: &[u8]) -> Option<&[u8]> {
        let (0x30, cert, _) = tlv(cert)? else { return None };
        let (0x30, tbs, _) = tlv(cert)? else { return None };
        let mut rest = tbs;
        // Optional [0] version, then serial, signature algorithm, issuer, validity, subject.
        let (tag, _, after) = tlv(rest)?;
        if tag == 0xa0 {
            rest = after;
        }
        for _ in 0..4 {
            rest = tlv(rest)?.2;
        }
        let (0x30, subject, _) = tlv(rest)? else { return None };
        Some(subject)
    }

    /// (OID content, string value) for each attribute of a `Name`.
    pub fn name_attributes(mut name: &[u8]) -> Option<Vec<(&[u8], String)>> {
        let mut out = Vec::new();
        while !name.is_empty() {
            let (0x31, mut set, rest) = tlv(name)? else { return None };
            name = rest;
            while !set.is_empty() {
                let (0x30, attr, rest) = tlv(set)? else { return None };
                set = rest;
                let (0x06, oid, value) = tlv(attr)? else { return None };
                let (_, value, _) = tlv(value)?;
                out.push((oid, String::from_utf8_lossy(value).into_owned()));
            }
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_csv_with_quoted_groups() {
        let auth =
            TokenAuthenticator::parse("# comment\nabc,alice,1001,\"dev,ops\"\ndef,bob,1002\n")
                .unwrap();
        let alice = auth.authenticate("abc").unwrap();
        assert_eq!(alice.name, "alice");
        assert_eq!(alice.uid, "1001");
        assert_eq!(alice.groups, vec!["dev", "ops", AUTHENTICATED_GROUP]);
        assert_eq!(auth.authenticate("def").unwrap().groups, vec![AUTHENTICATED_GROUP]);
        assert!(auth.authenticate("nope").is_none());
        assert_eq!(TokenAuthenticator::parse("x,y\n").unwrap_err().0, 1);
    }

    #[test]
    fn client_certificate_subject_gives_user_and_groups() {
        let dir = tempfile::tempdir().unwrap();
        let ca = crate::pki::ClusterCa::load_or_create(dir.path()).unwrap();
        let client = ca.issue_client("admin", Some("system:masters")).unwrap();
        let der = rustls_pemfile::certs(&mut client.cert_pem.as_bytes()).next().unwrap().unwrap();
        let user = user_from_certificate(&der).unwrap();
        assert_eq!(user.name, "admin");
        assert_eq!(user.groups, vec!["system:masters", AUTHENTICATED_GROUP]);
        assert!(user_from_certificate(&der[..20]).is_none());
    }
}
