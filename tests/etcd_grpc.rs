//! `skerry etcd` through the gRPC API with the `etcd-client` crate and raw HTTP/2: bad input
//! gets etcd's error codes and messages and never takes the server down; watch-stream details
//! (client-chosen IDs, progress requests, fragments) behave like etcd's.

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use bytes::Bytes;
use common::etcd::SkerryEtcd;
use etcd_client::{
    Client, Compare, CompareOp, Error, EventType, GetOptions, PutOptions, Txn, TxnOp, WatchOptions,
};
use http_body_util::{BodyExt, Full};

/// The parts of a gRPC status the tests compare.
struct Status {
    code: String,
    message: String,
}

/// The gRPC status of an etcd-client error.
fn status(err: Error) -> Status {
    match err {
        Error::GRpcStatus(s) => {
            Status { code: format!("{:?}", s.code()), message: s.message().into() }
        }
        other => panic!("expected a gRPC status, got {other:?}"),
    }
}

async fn connect(server: &SkerryEtcd) -> Client {
    Client::connect([server.endpoint()], None).await.unwrap()
}

/// The server still answers (after a bad request).
async fn assert_serving(server: &mut SkerryEtcd) {
    assert!(server.is_running(), "server died; log:\n{}", server.log_text());
    let mut c = connect(server).await;
    c.put("alive", "yes", None).await.unwrap();
    let got = c.get("alive", None).await.unwrap();
    assert_eq!(got.kvs()[0].value(), b"yes");
}

#[tokio::test]
async fn oversized_requests_get_etcds_request_too_large_and_the_server_stays_up() {
    let mut server = SkerryEtcd::start_with(&[
        "--listen-client-urls",
        "http://127.0.0.1:0",
        "--max-request-bytes",
        "65536",
    ]);
    let mut c = connect(&server).await;
    // Over the limit but within gRPC's allowance: etcd's own error.
    let st = status(c.put("big", vec![b'x'; 100 * 1024], None).await.unwrap_err());
    assert_eq!(
        (st.code.as_str(), st.message.as_str()),
        ("InvalidArgument", "etcdserver: request is too large")
    );
    // Far over: refused by the gRPC layer (ResourceExhausted), connection and server survive.
    let err = c.put("huge", vec![b'x'; 2 * 1024 * 1024], None).await.unwrap_err();
    assert!(matches!(err, Error::GRpcStatus(_)), "{err:?}");
    // Just under the limit is fine.
    c.put("fits", vec![b'x'; 60 * 1024], None).await.unwrap();
    assert_serving(&mut server).await;
}

#[tokio::test]
async fn invalid_keys_ranges_leases_and_txns_get_etcds_errors() {
    let mut server = SkerryEtcd::start();
    let mut c = connect(&server).await;
    c.put("a", "1", None).await.unwrap();
    c.put("b", "2", None).await.unwrap();

    let st = status(c.put("", "v", None).await.unwrap_err());
    assert_eq!(
        (st.code.as_str(), st.message.as_str()),
        ("InvalidArgument", "etcdserver: key is not provided")
    );

    // range_end before key selects nothing (etcd answers an empty range, not an error).
    let r = c.get("b", Some(GetOptions::new().with_range("a"))).await.unwrap();
    assert!(r.kvs().is_empty());
    assert_eq!(r.count(), 0);

    // Unknown leases.
    let st = status(c.put("k", "v", Some(PutOptions::new().with_lease(0x1234))).await.unwrap_err());
    assert_eq!(
        (st.code.as_str(), st.message.as_str()),
        ("NotFound", "etcdserver: requested lease not found")
    );
    let st = status(c.lease_revoke(0x1234).await.unwrap_err());
    assert_eq!(st.message, "etcdserver: requested lease not found");
    let ttl = c.lease_time_to_live(0x1234, None).await.unwrap();
    assert_eq!(ttl.ttl(), -1, "etcd reports an unknown lease's TTL as -1");
    // etcd answers a keep-alive of an unknown lease with TTL 0, which etcd-client reports as
    // "lease not found" on the first reply.
    match c.lease_keep_alive(0x1234).await {
        Err(Error::LeaseKeepAliveError(msg)) => assert!(msg.contains("not found"), "{msg}"),
        Err(other) => panic!("expected the lease to be reported gone, got {other:?}"),
        Ok(_) => panic!("keep-alive of an unknown lease must report it gone"),
    }

    // A txn may not write one key twice.
    let dup = Txn::new().and_then([TxnOp::put("k", "1", None), TxnOp::put("k", "2", None)]);
    let st = status(c.txn(dup).await.unwrap_err());
    assert_eq!(
        (st.code.as_str(), st.message.as_str()),
        ("InvalidArgument", "etcdserver: duplicate key given in txn request")
    );
    // Nor hold more than 128 operations (etcd's --max-txn-ops).
    let many: Vec<TxnOp> = (0..129).map(|i| TxnOp::put(format!("m{i}"), "v", None)).collect();
    let st = status(c.txn(Txn::new().and_then(many)).await.unwrap_err());
    assert_eq!(st.message, "etcdserver: too many operations in txn request");
    // Reading a future revision.
    let st =
        status(c.get("a", Some(GetOptions::new().with_revision(1_000_000))).await.unwrap_err());
    assert_eq!(
        (st.code.as_str(), st.message.as_str()),
        ("OutOfRange", "etcdserver: mvcc: required revision is a future revision")
    );

    assert_serving(&mut server).await;
}

#[tokio::test]
async fn count_only_and_compare_on_values() {
    let server = SkerryEtcd::start();
    let mut c = connect(&server).await;
    for i in 0..5 {
        c.put(format!("/n/{i}"), "v", None).await.unwrap();
    }
    let r = c.get("/n/", Some(GetOptions::new().with_prefix().with_count_only())).await.unwrap();
    assert!(r.kvs().is_empty());
    assert_eq!(r.count(), 5);
    let txn = Txn::new()
        .when([Compare::value("/n/0", CompareOp::Equal, "v")])
        .and_then([TxnOp::delete("/n/", Some(etcd_client::DeleteOptions::new().with_prefix()))]);
    assert!(c.txn(txn).await.unwrap().succeeded());
    let r = c.get("/n/", Some(GetOptions::new().with_prefix().with_count_only())).await.unwrap();
    assert_eq!(r.count(), 0);
}

/// Raw bytes that are not HTTP/2 at all: the connection is dropped, the server lives on.
#[tokio::test]
async fn garbage_bytes_on_the_port_do_not_hurt_the_server() {
    let mut server = SkerryEtcd::start();
    let addr = server.endpoint().trim_start_matches("http://").to_string();
    for junk in [
        &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        &[0xffu8; 4096][..],
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00",
    ] {
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let _ = s.write_all(junk);
        // Half-close so the server sees the end of the junk instead of waiting for more.
        let _ = s.shutdown(std::net::Shutdown::Write);
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
    }
    assert_serving(&mut server).await;
}

/// Sends one HTTP/2 request to a gRPC method; returns the grpc-status (header or trailer).
async fn raw_grpc(addr: &str, path: &str, content_type: &str, body: Vec<u8>) -> Option<String> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let io = hyper_util::rt::TokioIo::new(tcp);
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::post(format!("http://{addr}{path}"))
        .header("content-type", content_type)
        .header("te", "trailers")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    let header_status = resp.headers().get("grpc-status").map(|v| v.to_str().unwrap().to_string());
    let collected = resp.into_body().collect().await.unwrap();
    let trailer_status = collected
        .trailers()
        .and_then(|t| t.get("grpc-status"))
        .map(|v| v.to_str().unwrap().to_string());
    header_status.or(trailer_status)
}

#[tokio::test]
async fn malformed_grpc_requests_get_errors_and_the_server_stays_up() {
    let mut server = SkerryEtcd::start();
    let addr = server.endpoint().trim_start_matches("http://").to_string();
    // A gRPC frame whose payload is not a RangeRequest.
    let bad_proto = vec![0, 0, 0, 0, 5, 0xff, 0xff, 0xff, 0xff, 0xff];
    let st = raw_grpc(&addr, "/etcdserverpb.KV/Range", "application/grpc", bad_proto.clone()).await;
    assert!(st.is_some_and(|s| s != "0"), "undecodable request must fail");
    // A frame header promising more bytes than are sent.
    let truncated = vec![0, 0, 0, 1, 0, 1, 2, 3];
    let st = raw_grpc(&addr, "/etcdserverpb.KV/Put", "application/grpc", truncated).await;
    assert!(st.is_some_and(|s| s != "0"), "truncated request must fail");
    // Wrong content type.
    let st = raw_grpc(&addr, "/etcdserverpb.KV/Range", "text/plain", bad_proto.clone()).await;
    assert_ne!(st.as_deref(), Some("0"));
    // An unknown method.
    let st =
        raw_grpc(&addr, "/etcdserverpb.KV/Nope", "application/grpc", vec![0, 0, 0, 0, 0]).await;
    assert_eq!(st.as_deref(), Some("12"), "unknown methods are Unimplemented");
    assert_serving(&mut server).await;
}

#[tokio::test]
async fn one_watch_stream_carries_several_watches_with_client_chosen_ids() {
    let server = SkerryEtcd::start();
    let mut c = connect(&server).await;
    let mut stream = c.watch("/a", Some(WatchOptions::new().with_watch_id(7))).await.unwrap();
    let created = stream.message().await.unwrap().unwrap();
    assert!(created.created());
    assert_eq!(created.watch_id(), 7);
    stream.watch("/b", Some(WatchOptions::new().with_prefix())).await.unwrap();
    let created = stream.message().await.unwrap().unwrap();
    assert!(created.created());
    let auto_id = created.watch_id();
    assert_eq!(auto_id, 0, "etcd's automatic IDs start at 0");
    // A client-chosen ID already in use is refused.
    stream.watch("/c", Some(WatchOptions::new().with_watch_id(7))).await.unwrap();
    let refused = stream.message().await.unwrap().unwrap();
    assert!(refused.created() && refused.canceled());
    assert!(refused.cancel_reason().contains("duplicate watch ID"), "{}", refused.cancel_reason());

    c.put("/a", "1", None).await.unwrap();
    c.put("/b/x", "2", None).await.unwrap();
    let ev = stream.message().await.unwrap().unwrap();
    assert_eq!((ev.watch_id(), ev.events()[0].kv().unwrap().key()), (7, &b"/a"[..]));
    let ev = stream.message().await.unwrap().unwrap();
    assert_eq!((ev.watch_id(), ev.events()[0].kv().unwrap().key()), (auto_id, &b"/b/x"[..]));

    // Cancelling one leaves the other.
    stream.cancel(7).await.unwrap();
    let cancelled = stream.message().await.unwrap().unwrap();
    assert!(cancelled.canceled());
    assert_eq!(cancelled.watch_id(), 7);
    c.put("/a", "again", None).await.unwrap();
    c.put("/b/y", "3", None).await.unwrap();
    let ev = stream.message().await.unwrap().unwrap();
    assert_eq!(ev.watch_id(), auto_id, "no event for the cancelled watch");
    assert_eq!(ev.events()[0].event_type(), EventType::Put);
}

#[tokio::test]
async fn progress_requests_report_the_current_revision() {
    let server = SkerryEtcd::start();
    let mut c = connect(&server).await;
    let put = c.put("/p/k", "v", None).await.unwrap();
    let rev = put.header().unwrap().revision();
    let mut stream = c.watch("/p/", Some(WatchOptions::new().with_prefix())).await.unwrap();
    assert!(stream.message().await.unwrap().unwrap().created());
    stream.request_progress().await.unwrap();
    let progress = stream.message().await.unwrap().unwrap();
    assert_eq!(progress.watch_id(), -1, "etcd sends stream-wide progress with watch ID -1");
    assert!(progress.events().is_empty());
    assert!(progress.header().unwrap().revision() >= rev);
}

#[tokio::test]
async fn periodic_progress_notifications_reach_idle_watches() {
    let server = SkerryEtcd::start_with(&[
        "--listen-client-urls",
        "http://127.0.0.1:0",
        "--experimental-watch-progress-notify-interval",
        "200ms",
    ]);
    let mut c = connect(&server).await;
    let mut stream =
        c.watch("/idle", Some(WatchOptions::new().with_progress_notify())).await.unwrap();
    let created = stream.message().await.unwrap().unwrap();
    let note = tokio::time::timeout(Duration::from_secs(20), stream.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(note.watch_id(), created.watch_id());
    assert!(note.events().is_empty());
}

#[tokio::test]
async fn large_event_batches_are_fragmented_when_the_client_allows_it() {
    let server = SkerryEtcd::start_with(&[
        "--listen-client-urls",
        "http://127.0.0.1:0",
        "--max-request-bytes",
        "4096",
    ]);
    let mut c = connect(&server).await;
    // Three 1.2 KiB keys written, then overwritten in one txn: that revision's events with
    // their previous values make one ~7 KiB batch, over the 4 KiB limit.
    let write = |tag: u8| {
        let ops: Vec<TxnOp> =
            (0..3).map(|i| TxnOp::put(format!("/f/{i}"), vec![tag; 1200], None)).collect();
        Txn::new().and_then(ops)
    };
    c.txn(write(b'a')).await.unwrap();
    let rev = c.txn(write(b'b')).await.unwrap().header().unwrap().revision();
    let opts =
        WatchOptions::new().with_prefix().with_start_revision(rev).with_prev_key().with_fragment();
    let mut stream = c.watch("/f/", Some(opts)).await.unwrap();
    assert!(stream.message().await.unwrap().unwrap().created());
    let mut parts = Vec::new();
    loop {
        let next = tokio::time::timeout(Duration::from_secs(20), stream.message());
        let resp = next.await.unwrap().unwrap().unwrap();
        let last = !resp.0.fragment;
        parts.push(resp);
        if last {
            break;
        }
    }
    assert!(parts.len() > 1, "a ~7 KiB batch over a 4 KiB limit must be fragmented");
    let events: usize = parts.iter().map(|p| p.events().len()).sum();
    assert_eq!(events, 3);
    for p in &parts {
        assert_eq!(p.events()[0].prev_kv().unwrap().value(), &[b'a'; 1200][..]);
    }
}

#[tokio::test]
async fn watch_filters_drop_the_filtered_event_kinds() {
    let server = SkerryEtcd::start();
    let mut c = connect(&server).await;
    let no_delete = WatchOptions::new().with_filters([etcd_client::WatchFilterType::NoDelete]);
    let mut stream = c.watch("/flt", Some(no_delete)).await.unwrap();
    assert!(stream.message().await.unwrap().unwrap().created());
    c.put("/flt", "1", None).await.unwrap();
    c.delete("/flt", None).await.unwrap();
    c.put("/flt", "2", None).await.unwrap();
    let mut values = Vec::new();
    while values.len() < 2 {
        let resp = stream.message().await.unwrap().unwrap();
        for ev in resp.events() {
            assert_eq!(ev.event_type(), EventType::Put, "deletes are filtered out");
            values.push(ev.kv().unwrap().value().to_vec());
        }
    }
    assert_eq!(values, [b"1".to_vec(), b"2".to_vec()]);
}
