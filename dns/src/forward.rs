//! Forwarding to the node's upstream resolvers, through the response cache.
//!
//! Each question goes out as a fresh query (random ID, random source port, our own EDNS buffer
//! size) to the upstreams in resolv.conf order, each given `timeout`; a truncated UDP answer is
//! asked again over TCP. Answers are cached per question, so clients with different buffer sizes
//! share them and the server truncates per client. When every upstream fails, an expired answer
//! still in the serve-stale window is better than SERVFAIL on an offline edge site.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, MessageType, Query};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use crate::cache::{CacheKey, Resolved, ResponseCache};
use crate::stats::Stats;

/// With a stale answer at hand, wait no longer than this for the upstreams (RFC 8767's
/// client response timer): stub resolvers give up after about 5 s, and there may be several
/// upstreams to try in turn.
const STALE_DEADLINE: Duration = Duration::from_millis(1800);

/// At most this many questions wait for upstreams at once: each holds a socket, and a flood of
/// random names must not exhaust the agent's file descriptors.
const MAX_IN_FLIGHT: usize = 1024;

/// The EDNS buffer size we advertise (the DNS Flag Day 2020 value: no IP fragmentation).
pub(crate) const EDNS_PAYLOAD: u16 = 1232;

/// Why an upstream exchange failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ForwardError {
    /// No upstream resolvers are configured.
    #[error("no upstream resolvers configured")]
    NoUpstreams,
    /// The upstream did not answer in time.
    #[error("upstream {0} timed out")]
    Timeout(SocketAddr),
    /// A socket operation failed.
    #[error("upstream {upstream}: {source}")]
    Io {
        /// The upstream asked.
        upstream: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The upstream's answer did not parse.
    #[error("upstream {upstream} sent a malformed answer: {reason}")]
    Malformed {
        /// The upstream asked.
        upstream: SocketAddr,
        /// The decoder's complaint.
        reason: String,
    },
    /// Too many questions are already waiting for upstreams.
    #[error("too many upstream queries in flight")]
    Busy,
    /// The upstreams were slower than the deadline for falling back to a stale answer.
    #[error("upstreams slower than the serve-stale deadline")]
    Slow,
    /// Encoding our query failed (a name too long to send).
    #[error("encoding the upstream query: {0}")]
    Encode(String),
}

/// Upstream resolvers behind a cache.
#[derive(Debug)]
pub(crate) struct Forwarder {
    upstreams: Vec<SocketAddr>,
    timeout: Duration,
    cache: Mutex<ResponseCache>,
    in_flight: tokio::sync::Semaphore,
}

impl Forwarder {
    /// A forwarder to `upstreams`, each asked with `timeout`, caching in `cache`.
    pub(crate) fn new(upstreams: Vec<SocketAddr>, timeout: Duration, cache: ResponseCache) -> Self {
        Forwarder {
            upstreams,
            timeout,
            cache: Mutex::new(cache),
            in_flight: tokio::sync::Semaphore::new(MAX_IN_FLIGHT),
        }
    }

    /// Whether there is anyone to forward to (the RA bit says so to clients).
    pub(crate) fn has_upstreams(&self) -> bool {
        !self.upstreams.is_empty()
    }

    /// A cached answer, if fresh (no I/O: the UDP fast path calls this inline).
    pub(crate) fn cached(&self, key: &CacheKey, stats: &Stats) -> Option<Resolved> {
        let hit = self.lock_cache().get(key, Instant::now());
        if hit.is_some() {
            stats.cache_hits.bump();
        }
        hit
    }

    /// The answer to `key`: from the cache, from an upstream, or stale from the cache.
    pub(crate) async fn resolve(
        &self,
        key: &CacheKey,
        checking_disabled: bool,
        stats: &Stats,
    ) -> Result<Resolved, ForwardError> {
        if let Some(hit) = self.cached(key, stats) {
            return Ok(hit);
        }
        stats.forwarded.bump();
        let has_stale = self.lock_cache().get_stale(key, Instant::now()).is_some();
        let permit = self.in_flight.try_acquire();
        let attempt = async {
            match permit {
                Ok(_permit) => self.ask_upstreams(key, checking_disabled).await,
                Err(_) => Err(ForwardError::Busy),
            }
        };
        let result = if has_stale {
            tokio::time::timeout(STALE_DEADLINE, attempt).await.unwrap_or(Err(ForwardError::Slow))
        } else {
            attempt.await
        };
        match result {
            Ok(resolved) => {
                self.lock_cache().insert(key.clone(), resolved.clone(), Instant::now());
                Ok(resolved)
            }
            Err(error) => {
                stats.upstream_failures.bump();
                if let Some(stale) = self.lock_cache().get_stale(key, Instant::now()) {
                    stats.stale_answers.bump();
                    tracing::debug!(name = %key.name, %error, "upstreams failed: serving stale");
                    return Ok(stale);
                }
                Err(error)
            }
        }
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, ResponseCache> {
        // A panic while holding the lock cannot leave the cache inconsistent in a harmful way.
        self.cache.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Tries each upstream in order; the last error if all fail.
    async fn ask_upstreams(
        &self,
        key: &CacheKey,
        checking_disabled: bool,
    ) -> Result<Resolved, ForwardError> {
        let mut last = ForwardError::NoUpstreams;
        for upstream in &self.upstreams {
            let mut query = Message::query();
            query.metadata.recursion_desired = true;
            query.metadata.checking_disabled = checking_disabled;
            let mut q = Query::query(key.name.clone(), key.qtype);
            q.set_query_class(key.qclass);
            query.add_query(q);
            let mut edns = Edns::new();
            edns.set_max_payload(EDNS_PAYLOAD);
            edns.set_dnssec_ok(key.dnssec_ok);
            query.set_edns(edns);
            match exchange(*upstream, &query, self.timeout).await {
                Ok(message) => return Ok(Resolved::from_message(message)),
                Err(error) => {
                    tracing::debug!(%error, "upstream exchange failed");
                    last = error;
                }
            }
        }
        Err(last)
    }
}

/// One query to one upstream: UDP, then TCP if the answer was truncated.
async fn exchange(
    upstream: SocketAddr,
    query: &Message,
    timeout: Duration,
) -> Result<Message, ForwardError> {
    let bytes = query.to_vec().map_err(|e| ForwardError::Encode(e.to_string()))?;
    let answer = tokio::time::timeout(timeout, exchange_udp(upstream, query, &bytes))
        .await
        .map_err(|_| ForwardError::Timeout(upstream))??;
    if !answer.metadata.truncation {
        return Ok(answer);
    }
    tokio::time::timeout(timeout, exchange_tcp(upstream, query, &bytes))
        .await
        .map_err(|_| ForwardError::Timeout(upstream))?
}

/// Whether `answer` answers `query` (same ID and question): anything else is ignored, which
/// is what stops a spoofed packet from being cached.
fn answers(query: &Message, answer: &Message) -> bool {
    answer.metadata.id == query.metadata.id
        && answer.metadata.message_type == MessageType::Response
        && answer.queries == query.queries
}

async fn exchange_udp(
    upstream: SocketAddr,
    query: &Message,
    bytes: &[u8],
) -> Result<Message, ForwardError> {
    let io = |source| ForwardError::Io { upstream, source };
    let local: IpAddr = match upstream {
        SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        SocketAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    };
    let socket = UdpSocket::bind((local, 0)).await.map_err(io)?;
    socket.connect(upstream).await.map_err(io)?;
    socket.send(bytes).await.map_err(io)?;
    let mut buf = vec![0u8; 65535];
    loop {
        let len = socket.recv(&mut buf).await.map_err(io)?;
        match Message::from_vec(&buf[..len]) {
            Ok(answer) if answers(query, &answer) => return Ok(answer),
            Ok(_) => tracing::debug!(%upstream, "ignoring an answer to another question"),
            Err(e) => tracing::debug!(%upstream, error = %e, "ignoring a malformed answer"),
        }
    }
}

async fn exchange_tcp(
    upstream: SocketAddr,
    query: &Message,
    bytes: &[u8],
) -> Result<Message, ForwardError> {
    let io = |source| ForwardError::Io { upstream, source };
    let mut stream = TcpStream::connect(upstream).await.map_err(io)?;
    let len = u16::try_from(bytes.len()).map_err(|_| ForwardError::Encode("too long".into()))?;
    let mut framed = Vec::with_capacity(bytes.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(bytes);
    stream.write_all(&framed).await.map_err(io)?;
    let len = stream.read_u16().await.map_err(io)?;
    let mut buf = vec![0u8; usize::from(len)];
    stream.read_exact(&mut buf).await.map_err(io)?;
    let answer = Message::from_vec(&buf)
        .map_err(|e| ForwardError::Malformed { upstream, reason: e.to_string() })?;
    if !answers(query, &answer) {
        return Err(ForwardError::Malformed {
            upstream,
            reason: "answer to another question".into(),
        });
    }
    Ok(answer)
}
