//! The `[rgw64]` section: NAT64/NAT46 with proxy addresses synthesised in DNS.
//!
//! ```toml
//! [rgw64]
//! tun = "rgw64"                       # TUN device of the translator
//! prefix64 = "fd64:64::/96"           # ULA /96 embedding IPv4 (RFC 6052 §2.2), never 64:ff9b::/96
//! pool4 = "10.64.0.0/24"              # private IPv4 proxy addresses (static + dynamic)
//! lan_prefix6 = "fd00:192:168::/64"   # the LAN's IPv6 prefix
//! lan_address6 = "fd00:192:168::1"    # the gateway on the LAN (DNS, default route)
//! wan_address6 = "2001:db8:0:100::2"  # NAT66 source for IPv6 leaving the WAN
//! ```
//! Seed, "Extra 1: RGW64": proxy IPv6 addresses are ULAs (fc00::/7), locally
//! generated, not the well-known prefix.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::time::Duration;

use ipnet::{Ipv4Net, Ipv6Net};
use serde::Deserialize;

use crate::config::{invalid, ConfigError};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRgw64 {
    #[serde(default = "default_true")]
    enabled: bool,
    #[serde(default = "default_tun")]
    tun: String,
    prefix64: String,
    pool4: String,
    #[serde(default = "default_dynamic_timeout", with = "humantime_serde")]
    dynamic_timeout: Duration,
    #[serde(default = "default_max_dynamic")]
    max_dynamic: u32,
    lan_prefix6: String,
    lan_address6: Ipv6Addr,
    wan_address6: Ipv6Addr,
    #[serde(default = "default_synth_ttl")]
    synth_ttl: u32,
    #[serde(default = "default_mtu")]
    mtu: u16,
}

fn default_true() -> bool {
    true
}
fn default_tun() -> String {
    "rgw64".into()
}
fn default_dynamic_timeout() -> Duration {
    Duration::from_secs(300)
}
fn default_max_dynamic() -> u32 {
    4096
}
fn default_synth_ttl() -> u32 {
    30
}
fn default_mtu() -> u16 {
    1500
}

/// A static 1:1 mapping: an IPv6-only private host and its proxy IPv4.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StaticMap {
    pub ipv4: Ipv4Addr,
    pub ipv6: Ipv6Addr,
}

/// The validated `[rgw64]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rgw64Config {
    pub tun: String,
    pub prefix64: Ipv6Net,
    pub pool4: Ipv4Net,
    pub dynamic_timeout: Duration,
    pub max_dynamic: u32,
    pub lan_prefix6: Ipv6Net,
    pub lan_address6: Ipv6Addr,
    pub wan_address6: Ipv6Addr,
    /// Upper bound of the TTL of synthesised records.
    pub synth_ttl: u32,
    pub mtu: u16,
    /// IPv6-only hosts' proxy addresses, in host order.
    pub statics: Vec<StaticMap>,
}

impl Rgw64Config {
    /// Addresses of `pool4` the translator may hand out dynamically.
    pub fn dynamic_capacity(&self) -> u64 {
        (1u64 << (32 - self.pool4.prefix_len())).saturating_sub(self.statics.len() as u64)
    }
}

fn is_private_v4(net: &Ipv4Net) -> bool {
    let shared: Ipv4Net = Ipv4Net::new(Ipv4Addr::new(100, 64, 0, 0), 10).expect("valid /10");
    net.network().is_private() && net.broadcast().is_private()
        || shared.contains(net)
        || Ipv4Net::new(Ipv4Addr::new(198, 18, 0, 0), 15)
            .expect("valid /15")
            .contains(net)
}

/// Validates the section; `Ok(None)` when `enabled = false`.
pub(crate) fn validate(
    file: &Path,
    r: RawRgw64,
    lan: Ipv4Net,
    pool: &[Ipv4Addr],
) -> Result<Option<Rgw64Config>, ConfigError> {
    if r.tun.is_empty() || r.tun.len() > 15 || r.tun.contains(['/', ' ']) {
        return Err(invalid(
            file,
            "rgw64.tun",
            "a network interface name (1-15 characters)",
            &r.tun,
        ));
    }
    let ula: Ipv6Net = "fc00::/7".parse().expect("valid ULA block");
    let prefix64: Ipv6Net = r
        .prefix64
        .parse()
        .ok()
        .filter(|p: &Ipv6Net| p.prefix_len() == 96 && ula.contains(p))
        .ok_or_else(|| {
            invalid(
                file,
                "rgw64.prefix64",
                "a /96 inside the ULA block fc00::/7, e.g. \"fd64:64::/96\" (not 64:ff9b::/96)",
                &r.prefix64,
            )
        })?
        .trunc();
    let pool4: Ipv4Net = r
        .pool4
        .parse()
        .ok()
        .filter(|p: &Ipv4Net| (16..=30).contains(&p.prefix_len()) && is_private_v4(p))
        .ok_or_else(|| {
            invalid(
                file,
                "rgw64.pool4",
                "a private IPv4 block (RFC 1918, 100.64.0.0/10 or 198.18.0.0/15) between /16 and /30, e.g. \"10.64.0.0/24\"",
                &r.pool4,
            )
        })?
        .trunc();
    if pool4.contains(&lan) || lan.contains(&pool4) {
        return Err(invalid(
            file,
            "rgw64.pool4",
            &format!("a block that does not overlap lan.network {lan}"),
            pool4,
        ));
    }
    if let Some(a) = pool.iter().find(|a| pool4.contains(*a)) {
        return Err(invalid(
            file,
            "rgw64.pool4",
            "a block without Circular Pool addresses",
            a,
        ));
    }
    let lan_prefix6: Ipv6Net = r
        .lan_prefix6
        .parse()
        .ok()
        .filter(|p: &Ipv6Net| p.prefix_len() <= 64)
        .ok_or_else(|| {
            invalid(
                file,
                "rgw64.lan_prefix6",
                "an IPv6 prefix of /64 or shorter, e.g. \"fd00:192:168::/64\"",
                &r.lan_prefix6,
            )
        })?
        .trunc();
    if lan_prefix6.contains(&prefix64) || prefix64.contains(&lan_prefix6) {
        return Err(invalid(
            file,
            "rgw64.lan_prefix6",
            "a prefix that does not overlap rgw64.prefix64",
            lan_prefix6,
        ));
    }
    if !lan_prefix6.contains(&r.lan_address6) {
        return Err(invalid(
            file,
            "rgw64.lan_address6",
            &format!("an address inside rgw64.lan_prefix6 {lan_prefix6}"),
            r.lan_address6,
        ));
    }
    if lan_prefix6.contains(&r.wan_address6)
        || prefix64.contains(&r.wan_address6)
        || r.wan_address6.is_unspecified()
        || r.wan_address6.is_multicast()
    {
        return Err(invalid(
            file,
            "rgw64.wan_address6",
            "the gateway's unicast IPv6 address on the WAN (outside lan_prefix6 and prefix64)",
            r.wan_address6,
        ));
    }
    if r.dynamic_timeout < Duration::from_secs(1) || r.dynamic_timeout > Duration::from_secs(86400)
    {
        return Err(invalid(
            file,
            "rgw64.dynamic_timeout",
            "a duration between 1s and 24h, e.g. \"5m\"",
            humantime_serde::re::humantime::format_duration(r.dynamic_timeout),
        ));
    }
    if r.max_dynamic == 0 {
        return Err(invalid(
            file,
            "rgw64.max_dynamic",
            "at least 1 dynamic mapping",
            r.max_dynamic,
        ));
    }
    if r.mtu < 1280 {
        return Err(invalid(
            file,
            "rgw64.mtu",
            "an MTU of at least 1280 (the IPv6 minimum)",
            r.mtu,
        ));
    }
    if !r.enabled {
        return Ok(None);
    }
    Ok(Some(Rgw64Config {
        tun: r.tun,
        prefix64,
        pool4,
        dynamic_timeout: r.dynamic_timeout,
        max_dynamic: r.max_dynamic,
        lan_prefix6,
        lan_address6: r.lan_address6,
        wan_address6: r.wan_address6,
        synth_ttl: r.synth_ttl,
        mtu: r.mtu,
        statics: Vec::new(),
    }))
}

/// The proxy IPv4 of IPv6-only host `i`: its `proxy4`, else the first free
/// address of `pool4` (network address skipped). Recorded as a static mapping.
pub(crate) fn host_proxy4(
    file: &Path,
    i: usize,
    ipv6: Option<Ipv6Addr>,
    proxy4: Option<Ipv4Addr>,
    rgw64: Option<&mut Rgw64Config>,
) -> Result<Ipv4Addr, ConfigError> {
    let Some(r) = rgw64 else {
        return Err(invalid(
            file,
            &format!("hosts[{i}].ipv4"),
            "an IPv4 address (a host without one needs an enabled [rgw64] section for its proxy address)",
            "none",
        ));
    };
    let Some(v6) = ipv6 else {
        return Err(invalid(
            file,
            &format!("hosts[{i}].ipv4"),
            "an IPv4 or an IPv6 address (\"ipv4\" and/or \"ipv6\")",
            "none",
        ));
    };
    let taken = |a: Ipv4Addr, r: &Rgw64Config| r.statics.iter().any(|s| s.ipv4 == a);
    let addr = match proxy4 {
        Some(p) => {
            let reserved = p == r.pool4.network() || p == r.pool4.broadcast();
            if !r.pool4.contains(&p) || reserved || taken(p, r) {
                return Err(invalid(
                    file,
                    &format!("hosts[{i}].proxy4"),
                    &format!(
                        "a free host address inside rgw64.pool4 {} (not its network or broadcast address)",
                        r.pool4
                    ),
                    p,
                ));
            }
            p
        }
        None => r.pool4.hosts().find(|a| !taken(*a, r)).ok_or_else(|| {
            invalid(
                file,
                &format!("hosts[{i}].proxy4"),
                &format!("a free address in rgw64.pool4 {} (all taken)", r.pool4),
                "none",
            )
        })?,
    };
    r.statics.push(StaticMap {
        ipv4: addr,
        ipv6: v6,
    });
    Ok(addr)
}

/// A host's IPv6 address: unicast, and on the LAN when `[rgw64]` names it.
pub(crate) fn check_host_ipv6(
    file: &Path,
    i: usize,
    v6: Ipv6Addr,
    rgw64: Option<&Rgw64Config>,
) -> Result<(), ConfigError> {
    let bad = v6.is_unspecified() || v6.is_loopback() || v6.is_multicast();
    match rgw64 {
        _ if bad => Err(invalid(
            file,
            &format!("hosts[{i}].ipv6"),
            "a unicast IPv6 address",
            v6,
        )),
        Some(r) if !r.lan_prefix6.contains(&v6) || v6 == r.lan_address6 => Err(invalid(
            file,
            &format!("hosts[{i}].ipv6"),
            &format!(
                "a host address inside rgw64.lan_prefix6 {} (not lan_address6)",
                r.lan_prefix6
            ),
            v6,
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const BASE: &str = r#"
[zone]
name = "gwa.demo"
[wan]
interface = "wan0"
service_address = "198.51.100.2"
[lan]
interface = "lan0"
address = "192.168.0.1"
network = "192.168.0.0/24"
upstream_resolver = "203.0.113.54"
[pool]
addresses = ["198.51.100.17-198.51.100.19"]

[rgw64]
prefix64 = "fd64:64::/96"
pool4 = "10.64.0.0/24"
lan_prefix6 = "fd00:192:168::/64"
lan_address6 = "fd00:192:168::1"
wan_address6 = "2001:db8:0:100::2"

[[hosts]]
name = "hosta"
ipv4 = "192.168.0.101"
ipv6 = "fd00:192:168::101"

[[hosts]]
name = "hostc"
ipv6 = "fd00:192:168::103"

[[hosts]]
name = "hostd"
ipv6 = "fd00:192:168::104"
proxy4 = "10.64.0.9"
"#;

    fn load(text: &str) -> Result<Config, String> {
        let dir = std::env::temp_dir().join(format!(
            "rgw64-cfg-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir is writable");
        let path = dir.join("rgw.toml");
        std::fs::write(&path, text).expect("temp file is writable");
        let loaded = Config::load(&path).map_err(|e| e.to_string());
        let _ = std::fs::remove_dir_all(&dir);
        loaded
    }

    fn err(text: &str) -> String {
        load(text).expect_err("config must be rejected")
    }

    #[test]
    fn ipv6_only_hosts_get_static_proxy_addresses() {
        let c = load(BASE).expect("valid");
        let r = c.rgw64.as_ref().expect("section present");
        assert_eq!(r.tun, "rgw64");
        assert_eq!(r.synth_ttl, 30);
        let v6 = |s: &str| s.parse::<Ipv6Addr>().expect("ip");
        // hosta is dual-stack: its own IPv4, its IPv6 for AAAA, no static mapping.
        assert_eq!(
            (c.hosts[0].ipv4, c.hosts[0].ipv6_only),
            (Ipv4Addr::new(192, 168, 0, 101), false)
        );
        // hostc: the first free pool4 host address; hostd: the one it asked for.
        assert_eq!(c.hosts[1].ipv4, Ipv4Addr::new(10, 64, 0, 1));
        assert!(c.hosts[1].ipv6_only);
        assert_eq!(c.hosts[2].ipv4, Ipv4Addr::new(10, 64, 0, 9));
        assert_eq!(
            r.statics,
            vec![
                super::StaticMap {
                    ipv4: Ipv4Addr::new(10, 64, 0, 1),
                    ipv6: v6("fd00:192:168::103")
                },
                super::StaticMap {
                    ipv4: Ipv4Addr::new(10, 64, 0, 9),
                    ipv6: v6("fd00:192:168::104")
                },
            ]
        );
        assert_eq!(r.dynamic_capacity(), 254);
    }

    #[test]
    fn errors_name_file_key_and_expectation() {
        let cases: [(&str, &str, &str); 10] = [
            (
                "proxy4 = \"10.64.0.9\"",
                "proxy4 = \"10.64.0.255\"",
                "hosts[2].proxy4",
            ),
            ("fd64:64::/96", "64:ff9b::/96", "rgw64.prefix64"),
            ("fd64:64::/96", "fd64:64::/64", "rgw64.prefix64"),
            ("10.64.0.0/24", "203.0.113.0/24", "rgw64.pool4"),
            ("10.64.0.0/24", "192.168.0.0/16", "rgw64.pool4"),
            (
                "lan_address6 = \"fd00:192:168::1\"",
                "lan_address6 = \"fd00:1::1\"",
                "rgw64.lan_address6",
            ),
            (
                "ipv6 = \"fd00:192:168::103\"",
                "ipv6 = \"fd00:9::103\"",
                "hosts[1].ipv6",
            ),
            (
                "proxy4 = \"10.64.0.9\"",
                "proxy4 = \"10.65.0.9\"",
                "hosts[2].proxy4",
            ),
            (
                "proxy4 = \"10.64.0.9\"",
                "proxy4 = \"10.64.0.1\"",
                "hosts[2].proxy4",
            ),
            (
                "wan_address6 = \"2001:db8:0:100::2\"",
                "wan_address6 = \"fd00:192:168::7\"",
                "rgw64.wan_address6",
            ),
        ];
        for (from, to, key) in cases {
            let e = err(&BASE.replace(from, to));
            assert!(e.contains("rgw.toml") && e.contains(key), "{to}: {e}");
        }
        // An IPv6-only host needs the section.
        let no_section = BASE.replace("[rgw64]", "[ignored]");
        assert!(err(&no_section).contains("ignored"));
        let disabled = BASE.replace("[rgw64]", "[rgw64]\nenabled = false");
        let e = err(&disabled);
        assert!(e.contains("hosts[1].ipv4") && e.contains("[rgw64]"), "{e}");
        // A host with neither address.
        let e = err(&BASE.replace("ipv6 = \"fd00:192:168::103\"\n", ""));
        assert!(e.contains("hosts[1].ipv4"), "{e}");
        // proxy4 only for IPv6-only hosts.
        let e = err(&BASE.replace(
            "ipv6 = \"fd00:192:168::101\"",
            "ipv6 = \"fd00:192:168::101\"\nproxy4 = \"10.64.0.5\"",
        ));
        assert!(e.contains("hosts[0].proxy4"), "{e}");
        let e = err(&BASE.replace(
            "ipv6 = \"fd00:192:168::104\"",
            "ipv6 = \"fd00:192:168::103\"",
        ));
        assert!(e.contains("hosts[2].ipv6") && e.contains("hostc"), "{e}");
    }

    #[test]
    fn ruleset_carries_pool4_and_the_tun() {
        let c = load(BASE).expect("valid");
        let text = crate::dataplane::ruleset::render(&c, crate::dataplane::QueueVia::Xt);
        assert!(
            text.contains("ip saddr { 192.168.0.0/24, 10.64.0.0/24 } snat to 198.51.100.2"),
            "{text}"
        );
        assert!(
            text.contains("iifname \"wan0\" oifname \"rgw64\" ct status dnat accept"),
            "{text}"
        );
        // The claim of an IPv6-only host DNATs to its proxy IPv4.
        let map = crate::dataplane::ruleset::render_host_map(&c);
        assert!(map.contains("0x52430002 : 10.64.0.1"), "{map}");
        let r = c.rgw64.as_ref().expect("section");
        let six = super::super::plumbing::render6(&c, r);
        assert!(six.contains(
            "oifname \"wan0\" ip6 saddr { fd00:192:168::/64, fd64:64::/96 } snat to 2001:db8:0:100::2"
        ));
        assert!(
            !six.contains("add element ip6 rgw hosts6"),
            "ULAs are not published: {six}"
        );
        // A global LAN prefix is routed (no NAT66) and its hosts are reachable.
        let global = BASE
            .replace("fd00:192:168::", "2001:db8:1::")
            .replace("fd00:192:168:", "2001:db8:1:");
        let c = load(&global).expect("valid");
        let six = super::super::plumbing::render6(&c, c.rgw64.as_ref().expect("section"));
        assert!(six.contains("ip6 saddr fd64:64::/96 snat to"), "{six}");
        assert!(
            six.contains(
                "add element ip6 rgw hosts6 { 2001:db8:1::101, 2001:db8:1::103, 2001:db8:1::104 }"
            ),
            "{six}"
        );
    }
}
