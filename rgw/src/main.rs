//! `rgw`: run the Realm Gateway, check a configuration, talk to a running daemon.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use rgw::config::Config;
use rgw::control::Control;
use rgw::dataplane::{self, gate};
use rgw::dnsserver::DnsServer;
use rgw::gateway::{Gateway, KernelSets};
use rgw_dns::View;
use serde_json::Value;
use tracing::{error, info, warn};
use tracing_subscriber::prelude::*;

#[derive(Parser)]
#[command(
    name = "rgw",
    version,
    about = "Realm Gateway: reach hosts behind NAT by name"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

/// Which daemon to talk to, and how to print its answer.
#[derive(Args)]
struct Target {
    /// Control socket (default: the one the configuration names).
    #[arg(short, long)]
    socket: Option<PathBuf>,
    #[arg(short, long, default_value = "/etc/rgw/rgw.toml")]
    config: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

impl Target {
    fn ask(&self, command: &str) -> Result<Value> {
        let socket = match &self.socket {
            Some(s) => s.clone(),
            None => Config::load(&self.config)?.control_socket,
        };
        rgw::control::request(&socket, command)
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the gateway (needs root / CAP_NET_ADMIN in the gateway's network namespace).
    Run {
        #[arg(short, long, default_value = "/etc/rgw/rgw.toml")]
        config: PathBuf,
        /// Log filter (tracing EnvFilter syntax); RGW_LOG overrides it.
        #[arg(long, default_value = "info")]
        log: String,
    },
    /// Validate a configuration file without touching the system.
    Check {
        #[arg(short, long, default_value = "/etc/rgw/rgw.toml")]
        config: PathBuf,
    },
    /// Pool use, pending reservations and counters of the running daemon.
    Status(Target),
    /// Live bindings: pending reservations and the claimed flows in conntrack.
    Bindings(Target),
    /// Re-read the configuration file (hosts, zone TTLs, on_exhausted); same as SIGHUP.
    Reload(Target),
    /// Change the running daemon's log filter, e.g. `debug` or `info,rgw=debug`.
    LogLevel {
        filter: String,
        #[command(flatten)]
        target: Target,
    },
}

fn main() {
    let cli = Cli::parse();
    if !matches!(cli.cmd, Cmd::Run { .. }) {
        // A client command writing into a closed pipe (`rgw status | head`)
        // ends quietly like any Unix tool; the daemon keeps ignoring SIGPIPE.
        // SAFETY: setting a signal disposition before any thread starts.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    let result = match cli.cmd {
        Cmd::Run { config, log } => run(config, log),
        Cmd::Check { config } => check(config),
        Cmd::Status(t) => status(&t),
        Cmd::Bindings(t) => bindings(&t),
        Cmd::Reload(t) => simple(&t, "reload"),
        Cmd::LogLevel { filter, target } => simple(&target, &format!("log {filter}")),
    };
    if let Err(e) = result {
        eprintln!("rgw: {e:#}");
        std::process::exit(1);
    }
}

/// A JSON string without its quotes, anything else as JSON.
fn text(x: &Value) -> String {
    x.as_str()
        .map(str::to_string)
        .unwrap_or_else(|| x.to_string())
}

/// Commands answered with `{"ok": …}`: print the answer, fail when not ok.
fn simple(t: &Target, command: &str) -> Result<()> {
    let v = t.ask(command)?;
    if t.json {
        println!("{v}");
    } else if let Some(obj) = v.as_object() {
        for (k, val) in obj {
            println!("{k}: {}", text(val));
        }
    }
    if v["ok"] != Value::Bool(true) {
        anyhow::bail!("{}", text(&v["error"]));
    }
    Ok(())
}

fn bindings(t: &Target) -> Result<()> {
    let v = t.ask("bindings")?;
    if t.json {
        println!("{v}");
        return Ok(());
    }
    let port = |p: &Value| {
        if p.is_null() {
            "*".to_string()
        } else {
            text(p)
        }
    };
    println!("claimed flows (conntrack):");
    for b in v["claimed"].as_array().into_iter().flatten() {
        println!(
            "  {:<5} {}:{} <- {}:{}  => {} {}:{}  {} ({}s)",
            text(&b["proto"]),
            text(&b["public"]),
            port(&b["public_port"]),
            text(&b["remote"]),
            port(&b["remote_port"]),
            text(&b["host"]),
            text(&b["private"]),
            port(&b["private_port"]),
            b["state"].as_str().unwrap_or("-"),
            b["timeout_s"]
        );
    }
    println!("pending reservations:");
    for r in v["pending"].as_array().into_iter().flatten() {
        println!(
            "  {:<10} {:<16} {:<8} {:.2}s left",
            text(&r["host"]),
            text(&r["address"]),
            text(&r["service"]),
            r["expires_in_s"].as_f64().unwrap_or(0.0)
        );
    }
    if !v["conntrack_error"].is_null() {
        anyhow::bail!("conntrack: {}", text(&v["conntrack_error"]));
    }
    Ok(())
}

fn check(path: PathBuf) -> Result<()> {
    let cfg = Config::load(&path)?;
    println!(
        "{}: ok — zone {}, {} pool addresses, Tmax {:?}, {} hosts",
        path.display(),
        cfg.zone.name,
        cfg.pool.addresses.len(),
        cfg.pool.tmax,
        cfg.hosts.len()
    );
    if let Some(r) = &cfg.rgw64 {
        println!(
            "rgw64: tun {}, prefix64 {}, pool4 {} ({} static, {} dynamic), NAT66 to {}",
            r.tun,
            r.prefix64,
            r.pool4,
            r.statics.len(),
            r.dynamic_capacity().min(u64::from(r.max_dynamic)),
            r.wan_address6
        );
    }
    Ok(())
}

fn status(target: &Target) -> Result<()> {
    let v = target.ask("status")?;
    if target.json {
        println!("{v}");
        return Ok(());
    }
    let t = text;
    let p = &v["pool"];
    println!(
        "zone {}  table {}  gate via {}",
        t(&v["zone"]),
        t(&v["table"]),
        t(&v["queue_backend"])
    );
    println!(
        "pool: {} addresses, {} free, {} exclusive, {} shared, {} pending",
        p["size"], p["free"], p["exclusive"], p["shared"], p["pending"]
    );
    for r in v["pending"].as_array().into_iter().flatten() {
        println!(
            "  pending {:<10} {:<16} {:<8} {:.2}s left",
            t(&r["host"]),
            t(&r["address"]),
            t(&r["service"]),
            r["expires_in_s"].as_f64().unwrap_or(0.0)
        );
    }
    for (k, n) in v["counters"].as_object().into_iter().flatten() {
        println!("  {k:<24} {n}");
    }
    for (k, n) in v["kernel_drops"].as_object().into_iter().flatten() {
        println!("  kernel {k:<17} {n}");
    }
    let a = &v["admission"];
    println!(
        "admission: antispoof {}, {} resolvers and {} client subnets tracked",
        t(&a["antispoof"]),
        a["resolvers_tracked"],
        a["subnets_tracked"]
    );
    for (k, n) in v["proxy"].as_object().into_iter().flatten() {
        println!("  proxy {k:<18} {n}");
    }
    for (k, n) in v["binding_log"].as_object().into_iter().flatten() {
        println!("  binding log {k:<12} {n}");
    }
    for line in alg_lines(&v["alg"]) {
        println!("{line}");
    }
    if let Some(r) = v["rgw64"].as_object() {
        for (k, n) in r.iter().filter(|(k, _)| *k != "mappings" && *k != "drops") {
            println!("  rgw64 {k:<18} {n}");
        }
        for (k, n) in r
            .get("drops")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            println!("  rgw64 drop {k:<13} {n}");
        }
        for m in r
            .get("mappings")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            println!(
                "  rgw64 binding {:<15} {:<28} {:<7} {} packets",
                t(&m["ipv4"]),
                t(&m["ipv6"]),
                t(&m["origin"]),
                m["packets"]
            );
        }
    }
    Ok(())
}

/// The ALG block of `rgw status`: a summary line, one line per tracked
/// flow, then the counters that are not zero. Nothing without `[alg]`
/// (`alg` is `null`).
fn alg_lines(a: &Value) -> Vec<String> {
    let Some(a) = a.as_object() else {
        return Vec::new();
    };
    let n = |k: &str| a.get(k).and_then(Value::as_u64).unwrap_or(0);
    let mut out = vec![format!(
        "alg: {} flows active, {} rewrites, {} pinholes written",
        n("flows_active"),
        n("rewrites"),
        n("pinholes")
    )];
    for f in a
        .get("flows")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        out.push(format!(
            "  alg flow {:<5} {:<8} {:<21} peer {:<21} public {:<15} {} rewrites, offset {:+}",
            text(&f["protocol"]),
            text(&f["role"]),
            text(&f["private"]),
            text(&f["peer"]),
            text(&f["public"]),
            f["rewrites"].as_u64().unwrap_or(0),
            f["offset_from_private"].as_i64().unwrap_or(0)
        ));
    }
    for (k, v) in a
        .get("counters")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter(|(_, v)| v.as_u64() != Some(0))
    {
        out.push(format!("  alg {k:<20} {v}"));
    }
    out
}

/// Routes `www.<host>.<zone>` to the host's web server on `port`, using the
/// current configuration (a reload changes routes at once).
fn www_router(gw: Arc<Gateway>, port: u16) -> Arc<dyn rgw::proxy::Router> {
    Arc::new(move |name: &str| -> Option<SocketAddr> {
        let snap = gw.snapshot();
        let zone = snap.cfg.zone.name.trim_end_matches('.');
        let host = name
            .strip_prefix("www.")?
            .strip_suffix(zone)?
            .strip_suffix('.')?;
        snap.cfg
            .hosts
            .iter()
            .find(|h| !h.name.is_empty() && h.name == host)
            .map(|h| SocketAddr::from((h.ipv4, port)))
    })
}

/// The Prometheus exposition of the daemon's counters, pool and kernel
/// drops, the ALG's and the RGW64 translator's.
fn metrics_text(gw: &Gateway, rgw64: Option<&rgw::rgw64::Rgw64>) -> String {
    use rgw::dataplane::ruleset::{COUNTER_FORWARD_DROP, COUNTER_NO_DAEMON, COUNTER_UNRESERVED};
    let table = gw.snapshot().cfg.dataplane.table.clone();
    let kernel: Vec<(&'static str, Option<u64>)> =
        [COUNTER_UNRESERVED, COUNTER_NO_DAEMON, COUNTER_FORWARD_DROP]
            .into_iter()
            .map(|c| (c, dataplane::counter_packets(&table, c)))
            .collect();
    let s = gw.pool_stats();
    let pool = rgw::prometheus::PoolGauges {
        size: s.size as u64,
        free: s.free as u64,
        exclusive: s.exclusive as u64,
        shared: s.shared as u64,
        pending: s.pending as u64,
    };
    // Component counters join the daemon's under a prefix (`rgw_proxy_routed_total`, …).
    let mut extra: Vec<(String, u64)> = gw
        .proxy_stats
        .snapshot()
        .into_iter()
        .map(|(k, v)| (format!("proxy_{k}"), v))
        .collect();
    if let Some(tx) = gw.binding_log() {
        use std::sync::atomic::Ordering::Relaxed;
        let st = tx.state();
        extra.push(("binding_log_written".into(), st.written.load(Relaxed)));
        extra.push(("binding_log_dropped".into(), st.dropped.load(Relaxed)));
        extra.push(("binding_log_errors".into(), st.errors.load(Relaxed)));
    }
    let mut counters: Vec<(&str, u64)> = gw.metrics.snapshot();
    counters.extend(extra.iter().map(|(k, v)| (k.as_str(), *v)));
    let mut samples = rgw::prometheus::gateway_samples(&counters, pool, &kernel);
    if let Some(alg) = gw.alg.get() {
        let flows = alg.engine().stats().flows as u64;
        samples.extend(rgw::prometheus::alg_samples(&alg.counters(), flows));
    }
    if let Some(r) = rgw64 {
        samples.extend(rgw::prometheus::rgw64_samples(&r.metrics()));
    }
    rgw::prometheus::render_owned(&samples)
}

/// Holds an exclusive lock file for the daemon's life: one for the control
/// socket (the filesystem is shared across network namespaces, so two daemons
/// must not share, and delete, one socket path) and one per (network
/// namespace, table) (two daemons may use the same table name in different
/// namespaces, never in the same one).
fn lock_instance(path: &std::path::Path, what: &str) -> Result<std::fs::File> {
    use std::os::fd::AsRawFd;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    // SAFETY: flock on a descriptor we own; no memory is shared with the kernel.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        anyhow::bail!("{} is locked: another rgw uses {what}", path.display());
    }
    Ok(file)
}

fn table_lock_path(table: &str) -> Result<PathBuf> {
    let ns = std::fs::read_link("/proc/self/ns/net").context("reading /proc/self/ns/net")?;
    let ns: String = ns
        .to_string_lossy()
        .chars()
        .filter(char::is_ascii_digit)
        .collect();
    Ok(PathBuf::from(format!(
        "/run/rgw/netns-{ns}-table-{table}.lock"
    )))
}

fn run(path: PathBuf, log: String) -> Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RGW_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&log))
        .context("invalid --log filter")?;
    // Colour only on a terminal: log files and journald get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let (filter, log_handle) = tracing_subscriber::reload::Layer::new(filter);
    tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_target(false)
                .with_ansi(ansi),
        )
        .init();
    let set_log: rgw::control::LogSetter = Arc::new(move |spec: &str| {
        let f = tracing_subscriber::EnvFilter::try_new(spec)
            .map_err(|e| format!("invalid filter {spec:?}: {e}"))?;
        log_handle.reload(f).map_err(|e| e.to_string())
    });

    let cfg = Config::load(&path)?;
    info!(config = %path.display(), zone = %cfg.zone.name, pool = cfg.pool.addresses.len(), tmax = ?cfg.pool.tmax, "starting");

    let _socket_lock = lock_instance(
        &cfg.control_socket.with_extension("lock"),
        &format!("control socket {}", cfg.control_socket.display()),
    )?;
    let _table_lock = lock_instance(
        &table_lock_path(&cfg.dataplane.table)?,
        &format!("table ip {} in this network namespace", cfg.dataplane.table),
    )?;
    // Bound before the ruleset is touched: a second daemon stops here.
    let queue = gate::open(cfg.dataplane.queue_num, cfg.limits.gate_queue_len)?;
    let alg_queue = if cfg.alg.enabled {
        Some(dataplane::alg::open(&cfg.alg)?)
    } else {
        None
    };
    // Opened before the ruleset too: a bad path must not leave a table behind.
    let binding_log = match &cfg.binding_log {
        None => None,
        Some(b) => {
            let rotation = rgw::bindlog::Rotation {
                max_bytes: b.max_bytes,
                keep: b.keep,
                daily: b.daily,
            };
            let log = rgw::bindlog::BindingLog::open(&b.path, rotation)
                .with_context(|| format!("opening the binding log {}", b.path.display()))?;
            let (tx, writer) = rgw::bindlog::spawn_writer_with(
                log,
                b.queue,
                |e| warn!(error = %e, "binding log write failed"),
            )
            .context("starting the binding log writer")?;
            info!(path = %b.path.display(), "binding log");
            Some((tx, writer))
        }
    };
    // RGW64: the TUN and the translator exist before any rule points at them.
    let rgw64 = match &cfg.rgw64 {
        None => None,
        Some(r) => {
            let dev = rgw::rgw64::tun::open(r)?;
            let state = Arc::new(rgw::rgw64::Rgw64::new(r)?);
            Some((dev, state))
        }
    };
    let via = dataplane::choose_queue(&cfg)?;
    dataplane::install(&cfg, via)?;
    let rgw64 = match (rgw64, &cfg.rgw64) {
        (Some((dev, state)), Some(r)) => {
            if let Err(e) = rgw::rgw64::plumbing::install(&cfg, r) {
                let _ = dataplane::remove(&cfg);
                rgw::rgw64::plumbing::remove(&cfg);
                return Err(e);
            }
            let st = Arc::clone(&state);
            std::thread::Builder::new()
                .name("rgw64".into())
                .spawn(move || {
                    if let Err(e) = rgw::rgw64::tun::run(dev, st) {
                        error!(error = %format!("{e:#}"), "RGW64 translator stopped");
                        std::process::exit(2);
                    }
                })
                .context("spawning the translator thread")?;
            Some(state)
        }
        _ => None,
    };
    let sets = KernelSets::open(&cfg.dataplane.table, cfg.pool.tmax)
        .context("opening the nftables netlink socket")?;
    let gw = Gateway::new(cfg.clone(), Box::new(sets));
    let binding_writer = binding_log.map(|(tx, writer)| {
        gw.attach_binding_log(tx);
        writer
    });

    let gate_gw = Arc::clone(&gw);
    let queue_num = cfg.dataplane.queue_num;
    std::thread::Builder::new()
        .name("gate".into())
        .spawn(move || {
            if let Err(e) = gate::run(gate_gw, queue, queue_num) {
                // Without the gate no reservation can be claimed: better to stop loudly.
                error!(error = %e, "first-packet gate stopped");
                std::process::exit(2);
            }
        })
        .context("spawning the gate thread")?;

    if let Some(alg_queue) = alg_queue {
        let state = dataplane::alg::AlgState::new(&cfg.alg);
        let _ = gw.alg.set(Arc::clone(&state));
        let alg_gw = Arc::clone(&gw);
        let alg_rgw64 = rgw64.clone();
        std::thread::Builder::new()
            .name("alg".into())
            .spawn(move || {
                if let Err(e) = dataplane::alg::run(alg_gw, state, alg_queue, alg_rgw64) {
                    // ALG flows then pass unrewritten (queue bypass); say so loudly.
                    error!(error = %e, "ALG engine stopped; ALG flows now pass without rewriting");
                }
            })
            .context("spawning the ALG thread")?;
    }

    let server = Arc::new(DnsServer {
        gw: Arc::clone(&gw),
        rgw64: rgw64.clone(),
    });
    let wan = SocketAddr::from((cfg.wan.service_address, cfg.wan.dns_port));
    let lan = SocketAddr::from((cfg.lan.address, cfg.lan.dns_port));
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    server.spawn_wan_udp(wan, workers)?;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("building the tokio runtime")?;
    let outcome = rt.block_on(async {
        let upstream = cfg.lan.upstream_resolver;
        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn(Arc::clone(&server).tcp(wan, View::Public, None));
        tasks.spawn(Arc::clone(&server).lan_udp(lan, upstream));
        tasks.spawn(Arc::clone(&server).tcp(lan, View::Private, Some(upstream)));
        if let Some(r) = &cfg.rgw64 {
            // The LAN's IPv6 hosts ask over IPv6: the family that gets proxy ULAs.
            let lan6 = SocketAddr::from((r.lan_address6, cfg.lan.dns_port));
            tasks.spawn(Arc::clone(&server).lan_udp(lan6, upstream));
            tasks.spawn(Arc::clone(&server).tcp(lan6, View::Private, Some(upstream)));
        }
        if let Some(r) = rgw64.clone() {
            tasks.spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                loop {
                    tick.tick().await;
                    r.expire(Instant::now());
                }
            });
        }
        let ctl = Control { gw: Arc::clone(&gw), via, config_path: path.clone(), set_log, rgw64: rgw64.clone() };
        let ctl_path = cfg.control_socket.clone();
        tasks.spawn(async move { rgw::control::serve(&ctl_path, ctl).await });
        let exp_gw = Arc::clone(&gw);
        let queue_num = cfg.dataplane.queue_num;
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            loop {
                tick.tick().await;
                exp_gw.expire(Instant::now());
                // The kernel counts first packets it dropped because the gate
                // queue was full (limits.gate_queue_len): exported as ours.
                if let Some(q) = rgw::limits::read_nfqueue(queue_num) {
                    let m = &exp_gw.metrics;
                    m.gate_queue_dropped.store(q.queue_dropped, std::sync::atomic::Ordering::Relaxed);
                    m.gate_queue_user_dropped.store(q.user_dropped, std::sync::atomic::Ordering::Relaxed);
                }
            }
        });
        if let Some(p) = &cfg.proxy {
            use rgw::proxy::Mode;
            for (port, backend, mode) in [(p.http_port, p.backend_http_port, Mode::Http), (p.https_port, p.backend_https_port, Mode::Tls)] {
                if port == 0 {
                    continue;
                }
                let addr = SocketAddr::from((cfg.wan.service_address, port));
                let listener = tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("binding the www proxy {addr}"))?;
                info!(%addr, mode = ?mode, backend_port = backend, "www proxy");
                tasks.spawn(rgw::proxy::serve(listener, mode, www_router(Arc::clone(&gw), backend), Arc::clone(&gw.proxy_stats)));
            }
        }
        if let Some(addr) = cfg.metrics_listen {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding the metrics endpoint {addr}"))?;
            info!(%addr, "Prometheus metrics on /metrics");
            let gw = Arc::clone(&gw);
            let rgw64 = rgw64.clone();
            let collect: Arc<dyn Fn() -> String + Send + Sync> =
                Arc::new(move || metrics_text(&gw, rgw64.as_deref()));
            tasks.spawn(rgw::prometheus::serve(listener, collect));
        }
        info!("rgw ready");
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let mut hup = signal(SignalKind::hangup())?;
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => { info!("SIGINT: shutting down"); break Ok(()) }
                _ = term.recv() => { info!("SIGTERM: shutting down"); break Ok(()) }
                _ = hup.recv() => {
                    // SIGHUP also reopens the binding log (after an external logrotate).
                    if let Some(tx) = gw.binding_log() {
                        tx.reopen();
                    }
                    let (gw, path) = (Arc::clone(&gw), path.clone());
                    // A bad file is reported and the running configuration stays.
                    match tokio::task::spawn_blocking(move || rgw::control::reload(&gw, &path)).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => warn!(error = %format!("{e:#}"), "SIGHUP: reload refused"),
                        Err(e) => warn!(error = %e, "SIGHUP: reload failed"),
                    }
                }
                Some(r) = tasks.join_next() => break match r {
                    Ok(Err(e)) => Err(e),
                    Ok(Ok(())) => Err(anyhow::anyhow!("a server task ended")),
                    Err(e) => Err(anyhow::anyhow!("a server task failed: {e}")),
                },
            }
        }
    });
    if let (Some(tx), Some(writer)) = (gw.binding_log(), binding_writer) {
        // Writes what is queued and flushes.
        tx.close();
        let _ = writer.join();
    }
    // Clean shutdown removes our table unless told to keep it; established
    // flows keep their conntrack NAT either way.
    let removed = if gw.snapshot().cfg.dataplane.keep_on_exit {
        info!(table = %cfg.dataplane.table, "keeping the nftables ruleset (dataplane.keep_on_exit)");
        Ok(())
    } else {
        if cfg.rgw64.is_some() {
            rgw::rgw64::plumbing::remove(&cfg);
        }
        dataplane::remove(&cfg)
    };
    let _ = std::fs::remove_file(&cfg.control_socket);
    outcome.and(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alg_block_of_rgw_status() {
        assert!(alg_lines(&Value::Null).is_empty());
        let v = serde_json::json!({
            "flows_active": 1,
            "rewrites": 2,
            "pinholes": 1,
            "flows": [{
                "protocol": "ftp", "role": "inbound", "transport": "tcp",
                "private": "192.168.0.101:21", "peer": "198.51.100.10:40312",
                "public": "100.64.0.5", "age_s": 1.5, "rewrites": 2,
                "offset_from_private": -3
            }],
            "counters": {"packets": 9, "rewrites": 2, "malformed": 0, "pinholes_written": 1}
        });
        let lines = alg_lines(&v);
        assert_eq!(
            lines[0],
            "alg: 1 flows active, 2 rewrites, 1 pinholes written"
        );
        assert!(
            lines[1].starts_with("  alg flow ftp   inbound  192.168.0.101:21 "),
            "{}",
            lines[1]
        );
        assert!(
            lines[1].contains("peer 198.51.100.10:40312"),
            "{}",
            lines[1]
        );
        assert!(lines[1].contains("public 100.64.0.5"), "{}", lines[1]);
        assert!(lines[1].ends_with("2 rewrites, offset -3"), "{}", lines[1]);
        // Zero counters are left out (keys in serde_json's sorted order).
        assert_eq!(
            &lines[2..],
            [
                "  alg packets              9",
                "  alg pinholes_written     1",
                "  alg rewrites             2"
            ]
        );
    }
}
