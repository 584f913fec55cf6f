//! DNS64/DNS46-style synthesis for RGW64, sans-IO: the upstream's replies in,
//! the reply to send out.
//!
//! Seed "Extra 1: RGW64": an IPv6 private host asking `AAAA name` for a name
//! with only A records gets a proxy ULA `prefix64::a.b.c.d` (RFC 6052 §2.2
//! /96 embedding, but inside fc00::/7, never 64:ff9b::/96); an IPv4 private
//! host asking `A name` for a name with only AAAA records gets a proxy IPv4
//! from the gateway's private pool, bound to the IPv6 address at DNS time.
//!
//! Seed 001 §5 (the DNS ALG rule): translate only for a client that asked
//! over the transport family that needs it. A query that arrived over IPv4
//! never gets a synthesised AAAA (an IPv4 client cannot use a proxy ULA), and
//! a query that arrived over IPv6 never gets a synthesised A. Names whose
//! real records of the asked type exist pass unchanged (RFC 6147 §5.1.1).

use std::net::{Ipv4Addr, Ipv6Addr};

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{Name, RData, Record, RecordType};

/// The address family of the transport a query arrived over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

/// Which record the gateway synthesises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// AAAA from A: `prefix64::v4` (NAT64).
    Aaaa,
    /// A from AAAA: a proxy IPv4 bound to the IPv6 address (NAT46).
    A,
}

/// What to do after the upstream answered the client's own query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Send the upstream's reply as it is.
    Pass,
    /// Ask the upstream this query (the other address type), then call
    /// [`Synth::synthesize`] with both replies.
    AskOther { query: Vec<u8>, kind: Kind },
}

/// Synthesis parameters.
#[derive(Debug, Clone)]
pub struct Synth {
    /// The first 96 bits of the proxy ULA prefix.
    prefix96: [u8; 12],
    /// Upper bound of a synthesised record's TTL: a proxy IPv4 binding lives
    /// only as long as it is used, so caches must not keep it much longer.
    max_ttl: u32,
}

impl Synth {
    pub fn new(prefix64: Ipv6Addr, max_ttl: u32) -> Self {
        let mut prefix96 = [0u8; 12];
        prefix96.copy_from_slice(&prefix64.octets()[..12]);
        Synth { prefix96, max_ttl }
    }

    /// `prefix64::v4`.
    pub fn embed(&self, v4: Ipv4Addr) -> Ipv6Addr {
        let mut o = [0u8; 16];
        o[..12].copy_from_slice(&self.prefix96);
        o[12..].copy_from_slice(&v4.octets());
        Ipv6Addr::from(o)
    }

    /// Decides whether the reply to `query` (from a client over `family`)
    /// needs a second lookup. Never panics on any input.
    pub fn after_first(&self, query: &[u8], reply: &[u8], family: Family) -> Step {
        let (Ok(q), Ok(r)) = (Message::from_vec(query), Message::from_vec(reply)) else {
            return Step::Pass;
        };
        let [question] = q.queries.as_slice() else {
            return Step::Pass;
        };
        let kind = match (question.query_type(), family) {
            (RecordType::AAAA, Family::V6) => Kind::Aaaa,
            (RecordType::A, Family::V4) => Kind::A,
            // The DNS ALG rule: no synthesis for a client of the other family.
            _ => return Step::Pass,
        };
        if r.metadata.message_type != MessageType::Response
            || r.metadata.id != q.metadata.id
            || r.metadata.response_code != ResponseCode::NoError
            || r.answers
                .iter()
                .any(|rec| rec.record_type() == question.query_type())
        {
            // Real records exist (or the name does not): never synthesise.
            return Step::Pass;
        }
        let other = match kind {
            Kind::Aaaa => RecordType::A,
            Kind::A => RecordType::AAAA,
        };
        let mut m = Message::query();
        // A different ID: the second reply must not be taken for the first.
        m.metadata.id = q.metadata.id ^ 0x5a5a;
        m.metadata.recursion_desired = true;
        m.add_query(hickory_proto::op::Query::query(
            question.name().clone(),
            other,
        ));
        match m.to_vec() {
            Ok(query) => Step::AskOther { query, kind },
            Err(_) => Step::Pass,
        }
    }

    /// Builds the synthesised reply from the first reply and the reply to the
    /// [`Step::AskOther`] query. `map46` binds an IPv6 destination to a proxy
    /// IPv4 (the translator's `map_v6`). None: send the first reply as it is
    /// (the other type has no records either, or no proxy address is free).
    pub fn synthesize(
        &self,
        first: &[u8],
        second: &[u8],
        kind: Kind,
        map46: &mut dyn FnMut(Ipv6Addr) -> Option<Ipv4Addr>,
    ) -> Option<Vec<u8>> {
        let first = Message::from_vec(first).ok()?;
        let second = Message::from_vec(second).ok()?;
        if second.metadata.response_code != ResponseCode::NoError {
            return None;
        }
        let mut answers: Vec<Record> = Vec::new();
        let mut made = 0usize;
        for rec in &second.answers {
            let ttl = rec.ttl.min(self.max_ttl);
            let name: Name = rec.name.clone();
            let data = match (&rec.data, kind) {
                (RData::CNAME(c), _) => RData::CNAME(c.clone()),
                (RData::A(A(v4)), Kind::Aaaa) => {
                    if !is_embeddable(*v4) {
                        // RFC 6052 §3.1: a non-global IPv4 address is not
                        // represented with a prefix meant for the Internet.
                        continue;
                    }
                    made += 1;
                    RData::AAAA(AAAA(self.embed(*v4)))
                }
                (RData::AAAA(AAAA(v6)), Kind::A) => match map46(*v6) {
                    Some(v4) => {
                        made += 1;
                        RData::A(A(v4))
                    }
                    None => continue,
                },
                _ => continue,
            };
            answers.push(Record::from_rdata(name, ttl, data));
        }
        if made == 0 {
            return None;
        }
        let mut out = first;
        out.answers = answers;
        out.authorities.clear();
        out.additionals.clear();
        // Synthesised data is not what any signer signed (RFC 6147 §5.5).
        out.metadata.authentic_data = false;
        out.to_vec().ok()
    }
}

/// Addresses a proxy ULA may embed: unicast IPv4 outside the local,
/// link-local, multicast and unspecified blocks.
fn is_embeddable(v4: Ipv4Addr) -> bool {
    !(v4.is_unspecified()
        || v4.is_loopback()
        || v4.is_link_local()
        || v4.is_multicast()
        || v4.is_broadcast())
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::Query;
    use hickory_proto::rr::rdata::{CNAME, SOA};

    fn n(s: &str) -> Name {
        Name::from_ascii(s).expect("valid test name")
    }

    fn query(name: &str, t: RecordType) -> Vec<u8> {
        let mut m = Message::query();
        m.metadata.id = 77;
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(n(name), t));
        m.to_vec().expect("encodes")
    }

    fn reply(q: &[u8], answers: Vec<Record>) -> Vec<u8> {
        let q = Message::from_vec(q).expect("parses");
        let mut m = Message::response(q.metadata.id, q.metadata.op_code);
        m.add_query(q.queries[0].clone());
        m.metadata.recursion_available = true;
        if answers.is_empty() {
            let soa = SOA::new(n("ns.demo."), n("h.demo."), 1, 1, 1, 1, 0);
            m.authorities
                .push(Record::from_rdata(n("demo."), 60, RData::SOA(soa)));
        }
        m.answers = answers;
        m.to_vec().expect("encodes")
    }

    fn synth() -> Synth {
        Synth::new("fd64:64::".parse().expect("ip"), 30)
    }

    fn a(name: &str, ip: &str, ttl: u32) -> Record {
        Record::from_rdata(n(name), ttl, RData::A(A(ip.parse().expect("ip"))))
    }

    fn aaaa(name: &str, ip: &str, ttl: u32) -> Record {
        Record::from_rdata(n(name), ttl, RData::AAAA(AAAA(ip.parse().expect("ip"))))
    }

    #[test]
    fn aaaa_for_an_ipv4_only_name_over_ipv6_is_a_proxy_ula() {
        let s = synth();
        let q = query("v4only.demo.", RecordType::AAAA);
        let first = reply(&q, vec![]);
        let Step::AskOther { query: q2, kind } = s.after_first(&q, &first, Family::V6) else {
            panic!("needs the A lookup")
        };
        assert_eq!(kind, Kind::Aaaa);
        let q2m = Message::from_vec(&q2).expect("parses");
        assert_eq!(q2m.queries[0].query_type(), RecordType::A);
        assert_ne!(q2m.metadata.id, 77);
        let second = reply(&q2, vec![a("v4only.demo.", "203.0.113.80", 600)]);
        let out = s
            .synthesize(&first, &second, kind, &mut |_| None)
            .expect("synthesised");
        let m = Message::from_vec(&out).expect("parses");
        assert_eq!(m.metadata.id, 77);
        assert_eq!(m.queries[0].query_type(), RecordType::AAAA);
        assert_eq!(m.answers.len(), 1);
        assert_eq!(m.answers[0].ttl, 30, "capped");
        assert_eq!(
            m.answers[0].data,
            RData::AAAA(AAAA("fd64:64::cb00:7150".parse().expect("ip")))
        );
        assert!(m.authorities.is_empty());
    }

    #[test]
    fn the_family_rule_and_real_records_pass() {
        let s = synth();
        let q = query("v4only.demo.", RecordType::AAAA);
        let first = reply(&q, vec![]);
        assert_eq!(
            s.after_first(&q, &first, Family::V4),
            Step::Pass,
            "an IPv4 client never gets a proxy ULA"
        );
        let qa = query("v6only.demo.", RecordType::A);
        let firsta = reply(&qa, vec![]);
        assert_eq!(
            s.after_first(&qa, &firsta, Family::V6),
            Step::Pass,
            "an IPv6 client never gets a proxy IPv4"
        );
        let real = reply(&q, vec![aaaa("v4only.demo.", "2001:db8::1", 60)]);
        assert_eq!(s.after_first(&q, &real, Family::V6), Step::Pass);
        let mx = query("v4only.demo.", RecordType::MX);
        assert_eq!(
            s.after_first(&mx, &reply(&mx, vec![]), Family::V6),
            Step::Pass
        );
        // NXDOMAIN passes.
        let mut nx = Message::from_vec(&first).expect("parses");
        nx.metadata.response_code = ResponseCode::NXDomain;
        let nx = nx.to_vec().expect("encodes");
        assert_eq!(s.after_first(&q, &nx, Family::V6), Step::Pass);
    }

    #[test]
    fn a_for_an_ipv6_only_name_over_ipv4_maps_through_the_pool() {
        let s = synth();
        let q = query("v6only.demo.", RecordType::A);
        let first = reply(&q, vec![]);
        let Step::AskOther { query: q2, kind } = s.after_first(&q, &first, Family::V4) else {
            panic!("needs the AAAA lookup")
        };
        assert_eq!(kind, Kind::A);
        let second = reply(
            &q2,
            vec![
                Record::from_rdata(n("v6only.demo."), 60, RData::CNAME(CNAME(n("web6.demo.")))),
                aaaa("web6.demo.", "2001:db8:0:113::80", 10),
            ],
        );
        let mut asked = Vec::new();
        let out = s
            .synthesize(&first, &second, kind, &mut |v6| {
                asked.push(v6);
                Some(Ipv4Addr::new(10, 64, 0, 9))
            })
            .expect("synthesised");
        assert_eq!(
            asked,
            vec!["2001:db8:0:113::80".parse::<Ipv6Addr>().expect("ip")]
        );
        let m = Message::from_vec(&out).expect("parses");
        assert_eq!(m.answers.len(), 2, "the CNAME chain is kept");
        assert_eq!(m.answers[1].ttl, 10);
        assert_eq!(m.answers[1].data, RData::A(A(Ipv4Addr::new(10, 64, 0, 9))));
        // Pool exhausted: the first (empty) reply goes out.
        assert!(s.synthesize(&first, &second, kind, &mut |_| None).is_none());
    }

    #[test]
    fn nothing_to_synthesise_from() {
        let s = synth();
        let q = query("nothing.demo.", RecordType::AAAA);
        let first = reply(&q, vec![]);
        let Step::AskOther { query: q2, kind } = s.after_first(&q, &first, Family::V6) else {
            panic!("needs the A lookup")
        };
        assert!(s
            .synthesize(&first, &reply(&q2, vec![]), kind, &mut |_| None)
            .is_none());
        let lo = reply(&q2, vec![a("nothing.demo.", "127.0.0.1", 60)]);
        assert!(s.synthesize(&first, &lo, kind, &mut |_| None).is_none());
    }

    #[test]
    fn garbage_never_panics() {
        let s = synth();
        let q = query("v4only.demo.", RecordType::AAAA);
        let first = reply(&q, vec![]);
        let mut seed = 0x1234_5678_9abc_def0u64;
        for i in 0..3000 {
            let mut p = first.clone();
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let pos = (seed as usize) % p.len();
            p[pos] = (seed >> 24) as u8;
            p.truncate(1 + (i % first.len()).max(pos));
            let _ = s.after_first(&q, &p, Family::V6);
            let _ = s.synthesize(&first, &p, Kind::A, &mut |_| None);
            let _ = s.after_first(&p, &first, Family::V4);
        }
    }
}
