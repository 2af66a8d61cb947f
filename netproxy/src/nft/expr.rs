//! nf_tables rule expressions: a small typed form and its netlink encoding.
//!
//! Only the expressions the proxy and pod network use. Helper constructors at the bottom
//! build the usual matches (`ip daddr 10.43.0.1`, `tcp dport 80`, …) so rule-building code
//! reads like nft syntax.

use std::net::Ipv4Addr;

use super::wire::Attrs;

/// `NFT_REG_VERDICT`.
pub const REG_VERDICT: u32 = 0;
/// `NFT_REG_1` (16-byte register; aliases `NFT_REG32_00..03`).
pub const REG_1: u32 = 1;
/// `NFT_REG_2`.
pub const REG_2: u32 = 2;
/// `NFT_REG32_00`, the first 4-byte register (concatenated keys start here).
pub const REG32_00: u32 = 8;

const NFTA_LIST_ELEM: u16 = 1;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_DATA_VERDICT: u16 = 2;

/// Where a payload expression reads from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadBase {
    /// The network (IPv4) header.
    Network = 1,
    /// The transport header.
    Transport = 2,
}

/// Comparison operators of `cmp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    /// `==`.
    Eq = 0,
    /// `!=`.
    Neq = 1,
}

/// Meta keys used here (`enum nft_meta_keys`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaKey {
    /// `meta mark`.
    Mark = 3,
    /// `meta iifname`.
    IifName = 6,
    /// `meta oifname`.
    OifName = 7,
    /// `meta l4proto`.
    L4Proto = 16,
}

/// A verdict, as a rule's final action or a map's data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// `accept`.
    Accept,
    /// `drop`.
    Drop,
    /// `return`.
    Return,
    /// `jump CHAIN`.
    Jump(String),
    /// `goto CHAIN`.
    Goto(String),
}

impl Verdict {
    /// Encodes as `NFTA_DATA_VERDICT` inside a data attribute.
    pub fn encode_data(&self, a: &mut Attrs) {
        let (code, chain): (i32, Option<&str>) = match self {
            Verdict::Accept => (1, None),
            Verdict::Drop => (0, None),
            Verdict::Return => (-5, None),
            Verdict::Jump(c) => (-3, Some(c)),
            Verdict::Goto(c) => (-4, Some(c)),
        };
        a.nest(NFTA_DATA_VERDICT, |v| {
            v.be32(1, code as u32);
            if let Some(c) = chain {
                v.str(2, c);
            }
        });
    }
}

/// One nf_tables expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    /// Load `len` bytes at `offset` of a header into `dreg`.
    Payload { base: PayloadBase, offset: u32, len: u32, dreg: u32 },
    /// Load a meta key into `dreg`.
    Meta { key: MetaKey, dreg: u32 },
    /// Set a meta key from `sreg`.
    MetaSet { key: MetaKey, sreg: u32 },
    /// Compare `sreg` with `data`; a mismatch ends the rule.
    Cmp { sreg: u32, op: CmpOp, data: Vec<u8> },
    /// `dreg = (sreg & mask) ^ xor`.
    Bitwise { sreg: u32, dreg: u32, mask: Vec<u8>, xor: Vec<u8> },
    /// Load constant `data` into `dreg`.
    Immediate { dreg: u32, data: Vec<u8> },
    /// The rule's verdict.
    Verdict(Verdict),
    /// Look `sreg` up in a named set (or map, with `dreg`); `invert` matches on a miss.
    Lookup { set: String, sreg: u32, dreg: Option<u32>, invert: bool },
    /// Add or refresh `sreg` in a named set with a timeout (`update @set { ip saddr }`).
    DynsetUpdate { set: String, sreg: u32, timeout_ms: u64 },
    /// Destination NAT to the address in `addr_reg` and the port in `port_reg`.
    Dnat { addr_reg: u32, port_reg: Option<u32> },
    /// `masquerade`.
    Masquerade,
    /// `numgen random mod modulus offset offset` into `dreg` (host byte order).
    NumgenRandom { dreg: u32, modulus: u32, offset: u32 },
    /// Converts `size`-byte words of `sreg` to network byte order into `dreg` (`hton`).
    ByteorderHton { sreg: u32, dreg: u32, len: u32, size: u32 },
    /// `reject` with ICMP port unreachable (TCP clients see "connection refused").
    RejectPortUnreachable,
    /// `ct state` into `dreg`.
    CtState { dreg: u32 },
    /// `fib daddr type` into `dreg`.
    FibDaddrType { dreg: u32 },
    /// `counter`.
    Counter,
}

impl Expr {
    fn name(&self) -> &'static str {
        match self {
            Expr::Payload { .. } => "payload",
            Expr::Meta { .. } | Expr::MetaSet { .. } => "meta",
            Expr::Cmp { .. } => "cmp",
            Expr::Bitwise { .. } => "bitwise",
            Expr::Immediate { .. } | Expr::Verdict(_) => "immediate",
            Expr::Lookup { .. } => "lookup",
            Expr::DynsetUpdate { .. } => "dynset",
            Expr::Dnat { .. } => "nat",
            Expr::Masquerade => "masq",
            Expr::NumgenRandom { .. } => "numgen",
            Expr::ByteorderHton { .. } => "byteorder",
            Expr::RejectPortUnreachable => "reject",
            Expr::CtState { .. } => "ct",
            Expr::FibDaddrType { .. } => "fib",
            Expr::Counter => "counter",
        }
    }

    fn encode_data(&self, a: &mut Attrs) {
        match self {
            Expr::Payload { base, offset, len, dreg } => {
                a.be32(1, *dreg).be32(2, *base as u32).be32(3, *offset).be32(4, *len);
            }
            Expr::Meta { key, dreg } => {
                a.be32(1, *dreg).be32(2, *key as u32);
            }
            Expr::MetaSet { key, sreg } => {
                a.be32(2, *key as u32).be32(3, *sreg);
            }
            Expr::Cmp { sreg, op, data } => {
                a.be32(1, *sreg).be32(2, *op as u32).nest(3, |d| {
                    d.bytes(NFTA_DATA_VALUE, data);
                });
            }
            Expr::Bitwise { sreg, dreg, mask, xor } => {
                a.be32(1, *sreg).be32(2, *dreg).be32(3, mask.len() as u32);
                a.nest(4, |d| {
                    d.bytes(NFTA_DATA_VALUE, mask);
                });
                a.nest(5, |d| {
                    d.bytes(NFTA_DATA_VALUE, xor);
                });
            }
            Expr::Immediate { dreg, data } => {
                a.be32(1, *dreg).nest(2, |d| {
                    d.bytes(NFTA_DATA_VALUE, data);
                });
            }
            Expr::Verdict(v) => {
                a.be32(1, REG_VERDICT).nest(2, |d| v.encode_data(d));
            }
            Expr::Lookup { set, sreg, dreg, invert } => {
                a.str(1, set).be32(2, *sreg);
                if let Some(d) = dreg {
                    a.be32(3, *d);
                }
                if *invert {
                    a.be32(5, 1);
                }
            }
            Expr::DynsetUpdate { set, sreg, timeout_ms } => {
                a.str(1, set).be32(3, 1).be32(4, *sreg).be64(6, *timeout_ms);
            }
            Expr::Dnat { addr_reg, port_reg } => {
                a.be32(1, 1).be32(2, libc::NFPROTO_IPV4 as u32).be32(3, *addr_reg);
                if let Some(p) = port_reg {
                    a.be32(5, *p);
                }
            }
            Expr::Masquerade => {}
            Expr::NumgenRandom { dreg, modulus, offset } => {
                a.be32(1, *dreg).be32(2, *modulus).be32(3, 1);
                if *offset != 0 {
                    a.be32(4, *offset);
                }
            }
            Expr::ByteorderHton { sreg, dreg, len, size } => {
                // NFTA_BYTEORDER_{SREG,DREG,OP,LEN,SIZE}; op 1 is NFT_BYTEORDER_HTON.
                a.be32(1, *sreg).be32(2, *dreg).be32(3, 1).be32(4, *len).be32(5, *size);
            }
            Expr::RejectPortUnreachable => {
                a.be32(1, 0).u8(2, 3);
            }
            Expr::CtState { dreg } => {
                a.be32(1, *dreg).be32(2, 0);
            }
            Expr::FibDaddrType { dreg } => {
                // NFTA_FIB_DREG, NFTA_FIB_RESULT = ADDRTYPE, NFTA_FIB_FLAGS = F_DADDR.
                a.be32(1, *dreg).be32(2, 3).be32(3, 1 << 1);
            }
            Expr::Counter => {}
        }
    }
}

/// Encodes a rule's expressions as `NFTA_RULE_EXPRESSIONS` content.
pub fn encode_list(exprs: &[Expr], a: &mut Attrs) {
    for e in exprs {
        a.nest(NFTA_LIST_ELEM, |el| {
            el.str(1, e.name());
            el.nest(2, |d| e.encode_data(d));
        });
    }
}

/// `ip daddr ADDR` (or `ip saddr` with `source`).
pub fn match_ip(source: bool, op: CmpOp, ip: Ipv4Addr) -> [Expr; 2] {
    let offset = if source { 12 } else { 16 };
    [
        Expr::Payload { base: PayloadBase::Network, offset, len: 4, dreg: REG_1 },
        Expr::Cmp { sreg: REG_1, op, data: ip.octets().to_vec() },
    ]
}

/// `ip saddr/daddr [!=] NET/LEN`.
pub fn match_net(source: bool, op: CmpOp, net: ipnet::Ipv4Net) -> [Expr; 3] {
    let offset = if source { 12 } else { 16 };
    [
        Expr::Payload { base: PayloadBase::Network, offset, len: 4, dreg: REG_1 },
        Expr::Bitwise {
            sreg: REG_1,
            dreg: REG_1,
            mask: net.netmask().octets().to_vec(),
            xor: vec![0; 4],
        },
        Expr::Cmp { sreg: REG_1, op, data: net.network().octets().to_vec() },
    ]
}

/// `meta l4proto PROTO`.
pub fn match_l4proto(proto: u8) -> [Expr; 2] {
    [
        Expr::Meta { key: MetaKey::L4Proto, dreg: REG_1 },
        Expr::Cmp { sreg: REG_1, op: CmpOp::Eq, data: vec![proto] },
    ]
}

/// `th dport PORT` (valid after an l4proto match of tcp/udp/sctp).
pub fn match_dport(port: u16) -> [Expr; 2] {
    [
        Expr::Payload { base: PayloadBase::Transport, offset: 2, len: 2, dreg: REG_1 },
        Expr::Cmp { sreg: REG_1, op: CmpOp::Eq, data: port.to_be_bytes().to_vec() },
    ]
}

/// `meta mark set mark | bits`.
pub fn set_mark_bits(bits: u32) -> [Expr; 3] {
    [
        Expr::Meta { key: MetaKey::Mark, dreg: REG_1 },
        Expr::Bitwise {
            sreg: REG_1,
            dreg: REG_1,
            mask: (!bits).to_ne_bytes().to_vec(),
            xor: bits.to_ne_bytes().to_vec(),
        },
        Expr::MetaSet { key: MetaKey::Mark, sreg: REG_1 },
    ]
}

/// `meta mark set mark & ~bits`.
pub fn clear_mark_bits(bits: u32) -> [Expr; 3] {
    [
        Expr::Meta { key: MetaKey::Mark, dreg: REG_1 },
        Expr::Bitwise {
            sreg: REG_1,
            dreg: REG_1,
            mask: (!bits).to_ne_bytes().to_vec(),
            xor: vec![0; 4],
        },
        Expr::MetaSet { key: MetaKey::Mark, sreg: REG_1 },
    ]
}

/// `meta mark & bits == bits`.
pub fn match_mark_bits(bits: u32) -> [Expr; 3] {
    [
        Expr::Meta { key: MetaKey::Mark, dreg: REG_1 },
        Expr::Bitwise {
            sreg: REG_1,
            dreg: REG_1,
            mask: bits.to_ne_bytes().to_vec(),
            xor: vec![0; 4],
        },
        Expr::Cmp { sreg: REG_1, op: CmpOp::Eq, data: bits.to_ne_bytes().to_vec() },
    ]
}

/// `ct state new` (the NEW bit set).
pub fn match_ct_new() -> [Expr; 3] {
    const NEW: u32 = 1 << 3;
    [
        Expr::CtState { dreg: REG_1 },
        Expr::Bitwise {
            sreg: REG_1,
            dreg: REG_1,
            mask: NEW.to_ne_bytes().to_vec(),
            xor: vec![0; 4],
        },
        Expr::Cmp { sreg: REG_1, op: CmpOp::Neq, data: vec![0; 4] },
    ]
}

/// `numgen random mod modulus == 0`: true with probability 1/modulus.
pub fn match_one_in(modulus: u32) -> [Expr; 2] {
    [
        Expr::NumgenRandom { dreg: REG_1, modulus, offset: 0 },
        Expr::Cmp { sreg: REG_1, op: CmpOp::Eq, data: 0u32.to_ne_bytes().to_vec() },
    ]
}

/// `dnat to ADDR:PORT`.
pub fn dnat_to(ip: Ipv4Addr, port: u16) -> [Expr; 3] {
    [
        Expr::Immediate { dreg: REG_1, data: ip.octets().to_vec() },
        Expr::Immediate { dreg: REG_2, data: port.to_be_bytes().to_vec() },
        Expr::Dnat { addr_reg: REG_1, port_reg: Some(REG_2) },
    ]
}

/// Loads the `ip daddr . meta l4proto . th dport` concatenation into `REG32_00..02`.
pub fn load_service_key() -> [Expr; 3] {
    [
        Expr::Payload { base: PayloadBase::Network, offset: 16, len: 4, dreg: REG32_00 },
        Expr::Meta { key: MetaKey::L4Proto, dreg: REG32_00 + 1 },
        Expr::Payload { base: PayloadBase::Transport, offset: 2, len: 2, dreg: REG32_00 + 2 },
    ]
}

/// Loads the `meta l4proto . th dport` concatenation into `REG32_00..01`.
pub fn load_port_key() -> [Expr; 2] {
    [
        Expr::Meta { key: MetaKey::L4Proto, dreg: REG32_00 },
        Expr::Payload { base: PayloadBase::Transport, offset: 2, len: 2, dreg: REG32_00 + 1 },
    ]
}

/// The key bytes of `ADDR . PROTO . PORT` as stored in a concatenated set (4-byte fields).
pub fn service_key(ip: Ipv4Addr, proto: u8, port: u16) -> Vec<u8> {
    let mut k = ip.octets().to_vec();
    k.extend_from_slice(&[proto, 0, 0, 0]);
    k.extend_from_slice(&port.to_be_bytes());
    k.extend_from_slice(&[0, 0]);
    k
}

/// The key bytes of `PROTO . PORT`.
pub fn port_key(proto: u8, port: u16) -> Vec<u8> {
    let mut k = vec![proto, 0, 0, 0];
    k.extend_from_slice(&port.to_be_bytes());
    k.extend_from_slice(&[0, 0]);
    k
}
