//! The answer policy: query bytes in, an [`Action`] out.
//!
//! Public view (WAN): a host's `A` reserves a whole Circular Pool address, a
//! service FQDN's `A` reserves (R, proto, port); both are answered with TTL 0
//! (seed: "How does RGW work?") so no cache hands R to a second client.
//! Private view (LAN, split horizon): zone names resolve to private addresses
//! and everything else is forwarded upstream.
//! Responses follow RFC 1034/2308: NXDOMAIN and NODATA carry the SOA in the
//! authority section; names outside the zone are REFUSED on the public view.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsCode, EdnsOption};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, NS, SOA, SRV};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};

use crate::antispoof::{AliasError, AliasTarget, AliasZone, AntiSpoof};
use crate::sfqdn::ServiceKey;
use crate::zone::{Lookup, ZoneData};

/// Which side of the gateway a query came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    /// WAN: resolvers on the Internet; answers allocate from the Circular Pool.
    Public,
    /// LAN: private hosts; zone names resolve to private addresses.
    Private,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// Why a reservation was not made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DenyReason {
    /// No address of the Circular Pool can take this reservation.
    Exhausted,
    /// The host already has its maximum of pending reservations.
    HostLimit,
    /// The reservation could not be installed in the data plane.
    Dataplane,
    /// The admission policy refused it (rate, per-resolver limit, reputation).
    Admission,
}

/// What the allocator did for one query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allocation {
    Granted(Ipv4Addr),
    Denied(DenyReason),
}

/// One reservation asked for by a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AllocRequest {
    /// Index of the host in the zone.
    pub host: usize,
    /// `None` for a host's FQDN (a whole address), `Some` for a service FQDN.
    pub service: Option<ServiceKey>,
    /// EDNS Client Subnet of the query (RFC 7871), when the resolver sent one.
    pub client_subnet: Option<(IpAddr, u8)>,
}

/// Makes Circular Pool reservations (implemented by the daemon: pool + nftables).
pub trait Allocator {
    fn allocate(&mut self, req: AllocRequest) -> Allocation;

    /// Told of each anti-spoofing decision (for counters and logs); no-op by default.
    fn note(&mut self, _event: SpoofEvent) {}
}

/// An anti-spoofing decision on the answer path (see [`crate::antispoof`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SpoofEvent {
    /// An allocating UDP query answered TC=1.
    TcSent,
    /// An allocating UDP query answered with a fresh alias.
    AliasIssued,
    /// A valid alias was queried: its reservation is asked for.
    AliasFollowed,
    /// An alias query that does not allocate, and why.
    AliasRejected(AliasError),
}

/// Who asked and when: what the anti-spoofing answers need beyond the bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueryContext {
    /// Source address of the query.
    pub resolver: Option<IpAddr>,
    /// Time since an epoch the caller fixes (alias tokens carry their expiry in it).
    pub now: Duration,
}

/// What to send when a reservation is denied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeniedPolicy {
    /// Nothing (UDP: the resolver retries; TCP: the connection is closed).
    Drop,
    Servfail,
    Refused,
}

/// The kind of reply, for counters and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Static data (SOA, NS, glue, private-view addresses).
    Static,
    /// An answer carrying a fresh reservation.
    Allocated,
    NoData,
    NxDomain,
    Refused,
    FormErr,
    NotImp,
    /// EDNS version we do not speak (RFC 6891 §6.1.3).
    BadVers,
    /// A denied reservation answered with SERVFAIL/REFUSED by policy.
    Denied(DenyReason),
    /// Anti-spoofing: TC=1 so the resolver retries over TCP.
    Truncated,
    /// Anti-spoofing: a CNAME to an alias that allocates when queried.
    Alias,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Too short or broken to answer even with FORMERR.
    Malformed,
    /// A response or other non-query message: never answered (no loops).
    NotAQuery,
    Denied(DenyReason),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Reply {
        bytes: Vec<u8>,
        outcome: Outcome,
    },
    Drop(DropReason),
    /// Private view, name outside the zone: relay the query to the upstream resolver.
    Forward,
}

/// Largest UDP payload we send when the client offers EDNS (the 2020 DNS flag day value).
const EDNS_PAYLOAD: u16 = 1232;

pub struct Responder {
    zone: ZoneData,
    on_denied: DeniedPolicy,
    antispoof: AntiSpoof,
}

impl Responder {
    pub fn new(zone: ZoneData, on_denied: DeniedPolicy) -> Self {
        Responder {
            zone,
            on_denied,
            antispoof: AntiSpoof::Off,
        }
    }

    /// Answers allocating UDP queries of the public view with TC or an alias.
    pub fn with_antispoof(mut self, antispoof: AntiSpoof) -> Self {
        self.antispoof = antispoof;
        self
    }

    pub fn zone(&self) -> &ZoneData {
        &self.zone
    }

    /// Decides what to do with one DNS message. Never panics on any input.
    /// Without a [`QueryContext`]: anti-spoofing sees no resolver and time 0.
    pub fn handle(
        &self,
        packet: &[u8],
        view: View,
        transport: Transport,
        alloc: &mut dyn Allocator,
    ) -> Action {
        self.handle_in(packet, view, transport, QueryContext::default(), alloc)
    }

    /// [`Responder::handle`] with the query's source and the time.
    pub fn handle_in(
        &self,
        packet: &[u8],
        view: View,
        transport: Transport,
        ctx: QueryContext,
        alloc: &mut dyn Allocator,
    ) -> Action {
        let req = match Message::from_vec(packet) {
            Ok(m) => m,
            Err(_) => return formerr_from_raw(packet),
        };
        if req.metadata.message_type != MessageType::Query {
            return Action::Drop(DropReason::NotAQuery);
        }
        if req.metadata.op_code != OpCode::Query {
            return self.finish(
                &req,
                transport,
                ResponseCode::NotImp,
                Outcome::NotImp,
                Sections::default(),
            );
        }
        if req.edns.as_ref().is_some_and(|e| e.version() > 0) {
            // Decided before any lookup: a BADVERS reply must not cost a reservation.
            return self.finish(
                &req,
                transport,
                ResponseCode::BADVERS,
                Outcome::BadVers,
                Sections::default(),
            );
        }
        if req.queries.len() != 1 {
            return self.finish(
                &req,
                transport,
                ResponseCode::FormErr,
                Outcome::FormErr,
                Sections::default(),
            );
        }
        let query = &req.queries[0];
        let (qname, qtype) = (query.name().clone(), query.query_type());
        let client_subnet = client_subnet(&req);

        if view == View::Public {
            if let AntiSpoof::Cname(az) = &self.antispoof {
                if az.name.zone_of(&qname) {
                    return self.alias_query(&req, transport, ctx, az, client_subnet, alloc);
                }
            }
        }
        // Over UDP on the public view, allocating answers need proof of the source first.
        let challenge = view == View::Public
            && transport == Transport::Udp
            && !matches!(self.antispoof, AntiSpoof::Off);

        let lookup = self.zone.lookup(&qname);
        if lookup == Lookup::OutOfZone {
            return match view {
                View::Private => Action::Forward,
                View::Public => self.finish(
                    &req,
                    transport,
                    ResponseCode::Refused,
                    Outcome::Refused,
                    Sections::default(),
                ),
            };
        }
        if query.query_class() != DNSClass::IN {
            return self.finish(
                &req,
                transport,
                ResponseCode::Refused,
                Outcome::Refused,
                Sections::default(),
            );
        }
        if matches!(qtype, RecordType::AXFR | RecordType::IXFR) {
            // Zone transfers would hand out the private host list; not offered.
            return self.finish(
                &req,
                transport,
                ResponseCode::Refused,
                Outcome::Refused,
                Sections::default(),
            );
        }

        let mut s = Sections::default();
        let static_ttl = self.zone.static_ttl;
        let outcome = match lookup {
            Lookup::OutOfZone => unreachable_out_of_zone(),
            Lookup::EmptyNonTerminal => Outcome::Static,
            Lookup::NxDomain => {
                s.authority.push(self.soa_record(self.zone.negative_ttl));
                return self.finish(
                    &req,
                    transport,
                    ResponseCode::NXDomain,
                    Outcome::NxDomain,
                    s,
                );
            }
            Lookup::Apex => {
                if matches!(qtype, RecordType::SOA | RecordType::ANY) {
                    s.answer.push(self.soa_record(static_ttl));
                }
                if matches!(qtype, RecordType::NS | RecordType::ANY) {
                    s.answer.push(self.ns_record());
                    s.additional.push(self.glue_record());
                }
                Outcome::Static
            }
            Lookup::NameServer => {
                if matches!(qtype, RecordType::A | RecordType::ANY) {
                    s.answer.push(self.glue_record());
                }
                Outcome::Static
            }
            Lookup::Host { host, service } => {
                if qtype != RecordType::A {
                    // Only A queries allocate; ANY on the public view must not be a
                    // way to drain the pool, so it gets NODATA like any other type.
                    if qtype == RecordType::ANY && view == View::Private {
                        s.answer.push(self.private_a(&qname, host));
                    }
                    if matches!(qtype, RecordType::AAAA | RecordType::ANY) {
                        // RGW64: a host's IPv6 address, static (no pool behind it).
                        if let Some(v6) = self.host_aaaa(view, host) {
                            s.answer.push(Record::from_rdata(
                                qname.clone(),
                                static_ttl,
                                RData::AAAA(AAAA(v6)),
                            ));
                        }
                    }
                    Outcome::Static
                } else if challenge {
                    return self.challenge(
                        &req,
                        transport,
                        ctx,
                        AliasTarget { host, service },
                        alloc,
                    );
                } else {
                    match self.address_for(
                        view,
                        AllocRequest {
                            host,
                            service,
                            client_subnet,
                        },
                        alloc,
                    ) {
                        Ok((addr, ttl, outcome)) => {
                            s.answer.push(Record::from_rdata(
                                qname.clone(),
                                ttl,
                                RData::A(A(addr)),
                            ));
                            outcome
                        }
                        Err(reason) => return self.denied(&req, transport, reason),
                    }
                }
            }
            Lookup::Www { .. } => {
                if matches!(qtype, RecordType::A | RecordType::ANY) {
                    // Both views: the proxy at the service address, which maps
                    // the name to the host's web server on its backend port.
                    let addr = self.zone.ns_addr;
                    s.answer.push(Record::from_rdata(
                        qname.clone(),
                        static_ttl,
                        RData::A(A(addr)),
                    ));
                }
                Outcome::Static
            }
            Lookup::Srv {
                host,
                service,
                label,
            } => {
                if qtype != RecordType::SRV {
                    Outcome::Static
                } else {
                    let target = match self
                        .zone
                        .host(host)
                        .map(|h| format!("{label}.{}.{}", h.name, self.zone.apex))
                    {
                        Some(t) => match Name::from_ascii(t) {
                            Ok(n) => n,
                            Err(_) => {
                                return self.finish(
                                    &req,
                                    transport,
                                    ResponseCode::ServFail,
                                    Outcome::FormErr,
                                    s,
                                )
                            }
                        },
                        None => {
                            return self.finish(
                                &req,
                                transport,
                                ResponseCode::ServFail,
                                Outcome::FormErr,
                                s,
                            )
                        }
                    };
                    if challenge {
                        match &self.antispoof {
                            AntiSpoof::Tc => {
                                alloc.note(SpoofEvent::TcSent);
                                return self.truncated(&req, transport);
                            }
                            // The SRV alone: the resolver asks the target's A
                            // next, which gets an alias.
                            _ => {
                                s.answer.push(Record::from_rdata(
                                    qname.clone(),
                                    0,
                                    RData::SRV(SRV::new(0, 0, service.port, target)),
                                ));
                                return self.finish(
                                    &req,
                                    transport,
                                    ResponseCode::NoError,
                                    Outcome::Static,
                                    s,
                                );
                            }
                        }
                    }
                    match self.address_for(
                        view,
                        AllocRequest {
                            host,
                            service: Some(service),
                            client_subnet,
                        },
                        alloc,
                    ) {
                        Ok((addr, ttl, outcome)) => {
                            s.answer.push(Record::from_rdata(
                                qname.clone(),
                                ttl,
                                RData::SRV(SRV::new(0, 0, service.port, target.clone())),
                            ));
                            s.additional
                                .push(Record::from_rdata(target, ttl, RData::A(A(addr))));
                            outcome
                        }
                        Err(reason) => return self.denied(&req, transport, reason),
                    }
                }
            }
        };
        if s.answer.is_empty() {
            s.authority.push(self.soa_record(self.zone.negative_ttl));
            return self.finish(&req, transport, ResponseCode::NoError, Outcome::NoData, s);
        }
        self.finish(&req, transport, ResponseCode::NoError, outcome, s)
    }

    /// An allocating UDP query under anti-spoofing: TC=1, or a CNAME to a fresh alias.
    fn challenge(
        &self,
        req: &Message,
        transport: Transport,
        ctx: QueryContext,
        target: AliasTarget,
        alloc: &mut dyn Allocator,
    ) -> Action {
        match &self.antispoof {
            AntiSpoof::Cname(az) => {
                alloc.note(SpoofEvent::AliasIssued);
                self.alias_answer(req, transport, ctx, az, target)
            }
            _ => {
                alloc.note(SpoofEvent::TcSent);
                self.truncated(req, transport)
            }
        }
    }

    /// TC=1, question only (RFC 7766 §5: the resolver retries over TCP).
    fn truncated(&self, req: &Message, transport: Transport) -> Action {
        let s = Sections {
            tc: true,
            ..Sections::default()
        };
        self.finish(req, transport, ResponseCode::NoError, Outcome::Truncated, s)
    }

    /// `qname CNAME <token>.<alias zone>` with TTL 0, so no cache keeps it.
    fn alias_answer(
        &self,
        req: &Message,
        transport: Transport,
        ctx: QueryContext,
        az: &AliasZone,
        target: AliasTarget,
    ) -> Action {
        let Some(qname) = req.queries.first().map(|q| q.name().clone()) else {
            return Action::Drop(DropReason::Malformed);
        };
        let token = az.key.issue(target, ctx.now, az.lifetime, ctx.resolver);
        let alias = match Name::from_ascii(&token).and_then(|t| t.append_domain(&az.name)) {
            Ok(n) => n,
            Err(_) => return Action::Drop(DropReason::Malformed),
        };
        let mut s = Sections::default();
        s.answer
            .push(Record::from_rdata(qname, 0, RData::CNAME(CNAME(alias))));
        self.finish(req, transport, ResponseCode::NoError, Outcome::Alias, s)
    }

    /// A query for a name in the alias zone: only a valid alias's `A` allocates.
    fn alias_query(
        &self,
        req: &Message,
        transport: Transport,
        ctx: QueryContext,
        az: &AliasZone,
        client_subnet: Option<(IpAddr, u8)>,
        alloc: &mut dyn Allocator,
    ) -> Action {
        let Some(query) = req.queries.first() else {
            return Action::Drop(DropReason::Malformed);
        };
        let (qname, qtype) = (query.name(), query.query_type());
        let depth = qname.num_labels().saturating_sub(az.name.num_labels());
        let label = qname.iter().next().unwrap_or_default();
        let mut s = Sections::default();
        let known_host =
            |t: &AliasTarget| self.zone.host(t.host).is_some_and(|h| !h.name.is_empty());
        let target = match depth {
            // The alias zone's own name exists (empty non-terminal): NODATA.
            0 => None,
            1 => match az.key.verify(label, ctx.now, ctx.resolver) {
                Ok(t) if known_host(&t) => Some(Ok(t)),
                // A host removed by a reload since the alias was issued.
                Ok(_) | Err(AliasError::Forged) => {
                    alloc.note(SpoofEvent::AliasRejected(AliasError::Forged));
                    None
                }
                Err(e) => az
                    .key
                    .target_of(label)
                    .filter(known_host)
                    .map(|t| Err((e, t))),
            },
            _ => None,
        };
        let target = match (depth, target) {
            (0, _) => {
                s.authority.push(self.soa_record(self.zone.negative_ttl));
                return self.finish(req, transport, ResponseCode::NoError, Outcome::NoData, s);
            }
            (_, Some(t)) => t,
            (_, None) => {
                s.authority.push(self.soa_record(self.zone.negative_ttl));
                return self.finish(req, transport, ResponseCode::NXDomain, Outcome::NxDomain, s);
            }
        };
        if qtype != RecordType::A {
            s.authority.push(self.soa_record(self.zone.negative_ttl));
            return self.finish(req, transport, ResponseCode::NoError, Outcome::NoData, s);
        }
        match target {
            Ok(t) => {
                alloc.note(SpoofEvent::AliasFollowed);
                let ask = AllocRequest {
                    host: t.host,
                    service: t.service,
                    client_subnet,
                };
                match self.address_for(View::Public, ask, alloc) {
                    Ok((addr, ttl, outcome)) => {
                        s.answer
                            .push(Record::from_rdata(qname.clone(), ttl, RData::A(A(addr))));
                        self.finish(req, transport, ResponseCode::NoError, outcome, s)
                    }
                    Err(reason) => self.denied(req, transport, reason),
                }
            }
            // Ours but late, or followed from another network: a fresh alias
            // for this querier (who proves its address by following it).
            Err((e, t)) => {
                alloc.note(SpoofEvent::AliasRejected(e));
                self.alias_answer(req, transport, ctx, az, t)
            }
        }
    }

    /// The address to answer for a host (or service) and the TTL to give it.
    fn address_for(
        &self,
        view: View,
        req: AllocRequest,
        alloc: &mut dyn Allocator,
    ) -> Result<(Ipv4Addr, u32, Outcome), DenyReason> {
        match view {
            View::Private => match self.zone.host(req.host) {
                Some(h) => Ok((h.ipv4, self.zone.static_ttl, Outcome::Static)),
                None => Err(DenyReason::Exhausted),
            },
            View::Public => match alloc.allocate(req) {
                Allocation::Granted(addr) => Ok((addr, 0, Outcome::Allocated)),
                Allocation::Denied(reason) => Err(reason),
            },
        }
    }

    /// The AAAA of a host with an IPv6 address: always on the private view;
    /// on the public view only a global address (a ULA or link-local address
    /// means nothing outside, and publishing it would leak the LAN's plan).
    /// Service names never get one: they exist to reserve IPv4 (R, proto, port).
    fn host_aaaa(&self, view: View, host: usize) -> Option<Ipv6Addr> {
        let v6 = self.zone.host(host)?.ipv6?;
        match view {
            View::Private => Some(v6),
            View::Public if is_published_v6(v6) => Some(v6),
            View::Public => None,
        }
    }

    fn private_a(&self, qname: &Name, host: usize) -> Record {
        let addr = self
            .zone
            .host(host)
            .map(|h| h.ipv4)
            .unwrap_or(Ipv4Addr::UNSPECIFIED);
        Record::from_rdata(qname.clone(), self.zone.static_ttl, RData::A(A(addr)))
    }

    fn denied(&self, req: &Message, transport: Transport, reason: DenyReason) -> Action {
        match self.on_denied {
            DeniedPolicy::Drop => Action::Drop(DropReason::Denied(reason)),
            DeniedPolicy::Servfail => self.finish(
                req,
                transport,
                ResponseCode::ServFail,
                Outcome::Denied(reason),
                Sections::default(),
            ),
            DeniedPolicy::Refused => self.finish(
                req,
                transport,
                ResponseCode::Refused,
                Outcome::Denied(reason),
                Sections::default(),
            ),
        }
    }

    fn soa_record(&self, ttl: u32) -> Record {
        let z = &self.zone;
        let soa = SOA::new(
            z.ns_name.clone(),
            z.hostmaster.clone(),
            z.serial,
            3600,
            600,
            86400,
            z.negative_ttl,
        );
        Record::from_rdata(z.apex.clone(), ttl, RData::SOA(soa))
    }

    fn ns_record(&self) -> Record {
        Record::from_rdata(
            self.zone.apex.clone(),
            self.zone.static_ttl,
            RData::NS(NS(self.zone.ns_name.clone())),
        )
    }

    fn glue_record(&self) -> Record {
        Record::from_rdata(
            self.zone.ns_name.clone(),
            self.zone.static_ttl,
            RData::A(A(self.zone.ns_addr)),
        )
    }

    fn finish(
        &self,
        req: &Message,
        transport: Transport,
        rcode: ResponseCode,
        outcome: Outcome,
        s: Sections,
    ) -> Action {
        let mut resp = Message::response(req.metadata.id, req.metadata.op_code);
        resp.metadata.authoritative = matches!(
            outcome,
            Outcome::Static
                | Outcome::Allocated
                | Outcome::NoData
                | Outcome::NxDomain
                | Outcome::Truncated
                | Outcome::Alias
        );
        resp.metadata.truncation = s.tc;
        resp.metadata.recursion_desired = req.metadata.recursion_desired;
        resp.metadata.checking_disabled = req.metadata.checking_disabled;
        resp.metadata.response_code = rcode;
        resp.queries = req.queries.clone();
        resp.answers = s.answer;
        resp.authorities = s.authority;
        resp.additionals = s.additional;
        let mut limit = 512usize;
        if let Some(req_edns) = &req.edns {
            let mut edns = Edns::new();
            edns.set_max_payload(EDNS_PAYLOAD);
            edns.set_version(0);
            if let Some(EdnsOption::Subnet(cs)) = req_edns.option(EdnsCode::Subnet) {
                // RFC 7871 §7.2.1: echo ECS, or a resolver takes us for
                // ECS-unaware and asks again without it (unbound 1.17 does: two
                // reservations per lookup). Scope 0 ("good for every client"):
                // every answer that matters carries TTL 0 and must not be cached.
                edns.options_mut()
                    .insert(EdnsOption::Subnet(ClientSubnet::new(
                        cs.addr(),
                        cs.source_prefix(),
                        0,
                    )));
            }
            resp.edns = Some(edns);
            limit = usize::from(req_edns.max_payload().clamp(512, EDNS_PAYLOAD));
        }
        let bytes = match resp.to_vec() {
            Ok(b) => b,
            Err(_) => return Action::Drop(DropReason::Malformed),
        };
        if transport == Transport::Udp && bytes.len() > limit {
            // RFC 1035 §4.2.1 / RFC 2181 §9: set TC and let the client retry over TCP.
            resp.metadata.truncation = true;
            resp.answers.clear();
            resp.authorities.clear();
            resp.additionals.clear();
            let bytes = match resp.to_vec() {
                Ok(b) => b,
                Err(_) => return Action::Drop(DropReason::Malformed),
            };
            if bytes.len() <= limit {
                return Action::Reply { bytes, outcome };
            }
            // Only a message with several long questions (a FORMERR) gets
            // here: echoing them would still exceed the limit, so the
            // truncated reply carries the header (and OPT) alone.
            resp.queries.clear();
            return match resp.to_vec() {
                Ok(bytes) => Action::Reply { bytes, outcome },
                Err(_) => Action::Drop(DropReason::Malformed),
            };
        }
        Action::Reply { bytes, outcome }
    }
}

#[derive(Default)]
struct Sections {
    answer: Vec<Record>,
    authority: Vec<Record>,
    additional: Vec<Record>,
    /// Set TC (anti-spoofing's "retry over TCP").
    tc: bool,
}

#[inline]
fn unreachable_out_of_zone() -> Outcome {
    // Handled before the match; kept total without a panic.
    Outcome::Refused
}

/// Whether a host's IPv6 address is answered on the public view: not a ULA
/// (fc00::/7), link-local, loopback, multicast or unspecified address. The
/// data plane admits inbound IPv6 to exactly these addresses.
pub fn is_published_v6(v6: Ipv6Addr) -> bool {
    let seg0 = v6.segments()[0];
    !((seg0 & 0xfe00) == 0xfc00
        || (seg0 & 0xffc0) == 0xfe80
        || v6.is_loopback()
        || v6.is_multicast()
        || v6.is_unspecified())
}

/// The EDNS Client Subnet option of a query (RFC 7871 §6), if any.
fn client_subnet(req: &Message) -> Option<(IpAddr, u8)> {
    match req.edns.as_ref()?.option(EdnsCode::Subnet)? {
        EdnsOption::Subnet(cs) => Some((cs.addr(), cs.source_prefix())),
        _ => None,
    }
}

/// FORMERR for a message that did not parse, built from its raw header
/// (RFC 1035 §4.1.1), or a drop when even the header is missing or the
/// message claims to be a response.
fn formerr_from_raw(packet: &[u8]) -> Action {
    if packet.len() < 12 {
        return Action::Drop(DropReason::Malformed);
    }
    let flags = packet[2];
    if flags & 0x80 != 0 {
        return Action::Drop(DropReason::NotAQuery);
    }
    let id = u16::from_be_bytes([packet[0], packet[1]]);
    let opcode = (flags >> 3) & 0x0f;
    // Header only: QR=1, same opcode, RD copied, RCODE=1, all counts zero.
    let mut out = vec![0u8; 12];
    out[0..2].copy_from_slice(&id.to_be_bytes());
    out[2] = 0x80 | (opcode << 3) | (flags & 0x01);
    out[3] = ResponseCode::FormErr.low();
    Action::Reply {
        bytes: out,
        outcome: Outcome::FormErr,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sfqdn::L4Proto;
    use crate::zone::tests::demo_zone;
    use hickory_proto::op::Query;

    /// Hands out addresses from a list and records what was asked.
    struct FakeAlloc {
        next: Vec<Ipv4Addr>,
        asked: Vec<(usize, Option<ServiceKey>)>,
        subnets: Vec<Option<(IpAddr, u8)>>,
    }

    impl Allocator for FakeAlloc {
        fn allocate(&mut self, req: AllocRequest) -> Allocation {
            self.asked.push((req.host, req.service));
            self.subnets.push(req.client_subnet);
            match self.next.pop() {
                Some(a) => Allocation::Granted(a),
                None => Allocation::Denied(DenyReason::Exhausted),
            }
        }
    }

    fn alloc(n: usize) -> FakeAlloc {
        FakeAlloc {
            next: (0..n as u8)
                .map(|i| Ipv4Addr::new(198, 51, 100, 17 + i))
                .collect(),
            asked: vec![],
            subnets: vec![],
        }
    }

    fn query(name: &str, qtype: RecordType) -> Vec<u8> {
        let mut m = Message::query();
        m.metadata.id = 4242;
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(
            Name::from_ascii(name).expect("valid test name"),
            qtype,
        ));
        m.to_vec().expect("test query encodes")
    }

    fn ask(
        r: &Responder,
        name: &str,
        qtype: RecordType,
        view: View,
        a: &mut FakeAlloc,
    ) -> (Message, Outcome) {
        match r.handle(&query(name, qtype), view, Transport::Udp, a) {
            Action::Reply { bytes, outcome } => {
                (Message::from_vec(&bytes).expect("reply parses"), outcome)
            }
            other => panic!("expected a reply, got {other:?}"),
        }
    }

    fn responder() -> Responder {
        Responder::new(demo_zone(), DeniedPolicy::Drop)
    }

    fn a_of(m: &Message) -> Vec<(Ipv4Addr, u32)> {
        m.answers
            .iter()
            .filter_map(|r| match r.data {
                RData::A(A(a)) => Some((a, r.ttl)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn host_a_allocates_with_ttl_zero() {
        let r = responder();
        let mut a = alloc(1);
        let (m, o) = ask(&r, "hosta.gwa.demo.", RecordType::A, View::Public, &mut a);
        assert_eq!(o, Outcome::Allocated);
        assert_eq!(m.metadata.id, 4242);
        assert!(m.metadata.authoritative);
        assert_eq!(a_of(&m), vec![(Ipv4Addr::new(198, 51, 100, 17), 0)]);
        assert_eq!(a.asked, vec![(0, None)]);
    }

    #[test]
    fn client_subnet_reaches_the_allocator() {
        use hickory_proto::rr::rdata::opt::ClientSubnet;
        let r = responder();
        let mut a = alloc(2);
        let mut m = Message::from_vec(&query("hosta.gwa.demo.", RecordType::A)).expect("parses");
        let mut e = Edns::new();
        e.options_mut().insert(EdnsOption::Subnet(ClientSubnet::new(
            "203.0.113.0".parse().expect("ip"),
            24,
            0,
        )));
        m.edns = Some(e);
        let bytes = m.to_vec().expect("encodes");
        assert!(matches!(
            r.handle(&bytes, View::Public, Transport::Udp, &mut a),
            Action::Reply {
                outcome: Outcome::Allocated,
                ..
            }
        ));
        assert_eq!(
            a.subnets,
            vec![Some(("203.0.113.0".parse().expect("ip"), 24))]
        );
        // RFC 7871 §7.2.1: the option is echoed (scope 0: nothing may be cached).
        let Action::Reply { bytes, .. } = r.handle(&bytes, View::Public, Transport::Udp, &mut a)
        else {
            panic!("a reply")
        };
        let reply = Message::from_vec(&bytes).expect("parses");
        match reply.edns.as_ref().and_then(|e| e.option(EdnsCode::Subnet)) {
            Some(EdnsOption::Subnet(cs)) => {
                assert_eq!(
                    (cs.addr(), cs.source_prefix(), cs.scope_prefix()),
                    ("203.0.113.0".parse().expect("ip"), 24, 0)
                );
            }
            other => panic!("ECS not echoed: {other:?}"),
        }
    }

    #[test]
    fn www_names_point_at_the_proxy_without_allocating() {
        let mut zone = demo_zone();
        zone.www = true;
        let r = Responder::new(zone, DeniedPolicy::Drop);
        let mut a = alloc(1);
        let (m, o) = ask(
            &r,
            "www.hosta.gwa.demo.",
            RecordType::A,
            View::Public,
            &mut a,
        );
        assert_eq!(
            (a_of(&m), o),
            (vec![(Ipv4Addr::new(198, 51, 100, 2), 60)], Outcome::Static)
        );
        let (m, _) = ask(
            &r,
            "www.hosta.gwa.demo.",
            RecordType::A,
            View::Private,
            &mut a,
        );
        assert_eq!(
            a_of(&m),
            vec![(Ipv4Addr::new(198, 51, 100, 2), 60)],
            "the LAN uses the proxy too"
        );
        let (m, o) = ask(
            &r,
            "www.hosta.gwa.demo.",
            RecordType::AAAA,
            View::Public,
            &mut a,
        );
        assert_eq!((m.answers.len(), o), (0, Outcome::NoData));
        assert!(a.asked.is_empty());
    }

    #[test]
    fn sfqdn_allocates_service() {
        let r = responder();
        let mut a = alloc(2);
        ask(
            &r,
            "tcp22.hostb.gwa.demo.",
            RecordType::A,
            View::Public,
            &mut a,
        );
        ask(
            &r,
            "SSH.hosta.gwa.demo.",
            RecordType::A,
            View::Public,
            &mut a,
        );
        let k = |proto, port| Some(ServiceKey { proto, port });
        assert_eq!(
            a.asked,
            vec![(1, k(L4Proto::Tcp, 22)), (0, k(L4Proto::Tcp, 22))]
        );
    }

    #[test]
    fn srv_allocates_and_answers_target() {
        let r = responder();
        let mut a = alloc(1);
        let (m, o) = ask(
            &r,
            "_ssh._tcp.hosta.gwa.demo.",
            RecordType::SRV,
            View::Public,
            &mut a,
        );
        assert_eq!(o, Outcome::Allocated);
        match &m.answers[0].data {
            RData::SRV(srv) => {
                assert_eq!(srv.port, 22);
                assert_eq!(srv.target.to_ascii(), "ssh.hosta.gwa.demo.");
            }
            other => panic!("not SRV: {other:?}"),
        }
        assert_eq!(m.additionals.len(), 1);
        assert_eq!(m.additionals[0].ttl, 0);
    }

    #[test]
    fn private_view_answers_private_address_without_allocating() {
        let r = responder();
        let mut a = alloc(1);
        let (m, o) = ask(&r, "hosta.gwa.demo.", RecordType::A, View::Private, &mut a);
        assert_eq!(o, Outcome::Static);
        assert_eq!(a_of(&m), vec![(Ipv4Addr::new(192, 168, 0, 101), 60)]);
        assert!(a.asked.is_empty());
        assert_eq!(
            r.handle(
                &query("www.example.", RecordType::A),
                View::Private,
                Transport::Udp,
                &mut a
            ),
            Action::Forward
        );
    }

    #[test]
    fn host_aaaa_on_the_private_view_only_for_a_ula() {
        let r = responder();
        let mut a = alloc(1);
        let (m, o) = ask(
            &r,
            "hostb.gwa.demo.",
            RecordType::AAAA,
            View::Private,
            &mut a,
        );
        assert_eq!(o, Outcome::Static);
        assert!(
            matches!(&m.answers[..], [rec] if rec.data == RData::AAAA(AAAA("fd00:192:168::102".parse().expect("ip"))))
        );
        let (m, o) = ask(
            &r,
            "hostb.gwa.demo.",
            RecordType::AAAA,
            View::Public,
            &mut a,
        );
        assert_eq!(
            (m.answers.len(), o),
            (0, Outcome::NoData),
            "a ULA is not published"
        );
        let (m, _) = ask(
            &r,
            "hosta.gwa.demo.",
            RecordType::AAAA,
            View::Private,
            &mut a,
        );
        assert!(m.answers.is_empty(), "hosta has no IPv6");
        let mut zone = demo_zone();
        let mut hosts: Vec<_> = (0..2).filter_map(|i| zone.host(i).cloned()).collect();
        hosts[1].ipv6 = Some("2001:db8:1::102".parse().expect("ip"));
        zone = ZoneData::new(
            crate::zone::ZoneSettings {
                apex: zone.apex.clone(),
                ns_name: zone.ns_name.clone(),
                ns_addr: zone.ns_addr,
                hostmaster: zone.hostmaster.clone(),
                serial: zone.serial,
                static_ttl: zone.static_ttl,
                negative_ttl: zone.negative_ttl,
            },
            hosts,
        );
        let r = Responder::new(zone, DeniedPolicy::Drop);
        let (m, _) = ask(
            &r,
            "hostb.gwa.demo.",
            RecordType::AAAA,
            View::Public,
            &mut a,
        );
        assert_eq!(m.answers.len(), 1, "a global address is published");
        assert!(a.asked.is_empty(), "AAAA never allocates");
    }

    #[test]
    fn apex_soa_ns_and_glue() {
        let r = responder();
        let mut a = alloc(0);
        let (m, _) = ask(&r, "gwa.demo.", RecordType::SOA, View::Public, &mut a);
        assert!(matches!(m.answers[0].data, RData::SOA(_)));
        let (m, _) = ask(&r, "gwa.demo.", RecordType::NS, View::Public, &mut a);
        assert!(matches!(&m.answers[0].data, RData::NS(ns) if ns.0.to_ascii() == "ns.gwa.demo."));
        assert!(
            matches!(m.additionals[0].data, RData::A(A(ip)) if ip == Ipv4Addr::new(198, 51, 100, 2))
        );
        let (m, _) = ask(&r, "ns.gwa.demo.", RecordType::A, View::Public, &mut a);
        assert_eq!(a_of(&m), vec![(Ipv4Addr::new(198, 51, 100, 2), 60)]);
    }

    #[test]
    fn negative_answers_carry_soa() {
        let r = responder();
        let mut a = alloc(5);
        let (m, o) = ask(
            &r,
            "_tcp.hosta.gwa.demo.",
            RecordType::A,
            View::Public,
            &mut a,
        );
        assert_eq!(
            (m.metadata.response_code, o),
            (ResponseCode::NoError, Outcome::NoData),
            "empty non-terminal"
        );
        let (m, o) = ask(&r, "nosuch.gwa.demo.", RecordType::A, View::Public, &mut a);
        assert_eq!(
            (m.metadata.response_code, o),
            (ResponseCode::NXDomain, Outcome::NxDomain)
        );
        assert!(matches!(m.authorities[0].data, RData::SOA(_)));
        assert_eq!(m.authorities[0].ttl, 30);
        for t in [
            RecordType::AAAA,
            RecordType::MX,
            RecordType::Unknown(65280),
            RecordType::ANY,
        ] {
            let (m, o) = ask(&r, "hosta.gwa.demo.", t, View::Public, &mut a);
            assert_eq!(
                (m.metadata.response_code, o),
                (ResponseCode::NoError, Outcome::NoData),
                "{t}"
            );
            assert!(m.answers.is_empty());
            assert!(matches!(m.authorities[0].data, RData::SOA(_)));
        }
        assert!(a.asked.is_empty(), "no type but A allocates");
        let (m, _) = ask(&r, "www.example.", RecordType::A, View::Public, &mut a);
        assert_eq!(m.metadata.response_code, ResponseCode::Refused);
        let (m, _) = ask(&r, "gwa.demo.", RecordType::AXFR, View::Public, &mut a);
        assert_eq!(m.metadata.response_code, ResponseCode::Refused);
    }

    #[test]
    fn denied_policy() {
        let mut a = alloc(0);
        let q = query("hosta.gwa.demo.", RecordType::A);
        assert_eq!(
            responder().handle(&q, View::Public, Transport::Udp, &mut a),
            Action::Drop(DropReason::Denied(DenyReason::Exhausted))
        );
        let r = Responder::new(demo_zone(), DeniedPolicy::Servfail);
        match r.handle(&q, View::Public, Transport::Udp, &mut a) {
            Action::Reply { bytes, outcome } => {
                assert_eq!(outcome, Outcome::Denied(DenyReason::Exhausted));
                assert_eq!(
                    Message::from_vec(&bytes)
                        .expect("parses")
                        .metadata
                        .response_code,
                    ResponseCode::ServFail
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn edns_is_echoed_and_badvers() {
        let r = responder();
        let mut a = alloc(1);
        let mut m = Message::from_vec(&query("gwa.demo.", RecordType::SOA)).expect("parses");
        let mut e = Edns::new();
        e.set_max_payload(4096);
        m.edns = Some(e.clone());
        let Action::Reply { bytes, .. } = r.handle(
            &m.to_vec().expect("enc"),
            View::Public,
            Transport::Udp,
            &mut a,
        ) else {
            panic!()
        };
        let resp = Message::from_vec(&bytes).expect("parses");
        assert_eq!(
            resp.edns.as_ref().map(|e| e.max_payload()),
            Some(EDNS_PAYLOAD)
        );
        e.set_version(1);
        m.edns = Some(e);
        let Action::Reply { bytes, .. } = r.handle(
            &m.to_vec().expect("enc"),
            View::Public,
            Transport::Udp,
            &mut a,
        ) else {
            panic!()
        };
        let resp = Message::from_vec(&bytes).expect("parses");
        // BADVERS and BADSIG share code 16 (RFC 6891 / RFC 8945); compare the number.
        assert_eq!(u16::from(resp.metadata.response_code), 16);
        // BADVERS is decided before any allocation.
        let mut q = Message::from_vec(&query("hosta.gwa.demo.", RecordType::A)).expect("parses");
        let mut e1 = Edns::new();
        e1.set_version(1);
        q.edns = Some(e1);
        let mut none = alloc(3);
        let _ = r.handle(
            &q.to_vec().expect("enc"),
            View::Public,
            Transport::Udp,
            &mut none,
        );
        assert!(none.asked.is_empty(), "BADVERS must not allocate");
    }

    #[test]
    fn malformed_input_never_panics() {
        let r = responder();
        let mut a = alloc(0);
        assert_eq!(
            r.handle(&[], View::Public, Transport::Udp, &mut a),
            Action::Drop(DropReason::Malformed)
        );
        assert_eq!(
            r.handle(&[1, 2, 3], View::Public, Transport::Udp, &mut a),
            Action::Drop(DropReason::Malformed)
        );
        // A header that promises a question that is not there → FORMERR with the same id.
        let mut bad = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 0x3f];
        match r.handle(&bad, View::Public, Transport::Udp, &mut a) {
            Action::Reply {
                bytes,
                outcome: Outcome::FormErr,
            } => {
                assert_eq!(&bytes[0..2], &[0x12, 0x34]);
                assert_eq!(bytes[3] & 0x0f, 1);
            }
            other => panic!("{other:?}"),
        }
        // A label longer than 63 bytes.
        bad.truncate(12);
        bad.push(64);
        bad.extend(std::iter::repeat_n(b'a', 64));
        bad.extend([0, 0, 1, 0, 1]);
        assert!(matches!(
            r.handle(&bad, View::Public, Transport::Udp, &mut a),
            Action::Reply {
                outcome: Outcome::FormErr,
                ..
            }
        ));
        // A response is never answered.
        let mut resp = query("hosta.gwa.demo.", RecordType::A);
        resp[2] |= 0x80;
        assert_eq!(
            r.handle(&resp, View::Public, Transport::Udp, &mut a),
            Action::Drop(DropReason::NotAQuery)
        );
        // Deterministic garbage: every prefix and byte flip of a valid query.
        let good = query("tcp22.hosta.gwa.demo.", RecordType::A);
        let mut seed = 0x9e3779b97f4a7c15u64;
        for i in 0..5000 {
            let mut p = good.clone();
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let pos = (seed as usize) % p.len();
            p[pos] = (seed >> 32) as u8;
            p.truncate(1 + (i % good.len()).max(pos));
            let _ = r.handle(&p, View::Public, Transport::Udp, &mut a);
        }
        assert!(a.asked.len() <= 5000);
    }

    fn antispoof_responder(mode: &str) -> (Responder, crate::antispoof::AliasKey) {
        let key = crate::antispoof::AliasKey::default();
        let a = match mode {
            "tc" => AntiSpoof::Tc,
            _ => AntiSpoof::Cname(AliasZone {
                name: Name::from_ascii("alias.gwa.demo.").expect("valid"),
                lifetime: Duration::from_secs(5),
                key: key.clone(),
            }),
        };
        (responder().with_antispoof(a), key)
    }

    fn ctx(ip: &str, secs: u64) -> QueryContext {
        QueryContext {
            resolver: Some(ip.parse().expect("test address")),
            now: Duration::from_secs(secs),
        }
    }

    /// Counts what the responder noted.
    #[derive(Default)]
    struct Notes(Vec<SpoofEvent>, FakeAllocInner);
    #[derive(Default)]
    struct FakeAllocInner(usize);
    impl Allocator for Notes {
        fn allocate(&mut self, _req: AllocRequest) -> Allocation {
            self.1 .0 += 1;
            Allocation::Granted(Ipv4Addr::new(198, 51, 100, 17))
        }
        fn note(&mut self, e: SpoofEvent) {
            self.0.push(e);
        }
    }

    fn reply(a: Action) -> (Message, Outcome) {
        match a {
            Action::Reply { bytes, outcome } => {
                (Message::from_vec(&bytes).expect("parses"), outcome)
            }
            other => panic!("expected a reply, got {other:?}"),
        }
    }

    #[test]
    fn tc_mode_truncates_allocating_udp_queries_and_allocates_over_tcp() {
        let (r, _) = antispoof_responder("tc");
        let mut n = Notes::default();
        let c = ctx("203.0.113.54", 1);
        for name in ["hosta.gwa.demo.", "tcp22.hostb.gwa.demo."] {
            let (m, o) = reply(r.handle_in(
                &query(name, RecordType::A),
                View::Public,
                Transport::Udp,
                c,
                &mut n,
            ));
            assert_eq!(o, Outcome::Truncated);
            assert!(m.metadata.truncation && m.answers.is_empty());
        }
        let (m, o) = reply(r.handle_in(
            &query("_ssh._tcp.hosta.gwa.demo.", RecordType::SRV),
            View::Public,
            Transport::Udp,
            c,
            &mut n,
        ));
        assert!(m.metadata.truncation && o == Outcome::Truncated);
        assert_eq!(n.1 .0, 0, "nothing allocated over UDP");
        assert_eq!(n.0, vec![SpoofEvent::TcSent; 3]);
        // Static data is still answered over UDP.
        let (m, _) = reply(r.handle_in(
            &query("gwa.demo.", RecordType::SOA),
            View::Public,
            Transport::Udp,
            c,
            &mut n,
        ));
        assert!(!m.metadata.truncation && m.answers.len() == 1);
        // TCP allocates; the private view is not challenged.
        let (m, o) = reply(r.handle_in(
            &query("hosta.gwa.demo.", RecordType::A),
            View::Public,
            Transport::Tcp,
            c,
            &mut n,
        ));
        assert_eq!(
            (o, a_of(&m)),
            (
                Outcome::Allocated,
                vec![(Ipv4Addr::new(198, 51, 100, 17), 0)]
            )
        );
        let (_, o) = reply(r.handle_in(
            &query("hosta.gwa.demo.", RecordType::A),
            View::Private,
            Transport::Udp,
            c,
            &mut n,
        ));
        assert_eq!(o, Outcome::Static);
        assert_eq!(n.1 .0, 1);
    }

    fn cname_of(m: &Message) -> Name {
        match &m.answers.first().expect("an answer").data {
            RData::CNAME(c) => c.0.clone(),
            other => panic!("not a CNAME: {other:?}"),
        }
    }

    #[test]
    fn cname_mode_allocates_only_when_the_alias_is_followed() {
        let (r, _) = antispoof_responder("cname");
        let mut n = Notes::default();
        let (m, o) = reply(r.handle_in(
            &query("tcp22.hosta.gwa.demo.", RecordType::A),
            View::Public,
            Transport::Udp,
            ctx("203.0.113.54", 10),
            &mut n,
        ));
        assert_eq!(o, Outcome::Alias);
        assert_eq!(m.answers[0].ttl, 0);
        let alias = cname_of(&m);
        assert!(alias.to_ascii().ends_with(".alias.gwa.demo."), "{alias}");
        assert_eq!(n.1 .0, 0);
        // The follow-up from the same resolver (another address of its /24) allocates.
        let q = query(&alias.to_ascii(), RecordType::A);
        let (m, o) = reply(r.handle_in(
            &q,
            View::Public,
            Transport::Udp,
            ctx("203.0.113.55", 11),
            &mut n,
        ));
        assert_eq!(o, Outcome::Allocated);
        assert_eq!(m.answers[0].name, alias);
        assert_eq!(a_of(&m), vec![(Ipv4Addr::new(198, 51, 100, 17), 0)]);
        assert_eq!(n.1 .0, 1);
        // From another network: a fresh alias for that querier, no allocation.
        let (m, o) = reply(r.handle_in(
            &q,
            View::Public,
            Transport::Udp,
            ctx("192.0.2.1", 11),
            &mut n,
        ));
        assert_eq!(o, Outcome::Alias);
        assert_ne!(cname_of(&m), alias);
        // Late: a fresh alias too.
        let (_, o) = reply(r.handle_in(
            &q,
            View::Public,
            Transport::Udp,
            ctx("203.0.113.54", 60),
            &mut n,
        ));
        assert_eq!(o, Outcome::Alias);
        assert_eq!(n.1 .0, 1);
        assert_eq!(
            n.0,
            vec![
                SpoofEvent::AliasIssued,
                SpoofEvent::AliasFollowed,
                SpoofEvent::AliasRejected(AliasError::ResolverMismatch),
                SpoofEvent::AliasRejected(AliasError::Expired),
            ]
        );
    }

    #[test]
    fn cname_mode_forged_aliases_get_nxdomain_and_the_alias_zone_exists() {
        let (r, _) = antispoof_responder("cname");
        let mut n = Notes::default();
        let c = ctx("203.0.113.54", 10);
        let forged = format!(
            "{}.alias.gwa.demo.",
            "a".repeat(crate::antispoof::TOKEN_CHARS)
        );
        for name in [
            forged.as_str(),
            "guess.alias.gwa.demo.",
            "x.y.alias.gwa.demo.",
        ] {
            let (m, o) = reply(r.handle_in(
                &query(name, RecordType::A),
                View::Public,
                Transport::Udp,
                c,
                &mut n,
            ));
            assert_eq!(
                (m.metadata.response_code, o),
                (ResponseCode::NXDomain, Outcome::NxDomain),
                "{name}"
            );
        }
        let (m, o) = reply(r.handle_in(
            &query("alias.gwa.demo.", RecordType::A),
            View::Public,
            Transport::Udp,
            c,
            &mut n,
        ));
        assert_eq!(
            (m.metadata.response_code, o),
            (ResponseCode::NoError, Outcome::NoData)
        );
        assert_eq!(n.1 .0, 0);
        // SRV over UDP: the record without the target's address (no reservation).
        let (m, o) = reply(r.handle_in(
            &query("_ssh._tcp.hosta.gwa.demo.", RecordType::SRV),
            View::Public,
            Transport::Udp,
            c,
            &mut n,
        ));
        assert_eq!((o, m.additionals.len(), n.1 .0), (Outcome::Static, 0, 0));
        // TCP allocates directly.
        let (_, o) = reply(r.handle_in(
            &query("hosta.gwa.demo.", RecordType::A),
            View::Public,
            Transport::Tcp,
            c,
            &mut n,
        ));
        assert_eq!((o, n.1 .0), (Outcome::Allocated, 1));
    }
}
