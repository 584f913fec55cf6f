//! Application layer gateways for the Realm Gateway (FTP, SIP, RTSP).
//!
//! Sans-IO: packets, their direction and the time go in; a verdict (accept,
//! accept rewritten, drop) and the pinholes to open come out. The engine
//! ([`engine`]) owns every packet of the flows it handles, in both
//! directions, and tracks TCP SEQ/ACK offsets itself ([`seqadj`]) because
//! this kernel neither passes conntrack data through NFQUEUE nor fixes
//! sequence numbers after a userspace rewrite (DESIGN.md §3).
//!
//! The shell in `rgw` queues the packets of ALG flows in the forward hook,
//! where both directions carry the private host's real address (DNAT done,
//! SNAT not yet), hands them to [`engine::Engine::handle`] and writes the
//! pinholes into nftables.
//!
//! Message rewriters ([`ftp`], [`sip`], [`rtsp`]) see one message at a
//! time and know nothing of TCP: they implement [`Rewriter`].

pub mod engine;
pub mod ftp;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzz_harness;
pub mod packet;
pub mod rtsp;
pub mod sdp;
pub mod seqadj;
pub mod sip;
#[cfg(test)]
mod testutil;

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4};
use std::time::Duration;

/// Well-known control ports whose flows carry addresses in their payload:
/// (IP protocol number, port).
pub const ALG_PORTS: &[(u8, u16)] = &[(6, 21), (17, 5060), (6, 5060), (6, 554)];

/// The application protocol of a control flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    Ftp,
    Sip,
    Rtsp,
}

/// Transport of a flow or pinhole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Transport {
    Tcp,
    Udp,
}

impl Transport {
    /// IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            Transport::Tcp => 6,
            Transport::Udp => 17,
        }
    }
}

/// Which side sent a packet or message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// From the private host (LAN side) towards the public peer.
    FromPrivate,
    /// From the public peer (WAN side) towards the private host.
    FromPublic,
}

/// Which end of the control flow listens on the ALG port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// The private host is the client (outbound: active FTP, outgoing call,
    /// private RTSP player).
    PrivateClient,
    /// The private host is the server, reached through a reservation
    /// (inbound: passive FTP, incoming call, public RTSP player).
    PrivateServer,
}

/// What a rewriter knows about the control flow it is rewriting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowAddrs {
    /// The private host's end of the flow (as seen on the LAN).
    pub private: SocketAddrV4,
    /// The public peer's end of the flow (never translated).
    pub peer: SocketAddrV4,
    /// The address the peer sees for our side: the service address for
    /// outbound flows, the claimed pool address for inbound ones.
    pub public: Ipv4Addr,
    /// The private host's FQDN (for protocols that accept a name instead of
    /// an address literal), when known.
    pub host_fqdn: Option<String>,
    /// RGW64: the private host's own IPv6 address when it is an IPv6-only
    /// host reached through the translator, [`FlowAddrs::private`] being its
    /// proxy IPv4 (the translated packets carry the proxy address, but the
    /// host writes its IPv6 address in its messages: `EPRT |2|…|`,
    /// `c=IN IP6 …`). `None` for IPv4 hosts.
    pub private_v6: Option<Ipv6Addr>,
    /// RGW64: the translator's /96 prefix (RFC 6052) through which an
    /// IPv6-only host reaches IPv4 address `a.b.c.d` as `prefix64::a.b.c.d`.
    /// With [`FlowAddrs::private_v6`], IPv4 addresses in a public peer's
    /// session descriptions become these IPv6 addresses. `None` otherwise.
    pub prefix64: Option<Ipv6Addr>,
    /// RGW64 FTP state of the flow, kept by the engine: the public IPv4
    /// client's `PASV` went to the IPv6-only server as `EPSV`, so the
    /// server's `229` reply must reach the client as a `227` (see
    /// [`ftp::epsv_for_pasv_after`]). `false` for every other flow.
    pub epsv_for_pasv: bool,
    /// RGW64 NAT46: the public peer's real IPv6 address when
    /// [`FlowAddrs::peer`] is a proxy IPv4 of the translator (an IPv4
    /// private host talking to an IPv6-only server). Its messages name this
    /// address; ours must name [`FlowAddrs::public_v6`]. `None` otherwise.
    pub peer_v6: Option<Ipv6Addr>,
    /// RGW64 NAT46: the address the IPv6 peer sees for our side (the
    /// gateway's NAT66 source address). Set together with
    /// [`FlowAddrs::peer_v6`] (and [`FlowAddrs::prefix64`]).
    pub public_v6: Option<Ipv6Addr>,
    pub role: Role,
    pub transport: Transport,
}

impl FlowAddrs {
    /// RGW64 NAT46: `(peer_v6, public_v6, prefix64)` when the flow is an
    /// IPv4 private host's flow to an IPv6-only peer through the translator.
    pub fn nat46(&self) -> Option<(Ipv6Addr, Ipv6Addr, Ipv6Addr)> {
        Some((self.peer_v6?, self.public_v6?, self.prefix64?))
    }
}

/// `prefix64::v4` (RFC 6052 §2.2, /96: the IPv4 address in the last 32 bits).
pub fn embed_v4(prefix64: Ipv6Addr, v4: Ipv4Addr) -> Ipv6Addr {
    let mut o = prefix64.octets();
    o[12..].copy_from_slice(&v4.octets());
    Ipv6Addr::from(o)
}

/// Ask the engine for the public port of a new pinhole on [`FlowAddrs::public`].
/// The engine answers deterministically for the same `(transport,
/// private_port)` within one flow, so a retransmitted message is rewritten
/// identically. `None`: no port available (the rewriter leaves the message
/// unchanged and the engine counts it).
pub trait PortAlloc {
    fn public_port(&mut self, transport: Transport, private_port: u16) -> Option<u16>;
}

/// An inbound mapping for a data or media flow: admit flows from `peer`
/// (any source port) to `public_addr:public_port` and DNAT them to
/// `private_addr:private_port`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Pinhole {
    pub peer: Ipv4Addr,
    pub transport: Transport,
    pub public_addr: Ipv4Addr,
    pub public_port: u16,
    pub private_addr: Ipv4Addr,
    pub private_port: u16,
    /// How long the mapping lives. Decided in one place, the engine, from
    /// its configuration ([`engine::EngineConfig::ftp_data_lifetime`],
    /// [`engine::EngineConfig::media_lifetime`]); the rewriters leave it
    /// zero ([`Pinhole::new`]).
    pub lifetime: Duration,
    /// Also make flows the private end starts towards `peer` from
    /// `private_port` leave with source `public_addr` (e.g. RTP from a
    /// private server reached through a pool address).
    pub snat: bool,
    /// RGW64 NAT46: the pinhole lives on the IPv6 side instead (the IPv4
    /// fields above still describe the flow as the engine tracks it).
    pub v6: Option<Pinhole6>,
}

impl Pinhole {
    /// A pinhole as a rewriter asks for it: from the flow's peer to
    /// `public_port` on the flow's public address, towards `private_port`
    /// of the private host; no `snat`, no IPv6 form, and a zero lifetime
    /// that the engine sets.
    pub fn new(
        flow: &FlowAddrs,
        transport: Transport,
        public_port: u16,
        private_port: u16,
    ) -> Self {
        Pinhole {
            peer: *flow.peer.ip(),
            transport,
            public_addr: flow.public,
            public_port,
            private_addr: *flow.private.ip(),
            private_port,
            lifetime: Duration::ZERO,
            snat: false,
            v6: None,
        }
    }
}

/// The IPv6 form of a [`Pinhole`] (RGW64 NAT46): admit flows from `peer`
/// to `public_addr:public_port` and DNAT them to
/// `private_addr:private_port`, `private_addr` being the private IPv4
/// host's `prefix64::` address, which the translator takes on to the host.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Pinhole6 {
    pub peer: Ipv6Addr,
    pub public_addr: Ipv6Addr,
    pub private_addr: Ipv6Addr,
}

impl Pinhole6 {
    /// RGW64 NAT46: the IPv6 form of a pinhole of `flow` when the flow goes
    /// to an IPv6-only peer ([`FlowAddrs::nat46`]): the peer reaches us on
    /// our IPv6 address, and the private host as `prefix64::host`.
    pub fn nat46(flow: &FlowAddrs) -> Option<Self> {
        flow.nat46().map(|(peer, public_addr, prefix)| Pinhole6 {
            peer,
            public_addr,
            private_addr: embed_v4(prefix, *flow.private.ip()),
        })
    }
}

/// How one message came out of a rewriter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Complete message, no change needed.
    Unchanged,
    /// Complete message, replaced by these bytes (whole message).
    Rewritten(Vec<u8>),
    /// The buffer holds only the start of a message: the engine must wait
    /// for more bytes of the stream (TCP) before deciding.
    Incomplete,
    /// Not parseable as this protocol: pass unchanged and count.
    Malformed,
}

/// Result of [`Rewriter::rewrite`] for the first message in a buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageResult {
    pub outcome: Outcome,
    /// Bytes of the input that the message occupies (0 for `Incomplete`;
    /// for `Malformed` on a stream, how far to skip, at least 1).
    pub consumed: usize,
    pub pinholes: Vec<Pinhole>,
}

/// Per-protocol message rewriter: rewrites the first message in `buf`
/// (a TCP stream slice that starts on a message boundary, or one UDP
/// datagram). Must never panic on any input.
pub trait Rewriter {
    fn rewrite(
        &self,
        buf: &[u8],
        dir: Direction,
        flow: &FlowAddrs,
        ports: &mut dyn PortAlloc,
    ) -> MessageResult;
}
