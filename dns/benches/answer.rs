//! Micro-benchmarks of the sans-IO DNS path: the SFQDN grammar, zone lookup
//! and `Responder::handle` from query bytes to an `Action`.
//!
//! Queries are built once, outside the timed loops. The allocator used for
//! public-view answers is a stub that always grants one fixed address, so the
//! numbers cover the answer path without the Circular Pool (see the `rgw`
//! crate's `pool` bench for that).

use std::collections::BTreeMap;
use std::hint::black_box;
use std::net::Ipv4Addr;

use criterion::{criterion_group, criterion_main, Criterion};
use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RecordType};
use rgw_dns::sfqdn::parse_port_label;
use rgw_dns::{
    Action, AllocRequest, Allocation, Allocator, DeniedPolicy, Host, L4Proto, Outcome, Responder,
    ServiceKey, Transport, View, ZoneData, ZoneSettings,
};

fn name(s: &str) -> Name {
    Name::from_ascii(s).expect("valid bench name")
}

/// The demo zone: `gwa.demo.` with `hosta` (explicit `ssh` and `sip`) and
/// `hostb`.
fn demo_zone() -> ZoneData {
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
    ZoneData::new(
        ZoneSettings {
            apex: name("gwa.demo."),
            ns_name: name("ns.gwa.demo."),
            ns_addr: Ipv4Addr::new(198, 51, 100, 2),
            hostmaster: name("hostmaster.gwa.demo."),
            serial: 1,
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
                name: "hostb".into(),
                ipv4: Ipv4Addr::new(192, 168, 0, 102),
                ipv6: None,
                services: BTreeMap::new(),
            },
        ],
    )
}

/// Grants every request the same address.
struct FixedAlloc(Ipv4Addr);

impl Allocator for FixedAlloc {
    fn allocate(&mut self, _req: AllocRequest) -> Allocation {
        Allocation::Granted(self.0)
    }
}

/// Wire bytes of a recursive query, as a resolver would send it.
fn query(qname: &str, qtype: RecordType) -> Vec<u8> {
    let mut m = Message::query();
    m.metadata.id = 4242;
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(name(qname), qtype));
    m.to_vec().expect("bench query encodes")
}

fn sfqdn_benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("sfqdn");
    for (bench, label) in [
        ("parse_tcp22", "tcp22"),
        ("parse_udp5060", "udp5060"),
        ("parse_ssh_miss", "ssh"),
    ] {
        assert_eq!(parse_port_label(label).is_some(), bench != "parse_ssh_miss");
        g.bench_function(bench, |b| b.iter(|| parse_port_label(black_box(label))));
    }
    g.finish();
}

fn zone_benches(c: &mut Criterion) {
    let zone = demo_zone();
    let mut g = c.benchmark_group("zone_lookup");
    for (bench, qname) in [
        ("apex", "gwa.demo."),
        ("host", "hosta.gwa.demo."),
        ("tcp22_host", "tcp22.hosta.gwa.demo."),
        ("ssh_host", "ssh.hosta.gwa.demo."),
        ("nxdomain", "nosuch.gwa.demo."),
    ] {
        let qname = name(qname);
        g.bench_function(bench, |b| b.iter(|| zone.lookup(black_box(&qname))));
    }
    g.finish();
}

fn responder_benches(c: &mut Criterion) {
    let responder = Responder::new(demo_zone(), DeniedPolicy::Drop);
    let mut alloc = FixedAlloc(Ipv4Addr::new(198, 51, 100, 17));

    // A header that promises one question that is not there: the message does
    // not parse and is answered with a header-only FORMERR.
    let malformed = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 0x3f];
    let cases = [
        (
            "apex_soa_public",
            query("gwa.demo.", RecordType::SOA),
            View::Public,
            Outcome::Static,
        ),
        (
            "hosta_a_private",
            query("hosta.gwa.demo.", RecordType::A),
            View::Private,
            Outcome::Static,
        ),
        (
            "tcp22_hosta_a_public",
            query("tcp22.hosta.gwa.demo.", RecordType::A),
            View::Public,
            Outcome::Allocated,
        ),
        ("malformed", malformed, View::Public, Outcome::FormErr),
    ];

    let mut g = c.benchmark_group("responder");
    for (bench, packet, view, want) in cases {
        match responder.handle(&packet, view, Transport::Udp, &mut alloc) {
            Action::Reply { outcome, .. } => assert_eq!(outcome, want, "{bench}"),
            other => panic!("{bench}: expected a reply, got {other:?}"),
        }
        g.bench_function(bench, |b| {
            b.iter(|| {
                responder.handle(
                    black_box(&packet),
                    black_box(view),
                    Transport::Udp,
                    &mut alloc,
                )
            })
        });
    }
    g.finish();
}

criterion_group!(benches, sfqdn_benches, zone_benches, responder_benches);
criterion_main!(benches);
