//! The pod network's nftables table: masquerade for traffic leaving the cluster CIDR and
//! hostPort DNAT. Rewritten whole in one transaction each time (it is a handful of rules).

use std::net::Ipv4Addr;

use crate::nft::expr::{self, CmpOp, Expr};
use crate::nft::wire::Batch;
use crate::nft::{Hook, TableTx};

use super::NetworkConfig;

/// A hostPort: traffic to `host_port` on any node address goes to the pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    /// IP protocol number (6 TCP, 17 UDP, 132 SCTP).
    pub protocol: u8,
    /// Port on the node.
    pub host_port: u16,
    /// The pod's address.
    pub pod_ip: Ipv4Addr,
    /// The container port.
    pub container_port: u16,
}

/// Writes the whole table (replacing any previous content) into `batch`.
pub fn write_table(batch: &mut Batch, cfg: &NetworkConfig, ports: &[HostPort]) {
    let mut tx = TableTx::new(batch, &cfg.nat_table);
    tx.add_table();
    tx.del_table();
    tx.add_table();
    let nat = |hooknum, priority| Some(Hook { kind: "nat", hooknum, priority });
    tx.add_chain("postrouting", nat(libc::NF_INET_POST_ROUTING as u32, 100));
    tx.add_chain("prerouting", nat(libc::NF_INET_PRE_ROUTING as u32, -100));
    tx.add_chain("output", nat(libc::NF_INET_LOCAL_OUT as u32, -100));
    tx.add_chain("hostports", None);

    // Pods talking outside the cluster leave with the node's address.
    let mut masq = Vec::new();
    masq.extend(expr::match_net(true, CmpOp::Eq, cfg.pod_cidr));
    masq.extend(expr::match_net(false, CmpOp::Neq, cfg.cluster_cidr));
    masq.push(Expr::Masquerade);
    tx.add_rule("postrouting", &masq);

    if !ports.is_empty() {
        // Only packets addressed to this node: `fib daddr type local`.
        let mut jump = vec![
            Expr::FibDaddrType { dreg: expr::REG_1 },
            Expr::Cmp {
                sreg: expr::REG_1,
                op: CmpOp::Eq,
                data: (libc::RTN_LOCAL as u32).to_ne_bytes().to_vec(),
            },
        ];
        jump.push(Expr::Verdict(expr::Verdict::Jump("hostports".into())));
        tx.add_rule("prerouting", &jump);
        tx.add_rule("output", &jump);
    }
    for p in ports {
        let mut rule = Vec::new();
        rule.extend(expr::match_l4proto(p.protocol));
        rule.extend(expr::match_dport(p.host_port));
        rule.extend(expr::dnat_to(p.pod_ip, p.container_port));
        tx.add_rule("hostports", &rule);
    }
}
