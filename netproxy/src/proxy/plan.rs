//! The proxy's nftables layout, as data: the fixed skeleton of the table and, per service
//! port, the chains, affinity sets and map elements it needs ([`ServiceObjects`]).
//!
//! Dispatch is one lookup in a concatenated verdict map (`ip daddr . meta l4proto . th dport
//! vmap @service-ips`) going to one chain per service. That chain picks an endpoint with a
//! single rule, `dnat to numgen random mod 16384 offset SLOT*16384 map @endpoints-M`: each
//! service owns a *slot*, a range of 16384 keys in an interval map whose ranges map to
//! `address . port`, one range per endpoint (equal widths, so every endpoint gets 1/N). Each
//! range is a start element with the value and an end element: the kernel's rbtree refuses
//! two consecutive starts in a named set.
//! The slots are spread over [`ENDPOINT_MAPS`] maps: adding an element to a map makes the
//! kernel check its value against every rule bound to that map (`nft_add_set_elem` walks
//! `set->bindings`), so one map shared by 10k service rules made each element cost 10k
//! checks (11 s for a 10k-service full sync); 256 maps keep it at ~40.
//!
//! Why a map and not rules: every commit that adds a rule with a validating expression
//! (nat, immediate verdicts, lookups, …) or a verdict-map element with a jump/goto sets the
//! table's `NFT_VALIDATE_NEED`, and the commit then walks every chain reachable from every
//! base chain (`nft_table_validate` → `nft_chain_validate`, following each verdict map's
//! elements): 20–50 ms per commit at 10k services here. Set elements carrying plain data
//! never set that flag, so an endpoint change — the common update — is now only element
//! changes in an endpoint map and leaves the chains untouched (~1 ms at 10k). Adding a
//! service still validates (new chain, new `goto` element); removing one does not. Services with sessionAffinity keep the older
//! form (a `numgen random mod N` rule per endpoint, rule i matching with probability 1/(N-i)),
//! as do chains when slots run out. An anonymous vmap per service is avoided on purpose: the
//! kernel takes seconds per thousand of them.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use super::model::{Endpoint, ServicePortSpec};
use crate::nft::expr::{self, CmpOp, Expr, Verdict};
use crate::nft::wire::Batch;
use crate::nft::{types, Hook, Range, SetSpec, TableTx};

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
/// Interval maps `integer : ipv4_addr . inet_service` named `endpoints-<slot % 256>`: each
/// service chain's slot of [`SLOT_WIDTH`] keys, split into one range per endpoint.
pub const ENDPOINT_MAPS: u32 = 256;
/// Keys per slot: the `numgen` modulus. A power of two well above any endpoint count keeps
/// the split even (each endpoint gets ⌊16384/N⌋ or ⌈16384/N⌉ keys).
pub const SLOT_WIDTH: u32 = 1 << 14;
/// Number of slots: the end key of the last slot's last range must still fit in 32 bits.
pub const SLOTS: u32 = u32::MAX / SLOT_WIDTH;
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
        ..SetSpec::default()
    }
}

fn port_map(name: &str) -> SetSpec {
    SetSpec {
        name: name.into(),
        key_type: types::concat(&[types::INET_PROTO, types::INET_SERVICE]),
        key_len: 8,
        verdict_map: true,
        ..SetSpec::default()
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
        ..SetSpec::default()
    });
    for map in 0..ENDPOINT_MAPS {
        tx.add_set(&SetSpec {
            name: endpoint_map(map),
            key_type: types::INTEGER,
            key_len: 4,
            // ipv4_addr . inet_service: 4 + 2 bytes, each field padded to 4.
            value_map: Some((types::concat(&[types::IPV4_ADDR, types::INET_SERVICE]), 8)),
            interval: true,
            ..SetSpec::default()
        });
    }
    let elems: Vec<_> = node_ips.iter().map(|ip| (ip.octets().to_vec(), None)).collect();
    tx.add_elements(NODE_IPS, &elems);
    tx.add_set(&SetSpec {
        name: HAIRPIN.into(),
        key_type: types::concat(&[types::IPV4_ADDR, types::IPV4_ADDR]),
        key_len: 8,
        ..SetSpec::default()
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
    // chain: each rule is walked again by the kernel's loop check on every validating commit.
    // (That check walks a verdict map's elements for this lookup too; plain copies of the
    // keys, sparing it that walk, measured no faster at 10k services and slowed full syncs.)
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
    /// Endpoint map ranges of the chains that spread by slot: (map index, range).
    pub ranges: Vec<(u32, Range)>,
    /// The slot of each chain spreading by slot (chain name, slot).
    pub slots: Vec<(String, u32)>,
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

/// The name of endpoint map `index` (see [`ENDPOINT_MAPS`]).
pub fn endpoint_map(index: u32) -> String {
    format!("endpoints-{index}")
}

/// The rule spreading connections over a slot's ranges in its endpoint map: a random key in
/// the slot (host byte order, so converted for the big-endian interval keys), looked up to
/// `address . port`, DNATed to.
fn slot_rule(slot: u32) -> Vec<Expr> {
    vec![
        Expr::NumgenRandom { dreg: expr::REG_1, modulus: SLOT_WIDTH, offset: slot * SLOT_WIDTH },
        Expr::ByteorderHton { sreg: expr::REG_1, dreg: expr::REG_1, len: 4, size: 4 },
        Expr::Lookup {
            set: endpoint_map(slot % ENDPOINT_MAPS),
            sreg: expr::REG_1,
            dreg: Some(expr::REG_1),
            invert: false,
        },
        // The map's value is `address . port`: the address in the first 32-bit register,
        // the port in the next.
        Expr::Dnat { addr_reg: expr::REG_1, port_reg: Some(expr::REG32_00 + 1) },
    ]
}

/// A slot's ranges: endpoint i gets keys [i·W/N, (i+1)·W/N) of the slot.
fn slot_ranges(slot: u32, eps: &[&Endpoint]) -> Vec<Range> {
    let base = u64::from(slot) * u64::from(SLOT_WIDTH);
    let n = eps.len() as u64;
    let key = |i: u64| ((base + i * u64::from(SLOT_WIDTH) / n) as u32).to_be_bytes().to_vec();
    eps.iter()
        .enumerate()
        .map(|(i, e)| {
            let mut value = e.ip.octets().to_vec();
            value.extend_from_slice(&e.port.to_be_bytes());
            value.extend_from_slice(&[0, 0]);
            Range { start: key(i as u64), end: key(i as u64 + 1), value }
        })
        .collect()
}

/// Where a service port gets slots for its chains: `None` when none is left.
pub type SlotSource<'a> = &'a mut dyn FnMut(&str) -> Option<u32>;

/// The rules of a chain sending connections to one of `eps`; slot ranges go to `objs`.
fn spread(
    spec: &ServicePortSpec,
    layout: &Layout,
    chain: &str,
    eps: &[&Endpoint],
    keep_client_ip: bool,
    slot_of: SlotSource<'_>,
    objs: &mut ServiceObjects,
) -> Vec<Vec<Expr>> {
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
    // Affinity needs a rule per endpoint (its `update @aff-…` and lookup); every range
    // needs at least one key.
    let by_slot = spec.affinity_timeout.is_none() && eps.len() <= SLOT_WIDTH as usize;
    if let Some(slot) = by_slot.then(|| slot_of(chain)).flatten() {
        rules.push(slot_rule(slot));
        objs.ranges.extend(slot_ranges(slot, eps).into_iter().map(|r| (slot % ENDPOINT_MAPS, r)));
        objs.slots.push((chain.to_string(), slot));
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
                    set: affinity_set(&spec.key, e),
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
}

/// The chains, sets and elements of one service port; `slot_of` hands out the slots of its
/// chains in the endpoint maps (the same chain must get the same slot again).
///
/// Endpoints are ranges in an endpoint map (or, with affinity, DNAT rules inside the service
/// chain) rather than chains of their own: every commit that changes rules makes the kernel
/// re-validate the jump graph, so fewer chains and rules keep both full and incremental
/// syncs fast. Hairpin masquerade is one set lookup in postrouting instead of a rule per
/// endpoint (see [`HAIRPIN`]).
pub fn service_objects(
    spec: &ServicePortSpec,
    layout: &Layout,
    slot_of: SlotSource<'_>,
) -> ServiceObjects {
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
                timeout_ms: Some(u64::from(t) * 1000),
                ..SetSpec::default()
            });
        }
    }
    let mut ips: Vec<Ipv4Addr> = spec.endpoints.iter().map(|e| e.ip).collect();
    ips.sort();
    ips.dedup();
    objs.endpoint_ips = ips;

    let all: Vec<&Endpoint> = spec.endpoints.iter().collect();
    let local: Vec<&Endpoint> = spec.endpoints.iter().filter(|e| e.local).collect();
    let svc_chain = format!("svc-{key}");
    let internal = if spec.internal_local { &local } else { &all };
    let rules = spread(spec, layout, &svc_chain, internal, false, slot_of, &mut objs);
    objs.chains.push((svc_chain.clone(), rules));
    let has_external = !spec.external_ips.is_empty() || spec.node_port.is_some();
    let ext_chain = if spec.external_local && has_external {
        // externalTrafficPolicy Local: only local endpoints, no masquerade (the client's
        // address is preserved); nodes without one drop (the load balancer health-checks).
        let c = format!("svl-{key}");
        let rules = spread(spec, layout, &c, &local, true, slot_of, &mut objs);
        objs.chains.push((c.clone(), rules));
        c
    } else if spec.internal_local && has_external {
        let c = format!("sve-{key}");
        let rules = spread(spec, layout, &c, &all, false, slot_of, &mut objs);
        objs.chains.push((c.clone(), rules));
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
///
/// Only what differs is touched: a chain whose rules are unchanged is neither flushed nor
/// refilled, so an endpoint change of a slot-spread service is element changes in
/// the endpoint maps only — no rule and no verdict element, hence no table validation in the
/// kernel (see the module docs).
pub fn write_update(tx: &mut TableTx<'_>, old: &[ServiceObjects], new: &[ServiceObjects]) {
    type Chain = (String, Vec<Vec<Expr>>);
    let old_chains: Vec<&Chain> = old.iter().flat_map(|o| o.chains.iter()).collect();
    let new_chains: Vec<&Chain> = new.iter().flat_map(|o| o.chains.iter()).collect();
    let old_sets: Vec<&String> = old.iter().flat_map(|o| o.sets.iter().map(|s| &s.name)).collect();
    let new_sets: Vec<&SetSpec> = new.iter().flat_map(|o| o.sets.iter()).collect();
    let old_ranges: Vec<&(u32, Range)> = old.iter().flat_map(|o| o.ranges.iter()).collect();
    let new_ranges: Vec<&(u32, Range)> = new.iter().flat_map(|o| o.ranges.iter()).collect();

    let old_elems: Vec<&Element> = old.iter().flat_map(|o| o.elements.iter()).collect();
    let new_elems: Vec<&Element> = new.iter().flat_map(|o| o.elements.iter()).collect();
    // 1. Stop dispatching where the target changes; empty the chains whose rules change or
    //    that go (dropping their references). Unchanged elements stay: no window where the
    //    service is unmapped.
    for (map, key, _) in old_elems.iter().filter(|e| !new_elems.contains(e)) {
        tx.del_elements(map, std::slice::from_ref(key));
    }
    let unchanged = |c: &&Chain| new_chains.contains(c);
    for (name, _) in old_chains.iter().filter(|c| !unchanged(c)) {
        tx.flush_chain(name);
    }
    // Whole ranges, not single elements: the kernel refuses an interval end or start
    // that would split a range still present.
    let gone = old_ranges.iter().filter(|r| !new_ranges.contains(r)).copied();
    for (map, ranges) in by_map(gone) {
        tx.del_ranges(&endpoint_map(map), &ranges);
    }
    // 2. Create what is new and fill the chains that changed.
    for s in &new_sets {
        if !old_sets.contains(&&s.name) {
            tx.add_set(s);
        }
    }
    let existed = |name: &String| old_chains.iter().any(|c| &c.0 == name);
    for (name, _) in &new_chains {
        if !existed(name) {
            tx.add_chain(name, None);
        }
    }
    for (name, rules) in new_chains.iter().filter(|c| !old_chains.contains(c)) {
        for r in rules {
            tx.add_rule(name, r);
        }
    }
    let added = new_ranges.iter().filter(|r| !old_ranges.contains(r)).copied();
    for (map, ranges) in by_map(added) {
        tx.add_ranges(&endpoint_map(map), &ranges);
    }
    // 3. Delete what is gone, then dispatch to the new state.
    for (name, _) in &old_chains {
        if !new_chains.iter().any(|c| &c.0 == name) {
            tx.del_chain(name);
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

/// Groups ranges per endpoint map (fewer, larger messages).
fn by_map<'a>(
    ranges: impl Iterator<Item = &'a (u32, Range)>,
) -> std::collections::BTreeMap<u32, Vec<Range>> {
    let mut out: std::collections::BTreeMap<u32, Vec<Range>> = Default::default();
    for (map, r) in ranges {
        out.entry(*map).or_default().push(r.clone());
    }
    out
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
    for (map, ranges) in by_map(objs.iter().flat_map(|o| o.ranges.iter())) {
        tx.add_ranges(&endpoint_map(map), &ranges);
    }
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

    /// Objects with slots from a fresh allocator (slot 0 for the first chain).
    fn with_slots(s: &ServicePortSpec) -> ServiceObjects {
        let mut slots = crate::proxy::slots::Slots::default();
        service_objects(s, &layout(), &mut |c| slots.get(c))
    }

    /// Objects without slots (all taken): the rule-per-endpoint form.
    fn without_slots(s: &ServicePortSpec) -> ServiceObjects {
        service_objects(s, &layout(), &mut |_| None)
    }

    #[test]
    fn a_slot_is_split_into_equal_ranges_one_per_endpoint() {
        let objs = with_slots(&spec(3));
        let (_, rules) = objs.chains.iter().find(|(n, _)| n == "svc-ns/web/tcp/http").unwrap();
        assert_eq!(rules, &vec![slot_rule(0)], "one rule, whatever the endpoints");
        let key = |b: &Vec<u8>| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        let bounds: Vec<(u32, u32)> =
            objs.ranges.iter().map(|(_, r)| (key(&r.start), key(&r.end))).collect();
        assert_eq!(bounds, vec![(0, 5461), (5461, 10922), (10922, SLOT_WIDTH)]);
        assert!(objs.ranges.iter().all(|(map, _)| *map == 0));
        let first = &objs.ranges[0].1.value;
        assert_eq!(first, &vec![10, 42, 0, 2, 0x1f, 0x90, 0, 0], "address . port 8080");
        assert_eq!(objs.slots, vec![("svc-ns/web/tcp/http".to_string(), 0)]);
    }

    #[test]
    fn an_endpoint_change_is_only_endpoint_map_elements() {
        // The kernel re-validates the whole table when a commit adds rules or verdict
        // elements; an endpoint change must need neither.
        let mut slots = crate::proxy::slots::Slots::default();
        let old = service_objects(&spec(3), &layout(), &mut |c| slots.get(c));
        let new = service_objects(&spec(2), &layout(), &mut |c| slots.get(c));
        let mut batch = Batch::new(1);
        write_update(&mut TableTx::new(&mut batch, "t"), &[old], &[new]);
        let (bytes, _, _) = batch.finish().unwrap();
        let kinds: Vec<u16> = crate::nft::wire::split_replies(&bytes)
            .iter()
            .map(|m| m.kind & 0xff)
            .filter(|k| *k < 16) // not the batch begin/end
            .collect();
        let (new_elem, del_elem) = (
            crate::nft::wire::MsgType::NewSetElem as u16,
            crate::nft::wire::MsgType::DelSetElem as u16,
        );
        assert_eq!(kinds, vec![del_elem, new_elem], "{kinds:?}");
    }

    #[test]
    fn numgen_rules_give_every_endpoint_an_equal_share() {
        let objs = without_slots(&spec(3));
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
        let objs = with_slots(&spec(0));
        assert!(objs.chains.is_empty());
        let maps: Vec<&str> = objs.elements.iter().map(|e| e.0).collect();
        assert_eq!(maps, vec![NO_ENDPOINT_IPS, NO_ENDPOINT_NODEPORTS]);
    }

    #[test]
    fn external_traffic_policy_local_uses_a_local_only_chain() {
        let mut s = spec(2);
        s.external_local = true;
        let objs = without_slots(&s);
        let np = objs.elements.iter().find(|e| e.0 == SERVICE_NODEPORTS).unwrap();
        assert_eq!(np.2, Verdict::Goto("svl-ns/web/tcp/http".into()));
        let (_, rules) = objs.chains.iter().find(|(n, _)| n.starts_with("svl-")).unwrap();
        assert_eq!(rules.len(), 2, "keep the client address, then the one local endpoint");
    }

    #[test]
    fn affinity_adds_one_timed_set_per_endpoint() {
        let mut s = spec(2);
        s.affinity_timeout = Some(60);
        let objs = with_slots(&s);
        assert_eq!(objs.sets.len(), 2);
        assert!(objs.sets.iter().all(|set| set.timeout_ms == Some(60_000)));
        assert!(objs.slots.is_empty() && objs.ranges.is_empty(), "affinity keeps its rules");
    }
}
