//! SPDY/3.1 framing (the SPDY/3 draft, as moby/spdystream speaks it for kubectl): frame
//! headers, the control frames a streaming server meets (SYN_STREAM, SYN_REPLY, RST_STREAM,
//! SETTINGS, PING, GOAWAY, HEADERS, WINDOW_UPDATE) and DATA, plus the name/value header blocks,
//! zlib-compressed with the SPDY dictionary and one compression context per direction for the
//! whole session. Pure byte work: no I/O here.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::dictionary::DICTIONARY;

/// The protocol version in control frames.
pub const VERSION: u16 = 3;
/// FLAG_FIN on DATA and on SYN_STREAM/SYN_REPLY/HEADERS.
pub const FLAG_FIN: u8 = 0x01;
/// The largest frame payload accepted (what the 24-bit length allows is 16 MiB; streams here
/// never need more than a few KiB of headers or 32 KiB of data per frame).
pub const MAX_PAYLOAD: usize = 1 << 24;

const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const SETTINGS: u16 = 4;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const HEADERS: u16 = 8;
const WINDOW_UPDATE: u16 = 9;

/// Why bytes are not a valid SPDY frame.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("unsupported SPDY version {0}")]
    Version(u16),
    #[error("truncated {0} frame")]
    Truncated(&'static str),
    #[error("bad header block: {0}")]
    HeaderBlock(String),
}

/// Name/value pairs of a header block (names lower-case; values may hold several
/// NUL-separated values, kept as sent).
pub type Headers = Vec<(String, String)>;

/// One frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Data {
        stream: u32,
        fin: bool,
        data: Vec<u8>,
    },
    SynStream {
        stream: u32,
        associated: u32,
        priority: u8,
        fin: bool,
        headers: Headers,
    },
    SynReply {
        stream: u32,
        fin: bool,
        headers: Headers,
    },
    RstStream {
        stream: u32,
        status: u32,
    },
    Settings,
    Ping {
        id: u32,
    },
    GoAway {
        last_good: u32,
        status: u32,
    },
    HeadersFrame {
        stream: u32,
        fin: bool,
        headers: Headers,
    },
    WindowUpdate {
        stream: u32,
        delta: u32,
    },
    /// A control frame type this implementation ignores (the spec says to).
    Unknown {
        kind: u16,
    },
}

/// The value of a header, if present.
pub fn header<'a>(headers: &'a Headers, name: &str) -> Option<&'a str> {
    headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

/// The length of the frame at the start of `buf`, once its 8-byte header is there.
pub fn frame_len(buf: &[u8]) -> Option<usize> {
    (buf.len() >= 8).then(|| 8 + (u32::from_be_bytes([0, buf[5], buf[6], buf[7]]) as usize))
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// The session's header compression: one zlib stream each way.
pub struct HeaderCodec {
    inflate: Decompress,
    deflate: Compress,
}

impl Default for HeaderCodec {
    fn default() -> Self {
        let mut deflate = Compress::new(Compression::default(), true);
        // A fresh stream takes a dictionary before any input; this cannot fail.
        let _ = deflate.set_dictionary(DICTIONARY);
        HeaderCodec { inflate: Decompress::new(true), deflate }
    }
}

impl std::fmt::Debug for HeaderCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeaderCodec").finish_non_exhaustive()
    }
}

impl HeaderCodec {
    /// Decompresses one frame's header block (the peer ends each with a sync flush).
    fn inflate(&mut self, mut input: &[u8]) -> Result<Vec<u8>, FrameError> {
        let bad = |e: String| FrameError::HeaderBlock(e);
        let mut out = Vec::with_capacity(input.len() * 4 + 64);
        loop {
            out.reserve(4096);
            let (before, produced) = (self.inflate.total_in(), out.len());
            let result = self.inflate.decompress_vec(input, &mut out, FlushDecompress::Sync);
            let used = (self.inflate.total_in() - before) as usize;
            input = &input[used..];
            match result {
                Err(e) if e.needs_dictionary().is_some() => {
                    self.inflate.set_dictionary(DICTIONARY).map_err(|e| bad(e.to_string()))?;
                    continue;
                }
                Err(e) => return Err(bad(e.to_string())),
                Ok(Status::StreamEnd) => return Ok(out),
                Ok(_) => {}
            }
            // Done when the input is used up and the output did not fill the room it had.
            if input.is_empty() && out.len() < out.capacity() {
                return Ok(out);
            }
            if used == 0 && out.len() == produced {
                return Err(bad("the compressed block does not progress".into()));
            }
            if out.len() > MAX_PAYLOAD {
                return Err(bad("header block too large".into()));
            }
        }
    }

    /// Compresses one header block, ending it with a sync flush.
    fn deflate(&mut self, input: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(input.len() + 64);
        let mut rest = input;
        loop {
            if out.capacity() - out.len() < 64 {
                out.reserve(256);
            }
            let before = self.deflate.total_in();
            // Compressing into a Vec with spare room does not fail.
            let _ = self.deflate.compress_vec(rest, &mut out, FlushCompress::Sync);
            rest = &rest[(self.deflate.total_in() - before) as usize..];
            // Done when all input is taken and the flush left room to spare.
            if rest.is_empty() && out.capacity() > out.len() {
                return out;
            }
        }
    }

    /// Parses one frame (`buf` holds exactly one whole frame, see [`frame_len`]).
    pub fn decode(&mut self, buf: &[u8]) -> Result<Frame, FrameError> {
        if buf.len() < 8 {
            return Err(FrameError::Truncated("any"));
        }
        let flags = buf[4];
        let fin = flags & FLAG_FIN != 0;
        let body = &buf[8..];
        if buf[0] & 0x80 == 0 {
            let stream = be32(buf) & 0x7fff_ffff;
            return Ok(Frame::Data { stream, fin, data: body.to_vec() });
        }
        let version = u16::from_be_bytes([buf[0] & 0x7f, buf[1]]);
        if version != VERSION {
            return Err(FrameError::Version(version));
        }
        let kind = u16::from_be_bytes([buf[2], buf[3]]);
        let need =
            |n: usize, what| if body.len() < n { Err(FrameError::Truncated(what)) } else { Ok(()) };
        Ok(match kind {
            SYN_STREAM => {
                need(10, "SYN_STREAM")?;
                Frame::SynStream {
                    stream: be32(body) & 0x7fff_ffff,
                    associated: be32(&body[4..]) & 0x7fff_ffff,
                    priority: body[8] >> 5,
                    fin,
                    headers: parse_block(&self.inflate(&body[10..])?)?,
                }
            }
            SYN_REPLY | HEADERS => {
                need(4, "SYN_REPLY")?;
                let stream = be32(body) & 0x7fff_ffff;
                let headers = parse_block(&self.inflate(&body[4..])?)?;
                if kind == SYN_REPLY {
                    Frame::SynReply { stream, fin, headers }
                } else {
                    Frame::HeadersFrame { stream, fin, headers }
                }
            }
            RST_STREAM => {
                need(8, "RST_STREAM")?;
                Frame::RstStream { stream: be32(body) & 0x7fff_ffff, status: be32(&body[4..]) }
            }
            SETTINGS => Frame::Settings,
            PING => {
                need(4, "PING")?;
                Frame::Ping { id: be32(body) }
            }
            GOAWAY => {
                need(8, "GOAWAY")?;
                Frame::GoAway { last_good: be32(body) & 0x7fff_ffff, status: be32(&body[4..]) }
            }
            WINDOW_UPDATE => {
                need(8, "WINDOW_UPDATE")?;
                Frame::WindowUpdate {
                    stream: be32(body) & 0x7fff_ffff,
                    delta: be32(&body[4..]) & 0x7fff_ffff,
                }
            }
            kind => Frame::Unknown { kind },
        })
    }

    /// Serializes one frame.
    pub fn encode(&mut self, frame: &Frame) -> Vec<u8> {
        let control = |kind: u16, flags: u8, body: Vec<u8>| {
            let mut out = Vec::with_capacity(8 + body.len());
            out.extend_from_slice(&(0x8000 | VERSION).to_be_bytes());
            out.extend_from_slice(&kind.to_be_bytes());
            out.extend_from_slice(&(((flags as u32) << 24) | body.len() as u32).to_be_bytes());
            out.extend_from_slice(&body);
            out
        };
        let fin_flag = |fin: bool| if fin { FLAG_FIN } else { 0 };
        match frame {
            Frame::Data { stream, fin, data } => {
                let mut out = Vec::with_capacity(8 + data.len());
                out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
                let len = (fin_flag(*fin) as u32) << 24 | data.len() as u32;
                out.extend_from_slice(&len.to_be_bytes());
                out.extend_from_slice(data);
                out
            }
            Frame::SynStream { stream, associated, priority, fin, headers } => {
                let mut body = Vec::new();
                body.extend_from_slice(&stream.to_be_bytes());
                body.extend_from_slice(&associated.to_be_bytes());
                body.extend_from_slice(&[priority << 5, 0]);
                body.extend(self.deflate(&build_block(headers)));
                control(SYN_STREAM, fin_flag(*fin), body)
            }
            Frame::SynReply { stream, fin, headers }
            | Frame::HeadersFrame { stream, fin, headers } => {
                let kind =
                    if matches!(frame, Frame::SynReply { .. }) { SYN_REPLY } else { HEADERS };
                let mut body = stream.to_be_bytes().to_vec();
                body.extend(self.deflate(&build_block(headers)));
                control(kind, fin_flag(*fin), body)
            }
            Frame::RstStream { stream, status } => {
                let mut body = stream.to_be_bytes().to_vec();
                body.extend_from_slice(&status.to_be_bytes());
                control(RST_STREAM, 0, body)
            }
            Frame::Settings => control(SETTINGS, 0, 0u32.to_be_bytes().to_vec()),
            Frame::Ping { id } => control(PING, 0, id.to_be_bytes().to_vec()),
            Frame::GoAway { last_good, status } => {
                let mut body = last_good.to_be_bytes().to_vec();
                body.extend_from_slice(&status.to_be_bytes());
                control(GOAWAY, 0, body)
            }
            Frame::WindowUpdate { stream, delta } => {
                let mut body = stream.to_be_bytes().to_vec();
                body.extend_from_slice(&delta.to_be_bytes());
                control(WINDOW_UPDATE, 0, body)
            }
            Frame::Unknown { kind } => control(*kind, 0, Vec::new()),
        }
    }
}

/// An uncompressed header block: count, then length-prefixed names and values.
fn build_block(headers: &Headers) -> Vec<u8> {
    let mut out = (headers.len() as u32).to_be_bytes().to_vec();
    for (name, value) in headers {
        for s in [name.to_ascii_lowercase().as_str(), value.as_str()] {
            out.extend_from_slice(&(s.len() as u32).to_be_bytes());
            out.extend_from_slice(s.as_bytes());
        }
    }
    out
}

/// Parses an uncompressed header block.
fn parse_block(block: &[u8]) -> Result<Headers, FrameError> {
    let bad = |why: &str| FrameError::HeaderBlock(why.to_string());
    let mut rest = block;
    let mut take = |n: usize| -> Result<&[u8], FrameError> {
        if rest.len() < n {
            return Err(bad("truncated"));
        }
        let (head, tail) = rest.split_at(n);
        rest = tail;
        Ok(head)
    };
    let count = be32(take(4)?) as usize;
    let mut headers = Vec::with_capacity(count.min(64));
    for _ in 0..count {
        let len = be32(take(4)?) as usize;
        let name = String::from_utf8_lossy(take(len)?).into_owned();
        let len = be32(take(4)?) as usize;
        let value = String::from_utf8_lossy(take(len)?).into_owned();
        headers.push((name, value));
    }
    Ok(headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> Headers {
        pairs.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect()
    }

    #[test]
    fn the_dictionary_is_the_spdy3_one() {
        let (mut a, mut b) = (1u32, 0u32);
        for byte in DICTIONARY {
            a = (a + *byte as u32) % 65521;
            b = (b + a) % 65521;
        }
        assert_eq!(DICTIONARY.len(), 1423);
        assert_eq!((b << 16) | a, 0xe3c6_a7c2);
    }

    #[test]
    fn frames_round_trip_through_one_compression_context_per_direction() {
        let mut sender = HeaderCodec::default();
        let mut receiver = HeaderCodec::default();
        let frames = vec![
            Frame::SynStream {
                stream: 1,
                associated: 0,
                priority: 0,
                fin: false,
                headers: headers(&[("streamtype", "error"), ("port", "8080"), ("requestid", "0")]),
            },
            Frame::SynStream {
                stream: 3,
                associated: 0,
                priority: 0,
                fin: true,
                headers: headers(&[("streamtype", "data"), ("port", "8080"), ("requestid", "0")]),
            },
            Frame::SynReply { stream: 3, fin: false, headers: Vec::new() },
            Frame::Data { stream: 3, fin: true, data: b"hello".to_vec() },
            Frame::Data { stream: 5, fin: false, data: Vec::new() },
            Frame::RstStream { stream: 3, status: 5 },
            Frame::Ping { id: 7 },
            Frame::GoAway { last_good: 3, status: 0 },
            Frame::WindowUpdate { stream: 1, delta: 65536 },
        ];
        let mut wire = Vec::new();
        for frame in &frames {
            wire.extend(sender.encode(frame));
        }
        let mut decoded = Vec::new();
        let mut rest = wire.as_slice();
        while let Some(len) = frame_len(rest) {
            decoded.push(receiver.decode(&rest[..len]).unwrap());
            rest = &rest[len..];
        }
        assert!(rest.is_empty());
        assert_eq!(decoded, frames);
    }

    #[test]
    fn header_blocks_use_the_spdy_dictionary() {
        // zlib header with FDICT set, then the dictionary's Adler-32, as Go's framer expects.
        let mut codec = HeaderCodec::default();
        let frame = codec.encode(&Frame::SynReply { stream: 1, fin: false, headers: Vec::new() });
        let block = &frame[12..];
        assert_eq!(block[1] & 0x20, 0x20, "FDICT flag");
        assert_eq!(be32(&block[2..6]), 0xe3c6_a7c2);
        // A data frame header: no control bit, FIN flag, 24-bit length.
        let data = codec.encode(&Frame::Data { stream: 5, fin: true, data: vec![1, 2, 3] });
        assert_eq!(data[..8], [0, 0, 0, 5, 1, 0, 0, 3]);
    }

    #[test]
    fn malformed_frames_are_errors_not_panics() {
        let mut codec = HeaderCodec::default();
        assert_eq!(codec.decode(&[0x80, 2, 0, 1, 0, 0, 0, 0]).unwrap_err(), FrameError::Version(2));
        assert!(codec.decode(&[0x80, 3, 0, 1, 0, 0, 0, 2, 0, 0]).is_err());
        let mut garbage = vec![0x80, 3, 0, 2, 0, 0, 0, 8, 0, 0, 0, 1];
        garbage.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
        assert!(codec.decode(&garbage).is_err());
    }
}
