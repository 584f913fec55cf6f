//! Application layer gateways for the Realm Gateway.
//!
//! The engine is sans-IO: packets and time in, verdicts and pinholes out.
//! The FTP/SIP/RTSP rewriters and the TCP SEQ/ACK offset tracker land here
//! (see issue "ALG engine"); the gateway's data plane already keeps the ALG
//! ports out of the plain NAT path so they can be queued to it later.

/// Well-known control ports whose flows carry addresses in their payload.
pub const ALG_PORTS: &[(u8, u16)] = &[(6, 21), (17, 5060), (6, 5060), (6, 554)];
