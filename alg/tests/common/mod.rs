//! Shared by the engine tests: a fixed flow context, a small random number
//! generator, and for the network simulations the correspondence between an
//! original stream and its expected rewritten stream, message by message.
// Each test binary uses a part of this module.
#![allow(dead_code)]

use std::net::{Ipv4Addr, SocketAddrV4};

use rgw_alg::engine::FlowContext;
use rgw_alg::{Role, Transport};

/// Every flow gets the same public address and host FQDN.
pub struct FixedCtx {
    pub public: Ipv4Addr,
    pub fqdn: Option<&'static str>,
}

impl FlowContext for FixedCtx {
    fn public_addr(
        &self,
        _: SocketAddrV4,
        _: SocketAddrV4,
        _: Transport,
        _: Role,
    ) -> Option<Ipv4Addr> {
        Some(self.public)
    }
    fn host_fqdn(&self, _: Ipv4Addr) -> Option<String> {
        self.fqdn.map(str::to_string)
    }
}

/// xorshift64: deterministic test randomness.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// Messages as (original start, original length, rewritten start,
/// rewritten length).
#[derive(Debug, Default, Clone)]
pub struct StreamMap {
    lines: Vec<(usize, usize, usize, usize)>,
    orig_len: usize,
    rw_len: usize,
}

impl StreamMap {
    pub fn push(&mut self, orig_len: usize, rw_len: usize) {
        self.lines
            .push((self.orig_len, orig_len, self.rw_len, rw_len));
        self.orig_len += orig_len;
        self.rw_len += rw_len;
    }

    /// The original position up to which a receiver that has the rewritten
    /// bytes `[0, rw)` has everything (inside a rewritten message of another
    /// length: its start).
    pub fn orig_of(&self, rw: usize) -> usize {
        for &(o, ol, w, wl) in &self.lines {
            if rw < w + wl {
                return if rw <= w {
                    o
                } else if ol == wl {
                    o + (rw - w)
                } else {
                    o
                };
            }
        }
        self.orig_len
    }

    /// The rewritten position of original `orig`; inside a message of
    /// another length: its end (`up`) or start.
    pub fn rw_of(&self, orig: usize, up: bool) -> usize {
        for &(o, ol, w, wl) in &self.lines {
            if orig < o + ol {
                return if orig <= o {
                    w
                } else if ol == wl {
                    w + (orig - o)
                } else if up {
                    w + wl
                } else {
                    w
                };
            }
        }
        self.rw_len
    }
}

/// Checks an ACK and SACK blocks reaching a sender (original space,
/// relative to its first data byte), as Linux judges them: an ACK below
/// `una` is stale and ignored, a newer one must not exceed what the receiver
/// has; a SACK block is used only if `una < left < right <= nxt`
/// (`tcp_is_sackblock_valid`) and must then cover only bytes the receiver
/// has. Returns the new `una`.
#[allow(clippy::too_many_arguments)]
pub fn check_ack(
    map: &StreamMap,
    got: &[Option<u8>],
    rcv_nxt: usize,
    una: usize,
    nxt: usize,
    ack_rel: u32,
    sack_rel: &[(u32, u32)],
    what: &str,
) -> usize {
    let mut una = una;
    if (ack_rel.wrapping_sub(una as u32) as i32) >= 0 {
        let acked = ack_rel as usize;
        let limit = map.orig_of(rcv_nxt);
        assert!(
            acked <= limit,
            "{what}: ACK {acked} beyond received {limit}"
        );
        assert!(acked <= nxt, "{what}: ACK {acked} beyond sent {nxt}");
        una = acked;
    }
    let after = |a: u32, b: usize| (a.wrapping_sub(b as u32) as i32) > 0;
    for &(l, r) in sack_rel {
        if !(after(l, una) && after(r, l as usize) && !after(r, nxt)) {
            continue; // invalid for the sender: ignored
        }
        let (l, r) = (l as usize, r as usize);
        let (wl, wr) = (map.rw_of(l, true), map.rw_of(r, false));
        for (i, b) in got.iter().enumerate().take(wr).skip(wl) {
            assert!(b.is_some(), "{what}: SACK {l}..{r} claims missing byte {i}");
        }
    }
    una
}
