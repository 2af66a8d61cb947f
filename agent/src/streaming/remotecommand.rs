//! `exec` and `attach`: the remote-command protocol of the kubelet. The request says which
//! streams the client wants (`stdin`, `stdout`, `stderr`, `tty`); the connection switches to
//! WebSocket (`v5.channel.k8s.io`, `v4.channel.k8s.io`) or SPDY/3.1 (`v4.channel.k8s.io`);
//! either transport is reduced to the same [`Wiring`] — stdin and resize in, output and the
//! final `Status` out — and one driver runs the process in the runtime. Over SPDY the
//! process starts only once the client has opened every stream it asked for (as the kubelet).
//!
//! The final `Status` follows the v4 protocol: `Success`, or `Failure` with reason
//! `NonZeroExitCode` and an `ExitCode` cause that kubectl turns into its own exit code.

use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde_json::{json, Value};
use skerry_runtime::{ExecProcess, ExecSpec, Runtime};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use super::http_util::{negotiate, status_response, switching, Body, Params, Upgrade};
use super::spdy::{self, frame::header, Event};
use super::websocket::{self, channel, Message, Opcode};
use super::Streaming;

/// WebSocket subprotocols, preferred first.
const WEBSOCKET_PROTOCOLS: [&str; 2] = ["v5.channel.k8s.io", "v4.channel.k8s.io"];
/// SPDY stream protocols.
const SPDY_PROTOCOLS: [&str; 1] = ["v4.channel.k8s.io"];

/// What the client asked for.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Wanted {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

/// A terminal size message (`{"Width":…,"Height":…}`).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
pub(crate) struct TermSize {
    #[serde(rename = "Width")]
    pub width: u16,
    #[serde(rename = "Height")]
    pub height: u16,
}

/// What the process produces, in order; `Status` is last.
#[derive(Debug)]
pub(crate) enum Out {
    Stdout(Bytes),
    Stderr(Bytes),
    Status(Value),
}

/// The transport, seen from the driver.
pub(crate) struct Wiring {
    /// Client input; closed at the client's end of input.
    pub stdin: Option<mpsc::Receiver<Bytes>>,
    /// Terminal resizes.
    pub resize: Option<mpsc::Receiver<TermSize>>,
    /// Output and the final status.
    pub out: mpsc::Sender<Out>,
}

/// Answers an exec or attach request: negotiates the transport, then runs it on its own task.
pub(crate) fn serve(
    mut req: Request<Incoming>,
    streaming: &Streaming,
    container_id: String,
    attach: bool,
    params: &Params,
) -> http::Response<Body> {
    let tty = params.flag("tty");
    let wanted = Wanted {
        stdin: params.flag("stdin"),
        stdout: params.flag("stdout"),
        // A terminal carries both outputs: no stderr stream with a tty (as the kubelet).
        stderr: params.flag("stderr") && !tty,
        tty,
    };
    let command = params.all("command");
    if !attach && command.is_empty() {
        return status_response(
            http::StatusCode::BAD_REQUEST,
            "you must specify at least 1 command",
        );
    }
    if !(wanted.stdin || wanted.stdout || wanted.stderr) {
        return status_response(
            http::StatusCode::BAD_REQUEST,
            "you must specify at least 1 of stdin, stdout, stderr",
        );
    }
    let upgrade = match negotiate(req.headers(), &WEBSOCKET_PROTOCOLS, &SPDY_PROTOCOLS) {
        Ok(upgrade) => upgrade,
        Err(response) => return *response,
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    let runtime = streaming.runtime.clone();
    let chosen = upgrade.clone();
    tokio::spawn(async move {
        let io = match on_upgrade.await {
            Ok(io) => TokioIo::new(io),
            Err(err) => {
                tracing::debug!(%err, "exec upgrade failed");
                return;
            }
        };
        let wiring = match &chosen {
            Upgrade::WebSocket { protocol, .. } => {
                websocket_wiring(io, protocol == WEBSOCKET_PROTOCOLS[0], wanted)
            }
            Upgrade::Spdy { .. } => match spdy_wiring(io, wanted).await {
                Ok(wiring) => wiring,
                Err(why) => {
                    tracing::debug!(%why, "exec/attach over SPDY did not start");
                    return;
                }
            },
        };
        if attach {
            run_attach(runtime, container_id, wanted, wiring).await;
        } else {
            run_exec(runtime, container_id, command, wanted, wiring).await;
        }
    });
    switching(&upgrade)
}

/// The v4 `Status` of a finished command.
pub(crate) fn exit_status(code: i32, command: &[String]) -> Value {
    if code == 0 {
        return json!({"metadata": {}, "status": "Success"});
    }
    json!({
        "metadata": {},
        "status": "Failure",
        "message": format!(
            "command terminated with non-zero exit code: error executing command [{}], exit code {code}",
            command.join(" ")
        ),
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
    })
}

/// A `Status` for a failure to run the command at all.
fn internal_status(message: String) -> Value {
    json!({
        "metadata": {}, "status": "Failure", "reason": "InternalError", "code": 500,
        "message": format!("Internal error occurred: error executing command in container: {message}"),
    })
}

/// Copies a pipe to the output on a thread; returns when the pipe ends.
fn pump(
    mut from: impl Read + Send + 'static,
    out: Option<mpsc::Sender<Out>>,
    wrap: fn(Bytes) -> Out,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if let Some(out) = &out {
                        // The client left: keep draining so the process is not blocked.
                        let _ = out.blocking_send(wrap(Bytes::copy_from_slice(&buf[..n])));
                    }
                }
            }
        }
    })
}

/// Feeds the client's input to a pipe on a thread; closing the channel closes the pipe.
fn feed(mut stdin: mpsc::Receiver<Bytes>, mut to: impl Write + Send + 'static) {
    std::thread::spawn(move || {
        while let Some(chunk) = stdin.blocking_recv() {
            if to.write_all(&chunk).and_then(|_| to.flush()).is_err() {
                return;
            }
        }
    });
}

async fn join(handle: std::thread::JoinHandle<()>) {
    let _ = tokio::task::spawn_blocking(move || handle.join()).await;
}

/// Runs `command` in the container and reports its exit code.
async fn run_exec(
    runtime: Arc<Runtime>,
    id: String,
    command: Vec<String>,
    wanted: Wanted,
    wiring: Wiring,
) {
    let Wiring { stdin, resize, out } = wiring;
    let spec = ExecSpec { args: command.clone(), tty: wanted.tty, ..Default::default() };
    let rt = runtime.clone();
    let started = tokio::task::spawn_blocking(move || rt.exec(&id, spec)).await;
    let mut process = match started {
        Ok(Ok(process)) => process,
        Ok(Err(err)) => {
            let _ = out.send(Out::Status(internal_status(err.to_string()))).await;
            return;
        }
        Err(err) => {
            let _ = out.send(Out::Status(internal_status(err.to_string()))).await;
            return;
        }
    };
    if let (Some(rx), Some(pipe)) = (stdin, process.stdin.take()) {
        feed(rx, pipe);
    }
    let stdout =
        process.stdout.take().map(|p| pump(p, wanted.stdout.then(|| out.clone()), Out::Stdout));
    let stderr = process.stderr.take().map(|p| {
        // With a TTY the terminal carries both streams; stderr has only runtime errors then.
        let to = (wanted.stderr || wanted.tty).then(|| out.clone());
        let wrap: fn(Bytes) -> Out = if wanted.stderr { Out::Stderr } else { Out::Stdout };
        pump(p, to, wrap)
    });
    let process: Arc<Mutex<Option<ExecProcess>>> = Arc::new(Mutex::new(Some(process)));
    if let Some(mut resize) = resize {
        let process = process.clone();
        tokio::spawn(async move {
            while let Some(size) = resize.recv().await {
                let process = process.clone();
                let _ = tokio::task::spawn_blocking(move || {
                    let guard = process.lock().unwrap_or_else(|p| p.into_inner());
                    if let Some(process) = guard.as_ref() {
                        let _ = process.resize(size.height, size.width);
                    }
                })
                .await;
            }
        });
    }
    for handle in [stdout, stderr].into_iter().flatten() {
        join(handle).await;
    }
    let taken = process.lock().unwrap_or_else(|p| p.into_inner()).take();
    let status = match taken {
        Some(process) => match tokio::task::spawn_blocking(move || process.wait()).await {
            Ok(Ok(code)) => exit_status(code, &command),
            Ok(Err(err)) => internal_status(err.to_string()),
            Err(err) => internal_status(err.to_string()),
        },
        None => internal_status("the process was lost".into()),
    };
    let _ = out.send(Out::Status(status)).await;
}

/// Attaches to the container's main process until it exits or the client leaves.
async fn run_attach(runtime: Arc<Runtime>, id: String, wanted: Wanted, wiring: Wiring) {
    let Wiring { stdin, resize: _, out } = wiring;
    let attached = tokio::task::spawn_blocking(move || runtime.attach(&id)).await;
    let stream = match attached {
        Ok(Ok(stream)) => stream,
        Ok(Err(err)) => {
            let _ = out.send(Out::Status(internal_status(err.to_string()))).await;
            return;
        }
        Err(err) => {
            let _ = out.send(Out::Status(internal_status(err.to_string()))).await;
            return;
        }
    };
    let (Ok(input), Ok(closer)) = (stream.try_clone(), stream.try_clone()) else {
        let _ = out.send(Out::Status(internal_status("cloning the attach socket".into()))).await;
        return;
    };
    if let Some(rx) = stdin {
        feed(rx, input);
    }
    let wants_output = wanted.stdout || wanted.stderr;
    let output = pump(stream, wants_output.then(|| out.clone()), Out::Stdout);
    // A client that leaves ends the attachment (the container keeps running).
    let watcher = out.clone();
    let leave = tokio::spawn(async move {
        watcher.closed().await;
        let _ = closer.shutdown(std::net::Shutdown::Both);
    });
    join(output).await;
    leave.abort();
    let _ = out.send(Out::Status(json!({"metadata": {}, "status": "Success"}))).await;
}

/// Parses concatenated resize messages, keeping an incomplete tail for later.
fn parse_resizes(buffer: &mut Vec<u8>) -> Vec<TermSize> {
    let mut sizes = Vec::new();
    let mut stream = serde_json::Deserializer::from_slice(buffer).into_iter::<TermSize>();
    let mut consumed = 0;
    while let Some(Ok(size)) = stream.next() {
        sizes.push(size);
        consumed = stream.byte_offset();
    }
    buffer.drain(..consumed);
    sizes
}

/// The WebSocket channel protocol as [`Wiring`].
fn websocket_wiring<IO>(io: IO, v5: bool, wanted: Wanted) -> Wiring
where
    IO: AsyncRead + AsyncWrite + Send + 'static,
{
    let (read, mut write) = tokio::io::split(io);
    let (stdin_tx, stdin_rx) = mpsc::channel::<Bytes>(16);
    let (resize_tx, resize_rx) = mpsc::channel::<TermSize>(4);
    let (out_tx, mut out_rx) = mpsc::channel::<Out>(64);
    let (pong_tx, mut pong_rx) = mpsc::channel::<Vec<u8>>(4);
    tokio::spawn(async move {
        let mut reader = websocket::Reader::new(read);
        let mut stdin = Some(stdin_tx);
        let mut resize_buf = Vec::new();
        while let Ok(Some(message)) = reader.next().await {
            let data = match message {
                Message::Binary(data) => data,
                Message::Ping(payload) => {
                    let _ = pong_tx.send(payload).await;
                    continue;
                }
                Message::Close => break,
                Message::Text(_) | Message::Pong => continue,
            };
            match data.split_first() {
                Some((&channel::STDIN, rest)) if !rest.is_empty() => {
                    if let Some(tx) = &stdin {
                        if tx.send(Bytes::copy_from_slice(rest)).await.is_err() {
                            stdin = None;
                        }
                    }
                }
                Some((&channel::RESIZE, rest)) => {
                    resize_buf.extend_from_slice(rest);
                    for size in parse_resizes(&mut resize_buf) {
                        let _ = resize_tx.send(size).await;
                    }
                }
                Some((&channel::CLOSE, [channel::STDIN])) if v5 => stdin = None,
                _ => {}
            }
        }
    });
    tokio::spawn(async move {
        loop {
            let frame = tokio::select! {
                out = out_rx.recv() => match out {
                    Some(Out::Stdout(b)) => websocket::channel_message(channel::STDOUT, &b),
                    Some(Out::Stderr(b)) => websocket::channel_message(channel::STDERR, &b),
                    Some(Out::Status(status)) => {
                        let bytes = websocket::channel_message(channel::ERROR, status.to_string().as_bytes());
                        let _ = write.write_all(&bytes).await;
                        break;
                    }
                    None => break,
                },
                Some(payload) = pong_rx.recv() => websocket::encode(Opcode::Pong, &payload),
            };
            if write.write_all(&frame).await.is_err() {
                return;
            }
        }
        let _ = write.write_all(&websocket::encode(Opcode::Close, &1000u16.to_be_bytes())).await;
        let _ = write.shutdown().await;
    });
    Wiring {
        stdin: wanted.stdin.then_some(stdin_rx),
        resize: wanted.tty.then_some(resize_rx),
        out: out_tx,
    }
}

/// How long a SPDY client may take to open the streams it asked for (the kubelet's
/// `DefaultStreamCreationTimeout`).
const STREAM_CREATION_TIMEOUT: Duration = Duration::from_secs(30);

/// The SPDY streams (`streamtype`s) a client opens for a request: `error` always, then one per
/// wanted stream, and `resize` with a tty. client-go opens them one at a time, each after the
/// SYN_REPLY to the one before.
fn expected_streams(wanted: Wanted) -> Vec<&'static str> {
    let mut kinds = vec!["error"];
    for (kind, on) in [
        ("stdin", wanted.stdin),
        ("stdout", wanted.stdout),
        ("stderr", wanted.stderr && !wanted.tty),
        ("resize", wanted.tty),
    ] {
        if on {
            kinds.push(kind);
        }
    }
    kinds
}

/// Stream ids by `streamtype`.
#[derive(Debug, Default)]
struct SpdyStreams(Vec<(String, u32)>);

impl SpdyStreams {
    fn id(&self, kind: &str) -> Option<u32> {
        self.0.iter().find(|(k, _)| k == kind).map(|(_, id)| *id)
    }

    fn has_all(&self, kinds: &[&str]) -> bool {
        kinds.iter().all(|kind| self.id(kind).is_some())
    }
}

/// The SPDY stream protocol (`v4.channel.k8s.io`) as [`Wiring`]: one stream per channel,
/// named by its `streamtype` header.
///
/// Resolves only once the client has opened every stream it asked for, as the kubelet does:
/// the command must not start before. A command that finished first would otherwise send
/// its `Status` and end the session (GOAWAY) while the client still waits for the SYN_REPLY
/// to its next stream: spdystream stops reading at a GOAWAY, so kubectl failed with
/// `Timeout occurred` (or `EOF`) and the output for the unopened streams was lost.
async fn spdy_wiring<IO>(io: IO, wanted: Wanted) -> Result<Wiring, String>
where
    IO: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut events, writer) = spdy::start(io);
    let expected = expected_streams(wanted);
    let mut streams = SpdyStreams::default();
    // Data or resets on streams already open, while the others are being opened.
    let mut early: Vec<Event> = Vec::new();
    let opened = tokio::time::timeout(STREAM_CREATION_TIMEOUT, async {
        while !streams.has_all(&expected) {
            match events.recv().await {
                Some(Event::Stream { id, headers }) => {
                    let kind = header(&headers, "streamtype").unwrap_or("").to_string();
                    streams.0.push((kind, id));
                }
                Some(event) => early.push(event),
                None => return Err("the client closed the session".to_string()),
            }
        }
        Ok(())
    })
    .await;
    let failure = match opened {
        Ok(Ok(())) => None,
        Ok(Err(why)) => Some(why),
        Err(_) => {
            Some(format!("timed out waiting for the client to open the streams {expected:?}"))
        }
    };
    if let Some(why) = failure {
        writer.go_away().await;
        return Err(why);
    }
    let (stdin_tx, stdin_rx) = mpsc::channel::<Bytes>(16);
    let (resize_tx, resize_rx) = mpsc::channel::<TermSize>(4);
    let (out_tx, out_rx) = mpsc::channel::<Out>(64);
    let (stdin_id, resize_id) = (streams.id("stdin"), streams.id("resize"));
    // Input: its own task, so a full stdin pipe never holds up the output (and the process).
    tokio::spawn(async move {
        let mut stdin = Some(stdin_tx);
        let mut resize_buf = Vec::new();
        let mut pending = early.into_iter();
        loop {
            let event = match pending.next() {
                Some(event) => event,
                None => match events.recv().await {
                    Some(event) => event,
                    // The client is gone: nothing more to deliver.
                    None => return,
                },
            };
            match event {
                Event::Data { id, data, fin } if Some(id) == stdin_id => {
                    if let (Some(tx), false) = (&stdin, data.is_empty()) {
                        if tx.send(Bytes::from(data)).await.is_err() {
                            stdin = None;
                        }
                    }
                    if fin {
                        stdin = None;
                    }
                }
                Event::Data { id, data, .. } if Some(id) == resize_id => {
                    resize_buf.extend_from_slice(&data);
                    for size in parse_resizes(&mut resize_buf) {
                        let _ = resize_tx.send(size).await;
                    }
                }
                Event::Reset { id } if Some(id) == stdin_id => stdin = None,
                _ => {}
            }
        }
    });
    tokio::spawn(spdy_output(writer, streams, out_rx));
    Ok(Wiring {
        stdin: wanted.stdin.then_some(stdin_rx),
        resize: wanted.tty.then_some(resize_rx),
        out: out_tx,
    })
}

/// Writes the command's output to the open SPDY streams, in order; then a FIN on the output
/// streams, the `Status` on the error stream, and a GOAWAY that ends the session.
async fn spdy_output(
    writer: spdy::FrameWriter,
    streams: SpdyStreams,
    mut out: mpsc::Receiver<Out>,
) {
    let mut status = None;
    while let Some(item) = out.recv().await {
        let (kind, data) = match item {
            Out::Stdout(data) => ("stdout", data),
            Out::Stderr(data) => ("stderr", data),
            Out::Status(last) => {
                status = Some(last);
                break;
            }
        };
        // Output for a stream the client did not ask for has nowhere to go.
        if let Some(id) = streams.id(kind) {
            if !writer.data(id, &data, false).await {
                return;
            }
        }
    }
    for kind in ["stdout", "stderr"] {
        if let Some(id) = streams.id(kind) {
            writer.data(id, &[], true).await;
        }
    }
    if let Some(id) = streams.id("error") {
        let status = status.map(|s| s.to_string()).unwrap_or_default();
        writer.data(id, status.as_bytes(), true).await;
    }
    writer.go_away().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_zero_exit_becomes_the_v4_status_kubectl_reads() {
        let cmd = vec!["sh".to_string(), "-c".into(), "exit 3".into()];
        let status = exit_status(3, &cmd);
        assert_eq!(status["reason"], "NonZeroExitCode");
        assert_eq!(status["details"]["causes"][0], json!({"reason": "ExitCode", "message": "3"}));
        assert_eq!(
            status["message"],
            "command terminated with non-zero exit code: error executing command [sh -c exit 3], exit code 3"
        );
        assert_eq!(exit_status(0, &cmd)["status"], "Success");
    }

    #[test]
    fn resize_messages_may_arrive_split_and_concatenated() {
        let mut buf = br#"{"Width":80,"Height":24}{"Width":1"#.to_vec();
        assert_eq!(parse_resizes(&mut buf), [TermSize { width: 80, height: 24 }]);
        buf.extend_from_slice(br#"20,"Height":40}"#);
        assert_eq!(parse_resizes(&mut buf), [TermSize { width: 120, height: 40 }]);
        assert!(buf.is_empty());
    }

    #[test]
    fn the_spdy_streams_expected_are_the_ones_client_go_opens() {
        let exec = Wanted { stdin: true, stdout: true, stderr: true, tty: false };
        assert_eq!(expected_streams(exec), ["error", "stdin", "stdout", "stderr"]);
        let terminal = Wanted { stdin: true, stdout: true, stderr: true, tty: true };
        assert_eq!(expected_streams(terminal), ["error", "stdin", "stdout", "resize"]);
    }

    /// The client end of a SPDY session, as client-go's spdystream speaks it.
    struct SpdyClient {
        io: tokio::io::DuplexStream,
        codec: spdy::frame::HeaderCodec,
    }

    impl SpdyClient {
        async fn send(&mut self, frame: spdy::frame::Frame) {
            let bytes = self.codec.encode(&frame);
            self.io.write_all(&bytes).await.unwrap();
        }

        /// The next frame from the server; `None` once it closed the connection.
        async fn recv(&mut self) -> Option<spdy::frame::Frame> {
            use tokio::io::AsyncReadExt;
            let mut buf = vec![0u8; 8];
            self.io.read_exact(&mut buf).await.ok()?;
            buf.resize(spdy::frame::frame_len(&buf).unwrap(), 0);
            self.io.read_exact(&mut buf[8..]).await.unwrap();
            Some(self.codec.decode(&buf).unwrap())
        }

        async fn open(&mut self, stream: u32, kind: &str) {
            let headers = vec![("streamtype".to_string(), kind.to_string())];
            let frame = spdy::frame::Frame::SynStream {
                stream,
                associated: 0,
                priority: 0,
                fin: false,
                headers,
            };
            self.send(frame).await;
        }
    }

    #[tokio::test]
    async fn a_command_that_ends_at_once_still_reaches_every_spdy_stream_the_client_opens() {
        use spdy::frame::Frame;
        let (server, client) = tokio::io::duplex(64 * 1024);
        let wanted = Wanted { stdout: true, stderr: true, ..Default::default() };
        // `hostname`: output and exit as soon as the command may start.
        tokio::spawn(async move {
            let wiring = spdy_wiring(server, wanted).await.unwrap();
            wiring.out.send(Out::Stdout(Bytes::from_static(b"tunnel-pod\n"))).await.unwrap();
            wiring.out.send(Out::Status(exit_status(0, &[]))).await.unwrap();
        });
        let mut client = SpdyClient { io: client, codec: Default::default() };
        let mut data: std::collections::HashMap<u32, (Vec<u8>, bool)> = Default::default();
        let record = |frame: Frame, data: &mut std::collections::HashMap<u32, (Vec<u8>, bool)>| {
            if let Frame::Data { stream, fin, data: bytes } = frame {
                let entry = data.entry(stream).or_default();
                entry.0.extend(bytes);
                entry.1 |= fin;
            }
        };
        // As client-go: error, stdout, stderr, each opened once the one before has its reply.
        for (id, kind) in [(1, "error"), (3, "stdout"), (5, "stderr")] {
            client.open(id, kind).await;
            loop {
                match client.recv().await {
                    Some(Frame::SynReply { stream, .. }) if stream == id => break,
                    Some(Frame::GoAway { .. }) | None => {
                        panic!("the session ended before the {kind} stream got its SYN_REPLY")
                    }
                    Some(frame) => record(frame, &mut data),
                }
            }
        }
        loop {
            match client.recv().await {
                Some(Frame::GoAway { .. }) | None => break,
                Some(frame) => record(frame, &mut data),
            }
        }
        assert_eq!(data[&3], (b"tunnel-pod\n".to_vec(), true), "stdout");
        assert_eq!(data[&5], (Vec::new(), true), "stderr");
        let (status, fin) = &data[&1];
        assert!(fin);
        let status: Value = serde_json::from_slice(status).unwrap();
        assert_eq!(status["status"], "Success");
    }

    #[tokio::test]
    async fn a_client_that_leaves_before_opening_its_streams_starts_nothing() {
        let (server, client) = tokio::io::duplex(64 * 1024);
        let wanted = Wanted { stdin: true, stdout: true, ..Default::default() };
        let wiring = tokio::spawn(spdy_wiring(server, wanted));
        let mut client = SpdyClient { io: client, codec: Default::default() };
        client.open(1, "error").await;
        drop(client);
        assert!(wiring.await.unwrap().is_err());
    }
}
