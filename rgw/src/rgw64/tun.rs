//! The translator's I/O shell: a TUN device and one blocking thread that
//! reads a packet, translates it (sans-IO, [`rgw_xlat::Translator`]) and
//! writes back whatever the translator produced (the translated packet, its
//! fragments, or an ICMP error for the sender).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use tracing::{debug, info, warn};
use tun_rs::{DeviceBuilder, SyncDevice};

use super::{Rgw64, Rgw64Config};

/// Errors of the shell itself (the translator counts its own drops).
#[derive(Debug, Default)]
pub struct TunStats {
    pub read_errors: AtomicU64,
    pub write_errors: AtomicU64,
}

/// Creates the TUN device (no addresses: only routes point at it).
pub fn open(r: &Rgw64Config) -> Result<SyncDevice> {
    DeviceBuilder::new()
        .name(r.tun.as_str())
        .mtu(r.mtu)
        .build_sync()
        .with_context(|| format!("creating the TUN device {} (rgw64.tun)", r.tun))
}

/// Reads, translates, writes, until the device fails for good.
pub fn run(dev: SyncDevice, rgw: Arc<Rgw64>) -> Result<()> {
    let stats = Arc::clone(&rgw.tun_stats);
    info!(tun = %rgw.cfg.tun, "RGW64 translator running");
    // Large enough for any packet the TUN hands over (MTU-sized, or up to 64 KiB).
    let mut buf = vec![0u8; 65536];
    let mut out: Vec<Vec<u8>> = Vec::with_capacity(4);
    let mut consecutive_errors = 0u32;
    loop {
        let n = match dev.recv(&mut buf) {
            Ok(n) => {
                consecutive_errors = 0;
                n
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                stats.read_errors.fetch_add(1, Relaxed);
                consecutive_errors += 1;
                if consecutive_errors > 1000 {
                    return Err(e).context("reading the TUN device");
                }
                warn!(error = %e, "TUN read failed");
                std::thread::sleep(std::time::Duration::from_millis(1));
                continue;
            }
        };
        let Some(packet) = buf.get(..n) else { continue };
        let verdict = rgw.xlat().translate(Instant::now(), packet, &mut out);
        if let Err(d) = verdict {
            debug!(reason = %d, len = n, "packet not translated");
        }
        // Every packet in `out` goes back, whatever the verdict (ICMP errors).
        for p in &out {
            if let Err(e) = dev.send(p) {
                stats.write_errors.fetch_add(1, Relaxed);
                debug!(error = %e, len = p.len(), "TUN write failed");
            }
        }
        rgw.xlat().recycle(&mut out);
    }
}
