//! Domain-name helpers shared by the zone builder and the pod resolv.conf writer: label checks,
//! the dashed-IP labels Kubernetes DNS uses (`10-42-0-5`, `fd00--5`), and reverse names.

use std::net::IpAddr;

use hickory_proto::rr::Name;

/// Whether `s` is an RFC 1123 label (what Kubernetes names and hostnames must be).
pub(crate) fn is_dns_label(s: &str) -> bool {
    let bytes = s.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes.first() != Some(&b'-')
        && bytes.last() != Some(&b'-')
}

/// The label Kubernetes DNS derives from an IP: dots and colons become dashes.
pub(crate) fn dashed_ip(ip: IpAddr) -> String {
    ip.to_string().replace(['.', ':'], "-")
}

/// The IP a dashed label encodes, as CoreDNS decodes it: three dashes and no `--` is IPv4,
/// anything else IPv6 (`fd00--5`); None when the result is no address.
pub(crate) fn undashed_ip(label: &str) -> Option<IpAddr> {
    let text = if label.matches('-').count() == 3 && !label.contains("--") {
        label.replace('-', ".")
    } else {
        label.replace('-', ":")
    };
    text.parse().ok()
}

/// `label.parent`, or None when the result is not a valid name (too long, bad label).
pub(crate) fn child(parent: &Name, label: &str) -> Option<Name> {
    parent.prepend_label(label).ok()
}

/// The PTR owner name of an address: `d.c.b.a.in-addr.arpa.` or the nibble form in `ip6.arpa.`.
pub(crate) fn reverse_name(ip: IpAddr) -> Name {
    Name::from(ip)
}

/// Parses a domain such as `cluster.local` into a lower-case fully-qualified name.
pub(crate) fn parse_domain(domain: &str) -> Result<Name, String> {
    let trimmed = domain.trim().trim_end_matches('.');
    if trimmed.is_empty() {
        return Err("empty".to_string());
    }
    if !trimmed.split('.').all(is_dns_label) {
        return Err("every label must be a lower-case RFC 1123 label".to_string());
    }
    let mut name = Name::from_ascii(trimmed).map_err(|e| e.to_string())?;
    name.set_fqdn(true);
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_follow_rfc_1123() {
        assert!(is_dns_label("web-0"));
        assert!(is_dns_label("a"));
        assert!(!is_dns_label(""));
        assert!(!is_dns_label("-a"));
        assert!(!is_dns_label("a-"));
        assert!(!is_dns_label("Web"));
        assert!(!is_dns_label("a.b"));
        assert!(!is_dns_label(&"a".repeat(64)));
    }

    #[test]
    fn dashed_ips_match_kubernetes_pod_names() {
        assert_eq!(dashed_ip("10.42.0.5".parse().unwrap()), "10-42-0-5");
        assert_eq!(dashed_ip("fd00::5".parse().unwrap()), "fd00--5");
        for ip in ["10.42.0.5", "fd00::5", "2001:db8::1:0:0:1"] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(undashed_ip(&dashed_ip(ip)), Some(ip));
        }
        for label in ["web-0", "10-42-0", "10-42-0-256", "1-2-3-4-5", ""] {
            assert_eq!(undashed_ip(label), None, "{label}");
        }
    }

    #[test]
    fn reverse_names_are_in_addr_arpa() {
        let name = reverse_name("10.43.0.1".parse().unwrap());
        assert_eq!(name.to_ascii(), "1.0.43.10.in-addr.arpa.");
    }

    #[test]
    fn domains_are_fully_qualified_and_validated() {
        assert_eq!(parse_domain("cluster.local").unwrap().to_ascii(), "cluster.local.");
        assert_eq!(parse_domain("cluster.local.").unwrap().to_ascii(), "cluster.local.");
        assert!(parse_domain("").is_err());
        assert!(parse_domain("bad_domain.local").is_err());
    }
}
