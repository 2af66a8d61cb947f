//! resolv.conf in both directions: reading the node's (for upstream resolvers and the search
//! domains pods inherit) and writing a pod's, following kubelet's rules for each `dnsPolicy`.
//!
//! [`pod_resolv_conf`] is a pure function so the agent and the runtime can call it when they
//! create a sandbox and write the result to the pod's `/etc/resolv.conf`.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use k8s_openapi::api::core::v1::Pod;

use crate::error::DnsError;

/// At most this many nameservers are honoured by the C library (kubelet trims to it too).
pub const MAX_NAMESERVERS: usize = 3;
/// At most this many search domains (Kubernetes' limit since 1.28).
pub const MAX_SEARCH_DOMAINS: usize = 32;
/// At most this many characters in the search line (Kubernetes' limit since 1.28).
pub const MAX_SEARCH_CHARS: usize = 2048;

/// The contents of a resolv.conf: what Kubernetes lets a pod configure.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResolvConf {
    /// `nameserver` lines, as written (IPv6 may carry a `%zone`).
    pub nameservers: Vec<String>,
    /// The `search` domains, in order.
    pub search: Vec<String>,
    /// `options`, as (name, value): `ndots:5` is `("ndots", Some("5"))`.
    pub options: Vec<(String, Option<String>)>,
}

impl ResolvConf {
    /// Parses resolv.conf text; unknown lines are ignored, as the C library does.
    pub fn parse(text: &str) -> Self {
        let mut conf = ResolvConf::default();
        for line in text.lines() {
            let line = line.split(['#', ';']).next().unwrap_or_default();
            let mut words = line.split_whitespace();
            match words.next() {
                Some("nameserver") => conf.nameservers.extend(words.next().map(str::to_string)),
                // The last search/domain line wins, as in glibc.
                Some("search" | "domain") => conf.search = words.map(str::to_string).collect(),
                Some("options") => {
                    for word in words {
                        set_option(&mut conf.options, parse_option(word));
                    }
                }
                _ => {}
            }
        }
        conf
    }

    /// Reads and parses the file at `path` (the node's `/etc/resolv.conf` by default).
    pub fn read(path: &Path) -> Result<Self, DnsError> {
        std::fs::read_to_string(path)
            .map(|text| Self::parse(&text))
            .map_err(|source| DnsError::ReadResolvConf { path: path.to_path_buf(), source })
    }

    /// The nameservers as socket addresses on port 53 (zone-scoped IPv6 ones are skipped).
    pub fn upstreams(&self) -> Vec<SocketAddr> {
        self.nameservers
            .iter()
            .filter_map(|n| n.parse::<IpAddr>().ok())
            .map(|ip| SocketAddr::new(ip, 53))
            .collect()
    }

    /// Renders the file a pod gets.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if !self.search.is_empty() {
            out.push_str(&format!("search {}\n", self.search.join(" ")));
        }
        for ns in &self.nameservers {
            out.push_str(&format!("nameserver {ns}\n"));
        }
        if !self.options.is_empty() {
            let words: Vec<String> = self
                .options
                .iter()
                .map(|(name, value)| match value {
                    Some(v) => format!("{name}:{v}"),
                    None => name.clone(),
                })
                .collect();
            out.push_str(&format!("options {}\n", words.join(" ")));
        }
        out
    }
}

/// `ndots:5` -> ("ndots", Some("5")); `edns0` -> ("edns0", None).
fn parse_option(word: &str) -> (String, Option<String>) {
    match word.split_once(':') {
        Some((name, value)) => (name.to_string(), Some(value.to_string())),
        None => (word.to_string(), None),
    }
}

/// Sets an option, replacing an earlier one of the same name in place.
fn set_option(options: &mut Vec<(String, Option<String>)>, option: (String, Option<String>)) {
    match options.iter_mut().find(|(name, _)| *name == option.0) {
        Some(existing) => *existing = option,
        None => options.push(option),
    }
}

/// What the node knows about the cluster's DNS (kubelet's `--cluster-dns`/`--cluster-domain`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterDnsSettings {
    /// The cluster DNS addresses (default 10.43.0.10).
    pub cluster_dns: Vec<IpAddr>,
    /// The cluster domain (default `cluster.local`).
    pub cluster_domain: String,
}

impl Default for ClusterDnsSettings {
    fn default() -> Self {
        ClusterDnsSettings {
            cluster_dns: vec![IpAddr::from([10, 43, 0, 10])],
            cluster_domain: "cluster.local".to_string(),
        }
    }
}

/// The resolv.conf for `pod`, as kubelet builds it from its `dnsPolicy` and `dnsConfig`.
///
/// - `ClusterFirst` (the default): the cluster DNS, search `<ns>.svc.<domain> svc.<domain>
///   <domain>` plus the node's search domains, `options ndots:5`. A hostNetwork pod gets
///   `Default` instead, unless its policy is `ClusterFirstWithHostNet`.
/// - `Default`: the node's resolv.conf.
/// - `None`: nothing but `dnsConfig`.
///
/// `dnsConfig` is then merged in: nameservers and search domains appended (without repeats),
/// options overriding those of the same name. The limits of the C library are applied last.
pub fn pod_resolv_conf(pod: &Pod, cluster: &ClusterDnsSettings, host: &ResolvConf) -> ResolvConf {
    let spec = pod.spec.as_ref();
    let policy = spec.and_then(|s| s.dns_policy.as_deref()).unwrap_or("ClusterFirst");
    let host_network = spec.and_then(|s| s.host_network).unwrap_or(false);
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let domain = cluster.cluster_domain.trim_end_matches('.');
    let cluster_first = match policy {
        "ClusterFirstWithHostNet" => true,
        "ClusterFirst" => !host_network,
        _ => false,
    };
    let mut conf = if cluster_first && !cluster.cluster_dns.is_empty() {
        let mut search =
            vec![format!("{namespace}.svc.{domain}"), format!("svc.{domain}"), domain.to_string()];
        search.extend(host.search.iter().cloned());
        ResolvConf {
            nameservers: cluster.cluster_dns.iter().map(IpAddr::to_string).collect(),
            search,
            options: vec![("ndots".to_string(), Some("5".to_string()))],
        }
    } else if policy == "None" {
        ResolvConf::default()
    } else {
        // "Default", a hostNetwork pod under ClusterFirst, or a node without cluster DNS.
        host.clone()
    };
    if let Some(extra) = spec.and_then(|s| s.dns_config.as_ref()) {
        conf.nameservers.extend(extra.nameservers.iter().flatten().cloned());
        conf.search.extend(extra.searches.iter().flatten().cloned());
        for option in extra.options.iter().flatten() {
            if let Some(name) = option.name.clone().filter(|n| !n.is_empty()) {
                set_option(&mut conf.options, (name, option.value.clone()));
            }
        }
    }
    dedup(&mut conf.nameservers);
    dedup(&mut conf.search);
    conf.nameservers.truncate(MAX_NAMESERVERS);
    trim_search(&mut conf.search);
    conf
}

/// Removes repeats, keeping first occurrences in order.
fn dedup(items: &mut Vec<String>) {
    let mut seen = std::collections::HashSet::new();
    items.retain(|item| seen.insert(item.trim_end_matches('.').to_string()));
}

/// Keeps the search list within the count and length limits, dropping from the end.
fn trim_search(search: &mut Vec<String>) {
    search.truncate(MAX_SEARCH_DOMAINS);
    while !search.is_empty() && search.join(" ").len() > MAX_SEARCH_CHARS {
        search.pop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn host() -> ResolvConf {
        ResolvConf::parse(
            "# generated\nnameserver 192.0.2.53\nnameserver fe80::1%eth0\n\
             search corp.example lab.example\noptions edns0 timeout:2\n",
        )
    }

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p", "namespace": "prod"},
                                      "spec": spec}))
        .unwrap()
    }

    #[test]
    fn parses_the_node_resolv_conf() {
        let host = host();
        assert_eq!(host.nameservers, vec!["192.0.2.53", "fe80::1%eth0"]);
        assert_eq!(host.search, vec!["corp.example", "lab.example"]);
        assert_eq!(host.options[1], ("timeout".to_string(), Some("2".to_string())));
        assert_eq!(host.upstreams(), vec!["192.0.2.53:53".parse().unwrap()]);
    }

    #[test]
    fn cluster_first_points_at_cluster_dns_with_kubernetes_search_path() {
        let conf = pod_resolv_conf(
            &pod(json!({"containers": []})),
            &ClusterDnsSettings::default(),
            &host(),
        );
        assert_eq!(
            conf.render(),
            "search prod.svc.cluster.local svc.cluster.local cluster.local corp.example \
             lab.example\nnameserver 10.43.0.10\noptions ndots:5\n"
        );
    }

    #[test]
    fn host_network_pods_use_the_node_resolver_unless_cluster_first_with_host_net() {
        let cluster = ClusterDnsSettings::default();
        let plain = pod(json!({"containers": [], "hostNetwork": true}));
        assert_eq!(pod_resolv_conf(&plain, &cluster, &host()), host());
        let with_host_net = pod(json!({"containers": [], "hostNetwork": true,
                                       "dnsPolicy": "ClusterFirstWithHostNet"}));
        let conf = pod_resolv_conf(&with_host_net, &cluster, &host());
        assert_eq!(conf.nameservers, vec!["10.43.0.10"]);
        assert_eq!(conf.search[0], "prod.svc.cluster.local");
    }

    #[test]
    fn default_policy_copies_the_node() {
        let p = pod(json!({"containers": [], "dnsPolicy": "Default"}));
        assert_eq!(pod_resolv_conf(&p, &ClusterDnsSettings::default(), &host()), host());
    }

    #[test]
    fn none_policy_takes_dns_config_only() {
        let p = pod(json!({"containers": [], "dnsPolicy": "None", "dnsConfig": {
            "nameservers": ["192.0.2.1"], "searches": ["a.example"],
            "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}]}}));
        let conf = pod_resolv_conf(&p, &ClusterDnsSettings::default(), &host());
        assert_eq!(
            conf.render(),
            "search a.example\nnameserver 192.0.2.1\noptions ndots:2 edns0\n"
        );
    }

    #[test]
    fn dns_config_merges_into_cluster_first() {
        let p = pod(json!({"containers": [], "dnsConfig": {
            "nameservers": ["10.43.0.10", "192.0.2.1"], "searches": ["svc.cluster.local", "x.example"],
            "options": [{"name": "ndots", "value": "1"}]}}));
        let conf = pod_resolv_conf(&p, &ClusterDnsSettings::default(), &ResolvConf::default());
        assert_eq!(conf.nameservers, vec!["10.43.0.10", "192.0.2.1"]);
        assert_eq!(
            conf.search,
            vec!["prod.svc.cluster.local", "svc.cluster.local", "cluster.local", "x.example"]
        );
        assert_eq!(conf.options, vec![("ndots".to_string(), Some("1".to_string()))]);
    }

    #[test]
    fn limits_of_the_c_library_apply() {
        let searches: Vec<String> = (0..40).map(|i| format!("d{i}.example")).collect();
        let p = pod(json!({"containers": [], "dnsPolicy": "None", "dnsConfig": {
            "nameservers": ["192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4"],
            "searches": searches}}));
        let conf = pod_resolv_conf(&p, &ClusterDnsSettings::default(), &host());
        assert_eq!(conf.nameservers.len(), MAX_NAMESERVERS);
        assert_eq!(conf.search.len(), MAX_SEARCH_DOMAINS);
    }
}
