//! Application layer gateways for the Realm Gateway (FTP, SIP, RTSP).
//!
//! The engine will be sans-IO (packets and time in, verdicts and pinholes
//! out) and track TCP SEQ/ACK offsets itself, because this kernel neither
//! passes conntrack data through NFQUEUE nor fixes sequence numbers after a
//! userspace rewrite (DESIGN.md §3). So far only that tracker exists
//! ([`seqadj`]); the rewriters and the data path are not wired, and the
//! gateway forwards these protocols like any other flow, without rewriting.

pub mod seqadj;

/// Well-known control ports whose flows carry addresses in their payload:
/// (IP protocol number, port).
pub const ALG_PORTS: &[(u8, u16)] = &[(6, 21), (17, 5060), (6, 5060), (6, 554)];
