//! The admission policy: who may take a Circular Pool reservation, and when
//! (hardening issue: policy based resource allocation).
//!
//! Sans-IO: resolver addresses, EDNS Client Subnets, pool load and the time
//! come in; decisions come out. The gateway calls it under its core lock:
//! [`Admission::precheck`] before a reservation (query rate and pending
//! limit per resolver), [`Admission::judge`] after the pool chose the slot
//! (reputation against the load bracket's threshold for that kind of
//! reservation), and the `on_*` hooks when a reservation is made, claimed,
//! expires or is cancelled.
//!
//! Reputation of a resolver (or, with ECS, of a client subnet) is
//! `(claimed + g0) / (claimed + expired + pending + g0 + b0)`: a claimed
//! reservation counts for, one that expired unused against, and one still
//! pending is not yet proven (so a fast flooder sinks before its first
//! expiry). `g0`/`b0` are priors: 1/1 for unknown resolvers (0.5),
//! `trusted_prior`/1 for trusted groups. Claimed and expired decay with a
//! half-life, so a resolver recovers. Tables are bounded: two generations of
//! at most `max_resolvers / 2` entries each, the older dropped when the newer
//! is full (approximate LRU, O(1) per query).

use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use serde::Deserialize;

use crate::config::ConfigError;

// ---- configuration ------------------------------------------------------------

/// `[admission]` as written in the file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmission {
    #[serde(default = "default_antispoof")]
    antispoof: String,
    alias_zone: Option<String>,
    #[serde(default = "default_alias_lifetime", with = "humantime_serde")]
    alias_lifetime: Duration,
    #[serde(default)]
    max_pending_per_resolver: u32,
    #[serde(default)]
    rate: f64,
    #[serde(default = "default_burst")]
    burst: f64,
    #[serde(default)]
    reputation: bool,
    #[serde(default = "default_brackets")]
    load_brackets: Vec<f64>,
    #[serde(default = "default_fqdn")]
    fqdn_threshold: Vec<f64>,
    #[serde(default = "default_sfqdn")]
    sfqdn_threshold: Vec<f64>,
    #[serde(default = "default_shared")]
    shared_threshold: Vec<f64>,
    #[serde(default)]
    trusted: Vec<String>,
    #[serde(default = "default_trusted_prior")]
    trusted_prior: f64,
    #[serde(default = "default_half_life", with = "humantime_serde")]
    half_life: Duration,
    #[serde(default = "default_max_resolvers")]
    max_resolvers: usize,
    #[serde(default)]
    ecs_binding: bool,
}

impl Default for RawAdmission {
    fn default() -> Self {
        RawAdmission {
            antispoof: default_antispoof(),
            alias_zone: None,
            alias_lifetime: default_alias_lifetime(),
            max_pending_per_resolver: 0,
            rate: 0.0,
            burst: default_burst(),
            reputation: false,
            load_brackets: default_brackets(),
            fqdn_threshold: default_fqdn(),
            sfqdn_threshold: default_sfqdn(),
            shared_threshold: default_shared(),
            trusted: Vec::new(),
            trusted_prior: default_trusted_prior(),
            half_life: default_half_life(),
            max_resolvers: default_max_resolvers(),
            ecs_binding: false,
        }
    }
}

fn default_antispoof() -> String {
    "off".into()
}
fn default_alias_lifetime() -> Duration {
    Duration::from_secs(5)
}
fn default_burst() -> f64 {
    20.0
}
fn default_brackets() -> Vec<f64> {
    vec![0.5, 0.8]
}
fn default_fqdn() -> Vec<f64> {
    vec![0.0, 0.3, 0.6]
}
fn default_sfqdn() -> Vec<f64> {
    vec![0.0, 0.2, 0.5]
}
fn default_shared() -> Vec<f64> {
    vec![0.0, 0.1, 0.3]
}
fn default_trusted_prior() -> f64 {
    20.0
}
fn default_half_life() -> Duration {
    Duration::from_secs(60)
}
fn default_max_resolvers() -> usize {
    4096
}

/// Anti-spoofing mode for allocating UDP queries (see `rgw_dns::antispoof`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AntiSpoofMode {
    Off,
    Tc,
    /// Aliases under this absolute, lower-case name (inside the zone).
    Cname {
        zone: String,
        lifetime: Duration,
    },
}

/// The validated `[admission]` section.
#[derive(Debug, Clone, PartialEq)]
pub struct AdmissionConfig {
    pub antispoof: AntiSpoofMode,
    /// 0 = no limit.
    pub max_pending_per_resolver: u32,
    /// Allocating queries per second per resolver; 0 = no limit.
    pub rate: f64,
    pub burst: f64,
    pub reputation: bool,
    /// Pool load (share of addresses not free) where brackets 1 and 2 begin.
    pub load_brackets: [f64; 2],
    /// Reputation needed per bracket for a whole address (FQDN).
    pub fqdn_threshold: [f64; 3],
    /// … for an SFQDN slot on a free address.
    pub sfqdn_threshold: [f64; 3],
    /// … for an SFQDN slot on an address already shared.
    pub shared_threshold: [f64; 3],
    pub trusted: Vec<IpNet>,
    pub trusted_prior: f64,
    pub half_life: Duration,
    pub max_resolvers: usize,
    pub ecs_binding: bool,
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        AdmissionConfig {
            antispoof: AntiSpoofMode::Off,
            max_pending_per_resolver: 0,
            rate: 0.0,
            burst: default_burst(),
            reputation: false,
            load_brackets: [0.5, 0.8],
            fqdn_threshold: [0.0, 0.3, 0.6],
            sfqdn_threshold: [0.0, 0.2, 0.5],
            shared_threshold: [0.0, 0.1, 0.3],
            trusted: Vec::new(),
            trusted_prior: default_trusted_prior(),
            half_life: default_half_life(),
            max_resolvers: default_max_resolvers(),
            ecs_binding: false,
        }
    }
}

impl AdmissionConfig {
    /// Whether any per-reservation check is on (else the gateway skips the policy).
    pub fn checks_reservations(&self) -> bool {
        self.max_pending_per_resolver != 0 || self.rate > 0.0 || self.reputation
    }
}

fn bad(file: &Path, key: &str, expected: &str, found: impl std::fmt::Display) -> ConfigError {
    ConfigError::Invalid {
        file: file.to_path_buf(),
        key: format!("admission.{key}"),
        expected: expected.to_string(),
        found: found.to_string(),
    }
}

fn thresholds(file: &Path, key: &str, v: &[f64]) -> Result<[f64; 3], ConfigError> {
    match v {
        [a, b, c] if v.iter().all(|x| (0.0..=1.0).contains(x)) && a <= b && b <= c => {
            Ok([*a, *b, *c])
        }
        _ => Err(bad(
            file,
            key,
            "three reputations in [0, 1], not decreasing (one per load bracket)",
            format!("{v:?}"),
        )),
    }
}

/// Validates `[admission]`; `zone` is the gateway's zone (absolute, lower-case).
pub fn validate(
    file: &Path,
    raw: RawAdmission,
    zone: &str,
    host_names: &[&str],
) -> Result<AdmissionConfig, ConfigError> {
    let antispoof = match raw.antispoof.as_str() {
        "off" => AntiSpoofMode::Off,
        "tc" => AntiSpoofMode::Tc,
        "cname" => {
            let name = raw
                .alias_zone
                .clone()
                .unwrap_or_else(|| format!("alias.{zone}"))
                .to_ascii_lowercase();
            let name = if name.ends_with('.') {
                name
            } else {
                format!("{name}.")
            };
            let rel = name.strip_suffix(&format!(".{zone}"));
            let ok = rel.is_some_and(|r| {
                !r.is_empty()
                    && r.split('.').all(|l| {
                        !l.is_empty()
                            && l.len() <= 63
                            && l.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')
                    })
                    && !host_names.contains(&r.rsplit('.').next().unwrap_or(""))
                    && !r.starts_with('_')
            });
            if !ok {
                return Err(bad(
                    file,
                    "alias_zone",
                    &format!("a name below {zone} whose last label is not a host name"),
                    &name,
                ));
            }
            if raw.alias_lifetime < Duration::from_millis(500)
                || raw.alias_lifetime > Duration::from_secs(300)
            {
                return Err(bad(
                    file,
                    "alias_lifetime",
                    "a duration from 500ms to 5m",
                    humantime_serde::re::humantime::format_duration(raw.alias_lifetime),
                ));
            }
            AntiSpoofMode::Cname {
                zone: name,
                lifetime: raw.alias_lifetime,
            }
        }
        other => {
            return Err(bad(
                file,
                "antispoof",
                "\"off\", \"tc\" or \"cname\"",
                other,
            ))
        }
    };
    if raw.alias_zone.is_some() && !matches!(antispoof, AntiSpoofMode::Cname { .. }) {
        return Err(bad(
            file,
            "alias_zone",
            "no alias_zone unless antispoof = \"cname\"",
            raw.alias_zone.as_deref().unwrap_or(""),
        ));
    }
    if !(raw.rate >= 0.0 && raw.rate.is_finite()) {
        return Err(bad(
            file,
            "rate",
            "queries per second >= 0 (0 = off)",
            raw.rate,
        ));
    }
    if !(raw.burst >= 1.0 && raw.burst.is_finite()) {
        return Err(bad(file, "burst", "a number >= 1", raw.burst));
    }
    let load_brackets = match raw.load_brackets.as_slice() {
        [a, b] if 0.0 < *a && a <= b && *b <= 1.0 => [*a, *b],
        v => {
            return Err(bad(
                file,
                "load_brackets",
                "two pool loads 0 < a <= b <= 1",
                format!("{v:?}"),
            ))
        }
    };
    let fqdn_threshold = thresholds(file, "fqdn_threshold", &raw.fqdn_threshold)?;
    let sfqdn_threshold = thresholds(file, "sfqdn_threshold", &raw.sfqdn_threshold)?;
    let shared_threshold = thresholds(file, "shared_threshold", &raw.shared_threshold)?;
    let mut trusted = Vec::new();
    for (i, t) in raw.trusted.iter().enumerate() {
        let net = t
            .parse::<IpNet>()
            .or_else(|_| t.parse::<IpAddr>().map(IpNet::from))
            .map_err(|_| {
                bad(
                    file,
                    &format!("trusted[{i}]"),
                    "a CIDR like 203.0.113.0/24",
                    t,
                )
            })?;
        trusted.push(net.trunc());
    }
    if !(raw.trusted_prior >= 1.0 && raw.trusted_prior.is_finite()) {
        return Err(bad(
            file,
            "trusted_prior",
            "a number >= 1",
            raw.trusted_prior,
        ));
    }
    if raw.half_life < Duration::from_secs(1) {
        return Err(bad(
            file,
            "half_life",
            "a duration of at least 1s",
            humantime_serde::re::humantime::format_duration(raw.half_life),
        ));
    }
    if !(2..=1 << 20).contains(&raw.max_resolvers) {
        return Err(bad(
            file,
            "max_resolvers",
            "2 to 1048576",
            raw.max_resolvers,
        ));
    }
    Ok(AdmissionConfig {
        antispoof,
        max_pending_per_resolver: raw.max_pending_per_resolver,
        rate: raw.rate,
        burst: raw.burst,
        reputation: raw.reputation,
        load_brackets,
        fqdn_threshold,
        sfqdn_threshold,
        shared_threshold,
        trusted,
        trusted_prior: raw.trusted_prior,
        half_life: raw.half_life,
        max_resolvers: raw.max_resolvers,
        ecs_binding: raw.ecs_binding,
    })
}

// ---- decisions ------------------------------------------------------------------

/// What a reservation takes from the pool (its cost, in decreasing order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A whole address.
    Fqdn,
    /// An SFQDN slot on an address that was free.
    Sfqdn,
    /// An SFQDN slot on an address already shared by other services.
    Shared,
}

/// Why the policy refused a reservation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// The resolver's token bucket is empty.
    RateLimited,
    /// The resolver already holds `max_pending_per_resolver` reservations.
    ResolverLimit,
    /// Reputation below the threshold for this kind at the current load.
    Reputation(Kind),
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::RateLimited => "rate_limited",
            Refusal::ResolverLimit => "resolver_limit",
            Refusal::Reputation(Kind::Fqdn) => "reputation_fqdn",
            Refusal::Reputation(Kind::Sfqdn) => "reputation_sfqdn",
            Refusal::Reputation(Kind::Shared) => "reputation_shared",
        }
    }
}

/// Whether `src` may claim a reservation whose query carried `subnet` (RFC 7871
/// source prefix). Only a subnet of the source's family binds; /0 admits all.
pub fn ecs_admits(subnet: (IpAddr, u8), src: Ipv4Addr) -> bool {
    match subnet {
        (IpAddr::V4(net), len) => {
            let len = u32::from(len.min(32));
            if len == 0 {
                return true;
            }
            let mask = u32::MAX << (32 - len);
            u32::from(net) & mask == u32::from(src) & mask
        }
        (IpAddr::V6(_), _) => true,
    }
}

/// The pool-load bracket (0, 1 or 2) for `load` in [0, 1].
pub fn bracket(brackets: [f64; 2], load: f64) -> usize {
    if load < brackets[0] {
        0
    } else if load < brackets[1] {
        1
    } else {
        2
    }
}

#[derive(Debug, Clone)]
struct Entry {
    tokens: f64,
    refilled: Instant,
    good: f64,
    bad: f64,
    decayed: Instant,
    pending: u32,
    prior_good: f64,
}

impl Entry {
    fn new(now: Instant, burst: f64, prior_good: f64) -> Entry {
        Entry {
            tokens: burst,
            refilled: now,
            good: 0.0,
            bad: 0.0,
            decayed: now,
            pending: 0,
            prior_good,
        }
    }

    fn decay(&mut self, now: Instant, half_life: Duration) {
        let dt = now.saturating_duration_since(self.decayed);
        if dt.is_zero() {
            return;
        }
        let f = (-(dt.as_secs_f64() / half_life.as_secs_f64())).exp2();
        self.good *= f;
        self.bad *= f;
        self.decayed = now;
    }

    /// Token bucket: `rate` per second up to `burst`; takes one if there is one.
    fn take_token(&mut self, now: Instant, rate: f64, burst: f64) -> bool {
        let dt = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + dt * rate).min(burst);
        self.refilled = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    fn score(&self) -> f64 {
        let g = self.good + self.prior_good;
        g / (g + self.bad + f64::from(self.pending) + 1.0)
    }
}

/// Two generations of at most `cap` entries each: lookups promote to the
/// newer one; when it is full the older is dropped (bounded memory, O(1)).
#[derive(Debug)]
struct Table<K> {
    cur: HashMap<K, Entry>,
    old: HashMap<K, Entry>,
    cap: usize,
}

impl<K: Hash + Eq + Copy> Table<K> {
    fn new(cap: usize) -> Self {
        Table {
            cur: HashMap::new(),
            old: HashMap::new(),
            cap: cap.max(1),
        }
    }

    fn len(&self) -> usize {
        self.cur.len() + self.old.len()
    }

    fn get_mut(&mut self, k: K, make: impl FnOnce() -> Entry) -> &mut Entry {
        // One hash for a hit while the newer generation has room.
        if self.cur.len() >= self.cap && !self.cur.contains_key(&k) {
            // Rotate, keeping this key's entry if the older generation had it.
            let kept = self.old.remove(&k);
            self.old = std::mem::take(&mut self.cur);
            if let Some(e) = kept {
                self.cur.insert(k, e);
            }
        }
        let Table { cur, old, .. } = self;
        cur.entry(k)
            .or_insert_with(|| old.remove(&k).unwrap_or_else(make))
    }

    /// An existing entry only (hooks never create entries).
    fn existing(&mut self, k: &K) -> Option<&mut Entry> {
        let Table { cur, old, .. } = self;
        cur.get_mut(k).or_else(|| old.get_mut(k))
    }
}

/// Who asked for a reservation, as the policy sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Asker {
    pub resolver: Option<IpAddr>,
    pub client_subnet: Option<(IpAddr, u8)>,
}

/// The admission policy's state. Sans-IO; the gateway owns it under its lock.
#[derive(Debug)]
pub struct Admission {
    cfg: AdmissionConfig,
    resolvers: Table<IpAddr>,
    subnets: Table<(IpAddr, u8)>,
}

impl Admission {
    pub fn new(cfg: AdmissionConfig) -> Self {
        let cap = cfg.max_resolvers / 2;
        Admission {
            resolvers: Table::new(cap),
            subnets: Table::new(cap),
            cfg,
        }
    }

    pub fn config(&self) -> &AdmissionConfig {
        &self.cfg
    }

    /// Takes a reloaded configuration, keeping what was learnt.
    pub fn reconfigure(&mut self, cfg: AdmissionConfig) {
        let cap = (cfg.max_resolvers / 2).max(1);
        self.resolvers.cap = cap;
        self.subnets.cap = cap;
        self.cfg = cfg;
    }

    /// Resolvers and subnets tracked.
    pub fn tracked(&self) -> (usize, usize) {
        (self.resolvers.len(), self.subnets.len())
    }

    fn prior_of(&self, ip: IpAddr) -> f64 {
        if self.cfg.trusted.iter().any(|n| n.contains(&ip)) {
            self.cfg.trusted_prior
        } else {
            1.0
        }
    }

    fn resolver_entry(&mut self, ip: IpAddr, now: Instant) -> &mut Entry {
        let (burst, prior) = (self.cfg.burst, self.prior_of(ip));
        self.resolvers.get_mut(ip, || Entry::new(now, burst, prior))
    }

    /// Before reserving: the resolver's query rate and pending limit.
    pub fn precheck(&mut self, resolver: Option<IpAddr>, now: Instant) -> Result<(), Refusal> {
        let Some(ip) = resolver else { return Ok(()) };
        let (rate, burst, limit) = (
            self.cfg.rate,
            self.cfg.burst,
            self.cfg.max_pending_per_resolver,
        );
        if rate <= 0.0 && limit == 0 {
            return Ok(());
        }
        let e = self.resolver_entry(ip, now);
        if limit != 0 && e.pending >= limit {
            return Err(Refusal::ResolverLimit);
        }
        if rate > 0.0 && !e.take_token(now, rate, burst) {
            return Err(Refusal::RateLimited);
        }
        Ok(())
    }

    /// The reputation used for `asker`: its client subnet's when the query
    /// carried ECS (a shared resolver's clients are judged apart), else the
    /// resolver's. None without a resolver (nothing to judge).
    pub fn score(&mut self, asker: Asker, now: Instant) -> Option<f64> {
        let ip = asker.resolver?;
        let half_life = self.cfg.half_life;
        let prior = self.prior_of(ip);
        let burst = self.cfg.burst;
        let e = match asker.client_subnet {
            Some(sn) => self.subnets.get_mut(sn, || Entry::new(now, burst, prior)),
            None => self.resolver_entry(ip, now),
        };
        e.decay(now, half_life);
        Some(e.score())
    }

    /// After the pool chose the slot: is the asker's reputation good enough
    /// for this kind of reservation at this pool load?
    pub fn judge(
        &mut self,
        asker: Asker,
        kind: Kind,
        load: f64,
        now: Instant,
    ) -> Result<(), Refusal> {
        if !self.cfg.reputation {
            return Ok(());
        }
        let Some(score) = self.score(asker, now) else {
            return Ok(());
        };
        let b = bracket(self.cfg.load_brackets, load);
        let need = match kind {
            Kind::Fqdn => self.cfg.fqdn_threshold[b],
            Kind::Sfqdn => self.cfg.sfqdn_threshold[b],
            Kind::Shared => self.cfg.shared_threshold[b],
        };
        if score < need {
            Err(Refusal::Reputation(kind))
        } else {
            Ok(())
        }
    }

    /// The entries an asker's outcomes are credited to.
    fn entries(&mut self, asker: Asker, f: impl Fn(&mut Entry)) {
        let Some(ip) = asker.resolver else { return };
        if let Some(e) = self.resolvers.existing(&ip) {
            f(e);
        }
        if let Some(sn) = asker.client_subnet {
            if let Some(e) = self.subnets.existing(&sn) {
                f(e);
            }
        }
    }

    /// A reservation was made for `asker`.
    pub fn on_reserved(&mut self, asker: Asker, now: Instant) {
        if !self.cfg.checks_reservations() {
            return;
        }
        if let Some(ip) = asker.resolver {
            self.resolver_entry(ip, now).pending += 1;
        }
        if let (Some(ip), Some(sn)) = (asker.resolver, asker.client_subnet) {
            let (burst, prior) = (self.cfg.burst, self.prior_of(ip));
            self.subnets
                .get_mut(sn, || Entry::new(now, burst, prior))
                .pending += 1;
        }
    }

    /// Its first packet arrived: counts for the asker.
    pub fn on_claimed(&mut self, asker: Asker, now: Instant) {
        let h = self.cfg.half_life;
        self.entries(asker, |e| {
            e.decay(now, h);
            e.pending = e.pending.saturating_sub(1);
            e.good += 1.0;
        });
    }

    /// It expired unused: counts against the asker.
    pub fn on_expired(&mut self, asker: Asker, now: Instant) {
        let h = self.cfg.half_life;
        self.entries(asker, |e| {
            e.decay(now, h);
            e.pending = e.pending.saturating_sub(1);
            e.bad += 1.0;
        });
    }

    /// Cancelled (reload, data plane failure, refused after reserving): neither.
    pub fn on_cancelled(&mut self, asker: Asker) {
        self.entries(asker, |e| e.pending = e.pending.saturating_sub(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    fn asker(s: &str) -> Asker {
        Asker {
            resolver: Some(ip(s)),
            client_subnet: None,
        }
    }

    fn cfg() -> AdmissionConfig {
        AdmissionConfig {
            reputation: true,
            ..AdmissionConfig::default()
        }
    }

    #[test]
    fn token_bucket_allows_burst_then_rate() {
        let t0 = Instant::now();
        let mut a = Admission::new(AdmissionConfig {
            rate: 10.0,
            burst: 3.0,
            ..AdmissionConfig::default()
        });
        let r = Some(ip("203.0.113.9"));
        for _ in 0..3 {
            assert_eq!(a.precheck(r, t0), Ok(()));
        }
        assert_eq!(a.precheck(r, t0), Err(Refusal::RateLimited));
        // 100 ms later one token is back, not two.
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(a.precheck(r, t1), Ok(()));
        assert_eq!(a.precheck(r, t1), Err(Refusal::RateLimited));
        // Another resolver has its own bucket; a query without a resolver is not limited.
        assert_eq!(a.precheck(Some(ip("203.0.113.10")), t1), Ok(()));
        assert_eq!(a.precheck(None, t1), Ok(()));
        // A long pause refills only up to the burst.
        let t2 = t1 + Duration::from_secs(60);
        for _ in 0..3 {
            assert_eq!(a.precheck(r, t2), Ok(()));
        }
        assert_eq!(a.precheck(r, t2), Err(Refusal::RateLimited));
    }

    #[test]
    fn pending_limit_per_resolver() {
        let t = Instant::now();
        let mut a = Admission::new(AdmissionConfig {
            max_pending_per_resolver: 2,
            ..AdmissionConfig::default()
        });
        let x = asker("203.0.113.120");
        for _ in 0..2 {
            assert_eq!(a.precheck(x.resolver, t), Ok(()));
            a.on_reserved(x, t);
        }
        assert_eq!(a.precheck(x.resolver, t), Err(Refusal::ResolverLimit));
        assert_eq!(a.precheck(Some(ip("203.0.113.54")), t), Ok(()));
        a.on_expired(x, t);
        assert_eq!(a.precheck(x.resolver, t), Ok(()));
        a.on_reserved(x, t);
        a.on_claimed(x, t);
        a.on_cancelled(x);
        a.on_cancelled(x);
        assert_eq!(a.precheck(x.resolver, t), Ok(()), "never below zero");
    }

    #[test]
    fn brackets() {
        let b = [0.5, 0.8];
        assert_eq!(
            [0.0, 0.49, 0.5, 0.79, 0.8, 1.0].map(|l| bracket(b, l)),
            [0, 0, 1, 1, 2, 2]
        );
    }

    #[test]
    fn reputation_arithmetic() {
        let t = Instant::now();
        let mut a = Admission::new(cfg());
        let x = asker("198.18.0.1");
        assert_eq!(a.score(x, t), Some(0.5), "unknown: (0+1)/(0+0+0+1+1)");
        a.on_reserved(x, t);
        assert_eq!(a.score(x, t), Some(1.0 / 3.0), "pending is not yet proven");
        a.on_claimed(x, t);
        assert_eq!(a.score(x, t), Some(2.0 / 3.0));
        for _ in 0..2 {
            a.on_reserved(x, t);
            a.on_expired(x, t);
        }
        assert_eq!(a.score(x, t), Some(2.0 / 5.0));
        // One half-life later claimed and expired count half.
        let later = t + Duration::from_secs(60);
        let s = a.score(x, later).expect("a resolver");
        assert!((s - 1.5 / 3.5).abs() < 1e-9, "{s}");
        assert_eq!(a.score(Asker::default(), t), None);
    }

    #[test]
    fn thresholds_tighten_with_load_and_trusted_groups_start_better() {
        let t = Instant::now();
        let mut a = Admission::new(AdmissionConfig {
            trusted: vec!["203.0.113.0/24".parse().expect("net")],
            ..cfg()
        });
        let stranger = asker("198.18.0.1");
        let friend = asker("203.0.113.54");
        // Unknown (0.5): everything at low load, nothing above 0.5 needed at mid load…
        for kind in [Kind::Fqdn, Kind::Sfqdn, Kind::Shared] {
            assert_eq!(a.judge(stranger, kind, 0.1, t), Ok(()));
            assert_eq!(a.judge(stranger, kind, 0.6, t), Ok(()));
        }
        // …at high load a whole address needs 0.6, a shared slot 0.3.
        assert_eq!(
            a.judge(stranger, Kind::Fqdn, 0.9, t),
            Err(Refusal::Reputation(Kind::Fqdn))
        );
        assert_eq!(a.judge(stranger, Kind::Sfqdn, 0.9, t), Ok(()));
        assert_eq!(a.judge(stranger, Kind::Shared, 0.9, t), Ok(()));
        assert_eq!(
            a.judge(friend, Kind::Fqdn, 0.9, t),
            Ok(()),
            "trusted prior 20"
        );
        // A resolver whose reservations expire sinks below every high-load threshold.
        for _ in 0..5 {
            a.on_reserved(stranger, t);
            a.on_expired(stranger, t);
        }
        assert_eq!(
            a.judge(stranger, Kind::Shared, 0.9, t),
            Err(Refusal::Reputation(Kind::Shared))
        );
        assert_eq!(
            a.judge(stranger, Kind::Fqdn, 0.1, t),
            Ok(()),
            "low load admits"
        );
        // Reputation off: never judged.
        let mut off = Admission::new(AdmissionConfig::default());
        assert_eq!(off.judge(stranger, Kind::Fqdn, 1.0, t), Ok(()));
    }

    #[test]
    fn client_subnets_are_judged_apart_from_their_resolver() {
        let t = Instant::now();
        let mut a = Admission::new(cfg());
        let bad_client = Asker {
            resolver: Some(ip("8.8.8.8")),
            client_subnet: Some((ip("198.18.5.0"), 24)),
        };
        let good_client = Asker {
            resolver: Some(ip("8.8.8.8")),
            client_subnet: Some((ip("198.18.6.0"), 24)),
        };
        for _ in 0..5 {
            a.on_reserved(bad_client, t);
            a.on_expired(bad_client, t);
            a.on_reserved(good_client, t);
            a.on_claimed(good_client, t);
        }
        assert!(a.judge(bad_client, Kind::Fqdn, 0.9, t).is_err());
        assert_eq!(a.judge(good_client, Kind::Fqdn, 0.9, t), Ok(()));
    }

    #[test]
    fn tables_stay_bounded() {
        let t = Instant::now();
        let mut a = Admission::new(AdmissionConfig {
            max_resolvers: 100,
            rate: 1.0,
            ..cfg()
        });
        for i in 0..10_000u32 {
            let r = IpAddr::V4(Ipv4Addr::from(0xc612_0000 + i));
            let _ = a.precheck(Some(r), t);
        }
        assert!(a.tracked().0 <= 100, "{:?}", a.tracked());
        // A resolver seen recently survives a rotation (promoted on access).
        let keep = Some(ip("203.0.113.54"));
        assert_eq!(a.precheck(keep, t), Ok(()));
        for i in 0..49u32 {
            let _ = a.precheck(Some(IpAddr::V4(Ipv4Addr::from(0xc613_0000 + i))), t);
            let _ = a.precheck(keep, t);
        }
        assert_eq!(
            a.precheck(keep, t),
            Err(Refusal::RateLimited),
            "its bucket was kept"
        );
    }

    #[test]
    fn an_entry_of_the_older_generation_survives_the_rotation_it_triggers() {
        let t = Instant::now();
        let fresh = || Entry::new(t, 1.0, 1.0);
        let mut tab: Table<u32> = Table::new(1);
        tab.get_mut(10, fresh).pending = 3;
        tab.get_mut(11, fresh); // rotates: old = {10}, cur = {11} (full)
        assert_eq!(tab.get_mut(10, fresh).pending, 3, "promoted, not dropped");
        assert_eq!(tab.len(), 2, "old = {{11}}, cur = {{10}}");
        tab.get_mut(12, fresh); // rotates: 11 is forgotten
        assert_eq!(tab.get_mut(11, fresh).pending, 0);
        assert!(tab.len() <= 2);
    }

    #[test]
    fn ecs_match() {
        let src = Ipv4Addr::new(203, 0, 113, 100);
        assert!(ecs_admits((ip("203.0.113.100"), 32), src));
        assert!(!ecs_admits((ip("203.0.113.101"), 32), src));
        assert!(ecs_admits((ip("203.0.113.0"), 24), src));
        assert!(!ecs_admits((ip("203.0.112.0"), 24), src));
        assert!(ecs_admits((ip("0.0.0.0"), 0), src));
        assert!(
            ecs_admits((ip("2001:db8::"), 56), src),
            "another family does not bind"
        );
        assert!(
            ecs_admits((ip("203.0.113.100"), 40), src),
            "over-long prefix is /32"
        );
    }

    fn validate_str(text: &str) -> Result<AdmissionConfig, ConfigError> {
        let raw: RawAdmission = config::Config::builder()
            .add_source(config::File::from_str(text, config::FileFormat::Toml))
            .build()
            .and_then(|c| c.try_deserialize())
            .expect("test TOML deserialises");
        validate(Path::new("rgw.toml"), raw, "gwa.demo.", &["hosta"])
    }

    #[test]
    fn config_defaults_and_errors_name_the_key() {
        let c = validate_str("").expect("defaults");
        assert_eq!(c, AdmissionConfig::default());
        assert!(!c.checks_reservations());
        let c = validate_str("antispoof = \"cname\"").expect("cname");
        assert_eq!(
            c.antispoof,
            AntiSpoofMode::Cname {
                zone: "alias.gwa.demo.".into(),
                lifetime: Duration::from_secs(5)
            }
        );
        for (text, key) in [
            ("antispoof = \"maybe\"", "admission.antispoof"),
            (
                "antispoof = \"cname\"\nalias_zone = \"alias.example.\"",
                "admission.alias_zone",
            ),
            (
                "antispoof = \"cname\"\nalias_zone = \"hosta.gwa.demo\"",
                "admission.alias_zone",
            ),
            ("alias_zone = \"a.gwa.demo\"", "admission.alias_zone"),
            (
                "fqdn_threshold = [0.5, 0.2, 0.9]",
                "admission.fqdn_threshold",
            ),
            ("load_brackets = [0.9]", "admission.load_brackets"),
            ("trusted = [\"10.0.0.0/33\"]", "admission.trusted[0]"),
            ("rate = -1.0", "admission.rate"),
        ] {
            let e = validate_str(text).expect_err(text).to_string();
            assert!(
                e.contains("rgw.toml") && e.contains(&format!("`{key}`")),
                "{text}: {e}"
            );
        }
    }
}
