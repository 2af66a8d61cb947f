//! A lenient HTTP/2 `:authority`, for etcd clients that send a malformed one.
//!
//! etcdctl 3.4 (Debian's) puts the endpoint URL itself (`http://127.0.0.1:2379`) or a Unix
//! socket path into the HTTP/2 `:authority` of its per-endpoint commands (`endpoint status`,
//! `defrag`, `endpoint hashkv`) and of everything over `unix://`. etcd's Go server ignores the
//! authority; the `h2` crate rejects the request with `PROTOCOL_ERROR`. [`AuthorityFix`] wraps
//! the read side of a connection: frames pass through unchanged, except header blocks, which
//! are HPACK-decoded (with the client's compression state), get `localhost` in place of an
//! `:authority` that is not a valid URI authority, and are re-encoded for the server (with a
//! separate, consistent compression state). The server never sees the client's encoding, so
//! the two stay in step whatever either side's dynamic table does.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::Connected;

/// The HTTP/2 client connection preface, passed through as is.
const PREFACE_LEN: usize = 24;
const FRAME_HEADER_LEN: usize = 9;
const TYPE_HEADERS: u8 = 0x1;
const TYPE_CONTINUATION: u8 = 0x9;
const FLAG_END_STREAM: u8 = 0x1;
const FLAG_END_HEADERS: u8 = 0x4;
const FLAG_PADDED: u8 = 0x8;
const FLAG_PRIORITY: u8 = 0x20;
/// HTTP/2's default SETTINGS_MAX_FRAME_SIZE, which the server keeps.
const MAX_FRAME: usize = 16_384;
/// HTTP/2's default SETTINGS_HEADER_TABLE_SIZE, which the server advertises.
const TABLE_SIZE: usize = 4096;
/// Largest header block accepted from a client (across CONTINUATION frames).
const MAX_HEADER_BLOCK: usize = 1 << 20;
/// What replaces an invalid `:authority`.
const REPLACEMENT: &[u8] = b"localhost";

/// A header block being collected across HEADERS and CONTINUATION frames.
struct PendingBlock {
    stream_id: u32,
    end_stream: bool,
    block: Vec<u8>,
}

/// A connection whose incoming header blocks get a valid `:authority`.
pub(crate) struct AuthorityFix<IO> {
    io: IO,
    decoder: loona_hpack::Decoder<'static>,
    encoder: loona_hpack::Encoder<'static>,
    /// Bytes read from `io`, not yet processed.
    input: Vec<u8>,
    /// Processed bytes waiting to be read by the server.
    output: Vec<u8>,
    output_pos: usize,
    preface_left: usize,
    /// Payload bytes of the current non-header frame still to pass through.
    passthrough: usize,
    pending: Option<PendingBlock>,
    eof: bool,
}

impl<IO> AuthorityFix<IO> {
    /// Wraps a freshly accepted connection.
    pub(crate) fn new(io: IO) -> Self {
        let mut decoder = loona_hpack::Decoder::new();
        decoder.set_max_allowed_table_size(TABLE_SIZE);
        AuthorityFix {
            io,
            decoder,
            encoder: loona_hpack::Encoder::new(),
            input: Vec::new(),
            output: Vec::new(),
            output_pos: 0,
            preface_left: PREFACE_LEN,
            passthrough: 0,
            pending: None,
            eof: false,
        }
    }

    /// Moves everything complete from `input` to `output`.
    fn process(&mut self) -> io::Result<()> {
        let mut pos = 0;
        loop {
            let avail = self.input.len() - pos;
            if self.preface_left > 0 || self.passthrough > 0 {
                let want = if self.preface_left > 0 { self.preface_left } else { self.passthrough };
                let n = want.min(avail);
                if n == 0 {
                    break;
                }
                self.output.extend_from_slice(&self.input[pos..pos + n]);
                pos += n;
                if self.preface_left > 0 {
                    self.preface_left -= n;
                } else {
                    self.passthrough -= n;
                }
                continue;
            }
            if avail < FRAME_HEADER_LEN {
                break;
            }
            let header = &self.input[pos..pos + FRAME_HEADER_LEN];
            let len =
                usize::from(header[0]) << 16 | usize::from(header[1]) << 8 | usize::from(header[2]);
            let kind = header[3];
            let flags = header[4];
            let stream_id =
                u32::from_be_bytes([header[5], header[6], header[7], header[8]]) & 0x7fff_ffff;
            let in_block = self.pending.is_some();
            if kind != TYPE_HEADERS && kind != TYPE_CONTINUATION {
                if in_block {
                    return Err(protocol_error("frame interleaved with a header block"));
                }
                self.output.extend_from_slice(header);
                pos += FRAME_HEADER_LEN;
                self.passthrough = len;
                continue;
            }
            if avail < FRAME_HEADER_LEN + len {
                break; // wait for the whole header frame
            }
            let payload = &self.input[pos + FRAME_HEADER_LEN..pos + FRAME_HEADER_LEN + len];
            let fragment = match kind {
                TYPE_HEADERS if !in_block => headers_fragment(payload, flags)?,
                TYPE_CONTINUATION if in_block => payload,
                _ => return Err(protocol_error("unexpected HEADERS/CONTINUATION frame")),
            };
            let pending = self.pending.get_or_insert_with(|| PendingBlock {
                stream_id,
                end_stream: flags & FLAG_END_STREAM != 0,
                block: Vec::new(),
            });
            if pending.stream_id != stream_id
                || pending.block.len() + fragment.len() > MAX_HEADER_BLOCK
            {
                return Err(protocol_error("bad CONTINUATION frame"));
            }
            pending.block.extend_from_slice(fragment);
            pos += FRAME_HEADER_LEN + len;
            if flags & FLAG_END_HEADERS != 0 {
                if let Some(done) = self.pending.take() {
                    self.rewrite(done)?;
                }
            }
        }
        self.input.drain(..pos);
        Ok(())
    }

    /// Decodes a complete header block, fixes `:authority`, re-encodes it as HEADERS (+
    /// CONTINUATION) frames into `output`.
    fn rewrite(&mut self, block: PendingBlock) -> io::Result<()> {
        let mut headers = self
            .decoder
            .decode(&block.block)
            .map_err(|e| protocol_error(&format!("undecodable header block: {e:?}")))?;
        for (name, value) in &mut headers {
            if name.as_slice() == b":authority" && !valid_authority(value) {
                tracing::trace!(authority = %String::from_utf8_lossy(value), "replacing :authority");
                *value = REPLACEMENT.to_vec();
            }
        }
        let encoded =
            self.encoder.encode(headers.iter().map(|(n, v)| (n.as_slice(), v.as_slice())));
        let chunks: Vec<&[u8]> =
            if encoded.is_empty() { vec![&[][..]] } else { encoded.chunks(MAX_FRAME).collect() };
        let last = chunks.len() - 1;
        for (i, chunk) in chunks.into_iter().enumerate() {
            let (kind, mut flags) = if i == 0 {
                (TYPE_HEADERS, if block.end_stream { FLAG_END_STREAM } else { 0 })
            } else {
                (TYPE_CONTINUATION, 0)
            };
            if i == last {
                flags |= FLAG_END_HEADERS;
            }
            let len = chunk.len();
            // `len` is at most MAX_FRAME (< 2^24): the three length bytes hold it.
            self.output.extend_from_slice(&[
                (len >> 16) as u8,
                (len >> 8) as u8,
                len as u8,
                kind,
                flags,
            ]);
            self.output.extend_from_slice(&block.stream_id.to_be_bytes());
            self.output.extend_from_slice(chunk);
        }
        Ok(())
    }
}

/// The header block fragment of a HEADERS frame, without padding and priority fields.
fn headers_fragment(payload: &[u8], flags: u8) -> io::Result<&[u8]> {
    let mut start = 0;
    let mut end = payload.len();
    if flags & FLAG_PADDED != 0 {
        let pad =
            usize::from(*payload.first().ok_or_else(|| protocol_error("empty padded HEADERS"))?);
        start = 1;
        end = end.checked_sub(pad).ok_or_else(|| protocol_error("HEADERS padding too long"))?;
    }
    if flags & FLAG_PRIORITY != 0 {
        start += 5;
    }
    if start > end {
        return Err(protocol_error("HEADERS frame too short"));
    }
    Ok(&payload[start..end])
}

/// Whether `h2` would accept this `:authority`.
fn valid_authority(value: &[u8]) -> bool {
    http::uri::Authority::try_from(value).is_ok()
}

fn protocol_error(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("HTTP/2 from client: {what}"))
}

impl<IO: AsyncRead + Unpin> AsyncRead for AuthorityFix<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if this.output_pos < this.output.len() {
                let n = buf.remaining().min(this.output.len() - this.output_pos);
                buf.put_slice(&this.output[this.output_pos..this.output_pos + n]);
                this.output_pos += n;
                if this.output_pos == this.output.len() {
                    this.output.clear();
                    this.output_pos = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            let mut chunk = [0u8; 16 * 1024];
            let mut rb = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut this.io).poll_read(cx, &mut rb))?;
            if rb.filled().is_empty() {
                this.eof = true;
                continue;
            }
            this.input.extend_from_slice(rb.filled());
            this.process()?;
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for AuthorityFix<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

impl<IO: Connected> Connected for AuthorityFix<IO> {
    type ConnectInfo = IO::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len();
        let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    /// Feeds `wire` through the fix; returns what the server reads.
    async fn through(wire: Vec<u8>) -> Vec<u8> {
        let mut fix = AuthorityFix::new(std::io::Cursor::new(wire));
        let mut out = Vec::new();
        fix.read_to_end(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn url_authority_is_replaced_and_other_frames_pass_through() {
        let mut client = loona_hpack::Encoder::new();
        let headers: Vec<(&[u8], &[u8])> = vec![
            (b":method", b"POST"),
            (b":authority", b"http://127.0.0.1:2379"),
            (b":path", b"/etcdserverpb.KV/Range"),
        ];
        let block = client.encode(headers.clone());
        let mut wire = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        wire.extend(frame(0x4, 0, 0, &[0, 3, 0, 0, 0, 100])); // SETTINGS
                                                              // The block split over HEADERS (padded) + CONTINUATION.
        let (a, b) = block.split_at(block.len() / 2);
        let mut padded = vec![2u8];
        padded.extend_from_slice(a);
        padded.extend_from_slice(&[0, 0]);
        wire.extend(frame(TYPE_HEADERS, FLAG_PADDED, 1, &padded));
        wire.extend(frame(TYPE_CONTINUATION, FLAG_END_HEADERS, 1, b));
        wire.extend(frame(0x0, FLAG_END_STREAM, 1, b"\0\0\0\0\0"));

        let out = through(wire).await;
        assert_eq!(&out[..PREFACE_LEN], b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
        let settings = &out[PREFACE_LEN..PREFACE_LEN + 15];
        assert_eq!(settings, frame(0x4, 0, 0, &[0, 3, 0, 0, 0, 100]).as_slice());
        let rest = &out[PREFACE_LEN + 15..];
        let len = usize::from(rest[0]) << 16 | usize::from(rest[1]) << 8 | usize::from(rest[2]);
        assert_eq!((rest[3], rest[4]), (TYPE_HEADERS, FLAG_END_HEADERS));
        let mut server = loona_hpack::Decoder::new();
        let decoded = server.decode(&rest[9..9 + len]).unwrap();
        assert_eq!(decoded[1], (b":authority".to_vec(), b"localhost".to_vec()));
        assert_eq!(decoded[2].1, b"/etcdserverpb.KV/Range".to_vec());
        assert_eq!(&rest[9 + len..], frame(0x0, FLAG_END_STREAM, 1, b"\0\0\0\0\0").as_slice());
    }

    #[tokio::test]
    async fn valid_authority_is_kept_and_compression_state_carries_over() {
        let mut client = loona_hpack::Encoder::new();
        let mut wire = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        for stream in [1u32, 3] {
            let h: Vec<(&[u8], &[u8])> =
                vec![(b":authority", b"127.0.0.1:2379"), (b"x-id", b"same")];
            let block = client.encode(h);
            wire.extend(frame(TYPE_HEADERS, FLAG_END_HEADERS | FLAG_END_STREAM, stream, &block));
        }
        let out = through(wire).await;
        let mut server = loona_hpack::Decoder::new();
        let mut rest = &out[PREFACE_LEN..];
        for stream in [1u32, 3] {
            let len = usize::from(rest[2]);
            assert_eq!(rest[4], FLAG_END_HEADERS | FLAG_END_STREAM);
            assert_eq!(u32::from_be_bytes([rest[5], rest[6], rest[7], rest[8]]), stream);
            let decoded = server.decode(&rest[9..9 + len]).unwrap();
            assert_eq!(decoded[0].1, b"127.0.0.1:2379".to_vec());
            assert_eq!(decoded[1].1, b"same".to_vec());
            rest = &rest[9 + len..];
        }
    }

    #[tokio::test]
    async fn garbage_header_block_is_an_error_not_a_panic() {
        let mut wire = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        wire.extend(frame(TYPE_HEADERS, FLAG_END_HEADERS, 1, &[0xff, 0xff, 0xff, 0xff]));
        let mut fix = AuthorityFix::new(std::io::Cursor::new(wire));
        let mut out = Vec::new();
        assert!(fix.read_to_end(&mut out).await.is_err());
    }
}
