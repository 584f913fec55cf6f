#!/usr/bin/env python3
"""Aggregate the benchmark fragments into docs/benchmarks.md and docs/benchmarks.csv.

Reads every testbed/bench/results/*.csv (columns scenario,system,metric,unit,
round,value) and, if bench.sh wrote it, results/meta.json (rounds, options,
per-scenario run times). For every scenario it writes a table: the median over
the rounds with the min-max spread for each system, and where the scenario has
rgw and a peer, the ratio rgw / peer computed per round (the runs of one round
are back to back) with its median and spread.

The text between the analysis markers of an existing docs/benchmarks.md is
hand-written and kept as it is.

Usage: report.py [--results DIR] [--out docs/benchmarks.md] [--csv docs/benchmarks.csv]
"""
from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import pathlib
import platform
import re
import statistics
import subprocess
from collections import OrderedDict

REPO = pathlib.Path(__file__).resolve().parents[2]
US = "rgw"
COLUMNS = ["scenario", "system", "metric", "unit", "round", "value"]
ANALYSIS_BEGIN = "<!-- analysis:begin -->"
ANALYSIS_END = "<!-- analysis:end -->"

# Known scenarios, in report order: title and how it was measured.
SCENARIOS = OrderedDict([
    ("dns_peers", (
        "DNS static answers: rgw vs Knot DNS vs NSD",
        "`dns_peers.sh`. The same zone data (SOA, NS, glue of `gwa.demo.`) served from the gateway "
        "namespace on 198.51.100.2: rgw on port 53 (shipped `testbed/config/rgw.toml`, `--log warn`, "
        "one UDP worker thread per CPU), NSD 4 on 5301 (`server-count: 2`, `reuseport: yes`, "
        "`rrl-ratelimit: 0`), Knot DNS on 5302 (`udp-workers: 2`, `tcp-workers: 1`, no RRL module). "
        "dnsperf `-c 4 -T 2 -q 500 -t 1` from the client namespace, one query name per run; the "
        "answers were checked with dig first (same rcode and answer; response sizes differ). The "
        "client runs on the same 2 CPUs, so queries/s is largely client-bound; server CPU per query "
        "(user + system time of the server's processes from /proc, divided by the answered "
        "queries) shows the server's own cost. The average latency is mostly queueing: 500 queries "
        "in flight divided by the rate, less the ones lost. `rcvbuf_drops` are datagrams the kernel "
        "dropped on a full socket receive buffer (Knot keeps the 208 KiB default and drops part "
        "of every burst of dnsperf's 500 queries in flight); a lost query holds one of dnsperf's "
        "500 slots for the 1 s timeout.",
    )),
    ("alloc", (
        "DNS allocating answers (rgw only)",
        "`alloc.sh`. rgw with a /16 pool and no per-host limit. `seq_*`: one query in flight "
        "(`dns_latency.py`, 10k of each kind, interleaved): `seq_alloc` asks "
        "`tcp<N>.hosta.gwa.demo A` (a Circular Pool reservation plus a netlink set-element add, "
        "acked before the answer leaves), `seq_soa` the static apex SOA on the same path; "
        "`alloc_cost` is the median over the pairs of (SFQDN round trip − the SOA round trip just "
        "before it). `alloc.*` / `soa.*`: dnsperf `-c 4 -T 2 -q 500 -t 1` with tcp1..tcp60000.hosta.gwa.demo "
        "vs the apex SOA; `alloc.reservations` is the growth of rgw's `reservations` counter (checked "
        "to equal the answered queries); `alloc_over_static` is the per-round ratio of the two rates. "
        "No other server allocates, so there is no peer column.",
    )),
    ("datapath", (
        "Data path after the claim: rgw vs plain kernel NAT",
        "`datapath.sh`. iperf3 from the client namespace to hosta (192.168.0.101:5201). `rgw`: the "
        "client resolves `tcp5201.hosta.gwa.demo` (and `udp5201…`) at 198.51.100.2 and connects to "
        "the answer R0; after the first packet is claimed the flow is NATed by conntrack and never "
        "reaches rgw again (iperf3's data connection takes a second reservation). `plain`: rgw "
        "stopped, a minimal nft table in the gateway namespace with a static `dnat` R0 → hosta and "
        "the same snat. TCP: one stream; UDP: `-b 2G -l 1400` (the sender is CPU-bound below the "
        "target), received rate and loss as reported by the receiver.",
    )),
    ("alg", (
        "ALG: SIP calls/s, FTP commands/s, added latency (rgw's ALG vs nf_nat_sip vs plain NAT)",
        "`alg.sh` (method in the script's header). `rgw`: the shipped configuration, every packet "
        "of a flow on port 21/5060/554 goes through NFQUEUE to rgw's ALG engine (rewrites, pinholes "
        "in nftables maps). `nf_nat_sip`: rgw with `[alg] enabled = false` and the kernel's SIP "
        "helper attached to UDP 5060 by an nft `ct helper` rule in the gateway namespace. `plain`: "
        "ALG off, no helper. **SIP**: sipp's built-in `uac` on hosta calls the built-in `uas` on "
        "the public web host over UDP (`-buff_size 4194304`), SDP in every INVITE and 200 OK; the "
        "rate climbs ×1.5 from 200/s, then two bisection steps; `calls per s` is the highest rate "
        "whose run (5 s of calls) had every call successful, 0 failed, and kept the rate (a failed "
        "step is tried once more). "
        "**FTP**: ftplib on hosta logged in to pyftpdlib on web:21 and web:2121 through the same rgw "
        "with the ALG on: port 21 goes through the ALG (`rgw`), 2121 is plain NAT (`plain`); 1000 NOOPs "
        "then 1000 `PORT` commands on each, one at a time, in blocks of 50 alternating between the two "
        "connections, all answered 200 (pyftpdlib answers a PORT once its active data connection "
        "to the client is up, so a PORT includes the rewrite, the pinhole and a connection through "
        "it); the 2121 connection announces the gateway address with a static port forward instead "
        "(without an ALG the private address is refused). **Latency**: 5000 round trips of a 32-byte line "
        "to a TCP echo server on the public cli host, alternating between port 21 (an ALG port) "
        "and 2121 (not one) through the same gateway; `added` = port 21 − port 2121, and a round "
        "trip carries two ALG packets, so `added per packet` = added median ÷ 2; p10 is the least "
        "disturbed by other work on the machine. With `plain` the "
        "same difference is the control (≈ 0). `sip cpu per alg packet`: rgw's CPU time (user + system, "
        "all threads) over its whole SIP ramp divided by the packets its ALG handled; `sip nfqueue "
        "drops`: packets the kernel dropped on the full NFQUEUE queues during that ramp.",
    )),
    ("capacity", (
        "Circular Pool capacity",
        "`capacity.sh` / `capacity.py` (the seed's capacity experiment; method and traffic mixes "
        "in the script's header): new inbound connections per second offered by name through the "
        "real resolver to a small pool, with a 50 ms round trip added on the router (netem-lite). "
        "`t_service` is the measured time from the DNS answer to the first packet, `eta` the "
        "seed's bound (pool_size / T_service, or its SFQDN form), `max_rate_95pct` the highest "
        "offered rate that still had 95 % successful connections.",
    )),
    ("micro", (
        "Micro-benchmarks (criterion)",
        "`micro.sh` (see the script for the method).",
    )),
])

# Nicer names for the dotted metric prefixes used by the scenario scripts.
GROUPS = {
    "soa": "apex SOA", "ns": "apex NS (+glue)", "a": "ns.gwa.demo A",
    "alloc": "SFQDN A (allocating)", "seq_soa": "sequential apex SOA",
    "seq_alloc": "sequential SFQDN A (allocating)", "alloc_cost": "allocation cost",
    "sip": "SIP (UDP, sipp uac → uas)", "ftp": "FTP control", "rtt": "TCP round trip",
}

# Metrics whose rgw / peer ratio means nothing (differences around 0, counts).
NO_RATIO = {"rtt.added_p10", "rtt.added_median", "rtt.added_p99", "rtt.added_paired_median", "rtt.added_per_packet",
            "sip.retransmissions", "sip.nfqueue_drops"}

# The headline numbers, in the summary at the top: (scenario, metric, label).
HEADLINE = [
    ("dns_peers", "soa.qps", "apex SOA, queries/s"),
    ("dns_peers", "ns.qps", "apex NS, queries/s"),
    ("dns_peers", "a.qps", "static A, queries/s"),
    ("dns_peers", "soa.cpu_per_query", "apex SOA, server CPU µs/query"),
    ("dns_peers", "a.cpu_per_query", "static A, server CPU µs/query"),
    ("alloc", "alloc_over_static", "allocating A ÷ static SOA, queries/s"),
    ("alloc", "alloc_cost.median", "allocation cost (sequential, paired median), µs"),
    ("datapath", "tcp_throughput", "TCP through the gateway, Mbit/s"),
    ("datapath", "udp_received", "UDP 1400 B received, Mbit/s"),
    ("alg", "sip.calls_per_s", "SIP calls/s with 0 failed calls"),
    ("alg", "ftp.port_per_s", "FTP PORT commands/s"),
    ("alg", "ftp.noop_per_s", "FTP NOOP commands/s"),
    ("alg", "rtt.port21_median", "TCP round trip on port 21 (median), µs"),
]

# Headline values of rgw alone (no ratio): (scenario, metric, label).
HEADLINE_OURS = [
    ("alg", "rtt.added_per_packet", "ALG: added latency per packet (median), µs"),
]


def read_fragments(results: pathlib.Path) -> list[dict]:
    rows = []
    for path in sorted(results.glob("*.csv")):
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames != COLUMNS:
                raise SystemExit(f"report.py: {path}: columns must be {','.join(COLUMNS)}, got {reader.fieldnames}")
            for line, row in enumerate(reader, start=2):
                try:
                    row["text"], row["value"] = row["value"], float(row["value"])
                except ValueError:
                    raise SystemExit(f"report.py: {path}:{line}: value {row['value']!r} is not a number")
                rows.append(row)
    return rows


def parent(scenario: str) -> str | None:
    """The known scenario a detail fragment belongs to: capacity_test1 -> capacity."""
    return next((k for k in SCENARIOS if scenario.startswith(k + "_")), None)


def scenario_order(rows: list[dict]) -> list[str]:
    """Known scenarios in report order, each followed by its detail scenarios, then the rest."""
    present = sorted(set(r["scenario"] for r in rows))
    out = []
    for k in SCENARIOS:
        out += [s for s in present if s == k or parent(s) == k]
    return out + [s for s in present if s not in out]


def fmt(v: float) -> str:
    """Few significant digits: these are noisy measurements."""
    a = abs(v)
    if v == int(v) or a >= 100:
        return f"{v:,.0f}"
    if a >= 10:
        return f"{v:.1f}"
    if a >= 1:
        return f"{v:.2f}"
    return f"{v:.3g}"


def spread(values: list[float]) -> str:
    med = statistics.median(values)
    if min(values) == max(values):
        return fmt(med)
    return f"{fmt(med)} ({fmt(min(values))}–{fmt(max(values))})"


def split_metric(metric: str) -> tuple[str, str]:
    """("soa", "qps") for "soa.qps"; ("pool/x", "median") for "pool/x median"; (metric, "")."""
    if " " in metric:
        group, measure = metric.rsplit(" ", 1)
    elif "." in metric:
        group, measure = metric.split(".", 1)
    else:
        return metric, ""
    return group, measure


def metric_label(metric: str) -> str:
    group, measure = split_metric(metric)
    if measure:
        return f"{GROUPS.get(group, group)} · {measure.replace('_', ' ')}"
    return GROUPS.get(metric, metric.replace("_", " "))


class Scenario:
    def __init__(self, name: str, rows: list[dict]):
        self.name = name
        self.systems = list(OrderedDict.fromkeys(r["system"] for r in rows))
        if US in self.systems:
            self.systems.remove(US)
            self.systems.insert(0, US)
        self.metrics = list(OrderedDict.fromkeys((r["metric"], r["unit"]) for r in rows))
        # (metric, system) -> {round: [values]}
        self.data: dict = {}
        for r in rows:
            self.data.setdefault((r["metric"], r["system"]), {}).setdefault(r["round"], []).append(r["value"])
        self.peers = [s for s in self.systems if s != US] if US in self.systems else []
        self.rounds = len({r["round"] for r in rows})

    def values(self, metric: str, system: str) -> list[float]:
        return [v for vs in self.data.get((metric, system), {}).values() for v in vs]

    def ratios(self, metric: str, peer: str) -> list[float]:
        """rgw / peer for every round both were measured in (back-to-back pairs).
        Empty when a value is 0 in some round: a ratio of counts such as lost
        queries says nothing there."""
        if metric in NO_RATIO:
            return []
        ours, theirs = self.data.get((metric, US), {}), self.data.get((metric, peer), {})
        out = []
        for rnd in sorted(ours.keys() & theirs.keys()):
            a, b = statistics.median(ours[rnd]), statistics.median(theirs[rnd])
            if a == 0 or b == 0:
                return []
            out.append(a / b)
        return out

    def pivot(self):
        """For one system whose metrics are GROUP x MEASURE with the same measures
        in every group (criterion: median / ci_low / ci_high): groups as rows."""
        if len(self.systems) != 1:
            return None
        groups: OrderedDict = OrderedDict()
        for metric, unit in self.metrics:
            group, measure = split_metric(metric)
            if not measure:
                return None
            groups.setdefault(group, []).append((measure, unit, metric))
        shapes = {tuple((m, u) for m, u, _ in v) for v in groups.values()}
        if len(groups) < 2 or len(shapes) != 1:
            return None
        return groups

    def table(self) -> list[str]:
        groups = self.pivot()
        if groups:
            system = self.systems[0]
            shape = next(iter(groups.values()))
            head = [""] + [f"{m.replace('_', ' ')} ({u})" for m, u, _ in shape]
            lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * len(shape)]
            for group, cols in groups.items():
                cells = [GROUPS.get(group, group)]
                cells += [spread(self.values(metric, system)) for _, _, metric in cols]
                lines.append("| " + " | ".join(cells) + " |")
            return lines
        head = ["metric", "unit"] + self.systems + [f"{US} / {p}" for p in self.peers]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * 2 + "---:|" * (len(head) - 2)]
        for metric, unit in self.metrics:
            cells = [metric_label(metric), unit]
            for s in self.systems:
                v = self.values(metric, s)
                cells.append(spread(v) if v else "")
            for p in self.peers:
                r = self.ratios(metric, p)
                cells.append(spread(r) if r else "")
            lines.append("| " + " | ".join(cells) + " |")
        return lines


def run(cmd: list[str]) -> str:
    try:
        cp = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return (cp.stdout + cp.stderr).strip()


def first_match(text: str, pattern: str) -> str:
    m = re.search(pattern, text)
    return m.group(1) if m else "not installed"


def git_commit() -> str:
    """HEAD's commit, read from .git without running git."""
    gitdir = REPO / ".git"
    if gitdir.is_file():  # a worktree: "gitdir: PATH"
        gitdir = pathlib.Path(gitdir.read_text().split(":", 1)[1].strip())
    try:
        head = (gitdir / "HEAD").read_text().strip()
        if not head.startswith("ref: "):
            return head[:12]
        ref = head[5:]
        loose = gitdir / ref
        if loose.exists():
            return f"{loose.read_text().strip()[:12]} ({ref.rsplit('/', 1)[-1]})"
        common = gitdir / "commondir"
        base = (gitdir / common.read_text().strip()) if common.exists() else gitdir
        if (base / ref).exists():  # a worktree's branch: its ref lives in the common dir
            return f"{(base / ref).read_text().strip()[:12]} ({ref.rsplit('/', 1)[-1]})"
        for line in (base / "packed-refs").read_text().splitlines():
            if line.endswith(" " + ref):
                return f"{line.split()[0][:12]} ({ref.rsplit('/', 1)[-1]})"
    except OSError:
        pass
    return "unknown"


def machine() -> list[tuple[str, str]]:
    cpu = "unknown"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(next(l for l in open("/proc/meminfo") if l.startswith("MemTotal")).split()[1])
        mem = f"{kb / 1024 / 1024:.1f} GiB"
    except (OSError, StopIteration, ValueError):
        pass
    distro = ""
    try:
        distro = next(l.split("=", 1)[1].strip().strip('"') for l in open("/etc/os-release")
                      if l.startswith("PRETTY_NAME="))
    except (OSError, StopIteration):
        pass
    return [
        ("CPUs (`nproc`)", str(os.cpu_count())),
        ("CPU model", cpu),
        ("memory", mem),
        ("kernel", platform.release()),
        ("distribution", distro),
    ]


def versions(meta: dict) -> list[tuple[str, str]]:
    rgw_bin = REPO / "target" / "release" / "rgw"
    return [
        ("rgw commit", meta.get("rgw_commit") or git_commit()),
        ("rgw", first_match(run([str(rgw_bin), "--version"]), r"(\S+ \S+)") if rgw_bin.exists() else "not built"),
        ("rustc", first_match(run(["rustc", "--version"]), r"rustc (\S+)")),
        ("NSD", first_match(run(["nsd", "-v"]), r"NSD version (\S+)")),
        ("Knot DNS", first_match(run(["knotd", "--version"]), r"version (\S+)")),
        ("unbound", first_match(run(["unbound", "-V"]), r"Version (\S+)")),
        ("dnsperf", first_match(run(["dnsperf", "-h"]), r"Version (\S+)")),
        ("iperf3", first_match(run(["iperf3", "--version"]), r"iperf (\S+)")),
        ("SIPp", first_match(run(["sipp", "-v"]), r"SIPp (v\S+)")),
        ("pyftpdlib", first_match(run(["/usr/bin/python3", "-c", "import pyftpdlib; print('pyftpdlib', pyftpdlib.__ver__)"]),
                                  r"pyftpdlib (\S+)")),
    ]


def kv_table(pairs: list[tuple[str, str]]) -> list[str]:
    return ["| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in pairs if v]


def kept_analysis(out: pathlib.Path) -> str:
    if out.exists():
        text = out.read_text()
        if ANALYSIS_BEGIN in text and ANALYSIS_END in text:
            return text.split(ANALYSIS_BEGIN, 1)[1].split(ANALYSIS_END, 1)[0].strip("\n")
    return "_Not written yet: the text between the analysis markers is hand-written and kept by report.py._"


def render(rows: list[dict], meta: dict, out: pathlib.Path) -> str:
    order = scenario_order(rows)
    scen = {s: Scenario(s, [r for r in rows if r["scenario"] == s]) for s in order}
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    L = ["# Benchmarks", ""]
    L += [
        "Generated by `testbed/bench/report.py` from the fragments in `testbed/bench/results/`;",
        "all rows are in [benchmarks.csv](benchmarks.csv). Everything outside the *Analysis*",
        "section is rewritten on every run. To reproduce (as root):",
        "",
        "```sh",
        "./testbed/bench/bench.sh                                # everything, 3 rounds: about 45 min",
        "./testbed/bench/bench.sh --only alloc,dns_peers,datapath  # without capacity/micro: about 10 min",
        "./testbed/bench/bench.sh --quick                        # 1 short round of everything",
        "./testbed/bench/bench.sh --only alg                     # the ALG alone: about 15 min",
        "./testbed/bench/alg.sh --quick                          # the ALG alone, 1 short round, no report",
        "```",
        "",
        "bench.sh installs what is missing (`testbed/install-deps.sh bench`: Knot, iperf3,",
        "matplotlib, perf, valgrind) and builds rgw (`cargo build --release --locked -p rgw`).",
        "",
        "Absolute numbers on a shared 2-vCPU virtual machine are noise: the load generator, the",
        "server and the kernel's forwarding share the same two CPUs, and other work on the host",
        "moves them from run to run. Read the **ratios**: each round runs rgw and its peer back to",
        "back, the ratio is taken per round, and the table gives its median and range. A ratio",
        "above 1 means rgw is higher (better for queries/s and Mbit/s, worse for latency, CPU",
        "per query, loss and sizes).",
        "",
    ]
    # ---- run facts
    run_facts = [("date", meta.get("finished") or now)]
    if meta:
        run_facts += [
            ("options", meta.get("options", "")),
            ("rounds", str(meta.get("rounds", ""))),
            ("suite run time", meta.get("total_human", "")),
        ]
        for s in meta.get("scenarios", []):
            run_facts.append((f"`{s['script']}`", f"{s['status']}, {s['seconds']} s"))
    L += ["## Machine, versions, run", ""]
    L += kv_table(machine() + versions(meta) + run_facts) + [""]

    # ---- summary
    summary = []
    for name, metric, label in HEADLINE:
        sc = scen.get(name)
        if not sc or not any((metric, s) in sc.data for s in sc.systems):
            continue
        if sc.peers:
            for p in sc.peers:
                r = sc.ratios(metric, p)
                if r:
                    summary.append((f"{label}: {US} / {p}", spread(r),
                                    f"{US} {fmt(statistics.median(sc.values(metric, US)))}, "
                                    f"{p} {fmt(statistics.median(sc.values(metric, p)))}"))
        else:
            v = sc.values(metric, US)
            if v:
                summary.append((label, spread(v), ""))
    for name, metric, label in HEADLINE_OURS:
        sc = scen.get(name)
        v = sc.values(metric, US) if sc else []
        if v:
            summary.append((label, spread(v), ""))
    if summary:
        L += ["## Summary", "", "| measure | median (range) over rounds | medians |", "|---|---:|---|"]
        L += [f"| {a} | {b} | {c} |" for a, b, c in summary] + [""]

    # ---- analysis (hand-written, kept)
    L += ["## Analysis", "", ANALYSIS_BEGIN, kept_analysis(out), ANALYSIS_END, ""]

    # ---- one section per scenario
    capacity_png = REPO / "docs" / "bench" / "capacity.png"
    L += ["## Results", ""]
    for name in order:
        sc = scen[name]
        title, method = SCENARIOS.get(name, (name, ""))
        if parent(name):
            title = f"{SCENARIOS[parent(name)][0]}, details: {name[len(parent(name)) + 1:]}"
            L += [f"#### {title} (`{name}`)", ""]
        else:
            L += [f"### {title} (`{name}`)", ""]
        if method:
            L += [method, ""]
        L += [f"Median over {sc.rounds} round(s), range in parentheses."
              + (f" `{US} / peer`: per-round ratio." if sc.peers else ""), ""]
        L += sc.table() + [""]
        if name == "capacity" and capacity_png.exists():
            L += ["![Circular Pool capacity](bench/capacity.png)", ""]
    if "capacity" not in scen and capacity_png.exists():
        L += ["### Circular Pool capacity", "", "![Circular Pool capacity](bench/capacity.png)", ""]
    missing = [s for s in SCENARIOS if s not in scen]
    if missing:
        L += ["Not in this run: " + ", ".join(f"`{s}`" for s in missing) + ".", ""]
    return "\n".join(L)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", type=pathlib.Path, default=REPO / "testbed" / "bench" / "results")
    ap.add_argument("--out", type=pathlib.Path, default=REPO / "docs" / "benchmarks.md")
    ap.add_argument("--csv", type=pathlib.Path, default=REPO / "docs" / "benchmarks.csv")
    args = ap.parse_args()

    rows = read_fragments(args.results)
    if not rows:
        raise SystemExit(f"report.py: no result rows in {args.results}/*.csv: run testbed/bench/bench.sh")
    meta_path = args.results / "meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}

    text = render(rows, meta, args.out)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)

    order = {s: i for i, s in enumerate(scenario_order(rows))}
    with args.csv.open("w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(COLUMNS)
        for r in sorted(rows, key=lambda r: order[r["scenario"]]):  # stable: keeps file order
            w.writerow([r["scenario"], r["system"], r["metric"], r["unit"], r["round"], r["text"]])
    print(f"report.py: wrote {args.out} and {args.csv} ({len(rows)} rows, {len(order)} scenarios)")


if __name__ == "__main__":
    main()
