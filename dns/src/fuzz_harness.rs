//! Fuzz harnesses of the DNS crate, shared by the cargo-fuzz targets in
//! `fuzz/` (nightly, feature `fuzzing`) and by the stable tests below, which
//! replay every input of the kept corpus (`fuzz/corpus/<target>/`) and every
//! crash found so far. Each harness panics when an invariant fails.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use hickory_proto::op::Message;
use hickory_proto::rr::{Name, RData};

use crate::answer::{
    Action, AllocRequest, Allocation, Allocator, DeniedPolicy, DenyReason, Outcome, QueryContext,
    Responder, Transport, View,
};
use crate::antispoof::{AliasKey, AliasZone, AntiSpoof};
use crate::sfqdn::{parse_port_label, parse_srv_proto_label, L4Proto, ServiceKey};
use crate::zone::{Host, Lookup, ZoneData, ZoneSettings};

/// The zone every harness answers for: two hosts, explicit services on one,
/// a vacant slot (a host removed by a reload) and, when `www`, the proxy names.
pub fn zone(www: bool) -> ZoneData {
    let n = |s: &str| Name::from_ascii(s).expect("harness zone names are valid");
    let mut services = BTreeMap::new();
    services.insert(
        "ssh".to_string(),
        ServiceKey {
            proto: L4Proto::Tcp,
            port: 22,
        },
    );
    services.insert(
        "sip".to_string(),
        ServiceKey {
            proto: L4Proto::Udp,
            port: 5060,
        },
    );
    let mut z = ZoneData::new(
        ZoneSettings {
            apex: n("gwa.demo."),
            ns_name: n("ns.gwa.demo."),
            ns_addr: Ipv4Addr::new(198, 51, 100, 2),
            hostmaster: n("hostmaster.gwa.demo."),
            serial: 7,
            static_ttl: 60,
            negative_ttl: 30,
        },
        vec![
            Host {
                name: "hosta".into(),
                ipv4: Ipv4Addr::new(192, 168, 0, 101),
                ipv6: None,
                services,
            },
            Host {
                name: String::new(),
                ipv4: Ipv4Addr::UNSPECIFIED,
                ipv6: None,
                services: BTreeMap::new(),
            },
            Host {
                name: "hostb".into(),
                ipv4: Ipv4Addr::new(192, 168, 0, 102),
                ipv6: None,
                services: BTreeMap::new(),
            },
        ],
    );
    z.www = www;
    z
}

/// Grants or denies according to a script and records every request.
struct ScriptedAlloc {
    script: u8,
    asked: Vec<AllocRequest>,
}

impl Allocator for ScriptedAlloc {
    fn allocate(&mut self, req: AllocRequest) -> Allocation {
        self.asked.push(req);
        match self.script % 4 {
            0 | 1 => Allocation::Granted(Ipv4Addr::new(100, 64, 1, 131)),
            2 => Allocation::Denied(DenyReason::Exhausted),
            _ => Allocation::Denied(DenyReason::HostLimit),
        }
    }
}

/// Target `dns_message`: byte 0 chooses view, transport, denial policy, the
/// allocator's script, anti-spoofing (off, TC, CNAME aliases) and whether
/// www names exist; the rest is the message.
///
/// Invariants: no panic; a reply parses, carries the query's id and the QR
/// bit; over UDP it fits the size the client allowed (512, or at most 1232
/// with EDNS); the private view never allocates; the public view allocates
/// at most once per message, only for an `A`/`SRV` question of a zone host,
/// and an `Allocated` answer comes from a granted allocation. With
/// anti-spoofing, a public UDP query never allocates in TC mode, and in
/// CNAME mode its alias allocates at most once for the resolver it was sent
/// to, never from another network, never after its lifetime.
pub fn dns_message(data: &[u8]) {
    let Some((&ctl, packet)) = data.split_first() else {
        return;
    };
    let view = if ctl & 1 == 0 {
        View::Public
    } else {
        View::Private
    };
    let transport = if ctl & 2 == 0 {
        Transport::Udp
    } else {
        Transport::Tcp
    };
    let policy = match (ctl >> 2) % 3 {
        0 => DeniedPolicy::Drop,
        1 => DeniedPolicy::Servfail,
        _ => DeniedPolicy::Refused,
    };
    // Bit 6: anti-spoofing, TC or (with bit 3) CNAME aliases.
    let antispoof = match (ctl & 0x40 != 0, ctl & 0x08 != 0) {
        (false, _) => AntiSpoof::Off,
        (true, false) => AntiSpoof::Tc,
        (true, true) => AntiSpoof::Cname(AliasZone {
            name: Name::from_ascii("alias.gwa.demo.").expect("harness alias zone is valid"),
            lifetime: Duration::from_secs(5),
            key: AliasKey::default(),
        }),
    };
    let cname = matches!(antispoof, AntiSpoof::Cname(_));
    let guarded = !matches!(antispoof, AntiSpoof::Off);
    let responder = Responder::new(zone(ctl & 0x80 != 0), policy).with_antispoof(antispoof);
    let mut alloc = ScriptedAlloc {
        script: ctl >> 4,
        asked: Vec::new(),
    };
    let resolver = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 54));
    let ctx = QueryContext {
        resolver: Some(resolver),
        now: Duration::from_secs(1000),
    };
    let action = responder.handle_in(packet, view, transport, ctx, &mut alloc);
    if guarded && view == View::Public && transport == Transport::Udp {
        // A spoofer never sees the answer: a UDP query (whatever it names,
        // even a forged alias) must not reserve anything before a proof.
        if !cname {
            assert!(alloc.asked.is_empty(), "TC mode allocated over UDP");
        }
    }
    if cname && view == View::Public && transport == Transport::Udp {
        follow_alias(&responder, packet, &action, ctx, ctl);
    }
    if view == View::Private {
        assert!(alloc.asked.is_empty(), "the private view allocated");
    }
    assert!(alloc.asked.len() <= 1, "one message, several reservations");
    for req in &alloc.asked {
        let host = responder
            .zone()
            .host(req.host)
            .expect("allocated for a real host slot");
        assert!(!host.name.is_empty(), "allocated for a vacant slot");
    }
    match action {
        Action::Reply { bytes, outcome } => {
            let reply = Message::from_vec(&bytes).expect("every reply parses");
            assert!(packet.len() >= 12, "a reply to a message without a header");
            let id = u16::from_be_bytes([packet[0], packet[1]]);
            assert_eq!(reply.metadata.id, id, "reply id differs from query id");
            assert_eq!(
                reply.metadata.message_type,
                hickory_proto::op::MessageType::Response
            );
            if transport == Transport::Udp {
                assert!(bytes.len() <= 1232, "UDP reply of {} bytes", bytes.len());
                if reply.edns.is_none() {
                    assert!(
                        bytes.len() <= 512,
                        "UDP reply of {} bytes without EDNS",
                        bytes.len()
                    );
                }
            }
            if outcome == Outcome::Allocated {
                assert_eq!(view, View::Public);
                assert_eq!(
                    alloc.asked.len(),
                    1,
                    "allocated answer without a reservation"
                );
                assert!(
                    alloc.script % 4 < 2,
                    "allocated answer for a denied reservation"
                );
            }
        }
        Action::Drop(_) => {}
        Action::Forward => assert_eq!(view, View::Private, "the public view forwarded"),
    }
}

/// CNAME anti-spoofing: the alias in a reply, followed by the resolver it
/// was sent to, allocates at most once per query; followed from another
/// network or after its lifetime it allocates nothing.
fn follow_alias(responder: &Responder, query: &[u8], action: &Action, ctx: QueryContext, ctl: u8) {
    let Action::Reply { bytes, .. } = action else {
        return;
    };
    let Ok(reply) = Message::from_vec(bytes) else {
        return;
    };
    let Some(target) = reply.answers.iter().find_map(|r| match &r.data {
        RData::CNAME(c) => Some(c.0.clone()),
        _ => None,
    }) else {
        return;
    };
    let Ok(mut q) = Message::from_vec(query) else {
        return;
    };
    let Some(first) = q.queries.first_mut() else {
        return;
    };
    first.set_name(target);
    let Ok(follow) = q.to_vec() else {
        return;
    };
    let run = |ctx: QueryContext| {
        let mut a = ScriptedAlloc {
            script: ctl >> 4,
            asked: Vec::new(),
        };
        let _ = responder.handle_in(&follow, View::Public, Transport::Udp, ctx, &mut a);
        a.asked.len()
    };
    assert!(run(ctx) <= 1, "an alias allocated twice in one answer");
    let elsewhere = QueryContext {
        resolver: Some(IpAddr::V4(Ipv4Addr::new(198, 18, 7, 7))),
        ..ctx
    };
    assert_eq!(
        run(elsewhere),
        0,
        "an alias followed from another network allocated"
    );
    let late = QueryContext {
        now: ctx.now + Duration::from_secs(3600),
        ..ctx
    };
    assert_eq!(run(late), 0, "an expired alias allocated");
}

/// Target `sfqdn`: the service-label grammar and the zone's name lookup.
///
/// Invariants: a parsed `tcp<port>`/`udp<port>` label is the canonical
/// spelling of what it parsed to (one name per service) and every canonical
/// spelling parses; a lookup never panics, and a service FQDN it reports is
/// either a canonical port label or an explicit service of that host.
pub fn sfqdn(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    for label in text.split(['.', '\n']) {
        if let Some(k) = parse_port_label(label) {
            assert!(k.port != 0, "port 0 parsed from {label:?}");
            assert!(
                label.eq_ignore_ascii_case(&format!("{}{}", k.proto, k.port)),
                "{label:?} is not the canonical name of {k:?}"
            );
        }
        if let Some(p) = parse_srv_proto_label(label) {
            assert!(label.eq_ignore_ascii_case(&format!("_{p}")));
        }
    }
    // Canonical spellings round-trip, whatever the port.
    if let [a, b, ..] = data {
        let port = u16::from_be_bytes([*a, *b]);
        for proto in [L4Proto::Tcp, L4Proto::Udp] {
            let label = format!("{proto}{port}");
            let parsed = parse_port_label(&label);
            if port == 0 {
                assert_eq!(parsed, None);
            } else {
                assert_eq!(parsed, Some(ServiceKey { proto, port }), "{label}");
            }
        }
    }
    let z = zone(data.first().is_some_and(|b| b & 1 == 1));
    let names = [
        Name::from_ascii(text.trim()).ok(),
        Name::from_utf8(text.trim()).ok(),
    ];
    for name in names.into_iter().flatten() {
        if let Lookup::Host {
            host,
            service: Some(key),
        } = z.lookup(&name)
        {
            let h = z.host(host).expect("lookup returned a real host slot");
            assert!(!h.name.is_empty(), "lookup found a vacant slot");
            let first = name
                .iter()
                .next()
                .map(|l| String::from_utf8_lossy(l).to_ascii_lowercase())
                .unwrap_or_default();
            assert!(
                parse_port_label(&first) == Some(key) || h.services.get(&first) == Some(&key),
                "{name} is not a service of {}",
                h.name
            );
        }
    }
}

/// Replays every file of `fuzz/corpus/<target>/` (and `fuzz/regressions/<target>/`)
/// through `harness`; returns how many inputs ran.
#[cfg(test)]
pub(crate) fn replay_corpus(target: &str, harness: fn(&[u8])) -> usize {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut n = 0;
    for dir in ["corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        for e in entries.flatten() {
            let bytes = std::fs::read(e.path()).expect("corpus file is readable");
            harness(&bytes);
            n += 1;
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_message_corpus_replays() {
        let n = replay_corpus("dns_message", dns_message);
        assert!(n > 0, "fuzz/corpus/dns_message is empty");
    }

    #[test]
    fn sfqdn_corpus_replays() {
        let n = replay_corpus("sfqdn", sfqdn);
        assert!(n > 0, "fuzz/corpus/sfqdn is empty");
    }

    /// Fuzz crash (dns_message): a UDP query without EDNS with four long
    /// questions got a FORMERR that echoed them all, 590 bytes > 512; the
    /// truncated reply now drops the question section when it must.
    #[test]
    fn regression_udp_formerr_over_512() {
        let input = include_bytes!("../../fuzz/regressions/dns_message/udp-formerr-over-512");
        dns_message(input);
        let r = Responder::new(zone(false), DeniedPolicy::Drop);
        let mut a = ScriptedAlloc {
            script: 0,
            asked: Vec::new(),
        };
        match r.handle(&input[1..], View::Public, Transport::Udp, &mut a) {
            Action::Reply { bytes, outcome } => {
                assert_eq!(outcome, Outcome::FormErr);
                assert!(bytes.len() <= 512, "{} bytes", bytes.len());
                let m = Message::from_vec(&bytes).expect("reply parses");
                assert!(m.metadata.truncation);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn harness_checks_hold_on_seeds() {
        // A plain query on each view/transport, and an SFQDN.
        let q = [
            0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 5, b't', b'c', b'p', b'2', b'2', 5,
            b'h', b'o', b's', b't', b'a', 3, b'g', b'w', b'a', 4, b'd', b'e', b'm', b'o', 0, 0, 1,
            0, 1,
        ];
        for ctl in 0..=255u8 {
            let mut input = vec![ctl];
            input.extend_from_slice(&q);
            dns_message(&input);
        }
        sfqdn(b"tcp22.hosta.gwa.demo.");
        sfqdn(b"ssh.hosta.gwa.demo.");
    }
}
