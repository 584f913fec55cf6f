//! Resource bounds (`[limits]`): every queue and table a stranger can fill
//! has a configured maximum, is enforced, and counts what it turns away
//! (hardening issue: "resource bounds … all configured, all enforced,
//! overflow counted"). ALG flows and pinholes are bounded by the ALG.

use std::path::Path;

use serde::Deserialize;

use crate::config::ConfigError;

/// `[limits]` as written in the file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    #[serde(default = "default_max_pending")]
    max_pending: u32,
    #[serde(default = "default_gate_queue_len")]
    gate_queue_len: u32,
    #[serde(default = "default_dns_tcp_connections")]
    dns_tcp_connections: u32,
    #[serde(default = "default_dns_udp_batch")]
    dns_udp_batch: u32,
}

impl Default for RawLimits {
    fn default() -> Self {
        RawLimits {
            max_pending: default_max_pending(),
            gate_queue_len: default_gate_queue_len(),
            dns_tcp_connections: default_dns_tcp_connections(),
            dns_udp_batch: default_dns_udp_batch(),
        }
    }
}

fn default_max_pending() -> u32 {
    65536
}
fn default_gate_queue_len() -> u32 {
    4096
}
fn default_dns_tcp_connections() -> u32 {
    256
}
fn default_dns_udp_batch() -> u32 {
    32
}

/// The validated bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitsConfig {
    /// Pending reservations in the whole pool (FQDN and SFQDN); beyond it a
    /// query is denied as if the pool were exhausted and counted in
    /// `denied_pending_limit`. Reloadable.
    pub max_pending: u32,
    /// First packets waiting in the NFQUEUE for the gate; the kernel drops
    /// the ones beyond it (the client retransmits its SYN) and counts them,
    /// exported as `gate_queue_dropped`. Needs a restart.
    pub gate_queue_len: u32,
    /// Open DNS-over-TCP connections per listener (public and private view
    /// each); a connection beyond it is closed at once and counted in
    /// `dns_tcp_refused`. Reloadable.
    pub dns_tcp_connections: u32,
    /// Queries a public UDP worker answers together under one pool lock and
    /// one netlink batch. Needs a restart.
    pub dns_udp_batch: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_pending: default_max_pending(),
            gate_queue_len: default_gate_queue_len(),
            dns_tcp_connections: default_dns_tcp_connections(),
            dns_udp_batch: default_dns_udp_batch(),
        }
    }
}

fn out_of_range(file: &Path, key: &str, range: &str, found: u32) -> ConfigError {
    ConfigError::Invalid {
        file: file.to_path_buf(),
        key: format!("limits.{key}"),
        expected: format!("an integer in {range}"),
        found: found.to_string(),
    }
}

/// Checks `[limits]`: every bound is at least 1 (a zero would stop the
/// service, not bound it) and small enough to allocate.
pub fn validate(file: &Path, raw: RawLimits) -> Result<LimitsConfig, ConfigError> {
    let check = |key: &str, v: u32, max: u32| {
        if v == 0 || v > max {
            Err(out_of_range(file, key, &format!("1..={max}"), v))
        } else {
            Ok(v)
        }
    };
    Ok(LimitsConfig {
        max_pending: check("max_pending", raw.max_pending, 1 << 24)?,
        // The kernel's own ceiling for an nfnetlink queue is far larger; a
        // queue longer than this only adds latency to first packets.
        gate_queue_len: check("gate_queue_len", raw.gate_queue_len, 1 << 20)?,
        dns_tcp_connections: check("dns_tcp_connections", raw.dns_tcp_connections, 65536)?,
        // Each worker keeps one 4 KiB buffer per batch slot.
        dns_udp_batch: check("dns_udp_batch", raw.dns_udp_batch, 1024)?,
    })
}

/// Counters of one NFQUEUE from `/proc/net/netfilter/nfnetlink_queue`
/// (one line per bound queue: `queue_num portid queue_total copy_mode
/// copy_range queue_dropped user_dropped id_sequence 1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueueCounters {
    /// Packets waiting now.
    pub waiting: u64,
    /// Dropped by the kernel because the queue was full.
    pub queue_dropped: u64,
    /// Dropped because the daemon's netlink socket was full.
    pub user_dropped: u64,
}

/// Parses the line of `queue_num` from the text of
/// `/proc/net/netfilter/nfnetlink_queue`; None when the queue is not bound.
pub fn parse_nfqueue_proc(text: &str, queue_num: u16) -> Option<QueueCounters> {
    text.lines().find_map(|line| {
        let f: Vec<u64> = line
            .split_whitespace()
            .map(str::parse)
            .collect::<Result<_, _>>()
            .ok()?;
        if f.len() < 7 || f[0] != u64::from(queue_num) {
            return None;
        }
        Some(QueueCounters {
            waiting: f[2],
            queue_dropped: f[5],
            user_dropped: f[6],
        })
    })
}

/// Reads the counters of `queue_num` in the calling thread's network namespace.
pub fn read_nfqueue(queue_num: u16) -> Option<QueueCounters> {
    let text = std::fs::read_to_string("/proc/net/netfilter/nfnetlink_queue").ok()?;
    parse_nfqueue_proc(&text, queue_num)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_bounds() {
        let d = validate(Path::new("x.toml"), RawLimits::default()).expect("defaults are valid");
        assert_eq!(d, LimitsConfig::default());
        assert_eq!(d.gate_queue_len, 4096);
        let zero = RawLimits {
            dns_tcp_connections: 0,
            ..RawLimits::default()
        };
        let e = validate(Path::new("x.toml"), zero).expect_err("zero is refused");
        assert!(e.to_string().contains("limits.dns_tcp_connections"), "{e}");
        let big = RawLimits {
            dns_udp_batch: 5000,
            ..RawLimits::default()
        };
        let e = validate(Path::new("x.toml"), big).expect_err("too large");
        assert!(e.to_string().contains("1..=1024"), "{e}");
    }

    #[test]
    fn nfqueue_proc_lines() {
        let text = "    0  12345     7 2 65535   120     3  991  1\n    5  999     0 2 128     0     0  10  1\n";
        assert_eq!(
            parse_nfqueue_proc(text, 0),
            Some(QueueCounters {
                waiting: 7,
                queue_dropped: 120,
                user_dropped: 3
            })
        );
        assert_eq!(
            parse_nfqueue_proc(text, 5).map(|c| c.queue_dropped),
            Some(0)
        );
        assert_eq!(parse_nfqueue_proc(text, 1), None);
        assert_eq!(parse_nfqueue_proc("garbage\n1 2\n", 1), None);
        assert_eq!(parse_nfqueue_proc("", 0), None);
    }
}
