//! TCP SEQ/ACK offset tracking for payload rewrites (one direction).
//!
//! When the ALG rewrites an address inside a TCP segment and the payload
//! length changes, every later sequence number of that direction shifts.
//! This kernel does not repair SEQ/ACK after a userspace rewrite, so the
//! engine does it itself: SEQ (and the segment's own sequence space) in the
//! rewritten direction, ACK and SACK edges in the opposite direction.
//!
//! Unlike Linux's `nf_conntrack_seqadj`, which remembers only the last
//! correction point (so a retransmission of data from before an older rewrite
//! gets the newer, wrong offset), [`SeqAdjust`] keeps an ordered list of
//! correction points and drops them only when the peer's ACK shows they can
//! no longer be needed ([`SeqAdjust::prune`]).
//!
//! # Model
//!
//! A rewrite of the original segment `[seq, seq + old_len)` to `new_len`
//! bytes creates a correction point at `at = seq + old_len` (original space):
//! segments starting at or after `at` are shifted by the cumulative
//! `delta`, i.e. the delta of the previous point plus `new_len - old_len`.
//! The rewritten segment itself starts where the previous offset puts it
//! (`seq + previous delta`) and ends at `at + delta` in rewritten space.
//!
//! All arithmetic is modulo 2^32; comparisons are wrap-around safe (RFC 1982)
//! and therefore meaningful only while the tracked points lie within 2^31
//! bytes of each other, which regular pruning guarantees.
//!
//! # Choices
//!
//! * An ACK (or SACK right edge) that falls strictly inside a rewritten
//!   segment is clamped down to the original segment's start: the peer has
//!   not received the whole rewritten segment, the original bytes cannot be
//!   split proportionally, so the sender is told it still has to send the
//!   whole segment (which is then rewritten again identically). A SACK left
//!   edge inside a rewritten segment is rounded up to the segment's original
//!   end for the same reason. The result never acknowledges more than the
//!   sender really sent.
//! * A repeated [`SeqAdjust::record`] for a segment that overlaps an already
//!   recorded one is ignored (an identical retransmission rewrite must not
//!   double count; a differing one cannot be expressed and the first wins).
//! * At most [`MAX_CORRECTIONS`] points are kept. When a new point would
//!   exceed that, the oldest one is folded into the base offset: data from
//!   before it would then be mapped with its (newer) offset, i.e. only
//!   retransmissions older than the last `MAX_CORRECTIONS - 1` rewrites
//!   degrade to Linux's behaviour.

use std::collections::VecDeque;

/// Maximum number of correction points kept per direction.
pub const MAX_CORRECTIONS: usize = 64;

/// `a < b` in sequence space (RFC 1982).
#[inline]
pub fn seq_lt(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

/// `a <= b` in sequence space.
#[inline]
pub fn seq_le(a: u32, b: u32) -> bool {
    !seq_lt(b, a)
}

#[inline]
fn shift(seq: u32, delta: i64) -> u32 {
    // Truncation of the two's-complement delta is addition modulo 2^32.
    seq.wrapping_add(delta as u32)
}

/// One direction's corrections: segments starting at or after `at`
/// (original sequence space) are shifted by `delta` in total.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Correction {
    /// Original-space sequence number from which `delta` applies (the end of
    /// the rewritten original segment).
    pub at: u32,
    /// Cumulative offset after this point.
    pub delta: i64,
}

/// A recorded rewrite and the correction point it created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Point {
    /// Original start of the rewritten segment.
    start: u32,
    /// Original payload length of the rewritten segment.
    old_len: u32,
    /// Correction point created by the rewrite (`at = start + old_len`).
    corr: Correction,
}

impl Point {
    /// Start of the rewritten segment in rewritten space, given the offset
    /// in force before this point.
    fn start_rw(&self, prev_delta: i64) -> u32 {
        shift(self.start, prev_delta)
    }

    /// End of the rewritten segment in rewritten space.
    fn end_rw(&self) -> u32 {
        shift(self.corr.at, self.corr.delta)
    }
}

/// SEQ/ACK offset tracker for one direction of a TCP connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeqAdjust {
    /// Offset in force before the first kept point (non-zero once points
    /// have been pruned or folded away).
    base: i64,
    /// Correction points, ordered by sequence number, non-overlapping.
    points: VecDeque<Point>,
}

impl SeqAdjust {
    /// Creates a tracker with no corrections.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that the segment starting at original sequence `seq` with
    /// original payload length `old_len` was rewritten to `new_len`.
    ///
    /// Rewrites should be recorded in sequence order. A repeated call for the
    /// same `(seq, old_len)` — a retransmission rewritten again — is a no-op,
    /// as is any call overlapping an already recorded segment. A rewrite
    /// that does not change the length records nothing. A rewrite recorded
    /// out of order (before later, non-overlapping points) is inserted in
    /// place and the later cumulative deltas are adjusted.
    pub fn record(&mut self, seq: u32, old_len: u32, new_len: u32) {
        let end = seq.wrapping_add(old_len);
        for p in &self.points {
            if p.start == seq && p.old_len == old_len {
                return; // identical retransmission
            }
            let p_end = p.corr.at;
            let overlaps = if old_len == 0 {
                seq_lt(p.start, seq) && seq_lt(seq, p_end)
            } else if p.old_len == 0 {
                seq_lt(seq, p.start) && seq_lt(p.start, end)
            } else {
                seq_lt(seq, p_end) && seq_lt(p.start, end)
            };
            if overlaps {
                return;
            }
        }
        let diff = i64::from(new_len) - i64::from(old_len);
        if diff == 0 {
            return;
        }
        // Insertion position: after every point that ends at or before `seq`.
        let pos = self
            .points
            .iter()
            .take_while(|p| seq_le(p.corr.at, seq))
            .count();
        let prev = if pos == 0 {
            self.base
        } else {
            self.points[pos - 1].corr.delta
        };
        for p in self.points.iter_mut().skip(pos) {
            p.corr.delta += diff;
        }
        self.points.insert(
            pos,
            Point {
                start: seq,
                old_len,
                corr: Correction {
                    at: end,
                    delta: prev + diff,
                },
            },
        );
        while self.points.len() > MAX_CORRECTIONS {
            if let Some(oldest) = self.points.pop_front() {
                self.base = oldest.corr.delta;
            }
        }
    }

    /// Offset that applies to a segment starting at original `seq` (0 before
    /// the first correction point).
    ///
    /// A `seq` strictly inside a rewritten segment (only a keepalive probe at
    /// `snd_una - 1` or a re-segmented retransmission can start there) is
    /// placed relative to the rewritten segment's end, but never before its
    /// rewritten start: a keepalive for the segment's last byte thus maps to
    /// the rewritten segment's last byte.
    pub fn offset_for_seq(&self, seq: u32) -> i64 {
        for i in (0..self.points.len()).rev() {
            let p = &self.points[i];
            if seq_le(p.corr.at, seq) {
                return p.corr.delta;
            }
            if seq_lt(p.start, seq) {
                let prev = self.prev_delta(i);
                let into = i64::from(seq.wrapping_sub(p.start));
                let from_end = i64::from(p.corr.at.wrapping_sub(seq));
                // Bytes before the rewritten end: from_end; room in the
                // rewritten segment before `seq`: new_len - from_end.
                let new_len = i64::from(p.end_rw().wrapping_sub(p.start_rw(prev)));
                return if new_len >= from_end {
                    p.corr.delta
                } else {
                    prev - into
                };
            }
        }
        self.base
    }

    /// Offset in force before point `i`.
    fn prev_delta(&self, i: usize) -> i64 {
        if i == 0 {
            self.base
        } else {
            self.points[i - 1].corr.delta
        }
    }

    /// Translates an original-space sequence number of this direction to the
    /// rewritten space.
    pub fn map_seq(&self, seq: u32) -> u32 {
        shift(seq, self.offset_for_seq(seq))
    }

    /// Maps a rewritten-space position back to original space. A position
    /// strictly inside a rewritten segment goes to the original segment's
    /// start (`round_up == false`) or end (`round_up == true`).
    fn unmap(&self, pos: u32, round_up: bool) -> u32 {
        for i in (0..self.points.len()).rev() {
            let p = &self.points[i];
            if seq_le(p.end_rw(), pos) {
                return shift(pos, -p.corr.delta);
            }
            if seq_lt(p.start_rw(self.prev_delta(i)), pos) {
                return if round_up { p.corr.at } else { p.start };
            }
        }
        shift(pos, -self.base)
    }

    /// Translates an acknowledgement number sent by the PEER (in rewritten
    /// space) back to original space. An ACK strictly inside a rewritten
    /// segment is clamped to the original segment's start.
    pub fn unmap_ack(&self, ack: u32) -> u32 {
        self.unmap(ack, false)
    }

    /// SACK blocks (left, right edges, rewritten space) from the peer →
    /// original space. A left edge inside a rewritten segment is rounded up
    /// to the segment's original end, a right edge down to its start, so a
    /// block never claims bytes that were not fully received. A block that
    /// thereby becomes empty is returned with `left == right`; the caller
    /// must drop it.
    pub fn unmap_sack(&self, blocks: &mut [(u32, u32)]) {
        for b in blocks.iter_mut() {
            let left = self.unmap(b.0, true);
            let right = self.unmap(b.1, false);
            *b = if seq_lt(left, right) {
                (left, right)
            } else {
                (left, left)
            };
        }
    }

    /// Drops corrections no longer needed once the peer acknowledged up to
    /// `ack` (rewritten space), keeping the one that still applies: the
    /// sender will not send data below the unmapped ACK again, so of the
    /// points at or before it only the last one matters; the earlier ones
    /// are folded into the base offset.
    pub fn prune(&mut self, ack: u32) {
        let acked = self.unmap_ack(ack);
        let behind = self
            .points
            .iter()
            .take_while(|p| seq_le(p.corr.at, acked))
            .count();
        for _ in 1..behind {
            if let Some(old) = self.points.pop_front() {
                self.base = old.corr.delta;
            }
        }
    }

    /// The kept correction points, oldest first.
    pub fn corrections(&self) -> impl Iterator<Item = Correction> + '_ {
        self.points.iter().map(|p| p.corr)
    }

    /// Number of correction points kept.
    pub fn len(&self) -> usize {
        self.points.len()
    }

    /// Whether no correction point is kept.
    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::XorShift;

    /// Rewrites (+30 at [1100,1200), -10 at [1500,1600), +50 at [2000,2050)):
    /// cumulative deltas 30, 20, 70.
    fn three() -> SeqAdjust {
        let mut a = SeqAdjust::new();
        a.record(1100, 100, 130);
        a.record(1500, 100, 90);
        a.record(2000, 50, 100);
        a
    }

    #[test]
    fn comparisons_wrap() {
        assert!(seq_lt(0xFFFF_FFF0, 0x10));
        assert!(!seq_lt(0x10, 0xFFFF_FFF0));
        assert!(seq_le(5, 5));
        assert!(!seq_lt(5, 5));
    }

    #[test]
    fn empty_is_identity() {
        let a = SeqAdjust::new();
        assert!(a.is_empty());
        assert_eq!(a.len(), 0);
        assert_eq!(a.offset_for_seq(1234), 0);
        assert_eq!(a.map_seq(1234), 1234);
        assert_eq!(a.unmap_ack(1234), 1234);
    }

    #[test]
    fn single_growth() {
        let mut a = SeqAdjust::new();
        a.record(1100, 100, 130);
        assert_eq!(a.len(), 1);
        assert_eq!(
            a.corrections().collect::<Vec<_>>(),
            vec![Correction {
                at: 1200,
                delta: 30
            }]
        );
        assert_eq!(a.map_seq(1000), 1000);
        assert_eq!(a.map_seq(1100), 1100); // the rewritten segment itself
        assert_eq!(a.offset_for_seq(1200), 30);
        assert_eq!(a.map_seq(1200), 1230);
        assert_eq!(a.map_seq(1199), 1229); // keepalive for the last byte
        assert_eq!(a.unmap_ack(1230), 1200);
        assert_eq!(a.unmap_ack(1300), 1270);
        assert_eq!(a.unmap_ack(1100), 1100);
        assert_eq!(a.unmap_ack(1150), 1100); // inside: clamped to start
        assert_eq!(a.unmap_ack(1229), 1100);
    }

    #[test]
    fn single_shrink() {
        let mut a = SeqAdjust::new();
        a.record(1100, 100, 60);
        assert_eq!(a.offset_for_seq(1200), -40);
        assert_eq!(a.map_seq(1100), 1100);
        assert_eq!(a.map_seq(1200), 1160);
        assert_eq!(a.map_seq(1199), 1159); // keepalive for the last byte
        assert_eq!(a.map_seq(1110), 1100); // re-segmented: clamped to start
        assert_eq!(a.unmap_ack(1160), 1200);
        assert_eq!(a.unmap_ack(1130), 1100);
        assert_eq!(a.unmap_ack(2000), 2040);
    }

    #[test]
    fn cumulative_rewrites() {
        let a = three();
        assert_eq!(a.len(), 3);
        assert_eq!(
            a.corrections().collect::<Vec<_>>(),
            vec![
                Correction {
                    at: 1200,
                    delta: 30
                },
                Correction {
                    at: 1600,
                    delta: 20
                },
                Correction {
                    at: 2050,
                    delta: 70
                },
            ]
        );
        assert_eq!(a.map_seq(1200), 1230);
        assert_eq!(a.map_seq(1500), 1530);
        assert_eq!(a.map_seq(1600), 1620);
        assert_eq!(a.map_seq(2000), 2020);
        assert_eq!(a.map_seq(2050), 2120);
        assert_eq!(a.map_seq(3000), 3070);
    }

    #[test]
    fn retransmission_uses_older_offset() {
        let a = three();
        // Before the first rewrite: unshifted (Linux would add 20).
        assert_eq!(a.map_seq(1000), 1000);
        assert_eq!(a.offset_for_seq(1000), 0);
        // Between the first and second rewrite: +30 (Linux would add 20).
        assert_eq!(a.map_seq(1300), 1330);
        assert_eq!(a.offset_for_seq(1300), 30);
        // Between the second and third: +20.
        assert_eq!(a.map_seq(1700), 1720);
        // A rewritten segment retransmitted keeps its start.
        assert_eq!(a.map_seq(1100), 1100);
    }

    #[test]
    fn out_of_order_segments_and_records() {
        let a = three();
        // Segments arrive out of order: mapping is order independent.
        for &(seq, want) in &[(2050, 2120), (1200, 1230), (1000, 1000), (1600, 1620)] {
            assert_eq!(a.map_seq(seq), want);
        }
        // Rewrites recorded out of order yield the same corrections.
        let mut b = SeqAdjust::new();
        b.record(2000, 50, 100);
        b.record(1100, 100, 130);
        b.record(1500, 100, 90);
        assert_eq!(
            b.corrections().collect::<Vec<_>>(),
            a.corrections().collect::<Vec<_>>()
        );
    }

    #[test]
    fn ack_unmapping() {
        let a = three();
        assert_eq!(a.unmap_ack(1000), 1000);
        assert_eq!(a.unmap_ack(1100), 1100);
        assert_eq!(a.unmap_ack(1150), 1100); // inside rewritten [1100,1230)
        assert_eq!(a.unmap_ack(1230), 1200);
        assert_eq!(a.unmap_ack(1530), 1500);
        assert_eq!(a.unmap_ack(1560), 1500); // inside rewritten [1530,1620)
        assert_eq!(a.unmap_ack(1620), 1600);
        assert_eq!(a.unmap_ack(2020), 2000);
        assert_eq!(a.unmap_ack(2119), 2000); // inside rewritten [2020,2120)
        assert_eq!(a.unmap_ack(2120), 2050);
        assert_eq!(a.unmap_ack(3070), 3000);
    }

    #[test]
    fn sack_unmapping() {
        let a = three();
        let mut blocks = [(1560, 1700), (1250, 1530), (1150, 1200), (2020, 2120)];
        a.unmap_sack(&mut blocks);
        assert_eq!(
            blocks,
            [
                (1600, 1680), // left inside rewritten segment: rounded up
                (1220, 1500),
                (1200, 1200), // wholly inside one rewritten segment: empty
                (2000, 2050), // exactly the rewritten segment
            ]
        );
    }

    #[test]
    fn wrap_around() {
        let mut a = SeqAdjust::new();
        // Segment [0xFFFF_FFF0, 0x10) crosses the wrap, grows by 16.
        a.record(0xFFFF_FFF0, 0x20, 0x30);
        assert_eq!(a.map_seq(0xFFFF_FF00), 0xFFFF_FF00);
        assert_eq!(a.map_seq(0xFFFF_FFF0), 0xFFFF_FFF0);
        assert_eq!(a.map_seq(0x10), 0x20);
        assert_eq!(a.map_seq(0x100), 0x110);
        assert_eq!(a.unmap_ack(0x20), 0x10);
        assert_eq!(a.unmap_ack(0x5), 0xFFFF_FFF0);
        assert_eq!(a.unmap_ack(0xFFFF_FFF8), 0xFFFF_FFF0);
        assert_eq!(a.unmap_ack(0x110), 0x100);
        // A later shrink after the wrap.
        a.record(0x100, 10, 4);
        assert_eq!(a.map_seq(0x200), 0x20A);
        assert_eq!(a.unmap_ack(0x20A), 0x200);
        // Retransmission before the wrap still unshifted.
        assert_eq!(a.map_seq(0xFFFF_FF80), 0xFFFF_FF80);

        // An offset that itself carries data across the wrap.
        let mut b = SeqAdjust::new();
        b.record(0xFFFF_FFD0, 0x10, 0x30);
        assert_eq!(b.map_seq(0xFFFF_FFF0), 0x10);
        assert_eq!(b.unmap_ack(0x10), 0xFFFF_FFE0 + 0x10);
        assert_eq!(b.unmap_ack(0x0), 0xFFFF_FFE0); // rewritten end
        assert_eq!(b.unmap_ack(0xFFFF_FFF8), 0xFFFF_FFD0); // inside
        let mut s = [(0xFFFF_FFF8, 0x20)];
        b.unmap_sack(&mut s);
        assert_eq!(s, [(0xFFFF_FFE0, 0x0)]);
    }

    #[test]
    fn prune_keeps_what_is_needed() {
        let mut a = three();
        a.prune(1000); // before everything
        assert_eq!(a.len(), 3);
        a.prune(1230); // acked original 1200: first point still applies
        assert_eq!(a.len(), 3);
        assert_eq!(a.map_seq(1300), 1330); // retransmission still right
        a.prune(1560); // inside second rewrite: acked 1500
        assert_eq!(a.len(), 3);
        assert_eq!(a.map_seq(1500), 1530); // retransmit rewritten segment
        a.prune(1620); // acked 1600: first point folded into base
        assert_eq!(a.len(), 2);
        assert_eq!(a.map_seq(1599), 1619); // keepalive for last acked byte
        assert_eq!(a.map_seq(1600), 1620);
        assert_eq!(a.map_seq(1700), 1720);
        assert_eq!(a.map_seq(2000), 2020);
        assert_eq!(a.unmap_ack(1620), 1600);
        assert_eq!(a.unmap_ack(2050), 2000); // inside third rewrite
        a.prune(2120); // acked 2050: only the last point remains
        assert_eq!(a.len(), 1);
        assert_eq!(
            a.corrections().collect::<Vec<_>>(),
            vec![Correction {
                at: 2050,
                delta: 70
            }]
        );
        assert_eq!(a.map_seq(2049), 2119);
        assert_eq!(a.map_seq(2050), 2120);
        assert_eq!(a.unmap_ack(2120), 2050);
        // Recording continues from the kept point.
        a.record(3000, 10, 20);
        assert_eq!(a.map_seq(3010), 3090);
    }

    #[test]
    fn repeated_record_does_not_double_count() {
        let mut a = SeqAdjust::new();
        a.record(1100, 100, 130);
        a.record(1100, 100, 130);
        assert_eq!(a.len(), 1);
        assert_eq!(a.map_seq(1200), 1230);
        // Overlapping / differing re-rewrites are ignored too.
        a.record(1150, 100, 120);
        a.record(1100, 100, 140);
        assert_eq!(a.len(), 1);
        assert_eq!(a.map_seq(1200), 1230);
        // Same length: nothing to record.
        a.record(1300, 50, 50);
        assert_eq!(a.len(), 1);
        // Duplicate after later rewrites still a no-op.
        a.record(1500, 100, 90);
        a.record(1100, 100, 130);
        assert_eq!(a.len(), 2);
        assert_eq!(a.map_seq(1600), 1620);
    }

    #[test]
    fn bounded_length() {
        let mut a = SeqAdjust::new();
        for i in 0..70u32 {
            a.record(1000 + 100 * i, 10, 11);
        }
        assert_eq!(a.len(), MAX_CORRECTIONS);
        // Recent points are exact.
        assert_eq!(a.map_seq(1000 + 100 * 69 + 10), 1000 + 100 * 69 + 10 + 70);
        assert_eq!(a.map_seq(1000 + 100 * 10 + 50), 1000 + 100 * 10 + 50 + 11);
        // Data older than the kept points gets the newest folded offset (6).
        assert_eq!(a.map_seq(1050), 1056);
    }

    #[test]
    fn random_stream_round_trips() {
        for seed in 1..=20u64 {
            let mut rng = XorShift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
            // Some streams start just before the wrap.
            let isn = if seed % 2 == 0 {
                0xFFFF_0000u32.wrapping_add(rng.below(0x8000) as u32)
            } else {
                rng.next() as u32
            };
            // (original start, old_len, new_len, rewritten start)
            let mut segs: Vec<(u32, u32, u32, u32)> = Vec::new();
            let (mut orig, mut rw) = (isn, isn);
            for _ in 0..3000 {
                let old = 1 + rng.below(1460) as u32;
                let new = if rng.below(4) == 0 {
                    let d = rng.below(81) as i64 - 40;
                    (i64::from(old) + d).max(1) as u32
                } else {
                    old
                };
                segs.push((orig, old, new, rw));
                orig = orig.wrapping_add(old);
                rw = rw.wrapping_add(new);
            }
            let mut a = SeqAdjust::new();
            let mut acked = 0usize;
            let check = |a: &SeqAdjust, i: usize| {
                let (s, old, new, r) = segs[i];
                let (e, re) = (s.wrapping_add(old), r.wrapping_add(new));
                assert_eq!(a.map_seq(s), r, "seed {seed} seg {i} start");
                assert_eq!(a.unmap_ack(re), e, "seed {seed} seg {i} end");
                assert_eq!(a.unmap_ack(r), s, "seed {seed} seg {i} ack start");
                // Last byte (keepalive probe); for a one-byte segment it is
                // the segment start, which maps as such.
                if old > 1 {
                    assert_eq!(a.map_seq(e.wrapping_sub(1)), re.wrapping_sub(1));
                }
                let mut sack = [(r, re)];
                a.unmap_sack(&mut sack);
                assert_eq!(sack, [(s, e)], "seed {seed} seg {i} sack");
            };
            for next in 0..segs.len() {
                // Random retransmissions of unacknowledged data.
                while next > acked && rng.below(4) == 0 {
                    let i = acked + rng.below(next - acked);
                    let (s, old, new, _) = segs[i];
                    if old != new {
                        a.record(s, old, new);
                    }
                    check(&a, i);
                }
                let (s, old, new, _) = segs[next];
                if old != new {
                    a.record(s, old, new);
                }
                check(&a, next);
                // The peer acknowledges, lagging by up to 30 segments.
                if rng.below(5) == 0 {
                    let to = (next + 1).saturating_sub(rng.below(30));
                    if to > acked {
                        acked = to;
                        let (_, _, new, r) = segs[acked - 1];
                        a.prune(r.wrapping_add(new));
                    }
                }
                assert!(a.len() <= 32, "seed {seed}: {} points", a.len());
            }
        }
    }
}
