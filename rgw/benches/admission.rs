//! What the admission policy costs on the allocation path: one reservation
//! (through `Gateway::with_allocator`, as the DNS shell makes it) and its
//! claim by a first packet, with `[admission]` off and with every
//! per-reservation check on (rate, per-resolver limit, reputation, ECS
//! binding). The kernel sink is a no-op, so this is the userspace share only.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion};
use rgw::config::Config;
use rgw::dataplane::gate::FirstPacket;
use rgw::dataplane::nlset::NlError;
use rgw::gateway::{Gateway, ReservationSink};
use rgw::pool::Reservation;
use rgw_dns::{AllocRequest, Allocation, Allocator};

struct NullSink;

impl ReservationSink for NullSink {
    fn install(&mut self, _rs: &[Reservation]) -> Result<(), NlError> {
        Ok(())
    }
    fn remove(&mut self, _r: &Reservation) -> Result<(), NlError> {
        Ok(())
    }
}

const BASE: &str = r#"
[zone]
name = "gwa.demo."
[wan]
interface = "wan0"
service_address = "198.51.100.2"
[lan]
interface = "lan0"
address = "192.168.0.1"
network = "192.168.0.0/24"
upstream_resolver = "203.0.113.54"
[pool]
addresses = ["100.64.0.0/22"]
[[hosts]]
name = "hosta"
ipv4 = "192.168.0.101"
max_pending = 0
"#;

const POLICY: &str = r#"
[admission]
rate = 1000000
burst = 1000000
max_pending_per_resolver = 1000
reputation = true
ecs_binding = true
"#;

fn gateway(extra: &str) -> std::sync::Arc<Gateway> {
    let cfg = Config::from_toml_str(Path::new("bench.toml"), &format!("{BASE}{extra}"))
        .expect("bench configuration is valid");
    Gateway::new(cfg, Box::new(NullSink))
}

fn benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("admission");
    let resolver: IpAddr = "203.0.113.54".parse().expect("address");
    let subnet = Some(("203.0.113.0".parse().expect("address"), 24));
    let only = |k: &str| format!("\n[admission]\n{k}\n");
    for (name, extra) in [
        ("off", String::new()),
        ("rate", only("rate = 1000000\nburst = 1000000")),
        ("reputation", only("reputation = true")),
        ("ecs", only("ecs_binding = true")),
        ("on", POLICY.to_string()),
    ] {
        let gw = gateway(&extra);
        g.bench_function(format!("reserve_claim_{name}"), |b| {
            b.iter(|| {
                let (grant, ok) = gw.with_allocator(|a| {
                    a.set_resolver(resolver);
                    a.allocate(AllocRequest {
                        host: 0,
                        service: None,
                        client_subnet: subnet,
                    })
                });
                assert!(ok);
                let Allocation::Granted(r) = grant else {
                    panic!("a /22 with claims never runs out: {grant:?}")
                };
                let pkt = FirstPacket {
                    src: Ipv4Addr::new(203, 0, 113, 10),
                    dst: r,
                    proto: 6,
                    sport: Some(40000),
                    dport: Some(8),
                };
                black_box(gw.claim(&pkt, Instant::now()))
            })
        });
    }
    g.finish();
}

criterion_group!(admission, benches);
criterion_main!(admission);
