// Shared by the ALG fuzz targets (included with `include!`): a fixed flow,
// a deterministic port allocator and the checks every rewriter must pass.

use rgw_alg::{Direction, FlowAddrs, MessageResult, Outcome, PortAlloc, Rewriter, Role, Transport};
use std::net::{Ipv4Addr, SocketAddrV4};

/// Hands out `private + offset` (never 0), or nothing when `offset == 0`.
struct Ports {
    offset: u16,
}

impl PortAlloc for Ports {
    fn public_port(&mut self, _t: Transport, private_port: u16) -> Option<u16> {
        if self.offset == 0 {
            None
        } else {
            Some(private_port.wrapping_add(self.offset).max(1))
        }
    }
}

/// Byte 0 chooses direction, role, transport, whether the host FQDN is known
/// and whether ports can be allocated; the rest is one message (or the start
/// of a stream).
///
/// Invariants: no panic; `consumed` never exceeds the input; `Incomplete`
/// consumes nothing; a complete message consumes at least one byte; a
/// malformed stream is skipped by at least one byte; the same input gives the
/// same result (a retransmission is rewritten identically); every pinhole is
/// for the flow's public address or the private host, with a non-zero port.
fn check_rewriter(rw: &dyn Rewriter, data: &[u8], alg_port: u16) {
    let Some((&ctl, buf)) = data.split_first() else {
        return;
    };
    let dir = if ctl & 1 == 0 {
        Direction::FromPrivate
    } else {
        Direction::FromPublic
    };
    let role = if ctl & 2 == 0 {
        Role::PrivateClient
    } else {
        Role::PrivateServer
    };
    let transport = if ctl & 4 == 0 {
        Transport::Tcp
    } else {
        Transport::Udp
    };
    let private = Ipv4Addr::new(192, 168, 0, 101);
    let public = Ipv4Addr::new(198, 51, 100, 17);
    let (private_port, peer_port) = match role {
        Role::PrivateServer => (alg_port, 40000),
        Role::PrivateClient => (40000, alg_port),
    };
    let flow = FlowAddrs {
        private: SocketAddrV4::new(private, private_port),
        peer: SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 10), peer_port),
        public,
        host_fqdn: (ctl & 8 != 0).then(|| "hosta.gwa.demo".to_string()),
        role,
        transport,
    };
    let offset = if ctl & 16 == 0 { 1000 } else { 0 };
    let run = || -> MessageResult { rw.rewrite(buf, dir, &flow, &mut Ports { offset }) };
    let r = run();
    assert!(
        r.consumed <= buf.len(),
        "consumed {} of {}",
        r.consumed,
        buf.len()
    );
    match &r.outcome {
        Outcome::Incomplete => assert_eq!(r.consumed, 0, "incomplete but consumed"),
        Outcome::Unchanged | Outcome::Rewritten(_) => {
            assert!(r.consumed >= 1, "a complete message of 0 bytes")
        }
        Outcome::Malformed => {
            if transport == Transport::Tcp {
                assert!(r.consumed >= 1, "a malformed stream must be skipped");
            }
        }
    }
    for p in &r.pinholes {
        assert!(p.public_port != 0 && p.private_port != 0, "{p:?}");
        assert!(
            p.public_addr == public || p.private_addr == private,
            "{p:?}"
        );
    }
    assert_eq!(run(), r, "the same message rewritten twice differs");
}
