//! grpc probes (kubelet's `pkg/probe/grpc`): `grpc.health.v1.Health/Check` over HTTP/2
//! cleartext to `podIP:port`, with the probe's `service`. The one protobuf message each way is
//! encoded by hand (`HealthCheckRequest { string service = 1 }`,
//! `HealthCheckResponse { ServingStatus status = 1 }`): no codegen for two fields.

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

use super::{dial_error, go_duration, join_host_port, ProbeOutcome, ProbeResult};

const SERVING_STATUS: [&str; 4] = ["UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN"];
const CODES: [&str; 17] = [
    "OK",
    "Canceled",
    "Unknown",
    "InvalidArgument",
    "DeadlineExceeded",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "ResourceExhausted",
    "FailedPrecondition",
    "Aborted",
    "OutOfRange",
    "Unimplemented",
    "Internal",
    "Unavailable",
    "DataLoss",
    "Unauthenticated",
];
const UNIMPLEMENTED: u32 = 12;

/// How the health RPC ended, before it becomes a probe outcome.
enum Rpc {
    Connect(String),
    Status { code: u32, message: String },
    Protocol(String),
    Serving(i64),
}

pub(crate) async fn probe(host: &str, port: u16, service: &str, timeout: Duration) -> ProbeOutcome {
    let addr = join_host_port(host, port);
    let rpc = match tokio::time::timeout(timeout, check(&addr, service)).await {
        Ok(rpc) => rpc,
        Err(_) => {
            return ProbeOutcome::new(
                ProbeResult::Failure,
                format!("timeout: health rpc did not complete within {}", go_duration(timeout)),
            )
        }
    };
    let failure = |message: String| ProbeOutcome::new(ProbeResult::Failure, message);
    match rpc {
        Rpc::Connect(e) => failure(format!("error: failed to connect service at {addr:?}: {e}")),
        Rpc::Status { code: UNIMPLEMENTED, message } => failure(format!(
            "error: this server does not implement the grpc health protocol (grpc.health.v1.Health): {message}"
        )),
        Rpc::Status { code, message } => {
            let name = CODES.get(code as usize).map_or_else(|| format!("Code({code})"), |c| (*c).to_owned());
            failure(format!("error: health rpc probe failed: rpc error: code = {name} desc = {message}"))
        }
        Rpc::Protocol(e) => failure(format!("error: health rpc probe failed: {e}")),
        Rpc::Serving(1) => ProbeOutcome::new(ProbeResult::Success, "service is healthy"),
        Rpc::Serving(status) => {
            let name = usize::try_from(status)
                .ok()
                .and_then(|s| SERVING_STATUS.get(s))
                .map_or_else(|| status.to_string(), |s| (*s).to_owned());
            failure(format!("service unhealthy (responded with {name:?})"))
        }
    }
}

async fn check(addr: &str, service: &str) -> Rpc {
    let tcp = match TcpStream::connect(addr).await {
        Ok(tcp) => tcp,
        Err(e) => return Rpc::Connect(dial_error(addr, &e)),
    };
    let (mut sender, connection) = match hyper::client::conn::http2::handshake(
        TokioExecutor::new(),
        TokioIo::new(tcp),
    )
    .await
    {
        Ok(pair) => pair,
        Err(e) => return Rpc::Connect(e.to_string()),
    };
    tokio::spawn(async move {
        // Ends when the sender is dropped after the call; errors surface on the call itself.
        let _ = connection.await;
    });

    let mut message = BytesMut::new();
    if !service.is_empty() {
        message.put_u8(0x0a); // field 1, length-delimited
        put_varint(&mut message, service.len() as u64);
        message.put_slice(service.as_bytes());
    }
    let mut frame = BytesMut::with_capacity(5 + message.len());
    frame.put_u8(0); // not compressed
    frame.put_u32(message.len() as u32);
    frame.put_slice(&message);

    let request = http::Request::post(format!("http://{addr}/grpc.health.v1.Health/Check"))
        .header(http::header::CONTENT_TYPE, "application/grpc")
        .header(http::header::TE, "trailers")
        .header(http::header::USER_AGENT, "kube-probe/1.33")
        .body(Full::new(frame.freeze()));
    let request = match request {
        Ok(request) => request,
        Err(e) => return Rpc::Protocol(e.to_string()),
    };
    let response = match sender.send_request(request).await {
        Ok(response) => response,
        Err(e) => return Rpc::Protocol(e.to_string()),
    };
    if response.status() != http::StatusCode::OK {
        return Rpc::Status {
            code: 2,
            message: format!(
                "unexpected HTTP status code received from server: {}",
                response.status().as_u16()
            ),
        };
    }
    let head = response.headers().clone();
    let collected = match response.into_body().collect().await {
        Ok(collected) => collected,
        Err(e) => return Rpc::Protocol(e.to_string()),
    };
    // grpc-status comes in the trailers, or in the headers of a trailers-only response.
    let trailers = collected.trailers().cloned().unwrap_or_default();
    let field =
        |name: &str| trailers.get(name).or_else(|| head.get(name)).and_then(|v| v.to_str().ok());
    let code = match field("grpc-status").map(str::parse::<u32>) {
        Some(Ok(code)) => code,
        Some(Err(_)) => return Rpc::Protocol("malformed grpc-status".to_owned()),
        None => {
            return Rpc::Protocol("server closed the stream without sending trailers".to_owned())
        }
    };
    if code != 0 {
        return Rpc::Status { code, message: percent_decode(field("grpc-message").unwrap_or("")) };
    }
    match parse_status(&collected.to_bytes()) {
        Some(status) => Rpc::Serving(status),
        None => Rpc::Protocol("malformed HealthCheckResponse".to_owned()),
    }
}

fn put_varint(buf: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        buf.put_u8((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    buf.put_u8(v as u8);
}

fn read_varint(data: &[u8], pos: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *data.get(*pos)?;
        *pos += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// `status` of the framed HealthCheckResponse (0 = UNKNOWN when absent, as protobuf defaults).
fn parse_status(body: &Bytes) -> Option<i64> {
    let len = u32::from_be_bytes(body.get(1..5)?.try_into().ok()?) as usize;
    let message = body.get(5..5 + len)?;
    let mut pos = 0;
    let mut status = 0;
    while pos < message.len() {
        let key = read_varint(message, &mut pos)?;
        match key & 7 {
            0 => {
                let value = read_varint(message, &mut pos)?;
                if key >> 3 == 1 {
                    status = value as i64;
                }
            }
            2 => {
                let len = read_varint(message, &mut pos)? as usize;
                pos = pos.checked_add(len)?;
            }
            1 => pos += 8,
            5 => pos += 4,
            _ => return None,
        }
    }
    (pos == message.len()).then_some(status)
}

/// grpc-message is percent-encoded.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_responses_decode_and_messages_unescape() {
        let framed = |msg: &[u8]| {
            let mut b = BytesMut::new();
            b.put_u8(0);
            b.put_u32(msg.len() as u32);
            b.put_slice(msg);
            b.freeze()
        };
        assert_eq!(parse_status(&framed(&[0x08, 0x01])), Some(1));
        assert_eq!(parse_status(&framed(&[])), Some(0), "absent status is UNKNOWN");
        assert_eq!(
            parse_status(&framed(&[0x12, 0x01, 0x41, 0x08, 0x02])),
            Some(2),
            "unknown fields skipped"
        );
        assert_eq!(parse_status(&framed(&[0x08])), None);
        assert_eq!(percent_decode("no%20such%2Fservice"), "no such/service");
        assert_eq!(percent_decode("100%"), "100%");
    }
}
