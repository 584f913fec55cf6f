//! Fuzz harnesses of the ALG crate, shared by the cargo-fuzz targets in
//! `fuzz/` (nightly, feature `fuzzing`) and the stable tests below that
//! replay the kept corpus (`fuzz/corpus/<target>/`) and every crash found.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use crate::engine::{Engine, EngineConfig, FlowContext, Verdict};
use crate::packet::build::{tcp_packet, udp_packet, TcpSpec};
use crate::packet::Packet;
use crate::seqadj::{SeqAdjust, MAX_CORRECTIONS};
use crate::{
    ftp, rtsp, sip, Direction, FlowAddrs, MessageResult, Outcome, PortAlloc, Rewriter, Role,
    Transport,
};

/// Reads the fuzz input as a little instruction stream.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn bytes(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.0.len());
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a
    }
    fn u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes([self.u8()?, self.u8()?]))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes([
            self.u8()?,
            self.u8()?,
            self.u8()?,
            self.u8()?,
        ]))
    }
}

/// One segment of the naive reference: original and rewritten positions.
#[derive(Clone, Copy)]
struct Seg {
    orig: u32,
    old: u32,
    new: u32,
    rw: u32,
}

/// Target `seqadj`: a model check of [`SeqAdjust`] against a naive
/// reference that remembers every segment of the stream with its original
/// and rewritten position.
///
/// The input is an ISN followed by operations: send the next segment
/// (rewritten or not), retransmit an unacknowledged one (recorded again),
/// or an ACK from the peer (pruning). While fewer than [`MAX_CORRECTIONS`]
/// rewrites are unacknowledged, every unacknowledged segment must map
/// exactly: its start, its last byte (keepalive), ACKs at its edges and a
/// SACK block covering it; an ACK inside a rewritten segment must never
/// acknowledge more than was really sent; and the tracker never keeps more
/// than [`MAX_CORRECTIONS`] points.
pub fn seqadj(data: &[u8]) {
    let mut input = Bytes(data);
    let Some(isn) = input.u32() else {
        return;
    };
    let mut segs: Vec<Seg> = Vec::new();
    let (mut orig, mut rw) = (isn, isn);
    let mut acked = 0usize; // segments [0, acked) are acknowledged
    let mut a = SeqAdjust::new();
    while let Some(op) = input.u8() {
        match op % 4 {
            0 | 1 => {
                if segs.len() >= 4096 {
                    break;
                }
                let old = u32::from(input.u16().unwrap_or(1)).clamp(1, 9000);
                let new = if op % 4 == 1 {
                    let d = i32::from(input.u8().unwrap_or(0) as i8);
                    (old as i32 + d).max(1) as u32
                } else {
                    old
                };
                // Keeps the exact window: the tracker folds the oldest point
                // away beyond MAX_CORRECTIONS unacknowledged rewrites.
                let unacked_rewrites = segs[acked..].iter().filter(|s| s.old != s.new).count();
                let new = if unacked_rewrites + 1 >= MAX_CORRECTIONS {
                    old
                } else {
                    new
                };
                segs.push(Seg { orig, old, new, rw });
                if old != new {
                    a.record(orig, old, new);
                }
                orig = orig.wrapping_add(old);
                rw = rw.wrapping_add(new);
            }
            2 => {
                let pick = usize::from(input.u8().unwrap_or(0));
                if segs.len() > acked {
                    let s = segs[acked + pick % (segs.len() - acked)];
                    if s.old != s.new {
                        a.record(s.orig, s.old, s.new);
                    }
                }
            }
            _ => {
                let pick = usize::from(input.u8().unwrap_or(0));
                if segs.len() > acked {
                    let to = acked + 1 + pick % (segs.len() - acked);
                    let last = segs[to - 1];
                    // A partial ACK inside a rewritten segment never
                    // acknowledges beyond the segment's original start.
                    if last.new > 1 {
                        let inside = last.rw.wrapping_add(last.new / 2);
                        if last.old != last.new && inside != last.rw {
                            assert_eq!(a.unmap_ack(inside), last.orig, "ack inside a rewrite");
                        }
                    }
                    acked = to;
                    a.prune(last.rw.wrapping_add(last.new));
                }
            }
        }
        assert!(a.len() <= MAX_CORRECTIONS);
        for (i, s) in segs.iter().enumerate().skip(acked.saturating_sub(1)) {
            let (e, re) = (s.orig.wrapping_add(s.old), s.rw.wrapping_add(s.new));
            assert_eq!(a.map_seq(s.orig), s.rw, "segment {i} start");
            assert_eq!(a.unmap_ack(re), e, "segment {i} end");
            assert_eq!(a.unmap_ack(s.rw), s.orig, "segment {i} ack at start");
            if s.old > 1 {
                assert_eq!(
                    a.map_seq(e.wrapping_sub(1)),
                    re.wrapping_sub(1),
                    "segment {i} keepalive"
                );
            }
            let mut sack = [(s.rw, re)];
            a.unmap_sack(&mut sack);
            assert_eq!(sack, [(s.orig, e)], "segment {i} sack");
        }
    }
}

/// Hands out `private + offset` (never 0), or nothing when `offset == 0`.
struct Ports {
    offset: u16,
}

impl PortAlloc for Ports {
    fn public_port(&mut self, _t: Transport, private_port: u16) -> Option<u16> {
        if self.offset == 0 {
            None
        } else {
            Some(private_port.wrapping_add(self.offset).max(1))
        }
    }
}

/// Targets `alg_ftp`, `alg_sip`, `alg_rtsp` (through [`alg_ftp`] etc.).
///
/// Byte 0 chooses direction, role, transport, whether the host FQDN is known
/// and whether ports can be allocated; the rest is one message (or the start
/// of a stream).
///
/// Invariants: no panic; `consumed` never exceeds the input; `Incomplete`
/// consumes nothing; a complete message consumes at least one byte; a
/// malformed stream is skipped by at least one byte; the same input gives the
/// same result (a retransmission is rewritten identically); every pinhole is
/// for the flow's public address or the private host, with a non-zero port,
/// and leaves its lifetime to the engine (zero).
pub fn check_rewriter(rw: &dyn Rewriter, data: &[u8], alg_port: u16) {
    let Some((&ctl, buf)) = data.split_first() else {
        return;
    };
    let dir = if ctl & 1 == 0 {
        Direction::FromPrivate
    } else {
        Direction::FromPublic
    };
    let role = if ctl & 2 == 0 {
        Role::PrivateClient
    } else {
        Role::PrivateServer
    };
    let transport = if ctl & 4 == 0 {
        Transport::Tcp
    } else {
        Transport::Udp
    };
    let private = Ipv4Addr::new(192, 168, 0, 101);
    let public = Ipv4Addr::new(198, 51, 100, 17);
    let (private_port, peer_port) = match role {
        Role::PrivateServer => (alg_port, 40000),
        Role::PrivateClient => (40000, alg_port),
    };
    let flow = FlowAddrs {
        private: SocketAddrV4::new(private, private_port),
        peer: SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 10), peer_port),
        public,
        host_fqdn: (ctl & 8 != 0).then(|| "hosta.gwa.demo".to_string()),
        role,
        transport,
        // Bit 5: the private end is an IPv6-only host behind the translator.
        private_v6: (ctl & 32 != 0).then(|| Ipv6Addr::new(0xfd00, 0x192, 0x168, 0, 0, 0, 0, 0x103)),
        prefix64: (ctl & (32 | 128) != 0).then(|| Ipv6Addr::new(0xfd64, 0x64, 0, 0, 0, 0, 0, 0)),
        // Bit 6: a PASV of the client was turned into EPSV (IPv6-only server).
        epsv_for_pasv: ctl & 64 != 0,
        // Bit 7 (without bit 5): NAT46, the peer is an IPv6-only server
        // behind its proxy IPv4.
        peer_v6: (ctl & (32 | 128) == 128)
            .then(|| Ipv6Addr::new(0x2001, 0xdb8, 0, 0x113, 0, 0, 0, 0x80)),
        public_v6: (ctl & (32 | 128) == 128)
            .then(|| Ipv6Addr::new(0x2001, 0xdb8, 0, 0x100, 0, 0, 0, 2)),
    };
    let offset = if ctl & 16 == 0 { 1000 } else { 0 };
    let run = || -> MessageResult { rw.rewrite(buf, dir, &flow, &mut Ports { offset }) };
    let r = run();
    assert!(
        r.consumed <= buf.len(),
        "consumed {} of {}",
        r.consumed,
        buf.len()
    );
    match &r.outcome {
        Outcome::Incomplete => assert_eq!(r.consumed, 0, "incomplete but consumed"),
        Outcome::Unchanged | Outcome::Rewritten(_) => {
            assert!(r.consumed >= 1, "a complete message of 0 bytes")
        }
        Outcome::Malformed => {
            if transport == Transport::Tcp {
                assert!(r.consumed >= 1, "a malformed stream must be skipped");
            }
        }
    }
    for p in &r.pinholes {
        assert!(p.public_port != 0 && p.private_port != 0, "{p:?}");
        assert!(
            p.public_addr == public || p.private_addr == private,
            "{p:?}"
        );
        assert!(p.lifetime.is_zero(), "a rewriter decided a lifetime: {p:?}");
    }
    assert_eq!(run(), r, "the same message rewritten twice differs");
}

/// Target `alg_ftp`: one message through [`ftp::FtpRewriter`] (see [`check_rewriter`]).
pub fn alg_ftp(data: &[u8]) {
    check_rewriter(&ftp::FtpRewriter, data, 21);
}

/// Target `alg_sip`: one message through [`sip::SipRewriter`] (see [`check_rewriter`]).
pub fn alg_sip(data: &[u8]) {
    check_rewriter(&sip::SipRewriter, data, 5060);
}

/// Target `alg_rtsp`: one message through [`rtsp::RtspRewriter`] (see [`check_rewriter`]).
pub fn alg_rtsp(data: &[u8]) {
    check_rewriter(&rtsp::RtspRewriter, data, 554);
}

/// Every flow gets fixed public addresses and the FQDN of host A.
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

const PRIVATE: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 101);
const PEER: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);

/// Target `alg_engine`: TCP/UDP conversations on the ALG ports through
/// [`Engine::handle`], both directions, with segments, retransmissions, ACKs
/// (with SACK) and FIN/RST built from the input; time advances too.
///
/// Byte 0: transport and port (FTP, SIP/TCP, SIP/UDP, RTSP) and whether the
/// private host is the server; then up to 64 operations.
///
/// Invariants: no panic; a replaced packet is a whole IPv4 TCP/UDP packet
/// with correct IP and L4 checksums, of the same flow (addresses and ports
/// unchanged), at most 65535 bytes; the flow table stays within
/// `max_flows`; every pinhole has non-zero ports and the lifetime the
/// configuration gives its protocol.
pub fn alg_engine(data: &[u8]) {
    let mut input = Bytes(data);
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
    let lifetime = if alg_port == 21 {
        cfg.ftp_data_lifetime
    } else {
        cfg.media_lifetime
    };
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
            assert_eq!(ph.lifetime, lifetime, "{ph:?}");
        }
        assert!(engine.stats().flows <= max_flows);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs every kept input of `target` (`fuzz/{seeds,corpus,regressions}/<target>/`)
    /// through `harness`; returns how many there were.
    fn replay(target: &str, harness: fn(&[u8])) -> usize {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
        let mut n = 0;
        for dir in ["seeds", "corpus", "regressions"] {
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

    #[test]
    fn seqadj_corpus_replays() {
        let n = replay("seqadj", seqadj);
        assert!(n > 0, "fuzz/corpus/seqadj is empty");
    }

    #[test]
    fn alg_ftp_corpus_replays() {
        assert!(replay("alg_ftp", alg_ftp) > 0, "no fuzz inputs for alg_ftp");
    }

    #[test]
    fn alg_sip_corpus_replays() {
        assert!(replay("alg_sip", alg_sip) > 0, "no fuzz inputs for alg_sip");
    }

    #[test]
    fn alg_rtsp_corpus_replays() {
        assert!(
            replay("alg_rtsp", alg_rtsp) > 0,
            "no fuzz inputs for alg_rtsp"
        );
    }

    #[test]
    fn alg_engine_corpus_replays() {
        assert!(
            replay("alg_engine", alg_engine) > 0,
            "no fuzz inputs for alg_engine"
        );
    }

    #[test]
    fn alg_sip_regression_sdp_rtcp_port_zero() {
        // a=rtcp:00 in an SDP answer asked for a pinhole to private port 0;
        // check_rewriter asserts every pinhole has non-zero ports.
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fuzz/regressions/alg_sip/sdp-rtcp-port-zero");
        let bytes = std::fs::read(path).expect("the regression input is kept");
        alg_sip(&bytes);
    }

    #[test]
    fn seqadj_harness_holds_on_a_simple_stream() {
        // ISN near the wrap, then: grow, plain, shrink, retransmit, ACK.
        seqadj(&[
            0x00, 0xff, 0xff, 0xff, 1, 100, 0, 30, 0, 200, 0, 1, 50, 0, 0xf6, 2, 0, 3, 1, 3, 7,
        ]);
    }
}
