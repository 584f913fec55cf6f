//! Both directions rewritten at once (as SIP over TCP): each side streams
//! lines through the engine while acknowledging the other side's data in the
//! same segments (piggybacked ACK and SACK), over a lossy, reordering
//! network with retransmissions. A test rewriter grows `G <word>` lines and
//! shrinks `S <word>` lines in both directions. Invariants as in
//! `stream_sim.rs`, for both streams: new bytes at the receiver are always
//! the expected rewritten bytes, ACK/SACK edges never cover unsent data, and
//! both transfers complete.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use rgw_alg::engine::{Engine, EngineConfig, Verdict};
use rgw_alg::packet::build::{tcp_packet, TcpSpec};
use rgw_alg::packet::{Packet, TcpFlags, Transport as L4};
use rgw_alg::{
    Direction, FlowAddrs, MessageResult, Outcome, PortAlloc, Protocol, Rewriter, Transport,
};

mod common;
use common::{check_ack, FixedCtx, Rng, StreamMap};

const PRIV: (Ipv4Addr, u16) = (Ipv4Addr::new(192, 168, 0, 101), 40000);
const PEER: (Ipv4Addr, u16) = (Ipv4Addr::new(198, 51, 100, 7), 7777);

const CTX: FixedCtx = FixedCtx {
    public: Ipv4Addr::new(1, 2, 3, 4),
    fqdn: None,
};

/// `G w\r\n` → `G ww\r\n`, `S w\r\n` → `S\r\n`, other lines unchanged.
struct LineRw;
impl Rewriter for LineRw {
    fn rewrite(
        &self,
        buf: &[u8],
        _: Direction,
        _: &FlowAddrs,
        _: &mut dyn PortAlloc,
    ) -> MessageResult {
        let Some(nl) = buf.iter().position(|&b| b == b'\n') else {
            return MessageResult {
                outcome: Outcome::Incomplete,
                consumed: 0,
                pinholes: Vec::new(),
            };
        };
        let line = &buf[..=nl];
        let outcome = match rewrite_line(line) {
            Some(new) => Outcome::Rewritten(new),
            None => Outcome::Unchanged,
        };
        MessageResult {
            outcome,
            consumed: line.len(),
            pinholes: Vec::new(),
        }
    }
}

fn rewrite_line(line: &[u8]) -> Option<Vec<u8>> {
    let word = line.get(2..line.len().checked_sub(2)?)?;
    match line.get(..2)? {
        b"G " => {
            let mut v = b"G ".to_vec();
            v.extend_from_slice(word);
            v.extend_from_slice(word);
            v.extend_from_slice(b"\r\n");
            Some(v)
        }
        b"S " => Some(b"S\r\n".to_vec()),
        _ => None,
    }
}

/// One TCP endpoint: its sending stream and its view of the other's.
struct End {
    dir: Direction,
    isn: u32,
    data: Vec<u8>,
    una: usize,
    nxt: usize,
    /// The other side's rewritten stream as expected, and what arrived.
    want: Vec<u8>,
    got: Vec<Option<u8>>,
    rcv_nxt: usize,
    /// The other side's ISN + 1 (rewritten space starts there too).
    peer_base: u32,
}

impl End {
    fn base(&self) -> u32 {
        self.isn.wrapping_add(1)
    }
    fn sack(&self) -> Vec<(u32, u32)> {
        let mut blocks = Vec::new();
        let mut i = self.rcv_nxt;
        while i < self.got.len() && blocks.len() < 3 {
            if self.got[i].is_some() {
                let s = i;
                while i < self.got.len() && self.got[i].is_some() {
                    i += 1;
                }
                blocks.push((
                    self.peer_base.wrapping_add(s as u32),
                    self.peer_base.wrapping_add(i as u32),
                ));
            } else {
                i += 1;
            }
        }
        blocks
    }
    fn packet(&self, from: usize, len: usize) -> Vec<u8> {
        let (src, dst) = match self.dir {
            Direction::FromPrivate => (PRIV, PEER),
            Direction::FromPublic => (PEER, PRIV),
        };
        let sack = self.sack();
        tcp_packet(&TcpSpec {
            src,
            dst,
            seq: self.base().wrapping_add(from as u32),
            ack: self.peer_base.wrapping_add(self.rcv_nxt as u32),
            flags: TcpFlags::ACK | TcpFlags::PSH,
            sack: &sack,
            payload: &self.data[from..from + len],
        })
    }
    /// A packet from the other side arrives (after the engine).
    /// Returns the ACK and SACK blocks relative to this end's first byte.
    fn receive(&mut self, p: &[u8], seed: u64) -> (u32, Vec<(u32, u32)>) {
        let pkt = Packet::parse(p).expect("parses");
        assert!(pkt.checksums_ok());
        let L4::Tcp(t) = pkt.l4 else { panic!("tcp") };
        let off = t.seq().wrapping_sub(self.peer_base) as usize;
        for (i, &b) in t.payload().iter().enumerate() {
            let at = off + i;
            assert!(at < self.want.len(), "seed {seed}: byte beyond the stream");
            if at < self.rcv_nxt {
                continue;
            }
            assert_eq!(b, self.want[at], "seed {seed} {:?}: byte {at}", self.dir);
            self.got[at] = Some(b);
        }
        while self.rcv_nxt < self.got.len() && self.got[self.rcv_nxt].is_some() {
            self.rcv_nxt += 1;
        }
        let base = self.base();
        let sack = t
            .sack_blocks()
            .iter()
            .map(|&(l, r)| (l.wrapping_sub(base), r.wrapping_sub(base)))
            .collect();
        (t.ack().wrapping_sub(base), sack)
    }
}

fn stream(rng: &mut Rng) -> (Vec<u8>, Vec<u8>, StreamMap) {
    let (mut o, mut w) = (Vec::new(), Vec::new());
    let mut map = StreamMap::default();
    for _ in 0..50 {
        let word = "w".repeat(1 + rng.below(12) as usize);
        let line = match rng.below(3) {
            0 => format!("G {word}\r\n"),
            1 => format!("S {word}\r\n"),
            _ => format!("N {word}\r\n"),
        };
        let new = rewrite_line(line.as_bytes()).unwrap_or(line.clone().into_bytes());
        map.push(line.len(), new.len());
        o.extend_from_slice(line.as_bytes());
        w.extend_from_slice(&new);
    }
    (o, w, map)
}

fn run(seed: u64) {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let cfg = EngineConfig {
        ports: vec![(Transport::Tcp, 7777, Protocol::Sip)],
        // Never give up on held bytes: the expected streams are exact.
        max_hold_retransmissions: u32::MAX,
        ..EngineConfig::default()
    };
    let mut e = Engine::new(cfg);
    e.set_rewriter(Protocol::Sip, Box::new(LineRw));
    let (a_data, a_want, a_map) = stream(&mut rng);
    let (b_data, b_want, b_map) = stream(&mut rng);
    let maps = [a_map, b_map];
    let a_isn = if seed & 1 == 0 {
        0xFFFF_FFC0u32.wrapping_add(rng.below(0x40) as u32)
    } else {
        rng.next() as u32
    };
    let b_isn = rng.next() as u32;
    let mut ends = [
        End {
            dir: Direction::FromPrivate,
            isn: a_isn,
            data: a_data,
            una: 0,
            nxt: 0,
            got: vec![None; b_want.len()],
            want: b_want,
            rcv_nxt: 0,
            peer_base: b_isn.wrapping_add(1),
        },
        End {
            dir: Direction::FromPublic,
            isn: b_isn,
            data: b_data,
            una: 0,
            nxt: 0,
            got: vec![None; a_want.len()],
            want: a_want,
            rcv_nxt: 0,
            peer_base: a_isn.wrapping_add(1),
        },
    ];
    let mut now = Instant::now();
    // Handshake.
    let syn = tcp_packet(&TcpSpec {
        src: PRIV,
        dst: PEER,
        seq: a_isn,
        ack: 0,
        flags: TcpFlags::SYN,
        sack: &[],
        payload: b"",
    });
    e.handle(now, Direction::FromPrivate, &syn, &CTX);
    let synack = tcp_packet(&TcpSpec {
        src: PEER,
        dst: PRIV,
        seq: b_isn,
        ack: a_isn.wrapping_add(1),
        flags: TcpFlags::SYN | TcpFlags::ACK,
        sack: &[],
        payload: b"",
    });
    e.handle(now, Direction::FromPublic, &synack, &CTX);

    // Queues: [to gateway from end i], [from gateway to end i's peer].
    let mut to_gw: [Vec<Vec<u8>>; 2] = [Vec::new(), Vec::new()];
    let mut to_end: [Vec<Vec<u8>>; 2] = [Vec::new(), Vec::new()];
    let mut steps = 0;
    let done = |ends: &[End; 2]| {
        ends.iter()
            .all(|x| x.una == x.data.len() && x.rcv_nxt == x.want.len())
    };
    while !done(&ends) {
        steps += 1;
        assert!(steps < 500_000, "seed {seed}: stalled");
        now += Duration::from_millis(1);
        let i = rng.below(2) as usize;
        let j = 1 - i;
        match rng.below(8) {
            0..=1 => {
                let x = &mut ends[i];
                if x.nxt < x.data.len() && x.nxt - x.una < 300 {
                    let len = 1 + rng.below(30.min((x.data.len() - x.nxt) as u64)) as usize;
                    to_gw[i].push(x.packet(x.nxt, len));
                    x.nxt += len;
                } else {
                    to_gw[i].push(x.packet(x.nxt, 0)); // pure ACK
                }
            }
            2 => {
                let x = &mut ends[i];
                let idle = to_gw[i].is_empty() && to_end[j].is_empty();
                if x.una < x.nxt && rng.chance(if idle { 100 } else { 15 }) {
                    let max = (x.nxt - x.una + 30).min(x.data.len() - x.una);
                    let len = 1 + rng.below(max as u64) as usize;
                    to_gw[i].push(x.packet(x.una, len));
                    x.nxt = x.nxt.max(x.una + len);
                } else if idle {
                    to_gw[i].push(x.packet(x.nxt, 0));
                }
            }
            3..=4 => {
                if to_gw[i].is_empty() {
                    continue;
                }
                let k = if rng.chance(70) {
                    0
                } else {
                    rng.below(to_gw[i].len() as u64) as usize
                };
                let p = to_gw[i].remove(k);
                if rng.chance(5) {
                    continue;
                }
                let d = e.handle(now, ends[i].dir, &p, &CTX);
                match d.verdict {
                    Verdict::Accept => to_end[j].push(p),
                    Verdict::Replace(b) => to_end[j].push(b),
                    Verdict::Drop => {}
                }
            }
            _ => {
                if to_end[j].is_empty() {
                    continue;
                }
                let k = if rng.chance(70) {
                    0
                } else {
                    rng.below(to_end[j].len() as u64) as usize
                };
                let p = to_end[j].remove(k);
                if rng.chance(5) {
                    continue;
                }
                let (ack, sack) = ends[j].receive(&p, seed);
                // ends[j]'s stream is received by ends[i].
                let what = format!("seed {seed} end {j}");
                let una = check_ack(
                    &maps[j],
                    &ends[i].got,
                    ends[i].rcv_nxt,
                    ends[j].una,
                    ends[j].nxt,
                    ack,
                    &sack,
                    &what,
                );
                assert!(una <= ends[j].nxt, "{what}: ACK beyond sent");
                ends[j].una = una;
            }
        }
    }
    let s = e.stats();
    assert!(s.rewrites > 0 && s.malformed == 0, "seed {seed}: {s:?}");
}

#[test]
fn both_directions_rewritten_over_a_lossy_network() {
    for seed in 1..=100 {
        run(seed);
    }
}
