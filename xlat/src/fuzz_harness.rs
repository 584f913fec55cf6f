//! Fuzz harness of the RGW64 translator, shared by the cargo-fuzz target
//! `xlat_translate` in `fuzz/` (nightly, feature `fuzzing`) and the stable
//! tests below that replay its seeds, kept corpus and every crash found
//! (`fuzz/{seeds,corpus,regressions}/xlat_translate/`).

use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use crate::{Translator, XlatConfig};

/// Target `xlat_translate`: packets through [`Translator::translate`] (RFC
/// 7915), both families, with a static and up to 4 dynamic bindings.
///
/// The input is up to 16 packets, each preceded by a 2-byte big-endian length
/// and a time step in seconds; an odd step repairs the packet's length fields
/// and checksums first, so the fuzzer gets past validation into the
/// translation paths.
///
/// Invariants: no panic; every packet written back is a whole IPv4 or IPv6
/// packet whose length field matches its buffer, an IPv4 header checksum is
/// correct, and nothing exceeds the configured MTU of its family.
pub fn xlat_translate(data: &[u8]) {
    let cfg = XlatConfig {
        static_map: vec![(
            Ipv4Addr::new(10, 64, 0, 10),
            Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10),
        )],
        max_dynamic: 4,
        ..XlatConfig::default()
    };
    let (mtu4, mtu6) = (usize::from(cfg.mtu4), usize::from(cfg.mtu6));
    let Ok(mut xlat) = Translator::new(cfg) else {
        return;
    };
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
        // An odd step repairs lengths and checksums, so the fuzzer gets past
        // the translator's validation into the translation paths.
        let mut packet = packet.to_vec();
        if step & 1 == 1 {
            repair(&mut packet);
        }
        let packet = &packet[..];
        now += Duration::from_secs(u64::from(*step));
        xlat.expire(now);
        let _ = xlat.translate(now, packet, &mut out);
        for p in &out {
            match p.first().map(|b| b >> 4) {
                Some(4) => {
                    assert!(
                        p.len() >= 20 && p.len() <= mtu4,
                        "IPv4 out of {} bytes",
                        p.len()
                    );
                    assert_eq!(
                        usize::from(u16::from_be_bytes([p[2], p[3]])),
                        p.len(),
                        "IPv4 total length"
                    );
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
                    assert!(
                        p.len() >= 40 && p.len() <= mtu6,
                        "IPv6 out of {} bytes",
                        p.len()
                    );
                    assert_eq!(
                        usize::from(u16::from_be_bytes([p[4], p[5]])) + 40,
                        p.len(),
                        "IPv6 payload length"
                    );
                }
                v => panic!("output of version {v:?}"),
            }
        }
        xlat.recycle(&mut out);
    }
}

fn sum16(mut sum: u32, data: &[u8]) -> u32 {
    for c in data.chunks(2) {
        sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    sum
}

fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Sets the length fields and the IPv4, TCP, UDP, ICMP and ICMPv6 checksums.
fn repair(p: &mut [u8]) {
    let len = p.len();
    match p.first().map(|b| b >> 4) {
        Some(4) if len >= 20 => {
            let ihl = (usize::from(p[0] & 0x0f) * 4).max(20);
            if ihl > len {
                return;
            }
            p[0] = 0x40 | (ihl / 4) as u8;
            p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
            p[10..12].copy_from_slice(&[0, 0]);
            let c = fold(sum16(0, &p[..ihl]));
            p[10..12].copy_from_slice(&c.to_be_bytes());
            // Only unfragmented packets carry a whole L4 header.
            if u16::from_be_bytes([p[6], p[7]]) & 0x3fff != 0 {
                return;
            }
            let proto = p[9];
            let l4 = ihl;
            let pseudo = {
                let mut s = sum16(0, &p[12..20]);
                s += u32::from(proto) + (len - l4) as u32;
                s
            };
            l4_checksum(p, l4, proto, pseudo, 1);
        }
        Some(6) if len >= 40 => {
            p[4..6].copy_from_slice(&((len - 40) as u16).to_be_bytes());
            let next = p[6];
            let mut s = sum16(0, &p[8..40]);
            s += (len - 40) as u32 + u32::from(next);
            l4_checksum(p, 40, next, s, 58);
        }
        _ => {}
    }
}

fn l4_checksum(p: &mut [u8], l4: usize, proto: u8, pseudo: u32, icmp: u8) {
    let len = p.len();
    let off = match proto {
        6 if len >= l4 + 20 => 16,
        17 if len >= l4 + 8 => {
            p[l4 + 4..l4 + 6].copy_from_slice(&((len - l4) as u16).to_be_bytes());
            6
        }
        x if x == icmp && len >= l4 + 8 => 2,
        _ => return,
    };
    p[l4 + off..l4 + off + 2].copy_from_slice(&[0, 0]);
    // ICMPv4 has no pseudo-header.
    let base = if proto == 1 { 0 } else { pseudo };
    let c = fold(sum16(base, &p[l4..]));
    p[l4 + off..l4 + off + 2].copy_from_slice(&c.to_be_bytes());
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
    fn xlat_translate_corpus_replays() {
        let n = replay("xlat_translate", xlat_translate);
        assert!(n > 0, "no fuzz inputs for xlat_translate");
    }
}
