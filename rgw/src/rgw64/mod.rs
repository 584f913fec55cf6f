//! RGW64: NAT64/NAT46 between the private realm and the Internet (seed,
//! "Extra 1: RGW64"), with proxy addresses synthesised in DNS.
//!
//! - [`config`]: the `[rgw64]` section and IPv6-only hosts' proxy addresses.
//! - [`plumbing`]: the TUN's routes, sysctls and our `ip6` nftables table
//!   (NAT66 to the WAN address, no unsolicited inbound IPv6).
//! - [`tun`]: the I/O shell: one thread reads the TUN, translates with the
//!   sans-IO [`rgw_xlat::Translator`] and writes the result back.
//! - [`dns`]: forwards LAN queries and applies [`rgw_dns::synth`] to the replies.
//!
//! Packet paths (testbed addresses):
//! ```text
//! NAT64  hostc fd00::103 → fd64:64::203.0.113.80 ─route prefix64→ TUN → 10.64.0.1 → 203.0.113.80
//!        (the static proxy of hostc, or a dynamic one for other IPv6 sources) → SNAT service address
//! NAT46  hosta 192.168.0.101 → 10.64.0.x (A synthesised at DNS time) ─route pool4→ TUN
//!        → fd64:64::192.168.0.101 → 2001:db8:0:113::80 → NAT66 to rgw64.wan_address6
//! in     client → R (claimed) → DNAT to hostc's proxy 10.64.0.1 → TUN → fd64:64::client → hostc
//! NAT66  hostc → a real AAAA: routed, NAT66 to rgw64.wan_address6
//! ```

pub mod config;
pub mod dns;
pub mod plumbing;
pub mod tun;

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use rgw_dns::synth::Synth;
use rgw_xlat::{Translator, XlatConfig};

pub use config::Rgw64Config;

/// The IPv4 source of ICMP errors the translator originates: the IPv4
/// dummy address for translators (RFC 7600 §4), never one of ours, so the
/// kernel does not drop it as a martian with a local source.
pub const TRANSLATOR_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 0, 8);

/// The translator and the DNS synthesis, shared by the TUN thread and the
/// LAN DNS (which binds proxy IPv4 addresses at DNS time).
pub struct Rgw64 {
    pub cfg: Rgw64Config,
    xlat: Mutex<Translator>,
    pub synth: Synth,
    /// Errors of the TUN shell (the translator counts its own drops).
    pub tun_stats: std::sync::Arc<tun::TunStats>,
}

impl Rgw64 {
    pub fn new(cfg: &Rgw64Config) -> anyhow::Result<Rgw64> {
        let xc = XlatConfig {
            prefix64: cfg.prefix64.network(),
            pool4: cfg.pool4.network(),
            pool4_len: cfg.pool4.prefix_len(),
            static_map: cfg.statics.iter().map(|s| (s.ipv4, s.ipv6)).collect(),
            dynamic_timeout: cfg.dynamic_timeout,
            max_dynamic: cfg.max_dynamic as usize,
            mtu6: cfg.mtu,
            mtu4: cfg.mtu,
            own_v4: TRANSLATOR_V4,
            own_v6: Ipv6Addr::UNSPECIFIED,
        };
        let xc = XlatConfig {
            own_v6: xc.own_v6_default(),
            ..xc
        };
        let xlat = Translator::new(xc).map_err(|e| anyhow::anyhow!("[rgw64]: {e}"))?;
        Ok(Rgw64 {
            synth: Synth::new(cfg.prefix64.network(), cfg.synth_ttl),
            cfg: cfg.clone(),
            xlat: Mutex::new(xlat),
            tun_stats: std::sync::Arc::default(),
        })
    }

    /// The translator (a poisoned lock is taken over: its state is a table of
    /// bindings, consistent after any single operation).
    pub fn xlat(&self) -> MutexGuard<'_, Translator> {
        self.xlat.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// NAT46 at DNS time: the proxy IPv4 for an IPv6-only destination.
    pub fn map_v6(&self, v6: Ipv6Addr) -> Option<Ipv4Addr> {
        self.xlat().map_v6(Instant::now(), v6)
    }

    /// Forgets idle dynamic bindings.
    pub fn expire(&self, now: Instant) {
        self.xlat().expire(now);
    }

    /// Counters and gauges for the Prometheus endpoint (every drop reason,
    /// zeros included, so each series exists from the start).
    pub fn metrics(&self) -> crate::prometheus::Rgw64Counters {
        let s = self.xlat().stats();
        let tun = &self.tun_stats;
        crate::prometheus::Rgw64Counters {
            packets_4to6: s.packets_4to6,
            packets_6to4: s.packets_6to4,
            bytes_4to6: s.bytes_4to6,
            bytes_6to4: s.bytes_6to4,
            icmp_4to6: s.icmp_4to6,
            icmp_6to4: s.icmp_6to4,
            icmp_errors_sent: s.icmp_errors_sent,
            icmp_errors_rate_limited: s.icmp_errors_rate_limited,
            fragments_in: s.fragments_in,
            fragments_out: s.fragments_out,
            drops: rgw_xlat::Drop::ALL
                .iter()
                .map(|d| (d.as_str(), s.dropped(*d)))
                .collect(),
            mappings_static: s.mappings_static as u64,
            mappings_dynamic: s.mappings_dynamic as u64,
            mappings_created: s.mappings_created,
            mappings_expired: s.mappings_expired,
            mapping_overflows: s.mapping_overflows,
            tun_read_errors: tun.read_errors.load(std::sync::atomic::Ordering::Relaxed),
            tun_write_errors: tun.write_errors.load(std::sync::atomic::Ordering::Relaxed),
        }
    }

    /// Counters and bindings for `rgw status`.
    pub fn status(&self) -> serde_json::Value {
        let x = self.xlat();
        let s = x.stats();
        let drops: serde_json::Map<String, serde_json::Value> = rgw_xlat::Drop::ALL
            .iter()
            .map(|d| (d.as_str().to_string(), s.dropped(*d).into()))
            .filter(|(_, n)| n != &serde_json::Value::from(0u64))
            .collect();
        let now = Instant::now();
        let mappings: Vec<serde_json::Value> = x
            .mappings()
            .iter()
            .map(|m| {
                serde_json::json!({
                    "ipv4": m.v4.to_string(),
                    "ipv6": m.v6.to_string(),
                    "origin": match m.origin {
                        rgw_xlat::MappingOrigin::Static => "static",
                        rgw_xlat::MappingOrigin::Dns => "dns",
                        rgw_xlat::MappingOrigin::Packet => "packet",
                    },
                    "packets": m.packets,
                    "expires_in_s": m.expires.map(|e| e.saturating_duration_since(now).as_secs_f64()),
                })
            })
            .collect();
        drop(x);
        let tun = &self.tun_stats;
        serde_json::json!({
            "packets_4to6": s.packets_4to6,
            "packets_6to4": s.packets_6to4,
            "bytes_4to6": s.bytes_4to6,
            "bytes_6to4": s.bytes_6to4,
            "icmp_4to6": s.icmp_4to6,
            "icmp_6to4": s.icmp_6to4,
            "icmp_errors_sent": s.icmp_errors_sent,
            "mappings_static": s.mappings_static,
            "mappings_dynamic": s.mappings_dynamic,
            "mappings_created": s.mappings_created,
            "mappings_expired": s.mappings_expired,
            "mapping_overflows": s.mapping_overflows,
            "drops": drops,
            "tun_read_errors": tun.read_errors.load(std::sync::atomic::Ordering::Relaxed),
            "tun_write_errors": tun.write_errors.load(std::sync::atomic::Ordering::Relaxed),
            "mappings": mappings,
        })
    }
}
