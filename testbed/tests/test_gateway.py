"""End-to-end tests of the Realm Gateway in the netns testbed, with real peers:
NSD (parent zone), unbound (recursive resolver), dig, socat/Python clients and
servers, ping, traceroute, curl. Each test checks that the bytes arrived at
the right private host (the hosts' servers answer with their own name)."""

from __future__ import annotations

import ipaddress
import json
import os
import random
import re
import signal
import struct
import time

import pytest

from rgwproc import Rgw, config_text, rgw_binary

GW = "198.51.100.2"
POOL = ipaddress.ip_network("198.51.100.16/28")
TMAX = 2.0


@pytest.fixture(scope="module")
def rgw(topo):
    r = Rgw(topo)
    r.start()
    try:
        yield r
    finally:
        r.stop()


@pytest.fixture
def fresh(rgw, topo):
    """A running rgw with no pending reservation and the resolver's infra cache clean."""
    if not rgw.alive():
        rgw.start()
    topo.unbound_control("flush_infra", "all", check=False)
    return rgw


def resolve(topo, name, via_resolver=True):
    server = topo.RES_IP if via_resolver else GW
    ans = topo.dig("cli", name, server=server, timeout=3)
    assert ans, f"no answer for {name} via {server}"
    addr = ans[-1]
    assert ipaddress.ip_address(addr) in POOL, f"{name} -> {addr} is not a pool address"
    return addr


def wait_expired(rgw):
    """Waits until no reservation is pending (Tmax passed)."""
    deadline = time.time() + 3 * TMAX
    while time.time() < deadline:
        if rgw.status()["pool"]["pending"] == 0:
            return
        time.sleep(0.2)
    raise AssertionError("reservations still pending after 3*Tmax")


# ------------------------------------------------------------------ DNS


def test_dig_via_resolver_ttl0_then_tcp_and_udp_reach_hosta(topo, fresh):
    out = topo.dig("cli", "hosta.gwa.demo", server=topo.RES_IP, short=False, timeout=3)
    answers = [l.split() for l in out.splitlines() if l.startswith("hosta.gwa.demo.") and "\tA\t" in l.replace(" ", "\t")]
    assert answers, out
    name, ttl, _cls, _type, addr = answers[0]
    assert ttl == "0", f"TTL must be 0, got {ttl}"
    assert ipaddress.ip_address(addr) in POOL
    # TCP: hosta's port-8 server names itself and the peer it saw (the public client).
    got = topo.tcp_exchange("cli", addr, 8, timeout=3)
    assert got is not None and got.split()[:2] == [b"hosta", topo.CLI_IP.encode()], got
    # A second connection to the same R without a new query is not admitted.
    assert topo.tcp_exchange("cli", addr, 8, timeout=1.5) is None
    # UDP through a fresh whole-address reservation.
    addr = resolve(topo, "hosta.gwa.demo")
    got = topo.udp_exchange("cli", addr, 8, send=b"who\n", timeout=3)
    assert got is not None and got.split()[0] == b"hosta", got


def test_sfqdn_tcp22_and_named_service_reach_the_right_host(topo, fresh):
    wait_expired(fresh)
    a22 = resolve(topo, "tcp22.hosta.gwa.demo")
    assert topo.tcp_exchange("cli", a22, 22, timeout=3) == b"hosta-22\n"
    b22 = resolve(topo, "ssh.hostb.gwa.demo")
    assert topo.tcp_exchange("cli", b22, 22, timeout=3) == b"hostb-22\n"
    # SRV for an explicit service name allocates too; its target is the SFQDN.
    out = topo.dig("cli", "_ssh._tcp.hosta.gwa.demo", "SRV", server=GW, short=False)
    assert "ssh.hosta.gwa.demo." in out and " 22 " in out.replace("\t", " "), out


def test_real_ssh_login_through_a_service_fqdn(topo, fresh):
    """OpenSSH client → sshd.hosta (tcp/2222) → OpenSSH server on hosta."""
    addr = resolve(topo, "sshd.hosta.gwa.demo")
    key = os.path.join(topo.state_dir, "ssh", "client_key")
    cp = topo.run("cli", ["ssh", "-p", "2222", "-i", key, "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
                          "-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=5", f"root@{addr}",
                          "echo $SSH_CONNECTION"], timeout=20)
    client_ip, _cport, server_ip, server_port = cp.stdout.split()
    # sshd ran on hosta (192.168.0.101) and saw the public client itself.
    assert (client_ip, server_ip, server_port) == (topo.CLI_IP, "192.168.0.101", "2222"), cp.stdout


def test_sfqdn_reservations_share_one_address(topo, fresh):
    wait_expired(fresh)
    names = ["tcp22.hosta.gwa.demo", "tcp80.hostb.gwa.demo", "udp8.hosta.gwa.demo", "tcp7.hostb.gwa.demo"]
    addrs = [resolve(topo, n) for n in names]
    assert len(set(addrs)) == 1, f"SFQDNs with different (proto, port) must share R: {addrs}"
    st = fresh.status()
    assert st["pool"]["shared"] == 1 and st["pool"]["pending"] == 4, st["pool"]
    r = addrs[0]
    assert topo.tcp_exchange("cli", r, 22, timeout=3) == b"hosta-22\n"
    assert topo.tcp_exchange("cli", r, 80, timeout=3) == b"hostb-80\n"
    got = topo.udp_exchange("cli", r, 8, timeout=3)
    assert got is not None and got.split()[0] == b"hosta", got
    got = topo.tcp_exchange("cli", r, 7, timeout=3)
    assert got is not None and got.startswith(b"hostb"), got
    # Same (proto, port) for another host needs another address.
    x = resolve(topo, "tcp22.hosta.gwa.demo")
    y = resolve(topo, "tcp22.hostb.gwa.demo")
    assert x != y


def test_authoritative_answers(topo, fresh):
    before_resv = fresh.counters()["reservations"]
    soa = topo.dig("cli", "gwa.demo", "SOA", server=GW, short=False)
    assert "status: NOERROR" in soa and "flags: qr aa" in soa and "SOA\tns.gwa.demo." in soa.replace(" ", "\t"), soa
    ns = topo.dig("cli", "gwa.demo", "NS", server=GW, short=False)
    assert "ns.gwa.demo." in ns and "198.51.100.2" in ns.split("ADDITIONAL SECTION")[-1], ns
    nx = topo.dig("cli", "nosuch.gwa.demo", server=GW, short=False)
    assert "status: NXDOMAIN" in nx and "SOA" in nx.split("AUTHORITY SECTION")[-1], nx
    nodata = topo.dig("cli", "hosta.gwa.demo", "AAAA", server=GW, short=False)
    assert "status: NOERROR" in nodata and "ANSWER: 0" in nodata and "SOA" in nodata, nodata
    refused = topo.dig("cli", "www.example", server=GW, short=False)
    assert "status: REFUSED" in refused, refused
    over_tcp = topo.dig("cli", "gwa.demo", "SOA", server=GW, extra=["+tcp"])
    assert over_tcp and over_tcp[0].startswith("ns.gwa.demo."), over_tcp
    # None of these allocates.
    assert fresh.counters()["reservations"] == before_resv


def test_split_horizon_on_the_lan(topo, fresh):
    assert topo.dig("ha", "hostb.gwa.demo", server=topo.GW_LAN_IP) == ["192.168.0.102"]
    assert topo.dig("ha", "ssh.hosta.gwa.demo", server=topo.GW_LAN_IP) == ["192.168.0.101"]
    # Everything else is forwarded to the upstream resolver.
    assert topo.dig("ha", "www.demo", server=topo.GW_LAN_IP, timeout=4) == [topo.WEB_IP]
    assert topo.dig("ha", "www.demo", server=topo.GW_LAN_IP, extra=["+tcp"], timeout=4) == [topo.WEB_IP]
    c = fresh.counters()
    assert c["dns_forwarded"] >= 2 and c["dns_queries_private"] >= 4


# ------------------------------------------------------------------ pool rules


def test_expiry_after_tmax(topo, fresh):
    wait_expired(fresh)
    before = fresh.counters()["expiries"]
    addr = resolve(topo, "hosta.gwa.demo")
    time.sleep(TMAX + 0.6)
    assert topo.tcp_exchange("cli", addr, 8, timeout=1.5) is None, "late connection must not be admitted"
    assert fresh.counters()["expiries"] >= before + 1
    assert fresh.status()["pool"]["pending"] == 0


RACE_CLIENT = r"""
import socket, select, sys, time, json, errno
dst, port, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
srcs = sys.argv[4:]
socks = []
for s in srcs:
    k = socket.socket(); k.setblocking(False); k.bind((s, 0)); socks.append(k)
for k in socks:                       # all SYNs leave within microseconds
    k.connect_ex((dst, port))
deadline = time.monotonic() + timeout
pending = set(socks); won = []
while pending and time.monotonic() < deadline:
    _, w, _ = select.select([], list(pending), [], max(0, deadline - time.monotonic()))
    for k in w:
        pending.discard(k)
        if k.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
            k.setblocking(True); k.settimeout(2)
            try: data = k.recv(100)
            except OSError: data = b""
            won.append([k.getsockname()[0], data.decode(errors="replace")])
print(json.dumps(won))
"""


def test_single_use_under_simultaneous_first_packets(topo, fresh):
    wait_expired(fresh)
    sources = [f"203.0.113.{100 + i}" for i in range(8)]
    trials, winners_per_trial = 20, []
    claims_before = fresh.counters()["claims"]
    for _ in range(trials):
        addr = resolve(topo, "hosta.gwa.demo", via_resolver=False)
        cp = topo.run("cli", ["/usr/bin/python3", "-c", RACE_CLIENT, addr, "8", "1.0", *sources], timeout=15)
        won = json.loads(cp.stdout)
        winners_per_trial.append(won)
    counts = [len(w) for w in winners_per_trial]
    assert counts == [1] * trials, f"exactly one winner per reservation expected: {counts}"
    for won in winners_per_trial:
        src, banner = won[0]
        # The winner reached hosta, and hosta saw the winner's own source address.
        assert banner.split()[:2] == ["hosta", src], won
    assert fresh.counters()["claims"] - claims_before == trials


def test_pool_exhaustion_drops_excess_and_recovers(topo, rgw):
    """A pool of 3, six concurrent queries: three answers, three silent drops,
    each answered address reaches the host it was asked for."""
    rgw.stop()
    # Tmax 10 s: the reservations must outlive the wait for the unanswered queries.
    text = config_text(rgw.state, pool=["198.51.100.17-198.51.100.19"], tmax="10s")
    text = text.replace("max_pending = 3", "max_pending = 0")
    rgw.start(text)
    try:
        names = ["hosta.gwa.demo", "hostb.gwa.demo"] * 3
        qclient = r"""
import socket, struct, sys, json, time, select
names = sys.argv[2:]
def q(name, qid):
    h = struct.pack(">HHHHHH", qid, 0, 1, 0, 0, 0)
    return h + b"".join(bytes([len(l)]) + l.encode() for l in name.split(".")) + b"\0" + struct.pack(">HH", 1, 1)
socks = []
for i, n in enumerate(names):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.connect((sys.argv[1], 53)); socks.append((s, n, i))
for s, n, i in socks: s.send(q(n, 1000 + i))
res = {}
deadline = time.monotonic() + 3.0   # unanswered queries stay unanswered: waiting longer hides nothing
while time.monotonic() < deadline and len(res) < len(socks):
    r, _, _ = select.select([s for s, _, _ in socks], [], [], 0.1)
    for s in r:
        d = s.recv(512); qid = struct.unpack(">H", d[:2])[0]
        an = struct.unpack(">H", d[6:8])[0]
        res[qid - 1000] = ".".join(str(b) for b in d[-4:]) if an else None
print(json.dumps({names[i] + "#" + str(i): res.get(i) for i in range(len(names))}))
"""
        cp = topo.run("cli", ["/usr/bin/python3", "-c", qclient, GW, *names], timeout=15)
        got = json.loads(cp.stdout)
        answered = {k: v for k, v in got.items() if v}
        assert len(answered) == 3, f"a pool of 3 answers 3 whole-address queries: {got}"
        assert len(set(answered.values())) == 3, answered
        c = rgw.counters()
        assert c["denied_exhausted"] == 3 and c["dns_dropped_denied"] == 3, c
        # Nothing mis-bound: each R reaches exactly the host it was asked for.
        for key, addr in answered.items():
            host = key.split(".")[0]
            got = topo.tcp_exchange("cli", addr, 8, timeout=3)
            assert got is not None and got.split()[0] == host.encode(), (key, addr, got)
        # Claims freed the pool: later queries succeed again.
        for n in ["hosta.gwa.demo", "hostb.gwa.demo", "hosta.gwa.demo"]:
            assert resolve(topo, n, via_resolver=False)
    finally:
        rgw.stop()
        rgw.start()


def test_unreserved_flood_is_dropped_in_the_kernel(topo, fresh):
    wait_expired(fresh)
    before_kernel = fresh.kernel_drops()["unreserved"]
    before_user = fresh.counters()["claim_rejected"]
    flood = r"""
import socket, sys
n = 0
for i in range(200):
    for p in (22, 80, 8):
        s = socket.socket(); s.setblocking(False); s.connect_ex((sys.argv[1], p)); s.close(); n += 1
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.sendto(b"x", (sys.argv[1], 8)); u.close(); n += 1
print(n)
"""
    cp = topo.run("cli", ["/usr/bin/python3", "-c", flood, "198.51.100.20"], timeout=30)
    sent = int(cp.stdout)
    time.sleep(0.3)
    dropped = fresh.kernel_drops()["unreserved"] - before_kernel
    assert dropped >= sent, f"{sent} unreserved packets sent, kernel dropped {dropped}"
    assert fresh.counters()["claim_rejected"] == before_user, "no unreserved packet may reach userspace"


# ------------------------------------------------------------------ ICMP and outbound


def test_inbound_ping_after_dig(topo, fresh):
    addr = resolve(topo, "hostb.gwa.demo")
    out = topo.run("cli", ["ping", "-c", "3", "-i", "0.2", "-W", "1", addr], timeout=10).stdout
    assert " 0% packet loss" in out, out
    ct = topo.run("gw", ["conntrack", "-L", "-p", "icmp"], timeout=5, check=False).stdout
    assert any(f"dst={addr}" in l and "src=192.168.0.102" in l for l in ct.splitlines()), ct


def test_outbound_nat_http_ping_traceroute(topo, fresh):
    page = topo.run("ha", ["curl", "-s", "-m", "5", f"http://{topo.WEB_IP}/"], timeout=10).stdout
    assert "public-web-ok" in page
    # The public server sees the service address (SNAT), not the private one.
    seen = topo.tcp_exchange("hb", topo.WEB_IP, 8, timeout=3)
    assert seen is not None and seen.split()[1] == GW.encode(), seen
    out = topo.run("ha", ["ping", "-c", "2", "-W", "1", topo.WEB_IP], timeout=10).stdout
    assert " 0% packet loss" in out, out
    # Hop 2 is beyond the gateway: its ICMP time-exceeded must traverse the NAT back.
    tr = topo.run("ha", ["traceroute", "-n", "-w", "1", "-q", "1", "-m", "5", topo.WEB_IP], timeout=30).stdout
    hops = [l.split()[1] for l in tr.splitlines()[1:] if len(l.split()) > 1]
    assert hops[:3] == [topo.GW_LAN_IP, topo.RTR_WAN_IP, topo.WEB_IP], tr


MAPPING_HOLDER = r'''
import socket, sys, time, json
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 40000))
s.sendto(b"who\n", (sys.argv[1], 8))          # opens the NAT mapping towards web:8
s.settimeout(3)
data, peer = s.recvfrom(200)
print(json.dumps({"reply": data.decode().strip(), "from": list(peer)}), flush=True)
end = time.time() + float(sys.argv[2])
while time.time() < end:                        # then report anything else that arrives
    s.settimeout(max(0.01, end - time.time()))
    try:
        data, peer = s.recvfrom(200)
        print(json.dumps({"unsolicited": data.decode(errors="replace"), "from": list(peer)}), flush=True)
    except socket.timeout:
        pass
'''


def test_outbound_mapping_filters_by_address_and_port(topo, fresh):
    """RFC 4787 §5 address- and port-dependent filtering: only the exact
    remote (address, port) a private host sent to may answer through its mapping."""
    holder = topo.popen("ha", ["/usr/bin/python3", "-c", MAPPING_HOLDER, topo.WEB_IP, "4"])
    deadline = time.time() + 5
    while '"reply"' not in topo.read_log(holder) and time.time() < deadline:
        time.sleep(0.05)
    first = json.loads(topo.read_log(holder).splitlines()[0])
    who, seen_ip, mapped_port = first["reply"].split()
    assert (who, seen_ip) == ("web", GW), first   # the server saw the SNAT address
    send = "import socket,sys; socket.socket(2,2).sendto(b'intruder', (sys.argv[1], int(sys.argv[2])))"
    # Another address, and the same server from another port: both must be filtered.
    topo.run("cli", ["/usr/bin/python3", "-c", send, GW, mapped_port])
    topo.run("web", ["/usr/bin/python3", "-c", send, GW, mapped_port])
    holder.wait(10)
    unsolicited = [l for l in topo.read_log(holder).splitlines() if "unsolicited" in l]
    # (They are addressed to the gateway itself; without a matching conntrack
    # mapping they never get un-NATed towards the LAN.)
    assert unsolicited == [], unsolicited


# ------------------------------------------------------------------ restart and expiry without the daemon

KEEPALIVE_CLIENT = r"""
import socket, sys, time, os
dst, go = sys.argv[1], sys.argv[2]
s = socket.create_connection((dst, 7), timeout=3)
banner = s.recv(100)
s.sendall(b"before\n"); first = s.recv(100)
print("phase1", banner.decode().strip(), first.decode().strip(), flush=True)
deadline = time.time() + 30
while not os.path.exists(go) and time.time() < deadline:
    time.sleep(0.05)
s.settimeout(5)
s.sendall(b"after\n"); second = s.recv(100)
print("phase2", second.decode().strip(), flush=True)
"""


@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
def test_established_flow_survives_restart(topo, fresh, how):
    addr = resolve(topo, "tcp7.hosta.gwa.demo")
    go = os.path.join(topo.state_dir, f"go-{how}")
    client = topo.popen("cli", ["/usr/bin/python3", "-c", KEEPALIVE_CLIENT, addr, go])
    deadline = time.time() + 10
    while "phase1" not in topo.read_log(client) and time.time() < deadline:
        time.sleep(0.05)
    assert "phase1 hosta before" in topo.read_log(client), topo.read_log(client)
    fresh.stop(getattr(signal, how))
    if how == "SIGKILL":
        # Crash: the table stays; the new daemon must reconcile it, not fail.
        tables = topo.run("gw", ["nft", "list", "tables"]).stdout
        assert "table ip rgw" in tables
    fresh.start()
    assert ("reconciled=true" in fresh.log()) == (how == "SIGKILL"), fresh.log()
    open(go, "w").close()
    client.wait(15)
    log = topo.read_log(client)
    assert "phase2 after" in log, log


def test_reservation_expires_in_the_kernel_without_the_daemon(topo, fresh):
    addr = resolve(topo, "hosta.gwa.demo", via_resolver=False)
    elems = topo.run("gw", ["nft", "list", "set", "ip", "rgw", "resv_addr"]).stdout
    assert addr in elems, elems
    fresh.stop(signal.SIGKILL)
    try:
        time.sleep(TMAX + 0.5)
        elems = topo.run("gw", ["nft", "list", "set", "ip", "rgw", "resv_addr"]).stdout
        assert addr not in elems, f"element must expire by itself: {elems}"
        # With no daemon bound to the queue, nothing to a pool address gets through.
        assert topo.tcp_exchange("cli", addr, 8, timeout=1.5) is None
    finally:
        fresh.start()


# ------------------------------------------------------------------ bad input


def _garbage_packets():
    rnd = random.Random(1234)
    pkts = [b"", b"\x00", b"\x12\x34\x01\x00\x00\x01", os.urandom(11)]
    hdr = struct.pack(">HHHHHH", 0xBEEF, 0x0100, 1, 0, 0, 0)
    pkts.append(hdr + b"\x40" + b"a" * 64 + b"\x00\x00\x01\x00\x01")  # label of 64 bytes
    long_name = b"".join(b"\x3f" + b"b" * 63 for _ in range(5)) + b"\x00"  # 320-byte name
    pkts.append(hdr + long_name + b"\x00\x01\x00\x01")
    pkts.append(hdr + b"\xc0\x0c\x00\x01\x00\x01")  # compression pointer to itself
    pkts.append(struct.pack(">HHHHHH", 1, 0x0100, 40, 0, 0, 0) + b"\x00\x00\x01\x00\x01")  # 40 questions promised
    for _ in range(300):
        pkts.append(bytes(rnd.getrandbits(8) for _ in range(rnd.randint(0, 600))))
    return pkts


def test_bad_dns_input_gets_formerr_or_counted_drop(topo, fresh):
    before = fresh.counters()
    pkts = _garbage_packets()
    sender = r"""
import socket, sys, json
pkts = [bytes.fromhex(h) for h in json.load(sys.stdin)]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(0.05)
for p in pkts:
    s.sendto(p, (sys.argv[1], 53))
    try: s.recv(4096)
    except OSError: pass
t = socket.create_connection((sys.argv[1], 53), timeout=2)   # and a broken TCP frame
t.sendall(b"\x00\x20" + b"\xff" * 32); t.settimeout(1)
try: t.recv(100)
except OSError: pass
print("sent", len(pkts))
"""
    topo.run("cli", ["/usr/bin/python3", "-c", sender, GW], input=json.dumps([p.hex() for p in pkts]), timeout=60)
    assert fresh.alive(), fresh.log()
    after = fresh.counters()
    handled = sum(after[k] - before[k] for k in ("dns_formerr", "dns_dropped_malformed", "dns_dropped_not_query",
                                                  "dns_nxdomain", "dns_refused", "dns_notimp", "dns_nodata",
                                                  "dns_answers_static", "dns_answers_allocated", "dns_dropped_denied"))
    assert after["dns_queries_public"] - before["dns_queries_public"] >= len(pkts) - 1
    assert after["dns_formerr"] > before["dns_formerr"] and after["dns_dropped_malformed"] > before["dns_dropped_malformed"]
    assert handled >= len(pkts) - 1
    # Unknown types get NODATA, and the daemon still answers normally.
    out = topo.dig("cli", "hosta.gwa.demo", "TYPE65280", server=GW, short=False)
    assert "status: NOERROR" in out and "ANSWER: 0" in out, out
    assert resolve(topo, "hostb.gwa.demo", via_resolver=False)


@pytest.mark.parametrize("mutation,key", [
    (('"192.168.0.101"', '"10.9.9.9"'), "hosts[0].ipv4"),
    (('tmax = "2s"', 'tmax = "forever"'), "tmax"),
    (('"198.51.100.17-198.51.100.22"', '"198.51.100.300"'), "pool.addresses[0]"),
    (('ssh = "tcp/22"', 'ssh = "tcp/99999"'), "hosts[0].services.ssh"),
    (('[wan]', '[wan]\nmtu = 1500'), "mtu"),
])
def test_bad_configuration_is_named(topo, tmp_path, mutation, key):
    good = config_text(tmp_path)
    text = good.replace(*mutation)
    assert text != good, "the mutation must apply to the shipped configuration"
    path = tmp_path / "bad.toml"
    path.write_text(text)
    for cmd in (["check"], ["run"]):
        # Inside the gateway namespace: even a wrongly valid file could not touch the host.
        cp = topo.run("gw", [str(rgw_binary()), *cmd, "--config", str(path)], timeout=20, check=False)
        assert cp.returncode != 0
        assert str(path) in cp.stderr and key in cp.stderr, cp.stderr
        assert "panicked" not in cp.stderr


def test_second_instance_refuses_and_leaves_the_first_intact(topo, fresh):
    wait_expired(fresh)
    addr = resolve(topo, "hosta.gwa.demo", via_resolver=False)
    # Same control socket: the instance lock refuses it.
    cp = topo.run("gw", [str(rgw_binary()), "run", "--config", str(fresh.config_path)], timeout=20, check=False)
    assert cp.returncode != 0 and "another rgw" in cp.stderr, cp.stderr
    # Another socket, same namespace: the NFQUEUE bind refuses it before nftables is touched.
    other = fresh.state / "second.toml"
    other.write_text(fresh.config_path.read_text().replace("rgw.sock", "second.sock"))
    cp = topo.run("gw", [str(rgw_binary()), "run", "--config", str(other)], timeout=20, check=False)
    assert cp.returncode != 0 and "another rgw" in cp.stderr, cp.stderr
    assert "nftables ruleset installed" not in cp.stderr
    # Another socket and another queue number: the (namespace, table) lock refuses it.
    other.write_text(other.read_text().replace("[control]", "[dataplane]\nqueue_num = 7\n\n[control]"))
    cp = topo.run("gw", [str(rgw_binary()), "run", "--config", str(other)], timeout=20, check=False)
    assert cp.returncode != 0 and "another rgw uses table ip rgw" in cp.stderr, cp.stderr
    # The first daemon's pending reservation survived both attempts.
    got = topo.tcp_exchange("cli", addr, 8, timeout=3)
    assert got is not None and got.split()[0] == b"hosta", got
    assert fresh.alive()


# ------------------------------------------------------------------ operations: bindings, reload, log level


def rgw_cli(topo, rgw, *args, check=True):
    return topo.run("gw", [str(rgw_binary()), *args, "--socket", str(rgw.socket)], timeout=20, check=check)


def test_bindings_list_the_claimed_flow(topo, fresh):
    addr = resolve(topo, "tcp7.hosta.gwa.demo")
    client = topo.popen("cli", ["/usr/bin/python3", "-c", KEEPALIVE_CLIENT, addr, os.path.join(topo.state_dir, "go-bindings")])
    deadline = time.time() + 10
    while "phase1" not in topo.read_log(client) and time.time() < deadline:
        time.sleep(0.05)
    pending_addr = resolve(topo, "hostb.gwa.demo")
    v = json.loads(rgw_cli(topo, fresh, "bindings", "--json").stdout)
    mine = [b for b in v["claimed"] if b["public"] == addr and b["public_port"] == 7]
    assert len(mine) == 1, v
    b = mine[0]
    assert (b["host"], b["private"], b["remote"], b["proto"]) == ("hosta", "192.168.0.101", topo.CLI_IP, "tcp"), b
    assert any(p["host"] == "hostb" and p["address"] == pending_addr for p in v["pending"]), v
    text = rgw_cli(topo, fresh, "bindings").stdout
    assert f"{addr}:7 <- {topo.CLI_IP}" in text and "hosta 192.168.0.101:7" in text, text
    open(os.path.join(topo.state_dir, "go-bindings"), "w").close()
    client.wait(15)


def test_log_level_changes_at_run_time(topo, fresh):
    out = rgw_cli(topo, fresh, "log-level", "debug").stdout
    assert "ok: true" in out, out
    cp = rgw_cli(topo, fresh, "log-level", "no=such=filter[", check=False)
    assert cp.returncode != 0 and "invalid filter" in cp.stderr + cp.stdout, (cp.stdout, cp.stderr)
    rgw_cli(topo, fresh, "log-level", "info")


def test_reload_changes_hosts_without_touching_flows(topo, fresh):
    """hostb is removed, hostc (at hostb's address) added: hostc answers, hostb
    is gone, an established flow to hosta continues, a bad change is refused."""
    addr = resolve(topo, "tcp7.hosta.gwa.demo")
    go = os.path.join(topo.state_dir, "go-reload")
    client = topo.popen("cli", ["/usr/bin/python3", "-c", KEEPALIVE_CLIENT, addr, go])
    deadline = time.time() + 10
    while "phase1" not in topo.read_log(client) and time.time() < deadline:
        time.sleep(0.05)
    assert "phase1 hosta before" in topo.read_log(client)
    original = fresh.config_path.read_text()
    try:
        changed = original.replace('name = "hostb"', 'name = "hostc"')
        assert changed != original
        fresh.config_path.write_text(changed)
        os.kill(fresh.proc.pid, signal.SIGHUP)          # SIGHUP reloads like `rgw reload`
        deadline = time.time() + 5
        while "configuration reloaded" not in fresh.log() and time.time() < deadline:
            time.sleep(0.05)
        assert "configuration reloaded" in fresh.log(), fresh.log()
        assert topo.dig("cli", "hostb.gwa.demo", server=GW) == []
        assert "NXDOMAIN" in topo.dig("cli", "hostb.gwa.demo", server=GW, short=False)
        c = resolve(topo, "hostc.gwa.demo", via_resolver=False)
        got = topo.tcp_exchange("cli", c, 8, timeout=3)
        assert got is not None and got.split()[0] == b"hostb", got   # hostb's machine now answers as hostc
        # A change that needs a restart is refused and the running configuration stays.
        fresh.config_path.write_text(changed.replace("198.51.100.17-198.51.100.22", "198.51.100.17-198.51.100.21"))
        cp = rgw_cli(topo, fresh, "reload", check=False)
        assert cp.returncode != 0 and "pool.addresses" in cp.stderr + cp.stdout, (cp.stdout, cp.stderr)
        assert resolve(topo, "hostc.gwa.demo", via_resolver=False)
        # Back to the original file through the CLI.
        fresh.config_path.write_text(original)
        out = rgw_cli(topo, fresh, "reload").stdout
        assert 'added: ["hostb"]' in out and 'removed: ["hostc"]' in out, out
        assert resolve(topo, "hostb.gwa.demo", via_resolver=False)
    finally:
        fresh.config_path.write_text(original)
        open(go, "w").close()
        client.wait(15)
    assert "phase2 after" in topo.read_log(client), topo.read_log(client)


def scrape(topo):
    out = topo.run("gw", ["curl", "-s", "-m", "5", "http://127.0.0.1:9464/metrics"]).stdout
    samples = {}
    for line in out.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


def test_prometheus_endpoint_counts_claims(topo, fresh):
    before = scrape(topo)
    assert before["rgw_pool_size"] == 6
    assert 'rgw_kernel_dropped_packets_total{reason="unreserved"}' in before
    addr = resolve(topo, "hosta.gwa.demo")
    assert topo.tcp_exchange("cli", addr, 8, timeout=3) is not None
    after = scrape(topo)
    assert after["rgw_claims_total"] == before["rgw_claims_total"] + 1
    assert after["rgw_reservations_total"] >= before["rgw_reservations_total"] + 1
    assert after['rgw_dns_queries_total{view="public"}'] > before['rgw_dns_queries_total{view="public"}']


def test_binding_log_records_each_claim(topo, fresh):
    log = fresh.state / "bindings.log"
    addr = resolve(topo, "tcp8.hostb.gwa.demo")          # through the real resolver
    got = topo.tcp_exchange("cli", addr, 8, src="203.0.113.107", timeout=3)
    assert got is not None
    _, _, peer_port = got.split()                         # hostb saw the client's source port
    expected = f" {addr} tcp 8 hostb 192.168.0.102 from=203.0.113.107:{peer_port.decode()} res={topo.RES_IP} ecs=-"
    deadline = time.time() + 5                            # the writer flushes every second
    while time.time() < deadline and not (log.exists() and expected in log.read_text()):
        time.sleep(0.1)
    assert expected in log.read_text(), log.read_text()[-2000:]
    line = [l for l in log.read_text().splitlines() if expected in l][-1]
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z ", line), line
    # logrotate-style: rename, SIGHUP, the next claim goes to a new file.
    os.rename(log, fresh.state / "bindings.log.old")
    os.kill(fresh.proc.pid, signal.SIGHUP)
    time.sleep(0.5)
    addr = resolve(topo, "hosta.gwa.demo", via_resolver=False)
    assert topo.tcp_exchange("cli", addr, 8, timeout=3) is not None
    deadline = time.time() + 5
    while time.time() < deadline and not (log.exists() and f" {addr} tcp 8 hosta " in log.read_text()):
        time.sleep(0.1)
    assert f" {addr} tcp 8 hosta 192.168.0.101 from={topo.CLI_IP}:" in log.read_text()
    assert fresh.status()["binding_log"]["dropped"] == 0


def test_host_limit_drops_the_query_beyond_max_pending(topo, fresh):
    """hosta allows 3 pending reservations (max_pending = 3): a 4th query is not answered."""
    wait_expired(fresh)
    before = fresh.counters()
    answers = [topo.dig("cli", f"tcp{p}.hosta.gwa.demo", server=GW, timeout=1) for p in (1001, 1002, 1003, 1004)]
    assert [bool(a) for a in answers] == [True, True, True, False], answers
    after = fresh.counters()
    assert after["denied_host_limit"] == before["denied_host_limit"] + 1
    assert after["dns_dropped_denied"] == before["dns_dropped_denied"] + 1
    # Another host is not affected.
    assert resolve(topo, "hostb.gwa.demo", via_resolver=False)


def test_www_proxy_routes_http_by_host_and_tls_by_sni(topo, fresh):
    """curl → www.hosta.gwa.demo (resolver → gateway's service address) → the
    built-in proxy → hosta's own web server; HTTPS is not terminated: curl
    verifies hosta's own certificate through the gateway."""
    assert topo.dig("cli", "www.hosta.gwa.demo", server=topo.RES_IP) == [GW]
    before = fresh.counters()["reservations"]
    page = topo.run("cli", ["curl", "-s", "-m", "5", "http://www.hosta.gwa.demo/"]).stdout
    assert page.startswith("hosta-www over http host=www.hosta.gwa.demo"), page
    cert = os.path.join(topo.state_dir, "web", "hostb.crt")
    page = topo.run("cli", ["curl", "-s", "-m", "5", "--cacert", cert, "https://www.hostb.gwa.demo/"]).stdout
    assert page.startswith("hostb-www over https host=www.hostb.gwa.demo"), page
    # An unknown name gets 404 from the proxy itself, not a host's page.
    cp = topo.run("cli", ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-m", "5",
                          "-H", "Host: www.nosuch.gwa.demo", f"http://{GW}/"])
    assert cp.stdout == "404", cp.stdout
    # From the LAN (private view, the LAN's DNS): the same proxy serves hostb's site to hosta.
    page = topo.run("ha", ["curl", "-s", "-m", "5", "http://www.hostb.gwa.demo/"]).stdout
    assert page.startswith("hostb-www over http host=www.hostb.gwa.demo"), page
    assert fresh.counters()["reservations"] == before, "www names never allocate"
    proxy = fresh.status()["proxy"]
    assert proxy["routed"] >= 2 and proxy["unknown_name"] >= 1, proxy
