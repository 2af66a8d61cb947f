//! A direct encoder for authoritative answers: the hot path of a cluster DNS.
//!
//! hickory's general encoder spends most of a local answer's CPU on name compression
//! bookkeeping. Our answers have a fixed shape, so this writes them straight: the request's
//! header and question bytes reused, every owner name that is a suffix of the question name
//! written as a pointer into the question (RFC 1035 compression), other names in full (always
//! allowed; and required for SRV targets by RFC 2782). Record types the zone never produces
//! make it give up (None), and the caller falls back to hickory.

use hickory_proto::op::{Metadata, ResponseCode};
use hickory_proto::rr::{Name, RData, Record};

use crate::zone::Answer;

/// Size of a DNS header.
const HEADER: usize = 12;
/// Size of an OPT pseudo-record without options.
const OPT_LEN: usize = 11;

/// The EDNS part of a response, if the client sent EDNS.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Opt {
    /// The buffer size we advertise.
    pub payload: u16,
    /// The DO bit, echoed.
    pub dnssec_ok: bool,
}

/// An encoded response and whether it had to be truncated.
pub(crate) struct Encoded {
    pub bytes: Vec<u8>,
    pub truncated: bool,
}

/// The question name's labels: their offsets in the request, and the name's end.
struct Question<'a> {
    packet: &'a [u8],
    /// Offset of each label's length byte, at most 127 labels in 255 bytes.
    label_offsets: Vec<u16>,
    /// Offset just past the question (name, type, class).
    end: usize,
}

impl<'a> Question<'a> {
    /// Walks the request's first question; None if it is compressed or malformed.
    fn parse(packet: &'a [u8]) -> Option<Self> {
        let mut offset = HEADER;
        let mut label_offsets = Vec::with_capacity(8);
        loop {
            let len = usize::from(*packet.get(offset)?);
            if len == 0 {
                break;
            }
            if len > 63 {
                return None; // a pointer or an extended label type: leave it to hickory
            }
            label_offsets.push(u16::try_from(offset).ok()?);
            offset += 1 + len;
        }
        let end = offset + 1 + 4;
        (packet.len() >= end).then_some(Question { packet, label_offsets, end })
    }

    /// The label at `index`.
    fn label(&self, index: usize) -> &[u8] {
        let offset = usize::from(self.label_offsets[index]);
        let len = usize::from(self.packet[offset]);
        &self.packet[offset + 1..offset + 1 + len]
    }

    /// Where `name` starts in the question, if it is a suffix of the question name.
    fn suffix_offset(&self, name: &Name) -> Option<u16> {
        let count = name.iter().count();
        let total = self.label_offsets.len();
        if count > total || !name.is_fqdn() {
            return None;
        }
        let first = total - count;
        let same =
            name.iter().enumerate().all(|(i, l)| l.eq_ignore_ascii_case(self.label(first + i)));
        if !same {
            return None;
        }
        // None for the root: it has no label to point at
        self.label_offsets.get(first).copied()
    }
}

/// Encodes an authoritative answer to `request`, or None to leave it to hickory.
pub(crate) fn encode_answer(
    request: &[u8],
    metadata: &Metadata,
    answer: &Answer,
    opt: Option<Opt>,
    limit: usize,
) -> Option<Encoded> {
    let question = Question::parse(request)?;
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(&request[..question.end]);
    let mut counts = [0u16; 3];
    for (section, records) in
        [&answer.answers, &answer.authorities, &answer.additionals].into_iter().enumerate()
    {
        for record in records {
            write_record(&mut out, &question, record)?;
            // More records than a header can count: hickory's encoder reports the error.
            counts[section] = counts[section].checked_add(1)?;
        }
    }
    let opt_len = if opt.is_some() { OPT_LEN } else { 0 };
    let truncated = out.len() + opt_len > limit;
    if truncated {
        out.truncate(question.end);
        counts = [0; 3];
    }
    let rcode = metadata.response_code;
    if let Some(opt) = opt {
        out.push(0); // root owner
        out.extend_from_slice(&41u16.to_be_bytes());
        out.extend_from_slice(&opt.payload.to_be_bytes());
        out.push(rcode.high());
        out.push(0); // version
        out.extend_from_slice(&(if opt.dnssec_ok { 0x8000u16 } else { 0 }).to_be_bytes());
        out.extend_from_slice(&0u16.to_be_bytes());
    }
    write_header(&mut out, metadata, truncated, counts, opt.is_some(), rcode);
    Some(Encoded { bytes: out, truncated })
}

fn write_header(
    out: &mut [u8],
    metadata: &Metadata,
    truncated: bool,
    counts: [u16; 3],
    has_opt: bool,
    rcode: ResponseCode,
) {
    let mut flags1 = 0x80 | (u8::from(metadata.op_code) << 3);
    flags1 |= u8::from(metadata.authoritative) << 2;
    flags1 |= u8::from(truncated) << 1;
    flags1 |= u8::from(metadata.recursion_desired);
    let mut flags2 = u8::from(metadata.recursion_available) << 7;
    flags2 |= u8::from(metadata.authentic_data) << 5;
    flags2 |= u8::from(metadata.checking_disabled) << 4;
    flags2 |= rcode.low() & 0x0f;
    out[0..2].copy_from_slice(&metadata.id.to_be_bytes());
    out[2] = flags1;
    out[3] = flags2;
    out[4..6].copy_from_slice(&1u16.to_be_bytes());
    out[6..8].copy_from_slice(&counts[0].to_be_bytes());
    out[8..10].copy_from_slice(&counts[1].to_be_bytes());
    out[10..12].copy_from_slice(&counts[2].saturating_add(u16::from(has_opt)).to_be_bytes());
}

/// A name: a pointer into the question when it is a suffix of it, else in full.
fn write_owner(out: &mut Vec<u8>, question: &Question<'_>, name: &Name) {
    match question.suffix_offset(name) {
        Some(offset) => out.extend_from_slice(&(0xC000 | offset).to_be_bytes()),
        None => write_name(out, name),
    }
}

/// A name in full, uncompressed.
fn write_name(out: &mut Vec<u8>, name: &Name) {
    for label in name.iter() {
        out.push(u8::try_from(label.len()).unwrap_or(63));
        out.extend_from_slice(label);
    }
    out.push(0);
}

fn write_record(out: &mut Vec<u8>, question: &Question<'_>, record: &Record) -> Option<()> {
    write_owner(out, question, &record.name);
    out.extend_from_slice(&u16::from(record.record_type()).to_be_bytes());
    out.extend_from_slice(&u16::from(record.dns_class).to_be_bytes());
    out.extend_from_slice(&record.ttl.to_be_bytes());
    let length_at = out.len();
    out.extend_from_slice(&[0, 0]);
    match &record.data {
        RData::A(a) => out.extend_from_slice(&a.0.octets()),
        RData::AAAA(a) => out.extend_from_slice(&a.0.octets()),
        RData::CNAME(n) => write_name(out, &n.0),
        RData::PTR(n) => write_name(out, &n.0),
        RData::NS(n) => write_name(out, &n.0),
        RData::SRV(srv) => {
            out.extend_from_slice(&srv.priority.to_be_bytes());
            out.extend_from_slice(&srv.weight.to_be_bytes());
            out.extend_from_slice(&srv.port.to_be_bytes());
            write_name(out, &srv.target);
        }
        RData::SOA(soa) => {
            write_name(out, &soa.mname);
            write_name(out, &soa.rname);
            out.extend_from_slice(&soa.serial.to_be_bytes());
            out.extend_from_slice(&soa.refresh.to_be_bytes());
            out.extend_from_slice(&soa.retry.to_be_bytes());
            out.extend_from_slice(&soa.expire.to_be_bytes());
            out.extend_from_slice(&soa.minimum.to_be_bytes());
        }
        _ => return None,
    }
    let length = u16::try_from(out.len() - length_at - 2).ok()?;
    out[length_at..length_at + 2].copy_from_slice(&length.to_be_bytes());
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
    use hickory_proto::rr::rdata::{A, PTR, SOA, SRV};
    use hickory_proto::rr::RecordType;

    fn name(text: &str) -> Name {
        Name::from_ascii(text).unwrap()
    }

    fn request(qname: &str, edns: bool) -> Vec<u8> {
        let mut message = Message::query();
        message.metadata.recursion_desired = true;
        message.add_query(Query::query(name(qname), RecordType::SRV));
        if edns {
            message.set_edns(Edns::new());
        }
        message.to_vec().unwrap()
    }

    fn sample() -> Answer {
        let soa = SOA::new(
            name("ns.dns.cluster.local."),
            name("hostmaster.cluster.local."),
            7,
            1,
            2,
            3,
            5,
        );
        Answer {
            rcode: ResponseCode::NoError,
            answers: vec![
                Record::from_rdata(
                    name("_HTTP._tcp.web.prod.svc.cluster.local."),
                    5,
                    RData::SRV(SRV::new(0, 100, 80, name("web.prod.svc.cluster.local."))),
                ),
                Record::from_rdata(name("x.example."), 5, RData::PTR(PTR(name("y.example.")))),
            ],
            authorities: vec![Record::from_rdata(name("cluster.local."), 5, RData::SOA(soa))],
            additionals: vec![Record::from_rdata(
                name("web.prod.svc.cluster.local."),
                5,
                RData::A(A::new(10, 43, 0, 20)),
            )],
            chase: None,
        }
    }

    fn metadata(request: &[u8]) -> Metadata {
        let parsed = Message::from_vec(request).unwrap();
        let mut metadata = Metadata::response_from_request(&parsed.metadata);
        metadata.authoritative = true;
        metadata.recursion_available = true;
        metadata
    }

    #[test]
    fn round_trips_through_hickory() {
        let req = request("_HTTP._tcp.web.prod.svc.cluster.local.", true);
        let answer = sample();
        let opt = Some(Opt { payload: 1232, dnssec_ok: false });
        let encoded = encode_answer(&req, &metadata(&req), &answer, opt, 1232).unwrap();
        assert!(!encoded.truncated);
        let parsed = Message::from_vec(&encoded.bytes).unwrap();
        assert!(parsed.metadata.authoritative && parsed.metadata.recursion_available);
        assert!(parsed.metadata.recursion_desired);
        assert_eq!(parsed.metadata.id, Message::from_vec(&req).unwrap().metadata.id);
        assert_eq!(parsed.answers, answer.answers);
        assert_eq!(parsed.answers[0].name.to_string(), "_HTTP._tcp.web.prod.svc.cluster.local.");
        assert_eq!(parsed.authorities, answer.authorities);
        assert_eq!(parsed.additionals, answer.additionals);
        assert_eq!(parsed.edns.unwrap().max_payload(), 1232);
    }

    #[test]
    fn nxdomain_rcode_and_no_edns() {
        let req = request("nope.cluster.local.", false);
        let mut metadata = metadata(&req);
        metadata.response_code = ResponseCode::NXDomain;
        let answer = Answer { rcode: ResponseCode::NXDomain, ..sample() };
        let encoded = encode_answer(&req, &metadata, &answer, None, 512).unwrap();
        let parsed = Message::from_vec(&encoded.bytes).unwrap();
        assert_eq!(parsed.metadata.response_code, ResponseCode::NXDomain);
        assert!(parsed.edns.is_none());
    }

    #[test]
    fn oversized_answers_are_truncated_to_the_question() {
        let req = request("many.cluster.local.", true);
        let record =
            Record::from_rdata(name("many.cluster.local."), 5, RData::A(A::new(10, 0, 0, 1)));
        let answer = Answer { answers: vec![record; 100], ..Answer::default() };
        let opt = Some(Opt { payload: 1232, dnssec_ok: false });
        let encoded = encode_answer(&req, &metadata(&req), &answer, opt, 512).unwrap();
        assert!(encoded.truncated);
        let parsed = Message::from_vec(&encoded.bytes).unwrap();
        assert!(parsed.metadata.truncation);
        assert!(parsed.answers.is_empty());
        assert_eq!(parsed.queries.len(), 1);
        assert!(parsed.edns.is_some());
    }

    #[test]
    fn malformed_questions_fall_back() {
        let mut req = request("a.cluster.local.", false);
        req.truncate(HEADER + 3);
        let answer = Answer::default();
        let metadata = Metadata::new(1, MessageType::Response, OpCode::Query);
        assert!(encode_answer(&req, &metadata, &answer, None, 512).is_none());
    }
}
