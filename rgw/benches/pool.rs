//! Micro-benchmarks of the Circular Pool (sans-IO, no kernel involved).
//!
//! Every bench uses a /16 pool (65,536 addresses) with Tmax = 2 s. Time is an
//! input: each bench keeps a base `Instant` and an offset that it advances by
//! itself (1 µs per operation), so runs are deterministic and no real clock
//! is read inside the pool.
//!
//! No bench lets state grow across iterations: what an iteration reserves it
//! also claims or expires. Benches with a standing set of pending
//! reservations ("background") renew it, outside the timed region, before
//! simulated time would reach its expiry.

use std::hint::black_box;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use rgw::pool::{CircularPool, Proto, ReserveRequest, Service};

const POOL_SIZE: u32 = 65_536;
const TMAX: Duration = Duration::from_secs(2);
/// Simulated time between two measured operations.
const STEP: Duration = Duration::from_micros(1);
const TCP: u8 = 6;

/// 100.64.0.0/16.
fn new_pool() -> CircularPool {
    CircularPool::new(
        (0..POOL_SIZE).map(|i| Ipv4Addr::from(0x6440_0000 + i)),
        TMAX,
    )
}

fn fqdn(host: usize) -> ReserveRequest {
    ReserveRequest {
        host,
        service: None,
        host_limit: 0,
    }
}

fn sfqdn(host: usize, proto: Proto, port: u16) -> ReserveRequest {
    ReserveRequest {
        host,
        service: Some(Service { proto, port }),
        host_limit: 0,
    }
}

/// Simulated time: a base instant plus an offset the bench advances.
struct Clock {
    base: Instant,
    offset: Duration,
}

impl Clock {
    fn new() -> Self {
        Clock {
            base: Instant::now(),
            offset: Duration::ZERO,
        }
    }

    fn now(&self) -> Instant {
        self.base + self.offset
    }

    fn advance(&mut self, d: Duration) {
        self.offset += d;
    }
}

/// Reserves `req` at `now` and claims it with the first packet a client
/// would send: `(proto, port)` for an SFQDN, TCP/443 for an FQDN (which
/// matches any protocol). Panics if the pool does not hand the reservation
/// back, so a broken bench cannot silently measure the wrong path.
#[inline]
fn reserve_and_claim(pool: &mut CircularPool, req: ReserveRequest, now: Instant) {
    let r = pool
        .reserve(black_box(req), now)
        .expect("the pool has room for the measured reservation");
    let (proto, port) = match r.service {
        Some(s) => (s.proto.number(), s.port),
        None => (TCP, 443),
    };
    let claimed = pool.claim(black_box(r.addr), proto, Some(port), now);
    assert_eq!(claimed.map(|c| c.id), Some(r.id), "claim releases it");
}

/// A pool holding a standing set of pending reservations, renewed before it
/// expires, plus the simulated clock.
struct Loaded {
    pool: CircularPool,
    clock: Clock,
    make_background: fn(&mut CircularPool, Instant),
    /// When the current background expires.
    bg_expires: Instant,
}

impl Loaded {
    fn new(make_background: fn(&mut CircularPool, Instant)) -> Self {
        let mut pool = new_pool();
        let clock = Clock::new();
        make_background(&mut pool, clock.now());
        Loaded {
            pool,
            bg_expires: clock.now() + TMAX,
            clock,
            make_background,
        }
    }

    /// How many `STEP`s can be taken before the background expires, keeping
    /// one step of margin. When none can, lets the background expire and
    /// builds a new one first (untimed).
    fn steps_left(&mut self) -> u64 {
        let left = self.bg_expires.saturating_duration_since(self.clock.now());
        let steps = (left.as_nanos() / STEP.as_nanos()).saturating_sub(1);
        if steps > 0 {
            return u64::try_from(steps).unwrap_or(u64::MAX);
        }
        self.clock.advance(TMAX + STEP);
        let now = self.clock.now();
        let expired = self.pool.expire(now);
        assert!(!expired.is_empty(), "the background expired");
        assert_eq!(self.pool.stats().pending, 0, "nothing else was pending");
        (self.make_background)(&mut self.pool, now);
        self.bg_expires = now + TMAX;
        self.steps_left()
    }

    /// Runs `op` `iters` times, one `STEP` apart, and returns the time spent
    /// in `op` only (background renewals are not timed).
    fn run(&mut self, iters: u64, mut op: impl FnMut(&mut CircularPool, Instant)) -> Duration {
        let mut total = Duration::ZERO;
        let mut left = iters;
        while left > 0 {
            let n = left.min(self.steps_left());
            let start = Instant::now();
            for _ in 0..n {
                self.clock.advance(STEP);
                op(&mut self.pool, self.clock.now());
            }
            total += start.elapsed();
            left -= n;
        }
        total
    }
}

/// 1,000 addresses shared by `tcp443` (one reservation each), the first 16
/// of which also hold `tcp22`.
fn shared_background(pool: &mut CircularPool, now: Instant) {
    for h in 0..1_000 {
        pool.reserve(sfqdn(1 + h, Proto::Tcp, 443), now)
            .expect("room for the background");
    }
    for h in 0..16 {
        pool.reserve(sfqdn(2_000 + h, Proto::Tcp, 22), now)
            .expect("room for the background");
    }
    let s = pool.stats();
    debug_assert_eq!((s.shared, s.pending), (1_000, 1_016));
}

/// 10,000 pending reservations over 1,000 hosts, a quarter of each kind:
/// FQDN, `tcp22` (a popular service: every one needs its own address), `udp`
/// on 7 ports and `tcp` on 1,024 ports (these pack onto shared addresses).
fn load_background(pool: &mut CircularPool, now: Instant) {
    for i in 0..10_000u16 {
        let host = 1 + usize::from(i % 1_000);
        let req = match i % 4 {
            0 => fqdn(host),
            1 => sfqdn(host, Proto::Tcp, 22),
            2 => sfqdn(host, Proto::Udp, 1 + i % 7),
            _ => sfqdn(host, Proto::Tcp, 1_024 + i % 1_024),
        };
        pool.reserve(req, now).expect("room for the background");
    }
    debug_assert_eq!(pool.stats().pending, 10_000);
}

fn pool_benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("pool");

    // (a) Steady state: an FQDN reservation and the flow that claims it.
    // State lives outside the closure, which criterion calls once per
    // sample: one pool serves the warm-up and every sample.
    let mut pool = new_pool();
    let mut clock = Clock::new();
    g.bench_function("reserve_fqdn_claim", |b| {
        b.iter(|| {
            clock.advance(STEP);
            reserve_and_claim(&mut pool, fqdn(0), clock.now());
        });
    });
    assert_eq!(pool.stats().pending, 0);

    // (b) An SFQDN reservation that lands on an already shared address:
    // 1,000 addresses are shared, the first 16 already hold tcp22, so the
    // reservation skips 16 of them (rule 3), then it is claimed.
    let mut loaded = Loaded::new(shared_background);
    g.bench_function("reserve_sfqdn_shared_claim", |b| {
        b.iter_custom(|iters| {
            loaded.run(iters, |pool, now| {
                reserve_and_claim(pool, sfqdn(0, Proto::Tcp, 22), now);
            })
        });
    });
    assert_eq!(loaded.pool.stats().shared, 1_000, "took no new address");

    // (c) A reservation nobody claims: time passes Tmax and `expire`
    // returns it. A fresh pool and clock.
    pool = new_pool();
    clock = Clock::new();
    g.bench_function("reserve_expire", |b| {
        b.iter(|| {
            let r = pool
                .reserve(black_box(fqdn(0)), clock.now())
                .expect("the pool has room");
            clock.advance(TMAX + STEP);
            let expired = pool.expire(clock.now());
            debug_assert_eq!(expired.len(), 1);
            black_box((r, expired))
        });
    });
    assert_eq!(pool.stats().pending, 0);

    // (d) One reserve + claim while 10,000 reservations are pending.
    let cases = [
        ("under_load_10k_fqdn", fqdn(0)),
        // 2,500 tcp22 reservations are pending, each on its own shared
        // address: the walk of rule 3 skips every one of them.
        ("under_load_10k_sfqdn_tcp22", sfqdn(0, Proto::Tcp, 22)),
        // Not pending anywhere: the first shared address takes it.
        ("under_load_10k_sfqdn_udp5060", sfqdn(0, Proto::Udp, 5060)),
    ];
    for (name, req) in cases {
        let mut loaded = Loaded::new(load_background);
        g.bench_function(name, |b| {
            b.iter_custom(|iters| loaded.run(iters, |pool, now| reserve_and_claim(pool, req, now)));
        });
        assert_eq!(loaded.pool.stats().pending, 10_000, "only the background");
    }
    g.finish();
}

criterion_group!(benches, pool_benches);
criterion_main!(benches);
