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
//! With `dataplane.synproxy` (optional) TCP is claimed after a handshake with
//! the kernel's SYN proxy instead (see [`render_synproxy`]):
//! ```text
//!  prerouting  -300 sp_raw    pure SYN to a pool address → notrack
//!              -160 gate      untracked/invalid TCP to a reserved address → accept
//!                             (to anything else: the counted drop as before)
//!  input, forward -10 sp_*    SYN → SYN cookie; the client's ACK → cookie checked,
//!                             the kernel sends its own SYN to the pool address
//!  output      -160 gate_out  that SYN: ct new + reserved → mark RQ, queue (claim)
//!              -150 (xt mode) iptables-nft mangle OUTPUT: mark RQ → NFQUEUE
//!              -140 gate_out_tail  mark still RQ → counted drop
//!              -100 dstnat_out     mark RC|host → dnat to host
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

/// Mark of a packet of an ALG control flow waiting for the ALG engine ("RA").
pub const MARK_ALG: u32 = 0x5241_0000;

pub const SET_POOL: &str = "pool";
pub const SET_ALG_PORTS: &str = "alg_ports";
/// `peer . proto . public addr . public port : private addr . private port`
pub const MAP_PINHOLES: &str = "pinholes";
/// `private addr . proto . private port . peer : public addr`
pub const MAP_PINHOLE_SNAT: &str = "pinhole_snat";
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
    let _ = writeln!(
        out,
        "add set ip {t} {SET_ALG_PORTS} {{ type inet_proto . inet_service; }}"
    );
    let _ = writeln!(
        out,
        "add map ip {t} {MAP_PINHOLES} {{ type ipv4_addr . inet_proto . ipv4_addr . inet_service : ipv4_addr . inet_service; flags timeout; }}"
    );
    let _ = writeln!(
        out,
        "add map ip {t} {MAP_PINHOLE_SNAT} {{ type ipv4_addr . inet_proto . inet_service . ipv4_addr : ipv4_addr; flags timeout; }}"
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
    let _ = writeln!(out, "flush set ip {t} {SET_ALG_PORTS}");
    let alg_ports: Vec<String> = cfg
        .alg
        .queued_ports()
        .iter()
        .map(|(proto, port)| format!("{} . {port}", if *proto == 6 { "tcp" } else { "udp" }))
        .collect();
    if cfg.alg.enabled && !alg_ports.is_empty() {
        let _ = writeln!(
            out,
            "add element ip {t} {SET_ALG_PORTS} {{ {} }}",
            alg_ports.join(", ")
        );
    }
    // Pinholes belong to ALG flows of the previous daemon, whose engine state
    // is gone: established data flows live on in conntrack.
    let _ = writeln!(out, "flush map ip {t} {MAP_PINHOLES}");
    let _ = writeln!(out, "flush map ip {t} {MAP_PINHOLE_SNAT}");
    let _ = writeln!(out, "flush set ip {t} {SET_RESV_ADDR}");
    let _ = writeln!(out, "flush set ip {t} {SET_RESV_SVC}");
    out.push_str(&render_host_map(cfg));

    let queue = match via {
        QueueVia::Nft => format!("queue num {} bypass", cfg.dataplane.queue_num),
        QueueVia::Xt => "accept".to_string(),
    };
    let alg_queue = match via {
        QueueVia::Nft => format!("queue num {} bypass", cfg.alg.queue_num),
        QueueVia::Xt => "accept".to_string(),
    };
    let alg_rules: Vec<String> = if cfg.alg.enabled {
        // Every packet of an ALG control flow, both directions, where both
        // carry the private host's address (DNAT done, SNAT not yet).
        // RGW64: an IPv6-only host's flows leave the translator (TUN) as IPv4
        // from its proxy address; the TUN is then the private side (towards
        // the WAN). NAT46 flows of IPv4 hosts to IPv6-only servers are seen
        // on the LAN one way and come back from the TUN towards the LAN.
        let tun_out = cfg.rgw64.as_ref().map(|r| {
            format!(
                "iifname \"{tun}\" oifname {{ \"{wan}\", \"{lan}\" }}",
                tun = r.tun
            )
        });
        ["dport", "sport"]
            .iter()
            .flat_map(|dir| {
                let tail = format!(
                    "meta l4proto {{ tcp, udp }} meta l4proto . th {dir} @{SET_ALG_PORTS} meta mark set {MARK_ALG:#010x} {alg_queue}"
                );
                std::iter::once(format!("iifname {{ \"{lan}\", \"{wan}\" }} {tail}"))
                    .chain(tun_out.as_ref().map(|m| format!("{m} {tail}")))
            })
            .collect()
    } else {
        Vec::new()
    };
    let synproxy_pass: [String; 2] = if cfg.dataplane.synproxy {
        [
            format!("meta l4proto tcp ct state invalid,untracked ip daddr . meta l4proto . th dport @{SET_RESV_SVC} accept"),
            format!("meta l4proto tcp ct state invalid,untracked ip daddr @{SET_RESV_ADDR} accept"),
        ]
    } else {
        Default::default()
    };
    let pinhole_key = "ip saddr . meta l4proto . ip daddr . th dport";
    let chains: [(&str, &str, Vec<String>); 6] = [
        (
            "gate",
            "type filter hook prerouting priority -160; policy accept;",
            vec![
                format!("ip daddr != @{SET_POOL} return"),
                "ct state established,related accept".into(),
                // A claimed flow whose reply has not been seen yet is still `new`
                // (conntrack), e.g. a retransmitted SYN: its NAT binding exists.
                "ct status dnat accept".into(),
                // Data and media flows an ALG opened (they never claim).
                format!("ct state new meta l4proto {{ tcp, udp }} {pinhole_key} @{MAP_PINHOLES} accept"),
                // With the SYN proxy: the handshake to a reserved address
                // goes on to the proxy (an accept here, a drop is final).
                synproxy_pass[0].clone(),
                synproxy_pass[1].clone(),
                format!(
                    "ct state new meta l4proto {{ tcp, udp }} ip daddr . meta l4proto . th dport @{SET_RESV_SVC} meta mark set {MARK_QUEUED:#010x} {queue}"
                ),
                format!("ct state new ip daddr @{SET_RESV_ADDR} meta mark set {MARK_QUEUED:#010x} {queue}"),
                format!("counter name {COUNTER_UNRESERVED} drop"),
            ]
            .into_iter()
            .filter(|r| !r.is_empty())
            .collect(),
        ),
        (
            "gate_tail",
            "type filter hook prerouting priority -140; policy accept;",
            vec![format!("meta mark {MARK_QUEUED:#010x} counter name {COUNTER_NO_DAEMON} drop")],
        ),
        (
            "dstnat",
            "type nat hook prerouting priority dstnat; policy accept;",
            vec![
                format!(
                    "meta mark & 0xffff0000 == {MARK_CLAIMED_TAG:#010x} dnat to meta mark map @{MAP_HOST_BY_MARK}"
                ),
                format!(
                    "iifname \"{wan}\" meta l4proto {{ tcp, udp }} dnat ip to {pinhole_key} map @{MAP_PINHOLES}"
                ),
            ],
        ),
        (
            "srcnat",
            "type nat hook postrouting priority srcnat; policy accept;",
            vec![
                format!(
                    "oifname \"{wan}\" meta l4proto {{ tcp, udp }} snat ip to ip saddr . meta l4proto . th sport . ip daddr map @{MAP_PINHOLE_SNAT}"
                ),
                // RGW64: IPv4 leaving the translator carries a pool4 source (an IPv6
                // host's proxy address): it leaves through the same outbound NAT.
                format!(
                    "oifname \"{wan}\" ip saddr {} snat to {}",
                    match &cfg.rgw64 {
                        Some(r) => format!("{{ {}, {} }}", cfg.lan.network, r.pool4),
                        None => cfg.lan.network.to_string(),
                    },
                    cfg.wan.service_address
                ),
            ],
        ),
        (
            "alg",
            "type filter hook forward priority -160; policy accept;",
            alg_rules,
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
    out.push_str(&render_synproxy(cfg, via));
    out
}

/// Chains of the optional SYN proxy (`dataplane.synproxy`). Switched off,
/// they are deleted (an earlier run may have left them): add, flush, delete
/// is idempotent.
///
/// Why the claim moves to OUTPUT: a pure SYN to a pool address is not
/// tracked (raw), so a spoofed SYN flood creates no conntrack entry and
/// cannot take a reservation; the gate lets untracked and invalid TCP to a
/// *reserved* address through to the SYN proxy (anything else stays a
/// counted drop), which answers with a SYN cookie. Only when the client's
/// ACK carries a valid cookie does the kernel send its own SYN (client →
/// pool address) through OUTPUT, where conntrack sees it as new: that
/// packet is queued and claimed exactly once, like a first packet in
/// prerouting, and the claim mark DNATs it to the host. The proxy then
/// completes the handshake with the host and shifts sequence numbers for
/// the rest of the flow (conntrack seqadj). UDP and ICMP are claimed in
/// prerouting as before. Needs `nf_conntrack_tcp_loose = 0` (set by
/// [`super::install`]) so the handshake's ACK is invalid, not a new flow.
pub fn render_synproxy(cfg: &Config, via: QueueVia) -> String {
    let t = &cfg.dataplane.table;
    let d = &cfg.dataplane;
    let mut out = String::new();
    let synproxy = format!(
        "synproxy mss {} wscale {} timestamp sack-perm",
        d.synproxy_mss, d.synproxy_wscale
    );
    let queue = match via {
        QueueVia::Nft => format!("queue num {} bypass", d.queue_num),
        QueueVia::Xt => "accept".to_string(),
    };
    let proxy_rules = vec![
        format!("ip daddr @{SET_POOL} meta l4proto tcp ct state invalid,untracked {synproxy}"),
        format!("ip daddr @{SET_POOL} meta l4proto tcp ct state invalid,untracked counter name {COUNTER_UNRESERVED} drop"),
    ];
    let chains: [(&str, &str, Vec<String>); 6] = [
        (
            "sp_raw",
            "type filter hook prerouting priority raw; policy accept;",
            vec![format!(
                "ip daddr @{SET_POOL} tcp flags & (fin | syn | rst | ack) == syn notrack"
            )],
        ),
        // The pool may route out again (the default route) or be local.
        (
            "sp_forward",
            "type filter hook forward priority -10; policy accept;",
            proxy_rules.clone(),
        ),
        (
            "sp_input",
            "type filter hook input priority -10; policy accept;",
            proxy_rules,
        ),
        (
            "gate_out",
            "type filter hook output priority -160; policy accept;",
            vec![
                format!("ip daddr != @{SET_POOL} return"),
                "ct state established,related accept".into(),
                "ct status dnat accept".into(),
                format!(
                    "ct state new meta l4proto tcp ip daddr . meta l4proto . th dport @{SET_RESV_SVC} meta mark set {MARK_QUEUED:#010x} {queue}"
                ),
                format!("ct state new meta l4proto tcp ip daddr @{SET_RESV_ADDR} meta mark set {MARK_QUEUED:#010x} {queue}"),
                // The reservation expired (or was taken) between SYN and ACK.
                format!("meta l4proto tcp counter name {COUNTER_UNRESERVED} drop"),
            ],
        ),
        (
            "gate_out_tail",
            "type filter hook output priority -140; policy accept;",
            vec![format!("meta mark {MARK_QUEUED:#010x} counter name {COUNTER_NO_DAEMON} drop")],
        ),
        (
            "dstnat_out",
            "type nat hook output priority -100; policy accept;",
            vec![format!(
                "meta mark & 0xffff0000 == {MARK_CLAIMED_TAG:#010x} dnat to meta mark map @{MAP_HOST_BY_MARK}"
            )],
        ),
    ];
    for (name, hook, rules) in chains {
        let _ = writeln!(out, "add chain ip {t} {name} {{ {hook} }}");
        let _ = writeln!(out, "flush chain ip {t} {name}");
        if d.synproxy {
            for r in rules {
                let _ = writeln!(out, "add rule ip {t} {name} {r}");
            }
        } else {
            let _ = writeln!(out, "delete chain ip {t} {name}");
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

/// The iptables-nft (mangle table) rules that queue marked packets when nft
/// has no `queue`: first packets in PREROUTING (and in OUTPUT with the SYN
/// proxy), ALG flows in FORWARD. `all`: every rule whatever the
/// configuration enables (for removal).
pub fn xt_queue_rules(cfg: &Config, all: bool) -> Vec<Vec<String>> {
    let mut rules = vec![xt_queue_rule(cfg)];
    if cfg.dataplane.synproxy || all {
        rules.push(xt_output_queue_rule(cfg));
    }
    if cfg.alg.enabled || all {
        rules.push(xt_rule(cfg, "FORWARD", MARK_ALG, cfg.alg.queue_num));
    }
    rules
}

/// The first-packet rule (PREROUTING).
pub fn xt_queue_rule(cfg: &Config) -> Vec<String> {
    xt_rule(cfg, "PREROUTING", MARK_QUEUED, cfg.dataplane.queue_num)
}

/// The same rule in OUTPUT, for the SYN the SYN proxy sends ([`render_synproxy`]).
pub fn xt_output_queue_rule(cfg: &Config) -> Vec<String> {
    xt_rule(cfg, "OUTPUT", MARK_QUEUED, cfg.dataplane.queue_num)
}

fn xt_rule(cfg: &Config, chain: &str, mark: u32, queue_num: u16) -> Vec<String> {
    [
        chain,
        "-m",
        "mark",
        "--mark",
        &format!("{mark:#010x}"),
        "-m",
        "comment",
        "--comment",
        &format!("rgw:{}", cfg.dataplane.table),
        "-j",
        "NFQUEUE",
        "--queue-num",
        &queue_num.to_string(),
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

    fn shipped_config() -> Config {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../testbed/config/rgw.toml");
        Config::load(&path).expect("the shipped testbed config is valid")
    }

    /// Runs `nft -c -f -` (check only: the kernel validates, nothing stays)
    /// in a fresh network namespace, on a thread of its own.
    fn nft_check_in_private_netns(script: String) -> Result<(), String> {
        crate::dataplane::testns::in_fresh_netns(move || {
            use std::io::Write;
            let mut child = std::process::Command::new("nft")
                .args(["-c", "-f", "-"])
                .stdin(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .map_err(|e| format!("cannot run nft: {e}"))?;
            child
                .stdin
                .take()
                .ok_or("no stdin")?
                .write_all(script.as_bytes())
                .map_err(|e| e.to_string())?;
            let out = child.wait_with_output().map_err(|e| e.to_string())?;
            if out.status.success() {
                Ok(())
            } else {
                Err(String::from_utf8_lossy(&out.stderr).into_owned())
            }
        })
    }

    #[test]
    fn rendered_ruleset_is_accepted_by_the_kernel() {
        let cfg = shipped_config();
        let text = render(&cfg, QueueVia::Xt);
        assert!(
            text.contains("@alg_ports meta mark set 0x52410000"),
            "{text}"
        );
        assert!(
            text.contains("dnat ip to ip saddr . meta l4proto . ip daddr . th dport map @pinholes"),
            "{text}"
        );
        assert!(text.contains("@pinhole_snat"), "{text}");
        assert!(
            text.contains("ip saddr . meta l4proto . ip daddr . th dport @pinholes accept"),
            "{text}"
        );
        nft_check_in_private_netns(text).expect("nft accepts the ruleset");
        let mut off = cfg.clone();
        off.alg.enabled = false;
        let text = render(&off, QueueVia::Xt);
        assert!(
            !text.contains("0x52410000"),
            "ALG off: nothing is queued\n{text}"
        );
        nft_check_in_private_netns(text).expect("nft accepts the ruleset without ALG");
        assert_eq!(xt_queue_rules(&off, false).len(), 1);
        assert_eq!(
            xt_queue_rules(&off, true).len(),
            3,
            "removal covers the ALG and SYN proxy rules"
        );
        let alg_rule = xt_queue_rules(&cfg, false).pop().expect("the ALG rule");
        assert_eq!(alg_rule[0], "FORWARD");
        assert!(alg_rule.contains(&cfg.alg.queue_num.to_string()));
    }

    fn cfg(extra: &str) -> Config {
        let text = format!(
            "[zone]\nname = \"gwa.demo\"\n[wan]\ninterface = \"wan0\"\nservice_address = \"198.51.100.2\"\n\
             [lan]\ninterface = \"lan0\"\naddress = \"192.168.0.1\"\nnetwork = \"192.168.0.0/24\"\n\
             upstream_resolver = \"203.0.113.54\"\n[pool]\naddresses = [\"198.51.100.17-198.51.100.22\"]\n\
             [dataplane]\nqueue_num = 3\n{extra}\n[[hosts]]\nname = \"hosta\"\nipv4 = \"192.168.0.101\"\n"
        );
        Config::from_toml_str(std::path::Path::new("t.toml"), &text).expect("test config is valid")
    }

    #[test]
    fn alg_chain_takes_translated_flows_from_the_tun_with_rgw64() {
        let plain = render(&cfg(""), QueueVia::Nft);
        let alg = |text: &str| -> Vec<String> {
            text.lines()
                .filter(|l| l.starts_with("add rule ip rgw alg "))
                .map(str::to_string)
                .collect()
        };
        assert_eq!(alg(&plain).len(), 2, "{plain}");
        let six = render(
            &cfg(
                "[rgw64]\ntun = \"xl64\"\nprefix64 = \"fd64:64::/96\"\npool4 = \"10.64.0.0/24\"\n\
                  lan_prefix6 = \"fd00:192:168::/64\"\nlan_address6 = \"fd00:192:168::1\"\n\
                  wan_address6 = \"2001:db8:0:100::2\"",
            ),
            QueueVia::Nft,
        );
        let rules = alg(&six);
        assert_eq!(rules.len(), 4, "{rules:#?}");
        for dir in ["dport", "sport"] {
            // Towards the WAN (IPv6-only hosts) and the LAN (NAT46 replies).
            let want = format!(
                "add rule ip rgw alg iifname \"xl64\" oifname {{ \"wan0\", \"lan0\" }} meta l4proto {{ tcp, udp }} \
                 meta l4proto . th {dir} @alg_ports meta mark set"
            );
            assert!(
                rules.iter().any(|r| r.starts_with(&want)),
                "{want}\n{rules:#?}"
            );
        }
    }

    #[test]
    fn synproxy_moves_the_tcp_claim_to_output() {
        let on = render(&cfg("synproxy = true\nsynproxy_mss = 1400"), QueueVia::Nft);
        assert!(on.contains("add rule ip rgw sp_raw ip daddr @pool tcp flags & (fin | syn | rst | ack) == syn notrack"), "{on}");
        assert!(on.contains("synproxy mss 1400 wscale 7 timestamp sack-perm"));
        assert!(on.contains("add rule ip rgw sp_forward "));
        assert!(on.contains("add rule ip rgw sp_input "));
        assert!(on.contains("add rule ip rgw gate_out ct state new meta l4proto tcp ip daddr @resv_addr meta mark set 0x52510000 queue num 3 bypass"));
        assert!(on.contains("add rule ip rgw dstnat_out meta mark & 0xffff0000 == 0x52430000 dnat to meta mark map @host_by_mark"));
        // The gate passes the handshake to a reserved address before its final drop.
        let gate: Vec<&str> = on
            .lines()
            .filter(|l| l.starts_with("add rule ip rgw gate "))
            .collect();
        let pass = gate
            .iter()
            .position(|l| l.contains("invalid,untracked ip daddr @resv_addr accept"));
        let drop = gate
            .iter()
            .position(|l| l.contains("counter name unreserved drop"));
        assert!(pass.is_some() && pass < drop, "{gate:#?}");
        assert!(!on.contains("delete chain"));

        let off = render(&cfg(""), QueueVia::Xt);
        for c in [
            "sp_raw",
            "sp_forward",
            "sp_input",
            "gate_out",
            "gate_out_tail",
            "dstnat_out",
        ] {
            assert!(off.contains(&format!("delete chain ip rgw {c}\n")), "{c}");
            assert!(!off.contains(&format!("add rule ip rgw {c} ")), "{c}");
        }
        assert!(!off.contains("untracked"));
        assert_eq!(xt_output_queue_rule(&cfg(""))[0], "OUTPUT");
    }

    #[test]
    fn claim_marks_are_tagged() {
        assert_eq!(claim_mark(0), 0x5243_0001);
        assert_eq!(claim_mark(9) & 0xffff_0000, MARK_CLAIMED_TAG);
        assert_ne!(claim_mark(0) & 0xffff_0000, MARK_QUEUED & 0xffff_0000);
    }
}
