//! Hand-built packets through the translator, every RFC 7915 case. Checksums are
//! verified with an independent implementation (`ck` below), not the crate's.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use crate::{Drop, MappingOrigin, Translator, XlatConfig, XlatError};

// ---------------------------------------------------------------- builder

/// Internet checksum, written independently of `crate::checksum`.
fn ck(data: &[u8]) -> u16 {
    let mut s: u64 = 0;
    let mut i = 0;
    while i < data.len() {
        let hi = u64::from(data[i]) << 8;
        let lo = data.get(i + 1).map_or(0, |b| u64::from(*b));
        s += hi | lo;
        i += 2;
    }
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

fn ph4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, len: usize) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&src.octets());
    v.extend_from_slice(&dst.octets());
    v.push(0);
    v.push(proto);
    v.extend_from_slice(&(len as u16).to_be_bytes());
    v
}

fn ph6(src: Ipv6Addr, dst: Ipv6Addr, next: u8, len: usize) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&src.octets());
    v.extend_from_slice(&dst.octets());
    v.extend_from_slice(&(len as u32).to_be_bytes());
    v.extend_from_slice(&[0, 0, 0, next]);
    v
}

fn cat(a: &[u8], b: &[u8]) -> Vec<u8> {
    let mut v = a.to_vec();
    v.extend_from_slice(b);
    v
}

fn set16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

fn get16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn udp_seg(sport: u16, dport: u16, data: &[u8]) -> Vec<u8> {
    let mut s = Vec::new();
    s.extend_from_slice(&sport.to_be_bytes());
    s.extend_from_slice(&dport.to_be_bytes());
    s.extend_from_slice(&((8 + data.len()) as u16).to_be_bytes());
    s.extend_from_slice(&[0, 0]);
    s.extend_from_slice(data);
    s
}

fn tcp_seg(sport: u16, dport: u16, data: &[u8]) -> Vec<u8> {
    let mut s = Vec::new();
    s.extend_from_slice(&sport.to_be_bytes());
    s.extend_from_slice(&dport.to_be_bytes());
    s.extend_from_slice(&0x0102_0304u32.to_be_bytes());
    s.extend_from_slice(&0x0a0b_0c0du32.to_be_bytes());
    s.extend_from_slice(&[0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0]);
    s.extend_from_slice(data);
    s
}

fn udp4(src: Ipv4Addr, dst: Ipv4Addr, data: &[u8]) -> Vec<u8> {
    let mut s = udp_seg(40000, 53, data);
    let c = ck(&cat(&ph4(src, dst, 17, s.len()), &s));
    set16(&mut s, 6, if c == 0 { 0xffff } else { c });
    s
}

fn udp6(src: Ipv6Addr, dst: Ipv6Addr, data: &[u8]) -> Vec<u8> {
    let mut s = udp_seg(40000, 53, data);
    let c = ck(&cat(&ph6(src, dst, 17, s.len()), &s));
    set16(&mut s, 6, if c == 0 { 0xffff } else { c });
    s
}

fn tcp4(src: Ipv4Addr, dst: Ipv4Addr, data: &[u8]) -> Vec<u8> {
    let mut s = tcp_seg(40000, 22, data);
    let c = ck(&cat(&ph4(src, dst, 6, s.len()), &s));
    set16(&mut s, 16, c);
    s
}

fn tcp6(src: Ipv6Addr, dst: Ipv6Addr, data: &[u8]) -> Vec<u8> {
    let mut s = tcp_seg(40000, 22, data);
    let c = ck(&cat(&ph6(src, dst, 6, s.len()), &s));
    set16(&mut s, 16, c);
    s
}

fn icmp4(typ: u8, code: u8, rest: u32, data: &[u8]) -> Vec<u8> {
    let mut m = vec![typ, code, 0, 0];
    m.extend_from_slice(&rest.to_be_bytes());
    m.extend_from_slice(data);
    let c = ck(&m);
    set16(&mut m, 2, c);
    m
}

fn icmp6(src: Ipv6Addr, dst: Ipv6Addr, typ: u8, code: u8, rest: u32, data: &[u8]) -> Vec<u8> {
    let mut m = vec![typ, code, 0, 0];
    m.extend_from_slice(&rest.to_be_bytes());
    m.extend_from_slice(data);
    let c = ck(&cat(&ph6(src, dst, 58, m.len()), &m));
    set16(&mut m, 2, c);
    m
}

#[derive(Clone)]
struct V4 {
    tos: u8,
    ident: u16,
    df: bool,
    mf: bool,
    offset: u16,
    ttl: u8,
    proto: u8,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    options: Vec<u8>,
}

impl V4 {
    fn new(src: Ipv4Addr, dst: Ipv4Addr, proto: u8) -> Self {
        V4 {
            tos: 0x28,
            ident: 0x1234,
            df: false,
            mf: false,
            offset: 0,
            ttl: 64,
            proto,
            src,
            dst,
            options: Vec::new(),
        }
    }

    fn build(&self, payload: &[u8]) -> Vec<u8> {
        let hlen = 20 + self.options.len();
        assert_eq!(hlen % 4, 0);
        let mut p = vec![0u8; hlen];
        p[0] = 0x40 | (hlen / 4) as u8;
        p[1] = self.tos;
        set16(&mut p, 2, (hlen + payload.len()) as u16);
        set16(&mut p, 4, self.ident);
        let flags = (u16::from(self.df) << 14) | (u16::from(self.mf) << 13) | self.offset;
        set16(&mut p, 6, flags);
        p[8] = self.ttl;
        p[9] = self.proto;
        p[12..16].copy_from_slice(&self.src.octets());
        p[16..20].copy_from_slice(&self.dst.octets());
        p[20..].copy_from_slice(&self.options);
        let c = ck(&p);
        set16(&mut p, 10, c);
        p.extend_from_slice(payload);
        p
    }
}

/// IPv6 packet; `ext` is a ready-made extension header chain whose first header
/// type is `first` (or empty, then `first` is the upper-layer protocol).
fn v6(src: Ipv6Addr, dst: Ipv6Addr, first: u8, hop: u8, ext: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x60 | 0x02, 0x80, 0x12, 0x34];
    p.extend_from_slice(&((ext.len() + payload.len()) as u16).to_be_bytes());
    p.push(first);
    p.push(hop);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(ext);
    p.extend_from_slice(payload);
    p
}

fn frag_hdr(next: u8, offset: u16, more: bool, ident: u32) -> Vec<u8> {
    let mut f = vec![next, 0];
    f.extend_from_slice(&((offset << 3) | u16::from(more)).to_be_bytes());
    f.extend_from_slice(&ident.to_be_bytes());
    f
}

// ---------------------------------------------------------------- parsers for checks

fn v4_src(p: &[u8]) -> Ipv4Addr {
    Ipv4Addr::new(p[12], p[13], p[14], p[15])
}
fn v4_dst(p: &[u8]) -> Ipv4Addr {
    Ipv4Addr::new(p[16], p[17], p[18], p[19])
}
fn v6_src(p: &[u8]) -> Ipv6Addr {
    Ipv6Addr::from(<[u8; 16]>::try_from(&p[8..24]).unwrap())
}
fn v6_dst(p: &[u8]) -> Ipv6Addr {
    Ipv6Addr::from(<[u8; 16]>::try_from(&p[24..40]).unwrap())
}

/// Valid IPv4 header checksum and Total Length equal to the buffer.
fn assert_v4_header(p: &[u8]) {
    assert_eq!(p[0] >> 4, 4);
    let hlen = usize::from(p[0] & 15) * 4;
    assert_eq!(ck(&p[..hlen]), 0, "IPv4 header checksum");
    assert_eq!(usize::from(get16(p, 2)), p.len(), "IPv4 total length");
}

/// Transport checksum of an unfragmented IPv4 packet, verified independently.
fn assert_v4_l4(p: &[u8]) {
    assert_v4_header(p);
    let hlen = usize::from(p[0] & 15) * 4;
    let l4 = &p[hlen..];
    let ok = match p[9] {
        1 => ck(l4) == 0,
        proto => ck(&cat(&ph4(v4_src(p), v4_dst(p), proto, l4.len()), l4)) == 0,
    };
    assert!(ok, "IPv4 transport checksum (proto {})", p[9]);
}

/// Transport checksum of an unfragmented IPv6 packet without extension headers.
fn assert_v6_l4(p: &[u8]) {
    assert_eq!(p[0] >> 4, 6);
    assert_eq!(
        usize::from(get16(p, 4)) + 40,
        p.len(),
        "IPv6 payload length"
    );
    let l4 = &p[40..];
    assert_eq!(
        ck(&cat(&ph6(v6_src(p), v6_dst(p), p[6], l4.len()), l4)),
        0,
        "IPv6 transport checksum (next {})",
        p[6]
    );
}

// ---------------------------------------------------------------- fixtures

fn prefix() -> Ipv6Addr {
    "fd64:6464:6464::".parse().unwrap()
}
fn p64(v4: Ipv4Addr) -> Ipv6Addr {
    crate::embed_in(prefix(), v4)
}
const STATIC4: Ipv4Addr = Ipv4Addr::new(10, 64, 0, 10);
fn static6() -> Ipv6Addr {
    "2001:db8:1::10".parse().unwrap()
}
fn host6() -> Ipv6Addr {
    "2001:db8:2::20".parse().unwrap()
}
const REMOTE4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const ROUTER4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
const OWN4: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
fn router6() -> Ipv6Addr {
    "2001:db8:ff::1".parse().unwrap()
}

fn cfg() -> XlatConfig {
    XlatConfig {
        prefix64: prefix(),
        pool4: Ipv4Addr::new(10, 64, 0, 0),
        pool4_len: 24,
        static_map: vec![(STATIC4, static6())],
        dynamic_timeout: Duration::from_secs(60),
        max_dynamic: 100,
        mtu6: 1500,
        mtu4: 1500,
        own_v4: OWN4,
        own_v6: p64(OWN4),
    }
}

fn xl() -> Translator {
    Translator::new(cfg()).unwrap()
}

fn run(t: &mut Translator, now: Instant, p: &[u8]) -> (Result<(), Drop>, Vec<Vec<u8>>) {
    let mut out = Vec::new();
    let r = t.translate(now, p, &mut out);
    (r, out)
}

fn one(t: &mut Translator, now: Instant, p: &[u8]) -> Vec<u8> {
    let (r, mut out) = run(t, now, p);
    assert_eq!(r, Ok(()));
    assert_eq!(out.len(), 1);
    out.pop().unwrap()
}

fn dropped(t: &mut Translator, now: Instant, p: &[u8], why: Drop) -> Vec<Vec<u8>> {
    let before = t.stats().dropped(why);
    let (r, out) = run(t, now, p);
    assert_eq!(r, Err(why));
    assert_eq!(t.stats().dropped(why), before + 1);
    out
}

/// A UDP packet from an IPv4 host to the statically mapped IPv6 host.
fn udp_in(data: &[u8]) -> Vec<u8> {
    V4::new(REMOTE4, STATIC4, 17).build(&udp4(REMOTE4, STATIC4, data))
}

/// A UDP packet from the dynamic IPv6 host to an IPv4 host through its proxy ULA.
fn udp_out(data: &[u8]) -> Vec<u8> {
    v6(
        host6(),
        p64(REMOTE4),
        17,
        64,
        &[],
        &udp6(host6(), p64(REMOTE4), data),
    )
}

// ---------------------------------------------------------------- configuration

#[test]
fn config_validation() {
    let bad = |f: &dyn Fn(&mut XlatConfig)| {
        let mut c = cfg();
        f(&mut c);
        Translator::new(c).unwrap_err()
    };
    assert_eq!(
        bad(&|c| c.prefix64 = "64:ff9b::".parse().unwrap()),
        XlatError::PrefixNotUla("64:ff9b::".parse().unwrap())
    );
    assert_eq!(bad(&|c| c.pool4_len = 8), XlatError::PoolLength(8));
    assert_eq!(bad(&|c| c.pool4_len = 31), XlatError::PoolLength(31));
    assert!(matches!(
        bad(&|c| c.pool4 = Ipv4Addr::new(8, 8, 8, 0)),
        XlatError::PoolNotPrivate(..)
    ));
    assert_eq!(
        bad(&|c| c.own_v4 = Ipv4Addr::new(224, 0, 0, 1)),
        XlatError::OwnV4(Ipv4Addr::new(224, 0, 0, 1))
    );
    assert!(matches!(
        bad(&|c| {
            c.own_v4 = Ipv4Addr::new(10, 64, 0, 1);
            c.static_map = vec![(Ipv4Addr::new(10, 64, 0, 1), static6())];
        }),
        XlatError::StaticReserved(..)
    ));
    assert!(matches!(
        bad(&|c| c.static_map = vec![(Ipv4Addr::new(10, 65, 0, 1), static6())]),
        XlatError::StaticOutsidePool(..)
    ));
    assert!(matches!(
        bad(&|c| c.static_map = vec![(STATIC4, p64(REMOTE4))]),
        XlatError::StaticInPrefix64(..)
    ));
    assert!(matches!(
        bad(&|c| c.static_map = vec![(Ipv4Addr::new(10, 64, 0, 255), static6())]),
        XlatError::StaticReserved(..)
    ));
    assert!(matches!(
        bad(&|c| c.static_map.push((Ipv4Addr::new(10, 64, 0, 11), static6()))),
        XlatError::StaticDuplicate(..)
    ));
    assert_eq!(bad(&|c| c.mtu6 = 1200), XlatError::Mtu6(1200));
    assert_eq!(bad(&|c| c.mtu4 = 500), XlatError::Mtu4(500));
    assert_eq!(
        bad(&|c| c.dynamic_timeout = Duration::ZERO),
        XlatError::Timeout
    );
    assert!(Translator::new(XlatConfig::default()).is_ok());
    assert_eq!(
        XlatConfig::default().own_v6,
        XlatConfig::default().own_v6_default()
    );
}

#[test]
fn embed_extract_rfc6052_96() {
    let t = xl();
    let a = t.embed(Ipv4Addr::new(192, 0, 2, 33));
    assert_eq!(a, "fd64:6464:6464::c000:221".parse::<Ipv6Addr>().unwrap());
    assert_eq!(t.extract(a), Some(Ipv4Addr::new(192, 0, 2, 33)));
    assert_eq!(t.extract("fd64:6464:6465::1".parse().unwrap()), None);
    assert_eq!(t.extract(static6()), None);
    // Low 32 bits of the configured prefix are ignored.
    let mut c = cfg();
    c.prefix64 = "fd64:6464:6464::dead:beef".parse().unwrap();
    let t2 = Translator::new(c).unwrap();
    assert_eq!(t2.embed(REMOTE4), p64(REMOTE4));
}

// ---------------------------------------------------------------- §4.1 / §5.1 headers

#[test]
fn udp_4to6_header_and_checksum() {
    let mut t = xl();
    let now = Instant::now();
    let p4 = udp_in(b"hello world");
    let p6 = one(&mut t, now, &p4);
    assert_eq!(p6[0] >> 4, 6);
    // §4.1 Traffic Class = TOS, Flow Label 0.
    assert_eq!((p6[0] << 4) | (p6[1] >> 4), 0x28);
    assert_eq!(p6[1] & 0x0f, 0);
    assert_eq!(&p6[2..4], &[0, 0]);
    assert_eq!(usize::from(get16(&p6, 4)), p4.len() - 20);
    assert_eq!(p6[6], 17);
    assert_eq!(p6[7], 63, "hop limit = TTL - 1");
    assert_eq!(v6_src(&p6), p64(REMOTE4));
    assert_eq!(v6_dst(&p6), static6());
    assert_v6_l4(&p6);
    assert_eq!(&p6[48..], b"hello world");
    let s = t.stats();
    assert_eq!((s.packets_4to6, s.bytes_4to6), (1, p4.len() as u64));
}

#[test]
fn udp_6to4_header_and_checksum() {
    let mut t = xl();
    let now = Instant::now();
    let p6 = udp_out(b"ntp-ish");
    let p4 = one(&mut t, now, &p6);
    assert_v4_l4(&p4);
    assert_eq!(p4[1], 0x28, "TOS = Traffic Class");
    assert_eq!(p4[8], 63);
    assert_eq!(p4[9], 17);
    assert_eq!(get16(&p4, 6) & 0x4000, 0, "DF clear at <= 1260 bytes");
    let proxy = v4_src(&p4);
    assert!(t.in_pool4(proxy));
    assert_eq!(v4_dst(&p4), REMOTE4);
    assert_eq!(t.lookup_v4(proxy), Some(host6()));
    assert_eq!(t.lookup_v6(host6()), Some(proxy));
    let m = t.mappings();
    assert_eq!(m.len(), 2);
    assert_eq!(m[0].origin, MappingOrigin::Static);
    assert_eq!(m[1].origin, MappingOrigin::Packet);
    assert_eq!(m[1].packets, 1);
    // Reply goes back to the same IPv6 host.
    let reply = V4::new(REMOTE4, proxy, 17).build(&udp4(REMOTE4, proxy, b"answer"));
    let r6 = one(&mut t, now, &reply);
    assert_eq!(v6_dst(&r6), host6());
    assert_eq!(v6_src(&r6), p64(REMOTE4));
    assert_v6_l4(&r6);
}

#[test]
fn tcp_both_ways() {
    let mut t = xl();
    let now = Instant::now();
    let p4 = V4::new(REMOTE4, STATIC4, 6).build(&tcp4(REMOTE4, STATIC4, b"SSH-2.0-x"));
    let p6 = one(&mut t, now, &p4);
    assert_eq!(p6[6], 6);
    assert_v6_l4(&p6);
    let back = v6(
        static6(),
        p64(REMOTE4),
        6,
        64,
        &[],
        &tcp6(static6(), p64(REMOTE4), b"SSH-2.0-y"),
    );
    let b4 = one(&mut t, now, &back);
    assert_eq!(v4_src(&b4), STATIC4, "static binding used as source");
    assert_v4_l4(&b4);
}

#[test]
fn df_rule_6to4() {
    let mut t = xl();
    let now = Instant::now();
    // 1260-byte IPv4 result → DF clear; 1261 → DF set (RFC 7915 §5.1).
    let small = udp_out(&vec![7u8; 1260 - 28]);
    let p = one(&mut t, now, &small);
    assert_eq!(p.len(), 1260);
    assert_eq!(get16(&p, 6) & 0x4000, 0);
    let big = udp_out(&vec![7u8; 1261 - 28]);
    let p = one(&mut t, now, &big);
    assert_eq!(p.len(), 1261);
    assert_eq!(get16(&p, 6) & 0x4000, 0x4000);
    assert_v4_l4(&p);
}

/// Two translators back to back (IPv4 island — IPv6 core — IPv4 island): A's
/// static binding points into B's prefix64 and B's into A's, so a packet comes out
/// with its original addresses.
fn pair() -> (Translator, Translator) {
    let pa: Ipv6Addr = "fd0a::".parse().unwrap();
    let pb: Ipv6Addr = "fd0b::".parse().unwrap();
    let d = Ipv4Addr::new(10, 64, 0, 10);
    let s = Ipv4Addr::new(10, 65, 0, 1);
    let a = Translator::new(XlatConfig {
        prefix64: pa,
        pool4: Ipv4Addr::new(10, 64, 0, 0),
        static_map: vec![(d, crate::embed_in(pb, d))],
        own_v4: OWN4,
        own_v6: crate::embed_in(pa, OWN4),
        ..XlatConfig::default()
    })
    .unwrap();
    let b = Translator::new(XlatConfig {
        prefix64: pb,
        pool4: Ipv4Addr::new(10, 65, 0, 0),
        static_map: vec![(s, crate::embed_in(pa, s))],
        own_v4: OWN4,
        own_v6: crate::embed_in(pb, OWN4),
        ..XlatConfig::default()
    })
    .unwrap();
    (a, b)
}

/// Same packet modulo TTL, Identification and header checksum.
fn same_v4_modulo_ttl(a: &[u8], b: &[u8], ttl_drop: u8) {
    assert_eq!(a.len(), b.len());
    assert_eq!(a[8], b[8] + ttl_drop);
    let mask = |p: &[u8]| {
        let mut p = p.to_vec();
        p[4..6].copy_from_slice(&[0, 0]);
        p[8] = 0;
        p[10..12].copy_from_slice(&[0, 0]);
        p
    };
    assert_eq!(mask(a), mask(b));
}

#[test]
fn round_trip_4to6to4() {
    let (mut a, mut b) = pair();
    let now = Instant::now();
    let s = Ipv4Addr::new(10, 65, 0, 1);
    let d = Ipv4Addr::new(10, 64, 0, 10);
    let cases: [(u8, Vec<u8>, bool); 5] = [
        (17, udp4(s, d, b"round trip"), false),
        (6, tcp4(s, d, &[0x55; 300]), false),
        (1, icmp4(8, 0, 0x0042_0007, b"ping data"), false),
        // DF set and above 1260 bytes: DF survives (RFC 7915 §5.1 rule).
        (17, udp4(s, d, &[0x66; 1300]), true),
        (1, icmp4(0, 0, 0x0042_0008, b"pong data"), false),
    ];
    for (proto, payload, df) in cases {
        let mut h = V4::new(s, d, proto);
        h.df = df;
        let p4 = h.build(&payload);
        let p6 = one(&mut a, now, &p4);
        let back = one(&mut b, now, &p6);
        same_v4_modulo_ttl(&p4, &back, 2);
        assert_v4_l4(&back);
    }
    // A fragment keeps even its Identification (low 16 bits of the IPv6 one).
    let mut h = V4::new(s, d, 17);
    h.mf = true;
    h.ident = 0xbeef;
    let p4 = h.build(&udp4(s, d, &[1; 64]));
    let back = one(&mut b, now, &one(&mut a, now, &p4));
    assert_eq!(get16(&back, 4), 0xbeef);
    same_v4_modulo_ttl(&p4, &back, 2);
}

#[test]
fn round_trip_6to4to6() {
    let (mut a, mut b) = pair();
    let now = Instant::now();
    let pa: Ipv6Addr = "fd0a::a41:1".parse().unwrap(); // fd0a::10.65.0.1
    let pb: Ipv6Addr = "fd0b::a40:a".parse().unwrap(); // fd0b::10.64.0.10
    let payloads: [(u8, Vec<u8>); 3] = [
        (17, udp6(pb, pa, b"six to four to six")),
        (6, tcp6(pb, pa, &[0x77; 500])),
        (58, icmp6(pb, pa, 128, 0, 0x0001_0001, b"echo")),
    ];
    for (next, payload) in payloads {
        let mut p6 = v6(pb, pa, next, 64, &[], &payload);
        // The flow label does not survive translation (RFC 7915 §4.1 sets 0).
        p6[1] &= 0xf0;
        p6[2] = 0;
        p6[3] = 0;
        let p4 = one(&mut a, now, &p6);
        assert_eq!(
            (v4_src(&p4), v4_dst(&p4)),
            (Ipv4Addr::new(10, 64, 0, 10), Ipv4Addr::new(10, 65, 0, 1))
        );
        assert_v4_l4(&p4);
        let mut back = one(&mut b, now, &p4);
        assert_eq!(back[7] + 2, p6[7]);
        back[7] = p6[7];
        assert_eq!(back, p6);
    }
}

// ---------------------------------------------------------------- §4.5 / §5.5 checksums

#[test]
fn udp_zero_checksum_4to6() {
    let mut t = xl();
    let now = Instant::now();
    let seg = udp_seg(1000, 2000, b"no checksum");
    let p4 = V4::new(REMOTE4, STATIC4, 17).build(&seg);
    let p6 = one(&mut t, now, &p4);
    assert_ne!(get16(&p6, 46), 0, "computed for IPv6");
    assert_v6_l4(&p6);
    // A fragment with a zero checksum cannot be completed: dropped (§4.5).
    let mut h = V4::new(REMOTE4, STATIC4, 17);
    h.mf = true;
    let frag = h.build(&udp_seg(1000, 2000, &[1u8; 64]));
    let out = dropped(&mut t, now, &frag, Drop::UdpZeroChecksum);
    assert!(out.is_empty());
}

// ---------------------------------------------------------------- §4.2 / §5.2 ICMP info

#[test]
fn echo_4to6_and_6to4() {
    let mut t = xl();
    let now = Instant::now();
    let p4 = V4::new(REMOTE4, STATIC4, 1).build(&icmp4(8, 0, 0xbeef_0001, b"abcdefgh"));
    let p6 = one(&mut t, now, &p4);
    assert_eq!(p6[6], 58);
    assert_eq!((p6[40], p6[41]), (128, 0));
    assert_eq!(&p6[44..48], &[0xbe, 0xef, 0, 1]);
    assert_eq!(&p6[48..], b"abcdefgh");
    assert_v6_l4(&p6);
    let r6 = v6(
        static6(),
        p64(REMOTE4),
        58,
        64,
        &[],
        &icmp6(static6(), p64(REMOTE4), 129, 0, 0xbeef_0001, b"abcdefgh"),
    );
    let r4 = one(&mut t, now, &r6);
    assert_eq!(r4[9], 1);
    assert_eq!((r4[20], r4[21]), (0, 0));
    assert_v4_l4(&r4);
    let s = t.stats();
    assert_eq!((s.icmp_4to6, s.icmp_6to4), (1, 1));
}

#[test]
fn untranslatable_icmp_types_dropped() {
    let mut t = xl();
    let now = Instant::now();
    // ICMPv4 timestamp (13), redirect (5), source quench (4), unknown (42).
    for ty in [13u8, 5, 4, 42, 17] {
        let p = V4::new(REMOTE4, STATIC4, 1).build(&icmp4(ty, 0, 0, &[0; 12]));
        dropped(&mut t, now, &p, Drop::IcmpUntranslatable);
    }
    // Destination Unreachable code 14 has no counterpart.
    let inner = V4::new(STATIC4, REMOTE4, 17).build(&udp4(STATIC4, REMOTE4, b"x"));
    let p = V4::new(ROUTER4, STATIC4, 1).build(&icmp4(3, 14, 0, &inner));
    dropped(&mut t, now, &p, Drop::IcmpUntranslatable);
    // ICMPv6 Neighbor Solicitation (135), MLD query (130), unknown info (200).
    for ty in [135u8, 130, 200] {
        let p = v6(
            static6(),
            p64(REMOTE4),
            58,
            64,
            &[],
            &icmp6(static6(), p64(REMOTE4), ty, 0, 0, &[0; 16]),
        );
        dropped(&mut t, now, &p, Drop::IcmpUntranslatable);
    }
    // Wrong family.
    let p = V4::new(REMOTE4, STATIC4, 58).build(&[128, 0, 0, 0, 0, 0, 0, 0]);
    dropped(&mut t, now, &p, Drop::IcmpWrongFamily);
    let p = v6(static6(), p64(REMOTE4), 1, 64, &[], &icmp4(8, 0, 0, b""));
    dropped(&mut t, now, &p, Drop::IcmpWrongFamily);
}

#[test]
fn bad_icmp_checksum_dropped() {
    let mut t = xl();
    let now = Instant::now();
    let mut m = icmp4(8, 0, 1, b"data");
    m[5] ^= 1;
    let p = V4::new(REMOTE4, STATIC4, 1).build(&m);
    dropped(&mut t, now, &p, Drop::BadChecksum);
    let mut m6 = icmp6(static6(), p64(REMOTE4), 128, 0, 1, b"data");
    m6[9] ^= 1;
    let p = v6(static6(), p64(REMOTE4), 58, 64, &[], &m6);
    dropped(&mut t, now, &p, Drop::BadChecksum);
}

// ---------------------------------------------------------------- §4.3 ICMPv4 errors

/// An IPv6 host sends UDP to an IPv4 host; an IPv4 router answers `typ/code`
/// quoting the translated packet; returns (original IPv6 packet, translated error).
fn v4_error_for_outbound(
    t: &mut Translator,
    typ: u8,
    code: u8,
    rest: u32,
    quote_len: Option<usize>,
) -> (Vec<u8>, Result<(), Drop>, Vec<Vec<u8>>) {
    let now = Instant::now();
    let orig6 = udp_out(&[0xab; 100]);
    let sent4 = one(t, now, &orig6);
    let proxy = v4_src(&sent4);
    let quote = &sent4[..quote_len.unwrap_or(sent4.len()).min(sent4.len())];
    let err = V4::new(ROUTER4, proxy, 1).build(&icmp4(typ, code, rest, quote));
    let (r, out) = run(t, now, &err);
    (orig6, r, out)
}

#[test]
fn icmp4_error_port_unreachable_carries_original_packet() {
    let mut t = xl();
    let (orig6, r, out) = v4_error_for_outbound(&mut t, 3, 3, 0, None);
    assert_eq!(r, Ok(()));
    let e = &out[0];
    assert_v6_l4(e);
    assert_eq!(v6_src(e), p64(ROUTER4));
    assert_eq!(v6_dst(e), host6());
    assert_eq!((e[40], e[41]), (1, 4), "port unreachable → type 1 code 4");
    // §4.3: the embedded packet is the host's own packet again (Hop Limit = the
    // TTL the IPv4 router saw), with a valid UDP checksum.
    let inner = &e[48..];
    assert_eq!(inner.len(), orig6.len());
    assert_eq!(inner[7], 63);
    let mut a = inner.to_vec();
    let mut b = orig6.clone();
    a[7] = 0;
    b[7] = 0;
    // Flow label is zeroed by the round trip; traffic class kept.
    b[1] &= 0xf0;
    b[2] = 0;
    b[3] = 0;
    assert_eq!(a, b);
    assert_v6_l4(inner);
}

#[test]
fn icmp4_error_codes_and_types() {
    // (v4 type, code, rest) → (v6 type, code, param)
    let cases: [(u8, u8, u32, u8, u8, u32); 9] = [
        (3, 0, 0, 1, 0, 0),
        (3, 1, 0, 1, 0, 0),
        (3, 10, 0, 1, 1, 0),
        (3, 13, 0, 1, 1, 0),
        (3, 2, 0, 4, 1, 6),
        (11, 0, 0, 3, 0, 0),
        (11, 1, 0, 3, 1, 0),
        (12, 0, 9 << 24, 4, 0, 6),   // Protocol → Next Header
        (12, 0, 16 << 24, 4, 0, 24), // Destination Address
    ];
    for (t4, c4, rest, t6, c6, param) in cases {
        let mut t = xl();
        let (_, r, out) = v4_error_for_outbound(&mut t, t4, c4, rest, None);
        assert_eq!(r, Ok(()), "{t4}/{c4}");
        let e = &out[0];
        assert_v6_l4(e);
        assert_eq!((e[40], e[41]), (t6, c6), "{t4}/{c4}");
        assert_eq!(get16(e, 44) as u32 * 65536 + get16(e, 46) as u32, param);
    }
    // Parameter Problem pointing at the Identification has no IPv6 counterpart.
    let mut t = xl();
    let (_, r, _) = v4_error_for_outbound(&mut t, 12, 0, 4 << 24, None);
    assert_eq!(r, Err(Drop::IcmpUntranslatable));
}

#[test]
fn frag_needed_becomes_ptb_with_mtu_plus_20() {
    let mut t = xl();
    let (_, r, out) = v4_error_for_outbound(&mut t, 3, 4, 1400, None);
    assert_eq!(r, Ok(()));
    let e = &out[0];
    assert_eq!((e[40], e[41]), (2, 0));
    assert_eq!(get16(e, 46), 1420);
    assert_v6_l4(e);
    // Bounded by mtu6.
    let mut c = cfg();
    c.mtu6 = 1400;
    let mut t = Translator::new(c).unwrap();
    let (_, _, out) = v4_error_for_outbound(&mut t, 3, 4, 1480, None);
    assert_eq!(get16(&out[0], 46), 1400);
    // Never below 1280.
    let mut t = xl();
    let (_, _, out) = v4_error_for_outbound(&mut t, 3, 4, 576, None);
    assert_eq!(get16(&out[0], 46), 1280);
    // MTU 0 (pre-RFC 1191 router): plateau below the quoted Total Length (128 → 68 → 1280).
    let mut c = cfg();
    c.mtu6 = 9000;
    c.mtu4 = 9000;
    let mut t = Translator::new(c).unwrap();
    let now = Instant::now();
    let orig6 = udp_out(&[0xab; 4000]);
    let sent4 = one(&mut t, now, &orig6);
    assert_eq!(sent4.len(), 4028);
    let err = V4::new(ROUTER4, v4_src(&sent4), 1).build(&icmp4(3, 4, 0, &sent4[..548]));
    let e = one(&mut t, now, &err);
    // Plateau 2002 + 20.
    assert_eq!(get16(&e, 46), 2022);
}

#[test]
fn icmp4_error_with_truncated_inner_packet() {
    let mut t = xl();
    // Inner IPv4 header plus only 4 bytes of UDP (ports, no checksum).
    let (_, r, out) = v4_error_for_outbound(&mut t, 11, 0, 0, Some(24));
    assert_eq!(r, Ok(()));
    let e = &out[0];
    assert_v6_l4(e);
    assert_eq!(e.len(), 40 + 8 + 40 + 4);
    // The inner header keeps the original length.
    assert_eq!(get16(e, 48 + 4), 108);
    // Inner header itself truncated: cannot be translated.
    let mut t = xl();
    let (_, r, out) = v4_error_for_outbound(&mut t, 11, 0, 0, Some(12));
    assert_eq!(r, Err(Drop::IcmpInnerUntranslatable));
    assert!(out.is_empty());
    // Inner packet: only the header (0 transport bytes).
    let mut t = xl();
    let (_, r, out) = v4_error_for_outbound(&mut t, 3, 1, 0, Some(20));
    assert_eq!(r, Ok(()));
    assert_eq!(out[0].len(), 88);
}

#[test]
fn icmp4_error_about_echo_rewrites_inner_echo() {
    let mut t = xl();
    let now = Instant::now();
    let echo6 = v6(
        host6(),
        p64(REMOTE4),
        58,
        5,
        &[],
        &icmp6(host6(), p64(REMOTE4), 128, 0, 0x0001_0002, b"traceroute"),
    );
    let sent4 = one(&mut t, now, &echo6);
    assert_v4_l4(&sent4);
    let err = V4::new(ROUTER4, v4_src(&sent4), 1).build(&icmp4(11, 0, 0, &sent4));
    let e = one(&mut t, now, &err);
    assert_v6_l4(e.as_slice());
    let inner = &e[48..];
    assert_eq!(inner[40], 128);
    // The inner ICMPv6 checksum is valid again (incremental update).
    assert_v6_l4(inner);
}

#[test]
fn icmp_error_inner_not_mapped_dropped() {
    let mut t = xl();
    let now = Instant::now();
    // Inner source is a pool address without binding.
    let inner = V4::new(Ipv4Addr::new(10, 64, 0, 99), REMOTE4, 17).build(&udp4(
        Ipv4Addr::new(10, 64, 0, 99),
        REMOTE4,
        b"x",
    ));
    let err = V4::new(ROUTER4, STATIC4, 1).build(&icmp4(3, 3, 0, &inner));
    dropped(&mut t, now, &err, Drop::IcmpInnerUntranslatable);
}

// ---------------------------------------------------------------- §5.3 ICMPv6 errors

/// An IPv4 host sends UDP to the static IPv6 host; an IPv6 router answers
/// `typ/code` quoting the translated packet.
fn v6_error_for_inbound(
    t: &mut Translator,
    typ: u8,
    code: u8,
    param: u32,
    quote_len: Option<usize>,
    payload: usize,
) -> (Vec<u8>, Result<(), Drop>, Vec<Vec<u8>>) {
    let now = Instant::now();
    let orig4 = udp_in(&vec![0xcd; payload]);
    let sent6 = one(t, now, &orig4);
    let quote = &sent6[..quote_len.unwrap_or(sent6.len()).min(sent6.len())];
    let err = v6(
        router6(),
        p64(REMOTE4),
        58,
        64,
        &[],
        &icmp6(router6(), p64(REMOTE4), typ, code, param, quote),
    );
    let (r, out) = run(t, now, &err);
    (orig4, r, out)
}

#[test]
fn icmp6_error_time_exceeded_carries_original_packet() {
    let mut t = xl();
    let (orig4, r, out) = v6_error_for_inbound(&mut t, 3, 0, 0, None, 100);
    assert_eq!(r, Ok(()));
    let e = &out[0];
    assert_v4_l4(e);
    // RFC 6791: router without binding → own_v4, no new binding.
    assert_eq!(v4_src(e), OWN4);
    assert_eq!(t.stats().mappings_dynamic, 0);
    assert_eq!(v4_dst(e), REMOTE4);
    assert_eq!((e[20], e[21]), (11, 0));
    let inner = &e[28..];
    // Same packet modulo TTL, ident, DF/header checksum.
    same_v4_modulo_ttl(&orig4, inner, 1);
    assert_v4_l4(inner);
}

#[test]
fn icmp6_error_codes_and_types() {
    // (v6 type, code, param) → (v4 type, code, rest)
    let cases: [(u8, u8, u32, u8, u8, u32); 11] = [
        (4, 0, 6, 12, 0, 9 << 24),   // Next Header → Protocol
        (4, 0, 10, 12, 0, 12 << 24), // inside Source Address
        (1, 0, 0, 3, 1, 0),
        (1, 1, 0, 3, 10, 0),
        (1, 3, 0, 3, 1, 0),
        (1, 4, 0, 3, 3, 0),
        (3, 1, 0, 11, 1, 0),
        (4, 0, 7, 12, 0, 8 << 24),   // Hop Limit → TTL
        (4, 0, 24, 12, 0, 16 << 24), // Destination
        (4, 0, 4, 12, 0, 2 << 24),   // Payload Length → Total Length
        (4, 1, 6, 3, 2, 0),          // unrecognized Next Header → protocol unreachable
    ];
    for (t6, c6, param, t4, c4, rest) in cases {
        let mut t = xl();
        let (_, r, out) = v6_error_for_inbound(&mut t, t6, c6, param, None, 50);
        assert_eq!(r, Ok(()), "{t6}/{c6}");
        let e = &out[0];
        assert_v4_l4(e);
        assert_eq!((e[20], e[21]), (t4, c4), "{t6}/{c6}");
        assert_eq!(
            u32::from_be_bytes([e[24], e[25], e[26], e[27]]),
            rest,
            "{t6}/{c6}"
        );
    }
    let mut t = xl();
    let (_, r, _) = v6_error_for_inbound(&mut t, 4, 0, 2, None, 50);
    assert_eq!(r, Err(Drop::IcmpUntranslatable), "flow label pointer");
    let mut t = xl();
    let (_, r, _) = v6_error_for_inbound(&mut t, 1, 5, 0, None, 50);
    assert_eq!(r, Err(Drop::IcmpUntranslatable), "unknown unreachable code");
}

#[test]
fn icmp6_error_about_echo_rewrites_inner_echo() {
    // traceroute -I from an IPv4 host to the static IPv6 host.
    let mut t = xl();
    let now = Instant::now();
    let mut h = V4::new(REMOTE4, STATIC4, 1);
    h.ttl = 3;
    let echo4 = h.build(&icmp4(8, 0, 0x0003_0004, b"probe"));
    let sent6 = one(&mut t, now, &echo4);
    assert_v6_l4(&sent6);
    let err = v6(
        router6(),
        p64(REMOTE4),
        58,
        64,
        &[],
        &icmp6(router6(), p64(REMOTE4), 3, 0, 0, &sent6),
    );
    let e = one(&mut t, now, &err);
    assert_v4_l4(&e);
    assert_eq!((e[20], e[21]), (11, 0));
    let inner = &e[28..];
    assert_eq!((inner[20], inner[21]), (8, 0), "inner echo request again");
    assert_eq!(&inner[24..28], &[0, 3, 0, 4]);
    assert_v4_l4(inner);
    same_v4_modulo_ttl(&echo4, inner, 1);
}

#[test]
fn ptb_becomes_frag_needed_with_mtu_minus_20() {
    let mut t = xl();
    let (_, r, out) = v6_error_for_inbound(&mut t, 2, 0, 1400, None, 100);
    assert_eq!(r, Ok(()));
    let e = &out[0];
    assert_eq!((e[20], e[21]), (3, 4));
    assert_eq!(get16(e, 26), 1380);
    assert_v4_l4(e);
    let mut c = cfg();
    c.mtu4 = 1300;
    let mut t = Translator::new(c).unwrap();
    let (_, _, out) = v6_error_for_inbound(&mut t, 2, 0, 1500, None, 100);
    assert_eq!(get16(&out[0], 26), 1300, "bounded by mtu4");
    // A packet in error with a Fragment header: MTU − 28.
    let mut t = xl();
    let now = Instant::now();
    let mut h = V4::new(REMOTE4, STATIC4, 17);
    h.mf = true;
    let orig4 = h.build(&udp4(REMOTE4, STATIC4, &[1; 64]));
    let sent6 = one(&mut t, now, &orig4);
    assert_eq!(sent6[6], 44);
    let err = v6(
        router6(),
        p64(REMOTE4),
        58,
        64,
        &[],
        &icmp6(router6(), p64(REMOTE4), 2, 0, 1400, &sent6),
    );
    let e = one(&mut t, now, &err);
    assert_eq!(get16(&e, 26), 1372);
    // Inner fragment: Identification, MF restored.
    let inner = &e[28..];
    assert_eq!(get16(inner, 4), 0x1234);
    assert_eq!(get16(inner, 6), 0x2000);
}

#[test]
fn icmp6_error_with_truncated_inner_packet() {
    let mut t = xl();
    let (_, r, out) = v6_error_for_inbound(&mut t, 1, 4, 0, Some(44), 100);
    assert_eq!(r, Ok(()));
    let e = &out[0];
    assert_v4_l4(e);
    assert_eq!(e.len(), 20 + 8 + 20 + 4);
    assert_eq!(
        get16(e, 28 + 2),
        128,
        "inner Total Length keeps the original"
    );
    let mut t = xl();
    let (_, r, _) = v6_error_for_inbound(&mut t, 1, 4, 0, Some(30), 100);
    assert_eq!(r, Err(Drop::IcmpInnerUntranslatable));
    // Long inner packet: the ICMPv4 error is cut at 576 bytes.
    let mut t = xl();
    let (_, r, out) = v6_error_for_inbound(&mut t, 3, 0, 0, None, 1200);
    assert_eq!(r, Ok(()));
    assert_eq!(out[0].len(), 576);
    assert_v4_l4(&out[0]);
}

// ---------------------------------------------------------------- fragments

/// Reassemble IPv6 fragments (no other extension headers) into (next header, payload).
fn reassemble6(frags: &[Vec<u8>]) -> (u8, Vec<u8>) {
    let mut data = Vec::new();
    let mut next = 0;
    let mut sorted: Vec<&Vec<u8>> = frags.iter().collect();
    sorted.sort_by_key(|f| get16(f, 42) >> 3);
    for (i, f) in sorted.iter().enumerate() {
        assert_eq!(f[6], 44);
        assert_eq!(usize::from(get16(f, 4)) + 40, f.len());
        next = f[40];
        let off = usize::from(get16(f, 42) >> 3) * 8;
        assert_eq!(off, data.len(), "contiguous");
        let more = get16(f, 42) & 1 == 1;
        assert_eq!(more, i + 1 < sorted.len());
        data.extend_from_slice(&f[48..]);
    }
    (next, data)
}

#[test]
fn ipv4_fragments_translated_individually() {
    let mut t = xl();
    let now = Instant::now();
    let seg = udp4(REMOTE4, STATIC4, &[9u8; 200]);
    let (a, b) = seg.split_at(104);
    let mut h = V4::new(REMOTE4, STATIC4, 17);
    h.mf = true;
    let f1 = h.build(a);
    h.mf = false;
    h.offset = 13;
    let f2 = h.build(b);
    let o1 = one(&mut t, now, &f1);
    let o2 = one(&mut t, now, &f2);
    // §4.1 Fragment header: Identification from IPv4 (high bits zero), offset, M.
    assert_eq!(u32::from_be_bytes([o1[44], o1[45], o1[46], o1[47]]), 0x1234);
    assert_eq!(get16(&o1, 42), 1);
    assert_eq!(get16(&o2, 42), 13 << 3);
    let (next, data) = reassemble6(&[o1.clone(), o2]);
    assert_eq!(next, 17);
    assert_eq!(
        ck(&cat(&ph6(v6_src(&o1), v6_dst(&o1), 17, data.len()), &data)),
        0
    );
    assert_eq!(t.stats().fragments_in, 2);
}

#[test]
fn ipv4_too_big_without_df_is_fragmented() {
    let mut c = cfg();
    c.mtu6 = 1280;
    let mut t = Translator::new(c).unwrap();
    let now = Instant::now();
    let p4 = V4::new(REMOTE4, STATIC4, 17).build(&udp4(REMOTE4, STATIC4, &[3u8; 1372]));
    assert_eq!(p4.len(), 1400);
    let (r, out) = run(&mut t, now, &p4);
    assert_eq!(r, Ok(()));
    assert_eq!(out.len(), 2);
    for f in &out {
        assert!(f.len() <= 1280);
        assert_eq!(f[7], 63);
    }
    assert_eq!((get16(&out[0], 42) >> 3) * 8 % 8, 0);
    let (next, data) = reassemble6(&out);
    assert_eq!(next, 17);
    assert_eq!(data.len(), 1380);
    assert_eq!(
        ck(&cat(&ph6(p64(REMOTE4), static6(), 17, data.len()), &data)),
        0
    );
    assert_eq!(t.stats().fragments_out, 2);
}

#[test]
fn ipv4_too_big_with_df_gets_frag_needed() {
    let mut c = cfg();
    c.mtu6 = 1280;
    let mut t = Translator::new(c).unwrap();
    let now = Instant::now();
    let mut h = V4::new(REMOTE4, STATIC4, 17);
    h.df = true;
    let p4 = h.build(&udp4(REMOTE4, STATIC4, &[3u8; 1372]));
    let out = dropped(&mut t, now, &p4, Drop::FragNeeded);
    assert_eq!(out.len(), 1);
    let e = &out[0];
    assert_v4_l4(e);
    assert_eq!(v4_src(e), OWN4);
    assert_eq!(v4_dst(e), REMOTE4);
    assert_eq!((e[20], e[21]), (3, 4));
    assert_eq!(get16(e, 26), 1260, "mtu6 − 20");
    assert_eq!(&e[28..48], &p4[..20], "quotes the original header");
    assert!(e.len() <= 576);
    // Just fits: 1260 bytes of IPv4 → 1280 of IPv6.
    let p4 = h.build(&udp4(REMOTE4, STATIC4, &[3u8; 1232]));
    assert_eq!(one(&mut t, now, &p4).len(), 1280);
}

#[test]
fn ipv6_fragments_translated_individually() {
    let mut t = xl();
    let now = Instant::now();
    let seg = udp6(host6(), p64(REMOTE4), &[5u8; 300]);
    let (a, b) = seg.split_at(160);
    let f1 = v6(
        host6(),
        p64(REMOTE4),
        44,
        64,
        &frag_hdr(17, 0, true, 0xabcd_5678),
        a,
    );
    let f2 = v6(
        host6(),
        p64(REMOTE4),
        44,
        64,
        &frag_hdr(17, 20, false, 0xabcd_5678),
        b,
    );
    let o1 = one(&mut t, now, &f1);
    let o2 = one(&mut t, now, &f2);
    assert_v4_header(&o1);
    assert_v4_header(&o2);
    // §5.1.1: Identification = low 16 bits, MF copied, DF clear, offset copied.
    assert_eq!(get16(&o1, 4), 0x5678);
    assert_eq!(get16(&o1, 6), 0x2000);
    assert_eq!(get16(&o2, 6), 20);
    assert_eq!(o1[9], 17);
    let mut data = o1[20..].to_vec();
    data.extend_from_slice(&o2[20..]);
    assert_eq!(
        ck(&cat(&ph4(v4_src(&o1), REMOTE4, 17, data.len()), &data)),
        0
    );
}

#[test]
fn ipv6_too_big_gets_ptb_or_is_fragmented() {
    let mut c = cfg();
    c.mtu4 = 1300;
    let mut t = Translator::new(c).unwrap();
    let now = Instant::now();
    // 1400-byte IPv6 → 1380-byte IPv4 with DF → Packet Too Big, MTU 1320.
    let p6 = udp_out(&[1u8; 1352]);
    assert_eq!(p6.len(), 1400);
    let out = dropped(&mut t, now, &p6, Drop::PacketTooBig);
    let e = &out[0];
    assert_v6_l4(e);
    assert_eq!(v6_src(e), p64(OWN4));
    assert_eq!(v6_dst(e), host6());
    assert_eq!((e[40], e[41]), (2, 0));
    assert_eq!(u32::from_be_bytes([e[44], e[45], e[46], e[47]]), 1320);
    assert_eq!(
        t.stats().mappings_dynamic,
        0,
        "refused packets create no binding"
    );
    // mtu4 below 1260: PTB says 1280 and a 1280-byte packet (DF clear) is fragmented.
    let mut c = cfg();
    c.mtu4 = 1000;
    let mut t = Translator::new(c).unwrap();
    let out = dropped(&mut t, now, &p6, Drop::PacketTooBig);
    assert_eq!(get16(&out[0], 46), 1280);
    let p6 = udp_out(&[1u8; 1232]);
    assert_eq!(p6.len(), 1280);
    let (r, out) = run(&mut t, now, &p6);
    assert_eq!(r, Ok(()));
    assert_eq!(out.len(), 2);
    let mut data = Vec::new();
    for (i, f) in out.iter().enumerate() {
        assert_v4_header(f);
        assert!(f.len() <= 1000);
        assert_eq!(usize::from(get16(f, 6) & 0x1fff) * 8, data.len());
        assert_eq!(get16(f, 6) & 0x2000 != 0, i == 0);
        assert_eq!(get16(f, 4), get16(&out[0], 4));
        data.extend_from_slice(&f[20..]);
    }
    assert_eq!(
        ck(&cat(&ph4(v4_src(&out[0]), REMOTE4, 17, data.len()), &data)),
        0
    );
}

#[test]
fn fragmented_icmp_dropped() {
    let mut t = xl();
    let now = Instant::now();
    let mut h = V4::new(REMOTE4, STATIC4, 1);
    h.mf = true;
    let p = h.build(&icmp4(8, 0, 0, &[0; 64]));
    dropped(&mut t, now, &p, Drop::FragmentedIcmp);
    let p = v6(
        host6(),
        p64(REMOTE4),
        44,
        64,
        &frag_hdr(58, 0, true, 1),
        &icmp6(host6(), p64(REMOTE4), 128, 0, 0, &[0; 64]),
    );
    dropped(&mut t, now, &p, Drop::FragmentedIcmp);
}

// ---------------------------------------------------------------- TTL / Hop Limit

#[test]
fn ttl_expired_4to6_sends_time_exceeded() {
    let mut t = xl();
    let now = Instant::now();
    let mut h = V4::new(REMOTE4, STATIC4, 17);
    h.ttl = 1;
    let p = h.build(&udp4(REMOTE4, STATIC4, b"trace"));
    let out = dropped(&mut t, now, &p, Drop::TtlExpired);
    let e = &out[0];
    assert_v4_l4(e);
    assert_eq!((v4_src(e), v4_dst(e)), (OWN4, REMOTE4));
    assert_eq!((e[20], e[21]), (11, 0));
    assert_eq!(&e[28..], &p[..]);
    assert_eq!(t.stats().icmp_errors_sent, 1);
    // TTL 2 passes with Hop Limit 1.
    h.ttl = 2;
    let p = h.build(&udp4(REMOTE4, STATIC4, b"trace"));
    assert_eq!(one(&mut t, now, &p)[7], 1);
    // No error about an ICMP error.
    h.ttl = 1;
    h.proto = 1;
    let inner = V4::new(STATIC4, REMOTE4, 17).build(&udp4(STATIC4, REMOTE4, b"x"));
    let p = h.build(&icmp4(3, 3, 0, &inner));
    let out = dropped(&mut t, now, &p, Drop::TtlExpired);
    assert!(out.is_empty());
}

#[test]
fn hop_limit_expired_6to4_sends_time_exceeded() {
    let mut t = xl();
    let now = Instant::now();
    let p = v6(
        host6(),
        p64(REMOTE4),
        17,
        1,
        &[],
        &udp6(host6(), p64(REMOTE4), b"trace"),
    );
    let out = dropped(&mut t, now, &p, Drop::TtlExpired);
    let e = &out[0];
    assert_v6_l4(e);
    assert_eq!((v6_src(e), v6_dst(e)), (p64(OWN4), host6()));
    assert_eq!((e[40], e[41]), (3, 0));
    assert_eq!(&e[48..], &p[..]);
    // Non-first fragments get no error.
    let p = v6(
        host6(),
        p64(REMOTE4),
        44,
        1,
        &frag_hdr(17, 10, false, 1),
        &[0; 16],
    );
    assert!(dropped(&mut t, now, &p, Drop::TtlExpired).is_empty());
}

// ---------------------------------------------------------------- options, extension headers

#[test]
fn ipv4_options_ignored_source_route_refused() {
    let mut t = xl();
    let now = Instant::now();
    let mut h = V4::new(REMOTE4, STATIC4, 17);
    // Record Route (7) with room for one address, then EOL padding.
    h.options = vec![7, 7, 4, 0, 0, 0, 0, 0];
    let p = h.build(&udp4(REMOTE4, STATIC4, b"opts"));
    let o = one(&mut t, now, &p);
    assert_eq!(usize::from(get16(&o, 4)), p.len() - 28);
    assert_v6_l4(&o);
    // Loose Source Route, pointer 4 ≤ length 7: unexpired → Source Route Failed.
    h.options = vec![131, 7, 4, 192, 0, 2, 99, 0];
    let p = h.build(&udp4(REMOTE4, STATIC4, b"lsrr"));
    let out = dropped(&mut t, now, &p, Drop::SourceRoute);
    assert_eq!((out[0][20], out[0][21]), (3, 5));
    assert_v4_l4(&out[0]);
    // Expired source route (pointer 8 > length 7) is ignored.
    h.options = vec![131, 7, 8, 192, 0, 2, 99, 0];
    let p = h.build(&udp4(REMOTE4, STATIC4, b"lsrr"));
    assert_v6_l4(&one(&mut t, now, &p));
}

#[test]
fn ipv6_extension_headers_skipped() {
    let mut t = xl();
    let now = Instant::now();
    let seg = udp6(host6(), p64(REMOTE4), b"ext");
    // Hop-by-Hop (PadN) → Destination Options (PadN) → UDP.
    let mut ext = vec![60, 0, 1, 4, 0, 0, 0, 0];
    ext.extend_from_slice(&[17, 0, 1, 4, 0, 0, 0, 0]);
    let p = v6(host6(), p64(REMOTE4), 0, 64, &ext, &seg);
    let o = one(&mut t, now, &p);
    assert_eq!(o[9], 17);
    assert_eq!(o.len(), 20 + seg.len());
    assert_v4_l4(&o);
    // Routing header, Segments Left 0: skipped.
    let rh = vec![
        17, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    let p = v6(host6(), p64(REMOTE4), 43, 64, &rh, &seg);
    assert_v4_l4(&one(&mut t, now, &p));
    // Segments Left 1: Parameter Problem pointing at Segments Left (40 + 3).
    let mut rh1 = rh.clone();
    rh1[3] = 1;
    let p = v6(host6(), p64(REMOTE4), 43, 64, &rh1, &seg);
    let out = dropped(&mut t, now, &p, Drop::RoutingHeader);
    let e = &out[0];
    assert_v6_l4(e);
    assert_eq!((e[40], e[41]), (4, 0));
    assert_eq!(u32::from_be_bytes([e[44], e[45], e[46], e[47]]), 43);
    // Endless chain of Destination Options.
    let mut ext = Vec::new();
    for _ in 0..12 {
        ext.extend_from_slice(&[60, 0, 1, 4, 0, 0, 0, 0]);
    }
    let p = v6(host6(), p64(REMOTE4), 60, 64, &ext, &[]);
    dropped(&mut t, now, &p, Drop::ExtensionHeader);
}

// ---------------------------------------------------------------- address checks

#[test]
fn address_drops() {
    let mut t = xl();
    let now = Instant::now();
    // 4→6 destination outside pool4, or in pool4 without binding.
    let p = V4::new(REMOTE4, Ipv4Addr::new(10, 1, 1, 1), 17).build(&udp_seg(1, 2, b""));
    dropped(&mut t, now, &p, Drop::DstNotMapped);
    let d = Ipv4Addr::new(10, 64, 0, 77);
    let p = V4::new(REMOTE4, d, 17).build(&udp4(REMOTE4, d, b""));
    dropped(&mut t, now, &p, Drop::DstNotMapped);
    // 6→4 destination outside prefix64.
    let p = v6(
        host6(),
        static6(),
        17,
        64,
        &[],
        &udp6(host6(), static6(), b""),
    );
    dropped(&mut t, now, &p, Drop::DstNotPrefix64);
    // Multicast / loopback sources.
    let p = V4::new(Ipv4Addr::new(224, 0, 0, 1), STATIC4, 17).build(&udp_seg(1, 2, b""));
    dropped(&mut t, now, &p, Drop::BadSource);
    let m: Ipv6Addr = "ff02::1".parse().unwrap();
    let p = v6(m, p64(REMOTE4), 17, 64, &[], &udp6(m, p64(REMOTE4), b""));
    dropped(&mut t, now, &p, Drop::BadSource);
    // Destination embedding a broadcast address.
    let b = p64(Ipv4Addr::BROADCAST);
    let p = v6(host6(), b, 17, 64, &[], &udp6(host6(), b, b""));
    dropped(&mut t, now, &p, Drop::DstNotPrefix64);
    // Malformed.
    dropped(&mut t, now, &[], Drop::Truncated);
    dropped(&mut t, now, &[0x50; 40], Drop::BadHeader);
    dropped(&mut t, now, &[0x45; 10], Drop::Truncated);
    let mut p = udp_in(b"x");
    p[10] ^= 0xff;
    dropped(&mut t, now, &p, Drop::BadChecksum);
    let p = udp_in(b"x");
    dropped(&mut t, now, &p[..p.len() - 1], Drop::Truncated);
    // Trailing link padding is ignored.
    let mut p = udp_in(b"pad");
    p.extend_from_slice(&[0; 6]);
    let o = one(&mut t, now, &p);
    assert_eq!(o.len(), 40 + 11);
    assert!(t.stats().dropped_total() >= 11);
}

#[test]
fn hairpin_between_two_ipv6_hosts() {
    // IPv6 host → proxy ULA of the static host's proxy IPv4: 6→4 then 4→6.
    let mut t = xl();
    let now = Instant::now();
    let d = p64(STATIC4);
    let p = v6(host6(), d, 17, 64, &[], &udp6(host6(), d, b"hairpin"));
    let p4 = one(&mut t, now, &p);
    assert_eq!(v4_dst(&p4), STATIC4);
    let p6 = one(&mut t, now, &p4);
    assert_eq!((v6_src(&p6), v6_dst(&p6)), (host6(), static6()));
    assert_v6_l4(&p6);
}

// ---------------------------------------------------------------- bindings

#[test]
fn dns_binding_timeout_and_refresh() {
    let mut t = xl();
    let t0 = Instant::now();
    let v6only: Ipv6Addr = "2001:db8:99::1".parse().unwrap();
    let proxy = t.map_v6(t0, v6only).unwrap();
    assert!(t.in_pool4(proxy));
    assert_ne!(proxy, STATIC4);
    assert_eq!(t.map_v6(t0, v6only), Some(proxy), "same binding again");
    assert_eq!(t.map_v6(t0, p64(REMOTE4)), None, "prefix64 needs none");
    assert_eq!(t.mappings()[1].origin, MappingOrigin::Dns);
    // Traffic at +50 s refreshes: still alive at +100 s.
    let h = V4::new(REMOTE4, proxy, 17);
    let p = h.build(&udp4(REMOTE4, proxy, b"x"));
    assert_eq!(
        one(&mut t, t0 + Duration::from_secs(50), &p)[24..40],
        v6only.octets()
    );
    t.expire(t0 + Duration::from_secs(100));
    assert_eq!(t.lookup_v4(proxy), Some(v6only));
    // Idle 60 s: dead for packets even before the sweep, then swept.
    dropped(
        &mut t,
        t0 + Duration::from_secs(110),
        &p,
        Drop::DstNotMapped,
    );
    t.expire(t0 + Duration::from_secs(110));
    assert_eq!(t.lookup_v4(proxy), None);
    assert_eq!(t.lookup_v6(v6only), None);
    let s = t.stats();
    assert_eq!(
        (s.mappings_created, s.mappings_expired, s.mappings_dynamic),
        (1, 1, 0)
    );
    // Static bindings never expire.
    t.expire(t0 + Duration::from_secs(100_000));
    assert_eq!(t.lookup_v4(STATIC4), Some(static6()));
}

#[test]
fn max_dynamic_bound_and_reuse() {
    let mut c = cfg();
    c.max_dynamic = 3;
    let mut t = Translator::new(c).unwrap();
    let t0 = Instant::now();
    let addr = |i: u16| Ipv6Addr::new(0x2001, 0xdb8, 7, 0, 0, 0, 0, i);
    let mut got = Vec::new();
    for i in 0..3 {
        got.push(t.map_v6(t0, addr(i)).unwrap());
    }
    got.sort();
    got.dedup();
    assert_eq!(got.len(), 3);
    assert_eq!(t.map_v6(t0, addr(3)), None);
    // A packet from a new IPv6 source is refused too, counted.
    let h = Ipv6Addr::new(0x2001, 0xdb8, 8, 0, 0, 0, 0, 1);
    let p = v6(h, p64(REMOTE4), 17, 64, &[], &udp6(h, p64(REMOTE4), b""));
    dropped(&mut t, t0, &p, Drop::PoolExhausted);
    assert_eq!(t.stats().mapping_overflows, 2);
    assert_eq!(t.stats().mappings_dynamic, 3);
    // After the timeout a new binding fits (expiry runs on demand).
    assert!(t.map_v6(t0 + Duration::from_secs(61), addr(3)).is_some());
    assert_eq!(t.stats().mappings_dynamic, 1);
}

#[test]
fn small_pool_exhaustion() {
    let mut c = cfg();
    c.pool4 = Ipv4Addr::new(10, 64, 0, 0);
    c.pool4_len = 30;
    c.static_map = vec![];
    let mut t = Translator::new(c).unwrap();
    let t0 = Instant::now();
    // /30: .1 and .2 usable (network and broadcast never handed out).
    let a = t.map_v6(t0, "2001:db8::a".parse().unwrap()).unwrap();
    let b = t.map_v6(t0, "2001:db8::b".parse().unwrap()).unwrap();
    let mut v = [a, b];
    v.sort();
    assert_eq!(
        v,
        [Ipv4Addr::new(10, 64, 0, 1), Ipv4Addr::new(10, 64, 0, 2)]
    );
    assert_eq!(t.map_v6(t0, "2001:db8::c".parse().unwrap()), None);
    assert_eq!(t.stats().mapping_overflows, 1);
    // own_v4 inside pool4 is reserved: a /30 then has a single proxy address.
    let mut c = cfg();
    c.pool4_len = 30;
    c.static_map = vec![];
    c.own_v4 = Ipv4Addr::new(10, 64, 0, 1);
    let mut t = Translator::new(c).unwrap();
    assert_eq!(
        t.map_v6(t0, "2001:db8::a".parse().unwrap()),
        Some(Ipv4Addr::new(10, 64, 0, 2))
    );
    assert_eq!(t.map_v6(t0, "2001:db8::b".parse().unwrap()), None);
    // The next IPv6 source is refused with Destination Unreachable (RFC 7915 §5.4).
    let p = udp_out(b"no room");
    let out = dropped(&mut t, t0, &p, Drop::PoolExhausted);
    assert_eq!(out.len(), 1);
    assert_v6_l4(&out[0]);
    assert_eq!((out[0][40], out[0][41]), (1, 0));
    assert_eq!(v6_dst(&out[0]), host6());
}

#[test]
fn dead_binding_gets_host_unreachable() {
    let mut t = xl();
    let now = Instant::now();
    let d = Ipv4Addr::new(10, 64, 0, 77);
    let p = V4::new(REMOTE4, d, 17).build(&udp4(REMOTE4, d, b"late"));
    let out = dropped(&mut t, now, &p, Drop::DstNotMapped);
    assert_eq!(out.len(), 1);
    assert_v4_l4(&out[0]);
    assert_eq!((v4_src(&out[0]), v4_dst(&out[0])), (OWN4, REMOTE4));
    assert_eq!((out[0][20], out[0][21]), (3, 1));
    // Outside pool4 (not ours to answer): silent.
    let o = Ipv4Addr::new(10, 1, 1, 1);
    let p = V4::new(REMOTE4, o, 17).build(&udp4(REMOTE4, o, b"x"));
    assert!(dropped(&mut t, now, &p, Drop::DstNotMapped).is_empty());
}

#[test]
fn originated_errors_are_rate_limited() {
    let mut t = xl();
    let t0 = Instant::now();
    let mut h = V4::new(REMOTE4, STATIC4, 17);
    h.ttl = 1;
    let p = h.build(&udp4(REMOTE4, STATIC4, b"flood"));
    let mut sent = 0;
    for _ in 0..250 {
        sent += run(&mut t, t0, &p).1.len();
    }
    assert_eq!(sent, 100, "burst of 100");
    assert_eq!(t.stats().icmp_errors_rate_limited, 150);
    assert_eq!(t.stats().dropped(Drop::TtlExpired), 250);
    // 100 ms later: 10 more tokens.
    let later = t0 + Duration::from_millis(100);
    let mut sent = 0;
    for _ in 0..50 {
        sent += run(&mut t, later, &p).1.len();
    }
    assert_eq!(sent, 10);
    // After a long pause the bucket is full again (both families share it).
    let much_later = t0 + Duration::from_secs(10);
    let p6 = v6(
        host6(),
        p64(REMOTE4),
        17,
        1,
        &[],
        &udp6(host6(), p64(REMOTE4), b"x"),
    );
    let mut sent = 0;
    for _ in 0..150 {
        sent += run(&mut t, much_later, &p6).1.len();
    }
    assert_eq!(sent, 100);
}

// ---------------------------------------------------------------- robustness

struct XorShift(u64);
impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Recompute the IPv4 header checksum and the outer ICMP/ICMPv6 checksum so that
/// mutated packets get past the checksum checks into the deeper paths.
fn repair_checksums(p: &mut [u8]) {
    match p.first().map(|b| b >> 4) {
        Some(4) if p.len() >= 20 => {
            let hlen = usize::from(p[0] & 15) * 4;
            if hlen < 20 || hlen > p.len() {
                return;
            }
            set16(p, 10, 0);
            let c = ck(&p[..hlen]);
            set16(p, 10, c);
            let end = usize::from(get16(p, 2)).min(p.len());
            if p[9] == 1 && end >= hlen + 4 {
                set16(p, hlen + 2, 0);
                let c = ck(&p[hlen..end]);
                set16(p, hlen + 2, c);
            }
        }
        Some(6) if p.len() >= 44 && p[6] == 58 => {
            let end = (40 + usize::from(get16(p, 4))).min(p.len());
            set16(p, 42, 0);
            let c = ck(&cat(&ph6(v6_src(p), v6_dst(p), 58, end - 40), &p[40..end]));
            set16(p, 42, c);
        }
        _ => {}
    }
}

#[test]
fn malformed_input_never_panics() {
    let mut t = xl();
    let now = Instant::now();
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let seeds: Vec<Vec<u8>> = vec![
        udp_in(b"seed one"),
        udp_out(b"seed two"),
        V4::new(REMOTE4, STATIC4, 1).build(&icmp4(8, 0, 1, b"ping")),
        V4::new(ROUTER4, STATIC4, 1).build(&icmp4(
            3,
            3,
            0,
            &V4::new(STATIC4, REMOTE4, 17).build(&udp4(STATIC4, REMOTE4, b"x")),
        )),
        v6(
            router6(),
            p64(REMOTE4),
            58,
            64,
            &[],
            &icmp6(router6(), p64(REMOTE4), 1, 4, 0, &udp_out(b"inner")),
        ),
        v6(
            host6(),
            p64(REMOTE4),
            44,
            64,
            &frag_hdr(17, 0, true, 7),
            &[0u8; 40],
        ),
        // ICMPv6 error about a packet translated 4→6 (inner IPv6 with a Fragment header).
        v6(
            router6(),
            p64(REMOTE4),
            58,
            64,
            &[],
            &icmp6(
                router6(),
                p64(REMOTE4),
                2,
                0,
                1400,
                &v6(
                    p64(REMOTE4),
                    static6(),
                    44,
                    9,
                    &frag_hdr(17, 0, true, 9),
                    &udp6(p64(REMOTE4), static6(), b"inner"),
                ),
            ),
        ),
        // ICMPv4 error about a packet translated 6→4 (inner echo with options).
        V4::new(ROUTER4, STATIC4, 1).build(&icmp4(11, 0, 0, &{
            let mut h = V4::new(STATIC4, REMOTE4, 1);
            h.options = vec![1, 1, 1, 0];
            h.build(&icmp4(8, 0, 5, b"echo"))
        })),
        {
            let mut h = V4::new(REMOTE4, STATIC4, 17);
            h.options = vec![131, 7, 4, 1, 2, 3, 4, 0];
            h.build(&udp4(REMOTE4, STATIC4, &[0; 30]))
        },
    ];
    let mut out = Vec::new();
    for i in 0..60_000u32 {
        let mut p = if i.is_multiple_of(3) {
            let n = (rng.next() % 120) as usize;
            let mut p: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
            if let Some(b) = p.first_mut() {
                *b = if i.is_multiple_of(2) { 0x45 } else { 0x60 };
            }
            p
        } else {
            seeds[(rng.next() % seeds.len() as u64) as usize].clone()
        };
        let flips = 1 + rng.next() % 4;
        for _ in 0..flips {
            if p.is_empty() {
                break;
            }
            let at = (rng.next() as usize) % p.len();
            p[at] = rng.next() as u8;
        }
        if rng.next().is_multiple_of(4) {
            let cut = (rng.next() as usize) % (p.len() + 1);
            p.truncate(cut);
        }
        if rng.next().is_multiple_of(2) {
            repair_checksums(&mut p);
        }
        let _ = t.translate(now, &p, &mut out);
        // Whatever comes in, what goes out is a well-formed IP packet.
        for o in &out {
            assert!(o.len() <= 1500, "never above the MTU");
            match o[0] >> 4 {
                4 => assert_v4_header(o),
                6 => assert_eq!(usize::from(get16(o, 4)) + 40, o.len()),
                v => panic!("output version {v}"),
            }
        }
        t.recycle(&mut out);
    }
    let s = t.stats();
    assert!(s.dropped_total() > 10_000);
    // Mutated seeds still reach deep paths: translations and ICMP both ways,
    // and broken inner packets of ICMP errors.
    assert!(s.packets_4to6 > 1_000 && s.packets_6to4 > 1_000);
    assert!(s.icmp_4to6 > 500 && s.icmp_6to4 > 500);
    assert!(s.dropped(Drop::IcmpInnerUntranslatable) > 100);
}

#[test]
fn recycle_reuses_buffers() {
    let mut t = xl();
    let now = Instant::now();
    let p = udp_in(b"reuse");
    let mut out = Vec::new();
    t.translate(now, &p, &mut out).unwrap();
    let ptr = out[0].as_ptr();
    t.recycle(&mut out);
    assert!(out.is_empty());
    t.translate(now, &p, &mut out).unwrap();
    assert_eq!(out[0].as_ptr(), ptr);
}

#[test]
fn drop_names_and_indices_are_consistent() {
    for (i, d) in Drop::ALL.iter().enumerate() {
        assert_eq!(d.index(), i);
        assert!(!d.as_str().is_empty());
    }
    let mut names: Vec<&str> = Drop::ALL.iter().map(|d| d.as_str()).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), Drop::COUNT);
}
