//! `portForward/{ns}/{pod}`: the kubelet's `portforward.k8s.io` protocol over SPDY/3.1, either
//! as a plain `Upgrade: SPDY/3.1` or tunnelled in WebSocket binary messages
//! (`SPDY/3.1+portforward.k8s.io`, which kubectl 1.32 tries first).
//!
//! For every local connection the client opens two streams with headers `streamtype`
//! (`error` / `data`), `port` and `requestid`; once both are there the agent dials
//! `localhost:<port>` inside the pod's network namespace (on a thread that `setns`-es there,
//! through skerry-netproxy's `netns`) and copies bytes between the connection and the data
//! stream. A failed dial is reported as text on the error stream; both streams end with a FIN.

use std::collections::HashMap;
use std::path::PathBuf;

use bytes::Bytes;
use http::Request;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use super::http_util::{negotiate, switching, Body, Upgrade};
use super::spdy::{self, frame::header, Event, FrameWriter};
use super::websocket::{self, Message, Opcode};

/// The SPDY stream protocol.
const SPDY_PROTOCOLS: [&str; 1] = ["portforward.k8s.io"];
/// The WebSocket subprotocol of SPDY tunnelled in WebSocket.
const TUNNELED_PROTOCOLS: [&str; 1] = ["SPDY/3.1+portforward.k8s.io"];

/// Answers a port-forward request and runs the session on its own task.
pub(crate) fn serve(
    mut req: Request<Incoming>,
    netns: PathBuf,
    pod: String,
) -> http::Response<Body> {
    let upgrade = match negotiate(req.headers(), &TUNNELED_PROTOCOLS, &SPDY_PROTOCOLS) {
        Ok(upgrade) => upgrade,
        Err(response) => return *response,
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    let tunneled = matches!(upgrade, Upgrade::WebSocket { .. });
    tokio::spawn(async move {
        let io = match on_upgrade.await {
            Ok(io) => TokioIo::new(io),
            Err(err) => {
                tracing::debug!(%err, "port-forward upgrade failed");
                return;
            }
        };
        if tunneled {
            let (inner, outer) = tokio::io::duplex(64 * 1024);
            tokio::spawn(unwrap_websocket(io, outer));
            session(inner, netns, pod).await;
        } else {
            session(io, netns, pod).await;
        }
    });
    switching(&upgrade)
}

/// Carries a byte stream in WebSocket binary messages: client messages' payloads go to
/// `bytes`, what `bytes` yields goes back as messages.
async fn unwrap_websocket<W, B>(ws: W, bytes: B)
where
    W: AsyncRead + AsyncWrite + Send + 'static,
    B: AsyncRead + AsyncWrite + Send + 'static,
{
    let (ws_read, mut ws_write) = tokio::io::split(ws);
    let (mut bytes_read, mut bytes_write) = tokio::io::split(bytes);
    let (pong_tx, mut pong_rx) = mpsc::channel::<Vec<u8>>(4);
    let inbound = tokio::spawn(async move {
        let mut reader = websocket::Reader::new(ws_read);
        while let Ok(Some(message)) = reader.next().await {
            match message {
                Message::Binary(data) => {
                    if bytes_write.write_all(&data).await.is_err() {
                        break;
                    }
                }
                Message::Ping(payload) => {
                    let _ = pong_tx.send(payload).await;
                }
                Message::Close => break,
                Message::Text(_) | Message::Pong => {}
            }
        }
        let _ = bytes_write.shutdown().await;
    });
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let frame = tokio::select! {
            read = bytes_read.read(&mut buf) => match read {
                Ok(0) | Err(_) => break,
                Ok(n) => websocket::encode(Opcode::Binary, &buf[..n]),
            },
            Some(payload) = pong_rx.recv() => websocket::encode(Opcode::Pong, &payload),
        };
        if ws_write.write_all(&frame).await.is_err() {
            break;
        }
    }
    let _ = ws_write.write_all(&websocket::encode(Opcode::Close, &1000u16.to_be_bytes())).await;
    let _ = ws_write.shutdown().await;
    inbound.abort();
}

/// Half of a forwarded connection, waiting for its other half.
#[derive(Default)]
struct Pair {
    error: Option<u32>,
    data: Option<u32>,
    port: Option<u16>,
}

/// Runs the port-forward protocol on a SPDY session until the client closes it.
async fn session<IO>(io: IO, netns: PathBuf, pod: String)
where
    IO: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut events, writer) = spdy::start(io);
    let mut pairs: HashMap<String, Pair> = HashMap::new();
    let mut inputs: HashMap<u32, mpsc::Sender<Bytes>> = HashMap::new();
    while let Some(event) = events.recv().await {
        match event {
            Event::Stream { id, headers } => {
                let kind = header(&headers, "streamtype").unwrap_or("");
                let port = header(&headers, "port").and_then(|p| p.parse::<u16>().ok());
                // Old clients send no request id: the data stream follows its error stream.
                let request =
                    header(&headers, "requestid").map(str::to_string).unwrap_or_else(|| {
                        (if kind == "data" { id.saturating_sub(2) } else { id }).to_string()
                    });
                let pair = pairs.entry(request.clone()).or_default();
                match kind {
                    "error" => pair.error = Some(id),
                    "data" => pair.data = Some(id),
                    _ => {
                        writer.reset(id).await;
                        continue;
                    }
                }
                pair.port = pair.port.or(port);
                if let Pair { error: Some(error), data: Some(data), port } = pair {
                    let (error, data, port) = (*error, *data, *port);
                    pairs.remove(&request);
                    let (tx, rx) = mpsc::channel::<Bytes>(16);
                    inputs.insert(data, tx);
                    let forward = Forward { writer: writer.clone(), error, data, pod: pod.clone() };
                    tokio::spawn(forward.run(netns.clone(), port, rx));
                }
            }
            Event::Data { id, data, fin } => {
                if let Some(tx) = inputs.get(&id) {
                    if !data.is_empty() && tx.send(Bytes::from(data)).await.is_err() {
                        inputs.remove(&id);
                    }
                }
                if fin {
                    inputs.remove(&id);
                }
            }
            Event::Reset { id } => {
                inputs.remove(&id);
            }
        }
    }
}

/// One forwarded connection.
struct Forward {
    writer: FrameWriter,
    error: u32,
    data: u32,
    pod: String,
}

impl Forward {
    async fn run(self, netns: PathBuf, port: Option<u16>, mut input: mpsc::Receiver<Bytes>) {
        let connected = match port {
            Some(port) => dial(netns, port).await.map_err(|e| {
                format!(
                    "an error occurred forwarding {port} -> {port}: error forwarding port {port} \
                     to pod {}: {e}",
                    self.pod
                )
            }),
            None => Err("invalid or missing port header".to_string()),
        };
        let stream = match connected {
            Ok(stream) => stream,
            Err(message) => {
                self.writer.data(self.error, message.as_bytes(), true).await;
                self.writer.data(self.data, &[], true).await;
                return;
            }
        };
        let (mut read, mut write) = stream.into_split();
        let to_pod = tokio::spawn(async move {
            while let Some(chunk) = input.recv().await {
                if write.write_all(&chunk).await.is_err() {
                    return;
                }
            }
            let _ = write.shutdown().await;
        });
        let mut buf = vec![0u8; spdy::MAX_DATA];
        loop {
            match read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if !self.writer.data(self.data, &buf[..n], false).await {
                        break;
                    }
                }
            }
        }
        self.writer.data(self.data, &[], true).await;
        self.writer.data(self.error, &[], true).await;
        to_pod.abort();
    }
}

/// Connects to `localhost:port` inside the network namespace at `netns`.
async fn dial(netns: PathBuf, port: u16) -> std::io::Result<tokio::net::TcpStream> {
    let connect = move || -> std::io::Result<std::net::TcpStream> {
        std::net::TcpStream::connect(("127.0.0.1", port))
            .or_else(|_| std::net::TcpStream::connect(("::1", port)))
    };
    let stream = tokio::task::spawn_blocking(move || {
        skerry_netproxy::netns::run_in(Some(&netns), connect).map_err(std::io::Error::other)?
    })
    .await
    .map_err(std::io::Error::other)??;
    stream.set_nonblocking(true)?;
    tokio::net::TcpStream::from_std(stream)
}
