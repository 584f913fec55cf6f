//! Command-line options of netem-lite (hand-parsed: the crate keeps to the
//! dependencies it already has).

use anyhow::{anyhow, bail, Context, Result};

use crate::impair::Impairment;

pub const USAGE: &str = "\
netem-lite: delay, loss and reordering for forwarded packets, without tc netem.

Runs inside a network namespace (e.g. the testbed router): inserts one
  iptables-nft -t mangle -I <CHAIN> [match] -j NFQUEUE --queue-num N --queue-bypass
rule, holds each queued packet in userspace until its release time, and
removes the rule again on exit (duration reached, SIGINT, SIGTERM or SIGHUP).

USAGE:
  netem-lite --duration SECS [OPTIONS]

IMPAIRMENT:
  --delay MS          hold every packet MS milliseconds (fractions allowed; default 0)
  --jitter MS         add a uniform random -MS..+MS to the delay (default 0; may reorder)
  --loss PCT          drop PCT percent of the packets (default 0)
  --reorder PCT       give PCT percent of the packets an extra --reorder-gap (default 0)
  --reorder-gap MS    extra hold of the reordered share (default 10)
  --seed N            PRNG seed (xorshift64*), so runs repeat (default 1)

WHICH PACKETS:
  --chain CHAIN       mangle chain: FORWARD (default), PREROUTING, INPUT, OUTPUT, POSTROUTING
  -i, --in-iface IF   only packets arriving on IF
  -o, --out-iface IF  only packets leaving on IF
  -s, --src CIDR      only packets from CIDR
  -d, --dst CIDR      only packets to CIDR
  -p, --proto P       only protocol P (tcp, udp, icmp, ...)

RUN:
  --duration SECS     required, 1..3600: remove the rule and exit after SECS
  --queue-num N       NFQUEUE number (default 100)
  --limit N           kernel queue length: packets held at once (default 10000; beyond it
                      the kernel drops, like netem's limit)
  --iptables PATH     iptables binary (default iptables-nft)
  --rt-priority N     run under SCHED_FIFO priority N (1..99), so a busy machine does not
                      delay the releases (default: ordinary scheduling)
  --allow-any-netns   also run outside a named namespace (default: refuse unless the
                      current namespace is one of /run/netns/*, i.e. never the host's)
  --json              print the exit counters as one JSON line
  -q, --quiet         no start-up line
  -h, --help          this text
";

#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    pub impairment: Impairment,
    pub seed: u64,
    pub chain: String,
    pub in_iface: Option<String>,
    pub out_iface: Option<String>,
    pub src: Option<String>,
    pub dst: Option<String>,
    pub proto: Option<String>,
    pub duration_s: u64,
    pub queue_num: u16,
    pub limit: u32,
    pub iptables: String,
    pub rt_priority: Option<i32>,
    pub allow_any_netns: bool,
    pub json: bool,
    pub quiet: bool,
}

pub enum Parsed {
    Run(Box<Options>),
    Help,
}

const CHAINS: [&str; 5] = ["FORWARD", "PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"];

fn ms_to_us(key: &str, v: &str) -> Result<u64> {
    let ms: f64 = v
        .parse()
        .with_context(|| format!("{key}: expected milliseconds, got {v:?}"))?;
    if !ms.is_finite() || !(0.0..=3_600_000.0).contains(&ms) {
        bail!("{key}: expected 0..3600000 ms, got {v}");
    }
    Ok((ms * 1000.0).round() as u64)
}

fn percent(key: &str, v: &str) -> Result<f64> {
    let p: f64 = v
        .parse()
        .with_context(|| format!("{key}: expected a percentage, got {v:?}"))?;
    if !p.is_finite() || !(0.0..=100.0).contains(&p) {
        bail!("{key}: expected 0..100, got {v}");
    }
    Ok(p / 100.0)
}

/// An argument that ends up on the iptables command line: keep it to what an
/// interface name, a CIDR or a protocol name can contain.
fn match_arg(key: &str, v: &str) -> Result<String> {
    let ok = !v.is_empty()
        && v.len() <= 64
        && !v.starts_with('-')
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._:/+!@-".contains(c));
    if !ok {
        bail!("{key}: unexpected value {v:?}");
    }
    Ok(v.to_string())
}

pub fn parse<I: IntoIterator<Item = String>>(args: I) -> Result<Parsed> {
    let mut o = Options {
        impairment: Impairment {
            reorder_gap_us: 10_000,
            ..Default::default()
        },
        seed: 1,
        chain: "FORWARD".into(),
        in_iface: None,
        out_iface: None,
        src: None,
        dst: None,
        proto: None,
        duration_s: 0,
        queue_num: 100,
        limit: 10_000,
        iptables: "iptables-nft".into(),
        rt_priority: None,
        allow_any_netns: false,
        json: false,
        quiet: false,
    };
    let mut duration_seen = false;
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        let (key, inline) = match arg.split_once('=') {
            Some((k, v)) if k.starts_with("--") => (k.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let mut value = || -> Result<String> {
            match &inline {
                Some(v) => Ok(v.clone()),
                None => it.next().ok_or_else(|| anyhow!("{key} needs a value")),
            }
        };
        match key.as_str() {
            "-h" | "--help" => return Ok(Parsed::Help),
            "--delay" => o.impairment.delay_us = ms_to_us(&key, &value()?)?,
            "--jitter" => o.impairment.jitter_us = ms_to_us(&key, &value()?)?,
            "--loss" => o.impairment.loss = percent(&key, &value()?)?,
            "--reorder" => o.impairment.reorder = percent(&key, &value()?)?,
            "--reorder-gap" => o.impairment.reorder_gap_us = ms_to_us(&key, &value()?)?,
            "--seed" => {
                let v = value()?;
                o.seed = v
                    .parse()
                    .with_context(|| format!("--seed: expected an unsigned integer, got {v:?}"))?
            }
            "--chain" => {
                let v = value()?.to_ascii_uppercase();
                if !CHAINS.contains(&v.as_str()) {
                    bail!("--chain: expected one of {}, got {v}", CHAINS.join(", "));
                }
                o.chain = v;
            }
            "-i" | "--in-iface" => o.in_iface = Some(match_arg(&key, &value()?)?),
            "-o" | "--out-iface" => o.out_iface = Some(match_arg(&key, &value()?)?),
            "-s" | "--src" => o.src = Some(match_arg(&key, &value()?)?),
            "-d" | "--dst" => o.dst = Some(match_arg(&key, &value()?)?),
            "-p" | "--proto" => o.proto = Some(match_arg(&key, &value()?)?),
            "--duration" => {
                let v = value()?;
                let d: u64 = v
                    .parse()
                    .with_context(|| format!("--duration: expected seconds, got {v:?}"))?;
                if !(1..=3600).contains(&d) {
                    bail!("--duration: expected 1..3600 seconds, got {d}");
                }
                o.duration_s = d;
                duration_seen = true;
            }
            "--queue-num" => {
                let v = value()?;
                o.queue_num = v
                    .parse()
                    .with_context(|| format!("--queue-num: expected 0..65535, got {v:?}"))?
            }
            "--limit" => {
                let v = value()?;
                o.limit = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=1_000_000).contains(n))
                    .ok_or_else(|| anyhow!("--limit: expected 1..1000000, got {v:?}"))?
            }
            "--iptables" => o.iptables = value()?,
            "--rt-priority" => {
                let v = value()?;
                o.rt_priority = Some(
                    v.parse()
                        .ok()
                        .filter(|n| (1..=99).contains(n))
                        .ok_or_else(|| anyhow!("--rt-priority: expected 1..99, got {v:?}"))?,
                )
            }
            "--allow-any-netns" => o.allow_any_netns = true,
            "--json" => o.json = true,
            "-q" | "--quiet" => o.quiet = true,
            other => bail!("unknown option {other:?} (try --help)"),
        }
    }
    if !duration_seen {
        bail!("--duration SECS is required (1..3600)");
    }
    if o.in_iface.is_some() && o.chain == "OUTPUT" {
        bail!("--in-iface cannot be used with --chain OUTPUT");
    }
    if o.out_iface.is_some() && matches!(o.chain.as_str(), "PREROUTING" | "INPUT") {
        bail!("--out-iface cannot be used with --chain {}", o.chain);
    }
    Ok(Parsed::Run(Box::new(o)))
}

impl Options {
    /// The match part of the iptables rule (everything between the chain and `-j`).
    pub fn rule_match(&self) -> Vec<String> {
        let mut v = Vec::new();
        for (flag, val) in [
            ("-i", &self.in_iface),
            ("-o", &self.out_iface),
            ("-s", &self.src),
            ("-d", &self.dst),
            ("-p", &self.proto),
        ] {
            if let Some(x) = val {
                v.push(flag.to_string());
                v.push(x.clone());
            }
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<Options> {
        match parse(args.iter().map(|s| s.to_string()))? {
            Parsed::Run(o) => Ok(*o),
            Parsed::Help => bail!("help"),
        }
    }

    #[test]
    fn full_command_line() {
        let o = run(&[
            "--delay",
            "25",
            "--jitter=1.5",
            "--loss",
            "5",
            "--reorder",
            "10",
            "--reorder-gap",
            "20",
            "--seed",
            "7",
            "-i",
            "togw",
            "--duration",
            "60",
            "--queue-num=3",
            "--rt-priority",
            "10",
        ])
        .unwrap();
        assert_eq!(o.impairment.delay_us, 25_000);
        assert_eq!(o.impairment.jitter_us, 1_500);
        assert!((o.impairment.loss - 0.05).abs() < 1e-12);
        assert!((o.impairment.reorder - 0.10).abs() < 1e-12);
        assert_eq!(o.impairment.reorder_gap_us, 20_000);
        assert_eq!(o.seed, 7);
        assert_eq!(o.duration_s, 60);
        assert_eq!(o.queue_num, 3);
        assert_eq!(o.rt_priority, Some(10));
        assert_eq!(o.rule_match(), vec!["-i", "togw"]);
    }

    #[test]
    fn duration_is_required_and_bounded() {
        assert!(run(&["--delay", "25"]).is_err());
        assert!(run(&["--duration", "0"]).is_err());
        assert!(run(&["--duration", "3601"]).is_err());
        assert!(run(&["--duration", "3600"]).is_ok());
    }

    #[test]
    fn bad_values_are_rejected() {
        assert!(run(&["--duration", "5", "--loss", "101"]).is_err());
        assert!(run(&["--duration", "5", "--delay", "-1"]).is_err());
        assert!(run(&["--duration", "5", "--delay", "nan"]).is_err());
        assert!(run(&["--duration", "5", "-i", "eth0 -j ACCEPT"]).is_err());
        assert!(run(&["--duration", "5", "-i", "--foo"]).is_err());
        assert!(run(&["--duration", "5", "--chain", "nat"]).is_err());
        assert!(run(&["--duration", "5", "--bogus"]).is_err());
        assert!(run(&["--duration", "5", "--rt-priority", "0"]).is_err());
        assert!(run(&["--duration", "5", "--chain", "OUTPUT", "-i", "x"]).is_err());
    }

    #[test]
    fn help() {
        assert!(matches!(
            parse(["--help".to_string()]).unwrap(),
            Parsed::Help
        ));
    }
}
