//! The binding table proxy IPv4 (pool4) ↔ IPv6 address: static bindings from the
//! configuration and dynamic ones with idle timeouts (RFC 6146 §3.5 ideas: a
//! binding lives while traffic refreshes it), bounded in number.

use std::collections::{HashMap, VecDeque};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use crate::{XlatConfig, XlatError};

/// Who created a binding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MappingOrigin {
    /// Configured (`static_map`); never expires.
    Static,
    /// Created at DNS time by [`crate::Translator::map_v6`] (NAT46 towards an IPv6-only name).
    Dns,
    /// Created by the first packet of an IPv6 source (NAT64 through a proxy ULA).
    Packet,
}

impl MappingOrigin {
    pub fn as_str(self) -> &'static str {
        match self {
            MappingOrigin::Static => "static",
            MappingOrigin::Dns => "dns",
            MappingOrigin::Packet => "packet",
        }
    }
}

/// One binding, as shown by `rgw status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappingInfo {
    /// Proxy IPv4 address (inside pool4).
    pub v4: Ipv4Addr,
    /// The IPv6 address it stands for.
    pub v6: Ipv6Addr,
    pub origin: MappingOrigin,
    /// When a dynamic binding was created (`None` for static ones).
    pub created: Option<Instant>,
    /// Last refresh by traffic or DNS (`None` for static ones).
    pub last_used: Option<Instant>,
    /// When a dynamic binding expires unless refreshed (`None` for static ones).
    pub expires: Option<Instant>,
    /// Packets translated through this binding, both directions.
    pub packets: u64,
}

#[derive(Debug, Clone)]
struct Entry {
    v6: Ipv6Addr,
    origin: MappingOrigin,
    created: Option<Instant>,
    last_used: Option<Instant>,
    packets: u64,
}

/// Bindings indexed by the proxy IPv4's offset in pool4 (at most /16): a lookup
/// on the packet path is an array access, no hashing.
#[derive(Debug)]
struct Slots {
    base: u32,
    slots: Vec<Option<Entry>>,
}

impl Slots {
    fn new(base: u32, size: u32) -> Self {
        Slots {
            base,
            slots: vec![None; size as usize],
        }
    }

    fn index(&self, v4: &Ipv4Addr) -> Option<usize> {
        let i = u32::from(*v4).checked_sub(self.base)? as usize;
        (i < self.slots.len()).then_some(i)
    }

    fn get(&self, v4: &Ipv4Addr) -> Option<&Entry> {
        self.slots.get(self.index(v4)?)?.as_ref()
    }

    fn get_mut(&mut self, v4: &Ipv4Addr) -> Option<&mut Entry> {
        let i = self.index(v4)?;
        self.slots.get_mut(i)?.as_mut()
    }

    fn contains_key(&self, v4: &Ipv4Addr) -> bool {
        self.get(v4).is_some()
    }

    fn insert(&mut self, v4: Ipv4Addr, e: Entry) {
        if let Some(i) = self.index(&v4) {
            if let Some(s) = self.slots.get_mut(i) {
                *s = Some(e);
            }
        }
    }

    fn remove(&mut self, v4: &Ipv4Addr) {
        if let Some(i) = self.index(v4) {
            if let Some(s) = self.slots.get_mut(i) {
                *s = None;
            }
        }
    }

    fn iter(&self) -> impl Iterator<Item = (Ipv4Addr, &Entry)> + '_ {
        self.slots.iter().enumerate().filter_map(move |(i, e)| {
            e.as_ref()
                .map(|e| (Ipv4Addr::from(self.base + i as u32), e))
        })
    }
}

#[derive(Debug)]
pub(crate) struct MappingTable {
    base: u32,
    mask: u32,
    /// The translator's own IPv4 (never handed out when inside the pool).
    own: Ipv4Addr,
    timeout: Duration,
    max_dynamic: usize,
    by_v4: Slots,
    by_v6: HashMap<Ipv6Addr, Ipv4Addr>,
    /// Free proxy IPv4 addresses; freed ones go to the back so an address is reused
    /// as late as possible (late packets of an old flow do not reach a new host).
    free: VecDeque<Ipv4Addr>,
    dynamic: usize,
    pub(crate) created: u64,
    pub(crate) expired: u64,
    pub(crate) overflows: u64,
}

fn is_ula(a: Ipv6Addr) -> bool {
    a.octets()[0] & 0xfe == 0xfc
}

fn private_ranges() -> [(u32, u8); 5] {
    [
        (u32::from(Ipv4Addr::new(10, 0, 0, 0)), 8),
        (u32::from(Ipv4Addr::new(172, 16, 0, 0)), 12),
        (u32::from(Ipv4Addr::new(192, 168, 0, 0)), 16),
        (u32::from(Ipv4Addr::new(100, 64, 0, 0)), 10),
        (u32::from(Ipv4Addr::new(198, 18, 0, 0)), 15),
    ]
}

fn mask_of(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len.min(32)))
    }
}

impl MappingTable {
    pub(crate) fn new(cfg: &XlatConfig) -> Result<Self, XlatError> {
        if !is_ula(cfg.prefix64) {
            return Err(XlatError::PrefixNotUla(cfg.prefix64));
        }
        if !(16..=30).contains(&cfg.pool4_len) {
            return Err(XlatError::PoolLength(cfg.pool4_len));
        }
        let mask = mask_of(cfg.pool4_len);
        let base = u32::from(cfg.pool4) & mask;
        let private = private_ranges()
            .iter()
            .any(|&(net, len)| cfg.pool4_len >= len && base & mask_of(len) == net);
        if !private {
            return Err(XlatError::PoolNotPrivate(
                Ipv4Addr::from(base),
                cfg.pool4_len,
            ));
        }
        if cfg.mtu6 < 1280 {
            return Err(XlatError::Mtu6(cfg.mtu6));
        }
        if cfg.mtu4 < 576 {
            return Err(XlatError::Mtu4(cfg.mtu4));
        }
        if cfg.dynamic_timeout.is_zero() {
            return Err(XlatError::Timeout);
        }
        let mut t = MappingTable {
            base,
            mask,
            own: cfg.own_v4,
            timeout: cfg.dynamic_timeout,
            max_dynamic: cfg.max_dynamic,
            by_v4: Slots::new(base, 1u32 << (32 - u32::from(cfg.pool4_len))),
            by_v6: HashMap::new(),
            free: VecDeque::new(),
            dynamic: 0,
            created: 0,
            expired: 0,
            overflows: 0,
        };
        if !crate::wire::v4_unicast(cfg.own_v4) {
            return Err(XlatError::OwnV4(cfg.own_v4));
        }
        let prefix96 = &cfg.prefix64.octets()[..12];
        for &(v4, v6) in &cfg.static_map {
            if !t.in_pool(v4) {
                return Err(XlatError::StaticOutsidePool(v4, v6));
            }
            if t.reserved(v4) {
                return Err(XlatError::StaticReserved(v4, v6));
            }
            if &v6.octets()[..12] == prefix96 {
                return Err(XlatError::StaticInPrefix64(v4, v6));
            }
            if t.by_v4.contains_key(&v4) || t.by_v6.contains_key(&v6) {
                return Err(XlatError::StaticDuplicate(v4, v6));
            }
            t.by_v4.insert(
                v4,
                Entry {
                    v6,
                    origin: MappingOrigin::Static,
                    created: None,
                    last_used: None,
                    packets: 0,
                },
            );
            t.by_v6.insert(v6, v4);
        }
        let size = 1u32 << (32 - u32::from(cfg.pool4_len));
        for i in 0..size {
            let a = Ipv4Addr::from(base | i);
            if !t.reserved(a) && !t.by_v4.contains_key(&a) {
                t.free.push_back(a);
            }
        }
        Ok(t)
    }

    pub(crate) fn in_pool(&self, v4: Ipv4Addr) -> bool {
        u32::from(v4) & self.mask == self.base
    }

    /// Network and broadcast addresses of pool4, and own_v4, are never handed out.
    fn reserved(&self, v4: Ipv4Addr) -> bool {
        let host = u32::from(v4) & !self.mask;
        host == 0 || host == !self.mask || v4 == self.own
    }

    fn dead(&self, e: &Entry, now: Instant) -> bool {
        match e.last_used {
            Some(t) => now.saturating_duration_since(t) >= self.timeout,
            None => false,
        }
    }

    pub(crate) fn dynamic_len(&self) -> usize {
        self.dynamic
    }

    /// Binding for `v6`, refreshed, created when absent (`None` when full); counts
    /// one packet through it when `packet`.
    pub(crate) fn get_or_create(
        &mut self,
        now: Instant,
        v6: Ipv6Addr,
        origin: MappingOrigin,
        packet: bool,
    ) -> Option<Ipv4Addr> {
        if let Some(&v4) = self.by_v6.get(&v6) {
            if let Some(e) = self.by_v4.get_mut(&v4) {
                if e.last_used.is_some() {
                    // A binding not yet swept is revived: nobody else can hold its address.
                    e.last_used = Some(now);
                }
                e.packets += u64::from(packet);
                return Some(v4);
            }
        }
        if self.dynamic >= self.max_dynamic || self.free.is_empty() {
            self.expire(now);
        }
        if self.dynamic >= self.max_dynamic {
            self.overflows += 1;
            return None;
        }
        let Some(v4) = self.free.pop_front() else {
            self.overflows += 1;
            return None;
        };
        self.by_v4.insert(
            v4,
            Entry {
                v6,
                origin,
                created: Some(now),
                last_used: Some(now),
                packets: u64::from(packet),
            },
        );
        self.by_v6.insert(v6, v4);
        self.dynamic += 1;
        self.created += 1;
        Some(v4)
    }

    /// IPv6 bound to `v4` if live at `now`; refreshes it and counts a packet when `touch`.
    pub(crate) fn v4_to_v6(&mut self, now: Instant, v4: Ipv4Addr, touch: bool) -> Option<Ipv6Addr> {
        let timeout = self.timeout;
        let e = self.by_v4.get_mut(&v4)?;
        if let Some(t) = e.last_used {
            if now.saturating_duration_since(t) >= timeout {
                return None;
            }
            if touch {
                e.last_used = Some(now);
            }
        }
        if touch {
            e.packets += 1;
        }
        Some(e.v6)
    }

    /// Proxy IPv4 bound to `v6` if live at `now`; refreshes it and counts a packet when `touch`.
    pub(crate) fn v6_to_v4(&mut self, now: Instant, v6: Ipv6Addr, touch: bool) -> Option<Ipv4Addr> {
        let v4 = *self.by_v6.get(&v6)?;
        self.v4_to_v6(now, v4, touch).map(|_| v4)
    }

    pub(crate) fn peek_v4(&self, v4: Ipv4Addr) -> Option<Ipv6Addr> {
        self.by_v4.get(&v4).map(|e| e.v6)
    }

    pub(crate) fn peek_v6(&self, v6: Ipv6Addr) -> Option<Ipv4Addr> {
        self.by_v6.get(&v6).copied()
    }

    pub(crate) fn expire(&mut self, now: Instant) {
        let mut gone = Vec::new();
        for (v4, e) in self.by_v4.iter() {
            if self.dead(e, now) {
                gone.push((v4, e.v6));
            }
        }
        for (v4, v6) in gone {
            self.by_v4.remove(&v4);
            self.by_v6.remove(&v6);
            self.free.push_back(v4);
            self.dynamic = self.dynamic.saturating_sub(1);
            self.expired += 1;
        }
    }

    pub(crate) fn list(&self) -> Vec<MappingInfo> {
        let mut v: Vec<MappingInfo> = self
            .by_v4
            .iter()
            .map(|(v4, e)| MappingInfo {
                v4,
                v6: e.v6,
                origin: e.origin,
                created: e.created,
                last_used: e.last_used,
                expires: e.last_used.map(|t| t + self.timeout),
                packets: e.packets,
            })
            .collect();
        v.sort_by_key(|m| (m.origin != MappingOrigin::Static, m.v4));
        v
    }
}
