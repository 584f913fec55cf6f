//! RGW64 translator: sans-IO IPv4 ⇄ IPv6 translation (RFC 7915) with TAYGA-like
//! address mapping (no port translation).
//!
//! Address model:
//! - `prefix64`: an IPv6 /96 inside fc00::/7 (a ULA, seed "Extra 1: RGW64"). IPv4
//!   address `v` ↔ `prefix64::v` (RFC 6052 /96 embedding, stateless). Used for the
//!   proxy ULAs synthesised in DNS (AAAA for IPv4-only names) and as the IPv6 face
//!   of every IPv4 source seen by IPv6 hosts.
//! - `pool4`: a private IPv4 range of proxy IPv4 addresses, each bound 1:1 to an
//!   IPv6 address: static bindings (IPv6-only private hosts reachable from IPv4) and
//!   dynamic ones created at DNS time ([`Translator::map_v6`], NAT46 towards
//!   IPv6-only destinations) or by the first packet of an IPv6 source that has none
//!   (NAT64: IPv6 host talking to IPv4 through a proxy ULA). Dynamic bindings age out
//!   after `dynamic_timeout` without traffic.
//!
//! The I/O shell reads a packet from the TUN device, calls [`Translator::translate`]
//! and writes every packet left in `out` back to the TUN device.
//!
//! TTL / Hop Limit: the translator is a router (RFC 7915 §4.1, §5.1) and decrements
//! the TTL / Hop Limit exactly once, sending Time Exceeded from its own address when
//! it reaches zero. Through a TUN device the Linux kernel forwards the packet twice
//! more (once into the TUN, once out of it after we write it back), so an end host
//! sees the TTL drop by 3 in total across the gateway; traceroute shows the kernel
//! hop, the translator (`own_v4` / `own_v6`), then the next hop. TAYGA behaves the
//! same way. We do not hide our hop: it keeps traceroute honest about where
//! translation happens.

#![forbid(unsafe_code)]

mod checksum;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzz_harness;
mod icmp;
mod mapping;
mod v4to6;
mod v6to4;
mod wire;

#[cfg(test)]
mod tests;

use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

pub use mapping::{MappingInfo, MappingOrigin};

/// Translator configuration. Validated by [`Translator::new`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XlatConfig {
    /// IPv6 /96 prefix inside fc00::/7 for the proxy ULAs (low 32 bits ignored).
    pub prefix64: Ipv6Addr,
    /// First address of the proxy IPv4 range (host bits ignored).
    pub pool4: Ipv4Addr,
    /// Prefix length of the proxy IPv4 range (16..=30).
    pub pool4_len: u8,
    /// Static bindings proxy IPv4 (inside pool4) ↔ IPv6 host (not inside prefix64).
    pub static_map: Vec<(Ipv4Addr, Ipv6Addr)>,
    /// Idle time after which a dynamic binding is forgotten.
    pub dynamic_timeout: Duration,
    /// Upper bound on the number of live dynamic bindings.
    pub max_dynamic: usize,
    /// Path MTU assumed on the IPv6 side (>= 1280).
    pub mtu6: u16,
    /// Path MTU assumed on the IPv4 side (>= 576).
    pub mtu4: u16,
    /// The translator's own IPv4 address (TAYGA's `ipv4-addr`): source of the ICMPv4
    /// errors it originates, and IPv4 source of translated ICMPv6 errors from IPv6
    /// routers that have no binding (RFC 7915 §5.1 / RFC 6791), so traceroute does not
    /// eat the pool. It must NOT be an address of a local interface: Linux drops a
    /// packet arriving on the TUN with a local source address (martian, unless
    /// `accept_local`). Typically the first host address of pool4; inside pool4 it is
    /// reserved and never handed out.
    pub own_v4: Ipv4Addr,
    /// Source address of the ICMPv6 errors the translator originates; the natural
    /// choice is `prefix64::own_v4` ([`XlatConfig::own_v6_default`]).
    pub own_v6: Ipv6Addr,
}

impl XlatConfig {
    /// `prefix64::own_v4`, the recommended `own_v6`.
    pub fn own_v6_default(&self) -> Ipv6Addr {
        embed_in(self.prefix64, self.own_v4)
    }
}

impl Default for XlatConfig {
    /// Example values: fd64:6464:6464::/96, 10.64.0.0/24 with own_v4 10.64.0.1 (own_v6
    /// fd64:6464:6464::a40:1), 300 s, 1024 bindings, MTU 1500 both sides.
    fn default() -> Self {
        let prefix64 = Ipv6Addr::new(0xfd64, 0x6464, 0x6464, 0, 0, 0, 0, 0);
        let own_v4 = Ipv4Addr::new(10, 64, 0, 1);
        XlatConfig {
            prefix64,
            pool4: Ipv4Addr::new(10, 64, 0, 0),
            pool4_len: 24,
            static_map: Vec::new(),
            dynamic_timeout: Duration::from_secs(300),
            max_dynamic: 1024,
            mtu6: 1500,
            mtu4: 1500,
            own_v4,
            own_v6: embed_in(prefix64, own_v4),
        }
    }
}

/// Configuration errors, each carrying the offending value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum XlatError {
    #[error("prefix64 {0} is not a Unique Local Address (fc00::/7)")]
    PrefixNotUla(Ipv6Addr),
    #[error("pool4 length /{0} out of range (expected 16..=30)")]
    PoolLength(u8),
    #[error("pool4 {0}/{1} is not a private range (10/8, 172.16/12, 192.168/16, 100.64/10)")]
    PoolNotPrivate(Ipv4Addr, u8),
    #[error("own_v4 {0} is not a unicast address")]
    OwnV4(Ipv4Addr),
    #[error("static mapping {0} -> {1}: IPv4 address outside pool4")]
    StaticOutsidePool(Ipv4Addr, Ipv6Addr),
    #[error("static mapping {0} -> {1}: IPv6 address inside prefix64 (would loop)")]
    StaticInPrefix64(Ipv4Addr, Ipv6Addr),
    #[error("static mapping {0} -> {1}: IPv4 address is pool4's network or broadcast address, or own_v4")]
    StaticReserved(Ipv4Addr, Ipv6Addr),
    #[error("static mapping {0} -> {1}: duplicate IPv4 or IPv6 address")]
    StaticDuplicate(Ipv4Addr, Ipv6Addr),
    #[error("mtu6 {0} below the IPv6 minimum 1280")]
    Mtu6(u16),
    #[error("mtu4 {0} below 576")]
    Mtu4(u16),
    #[error("dynamic_timeout must be positive")]
    Timeout,
}

/// Why a packet was not translated. Every drop is counted in [`XlatStats::drops`].
///
/// Some drops come with an ICMP error in `out` (noted per variant).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Drop {
    /// Shorter than its headers say, or a length field inconsistent with the buffer.
    Truncated,
    /// Bad version, IHL, or header field value.
    BadHeader,
    /// IPv4 header checksum or ICMP checksum wrong.
    BadChecksum,
    /// 6→4: destination not inside prefix64.
    DstNotPrefix64,
    /// 4→6: destination inside pool4 without a live binding (or outside pool4).
    DstNotMapped,
    /// 6→4: source needs a dynamic binding and the pool / `max_dynamic` is full.
    PoolExhausted,
    /// Source address that must not be translated (prefix64/pool4 loop, multicast, ...).
    BadSource,
    /// ICMP type/code with no translation (RFC 7915 §4.2 / §5.2 "silently drop").
    IcmpUntranslatable,
    /// ICMP error whose embedded packet cannot be translated (§4.3 / §5.3).
    IcmpInnerUntranslatable,
    /// ICMPv6 inside IPv4 or ICMPv4 inside IPv6.
    IcmpWrongFamily,
    /// Fragmented ICMP: the checksum cannot be recomputed without reassembly.
    FragmentedIcmp,
    /// Fragmented IPv4 UDP with a zero checksum (RFC 7915 §4.5: cannot compute it).
    UdpZeroChecksum,
    /// TTL / Hop Limit expired; ICMP Time Exceeded sent back (in `out`).
    TtlExpired,
    /// 4→6 with DF set and larger than `mtu6`; ICMPv4 Fragmentation Needed sent back.
    FragNeeded,
    /// 6→4 larger than `mtu4` and not fragmentable; ICMPv6 Packet Too Big sent back.
    PacketTooBig,
    /// IPv4 unexpired source route option (§4.1); ICMPv4 Source Route Failed sent back.
    SourceRoute,
    /// IPv6 Routing header with Segments Left != 0 (§5.1); ICMPv6 Parameter Problem sent back.
    RoutingHeader,
    /// IPv6 extension header chain that cannot be walked (unknown order, too long).
    ExtensionHeader,
}

impl Drop {
    /// Number of drop reasons (length of [`XlatStats::drops`]).
    pub const COUNT: usize = 18;
    /// Every reason, in the order of [`XlatStats::drops`].
    pub const ALL: [Drop; Drop::COUNT] = [
        Drop::Truncated,
        Drop::BadHeader,
        Drop::BadChecksum,
        Drop::DstNotPrefix64,
        Drop::DstNotMapped,
        Drop::PoolExhausted,
        Drop::BadSource,
        Drop::IcmpUntranslatable,
        Drop::IcmpInnerUntranslatable,
        Drop::IcmpWrongFamily,
        Drop::FragmentedIcmp,
        Drop::UdpZeroChecksum,
        Drop::TtlExpired,
        Drop::FragNeeded,
        Drop::PacketTooBig,
        Drop::SourceRoute,
        Drop::RoutingHeader,
        Drop::ExtensionHeader,
    ];

    /// Index into [`XlatStats::drops`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// Stable snake_case name for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Drop::Truncated => "truncated",
            Drop::BadHeader => "bad_header",
            Drop::BadChecksum => "bad_checksum",
            Drop::DstNotPrefix64 => "dst_not_prefix64",
            Drop::DstNotMapped => "dst_not_mapped",
            Drop::PoolExhausted => "pool_exhausted",
            Drop::BadSource => "bad_source",
            Drop::IcmpUntranslatable => "icmp_untranslatable",
            Drop::IcmpInnerUntranslatable => "icmp_inner_untranslatable",
            Drop::IcmpWrongFamily => "icmp_wrong_family",
            Drop::FragmentedIcmp => "fragmented_icmp",
            Drop::UdpZeroChecksum => "udp_zero_checksum",
            Drop::TtlExpired => "ttl_expired",
            Drop::FragNeeded => "frag_needed",
            Drop::PacketTooBig => "packet_too_big",
            Drop::SourceRoute => "source_route",
            Drop::RoutingHeader => "routing_header",
            Drop::ExtensionHeader => "extension_header",
        }
    }
}

impl std::fmt::Display for Drop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Counters since start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct XlatStats {
    /// IPv4 packets translated to IPv6 (input packets, not fragments produced).
    pub packets_4to6: u64,
    /// Bytes of those IPv4 input packets.
    pub bytes_4to6: u64,
    /// IPv6 packets translated to IPv4.
    pub packets_6to4: u64,
    /// Bytes of those IPv6 input packets.
    pub bytes_6to4: u64,
    /// ICMPv4 messages translated to ICMPv6 (info and errors).
    pub icmp_4to6: u64,
    /// ICMPv6 messages translated to ICMPv4.
    pub icmp_6to4: u64,
    /// ICMP errors originated by the translator (Time Exceeded, PTB, Frag Needed, ...).
    pub icmp_errors_sent: u64,
    /// ICMP errors not sent because of the rate limit (RFC 4443 §2.4 (f), RFC 1812
    /// §4.3.2.8): 100 per second, bursts of 100.
    pub icmp_errors_rate_limited: u64,
    /// Input packets that were fragments (either direction).
    pub fragments_in: u64,
    /// Fragments produced by fragmenting a packet larger than the MTU.
    pub fragments_out: u64,
    /// Drops per reason, indexed by [`Drop::index`] (see [`Drop::ALL`]).
    pub drops: [u64; Drop::COUNT],
    /// Static bindings configured.
    pub mappings_static: usize,
    /// Live dynamic bindings.
    pub mappings_dynamic: usize,
    /// Dynamic bindings ever created.
    pub mappings_created: u64,
    /// Dynamic bindings expired after being idle.
    pub mappings_expired: u64,
    /// Dynamic binding requests refused because the pool or `max_dynamic` was full.
    pub mapping_overflows: u64,
}

impl XlatStats {
    /// Drops counted for one reason.
    pub fn dropped(&self, reason: Drop) -> u64 {
        self.drops.get(reason.index()).copied().unwrap_or(0)
    }

    /// Sum of all drops.
    pub fn dropped_total(&self) -> u64 {
        self.drops.iter().sum()
    }
}

/// `prefix::v4` (RFC 6052 /96 embedding).
pub(crate) fn embed_in(prefix: Ipv6Addr, v4: Ipv4Addr) -> Ipv6Addr {
    let mut o = prefix.octets();
    o[12..16].copy_from_slice(&v4.octets());
    Ipv6Addr::from(o)
}

/// The translator: configuration, the binding table and counters. Sans-IO.
#[derive(Debug)]
pub struct Translator {
    cfg: XlatConfig,
    prefix96: [u8; 12],
    map: mapping::MappingTable,
    stats: XlatStats,
    /// IPv4 Identification counter for 6→4 packets that need one (§5.1).
    next_ident: u16,
    /// Spare output buffers handed back through [`Translator::recycle`].
    spare: Vec<Vec<u8>>,
    /// Token bucket for originated ICMP errors.
    icmp_tokens: u32,
    icmp_refill: Option<Instant>,
}

impl Translator {
    /// Validate `cfg` and build a translator with its static bindings.
    pub fn new(cfg: XlatConfig) -> Result<Self, XlatError> {
        let map = mapping::MappingTable::new(&cfg)?;
        let mut prefix96 = [0u8; 12];
        prefix96.copy_from_slice(&cfg.prefix64.octets()[..12]);
        let stats = XlatStats {
            mappings_static: cfg.static_map.len(),
            ..XlatStats::default()
        };
        Ok(Translator {
            cfg,
            prefix96,
            map,
            stats,
            next_ident: 1,
            spare: Vec::new(),
            icmp_tokens: icmp::ERROR_BURST,
            icmp_refill: None,
        })
    }

    /// The validated configuration.
    pub fn config(&self) -> &XlatConfig {
        &self.cfg
    }

    /// Translate one packet read from the TUN (IPv4 or IPv6, told apart by the
    /// version nibble) and append zero or more packets to write back to the TUN:
    /// the translated packet, several when fragmenting, or an ICMP error for the
    /// source. **Write every packet in `out` whatever the result**: an `Err` may come
    /// with an ICMP error (Time Exceeded, Fragmentation Needed / Packet Too Big,
    /// Parameter Problem, Source Route Failed). Every `Err` is counted in
    /// [`XlatStats::drops`].
    pub fn translate(
        &mut self,
        now: Instant,
        packet: &[u8],
        out: &mut Vec<Vec<u8>>,
    ) -> Result<(), Drop> {
        let r = match packet.first().map(|b| b >> 4) {
            Some(4) => self.translate_4to6(now, packet, out),
            Some(6) => self.translate_6to4(now, packet, out),
            Some(_) => Err(Drop::BadHeader),
            None => Err(Drop::Truncated),
        };
        if let Err(d) = r {
            if let Some(c) = self.stats.drops.get_mut(d.index()) {
                *c += 1;
            }
        }
        r
    }

    /// Hand output buffers back for reuse (clears `out`); keeps a bounded number.
    pub fn recycle(&mut self, out: &mut Vec<Vec<u8>>) {
        for mut b in out.drain(..) {
            if self.spare.len() < 64 {
                b.clear();
                self.spare.push(b);
            }
        }
    }

    /// Proxy ULA `prefix64::v4` for AAAA synthesis (and IPv4 sources seen by IPv6 hosts).
    pub fn embed(&self, v4: Ipv4Addr) -> Ipv6Addr {
        embed_in(self.cfg.prefix64, v4)
    }

    /// The IPv4 address embedded in `v6` when `v6` is inside prefix64.
    pub fn extract(&self, v6: Ipv6Addr) -> Option<Ipv4Addr> {
        let o = v6.octets();
        if o[..12] == self.prefix96 {
            Some(Ipv4Addr::new(o[12], o[13], o[14], o[15]))
        } else {
            None
        }
    }

    /// Whether `v4` lies in the proxy IPv4 range.
    pub fn in_pool4(&self, v4: Ipv4Addr) -> bool {
        self.map.in_pool(v4)
    }

    /// NAT46 proxy at DNS time: the proxy IPv4 bound to `v6` (an IPv6-only
    /// destination), creating a dynamic binding when there is none and refreshing it
    /// otherwise. `None` when the pool or `max_dynamic` is full (counted in
    /// `mapping_overflows`) or when `v6` is inside prefix64 (use [`Translator::extract`]).
    pub fn map_v6(&mut self, now: Instant, v6: Ipv6Addr) -> Option<Ipv4Addr> {
        if self.extract(v6).is_some() || !wire::v6_unicast(v6) {
            return None;
        }
        self.map.get_or_create(now, v6, MappingOrigin::Dns, false)
    }

    /// The IPv6 address bound to the proxy IPv4 `v4`, if there is a binding (an idle
    /// one stays until [`Translator::expire`] or the next packet finds it dead).
    pub fn lookup_v4(&self, v4: Ipv4Addr) -> Option<Ipv6Addr> {
        self.map.peek_v4(v4)
    }

    /// The proxy IPv4 bound to `v6`, if any (no creation, no refresh).
    pub fn lookup_v6(&self, v6: Ipv6Addr) -> Option<Ipv4Addr> {
        self.map.peek_v6(v6)
    }

    /// Forget dynamic bindings idle for `dynamic_timeout` or longer.
    pub fn expire(&mut self, now: Instant) {
        self.map.expire(now);
    }

    /// Counters (packets/bytes each way, drops by reason, ICMP, fragments, bindings).
    pub fn stats(&self) -> XlatStats {
        let mut s = self.stats.clone();
        s.mappings_dynamic = self.map.dynamic_len();
        s.mappings_created = self.map.created;
        s.mappings_expired = self.map.expired;
        s.mapping_overflows = self.map.overflows;
        s
    }

    /// All bindings, static first then dynamic by proxy IPv4 (for `rgw status`).
    pub fn mappings(&self) -> Vec<MappingInfo> {
        self.map.list()
    }

    /// An empty output buffer, reused when possible.
    fn buffer(&mut self, capacity: usize) -> Vec<u8> {
        match self.spare.pop() {
            Some(mut b) => {
                b.reserve(capacity);
                b
            }
            None => Vec::with_capacity(capacity),
        }
    }
}
