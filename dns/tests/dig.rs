//! The server over real sockets, queried by `dig`: every record kind Kubernetes DNS defines,
//! negative answers, forwarding and caching through a real upstream (dnsmasq), TCP and
//! truncation. Each test runs its own server on a free loopback port.

mod common;

use common::{dig, service, slice, start, tools, Dnsmasq};
use serde_json::json;
use skerry_dns::Update;

fn web() -> k8s_openapi::api::core::v1::Service {
    service(
        "prod",
        "web",
        json!({"clusterIP": "10.43.0.20", "clusterIPs": ["10.43.0.20", "fd00:43::20"],
               "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_ip_service_answers_a_and_aaaa_authoritatively() {
    if tools().is_none() {
        return;
    }
    let dns = start(vec![]).await;
    dns.apply(Update::apply(web()));
    let a = dig(&dns, "web.prod.svc.cluster.local", "A", &[]).await;
    assert_eq!(a.status, "NOERROR", "{}", a.raw);
    assert!(a.has_flag("aa"), "authoritative for the cluster domain: {}", a.raw);
    assert_eq!(a.data("A"), vec!["10.43.0.20"]);
    assert_eq!(a.answers[0].split(' ').nth(1), Some("5"), "TTL 5: {}", a.raw);
    let aaaa = dig(&dns, "web.prod.svc.cluster.local", "AAAA", &[]).await;
    assert_eq!(aaaa.data("AAAA"), vec!["fd00:43::20"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_ports_have_srv_records_with_target_addresses() {
    if tools().is_none() {
        return;
    }
    let dns = start(vec![]).await;
    dns.apply(Update::apply(web()));
    let srv = dig(&dns, "_http._tcp.web.prod.svc.cluster.local", "SRV", &[]).await;
    assert_eq!(srv.data("SRV"), vec!["0 100 80 web.prod.svc.cluster.local."], "{}", srv.raw);
    assert!(srv.additional.iter().any(|r| r.ends_with("A 10.43.0.20")), "{}", srv.raw);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_ips_have_ptr_records() {
    if tools().is_none() {
        return;
    }
    let dns = start(vec![]).await;
    dns.apply(Update::apply(web()));
    let svc = dig(&dns, "-x", "10.43.0.20", &[]).await;
    assert_eq!(svc.data("PTR"), vec!["web.prod.svc.cluster.local."], "{}", svc.raw);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headless_service_resolves_to_ready_endpoints_and_hostnames() {
    if tools().is_none() {
        return;
    }
    let dns = start(vec![]).await;
    dns.apply(Update::apply(service("db", "pg", json!({"clusterIP": "None"}))));
    dns.apply(Update::apply(slice(
        "db",
        "pg-1",
        "pg",
        &[
            ("10.42.0.5", Some("pg-0"), true),
            ("10.42.0.6", Some("pg-1"), true),
            ("10.42.0.7", Some("pg-2"), false),
        ],
    )));
    let all = dig(&dns, "pg.db.svc.cluster.local", "A", &[]).await;
    assert_eq!(all.data("A"), vec!["10.42.0.5", "10.42.0.6"], "not-ready left out: {}", all.raw);
    // StatefulSet-style names from the endpoints' hostnames
    let one = dig(&dns, "pg-1.pg.db.svc.cluster.local", "A", &[]).await;
    assert_eq!(one.data("A"), vec!["10.42.0.6"], "{}", one.raw);
    let not_ready = dig(&dns, "pg-2.pg.db.svc.cluster.local", "A", &[]).await;
    assert_eq!(not_ready.status, "NXDOMAIN", "{}", not_ready.raw);
    let srv = dig(&dns, "_http._tcp.pg.db.svc.cluster.local", "SRV", &[]).await;
    assert_eq!(
        srv.data("SRV"),
        vec!["0 50 8080 pg-0.pg.db.svc.cluster.local.", "0 50 8080 pg-1.pg.db.svc.cluster.local."],
        "{}",
        srv.raw
    );
    let ptr = dig(&dns, "-x", "10.42.0.5", &[]).await;
    assert_eq!(ptr.data("PTR"), vec!["pg-0.pg.db.svc.cluster.local."], "{}", ptr.raw);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_resolve_by_dashed_ip_without_pod_objects() {
    if tools().is_none() {
        return;
    }
    // `pods insecure`, as k3s's CoreDNS: the name is the answer, no Pod is looked up.
    let dns = start(vec![]).await;
    let a = dig(&dns, "10-42-3-7.prod.pod.cluster.local", "A", &[]).await;
    assert_eq!(a.data("A"), vec!["10.42.3.7"], "{}", a.raw);
    assert!(a.has_flag("aa"), "{}", a.raw);
    let not_an_ip = dig(&dns, "worker.prod.pod.cluster.local", "A", &[]).await;
    assert_eq!(not_an_ip.status, "NXDOMAIN", "{}", not_an_ip.raw);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_cluster_names_are_nxdomain_with_soa() {
    if tools().is_none() {
        return;
    }
    let dns = start(vec![]).await;
    let nx = dig(&dns, "missing.prod.svc.cluster.local", "A", &[]).await;
    assert_eq!(nx.status, "NXDOMAIN", "{}", nx.raw);
    assert!(nx.has_flag("aa"), "{}", nx.raw);
    assert!(nx.answers.is_empty());
    assert!(
        nx.authority.iter().any(|r| r.starts_with("cluster.local. 5 IN SOA ns.dns.cluster.local.")),
        "{}",
        nx.raw
    );
    // no upstream configured: recursion is not available, and outside names are refused
    assert!(!nx.has_flag("ra"), "{}", nx.raw);
    let outside = dig(&dns, "example.test", "A", &[]).await;
    assert_eq!(outside.status, "REFUSED", "{}", outside.raw);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_are_visible_to_the_next_query() {
    if tools().is_none() {
        return;
    }
    let dns = start(vec![]).await;
    assert_eq!(dig(&dns, "web.prod.svc.cluster.local", "A", &[]).await.status, "NXDOMAIN");
    dns.apply(Update::apply(web()));
    assert_eq!(dig(&dns, "web.prod.svc.cluster.local", "A", &[]).await.data("A"), ["10.43.0.20"]);
    let moved = service("prod", "web", json!({"clusterIP": "10.43.0.99"}));
    dns.apply(Update::apply(moved.clone()));
    assert_eq!(dig(&dns, "web.prod.svc.cluster.local", "A", &[]).await.data("A"), ["10.43.0.99"]);
    dns.apply(Update::delete(moved));
    assert_eq!(dig(&dns, "web.prod.svc.cluster.local", "A", &[]).await.status, "NXDOMAIN");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_names_are_forwarded_and_served_from_cache_once_upstream_is_gone() {
    let Some((_, dnsmasq)) = tools() else { return };
    let mut upstream = Dnsmasq::start(&dnsmasq).await;
    let dns = start(vec![upstream.addr]).await;
    let a = dig(&dns, "www.example.test", "A", &[]).await;
    assert_eq!(a.status, "NOERROR", "{}", a.raw);
    assert_eq!(a.data("A"), vec!["192.0.2.1"]);
    assert!(a.has_flag("ra"), "recursion available: {}", a.raw);
    assert!(!a.has_flag("aa"), "not our zone: {}", a.raw);
    assert_eq!(dns.stats().forwarded, 1);

    upstream.stop();
    let cached = dig(&dns, "www.example.test", "A", &[]).await;
    assert_eq!(cached.data("A"), vec!["192.0.2.1"], "answered from cache: {}", cached.raw);
    assert_eq!(dns.stats().forwarded, 1, "the upstream was not asked again");
    assert!(dns.stats().cache_hits >= 1);
    let never_seen = dig(&dns, "other.example.test", "A", &[]).await;
    assert_eq!(never_seen.status, "SERVFAIL", "{}", never_seen.raw);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_name_is_a_cname_chased_upstream() {
    let Some((_, dnsmasq)) = tools() else { return };
    let upstream = Dnsmasq::start(&dnsmasq).await;
    let dns = start(vec![upstream.addr]).await;
    let spec = json!({"type": "ExternalName", "externalName": "db.example.test"});
    dns.apply(Update::apply(service("prod", "ext", spec)));
    let a = dig(&dns, "ext.prod.svc.cluster.local", "A", &[]).await;
    assert_eq!(a.data("CNAME"), vec!["db.example.test."], "{}", a.raw);
    assert_eq!(a.data("A"), vec!["192.0.2.1"], "target resolved upstream: {}", a.raw);
    assert!(a.has_flag("aa"), "{}", a.raw);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_works_and_large_udp_answers_are_truncated_for_a_tcp_retry() {
    if tools().is_none() {
        return;
    }
    let dns = start(vec![]).await;
    dns.apply(Update::apply(service("big", "many", json!({"clusterIP": "None"}))));
    let ips: Vec<String> = (1..=100).map(|i| format!("10.42.7.{i}")).collect();
    let eps: Vec<(&str, Option<&str>, bool)> =
        ips.iter().map(|ip| (ip.as_str(), None, true)).collect();
    dns.apply(Update::apply(slice("big", "many-1", "many", &eps)));

    let tcp = dig(&dns, "many.big.svc.cluster.local", "A", &["+tcp"]).await;
    assert_eq!(tcp.data("A").len(), 100, "{}", tcp.raw);
    // 100 A records do not fit in dig's 1232-byte EDNS buffer: TC, and no partial answer
    let udp = dig(&dns, "many.big.svc.cluster.local", "A", &["+ignore"]).await;
    assert!(udp.has_flag("tc"), "{}", udp.raw);
    assert!(udp.answers.is_empty(), "{}", udp.raw);
    // dig's default: see TC, retry over TCP, get everything
    let retried = dig(&dns, "many.big.svc.cluster.local", "A", &[]).await;
    assert!(!retried.has_flag("tc"), "{}", retried.raw);
    assert_eq!(retried.data("A").len(), 100, "{}", retried.raw);
    // without EDNS the limit is 512 bytes
    let small = dig(&dns, "many.big.svc.cluster.local", "A", &["+ignore", "+noedns"]).await;
    assert!(small.has_flag("tc"), "{}", small.raw);
    assert!(dns.stats().truncated >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_upstream_answers_are_fetched_over_tcp() {
    let Some((_, dnsmasq)) = tools() else { return };
    let upstream = Dnsmasq::start(&dnsmasq).await;
    let dns = start(vec![upstream.addr]).await;
    let txt = dig(&dns, "big.example.test", "TXT", &["+tcp"]).await;
    assert_eq!(txt.status, "NOERROR", "{}", txt.raw);
    assert_eq!(txt.data("TXT").len(), 60, "{}", txt.raw);
    let udp = dig(&dns, "big.example.test", "TXT", &["+ignore"]).await;
    assert!(udp.has_flag("tc"), "{}", udp.raw);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_answers_are_served_stale_while_upstream_is_down() {
    let Some((_, dnsmasq)) = tools() else { return };
    let mut upstream = Dnsmasq::start_in(None, &dnsmasq, 1).await;
    let dns = start(vec![upstream.addr]).await;
    let fresh = dig(&dns, "www.example.test", "A", &[]).await;
    assert_eq!(fresh.data("A"), vec!["192.0.2.1"], "{}", fresh.raw);
    upstream.stop();
    // Let the one-second TTL run out: the cache alone can no longer answer it as fresh.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let stale = dig(&dns, "www.example.test", "A", &[]).await;
    assert_eq!(stale.data("A"), vec!["192.0.2.1"], "offline, still resolving: {}", stale.raw);
    assert_eq!(stale.answers[0].split(' ').nth(1), Some("30"), "RFC 8767 TTL: {}", stale.raw);
    assert_eq!(dns.stats().stale_answers, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_ipv6_loopback_too() {
    if tools().is_none() {
        return;
    }
    let has_v6 = std::net::UdpSocket::bind("[::1]:0").is_ok();
    if !skerry_testkit::require(has_v6, "IPv6 on the loopback interface") {
        return;
    }
    let config = skerry_dns::DnsConfig {
        listen: vec!["[::1]:0".parse().unwrap()],
        ..skerry_dns::DnsConfig::default()
    };
    let dns = skerry_dns::ClusterDns::start(config).await.unwrap();
    dns.apply(Update::apply(web()));
    let udp = dig(&dns, "web.prod.svc.cluster.local", "AAAA", &[]).await;
    assert_eq!(udp.data("AAAA"), vec!["fd00:43::20"], "{}", udp.raw);
    let tcp = dig(&dns, "web.prod.svc.cluster.local", "A", &["+tcp"]).await;
    assert_eq!(tcp.data("A"), vec!["10.43.0.20"], "{}", tcp.raw);
}
