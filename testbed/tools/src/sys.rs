//! The few system calls netem-lite needs beyond the nfq crate: signal flag,
//! the network-namespace guard, finding the queue's netlink socket so it can
//! be polled with a sub-millisecond timeout, and the kernel's queue counters.

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicI32, Ordering};

use anyhow::{bail, Context, Result};

/// The signal that asked us to stop (0 = none yet).
static STOP_SIGNAL: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    // async-signal-safe: one atomic store
    STOP_SIGNAL.store(sig, Ordering::SeqCst);
}

/// SIGINT, SIGTERM and SIGHUP set the stop flag; the main loop sees it at its
/// next wake-up (ppoll returns EINTR, and the poll timeout is capped anyway).
pub fn install_stop_handlers() -> Result<()> {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: a zeroed sigaction plus a handler that only touches an atomic.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as *const () as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            sa.sa_flags = 0; // no SA_RESTART: interrupt ppoll
            if libc::sigaction(sig, &sa, std::ptr::null_mut()) != 0 {
                return Err(std::io::Error::last_os_error()).context("sigaction");
            }
        }
    }
    Ok(())
}

pub fn stop_signal() -> Option<i32> {
    match STOP_SIGNAL.load(Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}

/// Refuse to touch the host's own firewall: the tool is meant for the
/// testbed's namespaces. Fail closed: unless the caller opts out, our network
/// namespace must be one that `ip netns add` created (bind-mounted under
/// /run/netns), so the initial namespace is never changed by accident.
pub fn check_named_netns(allow_any: bool) -> Result<()> {
    if allow_any {
        return Ok(());
    }
    let me = std::fs::metadata("/proc/self/ns/net").context("reading /proc/self/ns/net")?;
    let named = std::fs::read_dir("/run/netns")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter_map(|e| std::fs::metadata(e.path()).ok())
                .any(|m| m.ino() == me.ino() && m.dev() == me.dev())
        })
        .unwrap_or(false);
    if !named {
        bail!(
            "not inside a named network namespace (none under /run/netns matches ours); \
             run it as `ip netns exec NS netem-lite ...`, or pass --allow-any-netns"
        );
    }
    Ok(())
}

/// Open file descriptors of this process.
pub fn open_fds() -> BTreeSet<i32> {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

fn sockopt_int(fd: i32, opt: libc::c_int) -> Option<i32> {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: valid pointer and length for an int option
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            opt,
            &mut v as *mut libc::c_int as *mut libc::c_void,
            &mut len,
        )
    };
    (r == 0).then_some(v)
}

/// The nfq crate does not expose its socket. This process opens no other
/// AF_NETLINK/NETLINK_NETFILTER socket, so the only one is the queue's.
pub fn find_netfilter_socket() -> Option<i32> {
    let found: Vec<i32> = open_fds()
        .into_iter()
        .filter(|&fd| {
            sockopt_int(fd, libc::SO_DOMAIN) == Some(libc::AF_NETLINK)
                && sockopt_int(fd, libc::SO_PROTOCOL) == Some(libc::NETLINK_NETFILTER)
        })
        .collect();
    match found.as_slice() {
        [fd] => Some(*fd),
        _ => None,
    }
}

/// Bigger receive buffer for bursts (SO_RCVBUFFORCE as root, else the capped
/// SO_RCVBUF). Best effort.
pub fn grow_rcvbuf(fd: i32, bytes: i32) {
    for opt in [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF] {
        // SAFETY: valid pointer and length for an int option
        let r = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                &bytes as *const i32 as *const libc::c_void,
                std::mem::size_of::<i32>() as libc::socklen_t,
            )
        };
        if r == 0 {
            return;
        }
    }
}

/// Sleep as exactly as the kernel can (the default 50 µs timer slack adds up
/// with the scheduler's latency). Best effort.
pub fn tight_timer_slack() {
    // SAFETY: PR_SET_TIMERSLACK takes one integer argument (nanoseconds)
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0);
    }
}

/// Run under SCHED_FIFO at `priority` (1..99): on a busy machine an ordinary
/// process can wait tens or hundreds of milliseconds for a CPU, and every
/// held packet would be that late. The loop sleeps almost all the time, and
/// the kernel's RT throttling (sched_rt_runtime_us) still bounds it.
pub fn set_realtime(priority: i32) -> Result<()> {
    let param = libc::sched_param {
        sched_priority: priority,
    };
    // SAFETY: pid 0 = this thread; a valid sched_param
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("SCHED_FIFO priority {priority}"));
    }
    Ok(())
}

/// Wait until `fd` is readable or `timeout_us` passed (or a signal came).
/// Returns true when readable.
pub fn wait_readable(fd: i32, timeout_us: u64) -> bool {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let ts = libc::timespec {
        tv_sec: (timeout_us / 1_000_000) as libc::time_t,
        tv_nsec: ((timeout_us % 1_000_000) * 1000) as libc::c_long,
    };
    // SAFETY: one valid pollfd, valid timespec, no signal mask change
    let r = unsafe { libc::ppoll(&mut pfd, 1, &ts, std::ptr::null()) };
    r > 0 && (pfd.revents & libc::POLLIN) != 0
}

/// Kernel counters of one queue, from /proc/net/netfilter/nfnetlink_queue
/// (this namespace's view): packets waiting, dropped because the queue was
/// full, dropped because the netlink socket was full.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct KernelQueueStats {
    pub waiting: u64,
    pub queue_dropped: u64,
    pub user_dropped: u64,
}

pub fn parse_queue_stats(text: &str, queue_num: u16) -> Option<KernelQueueStats> {
    // "queue portid waiting copy_mode copy_range queue_dropped user_dropped last_id 1"
    text.lines().find_map(|line| {
        let f: Vec<u64> = line
            .split_whitespace()
            .map(|x| x.parse().ok())
            .collect::<Option<_>>()?;
        (f.len() >= 7 && f[0] == queue_num as u64).then(|| KernelQueueStats {
            waiting: f[2],
            queue_dropped: f[5],
            user_dropped: f[6],
        })
    })
}

pub fn kernel_queue_stats(queue_num: u16) -> Option<KernelQueueStats> {
    let text = std::fs::read_to_string("/proc/net/netfilter/nfnetlink_queue").ok()?;
    parse_queue_stats(&text, queue_num)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_queue_lines() {
        let text = "    0  12345     0 2 65535     0     0        9  1\n  100  23456     4 1     0     7     3      100  1\n";
        assert_eq!(
            parse_queue_stats(text, 100),
            Some(KernelQueueStats {
                waiting: 4,
                queue_dropped: 7,
                user_dropped: 3
            })
        );
        assert_eq!(parse_queue_stats(text, 5), None);
        assert_eq!(parse_queue_stats("garbage line\n", 0), None);
    }
}
