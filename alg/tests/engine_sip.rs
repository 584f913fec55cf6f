//! The engine with the real SIP rewriter: a SIP dialog over TCP gives the
//! same rewritten stream however it is segmented (the engine holds split
//! messages and joins them), and over UDP each datagram is rewritten with
//! correct lengths and checksums.

use std::net::Ipv4Addr;
use std::time::Instant;

use rgw_alg::engine::{Engine, EngineConfig, Verdict};
use rgw_alg::packet::build::{tcp_packet, udp_packet, TcpSpec};
use rgw_alg::packet::{Packet, TcpFlags, Transport as L4};
use rgw_alg::Direction;

mod common;
use common::FixedCtx;

const PRIV: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 101);
const PEER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
const PUB: Ipv4Addr = Ipv4Addr::new(100, 64, 1, 131);

const CTX: FixedCtx = FixedCtx {
    public: PUB,
    fqdn: Some("hosta.gwa.demo"),
};

fn invite(call: u32) -> Vec<u8> {
    let sdp = "v=0\r\n\
o=user1 53655765 2353687637 IN IP4 192.168.0.101\r\n\
s=-\r\n\
c=IN IP4 192.168.0.101\r\n\
t=0 0\r\n\
m=audio 6000 RTP/AVP 0\r\n\
a=rtpmap:0 PCMU/8000\r\n";
    format!(
        "INVITE sip:service@198.51.100.7:5060 SIP/2.0\r\n\
Via: SIP/2.0/TCP 192.168.0.101:5060;branch=z9hG4bK-{call}-1-0\r\n\
From: sipp <sip:sipp@192.168.0.101:5060>;tag={call}SIPpTag001\r\n\
To: service <sip:service@198.51.100.7:5060>\r\n\
Call-ID: {call}-1@192.168.0.101\r\n\
CSeq: 1 INVITE\r\n\
Contact: sip:sipp@192.168.0.101:5060;transport=TCP\r\n\
Max-Forwards: 70\r\n\
Subject: Performance Test\r\n\
Content-Type: application/sdp\r\n\
Content-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    )
    .into_bytes()
}

fn bye(call: u32) -> Vec<u8> {
    format!(
        "BYE sip:service@198.51.100.7:5060 SIP/2.0\r\n\
Via: SIP/2.0/TCP 192.168.0.101:5060;branch=z9hG4bK-{call}-2-7\r\n\
From: sipp <sip:sipp@192.168.0.101:5060>;tag={call}SIPpTag001\r\n\
To: service <sip:service@198.51.100.7:5060>;tag=1\r\n\
Call-ID: {call}-1@192.168.0.101\r\n\
CSeq: 2 BYE\r\n\
Contact: sip:sipp@192.168.0.101:5060;transport=TCP\r\n\
Max-Forwards: 70\r\n\
Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

fn stream() -> Vec<u8> {
    let mut s = Vec::new();
    for call in 1..=3 {
        s.extend_from_slice(&invite(call));
        s.extend_from_slice(b"\r\n\r\n"); // keep-alive
        s.extend_from_slice(&bye(call));
    }
    s
}

/// Sends `data` cut at `cuts` through a fresh engine (in order, each
/// segment once); returns the bytes the peer receives, reassembled by SEQ,
/// and the number of pinholes.
fn through_engine(data: &[u8], cuts: &[usize]) -> (Vec<u8>, usize) {
    let mut e = Engine::new(EngineConfig::default());
    let now = Instant::now();
    let isn = 0xFFFF_FF00u32;
    let seg = |seq: u32, flags: u8, payload: &[u8]| {
        tcp_packet(&TcpSpec {
            src: (PRIV, 5060),
            dst: (PEER, 5060),
            seq,
            ack: 1,
            flags,
            sack: &[],
            payload,
        })
    };
    e.handle(
        now,
        Direction::FromPrivate,
        &seg(isn, TcpFlags::SYN, b""),
        &CTX,
    );
    let mut rcv: Vec<Option<u8>> = Vec::new();
    let mut holes = 0;
    let mut bounds = vec![0];
    bounds.extend(cuts.iter().copied().filter(|&c| c > 0 && c < data.len()));
    bounds.push(data.len());
    bounds.sort_unstable();
    bounds.dedup();
    for w in bounds.windows(2) {
        let seq = isn.wrapping_add(1).wrapping_add(w[0] as u32);
        let p = seg(seq, TcpFlags::ACK | TcpFlags::PSH, &data[w[0]..w[1]]);
        let d = e.handle(now, Direction::FromPrivate, &p, &CTX);
        holes += d.pinholes.len();
        let out = match d.verdict {
            Verdict::Accept => p,
            Verdict::Replace(b) => b,
            Verdict::Drop => continue,
        };
        let pkt = Packet::parse(&out).expect("parses");
        assert!(pkt.checksums_ok());
        let L4::Tcp(t) = pkt.l4 else { panic!("tcp") };
        let off = t.seq().wrapping_sub(isn.wrapping_add(1)) as usize;
        if rcv.len() < off + t.payload().len() {
            rcv.resize(off + t.payload().len(), None);
        }
        for (i, &b) in t.payload().iter().enumerate() {
            if let Some(old) = rcv[off + i] {
                assert_eq!(old, b, "conflicting byte at {}", off + i);
            }
            rcv[off + i] = Some(b);
        }
    }
    assert_eq!(e.stats().malformed, 0);
    let bytes = rcv
        .into_iter()
        .map(|b| b.expect("no hole in the received stream"))
        .collect();
    (bytes, holes)
}

fn contains(h: &[u8], n: &[u8]) -> bool {
    h.windows(n.len()).any(|w| w == n)
}

#[test]
fn tcp_dialog_is_rewritten_the_same_however_segmented() {
    let data = stream();
    let (whole, holes) = through_engine(&data, &[]);
    assert!(
        !contains(&whole, b"192.168.0.101:5060;transport"),
        "Contact rewritten"
    );
    assert!(
        !contains(&whole, b"c=IN IP4 192.168.0.101"),
        "SDP rewritten"
    );
    assert!(contains(&whole, b"c=IN IP4 100.64.1.131"));
    assert!(holes >= 3, "media pinholes: {holes}");
    // Every single split point, then random multi-splits.
    for cut in 1..data.len() {
        let (got, _) = through_engine(&data, &[cut]);
        assert_eq!(got, whole, "split at {cut}");
    }
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    for _ in 0..200 {
        let cuts: Vec<usize> = (0..8)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x % data.len() as u64) as usize
            })
            .collect();
        let (got, _) = through_engine(&data, &cuts);
        assert_eq!(got, whole, "cuts {cuts:?}");
    }
}

#[test]
fn udp_invite_rewritten_with_valid_lengths_and_checksums() {
    let mut e = Engine::new(EngineConfig::default());
    let now = Instant::now();
    let msg = invite(7);
    let p = udp_packet((PRIV, 5060), (PEER, 5060), &msg);
    let d = e.handle(now, Direction::FromPrivate, &p, &CTX);
    let Verdict::Replace(out) = &d.verdict else {
        panic!("INVITE not rewritten: {:?}", d.verdict)
    };
    let pkt = Packet::parse(out).expect("parses");
    assert!(pkt.checksums_ok());
    let L4::Udp(u) = pkt.l4 else { panic!("udp") };
    assert_eq!(usize::from(u.length()), 8 + u.payload().len());
    assert!(contains(u.payload(), b"c=IN IP4 100.64.1.131"));
    assert!(!d.pinholes.is_empty());
    for h in &d.pinholes {
        assert_eq!(h.peer, PEER);
        assert_eq!(h.public_addr, PUB);
        assert_eq!(h.private_addr, PRIV);
        assert_eq!(h.lifetime, EngineConfig::default().media_lifetime);
    }
    // A retransmission (SIP over UDP retransmits the INVITE): same bytes.
    assert_eq!(e.handle(now, Direction::FromPrivate, &p, &CTX), d);
}
