//! SPDY/3.1, server side, as kubectl's SPDY streams (moby/spdystream) use it: the client opens
//! every stream; the server answers each SYN_STREAM with a SYN_REPLY at once, echoes PINGs, and
//! ends its half of a stream with a FIN. spdystream does no flow control, so neither does this
//! (WINDOW_UPDATE and SETTINGS are read and ignored).
//!
//! [`start`] splits a switched connection into a reader task, which turns frames into
//! [`Event`]s, and a writer task fed by [`FrameWriter`]s; the writer ends (and shuts the
//! connection down) when the last `FrameWriter` is dropped (the reader only holds a weak one).

mod dictionary;
pub mod frame;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use frame::{Frame, HeaderCodec, Headers};

/// Something the client did on the session.
#[derive(Debug)]
pub(crate) enum Event {
    /// A new stream (already answered with a SYN_REPLY).
    Stream { id: u32, headers: Headers },
    /// Data on a stream; `fin` ends the client's half.
    Data { id: u32, data: Vec<u8>, fin: bool },
    /// The client reset a stream.
    Reset { id: u32 },
}

/// A handle to send frames on the session.
#[derive(Clone, Debug)]
pub(crate) struct FrameWriter(mpsc::Sender<Frame>);

/// The largest DATA payload sent in one frame.
pub(crate) const MAX_DATA: usize = 32 * 1024;

impl FrameWriter {
    /// Sends data on a stream (`fin` ends our half). False once the session is gone.
    pub(crate) async fn data(&self, id: u32, data: &[u8], fin: bool) -> bool {
        let mut chunks = data.chunks(MAX_DATA).peekable();
        if chunks.peek().is_none() {
            return self.0.send(Frame::Data { stream: id, fin, data: Vec::new() }).await.is_ok();
        }
        while let Some(chunk) = chunks.next() {
            let last = chunks.peek().is_none();
            let frame = Frame::Data { stream: id, fin: fin && last, data: chunk.to_vec() };
            if self.0.send(frame).await.is_err() {
                return false;
            }
        }
        true
    }

    /// Resets a stream.
    pub(crate) async fn reset(&self, id: u32) {
        let _ = self.0.send(Frame::RstStream { stream: id, status: 5 }).await;
    }

    /// Says goodbye (the connection closes when every writer is dropped).
    pub(crate) async fn go_away(&self) {
        let _ = self.0.send(Frame::GoAway { last_good: 0, status: 0 }).await;
    }
}

/// Runs a SPDY session on a switched connection: client events come out of the receiver.
pub(crate) fn start<IO>(io: IO) -> (mpsc::Receiver<Event>, FrameWriter)
where
    IO: AsyncRead + AsyncWrite + Send + 'static,
{
    let (read, write) = tokio::io::split(io);
    let (frames_tx, frames_rx) = mpsc::channel::<Frame>(64);
    let (events_tx, events_rx) = mpsc::channel::<Event>(64);
    tokio::spawn(write_frames(write, frames_rx));
    tokio::spawn(read_frames(read, events_tx, frames_tx.downgrade()));
    (events_rx, FrameWriter(frames_tx))
}

async fn write_frames<W: AsyncWrite + Unpin>(mut write: W, mut frames: mpsc::Receiver<Frame>) {
    let mut codec = HeaderCodec::default();
    while let Some(frame) = frames.recv().await {
        let mut bytes = codec.encode(&frame);
        // Batch what is already queued into one write.
        while let Ok(next) = frames.try_recv() {
            bytes.extend(codec.encode(&next));
        }
        if write.write_all(&bytes).await.is_err() || write.flush().await.is_err() {
            return;
        }
    }
    let _ = write.shutdown().await;
}

async fn read_frames<R: AsyncRead + Unpin>(
    mut read: R,
    events: mpsc::Sender<Event>,
    writer: mpsc::WeakSender<Frame>,
) {
    // Weak: the session ends when its users drop their writers, whatever the reader is doing.
    let send = |frame: Frame| {
        let writer = writer.upgrade();
        async move {
            match writer {
                Some(writer) => writer.send(frame).await.is_ok(),
                None => false,
            }
        }
    };
    let mut codec = HeaderCodec::default();
    let mut buf = vec![0u8; 8];
    loop {
        buf.resize(8, 0);
        if read.read_exact(&mut buf[..8]).await.is_err() {
            return;
        }
        let Some(len) = frame::frame_len(&buf) else { return };
        buf.resize(len, 0);
        if read.read_exact(&mut buf[8..]).await.is_err() {
            return;
        }
        let frame = match codec.decode(&buf) {
            Ok(frame) => frame,
            Err(err) => {
                tracing::debug!(%err, "bad SPDY frame; closing the session");
                return;
            }
        };
        let event = match frame {
            Frame::SynStream { stream, headers, fin, .. } => {
                let reply = Frame::SynReply { stream, fin: false, headers: Vec::new() };
                if !send(reply).await {
                    return;
                }
                if events.send(Event::Stream { id: stream, headers }).await.is_err() {
                    return;
                }
                if !fin {
                    continue;
                }
                Event::Data { id: stream, data: Vec::new(), fin: true }
            }
            Frame::Data { stream, fin, data } => Event::Data { id: stream, data, fin },
            Frame::RstStream { stream, .. } => Event::Reset { id: stream },
            Frame::Ping { id } => {
                send(Frame::Ping { id }).await;
                continue;
            }
            Frame::GoAway { .. } => return,
            _ => continue,
        };
        if events.send(event).await.is_err() {
            return;
        }
    }
}
