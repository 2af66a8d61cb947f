//! Small HTTP pieces of the streaming server: the response body type, `Status` error
//! responses, query parameters (repeated keys kept, as `command=` needs), and the protocol
//! upgrade handshake (WebSocket subprotocol or SPDY `X-Stream-Protocol-Version` negotiation).

use std::convert::Infallible;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Response, StatusCode};
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Empty, Full};
use serde_json::json;

/// The body of every streaming-server response.
pub(crate) type Body = UnsyncBoxBody<Bytes, Infallible>;

/// A `Status` failure response, as the API server relays it to the client.
pub(crate) fn status_response(code: StatusCode, message: impl Into<String>) -> Response<Body> {
    let reason = match code {
        StatusCode::NOT_FOUND => "NotFound",
        StatusCode::BAD_REQUEST => "BadRequest",
        StatusCode::FORBIDDEN => "Forbidden",
        _ => "InternalError",
    };
    let status = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message.into(), "reason": reason, "code": code.as_u16(),
    });
    let mut response = Response::new(Full::new(Bytes::from(status.to_string())).boxed_unsync());
    *response.status_mut() = code;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// A request refused before any streaming starts: the error response to send instead (boxed,
/// as it is much larger than the values it stands in for).
pub(crate) type Refusal = Box<Response<Body>>;

/// A [`Refusal`] with a `Status` body.
pub(crate) fn refusal(code: StatusCode, message: impl Into<String>) -> Refusal {
    Box::new(status_response(code, message))
}

/// Decodes `%XX` escapes (and `+` as a space when `plus`).
fn decode_with(s: &str, plus: bool) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' if plus => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Decodes a path segment.
pub(crate) fn decode(s: &str) -> String {
    decode_with(s, false)
}

/// Query parameters in order, repeated keys kept.
#[derive(Debug, Default)]
pub(crate) struct Params(Vec<(String, String)>);

impl Params {
    /// Parses a query string.
    pub(crate) fn parse(query: Option<&str>) -> Params {
        let pairs = query.unwrap_or_default().split('&').filter(|p| !p.is_empty());
        Params(
            pairs
                .map(|p| {
                    let (k, v) = p.split_once('=').unwrap_or((p, ""));
                    (decode_with(k, true), decode_with(v, true))
                })
                .collect(),
        )
    }

    /// The last value of `key`.
    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// Every value of `key`, in order.
    pub(crate) fn all(&self, key: &str) -> Vec<String> {
        self.0.iter().filter(|(k, _)| k == key).map(|(_, v)| v.clone()).collect()
    }

    /// A boolean parameter (`true`/`1`).
    pub(crate) fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some("true" | "1" | "True" | "TRUE"))
    }

    /// An integer parameter; `Err` with a 400 when malformed.
    pub(crate) fn int(&self, key: &str) -> Result<Option<i64>, Refusal> {
        match self.get(key) {
            None | Some("") => Ok(None),
            Some(v) => v.parse().map(Some).map_err(|_| {
                refusal(StatusCode::BAD_REQUEST, format!("invalid value for {key}: {v:?}"))
            }),
        }
    }
}

/// The transport a client asked to switch to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Upgrade {
    /// RFC 6455, with the chosen subprotocol and the `Sec-WebSocket-Accept` value.
    WebSocket { protocol: String, accept: String },
    /// SPDY/3.1, with the chosen `X-Stream-Protocol-Version`.
    Spdy { protocol: String },
}

/// Comma-separated tokens of every value of a header.
fn tokens(headers: &HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .collect()
}

/// Picks the transport and protocol (first of ours the client offers, in our order).
pub(crate) fn negotiate(
    headers: &HeaderMap,
    websocket: &[&str],
    spdy: &[&str],
) -> Result<Upgrade, Refusal> {
    let wanted = tokens(headers, "upgrade");
    let forbidden = |offered: &[String], ours: &[&str]| {
        refusal(
            StatusCode::FORBIDDEN,
            format!(
                "unable to upgrade: unable to negotiate protocol: client supports {offered:?}, \
                 server supports {ours:?}"
            ),
        )
    };
    if wanted.iter().any(|u| u.eq_ignore_ascii_case("websocket")) {
        let offered = tokens(headers, "sec-websocket-protocol");
        let protocol = websocket.iter().find(|p| offered.iter().any(|o| o == *p));
        let key = headers.get("sec-websocket-key").and_then(|v| v.to_str().ok());
        return match (protocol, key) {
            (Some(protocol), Some(key)) => Ok(Upgrade::WebSocket {
                protocol: protocol.to_string(),
                accept: super::websocket::accept_key(key),
            }),
            (None, _) => Err(forbidden(&offered, websocket)),
            (_, None) => Err(refusal(StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key")),
        };
    }
    if wanted.iter().any(|u| u.eq_ignore_ascii_case("SPDY/3.1")) {
        let offered = tokens(headers, "x-stream-protocol-version");
        return match spdy.iter().find(|p| offered.iter().any(|o| o == *p)) {
            Some(protocol) => Ok(Upgrade::Spdy { protocol: protocol.to_string() }),
            None => Err(forbidden(&offered, spdy)),
        };
    }
    Err(refusal(StatusCode::BAD_REQUEST, "Upgrade request required (WebSocket or SPDY/3.1)"))
}

/// The `101 Switching Protocols` answer for a negotiated upgrade.
pub(crate) fn switching(upgrade: &Upgrade) -> Response<Body> {
    let mut response = Response::new(Empty::new().boxed_unsync());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    let set = |headers: &mut HeaderMap, name: &'static str, value: &str| {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(name, value);
        }
    };
    match upgrade {
        Upgrade::WebSocket { protocol, accept } => {
            set(headers, "upgrade", "websocket");
            set(headers, "sec-websocket-accept", accept);
            set(headers, "sec-websocket-protocol", protocol);
        }
        Upgrade::Spdy { protocol } => {
            set(headers, "upgrade", "SPDY/3.1");
            set(headers, "x-stream-protocol-version", protocol);
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_command_parameters_are_kept_in_order() {
        let p = Params::parse(Some("command=sh&command=-c&command=echo+a%3Bexit+3&stdin=true"));
        assert_eq!(p.all("command"), ["sh", "-c", "echo a;exit 3"]);
        assert!(p.flag("stdin"));
        assert!(!p.flag("tty"));
        assert_eq!(decode("a%2Fb%"), "a/b%");
    }

    #[test]
    fn negotiation_prefers_our_order_and_refuses_unknown_protocols() {
        let mut h = HeaderMap::new();
        h.insert("upgrade", HeaderValue::from_static("SPDY/3.1"));
        h.append("x-stream-protocol-version", HeaderValue::from_static("v3.channel.k8s.io"));
        h.append("x-stream-protocol-version", HeaderValue::from_static("v4.channel.k8s.io"));
        let chosen = negotiate(&h, &[], &["v4.channel.k8s.io"]).unwrap();
        assert_eq!(chosen, Upgrade::Spdy { protocol: "v4.channel.k8s.io".into() });
        let refused = negotiate(&h, &[], &["portforward.k8s.io"]).unwrap_err();
        assert_eq!(refused.status(), StatusCode::FORBIDDEN);
        let mut ws = HeaderMap::new();
        ws.insert("upgrade", HeaderValue::from_static("websocket"));
        ws.insert("sec-websocket-key", HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="));
        ws.insert(
            "sec-websocket-protocol",
            HeaderValue::from_static("v4.channel.k8s.io, v5.channel.k8s.io"),
        );
        let chosen = negotiate(&ws, &["v5.channel.k8s.io", "v4.channel.k8s.io"], &[]).unwrap();
        assert_eq!(
            chosen,
            Upgrade::WebSocket {
                protocol: "v5.channel.k8s.io".into(),
                accept: "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=".into()
            }
        );
    }
}
