//! The LAN DNS forwarder's RGW64 step: forwards a query upstream and, when
//! [`rgw_dns::synth`] says so, asks the other address type and synthesises
//! the reply (proxy ULA for AAAA, proxy IPv4 bound at DNS time for A).

use std::future::Future;
use std::net::SocketAddr;

use anyhow::Result;
use rgw_dns::synth::{Family, Step};
use tracing::info;

use super::Rgw64;

/// Forwards `query` with `ask` (UDP or TCP to the upstream) and returns the
/// reply for the client at `peer`.
pub async fn forward<F, Fut>(
    rgw64: Option<&Rgw64>,
    query: &[u8],
    peer: SocketAddr,
    ask: F,
) -> Result<Vec<u8>>
where
    F: Fn(Vec<u8>) -> Fut,
    Fut: Future<Output = Result<Vec<u8>>>,
{
    let first = ask(query.to_vec()).await?;
    let Some(r) = rgw64 else {
        return Ok(first);
    };
    let Step::AskOther { query: q2, kind } = r.synth.after_first(query, &first, family(peer))
    else {
        return Ok(first);
    };
    let second = match ask(q2).await {
        Ok(s) => s,
        // The other type's lookup failed: the client gets the real answer.
        Err(_) => return Ok(first),
    };
    match r
        .synth
        .synthesize(&first, &second, kind, &mut |v6| r.map_v6(v6))
    {
        Some(reply) => {
            info!(%peer, kind = ?kind, "RGW64: synthesised");
            Ok(reply)
        }
        None => Ok(first),
    }
}

/// The family of the client at `peer` (an IPv4-mapped IPv6 peer is IPv4).
fn family(peer: SocketAddr) -> Family {
    match peer.ip() {
        std::net::IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none() => Family::V6,
        _ => Family::V4,
    }
}

/// The same step for names of our own zone on the private view: the
/// responder's `reply` to `query` is completed from the responder's answer
/// to the other type (an IPv6-only LAN host asking `AAAA hosta.<zone>` gets
/// `prefix64::<hosta's IPv4>`). None: send `reply` as it is.
pub fn complete_local(
    r: &Rgw64,
    responder: &rgw_dns::Responder,
    query: &[u8],
    reply: &[u8],
    peer: SocketAddr,
    transport: rgw_dns::Transport,
) -> Option<Vec<u8>> {
    let Step::AskOther { query: q2, kind } = r.synth.after_first(query, reply, family(peer)) else {
        return None;
    };
    // The private view never allocates; a denying allocator makes that certain.
    let rgw_dns::Action::Reply { bytes: second, .. } = responder.handle(
        &q2,
        rgw_dns::View::Private,
        transport,
        &mut crate::gateway::DataplaneDown,
    ) else {
        return None;
    };
    r.synth
        .synthesize(reply, &second, kind, &mut |v6| r.map_v6(v6))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rgw64::config::Rgw64Config;
    use hickory_proto::op::{Message, Query};
    use hickory_proto::rr::rdata::{A, AAAA};
    use hickory_proto::rr::{Name, RData, Record, RecordType};
    use std::net::{Ipv4Addr, Ipv6Addr};
    use std::sync::Mutex;

    fn rgw64() -> Rgw64 {
        let cfg = Rgw64Config {
            tun: "t".into(),
            prefix64: "fd64:64::/96".parse().expect("net"),
            pool4: "10.64.0.0/24".parse().expect("net"),
            dynamic_timeout: std::time::Duration::from_secs(60),
            max_dynamic: 16,
            lan_prefix6: "fd00::/64".parse().expect("net"),
            lan_address6: "fd00::1".parse().expect("ip"),
            wan_address6: "2001:db8::2".parse().expect("ip"),
            synth_ttl: 30,
            mtu: 1500,
            statics: Vec::new(),
        };
        Rgw64::new(&cfg).expect("valid translator config")
    }

    fn query(t: RecordType) -> Vec<u8> {
        let mut m = Message::query();
        m.metadata.id = 9;
        m.add_query(Query::query(Name::from_ascii("x.demo.").expect("name"), t));
        m.to_vec().expect("encodes")
    }

    /// A fake upstream: `x.demo` has only an A (v4 = true) or only an AAAA.
    fn upstream(q: &[u8], v4: bool) -> Vec<u8> {
        let q = Message::from_vec(q).expect("parses");
        let mut m = Message::response(q.metadata.id, q.metadata.op_code);
        m.add_query(q.queries[0].clone());
        let name = q.queries[0].name().clone();
        match (q.queries[0].query_type(), v4) {
            (RecordType::A, true) => m.answers.push(Record::from_rdata(
                name,
                60,
                RData::A(A(Ipv4Addr::new(203, 0, 113, 80))),
            )),
            (RecordType::AAAA, false) => m.answers.push(Record::from_rdata(
                name,
                60,
                RData::AAAA(AAAA("2001:db8::80".parse().expect("ip"))),
            )),
            _ => {}
        }
        m.to_vec().expect("encodes")
    }

    fn answers(reply: &[u8]) -> Vec<RData> {
        Message::from_vec(reply)
            .expect("parses")
            .answers
            .into_iter()
            .map(|r| r.data)
            .collect()
    }

    #[test]
    fn zone_hosts_are_completed_locally() {
        use rgw_dns::{DeniedPolicy, Host, Responder, Transport, View, ZoneData, ZoneSettings};
        let n = |s: &str| Name::from_ascii(s).expect("name");
        let zone = ZoneData::new(
            ZoneSettings {
                apex: n("gwa.demo."),
                ns_name: n("ns.gwa.demo."),
                ns_addr: Ipv4Addr::new(198, 51, 100, 2),
                hostmaster: n("hostmaster.gwa.demo."),
                serial: 1,
                static_ttl: 60,
                negative_ttl: 30,
            },
            vec![Host {
                name: "hosta".into(),
                ipv4: Ipv4Addr::new(192, 168, 0, 101),
                ipv6: None,
                services: Default::default(),
            }],
        );
        let responder = Responder::new(zone, DeniedPolicy::Drop);
        let r = rgw64();
        let mut q = Message::query();
        q.metadata.id = 3;
        q.add_query(Query::query(n("hosta.gwa.demo."), RecordType::AAAA));
        let q = q.to_vec().expect("encodes");
        let rgw_dns::Action::Reply { bytes, .. } = responder.handle(
            &q,
            View::Private,
            Transport::Udp,
            &mut crate::gateway::DataplaneDown,
        ) else {
            panic!("the zone answers")
        };
        assert!(answers(&bytes).is_empty(), "NODATA: hosta has no IPv6");
        let v6peer: SocketAddr = "[fd00::103]:53".parse().expect("addr");
        let out = complete_local(&r, &responder, &q, &bytes, v6peer, Transport::Udp)
            .expect("synthesised for an IPv6 client");
        assert_eq!(
            answers(&out),
            vec![RData::AAAA(AAAA("fd64:64::c0a8:65".parse().expect("ip")))]
        );
        let v4peer: SocketAddr = "192.168.0.102:53".parse().expect("addr");
        assert!(complete_local(&r, &responder, &q, &bytes, v4peer, Transport::Udp).is_none());
    }

    #[tokio::test]
    async fn the_client_family_decides() {
        let r = rgw64();
        let asked = Mutex::new(0usize);
        let ask = |v4: bool| {
            let asked = &asked;
            move |q: Vec<u8>| async move {
                *asked.lock().expect("lock") += 1;
                Ok(upstream(&q, v4))
            }
        };
        let v6peer: SocketAddr = "[fd00::103]:5353".parse().expect("addr");
        let v4peer: SocketAddr = "192.168.0.101:5353".parse().expect("addr");
        let out = forward(Some(&r), &query(RecordType::AAAA), v6peer, ask(true))
            .await
            .expect("reply");
        assert_eq!(
            answers(&out),
            vec![RData::AAAA(AAAA("fd64:64::cb00:7150".parse().expect("ip")))]
        );
        assert_eq!(*asked.lock().expect("lock"), 2, "AAAA then A");
        // The same question over IPv4: one lookup, no synthesis.
        let out = forward(Some(&r), &query(RecordType::AAAA), v4peer, ask(true))
            .await
            .expect("reply");
        assert!(answers(&out).is_empty());
        assert_eq!(*asked.lock().expect("lock"), 3);
        // A for an IPv6-only name over IPv4: a proxy IPv4, bound in the translator.
        let out = forward(Some(&r), &query(RecordType::A), v4peer, ask(false))
            .await
            .expect("reply");
        let [RData::A(A(proxy))] = answers(&out)[..] else {
            panic!("one A expected")
        };
        assert!(r.cfg.pool4.contains(&proxy));
        let v6: Ipv6Addr = "2001:db8::80".parse().expect("ip");
        assert_eq!(r.xlat().lookup_v4(proxy), Some(v6));
        // Without [rgw64] the reply passes as it is.
        let out = forward(None, &query(RecordType::AAAA), v6peer, ask(true))
            .await
            .expect("reply");
        assert!(answers(&out).is_empty());
    }
}
