//! The one iptables-nft rule that sends packets to our queue. It is removed
//! when the guard is dropped, so every exit path (including an error or a
//! panic that unwinds) takes it away again.

use std::process::Command;

use anyhow::{bail, Context, Result};

pub struct QueueRule {
    iptables: String,
    chain: String,
    spec: Vec<String>,
    installed: bool,
}

impl QueueRule {
    pub fn new(iptables: &str, chain: &str, matches: Vec<String>, queue_num: u16) -> Self {
        let mut spec = matches;
        spec.extend(
            [
                "-m",
                "comment",
                "--comment",
                &format!("netem-lite:{}", std::process::id()),
                "-j",
                "NFQUEUE",
                "--queue-num",
                &queue_num.to_string(),
                // if we die without removing the rule, packets pass unimpaired
                // instead of being dropped by a queue nobody reads
                "--queue-bypass",
            ]
            .iter()
            .map(|s| s.to_string()),
        );
        Self {
            iptables: iptables.to_string(),
            chain: chain.to_string(),
            spec,
            installed: false,
        }
    }

    /// The rule as it would be typed, for the start-up line.
    pub fn describe(&self) -> String {
        format!(
            "{} -t mangle -I {} {}",
            self.iptables,
            self.chain,
            self.spec.join(" ")
        )
    }

    fn run(&self, op: &[&str]) -> Result<()> {
        let out = Command::new(&self.iptables)
            .args(["-w", "5", "-t", "mangle"])
            .args(op)
            .args(&self.spec)
            .output()
            .with_context(|| format!("running {}", self.iptables))?;
        if !out.status.success() {
            bail!(
                "{} {} failed: {}",
                self.iptables,
                op.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    pub fn install(&mut self) -> Result<()> {
        let chain = self.chain.clone();
        self.run(&["-I", &chain, "1"])?;
        self.installed = true;
        Ok(())
    }

    pub fn remove(&mut self) -> Result<()> {
        if !self.installed {
            return Ok(());
        }
        let chain = self.chain.clone();
        self.run(&["-D", &chain])?;
        self.installed = false;
        Ok(())
    }
}

impl Drop for QueueRule {
    fn drop(&mut self) {
        if let Err(e) = self.remove() {
            eprintln!("netem-lite: could not remove the rule: {e:#}");
        }
    }
}
