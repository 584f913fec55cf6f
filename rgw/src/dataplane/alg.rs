//! The I/O shell of the ALG engine ([`rgw_alg::engine`]): every packet of an
//! ALG control flow (both directions, forward hook, see
//! [`super::ruleset`]) comes through NFQUEUE; the engine decides; pinholes
//! are written into the `pinholes` / `pinhole_snat` maps before the verdict,
//! so the data connection that follows a rewritten message finds its
//! mapping. No other packet enters userspace.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rgw_alg::engine::{Engine, EngineConfig, FlowContext, Verdict};
use rgw_alg::{Direction, Pinhole, Protocol, Role, Transport};
use tracing::{debug, error, info, warn};

use super::ctliberal::{CtLiberal, OrigTuple};
use super::nfqueue::{self, NfQueue};
use super::nlset::{
    data_addr6_port, data_addr_port, key_addr, key_pinhole, key_pinhole6, key_pinhole_snat,
    MapElem, SetWriter,
};
use super::ruleset::{MAP_PINHOLES, MAP_PINHOLE_SNAT};
use crate::config::{AlgConfig, Config};
use crate::gateway::Gateway;
use crate::rgw64::plumbing::MAP_PINHOLES6;
use crate::rgw64::Rgw64;

/// How long a claim is remembered for the ALG: the engine asks for it when
/// it sees the flow's first packet in the forward hook, right after the claim.
const CLAIM_MEMORY: Duration = Duration::from_secs(60);
/// Bound of the claim table.
const MAX_CLAIMS: usize = 16_384;

/// Claims of ALG control flows, so the engine knows which public (pool)
/// address the peer used: `(proto, peer, peer port, private port) →
/// (public address, time)`.
#[derive(Default)]
pub struct AlgClaims {
    map: HashMap<(u8, Ipv4Addr, u16, u16), (Ipv4Addr, Instant)>,
}

impl AlgClaims {
    pub fn note(&mut self, key: (u8, Ipv4Addr, u16, u16), public: Ipv4Addr, now: Instant) {
        if self.map.len() >= MAX_CLAIMS {
            self.map
                .retain(|_, (_, t)| now.saturating_duration_since(*t) < CLAIM_MEMORY);
            if self.map.len() >= MAX_CLAIMS {
                self.map.clear();
            }
        }
        self.map.insert(key, (public, now));
    }

    pub fn get(&self, key: &(u8, Ipv4Addr, u16, u16), now: Instant) -> Option<Ipv4Addr> {
        self.map
            .get(key)
            .filter(|(_, t)| now.saturating_duration_since(*t) < CLAIM_MEMORY)
            .map(|(a, _)| *a)
    }
}

/// Counters of the shell (the engine keeps its own).
#[derive(Default)]
pub struct AlgShellStats {
    pub packets: AtomicU64,
    pub replaced: AtomicU64,
    pub dropped: AtomicU64,
    pub pinholes_written: AtomicU64,
    /// Of those, NAT46 pinholes in the `ip6` table.
    pub pinholes6_written: AtomicU64,
    pub pinhole_errors: AtomicU64,
    /// ALG TCP flows whose conntrack entry was marked liberal (see ctliberal).
    pub ct_liberal: AtomicU64,
    pub ct_liberal_errors: AtomicU64,
}

/// The engine and the shell's counters, shared with `rgw status` / metrics.
pub struct AlgState {
    pub engine: Mutex<Engine>,
    pub stats: AlgShellStats,
}

pub fn engine_config(a: &AlgConfig) -> EngineConfig {
    let mut ports = Vec::new();
    ports.extend(
        a.ftp_ports
            .iter()
            .map(|&p| (Transport::Tcp, p, Protocol::Ftp)),
    );
    for &p in &a.sip_ports {
        ports.push((Transport::Udp, p, Protocol::Sip));
        ports.push((Transport::Tcp, p, Protocol::Sip));
    }
    ports.extend(
        a.rtsp_ports
            .iter()
            .map(|&p| (Transport::Tcp, p, Protocol::Rtsp)),
    );
    EngineConfig {
        ports,
        flow_idle: a.flow_idle,
        max_flows: a.max_flows,
        max_pinholes_per_flow: a.max_pinholes_per_flow,
        max_hold: a.max_hold,
        ftp_data_lifetime: a.ftp_data_lifetime,
        media_lifetime: a.media_lifetime,
        ..EngineConfig::default()
    }
}

impl AlgState {
    pub fn new(a: &AlgConfig) -> Arc<AlgState> {
        Arc::new(AlgState {
            engine: Mutex::new(Engine::new(engine_config(a))),
            stats: AlgShellStats::default(),
        })
    }

    pub fn engine(&self) -> std::sync::MutexGuard<'_, Engine> {
        self.engine.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What the engine asks the gateway about a flow.
struct Ctx<'a> {
    cfg: &'a Config,
    gw: &'a Gateway,
    rgw64: Option<&'a Rgw64>,
    now: Instant,
}

impl FlowContext for Ctx<'_> {
    fn public_addr(
        &self,
        private: SocketAddrV4,
        peer: SocketAddrV4,
        transport: Transport,
        role: Role,
    ) -> Option<Ipv4Addr> {
        // NAT46 (an IPv6-only peer behind its proxy IPv4): the flow went out
        // through the translator, whichever side spoke first after the
        // engine forgot it (e.g. the server's request on an idle SIP flow);
        // the IPv4 public address only names the flow, the peer sees
        // `public_v6`.
        if self.peer_v6(*peer.ip()).is_some() {
            return Some(self.cfg.wan.service_address);
        }
        match role {
            // Outbound flows leave through the SNAT to the service address.
            Role::PrivateClient => Some(self.cfg.wan.service_address),
            // Inbound flows came through a claimed reservation.
            Role::PrivateServer => self.gw.alg_claim(
                &(transport.number(), *peer.ip(), peer.port(), private.port()),
                self.now,
            ),
        }
    }

    fn host_fqdn(&self, private: Ipv4Addr) -> Option<String> {
        let zone = self.cfg.zone.name.trim_end_matches('.');
        self.cfg
            .hosts
            .iter()
            .find(|h| h.ipv4 == private && !h.name.is_empty())
            .map(|h| format!("{}.{zone}", h.name))
    }

    fn private_v6(&self, private: Ipv4Addr) -> Option<Ipv6Addr> {
        // A proxy IPv4 of the translator: the IPv6 host bound to it.
        self.rgw64?.xlat().lookup_v4(private)
    }

    fn prefix64(&self) -> Option<Ipv6Addr> {
        Some(self.rgw64?.cfg.prefix64.network())
    }

    fn peer_v6(&self, peer: Ipv4Addr) -> Option<Ipv6Addr> {
        // A proxy IPv4 of an IPv6-only destination (bound at DNS time).
        let r = self.rgw64?;
        if !r.cfg.pool4.contains(&peer) {
            return None;
        }
        r.xlat().lookup_v4(peer)
    }

    fn public_v6(&self, private: Ipv4Addr, peer_v6: Ipv6Addr) -> Option<Ipv6Addr> {
        let r = self.rgw64?;
        if r.cfg.lan_prefix6.contains(&peer_v6) {
            // An IPv6 host of our own LAN sees the IPv4 host's prefix64
            // address (no NAT66 on the way).
            Some(rgw_alg::embed_v4(r.cfg.prefix64.network(), private))
        } else {
            // Leaving the WAN, translated sources are NATed66 to it.
            Some(r.cfg.wan_address6)
        }
    }
}

/// Packets the kernel keeps waiting on the ALG queue.
const QUEUE_MAX_LEN: u32 = 4096;
/// Receive buffer of the ALG queue socket (the kernel doubles it): room for
/// [`QUEUE_MAX_LEN`] signalling packets of a few KiB of socket memory each.
/// With the default buffer the socket, not the queue, overflows first.
const QUEUE_RCVBUF: usize = 8 << 20;

/// Opens and binds the ALG queue (before nftables is touched, like the gate).
pub fn open(a: &AlgConfig) -> Result<NfQueue> {
    let q = a.queue_num;
    NfQueue::open(q, QUEUE_MAX_LEN, QUEUE_RCVBUF, u16::MAX).with_context(|| {
        format!("binding the ALG NFQUEUE {q}: is another rgw running in this network namespace?")
    })
}

fn ifindex(name: &str) -> u32 {
    let Ok(c) = std::ffi::CString::new(name) else {
        return 0;
    };
    // SAFETY: `c` is a valid NUL-terminated string for the duration of the call.
    unsafe { libc::if_nametoindex(c.as_ptr()) }
}

/// Adds `key : data`; a key that maps to something else (an older call or
/// transfer of the same endpoints) is replaced: the newest message wins.
fn put(
    w: &mut SetWriter,
    table: &str,
    map: &str,
    key: &[u8],
    data: &[u8],
    lifetime: Duration,
) -> Result<()> {
    match w.add_map_many(table, map, &[(key, data)], Some(lifetime)) {
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
            match w.delete(table, map, key) {
                Err(e) if e.raw_os_error() != Some(libc::ENOENT) => return Err(e.into()),
                _ => {}
            }
            w.add_map_many(table, map, &[(key, data)], Some(lifetime))?;
            Ok(())
        }
        r => Ok(r?),
    }
}

/// Writes a pinhole into the `ip` maps, or (NAT46) into the `ip6` one.
fn write_pinhole(w: &mut SetWriter, w6: &mut SetWriter, table: &str, p: &Pinhole) -> Result<()> {
    let proto = p.transport.number();
    if let Some(v6) = &p.v6 {
        let key = key_pinhole6(v6.peer, proto, v6.public_addr, p.public_port);
        let data = data_addr6_port(v6.private_addr, p.private_port);
        return put(w6, table, MAP_PINHOLES6, &key, &data, p.lifetime);
    }
    // The same elements as the batch path ([`pinhole_elems`]), one by one.
    for e in pinhole_elems(p) {
        let m = e.as_map_elem();
        put(w, table, m.map, m.key, m.data, e.lifetime)?;
    }
    Ok(())
}

/// One map element of a pinhole (keys of both maps are 16 bytes; data is an
/// address and port, or an address alone).
struct PinholeElem {
    map: &'static str,
    key: [u8; 16],
    data: [u8; 8],
    data_len: usize,
    lifetime: Duration,
}

impl PinholeElem {
    fn as_map_elem(&self) -> MapElem<'_> {
        MapElem {
            map: self.map,
            key: &self.key,
            data: self.data.get(..self.data_len).unwrap_or(&self.data),
            timeout: Some(self.lifetime),
        }
    }
}

/// The map elements of an IPv4 pinhole: the DNAT one and, with `snat`, its
/// SNAT twin.
fn pinhole_elems(p: &Pinhole) -> impl Iterator<Item = PinholeElem> {
    let proto = p.transport.number();
    let dnat = PinholeElem {
        map: MAP_PINHOLES,
        key: key_pinhole(p.peer, proto, p.public_addr, p.public_port),
        data: data_addr_port(p.private_addr, p.private_port),
        data_len: 8,
        lifetime: p.lifetime,
    };
    let snat = p.snat.then(|| {
        let mut data = [0u8; 8];
        data[..4].copy_from_slice(&key_addr(p.public_addr));
        PinholeElem {
            map: MAP_PINHOLE_SNAT,
            key: key_pinhole_snat(p.private_addr, proto, p.private_port, p.peer),
            data,
            data_len: 4,
            lifetime: p.lifetime,
        }
    });
    std::iter::once(dnat).chain(snat)
}

/// Writes the IPv4 pinholes of one decision (and their SNAT twins) in ONE
/// netlink transaction: one `sendmsg()`, one acknowledgement. `Err` when the
/// batch failed as a whole (nothing of it was committed), e.g. because a key
/// still maps to an older call's endpoint (EEXIST): the caller then writes
/// them one by one, replacing.
fn write_pinholes4_batch(w: &mut SetWriter, table: &str, pins: &[&Pinhole]) -> Result<()> {
    let elems: Vec<PinholeElem> = pins.iter().flat_map(|p| pinhole_elems(p)).collect();
    let batch: Vec<MapElem<'_>> = elems.iter().map(PinholeElem::as_map_elem).collect();
    w.add_map_elems(table, &batch)?;
    Ok(())
}

/// For a TCP SYN-ACK of an ALG flow: the conntrack entry's original tuple.
fn syn_ack_tuple(pkt: &[u8], dir: Direction, gw: &Gateway, now: Instant) -> Option<OrigTuple> {
    let ihl = usize::from(pkt.first()? & 0x0f) * 4;
    if pkt.first()? >> 4 != 4 || *pkt.get(9)? != 6 || ihl < 20 {
        return None;
    }
    let tcp = pkt.get(ihl..)?;
    if tcp.get(13)? & 0x12 != 0x12 {
        return None; // not SYN+ACK
    }
    let ip = |o: usize| -> Option<Ipv4Addr> {
        let b = pkt.get(o..o + 4)?;
        Some(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
    };
    let port =
        |o: usize| -> Option<u16> { Some(u16::from_be_bytes([*tcp.get(o)?, *tcp.get(o + 1)?])) };
    let (src, dst, sport, dport) = (ip(12)?, ip(16)?, port(0)?, port(2)?);
    match dir {
        // The private host opened the flow: its SYN is the original tuple.
        Direction::FromPublic => Some(OrigTuple {
            src: dst,
            sport: dport,
            dst: src,
            dport: sport,
        }),
        // The peer opened it towards a pool address (before DNAT).
        Direction::FromPrivate => {
            let public = gw.alg_claim(&(6, dst, dport, sport), now)?;
            Some(OrigTuple {
                src: dst,
                sport: dport,
                dst: public,
                dport: sport,
            })
        }
    }
}

/// Runs the ALG on a bound queue in the calling thread until the socket fails.
/// With RGW64 (`rgw64`), flows of IPv6-only hosts that leave the translator
/// towards the WAN are ALG flows too: the TUN is their private side and
/// their private address is the host's proxy IPv4.
pub fn run(
    gw: Arc<Gateway>,
    state: Arc<AlgState>,
    mut queue: NfQueue,
    rgw64: Option<Arc<Rgw64>>,
) -> Result<()> {
    let mut writer = SetWriter::open(libc::NFPROTO_IPV4 as u8)
        .context("opening the nftables netlink socket for pinholes")?;
    // NAT46 pinholes live in the `ip6` table (RGW64).
    let mut writer6 = SetWriter::open(libc::NFPROTO_IPV6 as u8)
        .context("opening the nftables netlink socket for IPv6 pinholes")?;
    let mut ct = CtLiberal::open().context("opening the ctnetlink socket")?;
    let mut last_expiry = Instant::now();
    let mut verdicts_refused = 0;
    // `lan` needs a restart to change (gateway::restart_only_change).
    let lan_index = ifindex(&gw.snapshot().cfg.lan.interface);
    // So does `[rgw64]` (and with it the TUN).
    let tun_index = gw.snapshot().cfg.rgw64.as_ref().map(|r| ifindex(&r.tun));
    info!(lan_index, "ALG engine listening");
    loop {
        let msg = match queue.recv() {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                error!(error = %e, "ALG NFQUEUE receive failed");
                return Err(e.into());
            }
        };
        let (refused, errno) = queue.refused();
        if refused != verdicts_refused {
            // Should not happen: the packet ids come from the kernel.
            verdicts_refused = refused;
            warn!(errno, refused, "the kernel refused an ALG NFQUEUE verdict");
        }
        let payload = queue.payload(&msg);
        let snap = gw.snapshot();
        let cfg = &snap.cfg;
        let now = Instant::now();
        let indev = msg.indev;
        // The ruleset queues from the TUN towards the WAN (flows of IPv6-only
        // hosts: the TUN is their private side) and towards the LAN (NAT46:
        // the IPv6-only server's side).
        let from_tun = tun_index.is_some_and(|t| indev == t) && msg.outdev != lan_index;
        let dir = if indev == lan_index || from_tun {
            Direction::FromPrivate
        } else {
            Direction::FromPublic
        };
        let ctx = Ctx {
            cfg,
            gw: &gw,
            rgw64: rgw64.as_deref(),
            now,
        };
        let decision = {
            let mut engine = state.engine();
            if now.saturating_duration_since(last_expiry) >= Duration::from_secs(1) {
                engine.expire(now);
                last_expiry = now;
            }
            engine.handle(now, dir, payload, &ctx)
        };
        state.stats.packets.fetch_add(1, Ordering::Relaxed);
        if let Some(t) = syn_ack_tuple(payload, dir, &gw, now) {
            match ct.set(&t) {
                Ok(()) => {
                    state.stats.ct_liberal.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    state
                        .stats
                        .ct_liberal_errors
                        .fetch_add(1, Ordering::Relaxed);
                    debug!(error = %e, tuple = ?t, "conntrack entry not marked liberal");
                }
            }
        }
        // IPv4 pinholes in one transaction; NAT46 ones (rare) and any batch
        // that failed as a whole one by one, as before.
        let v4: Vec<&Pinhole> = decision
            .pinholes
            .iter()
            .filter(|p| p.v6.is_none())
            .collect();
        let v4_done = (v4.len() > 1 || v4.iter().any(|p| p.snat))
            && match write_pinholes4_batch(&mut writer, &cfg.dataplane.table, &v4) {
                Ok(()) => true,
                Err(e) => {
                    debug!(error = %e, "pinhole batch refused; writing one by one");
                    false
                }
            };
        for p in &decision.pinholes {
            let written = if v4_done && p.v6.is_none() {
                Ok(())
            } else {
                write_pinhole(&mut writer, &mut writer6, &cfg.dataplane.table, p)
            };
            match written {
                Ok(()) => {
                    state.stats.pinholes_written.fetch_add(1, Ordering::Relaxed);
                    if p.v6.is_some() {
                        state
                            .stats
                            .pinholes6_written
                            .fetch_add(1, Ordering::Relaxed);
                    }
                    debug!(peer = %p.peer, proto = ?p.transport, public = %p.public_addr, public_port = p.public_port, private = %p.private_addr, private_port = p.private_port, snat = p.snat, v6 = ?p.v6, "pinhole");
                }
                Err(e) => {
                    state.stats.pinhole_errors.fetch_add(1, Ordering::Relaxed);
                    warn!(error = %e, "pinhole not written");
                }
            }
        }
        let (verdict, new_payload) = match &decision.verdict {
            Verdict::Accept => (nfqueue::Verdict::Accept, None),
            Verdict::Replace(bytes) => {
                state.stats.replaced.fetch_add(1, Ordering::Relaxed);
                (nfqueue::Verdict::Accept, Some(&bytes[..]))
            }
            Verdict::Drop => {
                state.stats.dropped.fetch_add(1, Ordering::Relaxed);
                (nfqueue::Verdict::Drop, None)
            }
        };
        // The mark that queued the packet is cleared.
        if let Err(e) = queue.verdict(msg.id, verdict, Some(0), new_payload) {
            warn!(error = %e, "ALG NFQUEUE verdict failed");
        }
    }
}

impl AlgState {
    /// Engine and shell counters, `(name, value)`, for status and metrics.
    pub fn counters(&self) -> Vec<(&'static str, u64)> {
        let s = self.engine().stats();
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        vec![
            ("packets", s.packets),
            ("unparsed", s.unparsed),
            ("not_alg", s.not_alg),
            ("flows_created", s.flows_created),
            ("flows_expired", s.flows_expired),
            ("flows_evicted", s.flows_evicted),
            ("flows_over_limit", s.flows_over_limit),
            ("no_public_addr", s.no_public_addr),
            ("rewrites", s.rewrites),
            ("packets_replaced", s.packets_replaced),
            ("pinholes_requested", s.pinholes_requested),
            ("port_alloc_failed", s.port_alloc_failed),
            ("pinholes_recycled", s.pinholes_recycled),
            ("malformed", s.malformed),
            ("holds", s.holds),
            ("hold_overflows", s.hold_overflows),
            ("dropped", s.dropped),
            ("dropped_out_of_order", s.dropped_out_of_order),
            ("dropped_incomplete", s.dropped_incomplete),
            ("replays", s.replays),
            ("duplicates", s.duplicates),
            ("build_errors", s.build_errors),
            ("pinholes_written", r(&self.stats.pinholes_written)),
            ("pinholes6_written", r(&self.stats.pinholes6_written)),
            ("pinhole_errors", r(&self.stats.pinhole_errors)),
            ("ct_liberal", r(&self.stats.ct_liberal)),
            ("ct_liberal_errors", r(&self.stats.ct_liberal_errors)),
        ]
    }

    /// The `alg` object of `rgw status --json`.
    pub fn status_json(&self) -> serde_json::Value {
        let counters: serde_json::Map<String, serde_json::Value> = self
            .counters()
            .into_iter()
            .map(|(k, v)| (k.to_string(), serde_json::json!(v)))
            .collect();
        let engine = self.engine();
        let flows: Vec<serde_json::Value> = engine
            .flows()
            .into_iter()
            .map(|f| {
                serde_json::json!({
                    "protocol": format!("{:?}", f.protocol).to_lowercase(),
                    "role": match f.role { Role::PrivateClient => "outbound", Role::PrivateServer => "inbound" },
                    "transport": format!("{:?}", f.transport).to_lowercase(),
                    "private": f.private.to_string(),
                    "peer": f.peer.to_string(),
                    "public": f.public.to_string(),
                    "age_s": f.age.as_secs_f64(),
                    "rewrites": f.rewrites,
                    "offset_from_private": f.offset_from_private,
                })
            })
            .collect();
        let current = engine.stats().flows;
        serde_json::json!({
            "flows_active": current,
            "flows": flows,
            "counters": counters,
            // Flat copies of the counters operators look at first.
            "rewrites": engine.stats().rewrites,
            "pinholes": self.stats.pinholes_written.load(Ordering::Relaxed),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pinhole(snat: bool) -> Pinhole {
        let a = |s: &str| s.parse::<Ipv4Addr>().expect("test address");
        Pinhole {
            peer: a("203.0.113.80"),
            transport: Transport::Udp,
            public_addr: a("198.51.100.7"),
            public_port: 6002,
            private_addr: a("192.168.0.101"),
            private_port: 6000,
            lifetime: Duration::from_secs(30),
            snat,
            v6: None,
        }
    }

    /// The batch carries exactly what the one-by-one path writes.
    #[test]
    fn batch_elements_match_the_single_writes() {
        let p = pinhole(true);
        let elems: Vec<PinholeElem> = pinhole_elems(&p).collect();
        assert_eq!(elems.len(), 2);
        let dnat = elems[0].as_map_elem();
        assert_eq!(dnat.map, MAP_PINHOLES);
        assert_eq!(dnat.key, key_pinhole(p.peer, 17, p.public_addr, 6002));
        assert_eq!(dnat.data, data_addr_port(p.private_addr, 6000));
        assert_eq!(dnat.timeout, Some(Duration::from_secs(30)));
        let snat = elems[1].as_map_elem();
        assert_eq!(snat.map, MAP_PINHOLE_SNAT);
        assert_eq!(snat.key, key_pinhole_snat(p.private_addr, 17, 6000, p.peer));
        assert_eq!(snat.data, key_addr(p.public_addr));
        assert_eq!(pinhole_elems(&pinhole(false)).count(), 1);
    }
}
