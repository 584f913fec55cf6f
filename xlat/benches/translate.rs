//! Translation cost per packet: UDP packets of 64 and 1400 bytes (whole IP packet,
//! input side) translated 4→6 (IPv4 host → statically bound IPv6 host) and 6→4
//! (IPv6 host → IPv4 host through its proxy ULA, binding already created).
//! Output buffers are handed back with `recycle`, as the TUN shell does, so the
//! loop measures translation, not the allocator. Criterion reports time per
//! iteration = ns/packet; throughput is set in bytes of input.

use std::hint::black_box;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rgw_xlat::{Translator, XlatConfig};

fn checksum(data: &[u8]) -> u16 {
    let mut s: u32 = 0;
    for c in data.chunks(2) {
        let w = (u32::from(c[0]) << 8) | c.get(1).map_or(0, |b| u32::from(*b));
        s += w;
    }
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

/// IPv4/UDP packet of `total` bytes (checksums valid).
fn udp4(src: Ipv4Addr, dst: Ipv4Addr, total: usize) -> Vec<u8> {
    let l4 = total - 20;
    let mut p = vec![0u8; total];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    let c = checksum(&p[..20]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p[20..22].copy_from_slice(&40000u16.to_be_bytes());
    p[22..24].copy_from_slice(&5001u16.to_be_bytes());
    p[24..26].copy_from_slice(&(l4 as u16).to_be_bytes());
    for (i, b) in p[28..].iter_mut().enumerate() {
        *b = i as u8;
    }
    let mut ph = Vec::new();
    ph.extend_from_slice(&src.octets());
    ph.extend_from_slice(&dst.octets());
    ph.extend_from_slice(&[0, 17]);
    ph.extend_from_slice(&(l4 as u16).to_be_bytes());
    ph.extend_from_slice(&p[20..]);
    let c = checksum(&ph);
    p[26..28].copy_from_slice(&c.to_be_bytes());
    p
}

/// IPv6/UDP packet of `total` bytes (checksum valid).
fn udp6(src: Ipv6Addr, dst: Ipv6Addr, total: usize) -> Vec<u8> {
    let l4 = total - 40;
    let mut p = vec![0u8; total];
    p[0] = 0x60;
    p[4..6].copy_from_slice(&(l4 as u16).to_be_bytes());
    p[6] = 17;
    p[7] = 64;
    p[8..24].copy_from_slice(&src.octets());
    p[24..40].copy_from_slice(&dst.octets());
    p[40..42].copy_from_slice(&40000u16.to_be_bytes());
    p[42..44].copy_from_slice(&5001u16.to_be_bytes());
    p[44..46].copy_from_slice(&(l4 as u16).to_be_bytes());
    for (i, b) in p[48..].iter_mut().enumerate() {
        *b = i as u8;
    }
    let mut ph = Vec::new();
    ph.extend_from_slice(&src.octets());
    ph.extend_from_slice(&dst.octets());
    ph.extend_from_slice(&(l4 as u32).to_be_bytes());
    ph.extend_from_slice(&[0, 0, 0, 17]);
    ph.extend_from_slice(&p[40..]);
    let c = checksum(&ph);
    p[46..48].copy_from_slice(&c.to_be_bytes());
    p
}

fn bench(c: &mut Criterion) {
    let host6: Ipv6Addr = "2001:db8:1::10".parse().expect("literal");
    let static4 = Ipv4Addr::new(10, 64, 0, 10);
    let remote4 = Ipv4Addr::new(192, 0, 2, 1);
    let client6: Ipv6Addr = "2001:db8:2::20".parse().expect("literal");
    let cfg = XlatConfig {
        static_map: vec![(static4, host6)],
        dynamic_timeout: Duration::from_secs(3600),
        ..XlatConfig::default()
    };
    let mut t = Translator::new(cfg).expect("bench config is valid");
    let now = Instant::now();
    let proxy = t.embed(remote4);

    let mut g = c.benchmark_group("translate");
    for size in [64usize, 1400] {
        let p4 = udp4(remote4, static4, size);
        let p6 = udp6(client6, proxy, size);
        let mut out = Vec::new();
        t.translate(now, &p4, &mut out).expect("4→6 translates");
        t.translate(now, &p6, &mut out).expect("6→4 translates");
        t.recycle(&mut out);
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_function(format!("udp_4to6_{size}B"), |b| {
            b.iter(|| {
                let r = t.translate(now, black_box(&p4), &mut out);
                black_box(&r);
                t.recycle(&mut out);
            })
        });
        g.bench_function(format!("udp_6to4_{size}B"), |b| {
            b.iter(|| {
                let r = t.translate(now, black_box(&p6), &mut out);
                black_box(&r);
                t.recycle(&mut out);
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = bench
}
criterion_main!(benches);
