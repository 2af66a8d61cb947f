//! The reference's IP and CIDR libraries: `ip(s)`/`isIP(s)`/`ip.isCanonical(s)`, an IP's
//! `family()`, `isUnspecified()`, `isLoopback()`, `isLinkLocalMulticast()`,
//! `isLinkLocalUnicast()`, `isGlobalUnicast()` and `string(ip)`; `cidr(s)`/`isCIDR(s)`, a
//! CIDR's `containsIP()`, `containsCIDR()` (of a value or a string), `ip()`, `masked()`,
//! `prefixLength()` and `string(cidr)`. As in the reference, zones (`fe80::1%eth0`) and
//! IPv4-mapped IPv6 addresses (`::ffff:1.2.3.4`) are refused.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use cel::common::functions::Function;
use cel::common::types::STRING_TYPE;
use cel::objects::Opaque;
use cel::{DeclarationError, Env, ExecutionError, Value};

use super::{error, opaque, opaque_arg, opaque_type, str_arg, string, value_fn, Out};

const IP_TYPE: &str = "net.IP";
const CIDR_TYPE: &str = "net.CIDR";

/// An IP address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in super::super) struct Ip(pub IpAddr);

impl Opaque for Ip {
    fn runtime_type_name(&self) -> &str {
        IP_TYPE
    }
}

/// An address and a prefix length (the address is kept as written, not masked).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in super::super) struct Cidr {
    pub addr: IpAddr,
    pub bits: u8,
}

impl Opaque for Cidr {
    fn runtime_type_name(&self) -> &str {
        CIDR_TYPE
    }
}

fn parse_ip(s: &str) -> Result<IpAddr, String> {
    if s.contains('%') {
        return Err(format!("IP address with zone value is not allowed: {s}"));
    }
    let addr: IpAddr = s.parse().map_err(|e| format!("ParseAddr({s:?}): {e}"))?;
    if let IpAddr::V6(v6) = addr {
        if v6.to_ipv4_mapped().is_some() {
            return Err(format!("IPv4-mapped IPv6 address {s:?} is not allowed"));
        }
    }
    Ok(addr)
}

fn parse_cidr(s: &str) -> Result<Cidr, String> {
    let (addr, bits) =
        s.split_once('/').ok_or_else(|| format!("netip.ParsePrefix({s:?}): no '/'"))?;
    let addr = parse_ip(addr)?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let valid = !bits.is_empty()
        && bits.bytes().all(|b| b.is_ascii_digit())
        && (bits == "0" || !bits.starts_with('0'));
    let bits: u8 = bits
        .parse()
        .ok()
        .filter(|b| valid && *b <= max)
        .ok_or_else(|| format!("netip.ParsePrefix({s:?}): bad bits after slash: {bits:?}"))?;
    Ok(Cidr { addr, bits })
}

fn to_bits(addr: IpAddr) -> (u128, u8) {
    match addr {
        IpAddr::V4(v4) => (u32::from(v4) as u128, 32),
        IpAddr::V6(v6) => (u128::from(v6), 128),
    }
}

fn mask(addr: IpAddr, bits: u8) -> IpAddr {
    let (value, width) = to_bits(addr);
    let keep = if bits == 0 { 0 } else { (!0u128) << (width - bits) };
    let masked = value & keep & if width == 32 { u32::MAX as u128 } else { u128::MAX };
    match addr {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from(masked as u32)),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(masked)),
    }
}

impl Cidr {
    fn contains(&self, ip: IpAddr) -> bool {
        self.addr.is_ipv4() == ip.is_ipv4() && mask(ip, self.bits) == mask(self.addr, self.bits)
    }
}

fn ip(args: &[Value]) -> Out {
    let s = str_arg(args, 0, "ip")?;
    parse_ip(s).map(|a| opaque(Ip(a))).map_err(|e| {
        error("ip", format!("IP Address {s:?} parse error during conversion from string: {e}"))
    })
}

fn is_ip(args: &[Value]) -> Out {
    Ok(Value::Bool(parse_ip(str_arg(args, 0, "isIP")?).is_ok()))
}

fn is_canonical(args: &[Value]) -> Out {
    let s = str_arg(args, 0, "ip.isCanonical")?;
    let addr = parse_ip(s).map_err(|e| error("ip.isCanonical", e))?;
    Ok(Value::Bool(addr.to_string() == s))
}

fn this_ip(args: &[Value], function: &str) -> Result<IpAddr, ExecutionError> {
    Ok(opaque_arg::<Ip>(args, 0, function)?.0)
}

fn family(args: &[Value]) -> Out {
    Ok(Value::Int(if this_ip(args, "family")?.is_ipv4() { 4 } else { 6 }))
}

fn is_unspecified(args: &[Value]) -> Out {
    Ok(Value::Bool(this_ip(args, "isUnspecified")?.is_unspecified()))
}

fn is_loopback(args: &[Value]) -> Out {
    Ok(Value::Bool(this_ip(args, "isLoopback")?.is_loopback()))
}

fn link_local_multicast(addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(v4) => v4.octets()[..3] == [224, 0, 0],
        IpAddr::V6(v6) => v6.segments()[0] & 0xff0f == 0xff02,
    }
}

fn link_local_unicast(addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => v6.segments()[0] & 0xffc0 == 0xfe80,
    }
}

fn is_link_local_multicast(args: &[Value]) -> Out {
    Ok(Value::Bool(link_local_multicast(this_ip(args, "isLinkLocalMulticast")?)))
}

fn is_link_local_unicast(args: &[Value]) -> Out {
    Ok(Value::Bool(link_local_unicast(this_ip(args, "isLinkLocalUnicast")?)))
}

fn is_global_unicast(args: &[Value]) -> Out {
    let addr = this_ip(args, "isGlobalUnicast")?;
    let broadcast = addr == IpAddr::V4(Ipv4Addr::BROADCAST);
    Ok(Value::Bool(
        !broadcast
            && !addr.is_unspecified()
            && !addr.is_loopback()
            && !addr.is_multicast()
            && !link_local_unicast(addr),
    ))
}

fn ip_string(args: &[Value]) -> Out {
    Ok(string(this_ip(args, "string")?.to_string()))
}

fn cidr(args: &[Value]) -> Out {
    let s = str_arg(args, 0, "cidr")?;
    parse_cidr(s).map(opaque).map_err(|e| {
        error(
            "cidr",
            format!("network address {s:?} parse error during conversion from string: {e}"),
        )
    })
}

fn is_cidr(args: &[Value]) -> Out {
    Ok(Value::Bool(parse_cidr(str_arg(args, 0, "isCIDR")?).is_ok()))
}

fn this_cidr(args: &[Value], function: &str) -> Result<Cidr, ExecutionError> {
    opaque_arg::<Cidr>(args, 0, function).copied()
}

fn contains_ip(args: &[Value]) -> Out {
    let cidr = this_cidr(args, "containsIP")?;
    let ip = match args.get(1) {
        Some(Value::String(s)) => parse_ip(s).map_err(|e| error("containsIP", e))?,
        _ => opaque_arg::<Ip>(args, 1, "containsIP")?.0,
    };
    Ok(Value::Bool(cidr.contains(ip)))
}

fn contains_cidr(args: &[Value]) -> Out {
    let cidr = this_cidr(args, "containsCIDR")?;
    let other = match args.get(1) {
        Some(Value::String(s)) => parse_cidr(s).map_err(|e| error("containsCIDR", e))?,
        _ => *opaque_arg::<Cidr>(args, 1, "containsCIDR")?,
    };
    Ok(Value::Bool(other.bits >= cidr.bits && cidr.contains(other.addr)))
}

fn cidr_ip(args: &[Value]) -> Out {
    Ok(opaque(Ip(this_cidr(args, "ip")?.addr)))
}

fn masked(args: &[Value]) -> Out {
    let cidr = this_cidr(args, "masked")?;
    Ok(opaque(Cidr { addr: mask(cidr.addr, cidr.bits), bits: cidr.bits }))
}

fn prefix_length(args: &[Value]) -> Out {
    Ok(Value::Int(this_cidr(args, "prefixLength")?.bits as i64))
}

fn cidr_string(args: &[Value]) -> Out {
    let cidr = this_cidr(args, "string")?;
    Ok(string(format!("{}/{}", cidr.addr, cidr.bits)))
}

pub(super) fn register(env: &mut Env) -> Result<(), DeclarationError> {
    let (ip_t, cidr_t) = (|| opaque_type(IP_TYPE), || opaque_type(CIDR_TYPE));
    env.add_type(ip_t())?;
    env.add_type(cidr_t())?;
    let globals: [(&str, &str, Function); 5] = [
        ("ip", "string_to_ip", value_fn!(ip)),
        ("isIP", "is_ip", value_fn!(is_ip)),
        ("ip.isCanonical", "ip_is_canonical", value_fn!(is_canonical)),
        ("cidr", "string_to_cidr", value_fn!(cidr)),
        ("isCIDR", "is_cidr", value_fn!(is_cidr)),
    ];
    for (name, id, f) in globals {
        env.add_overload(name, id, vec![STRING_TYPE], f)?;
    }
    env.add_overload("string", "ip_to_string", vec![ip_t()], value_fn!(ip_string))?;
    env.add_overload("string", "cidr_to_string", vec![cidr_t()], value_fn!(cidr_string))?;
    let ip_members: [(&str, Function); 6] = [
        ("family", value_fn!(family)),
        ("isUnspecified", value_fn!(is_unspecified)),
        ("isLoopback", value_fn!(is_loopback)),
        ("isLinkLocalMulticast", value_fn!(is_link_local_multicast)),
        ("isLinkLocalUnicast", value_fn!(is_link_local_unicast)),
        ("isGlobalUnicast", value_fn!(is_global_unicast)),
    ];
    for (name, f) in ip_members {
        env.add_member_overload(name, &format!("ip_{name}"), ip_t(), vec![], f)?;
    }
    let cidr_members: [(&str, Function); 3] = [
        ("ip", value_fn!(cidr_ip)),
        ("masked", value_fn!(masked)),
        ("prefixLength", value_fn!(prefix_length)),
    ];
    for (name, f) in cidr_members {
        env.add_member_overload(name, &format!("cidr_{name}"), cidr_t(), vec![], f)?;
    }
    for (arg, id) in [(STRING_TYPE, "string"), (ip_t(), "ip")] {
        let f = value_fn!(contains_ip);
        env.add_member_overload(
            "containsIP",
            &format!("cidr_contains_ip_{id}"),
            cidr_t(),
            vec![arg],
            f,
        )?;
    }
    for (arg, id) in [(STRING_TYPE, "string"), (cidr_t(), "cidr")] {
        let f = value_fn!(contains_cidr);
        env.add_member_overload(
            "containsCIDR",
            &format!("cidr_contains_cidr_{id}"),
            cidr_t(),
            vec![arg],
            f,
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_zones_and_mapped_addresses() {
        assert!(parse_ip("fe80::1%eth0").is_err());
        assert!(parse_ip("::ffff:1.2.3.4").is_err());
        assert!(parse_ip("01.2.3.4").is_err());
        assert!(parse_ip("2001:db8::1").is_ok());
        assert!(parse_cidr("10.0.0.0/33").is_err());
        assert!(parse_cidr("10.0.0.0/08").is_err());
        assert_eq!(parse_cidr("10.1.2.3/8").map(|c| c.bits), Ok(8));
    }

    #[test]
    fn containment_and_masking() {
        let net = parse_cidr("192.168.0.0/16").unwrap_or_else(|e| panic!("{e}"));
        assert!(net.contains("192.168.4.5".parse().unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))));
        assert!(!net.contains("192.169.0.1".parse().unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))));
        assert!(!net.contains("::1".parse().unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))));
        let v6 = parse_cidr("2001:db8::1/32").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(mask(v6.addr, v6.bits).to_string(), "2001:db8::");
        assert_eq!(
            mask("10.1.2.3".parse().unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)), 0).to_string(),
            "0.0.0.0"
        );
    }
}
