//! IPv6 → IPv4 translation (RFC 7915 §5).

use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Instant;

use crate::checksum;
use crate::mapping::MappingOrigin;
use crate::wire::{
    be16, put16, v4_unicast, v6_unicast, Ipv4Hdr, Ipv6Hdr, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP,
    PROTO_UDP,
};
use crate::{Drop, Translator};

/// RFC 7915 §5.1 "Flags": DF is set only on translated packets larger than this
/// (IPv6 minimum MTU 1280 minus the 20 bytes the header shrinks by).
const DF_THRESHOLD: usize = 1260;

impl Translator {
    pub(crate) fn translate_6to4(
        &mut self,
        now: Instant,
        packet: &[u8],
        out: &mut Vec<Vec<u8>>,
    ) -> Result<(), Drop> {
        let h = Ipv6Hdr::parse(packet)?;
        // Bytes past Payload Length (link padding) are not part of the packet.
        // Jumbograms (Payload Length 0 with a Jumbo option) are not supported.
        let pkt = packet.get(..40 + h.payload_len).ok_or(Drop::Truncated)?;
        let payload = pkt.get(h.l4_off..).ok_or(Drop::Truncated)?;

        // Address mapping: the destination must be a proxy ULA (prefix64::v4).
        let dst4 = self
            .extract(h.dst)
            .filter(|a| v4_unicast(*a))
            .ok_or(Drop::DstNotPrefix64)?;
        if !v6_unicast(h.src) {
            return Err(Drop::BadSource);
        }
        if h.is_fragment() {
            self.stats.fragments_in += 1;
        }

        // RFC 7915 §5.1: a Routing header with Segments Left != 0 is not translated;
        // Parameter Problem (code 0) pointing at Segments Left goes back.
        if let Some(ptr) = h.routing_pending {
            self.icmp6_error(now, &h, pkt, 4, 0, ptr as u32, out);
            return Err(Drop::RoutingHeader);
        }

        // RFC 7915 §5.1 "TTL": Hop Limit minus one (the translator is a router);
        // Time Exceeded (hop limit exceeded in transit) when it runs out.
        if h.hop_limit <= 1 {
            self.icmp6_error(now, &h, pkt, 3, 0, 0, out);
            return Err(Drop::TtlExpired);
        }
        let ttl = h.hop_limit - 1;

        // RFC 7915 §5.1 "Protocol": the upper-layer protocol after the extension
        // headers (Hop-by-Hop, Routing, Destination Options, Fragment: skipped);
        // ICMPv6 (58) becomes ICMPv4 (1).
        let proto = match h.proto {
            PROTO_ICMPV6 => PROTO_ICMP,
            PROTO_ICMP => return Err(Drop::IcmpWrongFamily),
            p => p,
        };
        if h.proto == PROTO_ICMPV6 && h.is_fragment() {
            // RFC 7915 §5.2 needs the whole message to drop the pseudo-header from the checksum.
            return Err(Drop::FragmentedIcmp);
        }
        let icmp_error = h.proto == PROTO_ICMPV6 && payload.first().is_some_and(|t| *t < 128);

        let mut buf = self.buffer(20 + payload.len());
        buf.resize(20, 0);
        let r = if h.proto == PROTO_ICMPV6 {
            self.icmp6_to_icmp4(now, payload, h.src, h.dst, &mut buf)
        } else {
            buf.extend_from_slice(payload);
            Ok(())
        };
        if let Err(e) = r {
            self.give_back(buf);
            return Err(e);
        }
        let total = buf.len();

        // RFC 7915 §5.1 "Flags"/"Identification" and §5.1.1 (Fragment header present):
        // a fragment keeps its Identification (low 16 bits), offset and M, with DF
        // clear; otherwise DF is set only above 1260 bytes and we pick an Identification.
        let (df, mf, offset, ident) = match h.frag {
            Some(f) => (false, f.more, f.offset, f.ident as u16),
            None => (total > DF_THRESHOLD, false, 0, self.next_ident()),
        };
        let mtu4 = usize::from(self.cfg.mtu4);
        if total > mtu4 && df {
            // Too big for the IPv4 path and DF would be set: Packet Too Big back with
            // the IPv6-equivalent MTU (header 20 bytes longer), never below 1280
            // (RFC 8200 §5: the IPv6 minimum; the packet then fits the DF-clear case).
            self.give_back(buf);
            let mtu = (mtu4 + 20).max(1280);
            self.icmp6_error(now, &h, pkt, 2, 0, mtu as u32, out);
            return Err(Drop::PacketTooBig);
        }

        // Source mapping (after every check that can refuse the packet, so refused
        // packets do not create bindings).
        let src4 = match self.v6_source_to_v4(now, h.src, icmp_error) {
            Ok(a) => a,
            Err(e) => {
                self.give_back(buf);
                if e == Drop::PoolExhausted {
                    // RFC 7915 §5.4: the packet cannot be translated → Destination
                    // Unreachable, no route to destination.
                    self.icmp6_error(now, &h, pkt, 1, 0, 0, out);
                }
                return Err(e);
            }
        };
        if h.frag.is_none_or(|f| f.offset == 0) && h.proto != PROTO_ICMPV6 {
            // RFC 7915 §5.5: TCP/UDP pseudo-header change, incremental update.
            if let Err(e) = fix_transport_6to4(h.proto, &h, src4, dst4, &mut buf) {
                self.give_back(buf);
                return Err(e);
            }
        }
        self.stats.packets_6to4 += 1;
        self.stats.bytes_6to4 += packet.len() as u64;
        if h.proto == PROTO_ICMPV6 {
            self.stats.icmp_6to4 += 1;
        }

        let mut v4 = Ipv4Hdr {
            hlen: 20,
            tos: h.tclass,
            total_len: total,
            ident,
            df,
            mf,
            offset,
            ttl,
            proto,
            src: src4,
            dst: dst4,
        };
        if total <= mtu4 {
            if let Some(s) = buf.get_mut(..20) {
                s.copy_from_slice(&v4.bytes());
            }
            out.push(buf);
            return Ok(());
        }

        // DF clear and too big for mtu4: fragment as an IPv4 router would (RFC 791
        // §3.2), each fragment's data a multiple of 8 bytes, M set on all but the
        // last (and on the last if the input was itself a non-final fragment).
        let chunk = (mtu4 - 20) & !7;
        let data = buf.get(20..).unwrap_or(&[]);
        let mut at = 0;
        let mut pieces = 0u64;
        loop {
            let end = (at + chunk).min(data.len());
            let last = end >= data.len();
            let off = usize::from(offset) + at / 8;
            if off > 0x1fff {
                break;
            }
            let piece = data.get(at..end).unwrap_or(&[]);
            v4.total_len = 20 + piece.len();
            v4.offset = off as u16;
            v4.mf = !last || mf;
            let mut f = self.buffer(20 + piece.len());
            f.extend_from_slice(&v4.bytes());
            f.extend_from_slice(piece);
            out.push(f);
            pieces += 1;
            if last {
                break;
            }
            at = end;
        }
        self.stats.fragments_out += pieces;
        self.give_back(buf);
        Ok(())
    }

    /// Source of a 6→4 packet (RFC 7915 §5.1 "Source Address", TAYGA-style):
    /// `prefix64::v4` gives `v4`; another IPv6 address gets its proxy IPv4 from the
    /// binding table, created on first use. ICMPv6 errors from IPv6 routers without
    /// a binding take `own_v4` instead (RFC 6791), so traceroute does not fill the pool.
    fn v6_source_to_v4(
        &mut self,
        now: Instant,
        src: Ipv6Addr,
        icmp_error: bool,
    ) -> Result<Ipv4Addr, Drop> {
        if let Some(a) = self.extract(src) {
            return if v4_unicast(a) {
                Ok(a)
            } else {
                Err(Drop::BadSource)
            };
        }
        if icmp_error {
            return Ok(self.map.v6_to_v4(now, src, true).unwrap_or(self.cfg.own_v4));
        }
        let v4 = self
            .map
            .get_or_create(now, src, MappingOrigin::Packet, true)
            .ok_or(Drop::PoolExhausted)?;
        Ok(v4)
    }

    fn next_ident(&mut self) -> u16 {
        self.next_ident = self.next_ident.wrapping_add(1);
        self.next_ident
    }
}

/// RFC 7915 §5.5: TCP/UDP checksum adjusted for the new pseudo-header addresses.
fn fix_transport_6to4(
    proto: u8,
    h: &Ipv6Hdr,
    src4: Ipv4Addr,
    dst4: Ipv4Addr,
    buf: &mut [u8],
) -> Result<(), Drop> {
    let old = checksum::add(checksum::addr6(h.src), checksum::addr6(h.dst));
    let new = checksum::add(checksum::addr4(src4), checksum::addr4(dst4));
    match proto {
        PROTO_TCP => {
            let ck = be16(buf, 20 + 16).ok_or(Drop::Truncated)?;
            put16(buf, 20 + 16, checksum::adjust(ck, old, new));
        }
        PROTO_UDP => {
            let ck = be16(buf, 20 + 6).ok_or(Drop::Truncated)?;
            // A zero UDP checksum is invalid in IPv6 (RFC 8200 §8.1) but means "none"
            // in IPv4: leave it zero rather than invent one.
            if ck != 0 {
                let n = checksum::adjust(ck, old, new);
                put16(buf, 20 + 6, if n == 0 { 0xffff } else { n });
            }
        }
        _ => {}
    }
    Ok(())
}
