//! User-space cost of the ALG engine per packet: `Engine::handle` on a SIP
//! INVITE with SDP from a private UAC (sipp's built-in `uac` message, the
//! one `testbed/bench/alg.sh` sends), which is rewritten (Via, From,
//! Contact, Call-ID, SDP) and opens one media pinhole. Each iteration is a
//! new call (its own Call-ID, cycling through 1024), so the per-call state
//! is exercised as in the bench, not a retransmission. Criterion reports
//! time per iteration = ns per packet, without the NFQUEUE and netlink
//! syscalls the shell adds.

use std::hint::black_box;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use rgw_alg::engine::{Engine, EngineConfig, FlowContext, Verdict};
use rgw_alg::packet::build::udp_packet;
use rgw_alg::{Direction, Role, Transport};

const UAC: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 101);
const UAS: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 80);
const PUBLIC: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);

struct Ctx;

impl FlowContext for Ctx {
    fn public_addr(
        &self,
        _: SocketAddrV4,
        _: SocketAddrV4,
        _: Transport,
        _: Role,
    ) -> Option<Ipv4Addr> {
        Some(PUBLIC)
    }
    fn host_fqdn(&self, _: Ipv4Addr) -> Option<String> {
        Some("hosta.gwa.example".into())
    }
}

fn invite(call: u32) -> String {
    let sdp = "v=0\r\n\
o=user1 53655765 2353687637 IN IP4 192.168.0.101\r\n\
s=-\r\n\
c=IN IP4 192.168.0.101\r\n\
t=0 0\r\n\
m=audio 6000 RTP/AVP 0\r\n\
a=rtpmap:0 PCMU/8000\r\n";
    format!(
        "INVITE sip:service@203.0.113.80:5060 SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.168.0.101:5060;branch=z9hG4bK-4242-{call}-0\r\n\
From: sipp <sip:sipp@192.168.0.101:5060>;tag=4242SIPpTag00{call}\r\n\
To: service <sip:service@203.0.113.80:5060>\r\n\
Call-ID: {call}-4242@192.168.0.101\r\n\
CSeq: 1 INVITE\r\n\
Contact: sip:sipp@192.168.0.101:5060\r\n\
Max-Forwards: 70\r\n\
Subject: Performance Test\r\n\
Content-Type: application/sdp\r\n\
Content-Length: {}\r\n\
\r\n\
{sdp}",
        sdp.len()
    )
}

fn engine_sip_invite(c: &mut Criterion) {
    check_steady_state();
    let packets: Vec<Vec<u8>> = (0..1024)
        .map(|i| udp_packet((UAC, 5060), (UAS, 5060), invite(i).as_bytes()))
        .collect();
    let mut engine = Engine::new(EngineConfig::default());
    let start = Instant::now();
    // Sanity: the INVITE is rewritten and opens a pinhole.
    let d = engine.handle(start, Direction::FromPrivate, &packets[0], &Ctx);
    assert!(
        matches!(d.verdict, Verdict::Replace(_)),
        "INVITE not rewritten"
    );
    assert!(!d.pinholes.is_empty(), "INVITE opened no pinhole");
    let mut i = 0usize;
    let mut t = 0u64;
    c.bench_function("engine_handle_sip_invite", |b| {
        b.iter(|| {
            i = (i + 1) % packets.len();
            t += 1;
            let now = start + Duration::from_micros(t);
            black_box(engine.handle(now, Direction::FromPrivate, black_box(&packets[i]), &Ctx))
        })
    });
}

/// Still rewriting and opening pinholes after many calls on the flow
/// (pinholes of old calls are recycled), as in the bench.
fn check_steady_state() {
    let mut engine = Engine::new(EngineConfig::default());
    let start = Instant::now();
    for i in 0..5000u32 {
        let p = udp_packet((UAC, 5060), (UAS, 5060), invite(i).as_bytes());
        let now = start + Duration::from_micros(u64::from(i));
        let d = engine.handle(now, Direction::FromPrivate, &p, &Ctx);
        assert!(
            matches!(d.verdict, Verdict::Replace(_)),
            "call {i} not rewritten"
        );
        assert!(!d.pinholes.is_empty(), "call {i} opened no pinhole");
    }
}

criterion_group!(benches, engine_sip_invite);
criterion_main!(benches);
