//! Time per packet through the ALG engine (sans-IO part only).
//!
//! `cargo run --release -p rgw-alg --example engine_bench [iterations]`
//!
//! Scenarios on one FTP control flow (private client): a command that needs
//! no rewrite, a PORT command rewritten (with its pinhole), and the peer's
//! ACK unmapped after a rewrite; and a new flow per packet (lookup miss,
//! creation).

use std::hint::black_box;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Instant;

use rgw_alg::engine::{Engine, EngineConfig, FlowContext};
use rgw_alg::packet::build::{tcp_packet, TcpSpec};
use rgw_alg::packet::TcpFlags;
use rgw_alg::{Direction, Role, Transport};

struct Ctx;
impl FlowContext for Ctx {
    fn public_addr(
        &self,
        _: SocketAddrV4,
        _: SocketAddrV4,
        _: Transport,
        _: Role,
    ) -> Option<Ipv4Addr> {
        Some(Ipv4Addr::new(100, 64, 1, 131))
    }
    fn host_fqdn(&self, _: Ipv4Addr) -> Option<String> {
        None
    }
}

const PRIV: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 101);
const PEER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);

fn seg(sport: u16, dir: Direction, seq: u32, ack: u32, data: &[u8]) -> Vec<u8> {
    let (src, dst) = match dir {
        Direction::FromPrivate => ((PRIV, sport), (PEER, 21)),
        Direction::FromPublic => ((PEER, 21), (PRIV, sport)),
    };
    tcp_packet(&TcpSpec {
        src,
        dst,
        seq,
        ack,
        flags: TcpFlags::ACK | TcpFlags::PSH,
        sack: &[],
        payload: data,
    })
}

fn report(name: &str, n: u32, start: Instant) {
    let ns = start.elapsed().as_nanos() as f64 / f64::from(n);
    println!("{name:<40} {ns:>8.0} ns/packet");
}

fn main() {
    let n: u32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200_000);
    let now = Instant::now();
    let out = Direction::FromPrivate;

    // Unchanged command on a tracked flow (each packet new data, in order).
    let mut e = Engine::new(EngineConfig::default());
    let cmd = b"NOOP\r\n";
    let pkts: Vec<Vec<u8>> = (0..1024u32)
        .map(|i| seg(40000, out, 1 + i * 6, 1, cmd))
        .collect();
    let start = Instant::now();
    for i in 0..n {
        // Wrap the stream every 1024 packets: a new connection (SYN).
        if i % 1024 == 0 {
            let syn = tcp_packet(&TcpSpec {
                src: (PRIV, 40000),
                dst: (PEER, 21),
                seq: 0,
                ack: 0,
                flags: TcpFlags::SYN,
                sack: &[],
                payload: b"",
            });
            black_box(e.handle(now, out, &syn, &Ctx));
        }
        black_box(e.handle(now, out, &pkts[(i % 1024) as usize], &Ctx));
    }
    report("unchanged command", n, start);

    // PORT rewritten: a fresh flow every 1024 packets keeps the per-flow
    // state small.
    let port = b"PORT 192,168,0,101,4,1\r\n";
    let pkts: Vec<Vec<u8>> = (0..1024u32)
        .map(|i| seg(40001, out, 1 + i * 24, 1, port))
        .collect();
    let mut e = Engine::new(EngineConfig::default());
    let start = Instant::now();
    for i in 0..n {
        if i % 1024 == 0 {
            let syn = tcp_packet(&TcpSpec {
                src: (PRIV, 40001),
                dst: (PEER, 21),
                seq: 0,
                ack: 0,
                flags: TcpFlags::SYN,
                sack: &[],
                payload: b"",
            });
            black_box(e.handle(now, out, &syn, &Ctx));
        }
        black_box(e.handle(now, out, &pkts[(i % 1024) as usize], &Ctx));
    }
    report("PORT rewritten (+pinhole)", n, start);

    // The peer's ACK after a rewrite: unmapped.
    let mut e = Engine::new(EngineConfig::default());
    e.handle(now, out, &seg(40002, out, 1, 1, port), &Ctx);
    let ack = seg(
        40002,
        Direction::FromPublic,
        1,
        24,
        b"200 PORT command successful\r\n",
    );
    let start = Instant::now();
    for _ in 0..n {
        black_box(e.handle(now, Direction::FromPublic, &ack, &Ctx));
    }
    report("peer reply, ACK unmapped", n, start);

    // Not an ALG flow (lookup miss, port check).
    let other = tcp_packet(&TcpSpec {
        src: (PRIV, 40003),
        dst: (PEER, 22),
        seq: 1,
        ack: 1,
        flags: TcpFlags::ACK,
        sack: &[],
        payload: b"x",
    });
    let start = Instant::now();
    for _ in 0..n {
        black_box(e.handle(now, out, &other, &Ctx));
    }
    report("non-ALG packet", n, start);
}
