//! RFC 6455 WebSocket, server side, as much as the Kubernetes streaming protocols use: the
//! handshake key, reading (masked, possibly fragmented) client messages, writing unmasked
//! server frames; plus the channel framing of `v4.channel.k8s.io` / `v5.channel.k8s.io`
//! (each binary message starts with its channel: 0 stdin, 1 stdout, 2 stderr, 3 error,
//! 4 resize; v5 adds `[255, channel]` to close a channel).

use base64::Engine;
use tokio::io::{AsyncRead, AsyncReadExt};

/// The GUID of the accept-key computation.
const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/// The largest message accepted from a client.
const MAX_MESSAGE: usize = 16 << 20;

/// Channel numbers of the Kubernetes channel protocols.
pub mod channel {
    pub const STDIN: u8 = 0;
    pub const STDOUT: u8 = 1;
    pub const STDERR: u8 = 2;
    pub const ERROR: u8 = 3;
    pub const RESIZE: u8 = 4;
    /// v5: `[CLOSE, channel]` ends that channel.
    pub const CLOSE: u8 = 255;
}

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key`.
pub fn accept_key(key: &str) -> String {
    let digest = ring::digest::digest(
        &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
        format!("{}{GUID}", key.trim()).as_bytes(),
    );
    base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
}

/// Frame opcodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opcode {
    Continuation = 0,
    Text = 1,
    Binary = 2,
    Close = 8,
    Ping = 9,
    Pong = 10,
}

impl Opcode {
    fn from_u8(b: u8) -> Option<Opcode> {
        Some(match b {
            0 => Opcode::Continuation,
            1 => Opcode::Text,
            2 => Opcode::Binary,
            8 => Opcode::Close,
            9 => Opcode::Ping,
            10 => Opcode::Pong,
            _ => return None,
        })
    }
}

/// One whole message from the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Binary(Vec<u8>),
    Text(Vec<u8>),
    Ping(Vec<u8>),
    Pong,
    Close,
}

/// Encodes one unmasked, final frame (what a server sends).
pub fn encode(opcode: Opcode, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 10);
    out.push(0x80 | opcode as u8);
    match payload.len() {
        n if n < 126 => out.push(n as u8),
        n if n <= u16::MAX as usize => {
            out.push(126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
    out
}

/// A channel message: `[channel] ++ data`.
pub fn channel_message(channel: u8, data: &[u8]) -> Vec<u8> {
    let mut payload = Vec::with_capacity(data.len() + 1);
    payload.push(channel);
    payload.extend_from_slice(data);
    encode(Opcode::Binary, &payload)
}

fn invalid(why: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, why.to_string())
}

/// Reads client messages from a byte stream.
#[derive(Debug)]
pub struct Reader<R> {
    inner: R,
    /// A fragmented message being reassembled (control frames may come between fragments).
    partial: Option<(Opcode, Vec<u8>)>,
}

impl<R: AsyncRead + Unpin> Reader<R> {
    /// A reader over the switched connection.
    pub fn new(inner: R) -> Reader<R> {
        Reader { inner, partial: None }
    }

    /// Reads one frame: (fin, opcode, unmasked payload).
    async fn frame(&mut self) -> std::io::Result<(bool, Opcode, Vec<u8>)> {
        let mut head = [0u8; 2];
        self.inner.read_exact(&mut head).await?;
        let fin = head[0] & 0x80 != 0;
        let opcode = Opcode::from_u8(head[0] & 0x0f).ok_or_else(|| invalid("unknown opcode"))?;
        let masked = head[1] & 0x80 != 0;
        let len = match head[1] & 0x7f {
            126 => self.inner.read_u16().await? as usize,
            127 => usize::try_from(self.inner.read_u64().await?).unwrap_or(usize::MAX),
            n => n as usize,
        };
        if len > MAX_MESSAGE {
            return Err(invalid("message too large"));
        }
        let mut mask = [0u8; 4];
        if masked {
            self.inner.read_exact(&mut mask).await?;
        }
        let mut payload = vec![0u8; len];
        self.inner.read_exact(&mut payload).await?;
        if masked {
            for (i, b) in payload.iter_mut().enumerate() {
                *b ^= mask[i % 4];
            }
        }
        Ok((fin, opcode, payload))
    }

    /// The next whole message; `None` at end of stream.
    pub async fn next(&mut self) -> std::io::Result<Option<Message>> {
        loop {
            let (fin, opcode, payload) = match self.frame().await {
                Ok(frame) => frame,
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
                Err(e) => return Err(e),
            };
            match opcode {
                Opcode::Ping => return Ok(Some(Message::Ping(payload))),
                Opcode::Pong => return Ok(Some(Message::Pong)),
                Opcode::Close => return Ok(Some(Message::Close)),
                Opcode::Continuation => {
                    let (_, data) =
                        self.partial.as_mut().ok_or_else(|| invalid("stray continuation"))?;
                    data.extend_from_slice(&payload);
                    if data.len() > MAX_MESSAGE {
                        return Err(invalid("message too large"));
                    }
                }
                Opcode::Text | Opcode::Binary => self.partial = Some((opcode, payload)),
            }
            if fin {
                return Ok(self.partial.take().map(|(opcode, data)| match opcode {
                    Opcode::Text => Message::Text(data),
                    _ => Message::Binary(data),
                }));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client frame: masked, as RFC 6455 requires of clients.
    fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x12, 0x34, 0x56, 0x78];
        let mut out = vec![if fin { 0x80 } else { 0 } | opcode];
        match payload.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    #[test]
    fn accept_key_matches_rfc6455_example() {
        assert_eq!(accept_key("dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn server_frames_are_unmasked_with_the_right_length_form() {
        assert_eq!(channel_message(channel::STDOUT, b"hi"), [0x82, 3, 1, b'h', b'i']);
        let long = encode(Opcode::Binary, &[7u8; 300]);
        assert_eq!(long[..4], [0x82, 126, 1, 44]);
        assert_eq!(long.len(), 304);
        let huge = encode(Opcode::Binary, &vec![0u8; 70_000]);
        assert_eq!(huge[1], 127);
        assert_eq!(huge.len(), 70_000 + 10);
    }

    #[tokio::test]
    async fn masked_fragmented_client_messages_are_reassembled() {
        let mut wire = Vec::new();
        wire.extend(client_frame(false, 2, &[channel::STDIN, b'a', b'b']));
        wire.extend(client_frame(true, 9, b"p")); // a ping may come between fragments
        wire.extend(client_frame(true, 0, &[b'c'; 200]));
        wire.extend(client_frame(true, 2, &[channel::CLOSE, channel::STDIN]));
        wire.extend(client_frame(true, 8, &[3, 232]));
        let mut reader = Reader::new(wire.as_slice());
        assert_eq!(reader.next().await.unwrap(), Some(Message::Ping(b"p".to_vec())));
        let mut expected = vec![channel::STDIN, b'a', b'b'];
        expected.extend([b'c'; 200]);
        assert_eq!(reader.next().await.unwrap(), Some(Message::Binary(expected)));
        assert_eq!(
            reader.next().await.unwrap(),
            Some(Message::Binary(vec![channel::CLOSE, channel::STDIN]))
        );
        assert_eq!(reader.next().await.unwrap(), Some(Message::Close));
        assert_eq!(reader.next().await.unwrap(), None);
    }
}
