//! End-to-end property test of the engine on a simulated lossy, reordering
//! network: a sender streams FTP control lines (with PORT/EPRT or 227/229
//! messages) in random segments through the engine to a receiver; segments
//! and ACKs are lost, reordered and retransmitted (also collapsed, also
//! re-segmented). Invariants:
//!
//! * every byte the receiver gets beyond what it already has is the byte
//!   of the expected rewritten stream at that position (no shifted or half
//!   rewritten data, ever; data below the receiver's next expected byte is
//!   discarded unread by TCP and is not checked);
//! * an ACK or SACK edge reaching the sender never covers data it has not
//!   sent;
//! * the transfer completes and the receiver's stream equals the expected
//!   rewritten stream.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use rgw_alg::engine::{Engine, EngineConfig, Verdict};
use rgw_alg::packet::build::{tcp_packet, TcpSpec};
use rgw_alg::packet::{Packet, TcpFlags, Transport as L4};
use rgw_alg::Direction;

mod common;
use common::{check_ack, FixedCtx, Rng, StreamMap};

const PRIV: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 101);
const PEER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
const PUB: Ipv4Addr = Ipv4Addr::new(1, 2, 3, 4);

const CTX: FixedCtx = FixedCtx {
    public: PUB,
    fqdn: None,
};

/// Lines as (original, rewritten).
type Lines = Vec<(Vec<u8>, Vec<u8>)>;

/// (original stream, expected rewritten stream, their map, the lines)
fn streams(rng: &mut Rng, server: bool) -> (Vec<u8>, Vec<u8>, StreamMap, Lines) {
    let mut map = StreamMap::default();
    let mut lines = Vec::new();
    let mut orig = Vec::new();
    let mut want = Vec::new();
    for _ in 0..60 {
        let a = 4 + rng.below(250);
        let b = rng.below(256);
        let port = a * 256 + b;
        let (o, w) = match (server, rng.below(6)) {
            (false, 0 | 1) => (
                format!("PORT 192,168,0,101,{a},{b}\r\n"),
                format!("PORT 1,2,3,4,{a},{b}\r\n"),
            ),
            (false, 2) => (
                format!("EPRT |1|192.168.0.101|{port}|\r\n"),
                format!("EPRT |1|1.2.3.4|{port}|\r\n"),
            ),
            (false, 3) => (
                "PORT 10,0,0,1,4,1\r\n".into(),
                "PORT 10,0,0,1,4,1\r\n".into(),
            ),
            (true, 0 | 1) => (
                format!("227 Entering Passive Mode (192,168,0,101,{a},{b}).\r\n"),
                format!("227 Entering Passive Mode (1,2,3,4,{a},{b}).\r\n"),
            ),
            (true, 2) => {
                let s = format!("229 Entering Extended Passive Mode (|||{port}|)\r\n");
                (s.clone(), s)
            }
            (_, n) => {
                let s = format!("RETR file-{n}-{}\r\n", "x".repeat(rng.below(30) as usize));
                (s.clone(), s)
            }
        };
        orig.extend_from_slice(o.as_bytes());
        want.extend_from_slice(w.as_bytes());
        map.push(o.len(), w.len());
        lines.push((o.into_bytes(), w.into_bytes()));
    }
    (orig, want, map, lines)
}

fn pick(rng: &mut Rng, q: &mut Vec<Vec<u8>>) -> Option<Vec<u8>> {
    if q.is_empty() {
        return None;
    }
    // Mostly in order, sometimes reordered.
    let i = if rng.chance(70) {
        0
    } else {
        rng.below(q.len() as u64) as usize
    };
    Some(q.remove(i))
}

fn tcp_of(p: &[u8]) -> (u32, u32, Vec<u8>, Vec<(u32, u32)>) {
    let pkt = Packet::parse(p).expect("parses");
    assert!(pkt.checksums_ok());
    let L4::Tcp(t) = pkt.l4 else { panic!("tcp") };
    (t.seq(), t.ack(), t.payload().to_vec(), t.sack_blocks())
}

fn run(seed: u64, server: bool) {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let (orig, want, map, _) = streams(&mut rng, server);
    // The data sender is the private host; the receiver the public peer.
    let (private, peer) = if server {
        ((PRIV, 21), (PEER, 50000))
    } else {
        ((PRIV, 40000), (PEER, 21))
    };
    let isn = if seed & 1 == 0 {
        0xFFFF_FF00u32.wrapping_add(rng.below(0x100) as u32)
    } else {
        rng.next() as u32
    };
    let peer_isn = rng.next() as u32;
    let base = isn.wrapping_add(1);
    let mut e = Engine::new(EngineConfig {
        // Senders here always retransmit eventually with the rest (as a
        // collapsed retransmission), so held bytes are never given up on and
        // the expected stream is exact.
        max_hold_retransmissions: u32::MAX,
        ..EngineConfig::default()
    });
    let mut now = Instant::now();
    let seg = |dir: Direction, seq: u32, ack: u32, flags: u8, data: &[u8], sack: &[(u32, u32)]| {
        let (src, dst) = match dir {
            Direction::FromPrivate => (private, peer),
            Direction::FromPublic => (peer, private),
        };
        tcp_packet(&TcpSpec {
            src,
            dst,
            seq,
            ack,
            flags,
            sack,
            payload: data,
        })
    };
    // Handshake (the private host opens for the client case; for the
    // server case the peer opens; either way both ISNs are seen).
    let syn = seg(
        Direction::FromPrivate,
        isn,
        peer_isn.wrapping_add(1),
        TcpFlags::SYN | TcpFlags::ACK,
        b"",
        &[],
    );
    if server {
        let s = seg(Direction::FromPublic, peer_isn, 0, TcpFlags::SYN, b"", &[]);
        e.handle(now, Direction::FromPublic, &s, &CTX);
    }
    let d = e.handle(now, Direction::FromPrivate, &syn, &CTX);
    assert_eq!(d.verdict, Verdict::Accept);

    let (mut una, mut nxt) = (0usize, 0usize);
    let mut to_gw: Vec<Vec<u8>> = Vec::new();
    let mut to_rcv: Vec<Vec<u8>> = Vec::new();
    let mut acks: Vec<Vec<u8>> = Vec::new();
    let mut got: Vec<Option<u8>> = vec![None; want.len()];
    let mut rcv_nxt = 0usize;
    let mut steps = 0;
    while una < orig.len() {
        steps += 1;
        assert!(
            steps < 400_000,
            "seed {seed} server {server}: stalled at una {una}/{}",
            orig.len()
        );
        now += Duration::from_millis(1);
        match rng.below(10) {
            0..=2 if nxt < orig.len() && nxt - una < 400 => {
                let len = 1 + rng.below(40.min((orig.len() - nxt) as u64)) as usize;
                let p = seg(
                    Direction::FromPrivate,
                    base.wrapping_add(nxt as u32),
                    peer_isn.wrapping_add(1),
                    TcpFlags::ACK | TcpFlags::PSH,
                    &orig[nxt..nxt + len],
                    &[],
                );
                to_gw.push(p);
                nxt += len;
            }
            3 if una < nxt
                && rng.chance(if to_gw.is_empty() && to_rcv.is_empty() {
                    100
                } else {
                    20
                }) =>
            {
                // Retransmission from una: the same, shorter, or collapsed
                // with new data.
                let max = (nxt - una + 40).min(orig.len() - una);
                let len = 1 + rng.below(max as u64) as usize;
                let p = seg(
                    Direction::FromPrivate,
                    base.wrapping_add(una as u32),
                    peer_isn.wrapping_add(1),
                    TcpFlags::ACK | TcpFlags::PSH,
                    &orig[una..una + len],
                    &[],
                );
                to_gw.push(p);
                nxt = nxt.max(una + len);
            }
            4..=5 => {
                if let Some(p) = pick(&mut rng, &mut to_gw) {
                    if rng.chance(5) {
                        continue; // lost before the gateway
                    }
                    let d = e.handle(now, Direction::FromPrivate, &p, &CTX);
                    match d.verdict {
                        Verdict::Accept => to_rcv.push(p),
                        Verdict::Replace(b) => to_rcv.push(b),
                        Verdict::Drop => {}
                    }
                }
            }
            6..=7 => {
                if let Some(p) = pick(&mut rng, &mut to_rcv) {
                    if rng.chance(5) {
                        continue; // lost after the gateway
                    }
                    let (seq, _, data, _) = tcp_of(&p);
                    let off = seq.wrapping_sub(base) as usize;
                    for (i, &b) in data.iter().enumerate() {
                        let at = off + i;
                        assert!(
                            at < want.len(),
                            "seed {seed}: byte beyond the stream at {at}"
                        );
                        if at < rcv_nxt {
                            continue; // old data: TCP discards it unread
                        }
                        assert_eq!(
                            b, want[at],
                            "seed {seed} server {server}: wrong byte at {at}"
                        );
                        got[at] = Some(b);
                    }
                    while rcv_nxt < got.len() && got[rcv_nxt].is_some() {
                        rcv_nxt += 1;
                    }
                    // ACK with up to 3 SACK blocks of data beyond rcv_nxt.
                    let mut blocks = Vec::new();
                    let mut i = rcv_nxt;
                    while i < got.len() && blocks.len() < 3 {
                        if got[i].is_some() {
                            let s = i;
                            while i < got.len() && got[i].is_some() {
                                i += 1;
                            }
                            blocks.push((base.wrapping_add(s as u32), base.wrapping_add(i as u32)));
                        } else {
                            i += 1;
                        }
                    }
                    let a = seg(
                        Direction::FromPublic,
                        peer_isn.wrapping_add(1),
                        base.wrapping_add(rcv_nxt as u32),
                        TcpFlags::ACK,
                        b"",
                        &blocks,
                    );
                    acks.push(a);
                }
            }
            _ => {
                if let Some(a) = pick(&mut rng, &mut acks) {
                    if rng.chance(5) {
                        continue;
                    }
                    let d = e.handle(now, Direction::FromPublic, &a, &CTX);
                    let out = match d.verdict {
                        Verdict::Accept => a,
                        Verdict::Replace(b) => b,
                        Verdict::Drop => panic!("seed {seed}: an ACK was dropped"),
                    };
                    let (_, ack, _, sack) = tcp_of(&out);
                    let rel: Vec<(u32, u32)> = sack
                        .iter()
                        .map(|&(l, r)| (l.wrapping_sub(base), r.wrapping_sub(base)))
                        .collect();
                    let what = format!("seed {seed} server {server}");
                    una = check_ack(
                        &map,
                        &got,
                        rcv_nxt,
                        una,
                        nxt,
                        ack.wrapping_sub(base),
                        &rel,
                        &what,
                    );
                    assert!(una <= nxt, "{what}: ACK beyond sent");
                }
            }
        }
        if steps % 5000 < 1 {
            e.expire(now);
        }
    }
    assert_eq!(rcv_nxt, want.len());
    let stream: Vec<u8> = got.into_iter().map(|b| b.unwrap_or(0)).collect();
    assert_eq!(stream, want, "seed {seed}");
    let s = e.stats();
    assert!(s.rewrites > 0, "seed {seed}: nothing rewritten");
    assert_eq!(s.malformed, 0);
}

#[test]
fn lossy_reordering_network_private_client() {
    for seed in 1..=100 {
        run(seed, false);
    }
}

#[test]
fn lossy_reordering_network_private_server() {
    for seed in 1..=100 {
        run(seed, true);
    }
}

/// A sender with Nagle and without tail loss probes or collapsing (the
/// worst case for held messages): the application writes each line in one
/// or two pieces; a piece goes out at once only when nothing is
/// outstanding, otherwise it waits for the ACK and goes out with the queued
/// rest; a retransmission resends exactly the first unacknowledged segment.
/// With the default configuration held bytes are then given up on; the
/// transfer must still complete, every line must arrive either rewritten or
/// as it was (never half of each), and no position may ever receive two
/// different bytes.
fn run_nagle(seed: u64) -> (u64, u64) {
    let mut rng = Rng(seed.wrapping_mul(0xD1B5_4A32_D192_ED03) | 1);
    let (orig, _, _, lines) = streams(&mut rng, false);
    // Write boundaries: each line end, and sometimes a split inside it.
    let mut writes = Vec::new();
    let mut at = 0;
    for (o, _) in &lines {
        if rng.chance(40) {
            writes.push(at + 1 + rng.below(o.len() as u64 - 1) as usize);
        }
        at += o.len();
        writes.push(at);
    }
    let isn = rng.next() as u32;
    let base = isn.wrapping_add(1);
    let mut e = Engine::new(EngineConfig::default());
    let mut now = Instant::now();
    let seg = |seq: u32, flags: u8, data: &[u8]| {
        tcp_packet(&TcpSpec {
            src: (PRIV, 40000),
            dst: (PEER, 21),
            seq,
            ack: 1,
            flags,
            sack: &[],
            payload: data,
        })
    };
    e.handle(
        now,
        Direction::FromPrivate,
        &seg(isn, TcpFlags::SYN, b""),
        &CTX,
    );
    let (mut una, mut nxt, mut written, mut w) = (0usize, 0usize, 0usize, 0usize);
    let mut sent: Vec<(usize, usize)> = Vec::new();
    let mut to_gw: Vec<Vec<u8>> = Vec::new();
    let mut to_rcv: Vec<Vec<u8>> = Vec::new();
    let mut acks: Vec<u32> = Vec::new();
    let mut got: Vec<Option<u8>> = Vec::new();
    let mut rcv_nxt = 0usize;
    let mut steps = 0;
    while una < orig.len() {
        steps += 1;
        assert!(steps < 400_000, "nagle seed {seed}: stalled at {una}");
        now += std::time::Duration::from_millis(1);
        if w < writes.len() && rng.chance(30) {
            written = writes[w];
            w += 1;
        }
        if una == nxt && nxt < written {
            let end = written.min(nxt + 100);
            to_gw.push(seg(
                base.wrapping_add(nxt as u32),
                TcpFlags::ACK | TcpFlags::PSH,
                &orig[nxt..end],
            ));
            sent.push((nxt, end));
            nxt = end;
        }
        match rng.below(4) {
            0 => {
                if let Some(p) = pick(&mut rng, &mut to_gw) {
                    if rng.chance(5) {
                        continue;
                    }
                    match e.handle(now, Direction::FromPrivate, &p, &CTX).verdict {
                        Verdict::Accept => to_rcv.push(p),
                        Verdict::Replace(b) => to_rcv.push(b),
                        Verdict::Drop => {}
                    }
                } else if una < nxt && to_rcv.is_empty() && acks.is_empty() {
                    // Retransmission timeout: the first unacknowledged
                    // segment, exactly.
                    let &(_, end) = sent
                        .iter()
                        .find(|&&(s, e)| s <= una && una < e)
                        .expect("segment");
                    to_gw.push(seg(
                        base.wrapping_add(una as u32),
                        TcpFlags::ACK | TcpFlags::PSH,
                        &orig[una..end],
                    ));
                }
            }
            1 => {
                if let Some(p) = pick(&mut rng, &mut to_rcv) {
                    if rng.chance(5) {
                        continue;
                    }
                    let pkt = Packet::parse(&p).expect("parses");
                    assert!(pkt.checksums_ok());
                    let L4::Tcp(t) = pkt.l4 else { panic!("tcp") };
                    let off = t.seq().wrapping_sub(base) as usize;
                    if got.len() < off + t.payload().len() {
                        got.resize(off + t.payload().len(), None);
                    }
                    for (i, &b) in t.payload().iter().enumerate() {
                        if let Some(old) = got[off + i] {
                            assert_eq!(old, b, "nagle seed {seed}: two bytes at {}", off + i);
                        }
                        got[off + i] = Some(b);
                    }
                    while rcv_nxt < got.len() && got[rcv_nxt].is_some() {
                        rcv_nxt += 1;
                    }
                    acks.push(base.wrapping_add(rcv_nxt as u32));
                }
            }
            _ => {
                if acks.is_empty() {
                    continue;
                }
                let a = acks.remove(0);
                if rng.chance(5) {
                    continue;
                }
                let p = tcp_packet(&TcpSpec {
                    src: (PEER, 21),
                    dst: (PRIV, 40000),
                    seq: 1,
                    ack: a,
                    flags: TcpFlags::ACK,
                    sack: &[],
                    payload: b"",
                });
                let out = match e.handle(now, Direction::FromPublic, &p, &CTX).verdict {
                    Verdict::Accept => p,
                    Verdict::Replace(b) => b,
                    Verdict::Drop => panic!("ACK dropped"),
                };
                let pkt = Packet::parse(&out).expect("parses");
                let L4::Tcp(t) = pkt.l4 else { panic!("tcp") };
                let acked = t.ack().wrapping_sub(base);
                if (acked.wrapping_sub(una as u32) as i32) > 0 {
                    assert!(acked as usize <= nxt, "nagle seed {seed}: ACK beyond sent");
                    una = acked as usize;
                }
            }
        }
    }
    // Every line arrived rewritten or as it was.
    let stream: Vec<u8> = got[..rcv_nxt].iter().map(|b| b.unwrap_or(0)).collect();
    let mut rest = stream.as_slice();
    for (o, w) in &lines {
        if rest.starts_with(w) {
            rest = &rest[w.len()..];
        } else if rest.starts_with(o) {
            rest = &rest[o.len()..];
        } else {
            panic!(
                "nagle seed {seed}: line {:?} mangled",
                String::from_utf8_lossy(o)
            );
        }
    }
    assert!(rest.is_empty(), "nagle seed {seed}: trailing bytes");
    let s = e.stats();
    (s.holds_given_up, s.rewrites)
}

#[test]
fn nagle_sender_without_tail_loss_probe_completes() {
    let (mut gave_up, mut rewrites) = (0, 0);
    for seed in 1..=100 {
        let (g, r) = run_nagle(seed);
        gave_up += g;
        rewrites += r;
    }
    // Both paths exercised: split commands given up on, others rewritten.
    assert!(gave_up > 0 && rewrites > 0, "{gave_up} {rewrites}");
}
