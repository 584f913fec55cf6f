//! The gateway's shared core: the Circular Pool and the kernel's reservation
//! sets, kept in step under one lock.
//!
//! Allocation (DNS) and claim (NFQUEUE gate) both change the pool *and* the
//! kernel. Doing both under one mutex keeps them in the same order: a claim's
//! element delete can never remove the element of a newer reservation of the
//! same (R, proto, port) slot made in between.

use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use rgw_dns::{
    Allocation, Allocator, DeniedPolicy, DenyReason, Host, ServiceKey, ZoneData, ZoneSettings,
};
use tracing::{info, warn};

use crate::config::{Config, ExhaustedPolicy};
use crate::dataplane::gate::FirstPacket;
use crate::dataplane::nlset::{key_addr, key_addr_proto_port, NlError, SetWriter};
use crate::dataplane::ruleset::{claim_mark, SET_RESV_ADDR, SET_RESV_SVC};
use crate::metrics::{inc, Metrics};
use crate::pool::{CircularPool, Reservation, ReserveError, ReserveRequest};

/// Writes reservations into the kernel. A trait so the core can be tested
/// without netlink; the daemon uses [`SetWriter`].
pub trait ReservationSink: Send {
    fn install(&mut self, r: &Reservation) -> Result<(), NlError>;
    fn remove(&mut self, r: &Reservation) -> Result<(), NlError>;
}

/// The kernel sink: one element per reservation, timeout Tmax.
pub struct KernelSets {
    writer: SetWriter,
    table: String,
    tmax: std::time::Duration,
}

impl KernelSets {
    pub fn open(table: &str, tmax: std::time::Duration) -> Result<Self, NlError> {
        Ok(KernelSets {
            writer: SetWriter::open(libc::NFPROTO_IPV4 as u8)?,
            table: table.to_string(),
            tmax,
        })
    }
}

fn set_and_key(r: &Reservation) -> (&'static str, Vec<u8>) {
    match r.service {
        Some(s) => (
            SET_RESV_SVC,
            key_addr_proto_port(r.addr, s.proto.number(), s.port).to_vec(),
        ),
        None => (SET_RESV_ADDR, key_addr(r.addr).to_vec()),
    }
}

impl ReservationSink for KernelSets {
    fn install(&mut self, r: &Reservation) -> Result<(), NlError> {
        let (set, key) = set_and_key(r);
        self.writer
            .add(&self.table, set, &key, Some(self.tmax), false)
    }

    fn remove(&mut self, r: &Reservation) -> Result<(), NlError> {
        let (set, key) = set_and_key(r);
        match self.writer.delete(&self.table, set, &key) {
            // Already expired in the kernel: nothing to do.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
            other => other,
        }
    }
}

struct Core {
    pool: CircularPool,
    sink: Box<dyn ReservationSink>,
}

pub struct Gateway {
    pub cfg: Config,
    pub zone: ZoneData,
    pub metrics: Metrics,
    core: Mutex<Core>,
}

/// Display helper for log lines: `tcp/22` or `any`.
fn svc_str(s: Option<ServiceKey>) -> String {
    s.map(|s| format!("{}/{}", s.proto, s.port))
        .unwrap_or_else(|| "any".into())
}

impl Gateway {
    pub fn new(cfg: Config, sink: Box<dyn ReservationSink>) -> Arc<Self> {
        let pool = CircularPool::new(cfg.pool.addresses.iter().copied(), cfg.pool.tmax);
        let zone = zone_from_config(&cfg);
        Arc::new(Gateway {
            cfg,
            zone,
            metrics: Metrics::default(),
            core: Mutex::new(Core { pool, sink }),
        })
    }

    fn core(&self) -> MutexGuard<'_, Core> {
        // A panic while holding the lock leaves the pool consistent enough to go on
        // (each operation is a few map updates); keep serving rather than abort.
        self.core.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn denied_policy(&self) -> DeniedPolicy {
        match self.cfg.pool.on_exhausted {
            ExhaustedPolicy::Drop => DeniedPolicy::Drop,
            ExhaustedPolicy::Servfail => DeniedPolicy::Servfail,
            ExhaustedPolicy::Refused => DeniedPolicy::Refused,
        }
    }

    fn host_name(&self, idx: usize) -> &str {
        self.cfg
            .hosts
            .get(idx)
            .map(|h| h.name.as_str())
            .unwrap_or("?")
    }

    /// Reserves and installs; the answer may only go out once the kernel has it.
    pub fn allocate(&self, host: usize, service: Option<ServiceKey>, now: Instant) -> Allocation {
        let Some(h) = self.cfg.hosts.get(host) else {
            return Allocation::Denied(DenyReason::Exhausted);
        };
        let mut core = self.core();
        let req = ReserveRequest {
            host,
            service,
            host_limit: h.max_pending,
        };
        let r = match core.pool.reserve(req, now) {
            Ok(r) => r,
            Err(e) => {
                let reason = match e {
                    ReserveError::Exhausted => DenyReason::Exhausted,
                    ReserveError::HostLimit => DenyReason::HostLimit,
                };
                drop(core);
                self.metrics.count_denied(reason);
                info!(host = %h.name, service = %svc_str(service), reason = ?reason, "reservation denied");
                return Allocation::Denied(reason);
            }
        };
        if let Err(e) = core.sink.install(&r) {
            core.pool.cancel(r.id);
            drop(core);
            inc(&self.metrics.dataplane_errors);
            self.metrics.count_denied(DenyReason::Dataplane);
            warn!(host = %h.name, r = %r.addr, service = %svc_str(service), error = %e, "reservation not installed");
            return Allocation::Denied(DenyReason::Dataplane);
        }
        drop(core);
        inc(&self.metrics.reservations);
        info!(id = r.id, host = %h.name, r = %r.addr, service = %svc_str(service), "reserved");
        Allocation::Granted(r.addr)
    }

    /// Decides a queued first packet: the mark to set, or None to drop it.
    pub fn claim(&self, pkt: &FirstPacket, now: Instant) -> Option<u32> {
        let mut core = self.core();
        let Some(r) = core.pool.claim(pkt.dst, pkt.proto, pkt.dport, now) else {
            drop(core);
            inc(&self.metrics.claim_rejected);
            info!(src = %pkt.src, dst = %pkt.dst, proto = pkt.proto, dport = ?pkt.dport, "first packet without reservation dropped");
            return None;
        };
        let removed = core.sink.remove(&r);
        drop(core);
        if let Err(e) = removed {
            inc(&self.metrics.dataplane_errors);
            warn!(r = %r.addr, error = %e, "claimed reservation's kernel element not removed (it expires by itself)");
        }
        inc(&self.metrics.claims);
        info!(
            id = r.id,
            host = %self.host_name(r.host),
            r = %r.addr,
            service = %svc_str(r.service),
            src = %pkt.src,
            sport = ?pkt.sport,
            proto = pkt.proto,
            dport = ?pkt.dport,
            "claimed"
        );
        Some(claim_mark(r.host))
    }

    /// Releases reservations whose Tmax passed (their kernel elements expire by themselves).
    pub fn expire(&self, now: Instant) {
        let expired = self.core().pool.expire(now);
        for r in expired {
            inc(&self.metrics.expiries);
            info!(id = r.id, host = %self.host_name(r.host), r = %r.addr, service = %svc_str(r.service), "expired unclaimed");
        }
    }

    pub fn pool_stats(&self) -> crate::pool::PoolStats {
        self.core().pool.stats()
    }

    /// Pending reservations, for `rgw status`.
    pub fn pending(&self) -> Vec<(String, Ipv4Addr, String, f64)> {
        let now = Instant::now();
        let core = self.core();
        core.pool
            .pending()
            .filter(|r| r.is_valid_at(now))
            .map(|r| {
                let left = r.expires.saturating_duration_since(now).as_secs_f64();
                (
                    self.host_name(r.host).to_string(),
                    r.addr,
                    svc_str(r.service),
                    left,
                )
            })
            .collect()
    }
}

/// The allocator the DNS responder uses on the public view.
pub struct GatewayAllocator<'a>(pub &'a Gateway);

impl Allocator for GatewayAllocator<'_> {
    fn allocate(&mut self, host: usize, service: Option<ServiceKey>) -> Allocation {
        self.0.allocate(host, service, Instant::now())
    }
}

fn zone_from_config(cfg: &Config) -> ZoneData {
    use hickory_proto::rr::Name;
    // Names were validated by Config::load; a failure here is an invariant break.
    let name =
        |s: &str| Name::from_ascii(s).expect("config validated zone names as LDH domain names");
    let hosts = cfg
        .hosts
        .iter()
        .map(|h| Host {
            name: h.name.clone(),
            ipv4: h.ipv4,
            services: h.services.clone(),
        })
        .collect();
    ZoneData::new(
        ZoneSettings {
            apex: name(&cfg.zone.name),
            ns_name: name(&cfg.zone.ns_name),
            ns_addr: cfg.wan.service_address,
            hostmaster: name(&cfg.zone.hostmaster),
            serial: cfg.zone.serial,
            static_ttl: cfg.zone.static_ttl,
            negative_ttl: cfg.zone.negative_ttl,
        },
        hosts,
    )
}
