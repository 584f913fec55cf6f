//! The local control socket: `rgw status` asks the running daemon.
//!
//! Protocol: the client writes one line (`status`, `bindings`, `reload`,
//! `log <filter>`), the daemon answers one JSON document and closes.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;
use tracing::{debug, info};

use crate::bindings;
use crate::config::Config;
use crate::dataplane::{self, ruleset, QueueVia};
use crate::gateway::{Gateway, ReloadReport};

/// Changes the log filter at run time.
pub type LogSetter = Arc<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// What the control socket needs from the daemon.
#[derive(Clone)]
pub struct Control {
    pub gw: Arc<Gateway>,
    pub via: QueueVia,
    pub config_path: std::path::PathBuf,
    pub set_log: LogSetter,
    /// RGW64's translator, for its counters and bindings in `status`.
    pub rgw64: Option<Arc<crate::rgw64::Rgw64>>,
}

/// Re-reads the configuration file and applies it (also on SIGHUP).
pub fn reload(gw: &Gateway, path: &Path) -> Result<ReloadReport> {
    let _one_at_a_time = gw.reload_lock.lock().unwrap_or_else(|p| p.into_inner());
    let new = Config::load(path)?;
    let prepared = gw.prepare_reload(new).map_err(anyhow::Error::msg)?;
    // The host map first: a claim for a new host must find its mark.
    dataplane::update_host_map(&prepared.cfg)?;
    Ok(gw.commit_reload(prepared))
}

/// Pending reservations and the claimed flows conntrack carries.
pub fn bindings_json(gw: &Gateway) -> Value {
    let snap = gw.snapshot();
    let pending: Vec<Value> = gw
        .pending()
        .into_iter()
        .map(|(host, addr, svc, left)| json!({"host": host, "address": addr.to_string(), "service": svc, "expires_in_s": left}))
        .collect();
    let (claimed, error) = match dataplane::conntrack_dump() {
        Ok(dump) => {
            let pool = &snap.cfg.pool.addresses;
            let list: Vec<Value> = bindings::claimed(&dump, |a| pool.binary_search(&a).is_ok())
                .into_iter()
                .map(|b| {
                    let host = snap
                        .cfg
                        .hosts
                        .iter()
                        .find(|h| h.ipv4 == b.private && !h.name.is_empty())
                        .map(|h| h.name.clone());
                    json!({
                        "proto": b.proto, "state": b.state, "timeout_s": b.timeout,
                        "remote": b.remote.to_string(), "remote_port": b.remote_port,
                        "public": b.public.to_string(), "public_port": b.public_port,
                        "private": b.private.to_string(), "private_port": b.private_port,
                        "host": host,
                    })
                })
                .collect();
            (list, Value::Null)
        }
        Err(e) => (Vec::new(), json!(e.to_string())),
    };
    json!({"pending": pending, "claimed": claimed, "conntrack_error": error})
}

pub fn status_json(gw: &Gateway, via: QueueVia) -> Value {
    let counters: serde_json::Map<String, Value> = gw
        .metrics
        .snapshot()
        .into_iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    let snap = gw.snapshot();
    let table = &snap.cfg.dataplane.table;
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
        "zone": snap.cfg.zone.name,
        "table": table,
        "queue_backend": match via { QueueVia::Nft => "nft", QueueVia::Xt => "xt" },
        "pool": {"size": s.size, "free": s.free, "exclusive": s.exclusive, "shared": s.shared, "pending": s.pending},
        "pending": pending,
        "counters": counters,
        "kernel_drops": kernel,
        "admission": {
            "antispoof": match &snap.cfg.admission.antispoof {
                crate::admission::AntiSpoofMode::Off => "off",
                crate::admission::AntiSpoofMode::Tc => "tc",
                crate::admission::AntiSpoofMode::Cname { .. } => "cname",
            },
            "resolvers_tracked": gw.admission_tracked().0,
            "subnets_tracked": gw.admission_tracked().1,
        },
        "proxy": gw.snapshot().cfg.proxy.as_ref().map(|_| {
            gw.proxy_stats.snapshot().into_iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>()
        }),
        "alg": gw.alg.get().map(|a| a.status_json()),
        "binding_log": gw.binding_log().map(|tx| {
            let st = tx.state();
            json!({
                "written": st.written.load(std::sync::atomic::Ordering::Relaxed),
                "dropped": st.dropped.load(std::sync::atomic::Ordering::Relaxed),
                "errors": st.errors.load(std::sync::atomic::Ordering::Relaxed),
            })
        }),
    })
}

pub async fn serve(path: &Path, ctl: Control) -> Result<()> {
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
        let ctl = ctl.clone();
        tokio::spawn(async move {
            let (r, mut w) = stream.into_split();
            let mut line = String::new();
            if BufReader::new(r).read_line(&mut line).await.is_err() {
                return;
            }
            let command = line.trim().to_string();
            // Every command may spawn nft/conntrack or read files: off the async threads.
            let reply = tokio::task::spawn_blocking(move || execute(&ctl, &command))
                .await
                .unwrap_or_else(|e| json!({"error": e.to_string()}));
            if let Err(e) = w.write_all(format!("{reply}\n").as_bytes()).await {
                debug!(error = %e, "control reply failed");
            }
        });
    }
}

fn execute(ctl: &Control, command: &str) -> Value {
    let (verb, arg) = command.split_once(' ').unwrap_or((command, ""));
    match verb {
        "status" => {
            let mut v = status_json(&ctl.gw, ctl.via);
            if let Some(r) = &ctl.rgw64 {
                v["rgw64"] = r.status();
            }
            v
        }
        "bindings" => bindings_json(&ctl.gw),
        "reload" => match reload(&ctl.gw, &ctl.config_path) {
            Ok(r) => {
                json!({"ok": true, "added": r.added, "removed": r.removed, "changed": r.changed, "cancelled_reservations": r.cancelled})
            }
            Err(e) => json!({"ok": false, "error": format!("{e:#}")}),
        },
        "log" => match (ctl.set_log)(arg.trim()) {
            Ok(()) => {
                info!(filter = arg.trim(), "log filter changed");
                json!({"ok": true, "filter": arg.trim()})
            }
            Err(e) => json!({"ok": false, "error": e}),
        },
        other => {
            json!({"error": format!("unknown command {other:?}; try status, bindings, reload, log <filter>")})
        }
    }
}

/// Client side of the control socket.
pub fn request(path: &Path, command: &str) -> Result<Value> {
    use std::io::{BufRead, Write};
    let mut s = std::os::unix::net::UnixStream::connect(path)
        .with_context(|| format!("connecting to {} (is rgw running?)", path.display()))?;
    s.write_all(format!("{command}\n").as_bytes())?;
    let mut line = String::new();
    std::io::BufReader::new(s).read_line(&mut line)?;
    serde_json::from_str(&line).context("daemon sent invalid JSON")
}
