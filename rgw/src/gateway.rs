//! The gateway's shared core: the Circular Pool and the kernel's reservation
//! sets, kept in step under one lock.
//!
//! Allocation (DNS) and claim (NFQUEUE gate) both change the pool *and* the
//! kernel. Doing both under one mutex keeps them in the same order: a claim's
//! element delete can never remove the element of a newer reservation of the
//! same (R, proto, port) slot made in between.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock};
use std::time::Instant;
use std::time::SystemTime;

use rgw_dns::{
    AliasKey, AliasZone, AllocRequest, Allocation, Allocator, AntiSpoof, DeniedPolicy, DenyReason,
    Host, QueryContext, Responder, ServiceKey, SpoofEvent, ZoneData, ZoneSettings,
};
use tracing::{debug, info, warn};

use crate::admission::{ecs_admits, Admission, AntiSpoofMode, Asker, Kind};

use crate::bindlog::{BindingRecord, BindingSender};
use crate::config::{Config, ExhaustedPolicy, HostConfig};
use crate::dataplane::gate::FirstPacket;
use crate::dataplane::nlset::{key_addr, key_addr_proto_port, NlError, SetWriter};
use crate::dataplane::ruleset::{claim_mark, SET_RESV_ADDR, SET_RESV_SVC};
use crate::metrics::{inc, Metrics};
use crate::pool::{CircularPool, Reservation, ReserveError, ReserveRequest};

/// Writes reservations into the kernel. A trait so the core can be tested
/// without netlink; the daemon uses [`SetWriter`].
pub trait ReservationSink: Send {
    /// Installs reservations made together; all of them or (on error) the
    /// caller treats none as installed.
    fn install(&mut self, rs: &[Reservation]) -> Result<(), NlError>;
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
    fn install(&mut self, rs: &[Reservation]) -> Result<(), NlError> {
        if let [r] = rs {
            let (set, key) = set_and_key(r);
            return self
                .writer
                .add(&self.table, set, &key, Some(self.tmax), false);
        }
        // One netlink batch per set (at most two round trips for any batch size).
        // If the second is refused the first set's elements stay until Tmax:
        // harmless, a packet to them finds no reservation and is dropped.
        for set in [SET_RESV_ADDR, SET_RESV_SVC] {
            let keys: Vec<Vec<u8>> = rs
                .iter()
                .map(set_and_key)
                .filter(|(s, _)| *s == set)
                .map(|(_, k)| k)
                .collect();
            if !keys.is_empty() {
                let refs: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
                self.writer
                    .add_many(&self.table, set, &refs, Some(self.tmax))?;
            }
        }
        Ok(())
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
    /// Who asked for each pending reservation (for the binding log and the admission policy).
    origins: HashMap<u64, Origin>,
    admission: Admission,
}

/// The query behind a reservation: the resolver that sent it and the EDNS
/// Client Subnet it carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Origin {
    pub resolver: Option<IpAddr>,
    pub client_subnet: Option<(IpAddr, u8)>,
}

impl Origin {
    fn asker(self) -> Asker {
        Asker {
            resolver: self.resolver,
            client_subnet: self.client_subnet,
        }
    }
}

/// What a reload replaces at once: the configuration and the DNS answers
/// built from it. Readers take an `Arc` and keep a consistent view.
pub struct Snapshot {
    pub cfg: Config,
    pub responder: Responder,
}

impl Snapshot {
    fn new(cfg: Config, key: &AliasKey) -> Snapshot {
        let policy = match cfg.pool.on_exhausted {
            ExhaustedPolicy::Drop => DeniedPolicy::Drop,
            ExhaustedPolicy::Servfail => DeniedPolicy::Servfail,
            ExhaustedPolicy::Refused => DeniedPolicy::Refused,
        };
        let antispoof = match &cfg.admission.antispoof {
            AntiSpoofMode::Off => AntiSpoof::Off,
            AntiSpoofMode::Tc => AntiSpoof::Tc,
            AntiSpoofMode::Cname { zone, lifetime } => AntiSpoof::Cname(AliasZone {
                name: hickory_proto::rr::Name::from_ascii(zone)
                    .expect("config validated the alias zone as a name inside the zone"),
                lifetime: *lifetime,
                key: key.clone(),
            }),
        };
        Snapshot {
            responder: Responder::new(zone_from_config(&cfg), policy).with_antispoof(antispoof),
            cfg,
        }
    }

    fn host_name(&self, idx: usize) -> &str {
        match self.cfg.hosts.get(idx) {
            Some(h) if !h.name.is_empty() => &h.name,
            Some(_) => "(removed)",
            None => "?",
        }
    }
}

pub struct Gateway {
    state: RwLock<Arc<Snapshot>>,
    pub metrics: Metrics,
    core: Mutex<Core>,
    /// Where claims are recorded for attribution (set once at start).
    bindings: OnceLock<BindingSender>,
    /// The www proxy's counters (zero when it is off).
    pub proxy_stats: Arc<crate::proxy::ProxyStats>,
    /// One reload at a time (SIGHUP and `rgw reload` may race).
    pub reload_lock: Mutex<()>,
    /// Claims of ALG control flows (the public address the peer used).
    alg_claims: Mutex<crate::dataplane::alg::AlgClaims>,
    /// The ALG engine, when `[alg]` is enabled (set once at start).
    pub alg: OnceLock<Arc<crate::dataplane::alg::AlgState>>,
    /// Signs anti-spoofing aliases; kept across reloads.
    alias_key: AliasKey,
    /// The epoch of [`QueryContext::now`].
    epoch: Instant,
}

/// Display helper for log lines: `tcp/22` or `any`.
fn svc_str(s: Option<ServiceKey>) -> String {
    s.map(|s| format!("{}/{}", s.proto, s.port))
        .unwrap_or_else(|| "any".into())
}

/// What a reload changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReloadReport {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
    /// Pending reservations of removed hosts, cancelled.
    pub cancelled: usize,
}

/// A reload checked against the running configuration, ready to commit.
pub struct PreparedReload {
    pub cfg: Config,
    report: ReloadReport,
    removed_ids: Vec<usize>,
}

impl Gateway {
    pub fn new(cfg: Config, sink: Box<dyn ReservationSink>) -> Arc<Self> {
        let pool = CircularPool::new(cfg.pool.addresses.iter().copied(), cfg.pool.tmax);
        let alias_key = AliasKey::default();
        let admission = Admission::new(cfg.admission.clone());
        Arc::new(Gateway {
            state: RwLock::new(Arc::new(Snapshot::new(cfg, &alias_key))),
            metrics: Metrics::default(),
            core: Mutex::new(Core {
                pool,
                sink,
                origins: HashMap::new(),
                admission,
            }),
            bindings: OnceLock::new(),
            proxy_stats: Arc::default(),
            reload_lock: Mutex::new(()),
            alg_claims: Mutex::default(),
            alg: OnceLock::new(),
            alias_key,
            epoch: Instant::now(),
        })
    }

    /// What the answer policy needs to know about a query besides its bytes.
    pub fn query_context(&self, resolver: IpAddr) -> QueryContext {
        QueryContext {
            resolver: Some(resolver),
            now: self.epoch.elapsed(),
        }
    }

    /// Resolvers and client subnets the admission policy tracks.
    pub fn admission_tracked(&self) -> (usize, usize) {
        self.core().admission.tracked()
    }

    /// Records every claim from now on (see [`crate::bindlog`]).
    pub fn attach_binding_log(&self, tx: BindingSender) {
        let _ = self.bindings.set(tx);
    }

    pub fn binding_log(&self) -> Option<&BindingSender> {
        self.bindings.get()
    }

    /// The current configuration and responder.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        Arc::clone(&self.state.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Checks `new` against the running configuration: only what can change
    /// without a restart may differ. Hosts keep their index (it is in pending
    /// reservations and in claim marks): a removed host leaves an empty slot,
    /// a new host is appended.
    pub fn prepare_reload(&self, new: Config) -> Result<PreparedReload, String> {
        let cur = self.snapshot();
        if let Some(key) = restart_only_change(&cur.cfg, &new) {
            return Err(format!("key `{key}` changed: restart rgw to apply it (reload changes hosts, zone TTLs and names, on_exhausted)"));
        }
        let mut report = ReloadReport::default();
        let mut removed_ids = Vec::new();
        let mut incoming: Vec<Option<HostConfig>> = new.hosts.iter().cloned().map(Some).collect();
        let mut hosts = Vec::with_capacity(cur.cfg.hosts.len().max(incoming.len()));
        for (idx, old) in cur.cfg.hosts.iter().enumerate() {
            let found = incoming.iter_mut().find(|h| {
                h.as_ref()
                    .is_some_and(|h| !old.name.is_empty() && h.name == old.name)
            });
            match found.and_then(Option::take) {
                Some(h) => {
                    if h != *old {
                        report.changed.push(h.name.clone());
                    }
                    hosts.push(h);
                }
                None => {
                    if !old.name.is_empty() {
                        report.removed.push(old.name.clone());
                        removed_ids.push(idx);
                    }
                    hosts.push(HostConfig::vacant());
                }
            }
        }
        for h in incoming.into_iter().flatten() {
            report.added.push(h.name.clone());
            hosts.push(h);
        }
        if hosts.len() > 0xfffe {
            return Err(
                "more than 65534 host slots since start: restart rgw to compact them".into(),
            );
        }
        let cfg = Config { hosts, ..new };
        Ok(PreparedReload {
            cfg,
            report,
            removed_ids,
        })
    }

    /// Makes a prepared reload current: cancels the removed hosts' pending
    /// reservations (pool and kernel) and swaps the snapshot. Established
    /// flows are conntrack's and are not touched.
    pub fn commit_reload(&self, prepared: PreparedReload) -> ReloadReport {
        let PreparedReload {
            cfg,
            mut report,
            removed_ids,
        } = prepared;
        {
            let mut core = self.core();
            let doomed: Vec<Reservation> = core
                .pool
                .pending()
                .filter(|r| removed_ids.contains(&r.host))
                .cloned()
                .collect();
            for r in &doomed {
                core.pool.cancel(r.id);
                if let Some(o) = core.origins.remove(&r.id) {
                    core.admission.on_cancelled(o.asker());
                }
                if let Err(e) = core.sink.remove(r) {
                    warn!(r = %r.addr, error = %e, "cancelled reservation's kernel element not removed (it expires by itself)");
                }
            }
            report.cancelled = doomed.len();
            core.admission.reconfigure(cfg.admission.clone());
            // Swapped under the core lock: no allocation sees the old hosts after this.
            *self.state.write().unwrap_or_else(|p| p.into_inner()) =
                Arc::new(Snapshot::new(cfg, &self.alias_key));
        }
        info!(added = ?report.added, removed = ?report.removed, changed = ?report.changed, cancelled = report.cancelled, "configuration reloaded");
        report
    }

    fn core(&self) -> MutexGuard<'_, Core> {
        // A panic while holding the lock leaves the pool consistent enough to go on
        // (each operation is a few map updates); keep serving rather than abort.
        self.core.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `answer` with an allocator whose reservations are installed in the
    /// kernel together, in one netlink batch, before this returns: answers
    /// computed inside may only be sent afterwards. Returns `answer`'s result
    /// and whether the install succeeded; on failure every reservation made
    /// inside is cancelled and the caller must not send the answers that
    /// carried one (see [`GatewayAllocator`] and the DNS shell).
    pub fn with_allocator<R>(
        &self,
        answer: impl FnOnce(&mut GatewayAllocator<'_>) -> R,
    ) -> (R, bool) {
        let mut alloc = GatewayAllocator {
            gw: self,
            core: None,
            made: Vec::new(),
            now: Instant::now(),
            resolver: None,
        };
        let out = answer(&mut alloc);
        let GatewayAllocator { core, made, .. } = alloc;
        let Some(mut core) = core.filter(|_| !made.is_empty()) else {
            return (out, true);
        };
        let snap = self.snapshot();
        if let Err(e) = core.sink.install(&made) {
            for r in &made {
                core.pool.cancel(r.id);
                if let Some(o) = core.origins.remove(&r.id) {
                    core.admission.on_cancelled(o.asker());
                }
            }
            drop(core);
            inc(&self.metrics.dataplane_errors);
            for r in &made {
                self.metrics.count_denied(DenyReason::Dataplane);
                warn!(host = %snap.host_name(r.host), r = %r.addr, service = %svc_str(r.service), error = %e, "reservation not installed");
            }
            return (out, false);
        }
        drop(core);
        for r in &made {
            inc(&self.metrics.reservations);
            info!(id = r.id, host = %snap.host_name(r.host), r = %r.addr, service = %svc_str(r.service), "reserved");
        }
        (out, true)
    }

    /// Decides a queued first packet: the mark to set, or None to drop it.
    pub fn claim(&self, pkt: &FirstPacket, now: Instant) -> Option<u32> {
        let mut core = self.core();
        self.sweep(&mut core, now);
        if core.admission.config().ecs_binding {
            // ECS binding: a reservation asked for with a client subnet admits
            // only sources inside it; others are dropped and it stays pending.
            let bound = core
                .pool
                .matching(pkt.dst, pkt.proto, pkt.dport)
                .and_then(|r| core.origins.get(&r.id))
                .and_then(|o| o.client_subnet);
            if let Some(subnet) = bound.filter(|&sn| !ecs_admits(sn, pkt.src)) {
                drop(core);
                inc(&self.metrics.ecs_binding_dropped);
                info!(src = %pkt.src, dst = %pkt.dst, proto = pkt.proto, dport = ?pkt.dport, subnet = %subnet.0, prefix = subnet.1, "first packet outside the query's client subnet dropped");
                return None;
            }
        }
        let Some(r) = core.pool.claim(pkt.dst, pkt.proto, pkt.dport, now) else {
            drop(core);
            inc(&self.metrics.claim_rejected);
            info!(src = %pkt.src, dst = %pkt.dst, proto = pkt.proto, dport = ?pkt.dport, "first packet without reservation dropped");
            return None;
        };
        let removed = core.sink.remove(&r);
        let origin = core.origins.remove(&r.id).unwrap_or_default();
        core.admission.on_claimed(origin.asker(), now);
        drop(core);
        if let Err(e) = removed {
            inc(&self.metrics.dataplane_errors);
            warn!(r = %r.addr, error = %e, "claimed reservation's kernel element not removed (it expires by itself)");
        }
        inc(&self.metrics.claims);
        let snap = self.snapshot();
        self.note_alg_claim(&snap.cfg, pkt, r.addr, now);
        if let Some(tx) = self.bindings.get() {
            // Never blocks the gate: a full queue is counted as dropped by the writer state.
            tx.try_send(BindingRecord {
                time: SystemTime::now(),
                public: r.addr,
                proto: pkt.proto,
                port: pkt.dport,
                private: snap
                    .cfg
                    .hosts
                    .get(r.host)
                    .map_or(Ipv4Addr::UNSPECIFIED, |h| h.ipv4),
                host: snap.host_name(r.host).to_string(),
                remote: pkt.src,
                remote_port: pkt.sport,
                resolver: origin.resolver,
                client_subnet: origin.client_subnet,
            });
        }
        info!(
            id = r.id,
            host = %snap.host_name(r.host),
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

    /// Remembers the public address of a claimed ALG control flow, for the
    /// ALG engine that sees the flow next in the forward hook.
    fn note_alg_claim(&self, cfg: &Config, pkt: &FirstPacket, public: Ipv4Addr, now: Instant) {
        let (Some(sport), Some(dport)) = (pkt.sport, pkt.dport) else {
            return;
        };
        if !cfg.alg.is_queued(pkt.proto, dport) {
            return;
        }
        self.alg_claims
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .note((pkt.proto, pkt.src, sport, dport), public, now);
    }

    /// The public address of a claimed ALG control flow:
    /// `(proto, peer, peer port, private port)`.
    pub fn alg_claim(&self, key: &(u8, Ipv4Addr, u16, u16), now: Instant) -> Option<Ipv4Addr> {
        self.alg_claims
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key, now)
    }

    /// Releases reservations whose Tmax passed (their kernel elements expire by themselves).
    pub fn expire(&self, now: Instant) {
        let mut core = self.core();
        self.sweep(&mut core, now);
    }

    /// Expires due reservations before the pool is used, so every expiry is
    /// counted and logged here (the pool would otherwise drop them silently
    /// inside reserve/claim) and its origin is forgotten.
    fn sweep(&self, core: &mut Core, now: Instant) {
        if core.pool.next_expiry().is_none_or(|t| t > now) {
            return;
        }
        let expired = core.pool.expire(now);
        if expired.is_empty() {
            return;
        }
        let snap = self.snapshot();
        for r in expired {
            if let Some(o) = core.origins.remove(&r.id) {
                core.admission.on_expired(o.asker(), now);
            }
            inc(&self.metrics.expiries);
            info!(id = r.id, host = %snap.host_name(r.host), r = %r.addr, service = %svc_str(r.service), "expired unclaimed");
        }
    }

    pub fn pool_stats(&self) -> crate::pool::PoolStats {
        self.core().pool.stats()
    }

    /// Pending reservations, for `rgw status`.
    pub fn pending(&self) -> Vec<(String, Ipv4Addr, String, f64)> {
        let now = Instant::now();
        let snap = self.snapshot();
        let core = self.core();
        core.pool
            .pending()
            .filter(|r| r.is_valid_at(now))
            .map(|r| {
                let left = r.expires.saturating_duration_since(now).as_secs_f64();
                (
                    snap.host_name(r.host).to_string(),
                    r.addr,
                    svc_str(r.service),
                    left,
                )
            })
            .collect()
    }
}

/// The allocator the DNS responder uses on the public view: reserves in the
/// pool under the core lock; [`Gateway::with_allocator`] installs what it made.
pub struct GatewayAllocator<'a> {
    gw: &'a Gateway,
    /// Taken at the first allocation only: static answers never wait for the pool.
    core: Option<MutexGuard<'a, Core>>,
    made: Vec<Reservation>,
    now: Instant,
    /// The resolver whose query is being answered (set by the DNS shell).
    resolver: Option<IpAddr>,
}

impl GatewayAllocator<'_> {
    /// Names the resolver of the query answered next.
    pub fn set_resolver(&mut self, resolver: IpAddr) {
        self.resolver = Some(resolver);
    }

    /// A reservation refused by the admission policy: counted and logged.
    fn refuse(
        &self,
        asker: Asker,
        host: &str,
        service: Option<ServiceKey>,
        reason: &str,
        count: impl FnOnce(),
    ) -> Allocation {
        count();
        self.gw.metrics.count_denied(DenyReason::Admission);
        let subnet = asker.client_subnet.map(|(a, l)| format!("{a}/{l}"));
        info!(host, service = %svc_str(service), resolver = ?asker.resolver, ecs = ?subnet, reason, "reservation refused by admission policy");
        Allocation::Denied(DenyReason::Admission)
    }
}

impl Allocator for GatewayAllocator<'_> {
    fn allocate(&mut self, ask: AllocRequest) -> Allocation {
        let AllocRequest {
            host,
            service,
            client_subnet,
        } = ask;
        let gw = self.gw;
        let now = self.now;
        let core = self.core.get_or_insert_with(|| {
            let mut core = gw.core();
            gw.sweep(&mut core, now);
            core
        });
        // Read under the core lock: a reload swaps the snapshot under it, so a
        // host removed by a reload never gets a new reservation.
        let snap = gw.snapshot();
        let Some(h) = snap.cfg.hosts.get(host).filter(|h| !h.name.is_empty()) else {
            // Removed by a reload after this query's answer was being built.
            gw.metrics.count_denied(DenyReason::Exhausted);
            return Allocation::Denied(DenyReason::Exhausted);
        };
        let req = ReserveRequest {
            host,
            service,
            host_limit: h.max_pending,
        };
        let asker = Asker {
            resolver: self.resolver,
            client_subnet,
        };
        let policy = snap.cfg.admission.checks_reservations();
        if policy {
            if let Err(refusal) = core.admission.precheck(self.resolver, now) {
                return self.refuse(asker, &h.name, service, refusal.as_str(), || {
                    gw.metrics.count_refusal(refusal)
                });
            }
        }
        let load_before = {
            let st = core.pool.stats();
            1.0 - st.free as f64 / st.size.max(1) as f64
        };
        let max_pending = snap.cfg.limits.max_pending as usize;
        if core.pool.stats().pending >= max_pending {
            inc(&gw.metrics.denied_pending_limit);
            info!(host = %h.name, service = %svc_str(service), limit = max_pending, "reservation denied: limits.max_pending reached");
            return Allocation::Denied(DenyReason::Exhausted);
        }
        match core.pool.reserve(req, self.now) {
            Ok(r) => {
                let addr = r.addr;
                if policy {
                    let kind = match service {
                        None => Kind::Fqdn,
                        Some(_) if core.pool.holders(addr) > 1 => Kind::Shared,
                        Some(_) => Kind::Sfqdn,
                    };
                    if let Err(refusal) = core.admission.judge(asker, kind, load_before, now) {
                        core.pool.cancel(r.id);
                        return self.refuse(asker, &h.name, service, refusal.as_str(), || {
                            gw.metrics.count_refusal(refusal)
                        });
                    }
                    core.admission.on_reserved(asker, now);
                }
                core.origins.insert(
                    r.id,
                    Origin {
                        resolver: self.resolver,
                        client_subnet,
                    },
                );
                self.made.push(r);
                Allocation::Granted(addr)
            }
            Err(e) => {
                let reason = match e {
                    ReserveError::Exhausted => DenyReason::Exhausted,
                    ReserveError::HostLimit => DenyReason::HostLimit,
                };
                self.gw.metrics.count_denied(reason);
                info!(host = %h.name, service = %svc_str(service), reason = ?reason, "reservation denied");
                Allocation::Denied(reason)
            }
        }
    }

    fn note(&mut self, event: SpoofEvent) {
        self.gw.metrics.count_spoof_event(event);
        debug!(resolver = ?self.resolver, ?event, "anti-spoofing");
    }
}

/// Denies every reservation: used to re-answer queries whose reservation
/// could not be installed.
pub struct DataplaneDown;

impl Allocator for DataplaneDown {
    fn allocate(&mut self, _req: AllocRequest) -> Allocation {
        Allocation::Denied(DenyReason::Dataplane)
    }
}

/// The first key whose change needs a restart, if any.
fn restart_only_change(cur: &Config, new: &Config) -> Option<&'static str> {
    let checks: [(&'static str, bool); 21] = [
        ("proxy", cur.proxy != new.proxy),
        ("alg", cur.alg != new.alg),
        ("binding_log", cur.binding_log != new.binding_log),
        ("metrics.listen", cur.metrics_listen != new.metrics_listen),
        ("zone.name", cur.zone.name != new.zone.name),
        ("wan.interface", cur.wan.interface != new.wan.interface),
        (
            "wan.service_address",
            cur.wan.service_address != new.wan.service_address,
        ),
        ("wan.dns_port", cur.wan.dns_port != new.wan.dns_port),
        ("lan", cur.lan != new.lan),
        ("pool.addresses", cur.pool.addresses != new.pool.addresses),
        ("pool.tmax", cur.pool.tmax != new.pool.tmax),
        (
            "dataplane.table",
            cur.dataplane.table != new.dataplane.table,
        ),
        (
            "dataplane.queue_num",
            cur.dataplane.queue_num != new.dataplane.queue_num,
        ),
        (
            "dataplane.queue_backend",
            cur.dataplane.queue_backend != new.dataplane.queue_backend,
        ),
        ("control.socket", cur.control_socket != new.control_socket),
        (
            "dataplane.synproxy",
            cur.dataplane.synproxy != new.dataplane.synproxy,
        ),
        (
            "dataplane.synproxy_mss",
            cur.dataplane.synproxy_mss != new.dataplane.synproxy_mss,
        ),
        (
            "dataplane.synproxy_wscale",
            cur.dataplane.synproxy_wscale != new.dataplane.synproxy_wscale,
        ),
        (
            "limits.gate_queue_len",
            cur.limits.gate_queue_len != new.limits.gate_queue_len,
        ),
        (
            "limits.dns_udp_batch",
            cur.limits.dns_udp_batch != new.limits.dns_udp_batch,
        ),
        // The translator's static mappings and the TUN are built at start.
        ("rgw64", cur.rgw64 != new.rgw64),
    ];
    checks
        .into_iter()
        .find(|(_, changed)| *changed)
        .map(|(k, _)| k)
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
            ipv6: h.ipv6,
            services: h.services.clone(),
        })
        .collect();
    let mut zone = ZoneData::new(
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
    );
    zone.www = cfg.proxy.is_some();
    zone
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    /// Records install calls; fails them when asked.
    struct Recorder {
        calls: Arc<AtomicUsize>,
        installed: Arc<AtomicUsize>,
        removed: Arc<AtomicUsize>,
        fail: bool,
    }

    impl ReservationSink for Recorder {
        fn install(&mut self, rs: &[Reservation]) -> Result<(), NlError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            if self.fail {
                return Err(NlError::Io(std::io::Error::from_raw_os_error(
                    libc::ENOBUFS,
                )));
            }
            self.installed.fetch_add(rs.len(), Ordering::SeqCst);
            Ok(())
        }
        fn remove(&mut self, _r: &Reservation) -> Result<(), NlError> {
            self.removed.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }

    fn config() -> Config {
        config_with("")
    }

    /// The test configuration plus extra TOML appended (more hosts).
    fn config_with(extra: &str) -> Config {
        let dir = std::env::temp_dir().join(format!(
            "rgw-gw-test-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir is writable");
        let path = dir.join("rgw.toml");
        let text = r#"
[zone]
name = "gwa.demo."
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
[[hosts]]
name = "hosta"
ipv4 = "192.168.0.101"
max_pending = 0
"#;
        std::fs::write(&path, format!("{text}{extra}")).expect("temp file is writable");
        let loaded = Config::load(&path);
        let _ = std::fs::remove_dir_all(&dir);
        loaded.expect("test config is valid")
    }

    fn gateway(
        fail: bool,
    ) -> (
        Arc<Gateway>,
        Arc<AtomicUsize>,
        Arc<AtomicUsize>,
        Arc<AtomicUsize>,
    ) {
        let (calls, installed, removed) = (Arc::default(), Arc::default(), Arc::default());
        let sink = Recorder {
            calls: Arc::clone(&calls),
            installed: Arc::clone(&installed),
            removed: Arc::clone(&removed),
            fail,
        };
        (
            Gateway::new(config(), Box::new(sink)),
            calls,
            installed,
            removed,
        )
    }

    const HOSTB: &str =
        "\n[[hosts]]\nname = \"hostb\"\nipv4 = \"192.168.0.102\"\nmax_pending = 0\n";
    const HOSTC: &str =
        "\n[[hosts]]\nname = \"hostc\"\nipv4 = \"192.168.0.103\"\nmax_pending = 0\n";

    #[test]
    fn reload_keeps_host_slots_and_cancels_removed_hosts() {
        let (calls, installed, removed) = (Arc::default(), Arc::default(), Arc::default());
        let sink = Recorder {
            calls,
            installed,
            removed: Arc::clone(&removed),
            fail: false,
        };
        let gw = Gateway::new(config_with(HOSTB), Box::new(sink));
        // hostb (slot 1) holds a pending reservation.
        let (grant, _) = gw.with_allocator(|a| {
            a.allocate(AllocRequest {
                host: 1,
                service: None,
                client_subnet: None,
            })
        });
        assert!(matches!(grant, Allocation::Granted(_)));
        // New file: hosta stays, hostb goes, hostc arrives.
        let prepared = gw
            .prepare_reload(config_with(HOSTC))
            .expect("hosts may change");
        let names: Vec<&str> = prepared.cfg.hosts.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(
            names,
            ["hosta", "", "hostc"],
            "hosta keeps slot 0, hostb's slot 1 stays vacant"
        );
        let report = gw.commit_reload(prepared);
        assert_eq!(
            (report.added, report.removed, report.cancelled),
            (vec!["hostc".to_string()], vec!["hostb".to_string()], 1)
        );
        assert_eq!(
            removed.load(Ordering::SeqCst),
            1,
            "the cancelled reservation's kernel element is removed"
        );
        assert_eq!(gw.pool_stats().pending, 0);
        // The vacant slot never allocates again; the new host does.
        let (grants, _) = gw.with_allocator(|a| {
            (
                a.allocate(AllocRequest {
                    host: 1,
                    service: None,
                    client_subnet: None,
                }),
                a.allocate(AllocRequest {
                    host: 2,
                    service: None,
                    client_subnet: None,
                }),
            )
        });
        assert_eq!(grants.0, Allocation::Denied(DenyReason::Exhausted));
        assert!(matches!(grants.1, Allocation::Granted(_)));
        let zone = &gw.snapshot().responder;
        let lookup = |n: &str| {
            zone.zone()
                .lookup(&hickory_proto::rr::Name::from_ascii(n).expect("valid name"))
        };
        assert_eq!(lookup("hostb.gwa.demo."), rgw_dns::Lookup::NxDomain);
        assert_eq!(
            lookup("hostc.gwa.demo."),
            rgw_dns::Lookup::Host {
                host: 2,
                service: None
            }
        );
    }

    #[test]
    fn reload_refuses_keys_that_need_a_restart() {
        let (gw, ..) = gateway(false);
        let mut other = config();
        other.pool.addresses.pop();
        let e = gw
            .prepare_reload(other)
            .err()
            .expect("pool changes need a restart");
        assert!(e.contains("pool.addresses"), "{e}");
        let mut other = config();
        other.lan.upstream_resolver = "203.0.113.99:53".parse().expect("valid address");
        assert!(gw
            .prepare_reload(other)
            .err()
            .expect("lan changes need a restart")
            .contains("lan"));
    }

    #[test]
    fn a_batch_is_installed_in_one_call() {
        let (gw, calls, installed, _) = gateway(false);
        let (grants, ok) = gw.with_allocator(|a| {
            vec![
                a.allocate(AllocRequest {
                    host: 0,
                    service: None,
                    client_subnet: None,
                }),
                a.allocate(AllocRequest {
                    host: 0,
                    service: None,
                    client_subnet: None,
                }),
            ]
        });
        assert!(ok);
        assert!(grants.iter().all(|g| matches!(g, Allocation::Granted(_))));
        assert_eq!(
            (
                calls.load(Ordering::SeqCst),
                installed.load(Ordering::SeqCst)
            ),
            (1, 2)
        );
        assert_eq!(gw.pool_stats().pending, 2);
        assert_eq!(gw.metrics.reservations.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn no_allocation_no_install() {
        let (gw, calls, _, _) = gateway(false);
        let ((), ok) = gw.with_allocator(|_| ());
        assert!(ok);
        assert_eq!(calls.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn a_refused_install_cancels_every_reservation_of_the_batch() {
        let (gw, calls, _, _) = gateway(true);
        let (_, ok) = gw.with_allocator(|a| {
            (
                a.allocate(AllocRequest {
                    host: 0,
                    service: None,
                    client_subnet: None,
                }),
                a.allocate(AllocRequest {
                    host: 0,
                    service: None,
                    client_subnet: None,
                }),
            )
        });
        assert!(!ok);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(
            gw.pool_stats().pending,
            0,
            "cancelled reservations free their addresses"
        );
        assert_eq!(gw.metrics.denied_dataplane.load(Ordering::Relaxed), 2);
        assert_eq!(gw.metrics.reservations.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn claim_removes_the_kernel_element_and_is_single_use() {
        let (gw, _, _, removed) = gateway(false);
        let (grant, _) = gw.with_allocator(|a| {
            a.allocate(AllocRequest {
                host: 0,
                service: None,
                client_subnet: None,
            })
        });
        let Allocation::Granted(r) = grant else {
            panic!("pool of 3 has room")
        };
        let pkt = FirstPacket {
            src: Ipv4Addr::new(203, 0, 113, 10),
            dst: r,
            proto: 6,
            sport: Some(40000),
            dport: Some(22),
        };
        assert_eq!(gw.claim(&pkt, Instant::now()), Some(claim_mark(0)));
        assert_eq!(removed.load(Ordering::SeqCst), 1);
        let other = FirstPacket {
            src: Ipv4Addr::new(203, 0, 113, 11),
            ..pkt
        };
        assert_eq!(
            gw.claim(&other, Instant::now()),
            None,
            "a reservation admits one flow"
        );
    }

    fn gateway_with(extra: &str) -> Arc<Gateway> {
        let sink = Recorder {
            calls: Arc::default(),
            installed: Arc::default(),
            removed: Arc::default(),
            fail: false,
        };
        Gateway::new(config_with(extra), Box::new(sink))
    }

    fn ask_from(gw: &Gateway, resolver: &str, subnet: Option<(IpAddr, u8)>) -> Allocation {
        gw.with_allocator(|a| {
            a.set_resolver(resolver.parse().expect("test address"));
            a.allocate(AllocRequest {
                host: 0,
                service: None,
                client_subnet: subnet,
            })
        })
        .0
    }

    fn first_packet(src: [u8; 4], dst: Ipv4Addr) -> FirstPacket {
        FirstPacket {
            src: Ipv4Addr::from(src),
            dst,
            proto: 6,
            sport: Some(40000),
            dport: Some(8),
        }
    }

    #[test]
    fn per_resolver_limit_counts_pending_until_expiry() {
        let gw = gateway_with("\n[admission]\nmax_pending_per_resolver = 1\n");
        assert!(matches!(
            ask_from(&gw, "203.0.113.120", None),
            Allocation::Granted(_)
        ));
        assert_eq!(
            ask_from(&gw, "203.0.113.120", None),
            Allocation::Denied(DenyReason::Admission)
        );
        assert!(
            matches!(ask_from(&gw, "203.0.113.54", None), Allocation::Granted(_)),
            "another resolver has its own limit"
        );
        assert_eq!(
            gw.metrics.admission_resolver_limit.load(Ordering::Relaxed),
            1
        );
        assert_eq!(gw.metrics.denied_admission.load(Ordering::Relaxed), 1);
        assert_eq!(gw.pool_stats().pending, 2, "a refusal reserves nothing");
        gw.expire(Instant::now() + Duration::from_secs(3));
        assert!(matches!(
            ask_from(&gw, "203.0.113.120", None),
            Allocation::Granted(_)
        ));
    }

    #[test]
    fn reputation_refusal_cancels_and_a_claim_restores_it() {
        let gw =
            gateway_with("\n[admission]\nreputation = true\nfqdn_threshold = [0.3, 0.5, 0.7]\n");
        let Allocation::Granted(r) = ask_from(&gw, "198.18.0.1", None) else {
            panic!("an unknown resolver (0.5) gets its first address")
        };
        assert!(
            matches!(ask_from(&gw, "198.18.0.1", None), Allocation::Granted(_)),
            "one pending: (0+1)/(0+0+1+1+1) = 0.33 >= 0.3 at 33 % load"
        );
        assert_eq!(
            ask_from(&gw, "198.18.0.1", None),
            Allocation::Denied(DenyReason::Admission),
            "two pending: 0.25 < 0.5 at 67 % load"
        );
        assert_eq!(
            gw.metrics.admission_reputation_fqdn.load(Ordering::Relaxed),
            1
        );
        assert_eq!(
            gw.pool_stats().pending,
            2,
            "the refused reservation was cancelled"
        );
        assert!(gw
            .claim(&first_packet([203, 0, 113, 10], r), Instant::now())
            .is_some());
        assert!(
            matches!(ask_from(&gw, "198.18.0.1", None), Allocation::Granted(_)),
            "a claim counts for the resolver: (1+1)/(2+0+1+1) = 0.5 >= 0.5 at 33 % load"
        );
    }

    #[test]
    fn ecs_binding_drops_first_packets_from_outside_the_subnet() {
        let gw = gateway_with("\n[admission]\necs_binding = true\n");
        let subnet = Some(("203.0.113.100".parse().expect("ip"), 32));
        let Allocation::Granted(r) = ask_from(&gw, "203.0.113.54", subnet) else {
            panic!("granted")
        };
        assert_eq!(
            gw.claim(&first_packet([203, 0, 113, 101], r), Instant::now()),
            None
        );
        assert_eq!(gw.metrics.ecs_binding_dropped.load(Ordering::Relaxed), 1);
        assert_eq!(
            gw.pool_stats().pending,
            1,
            "the reservation stays for its client"
        );
        assert_eq!(
            gw.claim(&first_packet([203, 0, 113, 100], r), Instant::now()),
            Some(claim_mark(0))
        );
        // Without ECS in the query any source claims.
        let Allocation::Granted(r) = ask_from(&gw, "203.0.113.54", None) else {
            panic!("granted")
        };
        assert!(gw
            .claim(&first_packet([198, 18, 0, 9], r), Instant::now())
            .is_some());
    }
}
