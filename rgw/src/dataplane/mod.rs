//! The kernel side: the nftables ruleset, the reservation sets and the
//! NFQUEUE claim gate.
//!
//! Set-up and teardown spawn `nft`/`iptables-nft` (rare, and their error
//! messages are the clearest an operator can get); the per-query path writes
//! set elements over netlink ([`nlset`]).

pub mod alg;
pub mod ctliberal;
pub mod gate;
pub mod nfqueue;
pub mod nlset;
pub mod ruleset;
#[cfg(test)]
pub(crate) mod testns;

use std::io::Write;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use tracing::{info, warn};

use crate::config::{Config, QueueBackend};
pub use ruleset::QueueVia;

/// Runs `nft` with a script on stdin; `check` only validates it in the kernel.
pub(crate) fn nft_script(script: &str, check: bool) -> Result<()> {
    let mut cmd = Command::new("nft");
    if check {
        cmd.arg("-c");
    }
    let mut child = cmd
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run `nft` (is the nftables package installed?)")?;
    child
        .stdin
        .take()
        .context("nft stdin")?
        .write_all(script.as_bytes())
        .context("writing the ruleset to nft")?;
    let out = child.wait_with_output().context("waiting for nft")?;
    if !out.status.success() {
        bail!(
            "nft refused the ruleset: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Whether this kernel has the nft `queue` expression (CONFIG_NFT_QUEUE).
/// `nft -c` sends the rule to the kernel and aborts, so nothing is left behind.
pub fn probe_nft_queue() -> bool {
    let script = "table ip rgw_probe {\n chain c {\n  type filter hook prerouting priority 0; policy accept;\n  queue num 0 bypass\n }\n}\n";
    nft_script(script, true).is_ok()
}

fn iptables(args: &[&str]) -> Result<bool> {
    let out = Command::new("iptables-nft")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .context("cannot run `iptables-nft` (needed for the xt NFQUEUE fallback; install the iptables package)")?;
    Ok(out.status.success())
}

/// Chooses how first packets reach the gate, saying why.
pub fn choose_queue(cfg: &Config) -> Result<QueueVia> {
    let nft_ok = probe_nft_queue();
    let via = match (cfg.dataplane.queue_backend, nft_ok) {
        (QueueBackend::Nft, true) | (QueueBackend::Auto, true) => QueueVia::Nft,
        (QueueBackend::Nft, false) => {
            bail!("dataplane.queue_backend = \"nft\" but this kernel has no nft `queue` expression (CONFIG_NFT_QUEUE); use \"auto\" or \"xt\"")
        }
        (QueueBackend::Xt, _) | (QueueBackend::Auto, false) => QueueVia::Xt,
    };
    match via {
        QueueVia::Nft => info!(backend = "nft", "first-packet gate: nft `queue` statement"),
        QueueVia::Xt => info!(
            backend = "xt",
            nft_queue = nft_ok,
            "first-packet gate: iptables-nft NFQUEUE target (nft `queue` {})",
            if nft_ok {
                "available but not chosen"
            } else {
                "missing in this kernel"
            }
        ),
    }
    Ok(via)
}

/// Installs or reconciles the ruleset in one transaction.
pub fn install(cfg: &Config, via: QueueVia) -> Result<()> {
    let t = &cfg.dataplane.table;
    let existed = table_exists(t);
    match nft_script(&ruleset::render(cfg, via), false) {
        Ok(()) => info!(table = %t, reconciled = existed, "nftables ruleset installed"),
        Err(e) if existed => {
            warn!(table = %t, error = %e, "reconciling the existing table failed; replacing it in one transaction");
            nft_script(&ruleset::render_replace(cfg, via), false)?;
            info!(table = %t, "nftables ruleset replaced");
        }
        Err(e) => return Err(e),
    }
    if via == QueueVia::Xt {
        for rule in ruleset::xt_queue_rules(cfg, false) {
            let rule: Vec<&str> = rule.iter().map(String::as_str).collect();
            let mut check = vec!["-t", "mangle", "-C"];
            check.extend(&rule);
            if !iptables(&check)? {
                let mut add = vec!["-t", "mangle", "-A"];
                add.extend(&rule);
                if !iptables(&add)? {
                    bail!("iptables-nft could not add the NFQUEUE rule {rule:?} (is the xt NFQUEUE target available?)");
                }
            }
        }
    }
    if cfg.dataplane.synproxy {
        set_tcp_loose(false)?;
        info!(
            "SYN proxy in front of the pool: nf_conntrack_tcp_loose = 0 in this network namespace"
        );
    }
    Ok(())
}

const TCP_LOOSE: &str = "/proc/sys/net/netfilter/nf_conntrack_tcp_loose";

/// `nf_conntrack_tcp_loose` of this network namespace: with the SYN proxy it
/// must be 0, so the handshake's final ACK is invalid (and goes to the proxy)
/// instead of starting a tracked flow mid-stream.
fn set_tcp_loose(on: bool) -> Result<()> {
    std::fs::write(TCP_LOOSE, if on { "1\n" } else { "0\n" })
        .with_context(|| format!("writing {TCP_LOOSE} (needed by dataplane.synproxy)"))
}

/// Rewrites the mark → host map after a reload (one transaction).
pub fn update_host_map(cfg: &Config) -> Result<()> {
    let mut script = ruleset::render_host_map(cfg);
    if cfg.rgw64.is_some() {
        // RGW64: the hosts whose IPv6 address inbound IPv6 may reach.
        script.push_str(&crate::rgw64::plumbing::render_hosts6(cfg));
    }
    nft_script(&script, false)
}

/// Lists conntrack entries (for `rgw bindings`); rare, so the tool is spawned.
pub fn conntrack_dump() -> Result<String> {
    let out = Command::new("conntrack")
        .args(["-L"])
        .stderr(Stdio::null())
        .output()
        .context("cannot run `conntrack` (install the conntrack package)")?;
    if !out.status.success() {
        bail!("`conntrack -L` failed with {}", out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Removes everything `install` created (clean shutdown).
pub fn remove(cfg: &Config) -> Result<()> {
    let t = &cfg.dataplane.table;
    for rule in ruleset::xt_queue_rules(cfg, true) {
        let rule: Vec<&str> = rule.iter().map(String::as_str).collect();
        let mut del = vec!["-t", "mangle", "-D"];
        del.extend(&rule);
        // Delete every copy; stops when none is left (or iptables is absent).
        while matches!(iptables(&del), Ok(true)) {}
    }
    if table_exists(t) {
        nft_script(&format!("delete table ip {t}\n"), false)?;
    }
    if cfg.dataplane.synproxy {
        // Back to the kernel's default, as before the daemon started.
        if let Err(e) = set_tcp_loose(true) {
            warn!(error = %e, "could not restore nf_conntrack_tcp_loose");
        }
    }
    info!(table = %t, "nftables ruleset removed");
    Ok(())
}

fn table_exists(table: &str) -> bool {
    Command::new("nft")
        .args(["list", "table", "ip", table])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Reads the packet count of one of our named counters (for `rgw status`).
pub fn counter_packets(table: &str, counter: &str) -> Option<u64> {
    let out = Command::new("nft")
        .args(["list", "counter", "ip", table, counter])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut words = text.split_whitespace();
    while let Some(w) = words.next() {
        if w == "packets" {
            return words.next()?.parse().ok();
        }
    }
    None
}
