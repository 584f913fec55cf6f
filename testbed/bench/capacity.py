#!/usr/bin/env python3
"""Circular Pool capacity: success rate of new inbound connections vs offered rate.

Reproduces the seed's scalability experiment ("Realm Gateway Scalability",
Fig. 3/4: 50 ms delay, 60 conn/s): four traffic mixes, each at a list of
offered connection rates. Run it in the testbed's client namespace (capacity.sh
does); it talks to the real resolver, which follows the delegation to rgw.

One connection = resolve the name through the resolver over UDP (one query,
--dns-timeout, no retry: first-attempt success is what counts, as in the
paper; the resolver's own retries towards rgw happen inside that second), then
open the data flow to the answered address from one of the client's source
addresses within --conn-timeout, 0.95 s (TCP: connect and read the banner;
UDP: one datagram, one reply). 0.95 rather than 1 s: Linux retransmits an
unanswered SYN after 1 s, and such a late first packet claims whatever
reservation holds that address and port by then, i.e. another client's, which
then fails while this one reaches the wrong host. It succeeds only if the banner / reply names the host
the name belongs to.

Tests (traffic mixes):
  1  100% FQDN                             hostX.gwa.demo, then TCP 7101
  2  50% FQDN + 50% SFQDN "5 geometric"    SFQDN service = one of 5 TCP ports
  3  50% FQDN + 50% SFQDN "2x5 geometric"  protocol TCP/UDP 50/50, then one of 5 ports
  4  100% SFQDN "2x5 geometric"
"geometric": the ports are chosen with probabilities 1/2, 1/4, 1/8, 1/16,
1/16 (a geometric distribution with p = 0.5, the tail folded into the last
port). Ports: TCP 7101..7105 (served by `--serve`, one non-forking process
per host) and UDP 7101..7105 (testbed/udp_server.py), most popular first. Hosts: hosta / hostb 50/50, each name
uniformly among the host's --names-per-host labels. Arrivals: Poisson at the
offered rate, seeded, so a run repeats.

Theoretical bounds (seed): eta = pool_size / T_service for FQDN,
eta' = N_port x N_proto x N_ip / T_service for SFQDN. For the mixes the
address-time budget gives 1 / (f/eta + (1-f)/eta') (f = FQDN share). With the
geometric choice the most popular service saturates first:
eta_top = N_ip / (T_service x (f + (1-f) x p_top)), p_top = 1/2 (5) or 1/4 (2x5).
T_service (reservation -> first packet at the gateway) is estimated per test as
the median, at the lowest offered rate, of (first data packet sent - DNS query
sent) at the client: the resolver->gateway leg of the query and the
client->gateway leg of the first packet both cross the same 25 ms delay, so
they cancel (see capacity.sh).

Outputs: a CSV fragment, a PNG, and a markdown summary on stdout.
--plot-only CSV re-draws the PNG (and the summary) from a CSV.

CSV (columns scenario,system,metric,unit,round,value; system is always "rgw";
round = repetition of the whole sweep). Metrics are GROUP.MEASURE so that
testbed/bench/report.py pivots them into one table per scenario (a row per
group):
  scenario capacity_test<N>, group "<rate>/s" (the nominal offered rate):
    offered_per_s (conn/s, measured), attempts, success_pct,
    fqdn_success_pct / sfqdn_success_pct (mixed tests only: Fig. 4),
    failure breakdown (counts): fail_dns_timeout (no answer within 1 s),
    fail_dns_servfail (the resolver gave up), fail_dns_shared (the resolver
    gave the same answer to a concurrent identical question), fail_connect
    (data flow not admitted, refused, or no banner), fail_wrong_host (must be
    0), fail_other; tuple_rebinds (source ports the client skipped because
    the 5-tuple had been used in the last 200 s: conntrack would have given
    the new flow the old flow's binding, see bind_fresh); servfail_fast (the SERVFAILs that came within 10 ms, i.e.
    without asking rgw: the resolver held the gateway as failed); dns_p50_ms, t_service_p50_ms (successful connections);
    rgw counters grown during the point: rgw_queries (queries that reached
    rgw, resolver retries included), rgw_reservations, rgw_denied (pool
    exhausted: query dropped), rgw_claims, rgw_unclaimed (reservations -
    claims: each held its address for Tmax).
  scenario capacity, group "test<N>": t_service_ms, eta_per_s,
    eta_top_service_per_s, max_rate_95pct_per_s (highest rate up to which
    every point kept >= 95 %), success_at_60_pct (the paper's 60 conn/s).
"""
from __future__ import annotations

import argparse
import asyncio
import csv
import ipaddress
import json
import os
import random
import resource
import socket
import statistics
import struct
import subprocess
import sys
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass

GEOMETRIC5 = [0.5, 0.25, 0.125, 0.0625, 0.0625]

# test -> (label, FQDN share, SFQDN mode)
TESTS = OrderedDict([
    (1, ("100% FQDN", 1.0, None)),
    (2, ("50% FQDN + 50% SFQDN 5 geometric", 0.5, "5")),
    (3, ("50% FQDN + 50% SFQDN 2x5 geometric", 0.5, "2x5")),
    (4, ("100% SFQDN 2x5 geometric", 0.0, "2x5")),
])

# failure reasons, in the order they are reported
REASONS = [
    "dns_timeout",      # no answer from the resolver within --dns-timeout
    "dns_servfail",     # the resolver gave up (SERVFAIL)
    "dns_other",        # another rcode, no A record, or a send error
    "dns_shared",       # the resolver gave this answer to another client too (see mark_shared_answers)
    "connect_timeout",  # TCP SYN / UDP datagram unanswered (not admitted at the gateway)
    "connect_refused",  # RST / ICMP unreachable
    "wrong_host",       # reached a host, but not the one the name belongs to
    "no_banner",        # TCP connected, nothing (or garbage) read in time
    "client_overload",  # not attempted: too many connections in flight in this client
]
FAIL_COLUMNS = OrderedDict([
    # CSV measure -> reasons summed into it
    ("fail_dns_timeout", ["dns_timeout"]),
    ("fail_dns_servfail", ["dns_servfail"]),
    ("fail_dns_shared", ["dns_shared"]),
    ("fail_connect", ["connect_timeout", "connect_refused", "no_banner"]),
    ("fail_wrong_host", ["wrong_host"]),
    ("fail_other", ["dns_other", "client_overload"]),
])
RGW_COUNTERS = OrderedDict([
    # CSV measure -> rgw counter (growth during the point)
    ("rgw_queries", "dns_queries_public"),
    ("rgw_reservations", "reservations"),
    ("rgw_denied", "denied_exhausted"),
    ("rgw_claims", "claims"),
    ("rgw_expiries", "expiries"),
])


# ---------------------------------------------------------------- DNS wire format
def dns_query(qid: int, name: str) -> bytes:
    """A stub query: RD set, type A, class IN, no EDNS."""
    header = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    qname = b"".join(bytes([len(label)]) + label.encode() for label in name.split(".") if label)
    return header + qname + b"\0" + struct.pack(">HH", 1, 1)


def _skip_name(buf: bytes, off: int) -> int:
    while True:
        if off >= len(buf):
            raise ValueError("name runs past the message")
        n = buf[off]
        if n == 0:
            return off + 1
        if n & 0xC0 == 0xC0:
            return off + 2
        off += 1 + n


def dns_answer(buf: bytes, qid: int):
    """(rcode, [IPv4 addresses], ttl of the first A) or None if not our reply."""
    if len(buf) < 12:
        return None
    rid, flags, qd, an, _ns, _ar = struct.unpack(">HHHHHH", buf[:12])
    if rid != qid or not flags & 0x8000:
        return None
    try:
        off = 12
        for _ in range(qd):
            off = _skip_name(buf, off) + 4
        addrs, ttl = [], None
        for _ in range(an):
            off = _skip_name(buf, off)
            rtype, _cls, rttl, rdlen = struct.unpack(">HHIH", buf[off:off + 10])
            off += 10
            if rtype == 1 and rdlen == 4:
                addrs.append(socket.inet_ntoa(buf[off:off + 4]))
                ttl = rttl if ttl is None else ttl
            off += rdlen
    except (ValueError, struct.error):
        return (flags & 0xF, [], None) if flags & 0xF else None
    return flags & 0xF, addrs, ttl


# ---------------------------------------------------------------- workload
@dataclass
class Arrival:
    t: float
    host: str         # the host the bytes must reach (its banner names it)
    label: str        # the DNS label asked for: the host or one of its aliases
    fqdn: bool
    proto: str
    port: int
    src: str
    qid: int

    def name(self, zone: str) -> str:
        if self.fqdn:
            return f"{self.label}.{zone}"
        return f"{self.proto}{self.port}.{self.label}.{zone}"


def sfqdn_services(mode: str, tcp_ports: list[int], udp_ports: list[int]):
    """[(proto, port, probability)] of the SFQDN share."""
    if mode == "5":
        return [("tcp", p, w) for p, w in zip(tcp_ports, GEOMETRIC5)]
    if mode == "2x5":
        return ([("tcp", p, w / 2) for p, w in zip(tcp_ports, GEOMETRIC5)]
                + [("udp", p, w / 2) for p, w in zip(udp_ports, GEOMETRIC5)])
    raise ValueError(mode)


def host_labels(host: str, names_per_host: int) -> list[str]:
    """The host's own label and its aliases host-001 ... (capacity.sh gives
    each alias its own address on the host and its own [[hosts]] entry)."""
    return [host] + [f"{host}-{i:03d}" for i in range(1, names_per_host)]


def schedule(test: int, rate: float, duration: float, rnd: int, args) -> list[Arrival]:
    _label, f, mode = TESTS[test]
    rng = random.Random(f"{args.seed}/{test}/{rate}/{rnd}")
    services = sfqdn_services(mode, args.tcp_ports, args.udp_ports) if mode else []
    weights = [w for _, _, w in services]
    fq_proto, fq_port = args.fqdn_service
    out, t = [], 0.0
    while True:
        t += rng.expovariate(rate) if args.arrivals == "poisson" else 1.0 / rate
        if t >= duration:
            return out
        host = rng.choice(args.hosts)
        label = rng.choice(host_labels(host, args.names_per_host))
        fqdn = rng.random() < f
        if fqdn:
            proto, port = fq_proto, fq_port
        else:
            proto, port, _ = rng.choices(services, weights)[0]
        out.append(Arrival(t, host, label, fqdn, proto, port, rng.choice(args.sources),
                           rng.randrange(1 << 16)))


# ---------------------------------------------------------------- one connection
@dataclass
class Result:
    fqdn: bool
    ok: bool = False
    reason: str = ""
    dns_ms: float | None = None
    tsvc_ms: float | None = None      # first data packet sent - query sent (~ T_service)
    connect_ms: float | None = None
    ttl: int | None = None
    name: str = ""
    addr: str = ""
    t_ans: float | None = None
    banner: str = ""
    proto: str = ""
    port: int = 0
    src: str = ""
    tuple_reused: bool = False   # the 5-tuple of a recent flow (--allow-tuple-reuse)
    tuple_rebinds: int = 0       # rebinds to avoid that


# (proto, src, sport, dst, dport) -> last use (loop time). conntrack keeps a
# flow's NAT binding after the client closed its socket (UDP: 120 s once
# replied; TCP: 120 s in TIME_WAIT, 10 s in CLOSE). A new flow that happens to
# reuse the same 5-tuple while that entry lives is the OLD flow for the
# kernel: it never reaches rgw's first-packet gate and goes to the old host.
# The client avoids such reuse (rebinds) unless --allow-tuple-reuse.
RECENT_TUPLES: dict = {}
TUPLE_MEMORY_S = 200.0


def bind_fresh(proto: str, src: str, dst: str, dport: int, args, res) -> socket.socket:
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    now = time.monotonic()
    for _ in range(8):
        sk = socket.socket(socket.AF_INET, kind)
        sk.setblocking(False)
        sk.bind((src, 0))
        key = (proto, src, sk.getsockname()[1], dst, dport)
        last = RECENT_TUPLES.get(key)
        if last is None or now - last > TUPLE_MEMORY_S:
            RECENT_TUPLES[key] = now
            return sk
        if args.allow_tuple_reuse:
            res.tuple_reused = True
            RECENT_TUPLES[key] = now
            return sk
        res.tuple_rebinds += 1
        sk.close()
    raise OSError("no fresh source port in 8 tries")


def banner_names(data: bytes, host: str) -> bool:
    line = data.split(b"\n", 1)[0].decode(errors="replace").strip()
    token = line.split()[0] if line else ""
    return token == host or token.startswith(host + "-")


async def connection(a: Arrival, args, res: Result) -> None:
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    # --- DNS: one query, no retry
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.setblocking(False)
        s.bind((a.src, 0))
        s.connect((args.resolver, 53))
        s.send(dns_query(a.qid, a.name(args.zone)))
        ans = None
        while ans is None:
            left = t0 + args.dns_timeout - loop.time()
            if left <= 0:
                res.reason = "dns_timeout"
                return
            try:
                data = await asyncio.wait_for(loop.sock_recv(s, 4096), left)
            except asyncio.TimeoutError:
                res.reason = "dns_timeout"
                return
            ans = dns_answer(data, a.qid)
    except OSError:
        res.reason = "dns_other"
        return
    finally:
        s.close()
    t_ans = loop.time()
    res.t_ans = t_ans
    res.dns_ms = (t_ans - t0) * 1000
    rcode, addrs, res.ttl = ans
    if rcode == 2:
        res.reason = "dns_servfail"
        return
    if rcode != 0 or not addrs:
        res.reason = "dns_other"
        return
    addr = addrs[0]
    res.name, res.addr, res.proto, res.port, res.src = a.name(args.zone), addr, a.proto, a.port, a.src

    # --- the data flow to the answered address
    if a.proto == "tcp":
        try:
            c = bind_fresh("tcp", a.src, addr, a.port, args, res)
        except OSError:
            res.reason = "dns_other"
            return
        try:
            t_first = loop.time()
            res.tsvc_ms = (t_first - t0) * 1000
            try:
                await asyncio.wait_for(loop.sock_connect(c, (addr, a.port)), args.conn_timeout)
            except asyncio.TimeoutError:
                res.reason = "connect_timeout"
                return
            except ConnectionRefusedError:
                res.reason = "connect_refused"
                return
            except OSError:
                res.reason = "connect_refused"
                return
            res.connect_ms = (loop.time() - t_first) * 1000
            data = b""
            end = loop.time() + args.conn_timeout
            while b"\n" not in data and len(data) < 512:
                left = end - loop.time()
                if left <= 0:
                    break
                try:
                    chunk = await asyncio.wait_for(loop.sock_recv(c, 512), left)
                except (asyncio.TimeoutError, OSError):
                    break
                if not chunk:
                    break
                data += chunk
        finally:
            c.close()
    else:
        try:
            u = bind_fresh("udp", a.src, addr, a.port, args, res)
        except OSError:
            res.reason = "dns_other"
            return
        try:
            u.connect((addr, a.port))
            t_first = loop.time()
            res.tsvc_ms = (t_first - t0) * 1000
            u.send(b"capacity\n")
            try:
                data = await asyncio.wait_for(loop.sock_recv(u, 512), args.conn_timeout)
            except asyncio.TimeoutError:
                res.reason = "connect_timeout"
                return
            except OSError:
                res.reason = "connect_refused"
                return
            res.connect_ms = (loop.time() - t_first) * 1000
        finally:
            u.close()
    if not data.strip():
        res.reason = "no_banner"
    elif not banner_names(data, a.host):
        res.reason = "wrong_host"
        res.banner = data.split(b"\n", 1)[0].decode(errors="replace")[:40]
    else:
        res.ok = True


async def run_point(arrivals: list[Arrival], args) -> tuple[list[Result], float]:
    loop = asyncio.get_running_loop()
    results: list[Result] = []
    tasks = []
    inflight = 0

    async def one(a: Arrival, r: Result):
        nonlocal inflight
        inflight += 1
        try:
            await connection(a, args, r)
        except Exception as e:  # never let one connection end the run
            r.reason = r.reason or "dns_other"
            print(f"capacity.py: connection error {e!r}", file=sys.stderr)
        finally:
            inflight -= 1

    start = loop.time() + 0.05
    for a in arrivals:
        delay = start + a.t - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        r = Result(fqdn=a.fqdn)
        results.append(r)
        if inflight >= args.max_inflight:
            r.reason = "client_overload"
            continue
        tasks.append(asyncio.create_task(one(a, r)))
    elapsed = max(loop.time() - start, 1e-9)
    if tasks:
        await asyncio.wait(tasks, timeout=args.dns_timeout + 2 * args.conn_timeout + 2)
    mark_shared_answers(results)
    return results, elapsed


def explain_wrong_hosts(results: list[Result], window_s: float = 0.05) -> list[str]:
    """One line per connection that reached another host than its name's,
    saying whether its DNS answer was also given to another client (then the
    first of them claimed the reservation, and the later one's first packet
    claimed the NEXT reservation of the same address and port, which belonged
    to another name)."""
    by_answer: dict = {}
    for r in results:
        if r.t_ans is not None and r.addr:
            by_answer.setdefault((r.name, r.addr), []).append(r.t_ans)
    out = []
    for r in results:
        if r.reason != "wrong_host":
            continue
        shared = sum(1 for t in by_answer[(r.name, r.addr)] if abs(t - r.t_ans) <= window_s) > 1
        out.append(f"  wrong host: {r.name} -> {r.addr} {r.proto}/{r.port} from {r.src}: got {r.banner!r}; "
                   f"answer shared with another client: {shared}; dns {r.dns_ms:.0f} ms"
                   + ("; 5-tuple reused" if r.tuple_reused else ""))
    return out


def mark_shared_answers(results: list[Result], window_s: float = 0.05) -> None:
    """A recursive resolver answers identical questions that are in flight at
    the same time with ONE upstream query (unbound's mesh): both clients get
    the same pool address, only the first flow can claim it. Such answers
    arrive within the same few milliseconds; a failed connection whose answer
    was shared like that is counted as `dns_shared`, not as a gateway failure.
    The window is wide (50 ms) because under load the client's own event loop
    stamps the arrivals late; two genuine reservations for the same name with
    the same address that close together are rare (then a failure is counted
    as shared although it was not)."""
    by_answer: dict = {}
    for r in results:
        if r.t_ans is not None and r.addr:
            by_answer.setdefault((r.name, r.addr), []).append(r.t_ans)
    for r in results:
        if r.ok or r.reason not in ("connect_timeout", "connect_refused") or not r.addr:
            continue
        times = by_answer.get((r.name, r.addr), [])
        if sum(1 for t in times if abs(t - r.t_ans) <= window_s) > 1:
            r.reason = "dns_shared"


# ---------------------------------------------------------------- banner server
async def serve_banners(name: str, ports: list[int]) -> None:
    """TCP banner servers for one host, in one process: "<name>-<port>\n",
    then close. The testbed's socat listeners fork a shell per connection,
    which at hundreds of connections per second costs more CPU than
    everything else in the experiment; this does not fork."""
    async def handler(reader, writer, port):
        try:
            writer.write(f"{name}-{port}\n".encode())
            await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    servers = []
    for port in ports:
        servers.append(await asyncio.start_server(
            lambda r, w, p=port: handler(r, w, p), host="0.0.0.0", port=port,
            reuse_address=True, backlog=1024))
    print(f"{name}: tcp banner server on {','.join(map(str, ports))}", flush=True)
    await asyncio.gather(*(srv.serve_forever() for srv in servers))


# ---------------------------------------------------------------- rgw / unbound
def rgw_status(path: str) -> dict | None:
    if not path:
        return None
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(10)
            s.connect(path)
            s.sendall(b"status\n")
            buf = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                buf += chunk
        return json.loads(buf)
    except (OSError, ValueError) as e:
        print(f"capacity.py: rgw status failed: {e}", file=sys.stderr)
        return None


def unbound(args, *cmd) -> str:
    if not args.unbound_conf:
        return ""
    try:
        cp = subprocess.run(["unbound-control", "-c", args.unbound_conf, *cmd],
                            capture_output=True, text=True, timeout=10)
        return cp.stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""


def unbound_stats(args) -> dict:
    """`unbound-control stats` (which also resets them) as a dict of floats."""
    out = {}
    for line in unbound(args, "stats").splitlines():
        k, _, v = line.partition("=")
        try:
            out[k] = float(v)
        except ValueError:
            pass
    return out


def settle(args) -> None:
    """Between points: let pending reservations expire (Tmax), then forget the
    resolver's view of the gateway (RTT/timeout state), its pending retries
    and the SERVFAILs it cached, so every point starts from the same state."""
    deadline = time.monotonic() + args.tmax + 2
    while time.monotonic() < deadline:
        st = rgw_status(args.rgw_socket)
        if st is None or st.get("pool", {}).get("pending", 0) == 0:
            break
        time.sleep(0.2)
    unbound(args, "flush_requestlist")
    unbound(args, "flush_infra", "all")
    # SERVFAILs it cached for names ("all servers failed") outlive the point
    unbound(args, "flush_negative")
    time.sleep(0.2)


# ---------------------------------------------------------------- numbers
def pct(n: int, d: int) -> float:
    return 100.0 * n / d if d else 0.0


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def quantile(xs, q):
    xs = sorted(x for x in xs if x is not None)
    if not xs:
        return None
    return xs[min(len(xs) - 1, max(0, round(q * len(xs)) - 1))]


def eta_bounds(test: int, n_ip: int, t_service_s: float):
    """(eta from the seed's formulas, eta of the most popular service)."""
    _l, f, mode = TESTS[test]
    n_services = {None: 1, "5": 5, "2x5": 10}[mode]
    p_top = {None: 1.0, "5": GEOMETRIC5[0], "2x5": GEOMETRIC5[0] / 2}[mode]
    eta_fqdn = n_ip / t_service_s
    eta_sfqdn = n_services * n_ip / t_service_s
    eta = 1.0 / (f / eta_fqdn + (1 - f) / eta_sfqdn)
    eta_top = n_ip / (t_service_s * (f + (1 - f) * p_top))
    return eta, eta_top


def group_of(rate: float) -> str:
    return f"{rate:g}/s"


# ---------------------------------------------------------------- the run
def measure(args) -> list[list]:
    rows: list[list] = []
    summary = OrderedDict()  # test -> list of dicts per (round, rate)

    def emit(scenario, metric, unit, rnd, value):
        if value is None:
            return
        rows.append([scenario, "rgw", metric, unit, rnd, f"{value:.4f}".rstrip("0").rstrip(".")])

    # warm the resolver's cache with the delegation (a static name: no reservation)
    for _ in range(3):
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.settimeout(1)
                s.connect((args.resolver, 53))
                s.send(dns_query(1, f"ns.{args.zone}"))
                s.recv(512)
                break
        except OSError:
            pass
    settle(args)
    load0 = loadavg()
    t_begin = time.monotonic()
    for rnd in range(1, args.rounds + 1):
        for test in args.tests:
            scen = f"capacity_test{test}"
            tsvc_samples = []
            for rate in args.rates:
                arrivals = schedule(test, rate, args.duration, rnd, args)
                before = rgw_status(args.rgw_socket)
                unbound_stats(args)  # reset
                results, elapsed = asyncio.run(run_point(arrivals, args))
                # reservations made near the end expire (or are claimed) before we read
                settle_wait = time.monotonic() + args.tmax + 0.5
                while time.monotonic() < settle_wait:
                    st = rgw_status(args.rgw_socket)
                    if st is None or st.get("pool", {}).get("pending", 0) == 0:
                        break
                    time.sleep(0.2)
                after = rgw_status(args.rgw_socket)
                ub = unbound_stats(args)
                n = len(results)
                ok = sum(r.ok for r in results)
                reasons = Counter(r.reason for r in results if not r.ok)
                fq = [r for r in results if r.fqdn]
                sf = [r for r in results if not r.fqdn]
                g = group_of(rate)
                emit(scen, f"{g}.offered_per_s", "conn/s", rnd, n / args.duration)
                emit(scen, f"{g}.attempts", "count", rnd, n)
                emit(scen, f"{g}.success_pct", "%", rnd, pct(ok, n))
                if fq and sf:
                    emit(scen, f"{g}.fqdn_success_pct", "%", rnd, pct(sum(r.ok for r in fq), len(fq)))
                    emit(scen, f"{g}.sfqdn_success_pct", "%", rnd, pct(sum(r.ok for r in sf), len(sf)))
                for col, rs in FAIL_COLUMNS.items():
                    emit(scen, f"{g}.{col}", "count", rnd, sum(reasons[x] for x in rs))
                # SERVFAIL without asking rgw: the resolver holds the gateway (or
                # the name) as failed (infra cache / cached SERVFAIL)
                fast = sum(1 for r in results if r.reason == "dns_servfail" and (r.dns_ms or 0) < 10)
                emit(scen, f"{g}.servfail_fast", "count", rnd, fast)
                rebinds = sum(r.tuple_rebinds for r in results)
                reused = [r for r in results if r.tuple_reused]
                emit(scen, f"{g}.tuple_rebinds", "count", rnd, rebinds)
                dns_ok = [r.dns_ms for r in results if r.dns_ms is not None and r.reason != "dns_servfail"]
                emit(scen, f"{g}.dns_p50_ms", "ms", rnd, median(dns_ok) if dns_ok else 0.0)
                tsvc = [r.tsvc_ms for r in results if r.ok]
                emit(scen, f"{g}.t_service_p50_ms", "ms", rnd, median(tsvc) if tsvc else 0.0)
                if rate == args.rates[0]:
                    tsvc_samples = tsvc
                diffs = {}
                if before and after:
                    for col, key in RGW_COUNTERS.items():
                        diffs[col] = after["counters"][key] - before["counters"][key]
                    # reservations nobody claimed: each held an address for Tmax
                    # (rgw's own `expiries` misses those reclaimed lazily at the
                    # next allocation, so count them as the difference)
                    diffs["rgw_unclaimed"] = diffs["rgw_reservations"] - diffs["rgw_claims"]
                    for col in list(RGW_COUNTERS) + ["rgw_unclaimed"]:
                        if col != "rgw_expiries":
                            emit(scen, f"{g}.{col}", "count", rnd, diffs[col])
                ttls = Counter(r.ttl for r in results if r.ttl is not None)
                point = dict(rate=rate, n=n, ok=ok, reasons=reasons, elapsed=elapsed,
                             fq=(sum(r.ok for r in fq), len(fq)), sf=(sum(r.ok for r in sf), len(sf)),
                             dns_p50=median(dns_ok), dns_p95=quantile(dns_ok, 0.95),
                             tsvc=median(tsvc), rgw=diffs, ub=ub, ttls=ttls,
                             connect=median([r.connect_ms for r in results if r.ok]))
                summary.setdefault(test, []).append(point)
                line = (f"round {rnd} test {test} rate {rate:g}/s: {ok}/{n} ok ({pct(ok, n):.1f}%)"
                        f" dns p50 {fmt_ms(point['dns_p50'])} tsvc p50 {fmt_ms(point['tsvc'])}")
                if reasons:
                    line += " fail " + " ".join(f"{k}={v}" for k, v in sorted(reasons.items()))
                if fast:
                    line += f" (servfail <10 ms: {fast})"
                if rebinds:
                    line += f" (5-tuple reuse avoided: {rebinds})"
                if reused:
                    wrong = sum(1 for r in reused if r.reason == "wrong_host")
                    line += f" (5-tuple reused: {len(reused)}, of them wrong host: {wrong})"
                if diffs:
                    line += " | rgw " + " ".join(f"{k[4:]}={v}" for k, v in diffs.items() if k != "rgw_expiries")
                if ub:
                    line += (f" | unbound queries={ub.get('total.num.queries', 0):.0f}"
                             f" reqlist_max={ub.get('total.requestlist.max', 0):.0f}"
                             f" exceeded={ub.get('total.requestlist.exceeded', 0):.0f}")
                if ttls and set(ttls) != {0}:
                    line += f" | answer TTLs {dict(ttls)}"
                print(line, file=sys.stderr, flush=True)
                for w in explain_wrong_hosts(results)[:10]:
                    print(w, file=sys.stderr, flush=True)
                settle(args)
            t_service = (median(tsvc_samples) or 50.0) / 1000
            eta, eta_top = eta_bounds(test, args.pool_size, t_service)
            emit("capacity", f"test{test}.t_service_ms", "ms", rnd, t_service * 1000)
            emit("capacity", f"test{test}.eta_per_s", "conn/s", rnd, eta)
            emit("capacity", f"test{test}.eta_top_service_per_s", "conn/s", rnd, eta_top)
            # the highest rate up to which every point kept >= 95 %
            held = 0.0
            for p in summary[test][-len(args.rates):]:
                if pct(p["ok"], p["n"]) < 95.0:
                    break
                held = p["rate"]
            emit("capacity", f"test{test}.max_rate_95pct_per_s", "conn/s", rnd, held)
            at60 = [p for p in summary[test][-len(args.rates):] if p["rate"] == 60]
            if at60:
                emit("capacity", f"test{test}.success_at_60_pct", "%", rnd, pct(at60[0]["ok"], at60[0]["n"]))
    args._elapsed = time.monotonic() - t_begin
    args._load = (load0, loadavg())
    args._summary = summary
    return rows


def loadavg() -> str:
    try:
        return open("/proc/loadavg").read().split()[0]
    except OSError:
        return "?"


def fmt_ms(v):
    return "-" if v is None else f"{v:.1f} ms"


# ---------------------------------------------------------------- CSV / plot / summary
COLUMNS = ["scenario", "system", "metric", "unit", "round", "value"]


def write_csv(path: str, rows: list[list]) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(COLUMNS)
        w.writerows(rows)
    os.replace(tmp, path)


def read_csv(path: str) -> list[list]:
    with open(path, newline="") as f:
        r = csv.reader(f)
        head = next(r)
        if head != COLUMNS:
            raise SystemExit(f"{path}: columns must be {','.join(COLUMNS)}")
        return [row for row in r]


def table_from_rows(rows):
    """{(scenario, metric): median over rounds}"""
    vals: dict = {}
    for scen, _sys, metric, _unit, _rnd, value in rows:
        vals.setdefault((scen, metric), []).append(float(value))
    return {k: statistics.median(v) for k, v in vals.items()}


def rates_in(vals, test):
    out = []
    for (scen, metric) in vals:
        if scen == f"capacity_test{test}" and metric.endswith(".success_pct"):
            out.append(float(metric.split("/s.")[0]))
    return sorted(set(out))


def plot(rows, png: str, args) -> bool:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("capacity.py: matplotlib not installed (Debian: python3-matplotlib); no plot", file=sys.stderr)
        return False
    vals = table_from_rows(rows)
    colors = {1: "#1f77b4", 2: "#ff7f0e", 3: "#2ca02c", 4: "#d62728"}
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(13, 6.2), gridspec_kw={"width_ratios": [3, 2]})
    all_rates = []
    for test in TESTS:
        rates = rates_in(vals, test)
        if not rates:
            continue
        all_rates += rates
        scen = f"capacity_test{test}"
        xs = [vals.get((scen, f"{group_of(r)}.offered_per_s"), r) for r in rates]
        ys = [vals[(scen, f"{group_of(r)}.success_pct")] for r in rates]
        ax.plot(xs, ys, "o-", color=colors[test], label=f"test {test}: {TESTS[test][0]}")
    if not all_rates:
        return False
    lo, hi = min(all_rates) * 0.8, max(all_rates) * 1.25
    # the bounds: vertical lines, labelled at the bottom (only those on the axis)
    for test in TESTS:
        eta = vals.get(("capacity", f"test{test}.eta_per_s"))
        eta_top = vals.get(("capacity", f"test{test}.eta_top_service_per_s"))
        marks = [(eta, "--", 1.0, f"η{test}")]
        if eta_top and abs(eta_top - (eta or 0)) > 0.5:
            marks.append((eta_top, ":", 1.4, f"η{test}*"))
        for x, ls, lw, text in marks:
            if not x or not lo < x < hi:
                continue
            ax.axvline(x, color=colors[test], ls=ls, lw=lw, alpha=0.85)
            ax.text(x * 0.985, 1, text, color=colors[test], fontsize=7.5, rotation=90,
                    ha="right", va="bottom")
    etas = [vals.get(("capacity", f"test{t}.eta_per_s")) for t in TESTS]
    off = [f"η{t} = {e:.0f}/s" for t, e in zip(TESTS, etas) if e and e > hi]
    ax.set_xscale("log")
    ax.set_xlim(lo, hi)
    ax.set_ylim(-2, 102)
    ticks = sorted(set(int(r) if r == int(r) else r for r in all_rates))
    ax.set_xticks(ticks)
    ax.set_xticklabels([f"{t:g}" for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel("offered new connections per second (Poisson arrivals)")
    ax.set_ylabel("connections that succeed at the first DNS query (%)")
    tsvcs = [vals.get(("capacity", f"test{t}.t_service_ms")) for t in TESTS]
    tsvc = statistics.median([x for x in tsvcs if x]) if any(tsvcs) else None
    pool = args.pool_size
    ax.set_title(f"Circular Pool capacity: pool {pool} addresses, Tmax {args.tmax:g} s, "
                 f"RTT {2 * args.delay_ms:g} ms" + (f", T_service ≈ {tsvc:.0f} ms" if tsvc else ""),
                 fontsize=10.5)
    ax.grid(True, which="major", alpha=0.3)
    from matplotlib.lines import Line2D
    handles, labels = ax.get_legend_handles_labels()
    handles += [Line2D([], [], color="grey", ls="--", lw=1), Line2D([], [], color="grey", ls=":", lw=1.4)]
    labels += ["ηN: the seed's bound for test N: pool / T_service,\n"
               "N_port·N_proto·N_ip / T_service, mixed by address-time"
               + (f"\n(off the axis: {', '.join(off)})" if off else ""),
               "ηN*: bound of the most popular service in test N\n(geometric choice of ports)"]
    ax.legend(handles, labels, fontsize=8, loc="upper left", bbox_to_anchor=(0.0, -0.12), ncol=2,
              frameon=False)

    # right: Fig. 4 analogue, FQDN vs SFQDN success in the mixed tests
    for test in (2, 3):
        rates = rates_in(vals, test)
        scen = f"capacity_test{test}"
        pts = [(vals.get((scen, f"{group_of(r)}.offered_per_s"), r),
                vals.get((scen, f"{group_of(r)}.fqdn_success_pct")),
                vals.get((scen, f"{group_of(r)}.sfqdn_success_pct"))) for r in rates]
        pts = [p for p in pts if p[1] is not None]
        if not pts:
            continue
        ax2.plot([p[0] for p in pts], [p[1] for p in pts], "s--", color=colors[test], label=f"test {test} FQDN share")
        ax2.plot([p[0] for p in pts], [p[2] for p in pts], "o-", color=colors[test], label=f"test {test} SFQDN share")
    ax2.set_xscale("log")
    ax2.set_xlim(lo, hi)
    ax2.set_xticks(ticks)
    ax2.set_xticklabels([f"{t:g}" for t in ticks])
    ax2.minorticks_off()
    ax2.set_ylim(-2, 102)
    ax2.grid(True, alpha=0.3)
    ax2.set_xlabel("offered new connections per second")
    ax2.set_ylabel("success (%)")
    ax2.set_title("mixed tests: FQDN vs SFQDN connections", fontsize=10.5)
    if ax2.get_legend_handles_labels()[0]:
        ax2.legend(fontsize=8, loc="upper left", bbox_to_anchor=(0.0, -0.13), ncol=2, frameon=False)
    else:
        ax2.text(0.5, 0.5, "tests 2 and 3 not in this run", ha="center", transform=ax2.transAxes)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(png)), exist_ok=True)
    fig.savefig(png, dpi=110)
    return True


def print_summary(rows, args) -> None:
    vals = table_from_rows(rows)
    P = print
    P("## Circular Pool capacity (seed: Realm Gateway Scalability, Fig. 3/4)")
    P()
    if getattr(args, "_load", None):
        P(f"Machine load average (1 min) at start / end: {args._load[0]} / {args._load[1]} "
          f"on {os.cpu_count()} CPUs.")
        P()
    if args.plot_only:
        P(f"(Re-drawn from {args.plot_only}; the parameters below are the command line's, "
          "not necessarily the run's.)")
        P()
    P(f"Pool {args.pool_size} addresses, Tmax {args.tmax:g} s, {args.delay_ms:g} ms each way on the router "
      f"(RTT {2 * args.delay_ms:g} ms; resolver <-> gateway crosses it too), "
      f"{args.duration:g} s per point, {args.rounds} round(s), Poisson arrivals, DNS timeout "
      f"{args.dns_timeout:g} s without retry, connect timeout {args.conn_timeout:g} s.")
    P()
    rates = sorted({r for t in TESTS for r in rates_in(vals, t)})
    head = "| offered conn/s | " + " | ".join(f"test {t}" for t in TESTS if rates_in(vals, t)) + " |"
    P("Success rate (%), median over rounds:")
    P()
    P(head)
    P("|---:|" + "---:|" * (head.count("|") - 2))
    for r in rates:
        cells = []
        for t in TESTS:
            if not rates_in(vals, t):
                continue
            v = vals.get((f"capacity_test{t}", f"{group_of(r)}.success_pct"))
            cells.append("" if v is None else f"{v:.1f}")
        P(f"| {r:g} | " + " | ".join(cells) + " |")
    P()
    P("| test | mix | T_service (ms) | η seed formula (conn/s) | η top service (conn/s) | max rate with ≥95% |")
    P("|---|---|---:|---:|---:|---:|")
    for t, (label, _f, _m) in TESTS.items():
        ts = vals.get(("capacity", f"test{t}.t_service_ms"))
        if ts is None:
            continue
        P(f"| {t} | {label} | {ts:.1f} | {vals[('capacity', f'test{t}.eta_per_s')]:.0f} | "
          f"{vals[('capacity', f'test{t}.eta_top_service_per_s')]:.0f} | "
          f"{vals[('capacity', f'test{t}.max_rate_95pct_per_s')]:g} |")
    P()
    P("Failures and rgw counters per point (counts; rgw: growth during the point, after pending reservations expired):")
    P()
    P("| test | rate | attempts | ok % | FQDN ok % | SFQDN ok % | dns timeout | servfail (<10 ms) | shared answer | connect | wrong host "
      "| dns p50 ms | rgw queries | reservations | denied (exhausted) | claims | unclaimed |")
    P("|---|---:|" + "---:|" * 15)
    for t in TESTS:
        scen = f"capacity_test{t}"
        for r in rates_in(vals, t):
            g = group_of(r)
            v = lambda m, d=None: vals.get((scen, f"{g}.{m}"), d)  # noqa: E731
            f1 = lambda x: "" if x is None else f"{x:.1f}"  # noqa: E731
            f0 = lambda x: "" if x is None else f"{x:.0f}"  # noqa: E731
            P(f"| {t} | {r:g} | {f0(v('attempts'))} | {f1(v('success_pct'))} | {f1(v('fqdn_success_pct'))} | "
              f"{f1(v('sfqdn_success_pct'))} | {f0(v('fail_dns_timeout'))} | "
              f"{f0(v('fail_dns_servfail'))} ({f0(v('servfail_fast'))}) | "
              f"{f0(v('fail_dns_shared'))} | "
              f"{f0(v('fail_connect'))} | {f0(v('fail_wrong_host'))} | {f1(v('dns_p50_ms'))} | "
              f"{f0(v('rgw_queries'))} | {f0(v('rgw_reservations'))} | {f0(v('rgw_denied'))} | "
              f"{f0(v('rgw_claims'))} | {f0(v('rgw_unclaimed'))} |")
    P()


def parse_ports(s: str) -> list[int]:
    ports = [int(x) for x in s.split(",") if x]
    if len(ports) != 5 or not all(0 < p < 65536 for p in ports):
        raise argparse.ArgumentTypeError("want 5 ports, comma-separated")
    return ports


def parse_sources(s: str) -> list[str]:
    out = []
    for part in s.split(","):
        if "-" in part:
            a, b = part.split("-")
            a, b = ipaddress.IPv4Address(a), ipaddress.IPv4Address(b)
            out += [str(ipaddress.IPv4Address(i)) for i in range(int(a), int(b) + 1)]
        elif part:
            out.append(str(ipaddress.IPv4Address(part)))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--resolver", default="203.0.113.54")
    ap.add_argument("--zone", default="gwa.demo")
    ap.add_argument("--hosts", default="hosta,hostb", type=lambda s: s.split(","))
    ap.add_argument("--names-per-host", type=int, default=1,
                    help="DNS labels per host: the host and N-1 aliases host-001.. (see capacity.sh)")
    ap.add_argument("--sources", default="203.0.113.10,203.0.113.100-203.0.113.131", type=parse_sources,
                    help="client source addresses (comma list, a-b ranges)")
    ap.add_argument("--tests", default="1,2,3,4", type=lambda s: [int(x) for x in s.split(",")])
    ap.add_argument("--rates", default="10,20,40,60,80,120,160,240,320",
                    type=lambda s: [float(x) for x in s.split(",")], help="offered conn/s, comma-separated")
    ap.add_argument("--duration", type=float, default=10.0, help="seconds of arrivals per point")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--arrivals", choices=["poisson", "uniform"], default="poisson")
    ap.add_argument("--dns-timeout", type=float, default=1.0)
    ap.add_argument("--conn-timeout", type=float, default=0.95,
                    help="seconds for the data flow (default 0.95: the socket is closed before "
                         "the kernel's first SYN retransmission at 1 s, so each connection sends one "
                         "first packet; a late retransmitted SYN would claim a LATER reservation of "
                         "the same address and reach another host)")
    ap.add_argument("--tcp-ports", type=parse_ports, default=parse_ports("7101,7102,7103,7104,7105"),
                    help="the 5 SFQDN TCP ports, most popular first")
    ap.add_argument("--udp-ports", type=parse_ports, default=parse_ports("7101,7102,7103,7104,7105"),
                    help="the 5 SFQDN UDP ports, most popular first")
    ap.add_argument("--fqdn-service", default="tcp/7101",
                    type=lambda s: (s.split("/")[0], int(s.split("/")[1])),
                    help="what FQDN connections connect to")
    ap.add_argument("--pool-size", type=int, default=3)
    ap.add_argument("--tmax", type=float, default=2.0)
    ap.add_argument("--delay-ms", type=float, default=25.0, help="one-way delay on the router (for labels)")
    ap.add_argument("--max-inflight", type=int, default=3000)
    ap.add_argument("--allow-tuple-reuse", action="store_true",
                    help="do not avoid reusing the 5-tuple of a flow from the last 200 s")
    ap.add_argument("--rgw-socket", default="", help="rgw control socket (counters per point)")
    ap.add_argument("--unbound-conf", default="", help="unbound.conf (stats, flush between points)")
    ap.add_argument("--csv", default="")
    ap.add_argument("--png", default="")
    ap.add_argument("--plot-only", metavar="CSV", help="only draw the PNG (and summary) from this CSV")
    ap.add_argument("--serve", metavar="NAME",
                    help="instead: run the TCP banner servers of host NAME on --tcp-ports")
    args = ap.parse_args()

    if args.serve:
        try:
            asyncio.run(serve_banners(args.serve, args.tcp_ports))
        except KeyboardInterrupt:
            pass
        return 0

    if args.plot_only:
        rows = read_csv(args.plot_only)
        print_summary(rows, args)
        if args.png:
            plot(rows, args.png, args)
        return 0

    if args.rounds < 1 or args.duration <= 0 or not args.rates or min(args.rates) <= 0:
        ap.error("rounds >= 1, duration > 0 and positive rates, please")
    # every connection holds up to two sockets; the default 1024 is too few at high rates
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, max(soft, 4 * args.max_inflight + 256))
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))

    rows = measure(args)
    if args.csv:
        write_csv(args.csv, rows)
    print_summary(rows, args)
    print(f"Measured in {args._elapsed:.0f} s.")
    if args.png:
        plot(rows, args.png, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
