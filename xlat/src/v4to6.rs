//! IPv4 → IPv6 translation (RFC 7915 §4).

use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Instant;

use crate::checksum;
use crate::wire::{
    be16, emit_frag, has_source_route, ipv6_header, put16, v4_unicast, Frag, Ipv4Hdr, NH_FRAGMENT,
    PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP,
};
use crate::{Drop, Translator};

/// IPv6 header plus Fragment header.
const V6_FRAG_OVERHEAD: usize = 48;

impl Translator {
    pub(crate) fn translate_4to6(
        &mut self,
        now: Instant,
        packet: &[u8],
        out: &mut Vec<Vec<u8>>,
    ) -> Result<(), Drop> {
        let h = Ipv4Hdr::parse(packet)?;
        let hdr = packet.get(..h.hlen).ok_or(Drop::Truncated)?;
        // RFC 791 §3.1: a router verifies the header checksum.
        if checksum::fold(checksum::sum(hdr)) != 0xffff {
            return Err(Drop::BadChecksum);
        }
        // Bytes past Total Length (link padding) are not part of the packet.
        let pkt = packet.get(..h.total_len).ok_or(Drop::Truncated)?;
        let payload = pkt.get(h.hlen..).ok_or(Drop::Truncated)?;
        let options = pkt.get(20..h.hlen).unwrap_or(&[]);

        // Address mapping: destination must be a live proxy IPv4 of pool4.
        if !self.map.in_pool(h.dst) {
            return Err(Drop::DstNotMapped);
        }
        let Some(dst6) = self.map.v4_to_v6(now, h.dst, true) else {
            // RFC 7915 §4.4: no IPv6 address for this destination → Host Unreachable.
            self.icmp4_error(now, &h, pkt, 3, 1, 0, out);
            return Err(Drop::DstNotMapped);
        };
        let src6 = self.v4_source_to_v6(now, h.src)?;
        if h.is_fragment() {
            self.stats.fragments_in += 1;
        }

        // RFC 7915 §4.1 "IPv4 options": ignored, except that an unexpired source
        // route makes us drop the packet and send Source Route Failed.
        if has_source_route(options) {
            self.icmp4_error(now, &h, pkt, 3, 5, 0, out);
            return Err(Drop::SourceRoute);
        }

        // RFC 7915 §4.1 "Hop Limit": the translator is a router; decrement once and
        // send Time Exceeded (in transit) when the TTL runs out.
        if h.ttl <= 1 {
            self.icmp4_error(now, &h, pkt, 11, 0, 0, out);
            return Err(Drop::TtlExpired);
        }
        let hop_limit = h.ttl - 1;

        // RFC 7915 §4.1 "Next Header": protocol copied, ICMPv4 (1) becomes ICMPv6 (58).
        let next = match h.proto {
            PROTO_ICMP => PROTO_ICMPV6,
            PROTO_ICMPV6 => return Err(Drop::IcmpWrongFamily),
            p => p,
        };
        if h.proto == PROTO_ICMP && h.is_fragment() {
            // RFC 7915 §4.2 needs the whole message for the ICMPv6 pseudo-header checksum.
            return Err(Drop::FragmentedIcmp);
        }

        let mut buf = self.buffer(40 + payload.len() + 28);
        buf.resize(40, 0);
        let r = if h.proto == PROTO_ICMP {
            self.icmp4_to_icmp6(now, payload, src6, dst6, &mut buf)
        } else {
            buf.extend_from_slice(payload);
            fix_transport_4to6(&h, src6, dst6, &mut buf)
        };
        if let Err(e) = r {
            self.give_back(buf);
            return Err(e);
        }
        let l4_len = buf.len() - 40;

        // RFC 7915 §4.1: a Fragment header only when the IPv4 packet is a fragment or
        // must be fragmented here (DF clear and too big); no atomic fragments (RFC 8021).
        let frag_hdr = h.is_fragment();
        let mtu6 = usize::from(self.cfg.mtu6);
        let size = 40 + l4_len + if frag_hdr { 8 } else { 0 };
        if size > mtu6 && h.df {
            // RFC 7915 §4.1 / RFC 1191: DF set and too big for the IPv6 path →
            // Fragmentation Needed with the IPv4-equivalent MTU (IPv6 header is 20
            // bytes longer, 28 with a Fragment header).
            self.give_back(buf);
            let mtu = mtu6.saturating_sub(if frag_hdr { 28 } else { 20 });
            self.icmp4_error(now, &h, pkt, 3, 4, mtu as u32, out);
            return Err(Drop::FragNeeded);
        }

        self.stats.packets_4to6 += 1;
        self.stats.bytes_4to6 += packet.len() as u64;
        if h.proto == PROTO_ICMP {
            self.stats.icmp_4to6 += 1;
        }

        if size <= mtu6 && !frag_hdr {
            let hdr6 = ipv6_header(h.tos, l4_len, next, hop_limit, src6, dst6);
            if let Some(s) = buf.get_mut(..40) {
                s.copy_from_slice(&hdr6);
            }
            out.push(buf);
            return Ok(());
        }

        // RFC 7915 §4.1 "Fragment Header": Identification from the IPv4 one (high 16
        // bits zero), offset and M copied; when the packet does not fit mtu6 and DF is
        // clear, split it into IPv6 fragments whose data is a multiple of 8 bytes.
        let chunk = if size <= mtu6 {
            l4_len.max(1)
        } else {
            (mtu6 - V6_FRAG_OVERHEAD) & !7
        };
        let data = buf.get(40..).unwrap_or(&[]);
        let mut pieces = 0u64;
        let mut at = 0;
        loop {
            let end = (at + chunk).min(data.len());
            let last = end >= data.len();
            let offset = usize::from(h.offset) + at / 8;
            if offset > 0x1fff {
                break;
            }
            let piece = data.get(at..end).unwrap_or(&[]);
            let mut f = self.buffer(V6_FRAG_OVERHEAD + piece.len());
            f.extend_from_slice(&ipv6_header(
                h.tos,
                8 + piece.len(),
                NH_FRAGMENT,
                hop_limit,
                src6,
                dst6,
            ));
            emit_frag(
                &mut f,
                next,
                Frag {
                    ident: u32::from(h.ident),
                    offset: offset as u16,
                    more: !last || h.mf,
                },
            );
            f.extend_from_slice(piece);
            out.push(f);
            pieces += 1;
            if last {
                break;
            }
            at = end;
        }
        if pieces > 1 {
            self.stats.fragments_out += pieces;
        }
        self.give_back(buf);
        Ok(())
    }

    /// Source of a 4→6 packet: a proxy IPv4 of pool4 (hairpin between two IPv6
    /// hosts through their proxies) maps back to its IPv6 address; any other unicast
    /// IPv4 becomes `prefix64::src` (RFC 6052 §2.2).
    fn v4_source_to_v6(&mut self, now: Instant, src: Ipv4Addr) -> Result<Ipv6Addr, Drop> {
        if !v4_unicast(src) {
            return Err(Drop::BadSource);
        }
        if self.map.in_pool(src) {
            return self.map.v4_to_v6(now, src, true).ok_or(Drop::BadSource);
        }
        Ok(self.embed(src))
    }
}

/// RFC 7915 §4.5: TCP and UDP checksums cover a pseudo-header whose addresses
/// change; the lengths and protocol stay, so an incremental update (RFC 1624) over
/// the addresses is exact, also for a first fragment. `buf` holds the IPv6 header
/// space (40 bytes) then the transport bytes.
fn fix_transport_4to6(
    h: &Ipv4Hdr,
    src6: Ipv6Addr,
    dst6: Ipv6Addr,
    buf: &mut [u8],
) -> Result<(), Drop> {
    if h.offset != 0 {
        // Non-first fragments carry no transport header.
        return Ok(());
    }
    let old = checksum::add(checksum::addr4(h.src), checksum::addr4(h.dst));
    let new = checksum::add(checksum::addr6(src6), checksum::addr6(dst6));
    let l4_len = buf.len().saturating_sub(40);
    match h.proto {
        PROTO_TCP => {
            let ck = be16(buf, 40 + 16).ok_or(Drop::Truncated)?;
            put16(buf, 40 + 16, checksum::adjust(ck, old, new));
        }
        PROTO_UDP => {
            let ck = be16(buf, 40 + 6).ok_or(Drop::Truncated)?;
            let new_ck = if ck == 0 {
                // RFC 7915 §4.5: a zero IPv4 UDP checksum must be computed for IPv6;
                // impossible for a fragment, which is dropped.
                if h.is_fragment() {
                    return Err(Drop::UdpZeroChecksum);
                }
                let p = checksum::pseudo6(src6, dst6, PROTO_UDP, l4_len as u32);
                checksum::finish(checksum::add(
                    p,
                    checksum::sum(buf.get(40..).unwrap_or(&[])),
                ))
            } else {
                checksum::adjust(ck, old, new)
            };
            // RFC 768: a computed zero is sent as all ones.
            put16(buf, 40 + 6, if new_ck == 0 { 0xffff } else { new_ck });
        }
        _ => {}
    }
    Ok(())
}
