//! Fuzz target `xlat_translate`: packets through the RGW64 translator
//! (RFC 7915), both families, with a few static and dynamic bindings.
//!
//! Invariants: no panic; every packet written back is a whole IPv4 or IPv6
//! packet whose length field matches its buffer, an IPv4 header checksum is
//! correct, and nothing exceeds the configured MTU of its family.
#![no_main]

use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use rgw_xlat::{Translator, XlatConfig};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut cfg = XlatConfig::default();
    cfg.static_map = vec![(Ipv4Addr::new(10, 64, 0, 10), "2001:db8::10".parse::<Ipv6Addr>().unwrap())];
    cfg.max_dynamic = 4;
    let (mtu4, mtu6) = (usize::from(cfg.mtu4), usize::from(cfg.mtu6));
    let Ok(mut xlat) = Translator::new(cfg) else { return };
    let t0 = Instant::now();
    let mut out = Vec::new();
    // Several packets: each is preceded by a 2-byte length and a time step.
    let mut rest = data;
    let mut now = t0;
    for _ in 0..16 {
        let [a, b, step, tail @ ..] = rest else { break };
        let n = usize::from(u16::from_be_bytes([*a, *b])).min(tail.len());
        let (packet, tail) = tail.split_at(n);
        rest = tail;
        now += Duration::from_secs(u64::from(*step));
        xlat.expire(now);
        let _ = xlat.translate(now, packet, &mut out);
        for p in &out {
            match p.first().map(|b| b >> 4) {
                Some(4) => {
                    assert!(p.len() >= 20 && p.len() <= mtu4, "IPv4 out of {} bytes", p.len());
                    assert_eq!(usize::from(u16::from_be_bytes([p[2], p[3]])), p.len(), "IPv4 total length");
                    let ihl = usize::from(p[0] & 0x0f) * 4;
                    let mut sum = 0u32;
                    for c in p[..ihl].chunks(2) {
                        sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
                    }
                    while sum > 0xffff {
                        sum = (sum & 0xffff) + (sum >> 16);
                    }
                    assert_eq!(sum, 0xffff, "IPv4 header checksum");
                }
                Some(6) => {
                    assert!(p.len() >= 40 && p.len() <= mtu6, "IPv6 out of {} bytes", p.len());
                    assert_eq!(usize::from(u16::from_be_bytes([p[4], p[5]])) + 40, p.len(), "IPv6 payload length");
                }
                v => panic!("output of version {v:?}"),
            }
        }
        xlat.recycle(&mut out);
    }
});
