//! Unit tests of the zone: the Kubernetes DNS specification, record by record, without sockets.

use std::net::IpAddr;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{Name, RData, RecordType};
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::json;

use super::{Answer, ClusterZone, Lookup, PodRecords};
use crate::objects::{Snapshot, Update};

fn zone() -> ClusterZone {
    ClusterZone::new("cluster.local", 5, &["10.43.0.10".parse().unwrap()]).unwrap()
}

fn verified_zone() -> ClusterZone {
    zone().with_pod_records(PodRecords::Verified)
}

fn service(ns: &str, name: &str, spec: serde_json::Value) -> Service {
    serde_json::from_value(json!({"metadata": {"namespace": ns, "name": name}, "spec": spec}))
        .unwrap()
}

/// A slice of `service` with (ip, hostname, ready) endpoints and an `http` port 8080.
fn slice(ns: &str, name: &str, service: &str, eps: &[(&str, Option<&str>, bool)]) -> EndpointSlice {
    let endpoints: Vec<_> = eps
        .iter()
        .map(|(ip, host, ready)| {
            json!({"addresses": [ip], "hostname": host, "conditions": {"ready": ready}})
        })
        .collect();
    serde_json::from_value(json!({
        "metadata": {"namespace": ns, "name": name,
                     "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
    }))
    .unwrap()
}

fn pod(ns: &str, name: &str, ip: &str, host_network: bool) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"namespace": ns, "name": name},
        "spec": {"containers": [], "hostNetwork": host_network},
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]},
    }))
    .unwrap()
}

fn name(text: &str) -> Name {
    Name::from_ascii(text).unwrap()
}

fn ask(zone: &ClusterZone, qname: &str, qtype: RecordType) -> Answer {
    match zone.lookup(&name(qname), qtype) {
        Lookup::Local(answer) => answer,
        Lookup::Forward => panic!("{qname} {qtype} was forwarded"),
    }
}

/// The answer section as sorted text, `owner type data`.
fn texts(answer: &Answer) -> Vec<String> {
    let mut out: Vec<String> = answer
        .answers
        .iter()
        .map(|r| format!("{} {} {}", r.name, r.record_type(), r.data))
        .collect();
    out.sort();
    out
}

fn ips(answer: &Answer) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = answer
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
            _ => None,
        })
        .collect();
    out.sort();
    out
}

fn web_cluster_ip() -> Service {
    service(
        "prod",
        "web",
        json!({"clusterIP": "10.43.0.20", "clusterIPs": ["10.43.0.20", "fd00:43::20"],
               "ports": [{"name": "http", "port": 80, "protocol": "TCP"}, {"port": 9000}]}),
    )
}

#[test]
fn cluster_ip_service_has_a_aaaa_srv_and_ptr() {
    let mut zone = zone();
    zone.apply(Update::apply(web_cluster_ip()));
    let a = ask(&zone, "web.prod.svc.cluster.local.", RecordType::A);
    assert!(a.answers.iter().all(|r| r.ttl == 5));
    assert_eq!(ips(&a), vec!["10.43.0.20".parse::<IpAddr>().unwrap()]);
    let aaaa = ask(&zone, "web.prod.svc.cluster.local.", RecordType::AAAA);
    assert_eq!(ips(&aaaa), vec!["fd00:43::20".parse::<IpAddr>().unwrap()]);
    let srv = ask(&zone, "_http._tcp.web.prod.svc.cluster.local.", RecordType::SRV);
    assert_eq!(
        texts(&srv),
        vec!["_http._tcp.web.prod.svc.cluster.local. SRV 0 100 80 web.prod.svc.cluster.local."]
    );
    assert_eq!(srv.additionals.len(), 2, "SRV target addresses ride along");
    let ptr = ask(&zone, "20.0.43.10.in-addr.arpa.", RecordType::PTR);
    assert_eq!(texts(&ptr), vec!["20.0.43.10.in-addr.arpa. PTR web.prod.svc.cluster.local."]);
}

#[test]
fn names_match_case_insensitively_and_keep_the_askers_case() {
    let mut zone = zone();
    zone.apply(Update::apply(web_cluster_ip()));
    let a = ask(&zone, "WeB.pRod.svc.Cluster.Local.", RecordType::A);
    assert_eq!(a.answers.len(), 1);
    assert_eq!(a.answers[0].name.to_string(), "WeB.pRod.svc.Cluster.Local.");
}

#[test]
fn headless_service_lists_ready_endpoints_only() {
    let mut zone = zone();
    zone.apply(Update::apply(service("db", "pg", json!({"clusterIP": "None"}))));
    zone.apply(Update::apply(slice(
        "db",
        "pg-abc",
        "pg",
        &[("10.42.0.5", Some("pg-0"), true), ("10.42.0.6", None, true), ("10.42.0.7", None, false)],
    )));
    let a = ask(&zone, "pg.db.svc.cluster.local.", RecordType::A);
    assert_eq!(ips(&a), vec!["10.42.0.5".parse::<IpAddr>().unwrap(), "10.42.0.6".parse().unwrap()]);
    // hostname records (StatefulSet pods) and the dashed-IP names of the others
    let host = ask(&zone, "pg-0.pg.db.svc.cluster.local.", RecordType::A);
    assert_eq!(ips(&host), vec!["10.42.0.5".parse::<IpAddr>().unwrap()]);
    let dashed = ask(&zone, "10-42-0-6.pg.db.svc.cluster.local.", RecordType::A);
    assert_eq!(ips(&dashed), vec!["10.42.0.6".parse::<IpAddr>().unwrap()]);
    let not_ready = ask(&zone, "10-42-0-7.pg.db.svc.cluster.local.", RecordType::A);
    assert_eq!(not_ready.rcode, ResponseCode::NXDomain);
    // one SRV per ready endpoint, pointing at its name
    let srv = ask(&zone, "_http._tcp.pg.db.svc.cluster.local.", RecordType::SRV);
    assert_eq!(
        texts(&srv),
        vec![
            "_http._tcp.pg.db.svc.cluster.local. SRV 0 50 8080 10-42-0-6.pg.db.svc.cluster.local.",
            "_http._tcp.pg.db.svc.cluster.local. SRV 0 50 8080 pg-0.pg.db.svc.cluster.local.",
        ]
    );
    let ptr = ask(&zone, "5.0.42.10.in-addr.arpa.", RecordType::PTR);
    assert_eq!(texts(&ptr), vec!["5.0.42.10.in-addr.arpa. PTR pg-0.pg.db.svc.cluster.local."]);
}

#[test]
fn headless_service_publishes_not_ready_when_asked() {
    let mut zone = zone();
    let spec = json!({"clusterIP": "None", "publishNotReadyAddresses": true});
    zone.apply(Update::apply(service("db", "pg", spec)));
    zone.apply(Update::apply(slice("db", "s1", "pg", &[("10.42.0.7", None, false)])));
    let a = ask(&zone, "pg.db.svc.cluster.local.", RecordType::A);
    assert_eq!(ips(&a), vec!["10.42.0.7".parse::<IpAddr>().unwrap()]);
}

#[test]
fn endpoint_changes_replace_old_records() {
    let mut zone = zone();
    zone.apply(Update::apply(service("db", "pg", json!({"clusterIP": "None"}))));
    zone.apply(Update::apply(slice("db", "s1", "pg", &[("10.42.0.5", None, true)])));
    zone.apply(Update::apply(slice("db", "s1", "pg", &[("10.42.0.8", None, true)])));
    let a = ask(&zone, "pg.db.svc.cluster.local.", RecordType::A);
    assert_eq!(ips(&a), vec!["10.42.0.8".parse::<IpAddr>().unwrap()]);
    zone.apply(Update::delete(slice("db", "s1", "pg", &[])));
    let a = ask(&zone, "pg.db.svc.cluster.local.", RecordType::A);
    assert!(a.answers.is_empty());
    assert_eq!(a.rcode, ResponseCode::NXDomain, "a headless service without endpoints has no name");
    let gone = zone.lookup(&name("8.0.42.10.in-addr.arpa."), RecordType::PTR);
    assert!(matches!(gone, Lookup::Forward));
}

#[test]
fn deleting_a_service_removes_its_names_and_empty_parents() {
    let mut zone = zone();
    let before = zone.name_count();
    zone.apply(Update::apply(web_cluster_ip()));
    assert_eq!(ask(&zone, "prod.svc.cluster.local.", RecordType::A).rcode, ResponseCode::NoError);
    zone.apply(Update::delete(web_cluster_ip()));
    let a = ask(&zone, "web.prod.svc.cluster.local.", RecordType::A);
    assert_eq!(a.rcode, ResponseCode::NXDomain);
    assert_eq!(ask(&zone, "prod.svc.cluster.local.", RecordType::A).rcode, ResponseCode::NXDomain);
    assert_eq!(zone.name_count(), before, "nothing leaks in the index");
}

#[test]
fn external_name_is_a_cname_to_be_chased_upstream() {
    let mut zone = zone();
    let spec = json!({"type": "ExternalName", "externalName": "db.Example.test"});
    zone.apply(Update::apply(service("prod", "ext", spec)));
    let a = ask(&zone, "ext.prod.svc.cluster.local.", RecordType::A);
    assert_eq!(texts(&a), vec!["ext.prod.svc.cluster.local. CNAME db.example.test."]);
    assert_eq!(a.chase, Some(name("db.example.test.")));
    let cname = ask(&zone, "ext.prod.svc.cluster.local.", RecordType::CNAME);
    assert_eq!(cname.chase, None);
    assert_eq!(cname.answers.len(), 1);
}

#[test]
fn external_name_inside_the_cluster_is_followed_locally() {
    let mut zone = zone();
    zone.apply(Update::apply(web_cluster_ip()));
    let spec = json!({"type": "ExternalName", "externalName": "web.prod.svc.cluster.local"});
    zone.apply(Update::apply(service("prod", "alias", spec)));
    let a = ask(&zone, "alias.prod.svc.cluster.local.", RecordType::A);
    assert_eq!(a.chase, None);
    assert_eq!(ips(&a), vec!["10.43.0.20".parse::<IpAddr>().unwrap()]);
    assert_eq!(a.answers.len(), 2, "CNAME then A");
}

#[test]
fn unknown_names_are_nxdomain_with_soa_and_known_ones_nodata() {
    let mut zone = zone();
    zone.apply(Update::apply(web_cluster_ip()));
    let nx = ask(&zone, "nope.prod.svc.cluster.local.", RecordType::A);
    assert_eq!(nx.rcode, ResponseCode::NXDomain);
    assert!(nx.answers.is_empty());
    assert_eq!(nx.authorities.len(), 1);
    assert_eq!(nx.authorities[0].record_type(), RecordType::SOA);
    let nodata = ask(&zone, "web.prod.svc.cluster.local.", RecordType::MX);
    assert_eq!(nodata.rcode, ResponseCode::NoError);
    assert!(nodata.answers.is_empty());
    assert_eq!(nodata.authorities[0].record_type(), RecordType::SOA);
}

#[test]
fn apex_answers_soa_and_ns() {
    let zone = zone();
    let soa = ask(&zone, "cluster.local.", RecordType::SOA);
    assert_eq!(soa.answers[0].record_type(), RecordType::SOA);
    let ns = ask(&zone, "cluster.local.", RecordType::NS);
    assert_eq!(texts(&ns), vec!["cluster.local. NS ns.dns.cluster.local."]);
    let glue = ask(&zone, "ns.dns.cluster.local.", RecordType::A);
    assert_eq!(ips(&glue), vec!["10.43.0.10".parse::<IpAddr>().unwrap()]);
}

#[test]
fn pods_get_dashed_names_and_ptr_unless_host_network() {
    let mut zone = verified_zone();
    zone.apply(Update::apply(pod("prod", "p1", "10.42.1.9", false)));
    zone.apply(Update::apply(pod("prod", "h1", "192.0.2.7", true)));
    let a = ask(&zone, "10-42-1-9.prod.pod.cluster.local.", RecordType::A);
    assert_eq!(ips(&a), vec!["10.42.1.9".parse::<IpAddr>().unwrap()]);
    let ptr = ask(&zone, "9.1.42.10.in-addr.arpa.", RecordType::PTR);
    assert_eq!(texts(&ptr), vec!["9.1.42.10.in-addr.arpa. PTR 10-42-1-9.prod.pod.cluster.local."]);
    let host = ask(&zone, "192-0-2-7.prod.pod.cluster.local.", RecordType::A);
    assert_eq!(host.answers.len(), 1);
    assert!(matches!(
        zone.lookup(&name("7.2.0.192.in-addr.arpa."), RecordType::PTR),
        Lookup::Forward
    ));
    // the wrong namespace does not resolve
    let other = ask(&zone, "10-42-1-9.dev.pod.cluster.local.", RecordType::A);
    assert_eq!(other.rcode, ResponseCode::NXDomain);
}

#[test]
fn endpoint_ptr_wins_over_pod_ptr() {
    let mut zone = verified_zone();
    zone.apply(Update::apply(pod("db", "pg-0", "10.42.0.5", false)));
    zone.apply(Update::apply(service("db", "pg", json!({"clusterIP": "None"}))));
    zone.apply(Update::apply(slice("db", "s1", "pg", &[("10.42.0.5", Some("pg-0"), true)])));
    let ptr = ask(&zone, "5.0.42.10.in-addr.arpa.", RecordType::PTR);
    assert_eq!(texts(&ptr), vec!["5.0.42.10.in-addr.arpa. PTR pg-0.pg.db.svc.cluster.local."]);
}

#[test]
fn finished_pods_lose_their_names() {
    let mut zone = verified_zone();
    zone.apply(Update::apply(pod("prod", "p1", "10.42.1.9", false)));
    let mut done = pod("prod", "p1", "10.42.1.9", false);
    done.status.as_mut().unwrap().phase = Some("Succeeded".into());
    zone.apply(Update::apply(done));
    let a = ask(&zone, "10-42-1-9.prod.pod.cluster.local.", RecordType::A);
    assert_eq!(a.rcode, ResponseCode::NXDomain);
}

#[test]
fn insecure_pod_names_resolve_to_the_address_they_encode_without_pods() {
    let mut zone = zone();
    assert_eq!(zone.pod_records(), PodRecords::Insecure, "the default, as k3s's CoreDNS");
    let a = ask(&zone, "10-42-1-9.prod.pod.cluster.local.", RecordType::A);
    assert_eq!(ips(&a), vec!["10.42.1.9".parse::<IpAddr>().unwrap()]);
    assert_eq!(a.answers[0].name.to_ascii(), "10-42-1-9.prod.pod.cluster.local.");
    // any namespace, any case, IPv6 in its dashed form
    let other = ask(&zone, "10-42-1-9.DEV.pod.cluster.local.", RecordType::A);
    assert_eq!(ips(&other), vec!["10.42.1.9".parse::<IpAddr>().unwrap()]);
    let v6 = ask(&zone, "fd00--5.prod.pod.cluster.local.", RecordType::AAAA);
    assert_eq!(ips(&v6), vec!["fd00::5".parse::<IpAddr>().unwrap()]);
    // the other address family is NODATA, not NXDOMAIN
    let nodata = ask(&zone, "10-42-1-9.prod.pod.cluster.local.", RecordType::AAAA);
    assert_eq!((nodata.rcode, nodata.answers.len()), (ResponseCode::NoError, 0));
    assert_eq!(nodata.authorities.len(), 1, "SOA");
    // what encodes no address, or sits at another depth, is not a pod name
    for bad in [
        "web.prod.pod.cluster.local.",
        "10-42-1-256.prod.pod.cluster.local.",
        "10-42-1-9.pod.cluster.local.",
        "x.10-42-1-9.prod.pod.cluster.local.",
        "10-42-1-9.under_score.pod.cluster.local.",
    ] {
        assert_eq!(ask(&zone, bad, RecordType::A).rcode, ResponseCode::NXDomain, "{bad}");
    }
    // fed pods are ignored: no PTR records for pod IPs
    zone.apply(Update::apply(pod("prod", "p1", "10.42.1.9", false)));
    zone.replace_all(Snapshot {
        pods: vec![pod("prod", "p1", "10.42.1.9", false)],
        ..Snapshot::default()
    });
    assert!(matches!(
        zone.lookup(&name("9.1.42.10.in-addr.arpa."), RecordType::PTR),
        Lookup::Forward
    ));
}

#[test]
fn names_outside_the_cluster_are_forwarded() {
    let zone = zone();
    assert!(matches!(zone.lookup(&name("example.test."), RecordType::A), Lookup::Forward));
    assert!(matches!(zone.lookup(&name("local."), RecordType::A), Lookup::Forward));
}

#[test]
fn replace_all_drops_what_the_snapshot_lacks() {
    let mut zone = zone();
    zone.apply(Update::apply(web_cluster_ip()));
    let serial = zone.serial();
    let other = service("prod", "api", json!({"clusterIP": "10.43.0.30"}));
    zone.replace_all(Snapshot { services: vec![other], ..Snapshot::default() });
    assert!(zone.serial() > serial);
    let old = ask(&zone, "web.prod.svc.cluster.local.", RecordType::A);
    assert_eq!(old.rcode, ResponseCode::NXDomain);
    let new = ask(&zone, "api.prod.svc.cluster.local.", RecordType::A);
    assert_eq!(ips(&new), vec!["10.43.0.30".parse::<IpAddr>().unwrap()]);
    let glue = ask(&zone, "ns.dns.cluster.local.", RecordType::A);
    assert_eq!(glue.answers.len(), 1, "apex records survive a replace");
}

#[test]
fn odd_objects_are_skipped_not_fatal() {
    let mut zone = zone();
    zone.apply(Update::apply(service("prod", "x", json!({"clusterIP": "not-an-ip"}))));
    zone.apply(Update::apply(service("prod", "Bad_Name", json!({"clusterIP": "10.43.0.9"}))));
    let spec = json!({"type": "ExternalName", "externalName": "bad name!"});
    zone.apply(Update::apply(service("prod", "e", spec)));
    let no_spec: Service = serde_json::from_value(json!({"metadata": {"name": "n"}})).unwrap();
    zone.apply(Update::apply(no_spec));
    let nx = ask(&zone, "x.prod.svc.cluster.local.", RecordType::A);
    assert_eq!(nx.rcode, ResponseCode::NXDomain);
    let nx = ask(&zone, "e.prod.svc.cluster.local.", RecordType::A);
    assert_eq!(nx.rcode, ResponseCode::NXDomain);
}

#[test]
fn a_slice_moving_between_services_updates_both() {
    let mut zone = zone();
    zone.apply(Update::apply(service("db", "a", json!({"clusterIP": "None"}))));
    zone.apply(Update::apply(service("db", "b", json!({"clusterIP": "None"}))));
    zone.apply(Update::apply(slice("db", "s1", "a", &[("10.42.0.5", None, true)])));
    zone.apply(Update::apply(slice("db", "s1", "b", &[("10.42.0.5", None, true)])));
    assert_eq!(ask(&zone, "a.db.svc.cluster.local.", RecordType::A).rcode, ResponseCode::NXDomain);
    assert_eq!(ask(&zone, "b.db.svc.cluster.local.", RecordType::A).answers.len(), 1);
}
