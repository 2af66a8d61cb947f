//! Thin helpers over rtnetlink for the few link, address, route and neighbour operations the
//! pod network needs, each tolerant of "already there" / "already gone" so callers stay
//! idempotent (an attach retried after a crash must not fail on its own leftovers).

use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt;
use rtnetlink::packet_route::link::LinkAttribute;
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteMessage, RouteProtocol};
use rtnetlink::{Handle, RouteMessageBuilder};

/// The route protocol number marking routes we own (so stale ones can be found after a restart).
pub const ROUTE_PROTO: u8 = 0x53;

/// True when the error is a kernel errno equal to `errno`.
pub fn is_errno(err: &rtnetlink::Error, errno: i32) -> bool {
    match err {
        rtnetlink::Error::NetlinkError(m) => m.raw_code() == -errno,
        _ => false,
    }
}

/// The index of link `name`, or `None` when it does not exist.
pub async fn link_index(h: &Handle, name: &str) -> Result<Option<u32>, rtnetlink::Error> {
    let mut links = h.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(Some(msg)) => Ok(Some(msg.header.index)),
        Ok(None) => Ok(None),
        Err(e) if is_errno(&e, libc::ENODEV) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The MAC address of link `index`, if it has one.
pub async fn link_mac(h: &Handle, index: u32) -> Result<Option<Vec<u8>>, rtnetlink::Error> {
    let mut links = h.link().get().match_index(index).execute();
    let Some(msg) = links.try_next().await? else { return Ok(None) };
    Ok(msg.attributes.into_iter().find_map(|a| match a {
        LinkAttribute::Address(mac) => Some(mac),
        _ => None,
    }))
}

/// Brings link `index` up.
pub async fn set_up(h: &Handle, index: u32) -> Result<(), rtnetlink::Error> {
    h.link().set(rtnetlink::LinkUnspec::new_with_index(index).up().build()).execute().await
}

/// Adds `ip/prefix` to link `index`; an address already there is fine.
pub async fn add_address(
    h: &Handle,
    index: u32,
    ip: Ipv4Addr,
    prefix: u8,
) -> Result<(), rtnetlink::Error> {
    match h.address().add(index, IpAddr::V4(ip), prefix).execute().await {
        Err(e) if is_errno(&e, libc::EEXIST) => Ok(()),
        other => other,
    }
}

/// Deletes link `index`; a link already gone is fine.
pub async fn delete_link(h: &Handle, index: u32) -> Result<(), rtnetlink::Error> {
    match h.link().del(index).execute().await {
        Err(e) if is_errno(&e, libc::ENODEV) => Ok(()),
        other => other,
    }
}

/// A route to `dst` via `gateway` (on-link when `dev` is given), marked as ours.
pub fn route(
    dst: ipnet::Ipv4Net,
    gateway: Ipv4Addr,
    dev: Option<u32>,
    onlink: bool,
) -> RouteMessage {
    let mut b = RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(dst.network(), dst.prefix_len())
        .gateway(gateway)
        .protocol(RouteProtocol::Other(ROUTE_PROTO));
    if let Some(d) = dev {
        b = b.output_interface(d);
    }
    if onlink {
        b = b.onlink();
    }
    b.build()
}

/// Adds or replaces a route.
pub async fn replace_route(h: &Handle, msg: RouteMessage) -> Result<(), rtnetlink::Error> {
    h.route().add(msg).replace().execute().await
}

/// Our routes (by protocol) in the main table, as (destination, message).
pub async fn owned_routes(
    h: &Handle,
) -> Result<Vec<(ipnet::Ipv4Net, RouteMessage)>, rtnetlink::Error> {
    let filter = RouteMessageBuilder::<Ipv4Addr>::new().build();
    let routes: Vec<RouteMessage> = h.route().get(filter).execute().try_collect().await?;
    let mut out = Vec::new();
    for r in routes {
        if r.header.protocol != RouteProtocol::Other(ROUTE_PROTO) {
            continue;
        }
        let dst = r.attributes.iter().find_map(|a| match a {
            RouteAttribute::Destination(RouteAddress::Inet(ip)) => Some(*ip),
            _ => None,
        });
        if let Some(ip) = dst {
            if let Ok(net) = ipnet::Ipv4Net::new(ip, r.header.destination_prefix_length) {
                out.push((net, r));
            }
        }
    }
    Ok(out)
}
