//! Fuzz harnesses of the ALG crate, shared by the cargo-fuzz targets in
//! `fuzz/` (nightly, feature `fuzzing`) and the stable tests below that
//! replay the kept corpus (`fuzz/corpus/<target>/`) and every crash found.

use crate::seqadj::{SeqAdjust, MAX_CORRECTIONS};

/// Reads the fuzz input as a little instruction stream.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes([self.u8()?, self.u8()?]))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes([
            self.u8()?,
            self.u8()?,
            self.u8()?,
            self.u8()?,
        ]))
    }
}

/// One segment of the naive reference: original and rewritten positions.
#[derive(Clone, Copy)]
struct Seg {
    orig: u32,
    old: u32,
    new: u32,
    rw: u32,
}

/// Target `seqadj`: a model check of [`SeqAdjust`] against a naive
/// reference that remembers every segment of the stream with its original
/// and rewritten position.
///
/// The input is an ISN followed by operations: send the next segment
/// (rewritten or not), retransmit an unacknowledged one (recorded again),
/// or an ACK from the peer (pruning). While fewer than [`MAX_CORRECTIONS`]
/// rewrites are unacknowledged, every unacknowledged segment must map
/// exactly: its start, its last byte (keepalive), ACKs at its edges and a
/// SACK block covering it; an ACK inside a rewritten segment must never
/// acknowledge more than was really sent; and the tracker never keeps more
/// than [`MAX_CORRECTIONS`] points.
pub fn seqadj(data: &[u8]) {
    let mut input = Bytes(data);
    let Some(isn) = input.u32() else {
        return;
    };
    let mut segs: Vec<Seg> = Vec::new();
    let (mut orig, mut rw) = (isn, isn);
    let mut acked = 0usize; // segments [0, acked) are acknowledged
    let mut a = SeqAdjust::new();
    while let Some(op) = input.u8() {
        match op % 4 {
            0 | 1 => {
                if segs.len() >= 4096 {
                    break;
                }
                let old = u32::from(input.u16().unwrap_or(1)).clamp(1, 9000);
                let new = if op % 4 == 1 {
                    let d = i32::from(input.u8().unwrap_or(0) as i8);
                    (old as i32 + d).max(1) as u32
                } else {
                    old
                };
                // Keeps the exact window: the tracker folds the oldest point
                // away beyond MAX_CORRECTIONS unacknowledged rewrites.
                let unacked_rewrites = segs[acked..].iter().filter(|s| s.old != s.new).count();
                let new = if unacked_rewrites + 1 >= MAX_CORRECTIONS {
                    old
                } else {
                    new
                };
                segs.push(Seg { orig, old, new, rw });
                if old != new {
                    a.record(orig, old, new);
                }
                orig = orig.wrapping_add(old);
                rw = rw.wrapping_add(new);
            }
            2 => {
                let pick = usize::from(input.u8().unwrap_or(0));
                if segs.len() > acked {
                    let s = segs[acked + pick % (segs.len() - acked)];
                    if s.old != s.new {
                        a.record(s.orig, s.old, s.new);
                    }
                }
            }
            _ => {
                let pick = usize::from(input.u8().unwrap_or(0));
                if segs.len() > acked {
                    let to = acked + 1 + pick % (segs.len() - acked);
                    let last = segs[to - 1];
                    // A partial ACK inside a rewritten segment never
                    // acknowledges beyond the segment's original start.
                    if last.new > 1 {
                        let inside = last.rw.wrapping_add(last.new / 2);
                        if last.old != last.new && inside != last.rw {
                            assert_eq!(a.unmap_ack(inside), last.orig, "ack inside a rewrite");
                        }
                    }
                    acked = to;
                    a.prune(last.rw.wrapping_add(last.new));
                }
            }
        }
        assert!(a.len() <= MAX_CORRECTIONS);
        for (i, s) in segs.iter().enumerate().skip(acked.saturating_sub(1)) {
            let (e, re) = (s.orig.wrapping_add(s.old), s.rw.wrapping_add(s.new));
            assert_eq!(a.map_seq(s.orig), s.rw, "segment {i} start");
            assert_eq!(a.unmap_ack(re), e, "segment {i} end");
            assert_eq!(a.unmap_ack(s.rw), s.orig, "segment {i} ack at start");
            if s.old > 1 {
                assert_eq!(
                    a.map_seq(e.wrapping_sub(1)),
                    re.wrapping_sub(1),
                    "segment {i} keepalive"
                );
            }
            let mut sack = [(s.rw, re)];
            a.unmap_sack(&mut sack);
            assert_eq!(sack, [(s.orig, e)], "segment {i} sack");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replay(target: &str, harness: fn(&[u8])) -> usize {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
        let mut n = 0;
        for dir in ["corpus", "regressions"] {
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
    fn seqadj_corpus_replays() {
        let n = replay("seqadj", seqadj);
        assert!(n > 0, "fuzz/corpus/seqadj is empty");
    }

    #[test]
    fn seqadj_harness_holds_on_a_simple_stream() {
        // ISN near the wrap, then: grow, plain, shrink, retransmit, ACK.
        seqadj(&[
            0x00, 0xff, 0xff, 0xff, 1, 100, 0, 30, 0, 200, 0, 1, 50, 0, 0xf6, 2, 0, 3, 1, 3, 7,
        ]);
    }
}
