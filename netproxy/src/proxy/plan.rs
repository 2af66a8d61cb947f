//! The proxy's nftables layout, as data: the fixed skeleton of the table and, per service
//! port, the chains, affinity sets and map elements it needs ([`ServiceObjects`]).
//!
//! Dispatch is one lookup in a concatenated verdict map (`ip daddr . meta l4proto . th dport
//! vmap @service-ips`); each service then has a short chain of `numgen random mod N` rules
//! (rule i matches with probability 1/(N-i), so every endpoint gets 1/N) jumping to one chain
//! per endpoint that DNATs. An anonymous vmap per service is avoided on purpose: the kernel
//! takes seconds per thousand of them.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use super::model::{Endpoint, ServicePortSpec};
use crate::nft::expr::{self, CmpOp, Expr, Verdict};
use crate::nft::wire::Batch;
use crate::nft::{types, Hook, SetSpec, TableTx};

/// Map: `ipv4_addr . inet_proto . inet_service : verdict` for cluster/external IPs.
pub const SERVICE_IPS: &str = "service-ips";
/// Map: `inet_proto . inet_service : verdict` for NodePorts on node addresses.
pub const SERVICE_NODEPORTS: &str = "service-nodeports";
/// Like [`SERVICE_IPS`] for services without endpoints (to reject).
pub const NO_ENDPOINT_IPS: &str = "no-endpoint-services";
/// Like [`SERVICE_NODEPORTS`] for services without endpoints.
pub const NO_ENDPOINT_NODEPORTS: &str = "no-endpoint-nodeports";
/// Set of this node's addresses.
pub const NODE_IPS: &str = "node-ips";
/// Set of `ip . ip` pairs, one per endpoint address: a packet whose source and (DNATed)
/// destination are the same endpoint is a pod reaching itself through a service (hairpin)
/// and must be masqueraded so the reply comes back through the node.
pub const HAIRPIN: &str = "hairpin";
const REJECT_CHAIN: &str = "reject-chain";

/// Table-wide settings that shape the rules.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The cluster's pod CIDR: sources outside it are masqueraded.
    pub cluster_cidr: Ipv4Net,
    /// The mark bit asking the postrouting chain to masquerade.
    pub masquerade_mark: u32,
}

fn service_map(name: &str) -> SetSpec {
    SetSpec {
        name: name.into(),
        key_type: types::concat(&[types::IPV4_ADDR, types::INET_PROTO, types::INET_SERVICE]),
        key_len: 12,
        verdict_map: true,
        timeout_ms: None,
    }
}

fn port_map(name: &str) -> SetSpec {
    SetSpec {
        name: name.into(),
        key_type: types::concat(&[types::INET_PROTO, types::INET_SERVICE]),
        key_len: 8,
        verdict_map: true,
        timeout_ms: None,
    }
}

/// Writes the skeleton: base chains, dispatch maps, masquerade and reject chains.
pub fn write_skeleton(tx: &mut TableTx<'_>, layout: &Layout, node_ips: &[Ipv4Addr]) {
    tx.add_table();
    for set in [
        service_map(SERVICE_IPS),
        service_map(NO_ENDPOINT_IPS),
        port_map(SERVICE_NODEPORTS),
        port_map(NO_ENDPOINT_NODEPORTS),
    ] {
        tx.add_set(&set);
    }
    tx.add_set(&SetSpec {
        name: NODE_IPS.into(),
        key_type: types::IPV4_ADDR,
        key_len: 4,
        verdict_map: false,
        timeout_ms: None,
    });
    let elems: Vec<_> = node_ips.iter().map(|ip| (ip.octets().to_vec(), None)).collect();
    tx.add_elements(NODE_IPS, &elems);
    tx.add_set(&SetSpec {
        name: HAIRPIN.into(),
        key_type: types::concat(&[types::IPV4_ADDR, types::IPV4_ADDR]),
        key_len: 8,
        verdict_map: false,
        timeout_ms: None,
    });

    let hook =
        |kind, hooknum: i32, priority| Some(Hook { kind, hooknum: hooknum as u32, priority });
    tx.add_chain("services", None);
    tx.add_chain("endpoints-check", None);
    tx.add_chain(REJECT_CHAIN, None);
    tx.add_chain("nat-prerouting", hook("nat", libc::NF_INET_PRE_ROUTING, -100));
    tx.add_chain("nat-output", hook("nat", libc::NF_INET_LOCAL_OUT, -100));
    tx.add_chain("nat-postrouting", hook("nat", libc::NF_INET_POST_ROUTING, 100));
    tx.add_chain("filter-input", hook("filter", libc::NF_INET_LOCAL_IN, -110));
    tx.add_chain("filter-forward", hook("filter", libc::NF_INET_FORWARD, -110));
    tx.add_chain("filter-output", hook("filter", libc::NF_INET_LOCAL_OUT, -110));

    let jump = |c: &str| Expr::Verdict(Verdict::Jump(c.into()));
    tx.add_rule("nat-prerouting", &[jump("services")]);
    tx.add_rule("nat-output", &[jump("services")]);
    let mut check: Vec<Expr> = expr::match_ct_new().into();
    check.push(jump("endpoints-check"));
    for c in ["filter-input", "filter-forward", "filter-output"] {
        tx.add_rule(c, &check);
    }
    // Connections to a service from outside the pod network (the node itself, NodePort or
    // external clients) are masqueraded so replies come back through this node. Marked here
    // once (a membership test on the dispatch maps) rather than by a rule in every service
    // chain: each rule is walked again by the kernel's loop check on every commit.
    let outside: Vec<Expr> = expr::match_net(true, CmpOp::Neq, layout.cluster_cidr).into();
    let mut mark_ips = outside.clone();
    mark_ips.extend(expr::load_service_key());
    mark_ips.push(Expr::Lookup {
        set: SERVICE_IPS.into(),
        sreg: expr::REG32_00,
        dreg: None,
        invert: false,
    });
    mark_ips.extend(expr::set_mark_bits(layout.masquerade_mark));
    tx.add_rule("services", &mark_ips);
    let mut mark_ports = outside;
    mark_ports.extend([
        Expr::Payload { base: expr::PayloadBase::Network, offset: 16, len: 4, dreg: expr::REG_1 },
        Expr::Lookup { set: NODE_IPS.into(), sreg: expr::REG_1, dreg: None, invert: false },
    ]);
    mark_ports.extend(expr::load_port_key());
    mark_ports.push(Expr::Lookup {
        set: SERVICE_NODEPORTS.into(),
        sreg: expr::REG32_00,
        dreg: None,
        invert: false,
    });
    mark_ports.extend(expr::set_mark_bits(layout.masquerade_mark));
    tx.add_rule("services", &mark_ports);
    for (chain, ips, ports) in [
        ("services", SERVICE_IPS, SERVICE_NODEPORTS),
        ("endpoints-check", NO_ENDPOINT_IPS, NO_ENDPOINT_NODEPORTS),
    ] {
        let mut by_ip: Vec<Expr> = expr::load_service_key().into();
        by_ip.push(Expr::Lookup {
            set: ips.into(),
            sreg: expr::REG32_00,
            dreg: Some(expr::REG_VERDICT),
            invert: false,
        });
        tx.add_rule(chain, &by_ip);
        let mut by_port = vec![
            Expr::Payload {
                base: expr::PayloadBase::Network,
                offset: 16,
                len: 4,
                dreg: expr::REG_1,
            },
            Expr::Lookup { set: NODE_IPS.into(), sreg: expr::REG_1, dreg: None, invert: false },
        ];
        by_port.extend(expr::load_port_key());
        by_port.push(Expr::Lookup {
            set: ports.into(),
            sreg: expr::REG32_00,
            dreg: Some(expr::REG_VERDICT),
            invert: false,
        });
        tx.add_rule(chain, &by_port);
    }
    tx.add_rule(REJECT_CHAIN, &[Expr::RejectPortUnreachable]);
    let mut masq: Vec<Expr> = expr::match_mark_bits(layout.masquerade_mark).into();
    masq.push(Expr::Masquerade);
    tx.add_rule("nat-postrouting", &masq);
    tx.add_rule(
        "nat-postrouting",
        &[
            Expr::Payload {
                base: expr::PayloadBase::Network,
                offset: 12,
                len: 4,
                dreg: expr::REG32_00,
            },
            Expr::Payload {
                base: expr::PayloadBase::Network,
                offset: 16,
                len: 4,
                dreg: expr::REG32_00 + 1,
            },
            Expr::Lookup { set: HAIRPIN.into(), sreg: expr::REG32_00, dreg: None, invert: false },
            Expr::Masquerade,
        ],
    );
}

/// A map element: (map, key, verdict).
pub type Element = (&'static str, Vec<u8>, Verdict);

/// Everything one service port owns in the table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceObjects {
    /// Chains in creation order with their rules; referenced chains come first.
    pub chains: Vec<(String, Vec<Vec<Expr>>)>,
    /// Affinity sets.
    pub sets: Vec<SetSpec>,
    /// Dispatch map elements.
    pub elements: Vec<Element>,
    /// Endpoint addresses (for the hairpin set, shared between services).
    pub endpoint_ips: Vec<Ipv4Addr>,
}

fn affinity_set(key: &str, e: &Endpoint) -> String {
    format!("aff-{key}/{}:{}", e.ip, e.port)
}

/// The expressions that send a connection to `e`: refresh affinity, then DNAT.
fn to_endpoint(spec: &ServicePortSpec, e: &Endpoint) -> Vec<Expr> {
    let mut r = Vec::new();
    if let Some(t) = spec.affinity_timeout {
        r.push(Expr::Payload {
            base: expr::PayloadBase::Network,
            offset: 12,
            len: 4,
            dreg: expr::REG_1,
        });
        r.push(Expr::DynsetUpdate {
            set: affinity_set(&spec.key, e),
            sreg: expr::REG_1,
            timeout_ms: u64::from(t) * 1000,
        });
    }
    // No `meta l4proto` match before the DNAT: the dispatch map keyed on it already (nft's
    // syntax wants one; the kernel does not, and every expression costs at load time).
    r.extend(expr::dnat_to(e.ip, e.port));
    r
}

/// The chains, sets and elements of one service port.
///
/// Endpoints are DNAT rules inside the service chain rather than chains of their own: every
/// commit makes the kernel re-validate the jump graph, so fewer chains keep both full and
/// incremental syncs fast. Hairpin masquerade is one set lookup in postrouting instead of a
/// rule per endpoint (see [`HAIRPIN`]).
pub fn service_objects(spec: &ServicePortSpec, layout: &Layout) -> ServiceObjects {
    let mut objs = ServiceObjects::default();
    let key = &spec.key;

    if spec.endpoints.is_empty() {
        // No endpoint at all: reject at once rather than let clients time out.
        let reject = Verdict::Goto(REJECT_CHAIN.into());
        for ip in spec.cluster_ips.iter().chain(&spec.external_ips) {
            let k = expr::service_key(*ip, spec.protocol, spec.port);
            objs.elements.push((NO_ENDPOINT_IPS, k, reject.clone()));
        }
        if let Some(np) = spec.node_port {
            objs.elements.push((NO_ENDPOINT_NODEPORTS, expr::port_key(spec.protocol, np), reject));
        }
        return objs;
    }

    if let Some(t) = spec.affinity_timeout {
        for e in &spec.endpoints {
            objs.sets.push(SetSpec {
                name: affinity_set(key, e),
                key_type: types::IPV4_ADDR,
                key_len: 4,
                verdict_map: false,
                timeout_ms: Some(u64::from(t) * 1000),
            });
        }
    }
    let mut ips: Vec<Ipv4Addr> = spec.endpoints.iter().map(|e| e.ip).collect();
    ips.sort();
    ips.dedup();
    objs.endpoint_ips = ips;

    let spread = |eps: &[&Endpoint], keep_client_ip: bool| -> Vec<Vec<Expr>> {
        let mut rules = Vec::new();
        if keep_client_ip {
            // externalTrafficPolicy Local: undo the `services` chain's masquerade request
            // for sources outside the pod network, so pods see the client's address.
            rules.push(expr::clear_mark_bits(layout.masquerade_mark).to_vec());
        }
        if eps.is_empty() {
            rules.push(vec![Expr::Verdict(Verdict::Drop)]);
            return rules;
        }
        if spec.affinity_timeout.is_some() {
            for e in eps {
                let mut r = vec![
                    Expr::Payload {
                        base: expr::PayloadBase::Network,
                        offset: 12,
                        len: 4,
                        dreg: expr::REG_1,
                    },
                    Expr::Lookup {
                        set: affinity_set(key, e),
                        sreg: expr::REG_1,
                        dreg: None,
                        invert: false,
                    },
                ];
                r.extend(to_endpoint(spec, e));
                rules.push(r);
            }
        }
        let n = eps.len();
        for (i, e) in eps.iter().enumerate() {
            let mut r = Vec::new();
            if i + 1 < n {
                r.extend(expr::match_one_in((n - i) as u32));
            }
            r.extend(to_endpoint(spec, e));
            rules.push(r);
        }
        rules
    };
    let all: Vec<&Endpoint> = spec.endpoints.iter().collect();
    let local: Vec<&Endpoint> = spec.endpoints.iter().filter(|e| e.local).collect();
    let svc_chain = format!("svc-{key}");
    let internal = if spec.internal_local { &local } else { &all };
    objs.chains.push((svc_chain.clone(), spread(internal, false)));
    let has_external = !spec.external_ips.is_empty() || spec.node_port.is_some();
    let ext_chain = if spec.external_local && has_external {
        // externalTrafficPolicy Local: only local endpoints, no masquerade (the client's
        // address is preserved); nodes without one drop (the load balancer health-checks).
        let c = format!("svl-{key}");
        objs.chains.push((c.clone(), spread(&local, true)));
        c
    } else if spec.internal_local && has_external {
        let c = format!("sve-{key}");
        objs.chains.push((c.clone(), spread(&all, false)));
        c
    } else {
        svc_chain.clone()
    };

    for ip in &spec.cluster_ips {
        let k = expr::service_key(*ip, spec.protocol, spec.port);
        objs.elements.push((SERVICE_IPS, k, Verdict::Goto(svc_chain.clone())));
    }
    for ip in &spec.external_ips {
        let k = expr::service_key(*ip, spec.protocol, spec.port);
        objs.elements.push((SERVICE_IPS, k, Verdict::Goto(ext_chain.clone())));
    }
    if let Some(np) = spec.node_port {
        let k = expr::port_key(spec.protocol, np);
        objs.elements.push((SERVICE_NODEPORTS, k, Verdict::Goto(ext_chain)));
    }
    objs
}

/// The [`HAIRPIN`] set key of an endpoint address.
pub fn hairpin_key(ip: Ipv4Addr) -> Vec<u8> {
    let mut k = ip.octets().to_vec();
    k.extend_from_slice(&ip.octets());
    k
}

/// Appends hairpin set changes.
pub fn write_hairpin(tx: &mut TableTx<'_>, add: &[Ipv4Addr], del: &[Ipv4Addr]) {
    if !del.is_empty() {
        let keys: Vec<Vec<u8>> = del.iter().map(|ip| hairpin_key(*ip)).collect();
        tx.del_elements(HAIRPIN, &keys);
    }
    if !add.is_empty() {
        let elems: Vec<_> = add.iter().map(|ip| (hairpin_key(*ip), None)).collect();
        tx.add_elements(HAIRPIN, &elems);
    }
}

/// Appends the commands turning `old` into `new` (both for the same service) to a batch,
/// keeping chains and affinity sets that stay (so affinity state survives an update).
pub fn write_update(tx: &mut TableTx<'_>, old: &[ServiceObjects], new: &[ServiceObjects]) {
    let old_chains: Vec<&String> = old.iter().flat_map(|o| o.chains.iter().map(|c| &c.0)).collect();
    let new_chains: Vec<&String> = new.iter().flat_map(|o| o.chains.iter().map(|c| &c.0)).collect();
    let old_sets: Vec<&String> = old.iter().flat_map(|o| o.sets.iter().map(|s| &s.name)).collect();
    let new_sets: Vec<&SetSpec> = new.iter().flat_map(|o| o.sets.iter()).collect();

    let old_elems: Vec<&Element> = old.iter().flat_map(|o| o.elements.iter()).collect();
    let new_elems: Vec<&Element> = new.iter().flat_map(|o| o.elements.iter()).collect();
    // 1. Stop dispatching where the target changes; empty the old chains (dropping their
    //    references). Unchanged elements stay: no window where the service is unmapped.
    for (map, key, _) in old_elems.iter().filter(|e| !new_elems.contains(e)) {
        tx.del_elements(map, std::slice::from_ref(key));
    }
    for c in &old_chains {
        tx.flush_chain(c);
    }
    // 2. Create what is new and fill every chain of the new state.
    for s in &new_sets {
        if !old_sets.contains(&&s.name) {
            tx.add_set(s);
        }
    }
    for o in new {
        for (name, _) in &o.chains {
            if !old_chains.contains(&name) {
                tx.add_chain(name, None);
            }
        }
    }
    for o in new {
        for (name, rules) in &o.chains {
            for r in rules {
                tx.add_rule(name, r);
            }
        }
    }
    // 3. Delete what is gone, then dispatch to the new state.
    for c in &old_chains {
        if !new_chains.contains(c) {
            tx.del_chain(c);
        }
    }
    for s in &old_sets {
        if !new_sets.iter().any(|n| &&n.name == s) {
            tx.del_set(s);
        }
    }
    for map in [SERVICE_IPS, SERVICE_NODEPORTS, NO_ENDPOINT_IPS, NO_ENDPOINT_NODEPORTS] {
        let added: Vec<(Vec<u8>, Option<Verdict>)> = new_elems
            .iter()
            .filter(|e| e.0 == map && !old_elems.contains(e))
            .map(|(_, k, v)| (k.clone(), Some(v.clone())))
            .collect();
        if !added.is_empty() {
            tx.add_elements(map, &added);
        }
    }
}

/// Appends the creation of every object of `objs` (into a table just made).
pub fn write_create(tx: &mut TableTx<'_>, objs: &[&ServiceObjects]) {
    for o in objs {
        for s in &o.sets {
            tx.add_set(s);
        }
        for (name, _) in &o.chains {
            tx.add_chain(name, None);
        }
        for (name, rules) in &o.chains {
            for r in rules {
                tx.add_rule(name, r);
            }
        }
    }
}

/// Appends the map elements of `objs`, grouped per map (fewer, larger messages). A key
/// claimed twice (two services sharing an IP and port, which validation should prevent) keeps
/// its first owner: one conflicting element would otherwise fail the whole transaction.
pub fn write_elements(tx: &mut TableTx<'_>, objs: &[&ServiceObjects]) {
    for map in [SERVICE_IPS, SERVICE_NODEPORTS, NO_ENDPOINT_IPS, NO_ENDPOINT_NODEPORTS] {
        let mut seen = std::collections::HashSet::new();
        let elems: Vec<(Vec<u8>, Option<Verdict>)> = objs
            .iter()
            .flat_map(|o| o.elements.iter())
            .filter(|(m, _, _)| *m == map)
            .filter(|(_, k, v)| {
                let fresh = seen.insert(k.clone());
                if !fresh {
                    tracing::warn!(map, target = ?v, "duplicate service address and port; skipped");
                }
                fresh
            })
            .map(|(_, k, v)| (k.clone(), Some(v.clone())))
            .collect();
        if !elems.is_empty() {
            tx.add_elements(map, &elems);
        }
    }
}

/// A fresh batch body that replaces the whole table atomically.
pub fn write_full(
    batch: &mut Batch,
    table: &str,
    layout: &Layout,
    node_ips: &[Ipv4Addr],
    objs: &[&ServiceObjects],
) {
    let mut tx = TableTx::new(batch, table);
    // add + delete + add: replaces an existing table and works when there is none.
    tx.add_table();
    tx.del_table();
    write_skeleton(&mut tx, layout, node_ips);
    write_create(&mut tx, objs);
    write_elements(&mut tx, objs);
    let mut ips: Vec<Ipv4Addr> = objs.iter().flat_map(|o| o.endpoint_ips.iter().copied()).collect();
    ips.sort();
    ips.dedup();
    write_hairpin(&mut tx, &ips, &[]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::model::Endpoint;

    fn layout() -> Layout {
        Layout { cluster_cidr: "10.42.0.0/16".parse().unwrap(), masquerade_mark: 0x4000 }
    }

    fn spec(n: usize) -> ServicePortSpec {
        ServicePortSpec {
            key: "ns/web/tcp/http".into(),
            service: "ns/web".into(),
            protocol: 6,
            port: 80,
            cluster_ips: vec!["10.43.0.5".parse().unwrap()],
            external_ips: vec![],
            node_port: Some(30080),
            affinity_timeout: None,
            external_local: false,
            internal_local: false,
            endpoints: (0..n)
                .map(|i| Endpoint {
                    ip: Ipv4Addr::new(10, 42, 0, 2 + i as u8),
                    port: 8080,
                    local: i == 0,
                })
                .collect(),
        }
    }

    #[test]
    fn numgen_rules_give_every_endpoint_an_equal_share() {
        let objs = service_objects(&spec(3), &layout());
        let (_, rules) = objs.chains.iter().find(|(n, _)| n == "svc-ns/web/tcp/http").unwrap();
        // mod 3, mod 2, and an unconditional last rule.
        let moduli: Vec<Option<u32>> = rules
            .iter()
            .map(|r| {
                r.iter().find_map(|e| match e {
                    Expr::NumgenRandom { modulus, .. } => Some(*modulus),
                    _ => None,
                })
            })
            .collect();
        assert_eq!(moduli, vec![Some(3), Some(2), None]);
        assert_eq!(objs.chains.len(), 1, "endpoints are rules of the service chain");
        assert_eq!(objs.endpoint_ips.len(), 3);
    }

    #[test]
    fn no_endpoints_means_reject_elements_and_no_chains() {
        let objs = service_objects(&spec(0), &layout());
        assert!(objs.chains.is_empty());
        let maps: Vec<&str> = objs.elements.iter().map(|e| e.0).collect();
        assert_eq!(maps, vec![NO_ENDPOINT_IPS, NO_ENDPOINT_NODEPORTS]);
    }

    #[test]
    fn external_traffic_policy_local_uses_a_local_only_chain() {
        let mut s = spec(2);
        s.external_local = true;
        let objs = service_objects(&s, &layout());
        let np = objs.elements.iter().find(|e| e.0 == SERVICE_NODEPORTS).unwrap();
        assert_eq!(np.2, Verdict::Goto("svl-ns/web/tcp/http".into()));
        let (_, rules) = objs.chains.iter().find(|(n, _)| n.starts_with("svl-")).unwrap();
        assert_eq!(rules.len(), 2, "keep the client address, then the one local endpoint");
    }

    #[test]
    fn affinity_adds_one_timed_set_per_endpoint() {
        let mut s = spec(2);
        s.affinity_timeout = Some(60);
        let objs = service_objects(&s, &layout());
        assert_eq!(objs.sets.len(), 2);
        assert!(objs.sets.iter().all(|set| set.timeout_ms == Some(60_000)));
    }
}
