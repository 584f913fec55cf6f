//! ICMPv4 ⇄ ICMPv6 translation (RFC 7915 §4.2, §4.3, §5.2, §5.3) and the ICMP
//! errors the translator originates itself.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use crate::checksum;
use crate::wire::{
    be16, emit_frag, ipv6_header, put16, v4_unicast, Frag, Ipv4Hdr, Ipv6Hdr, NH_FRAGMENT,
    PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP,
};
use crate::{Drop, Translator};

/// RFC 1812 §4.3.2.3: an ICMPv4 error carries as much of the original as fits in 576 bytes.
const ICMP4_ERROR_MAX: usize = 576;
/// RFC 4443 §2.4 (c): an ICMPv6 error must not exceed the minimum IPv6 MTU.
const ICMP6_ERROR_MAX: usize = 1280;

/// Originated ICMP errors: bucket size and refill period (100 per second).
pub(crate) const ERROR_BURST: u32 = 100;
const ERROR_REFILL: Duration = Duration::from_millis(10);

/// RFC 1191 §7 plateau table, for ICMPv4 Fragmentation Needed without an MTU.
const PLATEAUS: [u16; 10] = [32000, 17914, 8166, 4352, 2002, 1492, 1006, 508, 296, 68];

/// RFC 7915 §4.2 "Parameter Problem" pointer map, IPv4 header byte → IPv6 header byte.
fn pointer_4to6(p: u8) -> Option<u8> {
    match p {
        0 => Some(0),        // Version/IHL → Version/Traffic Class
        1 => Some(1),        // Type of Service → Traffic Class
        2 | 3 => Some(4),    // Total Length → Payload Length
        8 => Some(7),        // Time to Live → Hop Limit
        9 => Some(6),        // Protocol → Next Header
        12..=15 => Some(8),  // Source Address
        16..=19 => Some(24), // Destination Address
        _ => None,           // Identification, Flags/Offset, Checksum: no counterpart
    }
}

/// RFC 7915 §5.2 "Parameter Problem" pointer map, IPv6 header byte → IPv4 header byte.
fn pointer_6to4(p: u32) -> Option<u8> {
    match p {
        0 => Some(0),
        1 => Some(1),
        4 | 5 => Some(2), // Payload Length → Total Length
        6 => Some(9),     // Next Header → Protocol
        7 => Some(8),     // Hop Limit → Time to Live
        8..=23 => Some(12),
        24..=39 => Some(16),
        _ => None, // Flow Label and beyond: no counterpart
    }
}

fn is_icmp4_error(t: u8) -> bool {
    matches!(t, 3 | 4 | 5 | 11 | 12)
}

impl Translator {
    /// Hand a buffer back to the spare list.
    pub(crate) fn give_back(&mut self, mut buf: Vec<u8>) {
        if self.spare.len() < 64 {
            buf.clear();
            self.spare.push(buf);
        }
    }

    /// RFC 7915 §4.2: ICMPv4 message `msg` (IPv4 payload) → ICMPv6, appended to `out`
    /// for an IPv6 packet from `src6` to `dst6`.
    pub(crate) fn icmp4_to_icmp6(
        &mut self,
        now: Instant,
        msg: &[u8],
        src6: Ipv6Addr,
        dst6: Ipv6Addr,
        out: &mut Vec<u8>,
    ) -> Result<(), Drop> {
        let hdr = msg.get(..8).ok_or(Drop::Truncated)?;
        if checksum::fold(checksum::sum(msg)) != 0xffff {
            return Err(Drop::BadChecksum);
        }
        let (typ, code) = (hdr[0], hdr[1]);
        let rest = u32::from_be_bytes([hdr[4], hdr[5], hdr[6], hdr[7]]);
        let start = out.len();
        match typ {
            // §4.2 Echo Request/Reply (8/0) → 128/129, identifier, sequence and data kept.
            8 | 0 => {
                out.push(if typ == 8 { 128 } else { 129 });
                out.push(code);
                out.extend_from_slice(&[0, 0]);
                out.extend_from_slice(msg.get(4..).unwrap_or(&[]));
            }
            3 | 11 | 12 => {
                let inner = msg.get(8..).unwrap_or(&[]);
                let (t6, c6, param) = match (typ, code) {
                    // §4.2 Destination Unreachable code map.
                    (3, 0 | 1 | 5 | 6 | 7 | 8 | 11 | 12) => (1, 0, 0),
                    (3, 9 | 10 | 13 | 15) => (1, 1, 0),
                    (3, 3) => (1, 4, 0),
                    // Protocol Unreachable → Parameter Problem, unrecognized Next
                    // Header, pointing at the Next Header field.
                    (3, 2) => (4, 1, 6),
                    // Fragmentation Needed → Packet Too Big (below).
                    (3, 4) => (2, 0, self.ptb_mtu_from_v4(rest as u16, inner)),
                    // §4.2 Time Exceeded → Time Exceeded, code unchanged.
                    (11, 0 | 1) => (3, code, 0),
                    // §4.2 Parameter Problem codes 0 and 2 → code 0 with the pointer mapped.
                    (12, 0 | 2) => {
                        let p = pointer_4to6(hdr[4]).ok_or(Drop::IcmpUntranslatable)?;
                        (4, 0, u32::from(p))
                    }
                    // Code 14 (host precedence violation), missing option and unknown: drop.
                    _ => return Err(Drop::IcmpUntranslatable),
                };
                out.push(t6);
                out.push(c6);
                out.extend_from_slice(&[0, 0]);
                out.extend_from_slice(&param.to_be_bytes());
                // §4.3: the embedded IPv4 packet is translated too; the whole ICMPv6
                // error stays within 1280 bytes (RFC 4443 §2.4).
                let limit = ICMP6_ERROR_MAX - 40 - 8;
                self.inner_4to6(now, inner, out, limit)?;
            }
            // §4.2: every other type (timestamp, address mask, redirect, source
            // quench, router advertisement/solicitation, unknown) is dropped.
            _ => return Err(Drop::IcmpUntranslatable),
        }
        // ICMPv6 checksum includes the IPv6 pseudo-header (RFC 4443 §2.3).
        let len = out.len() - start;
        let s = checksum::add(
            checksum::pseudo6(src6, dst6, PROTO_ICMPV6, len as u32),
            checksum::sum(out.get(start..).unwrap_or(&[])),
        );
        put16(out, start + 2, checksum::finish(s));
        Ok(())
    }

    /// RFC 7915 §4.2 "Fragmentation Needed": MTU + 20 for the longer IPv6 header,
    /// bounded by both next hops; RFC 1191 plateau when the router sent 0; never
    /// below 1280 (RFC 8200 §5; smaller paths are served by DF-clear translation).
    fn ptb_mtu_from_v4(&self, mtu_field: u16, inner: &[u8]) -> u32 {
        let advertised = if mtu_field == 0 {
            let total = be16(inner, 2).unwrap_or(0);
            PLATEAUS.iter().copied().find(|p| *p < total).unwrap_or(68)
        } else {
            mtu_field
        };
        let m = (u32::from(advertised) + 20)
            .min(u32::from(self.cfg.mtu6))
            .min(u32::from(self.cfg.mtu4) + 20);
        m.max(1280)
    }

    /// RFC 7915 §4.3: the IPv4 packet inside an ICMPv4 error, translated like an
    /// outer header but without TTL decrement, addresses mapped with the same
    /// bindings (it is a packet we translated 6→4 earlier, so its source is usually
    /// a proxy IPv4 and its destination an IPv4 host). Possibly truncated: lengths in
    /// the inner header keep the original values; inner checksums are not verified,
    /// only adjusted for the address change when present. At most `limit` bytes.
    fn inner_4to6(
        &mut self,
        now: Instant,
        inner: &[u8],
        out: &mut Vec<u8>,
        limit: usize,
    ) -> Result<(), Drop> {
        let bad = Drop::IcmpInnerUntranslatable;
        let h = Ipv4Hdr::parse(inner).map_err(|_| bad)?;
        let src6 = self.inner_v4_to_v6(now, h.src).ok_or(bad)?;
        let dst6 = self.inner_v4_to_v6(now, h.dst).ok_or(bad)?;
        let end = inner.len().min(h.total_len);
        let data = inner.get(h.hlen..end).unwrap_or(&[]);
        let claimed = h.total_len - h.hlen;
        let first = h.offset == 0;
        let (next, new_type) = match h.proto {
            PROTO_ICMP => match data.first() {
                Some(8) => (PROTO_ICMPV6, Some(128u8)),
                Some(0) => (PROTO_ICMPV6, Some(129u8)),
                None if first => (PROTO_ICMPV6, None),
                _ if !first => (PROTO_ICMPV6, None),
                // An error about an ICMP error (or an untranslatable type) cannot be.
                _ => return Err(bad),
            },
            PROTO_ICMPV6 => return Err(bad),
            p => (p, None),
        };
        let start = out.len();
        let frag = h.is_fragment();
        out.extend_from_slice(&ipv6_header(
            h.tos,
            claimed + if frag { 8 } else { 0 },
            if frag { NH_FRAGMENT } else { next },
            h.ttl,
            src6,
            dst6,
        ));
        if frag {
            emit_frag(
                out,
                next,
                Frag {
                    ident: u32::from(h.ident),
                    offset: h.offset,
                    more: h.mf,
                },
            );
        }
        let l4 = out.len();
        out.extend_from_slice(data);
        if first {
            let old = checksum::add(checksum::addr4(h.src), checksum::addr4(h.dst));
            let new = checksum::add(checksum::addr6(src6), checksum::addr6(dst6));
            match h.proto {
                PROTO_TCP => adjust_at(out, l4 + 16, old, new, false),
                PROTO_UDP => adjust_at(out, l4 + 6, old, new, true),
                PROTO_ICMP => {
                    if let (Some(nt), Some(&code)) = (new_type, out.get(l4 + 1)) {
                        let ot = out.get(l4).copied().unwrap_or(0);
                        let old = u32::from(u16::from_be_bytes([ot, code]));
                        let new = checksum::add(
                            u32::from(u16::from_be_bytes([nt, code])),
                            checksum::pseudo6(src6, dst6, PROTO_ICMPV6, claimed as u32),
                        );
                        adjust_at(out, l4 + 2, old, new, false);
                    }
                    if let (Some(nt), Some(t)) = (new_type, out.get_mut(l4)) {
                        *t = nt;
                    }
                }
                _ => {}
            }
        }
        if out.len() - start > limit {
            out.truncate(start + limit);
        }
        Ok(())
    }

    /// Inner-packet IPv4 address → IPv6 (no refresh, no creation).
    fn inner_v4_to_v6(&mut self, now: Instant, a: Ipv4Addr) -> Option<Ipv6Addr> {
        if self.map.in_pool(a) {
            self.map.v4_to_v6(now, a, false)
        } else if v4_unicast(a) {
            Some(self.embed(a))
        } else {
            None
        }
    }

    /// RFC 7915 §5.2: ICMPv6 message `msg` (upper-layer payload of an IPv6 packet
    /// from `src6` to `dst6`) → ICMPv4, appended to `out`.
    pub(crate) fn icmp6_to_icmp4(
        &mut self,
        now: Instant,
        msg: &[u8],
        src6: Ipv6Addr,
        dst6: Ipv6Addr,
        out: &mut Vec<u8>,
    ) -> Result<(), Drop> {
        let hdr = msg.get(..8).ok_or(Drop::Truncated)?;
        let s = checksum::add(
            checksum::pseudo6(src6, dst6, PROTO_ICMPV6, msg.len() as u32),
            checksum::sum(msg),
        );
        if checksum::fold(s) != 0xffff {
            return Err(Drop::BadChecksum);
        }
        let (typ, code) = (hdr[0], hdr[1]);
        let param = u32::from_be_bytes([hdr[4], hdr[5], hdr[6], hdr[7]]);
        let start = out.len();
        match typ {
            // §5.2 Echo Request/Reply 128/129 → 8/0.
            128 | 129 => {
                out.push(if typ == 128 { 8 } else { 0 });
                out.push(code);
                out.extend_from_slice(&[0, 0]);
                out.extend_from_slice(msg.get(4..).unwrap_or(&[]));
            }
            1..=4 => {
                let inner = msg.get(8..).unwrap_or(&[]);
                let (t4, c4, rest) = match (typ, code) {
                    // §5.2 Destination Unreachable code map.
                    (1, 0 | 2 | 3) => (3, 1, 0),
                    (1, 1) => (3, 10, 0),
                    (1, 4) => (3, 3, 0),
                    // §5.2 Packet Too Big → Fragmentation Needed, MTU adjusted.
                    (2, _) => (3, 4, self.frag_needed_mtu_from_v6(param, inner)),
                    // §5.2 Time Exceeded → Time Exceeded, code unchanged.
                    (3, 0 | 1) => (11, code, 0),
                    // §5.2 Parameter Problem code 0 → Parameter Problem, pointer mapped.
                    (4, 0) => {
                        let p = pointer_6to4(param).ok_or(Drop::IcmpUntranslatable)?;
                        (12, 0, u32::from(p) << 24)
                    }
                    // Unrecognized Next Header → Protocol Unreachable.
                    (4, 1) => (3, 2, 0),
                    _ => return Err(Drop::IcmpUntranslatable),
                };
                out.push(t4);
                out.push(c4);
                out.extend_from_slice(&[0, 0]);
                out.extend_from_slice(&rest.to_be_bytes());
                // §5.3: embedded IPv6 packet translated; the ICMPv4 error kept within
                // 576 bytes (RFC 1812 §4.3.2.3).
                let limit = ICMP4_ERROR_MAX - 20 - 8;
                self.inner_6to4(now, inner, out, limit)?;
            }
            // §5.2: MLD, Neighbor Discovery, unknown informational and error types: drop.
            _ => return Err(Drop::IcmpUntranslatable),
        }
        // ICMPv4 checksum has no pseudo-header (RFC 792).
        let s = checksum::sum(out.get(start..).unwrap_or(&[]));
        put16(out, start + 2, checksum::finish(s));
        Ok(())
    }

    /// RFC 7915 §5.2 "Packet Too Big": minimum(advertised MTU − 20 (− 28 when the
    /// packet in error has a Fragment header), MTU of the IPv4 next hop, MTU of the
    /// IPv6 next hop − 20).
    fn frag_needed_mtu_from_v6(&self, mtu_field: u32, inner: &[u8]) -> u32 {
        let frag = Ipv6Hdr::parse(inner).is_ok_and(|h| h.frag.is_some());
        let shrink = if frag { 28 } else { 20 };
        mtu_field
            .saturating_sub(shrink)
            .min(u32::from(self.cfg.mtu4))
            .min(u32::from(self.cfg.mtu6) - 20)
            .min(0xffff)
    }

    /// RFC 7915 §5.3: the IPv6 packet inside an ICMPv6 error, translated without
    /// Hop Limit decrement, addresses through the same bindings (usually a packet we
    /// translated 4→6: source `prefix64::v4`, destination a bound IPv6 host).
    /// Truncation, lengths and checksums as in [`Translator::inner_4to6`].
    fn inner_6to4(
        &mut self,
        now: Instant,
        inner: &[u8],
        out: &mut Vec<u8>,
        limit: usize,
    ) -> Result<(), Drop> {
        let bad = Drop::IcmpInnerUntranslatable;
        let h = Ipv6Hdr::parse(inner).map_err(|_| bad)?;
        let src4 = self.inner_v6_to_v4(now, h.src).ok_or(bad)?;
        let dst4 = self.inner_v6_to_v4(now, h.dst).ok_or(bad)?;
        let end = inner.len().min(40 + h.payload_len);
        let data = inner.get(h.l4_off..end).unwrap_or(&[]);
        let claimed = (40 + h.payload_len).saturating_sub(h.l4_off);
        let first = h.frag.is_none_or(|f| f.offset == 0);
        let (proto, new_type) = match h.proto {
            PROTO_ICMPV6 => match data.first() {
                Some(128) => (PROTO_ICMP, Some(8u8)),
                Some(129) => (PROTO_ICMP, Some(0u8)),
                None => (PROTO_ICMP, None),
                _ if !first => (PROTO_ICMP, None),
                _ => return Err(bad),
            },
            PROTO_ICMP => return Err(bad),
            p => (p, None),
        };
        let total_len = 20 + claimed;
        let (df, mf, offset, ident) = match h.frag {
            Some(f) => (false, f.more, f.offset, f.ident as u16),
            None => (total_len > 1260, false, 0, 0),
        };
        let v4 = Ipv4Hdr {
            hlen: 20,
            tos: h.tclass,
            total_len: total_len.min(0xffff),
            ident,
            df,
            mf,
            offset,
            ttl: h.hop_limit,
            proto,
            src: src4,
            dst: dst4,
        };
        let start = out.len();
        out.extend_from_slice(&v4.bytes());
        let l4 = out.len();
        out.extend_from_slice(data);
        if first {
            let old = checksum::add(checksum::addr6(h.src), checksum::addr6(h.dst));
            let new = checksum::add(checksum::addr4(src4), checksum::addr4(dst4));
            match h.proto {
                PROTO_TCP => adjust_at(out, l4 + 16, old, new, false),
                PROTO_UDP => adjust_at(out, l4 + 6, old, new, true),
                PROTO_ICMPV6 => {
                    if let (Some(nt), Some(&code)) = (new_type, out.get(l4 + 1)) {
                        let ot = out.get(l4).copied().unwrap_or(0);
                        let old = checksum::add(
                            u32::from(u16::from_be_bytes([ot, code])),
                            checksum::pseudo6(h.src, h.dst, PROTO_ICMPV6, claimed as u32),
                        );
                        let new = u32::from(u16::from_be_bytes([nt, code]));
                        adjust_at(out, l4 + 2, old, new, false);
                    }
                    if let (Some(nt), Some(t)) = (new_type, out.get_mut(l4)) {
                        *t = nt;
                    }
                }
                _ => {}
            }
        }
        if out.len() - start > limit {
            out.truncate(start + limit);
        }
        Ok(())
    }

    /// Inner-packet IPv6 address → IPv4 (no refresh, no creation).
    fn inner_v6_to_v4(&mut self, now: Instant, a: Ipv6Addr) -> Option<Ipv4Addr> {
        match self.extract(a) {
            Some(v4) => v4_unicast(v4).then_some(v4),
            None => self.map.v6_to_v4(now, a, false),
        }
    }

    /// An ICMPv4 error from `own_v4` to the source of the IPv4 packet `pkt` (RFC 1812
    /// §4.3.2: not about ICMP errors, non-first fragments or non-unicast sources).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn icmp4_error(
        &mut self,
        now: Instant,
        h: &Ipv4Hdr,
        pkt: &[u8],
        typ: u8,
        code: u8,
        rest: u32,
        out: &mut Vec<Vec<u8>>,
    ) {
        if h.offset != 0 || !v4_unicast(h.src) {
            return;
        }
        if h.proto == PROTO_ICMP && pkt.get(h.hlen).is_none_or(|t| is_icmp4_error(*t)) {
            return;
        }
        if !self.icmp_error_allowed(now) {
            return;
        }
        let quote = pkt
            .get(..pkt.len().min(ICMP4_ERROR_MAX - 28))
            .unwrap_or(&[]);
        let ip = Ipv4Hdr {
            hlen: 20,
            tos: 0,
            total_len: 28 + quote.len(),
            ident: self.next_error_ident(),
            df: false,
            mf: false,
            offset: 0,
            ttl: 64,
            proto: PROTO_ICMP,
            src: self.cfg.own_v4,
            dst: h.src,
        };
        let mut b = self.buffer(28 + quote.len());
        b.extend_from_slice(&ip.bytes());
        b.extend_from_slice(&[typ, code, 0, 0]);
        b.extend_from_slice(&rest.to_be_bytes());
        b.extend_from_slice(quote);
        let ck = checksum::finish(checksum::sum(b.get(20..).unwrap_or(&[])));
        put16(&mut b, 22, ck);
        out.push(b);
        self.stats.icmp_errors_sent += 1;
    }

    /// An ICMPv6 error from `own_v6` to the source of the IPv6 packet `pkt` (RFC 4443
    /// §2.4: not about ICMPv6 errors, non-first fragments or non-unicast sources).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn icmp6_error(
        &mut self,
        now: Instant,
        h: &Ipv6Hdr,
        pkt: &[u8],
        typ: u8,
        code: u8,
        param: u32,
        out: &mut Vec<Vec<u8>>,
    ) {
        if h.frag.is_some_and(|f| f.offset != 0) || !crate::wire::v6_unicast(h.src) {
            return;
        }
        if h.proto == PROTO_ICMPV6 && pkt.get(h.l4_off).is_none_or(|t| *t < 128) {
            return;
        }
        if !self.icmp_error_allowed(now) {
            return;
        }
        let quote = pkt
            .get(..pkt.len().min(ICMP6_ERROR_MAX - 48))
            .unwrap_or(&[]);
        let own = self.cfg.own_v6;
        let len = 8 + quote.len();
        let mut b = self.buffer(40 + len);
        b.extend_from_slice(&ipv6_header(0, len, PROTO_ICMPV6, 64, own, h.src));
        b.extend_from_slice(&[typ, code, 0, 0]);
        b.extend_from_slice(&param.to_be_bytes());
        b.extend_from_slice(quote);
        let s = checksum::add(
            checksum::pseudo6(own, h.src, PROTO_ICMPV6, len as u32),
            checksum::sum(b.get(40..).unwrap_or(&[])),
        );
        put16(&mut b, 42, checksum::finish(s));
        out.push(b);
        self.stats.icmp_errors_sent += 1;
    }

    /// Token bucket shared by both families (RFC 4443 §2.4 (f): ICMPv6 errors MUST be
    /// rate limited; RFC 1812 §4.3.2.8 likewise for ICMPv4).
    fn icmp_error_allowed(&mut self, now: Instant) -> bool {
        match self.icmp_refill {
            None => self.icmp_refill = Some(now),
            Some(t) => {
                let elapsed = now.saturating_duration_since(t);
                let add = elapsed.as_nanos() / ERROR_REFILL.as_nanos();
                if add >= u128::from(ERROR_BURST) {
                    self.icmp_tokens = ERROR_BURST;
                    self.icmp_refill = Some(now);
                } else if add > 0 {
                    self.icmp_tokens = (self.icmp_tokens + add as u32).min(ERROR_BURST);
                    self.icmp_refill = Some(t + ERROR_REFILL * add as u32);
                }
            }
        }
        if self.icmp_tokens == 0 {
            self.stats.icmp_errors_rate_limited += 1;
            return false;
        }
        self.icmp_tokens -= 1;
        true
    }

    fn next_error_ident(&mut self) -> u16 {
        self.next_ident = self.next_ident.wrapping_add(1);
        self.next_ident
    }
}

/// Incremental checksum update of the 16-bit field at `at`, when present (truncated
/// inner packets may lack it). `udp`: zero means "no checksum" and stays zero, and a
/// computed zero is written as all ones.
fn adjust_at(b: &mut [u8], at: usize, old: u32, new: u32, udp: bool) {
    if let Some(ck) = be16(b, at) {
        if udp && ck == 0 {
            return;
        }
        let n = checksum::adjust(ck, old, new);
        put16(b, at, if udp && n == 0 { 0xffff } else { n });
    }
}
