//! Internet checksum (RFC 1071) and its incremental update (RFC 1624).

use std::net::{Ipv4Addr, Ipv6Addr};

/// Ones' complement partial sum of `data` (big-endian 16-bit words, odd byte padded).
pub(crate) fn sum(data: &[u8]) -> u32 {
    let mut acc: u64 = 0;
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        acc += u64::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        acc += u64::from(*last) << 8;
    }
    fold64(acc)
}

fn fold64(mut acc: u64) -> u32 {
    while acc >> 32 != 0 {
        acc = (acc & 0xffff_ffff) + (acc >> 32);
    }
    acc as u32
}

/// Fold a partial sum to 16 bits (not complemented).
pub(crate) fn fold(mut s: u32) -> u16 {
    while s >> 16 != 0 {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

/// Final checksum value of a partial sum.
pub(crate) fn finish(s: u32) -> u16 {
    !fold(s)
}

/// Add two partial sums without overflow.
pub(crate) fn add(a: u32, b: u32) -> u32 {
    let (s, c) = a.overflowing_add(b);
    if c {
        fold(s) as u32 + 0x1_0000
    } else {
        s
    }
}

/// Sum of an IPv4 address.
pub(crate) fn addr4(a: Ipv4Addr) -> u32 {
    sum(&a.octets())
}

/// Sum of an IPv6 address.
pub(crate) fn addr6(a: Ipv6Addr) -> u32 {
    sum(&a.octets())
}

/// IPv6 pseudo-header sum (RFC 8200 §8.1).
pub(crate) fn pseudo6(src: Ipv6Addr, dst: Ipv6Addr, next: u8, len: u32) -> u32 {
    add(
        add(addr6(src), addr6(dst)),
        u32::from(next) + (len >> 16) + (len & 0xffff),
    )
}

/// RFC 1624 eqn. 3: new checksum after the covered data's sum changed from `old` to `new`.
pub(crate) fn adjust(check: u16, old: u32, new: u32) -> u16 {
    let s = u32::from(!check) + u32::from(!fold(old)) + u32::from(fold(new));
    !fold(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3 example bytes: sum 0xddf2.
        let d = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(sum(&d)), 0xddf2);
        assert_eq!(finish(sum(&d)), !0xddf2);
    }

    #[test]
    fn odd_length_pads() {
        assert_eq!(fold(sum(&[0x12])), 0x1200);
        assert_eq!(fold(sum(&[0x12, 0x34, 0x56])), 0x1234 + 0x5600);
    }

    #[test]
    fn incremental_matches_full() {
        let mut d: Vec<u8> = (0u8..64).map(|i| i.wrapping_mul(37)).collect();
        let ck = finish(sum(&d));
        let old = sum(&d[10..14]);
        d[10..14].copy_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
        let new = sum(&d[10..14]);
        assert_eq!(adjust(ck, old, new), finish(sum(&d)));
    }
}
