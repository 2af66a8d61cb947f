//! One dial of the tunnel: TCP, TLS with the node's client certificate (HTTP/1.1 by ALPN, the
//! server certificate checked against the cluster CA), and the `Upgrade: skerry-tunnel/1`
//! request; the result is the switched byte stream.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use super::{TunnelConfig, TunnelError, TUNNEL_PATH, TUNNEL_PROTOCOL};

/// How long TCP connect plus TLS may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// `(host, port)` of an `https://host:port[/]` URL.
pub(crate) fn host_port(url: &str) -> Result<(String, u16), TunnelError> {
    let bad = || TunnelError::Url(url.to_string());
    let rest = url.strip_prefix("https://").ok_or_else(bad)?;
    let authority = rest.split('/').next().unwrap_or_default();
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(']') || host.starts_with('[') => {
            (host, port.parse::<u16>().map_err(|_| bad())?)
        }
        _ => (authority, 443),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(bad());
    }
    Ok((host.to_string(), port))
}

fn read(path: &std::path::Path) -> Result<Vec<u8>, TunnelError> {
    std::fs::read(path).map_err(|source| TunnelError::Credentials { path: path.into(), source })
}

/// The TLS client configuration: cluster CA roots, the node certificate, HTTP/1.1.
fn tls_config(config: &TunnelConfig) -> Result<rustls::ClientConfig, TunnelError> {
    let tls = |e: &dyn std::fmt::Display| TunnelError::Tls(e.to_string());
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut config.ca_pem.as_bytes()) {
        roots.add(cert.map_err(|e| tls(&e))?).map_err(|e| tls(&e))?;
    }
    let cert_pem = read(&config.cert_file)?;
    let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|e| tls(&e))?;
    let key_pem = read(&config.key_file)?;
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(|e| tls(&e))?
        .ok_or_else(|| TunnelError::Tls(format!("no key in {}", config.key_file.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls(&e))?
        .with_root_certificates(roots)
        .with_client_auth_cert(certs, key)
        .map_err(|e| tls(&e))?;
    client.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(client)
}

/// Dials the API server and switches the connection to the tunnel protocol.
pub(crate) async fn open(config: &TunnelConfig) -> Result<hyper::upgrade::Upgraded, TunnelError> {
    let (host, port) = host_port(&config.server)?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(tls_config(config)?));
    let addr = format!("{host}:{port}");
    let name = ServerName::try_from(host.clone()).map_err(|e| TunnelError::Tls(e.to_string()))?;
    let connect = async {
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
        tcp.set_nodelay(true)?;
        tls.connect(name, tcp).await
    };
    let stream = match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
        Ok(result) => {
            result.map_err(|source| TunnelError::Connect { addr: addr.clone(), source })?
        }
        Err(_) => {
            let source = std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out");
            return Err(TunnelError::Connect { addr, source });
        }
    };
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        if let Err(err) = connection.with_upgrades().await {
            tracing::debug!(%err, "tunnel connection ended");
        }
    });
    let request = Request::get(TUNNEL_PATH)
        .header(header::HOST, addr.as_str())
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, TUNNEL_PROTOCOL)
        .body(Empty::<Bytes>::new())
        .map_err(|e| TunnelError::Tls(e.to_string()))?;
    let response = sender.send_request(request).await?;
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        let status = response.status();
        let body = response.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        let body = String::from_utf8_lossy(&body).chars().take(500).collect();
        return Err(TunnelError::Refused { status, body });
    }
    Ok(hyper::upgrade::on(response).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_urls_give_host_and_port() {
        assert_eq!(host_port("https://10.0.0.1:6443").unwrap(), ("10.0.0.1".into(), 6443));
        assert_eq!(host_port("https://server.lan/").unwrap(), ("server.lan".into(), 443));
        assert_eq!(host_port("https://[fd00::1]:6443").unwrap(), ("fd00::1".into(), 6443));
        assert!(host_port("http://10.0.0.1:6443").is_err());
        assert!(host_port("https://:6443").is_err());
    }
}
