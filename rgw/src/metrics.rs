//! Counters of every decision, read by `rgw status`.

use std::sync::atomic::{AtomicU64, Ordering};

use rgw_dns::{AliasError, DenyReason, DropReason, Outcome, SpoofEvent};

use crate::admission::{Kind, Refusal};

macro_rules! counters {
    ($($name:ident),* $(,)?) => {
        /// One relaxed atomic per event; snapshot with [`Metrics::snapshot`].
        #[derive(Debug, Default)]
        pub struct Metrics { $(pub $name: AtomicU64,)* }
        impl Metrics {
            pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
                vec![$((stringify!($name), self.$name.load(Ordering::Relaxed)),)*]
            }
        }
    };
}

counters!(
    dns_queries_public,
    dns_queries_private,
    dns_answers_static,
    dns_answers_allocated,
    dns_nodata,
    dns_nxdomain,
    dns_refused,
    dns_formerr,
    dns_notimp,
    dns_badvers,
    dns_denied_answered,
    dns_dropped_malformed,
    dns_dropped_not_query,
    dns_dropped_denied,
    dns_forwarded,
    dns_forward_failed,
    reservations,
    denied_exhausted,
    denied_host_limit,
    denied_dataplane,
    claims,
    claim_rejected,
    gate_unparsable,
    gate_ttl_expiring,
    expiries,
    dataplane_errors,
    denied_pending_limit,
    dns_tcp_refused,
    gate_queue_dropped,
    gate_queue_user_dropped,
    dns_truncated,
    dns_alias,
    denied_admission,
    admission_rate_limited,
    admission_resolver_limit,
    admission_reputation_fqdn,
    admission_reputation_sfqdn,
    admission_reputation_shared,
    antispoof_tc,
    antispoof_alias_issued,
    antispoof_alias_followed,
    antispoof_alias_forged,
    antispoof_alias_expired,
    antispoof_alias_mismatch,
    ecs_binding_dropped,
);

#[inline]
pub fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl Metrics {
    pub fn count_outcome(&self, o: Outcome) {
        inc(match o {
            Outcome::Static => &self.dns_answers_static,
            Outcome::Allocated => &self.dns_answers_allocated,
            Outcome::NoData => &self.dns_nodata,
            Outcome::NxDomain => &self.dns_nxdomain,
            Outcome::Refused => &self.dns_refused,
            Outcome::FormErr => &self.dns_formerr,
            Outcome::NotImp => &self.dns_notimp,
            Outcome::BadVers => &self.dns_badvers,
            Outcome::Denied(_) => &self.dns_denied_answered,
            Outcome::Truncated => &self.dns_truncated,
            Outcome::Alias => &self.dns_alias,
        });
    }

    pub fn count_drop(&self, r: DropReason) {
        inc(match r {
            DropReason::Malformed => &self.dns_dropped_malformed,
            DropReason::NotAQuery => &self.dns_dropped_not_query,
            DropReason::Denied(_) => &self.dns_dropped_denied,
        });
    }

    pub fn count_denied(&self, r: DenyReason) {
        inc(match r {
            DenyReason::Exhausted => &self.denied_exhausted,
            DenyReason::HostLimit => &self.denied_host_limit,
            DenyReason::Dataplane => &self.denied_dataplane,
            DenyReason::Admission => &self.denied_admission,
        });
    }

    pub fn count_refusal(&self, r: Refusal) {
        inc(match r {
            Refusal::RateLimited => &self.admission_rate_limited,
            Refusal::ResolverLimit => &self.admission_resolver_limit,
            Refusal::Reputation(Kind::Fqdn) => &self.admission_reputation_fqdn,
            Refusal::Reputation(Kind::Sfqdn) => &self.admission_reputation_sfqdn,
            Refusal::Reputation(Kind::Shared) => &self.admission_reputation_shared,
        });
    }

    pub fn count_spoof_event(&self, e: SpoofEvent) {
        inc(match e {
            SpoofEvent::TcSent => &self.antispoof_tc,
            SpoofEvent::AliasIssued => &self.antispoof_alias_issued,
            SpoofEvent::AliasFollowed => &self.antispoof_alias_followed,
            SpoofEvent::AliasRejected(AliasError::Forged) => &self.antispoof_alias_forged,
            SpoofEvent::AliasRejected(AliasError::Expired) => &self.antispoof_alias_expired,
            SpoofEvent::AliasRejected(AliasError::ResolverMismatch) => {
                &self.antispoof_alias_mismatch
            }
        });
    }
}
