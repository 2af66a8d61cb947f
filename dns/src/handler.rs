//! From request bytes to response bytes: parsing, the zone or the forwarder, flags, truncation.
//!
//! Split in two so the UDP loop never spawns a task for the common case: [`Handler::step`] is
//! synchronous and answers everything it can (cluster names, cache hits, errors) at once;
//! only a question that needs an upstream comes back as [`Step::Resolve`], for
//! [`Handler::resolve`] to finish asynchronously.

use std::sync::RwLock;

use hickory_proto::op::{Edns, Message, MessageType, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::{DNSClass, RecordType};

use crate::cache::{CacheKey, Resolved};
use crate::forward::{Forwarder, EDNS_PAYLOAD};
use crate::stats::Stats;
use crate::wire;
use crate::zone::{Answer, ClusterZone, Lookup};

/// The largest UDP answer for a client that did not send EDNS (RFC 1035).
const CLASSIC_UDP_LIMIT: usize = 512;

/// How the query arrived: it decides the size limit of the answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Transport {
    /// UDP: answers larger than the client's buffer are truncated (TC) and retried over TCP.
    Udp,
    /// TCP: up to 64 KiB.
    Tcp,
}

/// What to do with a packet.
pub(crate) enum Step {
    /// Send these bytes back.
    Reply(Vec<u8>),
    /// Send nothing (not a query, or not even a DNS header).
    Drop,
    /// Needs an upstream: hand to [`Handler::resolve`].
    Resolve(Box<Pending>),
}

/// A question waiting for the forwarder, with what is needed to finish the response.
pub(crate) struct Pending {
    response: Message,
    /// A partial authoritative answer (an ExternalName CNAME) the upstream answer completes.
    prefix: Option<Answer>,
    key: CacheKey,
    checking_disabled: bool,
    limit: usize,
}

/// The query processor shared by every socket loop.
#[derive(Debug)]
pub(crate) struct Handler {
    pub zone: RwLock<ClusterZone>,
    pub forwarder: Forwarder,
    pub stats: Stats,
}

impl Handler {
    /// Processes one packet as far as possible without waiting.
    pub(crate) fn step(&self, packet: &[u8], transport: Transport) -> Step {
        self.stats.queries.bump();
        let request = match Message::from_vec(packet) {
            Ok(request) => request,
            Err(_) => {
                self.stats.malformed.bump();
                return header_error(packet, ResponseCode::FormErr);
            }
        };
        if request.metadata.message_type != MessageType::Query {
            return Step::Drop;
        }
        let mut response = Message::response(request.metadata.id, request.metadata.op_code);
        response.metadata = Metadata::response_from_request(&request.metadata);
        response.metadata.recursion_available = self.forwarder.has_upstreams();
        response.queries = request.queries.clone();
        let limit = match (transport, &request.edns) {
            (Transport::Tcp, _) => usize::from(u16::MAX),
            (Transport::Udp, None) => CLASSIC_UDP_LIMIT,
            (Transport::Udp, Some(edns)) => {
                usize::from(edns.max_payload().min(EDNS_PAYLOAD)).max(CLASSIC_UDP_LIMIT)
            }
        };
        if let Some(client_edns) = &request.edns {
            let mut edns = Edns::new();
            edns.set_max_payload(EDNS_PAYLOAD);
            edns.set_dnssec_ok(client_edns.flags().dnssec_ok);
            if client_edns.version() > 0 {
                // RFC 6891: we speak EDNS version 0 only.
                response.set_edns(edns);
                return self.reply(response, ResponseCode::BADVERS, limit);
            }
            response.set_edns(edns);
        }
        if request.metadata.op_code != OpCode::Query {
            return self.reply(response, ResponseCode::NotImp, limit);
        }
        let [query] = request.queries.as_slice() else {
            self.stats.malformed.bump();
            return self.reply(response, ResponseCode::FormErr, limit);
        };
        if matches!(query.query_type(), RecordType::AXFR | RecordType::IXFR) {
            return self.reply(response, ResponseCode::Refused, limit);
        }
        let key = CacheKey {
            name: query.name().clone(),
            qtype: query.query_type(),
            qclass: query.query_class(),
            dnssec_ok: request.edns.as_ref().is_some_and(|e| e.flags().dnssec_ok),
        };
        let checking_disabled = request.metadata.checking_disabled;
        let lookup = if query.query_class() == DNSClass::IN {
            self.read_zone().lookup(query.name(), query.query_type())
        } else {
            Lookup::Forward
        };
        match lookup {
            Lookup::Local(answer) => {
                self.stats.authoritative.bump();
                response.metadata.authoritative = true;
                match answer.chase.clone() {
                    Some(target) => {
                        let key = CacheKey { name: target, ..key };
                        self.resolve_or_pend(response, Some(answer), key, checking_disabled, limit)
                    }
                    None => {
                        response.metadata.response_code = answer.rcode;
                        let opt = response.edns.as_ref().map(|e| wire::Opt {
                            payload: EDNS_PAYLOAD,
                            dnssec_ok: e.flags().dnssec_ok,
                        });
                        if let Some(encoded) =
                            wire::encode_answer(packet, &response.metadata, &answer, opt, limit)
                        {
                            if encoded.truncated {
                                self.stats.truncated.bump();
                            }
                            return Step::Reply(encoded.bytes);
                        }
                        let rcode = answer.rcode;
                        fill_local(&mut response, answer);
                        self.reply(response, rcode, limit)
                    }
                }
            }
            Lookup::Forward => self.resolve_or_pend(response, None, key, checking_disabled, limit),
        }
    }

    /// Finishes a [`Step::Resolve`]: asks upstream and encodes the response.
    pub(crate) async fn resolve(&self, pending: Box<Pending>) -> Vec<u8> {
        let Pending { response, prefix, key, checking_disabled, limit } = *pending;
        match self.forwarder.resolve(&key, checking_disabled, &self.stats).await {
            Ok(resolved) => self.finish(response, prefix, resolved, limit),
            Err(error) => {
                tracing::debug!(name = %key.name, %error, "forwarding failed");
                match prefix {
                    // The CNAME alone is still a true answer; the client may chase it itself.
                    Some(answer) => {
                        let mut response = response;
                        fill_local(&mut response, answer);
                        self.encode(response, limit)
                    }
                    None => {
                        let mut response = response;
                        response.metadata.response_code = ResponseCode::ServFail;
                        self.encode(response, limit)
                    }
                }
            }
        }
    }

    fn resolve_or_pend(
        &self,
        response: Message,
        prefix: Option<Answer>,
        key: CacheKey,
        checking_disabled: bool,
        limit: usize,
    ) -> Step {
        if !self.forwarder.has_upstreams() {
            return match prefix {
                Some(answer) => {
                    let mut response = response;
                    fill_local(&mut response, answer);
                    Step::Reply(self.encode(response, limit))
                }
                None => self.reply(response, ResponseCode::Refused, limit),
            };
        }
        match self.forwarder.cached(&key, &self.stats) {
            Some(resolved) => Step::Reply(self.finish(response, prefix, resolved, limit)),
            None => {
                Step::Resolve(Box::new(Pending { response, prefix, key, checking_disabled, limit }))
            }
        }
    }

    /// Builds the response from an upstream answer, after any local CNAME.
    fn finish(
        &self,
        mut response: Message,
        prefix: Option<Answer>,
        resolved: Resolved,
        limit: usize,
    ) -> Vec<u8> {
        if let Some(answer) = prefix {
            response.answers.extend(answer.answers);
        }
        response.metadata.response_code = resolved.rcode;
        response.metadata.authentic_data = resolved.authentic_data && !response.authoritative;
        response.answers.extend(resolved.answers);
        response.authorities = resolved.authorities;
        response.additionals = resolved.additionals;
        self.encode(response, limit)
    }

    fn reply(&self, mut response: Message, rcode: ResponseCode, limit: usize) -> Step {
        response.metadata.response_code = rcode;
        if let Some(edns) = response.edns.as_mut() {
            edns.set_rcode_high(rcode.high());
        }
        Step::Reply(self.encode(response, limit))
    }

    /// Encodes `response`, truncating it (TC, empty sections) if it exceeds `limit` bytes.
    fn encode(&self, mut response: Message, limit: usize) -> Vec<u8> {
        if let Some(edns) = response.edns.as_mut() {
            edns.set_rcode_high(response.metadata.response_code.high());
        }
        match response.to_vec() {
            Ok(bytes) if bytes.len() <= limit => bytes,
            Ok(_) => {
                self.stats.truncated.bump();
                response.truncate().to_vec().unwrap_or_default()
            }
            Err(error) => {
                tracing::warn!(%error, "could not encode a response");
                let mut failure = Message::response(response.metadata.id, response.op_code);
                failure.metadata = response.metadata;
                failure.queries = response.queries;
                failure.metadata.response_code = ResponseCode::ServFail;
                failure.to_vec().unwrap_or_default()
            }
        }
    }

    fn read_zone(&self) -> std::sync::RwLockReadGuard<'_, ClusterZone> {
        // Zone updates do not panic half-way; a poisoned lock still holds a usable zone.
        self.zone.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Copies an authoritative answer's sections into `response`.
fn fill_local(response: &mut Message, answer: Answer) {
    response.metadata.response_code = answer.rcode;
    response.answers.extend(answer.answers);
    response.authorities.extend(answer.authorities);
    response.additionals.extend(answer.additionals);
}

/// An error reply built from the raw header, for packets too broken to parse whole.
fn header_error(packet: &[u8], rcode: ResponseCode) -> Step {
    // The ID and the QR/opcode byte are all we trust; a response (QR set) is never answered.
    let (Some(id), Some(flags)) = (packet.get(..2), packet.get(2)) else { return Step::Drop };
    if flags & 0x80 != 0 {
        return Step::Drop;
    }
    let id = u16::from_be_bytes([id[0], id[1]]);
    let op_code = OpCode::from_u8((flags >> 3) & 0x0f);
    let message = Message::error_msg(id, op_code, rcode);
    message.to_vec().map(Step::Reply).unwrap_or(Step::Drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::Query;
    use hickory_proto::rr::Name;
    use std::time::Duration;

    fn handler(upstreams: Vec<std::net::SocketAddr>) -> Handler {
        let cache = crate::cache::ResponseCache::new(10, Duration::ZERO);
        Handler {
            zone: RwLock::new(ClusterZone::new("cluster.local", 5, &[]).unwrap()),
            forwarder: Forwarder::new(upstreams, Duration::from_secs(1), cache),
            stats: Stats::default(),
        }
    }

    fn question(name: &str, qtype: RecordType) -> Message {
        let mut message = Message::query();
        message.metadata.recursion_desired = true;
        message.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
        message
    }

    fn reply(step: Step) -> Message {
        match step {
            Step::Reply(bytes) => Message::from_vec(&bytes).unwrap(),
            Step::Drop => panic!("dropped"),
            Step::Resolve(_) => panic!("forwarded"),
        }
    }

    #[test]
    fn garbage_gets_formerr_and_runts_are_dropped() {
        let handler = handler(vec![]);
        let answer = reply(handler.step(&[0x12, 0x34, 0x01, 0xff, 0xff], Transport::Udp));
        assert_eq!(answer.metadata.id, 0x1234);
        assert_eq!(answer.metadata.response_code, ResponseCode::FormErr);
        assert!(matches!(handler.step(&[0x12], Transport::Udp), Step::Drop));
        assert_eq!(handler.stats.snapshot().malformed, 2);
    }

    #[test]
    fn responses_are_never_answered() {
        let handler = handler(vec![]);
        let mut message = question("a.cluster.local.", RecordType::A);
        message.metadata.message_type = MessageType::Response;
        let step = handler.step(&message.to_vec().unwrap(), Transport::Udp);
        assert!(matches!(step, Step::Drop));
    }

    #[test]
    fn two_questions_are_a_format_error() {
        let handler = handler(vec![]);
        let mut message = question("a.cluster.local.", RecordType::A);
        message
            .add_query(Query::query(Name::from_ascii("b.cluster.local.").unwrap(), RecordType::A));
        let answer = reply(handler.step(&message.to_vec().unwrap(), Transport::Udp));
        assert_eq!(answer.metadata.response_code, ResponseCode::FormErr);
    }

    #[test]
    fn unknown_edns_versions_get_badvers() {
        let handler = handler(vec![]);
        let mut message = question("a.cluster.local.", RecordType::A);
        let mut edns = Edns::new();
        edns.set_version(1);
        message.set_edns(edns);
        let answer = reply(handler.step(&message.to_vec().unwrap(), Transport::Udp));
        // 16 on the wire (hickory decodes it as BADSIG, which shares the number).
        let rcode = answer.metadata.response_code;
        assert_eq!((rcode.high(), rcode.low()), (1, 0));
    }

    #[test]
    fn recursion_is_available_only_with_upstreams() {
        let without = handler(vec![]);
        let bytes = question("example.test.", RecordType::A).to_vec().unwrap();
        let answer = reply(without.step(&bytes, Transport::Udp));
        assert!(!answer.metadata.recursion_available);
        assert_eq!(answer.metadata.response_code, ResponseCode::Refused);
        let with = handler(vec!["127.0.0.1:9".parse().unwrap()]);
        assert!(matches!(with.step(&bytes, Transport::Udp), Step::Resolve(_)));
        let local = question("x.cluster.local.", RecordType::A).to_vec().unwrap();
        let answer = reply(with.step(&local, Transport::Udp));
        assert!(answer.metadata.recursion_available);
        assert!(answer.metadata.authoritative);
        assert_eq!(answer.metadata.response_code, ResponseCode::NXDomain);
    }

    #[test]
    fn zone_transfers_are_refused() {
        let handler = handler(vec![]);
        let bytes = question("cluster.local.", RecordType::AXFR).to_vec().unwrap();
        let answer = reply(handler.step(&bytes, Transport::Tcp));
        assert_eq!(answer.metadata.response_code, ResponseCode::Refused);
    }
}
