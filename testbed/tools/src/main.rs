//! netem-lite: delay, loss and reordering for the netns testbed on kernels
//! without `tc netem` (CONFIG_NET_SCH_NETEM off, see DESIGN.md §3).
//!
//! One thread: packets come in through NFQUEUE (the nfq crate, non-blocking),
//! the sans-IO model in `impair` decides drop or hold-until, held packets wait
//! in a binary heap ordered by release time, and their ACCEPT verdict is sent
//! when the time comes. The kernel keeps the packet meanwhile; only its
//! metadata (copy range 0) crosses into userspace.

mod cli;
mod impair;
mod rule;
mod sys;

use std::io::ErrorKind;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nfq::{Message, Queue, Verdict};

use crate::cli::{Options, Parsed};
use crate::impair::{Decision, HoldQueue, XorShift64};
use crate::rule::QueueRule;

/// Longest sleep between checks of the stop flag and the deadline.
const MAX_WAIT_US: u64 = 50_000;
/// Fallback sleep when the queue's socket could not be found for polling.
const SPIN_WAIT_US: u64 = 200;
/// Receive at most this many packets before releasing due ones again, so a
/// burst cannot delay releases by more than a few hundred microseconds.
const RECV_BATCH: usize = 256;

/// Release lateness histogram: 100 µs buckets up to 20 ms.
const LAG_BUCKET_US: u64 = 100;
const LAG_BUCKETS: usize = 200;

#[derive(Debug)]
struct Counters {
    packets: u64,
    released: u64,
    dropped: u64,
    reordered: u64,
    flushed_at_exit: u64,
    verdict_errors: u64,
    recv_errors: u64,
    max_held: usize,
    lag_hist: Vec<u64>,
    lag_max_us: u64,
    lag_sum_us: u64,
}

impl Counters {
    fn new() -> Self {
        Self {
            packets: 0,
            released: 0,
            dropped: 0,
            reordered: 0,
            flushed_at_exit: 0,
            verdict_errors: 0,
            recv_errors: 0,
            max_held: 0,
            lag_hist: vec![0; LAG_BUCKETS + 1],
            lag_max_us: 0,
            lag_sum_us: 0,
        }
    }

    fn record_lag(&mut self, lag_us: u64) {
        let b = ((lag_us / LAG_BUCKET_US) as usize).min(LAG_BUCKETS);
        self.lag_hist[b] += 1;
        self.lag_max_us = self.lag_max_us.max(lag_us);
        self.lag_sum_us += lag_us;
    }

    /// Upper edge of the bucket holding quantile `q` of the release lateness.
    fn lag_quantile_us(&self, q: f64) -> u64 {
        let n: u64 = self.lag_hist.iter().sum();
        if n == 0 {
            return 0;
        }
        let target = ((n as f64) * q).ceil().max(1.0) as u64;
        let mut acc = 0;
        for (i, c) in self.lag_hist.iter().enumerate() {
            acc += c;
            if acc >= target {
                return if i == LAG_BUCKETS {
                    self.lag_max_us
                } else {
                    (i as u64 + 1) * LAG_BUCKET_US
                };
            }
        }
        self.lag_max_us
    }
}

struct Engine {
    queue: Queue,
    held: HoldQueue<Message>,
    rng: XorShift64,
    opts: Options,
    start: Instant,
    c: Counters,
}

impl Engine {
    fn now_us(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }

    fn verdict(&mut self, mut msg: Message, v: Verdict) {
        msg.set_verdict(v);
        if self.queue.verdict(msg).is_err() {
            self.c.verdict_errors += 1;
        }
    }

    /// Decide one newly queued packet.
    fn on_packet(&mut self, msg: Message) {
        self.c.packets += 1;
        match self.opts.impairment.decide(&mut self.rng) {
            Decision::Drop => {
                self.c.dropped += 1;
                self.verdict(msg, Verdict::Drop);
            }
            Decision::Hold { for_us, reordered } => {
                if reordered {
                    self.c.reordered += 1;
                }
                let due = self.now_us() + for_us;
                self.held.push(due, msg);
                self.c.max_held = self.c.max_held.max(self.held.len());
            }
        }
    }

    /// Send ACCEPT for every held packet whose time has come.
    fn release_due(&mut self) {
        if self.held.is_empty() {
            return;
        }
        let now = self.now_us();
        while let Some((due, msg)) = self.held.pop_due(now) {
            self.c.record_lag(now - due);
            self.c.released += 1;
            self.verdict(msg, Verdict::Accept);
        }
    }

    /// Receive what is waiting (non-blocking), at most `RECV_BATCH` packets.
    /// With `flush` set, packets are accepted at once instead of impaired.
    fn receive(&mut self, flush: bool) -> usize {
        let mut n = 0;
        while n < RECV_BATCH {
            match self.queue.recv() {
                Ok(msg) => {
                    n += 1;
                    if flush {
                        self.c.flushed_at_exit += 1;
                        self.verdict(msg, Verdict::Accept);
                    } else {
                        self.on_packet(msg);
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => break,
                Err(_) => {
                    self.c.recv_errors += 1;
                    break;
                }
            }
        }
        n
    }
}

/// How a run ended.
struct Outcome {
    counters: Counters,
    reason: String,
    kernel: Option<sys::KernelQueueStats>,
}

fn run(opts: Options) -> Result<Outcome> {
    sys::check_named_netns(opts.allow_any_netns)?;
    sys::install_stop_handlers()?;
    sys::tight_timer_slack();
    if let Some(prio) = opts.rt_priority {
        sys::set_realtime(prio)?;
    }

    let mut queue =
        Queue::open().context("opening the NFQUEUE netlink socket (needs root / CAP_NET_ADMIN)")?;
    let poll_fd = sys::find_netfilter_socket();
    let qn = opts.queue_num;
    queue
        .bind(qn)
        .with_context(|| format!("binding NFQUEUE {qn} (is another program bound to it?)"))?;
    // metadata only: we never look at or change the bytes
    queue.set_copy_range(qn, 0).context("setting copy range")?;
    queue
        .set_queue_max_len(qn, opts.limit)
        .context("setting the queue length")?;
    queue.set_nonblocking(true);
    if let Some(fd) = poll_fd {
        sys::grow_rcvbuf(fd, 8 << 20);
    }

    let mut rule = QueueRule::new(&opts.iptables, &opts.chain, opts.rule_match(), qn);
    rule.install()?;
    if !opts.quiet {
        let i = &opts.impairment;
        eprintln!(
            "netem-lite: {}; delay {} ms jitter {} ms loss {}% reorder {}% gap {} ms seed {}; \
             for {} s{}",
            rule.describe(),
            i.delay_us as f64 / 1000.0,
            i.jitter_us as f64 / 1000.0,
            i.loss * 100.0,
            i.reorder * 100.0,
            i.reorder_gap_us as f64 / 1000.0,
            opts.seed,
            opts.duration_s,
            if poll_fd.is_none() {
                " (socket not found: polling by sleep)"
            } else {
                ""
            }
        );
    }

    let deadline = Duration::from_secs(opts.duration_s);
    let mut eng = Engine {
        queue,
        held: HoldQueue::default(),
        rng: XorShift64::new(opts.seed),
        opts,
        start: Instant::now(),
        c: Counters::new(),
    };

    let reason = loop {
        if let Some(sig) = sys::stop_signal() {
            break format!("signal {sig}");
        }
        let elapsed = eng.start.elapsed();
        if elapsed >= deadline {
            break "duration reached".to_string();
        }
        eng.release_due();
        if eng.receive(false) == RECV_BATCH {
            continue; // more waiting: do not sleep
        }
        eng.release_due();
        let now = eng.now_us();
        let until_deadline = (deadline - elapsed).as_micros() as u64;
        let mut wait = MAX_WAIT_US.min(until_deadline);
        if let Some(due) = eng.held.next_due() {
            wait = wait.min(due.saturating_sub(now));
        }
        match poll_fd {
            Some(fd) => {
                if wait > 0 {
                    sys::wait_readable(fd, wait);
                }
            }
            None => std::thread::sleep(Duration::from_micros(wait.min(SPIN_WAIT_US))),
        }
    };

    // Stop new packets first, then let through what is still queued or held
    // (closing the socket would make the kernel drop them).
    let remove_result = rule.remove();
    while eng.receive(true) > 0 {}
    while let Some((_, msg)) = eng.held.pop_any() {
        eng.c.flushed_at_exit += 1;
        eng.verdict(msg, Verdict::Accept);
    }
    let kq = sys::kernel_queue_stats(qn);
    let _ = eng.queue.unbind(qn);
    remove_result?;
    let mut counters = eng.c;
    counters.max_held = counters.max_held.max(eng.held.max_len);
    Ok(Outcome {
        counters,
        reason,
        kernel: kq,
    })
}

fn report(out: &Outcome, json: bool) {
    let (c, reason) = (&out.counters, &out.reason);
    // packets the kernel dropped because the queue (--limit) or our socket was full
    let (kq_full, kq_sock) = match out.kernel {
        Some(k) => (k.queue_dropped.to_string(), k.user_dropped.to_string()),
        None => ("null".into(), "null".into()),
    };
    let ms = |us: u64| us as f64 / 1000.0;
    let mean = if c.released > 0 {
        c.lag_sum_us as f64 / c.released as f64 / 1000.0
    } else {
        0.0
    };
    let loss_pct = if c.packets > 0 {
        100.0 * c.dropped as f64 / c.packets as f64
    } else {
        0.0
    };
    if json {
        println!(
            "{{\"exit\":\"{reason}\",\"packets\":{},\"released\":{},\"dropped\":{},\
             \"reordered\":{},\"flushed_at_exit\":{},\"max_held\":{},\"verdict_errors\":{},\
             \"recv_errors\":{},\"lag_mean_ms\":{:.3},\"lag_p50_ms\":{:.1},\"lag_p99_ms\":{:.1},\
             \"lag_max_ms\":{:.3},\"kernel_queue_full_drops\":{kq_full},\
             \"kernel_socket_full_drops\":{kq_sock}}}",
            c.packets,
            c.released,
            c.dropped,
            c.reordered,
            c.flushed_at_exit,
            c.max_held,
            c.verdict_errors,
            c.recv_errors,
            mean,
            ms(c.lag_quantile_us(0.5)),
            ms(c.lag_quantile_us(0.99)),
            ms(c.lag_max_us),
        );
    } else {
        println!(
            "netem-lite: exit ({reason}): packets {} released {} dropped {} ({loss_pct:.2}%) \
             reordered {} flushed-at-exit {} max-held {}; release lateness mean {mean:.3} ms \
             p50 <{:.1} ms p99 <{:.1} ms max {:.3} ms; errors verdict {} recv {}; kernel drops \
             queue-full {kq_full} socket-full {kq_sock}",
            c.packets,
            c.released,
            c.dropped,
            c.reordered,
            c.flushed_at_exit,
            c.max_held,
            ms(c.lag_quantile_us(0.5)),
            ms(c.lag_quantile_us(0.99)),
            ms(c.lag_max_us),
            c.verdict_errors,
            c.recv_errors,
        );
    }
}

fn main() -> ExitCode {
    let opts = match cli::parse(std::env::args().skip(1)) {
        Ok(Parsed::Help) => {
            print!("{}", cli::USAGE);
            return ExitCode::SUCCESS;
        }
        Ok(Parsed::Run(o)) => *o,
        Err(e) => {
            eprintln!("netem-lite: {e:#}");
            return ExitCode::from(2);
        }
    };
    let json = opts.json;
    match run(opts) {
        Ok(out) => {
            report(&out, json);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("netem-lite: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_quantiles() {
        let mut c = Counters::new();
        for _ in 0..98 {
            c.record_lag(50);
        }
        c.record_lag(1_550);
        c.record_lag(30_000);
        assert_eq!(c.lag_quantile_us(0.5), 100);
        assert_eq!(c.lag_quantile_us(0.99), 1_600);
        assert_eq!(c.lag_quantile_us(1.0), 30_000);
        assert_eq!(c.lag_max_us, 30_000);
    }
}
