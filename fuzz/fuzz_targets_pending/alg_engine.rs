//! Fuzz target `alg_engine`: TCP/UDP conversations on the ALG ports through
//! `Engine::handle`, both directions, with segments, retransmissions, ACKs
//! (with SACK) and FIN/RST built from the input; time advances too.
//!
//! Invariants: no panic; a replaced packet is a whole IPv4 TCP/UDP packet
//! with correct IP and L4 checksums, of the same flow (addresses and ports
//! unchanged), at most 65535 bytes; the flow table stays within
//! `max_flows`; every pinhole has non-zero ports.
#![no_main]

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use rgw_alg::engine::{Engine, EngineConfig, FlowContext, Verdict};
use rgw_alg::packet::build::{tcp_packet, udp_packet, TcpSpec};
use rgw_alg::packet::Packet;
use rgw_alg::{Direction, Role, Transport};

struct Ctx;

impl FlowContext for Ctx {
    fn public_addr(
        &self,
        _: SocketAddrV4,
        _: SocketAddrV4,
        _: Transport,
        role: Role,
    ) -> Option<Ipv4Addr> {
        Some(match role {
            Role::PrivateClient => Ipv4Addr::new(198, 51, 100, 2),
            Role::PrivateServer => Ipv4Addr::new(198, 51, 100, 17),
        })
    }
    fn host_fqdn(&self, _: Ipv4Addr) -> Option<String> {
        Some("hosta.gwa.demo".into())
    }
}

struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    fn bytes(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.0.len());
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a
    }
}

const PRIVATE: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 101);
const PEER: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let Some(setup) = input.u8() else { return };
    let (transport, alg_port) = match setup % 4 {
        0 => (Transport::Tcp, 21),
        1 => (Transport::Tcp, 5060),
        2 => (Transport::Udp, 5060),
        _ => (Transport::Tcp, 554),
    };
    // Inbound (the private host is the server) or outbound.
    let inbound = setup & 4 != 0;
    let (private_port, peer_port) = if inbound {
        (alg_port, 40000)
    } else {
        (40000, alg_port)
    };
    let cfg = EngineConfig {
        max_flows: 4,
        max_hold: 2048,
        ..EngineConfig::default()
    };
    let max_flows = cfg.max_flows;
    let mut engine = Engine::new(cfg);
    let t0 = Instant::now();
    let mut now = t0;
    // Next sequence number per direction (0: from private, 1: from public).
    let mut next = [0x1000_0000u32, 0x8000_0000u32];
    let mut handshake_done = false;
    let mut ops = 0;
    while let Some(op) = input.u8() {
        ops += 1;
        if ops > 64 {
            break;
        }
        let d = usize::from(op & 1);
        let dir = if d == 0 {
            Direction::FromPrivate
        } else {
            Direction::FromPublic
        };
        let (src, dst) = if d == 0 {
            ((PRIVATE, private_port), (PEER, peer_port))
        } else {
            ((PEER, peer_port), (PRIVATE, private_port))
        };
        let packet = if transport == Transport::Udp {
            let len = usize::from(input.u8().unwrap_or(0)) * 4;
            let payload = input.bytes(len).to_vec();
            udp_packet(src, dst, &payload)
        } else if !handshake_done && op & 0x80 == 0 {
            handshake_done = d == 1;
            let flags = if d == 0 { 0x02 } else { 0x12 };
            let seq = next[d].wrapping_sub(1);
            tcp_packet(&TcpSpec {
                src,
                dst,
                seq,
                ack: next[1 - d],
                flags,
                sack: &[],
                payload: &[],
            })
        } else {
            let kind = (op >> 1) & 7;
            let len = usize::from(input.u8().unwrap_or(0)) * 4;
            let payload = input.bytes(len).to_vec();
            let back = u32::from(input.u8().unwrap_or(0));
            let (seq, flags, payload) = match kind {
                // Retransmission from up to 255*8 bytes back.
                0 => (next[d].wrapping_sub(back * 8), 0x18, payload),
                // A pure ACK, maybe with a SACK block.
                1 => (next[d], 0x10, Vec::new()),
                2 => (next[d], 0x11, Vec::new()),
                3 => (next[d], 0x04, Vec::new()),
                // A segment after a gap.
                4 => (next[d].wrapping_add(back), 0x18, payload),
                _ => (next[d], 0x18, payload),
            };
            if kind >= 5 {
                next[d] = next[d].wrapping_add(payload.len() as u32);
            }
            let sack = [(next[1 - d].wrapping_sub(back * 4), next[1 - d])];
            let ack = next[1 - d].wrapping_sub(if kind == 1 { back } else { 0 });
            tcp_packet(&TcpSpec {
                src,
                dst,
                seq,
                ack,
                flags,
                sack: if kind == 1 && back & 1 == 1 {
                    &sack
                } else {
                    &[]
                },
                payload: &payload,
            })
        };
        if op & 0x40 != 0 {
            now += Duration::from_secs(u64::from(op & 0x3f) * 8);
            engine.expire(now);
        }
        let decision = engine.handle(now, dir, &packet, &Ctx);
        if let Verdict::Replace(out) = &decision.verdict {
            assert!(out.len() <= 65535);
            let p = Packet::parse(out).expect("a replaced packet parses");
            assert!(p.ip.header_checksum_ok(), "bad IP checksum");
            assert!(p.checksums_ok(), "bad TCP/UDP checksum");
            let orig = Packet::parse(&packet).expect("the fuzz packet parses");
            assert_eq!((p.ip.src(), p.ip.dst()), (orig.ip.src(), orig.ip.dst()));
            assert_eq!(
                (p.src_port(), p.dst_port()),
                (orig.src_port(), orig.dst_port())
            );
        }
        for ph in &decision.pinholes {
            assert!(ph.public_port != 0 && ph.private_port != 0, "{ph:?}");
        }
        assert!(engine.stats().flows <= max_flows);
    }
});
