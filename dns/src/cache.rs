//! The forwarder's response cache: upstream answers kept for their TTL, and past it for a while
//! as a last resort (RFC 8767 "serve stale"), so a node that loses its uplink keeps resolving
//! the names its pods were using.
//!
//! Eviction is generational, an O(1) approximation of LRU: entries live in `current` until it is
//! half the capacity, then the whole generation becomes `previous`, from which a hit is promoted
//! back. What has not been asked for during two generations is dropped. Time is passed in, so
//! the cache is tested without sleeping.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};

/// Positive answers are kept at most this long, whatever their TTL (as CoreDNS's default).
const MAX_TTL: u32 = 3600;
/// Negative answers (NXDOMAIN, NODATA) are kept at most this long.
const MAX_NEGATIVE_TTL: u32 = 300;
/// The TTL given to a stale answer (RFC 8767 recommends 30 s).
pub(crate) const STALE_TTL: u32 = 30;

/// What a cached answer is filed under.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct CacheKey {
    /// The question name (lookups are case-insensitive: `Name`'s `Eq` and `Hash` are).
    pub name: Name,
    /// The question type.
    pub qtype: RecordType,
    /// The question class.
    pub qclass: DNSClass,
    /// The DNSSEC OK bit: answers with and without signatures differ.
    pub dnssec_ok: bool,
}

/// The parts of an upstream response that are replayed to clients.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Resolved {
    /// The upstream's response code.
    pub rcode: ResponseCode,
    /// Answer section.
    pub answers: Vec<Record>,
    /// Authority section.
    pub authorities: Vec<Record>,
    /// Additional section (without the OPT pseudo-record, which is per hop).
    pub additionals: Vec<Record>,
    /// The upstream's AD bit.
    pub authentic_data: bool,
}

impl Resolved {
    /// The replayable parts of `message`.
    pub(crate) fn from_message(message: Message) -> Self {
        Resolved {
            rcode: message.metadata.response_code,
            authentic_data: message.metadata.authentic_data,
            answers: message.answers,
            authorities: message.authorities,
            additionals: message.additionals,
        }
    }

    /// How long this answer may be cached, in seconds; None if it must not be.
    fn cache_ttl(&self) -> Option<u32> {
        match self.rcode {
            ResponseCode::NoError if !self.answers.is_empty() => {
                let ttl = self.answers.iter().map(|r| r.ttl).min()?;
                (ttl > 0).then_some(ttl.min(MAX_TTL))
            }
            ResponseCode::NoError | ResponseCode::NXDomain => {
                // RFC 2308: the negative TTL is the SOA's minimum, bounded by the SOA's own TTL.
                let ttl = self.authorities.iter().find_map(|r| match &r.data {
                    RData::SOA(soa) => Some(soa.minimum.min(r.ttl)),
                    _ => None,
                })?;
                (ttl > 0).then_some(ttl.min(MAX_NEGATIVE_TTL))
            }
            _ => None,
        }
    }

    /// A copy with every TTL lowered by `elapsed` seconds (never below `floor`).
    fn aged(&self, elapsed: u32, floor: u32) -> Self {
        let age = |records: &[Record]| -> Vec<Record> {
            records
                .iter()
                .map(|r| {
                    let mut r = r.clone();
                    r.ttl = r.ttl.saturating_sub(elapsed).max(floor);
                    r
                })
                .collect()
        };
        Resolved {
            rcode: self.rcode,
            answers: age(&self.answers),
            authorities: age(&self.authorities),
            additionals: age(&self.additionals),
            authentic_data: self.authentic_data,
        }
    }
}

/// One cached answer and its timing.
#[derive(Debug)]
struct Entry {
    resolved: Resolved,
    stored: Instant,
    ttl: u32,
}

impl Entry {
    fn age(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.stored)
    }

    fn is_fresh(&self, now: Instant) -> bool {
        self.age(now) < Duration::from_secs(self.ttl.into())
    }
}

/// A bounded cache of upstream answers.
#[derive(Debug)]
pub(crate) struct ResponseCache {
    generation_size: usize,
    serve_stale_for: Duration,
    current: HashMap<CacheKey, Entry>,
    previous: HashMap<CacheKey, Entry>,
}

impl ResponseCache {
    /// A cache of about `capacity` answers that may serve an expired one for `serve_stale_for`.
    pub(crate) fn new(capacity: usize, serve_stale_for: Duration) -> Self {
        ResponseCache {
            generation_size: (capacity / 2).max(1),
            serve_stale_for,
            current: HashMap::new(),
            previous: HashMap::new(),
        }
    }

    /// How many answers are held.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.current.len() + self.previous.len()
    }

    /// A fresh answer for `key`, with TTLs counting down.
    pub(crate) fn get(&mut self, key: &CacheKey, now: Instant) -> Option<Resolved> {
        let entry = self.entry(key)?;
        if !entry.is_fresh(now) {
            return None;
        }
        let elapsed = u32::try_from(entry.age(now).as_secs()).unwrap_or(u32::MAX);
        Some(entry.resolved.aged(elapsed, 0))
    }

    /// An expired answer still within the serve-stale window, with short TTLs.
    pub(crate) fn get_stale(&mut self, key: &CacheKey, now: Instant) -> Option<Resolved> {
        let window = self.serve_stale_for;
        let entry = self.entry(key)?;
        let limit = Duration::from_secs(entry.ttl.into()) + window;
        if entry.age(now) > limit {
            return None;
        }
        Some(entry.resolved.aged(u32::MAX, STALE_TTL))
    }

    /// Stores `resolved` if its response code and TTLs allow caching.
    pub(crate) fn insert(&mut self, key: CacheKey, resolved: Resolved, now: Instant) {
        let Some(ttl) = resolved.cache_ttl() else { return };
        self.make_room();
        self.previous.remove(&key);
        self.current.insert(key, Entry { resolved, stored: now, ttl });
    }

    /// The entry for `key`, promoted to the current generation.
    fn entry(&mut self, key: &CacheKey) -> Option<&Entry> {
        if !self.current.contains_key(key) {
            let entry = self.previous.remove(key)?;
            self.make_room();
            self.current.insert(key.clone(), entry);
        }
        self.current.get(key)
    }

    fn make_room(&mut self) {
        if self.current.len() >= self.generation_size {
            self.previous = std::mem::take(&mut self.current);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::rdata::{A, SOA};

    fn key(name: &str) -> CacheKey {
        CacheKey {
            name: Name::from_ascii(name).unwrap(),
            qtype: RecordType::A,
            qclass: DNSClass::IN,
            dnssec_ok: false,
        }
    }

    fn answer(ttl: u32) -> Resolved {
        let record = Record::from_rdata(
            Name::from_ascii("a.example.").unwrap(),
            ttl,
            RData::A(A::new(192, 0, 2, 1)),
        );
        Resolved {
            rcode: ResponseCode::NoError,
            answers: vec![record],
            authorities: vec![],
            additionals: vec![],
            authentic_data: false,
        }
    }

    fn nxdomain(soa_ttl: u32, minimum: u32) -> Resolved {
        let name = Name::from_ascii("example.").unwrap();
        let soa = SOA::new(name.clone(), name.clone(), 1, 1, 1, 1, minimum);
        Resolved {
            rcode: ResponseCode::NXDomain,
            answers: vec![],
            authorities: vec![Record::from_rdata(name, soa_ttl, RData::SOA(soa))],
            additionals: vec![],
            authentic_data: false,
        }
    }

    #[test]
    fn answers_count_down_and_expire() {
        let mut cache = ResponseCache::new(10, Duration::ZERO);
        let t0 = Instant::now();
        cache.insert(key("a.example."), answer(60), t0);
        let later = cache.get(&key("A.EXAMPLE."), t0 + Duration::from_secs(20)).unwrap();
        assert_eq!(later.answers[0].ttl, 40);
        assert!(cache.get(&key("a.example."), t0 + Duration::from_secs(60)).is_none());
    }

    #[test]
    fn stale_answers_are_served_within_the_window_with_a_short_ttl() {
        let mut cache = ResponseCache::new(10, Duration::from_secs(3600));
        let t0 = Instant::now();
        cache.insert(key("a.example."), answer(60), t0);
        let stale = cache.get_stale(&key("a.example."), t0 + Duration::from_secs(600)).unwrap();
        assert_eq!(stale.answers[0].ttl, STALE_TTL);
        assert!(cache.get_stale(&key("a.example."), t0 + Duration::from_secs(3700)).is_none());
    }

    #[test]
    fn negative_answers_use_the_soa_minimum() {
        let mut cache = ResponseCache::new(10, Duration::ZERO);
        let t0 = Instant::now();
        cache.insert(key("nx.example."), nxdomain(900, 30), t0);
        assert!(cache.get(&key("nx.example."), t0 + Duration::from_secs(29)).is_some());
        assert!(cache.get(&key("nx.example."), t0 + Duration::from_secs(31)).is_none());
    }

    #[test]
    fn uncacheable_answers_are_not_stored() {
        let mut cache = ResponseCache::new(10, Duration::ZERO);
        let t0 = Instant::now();
        cache.insert(key("zero.example."), answer(0), t0);
        let mut fail = answer(60);
        fail.rcode = ResponseCode::ServFail;
        cache.insert(key("fail.example."), fail, t0);
        let mut no_soa = nxdomain(60, 60);
        no_soa.authorities.clear();
        cache.insert(key("nosoa.example."), no_soa, t0);
        assert_eq!(cache.len(), 0);
    }

    #[test]
    fn size_stays_bounded_and_recent_entries_survive() {
        let mut cache = ResponseCache::new(10, Duration::ZERO);
        let t0 = Instant::now();
        cache.insert(key("hot.example."), answer(600), t0);
        for i in 0..100 {
            cache.insert(key(&format!("n{i}.example.")), answer(600), t0);
            // keep one name in use: it must survive every generation change
            assert!(cache.get(&key("hot.example."), t0).is_some(), "lost at {i}");
            assert!(cache.len() <= 10);
        }
    }
}
