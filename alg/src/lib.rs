//! Application layer gateways for the Realm Gateway (FTP, SIP, RTSP).
//!
//! Not built yet: the engine will be sans-IO (packets and time in, verdicts
//! and pinholes out), with its own TCP SEQ/ACK offset tracking, because this
//! kernel neither passes conntrack data through NFQUEUE nor fixes sequence
//! numbers after a userspace rewrite (DESIGN.md §3). Until then the gateway
//! forwards these protocols like any other flow, without rewriting.

/// Well-known control ports whose flows carry addresses in their payload:
/// (IP protocol number, port).
pub const ALG_PORTS: &[(u8, u16)] = &[(6, 21), (17, 5060), (6, 5060), (6, 554)];
