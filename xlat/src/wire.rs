//! Checked views of IPv4 and IPv6 headers. Parsing never panics: every access goes
//! through `get`, and a view is built only once its lengths are consistent.

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::checksum;
use crate::Drop;

pub(crate) const PROTO_ICMP: u8 = 1;
pub(crate) const PROTO_TCP: u8 = 6;
pub(crate) const PROTO_UDP: u8 = 17;
pub(crate) const PROTO_ICMPV6: u8 = 58;
pub(crate) const NH_HOPOPT: u8 = 0;
pub(crate) const NH_ROUTING: u8 = 43;
pub(crate) const NH_FRAGMENT: u8 = 44;
pub(crate) const NH_DSTOPTS: u8 = 60;

/// Longest extension header chain we walk before giving up.
const MAX_EXT_HEADERS: usize = 8;

pub(crate) fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

pub(crate) fn put16(b: &mut [u8], at: usize, v: u16) {
    if let Some(s) = b.get_mut(at..at + 2) {
        s.copy_from_slice(&v.to_be_bytes());
    }
}

/// A parsed IPv4 header.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ipv4Hdr {
    pub hlen: usize,
    pub tos: u8,
    /// Total Length as written in the header.
    pub total_len: usize,
    pub ident: u16,
    pub df: bool,
    pub mf: bool,
    /// Fragment offset in 8-byte units.
    pub offset: u16,
    pub ttl: u8,
    pub proto: u8,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
}

impl Ipv4Hdr {
    pub fn is_fragment(&self) -> bool {
        self.mf || self.offset != 0
    }

    /// Parse the header at the start of `b`. `b` may be shorter than `total_len`
    /// (inner packets of ICMP errors are truncated); the caller checks that.
    pub fn parse(b: &[u8]) -> Result<Self, Drop> {
        let first = *b.first().ok_or(Drop::Truncated)?;
        if first >> 4 != 4 {
            return Err(Drop::BadHeader);
        }
        let hlen = usize::from(first & 0x0f) * 4;
        if hlen < 20 {
            return Err(Drop::BadHeader);
        }
        let h = b.get(..hlen).ok_or(Drop::Truncated)?;
        let total_len = usize::from(be16(h, 2).ok_or(Drop::Truncated)?);
        if total_len < hlen {
            return Err(Drop::BadHeader);
        }
        let frag = be16(h, 6).ok_or(Drop::Truncated)?;
        Ok(Ipv4Hdr {
            hlen,
            tos: h[1],
            total_len,
            ident: be16(h, 4).ok_or(Drop::Truncated)?,
            df: frag & 0x4000 != 0,
            mf: frag & 0x2000 != 0,
            offset: frag & 0x1fff,
            ttl: h[8],
            proto: h[9],
            src: Ipv4Addr::new(h[12], h[13], h[14], h[15]),
            dst: Ipv4Addr::new(h[16], h[17], h[18], h[19]),
        })
    }

    /// The 20-byte header (no options) with its checksum.
    pub fn bytes(&self) -> [u8; 20] {
        let frag = (u16::from(self.df) << 14) | (u16::from(self.mf) << 13) | (self.offset & 0x1fff);
        let mut h = [0u8; 20];
        h[0] = 0x45;
        h[1] = self.tos;
        h[2..4].copy_from_slice(&(self.total_len as u16).to_be_bytes());
        h[4..6].copy_from_slice(&self.ident.to_be_bytes());
        h[6..8].copy_from_slice(&frag.to_be_bytes());
        h[8] = self.ttl;
        h[9] = self.proto;
        h[12..16].copy_from_slice(&self.src.octets());
        h[16..20].copy_from_slice(&self.dst.octets());
        let ck = checksum::finish(checksum::sum(&h));
        h[10..12].copy_from_slice(&ck.to_be_bytes());
        h
    }
}

/// The Fragment header's content (RFC 8200 §4.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Frag {
    pub ident: u32,
    /// Offset in 8-byte units.
    pub offset: u16,
    pub more: bool,
}

/// A parsed IPv6 header and its extension header chain.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ipv6Hdr {
    pub tclass: u8,
    /// Payload Length as written in the header.
    pub payload_len: usize,
    pub hop_limit: u8,
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    /// Upper-layer protocol after the extension headers (RFC 7915 §5.1 "Protocol").
    pub proto: u8,
    /// Offset of the upper-layer header from the start of the IPv6 header.
    pub l4_off: usize,
    pub frag: Option<Frag>,
    /// Offset (from the IPv6 header start) of the Segments Left byte of a Routing
    /// header whose Segments Left is non-zero.
    pub routing_pending: Option<usize>,
}

impl Ipv6Hdr {
    pub fn is_fragment(&self) -> bool {
        self.frag.is_some_and(|f| f.more || f.offset != 0)
    }

    /// Parse the fixed header and walk Hop-by-Hop, Routing, Destination Options and
    /// Fragment headers (RFC 7915 §5.1: these are not translated). `b` may be shorter
    /// than the payload length says (inner packets); the headers must be complete.
    pub fn parse(b: &[u8]) -> Result<Self, Drop> {
        let h = b.get(..40).ok_or(Drop::Truncated)?;
        if h[0] >> 4 != 6 {
            return Err(Drop::BadHeader);
        }
        let tclass = (h[0] << 4) | (h[1] >> 4);
        let payload_len = usize::from(be16(h, 4).ok_or(Drop::Truncated)?);
        let mut next = h[6];
        let hop_limit = h[7];
        let mut src = [0u8; 16];
        src.copy_from_slice(&h[8..24]);
        let mut dst = [0u8; 16];
        dst.copy_from_slice(&h[24..40]);
        let mut off = 40;
        let mut frag = None;
        let mut routing_pending = None;
        let mut count = 0;
        loop {
            match next {
                NH_HOPOPT | NH_ROUTING | NH_DSTOPTS => {
                    let e = b.get(off..off + 8).ok_or(Drop::Truncated)?;
                    let len = (usize::from(e[1]) + 1) * 8;
                    if next == NH_ROUTING && e[3] != 0 && routing_pending.is_none() {
                        routing_pending = Some(off + 3);
                    }
                    if b.len() < off + len {
                        return Err(Drop::Truncated);
                    }
                    next = e[0];
                    off += len;
                }
                NH_FRAGMENT => {
                    let e = b.get(off..off + 8).ok_or(Drop::Truncated)?;
                    if frag.is_some() {
                        return Err(Drop::ExtensionHeader);
                    }
                    let fo = be16(e, 2).ok_or(Drop::Truncated)?;
                    frag = Some(Frag {
                        ident: u32::from_be_bytes([e[4], e[5], e[6], e[7]]),
                        offset: fo >> 3,
                        more: fo & 1 != 0,
                    });
                    next = e[0];
                    off += 8;
                    // Headers after a non-first fragment's Fragment header are payload.
                    if fo >> 3 != 0 {
                        break;
                    }
                }
                _ => break,
            }
            count += 1;
            if count > MAX_EXT_HEADERS {
                return Err(Drop::ExtensionHeader);
            }
        }
        if off > 40 + payload_len {
            return Err(Drop::BadHeader);
        }
        Ok(Ipv6Hdr {
            tclass,
            payload_len,
            hop_limit,
            src: Ipv6Addr::from(src),
            dst: Ipv6Addr::from(dst),
            proto: next,
            l4_off: off,
            frag,
            routing_pending,
        })
    }
}

/// A 40-byte IPv6 header.
pub(crate) fn ipv6_header(
    tclass: u8,
    payload_len: usize,
    next: u8,
    hop_limit: u8,
    src: Ipv6Addr,
    dst: Ipv6Addr,
) -> [u8; 40] {
    let mut h = [0u8; 40];
    // RFC 7915 §4.1: Traffic Class from the Type of Service octet, Flow Label 0.
    h[0] = 0x60 | (tclass >> 4);
    h[1] = tclass << 4;
    h[4..6].copy_from_slice(&(payload_len as u16).to_be_bytes());
    h[6] = next;
    h[7] = hop_limit;
    h[8..24].copy_from_slice(&src.octets());
    h[24..40].copy_from_slice(&dst.octets());
    h
}

/// Write an 8-byte Fragment header.
pub(crate) fn emit_frag(out: &mut Vec<u8>, next: u8, f: Frag) {
    out.push(next);
    out.push(0);
    out.extend_from_slice(&((f.offset << 3) | u16::from(f.more)).to_be_bytes());
    out.extend_from_slice(&f.ident.to_be_bytes());
}

/// Whether an IPv4 address may appear as a translated source or destination.
pub(crate) fn v4_unicast(a: Ipv4Addr) -> bool {
    !(a.is_unspecified() || a.is_loopback() || a.is_multicast() || a.is_broadcast())
}

/// Whether an IPv6 address may appear as a translated source.
pub(crate) fn v6_unicast(a: Ipv6Addr) -> bool {
    !(a.is_unspecified() || a.is_loopback() || a.is_multicast())
}

/// Whether an unexpired Loose or Strict Source Route option is present (RFC 7915 §4.1).
pub(crate) fn has_source_route(options: &[u8]) -> bool {
    let mut i = 0;
    while let Some(&kind) = options.get(i) {
        match kind {
            0 => return false,
            1 => i += 1,
            _ => {
                let Some(&len) = options.get(i + 1) else {
                    return false;
                };
                if len < 2 {
                    return false;
                }
                if kind == 131 || kind == 137 {
                    // The pointer is 1-based from the option start; it points past the
                    // route data once every hop has been visited.
                    if let Some(&ptr) = options.get(i + 2) {
                        if usize::from(ptr) <= usize::from(len) {
                            return true;
                        }
                    }
                }
                i += usize::from(len);
            }
        }
    }
    false
}
