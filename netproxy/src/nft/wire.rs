//! The netlink wire format for nf_tables: attributes, messages and batches.
//!
//! A small encoder of our own (the subset nf_tables needs): each message is a `nlmsghdr`, a
//! `nfgenmsg` and a tree of attributes. Commands are collected into a [`Batch`] framed by
//! `NFNL_MSG_BATCH_BEGIN`/`END`, which the kernel applies as one transaction: all or nothing.

/// `NFNL_SUBSYS_NFTABLES`.
pub const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 16;
const NFNL_MSG_BATCH_END: u16 = 17;

/// `NLM_F_REQUEST`.
pub const NLM_F_REQUEST: u16 = 0x1;
/// `NLM_F_ACK`.
pub const NLM_F_ACK: u16 = 0x4;
/// `NLM_F_EXCL`.
pub const NLM_F_EXCL: u16 = 0x200;
/// `NLM_F_CREATE`.
pub const NLM_F_CREATE: u16 = 0x400;
/// `NLM_F_APPEND`.
pub const NLM_F_APPEND: u16 = 0x800;
const NLA_F_NESTED: u16 = 0x8000;
const NLMSG_HDRLEN: usize = 16;

/// nf_tables message types (`enum nf_tables_msg_types`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
#[allow(missing_docs)]
pub enum MsgType {
    NewTable = 0,
    GetTable = 1,
    DelTable = 2,
    NewChain = 3,
    DelChain = 5,
    NewRule = 6,
    DelRule = 8,
    NewSet = 9,
    DelSet = 11,
    NewSetElem = 12,
    DelSetElem = 14,
}

/// A tree of netlink attributes being built into a byte buffer.
#[derive(Debug, Default, Clone)]
pub struct Attrs {
    buf: Vec<u8>,
}

impl Attrs {
    /// An empty attribute list.
    pub fn new() -> Self {
        Attrs::default()
    }

    /// Appends an attribute with raw `data`.
    pub fn bytes(&mut self, kind: u16, data: &[u8]) -> &mut Self {
        let len = 4 + data.len();
        self.buf.extend_from_slice(&(len as u16).to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(data);
        self.pad();
        self
    }

    /// Appends a NUL-terminated string attribute.
    pub fn str(&mut self, kind: u16, s: &str) -> &mut Self {
        let mut data = Vec::with_capacity(s.len() + 1);
        data.extend_from_slice(s.as_bytes());
        data.push(0);
        self.bytes(kind, &data)
    }

    /// Appends a big-endian u32 (nf_tables sends integers in network order).
    pub fn be32(&mut self, kind: u16, v: u32) -> &mut Self {
        self.bytes(kind, &v.to_be_bytes())
    }

    /// Appends a big-endian u64.
    pub fn be64(&mut self, kind: u16, v: u64) -> &mut Self {
        self.bytes(kind, &v.to_be_bytes())
    }

    /// Appends a single byte.
    pub fn u8(&mut self, kind: u16, v: u8) -> &mut Self {
        self.bytes(kind, &[v])
    }

    /// Appends a nested attribute whose content `f` writes.
    pub fn nest(&mut self, kind: u16, f: impl FnOnce(&mut Attrs)) -> &mut Self {
        // Written in place: a header now, its length patched once the children are in.
        let start = self.buf.len();
        self.buf.extend_from_slice(&[0, 0]);
        self.buf.extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
        f(self);
        let len = (self.buf.len() - start) as u16;
        self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
        self
    }

    /// The encoded bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }

    fn pad(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }
}

/// A transaction: nf_tables commands between a batch begin and end.
#[derive(Debug)]
pub struct Batch {
    buf: Vec<u8>,
    seq: u32,
    first_seq: u32,
    last_cmd_seq: Option<u32>,
    last_cmd_at: usize,
    commands: usize,
}

impl Batch {
    /// A new batch whose sequence numbers start at `seq`.
    pub fn new(seq: u32) -> Self {
        let mut b = Batch {
            buf: Vec::with_capacity(4096),
            seq,
            first_seq: seq,
            last_cmd_seq: None,
            last_cmd_at: 0,
            commands: 0,
        };
        b.push_raw(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, 0, NFNL_SUBSYS_NFTABLES, &[]);
        b
    }

    /// Appends one command (`family` is the table's NFPROTO).
    pub fn push(&mut self, msg: MsgType, flags: u16, family: u8, attrs: &Attrs) {
        let kind = (NFNL_SUBSYS_NFTABLES << 8) | msg as u16;
        self.last_cmd_at = self.buf.len();
        self.last_cmd_seq = Some(self.seq);
        self.push_raw(kind, NLM_F_REQUEST | flags, family, 0, attrs.as_bytes());
        self.commands += 1;
    }

    /// Number of commands so far.
    pub fn len(&self) -> usize {
        self.commands
    }

    /// True when no command was added.
    pub fn is_empty(&self) -> bool {
        self.commands == 0
    }

    /// Closes the batch: asks for an ack on the last command (its ack, or an error for any
    /// command, tells the caller the kernel is done) and returns (bytes, ack seq, first seq).
    pub fn finish(mut self) -> Option<(Vec<u8>, u32, u32)> {
        let last = self.last_cmd_seq?;
        let flags_at = self.last_cmd_at + 6;
        let flags = u16::from_ne_bytes([self.buf[flags_at], self.buf[flags_at + 1]]) | NLM_F_ACK;
        self.buf[flags_at..flags_at + 2].copy_from_slice(&flags.to_ne_bytes());
        self.push_raw(NFNL_MSG_BATCH_END, NLM_F_REQUEST, 0, NFNL_SUBSYS_NFTABLES, &[]);
        Some((self.buf, last, self.first_seq))
    }

    fn push_raw(&mut self, kind: u16, flags: u16, family: u8, res_id: u16, payload: &[u8]) {
        let len = NLMSG_HDRLEN + 4 + payload.len();
        self.buf.extend_from_slice(&(len as u32).to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(&flags.to_ne_bytes());
        self.buf.extend_from_slice(&self.seq.to_ne_bytes());
        self.buf.extend_from_slice(&0u32.to_ne_bytes());
        self.buf.push(family);
        self.buf.push(0); // NFNETLINK_V0
        self.buf.extend_from_slice(&res_id.to_be_bytes());
        self.buf.extend_from_slice(payload);
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
        self.seq = self.seq.wrapping_add(1);
    }
}

/// One message read back from the kernel: its header fields and payload.
#[derive(Debug)]
pub struct Reply<'a> {
    /// `nlmsg_type`.
    pub kind: u16,
    /// `nlmsg_seq`.
    pub seq: u32,
    /// Bytes after the header.
    pub payload: &'a [u8],
}

/// Splits a buffer of netlink messages; stops at the first malformed header.
pub fn split_replies(mut buf: &[u8]) -> Vec<Reply<'_>> {
    let mut out = Vec::new();
    while buf.len() >= NLMSG_HDRLEN {
        let len = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        if len < NLMSG_HDRLEN || len > buf.len() {
            break;
        }
        let kind = u16::from_ne_bytes([buf[4], buf[5]]);
        let seq = u32::from_ne_bytes([buf[8], buf[9], buf[10], buf[11]]);
        out.push(Reply { kind, seq, payload: &buf[NLMSG_HDRLEN..len] });
        let step = (len + 3) & !3;
        buf = &buf[step.min(buf.len())..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_are_padded_and_nested_lengths_cover_children() {
        let mut a = Attrs::new();
        a.str(1, "ab").nest(2, |n| {
            n.be32(1, 7);
        });
        let b = a.as_bytes();
        // "ab\0" is 3 bytes: length 7, padded to 8.
        assert_eq!(&b[0..4], &[7, 0, 1, 0]);
        assert_eq!(&b[4..8], b"ab\0\0");
        assert_eq!(u16::from_ne_bytes([b[8], b[9]]), 12);
        assert_eq!(u16::from_ne_bytes([b[10], b[11]]), 2 | NLA_F_NESTED);
        assert_eq!(&b[16..20], &7u32.to_be_bytes());
    }

    #[test]
    fn batch_acks_only_its_last_command_and_is_framed() {
        let mut batch = Batch::new(100);
        let mut attrs = Attrs::new();
        attrs.str(1, "t");
        batch.push(MsgType::NewTable, NLM_F_CREATE, 2, &attrs);
        batch.push(MsgType::DelTable, 0, 2, &attrs);
        let (bytes, ack_seq, first) = batch.finish().unwrap();
        let msgs = split_replies(&bytes);
        assert_eq!(msgs.len(), 4);
        assert_eq!((first, ack_seq), (100, 102));
        assert_eq!(msgs[0].kind, NFNL_MSG_BATCH_BEGIN);
        assert_eq!(msgs[3].kind, NFNL_MSG_BATCH_END);
        let flags = |i: usize| {
            let off: usize = msgs[..i].iter().map(|m| (m.payload.len() + 16 + 3) & !3).sum();
            u16::from_ne_bytes([bytes[off + 6], bytes[off + 7]])
        };
        assert_eq!(flags(1) & NLM_F_ACK, 0);
        assert_eq!(flags(2) & NLM_F_ACK, NLM_F_ACK);
    }

    #[test]
    fn an_empty_batch_has_nothing_to_send() {
        assert!(Batch::new(1).finish().is_none());
    }
}
