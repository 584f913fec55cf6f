"""The ALG across families (issue 4, rows "FTP 4/6" and "SIP 4/6 through the
ALG" of the seed's RGW64 table): FTP and SIP between the IPv6-only private
host hostc and IPv4 peers through our translator (TUN + rgw-xlat) and the ALG
engine, with real programs: pyftpdlib (peers/ftp_server.py), curl, lftp, sipp.

The ALG sees the translated IPv4 packets (TUN -> WAN, and WAN -> TUN): the
private address is hostc's proxy IPv4 10.64.0.1, the engine learns hostc's
IPv6 address from the translator's binding and the /96 prefix64.

  FTP 6->4  hostc -> v4only.demo (proxy ULA fd64:64::203.0.113.80) -> web.
            Active: `EPRT |2|<hostc>|p|` becomes `EPRT |1|<service address>|p|`
            with a pinhole to 10.64.0.1. Passive: EPSV/229, no rewrite.
  FTP 4->6  cli -> pool address of hostc.gwa.demo -> pyftpdlib on hostc.
            Passive: EPSV, pinhole for the 229's port to 10.64.0.1. PASV
            (curl --disable-epsv, lftp ftp:prefer-epsv no): an IPv6 server
            cannot answer it with an IPv4 address, so the client's `PASV`
            reaches hostc as `EPSV` and its `229 (|||p|)` reaches the client
            as `227 (<pool address>,p)`, pinhole to 10.64.0.1. Active:
            the client's `PORT`/`EPRT |1|` naming itself becomes
            `EPRT |2|prefix64::cli|p|` (an IPv6 server refuses the others).
  SIP 6->4  sipp -6 on hostc calls sipp on web: [hostc] in Via/Contact and
            `c=IN IP6 <hostc>` become the service address / `IN IP4`, the
            answer's `IN IP4 web` becomes `IN IP6 prefix64::web`.
  SIP 4->6  sipp on cli calls sipp -6 on hostc through udp5060.hostc.gwa.demo
            (tcp5060.hostc.gwa.demo over TCP).
  Both SIP tests run over UDP and over TCP (sipp -t u1 / -t t1: one
  connection carrying every call, so the ALG rewrites inside a TCP stream
  and the gateway adjusts its sequence numbers; the RTP is UDP either way).

Every test checks the bytes on both ends (sha256 of every file; RTP counted
with tcpdump at both ends) and what each side was told (server and sipp
message logs).
"""

from __future__ import annotations

import hashlib
import ipaddress
import pathlib
import random
import re
import shutil
import subprocess
import time

import pytest

from rgwproc import REPO, rgw64_gateway, work_dir

TESTBED = REPO / "testbed"
PEERS = TESTBED / "peers"
PY = "/usr/bin/python3"

GW = "198.51.100.2"
WEB_IP = "203.0.113.80"
HOSTC_PROXY4 = "10.64.0.1"
PASV_PORTS = "30100-30149"
FILES = 8


# ------------------------------------------------------------------ fixtures


def embed(v4: str) -> str:
    """fd64:64::/96 + v4 (RFC 6052), as the translator and the ALG write it."""
    return str(ipaddress.IPv6Address(int(ipaddress.IPv6Address("fd64:64::")) | int(ipaddress.IPv4Address(v4))))


@pytest.fixture(scope="module")
def six(topo):
    """The IPv6 layer plus rgw with [rgw64] and the ALG; both removed at the end."""
    with rgw64_gateway(topo) as r:
        yield r


@pytest.fixture
def gw64(six, topo):
    if not six.alive():
        pytest.fail(f"rgw died:\n{six.log()}")
    topo.unbound_control("flush_infra", "all", check=False)
    return six


@pytest.fixture
def work(topo, request):
    return work_dir(topo, request, "alg64")


class Procs:
    """Background servers in any namespace (hostc's is not a conftest key),
    logged to a file, stopped by PID (their own process group)."""

    def __init__(self):
        self.procs = []

    def start(self, netns: str, argv, log: pathlib.Path, ready: str, timeout: float = 15):
        f = open(log, "ab")
        p = subprocess.Popen(["ip", "netns", "exec", netns, *map(str, argv)], stdout=f,
                             stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        f.close()
        self.procs.append(p)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if p.poll() is not None:
                raise AssertionError(f"{argv[:3]} exited with {p.returncode}:\n{log.read_text(errors='replace')}")
            if ready in log.read_text(errors="replace"):
                return p
            time.sleep(0.1)
        raise AssertionError(f"{argv[:3]} not ready after {timeout}s:\n{log.read_text(errors='replace')}")

    def stop_all(self):
        import os
        import signal
        for p in self.procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
                try:
                    p.wait(timeout=3)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait(timeout=3)
        self.procs.clear()


@pytest.fixture
def procs():
    p = Procs()
    try:
        yield p
    finally:
        p.stop_all()


def nsrun(netns: str, argv, timeout: float = 60) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(["ip", "netns", "exec", netns, *map(str, argv)], capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"timed out after {timeout}s: {argv}\n{e.stdout}\n{e.stderr}") from None


def make_files(root: pathlib.Path, seed: int) -> dict:
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(FILES):
        # Sizes from empty to several segments' worth.
        (root / f"f{i:02d}.bin").write_bytes(rng.randbytes(rng.choice([0, 1, 1400, 70_000, 300_000])))
    return sha256_tree(root)


def sha256_tree(root: pathlib.Path) -> dict:
    if not root.exists():
        return {}
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.iterdir()) if p.is_file()}


def alg_counters(rgw) -> dict:
    return rgw.status()["alg"]["counters"]


def start_ftp(procs: Procs, netns: str, bind: str, root: pathlib.Path, log: pathlib.Path):
    return procs.start(netns, [PY, "-u", str(PEERS / "ftp_server.py"), bind, "21", str(root),
                               "--passive-ports", PASV_PORTS, "--masquerade", "none", "--duration", "300"],
                       log, "ftp-server ready")


def curl_both_ways(netns: str, url: str, active: bool, local: pathlib.Path, extra=()) -> str:
    """All files of /down in one curl (one control connection), then all of
    local/up into /up in another; returns curl's verbose output."""
    mode = ["--ftp-port", "-"] if active else ["--ftp-pasv"]
    common = ["curl", "-sS", "-v", "--max-time", "60", "--connect-timeout", "10", "-u", "rgw:rgw", *mode, *extra]
    names = [f"f{i:02d}.bin" for i in range(FILES)]
    (local / "down").mkdir(parents=True, exist_ok=True)
    args = []
    for n in names:
        args += [f"{url}/down/{n}", "-o", str(local / "down" / n)]
    cp = nsrun(netns, common + args, timeout=90)
    log = cp.stderr
    assert cp.returncode == 0, f"curl download failed ({cp.returncode}):\n{cp.stderr[-4000:]}"
    glob = "{" + ",".join(names) + "}"
    cp = nsrun(netns, common + ["-T", f"{local / 'up'}/{glob}", f"{url}/up/"], timeout=90)
    log += cp.stderr
    assert cp.returncode == 0, f"curl upload failed ({cp.returncode}):\n{cp.stderr[-4000:]}"
    return log


def lftp_both_ways(netns: str, host: str, active: bool, local: pathlib.Path, settings=()) -> str:
    script = local / "script.lftp"
    debug = local / "lftp-debug.log"
    script.write_text("\n".join([
        "set cmd:fail-exit yes",
        "set ftp:ssl-allow no",
        f"set ftp:passive-mode {'no' if active else 'yes'}",
        *settings,
        "set net:timeout 10",
        "set net:max-retries 2",
        "set net:reconnect-interval-base 2",
        "set xfer:clobber yes",
        f"debug -o {debug} -t 5",
        f"open -u rgw,rgw ftp://{host}",
        f"mirror --no-perms --verbose /down {local / 'down'}",
        f"mirror -R --no-perms --verbose {local / 'up'} /up",
        "quit",
    ]) + "\n")
    cp = nsrun(netns, ["lftp", "-f", str(script)], timeout=120)
    text = debug.read_text(errors="replace") if debug.exists() else ""
    assert cp.returncode == 0, f"lftp failed ({cp.returncode}):\n{cp.stderr[-2000:]}\n--- debug ---\n{text[-4000:]}"
    return text


def server_commands(log: str) -> list:
    """(command, argument) of every data-connection command the server received."""
    return re.findall(r"<- (PORT|EPRT|PASV|EPSV)\b ?(.*)", log)


def setup_files(work: pathlib.Path):
    srv, loc = work / "server", work / "client"
    want_down = make_files(srv / "down", seed=11)
    (srv / "up").mkdir()
    want_up = make_files(loc / "up", seed=12)
    return srv, loc, want_down, want_up


# ------------------------------------------------------------------ FTP 6 -> 4


@pytest.mark.parametrize("client", ["curl", "lftp"])
@pytest.mark.parametrize("mode", ["active", "passive"])
def test_ftp_ipv6_host_to_ipv4_server(gw64, topo, work, procs, client, mode):
    """hostc (IPv6 only) <-> pyftpdlib on web (IPv4 only), by the synthesised
    name: FILES files down and FILES up, byte-identical. Active needs the ALG
    to turn `EPRT |2|hostc|p|` into `EPRT |1|service address|p|`."""
    active = mode == "active"
    srv, loc, want_down, want_up = setup_files(work)
    before = alg_counters(gw64)
    log = work / "ftp-server.log"
    start_ftp(procs, topo.NS_WEB, WEB_IP, srv, log)
    if client == "curl":
        out = curl_both_ways(topo.NS_HC, "ftp://v4only.demo", active, loc)
    else:
        out = lftp_both_ways(topo.NS_HC, "v4only.demo", active, loc)
    procs.stop_all()
    assert sha256_tree(loc / "down") == want_down, "downloaded files differ from the server's"
    assert sha256_tree(srv / "up") == want_up, "uploaded files differ from the client's"
    srv_log = log.read_text(errors="replace")
    cmds = server_commands(srv_log)
    assert len(cmds) >= 2 * FILES - 2, f"expected a data command per file, saw {cmds}"
    kinds = {c for c, _ in cmds}
    # The server saw the client as the gateway's service address (NAT64 + SNAT).
    assert f"{GW}:" in srv_log and HOSTC_PROXY4 not in srv_log, srv_log[:2000]
    after = alg_counters(gw64)
    if active:
        assert kinds == {"EPRT"}, kinds
        for _, arg in cmds:
            # Rewritten to IPv4 and the service address, never hostc's IPv6.
            _, af, addr, _port, _ = arg.split(arg[0])
            assert (af, addr) == ("1", GW), f"server got EPRT {arg}"
        # The client sent IPv6 EPRTs (what the ALG had to convert).
        sent = re.findall(r"EPRT \|2\|([0-9a-fA-F:]+)\|", out)
        assert sent and set(sent) == {topo.HC_IP6}, sent[:5]
        assert after["rewrites"] - before["rewrites"] >= len(cmds), (before, after)
        assert after["pinholes_written"] - before["pinholes_written"] >= len(cmds), (before, after)
    else:
        assert kinds == {"EPSV"}, kinds
        # EPSV needs no rewrite; the control flow still went through the engine.
        assert after["rewrites"] == before["rewrites"], (before, after)
        assert after["packets"] > before["packets"], (before, after)
    assert after["pinhole_errors"] == before["pinhole_errors"], (before, after)


def test_ftp_active_ipv6_eprt_fails_without_rewrite_control(gw64, topo, work, procs):
    """Control: what the server does with an unconverted `EPRT |2|…|` (sent on
    a non-ALG port, so the gateway does not touch it): refused. This is the
    failure the ALG prevents in test_ftp_ipv6_host_to_ipv4_server[active]."""
    srv, loc, _, _ = setup_files(work)
    log = work / "ftp-server.log"
    procs.start(topo.NS_WEB, [PY, "-u", str(PEERS / "ftp_server.py"), WEB_IP, "2121", str(srv),
                              "--passive-ports", PASV_PORTS, "--masquerade", "none", "--duration", "300"],
                log, "ftp-server ready")
    cp2 = nsrun(topo.NS_HC, ["curl", "-sS", "-v", "--max-time", "20", "--connect-timeout", "10", "-u", "rgw:rgw",
                             "--ftp-port", "-", "ftp://v4only.demo:2121/down/f00.bin", "-o",
                             str(loc / "y")], timeout=40)
    procs.stop_all()
    srv_log = log.read_text(errors="replace")
    assert cp2.returncode != 0, "an IPv6 EPRT reached an IPv4 server and worked without the ALG?"
    assert re.search(r"<- EPRT \|2\|", srv_log), srv_log[-2000:]


# ------------------------------------------------------------------ FTP 4 -> 6


def reserve(topo, name: str) -> str:
    cp = nsrun(topo.NS_CLI, ["dig", "+short", "+time=2", "+tries=2", f"@{topo.RES_IP}", name, "A"], timeout=15)
    ans = [l for l in cp.stdout.split() if l and not l.startswith(";")]
    assert ans, f"no answer for {name}: {cp.stdout} {cp.stderr}"
    return ans[-1]


def test_ftp_passive_public_ipv4_client_to_ipv6_only_host(gw64, topo, work, procs):
    """cli (IPv4) -> pool address of hostc.gwa.demo -> pyftpdlib on hostc
    (IPv6 only): curl EPSV; the ALG opens the pinhole for each 229 port
    towards hostc's proxy IPv4, the translator carries it on."""
    srv, loc, want_down, want_up = setup_files(work)
    before = alg_counters(gw64)
    log = work / "ftp-server.log"
    start_ftp(procs, topo.NS_HC, topo.HC_IP6, srv, log)
    # One reservation per control connection (single use).
    (loc / "down").mkdir(parents=True)
    names = [f"f{i:02d}.bin" for i in range(FILES)]
    common = ["curl", "-sS", "-v", "--max-time", "60", "--connect-timeout", "10", "-u", "rgw:rgw", "--ftp-pasv"]
    r = reserve(topo, "hostc.gwa.demo")
    args = []
    for n in names:
        args += [f"ftp://{r}/down/{n}", "-o", str(loc / "down" / n)]
    cp = nsrun(topo.NS_CLI, common + args, timeout=90)
    assert cp.returncode == 0, f"curl download failed:\n{cp.stderr[-4000:]}"
    r = reserve(topo, "hostc.gwa.demo")
    glob = "{" + ",".join(names) + "}"
    cp = nsrun(topo.NS_CLI, common + ["-T", f"{loc / 'up'}/{glob}", f"ftp://{r}/up/"], timeout=90)
    assert cp.returncode == 0, f"curl upload failed:\n{cp.stderr[-4000:]}"
    procs.stop_all()
    assert sha256_tree(loc / "down") == want_down
    assert sha256_tree(srv / "up") == want_up
    srv_log = log.read_text(errors="replace")
    cmds = server_commands(srv_log)
    assert {c for c, _ in cmds} == {"EPSV"} and len(cmds) >= 2 * FILES - 2, cmds
    # hostc saw the client through prefix64 (translated), not a private address.
    assert f"fd64:64::{topo.CLI_IP}".lower() in srv_log.lower() or "fd64:64::" in srv_log, srv_log[:2000]
    after = alg_counters(gw64)
    assert after["pinholes_written"] - before["pinholes_written"] >= len(cmds), (before, after)
    assert after["pinhole_errors"] == before["pinhole_errors"], (before, after)


@pytest.mark.parametrize("client", ["curl", "lftp"])
def test_ftp_pasv_public_ipv4_client_to_ipv6_only_host(gw64, topo, work, procs, client):
    """cli (IPv4) -> pool address of hostc.gwa.demo -> pyftpdlib on hostc
    (IPv6 only) with PASV (curl --disable-epsv; lftp ftp:prefer-epsv no): the
    ALG sends each `PASV` on as `EPSV` and turns the server's
    `229 (|||p|)` into `227 (<pool address>,p1,p2)` with a pinhole to hostc's
    proxy IPv4. FILES files down and FILES up, byte-identical."""
    srv, loc, want_down, want_up = setup_files(work)
    before = alg_counters(gw64)
    log = work / "ftp-server.log"
    start_ftp(procs, topo.NS_HC, topo.HC_IP6, srv, log)
    pools = []
    if client == "curl":
        (loc / "down").mkdir(parents=True)
        names = [f"f{i:02d}.bin" for i in range(FILES)]
        common = ["curl", "-sS", "-v", "--max-time", "60", "--connect-timeout", "10", "-u", "rgw:rgw",
                  "--ftp-pasv", "--disable-epsv"]
        pools.append(reserve(topo, "hostc.gwa.demo"))
        args = []
        for n in names:
            args += [f"ftp://{pools[-1]}/down/{n}", "-o", str(loc / "down" / n)]
        cp = nsrun(topo.NS_CLI, common + args, timeout=90)
        assert cp.returncode == 0, f"curl download failed:\n{cp.stderr[-4000:]}"
        out = cp.stderr
        pools.append(reserve(topo, "hostc.gwa.demo"))
        glob = "{" + ",".join(names) + "}"
        cp = nsrun(topo.NS_CLI, common + ["-T", f"{loc / 'up'}/{glob}", f"ftp://{pools[-1]}/up/"], timeout=90)
        assert cp.returncode == 0, f"curl upload failed:\n{cp.stderr[-4000:]}"
        out += cp.stderr
        sent = re.findall(r"^> (PASV|EPSV)\b", out, re.M)
        got = re.findall(r"^< (227 .*|229 .*)$", out, re.M)
    else:
        pools.append(reserve(topo, "hostc.gwa.demo"))
        out = lftp_both_ways(topo.NS_CLI, pools[-1], False, loc, settings=["set ftp:prefer-epsv no"])
        sent = re.findall(r"---> (PASV|EPSV)\b", out)
        got = re.findall(r"<--- (227 .*|229 .*)$", out, re.M)
    procs.stop_all()
    assert sha256_tree(loc / "down") == want_down, "downloaded files differ from the server's"
    assert sha256_tree(srv / "up") == want_up, "uploaded files differ from the client's"
    # The client asked PASV only and was answered 227 with the pool address
    # it had connected to.
    assert sent and set(sent) == {"PASV"}, sent[:10]
    assert len(got) == len(sent), (sent, got[:10])
    for line in got:
        m = re.match(r"227 Entering Passive Mode \((\d+),(\d+),(\d+),(\d+),(\d+),(\d+)\)", line.strip())
        assert m, f"client got {line!r}"
        assert ".".join(m.groups()[:4]) in pools, (line, pools)
        port = int(m.group(5)) * 256 + int(m.group(6))
        lo, hi = map(int, PASV_PORTS.split("-"))
        assert lo <= port <= hi, line
    # The IPv6 server was asked EPSV only (it would have refused PASV).
    srv_log = log.read_text(errors="replace")
    cmds = server_commands(srv_log)
    assert {c for c, _ in cmds} == {"EPSV"} and len(cmds) == len(sent), (cmds, len(sent))
    after = alg_counters(gw64)
    # PASV -> EPSV and 229 -> 227: two rewrites per data connection.
    assert after["rewrites"] - before["rewrites"] >= 2 * len(cmds), (before, after)
    assert after["pinholes_written"] - before["pinholes_written"] >= len(cmds), (before, after)
    assert after["pinhole_errors"] == before["pinhole_errors"], (before, after)


def test_ftp_pasv_to_ipv6_only_host_fails_without_conversion_control(gw64, topo, work, procs):
    """Control: PASV from the IPv4 client reaching the IPv6 server unchanged
    (on a non-ALG port, so the gateway does not touch it): pyftpdlib answers
    `227 … (<its IPv6>,p1,p2)`, which curl cannot use. This is
    the failure the ALG prevents in test_ftp_pasv_public_ipv4_client_to_ipv6_only_host."""
    srv, loc, _, _ = setup_files(work)
    log = work / "ftp-server.log"
    procs.start(topo.NS_HC, [PY, "-u", str(PEERS / "ftp_server.py"), topo.HC_IP6, "2121", str(srv),
                             "--passive-ports", PASV_PORTS, "--masquerade", "none", "--duration", "300"],
                log, "ftp-server ready")
    r = reserve(topo, "hostc.gwa.demo")
    cp = nsrun(topo.NS_CLI, ["curl", "-sS", "-v", "--max-time", "20", "--connect-timeout", "10", "-u", "rgw:rgw",
                             "--ftp-pasv", "--disable-epsv", f"ftp://{r}:2121/down/f00.bin", "-o",
                             str(loc / "y")], timeout=40)
    procs.stop_all()
    srv_log = log.read_text(errors="replace")
    # The control connection itself worked (the server got the login).
    assert re.search(r"<- USER rgw", srv_log), f"{srv_log[-2000:]}\n{cp.stderr[-2000:]}"
    assert cp.returncode != 0, "PASV reached an IPv6 server and worked without the ALG?"
    assert re.search(r"<- PASV", srv_log), srv_log[-2000:]
    # pyftpdlib on IPv6 answers PASV with its IPv6 address in the 227 (or
    # refuses it): nothing an IPv4 client can connect to.
    assert not re.search(r"^< 227 .*\(\d+,\d+,\d+,\d+,\d+,\d+\)", cp.stderr, re.M), cp.stderr[-2000:]


@pytest.mark.parametrize("client", ["curl", "lftp"])
def test_ftp_active_public_ipv4_client_to_ipv6_only_host(gw64, topo, work, procs, client):
    """cli (IPv4) -> pool address of hostc.gwa.demo -> pyftpdlib on hostc
    (IPv6 only), active mode: the client's `EPRT |1|cli|p|` (curl) or
    `PORT cli,p` (lftp), useless to an IPv6 server, reaches it as
    `EPRT |2|prefix64::cli|p|`; hostc connects out through the translator."""
    srv, loc, want_down, want_up = setup_files(work)
    before = alg_counters(gw64)
    log = work / "ftp-server.log"
    start_ftp(procs, topo.NS_HC, topo.HC_IP6, srv, log)
    if client == "curl":
        (loc / "down").mkdir(parents=True)
        names = [f"f{i:02d}.bin" for i in range(FILES)]
        common = ["curl", "-sS", "-v", "--max-time", "60", "--connect-timeout", "10", "-u", "rgw:rgw",
                  "--ftp-port", "-"]
        r = reserve(topo, "hostc.gwa.demo")
        args = []
        for n in names:
            args += [f"ftp://{r}/down/{n}", "-o", str(loc / "down" / n)]
        cp = nsrun(topo.NS_CLI, common + args, timeout=90)
        assert cp.returncode == 0, f"curl download failed:\n{cp.stderr[-4000:]}"
        sent = cp.stderr
        r = reserve(topo, "hostc.gwa.demo")
        glob = "{" + ",".join(names) + "}"
        cp = nsrun(topo.NS_CLI, common + ["-T", f"{loc / 'up'}/{glob}", f"ftp://{r}/up/"], timeout=90)
        assert cp.returncode == 0, f"curl upload failed:\n{cp.stderr[-4000:]}"
        sent += cp.stderr
        want_cmd = f"EPRT |1|{topo.CLI_IP}|"
    else:
        sent = lftp_both_ways(topo.NS_CLI, reserve(topo, "hostc.gwa.demo"), True, loc)
        want_cmd = "PORT " + topo.CLI_IP.replace(".", ",") + ","
    # What the IPv4 client sent (and the IPv6 server could not have used).
    assert want_cmd in sent, sent[-3000:]
    procs.stop_all()
    assert sha256_tree(loc / "down") == want_down
    assert sha256_tree(srv / "up") == want_up
    srv_log = log.read_text(errors="replace")
    cmds = server_commands(srv_log)
    assert {c for c, _ in cmds} == {"EPRT"} and len(cmds) >= 2 * FILES - 2, cmds
    for _, arg in cmds:
        _, af, addr, _port, _ = arg.split(arg[0])
        assert (af, addr) == ("2", embed(topo.CLI_IP)), f"server got EPRT {arg}"
    after = alg_counters(gw64)
    assert after["rewrites"] - before["rewrites"] >= len(cmds), (before, after)


# ------------------------------------------------------------------ SIP 6 -> 4


SIP_CALLS = 5
RTP_PER_CALL = 25
# Media and signalling ports unlike test_alg.py's (16000/18000, 5060 on both
# ends): its UDP conntrack entries may still live in the same testbed.


def rtp_per_port(pcap: pathlib.Path) -> dict:
    out = subprocess.run(["tcpdump", "-r", str(pcap), "-n", "-q"], capture_output=True, text=True,
                         timeout=30).stdout
    per_port: dict = {}
    for line in out.splitlines():
        m = re.search(r" > [0-9A-Fa-f:.]+\.(\d+): UDP", line)
        if m:
            per_port[int(m.group(1))] = per_port.get(int(m.group(1)), 0) + 1
    return per_port


def assert_media(per_port: dict, where: str):
    short = {p: n for p, n in per_port.items() if n < RTP_PER_CALL * 0.8}
    assert len(per_port) >= SIP_CALLS and not short, \
        f"RTP at {where}: {len(per_port)} streams (want {SIP_CALLS}) of {RTP_PER_CALL} packets; {per_port}"


SIPP_TRANSPORT = {"udp": "u1", "tcp": "t1"}


def wait_listening(netns: str, transport: str, port: int, timeout: float = 10):
    """Until a socket of the sipp UAS listens (TCP) or is bound (UDP) on port."""
    flag = "-t" if transport == "tcp" else "-u"
    deadline = time.time() + timeout
    while time.time() < deadline:
        if nsrun(netns, ["ss", "-Hln", flag, f"sport = :{port}"], timeout=10).stdout.strip():
            return
        time.sleep(0.1)
    raise AssertionError(f"nothing listens on {transport}/{port} in {netns} after {timeout}s")


def sipp_stats(path: pathlib.Path) -> dict:
    lines = path.read_text().splitlines() if path.exists() else []
    assert len(lines) >= 2, f"sipp wrote no statistics to {path}"
    head, last = lines[0].split(";"), lines[-1].split(";")
    return {k: last[i] for i, k in enumerate(head) if i < len(last)}


def assert_tcp_rewritten(rgw, transport: str, role: str):
    """Over TCP: the ALG's SIP flow of hostc (its proxy IPv4) carried the
    calls and shifted hostc's stream (the addresses change length), so every
    later segment of the connection needed its sequence numbers adjusted."""
    if transport != "tcp":
        return
    flows = [f for f in rgw.status()["alg"]["flows"]
             if (f["protocol"], f["transport"], f["role"]) == ("sip", "tcp", role)
             and f["private"].startswith(HOSTC_PROXY4 + ":")]
    assert flows and all(f["rewrites"] > 0 and f["offset_from_private"] != 0 for f in flows), flows


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_sip_ipv6_uac_calls_ipv4_uas(gw64, topo, work, procs, transport):
    """sipp -6 on hostc calls sipp on web (IPv4 only) through the translator:
    SIP_CALLS calls over UDP or TCP, none failed, RTP both ways. The callee's RTP
    goes to the address of the caller's SDP: `c=IN IP6 <hostc>` is useless to
    it, the ALG makes it `c=IN IP4 <service address>` with pinholes to
    hostc's proxy IPv4."""
    for f in ("uac_rtp.xml", "uas_rtp.xml"):
        shutil.copy(PEERS / "sip" / f, work / f)
    subprocess.run([PY, str(PEERS / "rtp_pcap.py"), str(work / "rtp.pcap"), str(RTP_PER_CALL)], check=True)
    before = alg_counters(gw64)
    sh = f"cd {work} && exec "
    cap_uas = procs.start(topo.NS_WEB, ["tcpdump", "-i", "eth0", "-n", "-U", "-Z", "root", "-w",
                                        work / "uas-rx.pcap", "udp and dst portrange 28000-28999"],
                          work / "tcpdump-web.log", "listening on")
    cap_uac = procs.start(topo.NS_HC, ["tcpdump", "-i", "eth0", "-n", "-U", "-Z", "root", "-w",
                                       work / "uac-rx.pcap", "udp and dst portrange 26000-26999"],
                          work / "tcpdump-hc.log", "listening on")
    del cap_uas, cap_uac
    t = SIPP_TRANSPORT[transport]
    uas_log = work / "uas.log"
    procs.start(topo.NS_WEB, ["/bin/sh", "-c", (
        f"cd {work} && echo sipp-uas-start && exec sipp -sf uas_rtp.xml -i {WEB_IP} -p 5060 -mp 28000 -t {t} -nostdin "
        f"-m {SIP_CALLS} -timeout 120s -trace_stat -stf uas_stat.csv -trace_err -error_file uas_err.log "
        f"-trace_msg -message_file uas_msg.log")], uas_log, "sipp-uas-start")
    wait_listening(topo.NS_WEB, transport, 5060)
    target = f"[fd64:64::{WEB_IP}]"
    cp = nsrun(topo.NS_HC, ["/bin/sh", "-c", sh + (
        f"sipp -sf uac_rtp.xml {target}:5060 -i {topo.HC_IP6} -p 5062 -mp 26000 -t {t} -nostdin "
        f"-m {SIP_CALLS} -r 5 -l {SIP_CALLS} -timeout 60s -timeout_error -max_retrans 5 "
        f"-trace_stat -stf uac_stat.csv -trace_err -error_file uac_err.log -trace_msg -message_file uac_msg.log")],
               timeout=90)
    err = (work / "uac_err.log").read_text(errors="replace")[-3000:] if (work / "uac_err.log").exists() else ""
    msgs = (work / "uas_msg.log").read_text(errors="replace") if (work / "uas_msg.log").exists() else ""
    assert cp.returncode == 0, (f"sipp UAC exit {cp.returncode}:\n{cp.stdout[-2000:]}\n{cp.stderr[-2000:]}\n"
                                f"--- errors ---\n{err}\n--- UAS messages ---\n{msgs[-3000:]}")
    stats = sipp_stats(work / "uac_stat.csv")
    assert (stats["SuccessfulCall(C)"], stats["FailedCall(C)"]) == (str(SIP_CALLS), "0"), stats
    assert_tcp_rewritten(gw64, transport, "outbound")
    time.sleep(1.0)
    procs.stop_all()
    at_uas = rtp_per_port(work / "uas-rx.pcap")
    at_uac = rtp_per_port(work / "uac-rx.pcap")
    # What the IPv4 callee was offered: IPv4 only, the gateway's service address.
    assert "INVITE sip:" in msgs, msgs[-2000:]
    assert f"Via: SIP/2.0/{transport.upper()} " in msgs, msgs[:3000]
    assert f"c=IN IP4 {GW}" in msgs and "IN IP6" not in msgs, msgs[:3000]
    # Where the callee routes back: the service address, never hostc's IPv6
    # (From/Call-ID are identities and keep it).
    routing = re.findall(r"^(?:Via|Contact): .*$", msgs, re.M)
    assert routing and all(topo.HC_IP6 not in l for l in routing), routing[:6]
    assert any(f"Contact: <sip:sipp@{GW}:5062" in l for l in routing), routing[:6]
    # What the IPv6 caller was answered: the callee's media through prefix64.
    uac_msgs = (work / "uac_msg.log").read_text(errors="replace")
    assert f"c=IN IP6 {embed(WEB_IP)}\n" in uac_msgs, uac_msgs[-3000:]
    assert "IN IP4" not in uac_msgs, uac_msgs[-3000:]
    assert_media(at_uac, "the caller (hostc, IPv6)")
    assert_media(at_uas, "the callee (web, IPv4)")
    after = alg_counters(gw64)
    assert after["pinholes_written"] - before["pinholes_written"] >= 2 * SIP_CALLS, (before, after)


# ------------------------------------------------------------------ SIP 4 -> 6


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_sip_public_ipv4_uac_calls_ipv6_only_uas(gw64, topo, work, procs, transport):
    """sipp on the public cli (IPv4) calls sipp -6 on hostc through a Circular
    Pool reservation (udp5060.hostc.gwa.demo, over TCP tcp5060.hostc.gwa.demo,
    both built-in SFQDNs): the INVITE's request-URI and
    `c=IN IP4 <cli>` reach hostc as its own `[IPv6]` and
    `IN IP6 prefix64::cli`; hostc's answer `c=IN IP6 <hostc>` reaches cli as
    `IN IP4 <pool address>`, with media pinholes (and SNAT) to hostc's proxy
    IPv4. SIP_CALLS calls over UDP or TCP, none failed, RTP both ways."""
    for f in ("uac_rtp.xml", "uas_rtp.xml"):
        shutil.copy(PEERS / "sip" / f, work / f)
    subprocess.run([PY, str(PEERS / "rtp_pcap.py"), str(work / "rtp.pcap"), str(RTP_PER_CALL)], check=True)
    before = alg_counters(gw64)
    procs.start(topo.NS_HC, ["tcpdump", "-i", "eth0", "-n", "-U", "-Z", "root", "-w", work / "uas-rx.pcap",
                             "udp and dst portrange 28000-28999"], work / "tcpdump-hc.log", "listening on")
    procs.start(topo.NS_CLI, ["tcpdump", "-i", "eth0", "-n", "-U", "-Z", "root", "-w", work / "uac-rx.pcap",
                              "udp and dst portrange 26000-26999"], work / "tcpdump-cli.log", "listening on")
    t = SIPP_TRANSPORT[transport]
    procs.start(topo.NS_HC, ["/bin/sh", "-c", (
        f"cd {work} && echo sipp-uas-start && exec sipp -sf uas_rtp.xml -i {topo.HC_IP6} -p 5060 -mp 28000 "
        f"-t {t} -nostdin -m {SIP_CALLS} -timeout 120s -trace_stat -stf uas_stat.csv -trace_err "
        f"-error_file uas_err.log -trace_msg -message_file uas_msg.log")], work / "uas.log", "sipp-uas-start")
    wait_listening(topo.NS_HC, transport, 5060)
    r = reserve(topo, f"{transport}5060.hostc.gwa.demo")
    cp = nsrun(topo.NS_CLI, ["/bin/sh", "-c", (
        f"cd {work} && exec sipp -sf uac_rtp.xml {r}:5060 -i {topo.CLI_IP} -p 5060 -mp 26000 -t {t} -nostdin "
        f"-m {SIP_CALLS} -r 5 -l {SIP_CALLS} -timeout 60s -timeout_error -max_retrans 5 -trace_stat "
        f"-stf uac_stat.csv -trace_err -error_file uac_err.log -trace_msg -message_file uac_msg.log")],
        timeout=90)
    err = (work / "uac_err.log").read_text(errors="replace")[-3000:] if (work / "uac_err.log").exists() else ""
    uas_msgs = (work / "uas_msg.log").read_text(errors="replace") if (work / "uas_msg.log").exists() else ""
    assert cp.returncode == 0, (f"sipp UAC exit {cp.returncode}:\n{cp.stdout[-2000:]}\n{cp.stderr[-2000:]}\n"
                                f"--- errors ---\n{err}\n--- UAS messages ---\n{uas_msgs[-3000:]}")
    stats = sipp_stats(work / "uac_stat.csv")
    assert (stats["SuccessfulCall(C)"], stats["FailedCall(C)"]) == (str(SIP_CALLS), "0"), stats
    assert_tcp_rewritten(gw64, transport, "inbound")
    time.sleep(1.0)
    procs.stop_all()
    uac_msgs = (work / "uac_msg.log").read_text(errors="replace")
    # The IPv6 callee was offered the caller's media through prefix64 and
    # addressed as itself.
    assert f"INVITE sip:service@[{topo.HC_IP6}]:5060" in uas_msgs, uas_msgs[:3000]
    assert f"Via: SIP/2.0/{transport.upper()} " in uas_msgs, uas_msgs[:3000]
    assert f"c=IN IP6 {embed(topo.CLI_IP)}\n" in uas_msgs, uas_msgs[:3000]
    # The IPv4 caller was answered with the pool address, never an IPv6 one.
    assert f"c=IN IP4 {r}" in uac_msgs and "IN IP6" not in uac_msgs and topo.HC_IP6 not in uac_msgs, \
        uac_msgs[-3000:]
    assert_media(rtp_per_port(work / "uac-rx.pcap"), "the caller (public cli, IPv4)")
    assert_media(rtp_per_port(work / "uas-rx.pcap"), "the callee (hostc, IPv6)")
    after = alg_counters(gw64)
    assert after["pinholes_written"] - before["pinholes_written"] >= 2 * SIP_CALLS, (before, after)
