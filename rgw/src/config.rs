//! Gateway configuration: TOML loaded with `config` + serde, then validated.
//!
//! Every error names the file, the key and what was expected, so an operator
//! can fix the file without reading the source. `docs/configuration.md`
//! documents each key with its default.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::Ipv4Net;
use serde::Deserialize;

use crate::pool::{Proto, Service};

/// A configuration error: always names the file, and the key when one is at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: {message}")]
    Load { file: PathBuf, message: String },
    #[error("{file}: key `{key}`: expected {expected}, found {found}")]
    Invalid {
        file: PathBuf,
        key: String,
        expected: String,
        found: String,
    },
}

/// What to do with a query whose reservation cannot be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExhaustedPolicy {
    /// Send nothing: the resolver retries a moment later (the seed's behaviour).
    Drop,
    /// Answer SERVFAIL at once.
    Servfail,
    /// Answer REFUSED at once.
    Refused,
}

/// How first packets reach the daemon's claim gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueBackend {
    /// Probe the kernel: nft `queue` if it works, else the xt NFQUEUE target.
    Auto,
    /// nftables `queue` statement (needs CONFIG_NFT_QUEUE).
    Nft,
    /// iptables-nft `-j NFQUEUE` (needs the xt NFQUEUE target).
    Xt,
}

// ---- raw, as written in the file -------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    zone: RawZone,
    wan: RawWan,
    lan: RawLan,
    pool: RawPool,
    #[serde(default)]
    dataplane: RawDataplane,
    #[serde(default)]
    control: RawControl,
    #[serde(default)]
    metrics: RawMetrics,
    binding_log: Option<RawBindingLog>,
    proxy: Option<RawProxy>,
    rgw64: Option<crate::rgw64::config::RawRgw64>,
    #[serde(default)]
    alg: RawAlg,
    #[serde(default)]
    limits: crate::limits::RawLimits,
    #[serde(default)]
    admission: crate::admission::RawAdmission,
    #[serde(default)]
    hosts: Vec<RawHost>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAlg {
    #[serde(default = "default_true")]
    enabled: bool,
    queue_num: Option<u16>,
    #[serde(default = "default_ftp_ports")]
    ftp_ports: Vec<u16>,
    #[serde(default = "default_sip_ports")]
    sip_ports: Vec<u16>,
    #[serde(default = "default_rtsp_ports")]
    rtsp_ports: Vec<u16>,
    #[serde(default = "default_alg_max_flows")]
    max_flows: usize,
    #[serde(default = "default_alg_max_pinholes")]
    max_pinholes_per_flow: usize,
    #[serde(default = "default_alg_max_hold")]
    max_hold: usize,
    #[serde(default = "default_alg_data_lifetime", with = "humantime_serde")]
    ftp_data_lifetime: Duration,
    #[serde(default = "default_alg_media_lifetime", with = "humantime_serde")]
    media_lifetime: Duration,
    #[serde(default = "default_alg_flow_idle", with = "humantime_serde")]
    flow_idle: Duration,
}

impl Default for RawAlg {
    fn default() -> Self {
        RawAlg {
            enabled: true,
            queue_num: None,
            ftp_ports: default_ftp_ports(),
            sip_ports: default_sip_ports(),
            rtsp_ports: default_rtsp_ports(),
            max_flows: default_alg_max_flows(),
            max_pinholes_per_flow: default_alg_max_pinholes(),
            max_hold: default_alg_max_hold(),
            ftp_data_lifetime: default_alg_data_lifetime(),
            media_lifetime: default_alg_media_lifetime(),
            flow_idle: default_alg_flow_idle(),
        }
    }
}

fn default_ftp_ports() -> Vec<u16> {
    vec![21]
}
fn default_sip_ports() -> Vec<u16> {
    vec![5060]
}
fn default_rtsp_ports() -> Vec<u16> {
    vec![554]
}
fn default_alg_max_flows() -> usize {
    4096
}
fn default_alg_max_pinholes() -> usize {
    32
}
fn default_alg_max_hold() -> usize {
    8192
}
fn default_alg_data_lifetime() -> Duration {
    Duration::from_secs(30)
}
fn default_alg_media_lifetime() -> Duration {
    Duration::from_secs(120)
}
fn default_alg_flow_idle() -> Duration {
    Duration::from_secs(300)
}

/// The application layer gateways (`[alg]`): which control ports are queued
/// to the ALG engine and its bounds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlgConfig {
    pub enabled: bool,
    pub queue_num: u16,
    /// FTP control ports (TCP).
    pub ftp_ports: Vec<u16>,
    /// SIP ports (UDP and TCP).
    pub sip_ports: Vec<u16>,
    /// RTSP ports (TCP).
    pub rtsp_ports: Vec<u16>,
    pub max_flows: usize,
    pub max_pinholes_per_flow: usize,
    pub max_hold: usize,
    pub ftp_data_lifetime: Duration,
    pub media_lifetime: Duration,
    pub flow_idle: Duration,
}

impl AlgConfig {
    /// Whether (IP protocol number, port) is an ALG control port.
    pub fn is_queued(&self, proto: u8, port: u16) -> bool {
        self.enabled
            && match proto {
                6 => {
                    self.ftp_ports.contains(&port)
                        || self.sip_ports.contains(&port)
                        || self.rtsp_ports.contains(&port)
                }
                17 => self.sip_ports.contains(&port),
                _ => false,
            }
    }

    /// (IP protocol number, port) of every queued control port.
    pub fn queued_ports(&self) -> Vec<(u8, u16)> {
        let mut v: Vec<(u8, u16)> = Vec::new();
        v.extend(self.ftp_ports.iter().map(|&p| (6, p)));
        v.extend(self.sip_ports.iter().flat_map(|&p| [(17, p), (6, p)]));
        v.extend(self.rtsp_ports.iter().map(|&p| (6, p)));
        v.sort_unstable();
        v.dedup();
        v
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProxy {
    #[serde(default = "default_http_port")]
    http_port: u16,
    #[serde(default = "default_https_port")]
    https_port: u16,
    #[serde(default = "default_http_port")]
    backend_http_port: u16,
    #[serde(default = "default_https_port")]
    backend_https_port: u16,
}

fn default_http_port() -> u16 {
    80
}
fn default_https_port() -> u16 {
    443
}

/// The www proxy (`[proxy]`): `www.<host>` → the service address, where HTTP
/// is routed by Host and TLS by SNI (not terminated) to the host's web server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyConfig {
    /// Ports on the service address; 0 turns that listener off.
    pub http_port: u16,
    pub https_port: u16,
    /// Ports of the private hosts' web servers.
    pub backend_http_port: u16,
    pub backend_https_port: u16,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBindingLog {
    path: PathBuf,
    #[serde(default = "default_bindlog_max_bytes")]
    max_bytes: u64,
    #[serde(default = "default_bindlog_keep")]
    keep: u32,
    #[serde(default = "default_true")]
    daily: bool,
    #[serde(default = "default_bindlog_queue")]
    queue: usize,
}

fn default_bindlog_max_bytes() -> u64 {
    256 << 20
}
fn default_bindlog_keep() -> u32 {
    30
}
fn default_true() -> bool {
    true
}
fn default_bindlog_queue() -> usize {
    4096
}

/// The binding log (`[binding_log]`): one line per claim, for attribution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindingLogConfig {
    pub path: PathBuf,
    pub max_bytes: u64,
    pub keep: u32,
    pub daily: bool,
    /// Records queued between the gate and the writer thread; beyond it they are counted as dropped.
    pub queue: usize,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    listen: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawZone {
    name: String,
    ns_name: Option<String>,
    hostmaster: Option<String>,
    #[serde(default = "default_static_ttl")]
    static_ttl: u32,
    #[serde(default = "default_negative_ttl")]
    negative_ttl: u32,
    serial: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWan {
    interface: String,
    service_address: Ipv4Addr,
    #[serde(default = "default_dns_port")]
    dns_port: u16,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLan {
    interface: String,
    address: Ipv4Addr,
    network: String,
    upstream_resolver: String,
    #[serde(default = "default_dns_port")]
    dns_port: u16,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPool {
    addresses: Vec<String>,
    #[serde(default = "default_tmax", with = "humantime_serde")]
    tmax: Duration,
    #[serde(default = "default_exhausted")]
    on_exhausted: String,
    #[serde(default = "default_max_pending")]
    default_max_pending: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDataplane {
    #[serde(default = "default_table")]
    table: String,
    #[serde(default)]
    queue_num: u16,
    #[serde(default = "default_backend")]
    queue_backend: String,
    #[serde(default)]
    keep_on_exit: bool,
    #[serde(default)]
    synproxy: bool,
    #[serde(default = "default_synproxy_mss")]
    synproxy_mss: u16,
    #[serde(default = "default_synproxy_wscale")]
    synproxy_wscale: u8,
}

fn default_synproxy_mss() -> u16 {
    1460
}
fn default_synproxy_wscale() -> u8 {
    7
}

impl Default for RawDataplane {
    fn default() -> Self {
        RawDataplane {
            table: default_table(),
            queue_num: 0,
            queue_backend: default_backend(),
            keep_on_exit: false,
            synproxy: false,
            synproxy_mss: default_synproxy_mss(),
            synproxy_wscale: default_synproxy_wscale(),
        }
    }
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawControl {
    socket: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHost {
    name: String,
    /// Absent for an IPv6-only host (needs `[rgw64]`).
    ipv4: Option<Ipv4Addr>,
    ipv6: Option<Ipv6Addr>,
    /// An IPv6-only host's static proxy IPv4 address inside `rgw64.pool4`
    /// (default: the next free one from the start of the range).
    proxy4: Option<Ipv4Addr>,
    max_pending: Option<u32>,
    #[serde(default)]
    services: BTreeMap<String, String>,
}

fn default_static_ttl() -> u32 {
    60
}
fn default_negative_ttl() -> u32 {
    30
}
fn default_dns_port() -> u16 {
    53
}
fn default_tmax() -> Duration {
    Duration::from_secs(2)
}
fn default_exhausted() -> String {
    "drop".into()
}
fn default_max_pending() -> u32 {
    3
}
fn default_table() -> String {
    "rgw".to_string()
}
fn default_backend() -> String {
    "auto".into()
}

// ---- validated ------------------------------------------------------------------

/// The validated configuration the daemon runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub file: PathBuf,
    pub zone: ZoneConfig,
    pub wan: WanConfig,
    pub lan: LanConfig,
    pub pool: PoolConfig,
    pub dataplane: DataplaneConfig,
    pub control_socket: PathBuf,
    /// Prometheus endpoint (`[metrics] listen`); None = off.
    pub metrics_listen: Option<SocketAddr>,
    /// None = no binding log.
    pub binding_log: Option<BindingLogConfig>,
    /// None = no www names and no proxy.
    pub proxy: Option<ProxyConfig>,
    pub alg: AlgConfig,
    /// `[limits]`: resource bounds.
    pub limits: crate::limits::LimitsConfig,
    /// `[admission]`: the admission policy (everything off by default).
    pub admission: crate::admission::AdmissionConfig,
    /// None = no NAT64/NAT46 (RGW64).
    pub rgw64: Option<crate::rgw64::config::Rgw64Config>,
    pub hosts: Vec<HostConfig>,
}

#[derive(Debug, Clone)]
pub struct ZoneConfig {
    /// Absolute, lower-case, with the trailing dot: `gwa.demo.`
    pub name: String,
    /// Absolute name of the zone's name server (glue points at the service address).
    pub ns_name: String,
    pub hostmaster: String,
    pub static_ttl: u32,
    pub negative_ttl: u32,
    pub serial: u32,
}

#[derive(Debug, Clone)]
pub struct WanConfig {
    pub interface: String,
    pub service_address: Ipv4Addr,
    pub dns_port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LanConfig {
    pub interface: String,
    pub address: Ipv4Addr,
    pub network: Ipv4Net,
    pub upstream_resolver: SocketAddr,
    pub dns_port: u16,
}

#[derive(Debug, Clone)]
pub struct PoolConfig {
    pub addresses: Vec<Ipv4Addr>,
    pub tmax: Duration,
    pub on_exhausted: ExhaustedPolicy,
}

#[derive(Debug, Clone)]
pub struct DataplaneConfig {
    pub table: String,
    pub queue_num: u16,
    pub queue_backend: QueueBackend,
    /// Leave the ruleset in place on a clean exit (for restarts and upgrades:
    /// SNAT and filtering stay, the next start reconciles).
    pub keep_on_exit: bool,
    /// The kernel's SYN proxy answers SYNs to reserved pool addresses with
    /// SYN cookies; only a client that completes the handshake reaches the
    /// claim gate (see `ruleset`). `synproxy_mss`/`synproxy_wscale` are the
    /// options announced to the client: those of the private hosts.
    pub synproxy: bool,
    pub synproxy_mss: u16,
    pub synproxy_wscale: u8,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostConfig {
    /// Lower-case single label, e.g. `hosta`.
    pub name: String,
    /// Where inbound IPv4 for this host goes: its own address, or for an
    /// IPv6-only host its static proxy address in `rgw64.pool4` (the
    /// translator carries the flow on to [`HostConfig::ipv6`]).
    pub ipv4: Ipv4Addr,
    pub ipv6: Option<Ipv6Addr>,
    /// The host has no IPv4 address of its own (`ipv4` is its proxy address).
    pub ipv6_only: bool,
    /// Pending reservations allowed at once; 0 = unlimited.
    pub max_pending: u32,
    /// Explicit service names (`ssh` → tcp/22), lower-case labels.
    pub services: BTreeMap<String, Service>,
}

impl HostConfig {
    /// The slot a removed host leaves after a reload (empty name: the zone
    /// never answers it, the host map skips it).
    pub fn vacant() -> HostConfig {
        HostConfig {
            name: String::new(),
            ipv4: Ipv4Addr::UNSPECIFIED,
            ipv6: None,
            ipv6_only: false,
            max_pending: 0,
            services: BTreeMap::new(),
        }
    }
}

/// Largest pool we accept: one nftables interval set and a pool index of this size
/// stay small; larger pools are almost certainly a typo (a /8).
const MAX_POOL: usize = 1 << 20;

impl Config {
    /// Loads and validates `path`. Touches nothing outside the file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Self::load_from(
            path,
            config::File::from(path).format(config::FileFormat::Toml),
        )
    }

    /// Parses and validates TOML `text` as if it had been read from `file`
    /// (which is only named in errors): the loader without the file system,
    /// for the fuzz target and tests.
    pub fn from_toml_str(file: &Path, text: &str) -> Result<Config, ConfigError> {
        Self::load_from(file, config::File::from_str(text, config::FileFormat::Toml))
    }

    fn load_from<S>(path: &Path, source: S) -> Result<Config, ConfigError>
    where
        S: config::Source + Send + Sync + 'static,
    {
        let raw: RawConfig = config::Config::builder()
            .add_source(source)
            .build()
            .and_then(|c| c.try_deserialize())
            .map_err(|e| ConfigError::Load {
                file: path.to_path_buf(),
                message: fix_key_path(&e.to_string()),
            })?;
        validate(path, raw)
    }
}

pub(crate) fn invalid(
    file: &Path,
    key: &str,
    expected: &str,
    found: impl std::fmt::Display,
) -> ConfigError {
    ConfigError::Invalid {
        file: file.to_path_buf(),
        key: key.to_string(),
        expected: expected.to_string(),
        found: format!("\"{found}\""),
    }
}

/// A DNS label as we accept it for host and service names: LDH, 1..=63 bytes.
fn is_ldh_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn absolute_name(file: &Path, key: &str, s: &str) -> Result<String, ConfigError> {
    let lower = s.trim().to_ascii_lowercase();
    let name = if lower.ends_with('.') {
        lower
    } else {
        format!("{lower}.")
    };
    // Exactly one trailing dot comes off: `a..` keeps an empty label and is refused.
    let labels: Vec<&str> = name.strip_suffix('.').unwrap_or(&name).split('.').collect();
    if name.len() > 254 || labels.iter().any(|l| !is_ldh_label(l)) {
        return Err(invalid(
            file,
            key,
            "a domain name of letters, digits and hyphens, e.g. \"gwa.demo.\"",
            s,
        ));
    }
    Ok(name)
}

/// `tcp/22`, `udp/5060`.
pub fn parse_service(s: &str) -> Option<Service> {
    let (proto, port) = s.trim().split_once('/')?;
    let proto = match proto.to_ascii_lowercase().as_str() {
        "tcp" => Proto::Tcp,
        "udp" => Proto::Udp,
        _ => return None,
    };
    let port: u16 = port.parse().ok().filter(|p| *p != 0)?;
    Some(Service { proto, port })
}

/// One pool entry: an address, a range `a-b`, or a CIDR block.
fn expand_pool_entry(entry: &str) -> Option<Vec<Ipv4Addr>> {
    let entry = entry.trim();
    if let Some((a, b)) = entry.split_once('-') {
        let a: u32 = a.trim().parse::<Ipv4Addr>().ok()?.into();
        let b: u32 = b.trim().parse::<Ipv4Addr>().ok()?.into();
        if a > b || (b - a) as usize >= MAX_POOL {
            return None;
        }
        return Some((a..=b).map(Ipv4Addr::from).collect());
    }
    if entry.contains('/') {
        let net: Ipv4Net = entry.parse().ok()?;
        if net.prefix_len() < 12 {
            return None;
        }
        // Every address of the block: the pool addresses are routed to us, they are
        // not hosts on a link, so network and broadcast addresses are usable too.
        let first: u32 = net.network().into();
        let last: u32 = net.broadcast().into();
        return Some((first..=last).map(Ipv4Addr::from).collect());
    }
    entry.parse::<Ipv4Addr>().ok().map(|a| vec![a])
}

fn validate_alg(file: &Path, a: &RawAlg, gate_queue: u16) -> Result<AlgConfig, ConfigError> {
    let queue_num = a.queue_num.unwrap_or(gate_queue.wrapping_add(1));
    if a.enabled && queue_num == gate_queue {
        return Err(invalid(
            file,
            "alg.queue_num",
            "a queue number other than dataplane.queue_num",
            queue_num,
        ));
    }
    let mut seen: Vec<(u8, u16)> = Vec::new();
    for (key, ports, protos) in [
        ("alg.ftp_ports", &a.ftp_ports, &[6u8][..]),
        ("alg.sip_ports", &a.sip_ports, &[6u8, 17][..]),
        ("alg.rtsp_ports", &a.rtsp_ports, &[6u8][..]),
    ] {
        for &p in ports {
            if p == 0 {
                return Err(invalid(file, key, "ports between 1 and 65535", p));
            }
            for &proto in protos {
                if seen.contains(&(proto, p)) {
                    return Err(invalid(file, key, "a port no other ALG protocol uses", p));
                }
                seen.push((proto, p));
            }
        }
    }
    for (key, v, max) in [
        ("alg.max_flows", a.max_flows, 1 << 20),
        ("alg.max_pinholes_per_flow", a.max_pinholes_per_flow, 1024),
        ("alg.max_hold", a.max_hold, 1 << 20),
    ] {
        if v == 0 || v > max {
            return Err(invalid(
                file,
                key,
                &format!("a number between 1 and {max}"),
                v,
            ));
        }
    }
    for (key, d) in [
        ("alg.ftp_data_lifetime", a.ftp_data_lifetime),
        ("alg.media_lifetime", a.media_lifetime),
        ("alg.flow_idle", a.flow_idle),
    ] {
        if d.is_zero() || d > Duration::from_secs(86_400) {
            return Err(invalid(
                file,
                key,
                "a duration between 1ms and 24h such as \"30s\"",
                format!("{d:?}"),
            ));
        }
    }
    Ok(AlgConfig {
        enabled: a.enabled,
        queue_num,
        ftp_ports: a.ftp_ports.clone(),
        sip_ports: a.sip_ports.clone(),
        rtsp_ports: a.rtsp_ports.clone(),
        max_flows: a.max_flows,
        max_pinholes_per_flow: a.max_pinholes_per_flow,
        max_hold: a.max_hold,
        ftp_data_lifetime: a.ftp_data_lifetime,
        media_lifetime: a.media_lifetime,
        flow_idle: a.flow_idle,
    })
}

fn validate(file: &Path, raw: RawConfig) -> Result<Config, ConfigError> {
    let zone_name = absolute_name(file, "zone.name", &raw.zone.name)?;
    let ns_name = match &raw.zone.ns_name {
        Some(n) => absolute_name(file, "zone.ns_name", n)?,
        // Checked like a written name: near 254 characters the prefix would
        // make the default too long for DNS.
        None => absolute_name(file, "zone.ns_name", &format!("ns.{zone_name}"))?,
    };
    let hostmaster = match &raw.zone.hostmaster {
        Some(n) => absolute_name(file, "zone.hostmaster", n)?,
        None => absolute_name(file, "zone.hostmaster", &format!("hostmaster.{zone_name}"))?,
    };
    if !ns_name.ends_with(&format!(".{zone_name}")) {
        return Err(invalid(
            file,
            "zone.ns_name",
            &format!("a name inside the zone {zone_name} (its glue is the service address)"),
            &ns_name,
        ));
    }
    let serial = raw.zone.serial.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as u32)
            .unwrap_or(1)
    });

    for (key, iface) in [
        ("wan.interface", &raw.wan.interface),
        ("lan.interface", &raw.lan.interface),
    ] {
        if iface.is_empty() || iface.len() > 15 || iface.contains(['/', ' ']) {
            return Err(invalid(
                file,
                key,
                "a network interface name (1-15 characters)",
                iface,
            ));
        }
    }

    let network: Ipv4Net = raw.lan.network.parse().map_err(|_| {
        invalid(
            file,
            "lan.network",
            "an IPv4 CIDR block such as \"192.168.0.0/24\"",
            &raw.lan.network,
        )
    })?;
    let network = network.trunc();
    if !network.contains(&raw.lan.address) {
        return Err(invalid(
            file,
            "lan.address",
            &format!("an address inside lan.network {network}"),
            raw.lan.address,
        ));
    }
    let upstream_resolver = parse_socket_addr(&raw.lan.upstream_resolver).ok_or_else(|| {
        invalid(
            file,
            "lan.upstream_resolver",
            "an address with optional port, e.g. \"203.0.113.54\" or \"203.0.113.54:53\"",
            &raw.lan.upstream_resolver,
        )
    })?;

    let mut addresses = Vec::new();
    if raw.pool.addresses.is_empty() {
        return Err(invalid(
            file,
            "pool.addresses",
            "at least one address, range or CIDR block",
            "[]",
        ));
    }
    for (i, entry) in raw.pool.addresses.iter().enumerate() {
        let expanded = expand_pool_entry(entry).ok_or_else(|| {
            invalid(
                file,
                &format!("pool.addresses[{i}]"),
                "an IPv4 address, a range \"a-b\" or a CIDR block no larger than /12",
                entry,
            )
        })?;
        addresses.extend(expanded);
        if addresses.len() > MAX_POOL {
            return Err(invalid(
                file,
                "pool.addresses",
                "at most 1048576 addresses in all",
                addresses.len(),
            ));
        }
    }
    addresses.sort_unstable();
    addresses.dedup();
    for a in &addresses {
        if *a == raw.wan.service_address {
            return Err(invalid(
                file,
                "pool.addresses",
                "addresses other than wan.service_address (the service address serves DNS and outbound NAT)",
                a,
            ));
        }
    }
    if raw.pool.tmax < Duration::from_millis(1) || raw.pool.tmax > Duration::from_secs(3600) {
        return Err(invalid(
            file,
            "pool.tmax",
            "a duration between 1ms and 1h, e.g. \"2s\"",
            humantime_serde::re::humantime::format_duration(raw.pool.tmax).to_string(),
        ));
    }

    if raw.dataplane.table.is_empty()
        || raw.dataplane.table.len() > 32
        || !raw
            .dataplane
            .table
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return Err(invalid(
            file,
            "dataplane.table",
            "a table name of letters, digits and _",
            &raw.dataplane.table,
        ));
    }

    let on_exhausted = match raw.pool.on_exhausted.as_str() {
        "drop" => ExhaustedPolicy::Drop,
        "servfail" => ExhaustedPolicy::Servfail,
        "refused" => ExhaustedPolicy::Refused,
        other => {
            return Err(invalid(
                file,
                "pool.on_exhausted",
                "one of \"drop\", \"servfail\", \"refused\"",
                other,
            ))
        }
    };
    let queue_backend = match raw.dataplane.queue_backend.as_str() {
        "auto" => QueueBackend::Auto,
        "nft" => QueueBackend::Nft,
        "xt" => QueueBackend::Xt,
        other => {
            return Err(invalid(
                file,
                "dataplane.queue_backend",
                "one of \"auto\", \"nft\", \"xt\"",
                other,
            ))
        }
    };
    // RFC 7323 §2.3: a shift above 14 is invalid; an MSS below 536 breaks hosts.
    if raw.dataplane.synproxy_wscale > 14 {
        return Err(invalid(
            file,
            "dataplane.synproxy_wscale",
            "a window scale 0..=14",
            raw.dataplane.synproxy_wscale,
        ));
    }
    if raw.dataplane.synproxy_mss < 536 {
        return Err(invalid(
            file,
            "dataplane.synproxy_mss",
            "an MSS of at least 536",
            raw.dataplane.synproxy_mss,
        ));
    }
    if let Some(a) = addresses.iter().find(|a| network.contains(*a)) {
        return Err(invalid(
            file,
            "pool.addresses",
            &format!("public addresses outside lan.network {network}"),
            a,
        ));
    }
    // The claim mark carries the host index in 16 bits (dataplane/ruleset.rs).
    if raw.hosts.len() > 0xfffe {
        return Err(invalid(
            file,
            "hosts",
            "at most 65534 hosts",
            raw.hosts.len(),
        ));
    }

    let metrics_listen = match &raw.metrics.listen {
        None => None,
        Some(l) => Some(l.parse::<SocketAddr>().map_err(|_| {
            invalid(
                file,
                "metrics.listen",
                "an address and port such as \"127.0.0.1:9464\"",
                l,
            )
        })?),
    };

    let binding_log = match raw.binding_log {
        None => None,
        Some(b) => {
            if b.path.as_os_str().is_empty() || b.path.is_dir() {
                return Err(invalid(
                    file,
                    "binding_log.path",
                    "a file path such as \"/var/log/rgw/bindings.log\"",
                    b.path.display(),
                ));
            }
            if b.queue == 0 || b.queue > 1 << 20 {
                return Err(invalid(
                    file,
                    "binding_log.queue",
                    "a queue length between 1 and 1048576",
                    b.queue,
                ));
            }
            Some(BindingLogConfig {
                path: b.path,
                max_bytes: b.max_bytes,
                keep: b.keep,
                daily: b.daily,
                queue: b.queue,
            })
        }
    };

    let proxy = match raw.proxy {
        None => None,
        Some(p) => {
            for (key, port) in [
                ("proxy.backend_http_port", p.backend_http_port),
                ("proxy.backend_https_port", p.backend_https_port),
            ] {
                if port == 0 {
                    return Err(invalid(file, key, "a port between 1 and 65535", port));
                }
            }
            if p.http_port == 0 && p.https_port == 0 {
                return Err(invalid(
                    file,
                    "proxy",
                    "at least one of http_port, https_port not 0 (or no [proxy] section)",
                    "both 0",
                ));
            }
            if p.http_port != 0 && p.http_port == p.https_port {
                return Err(invalid(
                    file,
                    "proxy.https_port",
                    "a port other than proxy.http_port",
                    p.https_port,
                ));
            }
            if [p.http_port, p.https_port].contains(&raw.wan.dns_port) {
                return Err(invalid(
                    file,
                    "proxy",
                    "ports other than wan.dns_port",
                    raw.wan.dns_port,
                ));
            }
            Some(ProxyConfig {
                http_port: p.http_port,
                https_port: p.https_port,
                backend_http_port: p.backend_http_port,
                backend_https_port: p.backend_https_port,
            })
        }
    };

    let alg = validate_alg(file, &raw.alg, raw.dataplane.queue_num)?;

    let mut rgw64 = match raw.rgw64 {
        None => None,
        Some(r) => crate::rgw64::config::validate(file, r, network, &addresses)?,
    };
    let mut hosts: Vec<HostConfig> = Vec::new();
    for (i, h) in raw.hosts.iter().enumerate() {
        let name = h.name.to_ascii_lowercase();
        if !is_ldh_label(&name) {
            return Err(invalid(
                file,
                &format!("hosts[{i}].name"),
                "a single DNS label such as \"hosta\"",
                &h.name,
            ));
        }
        if ns_labels(&ns_name, &zone_name).contains(&name.as_str()) {
            return Err(invalid(
                file,
                &format!("hosts[{i}].name"),
                "a name other than the zone's name server",
                &h.name,
            ));
        }
        if hosts.iter().any(|o| o.name == name) {
            return Err(invalid(
                file,
                &format!("hosts[{i}].name"),
                "a name not used by another host",
                &h.name,
            ));
        }
        let (ipv4, ipv6_only) = match h.ipv4 {
            Some(ipv4) => {
                if !network.contains(&ipv4) {
                    return Err(invalid(
                        file,
                        &format!("hosts[{i}].ipv4"),
                        &format!("an address inside lan.network {network}"),
                        ipv4,
                    ));
                }
                if ipv4 == raw.lan.address
                    || ipv4 == network.network()
                    || ipv4 == network.broadcast()
                {
                    return Err(invalid(
                        file,
                        &format!("hosts[{i}].ipv4"),
                        "a host address (not lan.address, nor the network or broadcast address)",
                        ipv4,
                    ));
                }
                if let Some(p) = h.proxy4 {
                    return Err(invalid(
                        file,
                        &format!("hosts[{i}].proxy4"),
                        "no proxy4 on a host with ipv4 (only IPv6-only hosts get a proxy address)",
                        p,
                    ));
                }
                (ipv4, false)
            }
            None => {
                let proxy =
                    crate::rgw64::config::host_proxy4(file, i, h.ipv6, h.proxy4, rgw64.as_mut())?;
                (proxy, true)
            }
        };
        if let Some(o) = hosts.iter().find(|o| o.ipv4 == ipv4) {
            return Err(invalid(
                file,
                &format!("hosts[{i}].ipv4"),
                &format!("an address not used by host {}", o.name),
                ipv4,
            ));
        }
        if let Some(v6) = h.ipv6 {
            crate::rgw64::config::check_host_ipv6(file, i, v6, rgw64.as_ref())?;
            if let Some(o) = hosts.iter().find(|o| o.ipv6 == Some(v6)) {
                return Err(invalid(
                    file,
                    &format!("hosts[{i}].ipv6"),
                    &format!("an address not used by host {}", o.name),
                    v6,
                ));
            }
        }
        let mut services = BTreeMap::new();
        for (label, spec) in &h.services {
            let key = format!("hosts[{i}].services.{label}");
            let label = label.to_ascii_lowercase();
            if !is_ldh_label(&label) || rgw_dns::sfqdn::parse_port_label(&label).is_some() {
                return Err(invalid(
                    file,
                    &key,
                    "a service label such as \"ssh\" (not of the built-in form tcp<port>/udp<port>)",
                    &label,
                ));
            }
            if label == "www" && proxy.is_some() {
                return Err(invalid(
                    file,
                    &key,
                    "a label other than \"www\" while [proxy] serves www.<host>",
                    &label,
                ));
            }
            let svc = parse_service(spec).ok_or_else(|| {
                invalid(
                    file,
                    &key,
                    "\"tcp/<port>\" or \"udp/<port>\" with port 1-65535",
                    spec,
                )
            })?;
            services.insert(label, svc);
        }
        hosts.push(HostConfig {
            name,
            ipv4,
            ipv6: h.ipv6,
            ipv6_only,
            max_pending: h.max_pending.unwrap_or(raw.pool.default_max_pending),
            services,
        });
    }

    let host_names: Vec<&str> = hosts.iter().map(|h| h.name.as_str()).collect();
    let admission = crate::admission::validate(file, raw.admission, &zone_name, &host_names)?;
    Ok(Config {
        file: file.to_path_buf(),
        zone: ZoneConfig {
            name: zone_name,
            ns_name,
            hostmaster,
            static_ttl: raw.zone.static_ttl,
            negative_ttl: raw.zone.negative_ttl,
            serial,
        },
        wan: WanConfig {
            interface: raw.wan.interface,
            service_address: raw.wan.service_address,
            dns_port: raw.wan.dns_port,
        },
        lan: LanConfig {
            interface: raw.lan.interface,
            address: raw.lan.address,
            network,
            upstream_resolver,
            dns_port: raw.lan.dns_port,
        },
        pool: PoolConfig {
            addresses,
            tmax: raw.pool.tmax,
            on_exhausted,
        },
        dataplane: DataplaneConfig {
            table: raw.dataplane.table.clone(),
            queue_num: raw.dataplane.queue_num,
            queue_backend,
            keep_on_exit: raw.dataplane.keep_on_exit,
            synproxy: raw.dataplane.synproxy,
            synproxy_mss: raw.dataplane.synproxy_mss,
            synproxy_wscale: raw.dataplane.synproxy_wscale,
        },
        control_socket: raw
            .control
            .socket
            .unwrap_or_else(|| PathBuf::from(format!("/run/rgw/{}.sock", raw.dataplane.table))),
        metrics_listen,
        binding_log,
        proxy,
        alg,
        limits: crate::limits::validate(file, raw.limits)?,
        admission,
        rgw64,
        hosts,
    })
}

/// The `config` crate prints nested keys as `hosts[0]max_pending`; restore the dot.
fn fix_key_path(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len() + 4);
    let mut prev = ' ';
    for c in msg.chars() {
        if prev == ']' && (c.is_ascii_alphabetic() || c == '_') {
            out.push('.');
        }
        out.push(c);
        prev = c;
    }
    out
}

/// The labels of the NS name below the apex (`["ns"]`, or `["ns", "hosta"]`
/// for `ns.hosta.<zone>`): a host may not share one, or the NS name (or a
/// name above it) would hide the host.
fn ns_labels<'a>(ns_name: &'a str, zone: &str) -> Vec<&'a str> {
    ns_name
        .strip_suffix(&format!(".{zone}"))
        .map(|rel| rel.split('.').collect())
        .unwrap_or_default()
}

fn parse_socket_addr(s: &str) -> Option<SocketAddr> {
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Some(sa);
    }
    s.parse::<Ipv4Addr>()
        .ok()
        .map(|a| SocketAddr::V4(SocketAddrV4::new(a, 53)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const GOOD: &str = r#"
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
addresses = ["198.51.100.17-198.51.100.19", "198.51.100.24/30", "198.51.100.19"]

[[hosts]]
name = "HostA"
ipv4 = "192.168.0.101"
services = { ssh = "tcp/22" }
"#;

    fn load_str(text: &str) -> Result<Config, ConfigError> {
        let dir = std::env::temp_dir().join(format!(
            "rgw-cfg-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir is writable");
        let path = dir.join("rgw.toml");
        std::fs::File::create(&path)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .expect("temp file is writable");
        let loaded = Config::load(&path);
        let _ = std::fs::remove_dir_all(&dir);
        loaded
    }

    #[test]
    fn good_file_loads_with_defaults() {
        let c = load_str(GOOD).expect("valid config");
        assert_eq!(c.zone.name, "gwa.demo.");
        assert_eq!(c.zone.ns_name, "ns.gwa.demo.");
        assert_eq!(c.pool.tmax, Duration::from_secs(2));
        assert_eq!(c.pool.on_exhausted, ExhaustedPolicy::Drop);
        assert_eq!(
            c.pool.addresses.len(),
            7,
            "3 from the range + 4 from the /30, duplicate removed"
        );
        assert_eq!(c.hosts[0].name, "hosta");
        assert_eq!(c.hosts[0].max_pending, 3);
        assert_eq!(
            c.hosts[0].services["ssh"],
            Service {
                proto: Proto::Tcp,
                port: 22
            }
        );
        assert_eq!(c.lan.upstream_resolver.port(), 53);
        assert_eq!(c.control_socket, PathBuf::from("/run/rgw/rgw.sock"));
    }

    fn err_of(text: &str) -> String {
        load_str(text)
            .expect_err("config must be rejected")
            .to_string()
    }

    #[test]
    fn errors_name_file_key_and_expectation() {
        let e = err_of(&GOOD.replace("\"192.168.0.101\"", "\"192.168.7.1\""));
        assert!(
            e.contains("rgw.toml")
                && e.contains("hosts[0].ipv4")
                && e.contains("inside lan.network"),
            "{e}"
        );

        let e = err_of(&GOOD.replace("198.51.100.24/30", "198.51.100.300"));
        assert!(
            e.contains("pool.addresses[1]") && e.contains("198.51.100.300"),
            "{e}"
        );

        let e = err_of(&GOOD.replace("tcp/22", "sctp/22"));
        assert!(
            e.contains("hosts[0].services.ssh") && e.contains("tcp/<port>"),
            "{e}"
        );

        let e = err_of(&GOOD.replace("ssh = ", "tcp80 = "));
        assert!(e.contains("hosts[0].services.tcp80"), "{e}");

        let e = err_of(&GOOD.replace("[pool]", "[pool]\ntmax = \"0s\""));
        assert!(e.contains("pool.tmax"), "{e}");

        let e = err_of(&GOOD.replace("[pool]", "[pool]\ntmax = \"soon\""));
        assert!(e.contains("rgw.toml") && e.contains("tmax"), "{e}");

        let e = err_of(&GOOD.replace(
            "service_address = \"198.51.100.2\"",
            "service_address = \"198.51.100.18\"",
        ));
        assert!(
            e.contains("pool.addresses") && e.contains("service address"),
            "{e}"
        );
    }

    #[test]
    fn type_errors_and_unknown_keys_name_the_key() {
        let e = err_of(&GOOD.replace("[pool]", "[pool]\ndefault_max_pending = \"many\""));
        assert!(
            e.contains("rgw.toml") && e.contains("default_max_pending"),
            "{e}"
        );
        let e = err_of(&GOOD.replace("[wan]", "[wan]\nmtu = 1500"));
        assert!(e.contains("rgw.toml") && e.contains("mtu"), "{e}");
        let e = err_of(&GOOD.replace(
            "service_address = \"198.51.100.2\"",
            "service_address = \"wan\"",
        ));
        assert!(e.contains("service_address"), "{e}");
        let e = err_of("this is not toml [");
        assert!(e.contains("rgw.toml"), "{e}");
    }

    #[test]
    fn enums_and_addresses_validated() {
        let e = err_of(&GOOD.replace("[pool]", "[pool]\non_exhausted = \"ignore\""));
        assert!(
            e.contains("pool.on_exhausted") && e.contains("\"servfail\""),
            "{e}"
        );
        let e = err_of(&format!("{GOOD}\n[dataplane]\nqueue_backend = \"ebpf\"\n"));
        assert!(
            e.contains("dataplane.queue_backend") && e.contains("\"xt\""),
            "{e}"
        );
        let e = err_of(&GOOD.replace("\"198.51.100.24/30\"", "\"192.168.0.200\""));
        assert!(
            e.contains("pool.addresses") && e.contains("outside lan.network"),
            "{e}"
        );
        let e = err_of(&GOOD.replace("\"192.168.0.101\"", "\"192.168.0.1\""));
        assert!(
            e.contains("hosts[0].ipv4") && e.contains("not lan.address"),
            "{e}"
        );
        let e = err_of(&GOOD.replace("[pool]", "[pool]\ntmax = \"500us\""));
        assert!(e.contains("pool.tmax"), "{e}");
        let text = format!("{GOOD}\n[[hosts]]\nname = \"hostb\"\nipv4 = \"192.168.0.101\"\n");
        let e = err_of(&text);
        assert!(e.contains("hosts[1].ipv4") && e.contains("hosta"), "{e}");
        let e = err_of(&GOOD.replace("services = { ssh = \"tcp/22\" }", "max_pending = \"x\""));
        assert!(e.contains("hosts[0].max_pending"), "{e}");
    }

    #[test]
    fn host_hidden_by_ns_name_rejected() {
        let e = err_of(&GOOD.replace(
            "name = \"gwa.demo\"",
            "name = \"gwa.demo\"\nns_name = \"ns.hosta.gwa.demo.\"",
        ));
        assert!(
            e.contains("hosts[0].name") && e.contains("name server"),
            "{e}"
        );
    }

    #[test]
    fn duplicate_hosts_rejected() {
        let text = format!("{GOOD}\n[[hosts]]\nname = \"hosta\"\nipv4 = \"192.168.0.102\"\n");
        let e = err_of(&text);
        assert!(e.contains("hosts[1].name"), "{e}");
    }

    #[test]
    fn pool_entry_forms() {
        assert_eq!(expand_pool_entry("10.0.0.1").map(|v| v.len()), Some(1));
        assert_eq!(
            expand_pool_entry("10.0.0.1-10.0.0.4").map(|v| v.len()),
            Some(4)
        );
        assert_eq!(expand_pool_entry("10.0.0.0/30").map(|v| v.len()), Some(4));
        assert_eq!(
            expand_pool_entry("10.0.0.0/16").map(|v| v.len()),
            Some(65536)
        );
        assert!(expand_pool_entry("10.0.0.4-10.0.0.1").is_none());
        assert!(expand_pool_entry("10.0.0.0/8").is_none());
        assert!(expand_pool_entry("nonsense").is_none());
    }

    #[test]
    fn service_specs() {
        assert_eq!(
            parse_service("udp/5060"),
            Some(Service {
                proto: Proto::Udp,
                port: 5060
            })
        );
        assert_eq!(parse_service("tcp/0"), None);
        assert_eq!(parse_service("tcp/70000"), None);
        assert_eq!(parse_service("tcp"), None);
    }
}
