//! Counters of every decision, read by `rgw status`.

use std::sync::atomic::{AtomicU64, Ordering};

use rgw_dns::{DenyReason, DropReason, Outcome};

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
    expiries,
    dataplane_errors,
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
        });
    }
}
