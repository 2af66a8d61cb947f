//! Probes against real local servers: HTTP/1.1 and HTTPS (hyper, tokio-rustls), plain TCP, a
//! gRPC health server over HTTP/2 (hyper), and exec through real processes.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::{BufMut, Bytes, BytesMut};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use k8s_openapi::api::core::v1::{Container, Probe};
use serde_json::json;
use tokio::net::TcpListener;

use super::*;

fn probe(value: serde_json::Value) -> Probe {
    serde_json::from_value(value).expect("probe json")
}

fn container() -> Container {
    serde_json::from_value(json!({
        "name": "app",
        "ports": [{"name": "http", "containerPort": 1}],
        "env": [{"name": "FILE", "value": "/etc/hostname"}]
    }))
    .expect("container json")
}

async fn run(p: &Probe, container: &Container) -> ProbeOutcome {
    run_probe(p, &ProbeTarget { pod_ip: "127.0.0.1", container, exec: Some(&LocalExec) }).await
}

/// Runs the command as a host process: the same contract as the runtime's exec.
struct LocalExec;

#[async_trait]
impl ExecRunner for LocalExec {
    async fn exec(&self, command: Vec<String>, timeout: Duration) -> Result<ExecOutput, ExecError> {
        let (program, args) =
            command.split_first().ok_or(ExecError::Failed("empty command".into()))?;
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(args).kill_on_drop(true);
        match tokio::time::timeout(timeout, cmd.output()).await {
            Err(_) => Err(ExecError::TimedOut),
            Ok(Err(e)) => Err(ExecError::Failed(e.to_string())),
            Ok(Ok(out)) => Ok(ExecOutput {
                exit_code: out.status.code().unwrap_or(-1),
                output: [out.stdout, out.stderr].concat(),
            }),
        }
    }
}

/// Routes of the test web server.
async fn handle(req: Request<Incoming>, port: u16) -> Result<Response<Full<Bytes>>, Infallible> {
    let reply = |status: u16, body: &str| {
        Response::builder()
            .status(status)
            .body(Full::new(Bytes::from(body.to_owned())))
            .expect("response")
    };
    let redirect = |to: String| {
        Response::builder()
            .status(302)
            .header("location", to)
            .body(Full::new(Bytes::from("moved")))
            .expect("response")
    };
    let header =
        |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    Ok(match req.uri().path() {
        "/" | "/ok" => reply(200, "fine"),
        "/fail" => reply(500, "secret detail"),
        "/redirect-same" => redirect("/ok".into()),
        "/redirect-other" => redirect(format!("http://localhost:{port}/ok")),
        "/loop" => redirect("/loop".into()),
        "/slow" => {
            tokio::time::sleep(Duration::from_secs(5)).await;
            reply(200, "late")
        }
        "/headers" => {
            let ok = header("x-custom") == "yes"
                && header("host") == "custom.example"
                && header("user-agent") == "kube-probe/1.33"
                && header("accept") == "*/*";
            if ok {
                reply(200, "headers ok")
            } else {
                reply(400, "bad headers")
            }
        }
        _ => reply(404, "not found"),
    })
}

async fn http_server(tls: Option<tokio_rustls::TlsAcceptor>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let tls = tls.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| handle(req, port));
                let builder = hyper::server::conn::http1::Builder::new();
                let _ = match tls {
                    Some(acceptor) => match acceptor.accept(stream).await {
                        Ok(s) => builder.serve_connection(TokioIo::new(s), service).await,
                        Err(_) => return,
                    },
                    None => builder.serve_connection(TokioIo::new(stream), service).await,
                };
            });
        }
    });
    port
}

fn http_probe(port: u16, path: &str) -> Probe {
    probe(json!({"httpGet": {"port": port, "path": path}, "timeoutSeconds": 1}))
}

#[tokio::test]
async fn http_probes_succeed_on_2xx_and_fail_on_errors_like_kubelet() {
    let port = http_server(None).await;
    let c = container();

    let ok = run(&http_probe(port, "/ok"), &c).await;
    assert_eq!(ok, ProbeOutcome { result: ProbeResult::Success, output: "fine".into() });
    assert_eq!(ok.event(ProbeKind::Liveness), None);

    let fail = run(&http_probe(port, "/fail"), &c).await;
    assert_eq!(fail.result, ProbeResult::Failure);
    assert_eq!(
        fail.event(ProbeKind::Liveness).map(|e| (e.reason, e.message)),
        Some((
            "Unhealthy",
            "Liveness probe failed: HTTP probe failed with statuscode: 500".to_owned()
        ))
    );

    // The default path is "/", the port may be the container port's name.
    let mut named = container();
    named.ports.as_mut().expect("ports")[0].container_port = i32::from(port);
    let by_name = run(&probe(json!({"httpGet": {"port": "http"}})), &named).await;
    assert_eq!(by_name.result, ProbeResult::Success);

    let headers = probe(json!({"httpGet": {"port": port, "path": "/headers", "httpHeaders": [
        {"name": "X-Custom", "value": "yes"}, {"name": "Host", "value": "custom.example"}]}}));
    assert_eq!(run(&headers, &c).await.output, "headers ok");

    let unknown_port = run(&probe(json!({"httpGet": {"port": "nope"}})), &c).await;
    assert_eq!(
        unknown_port,
        ProbeOutcome { result: ProbeResult::Unknown, output: "port nope not found".into() }
    );
    assert_eq!(
        unknown_port.event(ProbeKind::Readiness).map(|e| e.message),
        Some(
            "Readiness probe errored and resulted in unknown state: port nope not found".to_owned()
        )
    );
}

#[tokio::test]
async fn http_probes_follow_only_same_host_redirects() {
    let port = http_server(None).await;
    let c = container();
    let same = run(&http_probe(port, "/redirect-same"), &c).await;
    assert_eq!(same, ProbeOutcome { result: ProbeResult::Success, output: "fine".into() });

    let other = run(&http_probe(port, "/redirect-other"), &c).await;
    assert_eq!(other.result, ProbeResult::Warning, "another host: not followed, a warning");
    assert_eq!(other.output, "Probe terminated redirects, Response body: moved");
    assert_eq!(other.event(ProbeKind::Readiness).map(|e| e.reason), Some("ProbeWarning"));

    let looping = run(&http_probe(port, "/loop"), &c).await;
    assert_eq!(looping.result, ProbeResult::Failure);
    assert_eq!(
        looping.output,
        format!("Get \"http://127.0.0.1:{port}/loop\": stopped after 10 redirects")
    );
}

#[tokio::test]
async fn http_probes_time_out_and_report_refused_connections() {
    let port = http_server(None).await;
    let c = container();
    let slow = run(&http_probe(port, "/slow"), &c).await;
    assert_eq!(slow.result, ProbeResult::Failure);
    assert_eq!(
        slow.output,
        format!("Get \"http://127.0.0.1:{port}/slow\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)")
    );

    let closed = skerry_testkit::free_port();
    let refused = run(&http_probe(closed, "/"), &c).await;
    assert_eq!(refused.result, ProbeResult::Failure);
    assert_eq!(
        refused.output,
        format!("Get \"http://127.0.0.1:{closed}/\": dial tcp 127.0.0.1:{closed}: connect: connection refused")
    );
}

#[tokio::test]
async fn https_probes_accept_any_certificate() {
    let certified =
        rcgen::generate_simple_self_signed(vec!["pod.invalid".to_owned()]).expect("cert");
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(vec![certified.cert.der().clone()], key)
    .expect("server config");
    let port = http_server(Some(tokio_rustls::TlsAcceptor::from(Arc::new(config)))).await;
    let p = probe(json!({"httpGet": {"port": port, "path": "/ok", "scheme": "HTTPS"}}));
    assert_eq!(
        run(&p, &container()).await,
        ProbeOutcome { result: ProbeResult::Success, output: "fine".into() }
    );

    // Plain HTTP against the TLS port fails rather than succeeding by accident.
    assert_eq!(run(&http_probe(port, "/ok"), &container()).await.result, ProbeResult::Failure);
}

#[tokio::test]
async fn tcp_probes_connect_or_report_the_dial_error() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let c = container();
    let open = run(&probe(json!({"tcpSocket": {"port": port}})), &c).await;
    assert_eq!(open.result, ProbeResult::Success);
    drop(listener);
    let closed = run(&probe(json!({"tcpSocket": {"port": port}})), &c).await;
    assert_eq!(
        closed,
        ProbeOutcome {
            result: ProbeResult::Failure,
            output: format!("dial tcp 127.0.0.1:{port}: connect: connection refused")
        }
    );
}

/// A grpc.health.v1 server: "" is SERVING, "db" NOT_SERVING, anything else NOT_FOUND; with
/// `implemented = false` every call is UNIMPLEMENTED.
async fn grpc_server(implemented: bool) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<Incoming>| health(req, implemented));
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    port
}

type GrpcBody =
    StreamBody<futures::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>>>;

async fn health(
    req: Request<Incoming>,
    implemented: bool,
) -> Result<Response<GrpcBody>, Infallible> {
    let path_ok = req.uri().path() == "/grpc.health.v1.Health/Check"
        && req.headers().get("content-type").is_some_and(|v| v == "application/grpc");
    let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    // HealthCheckRequest: [flag, len u32, 0x0a, len, service...]
    let service =
        body.get(7..).map(|s| String::from_utf8_lossy(s).into_owned()).unwrap_or_default();
    let trailers = |status: &str, message: &str| {
        let mut t = ::http::HeaderMap::new();
        t.insert("grpc-status", status.parse().expect("header"));
        if !message.is_empty() {
            t.insert("grpc-message", message.parse().expect("header"));
        }
        Frame::trailers(t)
    };
    let frames = if !implemented || !path_ok {
        vec![Ok(trailers("12", "unknown%20service%20grpc.health.v1.Health"))]
    } else {
        let status = match service.as_str() {
            "" => Some(1u8),
            "db" => Some(2),
            _ => None,
        };
        match status {
            Some(status) => {
                let mut msg = BytesMut::new();
                msg.put_u8(0);
                msg.put_u32(2);
                msg.put_slice(&[0x08, status]);
                vec![Ok(Frame::data(msg.freeze())), Ok(trailers("0", ""))]
            }
            None => vec![Ok(trailers("5", "unknown%20service"))],
        }
    };
    let response = Response::builder()
        .header("content-type", "application/grpc")
        .body(StreamBody::new(futures::stream::iter(frames)))
        .expect("response");
    Ok(response)
}

#[tokio::test]
async fn grpc_probes_speak_the_health_protocol_over_http2() {
    let port = grpc_server(true).await;
    let c = container();
    let grpc = |service: Option<&str>| probe(json!({"grpc": {"port": port, "service": service}}));

    assert_eq!(
        run(&grpc(None), &c).await,
        ProbeOutcome { result: ProbeResult::Success, output: "service is healthy".into() }
    );
    let not_serving = run(&grpc(Some("db")), &c).await;
    assert_eq!(not_serving.result, ProbeResult::Failure);
    assert_eq!(
        not_serving.event(ProbeKind::Readiness).map(|e| e.message),
        Some(
            "Readiness probe failed: service unhealthy (responded with \"NOT_SERVING\")".to_owned()
        )
    );
    assert_eq!(
        run(&grpc(Some("cache")), &c).await.output,
        "error: health rpc probe failed: rpc error: code = NotFound desc = unknown service"
    );

    let unimplemented = grpc_server(false).await;
    let p = probe(json!({"grpc": {"port": unimplemented}}));
    assert_eq!(
        run(&p, &c).await.output,
        "error: this server does not implement the grpc health protocol (grpc.health.v1.Health): unknown service grpc.health.v1.Health"
    );

    let closed = skerry_testkit::free_port();
    let refused = run(&probe(json!({"grpc": {"port": closed}})), &c).await;
    assert_eq!(refused.result, ProbeResult::Failure);
    assert!(
        refused
            .output
            .starts_with(&format!("error: failed to connect service at \"127.0.0.1:{closed}\"")),
        "{}",
        refused.output
    );
}

#[tokio::test]
async fn exec_probes_use_exit_codes_output_and_timeouts() {
    let c = container();
    let ok = run(&probe(json!({"exec": {"command": ["cat", "$(FILE)"]}})), &c).await;
    assert_eq!(ok.result, ProbeResult::Success, "$(FILE) expanded from the container's env");
    assert_eq!(ok.output, std::fs::read_to_string("/etc/hostname").expect("hostname"));

    let failed =
        run(&probe(json!({"exec": {"command": ["sh", "-c", "echo not ready; exit 3"]}})), &c).await;
    assert_eq!(failed, ProbeOutcome { result: ProbeResult::Failure, output: "not ready\n".into() });
    assert_eq!(
        failed.event(ProbeKind::Liveness).map(|e| e.message),
        Some("Liveness probe failed: not ready\n".to_owned())
    );

    let slow =
        run(&probe(json!({"exec": {"command": ["sleep", "5"]}, "timeoutSeconds": 1})), &c).await;
    assert_eq!(
        slow,
        ProbeOutcome {
            result: ProbeResult::Failure,
            output: "command \"sleep 5\" timed out".into()
        }
    );

    let missing = run(&probe(json!({"exec": {"command": ["/nonexistent/probe"]}})), &c).await;
    assert_eq!(missing.result, ProbeResult::Unknown);
}
