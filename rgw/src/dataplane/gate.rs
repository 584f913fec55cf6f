//! The first-packet gate: queued `ct state new` packets to reserved pool
//! addresses come here one at a time; the pool decides, the verdict carries
//! the mark that the `dstnat` chain maps to the host.
//!
//! Serialising the decision in one thread is what makes a reservation single
//! use when first packets from several sources race (DESIGN.md §3: a map-only
//! claim let 2 of 4 simultaneous SYNs through in 16 of 40 trials).

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use tracing::{error, info, warn};

use super::nfqueue::{NfQueue, Verdict};
use crate::gateway::Gateway;
use crate::metrics::inc;

/// The fields of a first packet the claim needs, read from an IPv4 header
/// (RFC 791) and the first four bytes of a TCP/UDP header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FirstPacket {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub proto: u8,
    pub sport: Option<u16>,
    pub dport: Option<u16>,
}

impl FirstPacket {
    /// Parses without panicking on any input; None when it is not a complete
    /// IPv4 header (or a TCP/UDP packet too short to carry its ports).
    pub fn parse(p: &[u8]) -> Option<FirstPacket> {
        let first = *p.first()?;
        if first >> 4 != 4 {
            return None;
        }
        let ihl = usize::from(first & 0x0f) * 4;
        if ihl < 20 || p.len() < ihl {
            return None;
        }
        let proto = p[9];
        let src = Ipv4Addr::new(p[12], p[13], p[14], p[15]);
        let dst = Ipv4Addr::new(p[16], p[17], p[18], p[19]);
        let frag_offset = u16::from_be_bytes([p[6], p[7]]) & 0x1fff;
        let (sport, dport) = match proto {
            // A non-first fragment carries no ports: it cannot be a first packet.
            6 | 17 if frag_offset != 0 => return None,
            6 | 17 => {
                let l4 = p.get(ihl..ihl + 4)?;
                (
                    Some(u16::from_be_bytes([l4[0], l4[1]])),
                    Some(u16::from_be_bytes([l4[2], l4[3]])),
                )
            }
            _ => (None, None),
        };
        Some(FirstPacket {
            src,
            dst,
            proto,
            sport,
            dport,
        })
    }
}

/// Opens and binds the queue. Binding is exclusive per network namespace
/// (EBUSY for a second binder), so doing it before touching nftables keeps a
/// second `rgw` from flushing the running daemon's reservations.
///
/// At most `max_len` first packets wait (`limits.gate_queue_len`). The queue
/// is not fail-open: beyond that the kernel drops the packet (a SYN is
/// retransmitted by its sender) rather than let it through unclaimed, and
/// counts it (`/proc/net/netfilter/nfnetlink_queue`, exported as
/// `gate_queue_dropped`).
pub fn open(queue_num: u16, max_len: u32) -> Result<NfQueue> {
    // Headers are all we read: IPv4 (≤ 60 bytes) + 4 bytes of ports. The
    // socket gets room for the whole queue (a short packet message takes
    // well under 1 KiB of socket memory): with the default receive buffer
    // (~208 KiB) the socket, not `max_len`, would be the limit.
    let rcvbuf = (max_len as usize)
        .saturating_mul(1024)
        .clamp(1 << 20, 64 << 20);
    NfQueue::open(queue_num, max_len, rcvbuf, 128).with_context(|| {
        format!("binding NFQUEUE {queue_num}: is another rgw running in this network namespace?")
    })
}

/// Whether an IPv4 packet arriving here cannot be forwarded (TTL ≤ 1).
/// The gate also sees the SYN proxy's own SYNs in OUTPUT; those are sent with
/// the default TTL and are never affected.
fn ttl_expires_here(p: &[u8]) -> bool {
    p.get(8).is_some_and(|&ttl| ttl <= 1)
}

/// Runs the gate on a bound queue in the calling thread until the socket fails.
pub fn run(gw: Arc<Gateway>, mut queue: NfQueue, queue_num: u16) -> Result<()> {
    info!(queue = queue_num, "first-packet gate listening");
    loop {
        let pkt = match queue.recv() {
            Ok(p) => p,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                error!(error = %e, "NFQUEUE receive failed");
                return Err(e.into());
            }
        };
        let payload = queue.payload(&pkt);
        let (verdict, mark) = match FirstPacket::parse(payload) {
            // A packet whose TTL runs out in our forwarding (a traceroute
            // probe) would take the reservation with it: its conntrack
            // entry is never confirmed. Let it go on unclaimed: the kernel
            // answers Time Exceeded, and the next probe claims.
            Some(_) if ttl_expires_here(payload) => {
                inc(&gw.metrics.gate_ttl_expiring);
                // Clear the queued mark, or gate_tail drops it as unanswered.
                (Verdict::Accept, Some(0))
            }
            Some(first) => match gw.claim(&first, Instant::now()) {
                Some(mark) => (Verdict::Accept, Some(mark)),
                None => (Verdict::Drop, None),
            },
            None => {
                inc(&gw.metrics.gate_unparsable);
                (Verdict::Drop, None)
            }
        };
        if let Err(e) = queue.verdict(pkt.id, verdict, mark, None) {
            warn!(error = %e, "NFQUEUE verdict failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ipv4(proto: u8, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![
            0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, proto, 0, 0, 203, 0, 113, 10, 198, 51, 100, 17,
        ];
        p.extend_from_slice(payload);
        p
    }

    #[test]
    fn parses_tcp_udp_icmp() {
        let t = FirstPacket::parse(&ipv4(6, &[0x9c, 0x40, 0, 22, 0, 0, 0, 0])).expect("tcp parses");
        assert_eq!(
            (t.src, t.dst, t.proto, t.sport, t.dport),
            (
                "203.0.113.10".parse().expect("ip"),
                "198.51.100.17".parse().expect("ip"),
                6,
                Some(40000),
                Some(22)
            )
        );
        assert_eq!(
            FirstPacket::parse(&ipv4(17, &[0, 53, 0x13, 0xc4])).map(|p| p.dport),
            Some(Some(5060))
        );
        let i = FirstPacket::parse(&ipv4(1, &[8, 0])).expect("icmp parses");
        assert_eq!((i.proto, i.dport), (1, None));
    }

    #[test]
    fn ttl_one_expires_here() {
        let mut p = ipv4(17, &[0, 53, 0x13, 0xc4]);
        assert!(!ttl_expires_here(&p), "TTL 64");
        p[8] = 2;
        assert!(!ttl_expires_here(&p), "TTL 2 is forwarded with TTL 1");
        p[8] = 1;
        assert!(ttl_expires_here(&p));
        p[8] = 0;
        assert!(ttl_expires_here(&p));
        assert!(!ttl_expires_here(&[0x45; 8]), "too short to tell");
    }

    #[test]
    fn rejects_short_and_odd_input() {
        assert_eq!(FirstPacket::parse(&[]), None);
        assert_eq!(FirstPacket::parse(&[0x45; 19]), None);
        assert_eq!(FirstPacket::parse(&ipv4(6, &[0, 1])), None, "ports cut off");
        let mut v6 = ipv4(6, &[0; 4]);
        v6[0] = 0x60;
        assert_eq!(FirstPacket::parse(&v6), None);
        let mut ihl = ipv4(6, &[0; 4]);
        ihl[0] = 0x4f; // 60-byte header promised, 24 bytes present
        assert_eq!(FirstPacket::parse(&ihl), None);
        let mut frag = ipv4(17, &[0; 4]);
        frag[7] = 1;
        assert_eq!(FirstPacket::parse(&frag), None, "non-first fragment");
        for n in 0..64u8 {
            let junk: Vec<u8> = (0..n).map(|i| i.wrapping_mul(37) ^ 0x45).collect();
            let _ = FirstPacket::parse(&junk);
        }
    }
}
