//! Counters of what the server did, for the agent's `/metrics` and for tests.

use std::sync::atomic::{AtomicU64, Ordering};

/// One monotonically increasing counter.
#[derive(Debug, Default)]
pub(crate) struct Counter(AtomicU64);

impl Counter {
    /// Adds one.
    pub(crate) fn bump(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// The live counters, shared by every socket loop.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub queries: Counter,
    pub authoritative: Counter,
    pub cache_hits: Counter,
    pub forwarded: Counter,
    pub upstream_failures: Counter,
    pub stale_answers: Counter,
    pub truncated: Counter,
    pub malformed: Counter,
}

/// A copy of the counters at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DnsStats {
    /// Queries received (UDP and TCP).
    pub queries: u64,
    /// Answered from the cluster zone.
    pub authoritative: u64,
    /// Answered from the forwarder's cache.
    pub cache_hits: u64,
    /// Sent to an upstream resolver.
    pub forwarded: u64,
    /// Forwarded queries that no upstream answered.
    pub upstream_failures: u64,
    /// Of those, answered from an expired cache entry.
    pub stale_answers: u64,
    /// UDP answers sent truncated (TC) for the client to retry over TCP.
    pub truncated: u64,
    /// Packets that were not valid queries.
    pub malformed: u64,
}

impl Stats {
    /// A snapshot of the counters.
    pub(crate) fn snapshot(&self) -> DnsStats {
        DnsStats {
            queries: self.queries.get(),
            authoritative: self.authoritative.get(),
            cache_hits: self.cache_hits.get(),
            forwarded: self.forwarded.get(),
            upstream_failures: self.upstream_failures.get(),
            stale_answers: self.stale_answers.get(),
            truncated: self.truncated.get(),
            malformed: self.malformed.get(),
        }
    }
}
