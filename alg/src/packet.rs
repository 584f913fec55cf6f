//! Views over IPv4 + TCP/UDP packets that cannot panic on any input, and a
//! builder for the rewritten packet.
//!
//! In the manner of smoltcp's `wire` module: [`Ipv4Packet`], [`TcpSegment`]
//! and [`UdpDatagram`] check every length once in `parse` (IHL, total length,
//! TCP data offset, UDP length) and their accessors read only inside the
//! checked range; no accessor indexes untrusted bytes directly.
//!
//! The transport views take the transport bytes alone and the checksums take
//! the pseudo-header sum as a number ([`pseudo_header_v4`]), so an IPv6 view
//! (RGW64) only adds its own header view and pseudo-header.

use std::fmt;
use std::net::Ipv4Addr;

/// Minimum IPv4 header length (RFC 791 §3.1, IHL = 5).
pub const IPV4_MIN_HEADER: usize = 20;
/// Minimum TCP header length (RFC 9293 §3.1, data offset = 5).
pub const TCP_MIN_HEADER: usize = 20;
/// UDP header length (RFC 768).
pub const UDP_HEADER: usize = 8;
/// TCP option kind of SACK blocks (RFC 2018 §3).
pub const TCP_OPT_SACK: u8 = 5;

/// Why a packet could not be viewed or built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketError {
    /// Shorter than the header it claims or needs.
    Truncated,
    /// IP version field is not 4.
    NotIpv4,
    /// IHL below 5.
    BadHeaderLength,
    /// Total length below the header length or beyond the buffer.
    BadTotalLength,
    /// A fragment (MF set or non-zero offset): the payload is not whole.
    Fragment,
    /// Neither TCP nor UDP.
    UnsupportedProtocol(u8),
    /// TCP data offset below 5 or beyond the segment.
    BadDataOffset,
    /// UDP length field below 8 or beyond the datagram.
    BadUdpLength,
    /// A rebuilt packet would exceed 65535 bytes.
    TooLong,
}

impl fmt::Display for PacketError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PacketError::Truncated => write!(f, "truncated packet"),
            PacketError::NotIpv4 => write!(f, "not IPv4"),
            PacketError::BadHeaderLength => write!(f, "IPv4 header length below 20"),
            PacketError::BadTotalLength => write!(f, "IPv4 total length inconsistent"),
            PacketError::Fragment => write!(f, "IPv4 fragment"),
            PacketError::UnsupportedProtocol(p) => write!(f, "unsupported IP protocol {p}"),
            PacketError::BadDataOffset => write!(f, "TCP data offset inconsistent"),
            PacketError::BadUdpLength => write!(f, "UDP length inconsistent"),
            PacketError::TooLong => write!(f, "packet would exceed 65535 bytes"),
        }
    }
}

impl std::error::Error for PacketError {}

#[inline]
fn be16(b: &[u8], at: usize) -> u16 {
    match b.get(at..at + 2) {
        Some(&[x, y]) => u16::from_be_bytes([x, y]),
        _ => 0,
    }
}

#[inline]
fn be32(b: &[u8], at: usize) -> u32 {
    match b.get(at..at + 4) {
        Some(&[w, x, y, z]) => u32::from_be_bytes([w, x, y, z]),
        _ => 0,
    }
}

#[inline]
fn put16(b: &mut [u8], at: usize, v: u16) {
    if let Some(s) = b.get_mut(at..at + 2) {
        s.copy_from_slice(&v.to_be_bytes());
    }
}

#[inline]
fn put32(b: &mut [u8], at: usize, v: u32) {
    if let Some(s) = b.get_mut(at..at + 4) {
        s.copy_from_slice(&v.to_be_bytes());
    }
}

/// One's complement sum of `data` added to `sum` (RFC 1071), not folded.
pub fn sum_words(mut sum: u32, data: &[u8]) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        if let &[x, y] = c {
            sum = sum.wrapping_add(u32::from(u16::from_be_bytes([x, y])));
        }
    }
    if let &[x] = chunks.remainder() {
        sum = sum.wrapping_add(u32::from(x) << 8);
    }
    // Fold early so that a large buffer cannot overflow the accumulator.
    (sum & 0xFFFF) + (sum >> 16)
}

/// Folds a sum and complements it: the value to store in a checksum field.
pub fn finish_checksum(mut sum: u32) -> u16 {
    while sum >> 16 != 0 {
        sum = (sum & 0xFFFF) + (sum >> 16);
    }
    !(sum as u16)
}

/// Sum of the IPv4 pseudo-header (RFC 793 §3.1, RFC 768) for a transport
/// segment of `len` bytes.
pub fn pseudo_header_v4(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, len: usize) -> u32 {
    let mut sum = sum_words(0, &src.octets());
    sum = sum_words(sum, &dst.octets());
    sum = sum.wrapping_add(u32::from(protocol));
    sum.wrapping_add(len as u32 & 0xFFFF)
        .wrapping_add((len as u32) >> 16)
}

/// A checked view of an IPv4 packet; `buf` is cut to the total length.
#[derive(Debug, Clone, Copy)]
pub struct Ipv4Packet<'a> {
    buf: &'a [u8],
    header_len: usize,
}

impl<'a> Ipv4Packet<'a> {
    /// Checks version, IHL and total length (RFC 791 §3.1). Bytes beyond the
    /// total length (link padding) are ignored.
    pub fn parse(buf: &'a [u8]) -> Result<Self, PacketError> {
        let first = *buf.first().ok_or(PacketError::Truncated)?;
        if first >> 4 != 4 {
            return Err(PacketError::NotIpv4);
        }
        let header_len = usize::from(first & 0x0F) * 4;
        if header_len < IPV4_MIN_HEADER {
            return Err(PacketError::BadHeaderLength);
        }
        if buf.len() < header_len {
            return Err(PacketError::Truncated);
        }
        let total = usize::from(be16(buf, 2));
        if total < header_len || total > buf.len() {
            return Err(PacketError::BadTotalLength);
        }
        let buf = buf.get(..total).ok_or(PacketError::BadTotalLength)?;
        Ok(Self { buf, header_len })
    }

    /// The header including options.
    pub fn header(&self) -> &'a [u8] {
        self.buf.get(..self.header_len).unwrap_or(&[])
    }

    /// The transport bytes (up to the total length).
    pub fn payload(&self) -> &'a [u8] {
        self.buf.get(self.header_len..).unwrap_or(&[])
    }

    /// The whole packet (cut to the total length).
    pub fn as_bytes(&self) -> &'a [u8] {
        self.buf
    }

    pub fn header_len(&self) -> usize {
        self.header_len
    }

    pub fn total_len(&self) -> usize {
        self.buf.len()
    }

    pub fn protocol(&self) -> u8 {
        self.buf.get(9).copied().unwrap_or(0)
    }

    pub fn ttl(&self) -> u8 {
        self.buf.get(8).copied().unwrap_or(0)
    }

    pub fn src(&self) -> Ipv4Addr {
        Ipv4Addr::from(be32(self.buf, 12))
    }

    pub fn dst(&self) -> Ipv4Addr {
        Ipv4Addr::from(be32(self.buf, 16))
    }

    /// More-fragments set or a non-zero fragment offset.
    pub fn is_fragment(&self) -> bool {
        be16(self.buf, 6) & 0x3FFF != 0
    }

    /// Whether the header checksum verifies.
    pub fn header_checksum_ok(&self) -> bool {
        finish_checksum(sum_words(0, self.header())) == 0
    }

    /// Pseudo-header sum for this packet's transport bytes of `len` bytes.
    pub fn pseudo_header(&self, len: usize) -> u32 {
        pseudo_header_v4(self.src(), self.dst(), self.protocol(), len)
    }
}

/// TCP control bits (RFC 9293 §3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpFlags(pub u8);

impl TcpFlags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;

    pub fn fin(self) -> bool {
        self.0 & Self::FIN != 0
    }
    pub fn syn(self) -> bool {
        self.0 & Self::SYN != 0
    }
    pub fn rst(self) -> bool {
        self.0 & Self::RST != 0
    }
    pub fn ack(self) -> bool {
        self.0 & Self::ACK != 0
    }
}

/// A checked view of a TCP segment (header, options, payload).
#[derive(Debug, Clone, Copy)]
pub struct TcpSegment<'a> {
    buf: &'a [u8],
    header_len: usize,
}

/// Where the SACK option sits in a TCP header: byte offset of its kind byte
/// from the start of the TCP header, its length, and its blocks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SackOption {
    pub offset: usize,
    pub len: usize,
    pub blocks: Vec<(u32, u32)>,
}

impl<'a> TcpSegment<'a> {
    /// Checks the minimum length and the data offset.
    pub fn parse(buf: &'a [u8]) -> Result<Self, PacketError> {
        if buf.len() < TCP_MIN_HEADER {
            return Err(PacketError::Truncated);
        }
        let header_len = usize::from(buf.get(12).copied().unwrap_or(0) >> 4) * 4;
        if header_len < TCP_MIN_HEADER || header_len > buf.len() {
            return Err(PacketError::BadDataOffset);
        }
        Ok(Self { buf, header_len })
    }

    pub fn src_port(&self) -> u16 {
        be16(self.buf, 0)
    }
    pub fn dst_port(&self) -> u16 {
        be16(self.buf, 2)
    }
    pub fn seq(&self) -> u32 {
        be32(self.buf, 4)
    }
    pub fn ack(&self) -> u32 {
        be32(self.buf, 8)
    }
    pub fn flags(&self) -> TcpFlags {
        TcpFlags(self.buf.get(13).copied().unwrap_or(0))
    }
    pub fn window(&self) -> u16 {
        be16(self.buf, 14)
    }
    pub fn header_len(&self) -> usize {
        self.header_len
    }
    pub fn header(&self) -> &'a [u8] {
        self.buf.get(..self.header_len).unwrap_or(&[])
    }
    pub fn options(&self) -> &'a [u8] {
        self.buf.get(TCP_MIN_HEADER..self.header_len).unwrap_or(&[])
    }
    pub fn payload(&self) -> &'a [u8] {
        self.buf.get(self.header_len..).unwrap_or(&[])
    }
    /// Sequence space the segment occupies: payload plus one for SYN and FIN.
    pub fn seq_len(&self) -> u32 {
        let f = self.flags();
        self.payload().len() as u32 + u32::from(f.syn()) + u32::from(f.fin())
    }

    /// The SACK option (RFC 2018), if present and well formed. Options are
    /// walked until End of Option List or a malformed length.
    pub fn sack(&self) -> Option<SackOption> {
        let opts = self.options();
        let mut i = 0;
        while let Some(&kind) = opts.get(i) {
            match kind {
                0 => return None,
                1 => i += 1,
                _ => {
                    let len = usize::from(*opts.get(i + 1)?);
                    if len < 2 || i + len > opts.len() {
                        return None;
                    }
                    if kind == TCP_OPT_SACK {
                        if (len - 2) % 8 != 0 {
                            return None;
                        }
                        let body = opts.get(i + 2..i + len)?;
                        let blocks = body
                            .chunks_exact(8)
                            .map(|c| (be32(c, 0), be32(c, 4)))
                            .collect();
                        return Some(SackOption {
                            offset: TCP_MIN_HEADER + i,
                            len,
                            blocks,
                        });
                    }
                    i += len;
                }
            }
        }
        None
    }

    /// The SACK blocks (empty if none).
    pub fn sack_blocks(&self) -> Vec<(u32, u32)> {
        self.sack().map(|s| s.blocks).unwrap_or_default()
    }

    /// Whether the checksum verifies with the given pseudo-header sum.
    pub fn checksum_ok(&self, pseudo: u32) -> bool {
        finish_checksum(sum_words(pseudo, self.buf)) == 0
    }

    pub fn as_bytes(&self) -> &'a [u8] {
        self.buf
    }
}

/// A checked view of a UDP datagram; `buf` is cut to the UDP length.
#[derive(Debug, Clone, Copy)]
pub struct UdpDatagram<'a> {
    buf: &'a [u8],
}

impl<'a> UdpDatagram<'a> {
    /// Checks the header and the length field (RFC 768).
    pub fn parse(buf: &'a [u8]) -> Result<Self, PacketError> {
        if buf.len() < UDP_HEADER {
            return Err(PacketError::Truncated);
        }
        let len = usize::from(be16(buf, 4));
        if len < UDP_HEADER || len > buf.len() {
            return Err(PacketError::BadUdpLength);
        }
        let buf = buf.get(..len).ok_or(PacketError::BadUdpLength)?;
        Ok(Self { buf })
    }

    pub fn src_port(&self) -> u16 {
        be16(self.buf, 0)
    }
    pub fn dst_port(&self) -> u16 {
        be16(self.buf, 2)
    }
    pub fn length(&self) -> u16 {
        be16(self.buf, 4)
    }
    pub fn checksum(&self) -> u16 {
        be16(self.buf, 6)
    }
    pub fn payload(&self) -> &'a [u8] {
        self.buf.get(UDP_HEADER..).unwrap_or(&[])
    }
    /// Whether the checksum verifies (a zero checksum means none, RFC 768).
    pub fn checksum_ok(&self, pseudo: u32) -> bool {
        self.checksum() == 0 || finish_checksum(sum_words(pseudo, self.buf)) == 0
    }
    pub fn as_bytes(&self) -> &'a [u8] {
        self.buf
    }
}

/// The transport part of a packet the engine handles.
#[derive(Debug, Clone, Copy)]
pub enum Transport<'a> {
    Tcp(TcpSegment<'a>),
    Udp(UdpDatagram<'a>),
}

/// A whole, unfragmented IPv4 packet carrying TCP or UDP.
#[derive(Debug, Clone, Copy)]
pub struct Packet<'a> {
    pub ip: Ipv4Packet<'a>,
    pub l4: Transport<'a>,
}

impl<'a> Packet<'a> {
    pub fn parse(buf: &'a [u8]) -> Result<Self, PacketError> {
        let ip = Ipv4Packet::parse(buf)?;
        if ip.is_fragment() {
            return Err(PacketError::Fragment);
        }
        let l4 = match ip.protocol() {
            6 => Transport::Tcp(TcpSegment::parse(ip.payload())?),
            17 => Transport::Udp(UdpDatagram::parse(ip.payload())?),
            p => return Err(PacketError::UnsupportedProtocol(p)),
        };
        Ok(Self { ip, l4 })
    }

    pub fn src_port(&self) -> u16 {
        match self.l4 {
            Transport::Tcp(t) => t.src_port(),
            Transport::Udp(u) => u.src_port(),
        }
    }

    pub fn dst_port(&self) -> u16 {
        match self.l4 {
            Transport::Tcp(t) => t.dst_port(),
            Transport::Udp(u) => u.dst_port(),
        }
    }

    /// Whether the IPv4 header and the transport checksums verify.
    pub fn checksums_ok(&self) -> bool {
        if !self.ip.header_checksum_ok() {
            return false;
        }
        match self.l4 {
            Transport::Tcp(t) => t.checksum_ok(self.ip.pseudo_header(t.as_bytes().len())),
            Transport::Udp(u) => u.checksum_ok(self.ip.pseudo_header(u.as_bytes().len())),
        }
    }
}

/// Changes to a TCP segment for [`rebuild_tcp`].
#[derive(Debug, Clone, Copy)]
pub struct TcpEdit<'p> {
    pub seq: u32,
    pub ack: u32,
    /// New SACK blocks, at most as many as the segment's SACK option holds;
    /// the freed option bytes become NOPs so the header length stays.
    /// `None`: leave the option as it is.
    pub sack: Option<&'p [(u32, u32)]>,
    pub payload: &'p [u8],
}

/// Writes the IPv4 total length and header checksum of `out` (an IPv4
/// packet whose header is `header_len` bytes).
fn finish_ipv4(out: &mut [u8], header_len: usize) -> Result<(), PacketError> {
    let total = u16::try_from(out.len()).map_err(|_| PacketError::TooLong)?;
    put16(out, 2, total);
    put16(out, 10, 0);
    let sum = finish_checksum(sum_words(0, out.get(..header_len).unwrap_or(&[])));
    put16(out, 10, sum);
    Ok(())
}

/// A new IPv4 packet: the original IP header (options kept), the TCP header
/// with `edit`'s SEQ, ACK and SACK blocks, and `edit.payload`; total
/// length, header checksum and TCP checksum recomputed.
pub fn rebuild_tcp(
    ip: &Ipv4Packet<'_>,
    tcp: &TcpSegment<'_>,
    edit: &TcpEdit<'_>,
) -> Result<Vec<u8>, PacketError> {
    let ihl = ip.header_len();
    let thl = tcp.header_len();
    let mut out = Vec::with_capacity(ihl + thl + edit.payload.len());
    out.extend_from_slice(ip.header());
    out.extend_from_slice(tcp.header());
    out.extend_from_slice(edit.payload);
    if out.len() > usize::from(u16::MAX) {
        return Err(PacketError::TooLong);
    }
    let (seg_start, seg_len) = (ihl, out.len() - ihl);
    put32(&mut out, ihl + 4, edit.seq);
    put32(&mut out, ihl + 8, edit.ack);
    if let (Some(blocks), Some(opt)) = (edit.sack, tcp.sack()) {
        let room = opt.blocks.len();
        let n = blocks.len().min(room);
        let at = ihl + opt.offset;
        if let Some(area) = out.get_mut(at..at + opt.len) {
            area.fill(1); // NOP
            if n > 0 {
                let mut w = 0;
                if let Some(b) = area.get_mut(w) {
                    *b = TCP_OPT_SACK;
                }
                if let Some(b) = area.get_mut(w + 1) {
                    *b = (2 + 8 * n) as u8;
                }
                w += 2;
                for &(l, r) in blocks.iter().take(n) {
                    put32(area, w, l);
                    put32(area, w + 4, r);
                    w += 8;
                }
            }
        }
    }
    finish_ipv4(&mut out, ihl)?;
    put16(&mut out, ihl + 16, 0);
    let pseudo = pseudo_header_v4(ip.src(), ip.dst(), 6, seg_len);
    let sum = finish_checksum(sum_words(pseudo, out.get(seg_start..).unwrap_or(&[])));
    put16(&mut out, ihl + 16, sum);
    Ok(out)
}

/// A new IPv4 packet with the same headers and `payload` as the UDP
/// payload; UDP length, total length and both checksums recomputed.
pub fn rebuild_udp(
    ip: &Ipv4Packet<'_>,
    udp: &UdpDatagram<'_>,
    payload: &[u8],
) -> Result<Vec<u8>, PacketError> {
    let ihl = ip.header_len();
    let udp_len = u16::try_from(UDP_HEADER + payload.len()).map_err(|_| PacketError::TooLong)?;
    let mut out = Vec::with_capacity(ihl + usize::from(udp_len));
    out.extend_from_slice(ip.header());
    out.extend_from_slice(udp.as_bytes().get(..UDP_HEADER).unwrap_or(&[0; 8]));
    out.extend_from_slice(payload);
    if out.len() > usize::from(u16::MAX) {
        return Err(PacketError::TooLong);
    }
    put16(&mut out, ihl + 4, udp_len);
    finish_ipv4(&mut out, ihl)?;
    put16(&mut out, ihl + 6, 0);
    let pseudo = pseudo_header_v4(ip.src(), ip.dst(), 17, usize::from(udp_len));
    let mut sum = finish_checksum(sum_words(pseudo, out.get(ihl..).unwrap_or(&[])));
    if sum == 0 {
        sum = 0xFFFF; // RFC 768: a computed zero is sent as all ones
    }
    put16(&mut out, ihl + 6, sum);
    Ok(out)
}

/// Clears Don't Fragment in an IPv4 packet (and gives it a non-zero
/// Identification if it had none, RFC 6864 §4.1), fixing the header checksum.
///
/// For a packet the ALG made longer than the one the sender sent: the
/// sender's path MTU estimate covers its own segment sizes, not the growth,
/// and an ICMP "fragmentation needed" for a size the sender never sent cannot
/// be acted on; a router fragmenting the packet is the lesser evil.
pub fn allow_fragmentation(packet: &mut [u8], id_hint: u16) {
    let Ok(ip) = Ipv4Packet::parse(packet) else {
        return;
    };
    let ihl = ip.header_len();
    let flags = be16(packet, 6);
    if flags & 0x4000 == 0 {
        return;
    }
    put16(packet, 6, flags & !0x4000);
    if be16(packet, 4) == 0 {
        put16(packet, 4, id_hint.max(1));
    }
    put16(packet, 10, 0);
    let sum = finish_checksum(sum_words(0, packet.get(..ihl).unwrap_or(&[])));
    put16(packet, 10, sum);
}

/// Test and tooling helpers: build packets from parts.
pub mod build {
    use super::*;

    /// Options for [`tcp_packet`].
    #[derive(Debug, Clone)]
    pub struct TcpSpec<'a> {
        pub src: (Ipv4Addr, u16),
        pub dst: (Ipv4Addr, u16),
        pub seq: u32,
        pub ack: u32,
        pub flags: u8,
        pub sack: &'a [(u32, u32)],
        pub payload: &'a [u8],
    }

    fn ipv4_header(src: Ipv4Addr, dst: Ipv4Addr, proto: u8) -> Vec<u8> {
        let mut h = vec![0u8; IPV4_MIN_HEADER];
        h[0] = 0x45;
        h[6] = 0x40; // DF
        h[8] = 64;
        h[9] = proto;
        h[12..16].copy_from_slice(&src.octets());
        h[16..20].copy_from_slice(&dst.octets());
        h
    }

    /// A TCP/IPv4 packet with a timestamp-like NOP padding and, if `sack`
    /// is non-empty, a SACK option; checksums correct.
    pub fn tcp_packet(s: &TcpSpec<'_>) -> Vec<u8> {
        let mut opts = Vec::new();
        if !s.sack.is_empty() {
            opts.extend_from_slice(&[1, 1, TCP_OPT_SACK, (2 + 8 * s.sack.len()) as u8]);
            for &(l, r) in s.sack {
                opts.extend_from_slice(&l.to_be_bytes());
                opts.extend_from_slice(&r.to_be_bytes());
            }
        }
        while opts.len() % 4 != 0 {
            opts.push(0);
        }
        let thl = TCP_MIN_HEADER + opts.len();
        let mut t = vec![0u8; TCP_MIN_HEADER];
        t[0..2].copy_from_slice(&s.src.1.to_be_bytes());
        t[2..4].copy_from_slice(&s.dst.1.to_be_bytes());
        t[4..8].copy_from_slice(&s.seq.to_be_bytes());
        t[8..12].copy_from_slice(&s.ack.to_be_bytes());
        t[12] = ((thl / 4) as u8) << 4;
        t[13] = s.flags;
        t[14..16].copy_from_slice(&64240u16.to_be_bytes());
        t.extend_from_slice(&opts);
        t.extend_from_slice(s.payload);
        let mut p = ipv4_header(s.src.0, s.dst.0, 6);
        let ihl = p.len();
        p.extend_from_slice(&t);
        let _ = finish_ipv4(&mut p, ihl);
        let pseudo = pseudo_header_v4(s.src.0, s.dst.0, 6, t.len());
        let sum = finish_checksum(sum_words(pseudo, &p[ihl..]));
        put16(&mut p, ihl + 16, sum);
        p
    }

    /// A UDP/IPv4 packet with correct checksums.
    pub fn udp_packet(src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16), payload: &[u8]) -> Vec<u8> {
        let mut p = ipv4_header(src.0, dst.0, 17);
        let ihl = p.len();
        let len = (UDP_HEADER + payload.len()) as u16;
        p.extend_from_slice(&src.1.to_be_bytes());
        p.extend_from_slice(&dst.1.to_be_bytes());
        p.extend_from_slice(&len.to_be_bytes());
        p.extend_from_slice(&[0, 0]);
        p.extend_from_slice(payload);
        let _ = finish_ipv4(&mut p, ihl);
        let pseudo = pseudo_header_v4(src.0, dst.0, 17, usize::from(len));
        let mut sum = finish_checksum(sum_words(pseudo, &p[ihl..]));
        if sum == 0 {
            sum = 0xFFFF;
        }
        put16(&mut p, ihl + 6, sum);
        p
    }
}

#[cfg(test)]
mod tests {
    use super::build::{tcp_packet, udp_packet, TcpSpec};
    use super::*;
    use crate::testutil::XorShift;

    const A: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 101);
    const B: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);

    fn spec<'a>(payload: &'a [u8], sack: &'a [(u32, u32)]) -> TcpSpec<'a> {
        TcpSpec {
            src: (A, 40000),
            dst: (B, 21),
            seq: 0xFFFF_FFF0,
            ack: 12345,
            flags: TcpFlags::ACK | TcpFlags::PSH,
            sack,
            payload,
        }
    }

    #[test]
    fn tcp_view() {
        let p = tcp_packet(&spec(b"PORT 1\r\n", &[(10, 20), (30, 40)]));
        let pkt = Packet::parse(&p).unwrap();
        assert!(pkt.checksums_ok());
        assert_eq!(pkt.ip.src(), A);
        assert_eq!(pkt.ip.dst(), B);
        assert_eq!(pkt.ip.protocol(), 6);
        assert_eq!(pkt.src_port(), 40000);
        assert_eq!(pkt.dst_port(), 21);
        let Transport::Tcp(t) = pkt.l4 else {
            panic!("not tcp")
        };
        assert_eq!(t.seq(), 0xFFFF_FFF0);
        assert_eq!(t.ack(), 12345);
        assert!(t.flags().ack() && !t.flags().syn() && !t.flags().fin());
        assert_eq!(t.payload(), b"PORT 1\r\n");
        assert_eq!(t.sack_blocks(), vec![(10, 20), (30, 40)]);
        assert_eq!(t.seq_len(), 8);
    }

    #[test]
    fn udp_view() {
        let p = udp_packet((A, 5060), (B, 5060), b"INVITE");
        let pkt = Packet::parse(&p).unwrap();
        assert!(pkt.checksums_ok());
        let Transport::Udp(u) = pkt.l4 else {
            panic!("not udp")
        };
        assert_eq!(u.length(), 14);
        assert_eq!(u.payload(), b"INVITE");
    }

    #[test]
    fn rebuild_tcp_fixes_lengths_and_checksums() {
        let p = tcp_packet(&spec(b"PORT 192,168,0,101,4,1\r\n", &[(10, 20), (30, 40)]));
        let pkt = Packet::parse(&p).unwrap();
        let Transport::Tcp(t) = pkt.l4 else {
            panic!("not tcp")
        };
        let new_payload = b"PORT 100,64,1,131,4,1\r\n";
        let out = rebuild_tcp(
            &pkt.ip,
            &t,
            &TcpEdit {
                seq: 7,
                ack: 99,
                sack: Some(&[(11, 21)]),
                payload: new_payload,
            },
        )
        .unwrap();
        let q = Packet::parse(&out).unwrap();
        assert!(q.checksums_ok());
        assert_eq!(q.ip.total_len(), out.len());
        assert_eq!(out.len(), p.len() - 1);
        let Transport::Tcp(u) = q.l4 else {
            panic!("not tcp")
        };
        assert_eq!((u.seq(), u.ack()), (7, 99));
        assert_eq!(u.payload(), new_payload);
        assert_eq!(u.sack_blocks(), vec![(11, 21)]);
        assert_eq!(u.header_len(), t.header_len());
        // All blocks gone: option replaced by NOPs.
        let out = rebuild_tcp(
            &pkt.ip,
            &t,
            &TcpEdit {
                seq: 7,
                ack: 99,
                sack: Some(&[]),
                payload: b"",
            },
        )
        .unwrap();
        let q = Packet::parse(&out).unwrap();
        assert!(q.checksums_ok());
        let Transport::Tcp(u) = q.l4 else {
            panic!("not tcp")
        };
        assert!(u.sack().is_none());
        assert!(u.payload().is_empty());
        // Odd payload length and a bit flip caught by the verifier.
        let out = rebuild_tcp(
            &pkt.ip,
            &t,
            &TcpEdit {
                seq: 1,
                ack: 2,
                sack: None,
                payload: b"odd",
            },
        )
        .unwrap();
        assert!(Packet::parse(&out).unwrap().checksums_ok());
        let mut bad = out.clone();
        let last = bad.len() - 1;
        bad[last] ^= 0x01;
        assert!(!Packet::parse(&bad).unwrap().checksums_ok());
        let mut bad = out;
        bad[8] ^= 0x01; // TTL: IP header checksum
        assert!(!Packet::parse(&bad).unwrap().checksums_ok());
    }

    #[test]
    fn rebuild_udp_fixes_lengths_and_checksums() {
        let p = udp_packet((A, 5060), (B, 5060), b"REGISTER sip:x SIP/2.0\r\n\r\n");
        let pkt = Packet::parse(&p).unwrap();
        let Transport::Udp(u) = pkt.l4 else {
            panic!("not udp")
        };
        for payload in [&b""[..], b"x", b"a longer replacement payload, odd!"] {
            let out = rebuild_udp(&pkt.ip, &u, payload).unwrap();
            let q = Packet::parse(&out).unwrap();
            assert!(q.checksums_ok());
            let Transport::Udp(v) = q.l4 else {
                panic!("not udp")
            };
            assert_eq!(usize::from(v.length()), 8 + payload.len());
            assert_eq!(v.payload(), payload);
            assert_ne!(v.checksum(), 0);
            assert_eq!((v.src_port(), v.dst_port()), (5060, 5060));
        }
        let huge = vec![0u8; 65_536];
        assert_eq!(rebuild_udp(&pkt.ip, &u, &huge), Err(PacketError::TooLong));
    }

    #[test]
    fn allow_fragmentation_clears_df() {
        let mut p = udp_packet((A, 5060), (B, 5060), b"x");
        assert_eq!(p[6] & 0x40, 0x40);
        allow_fragmentation(&mut p, 0x1234);
        let pkt = Packet::parse(&p).unwrap();
        assert!(pkt.checksums_ok());
        assert_eq!(p[6] & 0x40, 0);
        assert_eq!(&p[4..6], &[0x12, 0x34]);
        assert!(!pkt.ip.is_fragment());
        // Garbage: untouched, no panic.
        let mut g = vec![0x45, 0, 0];
        allow_fragmentation(&mut g, 1);
        assert_eq!(g, vec![0x45, 0, 0]);
    }

    #[test]
    fn ipv4_options_are_kept() {
        // IHL 6: one 4-byte option (NOP NOP NOP EOL).
        let p = tcp_packet(&spec(b"data", &[]));
        let mut q = p[..20].to_vec();
        q[0] = 0x46;
        q.extend_from_slice(&[1, 1, 1, 0]);
        q.extend_from_slice(&p[20..]);
        let l = (q.len() as u16).to_be_bytes();
        q[2] = l[0];
        q[3] = l[1];
        let pkt = Packet::parse(&q).unwrap();
        assert_eq!(pkt.ip.header_len(), 24);
        let Transport::Tcp(t) = pkt.l4 else {
            panic!("not tcp")
        };
        assert_eq!(t.payload(), b"data");
        let out = rebuild_tcp(
            &pkt.ip,
            &t,
            &TcpEdit {
                seq: 1,
                ack: 2,
                sack: None,
                payload: b"longer data",
            },
        )
        .unwrap();
        let r = Packet::parse(&out).unwrap();
        assert!(r.checksums_ok());
        assert_eq!(&out[20..24], &[1, 1, 1, 0]);
        let Transport::Tcp(t) = r.l4 else {
            panic!("not tcp")
        };
        assert_eq!(t.payload(), b"longer data");
    }

    #[test]
    fn checksum_known_value() {
        // RFC 1071 §3 example words: 0001 f203 f4f5 f6f7 → sum ddf2, checksum 220d.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(finish_checksum(sum_words(0, &data)), 0x220d);
    }

    #[test]
    fn rejects_malformed_headers() {
        let p = tcp_packet(&spec(b"hello", &[]));
        assert_eq!(Packet::parse(&[]).unwrap_err(), PacketError::Truncated);
        assert_eq!(Packet::parse(&p[..10]).unwrap_err(), PacketError::Truncated);
        let mut v6 = p.clone();
        v6[0] = 0x65;
        assert_eq!(Packet::parse(&v6).unwrap_err(), PacketError::NotIpv4);
        let mut ihl = p.clone();
        ihl[0] = 0x44;
        assert_eq!(
            Packet::parse(&ihl).unwrap_err(),
            PacketError::BadHeaderLength
        );
        let mut tl = p.clone();
        tl[2..4].copy_from_slice(&((p.len() + 1) as u16).to_be_bytes());
        assert_eq!(Packet::parse(&tl).unwrap_err(), PacketError::BadTotalLength);
        tl[2..4].copy_from_slice(&19u16.to_be_bytes());
        assert_eq!(Packet::parse(&tl).unwrap_err(), PacketError::BadTotalLength);
        let mut frag = p.clone();
        frag[6] |= 0x20;
        assert_eq!(Packet::parse(&frag).unwrap_err(), PacketError::Fragment);
        let mut doff = p.clone();
        doff[20 + 12] = 0xF0; // 60-byte header in a 25-byte segment
        assert_eq!(
            Packet::parse(&doff).unwrap_err(),
            PacketError::BadDataOffset
        );
        doff[20 + 12] = 0x40;
        assert_eq!(
            Packet::parse(&doff).unwrap_err(),
            PacketError::BadDataOffset
        );
        let mut icmp = p.clone();
        icmp[9] = 1;
        assert_eq!(
            Packet::parse(&icmp).unwrap_err(),
            PacketError::UnsupportedProtocol(1)
        );
        let u = udp_packet((A, 1), (B, 2), b"abc");
        let mut ul = u.clone();
        ul[24..26].copy_from_slice(&12u16.to_be_bytes());
        assert_eq!(Packet::parse(&ul).unwrap_err(), PacketError::BadUdpLength);
        ul[24..26].copy_from_slice(&7u16.to_be_bytes());
        assert_eq!(Packet::parse(&ul).unwrap_err(), PacketError::BadUdpLength);
        // Total length shorter than the buffer: trailing bytes ignored.
        let mut padded = p.clone();
        padded.extend_from_slice(&[0xAA; 6]);
        let pkt = Packet::parse(&padded).unwrap();
        assert!(pkt.checksums_ok());
        let Transport::Tcp(t) = pkt.l4 else {
            panic!("not tcp")
        };
        assert_eq!(t.payload(), b"hello");
    }

    #[test]
    fn malformed_sack_options_are_ignored() {
        let p = tcp_packet(&spec(b"", &[(1, 2)]));
        // Options: NOP NOP 5 10 <8 bytes>
        let mut bad = p.clone();
        bad[20 + 23] = 9; // length not 2 + 8n
        let pkt = Packet::parse(&bad).unwrap();
        let Transport::Tcp(t) = pkt.l4 else {
            panic!("not tcp")
        };
        assert!(t.sack().is_none());
        bad[20 + 23] = 200; // beyond the options
        let pkt = Packet::parse(&bad).unwrap();
        let Transport::Tcp(t) = pkt.l4 else {
            panic!("not tcp")
        };
        assert!(t.sack().is_none());
        bad[20 + 23] = 0; // length below 2
        let pkt = Packet::parse(&bad).unwrap();
        let Transport::Tcp(t) = pkt.l4 else {
            panic!("not tcp")
        };
        assert!(t.sack().is_none());
    }

    /// Exercises every accessor and the builders on a parsed packet.
    fn touch(buf: &[u8]) {
        let _ = Ipv4Packet::parse(buf).map(|ip| {
            let _ = (
                ip.src(),
                ip.dst(),
                ip.ttl(),
                ip.header_checksum_ok(),
                ip.payload(),
            );
        });
        let _ = TcpSegment::parse(buf).map(|t| (t.sack(), t.payload(), t.seq_len()));
        let _ = UdpDatagram::parse(buf).map(|u| (u.payload(), u.checksum_ok(0)));
        if let Ok(pkt) = Packet::parse(buf) {
            let _ = pkt.checksums_ok();
            match pkt.l4 {
                Transport::Tcp(t) => {
                    let blocks = t.sack_blocks();
                    let _ = (t.seq(), t.ack(), t.flags(), t.window(), t.options());
                    let out = rebuild_tcp(
                        &pkt.ip,
                        &t,
                        &TcpEdit {
                            seq: t.seq().wrapping_add(3),
                            ack: t.ack(),
                            sack: Some(&blocks),
                            payload: b"x",
                        },
                    )
                    .unwrap();
                    assert!(Packet::parse(&out).unwrap().checksums_ok());
                }
                Transport::Udp(u) => {
                    let out = rebuild_udp(&pkt.ip, &u, b"xy").unwrap();
                    assert!(Packet::parse(&out).unwrap().checksums_ok());
                }
            }
        }
    }

    #[test]
    fn random_and_truncated_input_never_panics() {
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        // Pure noise, with the version nibble forced to 4 half of the time.
        for _ in 0..20_000 {
            let len = (rng.next() % 120) as usize;
            let mut buf: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            if let Some(b) = buf.first_mut() {
                if rng.next() & 1 == 0 {
                    *b = 0x40 | (*b & 0x0F);
                }
            }
            if buf.len() > 3 && rng.next() & 1 == 0 {
                let l = (buf.len() as u16).to_be_bytes();
                buf[2] = l[0];
                buf[3] = l[1];
            }
            if buf.len() > 9 {
                buf[9] = [6, 17, 1][(rng.next() % 3) as usize];
            }
            touch(&buf);
        }
        // Valid packets, truncated at every length and with random bytes
        // flipped in the headers.
        let sack = [(1u32, 2u32), (3, 4), (5, 6)];
        let valid = [
            tcp_packet(&spec(b"PORT 192,168,0,101,4,1\r\n", &sack)),
            tcp_packet(&spec(b"", &[])),
            udp_packet((A, 5060), (B, 5060), b"SIP/2.0 200 OK\r\n\r\n"),
        ];
        for p in &valid {
            for cut in 0..=p.len() {
                touch(&p[..cut]);
            }
            for _ in 0..3000 {
                let mut q = p.clone();
                for _ in 0..3 {
                    let i = (rng.next() % 60) as usize % q.len();
                    q[i] = rng.next() as u8;
                }
                touch(&q);
            }
        }
    }
}
