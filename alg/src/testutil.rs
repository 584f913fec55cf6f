//! Shared by the rewriter, SDP and packet tests: flows, port allocators,
//! expected pinholes, a small random number generator and the robustness
//! loops (every split point, random and mutated input).

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use crate::{Direction, FlowAddrs, Outcome, Pinhole, PortAlloc, Rewriter, Role, Transport};

pub const PRIVATE: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 101);
pub const PEER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
pub const PUBLIC: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);

pub fn flow(role: Role, transport: Transport, private_port: u16, peer_port: u16) -> FlowAddrs {
    FlowAddrs {
        private: SocketAddrV4::new(PRIVATE, private_port),
        peer: SocketAddrV4::new(PEER, peer_port),
        public: PUBLIC,
        host_fqdn: None,
        private_v6: None,
        prefix64: None,
        epsv_for_pasv: false,
        peer_v6: None,
        public_v6: None,
        role,
        transport,
    }
}

/// public port = private port + offset (deterministic, like the engine's).
pub struct OffsetPorts(pub u16);
impl PortAlloc for OffsetPorts {
    fn public_port(&mut self, _t: Transport, private_port: u16) -> Option<u16> {
        Some(private_port.wrapping_add(self.0))
    }
}

/// Explicit table; unknown ports keep their number.
pub struct TablePorts(pub Vec<(u16, u16)>);
impl PortAlloc for TablePorts {
    fn public_port(&mut self, _t: Transport, private_port: u16) -> Option<u16> {
        Some(
            self.0
                .iter()
                .find(|(p, _)| *p == private_port)
                .map_or(private_port, |(_, q)| *q),
        )
    }
}

/// The media pinhole a rewriter asks for: UDP from the peer to
/// `PUBLIC:public_port`, towards `PRIVATE:private_port`, its lifetime
/// left to the engine.
pub fn media_pinhole(public_port: u16, private_port: u16, snat: bool) -> Pinhole {
    Pinhole {
        peer: PEER,
        transport: Transport::Udp,
        public_addr: PUBLIC,
        public_port,
        private_addr: PRIVATE,
        private_port,
        lifetime: Duration::ZERO,
        snat,
        v6: None,
    }
}

/// Pool exhausted.
pub struct NoPorts;
impl PortAlloc for NoPorts {
    fn public_port(&mut self, _t: Transport, _p: u16) -> Option<u16> {
        None
    }
}

pub fn replace(hay: &[u8], from: &str, to: &str) -> Vec<u8> {
    let s = String::from_utf8_lossy(hay);
    s.replace(from, to).into_bytes()
}

/// The rewritten bytes (or the input when unchanged).
pub fn output(outcome: &Outcome, input: &[u8]) -> Vec<u8> {
    match outcome {
        Outcome::Rewritten(b) => b.clone(),
        Outcome::Unchanged => input.to_vec(),
        other => panic!("expected a complete message, got {other:?}"),
    }
}

/// Every strict prefix of a stream message is Incomplete with nothing
/// consumed; the whole message is complete and consumed exactly.
pub fn check_splits(rw: &dyn Rewriter, msg: &[u8], dir: Direction, flow: &FlowAddrs) {
    for cut in 0..msg.len() {
        let r = rw.rewrite(&msg[..cut], dir, flow, &mut OffsetPorts(1000));
        assert_eq!(
            (r.outcome.clone(), r.consumed),
            (Outcome::Incomplete, 0),
            "prefix of {cut} bytes of {:?}",
            String::from_utf8_lossy(msg)
        );
        assert!(r.pinholes.is_empty());
    }
    let r = rw.rewrite(msg, dir, flow, &mut OffsetPorts(1000));
    assert!(matches!(
        r.outcome,
        Outcome::Unchanged | Outcome::Rewritten(_)
    ));
    assert_eq!(r.consumed, msg.len());
}

pub struct XorShift(pub u64);
impl XorShift {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Random bytes, random text and mutated real messages: never a panic;
/// on a stream every verdict but Incomplete consumes 1..=len bytes, on
/// a datagram every verdict consumes the datagram.
pub fn fuzz(rw: &dyn Rewriter, seeds: &[&[u8]], role: Role, transport: Transport) {
    let flow = flow(role, transport, 5060, 5060);
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    const ALPHABET: &[u8] = b"SIPRTS/2.0 :;=,<>@\r\n\"$-192.168.0.101 Content-Length: 12\tv\0";
    for i in 0..20_000 {
        let mut buf: Vec<u8> = match i % 3 {
            0 => (0..rng.below(300)).map(|_| rng.next() as u8).collect(),
            1 => (0..rng.below(300))
                .map(|_| ALPHABET[rng.below(ALPHABET.len())])
                .collect(),
            _ => {
                let mut m = seeds[rng.below(seeds.len())].to_vec();
                for _ in 0..1 + rng.below(4) {
                    let len = m.len();
                    match rng.below(4) {
                        0 if len > 0 => {
                            let p = rng.below(len);
                            m[p] = rng.next() as u8;
                        }
                        1 if len > 0 => {
                            let p = rng.below(len);
                            m[p] = ALPHABET[rng.below(ALPHABET.len())];
                        }
                        2 => m.truncate(rng.below(len + 1)),
                        _ => {
                            let p = rng.below(len + 1);
                            m.insert(p, ALPHABET[rng.below(ALPHABET.len())]);
                        }
                    }
                }
                m
            }
        };
        if i % 7 == 0 {
            buf.extend_from_slice(b"\r\n\r\n");
        }
        for dir in [Direction::FromPrivate, Direction::FromPublic] {
            let r = rw.rewrite(&buf, dir, &flow, &mut OffsetPorts(7));
            match (transport, &r.outcome) {
                (Transport::Tcp, Outcome::Incomplete) => assert_eq!(r.consumed, 0),
                (Transport::Tcp, _) => {
                    assert!(
                        r.consumed >= 1 && r.consumed <= buf.len(),
                        "{r:?} for {buf:?}"
                    )
                }
                (Transport::Udp, o) => {
                    assert_ne!(*o, Outcome::Incomplete);
                    assert_eq!(r.consumed, buf.len(), "{r:?} for {buf:?}");
                }
            }
            if !matches!(r.outcome, Outcome::Rewritten(_)) {
                assert!(r.pinholes.is_empty() || r.outcome == Outcome::Unchanged);
            }
        }
    }
}
