//! The etcd endpoint off loopback: TLS with client certificates, or nothing.
//!
//! Whoever reaches the etcd endpoint reads and writes every object of the cluster, Secrets
//! included, past authentication, authorization and admission. On loopback (and Unix sockets)
//! the host's own users are trusted, as today; an address other hosts can reach must be
//! `https://` and demand a client certificate signed by a trusted CA, as k3s's etcd does.
//!
//! When no certificate is configured, [`secure_exposed`] makes them, as k3s does for its etcd:
//! the data directory's CA (`DATA_DIR/tls/ca.crt`, created on first use) signs a serving
//! certificate for the listen addresses and a client certificate for etcdctl users, under
//! `DATA_DIR/tls/etcd/` (`server.crt|key`, `client.crt|key`, `ca.crt`). Both are renewed like
//! the API server's, within 90 days of their end.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use super::{ListenUrl, ServeConfig, TlsFiles};
use crate::pki::{self, ClusterCa, PkiError};

/// The client certificate's common name.
const CLIENT_NAME: &str = "etcd-client";

/// Why an exposed listener cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum ExposureError {
    #[error(
        "{url} is reachable from other hosts without TLS: use https:// (clients then need a \
         certificate signed by the cluster CA) or a loopback address"
    )]
    Plaintext { url: String },
    #[error(
        "{url} is reachable from other hosts: it needs --client-cert-auth and \
         --trusted-ca-file, or no --cert-file/--key-file so that certificates are made"
    )]
    NoClientAuth { url: String },
    #[error("creating {path}: {source}")]
    Dir { path: PathBuf, source: std::io::Error },
    #[error("making the etcd certificates: {0}")]
    Pki(#[from] PkiError),
}

/// The files made for an exposed endpoint: what an etcdctl user passes as `--cacert`, `--cert`
/// and `--key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientFiles {
    pub ca_file: PathBuf,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// Whether other hosts may reach `ip` (the unspecified address listens on every interface).
fn exposed(ip: IpAddr) -> bool {
    !ip.is_loopback()
}

/// The TCP listeners other hosts can reach, as `(url, tls)`.
fn exposed_listeners(config: &ServeConfig) -> Vec<(String, bool)> {
    config
        .listen
        .iter()
        .filter_map(|url| match url {
            ListenUrl::Http(addr) if exposed(addr.ip()) => Some((format!("http://{addr}"), false)),
            ListenUrl::Https(addr) if exposed(addr.ip()) => Some((format!("https://{addr}"), true)),
            _ => None,
        })
        .collect()
}

/// The serving certificate's SANs: loopback names and every address a client may dial (for
/// the unspecified address, the host's interface addresses).
fn server_sans(config: &ServeConfig) -> Vec<String> {
    let mut sans: Vec<String> =
        ["localhost", "127.0.0.1", "::1"].iter().map(|s| s.to_string()).collect();
    for url in &config.listen {
        let (ListenUrl::Http(addr) | ListenUrl::Https(addr)) = url else { continue };
        if addr.ip().is_unspecified() {
            sans.extend(crate::apiserver::serve::host_addresses().iter().map(IpAddr::to_string));
        } else {
            sans.push(addr.ip().to_string());
        }
    }
    let mut seen = std::collections::HashSet::new();
    sans.retain(|s| seen.insert(s.clone()));
    sans
}

/// Refuses a plaintext or unauthenticated listener other hosts can reach; when TLS is not
/// configured, makes the certificates under `data_dir` and requires client certificates.
/// Returns the client files it made (`None` when nothing is exposed or TLS was configured).
pub fn secure_exposed(
    config: &mut ServeConfig,
    data_dir: &Path,
) -> Result<Option<ClientFiles>, ExposureError> {
    let exposed = exposed_listeners(config);
    let Some((first, _)) = exposed.first() else { return Ok(None) };
    if let Some((url, _)) = exposed.iter().find(|(_, tls)| !tls) {
        return Err(ExposureError::Plaintext { url: url.clone() });
    }
    if let Some(files) = &config.tls {
        if !files.client_cert_auth || files.trusted_ca_file.is_none() {
            return Err(ExposureError::NoClientAuth { url: first.clone() });
        }
        return Ok(None);
    }
    let tls_dir = data_dir.join("tls");
    let etcd_dir = tls_dir.join("etcd");
    std::fs::create_dir_all(&etcd_dir)
        .map_err(|source| ExposureError::Dir { path: etcd_dir.clone(), source })?;
    let ca = ClusterCa::load_or_create(&tls_dir)?;
    let sans = server_sans(config);
    pki::load_or_issue(&etcd_dir, "server", &sans.join(","), || ca.issue_serving("etcd", &sans))?;
    pki::load_or_issue(&etcd_dir, "client", CLIENT_NAME, || ca.issue_client(CLIENT_NAME, None))?;
    let ca_file = etcd_dir.join("ca.crt");
    pki::write_private(&ca_file, &ca.cert_pem)?;
    config.tls = Some(TlsFiles {
        cert_file: etcd_dir.join("server.crt"),
        key_file: etcd_dir.join("server.key"),
        trusted_ca_file: Some(ca_file.clone()),
        client_cert_auth: true,
    });
    Ok(Some(ClientFiles {
        ca_file,
        cert_file: etcd_dir.join("client.crt"),
        key_file: etcd_dir.join("client.key"),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::grpc::MemberIdentity;

    fn config(urls: &str) -> ServeConfig {
        let dir = tempfile::tempdir().unwrap();
        let identity = MemberIdentity::load_or_create(dir.path(), "t").unwrap();
        ServeConfig::new(ListenUrl::parse_list(urls).unwrap(), identity)
    }

    #[test]
    fn loopback_is_left_alone_and_exposed_listeners_need_client_certificates() {
        let dir = tempfile::tempdir().unwrap();
        let mut local = config("http://127.0.0.1:2379,unix:///tmp/s.sock,https://[::1]:1");
        local.tls = None;
        assert_eq!(secure_exposed(&mut local, dir.path()).unwrap(), None);
        assert!(local.tls.is_none());

        let mut plain = config("http://127.0.0.1:2379,http://0.0.0.0:2379");
        let err = secure_exposed(&mut plain, dir.path()).unwrap_err();
        assert!(
            matches!(err, ExposureError::Plaintext { ref url } if url == "http://0.0.0.0:2379")
        );

        let mut unauthenticated = config("https://10.1.2.3:2379");
        unauthenticated.tls = Some(TlsFiles {
            cert_file: "c".into(),
            key_file: "k".into(),
            trusted_ca_file: Some("ca".into()),
            client_cert_auth: false,
        });
        let err = secure_exposed(&mut unauthenticated, dir.path()).unwrap_err();
        assert!(matches!(err, ExposureError::NoClientAuth { .. }), "{err}");

        let mut made = config("https://10.1.2.3:2379,http://127.0.0.1:2379");
        let files = secure_exposed(&mut made, dir.path()).unwrap().expect("certificates made");
        let tls = made.tls.expect("TLS configured");
        assert!(tls.client_cert_auth);
        assert_eq!(tls.trusted_ca_file.as_deref(), Some(files.ca_file.as_path()));
        let ca = std::fs::read_to_string(dir.path().join("tls/ca.crt")).unwrap();
        assert_eq!(std::fs::read_to_string(&files.ca_file).unwrap(), ca);
        for file in [&tls.cert_file, &tls.key_file, &files.cert_file, &files.key_file] {
            assert!(file.exists(), "{}", file.display());
        }
        assert_eq!(server_sans(&config("https://10.1.2.3:2379"))[3], "10.1.2.3");
    }
}
