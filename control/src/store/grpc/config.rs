//! What the etcd front serves and how: listen URLs in etcd's `--listen-client-urls` syntax,
//! TLS files, the request size limit, the member identity and the watch progress interval.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use super::identity::MemberIdentity;

/// etcd's default `--max-request-bytes` (1.5 MiB).
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 1536 * 1024;

/// How often etcd sends progress notifications to watches that asked for them (10 minutes).
pub const DEFAULT_PROGRESS_NOTIFY_INTERVAL: Duration = Duration::from_secs(10 * 60);

/// One listener, parsed from an etcd-style client URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenUrl {
    /// `http://IP:PORT`: plaintext HTTP/2 (h2c), like etcd without TLS.
    Http(SocketAddr),
    /// `https://IP:PORT`: TLS with the configured certificate.
    Https(SocketAddr),
    /// `unix:///path` (or `unix://relative`): a Unix socket, plaintext.
    Unix(PathBuf),
}

/// A listen URL etcd would not accept either.
#[derive(Debug, thiserror::Error)]
#[error("invalid listen URL {url:?}: {reason}")]
pub struct UrlError {
    pub url: String,
    pub reason: &'static str,
}

impl ListenUrl {
    /// Parses one URL; hosts must be IP literals or `localhost`, as etcd requires for listeners.
    pub fn parse(url: &str) -> Result<Self, UrlError> {
        let err = |reason| UrlError { url: url.to_string(), reason };
        let (scheme, rest) = url.split_once("://").ok_or_else(|| err("missing scheme://"))?;
        match scheme {
            "http" | "https" => {
                let hostport = rest.trim_end_matches('/');
                if hostport.contains('/') {
                    return Err(err("a listen URL has no path"));
                }
                let addr = socket_addr(hostport).ok_or_else(|| {
                    err("expected IP:PORT (IPv6 as [ADDR]:PORT, or localhost:PORT)")
                })?;
                Ok(if scheme == "http" { Self::Http(addr) } else { Self::Https(addr) })
            }
            "unix" => {
                if rest.is_empty() {
                    return Err(err("missing socket path"));
                }
                Ok(Self::Unix(PathBuf::from(rest)))
            }
            "unixs" => Err(err("unixs:// (TLS over a Unix socket) is not supported")),
            _ => Err(err("scheme must be http, https or unix")),
        }
    }

    /// Parses etcd's comma-separated list.
    pub fn parse_list(urls: &str) -> Result<Vec<Self>, UrlError> {
        let list: Vec<Self> = urls
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(Self::parse)
            .collect::<Result<_, _>>()?;
        if list.is_empty() {
            return Err(UrlError { url: urls.to_string(), reason: "no URL given" });
        }
        Ok(list)
    }
}

/// `IP:PORT`, `[IPv6]:PORT` or `localhost:PORT`.
fn socket_addr(hostport: &str) -> Option<SocketAddr> {
    if let Ok(addr) = hostport.parse() {
        return Some(addr);
    }
    let (host, port) = hostport.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    (host == "localhost").then_some(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port))
}

/// Certificate files for `https://` listeners (PEM).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// Server certificate chain (`--cert-file`).
    pub cert_file: PathBuf,
    /// Server private key (`--key-file`).
    pub key_file: PathBuf,
    /// CA that signs client certificates (`--trusted-ca-file`).
    pub trusted_ca_file: Option<PathBuf>,
    /// Require a client certificate signed by `trusted_ca_file` (`--client-cert-auth`).
    pub client_cert_auth: bool,
}

/// Everything `serve` needs besides the store.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Where to listen.
    pub listen: Vec<ListenUrl>,
    /// Client URLs reported by `MemberList`; the listen URLs when empty.
    pub advertise_client_urls: Vec<String>,
    /// Needed when any listener is `https://`.
    pub tls: Option<TlsFiles>,
    /// Largest request accepted, like etcd's `--max-request-bytes`.
    pub max_request_bytes: usize,
    /// Cluster and member IDs.
    pub identity: MemberIdentity,
    /// How often watches created with `progress_notify` get an empty progress response.
    pub progress_notify_interval: Duration,
}

impl ServeConfig {
    /// A config with etcd's defaults for everything but the listeners and identity.
    pub fn new(listen: Vec<ListenUrl>, identity: MemberIdentity) -> Self {
        Self {
            listen,
            advertise_client_urls: Vec::new(),
            tls: None,
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            identity,
            progress_notify_interval: DEFAULT_PROGRESS_NOTIFY_INTERVAL,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_etcd_style_client_urls() {
        let urls =
            ListenUrl::parse_list("http://127.0.0.1:2379, https://[::1]:2380,unix:///run/s.sock")
                .unwrap();
        assert_eq!(urls[0], ListenUrl::Http("127.0.0.1:2379".parse().unwrap()));
        assert_eq!(urls[1], ListenUrl::Https("[::1]:2380".parse().unwrap()));
        assert_eq!(urls[2], ListenUrl::Unix("/run/s.sock".into()));
        assert_eq!(
            ListenUrl::parse("http://localhost:1").unwrap(),
            ListenUrl::Http("127.0.0.1:1".parse().unwrap())
        );
    }

    #[test]
    fn rejects_hostnames_paths_and_unknown_schemes() {
        assert!(ListenUrl::parse("http://example.com:2379").is_err());
        assert!(ListenUrl::parse("http://127.0.0.1:2379/v3").is_err());
        assert!(ListenUrl::parse("ftp://127.0.0.1:1").is_err());
        assert!(ListenUrl::parse("127.0.0.1:2379").is_err());
        assert!(ListenUrl::parse("http://127.0.0.1").is_err());
        assert!(ListenUrl::parse_list(" , ").is_err());
    }
}
