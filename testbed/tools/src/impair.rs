//! The impairment model, sans-IO: a seeded PRNG, the per-packet decision
//! (drop, or hold for how long) and the queue of held packets ordered by
//! release time. No sockets and no clock here: time is a parameter (µs since
//! the tool started), so every rule is unit-tested deterministically.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// xorshift64* (Vigna 2016): tiny, fast, good enough for test impairments,
/// and the same seed gives the same sequence on every machine.
#[derive(Debug, Clone)]
pub struct XorShift64 {
    state: u64,
}

impl XorShift64 {
    pub fn new(seed: u64) -> Self {
        // The all-zero state is a fixed point of xorshift: map it elsewhere.
        // Mixing the seed once (splitmix64 finaliser) also makes seeds 1, 2, 3
        // start far apart.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        Self {
            state: if z == 0 { 0x2545_F491_4F6C_DD1D } else { z },
        }
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.state;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.state = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [0, 1) with 53 bits of precision.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// What to do to the traffic. Times in microseconds, shares in [0, 1].
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Impairment {
    pub delay_us: u64,
    /// Uniform jitter: the delay is `delay ± jitter`, never below zero.
    /// As in netem, jitter alone can reorder packets (the queue releases by
    /// time, not by arrival).
    pub jitter_us: u64,
    pub loss: f64,
    pub reorder: f64,
    /// Extra hold for the reordered share, so later packets overtake them.
    pub reorder_gap_us: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Drop,
    Hold { for_us: u64, reordered: bool },
}

impl Impairment {
    /// Decide the fate of one packet. Always draws exactly three numbers
    /// (loss, jitter, reorder) so that the loss pattern for a seed does not
    /// change when only the jitter or reorder settings change.
    pub fn decide(&self, rng: &mut XorShift64) -> Decision {
        let u_loss = rng.next_f64();
        let u_jitter = rng.next_f64();
        let u_reorder = rng.next_f64();
        if u_loss < self.loss {
            return Decision::Drop;
        }
        let mut hold = self.delay_us as i128;
        if self.jitter_us > 0 {
            // map [0,1) onto [-jitter, +jitter]
            let j = self.jitter_us as f64;
            hold += (u_jitter * 2.0 * j - j).round() as i128;
        }
        let reordered = u_reorder < self.reorder;
        if reordered {
            hold += self.reorder_gap_us as i128;
        }
        Decision::Hold {
            for_us: hold.max(0) as u64,
            reordered,
        }
    }
}

/// A packet waiting for its release time. Ties keep arrival order (`seq`).
struct Held<T> {
    due_us: u64,
    seq: u64,
    item: T,
}

impl<T> PartialEq for Held<T> {
    fn eq(&self, other: &Self) -> bool {
        (self.due_us, self.seq) == (other.due_us, other.seq)
    }
}
impl<T> Eq for Held<T> {}
impl<T> PartialOrd for Held<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<T> Ord for Held<T> {
    // BinaryHeap is a max-heap: reverse so the earliest release is on top.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.due_us, other.seq).cmp(&(self.due_us, self.seq))
    }
}

/// Packets on hold, released in order of due time (then arrival).
pub struct HoldQueue<T> {
    heap: BinaryHeap<Held<T>>,
    next_seq: u64,
    pub max_len: usize,
}

impl<T> Default for HoldQueue<T> {
    fn default() -> Self {
        Self {
            heap: BinaryHeap::new(),
            next_seq: 0,
            max_len: 0,
        }
    }
}

impl<T> HoldQueue<T> {
    pub fn push(&mut self, due_us: u64, item: T) {
        self.heap.push(Held {
            due_us,
            seq: self.next_seq,
            item,
        });
        self.next_seq += 1;
        self.max_len = self.max_len.max(self.heap.len());
    }

    /// The earliest due time, if anything is held.
    pub fn next_due(&self) -> Option<u64> {
        self.heap.peek().map(|h| h.due_us)
    }

    /// Pop one packet whose time has come: `(due_us, item)`.
    pub fn pop_due(&mut self, now_us: u64) -> Option<(u64, T)> {
        if self.heap.peek()?.due_us <= now_us {
            self.heap.pop().map(|h| (h.due_us, h.item))
        } else {
            None
        }
    }

    /// Pop the earliest packet regardless of its time (used at exit).
    pub fn pop_any(&mut self) -> Option<(u64, T)> {
        self.heap.pop().map(|h| (h.due_us, h.item))
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prng_repeats_for_a_seed_and_differs_between_seeds() {
        let a: Vec<u64> = {
            let mut r = XorShift64::new(42);
            (0..5).map(|_| r.next_u64()).collect()
        };
        let b: Vec<u64> = {
            let mut r = XorShift64::new(42);
            (0..5).map(|_| r.next_u64()).collect()
        };
        let c: Vec<u64> = {
            let mut r = XorShift64::new(43);
            (0..5).map(|_| r.next_u64()).collect()
        };
        assert_eq!(a, b);
        assert_ne!(a, c);
        // seed 0 must not be stuck at zero
        let mut z = XorShift64::new(0);
        assert!((0..10).any(|_| z.next_u64() != 0));
    }

    #[test]
    fn prng_f64_is_in_unit_interval_and_roughly_uniform() {
        let mut r = XorShift64::new(7);
        let n = 100_000;
        let mut below_half = 0;
        for _ in 0..n {
            let x = r.next_f64();
            assert!((0.0..1.0).contains(&x));
            if x < 0.5 {
                below_half += 1;
            }
        }
        let share = below_half as f64 / n as f64;
        assert!((share - 0.5).abs() < 0.01, "share below 0.5 = {share}");
    }

    #[test]
    fn loss_share_matches_the_setting() {
        let imp = Impairment {
            loss: 0.05,
            ..Default::default()
        };
        let mut r = XorShift64::new(1);
        let n = 100_000;
        let drops = (0..n)
            .filter(|_| imp.decide(&mut r) == Decision::Drop)
            .count();
        let share = drops as f64 / n as f64;
        assert!((share - 0.05).abs() < 0.005, "loss share = {share}");
    }

    #[test]
    fn delay_jitter_and_reorder_bounds() {
        let imp = Impairment {
            delay_us: 25_000,
            jitter_us: 5_000,
            reorder: 0.1,
            reorder_gap_us: 10_000,
            ..Default::default()
        };
        let mut r = XorShift64::new(9);
        let (mut reordered, n) = (0, 50_000);
        for _ in 0..n {
            match imp.decide(&mut r) {
                Decision::Drop => panic!("no loss configured"),
                Decision::Hold {
                    for_us,
                    reordered: true,
                } => {
                    reordered += 1;
                    assert!((30_000..=40_000).contains(&for_us), "{for_us}");
                }
                Decision::Hold { for_us, .. } => {
                    assert!((20_000..=30_000).contains(&for_us), "{for_us}")
                }
            }
        }
        let share = reordered as f64 / n as f64;
        assert!((share - 0.1).abs() < 0.01, "reorder share = {share}");
    }

    #[test]
    fn jitter_never_makes_a_negative_delay() {
        let imp = Impairment {
            delay_us: 1_000,
            jitter_us: 50_000,
            ..Default::default()
        };
        let mut r = XorShift64::new(3);
        let mut zero = 0;
        for _ in 0..10_000 {
            if let Decision::Hold { for_us: 0, .. } = imp.decide(&mut r) {
                zero += 1;
            }
        }
        assert!(zero > 0, "clamping to 0 should happen with jitter > delay");
    }

    #[test]
    fn loss_pattern_does_not_depend_on_jitter() {
        let a = Impairment {
            loss: 0.3,
            ..Default::default()
        };
        let b = Impairment {
            jitter_us: 7_000,
            reorder: 0.5,
            reorder_gap_us: 1,
            ..a
        };
        let (mut ra, mut rb) = (XorShift64::new(5), XorShift64::new(5));
        for _ in 0..1000 {
            let da = a.decide(&mut ra) == Decision::Drop;
            let db = b.decide(&mut rb) == Decision::Drop;
            assert_eq!(da, db);
        }
    }

    #[test]
    fn hold_queue_releases_by_time_then_arrival() {
        let mut q = HoldQueue::default();
        q.push(30, "c");
        q.push(10, "a");
        q.push(20, "b1");
        q.push(20, "b2");
        assert_eq!(q.next_due(), Some(10));
        assert_eq!(q.pop_due(9), None);
        assert_eq!(q.pop_due(25), Some((10, "a")));
        assert_eq!(q.pop_due(25), Some((20, "b1")));
        assert_eq!(q.pop_due(25), Some((20, "b2")));
        assert_eq!(q.pop_due(25), None);
        assert_eq!(q.len(), 1);
        assert_eq!(q.max_len, 4);
        assert_eq!(q.pop_any(), Some((30, "c")));
        assert!(q.is_empty());
    }

    #[test]
    fn reordered_packet_is_overtaken() {
        // packet 1 reordered by a 10 ms gap, packet 2 arrives 1 ms later
        let mut q = HoldQueue::default();
        q.push(25_000 + 10_000, 1);
        q.push(1_000 + 25_000, 2);
        assert_eq!(q.pop_any().map(|x| x.1), Some(2));
        assert_eq!(q.pop_any().map(|x| x.1), Some(1));
    }
}
