//! Kernel set-up for RGW64 (start and stop only; spawns `ip` and `nft`).
//!
//! Routes in the gateway's namespace: `prefix64 → TUN` (IPv6 towards proxy
//! ULAs) and `pool4 → TUN` (IPv4 towards proxy IPv4 addresses). Our `ip6`
//! table (same name as the `ip` one) NATs IPv6 leaving the WAN from the LAN
//! prefix or from prefix64 (translated IPv4 sources) to `wan_address6`
//! (NAT66), and drops unsolicited inbound IPv6: private hosts are reached
//! through the Circular Pool, as with IPv4. The one exception are the ALG's
//! NAT46 pinholes ([`MAP_PINHOLES6`]): an IPv6-only server's data or media
//! connection to `wan_address6` that a rewritten FTP/SIP message announced
//! is DNATed to the private IPv4 host's `prefix64::` address (the TUN).

use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use tracing::{info, warn};

use crate::config::Config;

use super::Rgw64Config;

/// Counter of inbound IPv6 dropped in our `ip6` forward chain.
pub const COUNTER_FORWARD6_DROP: &str = "forward6_drop";

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .context("cannot run `ip` (install iproute2)")?;
    if !out.status.success() {
        bail!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn sysctl(path: &str, value: &str) -> Result<()> {
    std::fs::write(path, value).with_context(|| format!("writing {value} to {path}"))
}

/// Set of the hosts' published (global) IPv6 addresses: inbound IPv6 may reach them.
pub const SET_HOSTS6: &str = "hosts6";

/// ALG pinholes on the IPv6 side (NAT46: an IPv6-only server's data or
/// media connection to `wan_address6`): `peer . proto . public . port :
/// prefix64::host . port`, timeout elements written by the ALG shell.
pub const MAP_PINHOLES6: &str = "pinholes6";

/// The `ip6` table as one nft transaction (reconciles like the `ip` one).
///
/// A ULA LAN (the usual case, and the testbed's) is NATed66 to
/// `wan_address6` and gets no unsolicited inbound IPv6: its hosts are reached
/// through the Circular Pool like IPv4 ones. A global LAN prefix is routed
/// as it is; inbound IPv6 reaches only the hosts whose AAAA the public view
/// publishes ([`rgw_dns::answer::is_published_v6`]). Translated IPv4
/// sources (`prefix64`) are always NATed66.
pub fn render6(cfg: &Config, r: &Rgw64Config) -> String {
    let t = &cfg.dataplane.table;
    let wan = &cfg.wan.interface;
    let lan = &cfg.lan.interface;
    let ula = "fc00::/7"
        .parse::<ipnet::Ipv6Net>()
        .is_ok_and(|u| u.contains(&r.lan_prefix6));
    let nat66 = if ula {
        format!("{{ {}, {} }}", r.lan_prefix6, r.prefix64)
    } else {
        r.prefix64.to_string()
    };
    format!(
        "add table ip6 {t}
         add counter ip6 {t} {COUNTER_FORWARD6_DROP}
         add set ip6 {t} {SET_HOSTS6} {{ type ipv6_addr; }}
         add map ip6 {t} {MAP_PINHOLES6} {{ type ipv6_addr . inet_proto . ipv6_addr . inet_service : ipv6_addr . inet_service; flags timeout; }}
         flush map ip6 {t} {MAP_PINHOLES6}
         {hosts}         add chain ip6 {t} dstnat {{ type nat hook prerouting priority dstnat; policy accept; }}
         flush chain ip6 {t} dstnat
         add rule ip6 {t} dstnat iifname \"{wan}\" meta l4proto {{ tcp, udp }} dnat ip6 to ip6 saddr . meta l4proto . ip6 daddr . th dport map @{MAP_PINHOLES6}
         add chain ip6 {t} srcnat {{ type nat hook postrouting priority srcnat; policy accept; }}
         flush chain ip6 {t} srcnat
         add rule ip6 {t} srcnat oifname \"{wan}\" ip6 saddr {nat66} snat to {wan6}
         add chain ip6 {t} forward {{ type filter hook forward priority filter; policy accept; }}
         flush chain ip6 {t} forward
         add rule ip6 {t} forward ct state established,related accept
         add rule ip6 {t} forward ct state invalid drop
         add rule ip6 {t} forward iifname \"{wan}\" oifname \"{lan}\" ip6 daddr @{SET_HOSTS6} accept
         add rule ip6 {t} forward iifname \"{wan}\" oifname \"{tun}\" ct status dnat accept
         add rule ip6 {t} forward iifname \"{wan}\" counter name {COUNTER_FORWARD6_DROP} drop
",
        hosts = render_hosts6(cfg),
        wan6 = r.wan_address6,
        tun = r.tun,
    )
}

/// The published hosts' IPv6 addresses, rewritten in one transaction (also on reload).
pub fn render_hosts6(cfg: &Config) -> String {
    let t = &cfg.dataplane.table;
    let mut out = format!("flush set ip6 {t} {SET_HOSTS6}\n");
    let elems: Vec<String> = cfg
        .hosts
        .iter()
        .filter(|h| !h.name.is_empty())
        .filter_map(|h| h.ipv6)
        .filter(|v6| rgw_dns::answer::is_published_v6(*v6))
        .map(|v6| v6.to_string())
        .collect();
    if !elems.is_empty() {
        out.push_str(&format!(
            "add element ip6 {t} {SET_HOSTS6} {{ {} }}\n",
            elems.join(", ")
        ));
    }
    out
}

/// Brings the TUN up with its routes and installs the `ip6` table.
pub fn install(cfg: &Config, r: &Rgw64Config) -> Result<()> {
    let tun = r.tun.as_str();
    // IPv6 on the TUN itself (a namespace may have it off by default), and
    // forwarding: the translator is a router between the two families.
    sysctl(&format!("/proc/sys/net/ipv6/conf/{tun}/disable_ipv6"), "0")?;
    sysctl("/proc/sys/net/ipv6/conf/all/forwarding", "1")?;
    ip(&["link", "set", "dev", tun, "up", "mtu", &r.mtu.to_string()])?;
    ip(&["-4", "route", "replace", &r.pool4.to_string(), "dev", tun])?;
    ip(&[
        "-6",
        "route",
        "replace",
        &r.prefix64.to_string(),
        "dev",
        tun,
    ])?;
    crate::dataplane::nft_script(&render6(cfg, r), false).context("installing the ip6 table")?;
    info!(tun, prefix64 = %r.prefix64, pool4 = %r.pool4, wan6 = %r.wan_address6, statics = r.statics.len(), "RGW64 plumbing installed");
    Ok(())
}

/// Removes the `ip6` table (the TUN and its routes go with the process).
pub fn remove(cfg: &Config) {
    let t = &cfg.dataplane.table;
    let exists = Command::new("nft")
        .args(["list", "table", "ip6", t])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if exists {
        if let Err(e) = crate::dataplane::nft_script(&format!("delete table ip6 {t}\n"), false) {
            warn!(error = %e, "removing the ip6 table failed");
        }
    }
}
