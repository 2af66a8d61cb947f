//! httpGet probes (kubelet's `pkg/probe/http`): one GET over HTTP/1.1 (HTTPS without
//! certificate verification), `User-Agent: kube-probe/1.33`, `Accept: */*` unless overridden,
//! the probe's httpHeaders (a `Host` header sets the request's host), no keep-alive.
//! 200–399 is success; redirects are followed (at most 10) only while they stay on the same
//! hostname — a redirect elsewhere ends the probe as a success with a warning, as kubelet's
//! `followNonLocalRedirects=false` does. The timeout covers the whole exchange.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::HTTPGetAction;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::{
    dial_error, join_host_port, resolve_port, ProbeOutcome, ProbeResult, ProbeTarget, MAX_OUTPUT,
};

const USER_AGENT: &str = "kube-probe/1.33";
const MAX_REDIRECTS: usize = 10;

/// Where a request goes.
#[derive(Clone, Debug)]
struct Url {
    https: bool,
    host: String,
    port: u16,
    /// Path and query, starting with `/`.
    target: String,
}

impl std::fmt::Display for Url {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}://{}{}",
            if self.https { "https" } else { "http" },
            self.authority(),
            self.target
        )
    }
}

impl Url {
    fn authority(&self) -> String {
        join_host_port(&self.host, self.port)
    }

    /// The URL a `Location` header points to, relative to this one.
    fn join(&self, location: &str) -> Option<Url> {
        if let Some((scheme, rest)) = location.split_once("://") {
            let https = match scheme.to_ascii_lowercase().as_str() {
                "http" => false,
                "https" => true,
                _ => return None,
            };
            return Self::parse_authority(https, rest);
        }
        if let Some(rest) = location.strip_prefix("//") {
            return Self::parse_authority(self.https, rest);
        }
        let target = if location.starts_with('/') {
            location.to_owned()
        } else {
            let path = self.target.split(['?', '#']).next().unwrap_or("/");
            let dir = &path[..path.rfind('/').map_or(0, |i| i + 1)];
            format!("{}{location}", if dir.is_empty() { "/" } else { dir })
        };
        Some(Url { target, ..self.clone() })
    }

    fn parse_authority(https: bool, rest: &str) -> Option<Url> {
        let (authority, target) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].to_owned()),
            None => (rest, "/".to_owned()),
        };
        let default_port = if https { 443 } else { 80 };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6.split_once(']')?;
            let port = after.strip_prefix(':').map(str::parse).transpose().ok()?;
            (host.to_owned(), port.unwrap_or(default_port))
        } else {
            match authority.rsplit_once(':') {
                Some((host, port)) => (host.to_owned(), port.parse().ok()?),
                None => (authority.to_owned(), default_port),
            }
        };
        Some(Url { https, host, port, target })
    }
}

/// A GET of `url` (http or https, the certificate not verified, redirects followed): status
/// and at most 10 KiB of body. For what the caller checks itself, like the CA a joining agent
/// pins by its hash.
pub(crate) async fn unverified_get(url: &str) -> Result<(u16, Vec<u8>), String> {
    let (scheme, rest) = url.split_once("://").ok_or_else(|| format!("{url:?} is not a URL"))?;
    let https = match scheme {
        "https" => true,
        "http" => false,
        _ => return Err(format!("{url:?}: only http and https")),
    };
    let url = Url::parse_authority(https, rest).ok_or_else(|| format!("{url:?} is not a URL"))?;
    follow(url, &[]).await
}

pub(crate) async fn probe(
    action: &HTTPGetAction,
    target: &ProbeTarget<'_>,
    timeout: Duration,
) -> ProbeOutcome {
    let port = match resolve_port(&action.port, target.container) {
        Ok(port) => port,
        Err(e) => return ProbeOutcome::new(ProbeResult::Unknown, e),
    };
    let https = match action.scheme.as_deref().unwrap_or("HTTP").to_ascii_uppercase().as_str() {
        "HTTP" => false,
        "HTTPS" => true,
        other => {
            return ProbeOutcome::new(ProbeResult::Unknown, format!("unsupported scheme: {other}"))
        }
    };
    let host = action.host.as_deref().filter(|h| !h.is_empty()).unwrap_or(target.pod_ip);
    let path = action.path.as_deref().unwrap_or("");
    let path = if path.starts_with('/') { path.to_owned() } else { format!("/{path}") };
    let url = Url { https, host: host.to_owned(), port, target: path };

    let mut headers: Vec<(String, String)> = Vec::new();
    for h in action.http_headers.iter().flatten() {
        headers.push((h.name.clone(), h.value.clone()));
    }
    let has = |headers: &[(String, String)], name: &str| {
        headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(name))
    };
    if !has(&headers, "user-agent") {
        headers.push(("User-Agent".into(), USER_AGENT.into()));
    }
    if !has(&headers, "accept") {
        headers.push(("Accept".into(), "*/*".into()));
    }
    // An explicitly empty Accept is removed, as kubelet does.
    headers.retain(|(k, v)| !(k.eq_ignore_ascii_case("accept") && v.is_empty()));

    let first = url.to_string();
    match tokio::time::timeout(timeout, follow(url, &headers)).await {
        Ok(Ok((status, body))) => classify(status, &body),
        Ok(Err(message)) => ProbeOutcome::new(ProbeResult::Failure, message),
        Err(_) => ProbeOutcome::new(
            ProbeResult::Failure,
            format!("Get {first:?}: context deadline exceeded (Client.Timeout exceeded while awaiting headers)"),
        ),
    }
}

fn classify(status: u16, body: &[u8]) -> ProbeOutcome {
    let body = String::from_utf8_lossy(body);
    match status {
        200..=299 => ProbeOutcome::new(ProbeResult::Success, body),
        300..=399 => ProbeOutcome::new(
            ProbeResult::Warning,
            format!("Probe terminated redirects, Response body: {body}"),
        ),
        // The body is left out of the failure message on purpose (kubernetes#99425).
        _ => ProbeOutcome::new(
            ProbeResult::Failure,
            format!("HTTP probe failed with statuscode: {status}"),
        ),
    }
}

/// GETs `url`, following same-host redirects; returns the final status and body (≤ 10 KiB).
async fn follow(mut url: Url, headers: &[(String, String)]) -> Result<(u16, Vec<u8>), String> {
    let original_host = url.host.clone();
    let mut redirects = 0;
    loop {
        let (status, location, body) =
            get(&url, headers).await.map_err(|e| format!("Get {:?}: {e}", url.to_string()))?;
        let next = match (status, location) {
            (301 | 302 | 303 | 307 | 308, Some(location)) => url.join(&location),
            _ => None,
        };
        let Some(next) = next else { return Ok((status, body)) };
        if next.host != original_host {
            return Ok((status, body));
        }
        redirects += 1;
        if redirects >= MAX_REDIRECTS {
            return Err(format!(
                "Get {:?}: stopped after {MAX_REDIRECTS} redirects",
                next.to_string()
            ));
        }
        url = next;
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// One GET: status, `Location`, body.
async fn get(
    url: &Url,
    headers: &[(String, String)],
) -> Result<(u16, Option<String>, Vec<u8>), String> {
    let addr = url.authority();
    let tcp = TcpStream::connect(&addr).await.map_err(|e| dial_error(&addr, &e))?;
    let io: Box<dyn Io> =
        if url.https { Box::new(tls_connect(tcp, &url.host).await?) } else { Box::new(tcp) };
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(io)).await.map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        // The connection ends with the response (Connection: close); errors surface there.
        let _ = connection.await;
    });

    let mut request = http::Request::get(&url.target);
    let mut host = addr.clone();
    for (name, value) in headers {
        if name.eq_ignore_ascii_case("host") {
            host = value.clone();
        } else {
            request = request.header(name.as_str(), value.as_str());
        }
    }
    let request = request
        .header(http::header::HOST, host)
        .header(http::header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("building the request: {e}"))?;
    let response = sender.send_request(request).await.map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let location = response
        .headers()
        .get(http::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut body = response.into_body();
    let mut data = Vec::new();
    while data.len() < MAX_OUTPUT {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Some(chunk) = frame.data_ref() {
                    data.extend_from_slice(chunk);
                }
            }
            Some(Err(e)) => return Err(e.to_string()),
            None => break,
        }
    }
    data.truncate(MAX_OUTPUT);
    Ok((status, location, data))
}

async fn tls_connect(
    tcp: TcpStream,
    host: &str,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        // kubelet's HTTPS probes set `InsecureSkipVerify`.
        .with_custom_certificate_verifier(Arc::new(skerry_images::SkipVerify(provider)))
        .with_no_client_auth();
    let name =
        rustls::pki_types::ServerName::try_from(host.to_owned()).map_err(|e| e.to_string())?;
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_locations_resolve_like_a_browser() {
        let base =
            Url { https: false, host: "10.0.0.5".into(), port: 8080, target: "/a/b?x=1".into() };
        let join = |l: &str| base.join(l).map(|u| u.to_string());
        assert_eq!(join("/ok").as_deref(), Some("http://10.0.0.5:8080/ok"));
        assert_eq!(join("c").as_deref(), Some("http://10.0.0.5:8080/a/c"));
        assert_eq!(join("https://other:9443/z").as_deref(), Some("https://other:9443/z"));
        assert_eq!(join("http://other").as_deref(), Some("http://other:80/"));
        assert_eq!(join("//[fd00::1]:81/p").as_deref(), Some("http://[fd00::1]:81/p"));
        assert_eq!(join("ftp://x/"), None);
    }
}
