//! The local control socket: `rgw status` asks the running daemon.
//!
//! Protocol: the client writes one line (`status`), the daemon answers one
//! JSON document and closes.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;
use tracing::{debug, info};

use crate::dataplane::{self, ruleset, QueueVia};
use crate::gateway::Gateway;

pub fn status_json(gw: &Gateway, via: QueueVia) -> Value {
    let counters: serde_json::Map<String, Value> = gw
        .metrics
        .snapshot()
        .into_iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    let table = &gw.cfg.dataplane.table;
    let kernel: serde_json::Map<String, Value> = [
        ruleset::COUNTER_UNRESERVED,
        ruleset::COUNTER_NO_DAEMON,
        ruleset::COUNTER_FORWARD_DROP,
    ]
    .iter()
    .map(|c| (c.to_string(), json!(dataplane::counter_packets(table, c))))
    .collect();
    let s = gw.pool_stats();
    let pending: Vec<Value> = gw
        .pending()
        .into_iter()
        .map(|(host, addr, svc, left)| json!({"host": host, "address": addr.to_string(), "service": svc, "expires_in_s": left}))
        .collect();
    json!({
        "zone": gw.cfg.zone.name,
        "table": table,
        "queue_backend": match via { QueueVia::Nft => "nft", QueueVia::Xt => "xt" },
        "pool": {"size": s.size, "free": s.free, "exclusive": s.exclusive, "shared": s.shared, "pending": s.pending},
        "pending": pending,
        "counters": counters,
        "kernel_drops": kernel,
    })
}

pub async fn serve(path: &Path, gw: Arc<Gateway>, via: QueueVia) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path)
        .with_context(|| format!("binding control socket {}", path.display()))?;
    // Owner and group only: status reveals which hosts are being reached.
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o660))
        .with_context(|| format!("restricting control socket {}", path.display()))?;
    info!(socket = %path.display(), "control socket ready");
    loop {
        let (stream, _) = listener.accept().await?;
        let gw = Arc::clone(&gw);
        tokio::spawn(async move {
            let (r, mut w) = stream.into_split();
            let mut line = String::new();
            if BufReader::new(r).read_line(&mut line).await.is_err() {
                return;
            }
            let reply = match line.trim() {
                "status" => {
                    let gw2 = Arc::clone(&gw);
                    // Reading kernel counters spawns nft: keep it off the async threads.
                    match tokio::task::spawn_blocking(move || status_json(&gw2, via)).await {
                        Ok(v) => v,
                        Err(e) => json!({"error": e.to_string()}),
                    }
                }
                other => json!({"error": format!("unknown command {other:?}; try \"status\"")}),
            };
            if let Err(e) = w.write_all(format!("{reply}\n").as_bytes()).await {
                debug!(error = %e, "control reply failed");
            }
        });
    }
}

/// Client side of `rgw status`.
pub fn request(path: &Path, command: &str) -> Result<Value> {
    use std::io::{BufRead, Write};
    let mut s = std::os::unix::net::UnixStream::connect(path)
        .with_context(|| format!("connecting to {} (is rgw running?)", path.display()))?;
    s.write_all(format!("{command}\n").as_bytes())?;
    let mut line = String::new();
    std::io::BufReader::new(s).read_line(&mut line)?;
    serde_json::from_str(&line).context("daemon sent invalid JSON")
}
