"""Resilience of the Realm Gateway with real programs on both ends (hardening issue):

- kill -9 of the daemon while several long-lived TCP flows stream data to
  hosta and hostb and a UDP flow runs: every flow keeps going while the daemon
  is dead and after it restarts; reservations expire in the kernel without it;
  the restart reconciles the table; afterwards new reservations bind to the
  right hosts (each host's server answers with its own name);
- a reload (SIGHUP and `rgw reload`) that removes a host and adds a new name
  for an existing machine: the new name answers, the removed one is NXDOMAIN,
  streaming flows (also to the removed host) are untouched, a pending
  reservation of a host that stays is still claimable after the reload, the
  removed host's pending reservation is cancelled.

test_gateway.py already covers a single idle flow across SIGTERM/SIGKILL
restarts and a rename reload; these tests add load, concurrency and the
pending reservations.
"""

from __future__ import annotations

import ipaddress
import os
import re
import signal
import time

import pytest

from rgwproc import Rgw, config_text, rgw_binary

GW = "198.51.100.2"
POOL = ipaddress.ip_network("198.51.100.16/28")

# One flow, run inside the client namespace. TCP: connects to the echo
# service (tcp/7 answers the host name, then echoes), checks the banner, then
# sends a 1 KB line every 50 ms and expects it echoed byte for byte. UDP:
# sends a datagram every 50 ms to udp/7 (replies with the host name).
# Prints one line per exchange: "ok N", "lost N" (UDP only) or "error ...";
# "done N" at the end. Stops when the stop file exists or after `limit` s.
STREAM = r"""
import os, socket, sys, time
proto, dst, port, stop, limit = sys.argv[1:6]
deadline = time.monotonic() + float(limit)
n = 0
try:
    if proto == "tcp":
        s = socket.create_connection((dst, int(port)), timeout=5)
        f = s.makefile("rb")
        print("banner", f.readline().decode().strip(), flush=True)
        while not os.path.exists(stop) and time.monotonic() < deadline:
            msg = b"seq %d " % n + b"x" * 1000 + b"\n"
            s.sendall(msg)
            got = f.readline()
            if got != msg:
                print("error bad echo", n, len(got), flush=True)
                break
            n += 1
            print("ok", n, flush=True)
            time.sleep(0.05)
    else:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.connect((dst, int(port)))
        s.settimeout(1)
        while not os.path.exists(stop) and time.monotonic() < deadline:
            s.send(b"seq %d\n" % n)
            try:
                got = s.recv(100)
                if n == 0:
                    print("banner", got.decode().strip(), flush=True)
                print("ok", n + 1, flush=True)
            except socket.timeout:
                print("lost", n + 1, flush=True)
            n += 1
            time.sleep(0.05)
except Exception as e:
    print("error", type(e).__name__, e, flush=True)
print("done", n, flush=True)
"""


def resolve(topo, name):
    ans = topo.dig("cli", name, server=GW, timeout=3)
    assert ans, f"no answer for {name}"
    assert ipaddress.ip_address(ans[-1]) in POOL, f"{name} -> {ans[-1]}"
    return ans[-1]


class Flows:
    """Long-lived flows from the client namespace, each through its own reservation."""

    def __init__(self, topo, tag):
        self.topo = topo
        self.stop_file = os.path.join(topo.state_dir, f"stop-{tag}")
        if os.path.exists(self.stop_file):
            os.unlink(self.stop_file)
        self.flows = []  # (name, proto, expected host, process)

    def start(self, name, proto, port, expect):
        addr = resolve(self.topo, name)
        p = self.topo.popen("cli", ["/usr/bin/python3", "-u", "-c", STREAM, proto, addr, str(port),
                                    self.stop_file, "120"])
        # Keyed by position too: the same name twice is two flows.
        self.flows.append((f"{name}#{len(self.flows)}", proto, expect, p))

    def counts(self):
        out = {}
        for name, proto, expect, p in self.flows:
            log = self.topo.read_log(p)
            oks = [int(m) for m in re.findall(r"(?m)^ok (\d+)$", log)]
            out[name] = max(oks, default=0)
        return out

    def wait_progress(self, base, at_least, timeout, why):
        """Every flow made `at_least` exchanges more than in `base`."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            now = self.counts()
            if all(now[n] >= base.get(n, 0) + at_least for n in now):
                return now
            time.sleep(0.1)
        raise AssertionError(f"{why}: flows stalled: before {base}, now {self.counts()}\n{self.logs()}")

    def logs(self):
        return "\n".join(f"--- {n}:\n{self.topo.read_log(p)[-600:]}" for n, _, _, p in self.flows)

    def finish(self, max_lost=3):
        """Stops the flows; every one ended cleanly, saw its own host, lost at most `max_lost` datagrams."""
        open(self.stop_file, "w").close()
        for name, proto, expect, p in self.flows:
            p.wait(15)
            log = self.topo.read_log(p)
            assert "error" not in log, f"{name}: {log[-800:]}"
            assert re.search(r"(?m)^done \d+$", log), f"{name}: {log[-800:]}"
            banner = re.search(r"(?m)^banner (\S+)", log)
            assert banner and banner.group(1) == expect, f"{name} reached {banner and banner.group(1)}, not {expect}"
            lost = len(re.findall(r"(?m)^lost ", log))
            assert lost <= max_lost, f"{name}: {lost} datagrams lost\n{log[-800:]}"


@pytest.fixture(scope="module")
def gw(topo):
    r = Rgw(topo)
    r.start(config_text(r.state, tmax="3s"))
    try:
        yield r
    finally:
        r.stop()


@pytest.fixture
def fresh(gw, topo):
    if not gw.alive():
        gw.start(config_text(gw.state, tmax="3s"))
    return gw


def set_elements(topo, name):
    out = topo.run("gw", ["nft", "list", "set", "ip", "rgw", name]).stdout
    m = re.search(r"elements = \{([^}]*)\}", out)
    return m.group(1).strip() if m else ""


def owner(topo, addr, port=8, proto="tcp"):
    """First word of what the server behind addr:port answers (its host name), or None."""
    if proto == "tcp":
        got = topo.tcp_exchange("cli", addr, port, timeout=3)
    else:
        got = topo.udp_exchange("cli", addr, port, timeout=3)
    return got.split()[0].decode() if got else None


def test_kill9_during_traffic_flows_continue_and_nothing_is_misbound(topo, fresh):
    flows = Flows(topo, "kill9")
    for name, proto, port, expect in [
        ("tcp7.hosta.gwa.demo", "tcp", 7, "hosta"),
        ("tcp7.hosta.gwa.demo", "tcp", 7, "hosta"),
        ("tcp7.hostb.gwa.demo", "tcp", 7, "hostb"),
        ("tcp7.hostb.gwa.demo", "tcp", 7, "hostb"),
        ("echo.hosta.gwa.demo", "udp", 7, "hosta"),
    ]:
        flows.start(name, proto, port, expect)
    try:
        base = flows.wait_progress({}, 10, 15, "before the kill")
        # A pending reservation of hosta at the moment of the crash.
        pending = resolve(topo, "hosta.gwa.demo")
        assert pending in set_elements(topo, "resv_addr")

        fresh.stop(signal.SIGKILL)
        t_kill = time.time()
        base = flows.wait_progress(base, 20, 10, "after kill -9 (daemon dead)")
        # Reservations expire in the kernel on their own (Tmax 3 s).
        time.sleep(max(0.0, t_kill + 3.5 - time.time()))
        assert set_elements(topo, "resv_addr") == "", "resv_addr did not empty without the daemon"
        assert set_elements(topo, "resv_svc") == "", "resv_svc did not empty without the daemon"
        base = flows.wait_progress(base, 10, 10, "daemon still dead")
        # With no daemon nothing new gets in, established flows keep going.
        assert owner(topo, pending) is None

        fresh.start(config_text(fresh.state, tmax="3s"))
        assert "reconciled=true" in fresh.log(), fresh.log()
        base = flows.wait_progress(base, 20, 10, "after the restart")

        # New reservations bind to the right hosts, several times each.
        for _ in range(3):
            for host in ("hosta", "hostb"):
                a = resolve(topo, f"{host}.gwa.demo")
                assert owner(topo, a, 8) == host, f"{host}.gwa.demo at {a}"
                s = resolve(topo, f"tcp8.{host}.gwa.demo")
                assert owner(topo, s, 8) == host, f"tcp8.{host} at {s}"
                u = resolve(topo, f"udp8.{host}.gwa.demo")
                assert owner(topo, u, 8, "udp") == host, f"udp8.{host} at {u}"
        flows.wait_progress(base, 10, 10, "at the end")
    finally:
        flows.finish()
    counters = fresh.counters()
    assert counters["claims"] >= 18, counters


@pytest.mark.parametrize("how", ["SIGHUP", "cli"])
def test_reload_host_list_keeps_flows_and_valid_reservations(topo, fresh, how):
    """hostb removed, hostd added at hostb's machine: hostd answers, hostb is
    NXDOMAIN, flows to both machines go on, hosta's pending reservation made
    before the reload is claimed after it, hostb's pending one is cancelled."""
    # A longer Tmax, so the reservation made before the reload is still valid after it.
    original = config_text(fresh.state, tmax="6s")
    fresh.stop()
    fresh.start(original)
    flows = Flows(topo, f"reload-{how}")
    flows.start("tcp7.hosta.gwa.demo", "tcp", 7, "hosta")
    flows.start("tcp7.hostb.gwa.demo", "tcp", 7, "hostb")
    flows.start("udp7.hostb.gwa.demo", "udp", 7, "hostb")
    changed = original.replace('name = "hostb"', 'name = "hostd"')
    assert changed != original
    try:
        base = flows.wait_progress({}, 10, 15, "before the reload")
        keep = resolve(topo, "tcp8.hosta.gwa.demo")
        gone = resolve(topo, "hostb.gwa.demo")
        assert gone in set_elements(topo, "resv_addr")
        fresh.config_path.write_text(changed)
        if how == "SIGHUP":
            before = fresh.log().count("configuration reloaded")
            os.kill(fresh.proc.pid, signal.SIGHUP)
            deadline = time.time() + 5
            while fresh.log().count("configuration reloaded") == before and time.time() < deadline:
                time.sleep(0.05)
            assert fresh.log().count("configuration reloaded") > before, fresh.log()
        else:
            cp = topo.run("gw", [str(rgw_binary()), "reload", "--socket", str(fresh.socket)], timeout=10)
            assert 'added: ["hostd"]' in cp.stdout and 'removed: ["hostb"]' in cp.stdout, cp.stdout
        # The pending reservation of a host that stays is still good.
        assert owner(topo, keep, 8) == "hosta", f"pending tcp8.hosta at {keep} lost by the reload"
        # The removed host's pending reservation was cancelled, in the kernel too.
        assert gone not in set_elements(topo, "resv_addr")
        assert owner(topo, gone, 8) is None
        # Names: removed → NXDOMAIN, added → answers, on hostb's machine.
        assert "NXDOMAIN" in topo.dig("cli", "hostb.gwa.demo", server=GW, short=False)
        assert "NXDOMAIN" in topo.dig("cli", "tcp8.hostb.gwa.demo", server=GW, short=False)
        d = resolve(topo, "hostd.gwa.demo")
        assert owner(topo, d, 8) == "hostb", "hostd is hostb's machine"
        a = resolve(topo, "hosta.gwa.demo")
        assert owner(topo, a, 8) == "hosta"
        # Established flows, also those to the removed name, are untouched.
        flows.wait_progress(base, 20, 10, "after the reload")
        assert fresh.alive()
    finally:
        fresh.config_path.write_text(original)
        if fresh.alive():
            topo.run("gw", [str(rgw_binary()), "reload", "--socket", str(fresh.socket)], timeout=10, check=False)
        flows.finish()


# Opens N connections to the DNS TCP port; after a moment reports for each
# whether the server closed it ("closed") or still holds it ("open").
TCP_HOLD = r"""
import socket, sys, time
dst, n = sys.argv[1], int(sys.argv[2])
conns = []
for _ in range(n):
    conns.append(socket.create_connection((dst, 53), timeout=3))
    time.sleep(0.05)
time.sleep(0.5)
out = []
for s in conns:
    s.settimeout(0.3)
    try:
        out.append("closed" if s.recv(10) == b"" else "data")
    except socket.timeout:
        out.append("open")
    except ConnectionResetError:
        out.append("closed")
print(" ".join(out))
"""


def test_limits_are_enforced_and_counted(topo, fresh):
    """[limits]: the pool's pending maximum, the DNS TCP connection maximum
    and the gate queue length are enforced, and what they turn away is counted."""
    limits = "\n[limits]\nmax_pending = 2\ngate_queue_len = 1\ndns_tcp_connections = 2\n"
    fresh.stop()
    fresh.start(config_text(fresh.state, tmax="3s") + limits)
    try:
        # Two pending reservations at most, whatever host or service: the third is denied.
        a = resolve(topo, "hosta.gwa.demo")
        b = resolve(topo, "tcp8.hostb.gwa.demo")
        assert topo.dig("cli", "tcp22.hosta.gwa.demo", server=GW) == []
        c = fresh.counters()
        assert c["denied_pending_limit"] == 1, c
        # Claiming frees the slots again.
        assert owner(topo, a, 8) == "hosta"
        assert owner(topo, b, 8) == "hostb"
        assert owner(topo, resolve(topo, "tcp22.hosta.gwa.demo"), 22) == "hosta-22"

        # Two DNS TCP connections are held; the third and fourth are closed at once.
        cp = topo.run("cli", ["/usr/bin/python3", "-c", TCP_HOLD, GW, "4"], timeout=20)
        assert cp.stdout.split() == ["open", "open", "closed", "closed"], cp.stdout
        assert fresh.counters()["dns_tcp_refused"] == 2
        # A query over TCP works again once they are gone (closed by the client).
        assert topo.dig("cli", "ns.gwa.demo", server=GW, extra=["+tcp"]) == [GW]

        # Gate queue of length 1, daemon stopped (SIGSTOP) so nothing is read:
        # of a burst of first packets to a reserved address one waits, the
        # kernel drops the rest (not fail-open: none reaches the host) and
        # counts them; rgw exports the count once it runs again.
        r = resolve(topo, "hosta.gwa.demo")
        claims = fresh.counters()["claims"]
        os.kill(fresh.proc.pid, signal.SIGSTOP)
        try:
            topo.run("cli", ["timeout", "5", "hping3", "-q", "-S", "-p", "8", "-i", "u1000", "-c", "50", r],
                     timeout=15, check=False)
        finally:
            os.kill(fresh.proc.pid, signal.SIGCONT)
        deadline = time.time() + 3
        while fresh.counters()["gate_queue_dropped"] < 40 and time.time() < deadline:
            time.sleep(0.2)
        c = fresh.counters()
        assert 40 <= c["gate_queue_dropped"] <= 49, c
        assert c["claims"] <= claims + 1, c
    finally:
        fresh.stop()
        fresh.start(config_text(fresh.state, tmax="3s"))


def test_gate_socket_holds_the_whole_queue(topo, fresh):
    """The gate's queue length (limits.gate_queue_len, 4096 by default) is the
    limit, not the daemon's netlink socket: with rgw stopped (SIGSTOP), a
    burst of 2000 first packets to a reserved address all wait in the queue
    (the socket's receive buffer is sized for it; the default ~208 KiB one
    held a few hundred and the kernel counted the rest as user_dropped). Once
    rgw runs again exactly one of them claims, the others are refused."""
    r = resolve(topo, "hosta.gwa.demo")
    before = fresh.counters()
    os.kill(fresh.proc.pid, signal.SIGSTOP)
    try:
        topo.run("cli", ["timeout", "10", "hping3", "-q", "-S", "-p", "8", "-i", "u200", "-c", "2000", r],
                 timeout=20, check=False)
        waiting = 0
        deadline = time.time() + 3
        while time.time() < deadline:
            # The gate's queue is 0 (testbed config: dataplane.queue_num's default).
            text = topo.run("gw", ["cat", "/proc/net/netfilter/nfnetlink_queue"], check=False).stdout
            waiting = max([int(f[2]) for f in map(str.split, text.splitlines()) if f and f[0] == "0"] or [0])
            if waiting >= 1900:
                break
            time.sleep(0.2)
    finally:
        os.kill(fresh.proc.pid, signal.SIGCONT)
    deadline = time.time() + 10
    while fresh.counters()["claims"] == before["claims"] and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)
    c = fresh.counters()
    assert waiting >= 1900, f"only {waiting} of 2000 first packets were waiting in the gate queue"
    assert c["gate_queue_user_dropped"] - before["gate_queue_user_dropped"] == 0, c
    assert c["gate_queue_dropped"] - before["gate_queue_dropped"] == 0, c
    assert c["claims"] - before["claims"] == 1, (before, c)


def conntrack_entries(topo, addr):
    out = topo.run("gw", ["conntrack", "-L", "-d", addr], check=False).stdout
    return [l for l in out.splitlines() if l.strip()]


def foreign_sources(entries):
    """Entries whose original source is not one of the testbed's public
    hosts (203.0.113.0/24): what a spoofed --rand-source flood would leave."""
    return [l for l in entries if not re.search(r"\bsrc=203\.0\.113\.\d+ ", l)]


def synproxy_stats(topo):
    """Sums of /proc/net/stat/synproxy (hex columns, one row per CPU) in the gateway."""
    lines = topo.run("gw", ["cat", "/proc/net/stat/synproxy"]).stdout.split("\n")
    head = lines[0].split()
    sums = dict.fromkeys(head, 0)
    for row in lines[1:]:
        for k, v in zip(head, row.split()):
            sums[k] += int(v, 16)
    return sums


def test_synproxy_spoofed_syn_flood_neither_tracks_nor_claims(topo, fresh):
    """dataplane.synproxy: a spoofed SYN flood (hping3 --rand-source) to a
    reserved pool address creates no conntrack entry and cannot take the
    reservation; the legitimate client that completes the handshake claims
    it, exactly once, and reaches the right host."""
    # Without the proxy the first spoofed SYN takes the reservation: the
    # real client is then turned away.
    r = resolve(topo, "tcp7.hosta.gwa.demo")
    claims = fresh.counters()["claims"]
    topo.run("cli", ["timeout", "5", "hping3", "-q", "-S", "--rand-source", "-p", "7", "-i", "u500",
                     "-c", "200", r], timeout=15, check=False)
    assert fresh.counters()["claims"] == claims + 1
    assert owner(topo, r, 7) is None

    text = config_text(fresh.state, tmax="4s").replace("[control]", "[dataplane]\nsynproxy = true\n\n[control]", 1)
    assert "synproxy = true" in text
    fresh.stop()
    fresh.start(text)
    try:
        assert topo.run("gw", ["sysctl", "-n", "net.netfilter.nf_conntrack_tcp_loose"]).stdout.strip() == "0"
        # Plain use: FQDN and SFQDN reservations over TCP, UDP unchanged.
        for host in ("hosta", "hostb"):
            assert owner(topo, resolve(topo, f"{host}.gwa.demo"), 8) == host
            assert owner(topo, resolve(topo, f"tcp7.{host}.gwa.demo"), 7) == host
            assert owner(topo, resolve(topo, f"udp8.{host}.gwa.demo"), 8, "udp") == host

        r = resolve(topo, "tcp7.hosta.gwa.demo")
        claims = fresh.counters()["claims"]
        tracked = conntrack_entries(topo, r)
        before = synproxy_stats(topo)
        topo.run("cli", ["timeout", "5", "hping3", "-q", "-S", "--rand-source", "-p", "7", "-i", "u500",
                         "-c", "2000", r], timeout=15, check=False)
        after = synproxy_stats(topo)
        # Some random sources (0/8, 127/8, multicast …) never get past the router.
        assert after["syn_received"] - before["syn_received"] >= 1500, (before, after)
        # No entry for any spoofed source; earlier tests' entries may only
        # have expired meanwhile.
        now = conntrack_entries(topo, r)
        assert not foreign_sources(now) and len(now) <= len(tracked), "\n".join(now)
        assert fresh.counters()["claims"] == claims, "a spoofed SYN claimed the reservation"
        # The reservation is still there for the real client.
        assert owner(topo, r, 7) == "hosta"
        c = fresh.counters()
        assert c["claims"] == claims + 1, c
        assert synproxy_stats(topo)["cookie_valid"] > after["cookie_valid"]
        # Single use: a second handshake to the same reservation is not admitted.
        assert owner(topo, r, 7) is None
    finally:
        fresh.stop()
        fresh.start(config_text(fresh.state, tmax="3s"))
    # Off again: the sysctl is back to the default, the chains are gone.
    assert topo.run("gw", ["sysctl", "-n", "net.netfilter.nf_conntrack_tcp_loose"]).stdout.strip() == "1"
    assert "sp_raw" not in topo.run("gw", ["nft", "list", "table", "ip", "rgw"]).stdout
