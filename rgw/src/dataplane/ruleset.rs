//! The nftables ruleset `rgw` owns, as text for `nft -f` (set-up time only;
//! per-query changes go through [`super::nlset`]).
//!
//! Inbound first packets (DESIGN.md §3, §6):
//! ```text
//!  prerouting  -160 gate      to a pool address: established/related/claimed → accept;
//!                             ct new + reserved (resv_svc, then resv_addr) → mark RQ, queue
//!                             anything else → counted drop in the kernel (property 5)
//!              -150 (xt mode) iptables-nft mangle: mark RQ → NFQUEUE --queue-bypass
//!              -140 gate_tail mark still RQ (no daemon bound: bypass) → counted drop
//!              -100 dstnat    mark RC|host → dnat to host (mark → address map)
//! ```
//! The daemon answers each queued first packet in order, so one reservation
//! admits exactly one flow even when first packets from several sources race
//! (property 1). Reservations are set elements with timeouts: they expire in
//! the kernel without the daemon (property 2). After the claim conntrack
//! carries the flow and no packet of it reaches userspace again (property 3).

use std::fmt::Write;
use std::net::Ipv4Addr;

use crate::config::Config;

/// Mark of a first packet waiting for the daemon's decision ("RQ").
pub const MARK_QUEUED: u32 = 0x5251_0000;
/// High half of the mark the daemon sets on a claimed first packet ("RC");
/// the low half is the host index + 1.
pub const MARK_CLAIMED_TAG: u32 = 0x5243_0000;

pub const SET_POOL: &str = "pool";
pub const SET_RESV_ADDR: &str = "resv_addr";
pub const SET_RESV_SVC: &str = "resv_svc";
pub const MAP_HOST_BY_MARK: &str = "host_by_mark";
pub const COUNTER_UNRESERVED: &str = "unreserved";
pub const COUNTER_NO_DAEMON: &str = "no_daemon";
pub const COUNTER_FORWARD_DROP: &str = "forward_drop";

/// Mark the daemon gives a claimed first packet of host `idx`.
pub fn claim_mark(host_idx: usize) -> u32 {
    MARK_CLAIMED_TAG | ((host_idx as u32 + 1) & 0xffff)
}

/// How queued packets reach userspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueVia {
    /// `queue num N bypass` in our own chain.
    Nft,
    /// Our chain only marks; an iptables-nft NFQUEUE rule queues.
    Xt,
}

/// Merges a sorted address list into inclusive ranges.
pub fn ranges(addrs: &[Ipv4Addr]) -> Vec<(Ipv4Addr, Ipv4Addr)> {
    let mut out: Vec<(Ipv4Addr, Ipv4Addr)> = Vec::new();
    for &a in addrs {
        match out.last_mut() {
            Some((_, end)) if u32::from(*end).checked_add(1) == Some(u32::from(a)) => *end = a,
            _ => out.push((a, a)),
        }
    }
    out
}

/// Object declarations (idempotent `add`s). Reservation sets keep their
/// elements: they are only flushed explicitly.
fn declare_objects(out: &mut String, t: &str) {
    let _ = writeln!(out, "add table ip {t}");
    let _ = writeln!(
        out,
        "add set ip {t} {SET_POOL} {{ type ipv4_addr; flags interval; auto-merge; }}"
    );
    let _ = writeln!(
        out,
        "add set ip {t} {SET_RESV_ADDR} {{ type ipv4_addr; flags timeout; }}"
    );
    let _ = writeln!(
        out,
        "add set ip {t} {SET_RESV_SVC} {{ type ipv4_addr . inet_proto . inet_service; flags timeout; }}"
    );
    let _ = writeln!(
        out,
        "add map ip {t} {MAP_HOST_BY_MARK} {{ type mark : ipv4_addr; }}"
    );
    for c in [COUNTER_UNRESERVED, COUNTER_NO_DAEMON, COUNTER_FORWARD_DROP] {
        let _ = writeln!(out, "add counter ip {t} {c}");
    }
}

/// The whole desired state as one nft transaction. Applied over an existing
/// table it reconciles: objects are kept (counters keep counting), the pool
/// and host map are rewritten, chains are flushed and refilled, and the
/// reservation sets are emptied because a new daemon has no memory of them.
pub fn render(cfg: &Config, via: QueueVia) -> String {
    let t = &cfg.dataplane.table;
    let wan = &cfg.wan.interface;
    let lan = &cfg.lan.interface;
    let mut out = String::new();
    declare_objects(&mut out, t);

    let _ = writeln!(out, "flush set ip {t} {SET_POOL}");
    let pool: Vec<String> = ranges(&cfg.pool.addresses)
        .into_iter()
        .map(|(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}-{b}")
            }
        })
        .collect();
    for chunk in pool.chunks(512) {
        let _ = writeln!(
            out,
            "add element ip {t} {SET_POOL} {{ {} }}",
            chunk.join(", ")
        );
    }
    let _ = writeln!(out, "flush set ip {t} {SET_RESV_ADDR}");
    let _ = writeln!(out, "flush set ip {t} {SET_RESV_SVC}");
    out.push_str(&render_host_map(cfg));

    let queue = match via {
        QueueVia::Nft => format!("queue num {} bypass", cfg.dataplane.queue_num),
        QueueVia::Xt => "accept".to_string(),
    };
    let chains: [(&str, &str, Vec<String>); 5] = [
        (
            "gate",
            "type filter hook prerouting priority -160; policy accept;",
            vec![
                format!("ip daddr != @{SET_POOL} return"),
                "ct state established,related accept".into(),
                // A claimed flow whose reply has not been seen yet is still `new`
                // (conntrack), e.g. a retransmitted SYN: its NAT binding exists.
                "ct status dnat accept".into(),
                format!(
                    "ct state new meta l4proto {{ tcp, udp }} ip daddr . meta l4proto . th dport @{SET_RESV_SVC} meta mark set {MARK_QUEUED:#010x} {queue}"
                ),
                format!("ct state new ip daddr @{SET_RESV_ADDR} meta mark set {MARK_QUEUED:#010x} {queue}"),
                format!("counter name {COUNTER_UNRESERVED} drop"),
            ],
        ),
        (
            "gate_tail",
            "type filter hook prerouting priority -140; policy accept;",
            vec![format!("meta mark {MARK_QUEUED:#010x} counter name {COUNTER_NO_DAEMON} drop")],
        ),
        (
            "dstnat",
            "type nat hook prerouting priority dstnat; policy accept;",
            vec![format!(
                "meta mark & 0xffff0000 == {MARK_CLAIMED_TAG:#010x} dnat to meta mark map @{MAP_HOST_BY_MARK}"
            )],
        ),
        (
            "srcnat",
            "type nat hook postrouting priority srcnat; policy accept;",
            // RGW64: IPv4 leaving the translator carries a pool4 source (an IPv6
            // host's proxy address): it leaves through the same outbound NAT.
            vec![format!(
                "oifname \"{wan}\" ip saddr {} snat to {}",
                match &cfg.rgw64 {
                    Some(r) => format!("{{ {}, {} }}", cfg.lan.network, r.pool4),
                    None => cfg.lan.network.to_string(),
                },
                cfg.wan.service_address
            )],
        ),
        (
            "forward",
            "type filter hook forward priority filter; policy accept;",
            // Address- and port-dependent filtering (RFC 4787 §5): inbound only
            // for conntrack replies and for flows a reservation admitted.
            vec![
                "ct state established,related accept".into(),
                "ct state invalid drop".into(),
                format!("iifname \"{lan}\" oifname \"{wan}\" accept"),
                format!("iifname \"{wan}\" oifname \"{lan}\" ct status dnat accept"),
            ]
            .into_iter()
            .chain(cfg.rgw64.as_ref().map(|r| {
                // A claim for an IPv6-only host DNATs to its proxy IPv4, routed into the TUN.
                format!("iifname \"{wan}\" oifname \"{}\" ct status dnat accept", r.tun)
            }))
            .chain([format!(
                "iifname \"{wan}\" counter name {COUNTER_FORWARD_DROP} drop"
            )])
            .collect(),
        ),
    ];
    for (name, hook, rules) in chains {
        let _ = writeln!(out, "add chain ip {t} {name} {{ {hook} }}");
        let _ = writeln!(out, "flush chain ip {t} {name}");
        for r in rules {
            let _ = writeln!(out, "add rule ip {t} {name} {r}");
        }
    }
    out
}

/// The mark → host address map, rewritten in one transaction (also on reload).
/// Vacant slots (hosts removed by a reload) get no entry.
pub fn render_host_map(cfg: &Config) -> String {
    let t = &cfg.dataplane.table;
    let mut out = format!("flush map ip {t} {MAP_HOST_BY_MARK}\n");
    let elems: Vec<String> = cfg
        .hosts
        .iter()
        .enumerate()
        .filter(|(_, h)| !h.name.is_empty())
        .map(|(i, h)| format!("{:#010x} : {}", claim_mark(i), h.ipv4))
        .collect();
    if !elems.is_empty() {
        let _ = writeln!(
            out,
            "add element ip {t} {MAP_HOST_BY_MARK} {{ {} }}",
            elems.join(", ")
        );
    }
    out
}

/// Replaces the table wholesale (used when reconciling failed, e.g. after an
/// upgrade changed a set's type): still one transaction.
pub fn render_replace(cfg: &Config, via: QueueVia) -> String {
    let t = &cfg.dataplane.table;
    format!(
        "add table ip {t}\ndelete table ip {t}\n{}",
        render(cfg, via)
    )
}

/// The iptables-nft rule that queues marked packets when nft has no `queue`.
pub fn xt_queue_rule(cfg: &Config) -> Vec<String> {
    [
        "PREROUTING",
        "-m",
        "mark",
        "--mark",
        &format!("{MARK_QUEUED:#010x}"),
        "-m",
        "comment",
        "--comment",
        &format!("rgw:{}", cfg.dataplane.table),
        "-j",
        "NFQUEUE",
        "--queue-num",
        &cfg.dataplane.queue_num.to_string(),
        "--queue-bypass",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_merge_consecutive() {
        let a = |s: &str| s.parse::<Ipv4Addr>().expect("valid test address");
        let r = ranges(&[
            a("10.0.0.1"),
            a("10.0.0.2"),
            a("10.0.0.3"),
            a("10.0.0.7"),
            a("255.255.255.255"),
        ]);
        assert_eq!(
            r,
            vec![
                (a("10.0.0.1"), a("10.0.0.3")),
                (a("10.0.0.7"), a("10.0.0.7")),
                (a("255.255.255.255"), a("255.255.255.255"))
            ]
        );
        assert!(ranges(&[]).is_empty());
    }

    #[test]
    fn claim_marks_are_tagged() {
        assert_eq!(claim_mark(0), 0x5243_0001);
        assert_eq!(claim_mark(9) & 0xffff_0000, MARK_CLAIMED_TAG);
        assert_ne!(claim_mark(0) & 0xffff_0000, MARK_QUEUED & 0xffff_0000);
    }
}
