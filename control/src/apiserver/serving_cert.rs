//! The API server's serving certificate, renewed without a restart.
//!
//! The listener asks [`ServingCert`] (a rustls certificate resolver) for the certificate of
//! every handshake, so swapping the one it holds takes effect on the next connection while open
//! connections keep theirs. [`ServingCert::refresh`] is level-triggered: it recomputes the SANs
//! the certificate should carry (the configured `--tls-san`s and the host's current addresses)
//! and issues a new certificate, signed by the same cluster CA and written to `DATA_DIR/tls`,
//! when they differ from what the current one was issued for or when it is within
//! [`pki::RENEW_WITHIN`] of its end (k3s renews 90 days before the one-year expiry). The server
//! calls it at start and then every [`CHECK_EVERY`].

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey as RustlsKey;

use super::listener::{self, ListenError};
use crate::pki::{self, ClusterCa, PkiError};

/// How often a running server checks its serving certificate.
pub const CHECK_EVERY: Duration = Duration::from_secs(60 * 60);
/// The file stem of the serving certificate in `DATA_DIR/tls`.
const NAME: &str = "serving";
/// The serving certificate's common name.
const COMMON_NAME: &str = "kube-apiserver";

/// Why the serving certificate could not be issued or loaded.
#[derive(Debug, thiserror::Error)]
pub enum ServingCertError {
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error(transparent)]
    Tls(#[from] ListenError),
}

/// What the current certificate was issued for, and the key rustls serves.
struct Current {
    fingerprint: String,
    cert_pem: String,
    key: Arc<RustlsKey>,
}

/// The serving certificate: a rustls resolver over a certificate that [`refresh`] may replace.
///
/// [`refresh`]: ServingCert::refresh
pub struct ServingCert {
    tls_dir: PathBuf,
    sans: Box<dyn Fn() -> Vec<String> + Send + Sync>,
    current: RwLock<Current>,
}

impl std::fmt::Debug for ServingCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServingCert").field("tls_dir", &self.tls_dir).finish_non_exhaustive()
    }
}

/// The certificate for `sans` from `tls_dir`, issued again when the SANs changed or it nears
/// its end.
fn load(tls_dir: &Path, sans: &[String]) -> Result<Current, ServingCertError> {
    let ca = ClusterCa::load_or_create(tls_dir)?;
    let fingerprint = sans.join(",");
    let cert =
        pki::load_or_issue(tls_dir, NAME, &fingerprint, || ca.issue_serving(COMMON_NAME, sans))?;
    let key = listener::certified_key(&cert.cert_pem, &cert.key_pem)?;
    Ok(Current { fingerprint, cert_pem: cert.cert_pem, key: Arc::new(key) })
}

impl ServingCert {
    /// Loads (or issues) the certificate for the SANs `sans` computes now; `sans` is asked
    /// again on every [`refresh`](Self::refresh).
    pub fn load(
        tls_dir: PathBuf,
        sans: impl Fn() -> Vec<String> + Send + Sync + 'static,
    ) -> Result<Arc<ServingCert>, ServingCertError> {
        let current = load(&tls_dir, &sans())?;
        Ok(Arc::new(ServingCert { tls_dir, sans: Box::new(sans), current: RwLock::new(current) }))
    }

    /// The certificate being served, PEM.
    pub fn cert_pem(&self) -> String {
        self.current.read().unwrap_or_else(|e| e.into_inner()).cert_pem.clone()
    }

    /// Issues and swaps in a new certificate when the SANs changed or the current one nears its
    /// end; true when it did.
    pub fn refresh(&self) -> Result<bool, ServingCertError> {
        let sans = (self.sans)();
        {
            let current = self.current.read().unwrap_or_else(|e| e.into_inner());
            let now = std::time::SystemTime::now();
            if current.fingerprint == sans.join(",") && !pki::needs_renewal(&current.cert_pem, now)
            {
                return Ok(false);
            }
        }
        let fresh = load(&self.tls_dir, &sans)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = fresh;
        tracing::info!(sans = %sans.join(","), "serving certificate renewed");
        Ok(true)
    }

    /// Checks the certificate every `every` for as long as the server runs.
    pub fn keep_fresh(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                let checker = this.clone();
                // Issuing signs with ring and writes files: off the async workers.
                match tokio::task::spawn_blocking(move || checker.refresh()).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(err)) => {
                        tracing::warn!(%err, "renewing the serving certificate; retrying later")
                    }
                    Err(err) => tracing::warn!(%err, "the serving certificate check failed"),
                }
            }
        })
    }
}

impl ResolvesServerCert for ServingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<RustlsKey>> {
        Some(self.current.read().unwrap_or_else(|e| e.into_inner()).key.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn refresh_swaps_in_a_new_certificate_near_the_end_or_on_new_sans() {
        let dir = tempfile::tempdir().unwrap();
        let tls = dir.path().to_path_buf();
        let ca = ClusterCa::load_or_create(&tls).unwrap();
        // A certificate 10 days from its end, issued for exactly these SANs.
        let sans = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let short =
            ca.issue_serving_for(COMMON_NAME, &sans, Duration::from_secs(10 * 24 * 3600)).unwrap();
        let sans_now = Arc::new(Mutex::new(sans.clone()));
        let serving = {
            let sans_now = sans_now.clone();
            ServingCert::load(tls.clone(), move || sans_now.lock().unwrap().clone()).unwrap()
        };
        let first = serving.cert_pem();
        assert!(!serving.refresh().unwrap(), "a fresh certificate is kept");
        // Replace the one in memory and on disk by the short-lived one, as a server up for
        // nine months has.
        pki::write_private(&tls.join("serving.crt"), &short.cert_pem).unwrap();
        pki::write_private(&tls.join("serving.key"), &short.key_pem).unwrap();
        *serving.current.write().unwrap() = Current {
            fingerprint: sans.join(","),
            cert_pem: short.cert_pem.clone(),
            key: Arc::new(listener::certified_key(&short.cert_pem, &short.key_pem).unwrap()),
        };
        assert!(serving.refresh().unwrap());
        let renewed = serving.cert_pem();
        assert_ne!(renewed, short.cert_pem);
        assert_ne!(renewed, first);
        assert!(!pki::needs_renewal(&renewed, std::time::SystemTime::now()));
        // The resolver hands out the new one.
        let served = serving.current.read().unwrap().key.cert[0].clone();
        let on_disk = std::fs::read_to_string(tls.join("serving.crt")).unwrap();
        assert_eq!(on_disk, renewed);
        let der = rustls_pemfile::certs(&mut renewed.as_bytes()).next().unwrap().unwrap();
        assert_eq!(served, der);
        // A new address is a new certificate.
        sans_now.lock().unwrap().push("10.9.8.7".into());
        assert!(serving.refresh().unwrap());
        assert_ne!(serving.cert_pem(), renewed);
        assert!(!serving.refresh().unwrap());
    }
}
