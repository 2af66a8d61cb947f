//! The sockets: UDP and TCP listeners on each configured address, the loops that serve them,
//! and the [`DnsHandle`] the agent keeps to feed the zone and stop the server.
//!
//! Sockets are bound with `IP_FREEBIND`, so the server can start before the node has put the
//! cluster DNS address on an interface. Each UDP socket is read by one blocking thread per CPU
//! (capped at 4) that takes queries in batches (`udp_batch`) and answers what needs no upstream
//! in place (measured under dnsperf: about 5 us of CPU per query, against 6 to 9 us with a tokio
//! readiness loop). Questions that need an upstream, and all of TCP, run as tasks on the tokio
//! runtime `start` was called on.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::net::UdpSocket;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use crate::cache::ResponseCache;
use crate::config::DnsConfig;
use crate::error::DnsError;
use crate::forward::Forwarder;
use crate::handler::{Handler, Step, Transport};
use crate::objects::{Snapshot, Update};
use crate::stats::{DnsStats, Stats};
use crate::udp_batch::{recv_batch, send_batch, Received, BATCH};
use crate::zone::ClusterZone;

/// A TCP client silent this long is disconnected (RFC 7766 suggests seconds, not minutes).
const TCP_IDLE: Duration = Duration::from_secs(10);
/// At most this many TCP clients at once; more wait to be accepted.
const MAX_TCP_CLIENTS: usize = 256;
/// How often a blocked UDP reader wakes to check whether the server was stopped.
const UDP_STOP_CHECK: Duration = Duration::from_millis(500);
/// Attempts at finding a port free for both UDP and TCP when asked for port 0.
const PORT_ATTEMPTS: usize = 32;

/// The node-local cluster DNS server.
pub struct ClusterDns;

impl ClusterDns {
    /// Binds the listen addresses and starts serving on the current tokio runtime.
    pub async fn start(config: DnsConfig) -> Result<DnsHandle, DnsError> {
        if config.listen.is_empty() {
            return Err(DnsError::Config("no listen address".into()));
        }
        let mut sockets = Vec::new();
        for addr in &config.listen {
            sockets.push(bind_pair(*addr)?);
        }
        let local_addrs: Vec<SocketAddr> =
            sockets.iter().map(|(udp, _)| udp.local_addr()).collect::<Result<_, _>>().map_err(
                |source| DnsError::Bind { proto: "udp", addr: config.listen[0], source },
            )?;
        // Forwarding to ourselves would loop until every upstream timeout expires.
        let upstreams: Vec<SocketAddr> =
            config.upstreams.iter().copied().filter(|u| !local_addrs.contains(u)).collect();
        let ns_ips: Vec<_> = local_addrs.iter().map(SocketAddr::ip).collect();
        let zone = ClusterZone::new(&config.cluster_domain, config.ttl, &ns_ips)?
            .with_pod_records(config.pod_records);
        let cache = ResponseCache::new(config.cache_size, config.serve_stale_for);
        let handler = Arc::new(Handler {
            zone: RwLock::new(zone),
            forwarder: Forwarder::new(upstreams, config.upstream_timeout, cache),
            stats: Stats::default(),
        });
        let readers = std::thread::available_parallelism().map_or(1, |n| n.get()).min(4);
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| DnsError::Config("ClusterDns::start needs a tokio runtime".into()))?;
        // Built first so that a failure half-way stops what already started (in its drop).
        let mut handle = DnsHandle {
            handler,
            local_addrs,
            tasks: Vec::new(),
            stop: Arc::new(AtomicBool::new(false)),
            udp_sockets: Vec::new(),
        };
        for (udp, tcp) in sockets {
            let addr = handle.local_addrs[handle.udp_sockets.len()];
            for i in 0..readers {
                let socket = udp.try_clone().map_err(|source| DnsError::Bind {
                    proto: "udp",
                    addr,
                    source,
                })?;
                let handler = handle.handler.clone();
                let (runtime, stop) = (runtime.clone(), handle.stop.clone());
                std::thread::Builder::new()
                    .name(format!("dns-udp-{i}"))
                    .spawn(move || serve_udp_blocking(socket, handler, runtime, stop))
                    .map_err(|e| DnsError::Config(format!("spawning a UDP reader: {e}")))?;
            }
            handle.udp_sockets.push(udp);
            handle.tasks.push(tokio::spawn(serve_tcp(tcp, handle.handler.clone())));
        }
        tracing::info!(addrs = ?handle.local_addrs, domain = %config.cluster_domain, "cluster DNS serving");
        Ok(handle)
    }
}

/// The running server: feed it Kubernetes objects; dropping it stops it.
///
/// Its data changes only through [`apply`](Self::apply) and [`replace_all`](Self::replace_all):
/// losing the API server changes nothing, so the node keeps answering from what it last knew.
pub struct DnsHandle {
    handler: Arc<Handler>,
    local_addrs: Vec<SocketAddr>,
    tasks: Vec<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    udp_sockets: Vec<UdpSocket>,
}

impl DnsHandle {
    /// Applies one watch event; the next query sees it.
    pub fn apply(&self, update: Update) {
        self.write_zone(|zone| zone.apply(update));
    }

    /// Replaces all cluster data with a fresh list (after a watch re-list), atomically.
    pub fn replace_all(&self, snapshot: Snapshot) {
        self.write_zone(|zone| zone.replace_all(snapshot));
    }

    /// The addresses actually bound (ports resolved when 0 was asked for).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local_addrs
    }

    /// The server's counters.
    pub fn stats(&self) -> DnsStats {
        self.handler.stats.snapshot()
    }

    /// Stops serving (also done on drop).
    pub fn shutdown(self) {}

    fn write_zone(&self, change: impl FnOnce(&mut ClusterZone)) {
        let mut zone = self.handler.zone.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        change(&mut zone);
    }
}

impl Drop for DnsHandle {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        self.stop.store(true, Ordering::Relaxed);
        for socket in &self.udp_sockets {
            // Wakes the readers blocked in recv (Linux sets the shutdown flag even on an
            // unconnected UDP socket, though it reports ENOTCONN).
            let _ = socket2::SockRef::from(socket).shutdown(std::net::Shutdown::Read);
        }
    }
}

/// A UDP socket and a TCP listener on the same address (the same port, when 0 was asked for).
fn bind_pair(addr: SocketAddr) -> Result<(UdpSocket, TcpListener), DnsError> {
    if addr.port() != 0 {
        return Ok((bind_udp(addr)?, bind_tcp(addr)?));
    }
    let mut last = None;
    for _ in 0..PORT_ATTEMPTS {
        let udp = bind_udp(addr)?;
        let bound =
            udp.local_addr().map_err(|source| DnsError::Bind { proto: "udp", addr, source })?;
        match bind_tcp(bound) {
            Ok(tcp) => return Ok((udp, tcp)),
            // Someone holds this port over TCP: try another one.
            Err(error) => last = Some(error),
        }
    }
    Err(last.unwrap_or_else(|| DnsError::Config("no free port".into())))
}

fn socket(addr: SocketAddr, kind: Type, protocol: Protocol) -> std::io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), kind, Some(protocol))?;
    // Best effort: without it, binding needs the address to be configured already.
    let _ = match addr {
        SocketAddr::V4(_) => socket.set_freebind_v4(true),
        SocketAddr::V6(_) => socket.set_freebind_v6(true),
    };
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    Ok(socket)
}

/// A blocking UDP socket whose reads time out now and then, so reader threads notice a stop.
fn bind_udp(addr: SocketAddr) -> Result<UdpSocket, DnsError> {
    let bind = || -> std::io::Result<UdpSocket> {
        let socket = socket(addr, Type::DGRAM, Protocol::UDP)?;
        socket.bind(&SockAddr::from(addr))?;
        socket.set_read_timeout(Some(UDP_STOP_CHECK))?;
        Ok(socket.into())
    };
    bind().map_err(|source| DnsError::Bind { proto: "udp", addr, source })
}

fn bind_tcp(addr: SocketAddr) -> Result<TcpListener, DnsError> {
    let bind = || -> std::io::Result<TcpListener> {
        let socket = socket(addr, Type::STREAM, Protocol::TCP)?;
        socket.set_reuse_address(true)?;
        socket.bind(&SockAddr::from(addr))?;
        socket.listen(1024)?;
        socket.set_nonblocking(true)?;
        TcpListener::from_std(socket.into())
    };
    bind().map_err(|source| DnsError::Bind { proto: "tcp", addr, source })
}

/// A UDP reader thread: answers in place, hands upstream work to the runtime, and stops when
/// `stop` is set (the handle's drop also shuts the socket down to wake it).
fn serve_udp_blocking(
    socket: UdpSocket,
    handler: Arc<Handler>,
    runtime: tokio::runtime::Handle,
    stop: Arc<AtomicBool>,
) {
    let socket = Arc::new(socket);
    let mut received = Received::new();
    let mut replies = Vec::with_capacity(BATCH);
    while !stop.load(Ordering::Relaxed) {
        if let Err(error) = recv_batch(&socket, &mut received) {
            let quiet = matches!(
                error.kind(),
                std::io::ErrorKind::WouldBlock
                    | std::io::ErrorKind::TimedOut
                    | std::io::ErrorKind::Interrupted
            );
            if !quiet {
                // ICMP errors from earlier sends surface here; they concern one peer only.
                tracing::debug!(%error, "udp receive");
            }
            continue;
        }
        for i in 0..received.count {
            let Some(peer) = received.peers[i] else { continue };
            let packet = &received.bufs[i][..received.lens[i]];
            match handler.step(packet, Transport::Udp) {
                Step::Reply(bytes) => replies.push((bytes, peer)),
                Step::Drop => {}
                Step::Resolve(pending) => {
                    let (socket, handler) = (socket.clone(), handler.clone());
                    runtime.spawn(async move {
                        let bytes = handler.resolve(pending).await;
                        if let Err(error) = socket.send_to(&bytes, peer) {
                            tracing::debug!(%peer, %error, "udp send");
                        }
                    });
                }
            }
        }
        send_batch(&socket, &replies);
        replies.clear();
    }
}

async fn serve_tcp(listener: TcpListener, handler: Arc<Handler>) {
    let slots = Arc::new(Semaphore::new(MAX_TCP_CLIENTS));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else { return };
        match listener.accept().await {
            Ok((stream, peer)) => {
                let handler = handler.clone();
                tokio::spawn(async move {
                    if let Err(error) = serve_tcp_client(stream, &handler).await {
                        tracing::debug!(%peer, %error, "tcp client");
                    }
                    drop(permit);
                });
            }
            Err(error) => {
                tracing::debug!(%error, "tcp accept");
                // Out of file descriptors, most likely: give others a moment to close theirs.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Serves length-prefixed queries on one connection, in order, until it closes or idles.
async fn serve_tcp_client(mut stream: TcpStream, handler: &Handler) -> std::io::Result<()> {
    loop {
        let len = match tokio::time::timeout(TCP_IDLE, stream.read_u16()).await {
            Ok(Ok(len)) => len,
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Ok(Err(e)) => return Err(e),
            Err(_) => return Ok(()),
        };
        let mut packet = vec![0u8; usize::from(len)];
        tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut packet))
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
        let bytes = match handler.step(&packet, Transport::Tcp) {
            Step::Reply(bytes) => bytes,
            Step::Drop => continue,
            Step::Resolve(pending) => handler.resolve(pending).await,
        };
        let Ok(len) = u16::try_from(bytes.len()) else { continue };
        let mut framed = Vec::with_capacity(bytes.len() + 2);
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(&bytes);
        stream.write_all(&framed).await?;
    }
}
