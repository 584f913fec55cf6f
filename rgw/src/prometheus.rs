//! Prometheus metrics: the text exposition format 0.0.4 and a minimal
//! HTTP/1.1 endpoint that serves it.
//!
//! Three layers, each usable on its own:
//!
//! - [`render`] (sans-IO) turns [`Sample`]s into the text format: one
//!   `# HELP` and one `# TYPE` line per metric family, families grouped and
//!   sorted by name, label values escaped, counters named `…_total`.
//! - [`gateway_samples`] maps rgw's counter snapshot (`Metrics::snapshot`),
//!   the pool's gauges and the kernel's nft counters to metric families with
//!   labels (`rgw_dns_responses_total{outcome="nxdomain"}`, …). A counter with
//!   no mapping row is still exported, as `rgw_<name>_total` with a generic
//!   help text, so a new counter in `metrics.rs` shows up without any change
//!   here; a row only gives it a family, labels and a proper help text.
//!   Features with gauges of their own append their [`OwnedSample`]s to the
//!   returned vector before calling [`render_owned`]: [`alg_samples`] (the
//!   ALG engine's and shell's counters, `rgw_alg_*`) and [`rgw64_samples`]
//!   (the RGW64 translator's, `rgw_rgw64_*`) do so.
//! - [`serve`] is the HTTP shell: `GET /metrics` answers with the body that
//!   `collect` returns.
//!
//! The module uses nothing else from this crate; the caller passes
//! everything in. The metric list is documented in `docs/metrics.md`.

use std::collections::{BTreeMap, HashSet};
use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tracing::{debug, info, warn};

// ---------------------------------------------------------------------------
// Renderer (sans-IO)
// ---------------------------------------------------------------------------

/// Metric type, as written in the `# TYPE` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up (until the process restarts). Rendered names end in `_total`.
    Counter,
    /// Goes up and down.
    Gauge,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        }
    }
}

/// One sample: a value of one series of a metric family.
///
/// `name` is the family name. For a [`Kind::Counter`] the renderer appends
/// `_total` when the name does not already end with it. Characters outside
/// `[a-zA-Z0-9_:]` in names (`[a-zA-Z0-9_]` in label names) become `_`, and a
/// leading digit gets a `_` in front. Samples of one family should agree on
/// `help` and `kind`; the first sample of the family provides both.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample<'a> {
    pub name: &'a str,
    pub help: &'a str,
    pub kind: Kind,
    pub labels: &'a [(&'a str, &'a str)],
    pub value: f64,
}

/// Renders samples in the Prometheus text exposition format 0.0.4.
///
/// Families come out sorted by name (byte order), each as one block: its
/// `# HELP` line (left out when the help text is empty), its `# TYPE` line,
/// then its samples in the order given, wherever they were in `samples`.
/// Labels keep the order given. A repeated label name in one sample keeps its
/// first value, and a repeated series (same family, same labels) keeps its
/// first sample: Prometheus rejects both. The same input always gives the same
/// output.
pub fn render(samples: &[Sample<'_>]) -> String {
    let mut families: BTreeMap<String, Vec<&Sample<'_>>> = BTreeMap::new();
    for s in samples {
        families
            .entry(family_name(s.name, s.kind))
            .or_default()
            .push(s);
    }
    let mut out = String::new();
    for (name, members) in &families {
        let first = members[0];
        if !first.help.is_empty() {
            out.push_str("# HELP ");
            out.push_str(name);
            out.push(' ');
            escape_help(first.help, &mut out);
            out.push('\n');
        }
        out.push_str("# TYPE ");
        out.push_str(name);
        out.push(' ');
        out.push_str(first.kind.as_str());
        out.push('\n');
        let mut seen = HashSet::new();
        for s in members {
            let labels = render_labels(s.labels);
            if !seen.insert(labels.clone()) {
                continue;
            }
            out.push_str(name);
            out.push_str(&labels);
            out.push(' ');
            out.push_str(&format_value(s.value));
            out.push('\n');
        }
    }
    out
}

/// The name a family is rendered under: sanitised, and `_total` for counters.
fn family_name(name: &str, kind: Kind) -> String {
    let mut n = sanitize(name, true);
    if kind == Kind::Counter && !n.ends_with("_total") {
        n.push_str("_total");
    }
    n
}

/// Metric names match `[a-zA-Z_:][a-zA-Z0-9_:]*`, label names
/// `[a-zA-Z_][a-zA-Z0-9_]*`: anything else becomes `_`.
fn sanitize(name: &str, colon_ok: bool) -> String {
    let mut out: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || (colon_ok && c == ':') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

/// `{a="x",b="y"}`, or nothing for no labels.
fn render_labels(labels: &[(&str, &str)]) -> String {
    let mut out = String::new();
    let mut names: Vec<String> = Vec::with_capacity(labels.len());
    for (k, v) in labels {
        let k = sanitize(k, false);
        if names.contains(&k) {
            continue;
        }
        out.push(if names.is_empty() { '{' } else { ',' });
        out.push_str(&k);
        out.push_str("=\"");
        for c in v.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('"');
        names.push(k);
    }
    if !names.is_empty() {
        out.push('}');
    }
    out
}

/// HELP text escapes only `\` and newline.
fn escape_help(help: &str, out: &mut String) {
    for c in help.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Integers without a fraction, everything else in Rust's shortest
/// round-trip form (`0.25`, `1e300`), which Go's `ParseFloat` reads.
fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_string()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_string()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v:?}")
    }
}

/// A [`Sample`] that owns its strings, for building sample lists.
#[derive(Debug, Clone, PartialEq)]
pub struct OwnedSample {
    pub name: String,
    pub help: String,
    pub kind: Kind,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl OwnedSample {
    pub fn counter(
        name: impl Into<String>,
        help: impl Into<String>,
        labels: &[(&str, &str)],
        value: u64,
    ) -> Self {
        Self::new(
            name.into(),
            help.into(),
            Kind::Counter,
            labels,
            value as f64,
        )
    }

    pub fn gauge(
        name: impl Into<String>,
        help: impl Into<String>,
        labels: &[(&str, &str)],
        value: f64,
    ) -> Self {
        Self::new(name.into(), help.into(), Kind::Gauge, labels, value)
    }

    fn new(name: String, help: String, kind: Kind, labels: &[(&str, &str)], value: f64) -> Self {
        Self {
            name,
            help,
            kind,
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            value,
        }
    }
}

/// [`render`] for owned samples.
pub fn render_owned(samples: &[OwnedSample]) -> String {
    let labels: Vec<Vec<(&str, &str)>> = samples
        .iter()
        .map(|s| {
            s.labels
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect()
        })
        .collect();
    let borrowed: Vec<Sample<'_>> = samples
        .iter()
        .zip(&labels)
        .map(|(s, l)| Sample {
            name: &s.name,
            help: &s.help,
            kind: s.kind,
            labels: l,
            value: s.value,
        })
        .collect();
    render(&borrowed)
}

// ---------------------------------------------------------------------------
// rgw's metric families
// ---------------------------------------------------------------------------

/// The Circular Pool's gauges (the pool's `PoolStats`, as u64).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolGauges {
    pub size: u64,
    pub free: u64,
    pub exclusive: u64,
    pub shared: u64,
    pub pending: u64,
}

/// A counter family: rendered name (with `_total`) and help text.
struct Family {
    name: &'static str,
    help: &'static str,
}

const DNS_QUERIES: Family = Family {
    name: "rgw_dns_queries_total",
    help: "DNS queries received, by view (public = WAN, private = LAN), whatever became of them.",
};
const DNS_RESPONSES: Family = Family {
    name: "rgw_dns_responses_total",
    help: "DNS queries answered by rgw itself, by outcome of the answer policy.",
};
const DNS_DROPPED: Family = Family {
    name: "rgw_dns_dropped_total",
    help: "DNS queries dropped without an answer, by reason.",
};
const DNS_FORWARDED: Family = Family {
    name: "rgw_dns_forwarded_total",
    help: "Private-view queries for names outside the zone, relayed to the upstream resolver.",
};
const DNS_FORWARD_FAILED: Family = Family {
    name: "rgw_dns_forward_failed_total",
    help: "Relayed queries the upstream resolver did not answer (timeout or error).",
};
const RESERVATIONS: Family = Family {
    name: "rgw_reservations_total",
    help: "Reservations made in the Circular Pool and installed in the kernel.",
};
const RESERVATIONS_DENIED: Family = Family {
    name: "rgw_reservations_denied_total",
    help: "Reservations refused, by reason.",
};
const CLAIMS: Family = Family {
    name: "rgw_claims_total",
    help: "Queued first packets that claimed a pending reservation (admitted inbound flows).",
};
const CLAIMS_REJECTED: Family = Family {
    name: "rgw_claims_rejected_total",
    help: "Queued first packets dropped because no pending reservation matched them.",
};
const GATE_UNPARSABLE: Family = Family {
    name: "rgw_gate_unparsable_total",
    help: "Queued first packets dropped because they could not be parsed.",
};
const GATE_TTL_EXPIRING: Family = Family {
    name: "rgw_gate_ttl_expiring_total",
    help: "Queued first packets whose TTL runs out in the gateway, passed on unclaimed (the kernel answers Time Exceeded).",
};
const EXPIRIES: Family = Family {
    name: "rgw_expiries_total",
    help: "Reservations that expired unclaimed after Tmax.",
};
const DATAPLANE_ERRORS: Family = Family {
    name: "rgw_dataplane_errors_total",
    help: "Netlink operations on the reservation sets that failed \
           (a refused install, or a claimed element not removed).",
};
const ADMISSION_REFUSED: Family = Family {
    name: "rgw_admission_refused_total",
    help: "Reservations refused by the admission policy, by reason (rate_limited, resolver_limit, reputation_fqdn/sfqdn/shared).",
};
const ANTISPOOF: Family = Family {
    name: "rgw_antispoof_total",
    help: "Anti-spoofing decisions on allocating queries: tc (TC=1 sent), alias_issued, alias_followed, alias_forged, alias_expired, alias_mismatch.",
};
const ECS_BINDING_DROPPED: Family = Family {
    name: "rgw_ecs_binding_dropped_total",
    help: "First packets dropped because their source is outside the EDNS Client Subnet of the reservation's query.",
};
const KERNEL_DROPS: Family = Family {
    name: "rgw_kernel_dropped_packets_total",
    help: "Packets dropped by rgw's nftables rules, by reason (the table's named counters).",
};

const POOL_SIZE: &str = "rgw_pool_size";
const POOL_SIZE_HELP: &str = "Addresses in the Circular Pool.";
const POOL_ADDRESSES: &str = "rgw_pool_addresses";
const POOL_ADDRESSES_HELP: &str = "Pool addresses by state: free (no reservation), \
     exclusive (held by an FQDN reservation), shared (holding service reservations).";
const PENDING: &str = "rgw_pending_reservations";
const PENDING_HELP: &str =
    "Pending reservations (waiting for their first packet), FQDN and service ones.";

/// How one named counter is exported: source name, family, labels.
type Row = (
    &'static str,
    &'static Family,
    &'static [(&'static str, &'static str)],
);

/// Counters of `Metrics::snapshot`. A counter missing here is exported as
/// `rgw_<name>_total`; add a row (and a line in docs/metrics.md) to put it
/// into a family with labels.
const COUNTERS: &[Row] = &[
    ("dns_queries_public", &DNS_QUERIES, &[("view", "public")]),
    ("dns_queries_private", &DNS_QUERIES, &[("view", "private")]),
    (
        "dns_answers_static",
        &DNS_RESPONSES,
        &[("outcome", "static")],
    ),
    (
        "dns_answers_allocated",
        &DNS_RESPONSES,
        &[("outcome", "allocated")],
    ),
    ("dns_nodata", &DNS_RESPONSES, &[("outcome", "nodata")]),
    ("dns_nxdomain", &DNS_RESPONSES, &[("outcome", "nxdomain")]),
    ("dns_refused", &DNS_RESPONSES, &[("outcome", "refused")]),
    ("dns_formerr", &DNS_RESPONSES, &[("outcome", "formerr")]),
    ("dns_notimp", &DNS_RESPONSES, &[("outcome", "notimp")]),
    ("dns_badvers", &DNS_RESPONSES, &[("outcome", "badvers")]),
    (
        "dns_denied_answered",
        &DNS_RESPONSES,
        &[("outcome", "denied")],
    ),
    (
        "dns_dropped_malformed",
        &DNS_DROPPED,
        &[("reason", "malformed")],
    ),
    (
        "dns_dropped_not_query",
        &DNS_DROPPED,
        &[("reason", "not_query")],
    ),
    ("dns_dropped_denied", &DNS_DROPPED, &[("reason", "denied")]),
    ("dns_forwarded", &DNS_FORWARDED, &[]),
    ("dns_forward_failed", &DNS_FORWARD_FAILED, &[]),
    ("reservations", &RESERVATIONS, &[]),
    (
        "denied_exhausted",
        &RESERVATIONS_DENIED,
        &[("reason", "exhausted")],
    ),
    (
        "denied_host_limit",
        &RESERVATIONS_DENIED,
        &[("reason", "host_limit")],
    ),
    (
        "denied_dataplane",
        &RESERVATIONS_DENIED,
        &[("reason", "dataplane")],
    ),
    ("claims", &CLAIMS, &[]),
    ("claim_rejected", &CLAIMS_REJECTED, &[]),
    ("gate_unparsable", &GATE_UNPARSABLE, &[]),
    ("gate_ttl_expiring", &GATE_TTL_EXPIRING, &[]),
    ("expiries", &EXPIRIES, &[]),
    ("dataplane_errors", &DATAPLANE_ERRORS, &[]),
    ("dns_truncated", &DNS_RESPONSES, &[("outcome", "truncated")]),
    ("dns_alias", &DNS_RESPONSES, &[("outcome", "alias")]),
    (
        "denied_admission",
        &RESERVATIONS_DENIED,
        &[("reason", "admission")],
    ),
    (
        "admission_rate_limited",
        &ADMISSION_REFUSED,
        &[("reason", "rate_limited")],
    ),
    (
        "admission_resolver_limit",
        &ADMISSION_REFUSED,
        &[("reason", "resolver_limit")],
    ),
    (
        "admission_reputation_fqdn",
        &ADMISSION_REFUSED,
        &[("reason", "reputation_fqdn")],
    ),
    (
        "admission_reputation_sfqdn",
        &ADMISSION_REFUSED,
        &[("reason", "reputation_sfqdn")],
    ),
    (
        "admission_reputation_shared",
        &ADMISSION_REFUSED,
        &[("reason", "reputation_shared")],
    ),
    ("antispoof_tc", &ANTISPOOF, &[("decision", "tc")]),
    (
        "antispoof_alias_issued",
        &ANTISPOOF,
        &[("decision", "alias_issued")],
    ),
    (
        "antispoof_alias_followed",
        &ANTISPOOF,
        &[("decision", "alias_followed")],
    ),
    (
        "antispoof_alias_forged",
        &ANTISPOOF,
        &[("decision", "alias_forged")],
    ),
    (
        "antispoof_alias_expired",
        &ANTISPOOF,
        &[("decision", "alias_expired")],
    ),
    (
        "antispoof_alias_mismatch",
        &ANTISPOOF,
        &[("decision", "alias_mismatch")],
    ),
    ("ecs_binding_dropped", &ECS_BINDING_DROPPED, &[]),
];

/// The nft named counters of rgw's table (`ruleset::COUNTER_*`).
const KERNEL_COUNTERS: &[Row] = &[
    ("unreserved", &KERNEL_DROPS, &[("reason", "unreserved")]),
    ("no_daemon", &KERNEL_DROPS, &[("reason", "no_daemon")]),
    ("forward_drop", &KERNEL_DROPS, &[("reason", "forward")]),
];

fn lookup(rows: &'static [Row], name: &str) -> Option<&'static Row> {
    rows.iter().find(|r| r.0 == name)
}

/// Every rgw metric from one snapshot.
///
/// - `counters`: `Metrics::snapshot()`. Known names go into their family
///   (see the table in docs/metrics.md); an unknown name `x` is exported as
///   `rgw_x_total` with a generic help text, never dropped.
/// - `pool`: the pool's current state (gauges).
/// - `kernel`: the nft named counters of rgw's table, `(name, packets)`;
///   `None` (nft could not read it) leaves the series out of this scrape. An
///   unknown name `x` is exported as `rgw_kernel_x_packets_total`.
pub fn gateway_samples(
    counters: &[(&str, u64)],
    pool: PoolGauges,
    kernel: &[(&'static str, Option<u64>)],
) -> Vec<OwnedSample> {
    let mut out = Vec::with_capacity(counters.len() + kernel.len() + 5);
    for &(name, value) in counters {
        out.push(match lookup(COUNTERS, name) {
            Some((_, fam, labels)) => OwnedSample::counter(fam.name, fam.help, labels, value),
            None => OwnedSample::counter(
                family_name(&format!("rgw_{name}"), Kind::Counter),
                format!("rgw counter {name} (not described yet, see docs/metrics.md)."),
                &[],
                value,
            ),
        });
    }
    out.push(OwnedSample::gauge(
        POOL_SIZE,
        POOL_SIZE_HELP,
        &[],
        pool.size as f64,
    ));
    for (state, n) in [
        ("free", pool.free),
        ("exclusive", pool.exclusive),
        ("shared", pool.shared),
    ] {
        out.push(OwnedSample::gauge(
            POOL_ADDRESSES,
            POOL_ADDRESSES_HELP,
            &[("state", state)],
            n as f64,
        ));
    }
    out.push(OwnedSample::gauge(
        PENDING,
        PENDING_HELP,
        &[],
        pool.pending as f64,
    ));
    for &(name, value) in kernel {
        let Some(value) = value else { continue };
        out.push(match lookup(KERNEL_COUNTERS, name) {
            Some((_, fam, labels)) => OwnedSample::counter(fam.name, fam.help, labels, value),
            None => OwnedSample::counter(
                family_name(&format!("rgw_kernel_{name}_packets"), Kind::Counter),
                format!("Packets counted by the nftables counter {name} of rgw's table."),
                &[],
                value,
            ),
        });
    }
    out
}

/// [`gateway_samples`], rendered: the body of `GET /metrics`.
pub fn gateway_metrics(
    counters: &[(&str, u64)],
    pool: PoolGauges,
    kernel: &[(&'static str, Option<u64>)],
) -> String {
    render_owned(&gateway_samples(counters, pool, kernel))
}

// ---------------------------------------------------------------------------
// ALG and RGW64 families
// ---------------------------------------------------------------------------

const ALG_PACKETS: Family = Family {
    name: "rgw_alg_packets_total",
    help: "Packets of ALG control flows (FTP, SIP, RTSP ports) the ALG engine looked at.",
};
const ALG_UNTRACKED: Family = Family {
    name: "rgw_alg_untracked_packets_total",
    help: "Packets the ALG passed unchanged without tracking them, by reason: unparsed (not a whole IPv4 TCP/UDP packet), not_alg (no ALG port, no tracked flow), over_limit (new flow beyond alg.max_flows), no_public_addr (no claim known for an inbound flow).",
};
const ALG_FLOWS: Family = Family {
    name: "rgw_alg_flows_total",
    help: "ALG control flows by event: created, expired (idle), evicted (closed flows removed early to make room under alg.max_flows).",
};
const ALG_REWRITES: Family = Family {
    name: "rgw_alg_rewrites_total",
    help:
        "ALG messages rewritten (an address or port replaced in an FTP, SIP/SDP or RTSP message).",
};
const ALG_PACKETS_REPLACED: Family = Family {
    name: "rgw_alg_packets_replaced_total",
    help: "ALG packets sent on modified: a rewritten payload, or SEQ/ACK/SACK adjusted after an earlier rewrite changed a length.",
};
const ALG_PINHOLE_REQUESTS: Family = Family {
    name: "rgw_alg_pinhole_requests_total",
    help: "Pinholes (expected data or media connections) asked for by the ALG engine, by result: granted (a port was given), refused (no free port, or alg.max_pinholes_per_flow reached).",
};
const ALG_PINHOLES: Family = Family {
    name: "rgw_alg_pinholes_total",
    help: "Pinholes the ALG shell wrote to the kernel maps (pinholes, pinhole_snat), by result: written or error (netlink refused).",
};
const ALG_PINHOLES6: Family = Family {
    name: "rgw_alg_nat46_pinholes_total",
    help: "Of the pinholes written, those in the ip6 table's pinholes6 map (RGW64 NAT46: an IPv6-only server's data or media connection to wan_address6, DNATed to the IPv4 host through the translator).",
};
const ALG_MESSAGES: Family = Family {
    name: "rgw_alg_messages_total",
    help: "ALG messages not rewritten, by outcome: malformed (could not be parsed, passed unchanged), hold_overflow (longer than alg.max_hold: the direction is no longer parsed), build_error (the rewritten packet would exceed 65535 bytes: passed unchanged).",
};
const ALG_HOLDS: Family = Family {
    name: "rgw_alg_holds_total",
    help: "ALG TCP segments whose tail was held back because it ended in an incomplete message.",
};
const ALG_DROPPED: Family = Family {
    name: "rgw_alg_dropped_total",
    help: "ALG packets dropped, by reason: out_of_order (beyond a gap in the stream), incomplete (held bytes only), other.",
};
const ALG_RETRANSMISSIONS: Family = Family {
    name: "rgw_alg_retransmissions_total",
    help: "ALG TCP retransmissions, by handling: replayed (rebuilt with the rewritten message), duplicate (already acknowledged data, passed as a one-byte duplicate).",
};
const ALG_CT_LIBERAL: Family = Family {
    name: "rgw_alg_conntrack_liberal_total",
    help: "ALG TCP flows whose conntrack entry was marked liberal (window checks off after SEQ rewriting), by result: marked or error.",
};
const ALG_FLOWS_ACTIVE: &str = "rgw_alg_flows";
const ALG_FLOWS_ACTIVE_HELP: &str = "ALG control flows tracked now.";

/// Counters of `AlgState::counters()`. `dropped` (all drops) is exported as
/// its parts: `dropped_out_of_order`, `dropped_incomplete` and the rest
/// (`dropped_other`, computed by [`alg_samples`]), so the reasons sum to it.
const ALG_COUNTERS: &[Row] = &[
    ("packets", &ALG_PACKETS, &[]),
    ("unparsed", &ALG_UNTRACKED, &[("reason", "unparsed")]),
    ("not_alg", &ALG_UNTRACKED, &[("reason", "not_alg")]),
    ("flows_created", &ALG_FLOWS, &[("event", "created")]),
    ("flows_expired", &ALG_FLOWS, &[("event", "expired")]),
    ("flows_evicted", &ALG_FLOWS, &[("event", "evicted")]),
    (
        "flows_over_limit",
        &ALG_UNTRACKED,
        &[("reason", "over_limit")],
    ),
    (
        "no_public_addr",
        &ALG_UNTRACKED,
        &[("reason", "no_public_addr")],
    ),
    ("rewrites", &ALG_REWRITES, &[]),
    ("packets_replaced", &ALG_PACKETS_REPLACED, &[]),
    (
        "pinholes_requested",
        &ALG_PINHOLE_REQUESTS,
        &[("result", "granted")],
    ),
    (
        "port_alloc_failed",
        &ALG_PINHOLE_REQUESTS,
        &[("result", "refused")],
    ),
    (
        "pinholes_recycled",
        &ALG_PINHOLE_REQUESTS,
        &[("result", "recycled")],
    ),
    ("malformed", &ALG_MESSAGES, &[("outcome", "malformed")]),
    ("holds", &ALG_HOLDS, &[]),
    (
        "hold_overflows",
        &ALG_MESSAGES,
        &[("outcome", "hold_overflow")],
    ),
    ("dropped_other", &ALG_DROPPED, &[("reason", "other")]),
    (
        "dropped_out_of_order",
        &ALG_DROPPED,
        &[("reason", "out_of_order")],
    ),
    (
        "dropped_incomplete",
        &ALG_DROPPED,
        &[("reason", "incomplete")],
    ),
    ("replays", &ALG_RETRANSMISSIONS, &[("handling", "replayed")]),
    (
        "duplicates",
        &ALG_RETRANSMISSIONS,
        &[("handling", "duplicate")],
    ),
    ("build_errors", &ALG_MESSAGES, &[("outcome", "build_error")]),
    ("pinholes_written", &ALG_PINHOLES, &[("result", "written")]),
    ("pinhole_errors", &ALG_PINHOLES, &[("result", "error")]),
    ("pinholes6_written", &ALG_PINHOLES6, &[]),
    ("ct_liberal", &ALG_CT_LIBERAL, &[("result", "marked")]),
    ("ct_liberal_errors", &ALG_CT_LIBERAL, &[("result", "error")]),
];

/// The ALG's metrics: `counters` from `AlgState::counters()`, `flows` the
/// number of flows tracked now. Known names go into their family; an
/// unknown name `x` is exported as `rgw_alg_x_total`, never dropped.
pub fn alg_samples(counters: &[(&str, u64)], flows: u64) -> Vec<OwnedSample> {
    let get = |n: &str| {
        counters
            .iter()
            .find(|(k, _)| *k == n)
            .map_or(0, |(_, v)| *v)
    };
    let mut out = Vec::with_capacity(counters.len() + 1);
    for &(name, value) in counters {
        let (name, value) = if name == "dropped" {
            // The parts are counted along with the total (see ALG_COUNTERS).
            let parts = get("dropped_out_of_order").saturating_add(get("dropped_incomplete"));
            ("dropped_other", value.saturating_sub(parts))
        } else {
            (name, value)
        };
        out.push(match lookup(ALG_COUNTERS, name) {
            Some((_, fam, labels)) => OwnedSample::counter(fam.name, fam.help, labels, value),
            None => OwnedSample::counter(
                family_name(&format!("rgw_alg_{name}"), Kind::Counter),
                format!("ALG counter {name} (not described yet, see docs/metrics.md)."),
                &[],
                value,
            ),
        });
    }
    out.push(OwnedSample::gauge(
        ALG_FLOWS_ACTIVE,
        ALG_FLOWS_ACTIVE_HELP,
        &[],
        flows as f64,
    ));
    out
}

/// The RGW64 translator's counters and gauges (from `rgw_xlat::XlatStats`
/// and the TUN shell), as plain numbers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rgw64Counters {
    pub packets_4to6: u64,
    pub packets_6to4: u64,
    pub bytes_4to6: u64,
    pub bytes_6to4: u64,
    pub icmp_4to6: u64,
    pub icmp_6to4: u64,
    pub icmp_errors_sent: u64,
    pub icmp_errors_rate_limited: u64,
    pub fragments_in: u64,
    pub fragments_out: u64,
    /// Every drop reason (`rgw_xlat::Drop::ALL`, by `as_str`), zeros included.
    pub drops: Vec<(&'static str, u64)>,
    pub mappings_static: u64,
    pub mappings_dynamic: u64,
    pub mappings_created: u64,
    pub mappings_expired: u64,
    pub mapping_overflows: u64,
    pub tun_read_errors: u64,
    pub tun_write_errors: u64,
}

const X_PACKETS: Family = Family {
    name: "rgw_rgw64_packets_total",
    help: "Packets translated by RGW64 (input packets), by direction: 4to6 (NAT46, and inbound to IPv6-only hosts) or 6to4 (NAT64).",
};
const X_BYTES: Family = Family {
    name: "rgw_rgw64_bytes_total",
    help: "Bytes of the input packets RGW64 translated, by direction.",
};
const X_ICMP: Family = Family {
    name: "rgw_rgw64_icmp_translated_total",
    help: "ICMP messages (info and errors) translated by RGW64, by direction.",
};
const X_ICMP_ERRORS: Family = Family {
    name: "rgw_rgw64_icmp_errors_total",
    help: "ICMP errors originated by the translator (Time Exceeded, Packet Too Big, Fragmentation Needed, ...), by result: sent or rate_limited (not sent, over 100/s).",
};
const X_FRAGMENTS: Family = Family {
    name: "rgw_rgw64_fragments_total",
    help: "Fragments at the translator, by kind: received (input packets that were fragments) or produced (by fragmenting a packet over the MTU).",
};
const X_DROPPED: Family = Family {
    name: "rgw_rgw64_dropped_total",
    help: "Packets the RGW64 translator dropped, by reason (rgw_xlat::Drop).",
};
const X_MAPPING_EVENTS: Family = Family {
    name: "rgw_rgw64_mapping_events_total",
    help: "Dynamic RGW64 bindings by event: created, expired (idle past rgw64.dynamic_timeout), overflow (refused: pool4 or rgw64.max_dynamic full).",
};
const X_TUN_ERRORS: Family = Family {
    name: "rgw_rgw64_tun_errors_total",
    help: "Failed reads and writes on the RGW64 TUN device, by op.",
};
const X_MAPPINGS: &str = "rgw_rgw64_mappings";
const X_MAPPINGS_HELP: &str =
    "RGW64 bindings (IPv4 proxy address to IPv6 address) now, by origin: static (configured) or dynamic.";

/// The RGW64 translator's metrics.
pub fn rgw64_samples(c: &Rgw64Counters) -> Vec<OwnedSample> {
    let mut out = Vec::with_capacity(24 + c.drops.len());
    let mut counter = |fam: &Family, labels: &[(&str, &str)], v: u64| {
        out.push(OwnedSample::counter(fam.name, fam.help, labels, v));
    };
    for (dir, p, b, i) in [
        ("4to6", c.packets_4to6, c.bytes_4to6, c.icmp_4to6),
        ("6to4", c.packets_6to4, c.bytes_6to4, c.icmp_6to4),
    ] {
        counter(&X_PACKETS, &[("direction", dir)], p);
        counter(&X_BYTES, &[("direction", dir)], b);
        counter(&X_ICMP, &[("direction", dir)], i);
    }
    counter(&X_ICMP_ERRORS, &[("result", "sent")], c.icmp_errors_sent);
    counter(
        &X_ICMP_ERRORS,
        &[("result", "rate_limited")],
        c.icmp_errors_rate_limited,
    );
    counter(&X_FRAGMENTS, &[("kind", "received")], c.fragments_in);
    counter(&X_FRAGMENTS, &[("kind", "produced")], c.fragments_out);
    for &(reason, n) in &c.drops {
        counter(&X_DROPPED, &[("reason", reason)], n);
    }
    counter(
        &X_MAPPING_EVENTS,
        &[("event", "created")],
        c.mappings_created,
    );
    counter(
        &X_MAPPING_EVENTS,
        &[("event", "expired")],
        c.mappings_expired,
    );
    counter(
        &X_MAPPING_EVENTS,
        &[("event", "overflow")],
        c.mapping_overflows,
    );
    counter(&X_TUN_ERRORS, &[("op", "read")], c.tun_read_errors);
    counter(&X_TUN_ERRORS, &[("op", "write")], c.tun_write_errors);
    for (origin, n) in [
        ("static", c.mappings_static),
        ("dynamic", c.mappings_dynamic),
    ] {
        out.push(OwnedSample::gauge(
            X_MAPPINGS,
            X_MAPPINGS_HELP,
            &[("origin", origin)],
            n as f64,
        ));
    }
    out
}

// ---------------------------------------------------------------------------
// HTTP shell
// ---------------------------------------------------------------------------

/// Content type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4";

/// Largest request head (request line and headers) read.
const MAX_HEAD: usize = 4096;

#[derive(Debug, Clone, Copy)]
struct Limits {
    /// Time allowed for the whole request head to arrive.
    head_timeout: Duration,
    /// Time allowed for `collect` (nft can hang); the blocking thread is
    /// left to finish on its own.
    collect_timeout: Duration,
    /// Time allowed to write the response.
    write_timeout: Duration,
    /// After the response, unread input is drained this long (at most
    /// `LINGER_BYTES`) so that closing does not reset the connection before
    /// the client has read the response.
    linger: Duration,
    /// Connections handled at once; more wait in the listen backlog.
    max_connections: usize,
}

const LIMITS: Limits = Limits {
    head_timeout: Duration::from_secs(5),
    collect_timeout: Duration::from_secs(10),
    write_timeout: Duration::from_secs(10),
    linger: Duration::from_secs(1),
    max_connections: 64,
};

const LINGER_BYTES: usize = 64 * 1024;

/// Serves `GET /metrics` (the body from `collect`, run on a blocking thread)
/// and `GET /` (a pointer to `/metrics`) on `listener`, one request per
/// connection. Runs until the task is dropped; accept errors are logged and
/// retried.
pub async fn serve(
    listener: TcpListener,
    collect: Arc<dyn Fn() -> String + Send + Sync>,
) -> anyhow::Result<()> {
    serve_with(listener, collect, LIMITS).await
}

async fn serve_with(
    listener: TcpListener,
    collect: Arc<dyn Fn() -> String + Send + Sync>,
    limits: Limits,
) -> anyhow::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, "metrics endpoint ready (GET /metrics)");
    }
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        let permit = Arc::clone(&slots).acquire_owned().await?;
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                warn!(error = %e, "metrics accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let collect = Arc::clone(&collect);
        tokio::spawn(async move {
            if let Err(e) = connection(stream, collect, limits).await {
                debug!(%peer, error = %e, "metrics connection ended");
            }
            drop(permit);
        });
    }
}

async fn connection(
    mut stream: TcpStream,
    collect: Arc<dyn Fn() -> String + Send + Sync>,
    limits: Limits,
) -> io::Result<()> {
    let head =
        match tokio::time::timeout(limits.head_timeout, read_head(&mut stream, MAX_HEAD)).await {
            Ok(head) => head?,
            Err(_) => {
                let r = plain(408, "request head not received in time\n");
                return send(&mut stream, &r, limits).await;
            }
        };
    let reply = match head {
        Head::Closed => return Ok(()),
        Head::TooLarge => plain(431, "request head larger than 4096 bytes\n"),
        Head::Complete(h) => match route(&h) {
            Route::Metrics => metrics(collect, limits).await,
            Route::Index => response(
                200,
                "text/html; charset=utf-8",
                "",
                b"<html><head><title>rgw</title></head><body>\
                  <h1>Realm Gateway</h1><p><a href=\"/metrics\">/metrics</a></p>\
                  </body></html>\n",
            ),
            Route::NotFound => plain(404, "not found; try /metrics\n"),
            Route::MethodNotAllowed => response(
                405,
                "text/plain; charset=utf-8",
                "Allow: GET\r\n",
                b"method not allowed; use GET\n",
            ),
            Route::BadRequest => plain(400, "bad request\n"),
            Route::VersionNotSupported => plain(505, "HTTP/1.0 or HTTP/1.1 only\n"),
        },
    };
    send(&mut stream, &reply, limits).await
}

async fn metrics(collect: Arc<dyn Fn() -> String + Send + Sync>, limits: Limits) -> Vec<u8> {
    // Collecting reads kernel counters by running nft: keep it off the async threads.
    let job = tokio::task::spawn_blocking(move || collect());
    match tokio::time::timeout(limits.collect_timeout, job).await {
        Ok(Ok(body)) => response(200, CONTENT_TYPE, "", body.as_bytes()),
        Ok(Err(e)) => {
            warn!(error = %e, "collecting metrics failed");
            plain(500, "collecting metrics failed\n")
        }
        Err(_) => {
            warn!(timeout = ?limits.collect_timeout, "collecting metrics timed out");
            plain(503, "collecting metrics timed out\n")
        }
    }
}

/// Writes the response, closes our side, then drains what the client still
/// sends for a moment so that it gets the response rather than a reset.
async fn send(stream: &mut TcpStream, reply: &[u8], limits: Limits) -> io::Result<()> {
    let write = async {
        stream.write_all(reply).await?;
        stream.shutdown().await
    };
    tokio::time::timeout(limits.write_timeout, write)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "writing the response timed out"))??;
    let mut sink = [0u8; 4096];
    let mut left = LINGER_BYTES;
    let drain = async {
        while left > 0 {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    };
    let _ = tokio::time::timeout(limits.linger, drain).await;
    Ok(())
}

#[derive(Debug, PartialEq, Eq)]
enum Head {
    /// The request head, up to and including its blank line.
    Complete(Vec<u8>),
    /// No blank line within the first `max` bytes.
    TooLarge,
    /// The client closed before sending a whole head.
    Closed,
}

async fn read_head<R: AsyncRead + Unpin>(r: &mut R, max: usize) -> io::Result<Head> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = r.read(&mut chunk).await?;
        if n == 0 {
            return Ok(Head::Closed);
        }
        let from = buf.len().saturating_sub(3);
        buf.extend_from_slice(&chunk[..n]);
        match head_end(&buf, from) {
            Some(end) if end <= max => {
                buf.truncate(end);
                return Ok(Head::Complete(buf));
            }
            Some(_) => return Ok(Head::TooLarge),
            None if buf.len() >= max => return Ok(Head::TooLarge),
            None => {}
        }
    }
}

/// Index just past the blank line ending the head (`\r\n\r\n`, or a bare
/// `\n\n` from lenient clients), searching from `from`.
fn head_end(buf: &[u8], from: usize) -> Option<usize> {
    (from..buf.len()).find_map(|i| {
        let blank = buf[i] == b'\n'
            && ((i >= 1 && buf[i - 1] == b'\n') || (i >= 2 && &buf[i - 2..i] == b"\n\r"));
        blank.then_some(i + 1)
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Metrics,
    Index,
    NotFound,
    MethodNotAllowed,
    BadRequest,
    VersionNotSupported,
}

/// Decides the response from the request head (sans-IO). Headers are not
/// needed and not checked.
fn route(head: &[u8]) -> Route {
    let Ok(text) = std::str::from_utf8(head) else {
        return Route::BadRequest;
    };
    // RFC 9112 §2.2: ignore empty lines before the request line.
    let text = text.trim_start_matches(['\r', '\n']);
    let line = text.split('\n').next().unwrap_or("");
    let line = line.strip_suffix('\r').unwrap_or(line);
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Route::BadRequest;
    };
    if method.is_empty() || !method.bytes().all(is_tchar) {
        return Route::BadRequest;
    }
    match version {
        "HTTP/1.1" | "HTTP/1.0" => {}
        v if v.starts_with("HTTP/") => return Route::VersionNotSupported,
        _ => return Route::BadRequest,
    }
    let Some(path) = request_path(target) else {
        return Route::BadRequest;
    };
    match (path, method) {
        ("/metrics", "GET") => Route::Metrics,
        ("/", "GET") => Route::Index,
        ("/metrics" | "/", _) => Route::MethodNotAllowed,
        _ => Route::NotFound,
    }
}

/// The path of an origin-form (`/metrics?x=1`) or absolute-form
/// (`http://host:9464/metrics`) request target, without query or fragment.
fn request_path(target: &str) -> Option<&str> {
    let rest = if target.starts_with('/') {
        target
    } else {
        let lower = target.get(..8).unwrap_or(target).to_ascii_lowercase();
        let skip = if lower.starts_with("http://") {
            7
        } else if lower.starts_with("https://") {
            8
        } else {
            return None;
        };
        let after = target.get(skip..)?;
        match after.find('/') {
            Some(i) => &after[i..],
            None => "/",
        }
    };
    let path = rest.split(['?', '#']).next().unwrap_or("");
    Some(if path.is_empty() { "/" } else { path })
}

/// RFC 9110 token characters.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

fn plain(status: u16, body: &str) -> Vec<u8> {
    response(status, "text/plain; charset=utf-8", "", body.as_bytes())
}

/// A whole HTTP/1.1 response; `extra` holds additional header lines, each
/// ending in CRLF.
fn response(status: u16, content_type: &str, extra: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\n\
         Content-Length: {}\r\n{extra}Connection: close\r\n\r\n",
        reason(status),
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    // ---- a tiny checker of the text format ------------------------------

    fn is_metric_name(s: &str) -> bool {
        let mut c = s.chars();
        matches!(c.next(), Some(f) if f.is_ascii_alphabetic() || f == '_' || f == ':')
            && c.all(|x| x.is_ascii_alphanumeric() || x == '_' || x == ':')
    }

    fn is_label_name(s: &str) -> bool {
        let mut c = s.chars();
        matches!(c.next(), Some(f) if f.is_ascii_alphabetic() || f == '_')
            && c.all(|x| x.is_ascii_alphanumeric() || x == '_')
    }

    fn is_value(s: &str) -> bool {
        matches!(s, "NaN" | "+Inf" | "-Inf") || s.parse::<f64>().is_ok_and(f64::is_finite)
    }

    /// Splits `name{labels} value [timestamp]`; returns the name and the
    /// label pairs (values unescaped).
    fn parse_sample(line: &str) -> Result<(String, Vec<(String, String)>), String> {
        let end = line.find(['{', ' ']).ok_or("no value")?;
        let name = &line[..end];
        if !is_metric_name(name) {
            return Err(format!("bad metric name {name:?}"));
        }
        let mut rest = &line[end..];
        let mut labels: Vec<(String, String)> = Vec::new();
        if let Some(r) = rest.strip_prefix('{') {
            rest = r;
            loop {
                if let Some(r) = rest.strip_prefix('}') {
                    rest = r;
                    break;
                }
                let eq = rest.find('=').ok_or("label without =")?;
                let lname = &rest[..eq];
                if !is_label_name(lname) {
                    return Err(format!("bad label name {lname:?}"));
                }
                if labels.iter().any(|(k, _)| k == lname) {
                    return Err(format!("repeated label {lname:?}"));
                }
                rest = rest[eq + 1..]
                    .strip_prefix('"')
                    .ok_or("label value not quoted")?;
                let mut value = String::new();
                let mut chars = rest.char_indices();
                let close = loop {
                    match chars.next().ok_or("unterminated label value")? {
                        (i, '"') => break i,
                        (_, '\\') => match chars.next().ok_or("dangling escape")?.1 {
                            '\\' => value.push('\\'),
                            '"' => value.push('"'),
                            'n' => value.push('\n'),
                            c => return Err(format!("bad escape \\{c}")),
                        },
                        (_, c) => value.push(c),
                    }
                };
                labels.push((lname.to_string(), value));
                rest = &rest[close + 1..];
                if let Some(r) = rest.strip_prefix(',') {
                    rest = r;
                } else if !rest.starts_with('}') {
                    return Err("expected , or } after a label".into());
                }
            }
        }
        let fields: Vec<&str> = rest
            .strip_prefix(' ')
            .ok_or("no space before value")?
            .split(' ')
            .collect();
        match fields.as_slice() {
            [v] if is_value(v) => {}
            [v, ts] if is_value(v) && ts.parse::<i64>().is_ok() => {}
            _ => return Err(format!("bad value part {rest:?}")),
        }
        Ok((name.to_string(), labels))
    }

    /// Checks the text format and our grouping rules: valid names, label
    /// syntax and escapes, values; at most one HELP and TYPE per family,
    /// before its samples; each family one contiguous block; no repeated
    /// series. Returns the number of samples.
    fn check_exposition(text: &str) -> Result<usize, String> {
        if !text.is_empty() && !text.ends_with('\n') {
            return Err("no final newline".into());
        }
        let mut done: HashSet<String> = HashSet::new();
        let mut current: Option<String> = None;
        let mut help: HashSet<String> = HashSet::new();
        let mut types: HashSet<String> = HashSet::new();
        let mut sampled: HashSet<String> = HashSet::new();
        let mut series: HashSet<String> = HashSet::new();
        let mut count = 0;
        for (no, line) in text.lines().enumerate() {
            let err = |m: String| format!("line {}: {m}: {line:?}", no + 1);
            if line.is_empty() {
                continue;
            }
            let family = if let Some(c) = line.strip_prefix('#') {
                let words: Vec<&str> = c.trim_start().splitn(3, ' ').collect();
                match words.as_slice() {
                    ["HELP", name, text] => {
                        if !is_metric_name(name) {
                            return Err(err("bad name in HELP".into()));
                        }
                        let mut it = text.chars();
                        while let Some(ch) = it.next() {
                            if ch == '\\' && !matches!(it.next(), Some('\\' | 'n')) {
                                return Err(err("bad escape in HELP".into()));
                            }
                        }
                        if !help.insert(name.to_string()) || sampled.contains(*name) {
                            return Err(err("HELP repeated or after samples".into()));
                        }
                        name.to_string()
                    }
                    ["TYPE", name, kind] => {
                        if !is_metric_name(name)
                            || !matches!(
                                *kind,
                                "counter" | "gauge" | "histogram" | "summary" | "untyped"
                            )
                        {
                            return Err(err("bad TYPE".into()));
                        }
                        if !types.insert(name.to_string()) || sampled.contains(*name) {
                            return Err(err("TYPE repeated or after samples".into()));
                        }
                        name.to_string()
                    }
                    _ => continue, // another comment
                }
            } else {
                let (name, mut labels) = parse_sample(line).map_err(err)?;
                labels.sort();
                if !series.insert(format!("{name}{labels:?}")) {
                    return Err(err("repeated series".into()));
                }
                sampled.insert(name.clone());
                count += 1;
                name
            };
            if current.as_ref() != Some(&family) {
                if done.contains(&family) {
                    return Err(err(format!("family {family} split in two blocks")));
                }
                if let Some(prev) = current.take() {
                    done.insert(prev);
                }
                current = Some(family);
            }
        }
        Ok(count)
    }

    #[test]
    fn checker_rejects_broken_text() {
        for bad in [
            "a 1",                              // no final newline
            "1a 1\n",                           // name
            "a{1b=\"x\"} 1\n",                  // label name
            "a{b=\"x\\t\"} 1\n",                // escape
            "a{b=\"x} 1\n",                     // unterminated
            "a{b=\"x\",b=\"y\"} 1\n",           // repeated label
            "a one\n",                          // value
            "a 1\nb 1\na 2\n",                  // split family
            "a 1\n# TYPE a counter\n",          // TYPE after samples
            "# TYPE a gauge\n# TYPE a gauge\n", // TYPE twice
            "a{b=\"1\"} 1\na{b=\"1\"} 2\n",     // repeated series
            "# HELP a x \\q\n",                 // HELP escape
        ] {
            assert!(check_exposition(bad).is_err(), "accepted {bad:?}");
        }
        assert_eq!(
            check_exposition("# HELP a x\n# TYPE a gauge\na{b=\"\\\"\",c=\"\\n\\\\\",} 1.5 17\n"),
            Ok(1)
        );
    }

    // ---- renderer --------------------------------------------------------

    fn s<'a>(
        name: &'a str,
        kind: Kind,
        labels: &'a [(&'a str, &'a str)],
        value: f64,
    ) -> Sample<'a> {
        Sample {
            name,
            help: "h",
            kind,
            labels,
            value,
        }
    }

    #[test]
    fn renders_families_with_help_type_and_total() {
        let text = render(&[
            s("rgw_claims", Kind::Counter, &[], 3.0),
            s("rgw_pool_size", Kind::Gauge, &[], 6.0),
            s("rgw_x_total", Kind::Counter, &[("a", "b")], 1.0),
        ]);
        assert_eq!(
            text,
            "# HELP rgw_claims_total h\n# TYPE rgw_claims_total counter\nrgw_claims_total 3\n\
             # HELP rgw_pool_size h\n# TYPE rgw_pool_size gauge\nrgw_pool_size 6\n\
             # HELP rgw_x_total h\n# TYPE rgw_x_total counter\nrgw_x_total{a=\"b\"} 1\n"
        );
        assert_eq!(check_exposition(&text), Ok(3));
        assert_eq!(render(&[]), "");
    }

    #[test]
    fn escapes_label_values_and_help() {
        let text = render(&[Sample {
            name: "m",
            help: "back\\slash\nnew \"quoted\"",
            kind: Kind::Gauge,
            labels: &[("l", "a\\b\"c\nd")],
            value: 1.0,
        }]);
        assert_eq!(
            text,
            "# HELP m back\\\\slash\\nnew \"quoted\"\n# TYPE m gauge\nm{l=\"a\\\\b\\\"c\\nd\"} 1\n"
        );
        assert_eq!(check_exposition(&text), Ok(1));
        // The checker reads the value back unescaped.
        let (_, labels) = parse_sample(text.lines().nth(2).unwrap()).unwrap();
        assert_eq!(labels, vec![("l".to_string(), "a\\b\"c\nd".to_string())]);
    }

    #[test]
    fn groups_interleaved_families_and_sorts_them() {
        let text = render(&[
            s("b_total", Kind::Counter, &[("k", "1")], 1.0),
            s("a", Kind::Gauge, &[("k", "1")], 2.0),
            s("b", Kind::Counter, &[("k", "2")], 3.0),
            s("a", Kind::Gauge, &[("k", "2")], 4.0),
        ]);
        assert_eq!(
            text,
            "# HELP a h\n# TYPE a gauge\na{k=\"1\"} 2\na{k=\"2\"} 4\n\
             # HELP b_total h\n# TYPE b_total counter\nb_total{k=\"1\"} 1\nb_total{k=\"2\"} 3\n"
        );
        assert_eq!(text.matches("# TYPE").count(), 2);
        assert_eq!(check_exposition(&text), Ok(4));
        // Same families given in another order: the same blocks.
        let again = render(&[
            s("a", Kind::Gauge, &[("k", "1")], 2.0),
            s("b", Kind::Counter, &[("k", "1")], 1.0),
            s("a", Kind::Gauge, &[("k", "2")], 4.0),
            s("b_total", Kind::Counter, &[("k", "2")], 3.0),
        ]);
        assert_eq!(again, text);
    }

    #[test]
    fn sanitises_names_and_drops_repeats() {
        let text = render(&[
            s(
                "9bad-name",
                Kind::Gauge,
                &[("le-x", "1"), ("le-x", "2"), ("", "e")],
                1.0,
            ),
            s("9bad-name", Kind::Gauge, &[("le-x", "1"), ("", "e")], 2.0),
            s("", Kind::Counter, &[], 5.0),
        ]);
        assert_eq!(
            text,
            "# HELP _9bad_name h\n# TYPE _9bad_name gauge\n_9bad_name{le_x=\"1\",_=\"e\"} 1\n\
             # HELP __total h\n# TYPE __total counter\n__total 5\n"
        );
        assert_eq!(check_exposition(&text), Ok(2));
    }

    #[test]
    fn formats_values() {
        let cases = [
            (0.0, "0"),
            (-0.0, "0"),
            (42.0, "42"),
            (-3.0, "-3"),
            (0.25, "0.25"),
            (1e300, "1e300"),
            (1e-7, "1e-7"),
            (f64::NAN, "NaN"),
            (f64::INFINITY, "+Inf"),
            (f64::NEG_INFINITY, "-Inf"),
            (9_007_199_254_740_993.0, "9007199254740992.0"),
        ];
        for (v, want) in cases {
            assert_eq!(format_value(v), want, "{v}");
            assert!(is_value(want), "{want}");
        }
        let text = render(&[s("g", Kind::Gauge, &[], f64::NAN)]);
        assert_eq!(check_exposition(&text), Ok(1));
    }

    #[test]
    fn no_help_line_for_empty_help() {
        let text = render(&[Sample {
            name: "g",
            help: "",
            kind: Kind::Gauge,
            labels: &[],
            value: 1.0,
        }]);
        assert_eq!(text, "# TYPE g gauge\ng 1\n");
    }

    #[test]
    fn owned_samples_render_like_borrowed_ones() {
        let owned = vec![
            OwnedSample::counter("c", "h", &[("k", "v")], 7),
            OwnedSample::gauge("g", "h", &[], 0.5),
        ];
        let borrowed = [
            s("c", Kind::Counter, &[("k", "v")], 7.0),
            s("g", Kind::Gauge, &[], 0.5),
        ];
        assert_eq!(render_owned(&owned), render(&borrowed));
    }

    // ---- rgw's families --------------------------------------------------

    /// `Metrics::snapshot()` names as of this module (rgw/src/metrics.rs).
    const CURRENT: [&str; 41] = [
        "dns_queries_public",
        "dns_queries_private",
        "dns_answers_static",
        "dns_answers_allocated",
        "dns_nodata",
        "dns_nxdomain",
        "dns_refused",
        "dns_formerr",
        "dns_notimp",
        "dns_badvers",
        "dns_denied_answered",
        "dns_dropped_malformed",
        "dns_dropped_not_query",
        "dns_dropped_denied",
        "dns_forwarded",
        "dns_forward_failed",
        "reservations",
        "denied_exhausted",
        "denied_host_limit",
        "denied_dataplane",
        "claims",
        "claim_rejected",
        "gate_unparsable",
        "gate_ttl_expiring",
        "expiries",
        "dataplane_errors",
        "dns_truncated",
        "dns_alias",
        "denied_admission",
        "admission_rate_limited",
        "admission_resolver_limit",
        "admission_reputation_fqdn",
        "admission_reputation_sfqdn",
        "admission_reputation_shared",
        "antispoof_tc",
        "antispoof_alias_issued",
        "antispoof_alias_followed",
        "antispoof_alias_forged",
        "antispoof_alias_expired",
        "antispoof_alias_mismatch",
        "ecs_binding_dropped",
    ];

    const KERNEL: [&str; 3] = ["unreserved", "no_daemon", "forward_drop"];

    fn all_current() -> String {
        let counters: Vec<(&'static str, u64)> = CURRENT
            .iter()
            .enumerate()
            .map(|(i, n)| (*n, i as u64))
            .collect();
        let kernel: Vec<(&'static str, Option<u64>)> =
            KERNEL.iter().map(|n| (*n, Some(9))).collect();
        let pool = PoolGauges {
            size: 6,
            free: 3,
            exclusive: 1,
            shared: 2,
            pending: 4,
        };
        gateway_metrics(&counters, pool, &kernel)
    }

    /// Family names in a rendered text (from its TYPE lines).
    fn families(text: &str) -> Vec<String> {
        text.lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .map(|l| l.split(' ').next().unwrap().to_string())
            .collect()
    }

    #[test]
    fn every_current_counter_maps_to_a_family() {
        let mapped: Vec<&str> = COUNTERS.iter().map(|r| r.0).collect();
        assert_eq!(
            mapped, CURRENT,
            "COUNTERS rows and the current counter list differ"
        );
        let kernel: Vec<&str> = KERNEL_COUNTERS.iter().map(|r| r.0).collect();
        assert_eq!(kernel, KERNEL);
        // No two rows give the same series.
        let mut seen = HashSet::new();
        for (name, fam, labels) in COUNTERS.iter().chain(KERNEL_COUNTERS) {
            assert!(seen.insert((fam.name, *labels)), "{name} repeats a series");
            assert!(fam.name.starts_with("rgw_") && fam.name.ends_with("_total"));
            assert!(is_metric_name(fam.name));
            assert!(labels.iter().all(|(k, _)| is_label_name(k)));
        }
        let text = all_current();
        for (i, name) in CURRENT.iter().enumerate() {
            let (_, fam, labels) = lookup(COUNTERS, name).unwrap();
            let line = format!("{}{} {i}\n", fam.name, render_labels(labels));
            assert!(text.contains(&line), "{name}: no line {line:?} in\n{text}");
        }
    }

    #[test]
    fn gateway_families_are_the_documented_ones() {
        let text = all_current();
        assert_eq!(check_exposition(&text), Ok(41 + 5 + 3));
        assert_eq!(
            families(&text),
            [
                "rgw_admission_refused_total",
                "rgw_antispoof_total",
                "rgw_claims_rejected_total",
                "rgw_claims_total",
                "rgw_dataplane_errors_total",
                "rgw_dns_dropped_total",
                "rgw_dns_forward_failed_total",
                "rgw_dns_forwarded_total",
                "rgw_dns_queries_total",
                "rgw_dns_responses_total",
                "rgw_ecs_binding_dropped_total",
                "rgw_expiries_total",
                "rgw_gate_ttl_expiring_total",
                "rgw_gate_unparsable_total",
                "rgw_kernel_dropped_packets_total",
                "rgw_pending_reservations",
                "rgw_pool_addresses",
                "rgw_pool_size",
                "rgw_reservations_denied_total",
                "rgw_reservations_total",
            ]
        );
        for line in [
            "rgw_dns_queries_total{view=\"public\"} 0\n",
            "rgw_dns_queries_total{view=\"private\"} 1\n",
            "rgw_dns_responses_total{outcome=\"denied\"} 10\n",
            "rgw_dns_dropped_total{reason=\"not_query\"} 12\n",
            "rgw_reservations_denied_total{reason=\"host_limit\"} 18\n",
            "rgw_pool_size 6\n",
            "rgw_pool_addresses{state=\"free\"} 3\n",
            "rgw_pool_addresses{state=\"exclusive\"} 1\n",
            "rgw_pool_addresses{state=\"shared\"} 2\n",
            "rgw_pending_reservations 4\n",
            "rgw_kernel_dropped_packets_total{reason=\"unreserved\"} 9\n",
            "rgw_kernel_dropped_packets_total{reason=\"no_daemon\"} 9\n",
            "rgw_kernel_dropped_packets_total{reason=\"forward\"} 9\n",
            "# TYPE rgw_pool_addresses gauge\n",
            "# TYPE rgw_claims_total counter\n",
        ] {
            assert!(text.contains(line), "no {line:?} in\n{text}");
        }
        // docs/metrics.md documents every family.
        let doc = include_str!("../../docs/metrics.md");
        for f in families(&text) {
            assert!(
                doc.contains(&format!("`{f}`")),
                "{f} missing in docs/metrics.md"
            );
        }
    }

    /// `AlgState::counters()` names, in its order.
    const ALG_CURRENT: [&str; 27] = [
        "packets",
        "unparsed",
        "not_alg",
        "flows_created",
        "flows_expired",
        "flows_evicted",
        "flows_over_limit",
        "no_public_addr",
        "rewrites",
        "packets_replaced",
        "pinholes_requested",
        "port_alloc_failed",
        "malformed",
        "holds",
        "hold_overflows",
        "dropped",
        "dropped_out_of_order",
        "dropped_incomplete",
        "replays",
        "duplicates",
        "build_errors",
        "pinholes_written",
        "pinhole_errors",
        "ct_liberal",
        "ct_liberal_errors",
        "pinholes_recycled",
        "pinholes6_written",
    ];

    fn alg_text() -> String {
        // Values 100 + index, except the drops: 10 in all, of which 3 out
        // of order and 4 incomplete, so `other` must come out as 3.
        let counters: Vec<(&str, u64)> = ALG_CURRENT
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let v = match *n {
                    "dropped" => 10,
                    "dropped_out_of_order" => 3,
                    "dropped_incomplete" => 4,
                    _ => 100 + i as u64,
                };
                (*n, v)
            })
            .collect();
        render_owned(&alg_samples(&counters, 7))
    }

    fn rgw64_text() -> String {
        let c = Rgw64Counters {
            packets_4to6: 1,
            packets_6to4: 2,
            bytes_4to6: 3,
            bytes_6to4: 4,
            icmp_4to6: 5,
            icmp_6to4: 6,
            icmp_errors_sent: 7,
            icmp_errors_rate_limited: 8,
            fragments_in: 9,
            fragments_out: 10,
            drops: vec![("truncated", 0), ("dst_not_mapped", 11)],
            mappings_static: 12,
            mappings_dynamic: 13,
            mappings_created: 14,
            mappings_expired: 15,
            mapping_overflows: 16,
            tun_read_errors: 17,
            tun_write_errors: 18,
        };
        render_owned(&rgw64_samples(&c))
    }

    #[test]
    fn alg_counters_map_to_families() {
        // Every current counter has a row (`dropped` through `dropped_other`).
        for name in ALG_CURRENT {
            let row = if name == "dropped" {
                "dropped_other"
            } else {
                name
            };
            assert!(lookup(ALG_COUNTERS, row).is_some(), "{name} has no row");
        }
        assert_eq!(ALG_COUNTERS.len(), ALG_CURRENT.len());
        let mut seen = HashSet::new();
        for (name, fam, labels) in ALG_COUNTERS {
            assert!(seen.insert((fam.name, *labels)), "{name} repeats a series");
            assert!(fam.name.starts_with("rgw_alg_") && fam.name.ends_with("_total"));
            assert!(is_metric_name(fam.name));
        }
        let text = alg_text();
        assert_eq!(check_exposition(&text), Ok(27 + 1));
        for line in [
            "# TYPE rgw_alg_flows gauge\nrgw_alg_flows 7\n",
            "rgw_alg_packets_total 100\n",
            "rgw_alg_rewrites_total 108\n",
            "rgw_alg_pinholes_total{result=\"written\"} 121\n",
            "rgw_alg_pinholes_total{result=\"error\"} 122\n",
            "rgw_alg_flows_total{event=\"created\"} 103\n",
            "rgw_alg_flows_total{event=\"evicted\"} 105\n",
            "rgw_alg_untracked_packets_total{reason=\"over_limit\"} 106\n",
            "rgw_alg_messages_total{outcome=\"malformed\"} 112\n",
            "rgw_alg_dropped_total{reason=\"other\"} 3\n",
            "rgw_alg_dropped_total{reason=\"out_of_order\"} 3\n",
            "rgw_alg_dropped_total{reason=\"incomplete\"} 4\n",
            "rgw_alg_conntrack_liberal_total{result=\"marked\"} 123\n",
            "# TYPE rgw_alg_rewrites_total counter\n",
        ] {
            assert!(text.contains(line), "no {line:?} in\n{text}");
        }
        // The active flows are a gauge, not a counter of the fallback.
        assert!(!text.contains("flows_active"));
        assert!(!text.contains("not described yet"));
        // Parts larger than the total (a racy read) give 0, not a wrap.
        let t = render_owned(&alg_samples(
            &[("dropped", 1), ("dropped_out_of_order", 5)],
            0,
        ));
        assert!(
            t.contains("rgw_alg_dropped_total{reason=\"other\"} 0\n"),
            "{t}"
        );
        // An unknown ALG counter is exported, not dropped.
        let t = render_owned(&alg_samples(&[("new_thing", 4)], 0));
        assert!(t.contains("rgw_alg_new_thing_total 4\n"), "{t}");
    }

    #[test]
    fn rgw64_families() {
        let text = rgw64_text();
        assert_eq!(check_exposition(&text), Ok(6 + 2 + 2 + 2 + 3 + 2 + 2));
        for line in [
            "rgw_rgw64_packets_total{direction=\"4to6\"} 1\n",
            "rgw_rgw64_packets_total{direction=\"6to4\"} 2\n",
            "rgw_rgw64_bytes_total{direction=\"6to4\"} 4\n",
            "rgw_rgw64_icmp_translated_total{direction=\"4to6\"} 5\n",
            "rgw_rgw64_icmp_errors_total{result=\"sent\"} 7\n",
            "rgw_rgw64_icmp_errors_total{result=\"rate_limited\"} 8\n",
            "rgw_rgw64_fragments_total{kind=\"received\"} 9\n",
            "rgw_rgw64_fragments_total{kind=\"produced\"} 10\n",
            // Zero drops are series too (they exist before the first drop).
            "rgw_rgw64_dropped_total{reason=\"truncated\"} 0\n",
            "rgw_rgw64_dropped_total{reason=\"dst_not_mapped\"} 11\n",
            "# TYPE rgw_rgw64_mappings gauge\n",
            "rgw_rgw64_mappings{origin=\"static\"} 12\n",
            "rgw_rgw64_mappings{origin=\"dynamic\"} 13\n",
            "rgw_rgw64_mapping_events_total{event=\"created\"} 14\n",
            "rgw_rgw64_mapping_events_total{event=\"expired\"} 15\n",
            "rgw_rgw64_mapping_events_total{event=\"overflow\"} 16\n",
            "rgw_rgw64_tun_errors_total{op=\"read\"} 17\n",
            "rgw_rgw64_tun_errors_total{op=\"write\"} 18\n",
        ] {
            assert!(text.contains(line), "no {line:?} in\n{text}");
        }
    }

    #[test]
    fn alg_and_rgw64_families_are_documented() {
        let doc = include_str!("../../docs/metrics.md");
        let text = format!("{}{}", alg_text(), rgw64_text());
        let fams = families(&text);
        assert_eq!(fams.len(), 14 + 9);
        for f in fams {
            assert!(
                doc.contains(&format!("`{f}`")),
                "{f} missing in docs/metrics.md"
            );
        }
        // Every label value is documented too.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (_, labels) = parse_sample(line).unwrap();
            for (_, v) in labels {
                assert!(
                    doc.contains(&format!("`{v}`")),
                    "label value {v} missing in docs/metrics.md"
                );
            }
        }
    }

    /// The sample dashboard is valid JSON, its panels have unique ids, and
    /// every `rgw_…` name in a query is a documented family; the ALG and
    /// RGW64 panels are there.
    #[test]
    fn grafana_dashboard_uses_documented_metrics() {
        let doc = include_str!("../../docs/metrics.md");
        let raw = include_str!("../../packaging/grafana/rgw-dashboard.json");
        let d: serde_json::Value = serde_json::from_str(raw).expect("dashboard JSON");
        let panels = d["panels"].as_array().expect("panels");
        let mut ids = HashSet::new();
        let mut names = HashSet::new();
        for p in panels {
            assert!(
                ids.insert(p["id"].as_u64().expect("panel id")),
                "repeated id"
            );
            for t in p["targets"].as_array().into_iter().flatten() {
                let expr = t["expr"].as_str().expect("expr");
                let mut rest = expr;
                while let Some(i) = rest.find("rgw_") {
                    let tail = &rest[i..];
                    let end = tail
                        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                        .unwrap_or(tail.len());
                    names.insert(tail[..end].to_string());
                    rest = &tail[end..];
                }
            }
        }
        for n in &names {
            assert!(
                doc.contains(&format!("`{n}`")),
                "{n} (dashboard) missing in docs/metrics.md"
            );
        }
        for n in [
            "rgw_alg_rewrites_total",
            "rgw_alg_pinholes_total",
            "rgw_alg_flows",
            "rgw_alg_flows_total",
            "rgw_alg_dropped_total",
            "rgw_rgw64_packets_total",
            "rgw_rgw64_dropped_total",
            "rgw_rgw64_mappings",
        ] {
            assert!(names.contains(n), "no dashboard panel queries {n}");
        }
    }

    #[test]
    fn unknown_counters_are_exported_not_dropped() {
        let text = gateway_metrics(
            &[("alpha_beta", 5), ("claims", 2), ("gamma_total", 1)],
            PoolGauges::default(),
            &[
                ("unreserved", None),
                ("new_counter", Some(4)),
                ("forward_drop", Some(1)),
            ],
        );
        assert!(text.contains("# TYPE rgw_alpha_beta_total counter\nrgw_alpha_beta_total 5\n"));
        assert!(text.contains("# HELP rgw_alpha_beta_total rgw counter alpha_beta "));
        assert!(text.contains("rgw_gamma_total 1\n"));
        assert!(text.contains("rgw_claims_total 2\n"));
        assert!(text.contains("rgw_kernel_new_counter_packets_total 4\n"));
        assert!(text.contains("rgw_kernel_dropped_packets_total{reason=\"forward\"} 1\n"));
        // Unreadable kernel counter: no series rather than a made-up 0.
        assert!(!text.contains("reason=\"unreserved\""));
        assert_eq!(check_exposition(&text), Ok(3 + 5 + 2));
    }

    // ---- HTTP: sans-IO parts ---------------------------------------------

    #[test]
    fn routes_requests() {
        let cases: &[(&[u8], Route)] = &[
            (b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", Route::Metrics),
            (b"GET /metrics HTTP/1.0\r\n\r\n", Route::Metrics),
            (b"GET /metrics?name[]=x HTTP/1.1\r\n\r\n", Route::Metrics),
            (b"\r\nGET /metrics HTTP/1.1\n\n", Route::Metrics),
            (
                b"GET http://gw:9464/metrics HTTP/1.1\r\n\r\n",
                Route::Metrics,
            ),
            (b"GET HTTP://gw HTTP/1.1\r\n\r\n", Route::Index),
            (b"GET / HTTP/1.1\r\n\r\n", Route::Index),
            (b"GET /?x HTTP/1.1\r\n\r\n", Route::Index),
            (b"GET /metrics/ HTTP/1.1\r\n\r\n", Route::NotFound),
            (b"GET /nope HTTP/1.1\r\n\r\n", Route::NotFound),
            (b"POST /nope HTTP/1.1\r\n\r\n", Route::NotFound),
            (b"POST /metrics HTTP/1.1\r\n\r\n", Route::MethodNotAllowed),
            (b"HEAD / HTTP/1.1\r\n\r\n", Route::MethodNotAllowed),
            (b"get /metrics HTTP/1.1\r\n\r\n", Route::MethodNotAllowed),
            (b"GET /metrics HTTP/2.0\r\n\r\n", Route::VersionNotSupported),
            (b"GET /metrics http/1.1\r\n\r\n", Route::BadRequest),
            (b"GET /metrics\r\n\r\n", Route::BadRequest),
            (b"GET  /metrics HTTP/1.1\r\n\r\n", Route::BadRequest),
            (b"GET /metrics HTTP/1.1 x\r\n\r\n", Route::BadRequest),
            (b"G(T /metrics HTTP/1.1\r\n\r\n", Route::BadRequest),
            (b"GET * HTTP/1.1\r\n\r\n", Route::BadRequest),
            (b"GET ftp://x/ HTTP/1.1\r\n\r\n", Route::BadRequest),
            (b"GET /\xff HTTP/1.1\r\n\r\n", Route::BadRequest),
            (b"\r\n\r\n", Route::BadRequest),
            (b"", Route::BadRequest),
        ];
        for (head, want) in cases {
            assert_eq!(route(head), *want, "{:?}", String::from_utf8_lossy(head));
        }
    }

    #[test]
    fn finds_the_end_of_the_head() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n\r\nbody", 0), Some(18));
        assert_eq!(head_end(b"GET / HTTP/1.1\n\n", 0), Some(16));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nA: b\r\n", 0), None);
        assert_eq!(head_end(b"\n", 0), None);
        assert_eq!(head_end(b"", 0), None);
    }

    #[tokio::test]
    async fn reads_heads_in_pieces_and_caps_them() {
        // One byte at a time, across the read boundary.
        let req = b"GET /metrics HTTP/1.1\r\nHost: a\r\n\r\nignored";
        let mut r = tokio::io::BufReader::with_capacity(1, &req[..]);
        let head = read_head(&mut r, MAX_HEAD).await.unwrap();
        assert_eq!(head, Head::Complete(req[..34].to_vec()));
        // Exactly the cap is fine, one byte more is not.
        let mut exact = vec![b'a'; MAX_HEAD - 4];
        exact.extend_from_slice(b"\r\n\r\n");
        let head = read_head(&mut &exact[..], MAX_HEAD).await.unwrap();
        assert_eq!(head, Head::Complete(exact.clone()));
        let mut over = vec![b'a'; MAX_HEAD - 3];
        over.extend_from_slice(b"\r\n\r\n");
        assert_eq!(
            read_head(&mut &over[..], MAX_HEAD).await.unwrap(),
            Head::TooLarge
        );
        let endless = vec![b'a'; 3 * MAX_HEAD];
        assert_eq!(
            read_head(&mut &endless[..], MAX_HEAD).await.unwrap(),
            Head::TooLarge
        );
        assert_eq!(
            read_head(&mut &b"GET / HT"[..], MAX_HEAD).await.unwrap(),
            Head::Closed
        );
    }

    // ---- HTTP: the server, over real sockets -----------------------------

    type Collect = Arc<dyn Fn() -> String + Send + Sync>;

    const BODY: &str = "# TYPE rgw_claims_total counter\nrgw_claims_total 1\n";

    async fn start(collect: Collect, limits: Limits) -> (SocketAddr, tokio::task::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            serve_with(listener, collect, limits).await.unwrap();
        });
        (addr, task)
    }

    fn fixed() -> Collect {
        Arc::new(|| BODY.to_string())
    }

    /// Sends `request` and reads until the server closes.
    async fn exchange(addr: SocketAddr, request: &[u8]) -> String {
        let run = async {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(request).await.unwrap();
            let mut buf = Vec::new();
            s.read_to_end(&mut buf).await.unwrap();
            String::from_utf8(buf).unwrap()
        };
        tokio::time::timeout(Duration::from_secs(10), run)
            .await
            .expect("server did not answer")
    }

    fn split(reply: &str) -> (&str, &str) {
        reply
            .split_once("\r\n\r\n")
            .expect("no blank line after headers")
    }

    fn status(reply: &str) -> u16 {
        reply
            .strip_prefix("HTTP/1.1 ")
            .and_then(|r| r.get(..3))
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("bad status line in {reply:?}"))
    }

    #[tokio::test]
    async fn serves_metrics_and_errors_over_tcp() {
        let (addr, task) = start(fixed(), LIMITS).await;

        let reply = exchange(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        let (head, body) = split(&reply);
        assert_eq!(status(&reply), 200);
        assert!(
            head.contains("\r\nContent-Type: text/plain; version=0.0.4\r\n"),
            "{head}"
        );
        assert!(head.contains(&format!("\r\nContent-Length: {}\r\n", BODY.len())));
        assert!(head.contains("\r\nConnection: close"));
        assert_eq!(body, BODY);
        assert_eq!(check_exposition(body), Ok(1));

        let reply = exchange(addr, b"GET / HTTP/1.0\r\n\r\n").await;
        assert_eq!(status(&reply), 200);
        assert!(split(&reply).1.contains("href=\"/metrics\""));

        for (req, want) in [
            (&b"GET /other HTTP/1.1\r\n\r\n"[..], 404),
            (
                b"POST /metrics HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
                405,
            ),
            (b"DELETE / HTTP/1.1\r\n\r\n", 405),
            (b"garbage\r\n\r\n", 400),
            (b"\x00\xff\xfe\r\n\r\n", 400),
            (b"GET /metrics HTTP/3\r\n\r\n", 505),
        ] {
            let reply = exchange(addr, req).await;
            assert_eq!(status(&reply), want, "{:?}", String::from_utf8_lossy(req));
            assert!(reply.contains("\r\nConnection: close\r\n"));
            if want == 405 {
                assert!(reply.contains("\r\nAllow: GET\r\n"));
            }
        }

        // A head over 4 KiB, still being sent: 431, not a reset.
        let mut big = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
        big.resize(5000, b'a');
        assert_eq!(status(&exchange(addr, &big).await), 431);

        // A head in pieces.
        let mut s = TcpStream::connect(addr).await.unwrap();
        for piece in [
            &b"GET /met"[..],
            b"rics HTTP/1.1\r\n",
            b"Host: x\r",
            b"\n\r\n",
        ] {
            s.write_all(piece).await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut reply = String::new();
        s.read_to_string(&mut reply).await.unwrap();
        assert_eq!(status(&reply), 200);

        // A client that goes away without a request changes nothing.
        drop(TcpStream::connect(addr).await.unwrap());
        assert_eq!(
            status(&exchange(addr, b"GET /metrics HTTP/1.1\r\n\r\n").await),
            200
        );

        assert!(!task.is_finished());
        task.abort();
    }

    #[tokio::test]
    async fn slow_heads_time_out() {
        let limits = Limits {
            head_timeout: Duration::from_millis(200),
            ..LIMITS
        };
        let (addr, task) = start(fixed(), limits).await;
        let started = std::time::Instant::now();
        let reply = exchange(addr, b"GET /metrics HTTP/1.1\r\n").await;
        assert_eq!(status(&reply), 408);
        assert!(started.elapsed() < Duration::from_secs(3));
        task.abort();
    }

    #[tokio::test]
    async fn collect_failures_become_5xx() {
        let (addr, task) = start(Arc::new(|| panic!("collect failed on purpose")), LIMITS).await;
        assert_eq!(
            status(&exchange(addr, b"GET /metrics HTTP/1.1\r\n\r\n").await),
            500
        );
        // The server is still there.
        assert_eq!(
            status(&exchange(addr, b"GET / HTTP/1.1\r\n\r\n").await),
            200
        );
        task.abort();

        let limits = Limits {
            collect_timeout: Duration::from_millis(100),
            ..LIMITS
        };
        let slow: Collect = Arc::new(|| {
            std::thread::sleep(Duration::from_millis(500));
            String::new()
        });
        let (addr, task) = start(slow, limits).await;
        assert_eq!(
            status(&exchange(addr, b"GET /metrics HTTP/1.1\r\n\r\n").await),
            503
        );
        task.abort();
    }

    #[tokio::test]
    async fn bounds_concurrent_connections() {
        assert_eq!(LIMITS.max_connections, 64);
        let limits = Limits {
            max_connections: 2,
            ..LIMITS
        };
        let (addr, task) = start(fixed(), limits).await;
        let idle1 = TcpStream::connect(addr).await.unwrap();
        let _idle2 = TcpStream::connect(addr).await.unwrap();
        let mut third = TcpStream::connect(addr).await.unwrap();
        third
            .write_all(b"GET /metrics HTTP/1.1\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 64];
        let early = tokio::time::timeout(Duration::from_millis(300), third.read(&mut buf)).await;
        assert!(
            early.is_err(),
            "a third connection was served while two were open"
        );
        // One idle client leaves: its slot goes to the waiting one.
        drop(idle1);
        let mut reply = Vec::new();
        tokio::time::timeout(Duration::from_secs(3), third.read_to_end(&mut reply))
            .await
            .expect("the waiting connection was not served")
            .unwrap();
        assert_eq!(status(&String::from_utf8(reply).unwrap()), 200);
        task.abort();
    }

    /// curl, a real HTTP client, reads the endpoint. curl must be installed
    /// (testbed/install-deps.sh installs it).
    #[tokio::test]
    async fn curl_reads_the_endpoint() {
        let text = all_current();
        let body = text.clone();
        let (addr, task) = start(Arc::new(move || body.clone()), LIMITS).await;
        let url = format!("http://{addr}/metrics");
        let curl = |args: Vec<String>| {
            tokio::task::spawn_blocking(move || {
                std::process::Command::new("curl")
                    .args(&args)
                    .output()
                    .expect("running curl (is it installed?)")
            })
        };
        let out = curl(vec![
            "-s".into(),
            "--noproxy".into(),
            "*".into(),
            url.clone(),
        ])
        .await
        .unwrap();
        assert!(out.status.success(), "curl failed: {out:?}");
        let got = String::from_utf8(out.stdout).unwrap();
        assert_eq!(got, text);
        assert_eq!(check_exposition(&got), Ok(49));

        let meta = |extra: &[&str]| {
            let mut a: Vec<String> = ["-s", "--noproxy", "*", "-o", "/dev/null", "-w"]
                .iter()
                .map(|s| s.to_string())
                .collect();
            a.push("%{http_code} %{content_type}".into());
            a.extend(extra.iter().map(|s| s.to_string()));
            a
        };
        let out = curl(meta(&[&url])).await.unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "200 text/plain; version=0.0.4"
        );
        let out = curl(meta(&["-X", "POST", "-d", "x=1", &url]))
            .await
            .unwrap();
        assert!(String::from_utf8_lossy(&out.stdout).starts_with("405 "));
        let out = curl(meta(&[&format!("http://{addr}/nothing")]))
            .await
            .unwrap();
        assert!(String::from_utf8_lossy(&out.stdout).starts_with("404 "));
        task.abort();
    }
}
