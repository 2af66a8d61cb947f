//! nftables over nfnetlink, without the `nft` binary or libnftnl.
//!
//! [`wire`] frames messages and batches, [`expr`] encodes rule expressions, and this module
//! turns table/chain/set/rule commands into batch entries ([`TableTx`]) and sends a batch over a
//! `NETLINK_NETFILTER` socket ([`NfSocket`]), waiting for the kernel's verdict on the whole
//! transaction.

pub mod expr;
pub mod wire;

use std::os::fd::AsRawFd;
use std::path::Path;

use expr::{Expr, Verdict};
use wire::{Attrs, Batch, MsgType, NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE, NLM_F_REQUEST};

/// `NFPROTO_IPV4`, the family of every table here.
pub const FAMILY_IP: u8 = libc::NFPROTO_IPV4 as u8;

/// nft datatype ids (userspace `enum datatypes`), used so `nft list` can print our sets.
pub mod types {
    /// `integer`.
    pub const INTEGER: u32 = 4;
    /// `ipv4_addr`.
    pub const IPV4_ADDR: u32 = 7;
    /// `inet_proto`.
    pub const INET_PROTO: u32 = 12;
    /// `inet_service`.
    pub const INET_SERVICE: u32 = 13;
    /// Combines datatypes into a concatenation type (6 bits per field, as nft does).
    pub fn concat(parts: &[u32]) -> u32 {
        parts.iter().fold(0, |acc, p| (acc << 6) | p)
    }
}

/// Errors from talking to nf_tables.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    /// The socket could not be opened or used.
    #[error("nfnetlink socket: {0}")]
    Io(#[from] std::io::Error),
    /// The namespace could not be entered to open the socket.
    #[error(transparent)]
    Netns(#[from] crate::netns::NetnsError),
    /// The kernel rejected the transaction; nothing of it was applied.
    #[error("nf_tables rejected the transaction at command {index} of {total}: {source}")]
    Rejected { index: usize, total: usize, source: std::io::Error },
}

/// A base chain's hook.
#[derive(Debug, Clone, Copy)]
pub struct Hook {
    /// `filter` or `nat`.
    pub kind: &'static str,
    /// `NF_INET_*` hook number.
    pub hooknum: u32,
    /// Priority (`dstnat` is -100, `srcnat` 100).
    pub priority: i32,
}

/// A named set or map.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SetSpec {
    /// Set name.
    pub name: String,
    /// nft datatype id of the key (see [`types`]).
    pub key_type: u32,
    /// Key length in bytes (4-byte aligned per field for concatenations).
    pub key_len: u32,
    /// True for a verdict map.
    pub verdict_map: bool,
    /// For a data map: the nft datatype id and length in bytes of its values.
    pub value_map: Option<(u32, u32)>,
    /// Elements are ranges (`flags interval`), keys in network byte order.
    pub interval: bool,
    /// Default element timeout, making the set dynamic (updated from the packet path).
    pub timeout_ms: Option<u64>,
}

/// One range of an interval data map: `[start, end)` (keys in network byte order) maps to
/// `value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    /// First key of the range.
    pub start: Vec<u8>,
    /// First key after the range.
    pub end: Vec<u8>,
    /// The mapped value.
    pub value: Vec<u8>,
}

enum ElemData<'a> {
    Verdict(&'a Verdict),
    Value(&'a [u8]),
}

struct Elem<'a> {
    key: &'a [u8],
    data: Option<ElemData<'a>>,
    end: bool,
}

fn range_elems(ranges: &[Range], with_values: bool) -> Vec<Elem<'_>> {
    ranges
        .iter()
        .flat_map(|r| {
            let value = with_values.then_some(ElemData::Value(&r.value));
            [
                Elem { key: &r.start, data: value, end: false },
                Elem { key: &r.end, data: None, end: true },
            ]
        })
        .collect()
}

/// Commands on one table, appended to a batch.
pub struct TableTx<'a> {
    batch: &'a mut Batch,
    table: &'a str,
}

impl<'a> TableTx<'a> {
    /// Commands on `table` (family ip) into `batch`.
    pub fn new(batch: &'a mut Batch, table: &'a str) -> Self {
        TableTx { batch, table }
    }

    fn push(&mut self, msg: MsgType, flags: u16, attrs: &Attrs) {
        self.batch.push(msg, flags, FAMILY_IP, attrs);
    }

    /// Creates the table if it does not exist.
    pub fn add_table(&mut self) {
        let mut a = Attrs::new();
        a.str(1, self.table);
        self.push(MsgType::NewTable, NLM_F_CREATE, &a);
    }

    /// Deletes the table and everything in it (it must exist: pair with `add_table` first).
    pub fn del_table(&mut self) {
        let mut a = Attrs::new();
        a.str(1, self.table);
        self.push(MsgType::DelTable, 0, &a);
    }

    /// Creates a chain (a base chain with `hook`) if it does not exist.
    pub fn add_chain(&mut self, name: &str, hook: Option<Hook>) {
        let mut a = Attrs::new();
        a.str(1, self.table).str(3, name);
        if let Some(h) = hook {
            a.nest(4, |n| {
                n.be32(1, h.hooknum).be32(2, h.priority as u32);
            });
            a.be32(5, 1); // policy accept: never drop what we do not own
            a.str(7, h.kind);
        }
        self.push(MsgType::NewChain, NLM_F_CREATE, &a);
    }

    /// Deletes every rule of a chain.
    pub fn flush_chain(&mut self, name: &str) {
        let mut a = Attrs::new();
        a.str(1, self.table).str(2, name);
        self.push(MsgType::DelRule, 0, &a);
    }

    /// Deletes an (empty, unreferenced) chain.
    pub fn del_chain(&mut self, name: &str) {
        let mut a = Attrs::new();
        a.str(1, self.table).str(3, name);
        self.push(MsgType::DelChain, 0, &a);
    }

    /// Appends a rule to a chain.
    pub fn add_rule(&mut self, chain: &str, exprs: &[Expr]) {
        let mut a = Attrs::new();
        a.str(1, self.table).str(2, chain);
        a.nest(4, |l| expr::encode_list(exprs, l));
        self.push(MsgType::NewRule, NLM_F_CREATE | NLM_F_APPEND, &a);
    }

    /// Creates a named set or map.
    pub fn add_set(&mut self, set: &SetSpec) {
        const INTERVAL: u32 = 0x4;
        const MAP: u32 = 0x8;
        const TIMEOUT: u32 = 0x10;
        const EVAL: u32 = 0x20;
        let mut flags = 0;
        if set.verdict_map || set.value_map.is_some() {
            flags |= MAP;
        }
        if set.interval {
            flags |= INTERVAL;
        }
        if set.timeout_ms.is_some() {
            flags |= TIMEOUT | EVAL;
        }
        let mut a = Attrs::new();
        a.str(1, self.table).str(2, &set.name).be32(3, flags);
        a.be32(4, set.key_type).be32(5, set.key_len);
        if set.verdict_map {
            a.be32(6, 0xffff_ff00); // NFT_DATA_VERDICT
        }
        if let Some((data_type, data_len)) = set.value_map {
            a.be32(6, data_type).be32(7, data_len);
        }
        if set.interval {
            // NFTA_SET_USERDATA: tells `nft list` the keys are big endian
            // (NFTNL_UDATA_SET_KEYBYTEORDER = BYTEORDER_BIG_ENDIAN), so it prints ranges right.
            a.bytes(13, &[0, 4, 2, 0, 0, 0]);
        }
        if let Some(t) = set.timeout_ms {
            a.be64(11, t);
        }
        a.be32(10, self.batch.len() as u32 + 1); // NFTA_SET_ID: unique within the batch
        self.push(MsgType::NewSet, NLM_F_CREATE, &a);
    }

    /// Deletes a named set (no rule may still use it).
    pub fn del_set(&mut self, name: &str) {
        let mut a = Attrs::new();
        a.str(1, self.table).str(2, name);
        self.push(MsgType::DelSet, 0, &a);
    }

    /// Adds elements (with a verdict each for maps), split into messages under 64 KiB.
    pub fn add_elements(&mut self, set: &str, elems: &[(Vec<u8>, Option<Verdict>)]) {
        let elems: Vec<Elem<'_>> = elems
            .iter()
            .map(|(k, v)| Elem { key: k, data: v.as_ref().map(ElemData::Verdict), end: false })
            .collect();
        self.elements(MsgType::NewSetElem, NLM_F_CREATE, set, &elems);
    }

    /// Deletes elements by key.
    pub fn del_elements(&mut self, set: &str, keys: &[Vec<u8>]) {
        let elems: Vec<Elem<'_>> =
            keys.iter().map(|k| Elem { key: k, data: None, end: false }).collect();
        self.elements(MsgType::DelSetElem, 0, set, &elems);
    }

    /// Adds ranges `[start, end)` with a value each to an interval data map: a start
    /// element carrying the value and an end element (`NFT_SET_ELEM_INTERVAL_END`) each.
    pub fn add_ranges(&mut self, set: &str, ranges: &[Range]) {
        let elems = range_elems(ranges, true);
        self.elements(MsgType::NewSetElem, NLM_F_CREATE, set, &elems);
    }

    /// Deletes ranges added by [`add_ranges`](Self::add_ranges) (both of their elements).
    pub fn del_ranges(&mut self, set: &str, ranges: &[Range]) {
        let elems = range_elems(ranges, false);
        self.elements(MsgType::DelSetElem, 0, set, &elems);
    }

    fn elements(&mut self, msg: MsgType, flags: u16, set: &str, elems: &[Elem<'_>]) {
        // Netlink attribute lengths are 16 bits: keep each message's element list well below.
        for chunk in elems.chunks(200) {
            let mut a = Attrs::new();
            a.str(1, self.table).str(2, set);
            a.nest(3, |list| {
                for e in chunk {
                    list.nest(1, |el| {
                        el.nest(1, |k| {
                            k.bytes(1, e.key);
                        });
                        if e.end {
                            el.be32(3, 1); // NFTA_SET_ELEM_FLAGS: NFT_SET_ELEM_INTERVAL_END
                        }
                        match e.data {
                            Some(ElemData::Verdict(v)) => {
                                el.nest(2, |d| v.encode_data(d));
                            }
                            Some(ElemData::Value(bytes)) => {
                                el.nest(2, |d| {
                                    d.bytes(1, bytes); // NFTA_DATA_VALUE
                                });
                            }
                            None => {}
                        }
                    });
                }
            });
            self.push(msg, flags, &a);
        }
    }
}

/// A `NETLINK_NETFILTER` socket bound in one network namespace.
pub struct NfSocket {
    sock: netlink_sys::Socket,
    seq: u32,
}

impl NfSocket {
    /// Opens a socket inside `netns` (`None`: the caller's namespace).
    pub fn open(netns: Option<&Path>) -> Result<Self, NftError> {
        let sock = crate::netns::run_in(netns, || -> std::io::Result<netlink_sys::Socket> {
            let mut s = netlink_sys::Socket::new(netlink_sys::protocols::NETLINK_NETFILTER)?;
            s.bind_auto()?;
            s.set_cap_ack(true)?; // errors carry only the failing header, not the whole batch
            s.set_ext_ack(true)?;
            // Never wait forever on a kernel answer that cannot come.
            let tv = libc::timeval { tv_sec: 30, tv_usec: 0 };
            // SAFETY: setsockopt with a valid timeval.
            let rc = unsafe {
                libc::setsockopt(
                    s.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_RCVTIMEO,
                    (&tv as *const libc::timeval).cast(),
                    std::mem::size_of::<libc::timeval>() as libc::socklen_t,
                )
            };
            if rc != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(s)
        })??;
        Ok(NfSocket { sock, seq: 1 })
    }

    /// A batch to fill, numbered for this socket.
    pub fn batch(&mut self) -> Batch {
        Batch::new(self.seq)
    }

    /// Sends a batch and waits for the kernel's answer; an error means nothing was applied.
    pub fn commit(&mut self, batch: Batch) -> Result<(), NftError> {
        let total = batch.len();
        let Some((bytes, ack_seq, first_seq)) = batch.finish() else {
            return Ok(());
        };
        self.seq = ack_seq.wrapping_add(2);
        set_sndbuf(&self.sock, bytes.len() + 65536)?;
        self.send_all(&bytes)?;
        let mut failure: Option<(usize, i32)> = None;
        loop {
            let buf = self.recv()?;
            for reply in wire::split_replies(&buf) {
                if reply.kind != libc::NLMSG_ERROR as u16 || reply.payload.len() < 4 {
                    continue;
                }
                let p = reply.payload;
                let code = i32::from_ne_bytes([p[0], p[1], p[2], p[3]]);
                if code != 0 && reply.seq == first_seq {
                    // The batch header itself was refused: no command was looked at.
                    return Err(NftError::Rejected {
                        index: 0,
                        total,
                        source: std::io::Error::from_raw_os_error(-code),
                    });
                }
                if code != 0 && failure.is_none() {
                    // Command index: sequence distance from the first command (after BEGIN).
                    let index = reply.seq.wrapping_sub(first_seq) as usize;
                    failure = Some((index, -code));
                }
                if reply.seq == ack_seq {
                    return match failure {
                        None => Ok(()),
                        Some((index, errno)) => Err(NftError::Rejected {
                            index,
                            total,
                            source: std::io::Error::from_raw_os_error(errno),
                        }),
                    };
                }
            }
        }
    }

    /// True when table `name` (family ip) exists.
    pub fn table_exists(&mut self, name: &str) -> Result<bool, NftError> {
        let seq = self.seq;
        self.seq = self.seq.wrapping_add(1);
        let mut a = Attrs::new();
        a.str(1, name);
        let mut msg = Vec::new();
        let kind = (wire::NFNL_SUBSYS_NFTABLES << 8) | MsgType::GetTable as u16;
        let len = 16 + 4 + a.as_bytes().len();
        msg.extend_from_slice(&(len as u32).to_ne_bytes());
        msg.extend_from_slice(&kind.to_ne_bytes());
        msg.extend_from_slice(&(NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
        msg.extend_from_slice(&seq.to_ne_bytes());
        msg.extend_from_slice(&0u32.to_ne_bytes());
        msg.extend_from_slice(&[FAMILY_IP, 0, 0, 0]);
        msg.extend_from_slice(a.as_bytes());
        self.send_all(&msg)?;
        let mut found = false;
        loop {
            let buf = self.recv()?;
            for reply in wire::split_replies(&buf) {
                if reply.seq != seq {
                    continue;
                }
                if reply.kind == libc::NLMSG_ERROR as u16 && reply.payload.len() >= 4 {
                    let p = reply.payload;
                    let code = -i32::from_ne_bytes([p[0], p[1], p[2], p[3]]);
                    return match code {
                        0 => Ok(found),
                        libc::ENOENT => Ok(false),
                        e => Err(NftError::Io(std::io::Error::from_raw_os_error(e))),
                    };
                }
                found = true;
            }
        }
    }

    fn send_all(&self, bytes: &[u8]) -> Result<(), NftError> {
        let sent = self.sock.send(bytes, 0)?;
        if sent != bytes.len() {
            return Err(NftError::Io(std::io::Error::other("short netlink send")));
        }
        Ok(())
    }

    fn recv(&self) -> Result<Vec<u8>, NftError> {
        let mut buf = vec![0u8; 256 * 1024];
        let n = loop {
            // SAFETY: the buffer is valid for its length; recv writes at most that much.
            let n =
                unsafe { libc::recv(self.sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n >= 0 {
                break n;
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(NftError::Io(e));
            }
        };
        buf.truncate(n as usize);
        Ok(buf)
    }
}

/// Raises the send buffer so a large batch fits in one message (the kernel needs the whole
/// batch in one skb to apply it atomically). `SO_SNDBUFFORCE` needs CAP_NET_ADMIN, which
/// programming nf_tables needs anyway.
fn set_sndbuf(sock: &netlink_sys::Socket, size: usize) -> std::io::Result<()> {
    let size = size.min(i32::MAX as usize) as libc::c_int;
    // SAFETY: setsockopt with a valid int option value.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDBUFFORCE,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
