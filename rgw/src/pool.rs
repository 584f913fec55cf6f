//! The Circular Pool: public addresses that the Realm Gateway lends out, one
//! DNS answer at a time, to reach private hosts.
//!
//! When a query for a private host's FQDN arrives, the gateway reserves a
//! public address R from the Circular Pool for Tmax and answers with R (TTL 0).
//! The first new inbound flow to R claims the reservation, the kernel NATs it
//! to the host, and R goes back to the pool at once. A service FQDN (SFQDN,
//! e.g. `tcp22.hosta.gwa.demo`) reserves only the slot (R, protocol, port), so
//! many SFQDNs share one R.
//!
//! Every reservation, FQDN or SFQDN, lives for the pool's Tmax. The pool
//! keeps no separate T_service timer: SFQDN reservations wait the same Tmax
//! for their first packet as FQDN reservations. What happens to a flow after
//! it is claimed is the kernel's business, not the pool's.
//!
//! The module is sans-IO. It has no sockets and no clock; every call that
//! depends on time takes `now`. Same inputs, same outputs.
//!
//! # Rules
//!
//! 1. An FQDN reservation takes an address exclusively. It needs an address
//!    with no reservation of any kind on it.
//! 2. SFQDN reservations share an address as long as their (proto, port)
//!    differ and no FQDN reservation holds the address.
//! 3. An SFQDN reservation goes to an address that already holds SFQDN
//!    reservations, without the same (proto, port), before it takes a free
//!    address. Among such addresses the pool picks the one that comes first
//!    in pool order (the order the addresses were given to
//!    [`CircularPool::new`]). This is first-fit packing: SFQDNs pile onto
//!    the low shared addresses, which leaves whole addresses free for FQDNs.
//! 4. Free addresses are handed out in circular (round-robin) order. A cursor
//!    moves past the last address taken from the free set, so an address
//!    that was just released is not handed out again while other free
//!    addresses exist further round the circle.
//! 5. A packet to R matches (R, proto, port) first, then (R, any). An FQDN
//!    reservation matches every protocol, ICMP included.
//! 6. A claim releases the reservation at once.
//! 7. A reservation is valid while `now < expires` (`expires = created +
//!    Tmax`). An expired reservation never matches a claim and is released.
//!    This happens lazily inside `reserve` and `claim`, and when
//!    [`CircularPool::expire`] is called. That call returns what expired.
//! 8. A reserve request carries its host's limit on pending reservations. A
//!    host that already has that many gets [`ReserveError::HostLimit`]. A limit
//!    of 0 means no limit.
//! 9. Reserving the same host and service twice is allowed. The resolver may
//!    retry, so the pool makes a second reservation and does not dedupe.
//!
//! # Data structures
//!
//! Addresses are numbered by their position in the pool (`slots`). Each slot
//! is `Free`, `Exclusive(id)` (FQDN) or `Shared(service -> id)` (SFQDNs).
//!
//! * `free: BTreeSet<slot>` plus a `cursor`. The next free address is the
//!   first free slot at or after the cursor, wrapping round to the smallest.
//!   That is rule 4 in O(log n).
//! * `shared: BTreeSet<slot>` holds the slots in state `Shared`.
//!   `by_service: HashMap<Service, BTreeSet<slot>>` holds, for each service,
//!   the shared slots that hold it. For rule 3 the pool walks `shared` and
//!   `by_service[s]` side by side, both in slot order. Every slot it skips
//!   holds a pending reservation for the same service `s`, so an SFQDN
//!   reserve costs O(log n + k), where k is the number of pending
//!   reservations for that (proto, port). It never scans every address.
//! * `pending: BTreeMap<id, Reservation>` lists pending reservations in id
//!   (creation) order, and `per_host` counts them for each host (rule 8).
//! * `expiry: BTreeSet<(expires, id)>` gives lazy expiry (rule 7). Each expired
//!   reservation is popped from the front once, in O(log n).
//!
//! Nothing here panics on any input. Invariants between the structures are
//! checked with `debug_assert!` only. A broken invariant panics in debug
//! builds and tests, and is tolerated in release builds (the affected entry is
//! dropped or left alone).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

/// Transport protocol and (protocol, port) of an SFQDN reservation: the DNS
/// crate's types, so a parsed service name goes into the pool unchanged.
pub use rgw_dns::sfqdn::{L4Proto as Proto, ServiceKey as Service};

/// Index of the host in the configuration.
pub type HostId = usize;

/// A request for a reservation. `service` is `None` for an FQDN and `Some`
/// for an SFQDN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReserveRequest {
    pub host: HostId,
    pub service: Option<Service>,
    /// The host's maximum number of pending reservations. 0 means no limit.
    pub host_limit: u32,
}

/// A pending (or just released) reservation of an address or address slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    /// Unique within the pool and increasing with creation order.
    pub id: u64,
    pub addr: Ipv4Addr,
    pub service: Option<Service>,
    pub host: HostId,
    pub created: Instant,
    /// The reservation is valid while `now < expires`.
    pub expires: Instant,
}

impl Reservation {
    /// Whether the reservation can still be claimed at `now`.
    pub fn is_valid_at(&self, now: Instant) -> bool {
        now < self.expires
    }
}

/// Why a reservation could not be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReserveError {
    #[error("circular pool exhausted")]
    Exhausted,
    #[error("host has reached its limit of pending reservations")]
    HostLimit,
}

/// A snapshot of the pool. `free + exclusive + shared == size`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PoolStats {
    /// Number of addresses in the pool.
    pub size: usize,
    /// Addresses with no reservation at all.
    pub free: usize,
    /// Addresses held by an FQDN reservation.
    pub exclusive: usize,
    /// Addresses that hold one or more SFQDN reservations.
    pub shared: usize,
    /// Pending reservations, counting every one of them.
    pub pending: usize,
}

/// What one address is currently lent out for.
#[derive(Debug)]
enum SlotState {
    Free,
    /// Held by the FQDN reservation with this id.
    Exclusive(u64),
    /// Holds SFQDN reservations, one per service. Never empty.
    Shared(HashMap<Service, u64>),
}

#[derive(Debug)]
struct Slot {
    addr: Ipv4Addr,
    state: SlotState,
}

/// The Circular Pool. See the module documentation for the rules and the
/// data structures.
/// Shared slots an SFQDN search may skip before it takes a free slot instead
/// (see `find_shared`).
pub const SHARE_SEARCH_LIMIT: usize = 64;

pub struct CircularPool {
    tmax: Duration,
    slots: Vec<Slot>,
    index: HashMap<Ipv4Addr, usize>,
    free: BTreeSet<usize>,
    /// The search for a free slot starts here (rule 4).
    cursor: usize,
    shared: BTreeSet<usize>,
    by_service: HashMap<Service, BTreeSet<usize>>,
    exclusive: usize,
    pending: BTreeMap<u64, Reservation>,
    expiry: BTreeSet<(Instant, u64)>,
    per_host: HashMap<HostId, usize>,
    next_id: u64,
}

impl fmt::Debug for CircularPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircularPool")
            .field("tmax", &self.tmax)
            .field("stats", &self.stats())
            .field("cursor", &self.cursor)
            .finish_non_exhaustive()
    }
}

impl CircularPool {
    /// Duplicate addresses are ignored (first occurrence kept).
    pub fn new(addrs: impl IntoIterator<Item = Ipv4Addr>, tmax: Duration) -> Self {
        let mut slots = Vec::new();
        let mut index = HashMap::new();
        for addr in addrs {
            if let std::collections::hash_map::Entry::Vacant(e) = index.entry(addr) {
                e.insert(slots.len());
                slots.push(Slot {
                    addr,
                    state: SlotState::Free,
                });
            }
        }
        let free = (0..slots.len()).collect();
        CircularPool {
            tmax,
            slots,
            index,
            free,
            cursor: 0,
            shared: BTreeSet::new(),
            by_service: HashMap::new(),
            exclusive: 0,
            pending: BTreeMap::new(),
            expiry: BTreeSet::new(),
            per_host: HashMap::new(),
            next_id: 1,
        }
    }

    pub fn tmax(&self) -> Duration {
        self.tmax
    }

    /// Whether `addr` belongs to the pool.
    pub fn contains(&self, addr: Ipv4Addr) -> bool {
        self.index.contains_key(&addr)
    }

    /// Reserves an address (FQDN) or an (address, proto, port) slot (SFQDN)
    /// from `now` until `now + tmax`. Reservations that have expired by `now`
    /// are released first.
    pub fn reserve(
        &mut self,
        req: ReserveRequest,
        now: Instant,
    ) -> Result<Reservation, ReserveError> {
        self.sweep(now);

        // Rule 8.
        if req.host_limit != 0 {
            let limit = usize::try_from(req.host_limit).unwrap_or(usize::MAX);
            if self.pending_for_host(req.host) >= limit {
                return Err(ReserveError::HostLimit);
            }
        }

        // Rules 1-4.
        let idx = match req.service {
            None => self.take_free(),
            Some(service) => match self.find_shared(service) {
                Some(idx) => Some(idx),
                None => self.take_free(),
            },
        }
        .ok_or(ReserveError::Exhausted)?;

        let id = self.next_id;
        // 2^64 reservations will not happen. Wrapping only avoids a debug
        // overflow panic.
        self.next_id = self.next_id.wrapping_add(1);

        let Some(slot) = self.slots.get_mut(idx) else {
            debug_assert!(false, "slot indices from free/shared are < slots.len()");
            return Err(ReserveError::Exhausted);
        };
        match req.service {
            None => {
                debug_assert!(
                    matches!(slot.state, SlotState::Free),
                    "an FQDN reservation only takes a free slot"
                );
                slot.state = SlotState::Exclusive(id);
                self.exclusive += 1;
            }
            Some(service) => {
                if let SlotState::Shared(map) = &mut slot.state {
                    map.insert(service, id);
                } else {
                    debug_assert!(
                        matches!(slot.state, SlotState::Free),
                        "an SFQDN reservation takes a shared or a free slot"
                    );
                    slot.state = SlotState::Shared(HashMap::from([(service, id)]));
                    self.shared.insert(idx);
                }
                self.by_service.entry(service).or_default().insert(idx);
            }
        }

        let reservation = Reservation {
            id,
            addr: slot.addr,
            service: req.service,
            host: req.host,
            created: now,
            expires: deadline(now, self.tmax),
        };
        self.expiry.insert((reservation.expires, id));
        *self.per_host.entry(req.host).or_insert(0) += 1;
        self.pending.insert(id, reservation.clone());
        Ok(reservation)
    }

    /// Claims the reservation that a packet to `dst` matches and releases it.
    /// `l4proto` is the IP protocol number (6 tcp, 17 udp, 1 icmp, …).
    /// `dport` is `Some` for tcp/udp.
    ///
    /// A packet matches the SFQDN reservation for (dst, proto, dport) first,
    /// then the FQDN reservation of dst, which matches any protocol.
    /// Reservations that have expired by `now` never match.
    pub fn claim(
        &mut self,
        dst: Ipv4Addr,
        l4proto: u8,
        dport: Option<u16>,
        now: Instant,
    ) -> Option<Reservation> {
        self.sweep(now);
        let slot = self.slots.get(*self.index.get(&dst)?)?;
        let service = Proto::from_number(l4proto)
            .zip(dport)
            .map(|(proto, port)| Service { proto, port });
        let by_service = match (&slot.state, service) {
            (SlotState::Shared(map), Some(service)) => map.get(&service).copied(),
            _ => None,
        };
        let id = by_service.or(match slot.state {
            SlotState::Exclusive(id) => Some(id),
            _ => None,
        })?;
        self.release(id)
    }

    /// The reservation a packet to `dst` would claim (same matching as
    /// [`CircularPool::claim`]), left pending. Does not expire anything: call
    /// [`CircularPool::expire`] first for an up-to-date answer.
    pub fn matching(&self, dst: Ipv4Addr, l4proto: u8, dport: Option<u16>) -> Option<&Reservation> {
        let slot = self.slots.get(*self.index.get(&dst)?)?;
        let service = Proto::from_number(l4proto)
            .zip(dport)
            .map(|(proto, port)| Service { proto, port });
        let id = match (&slot.state, service) {
            (SlotState::Shared(map), Some(service)) => map.get(&service).copied(),
            (SlotState::Exclusive(id), _) => Some(*id),
            _ => None,
        }?;
        self.pending.get(&id)
    }

    /// Pending reservations on `addr` (0 free, 1 exclusive or one service, more when shared).
    pub fn holders(&self, addr: Ipv4Addr) -> usize {
        match self.index.get(&addr).and_then(|&i| self.slots.get(i)) {
            Some(Slot {
                state: SlotState::Shared(map),
                ..
            }) => map.len(),
            Some(Slot {
                state: SlotState::Exclusive(_),
                ..
            }) => 1,
            _ => 0,
        }
    }

    /// Releases every reservation that has expired by `now`
    /// (`expires <= now`) and returns them in expiry order.
    pub fn expire(&mut self, now: Instant) -> Vec<Reservation> {
        let mut expired = Vec::new();
        while let Some(r) = self.pop_expired(now) {
            expired.push(r);
        }
        expired
    }

    /// Puts back a reservation that was made but could not be installed (e.g.
    /// the kernel refused it). Returns it, or `None` if it is no longer
    /// pending.
    pub fn cancel(&mut self, id: u64) -> Option<Reservation> {
        self.release(id)
    }

    pub fn stats(&self) -> PoolStats {
        PoolStats {
            size: self.slots.len(),
            free: self.free.len(),
            exclusive: self.exclusive,
            shared: self.shared.len(),
            pending: self.pending.len(),
        }
    }

    /// Pending reservations in id order. Lazy expiry means the list can
    /// still hold reservations whose `expires` has passed, until the next
    /// `reserve`, `claim` or `expire`.
    pub fn pending(&self) -> impl Iterator<Item = &Reservation> {
        self.pending.values()
    }

    /// Number of pending reservations of `host`.
    pub fn pending_for_host(&self, host: HostId) -> usize {
        self.per_host.get(&host).copied().unwrap_or(0)
    }

    /// The pending reservation with this id.
    pub fn get(&self, id: u64) -> Option<&Reservation> {
        self.pending.get(&id)
    }

    /// The earliest `expires` among pending reservations. The caller can
    /// arm a timer for it and then call [`CircularPool::expire`].
    pub fn next_expiry(&self) -> Option<Instant> {
        self.expiry.first().map(|&(t, _)| t)
    }

    /// Releases everything that has expired by `now`, without collecting it.
    fn sweep(&mut self, now: Instant) {
        while self.pop_expired(now).is_some() {}
    }

    fn pop_expired(&mut self, now: Instant) -> Option<Reservation> {
        loop {
            let &(expires, id) = self.expiry.first()?;
            if expires > now {
                return None;
            }
            if let Some(r) = self.release(id) {
                return Some(r);
            }
            // Every expiry entry should belong to a pending reservation.
            // If one does not, drop it and keep going.
            debug_assert!(false, "expiry entries belong to pending reservations");
            self.expiry.remove(&(expires, id));
        }
    }

    /// Takes the next free slot in circular order (rule 4).
    fn take_free(&mut self) -> Option<usize> {
        let idx = self
            .free
            .range(self.cursor..)
            .next()
            .or_else(|| self.free.first())
            .copied()?;
        self.free.remove(&idx);
        self.cursor = idx + 1;
        Some(idx)
    }

    /// The first shared slot in pool order that does not hold `service`
    /// (rules 2 and 3).
    ///
    /// Each slot skipped holds `service`, so a popular service (tcp22 on many
    /// hosts) makes the walk long: measured ~10 µs with 2,500 holders. The
    /// walk is therefore bounded: when every shared slot holds the service the
    /// answer is known at once, and while a free slot exists the search gives
    /// up after [`SHARE_SEARCH_LIMIT`] holders and the caller takes the free
    /// slot instead (a bounded departure from "prefer sharing", rule 3). Only
    /// when no free slot is left is the whole walk done, because then a gap is
    /// the only way to answer.
    fn find_shared(&self, service: Service) -> Option<usize> {
        let Some(holding) = self.by_service.get(&service) else {
            return self.shared.first().copied();
        };
        if holding.len() >= self.shared.len() {
            return None;
        }
        let limit = if self.free.is_empty() {
            usize::MAX
        } else {
            SHARE_SEARCH_LIMIT
        };
        // `holding` is a subset of `shared` and both are sorted. Walk them
        // together. Each slot skipped is one in `holding`.
        let mut holding = holding.iter().copied().peekable();
        for (skipped, idx) in self.shared.iter().copied().enumerate() {
            if skipped >= limit {
                return None;
            }
            while holding.next_if(|&h| h < idx).is_some() {}
            if holding.next_if_eq(&idx).is_none() {
                return Some(idx);
            }
        }
        None
    }

    /// Removes a pending reservation and frees what it held.
    fn release(&mut self, id: u64) -> Option<Reservation> {
        let r = self.pending.remove(&id)?;
        let had_expiry = self.expiry.remove(&(r.expires, id));
        debug_assert!(had_expiry, "every pending reservation has an expiry entry");
        if let Some(count) = self.per_host.get_mut(&r.host) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.per_host.remove(&r.host);
            }
        }
        match self.index.get(&r.addr).copied() {
            Some(idx) => self.vacate(idx, id, r.service),
            None => debug_assert!(false, "pending reservations hold pool addresses"),
        }
        Some(r)
    }

    fn vacate(&mut self, idx: usize, id: u64, service: Option<Service>) {
        let Some(slot) = self.slots.get_mut(idx) else {
            debug_assert!(false, "index map points into slots");
            return;
        };
        let now_free = match service {
            None => {
                let held = matches!(slot.state, SlotState::Exclusive(h) if h == id);
                debug_assert!(held, "an FQDN reservation holds its slot exclusively");
                if held {
                    self.exclusive = self.exclusive.saturating_sub(1);
                }
                held
            }
            Some(service) => {
                let SlotState::Shared(map) = &mut slot.state else {
                    debug_assert!(false, "an SFQDN reservation's slot is shared");
                    return;
                };
                if map.get(&service) != Some(&id) {
                    debug_assert!(false, "an SFQDN reservation holds its service slot");
                    return;
                }
                map.remove(&service);
                if let Some(set) = self.by_service.get_mut(&service) {
                    set.remove(&idx);
                    if set.is_empty() {
                        self.by_service.remove(&service);
                    }
                }
                let empty = map.is_empty();
                if empty {
                    self.shared.remove(&idx);
                }
                empty
            }
        };
        if now_free {
            slot.state = SlotState::Free;
            self.free.insert(idx);
        }
    }
}

/// `now + d`, saturating at the latest `Instant` the platform can represent
/// instead of panicking (e.g. for `tmax = Duration::MAX`).
fn deadline(now: Instant, d: Duration) -> Instant {
    if let Some(t) = now.checked_add(d) {
        return t;
    }
    // Binary search for the largest representable offset. The loop runs at
    // most ~100 times and only when tmax is absurdly large.
    let (mut lo, mut hi) = (Duration::ZERO, d);
    while hi.saturating_sub(lo) > Duration::from_nanos(1) {
        let mid = lo + (hi - lo) / 2;
        if now.checked_add(mid).is_some() {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    now.checked_add(lo).unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    const TMAX: Duration = Duration::from_secs(2);
    const ICMP: u8 = 1;
    const TCP: u8 = 6;
    const UDP: u8 = 17;

    fn ip(n: u32) -> Ipv4Addr {
        Ipv4Addr::from(0xC633_6400 + n) // 198.51.100.n
    }

    fn pool(n: u32) -> CircularPool {
        CircularPool::new((1..=n).map(ip), TMAX)
    }

    fn fqdn(host: HostId) -> ReserveRequest {
        ReserveRequest {
            host,
            service: None,
            host_limit: 0,
        }
    }

    fn sfqdn(host: HostId, proto: Proto, port: u16) -> ReserveRequest {
        ReserveRequest {
            host,
            service: Some(Service { proto, port }),
            host_limit: 0,
        }
    }

    fn limited(mut req: ReserveRequest, limit: u32) -> ReserveRequest {
        req.host_limit = limit;
        req
    }

    /// Checks every invariant the pool promises. `now` is used to check that
    /// no expired reservation is still pending when `swept` is true.
    fn check_invariants(p: &CircularPool, now: Instant, swept: bool) {
        let pending: Vec<&Reservation> = p.pending().collect();
        let mut fqdn_addrs = HashSet::new();
        let mut sfqdn_addrs = HashSet::new();
        let mut slots = HashSet::new();
        let mut per_host: HashMap<HostId, usize> = HashMap::new();
        let mut ids = HashSet::new();
        for r in &pending {
            assert!(p.contains(r.addr), "{r:?} outside pool");
            assert!(ids.insert(r.id), "duplicate id {}", r.id);
            assert_eq!(r.expires, r.created + p.tmax());
            if swept {
                assert!(r.is_valid_at(now), "expired {r:?} still pending");
            }
            assert_eq!(p.get(r.id), Some(*r));
            *per_host.entry(r.host).or_default() += 1;
            match r.service {
                None => assert!(fqdn_addrs.insert(r.addr), "two FQDNs on {}", r.addr),
                Some(s) => {
                    sfqdn_addrs.insert(r.addr);
                    assert!(slots.insert((r.addr, s)), "two {s:?} on {}", r.addr);
                }
            }
        }
        assert!(
            fqdn_addrs.is_disjoint(&sfqdn_addrs),
            "address with both FQDN and SFQDN reservations"
        );
        let st = p.stats();
        assert_eq!(st.free + st.exclusive + st.shared, st.size, "{st:?}");
        assert_eq!(st.pending, pending.len());
        assert_eq!(st.exclusive, fqdn_addrs.len());
        assert_eq!(st.shared, sfqdn_addrs.len());
        for (&host, &n) in &per_host {
            assert_eq!(p.pending_for_host(host), n, "host {host}");
        }
        assert_eq!(p.per_host.len(), per_host.len(), "stale per-host counters");
        assert_eq!(p.expiry.len(), pending.len());
        assert_eq!(
            p.next_expiry(),
            pending.iter().map(|r| r.expires).min(),
            "next_expiry"
        );
    }

    #[test]
    fn proto_numbers_and_names() {
        assert_eq!(Proto::Tcp.number(), 6);
        assert_eq!(Proto::Udp.number(), 17);
        assert_eq!(Proto::from_number(6), Some(Proto::Tcp));
        assert_eq!(Proto::from_number(17), Some(Proto::Udp));
        assert_eq!(Proto::from_number(1), None);
        assert_eq!(Proto::Tcp.to_string(), "tcp");
        assert_eq!(Proto::Udp.as_str(), "udp");
    }

    #[test]
    fn new_ignores_duplicates_and_contains() {
        let p = CircularPool::new([ip(1), ip(2), ip(1), ip(3), ip(2)], TMAX);
        assert_eq!(p.stats().size, 3);
        assert_eq!(p.stats().free, 3);
        assert!(p.contains(ip(3)));
        assert!(!p.contains(ip(4)));
        assert_eq!(p.tmax(), TMAX);
    }

    #[test]
    fn empty_pool_is_exhausted() {
        let mut p = CircularPool::new([], TMAX);
        let t = Instant::now();
        assert_eq!(p.reserve(fqdn(0), t), Err(ReserveError::Exhausted));
        assert_eq!(
            p.reserve(sfqdn(0, Proto::Tcp, 22), t),
            Err(ReserveError::Exhausted)
        );
        assert_eq!(p.claim(ip(1), TCP, Some(22), t), None);
    }

    #[test]
    fn fqdn_takes_exclusive_address() {
        let mut p = pool(3);
        let t = Instant::now();
        let a = p.reserve(fqdn(0), t).unwrap();
        assert_eq!(a.addr, ip(1));
        assert_eq!(a.expires, t + TMAX);
        // Nothing else may land on a's address, neither an FQDN nor an SFQDN.
        let b = p.reserve(sfqdn(1, Proto::Tcp, 22), t).unwrap();
        let c = p.reserve(fqdn(2), t).unwrap();
        assert_ne!(b.addr, a.addr);
        assert_ne!(c.addr, a.addr);
        assert_ne!(c.addr, b.addr);
        assert_eq!(p.stats().exclusive, 2);
        check_invariants(&p, t, true);
    }

    #[test]
    fn fqdn_fails_when_every_address_has_any_reservation() {
        let mut p = pool(2);
        let t = Instant::now();
        p.reserve(sfqdn(0, Proto::Tcp, 22), t).unwrap(); // ip1 shared
        p.reserve(fqdn(1), t).unwrap(); // ip2 exclusive
        assert_eq!(p.reserve(fqdn(2), t), Err(ReserveError::Exhausted));
        // An SFQDN can still share ip1.
        let s = p.reserve(sfqdn(2, Proto::Tcp, 80), t).unwrap();
        assert_eq!(s.addr, ip(1));
        assert_eq!(p.reserve(fqdn(2), t), Err(ReserveError::Exhausted));
        check_invariants(&p, t, true);
    }

    #[test]
    fn sfqdn_shares_address_with_different_service() {
        let mut p = pool(3);
        let t = Instant::now();
        let a = p.reserve(sfqdn(0, Proto::Tcp, 22), t).unwrap();
        let b = p.reserve(sfqdn(1, Proto::Tcp, 80), t).unwrap();
        let c = p.reserve(sfqdn(2, Proto::Udp, 22), t).unwrap();
        assert_eq!(a.addr, b.addr);
        assert_eq!(a.addr, c.addr);
        let st = p.stats();
        assert_eq!((st.shared, st.free, st.pending), (1, 2, 3));
        check_invariants(&p, t, true);
    }

    #[test]
    fn sfqdn_conflict_goes_to_another_address() {
        let mut p = pool(2);
        let t = Instant::now();
        let a = p.reserve(sfqdn(0, Proto::Tcp, 22), t).unwrap();
        let b = p.reserve(sfqdn(1, Proto::Tcp, 22), t).unwrap();
        assert_ne!(a.addr, b.addr);
        assert_eq!(
            p.reserve(sfqdn(2, Proto::Tcp, 22), t),
            Err(ReserveError::Exhausted)
        );
        // A different port still fits.
        assert!(p.reserve(sfqdn(2, Proto::Tcp, 23), t).is_ok());
        check_invariants(&p, t, true);
    }

    #[test]
    fn sfqdn_never_shares_fqdn_address() {
        let mut p = pool(2);
        let t = Instant::now();
        let f = p.reserve(fqdn(0), t).unwrap();
        let s = p.reserve(sfqdn(1, Proto::Udp, 53), t).unwrap();
        assert_ne!(s.addr, f.addr);
        // Only the FQDN-held address and the shared one (which holds udp53)
        // remain.
        assert_eq!(
            p.reserve(sfqdn(1, Proto::Udp, 53), t),
            Err(ReserveError::Exhausted)
        );

        let mut p = pool(1);
        p.reserve(fqdn(0), t).unwrap();
        assert_eq!(
            p.reserve(sfqdn(1, Proto::Tcp, 22), t),
            Err(ReserveError::Exhausted)
        );
    }

    #[test]
    fn sharing_preferred_over_fresh_address() {
        let mut p = pool(5);
        let t = Instant::now();
        let a = p.reserve(sfqdn(0, Proto::Tcp, 22), t).unwrap(); // ip1
        let f = p.reserve(fqdn(1), t).unwrap(); // ip2
        let b = p.reserve(sfqdn(2, Proto::Tcp, 22), t).unwrap(); // ip3, conflict
        assert_eq!((a.addr, f.addr, b.addr), (ip(1), ip(2), ip(3)));
        // ip4 and ip5 are free, but udp53 shares ip1, the first shared
        // address in pool order.
        let c = p.reserve(sfqdn(3, Proto::Udp, 53), t).unwrap();
        assert_eq!(c.addr, ip(1));
        // udp53 is taken on ip1, so the next udp53 goes to ip3.
        let d = p.reserve(sfqdn(3, Proto::Udp, 53), t).unwrap();
        assert_eq!(d.addr, ip(3));
        // tcp22 is taken on both shared addresses, so it takes a fresh one.
        let e = p.reserve(sfqdn(4, Proto::Tcp, 22), t).unwrap();
        assert_eq!(e.addr, ip(4));
        assert_eq!(p.stats().free, 1);
        check_invariants(&p, t, true);
    }

    #[test]
    fn circular_order_does_not_reuse_just_released_address() {
        let mut p = pool(3);
        let t = Instant::now();
        let mut got = Vec::new();
        for _ in 0..7 {
            let r = p.reserve(fqdn(0), t).unwrap();
            got.push(r.addr);
            // Released at once, so every address is free at every reserve.
            assert_eq!(p.claim(r.addr, TCP, Some(1), t), Some(r));
        }
        assert_eq!(
            got,
            [ip(1), ip(2), ip(3), ip(1), ip(2), ip(3), ip(1)],
            "round robin"
        );

        // The cursor skips addresses that are held and wraps round.
        let mut p = pool(4);
        let r1 = p.reserve(fqdn(0), t).unwrap(); // ip1
        let r2 = p.reserve(fqdn(0), t).unwrap(); // ip2
        p.cancel(r1.id).unwrap();
        let r3 = p.reserve(fqdn(0), t).unwrap();
        assert_eq!(r3.addr, ip(3), "ip1 was just released; ip3 comes first");
        let r4 = p.reserve(fqdn(0), t).unwrap();
        assert_eq!(r4.addr, ip(4));
        let r5 = p.reserve(fqdn(0), t).unwrap();
        assert_eq!(r5.addr, ip(1), "wraps round to the only free address");
        assert_eq!(r2.addr, ip(2));
    }

    #[test]
    fn shared_address_returns_to_circular_order_when_empty() {
        let mut p = pool(3);
        let t = Instant::now();
        let a = p.reserve(sfqdn(0, Proto::Tcp, 22), t).unwrap();
        let b = p.reserve(sfqdn(0, Proto::Tcp, 80), t).unwrap();
        assert_eq!(a.addr, ip(1));
        p.claim(ip(1), TCP, Some(22), t).unwrap();
        assert_eq!(p.stats().shared, 1, "still holds tcp80");
        p.claim(ip(1), TCP, Some(80), t).unwrap();
        assert_eq!(p.stats().free, 3);
        assert_eq!(b.addr, ip(1));
        // ip1 is free again, but the cursor has moved past it.
        assert_eq!(p.reserve(fqdn(1), t).unwrap().addr, ip(2));
    }

    #[test]
    fn claim_matches_service_slot_only() {
        let mut p = pool(1);
        let t = Instant::now();
        let r = p.reserve(sfqdn(0, Proto::Tcp, 22), t).unwrap();
        assert_eq!(p.claim(r.addr, TCP, Some(80), t), None, "other port");
        assert_eq!(p.claim(r.addr, UDP, Some(22), t), None, "other proto");
        assert_eq!(p.claim(r.addr, ICMP, None, t), None, "icmp");
        assert_eq!(p.claim(r.addr, TCP, None, t), None, "no port");
        assert_eq!(p.claim(ip(9), TCP, Some(22), t), None, "not in pool");
        assert_eq!(p.stats().pending, 1, "failed claims release nothing");
        assert_eq!(p.claim(r.addr, TCP, Some(22), t), Some(r));
        assert_eq!(p.stats().pending, 0);
    }

    #[test]
    fn claim_picks_the_matching_service_among_shared() {
        let mut p = pool(1);
        let t = Instant::now();
        let ssh = p.reserve(sfqdn(0, Proto::Tcp, 22), t).unwrap();
        let web = p.reserve(sfqdn(1, Proto::Tcp, 80), t).unwrap();
        let dns = p.reserve(sfqdn(2, Proto::Udp, 80), t).unwrap();
        assert_eq!(p.claim(ip(1), UDP, Some(80), t), Some(dns));
        assert_eq!(p.claim(ip(1), TCP, Some(80), t), Some(web));
        assert_eq!(p.claim(ip(1), TCP, Some(22), t), Some(ssh));
        assert_eq!(p.stats().free, 1);
    }

    #[test]
    fn fqdn_claim_matches_any_protocol() {
        let t = Instant::now();
        for (proto, port) in [(TCP, Some(443)), (UDP, Some(53)), (ICMP, None), (47, None)] {
            let mut p = pool(1);
            let r = p.reserve(fqdn(0), t).unwrap();
            assert_eq!(p.claim(ip(1), proto, port, t), Some(r), "proto {proto}");
            assert_eq!(p.stats().free, 1);
        }
    }

    #[test]
    fn claim_releases_at_once() {
        let mut p = pool(1);
        let t = Instant::now();
        let r = p.reserve(fqdn(0), t).unwrap();
        assert_eq!(p.reserve(fqdn(1), t), Err(ReserveError::Exhausted));
        assert!(p.claim(r.addr, TCP, Some(22), t).is_some());
        assert_eq!(p.claim(r.addr, TCP, Some(22), t), None, "claimed once only");
        let again = p.reserve(fqdn(1), t).unwrap();
        assert_eq!(again.addr, r.addr);
        assert!(again.id > r.id);

        let mut p = pool(1);
        let s = p.reserve(sfqdn(0, Proto::Tcp, 22), t).unwrap();
        assert_eq!(
            p.reserve(sfqdn(1, Proto::Tcp, 22), t),
            Err(ReserveError::Exhausted)
        );
        p.claim(s.addr, TCP, Some(22), t).unwrap();
        assert_eq!(p.reserve(sfqdn(1, Proto::Tcp, 22), t).unwrap().addr, s.addr);
    }

    #[test]
    fn claim_of_expired_reservation_fails() {
        let t = Instant::now();
        let mut p = pool(1);
        let r = p.reserve(fqdn(0), t).unwrap();
        let just_before = t + TMAX - Duration::from_nanos(1);
        assert_eq!(p.claim(r.addr, TCP, Some(1), just_before), Some(r));

        let mut p = pool(1);
        let r = p.reserve(fqdn(0), t).unwrap();
        assert_eq!(
            p.claim(r.addr, TCP, Some(1), t + TMAX),
            None,
            "now == expires"
        );
        assert_eq!(p.stats().pending, 0, "expired reservation was released");
        assert_eq!(p.stats().free, 1);

        let mut p = pool(1);
        let s = p.reserve(sfqdn(0, Proto::Udp, 53), t).unwrap();
        assert_eq!(p.claim(s.addr, UDP, Some(53), t + TMAX * 2), None);
        assert!(p.expire(t + TMAX * 3).is_empty(), "already released");
    }

    #[test]
    fn expiry_releases() {
        let t = Instant::now();
        let mut p = pool(2);
        let a = p.reserve(fqdn(0), t).unwrap();
        let b = p
            .reserve(sfqdn(1, Proto::Tcp, 22), t + Duration::from_millis(500))
            .unwrap();
        assert_eq!(p.next_expiry(), Some(a.expires));
        assert!(p.expire(t + TMAX - Duration::from_nanos(1)).is_empty());
        assert_eq!(p.expire(t + TMAX), vec![a.clone()]);
        assert_eq!(p.next_expiry(), Some(b.expires));
        assert_eq!(p.stats().free, 1);
        assert_eq!(p.expire(t + TMAX * 5), vec![b]);
        assert_eq!(p.stats().free, 2);
        assert_eq!(p.next_expiry(), None);
        assert!(p.expire(t + TMAX * 6).is_empty());
        check_invariants(&p, t + TMAX * 6, true);

        // Lazy expiry inside reserve: the only address is free again.
        let mut p = pool(1);
        p.reserve(fqdn(0), t).unwrap();
        assert_eq!(
            p.reserve(fqdn(1), t + TMAX / 2),
            Err(ReserveError::Exhausted)
        );
        let r = p.reserve(fqdn(1), t + TMAX).unwrap();
        assert_eq!(r.addr, ip(1));
        assert_eq!(p.stats().pending, 1);
    }

    #[test]
    fn expire_returns_in_expiry_order() {
        let t = Instant::now();
        let mut p = pool(4);
        let ms = Duration::from_millis;
        // Created out of order, as with a `now` that jumps around.
        let c = p.reserve(fqdn(0), t + ms(30)).unwrap();
        let a = p.reserve(fqdn(0), t + ms(10)).unwrap();
        let b = p.reserve(fqdn(0), t + ms(20)).unwrap();
        assert_eq!(p.expire(t + ms(30) + TMAX), vec![a, b, c]);
    }

    #[test]
    fn host_limit() {
        let t = Instant::now();
        let mut p = pool(10);
        let r1 = p.reserve(limited(fqdn(7), 2), t).unwrap();
        let _r2 = p.reserve(limited(sfqdn(7, Proto::Tcp, 22), 2), t).unwrap();
        assert_eq!(p.pending_for_host(7), 2);
        assert_eq!(
            p.reserve(limited(fqdn(7), 2), t),
            Err(ReserveError::HostLimit)
        );
        assert_eq!(
            p.reserve(limited(sfqdn(7, Proto::Udp, 53), 2), t),
            Err(ReserveError::HostLimit)
        );
        // Another host is not affected.
        p.reserve(limited(fqdn(8), 2), t).unwrap();
        // A claim frees a host slot.
        p.claim(r1.addr, ICMP, None, t).unwrap();
        assert_eq!(p.pending_for_host(7), 1);
        p.reserve(limited(fqdn(7), 2), t).unwrap();
        assert_eq!(
            p.reserve(limited(fqdn(7), 2), t),
            Err(ReserveError::HostLimit)
        );
        // Expiry frees host slots.
        let later = t + TMAX;
        p.reserve(limited(fqdn(7), 2), later).unwrap();
        assert_eq!(p.pending_for_host(7), 1);
        // Limit 1: a retry for the same service fails while one is pending.
        let mut q = pool(4);
        q.reserve(limited(sfqdn(3, Proto::Tcp, 22), 1), t).unwrap();
        assert_eq!(
            q.reserve(limited(sfqdn(3, Proto::Tcp, 22), 1), t),
            Err(ReserveError::HostLimit)
        );
        check_invariants(&p, later, true);
    }

    #[test]
    fn host_limit_zero_is_unlimited() {
        let t = Instant::now();
        let mut p = pool(200);
        for i in 0..200u16 {
            let req = if i % 2 == 0 {
                fqdn(1)
            } else {
                sfqdn(1, Proto::Tcp, i)
            };
            p.reserve(limited(req, 0), t).unwrap();
        }
        assert_eq!(p.pending_for_host(1), 200);
        check_invariants(&p, t, true);
    }

    #[test]
    fn host_limit_is_checked_before_exhaustion() {
        let t = Instant::now();
        let mut p = pool(1);
        p.reserve(limited(fqdn(0), 1), t).unwrap();
        assert_eq!(
            p.reserve(limited(fqdn(0), 1), t),
            Err(ReserveError::HostLimit)
        );
        assert_eq!(
            p.reserve(limited(fqdn(1), 1), t),
            Err(ReserveError::Exhausted)
        );
        assert_eq!(p.pending_for_host(1), 0, "failed reserve counts nothing");
    }

    #[test]
    fn same_host_and_service_twice_is_not_deduped() {
        let t = Instant::now();
        let mut p = pool(3);
        let a = p.reserve(sfqdn(0, Proto::Tcp, 22), t).unwrap();
        let b = p.reserve(sfqdn(0, Proto::Tcp, 22), t).unwrap();
        assert_ne!(a.id, b.id);
        assert_ne!(a.addr, b.addr, "same slot is taken, so another R");
        let c = p.reserve(fqdn(0), t).unwrap();
        let d = p.reserve(fqdn(0), t).unwrap_err();
        assert_eq!(d, ReserveError::Exhausted);
        assert_eq!(p.pending_for_host(0), 3);
        assert_ne!(c.addr, a.addr);
        check_invariants(&p, t, true);
    }

    #[test]
    fn cancel_puts_reservation_back() {
        let t = Instant::now();
        let mut p = pool(1);
        let r = p.reserve(sfqdn(4, Proto::Udp, 5060), t).unwrap();
        assert_eq!(p.get(r.id), Some(&r));
        assert_eq!(p.cancel(r.id), Some(r.clone()));
        assert_eq!(p.cancel(r.id), None, "cancelled once only");
        assert_eq!(p.get(r.id), None);
        assert_eq!(p.pending_for_host(4), 0);
        assert_eq!(p.claim(r.addr, UDP, Some(5060), t), None);
        assert_eq!(p.stats().free, 1);
        assert!(p.expire(t + TMAX).is_empty(), "cancelled does not expire");
        // The address can be taken exclusively again.
        assert!(p.reserve(fqdn(0), t).is_ok());
        assert_eq!(p.cancel(9999), None);
    }

    #[test]
    fn stats_track_every_state() {
        let t = Instant::now();
        let mut p = pool(5);
        assert_eq!(
            p.stats(),
            PoolStats {
                size: 5,
                free: 5,
                ..PoolStats::default()
            }
        );
        p.reserve(fqdn(0), t).unwrap();
        p.reserve(fqdn(1), t).unwrap();
        p.reserve(sfqdn(2, Proto::Tcp, 22), t).unwrap();
        p.reserve(sfqdn(3, Proto::Tcp, 80), t).unwrap();
        p.reserve(sfqdn(4, Proto::Tcp, 22), t).unwrap();
        assert_eq!(
            p.stats(),
            PoolStats {
                size: 5,
                free: 1,
                exclusive: 2,
                shared: 2,
                pending: 5,
            }
        );
        p.claim(ip(1), UDP, Some(1), t).unwrap();
        assert_eq!(p.stats().exclusive, 1);
        assert_eq!(p.stats().free, 2);
        p.expire(t + TMAX);
        assert_eq!(
            p.stats(),
            PoolStats {
                size: 5,
                free: 5,
                ..PoolStats::default()
            }
        );
    }

    #[test]
    fn exhaustion_then_recovery_after_expiry() {
        let t = Instant::now();
        let mut p = pool(3);
        for h in 0..3 {
            p.reserve(fqdn(h), t).unwrap();
        }
        assert_eq!(p.reserve(fqdn(3), t), Err(ReserveError::Exhausted));
        assert_eq!(
            p.reserve(sfqdn(3, Proto::Tcp, 22), t + TMAX / 2),
            Err(ReserveError::Exhausted)
        );
        let r = p.reserve(fqdn(3), t + TMAX).unwrap();
        assert_eq!(r.addr, ip(1), "cursor wrapped to the start");
        assert_eq!(p.stats().pending, 1);
        assert_eq!(p.stats().free, 2);
    }

    #[test]
    fn zero_and_huge_tmax_do_not_panic() {
        let t = Instant::now();
        let mut p = CircularPool::new([ip(1)], Duration::ZERO);
        let r = p.reserve(fqdn(0), t).unwrap();
        assert_eq!(r.expires, t);
        assert_eq!(p.claim(ip(1), TCP, Some(1), t), None, "born expired");
        assert!(p.reserve(fqdn(0), t).is_ok());

        let mut p = CircularPool::new([ip(1)], Duration::MAX);
        let r = p.reserve(fqdn(0), t).unwrap();
        assert!(r.expires > t + Duration::from_secs(86_400 * 365 * 100));
        assert!(p.expire(t + Duration::from_secs(86_400 * 365)).is_empty());
        assert_eq!(p.claim(ip(1), ICMP, None, t), Some(r));
    }

    #[test]
    fn large_pool_many_cycles() {
        let t0 = Instant::now();
        let n: u32 = 65_536;
        let mut p = CircularPool::new((0..n).map(|i| Ipv4Addr::from(0x0A00_0000 + i)), TMAX);
        // Keep a few thousand pending: tcp22 SFQDNs (which all conflict
        // with one another) and FQDNs, in steady state.
        let mut live = std::collections::VecDeque::new();
        let mut now = t0;
        for i in 0..100_000u32 {
            now += Duration::from_micros(10);
            let req = match i % 4 {
                0 => fqdn((i % 1000) as usize),
                1 => sfqdn((i % 1000) as usize, Proto::Tcp, 22),
                2 => sfqdn((i % 1000) as usize, Proto::Udp, (i % 7) as u16),
                _ => sfqdn((i % 1000) as usize, Proto::Tcp, (i % 1024) as u16),
            };
            let r = p.reserve(req, now).unwrap();
            live.push_back(r);
            if live.len() > 3000 {
                let old = live.pop_front().unwrap();
                let (proto, port) = match old.service {
                    Some(s) => (s.proto.number(), Some(s.port)),
                    None => (ICMP, None),
                };
                assert_eq!(p.claim(old.addr, proto, port, now), Some(old));
            }
        }
        assert_eq!(p.stats().pending, 3000);
        check_invariants(&p, now, true);

        // Fill the pool completely with FQDNs, then let everything expire.
        let mut p = CircularPool::new((0..n).map(|i| Ipv4Addr::from(0x0A00_0000 + i)), TMAX);
        for h in 0..n as usize {
            p.reserve(fqdn(h), t0).unwrap();
        }
        assert_eq!(p.reserve(fqdn(0), t0), Err(ReserveError::Exhausted));
        assert_eq!(p.expire(t0 + TMAX).len(), n as usize);
        assert_eq!(p.stats().free, n as usize);
    }

    /// xorshift64: small deterministic PRNG, no crates needed.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// The reservations still valid at `now`, i.e. what the pool holds after
    /// its lazy sweep.
    fn valid_at(p: &CircularPool, now: Instant) -> Vec<Reservation> {
        p.pending()
            .filter(|r| r.is_valid_at(now))
            .cloned()
            .collect()
    }

    #[test]
    fn randomized_operations_keep_invariants() {
        let t0 = Instant::now();
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        let size = 8u32;
        let mut p = pool(size);
        let mut now = t0;
        let mut ids_seen = 0u64;
        let (mut ok, mut exhausted, mut limited_out, mut claimed, mut expired) = (0, 0, 0, 0, 0);

        for step in 0..10_000 {
            let swept;
            match rng.below(100) {
                // reserve
                0..=49 => {
                    let host = rng.below(6) as usize;
                    let service = match rng.below(3) {
                        0 => None,
                        _ => Some(Service {
                            proto: if rng.below(2) == 0 {
                                Proto::Tcp
                            } else {
                                Proto::Udp
                            },
                            port: rng.below(4) as u16,
                        }),
                    };
                    let host_limit = rng.below(5) as u32;
                    let req = ReserveRequest {
                        host,
                        service,
                        host_limit,
                    };
                    let before = valid_at(&p, now);
                    let host_pending = before.iter().filter(|r| r.host == host).count();
                    match p.reserve(req, now) {
                        Ok(r) => {
                            ok += 1;
                            assert!(r.id > ids_seen, "ids increase");
                            ids_seen = r.id;
                            assert_eq!((r.host, r.service, r.created), (host, service, now));
                            assert!(host_limit == 0 || host_pending < host_limit as usize);
                            let on_addr: Vec<_> =
                                before.iter().filter(|o| o.addr == r.addr).collect();
                            match service {
                                None => assert!(on_addr.is_empty(), "FQDN on a busy address"),
                                Some(s) if on_addr.is_empty() => {
                                    // A fresh address: rule 3 says no shared
                                    // address could take s.
                                    let shared: HashSet<Ipv4Addr> = before
                                        .iter()
                                        .filter(|o| o.service.is_some())
                                        .map(|o| o.addr)
                                        .collect();
                                    for a in shared {
                                        assert!(
                                            before
                                                .iter()
                                                .any(|o| o.addr == a && o.service == Some(s)),
                                            "step {step}: {a} could have shared {s:?}"
                                        );
                                    }
                                }
                                Some(_) => {}
                            }
                        }
                        Err(ReserveError::HostLimit) => {
                            limited_out += 1;
                            assert!(host_limit != 0 && host_pending >= host_limit as usize);
                        }
                        Err(ReserveError::Exhausted) => {
                            exhausted += 1;
                            assert!(host_limit == 0 || host_pending < host_limit as usize);
                            // No address could take the request.
                            for i in 1..=size {
                                let on: Vec<_> =
                                    before.iter().filter(|o| o.addr == ip(i)).collect();
                                let fits = match service {
                                    None => on.is_empty(),
                                    Some(s) => on
                                        .iter()
                                        .all(|o| o.service.is_some() && o.service != Some(s)),
                                };
                                assert!(!fits, "step {step}: {} was available", ip(i));
                            }
                        }
                    }
                    swept = true;
                }
                // claim: usually aimed at something pending
                50..=74 => {
                    let before = valid_at(&p, now);
                    let (dst, proto, port) = if !before.is_empty() && rng.below(4) != 0 {
                        let r = &before[rng.below(before.len() as u64) as usize];
                        match r.service {
                            Some(s) if rng.below(3) != 0 => {
                                (r.addr, s.proto.number(), Some(s.port))
                            }
                            _ => (
                                r.addr,
                                [ICMP, TCP, UDP][rng.below(3) as usize],
                                Some(rng.below(4) as u16),
                            ),
                        }
                    } else {
                        (
                            ip(rng.below(size as u64 + 2) as u32),
                            TCP,
                            Some(rng.below(4) as u16),
                        )
                    };
                    let port = if proto == ICMP { None } else { port };
                    let want_service = Proto::from_number(proto)
                        .zip(port)
                        .map(|(proto, port)| Service { proto, port });
                    let expected = before
                        .iter()
                        .find(|o| {
                            o.addr == dst && want_service.is_some() && o.service == want_service
                        })
                        .or_else(|| before.iter().find(|o| o.addr == dst && o.service.is_none()))
                        .cloned();
                    let got = p.claim(dst, proto, port, now);
                    assert_eq!(got, expected, "step {step}");
                    if let Some(r) = got {
                        claimed += 1;
                        assert!(p.get(r.id).is_none());
                    }
                    swept = true;
                }
                // explicit expiry
                75..=84 => {
                    let before = valid_at(&p, now);
                    let should: Vec<u64> = {
                        let mut v: Vec<_> = p
                            .pending()
                            .filter(|r| !r.is_valid_at(now))
                            .map(|r| (r.expires, r.id))
                            .collect();
                        v.sort();
                        v.into_iter().map(|(_, id)| id).collect()
                    };
                    let got: Vec<u64> = p.expire(now).into_iter().map(|r| r.id).collect();
                    expired += got.len();
                    assert_eq!(got, should);
                    assert_eq!(valid_at(&p, now), before);
                    swept = true;
                }
                // cancel: a pending id or a bogus one
                85..=89 => {
                    let all: Vec<Reservation> = p.pending().cloned().collect();
                    if !all.is_empty() && rng.below(5) != 0 {
                        let r = &all[rng.below(all.len() as u64) as usize];
                        assert_eq!(p.cancel(r.id).as_ref(), Some(r));
                    } else {
                        assert_eq!(p.cancel(ids_seen + 1 + rng.below(10)), None);
                    }
                    swept = false;
                }
                // time passes
                _ => {
                    now += Duration::from_millis(rng.below(1500));
                    swept = false;
                }
            }
            check_invariants(&p, now, swept);
        }
        // The run exercised every outcome.
        assert!(
            ok > 1000 && exhausted > 50 && limited_out > 50,
            "{ok} {exhausted} {limited_out}"
        );
        assert!(claimed > 500 && expired > 100, "{claimed} {expired}");
    }

    #[test]
    fn sharing_search_is_bounded_while_free_addresses_exist() {
        let t0 = Instant::now();
        let addrs = (0..400u32).map(|i| Ipv4Addr::from(0x0a00_0000 + i));
        let mut pool = CircularPool::new(addrs, Duration::from_secs(2));
        let req = |host, port| ReserveRequest {
            host,
            service: Some(Service {
                proto: Proto::Tcp,
                port,
            }),
            host_limit: 0,
        };
        // 70 shared addresses, each holding tcp/22.
        let holders: Vec<Ipv4Addr> = (0..70)
            .map(|h| pool.reserve(req(h, 22), t0).expect("room").addr)
            .collect();
        assert_eq!(pool.stats().shared, 70);
        // tcp/443 shares them in pool order while the search stays within the limit...
        for (k, h) in (100..100 + SHARE_SEARCH_LIMIT).enumerate() {
            assert_eq!(
                pool.reserve(req(h, 443), t0).expect("room").addr,
                holders[k]
            );
        }
        // ...and past it takes a free address although 6 shared ones still lack tcp/443.
        let r = pool.reserve(req(999, 443), t0).expect("room");
        assert!(
            !holders.contains(&r.addr),
            "bounded search took a free address"
        );
        assert_eq!(pool.stats().shared, 71);
    }

    #[test]
    fn without_free_addresses_the_whole_walk_finds_the_gap() {
        let t0 = Instant::now();
        let addrs = (0..100u32).map(|i| Ipv4Addr::from(0x0a00_0000 + i));
        let mut pool = CircularPool::new(addrs, Duration::from_secs(2));
        let req = |host, port| ReserveRequest {
            host,
            service: Some(Service {
                proto: Proto::Tcp,
                port,
            }),
            host_limit: 0,
        };
        // Fill every address with tcp/22, then free tcp/22 on the last one only.
        let mut last = None;
        for h in 0..100 {
            last = Some(pool.reserve(req(h, 22), t0).expect("room"));
            pool.reserve(req(h, 80), t0).expect("room");
        }
        assert_eq!(pool.stats().free, 0);
        let last = last.expect("100 reservations made");
        pool.claim(last.addr, 6, Some(22), t0).expect("pending");
        let again = pool.reserve(req(500, 22), t0).expect("the gap is found");
        assert_eq!(again.addr, last.addr);
        assert_eq!(pool.reserve(req(501, 22), t0), Err(ReserveError::Exhausted));
    }
}
