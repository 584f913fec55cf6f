//! The sans-IO ALG engine: packets of ALG flows in, verdicts and pinholes out.
//!
//! The shell queues every packet of an ALG flow (both directions) in the
//! forward hook, where FromPrivate packets go private host → public peer and
//! FromPublic packets go peer → private host (DNAT done, SNAT not yet). A
//! flow is keyed by (transport, private addr:port, peer addr:port), the same
//! key for both directions. Its [`Role`] follows from which end uses an ALG
//! port of [`EngineConfig::ports`] (the peer's port first; when both ends use
//! one, the direction of the first packet decides).
//!
//! # TCP
//!
//! Each direction of a flow is a stream: a [`SeqAdjust`] for its
//! sequence numbers, the position up to which its messages have been
//! decided (`parsed_to`, original sequence space), the bytes of an
//! incomplete message held back (`hold`), and a replay log of the messages
//! it rewrote. A segment of the rewritten direction leaves with SEQ mapped
//! and its messages rewritten; a segment of the opposite direction leaves
//! with ACK and SACK blocks unmapped (and prunes the tracker and the log).
//!
//! * **In order** (starts at `parsed_to`, or inside/at the end of the held
//!   bytes): the held bytes and the new ones are parsed message by message.
//!   Rewritten messages are recorded in the tracker (a correction point per
//!   message) and the log. An incomplete tail is held back and the segment
//!   leaves truncated to its complete messages, or is dropped when it has
//!   none; the next in-order segment leaves with SEQ moved back to the held
//!   start and payload = held bytes + its own (a rewrite whose correction
//!   point is the held start). A retransmission of held bytes alone, while
//!   still incomplete, is dropped.
//!
//!   With Nagle the sender sends nothing more until the held segment is
//!   acknowledged. A Linux sender completes the message anyway: its tail loss
//!   probe (RFC 8985 §7, `tcp_send_loss_probe`, about two round trips later,
//!   on connections with SACK) sends the queued rest with Nagle off, and a
//!   retransmission timeout collapses the head with *already sent* segments
//!   (`tcp_retrans_try_collapse` walks the retransmission queue only, not
//!   unsent data). A sender with neither would retransmit the held segment
//!   forever, so after [`EngineConfig::max_hold_retransmissions`] dropped
//!   retransmissions the held bytes pass unchanged, the rest of that message
//!   follows unchanged (the rewriter still frames it, so the messages after
//!   it are rewritten again) and the miss is counted
//!   ([`EngineStats::holds_given_up`], [`EngineStats::missed_rewrites`]).
//! * **Old data** (retransmission below `parsed_to`, also the old part of a
//!   segment that straddles it): rebuilt from the replay log instead of being
//!   parsed again: each rewritten message it fully contains is replaced by
//!   the bytes sent the first time; a rewritten message it only partly covers
//!   is cut off (at the end) or skipped (at the start), because a part of a
//!   rewritten message has no counterpart. The retransmission is thus
//!   byte-identical to what the receiver got the first time, whatever the
//!   segmentation, and it is independent of the rewriter.
//! * **Already acknowledged**: the part of a segment below the highest
//!   position the receiver acknowledged is cut off (the receiver has it; the
//!   sender resends it only because the ACK was lost behind the gateway).
//!   This is what lets the tracker and the replay log forget everything
//!   below that ACK. A segment wholly below it leaves as one byte just below
//!   the acknowledged point: the receiver discards it unread and answers with
//!   a duplicate ACK, which is what the sender needs (dropping it would leave
//!   the sender retransmitting forever).
//! * **Out of order** (starts beyond the held bytes, i.e. a gap): dropped.
//!   The bytes in the gap may hold a message whose rewrite changes the
//!   length, which would shift this segment after it had been forwarded, and
//!   a message that starts in this segment cannot be found without the
//!   bytes before it. The sender retransmits (control connections are low
//!   rate, so the cost is a retransmission timeout after a loss). Directions
//!   that are never rewritten (FTP from the public side) are not affected.
//! * A hold longer than [`EngineConfig::max_hold`]: the tail passes
//!   unchanged and the direction is no longer parsed (counted).
//! * FIN or RST: an incomplete held message can no longer complete and is
//!   released unchanged; the flow stays for [`EngineConfig::closed_linger`]
//!   to serve retransmissions, or until a new SYN reuses the key.
//! * Sequence arithmetic is modulo 2^32 ([`seq_lt`]).
//! * The receive window is passed as is (a few bytes of difference between
//!   the two sequence spaces are harmless).
//! * A stale ACK or SACK block (reordered behind a newer one) is unmapped
//!   with the corrections still kept and may come out below the sender's
//!   `snd_una`, where TCP ignores it; it never comes out beyond what the
//!   receiver has.
//! * A packet made longer than the one the sender sent leaves with Don't
//!   Fragment cleared ([`packet::allow_fragmentation`]): a held message joined
//!   with the next segment can exceed the path MTU, and the sender could not
//!   act on an ICMP "fragmentation needed" for a size it never sent.
//! * SYN data (TCP Fast Open) passes unparsed.
//!
//! # UDP
//!
//! Each datagram is one or more complete messages; an incomplete message is
//! passed unchanged.
//!
//! # Ports of pinholes
//!
//! The public port of a pinhole is the private port (identity) unless the
//! engine already has a live pinhole on the same public address and port for
//! the same peer towards another private endpoint; then the next free port
//! upwards (wrapping within 1024..=65535) is taken. A flow remembers its
//! answers, so a message parsed again (a UDP retransmission) gets the same
//! port. [`Pinhole::lifetime`] is set from the configuration per protocol.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use crate::ftp::FtpRewriter;
use crate::packet::{self, Packet, TcpEdit, TcpSegment, UdpDatagram};
use crate::rtsp::RtspRewriter;
use crate::seqadj::{seq_le, seq_lt, SeqAdjust, MAX_CORRECTIONS};
use crate::sip::SipRewriter;
use crate::{
    Direction, FlowAddrs, Outcome, Pinhole, PortAlloc, Protocol, Rewriter, Role, Transport,
};

/// Replay log bound per direction, in bytes of rewritten messages.
const MAX_LOG_BYTES: usize = 32 * 1024;
/// How many ports above the private one are tried for a pinhole.
const PORT_TRIES: u32 = 256;

/// Engine configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineConfig {
    /// ALG ports: (transport, port, protocol).
    pub ports: Vec<(Transport, u16, Protocol)>,
    /// Idle time after which a TCP flow is forgotten.
    pub flow_idle: Duration,
    /// Idle time after which a UDP flow is forgotten.
    pub udp_flow_idle: Duration,
    /// How long a closed (FIN both ways, or RST) TCP flow is kept for
    /// retransmissions.
    pub closed_linger: Duration,
    /// Flows tracked at most; new flows beyond pass unchanged (counted).
    pub max_flows: usize,
    /// Live pinholes (port allocations) per flow at most; beyond it the
    /// oldest allocation is recycled.
    pub max_pinholes_per_flow: usize,
    /// Bytes held at most for an incomplete message.
    pub max_hold: usize,
    /// Retransmissions of held bytes alone (message still incomplete)
    /// answered with a drop; the next one passes them unchanged and the
    /// message is not rewritten (counted). `u32::MAX`: never give up.
    pub max_hold_retransmissions: u32,
    /// Lifetime of FTP data connection pinholes.
    pub ftp_data_lifetime: Duration,
    /// Lifetime of SIP/RTSP media pinholes.
    pub media_lifetime: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            ports: vec![
                (Transport::Tcp, 21, Protocol::Ftp),
                (Transport::Udp, 5060, Protocol::Sip),
                (Transport::Tcp, 5060, Protocol::Sip),
                (Transport::Tcp, 554, Protocol::Rtsp),
            ],
            flow_idle: Duration::from_secs(300),
            udp_flow_idle: Duration::from_secs(180),
            closed_linger: Duration::from_secs(10),
            max_flows: 4096,
            max_pinholes_per_flow: 64,
            max_hold: 8192,
            max_hold_retransmissions: 2,
            ftp_data_lifetime: Duration::from_secs(30),
            media_lifetime: Duration::from_secs(120),
        }
    }
}

/// What the engine asks the shell about a new flow.
pub trait FlowContext {
    /// The address the peer sees for our side: the service address for
    /// [`Role::PrivateClient`] flows, the claimed pool address for
    /// [`Role::PrivateServer`] flows. `None`: the flow is passed unchanged
    /// (asked again on its next packet, counted).
    fn public_addr(
        &self,
        private: SocketAddrV4,
        peer: SocketAddrV4,
        transport: Transport,
        role: Role,
    ) -> Option<Ipv4Addr>;
    /// The private host's FQDN, if known.
    fn host_fqdn(&self, private: Ipv4Addr) -> Option<String>;
    /// RGW64: the IPv6 address of the IPv6-only host whose proxy IPv4 is
    /// `private` (see [`FlowAddrs::private_v6`]). Default: none (IPv4 only).
    fn private_v6(&self, private: Ipv4Addr) -> Option<std::net::Ipv6Addr> {
        let _ = private;
        None
    }
    /// RGW64: the translator's /96 prefix (see [`FlowAddrs::prefix64`]).
    fn prefix64(&self) -> Option<std::net::Ipv6Addr> {
        None
    }
    /// RGW64 NAT46: the IPv6 destination bound to `peer` when `peer` is a
    /// proxy IPv4 of the translator (see [`FlowAddrs::peer_v6`]).
    fn peer_v6(&self, peer: Ipv4Addr) -> Option<std::net::Ipv6Addr> {
        let _ = peer;
        None
    }
    /// RGW64 NAT46: the address through which the IPv6 peer `peer_v6`
    /// sees the IPv4 host `private` (see [`FlowAddrs::public_v6`]).
    fn public_v6(
        &self,
        private: Ipv4Addr,
        peer_v6: std::net::Ipv6Addr,
    ) -> Option<std::net::Ipv6Addr> {
        let _ = (private, peer_v6);
        None
    }
}

/// What to do with a packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Pass unchanged.
    Accept,
    /// Pass this packet instead (a whole IPv4 packet).
    Replace(Vec<u8>),
    /// Drop (the sender will retransmit).
    Drop,
}

/// The verdict on one packet and the pinholes it requires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub verdict: Verdict,
    pub pinholes: Vec<Pinhole>,
}

impl Decision {
    fn accept() -> Self {
        Self {
            verdict: Verdict::Accept,
            pinholes: Vec::new(),
        }
    }
}

/// Counters since the engine started (`flows` is the current number).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EngineStats {
    pub packets: u64,
    /// Packets that are not whole IPv4 TCP/UDP packets (passed unchanged).
    pub unparsed: u64,
    /// Packets of neither an ALG port nor a tracked flow (passed unchanged).
    pub not_alg: u64,
    pub flows: usize,
    pub flows_created: u64,
    pub flows_expired: u64,
    /// Closed flows removed early to make room under `max_flows`.
    pub flows_evicted: u64,
    /// Packets of new flows passed untracked because `max_flows` was reached.
    pub flows_over_limit: u64,
    /// Packets passed untracked because the shell knew no public address.
    pub no_public_addr: u64,
    /// Messages rewritten.
    pub rewrites: u64,
    /// Packets replaced (rewritten payload or adjusted SEQ/ACK/SACK).
    pub packets_replaced: u64,
    pub pinholes_requested: u64,
    /// Port requests refused (no free port).
    pub port_alloc_failed: u64,
    /// Allocations forgotten early because a flow reached
    /// `max_pinholes_per_flow` (the oldest gives way to the new one).
    pub pinholes_recycled: u64,
    /// Messages the rewriter could not parse (passed unchanged).
    pub malformed: u64,
    /// Segments whose tail was held back as an incomplete message.
    pub holds: u64,
    /// Holds beyond `max_hold` (the direction is no longer parsed).
    pub hold_overflows: u64,
    pub dropped: u64,
    /// Dropped: beyond a gap in the stream.
    pub dropped_out_of_order: u64,
    /// Dropped: held bytes only, message still incomplete.
    pub dropped_incomplete: u64,
    /// Retransmissions rebuilt from the replay log with a rewritten message.
    pub replays: u64,
    /// Retransmissions of data the receiver had acknowledged already,
    /// passed as a one-byte duplicate.
    pub duplicates: u64,
    /// Rewritten packets that could not be built (over 65535 bytes): passed
    /// unchanged.
    pub build_errors: u64,
    /// Held incomplete messages passed unchanged because the sender kept
    /// retransmitting them alone (see the module documentation).
    pub holds_given_up: u64,
    /// Messages the rewriter rewrote that had to pass unchanged (their
    /// start had been given up on).
    pub missed_rewrites: u64,
}

/// One flow, for `rgw status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowInfo {
    pub protocol: Protocol,
    pub role: Role,
    pub transport: Transport,
    pub private: SocketAddrV4,
    pub peer: SocketAddrV4,
    pub public: Ipv4Addr,
    pub created: Instant,
    pub last_seen: Instant,
    /// Time since creation, relative to the latest time the engine saw.
    pub age: Duration,
    pub rewrites: u64,
    /// Current SEQ offset of the private host's stream (bytes added).
    pub offset_from_private: i64,
    /// Current SEQ offset of the peer's stream.
    pub offset_from_public: i64,
    /// Correction points kept (from private, from public).
    pub corrections: (usize, usize),
    /// Bytes held back (from private, from public).
    pub held: (usize, usize),
    pub closed: bool,
}

/// Flow key: the same for both directions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct FlowKey {
    transport: Transport,
    private: SocketAddrV4,
    peer: SocketAddrV4,
}

/// A rewritten message kept for retransmissions: original range and the
/// bytes sent instead.
#[derive(Debug, Clone)]
struct Replay {
    start: u32,
    end: u32,
    bytes: Vec<u8>,
}

/// One direction of a TCP flow (the sender's stream).
#[derive(Debug, Clone, Default)]
struct Stream {
    adj: SeqAdjust,
    /// Original-space sequence number up to which messages are decided.
    parsed_to: Option<u32>,
    /// Bytes `[parsed_to, parsed_to + hold.len())`, an incomplete message.
    hold: Vec<u8>,
    log: VecDeque<Replay>,
    log_bytes: usize,
    /// Parsing given up (hold overflow).
    bypass: bool,
    /// Original sequence number of the FIN, once seen.
    fin_at: Option<u32>,
    /// RST seen.
    rst: bool,
    /// Highest original-space position the receiver acknowledged.
    acked: Option<u32>,
    /// End of the highest sequence number the sender was seen to send.
    sent_max: Option<u32>,
    /// Retransmissions of the held bytes alone seen so far.
    hold_retx: u32,
    /// The held bytes were given up on and passed unchanged: the message
    /// they start is passed unchanged when it completes.
    hold_sent: bool,
}

impl Stream {
    fn prune(&mut self, ack: u32) {
        let acked = self.adj.unmap_ack(ack);
        // An ACK beyond anything the sender sent is bogus: not trusted for
        // trimming or pruning.
        if self.sent_max.is_some_and(|m| seq_lt(m, acked)) {
            return;
        }
        if self.acked.is_none_or(|a| seq_lt(a, acked)) {
            self.acked = Some(acked);
        }
        self.adj.prune(ack);
        while let Some(r) = self.log.front() {
            if seq_le(r.end, acked) {
                self.log_bytes -= r.bytes.len();
                self.log.pop_front();
            } else {
                break;
            }
        }
    }

    fn log(&mut self, start: u32, end: u32, bytes: &[u8]) {
        if self.log.iter().any(|r| r.start == start) {
            return;
        }
        self.log_bytes += bytes.len();
        self.log.push_back(Replay {
            start,
            end,
            bytes: bytes.to_vec(),
        });
        while self.log.len() > MAX_CORRECTIONS || self.log_bytes > MAX_LOG_BYTES {
            match self.log.pop_front() {
                Some(r) => self.log_bytes -= r.bytes.len(),
                None => break,
            }
        }
    }

    fn offset(&self) -> i64 {
        self.parsed_to
            .map(|p| self.adj.offset_for_seq(p))
            .unwrap_or(0)
    }
}

/// A port allocation of a flow.
#[derive(Debug, Clone, Copy)]
struct Allocation {
    public_port: u16,
    expires: Instant,
}

#[derive(Debug)]
struct Flow {
    protocol: Protocol,
    addrs: FlowAddrs,
    created: Instant,
    last_seen: Instant,
    closed: bool,
    rewrites: u64,
    from_private: Stream,
    from_public: Stream,
    ports: BTreeMap<(Transport, u16), Allocation>,
}

/// A live pinhole: (transport, public addr, public port, peer) → private end.
type PinholeKey = (Transport, Ipv4Addr, u16, Ipv4Addr);

#[derive(Debug, Clone, Copy)]
struct PinholeEntry {
    private: (Ipv4Addr, u16),
    expires: Instant,
}

/// The per-flow [`PortAlloc`] handed to a rewriter.
struct FlowPorts<'a> {
    flow_ports: &'a mut BTreeMap<(Transport, u16), Allocation>,
    pinholes: &'a HashMap<PinholeKey, PinholeEntry>,
    public: Ipv4Addr,
    peer: Ipv4Addr,
    private: Ipv4Addr,
    now: Instant,
    lifetime: Duration,
    max: usize,
    failed: &'a mut u64,
    recycled: &'a mut u64,
}

impl FlowPorts<'_> {
    fn taken(&self, transport: Transport, port: u16, private_port: u16) -> bool {
        let foreign = self
            .pinholes
            .get(&(transport, self.public, port, self.peer))
            .is_some_and(|e| e.expires > self.now && e.private != (self.private, private_port));
        let own = self.flow_ports.iter().any(|(&(t, p), a)| {
            t == transport && p != private_port && a.public_port == port && a.expires > self.now
        });
        foreign || own
    }
}

impl PortAlloc for FlowPorts<'_> {
    fn public_port(&mut self, transport: Transport, private_port: u16) -> Option<u16> {
        let now = self.now;
        let expires = now + self.lifetime;
        if let Some(a) = self.flow_ports.get_mut(&(transport, private_port)) {
            if a.expires > now {
                a.expires = expires;
                return Some(a.public_port);
            }
        }
        self.flow_ports.retain(|_, a| a.expires > now);
        if self.flow_ports.len() >= self.max {
            // At the bound the allocation that expires first gives way: it is
            // the oldest, and its data connection has almost certainly come
            // (an lftp mirror asks for a port per file, faster than the data
            // lifetime lets them expire). Its kernel pinhole keeps its own
            // timeout; only the engine forgets it for collision checks.
            let oldest = self
                .flow_ports
                .iter()
                .min_by_key(|(_, a)| a.expires)
                .map(|(k, _)| *k);
            if let Some(k) = oldest {
                self.flow_ports.remove(&k);
                *self.recycled += 1;
            }
        }
        let mut candidate = private_port;
        for _ in 0..PORT_TRIES {
            if candidate != 0 && !self.taken(transport, candidate, private_port) {
                self.flow_ports.insert(
                    (transport, private_port),
                    Allocation {
                        public_port: candidate,
                        expires,
                    },
                );
                return Some(candidate);
            }
            candidate = if candidate == u16::MAX {
                1024
            } else {
                candidate + 1
            };
        }
        *self.failed += 1;
        None
    }
}

/// The sans-IO ALG engine.
pub struct Engine {
    cfg: EngineConfig,
    flows: HashMap<FlowKey, Flow>,
    pinholes: HashMap<PinholeKey, PinholeEntry>,
    stats: EngineStats,
    ftp: Box<dyn Rewriter + Send>,
    sip: Box<dyn Rewriter + Send>,
    rtsp: Box<dyn Rewriter + Send>,
    latest: Option<Instant>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("cfg", &self.cfg)
            .field("flows", &self.flows.len())
            .field("stats", &self.stats)
            .finish()
    }
}

/// Result of parsing new in-order bytes.
struct Parsed {
    out: Vec<u8>,
    /// Bytes of the input that were complete messages (or passed).
    complete: usize,
    /// (input offset, old length, output offset, new length) per rewrite.
    rewrites: Vec<(usize, usize, usize, usize)>,
    pinholes: Vec<Pinhole>,
    /// The tail from `complete` is an incomplete message.
    incomplete: bool,
}

/// Whether messages of this direction are parsed at all. FTP from the
/// public side only towards an IPv6-only private server (RGW64: its
/// client's PORT/EPRT become IPv6 EPRT, see [`crate::ftp`]) and from an
/// IPv6-only server to a private IPv4 client (NAT46: its 229 may become a
/// 227).
fn parses(protocol: Protocol, dir: Direction, addrs: &FlowAddrs) -> bool {
    !(protocol == Protocol::Ftp && dir == Direction::FromPublic)
        || (addrs.role == Role::PrivateServer
            && addrs.private_v6.is_some()
            && addrs.prefix64.is_some())
        || (addrs.role == Role::PrivateClient && addrs.nat46().is_some())
}

/// Offset of `seq` from `base` as an index (wrap-around safe).
fn dist(base: u32, seq: u32) -> usize {
    seq.wrapping_sub(base) as usize
}

impl Engine {
    pub fn new(cfg: EngineConfig) -> Self {
        Self {
            cfg,
            flows: HashMap::new(),
            pinholes: HashMap::new(),
            stats: EngineStats::default(),
            ftp: Box::new(FtpRewriter),
            sip: Box::new(SipRewriter),
            rtsp: Box::new(RtspRewriter),
            latest: None,
        }
    }

    /// Replaces the rewriter of a protocol (tests, or a configured variant).
    pub fn set_rewriter(&mut self, protocol: Protocol, rewriter: Box<dyn Rewriter + Send>) {
        match protocol {
            Protocol::Ftp => self.ftp = rewriter,
            Protocol::Sip => self.sip = rewriter,
            Protocol::Rtsp => self.rtsp = rewriter,
        }
    }

    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }

    pub fn stats(&self) -> EngineStats {
        EngineStats {
            flows: self.flows.len(),
            ..self.stats.clone()
        }
    }

    /// The tracked flows.
    pub fn flows(&self) -> Vec<FlowInfo> {
        self.flows
            .values()
            .map(|f| FlowInfo {
                protocol: f.protocol,
                role: f.addrs.role,
                transport: f.addrs.transport,
                private: f.addrs.private,
                peer: f.addrs.peer,
                public: f.addrs.public,
                created: f.created,
                last_seen: f.last_seen,
                age: self
                    .latest
                    .map(|n| n.saturating_duration_since(f.created))
                    .unwrap_or_default(),
                rewrites: f.rewrites,
                offset_from_private: f.from_private.offset(),
                offset_from_public: f.from_public.offset(),
                corrections: (f.from_private.adj.len(), f.from_public.adj.len()),
                held: (f.from_private.hold.len(), f.from_public.hold.len()),
                closed: f.closed,
            })
            .collect()
    }

    /// Forgets idle flows, closed flows after their linger time and expired
    /// pinholes.
    pub fn expire(&mut self, now: Instant) {
        self.see(now);
        let cfg = &self.cfg;
        let before = self.flows.len();
        self.flows.retain(|_, f| {
            let idle = now.saturating_duration_since(f.last_seen);
            let limit = if f.closed {
                cfg.closed_linger
            } else if f.addrs.transport == Transport::Udp {
                cfg.udp_flow_idle
            } else {
                cfg.flow_idle
            };
            idle < limit
        });
        self.stats.flows_expired += (before - self.flows.len()) as u64;
        self.pinholes.retain(|_, e| e.expires > now);
    }

    fn see(&mut self, now: Instant) {
        if self.latest.is_none_or(|l| l < now) {
            self.latest = Some(now);
        }
    }

    /// Decides on one packet of the forward hook.
    pub fn handle(
        &mut self,
        now: Instant,
        dir: Direction,
        packet: &[u8],
        ctx: &dyn FlowContext,
    ) -> Decision {
        self.stats.packets += 1;
        self.see(now);
        let pkt = match Packet::parse(packet) {
            Ok(p) => p,
            Err(_) => {
                self.stats.unparsed += 1;
                return Decision::accept();
            }
        };
        let transport = match pkt.l4 {
            packet::Transport::Tcp(_) => Transport::Tcp,
            packet::Transport::Udp(_) => Transport::Udp,
        };
        let src = SocketAddrV4::new(pkt.ip.src(), pkt.src_port());
        let dst = SocketAddrV4::new(pkt.ip.dst(), pkt.dst_port());
        let (private, peer) = match dir {
            Direction::FromPrivate => (src, dst),
            Direction::FromPublic => (dst, src),
        };
        let key = FlowKey {
            transport,
            private,
            peer,
        };
        if !self.flows.contains_key(&key) && !self.create(now, dir, key, ctx) {
            return Decision::accept();
        }
        let Engine {
            cfg,
            flows,
            pinholes,
            stats,
            ftp,
            sip,
            rtsp,
            ..
        } = self;
        let Some(flow) = flows.get_mut(&key) else {
            return Decision::accept();
        };
        flow.last_seen = now;
        let rewriter: &dyn Rewriter = match flow.protocol {
            Protocol::Ftp => ftp.as_ref(),
            Protocol::Sip => sip.as_ref(),
            Protocol::Rtsp => rtsp.as_ref(),
        };
        let mut cx = Cx {
            cfg,
            pinholes,
            stats,
            rewriter,
            protocol: flow.protocol,
            now,
        };
        let decision = match pkt.l4 {
            packet::Transport::Tcp(t) => cx.tcp(flow, dir, &pkt, &t),
            packet::Transport::Udp(u) => cx.udp(flow, dir, &pkt, &u),
        };
        if matches!(decision.verdict, Verdict::Replace(_)) {
            self.stats.packets_replaced += 1;
        }
        if decision.verdict == Verdict::Drop {
            self.stats.dropped += 1;
        }
        decision
    }

    /// Creates the flow for `key` if it is an ALG flow and may be tracked.
    fn create(
        &mut self,
        now: Instant,
        dir: Direction,
        key: FlowKey,
        ctx: &dyn FlowContext,
    ) -> bool {
        let port_of = |port: u16| {
            self.cfg
                .ports
                .iter()
                .find(|&&(t, p, _)| t == key.transport && p == port)
                .map(|&(_, _, proto)| proto)
        };
        let (protocol, role) = match (port_of(key.peer.port()), port_of(key.private.port())) {
            (Some(a), Some(_)) => match dir {
                Direction::FromPrivate => (a, Role::PrivateClient),
                Direction::FromPublic => (a, Role::PrivateServer),
            },
            (Some(a), None) => (a, Role::PrivateClient),
            (None, Some(b)) => (b, Role::PrivateServer),
            (None, None) => {
                self.stats.not_alg += 1;
                return false;
            }
        };
        if self.flows.len() >= self.cfg.max_flows {
            self.expire(now);
        }
        if self.flows.len() >= self.cfg.max_flows {
            // Evict the closed flow seen longest ago.
            let victim = self
                .flows
                .iter()
                .filter(|(_, f)| f.closed)
                .min_by_key(|(_, f)| f.last_seen)
                .map(|(k, _)| *k);
            match victim {
                Some(k) => {
                    self.flows.remove(&k);
                    self.stats.flows_evicted += 1;
                }
                None => {
                    self.stats.flows_over_limit += 1;
                    return false;
                }
            }
        }
        let Some(public) = ctx.public_addr(key.private, key.peer, key.transport, role) else {
            self.stats.no_public_addr += 1;
            return false;
        };
        let private_v6 = ctx.private_v6(*key.private.ip());
        // NAT46 (an IPv4 host to an IPv6-only peer) needs all three
        // addresses; a flow of an IPv6-only host is never one.
        let nat46 = match private_v6 {
            Some(_) => None,
            None => {
                let peer = ctx.peer_v6(*key.peer.ip());
                let public = peer.and_then(|p| ctx.public_v6(*key.private.ip(), p));
                match (peer, public, ctx.prefix64()) {
                    (Some(peer), Some(public), Some(_)) => Some((peer, public)),
                    _ => None,
                }
            }
        };
        let addrs = FlowAddrs {
            private: key.private,
            peer: key.peer,
            public,
            host_fqdn: ctx.host_fqdn(*key.private.ip()),
            private_v6,
            prefix64: (private_v6.is_some() || nat46.is_some())
                .then(|| ctx.prefix64())
                .flatten(),
            epsv_for_pasv: false,
            peer_v6: nat46.map(|n| n.0),
            public_v6: nat46.map(|n| n.1),
            role,
            transport: key.transport,
        };
        self.flows.insert(
            key,
            Flow {
                protocol,
                addrs,
                created: now,
                last_seen: now,
                closed: false,
                rewrites: 0,
                from_private: Stream::default(),
                from_public: Stream::default(),
                ports: BTreeMap::new(),
            },
        );
        self.stats.flows_created += 1;
        true
    }
}

/// Borrowed engine state for deciding on one packet.
struct Cx<'a> {
    cfg: &'a EngineConfig,
    pinholes: &'a mut HashMap<PinholeKey, PinholeEntry>,
    stats: &'a mut EngineStats,
    rewriter: &'a dyn Rewriter,
    protocol: Protocol,
    now: Instant,
}

impl Cx<'_> {
    fn lifetime(&self, protocol: Protocol) -> Duration {
        match protocol {
            Protocol::Ftp => self.cfg.ftp_data_lifetime,
            Protocol::Sip | Protocol::Rtsp => self.cfg.media_lifetime,
        }
    }

    /// Parses `data` (starting on a message boundary) message by message.
    /// `last`: no more bytes will come (FIN, RST, or a datagram), so an
    /// incomplete message passes unchanged.
    #[allow(clippy::too_many_arguments)]
    fn parse(
        &mut self,
        addrs: &mut FlowAddrs,
        ports: &mut BTreeMap<(Transport, u16), Allocation>,
        rewrites: &mut u64,
        lifetime: Duration,
        dir: Direction,
        data: &[u8],
        last: bool,
        keep_first: bool,
    ) -> Parsed {
        let mut p = Parsed {
            out: Vec::with_capacity(data.len() + 64),
            complete: 0,
            rewrites: Vec::new(),
            pinholes: Vec::new(),
            incomplete: false,
        };
        let mut alloc = FlowPorts {
            flow_ports: ports,
            pinholes: self.pinholes,
            public: addrs.public,
            peer: *addrs.peer.ip(),
            private: *addrs.private.ip(),
            now: self.now,
            lifetime,
            max: self.cfg.max_pinholes_per_flow,
            failed: &mut self.stats.port_alloc_failed,
            recycled: &mut self.stats.pinholes_recycled,
        };
        let mut off = 0;
        while let Some(rest) = data.get(off..).filter(|r| !r.is_empty()) {
            let mut r = self.rewriter.rewrite(rest, dir, addrs, &mut alloc);
            let n = r.consumed;
            let valid = n >= 1 && n <= rest.len();
            if self.protocol == Protocol::Ftp && valid && r.outcome != Outcome::Incomplete {
                // RGW64 PASV state: decided per message, in stream order
                // (retransmissions are replayed, never parsed again).
                if let Some(msg) = rest.get(..n) {
                    addrs.epsv_for_pasv = crate::ftp::epsv_for_pasv_after(addrs, dir, msg);
                }
            }
            if keep_first && off == 0 && matches!(r.outcome, Outcome::Rewritten(_)) {
                // Its start has gone out unchanged already.
                self.stats.missed_rewrites += 1;
                r.outcome = Outcome::Unchanged;
                r.pinholes.clear();
            }
            match r.outcome {
                Outcome::Incomplete if !last => {
                    p.incomplete = true;
                    break;
                }
                Outcome::Incomplete => {
                    p.out.extend_from_slice(rest);
                    off = data.len();
                }
                Outcome::Unchanged if valid => {
                    p.out.extend_from_slice(rest.get(..n).unwrap_or(rest));
                    off += n;
                }
                Outcome::Rewritten(bytes) if valid => {
                    p.rewrites.push((off, n, p.out.len(), bytes.len()));
                    p.out.extend_from_slice(&bytes);
                    off += n;
                    self.stats.rewrites += 1;
                    *rewrites += 1;
                }
                Outcome::Malformed if valid => {
                    self.stats.malformed += 1;
                    p.out.extend_from_slice(rest.get(..n).unwrap_or(rest));
                    off += n;
                }
                _ => {
                    // A rewriter answer that does not fit the input.
                    self.stats.malformed += 1;
                    p.out.extend_from_slice(rest);
                    off = data.len();
                }
            }
            for mut h in r.pinholes {
                h.lifetime = lifetime;
                p.pinholes.push(h);
            }
        }
        p.complete = off;
        for h in &p.pinholes {
            self.pinholes.insert(
                (h.transport, h.public_addr, h.public_port, h.peer),
                PinholeEntry {
                    private: (h.private_addr, h.private_port),
                    expires: self.now + h.lifetime,
                },
            );
        }
        self.stats.pinholes_requested += p.pinholes.len() as u64;
        p
    }

    fn udp(
        &mut self,
        flow: &mut Flow,
        dir: Direction,
        pkt: &Packet<'_>,
        u: &UdpDatagram<'_>,
    ) -> Decision {
        let payload = u.payload();
        if payload.is_empty() || !parses(flow.protocol, dir, &flow.addrs) {
            return Decision::accept();
        }
        let lifetime = self.lifetime(flow.protocol);
        let parsed = self.parse(
            &mut flow.addrs,
            &mut flow.ports,
            &mut flow.rewrites,
            lifetime,
            dir,
            payload,
            true,
            false,
        );
        let pinholes = parsed.pinholes;
        if parsed.rewrites.is_empty() || parsed.out == payload {
            return Decision {
                verdict: Verdict::Accept,
                pinholes,
            };
        }
        let verdict = match packet::rebuild_udp(&pkt.ip, u, &parsed.out) {
            Ok(mut b) => {
                if b.len() > pkt.ip.total_len() {
                    let id = packet::sum_words(0, &parsed.out) as u16;
                    packet::allow_fragmentation(&mut b, id);
                }
                Verdict::Replace(b)
            }
            Err(_) => {
                self.stats.build_errors += 1;
                Verdict::Accept
            }
        };
        Decision { verdict, pinholes }
    }

    fn tcp(
        &mut self,
        flow: &mut Flow,
        dir: Direction,
        pkt: &Packet<'_>,
        t: &TcpSegment<'_>,
    ) -> Decision {
        let flags = t.flags();
        let seq = t.seq();
        let parse = parses(flow.protocol, dir, &flow.addrs);
        let lifetime = self.lifetime(flow.protocol);
        let Flow {
            addrs,
            closed,
            rewrites,
            from_private,
            from_public,
            ports,
            ..
        } = flow;
        let (snd, rcv) = match dir {
            Direction::FromPrivate => (from_private, from_public),
            Direction::FromPublic => (from_public, from_private),
        };
        if flags.syn() {
            let isn_next = seq.wrapping_add(1);
            if *closed || snd.parsed_to.is_some_and(|p| p != isn_next) {
                // A new connection on the same key: forget the old one.
                *snd = Stream::default();
                if !flags.ack() {
                    *rcv = Stream::default();
                }
                *closed = false;
            }
            // SYN data (TCP Fast Open) passes unparsed.
            snd.parsed_to = Some(isn_next.wrapping_add(t.payload().len() as u32));
        }

        let end = seq.wrapping_add(t.seq_len());
        if snd.sent_max.is_none_or(|m| seq_lt(m, end)) {
            snd.sent_max = Some(end);
        }

        // ACK and SACK refer to the opposite stream, in its rewritten space.
        let ack = if flags.ack() {
            let a = rcv.adj.unmap_ack(t.ack());
            rcv.prune(t.ack());
            a
        } else {
            t.ack()
        };
        let mut sack = None;
        if !rcv.adj.is_empty() {
            let orig = t.sack_blocks();
            if !orig.is_empty() {
                let mut blocks = orig.clone();
                rcv.adj.unmap_sack(&mut blocks);
                blocks.retain(|&(l, r)| l != r);
                if blocks != orig {
                    sack = Some(blocks);
                }
            }
        }

        // Data: SYN data (TCP Fast Open) is passed unparsed.
        let payload = if flags.syn() { &[][..] } else { t.payload() };
        if flags.fin() {
            snd.fin_at = Some(seq.wrapping_add(payload.len() as u32));
        }
        if flags.rst() {
            snd.rst = true;
        }
        let mut pinholes = Vec::new();
        let mut emitted: Option<(u32, Vec<u8>)> = None;
        let mut seq_for_empty = seq;
        if parse && !snd.bypass {
            let hold_end = snd.parsed_to.map(|p| p.wrapping_add(snd.hold.len() as u32));
            let flush = !snd.hold.is_empty() && (snd.rst || snd.fin_at == hold_end);
            if !payload.is_empty() || flush {
                let mut ps = PerStream {
                    addrs,
                    ports,
                    rewrites,
                    lifetime,
                    dir,
                };
                match self.stream_data(snd, &mut ps, seq, payload, flags.fin(), &mut pinholes) {
                    Some(e) => emitted = Some(e),
                    None => {
                        return Decision {
                            verdict: Verdict::Drop,
                            pinholes,
                        }
                    }
                }
            } else if let (Some(p), Some(h)) = (snd.parsed_to, hold_end) {
                // A segment without data inside or at the end of the held
                // bytes: place it where the receiver expects the next byte.
                if seq_lt(p, seq) && seq_le(seq, h) {
                    seq_for_empty = p;
                }
            }
        }
        let stream_closed = |s: &Stream| s.rst || s.fin_at.is_some();
        if snd.rst || (stream_closed(snd) && stream_closed(rcv)) {
            *closed = true;
        }

        let orig_payload = t.payload();
        let (out_seq, out_payload): (u32, &[u8]) = match &emitted {
            Some((rw_seq, bytes)) => (*rw_seq, bytes),
            None => (snd.adj.map_seq(seq_for_empty), orig_payload),
        };
        let unchanged =
            out_seq == seq && ack == t.ack() && sack.is_none() && out_payload == orig_payload;
        if unchanged {
            return Decision {
                verdict: Verdict::Accept,
                pinholes,
            };
        }
        let edit = TcpEdit {
            seq: out_seq,
            ack,
            sack: sack.as_deref(),
            payload: out_payload,
        };
        let verdict = match packet::rebuild_tcp(&pkt.ip, t, &edit) {
            Ok(mut b) => {
                if b.len() > pkt.ip.total_len() {
                    packet::allow_fragmentation(&mut b, out_seq as u16 ^ (out_seq >> 16) as u16);
                }
                Verdict::Replace(b)
            }
            Err(_) => {
                self.stats.build_errors += 1;
                Verdict::Accept
            }
        };
        Decision { verdict, pinholes }
    }

    /// The data of a segment of a parsed direction: `Some((SEQ to send,
    /// payload to send))`, or `None` to drop the segment.
    fn stream_data(
        &mut self,
        snd: &mut Stream,
        ps: &mut PerStream<'_>,
        seq: u32,
        payload: &[u8],
        fin: bool,
        pinholes: &mut Vec<Pinhole>,
    ) -> Option<(u32, Vec<u8>)> {
        let (mut seq, mut payload) = (seq, payload);
        if let Some(a) = snd.acked.filter(|&a| seq_lt(seq, a)) {
            let e = seq.wrapping_add(payload.len() as u32);
            if seq_le(e, a) {
                // Wholly acknowledged: the ACK was lost on its way to the
                // sender. Send one byte just below the acknowledged point
                // (its content is discarded by the receiver, which answers
                // with a duplicate ACK that tells the sender).
                self.stats.duplicates += 1;
                let last = payload.last().copied()?;
                let at = snd
                    .adj
                    .map_seq(a)
                    .wrapping_sub(1)
                    .wrapping_sub(u32::from(fin));
                return Some((at, vec![last]));
            }
            // Trim what the receiver already has: the replay log and the
            // correction points below it are pruned.
            payload = payload.get(dist(seq, a)..).unwrap_or(&[]);
            seq = a;
        }
        let mut p = *snd.parsed_to.get_or_insert(seq);
        if let Some(a) = snd.acked {
            if seq_lt(p.wrapping_add(snd.hold.len() as u32), a) {
                // The receiver has more than this engine saw (the flow was
                // picked up mid-stream): continue from there.
                p = a;
                snd.parsed_to = Some(a);
                snd.hold.clear();
            }
        }
        let e = seq.wrapping_add(payload.len() as u32);
        let hold_end = p.wrapping_add(snd.hold.len() as u32);
        if seq_lt(hold_end, seq) {
            // A gap before this segment (see the module documentation).
            self.stats.dropped_out_of_order += 1;
            return None;
        }
        // Old part [seq, p): rebuilt from the replay log.
        let (mut start, mut out, reached) = if seq_lt(seq, p) {
            let old_len = dist(seq, p).min(payload.len());
            let r = replay(&snd.log, seq, payload.get(..old_len).unwrap_or(&[]));
            if r.replayed {
                self.stats.replays += 1;
            }
            (r.start, r.out, r.reached)
        } else {
            (p, Vec::new(), p)
        };
        let has_new = seq_lt(hold_end, e);
        let flush = !snd.hold.is_empty() && (snd.rst || snd.fin_at == Some(hold_end));
        if !has_new && !flush && seq_le(p, seq) && !snd.hold.is_empty() {
            // The held bytes alone again, message still incomplete. A sender
            // with Nagle sends the rest only once they are acknowledged
            // (Linux sends it earlier as a tail loss probe, which completes
            // the message); after a few retransmissions give up and pass
            // them unchanged rather than stall the connection.
            snd.hold_retx += 1;
            if snd.hold_sent || snd.hold_retx >= self.cfg.max_hold_retransmissions {
                if !snd.hold_sent {
                    self.stats.holds_given_up += 1;
                    snd.hold_sent = true;
                }
                return Some((snd.adj.map_seq(p), snd.hold.clone()));
            }
            self.stats.dropped_incomplete += 1;
            return None;
        }
        if reached == p && (has_new || flush) {
            let fresh = if has_new {
                payload
                    .get(dist(seq, hold_end).min(payload.len())..)
                    .unwrap_or(&[])
            } else {
                &[][..]
            };
            // Bytes at the start of `data` already sent unchanged.
            let sent = if snd.hold_sent { snd.hold.len() } else { 0 };
            let mut data = std::mem::take(&mut snd.hold);
            data.extend_from_slice(fresh);
            let data_end = p.wrapping_add(data.len() as u32);
            let last = snd.rst || snd.fin_at == Some(data_end);
            let parsed = self.parse(
                ps.addrs,
                ps.ports,
                ps.rewrites,
                ps.lifetime,
                ps.dir,
                &data,
                last,
                sent > 0,
            );
            for &(off, old, out_off, new) in &parsed.rewrites {
                let at = p.wrapping_add(off as u32);
                snd.adj.record(at, old as u32, new as u32);
                let bytes = parsed.out.get(out_off..out_off + new).unwrap_or(&[]);
                snd.log(at, at.wrapping_add(old as u32), bytes);
            }
            let mut complete = parsed.complete;
            let mut new_out = parsed.out;
            snd.hold_retx = 0;
            snd.hold_sent = false;
            if parsed.incomplete {
                let tail = data.get(complete..).unwrap_or(&[]);
                if tail.len() > self.cfg.max_hold {
                    self.stats.hold_overflows += 1;
                    snd.bypass = true;
                    new_out.extend_from_slice(tail);
                    complete = data.len();
                } else if complete == 0 && sent > 0 {
                    // The given-up message is still incomplete: its new
                    // bytes pass unchanged as well.
                    new_out.extend_from_slice(tail);
                    snd.hold = tail.to_vec();
                    snd.hold_sent = true;
                } else {
                    self.stats.holds += 1;
                    snd.hold = tail.to_vec();
                }
            }
            // Already sent bytes are left out unless the old part of the
            // segment comes before them.
            let skip = if out.is_empty() { sent } else { 0 };
            if out.is_empty() {
                start = p.wrapping_add(skip as u32);
            }
            out.extend_from_slice(new_out.get(skip..).unwrap_or(&[]));
            snd.parsed_to = Some(p.wrapping_add(complete as u32));
            pinholes.extend(parsed.pinholes);
        }
        if out.is_empty() && !fin && !snd.rst {
            // Nothing sendable: held bytes only, or part of a rewritten
            // message.
            self.stats.dropped_incomplete += 1;
            return None;
        }
        Some((snd.adj.map_seq(start), out))
    }
}

/// The parts of a flow a stream's parser needs besides the stream.
struct PerStream<'a> {
    addrs: &'a mut FlowAddrs,
    ports: &'a mut BTreeMap<(Transport, u16), Allocation>,
    rewrites: &'a mut u64,
    lifetime: Duration,
    dir: Direction,
}

/// Old bytes rebuilt from the replay log.
struct Replayed {
    /// Original start of `out` (moved past a rewritten message the segment
    /// starts inside).
    start: u32,
    out: Vec<u8>,
    /// Original position `out` ends at (before a rewritten message the
    /// segment covers only partly).
    reached: u32,
    /// A rewritten message was replayed.
    replayed: bool,
}

/// Rebuilds old bytes `[seq, seq + bytes.len())` with the rewritten
/// messages of the replay log (see the module documentation).
fn replay(log: &VecDeque<Replay>, seq: u32, bytes: &[u8]) -> Replayed {
    let end = seq.wrapping_add(bytes.len() as u32);
    let mut r = Replayed {
        start: seq,
        out: Vec::with_capacity(bytes.len() + 16),
        reached: seq,
        replayed: false,
    };
    let mut cursor = seq;
    for m in log {
        if seq_le(m.end, cursor) {
            continue;
        }
        if seq_le(end, m.start) {
            break;
        }
        if seq_lt(m.start, cursor) {
            if !r.out.is_empty() {
                break; // overlapping log entries: cannot happen
            }
            // Starts inside a rewritten message: skip past it.
            r.start = m.end;
            cursor = m.end;
            r.reached = m.end;
            if seq_le(end, cursor) {
                return r;
            }
            continue;
        }
        r.out.extend_from_slice(
            bytes
                .get(dist(seq, cursor)..dist(seq, m.start))
                .unwrap_or(&[]),
        );
        cursor = m.start;
        if seq_le(m.end, end) {
            r.out.extend_from_slice(&m.bytes);
            cursor = m.end;
            r.replayed = true;
        } else {
            r.reached = cursor;
            return r;
        }
    }
    r.out
        .extend_from_slice(bytes.get(dist(seq, cursor)..).unwrap_or(&[]));
    r.reached = end;
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::build::{tcp_packet, udp_packet, TcpSpec};
    use crate::packet::TcpFlags;

    const PRIV: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 101);
    const PEER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
    const PUB: Ipv4Addr = Ipv4Addr::new(1, 2, 3, 4);
    const OUT: Direction = Direction::FromPrivate;
    const IN: Direction = Direction::FromPublic;
    const A: u8 = TcpFlags::ACK;
    const PA: u8 = TcpFlags::ACK | TcpFlags::PSH;

    struct Ctx(Option<Ipv4Addr>);
    impl FlowContext for Ctx {
        fn public_addr(
            &self,
            _: SocketAddrV4,
            _: SocketAddrV4,
            _: Transport,
            _: Role,
        ) -> Option<Ipv4Addr> {
            self.0
        }
        fn host_fqdn(&self, _: Ipv4Addr) -> Option<String> {
            Some("hosta.gwa.example".into())
        }
    }
    const CTX: Ctx = Ctx(Some(PUB));

    /// A TCP connection between `private` and `peer` (FromPrivate: private →
    /// peer).
    #[derive(Clone, Copy)]
    struct Conn {
        private: (Ipv4Addr, u16),
        peer: (Ipv4Addr, u16),
    }

    /// Private FTP client 192.168.0.101:40000 → public server :21.
    const CLIENT: Conn = Conn {
        private: (PRIV, 40000),
        peer: (PEER, 21),
    };
    /// Private FTP server :21 ← public client :50000.
    const SERVER: Conn = Conn {
        private: (PRIV, 21),
        peer: (PEER, 50000),
    };

    impl Conn {
        fn seg(&self, dir: Direction, seq: u32, ack: u32, flags: u8, data: &[u8]) -> Vec<u8> {
            self.seg_sack(dir, seq, ack, flags, data, &[])
        }
        fn seg_sack(
            &self,
            dir: Direction,
            seq: u32,
            ack: u32,
            flags: u8,
            data: &[u8],
            sack: &[(u32, u32)],
        ) -> Vec<u8> {
            let (src, dst) = match dir {
                OUT => (self.private, self.peer),
                IN => (self.peer, self.private),
            };
            tcp_packet(&TcpSpec {
                src,
                dst,
                seq,
                ack,
                flags,
                sack,
                payload: data,
            })
        }
    }

    /// What left the engine: (seq, ack, payload, sack blocks, flags), or
    /// None for a drop.
    #[derive(Debug, PartialEq, Eq)]
    struct Out {
        seq: u32,
        ack: u32,
        data: Vec<u8>,
        sack: Vec<(u32, u32)>,
        flags: u8,
        /// Don't Fragment set.
        df: bool,
    }

    fn out_of(d: &Decision, orig: &[u8]) -> Option<Out> {
        let bytes = match &d.verdict {
            Verdict::Accept => orig,
            Verdict::Replace(b) => b.as_slice(),
            Verdict::Drop => return None,
        };
        let p = Packet::parse(bytes).expect("engine output parses");
        assert!(p.checksums_ok(), "engine output checksums");
        let packet::Transport::Tcp(t) = p.l4 else {
            panic!("not tcp")
        };
        Some(Out {
            seq: t.seq(),
            ack: t.ack(),
            data: t.payload().to_vec(),
            sack: t.sack_blocks(),
            flags: t.flags().0,
            df: bytes[6] & 0x40 != 0,
        })
    }

    struct T {
        e: Engine,
        now: Instant,
        conn: Conn,
    }

    impl T {
        fn new(conn: Conn) -> Self {
            Self::with(conn, EngineConfig::default())
        }
        fn with(conn: Conn, cfg: EngineConfig) -> Self {
            T {
                e: Engine::new(cfg),
                now: Instant::now(),
                conn,
            }
        }
        fn send(&mut self, dir: Direction, pkt: &[u8]) -> (Option<Out>, Vec<Pinhole>) {
            let d = self.e.handle(self.now, dir, pkt, &CTX);
            (out_of(&d, pkt), d.pinholes)
        }
        fn tx(&mut self, dir: Direction, seq: u32, ack: u32, data: &[u8]) -> Option<Out> {
            let p = self.conn.seg(dir, seq, ack, PA, data);
            self.send(dir, &p).0
        }
        fn handshake(&mut self, c: u32, s: u32) {
            let p = self.conn.seg(OUT, c, 0, TcpFlags::SYN, b"");
            assert_eq!(self.send(OUT, &p).0.unwrap().seq, c);
            let p = self
                .conn
                .seg(IN, s, c.wrapping_add(1), TcpFlags::SYN | A, b"");
            assert_eq!(self.send(IN, &p).0.unwrap().ack, c.wrapping_add(1));
        }
    }

    const PORT1: &[u8] = b"PORT 192,168,0,101,4,1\r\n"; // 24 bytes
    const PORT1_RW: &[u8] = b"PORT 1,2,3,4,4,1\r\n"; // 18 bytes: -6
    const PORT2: &[u8] = b"PORT 192,168,0,101,200,100\r\n"; // 28 bytes
    const PORT2_RW: &[u8] = b"PORT 1,2,3,4,200,100\r\n"; // 22 bytes: -6

    #[test]
    fn port_rewrite_shifts_seq_and_unmaps_ack_and_sack() {
        let mut t = T::new(CLIENT);
        t.handshake(1000, 5000);
        let o = t.tx(OUT, 1001, 5001, b"USER a\r\n").unwrap();
        assert_eq!((o.seq, o.data.as_slice()), (1001, &b"USER a\r\n"[..]));
        assert!(o.df);
        let p = t.conn.seg(OUT, 1009, 5001, PA, PORT1);
        let (o, holes) = t.send(OUT, &p);
        let o = o.unwrap();
        assert_eq!((o.seq, o.data.as_slice()), (1009, PORT1_RW));
        assert_eq!(
            holes,
            vec![Pinhole {
                peer: PEER,
                transport: Transport::Tcp,
                public_addr: PUB,
                public_port: 1025,
                private_addr: PRIV,
                private_port: 1025,
                lifetime: Duration::from_secs(30),
                snat: false,
                v6: None,
            }]
        );
        // Later data shifted by -6.
        let o = t.tx(OUT, 1033, 5001, b"LIST\r\n").unwrap();
        assert_eq!(o.seq, 1027);
        // The server acknowledges in rewritten space.
        let o = t.tx(IN, 5001, 1033, b"200 ok\r\n").unwrap();
        assert_eq!(o.ack, 1039);
        let o = t.tx(IN, 5009, 1027, b"").unwrap();
        assert_eq!(o.ack, 1033);
        let o = t.tx(IN, 5009, 1015, b"").unwrap();
        assert_eq!(o.ack, 1009, "inside the rewritten command: its start");
        // SACK: [1027,1033) is LIST → [1033,1039); a block inside the
        // rewritten PORT disappears.
        let p = t
            .conn
            .seg_sack(IN, 5009, 1009, A, b"", &[(1027, 1033), (1010, 1020)]);
        let o = t.send(IN, &p).0.unwrap();
        assert_eq!(o.ack, 1009);
        assert_eq!(o.sack, vec![(1033, 1039)]);
        // The server's own data is never shifted (FTP replies from a public
        // server are not parsed).
        assert_eq!(o.seq, 5009);
        let s = t.e.stats();
        assert_eq!((s.rewrites, s.pinholes_requested, s.flows), (1, 1, 1));
        let f = &t.e.flows()[0];
        assert_eq!(f.offset_from_private, -6);
        assert_eq!(f.offset_from_public, 0);
        assert_eq!(f.public, PUB);
        assert_eq!(f.role, Role::PrivateClient);
        assert_eq!(f.protocol, Protocol::Ftp);
    }

    #[test]
    fn retransmissions_across_two_rewrites() {
        let mut t = T::new(CLIENT);
        t.handshake(1000, 5000);
        // [1001,1025) PORT1 -6; [1025,1031) NOOP; [1031,1059) PORT2 -6;
        // [1059,1065) LIST.
        assert_eq!(t.tx(OUT, 1001, 5001, PORT1).unwrap().data, PORT1_RW);
        assert_eq!(t.tx(OUT, 1025, 5001, b"NOOP\r\n").unwrap().seq, 1019);
        let o = t.tx(OUT, 1031, 5001, PORT2).unwrap();
        assert_eq!((o.seq, o.data.as_slice()), (1025, PORT2_RW));
        assert_eq!(t.tx(OUT, 1059, 5001, b"LIST\r\n").unwrap().seq, 1047);
        // Retransmission of NOOP (between the rewrites): -6, not -12.
        let o = t.tx(OUT, 1025, 5001, b"NOOP\r\n").unwrap();
        assert_eq!((o.seq, o.data.as_slice()), (1019, &b"NOOP\r\n"[..]));
        // Retransmission of the first PORT: identical to the first time.
        let o = t.tx(OUT, 1001, 5001, PORT1).unwrap();
        assert_eq!((o.seq, o.data.as_slice()), (1001, PORT1_RW));
        // Collapsed retransmission of everything.
        let mut all = Vec::new();
        for m in [PORT1, b"NOOP\r\n", PORT2, b"LIST\r\n"] {
            all.extend_from_slice(m);
        }
        let o = t.tx(OUT, 1001, 5001, &all).unwrap();
        let mut want = Vec::new();
        for m in [PORT1_RW, b"NOOP\r\n", PORT2_RW, b"LIST\r\n"] {
            want.extend_from_slice(m);
        }
        assert_eq!((o.seq, o.data), (1001, want));
        // Re-segmented: starting inside PORT1 skips to its end; ending
        // inside PORT2 stops at its start.
        let o = t.tx(OUT, 1010, 5001, &all[9..40]).unwrap();
        assert_eq!((o.seq, o.data.as_slice()), (1019, &b"NOOP\r\n"[..]));
        // Only part of a rewritten command: nothing sendable.
        assert!(t.tx(OUT, 1005, 5001, &all[4..10]).is_none());
        assert_eq!(t.e.stats().replays, 2);
        assert_eq!(t.e.stats().rewrites, 2);
        // ACKs of the server map back.
        assert_eq!(t.tx(IN, 5001, 1019, b"").unwrap().ack, 1025);
        assert_eq!(t.tx(IN, 5001, 1047, b"").unwrap().ack, 1059);
        assert_eq!(t.tx(IN, 5001, 1053, b"").unwrap().ack, 1065);
        // A retransmission of acknowledged data (its ACK was lost on the way
        // to the sender): one byte just below the acknowledged point.
        let o = t.tx(OUT, 1025, 5001, b"NOOP\r\n").unwrap();
        assert_eq!((o.seq, o.data.as_slice()), (1052, &b"\n"[..]));
        assert_eq!(t.e.stats().duplicates, 1);
        // Everything acknowledged: only the last correction is kept.
        assert_eq!(t.e.flows()[0].corrections.0, 1);
        assert_eq!(t.tx(OUT, 1065, 5001, b"QUIT\r\n").unwrap().seq, 1053);
    }

    #[test]
    fn wrap_around_near_two_to_the_32() {
        let mut t = T::new(CLIENT);
        let isn = 0xFFFF_FFF0u32;
        t.handshake(isn, 7);
        let s1 = isn.wrapping_add(1); // 0xFFFF_FFF1; PORT1 ends at 0x9
        let o = t.tx(OUT, s1, 8, PORT1).unwrap();
        assert_eq!((o.seq, o.data.as_slice()), (s1, PORT1_RW));
        let s2 = s1.wrapping_add(24);
        assert_eq!(s2, 9);
        let o = t.tx(OUT, s2, 8, b"LIST\r\n").unwrap();
        assert_eq!(o.seq, 3);
        // Retransmission from before the wrap, not yet acknowledged.
        let o = t.tx(OUT, s1, 8, PORT1).unwrap();
        assert_eq!((o.seq, o.data.as_slice()), (s1, PORT1_RW));
        let o = t.tx(IN, 8, 9, b"").unwrap();
        assert_eq!(o.ack, 15);
        let o = t.tx(IN, 8, 3, b"").unwrap();
        assert_eq!(o.ack, 9);
        let o = t.tx(IN, 8, 0xFFFF_FFFF, b"").unwrap();
        assert_eq!(o.ack, s1);
        // A second rewrite after the wrap.
        let o = t.tx(OUT, 15, 8, PORT2).unwrap();
        assert_eq!((o.seq, o.data.as_slice()), (9, PORT2_RW));
        assert_eq!(t.tx(OUT, 43, 8, b"NOOP\r\n").unwrap().seq, 31);
    }

    #[test]
    fn split_command_without_nagle() {
        let mut t = T::new(CLIENT);
        t.handshake(1000, 5000);
        // "NOOP\r\n" complete, "PORT 192,168," incomplete: truncated.
        let o = t.tx(OUT, 1001, 5001, b"NOOP\r\nPORT 192,168,").unwrap();
        assert_eq!((o.seq, o.data.as_slice()), (1001, &b"NOOP\r\n"[..]));
        assert_eq!(t.e.flows()[0].held, (13, 0));
        // The server acknowledges what it got.
        assert_eq!(t.tx(IN, 5001, 1007, b"").unwrap().ack, 1007);
        // The rest arrives: seq moved back to the held start.
        let (o, holes) = {
            let p = t.conn.seg(OUT, 1020, 5001, PA, b"0,101,4,1\r\n");
            t.send(OUT, &p)
        };
        let o = o.unwrap();
        assert_eq!((o.seq, o.data.as_slice()), (1007, PORT1_RW));
        assert!(!o.df, "longer than the segment sent: may be fragmented");
        assert_eq!(holes.len(), 1);
        assert_eq!(t.e.flows()[0].held, (0, 0));
        // A late retransmission of the first segment: NOOP is acknowledged
        // (trimmed), the rest is part of a rewritten command: nothing to send.
        assert!(t.tx(OUT, 1001, 5001, b"NOOP\r\nPORT 192,168,").is_none());
        // Trimmed to the acknowledged point, the whole command replayed.
        let o = t
            .tx(OUT, 1001, 5001, b"NOOP\r\nPORT 192,168,0,101,4,1\r\n")
            .unwrap();
        assert_eq!((o.seq, o.data.as_slice()), (1007, PORT1_RW));
        // Next segment shifted, the ACK of the rewritten end maps back.
        assert_eq!(t.tx(OUT, 1031, 5001, b"LIST\r\n").unwrap().seq, 1025);
        assert_eq!(t.tx(IN, 5001, 1025, b"").unwrap().ack, 1031);
        assert_eq!(t.e.stats().holds, 1);
    }

    #[test]
    fn split_command_completed_by_a_collapsed_retransmission() {
        let mut t = T::new(CLIENT);
        t.handshake(1000, 5000);
        // Only an incomplete command: dropped and held.
        assert!(t.tx(OUT, 1001, 5001, b"PORT 192,168,").is_none());
        // Retransmitted alone once: still incomplete, dropped.
        assert!(t.tx(OUT, 1001, 5001, b"PORT 19").is_none());
        // The retransmission collapsed with the rest.
        let o = t.tx(OUT, 1001, 5001, PORT1).unwrap();
        assert_eq!((o.seq, o.data.as_slice()), (1001, PORT1_RW));
        let s = t.e.stats();
        assert_eq!((s.dropped_incomplete, s.dropped, s.rewrites), (2, 2, 1));
        // A segment overlapping the hold and beyond it also completes.
        let mut t = T::new(CLIENT);
        t.handshake(1000, 5000);
        assert!(t.tx(OUT, 1001, 5001, b"PORT 192,168,").is_none());
        let o = t.tx(OUT, 1010, 5001, b"168,0,101,4,1\r\nLIST\r\n").unwrap();
        let mut want = PORT1_RW.to_vec();
        want.extend_from_slice(b"LIST\r\n");
        assert_eq!((o.seq, o.data), (1001, want));
    }

    #[test]
    fn split_command_given_up_after_repeated_retransmissions() {
        // A sender with Nagle and no tail loss probe sends the rest only
        // once the held bytes are acknowledged.
        let mut t = T::new(CLIENT);
        t.handshake(1000, 5000);
        assert!(t.tx(OUT, 1001, 5001, b"PORT 192,168,").is_none());
        assert!(t.tx(OUT, 1001, 5001, b"PORT 192,168,").is_none());
        // Second retransmission: passed unchanged.
        let o = t.tx(OUT, 1001, 5001, b"PORT 192,168,").unwrap();
        assert_eq!((o.seq, o.data.as_slice()), (1001, &b"PORT 192,168,"[..]));
        // Again (the receiver's ACK was lost): passed again.
        let o = t.tx(OUT, 1001, 5001, b"PORT 192,").unwrap();
        assert_eq!((o.seq, o.data.as_slice()), (1001, &b"PORT 192,168,"[..]));
        assert_eq!(t.tx(IN, 5001, 1014, b"").unwrap().ack, 1014);
        // The rest, still incomplete: passes unchanged too.
        let o = t.tx(OUT, 1014, 5001, b"0,101,").unwrap();
        assert_eq!((o.seq, o.data.as_slice()), (1014, &b"0,101,"[..]));
        // The end of it, and a complete command after it: the first passes
        // unchanged (its start is out), the second is rewritten.
        let o = t
            .tx(OUT, 1020, 5001, b"4,1\r\nPORT 192,168,0,101,4,2\r\n")
            .unwrap();
        assert_eq!(
            (o.seq, o.data.as_slice()),
            (1020, &b"4,1\r\nPORT 1,2,3,4,4,2\r\n"[..])
        );
        let s = t.e.stats();
        assert_eq!((s.holds_given_up, s.missed_rewrites, s.rewrites), (1, 1, 1));
        assert_eq!(t.tx(OUT, 1049, 5001, b"LIST\r\n").unwrap().seq, 1043);
        // A FIN right after given-up held bytes: passes at its place.
        let mut t = T::new(CLIENT);
        t.handshake(1000, 5000);
        for _ in 0..3 {
            t.tx(OUT, 1001, 5001, b"PORT 192,168,");
        }
        let p = t.conn.seg(OUT, 1014, 5001, A | TcpFlags::FIN, b"");
        let o = t.send(OUT, &p).0.unwrap();
        assert_eq!((o.seq, o.data.len()), (1014, 0));
        assert_ne!(o.flags & TcpFlags::FIN, 0);
    }

    #[test]
    fn bogus_ack_beyond_sent_data_is_not_trusted() {
        let mut t = T::new(CLIENT);
        t.handshake(1000, 5000);
        t.tx(OUT, 1001, 5001, PORT1).unwrap();
        // The peer claims far more than was sent: passed (unmapped), but
        // not used to trim retransmissions.
        assert_eq!(t.tx(IN, 5001, 90_000, b"").unwrap().ack, 90_006);
        let o = t.tx(OUT, 1001, 5001, PORT1).unwrap();
        assert_eq!((o.seq, o.data.as_slice()), (1001, PORT1_RW));
        assert_eq!(t.e.stats().duplicates, 0);
    }

    #[test]
    fn engine_is_send() {
        fn send<T: Send>() {}
        send::<Engine>();
    }

    #[test]
    fn syn_data_passes_and_the_stream_continues_after_it() {
        let mut t = T::new(CLIENT);
        let p = t.conn.seg(OUT, 1000, 0, TcpFlags::SYN, b"NOOP\r\n");
        assert_eq!(t.send(OUT, &p).0.unwrap().data, b"NOOP\r\n");
        let o = t.tx(OUT, 1007, 5001, PORT1).unwrap();
        assert_eq!((o.seq, o.data.as_slice()), (1007, PORT1_RW));
    }

    #[test]
    fn hold_overflow_passes_and_stops_parsing() {
        let cfg = EngineConfig {
            max_hold: 8,
            ..EngineConfig::default()
        };
        let mut t = T::with(CLIENT, cfg);
        t.handshake(1000, 5000);
        assert!(t.tx(OUT, 1001, 5001, b"PORT 1").is_none());
        let o = t.tx(OUT, 1007, 5001, b"92,168,").unwrap();
        assert_eq!((o.seq, o.data.as_slice()), (1001, &b"PORT 192,168,"[..]));
        assert_eq!(t.e.stats().hold_overflows, 1);
        // No longer parsed.
        let o = t.tx(OUT, 1014, 5001, PORT1).unwrap();
        assert_eq!(o.data, PORT1);
    }

    #[test]
    fn out_of_order_segments() {
        let mut t = T::new(CLIENT);
        t.handshake(1000, 5000);
        // PORT1 at [1001,1025) is lost before the gateway; LIST beyond the
        // gap is dropped.
        assert!(t.tx(OUT, 1025, 5001, b"LIST\r\n").is_none());
        assert_eq!(t.e.stats().dropped_out_of_order, 1);
        let o = t.tx(OUT, 1001, 5001, PORT1).unwrap();
        assert_eq!(o.data, PORT1_RW);
        assert_eq!(t.tx(OUT, 1025, 5001, b"LIST\r\n").unwrap().seq, 1019);
        // Beyond a hold: dropped as well.
        assert!(t.tx(OUT, 1031, 5001, b"PORT 192,").is_none());
        assert!(t.tx(OUT, 1045, 5001, b"\r\n").is_none());
        assert_eq!(t.e.stats().dropped_out_of_order, 2);
        // The public side is not parsed: its reordering passes.
        let o = t.tx(IN, 6000, 1019, b"200 late\r\n").unwrap();
        assert_eq!((o.seq, o.ack), (6000, 1025));
    }

    #[test]
    fn pure_ack_while_holding_points_at_the_hold() {
        let mut t = T::new(CLIENT);
        t.handshake(1000, 5000);
        assert!(t.tx(OUT, 1001, 5001, b"PORT 192,").is_none());
        let p = t.conn.seg(OUT, 1010, 5100, A, b"");
        let o = t.send(OUT, &p).0.unwrap();
        assert_eq!((o.seq, o.ack), (1001, 5100));
    }

    #[test]
    fn fin_releases_an_incomplete_message() {
        let mut t = T::new(CLIENT);
        t.handshake(1000, 5000);
        assert!(t.tx(OUT, 1001, 5001, b"NOOP\r\nPORT 192,168,").is_some());
        let p = t.conn.seg(OUT, 1020, 5001, A | TcpFlags::FIN, b"");
        let o = t.send(OUT, &p).0.unwrap();
        assert_eq!((o.seq, o.data.as_slice()), (1007, &b"PORT 192,168,"[..]));
        assert_ne!(o.flags & TcpFlags::FIN, 0);
        assert_eq!(t.e.flows()[0].held, (0, 0));
        // A FIN together with the rest of a message: parsed as last.
        let mut t = T::new(CLIENT);
        t.handshake(1000, 5000);
        assert!(t.tx(OUT, 1001, 5001, b"PORT 192,168,").is_none());
        let p = t
            .conn
            .seg(OUT, 1014, 5001, A | TcpFlags::FIN, b"0,101,4,1\r\nPORT 1");
        let o = t.send(OUT, &p).0.unwrap();
        let mut want = PORT1_RW.to_vec();
        want.extend_from_slice(b"PORT 1");
        assert_eq!((o.seq, o.data), (1001, want));
    }

    #[test]
    fn fin_rst_close_and_linger_then_expire() {
        let mut t = T::new(CLIENT);
        t.handshake(1000, 5000);
        t.tx(OUT, 1001, 5001, PORT1).unwrap();
        let p = t.conn.seg(OUT, 1025, 5001, A | TcpFlags::FIN, b"");
        assert_eq!(t.send(OUT, &p).0.unwrap().seq, 1019);
        assert!(!t.e.flows()[0].closed);
        let p = t.conn.seg(IN, 5001, 1020, A | TcpFlags::FIN, b"");
        assert_eq!(t.send(IN, &p).0.unwrap().ack, 1026);
        assert!(t.e.flows()[0].closed);
        // Retransmissions still served during the linger time.
        let now = t.now;
        t.now = now + Duration::from_secs(5);
        let p = t.conn.seg(OUT, 1025, 5002, A | TcpFlags::FIN, b"");
        assert_eq!(t.send(OUT, &p).0.unwrap().seq, 1019);
        t.e.expire(now + Duration::from_secs(10));
        assert_eq!(t.e.flows().len(), 1);
        t.e.expire(now + Duration::from_secs(16));
        assert_eq!(t.e.flows().len(), 0);
        assert_eq!(t.e.stats().flows_expired, 1);

        // RST closes at once; a new SYN on the key starts afresh.
        let mut t = T::new(CLIENT);
        t.handshake(1000, 5000);
        t.tx(OUT, 1001, 5001, PORT1).unwrap();
        let p = t.conn.seg(IN, 5001, 1019, TcpFlags::RST | A, b"");
        assert_eq!(t.send(IN, &p).0.unwrap().ack, 1025);
        assert!(t.e.flows()[0].closed);
        t.handshake(90_000, 70_000);
        assert!(!t.e.flows()[0].closed);
        let o = t.tx(OUT, 90_001, 70_001, b"LIST\r\n").unwrap();
        assert_eq!(o.seq, 90_001);
        assert_eq!(t.e.flows()[0].offset_from_private, 0);
    }

    #[test]
    fn idle_expiry() {
        let mut t = T::new(CLIENT);
        t.handshake(1000, 5000);
        let now = t.now;
        t.e.expire(now + Duration::from_secs(299));
        assert_eq!(t.e.flows().len(), 1);
        t.e.expire(now + Duration::from_secs(300));
        assert_eq!(t.e.flows().len(), 0);
        // UDP: 180 s.
        let cfg = EngineConfig {
            ports: vec![(Transport::Udp, 2121, Protocol::Ftp)],
            ..EngineConfig::default()
        };
        let mut e = Engine::new(cfg);
        let p = udp_packet((PRIV, 40000), (PEER, 2121), b"NOOP\r\n");
        e.handle(now, OUT, &p, &CTX);
        e.expire(now + Duration::from_secs(179));
        assert_eq!(e.flows().len(), 1);
        e.expire(now + Duration::from_secs(180));
        assert_eq!(e.flows().len(), 0);
    }

    #[test]
    fn non_alg_unparsable_and_unknown_public_pass() {
        let mut t = T::new(Conn {
            private: (PRIV, 40000),
            peer: (PEER, 22),
        });
        let p = t.conn.seg(OUT, 1, 1, PA, PORT1);
        let d = t.e.handle(t.now, OUT, &p, &CTX);
        assert_eq!(d.verdict, Verdict::Accept);
        assert_eq!(t.e.stats().not_alg, 1);
        let d = t.e.handle(t.now, OUT, b"\x45garbage", &CTX);
        assert_eq!(d.verdict, Verdict::Accept);
        assert_eq!(t.e.stats().unparsed, 1);
        let p = CLIENT.seg(OUT, 1, 1, PA, PORT1);
        let d = t.e.handle(t.now, OUT, &p, &Ctx(None));
        assert_eq!(d.verdict, Verdict::Accept);
        assert_eq!(t.e.stats().no_public_addr, 1);
        assert_eq!(t.e.flows().len(), 0);
        // Later, with an address: the flow starts mid-stream.
        let d = t.e.handle(t.now, OUT, &p, &CTX);
        assert_eq!(out_of(&d, &p).unwrap().data, PORT1_RW);
    }

    #[test]
    fn max_flows_and_eviction_of_closed_flows() {
        let cfg = EngineConfig {
            max_flows: 1,
            ..EngineConfig::default()
        };
        let mut t = T::with(CLIENT, cfg);
        t.handshake(1000, 5000);
        let other = Conn {
            private: (PRIV, 40001),
            peer: (PEER, 21),
        };
        let p = other.seg(OUT, 1, 1, PA, PORT1);
        let d = t.e.handle(t.now, OUT, &p, &CTX);
        assert_eq!(d.verdict, Verdict::Accept);
        assert_eq!(t.e.stats().flows_over_limit, 1);
        // Close the first flow: the second evicts it.
        let r = t.conn.seg(OUT, 1001, 5001, TcpFlags::RST, b"");
        t.send(OUT, &r);
        let d = t.e.handle(t.now, OUT, &p, &CTX);
        assert_eq!(out_of(&d, &p).unwrap().data, PORT1_RW);
        let s = t.e.stats();
        assert_eq!((s.flows_evicted, s.flows), (1, 1));
    }

    #[test]
    fn pinhole_ports_identity_unless_taken() {
        let cfg = EngineConfig {
            max_pinholes_per_flow: 2,
            ..EngineConfig::default()
        };
        let mut e = Engine::new(cfg);
        let now = Instant::now();
        let mut port_of = |conn: Conn, seq: u32, data: &[u8]| {
            let p = conn.seg(OUT, seq, 1, PA, data);
            let d = e.handle(now, OUT, &p, &CTX);
            d.pinholes.first().map(|h| (h.public_port, h.private_port))
        };
        let a = CLIENT;
        let b = Conn {
            private: (Ipv4Addr::new(192, 168, 0, 102), 40001),
            peer: (PEER, 21),
        };
        let port1_b = b"PORT 192,168,0,102,4,1\r\n";
        let c = Conn {
            private: (PRIV, 40002),
            peer: (Ipv4Addr::new(203, 0, 113, 9), 21),
        };
        assert_eq!(port_of(a, 1, PORT1), Some((1025, 1025)));
        // Same private port from another flow to the same peer: taken.
        assert_eq!(port_of(b, 1, port1_b), Some((1026, 1025)));
        // The same private endpoint from another flow shares the mapping.
        let a2 = Conn {
            private: (PRIV, 40003),
            peer: (PEER, 21),
        };
        assert_eq!(port_of(a2, 1, PORT1), Some((1025, 1025)));
        // A retransmission is replayed, not parsed again.
        assert_eq!(port_of(b, 1, port1_b), None);
        // Another peer: identity again.
        assert_eq!(port_of(c, 1, PORT1), Some((1025, 1025)));
        // Per-flow bound: the third distinct port recycles the oldest one.
        assert_eq!(port_of(a, 25, PORT2), Some((51300, 51300)));
        let third = b"PORT 192,168,0,101,10,10\r\n";
        assert_eq!(port_of(a, 53, third), Some((2570, 2570)));
        assert_eq!(e.stats().pinholes_recycled, 1);
        assert_eq!(e.stats().port_alloc_failed, 0);
    }

    #[test]
    fn udp_datagrams_rewritten_with_udp_checksum() {
        let cfg = EngineConfig {
            ports: vec![(Transport::Udp, 2121, Protocol::Ftp)],
            ..EngineConfig::default()
        };
        let mut e = Engine::new(cfg);
        let now = Instant::now();
        let p = udp_packet((PRIV, 40000), (PEER, 2121), PORT1);
        let d = e.handle(now, OUT, &p, &CTX);
        let Verdict::Replace(b) = &d.verdict else {
            panic!("expected rewrite: {d:?}")
        };
        let q = Packet::parse(b).unwrap();
        assert!(q.checksums_ok());
        let packet::Transport::Udp(u) = q.l4 else {
            panic!("not udp")
        };
        assert_eq!(u.payload(), PORT1_RW);
        assert_eq!(usize::from(u.length()), 8 + PORT1_RW.len());
        assert_eq!(d.pinholes.len(), 1);
        // Retransmitted datagram: same answer.
        assert_eq!(e.handle(now, OUT, &p, &CTX), d);
        // Incomplete datagram: unchanged.
        let p = udp_packet((PRIV, 40000), (PEER, 2121), b"PORT 192,168,");
        assert_eq!(e.handle(now, OUT, &p, &CTX).verdict, Verdict::Accept);
    }

    #[test]
    fn private_server_pasv_and_epsv() {
        let mut t = T::new(SERVER);
        // The public client connects.
        let p = t.conn.seg(IN, 7000, 0, TcpFlags::SYN, b"");
        t.send(IN, &p);
        let p = t.conn.seg(OUT, 3000, 7001, TcpFlags::SYN | A, b"");
        t.send(OUT, &p);
        assert_eq!(t.e.flows()[0].role, Role::PrivateServer);
        let o = t.tx(OUT, 3001, 7001, b"220 (vsFTPd 3.0.3)\r\n").unwrap();
        assert_eq!(o.seq, 3001);
        // The client's PASV is not parsed.
        assert_eq!(t.tx(IN, 7001, 3021, b"PASV\r\n").unwrap().seq, 7001);
        let msg = b"227 Entering Passive Mode (192,168,0,101,39,16).\r\n";
        let p = t.conn.seg(OUT, 3021, 7007, PA, msg);
        let (o, holes) = t.send(OUT, &p);
        let o = o.unwrap();
        assert_eq!(o.data, b"227 Entering Passive Mode (1,2,3,4,39,16).\r\n");
        assert_eq!(holes.len(), 1);
        assert_eq!(holes[0].peer, PEER);
        assert_eq!(
            (holes[0].public_port, holes[0].private_port),
            (10000, 10000)
        );
        let epsv = b"229 Entering extended passive mode (|||40001|).\r\n";
        let next = 3021 + msg.len() as u32;
        let p = t.conn.seg(OUT, next, 7013, PA, epsv);
        let (o, holes) = t.send(OUT, &p);
        let o = o.unwrap();
        assert_eq!((o.seq, o.data.as_slice()), (next - 6, &epsv[..]));
        assert_eq!(holes[0].public_port, 40001);
    }

    /// RGW64 contexts: `private_v6` for hostc (IPv6-only) behind its proxy
    /// IPv4; `nat46` for an IPv4 host talking to an IPv6-only server behind
    /// its proxy IPv4 10.64.0.7 (server's IPv6, our WAN IPv6).
    struct Ctx64 {
        private_v6: Option<&'static str>,
        nat46: Option<(&'static str, &'static str)>,
    }
    const HOSTC: Ctx64 = Ctx64 {
        private_v6: Some("fd00::103"),
        nat46: None,
    };
    const NAT46: Ctx64 = Ctx64 {
        private_v6: None,
        nat46: Some(("2001:db8::80", "2001:db8:100::2")),
    };
    impl FlowContext for Ctx64 {
        fn public_addr(
            &self,
            _: SocketAddrV4,
            _: SocketAddrV4,
            _: Transport,
            _: Role,
        ) -> Option<Ipv4Addr> {
            Some(PUB)
        }
        fn host_fqdn(&self, _: Ipv4Addr) -> Option<String> {
            None
        }
        fn private_v6(&self, _: Ipv4Addr) -> Option<std::net::Ipv6Addr> {
            self.private_v6.map(|a| a.parse().unwrap())
        }
        fn prefix64(&self) -> Option<std::net::Ipv6Addr> {
            Some("fd64:64::".parse().unwrap())
        }
        fn peer_v6(&self, peer: Ipv4Addr) -> Option<std::net::Ipv6Addr> {
            let (server, _) = self.nat46?;
            (peer == Ipv4Addr::new(10, 64, 0, 7)).then(|| server.parse().unwrap())
        }
        fn public_v6(&self, _: Ipv4Addr, _: std::net::Ipv6Addr) -> Option<std::net::Ipv6Addr> {
            self.nat46.map(|(_, wan)| wan.parse().unwrap())
        }
    }

    #[test]
    fn pasv_to_an_ipv6_server_becomes_epsv_and_its_229_a_227() {
        let conn = Conn {
            private: (Ipv4Addr::new(10, 64, 0, 1), 21),
            peer: (PEER, 50000),
        };
        let mut e = Engine::new(EngineConfig::default());
        let now = Instant::now();
        let mut send = |dir, seq, ack, flags, data: &[u8]| {
            let p = conn.seg(dir, seq, ack, flags, data);
            let d = e.handle(now, dir, &p, &HOSTC);
            let o = out_of(&d, &p);
            (
                o.unwrap_or_else(|| panic!("dropped {dir:?} {seq}")),
                d.pinholes,
            )
        };
        send(IN, 7000, 0, TcpFlags::SYN, b"");
        send(OUT, 3000, 7001, TcpFlags::SYN | A, b"");
        let greet = b"220 pyftpdlib ready.\r\n";
        send(OUT, 3001, 7001, PA, greet);
        let s = 3001 + greet.len() as u32;
        // PASV goes on as EPSV (same length: no shift).
        let (o, holes) = send(IN, 7001, s, PA, b"PASV\r\n");
        assert_eq!(
            (o.seq, o.ack, o.data.as_slice()),
            (7001, s, &b"EPSV\r\n"[..])
        );
        assert!(holes.is_empty());
        // The server's 229 comes out as a 227 with the pool address.
        let epsv = b"229 Entering extended passive mode (|||40001|).\r\n"; // 49
        let pasv = b"227 Entering Passive Mode (1,2,3,4,156,65)\r\n"; // 44
        assert_eq!((epsv.len(), pasv.len()), (49, 44));
        let (o, holes) = send(OUT, s, 7007, PA, epsv);
        assert_eq!((o.seq, o.data.as_slice()), (s, &pasv[..]));
        assert_eq!(
            holes,
            vec![Pinhole {
                peer: PEER,
                transport: Transport::Tcp,
                public_addr: PUB,
                public_port: 40001,
                private_addr: Ipv4Addr::new(10, 64, 0, 1),
                private_port: 40001,
                lifetime: Duration::from_secs(30),
                snat: false,
                v6: None,
            }]
        );
        // A retransmitted 229 is replayed as the same 227.
        let (o, _) = send(OUT, s, 7007, PA, epsv);
        assert_eq!((o.seq, o.data.as_slice()), (s, &pasv[..]));
        // Later server data is shifted by -5; the client's ACK moves back.
        let s2 = s + 49;
        let (o, _) = send(OUT, s2, 7007, PA, b"150 ok\r\n");
        assert_eq!(o.seq, s2 - 5);
        let (o, _) = send(IN, 7007, s2 - 5 + 8, A, b"");
        assert_eq!(o.ack, s2 + 8);
        // The client's own EPSV: its 229 stays a 229.
        let (o, _) = send(IN, 7007, s2 + 3, PA, b"EPSV\r\n");
        assert_eq!(o.data, b"EPSV\r\n");
        let s3 = s2 + 8;
        let (o, holes) = send(OUT, s3, 7013, PA, epsv);
        assert_eq!((o.seq, o.data.as_slice()), (s3 - 5, &epsv[..]));
        assert_eq!(holes[0].private_port, 40001);
        // A refused PASV (its EPSV refused) clears the state too.
        let s4 = s3 + 49;
        send(IN, 7013, s4 - 5, PA, b"PASV\r\n");
        let (o, _) = send(OUT, s4, 7019, PA, b"500 no.\r\n");
        assert_eq!(o.seq, s4 - 5);
        let s5 = s4 + 9;
        send(IN, 7019, s5 - 5, PA, b"EPSV\r\n");
        let (o, _) = send(OUT, s5, 7025, PA, epsv);
        assert_eq!(o.data, &epsv[..]);
        assert_eq!(e.stats().rewrites, 3);
        assert_eq!(e.flows()[0].offset_from_private, -5);
    }

    #[test]
    fn nat46_port_becomes_ipv6_eprt_and_pasv_epsv_with_a_227_back() {
        let conn = Conn {
            private: (Ipv4Addr::new(192, 168, 0, 101), 40000),
            peer: (Ipv4Addr::new(10, 64, 0, 7), 21),
        };
        let mut e = Engine::new(EngineConfig::default());
        let now = Instant::now();
        let mut send = |dir, seq, ack, flags, data: &[u8]| {
            let p = conn.seg(dir, seq, ack, flags, data);
            let d = e.handle(now, dir, &p, &NAT46);
            let o = out_of(&d, &p);
            (
                o.unwrap_or_else(|| panic!("dropped {dir:?} {seq}")),
                d.pinholes,
            )
        };
        send(OUT, 3000, 0, TcpFlags::SYN, b"");
        send(IN, 7000, 3001, TcpFlags::SYN | A, b"");
        let greet = b"220 pyftpdlib ready.\r\n";
        send(IN, 7001, 3001, PA, greet);
        let s = 7001 + greet.len() as u32;
        // PORT (26 bytes) becomes an IPv6 EPRT (36 bytes): +10.
        let port = b"PORT 192,168,0,101,160,26\r\n";
        let eprt = b"EPRT |2|2001:db8:100::2|40986|\r\n";
        let (o, holes) = send(OUT, 3001, s, PA, port);
        assert_eq!((o.seq, o.data.as_slice()), (3001, &eprt[..]));
        assert_eq!(holes.len(), 1);
        let v6 = holes[0].v6.clone().expect("an IPv6 pinhole");
        assert_eq!(
            v6.peer,
            "2001:db8::80".parse::<std::net::Ipv6Addr>().unwrap()
        );
        assert_eq!(
            v6.private_addr,
            "fd64:64::c0a8:65".parse::<std::net::Ipv6Addr>().unwrap()
        );
        assert_eq!(
            (holes[0].public_port, holes[0].private_port),
            (40986, 40986)
        );
        let c = 3001 + port.len() as u32;
        let shift = (eprt.len() - port.len()) as u32;
        // The server's ACK of the longer command comes back unmapped.
        let (o, _) = send(IN, s, c + shift, PA, b"200 ok\r\n");
        assert_eq!(o.ack, c);
        let s = s + 8;
        // PASV goes on as EPSV; the 229 comes back as a 227 naming the
        // server's proxy IPv4 (no pinhole: the data connection goes out).
        let (o, holes) = send(OUT, c, s, PA, b"PASV\r\n");
        assert_eq!((o.seq, o.data.as_slice()), (c + shift, &b"EPSV\r\n"[..]));
        assert!(holes.is_empty());
        let c = c + 6;
        let epsv = b"229 Entering extended passive mode (|||40001|).\r\n";
        let pasv = b"227 Entering Passive Mode (10,64,0,7,156,65)\r\n";
        let (o, holes) = send(IN, s, c + shift, PA, epsv);
        assert_eq!((o.seq, o.ack, o.data.as_slice()), (s, c, &pasv[..]));
        assert!(holes.is_empty());
        // Later server data is shifted by the 227's length change.
        let s2 = s + epsv.len() as u32;
        let (o, _) = send(IN, s2, c + shift, PA, b"150 ok\r\n");
        assert_eq!(o.seq, s2 - (epsv.len() - pasv.len()) as u32);
        assert_eq!(e.stats().rewrites, 3);
    }

    #[test]
    fn random_packets_never_panic() {
        let mut rng = 0x1234_5678_9ABC_DEF1u64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut e = Engine::new(EngineConfig {
            max_hold: 64,
            ..EngineConfig::default()
        });
        let now = Instant::now();
        let words: [&[u8]; 6] = [
            PORT1,
            b"PORT 192,",
            b"168,0,101,1,1\r\n",
            b"227 (",
            b"\r\n",
            b"x",
        ];
        for i in 0..30_000u32 {
            let r = next();
            let dir = if r & 1 == 0 { OUT } else { IN };
            let conn = if r & 2 == 0 { CLIENT } else { SERVER };
            let mut data = Vec::new();
            for k in 0..(r >> 8) % 4 {
                data.extend_from_slice(words[((r >> (12 + k)) % 6) as usize]);
            }
            let seq = 1000u32
                .wrapping_add((next() % 200) as u32)
                .wrapping_sub(100);
            let flags = (next() % 32) as u8;
            let sack = [(seq, seq.wrapping_add(5)), (1, 2)];
            let mut p = conn.seg_sack(
                dir,
                seq,
                next() as u32 % 3000,
                flags,
                &data,
                &sack[..(r % 3) as usize],
            );
            if i % 3 == 0 && !p.is_empty() {
                let j = (next() as usize) % p.len();
                p[j] = next() as u8;
                let cut = (next() as usize) % (p.len() + 1);
                p.truncate(cut.max(p.len() / 2));
            }
            let d = e.handle(now, dir, &p, &CTX);
            if let Verdict::Replace(b) = &d.verdict {
                assert!(Packet::parse(b).unwrap().checksums_ok());
            }
        }
    }
}
